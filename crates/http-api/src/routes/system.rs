//! Liveness, readiness and the API description.

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};

use crate::state::ApiState;

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "Alive")))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Every dependency answers (catalog, database).
#[utoipa::path(get, path = "/ready", tag = "system",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "A dependency is down; see `checks`"),
    ))]
pub async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    let mut checks = Map::new();
    let mut ok = true;
    let catalog_ok = state.billing.catalog.default_plan().is_some();
    ok &= catalog_ok;
    checks.insert(
        "catalog".into(),
        Value::from(if catalog_ok { "ok" } else { "no default plan" }),
    );
    for (name, outcome) in state.readiness.checks().await {
        ok &= outcome.is_ok();
        checks.insert(
            name.into(),
            Value::from(outcome.map_or_else(|e| format!("unavailable: {e}"), |()| "ok".to_owned())),
        );
    }
    for (name, value) in state.readiness.info() {
        checks.insert(name.into(), Value::from(value));
    }
    let body = json!({ "status": if ok { "ready" } else { "unavailable" }, "checks": checks });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API")))]
pub async fn openapi(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.openapi)
}
