//! Connections to either backend, and the few places where the dialects really differ.
//!
//! One body of query code serves both backends (see [`crate::sql`]): the schema uses only
//! SQL types that mean the same on both, so the same code type-checks twice. The dialects
//! differ only in:
//!
//! * how a transaction begins: PostgreSQL `BEGIN` (READ COMMITTED) with the account row
//!   locked `FOR NO KEY UPDATE`; SQLite `BEGIN IMMEDIATE`, which takes the database's write lock at
//!   once ([`sqlite_begin_immediate`], `sql::{pg,sqlite}::lock_account`);
//! * which errors mean "try again": PostgreSQL serialization failures and deadlocks, SQLite
//!   `database is locked` ([`is_retryable`]);
//! * connection setup: SQLite pragmas (WAL, busy_timeout, foreign keys) on every connection.

use std::path::Path;
use std::time::Duration;

use billing_core::ports::{Conflict, StoreError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool as DeadPool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use time::OffsetDateTime;

/// A SQLite connection usable from async code (each call runs on a blocking thread).
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// A URL without its password (`postgres://app:***@host/db`), for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// How to reach the database. Its `Debug` shows the URL without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `postgres://…`, `sqlite://path`, `sqlite:path` or a plain file path.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long to wait for a free connection (and to connect).
    pub connect_timeout: Duration,
    /// SQLite: how long a writer waits for the lock before `database is locked`.
    pub busy_timeout: Duration,
    /// How long an account, its subscription and its balance may be served from memory
    /// (see the store's read cache); zero reads the database every time.
    pub read_cache: Duration,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .field("read_cache", &self.read_cache)
            .finish()
    }
}

impl DatabaseConfig {
    /// The backend the URL names.
    pub fn backend(&self) -> Backend {
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// For SQLite, creates the folder the file goes in, if missing.
    pub(crate) fn create_sqlite_dir(&self) -> Result<(), StoreError> {
        let path = Path::new(self.sqlite_path());
        match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            }),
            None => Ok(()),
        }
    }

    /// For SQLite, the file path (without any `sqlite:` prefix).
    pub fn sqlite_path(&self) -> &str {
        self.url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))
            .unwrap_or(&self.url)
    }
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// `postgres` or `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A pool of connections to one backend.
/// The database pool's connections at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most it opens.
    pub max: usize,
    /// Open now.
    pub open: usize,
    /// Open and not in use.
    pub idle: usize,
    /// Callers waiting for one.
    pub waiting: usize,
}

#[derive(Clone)]
pub(crate) enum Pool {
    Pg(DeadPool<AsyncPgConnection>),
    Sqlite {
        pool: DeadPool<SqliteConn>,
        /// SQLite allows one writer at a time; writers queue here instead of spinning on
        /// `database is locked` (busy_timeout still covers other processes).
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    },
}

/// A pooled connection to one backend.
pub(crate) enum Conn {
    Pg(Object<AsyncPgConnection>),
    Sqlite(Object<SqliteConn>),
}

/// The error inside a transaction: a database error (which rolls back, and may be retried)
/// or a store error to report as is (which also rolls back).
#[derive(Debug)]
pub(crate) enum TxError {
    Db(DieselError),
    Store(StoreError),
    /// The ledger refused a request that had to succeed for the transaction to stand: roll
    /// back, and report the refusal.
    Refused(billing_core::ledger::LedgerError),
}

impl From<DieselError> for TxError {
    fn from(err: DieselError) -> Self {
        Self::Db(err)
    }
}

