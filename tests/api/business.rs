//! `GET /v1/admin/metrics` against a month whose every figure is counted by hand: sign-ups,
//! subscriptions (new, trialing, converted, churned, reactivated) driven by Stripe's
//! events, a pack bought and partly refunded, spending and a gateway call, on a clock the
//! test moves. Both databases must give the same figures. The month is in the future: an
//! access token is issued on the test's clock but its expiry is checked on the real one.

use std::sync::Arc;

use api_tests::{ADMIN_KEY, Db, STRIPE_SECRET, TestApp, lift_rate_limits, stripe_signature_at};
use billing_core::testing::FixedClock;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::payments::{event, pack_checkout, refunded};

async fn app(db: Db, clock: Arc<FixedClock>) -> Option<TestApp> {
    TestApp::spawn_at(db, &[], clock, |loaded| {
        loaded.settings.payments.stripe_webhook_secret = Some(STRIPE_SECRET.to_owned().into());
        loaded.settings.payments.webhook_sweep_ms = 50;
        lift_rate_limits(loaded);
    })
    .await
}

/// A Stripe subscription object: `plan` billed every `interval`.
fn subscription(id: &str, account: &str, plan: &str, interval: &str, status: &str) -> Value {
    json!({"id": id, "object": "subscription", "customer": format!("cus_{id}"),
           "status": status, "metadata": {"account_id": account, "plan": plan},
           "cancel_at_period_end": false,
           "items": {"data": [{"price": {"id": format!("price_{plan}_{interval}"),
                                         "recurring": {"interval": interval}},
                               "current_period_start": 0, "current_period_end": 0}]}})
}

struct History<'a> {
    app: &'a TestApp,
    clock: &'a FixedClock,
    events: u32,
}

impl History<'_> {
    fn at(&self, at: OffsetDateTime) {
        self.clock.set(at);
    }

    async fn sign_up(&self, name: &str) -> (String, String) {
        let (token, _, account) = self.app.sign_up(&format!("{name}@metrics.example")).await;
        (token, account)
    }

    /// Delivers `object` as a `kind` event now, and waits until it is applied.
    async fn stripe(&mut self, kind: &str, object: Value) {
        self.events += 1;
        let now = self.clock.now().unix_timestamp();
        let body = event(&format!("evt_m{}", self.events), kind, now, object);
        self.deliver(&body).await;
    }

    async fn deliver(&self, body: &str) {
        let now = self.clock.now().unix_timestamp();
        let (status, reply) = self
            .app
            .deliver(body, &stripe_signature_at(now, body))
            .await;
        assert_eq!(status, 200, "{reply}");
        self.app.settle_webhooks().await;
    }

    /// A subscription `created` at the clock's time, with its period set around it.
    async fn subscribe(
        &mut self,
        id: &str,
        account: &str,
        plan: &str,
        interval: &str,
        status: &str,
        trial_end: Option<OffsetDateTime>,
    ) -> Value {
        let now = self.clock.now().unix_timestamp();
        let mut sub = subscription(id, account, plan, interval, status);
        sub["created"] = json!(now);
        let items = &mut sub["items"]["data"][0];
        items["current_period_start"] = json!(now);
        items["current_period_end"] = json!(now + 30 * 86_400);
        if let Some(end) = trial_end {
            sub["trial_end"] = json!(end.unix_timestamp());
        }
        self.stripe("customer.subscription.created", sub.clone())
            .await;
        sub
    }
}

