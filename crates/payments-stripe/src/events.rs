//! Reading a verified Stripe event: its envelope (id and type, to store it once) and what
//! it means for Tollgate, as a [`PaymentEvent`]. Stripe's wire types stay in this module;
//! [`Meaning`] is built from them with `TryFrom`.
//!
//! Both shapes Stripe has used are read: before API version 2025-03-31 ("basil") a
//! subscription's period and an invoice's subscription sat at the top level; since then they
//! sit on the subscription items and under `parent.subscription_details`.
//!
//! Who paid is read from the metadata Tollgate's own checkouts set (`account_id`,
//! `user_id`, `pack`, `plan`), from a Checkout session's `client_reference_id`, and from
//! the Stripe customer, which Tollgate links to the account the first time both appear
//! together.

use std::collections::HashMap;

use billing_core::catalog::Interval;
use billing_core::ids::{AccountId, PrefixedId, UserId};
use billing_core::money::Currency;
use billing_core::payments::{
    ChargeState, DisputeStatus, InvoiceFailure, InvoicePayment, PackPayment, PayerRef,
    PaymentEvent, SubscriptionSnapshot,
};
use billing_core::quota::Window;
use billing_core::subscription::SubscriptionStatus;
use serde::Deserialize;
use time::OffsetDateTime;

/// An event's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Envelope {
    /// `evt_…`, unique per event.
    pub id: String,
    /// `checkout.session.completed`, …
    #[serde(rename = "type")]
    pub kind: String,
}

/// Reads the envelope of a raw event body.
pub fn envelope(body: &[u8]) -> Result<(Envelope, serde_json::Value), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let envelope: Envelope =
        serde_json::from_value(value.clone()).map_err(|e| format!("not an event: {e}"))?;
    if envelope.id.is_empty() || envelope.kind.is_empty() {
        return Err("an event needs an id and a type".into());
    }
    Ok((envelope, value))
}

/// What an event means for Tollgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    /// Something to apply.
    Event(PaymentEvent),
    /// Nothing to do; why.
    Ignored(String),
}

/// What a verified event body means. An event Tollgate does not act on, or one that does
/// not concern it (no pack, not paid yet), is `Ignored` with the reason; a body that is not
/// an event, or an object that is not what its type says, is an error.
pub fn meaning(event: &serde_json::Value) -> Result<Meaning, String> {
    let event: Event =
        serde_json::from_value(event.clone()).map_err(|e| format!("not an event: {e}"))?;
    Meaning::try_from(event)
}

// ---- wire types ----

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    created: Option<i64>,
    data: Data,
}

#[derive(Debug, Deserialize)]
struct Data {
    object: serde_json::Value,
}

/// An expandable field: an id, or the object it names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Ref {
    Id(String),
    Object { id: String },
}

impl Ref {
    fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

fn id_of(r: &Option<Ref>) -> Option<String> {
    r.as_ref().map(|r| r.id().to_owned())
}

type Metadata = Option<HashMap<String, String>>;

#[derive(Debug, Deserialize)]
struct CheckoutSession {
    id: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default)]
    client_reference_id: Option<String>,
    #[serde(default)]
    customer: Option<Ref>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    payment_intent: Option<Ref>,
    #[serde(default)]
    amount_total: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    amount_received: Option<i64>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    customer: Option<Ref>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct Recurring {
    interval: String,
}

#[derive(Debug, Deserialize)]
struct Price {
    id: String,
    #[serde(default)]
    recurring: Option<Recurring>,
}

