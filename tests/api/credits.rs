use api_tests::{ADMIN_KEY, Db, TestApp};
use billing_core::ids::AccountId;
use billing_core::ledger::verify;
use billing_core::ports::{AuditStore, LedgerStore};
use billing_core::records::PageRequest;
use serde_json::{Value, json};

async fn spend(app: &TestApp, token: &str, action: &str, key: Option<&str>) -> (u16, Value, bool) {
    let response = app.spend(token, action, key).await;
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (status, response.json().await.unwrap(), replayed)
}

async fn adjust(
    app: &TestApp,
    token: &str,
    account: &str,
    delta: i64,
    reason: &str,
) -> (u16, Value) {
    app.post(
        &format!("/v1/admin/accounts/{account}/credits"),
        Some(token),
        json!({"delta": delta, "reason": reason}),
    )
    .await
}

#[tokio::test]
async fn the_whole_journey_sign_up_spend_402_adjust_spend_journal() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, account) = app.sign_up("journey@example.com").await;
    let (_, balance) = app.get_as("/v1/credits", &token).await;
    assert_eq!(balance["available"], 550, "{balance}");
    for _ in 0..11 {
        let (status, receipt, _) = spend(&app, &token, "image_analysis", None).await;
        assert_eq!(status, 200, "{receipt}");
    }
    let (status, problem, _) = spend(&app, &token, "image_analysis", None).await;
    assert_eq!(status, 402, "{problem}");
    assert_eq!(problem["code"], "insufficient_credits");
    assert_eq!(
        (problem["balance"].as_i64(), problem["required"].as_i64()),
        (Some(0), Some(50))
    );
    let (status, receipt) = adjust(
        &app,
        ADMIN_KEY,
        &account,
        100,
        "goodwill after support ticket",
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["balance"], 100);
    let (status, receipt, _) = spend(&app, &token, "image_analysis", None).await;
    assert_eq!((status, receipt["balance"].as_i64()), (200, Some(50)));

    let (_, journal) = app.get_as("/v1/credits/journal?limit=100", &token).await;
    let kinds: Vec<&str> = journal["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 15, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "debit").count(), 12);
    assert_eq!(
        kinds.iter().filter(|k| **k == "grant").count(),
        3,
        "welcome, allowance, adjustment"
    );
    let adjustment = journal["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["reference"] == "adjustment")
        .unwrap();
    assert_eq!(adjustment["memo"], "goodwill after support ticket");
    // Pages follow the cursor.
    let (_, first) = app.get_as("/v1/credits/journal?limit=10", &token).await;
    let next = first["next"].as_str().unwrap();
    let (_, rest) = app
        .get_as(
            &format!("/v1/credits/journal?limit=10&after={next}"),
            &token,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 5);
    assert!(rest["next"].is_null());
    // Every mutating request was audited: sign-up, 13 spends, the adjustment.
    let page = PageRequest {
        limit: 100,
        after: None,
    };
    let audit = app.store.list(Some(account.clone()), page).await.unwrap();
    assert_eq!(audit.items.len(), 15);
    let adjustment = audit
        .items
        .iter()
        .find(|r| r.action == "POST /v1/admin/accounts/{account_id}/credits")
        .unwrap();
    assert_eq!(adjustment.actor, "admin-key");
    assert_eq!(adjustment.details["delta"], 100);
    assert_eq!(
        adjustment.details["reason"],
        "goodwill after support ticket"
    );
    assert_eq!(adjustment.details["status"], 200);
    assert!(
        adjustment
            .request_id
            .as_deref()
            .is_some_and(|r| r.starts_with("req_"))
    );
    let refused = audit
        .items
        .iter()
        .filter(|r| r.details["status"] == 402)
        .count();
    assert_eq!(refused, 1, "refused requests are audited too");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("idem@example.com").await;
    let (status, first, replayed) = spend(&app, &token, "long_chat", Some("order-7")).await;
    assert_eq!((status, replayed), (200, false));
    let (status, again, replayed) = spend(&app, &token, "long_chat", Some("order-7")).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first, "the same body");
    let (status, conflict, _) = spend(&app, &token, "short_chat", Some("order-7")).await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    let (_, balance) = app.get_as("/v1/credits", &token).await;
    assert_eq!(balance["available"], 530, "charged once");
    let (status, problem, _) = spend(&app, &token, "long_chat", Some("has space")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_header"))
    );
}

#[tokio::test]
async fn admin_routes_need_an_admin_and_an_account() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, account) = app.sign_up("user@example.com").await;
    let (status, body) = adjust(&app, &token, &account, 10, "self-service?").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, _) = adjust(
        &app,
        ADMIN_KEY,
        "acc_01JD0000000000000000000000",
        10,
        "who?",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = adjust(&app, ADMIN_KEY, "not-an-id", 10, "who?").await;
    assert_eq!(status, 404);
    let (status, body) = adjust(&app, ADMIN_KEY, &account, 0, "nothing").await;
    assert_eq!((status, body["field"].as_str()), (422, Some("delta")));
    let (status, body) = adjust(&app, ADMIN_KEY, &account, 10, "  ").await;
    assert_eq!((status, body["field"].as_str()), (422, Some("reason")));
    let (status, body) = adjust(&app, ADMIN_KEY, &account, -10_000, "too much").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (402, Some("insufficient_credits"))
    );
    // The admin key has no account of its own.
    let (status, _) = app.get_as("/v1/credits", ADMIN_KEY).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn one_users_credits_are_never_anothers() {
    let app = TestApp::spawn(&[]).await;
    let (alice, _, _) = app.sign_up("alice@example.com").await;
    let (bob, _, _) = app.sign_up("bob@example.com").await;
    spend(&app, &alice, "image_analysis", Some("k")).await;
    let (_, alice_balance) = app.get_as("/v1/credits", &alice).await;
    let (_, bob_balance) = app.get_as("/v1/credits", &bob).await;
    assert_eq!(
        (
            alice_balance["available"].as_i64(),
            bob_balance["available"].as_i64()
        ),
        (Some(500), Some(550))
    );
    // The same key is Bob's own.
    let (status, _, replayed) = spend(&app, &bob, "image_analysis", Some("k")).await;
    assert_eq!((status, replayed), (200, false));
}

