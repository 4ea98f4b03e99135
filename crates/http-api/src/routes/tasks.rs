//! Asynchronous tasks: the owner's routes (create, list, show, cancel), the worker routes
//! (claim, heartbeat, complete, fail; the worker key), and the admin's view of the webhook
//! deliveries that announce finished tasks.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::ids::TaskId;
use billing_core::tasks::{Delivery, DeliveryStatus, Task, TaskEvent, TaskFilter, TaskStatus};
use billing_core::usecases::CreateTask;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::dto::rfc3339;
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Validate, max_chars};
use crate::routes::idempotency_key;
use crate::state::ApiState;

/// A task as its owner and workers see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    /// `tsk_…`.
    pub id: String,
    /// The task type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// What the task was created with.
    #[schema(value_type = Object)]
    pub input: Value,
    /// The result, once succeeded.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Credits held for it.
    pub credits_reserved: u64,
    /// Credits charged in the end (0 when failed or cancelled).
    pub credits_charged: Option<u64>,
    /// Claims so far (the current claim while running).
    pub attempts: u32,
    /// The most claims it gets.
    pub max_attempts: u32,
    /// While running: until when the worker's lease lasts.
    pub lease_until: Option<String>,
    /// When it fails if not finished.
    pub deadline: String,
    /// When it was created.
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        Self {
            id: t.id.to_string(),
            kind: t.kind.clone(),
            status: t.status.as_str().to_owned(),
            input: t.input.clone(),
            output: t.output.clone(),
            error: t.error.clone(),
            credits_reserved: t.reserved,
            credits_charged: t.credits_charged,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            lease_until: t.lease_until.map(rfc3339),
            deadline: rfc3339(t.deadline),
            created_at: rfc3339(t.created_at),
            finished_at: t.finished_at.map(rfc3339),
        }
    }
}

/// One move of a task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskEventView {
    /// When.
    pub at: String,
    /// The state it moved to.
    pub status: String,
    /// The claim it happened in.
    pub attempt: u32,
    /// `user`, `worker:{name}` or `system`.
    pub actor: String,
    /// Why (`lease expired`, `timed out`, a worker's error).
    pub note: Option<String>,
}

impl From<&TaskEvent> for TaskEventView {
    fn from(e: &TaskEvent) -> Self {
        Self {
            at: rfc3339(e.at),
            status: e.status.as_str().to_owned(),
            attempt: e.attempt,
            actor: e.actor.clone(),
            note: e.note.clone(),
        }
    }
}

/// A task with its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    /// The task.
    #[serde(flatten)]
    pub task: TaskView,
    /// Every move, oldest first.
    pub history: Vec<TaskEventView>,
}

/// A page of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    /// Newest first.
    pub items: Vec<TaskView>,
    /// The cursor for the next page (`after`), if there is one.
    pub next: Option<String>,
}

/// A task to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// A task type of the catalog.
    #[serde(rename = "type")]
    #[schema(max_length = 64)]
    pub kind: String,
    /// Its input: a JSON object (an `llm` type fills its prompt's `{{field}}`s from it).
    #[schema(value_type = Object)]
    pub input: Value,
}

impl Validate for CreateTaskRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("type", &self.kind, 64)?;
        if !self.input.is_object() {
            return Err(ApiError::invalid_field("input", "must be a JSON object"));
        }
        Ok(())
    }
}

/// Which tasks to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only in this state.
    pub status: Option<TaskStatusParam>,
    /// Only of this type.
    #[serde(rename = "type")]
    #[param(max_length = 64)]
    pub kind: Option<String>,
    /// Tasks per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^tsk_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}

/// A task state, as a filter.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatusParam {
    /// Waiting for a worker.
    Queued,
    /// A worker holds it.
    Running,
    /// Done and charged.
    Succeeded,
    /// Failed and refunded.
    Failed,
    /// Cancelled and refunded.
    Canceled,
}

