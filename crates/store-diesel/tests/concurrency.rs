//! Many clients at once, on SQLite and on PostgreSQL. Each scenario ends by verifying every
//! account it touched against its journal, and prints the figures it reached.

#![allow(
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    reason = "timings and random indexes of a test harness, not money"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use billing_core::ids::{AccountId, HoldId, PrefixedId, TxnId, Ulid, UserId};
use billing_core::ledger::{
    GrantSource, HoldStatus, IdempotencyKey, LedgerCommand, LedgerError, LedgerPolicy,
    LedgerRequest, TxnKind, verify,
};
use billing_core::ports::{
    AccountStore, LedgerOutcome, LedgerStore, QuotaStore, StoreError, TrackOutcome, TrackRequest,
};
use billing_core::quota::{Timezone, Window};
use billing_core::records::{Account, PageRequest, Role, User};
use common::{T0, TestDb, say};
use store_diesel::DieselStore;
use time::Duration;

const TASKS: usize = 32;

static NEXT: AtomicU64 = AtomicU64::new(1 << 41);

fn ulid() -> Ulid {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ulid::from_parts(n, u128::from(n))
}

async fn new_account(store: &DieselStore) -> AccountId {
    let account = Account {
        id: AccountId::from_ulid(ulid()),
        plan: "free".into(),
        created_at: T0,
    };
    let user = User {
        id: UserId::from_ulid(ulid()),
        account: account.id.clone(),
        email: format!("{}@load.test", account.id).to_lowercase(),
        name: None,
        role: Role::User,
        email_verified: false,
        password_hash: None,
        external_subject: None,
        created_at: T0,
    };
    let id = account.id.clone();
    store.create(account, user).await.unwrap();
    id
}

fn request(account: &AccountId, key: String, command: LedgerCommand) -> LedgerRequest {
    LedgerRequest {
        account: account.clone(),
        key: IdempotencyKey::new(key).unwrap(),
        command,
        policy: LedgerPolicy::default(),
        intent: None,
    }
}

async fn fund(store: &DieselStore, account: &AccountId, amount: u64) {
    let command = LedgerCommand::Grant {
        amount,
        source: GrantSource::Purchase,
        priority: 0,
        expires_at: None,
        rollover_cap: 0,
        rollover_until: None,
        reference: None,
        memo: None,
    };
    let outcome = store
        .execute(request(
            account,
            format!("fund-{account}-{amount}"),
            command,
        ))
        .await
        .unwrap();
    assert!(
        matches!(outcome, LedgerOutcome::Executed(Ok(_))),
        "{outcome:?}"
    );
}

async fn assert_ledger_verifies(store: &DieselStore, accounts: &[AccountId]) {
    for account in accounts {
        let snapshot = store.snapshot(account).await.unwrap();
        let violations = verify(&snapshot, 0);
        assert!(violations.is_empty(), "{account}: {violations:?}");
        let balance: i64 = snapshot.transactions.iter().map(|t| t.delta()).sum();
        assert!(balance >= 0, "{account} is negative: {balance}");
    }
}

fn report(db: &TestDb, scenario: &str, operations: usize, started: Instant, detail: &str) {
    let seconds = started.elapsed().as_secs_f64();
    say(&format!(
        "[{}] {scenario}: {operations} operations from {TASKS} tasks in {seconds:.2} s ({:.0}/s); {detail}",
        db.backend,
        operations as f64 / seconds.max(1e-9),
    ));
}

