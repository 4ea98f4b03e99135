//! The server with a Stripe key, against a fake Stripe API (wiremock) answering with the
//! shapes of Stripe's published fixtures: checkouts and the portal go to Stripe, the
//! customer is created once per account, a plan change is made at Stripe and its answer
//! applied, and a price missing from the catalog is named before anything is sent.

use api_tests::{Db, STRIPE_SECRET, TestApp};
use serde_json::{Value, json};
use time::OffsetDateTime;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::payments::{deliver_all, event};

const PERIOD: i64 = 30 * 86_400;

fn fixture(resource: &str) -> Value {
    let doc: Value = serde_json::from_str(include_str!(
        "../../crates/payments-stripe/tests/vectors/stripe-objects.json"
    ))
    .unwrap();
    doc["resources"][resource].clone()
}

/// Stripe's fixture subscription, live on `price` (API version 2026-09-30 adds
/// `billing_schedules`, which the older fixture lacks).
fn subscription(account: &str, plan: &str, price: &str, start: i64) -> Value {
    let mut sub = fixture("subscription");
    for (k, v) in json!({
        "id": "sub_fake", "customer": "cus_fake", "billing_schedules": [],
        "status": "active", "cancel_at": null, "canceled_at": null, "ended_at": null,
        "trial_end": null, "cancel_at_period_end": false, "created": start,
        "metadata": {"account_id": account, "plan": plan},
    })
    .as_object()
    .unwrap()
    {
        sub[k] = v.clone();
    }
    let item = &mut sub["items"]["data"][0];
    item["current_period_start"] = json!(start);
    item["current_period_end"] = json!(start + PERIOD);
    item["price"]["id"] = json!(price);
    sub
}

fn requests_to<'a>(all: &'a [Request], verb: &str, to: &str) -> Vec<&'a Request> {
    all.iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == to)
        .collect()
}

async fn fake_stripe() -> MockServer {
    let server = MockServer::start().await;
    let mut customer = fixture("customer");
    customer["id"] = json!("cus_fake");
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(customer))
        .mount(&server)
        .await;
    let mut session = fixture("checkout.session");
    session["id"] = json!("cs_fake");
    session["url"] = json!("https://checkout.stripe.com/c/pay/cs_fake");
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(session))
        .mount(&server)
        .await;
    let mut portal = fixture("billing_portal.session");
    portal["url"] = json!("https://billing.stripe.com/p/session/fake");
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(portal))
        .mount(&server)
        .await;
    server
}

