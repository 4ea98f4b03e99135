//! The Stripe gateway against a fake Stripe API (wiremock) answering with the shapes of
//! Stripe's published fixtures (`tests/vectors/stripe-objects.json`, copied from the
//! project's shared test vectors): what is sent (form fields, idempotency keys) and what
//! Tollgate makes of the answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use billing_core::catalog::Interval;
use billing_core::ids::{AccountId, PrefixedId, SubscriptionId, Ulid};
use billing_core::money::{Currency, Money};
use billing_core::payments::PaymentEvent;
use billing_core::ports::{
    CheckoutItem, CheckoutRequest, PaymentError, PaymentGateway, PlanChange,
};
use billing_core::quota::Window;
use billing_core::subscription::{Subscription, SubscriptionStatus};
use billing_core::testing::FixedClock;
use payments_stripe::{StripeConfig, StripePayments};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);
const KEY: &str = "sk_test_tollgate_fake_key_123";

fn fixture(resource: &str) -> Value {
    let doc: Value = serde_json::from_str(include_str!("vectors/stripe-objects.json")).unwrap();
    doc["resources"][resource].clone()
}

fn patched(resource: &str, fields: Value) -> Value {
    let mut object = fixture(resource);
    for (k, v) in fields.as_object().unwrap() {
        object[k] = v.clone();
    }
    object
}

fn gateway(server: &MockServer) -> StripePayments {
    StripePayments::new(
        &StripeConfig {
            secret_key: KEY.into(),
            api_base: server.uri(),
            timeout: Duration::from_secs(5),
        },
        Arc::new(FixedClock::new(NOW)),
    )
    .unwrap()
}

fn account() -> AccountId {
    AccountId::from_ulid(Ulid(42))
}

/// The form fields of a request, decoded (`metadata[pack]` → `small`).
fn form(request: &Request) -> HashMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    let body = std::str::from_utf8(&request.body).unwrap();
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn idempotency_key(request: &Request) -> Option<String> {
    request
        .headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_owned())
}

fn pack_request(provider_price: Option<&str>) -> CheckoutRequest {
    CheckoutRequest {
        account: account(),
        customer: Some("cus_123".into()),
        item: CheckoutItem::Pack {
            pack: "small".into(),
            price: Money::from_minor_units(499, Currency::USD),
            provider_price: provider_price.map(str::to_owned),
        },
        success_url: "https://app.example/ok".into(),
        cancel_url: "https://app.example/no".into(),
    }
}

fn subscription(version: i64) -> Subscription {
    Subscription {
        id: SubscriptionId::from_ulid(Ulid(7)),
        account: account(),
        plan: "pro".into(),
        interval: Interval::Month,
        status: SubscriptionStatus::Active,
        current_period: Some(Window {
            start: datetime!(2026-05-20 00:00 UTC),
            end: datetime!(2026-06-20 00:00 UTC),
        }),
        trial_end: None,
        cancel_at_period_end: false,
        pending_plan: None,
        external_id: Some("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into()),
        created_at: datetime!(2026-05-20 00:00 UTC),
        canceled_at: None,
        version,
        past_due_since: None,
    }
}

/// Stripe's fixture subscription, live, in the period of [`subscription`]. The fixture
/// predates API version 2026-09-30 (which async-stripe sends), whose subscriptions also
/// carry `billing_schedules`.
fn live_subscription(extra: Value) -> Value {
    let mut sub = patched(
        "subscription",
        json!({
            "billing_schedules": [],
            "status": "active", "cancel_at": null, "canceled_at": null, "ended_at": null,
            "trial_end": null, "cancel_at_period_end": false,
            "metadata": {"account_id": account().to_string(), "plan": "pro"},
        }),
    );
    sub["items"]["data"][0]["current_period_start"] = json!(1_779_235_200); // 2026-05-20
    sub["items"]["data"][0]["current_period_end"] = json!(1_781_913_600); // 2026-06-20
    for (k, v) in extra.as_object().unwrap() {
        sub[k] = v.clone();
    }
    sub
}

#[tokio::test]
async fn a_customer_is_created_once_per_request_with_the_account_in_its_metadata() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("customer")))
        .expect(1)
        .mount(&server)
        .await;
    let id = gateway(&server)
        .create_customer(&account(), "ada@example.com", "user:01H:customer".into())
        .await
        .unwrap();
    assert_eq!(id.as_deref(), fixture("customer")["id"].as_str());
    let requests = server.received_requests().await.unwrap();
    let sent = form(&requests[0]);
    assert_eq!(sent["email"], "ada@example.com");
    assert_eq!(sent["metadata[account_id]"], account().to_string());
    assert_eq!(
        idempotency_key(&requests[0]).as_deref(),
        Some("tollgate:customer:user:01H:customer")
    );
}

