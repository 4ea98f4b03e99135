//! Asynchronous tasks on the ledger: [`Tasks::create`] holds the price with the task in one
//! transaction; a worker claims it (Tollgate's own for `llm` tasks, the product's over HTTP
//! for `external` ones), then completes (capture) or fails (void, or back to the queue while
//! attempts remain); the owner may cancel (void); [`Tasks::sweep`] requeues tasks whose
//! lease ran out and fails those past their deadline. Every move is a conditional
//! [`TaskChange`], so of two racing movers one wins and the ledger moves once.

use std::sync::Arc;

use serde_json::json;
use time::Duration;

use super::{Billing, BillingError, key};
use crate::catalog::{TaskRun, TaskType};
use crate::entitlements::{feature_denial, model_denial};
use crate::gateway::{self, CallOutcome, LlmCall};
use crate::ids::{AccountId, CallId, DeliveryId, PrefixedId, TaskId};
use crate::ledger::{
    Credits, Fingerprint, LedgerCommand, LedgerError, LedgerPolicy, LedgerRequest,
};
use crate::ports::{
    ChatMessage, ChatRequest, ClaimRequest, LlmError, LlmRouter, NewTask, TaskChange, TaskCreated,
    TaskMoved, TaskStore, TokenCounter, UsageStore,
};
use crate::records::{Page, PageRequest};
use crate::tasks::{Task, TaskEvent, TaskFilter, TaskStatus, render_prompt};

/// How long a task's hold outlives its deadline: the sweeper fails a late task (voiding
/// the hold) well before the hold could lapse by itself.
pub const HOLD_GRACE: Duration = Duration::hours(1);

/// The longest lease a worker may ask for.
pub const MAX_LEASE_SECONDS: u32 = 3_600;

/// A task to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTask {
    /// Who pays.
    pub account: AccountId,
    /// The task type.
    pub kind: String,
    /// The input (a JSON object).
    pub input: serde_json::Value,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskSweep {
    /// Tasks put back in the queue after their lease ran out.
    pub requeued: usize,
    /// Tasks failed (and refunded): past their deadline, or out of attempts.
    pub failed: usize,
}

/// The task use cases.
#[derive(Clone)]
pub struct Tasks {
    /// The billing use cases (catalog, accounts, ledger, clock, ids).
    pub billing: Billing,
    /// Where tasks are kept.
    pub store: Arc<dyn TaskStore>,
    /// Whether finished tasks are announced by webhook (an endpoint is configured).
    pub notify: bool,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("notify", &self.notify)
            .finish_non_exhaustive()
    }
}

fn lost(task: &Task) -> BillingError {
    BillingError::TaskState {
        status: task.status,
        attempt: task.attempts,
    }
}

impl Tasks {
    /// A task type of the catalog.
    pub fn task_type(&self, kind: &str) -> Result<&TaskType, BillingError> {
        self.billing
            .catalog
            .tasks
            .get(kind)
            .ok_or_else(|| BillingError::UnknownTaskType(kind.to_owned()))
    }