async fn stripe_app(db: Db, stripe: &MockServer) -> Option<TestApp> {
    let base = stripe.uri();
    TestApp::spawn_with(db, &[], move |loaded| {
        let payments = &mut loaded.settings.payments;
        payments.stripe_secret_key = Some("sk_test_fake".to_owned().into());
        payments.stripe_api_base = base;
        payments.stripe_webhook_secret = Some(STRIPE_SECRET.to_owned().into());
        payments.webhook_sweep_ms = 50;
        let catalog = &mut loaded.catalog;
        catalog
            .packs
            .get_mut("small")
            .unwrap()
            .price
            .stripe_price_id = Some("price_small".into());
        for (plan, price) in [("pro", "price_pro_month"), ("team", "price_team_month")] {
            let prices = &mut catalog.plans.get_mut(plan).unwrap().prices;
            prices
                .get_mut(&billing_core::catalog::Interval::Month)
                .unwrap()
                .stripe_price_id = Some(price.into());
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_backed_server_sells_through_stripe() {
    for db in [Db::Sqlite, Db::Postgres] {
        let stripe = fake_stripe().await;
        let Some(app) = stripe_app(db, &stripe).await else {
            continue;
        };
        let (token, _, account) = app.sign_up("stripe-buyer@example.com").await;
        let urls = json!({"success_url": "http://localhost:3000/ok",
                          "cancel_url": "http://localhost:3000/no"});

        // A pack: the customer is created (once), the checkout is Stripe's.
        let mut body = urls.clone();
        body["pack"] = json!("small");
        for attempt in 0..2 {
            let key = format!("buy-{attempt}");
            let response = app
                .send(
                    reqwest::Method::POST,
                    "/v1/checkout/pack",
                    Some(&token),
                    Some(body.clone()),
                    &[("idempotency-key", &key)],
                )
                .await;
            assert_eq!(response.status(), 200);
            let session: Value = response.json().await.unwrap();
            assert_eq!(session["url"], "https://checkout.stripe.com/c/pay/cs_fake");
        }
        let sent = stripe.received_requests().await.unwrap();
        let customers = requests_to(&sent, "POST", "/v1/customers");
        assert_eq!(customers.len(), 1, "one customer per account");
        let checkouts = requests_to(&sent, "POST", "/v1/checkout/sessions");
        let keys: Vec<_> = checkouts
            .iter()
            .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1], "{keys:?}");
        assert!(keys.iter().all(|k| k.contains("buy-")), "{keys:?}");
        let form = String::from_utf8_lossy(&checkouts[0].body).into_owned();
        assert!(form.contains("customer=cus_fake"), "{form}");
        assert!(form.contains("line_items[0][price]=price_small"), "{form}");

        // Stripe reports the payment; the pack is granted once.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let before = app.available(&token).await;
        let paid = event(
            "evt_fake_cs",
            "checkout.session.completed",
            now,
            json!({"id": "cs_fake", "object": "checkout.session", "mode": "payment",
                   "payment_status": "paid", "amount_total": 500, "currency": "usd",
                   "payment_intent": "pi_fake", "customer": "cus_fake",
                   "client_reference_id": account, "metadata": {"pack": "small"}}),
        );
        deliver_all(&app, &[paid.clone(), paid]).await;
        app.settle_webhooks().await;
        assert_eq!(app.available(&token).await, before + 5000);

        // The portal.
        let (status, portal) = app
            .post(
                "/v1/billing/portal",
                Some(&token),
                json!({"return_url": "http://localhost:3000/account"}),
            )
            .await;
        assert_eq!(
            (status, portal["url"].as_str()),
            (200, Some("https://billing.stripe.com/p/session/fake")),
            "{portal}"
        );

        // A subscription to pro, as Stripe's events report it; then an upgrade to team,
        // made at Stripe (the item's price replaced, prorated at once) and applied.
        let pro = subscription(&account, "pro", "price_pro_month", now - 86_400);
        deliver_all(
            &app,
            &[event(
                "evt_fake_sub",
                "customer.subscription.created",
                now - 60,
                pro.clone(),
            )],
        )
        .await;
        app.settle_webhooks().await;
        assert_eq!(
            app.get_as("/v1/subscription", &token).await.1["plan"],
            "pro"
        );
        let team = subscription(&account, "team", "price_team_month", now - 86_400);
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions/sub_fake"))
            .respond_with(ResponseTemplate::new(200).set_body_json(pro))
            .mount(&stripe)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/subscriptions/sub_fake"))
            .respond_with(ResponseTemplate::new(200).set_body_json(team))
            .mount(&stripe)
            .await;
        let before = app.available(&token).await;
        let (status, sub) = app
            .post(
                "/v1/subscription/change",
                Some(&token),
                json!({"plan": "team"}),
            )
            .await;
        assert_eq!((status, &sub["plan"]), (200, &json!("team")), "{sub}");
        assert_eq!(app.available(&token).await, before + 40_000);
        let sent = stripe.received_requests().await.unwrap();
        let update = requests_to(&sent, "POST", "/v1/subscriptions/sub_fake");
        let form = String::from_utf8_lossy(&update[0].body).into_owned();
        assert!(form.contains("proration_behavior=always_invoice"), "{form}");
        assert!(form.contains("items[0][price]=price_team_month"), "{form}");

        // A pack without a Stripe price is named; nothing reaches Stripe, not even the
        // customer of a new buyer.
        let count = stripe.received_requests().await.unwrap().len();
        let (newcomer, _, _) = app.sign_up("stripe-newcomer@example.com").await;
        let mut large = urls.clone();
        large["pack"] = json!("large");
        let (status, problem) = app.post("/v1/checkout/pack", Some(&newcomer), large).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (503, Some("payments_not_configured")),
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("pack `large`"),
            "{problem}"
        );
        assert_eq!(stripe.received_requests().await.unwrap().len(), count);
    }
}

/// `tollgate stripe sync`'s use: Stripe's subscriptions, listed through the gateway,
/// compared with Tollgate's; a report changes nothing, a repair applies Stripe's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reports_then_repairs_drift_from_stripe() {
    for db in [Db::Sqlite, Db::Postgres] {
        let stripe = fake_stripe().await;
        let Some(app) = stripe_app(db, &stripe).await else {
            continue;
        };
        let (token, _, account) = app.sign_up("drift@example.com").await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let start = now - 86_400;
        let pro = subscription(&account, "pro", "price_pro_month", start);
        deliver_all(
            &app,
            &[event(
                "evt_drift_sub",
                "customer.subscription.created",
                now - 60,
                pro.clone(),
            )],
        )
        .await;
        app.settle_webhooks().await;

        // A webhook was lost: Stripe has it past due and ending; and Stripe holds a
        // subscription of a customer Tollgate never saw.
        let mut drifted = pro.clone();
        drifted["status"] = json!("past_due");
        drifted["cancel_at_period_end"] = json!(true);
        let mut stranger = subscription("acc_unknown", "pro", "price_pro_month", start);
        stranger["id"] = json!("sub_stranger");
        stranger["customer"] = json!("cus_stranger");
        stranger["metadata"] = json!({});
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "object": "list", "url": "/v1/subscriptions", "has_more": false,
                "data": [drifted, stranger]
            })))
            .mount(&stripe)
            .await;
        let gateway = payments_stripe::StripePayments::new(
            &payments_stripe::StripeConfig {
                secret_key: "sk_test_fake".into(),
                api_base: stripe.uri(),
                timeout: std::time::Duration::from_secs(5),
            },
            std::sync::Arc::new(app::system::SystemClock),
        )
        .unwrap();
        let billing = app.billing();
        let report = billing
            .reconcile_subscriptions(gateway.list_subscriptions().await.unwrap(), false)
            .await
            .unwrap();
        assert_eq!((report.checked, report.in_step), (2, 0));
        assert_eq!(report.unknown, ["sub_stranger"]);
        let [drift] = report.drifted.as_slice() else {
            panic!("{report:?}")
        };
        assert_eq!(drift.external_id, "sub_fake");
        assert_eq!(
            drift.differences,
            [
                "status: active → past_due",
                "cancel at period end: false → true"
            ]
        );
        assert_eq!(drift.repair, None);
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(
            state["subscription"]["status"], "active",
            "a report changes nothing"
        );

        let report = billing
            .reconcile_subscriptions(gateway.list_subscriptions().await.unwrap(), true)
            .await
            .unwrap();
        assert_eq!(report.drifted[0].repair, Some(Ok(())));
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(state["subscription"]["status"], "past_due", "{state}");
        assert_eq!(
            state["subscription"]["cancel_at_period_end"], true,
            "{state}"
        );
        // Now in step.
        let report = billing
            .reconcile_subscriptions(gateway.list_subscriptions().await.unwrap(), true)
            .await
            .unwrap();
        assert_eq!((report.in_step, report.drifted.len()), (1, 0), "{report:?}");
    }
}