#[tokio::test]
async fn a_pack_checkout_names_the_price_the_pack_and_the_account() {
    let server = MockServer::start().await;
    let session = patched(
        "checkout.session",
        json!({"id": "cs_test_pack", "url": "https://checkout.stripe.com/c/pay/cs_test_pack"}),
    );
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(session))
        .expect(1)
        .mount(&server)
        .await;
    let answer = gateway(&server)
        .create_checkout(pack_request(Some("price_small")), "req-1".into())
        .await
        .unwrap();
    assert_eq!(answer.id, "cs_test_pack");
    assert_eq!(answer.url, "https://checkout.stripe.com/c/pay/cs_test_pack");
    let requests = server.received_requests().await.unwrap();
    let sent = form(&requests[0]);
    assert_eq!(sent["mode"], "payment");
    assert_eq!(sent["customer"], "cus_123");
    assert_eq!(sent["line_items[0][price]"], "price_small");
    assert_eq!(sent["line_items[0][quantity]"], "1");
    assert_eq!(sent["metadata[pack]"], "small");
    assert_eq!(sent["metadata[account_id]"], account().to_string());
    assert_eq!(sent["client_reference_id"], account().to_string());
    assert_eq!(sent["success_url"], "https://app.example/ok");
    // The session's PaymentIntent names no pack: only the session's event grants it.
    assert!(!sent.contains_key("payment_intent_data[metadata][pack]"));
    assert_eq!(
        sent["payment_intent_data[metadata][account_id]"],
        account().to_string()
    );
    assert_eq!(
        idempotency_key(&requests[0]).as_deref(),
        Some("tollgate:checkout:req-1")
    );
}

#[tokio::test]
async fn a_plan_checkout_carries_the_trial_and_promotion_codes() {
    let server = MockServer::start().await;
    let session = patched(
        "checkout.session",
        json!({"id": "cs_test_sub", "url": "https://checkout.stripe.com/c/pay/cs_test_sub", "mode": "subscription"}),
    );
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(session))
        .mount(&server)
        .await;
    let mut request = pack_request(None);
    request.item = CheckoutItem::Subscription {
        plan: "pro".into(),
        interval: Interval::Year,
        price: Money::from_minor_units(19_000, Currency::USD),
        provider_price: Some("price_pro_year".into()),
        trial_days: 14,
        allow_promotion_codes: true,
    };
    gateway(&server)
        .create_checkout(request, "req-2".into())
        .await
        .unwrap();
    let sent = form(&server.received_requests().await.unwrap()[0]);
    assert_eq!(sent["mode"], "subscription");
    assert_eq!(sent["line_items[0][price]"], "price_pro_year");
    assert_eq!(sent["subscription_data[trial_period_days]"], "14");
    assert_eq!(sent["subscription_data[metadata][plan]"], "pro");
    assert_eq!(
        sent["subscription_data[metadata][account_id]"],
        account().to_string()
    );
    assert_eq!(sent["allow_promotion_codes"], "true");
}

