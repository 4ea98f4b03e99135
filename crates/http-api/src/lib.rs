//! # http-api
//!
//! Tollgate's HTTP API, v1, on actix-web: sign-up and tokens, the public catalog, the
//! caller's credits, admin adjustments, health, and the OpenAPI document. Handlers call
//! billing-core's use cases through [`ApiState`]; every error becomes
//! `application/problem+json` in [`error`].

pub mod auth;
mod dto;
pub mod error;
pub mod extract;
pub mod hashing;
pub mod identity;
pub mod limits;
pub mod metrics;
mod middleware;
pub mod openapi;
mod routes;
pub mod session_cache;
pub mod state;

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, ResponseError, web};

pub use error::ApiError;
pub use limits::rate_limit;
pub use middleware::{audit, reject_nul, request_id};
pub use state::{ApiState, Readiness};

/// Declares every route once: registers it with actix and lists it in [`ROUTES`], which a
/// test compares with the OpenAPI document.
macro_rules! routes {
    ($( $method:ident $path:literal => $handler:path ),* $(,)?) => {
        /// Every route as (method, path), in the OpenAPI path syntax.
        pub const ROUTES: &[(&str, &str)] = &[ $( (stringify!($method), $path) ),* ];

        fn register(cfg: &mut web::ServiceConfig) {
            $( cfg.route($path, web::$method().to($handler)); )*
        }
    };
}

routes! {
    get "/health" => routes::system::health,
    get "/ready" => routes::system::ready,
    get "/metrics" => metrics::scrape,
    get "/openapi.json" => routes::system::openapi,
    post "/v1/auth/signup" => routes::auth::signup,
    post "/v1/auth/login" => routes::auth::login,
    post "/v1/auth/refresh" => routes::auth::refresh,
    post "/v1/auth/logout" => routes::auth::logout,
    post "/v1/auth/password" => routes::password::change,
    post "/v1/auth/password-reset" => routes::password::request_reset,
    post "/v1/auth/password-reset/confirm" => routes::password::confirm_reset,
    post "/v1/auth/email-verification" => routes::password::request_verification,
    post "/v1/auth/email-verification/confirm" => routes::password::confirm_verification,
    get "/v1/me" => routes::auth::me,
    patch "/v1/me" => routes::me::update_profile,
    get "/v1/me/preferences" => routes::me::preferences,
    put "/v1/me/preferences" => routes::me::set_preferences,
    post "/v1/saved-items" => routes::me::save_item,
    get "/v1/saved-items" => routes::me::items,
    get "/v1/saved-items/{item_id}" => routes::me::item,
    delete "/v1/saved-items/{item_id}" => routes::me::delete_item,
    post "/v1/api-keys" => routes::me::create_api_key,
    get "/v1/api-keys" => routes::me::api_keys,
    delete "/v1/api-keys/{key_id}" => routes::me::revoke_api_key,
    get "/v1/catalog" => routes::catalog::catalog,
    get "/v1/rewards" => routes::rewards::list,
    post "/v1/rewards/{reward_id}/claim" => routes::rewards::claim,
    get "/v1/admin/reward-claims" => routes::rewards::admin_list,
    post "/v1/admin/reward-claims/{claim_id}/approve" => routes::rewards::approve,
    post "/v1/admin/reward-claims/{claim_id}/reject" => routes::rewards::reject,
    get "/v1/plans" => routes::catalog::plans,
    get "/v1/packs" => routes::catalog::packs,
    get "/v1/credits" => routes::credits::balance,
    get "/v1/credits/analytics" => routes::credits::analytics,
    get "/v1/credits/journal" => routes::credits::journal,
    post "/v1/credits/spend" => routes::credits::spend,
    get "/v1/subscription" => routes::credits::subscription,
    post "/v1/subscription/cancel" => routes::billing::cancel_subscription,
    post "/v1/subscription/resume" => routes::billing::resume_subscription,
    post "/v1/subscription/change" => routes::billing::change_plan,
    post "/v1/checkout/pack" => routes::billing::checkout_pack,
    post "/v1/checkout/subscription" => routes::billing::checkout_subscription,
    post "/v1/checkout/quick-buy" => routes::billing::quick_buy,
    post "/v1/billing/portal" => routes::billing::portal,
    get "/v1/billing/history" => routes::billing::history,
    get "/v1/local-pay/{session}" => routes::local_pay::show,
    post "/v1/local-pay/{session}/pay" => routes::local_pay::pay,
    post "/v1/local-pay/{session}/decline" => routes::local_pay::decline,
    get "/v1/quotas" => routes::quotas::usage,
    post "/v1/quotas/{meter}/track" => routes::quotas::track,
    post "/v1/quotas/track" => routes::track_batch::track_batch,
    post "/v1/entitlements/check" => routes::quotas::check,
    get "/v1/admin/metrics" => routes::business::business_metrics,
    get "/v1/admin/jobs" => routes::jobs::jobs,
    get "/v1/admin/users" => routes::admin::list_users,
    get "/v1/admin/accounts/{account_id}" => routes::admin::get_account,
    post "/v1/admin/accounts/{account_id}/credits" => routes::admin::adjust_credits,
    post "/v1/admin/accounts/{account_id}/plan" => routes::billing::comp,
    get "/v1/admin/audit" => routes::admin::audit_log,
    get "/v1/admin/webhooks" => routes::admin::list_webhooks,
    get "/v1/admin/webhooks/{event_id}" => routes::admin::get_webhook,
    post "/v1/admin/webhooks/{event_id}/retry" => routes::admin::retry_webhook,
    post "/v1/webhooks/stripe" => routes::webhooks::stripe,
    post "/v1/chat/completions" => routes::gateway::openai::chat_completions,
    post "/v1/messages" => routes::gateway::anthropic::messages,
    get "/v1/models" => routes::gateway::usage::models,
    post "/v1/chat" => routes::gateway::usage::simple_chat,
    get "/v1/usage" => routes::gateway::usage::usage,
    post "/v1/tasks" => routes::tasks::create,
    get "/v1/tasks" => routes::tasks::list,
    get "/v1/tasks/{task_id}" => routes::tasks::get,
    post "/v1/tasks/{task_id}/cancel" => routes::tasks::cancel,
    post "/v1/worker/tasks/claim" => routes::tasks::claim,
    post "/v1/worker/tasks/{task_id}/heartbeat" => routes::tasks::heartbeat,
    post "/v1/worker/tasks/{task_id}/complete" => routes::tasks::complete,
    post "/v1/worker/tasks/{task_id}/fail" => routes::tasks::fail,
    get "/v1/admin/task-deliveries" => routes::tasks::deliveries,
}

