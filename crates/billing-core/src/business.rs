//! The operator's business view (`GET /v1/admin/metrics`): recurring revenue, subscription
//! movement, trials, revenue, credit liability and consumption, computed from facts the
//! store aggregates (see [`crate::ports::ReportStore`]).
//!
//! Each figure's definition is written beside it and in docs/api.md. Days are UTC, periods
//! are `[from, to)`, and subscription history is read from what a subscription records
//! (`created_at`, `trial_end`, `canceled_at`, its current status): a subscription that was
//! past due last week and is active today counts as active for the whole period.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::{Decimal, RoundingStrategy};
use time::{Date, OffsetDateTime};

use crate::analytics::Tally;
use crate::catalog::{Catalog, Interval};
use crate::ids::AccountId;
use crate::ledger::{Credits, GrantSource, TxnKind};
use crate::money::{Currency, Money};
use crate::payments::PaymentKind;
use crate::subscription::SubscriptionStatus;

/// One subscription, as much of it as the figures need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFact {
    /// The subscribing account.
    pub account: AccountId,
    /// The plan in force.
    pub plan: String,
    /// Billed monthly or yearly.
    pub interval: Interval,
    /// Its status now.
    pub status: SubscriptionStatus,
    /// When it began.
    pub created_at: OffsetDateTime,
    /// When it ended, if it has.
    pub canceled_at: Option<OffsetDateTime>,
    /// When its trial ends or ended, if it had one.
    pub trial_end: Option<OffsetDateTime>,
}

/// Debits or captures of one day, kind and action, summed (net of refunds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpentGroup {
    /// The day (UTC).
    pub day: Date,
    /// `Debit` or `Capture`.
    pub kind: TxnKind,
    /// A debit's reference (the catalog action it paid for, or `adjustment`); `None` for
    /// captures.
    pub reference: Option<String>,
    /// Credits, less what was refunded for them.
    pub credits: Credits,
    /// How many.
    pub count: u64,
}

/// Credits that spending took from grants of one source on one day, net of what holds gave
/// back to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceGroup {
    /// The day (UTC).
    pub day: Date,
    /// The grants' source; `None` is the overdraft.
    pub source: Option<GrantSource>,
    /// Credits taken (negative if holds gave back more that day than was taken).
    pub credits: i64,
}

/// Gateway calls of one day and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelGroup {
    /// The day (UTC).
    pub day: Date,
    /// The model id clients used.
    pub model: String,
    /// Credits charged.
    pub credits: Credits,
    /// Calls.
    pub calls: u64,
}

/// Payments of one kind and currency made in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevenueGroup {
    /// Packs or subscription invoices.
    pub kind: PaymentKind,
    /// Their currency.
    pub currency: Currency,
    /// How many.
    pub payments: u64,
    /// What was paid, in minor units.
    pub gross_minor: i64,
    /// What has been refunded of those payments so far, in minor units.
    pub refunded_minor: i64,
}

/// Unspent credits of unexpired grants of one source, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outstanding {
    /// The source.
    pub source: GrantSource,
    /// Credits remaining.
    pub credits: Credits,
    /// Grants with any remaining.
    pub grants: u64,
}

/// What the store aggregates for a period `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusinessFacts {
    /// Every subscription that had not ended before the period began.
    pub subscriptions: Vec<SubscriptionFact>,
    /// The accounts (of `subscriptions`) that had a subscription end before the period
    /// began: a new subscription of theirs is a reactivation.
    pub lapsed_accounts: BTreeSet<AccountId>,
    /// Debits and captures by day, kind and reference.
    pub spent: Vec<SpentGroup>,
    /// Spending's legs by day and grant source.
    pub by_source: Vec<SourceGroup>,
    /// Gateway calls by day and model.
    pub by_model: Vec<ModelGroup>,
    /// Distinct accounts that called each model in the period.
    pub model_accounts: BTreeMap<String, u64>,
    /// Users created per day.
    pub signups: Vec<(Date, u64)>,
    /// Payments made in the period.
    pub revenue: Vec<RevenueGroup>,
    /// Unspent credits now, by source.
    pub outstanding: Vec<Outstanding>,
}

