//! Usage ingest: many events in one request, each idempotent by its own key.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use billing_core::catalog::MeterKind;
use billing_core::ports::{TrackOutcome, TrackRequest};
use billing_core::quota::{QuotaError, Window};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::dto::{rfc3339, signed_units};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Validate};
use crate::routes::client_key;
use crate::routes::quotas::{amount_for, context, meter_window};
use crate::state::ApiState;

/// The most events one request may carry.
pub const MAX_EVENTS: usize = 500;

/// Usage events to record together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackBatchBody {
    /// 1 to 500 events, decided in this order.
    #[schema(min_items = 1, max_items = 500)]
    pub events: Vec<TrackEventBody>,
}

/// One usage event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackEventBody {
    /// A meter of the catalog.
    #[schema(max_length = 64)]
    pub meter: String,
    /// Units, 1 to 1,000,000,000 (default 1).
    #[serde(default)]
    #[schema(schema_with = crate::dto::signed_units_schema)]
    pub amount: Option<i64>,
    /// The event's own idempotency key, 1 to 200 visible ASCII characters. The same key
    /// again records nothing more; it is the same key as an `Idempotency-Key` sent to
    /// `POST /v1/quotas/{meter}/track`.
    #[schema(min_length = 1, max_length = 200, pattern = "^[!-~]{1,200}$")]
    pub key: String,
}

impl Validate for TrackBatchBody {
    fn validate(&self) -> Result<(), ApiError> {
        if self.events.is_empty() || self.events.len() > MAX_EVENTS {
            return Err(ApiError::invalid_field(
                "events",
                format!("must hold 1 to {MAX_EVENTS} events"),
            ));
        }
        for (i, event) in self.events.iter().enumerate() {
            signed_units(&format!("events[{i}].amount"), event.amount)?;
            if client_key(&event.key).is_none() {
                return Err(ApiError::invalid_field(
                    &format!("events[{i}].key"),
                    "must be 1 to 200 visible ASCII characters",
                ));
            }
        }
        Ok(())
    }
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackStatus {
    /// Counted now.
    Recorded,
    /// Its key was counted before; nothing more was.
    Replayed,
    /// It would pass the period's limit; nothing was counted (`code`: `quota_exceeded`).
    Rejected,
    /// Its key was counted before with another meter or amount (`code`:
    /// `idempotency_conflict`).
    Conflict,
}

/// One event's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackEventResult {
    /// The event's key.
    pub key: String,
    /// The event's meter.
    pub meter: String,
    /// What became of it.
    pub status: TrackStatus,
    /// Why it was not counted: `quota_exceeded` or `idempotency_conflict`.
    pub code: Option<String>,
    /// The meter's units used in the period: after this event (`recorded`), after its
    /// first recording (`replayed`), or when it was refused (`rejected`). Absent for a
    /// conflict.
    pub used: Option<u64>,
    /// Units allowed per period; absent means unlimited.
    pub limit: Option<u64>,
    /// Units left then; absent means unlimited (or a conflict).
    pub remaining: Option<u64>,
    /// RFC 3339: when the period ends; null for a gauge, which never resets.
    pub resets_at: Option<String>,
}

/// The batch's results.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackBatchView {
    /// One result per event, in the order sent.
    pub results: Vec<TrackEventResult>,
    /// Events counted now.
    pub recorded: usize,
    /// Events whose key was counted before.
    pub replayed: usize,
    /// Events refused by a limit.
    pub rejected: usize,
    /// Events whose key was used for another meter or amount.
    pub conflicts: usize,
}

/// Records many usage events at once, for ingest from a product's own backend. Each event
/// is decided as if sent alone, in order (a later event sees what an earlier one counted),
/// is idempotent by its own `key`, and gets its own result; the request is answered 200
/// whatever the events came to. Malformed input (an unknown meter, a bad key or amount, no
/// events or more than 500) is refused whole, and records nothing.
#[utoipa::path(post, path = "/v1/quotas/track", tag = "quotas", security(("bearer" = [])),
    request_body = TrackBatchBody,
    responses(
        (status = 200, description = "A result per event", body = TrackBatchView),
        (status = 401, description = "No valid token", body = Problem),
        (status = 422, description = "Malformed batch; nothing recorded", body = Problem),
    ))]
