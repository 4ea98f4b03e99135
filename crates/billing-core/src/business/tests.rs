//! The figures against a history small enough to count by hand.

use rust_decimal::Decimal;
use time::macros::{date, datetime};

use super::*;
use crate::catalog::Price;
use crate::ids::{PrefixedId, Ulid};
use crate::testing::sample_catalog;

fn account(n: u128) -> AccountId {
    AccountId::from_ulid(Ulid(n))
}

fn sub(
    n: u128,
    plan: &str,
    interval: Interval,
    status: SubscriptionStatus,
    created_at: OffsetDateTime,
) -> SubscriptionFact {
    SubscriptionFact {
        account: account(n),
        plan: plan.into(),
        interval,
        status,
        created_at,
        canceled_at: None,
        trial_end: None,
    }
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

const FROM: OffsetDateTime = datetime!(2026-11-01 00:00 UTC);
const TO: OffsetDateTime = datetime!(2026-12-01 00:00 UTC);
const NOW: OffsetDateTime = datetime!(2026-11-20 12:00 UTC);

fn catalog() -> Catalog {
    let mut catalog = sample_catalog();
    let pro = catalog
        .plans
        .get_mut("pro")
        .unwrap_or_else(|| panic!("pro"));
    pro.prices.insert(
        Interval::Year,
        Price {
            amount: dec("99.99"),
            currency: None,
            stripe_price_id: None,
        },
    );
    catalog
}

/// Eight subscriptions whose every figure is worked out in the comments.
fn history() -> BusinessFacts {
    use SubscriptionStatus::*;
    let mut subs = vec![
        // 1: paying since October, still active, monthly pro: 9.99 a month.
        sub(
            1,
            "pro",
            Interval::Month,
            Active,
            datetime!(2026-10-05 00:00 UTC),
        ),
        // 2: paying since October, yearly pro (99.99 / 12 = 8.3325 a month), past due.
        sub(
            2,
            "pro",
            Interval::Year,
            PastDue,
            datetime!(2026-10-06 00:00 UTC),
        ),
        // 3: paying since October, churned on Nov 10.
        SubscriptionFact {
            canceled_at: Some(datetime!(2026-11-10 00:00 UTC)),
            ..sub(
                3,
                "max",
                Interval::Month,
                Canceled,
                datetime!(2026-10-07 00:00 UTC),
            )
        },
        // 4: new in November, max monthly: 29.
        sub(
            4,
            "max",
            Interval::Month,
            Active,
            datetime!(2026-11-02 00:00 UTC),
        ),
        // 5: new in November with a trial ending Nov 9, converted.
        SubscriptionFact {
            trial_end: Some(datetime!(2026-11-09 00:00 UTC)),
            ..sub(
                5,
                "pro",
                Interval::Month,
                Active,
                datetime!(2026-11-02 00:00 UTC),
            )
        },
        // 6: a trial ending Nov 12, canceled on Nov 11: not converted, not churn.
        SubscriptionFact {
            trial_end: Some(datetime!(2026-11-12 00:00 UTC)),
            canceled_at: Some(datetime!(2026-11-11 00:00 UTC)),
            ..sub(
                6,
                "pro",
                Interval::Month,
                Canceled,
                datetime!(2026-11-05 00:00 UTC),
            )
        },
        // 7: a trial ending after `now`: started, not yet ended.
        SubscriptionFact {
            trial_end: Some(datetime!(2026-11-25 00:00 UTC)),
            ..sub(
                7,
                "max",
                Interval::Month,
                Trialing,
                datetime!(2026-11-18 00:00 UTC),
            )
        },
        // 8: lapsed in September (so not loaded), back on Nov 15: reactivated.
        sub(
            8,
            "pro",
            Interval::Month,
            Active,
            datetime!(2026-11-15 00:00 UTC),
        ),
    ];
    // 3 again: it churned on Nov 10 and came back on Nov 12: a reactivation.
    subs.push(sub(
        3,
        "pro",
        Interval::Month,
        Active,
        datetime!(2026-11-12 00:00 UTC),
    ));
    BusinessFacts {
        subscriptions: subs,
        lapsed_accounts: [account(8)].into(),
        ..BusinessFacts::default()
    }
}

#[test]
fn recurring_revenue_normalises_yearly_prices_and_counts_paying_subscriptions() {
    let m = business_metrics(&history(), &catalog(), FROM, TO, NOW);
    // Paying now: 1 (9.99), 2 (99.99/yr), 4 (29), 5 (9.99), 8 (9.99), 3's return (9.99).
    assert_eq!(m.recurring.len(), 1);
    let usd = m.recurring[0];
    assert_eq!(usd.subscriptions, 6);
    // 4 × 9.99 + 29 + 99.99 / 12 = 39.96 + 29 + 8.3325 = 77.2925 → 77.29.
    assert_eq!(usd.mrr, Money::new(dec("77.29"), Currency::USD));
    // 4 × 9.99 × 12 + 29 × 12 + 99.99 = 479.52 + 348 + 99.99.
    assert_eq!(usd.arr, Money::new(dec("927.51"), Currency::USD));
    assert_eq!(m.unpriced, 0);
}

#[test]
fn subscriptions_by_plan_and_status_leave_out_ended_ones() {
    let m = business_metrics(&history(), &catalog(), FROM, TO, NOW);
    assert_eq!(
        m.by_plan["pro"],
        BTreeMap::from([("active", 4), ("past_due", 1)])
    );
    assert_eq!(
        m.by_plan["max"],
        BTreeMap::from([("active", 1), ("trialing", 1)])
    );
}

#[test]
fn movement_tells_new_from_reactivated_and_churn_from_a_lost_trial() {
    let m = business_metrics(&history(), &catalog(), FROM, TO, NOW).movement;
    // Paying on Nov 1: 1, 2, 3.
    assert_eq!(m.paying_at_start, 3);
    // New: 4, 5, 6, 7 (first subscriptions); reactivated: 8 (lapsed earlier) and 3's return.
    assert_eq!(m.new, 4);
    assert_eq!(m.reactivated, 2);
    // Churned: 3 only; 6 ended inside its trial.
    assert_eq!(m.churned, 1);
    assert_eq!(m.churn_rate, Some(dec("0.3333")));
}

#[test]
fn trials_count_starts_and_conversions_of_trials_that_have_ended() {
    let t = business_metrics(&history(), &catalog(), FROM, TO, NOW).trials;
    assert_eq!(t.started, 3);
    // 5 and 6 ended before `now`; 7 has not.
    assert_eq!(t.ended, 2);
    assert_eq!(t.converted, 1);
    assert_eq!(t.conversion_rate, Some(dec("0.5")));
}

#[test]
fn an_empty_period_has_no_rates_rather_than_a_division_by_zero() {
    let m = business_metrics(&BusinessFacts::default(), &catalog(), FROM, TO, NOW);
    assert_eq!(m.movement, Movement::default());
    assert_eq!(m.trials.conversion_rate, None);
    assert!(m.recurring.is_empty() && m.days.is_empty() && m.models.is_empty());
}

#[test]
fn a_subscription_on_a_plan_the_catalog_no_longer_prices_is_counted_apart() {
    let facts = BusinessFacts {
        subscriptions: vec![sub(
            1,
            "pro",
            Interval::Year,
            SubscriptionStatus::Active,
            datetime!(2026-10-01 00:00 UTC),
        )],
        ..BusinessFacts::default()
    };
    let m = business_metrics(&facts, &sample_catalog(), FROM, TO, NOW);
    assert!(m.recurring.is_empty());
    assert_eq!(m.unpriced, 1);
}

#[test]
fn revenue_liability_models_and_days_add_up() {
    let facts = BusinessFacts {
        spent: vec![
            SpentGroup {
                day: date!(2026 - 11 - 03),
                kind: TxnKind::Debit,
                reference: Some("short_chat".into()),
                credits: 15,
                count: 3,
            },
            SpentGroup {
                day: date!(2026 - 11 - 03),
                kind: TxnKind::Debit,
                reference: Some("adjustment".into()),
                credits: 7,
                count: 1,
            },
            SpentGroup {
                day: date!(2026 - 11 - 04),
                kind: TxnKind::Capture,
                reference: None,
                credits: 40,
                count: 2,
            },
        ],
        by_source: vec![
            SourceGroup {
                day: date!(2026 - 11 - 03),
                source: Some(GrantSource::Purchase),
                credits: 22,
            },
            SourceGroup {
                day: date!(2026 - 11 - 04),
                source: None,
                credits: 40,
            },
        ],
        by_model: vec![
            ModelGroup {
                day: date!(2026 - 11 - 04),
                model: "mock-small".into(),
                credits: 10,
                calls: 5,
            },
            ModelGroup {
                day: date!(2026 - 11 - 04),
                model: "mock-large".into(),
                credits: 30,
                calls: 1,
            },
        ],
        model_accounts: BTreeMap::from([("mock-small".into(), 2), ("mock-large".into(), 1)]),
        signups: vec![(date!(2026 - 11 - 02), 4)],
        revenue: vec![RevenueGroup {
            kind: PaymentKind::Pack,
            currency: Currency::USD,
            payments: 3,
            gross_minor: 1497,
            refunded_minor: 499,
        }],
        outstanding: vec![
            Outstanding {
                source: GrantSource::Purchase,
                credits: 180,
                grants: 2,
            },
            Outstanding {
                source: GrantSource::Welcome,
                credits: 50,
                grants: 1,
            },
        ],
        ..BusinessFacts::default()
    };
    let m = business_metrics(&facts, &catalog(), FROM, TO, NOW);
    assert_eq!(m.liability, 180);
    assert_eq!(m.outstanding["welcome"], 50);
    assert_eq!(m.revenue[0].net, Money::new(dec("9.98"), Currency::USD));
    assert_eq!(m.models[0].model, "mock-small");
    assert_eq!((m.models[0].calls, m.models[0].accounts), (5, 2));
    let days: Vec<Date> = m.days.iter().map(|d| d.day).collect();
    assert_eq!(
        days,
        [
            date!(2026 - 11 - 02),
            date!(2026 - 11 - 03),
            date!(2026 - 11 - 04)
        ]
    );
    assert_eq!(m.days[0].signups, 4);
    assert_eq!(m.days[1].consumed, 22);
    // `adjustment` is not a catalog action: in the total only.
    assert_eq!(
        m.days[1].by_action.keys().collect::<Vec<_>>(),
        ["short_chat"]
    );
    assert_eq!(m.days[1].by_source["purchase"], 22);
    assert_eq!(m.days[2].by_source["overdraft"], 40);
    assert_eq!(m.days[2].by_model["mock-large"].credits, 30);
}
