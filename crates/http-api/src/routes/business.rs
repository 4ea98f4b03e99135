//! `GET /v1/admin/metrics`: the business view (see `billing_core::business` and docs/api.md
//! for each figure's definition).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use billing_core::Decimal;
use billing_core::business::{BusinessMetrics, Revenue};
use billing_core::money::Money;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::routes::credits::{TallyView, tallies};
use crate::routes::gateway::usage::{UsageQuery, day_range};
use crate::state::ApiState;

/// Recurring revenue in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecurringView {
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Monthly recurring revenue, major units (yearly prices divided by 12).
    pub mrr: String,
    /// Annual recurring revenue, major units.
    pub arr: String,
    /// Paying subscriptions counted.
    pub subscriptions: u64,
}

/// New, reactivated and churned subscriptions in the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct MovementView {
    /// Subscriptions paying when the period began.
    pub paying_at_start: u64,
    /// First subscriptions of their account begun in the period.
    pub new: u64,
    /// Subscriptions begun in the period by accounts whose earlier ones had ended.
    pub reactivated: u64,
    /// Paying subscriptions that ended in the period.
    pub churned: u64,
    /// `churned / paying_at_start`, a decimal string; null when nothing was paying.
    pub churn_rate: Option<String>,
}

/// Trials in the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialsView {
    /// Subscriptions begun with a trial.
    pub started: u64,
    /// Trials that ended (and whose end has passed).
    pub ended: u64,
    /// Of those, the ones still subscribed after the trial.
    pub converted: u64,
    /// `converted / ended`, a decimal string; null when no trial ended.
    pub conversion_rate: Option<String>,
}

/// Payments of one kind in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueView {
    /// `pack` or `invoice`.
    pub kind: String,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// How many.
    pub payments: u64,
    /// Paid, major units.
    pub gross: String,
    /// Refunded of those payments so far, major units.
    pub refunded: String,
    /// Gross less refunded, major units.
    pub net: String,
}

/// A model's use in the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelUseView {
    /// The model id.
    pub model: String,
    /// Calls that charged credits.
    pub calls: u64,
    /// Credits charged.
    pub credits: u64,
    /// Distinct accounts.
    pub accounts: u64,
}

/// One day (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct BusinessDayView {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Credits consumed: debits and captures, less refunds.
    pub consumed: u64,
    /// Debits by catalog action.
    pub by_action: BTreeMap<String, TallyView>,
    /// Gateway calls by model.
    pub by_model: BTreeMap<String, TallyView>,
    /// Credits taken from grants, by the grants' source (`overdraft` for credit lent).
    pub by_source: BTreeMap<String, i64>,
    /// Users created.
    pub signups: u64,
}

/// The business view of a period.
#[derive(Debug, Serialize, ToSchema)]
pub struct BusinessMetricsView {
    /// First day (UTC).
    pub from: String,
    /// Last day (UTC), included.
    pub to: String,
    /// When the figures that describe "now" were taken.
    pub as_of: String,
    /// Recurring revenue by currency, from subscriptions active or past due now.
    pub recurring: Vec<RecurringView>,
    /// Paying subscriptions whose plan and interval the catalog does not price.
    pub unpriced_subscriptions: u64,
    /// Subscriptions not ended, by plan, then status.
    pub subscriptions: BTreeMap<String, BTreeMap<String, u64>>,
    /// Subscription movement in the period.
    pub movement: MovementView,
    /// Trials in the period.
    pub trials: TrialsView,
    /// Payments in the period, by kind and currency.
    pub revenue: Vec<RevenueView>,
    /// Unspent credits of purchased packs now.
    pub liability: u64,
    /// Unspent credits now, by grant source.
    pub outstanding: BTreeMap<String, u64>,
    /// Model use in the period, most called first.
    pub models: Vec<ModelUseView>,
    /// Days with any activity, oldest first.
    pub days: Vec<BusinessDayView>,
}

fn amount(m: Money) -> String {
    m.amount.to_string()
}

fn rate(r: Option<Decimal>) -> Option<String> {
    r.map(|r| r.normalize().to_string())
}

fn revenue(r: &Revenue) -> RevenueView {
    RevenueView {
        kind: r.kind.as_str().to_owned(),
        currency: r.gross.currency.code().to_owned(),
        payments: r.payments,
        gross: amount(r.gross),
        refunded: amount(r.refunded),
        net: amount(r.net),
    }
}

impl BusinessMetricsView {
    fn new(m: BusinessMetrics, from: String, to: String) -> Self {
        Self {
            from,
            to,
            as_of: crate::dto::rfc3339(m.as_of),
            recurring: m
                .recurring
                .iter()
                .map(|r| RecurringView {
                    currency: r.mrr.currency.code().to_owned(),
                    mrr: amount(r.mrr),
                    arr: amount(r.arr),
                    subscriptions: r.subscriptions,
                })
                .collect(),
            unpriced_subscriptions: m.unpriced,
            subscriptions: m
                .by_plan
                .into_iter()
                .map(|(plan, statuses)| {
                    let statuses = statuses
                        .into_iter()
                        .map(|(status, n)| (status.to_owned(), n))
                        .collect();
                    (plan, statuses)
                })
                .collect(),
            movement: MovementView {
                paying_at_start: m.movement.paying_at_start,
                new: m.movement.new,
                reactivated: m.movement.reactivated,
                churned: m.movement.churned,
                churn_rate: rate(m.movement.churn_rate),
            },
            trials: TrialsView {
                started: m.trials.started,
                ended: m.trials.ended,
                converted: m.trials.converted,
                conversion_rate: rate(m.trials.conversion_rate),
            },
            revenue: m.revenue.iter().map(revenue).collect(),
            liability: m.liability,
            outstanding: m
                .outstanding
                .into_iter()
                .map(|(source, credits)| (source.to_owned(), credits))
                .collect(),
            models: m
                .models
                .into_iter()
                .map(|u| ModelUseView {
                    model: u.model,
                    calls: u.calls,
                    credits: u.credits,
                    accounts: u.accounts,
                })
                .collect(),
            days: m
                .days
                .into_iter()
                .map(|d| BusinessDayView {
                    day: d.day.to_string(),
                    consumed: d.consumed,
                    by_action: tallies(d.by_action),
                    by_model: tallies(d.by_model),
                    by_source: d.by_source,
                    signups: d.signups,
                })
                .collect(),
        }
    }
}

/// The business view: recurring revenue, subscriptions by plan and status, movement and
/// churn, trials, revenue, credit liability, consumption per day, model popularity and
/// sign-ups, for the days `from` to `to` (UTC; default the last 30).
#[utoipa::path(get, path = "/v1/admin/metrics", tag = "admin", security(("bearer" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "The figures", body = BusinessMetricsView),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 422, description = "A malformed date", body = Problem),
    ))]
pub async fn business_metrics(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let (from, to, start, end) = day_range(&state, &query)?;
    let metrics = state
        .billing
        .business_metrics(state.reports.as_ref(), start, end)
        .await?;
    Ok(HttpResponse::Ok().json(BusinessMetricsView::new(
        metrics,
        from.to_string(),
        to.to_string(),
    )))
}
