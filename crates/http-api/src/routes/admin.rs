//! Operators' routes.

use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::ids::{AccountId, AuditId, PrefixedId};
use billing_core::records::AuditRecord;
use serde_json::json;

use crate::auth::Caller;
use crate::dto::{AdjustRequest, ReceiptView};
use crate::error::{ApiError, Problem};
use crate::routes::{idempotency_key, request_id};
use crate::state::ApiState;

/// Adds or takes credits with a reason; journaled and audited. Idempotent with
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/admin/accounts/{account_id}/credits", tag = "admin", security(("bearer" = [])),
    request_body = AdjustRequest,
    params(
        ("account_id" = String, Path, description = "`acc_…`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe"),
    ),
    responses(
        (status = 200, description = "Adjusted", body = ReceiptView),
        (status = 402, description = "Taking more than the account has", body = Problem),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "No such account", body = Problem),
        (status = 422, description = "Zero delta or no reason", body = Problem),
    ))]
pub async fn adjust_credits(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<AdjustRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let account: AccountId = path.parse().map_err(|_| ApiError::not_found("account"))?;
    let body = body.into_inner();
    if body.delta == 0 {
        return Err(ApiError::invalid_field("delta", "must not be zero"));
    }
    let key = idempotency_key(&req, &state)?;
    let moved = state
        .billing
        .adjust(&account, body.delta, &body.reason, &key)
        .await?;
    if !moved.replayed {
        let record = AuditRecord {
            id: AuditId::from_ulid(state.billing.ids.ulid()),
            actor: caller.actor(),
            action: "credits.adjust".into(),
            target: Some(account.to_string()),
            request_id: request_id(&req),
            details: json!({
                "delta": body.delta,
                "reason": body.reason.trim(),
                "transaction_id": moved.receipt.txn.as_ref().map(ToString::to_string),
            }),
            at: state.billing.clock.now(),
        };
        state.audit.append(&record).await?;
    }
    let mut response = HttpResponse::Ok();
    if moved.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(ReceiptView::from(&moved.receipt)))
}
