//! Background work that keeps the ledger honest over time.

use std::sync::Arc;
use std::time::Duration;

use billing_core::ledger::{
    IdempotencyKey, LedgerCommand, LedgerError, LedgerPolicy, LedgerRequest,
};
use billing_core::ports::{
    Clock, JobStore, LedgerOutcome, LedgerStore, Mail, Mailer, Pruned, RetentionStore,
    WebhookEventStore,
};
use billing_core::usecases::{Applied, Billing, Notice};
use tokio::sync::watch;

use crate::schedule::Scheduler;

/// Releases holds whose time is up, once per `every` across the instances, until `stop`
/// turns true.
pub async fn expire_holds(
    scheduler: Scheduler,
    store: impl LedgerStore,
    clock: Arc<dyn Clock>,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let (store, clock) = (&store, clock.as_ref());
    scheduler
        .every("expire_holds", every, stop, move || async move {
            let SweepReport { released, failed } =
                sweep_once(store, clock).await.map_err(|e| e.to_string())?;
            if released + failed > 0 {
                tracing::info!(released, failed, "released expired holds");
            }
            Ok(())
        })
        .await;
}

/// Forgets idempotency records older than `keep` (and job records older than a day), once
/// per `every` across the instances, until `stop` turns true.
pub async fn prune_idempotency(
    scheduler: Scheduler,
    store: impl RetentionStore + JobStore,
    clock: Arc<dyn Clock>,
    keep: time::Duration,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let (store, clock) = (&store, clock.as_ref());
    scheduler
        .every("prune_idempotency", every, stop, move || async move {
            let now = clock.now();
            let pruned = store
                .prune_idempotency(now - keep)
                .await
                .map_err(|e| e.to_string())?;
            if pruned != Pruned::default() {
                tracing::info!(
                    ledger_keys = pruned.ledger_keys,
                    api_keys = pruned.api_keys,
                    quota_events = pruned.quota_events,
                    "pruned old idempotency records"
                );
            }
            store
                .prune_runs(now - time::Duration::days(1))
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await;
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Holds released.
    pub released: usize,
    /// Holds that could not be released (logged; the next sweep tries them again).
    pub failed: usize,
}

/// The page size of a sweep.
const SWEEP_BATCH: u32 = 200;

/// One sweep over every hold that is due, page by page after a cursor. A hold that cannot
/// be released is logged, counted and skipped, so it never keeps the others waiting; only a
/// failure to list the due holds ends the sweep early.
pub async fn sweep_once(
    store: &impl LedgerStore,
    clock: &dyn Clock,
) -> Result<SweepReport, billing_core::ports::StoreError> {
    let mut report = SweepReport::default();
    let now = clock.now();
    let mut after = None;
    loop {
        let due = store.expired_holds(now, after.clone(), SWEEP_BATCH).await?;
        let Some((_, last)) = due.last() else {
            return Ok(report);
        };
        after = Some(last.clone());
        let batch = due.len();
        for (account, hold) in due {
            // A key per attempt: the ledger itself guarantees a hold is resolved once.
            let key = format!("hold-expiry:{hold}:{}", now.unix_timestamp());
            let Ok(key) = IdempotencyKey::new(key) else {
                continue;
            };
            let request = LedgerRequest {
                account: account.clone(),
                key,
                command: LedgerCommand::ExpireHold { hold: hold.clone() },
                policy: LedgerPolicy::default(),
                intent: None,
            };
            match store.execute(request).await {
                Ok(LedgerOutcome::Executed(Ok(_))) => report.released += 1,
                // Resolved meanwhile by a capture, a void or another worker.
                Ok(LedgerOutcome::Executed(Err(LedgerError::HoldNotPending { .. }))) => {}
                Ok(other) => {
                    report.failed += 1;
                    tracing::warn!(%account, %hold, outcome = ?other, "hold not released");
                }
                Err(err) => {
                    report.failed += 1;
                    tracing::warn!(%account, %hold, error = %err, "hold not released");
                }
            }
        }
        if batch < SWEEP_BATCH as usize {
            return Ok(report);
        }
    }
}

/// Grants each account on a plan with a daily or monthly allowance its current period's
/// credits, and applies the dunning policy ([`dunning_once`]), once per `every` across the
/// instances, until `stop` turns true. Safe to run any number of times all the same: each
/// period's grant is keyed by account and period start, and a plan is set only where it
/// differs.
pub async fn renew_allowances(
    scheduler: Scheduler,
    billing: Billing,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let billing = &billing;
    scheduler
        .every("renew_allowances", every, stop, move || async move {
            let granted = renew_once(billing).await.map_err(|e| e.to_string())?;
            if granted > 0 {
                tracing::info!(granted, "granted period allowances");
            }
            let demoted = dunning_once(billing).await.map_err(|e| e.to_string())?;
            if demoted > 0 {
                tracing::info!(demoted, "unpaid past the dunning grace: default plan");
            }
            Ok(())
        })
        .await;
}

/// One pass over the accounts whose plan has a daily or monthly allowance that they have
/// not been granted yet for the current period (so an idle pass touches no ledger); returns
/// how many allowances it newly granted. An account that fails is logged and skipped.
pub async fn renew_once(billing: &Billing) -> Result<usize, billing_core::usecases::BillingError> {
    let mut granted = 0;
    for plan in billing.catalog.plans.keys() {
        let Some(period) = billing.calendar_period(plan)? else {
            continue;
        };
        let reference = period.reference;
        let mut after = None;
        loop {
            let due = billing
                .accounts
                .accounts_due_allowance(plan.clone(), reference.clone(), after.clone(), 500)
                .await?;
            let Some(last) = due.last().cloned() else {
                break;
            };
            for account in &due {
                match billing.period_reset(account).await {
                    Ok(Some(moved)) if !moved.replayed => granted += 1,
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(%account, error = %err, "could not grant the allowance");
                    }
                }
            }
            after = Some(last);
        }
    }
    Ok(granted)
}

/// What one pass over the stored payment events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookReport {
    /// Applied (credits granted, or already granted).
    pub applied: usize,
    /// Nothing for Tollgate to do (another kind of event, an unknown account or pack).
    pub ignored: usize,
    /// Failed; tried again later, until the attempts run out.
    pub failed: usize,
}

