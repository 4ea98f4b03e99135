//! Operators' routes.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use billing_core::ids::AccountId;
use billing_core::records::WebhookStatus;
use serde_json::json;

use crate::auth::Caller;
use crate::dto::{
    AccountDetailView, AdjustRequest, AuditPage, AuditQuery, AuditView, BalanceView, ReceiptView,
    UserPage, UserQuery, UserView, WebhookEventPage, WebhookEventView, WebhookQuery,
};
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::middleware::AuditNote;
use crate::routes::idempotency_key;
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
    body: Json<AdjustRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let account: AccountId = path.parse().map_err(|_| ApiError::not_found("account"))?;
    let body = body.into_inner();
    let key = idempotency_key(&req, &state)?;
    let moved = state
        .billing
        .adjust(&account, body.delta, &body.reason, &key)
        .await?;
    req.extensions_mut().insert(AuditNote {
        target: Some(account.to_string()),
        details: json!({
            "delta": body.delta,
            "reason": body.reason.trim(),
            "transaction_id": moved.receipt.txn.as_ref().map(ToString::to_string),
            "replayed": moved.replayed,
        }),
    });
    let mut response = HttpResponse::Ok();
    if moved.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(ReceiptView::from(&moved.receipt)))
}

/// Users, newest first; `search` matches email or name.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserQuery),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 403, description = "Not an admin", body = Problem),
    ))]
pub async fn list_users(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<UserQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let query = query.into_inner();
    crate::extract::max_chars_opt("search", query.search.as_ref(), 100)?;
    let page = state
        .billing
        .accounts
        .list_users(
            query.search,
            crate::routes::page(query.limit, query.after, "usr")?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserPage {
        items: page.items.iter().map(UserView::from).collect(),
        next: page.next,
    }))
}

/// One account: plan, credits and subscription.
#[utoipa::path(get, path = "/v1/admin/accounts/{account_id}", tag = "admin", security(("bearer" = [])),
    params(("account_id" = String, Path, description = "`acc_…`")),
    responses(
        (status = 200, description = "The account", body = AccountDetailView),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "No such account", body = Problem),
    ))]
pub async fn get_account(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id: AccountId = path.parse().map_err(|_| ApiError::not_found("account"))?;
    let account = state
        .billing
        .accounts
        .account(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let balance = state.billing.ledger.balance(&id).await?;
    let subscription = state.billing.subscriptions.current(&id).await?;
    Ok(HttpResponse::Ok().json(AccountDetailView {
        id: account.id.to_string(),
        plan: account.plan,
        created_at: crate::dto::rfc3339(account.created_at),
        subscription_status: subscription.map(|s| s.status.as_str().to_owned()),
        balance: BalanceView::from(&balance),
    }))
}

/// The audit log, newest first; `target` narrows it to one account or user.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit records", body = AuditPage),
        (status = 403, description = "Not an admin", body = Problem),
    ))]
pub async fn audit_log(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let query = query.into_inner();
    crate::extract::max_chars_opt("target", query.target.as_ref(), 64)?;
    let page = state
        .audit
        .list(
            query.target,
            crate::routes::page(query.limit, query.after, "aud")?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(AuditPage {
        items: page.items.iter().map(AuditView::from).collect(),
        next: page.next,
    }))
}

/// The status a list asks for (`failed` by default), by the names `WebhookStatus` has.
fn webhook_status(status: Option<&str>) -> Result<WebhookStatus, ApiError> {
    serde_json::from_value(json!(status.unwrap_or("failed"))).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            "Invalid query",
            "`status` must be received, processed, failed or ignored",
        )
        .with("field", "status")
    })
}

/// Payment webhook events with a status, oldest first: by default the failed ones (those
/// out of attempts are the dead letters).
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    params(WebhookQuery),
    responses(
        (status = 200, description = "A page of events", body = WebhookEventPage),
        (status = 403, description = "Not an admin", body = Problem),
    ))]
pub async fn list_webhooks(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<WebhookQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let query = query.into_inner();
    let status = webhook_status(query.status.as_deref())?;
    let page = state
        .webhooks
        .with_status(
            status,
            crate::routes::page(query.limit, query.after, "whk")?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(WebhookEventPage {
        items: page.items.iter().map(WebhookEventView::from).collect(),
        next: page.next,
    }))
}

/// One payment webhook event, by the provider's event id.
#[utoipa::path(get, path = "/v1/admin/webhooks/{event_id}", tag = "admin", security(("bearer" = [])),
    params(("event_id" = String, Path, description = "The provider's event id (`evt_…`)")),
    responses(
        (status = 200, description = "The event", body = WebhookEventView),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "No such event", body = Problem),
    ))]
pub async fn get_webhook(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let event = state
        .webhooks
        .event(&path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook event"))?;
    Ok(HttpResponse::Ok().json(WebhookEventView::from(&event)))
}

/// Applies a failed or ignored event again (after fixing what made it fail: a missing pack,
/// say); the worker takes it within its next pass. Applying is idempotent, so a retry never
/// grants twice.
#[utoipa::path(post, path = "/v1/admin/webhooks/{event_id}/retry", tag = "admin", security(("bearer" = [])),
    params(("event_id" = String, Path, description = "The provider's event id (`evt_…`)")),
    responses(
        (status = 202, description = "Queued; the event as it now stands", body = WebhookEventView),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "No such event", body = Problem),
        (status = 409, description = "The event is not failed or ignored (`not_retryable`)", body = Problem),
    ))]
pub async fn retry_webhook(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = path.into_inner();
    let event = state
        .webhooks
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook event"))?;
    if !state.webhooks.retry(&id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            "Not retryable",
            format!(
                "the event is {}; only failed or ignored events are retried",
                event.status.as_str()
            ),
        ));
    }
    let queued = state.webhooks.event(&id).await?.unwrap_or(event);
    Ok(HttpResponse::Accepted().json(WebhookEventView::from(&queued)))
}