/// Registers the API: JSON limits and error mapping, then every route.
pub fn configure(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(body_limit)
            .error_handler(json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .default_service(web::to(not_found));
    register(cfg);
}

/// No route matched: 405 with `Allow` when the path exists under other methods, else 404.
async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            format!("no route for {} {}", req.method(), req.path()),
        )
        .error_response();
    }
    let allow = allowed.join(", ");
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        format!("{} takes {allow}", req.path()),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// The methods (upper case) that [`ROUTES`] serves at `path`.
fn allowed_methods(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        .filter(|(_, pattern)| {
            let parts: Vec<&str> = pattern.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
        })
        .map(|(method, _)| method.to_ascii_uppercase())
        .collect()
}

/// Malformed JSON is 400, JSON of the wrong shape 422 (naming the field where serde does),
/// too large 413, not JSON 415.
fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let problem = match &err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
            format!("the body may be at most {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as application/json",
        ),
        JsonPayloadError::Deserialize(inner) if inner.is_data() => {
            let message = inner.to_string();
            let problem = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "Invalid field",
                message.clone(),
            );
            match field_of(&message) {
                Some(field) => problem.with("field", field),
                None => problem,
            }
        }
        JsonPayloadError::Deserialize(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "Malformed JSON",
            "the body is not valid JSON",
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad request",
            "the body could not be read",
        ),
    };
    problem.into()
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
        "Invalid query",
        err.to_string(),
    )
    .into()
}

/// The field serde names in "missing field `x`", "unknown field `x`" or "invalid type … for `x`".
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = message[start..].find('`')? + start;
    Some(message[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document_and_nothing_else() {
        let doc = serde_json::to_value(openapi::ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in ROUTES {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is served but missing from the OpenAPI document"
            );
        }
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "the document describes routes that are not served"
        );
    }

    #[test]
    fn a_known_path_under_another_method_lists_the_allowed_ones() {
        assert_eq!(allowed_methods("/v1/me"), ["GET", "PATCH"]);
        assert_eq!(allowed_methods("/v1/saved-items/itm_1"), ["GET", "DELETE"]);
        assert!(allowed_methods("/v1/nothing").is_empty());
        assert!(
            allowed_methods("/v1/saved-items/").len() == 2,
            "the list route"
        );
    }

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            field_of("missing field `email` at line 1 column 2").as_deref(),
            Some("email")
        );
        assert_eq!(
            field_of("unknown field `emial`, expected one of `email`").as_deref(),
            Some("emial")
        );
        assert_eq!(field_of("no field here"), None);
    }
}
