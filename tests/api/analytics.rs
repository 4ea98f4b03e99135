//! A user's consumption analytics (Audio Studio's `/api/tokens/analytics`): by day, action
//! and model, agreeing with the journal and the gateway's usage.

use api_tests::{Db, TestApp};
use serde_json::{Value, json};

async fn spend(app: &TestApp, token: &str, action: &str, key: &str) {
    assert_eq!(app.spend(token, action, Some(key)).await.status(), 200);
}

#[tokio::test]
async fn consumption_is_broken_down_by_action_and_model_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let (token, _, account) = app.sign_up(&format!("analytics-{db:?}@example.com")).await;
        app.set_plan(&account, "pro").await;
        spend(&app, &token, "short_chat", "a1").await;
        spend(&app, &token, "short_chat", "a2").await;
        spend(&app, &token, "short_chat", "a2").await; // a replay: charged once
        spend(&app, &token, "long_chat", "a3").await;
        let (status, reply) = app
            .post(
                "/v1/chat/completions",
                Some(&token),
                json!({"model": "gpt-4o-mini", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "Count my credits"}]}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");

        let (status, analytics) = app.get_as("/v1/credits/analytics", &token).await;
        assert_eq!(status, 200, "{analytics}");
        let days = analytics["days"].as_array().unwrap();
        assert_eq!(days.len(), 1, "{db:?}: {analytics}");
        let today = &days[0];
        assert_eq!(
            today["by_action"],
            json!({"short_chat": {"credits": 10, "count": 2}, "long_chat": {"credits": 20, "count": 1}}),
            "{db:?}"
        );
        // The model's figures are the gateway's own usage record.
        let (_, usage) = app.get_as("/v1/usage", &token).await;
        let charged = usage["days"][0]["credits"].as_u64().unwrap();
        assert!(charged > 0);
        assert_eq!(
            today["by_model"],
            json!({"gpt-4o-mini": {"credits": charged, "count": 1}}),
            "{db:?}"
        );
        // The day's total is every debit and capture in the journal.
        let (_, journal) = app.get_as("/v1/credits/journal?limit=200", &token).await;
        let consumed: u64 = journal["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "debit" || t["kind"] == "capture")
            .map(|t| t["amount"].as_u64().unwrap())
            .sum();
        assert_eq!(
            today["credits"].as_u64(),
            Some(consumed),
            "{db:?}: {journal}"
        );
        assert_eq!(consumed, 30 + charged);
        assert_eq!(analytics["total"].as_u64(), Some(consumed));

        // Another user sees only their own; a range before today is empty; a bad date is 422.
        let (other, _, _) = app.sign_up(&format!("other-{db:?}@example.com")).await;
        let (_, theirs) = app.get_as("/v1/credits/analytics", &other).await;
        assert_eq!(theirs["total"], 0);
        let (_, past) = app
            .get_as(
                "/v1/credits/analytics?from=2020-01-01&to=2020-01-31",
                &token,
            )
            .await;
        assert_eq!(
            (past["days"].as_array().map(Vec::len), &past["total"]),
            (Some(0), &json!(0))
        );
        let (status, bad): (u16, Value) = app
            .get_as("/v1/credits/analytics?from=yesterday", &token)
            .await;
        assert_eq!((status, bad["field"].as_str()), (422, Some("from")));
    }
}