impl From<TaskStatusParam> for TaskStatus {
    fn from(s: TaskStatusParam) -> Self {
        match s {
            TaskStatusParam::Queued => Self::Queued,
            TaskStatusParam::Running => Self::Running,
            TaskStatusParam::Succeeded => Self::Succeeded,
            TaskStatusParam::Failed => Self::Failed,
            TaskStatusParam::Canceled => Self::Canceled,
        }
    }
}

fn task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse().map_err(|_| ApiError::not_found("task"))
}

/// Creates a task and holds its price in one step; answers at once with its id (poll
/// `GET /v1/tasks/{task_id}`, or hear the webhook). With an `Idempotency-Key`, the same key
/// again answers the first task (`Idempotent-Replayed: true`) and creates nothing.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])),
    request_body = CreateTaskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 201, description = "Queued, its credits held", body = TaskView),
        (status = 200, description = "A replay: the task the key created", body = TaskView),
        (status = 402, description = "Not enough credits; `balance` and `required` say how many", body = Problem),
        (status = 403, description = "The plan does not include the task type's feature or model", body = Problem),
        (status = 409, description = "The Idempotency-Key was used with another task", body = Problem),
        (status = 422, description = "Unknown type, or an input the type cannot use", body = Problem),
    ))]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<CreateTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let client_key = match req.headers().contains_key("idempotency-key") {
        true => Some(idempotency_key(&req, &state)?),
        false => None,
    };
    let body = body.into_inner();
    let (task, replayed) = state
        .tasks
        .create(
            CreateTask {
                account: account.clone(),
                kind: body.kind,
                input: body.input,
                idempotency_key: client_key,
            },
            state.llm.as_ref(),
        )
        .await?;
    let view = TaskView::from(&task);
    if replayed {
        return Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(view));
    }
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/tasks/{}", task.id)))
        .json(view))
}

/// The caller's tasks, newest first, optionally of one state or type.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])),
    params(TaskQuery),
    responses(
        (status = 200, description = "A page of tasks", body = TaskPage),
        (status = 422, description = "An unknown type or status, or a bad cursor", body = Problem),
    ))]
pub async fn list(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<TaskQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let query = query.into_inner();
    if let Some(kind) = &query.kind {
        max_chars("type", kind, 64)?;
        state.tasks.task_type(kind)?;
    }
    let page = crate::routes::page(query.limit, query.after, "tsk")?;
    let filter = TaskFilter {
        status: query.status.map(Into::into),
        kind: query.kind,
    };
    let page = state.tasks.list(account, filter, page).await?;
    Ok(HttpResponse::Ok().json(TaskPage {
        items: page.items.iter().map(TaskView::from).collect(),
        next: page.next,
    }))
}

/// One of the caller's tasks with its history (another account's is 404).
#[utoipa::path(get, path = "/v1/tasks/{task_id}", tag = "tasks", security(("bearer" = [])),
    params(("task_id" = String, Path, description = "`tsk_…`")),
    responses(
        (status = 200, description = "The task and every move it made", body = TaskDetail),
        (status = 404, description = "No such task of the caller's", body = Problem),
    ))]
pub async fn get(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let id = task_id(&path)?;
    let (task, events) = state.tasks.get_with_history(account, &id).await?;
    Ok(HttpResponse::Ok().json(TaskDetail {
        task: TaskView::from(&task),
        history: events.iter().map(TaskEventView::from).collect(),
    }))
}

/// Cancels a queued or running task: its hold returns in full. Cancelling it again answers
/// it as it is; a task that already succeeded or failed is 409.
#[utoipa::path(post, path = "/v1/tasks/{task_id}/cancel", tag = "tasks", security(("bearer" = [])),
    params(("task_id" = String, Path, description = "`tsk_…`")),
    responses(
        (status = 200, description = "Cancelled, refunded", body = TaskView),
        (status = 404, description = "No such task of the caller's", body = Problem),
        (status = 409, description = "It ended already (`task_state`)", body = Problem),
    ))]
pub async fn cancel(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let id = task_id(&path)?;
    let task = state.tasks.cancel(account, &id).await?;
    Ok(HttpResponse::Ok().json(TaskView::from(&task)))
}

