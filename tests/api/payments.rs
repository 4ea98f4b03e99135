//! Credits follow the money, whatever order Stripe's events come in: a subscription's
//! lifecycle and a pack's refunds and disputes, delivered in order, shuffled and duplicated,
//! through the signed HTTP route, on SQLite and on PostgreSQL.

use api_tests::{ADMIN_KEY, Db, TestApp, stripe_signature};
use billing_core::ids::AccountId;
use billing_core::ledger::verify;
use billing_core::ports::LedgerStore;
use serde_json::{Value, json};
use time::OffsetDateTime;

pub(crate) const DAY: i64 = 86_400;

/// One Stripe event, as JSON text.
pub(crate) fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created,
           "data": {"object": object}})
    .to_string()
}

/// The events of a subscription to `pro`: created, first invoice paid, active; renewal
/// paid; the next renewal fails (past due), is paid on retry, active again; set to end at
/// the period's end; and, with `end`, deleted. `tag` keeps each run's Stripe ids apart.
fn subscription_lifecycle(tag: &str, account: &str, now: i64, end: bool) -> Vec<String> {
    let periods = [
        (now - DAY, now + 29 * DAY),
        (now + 29 * DAY, now + 59 * DAY),
        (now + 59 * DAY, now + 89 * DAY),
    ];
    let t0 = now - 3600;
    let sub_id = format!("sub_{tag}");
    let customer = format!("cus_{tag}");
    let meta = json!({"account_id": account, "plan": "pro"});
    let sub = |status: &str, period: (i64, i64)| {
        json!({"id": sub_id, "object": "subscription", "customer": customer, "status": status,
               "metadata": meta, "cancel_at_period_end": false, "created": t0,
               "items": {"data": [{"price": {"id": "price_pro_month", "recurring": {"interval": "month"}},
                                   "current_period_start": period.0, "current_period_end": period.1}]}})
    };
    let invoice = |n: usize, reason: &str, period: (i64, i64), retry: Option<i64>| {
        json!({"id": format!("in_{tag}_{n}"), "object": "invoice", "customer": customer,
               "billing_reason": reason, "amount_paid": 1900, "currency": "usd",
               "next_payment_attempt": retry,
               "parent": {"subscription_details": {"subscription": sub_id, "metadata": meta}},
               "payments": {"data": [{"payment": {"payment_intent": format!("pi_{tag}_{n}")}}]},
               "lines": {"data": [{"period": {"start": period.0, "end": period.1},
                                   "pricing": {"price_details": {"price": "price_pro_month"}}}]}})
    };
    let e = |n: u32, kind: &str, at: i64, object: Value| {
        event(&format!("evt_{tag}_{n}"), kind, at, object)
    };
    let mut events = vec![
        e(
            1,
            "customer.subscription.created",
            t0,
            sub("incomplete", periods[0]),
        ),
        e(
            2,
            "invoice.paid",
            t0 + 1,
            invoice(1, "subscription_create", periods[0], None),
        ),
        e(
            3,
            "customer.subscription.updated",
            t0 + 2,
            sub("active", periods[0]),
        ),
        e(
            4,
            "invoice.paid",
            t0 + 10,
            invoice(2, "subscription_cycle", periods[1], None),
        ),
        e(
            5,
            "customer.subscription.updated",
            t0 + 11,
            sub("active", periods[1]),
        ),
        e(
            6,
            "invoice.payment_failed",
            t0 + 20,
            invoice(3, "subscription_cycle", periods[2], Some(t0 + 3 * DAY)),
        ),
        e(
            7,
            "customer.subscription.updated",
            t0 + 21,
            sub("past_due", periods[1]),
        ),
        e(
            8,
            "invoice.paid",
            t0 + 30,
            invoice(3, "subscription_cycle", periods[2], None),
        ),
        e(
            9,
            "customer.subscription.updated",
            t0 + 31,
            sub("active", periods[2]),
        ),
    ];
    // The customer asks to stop at the period's end: a change only the subscription's own
    // events carry, so an older one applied later would undo it.
    let mut stopping = sub("active", periods[2]);
    stopping["cancel_at_period_end"] = json!(true);
    events.push(e(11, "customer.subscription.updated", t0 + 35, stopping));
    if end {
        let mut deleted = sub("canceled", periods[2]);
        deleted["canceled_at"] = json!(t0 + 40);
        events.push(e(10, "customer.subscription.deleted", t0 + 40, deleted));
    }
    events
}

