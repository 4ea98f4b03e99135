//! The pure decision: what a command does to an account.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::{
    Allocation, Credits, Decision, Grant, GrantSource, Hold, HoldStatus, LedgerCommand,
    LedgerError, LedgerPolicy, LedgerView, Leg, Receipt, Transaction, TxnKind, to_i64,
};
use crate::ids::{GrantId, HoldId, PrefixedId, TxnId};
use crate::ports::IdGenerator;

/// The largest amount one command may move (10^15 credits), so that sums never overflow.
pub const MAX_AMOUNT: Credits = 1_000_000_000_000_000;

/// The order in which spending burns grants: the one that expires soonest first (never-
/// expiring last), then lower `priority`, then the oldest, then by id.
pub fn burn_order(a: &Grant, b: &Grant) -> Ordering {
    let expiry = |g: &Grant| (g.expires_at.is_none(), g.expires_at);
    expiry(a)
        .cmp(&expiry(b))
        .then(a.priority.cmp(&b.priority))
        .then(a.created_at.cmp(&b.created_at))
        .then_with(|| a.id.cmp(&b.id))
}

/// Decides what `command` does to the account described by `view` at `now`.
///
/// Before the command itself, what remains of grants that have expired is removed (and a
/// period allowance's rollover is carried into a new grant), so spending never burns
/// expired credits and the journal always equals the spendable balance. An error changes
/// nothing.
pub fn decide(
    view: &LedgerView,
    command: &LedgerCommand,
    policy: LedgerPolicy,
    now: OffsetDateTime,
    ids: &dyn IdGenerator,
) -> Result<Decision, LedgerError> {
    validate(command, now)?;
    let mut work = Work::new(view, now, ids);
    work.sweep();
    let main = work.run(command, policy)?;
    work.sweep();
    Ok(work.finish(main))
}

fn validate(command: &LedgerCommand, now: OffsetDateTime) -> Result<(), LedgerError> {
    let positive = |amount: Credits| match amount {
        0 => Err(LedgerError::InvalidAmount),
        a if a > MAX_AMOUNT => Err(LedgerError::Overflow),
        _ => Ok(()),
    };
    match command {
        LedgerCommand::Grant {
            amount, expires_at, ..
        } => {
            positive(*amount)?;
            if expires_at.is_some_and(|at| at <= now) {
                return Err(LedgerError::ExpiryNotInFuture);
            }
        }
        LedgerCommand::Reserve {
            amount, expires_at, ..
        } => {
            positive(*amount)?;
            if *expires_at <= now {
                return Err(LedgerError::ExpiryNotInFuture);
            }
        }
        LedgerCommand::Debit { amount, .. }
        | LedgerCommand::Refund { amount, .. }
        | LedgerCommand::Clawback { amount, .. } => {
            positive(*amount)?;
        }
        LedgerCommand::Capture { amount, .. } if *amount > MAX_AMOUNT => {
            return Err(LedgerError::Overflow);
        }
        LedgerCommand::Capture { .. }
        | LedgerCommand::Void { .. }
        | LedgerCommand::ExpireHold { .. }
        | LedgerCommand::ExpireGrants => {}
    }
    Ok(())
}

/// The command's own transaction, for the receipt.
struct Main {
    txn: Option<usize>,
    amount: Credits,
    hold: Option<HoldId>,
    grant: Option<GrantId>,
}

struct Work<'a> {
    view: &'a LedgerView,
    now: OffsetDateTime,
    ids: &'a dyn IdGenerator,
    /// Live grants with their working `remaining`.
    grants: Vec<Grant>,
    debt: Credits,
    balance: i64,
    transactions: Vec<Transaction>,
    new_grants: Vec<Grant>,
    new_hold: Option<Hold>,
    resolved_hold: Option<Hold>,
    refunded: Option<(TxnId, Credits)>,
    /// Credits rolled over so far from each period allowance named by the view.
    rolled: BTreeMap<GrantId, Credits>,
}