/// A worker's request for tasks.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Who the worker is (its history names it), 1–64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub worker: String,
    /// Task types it runs (every `external` type if omitted).
    #[serde(default, rename = "types")]
    pub kinds: Vec<String>,
    /// The most tasks to take, 1–100 (default 1).
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The lease in seconds, 1–3600 (default: the shortest of the types').
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_seconds: Option<u32>,
}

impl Validate for ClaimBody {
    fn validate(&self) -> Result<(), ApiError> {
        if self.worker.trim().is_empty() {
            return Err(ApiError::invalid_field("worker", "must not be empty"));
        }
        max_chars("worker", &self.worker, 64)?;
        for (i, kind) in self.kinds.iter().enumerate() {
            max_chars(&format!("types[{i}]"), kind, 64)?;
        }
        if self.kinds.len() > 50 {
            return Err(ApiError::invalid_field("types", "at most 50"));
        }
        if matches!(self.limit, Some(0) | Some(101..)) {
            return Err(ApiError::invalid_field("limit", "must be 1 to 100"));
        }
        Ok(())
    }
}

/// Claimed tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedTasks {
    /// Each with its `attempts`: the claim number to send back with heartbeat, complete or
    /// fail. Empty when the queue has nothing for the worker.
    pub tasks: Vec<TaskView>,
}

/// Claims queued tasks for an external worker, each leased (`lease_until`); a lease that
/// runs out puts the task back in the queue (at most `max_attempts` claims in all).
#[utoipa::path(post, path = "/v1/worker/tasks/claim", tag = "workers", security(("bearer" = [])),
    request_body = ClaimBody,
    responses(
        (status = 200, description = "The tasks claimed (maybe none)", body = ClaimedTasks),
        (status = 403, description = "Not the worker key", body = Problem),
        (status = 422, description = "An unknown type", body = Problem),
    ))]
pub async fn claim(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<ClaimBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require_worker()?;
    let body = body.into_inner();
    let tasks = state
        .tasks
        .claim(
            body.worker.trim(),
            body.kinds,
            body.limit.unwrap_or(1),
            body.lease_seconds,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ClaimedTasks {
        tasks: tasks.iter().map(TaskView::from).collect(),
    }))
}

/// A worker's heartbeat.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// The claim (the task's `attempts` when claimed).
    pub attempt: u32,
    /// The new lease from now, in seconds, 1–3600 (default: the type's).
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_seconds: Option<u32>,
}

impl Validate for HeartbeatBody {
    fn validate(&self) -> Result<(), ApiError> {
        if matches!(self.lease_seconds, Some(0) | Some(3601..)) {
            return Err(ApiError::invalid_field(
                "lease_seconds",
                "must be 1 to 3600",
            ));
        }
        Ok(())
    }
}

/// Extends the lease of a task the worker holds.
#[utoipa::path(post, path = "/v1/worker/tasks/{task_id}/heartbeat", tag = "workers", security(("bearer" = [])),
    params(("task_id" = String, Path, description = "`tsk_…`")),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The lease extended", body = TaskView),
        (status = 409, description = "The worker no longer holds it (`task_state`)", body = Problem),
    ))]
pub async fn heartbeat(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<HeartbeatBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require_worker()?;
    let id = task_id(&path)?;
    let task = state
        .tasks
        .heartbeat(&id, body.attempt, body.lease_seconds)
        .await?;
    Ok(HttpResponse::Ok().json(TaskView::from(&task)))
}

/// A worker's success.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// The claim (the task's `attempts` when claimed).
    pub attempt: u32,
    /// The result (any JSON).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub output: Value,
    /// The actual cost in credits, at most the hold (the whole hold if omitted).
    pub cost: Option<u64>,
}

impl Validate for CompleteBody {}

/// Completes a task: its hold is captured for `cost` (at most the hold) and the rest
/// returns. Repeating it answers the task; a task cancelled, timed out or claimed again
/// meanwhile is 409 and charged nothing.
#[utoipa::path(post, path = "/v1/worker/tasks/{task_id}/complete", tag = "workers", security(("bearer" = [])),
    params(("task_id" = String, Path, description = "`tsk_…`")),
    request_body = CompleteBody,
    responses(
        (status = 200, description = "Succeeded and charged", body = TaskView),
        (status = 409, description = "The worker no longer holds it (`task_state`)", body = Problem),
        (status = 422, description = "A cost above the hold", body = Problem),
    ))]
