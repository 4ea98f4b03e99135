//! Reading a verified Stripe event: its envelope (id and type, to store it once) and what
//! it means for Tollgate. Stripe's wire types stay in this module.

use std::collections::HashMap;

use billing_core::ids::{AccountId, PrefixedId, UserId};
use serde::Deserialize;

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

/// Who paid, as the checkout named them in its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buyer {
    /// `metadata.account_id` (what Tollgate's own checkouts set).
    Account(AccountId),
    /// `metadata.user_id` (a user of the account).
    User(UserId),
}

/// What an event means for Tollgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    /// A credit pack was paid for: grant it once for this payment.
    PackPaid {
        /// Who paid.
        buyer: Buyer,
        /// The pack id (`metadata.pack`).
        pack: String,
        /// The checkout session (`cs_…`): the grant's business key.
        payment: String,
    },
    /// Nothing to do; why.
    Ignored(String),
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: Data,
}

#[derive(Debug, Deserialize)]
struct Data {
    object: serde_json::Value,
}

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
    metadata: HashMap<String, String>,
}

/// What a verified event body means. An event Tollgate does not act on (yet), or one that
/// names no buyer or pack, is `Ignored` with the reason; a body that is not an event is an
/// error.
pub fn meaning(event: &serde_json::Value) -> Result<Meaning, String> {
    let event: Event =
        serde_json::from_value(event.clone()).map_err(|e| format!("not an event: {e}"))?;
    match event.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let session: CheckoutSession = serde_json::from_value(event.data.object)
                .map_err(|e| format!("not a checkout session: {e}"))?;
            Ok(checkout_paid(session))
        }
        other => Ok(Meaning::Ignored(format!("`{other}` is not acted on"))),
    }
}

fn checkout_paid(session: CheckoutSession) -> Meaning {
    if session.mode.as_deref() != Some("payment") {
        return Meaning::Ignored("not a one-time payment".into());
    }
    // An asynchronous payment (a bank debit) completes the session unpaid; its
    // `async_payment_succeeded` event comes once the money is there.
    if session.payment_status.as_deref() != Some("paid") {
        return Meaning::Ignored("not paid yet".into());
    }
    let Some(pack) = session.metadata.get("pack").cloned() else {
        return Meaning::Ignored("no pack in the metadata".into());
    };
    let account = session
        .metadata
        .get("account_id")
        .or(session.client_reference_id.as_ref())
        .and_then(|id| AccountId::parse(id).ok());
    let buyer = match account {
        Some(account) => Buyer::Account(account),
        None => match session
            .metadata
            .get("user_id")
            .and_then(|id| UserId::parse(id).ok())
        {
            Some(user) => Buyer::User(user),
            None => return Meaning::Ignored("no Tollgate account or user in the metadata".into()),
        },
    };
    Meaning::PackPaid {
        buyer,
        pack,
        payment: session.id,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn session(kind: &str, object: serde_json::Value) -> serde_json::Value {
        json!({"id": "evt_1", "object": "event", "type": kind, "data": {"object": object}})
    }

    #[test]
    fn a_paid_pack_checkout_names_buyer_pack_and_payment() {
        let account = "acc_01JD0000000000000000000001";
        let event = session(
            "checkout.session.completed",
            json!({"id": "cs_1", "object": "checkout.session", "mode": "payment",
                   "payment_status": "paid", "metadata": {"account_id": account, "pack": "starter"}}),
        );
        assert_eq!(
            meaning(&event).unwrap(),
            Meaning::PackPaid {
                buyer: Buyer::Account(AccountId::parse(account).unwrap()),
                pack: "starter".into(),
                payment: "cs_1".into(),
            }
        );
    }

    #[test]
    fn unpaid_subscription_foreign_and_anonymous_checkouts_are_ignored() {
        let object = |extra: serde_json::Value| {
            let mut base = json!({"id": "cs_1", "mode": "payment", "payment_status": "paid",
                                  "metadata": {"pack": "starter", "user_id": "usr_01JD0000000000000000000001"}});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            base
        };
        let ignored = |event| matches!(meaning(&event).unwrap(), Meaning::Ignored(_));
        assert!(ignored(session(
            "checkout.session.completed",
            object(json!({"payment_status": "unpaid"}))
        )));
        assert!(ignored(session(
            "checkout.session.completed",
            object(json!({"mode": "subscription"}))
        )));
        assert!(ignored(session(
            "checkout.session.completed",
            object(json!({"metadata": {"pack": "starter"}}))
        )));
        assert!(ignored(session("customer.created", json!({"id": "cus_1"}))));
        assert!(matches!(
            meaning(&session(
                "checkout.session.async_payment_succeeded",
                object(json!({}))
            ))
            .unwrap(),
            Meaning::PackPaid {
                buyer: Buyer::User(_),
                ..
            }
        ));
        assert!(meaning(&json!({"no": "event"})).is_err());
    }

    #[test]
    fn envelopes_need_an_id_and_a_type() {
        let (envelope, _) = envelope(br#"{"id":"evt_9","type":"invoice.paid"}"#).unwrap();
        assert_eq!(envelope.kind, "invoice.paid");
        assert!(super::envelope(b"[1]").is_err());
        assert!(super::envelope(br#"{"id":"","type":"x"}"#).is_err());
    }
}