impl<'a> Work<'a> {
    fn new(view: &'a LedgerView, now: OffsetDateTime, ids: &'a dyn IdGenerator) -> Self {
        let mut grants: Vec<Grant> = view
            .grants
            .iter()
            .filter(|g| g.remaining > 0)
            .cloned()
            .collect();
        grants.sort_by(burn_order);
        Self {
            view,
            now,
            ids,
            grants,
            debt: view.debt,
            balance: view.balance(),
            transactions: Vec::new(),
            new_grants: Vec::new(),
            new_hold: None,
            resolved_hold: None,
            refunded: None,
            rolled: view
                .hold_sources
                .iter()
                .map(|(g, rolled)| (g.id.clone(), *rolled))
                .collect(),
        }
    }

    fn id<T: PrefixedId>(&self) -> T {
        T::from_ulid(self.ids.ulid())
    }

    fn txn(&self, kind: TxnKind, amount: Credits, legs: Vec<Leg>) -> Transaction {
        Transaction {
            id: self.id(),
            account: self.view.account.clone(),
            kind,
            amount,
            legs,
            hold: None,
            grant: None,
            refund_of: None,
            refunded: 0,
            refund_expires_at: None,
            reference: None,
            memo: None,
            created_at: self.now,
        }
    }

    /// Journals a transaction and applies its legs to the working state.
    fn push(&mut self, txn: Transaction) -> usize {
        for leg in &txn.legs {
            self.balance += leg.delta;
            match &leg.grant {
                None => self.debt = add_signed(self.debt, -leg.delta),
                Some(id) => {
                    if let Some(g) = self.grants.iter_mut().find(|g| &g.id == id) {
                        g.remaining = add_signed(g.remaining, leg.delta);
                    }
                }
            }
        }
        self.grants.retain(|g| g.remaining > 0);
        self.transactions.push(txn);
        self.transactions.len() - 1
    }

    /// Removes what remains of expired grants; carries a period allowance's rollover.
    fn sweep(&mut self) {
        loop {
            let expired: Vec<Grant> = self
                .grants
                .iter()
                .filter(|g| g.is_expired(self.now))
                .cloned()
                .collect();
            if expired.is_empty() {
                return;
            }
            let legs = expired
                .iter()
                .map(|g| Leg {
                    grant: Some(g.id.clone()),
                    delta: -to_i64(g.remaining),
                })
                .collect();
            let total = expired.iter().map(|g| g.remaining).sum();
            let mut txn = self.txn(TxnKind::Expiry, total, legs);
            txn.memo = Some("expired".into());
            self.push(txn);
            for g in expired {
                self.roll_over(&g, g.remaining, format!("rolled over from {}", g.id));
            }
        }
    }

    /// Carries up to `credits` of an expired period allowance into a rollover grant, within
    /// what its cap has left. Rolled-over credits last until the grant says (the next
    /// period's end), or for a grant that does not say, one more period as long as its own.
    fn roll_over(&mut self, g: &Grant, credits: Credits, memo: String) {
        if g.source != GrantSource::PeriodAllowance {
            return;
        }
        let rolled = self.rolled.entry(g.id.clone()).or_insert(0);
        let carried = credits.min(g.rollover_cap.saturating_sub(*rolled));
        if carried == 0 {
            return;
        }
        *rolled += carried;
        let expires_at = g
            .rollover_until
            .or_else(|| g.expires_at.map(|end| end + (end - g.created_at)));
        self.grant(GrantSpec {
            amount: carried,
            source: GrantSource::Rollover,
            priority: g.priority,
            expires_at,
            rollover_cap: 0,
            rollover_until: None,
            reference: Some(g.id.to_string()),
            memo: Some(memo),
            kind: TxnKind::Grant,
            refund_of: None,
        });
    }

