use api_tests::{JWT_SECRET, TestApp};
use serde_json::json;

#[tokio::test]
async fn sign_up_returns_tokens_that_work_and_no_secrets() {
    let app = TestApp::spawn(&[]).await;
    let (status, body) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "Ada@Example.com", "password": "correct horse battery", "name": "Ada"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["account"]["plan"], "free");
    let text = body.to_string();
    assert!(!text.contains("correct horse"), "the password came back");
    assert!(!text.contains("argon2"), "the hash came back");
    let token = body["tokens"]["access_token"].as_str().unwrap();
    let (status, me) = app.get_as("/v1/me", token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["name"], "Ada");
    assert_eq!(
        me["balance"], 550,
        "500 welcome credits and today's allowance of 50"
    );
}

#[tokio::test]
async fn sign_up_refuses_duplicates_and_bad_fields_by_name() {
    let app = TestApp::spawn(&[]).await;
    app.sign_up("grace@example.com").await;
    let (status, body) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "GRACE@example.com", "password": "another long one"}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (409, Some("email_taken")));
    let (status, body) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "x@example.com", "password": "short"}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("password")));
    let (status, body) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "not-an-email", "password": "long enough pass"}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("email")));
}

#[tokio::test]
async fn login_accepts_the_right_password_only_and_says_the_same_for_unknown_emails() {
    let app = TestApp::spawn(&[]).await;
    app.sign_up("lin@example.com").await;
    let (status, body) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "LIN@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["tokens"]["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("rt_")
    );
    let (wrong, wrong_body) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "lin@example.com", "password": "wrong horse battery"}),
        )
        .await;
    let (unknown, unknown_body) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "whatever it is"}),
        )
        .await;
    assert_eq!((wrong, unknown), (401, 401));
    assert_eq!(wrong_body["code"], "invalid_credentials");
    assert_eq!(wrong_body, unknown_body, "no hint whether the email exists");
}

/// A password hashed before with the crate's default argon2 parameters (19 MiB, 2 passes).
const LEGACY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$yA0Ani42VSJTFWelQnNvrQ$T0wHrnLjQtvXy+U06a9VpQeA5O9Ki47ycl011z5iBD8";

/// A hash made with older parameters still signs in, and the sign-in stores the password
/// hashed the current way (7 MiB); a wrong password changes nothing.
#[tokio::test]
async fn signing_in_upgrades_a_hash_made_with_older_parameters() {
    use billing_core::ports::AccountStore;
    let app = TestApp::spawn(&[]).await;
    app.sign_up("legacy@example.com").await;
    let stored = || async {
        app.store
            .user_by_email("legacy@example.com")
            .await
            .unwrap()
            .unwrap()
    };
    let mut user = stored().await;
    user.password_hash = Some(LEGACY_HASH.into());
    app.store.update_user(&user).await.unwrap();
    let login = |password: &'static str| {
        app.post(
            "/v1/auth/login",
            None,
            json!({"email": "legacy@example.com", "password": password}),
        )
    };
    let (status, _) = login("wrong horse battery").await;
    assert_eq!(status, 401);
    assert_eq!(stored().await.password_hash.as_deref(), Some(LEGACY_HASH));
    let (status, body) = login("correct horse battery").await;
    assert_eq!(status, 200, "{body}");
    let upgraded = stored().await.password_hash.unwrap();
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"),
        "{upgraded}"
    );
    let (status, _) = login("correct horse battery").await;
    assert_eq!(status, 200, "the new hash is of the same password");
    // The swap is conditional: from a hash that is no longer stored, nothing changes.
    assert!(
        !app.store
            .replace_password_hash(&user.id, LEGACY_HASH, "$argon2id$other")
            .await
            .unwrap()
    );
    assert_eq!(stored().await.password_hash.unwrap(), upgraded);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_whole_sign_in() {
    let app = TestApp::spawn(&[]).await;
    let (_, first, _) = app.sign_up("rot@example.com").await;
    let (status, pair) = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(status, 200, "{pair}");
    let second = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let (status, me) = app
        .get_as("/v1/me", pair["access_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{me}");
    // The first token again: reuse. Everything from that sign-in is revoked.
    let (status, body) = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    let (status, body) = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::spawn(&[]).await;
    let (_, refresh, _) = app.sign_up("out@example.com").await;
    let response = app
        .send(
            reqwest::Method::POST,
            "/v1/auth/logout",
            None,
            Some(json!({"refresh_token": refresh})),
            &[],
        )
        .await;
    assert_eq!(response.status(), 204);
    let (status, _) = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn expired_forged_and_missing_tokens_are_refused() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let app = TestApp::spawn(&[]).await;
    let (token, _, account) = app.sign_up("exp@example.com").await;
    let (_, me) = app.get_as("/v1/me", &token).await;
    let user = me["user"]["id"].as_str().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({"sub": user, "acc": account, "sid": "fam_x", "role": "user", "iat": now - 7200, "exp": now - 3600});
    let expired = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, body) = app.get_as("/v1/me", &expired).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_expired"))
    );
    let claims = json!({"sub": user, "acc": account, "sid": "fam_x", "role": "admin", "iat": now, "exp": now + 600});
    let forged = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"someone else's secret, 32 bytes+"),
    )
    .unwrap();
    let (status, body) = app.get_as("/v1/me", &forged).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let response = app.get("/v1/me").await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
