//! Group commit: ledger requests that arrive together share one transaction.
//!
//! Each lane (see [`crate::background`]) takes everything queued in it, up to
//! [`MAX_GROUP`] requests. One request runs alone, as before. Several run in one transaction
//! (`ledger_execute_group`): their accounts are locked at once, then each request reads,
//! decides and writes in turn, seeing the ones before it, and each keeps its own idempotency
//! record and outcome, exactly as if they had committed one after the other. The group costs
//! one commit (one WAL flush) instead of one per request, and on a hot account the lock is
//! taken once instead of being handed from transaction to transaction.
//!
//! A group is all-or-nothing only as a way to commit: if its transaction fails for any
//! reason other than a retryable conflict, every request in it runs again alone, so that one
//! bad request fails by itself and the others are unaffected.

use billing_core::ids::PrefixedId;
use billing_core::ledger::{Fingerprint, LedgerRequest};
use billing_core::ports::{LedgerOutcome, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::db::TxError;
use crate::sql::transaction_call;
use crate::store::DieselStore;

/// The most requests one transaction takes.
pub(crate) const MAX_GROUP: usize = 128;

/// A request waiting in a lane, and where its outcome goes.
pub(crate) struct Pending {
    pub(crate) request: LedgerRequest,
    pub(crate) reply: oneshot::Sender<Result<LedgerOutcome, StoreError>>,
}

/// Serves one lane until its queue closes.
pub(crate) async fn run_lane(store: DieselStore, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut batch, MAX_GROUP).await > 0 {
        store.run_group(std::mem::take(&mut batch)).await;
    }
}

impl DieselStore {
    /// Runs what a lane took: one request alone, several in one transaction.
    async fn run_group(&self, batch: Vec<Pending>) {
        if batch.len() == 1 {
            self.run_alone(batch).await;
            return;
        }
        let requests: Vec<(LedgerRequest, Fingerprint)> = batch
            .iter()
            .map(|p| (p.request.clone(), p.request.fingerprint()))
            .collect();
        match self.execute_group(requests).await {
            Ok(outcomes) if outcomes.len() == batch.len() => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            result => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, size = batch.len(), "group failed; each request runs alone");
                }
                self.run_alone(batch).await;
            }
        }
    }

    /// Each request in its own transaction, in turn.
    async fn run_alone(&self, batch: Vec<Pending>) {
        for pending in batch {
            let outcome = self.execute_now(pending.request).await;
            let _ = pending.reply.send(outcome);
        }
    }

    /// Several requests in one transaction (retried whole on a retryable conflict).
    async fn execute_group(
        &self,
        requests: Vec<(LedgerRequest, Fingerprint)>,
    ) -> Result<Vec<LedgerOutcome>, StoreError> {
        let _writer = self.pool.write_guard().await;
        let outcomes = self
            .retrying(|| {
                let requests = requests.clone();
                let ids = self.ids.clone();
                let now = self.clock.now();
                async move {
                    let mut conn = self.pool.get().await.map_err(TxError::Store)?;
                    transaction_call!(conn, ledger_execute_group(requests, now, ids))
                }
            })
            .await;
        for (request, _) in &requests {
            self.cache.balance_changed(request.account.as_str());
        }
        outcomes
    }
}
