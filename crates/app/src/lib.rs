//! The `tollgate` application: configuration, wiring and the HTTP server. The binary in
//! `main.rs` is a thin command-line front to this library, which tests use directly.

pub mod identity;
pub mod mail;
pub mod mock_llm;
pub mod observe;
pub mod schedule;
pub mod server;
pub mod settings;
pub mod system;
pub mod task_workers;
pub mod telemetry;
pub mod workers;

pub use server::Application;
