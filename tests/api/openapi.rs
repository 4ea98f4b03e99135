use api_tests::TestApp;

#[tokio::test]
async fn the_served_document_describes_every_route_and_its_requests_work() {
    let app = TestApp::spawn(&[]).await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in http_api::ROUTES {
        assert!(paths[*path].get(*method).is_some(), "{method} {path}");
    }
    // Every GET the document lists without parameters or security answers 200.
    for (path, item) in paths {
        let Some(get) = item.get("get") else { continue };
        if get.get("security").is_some() || path.contains('{') {
            continue;
        }
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
    }
    // The plans it describes are the catalog's.
    let plans: serde_json::Value = app.get("/v1/plans").await.json().await.unwrap();
    let ids: Vec<&str> = plans
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["free", "pro", "team"]);
    assert_eq!(plans[0]["default"], true);
    assert_eq!(plans[1]["prices"][0]["amount"], "19.00");
}

/// Found by schemathesis: problems were declared as `application/json`, routes did not list
/// the statuses they answer, and query structs were documented as required path
/// parameters. The served document now says what the server does.
#[tokio::test]
async fn the_document_declares_problems_and_every_status_a_route_can_answer() {
    let app = TestApp::spawn(&[]).await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            for (status, response) in responses {
                if (status.starts_with('4') || status.starts_with('5'))
                    && let Some(content) = response.get("content")
                {
                    assert!(
                        content.get("application/problem+json").is_some(),
                        "{method} {path} {status}: {content}"
                    );
                }
            }
            assert!(has("422"), "{method} {path}");
            if op.get("security").is_some() {
                assert!(has("401") && has("403"), "{method} {path}");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(has(status), "{method} {path} {status}");
                }
            }
            if path.contains('{') {
                assert!(has("404"), "{method} {path}");
            }
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "query" {
                    assert_eq!(param["required"], false, "{method} {path} {param}");
                }
            }
        }
    }
    // Catalog names are enums of this catalog.
    let action = &doc["components"]["schemas"]["SpendRequest"]["properties"]["action"]["enum"];
    assert!(
        action
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("image_analysis")),
        "{action}"
    );
}

#[tokio::test]
async fn pages_outside_1_to_200_and_foreign_cursors_are_422_and_other_methods_405() {
    let app = TestApp::spawn(&[]).await;
    let (token, _, _) = app.sign_up("pages@example.com").await;
    for query in [
        "limit=0",
        "limit=201",
        "after=nonsense",
        "after=usr_01M84T2Y7X33AHPWXV240GZCYV",
    ] {
        let (status, problem) = app
            .get_as(&format!("/v1/credits/journal?{query}"), &token)
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("invalid_query")),
            "{query}: {problem}"
        );
    }
    let (status, _) = app.get_as("/v1/credits/journal?limit=200", &token).await;
    assert_eq!(status, 200);
    let response = app
        .client
        .request(reqwest::Method::TRACE, format!("{}/v1/plans", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    let response = app
        .client
        .delete(format!("{}/v1/me", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, PATCH");
}