/// A deterministic shuffle (xorshift), with some events delivered twice, once under a new
/// event id (the same object twice is the duplicate the database must catch).
fn shuffled(events: &[String], seed: u64) -> Vec<String> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out: Vec<String> = events.to_vec();
    for (i, e) in events.iter().enumerate() {
        match next() % 3 {
            0 => out.push(e.clone()),
            1 => out.push(e.replacen("\"id\":\"evt_", &format!("\"id\":\"evt_again{i}_"), 1)),
            _ => {}
        }
    }
    for i in (1..out.len()).rev() {
        let j = usize::try_from(next() % (i as u64 + 1)).unwrap();
        out.swap(i, j);
    }
    out
}

/// What a user and the ledger show of an account, with the run's tag taken out.
pub(crate) async fn state_of(app: &TestApp, token: &str, account: &str, tag: &str) -> Value {
    let (_, subscription) = app.get_as("/v1/subscription", token).await;
    let (_, credits) = app.get_as("/v1/credits", token).await;
    let id: AccountId = account.parse().unwrap();
    let snapshot = app.store.snapshot(&id).await.unwrap();
    assert_eq!(verify(&snapshot, 0), vec![], "ledger verify");
    let mut paid: Vec<(String, u64, u64)> = snapshot
        .grants
        .iter()
        .filter_map(|g| {
            let reference = g.reference.as_deref()?;
            reference
                .starts_with("payment:")
                .then(|| (reference.replace(tag, "T"), g.amount, g.remaining))
        })
        .collect();
    paid.sort();
    let mut sub = subscription["subscription"].clone();
    if let Some(object) = sub.as_object_mut() {
        object.remove("id");
        object.remove("created_at");
    }
    let text = json!({
        "plan": subscription["plan"],
        "subscription": sub,
        "available": credits["available"],
        "payment_grants": paid,
    })
    .to_string()
    .replace(tag, "T");
    serde_json::from_str(&text).unwrap()
}

pub(crate) async fn deliver_all(app: &TestApp, events: &[String]) {
    for body in events {
        let (status, reply) = app.deliver(body, &stripe_signature(body)).await;
        assert_eq!(status, 200, "{reply}");
    }
}

