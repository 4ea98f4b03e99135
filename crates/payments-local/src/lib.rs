//! The local payment adapter: Tollgate's stand-in for Stripe when no Stripe key is set, so
//! that the whole purchase flow runs on a laptop with no account anywhere.
//!
//! A checkout returns the URL of a small page Tollgate serves itself
//! (`/v1/local-pay/{session}`) with "Pay" and "Decline". The session is not stored: it is a
//! token signed with a key only this server knows (HMAC-SHA256), naming the account, what is
//! bought, where to return and until when it is valid. Paying produces the same domain
//! events Stripe's webhooks would ([`LocalSession::paid`]), which the server applies through
//! the same code. The session's payment id is derived from the caller's idempotency key, so
//! paying twice, or paying two sessions of one retried request, grants once.
//!
//! It takes no money: the server refuses it in production (see the app's settings).
//! Renewals are not simulated: a local subscription's first period is paid, later ones are
//! not billed.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use billing_core::catalog::Interval;
use billing_core::ids::AccountId;
use billing_core::payments::{
    InvoicePayment, PackPayment, PayerRef, PaymentEvent, SubscriptionSnapshot, SyncVersion,
};
use billing_core::ports::{
    CheckoutItem, CheckoutRequest, CheckoutSession, Clock, PaymentError, PaymentGateway,
    PlanChange, QuickBuy,
};
use billing_core::quota::Window;
use billing_core::subscription::{Subscription, SubscriptionStatus};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// The provider name local customers and payments go under.
pub const PROVIDER: &str = "local";

/// How long a session can be paid.
const SESSION_TTL: Duration = Duration::hours(1);

/// A checkout session, as its token carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSession {
    /// The paying account.
    pub account: AccountId,
    /// What is bought.
    pub item: CheckoutItem,
    /// Where to go after paying (empty for a quick buy: the page says it is done).
    pub success_url: String,
    /// Where to go after declining.
    pub cancel_url: String,
    /// Unix seconds after which it cannot be paid.
    pub expires_at: i64,
    /// The payment's id stem, from the caller's idempotency key.
    pub stem: String,
    /// A quick buy (a PaymentIntent at Stripe) rather than a Checkout session.
    pub quick: bool,
}

/// Why a session token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// Not a token this server signed.
    Invalid,
    /// Signed, but too old to pay.
    Expired,
}

impl LocalSession {
    /// The session's id, as the checkout answered it.
    pub fn id(&self) -> String {
        if self.quick {
            format!("pi_local_{}", self.stem)
        } else {
            format!("cs_local_{}", self.stem)
        }
    }

    /// One line saying what is bought, for the page.
    pub fn describe(&self) -> String {
        match &self.item {
            CheckoutItem::Pack { pack, price, .. } => format!("Credit pack `{pack}`: {price}"),
            CheckoutItem::Subscription {
                plan,
                interval,
                price,
                trial_days,
                ..
            } => {
                let trial = if *trial_days > 0 {
                    format!(", after a {trial_days}-day free trial")
                } else {
                    String::new()
                };
                format!("Plan `{plan}`: {price} per {}{trial}", interval.as_str())
            }
        }
    }

    /// What paying it means, as the events a provider would report at `now`.
    pub fn paid(&self, now: OffsetDateTime) -> Vec<PaymentEvent> {
        let payer = PayerRef {
            account: Some(self.account.clone()),
            user: None,
            customer: None,
        };
        match &self.item {
            CheckoutItem::Pack { pack, price, .. } => {
                vec![PaymentEvent::PackPaid(PackPayment {
                    payer,
                    pack: pack.clone(),
                    payment_id: self.id(),
                    payment_intent: Some(format!("pi_local_{}", self.stem)),
                    amount_minor: price.to_minor_units().ok(),
                    currency: Some(price.currency),
                })]
            }
            CheckoutItem::Subscription {
                plan,
                interval,
                price,
                trial_days,
                ..
            } => {
                let trialing = *trial_days > 0;
                let end = if trialing {
                    now + Duration::days(i64::from(*trial_days))
                } else {
                    add_interval(now, *interval)
                };
                let period = Window { start: now, end };
                let status = if trialing {
                    SubscriptionStatus::Trialing
                } else {
                    SubscriptionStatus::Active
                };
                let external_id = format!("sub_local_{}", self.stem);
                vec![
                    PaymentEvent::SubscriptionSynced(SubscriptionSnapshot {
                        external_id: external_id.clone(),
                        payer: payer.clone(),
                        price: None,
                        plan: Some(plan.clone()),
                        interval: Some(*interval),
                        status,
                        period: Some(period),
                        trial_end: trialing.then_some(end),
                        cancel_at_period_end: false,
                        created_at: Some(now),
                        canceled_at: None,
                        observed_at: now,
                    }),
                    PaymentEvent::InvoicePaid(InvoicePayment {
                        invoice_id: format!("in_local_{}", self.stem),
                        subscription: Some(external_id),
                        payer,
                        price: None,
                        plan: Some(plan.clone()),
                        period: Some(period),
                        renews: true,
                        amount_minor: if trialing {
                            0
                        } else {
                            price.to_minor_units().unwrap_or(0)
                        },
                        currency: Some(price.currency),
                        payment_intent: Some(format!("pi_local_{}", self.stem)),
                        observed_at: now,
                    }),
                ]
            }
        }
    }
}

