//! # billing-core
//!
//! Tollgate's domain, pure: plans and the catalog, the credit ledger, quotas, subscriptions
//! and entitlements, plus the ports (traits) through which the outside world is reached.
//! Nothing here performs I/O or depends on an async runtime; adapters implement the ports
//! and the `app` crate wires them together.
//!
//! Functional core, imperative shell: functions such as [`ledger::decide`],
//! [`payments::credits_withheld`] and [`entitlements::decide`] take the state they need and
//! return a decision; stores apply decisions atomically.

pub mod analytics;
pub mod business;
pub mod catalog;
pub mod entitlements;
pub mod gateway;
pub mod ids;
pub mod ledger;
pub mod money;
pub mod payments;
pub mod ports;
pub mod quota;
pub mod records;
pub mod rewards;
pub mod subscription;
pub mod tasks;
pub mod testing;
pub mod usecases;

pub use rust_decimal::Decimal;
