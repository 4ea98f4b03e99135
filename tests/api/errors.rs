use api_tests::TestApp;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn malformed_wrong_and_oversized_bodies_are_refused_and_change_nothing() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("bodies@example.com").await;
    let url = format!("{}/v1/credits/spend", app.address);
    let send = |body: String, content_type: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = send("{\"action\": ".into(), "application/json")
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );
    assert!(malformed.headers().contains_key("x-request-id"));
    let problem: serde_json::Value = malformed.json().await.unwrap();
    assert_eq!(problem["code"], "malformed_json");
    assert_eq!(problem["type"], "urn:tollgate:problem:malformed_json");

    let wrong = send("{\"acton\": \"short_chat\"}".into(), "application/json")
        .await
        .unwrap();
    assert_eq!(wrong.status(), 422);
    let problem: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(problem["field"], "acton");

    let huge = send(
        format!("{{\"action\": \"{}\"}}", "x".repeat(100_000)),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(huge.status(), 413);

    let text = send("action=short_chat".into(), "text/plain")
        .await
        .unwrap();
    assert_eq!(text.status(), 415);

    let (status, problem) = app
        .post(
            "/v1/credits/spend",
            Some(&token),
            json!({"action": "teleport"}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("unknown_action"))
    );

    let (_, balance) = app.get_as("/v1/credits", &token).await;
    assert_eq!(balance["available"], 550, "nothing was spent");
    let (_, journal) = app.get_as("/v1/credits/journal", &token).await;
    assert_eq!(
        journal["items"].as_array().unwrap().len(),
        2,
        "only the sign-up grants"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = TestApp::spawn(&[]).await;
    let response = app
        .send(
            Method::GET,
            "/health",
            None,
            None,
            &[("x-request-id", "client-abc-123")],
        )
        .await;
    assert_eq!(response.headers()["x-request-id"], "client-abc-123");
    let response = app
        .send(
            Method::GET,
            "/health",
            None,
            None,
            &[("x-request-id", "bad id with spaces")],
        )
        .await;
    assert!(
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
}
