//! Background work that keeps the ledger honest over time.

use std::sync::Arc;
use std::time::Duration;

use billing_core::ledger::{IdempotencyKey, LedgerCommand, LedgerPolicy, LedgerRequest};
use billing_core::ports::{Clock, LedgerOutcome, LedgerStore};
use tokio::sync::watch;

/// Releases holds whose time is up, every `every`, until `stop` turns true.
pub async fn expire_holds(
    store: impl LedgerStore,
    clock: Arc<dyn Clock>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        match sweep_once(&store, clock.as_ref()).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released expired holds"),
            Err(err) => tracing::warn!(error = %err, "hold sweep failed; will retry"),
        }
    }
}

/// One sweep: expires every hold that is due (in batches); returns how many it released.
pub async fn sweep_once(
    store: &impl LedgerStore,
    clock: &dyn Clock,
) -> Result<usize, billing_core::ports::StoreError> {
    let mut released = 0;
    loop {
        let now = clock.now();
        let due = store.expired_holds(now, 200).await?;
        if due.is_empty() {
            return Ok(released);
        }
        let batch = due.len();
        let before = released;
        for (account, hold) in due {
            // A key per attempt: the ledger itself guarantees a hold is resolved once.
            let key = format!("hold-expiry:{hold}:{}", now.unix_timestamp());
            let Ok(key) = IdempotencyKey::new(key) else {
                continue;
            };
            let request = LedgerRequest {
                account,
                key,
                command: LedgerCommand::ExpireHold { hold },
                policy: LedgerPolicy::default(),
            };
            if let LedgerOutcome::Executed(Ok(_)) = store.execute(request).await? {
                released += 1;
            }
        }
        // A short batch was the last; a batch that released nothing would only repeat.
        if batch < 200 || released == before {
            return Ok(released);
        }
    }
}
