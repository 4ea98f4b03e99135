//! Model-based property test of the ledger.
//!
//! Random sequences of grant (plain, expiring, or a period allowance that rolls over) /
//! debit / reserve / capture / void / hold expiry / refund / clawback of a payment's grants /
//! grant expiry / clock moves /
//! plan changes (the overdraft limit moves) / idempotent replays run against the real
//! [`AccountBook`] and against a deliberately simple reference model written here from the
//! rules alone. After every step:
//!
//! * both agree on the outcome (success, or the exact refusal) and on the balance;
//! * the balance is never below the most negative limit the plan allowed, and equals the
//!   sum of the journal; the debt is never negative;
//! * [`verify`] finds nothing (every grant equals its legs, each hold resolved at most once);
//! * a replayed key returns the first result and moves nothing; a reused key with another
//!   command is a conflict and moves nothing.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 1,000).

use billing_core::ids::{AccountId, HoldId, PrefixedId, TxnId, Ulid};
use billing_core::ledger::{
    AccountBook, Credits, GrantSource, HoldStatus, IdempotencyKey, LedgerCommand, LedgerError,
    LedgerPolicy, LedgerRequest, Receipt, verify,
};
use billing_core::ports::LedgerOutcome;
use billing_core::testing::SequentialIds;
use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

fn at(tick: u32) -> OffsetDateTime {
    T0 + Duration::hours(i64::from(tick))
}

#[derive(Debug, Clone)]
enum Op {
    Grant {
        amount: Credits,
        expires_in: Option<u32>,
        priority: i32,
        /// With an expiry: a period allowance that carries up to this much over...
        rollover_cap: Credits,
        /// ...into a grant lasting this many ticks past the allowance's expiry.
        rollover_for: u32,
        /// Bought by payment N (`payment:N`), which a clawback can name.
        payment: Option<u8>,
    },
    Debit {
        amount: Credits,
    },
    Reserve {
        amount: Credits,
        ttl: u32,
    },
    Capture {
        hold: usize,
        amount: Credits,
    },
    Void {
        hold: usize,
    },
    ExpireHold {
        hold: usize,
    },
    Refund {
        spend: usize,
        amount: Credits,
    },
    /// Take back up to `amount` of what remains of payment N's grants.
    Clawback {
        payment: u8,
        amount: Credits,
    },
    ExpireGrants,
    Advance {
        ticks: u32,
    },
    /// The account changes plan: a new overdraft limit applies from the next command.
    SetOverdraft {
        limit: Credits,
    },
    Replay {
        index: usize,
    },
    Reuse {
        index: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..120u64, proptest::option::of(1..12u32), 0..3i32, prop_oneof![3 => Just(0u64), 1 => 1..80u64], 1..8u32, proptest::option::of(0..2u8))
            .prop_map(|(amount, expires_in, priority, cap, rollover_for, payment)| Op::Grant {
                amount,
                expires_in,
                priority,
                rollover_cap: if expires_in.is_some() { cap } else { 0 },
                rollover_for,
                payment,
            }),
        2 => (0..2u8, 0..100u64).prop_map(|(payment, amount)| Op::Clawback { payment, amount }),
        3 => (0..90u64).prop_map(|amount| Op::Debit { amount }),
        3 => (1..90u64, 1..6u32).prop_map(|(amount, ttl)| Op::Reserve { amount, ttl }),
        3 => (any::<usize>(), 0..100u64).prop_map(|(hold, amount)| Op::Capture { hold, amount }),
        2 => any::<usize>().prop_map(|hold| Op::Void { hold }),
        1 => any::<usize>().prop_map(|hold| Op::ExpireHold { hold }),
        2 => (any::<usize>(), 1..60u64).prop_map(|(spend, amount)| Op::Refund { spend, amount }),
        1 => Just(Op::ExpireGrants),
        2 => (1..4u32).prop_map(|ticks| Op::Advance { ticks }),
        1 => prop_oneof![Just(0u64), 1..60u64].prop_map(|limit| Op::SetOverdraft { limit }),
        2 => any::<usize>().prop_map(|index| Op::Replay { index }),
        1 => any::<usize>().prop_map(|index| Op::Reuse { index }),
    ]
}