/// Monthly and annual recurring revenue in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recurring {
    /// Monthly: monthly prices plus yearly prices divided by 12, rounded to the currency's
    /// minor unit once, on the total.
    pub mrr: Money,
    /// Annual: monthly prices times 12 plus yearly prices.
    pub arr: Money,
    /// Subscriptions counted.
    pub subscriptions: u64,
}

/// New, reactivated and churned subscriptions in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Movement {
    /// Paying subscriptions when the period began: begun before it, past any trial by then,
    /// and not ended by then.
    pub paying_at_start: u64,
    /// Subscriptions begun in the period by accounts that never had one before.
    pub new: u64,
    /// Subscriptions begun in the period by accounts whose earlier subscriptions had all
    /// ended.
    pub reactivated: u64,
    /// Paying subscriptions that ended in the period (a trial that ends unpaid is counted in
    /// [`Trials`], not here).
    pub churned: u64,
    /// `churned / paying_at_start`, to four places; `None` when nothing was paying.
    pub churn_rate: Option<Decimal>,
}

/// Trials in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trials {
    /// Subscriptions begun in the period with a trial.
    pub started: u64,
    /// Trials whose end fell in the period (and has passed).
    pub ended: u64,
    /// Of those, the ones not canceled by the trial's end and not paused.
    pub converted: u64,
    /// `converted / ended`, to four places; `None` when no trial ended.
    pub conversion_rate: Option<Decimal>,
}

/// A payment kind's takings in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revenue {
    /// Packs or subscription invoices.
    pub kind: PaymentKind,
    /// How many payments.
    pub payments: u64,
    /// Paid.
    pub gross: Money,
    /// Refunded of those payments so far.
    pub refunded: Money,
    /// Gross less refunded.
    pub net: Money,
}

/// A model's use in the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUse {
    /// The model id.
    pub model: String,
    /// Calls that charged credits.
    pub calls: u64,
    /// Credits charged.
    pub credits: Credits,
    /// Distinct accounts that called it.
    pub accounts: u64,
}

/// One day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessDay {
    /// The day (UTC).
    pub day: Date,
    /// Credits consumed: debits and captures, less refunds.
    pub consumed: Credits,
    /// Debits by catalog action.
    pub by_action: BTreeMap<String, Tally>,
    /// Gateway calls by model.
    pub by_model: BTreeMap<String, Tally>,
    /// Credits taken from grants by their source (`overdraft` for credit lent).
    pub by_source: BTreeMap<String, i64>,
    /// Users created.
    pub signups: u64,
}

/// The business view of a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessMetrics {
    /// The moment the figures that describe "now" were taken.
    pub as_of: OffsetDateTime,
    /// Recurring revenue by currency, from the subscriptions active or past due now.
    pub recurring: Vec<Recurring>,
    /// Active or past-due subscriptions whose plan or interval has no price in the catalog
    /// (left out of `recurring`).
    pub unpriced: u64,
    /// Subscriptions not ended, by plan and status, now.
    pub by_plan: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Movement in the period.
    pub movement: Movement,
    /// Trials in the period.
    pub trials: Trials,
    /// Payments in the period.
    pub revenue: Vec<Revenue>,
    /// Unspent credits of purchased packs, now: what the business still owes in service.
    pub liability: Credits,
    /// Unspent credits of every source, now.
    pub outstanding: BTreeMap<&'static str, Credits>,
    /// Model use in the period, most called first.
    pub models: Vec<ModelUse>,
    /// The days with any activity, oldest first.
    pub days: Vec<BusinessDay>,
}