    /// Creates a task and holds its price in one transaction. Refusals, with nothing
    /// created: `UnknownTaskType`, `Invalid` (input), `NotEntitled` (feature or model outside
    /// the plan), `Ledger(InsufficientCredits)`, `IdempotencyConflict`. The same key again
    /// returns the first task (`true`: a replay).
    pub async fn create(
        &self,
        request: CreateTask,
        tokens: &dyn TokenCounter,
    ) -> Result<(Task, bool), BillingError> {
        let billing = &self.billing;
        let kind = self.task_type(&request.kind)?;
        if !request.input.is_object() {
            return Err(BillingError::Invalid {
                field: "input",
                message: "must be a JSON object".into(),
            });
        }
        let account = billing.account(&request.account).await?;
        let subscription = billing.subscriptions.current(&request.account).await?;
        let sub = subscription.as_ref().map(|s| (s.plan.as_str(), s.status));
        let catalog = &billing.catalog;
        let features = kind.feature.iter().map(String::as_str).chain(
            kind.action
                .as_deref()
                .and_then(|a| catalog.action_feature(a)),
        );
        for feature in features {
            if let Some(denial) = feature_denial(catalog, &account.plan, sub, feature) {
                return Err(BillingError::NotEntitled(denial));
            }
        }
        let plan = billing.plan_of(&account)?;
        let reserved = match (&kind.action, kind.run) {
            (Some(action), _) => catalog
                .action_cost(action)
                .ok_or_else(|| BillingError::UnknownAction(action.clone()))?,
            (None, TaskRun::Llm) => {
                let (model_id, model, request_to_send) = self.llm_request(kind, &request.input)?;
                if let Some(denial) = model_denial(catalog, &account.plan, sub, model_id) {
                    return Err(BillingError::NotEntitled(denial));
                }
                let cap =
                    gateway::output_cap(kind.max_output_tokens, plan.max_output_tokens, model);
                let bound = gateway::input_token_bound(&request_to_send.messages, |text| {
                    tokens.count_tokens(model, text)
                });
                gateway::credits(
                    catalog,
                    &account.plan,
                    model,
                    gateway::worst_case(bound, cap),
                )
                .ok_or_else(|| BillingError::UnpricedModel(model_id.to_owned()))?
                .max(1)
            }
            (None, TaskRun::External) => {
                return Err(BillingError::UnknownAction(format!(
                    "(none for task type `{}`)",
                    request.kind
                )));
            }
        };
        if kind.run == TaskRun::Llm && kind.action.is_some() {
            // Priced by its action, but still the model must be one the plan allows and the
            // input must fill the prompt.
            let (model_id, _, _) = self.llm_request(kind, &request.input)?;
            if let Some(denial) = model_denial(catalog, &account.plan, sub, model_id) {
                return Err(BillingError::NotEntitled(denial));
            }
        }
        let id = TaskId::from_ulid(billing.ids.ulid());
        let now = billing.clock.now();
        let deadline = now + Duration::seconds(i64::from(kind.timeout_seconds));
        let ledger_key = match &request.idempotency_key {
            Some(client) => format!("task:{client}"),
            None => format!("task:{id}"),
        };
        let hold = LedgerRequest {
            account: request.account.clone(),
            key: key(ledger_key)?,
            command: LedgerCommand::Reserve {
                amount: reserved,
                expires_at: deadline + HOLD_GRACE,
                reference: Some(id.to_string()),
                memo: Some(format!("`{}` task", request.kind)),
            },
            policy: LedgerPolicy {
                overdraft_limit: plan.overdraft,
            },
            intent: Some(Fingerprint::of(&("task", &request.kind, &request.input))),
        };
        let task = Task {
            id,
            account: request.account,
            kind: request.kind,
            status: TaskStatus::Queued,
            input: request.input,
            output: None,
            error: None,
            hold: None,
            reserved,
            credits_charged: None,
            attempts: 0,
            max_attempts: kind.max_attempts,
            lease_until: None,
            deadline,
            created_at: now,
            finished_at: None,
        };
        match self
            .store
            .create(NewTask {
                task,
                hold,
                actor: "user".into(),
            })
            .await?
        {
            TaskCreated::Created(task) => Ok((task, false)),
            TaskCreated::Replayed(task) => Ok((task, true)),
            TaskCreated::Refused(error) => Err(BillingError::Ledger(error)),
            TaskCreated::Conflict => Err(BillingError::IdempotencyConflict),
        }
    }

