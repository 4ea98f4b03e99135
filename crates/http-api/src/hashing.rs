//! Password hashing with a bound: a fixed pool of threads, and a queue with a time limit.
//!
//! One argon2id hash (the crate's defaults: m = 19 MiB, t = 2) allocates 19 MiB. Run
//! without a bound, 200 concurrent sign-ups took the server from 14 MB to 1 GB of RSS, and
//! the allocator kept it: every blocking thread grew its own arena. Here at most `threads`
//! hashes run at once, each on one of `threads` long-lived threads (so at most that many
//! arenas ever hold a hash's memory), and a request waits at most `queue_timeout` for its
//! turn before it is answered 503 with `Retry-After`. A sign-in flood costs time, not memory.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use tokio::sync::{Semaphore, oneshot};

use crate::error::ApiError;

type Job = Box<dyn FnOnce() + Send>;

/// The pool of hashing threads and its admission queue.
#[derive(Debug)]
pub struct Hashing {
    permits: Semaphore,
    queue_timeout: Duration,
    jobs: SyncSender<Job>,
}

impl Hashing {
    /// `threads` hashing threads (at least 1); a request waits at most `queue_timeout`.
    pub fn new(threads: usize, queue_timeout: Duration) -> Self {
        let threads = threads.max(1);
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&queue));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a password-hashing thread");
            }
        }
        Self {
            permits: Semaphore::new(threads),
            queue_timeout,
            jobs,
        }
    }

    /// Runs `work` (a hash or a verification) on the pool, waiting for a turn at most the
    /// queue timeout.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(ApiError::internal)?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.send(job).map_err(ApiError::internal)?;
        let out = result.await.map_err(ApiError::internal);
        drop(permit);
        out
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "Busy",
        "too many sign-ins at once; try again shortly",
    )
    .with("retry_after", 1)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_the_pool_runs_at_once_and_a_long_queue_is_refused() {
        let pool = Arc::new(Hashing::new(2, Duration::from_millis(200)));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(150));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        let mut refused = 0;
        for task in tasks {
            if let Err(err) = task.await.unwrap() {
                assert_eq!(err.code(), "busy");
                refused += 1;
            }
        }
        assert!(peak.load(Ordering::SeqCst) <= 2, "never more than the pool");
        assert!(
            refused >= 1,
            "six jobs of 150 ms on two threads cannot all start in 200 ms"
        );
    }
}
