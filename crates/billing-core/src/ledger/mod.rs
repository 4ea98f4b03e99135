//! The credit ledger: grants, holds, journal, and the pure decision function that moves
//! credits.
//!
//! # Model
//!
//! * Credits live in [`Grant`]s. The **available balance** of an account is the sum of its
//!   grants' `remaining` minus its overdraft `debt`.
//! * Every movement is a [`Transaction`] made of [`Leg`]s; a leg changes one grant's
//!   `remaining` (or, with no grant, the debt) by `delta`. A grant's `remaining` changes only
//!   through legs, so at all times `remaining(g) = Σ legs(g)`, `debt = -Σ legs(no grant)` and
//!   `balance = Σ all legs`. [`verify`] proves it for a stored account.
//! * Spending burns grants in [`burn order`](burn_order): soonest expiry first, then lower
//!   `priority`, then oldest.
//! * A [`Hold`] takes credits out of grants (a `reserve` transaction) until it is captured
//!   (the captured part is spent, the rest goes back to the grants it came from), voided or
//!   expired (all goes back). Each hold is resolved once.
//! * Every command carries an idempotency key; see [`idempotency`].
//!
//! [`decide`] takes the part of an account's state the command needs ([`LedgerView`]) and
//! returns a [`Decision`]: the transactions to journal, the grants and hold to insert, the
//! hold to resolve. A store applies a decision atomically; [`AccountBook`] is the in-memory
//! reference that does the same.

mod book;
mod decide;
pub mod idempotency;
mod verify;

pub use book::AccountBook;
pub use decide::{burn_order, decide};
pub use idempotency::{Fingerprint, IdempotencyKey, Replay, StoredOutcome};
pub use verify::{AccountSnapshot, Violation, verify};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AccountId, GrantId, HoldId, TxnId};

/// A whole number of credits. What one credit is worth is the catalog's business.
pub type Credits = u64;

/// Where a grant's credits came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    /// Credits given once at sign-up.
    Welcome,
    /// A plan's allowance for one period (a subscription's billing period, a day or a month).
    PeriodAllowance,
    /// Allowance carried over from the previous period, up to the plan's rollover cap.
    Rollover,
    /// A purchased credit pack.
    Purchase,
    /// A promotion.
    Promotion,
    /// A reward (for example, for a social-media engagement).
    Reward,
    /// A manual adjustment by an admin.
    Adjustment,
    /// Credits given back for an earlier spend.
    Refund,
    /// Credits a hold gave back after the overdraft that lent them had been repaid.
    Returned,
}

impl GrantSource {
    /// The snake_case name used in storage and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::PeriodAllowance => "period_allowance",
            Self::Rollover => "rollover",
            Self::Purchase => "purchase",
            Self::Promotion => "promotion",
            Self::Reward => "reward",
            Self::Adjustment => "adjustment",
            Self::Refund => "refund",
            Self::Returned => "returned",
        }
    }
}

/// Credits granted to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Its id.
    pub id: GrantId,
    /// The account it belongs to.
    pub account: AccountId,
    /// Where the credits came from.
    pub source: GrantSource,
    /// Credits granted.
    pub amount: Credits,
    /// Credits not yet spent, held or expired.
    pub remaining: Credits,
    /// Among grants expiring at the same time, lower burns first.
    pub priority: i32,
    /// When what remains expires; `None` never expires.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// For a period allowance: how much of what remains at expiry carries over (as a
    /// [`GrantSource::Rollover`] grant expiring at `rollover_until`).
    pub rollover_cap: Credits,
    /// When credits carried over from this grant expire: the end of the next period. `None`
    /// (grants from before this field): one more period as long as the grant's own life.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub rollover_until: Option<OffsetDateTime>,
    /// What the grant is for (a pack id, a period key, a payment id…).
    pub reference: Option<String>,
    /// When it was granted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Grant {
    /// Whether the grant's credits have expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The state of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    /// Credits are reserved.
    Pending,
    /// Captured for a cost no larger than the reserve; the rest went back.
    Captured,
    /// Cancelled; everything went back.
    Voided,
    /// Timed out; everything went back.
    Expired,
}

impl HoldStatus {
    /// The snake_case name used in storage and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Captured => "captured",
            Self::Voided => "voided",
            Self::Expired => "expired",
        }
    }
}