// ---------------------------------------------------------------------------------------
// The reference model: vectors and loops, no sharing with the implementation.

#[derive(Debug, Clone)]
struct MGrant {
    remaining: Credits,
    expires: Option<u32>,
    priority: i32,
    seq: usize,
    /// Period allowances: how much may carry over at expiry, until when, and how much has.
    rollover_cap: Credits,
    rollover_until: Option<u32>,
    rolled: Credits,
    payment: Option<u8>,
}

/// Where part of a hold came from: a grant (by index), or the overdraft.
type Part = (Option<usize>, Credits);

#[derive(Debug, Clone)]
struct MHold {
    amount: Credits,
    parts: Vec<Part>,
    status: HoldStatus,
    expires: u32,
}

#[derive(Debug, Clone)]
struct MSpend {
    amount: Credits,
    refunded: Credits,
    refund_expires: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    grants: Vec<MGrant>,
    holds: Vec<MHold>,
    spends: Vec<MSpend>,
    /// Credits the overdraft lent and nothing has repaid yet.
    debt: Credits,
    /// The plan's overdraft limit now.
    overdraft: Credits,
}

/// What the model expects: `Ok(balance after)` or the exact refusal.
type Expect = Result<i64, LedgerError>;

impl Model {
    fn balance(&self) -> i64 {
        let credits: i64 = self.grants.iter().map(|g| g.remaining.cast_signed()).sum();
        credits - self.debt.cast_signed()
    }

