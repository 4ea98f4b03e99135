//! Stripe's typed API objects (async-stripe's) into billing-core's types. Webhook payloads
//! are read in [`events`](crate::events); both follow the same rules: the plan from the
//! price (else the `plan` metadata Tollgate's checkouts set), the account from the
//! `account_id` metadata, the period from the subscription item.

use billing_core::catalog::Interval;
use billing_core::ids::{AccountId, PrefixedId};
use billing_core::payments::{PayerRef, SubscriptionSnapshot, SyncVersion};
use billing_core::ports::PaymentError;
use billing_core::quota::Window;
use billing_core::subscription::{Subscription, SubscriptionStatus};
use stripe_shared::RecurringInterval;
use time::{Duration, OffsetDateTime};

fn at(seconds: i64) -> Result<OffsetDateTime, PaymentError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| PaymentError::Rejected(format!("timestamp {seconds} out of range")))
}

/// A subscription as Stripe answered it, observed at `observed_at`.
pub(crate) fn snapshot(
    sub: &stripe_shared::Subscription,
    observed_at: OffsetDateTime,
) -> Result<SubscriptionSnapshot, PaymentError> {
    let status = SubscriptionStatus::from_stripe(sub.status.as_str()).ok_or_else(|| {
        PaymentError::Rejected(format!("unknown subscription status `{}`", sub.status))
    })?;
    let item = sub.items.data.first();
    let period = item
        .map(|i| -> Result<Window, PaymentError> {
            Ok(Window {
                start: at(i.current_period_start)?,
                end: at(i.current_period_end)?,
            })
        })
        .transpose()?;
    let interval = item
        .and_then(|i| i.price.recurring.as_ref())
        .and_then(|r| match r.interval {
            RecurringInterval::Month => Some(Interval::Month),
            RecurringInterval::Year => Some(Interval::Year),
            _ => None,
        });
    let meta = |key: &str| sub.metadata.get(key).cloned();
    Ok(SubscriptionSnapshot {
        external_id: sub.id.as_str().to_owned(),
        payer: PayerRef {
            account: meta("account_id").and_then(|id| AccountId::parse(&id).ok()),
            user: None,
            customer: Some(sub.customer.id().as_str().to_owned()),
        },
        price: item.map(|i| i.price.id.as_str().to_owned()),
        plan: meta("plan"),
        interval,
        status,
        period,
        trial_end: sub.trial_end.map(at).transpose()?,
        cancel_at_period_end: sub.cancel_at_period_end,
        created_at: Some(at(sub.created)?),
        canceled_at: sub.ended_at.or(sub.canceled_at).map(at).transpose()?,
        observed_at,
    })
}

/// `observed_at`, moved past the version of the state a call's answer replaces: the answer
/// is newer than what it was computed from, even within the same second.
pub(crate) fn after(
    mut observed_at: OffsetDateTime,
    status: SubscriptionStatus,
    replaces: &Subscription,
) -> OffsetDateTime {
    while SyncVersion::of(observed_at, status).0 <= replaces.version {
        observed_at += Duration::seconds(1);
    }
    observed_at
}
