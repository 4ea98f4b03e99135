//! The caller's credits: balance, journal, spending an action, and what they went on.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::dto::{
    BalanceView, JournalPage, JournalQuery, ReceiptView, SpendRequest, SubscriptionStateView,
    SubscriptionView, TransactionView,
};
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::routes::gateway::usage::{UsageQuery, day_range};
use crate::routes::idempotency_key;
use crate::state::ApiState;

/// Spendable credits, live grants (in burn order) and pending holds.
#[utoipa::path(get, path = "/v1/credits", tag = "credits", security(("bearer" = [])),
    responses(
        (status = 200, description = "The balance", body = BalanceView),
        (status = 401, description = "No valid token", body = Problem),
    ))]
pub async fn balance(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let balance = state.billing.ledger.balance(account).await?;
    Ok(HttpResponse::Ok().json(BalanceView::from(&balance)))
}

/// The journal, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/credits/journal", tag = "credits", security(("bearer" = [])),
    params(JournalQuery),
    responses(
        (status = 200, description = "A page of the journal", body = JournalPage),
        (status = 401, description = "No valid token", body = Problem),
    ))]
pub async fn journal(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<JournalQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let query = query.into_inner();
    let page = state
        .billing
        .ledger
        .journal(
            account,
            crate::routes::page(query.limit, query.after, "txn")?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(JournalPage {
        items: page.items.iter().map(TransactionView::from).collect(),
        next: page.next,
    }))
}

/// Spends an action's configured cost. Send an `Idempotency-Key` header: the same key again
/// returns the first response (a refusal included) without spending twice.
#[utoipa::path(post, path = "/v1/credits/spend", tag = "credits", security(("bearer" = [])),
    request_body = SpendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 200, description = "Spent", body = ReceiptView),
        (status = 402, description = "Not enough credits; `balance` and `required` say how many", body = Problem),
        (status = 403, description = "The plan does not include the action (`not_in_plan`, or `subscription_inactive` while the subscription that includes it is unpaid); the same answer as the entitlement check", body = Problem),
        (status = 409, description = "The Idempotency-Key was used with another request", body = Problem),
        (status = 422, description = "Unknown action", body = Problem),
    ))]
pub async fn spend(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<SpendRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let key = idempotency_key(&req, &state)?;
    let moved = state
        .billing
        .spend_action(account, &body.action, &key)
        .await?;
    let mut response = HttpResponse::Ok();
    if moved.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(ReceiptView::from(&moved.receipt)))
}

/// The caller's plan and live subscription (none on the default plan): status, interval,
/// current period, trial end, cancellation at the period's end and a scheduled plan change.
#[utoipa::path(get, path = "/v1/subscription", tag = "credits", security(("bearer" = [])),
    responses(
        (status = 200, description = "The plan in force and the subscription, if any", body = SubscriptionStateView),
        (status = 401, description = "No valid token", body = Problem),
    ))]
pub async fn subscription(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let record = state
        .billing
        .accounts
        .account(account)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let subscription = state.billing.subscriptions.current(account).await?;
    Ok(HttpResponse::Ok().json(SubscriptionStateView {
        plan: record.plan,
        subscription: subscription.as_ref().map(SubscriptionView::from),
    }))
}

/// Credits and how many debits (for an action) or calls (for a model) made them.
#[derive(Debug, Serialize, ToSchema)]
pub struct TallyView {
    /// Credits consumed.
    pub credits: u64,
    /// Debits or calls.
    pub count: u64,
}

/// One day's consumption.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumptionDayView {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Every credit consumed that day: debits and captures, less what was refunded.
    pub credits: u64,
    /// By catalog action (spends).
    pub by_action: BTreeMap<String, TallyView>,
    /// By model (gateway calls).
    pub by_model: BTreeMap<String, TallyView>,
}

/// What the caller's credits went on.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsView {
    /// First day.
    pub from: String,
    /// Last day (included).
    pub to: String,
    /// Credits consumed over the whole range.
    pub total: u64,
    /// The days with any consumption, oldest first.
    pub days: Vec<ConsumptionDayView>,
}

pub(crate) fn tallies(
    map: BTreeMap<String, billing_core::analytics::Tally>,
) -> BTreeMap<String, TallyView> {
    map.into_iter()
        .map(|(key, t)| {
            (
                key,
                TallyView {
                    credits: t.credits,
                    count: t.count,
                },
            )
        })
        .collect()
}

/// The caller's consumption by day (UTC), action and model (`from` after `to` is an empty
/// range).
#[utoipa::path(get, path = "/v1/credits/analytics", tag = "credits", security(("bearer" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "Consumption by day, action and model", body = AnalyticsView),
        (status = 422, description = "A malformed date", body = Problem),
    ))]
pub async fn analytics(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let (from, to, start, end) = day_range(&state, &query)?;
    let days = state
        .billing
        .consumption(state.usage.as_ref(), account, start, end)
        .await?;
    Ok(HttpResponse::Ok().json(AnalyticsView {
        from: from.to_string(),
        to: to.to_string(),
        total: days.iter().map(|d| d.credits).sum(),
        days: days
            .into_iter()
            .map(|d| ConsumptionDayView {
                day: d.day.to_string(),
                credits: d.credits,
                by_action: tallies(d.by_action),
                by_model: tallies(d.by_model),
            })
            .collect(),
    }))
}
