//! Plain records the stores keep: accounts and users, tasks, audit entries, webhook events,
//! and pagination.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AccountId, AuditId, UserId, WebhookId};
use crate::ledger::{Credits, HoldStatus};

/// The billing entity: owns credits, quotas and a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// The plan in force (kept in step with the subscription).
    pub plan: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A customer.
    User,
    /// An operator.
    Admin,
}

/// A person who signs in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// The account it belongs to.
    pub account: AccountId,
    /// Email address, lowercased.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Role.
    pub role: Role,
    /// Whether the email address was verified.
    pub email_verified: bool,
    /// The argon2id PHC string; never serialized.
    #[serde(skip_serializing, default)]
    pub password_hash: Option<String>,
    /// The subject of an external identity provider (a Clerk user id), if any.
    pub external_subject: Option<String>,
    /// When it signed up.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("email", &self.email)
            .field("role", &self.role)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

/// Something a user saved (a prompt, a reply…), owned by that user alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedItem {
    /// Its id (`itm_…`).
    pub id: String,
    /// The owner.
    pub user: UserId,
    /// `prompt` or `reply`.
    pub kind: String,
    /// A title.
    pub title: Option<String>,
    /// The text.
    pub content: String,
    /// Client data.
    pub metadata: serde_json::Value,
    /// When it was saved.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An API key as stored: its SHA-256 hash and a displayable prefix, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Its id (`key_…`).
    pub id: crate::ids::ApiKeyId,
    /// The user it acts as.
    pub user: UserId,
    /// A name the user chose.
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// Hex SHA-256 of the key.
    pub key_hash: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A refresh token as stored: only its SHA-256 hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// Its id (`rtk_…`).
    pub id: String,
    /// The user it signs in.
    pub user: UserId,
    /// The chain of rotations it belongs to; reuse of any rotated token revokes the chain.
    pub family: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was current: it is now used up and the new token (same family) is stored.
    Rotated {
        /// The user it signs in.
        user: UserId,
        /// The sign-in (refresh-token family) it continues.
        family: String,
    },
    /// It had already been rotated: somebody replayed it, so its whole family is revoked.
    Reused {
        /// The user whose family was revoked.
        user: UserId,
        /// The revoked family.
        family: String,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

pub use crate::tasks::{Task, TaskStatus};

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its id.
    pub id: AuditId,
    /// Who did it: a user id, `admin-key`, `stripe`, `system`.
    pub actor: String,
    /// What: `credits.adjust`, `user.update`…
    pub action: String,
    /// On what: an account, user or subscription id.
    pub target: Option<String>,
    /// The request it came with.
    pub request_id: Option<String>,
    /// Details (never secrets).
    pub details: serde_json::Value,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// How far a received webhook got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Stored, not yet applied.
    Received,
    /// Applied.
    Processed,
    /// Applying failed; it can be retried.
    Failed,
    /// Not an event Tollgate acts on.
    Ignored,
}

impl WebhookStatus {
    /// The snake_case name used in storage and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Processed => "processed",
            Self::Failed => "failed",
            Self::Ignored => "ignored",
        }
    }
}

/// A webhook event as received from the payment provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Tollgate's id.
    pub id: WebhookId,
    /// The provider's event id (`evt_…`), unique.
    pub external_id: String,
    /// The event type (`invoice.paid`).
    pub kind: String,
    /// The verified payload.
    pub payload: serde_json::Value,
    /// How far it got.
    pub status: WebhookStatus,
    /// Attempts to apply it.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it arrived.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

/// A request for one page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PageRequest {
    /// Items per page (clamped to 1..=200 by stores).
    pub limit: u32,
    /// The cursor returned with the previous page (the last id seen).
    pub after: Option<String>,
}

impl PageRequest {
    /// The limit clamped to what stores serve.
    pub fn clamped_limit(&self) -> u32 {
        self.limit.clamp(1, 200)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor for the next page, if there is one.
    pub next: Option<String>,
}

/// An account's credits as shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Spendable credits (may be negative with an overdraft).
    pub available: i64,
    /// Credits reserved by pending holds.
    pub held: Credits,
    /// Live grants, in burn order.
    pub grants: Vec<crate::ledger::Grant>,
    /// Pending holds.
    pub holds: Vec<crate::ledger::Hold>,
}

impl Balance {
    /// Whether every listed hold is pending.
    pub fn only_pending_holds(&self) -> bool {
        self.holds.iter().all(|h| h.status == HoldStatus::Pending)
    }
}
