//! Scheduled jobs shared by several instances: a run is claimed by inserting its
//! (job, period) row, which the primary key lets only one instance do.

use async_trait::async_trait;
use billing_core::ports::{JobRun, JobStore, QueueStat, StoreError};
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::db::{from_ts, ts, tx_error};
use crate::schema::job_runs;
use crate::sql::call;
use crate::store::DieselStore;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = job_runs)]
pub(crate) struct JobRunRow {
    pub job: String,
    pub period: i64,
    pub instance: String,
    pub started_at: i64,
}

impl JobRunRow {
    fn into_domain(self) -> JobRun {
        JobRun {
            job: self.job,
            period: from_millis(self.period),
            instance: self.instance,
            started_at: from_ts(self.started_at),
        }
    }
}

/// Periods are kept in milliseconds: a job may run more often than once a second.
fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Queries for the job runs; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! job_queries {
    () => {
        /// 1 if this insert claimed the period, 0 if another instance's did.
        pub(crate) async fn job_claim(
            c: &mut Conn,
            row: crate::jobs::JobRunRow,
        ) -> Result<usize, TxError> {
            use crate::schema::job_runs;
            Ok(diesel::insert_into(job_runs::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(c)
                .await?)
        }

        pub(crate) async fn job_recent(
            c: &mut Conn,
            job: Option<String>,
            limit: i64,
        ) -> Result<Vec<crate::jobs::JobRunRow>, TxError> {
            use crate::schema::job_runs;
            let mut query = job_runs::table.into_boxed();
            if let Some(job) = job {
                query = query.filter(job_runs::job.eq(job));
            }
            Ok(query
                .order((job_runs::period.desc(), job_runs::job.asc()))
                .limit(limit)
                .select(crate::jobs::JobRunRow::as_select())
                .load(c)
                .await?)
        }

        /// (depth, oldest arrival) of the tasks, task-webhook and payment-event queues.
        pub(crate) async fn queue_stats(c: &mut Conn) -> Result<[(i64, Option<i64>); 3], TxError> {
            use crate::schema::{task_deliveries, tasks, webhook_events};
            use diesel::dsl::{count_star, min};
            let tasks = tasks::table
                .filter(tasks::status.eq("queued"))
                .select((count_star(), min(tasks::created_at)))
                .first::<(i64, Option<i64>)>(c)
                .await?;
            let deliveries = task_deliveries::table
                .filter(task_deliveries::status.eq("pending"))
                .select((count_star(), min(task_deliveries::created_at)))
                .first::<(i64, Option<i64>)>(c)
                .await?;
            let events = webhook_events::table
                .filter(
                    webhook_events::status
                        .eq("received")
                        .or(webhook_events::status
                            .eq("failed")
                            .and(webhook_events::next_attempt_at.is_not_null())),
                )
                .select((count_star(), min(webhook_events::received_at)))
                .first::<(i64, Option<i64>)>(c)
                .await?;
            Ok([tasks, deliveries, events])
        }

        pub(crate) async fn job_prune(c: &mut Conn, before: i64) -> Result<usize, TxError> {
            use crate::schema::job_runs;
            Ok(
                diesel::delete(job_runs::table.filter(job_runs::period.lt(before)))
                    .execute(c)
                    .await?,
            )
        }
    };
}
pub(crate) use job_queries;

impl DieselStore {
    /// The database pool's connections now (for the metrics).
    pub fn pool_status(&self) -> crate::db::PoolStatus {
        self.pool.status()
    }
}

#[async_trait]
impl JobStore for DieselStore {
    async fn claim_run(
        &self,
        job: &str,
        period: OffsetDateTime,
        instance: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let row = JobRunRow {
            job: job.to_owned(),
            period: millis(period),
            instance: instance.to_owned(),
            started_at: ts(now),
        };
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        Ok(call!(conn, job_claim(row)).map_err(tx_error)? == 1)
    }

    async fn recent_runs(
        &self,
        job: Option<String>,
        limit: u32,
    ) -> Result<Vec<JobRun>, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(call!(conn, job_recent(job, i64::from(limit)))
            .map_err(tx_error)?
            .into_iter()
            .map(JobRunRow::into_domain)
            .collect())
    }

    async fn prune_runs(&self, before: OffsetDateTime) -> Result<usize, StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(conn, job_prune(millis(before))).map_err(tx_error)
    }

    async fn queues(&self) -> Result<Vec<QueueStat>, StoreError> {
        let mut conn = self.pool.get().await?;
        let stats = call!(conn, queue_stats()).map_err(tx_error)?;
        Ok(["tasks", "task_webhooks", "payment_events"]
            .into_iter()
            .zip(stats)
            .map(|(queue, (depth, oldest))| QueueStat {
                queue: queue.to_owned(),
                depth: u64::try_from(depth).unwrap_or(0),
                oldest: oldest.map(from_ts),
            })
            .collect())
    }
}