/// Computes the figures for `[from, to)` as of `now` from the store's facts and the
/// catalog's prices and actions.
pub fn business_metrics(
    facts: &BusinessFacts,
    catalog: &Catalog,
    from: OffsetDateTime,
    to: OffsetDateTime,
    now: OffsetDateTime,
) -> BusinessMetrics {
    let (recurring, unpriced) = recurring(&facts.subscriptions, catalog);
    let mut by_plan: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for s in facts
        .subscriptions
        .iter()
        .filter(|s| s.status != SubscriptionStatus::Canceled)
    {
        *by_plan
            .entry(s.plan.clone())
            .or_default()
            .entry(s.status.as_str())
            .or_default() += 1;
    }
    let mut outstanding = BTreeMap::new();
    for o in &facts.outstanding {
        let entry: &mut Credits = outstanding.entry(o.source.as_str()).or_default();
        *entry = entry.saturating_add(o.credits);
    }
    BusinessMetrics {
        as_of: now,
        recurring,
        unpriced,
        by_plan,
        movement: movement(facts, from, to),
        trials: trials(&facts.subscriptions, from, to, now),
        revenue: facts.revenue.iter().map(revenue).collect(),
        liability: outstanding
            .get(GrantSource::Purchase.as_str())
            .copied()
            .unwrap_or(0),
        outstanding,
        models: models(facts),
        days: days(facts, &catalog.actions),
    }
}

/// Whether a subscription pays now: active, or past due while the provider retries.
fn pays(status: SubscriptionStatus) -> bool {
    matches!(
        status,
        SubscriptionStatus::Active | SubscriptionStatus::PastDue
    )
}

fn recurring(subscriptions: &[SubscriptionFact], catalog: &Catalog) -> (Vec<Recurring>, u64) {
    // Per currency: (monthly sum, yearly sum, count).
    let mut sums: BTreeMap<Currency, (Decimal, Decimal, u64)> = BTreeMap::new();
    let mut unpriced = 0;
    for s in subscriptions.iter().filter(|s| pays(s.status)) {
        let Some(price) = catalog
            .plans
            .get(&s.plan)
            .and_then(|p| p.prices.get(&s.interval))
        else {
            unpriced += 1;
            continue;
        };
        let money = price.money(catalog.currency);
        let sum = sums.entry(money.currency).or_default();
        match s.interval {
            Interval::Month => sum.0 += money.amount,
            Interval::Year => sum.1 += money.amount,
        }
        sum.2 += 1;
    }
    let twelve = Decimal::from(12);
    let recurring = sums
        .into_iter()
        .map(|(currency, (monthly, yearly, subscriptions))| {
            let places = currency.minor_unit_places();
            let mrr = (monthly + yearly / twelve)
                .round_dp_with_strategy(places, RoundingStrategy::MidpointNearestEven);
            Recurring {
                mrr: Money::new(mrr, currency),
                arr: Money::new(monthly * twelve + yearly, currency),
                subscriptions,
            }
        })
        .collect();
    (recurring, unpriced)
}

fn within(at: OffsetDateTime, from: OffsetDateTime, to: OffsetDateTime) -> bool {
    from <= at && at < to
}

fn movement(facts: &BusinessFacts, from: OffsetDateTime, to: OffsetDateTime) -> Movement {
    let subs = &facts.subscriptions;
    let paying_at = |s: &SubscriptionFact, at: OffsetDateTime| {
        s.created_at < at
            && s.status != SubscriptionStatus::Incomplete
            && s.trial_end.is_none_or(|t| t <= at)
            && s.canceled_at.is_none_or(|c| c >= at)
    };
    let mut m = Movement {
        paying_at_start: subs.iter().filter(|s| paying_at(s, from)).count() as u64,
        ..Movement::default()
    };
    // Each account's subscriptions, so that a new one is compared with its own account's
    // only (linear in the subscriptions, not quadratic).
    let mut by_account: BTreeMap<&AccountId, Vec<&SubscriptionFact>> = BTreeMap::new();
    for s in subs {
        by_account.entry(&s.account).or_default().push(s);
    }
    for s in subs.iter().filter(|s| within(s.created_at, from, to)) {
        let earlier: Vec<&&SubscriptionFact> = by_account
            .get(&s.account)
            .map(|mine| {
                mine.iter()
                    .filter(|o| o.created_at < s.created_at)
                    .collect()
            })
            .unwrap_or_default();
        if earlier.is_empty() && !facts.lapsed_accounts.contains(&s.account) {
            m.new += 1;
        } else if earlier
            .iter()
            .all(|o| o.canceled_at.is_some_and(|c| c <= s.created_at))
        {
            m.reactivated += 1;
        }
    }
    m.churned = subs
        .iter()
        .filter(|s| {
            s.canceled_at.is_some_and(|c| {
                within(c, from, to) && s.trial_end.is_none_or(|t| t <= c) && s.created_at < c
            })
        })
        .count() as u64;
    m.churn_rate = ratio(m.churned, m.paying_at_start);
    m
}