    /// Live grant indices in the order spending burns them.
    fn burn_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.grants.len())
            .filter(|&i| self.grants[i].remaining > 0)
            .collect();
        order.sort_by_key(|&i| {
            let g = &self.grants[i];
            (g.expires.is_none(), g.expires, g.priority, g.seq)
        });
        order
    }

    /// Expired grants lose what remains; a period allowance carries up to its cap into a
    /// new grant lasting one more period of the same length.
    fn sweep(&mut self, now: u32) {
        loop {
            let expired: Vec<usize> = self
                .burn_order()
                .into_iter()
                .filter(|&i| self.grants[i].expires.is_some_and(|e| e <= now))
                .collect();
            if expired.is_empty() {
                return;
            }
            let mut carry = Vec::new();
            for &i in &expired {
                let remaining = self.grants[i].remaining;
                self.grants[i].remaining = 0;
                carry.push((i, remaining));
            }
            for (i, credits) in carry {
                self.roll_over(i, credits);
            }
        }
    }

    /// Carries up to `credits` of expired allowance `i` into a rollover grant, within what
    /// its cap has left.
    fn roll_over(&mut self, i: usize, credits: Credits) {
        let g = &mut self.grants[i];
        let carried = credits.min(g.rollover_cap.saturating_sub(g.rolled));
        if carried == 0 {
            return;
        }
        g.rolled += carried;
        let (until, priority) = (g.rollover_until, g.priority);
        self.add_grant(carried, until, priority, 0, None, None);
    }

    fn take(&mut self, amount: Credits) -> Result<Vec<Part>, LedgerError> {
        let in_grants: Credits = self.grants.iter().map(|g| g.remaining).sum();
        let headroom = self.overdraft.saturating_sub(self.debt);
        if amount > in_grants + headroom {
            return Err(LedgerError::InsufficientCredits {
                balance: self.balance(),
                required: amount,
            });
        }
        let mut left = amount;
        let mut parts = Vec::new();
        for i in self.burn_order() {
            if left == 0 {
                break;
            }
            let n = self.grants[i].remaining.min(left);
            self.grants[i].remaining -= n;
            left -= n;
            parts.push((Some(i), n));
        }
        if left > 0 {
            self.debt += left;
            parts.push((None, left));
        }
        Ok(parts)
    }

    fn refund_expiry(&self, parts: &[Part]) -> Option<u32> {
        let mut latest = None;
        for (i, _) in parts {
            let e = self.grants[(*i)?].expires?;
            latest = Some(latest.map_or(e, |l: u32| l.max(e)));
        }
        latest
    }

    /// A new grant; it repays the overdraft first.
    fn add_grant(
        &mut self,
        amount: Credits,
        expires: Option<u32>,
        priority: i32,
        rollover_cap: Credits,
        rollover_until: Option<u32>,
        payment: Option<u8>,
    ) {
        let repay = amount.min(self.debt);
        self.debt -= repay;
        let seq = self.grants.len();
        self.grants.push(MGrant {
            remaining: amount - repay,
            expires,
            priority,
            seq,
            rollover_cap,
            rollover_until,
            rolled: 0,
            payment,
        });
    }

    /// Settles a hold: keeps `keep` from the front, returns the rest where it came from:
    /// to live grants, to the overdraft as far as it is still owed, and what the overdraft
    /// no longer needs as a new grant that never expires.
    fn settle(&mut self, h: usize, keep: Credits, status: HoldStatus, now: u32) {
        let mut to_keep = keep;
        let mut kept = Vec::new();
        let mut surplus = 0;
        let mut expired_back: Vec<(usize, Credits)> = Vec::new();
        for &(g, n) in &self.holds[h].parts.clone() {
            let k = n.min(to_keep);
            to_keep -= k;
            if k > 0 {
                kept.push((g, k));
            }
            let back = n - k;
            match g {
                Some(g) => {
                    if self.grants[g].expires.is_none_or(|e| e > now) {
                        self.grants[g].remaining += back;
                    } else if back > 0 {
                        expired_back.push((g, back));
                    }
                }
                None => {
                    let repay = back.min(self.debt);
                    self.debt -= repay;
                    surplus += back - repay;
                }
            }
        }
        if surplus > 0 {
            let seq = self.grants.len();
            self.grants.push(MGrant {
                remaining: surplus,
                expires: None,
                priority: 0,
                seq,
                rollover_cap: 0,
                rollover_until: None,
                rolled: 0,
                payment: None,
            });
        }
        // Credits held at a period's end roll over when they come back.
        for (g, back) in expired_back {
            self.roll_over(g, back);
        }
        self.holds[h].status = status;
        if status == HoldStatus::Captured {
            let refund_expires = self.refund_expiry(&kept);
            self.spends.push(MSpend {
                amount: keep,
                refunded: 0,
                refund_expires,
            });
        }
    }

    /// Applies one ledger operation at `now`. `hold`/`spend` are model indices (`None`: a
    /// hold or spend that does not exist).
    fn apply(&mut self, op: &Op, hold: Option<usize>, spend: Option<usize>, now: u32) -> Expect {
        // Validation comes before anything else.
        match op {
            Op::Grant { amount: 0, .. }
            | Op::Debit { amount: 0 }
            | Op::Reserve { amount: 0, .. }
            | Op::Refund { amount: 0, .. }
            | Op::Clawback { amount: 0, .. } => {
                return Err(LedgerError::InvalidAmount);
            }
            _ => {}
        }
        self.sweep(now);
        match op {
            Op::Grant {
                amount,
                expires_in,
                priority,
                rollover_cap,
                rollover_for,
                payment,
            } => {
                let expires = expires_in.map(|e| now + e);
                let until = expires.map(|e| e + rollover_for);
                self.add_grant(*amount, expires, *priority, *rollover_cap, until, *payment);
            }
            Op::Clawback { payment, amount } => {
                let mut left = *amount;
                for i in self.burn_order() {
                    if self.grants[i].payment == Some(*payment) {
                        let n = self.grants[i].remaining.min(left);
                        self.grants[i].remaining -= n;
                        left -= n;
                    }
                }
            }
            Op::Debit { amount } => {
                let parts = self.take(*amount)?;
                let refund_expires = self.refund_expiry(&parts);
                self.spends.push(MSpend {
                    amount: *amount,
                    refunded: 0,
                    refund_expires,
                });
            }
            Op::Reserve { amount, ttl } => {
                let parts = self.take(*amount)?;
                self.holds.push(MHold {
                    amount: *amount,
                    parts,
                    status: HoldStatus::Pending,
                    expires: now + ttl,
                });
            }
            Op::Capture { .. } | Op::Void { .. } | Op::ExpireHold { .. } => {
                let id = || hold_id(hold);
                let h = self
                    .hold(hold)
                    .map_err(|()| LedgerError::HoldNotFound { hold: id() })?;
                if self.holds[h].status != HoldStatus::Pending {
                    return Err(LedgerError::HoldNotPending {
                        hold: id(),
                        status: self.holds[h].status,
                    });
                }
                let expired = now >= self.holds[h].expires;
                match op {
                    Op::Capture { amount, .. } => {
                        if expired {
                            return Err(LedgerError::HoldExpired { hold: id() });
                        }
                        if *amount > self.holds[h].amount {
                            return Err(LedgerError::CaptureExceedsHold {
                                hold: id(),
                                reserved: self.holds[h].amount,
                                requested: *amount,
                            });
                        }
                        self.settle(h, *amount, HoldStatus::Captured, now);
                    }
                    Op::Void { .. } => self.settle(h, 0, HoldStatus::Voided, now),
                    _ => {
                        if !expired {
                            return Err(LedgerError::HoldNotYetExpired { hold: id() });
                        }
                        self.settle(h, 0, HoldStatus::Expired, now);
                    }
                }
            }
            Op::Refund { amount, .. } => {
                let s = spend
                    .filter(|&s| s < self.spends.len())
                    .ok_or_else(|| LedgerError::TransactionNotFound { txn: txn_id(None) })?;
                let left = self.spends[s].amount - self.spends[s].refunded;
                if *amount > left {
                    return Err(LedgerError::RefundExceedsSpend {
                        txn: txn_id(None),
                        refundable: left,
                        requested: *amount,
                    });
                }
                self.spends[s].refunded += amount;
                let expires = self.spends[s].refund_expires;
                self.add_grant(*amount, expires, 0, 0, None, None);
            }
            Op::ExpireGrants => {}
            Op::Advance { .. } | Op::SetOverdraft { .. } | Op::Replay { .. } | Op::Reuse { .. } => {
                unreachable!()
            }
        }
        self.sweep(now);
        Ok(self.balance())
    }

    fn hold(&self, index: Option<usize>) -> Result<usize, ()> {
        index.filter(|&i| i < self.holds.len()).ok_or(())
    }
}

