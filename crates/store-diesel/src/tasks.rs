//! The task queue: the [`TaskStore`] port.
//!
//! Creating a task runs its hold ([`ledger_execute`](crate::sql::pg::ledger_execute)) and the
//! insert in one transaction. A claim picks the oldest queued rows of the asked types
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent claimers take different rows
//! without waiting; on SQLite the single writer's `BEGIN IMMEDIATE`) and leases them in the
//! same transaction. A change is an `UPDATE … WHERE status IN (…) AND attempts = …` with the
//! ledger operation after it in the same transaction: the row lock the update takes makes a
//! concurrent change wait and then find the row moved, so exactly one mover wins.

use async_trait::async_trait;
use billing_core::ids::{AccountId, PrefixedId, TaskId};
use billing_core::ports::{
    ClaimRequest, NewTask, StoreError, TaskChange, TaskCreated, TaskMoved, TaskStore,
};
use billing_core::records::{Page, PageRequest};
use billing_core::tasks::{Delivery, DeliveryStatus, Task, TaskEvent, TaskFilter};
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::db::{TxError, credits, from_ts, parse_enum, parse_id, signed, ts, tx_error};
use crate::schema::{task_deliveries, task_events, tasks};
use crate::sql::{call, transaction_call};
use crate::store::{DieselStore, page_limit, paged};

fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

