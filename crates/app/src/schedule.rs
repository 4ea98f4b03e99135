//! Scheduled jobs that run once per period across every instance on one database.
//!
//! Time is cut into periods of each job's interval, counted from the Unix epoch on the
//! wall clock, so every instance agrees on where a period begins. At the start of each
//! period (and once at start-up, for the period under way) every instance tries to claim
//! the period in the store; the one whose claim lands runs the job, the others skip it. An
//! instance that stops simply stops claiming: the next period goes to whoever is left.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use billing_core::ports::JobStore;
use http_api::metrics::{JobName, Metrics};
use time::OffsetDateTime;
use tokio::sync::watch;

/// Claims periods for this instance and counts what each job did.
#[derive(Clone)]
pub struct Scheduler {
    jobs: Arc<dyn JobStore>,
    instance: String,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The wall-clock time since the epoch (a clock before 1970 counts as the epoch).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The start of the period of length `every` that `now` falls in, and the time left in it.
fn period_of(now: Duration, every: Duration) -> (Duration, Duration) {
    let every_ms = every.as_millis().max(1);
    let now_ms = now.as_millis();
    let start_ms = now_ms - now_ms % every_ms;
    let start = Duration::from_millis(u64::try_from(start_ms).unwrap_or(u64::MAX));
    let left = Duration::from_millis(u64::try_from(start_ms + every_ms - now_ms).unwrap_or(0));
    (start, left)
}

fn to_time(since_epoch: Duration) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + since_epoch
}

impl Scheduler {
    /// A scheduler claiming periods as `instance`.
    pub fn new(jobs: Arc<dyn JobStore>, instance: String, metrics: Arc<Metrics>) -> Self {
        Self {
            jobs,
            instance,
            metrics,
        }
    }

    /// A scheduler for this process: its instance name is the host's (`HOSTNAME`, when
    /// set), the process id and a random suffix, so that two processes on one host, or a
    /// restarted one, are told apart.
    pub fn for_this_process(jobs: Arc<dyn JobStore>, metrics: Arc<Metrics>) -> Self {
        let suffix: u32 = rand::random();
        let instance = format!("{}-{suffix:08x}", crate::task_workers::worker_name(0));
        tracing::info!(instance = %instance, "scheduled jobs run as this instance");
        Self::new(jobs, instance, metrics)
    }

    /// This instance's name in the job records.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs `job` once per `every` across every instance, until `stop` turns true. `run`
    /// reports a failure as `Err` (logged and counted; the next period tries again).
    pub async fn every<F, Fut>(
        self,
        job: &'static str,
        every: Duration,
        mut stop: watch::Receiver<bool>,
        mut run: F,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            let now = since_epoch();
            let (start, left) = period_of(now, every);
            self.period(job, start, now, &mut run).await;
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(left) => {}
            }
        }
    }

    async fn period<F, Fut>(&self, job: &'static str, start: Duration, now: Duration, run: &mut F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        match self
            .jobs
            .claim_run(job, to_time(start), &self.instance, to_time(now))
            .await
        {
            Ok(false) => self.metrics.job_ran(job, "skipped"),
            Ok(true) => match run().await {
                Ok(()) => {
                    self.metrics.job_ran(job, "ok");
                    self.metrics
                        .job_last_success
                        .get_or_create(&JobName { job: job.into() })
                        .set(i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX));
                }
                Err(err) => {
                    self.metrics.job_ran(job, "failed");
                    tracing::warn!(job, error = %err, "scheduled job failed; the next period tries again");
                }
            },
            Err(err) => {
                self.metrics.job_ran(job, "failed");
                tracing::warn!(job, error = %err, "could not claim the job's period; will try the next one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_aligned_to_the_epoch() {
        let every = Duration::from_secs(30);
        let (start, left) = period_of(Duration::from_millis(1_000_045_500), every);
        assert_eq!(start, Duration::from_secs(1_000_020));
        assert_eq!(left, Duration::from_millis(4_500));
        let (start, left) = period_of(Duration::from_secs(1_000_020), every);
        assert_eq!((start, left), (Duration::from_secs(1_000_020), every));
    }
}