/// Part of a hold taken from one grant (or, with no grant, from the overdraft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The grant the credits came from; `None` means they were lent by the overdraft.
    pub grant: Option<GrantId>,
    /// Credits taken.
    pub amount: Credits,
    /// The grant's expiry, so credits returned after it are expired at once.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Credits reserved before work whose cost is known only afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Its id.
    pub id: HoldId,
    /// The account.
    pub account: AccountId,
    /// Credits reserved.
    pub amount: Credits,
    /// Credits captured (0 unless captured).
    pub captured: Credits,
    /// Where it stands.
    pub status: HoldStatus,
    /// Where the reserved credits came from, in burn order.
    pub allocations: Vec<Allocation>,
    /// What the hold is for (a task id, a gateway request…).
    pub reference: Option<String>,
    /// When it expires by itself if not captured or voided.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was placed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was captured, voided or expired.
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
}

/// What kind of movement a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnKind {
    /// Credits granted (its legs add to the new grant, repaying any debt first).
    Grant,
    /// Credits spent at once.
    Debit,
    /// Credits moved from grants into a hold.
    Reserve,
    /// A hold captured: `amount` is what was spent; legs return the rest.
    Capture,
    /// A hold voided: legs return everything.
    Void,
    /// A hold that timed out: legs return everything.
    HoldExpiry,
    /// What remained of expired grants removed.
    Expiry,
    /// Credits given back for an earlier debit or capture, as a new grant.
    Refund,
    /// Unspent credits taken back from the grants a payment bought, because the money went
    /// back (a refund) or is contested (a dispute).
    Clawback,
}

impl TxnKind {
    /// The snake_case name used in storage and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Debit => "debit",
            Self::Reserve => "reserve",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::HoldExpiry => "hold_expiry",
            Self::Expiry => "expiry",
            Self::Refund => "refund",
            Self::Clawback => "clawback",
        }
    }
}

/// One side of a transaction: a change to one grant's `remaining`, or to the debt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// The grant changed; `None` is the overdraft (a negative delta lends, a positive repays).
    pub grant: Option<GrantId>,
    /// The change to the available balance.
    pub delta: i64,
}

/// A journal entry: one movement of credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Its id.
    pub id: TxnId,
    /// The account.
    pub account: AccountId,
    /// The kind of movement.
    pub kind: TxnKind,
    /// The size of the movement: granted, debited, reserved, captured, returned, expired or
    /// refunded.
    pub amount: Credits,
    /// Its legs; their sum is the change to the available balance.
    pub legs: Vec<Leg>,
    /// The hold it reserved or resolved.
    pub hold: Option<HoldId>,
    /// The grant it created.
    pub grant: Option<GrantId>,
    /// For a refund: the debit or capture it refunds.
    pub refund_of: Option<TxnId>,
    /// For a debit or capture: credits refunded so far.
    pub refunded: Credits,
    /// For a debit or capture: when credits refunded for it expire (the latest expiry of the
    /// grants it burned; `None` if any of them never expires).
    #[serde(with = "time::serde::rfc3339::option")]
    pub refund_expires_at: Option<OffsetDateTime>,
    /// What it was for (an action name, a pack id…).
    pub reference: Option<String>,
    /// A free-text note (an admin's reason…).
    pub memo: Option<String>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Transaction {
    /// The change to the available balance.
    pub fn delta(&self) -> i64 {
        self.legs.iter().map(|leg| leg.delta).sum()
    }
}

/// Limits that come from the account's plan, not from the command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPolicy {
    /// How far below zero the balance may go (0: never).
    pub overdraft_limit: Credits,
}

/// An operation on an account's credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LedgerCommand {
    /// Add credits as a new grant.
    Grant {
        /// Credits to grant (> 0).
        amount: Credits,
        /// Where they come from.
        source: GrantSource,
        /// Burn priority among grants of equal expiry (lower first).
        priority: i32,
        /// Expiry (must be in the future), or never.
        #[serde(with = "time::serde::rfc3339::option")]
        expires_at: Option<OffsetDateTime>,
        /// How much may carry over at expiry (period allowances only; 0 otherwise).
        rollover_cap: Credits,
        /// When carried-over credits expire (the next period's end).
        #[serde(default, with = "time::serde::rfc3339::option")]
        rollover_until: Option<OffsetDateTime>,
        /// What it is for.
        reference: Option<String>,
        /// A note.
        memo: Option<String>,
    },
    /// Spend credits at once (a hold captured immediately).
    Debit {
        /// Credits to spend (> 0).
        amount: Credits,
        /// What they were spent on.
        reference: Option<String>,
        /// A note.
        memo: Option<String>,
    },
    /// Reserve credits until capture, void or expiry.
    Reserve {
        /// Credits to reserve (> 0).
        amount: Credits,
        /// When the hold lapses by itself (must be in the future).
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        /// What the reservation is for.
        reference: Option<String>,
        /// A note.
        memo: Option<String>,
    },
    /// Spend up to the reserved amount of a pending hold; the rest goes back.
    Capture {
        /// The hold.
        hold: HoldId,
        /// The real cost (≤ the reserved amount; may be 0).
        amount: Credits,
        /// A note.
        memo: Option<String>,
    },
    /// Give back everything a pending hold reserved.
    Void {
        /// The hold.
        hold: HoldId,
        /// A note.
        memo: Option<String>,
    },
    /// Give back a pending hold whose time is up.
    ExpireHold {
        /// The hold.
        hold: HoldId,
    },
    /// Give back credits for an earlier debit or capture, as a new grant.
    Refund {
        /// The debit or capture.
        txn: TxnId,
        /// Credits to give back (> 0, ≤ what is left to refund).
        amount: Credits,
        /// A note.
        memo: Option<String>,
    },
    /// Take back up to `amount` of what remains in the live grants whose reference is
    /// `reference` (the grants one payment bought), in burn order. Takes what is there: the
    /// receipt's amount is what was taken, possibly less than asked, possibly 0. Credits a
    /// pending hold reserved from those grants are not touched.
    Clawback {
        /// The grants' reference (`payment:<id>`).
        reference: String,
        /// At most this many credits (> 0).
        amount: Credits,
        /// A note.
        memo: Option<String>,
    },
    /// Remove what remains of expired grants (every other command does this first too).
    ExpireGrants,
}

