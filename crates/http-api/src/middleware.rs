//! A request id on every response and every log line of the request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use tracing::Instrument;

/// The request's id, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The header carrying it both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Takes the caller's `X-Request-Id` if it is sane, else makes one; runs the request in a
/// span carrying it; echoes it on the response; logs method, path, status and duration.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(|| format!("req_{}", random_suffix()), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| tracing::info!(status, elapsed_ms, "request finished"));
    Ok(response)
}

fn random_suffix() -> String {
    let bits: u128 = rand::random();
    billing_core::ids::Ulid(bits >> 2).encode()
}

/// What a handler adds to its audit record: the target and details (never secrets).
#[derive(Debug, Clone)]
pub struct AuditNote {
    /// What was acted on (an account, a user…).
    pub target: Option<String>,
    /// Details.
    pub details: serde_json::Value,
}

/// POST routes that only answer a question and change nothing: not audited.
const READ_ONLY_POSTS: [&str; 1] = ["/v1/entitlements/check"];

/// Records every mutating request (any method but GET, HEAD and OPTIONS) in the audit log
/// once it is answered: who (user id, `admin-key` or `anonymous`), what (method and route),
/// the target, the request id, the status, and whatever the handler noted. Bodies are never
/// recorded, so neither are passwords or tokens. A failure to record is logged, not fatal.
/// Metered model calls are not audited: each is recorded in full as a call (`GET
/// /v1/usage`), and a second row per call would only slow the gateway. Nor are
/// [`READ_ONLY_POSTS`]. The store writes the record after the response, in batches.
pub async fn audit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use actix_web::http::Method;
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && !matches!(
            req.path(),
            "/v1/chat/completions" | "/v1/messages" | "/v1/chat"
        )
        && !READ_ONLY_POSTS.contains(&req.path());
    let response = next.call(req).await?;
    if !mutating {
        return Ok(response);
    }
    let request = response.request();
    let Some(state) = request.app_data::<actix_web::web::Data<crate::state::ApiState>>() else {
        return Ok(response);
    };
    let caller = crate::auth::caller(request).await.ok();
    let note = request.extensions().get::<AuditNote>().cloned();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| request.path().to_owned());
    let target = note
        .as_ref()
        .and_then(|n| n.target.clone())
        .or_else(|| match &caller {
            Some(crate::auth::Caller::User { account, .. }) => Some(account.to_string()),
            _ => None,
        });
    let mut details = serde_json::json!({ "status": response.status().as_u16() });
    if let (Some(note), serde_json::Value::Object(map)) = (&note, &mut details)
        && let serde_json::Value::Object(extra) = &note.details
    {
        map.extend(extra.clone());
    }
    let record = billing_core::records::AuditRecord {
        id: <billing_core::ids::AuditId as billing_core::ids::PrefixedId>::from_ulid(
            state.billing.ids.ulid(),
        ),
        actor: caller.map_or_else(|| "anonymous".to_owned(), |c| c.actor()),
        action: format!("{} {route}", request.method()),
        target,
        request_id: request.extensions().get::<RequestId>().map(|r| r.0.clone()),
        details,
        at: state.billing.clock.now(),
    };
    if let Err(err) = state.audit.append(&record).await {
        tracing::warn!(error = %err, action = %record.action, "could not record the audit entry");
    }
    Ok(response)
}

/// Refuses a NUL character (`%00`) in the path or the query with 422 `nul_character`
/// before any route sees it: PostgreSQL cannot store one in TEXT and SQLite would, so the
/// two backends must never be asked to. (Bodies are checked by [`crate::extract::Json`].)
pub async fn reject_nul(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(field) = nul_in_uri(req.path(), req.query_string()) {
        let (req, _) = req.into_parts();
        let response = crate::extract::nul_error(&field).error_response();
        return Ok(ServiceResponse::new(req, response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// `path` or `query.<name>` when the raw URI carries an encoded NUL there.
fn nul_in_uri(path: &str, query: &str) -> Option<String> {
    let has_nul = |raw: &str| raw.contains("%00") || raw.contains('\0');
    if has_nul(path) {
        return Some("path".to_owned());
    }
    query.split('&').find(|pair| has_nul(pair)).map(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        if has_nul(name) {
            "query".to_owned()
        } else {
            format!("query.{name}")
        }
    })
}

#[cfg(test)]
mod nul_tests {
    use super::nul_in_uri;

    #[test]
    fn encoded_nuls_are_found_in_path_and_query() {
        assert_eq!(
            nul_in_uri("/v1/me/items/a%00b", "").as_deref(),
            Some("path")
        );
        assert_eq!(
            nul_in_uri("/v1/admin/users", "limit=5&q=eve%00").as_deref(),
            Some("query.q")
        );
        assert_eq!(
            nul_in_uri("/v1/admin/users", "q=%2500"),
            None,
            "an encoded percent"
        );
        assert_eq!(nul_in_uri("/v1/credits", "limit=5"), None);
    }
}