pub async fn track_batch(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<TrackBatchBody>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let catalog = &state.billing.catalog;
    let body = body.into_inner();
    for (i, event) in body.events.iter().enumerate() {
        if !catalog.meters.contains_key(&event.meter) {
            return Err(ApiError::invalid_field(
                &format!("events[{i}].meter"),
                "is not a meter of the catalog",
            ));
        }
    }
    let (account, subscription) = context(&state, account).await?;
    let plan = catalog
        .plan(&account.plan)
        .or_else(|| catalog.default_plan());
    let billing = subscription.and_then(|s| s.current_period);
    let mut rules: HashMap<&str, (MeterKind, Option<u64>, Window)> = HashMap::new();
    for event in &body.events {
        if rules.contains_key(event.meter.as_str()) {
            continue;
        }
        let (kind, rule, window) = meter_window(&state, plan, &event.meter, billing)?;
        rules.insert(&event.meter, (kind, rule.and_then(|r| r.limit), window));
    }
    let mut resolved = Vec::with_capacity(body.events.len());
    let mut requests = Vec::with_capacity(body.events.len());
    for (i, event) in body.events.iter().enumerate() {
        let (kind, limit, window) = rules.get(event.meter.as_str()).copied().ok_or_else(|| {
            ApiError::internal(format!("no rule was resolved for `{}`", event.meter))
        })?;
        let amount = amount_for(
            kind,
            &format!("events[{i}].amount"),
            event.amount.unwrap_or(1),
        )?;
        resolved.push((limit, window));
        requests.push(TrackRequest {
            account: account.id.clone(),
            meter: event.meter.clone(),
            amount,
            window,
            limit,
            key: format!("track:{}", event.key),
        });
    }
    let outcomes = state.quotas.track_many(requests).await?;
    if outcomes.len() != body.events.len() {
        return Err(ApiError::internal(format!(
            "{} events gave {} outcomes",
            body.events.len(),
            outcomes.len()
        )));
    }
    let mut view = TrackBatchView {
        results: Vec::with_capacity(outcomes.len()),
        recorded: 0,
        replayed: 0,
        rejected: 0,
        conflicts: 0,
    };
    for ((event, (limit, window)), outcome) in body.events.into_iter().zip(resolved).zip(outcomes) {
        let (status, code, used) = match outcome {
            TrackOutcome::Recorded { used } => {
                view.recorded += 1;
                (TrackStatus::Recorded, None, Some(used))
            }
            TrackOutcome::Replayed { used } => {
                view.replayed += 1;
                (TrackStatus::Replayed, None, Some(used))
            }
            TrackOutcome::Rejected { error } => {
                view.rejected += 1;
                let (code, used) = match error {
                    QuotaError::QuotaExceeded { used, .. } => ("quota_exceeded", Some(used)),
                    QuotaError::BelowZero { used, .. } => ("gauge_below_zero", Some(used)),
                    QuotaError::InvalidAmount => ("invalid_field", None),
                };
                (TrackStatus::Rejected, Some(code), used)
            }
            TrackOutcome::Conflict => {
                view.conflicts += 1;
                (TrackStatus::Conflict, Some("idempotency_conflict"), None)
            }
        };
        view.results.push(TrackEventResult {
            key: event.key,
            meter: event.meter,
            status,
            code: code.map(str::to_owned),
            used,
            limit,
            remaining: limit.zip(used).map(|(l, u)| l.saturating_sub(u)),
            resets_at: (!window.is_forever()).then(|| rfc3339(window.end)),
        });
    }
    Ok(HttpResponse::Ok().json(view))
}