/// `at` plus one month or year, the day clamped to the month's length.
fn add_interval(at: OffsetDateTime, interval: Interval) -> OffsetDateTime {
    let months = match interval {
        Interval::Month => 1,
        Interval::Year => 12,
    };
    let date = at.date();
    let total = date.year() * 12 + i32::from(u8::from(date.month())) - 1 + months;
    let (year, month) = (total / 12, u8::try_from(total % 12 + 1).unwrap_or(1));
    let month = time::Month::try_from(month).unwrap_or(time::Month::January);
    let day = date.day().min(month.length(year));
    time::Date::from_calendar_date(year, month, day)
        .map_or(at + Duration::days(30 * i64::from(months)), |d| {
            at.replace_date(d)
        })
}

/// The local payment gateway.
#[derive(Clone)]
pub struct LocalPayments {
    key: Vec<u8>,
    base_url: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LocalPayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPayments")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LocalPayments {
    /// A gateway signing sessions with `key`, whose pay page is under `base_url` (the
    /// server's public address, `http://127.0.0.1:8080`).
    pub fn new(key: &[u8], base_url: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            key: key.to_vec(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            clock,
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// The token of a session.
    pub fn sign(&self, session: &LocalSession) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The session a token carries, if this server signed it and it can still be paid.
    pub fn open(&self, token: &str) -> Result<LocalSession, SessionError> {
        let (body, tag) = token.split_once('.').ok_or(SessionError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SessionError::Invalid)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).map_err(|_| SessionError::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SessionError::Invalid)?;
        let session: LocalSession =
            serde_json::from_slice(&json).map_err(|_| SessionError::Invalid)?;
        if self.clock.now().unix_timestamp() > session.expires_at {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }

    /// The pay page of a token.
    pub fn page_url(&self, token: &str) -> String {
        format!("{}/v1/local-pay/{token}", self.base_url)
    }

    fn session(
        &self,
        request: CheckoutRequest,
        idempotency_key: &str,
        quick: bool,
    ) -> LocalSession {
        let digest = Sha256::digest(idempotency_key.as_bytes());
        LocalSession {
            account: request.account,
            item: request.item,
            success_url: request.success_url,
            cancel_url: request.cancel_url,
            expires_at: (self.clock.now() + SESSION_TTL).unix_timestamp(),
            stem: hex(&digest[..12]),
            quick,
        }
    }
}

#[async_trait]
impl PaymentGateway for LocalPayments {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn can_sell(&self, _item: &CheckoutItem, _quick: bool) -> Result<(), PaymentError> {
        Ok(())
    }

    async fn create_customer(
        &self,
        _account: &AccountId,
        _email: &str,
        _idempotency_key: String,
    ) -> Result<Option<String>, PaymentError> {
        Ok(None)
    }

    async fn create_checkout(
        &self,
        request: CheckoutRequest,
        idempotency_key: String,
    ) -> Result<CheckoutSession, PaymentError> {
        let session = self.session(request, &idempotency_key, false);
        let token = self.sign(&session);
        Ok(CheckoutSession {
            id: session.id(),
            url: self.page_url(&token),
        })
    }

    async fn quick_buy(
        &self,
        request: CheckoutRequest,
        idempotency_key: String,
    ) -> Result<QuickBuy, PaymentError> {
        let session = self.session(request, &idempotency_key, true);
        let token = self.sign(&session);
        Ok(QuickBuy {
            client_secret: format!("{}_secret_local", session.id()),
            id: session.id(),
            url: Some(self.page_url(&token)),
        })
    }

    async fn portal_url(
        &self,
        _customer: &str,
        _return_url: String,
    ) -> Result<String, PaymentError> {
        Err(PaymentError::NotConfigured(
            "the local payment adapter has no customer portal; set a Stripe key".into(),
        ))
    }

    async fn set_cancellation(
        &self,
        subscription: &Subscription,
        at_period_end: bool,
        resume: bool,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let now = self.clock.now();
        let ends_now = !at_period_end && !resume;
        let status = if ends_now {
            SubscriptionStatus::Canceled
        } else {
            subscription.status
        };
        let mut snapshot = self.snapshot(subscription, status)?;
        snapshot.cancel_at_period_end = !ends_now && !resume && at_period_end;
        snapshot.canceled_at = ends_now.then_some(now);
        Ok(vec![PaymentEvent::SubscriptionSynced(snapshot)])
    }

    async fn change_plan(
        &self,
        subscription: &Subscription,
        change: PlanChange,
        _idempotency_key: String,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        // Like Stripe: the subscription bills the new plan from now on (an upgrade) or from
        // the next period; local subscriptions are not renewed, so only the plan changes.
        let mut snapshot = self.snapshot(subscription, subscription.status)?;
        snapshot.plan = Some(change.plan);
        Ok(vec![PaymentEvent::SubscriptionSynced(snapshot)])
    }
}

impl LocalPayments {
    /// The subscription as the provider would now report it, later than the state stored.
    fn snapshot(
        &self,
        subscription: &Subscription,
        status: SubscriptionStatus,
    ) -> Result<SubscriptionSnapshot, PaymentError> {
        let Some(external_id) = subscription.external_id.clone() else {
            return Err(PaymentError::Rejected("not a provider subscription".into()));
        };
        // Later than the state it replaces, even within the same second.
        let mut observed_at = self.clock.now();
        while SyncVersion::of(observed_at, status).0 <= subscription.version {
            observed_at += Duration::seconds(1);
        }
        Ok(SubscriptionSnapshot {
            external_id,
            payer: PayerRef {
                account: Some(subscription.account.clone()),
                user: None,
                customer: None,
            },
            price: None,
            plan: Some(subscription.plan.clone()),
            interval: Some(subscription.interval),
            status,
            period: subscription.current_period,
            trial_end: subscription.trial_end,
            cancel_at_period_end: subscription.cancel_at_period_end,
            created_at: Some(subscription.created_at),
            canceled_at: subscription.canceled_at,
            observed_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use billing_core::ids::{PrefixedId, Ulid};
    use billing_core::money::{Currency, Money};
    use billing_core::testing::FixedClock;
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-31 10:00 UTC);

    fn gateway(at: OffsetDateTime) -> LocalPayments {
        LocalPayments::new(
            b"secret key",
            "http://127.0.0.1:8080/",
            Arc::new(FixedClock::new(at)),
        )
    }

    fn request(item: CheckoutItem) -> CheckoutRequest {
        CheckoutRequest {
            account: AccountId::from_ulid(Ulid(5)),
            customer: None,
            item,
            success_url: "http://localhost/ok".into(),
            cancel_url: "http://localhost/no".into(),
        }
    }

    fn pack() -> CheckoutItem {
        CheckoutItem::Pack {
            pack: "small".into(),
            price: Money::from_minor_units(500, Currency::USD),
            provider_price: None,
        }
    }

    #[tokio::test]
    async fn a_session_opens_only_as_signed_and_in_time() {
        let g = gateway(NOW);
        let session = g
            .create_checkout(request(pack()), "k1".into())
            .await
            .unwrap();
        let token = session.url.rsplit('/').next().unwrap().to_owned();
        assert!(
            session
                .url
                .starts_with("http://127.0.0.1:8080/v1/local-pay/")
        );
        let opened = g.open(&token).unwrap();
        assert_eq!(opened.id(), session.id);
        // The same request again has the same payment id.
        let again = g
            .create_checkout(request(pack()), "k1".into())
            .await
            .unwrap();
        assert_eq!(again.id, session.id);
        let mut forged = token.clone();
        forged.replace_range(0..1, if forged.starts_with('e') { "f" } else { "e" });
        assert_eq!(g.open(&forged), Err(SessionError::Invalid));
        assert_eq!(
            LocalPayments::new(b"other", "x", Arc::new(FixedClock::new(NOW))).open(&token),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            gateway(NOW + Duration::hours(2)).open(&token),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn paying_a_plan_reports_the_subscription_and_its_first_invoice() {
        let g = gateway(NOW);
        let session = g.session(
            request(CheckoutItem::Subscription {
                plan: "pro".into(),
                interval: Interval::Month,
                price: Money::from_minor_units(1900, Currency::USD),
                provider_price: None,
                trial_days: 0,
                allow_promotion_codes: true,
            }),
            "k2",
            false,
        );
        let events = session.paid(NOW);
        let [
            PaymentEvent::SubscriptionSynced(sub),
            PaymentEvent::InvoicePaid(invoice),
        ] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(sub.status, SubscriptionStatus::Active);
        // January 31st plus a month is February 28th.
        assert_eq!(sub.period.unwrap().end, datetime!(2026-02-28 10:00 UTC));
        assert_eq!(invoice.amount_minor, 1900);
        assert_eq!(
            invoice.subscription.as_deref(),
            Some(sub.external_id.as_str())
        );
        assert_eq!(
            add_interval(NOW, Interval::Year),
            datetime!(2027-01-31 10:00 UTC)
        );
    }
}
