//! Prefixed, sortable identifiers (`usr_01JD…`, `grt_01JD…`).
//!
//! The body is a ULID: 48 bits of milliseconds since the Unix epoch followed by 80 bits of
//! randomness, written in Crockford base32 (26 characters). Ids therefore sort by creation
//! time as plain strings, in SQL as well as in Rust. Generating the randomness and reading the
//! clock is the job of the [`IdGenerator`](crate::ports::IdGenerator) port; this module only
//! encodes, parses and types them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of the ULID body of every id.
pub const ULID_LEN: usize = 26;

/// A 128-bit ULID value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ulid(pub u128);

impl Ulid {
    /// Builds a ULID from a millisecond timestamp and 80 bits of randomness (higher bits of
    /// `random` are ignored).
    pub fn from_parts(unix_millis: u64, random: u128) -> Self {
        let time = u128::from(unix_millis & 0xFFFF_FFFF_FFFF) << 80;
        Self(time | (random & ((1u128 << 80) - 1)))
    }

    /// Milliseconds since the Unix epoch encoded in the id.
    pub fn unix_millis(self) -> u64 {
        // The top 48 bits always fit in a u64.
        u64::try_from(self.0 >> 80).unwrap_or(u64::MAX)
    }

    /// The 26-character Crockford base32 form.
    pub fn encode(self) -> String {
        let mut out = [0u8; ULID_LEN];
        let mut value = self.0;
        for slot in out.iter_mut().rev() {
            *slot = CROCKFORD[(value & 0x1F) as usize];
            value >>= 5;
        }
        out.iter().map(|&b| char::from(b)).collect()
    }

    /// Parses the Crockford base32 form (case-insensitive).
    pub fn decode(text: &str) -> Result<Self, IdError> {
        if text.len() != ULID_LEN {
            return Err(IdError::Malformed);
        }
        let mut value: u128 = 0;
        for (index, byte) in text.bytes().enumerate() {
            let digit = match byte.to_ascii_uppercase() {
                b @ b'0'..=b'9' => b - b'0',
                b => CROCKFORD
                    .iter()
                    .position(|&c| c == b)
                    .and_then(|p| u8::try_from(p).ok())
                    .ok_or(IdError::Malformed)?,
            };
            // The first character carries only 3 bits (128 = 26 * 5 - 2).
            if index == 0 && digit > 7 {
                return Err(IdError::Malformed);
            }
            value = (value << 5) | u128::from(digit);
        }
        Ok(Self(value))
    }
}

/// Why a string is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The prefix is not the one this kind of id carries.
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix {
        /// The prefix the id should have had.
        expected: &'static str,
    },
    /// The part after the prefix is not a 26-character ULID.
    #[error("malformed id")]
    Malformed,
}

/// A kind of prefixed id.
pub trait PrefixedId: Sized {
    /// The prefix, without the underscore.
    const PREFIX: &'static str;
    /// Wraps an already-validated string.
    #[doc(hidden)]
    fn from_validated(raw: String) -> Self;
    /// The id as text, prefix included.
    fn as_str(&self) -> &str;

    /// Builds an id from a ULID.
    fn from_ulid(ulid: Ulid) -> Self {
        Self::from_validated(format!("{}_{}", Self::PREFIX, ulid.encode()))
    }

    /// Parses and validates an id of this kind.
    fn parse(text: &str) -> Result<Self, IdError> {
        let body = text
            .strip_prefix(Self::PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(IdError::WrongPrefix {
                expected: Self::PREFIX,
            })?;
        let ulid = Ulid::decode(body)?;
        Ok(Self::from_ulid(ulid))
    }
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl PrefixedId for $name {
            const PREFIX: &'static str = $prefix;
            fn from_validated(raw: String) -> Self {
                Self(raw)
            }
            fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <Self as PrefixedId>::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <Self as PrefixedId>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A person who signs in.
    UserId, "usr");
prefixed_id!(
    /// The billing entity that owns credits, quotas and a subscription.
    AccountId, "acc");
prefixed_id!(
    /// A grant of credits.
    GrantId, "grt");
prefixed_id!(
    /// A hold (reservation) of credits.
    HoldId, "hld");
prefixed_id!(
    /// A ledger transaction: one journaled movement, made of one or more legs.
    TxnId, "txn");
prefixed_id!(
    /// A subscription to a plan.
    SubscriptionId, "sub");
prefixed_id!(
    /// A metered LLM call.
    CallId, "call");
prefixed_id!(
    /// An asynchronous AI task.
    TaskId, "tsk");
prefixed_id!(
    /// A webhook delivery announcing a finished task.
    DeliveryId, "dlv");
prefixed_id!(
    /// An audit-log record.
    AuditId, "aud");
prefixed_id!(
    /// An API key (the public, non-secret part).
    ApiKeyId, "key");
prefixed_id!(
    /// A received webhook event as stored by Tollgate.
    WebhookId, "whk");
prefixed_id!(
    /// A usage record of a quota meter.
    UsageId, "use");
prefixed_id!(
    /// A payment received (a pack or a subscription invoice).
    PaymentId, "pay");
prefixed_id!(
    /// A claim of a catalog reward by an account.
    ClaimId, "rwc");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_round_trips_and_sorts_by_time() {
        let a = Ulid::from_parts(1_700_000_000_000, 42);
        let b = Ulid::from_parts(1_700_000_000_001, 0);
        assert_eq!(Ulid::decode(&a.encode()), Ok(a));
        assert!(a.encode() < b.encode());
        assert_eq!(a.unix_millis(), 1_700_000_000_000);
        assert_eq!(a.encode().len(), ULID_LEN);
    }

    #[test]
    fn typed_ids_check_their_prefix() {
        let user = UserId::from_ulid(Ulid::from_parts(1, 2));
        assert!(user.as_str().starts_with("usr_"));
        assert_eq!(UserId::parse(user.as_str()), Ok(user.clone()));
        assert_eq!(
            GrantId::parse(user.as_str()),
            Err(IdError::WrongPrefix { expected: "grt" })
        );
        assert_eq!(UserId::parse("usr_short"), Err(IdError::Malformed));
        assert_eq!(
            UserId::parse("usr_ZZZZZZZZZZZZZZZZZZZZZZZZZZ"),
            Err(IdError::Malformed),
            "first character may carry only 3 bits"
        );
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        let ok: Result<HoldId, _> = serde_json::from_str("\"hld_01JD0000000000000000000000\"");
        assert!(ok.is_ok());
        let bad: Result<HoldId, _> = serde_json::from_str("\"grt_01JD0000000000000000000000\"");
        assert!(bad.is_err());
    }
}
