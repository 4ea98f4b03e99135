//! Quotas and entitlements of the caller's plan.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::catalog::{MeterKind, QuotaRule};
use billing_core::entitlements::{self, AccountState, Ask};
use billing_core::ids::AccountId;
use billing_core::ports::{TrackOutcome, TrackRequest, quota_status};
use billing_core::quota::{QuotaCheck, QuotaError, Window};
use billing_core::records::Account;

use crate::auth::Caller;
use crate::dto::{EntitlementRequest, QuotaStatusView, TrackRequestBody, rfc3339};
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::routes::idempotency_key;
use crate::state::ApiState;

/// The account, its subscription's billing period (if any) and status.
pub(crate) async fn context(
    state: &ApiState,
    account: &AccountId,
) -> Result<(Account, Option<billing_core::subscription::Subscription>), ApiError> {
    let account = state
        .billing
        .accounts
        .account(account)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let subscription = state.billing.subscriptions.current(&account.id).await?;
    Ok((account, subscription))
}

/// The kind of `meter`, the plan's rule for it, and the window that counts it now: all time
/// for a gauge, else the rule's period (a month when no rule limits the meter).
pub(crate) fn meter_window<'a>(
    state: &ApiState,
    plan: Option<&'a billing_core::catalog::Plan>,
    meter: &str,
    billing: Option<Window>,
) -> Result<(MeterKind, Option<&'a QuotaRule>, Window), ApiError> {
    let tz = state.billing.catalog.tz().map_err(ApiError::internal)?;
    let kind = state
        .billing
        .catalog
        .meters
        .get(meter)
        .map_or(MeterKind::Counter, |m| m.kind);
    let rule = plan.and_then(|p| p.quotas.get(meter));
    let window = Window::for_meter(kind, rule, state.billing.clock.now(), tz, billing);
    Ok((kind, rule, window))
}

/// 422 naming `field` when `amount` releases units of a meter that is not a gauge.
pub(crate) fn amount_for(kind: MeterKind, field: &str, amount: i64) -> Result<i64, ApiError> {
    if amount < 0 && kind != MeterKind::Gauge {
        return Err(ApiError::invalid_field(
            field,
            "must be at least 1: only a gauge meter releases units",
        ));
    }
    Ok(amount)
}

/// The 409 of a release below zero.
pub(crate) fn below_zero(meter: &str, used: u64, released: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "gauge_below_zero",
        "Releasing more than is held",
        format!("`{meter}` holds {used}; {released} cannot be released"),
    )
    .with("meter", meter.to_owned())
    .with("used", used)
}

#[utoipa::path(get, path = "/v1/quotas", tag = "quotas", security(("bearer" = [])),
    responses(
        (status = 200, description = "One entry per meter", body = [QuotaStatusView]),
        (status = 401, description = "No valid token", body = Problem),
    ))]
pub async fn usage(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let (account, subscription) = context(&state, account).await?;
    let catalog = &state.billing.catalog;
    let plan = catalog
        .plan(&account.plan)
        .or_else(|| catalog.default_plan());
    let billing = subscription.and_then(|s| s.current_period);
    let mut out = Vec::new();
    for meter in catalog.meters.keys() {
        let (kind, rule, window) = meter_window(&state, plan, meter, billing)?;
        let check =
            quota_status(state.quotas.as_ref(), &account.id, meter, rule, 0, window).await?;
        out.push(QuotaStatusView::new(
            meter,
            kind,
            check.limit,
            check.used,
            window,
        ));
    }
    Ok(HttpResponse::Ok().json(out))
}

/// Records usage of a meter, refusing what would pass the plan's limit; a negative amount
/// releases units of a gauge (never below zero). Idempotent with `Idempotency-Key`: the same
/// key again records nothing more and returns the same total.
#[utoipa::path(post, path = "/v1/quotas/{meter}/track", tag = "quotas", security(("bearer" = [])),
    request_body = TrackRequestBody,
    params(
        ("meter" = String, Path, description = "A meter of the catalog"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe"),
    ),
    responses(
        (status = 200, description = "Recorded (or replayed)", body = QuotaStatusView),
        (status = 404, description = "No such meter", body = Problem),
        (status = 409, description = "The key was used for another meter or amount, or a release would take a gauge below zero", body = Problem),
        (status = 422, description = "A zero amount, or a negative one for a counter", body = Problem),
        (status = 429, description = "The quota is used up; `Retry-After` says when a counter resets (a gauge frees up only by releases)", body = Problem),
    ))]
