//! The store's own runtime: the ledger's group-commit lanes and the audit writer run on a
//! thread that belongs to the store, not on whichever runtime happened to call it first.
//!
//! That keeps them alive exactly as long as the store: a web server's worker runtime that
//! stops, or a test's runtime that ends, takes none of them down with queued work in them.
//! PostgreSQL connections are established on this runtime too (see `Pool::connect`), so
//! that no connection stalls because the runtime that made it stands still.
//! Every task ends when its queue closes, which happens when the last clone of the store is
//! dropped; the thread then ends too. Work already queued is finished first.

use std::sync::Arc;

use billing_core::ids::{AccountId, PrefixedId};
use tokio::sync::mpsc;

use crate::audit_writer::{self, AuditJob};
use crate::group_commit::{self, Pending};
use crate::store::DieselStore;

/// How many audit records may wait to be written before `append` waits for room.
const AUDIT_QUEUE: usize = 10_000;

/// The queues into the store's background tasks.
pub(crate) struct Background {
    lanes: Vec<mpsc::UnboundedSender<Pending>>,
    pub(crate) audit: mpsc::Sender<AuditJob>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Background {
    /// The store's runtime. Its worker threads run what is spawned on it at once; the
    /// thread [`start`](Self::start) makes only keeps it until the store is gone.
    pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tollgate-store")
            .enable_all()
            .build()
    }

    /// Starts the thread and the tasks over `store`, a store without background tasks of
    /// its own (which they use to reach the database).
    pub(crate) fn start(
        store: &DieselStore,
        lanes: usize,
        runtime: tokio::runtime::Runtime,
    ) -> std::io::Result<Arc<Self>> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..lanes.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        let (audit, audit_rx) = mpsc::channel(AUDIT_QUEUE);
        let plain = store.clone();
        std::thread::Builder::new()
            .name("tollgate-store".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    for receiver in receivers {
                        tasks.push(tokio::spawn(group_commit::run_lane(
                            plain.clone(),
                            receiver,
                        )));
                    }
                    tasks.push(tokio::spawn(audit_writer::run(plain, audit_rx)));
                    for task in tasks {
                        if let Err(err) = task.await {
                            tracing::error!(error = %err, "a store background task failed");
                        }
                    }
                });
            })?;
        Ok(Arc::new(Self {
            lanes: senders,
            audit,
        }))
    }

    /// The lane an account's requests queue in: always the same one, so that requests on
    /// one account are grouped, and two lanes never lock the same account.
    pub(crate) fn lane(&self, account: &AccountId) -> &mpsc::UnboundedSender<Pending> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        account.as_str().hash(&mut hasher);
        let count = u64::try_from(self.lanes.len()).unwrap_or(1).max(1);
        let index = usize::try_from(hasher.finish() % count).unwrap_or(0);
        &self.lanes[index]
    }
}