pub(crate) async fn failed_events(app: &TestApp) -> Value {
    app.get_as("/v1/admin/webhooks?status=failed", ADMIN_KEY)
        .await
        .1["items"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_the_same_however_its_events_arrive() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::with_stripe(db).await else {
            continue;
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for end in [false, true] {
            let mut states = Vec::new();
            for seed in 0..5u64 {
                let tag = format!("{}{seed}", if end { "e" } else { "l" });
                let (token, _, account) = app.sign_up(&format!("sub-{tag}@example.com")).await;
                let events = subscription_lifecycle(&tag, &account, now, end);
                let order = if seed == 0 {
                    events
                } else {
                    shuffled(&events, seed)
                };
                deliver_all(&app, &order).await;
                app.settle_webhooks().await;
                states.push((seed, state_of(&app, &token, &account, &tag).await));
            }
            let (_, in_order) = &states[0];
            // In order: one allowance grant per paid invoice, never one for the failure.
            assert_eq!(
                in_order["payment_grants"],
                json!([
                    ["payment:in_T_1", 20000, 20000],
                    ["payment:in_T_2", 20000, 20000],
                    ["payment:in_T_3", 20000, 20000]
                ]),
                "{in_order}"
            );
            if end {
                assert_eq!(in_order["plan"], "free", "{in_order}");
                assert_eq!(in_order["subscription"], Value::Null, "{in_order}");
            } else {
                assert_eq!(in_order["plan"], "pro", "{in_order}");
                assert_eq!(in_order["subscription"]["status"], "active", "{in_order}");
                assert_eq!(in_order["subscription"]["plan"], "pro", "{in_order}");
                assert_eq!(
                    in_order["subscription"]["cancel_at_period_end"], true,
                    "{in_order}"
                );
            }
            for (seed, state) in &states[1..] {
                assert_eq!(state, in_order, "order #{seed} (end: {end})");
            }
        }
        assert_eq!(failed_events(&app).await, json!([]));
    }
}

/// A pack's events: its checkout, then the refunds and disputes of its charge.
pub(crate) fn pack_checkout(tag: &str, account: &str, created: i64) -> String {
    event(
        &format!("evt_{tag}_cs"),
        "checkout.session.completed",
        created,
        json!({"id": format!("cs_{tag}"), "object": "checkout.session", "mode": "payment",
               "payment_status": "paid", "amount_total": 500, "currency": "usd",
               "payment_intent": format!("pi_{tag}"), "customer": format!("cus_{tag}"),
               "metadata": {"account_id": account, "pack": "small"}}),
    )
}

pub(crate) fn refunded(tag: &str, n: u32, refunded: i64, created: i64) -> String {
    event(
        &format!("evt_{tag}_re{n}"),
        "charge.refunded",
        created,
        json!({"id": format!("ch_{tag}"), "object": "charge", "amount": 500,
               "amount_refunded": refunded, "payment_intent": format!("pi_{tag}")}),
    )
}

fn dispute(tag: &str, n: u32, status: &str, created: i64) -> String {
    event(
        &format!("evt_{tag}_dp{n}"),
        if status == "won" || status == "lost" {
            "charge.dispute.closed"
        } else {
            "charge.dispute.created"
        },
        created,
        json!({"id": format!("dp_{tag}"), "object": "dispute", "charge": format!("ch_{tag}"),
               "payment_intent": format!("pi_{tag}"), "status": status, "amount": 500}),
    )
}

async fn pack_credits(app: &TestApp, account: &str) -> (u64, u64) {
    let id: AccountId = account.parse().unwrap();
    let snapshot = app.store.snapshot(&id).await.unwrap();
    assert_eq!(verify(&snapshot, 0), vec![], "ledger verify");
    snapshot
        .grants
        .iter()
        .filter(|g| {
            g.reference
                .as_deref()
                .is_some_and(|r| r.starts_with("payment:"))
        })
        .fold((0, 0), |(a, r), g| (a + g.amount, r + g.remaining))
}

pub(crate) async fn spend(app: &TestApp, account: &str, credits: i64) {
    let (status, body) = app
        .post(
            &format!("/v1/admin/accounts/{account}/credits"),
            Some(ADMIN_KEY),
            json!({"delta": -credits, "reason": "test spending"}),
        )
        .await;
    assert!(status < 300, "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_and_disputes_take_back_only_what_is_unspent() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::with_stripe(db).await else {
            continue;
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        // Spent 3,000 of the pack's 5,000 (after the 550 welcome and daily credits, which
        // burn first); a full refund takes back the 2,550 left, no more, and no debt.
        let (_, _, a) = app.sign_up("refund-full@example.com").await;
        deliver_all(&app, &[pack_checkout("full", &a, now)]).await;
        app.settle_webhooks().await;
        assert_eq!(pack_credits(&app, &a).await, (5000, 5000));
        spend(&app, &a, 3000).await;
        deliver_all(&app, &[refunded("full", 1, 500, now + 1)]).await;
        app.settle_webhooks().await;
        assert_eq!(pack_credits(&app, &a).await, (5000, 0));
        let (_, credits) = app
            .get_as(&format!("/v1/admin/accounts/{a}"), ADMIN_KEY)
            .await;
        assert_eq!(credits["balance"]["available"], 0, "{credits}");

        // Half refunded, reported before the purchase itself: floor(5000 × 250/500) = 2,500
        // go once the purchase arrives; a duplicate and an older (smaller) refund total
        // change nothing.
        let (_, _, b) = app.sign_up("refund-half@example.com").await;
        deliver_all(
            &app,
            &[
                refunded("half", 1, 250, now + 1),
                refunded("half", 1, 250, now + 1),
                refunded("half", 0, 100, now),
                pack_checkout("half", &b, now),
            ],
        )
        .await;
        app.settle_webhooks().await;
        assert_eq!(pack_credits(&app, &b).await, (5000, 2500));

        // A dispute freezes what is left; won, it comes back; a refund meanwhile counts.
        let (_, _, c) = app.sign_up("dispute@example.com").await;
        deliver_all(&app, &[pack_checkout("dp", &c, now)]).await;
        app.settle_webhooks().await;
        spend(&app, &c, 1550).await; // 550 free credits, then 1,000 of the pack
        deliver_all(&app, &[dispute("dp", 1, "needs_response", now + 1)]).await;
        app.settle_webhooks().await;
        assert_eq!(pack_credits(&app, &c).await.1, 0, "frozen");
        deliver_all(
            &app,
            &[
                dispute("dp", 2, "won", now + 5),
                dispute("dp", 1, "needs_response", now + 1),
            ],
        )
        .await;
        app.settle_webhooks().await;
        // The 4,000 frozen come back (as a returned grant under the same payment).
        assert_eq!(pack_credits(&app, &c).await, (9000, 4000));

        // Lost: what was frozen stays gone.
        let (_, _, d) = app.sign_up("dispute-lost@example.com").await;
        deliver_all(
            &app,
            &[
                dispute("lost", 2, "lost", now + 5),
                pack_checkout("lost", &d, now),
                dispute("lost", 1, "needs_response", now + 1),
            ],
        )
        .await;
        app.settle_webhooks().await;
        assert_eq!(pack_credits(&app, &d).await, (5000, 0));
        assert_eq!(failed_events(&app).await, json!([]));
    }
}

/// The purchase flow with no Stripe key, as a front end drives it: checkout, the local pay
/// page, and the same grants and plan changes Stripe's events would make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_and_plans_are_bought_through_the_local_pay_page() {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |url: String| {
        let client = no_redirects.clone();
        async move { client.post(url).send().await.unwrap() }
    };
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_with(db, &[], |loaded| {
            loaded.settings.payments.public_url = "http://127.0.0.1:1".into();
        })
        .await
        else {
            continue;
        };
        let local = |url: &str| url.replace("http://127.0.0.1:1", &app.address);
        let (token, _, account) = app.sign_up("local-buyer@example.com").await;
        let urls = json!({"success_url": "http://localhost:3000/paid?x=1",
                          "cancel_url": "http://localhost:3000/cancelled"});
        let mut body = urls.clone();
        body["pack"] = json!("small");
        // A return URL elsewhere is refused: no open redirect.
        let mut evil = body.clone();
        evil["success_url"] = json!("https://evil.example/steal");
        let (status, problem) = app.post("/v1/checkout/pack", Some(&token), evil).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (422, Some("success_url"))
        );
        let (status, session) = app.post("/v1/checkout/pack", Some(&token), body).await;
        assert_eq!(status, 200, "{session}");
        assert!(session["id"].as_str().unwrap().starts_with("cs_local_"));
        let page_url = local(session["url"].as_str().unwrap());
        let page = app.client.get(&page_url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("Credit pack `small`"));
        let before = app.get_as("/v1/credits", &token).await.1["available"]
            .as_i64()
            .unwrap();
        let paid = post(format!("{page_url}/pay")).await;
        assert_eq!(paid.status(), 303);
        assert_eq!(paid.headers()["location"], "http://localhost:3000/paid?x=1");
        // Paying twice grants once.
        assert_eq!(post(format!("{page_url}/pay")).await.status(), 303);
        let after = app.get_as("/v1/credits", &token).await.1["available"]
            .as_i64()
            .unwrap();
        assert_eq!(after, before + 5000);
        // A forged session is not found.
        let forged = format!("{page_url}x/pay");
        assert_eq!(post(forged).await.status(), 404);

        // A plan: pro has a 14-day trial, once per account.
        let mut plan = urls.clone();
        plan["plan"] = json!("pro");
        plan["interval"] = json!("month");
        let (status, session) = app
            .post("/v1/checkout/subscription", Some(&token), plan.clone())
            .await;
        assert_eq!(status, 200, "{session}");
        let page_url = local(session["url"].as_str().unwrap());
        let page = app
            .client
            .get(&page_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("14-day free trial"), "{page}");
        assert_eq!(post(format!("{page_url}/pay")).await.status(), 303);
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(state["plan"], "pro", "{state}");
        assert_eq!(state["subscription"]["status"], "trialing", "{state}");
        let (status, problem) = app
            .post("/v1/checkout/subscription", Some(&token), plan.clone())
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (409, Some("already_subscribed"))
        );
        // An upgrade applies at once and tops the period's allowance up by the difference;
        // a downgrade waits for the period's end; naming the plan in force takes it back.
        let before = app.get_as("/v1/credits", &token).await.1["available"]
            .as_i64()
            .unwrap();
        let change = |plan: &str| json!({ "plan": plan });
        let (status, sub) = app
            .post("/v1/subscription/change", Some(&token), change("team"))
            .await;
        assert_eq!((status, &sub["plan"]), (200, &json!("team")), "{sub}");
        let after = app.get_as("/v1/credits", &token).await.1["available"]
            .as_i64()
            .unwrap();
        assert_eq!(after - before, 60_000 - 20_000);
        assert_eq!(
            app.get_as("/v1/subscription", &token).await.1["plan"],
            "team"
        );
        let (status, sub) = app
            .post("/v1/subscription/change", Some(&token), change("pro"))
            .await;
        assert_eq!(
            (status, &sub["plan"], &sub["scheduled_plan"]),
            (200, &json!("team"), &json!("pro")),
            "{sub}"
        );
        let (_, state) = app.get_as("/v1/subscription", &token).await;
        assert_eq!(
            (&state["plan"], &state["subscription"]["scheduled_plan"]),
            (&json!("team"), &json!("pro")),
            "{state}"
        );
        let (status, sub) = app
            .post("/v1/subscription/change", Some(&token), change("team"))
            .await;
        assert_eq!(
            (status, &sub["scheduled_plan"]),
            (200, &json!(null)),
            "{sub}"
        );
        for (plan, code) in [("team", "invalid_field"), ("gold", "invalid_field")] {
            let (status, problem) = app
                .post("/v1/subscription/change", Some(&token), change(plan))
                .await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (422, Some(code)),
                "{problem}"
            );
        }
        assert_eq!(
            app.get_as("/v1/credits", &token).await.1["available"]
                .as_i64()
                .unwrap(),
            after,
            "changes back and forth grant nothing more"
        );
        // Cancel at the period's end, take it back, then end it now.
        let (status, sub) = app
            .post("/v1/subscription/cancel", Some(&token), json!({}))
            .await;
        assert_eq!(
            (status, &sub["cancel_at_period_end"]),
            (200, &json!(true)),
            "{sub}"
        );
        let (status, sub) = app
            .post("/v1/subscription/resume", Some(&token), json!({}))
            .await;
        assert_eq!(
            (status, &sub["cancel_at_period_end"]),
            (200, &json!(false)),
            "{sub}"
        );
        let (status, sub) = app
            .post(
                "/v1/subscription/cancel",
                Some(&token),
                json!({"at_period_end": false}),
            )
            .await;
        assert_eq!((status, &sub["status"]), (200, &json!("canceled")), "{sub}");
        assert_eq!(
            app.get_as("/v1/subscription", &token).await.1["plan"],
            "free"
        );
        // The second subscription has no trial.
        let (_, session) = app
            .post("/v1/checkout/subscription", Some(&token), plan)
            .await;
        let page_url = local(session["url"].as_str().unwrap());
        let page = app
            .client
            .get(&page_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!page.contains("trial"), "{page}");
        assert_eq!(
            post(format!("{page_url}/decline")).await.headers()["location"],
            "http://localhost:3000/cancelled"
        );
        assert_eq!(
            app.get_as("/v1/subscription", &token).await.1["plan"],
            "free"
        );

        // A quick buy completes on its page without a success URL.
        let (status, quick) = app
            .post(
                "/v1/checkout/quick-buy",
                Some(&token),
                json!({"pack": "small"}),
            )
            .await;
        assert_eq!(status, 200, "{quick}");
        assert!(
            quick["client_secret"]
                .as_str()
                .unwrap()
                .starts_with("pi_local_")
        );
        let done = post(format!("{}/pay", local(quick["url"].as_str().unwrap()))).await;
        assert_eq!(done.status(), 200);

        // The history: two packs and the trial's invoice, newest first.
        let (_, history) = app.get_as("/v1/billing/history", &token).await;
        let kinds: Vec<(&str, &str, &str)> = history["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["kind"].as_str().unwrap(),
                    p["item"].as_str().unwrap(),
                    p["amount"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("pack", "small", "5.00"),
                ("invoice", "pro", "0.00"),
                ("pack", "small", "5.00")
            ],
            "{history}"
        );
        // An admin comps the account onto team; a user cannot.
        let path = format!("/v1/admin/accounts/{account}/plan");
        assert_eq!(
            app.post(&path, Some(&token), json!({"plan": "team"}))
                .await
                .0,
            403
        );
        let (status, comp) = app
            .post(&path, Some(ADMIN_KEY), json!({"plan": "team"}))
            .await;
        assert_eq!((status, &comp["plan"]), (200, &json!("team")), "{comp}");
        assert_eq!(
            app.get_as("/v1/subscription", &token).await.1["plan"],
            "team"
        );
        let id: AccountId = account.parse().unwrap();
        assert_eq!(verify(&app.store.snapshot(&id).await.unwrap(), 0), vec![]);
    }
}