/// Ids in refusals name what the test asked for; the comparison below replaces the model's
/// placeholder ids with the real ones.
fn hold_id(_: Option<usize>) -> HoldId {
    HoldId::from_ulid(Ulid(0))
}

fn txn_id(_: Option<usize>) -> TxnId {
    TxnId::from_ulid(Ulid(0))
}

fn same_refusal(real: &LedgerError, expected: &LedgerError) -> bool {
    use LedgerError::*;
    match (real, expected) {
        (HoldNotFound { .. }, HoldNotFound { .. })
        | (HoldExpired { .. }, HoldExpired { .. })
        | (HoldNotYetExpired { .. }, HoldNotYetExpired { .. })
        | (TransactionNotFound { .. }, TransactionNotFound { .. }) => true,
        (HoldNotPending { status: a, .. }, HoldNotPending { status: b, .. }) => a == b,
        (
            CaptureExceedsHold {
                reserved: a,
                requested: b,
                ..
            },
            CaptureExceedsHold {
                reserved: c,
                requested: d,
                ..
            },
        ) => a == c && b == d,
        (
            RefundExceedsSpend {
                refundable: a,
                requested: b,
                ..
            },
            RefundExceedsSpend {
                refundable: c,
                requested: d,
                ..
            },
        ) => a == c && b == d,
        (a, b) => a == b,
    }
}

// ---------------------------------------------------------------------------------------
// The harness.