impl LedgerCommand {
    /// The hold the command resolves, which a store must load (and lock).
    pub fn hold(&self) -> Option<&HoldId> {
        match self {
            Self::Capture { hold, .. } | Self::Void { hold, .. } | Self::ExpireHold { hold } => {
                Some(hold)
            }
            _ => None,
        }
    }

    /// The transaction the command refunds, which a store must load (and lock).
    pub fn refund_target(&self) -> Option<&TxnId> {
        match self {
            Self::Refund { txn, .. } => Some(txn),
            _ => None,
        }
    }
}

/// A command for one account, with its idempotency key and the plan's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRequest {
    /// The account.
    pub account: AccountId,
    /// The same key again returns the first result.
    pub key: IdempotencyKey,
    /// What to do.
    pub command: LedgerCommand,
    /// The plan's limits.
    pub policy: LedgerPolicy,
    /// What the caller asked for, when the command holds values the use case computed from
    /// the clock (a hold's `now + ttl`, a pack's `now + days`). The idempotency fingerprint
    /// covers this instead of the command, so the same request retried later replays
    /// rather than conflicts. `None`: the command is what the caller asked for.
    pub intent: Option<Fingerprint>,
}

impl LedgerRequest {
    /// The fingerprint stored with the key: of the caller's intent if given, else of the
    /// command.
    pub fn fingerprint(&self) -> Fingerprint {
        self.intent
            .clone()
            .unwrap_or_else(|| Fingerprint::of(&self.command))
    }
}

/// The state [`decide`] needs: the account's live grants and debt, plus the hold or the
/// transaction the command names, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerView {
    /// The account.
    pub account: AccountId,
    /// Every grant of the account with `remaining > 0`.
    pub grants: Vec<Grant>,
    /// Credits lent by the overdraft.
    pub debt: Credits,
    /// The hold named by the command, if it exists for this account.
    pub hold: Option<Hold>,
    /// The transaction named by a refund, if it exists for this account.
    pub refund_target: Option<Transaction>,
    /// For a command that resolves a hold: the grants with an expiry that the hold drew
    /// from, each with the credits already rolled over from it (so that credits the hold
    /// returns to an expired period allowance roll over within its cap).
    pub hold_sources: Vec<(Grant, Credits)>,
}

impl LedgerView {
    /// The available balance: live grants minus debt.
    pub fn balance(&self) -> i64 {
        let credits: u64 = self.grants.iter().map(|g| g.remaining).sum();
        to_i64(credits) - to_i64(self.debt)
    }
}

/// What a successful command did, as the caller sees it (and as a replay returns it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The command's own transaction (`None` for an expiry sweep that found nothing).
    pub txn: Option<TxnId>,
    /// Its kind.
    pub kind: Option<TxnKind>,
    /// The credits it moved.
    pub amount: Credits,
    /// The available balance afterwards.
    pub balance: i64,
    /// The hold placed or resolved.
    pub hold: Option<HoldId>,
    /// The grant created.
    pub grant: Option<GrantId>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Everything a command changes, to be applied atomically.
