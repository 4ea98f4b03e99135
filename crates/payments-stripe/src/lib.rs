//! Stripe for Tollgate. Stripe's wire formats stay inside this crate.
//!
//! - [`StripePayments`]: billing-core's payment port over Stripe's API (async-stripe):
//!   customers, Checkout, quick-buy PaymentIntents, the customer portal, cancellations and
//!   plan changes, and listing subscriptions for reconciliation.
//! - [`WebhookVerifier`]: checks a `Stripe-Signature` header the way Stripe's own libraries
//!   do, with several secrets at once so that a secret can be rolled without losing events.
//! - [`events`]: reads a verified event and says what it means for Tollgate.
//! - [`setup`]: creates or checks the catalog's products and prices at Stripe.

mod convert;
pub mod events;
mod gateway;
pub mod setup;
mod webhook;

pub use gateway::{DEFAULT_API_BASE, PROVIDER, StripeConfig, StripePayments};
pub use webhook::{DEFAULT_TOLERANCE_SECONDS, WebhookVerifier, sign};