/// Two instances on one PostgreSQL, each receiving part of the same event stream (and
/// duplicates of the other's), with both workers applying whatever is stored: the same
/// end state as one instance in order, one grant per invoice and payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_apply_one_stream_once() {
    let Some(first) = TestApp::with_stripe(Db::Postgres).await else {
        return;
    };
    let second = first.twin().await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (token, _, account) = first.sign_up("two-instances@example.com").await;
    let mut events = subscription_lifecycle("dual", &account, now, false);
    events.push(pack_checkout("dualpack", &account, now));
    events.push(refunded("dualpack", 1, 100, now + 1));
    let order = shuffled(&events, 7);
    for (i, body) in order.iter().enumerate() {
        let (one, other) = if i % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        assert_eq!(one.deliver(body, &stripe_signature(body)).await.0, 200);
        // The same object again under another event id, to the other instance.
        let again = body.replacen("\"id\":\"evt_", "\"id\":\"evt_twin_", 1);
        assert_eq!(
            other.deliver(&again, &stripe_signature(&again)).await.0,
            200
        );
    }
    first.settle_webhooks().await;
    // Half the events were applied by the other instance: this one sees them within its
    // read cache's TTL.
    first.outwait_read_cache().await;
    let state = state_of(&first, &token, &account, "dual").await;
    assert_eq!(state["plan"], "pro", "{state}");
    assert_eq!(state["subscription"]["status"], "active", "{state}");
    assert_eq!(
        state["subscription"]["cancel_at_period_end"], true,
        "{state}"
    );
    // Three invoices and one pack (a fifth of it refunded: 1,000 of 5,000 taken back).
    assert_eq!(
        state["payment_grants"],
        json!([
            ["payment:cs_Tpack", 5000, 4000],
            ["payment:in_T_1", 20000, 20000],
            ["payment:in_T_2", 20000, 20000],
            ["payment:in_T_3", 20000, 20000]
        ]),
        "{state}"
    );
    assert_eq!(failed_events(&first).await, json!([]));
}