use billing_core::ports::Clock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_business_adds_up_the_same_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let clock = Arc::new(FixedClock::new(datetime!(2027-10-20 10:00 UTC)));
        let Some(app) = app(db, clock.clone()).await else {
            continue;
        };
        let mut h = History {
            app: &app,
            clock: &clock,
            events: 0,
        };
        // October, before the period: X and Y subscribe to pro, monthly.
        let (_, x) = h.sign_up("x").await;
        h.subscribe("sub_x", &x, "pro", "month", "active", None)
            .await;
        h.at(datetime!(2027-10-21 10:00 UTC));
        let (_, y) = h.sign_up("y").await;
        let sub_y = h
            .subscribe("sub_y", &y, "pro", "month", "active", None)
            .await;

        // Nov 2: A, B, C sign up. A pays yearly; B and C start trials.
        h.at(datetime!(2027-11-02 10:00 UTC));
        let (token_a, a) = h.sign_up("a").await;
        let (_, b) = h.sign_up("b").await;
        let (token_c, c) = h.sign_up("c").await;
        h.subscribe("sub_a", &a, "pro", "year", "active", None)
            .await;
        let trial_b = datetime!(2027-11-09 10:00 UTC);
        let sub_b = h
            .subscribe("sub_b", &b, "pro", "month", "trialing", Some(trial_b))
            .await;
        let trial_c = datetime!(2027-11-12 10:00 UTC);
        let sub_c = h
            .subscribe("sub_c", &c, "pro", "month", "trialing", Some(trial_c))
            .await;

        // Nov 3: D and E sign up; D starts a team trial that ends after `now`; E buys the
        // small pack (5.00).
        h.at(datetime!(2027-11-03 10:00 UTC));
        let (_, d) = h.sign_up("d").await;
        let (token_e, e) = h.sign_up("e").await;
        h.subscribe(
            "sub_d",
            &d,
            "team",
            "month",
            "trialing",
            Some(datetime!(2027-12-05 10:00 UTC)),
        )
        .await;
        let now = clock.now().unix_timestamp();
        h.deliver(&pack_checkout("metrics", &e, now)).await;

        // Nov 4: A spends two short chats and a long one; an admin takes 7 from B.
        h.at(datetime!(2027-11-04 10:00 UTC));
        for action in ["short_chat", "short_chat", "long_chat"] {
            assert_eq!(app.spend(&token_a, action, None).await.status(), 200);
        }
        let (status, body) = app
            .post(
                &format!("/v1/admin/accounts/{b}/credits"),
                Some(ADMIN_KEY),
                json!({"delta": -7, "reason": "goodwill reversal"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");

        // Nov 5: C calls a model through the gateway.
        h.at(datetime!(2027-11-05 10:00 UTC));
        let (status, body) = app
            .post(
                "/v1/chat/completions",
                Some(&token_c),
                json!({"model": "gpt-4o-mini", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "What does the ledger hold?"}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");

        // Nov 6: 2.00 of E's pack is refunded.
        h.at(datetime!(2027-11-06 10:00 UTC));
        h.deliver(&refunded("metrics", 1, 200, clock.now().unix_timestamp()))
            .await;

        // Nov 9: B's trial converts. Nov 10: Y churns. Nov 11: C cancels inside the trial.
        h.at(trial_b);
        let mut active_b = sub_b.clone();
        active_b["status"] = json!("active");
        h.stripe("customer.subscription.updated", active_b).await;
        h.at(datetime!(2027-11-10 10:00 UTC));
        let mut ended_y = sub_y.clone();
        ended_y["status"] = json!("canceled");
        ended_y["canceled_at"] = json!(clock.now().unix_timestamp());
        h.stripe("customer.subscription.deleted", ended_y).await;
        h.at(datetime!(2027-11-11 10:00 UTC));
        let mut ended_c = sub_c.clone();
        ended_c["status"] = json!("canceled");
        ended_c["canceled_at"] = json!(clock.now().unix_timestamp());
        h.stripe("customer.subscription.deleted", ended_c).await;

        // Nov 12: Y comes back, on team.
        h.at(datetime!(2027-11-12 10:00 UTC));
        h.subscribe("sub_y2", &y, "team", "month", "active", None)
            .await;

        h.at(datetime!(2027-11-20 12:00 UTC));
        let (status, m) = app
            .get_as("/v1/admin/metrics?from=2027-11-01&to=2027-11-30", ADMIN_KEY)
            .await;
        assert_eq!(status, 200, "{m}");

        // Paying now: X (19), A (190 a year), B (19), Y again (49). MRR: 19 + 19 + 49 +
        // 190/12 = 102.8333… → 102.83; ARR: 87 × 12 + 190.
        assert_eq!(
            m["recurring"],
            json!([{"currency": "usd", "mrr": "102.83", "arr": "1234.00", "subscriptions": 4}]),
            "{db:?}: {m}"
        );
        assert_eq!(
            m["subscriptions"],
            json!({"pro": {"active": 3}, "team": {"active": 1, "trialing": 1}}),
            "{db:?}"
        );
        // On Nov 1 X and Y were paying; A, B, C, D are first subscriptions; Y's return is a
        // reactivation; Y churned; C's cancellation inside its trial is not churn.
        assert_eq!(
            m["movement"],
            json!({"paying_at_start": 2, "new": 4, "reactivated": 1, "churned": 1,
                   "churn_rate": "0.5"}),
            "{db:?}"
        );
        // B, C and D started trials; B's and C's have ended, and B's converted.
        assert_eq!(
            m["trials"],
            json!({"started": 3, "ended": 2, "converted": 1, "conversion_rate": "0.5"}),
            "{db:?}"
        );
        assert_eq!(
            m["revenue"],
            json!([{"kind": "pack", "currency": "usd", "payments": 1, "gross": "5.00",
                    "refunded": "2.00", "net": "3.00"}]),
            "{db:?}"
        );
        // The liability is what is left of E's pack, as E's own balance shows it.
        let (_, credits_e) = app.get_as("/v1/credits", &token_e).await;
        let purchased: i64 = credits_e["grants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["source"] == "purchase")
            .map(|g| g["remaining"].as_i64().unwrap())
            .sum();
        assert!(purchased > 0 && purchased < 5000, "{credits_e}");
        assert_eq!(m["liability"], json!(purchased), "{db:?}");
        assert_eq!(m["outstanding"]["purchase"], json!(purchased), "{db:?}");

        // Days: sign-ups on the 2nd and 3rd, spending on the 4th, the call on the 5th.
        let days: Vec<&str> = m["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["day"].as_str().unwrap())
            .collect();
        assert_eq!(
            days,
            ["2027-11-02", "2027-11-03", "2027-11-04", "2027-11-05"],
            "{db:?}: {m}"
        );
        let signups: Vec<&Value> = m["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["signups"])
            .collect();
        assert_eq!(signups, [&json!(3), &json!(2), &json!(0), &json!(0)]);
        let spent = &m["days"][2];
        assert_eq!(spent["consumed"], 10 + 20 + 7, "{db:?}: {spent}");
        assert_eq!(
            spent["by_action"],
            json!({"short_chat": {"credits": 10, "count": 2}, "long_chat": {"credits": 20, "count": 1}})
        );
        let by_source_total: i64 = spent["by_source"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(by_source_total, 37, "{db:?}: {spent}");

        // The call: what C's own usage report says it cost.
        let (_, usage) = app
            .get_as("/v1/usage?from=2027-11-05&to=2027-11-05", &token_c)
            .await;
        let charged = usage["days"][0]["credits"].as_i64().unwrap();
        assert!(charged > 0, "{usage}");
        let called = &m["days"][3];
        assert_eq!(called["consumed"], charged, "{db:?}: {called}");
        assert_eq!(
            called["by_model"],
            json!({"gpt-4o-mini": {"credits": charged, "count": 1}})
        );
        let by_source_total: i64 = called["by_source"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(by_source_total, charged, "{db:?}: {called}");
        assert_eq!(
            m["models"],
            json!([{"model": "gpt-4o-mini", "calls": 1, "credits": charged, "accounts": 1}])
        );

        // October alone: X and Y began, nothing else.
        let (_, october) = app
            .get_as("/v1/admin/metrics?from=2027-10-01&to=2027-10-31", ADMIN_KEY)
            .await;
        assert_eq!(october["movement"]["new"], 2, "{october}");
        assert_eq!(october["movement"]["churn_rate"], Value::Null);
        assert_eq!(october["revenue"], json!([]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_sees_the_business_and_bad_dates_are_refused() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("nosy@metrics.example").await;
    let (status, body) = app.get_as("/v1/admin/metrics", &token).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .get_as("/v1/admin/metrics?from=2027-13-01", ADMIN_KEY)
        .await;
    assert_eq!(
        (status, &body["code"]),
        (422, &json!("invalid_field")),
        "{body}"
    );
    let (status, body) = app.get_as("/v1/admin/metrics", ADMIN_KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscriptions"], json!({}));
    assert_eq!(body["days"][0]["signups"], 1, "{body}");
}