/// 1,000 credits, 2,000 concurrent reserves of 1: exactly 1,000 succeed.
async fn overdraft_race(db: &TestDb) {
    let store = db.store.clone();
    let account = new_account(&store).await;
    fund(&store, &account, 1000).await;
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, account) = (store.clone(), account.clone());
        handles.push(tokio::spawn(async move {
            let (mut ok, mut short) = (0, 0);
            for i in (task..2000).step_by(TASKS) {
                let command = LedgerCommand::Reserve {
                    amount: 1,
                    expires_at: T0 + Duration::hours(1),
                    reference: None,
                    memo: None,
                };
                match store
                    .execute(request(&account, format!("reserve-{i}"), command))
                    .await
                    .unwrap()
                {
                    LedgerOutcome::Executed(Ok(_)) => ok += 1,
                    LedgerOutcome::Executed(Err(LedgerError::InsufficientCredits { .. })) => {
                        short += 1
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            (ok, short)
        }));
    }
    let (mut ok, mut short) = (0, 0);
    for handle in handles {
        let (o, s) = handle.await.unwrap();
        ok += o;
        short += s;
    }
    report(
        db,
        "overdraft race",
        2000,
        started,
        &format!("{ok} reserved, {short} refused as insufficient"),
    );
    assert_eq!((ok, short), (1000, 1000));
    let balance = store.balance(&account).await.unwrap();
    assert_eq!((balance.available, balance.held), (0, 1000));
    assert_ledger_verifies(&store, &[account]).await;
}

/// 2,000 keys, each sent 4 times (2 of them at once): exactly 2,000 debits, and every
/// replay returns the first result.
async fn idempotent_replay(db: &TestDb) {
    let store = db.store.clone();
    let account = new_account(&store).await;
    fund(&store, &account, 1_000_000).await;
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, account) = (store.clone(), account.clone());
        handles.push(tokio::spawn(async move {
            let mut executed = 0;
            for i in (task..2000).step_by(TASKS) {
                let send = || {
                    let command = LedgerCommand::Debit {
                        amount: 1 + (i as u64 % 5),
                        reference: None,
                        memo: None,
                    };
                    store.execute(request(&account, format!("pay-{i}"), command))
                };
                let (a, b) = tokio::join!(send(), send());
                let c = send().await;
                let d = send().await;
                let outcomes = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
                let fresh: Vec<_> = outcomes
                    .iter()
                    .filter(|o| matches!(o, LedgerOutcome::Executed(_)))
                    .collect();
                assert_eq!(fresh.len(), 1, "key pay-{i}: {outcomes:?}");
                let first = fresh[0].result().unwrap().clone();
                assert!(first.is_ok(), "{first:?}");
                for outcome in &outcomes {
                    match outcome {
                        LedgerOutcome::Executed(r) | LedgerOutcome::Replayed(r) => {
                            assert_eq!(r, &first)
                        }
                        LedgerOutcome::Conflict => panic!("conflict on an identical replay"),
                    }
                }
                executed += 1;
            }
            executed
        }));
    }
    let mut executed = 0;
    for handle in handles {
        executed += handle.await.unwrap();
    }
    report(
        db,
        "idempotent replay",
        8000,
        started,
        &format!("{executed} keys, each executed once"),
    );
    let mut debits = 0;
    let mut page = PageRequest {
        limit: 200,
        after: None,
    };
    loop {
        let batch = store.journal(&account, page.clone()).await.unwrap();
        debits += batch
            .items
            .iter()
            .filter(|t| t.kind == TxnKind::Debit)
            .count();
        match batch.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    assert_eq!(debits, 2000);
    let expected: u64 = (0..2000u64).map(|i| 1 + i % 5).sum();
    assert_eq!(
        store.balance(&account).await.unwrap().available,
        1_000_000 - expected as i64
    );
    assert_ledger_verifies(&store, &[account]).await;
}