/// A plan is decided from the subscription as stored, not from an instance's read cache.
/// One instance ends a subscription; another, which still has it cached (any check there
/// reads it), refreshes the plan at once (a late invoice applied there, say): the account
/// goes to the default plan, not back onto the plan that ended.
async fn a_plan_is_not_decided_from_another_instances_cache(db: Db) {
    use billing_core::ids::Ulid;
    use billing_core::ports::{AccountStore, SubscriptionStore};
    use billing_core::subscription::SubscriptionStatus;

    let Some(first) = TestApp::spawn_on(db, &[]).await else {
        return;
    };
    let second = first.twin().await;
    let (_, _, account) = first.sign_up("cached-plan@example.com").await;
    let account: AccountId = account.parse().unwrap();
    // Whole seconds: the database keeps microseconds, and the records are compared whole.
    let now =
        OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    let live = billing_core::testing::pro_subscription(
        Ulid::from_parts(1, 1),
        &account,
        SubscriptionStatus::Active,
        "sub_cached_plan",
        now,
    );
    first.store.save(&live, None).await.unwrap();
    assert_eq!(first.billing().refresh_plan(&account).await.unwrap(), "pro");
    assert_eq!(
        second.store.current(&account).await.unwrap(),
        Some(live.clone())
    );
    let mut ended = live.clone();
    ended.status = SubscriptionStatus::Canceled;
    ended.canceled_at = Some(now);
    first
        .store
        .save(&ended, Some(live.expected()))
        .await
        .unwrap();
    let default_plan = first.billing().catalog.default_plan.clone();
    assert_eq!(
        first.billing().refresh_plan(&account).await.unwrap(),
        default_plan
    );
    assert_eq!(
        second.billing().refresh_plan(&account).await.unwrap(),
        default_plan
    );
    first.outwait_read_cache().await;
    let stored = first.store.account(&account).await.unwrap().unwrap();
    assert_eq!(stored.plan, default_plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_not_decided_from_another_instances_cache_sqlite() {
    a_plan_is_not_decided_from_another_instances_cache(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_not_decided_from_another_instances_cache_postgres() {
    a_plan_is_not_decided_from_another_instances_cache(Db::Postgres).await;
}

/// `trial_will_end` and a failed payment mail the account's users, once per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_ending_and_a_failed_payment_are_mailed() {
    let app = TestApp::with_stripe(Db::Sqlite).await.unwrap();
    let (_, _, account) = app.sign_up("notify@example.com").await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let sub = |status: &str| {
        json!({"id": "sub_mail", "object": "subscription", "customer": "cus_mail",
               "status": status, "metadata": {"account_id": account, "plan": "pro"},
               "trial_end": now + 3 * DAY,
               "items": {"data": [{"price": {"id": "price_x", "recurring": {"interval": "month"}},
                                   "current_period_start": now, "current_period_end": now + 3 * DAY}]}})
    };
    let created = event(
        "evt_m1",
        "customer.subscription.created",
        now - 10,
        sub("trialing"),
    );
    let ending = event(
        "evt_m2",
        "customer.subscription.trial_will_end",
        now,
        sub("trialing"),
    );
    let failed = event(
        "evt_m3",
        "invoice.payment_failed",
        now + 1,
        json!({"id": "in_mail", "object": "invoice", "customer": "cus_mail",
               "subscription": "sub_mail", "next_payment_attempt": now + DAY}),
    );
    deliver_all(&app, &[created, ending.clone(), failed, ending]).await;
    app.settle_webhooks().await;
    assert_eq!(
        app.mail_subjects("notify@example.com"),
        vec!["Your trial ends soon", "Your payment failed"]
    );
}

/// A subscription whose events name only the Stripe customer (no Tollgate metadata): they
/// are placed once the subscription's checkout names the account, whichever comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_naming_only_the_customer_wait_for_the_checkout_that_names_the_account() {
    let app = TestApp::with_stripe(Db::Sqlite).await.unwrap();
    let (token, _, account) = app.sign_up("customer-only@example.com").await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let period = json!({"start": now - 60, "end": now + 30 * DAY});
    let sub = event(
        "evt_co_1",
        "customer.subscription.created",
        now - 5,
        json!({"id": "sub_co", "object": "subscription", "customer": "cus_co", "status": "active",
               "metadata": {"plan": "pro"},
               "items": {"data": [{"price": {"id": "price_x", "recurring": {"interval": "month"}},
                                   "current_period_start": now - 60, "current_period_end": now + 30 * DAY}]}}),
    );
    let invoice = event(
        "evt_co_2",
        "invoice.paid",
        now - 4,
        json!({"id": "in_co_1", "object": "invoice", "customer": "cus_co", "subscription": "sub_co",
               "billing_reason": "subscription_create", "amount_paid": 1900, "currency": "usd",
               "subscription_details": {"metadata": {"plan": "pro"}},
               "lines": {"data": [{"period": period}]}}),
    );
    deliver_all(&app, &[sub, invoice]).await;
    app.settle_webhooks().await;
    assert_eq!(
        app.get_as("/v1/subscription", &token).await.1["plan"],
        "free"
    );
    let checkout = event(
        "evt_co_3",
        "checkout.session.completed",
        now,
        json!({"id": "cs_co", "object": "checkout.session", "mode": "subscription",
               "payment_status": "paid", "client_reference_id": account, "customer": "cus_co",
               "subscription": "sub_co"}),
    );
    deliver_all(&app, &[checkout]).await;
    app.settle_webhooks().await;
    let (_, state) = app.get_as("/v1/subscription", &token).await;
    assert_eq!(state["plan"], "pro", "{state}");
    assert_eq!(state["subscription"]["status"], "active", "{state}");
    let (_, credits) = app.get_as("/v1/credits", &token).await;
    assert!(
        credits["available"].as_i64().unwrap() >= 20_000,
        "{credits}"
    );
}