struct Sent {
    key: IdempotencyKey,
    command: LedgerCommand,
    result: Result<Receipt, LedgerError>,
}

struct Harness {
    book: AccountBook,
    ids: SequentialIds,
    model: Model,
    tick: u32,
    /// Real hold ids and transaction ids, index-aligned with the model's holds and spends.
    holds: Vec<HoldId>,
    spends: Vec<TxnId>,
    sent: Vec<Sent>,
    /// The largest overdraft limit any plan of the account allowed (what verify may accept).
    max_overdraft: Credits,
}

impl Harness {
    fn new() -> Self {
        Self {
            book: AccountBook::new(AccountId::from_ulid(Ulid(1))),
            ids: SequentialIds::default(),
            model: Model::default(),
            tick: 0,
            holds: Vec::new(),
            spends: Vec::new(),
            sent: Vec::new(),
            max_overdraft: 0,
        }
    }

    fn execute(&mut self, key: IdempotencyKey, command: LedgerCommand) -> LedgerOutcome {
        let request = LedgerRequest {
            account: self.book.account().clone(),
            key,
            command,
            policy: LedgerPolicy {
                overdraft_limit: self.model.overdraft,
            },
            intent: None,
        };
        self.book.execute(&request, at(self.tick), &self.ids)
    }

    /// Picks an existing index, or (one time in eight, or when there are none) a missing one.
    fn pick(len: usize, raw: usize) -> Option<usize> {
        (len > 0 && !raw.is_multiple_of(8)).then(|| raw % len)
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.tick;
        match op {
            Op::Advance { ticks } => {
                self.tick += ticks;
                return Ok(());
            }
            Op::SetOverdraft { limit } => {
                self.model.overdraft = *limit;
                self.max_overdraft = self.max_overdraft.max(*limit);
                return Ok(());
            }
            Op::Replay { index } | Op::Reuse { index } => return self.resend(op, *index),
            _ => {}
        }
        let hold = match op {
            Op::Capture { hold, .. } | Op::Void { hold } | Op::ExpireHold { hold } => {
                Self::pick(self.holds.len(), *hold)
            }
            _ => None,
        };
        let spend = match op {
            Op::Refund { spend, .. } => Self::pick(self.spends.len(), *spend),
            _ => None,
        };
        let missing_hold = || HoldId::from_ulid(Ulid(u128::MAX >> 8));
        let hold_ref = || hold.map_or_else(missing_hold, |h| self.holds[h].clone());
        let command = match op {
            Op::Grant {
                amount,
                expires_in,
                priority,
                rollover_cap,
                rollover_for,
                payment,
            } => LedgerCommand::Grant {
                amount: *amount,
                source: if *rollover_cap > 0 {
                    GrantSource::PeriodAllowance
                } else {
                    GrantSource::Purchase
                },
                priority: *priority,
                expires_at: expires_in.map(|e| at(now + e)),
                rollover_cap: *rollover_cap,
                rollover_until: expires_in.map(|e| at(now + e + rollover_for)),
                reference: payment.map(|p| format!("payment:{p}")),
                memo: None,
            },
            Op::Clawback { payment, amount } => LedgerCommand::Clawback {
                reference: format!("payment:{payment}"),
                amount: *amount,
                memo: None,
            },
            Op::Debit { amount } => LedgerCommand::Debit {
                amount: *amount,
                reference: None,
                memo: None,
            },
            Op::Reserve { amount, ttl } => LedgerCommand::Reserve {
                amount: *amount,
                expires_at: at(now + ttl),
                reference: None,
                memo: None,
            },
            Op::Capture { amount, .. } => LedgerCommand::Capture {
                hold: hold_ref(),
                amount: *amount,
                memo: None,
            },
            Op::Void { .. } => LedgerCommand::Void {
                hold: hold_ref(),
                memo: None,
            },
            Op::ExpireHold { .. } => LedgerCommand::ExpireHold { hold: hold_ref() },
            Op::Refund { amount, .. } => LedgerCommand::Refund {
                txn: spend.map_or_else(
                    || TxnId::from_ulid(Ulid(u128::MAX >> 8)),
                    |s| self.spends[s].clone(),
                ),
                amount: *amount,
                memo: None,
            },
            Op::ExpireGrants => LedgerCommand::ExpireGrants,
            Op::Advance { .. } | Op::SetOverdraft { .. } | Op::Replay { .. } | Op::Reuse { .. } => {
                unreachable!()
            }
        };

        let mut next = self.model.clone();
        let expected = next.apply(op, hold, spend, now);
        let key = IdempotencyKey::new(format!("op-{}", self.sent.len())).unwrap();
        let outcome = self.execute(key.clone(), command.clone());
        let LedgerOutcome::Executed(result) = outcome else {
            return Err(TestCaseError::fail(format!(
                "fresh key not executed: {outcome:?}"
            )));
        };
        match (&result, &expected) {
            (Ok(receipt), Ok(balance)) => {
                prop_assert_eq!(receipt.balance, *balance, "receipt balance for {:?}", op);
                self.model = next;
                if let Some(h) = &receipt.hold
                    && matches!(op, Op::Reserve { .. })
                {
                    self.holds.push(h.clone());
                }
                if matches!(op, Op::Debit { .. } | Op::Capture { .. }) {
                    self.spends
                        .push(receipt.txn.clone().expect("a spend has a transaction"));
                }
            }
            (Err(real), Err(want)) => {
                prop_assert!(
                    same_refusal(real, want),
                    "{:?}: got {:?}, model expects {:?}",
                    op,
                    real,
                    want
                );
            }
            _ => {
                return Err(TestCaseError::fail(format!(
                    "{op:?}: got {result:?}, model expects {expected:?}"
                )));
            }
        }
        self.sent.push(Sent {
            key,
            command,
            result,
        });
        self.check()
    }