/// Applies stored payment events, once per `every` across the instances (so a notice is
/// mailed by one of them), until `stop` turns true.
pub async fn apply_webhooks(
    scheduler: Scheduler,
    billing: Billing,
    events: Arc<dyn WebhookEventStore>,
    mailer: Arc<dyn Mailer>,
    max_attempts: u32,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let (billing, events, mailer) = (&billing, events.as_ref(), mailer.as_ref());
    scheduler
        .every("apply_payment_events", every, stop, move || async move {
            let report = apply_webhooks_once(billing, events, mailer, max_attempts)
                .await
                .map_err(|e| e.to_string())?;
            if report != WebhookReport::default() {
                tracing::info!(
                    applied = report.applied,
                    ignored = report.ignored,
                    failed = report.failed,
                    "applied payment events"
                );
            }
            Ok(())
        })
        .await;
}

/// After the `attempts`-th failure, wait 5 s × 2^(attempts-1), at most an hour.
fn webhook_backoff(attempts: u32) -> time::Duration {
    let seconds = 5i64.saturating_mul(1 << attempts.saturating_sub(1).min(12));
    time::Duration::seconds(seconds.min(3600))
}

/// One pass: every stored event that is due is applied once. Applying is idempotent (a
/// pack is granted once per payment by the database itself), so an event applied twice, by
/// two instances or after a crash, grants nothing more.
pub async fn apply_webhooks_once(
    billing: &Billing,
    events: &dyn WebhookEventStore,
    mailer: &dyn Mailer,
    max_attempts: u32,
) -> Result<WebhookReport, billing_core::ports::StoreError> {
    use billing_core::records::WebhookStatus;
    let mut report = WebhookReport::default();
    let now = billing.clock.now();
    loop {
        let due = events.due(now, max_attempts, 100).await?;
        if due.is_empty() {
            return Ok(report);
        }
        for event in due {
            let (status, note) = match apply_event(billing, &event.payload).await {
                Ok((Applied::Done(notices), linked)) => {
                    report.applied += 1;
                    if let Some(customer) = linked {
                        // Events about this customer that came first can be placed now.
                        let requeued = events.requeue_ignored_mentioning(&customer).await?;
                        if requeued > 0 {
                            tracing::info!(
                                requeued,
                                "events of a newly linked customer queued again"
                            );
                        }
                    }
                    for notice in &notices {
                        send_notice(billing, mailer, notice).await;
                    }
                    (WebhookStatus::Processed, None)
                }
                Ok((Applied::Ignored(why), _)) => {
                    report.ignored += 1;
                    (WebhookStatus::Ignored, Some(why))
                }
                Err(err) => {
                    report.failed += 1;
                    tracing::warn!(event = %event.external_id, error = %err, "payment event failed");
                    (WebhookStatus::Failed, Some(err))
                }
            };
            let retry_at = (status == WebhookStatus::Failed)
                .then(|| now + webhook_backoff(event.attempts + 1));
            events
                .mark(&event.external_id, status, note, retry_at)
                .await?;
        }
    }
}

