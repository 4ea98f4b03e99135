//! The task queue's throughput and claim latency on PostgreSQL: tasks created (each with
//! its hold), then claimed and completed (each capture) by 1, 2 and 4 concurrent workers,
//! through the same use cases and store the server runs, without HTTP. A benchmark, not a
//! test; `tests/load/tasks.sh` runs it beside pgbench.
//!
//!   cargo run --release -p app --example task_queue_bench -- [postgres://…/db] [tasks] [accounts]

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::print_stdout,
    reason = "benchmark timing arithmetic and its table, not money"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use app::settings::{Sources, load};
use billing_core::ports::Clock;
use billing_core::usecases::{CreateTask, SignUp, Tasks};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::json;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // The nearest rank, in integers: `p` percent of the last index.
    let last = sorted.len() - 1;
    let rank = (last * p + 50) / 100;
    sorted[rank.min(last)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1_000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let admin = args
        .first()
        .cloned()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let per_run: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let accounts: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(50);
    let schema = format!("taskbench_{}", std::process::id());
    let mut conn = AsyncPgConnection::establish(&admin)
        .await
        .expect("PostgreSQL");
    conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{separator}options=-csearch_path%3D{schema}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut loaded = load(&Sources {
        dir: root.join("config"),
        environment: "production".into(),
        files: Vec::new(),
    })
    .or_else(|_| {
        load(&Sources {
            dir: root.join("config"),
            environment: "development".into(),
            files: Vec::new(),
        })
    })
    .expect("configuration");
    loaded.settings.database.url = url;
    loaded.settings.database.pool_size = 16;
    let config = loaded.settings.database.config();
    store_diesel::migrate::run_pending(&config).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(app::system::SystemClock);
    let store = Arc::new(
        store_diesel::DieselStore::connect(
            &config,
            clock.clone(),
            Arc::new(app::system::UlidGenerator::default()),
        )
        .await
        .unwrap(),
    );
    let billing = app::server::billing(
        &loaded.settings,
        loaded.catalog.clone(),
        store.clone(),
        clock,
    );
    let tasks = Tasks {
        billing: billing.clone(),
        store: store.clone(),
        notify: false,
    };
    let llm = app::server::llm_providers(&loaded.settings).unwrap();
    let mut payers = Vec::new();
    for n in 0..accounts {
        let signed = billing
            .sign_up(SignUp {
                email: format!("bench{n}@example.com"),
                name: None,
                password_hash: None,
                external_subject: Some(format!("bench-{n}")),
                email_verified: false,
            })
            .await
            .unwrap();
        billing
            .adjust(
                &signed.account.id,
                1_000_000_000,
                "benchmark",
                &format!("fund-{n}"),
            )
            .await
            .unwrap();
        payers.push(signed.account.id);
    }

    println!(
        "| workers | tasks | created/s (4 clients) | claimed+completed/s | claim p50 ms | claim p99 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for workers in [1usize, 2, 4] {
        // Create: 4 concurrent clients, round robin over the accounts.
        let started = Instant::now();
        let mut creators = Vec::new();
        for c in 0..4 {
            let tasks = tasks.clone();
            let payers = payers.clone();
            let llm = llm.clone();
            creators.push(tokio::spawn(async move {
                for i in (c..per_run).step_by(4) {
                    tasks
                        .create(
                            CreateTask {
                                account: payers[i % payers.len()].clone(),
                                kind: "image_analysis".into(),
                                input: json!({"image": i}),
                                idempotency_key: None,
                            },
                            &llm,
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for c in creators {
            c.await.unwrap();
        }
        let created_rate = per_run as f64 / started.elapsed().as_secs_f64();

        // Claim and complete until the queue is empty.
        let started = Instant::now();
        let mut runners = Vec::new();
        for w in 0..workers {
            let tasks = tasks.clone();
            runners.push(tokio::spawn(async move {
                let name = format!("bench-{w}");
                let mut latencies = Vec::new();
                loop {
                    let t0 = Instant::now();
                    let claimed = tasks
                        .claim(&name, vec!["image_analysis".into()], 1, None)
                        .await
                        .unwrap();
                    latencies.push(t0.elapsed());
                    let Some(task) = claimed.into_iter().next() else {
                        return latencies;
                    };
                    tasks
                        .complete(
                            &task.id,
                            task.attempts,
                            json!({"ok": true}),
                            Some(30),
                            &name,
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        let mut latencies = Vec::new();
        for r in runners {
            latencies.extend(r.await.unwrap());
        }
        let done_rate = per_run as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        println!(
            "| {workers} | {per_run} | {created_rate:.0} | {done_rate:.0} | {} | {} |",
            ms(percentile(&latencies, 50)),
            ms(percentile(&latencies, 99))
        );
    }
    conn.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