    /// Sends an earlier key again: unchanged (replay) or with another command (conflict).
    fn resend(&mut self, op: &Op, index: usize) -> Result<(), TestCaseError> {
        if self.sent.is_empty() {
            return Ok(());
        }
        let sent = &self.sent[index % self.sent.len()];
        let (key, first) = (sent.key.clone(), sent.result.clone());
        let command = match op {
            Op::Replay { .. } => sent.command.clone(),
            _ => match &sent.command {
                LedgerCommand::Debit { amount, .. } => LedgerCommand::Debit {
                    amount: amount + 1,
                    reference: None,
                    memo: None,
                },
                _ => LedgerCommand::Debit {
                    amount: 1,
                    reference: Some("other".into()),
                    memo: None,
                },
            },
        };
        let journal = self.book.transactions().len();
        let balance = self.book.balance();
        let outcome = self.execute(key, command);
        match op {
            Op::Replay { .. } => prop_assert_eq!(outcome, LedgerOutcome::Replayed(first)),
            _ => prop_assert_eq!(outcome, LedgerOutcome::Conflict),
        }
        prop_assert_eq!(
            self.book.transactions().len(),
            journal,
            "a replay or conflict journaled something"
        );
        prop_assert_eq!(self.book.balance(), balance);
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let balance = self.book.balance();
        let floor = -self.max_overdraft.cast_signed();
        prop_assert!(
            balance >= floor,
            "balance {} below -{}",
            balance,
            self.max_overdraft
        );
        prop_assert_eq!(
            self.book.snapshot().debt,
            self.model.debt,
            "debt differs from the model"
        );
        let journal: i64 = self.book.transactions().iter().map(|t| t.delta()).sum();
        prop_assert_eq!(balance, journal, "balance differs from the journal");
        prop_assert_eq!(
            balance,
            self.model.balance(),
            "balance differs from the model"
        );
        let violations = verify(&self.book.snapshot(), self.max_overdraft);
        prop_assert!(violations.is_empty(), "{:?}", violations);
        for (real, model) in self.holds.iter().zip(&self.model.holds) {
            prop_assert_eq!(self.book.hold(real).map(|h| h.status), Some(model.status));
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.step(op)?;
        }
    }
}