pub async fn track(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<TrackRequestBody>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let meter = path.into_inner();
    let catalog = &state.billing.catalog;
    let Some(kind) = catalog.meters.get(&meter).map(|m| m.kind) else {
        return Err(ApiError::not_found("meter"));
    };
    // Refused before anything is read: the amount's sign is the meter kind's business.
    let amount = amount_for(kind, "amount", body.amount.unwrap_or(1))?;
    let (account, subscription) = context(&state, account).await?;
    let (_, rule, window) = meter_window(
        &state,
        catalog
            .plan(&account.plan)
            .or_else(|| catalog.default_plan()),
        &meter,
        subscription.and_then(|s| s.current_period),
    )?;
    let limit = rule.and_then(|r| r.limit);
    let key = idempotency_key(&req, &state)?;
    let outcome = state
        .quotas
        .track(TrackRequest {
            account: account.id.clone(),
            meter: meter.clone(),
            amount,
            window,
            limit,
            key: format!("track:{key}"),
        })
        .await?;
    let view = |used: u64| QuotaStatusView::new(&meter, kind, limit, used, window);
    match outcome {
        TrackOutcome::Recorded { used } => Ok(HttpResponse::Ok().json(view(used))),
        TrackOutcome::Replayed { used } => Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(view(used))),
        TrackOutcome::Conflict => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different meter or amount",
        )),
        TrackOutcome::Rejected {
            error:
                QuotaError::QuotaExceeded {
                    limit,
                    used,
                    requested,
                    resets_at,
                    ..
                },
        } => {
            let gauge = kind == MeterKind::Gauge;
            let (per, had) = if gauge {
                ("at a time", "held")
            } else {
                ("per period", "used")
            };
            let problem = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                "Quota exceeded",
                format!("`{meter}` allows {limit} {per}; {used} {had}, {requested} more requested"),
            )
            .with("meter", meter.clone())
            .with("limit", limit)
            .with("used", used);
            if gauge {
                // Nothing resets: only a release frees room, so there is no time to wait.
                return Err(problem);
            }
            let retry_after = (resets_at - state.billing.clock.now())
                .whole_seconds()
                .max(1);
            Err(problem
                .with("resets_at", rfc3339(resets_at))
                .with("retry_after", retry_after))
        }
        TrackOutcome::Rejected {
            error: QuotaError::BelowZero { used, released, .. },
        } => Err(below_zero(&meter, used, released)),
        TrackOutcome::Rejected {
            error: QuotaError::InvalidAmount,
        } => Err(ApiError::invalid_field("amount", "must not be 0")),
    }
}

/// May the caller do this — an action, a model, a feature, an amount of a meter? The
/// answer says why not and what remains.
#[utoipa::path(post, path = "/v1/entitlements/check", tag = "quotas", security(("bearer" = [])),
    request_body = EntitlementRequest,
    responses(
        (status = 200, description = "The decision: `allowed`, `denial` (with `code`), `plan`, `remaining`"),
        (status = 422, description = "Malformed question", body = Problem),
    ))]
pub async fn check(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<EntitlementRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let (account, subscription) = context(&state, account).await?;
    let catalog = &state.billing.catalog;
    let body = body.into_inner();
    let ask = match body.kind.as_str() {
        "action" => Ask::Action { action: body.name },
        "model" => Ask::Model { model: body.name },
        "feature" => Ask::Feature { feature: body.name },
        "meter" => Ask::Meter {
            meter: body.name,
            amount: body.amount.unwrap_or(1),
        },
        _ => {
            return Err(ApiError::invalid_field(
                "kind",
                "must be `action`, `model`, `feature` or `meter`",
            ));
        }
    };
    let balance = state.billing.ledger.balance(&account.id).await?.available;
    let quota: Option<QuotaCheck> = match &ask {
        Ask::Meter { meter, amount } if catalog.meters.contains_key(meter) => {
            let (_, rule, window) = meter_window(
                &state,
                catalog.plan(&account.plan),
                meter,
                subscription.as_ref().and_then(|s| s.current_period),
            )?;
            Some(
                quota_status(
                    state.quotas.as_ref(),
                    &account.id,
                    meter,
                    rule,
                    *amount,
                    window,
                )
                .await?,
            )
        }
        _ => None,
    };
    let decision = entitlements::decide(
        catalog,
        AccountState {
            plan: &account.plan,
            subscription: subscription.as_ref().map(|s| (s.plan.as_str(), s.status)),
            balance,
            quota: quota.as_ref(),
        },
        &ask,
    );
    Ok(HttpResponse::Ok().json(decision))
}
