//! The hold-expiry worker releases holds whose time is up, and only those.

use std::sync::Arc;

use app::workers::{SweepReport, sweep_once};
use billing_core::ids::{AccountId, PrefixedId, Ulid, UserId};
use billing_core::ledger::{
    GrantSource, HoldStatus, IdempotencyKey, LedgerCommand, LedgerPolicy, LedgerRequest,
};
use billing_core::ports::{AccountStore, LedgerOutcome, LedgerStore};
use billing_core::records::{Account, Role, User};
use billing_core::testing::{FixedClock, SequentialIds};
use store_diesel::{DatabaseConfig, DieselStore, migrate};
use time::Duration;
use time::macros::datetime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_holds_are_released_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("w.db").display()),
        pool_size: 4,
        connect_timeout: std::time::Duration::from_secs(10),
        busy_timeout: std::time::Duration::from_secs(10),
        read_cache: std::time::Duration::ZERO,
    };
    migrate::run_pending(&config).await.unwrap();
    let t0 = datetime!(2026-06-01 12:00 UTC);
    let clock = Arc::new(FixedClock::new(t0));
    let store = DieselStore::connect(&config, clock.clone(), Arc::new(SequentialIds::default()))
        .await
        .unwrap();
    let account = AccountId::from_ulid(Ulid(1));
    store
        .create(
            Account {
                id: account.clone(),
                plan: "free".into(),
                created_at: t0,
            },
            User {
                id: UserId::from_ulid(Ulid(2)),
                account: account.clone(),
                email: "w@orker.test".into(),
                name: None,
                role: Role::User,
                email_verified: false,
                password_hash: None,
                external_subject: None,
                created_at: t0,
            },
        )
        .await
        .unwrap();
    let run = |key: &str, command| {
        store.execute(LedgerRequest {
            account: account.clone(),
            key: IdempotencyKey::new(key).unwrap(),
            command,
            policy: LedgerPolicy::default(),
            intent: None,
        })
    };
    let grant = LedgerCommand::Grant {
        amount: 100,
        source: GrantSource::Purchase,
        priority: 0,
        expires_at: None,
        rollover_cap: 0,
        rollover_until: None,
        reference: None,
        memo: None,
    };
    run("g", grant).await.unwrap();
    let mut holds = Vec::new();
    for (i, minutes) in [1, 1, 30].into_iter().enumerate() {
        let command = LedgerCommand::Reserve {
            amount: 10,
            expires_at: t0 + Duration::minutes(minutes),
            reference: None,
            memo: None,
        };
        match run(&format!("r{i}"), command).await.unwrap() {
            LedgerOutcome::Executed(Ok(r)) => holds.push(r.hold.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    let released = |n| SweepReport {
        released: n,
        failed: 0,
    };
    assert_eq!(
        sweep_once(&store, clock.as_ref()).await.unwrap(),
        released(0),
        "nothing is due yet"
    );
    clock.set(t0 + Duration::minutes(2));
    assert_eq!(
        sweep_once(&store, clock.as_ref()).await.unwrap(),
        released(2)
    );
    assert_eq!(
        sweep_once(&store, clock.as_ref()).await.unwrap(),
        released(0),
        "a second sweep finds nothing"
    );
    let balance = store.balance(&account).await.unwrap();
    assert_eq!((balance.available, balance.held), (90, 10));
    let snapshot = store.snapshot(&account).await.unwrap();
    let status = |i: usize| {
        snapshot
            .holds
            .iter()
            .find(|h| h.id == holds[i])
            .unwrap()
            .status
    };
    assert_eq!(
        [status(0), status(1), status(2)],
        [
            HoldStatus::Expired,
            HoldStatus::Expired,
            HoldStatus::Pending
        ]
    );
}

/// The use cases over a fresh SQLite file, on a test clock set to `now` (the sample
/// catalog; keep the folder alive as long as the store).
async fn billing_on_sqlite(
    now: time::OffsetDateTime,
) -> (
    tempfile::TempDir,
    Arc<FixedClock>,
    billing_core::usecases::Billing,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("billing.db").display()),
        pool_size: 4,
        connect_timeout: std::time::Duration::from_secs(10),
        busy_timeout: std::time::Duration::from_secs(10),
        read_cache: std::time::Duration::ZERO,
    };
    migrate::run_pending(&config).await.unwrap();
    let clock = Arc::new(FixedClock::new(now));
    let ids = Arc::new(SequentialIds::default());
    let store = Arc::new(
        DieselStore::connect(&config, clock.clone(), ids.clone())
            .await
            .unwrap(),
    );
    let billing = billing_core::usecases::Billing {
        catalog: Arc::new(billing_core::testing::sample_catalog()),
        accounts: store.clone(),
        ledger: store.clone(),
        subscriptions: store.clone(),
        payments: store,
        clock: clock.clone(),
        ids,
        default_hold_ttl: Duration::minutes(10),
    };
    (dir, clock, billing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_allowances_are_granted_once_per_day() {
    use app::workers::renew_once;
    use billing_core::usecases::SignUp;
    let day1 = datetime!(2026-06-01 10:00 UTC);
    let (_dir, clock, billing) = billing_on_sqlite(day1).await;
    // The sample catalog's free plan: 50 welcome credits and 20 a day.
    let signed_up = billing
        .sign_up(SignUp {
            email: "daily@example.com".into(),
            name: None,
            password_hash: None,
            external_subject: None,
            email_verified: false,
        })
        .await
        .unwrap();
    let account = signed_up.account.id;
    assert_eq!(
        billing.ledger.balance(&account).await.unwrap().available,
        70
    );
    assert_eq!(
        renew_once(&billing).await.unwrap(),
        0,
        "today's allowance was granted at sign-up"
    );

    clock.set(day1 + Duration::days(1));
    assert_eq!(renew_once(&billing).await.unwrap(), 1);
    assert_eq!(renew_once(&billing).await.unwrap(), 0, "once per day");
    // Yesterday's 20 expired; today's 20 arrived; the welcome credits stay.
    let balance = billing.ledger.balance(&account).await.unwrap();
    assert_eq!(balance.available, 70);
    assert_eq!(
        billing
            .ledger
            .snapshot(&account)
            .await
            .unwrap()
            .transactions
            .iter()
            .filter(|t| t.kind == billing_core::ledger::TxnKind::Expiry)
            .count(),
        1
    );
}

/// One hold the store cannot release (the first, oldest one) must not stop the sweep: the
/// worker logs it, counts it and goes on to the next, page after page.
#[tokio::test]
async fn a_failing_hold_does_not_stop_the_sweep() {
    use billing_core::ids::HoldId;
    use billing_core::ledger::Receipt;
    use billing_core::ports::{MockLedgerStore, StoreError};

    let t0 = datetime!(2026-06-01 12:00 UTC);
    let account = AccountId::from_ulid(Ulid(1));
    let hold = |n: u128| HoldId::from_ulid(Ulid(n));
    // Page one: the bad hold and 199 good ones; page two: one more good one.
    let page_one: Vec<_> = (1..=200).map(|n| (account.clone(), hold(n))).collect();
    let mut store = MockLedgerStore::new();
    store
        .expect_expired_holds()
        .returning(move |_, after, limit| {
            assert_eq!(limit, 200);
            Ok(match after {
                None => page_one.clone(),
                Some(h) if h == hold(200) => vec![(AccountId::from_ulid(Ulid(1)), hold(201))],
                Some(_) => Vec::new(),
            })
        });
    store.expect_execute().returning(move |request| {
        let LedgerCommand::ExpireHold { hold: id } = &request.command else {
            panic!("{request:?}");
        };
        if *id == hold(1) {
            return Err(StoreError::Other("CHECK constraint failed".into()));
        }
        Ok(LedgerOutcome::Executed(Ok(Receipt {
            txn: None,
            kind: None,
            amount: 10,
            balance: 10,
            hold: Some(id.clone()),
            grant: None,
            at: t0,
        })))
    });
    let report = sweep_once(&store, &FixedClock::new(t0)).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            released: 200,
            failed: 1
        }
    );
}