/// Reads a stored Stripe event and applies what it means; also says which provider
/// customer it tied to an account for the first time, if any.
async fn apply_event(
    billing: &Billing,
    payload: &serde_json::Value,
) -> Result<(Applied, Option<String>), String> {
    use billing_core::usecases::BillingError;
    use payments_stripe::events::{Meaning, meaning};
    let event = match meaning(payload).map_err(|e| format!("unreadable: {e}"))? {
        Meaning::Ignored(why) => return Ok((Applied::Ignored(why), None)),
        Meaning::Event(event) => event,
    };
    // A customer this event may link for the first time.
    let mut linked = event.linked_customer().map(str::to_owned);
    if let Some(customer) = &linked {
        let known = billing
            .payments
            .customer_account(billing_core::payments::STRIPE, customer)
            .await
            .map_err(|e| e.to_string())?;
        if known.is_some() {
            linked = None;
        }
    }
    match billing.apply_payment_event(event).await {
        Ok(applied) => Ok((applied, linked)),
        Err(BillingError::AccountNotFound) => {
            Ok((Applied::Ignored("unknown account".into()), None))
        }
        Err(BillingError::UnknownPack(pack)) => {
            Ok((Applied::Ignored(format!("unknown pack `{pack}`")), None))
        }
        Err(err) => Err(err.to_string()),
    }
}

/// Mails a notice to the account's users. A failure is logged: the event is applied, and
/// a second delivery attempt would send the others twice.
async fn send_notice(billing: &Billing, mailer: &dyn Mailer, notice: &Notice) {
    let (account, subject, body) = match notice {
        Notice::PaymentFailed {
            account,
            final_attempt,
        } => (
            account,
            "Your payment failed",
            if *final_attempt {
                "We could not collect your subscription payment, and no retry remains. \
                 Please update your payment method to keep your plan."
                    .to_owned()
            } else {
                "We could not collect your subscription payment. We will try again; \
                 please check your payment method."
                    .to_owned()
            },
        ),
        Notice::TrialEnding { account, trial_end } => (
            account,
            "Your trial ends soon",
            match trial_end.and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }) {
                Some(at) => format!("Your free trial ends at {at}. Your subscription starts then."),
                None => "Your free trial ends soon. Your subscription starts then.".to_owned(),
            },
        ),
    };
    let users = match billing.accounts.account_users(account).await {
        Ok(users) => users,
        Err(err) => {
            tracing::warn!(%account, error = %err, "could not find whom to notify");
            return;
        }
    };
    for user in users {
        let mail = Mail {
            to: user.email,
            subject: subject.to_owned(),
            body: body.clone(),
        };
        if let Err(err) = mailer.send(mail).await {
            tracing::warn!(%account, error = %err, "could not send a billing notice");
        }
    }
}

/// Puts accounts whose renewal has been unpaid for longer than the catalog's dunning grace
/// on the default plan's entitlements (the provider may still collect; a payment puts the
/// plan back).
pub async fn dunning_once(billing: &Billing) -> Result<usize, billing_core::ports::StoreError> {
    let grace = time::Duration::days(i64::from(billing.catalog.dunning.grace_days));
    let before = billing.clock.now() - grace;
    let mut demoted = 0;
    for sub in billing.subscriptions.past_due_before(before, 1000).await? {
        match billing.refresh_plan(&sub.account).await {
            Ok(plan) if plan == billing.catalog.default_plan => demoted += 1,
            Ok(_) => {}
            Err(err) => tracing::warn!(account = %sub.account, error = %err, "dunning step failed"),
        }
    }
    Ok(demoted)
}