    /// Creates a grant; any overdraft debt is repaid from it first.
    fn grant(&mut self, spec: GrantSpec) -> (usize, GrantId) {
        let id: GrantId = self.id();
        let repay = spec.amount.min(self.debt);
        let mut legs = Vec::with_capacity(2);
        if spec.amount > repay {
            legs.push(Leg {
                grant: Some(id.clone()),
                delta: to_i64(spec.amount - repay),
            });
        }
        if repay > 0 {
            legs.push(Leg {
                grant: None,
                delta: to_i64(repay),
            });
        }
        let grant = Grant {
            id: id.clone(),
            account: self.view.account.clone(),
            source: spec.source,
            amount: spec.amount,
            remaining: 0,
            priority: spec.priority,
            expires_at: spec.expires_at,
            rollover_cap: spec.rollover_cap,
            rollover_until: spec.rollover_until,
            reference: spec.reference.clone(),
            created_at: self.now,
        };
        self.add_grant(grant);
        let mut txn = self.txn(spec.kind, spec.amount, legs);
        txn.grant = Some(id.clone());
        txn.reference = spec.reference;
        txn.memo = spec.memo;
        txn.refund_of = spec.refund_of;
        (self.push(txn), id)
    }

    /// Records a new grant (its `remaining` comes from the legs that fill it).
    fn add_grant(&mut self, grant: Grant) {
        self.new_grants.push(grant.clone());
        self.grants.push(grant);
        self.grants.sort_by(burn_order);
    }

    /// Takes `amount` from live grants in burn order, then from the overdraft.
    fn burn(
        &mut self,
        amount: Credits,
        policy: LedgerPolicy,
    ) -> Result<Vec<Allocation>, LedgerError> {
        let in_grants: Credits = self.grants.iter().map(|g| g.remaining).sum();
        let headroom = policy.overdraft_limit.saturating_sub(self.debt);
        if amount > in_grants.saturating_add(headroom) {
            return Err(LedgerError::InsufficientCredits {
                balance: self.balance,
                required: amount,
            });
        }
        let mut left = amount;
        let mut allocations = Vec::new();
        for g in &self.grants {
            if left == 0 {
                break;
            }
            let take = g.remaining.min(left);
            allocations.push(Allocation {
                grant: Some(g.id.clone()),
                amount: take,
                expires_at: g.expires_at,
            });
            left -= take;
        }
        if left > 0 {
            allocations.push(Allocation {
                grant: None,
                amount: left,
                expires_at: None,
            });
        }
        Ok(allocations)
    }

    fn pending_hold(&self, id: &HoldId) -> Result<Hold, LedgerError> {
        let hold = self
            .view
            .hold
            .as_ref()
            .filter(|h| &h.id == id && h.account == self.view.account)
            .ok_or_else(|| LedgerError::HoldNotFound { hold: id.clone() })?;
        if hold.status != HoldStatus::Pending {
            return Err(LedgerError::HoldNotPending {
                hold: id.clone(),
                status: hold.status,
            });
        }
        Ok(hold.clone())
    }

