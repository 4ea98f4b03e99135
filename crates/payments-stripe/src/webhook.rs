//! Verifying a webhook's `Stripe-Signature` header.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`. A `v1` signature is the
//! hex HMAC-SHA256 of `"{t}.{raw body}"` keyed with the endpoint's signing secret (the
//! `whsec_…` text as it is). The event is genuine when some `v1` matches some configured
//! secret (compared in constant time), and fresh when `t` is no older than the tolerance
//! (300 s by default). Like Stripe's libraries, a timestamp in the future is not refused,
//! and `v0` signatures are ignored. Exactly the verdicts of Stripe's Python library on the
//! cases in `tests/vectors/stripe-webhook-signatures.json`.

use billing_core::ports::PaymentError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

/// Stripe's default tolerance for a signature's age.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// Checks webhook signatures against one or more signing secrets.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<String>,
    tolerance_seconds: i64,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance_seconds", &self.tolerance_seconds)
            .finish()
    }
}

fn invalid(why: &str) -> PaymentError {
    PaymentError::InvalidSignature(why.to_owned())
}

impl WebhookVerifier {
    /// A verifier for these secrets (empty ones are dropped), with the default tolerance.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets: secrets
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            tolerance_seconds: DEFAULT_TOLERANCE_SECONDS,
        }
    }

    /// The same with another tolerance (seconds).
    #[must_use]
    pub fn with_tolerance(mut self, seconds: i64) -> Self {
        self.tolerance_seconds = seconds;
        self
    }

    /// Whether any secret is configured.
    pub fn is_configured(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// `Ok` when `header` signs `payload` with one of the secrets and is fresh at `now`.
    /// Errors say why without revealing anything secret.
    pub fn verify(
        &self,
        payload: &[u8],
        header: &str,
        now: OffsetDateTime,
    ) -> Result<(), PaymentError> {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in header.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            match key.trim() {
                "t" => timestamp = value.trim().parse::<i64>().ok(),
                "v1" => signatures.push(value.trim()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or_else(|| invalid("no timestamp"))?;
        if signatures.is_empty() {
            return Err(invalid("no v1 signature"));
        }
        let matched = self.secrets.iter().any(|secret| {
            let expected = sign(secret, timestamp, payload);
            signatures
                .iter()
                .any(|given| constant_time_eq(expected.as_bytes(), given.as_bytes()))
        });
        if !matched {
            return Err(invalid("no signature matches"));
        }
        if timestamp < now.unix_timestamp() - self.tolerance_seconds {
            return Err(invalid("timestamp outside the tolerance"));
        }
        Ok(())
    }
}

impl billing_core::ports::WebhookIntake for WebhookVerifier {
    fn verify(
        &self,
        payload: &[u8],
        signature: &str,
        now: OffsetDateTime,
    ) -> Result<billing_core::ports::VerifiedWebhook, PaymentError> {
        WebhookVerifier::verify(self, payload, signature, now)?;
        let (envelope, payload) =
            crate::events::envelope(payload).map_err(PaymentError::MalformedEvent)?;
        Ok(billing_core::ports::VerifiedWebhook {
            id: envelope.id,
            kind: envelope.kind,
            payload,
        })
    }
}

/// The hex `v1` signature of `payload` at `timestamp` (also what tests sign with).
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    // HMAC accepts a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal lengths and bytes, looking at every byte whatever the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
