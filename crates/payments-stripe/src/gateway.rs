//! The Stripe API client behind billing-core's [`PaymentGateway`] port.
//!
//! Calls go through async-stripe; its wire types stay in this module and
//! [`convert`](crate::convert). Every call that creates something carries a Stripe
//! idempotency key derived from the caller's own (our request's), so a retried request,
//! here or from the client, creates nothing twice. A call that Stripe could not answer
//! (network, timeout, 429, 5xx) is retried a few times with the same key; what Stripe
//! refuses is reported with Stripe's message, except that a refused API key is never
//! quoted (Stripe echoes part of it).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use billing_core::ids::AccountId;
use billing_core::money::Money;
use billing_core::payments::{PaymentEvent, SubscriptionSnapshot};
use billing_core::ports::{
    CheckoutItem, CheckoutRequest, CheckoutSession, Clock, PaymentError, PaymentGateway,
    PlanChange, QuickBuy,
};
use billing_core::subscription::Subscription;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    CancelSubscription, ListSubscription, ListSubscriptionStatus, RetrieveSubscription,
    UpdateSubscription, UpdateSubscriptionItems, UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionPaymentIntentData,
    CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;
use stripe_core::payment_intent::{
    CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
};
use stripe_shared::CheckoutSessionMode;

use crate::convert;

/// The provider name Stripe customers and payments go under.
pub const PROVIDER: &str = "stripe";

/// Stripe's API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com/";

/// Attempts of a call Stripe could not answer (same idempotency key each time).
const ATTEMPTS: u32 = 3;