    /// Resolves a pending hold: keeps `keep` credits (from the front of its allocations)
    /// and returns the rest to where they came from.
    fn resolve(
        &mut self,
        mut hold: Hold,
        keep: Credits,
        status: HoldStatus,
        memo: Option<String>,
    ) -> usize {
        let mut to_keep = keep;
        let mut kept = Vec::new();
        let mut returned = Vec::new();
        for a in &hold.allocations {
            let k = a.amount.min(to_keep);
            to_keep -= k;
            if k > 0 {
                kept.push(Allocation {
                    amount: k,
                    ..a.clone()
                });
            }
            if a.amount > k {
                returned.push(Allocation {
                    amount: a.amount - k,
                    ..a.clone()
                });
            }
        }
        // Credits the overdraft lent go back to it only as far as it is still owed: a grant
        // may have repaid the debt since the hold was placed. What the debt no longer needs
        // becomes a new grant, so the account ends as if the hold had never been.
        let mut debt_left = self.debt;
        let mut surplus: Credits = 0;
        let mut legs = Vec::with_capacity(returned.len() + 1);
        for a in &returned {
            match &a.grant {
                Some(grant) => legs.push(Leg {
                    grant: Some(grant.clone()),
                    delta: to_i64(a.amount),
                }),
                None => {
                    let repay = a.amount.min(debt_left);
                    debt_left -= repay;
                    surplus += a.amount - repay;
                    if repay > 0 {
                        legs.push(Leg {
                            grant: None,
                            delta: to_i64(repay),
                        });
                    }
                }
            }
        }
        let returned_grant = (surplus > 0).then(|| {
            let id: GrantId = self.id();
            legs.push(Leg {
                grant: Some(id.clone()),
                delta: to_i64(surplus),
            });
            self.add_grant(Grant {
                id: id.clone(),
                account: self.view.account.clone(),
                source: GrantSource::Returned,
                amount: surplus,
                remaining: 0,
                priority: 0,
                expires_at: None,
                rollover_cap: 0,
                rollover_until: None,
                reference: Some(hold.id.to_string()),
                created_at: self.now,
            });
            id
        });
        let returned_total: Credits = returned.iter().map(|a| a.amount).sum();
        let kind = match status {
            HoldStatus::Captured => TxnKind::Capture,
            HoldStatus::Expired => TxnKind::HoldExpiry,
            HoldStatus::Voided | HoldStatus::Pending => TxnKind::Void,
        };
        let amount = if kind == TxnKind::Capture {
            keep
        } else {
            returned_total
        };
        let mut txn = self.txn(kind, amount, legs);
        txn.hold = Some(hold.id.clone());
        txn.grant = returned_grant;
        txn.reference.clone_from(&hold.reference);
        txn.memo = memo;
        if kind == TxnKind::Capture {
            txn.refund_expires_at = refund_expiry(&kept);
        }
        let index = self.push(txn);
        // Credits returned to grants that expired meanwhile leave again at once.
        let expired: Vec<Leg> = returned
            .iter()
            .filter(|a| a.grant.is_some() && a.expires_at.is_some_and(|at| at <= self.now))
            .map(|a| Leg {
                grant: a.grant.clone(),
                delta: -to_i64(a.amount),
            })
            .collect();
        if !expired.is_empty() {
            let total = expired.iter().map(|l| l.delta.unsigned_abs()).sum();
            let mut back: Vec<(GrantId, Credits)> = Vec::new();
            for leg in &expired {
                let Some(grant) = &leg.grant else { continue };
                match back.iter_mut().find(|(g, _)| g == grant) {
                    Some((_, credits)) => *credits += leg.delta.unsigned_abs(),
                    None => back.push((grant.clone(), leg.delta.unsigned_abs())),
                }
            }
            let mut txn = self.txn(TxnKind::Expiry, total, expired);
            txn.hold = Some(hold.id.clone());
            txn.memo = Some("returned after the grant expired".into());
            self.push(txn);
            // Credits held at a period's end were unused at its end: they roll over too.
            for (grant, credits) in back {
                let source = self
                    .view
                    .hold_sources
                    .iter()
                    .find(|(g, _)| g.id == grant)
                    .map(|(g, _)| g.clone());
                if let Some(source) = source {
                    let memo = format!("rolled over from {grant}, returned by {}", hold.id);
                    self.roll_over(&source, credits, memo);
                }
            }
        }
        hold.status = status;
        hold.captured = if kind == TxnKind::Capture { keep } else { 0 };
        hold.resolved_at = Some(self.now);
        self.resolved_hold = Some(hold);
        index
    }

