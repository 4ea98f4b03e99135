use api_tests::TestApp;

#[tokio::test]
async fn health_answers_ok_with_the_version() {
    let app = TestApp::spawn(&[]).await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(body["version"].is_string());
}

#[tokio::test]
async fn ready_reports_each_check() {
    let app = TestApp::spawn(&["config/examples/pain-tracker.toml"]).await;
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["catalog"], "ok");
    assert_eq!(body["checks"]["database"], "ok");
}

#[tokio::test]
async fn an_unknown_path_is_404() {
    let app = TestApp::spawn(&[]).await;
    assert_eq!(app.get("/nope").await.status(), 404);
}