#[tokio::test]
async fn a_price_missing_from_the_catalog_is_named_and_nothing_is_sent() {
    let server = MockServer::start().await;
    let err = gateway(&server)
        .create_checkout(pack_request(None), "req-3".into())
        .await
        .unwrap_err();
    let PaymentError::NotConfigured(message) = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("pack `small`"), "{message}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_quick_buy_is_a_payment_intent_whose_client_secret_is_returned() {
    let server = MockServer::start().await;
    let intent = patched(
        "payment_intent",
        json!({"id": "pi_quick", "client_secret": "pi_quick_secret_abc"}),
    );
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(ResponseTemplate::new(200).set_body_json(intent))
        .mount(&server)
        .await;
    let answer = gateway(&server)
        .quick_buy(pack_request(None), "req-4".into())
        .await
        .unwrap();
    assert_eq!(answer.id, "pi_quick");
    assert_eq!(answer.client_secret, "pi_quick_secret_abc");
    let requests = server.received_requests().await.unwrap();
    let sent = form(&requests[0]);
    assert_eq!(sent["amount"], "499");
    assert_eq!(sent["currency"], "usd");
    assert_eq!(sent["metadata[pack]"], "small");
    assert_eq!(sent["customer"], "cus_123");
    assert_eq!(sent["automatic_payment_methods[enabled]"], "true");
    assert_eq!(
        idempotency_key(&requests[0]).as_deref(),
        Some("tollgate:quick-buy:req-4")
    );
}

#[tokio::test]
async fn the_portal_link_is_stripes() {
    let server = MockServer::start().await;
    let portal = patched(
        "billing_portal.session",
        json!({"url": "https://billing.stripe.com/p/session/test_123"}),
    );
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(portal))
        .mount(&server)
        .await;
    let url = gateway(&server)
        .portal_url("cus_123", "https://app.example/account".into())
        .await
        .unwrap();
    assert_eq!(url, "https://billing.stripe.com/p/session/test_123");
    let sent = form(&server.received_requests().await.unwrap()[0]);
    assert_eq!(sent["customer"], "cus_123");
    assert_eq!(sent["return_url"], "https://app.example/account");
}

#[tokio::test]
async fn cancelling_at_the_period_end_reports_stripes_answer_as_a_newer_state() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(live_subscription(json!({"cancel_at_period_end": true}))),
        )
        .expect(1)
        .mount(&server)
        .await;
    // The stored state is as new as "now": the answer must still be newer.
    let stored =
        subscription(billing_core::payments::SyncVersion::of(NOW, SubscriptionStatus::Active).0);
    let events = gateway(&server)
        .set_cancellation(&stored, true, false)
        .await
        .unwrap();
    let [PaymentEvent::SubscriptionSynced(snap)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert!(snap.cancel_at_period_end);
    assert_eq!(snap.status, SubscriptionStatus::Active);
    assert_eq!(snap.plan.as_deref(), Some("pro"));
    assert_eq!(snap.payer.account, Some(account()));
    assert_eq!(snap.payer.customer.as_deref(), Some("cus_QXg1o8vcGmoR32"));
    assert_eq!(snap.interval, Some(Interval::Month));
    assert_eq!(snap.period.unwrap().end, datetime!(2026-06-20 00:00 UTC));
    assert!(
        billing_core::payments::SyncVersion::of(snap.observed_at, snap.status).0 > stored.version
    );
    let sent = form(&server.received_requests().await.unwrap()[0]);
    assert_eq!(sent["cancel_at_period_end"], "true");
}

