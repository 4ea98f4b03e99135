//! The handlers, by area.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod credits;
pub mod me;
pub mod password;
pub mod quotas;
pub mod system;

use actix_web::HttpRequest;
use billing_core::ids::{PrefixedId, TxnId};
use billing_core::ledger::IdempotencyKey;

use crate::error::ApiError;
use crate::state::ApiState;

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
            .and_then(|v| IdempotencyKey::new(v).ok())
            .map(|k| k.as_str().to_owned())
            .ok_or_else(|| {
                ApiError::new(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "invalid_header",
                    "Invalid header",
                    "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
                )
                .with("header", "Idempotency-Key")
            }),
    }
}
