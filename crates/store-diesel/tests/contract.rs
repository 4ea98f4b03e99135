//! The store contract, run on SQLite and on PostgreSQL: every port behaves the same on both.

mod common;

use billing_core::ids::{AccountId, AuditId, PrefixedId, SubscriptionId, Ulid, UserId, WebhookId};
use billing_core::ledger::{
    GrantSource, HoldStatus, IdempotencyKey, LedgerCommand, LedgerError, LedgerPolicy,
    LedgerRequest, Receipt, TxnKind, verify,
};
use billing_core::ports::{
    AccountStore, AuditStore, Conflict, IdempotencyStore, KeyState, LedgerOutcome, LedgerStore,
    QuotaStore, StoreError, StoredResponse, SubscriptionStore, TrackOutcome, TrackRequest,
    WebhookEventStore,
};
use billing_core::quota::{QuotaError, Timezone, Window};
use billing_core::records::{
    Account, AuditRecord, PageRequest, Role, User, WebhookEvent, WebhookStatus,
};
use billing_core::subscription::{Subscription, SubscriptionStatus};
use common::{T0, TestDb};
use std::sync::atomic::{AtomicU64, Ordering};
use time::Duration;

static NEXT: AtomicU64 = AtomicU64::new(1 << 40);

fn ulid() -> Ulid {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ulid::from_parts(n, u128::from(n))
}

async fn new_account(db: &TestDb, email: &str, plan: &str) -> (AccountId, UserId) {
    let account = Account {
        id: AccountId::from_ulid(ulid()),
        plan: plan.into(),
        created_at: T0,
    };
    let user = User {
        id: UserId::from_ulid(ulid()),
        account: account.id.clone(),
        email: email.into(),
        name: Some(format!("Name of {email}")),
        role: Role::User,
        email_verified: false,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        external_subject: None,
        created_at: T0,
    };
    let ids = (account.id.clone(), user.id.clone());
    AccountStore::create(&db.store, account, user)
        .await
        .unwrap();
    ids
}

fn request(account: &AccountId, key: &str, command: LedgerCommand) -> LedgerRequest {
    LedgerRequest {
        account: account.clone(),
        key: IdempotencyKey::new(key).unwrap(),
        command,
        policy: LedgerPolicy::default(),
        intent: None,
    }
}

fn grant(amount: u64) -> LedgerCommand {
    LedgerCommand::Grant {
        amount,
        source: GrantSource::Purchase,
        priority: 0,
        expires_at: None,
        rollover_cap: 0,
        rollover_until: None,
        reference: None,
        memo: None,
    }
}

fn debit(amount: u64) -> LedgerCommand {
    LedgerCommand::Debit {
        amount,
        reference: Some("short_chat".into()),
        memo: None,
    }
}

async fn ok(db: &TestDb, account: &AccountId, key: &str, command: LedgerCommand) -> Receipt {
    match db
        .store
        .execute(request(account, key, command))
        .await
        .unwrap()
    {
        LedgerOutcome::Executed(Ok(receipt)) => receipt,
        other => panic!("{key}: {other:?}"),
    }
}

async fn assert_verified(db: &TestDb, account: &AccountId) {
    let snapshot = db.store.snapshot(account).await.unwrap();
    let violations = verify(&snapshot, 0);
    assert!(violations.is_empty(), "{violations:?}");
}

async fn migrations_go_down_and_up_again(db: &TestDb) {
    let reverted = store_diesel::migrate::revert_all(&db.config).await.unwrap();
    assert!(!reverted.is_empty());
    let applied = store_diesel::migrate::run_pending(&db.config)
        .await
        .unwrap();
    assert_eq!(applied.len(), reverted.len());
    assert!(
        store_diesel::migrate::run_pending(&db.config)
            .await
            .unwrap()
            .is_empty(),
        "nothing left"
    );
    // The schema works after the round trip.
    let (account, _) = new_account(db, "round@trip.test", "free").await;
    ok(db, &account, "g", grant(5)).await;
}