#[derive(Debug, Deserialize)]
struct SubscriptionItem {
    #[serde(default)]
    price: Option<Price>,
    #[serde(default)]
    current_period_start: Option<i64>,
    #[serde(default)]
    current_period_end: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct Subscription {
    id: String,
    #[serde(default)]
    customer: Option<Ref>,
    status: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    items: Option<List<SubscriptionItem>>,
    #[serde(default)]
    current_period_start: Option<i64>,
    #[serde(default)]
    current_period_end: Option<i64>,
    #[serde(default)]
    trial_end: Option<i64>,
    #[serde(default)]
    cancel_at_period_end: Option<bool>,
    #[serde(default)]
    canceled_at: Option<i64>,
    #[serde(default)]
    ended_at: Option<i64>,
    #[serde(default)]
    created: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Period {
    start: i64,
    end: i64,
}

#[derive(Debug, Deserialize)]
struct PriceDetails {
    #[serde(default)]
    price: Option<Ref>,
}

#[derive(Debug, Deserialize)]
struct Pricing {
    #[serde(default)]
    price_details: Option<PriceDetails>,
}

#[derive(Debug, Deserialize)]
struct ItemDetails {
    #[serde(default)]
    proration: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct LineParent {
    #[serde(default)]
    subscription_item_details: Option<ItemDetails>,
}

#[derive(Debug, Deserialize)]
struct InvoiceLine {
    #[serde(default)]
    period: Option<Period>,
    #[serde(default)]
    price: Option<Price>,
    #[serde(default)]
    pricing: Option<Pricing>,
    #[serde(default)]
    proration: Option<bool>,
    #[serde(default)]
    parent: Option<LineParent>,
}

impl InvoiceLine {
    fn is_proration(&self) -> bool {
        self.proration.unwrap_or(false)
            || self
                .parent
                .as_ref()
                .and_then(|p| p.subscription_item_details.as_ref())
                .and_then(|d| d.proration)
                .unwrap_or(false)
    }

    fn price(&self) -> Option<String> {
        self.price.as_ref().map(|p| p.id.clone()).or_else(|| {
            self.pricing
                .as_ref()
                .and_then(|p| p.price_details.as_ref())
                .and_then(|d| id_of(&d.price))
        })
    }
}

#[derive(Debug, Deserialize)]
struct SubscriptionDetails {
    #[serde(default)]
    subscription: Option<Ref>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct InvoiceParent {
    #[serde(default)]
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Deserialize)]
struct InvoicePaymentRecord {
    #[serde(default)]
    payment_intent: Option<Ref>,
}

#[derive(Debug, Deserialize)]
struct InvoicePaymentEntry {
    #[serde(default)]
    payment: Option<InvoicePaymentRecord>,
}

#[derive(Debug, Deserialize)]
struct Invoice {
    id: String,
    #[serde(default)]
    customer: Option<Ref>,
    #[serde(default)]
    subscription: Option<Ref>,
    #[serde(default)]
    subscription_details: Option<SubscriptionDetails>,
    #[serde(default)]
    parent: Option<InvoiceParent>,
    #[serde(default)]
    lines: Option<List<InvoiceLine>>,
    #[serde(default)]
    billing_reason: Option<String>,
    #[serde(default)]
    amount_paid: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    payment_intent: Option<Ref>,
    #[serde(default)]
    payments: Option<List<InvoicePaymentEntry>>,
    #[serde(default)]
    next_payment_attempt: Option<i64>,
}

impl Invoice {
    fn details(&self) -> Option<&SubscriptionDetails> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .or(self.subscription_details.as_ref())
    }

    fn subscription(&self) -> Option<String> {
        id_of(&self.subscription).or_else(|| self.details().and_then(|d| id_of(&d.subscription)))
    }

    fn metadata(&self) -> &Metadata {
        static NONE: Metadata = None;
        self.details().map_or(&NONE, |d| &d.metadata)
    }

    /// The line of the subscription's own price (not a proration).
    fn subscription_line(&self) -> Option<&InvoiceLine> {
        let lines = &self.lines.as_ref()?.data;
        lines
            .iter()
            .find(|l| !l.is_proration() && l.period.is_some())
            .or_else(|| lines.iter().find(|l| l.period.is_some()))
    }

    fn payment_intent(&self) -> Option<String> {
        id_of(&self.payment_intent).or_else(|| {
            self.payments.as_ref().and_then(|list| {
                list.data
                    .iter()
                    .find_map(|p| p.payment.as_ref().and_then(|p| id_of(&p.payment_intent)))
            })
        })
    }
}

#[derive(Debug, Deserialize)]
struct Charge {
    id: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    amount_refunded: i64,
    #[serde(default)]
    payment_intent: Option<Ref>,
}

#[derive(Debug, Deserialize)]
struct Dispute {
    charge: Ref,
    #[serde(default)]
    payment_intent: Option<Ref>,
    status: String,
}

// ---- conversions ----

fn object<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("not a {what}: {e}"))
}

fn at(seconds: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| format!("bad timestamp {seconds}"))
}

fn window(start: Option<i64>, end: Option<i64>) -> Result<Option<Window>, String> {
    match (start, end) {
        (Some(start), Some(end)) if end > start => Ok(Some(Window {
            start: at(start)?,
            end: at(end)?,
        })),
        _ => Ok(None),
    }
}

fn currency(code: Option<&str>) -> Option<Currency> {
    code.and_then(|c| c.parse().ok())
}

