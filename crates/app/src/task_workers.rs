//! The task queue's background work: workers that run `llm` tasks, the sweeper that
//! requeues tasks whose lease ran out and fails those past their deadline, and the sender
//! of the webhooks that announce finished tasks. `tollgate serve` runs all three;
//! `tollgate worker` runs them without the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use billing_core::catalog::TaskRun;
use billing_core::ports::{LlmRouter, UsageStore};
use billing_core::tasks::{Delivery, DeliveryStatus, delivery_backoff};
use billing_core::usecases::{BillingError, Tasks};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The `llm` task types of the catalog.
fn llm_kinds(tasks: &Tasks) -> Vec<String> {
    tasks
        .billing
        .catalog
        .tasks
        .iter()
        .filter(|(_, t)| t.run == TaskRun::Llm)
        .map(|(id, _)| id.clone())
        .collect()
}

/// A name for this process's workers: host and process id.
pub fn worker_name(n: u32) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tollgate".into());
    format!("{host}-{}-{n}", std::process::id())
}

/// Starts `count` workers that claim and run `llm` tasks until `stop` turns true; each
/// finishes the task in hand before it stops.
pub fn run_llm_workers(
    tasks: &Tasks,
    router: Arc<dyn LlmRouter>,
    usage: Arc<dyn UsageStore>,
    count: u32,
    poll: Duration,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let kinds = llm_kinds(tasks);
    if kinds.is_empty() || count == 0 {
        return Vec::new();
    }
    (1..=count)
        .map(|n| {
            let tasks = tasks.clone();
            let router = router.clone();
            let usage = usage.clone();
            let kinds = kinds.clone();
            let mut stop = stop.clone();
            let name = worker_name(n);
            tokio::spawn(async move {
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    let claimed = match tasks.claim(&name, kinds.clone(), 1, None).await {
                        Ok(claimed) => claimed,
                        Err(err) => {
                            tracing::warn!(worker = %name, error = %err, "claim failed; will retry");
                            Vec::new()
                        }
                    };
                    if claimed.is_empty() {
                        tokio::select! {
                            _ = stop.changed() => return,
                            () = tokio::time::sleep(poll) => continue,
                        }
                    }
                    for task in claimed {
                        match tasks.run_llm(&task, &name, router.as_ref(), usage.as_ref()).await {
                            Ok(done) => tracing::debug!(
                                task = %done.id, status = done.status.as_str(), "task run"
                            ),
                            // Cancelled or timed out while it ran: nothing to charge.
                            Err(BillingError::TaskState { status, .. }) => tracing::info!(
                                task = %task.id, status = status.as_str(), "task moved on while it ran"
                            ),
                            Err(err) => {
                                tracing::warn!(task = %task.id, error = %err, "task run failed");
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// Sweeps leases and deadlines, once per `every` across the instances, until `stop` turns
/// true.
pub async fn sweep_tasks(
    scheduler: crate::schedule::Scheduler,
    tasks: Tasks,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let tasks = &tasks;
    scheduler
        .every("sweep_tasks", every, stop, move || async move {
            let report = tasks.sweep().await.map_err(|e| e.to_string())?;
            if report.requeued + report.failed > 0 {
                tracing::info!(
                    requeued = report.requeued,
                    failed = report.failed,
                    "task sweep"
                );
            }
            Ok(())
        })
        .await;
}

/// Where and how finished tasks are announced.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The endpoint.
    pub url: String,
    /// The signing secret.
    pub secret: SecretString,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// `Tollgate-Signature: t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{body}"}`: the scheme
/// Stripe uses, so receivers can verify with code they know (and refuse old timestamps).
pub fn signature(secret: &str, at: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{at}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={at},v1={hex}")
}

/// Sends due deliveries every `every` until `stop` turns true: a 2xx answer delivers; any
/// other answer or no answer tries again after a backoff (10 s doubling to an hour), up to
/// `max_attempts`, then the delivery is marked failed (listed for the admin).
pub async fn deliver_webhooks(
    tasks: Tasks,
    target: WebhookTarget,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(target.timeout)
        .user_agent("Tollgate-Webhooks/1")
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook client; no webhooks will be sent");
            return;
        }
    };
    loop {
        let now = tasks.billing.clock.now();
        // Leased for longer than one attempt can take, so another sender leaves them be.
        let until = now
            + time::Duration::seconds(60)
            + time::Duration::try_from(target.timeout).unwrap_or_default();
        match tasks.store.claim_deliveries(now, until, 20).await {
            Ok(due) => {
                for delivery in due {
                    send(&tasks, &client, &target, delivery).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read due webhooks; will retry"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn send(tasks: &Tasks, client: &reqwest::Client, target: &WebhookTarget, mut d: Delivery) {
    let body = d.payload.to_string();
    let now = tasks.billing.clock.now();
    let answer = client
        .post(&target.url)
        .header("content-type", "application/json")
        .header("tollgate-event-id", &d.id)
        .header(
            "tollgate-signature",
            signature(target.secret.expose_secret(), now.unix_timestamp(), &body),
        )
        .body(body)
        .send()
        .await;
    d.attempts += 1;
    match answer {
        Ok(response) if response.status().is_success() => {
            d.status = DeliveryStatus::Delivered;
            d.delivered_at = Some(now);
            d.last_status = Some(response.status().as_u16());
            d.last_error = None;
        }
        Ok(response) => {
            d.last_status = Some(response.status().as_u16());
            d.last_error = Some(format!("the endpoint answered {}", response.status()));
        }
        Err(err) => {
            d.last_status = None;
            d.last_error = Some(if err.is_timeout() {
                "no answer in time".to_owned()
            } else {
                "the endpoint could not be reached".to_owned()
            });
        }
    }
    if d.status != DeliveryStatus::Delivered {
        if d.attempts >= target.max_attempts {
            d.status = DeliveryStatus::Failed;
            tracing::warn!(delivery = %d.id, task = %d.task, attempts = d.attempts, "webhook given up");
        } else {
            d.next_attempt_at = now + delivery_backoff(d.attempts);
        }
    }
    if let Err(err) = tasks.store.delivery_attempted(&d).await {
        tracing::warn!(delivery = %d.id, error = %err, "cannot record the webhook attempt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently with Python's hmac.
        assert_eq!(
            signature("secret", 1_700_000_000, "{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
