//! Engagement rewards (seed 002): claimed with evidence, granted once per place (or per
//! cooldown), optionally held for an admin; every grant journaled.

use api_tests::{ADMIN_KEY, Db, TestApp, lift_rate_limits};
use billing_core::catalog::Reward;
use reqwest::Method;
use serde_json::{Value, json};

async fn app(db: Db) -> Option<TestApp> {
    TestApp::spawn_with(db, &[], |loaded| {
        let reward = |credits, max_per_account, cooldown_hours, approval| Reward {
            name: Some("a reward".into()),
            credits,
            max_per_account,
            cooldown_hours,
            approval,
        };
        let rewards = &mut loaded.catalog.rewards;
        rewards.insert("follow_x".into(), reward(10, 1, 0, false));
        rewards.insert("share_track".into(), reward(5, 3, 24, false));
        rewards.insert("review".into(), reward(25, 1, 0, true));
        lift_rate_limits(loaded);
    })
    .await
}

async fn claim(
    app: &TestApp,
    token: &str,
    reward: &str,
    evidence: Value,
) -> (u16, Value, Option<String>) {
    let response = app
        .send(
            Method::POST,
            &format!("/v1/rewards/{reward}/claim"),
            Some(token),
            Some(json!({"evidence": evidence})),
            &[],
        )
        .await;
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), retry)
}

#[tokio::test]
async fn racing_claims_of_a_once_reward_grant_it_once_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = app(db).await else { continue };
        let (token, _, _) = app.sign_up(&format!("fan-{db:?}@example.com")).await;
        let before = app.available(&token).await;
        let evidence = json!({"handle": "@fan"});
        let answers = futures_util::future::join_all(
            (0..16).map(|_| claim(&app, &token, "follow_x", evidence.clone())),
        )
        .await;
        let granted: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 201).collect();
        assert_eq!(granted.len(), 1, "{db:?}: {answers:?}");
        assert_eq!(granted[0].1["status"], "granted");
        assert_eq!(granted[0].1["evidence"], evidence);
        for (status, body, _) in &answers {
            assert!(
                *status == 201
                    || (*status == 409
                        && matches!(
                            body["code"].as_str(),
                            Some("reward_claimed" | "reward_pending")
                        )),
                "{db:?}: {status} {body}"
            );
        }
        assert_eq!(app.available(&token).await, before + 10, "{db:?}");
        let (_, journal) = app.get_as("/v1/credits/journal?limit=200", &token).await;
        let grants = journal["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "grant" && t["reference"] == "reward:follow_x")
            .count();
        assert_eq!(grants, 1, "{db:?}: {journal}");
        let (_, rewards) = app.get_as("/v1/rewards", &token).await;
        let follow = rewards
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "follow_x")
            .unwrap();
        assert_eq!(
            (follow["claimed"].as_u64(), &follow["claimable"]),
            (Some(1), &json!(false))
        );
        let (status, again, _) = claim(&app, &token, "follow_x", json!({})).await;
        assert_eq!(
            (status, again["code"].as_str()),
            (409, Some("reward_claimed"))
        );
    }
}

#[tokio::test]
async fn approval_holds_the_grant_until_an_admin_decides() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = app(db).await else { continue };
        let (token, _, account) = app.sign_up(&format!("critic-{db:?}@example.com")).await;
        let before = app.available(&token).await;
        let (status, first, _) = claim(
            &app,
            &token,
            "review",
            json!({"url": "https://x.example/1"}),
        )
        .await;
        assert_eq!(
            (status, first["status"].as_str()),
            (202, Some("pending")),
            "{first}"
        );
        assert_eq!(
            app.available(&token).await,
            before,
            "nothing before approval"
        );
        let (status, body, _) = claim(&app, &token, "review", json!({})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("reward_pending"))
        );

        // A user may not decide; the admin sees the claim with its evidence.
        let id = first["id"].as_str().unwrap();
        let (status, _) = app
            .post(
                &format!("/v1/admin/reward-claims/{id}/approve"),
                Some(&token),
                json!({}),
            )
            .await;
        assert_eq!(status, 403);
        let (_, pending) = app.get_as("/v1/admin/reward-claims", ADMIN_KEY).await;
        assert_eq!(
            pending[0]["evidence"]["url"], "https://x.example/1",
            "{pending}"
        );
        assert_eq!(pending[0]["account_id"], account.as_str());

        // Rejected: nothing granted, and the place is free again.
        let (status, rejected) = app
            .post(
                &format!("/v1/admin/reward-claims/{id}/reject"),
                Some(ADMIN_KEY),
                json!({}),
            )
            .await;
        assert_eq!(
            (status, rejected["status"].as_str()),
            (200, Some("rejected"))
        );
        let (status, second, _) = claim(
            &app,
            &token,
            "review",
            json!({"url": "https://x.example/2"}),
        )
        .await;
        assert_eq!(status, 202, "{second}");
        let second_id = second["id"].as_str().unwrap();
        let (status, approved) = app
            .post(
                &format!("/v1/admin/reward-claims/{second_id}/approve"),
                Some(ADMIN_KEY),
                json!({}),
            )
            .await;
        assert_eq!(
            (status, approved["status"].as_str()),
            (200, Some("granted")),
            "{approved}"
        );
        assert_eq!(app.available(&token).await, before + 25, "{db:?}");
        for decision in ["approve", "reject"] {
            let (status, body) = app
                .post(
                    &format!("/v1/admin/reward-claims/{second_id}/{decision}"),
                    Some(ADMIN_KEY),
                    json!({}),
                )
                .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (409, Some("claim_decided")),
                "{body}"
            );
        }
        assert_eq!(app.available(&token).await, before + 25, "granted once");
        let (_, audit) = app
            .get_as(&format!("/v1/admin/audit?target={account}"), ADMIN_KEY)
            .await;
        // Refused attempts are audited too (with their status); these carry the claim.
        let outcomes: Vec<&str> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["details"]["claim"].is_string())
            .filter_map(|r| r["details"]["status"].as_str())
            .collect();
        assert_eq!(
            outcomes,
            ["granted", "pending", "rejected", "pending"],
            "{audit}"
        );
    }
}

