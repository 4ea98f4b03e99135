//! Stripe webhooks through the HTTP route: every shared signature vector gets Stripe's
//! verdict, and a paid pack checkout grants its credits once, however often and under
//! however many event ids it is delivered.

use std::sync::Arc;
use std::time::Duration;

use api_tests::{Db, TestApp};
use billing_core::ids::AccountId;
use billing_core::ledger::verify;
use billing_core::ports::LedgerStore;
use billing_core::testing::FixedClock;
use serde_json::{Value, json};
use time::OffsetDateTime;

async fn deliver(app: &TestApp, body: &str, signature: &str) -> (u16, Value) {
    app.deliver(body, signature).await
}

#[tokio::test]
async fn every_signature_vector_gets_stripes_verdict_through_the_route() {
    let doc: Value = serde_json::from_str(include_str!(
        "../../crates/payments-stripe/tests/vectors/stripe-webhook-signatures.json"
    ))
    .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let now = cases[0]["now"].as_i64().unwrap();
    let secret = cases[0]["secret"].as_str().unwrap().to_owned();
    assert!(
        cases
            .iter()
            .all(|c| c["now"] == now && c["secret"] == secret.as_str())
    );
    let clock = Arc::new(FixedClock::new(
        OffsetDateTime::from_unix_timestamp(now).unwrap(),
    ));
    let app = TestApp::spawn_at(Db::Sqlite, &[], clock, |loaded| {
        loaded.settings.payments.stripe_webhook_secret = Some(secret.clone().into());
    })
    .await
    .unwrap();
    for case in cases {
        let (status, body) = deliver(
            &app,
            case["payload"].as_str().unwrap(),
            case["header"].as_str().unwrap(),
        )
        .await;
        let name = case["name"].as_str().unwrap();
        if case["valid"].as_bool().unwrap() {
            assert_eq!(status, 200, "{name}: {body}");
        } else {
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("invalid_signature")),
                "{name}: {body}"
            );
        }
    }
}

fn signed(body: &str) -> String {
    api_tests::stripe_signature(body)
}

fn checkout(event: &str, session: &str, account: &str, pack: &str) -> String {
    json!({
        "id": event, "object": "event", "type": "checkout.session.completed",
        "data": {"object": {
            "id": session, "object": "checkout.session", "mode": "payment",
            "payment_status": "paid", "amount_total": 499, "currency": "usd",
            "metadata": {"account_id": account, "pack": pack}
        }}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_pack_checkout_grants_once_however_often_it_is_delivered() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::with_stripe(db).await else {
            continue;
        };
        let (token, _, account) = app.sign_up("buyer@example.com").await;
        let before = app.get_as("/v1/credits", &token).await.1["available"]
            .as_i64()
            .unwrap();
        let pack: Value = app.get("/v1/packs").await.json().await.unwrap();
        let starter = &pack[0];
        let credits =
            starter["credits"].as_i64().unwrap() + starter["bonus_credits"].as_i64().unwrap();
        let pack_id = starter["id"].as_str().unwrap();
        // The same event twice, the same payment under another event id, a bad signature,
        // an unknown pack and another kind of event.
        let body = checkout("evt_a", "cs_test_1", &account, pack_id);
        assert_eq!(
            deliver(&app, &body, &signed(&body)).await,
            (200, json!({"received": true, "duplicate": false}))
        );
        assert_eq!(
            deliver(&app, &body, &signed(&body)).await.1["duplicate"],
            true
        );
        let again = checkout("evt_b", "cs_test_1", &account, pack_id);
        assert_eq!(deliver(&app, &again, &signed(&again)).await.0, 200);
        assert_eq!(deliver(&app, &body, "t=1,v1=00").await.0, 401);
        let unknown = checkout("evt_c", "cs_test_2", &account, "no_such_pack");
        assert_eq!(deliver(&app, &unknown, &signed(&unknown)).await.0, 200);
        let other =
            json!({"id": "evt_d", "type": "customer.created", "data": {"object": {"id": "cus_1"}}})
                .to_string();
        assert_eq!(deliver(&app, &other, &signed(&other)).await.0, 200);
        // The worker applies them.
        let mut balance = before;
        for _ in 0..200 {
            balance = app.get_as("/v1/credits", &token).await.1["available"]
                .as_i64()
                .unwrap();
            if balance != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(balance, before + credits, "granted once");
        // Give the worker more passes: nothing more is granted.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, after) = app.get_as("/v1/credits", &token).await;
        assert_eq!(after["available"].as_i64().unwrap(), before + credits);
        let account: AccountId = account.parse().unwrap();
        let snapshot = app.store.snapshot(&account).await.unwrap();
        assert!(verify(&snapshot, 0).is_empty());
    }
}

/// Seed 002's webhook status and retry: admins list events by status, see one, and queue a
/// failed or ignored one again; a retry never grants twice; users see nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_see_and_retry_webhook_events() {
    let app = TestApp::with_stripe(Db::Sqlite).await.unwrap();
    let (token, _, account) = app.sign_up("admin-view@example.com").await;
    let packs: Value = app.get("/v1/packs").await.json().await.unwrap();
    let paid = checkout(
        "evt_paid",
        "cs_test_9",
        &account,
        packs[0]["id"].as_str().unwrap(),
    );
    let unknown = checkout("evt_unknown", "cs_test_10", &account, "no_such_pack");
    for body in [&paid, &unknown] {
        assert_eq!(deliver(&app, body, &signed(body)).await.0, 200);
    }
    let admin = api_tests::ADMIN_KEY;
    let mut ignored = Value::Null;
    for _ in 0..200 {
        ignored = app
            .get_as("/v1/admin/webhooks?status=ignored", admin)
            .await
            .1;
        if ignored["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ignored["items"][0]["event_id"], "evt_unknown", "{ignored}");
    assert_eq!(
        ignored["items"][0]["last_error"],
        "unknown pack `no_such_pack`"
    );
    let (status, one) = app.get_as("/v1/admin/webhooks/evt_paid", admin).await;
    assert_eq!((status, one["status"].as_str()), (200, Some("processed")));
    let (status, problem) = app
        .post("/v1/admin/webhooks/evt_paid/retry", Some(admin), json!({}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("not_retryable"))
    );
    let (status, queued) = app
        .post(
            "/v1/admin/webhooks/evt_unknown/retry",
            Some(admin),
            json!({}),
        )
        .await;
    assert_eq!((status, queued["status"].as_str()), (202, Some("received")));
    assert_eq!(
        app.get_as("/v1/admin/webhooks/evt_nothing", admin).await.0,
        404
    );
    assert_eq!(app.get_as("/v1/admin/webhooks", &token).await.0, 403);
    assert_eq!(
        app.get_as("/v1/admin/webhooks?status=lost", admin).await.1["code"],
        "invalid_query"
    );
}

/// Found by schemathesis: without a configured secret, a delivery with no signature at all
/// was 404; a missing signature is refused as such first.
#[tokio::test]
async fn an_unsigned_delivery_is_401_whether_or_not_a_secret_is_configured() {
    let unconfigured = TestApp::spawn(&[]).await;
    let response = unconfigured
        .client
        .post(format!("{}/v1/webhooks/stripe", unconfigured.address))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(deliver(&unconfigured, "{}", "t=1,v1=00").await.0, 404);
}
