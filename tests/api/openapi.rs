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
