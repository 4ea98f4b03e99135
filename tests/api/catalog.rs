//! The public catalog a pricing page is built from.

use api_tests::{Db, TestApp};
use serde_json::Value;

fn ids(plans: &Value) -> Vec<&str> {
    plans
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn plans_come_in_upgrade_order_with_what_a_pricing_page_shows() {
    // The free plan moved to the top tier: the order follows the tiers, not the ids.
    let app = TestApp::spawn_with(Db::Sqlite, &[], |loaded| {
        if let Some(free) = loaded.catalog.plans.get_mut("free") {
            free.tier = 9;
        }
    })
    .await
    .unwrap();
    let plans: Value = app.get("/v1/plans").await.json().await.unwrap();
    assert_eq!(ids(&plans), ["pro", "team", "free"]);
    let tiers: Vec<u64> = plans
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tier"].as_u64().unwrap())
        .collect();
    assert_eq!(tiers, [1, 2, 9]);

    let catalog: Value = app.get("/v1/catalog").await.json().await.unwrap();
    assert_eq!(catalog["plans"], plans, "the same plans in the same order");
    assert_eq!(catalog["currency"], "usd");
    assert_eq!(catalog["timezone"], "UTC");
    let actions = catalog["actions"].as_array().unwrap();
    let cost = |id: &str| {
        actions
            .iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["credits"].as_u64())
    };
    assert_eq!(
        (
            cost("short_chat"),
            cost("long_chat"),
            cost("image_analysis")
        ),
        (Some(5), Some(20), Some(50))
    );
    assert!(
        catalog["meters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "exports")
    );
    let packs: Value = app.get("/v1/packs").await.json().await.unwrap();
    assert_eq!(catalog["packs"], packs);
    let pro = &catalog["plans"][0];
    assert!(pro["prices"].as_array().unwrap().len() >= 2, "{pro}");
    assert!(pro["trial_days"].is_u64() && pro["quotas"].is_array() && pro["features"].is_array());
}