async fn hundred_concurrent_spends_never_overspend(db: Db) {
    let Some(app) = TestApp::spawn_on(db, &[]).await else {
        return;
    };
    let (token, _, account) = app.sign_up("burst@example.com").await;
    // 550 credits: exactly 11 spends of 50 fit.
    let mut handles = Vec::new();
    let app = std::sync::Arc::new(app);
    for i in 0..100 {
        let (app, token) = (app.clone(), token.clone());
        handles.push(tokio::spawn(async move {
            let key = format!("burst-{i}");
            spend(&app, &token, "image_analysis", Some(&key)).await.0
        }));
    }
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let short = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((ok, short), (11, 89), "{statuses:?}");
    let (_, balance) = app.get_as("/v1/credits", &token).await;
    assert_eq!(balance["available"], 0);
    let account: AccountId = account.parse().unwrap();
    let snapshot = app.store.snapshot(&account).await.unwrap();
    assert!(verify(&snapshot, 0).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_spends_never_overspend_on_sqlite() {
    hundred_concurrent_spends_never_overspend(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_spends_never_overspend_on_postgres() {
    hundred_concurrent_spends_never_overspend(Db::Postgres).await;
}

/// Found by black-box testing: spend checked only the balance, so flirt-studio's free plan
/// could spend `image_analysis` while the entitlement check said `not_in_plan`. One rule
/// now decides both, on both databases, and a refusal changes nothing.
#[tokio::test]
async fn spend_refuses_an_action_outside_the_plan_as_the_entitlement_check_does() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &["config/examples/flirt-studio.toml"]).await else {
            continue;
        };
        let (token, _, account) = app.sign_up("free@flirt.test").await;
        let (_, before) = app.get_as("/v1/credits", &token).await;
        let (status, check) = app
            .post(
                "/v1/entitlements/check",
                Some(&token),
                json!({"kind": "action", "name": "image_analysis"}),
            )
            .await;
        assert_eq!(status, 200, "{check}");
        assert_eq!(check["denial"]["code"], "not_in_plan", "{check}");
        let (status, problem, _) = spend(&app, &token, "image_analysis", Some("img-1")).await;
        assert_eq!(status, 403, "{problem}");
        assert_eq!(problem["code"], "not_in_plan");
        assert_eq!(problem["plan"], "free");
        let (_, after) = app.get_as("/v1/credits", &token).await;
        assert_eq!(after["available"], before["available"], "nothing was spent");
        // An action every plan may perform still spends.
        let (status, receipt, _) = spend(&app, &token, "short_chat", Some("chat-1")).await;
        assert_eq!(status, 200, "{receipt}");
        let snapshot = app
            .store
            .snapshot(&account.parse::<AccountId>().unwrap())
            .await
            .unwrap();
        assert!(verify(&snapshot, 0).is_empty());
    }
}

/// `GET /v1/subscription`: the caller's own plan and subscription, and nobody else's.
#[tokio::test]
async fn the_caller_sees_their_own_subscription() {
    use billing_core::catalog::Interval;
    use billing_core::ids::{PrefixedId, SubscriptionId, Ulid};
    use billing_core::ports::SubscriptionStore;
    use billing_core::quota::Window;
    use billing_core::subscription::{Subscription, SubscriptionStatus};
    let app = TestApp::spawn(&[]).await;
    let (alice, _, alice_account) = app.sign_up("subscriber@example.com").await;
    let (bob, _, _) = app.sign_up("free@example.com").await;
    let (status, none) = app.get_as("/v1/subscription", &bob).await;
    assert_eq!(status, 200);
    assert_eq!(none, json!({"plan": "free", "subscription": null}));
    let start = time::macros::datetime!(2026-11-01 0:00 UTC);
    app.store
        .save(
            &Subscription {
                id: SubscriptionId::from_ulid(Ulid(77)),
                account: alice_account.parse().unwrap(),
                plan: "pro".into(),
                interval: Interval::Month,
                status: SubscriptionStatus::Active,
                current_period: Some(Window {
                    start,
                    end: time::macros::datetime!(2026-12-01 0:00 UTC),
                }),
                trial_end: None,
                cancel_at_period_end: true,
                pending_plan: None,
                external_id: Some("sub_test_1".into()),
                created_at: start,
                canceled_at: None,
                version: 0,
                past_due_since: None,
            },
            None,
        )
        .await
        .unwrap();
    let (_, mine) = app.get_as("/v1/subscription", &alice).await;
    let sub = &mine["subscription"];
    assert_eq!(
        (
            sub["plan"].as_str(),
            sub["status"].as_str(),
            sub["interval"].as_str()
        ),
        (Some("pro"), Some("active"), Some("month"))
    );
    assert_eq!(sub["grants_access"], true);
    assert_eq!(sub["cancel_at_period_end"], true);
    assert_eq!(sub["current_period_end"], "2026-12-01T00:00:00Z");
    assert_eq!(
        app.get_as("/v1/subscription", &bob).await.1["subscription"],
        Value::Null
    );
}