fn payer(metadata: &Metadata, reference: Option<&str>, customer: Option<String>) -> PayerRef {
    let get = |key: &str| {
        metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .map(String::as_str)
    };
    PayerRef {
        account: get("account_id")
            .or(reference)
            .and_then(|id| AccountId::parse(id).ok()),
        user: get("user_id").and_then(|id| UserId::parse(id).ok()),
        customer,
    }
}

fn meta(metadata: &Metadata, key: &str) -> Option<String> {
    metadata.as_ref().and_then(|m| m.get(key)).cloned()
}

fn interval(text: &str) -> Option<Interval> {
    match text {
        "month" => Some(Interval::Month),
        "year" => Some(Interval::Year),
        _ => None,
    }
}

impl TryFrom<Event> for Meaning {
    type Error = String;

    fn try_from(event: Event) -> Result<Self, String> {
        let observed_at = at(event.created.unwrap_or(0))?;
        let object = event.data.object;
        let meaning = match event.kind.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                checkout_paid(self::object(object, "checkout session")?)
            }
            "payment_intent.succeeded" => quick_buy(self::object(object, "payment intent")?),
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.paused"
            | "customer.subscription.resumed" => {
                subscription(self::object(object, "subscription")?, observed_at)?
            }
            "customer.subscription.trial_will_end" => {
                let sub: Subscription = self::object(object, "subscription")?;
                Meaning::Event(PaymentEvent::TrialWillEnd {
                    subscription: sub.id,
                    trial_end: sub.trial_end.map(at).transpose()?,
                })
            }
            "invoice.paid" => invoice_paid(self::object(object, "invoice")?, observed_at)?,
            "invoice.payment_failed" => {
                let invoice: Invoice = self::object(object, "invoice")?;
                Meaning::Event(PaymentEvent::InvoiceFailed(InvoiceFailure {
                    subscription: invoice.subscription(),
                    invoice_id: invoice.id,
                    final_attempt: invoice.next_payment_attempt.is_none(),
                    observed_at,
                }))
            }
            "charge.refunded" | "charge.refund.updated" => {
                let charge: Charge = self::object(object, "charge")?;
                Meaning::Event(PaymentEvent::ChargeChanged(ChargeState {
                    payment_intent: id_of(&charge.payment_intent),
                    charge: charge.id,
                    amount_minor: charge.amount,
                    refunded_minor: charge.amount_refunded,
                    dispute: None,
                    dispute_observed_at: None,
                }))
            }
            "charge.dispute.created"
            | "charge.dispute.updated"
            | "charge.dispute.closed"
            | "charge.dispute.funds_withdrawn"
            | "charge.dispute.funds_reinstated" => {
                let dispute: Dispute = self::object(object, "dispute")?;
                let status = match dispute.status.as_str() {
                    "won" | "warning_closed" | "prevented" => DisputeStatus::Won,
                    "lost" => DisputeStatus::Lost,
                    _ => DisputeStatus::Open,
                };
                Meaning::Event(PaymentEvent::ChargeChanged(ChargeState {
                    charge: dispute.charge.id().to_owned(),
                    payment_intent: id_of(&dispute.payment_intent),
                    amount_minor: 0,
                    refunded_minor: 0,
                    dispute: Some(status),
                    dispute_observed_at: Some(observed_at),
                }))
            }
            other => Meaning::Ignored(format!("`{other}` is not acted on")),
        };
        Ok(meaning)
    }
}

fn checkout_paid(session: CheckoutSession) -> Meaning {
    if session.mode.as_deref() == Some("subscription") {
        // The subscription and invoice events carry the state; this one says whose
        // customer it is (`client_reference_id`), so that those events can be placed.
        let payer = payer(
            &session.metadata,
            session.client_reference_id.as_deref(),
            id_of(&session.customer),
        );
        if payer.customer.is_none() || (payer.account.is_none() && payer.user.is_none()) {
            return Meaning::Ignored("a subscription checkout naming no account".into());
        }
        return Meaning::Event(PaymentEvent::CustomerLinked(payer));
    }
    if session.mode.as_deref() != Some("payment") {
        return Meaning::Ignored("not a one-time payment".into());
    }
    // An asynchronous payment (a bank debit) completes the session unpaid; its
    // `async_payment_succeeded` event comes once the money is there.
    if session.payment_status.as_deref() != Some("paid") {
        return Meaning::Ignored("not paid yet".into());
    }
    let Some(pack) = meta(&session.metadata, "pack") else {
        return Meaning::Ignored("no pack in the metadata".into());
    };
    let payer = payer(
        &session.metadata,
        session.client_reference_id.as_deref(),
        id_of(&session.customer),
    );
    if payer == PayerRef::default() {
        return Meaning::Ignored("no Tollgate account, user or customer named".into());
    }
    Meaning::Event(PaymentEvent::PackPaid(PackPayment {
        payer,
        pack,
        payment_id: session.id,
        payment_intent: id_of(&session.payment_intent),
        amount_minor: session.amount_total,
        currency: currency(session.currency.as_deref()),
    }))
}