pub async fn complete(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<CompleteBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require_worker()?;
    let id = task_id(&path)?;
    let body = body.into_inner();
    let task = state
        .tasks
        .complete(&id, body.attempt, body.output, body.cost, "worker")
        .await?;
    Ok(HttpResponse::Ok().json(TaskView::from(&task)))
}

/// A worker's failure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    /// The claim (the task's `attempts` when claimed).
    pub attempt: u32,
    /// Why, for the owner (at most 2,000 characters).
    #[schema(max_length = 2000)]
    pub error: String,
    /// Put it back in the queue if attempts remain (default: fail for good).
    #[serde(default)]
    pub retry: bool,
}

impl Validate for FailBody {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("error", &self.error, 2000)
    }
}

/// Fails a task: with `retry` and attempts left it goes back to the queue; otherwise it
/// fails and its hold returns in full.
#[utoipa::path(post, path = "/v1/worker/tasks/{task_id}/fail", tag = "workers", security(("bearer" = [])),
    params(("task_id" = String, Path, description = "`tsk_…`")),
    request_body = FailBody,
    responses(
        (status = 200, description = "Failed and refunded, or queued again", body = TaskView),
        (status = 409, description = "The worker no longer holds it (`task_state`)", body = Problem),
    ))]
pub async fn fail(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<FailBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require_worker()?;
    let id = task_id(&path)?;
    let task = state
        .tasks
        .fail(&id, body.attempt, &body.error, body.retry, "worker")
        .await?;
    Ok(HttpResponse::Ok().json(TaskView::from(&task)))
}

/// A webhook delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// `dlv_…`, also the event's id (receivers deduplicate by it).
    pub id: String,
    /// The task.
    pub task_id: String,
    /// `task.succeeded`, `task.failed` or `task.canceled`.
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// While pending: when the next attempt is due.
    pub next_attempt_at: Option<String>,
    /// The endpoint's last HTTP status.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: String,
    /// When it was delivered.
    pub delivered_at: Option<String>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id.clone(),
            task_id: d.task.to_string(),
            event: d.event.clone(),
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| rfc3339(d.next_attempt_at)),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliveryView>,
    /// The cursor for the next page.
    pub next: Option<String>,
}

/// Which deliveries to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only of this task.
    #[param(pattern = "^tsk_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub task_id: Option<String>,
    /// Only in this state: `pending`, `delivered`, `failed`.
    pub status: Option<DeliveryStatusParam>,
    /// Per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^dlv_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}

/// A delivery state, as a filter.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatusParam {
    /// Not delivered yet.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up.
    Failed,
}

/// The webhook deliveries announcing finished tasks, newest first (admins).
#[utoipa::path(get, path = "/v1/admin/task-deliveries", tag = "admin", security(("bearer" = [])),
    params(DeliveryQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 403, description = "Not an admin", body = Problem),
    ))]
pub async fn deliveries(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let query = query.into_inner();
    let task = match &query.task_id {
        Some(text) => Some(text.parse::<TaskId>().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_query",
                "Invalid query",
                "`task_id` must be a task id (`tsk_…`)",
            )
            .with("field", "task_id")
        })?),
        None => None,
    };
    let status = query.status.map(|s| match s {
        DeliveryStatusParam::Pending => DeliveryStatus::Pending,
        DeliveryStatusParam::Delivered => DeliveryStatus::Delivered,
        DeliveryStatusParam::Failed => DeliveryStatus::Failed,
    });
    let page = crate::routes::page(query.limit, query.after, "dlv")?;
    let page = state.tasks.store.deliveries(task, status, page).await?;
    Ok(HttpResponse::Ok().json(DeliveryPage {
        items: page.items.iter().map(DeliveryView::from).collect(),
        next: page.next,
    }))
}
