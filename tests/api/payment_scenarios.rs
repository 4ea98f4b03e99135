//! The example catalogs' purchase flows (issue 8's scenarios): framium's token allowance
//! paid by invoice and rolled over at renewal, flirt-studio's packs with bonus credits by
//! Checkout and by PaymentIntent, pain-tracker's trials, yearly prices and promotion codes.

use std::sync::Arc;

use api_tests::{ADMIN_KEY, Db, TestApp, stripe_signature_at};
use billing_core::testing::FixedClock;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::payments::{DAY, deliver_all, event, failed_events, pack_checkout, spend};

async fn stripe_app(files: &[&str], clock: Arc<FixedClock>) -> TestApp {
    TestApp::spawn_at(Db::Sqlite, files, clock, |loaded| {
        loaded.settings.payments.stripe_webhook_secret =
            Some(api_tests::STRIPE_SECRET.to_owned().into());
        loaded.settings.payments.webhook_sweep_ms = 50;
    })
    .await
    .unwrap()
}

async fn deliver_at(app: &TestApp, at: i64, body: &str) {
    let (status, reply) = app.deliver(body, &stripe_signature_at(at, body)).await;
    assert_eq!(status, 200, "{reply}");
}

fn invoice(id: &str, account: &str, plan: &str, amount: i64, period: (i64, i64)) -> Value {
    json!({"id": id, "object": "invoice", "customer": format!("cus_{account}"),
           "billing_reason": if id.ends_with("_1") { "subscription_create" } else { "subscription_cycle" },
           "amount_paid": amount, "currency": "usd",
           "parent": {"subscription_details": {"subscription": format!("sub_{id}"),
                      "metadata": {"account_id": account, "plan": plan}}},
           "lines": {"data": [{"period": {"start": period.0, "end": period.1}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framium_grants_the_token_allowance_per_paid_invoice_and_rolls_it_over() {
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let clock = Arc::new(FixedClock::new(start));
    let app = stripe_app(&["config/examples/framium.toml"], clock.clone()).await;
    let (token, _, account) = app.sign_up("framium@example.com").await;
    let t0 = start.unix_timestamp();
    let first = (t0, t0 + 30 * DAY);
    let body = event(
        "evt_fr_1",
        "invoice.paid",
        t0,
        invoice("in_fr_1", &account, "basic", 900, first),
    );
    // Both invoices bill one subscription.
    let body = body.replace("sub_in_fr_1", "sub_fr");
    deliver_at(&app, t0, &body).await;
    app.settle_webhooks().await;
    assert_eq!(
        app.get_as("/v1/subscription", &token).await.1["plan"],
        "basic"
    );
    assert_eq!(app.available(&token).await, 50_000);
    spend(&app, &account, 45_000).await;
    // A month later the renewal is paid: a new 50K, and 5,000 of the old carry over (the
    // cap is 10,000).
    clock.set(start + time::Duration::days(30) + time::Duration::minutes(1));
    let t1 = t0 + 30 * DAY + 60;
    let renewal = event(
        "evt_fr_2",
        "invoice.paid",
        t1,
        invoice(
            "in_fr_2",
            &account,
            "basic",
            900,
            (t0 + 30 * DAY, t0 + 60 * DAY),
        ),
    )
    .replace("sub_in_fr_2", "sub_fr");
    deliver_at(&app, t1, &renewal).await;
    app.settle_webhooks().await;
    let (_, credits) = app.get_as("/v1/credits", &token).await;
    assert_eq!(credits["available"], 55_000, "{credits}");
    let sources: Vec<&str> = credits["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["source"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&"rollover"), "{credits}");
    assert_eq!(failed_events(&app).await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flirt_studio_sells_packs_with_bonus_by_checkout_and_by_payment_intent() {
    let clock = Arc::new(FixedClock::new(OffsetDateTime::now_utc()));
    let app = stripe_app(&["config/examples/flirt-studio.toml"], clock).await;
    let (token, _, account) = app.sign_up("flirt@example.com").await;
    let before = app.available(&token).await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // `buy_pack`: a Checkout session for the medium pack (500 + 50 bonus).
    let checkout = pack_checkout("flirt", &account, now).replace("\"small\"", "\"medium\"");
    // `buy_quick_pack`: a PaymentIntent for the large pack (1,200 + 200 bonus).
    let intent = event(
        "evt_flirt_pi",
        "payment_intent.succeeded",
        now,
        json!({"id": "pi_flirt_quick", "object": "payment_intent", "status": "succeeded",
               "amount": 3999, "amount_received": 3999, "currency": "usd",
               "metadata": {"account_id": account, "pack": "large"}}),
    );
    deliver_all(&app, &[checkout.clone(), intent.clone(), checkout, intent]).await;
    app.settle_webhooks().await;
    assert_eq!(app.available(&token).await, before + 550 + 1400);
    let (_, history) = app.get_as("/v1/billing/history", &token).await;
    let amounts: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, vec!["39.99", "5.00"], "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pain_tracker_trials_yearly_prices_and_promotion_codes() {
    let clock = Arc::new(FixedClock::new(OffsetDateTime::now_utc()));
    let app = stripe_app(&["config/examples/pain-tracker.toml"], clock).await;
    let urls = json!({"success_url": "http://localhost:5173/ok", "cancel_url": "http://localhost:5173/no"});
    let page_of = |session: &Value| {
        let url = session["url"].as_str().unwrap().to_owned();
        let token = url.rsplit('/').next().unwrap().to_owned();
        format!("{}/v1/local-pay/{token}", app.address)
    };
    // Basic has a 14-day trial, pro a 30-day one; each account gets one trial.
    for (plan, days) in [("basic", 14), ("pro", 30)] {
        let (token, _, _) = app.sign_up(&format!("{plan}@pain.example")).await;
        let mut body = urls.clone();
        body["plan"] = json!(plan);
        body["interval"] = json!("year");
        let (status, session) = app
            .post("/v1/checkout/subscription", Some(&token), body)
            .await;
        assert_eq!(status, 200, "{session}");
        let page = app.client.get(page_of(&session)).send().await.unwrap();
        let page = page.text().await.unwrap();
        assert!(page.contains(&format!("{days}-day free trial")), "{page}");
        assert!(page.contains("per year"), "{page}");
    }
    // A subscription bought with a promotion code: Stripe reports the discounted amount,
    // which is what the history shows.
    let (token, _, account) = app.sign_up("promo@pain.example").await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut paid = invoice("in_promo_1", &account, "basic", 479, (now, now + 365 * DAY));
    paid["lines"]["data"][0]["pricing"] = json!({"price_details": {"price": "price_basic_yearly"}});
    deliver_all(&app, &[event("evt_promo", "invoice.paid", now, paid)]).await;
    app.settle_webhooks().await;
    let (_, state) = app.get_as("/v1/subscription", &token).await;
    assert_eq!(
        (&state["plan"], &state["subscription"]["interval"]),
        (&json!("basic"), &json!("year")),
        "{state}"
    );
    let (_, history) = app.get_as("/v1/billing/history", &token).await;
    assert_eq!(history["items"][0]["amount"], "4.79", "{history}");
    let _ = ADMIN_KEY;
}
