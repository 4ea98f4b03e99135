use api_tests::{ADMIN_KEY, Db, TestApp};
use billing_core::catalog::RateLimit;
use reqwest::Method;
use serde_json::json;

async fn limited_app() -> TestApp {
    TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        loaded.settings.http.anonymous_rate_limit = Some(RateLimit {
            requests: 5,
            per_seconds: 60,
        });
        loaded.settings.http.user_rate_limit = None;
        for plan in loaded.catalog.plans.values_mut() {
            plan.rate_limit = Some(RateLimit {
                requests: 4,
                per_seconds: 60,
            });
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_address_with_retry_after() {
    let app = limited_app().await;
    for _ in 0..5 {
        assert_eq!(app.get("/v1/plans").await.status(), 200);
    }
    let refused = app.get("/v1/plans").await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(refused.headers().contains_key("x-request-id"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(
        app.get("/health").await.status(),
        200,
        "health checks are never limited"
    );
}

#[tokio::test]
async fn users_are_limited_by_their_plan_and_the_admin_key_is_not() {
    let app = limited_app().await;
    // The sign-up itself is anonymous (1 of 5).
    let (token, _, _) = app.sign_up("busy@example.com").await;
    for _ in 0..4 {
        assert_eq!(app.get_as("/v1/credits", &token).await.0, 200);
    }
    let (status, problem) = app.get_as("/v1/credits", &token).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (429, Some("rate_limited"))
    );
    for _ in 0..8 {
        assert_eq!(app.get_as("/v1/admin/users", ADMIN_KEY).await.0, 200);
    }
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_slowed_for_that_email() {
    let app = TestApp::spawn(&[]).await;
    app.sign_up("target@example.com").await;
    app.sign_up("bystander@example.com").await;
    for _ in 0..5 {
        let (status, _) = app
            .post(
                "/v1/auth/login",
                None,
                json!({"email": "target@example.com", "password": "wrong password!"}),
            )
            .await;
        assert_eq!(status, 401);
    }
    // Even the right password must wait now.
    let response = app
        .send(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "target@example.com", "password": "correct horse battery"})),
            &[],
        )
        .await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let (status, _) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "bystander@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, 200, "another account is not slowed");
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let app = TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        loaded.settings.http.cors_allowed_origins = vec!["https://app.example.com".into()];
    })
    .await
    .unwrap();
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, format!("{}/v1/credits/spend", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
}