fn trials(
    subscriptions: &[SubscriptionFact],
    from: OffsetDateTime,
    to: OffsetDateTime,
    now: OffsetDateTime,
) -> Trials {
    let mut t = Trials {
        started: subscriptions
            .iter()
            .filter(|s| s.trial_end.is_some() && within(s.created_at, from, to))
            .count() as u64,
        ..Trials::default()
    };
    for s in subscriptions {
        let Some(end) = s.trial_end.filter(|e| within(*e, from, to.min(now))) else {
            continue;
        };
        t.ended += 1;
        if s.canceled_at.is_none_or(|c| c > end) && s.status != SubscriptionStatus::Paused {
            t.converted += 1;
        }
    }
    t.conversion_rate = ratio(t.converted, t.ended);
    t
}

fn ratio(part: u64, whole: u64) -> Option<Decimal> {
    (whole > 0).then(|| {
        (Decimal::from(part) / Decimal::from(whole))
            .round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven)
    })
}

fn revenue(r: &RevenueGroup) -> Revenue {
    let money = |minor| Money::from_minor_units(minor, r.currency);
    Revenue {
        kind: r.kind,
        payments: r.payments,
        gross: money(r.gross_minor),
        refunded: money(r.refunded_minor),
        net: money(r.gross_minor.saturating_sub(r.refunded_minor)),
    }
}

fn models(facts: &BusinessFacts) -> Vec<ModelUse> {
    let mut by_model: BTreeMap<&str, (u64, Credits)> = BTreeMap::new();
    for g in &facts.by_model {
        let entry = by_model.entry(&g.model).or_default();
        entry.0 += g.calls;
        entry.1 = entry.1.saturating_add(g.credits);
    }
    let mut models: Vec<ModelUse> = by_model
        .into_iter()
        .map(|(model, (calls, credits))| ModelUse {
            model: model.to_owned(),
            calls,
            credits,
            accounts: facts.model_accounts.get(model).copied().unwrap_or(0),
        })
        .collect();
    models.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then(b.credits.cmp(&a.credits))
            .then(a.model.cmp(&b.model))
    });
    models
}

fn days(facts: &BusinessFacts, actions: &BTreeMap<String, Credits>) -> Vec<BusinessDay> {
    let mut days: BTreeMap<Date, BusinessDay> = BTreeMap::new();
    fn day(days: &mut BTreeMap<Date, BusinessDay>, date: Date) -> &mut BusinessDay {
        days.entry(date).or_insert_with(|| BusinessDay {
            day: date,
            consumed: 0,
            by_action: BTreeMap::new(),
            by_model: BTreeMap::new(),
            by_source: BTreeMap::new(),
            signups: 0,
        })
    }
    for g in &facts.spent {
        let d = day(&mut days, g.day);
        d.consumed = d.consumed.saturating_add(g.credits);
        if g.kind == TxnKind::Debit
            && let Some(action) = g.reference.as_ref().filter(|r| actions.contains_key(*r))
        {
            let tally = d.by_action.entry(action.clone()).or_default();
            tally.credits = tally.credits.saturating_add(g.credits);
            tally.count += g.count;
        }
    }
    for g in facts.by_model.iter().filter(|g| g.credits > 0) {
        let tally = day(&mut days, g.day)
            .by_model
            .entry(g.model.clone())
            .or_default();
        tally.credits = tally.credits.saturating_add(g.credits);
        tally.count += g.calls;
    }
    for g in facts.by_source.iter().filter(|g| g.credits != 0) {
        let name = g.source.map_or("overdraft", GrantSource::as_str);
        *day(&mut days, g.day)
            .by_source
            .entry(name.to_owned())
            .or_default() += g.credits;
    }
    for (date, count) in &facts.signups {
        day(&mut days, *date).signups += count;
    }
    days.into_values().collect()
}

#[cfg(test)]
mod tests;
