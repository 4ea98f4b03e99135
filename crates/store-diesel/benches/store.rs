//! Latency and throughput of a real ledger debit through the store, on SQLite (a temporary
//! file) and on PostgreSQL (a fresh schema, when TOLLGATE_TEST_DATABASE_URL is set):
//! one client at a time, and 32 clients spending 32 different accounts at once.

#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::print_stdout,
    reason = "benchmark timing arithmetic, not money"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billing_core::ids::{AccountId, PrefixedId, Ulid, UserId};
use billing_core::ledger::{
    GrantSource, IdempotencyKey, LedgerCommand, LedgerPolicy, LedgerRequest,
};
use billing_core::ports::{AccountStore, LedgerOutcome, LedgerStore};
use billing_core::records::{Account, Role, User};
use billing_core::testing::{FixedClock, SequentialIds};
use criterion::{Criterion, criterion_group, criterion_main};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use store_diesel::{DatabaseConfig, DieselStore, migrate};
use time::macros::datetime;

static KEY: AtomicU64 = AtomicU64::new(0);

fn config(url: String) -> DatabaseConfig {
    DatabaseConfig {
        url,
        pool_size: 16,
        connect_timeout: Duration::from_secs(30),
        busy_timeout: Duration::from_secs(30),
        read_cache: Duration::ZERO,
    }
}

async fn open(url: String) -> DieselStore {
    let config = config(url);
    migrate::run_pending(&config).await.unwrap();
    let clock = Arc::new(FixedClock::new(datetime!(2026-06-01 12:00 UTC)));
    DieselStore::connect(&config, clock, Arc::new(SequentialIds::default()))
        .await
        .unwrap()
}

async fn funded_accounts(store: &DieselStore, n: u128) -> Vec<AccountId> {
    let t0 = datetime!(2026-06-01 12:00 UTC);
    let mut accounts = Vec::new();
    for i in 0..n {
        let id = AccountId::from_ulid(Ulid(1_000 + i));
        let user = User {
            id: UserId::from_ulid(Ulid(2_000 + i)),
            account: id.clone(),
            email: format!("bench{i}@example.test"),
            name: None,
            role: Role::User,
            email_verified: false,
            password_hash: None,
            external_subject: None,
            created_at: t0,
        };
        store
            .create(
                Account {
                    id: id.clone(),
                    plan: "free".into(),
                    created_at: t0,
                },
                user,
            )
            .await
            .unwrap();
        let grant = LedgerCommand::Grant {
            amount: 1_000_000_000,
            source: GrantSource::Purchase,
            priority: 0,
            expires_at: None,
            rollover_cap: 0,
            rollover_until: None,
            reference: None,
            memo: None,
        };
        debit_with(store, &id, grant).await;
        accounts.push(id);
    }
    accounts
}

async fn debit_with(store: &DieselStore, account: &AccountId, command: LedgerCommand) {
    let key = IdempotencyKey::new(format!("b{}", KEY.fetch_add(1, Ordering::Relaxed))).unwrap();
    let request = LedgerRequest {
        account: account.clone(),
        key,
        command,
        policy: LedgerPolicy::default(),
        intent: None,
    };
    match store.execute(request).await.unwrap() {
        LedgerOutcome::Executed(Ok(_)) => {}
        other => panic!("{other:?}"),
    }
}

fn debit() -> LedgerCommand {
    LedgerCommand::Debit {
        amount: 1,
        reference: Some("short_chat".into()),
        memo: None,
    }
}

fn bench_backend(
    c: &mut Criterion,
    name: &str,
    store: DieselStore,
    runtime: &tokio::runtime::Runtime,
) {
    let accounts = runtime.block_on(funded_accounts(&store, 32));
    let mut group = c.benchmark_group(format!("{name} ledger debit"));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("1 client", |b| {
        b.to_async(runtime)
            .iter(|| debit_with(&store, &accounts[0], debit()));
    });
    group.bench_function("32 clients, per debit", |b| {
        b.to_async(runtime).iter_custom(|iters| {
            let (store, accounts) = (store.clone(), accounts.clone());
            async move {
                let started = Instant::now();
                let mut tasks = Vec::new();
                for account in accounts {
                    let store = store.clone();
                    let per_client = iters.div_ceil(32);
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..per_client {
                            debit_with(&store, &account, debit()).await;
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
                // Time per debit, as if iters debits ran (rounding up to 32 × per_client).
                started
                    .elapsed()
                    .mul_f64(iters as f64 / (iters.div_ceil(32) * 32) as f64)
            }
        });
    });
    group.finish();
}

fn store_benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = runtime.block_on(open(format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    )));
    bench_backend(c, "sqlite", sqlite, &runtime);

    if let Ok(admin) = std::env::var("TOLLGATE_TEST_DATABASE_URL") {
        let schema = format!("bench_{}", std::process::id());
        runtime.block_on(async {
            let mut conn = AsyncPgConnection::establish(&admin).await.unwrap();
            conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .unwrap();
        });
        let separator = if admin.contains('?') { '&' } else { '?' };
        let pg = runtime.block_on(open(format!(
            "{admin}{separator}options=-csearch_path%3D{schema}"
        )));
        bench_backend(c, "postgres", pg, &runtime);
        runtime.block_on(async {
            let mut conn = AsyncPgConnection::establish(&admin).await.unwrap();
            conn.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .unwrap();
        });
    } else {
        eprintln!("PostgreSQL benchmark skipped: TOLLGATE_TEST_DATABASE_URL is not set");
    }
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
