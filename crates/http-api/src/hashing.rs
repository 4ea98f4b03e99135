//! Password hashing with a bound: a fixed pool of threads, each with its own argon2 memory,
//! and a queue with a time limit.
//!
//! New hashes use argon2id with m = 7 MiB, t = 5, p = 1: of the configurations OWASP's
//! Password Storage Cheat Sheet lists as equally strong (19 MiB × 2 passes, 12 MiB × 3,
//! 9 MiB × 4, 7 MiB × 5), the one that trades memory for passes, at about the same CPU time
//! as the crate's default of 19 MiB × 2. A hash made with other parameters (the crate's
//! default, used before) still verifies with its own. Run without a bound, 200 concurrent
//! sign-ups took the server from 14 MB to 1 GB of RSS, never given back. Bounding the threads is not enough on its own: with a fresh 19 MiB buffer per hash,
//! glibc's adaptive mmap threshold moves those buffers into arena heaps that fragment, and
//! RSS still climbs to ~390 MB after twenty sign-ups on two threads (measured; see
//! docs/benchmarks.md). So each of the `threads` long-lived threads allocates its argon2
//! memory once and reuses it for every hash and verification: memory is `threads` × 7 MiB,
//! whatever the load. (Verifying an older, larger hash borrows what it needs for that one
//! job.) A request waits at most `queue_timeout` for a thread before it is
//! answered 503 with `Retry-After`. A sign-in flood costs time, not memory.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use argon2::password_hash::phc::{Output, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

use crate::error::ApiError;

/// A hashing thread's argon2 working memory, allocated on first use and kept.
type Memory = Vec<Block>;

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

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

    /// An argon2id PHC string for `password` (a fresh random salt).
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |memory| hash_with(memory, &password))
            .await?
            .map_err(ApiError::internal)
    }

    /// Whether `password` matches `phc`; with `None`, verifies against a decoy hash so that
    /// an unknown user costs as much time as a wrong password.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        self.run(move |memory| match phc {
            Some(phc) => verify_with(memory, &password, &phc),
            None => {
                let decoy = decoy(memory);
                verify_with(memory, &password, decoy);
                false
            }
        })
        .await
    }

    /// Runs `work` on the pool with a thread's memory, waiting for a turn at most the
    /// queue timeout.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(ApiError::internal)?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(work(memory));
        });
        self.jobs.send(job).map_err(ApiError::internal)?;
        let out = result.await.map_err(ApiError::internal);
        drop(permit);
        out
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::new();
    loop {
        let job = {
            let queue = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.recv()
        };
        match job {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

/// KiB of memory for a new hash.
const MEMORY_KIB: u32 = 7 * 1024;
/// Passes over it.
const PASSES: u32 = 5;

/// The parameters of a new hash.
fn params() -> Result<Params, String> {
    Params::new(MEMORY_KIB, PASSES, 1, None).map_err(|e| e.to_string())
}

/// Argon2 into `out`, in `memory`: the thread's own, sized for new hashes and reused. A
/// hash that needs more (made with older parameters) gets a buffer of its own for the job,
/// so one old hash does not keep the thread at its size.
fn compute(
    memory: &mut Memory,
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let blocks = params.block_count();
    if blocks > MEMORY_KIB as usize {
        let mut own = vec![Block::default(); blocks];
        return argon.hash_password_into_with_memory(password, salt, out, &mut own[..]);
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

/// A new argon2id hash as a PHC string.
pub(crate) fn hash_with(memory: &mut Memory, password: &str) -> Result<String, String> {
    hash_using(memory, password, params()?)
}

/// An argon2id hash with `params` as a PHC string.
fn hash_using(memory: &mut Memory, password: &str, params: Params) -> Result<String, String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(
        memory,
        &argon,
        &params,
        password.as_bytes(),
        &salt,
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(|e| format!("{e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(hash.to_string())
}

/// Whether a PHC string was made otherwise than a new hash would be (another variant,
/// version or parameters): sign-in then hashes the password again.
pub fn outdated(phc: &str) -> bool {
    let (Ok(hash), Ok(current)) = (PasswordHash::new(phc), params()) else {
        return true;
    };
    let cost = |p: &Params| (p.m_cost(), p.t_cost(), p.p_cost());
    let current_kind = Algorithm::try_from(hash.algorithm.as_str()) == Ok(Algorithm::Argon2id)
        && hash.version == Some(Version::V0x13.into());
    !(current_kind && Params::try_from(&hash).is_ok_and(|p| cost(&p) == cost(&current)))
}

/// Whether `password` matches a PHC string (any argon2 variant and parameters).
pub(crate) fn verify_with(memory: &mut Memory, password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&hash),
        Algorithm::try_from(hash.algorithm.as_str()),
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    if compute(memory, &argon, &params, password.as_bytes(), salt, &mut out).is_err() {
        return false;
    }
    // Compare every byte whatever the first difference, so timing reveals nothing.
    out.iter()
        .zip(expected.as_bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A hash to verify against when no user matches (made once, on the pool).
fn decoy(memory: &mut Memory) -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_with(memory, "decoy password that never matches").unwrap_or_default())
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

    #[test]
    fn new_hashes_use_7_mib_and_older_hashes_still_verify_without_growing_the_buffer() {
        let mut memory = Memory::new();
        let phc = hash_with(&mut memory, "correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{phc}");
        assert!(verify_with(&mut memory, "correct horse", &phc));
        assert!(!verify_with(&mut memory, "wrong horse", &phc));
        // A hash made before, with the crate's defaults (19 MiB, 2 passes).
        let old = hash_using(&mut Memory::new(), "old horse", Params::default()).unwrap();
        assert!(old.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{old}");
        assert!(verify_with(&mut memory, "old horse", &old));
        assert!(!verify_with(&mut memory, "new horse", &old));
        assert_eq!(memory.len(), 7168, "the thread's buffer stays at 7 MiB");
        assert!(outdated(&old), "made with 19 MiB: sign-in hashes it again");
        assert!(!outdated(&phc));
        assert!(outdated("not a hash"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_the_pool_runs_at_once_and_a_long_queue_is_refused() {
        let pool = Arc::new(Hashing::new(2, Duration::from_millis(200)));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move |_| {
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