/// A PaymentIntent Tollgate created for a quick buy names the pack in its metadata (a
/// Checkout session's PaymentIntent does not: the session's own event grants that pack).
fn quick_buy(intent: PaymentIntent) -> Meaning {
    if intent.status.as_deref().is_some_and(|s| s != "succeeded") {
        return Meaning::Ignored("not succeeded".into());
    }
    let Some(pack) = meta(&intent.metadata, "pack") else {
        return Meaning::Ignored("not a quick buy (no pack in the metadata)".into());
    };
    let payer = payer(&intent.metadata, None, id_of(&intent.customer));
    if payer == PayerRef::default() {
        return Meaning::Ignored("no Tollgate account, user or customer named".into());
    }
    Meaning::Event(PaymentEvent::PackPaid(PackPayment {
        payer,
        pack,
        payment_id: intent.id.clone(),
        payment_intent: Some(intent.id),
        amount_minor: intent.amount_received.or(intent.amount),
        currency: currency(intent.currency.as_deref()),
    }))
}

fn subscription(sub: Subscription, observed_at: OffsetDateTime) -> Result<Meaning, String> {
    let Some(status) = SubscriptionStatus::from_stripe(&sub.status) else {
        return Ok(Meaning::Ignored(format!("unknown status `{}`", sub.status)));
    };
    let item = sub.items.as_ref().and_then(|i| i.data.first());
    let price = item.and_then(|i| i.price.as_ref());
    let period = window(
        sub.current_period_start
            .or_else(|| item.and_then(|i| i.current_period_start)),
        sub.current_period_end
            .or_else(|| item.and_then(|i| i.current_period_end)),
    )?;
    Ok(Meaning::Event(PaymentEvent::SubscriptionSynced(
        SubscriptionSnapshot {
            payer: payer(&sub.metadata, None, id_of(&sub.customer)),
            price: price.map(|p| p.id.clone()),
            plan: meta(&sub.metadata, "plan"),
            interval: price
                .and_then(|p| p.recurring.as_ref())
                .and_then(|r| interval(&r.interval)),
            status,
            period,
            trial_end: sub.trial_end.map(at).transpose()?,
            cancel_at_period_end: sub.cancel_at_period_end.unwrap_or(false),
            created_at: sub.created.map(at).transpose()?,
            canceled_at: sub.ended_at.or(sub.canceled_at).map(at).transpose()?,
            external_id: sub.id,
            observed_at,
        },
    )))
}