/// A payment event whose apply fails (the database is down) is marked failed with a retry
/// time, not lost and not marked done; its next attempt waits longer.
#[tokio::test]
async fn a_failing_payment_event_is_retried_later_not_lost() {
    use app::workers::{WebhookReport, apply_webhooks_once};
    use billing_core::ids::WebhookId;
    use billing_core::ports::{
        MockAccountStore, MockLedgerStore, MockMailer, MockPaymentStore, MockSubscriptionStore,
        MockWebhookEventStore, StoreError,
    };
    use billing_core::records::{WebhookEvent, WebhookStatus};
    use billing_core::usecases::Billing;

    let t0 = datetime!(2026-06-01 12:00 UTC);
    let account = AccountId::from_ulid(Ulid(1));
    let event = WebhookEvent {
        id: WebhookId::from_ulid(Ulid(3)),
        external_id: "evt_1".into(),
        kind: "checkout.session.completed".into(),
        payload: serde_json::json!({"id": "evt_1", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_1", "mode": "payment", "payment_status": "paid",
                "metadata": {"account_id": account.to_string(), "pack": "starter"}}}}),
        status: WebhookStatus::Received,
        attempts: 2,
        last_error: None,
        received_at: t0,
    };
    let mut events = MockWebhookEventStore::new();
    let mut served = false;
    events.expect_due().returning(move |_, max, _| {
        assert_eq!(max, 8);
        let first = !served;
        served = true;
        Ok(if first {
            vec![event.clone()]
        } else {
            Vec::new()
        })
    });
    events
        .expect_mark()
        .withf(move |id, status, error, retry_at| {
            id == "evt_1"
                && *status == WebhookStatus::Failed
                && error.as_deref().is_some_and(|e| e.contains("unavailable"))
                && *retry_at == Some(t0 + Duration::seconds(20))
        })
        .times(1)
        .returning(|_, _, _, _| Ok(()));
    let mut accounts = MockAccountStore::new();
    let owner = account.clone();
    accounts.expect_account().returning(move |_| {
        Ok(Some(Account {
            id: owner.clone(),
            plan: "free".into(),
            created_at: t0,
        }))
    });
    let mut ledger = MockLedgerStore::new();
    ledger
        .expect_execute()
        .returning(|_| Err(StoreError::Unavailable("connection refused".into())));
    // The payment is recorded; granting its credits is what fails.
    let mut payments = MockPaymentStore::new();
    payments
        .expect_record_payment()
        .returning(|payment| Ok(payment.clone()));
    let billing = Billing {
        catalog: Arc::new(billing_core::testing::sample_catalog()),
        accounts: Arc::new(accounts),
        ledger: Arc::new(ledger),
        subscriptions: Arc::new(MockSubscriptionStore::new()),
        payments: Arc::new(payments),
        clock: Arc::new(FixedClock::new(t0)),
        ids: Arc::new(SequentialIds::default()),
        default_hold_ttl: Duration::minutes(10),
    };
    let mailer = MockMailer::new();
    let report = apply_webhooks_once(&billing, &events, &mailer, 8)
        .await
        .unwrap();
    assert_eq!(
        report,
        WebhookReport {
            applied: 0,
            ignored: 0,
            failed: 1
        }
    );
}