/// Captures, voids and expiries racing on the same 500 holds: each resolved exactly once.
async fn resolve_once(db: &TestDb) {
    let store = db.store.clone();
    let account = new_account(&store).await;
    fund(&store, &account, 10_000).await;
    // Half the holds are past their time when the race starts, half are not, so all three
    // kinds of resolution get to win somewhere.
    let mut holds: Vec<HoldId> = Vec::new();
    for i in 0..500 {
        let minutes = if i % 2 == 0 { 10 } else { 1 };
        let command = LedgerCommand::Reserve {
            amount: 10,
            expires_at: T0 + Duration::minutes(minutes),
            reference: None,
            memo: None,
        };
        match store
            .execute(request(&account, format!("hold-{i}"), command))
            .await
            .unwrap()
        {
            LedgerOutcome::Executed(Ok(receipt)) => holds.push(receipt.hold.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    db.clock.set(T0 + Duration::minutes(5));
    let started = Instant::now();
    let holds = Arc::new(holds);
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, account, holds) = (store.clone(), account.clone(), holds.clone());
        handles.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            for i in (task..holds.len()).step_by(TASKS) {
                let hold = holds[i].clone();
                let go = |key: String, command: LedgerCommand| {
                    store.execute(request(&account, key, command))
                };
                let (capture, void, expire) = tokio::join!(
                    go(
                        format!("capture-{i}"),
                        LedgerCommand::Capture {
                            hold: hold.clone(),
                            amount: 4,
                            memo: None
                        }
                    ),
                    go(
                        format!("void-{i}"),
                        LedgerCommand::Void {
                            hold: hold.clone(),
                            memo: None
                        }
                    ),
                    go(
                        format!("expire-{i}"),
                        LedgerCommand::ExpireHold { hold: hold.clone() }
                    ),
                );
                let results = [capture.unwrap(), void.unwrap(), expire.unwrap()];
                let won: Vec<usize> = results
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(r, LedgerOutcome::Executed(Ok(_))))
                    .map(|(k, _)| k)
                    .collect();
                assert_eq!(won.len(), 1, "hold {i}: {results:?}");
                wins.push(won[0]);
            }
            wins
        }));
    }
    let mut by_kind = [0usize; 3];
    for handle in handles {
        for kind in handle.await.unwrap() {
            by_kind[kind] += 1;
        }
    }
    report(
        db,
        "resolve once",
        1500,
        started,
        &format!(
            "500 holds: {} captured, {} voided, {} expired",
            by_kind[0], by_kind[1], by_kind[2]
        ),
    );
    let balance = store.balance(&account).await.unwrap();
    assert!(balance.holds.is_empty(), "nothing pending is left");
    let snapshot = store.snapshot(&account).await.unwrap();
    assert!(
        snapshot
            .holds
            .iter()
            .all(|h| h.status != HoldStatus::Pending)
    );
    assert_eq!(balance.available, 10_000 - 4 * by_kind[0] as i64);
    assert_ledger_verifies(&store, &[account]).await;
}

