//! # store-diesel
//!
//! Every persistence port of `billing-core` — ledger, accounts, quotas, subscriptions, API
//! idempotency, webhook events, tasks, audit — on PostgreSQL (diesel-async's
//! `AsyncPgConnection`) and SQLite (`SyncConnectionWrapper<SqliteConnection>`), pooled by
//! deadpool. One body of query code serves both (see `sql`); migrations for each backend are
//! embedded (see [`migrate`]).

mod accounts;
mod audit_writer;
mod background;
mod bulk;
mod db;
mod group_commit;
mod jobs;
mod ledger;
mod ledger_exec;
pub mod migrate;
mod payments;
mod quotas;
mod read_cache;
mod records;
mod reports;
mod rewards;
mod schema;
mod sessions;
mod sql;
mod store;
mod tasks;
mod usage;
mod userdata;

pub use db::{Backend, DatabaseConfig, PoolStatus, redact_url};
pub use store::DieselStore;