/// How to reach Stripe.
#[derive(Clone)]
pub struct StripeConfig {
    /// The secret API key (`sk_…` or a restricted `rk_…`).
    pub secret_key: String,
    /// The API's base URL (Stripe's own unless testing against a stand-in).
    pub api_base: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field("api_base", &self.api_base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The Stripe payment gateway.
#[derive(Clone)]
pub struct StripePayments {
    pub(crate) client: Client,
    clock: Arc<dyn Clock>,
    api_base: String,
}

impl std::fmt::Debug for StripePayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripePayments")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// What a failed call means for the caller.
pub(crate) fn classify(err: StripeError) -> PaymentError {
    match err {
        StripeError::Stripe(errors, status) => match status {
            401 | 403 => {
                PaymentError::NotConfigured(format!("Stripe refused the API key (HTTP {status})"))
            }
            429 | 500.. => PaymentError::Unavailable(format!("Stripe answered HTTP {status}")),
            _ => PaymentError::Rejected(
                errors
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {status}")),
            ),
        },
        StripeError::JSONDeserialize(msg) => {
            PaymentError::Unavailable(format!("unreadable answer from Stripe: {msg}"))
        }
        StripeError::ClientError(msg) => {
            PaymentError::Unavailable(format!("cannot reach Stripe: {msg}"))
        }
        StripeError::Timeout => PaymentError::Unavailable("Stripe did not answer in time".into()),
        StripeError::ConfigError(msg) => PaymentError::NotConfigured(msg),
    }
}

/// The strategy of a call: idempotent under `key` when it creates something.
fn strategy(key: Option<&str>) -> Result<RequestStrategy, PaymentError> {
    match key {
        None => Ok(RequestStrategy::Once),
        Some(key) => IdempotencyKey::new(key)
            .map(RequestStrategy::Idempotent)
            .map_err(|e| PaymentError::Rejected(format!("idempotency key: {e}"))),
    }
}

/// Our idempotency key for one Stripe call: the caller's, scoped by what the call does,
/// hashed when it would pass Stripe's 255 characters.
fn scoped(what: &str, key: &str) -> String {
    let scoped = format!("tollgate:{what}:{key}");
    if scoped.len() <= 255 {
        return scoped;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(scoped.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("tollgate:{what}:sha256:{hex}")
}

fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn stripe_currency(money: &Money) -> stripe_types::Currency {
    money
        .currency
        .code()
        .to_ascii_lowercase()
        .parse()
        .unwrap_or_else(|never| match never {})
}

fn required_price(price: Option<&String>, what: &str) -> Result<String, PaymentError> {
    price.cloned().ok_or_else(|| {
        PaymentError::NotConfigured(format!(
            "{what} has no stripe_price_id in the catalog (run `tollgate stripe setup`)"
        ))
    })
}

impl StripePayments {
    /// A gateway with its own HTTP client (rustls, Stripe's root certificates).
    pub fn new(config: &StripeConfig, clock: Arc<dyn Clock>) -> Result<Self, PaymentError> {
        let mut base = config.api_base.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = ClientBuilder::new(config.secret_key.clone())
            .url(base.clone())
            .timeout(config.timeout)
            .app_info("tollgate", Some(env!("CARGO_PKG_VERSION").into()), None)
            .build()
            .map_err(classify)?;
        Ok(Self {
            client,
            clock,
            api_base: base,
        })
    }

    /// Runs one call, again with the same idempotency key while Stripe cannot answer.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        key: Option<&str>,
        mut send: F,
    ) -> Result<T, PaymentError>
    where
        F: FnMut(RequestStrategy) -> Fut,
        Fut: Future<Output = Result<T, StripeError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match send(strategy(key)?).await.map_err(classify) {
                Err(PaymentError::Unavailable(why)) if attempt < ATTEMPTS => {
                    tracing::warn!(attempt, %why, "Stripe call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    /// Every subscription Stripe holds for this account (its own Stripe account), as
    /// snapshots observed now. Subscriptions in a status Tollgate does not know are left out.
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionSnapshot>, PaymentError> {
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = ListSubscription::new()
                .status(ListSubscriptionStatus::All)
                .limit(100);
            if let Some(after) = &after {
                request = request.starting_after(after.clone());
            }
            let page = self
                .call(None, |s| {
                    request.customize().request_strategy(s).send(&self.client)
                })
                .await?;
            after = page.data.last().map(|s| s.id.as_str().to_owned());
            out.extend(
                page.data
                    .iter()
                    .filter_map(|sub| convert::snapshot(sub, now).ok()),
            );
            if !page.has_more || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// One subscription as Stripe holds it now.
    pub async fn subscription(&self, id: &str) -> Result<SubscriptionSnapshot, PaymentError> {
        let request = RetrieveSubscription::new(id);
        let sub = self
            .call(None, |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        convert::snapshot(&sub, self.clock.now())
    }

    fn external_id(subscription: &Subscription) -> Result<&str, PaymentError> {
        subscription
            .external_id
            .as_deref()
            .ok_or_else(|| PaymentError::Rejected("not a Stripe subscription".into()))
    }

    /// The snapshot of what Stripe answered, later than the state it replaces.
    fn answered(
        &self,
        sub: &stripe_shared::Subscription,
        replaces: &Subscription,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let mut snapshot = convert::snapshot(sub, self.clock.now())?;
        snapshot.observed_at = convert::after(snapshot.observed_at, snapshot.status, replaces);
        Ok(vec![PaymentEvent::SubscriptionSynced(snapshot)])
    }
}

#[async_trait]
impl PaymentGateway for StripePayments {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    /// A hosted checkout needs the catalog's Stripe price; a quick buy charges the
    /// catalog's amount and needs none.
    fn can_sell(&self, item: &CheckoutItem, quick: bool) -> Result<(), PaymentError> {
        if quick {
            return Ok(());
        }
        match item {
            CheckoutItem::Pack {
                pack,
                provider_price,
                ..
            } => required_price(provider_price.as_ref(), &format!("pack `{pack}`")).map(drop),
            CheckoutItem::Subscription {
                plan,
                interval,
                provider_price,
                ..
            } => required_price(
                provider_price.as_ref(),
                &format!("plan `{plan}` ({})", interval.as_str()),
            )
            .map(drop),
        }
    }

    async fn create_customer(
        &self,
        account: &AccountId,
        email: &str,
        idempotency_key: String,
    ) -> Result<Option<String>, PaymentError> {
        let key = scoped("customer", &idempotency_key);
        let request = CreateCustomer::new()
            .email(email)
            .metadata(metadata(&[("account_id", &account.to_string())]));
        let customer = self
            .call(Some(&key), |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        Ok(Some(customer.id.as_str().to_owned()))
    }

    async fn create_checkout(
        &self,
        request: CheckoutRequest,
        idempotency_key: String,
    ) -> Result<CheckoutSession, PaymentError> {
        let account = request.account.to_string();
        let mut checkout = CreateCheckoutSession::new()
            .client_reference_id(account.clone())
            .success_url(request.success_url)
            .cancel_url(request.cancel_url);
        if let Some(customer) = &request.customer {
            checkout = checkout.customer(customer.clone());
        }
        let line = |price: String| {
            let mut line = CreateCheckoutSessionLineItems::new();
            line.price = Some(price);
            line.quantity = Some(1);
            vec![line]
        };
        let checkout = match &request.item {
            CheckoutItem::Pack {
                pack,
                provider_price,
                ..
            } => {
                // The session's own event grants the pack; its PaymentIntent names only the
                // account (a PaymentIntent naming a pack is a quick buy, granted on its own).
                let mut intent = CreateCheckoutSessionPaymentIntentData::new();
                intent.metadata = Some(metadata(&[("account_id", &account)]));
                checkout
                    .mode(CheckoutSessionMode::Payment)
                    .line_items(line(required_price(
                        provider_price.as_ref(),
                        &format!("pack `{pack}`"),
                    )?))
                    .metadata(metadata(&[("account_id", &account), ("pack", pack)]))
                    .payment_intent_data(intent)
            }
            CheckoutItem::Subscription {
                plan,
                interval,
                provider_price,
                trial_days,
                allow_promotion_codes,
                ..
            } => {
                let mut data = CreateCheckoutSessionSubscriptionData::new();
                data.metadata = Some(metadata(&[("account_id", &account), ("plan", plan)]));
                if *trial_days > 0 {
                    data.trial_period_days = Some(*trial_days);
                }
                checkout
                    .mode(CheckoutSessionMode::Subscription)
                    .line_items(line(required_price(
                        provider_price.as_ref(),
                        &format!("plan `{plan}` ({})", interval.as_str()),
                    )?))
                    .metadata(metadata(&[("account_id", &account), ("plan", plan)]))
                    .subscription_data(data)
                    .allow_promotion_codes(*allow_promotion_codes)
            }
        };
        let key = scoped("checkout", &idempotency_key);
        let session = self
            .call(Some(&key), |s| {
                checkout.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        let url = session
            .url
            .ok_or_else(|| PaymentError::Unavailable("Stripe returned no checkout URL".into()))?;
        Ok(CheckoutSession {
            id: session.id.as_str().to_owned(),
            url,
        })
    }

    async fn quick_buy(
        &self,
        request: CheckoutRequest,
        idempotency_key: String,
    ) -> Result<QuickBuy, PaymentError> {
        let CheckoutItem::Pack { pack, price, .. } = &request.item else {
            return Err(PaymentError::Rejected(
                "a quick buy is for a credit pack".into(),
            ));
        };
        let amount = price
            .to_minor_units()
            .map_err(|e| PaymentError::NotConfigured(format!("pack `{pack}` price: {e}")))?;
        let account = request.account.to_string();
        let mut intent = CreatePaymentIntent::new(amount, stripe_currency(price))
            .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods::new(true))
            .metadata(metadata(&[("account_id", &account), ("pack", pack)]));
        if let Some(customer) = &request.customer {
            intent = intent.customer(customer.clone());
        }
        let key = scoped("quick-buy", &idempotency_key);
        let intent = self
            .call(Some(&key), |s| {
                intent.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        let client_secret = intent
            .client_secret
            .ok_or_else(|| PaymentError::Unavailable("Stripe returned no client secret".into()))?;
        Ok(QuickBuy {
            id: intent.id.as_str().to_owned(),
            client_secret,
            url: None,
        })
    }

    async fn portal_url(&self, customer: &str, return_url: String) -> Result<String, PaymentError> {
        let request = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url);
        let session = self
            .call(None, |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        Ok(session.url)
    }

    async fn set_cancellation(
        &self,
        subscription: &Subscription,
        at_period_end: bool,
        resume: bool,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let id = Self::external_id(subscription)?;
        let sub = if resume || at_period_end {
            let request = UpdateSubscription::new(id).cancel_at_period_end(!resume);
            self.call(None, |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?
        } else {
            let request = CancelSubscription::new(id);
            self.call(None, |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?
        };
        self.answered(&sub, subscription)
    }

    async fn change_plan(
        &self,
        subscription: &Subscription,
        change: PlanChange,
        idempotency_key: String,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let id = Self::external_id(subscription)?;
        let price = required_price(
            change.provider_price.as_ref(),
            &format!("plan `{}` ({})", change.plan, change.interval.as_str()),
        )?;
        // The item to replace: the subscription's one item.
        let retrieve = RetrieveSubscription::new(id);
        let current = self
            .call(None, |s| {
                retrieve.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        let item = current
            .items
            .data
            .first()
            .ok_or_else(|| PaymentError::Rejected("the subscription has no item".into()))?;
        let mut replacement = UpdateSubscriptionItems::new();
        replacement.id = Some(item.id.as_str().to_owned());
        replacement.price = Some(price);
        // Now: charge the difference at once. At the period's end: no proration; the next
        // renewal bills the new price (Tollgate keeps the paid plan until then).
        let proration = if change.immediately {
            UpdateSubscriptionProrationBehavior::AlwaysInvoice
        } else {
            UpdateSubscriptionProrationBehavior::None
        };
        let mut meta = current.metadata.clone();
        meta.insert("plan".into(), change.plan.clone());
        let request = UpdateSubscription::new(id)
            .items(vec![replacement])
            .proration_behavior(proration)
            .metadata(meta);
        let key = scoped("change-plan", &idempotency_key);
        let sub = self
            .call(Some(&key), |s| {
                request.customize().request_strategy(s).send(&self.client)
            })
            .await?;
        self.answered(&sub, subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_hashed_to_fit_stripes_limit() {
        assert_eq!(scoped("customer", "abc"), "tollgate:customer:abc");
        let long = scoped("checkout", &"k".repeat(400));
        assert!(long.len() <= 255, "{}", long.len());
        assert_ne!(long, scoped("checkout", &"k".repeat(401)));
    }
}
