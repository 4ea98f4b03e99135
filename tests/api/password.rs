use api_tests::TestApp;
use reqwest::Method;
use serde_json::json;

async fn login(app: &TestApp, email: &str, password: &str) -> u16 {
    app.post(
        "/v1/auth/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await
    .0
}

#[tokio::test]
async fn changing_the_password_signs_every_session_out() {
    let app = TestApp::spawn(&[]).await;
    let (token, refresh, _) = app.sign_up("change@example.com").await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, body) = app
        .post(
            "/v1/auth/password",
            Some(&token),
            change("wrong one!", "brand new password"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, body) = app
        .post(
            "/v1/auth/password",
            Some(&token),
            change("correct horse battery", "short"),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("new_password"))
    );
    let response = app
        .send(
            Method::POST,
            "/v1/auth/password",
            Some(&token),
            Some(change("correct horse battery", "brand new password")),
            &[],
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        app.post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
            .await
            .0,
        401,
        "sessions revoked"
    );
    assert_eq!(
        login(&app, "change@example.com", "correct horse battery").await,
        401
    );
    assert_eq!(
        login(&app, "change@example.com", "brand new password").await,
        200
    );
}

#[tokio::test]
async fn a_mailed_code_resets_the_password_once() {
    let app = TestApp::spawn(&[]).await;
    app.sign_up("forgot@example.com").await;
    let (status, _) = app
        .post(
            "/v1/auth/password-reset",
            None,
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(status, 202, "the same answer for unknown emails");
    assert_eq!(app.mailed_code("nobody@example.com"), None);
    let (status, _) = app
        .post(
            "/v1/auth/password-reset",
            None,
            json!({"email": "FORGOT@example.com"}),
        )
        .await;
    assert_eq!(status, 202);
    let code = app
        .mailed_code("forgot@example.com")
        .expect("a mail with a code");
    let (status, body) = app
        .post(
            "/v1/auth/password-reset/confirm",
            None,
            json!({"token": "ott_wrong", "new_password": "remembered at last"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str(), body["field"].as_str()),
        (401, Some("invalid_code"), Some("token"))
    );
    let response = app
        .send(
            Method::POST,
            "/v1/auth/password-reset/confirm",
            None,
            Some(json!({"token": code, "new_password": "remembered at last"})),
            &[],
        )
        .await;
    assert_eq!(response.status(), 204);
    let (status, _) = app
        .post(
            "/v1/auth/password-reset/confirm",
            None,
            json!({"token": code, "new_password": "and once more!"}),
        )
        .await;
    assert_eq!(status, 401, "a code works once");
    assert_eq!(
        login(&app, "forgot@example.com", "remembered at last").await,
        200
    );
}

#[tokio::test]
async fn the_email_address_is_verified_by_a_mailed_code() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("verify@example.com").await;
    assert_eq!(
        app.get_as("/v1/me", &token).await.1["user"]["email_verified"],
        false
    );
    let (status, _) = app
        .post("/v1/auth/email-verification", Some(&token), json!({}))
        .await;
    assert_eq!(status, 202);
    let code = app
        .mailed_code("verify@example.com")
        .expect("a mail with a code");
    let response = app
        .send(
            Method::POST,
            "/v1/auth/email-verification/confirm",
            None,
            Some(json!({"token": code})),
            &[],
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        app.get_as("/v1/me", &token).await.1["user"]["email_verified"],
        true
    );
    let (status, _) = app
        .post(
            "/v1/auth/email-verification/confirm",
            None,
            json!({"token": code}),
        )
        .await;
    assert_eq!(status, 401);
    // A reset code does not verify, nor the reverse.
    app.post(
        "/v1/auth/password-reset",
        None,
        json!({"email": "verify@example.com"}),
    )
    .await;
    let reset = app.mailed_code("verify@example.com").unwrap();
    let (status, _) = app
        .post(
            "/v1/auth/email-verification/confirm",
            None,
            json!({"token": reset}),
        )
        .await;
    assert_eq!(status, 401);
}