    /// The model and the request an `llm` task sends.
    fn llm_request<'a>(
        &'a self,
        kind: &'a TaskType,
        input: &serde_json::Value,
    ) -> Result<(&'a str, &'a crate::catalog::Model, ChatRequest), BillingError> {
        let catalog = &self.billing.catalog;
        let model_id = kind.model.as_deref().unwrap_or_default();
        let model = catalog
            .models
            .get(model_id)
            .ok_or_else(|| BillingError::UnknownModel(model_id.to_owned()))?;
        let prompt = render_prompt(kind.prompt.as_deref().unwrap_or_default(), input).map_err(
            |message| BillingError::Invalid {
                field: "input",
                message,
            },
        )?;
        let cap = gateway::output_cap(kind.max_output_tokens, None, model);
        Ok((
            model_id,
            model,
            ChatRequest {
                upstream_model: model.upstream.clone(),
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: prompt,
                }],
                max_output_tokens: cap,
            },
        ))
    }

    /// A task of `account` (another account's is `TaskNotFound`, as if it did not exist).
    pub async fn get(&self, account: &AccountId, id: &TaskId) -> Result<Task, BillingError> {
        match self.store.get(id).await? {
            Some(task) if &task.account == account => Ok(task),
            _ => Err(BillingError::TaskNotFound),
        }
    }

    /// A task of `account` with its history.
    pub async fn get_with_history(
        &self,
        account: &AccountId,
        id: &TaskId,
    ) -> Result<(Task, Vec<TaskEvent>), BillingError> {
        let task = self.get(account, id).await?;
        let events = self.store.events(id).await?;
        Ok((task, events))
    }

    /// An account's tasks, newest first.
    pub async fn list(
        &self,
        account: &AccountId,
        filter: TaskFilter,
        page: PageRequest,
    ) -> Result<Page<Task>, BillingError> {
        Ok(self.store.list(account, filter, page).await?)
    }

    fn delivery(&self) -> Option<String> {
        self.notify
            .then(|| DeliveryId::from_ulid(self.billing.ids.ulid()).to_string())
    }

    fn settle(&self, task: &Task, charge: Credits) -> Result<Option<LedgerRequest>, BillingError> {
        let Some(hold) = task.hold.clone() else {
            return Ok(None);
        };
        let command = if charge == 0 {
            LedgerCommand::Void {
                hold,
                memo: Some(format!("`{}` task: nothing charged", task.kind)),
            }
        } else {
            LedgerCommand::Capture {
                hold,
                amount: charge,
                memo: Some(format!("`{}` task", task.kind)),
            }
        };
        Ok(Some(LedgerRequest {
            account: task.account.clone(),
            key: key(format!("task:{}:settle", task.id))?,
            command,
            policy: LedgerPolicy::default(),
            intent: None,
        }))
    }

    fn change(&self, task: &Task, to: TaskStatus) -> TaskChange {
        TaskChange {
            task: task.id.clone(),
            from: vec![task.status],
            attempt: Some(task.attempts),
            to,
            output: None,
            error: None,
            credits_charged: None,
            actor: "system".into(),
            note: None,
            settle: None,
            delivery: None,
            now: self.billing.clock.now(),
        }
    }

    /// The owner cancels: a queued or running task ends and its hold is voided. Cancelling
    /// a cancelled task again answers it as it is; a task that ended otherwise is
    /// `TaskState`.
    pub async fn cancel(&self, account: &AccountId, id: &TaskId) -> Result<Task, BillingError> {
        let task = self.get(account, id).await?;
        if task.status == TaskStatus::Canceled {
            return Ok(task);
        }
        if task.status.is_final() {
            return Err(lost(&task));
        }
        let mut change = self.change(&task, TaskStatus::Canceled);
        change.from = vec![TaskStatus::Queued, TaskStatus::Running];
        change.attempt = None;
        change.credits_charged = Some(0);
        change.actor = "user".into();
        change.settle = self.settle(&task, 0)?;
        change.delivery = self.delivery();
        match self.store.change(change).await? {
            TaskMoved::Moved(task) => Ok(task),
            TaskMoved::Stale(now) if now.status == TaskStatus::Canceled => Ok(now),
            TaskMoved::Stale(now) => Err(lost(&now)),
            TaskMoved::Refused(_, error) => Err(BillingError::Ledger(error)),
            TaskMoved::NotFound => Err(BillingError::TaskNotFound),
        }
    }

    /// A worker claims up to `limit` queued tasks of `kinds` (every `external` type if
    /// empty), each leased for `lease_seconds` (else the shortest lease of the types).
    pub async fn claim(
        &self,
        worker: &str,
        kinds: Vec<String>,
        limit: u32,
        lease_seconds: Option<u32>,
    ) -> Result<Vec<Task>, BillingError> {
        let catalog = &self.billing.catalog;
        let kinds = if kinds.is_empty() {
            catalog
                .tasks
                .iter()
                .filter(|(_, t)| t.run == TaskRun::External)
                .map(|(id, _)| id.clone())
                .collect()
        } else {
            kinds
        };
        let mut shortest = MAX_LEASE_SECONDS;
        for kind in &kinds {
            shortest = shortest.min(self.task_type(kind)?.lease_seconds);
        }
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let lease = match lease_seconds {
            Some(s @ 1..=MAX_LEASE_SECONDS) => s,
            Some(_) => {
                return Err(BillingError::Invalid {
                    field: "lease_seconds",
                    message: format!("must be 1 to {MAX_LEASE_SECONDS}"),
                });
            }
            None => shortest,
        };
        let now = self.billing.clock.now();
        Ok(self
            .store
            .claim_tasks(ClaimRequest {
                kinds,
                worker: worker.to_owned(),
                limit: limit.clamp(1, 100),
                lease_until: now + Duration::seconds(i64::from(lease)),
                now,
            })
            .await?)
    }

    /// Extends the lease of a task the worker holds in claim `attempt`.
    pub async fn heartbeat(
        &self,
        id: &TaskId,
        attempt: u32,
        lease_seconds: Option<u32>,
    ) -> Result<Task, BillingError> {
        let task = self
            .store
            .get(id)
            .await?
            .ok_or(BillingError::TaskNotFound)?;
        let lease = lease_seconds
            .unwrap_or(self.task_type(&task.kind)?.lease_seconds)
            .clamp(1, MAX_LEASE_SECONDS);
        let until = self.billing.clock.now() + Duration::seconds(i64::from(lease));
        match self.store.heartbeat(id, attempt, until).await? {
            Some(task) => Ok(task),
            None => Err(lost(&task)),
        }
    }

    /// The worker of claim `attempt` reports success: the hold is captured for `cost`
    /// (the whole hold if `None`; at most the hold) and the rest returns. Repeating a
    /// completion that succeeded answers the task; a task no longer in that claim
    /// (cancelled, timed out, claimed again) is `TaskState`.
    pub async fn complete(
        &self,
        id: &TaskId,
        attempt: u32,
        output: serde_json::Value,
        cost: Option<Credits>,
        actor: &str,
    ) -> Result<Task, BillingError> {
        let task = self
            .store
            .get(id)
            .await?
            .ok_or(BillingError::TaskNotFound)?;
        if task.status == TaskStatus::Succeeded && task.attempts == attempt {
            return Ok(task);
        }
        let charge = cost.unwrap_or(task.reserved);
        if charge > task.reserved {
            return Err(BillingError::Invalid {
                field: "cost",
                message: format!("must be at most the {} credits held", task.reserved),
            });
        }
        let mut change = self.change(&task, TaskStatus::Succeeded);
        change.from = vec![TaskStatus::Running];
        change.attempt = Some(attempt);
        change.output = Some(output);
        change.credits_charged = Some(charge);
        change.actor = actor.to_owned();
        change.settle = self.settle(&task, charge)?;
        change.delivery = self.delivery();
        match self.store.change(change.clone()).await? {
            TaskMoved::Moved(task) => Ok(task),
            TaskMoved::Stale(now)
                if now.status == TaskStatus::Succeeded && now.attempts == attempt =>
            {
                Ok(now)
            }
            TaskMoved::Stale(now) => Err(lost(&now)),
            TaskMoved::Refused(_, LedgerError::HoldNotPending { .. }) => {
                // The hold lapsed (the task outran its deadline and grace): the work is
                // done but can no longer be charged; record it so.
                change.settle = None;
                change.credits_charged = Some(0);
                change.note = Some("the hold had lapsed: not charged".into());
                match self.store.change(change).await? {
                    TaskMoved::Moved(task) => Ok(task),
                    TaskMoved::Stale(now) | TaskMoved::Refused(now, _) => Err(lost(&now)),
                    TaskMoved::NotFound => Err(BillingError::TaskNotFound),
                }
            }
            TaskMoved::Refused(_, error) => Err(BillingError::Ledger(error)),
            TaskMoved::NotFound => Err(BillingError::TaskNotFound),
        }
    }

    /// The worker of claim `attempt` reports failure. With `retry`, while attempts remain
    /// and the deadline is ahead, the task goes back to the queue; otherwise it fails and
    /// its hold is voided.
    pub async fn fail(
        &self,
        id: &TaskId,
        attempt: u32,
        error: &str,
        retry: bool,
        actor: &str,
    ) -> Result<Task, BillingError> {
        let task = self
            .store
            .get(id)
            .await?
            .ok_or(BillingError::TaskNotFound)?;
        if task.status == TaskStatus::Failed && task.attempts == attempt {
            return Ok(task);
        }
        let now = self.billing.clock.now();
        let again = retry && task.attempts < task.max_attempts && now < task.deadline;
        let mut change = self.end(&task, again, error)?;
        change.from = vec![TaskStatus::Running];
        change.attempt = Some(attempt);
        change.actor = actor.to_owned();
        self.apply(change).await
    }

    /// The change that requeues a task or fails it (voiding its hold).
    fn end(&self, task: &Task, requeue: bool, why: &str) -> Result<TaskChange, BillingError> {
        let mut change = if requeue {
            self.change(task, TaskStatus::Queued)
        } else {
            let mut change = self.change(task, TaskStatus::Failed);
            change.error = Some(why.to_owned());
            change.credits_charged = Some(0);
            change.settle = self.settle(task, 0)?;
            change.delivery = self.delivery();
            change
        };
        change.note = Some(why.to_owned());
        Ok(change)
    }

    async fn apply(&self, change: TaskChange) -> Result<Task, BillingError> {
        match self.store.change(change).await? {
            TaskMoved::Moved(task) => Ok(task),
            TaskMoved::Stale(now) => Err(lost(&now)),
            TaskMoved::Refused(_, error) => Err(BillingError::Ledger(error)),
            TaskMoved::NotFound => Err(BillingError::TaskNotFound),
        }
    }

    /// Requeues running tasks whose lease ran out (while attempts remain) and fails, with a
    /// refund, tasks past their deadline or out of attempts. Safe to run anywhere at once:
    /// each move is conditional, so a task another sweeper or its worker moved first is
    /// skipped.
    pub async fn sweep(&self) -> Result<TaskSweep, BillingError> {
        let mut report = TaskSweep::default();
        let now = self.billing.clock.now();
        let mut after = None;
        loop {
            let due = self.store.due_tasks(now, after.clone(), 200).await?;
            let Some(last) = due.last() else {
                return Ok(report);
            };
            after = Some(last.id.clone());
            for task in due {
                let (requeue, why) = if now >= task.deadline {
                    (false, "timed out".to_owned())
                } else if task.attempts < task.max_attempts {
                    (true, "lease expired".to_owned())
                } else {
                    (
                        false,
                        format!("lease expired; no attempts left ({})", task.attempts),
                    )
                };
                match self.apply(self.end(&task, requeue, &why)?).await {
                    Ok(_) if requeue => report.requeued += 1,
                    Ok(_) => report.failed += 1,
                    // Moved meanwhile by its worker, its owner or another sweeper.
                    Err(BillingError::TaskState { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
        }
    }

    /// Runs a claimed `llm` task: one call of its model, charged its exact cost (or its
    /// action's price), at most the hold. A provider that is rate limiting or failing sends
    /// the task back to the queue while attempts remain; a refusal fails it.
    pub async fn run_llm(
        &self,
        task: &Task,
        worker: &str,
        router: &dyn LlmRouter,
        usage: &dyn UsageStore,
    ) -> Result<Task, BillingError> {
        let kind = self.task_type(&task.kind)?;
        let (model_id, model, request) = match self.llm_request(kind, &task.input) {
            Ok(found) => found,
            Err(err) => {
                return self
                    .fail(&task.id, task.attempts, &err.to_string(), false, worker)
                    .await;
            }
        };
        let provider = router.route(model.provider);
        let started = self.billing.clock.now();
        let answer = provider.chat(request).await;
        let finished = self.billing.clock.now();
        let response = match answer {
            Ok(response) => response,
            Err(err) => {
                let retry = matches!(err, LlmError::RateLimited { .. } | LlmError::Unavailable(_));
                return self
                    .fail(&task.id, task.attempts, &err.to_string(), retry, worker)
                    .await;
            }
        };
        let account = self.billing.account(&task.account).await?;
        let charge = match &kind.action {
            Some(_) => task.reserved,
            None => gateway::credits(&self.billing.catalog, &account.plan, model, response.usage)
                .unwrap_or(task.reserved)
                .min(task.reserved),
        };
        let output = json!({
            "content": response.content,
            "model": model_id,
            "finish_reason": response.finish_reason,
            "usage": response.usage,
        });
        let done = self
            .complete(&task.id, task.attempts, output, Some(charge), worker)
            .await?;
        let call = LlmCall {
            id: CallId::from_ulid(self.billing.ids.ulid()).to_string(),
            account: task.account.clone(),
            api_key: None,
            model: model_id.to_owned(),
            provider: provider.name().to_owned(),
            usage: response.usage,
            cost_micros: gateway::cost_micros(model, response.usage, &self.billing.catalog),
            currency: model.currency.unwrap_or(self.billing.catalog.currency),
            credits: done.credits_charged.unwrap_or(0),
            latency_ms: u64::try_from((finished - started).whole_milliseconds()).unwrap_or(0),
            outcome: CallOutcome::Ok,
            created_at: started,
        };
        usage.record_call(&call).await?;
        Ok(done)
    }
}