    fn run(&mut self, command: &LedgerCommand, policy: LedgerPolicy) -> Result<Main, LedgerError> {
        match command {
            LedgerCommand::Grant {
                amount,
                source,
                priority,
                expires_at,
                rollover_cap,
                rollover_until,
                reference,
                memo,
            } => {
                let (index, id) = self.grant(GrantSpec {
                    amount: *amount,
                    source: *source,
                    priority: *priority,
                    expires_at: *expires_at,
                    rollover_cap: *rollover_cap,
                    rollover_until: *rollover_until,
                    reference: reference.clone(),
                    memo: memo.clone(),
                    kind: TxnKind::Grant,
                    refund_of: None,
                });
                Ok(Main {
                    txn: Some(index),
                    amount: *amount,
                    hold: None,
                    grant: Some(id),
                })
            }
            LedgerCommand::Debit {
                amount,
                reference,
                memo,
            } => {
                let allocations = self.burn(*amount, policy)?;
                let mut txn = self.txn(TxnKind::Debit, *amount, spend_legs(&allocations));
                txn.reference.clone_from(reference);
                txn.memo.clone_from(memo);
                txn.refund_expires_at = refund_expiry(&allocations);
                Ok(Main {
                    txn: Some(self.push(txn)),
                    amount: *amount,
                    hold: None,
                    grant: None,
                })
            }
            LedgerCommand::Reserve {
                amount,
                expires_at,
                reference,
                memo,
            } => {
                let allocations = self.burn(*amount, policy)?;
                let hold = Hold {
                    id: self.id(),
                    account: self.view.account.clone(),
                    amount: *amount,
                    captured: 0,
                    status: HoldStatus::Pending,
                    allocations: allocations.clone(),
                    reference: reference.clone(),
                    expires_at: *expires_at,
                    created_at: self.now,
                    resolved_at: None,
                };
                let mut txn = self.txn(TxnKind::Reserve, *amount, spend_legs(&allocations));
                txn.hold = Some(hold.id.clone());
                txn.reference.clone_from(reference);
                txn.memo.clone_from(memo);
                let id = hold.id.clone();
                self.new_hold = Some(hold);
                Ok(Main {
                    txn: Some(self.push(txn)),
                    amount: *amount,
                    hold: Some(id),
                    grant: None,
                })
            }
            LedgerCommand::Capture { hold, amount, memo } => {
                let pending = self.pending_hold(hold)?;
                if self.now >= pending.expires_at {
                    return Err(LedgerError::HoldExpired { hold: hold.clone() });
                }
                if *amount > pending.amount {
                    return Err(LedgerError::CaptureExceedsHold {
                        hold: hold.clone(),
                        reserved: pending.amount,
                        requested: *amount,
                    });
                }
                let index = self.resolve(pending, *amount, HoldStatus::Captured, memo.clone());
                Ok(Main {
                    txn: Some(index),
                    amount: *amount,
                    hold: Some(hold.clone()),
                    grant: None,
                })
            }
            LedgerCommand::Void { hold, memo } => {
                let pending = self.pending_hold(hold)?;
                let amount = pending.amount;
                let index = self.resolve(pending, 0, HoldStatus::Voided, memo.clone());
                Ok(Main {
                    txn: Some(index),
                    amount,
                    hold: Some(hold.clone()),
                    grant: None,
                })
            }
            LedgerCommand::ExpireHold { hold } => {
                let pending = self.pending_hold(hold)?;
                if self.now < pending.expires_at {
                    return Err(LedgerError::HoldNotYetExpired { hold: hold.clone() });
                }
                let amount = pending.amount;
                let index = self.resolve(
                    pending,
                    0,
                    HoldStatus::Expired,
                    Some("hold timed out".into()),
                );
                Ok(Main {
                    txn: Some(index),
                    amount,
                    hold: Some(hold.clone()),
                    grant: None,
                })
            }
            LedgerCommand::Refund { txn, amount, memo } => {
                let spend = self
                    .view
                    .refund_target
                    .as_ref()
                    .filter(|t| &t.id == txn && t.account == self.view.account)
                    .ok_or_else(|| LedgerError::TransactionNotFound { txn: txn.clone() })?;
                if !matches!(spend.kind, TxnKind::Debit | TxnKind::Capture) {
                    return Err(LedgerError::NotRefundable { txn: txn.clone() });
                }
                let refundable = spend.amount - spend.refunded.min(spend.amount);
                if *amount > refundable {
                    return Err(LedgerError::RefundExceedsSpend {
                        txn: txn.clone(),
                        refundable,
                        requested: *amount,
                    });
                }
                let expires_at = spend.refund_expires_at;
                let (index, id) = self.grant(GrantSpec {
                    amount: *amount,
                    source: GrantSource::Refund,
                    priority: 0,
                    expires_at,
                    rollover_cap: 0,
                    rollover_until: None,
                    reference: spend.reference.clone(),
                    memo: memo.clone(),
                    kind: TxnKind::Refund,
                    refund_of: Some(txn.clone()),
                });
                self.refunded = Some((txn.clone(), *amount));
                Ok(Main {
                    txn: Some(index),
                    amount: *amount,
                    hold: None,
                    grant: Some(id),
                })
            }
            LedgerCommand::Clawback {
                reference,
                amount,
                memo,
            } => {
                let mut left = *amount;
                let mut legs = Vec::new();
                for g in &self.grants {
                    if left == 0 {
                        break;
                    }
                    if g.reference.as_deref() != Some(reference.as_str()) {
                        continue;
                    }
                    let take = g.remaining.min(left);
                    legs.push(Leg {
                        grant: Some(g.id.clone()),
                        delta: -to_i64(take),
                    });
                    left -= take;
                }
                let taken = *amount - left;
                let mut txn = self.txn(TxnKind::Clawback, taken, legs);
                txn.reference = Some(reference.clone());
                txn.memo.clone_from(memo);
                Ok(Main {
                    txn: Some(self.push(txn)),
                    amount: taken,
                    hold: None,
                    grant: None,
                })
            }
            LedgerCommand::ExpireGrants => {
                // The sweep before the command did the work; report it.
                let first = self
                    .transactions
                    .iter()
                    .position(|t| t.kind == TxnKind::Expiry);
                let amount = self
                    .transactions
                    .iter()
                    .filter(|t| t.kind == TxnKind::Expiry)
                    .map(|t| t.amount)
                    .sum();
                Ok(Main {
                    txn: first,
                    amount,
                    hold: None,
                    grant: None,
                })
            }
        }
    }