async fn accounts_and_users(db: &TestDb) {
    let (account, user) = new_account(db, "ada@example.com", "free").await;
    let found = db
        .store
        .user_by_email("ADA@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, user);
    assert_eq!(
        found
            .password_hash
            .as_deref()
            .map(|h| h.starts_with("$argon2id$")),
        Some(true)
    );
    // A password hash is swapped only from the one still stored.
    let old = found.password_hash.clone().unwrap();
    assert!(
        db.store
            .replace_password_hash(&user, &old, "$argon2id$new")
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .replace_password_hash(&user, &old, "$argon2id$newer")
            .await
            .unwrap(),
        "a rehash from a hash changed meanwhile changes nothing"
    );
    let swapped = db.store.user(&user).await.unwrap().unwrap();
    assert_eq!(swapped.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(
        db.store.account(&account).await.unwrap().unwrap().plan,
        "free"
    );
    // A second account with the same email is refused.
    let again = Account {
        id: AccountId::from_ulid(ulid()),
        plan: "free".into(),
        created_at: T0,
    };
    let mut dup = found.clone();
    dup.id = UserId::from_ulid(ulid());
    dup.account = again.id.clone();
    assert_eq!(
        AccountStore::create(&db.store, again.clone(), dup).await,
        Err(StoreError::Conflict(Conflict::Email))
    );
    assert_eq!(
        db.store.account(&again.id).await.unwrap(),
        None,
        "the failed create left nothing"
    );

    db.store.set_plan(&account, "pro").await.unwrap();
    let due = || {
        db.store
            .accounts_due_allowance("pro".into(), "pro:100".into(), None, 10)
    };
    assert_eq!(due().await.unwrap(), std::slice::from_ref(&account));
    ok(
        db,
        &account,
        "pro-allowance",
        LedgerCommand::Grant {
            amount: 5,
            source: GrantSource::PeriodAllowance,
            priority: 0,
            expires_at: Some(T0 + Duration::days(1)),
            rollover_cap: 0,
            rollover_until: None,
            reference: Some("pro:100".into()),
            memo: None,
        },
    )
    .await;
    assert!(due().await.unwrap().is_empty(), "granted: no longer due");
    assert_eq!(
        db.store
            .accounts_due_allowance("pro".into(), "pro:200".into(), None, 10)
            .await
            .unwrap(),
        std::slice::from_ref(&account),
        "the next period is due again"
    );
    let mut updated = found;
    updated.email_verified = true;
    updated.role = Role::Admin;
    db.store.update_user(&updated).await.unwrap();
    let reread = db.store.user(&user).await.unwrap().unwrap();
    assert!(reread.email_verified);
    assert_eq!(reread.role, Role::Admin);
    assert_eq!(
        db.store.set_plan(&AccountId::from_ulid(ulid()), "x").await,
        Err(StoreError::NotFound)
    );

    for i in 0..5 {
        new_account(db, &format!("grace{i}@hopper.test"), "free").await;
    }
    let first = db
        .store
        .list_users(
            Some("HOPPER".into()),
            PageRequest {
                limit: 3,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 3);
    let rest = db
        .store
        .list_users(
            Some("hopper".into()),
            PageRequest {
                limit: 3,
                after: first.next.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert_eq!(rest.next, None);
    let by_name = db
        .store
        .list_users(
            Some("name of grace2".into()),
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let percent = db
        .store
        .list_users(
            Some("%".into()),
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert!(
        percent.items.is_empty(),
        "LIKE wildcards are matched literally"
    );
}

async fn ledger_moves_credits_and_journals_them(db: &TestDb) {
    let (account, _) = new_account(db, "led@ger.test", "free").await;
    ok(db, &account, "g1", grant(100)).await;
    let spent = ok(db, &account, "d1", debit(30)).await;
    assert_eq!(spent.balance, 70);
    let refused = db
        .store
        .execute(request(&account, "d2", debit(71)))
        .await
        .unwrap();
    assert_eq!(
        refused,
        LedgerOutcome::Executed(Err(LedgerError::InsufficientCredits {
            balance: 70,
            required: 71
        }))
    );
    let balance = db.store.balance(&account).await.unwrap();
    assert_eq!(balance.available, 70);
    assert_eq!(balance.grants.len(), 1);

    let hold = ok(
        db,
        &account,
        "r1",
        LedgerCommand::Reserve {
            amount: 50,
            expires_at: T0 + Duration::minutes(5),
            reference: Some("task".into()),
            memo: None,
        },
    )
    .await
    .hold
    .unwrap();
    let balance = db.store.balance(&account).await.unwrap();
    assert_eq!((balance.available, balance.held), (20, 50));
    let captured = ok(
        db,
        &account,
        "c1",
        LedgerCommand::Capture {
            hold: hold.clone(),
            amount: 35,
            memo: None,
        },
    )
    .await;
    assert_eq!(captured.balance, 35);
    let twice = db
        .store
        .execute(request(
            &account,
            "c2",
            LedgerCommand::Capture {
                hold: hold.clone(),
                amount: 1,
                memo: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        twice,
        LedgerOutcome::Executed(Err(LedgerError::HoldNotPending {
            hold: hold.clone(),
            status: HoldStatus::Captured
        }))
    );
    let refund = ok(
        db,
        &account,
        "f1",
        LedgerCommand::Refund {
            txn: captured.txn.unwrap(),
            amount: 35,
            memo: None,
        },
    )
    .await;
    assert_eq!(refund.balance, 70);

    let page = db
        .store
        .journal(
            &account,
            PageRequest {
                limit: 2,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [TxnKind::Refund, TxnKind::Capture]
    );
    let older = db
        .store
        .journal(
            &account,
            PageRequest {
                limit: 10,
                after: page.next.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        older.items.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [TxnKind::Reserve, TxnKind::Debit, TxnKind::Grant]
    );
    assert_eq!(
        older.items[1].legs.len(),
        1,
        "legs come with their transaction"
    );
    assert_verified(db, &account).await;
}

async fn idempotency_keys_replay_and_conflict(db: &TestDb) {
    let (account, _) = new_account(db, "idem@potent.test", "free").await;
    ok(db, &account, "seed", grant(10)).await;
    let first = db
        .store
        .execute(request(&account, "k", debit(20)))
        .await
        .unwrap();
    assert!(matches!(
        first,
        LedgerOutcome::Executed(Err(LedgerError::InsufficientCredits { .. }))
    ));
    ok(db, &account, "more", grant(100)).await;
    let again = db
        .store
        .execute(request(&account, "k", debit(20)))
        .await
        .unwrap();
    assert_eq!(
        again,
        LedgerOutcome::Replayed(first.result().unwrap().clone()),
        "a refusal replays too"
    );
    let spend = db
        .store
        .execute(request(&account, "k2", debit(20)))
        .await
        .unwrap();
    let replay = db
        .store
        .execute(request(&account, "k2", debit(20)))
        .await
        .unwrap();
    assert_eq!(
        replay,
        LedgerOutcome::Replayed(spend.result().unwrap().clone())
    );
    assert_eq!(
        db.store
            .execute(request(&account, "k2", debit(21)))
            .await
            .unwrap(),
        LedgerOutcome::Conflict
    );
    let journal = db
        .store
        .journal(
            &account,
            PageRequest {
                limit: 100,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(journal.items.len(), 3, "grant, grant, one debit");
    assert_eq!(db.store.balance(&account).await.unwrap().available, 90);
    // Keys are per account: another account may use the same key.
    let (other, _) = new_account(db, "other@potent.test", "free").await;
    ok(db, &other, "k2", grant(1)).await;
}

async fn holds_expire_and_grants_expire(db: &TestDb) {
    let (account, _) = new_account(db, "exp@ire.test", "free").await;
    ok(
        db,
        &account,
        "g",
        LedgerCommand::Grant {
            amount: 40,
            source: GrantSource::Promotion,
            priority: 0,
            expires_at: Some(T0 + Duration::hours(2)),
            rollover_cap: 0,
            rollover_until: None,
            reference: None,
            memo: None,
        },
    )
    .await;
    let hold = ok(
        db,
        &account,
        "r",
        LedgerCommand::Reserve {
            amount: 10,
            expires_at: T0 + Duration::minutes(5),
            reference: None,
            memo: None,
        },
    )
    .await
    .hold
    .unwrap();
    assert!(
        db.store
            .expired_holds(T0, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = db
        .store
        .expired_holds(T0 + Duration::minutes(5), None, 10)
        .await
        .unwrap();
    assert_eq!(due, [(account.clone(), hold.clone())]);
    db.clock.set(T0 + Duration::minutes(6));
    let expired = ok(db, &account, "x", LedgerCommand::ExpireHold { hold }).await;
    assert_eq!(expired.balance, 40);
    db.clock.set(T0 + Duration::hours(3));
    assert_eq!(
        db.store.balance(&account).await.unwrap().available,
        0,
        "expired grants are not spendable"
    );
    let swept = ok(db, &account, "sweep", LedgerCommand::ExpireGrants).await;
    assert_eq!(swept.amount, 40);
    assert_verified(db, &account).await;
}

/// The review's repro: a hold lent by the overdraft, a grant that repays the debt, then
/// the hold voided. The debt must not go below zero (the schema's `CHECK (debt >= 0)`
/// refused it before) and the returned credits come back as a grant.
async fn a_hold_lent_by_the_overdraft_can_be_voided_after_the_debt_is_repaid(db: &TestDb) {
    let (account, _) = new_account(db, "over@draft.test", "free").await;
    let with_overdraft = |key: &str, command| LedgerRequest {
        policy: LedgerPolicy {
            overdraft_limit: 10,
        },
        ..request(&account, key, command)
    };
    let run = |key: &'static str, command| {
        let request = with_overdraft(key, command);
        async move {
            match db.store.execute(request).await.unwrap() {
                LedgerOutcome::Executed(Ok(receipt)) => receipt,
                other => panic!("{key}: {other:?}"),
            }
        }
    };
    let hold = run(
        "reserve",
        LedgerCommand::Reserve {
            amount: 5,
            expires_at: T0 + Duration::minutes(5),
            reference: None,
            memo: None,
        },
    )
    .await
    .hold
    .unwrap();
    assert_eq!(run("grant", grant(10)).await.balance, 5);
    let voided = run("void", LedgerCommand::Void { hold, memo: None }).await;
    assert_eq!(voided.balance, 10);
    let balance = db.store.balance(&account).await.unwrap();
    assert_eq!(balance.available, 10);
    let snapshot = db.store.snapshot(&account).await.unwrap();
    assert_eq!(snapshot.debt, 0);
    assert!(
        verify(&snapshot, 10).is_empty(),
        "{:?}",
        verify(&snapshot, 10)
    );
}

/// Another account's real hold cannot be touched, and credits held at a period's end roll
/// over through the store as in the core.
async fn holds_belong_to_their_account_and_held_credits_roll_over(db: &TestDb) {
    let (mine, _) = new_account(db, "mine@holds.test", "free").await;
    let (theirs, _) = new_account(db, "theirs@holds.test", "free").await;
    let end = T0 + Duration::hours(1);
    ok(
        db,
        &theirs,
        "allowance",
        LedgerCommand::Grant {
            amount: 100,
            source: GrantSource::PeriodAllowance,
            priority: 0,
            expires_at: Some(end),
            rollover_cap: 50,
            rollover_until: Some(end + Duration::days(1)),
            reference: Some("plan:1".into()),
            memo: None,
        },
    )
    .await;
    let reserve = LedgerCommand::Reserve {
        amount: 70,
        expires_at: T0 + Duration::hours(3),
        reference: None,
        memo: None,
    };
    let hold = ok(db, &theirs, "reserve", reserve).await.hold.unwrap();
    let void = LedgerCommand::Void {
        hold: hold.clone(),
        memo: None,
    };
    assert_eq!(
        db.store
            .execute(request(&mine, "steal", void))
            .await
            .unwrap(),
        LedgerOutcome::Executed(Err(LedgerError::HoldNotFound { hold: hold.clone() }))
    );
    db.clock.set(end + Duration::minutes(1));
    ok(db, &theirs, "sweep", LedgerCommand::ExpireGrants).await;
    let captured = ok(
        db,
        &theirs,
        "capture",
        LedgerCommand::Capture {
            hold,
            amount: 10,
            memo: None,
        },
    )
    .await;
    assert_eq!(
        captured.balance, 50,
        "30 rolled at the end, 20 more on return"
    );
    assert_verified(db, &theirs).await;
    assert_verified(db, &mine).await;
}

async fn one_allowance_grant_per_period_is_enforced_by_the_database(db: &TestDb) {
    let (account, _) = new_account(db, "per@iod.test", "free").await;
    let period = |key: &str| LedgerCommand::Grant {
        amount: 100,
        source: GrantSource::PeriodAllowance,
        priority: 0,
        expires_at: Some(T0 + Duration::days(30)),
        rollover_cap: 0,
        rollover_until: None,
        reference: Some(format!("sub_x:{key}")),
        memo: None,
    };
    ok(db, &account, "a", period("2026-06")).await;
    // Same period under a different idempotency key: the unique index refuses it.
    let err = db
        .store
        .execute(request(&account, "b", period("2026-06")))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict(Conflict::PeriodAllowance));
    assert_eq!(db.store.balance(&account).await.unwrap().available, 100);
    ok(db, &account, "c", period("2026-07")).await;
}

/// A purchase grant names its payment; the database grants a payment once, whatever key
/// the request comes with (a late duplicate long after its idempotency key was pruned).
async fn one_purchase_grant_per_payment_is_enforced_by_the_database(db: &TestDb) {
    let (account, _) = new_account(db, "pay@ment.test", "free").await;
    let purchase = |reference: &str| LedgerCommand::Grant {
        amount: 110,
        source: GrantSource::Purchase,
        priority: 0,
        expires_at: None,
        rollover_cap: 0,
        rollover_until: None,
        reference: Some(reference.into()),
        memo: None,
    };
    ok(db, &account, "first", purchase("payment:cs_1")).await;
    assert_eq!(
        db.store
            .execute(request(&account, "late", purchase("payment:cs_1")))
            .await
            .unwrap_err(),
        StoreError::Conflict(Conflict::PaymentGranted)
    );
    ok(db, &account, "other", purchase("payment:cs_2")).await;
    assert_eq!(db.store.balance(&account).await.unwrap().available, 220);
}

async fn unknown_accounts_are_not_found(db: &TestDb) {
    let stranger = AccountId::from_ulid(ulid());
    assert_eq!(
        db.store.execute(request(&stranger, "k", grant(1))).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(db.store.balance(&stranger).await, Err(StoreError::NotFound));
}

async fn quotas_track_idempotently_within_the_limit(db: &TestDb) {
    let (account, _) = new_account(db, "quo@ta.test", "free").await;
    let window = Window::month(T0, Timezone::utc());
    let track = |key: &str, amount: i64| TrackRequest {
        account: account.clone(),
        meter: "exports".into(),
        amount,
        window,
        limit: Some(3),
        key: key.into(),
    };
    assert_eq!(
        db.store.track(track("e1", 2)).await.unwrap(),
        TrackOutcome::Recorded { used: 2 }
    );
    assert_eq!(
        db.store.track(track("e1", 2)).await.unwrap(),
        TrackOutcome::Replayed { used: 2 }
    );
    assert_eq!(
        db.store.track(track("e1", 1)).await.unwrap(),
        TrackOutcome::Conflict
    );
    match db.store.track(track("e2", 2)).await.unwrap() {
        TrackOutcome::Rejected {
            error: QuotaError::QuotaExceeded {
                used: 2, limit: 3, ..
            },
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        db.store.track(track("e3", 1)).await.unwrap(),
        TrackOutcome::Recorded { used: 3 }
    );
    assert_eq!(
        db.store
            .usage(&account, "exports", window.start)
            .await
            .unwrap(),
        3
    );
    let next_month = Window::month(T0 + Duration::days(31), Timezone::utc());
    assert_eq!(
        db.store
            .usage(&account, "exports", next_month.start)
            .await
            .unwrap(),
        0
    );
}

async fn quota_batches_record_in_order_in_one_step(db: &TestDb) {
    let (account, _) = new_account(db, "batch@quo.ta", "free").await;
    let (other, _) = new_account(db, "other@quo.ta", "free").await;
    let month = Window::month(T0, Timezone::utc());
    let day = Window::day(T0, Timezone::utc());
    let event =
        |account: &AccountId, meter: &str, window: Window, key: &str, amount: i64| TrackRequest {
            account: account.clone(),
            meter: meter.into(),
            amount,
            window,
            limit: Some(5),
            key: key.into(),
        };
    assert_eq!(
        db.store
            .track(event(&account, "exports", month, "before", 1))
            .await
            .unwrap(),
        TrackOutcome::Recorded { used: 1 }
    );
    let batch = vec![
        event(&account, "exports", month, "before", 1),
        event(&account, "exports", month, "a", 3),
        event(&other, "exports", month, "a", 2),
        event(&account, "exports", month, "b", 2),
        event(&account, "renders", day, "c", 5),
        event(&account, "exports", month, "a", 3),
        event(&account, "exports", month, "d", 1),
        event(&account, "exports", month, "before", 4),
    ];
    let outcomes = db.store.track_many(batch.clone()).await.unwrap();
    assert!(
        matches!(
            outcomes[3],
            TrackOutcome::Rejected {
                error: QuotaError::QuotaExceeded {
                    used: 4,
                    requested: 2,
                    ..
                }
            }
        ),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(
        [&outcomes[..3], &outcomes[4..]].concat(),
        vec![
            TrackOutcome::Replayed { used: 1 },
            TrackOutcome::Recorded { used: 4 },
            TrackOutcome::Recorded { used: 2 },
            TrackOutcome::Recorded { used: 5 },
            TrackOutcome::Replayed { used: 4 },
            TrackOutcome::Recorded { used: 5 },
            TrackOutcome::Conflict,
        ]
    );
    let used = |account: AccountId, meter: &'static str, start| {
        let store = db.store.clone();
        async move { store.usage(&account, meter, start).await.unwrap() }
    };
    assert_eq!(used(account.clone(), "exports", month.start).await, 5);
    assert_eq!(used(account.clone(), "renders", day.start).await, 5);
    assert_eq!(used(other.clone(), "exports", month.start).await, 2);
    // The whole batch again records nothing: what was recorded replays with its total then,
    // what was refused is refused again.
    let again = db.store.track_many(batch).await.unwrap();
    assert_eq!(
        again.iter().map(std::mem::discriminant).collect::<Vec<_>>(),
        [
            TrackOutcome::Replayed { used: 0 },
            TrackOutcome::Replayed { used: 0 },
            TrackOutcome::Replayed { used: 0 },
            TrackOutcome::Rejected {
                error: QuotaError::InvalidAmount
            },
            TrackOutcome::Replayed { used: 0 },
            TrackOutcome::Replayed { used: 0 },
            TrackOutcome::Replayed { used: 0 },
            TrackOutcome::Conflict,
        ]
        .iter()
        .map(std::mem::discriminant)
        .collect::<Vec<_>>()
    );
    assert_eq!(again[1], TrackOutcome::Replayed { used: 4 });
    assert_eq!(used(account.clone(), "exports", month.start).await, 5);
    // A batch naming an account that does not exist changes nothing.
    let stranger = AccountId::from_ulid(ulid());
    assert_eq!(
        db.store
            .track_many(vec![
                event(&account, "exports", month, "e", 1),
                event(&stranger, "exports", month, "e", 1),
            ])
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(db.store.track_many(Vec::new()).await, Ok(Vec::new()));
}

fn subscription(
    account: &AccountId,
    status: SubscriptionStatus,
    external_id: &str,
) -> Subscription {
    billing_core::testing::pro_subscription(ulid(), account, status, external_id, T0)
}

async fn subscriptions_save_with_optimistic_checks(db: &TestDb) {
    let (account, _) = new_account(db, "sub@scriber.test", "free").await;
    let mut sub = subscription(&account, SubscriptionStatus::Incomplete, "sub_stripe_1");
    db.store.save(&sub, None).await.unwrap();
    let read = sub.expected();
    sub.status = SubscriptionStatus::PastDue;
    sub.version = 42;
    sub.past_due_since = Some(T0 + Duration::days(3));
    sub.current_period = Some(Window {
        start: T0,
        end: T0 + Duration::days(30),
    });
    db.store.save(&sub, Some(read)).await.unwrap();
    // A writer that still thinks it is incomplete, or that read an older version, loses.
    assert!(matches!(
        db.store.save(&sub, Some(read)).await,
        Err(StoreError::Conflict(_))
    ));
    let stale = billing_core::subscription::Expected {
        status: SubscriptionStatus::PastDue,
        version: 41,
    };
    assert!(matches!(
        db.store.save(&sub, Some(stale)).await,
        Err(StoreError::Conflict(_))
    ));
    // The dunning sweep finds it once its grace has begun before the cut-off.
    assert!(
        db.store
            .past_due_before(T0 + Duration::days(3), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db.store
            .past_due_before(T0 + Duration::days(4), 10)
            .await
            .unwrap(),
        vec![sub.clone()]
    );
    assert_eq!(
        db.store.by_external_id("sub_stripe_1").await.unwrap(),
        Some(sub.clone())
    );
    assert_eq!(
        SubscriptionStore::get(&db.store, &sub.id).await.unwrap(),
        Some(sub.clone())
    );
    assert_eq!(db.store.current(&account).await.unwrap(), Some(sub.clone()));
    // One live subscription per account.
    let mut second = sub.clone();
    second.id = SubscriptionId::from_ulid(ulid());
    second.external_id = Some("sub_stripe_2".into());
    assert!(matches!(
        db.store.save(&second, None).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Another instance's read cache may answer `current` with a subscription changed elsewhere
/// since (for up to its TTL, the documented rule); `current_uncached`, which decides the
/// account's plan, reads what is stored.
async fn a_plan_decision_reads_the_subscription_past_the_cache(db: &TestDb) {
    let (account, _) = new_account(db, "cached@scriber.test", "pro").await;
    let live = subscription(&account, SubscriptionStatus::Active, "sub_cached");
    db.store.save(&live, None).await.unwrap();
    let other = db
        .another_instance(std::time::Duration::from_secs(600))
        .await;
    assert_eq!(other.current(&account).await.unwrap(), Some(live.clone()));
    let mut ended = live.clone();
    ended.status = SubscriptionStatus::Canceled;
    ended.canceled_at = Some(T0);
    db.store.save(&ended, Some(live.expected())).await.unwrap();
    assert_eq!(other.current(&account).await.unwrap(), Some(live.clone()));
    assert_eq!(other.current_uncached(&account).await.unwrap(), None);
    assert_eq!(db.store.current_uncached(&account).await.unwrap(), None);
}

/// Idempotency records are pruned by age, and nothing else with them: the balance, the
/// journal and the quota totals stay; a pruned key is a new request.
async fn old_idempotency_records_are_pruned_and_nothing_else(db: &TestDb) {
    use billing_core::ports::{Pruned, RetentionStore};
    let (account, _) = new_account(db, "re@tention.test", "free").await;
    ok(db, &account, "grant-1", grant(10)).await;
    let window = Window::month(T0, Timezone::utc());
    let track = TrackRequest {
        account: account.clone(),
        meter: "exports".into(),
        amount: 1,
        window,
        limit: None,
        key: "event-1".into(),
    };
    db.store.track(track.clone()).await.unwrap();
    db.store.claim("usr_r", "key-1", "fp").await.unwrap();
    assert_eq!(
        db.store.prune_idempotency(T0).await.unwrap(),
        Pruned::default(),
        "nothing is older than T0"
    );
    let pruned = db
        .store
        .prune_idempotency(T0 + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        (pruned.ledger_keys, pruned.api_keys, pruned.quota_events),
        (1, 1, 1)
    );
    assert_eq!(db.store.balance(&account).await.unwrap().available, 10);
    assert_eq!(
        db.store
            .usage(&account, "exports", window.start)
            .await
            .unwrap(),
        1,
        "the usage total stays"
    );
    // The forgotten key is a new request now.
    assert_eq!(ok(db, &account, "grant-1", grant(10)).await.balance, 20);
    assert_verified(db, &account).await;
}

async fn api_idempotency_claims_once(db: &TestDb) {
    assert_eq!(
        db.store.claim("usr_1", "key", "fp1").await.unwrap(),
        KeyState::Claimed
    );
    assert_eq!(
        db.store.claim("usr_1", "key", "fp1").await.unwrap(),
        KeyState::InProgress
    );
    assert_eq!(
        db.store.claim("usr_1", "key", "fp2").await.unwrap(),
        KeyState::Conflict
    );
    let response = StoredResponse {
        status: 201,
        body: "{\"ok\":true}".into(),
    };
    db.store
        .complete("usr_1", "key", response.clone())
        .await
        .unwrap();
    assert_eq!(
        db.store.claim("usr_1", "key", "fp1").await.unwrap(),
        KeyState::Completed { response }
    );
    assert_eq!(
        db.store.claim("usr_2", "key", "fp9").await.unwrap(),
        KeyState::Claimed,
        "scoped per caller"
    );
    db.store.release("usr_2", "key").await.unwrap();
    assert_eq!(
        db.store.claim("usr_2", "key", "fp9").await.unwrap(),
        KeyState::Claimed
    );
}

async fn webhooks_are_stored_once(db: &TestDb) {
    let event = WebhookEvent {
        id: WebhookId::from_ulid(ulid()),
        external_id: "evt_1".into(),
        kind: "invoice.paid".into(),
        payload: serde_json::json!({"id": "evt_1"}),
        status: WebhookStatus::Received,
        attempts: 0,
        last_error: None,
        received_at: T0,
    };
    assert!(db.store.record(event.clone()).await.unwrap());
    let mut again = event.clone();
    again.id = WebhookId::from_ulid(ulid());
    assert!(!db.store.record(again).await.unwrap(), "second delivery");
    db.store
        .mark(
            "evt_1",
            WebhookStatus::Failed,
            Some("boom".into()),
            Some(T0 + Duration::minutes(1)),
        )
        .await
        .unwrap();
    let failed = db
        .store
        .with_status(
            WebhookStatus::Failed,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 1);
    assert_eq!(failed.items[0].attempts, 1);
    assert_eq!(failed.items[0].payload, event.payload);
    // A failed event is due again from its retry time, until its attempts run out.
    let ids = |events: Vec<WebhookEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.external_id).collect()
    };
    assert!(db.store.due(T0, 3, 10).await.unwrap().is_empty());
    let later = T0 + Duration::minutes(1);
    assert_eq!(ids(db.store.due(later, 3, 10).await.unwrap()), ["evt_1"]);
    assert!(
        db.store.due(later, 1, 10).await.unwrap().is_empty(),
        "out of attempts: dead-lettered"
    );
    let mut fresh = event.clone();
    fresh.id = WebhookId::from_ulid(ulid());
    fresh.external_id = "evt_2".into();
    db.store.record(fresh).await.unwrap();
    assert_eq!(ids(db.store.due(T0, 3, 10).await.unwrap()), ["evt_2"]);
    db.store
        .mark("evt_2", WebhookStatus::Processed, None, None)
        .await
        .unwrap();
    assert_eq!(ids(db.store.due(later, 3, 10).await.unwrap()), ["evt_1"]);
    // An admin's retry queues a dead-lettered event again; a processed one is not retried.
    assert!(db.store.due(later, 1, 10).await.unwrap().is_empty());
    assert!(db.store.retry("evt_1").await.unwrap());
    assert_eq!(ids(db.store.due(later, 1, 10).await.unwrap()), ["evt_1"]);
    assert!(!db.store.retry("evt_2").await.unwrap(), "processed");
    assert!(!db.store.retry("evt_9").await.unwrap(), "unknown");
    let found = db.store.event("evt_1").await.unwrap().unwrap();
    assert_eq!((found.status, found.attempts), (WebhookStatus::Received, 1));
    assert_eq!(db.store.event("evt_9").await.unwrap(), None);
}

async fn the_audit_log_appends_and_filters(db: &TestDb) {
    for (i, target) in ["acc_a", "acc_b", "acc_a"].iter().enumerate() {
        db.store
            .append(&AuditRecord {
                id: AuditId::from_ulid(ulid()),
                actor: "usr_admin".into(),
                action: "credits.adjust".into(),
                target: Some((*target).into()),
                request_id: Some(format!("req-{i}")),
                details: serde_json::json!({"delta": i}),
                at: T0,
            })
            .await
            .unwrap();
    }
    let about_a = AuditStore::list(
        &db.store,
        Some("acc_a".into()),
        PageRequest {
            limit: 10,
            after: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(about_a.items.len(), 2);
    assert_eq!(about_a.items[0].details["delta"], 2, "newest first");
}

async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family(db: &TestDb) {
    use billing_core::ports::SessionStore;
    use billing_core::records::{RefreshToken, Rotation};
    let (_, user) = new_account(db, "sess@ion.test", "free").await;
    let token = |id: &str, hash: &str| RefreshToken {
        id: id.into(),
        user: user.clone(),
        family: "fam_1".into(),
        token_hash: hash.into(),
        expires_at: T0 + Duration::days(30),
        created_at: T0,
    };
    db.store.issue(&token("rtk_1", "h1")).await.unwrap();
    let now = T0 + Duration::minutes(1);
    assert_eq!(
        db.store
            .rotate("h1", &token("rtk_2", "h2"), now)
            .await
            .unwrap(),
        Rotation::Rotated {
            user: user.clone(),
            family: "fam_1".into()
        }
    );
    assert_eq!(
        db.store
            .rotate("h2", &token("rtk_3", "h3"), now)
            .await
            .unwrap(),
        Rotation::Rotated {
            user: user.clone(),
            family: "fam_1".into()
        }
    );
    // h1 was already rotated: replaying it revokes the family, including the live h3.
    assert_eq!(
        db.store
            .rotate("h1", &token("rtk_4", "h4"), now)
            .await
            .unwrap(),
        Rotation::Reused {
            user: user.clone(),
            family: "fam_1".into()
        }
    );
    assert_eq!(
        db.store
            .rotate("h3", &token("rtk_5", "h5"), now)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert_eq!(
        db.store
            .rotate("nope", &token("rtk_6", "h6"), now)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    // Expired tokens do not rotate; logout revokes a family.
    let mut old = token("rtk_7", "h7");
    old.family = "fam_2".into();
    db.store.issue(&old).await.unwrap();
    assert_eq!(
        db.store
            .rotate("h7", &token("rtk_8", "h8"), T0 + Duration::days(31))
            .await
            .unwrap(),
        Rotation::Invalid
    );
    let mut live = token("rtk_9", "h9");
    live.family = "fam_3".into();
    db.store.issue(&live).await.unwrap();
    assert_eq!(
        db.store.live_session("fam_3").await.unwrap(),
        Some((user.clone(), Role::User))
    );
    assert_eq!(
        db.store.live_session("fam_1").await.unwrap(),
        None,
        "reuse ended the sign-in"
    );
    assert_eq!(
        db.store
            .revoke_family_of("h9", now)
            .await
            .unwrap()
            .as_deref(),
        Some("fam_3")
    );
    assert_eq!(db.store.live_session("fam_3").await.unwrap(), None);
    assert_eq!(
        db.store
            .rotate("h9", &token("rtk_10", "h10"), now)
            .await
            .unwrap(),
        Rotation::Invalid
    );
    assert_eq!(
        db.store.revoke_family_of("unknown", now).await.unwrap(),
        None
    );
    // A password change ends every sign-in and every outstanding reset code.
    let mut other = token("rtk_11", "h11");
    other.family = "fam_4".into();
    db.store.issue(&other).await.unwrap();
    db.store
        .issue_one_time(&user, "password_reset", "c1", T0 + Duration::hours(1), now)
        .await
        .unwrap();
    db.store
        .issue_one_time(&user, "password_reset", "c2", T0 + Duration::hours(1), now)
        .await
        .unwrap();
    db.store.revoke_user(&user, now).await.unwrap();
    db.store
        .revoke_one_time(&user, "password_reset", now)
        .await
        .unwrap();
    assert_eq!(db.store.live_session("fam_4").await.unwrap(), None);
    for code in ["c1", "c2"] {
        assert_eq!(
            db.store
                .consume_one_time(code, "password_reset", now)
                .await
                .unwrap(),
            None
        );
    }
}

async fn concurrent_rotations_of_one_token_let_exactly_one_through(db: &TestDb) {
    use billing_core::ports::SessionStore;
    use billing_core::records::{RefreshToken, Rotation};
    let (_, user) = new_account(db, "race@session.test", "free").await;
    let token = |n: usize| RefreshToken {
        id: format!("rtk_r{n}"),
        user: user.clone(),
        family: "fam_race".into(),
        token_hash: format!("race{n}"),
        expires_at: T0 + Duration::days(30),
        created_at: T0,
    };
    db.store.issue(&token(0)).await.unwrap();
    let mut handles = Vec::new();
    for n in 1..=8 {
        let (store, next) = (db.store.clone(), token(n));
        handles.push(tokio::spawn(async move {
            store.rotate("race0", &next, T0).await.unwrap()
        }));
    }
    let (mut rotated, mut reused) = (0, 0);
    for handle in handles {
        match handle.await.unwrap() {
            Rotation::Rotated { .. } => rotated += 1,
            Rotation::Reused { .. } => reused += 1,
            // Once a loser has revoked the family, later ones find the token revoked.
            Rotation::Invalid => {}
        }
    }
    assert_eq!(rotated, 1);
    assert!(reused >= 1, "the replays were noticed");
    // The family is revoked, the winner's new token included.
    for n in 1..=8 {
        let hash = format!("race{n}");
        let next = token(100 + n);
        assert_eq!(
            db.store.rotate(&hash, &next, T0).await.unwrap(),
            Rotation::Invalid,
            "{hash}"
        );
    }
}

async fn user_data_belongs_to_its_owner(db: &TestDb) {
    use billing_core::ids::ApiKeyId;
    use billing_core::ports::{ApiKeyStore, UserDataStore};
    use billing_core::records::{ApiKey, SavedItem};
    let (_, alice) = new_account(db, "alice@data.test", "free").await;
    let (_, bob) = new_account(db, "bob@data.test", "free").await;
    assert_eq!(db.store.preferences(&alice).await.unwrap(), None);
    db.store
        .set_preferences(&alice, serde_json::json!({"theme": "dark"}), T0)
        .await
        .unwrap();
    db.store
        .set_preferences(&alice, serde_json::json!({"theme": "light"}), T0)
        .await
        .unwrap();
    assert_eq!(
        db.store.preferences(&alice).await.unwrap(),
        Some(serde_json::json!({"theme": "light"}))
    );
    assert_eq!(db.store.preferences(&bob).await.unwrap(), None);

    let item = |id: &str, kind: &str| SavedItem {
        id: id.into(),
        user: alice.clone(),
        kind: kind.into(),
        title: Some("t".into()),
        content: "hello".into(),
        metadata: serde_json::json!({"tags": ["a"]}),
        created_at: T0,
    };
    db.store.save_item(&item("itm_1", "prompt")).await.unwrap();
    db.store.save_item(&item("itm_2", "reply")).await.unwrap();
    let prompts = db
        .store
        .items(
            &alice,
            Some("prompt".into()),
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(prompts.items, [item("itm_1", "prompt")]);
    assert!(
        db.store
            .items(
                &bob,
                None,
                PageRequest {
                    limit: 10,
                    after: None
                }
            )
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        db.store.item(&bob, "itm_1").await.unwrap(),
        None,
        "not Bob's"
    );
    assert!(!db.store.delete_item(&bob, "itm_1").await.unwrap());
    assert!(db.store.delete_item(&alice, "itm_1").await.unwrap());
    assert_eq!(db.store.item(&alice, "itm_1").await.unwrap(), None);

    let key = ApiKey {
        id: ApiKeyId::from_ulid(ulid()),
        user: alice.clone(),
        name: "ci".into(),
        prefix: "tgk_abcd".into(),
        key_hash: "hash-1".into(),
        created_at: T0,
        revoked_at: None,
    };
    db.store.create_key(&key).await.unwrap();
    assert_eq!(
        db.store.live_key("hash-1").await.unwrap(),
        Some(key.clone())
    );
    assert!(
        !db.store
            .revoke_key(&bob, key.id.as_str(), T0)
            .await
            .unwrap(),
        "not Bob's"
    );
    assert!(
        db.store
            .revoke_key(&alice, key.id.as_str(), T0)
            .await
            .unwrap()
    );
    assert_eq!(db.store.live_key("hash-1").await.unwrap(), None);
    assert_eq!(db.store.keys(&alice).await.unwrap()[0].revoked_at, Some(T0));
    // A password change or reset revokes every key of the user, and only theirs.
    for (n, owner) in [(2, &alice), (3, &alice), (4, &bob)] {
        let mut more = key.clone();
        more.id = ApiKeyId::from_ulid(ulid());
        more.user = owner.clone();
        more.key_hash = format!("hash-{n}");
        db.store.create_key(&more).await.unwrap();
    }
    assert_eq!(db.store.revoke_user_keys(&alice, T0).await.unwrap(), 2);
    assert_eq!(db.store.live_key("hash-2").await.unwrap(), None);
    assert!(db.store.live_key("hash-4").await.unwrap().is_some());
}

/// Payments are recorded once per provider id; the withheld credits move only from what
/// the caller read; charge observations merge (refunds accumulate, a decided dispute is
/// final) in any order; a customer links to one account.
async fn payments_charges_and_customers(db: &TestDb) {
    use billing_core::ids::PaymentId;
    use billing_core::payments::{ChargeState, DisputeStatus, Payment, PaymentKind, STRIPE};
    use billing_core::ports::PaymentStore;
    let (account, _) = new_account(db, "pay@er.test", "free").await;
    let (other, _) = new_account(db, "oth@er.test", "free").await;
    let payment = Payment {
        id: PaymentId::from_ulid(ulid()),
        account: account.clone(),
        kind: PaymentKind::Pack,
        external_id: "cs_1".into(),
        payment_intent: Some("pi_1".into()),
        item: "starter".into(),
        amount_minor: 999,
        currency: "usd".parse().unwrap(),
        credits: 110,
        withheld: 0,
        expires_at: Some(T0 + Duration::days(365)),
        created_at: T0,
    };
    assert_eq!(db.store.record_payment(&payment).await.unwrap(), payment);
    let mut again = payment.clone();
    again.id = PaymentId::from_ulid(ulid());
    again.credits = 5;
    assert_eq!(
        db.store.record_payment(&again).await.unwrap(),
        payment,
        "once per payment"
    );
    assert_eq!(
        db.store.by_intent("pi_1").await.unwrap(),
        vec![payment.clone()]
    );
    assert!(db.store.set_withheld(&payment.id, 0, 40).await.unwrap());
    assert!(!db.store.set_withheld(&payment.id, 0, 50).await.unwrap());
    let page = db
        .store
        .payments(&account, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].withheld, 40);
    assert!(
        db.store
            .payments(&other, PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Charges: refunds accumulate; a decided dispute stays decided.
    let seen = |refunded, dispute: Option<DisputeStatus>, day| ChargeState {
        charge: "ch_1".into(),
        payment_intent: Some("pi_1".into()),
        amount_minor: 999,
        refunded_minor: refunded,
        dispute,
        dispute_observed_at: dispute.map(|_| T0 + Duration::days(day)),
    };
    db.store.merge_charge(&seen(300, None, 0)).await.unwrap();
    db.store
        .merge_charge(&seen(0, Some(DisputeStatus::Lost), 2))
        .await
        .unwrap();
    db.store.merge_charge(&seen(100, None, 0)).await.unwrap();
    let merged = db
        .store
        .merge_charge(&seen(0, Some(DisputeStatus::Open), 5))
        .await
        .unwrap();
    assert_eq!(merged.refunded_minor, 300);
    assert_eq!(merged.dispute, Some(DisputeStatus::Lost));
    assert_eq!(db.store.charge("ch_1").await.unwrap(), Some(merged.clone()));
    assert_eq!(db.store.charges_for("pi_1").await.unwrap(), vec![merged]);
    // Customers.
    db.store
        .link_customer(STRIPE, "cus_1", &account)
        .await
        .unwrap();
    db.store
        .link_customer(STRIPE, "cus_1", &other)
        .await
        .unwrap();
    assert_eq!(
        db.store.customer_account(STRIPE, "cus_1").await.unwrap(),
        Some(account.clone())
    );
    assert_eq!(
        db.store
            .customer_of(STRIPE, &account)
            .await
            .unwrap()
            .as_deref(),
        Some("cus_1")
    );
    assert_eq!(db.store.customer_of(STRIPE, &other).await.unwrap(), None);
}

/// Many observations of one charge at once all count (the merge is atomic).
async fn concurrent_charge_observations_all_count(db: &TestDb) {
    use billing_core::payments::ChargeState;
    use billing_core::ports::PaymentStore;
    let tasks: Vec<_> = (1..=16)
        .map(|n| {
            let store = db.store.clone();
            tokio::spawn(async move {
                store
                    .merge_charge(&ChargeState {
                        charge: "ch_many".into(),
                        payment_intent: Some("pi_many".into()),
                        amount_minor: 1000,
                        refunded_minor: n * 10,
                        dispute: None,
                        dispute_observed_at: None,
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stored = db.store.charge("ch_many").await.unwrap().unwrap();
    assert_eq!(stored.refunded_minor, 160);
}

async fn each_job_period_is_claimed_once(db: &TestDb) {
    use billing_core::ports::JobStore;
    let period = T0;
    let next = T0 + Duration::seconds(30);
    let claim = |job: &'static str, at, instance: &'static str| {
        let store = db.store.clone();
        async move { store.claim_run(job, at, instance, at).await.unwrap() }
    };
    // Sixteen instances race for one period: one wins.
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let store = db.store.clone();
            tokio::spawn(async move {
                store
                    .claim_run("sweep", period, &format!("i{n}"), period)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    assert_eq!(won, 1);
    assert!(claim("sweep", next, "i1").await, "the next period is free");
    assert!(
        claim("other", period, "i1").await,
        "another job's period is its own"
    );
    assert!(!claim("other", period, "i2").await);
    let runs = db
        .store
        .recent_runs(Some("sweep".into()), 10)
        .await
        .unwrap();
    assert_eq!(
        runs.iter().map(|r| r.period).collect::<Vec<_>>(),
        [next, period],
        "newest first"
    );
    assert_eq!(runs[0].instance, "i1");
    assert_eq!(db.store.recent_runs(None, 10).await.unwrap().len(), 3);
    assert_eq!(db.store.prune_runs(next).await.unwrap(), 2);
    assert_eq!(db.store.recent_runs(None, 10).await.unwrap().len(), 1);
    let queues = db.store.queues().await.unwrap();
    assert_eq!(
        queues
            .iter()
            .map(|q| (q.queue.as_str(), q.depth, q.oldest))
            .collect::<Vec<_>>(),
        [
            ("tasks", 0, None),
            ("task_webhooks", 0, None),
            ("payment_events", 0, None)
        ]
    );
}

on_both_backends!(
    each_job_period_is_claimed_once,
    user_data_belongs_to_its_owner,
    refresh_tokens_rotate_once_and_reuse_revokes_the_family,
    concurrent_rotations_of_one_token_let_exactly_one_through,
    migrations_go_down_and_up_again,
    accounts_and_users,
    ledger_moves_credits_and_journals_them,
    idempotency_keys_replay_and_conflict,
    holds_expire_and_grants_expire,
    a_hold_lent_by_the_overdraft_can_be_voided_after_the_debt_is_repaid,
    holds_belong_to_their_account_and_held_credits_roll_over,
    one_allowance_grant_per_period_is_enforced_by_the_database,
    unknown_accounts_are_not_found,
    one_purchase_grant_per_payment_is_enforced_by_the_database,
    quotas_track_idempotently_within_the_limit,
    quota_batches_record_in_order_in_one_step,
    subscriptions_save_with_optimistic_checks,
    a_plan_decision_reads_the_subscription_past_the_cache,
    api_idempotency_claims_once,
    old_idempotency_records_are_pruned_and_nothing_else,
    webhooks_are_stored_once,
    the_audit_log_appends_and_filters,
    payments_charges_and_customers,
    concurrent_charge_observations_all_count,
);
