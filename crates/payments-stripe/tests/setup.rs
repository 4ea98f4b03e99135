//! `stripe setup` against a fake Stripe (wiremock) holding some of the catalog already:
//! what is right is kept, what is missing is created, what differs is replaced under the
//! same lookup key, and a dry run only reads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use billing_core::catalog::Interval;
use billing_core::testing::FixedClock;
use payments_stripe::setup::{CatalogPrice, catalog_prices};
use payments_stripe::{StripeConfig, StripePayments};
use serde_json::{Value, json};
use time::macros::datetime;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn fixture(resource: &str) -> Value {
    let doc: Value = serde_json::from_str(include_str!("vectors/stripe-objects.json")).unwrap();
    doc["resources"][resource].clone()
}

fn price(id: &str, amount: i64, interval: Option<&str>) -> Value {
    let mut p = fixture("price");
    p["id"] = json!(id);
    p["unit_amount"] = json!(amount);
    p["unit_amount_decimal"] = json!(amount.to_string());
    p["currency"] = json!("usd");
    p["active"] = json!(true);
    p["recurring"] = match interval {
        Some(i) => json!({"interval": i, "interval_count": 1, "meter": null,
                          "usage_type": "licensed", "trial_period_days": null}),
        None => Value::Null,
    };
    p["type"] = json!(if interval.is_some() {
        "recurring"
    } else {
        "one_time"
    });
    p
}

fn query(request: &Request, key: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn form(request: &Request) -> String {
    String::from_utf8_lossy(&request.body).into_owned()
}

/// A Stripe that has product `tollgate_plan_pro`, its monthly price at the catalog's
/// amount, its yearly price at an old amount, and nothing for the pack.
async fn stripe() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/products/tollgate_plan_pro"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("product")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/products/"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "resource_missing", "message": "No such product"
        }})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/prices"))
        .respond_with(|request: &Request| {
            let key = query(request, "lookup_keys[0]").unwrap_or_default();
            let data = match key.as_str() {
                "tollgate_plan_pro_month" => vec![price("price_pro_m", 1900, Some("month"))],
                "tollgate_plan_pro_year" => vec![price("price_pro_y_old", 15000, Some("year"))],
                _ => vec![],
            };
            ResponseTemplate::new(200).set_body_json(
                json!({"object": "list", "url": "/v1/prices", "has_more": false, "data": data}),
            )
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/products"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("product")))
        .mount(&server)
        .await;
    let created = Arc::new(Mutex::new(0));
    Mock::given(method("POST"))
        .and(path("/v1/prices"))
        .respond_with(move |request: &Request| {
            let mut n = created.lock().unwrap();
            *n += 1;
            let body = form(request);
            let interval = ["month", "year"]
                .into_iter()
                .find(|i| body.contains(&format!("recurring[interval]={i}")));
            let amount: i64 = body
                .split('&')
                .find_map(|p| p.strip_prefix("unit_amount="))
                .unwrap()
                .parse()
                .unwrap();
            ResponseTemplate::new(200).set_body_json(price(
                &format!("price_new_{n}"),
                amount,
                interval,
            ))
        })
        .mount(&server)
        .await;
    server
}

fn gateway(server: &MockServer) -> StripePayments {
    StripePayments::new(
        &StripeConfig {
            secret_key: "sk_test_setup".into(),
            api_base: server.uri(),
            timeout: Duration::from_secs(5),
        },
        Arc::new(FixedClock::new(datetime!(2026-06-01 12:00 UTC))),
    )
    .unwrap()
}

fn catalog() -> Vec<CatalogPrice> {
    let catalog: billing_core::catalog::Catalog = serde_json::from_value(json!({
        "default_plan": "free",
        "plans": {
            "free": {"name": "Free"},
            "pro": {"name": "Pro", "prices": {"month": {"amount": "19.00"}, "year": {"amount": "190.00"}}}
        },
        "packs": {"small": {"name": "Small", "credits": 5000, "price": {"amount": "5.00"}}}
    }))
    .unwrap();
    catalog_prices(&catalog).unwrap()
}

#[test]
fn the_catalog_lists_each_plan_interval_and_pack() {
    let prices = catalog();
    let keys: Vec<_> = prices.iter().map(|p| p.lookup_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tollgate_plan_pro_month",
            "tollgate_plan_pro_year",
            "tollgate_pack_small"
        ]
    );
    assert_eq!(prices[1].amount_minor, 19_000);
    assert_eq!(prices[1].interval, Some(Interval::Year));
    assert_eq!(prices[2].interval, None);
    assert_eq!(prices[2].config_key, "catalog.packs.small.price");
}

#[tokio::test]
async fn setup_keeps_what_is_right_creates_what_is_missing_and_replaces_what_differs() {
    let server = stripe().await;
    let report = gateway(&server).setup(&catalog(), false).await.unwrap();
    assert_eq!(report.products_created, ["tollgate_pack_small"]);
    let ids: Vec<_> = report
        .prices
        .iter()
        .map(|p| p.stripe_price_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, ["price_pro_m", "price_new_1", "price_new_2"]);
    assert!(
        report.prices[1].note.contains("replaced price_pro_y_old"),
        "{:?}",
        report.prices[1]
    );
    assert_eq!(
        report.config_lines(),
        [
            "catalog.plans.pro.prices.month.stripe_price_id = \"price_pro_m\"",
            "catalog.plans.pro.prices.year.stripe_price_id = \"price_new_1\"",
            "catalog.packs.small.price.stripe_price_id = \"price_new_2\"",
        ]
    );
    let requests = server.received_requests().await.unwrap();
    let created: Vec<_> = requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/prices")
        .collect();
    let yearly = form(created[0]);
    assert!(yearly.contains("unit_amount=19000"), "{yearly}");
    assert!(yearly.contains("recurring[interval]=year"), "{yearly}");
    assert!(
        yearly.contains("lookup_key=tollgate_plan_pro_year"),
        "{yearly}"
    );
    assert!(yearly.contains("transfer_lookup_key=true"), "{yearly}");
    assert!(yearly.contains("product=tollgate_plan_pro"), "{yearly}");
    let pack = form(created[1]);
    assert!(!pack.contains("recurring"), "{pack}");
    let product = requests
        .iter()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/products")
        .unwrap();
    assert!(form(product).contains("id=tollgate_pack_small"));
    assert!(
        created
            .iter()
            .all(|r| r.headers.contains_key("idempotency-key"))
    );
}

#[tokio::test]
async fn a_dry_run_only_reads() {
    let server = stripe().await;
    let report = gateway(&server).setup(&catalog(), true).await.unwrap();
    assert_eq!(report.products_created, ["tollgate_pack_small"]);
    assert_eq!(
        report.config_lines(),
        ["catalog.plans.pro.prices.month.stripe_price_id = \"price_pro_m\""]
    );
    assert!(
        report.prices[1].note.starts_with("would replace"),
        "{:?}",
        report.prices[1]
    );
    assert_eq!(report.prices[2].note, "would create");
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.method.as_str() == "GET"));
}
