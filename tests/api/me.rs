use api_tests::TestApp;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn profile_and_preferences_are_the_callers_own() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("prefs@example.com").await;
    let (status, user) = app
        .call(
            Method::PATCH,
            "/v1/me",
            &token,
            Some(json!({"name": "  Grace  "})),
        )
        .await;
    assert_eq!((status, user["name"].as_str()), (200, Some("Grace")));
    let (status, body) = app
        .call(
            Method::PATCH,
            "/v1/me",
            &token,
            Some(json!({"name": "x".repeat(101)})),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("name")));

    let (status, prefs) = app.get_as("/v1/me/preferences", &token).await;
    assert_eq!((status, prefs), (200, json!({})));
    let wanted = json!({"theme": "dark", "model": "gpt-4o-mini"});
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/me/preferences",
            &token,
            Some(wanted.clone()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get_as("/v1/me/preferences", &token).await.1, wanted);
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/me/preferences",
            &token,
            Some(json!(["not", "an", "object"])),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("body_not_object"))
    );
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/me/preferences",
            &token,
            Some(json!({"blob": "x".repeat(20_000)})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("preferences_too_large"))
    );
    assert_eq!(
        app.get_as("/v1/me/preferences", &token).await.1,
        wanted,
        "refusals changed nothing"
    );
    let (other, _, _) = app.sign_up("other-prefs@example.com").await;
    assert_eq!(app.get_as("/v1/me/preferences", &other).await.1, json!({}));
}

#[tokio::test]
async fn saved_items_are_invisible_to_everyone_else() {
    let app = TestApp::spawn(&[]).await;
    let (alice, _, _) = app.sign_up("alice-items@example.com").await;
    let (bob, _, _) = app.sign_up("bob-items@example.com").await;
    let (status, item) = app
        .post("/v1/saved-items", Some(&alice), json!({"kind": "prompt", "title": "Opener", "content": "Say hi", "metadata": {"tone": "warm"}}))
        .await;
    assert_eq!(status, 201, "{item}");
    let id = item["id"].as_str().unwrap();
    app.post(
        "/v1/saved-items",
        Some(&alice),
        json!({"kind": "reply", "content": "Thanks!"}),
    )
    .await;
    let (_, prompts) = app.get_as("/v1/saved-items?kind=prompt", &alice).await;
    assert_eq!(prompts["items"].as_array().unwrap().len(), 1);
    let (_, all) = app.get_as("/v1/saved-items", &alice).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);

    let path = format!("/v1/saved-items/{id}");
    assert_eq!(app.get_as(&path, &bob).await.0, 404);
    assert_eq!(app.call(Method::DELETE, &path, &bob, None).await.0, 404);
    assert_eq!(
        app.get_as("/v1/saved-items", &bob).await.1["items"],
        json!([])
    );
    let (status, mine) = app.get_as(&path, &alice).await;
    assert_eq!(
        (status, mine["metadata"]["tone"].as_str()),
        (200, Some("warm"))
    );
    assert_eq!(app.call(Method::DELETE, &path, &alice, None).await.0, 204);
    assert_eq!(app.get_as(&path, &alice).await.0, 404);

    let (status, body) = app
        .post(
            "/v1/saved-items",
            Some(&alice),
            json!({"kind": "poem", "content": "x"}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("kind")));
    let (status, body) = app
        .post(
            "/v1/saved-items",
            Some(&alice),
            json!({"kind": "reply", "content": "  "}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("content")));
}

#[tokio::test]
async fn api_keys_are_shown_once_act_as_their_user_and_can_be_revoked() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, account) = app.sign_up("keys@example.com").await;
    let (status, created) = app
        .post("/v1/api-keys", Some(&token), json!({"name": "ci"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tgk_"));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));

    let (status, listed) = app.get_as("/v1/api-keys", &token).await;
    assert_eq!(status, 200);
    assert!(
        !listed.to_string().contains(&key),
        "the key is never listed"
    );
    assert_eq!(listed[0]["name"], "ci");

    let (status, me) = app.get_as("/v1/me", &key).await;
    assert_eq!(
        (status, me["account"]["id"].as_str()),
        (200, Some(account.as_str()))
    );
    let (status, _) = app
        .post(
            "/v1/credits/spend",
            Some(&key),
            json!({"action": "short_chat"}),
        )
        .await;
    assert_eq!(status, 200);

    let (stranger, _, _) = app.sign_up("stranger@example.com").await;
    let path = format!("/v1/api-keys/{}", created["id"].as_str().unwrap());
    assert_eq!(
        app.call(Method::DELETE, &path, &stranger, None).await.0,
        404,
        "not the stranger's key"
    );
    assert_eq!(app.call(Method::DELETE, &path, &token, None).await.0, 204);
    let (status, body) = app.get_as("/v1/me", &key).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    assert_eq!(
        app.call(Method::DELETE, &path, &token, None).await.0,
        404,
        "already revoked"
    );
}
