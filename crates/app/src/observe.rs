//! What `/metrics` reads from the application: ledger operations as they happen, and at each
//! scrape the queues and the database pool.

use std::sync::Arc;

use async_trait::async_trait;
use billing_core::ids::{AccountId, HoldId};
use billing_core::ledger::{AccountSnapshot, LedgerCommand, LedgerRequest, Transaction};
use billing_core::ports::{Clock, JobStore, LedgerOutcome, LedgerStore, StoreError};
use billing_core::records::{Balance, Page, PageRequest};
use http_api::metrics::{LedgerLabels, Metrics, PoolLabels, QueueLabels, Scrape};
use store_diesel::DieselStore;
use time::OffsetDateTime;

/// The ledger, counting each operation by kind and outcome.
pub struct MeteredLedger {
    /// The ledger itself.
    pub inner: Arc<dyn LedgerStore>,
    /// Where the counts go.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MeteredLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredLedger").finish_non_exhaustive()
    }
}

fn operation(command: &LedgerCommand) -> &'static str {
    match command {
        LedgerCommand::Grant { .. } => "grant",
        LedgerCommand::Debit { .. } => "debit",
        LedgerCommand::Reserve { .. } => "reserve",
        LedgerCommand::Capture { .. } => "capture",
        LedgerCommand::Void { .. } => "void",
        LedgerCommand::ExpireHold { .. } => "expire_hold",
        LedgerCommand::Refund { .. } => "refund",
        LedgerCommand::Clawback { .. } => "clawback",
        LedgerCommand::ExpireGrants => "expire_grants",
    }
}

impl MeteredLedger {
    fn count(&self, operation: &str, outcome: &str, reason: &str) {
        self.metrics
            .ledger_operations
            .get_or_create(&LedgerLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

#[async_trait]
impl LedgerStore for MeteredLedger {
    async fn execute(&self, request: LedgerRequest) -> Result<LedgerOutcome, StoreError> {
        let operation = operation(&request.command);
        let outcome = self.inner.execute(request).await;
        match &outcome {
            Ok(LedgerOutcome::Executed(Ok(_))) => self.count(operation, "executed", ""),
            Ok(LedgerOutcome::Executed(Err(refused))) => {
                self.count(operation, "refused", refused.code());
            }
            Ok(LedgerOutcome::Replayed(_)) => self.count(operation, "replayed", ""),
            Ok(LedgerOutcome::Conflict) => self.count(operation, "conflict", ""),
            Err(_) => self.count(operation, "error", ""),
        }
        outcome
    }

    async fn balance(&self, account: &AccountId) -> Result<Balance, StoreError> {
        self.inner.balance(account).await
    }

    async fn journal(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<Transaction>, StoreError> {
        self.inner.journal(account, page).await
    }

    async fn snapshot(&self, account: &AccountId) -> Result<AccountSnapshot, StoreError> {
        self.inner.snapshot(account).await
    }

    async fn expired_holds(
        &self,
        now: OffsetDateTime,
        after: Option<HoldId>,
        limit: u32,
    ) -> Result<Vec<(AccountId, HoldId)>, StoreError> {
        self.inner.expired_holds(now, after, limit).await
    }
}

/// Reads the queues and the pool from the store at each scrape.
pub struct StoreScrape {
    /// The store.
    pub store: DieselStore,
    /// The time the queues' ages are measured at.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for StoreScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreScrape").finish_non_exhaustive()
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Scrape for StoreScrape {
    async fn refresh(&self, metrics: &Metrics) {
        let pool = self.store.pool_status();
        for (state, value) in [
            ("idle", pool.idle),
            ("in_use", pool.open.saturating_sub(pool.idle)),
            ("max", pool.max),
            ("waiting", pool.waiting),
        ] {
            metrics
                .db_pool
                .get_or_create(&PoolLabels {
                    state: state.into(),
                })
                .set(gauge_value(value));
        }
        match self.store.queues().await {
            Ok(queues) => {
                let now = self.clock.now();
                for queue in queues {
                    let labels = QueueLabels {
                        queue: queue.queue.clone(),
                    };
                    metrics
                        .queue_depth
                        .get_or_create(&labels)
                        .set(i64::try_from(queue.depth).unwrap_or(i64::MAX));
                    let age = queue
                        .oldest
                        .map_or(0, |oldest| (now - oldest).whole_seconds().max(0));
                    metrics.queue_oldest_age.get_or_create(&labels).set(age);
                }
            }
            Err(err) => tracing::warn!(error = %err, "queue depths not read for the metrics"),
        }
    }
}