#[tokio::test]
async fn cancelling_now_deletes_the_subscription_at_stripe() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"))
        .respond_with(ResponseTemplate::new(200).set_body_json(live_subscription(
            json!({"status": "canceled", "canceled_at": 1_780_315_200, "ended_at": 1_780_315_200}),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let events = gateway(&server)
        .set_cancellation(&subscription(0), false, false)
        .await
        .unwrap();
    let [PaymentEvent::SubscriptionSynced(snap)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(snap.status, SubscriptionStatus::Canceled);
    assert_eq!(snap.canceled_at, Some(datetime!(2026-06-01 12:00 UTC)));
}

#[tokio::test]
async fn a_plan_change_replaces_the_item_price_with_the_chosen_proration() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"))
        .respond_with(ResponseTemplate::new(200).set_body_json(live_subscription(json!({}))))
        .mount(&server)
        .await;
    let mut upgraded = live_subscription(json!({}));
    upgraded["items"]["data"][0]["price"]["id"] = json!("price_max_month");
    upgraded["metadata"]["plan"] = json!("max");
    Mock::given(method("POST"))
        .and(path("/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"))
        .respond_with(ResponseTemplate::new(200).set_body_json(upgraded))
        .mount(&server)
        .await;
    for (immediately, proration) in [(true, "always_invoice"), (false, "none")] {
        let events = gateway(&server)
            .change_plan(
                &subscription(0),
                PlanChange {
                    plan: "max".into(),
                    interval: Interval::Month,
                    provider_price: Some("price_max_month".into()),
                    immediately,
                },
                format!("change-{immediately}"),
            )
            .await
            .unwrap();
        let [PaymentEvent::SubscriptionSynced(snap)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(snap.price.as_deref(), Some("price_max_month"));
        let requests = server.received_requests().await.unwrap();
        let update = requests
            .iter()
            .rev()
            .find(|r| r.method.as_str() == "POST")
            .unwrap();
        let sent = form(update);
        assert_eq!(sent["items[0][id]"], "si_QXhVnC2h0Jczwc");
        assert_eq!(sent["items[0][price]"], "price_max_month");
        assert_eq!(sent["proration_behavior"], proration);
        assert_eq!(sent["metadata[plan]"], "max");
        assert_eq!(
            idempotency_key(update).as_deref(),
            Some(format!("tollgate:change-plan:change-{immediately}").as_str())
        );
    }
}

#[tokio::test]
async fn an_unanswered_call_is_retried_with_the_same_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("customer")))
        .mount(&server)
        .await;
    gateway(&server)
        .create_customer(&account(), "ada@example.com", "k".into())
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(idempotency_key(&requests[0]), idempotency_key(&requests[1]));
    assert!(idempotency_key(&requests[0]).is_some());
}

#[tokio::test]
async fn refusals_are_named_and_a_refused_key_is_not_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "type": "invalid_request_error",
            "message": format!("Invalid API Key provided: {KEY}")
        }})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "type": "invalid_request_error", "param": "line_items[0][price]",
            "message": "No such price: 'price_gone'"
        }})))
        .mount(&server)
        .await;
    let g = gateway(&server);
    let err = g
        .create_customer(&account(), "a@example.com", "k".into())
        .await
        .unwrap_err();
    assert!(matches!(err, PaymentError::NotConfigured(_)), "{err:?}");
    assert!(!err.to_string().contains(KEY), "{err}");
    let err = g
        .create_checkout(pack_request(Some("price_gone")), "k2".into())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PaymentError::Rejected("No such price: 'price_gone'".into())
    );
    // Refusals are not retried.
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn listing_subscriptions_follows_every_page() {
    let server = MockServer::start().await;
    let mut second = live_subscription(json!({}));
    second["id"] = json!("sub_second");
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(wiremock::matchers::query_param(
            "starting_after",
            "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "url": "/v1/subscriptions", "has_more": false, "data": [second]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "url": "/v1/subscriptions", "has_more": true,
            "data": [live_subscription(json!({}))]
        })))
        .mount(&server)
        .await;
    let subs = gateway(&server).list_subscriptions().await.unwrap();
    let ids: Vec<_> = subs.iter().map(|s| s.external_id.as_str()).collect();
    assert_eq!(ids, ["sub_1Pgc6rB7WZ01zgkWNy0Cn5nw", "sub_second"]);
    let first = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        first
            .url
            .query_pairs()
            .find(|(k, _)| k == "status")
            .unwrap()
            .1,
        "all"
    );
}
