//! Proof that a stored account is consistent with its journal.

use std::collections::HashMap;

use serde::Serialize;

use super::{Credits, Grant, Hold, HoldStatus, Transaction, TxnKind, to_i64};
use crate::ids::{AccountId, GrantId, HoldId, TxnId};

/// An account's complete ledger state, as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    /// The account.
    pub account: AccountId,
    /// Every grant, spent or not.
    pub grants: Vec<Grant>,
    /// Every hold.
    pub holds: Vec<Hold>,
    /// The whole journal.
    pub transactions: Vec<Transaction>,
    /// Credits lent by the overdraft.
    pub debt: Credits,
}

/// One way an account disagrees with its journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// A grant's `remaining` differs from the sum of its legs.
    #[error("grant {grant}: remaining {remaining} but its journal sums to {journal}")]
    GrantJournalMismatch {
        /// The grant.
        grant: GrantId,
        /// Its stored remaining.
        remaining: Credits,
        /// The sum of its legs.
        journal: i64,
    },
    /// A grant holds more than it was granted.
    #[error("grant {grant}: remaining {remaining} exceeds its amount {amount}")]
    GrantOverfilled {
        /// The grant.
        grant: GrantId,
        /// Its stored remaining.
        remaining: Credits,
        /// What it granted.
        amount: Credits,
    },
    /// A leg names a grant that does not exist.
    #[error("transaction {txn} names unknown grant {grant}")]
    UnknownGrant {
        /// The transaction.
        txn: TxnId,
        /// The grant it names.
        grant: GrantId,
    },
    /// The debt differs from the overdraft legs.
    #[error("debt {debt} but the overdraft legs sum to {journal}")]
    DebtMismatch {
        /// The stored debt.
        debt: Credits,
        /// Minus the sum of legs without a grant.
        journal: i64,
    },
    /// A transaction repaid more overdraft than was owed (the debt went below zero).
    #[error("transaction {txn} takes the debt below zero ({debt})")]
    DebtBelowZero {
        /// The transaction.
        txn: TxnId,
        /// The debt after it.
        debt: i64,
    },
    /// The balance is below what the plan allows.
    #[error("balance {balance} is below -{overdraft_limit}")]
    NegativeBalance {
        /// The balance.
        balance: i64,
        /// The plan's overdraft limit.
        overdraft_limit: Credits,
    },
    /// A hold was reserved other than once.
    #[error("hold {hold} has {count} reserve transactions")]
    HoldReservedWrongly {
        /// The hold.
        hold: HoldId,
        /// Its reserve transactions.
        count: usize,
    },
    /// A hold's resolutions do not match its status (a pending hold resolved, or a
    /// resolved one resolved other than once).
    #[error("hold {hold} is {status:?} with {count} resolutions")]
    HoldResolvedWrongly {
        /// The hold.
        hold: HoldId,
        /// Its stored status.
        status: HoldStatus,
        /// Its capture, void and expiry transactions.
        count: usize,
    },
    /// A hold captured more than it reserved.
    #[error("hold {hold} captured {captured} of {amount}")]
    HoldOvercaptured {
        /// The hold.
        hold: HoldId,
        /// What it captured.
        captured: Credits,
        /// What it reserved.
        amount: Credits,
    },
    /// A spend was refunded more than it spent.
    #[error("transaction {txn} refunded {refunded} of {amount}")]
    OverRefunded {
        /// The spend.
        txn: TxnId,
        /// Refunded so far.
        refunded: Credits,
        /// Its amount.
        amount: Credits,
    },
}

/// Checks every invariant of the ledger for one account; an empty list means it holds:
/// each grant's remaining equals its legs and never exceeds its amount, the debt equals the
/// overdraft legs (so the balance equals the journal), the balance is not below the
/// overdraft limit, the debt never went below zero in journal order, each hold was reserved once and resolved at most once (exactly once
/// unless pending), and no spend was refunded beyond its amount.
pub fn verify(snapshot: &AccountSnapshot, overdraft_limit: Credits) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut by_grant: HashMap<&GrantId, i64> = HashMap::new();
    let mut overdraft_legs = 0i64;
    for txn in &snapshot.transactions {
        for leg in &txn.legs {
            match &leg.grant {
                Some(grant) => *by_grant.entry(grant).or_insert(0) += leg.delta,
                None => overdraft_legs += leg.delta,
            }
        }
        if overdraft_legs > 0 {
            violations.push(Violation::DebtBelowZero {
                txn: txn.id.clone(),
                debt: -overdraft_legs,
            });
        }
    }
    let known: HashMap<&GrantId, &Grant> = snapshot.grants.iter().map(|g| (&g.id, g)).collect();
    for txn in &snapshot.transactions {
        for leg in &txn.legs {
            if let Some(grant) = &leg.grant
                && !known.contains_key(grant)
            {
                violations.push(Violation::UnknownGrant {
                    txn: txn.id.clone(),
                    grant: grant.clone(),
                });
            }
        }
    }
    for grant in &snapshot.grants {
        let journal = by_grant.get(&grant.id).copied().unwrap_or(0);
        if journal != to_i64(grant.remaining) {
            violations.push(Violation::GrantJournalMismatch {
                grant: grant.id.clone(),
                remaining: grant.remaining,
                journal,
            });
        }
        if grant.remaining > grant.amount {
            violations.push(Violation::GrantOverfilled {
                grant: grant.id.clone(),
                remaining: grant.remaining,
                amount: grant.amount,
            });
        }
    }
    if -overdraft_legs != to_i64(snapshot.debt) {
        violations.push(Violation::DebtMismatch {
            debt: snapshot.debt,
            journal: -overdraft_legs,
        });
    }
    let balance: i64 = snapshot.transactions.iter().map(Transaction::delta).sum();
    if balance < -to_i64(overdraft_limit) {
        violations.push(Violation::NegativeBalance {
            balance,
            overdraft_limit,
        });
    }
    for hold in &snapshot.holds {
        let of_hold = |kinds: &[TxnKind]| {
            snapshot
                .transactions
                .iter()
                .filter(|t| t.hold.as_ref() == Some(&hold.id) && kinds.contains(&t.kind))
                .count()
        };
        let reserves = of_hold(&[TxnKind::Reserve]);
        if reserves != 1 {
            violations.push(Violation::HoldReservedWrongly {
                hold: hold.id.clone(),
                count: reserves,
            });
        }
        let resolutions = of_hold(&[TxnKind::Capture, TxnKind::Void, TxnKind::HoldExpiry]);
        let expected = usize::from(hold.status != HoldStatus::Pending);
        if resolutions != expected {
            violations.push(Violation::HoldResolvedWrongly {
                hold: hold.id.clone(),
                status: hold.status,
                count: resolutions,
            });
        }
        if hold.captured > hold.amount {
            violations.push(Violation::HoldOvercaptured {
                hold: hold.id.clone(),
                captured: hold.captured,
                amount: hold.amount,
            });
        }
    }
    for txn in &snapshot.transactions {
        if txn.refunded > txn.amount {
            violations.push(Violation::OverRefunded {
                txn: txn.id.clone(),
                refunded: txn.refunded,
                amount: txn.amount,
            });
        }
    }
    violations
}