/// A small deterministic generator (no dependency needed for a test's randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// A random mixed workload over 100 accounts from 32 tasks: every balance equals its
/// journal and none is negative.
async fn conservation(db: &TestDb) {
    let store = db.store.clone();
    let mut accounts = Vec::new();
    for _ in 0..100 {
        let account = new_account(&store).await;
        fund(&store, &account, 200).await;
        accounts.push(account);
    }
    let accounts = Arc::new(accounts);
    let started = Instant::now();
    let per_task = 100;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, accounts) = (store.clone(), accounts.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = Lcg(task as u64 + 1);
            let mut holds: Vec<(AccountId, HoldId)> = Vec::new();
            let mut spends: Vec<(AccountId, TxnId)> = Vec::new();
            let (mut ok, mut refused) = (0, 0);
            for n in 0..per_task {
                let account = accounts[rng.next(accounts.len() as u64) as usize].clone();
                let key = format!("mix-{task}-{n}");
                let command = match rng.next(7) {
                    0 => LedgerCommand::Grant {
                        amount: 1 + rng.next(50),
                        source: GrantSource::Reward,
                        priority: 0,
                        expires_at: None,
                        rollover_cap: 0,
                        rollover_until: None,
                        reference: None,
                        memo: None,
                    },
                    1 | 2 => LedgerCommand::Debit {
                        amount: 1 + rng.next(40),
                        reference: None,
                        memo: None,
                    },
                    3 => LedgerCommand::Reserve {
                        amount: 1 + rng.next(40),
                        expires_at: T0 + Duration::hours(1),
                        reference: None,
                        memo: None,
                    },
                    4 if !holds.is_empty() => {
                        let (a, hold) = holds.swap_remove(rng.next(holds.len() as u64) as usize);
                        let amount = rng.next(20);
                        let outcome = store
                            .execute(request(
                                &a,
                                key,
                                LedgerCommand::Capture {
                                    hold,
                                    amount,
                                    memo: None,
                                },
                            ))
                            .await
                            .unwrap();
                        match outcome {
                            LedgerOutcome::Executed(Ok(r)) => {
                                ok += 1;
                                spends.push((a, r.txn.unwrap()));
                            }
                            _ => refused += 1,
                        }
                        continue;
                    }
                    5 if !holds.is_empty() => {
                        let (a, hold) = holds.swap_remove(rng.next(holds.len() as u64) as usize);
                        match store
                            .execute(request(&a, key, LedgerCommand::Void { hold, memo: None }))
                            .await
                            .unwrap()
                        {
                            LedgerOutcome::Executed(Ok(_)) => ok += 1,
                            _ => refused += 1,
                        }
                        continue;
                    }
                    6 if !spends.is_empty() => {
                        let (a, txn) = spends[rng.next(spends.len() as u64) as usize].clone();
                        let amount = 1 + rng.next(10);
                        match store
                            .execute(request(
                                &a,
                                key,
                                LedgerCommand::Refund {
                                    txn,
                                    amount,
                                    memo: None,
                                },
                            ))
                            .await
                            .unwrap()
                        {
                            LedgerOutcome::Executed(Ok(_)) => ok += 1,
                            _ => refused += 1,
                        }
                        continue;
                    }
                    _ => LedgerCommand::Debit {
                        amount: 1 + rng.next(10),
                        reference: None,
                        memo: None,
                    },
                };
                let is_reserve = matches!(command, LedgerCommand::Reserve { .. });
                let is_debit = matches!(command, LedgerCommand::Debit { .. });
                match store.execute(request(&account, key, command)).await {
                    Ok(LedgerOutcome::Executed(Ok(r))) => {
                        ok += 1;
                        if is_reserve {
                            holds.push((account, r.hold.unwrap()));
                        } else if is_debit {
                            spends.push((account, r.txn.unwrap()));
                        }
                    }
                    Ok(LedgerOutcome::Executed(Err(_))) => refused += 1,
                    Ok(other) => panic!("{other:?}"),
                    Err(StoreError::Unavailable(e)) => panic!("store gave up: {e}"),
                    Err(e) => panic!("{e:?}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for handle in handles {
        let (o, r) = handle.await.unwrap();
        ok += o;
        refused += r;
    }
    report(
        db,
        "conservation",
        TASKS * per_task,
        started,
        &format!("100 accounts: {ok} applied, {refused} refused by the ledger"),
    );
    assert_eq!(ok + refused, TASKS * per_task);
    assert_ledger_verifies(&store, &accounts).await;
}

/// Requests that arrive together share a transaction (group commit); one that cannot run
/// (its account does not exist) must fail alone, and every other one apply exactly once.
async fn one_bad_request_fails_alone(db: &TestDb) {
    let store = db.store.clone();
    let account = new_account(&store).await;
    fund(&store, &account, 10_000).await;
    let missing = AccountId::from_ulid(ulid());
    let started = Instant::now();
    for round in 0..5 {
        let mut handles = Vec::new();
        for i in 0..TASKS {
            let store = store.clone();
            let target = if i == TASKS / 2 {
                missing.clone()
            } else {
                account.clone()
            };
            handles.push(tokio::spawn(async move {
                let debit = LedgerCommand::Debit {
                    amount: 1,
                    reference: None,
                    memo: None,
                };
                store
                    .execute(request(&target, format!("group-{round}-{i}"), debit))
                    .await
            }));
        }
        for (i, handle) in handles.into_iter().enumerate() {
            let outcome = handle.await.unwrap();
            if i == TASKS / 2 {
                assert!(matches!(outcome, Err(StoreError::NotFound)), "{outcome:?}");
            } else {
                assert!(
                    matches!(outcome, Ok(LedgerOutcome::Executed(Ok(_)))),
                    "{outcome:?}"
                );
            }
        }
    }
    report(
        db,
        "one bad request in a group",
        5 * TASKS,
        started,
        "each good debit applied once",
    );
    let spent = 5 * (TASKS as u64 - 1);
    let balance = store.balance(&account).await.unwrap();
    assert_eq!(balance.available, 10_000 - spent as i64);
    assert_ledger_verifies(&store, &[account]).await;
}

/// Batches of usage events race on one account, four clients sending each event: every
/// distinct key counts once, and the meter stops exactly at its limit.
async fn quota_batches_race(db: &TestDb) {
    const LIMIT: u64 = 400;
    const BATCHES: usize = 3;
    const EVENTS: usize = 20;
    let store = db.store.clone();
    let account = new_account(&store).await;
    let window = Window::month(T0, Timezone::utc());
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let account = account.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for batch in 0..BATCHES {
                    let requests = (0..EVENTS)
                        .map(|i| TrackRequest {
                            account: account.clone(),
                            meter: "exports".into(),
                            amount: 1,
                            window,
                            limit: Some(LIMIT),
                            // Tasks t, t+8, t+16 and t+24 send the same keys.
                            key: format!("k{}-{batch}-{i}", task % 8),
                        })
                        .collect();
                    let done = store.track_many(requests).await.unwrap();
                    assert_eq!(done.len(), EVENTS);
                    outcomes.extend(done);
                }
                outcomes
            })
        })
        .collect();
    let (mut recorded, mut replayed, mut refused) = (0_u64, 0, 0);
    for task in tasks {
        for outcome in task.await.unwrap() {
            match outcome {
                TrackOutcome::Recorded { used } => {
                    assert!(used <= LIMIT);
                    recorded += 1;
                }
                TrackOutcome::Replayed { used } => {
                    assert!(used <= LIMIT);
                    replayed += 1;
                }
                TrackOutcome::Rejected { .. } => refused += 1,
                TrackOutcome::Conflict => panic!("no key was reused for another amount"),
            }
        }
    }
    let events = (TASKS * BATCHES * EVENTS) as u64;
    report(
        db,
        "usage batches on one account",
        TASKS * BATCHES,
        started,
        &format!("{events} events: {recorded} recorded, {replayed} replayed, {refused} refused"),
    );
    let distinct = (8 * BATCHES * EVENTS) as u64;
    assert_eq!(
        recorded,
        LIMIT.min(distinct),
        "each key counts once, up to the limit"
    );
    assert_eq!(recorded + replayed + refused, events);
    assert_eq!(
        store
            .usage(&account, "exports", window.start)
            .await
            .unwrap(),
        recorded
    );
}