fn json_value(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(format!("corrupt JSON: {e}")))
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn uint(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tasks, treat_none_as_default_value = false)]
pub(crate) struct TaskRow {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub status: String,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub hold_id: Option<String>,
    pub reserved: i64,
    pub credits_charged: Option<i64>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_until: Option<i64>,
    pub deadline: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl TaskRow {
    fn from_domain(t: &Task) -> Self {
        Self {
            id: t.id.to_string(),
            account_id: t.account.to_string(),
            kind: t.kind.clone(),
            status: t.status.as_str().to_owned(),
            input: json_text(&t.input),
            output: t.output.as_ref().map(json_text),
            error: t.error.clone(),
            hold_id: t.hold.as_ref().map(ToString::to_string),
            reserved: signed(t.reserved),
            credits_charged: t.credits_charged.map(signed),
            attempts: int(t.attempts),
            max_attempts: int(t.max_attempts),
            lease_until: t.lease_until.map(ts),
            deadline: ts(t.deadline),
            created_at: ts(t.created_at),
            finished_at: t.finished_at.map(ts),
        }
    }

    fn into_domain(self) -> Result<Task, StoreError> {
        Ok(Task {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            kind: self.kind,
            status: parse_enum(&self.status)?,
            input: json_value(&self.input)?,
            output: self.output.as_deref().map(json_value).transpose()?,
            error: self.error,
            hold: self.hold_id.as_deref().map(parse_id).transpose()?,
            reserved: credits(self.reserved),
            credits_charged: self.credits_charged.map(credits),
            attempts: uint(self.attempts),
            max_attempts: uint(self.max_attempts),
            lease_until: self.lease_until.map(from_ts),
            deadline: from_ts(self.deadline),
            created_at: from_ts(self.created_at),
            finished_at: self.finished_at.map(from_ts),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_events, treat_none_as_default_value = false)]
pub(crate) struct EventRow {
    pub task_id: String,
    pub seq: i32,
    pub at: i64,
    pub status: String,
    pub attempt: i32,
    pub actor: String,
    pub note: Option<String>,
}

impl EventRow {
    fn into_domain(self) -> Result<TaskEvent, StoreError> {
        Ok(TaskEvent {
            task: parse_id(&self.task_id)?,
            at: from_ts(self.at),
            status: parse_enum(&self.status)?,
            attempt: uint(self.attempt),
            actor: self.actor,
            note: self.note,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_deliveries, treat_none_as_default_value = false)]
pub(crate) struct DeliveryRow {
    pub id: String,
    pub task_id: String,
    pub event: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

impl DeliveryRow {
    /// The delivery, with the payload built from the task as it finished (a final task
    /// never changes, so every attempt sends the same body).
    fn into_domain(self, task: &Task) -> Result<Delivery, StoreError> {
        let payload = serde_json::json!({
            "id": self.id,
            "type": self.event,
            "created_at": self.created_at / 1_000_000,
            "data": {"task": task_json(task)},
        });
        Ok(Delivery {
            id: self.id,
            task: parse_id(&self.task_id)?,
            event: self.event,
            payload,
            status: parse_enum(&self.status)?,
            attempts: uint(self.attempts),
            next_attempt_at: from_ts(self.next_attempt_at),
            last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: self.last_error,
            created_at: from_ts(self.created_at),
            delivered_at: self.delivered_at.map(from_ts),
        })
    }
}

/// The task as a webhook shows it (the API's task view, without the history).
fn task_json(task: &Task) -> serde_json::Value {
    let at = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    serde_json::json!({
        "id": task.id.to_string(),
        "account_id": task.account.to_string(),
        "type": task.kind,
        "status": task.status.as_str(),
        "input": task.input,
        "output": task.output,
        "error": task.error,
        "credits_reserved": task.reserved,
        "credits_charged": task.credits_charged,
        "attempts": task.attempts,
        "created_at": at(task.created_at),
        "finished_at": task.finished_at.map(at),
    })
}

/// A claim's update, as plain values.
#[derive(Debug, Clone)]
pub(crate) struct ClaimArgs {
    pub kinds: Vec<String>,
    pub worker: String,
    pub limit: i64,
    pub lease_until: i64,
    pub now: i64,
}

/// The task queries; stamped into `sql::pg` and `sql::sqlite` (each defines its own
/// `claim_candidates` and `delivery_candidates`).
macro_rules! task_queries {
    () => {
        use crate::schema::{task_deliveries, task_events, tasks};
        use crate::tasks::{ClaimArgs, DeliveryRow, EventRow, TaskRow};

        async fn task_event_insert(
            c: &mut Conn,
            task: &str,
            at: i64,
            status: &str,
            attempt: i32,
            actor: &str,
            note: Option<String>,
        ) -> Result<(), TxError> {
            let last: Option<i32> = task_events::table
                .filter(task_events::task_id.eq(task))
                .select(diesel::dsl::max(task_events::seq))
                .first(c)
                .await?;
            diesel::insert_into(task_events::table)
                .values(&EventRow {
                    task_id: task.to_owned(),
                    seq: last.unwrap_or(0) + 1,
                    at,
                    status: status.to_owned(),
                    attempt,
                    actor: actor.to_owned(),
                    note,
                })
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn task_get(c: &mut Conn, id: String) -> Result<Option<TaskRow>, TxError> {
            Ok(tasks::table
                .find(id)
                .select(TaskRow::as_select())
                .first(c)
                .await
                .optional()?)
        }

        /// The hold, then the task: in the caller's transaction.
        pub(crate) async fn task_create(
            c: &mut Conn,
            mut row: TaskRow,
            hold: billing_core::ledger::LedgerRequest,
            fingerprint: billing_core::ledger::Fingerprint,
            actor: String,
            ids: std::sync::Arc<dyn billing_core::ports::IdGenerator>,
        ) -> Result<(Option<TaskRow>, LedgerOutcome), TxError> {
            let now = crate::db::from_ts(row.created_at);
            let outcome = ledger_execute(c, hold, fingerprint, now, ids).await?;
            match &outcome {
                LedgerOutcome::Executed(Ok(receipt)) => {
                    row.hold_id = receipt.hold.as_ref().map(ToString::to_string);
                    diesel::insert_into(tasks::table)
                        .values(&row)
                        .execute(c)
                        .await?;
                    task_event_insert(c, &row.id, row.created_at, "queued", 0, &actor, None)
                        .await?;
                    Ok((Some(row), outcome))
                }
                LedgerOutcome::Replayed(Ok(receipt)) => {
                    let hold = receipt.hold.as_ref().map(ToString::to_string);
                    let existing = tasks::table
                        .filter(tasks::account_id.eq(&row.account_id))
                        .filter(tasks::hold_id.eq(hold))
                        .select(TaskRow::as_select())
                        .first(c)
                        .await
                        .optional()?;
                    Ok((existing, outcome))
                }
                _ => Ok((None, outcome)),
            }
        }

        pub(crate) async fn tasks_list(
            c: &mut Conn,
            account: String,
            status: Option<String>,
            kind: Option<String>,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<TaskRow>, TxError> {
            let mut query = tasks::table
                .filter(tasks::account_id.eq(account))
                .select(TaskRow::as_select())
                .into_boxed();
            if let Some(status) = status {
                query = query.filter(tasks::status.eq(status));
            }
            if let Some(kind) = kind {
                query = query.filter(tasks::kind.eq(kind));
            }
            if let Some(after) = after {
                query = query.filter(tasks::id.lt(after));
            }
            Ok(query.order(tasks::id.desc()).limit(limit).load(c).await?)
        }

        pub(crate) async fn task_events_of(
            c: &mut Conn,
            id: String,
        ) -> Result<Vec<EventRow>, TxError> {
            Ok(task_events::table
                .filter(task_events::task_id.eq(id))
                .order(task_events::seq.asc())
                .select(EventRow::as_select())
                .load(c)
                .await?)
        }

        /// Leases the candidates and journals each claim.
        pub(crate) async fn task_claim(
            c: &mut Conn,
            args: ClaimArgs,
        ) -> Result<Vec<TaskRow>, TxError> {
            let ids = claim_candidates(c, &args).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            diesel::update(tasks::table.filter(tasks::id.eq_any(&ids)))
                .set((
                    tasks::status.eq("running"),
                    tasks::lease_until.eq(args.lease_until),
                    tasks::attempts.eq(tasks::attempts + 1),
                ))
                .execute(c)
                .await?;
            let rows: Vec<TaskRow> = tasks::table
                .filter(tasks::id.eq_any(&ids))
                .order(tasks::id.asc())
                .select(TaskRow::as_select())
                .load(c)
                .await?;
            let actor = format!("worker:{}", args.worker);
            // A claimed task has no history past its creation, its earlier claims and
            // requeues: the next sequence number is one more than the last.
            let lasts: Vec<(String, Option<i32>)> = task_events::table
                .filter(task_events::task_id.eq_any(&ids))
                .group_by(task_events::task_id)
                .select((task_events::task_id, diesel::dsl::max(task_events::seq)))
                .load(c)
                .await?;
            let events: Vec<EventRow> = rows
                .iter()
                .map(|row| EventRow {
                    task_id: row.id.clone(),
                    seq: lasts
                        .iter()
                        .find(|(id, _)| id == &row.id)
                        .and_then(|(_, seq)| *seq)
                        .unwrap_or(0)
                        + 1,
                    at: args.now,
                    status: "running".into(),
                    attempt: row.attempts,
                    actor: actor.clone(),
                    note: None,
                })
                .collect();
            for event in &events {
                diesel::insert_into(task_events::table)
                    .values(event)
                    .execute(c)
                    .await?;
            }
            Ok(rows)
        }

        pub(crate) async fn task_heartbeat(
            c: &mut Conn,
            id: String,
            attempt: i32,
            lease_until: i64,
        ) -> Result<Option<TaskRow>, TxError> {
            let changed = diesel::update(
                tasks::table
                    .find(&id)
                    .filter(tasks::status.eq("running"))
                    .filter(tasks::attempts.eq(attempt)),
            )
            .set((tasks::lease_until.eq(lease_until),))
            .execute(c)
            .await?;
            if changed == 0 {
                return Ok(None);
            }
            task_get(c, id).await
        }

        /// Applies a change if the task is as expected: `Ok(None)` when it is not (or does
        /// not exist); `Err(Refused)` rolls back when the ledger refuses.
        pub(crate) async fn task_change(
            c: &mut Conn,
            change: billing_core::ports::TaskChange,
            ids: std::sync::Arc<dyn billing_core::ports::IdGenerator>,
        ) -> Result<Option<TaskRow>, TxError> {
            let id = change.task.to_string();
            let from: Vec<&str> = change.from.iter().map(|s| s.as_str()).collect();
            let (low, high) = match change.attempt {
                Some(a) => (crate::tasks::int_of(a), crate::tasks::int_of(a)),
                None => (0, i32::MAX),
            };
            let now = crate::db::ts(change.now);
            let to = change.to;
            let changed = diesel::update(
                tasks::table
                    .find(&id)
                    .filter(tasks::status.eq_any(&from))
                    .filter(tasks::attempts.between(low, high)),
            )
            .set((
                tasks::status.eq(to.as_str()),
                tasks::output.eq(change.output.as_ref().map(|v| v.to_string())),
                tasks::error.eq(change.error.clone()),
                tasks::credits_charged.eq(change.credits_charged.map(crate::db::signed)),
                tasks::lease_until.eq(None::<i64>),
                tasks::finished_at.eq(to.is_final().then_some(now)),
            ))
            .execute(c)
            .await?;
            if changed == 0 {
                return Ok(None);
            }
            if let Some(settle) = change.settle {
                let fingerprint = settle.fingerprint();
                match ledger_execute(c, settle, fingerprint, change.now, ids).await? {
                    LedgerOutcome::Executed(Ok(_)) | LedgerOutcome::Replayed(Ok(_)) => {}
                    LedgerOutcome::Executed(Err(err)) | LedgerOutcome::Replayed(Err(err)) => {
                        return Err(TxError::Refused(err));
                    }
                    LedgerOutcome::Conflict => {
                        return Err(TxError::Store(billing_core::ports::StoreError::Other(
                            format!("task {id}: its settlement key was used otherwise"),
                        )));
                    }
                }
            }
            let row = task_get(c, id.clone())
                .await?
                .ok_or(TxError::Store(billing_core::ports::StoreError::NotFound))?;
            task_event_insert(
                c,
                &id,
                now,
                to.as_str(),
                row.attempts,
                &change.actor,
                change.note,
            )
            .await?;
            if let Some(delivery) = change.delivery {
                diesel::insert_into(task_deliveries::table)
                    .values(&DeliveryRow {
                        id: delivery,
                        task_id: id,
                        event: billing_core::tasks::event_name(to).to_owned(),
                        status: "pending".into(),
                        attempts: 0,
                        next_attempt_at: now,
                        last_status: None,
                        last_error: None,
                        created_at: now,
                        delivered_at: None,
                    })
                    .execute(c)
                    .await?;
            }
            Ok(Some(row))
        }

        pub(crate) async fn tasks_due(
            c: &mut Conn,
            now: i64,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<TaskRow>, TxError> {
            let late = tasks::status
                .eq("running")
                .and(tasks::lease_until.lt(now))
                .or(tasks::status
                    .eq_any(["queued", "running"])
                    .and(tasks::deadline.le(now)));
            let mut query = tasks::table
                .filter(late)
                .select(TaskRow::as_select())
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(tasks::id.gt(after));
            }
            Ok(query.order(tasks::id.asc()).limit(limit).load(c).await?)
        }

        pub(crate) async fn deliveries_claim(
            c: &mut Conn,
            now: i64,
            until: i64,
            limit: i64,
        ) -> Result<Vec<(DeliveryRow, TaskRow)>, TxError> {
            let ids = delivery_candidates(c, now, limit).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            diesel::update(task_deliveries::table.filter(task_deliveries::id.eq_any(&ids)))
                .set(task_deliveries::next_attempt_at.eq(until))
                .execute(c)
                .await?;
            deliveries_with_tasks(c, ids).await
        }

        async fn deliveries_with_tasks(
            c: &mut Conn,
            ids: Vec<String>,
        ) -> Result<Vec<(DeliveryRow, TaskRow)>, TxError> {
            Ok(task_deliveries::table
                .inner_join(tasks::table.on(tasks::id.eq(task_deliveries::task_id)))
                .filter(task_deliveries::id.eq_any(ids))
                .order(task_deliveries::id.desc())
                .select((DeliveryRow::as_select(), TaskRow::as_select()))
                .load(c)
                .await?)
        }

        pub(crate) async fn delivery_update(c: &mut Conn, row: DeliveryRow) -> Result<(), TxError> {
            diesel::update(task_deliveries::table.find(&row.id))
                .set((
                    task_deliveries::status.eq(&row.status),
                    task_deliveries::attempts.eq(row.attempts),
                    task_deliveries::next_attempt_at.eq(row.next_attempt_at),
                    task_deliveries::last_status.eq(row.last_status),
                    task_deliveries::last_error.eq(&row.last_error),
                    task_deliveries::delivered_at.eq(row.delivered_at),
                ))
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn deliveries_list(
            c: &mut Conn,
            task: Option<String>,
            status: Option<String>,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<(DeliveryRow, TaskRow)>, TxError> {
            let mut query = task_deliveries::table
                .inner_join(tasks::table.on(tasks::id.eq(task_deliveries::task_id)))
                .select((DeliveryRow::as_select(), TaskRow::as_select()))
                .into_boxed();
            if let Some(task) = task {
                query = query.filter(task_deliveries::task_id.eq(task));
            }
            if let Some(status) = status {
                query = query.filter(task_deliveries::status.eq(status));
            }
            if let Some(after) = after {
                query = query.filter(task_deliveries::id.lt(after));
            }
            Ok(query
                .order(task_deliveries::id.desc())
                .limit(limit)
                .load(c)
                .await?)
        }
    };
}
pub(crate) use task_queries;

pub(crate) fn int_of(n: u32) -> i32 {
    int(n)
}

fn deliveries(rows: Vec<(DeliveryRow, TaskRow)>) -> Result<Vec<Delivery>, StoreError> {
    rows.into_iter()
        .map(|(delivery, task)| delivery.into_domain(&task.into_domain()?))
        .collect()
}

#[async_trait]
impl TaskStore for DieselStore {
    async fn create(&self, new: NewTask) -> Result<TaskCreated, StoreError> {
        let fingerprint = new.hold.fingerprint();
        let row = TaskRow::from_domain(&new.task);
        let _writer = self.pool.write_guard().await;
        let created = self
            .retrying(|| {
                let row = row.clone();
                let hold = new.hold.clone();
                let fingerprint = fingerprint.clone();
                let actor = new.actor.clone();
                let ids = self.ids.clone();
                async move {
                    let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                    transaction_call!(conn, task_create(row, hold, fingerprint, actor, ids))
                }
            })
            .await;
        self.cache.changed(new.task.account.as_str());
        let (created, outcome) = created?;
        use billing_core::ports::LedgerOutcome;
        Ok(match (outcome, created) {
            (LedgerOutcome::Executed(Ok(_)), Some(row)) => TaskCreated::Created(row.into_domain()?),
            (LedgerOutcome::Replayed(Ok(_)), Some(row)) => {
                TaskCreated::Replayed(row.into_domain()?)
            }
            (LedgerOutcome::Executed(Ok(_)) | LedgerOutcome::Replayed(Ok(_)), None) => {
                // The key's hold exists but its task does not: the key was used for a plain
                // reserve of the same account. Treat as another request's.
                TaskCreated::Conflict
            }
            (LedgerOutcome::Executed(Err(err)) | LedgerOutcome::Replayed(Err(err)), _) => {
                TaskCreated::Refused(err)
            }
            (LedgerOutcome::Conflict, _) => TaskCreated::Conflict,
        })
    }

    async fn get(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, task_get(id.to_string()))
            .map_err(tx_error)?
            .map(TaskRow::into_domain)
            .transpose()
    }

    async fn list(
        &self,
        account: &AccountId,
        filter: TaskFilter,
        page: PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let rows = call!(
            conn,
            tasks_list(
                account.to_string(),
                filter.status.map(|s| s.as_str().to_owned()),
                filter.kind,
                page.after.clone(),
                limit + 1
            )
        )
        .map_err(tx_error)?;
        let tasks = rows
            .into_iter()
            .map(TaskRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paged(tasks, limit, |t| t.id.to_string()))
    }

    async fn events(&self, id: &TaskId) -> Result<Vec<TaskEvent>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, task_events_of(id.to_string()))
            .map_err(tx_error)?
            .into_iter()
            .map(EventRow::into_domain)
            .collect()
    }

    async fn claim_tasks(&self, request: ClaimRequest) -> Result<Vec<Task>, StoreError> {
        let args = ClaimArgs {
            kinds: request.kinds,
            worker: request.worker,
            limit: i64::from(request.limit.max(1)),
            lease_until: ts(request.lease_until),
            now: ts(request.now),
        };
        let _writer = self.pool.write_guard().await;
        let rows = self
            .retrying(|| {
                let args = args.clone();
                async move {
                    let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                    transaction_call!(conn, task_claim(args))
                }
            })
            .await?;
        rows.into_iter().map(TaskRow::into_domain).collect()
    }

    async fn heartbeat(
        &self,
        id: &TaskId,
        attempt: u32,
        lease_until: OffsetDateTime,
    ) -> Result<Option<Task>, StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            task_heartbeat(id.to_string(), int(attempt), ts(lease_until))
        )
        .map_err(tx_error)?
        .map(TaskRow::into_domain)
        .transpose()
    }

    async fn change(&self, change: TaskChange) -> Result<TaskMoved, StoreError> {
        let id = change.task.to_string();
        let _writer = self.pool.write_guard().await;
        let result = self
            .retrying(|| {
                let change = change.clone();
                let ids = self.ids.clone();
                async move {
                    let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                    match transaction_call!(conn, task_change(change, ids)) {
                        Err(TxError::Refused(err)) => Ok(Err(err)),
                        other => other.map(Ok),
                    }
                }
            })
            .await;
        drop(_writer);
        let result = result.inspect_err(|_| {
            // Whether the settlement committed is unknown, and so is its account here.
            self.cache.changed_all();
        })?;
        let current = || async {
            let mut conn = self.pool.get().await?;
            call!(conn, task_get(id.clone()))
                .map_err(tx_error)?
                .map(TaskRow::into_domain)
                .transpose()
        };
        let moved = match result {
            Ok(Some(row)) => TaskMoved::Moved(row.into_domain()?),
            Ok(None) => match current().await? {
                Some(task) => TaskMoved::Stale(task),
                None => TaskMoved::NotFound,
            },
            Err(refusal) => match current().await? {
                Some(task) => TaskMoved::Refused(task, refusal),
                None => TaskMoved::NotFound,
            },
        };
        // A settlement moves credits of the task's account.
        if let TaskMoved::Moved(task) | TaskMoved::Stale(task) | TaskMoved::Refused(task, _) =
            &moved
        {
            self.cache.changed(task.account.as_str());
        }
        Ok(moved)
    }

    async fn due_tasks(
        &self,
        now: OffsetDateTime,
        after: Option<TaskId>,
        limit: u32,
    ) -> Result<Vec<Task>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(
            conn,
            tasks_due(
                ts(now),
                after.map(|a| a.to_string()),
                i64::from(limit.max(1))
            )
        )
        .map_err(tx_error)?
        .into_iter()
        .map(TaskRow::into_domain)
        .collect()
    }

    async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let _writer = self.pool.write_guard().await;
        let rows = self
            .retrying(|| async move {
                let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                transaction_call!(
                    conn,
                    deliveries_claim(ts(now), ts(until), i64::from(limit.max(1)))
                )
            })
            .await?;
        deliveries(rows)
    }

    async fn delivery_attempted(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let row = DeliveryRow {
            id: delivery.id.clone(),
            task_id: delivery.task.to_string(),
            event: delivery.event.clone(),
            status: delivery.status.as_str().to_owned(),
            attempts: int(delivery.attempts),
            next_attempt_at: ts(delivery.next_attempt_at),
            last_status: delivery.last_status.map(i32::from),
            last_error: delivery.last_error.clone(),
            created_at: ts(delivery.created_at),
            delivered_at: delivery.delivered_at.map(ts),
        };
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(conn, delivery_update(row)).map_err(tx_error)
    }

    async fn deliveries(
        &self,
        task: Option<TaskId>,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        let limit = page_limit(&page);
        let mut conn = self.pool.get().await?;
        let rows = call!(
            conn,
            deliveries_list(
                task.map(|t| t.to_string()),
                status.map(|s| s.as_str().to_owned()),
                page.after.clone(),
                limit + 1
            )
        )
        .map_err(tx_error)?;
        Ok(paged(deliveries(rows)?, limit, |d| d.id.clone()))
    }
}