fn invoice_paid(invoice: Invoice, observed_at: OffsetDateTime) -> Result<Meaning, String> {
    let Some(subscription) = invoice.subscription() else {
        return Ok(Meaning::Ignored("not a subscription's invoice".into()));
    };
    let line = invoice.subscription_line();
    let metadata = invoice.metadata();
    let renews = matches!(
        invoice.billing_reason.as_deref(),
        Some("subscription_create" | "subscription_cycle") | None
    );
    Ok(Meaning::Event(PaymentEvent::InvoicePaid(InvoicePayment {
        payer: payer(metadata, None, id_of(&invoice.customer)),
        plan: meta(metadata, "plan"),
        price: line.and_then(InvoiceLine::price),
        period: match line.and_then(|l| l.period.as_ref()) {
            Some(p) => window(Some(p.start), Some(p.end))?,
            None => None,
        },
        renews,
        amount_minor: invoice.amount_paid.unwrap_or(0),
        currency: currency(invoice.currency.as_deref()),
        payment_intent: invoice.payment_intent(),
        subscription: Some(subscription),
        invoice_id: invoice.id,
        observed_at,
    })))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ACCOUNT: &str = "acc_01JD0000000000000000000001";

    fn event(kind: &str, object: serde_json::Value) -> serde_json::Value {
        json!({"id": "evt_1", "object": "event", "type": kind, "created": 1_780_000_000,
               "data": {"object": object}})
    }

    fn vector(resource: &str) -> serde_json::Value {
        let text = include_str!("../tests/vectors/stripe-objects.json");
        let all: serde_json::Value = serde_json::from_str(text).unwrap();
        all["resources"][resource].clone()
    }

    fn event_of(meaning: Meaning) -> PaymentEvent {
        match meaning {
            Meaning::Event(e) => e,
            Meaning::Ignored(why) => panic!("ignored: {why}"),
        }
    }

    #[test]
    fn a_paid_pack_checkout_names_buyer_pack_and_payment() {
        let e = event(
            "checkout.session.completed",
            json!({"id": "cs_1", "object": "checkout.session", "mode": "payment",
                   "payment_status": "paid", "payment_intent": "pi_1", "amount_total": 999,
                   "currency": "usd", "customer": "cus_1",
                   "metadata": {"account_id": ACCOUNT, "pack": "starter"}}),
        );
        let PaymentEvent::PackPaid(paid) = event_of(meaning(&e).unwrap()) else {
            panic!("not a pack")
        };
        assert_eq!(paid.payer.account, Some(AccountId::parse(ACCOUNT).unwrap()));
        assert_eq!(paid.payer.customer.as_deref(), Some("cus_1"));
        assert_eq!(
            (paid.pack.as_str(), paid.payment_id.as_str()),
            ("starter", "cs_1")
        );
        assert_eq!(paid.payment_intent.as_deref(), Some("pi_1"));
        assert_eq!(paid.amount_minor, Some(999));
    }

    #[test]
    fn unpaid_subscription_and_anonymous_checkouts_are_ignored() {
        let object = |extra: serde_json::Value| {
            let mut base = json!({"id": "cs_1", "mode": "payment", "payment_status": "paid",
                                  "metadata": {"pack": "starter", "user_id": "usr_01JD0000000000000000000001"}});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            base
        };
        let ignored = |e| matches!(meaning(&e).unwrap(), Meaning::Ignored(_));
        let completed = "checkout.session.completed";
        assert!(ignored(event(
            completed,
            object(json!({"payment_status": "unpaid"}))
        )));
        assert!(ignored(event(
            completed,
            object(json!({"mode": "subscription"}))
        )));
        assert!(matches!(
            meaning(&event(
                completed,
                object(json!({"mode": "subscription", "customer": "cus_9"}))
            ))
            .unwrap(),
            Meaning::Event(PaymentEvent::CustomerLinked(PayerRef {
                customer: Some(_),
                ..
            }))
        ));
        assert!(ignored(event(
            completed,
            object(json!({"metadata": {"pack": "starter"}}))
        )));
        assert!(ignored(event("customer.created", json!({"id": "cus_1"}))));
        // Stripe's own example session is unpaid.
        assert!(ignored(event(completed, vector("checkout.session"))));
        let PaymentEvent::PackPaid(paid) = event_of(
            meaning(&event(
                "checkout.session.async_payment_succeeded",
                object(json!({})),
            ))
            .unwrap(),
        ) else {
            panic!()
        };
        assert!(paid.payer.user.is_some());
        assert!(meaning(&json!({"no": "event"})).is_err());
    }

    #[test]
    fn stripes_example_subscription_reads_in_the_new_shape() {
        let mut sub = vector("subscription");
        sub["metadata"] = json!({"account_id": ACCOUNT});
        let PaymentEvent::SubscriptionSynced(snap) =
            event_of(meaning(&event("customer.subscription.updated", sub)).unwrap())
        else {
            panic!()
        };
        assert_eq!(snap.external_id, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
        assert_eq!(snap.status, SubscriptionStatus::Active);
        assert_eq!(
            snap.price.as_deref(),
            Some("price_1PgafmB7WZ01zgkW6dKueIc5")
        );
        assert_eq!(snap.interval, Some(Interval::Month));
        assert_eq!(snap.payer.customer.as_deref(), Some("cus_QXg1o8vcGmoR32"));
        assert!(snap.cancel_at_period_end);
        assert_eq!(snap.observed_at, at(1_780_000_000).unwrap());
    }

    #[test]
    fn the_old_shape_puts_the_period_at_the_top() {
        let sub = json!({"id": "sub_1", "status": "past_due", "customer": "cus_1",
            "current_period_start": 1_780_000_000, "current_period_end": 1_782_592_000,
            "items": {"data": [{"price": {"id": "price_pro_m", "recurring": {"interval": "month"}}}]}});
        let PaymentEvent::SubscriptionSynced(snap) =
            event_of(meaning(&event("customer.subscription.updated", sub)).unwrap())
        else {
            panic!()
        };
        assert_eq!(snap.status, SubscriptionStatus::PastDue);
        assert_eq!(snap.period.unwrap().end.unix_timestamp(), 1_782_592_000);
    }

    #[test]
    fn a_paid_invoice_names_its_subscription_line_in_either_shape() {
        let old = json!({"id": "in_1", "customer": "cus_1", "subscription": "sub_1",
        "billing_reason": "subscription_cycle", "amount_paid": 1900, "currency": "usd",
        "payment_intent": "pi_9", "subscription_details": {"metadata": {"plan": "pro"}},
        "lines": {"data": [
            {"proration": true, "period": {"start": 1, "end": 2}, "price": {"id": "price_x"}},
            {"period": {"start": 1_780_000_000, "end": 1_782_592_000}, "price": {"id": "price_pro_m"}}
        ]}});
        let PaymentEvent::InvoicePaid(paid) =
            event_of(meaning(&event("invoice.paid", old)).unwrap())
        else {
            panic!()
        };
        assert_eq!(paid.subscription.as_deref(), Some("sub_1"));
        assert_eq!(paid.price.as_deref(), Some("price_pro_m"));
        assert_eq!(paid.plan.as_deref(), Some("pro"));
        assert_eq!(paid.payment_intent.as_deref(), Some("pi_9"));
        assert!(paid.renews);
        // Stripe's example invoice (the new shape) bills a subscription through `parent`.
        let mut new = vector("invoice");
        new["parent"]["subscription_details"]["subscription"] = json!("sub_2");
        new["billing_reason"] = json!("subscription_update");
        let PaymentEvent::InvoicePaid(paid) =
            event_of(meaning(&event("invoice.paid", new)).unwrap())
        else {
            panic!()
        };
        assert_eq!(paid.subscription.as_deref(), Some("sub_2"));
        assert!(!paid.renews, "a proration invoice grants no allowance");
        // An invoice that bills no subscription is not ours to act on.
        let mut manual = vector("invoice");
        manual["parent"] = json!(null);
        assert!(matches!(
            meaning(&event("invoice.paid", manual)).unwrap(),
            Meaning::Ignored(_)
        ));
    }

    #[test]
    fn refunds_and_disputes_become_charge_state() {
        let mut charge = vector("charge");
        charge["amount_refunded"] = json!(40);
        charge["payment_intent"] = json!("pi_1");
        let PaymentEvent::ChargeChanged(state) =
            event_of(meaning(&event("charge.refunded", charge)).unwrap())
        else {
            panic!()
        };
        assert_eq!(
            (
                state.amount_minor,
                state.refunded_minor,
                state.payment_intent.as_deref()
            ),
            (100, 40, Some("pi_1"))
        );
        let dispute = |status: &str| {
            let mut d = vector("dispute");
            d["status"] = json!(status);
            match event_of(meaning(&event("charge.dispute.closed", d)).unwrap()) {
                PaymentEvent::ChargeChanged(state) => state.dispute,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(dispute("warning_needs_response"), Some(DisputeStatus::Open));
        assert_eq!(dispute("won"), Some(DisputeStatus::Won));
        assert_eq!(dispute("lost"), Some(DisputeStatus::Lost));
    }

    #[test]
    fn a_quick_buy_is_a_payment_intent_naming_a_pack() {
        let mut intent = vector("payment_intent");
        intent["status"] = json!("succeeded");
        assert!(matches!(
            meaning(&event("payment_intent.succeeded", intent.clone())).unwrap(),
            Meaning::Ignored(_)
        ));
        intent["metadata"] = json!({"pack": "starter", "account_id": ACCOUNT});
        let PaymentEvent::PackPaid(paid) =
            event_of(meaning(&event("payment_intent.succeeded", intent)).unwrap())
        else {
            panic!()
        };
        assert_eq!(paid.payment_id, "pi_1PgafyB7WZ01zgkWSjxsAJo3");
        assert_eq!(
            paid.payment_intent.as_deref(),
            Some("pi_1PgafyB7WZ01zgkWSjxsAJo3")
        );
    }

    #[test]
    fn envelopes_need_an_id_and_a_type() {
        let (envelope, _) = envelope(br#"{"id":"evt_9","type":"invoice.paid"}"#).unwrap();
        assert_eq!(envelope.kind, "invoice.paid");
        assert!(super::envelope(b"[1]").is_err());
        assert!(super::envelope(br#"{"id":"","type":"x"}"#).is_err());
    }
}