/// Seats on one account (a gauge capped at 10): every client takes a seat and gives one
/// back, half of them twice over with the same keys. The level never passes the cap, never
/// goes below zero, and ends where the recorded takes and releases say.
async fn gauge_race(db: &TestDb) {
    const CAP: u64 = 10;
    const ROUNDS: usize = 5;
    let store = db.store.clone();
    let account = new_account(&store).await;
    let started = Instant::now();
    let seat = |account: &AccountId, key: String, amount: i64| TrackRequest {
        account: account.clone(),
        meter: "seats".into(),
        amount,
        window: Window::forever(),
        limit: Some(CAP),
        key,
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let account = account.clone();
            tokio::spawn(async move {
                let mut net = 0_i64;
                for round in 0..ROUNDS {
                    // Tasks t and t + TASKS/2 send the same keys: one of each pair replays.
                    let id = task % (TASKS / 2);
                    for (kind, amount) in [("take", 1), ("give", -1)] {
                        let key = format!("{kind}-{id}-{round}");
                        match store.track(seat(&account, key, amount)).await.unwrap() {
                            TrackOutcome::Recorded { used } => {
                                assert!(used <= CAP, "past the cap: {used}");
                                net += amount;
                            }
                            TrackOutcome::Replayed { used } => assert!(used <= CAP),
                            TrackOutcome::Rejected { .. } => {}
                            TrackOutcome::Conflict => panic!("no key was reused"),
                        }
                    }
                }
                net
            })
        })
        .collect();
    let mut net = 0;
    for task in tasks {
        net += task.await.unwrap();
    }
    report(
        db,
        "a gauge taken and released",
        TASKS * ROUNDS * 2,
        started,
        &format!("net {net}"),
    );
    let level = store
        .usage(&account, "seats", Window::forever().start)
        .await
        .unwrap();
    assert_eq!(i64::try_from(level).unwrap(), net);
    assert!(level <= CAP);
}

on_both_backends!(
    overdraft_race,
    idempotent_replay,
    resolve_once,
    conservation,
    one_bad_request_fails_alone,
    quota_batches_race,
    gauge_race
);
