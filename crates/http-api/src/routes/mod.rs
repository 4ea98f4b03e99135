//! The handlers, by area.

pub mod admin;
pub mod auth;
pub mod billing;
pub mod business;
pub mod catalog;
pub mod credits;
pub mod gateway;
pub mod jobs;
pub mod local_pay;
pub mod me;
pub mod password;
pub mod quotas;
pub mod rewards;
pub mod system;
pub mod tasks;
pub mod track_batch;
pub mod webhooks;

use actix_web::HttpRequest;
use billing_core::ids::{PrefixedId, TxnId};
use billing_core::ledger::IdempotencyKey;

use crate::error::ApiError;
use crate::state::ApiState;

/// A page request from `limit` (1–200, 50 if absent) and `after` (a cursor this list gave:
/// `{prefix}_` and a ULID); anything else is 422 naming the parameter, never clamped.
pub(crate) fn page(
    limit: Option<u32>,
    after: Option<String>,
    prefix: &str,
) -> Result<billing_core::records::PageRequest, ApiError> {
    let invalid = |field: &str, message: &str| {
        ApiError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            "Invalid query",
            format!("`{field}` {message}"),
        )
        .with("field", field)
    };
    let limit = match limit {
        None => 50,
        Some(n @ 1..=200) => n,
        Some(_) => return Err(invalid("limit", "must be 1 to 200")),
    };
    if let Some(cursor) = &after {
        let well_formed = cursor
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|ulid| billing_core::ids::Ulid::decode(ulid).is_ok());
        if !well_formed {
            return Err(invalid("after", "is not a cursor this list returned"));
        }
    }
    Ok(billing_core::records::PageRequest { limit, after })
}

/// A key a client sent: 1 to [`IdempotencyKey::CLIENT_MAX_LEN`] visible ASCII characters.
pub(crate) fn client_key(value: &str) -> Option<IdempotencyKey> {
    if value.len() > IdempotencyKey::CLIENT_MAX_LEN {
        return None;
    }
    IdempotencyKey::new(value).ok()
}

/// The request's `Idempotency-Key`, validated; a fresh one-off key when absent.
pub(crate) fn idempotency_key(req: &HttpRequest, state: &ApiState) -> Result<String, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(format!(
            "auto:{}",
            TxnId::from_ulid(state.billing.ids.ulid())
        )),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(client_key)
            .map(|k| k.as_str().to_owned())
            .ok_or_else(|| {
                ApiError::new(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "invalid_header",
                    "Invalid header",
                    "`Idempotency-Key` must be 1 to 200 visible ASCII characters",
                )
                .with("header", "Idempotency-Key")
            }),
    }
}
