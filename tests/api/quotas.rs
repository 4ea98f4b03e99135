use api_tests::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

async fn track(
    app: &TestApp,
    token: &str,
    meter: &str,
    amount: u64,
    key: &str,
) -> (u16, Value, Option<String>, bool) {
    let response = app
        .send(
            Method::POST,
            &format!("/v1/quotas/{meter}/track"),
            Some(token),
            Some(json!({"amount": amount})),
            &[("Idempotency-Key", key)],
        )
        .await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        response.json().await.unwrap(),
        retry_after,
        replayed,
    )
}

#[tokio::test]
async fn usage_is_tracked_idempotently_up_to_the_plans_limit() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("meter@example.com").await;
    let (status, quotas) = app.get_as("/v1/quotas", &token).await;
    assert_eq!(status, 200, "{quotas}");
    let exports = quotas
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["meter"] == "exports")
        .unwrap();
    assert_eq!(
        (exports["limit"].as_u64(), exports["used"].as_u64()),
        (Some(2), Some(0))
    );

    let (status, body, _, _) = track(&app, &token, "exports", 1, "e1").await;
    assert_eq!(
        (status, body["used"].as_u64(), body["remaining"].as_u64()),
        (200, Some(1), Some(1))
    );
    let (status, body, _, replayed) = track(&app, &token, "exports", 1, "e1").await;
    assert_eq!(
        (status, body["used"].as_u64(), replayed),
        (200, Some(1), true),
        "a replay records nothing"
    );
    let (status, body, _, _) = track(&app, &token, "exports", 2, "e1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    let (status, _, _, _) = track(&app, &token, "exports", 1, "e2").await;
    assert_eq!(status, 200);
    let (status, body, retry_after, _) = track(&app, &token, "exports", 1, "e3").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{body}"
    );
    assert!(retry_after.unwrap().parse::<u64>().unwrap() > 0);
    let (status, _, _, _) = track(&app, &token, "teleports", 1, "e4").await;
    assert_eq!(status, 404);
    let (_, quotas) = app.get_as("/v1/quotas", &token).await;
    let exports = quotas
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["meter"] == "exports")
        .unwrap();
    assert_eq!(exports["used"], 2, "the refused request recorded nothing");
}

#[tokio::test]
async fn entitlements_answer_with_the_reason_and_what_remains() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("may-i@example.com").await;
    let ask = |kind: &str, name: &str| json!({"kind": kind, "name": name});
    let (status, yes) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("action", "long_chat"),
        )
        .await;
    assert_eq!(status, 200, "{yes}");
    assert_eq!(
        (yes["allowed"].as_bool(), yes["remaining"]["after"].as_i64()),
        (Some(true), Some(530))
    );
    let (_, no) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("model", "gpt-4o"),
        )
        .await;
    assert_eq!(
        (no["allowed"].as_bool(), no["denial"]["code"].as_str()),
        (Some(false), Some("not_in_plan"))
    );
    let (_, yes) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("model", "gpt-4o-mini"),
        )
        .await;
    assert_eq!(yes["allowed"], true);
    let (_, yes) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("feature", "saved_prompts"),
        )
        .await;
    assert_eq!(yes["allowed"], true);
    let (_, no) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("feature", "tasks"),
        )
        .await;
    assert_eq!(no["denial"]["code"], "not_in_plan");
    track(&app, &token, "exports", 2, "both").await;
    let (_, no) = app
        .post(
            "/v1/entitlements/check",
            Some(&token),
            ask("meter", "exports"),
        )
        .await;
    assert_eq!(no["denial"]["code"], "quota_exceeded", "{no}");
    let (status, problem) = app
        .post("/v1/entitlements/check", Some(&token), ask("wish", "pony"))
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("kind")));
}
