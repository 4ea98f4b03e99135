//! Reconciling subscriptions with the payment provider (`tollgate stripe sync`): each
//! subscription as the provider holds it now is compared with Tollgate's; where they
//! differ, the provider's state is applied as its webhook would be (it is the newest
//! observation), unless only a report is asked for.

use super::{Applied, Billing, BillingError};
use crate::ids::AccountId;
use crate::payments::{PaymentEvent, STRIPE, SubscriptionSnapshot};
use crate::subscription::{Subscription, SubscriptionStatus};

/// One subscription that differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The provider's subscription id.
    pub external_id: String,
    /// The account, when known.
    pub account: Option<AccountId>,
    /// What differs, one entry per field (`status: active → past_due`).
    pub differences: Vec<String>,
    /// `None` for a report only; else whether applying the provider's state repaired it,
    /// and if not, why.
    pub repair: Option<Result<(), String>>,
}

/// The outcome of a reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Subscriptions the provider holds.
    pub checked: usize,
    /// Of those, in step with Tollgate.
    pub in_step: usize,
    /// Of those, differing.
    pub drifted: Vec<Drift>,
    /// Of those, naming no account Tollgate knows (not sold through Tollgate, or the
    /// checkout's events never arrived).
    pub unknown: Vec<String>,
}

impl Billing {
    /// The account a snapshot names, without linking anything (a report changes nothing).
    async fn account_named(
        &self,
        snap: &SubscriptionSnapshot,
    ) -> Result<Option<AccountId>, BillingError> {
        if let Some(account) = &snap.payer.account
            && self.accounts.account(account).await?.is_some()
        {
            return Ok(Some(account.clone()));
        }
        match &snap.payer.customer {
            Some(customer) => Ok(self.payments.customer_account(STRIPE, customer).await?),
            None => Ok(None),
        }
    }

    /// What differs between Tollgate's subscription and the provider's (empty: in step).
    /// A change waiting for the period's end is not a difference while the period lasts.
    fn differences(&self, stored: &Subscription, snap: &SubscriptionSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        let reported = self
            .plan_for(snap.price.as_deref(), snap.plan.as_deref(), snap.interval)
            .map(|(plan, _)| plan);
        if let Some(plan) = reported
            && plan != stored.plan
            && stored.pending_plan.as_deref() != Some(plan.as_str())
        {
            out.push(format!("plan: {} → {plan}", stored.plan));
        }
        if snap.status != stored.status {
            out.push(format!(
                "status: {} → {}",
                stored.status.as_str(),
                snap.status.as_str()
            ));
        }
        if let Some(period) = snap.period
            && stored.current_period.is_none_or(|p| p.end != period.end)
        {
            out.push(format!(
                "period end: {} → {}",
                stored
                    .current_period
                    .map_or_else(|| "none".into(), |p| p.end.to_string()),
                period.end
            ));
        }
        if snap.cancel_at_period_end != stored.cancel_at_period_end {
            out.push(format!(
                "cancel at period end: {} → {}",
                stored.cancel_at_period_end, snap.cancel_at_period_end
            ));
        }
        out
    }

    /// Compares every subscription the provider holds (`provider`, observed now) with
    /// Tollgate's and, with `repair`, applies the provider's state where they differ.
    pub async fn reconcile_subscriptions(
        &self,
        provider: Vec<SubscriptionSnapshot>,
        repair: bool,
    ) -> Result<Reconciliation, BillingError> {
        let mut out = Reconciliation {
            checked: provider.len(),
            ..Reconciliation::default()
        };
        for snap in provider {
            let stored = self.subscriptions.by_external_id(&snap.external_id).await?;
            let (account, differences) = match &stored {
                Some(sub) => (Some(sub.account.clone()), self.differences(sub, &snap)),
                None => match self.account_named(&snap).await? {
                    // Ended before Tollgate heard of it: nothing to keep in step.
                    Some(_) if snap.status == SubscriptionStatus::Canceled => {
                        out.in_step += 1;
                        continue;
                    }
                    Some(account) => (Some(account), vec!["not known to Tollgate".into()]),
                    None => {
                        out.unknown.push(snap.external_id.clone());
                        continue;
                    }
                },
            };
            if differences.is_empty() {
                out.in_step += 1;
                continue;
            }
            let external_id = snap.external_id.clone();
            let repair = if repair {
                Some(
                    match self
                        .apply_payment_event(PaymentEvent::SubscriptionSynced(snap))
                        .await?
                    {
                        Applied::Done(_) => Ok(()),
                        Applied::Ignored(why) => Err(why),
                    },
                )
            } else {
                None
            };
            out.drifted.push(Drift {
                external_id,
                account,
                differences,
                repair,
            });
        }
        Ok(out)
    }
}