impl From<StoreError> for TxError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// SQLite's `BEGIN IMMEDIATE`, through diesel's transaction manager so that its state is
/// tracked: a connection dropped mid-transaction is discarded by the pool, never reused.
pub(crate) async fn sqlite_begin_immediate(conn: &mut SqliteConn) -> Result<(), TxError> {
    use diesel::connection::AnsiTransactionManager;
    conn.spawn_blocking(|c| AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"))
        .await?;
    Ok(())
}

/// Commits after success, rolls back after failure (pairs with [`sqlite_begin_immediate`]).
pub(crate) async fn sqlite_finish<R>(
    conn: &mut SqliteConn,
    result: Result<R, TxError>,
) -> Result<R, TxError> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    match result {
        Ok(value) => {
            conn.spawn_blocking(AnsiTransactionManager::commit_transaction)
                .await?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = conn
                .spawn_blocking(AnsiTransactionManager::rollback_transaction)
                .await
            {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}

/// Whether a failed transaction should simply be run again.
pub(crate) fn is_retryable(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            message.contains("deadlock detected")
                || message.contains("database is locked")
                || message.contains("database table is locked")
        }
        _ => false,
    }
}

/// How often a transaction is tried before its failure is reported.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// A short, growing pause between attempts.
pub(crate) async fn backoff(attempt: u32) {
    let millis = 2u64.saturating_pow(attempt.min(7)) + u64::from(attempt);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Maps a database error to the port's error contract.
pub(crate) fn store_error(err: DieselError) -> StoreError {
    match err {
        DieselError::NotFound => StoreError::NotFound,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            StoreError::Conflict(conflict_name(info.constraint_name(), info.message()))
        }
        other if is_retryable(&other) => StoreError::Unavailable(other.to_string()),
        other => StoreError::Other(other.to_string()),
    }
}

/// Which rule a uniqueness violation broke: PostgreSQL names the constraint (index), SQLite
/// lists the columns in its message. The one place that reads either.
fn conflict_name(constraint: Option<&str>, message: &str) -> Conflict {
    let text = constraint.unwrap_or(message);
    let rules = [
        ("one_period_allowance", Conflict::PeriodAllowance),
        (
            "grants.account_id, grants.reference",
            Conflict::PeriodAllowance,
        ),
        ("one_purchase", Conflict::PaymentGranted),
        ("grants.reference", Conflict::PaymentGranted),
        ("one_live", Conflict::LiveSubscription),
        ("subscriptions.account_id", Conflict::LiveSubscription),
        ("external_subject", Conflict::ExternalSubject),
        ("external_id", Conflict::ExternalId),
        ("email", Conflict::Email),
    ];
    rules
        .into_iter()
        .find(|(pattern, _)| text.contains(pattern))
        .map_or_else(|| Conflict::Other(text.to_owned()), |(_, rule)| rule)
}

pub(crate) fn tx_error(err: TxError) -> StoreError {
    match err {
        TxError::Db(err) => store_error(err),
        TxError::Store(err) => err,
        TxError::Refused(err) => StoreError::Other(format!("the ledger refused: {err}")),
    }
}

impl Pool {
    /// Connects and checks the connection works. PostgreSQL connections are established on
    /// `runtime` (the store's own), where each one's driver task then lives: a connection
    /// must not depend on whichever runtime first asked the pool for it, which may stop
    /// (a web server's worker) or stand still (a caller blocked) while others still use it.
    pub(crate) async fn connect(
        config: &DatabaseConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, StoreError> {
        let pool = match config.backend() {
            Backend::Postgres => {
                // Fast recycling: a connection comes back from the pool without a `SELECT 1`
                // first (a round trip per checkout); a broken one is still discarded, and a
                // query on a connection that died meanwhile fails as retryable.
                let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup = Box::new(move |url| {
                    let url = url.to_owned();
                    let runtime = runtime.clone();
                    Box::pin(async move {
                        runtime
                            .spawn(async move { AsyncPgConnection::establish(&url).await })
                            .await
                            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?
                    })
                });
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    config.url.clone(),
                    manager_config,
                );
                let pool = DeadPool::builder(manager)
                    .max_size(config.pool_size)
                    .wait_timeout(Some(config.connect_timeout))
                    .create_timeout(Some(config.connect_timeout))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                Self::Pg(pool)
            }
            Backend::Sqlite => {
                let path = config.sqlite_path().to_owned();
                config.create_sqlite_dir()?;
                let busy = config.busy_timeout.as_millis();
                let mut manager_config = ManagerConfig::<SqliteConn>::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup = Box::new(move |url| {
                    let url = url.to_owned();
                    Box::pin(async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(&format!(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {busy}; \
                             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;"
                        ))
                        .await
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    })
                });
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    path,
                    manager_config,
                );
                let pool = DeadPool::builder(manager)
                    .max_size(config.pool_size)
                    .wait_timeout(Some(config.connect_timeout))
                    .create_timeout(Some(config.connect_timeout))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                Self::Sqlite {
                    pool,
                    write_lock: std::sync::Arc::new(tokio::sync::Mutex::new(())),
                }
            }
        };
        pool.ping().await?;
        Ok(pool)
    }

    /// How many connections are open, idle and at most allowed, and how many callers wait.
    pub(crate) fn status(&self) -> PoolStatus {
        let status = match self {
            Self::Pg(pool) => pool.status(),
            Self::Sqlite { pool, .. } => pool.status(),
        };
        PoolStatus {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Self::Pg(_) => Backend::Postgres,
            Self::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// A connection from the pool.
    pub(crate) async fn get(&self) -> Result<Conn, StoreError> {
        let unavailable = |e: diesel_async::pooled_connection::deadpool::PoolError| {
            StoreError::Unavailable(e.to_string())
        };
        Ok(match self {
            Self::Pg(pool) => Conn::Pg(pool.get().await.map_err(unavailable)?),
            Self::Sqlite { pool, .. } => Conn::Sqlite(pool.get().await.map_err(unavailable)?),
        })
    }

    /// For SQLite, the in-process writer queue; `None` for PostgreSQL.
    pub(crate) async fn write_guard(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self {
            Self::Pg(_) => None,
            Self::Sqlite { write_lock, .. } => Some(write_lock.clone().lock_owned().await),
        }
    }

    /// Checks that a connection can be had and answers.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let result = match self.get().await? {
            Conn::Pg(mut object) => object.batch_execute("SELECT 1").await,
            Conn::Sqlite(mut object) => object.batch_execute("SELECT 1").await,
        };
        result.map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// Microseconds since the Unix epoch, UTC: how every timestamp is stored.
pub(crate) fn ts(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// The inverse of [`ts`].
pub(crate) fn from_ts(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn credits(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads an enum stored as its snake_case serde name.
pub(crate) fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| StoreError::Other(format!("unexpected stored value `{text}`: {e}")))
}

/// Reads a stored id, refusing a corrupt one.
pub(crate) fn parse_id<T: billing_core::ids::PrefixedId>(text: &str) -> Result<T, StoreError> {
    T::parse(text).map_err(|e| StoreError::Other(format!("corrupt id `{text}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_never_prints_the_password() {
        let config = DatabaseConfig {
            url: "postgres://app:s3cret-pass@db.internal:5432/tollgate".into(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            read_cache: Duration::ZERO,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pass"), "{shown}");
        assert!(shown.contains("postgres://app:***@db.internal:5432/tollgate"));
        assert_eq!(redact_url("sqlite://data/t.db"), "sqlite://data/t.db");
    }
}
