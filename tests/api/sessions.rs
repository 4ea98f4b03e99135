//! Found by black-box testing: revoking a sign-in left its access token working for its
//! whole lifetime (and able to mint an API key that outlived a password change), and reset
//! codes survived a reset or a change. Each case here runs on both databases.

use api_tests::{Db, TestApp};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    app.get_as("/v1/me", token).await
}

async fn login(app: &TestApp, email: &str, password: &str) -> (String, String) {
    let (status, body) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["tokens"]["access_token"].as_str().unwrap().to_owned(),
        body["tokens"]["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn api_key(app: &TestApp, token: &str) -> String {
    let (status, created) = app
        .post("/v1/api-keys", Some(token), json!({"name": "ci"}))
        .await;
    assert_eq!(status, 201, "{created}");
    created["key"].as_str().unwrap().to_owned()
}

async fn request_reset(app: &TestApp, email: &str) -> String {
    let (status, _) = app
        .post("/v1/auth/password-reset", None, json!({"email": email}))
        .await;
    assert_eq!(status, 202);
    app.mailed_code(email).expect("a code was mailed")
}

async fn confirm_reset(app: &TestApp, code: &str, password: &str) -> u16 {
    app.post(
        "/v1/auth/password-reset/confirm",
        None,
        json!({"token": code, "new_password": password}),
    )
    .await
    .0
}

fn revoked(answer: &(u16, Value)) -> bool {
    answer.0 == 401 && answer.1["code"] == "session_revoked"
}

#[tokio::test]
async fn logout_and_refresh_reuse_end_the_sign_ins_access_tokens() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let (token, refresh, _) = app.sign_up("logout@example.com").await;
        let (other, _) = login(&app, "logout@example.com", PASSWORD).await;
        assert_eq!(me(&app, &token).await.0, 200);
        let (status, _) = app
            .post("/v1/auth/logout", None, json!({"refresh_token": refresh}))
            .await;
        assert_eq!(status, 204);
        assert!(
            revoked(&me(&app, &token).await),
            "logout ends its access token"
        );
        assert_eq!(me(&app, &other).await.0, 200, "another sign-in goes on");

        // Reuse of a rotated refresh token ends that sign-in, access tokens included.
        let (token, refresh) = login(&app, "logout@example.com", PASSWORD).await;
        let (status, rotated) = app
            .post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
            .await;
        assert_eq!(status, 200);
        let fresh = rotated["access_token"].as_str().unwrap().to_owned();
        assert_eq!(me(&app, &fresh).await.0, 200);
        let (status, _) = app
            .post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
            .await;
        assert_eq!(status, 401);
        assert!(revoked(&me(&app, &token).await));
        assert!(revoked(&me(&app, &fresh).await));
        assert!(
            revoked(
                &app.post("/v1/api-keys", Some(&fresh), json!({"name": "late"}))
                    .await
            ),
            "an ended sign-in cannot mint an API key"
        );
    }
}

#[tokio::test]
async fn a_password_change_ends_sessions_api_keys_and_reset_codes() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let email = "change@sessions.test";
        let (token, _, _) = app.sign_up(email).await;
        let key = api_key(&app, &token).await;
        assert_eq!(me(&app, &key).await.0, 200);
        let early_code = request_reset(&app, email).await;
        let (status, _) = app
            .post(
                "/v1/auth/password",
                Some(&token),
                json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
            )
            .await;
        assert_eq!(status, 204);
        assert!(revoked(&me(&app, &token).await));
        let (status, body) = me(&app, &key).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_api_key")),
            "API keys end with a password change"
        );
        assert_eq!(
            confirm_reset(&app, &early_code, "the attacker's password").await,
            401,
            "a code requested before the change no longer works"
        );
        let (token, _) = login(&app, email, "a brand new password").await;
        assert_eq!(me(&app, &token).await.0, 200);
    }
}

#[tokio::test]
async fn a_password_reset_ends_sessions_api_keys_and_every_other_code() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let email = "reset@sessions.test";
        let (token, _, _) = app.sign_up(email).await;
        let key = api_key(&app, &token).await;
        let older = request_reset(&app, email).await;
        let newer = request_reset(&app, email).await;
        assert_ne!(older, newer);
        assert_eq!(confirm_reset(&app, &newer, "reset password one").await, 204);
        assert!(revoked(&me(&app, &token).await));
        assert_eq!(me(&app, &key).await.0, 401);
        assert_eq!(
            confirm_reset(&app, &older, "reset password two").await,
            401,
            "the older code ended with the reset"
        );
        login(&app, email, "reset password one").await;
    }
}