/// The dunning policy: a failed renewal keeps the plan for the catalog's grace days, then
/// the account has the default plan until a payment succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_renewal_keeps_the_plan_for_the_grace_then_falls_to_the_default() {
    use app::workers::dunning_once;
    use billing_core::payments::{InvoiceFailure, InvoicePayment, PayerRef, PaymentEvent};
    use billing_core::quota::Window;
    use billing_core::usecases::{Applied, Billing, Notice, SignUp};
    let t0 = datetime!(2026-06-01 10:00 UTC);
    let (_dir, clock, billing) = billing_on_sqlite(t0).await;
    let account = billing
        .sign_up(SignUp {
            email: "late@example.com".into(),
            name: None,
            password_hash: None,
            external_subject: None,
            email_verified: false,
        })
        .await
        .unwrap()
        .account
        .id;
    let payer = PayerRef {
        account: Some(account.clone()),
        ..PayerRef::default()
    };
    let paid = |n: u32, start, observed_at| {
        PaymentEvent::InvoicePaid(InvoicePayment {
            invoice_id: format!("in_{n}"),
            subscription: Some("sub_late".into()),
            payer: payer.clone(),
            price: None,
            plan: Some("pro".into()),
            period: Some(Window {
                start,
                end: start + Duration::days(30),
            }),
            renews: true,
            amount_minor: 999,
            currency: None,
            payment_intent: None,
            observed_at,
        })
    };
    billing.apply_payment_event(paid(1, t0, t0)).await.unwrap();
    let plan = |billing: &Billing| {
        let (billing, account) = (billing.clone(), account.clone());
        async move {
            billing
                .accounts
                .account(&account)
                .await
                .unwrap()
                .unwrap()
                .plan
        }
    };
    assert_eq!(plan(&billing).await, "pro");
    // The renewal fails: past due, a notice, still pro.
    let failed_at = t0 + Duration::days(30);
    clock.set(failed_at);
    let applied = billing
        .apply_payment_event(PaymentEvent::InvoiceFailed(InvoiceFailure {
            invoice_id: "in_2".into(),
            subscription: Some("sub_late".into()),
            final_attempt: false,
            observed_at: failed_at,
        }))
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied::Done(vec![Notice::PaymentFailed {
            account: account.clone(),
            final_attempt: false
        }])
    );
    assert_eq!(dunning_once(&billing).await.unwrap(), 0);
    assert_eq!(plan(&billing).await, "pro");
    // Past the sample catalog's 7 days of grace: the default plan.
    clock.set(failed_at + Duration::days(7) + Duration::minutes(1));
    assert_eq!(dunning_once(&billing).await.unwrap(), 1);
    assert_eq!(plan(&billing).await, "free");
    // Stripe's retry succeeds: pro again.
    let retried = failed_at + Duration::days(8);
    clock.set(retried);
    billing
        .apply_payment_event(paid(2, failed_at, retried))
        .await
        .unwrap();
    assert_eq!(plan(&billing).await, "pro");
    assert_eq!(dunning_once(&billing).await.unwrap(), 0);
}