#[tokio::test]
async fn a_repeatable_reward_waits_out_its_cooldown_and_bad_claims_change_nothing() {
    let app = app(Db::Sqlite).await.unwrap();
    let (token, _, _) = app.sign_up("sharer@example.com").await;
    let before = app.available(&token).await;
    let (status, _, _) = claim(&app, &token, "share_track", json!({"post": "p1"})).await;
    assert_eq!(status, 201);
    let (status, body, retry) = claim(&app, &token, "share_track", json!({"post": "p2"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("reward_cooldown")),
        "{body}"
    );
    let wait: i64 = retry.unwrap().parse().unwrap();
    assert!((86_000..=86_400).contains(&wait), "{wait}");
    let (_, rewards) = app.get_as("/v1/rewards", &token).await;
    let share = rewards
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "share_track")
        .unwrap();
    assert!(
        share["next_claim_at"].is_string() && share["claimable"] == false,
        "{share}"
    );

    let (status, body, _) = claim(&app, &token, "no_such_reward", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("reward_not_found"))
    );
    let big = json!({"blob": "x".repeat(5000)});
    let (status, body, _) = claim(&app, &token, "follow_x", big).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("evidence")),
        "{body}"
    );
    let (status, body, _) = claim(&app, &token, "follow_x", json!("not an object")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        app.available(&token).await,
        before + 5,
        "only the one grant"
    );
}

#[tokio::test]
async fn racing_claims_in_the_use_case_take_one_place_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = app(db).await else { continue };
        let (_, _, account) = app.sign_up(&format!("racer-{db:?}@example.com")).await;
        let account: billing_core::ids::AccountId = account.parse().unwrap();
        let user = billing_core::ports::AccountStore::account_users(&app.store, &account)
            .await
            .unwrap()[0]
            .id
            .clone();
        let billing = app.billing();
        let racers = (0..16).map(|_| {
            let (billing, store, account, user) = (
                billing.clone(),
                app.store.clone(),
                account.clone(),
                user.clone(),
            );
            tokio::spawn(async move {
                billing
                    .claim_reward(&store, &account, &user, "follow_x", json!({}))
                    .await
            })
        });
        let results = futures_util::future::join_all(racers).await;
        let granted = results
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(_))))
            .count();
        assert_eq!(granted, 1, "{db:?}");
        let claims = billing_core::ports::RewardStore::claims_of(&app.store, &account, None)
            .await
            .unwrap();
        assert_eq!(claims.len(), 1, "{db:?}: {claims:?}");
    }
}

/// The cooldown is measured on the server's clock (the use cases'), not the machine's: an
/// hour after a claim of a 24-hour reward, Retry-After is 23 hours to the second.
#[tokio::test]
async fn a_cooldown_counts_on_the_servers_clock() {
    use std::sync::Arc;
    // Ahead of the real time: an access token's expiry is checked on the real clock.
    let start = (time::OffsetDateTime::now_utc() + time::Duration::days(10))
        .replace_nanosecond(0)
        .unwrap();
    let clock = Arc::new(billing_core::testing::FixedClock::new(start));
    let app = TestApp::spawn_at(Db::Sqlite, &[], clock.clone(), |loaded| {
        loaded.catalog.rewards.insert(
            "share_track".into(),
            Reward {
                name: None,
                credits: 5,
                max_per_account: 3,
                cooldown_hours: 24,
                approval: false,
            },
        );
    })
    .await
    .unwrap();
    let (token, _, _) = app.sign_up("clocked@example.com").await;
    let (status, _, _) = claim(&app, &token, "share_track", json!({"post": "p1"})).await;
    assert_eq!(status, 201);
    clock.set(start + time::Duration::hours(1));
    let (status, body, retry) = claim(&app, &token, "share_track", json!({"post": "p2"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("82800"), "{body}");
    assert_eq!(body["retry_after"], 82_800);
}