    fn finish(mut self, main: Main) -> Decision {
        // A new grant's remaining is what the decision's legs leave in it.
        for grant in &mut self.new_grants {
            let sum: i64 = self
                .transactions
                .iter()
                .flat_map(|t| &t.legs)
                .filter(|l| l.grant.as_ref() == Some(&grant.id))
                .map(|l| l.delta)
                .sum();
            grant.remaining = u64::try_from(sum).unwrap_or(0);
        }
        let txn = main.txn.map(|i| &self.transactions[i]);
        let receipt = Receipt {
            txn: txn.map(|t| t.id.clone()),
            kind: txn.map(|t| t.kind),
            amount: main.amount,
            balance: self.balance,
            hold: main.hold,
            grant: main.grant,
            at: self.now,
        };
        Decision {
            transactions: self.transactions,
            new_grants: self.new_grants,
            new_hold: self.new_hold,
            resolved_hold: self.resolved_hold,
            refunded: self.refunded,
            receipt,
        }
    }
}

struct GrantSpec {
    amount: Credits,
    source: GrantSource,
    priority: i32,
    expires_at: Option<OffsetDateTime>,
    rollover_cap: Credits,
    rollover_until: Option<OffsetDateTime>,
    reference: Option<String>,
    memo: Option<String>,
    kind: TxnKind,
    refund_of: Option<TxnId>,
}

fn spend_legs(allocations: &[Allocation]) -> Vec<Leg> {
    allocations
        .iter()
        .map(|a| Leg {
            grant: a.grant.clone(),
            delta: -to_i64(a.amount),
        })
        .collect()
}

/// Credits refunded for a spend expire with the latest of the grants it burned (never, if
/// any of them never expires or the overdraft lent them).
fn refund_expiry(allocations: &[Allocation]) -> Option<OffsetDateTime> {
    let mut latest = None;
    for a in allocations {
        let at = a.expires_at?;
        latest = Some(latest.map_or(at, |l: OffsetDateTime| l.max(at)));
    }
    latest
}

fn add_signed(value: Credits, delta: i64) -> Credits {
    if delta >= 0 {
        value.saturating_add(delta.unsigned_abs())
    } else {
        value.saturating_sub(delta.unsigned_abs())
    }
}
