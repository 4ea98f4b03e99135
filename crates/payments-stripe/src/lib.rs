//! Stripe for Tollgate. Stripe's wire formats stay inside this crate.
//!
//! Today: [`WebhookVerifier`], which checks a `Stripe-Signature` header the way Stripe's own
//! libraries do, with several secrets at once so that a secret can be rolled without losing
//! events; and [`events`], which reads a verified event (Stripe's wire format stays here)
//! and says what it means for Tollgate.

pub mod events;
mod webhook;

pub use webhook::{DEFAULT_TOLERANCE_SECONDS, WebhookVerifier, sign};
