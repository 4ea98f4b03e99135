use api_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

#[tokio::test]
async fn admins_list_users_see_accounts_and_read_the_audit_log() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, account) = app.sign_up("carol@example.com").await;
    app.sign_up("dave@example.com").await;
    app.sign_up("carla@example.com").await;

    let (status, page) = app
        .get_as("/v1/admin/users?search=CAR&limit=1", ADMIN_KEY)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap();
    let (_, rest) = app
        .get_as(
            &format!("/v1/admin/users?search=car&limit=5&after={next}"),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["items"].to_string().contains("@example.com"));
    assert!(!rest.to_string().contains("argon2"), "no password hashes");

    let (status, detail) = app
        .get_as(&format!("/v1/admin/accounts/{account}"), ADMIN_KEY)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        (
            detail["plan"].as_str(),
            detail["balance"]["available"].as_i64()
        ),
        (Some("free"), Some(550))
    );

    app.post(
        &format!("/v1/admin/accounts/{account}/credits"),
        Some(ADMIN_KEY),
        json!({"delta": -50, "reason": "chargeback"}),
    )
    .await;
    let (status, audit) = app
        .get_as(&format!("/v1/admin/audit?target={account}"), ADMIN_KEY)
        .await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "POST /v1/admin/accounts/{account_id}/credits",
            "POST /v1/auth/signup"
        ]
    );
    assert_eq!(audit["items"][0]["details"]["reason"], "chargeback");
    assert_eq!(audit["items"][1]["actor"], "anonymous");

    // Users are not admins.
    for path in [
        "/v1/admin/users",
        "/v1/admin/audit",
        &format!("/v1/admin/accounts/{account}"),
    ] {
        let (status, body) = app.get_as(path, &token).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    let (status, _) = app
        .get_as(
            "/v1/admin/accounts/acc_01JD0000000000000000000000",
            ADMIN_KEY,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_user_with_the_admin_role_may_use_admin_routes() {
    use billing_core::ports::AccountStore;
    use billing_core::records::Role;
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("ops@example.com").await;
    assert_eq!(app.get_as("/v1/admin/users", &token).await.0, 403);
    // What `tollgate user role ops@example.com admin` does.
    let mut user = app
        .store
        .user_by_email("ops@example.com")
        .await
        .unwrap()
        .unwrap();
    user.role = Role::Admin;
    app.store.update_user(&user).await.unwrap();
    let (status, session) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "ops@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, 200);
    let admin_token = session["tokens"]["access_token"].as_str().unwrap();
    assert_eq!(app.get_as("/v1/admin/users", admin_token).await.0, 200);
    let (_, audit) = app.get_as("/v1/admin/audit", admin_token).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] != "admin-key")
    );
}
