//! A request id on every response and every log line of the request.

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
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

/// Records every mutating request (any method but GET, HEAD and OPTIONS) in the audit log
/// once it is answered: who (user id, `admin-key` or `anonymous`), what (method and route),
/// the target, the request id, the status, and whatever the handler noted. Bodies are never
/// recorded, so neither are passwords or tokens. A failure to record is logged, not fatal.
pub async fn audit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use actix_web::http::Method;
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
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
