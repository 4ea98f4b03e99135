//! Idempotency: the same key again returns the first result (failures included); the same
//! key with other parameters is a conflict.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A key naming one intended operation: 1–255 visible ASCII characters (clients send at
/// most [`IdempotencyKey::CLIENT_MAX_LEN`], leaving room for a use case's prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

/// Why a string is not a usable idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// The longest key accepted.
    pub const MAX_LEN: usize = 255;
    /// The longest key a client may send: use cases prefix it (`spend:`, `reserve:`…), and
    /// the prefixed key must still fit [`Self::MAX_LEN`].
    pub const CLIENT_MAX_LEN: usize = 200;

    /// Validates a key.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidIdempotencyKey> {
        let key = key.into();
        let visible = key.bytes().all(|b| b.is_ascii_graphic());
        if key.is_empty() || key.len() > Self::MAX_LEN || !visible {
            return Err(InvalidIdempotencyKey);
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A digest of an operation's parameters (SHA-256 of their canonical JSON, hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of a serializable value. Struct fields serialize in declaration
    /// order, so equal values give equal fingerprints.
    pub fn of<T: Serialize>(value: &T) -> Self {
        // Serializing plain data to a Vec cannot fail; an empty digest input would still
        // distinguish nothing, so fall back to the Debug-free empty body only in theory.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        Self::of_bytes(&bytes)
    }

    /// The fingerprint of raw bytes (an HTTP method, path and body, say).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
        Self(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a fingerprint read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What was stored under a key: the fingerprint of the first request and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutcome<T> {
    /// The first request's fingerprint.
    pub fingerprint: Fingerprint,
    /// Its outcome.
    pub outcome: T,
}

/// What to do with a request given what its key already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay<T> {
    /// The key is new: execute, then store the outcome.
    Fresh,
    /// The same request again: return the stored outcome without executing.
    Replay(T),
    /// The key was used for a different request.
    Conflict,
}

/// Decides between executing, replaying and refusing.
pub fn check<T: Clone>(
    existing: Option<&StoredOutcome<T>>,
    fingerprint: &Fingerprint,
) -> Replay<T> {
    match existing {
        None => Replay::Fresh,
        Some(stored) if &stored.fingerprint == fingerprint => {
            Replay::Replay(stored.outcome.clone())
        }
        Some(_) => Replay::Conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(IdempotencyKey::new("order-42").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("has space").is_err());
        assert!(IdempotencyKey::new("é").is_err());
        assert!(IdempotencyKey::new("k".repeat(256)).is_err());
        assert!(IdempotencyKey::new("k".repeat(255)).is_ok());
    }

    #[test]
    fn same_request_replays_other_request_conflicts() {
        let first = Fingerprint::of(&("debit", 5));
        let stored = StoredOutcome {
            fingerprint: first.clone(),
            outcome: 7,
        };
        assert_eq!(check::<i32>(None, &first), Replay::Fresh);
        assert_eq!(check(Some(&stored), &first), Replay::Replay(7));
        assert_eq!(
            check(Some(&stored), &Fingerprint::of(&("debit", 6))),
            Replay::Conflict
        );
    }

    #[test]
    fn fingerprints_are_hex_sha256() {
        let fp = Fingerprint::of_bytes(b"abc");
        assert_eq!(
            fp.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
