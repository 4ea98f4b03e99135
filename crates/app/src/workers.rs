//! Background work that keeps the ledger honest over time.

use std::sync::Arc;
use std::time::Duration;

use billing_core::catalog::Cadence;
use billing_core::ledger::{IdempotencyKey, LedgerCommand, LedgerPolicy, LedgerRequest};
use billing_core::ports::{Clock, LedgerOutcome, LedgerStore};
use billing_core::usecases::Billing;
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

/// Grants each account on a plan with a daily or monthly allowance its current period's
/// credits, every `every`, until `stop` turns true. Safe to run any number of times (and in
/// several processes): each period's grant is keyed by account and period start.
pub async fn renew_allowances(billing: Billing, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        match renew_once(&billing).await {
            Ok(0) => {}
            Ok(granted) => tracing::info!(granted, "granted period allowances"),
            Err(err) => tracing::warn!(error = %err, "allowance renewal failed; will retry"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass over every account on a plan with a daily or monthly allowance; returns how
/// many allowances it newly granted.
pub async fn renew_once(billing: &Billing) -> Result<usize, billing_core::usecases::BillingError> {
    let plans: Vec<String> = billing
        .catalog
        .plans
        .iter()
        .filter(|(_, plan)| {
            plan.allowance
                .as_ref()
                .is_some_and(|a| matches!(a.cadence, Cadence::Day | Cadence::Month))
        })
        .map(|(id, _)| id.clone())
        .collect();
    if plans.is_empty() {
        return Ok(0);
    }
    let mut granted = 0;
    let mut after = None;
    loop {
        let batch = billing
            .accounts
            .accounts_on_plans(plans.clone(), after.clone(), 500)
            .await?;
        let Some(last) = batch.last().cloned() else {
            return Ok(granted);
        };
        for account in &batch {
            match billing.period_reset(account).await {
                Ok(Some(moved)) if !moved.replayed => granted += 1,
                Ok(_) => {}
                Err(err) => tracing::warn!(%account, error = %err, "could not grant the allowance"),
            }
        }
        after = Some(last);
    }
}
