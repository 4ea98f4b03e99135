//! A fresh database per test: a temporary SQLite file, or a new PostgreSQL schema (cloned
//! from nothing by running the embedded migrations into it), so tests run in parallel.
//!
//! The PostgreSQL half runs when `TOLLGATE_TEST_DATABASE_URL` is set (CI sets it); without
//! it those tests pass after saying plainly that they were skipped, unless
//! `TOLLGATE_REQUIRE_POSTGRES=1`, which makes a missing database a failure.

#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use billing_core::ports::{Clock, IdGenerator};
use billing_core::testing::{FixedClock, SequentialIds};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use store_diesel::{DatabaseConfig, DieselStore, migrate};
use time::OffsetDateTime;
use time::macros::datetime;

pub const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

/// Writes to the real stderr, past the test harness's capture, so a run always shows it.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

pub struct TestDb {
    pub store: DieselStore,
    pub config: DatabaseConfig,
    pub clock: Arc<FixedClock>,
    pub backend: &'static str,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

fn config(url: String) -> DatabaseConfig {
    DatabaseConfig {
        url,
        pool_size: 16,
        connect_timeout: Duration::from_secs(30),
        busy_timeout: Duration::from_secs(30),
        read_cache: Duration::ZERO,
    }
}

/// A store on `config` with ids from a counter and the given test clock.
async fn connect(config: &DatabaseConfig, clock: &Arc<FixedClock>) -> DieselStore {
    let ids: Arc<dyn IdGenerator> = Arc::new(SequentialIds::default());
    DieselStore::connect(config, clock.clone() as Arc<dyn Clock>, ids)
        .await
        .expect("connect")
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path().join("tollgate.db").display().to_string());
        migrate::run_pending(&config).await.expect("migrate sqlite");
        Self::finish(config, "sqlite", Cleanup::Sqlite(dir)).await
    }

    /// `None` (after saying so once) when no PostgreSQL is configured.
    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("TOLLGATE_TEST_DATABASE_URL") else {
            if std::env::var("TOLLGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("TOLLGATE_REQUIRE_POSTGRES=1 but TOLLGATE_TEST_DATABASE_URL is not set");
            }
            static SKIPPED: Once = Once::new();
            SKIPPED.call_once(|| {
                say(
                    "NOTE: the PostgreSQL half of the store tests was SKIPPED: set \
                     TOLLGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test to run it",
                );
            });
            return None;
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at TOLLGATE_TEST_DATABASE_URL: {e}")
            });
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{admin_url}{separator}options=-csearch_path%3D{schema}&application_name={schema}"
        );
        let config = config(url);
        migrate::run_pending(&config)
            .await
            .expect("migrate postgres");
        Some(Self::finish(config, "postgres", Cleanup::Postgres { admin_url, schema }).await)
    }

    /// A second store on the same database, as another instance of the server would have,
    /// with a read cache of `read_cache`.
    pub async fn another_instance(&self, read_cache: Duration) -> DieselStore {
        let config = DatabaseConfig {
            read_cache,
            ..self.config.clone()
        };
        connect(&config, &self.clock).await
    }

    async fn finish(config: DatabaseConfig, backend: &'static str, cleanup: Cleanup) -> Self {
        let clock = Arc::new(FixedClock::new(T0));
        let store = connect(&config, &clock).await;
        Self {
            store,
            config,
            clock,
            backend,
            cleanup,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, schema } = &self.cleanup {
            let (url, schema) = (admin_url.clone(), schema.clone());
            // Drop the schema from a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    if let Ok(mut conn) = AsyncPgConnection::establish(&url).await {
                        let _ = conn
                            .batch_execute(&format!(
                                // A connection of the app's pool may sit in a transaction
                                // that a task of this test's (now stopped) runtime began:
                                // end those first, or the DROP waits on them for ever.
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                 WHERE application_name = '{schema}'; \
                                 DROP SCHEMA {schema} CASCADE"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Generates one test per backend for each listed async fn taking `&TestDb`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = $crate::common::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                }
            )*
        }
    };
}
