//! `GET /v1/admin/jobs`: which instance ran each period of the scheduled jobs, and how much
//! waits in the background queues.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::dto::rfc3339;
use crate::error::{ApiError, Problem};
use crate::state::ApiState;

/// Query of the job runs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// One job's runs only (`expire_holds`, `renew_allowances`, `apply_payment_events`,
    /// `sweep_tasks`, `prune_idempotency`).
    #[param(max_length = 64)]
    pub job: Option<String>,
    /// How many runs, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// One period of a scheduled job, run by one instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobRunView {
    /// The job.
    pub job: String,
    /// RFC 3339: when the period it ran for began.
    pub period_start: String,
    /// The instance that claimed the period (host and process).
    pub instance: String,
    /// RFC 3339: when it started.
    pub started_at: String,
}

/// A background queue's backlog.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// `tasks`, `task_webhooks` or `payment_events`.
    pub queue: String,
    /// Items waiting.
    pub depth: u64,
    /// RFC 3339: when the oldest waiting item arrived; null when none waits.
    pub oldest_at: Option<String>,
}

/// Recent job runs and the queues.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobsView {
    /// The most recent runs, newest period first.
    pub runs: Vec<JobRunView>,
    /// Every background queue.
    pub queues: Vec<QueueView>,
}

/// The scheduled jobs' recent runs (each period is run by one instance across all of them)
/// and the depth and lag of the background queues.
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "admin", security(("bearer" = [])),
    params(JobQuery),
    responses(
        (status = 200, description = "Runs and queues", body = JobsView),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 422, description = "A limit outside 1–200 or a job name too long", body = Problem),
    ))]
pub async fn jobs(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<JobQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let query = query.into_inner();
    crate::extract::max_chars_opt("job", query.job.as_ref(), 64)?;
    let limit = crate::routes::page(query.limit, None, "job")?.limit;
    let runs = state.jobs.recent_runs(query.job, limit).await?;
    let queues = state.jobs.queues().await?;
    Ok(HttpResponse::Ok().json(JobsView {
        runs: runs
            .into_iter()
            .map(|r| JobRunView {
                job: r.job,
                period_start: rfc3339(r.period),
                instance: r.instance,
                started_at: rfc3339(r.started_at),
            })
            .collect(),
        queues: queues
            .into_iter()
            .map(|q| QueueView {
                queue: q.queue,
                depth: q.depth,
                oldest_at: q.oldest.map(rfc3339),
            })
            .collect(),
    }))
}
