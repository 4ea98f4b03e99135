//! An account's whole ledger in memory: the reference implementation of what a store does
//! with a [`Decision`], used by tests and the property test.

use std::collections::{BTreeMap, HashMap};

use time::OffsetDateTime;

use super::idempotency::{self, Replay, StoredOutcome};
use super::{
    AccountSnapshot, Decision, Grant, Hold, LedgerCommand, LedgerError, LedgerRequest, LedgerView,
    Receipt, Transaction, decide,
};
use crate::ids::{AccountId, GrantId, HoldId, PrefixedId};
use crate::ports::{IdGenerator, LedgerOutcome};

/// One account's grants, holds, journal, debt and idempotency records.
#[derive(Debug, Clone)]
pub struct AccountBook {
    account: AccountId,
    grants: BTreeMap<GrantId, Grant>,
    holds: BTreeMap<HoldId, Hold>,
    transactions: Vec<Transaction>,
    debt: u64,
    keys: HashMap<String, StoredOutcome<Result<Receipt, LedgerError>>>,
}

impl AccountBook {
    /// An empty account.
    pub fn new(account: AccountId) -> Self {
        Self {
            account,
            grants: BTreeMap::new(),
            holds: BTreeMap::new(),
            transactions: Vec::new(),
            debt: 0,
            keys: HashMap::new(),
        }
    }

    /// The account.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The available balance (live grants minus debt).
    pub fn balance(&self) -> i64 {
        let credits: u64 = self.grants.values().map(|g| g.remaining).sum();
        super::to_i64(credits) - super::to_i64(self.debt)
    }

    /// Every grant.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values()
    }

    /// Every hold.
    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// A hold by id.
    pub fn hold(&self, id: &HoldId) -> Option<&Hold> {
        self.holds.get(id)
    }

    /// The journal, oldest first.
    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }

    /// What [`decide`] needs for `command`.
    pub fn view(&self, command: &LedgerCommand) -> LedgerView {
        LedgerView {
            account: self.account.clone(),
            grants: self
                .grants
                .values()
                .filter(|g| g.remaining > 0)
                .cloned()
                .collect(),
            debt: self.debt,
            hold: command.hold().and_then(|id| self.holds.get(id)).cloned(),
            refund_target: command
                .refund_target()
                .and_then(|id| self.transactions.iter().find(|t| &t.id == id))
                .cloned(),
            hold_sources: command
                .hold()
                .and_then(|id| self.holds.get(id))
                .map(|hold| {
                    hold.allocations
                        .iter()
                        .filter(|a| a.expires_at.is_some())
                        .filter_map(|a| a.grant.as_ref().and_then(|g| self.grants.get(g)))
                        .map(|g| {
                            let rolled = self
                                .grants
                                .values()
                                .filter(|r| {
                                    r.source == super::GrantSource::Rollover
                                        && r.reference.as_deref() == Some(g.id.as_str())
                                })
                                .map(|r| r.amount)
                                .sum();
                            (g.clone(), rolled)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Applies a decision, in the order [`Decision`] documents.
    pub fn apply(&mut self, decision: &Decision) {
        let deltas = decision.grant_deltas();
        for grant in &decision.new_grants {
            self.grants.insert(grant.id.clone(), grant.clone());
        }
        if let Some(hold) = &decision.new_hold {
            self.holds.insert(hold.id.clone(), hold.clone());
        }
        if let Some(hold) = &decision.resolved_hold {
            self.holds.insert(hold.id.clone(), hold.clone());
        }
        self.transactions
            .extend(decision.transactions.iter().cloned());
        for (id, delta) in deltas {
            if decision.new_grants.iter().any(|g| g.id == id) {
                continue;
            }
            if let Some(grant) = self.grants.get_mut(&id) {
                grant.remaining = grant.remaining.saturating_add_signed(delta);
            }
        }
        self.debt = self.debt.saturating_add_signed(decision.debt_delta());
        if let Some((txn, amount)) = &decision.refunded
            && let Some(t) = self.transactions.iter_mut().find(|t| &t.id == txn)
        {
            t.refunded += amount;
        }
    }

    /// Runs a request with its idempotency key: a replay returns the first outcome, a
    /// conflicting reuse is refused, anything else is decided and applied.
    pub fn execute(
        &mut self,
        request: &LedgerRequest,
        now: OffsetDateTime,
        ids: &dyn IdGenerator,
    ) -> LedgerOutcome {
        let fingerprint = request.fingerprint();
        match idempotency::check(self.keys.get(request.key.as_str()), &fingerprint) {
            Replay::Replay(outcome) => return LedgerOutcome::Replayed(outcome),
            Replay::Conflict => return LedgerOutcome::Conflict,
            Replay::Fresh => {}
        }
        let view = self.view(&request.command);
        let outcome = decide(&view, &request.command, request.policy, now, ids).map(|decision| {
            self.apply(&decision);
            decision.receipt
        });
        self.keys.insert(
            request.key.as_str().to_owned(),
            StoredOutcome {
                fingerprint,
                outcome: outcome.clone(),
            },
        );
        LedgerOutcome::Executed(outcome)
    }

    /// Everything [`verify`](super::verify) checks.
    pub fn snapshot(&self) -> AccountSnapshot {
        AccountSnapshot {
            account: self.account.clone(),
            grants: self.grants.values().cloned().collect(),
            holds: self.holds.values().cloned().collect(),
            transactions: self.transactions.clone(),
            debt: self.debt,
        }
    }
}