///
/// Apply it in this order: insert `new_grants` with `remaining = 0`; insert `new_hold`;
/// update `resolved_hold`; insert `transactions` and their legs; add each grant's summed
/// legs ([`Decision::grant_deltas`]) to its `remaining` and [`Decision::debt_delta`] to the
/// debt; add `refunded` to the refunded transaction. Then store the receipt under the
/// idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Transactions to journal, in order.
    pub transactions: Vec<Transaction>,
    /// Grants to create (their `remaining` comes from legs).
    pub new_grants: Vec<Grant>,
    /// A hold to create.
    pub new_hold: Option<Hold>,
    /// A hold resolved (captured, voided or expired), as it now is.
    pub resolved_hold: Option<Hold>,
    /// A debit or capture refunded, and by how much more.
    pub refunded: Option<(TxnId, Credits)>,
    /// What the caller gets back.
    pub receipt: Receipt,
}

impl Decision {
    /// The change to each grant's `remaining`.
    pub fn grant_deltas(&self) -> std::collections::BTreeMap<GrantId, i64> {
        let mut deltas = std::collections::BTreeMap::new();
        for leg in self.transactions.iter().flat_map(|t| &t.legs) {
            if let Some(grant) = &leg.grant {
                *deltas.entry(grant.clone()).or_insert(0) += leg.delta;
            }
        }
        deltas
    }

    /// The change to the debt (legs without a grant, negated).
    pub fn debt_delta(&self) -> i64 {
        -self
            .transactions
            .iter()
            .flat_map(|t| &t.legs)
            .filter(|leg| leg.grant.is_none())
            .map(|leg| leg.delta)
            .sum::<i64>()
    }
}

/// Why a command was refused. Stored with the idempotency key, so a replay returns the
/// same refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum LedgerError {
    /// An amount that must be positive was zero.
    #[error("the amount must be greater than zero")]
    InvalidAmount,
    /// An expiry that must be in the future was not.
    #[error("the expiry must be in the future")]
    ExpiryNotInFuture,
    /// Not enough credits (counting any overdraft the plan allows).
    #[error("insufficient credits: balance {balance}, required {required}")]
    InsufficientCredits {
        /// The available balance.
        balance: i64,
        /// What the command needed.
        required: Credits,
    },
    /// No such hold on this account.
    #[error("hold {hold} not found")]
    HoldNotFound {
        /// The hold named.
        hold: HoldId,
    },
    /// The hold was already captured, voided or expired.
    #[error("hold {hold} is already {status:?}")]
    HoldNotPending {
        /// The hold named.
        hold: HoldId,
        /// Its status.
        status: HoldStatus,
    },
    /// The hold's time is up; it can only be expired now.
    #[error("hold {hold} has expired")]
    HoldExpired {
        /// The hold named.
        hold: HoldId,
    },
    /// The hold's time is not up yet.
    #[error("hold {hold} has not expired yet")]
    HoldNotYetExpired {
        /// The hold named.
        hold: HoldId,
    },
    /// A capture larger than the reserve.
    #[error("cannot capture {requested} from hold {hold} of {reserved}")]
    CaptureExceedsHold {
        /// The hold named.
        hold: HoldId,
        /// What it reserved.
        reserved: Credits,
        /// What the capture asked for.
        requested: Credits,
    },
    /// No such transaction on this account.
    #[error("transaction {txn} not found")]
    TransactionNotFound {
        /// The transaction named.
        txn: TxnId,
    },
    /// Only debits and captures can be refunded.
    #[error("transaction {txn} is not a debit or capture")]
    NotRefundable {
        /// The transaction named.
        txn: TxnId,
    },
    /// A refund larger than what is left to refund.
    #[error("cannot refund {requested} of transaction {txn}; {refundable} left")]
    RefundExceedsSpend {
        /// The transaction named.
        txn: TxnId,
        /// What is left to refund.
        refundable: Credits,
        /// What the refund asked for.
        requested: Credits,
    },
    /// An amount too large to represent.
    #[error("amount out of range")]
    Overflow,
}

impl LedgerError {
    /// A stable machine-readable code (the serde tag).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidAmount => "invalid_amount",
            Self::ExpiryNotInFuture => "expiry_not_in_future",
            Self::InsufficientCredits { .. } => "insufficient_credits",
            Self::HoldNotFound { .. } => "hold_not_found",
            Self::HoldNotPending { .. } => "hold_not_pending",
            Self::HoldExpired { .. } => "hold_expired",
            Self::HoldNotYetExpired { .. } => "hold_not_yet_expired",
            Self::CaptureExceedsHold { .. } => "capture_exceeds_hold",
            Self::TransactionNotFound { .. } => "transaction_not_found",
            Self::NotRefundable { .. } => "not_refundable",
            Self::RefundExceedsSpend { .. } => "refund_exceeds_spend",
            Self::Overflow => "overflow",
        }
    }
}

/// Credits fit in i64 for every realistic account; saturate rather than wrap if not.
pub(crate) fn to_i64(credits: Credits) -> i64 {
    i64::try_from(credits).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
