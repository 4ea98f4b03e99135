//! Bad input found by black-box testing: bodies that are not objects, NUL characters in
//! bodies, paths and queries. Each is 422 with a stable code, changes nothing, and the two
//! databases answer alike.

use api_tests::{ADMIN_KEY, Db, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

/// Every case on one database: (what, status, code, field), in order.
async fn answers(db: Db) -> Option<Vec<(String, u16, String, Value)>> {
    let app = TestApp::spawn_on(db, &[]).await?;
    let (token, _, account) = app.sign_up("bad@input.test").await;
    let (_, before) = app.get_as("/v1/credits", &token).await;
    let cases: Vec<(&str, Method, String, &str, Option<Value>)> = vec![
        (
            "spend array",
            Method::POST,
            "/v1/credits/spend".into(),
            &token,
            Some(json!(["short_chat"])),
        ),
        (
            "adjust array",
            Method::POST,
            format!("/v1/admin/accounts/{account}/credits"),
            ADMIN_KEY,
            Some(json!([100, "x"])),
        ),
        (
            "track empty array",
            Method::POST,
            "/v1/quotas/exports/track".into(),
            &token,
            Some(json!([])),
        ),
        (
            "spend string",
            Method::POST,
            "/v1/credits/spend".into(),
            &token,
            Some(json!("short_chat")),
        ),
        (
            "spend NUL",
            Method::POST,
            "/v1/credits/spend".into(),
            &token,
            Some(json!({"action": "short\u{0}chat"})),
        ),
        (
            "item NUL",
            Method::POST,
            "/v1/saved-items".into(),
            &token,
            Some(json!({"kind": "prompt", "title": "a\u{0}b", "content": "x"})),
        ),
        (
            "preferences NUL key",
            Method::PUT,
            "/v1/me/preferences".into(),
            &token,
            Some(json!({"theme\u{0}": "dark"})),
        ),
        (
            "path NUL",
            Method::GET,
            "/v1/saved-items/itm_%00".into(),
            &token,
            None,
        ),
        (
            "meter NUL",
            Method::POST,
            "/v1/quotas/exp%00orts/track".into(),
            &token,
            Some(json!({"amount": 1})),
        ),
        (
            "query NUL",
            Method::GET,
            "/v1/admin/users?q=eve%00".into(),
            ADMIN_KEY,
            None,
        ),
    ];
    let mut seen = Vec::new();
    for (what, method, path, who, body) in cases {
        let (status, problem) = app.call(method, &path, who, body).await;
        seen.push((
            what.to_owned(),
            status,
            problem["code"].as_str().unwrap_or_default().to_owned(),
            problem["field"].clone(),
        ));
    }
    let (_, after) = app.get_as("/v1/credits", &token).await;
    assert_eq!(
        after["available"], before["available"],
        "bad input moved credits"
    );
    let (_, quotas) = app.get_as("/v1/quotas", &token).await;
    assert!(
        !quotas.to_string().contains("\"used\":1"),
        "bad input tracked usage: {quotas}"
    );
    Some(seen)
}

#[tokio::test]
async fn bad_input_is_422_changes_nothing_and_both_databases_agree() {
    let sqlite = answers(Db::Sqlite).await.unwrap();
    let expected = [
        ("spend array", "body_not_object", Value::Null),
        ("adjust array", "body_not_object", Value::Null),
        ("track empty array", "body_not_object", Value::Null),
        ("spend string", "body_not_object", Value::Null),
        ("spend NUL", "nul_character", json!("action")),
        ("item NUL", "nul_character", json!("title")),
        (
            "preferences NUL key",
            "nul_character",
            json!("theme\\u0000"),
        ),
        ("path NUL", "nul_character", json!("path")),
        ("meter NUL", "nul_character", json!("path")),
        ("query NUL", "nul_character", json!("query.q")),
    ];
    for ((what, status, code, field), (want, want_code, want_field)) in sqlite.iter().zip(expected)
    {
        assert_eq!(what, want);
        assert_eq!(
            (*status, code.as_str(), field),
            (422, want_code, &want_field),
            "{what}"
        );
    }
    if let Some(postgres) = answers(Db::Postgres).await {
        assert_eq!(postgres, sqlite, "the two databases answer alike");
    }
}

/// Found by black-box testing: malformed and deceptive addresses were accepted, and a
/// full-width `ｅve@example.com` made a second account that looks like `eve@`.
#[tokio::test]
async fn emails_are_validated_and_look_alikes_are_one_account() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(app) = TestApp::spawn_on(db, &[]).await else {
            continue;
        };
        let signup = |email: &str| {
            app.post(
                "/v1/auth/signup",
                None,
                json!({"email": email, "password": "correct horse battery"}),
            )
        };
        for bad in [
            "eve@@example.com",
            "<script>@x.io",
            "eve\u{202E}@example.com",
        ] {
            let (status, problem) = signup(bad).await;
            assert_eq!(
                (status, problem["field"].as_str()),
                (422, Some("email")),
                "{bad:?}: {problem}"
            );
        }
        app.sign_up("eve@example.com").await;
        let (status, problem) = signup("\u{FF45}ve@example.com").await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (409, Some("email_taken"))
        );
        // The look-alike signs in to the one account.
        let (status, _) = app
            .post(
                "/v1/auth/login",
                None,
                json!({"email": "\u{FF45}VE@example.com", "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, 200);
    }
}

/// Every string input has a limit (sign-up `name`, saved-item `title` and admin `reason`
/// took 60,000 characters before).
#[tokio::test]
async fn long_strings_are_refused_naming_the_field() {
    let app = TestApp::spawn(&[]).await;
    let long = "x".repeat(60_000);
    let (status, problem) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "long@example.com", "password": "correct horse battery", "name": long}),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("name")));
    let (token, _, account) = app.sign_up("long@example.com").await;
    let (status, problem) = app
        .post(
            "/v1/saved-items",
            Some(&token),
            json!({"kind": "prompt", "title": "t".repeat(201), "content": "x"}),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("title")));
    let (status, problem) = app
        .post(
            &format!("/v1/admin/accounts/{account}/credits"),
            Some(ADMIN_KEY),
            json!({"delta": 5, "reason": "r".repeat(501)}),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("reason")));
}
