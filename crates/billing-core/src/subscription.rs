//! Subscriptions: their states and plan changes.
//!
//! A subscription follows what its payment provider reports (see [`crate::payments`] for the
//! order-safe rules); [`change_plan`] is the pure rule for moving between plans: an upgrade
//! applies at once with a top-up of the period's allowance, a downgrade waits for the
//! period's end. (Not yet reachable through the API: it needs the provider to change the
//! price, which the Stripe API client will do.)

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog::{Cadence, Catalog, ChangeTiming, Interval};
use crate::ids::{AccountId, SubscriptionId};
use crate::ledger::Credits;
use crate::quota::Window;

/// Where a subscription stands (Stripe's states, `incomplete_expired` folded into canceled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Created; the first payment has not succeeded yet.
    Incomplete,
    /// In a free trial.
    Trialing,
    /// Paid up.
    Active,
    /// A renewal payment failed; Stripe is retrying. Access continues meanwhile.
    PastDue,
    /// Retries are exhausted; access is suspended until a payment succeeds.
    Unpaid,
    /// Ended. Final.
    Canceled,
    /// Paused by the customer or the operator.
    Paused,
}

impl SubscriptionStatus {
    /// Whether the subscription's plan applies (trialing, active, or in the past-due grace).
    pub fn grants_access(self) -> bool {
        matches!(self, Self::Trialing | Self::Active | Self::PastDue)
    }

    /// The snake_case name used in storage, the API and by Stripe.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Canceled => "canceled",
            Self::Paused => "paused",
        }
    }

    /// Parses Stripe's status names.
    pub fn from_stripe(status: &str) -> Option<Self> {
        Some(match status {
            "incomplete" => Self::Incomplete,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "unpaid" => Self::Unpaid,
            "canceled" | "incomplete_expired" => Self::Canceled,
            "paused" => Self::Paused,
            _ => return None,
        })
    }
}

/// A subscription to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id.
    pub id: SubscriptionId,
    /// The subscribing account.
    pub account: AccountId,
    /// The plan in force.
    pub plan: String,
    /// Billed monthly or yearly.
    pub interval: Interval,
    /// Where it stands.
    pub status: SubscriptionStatus,
    /// The period paid for (or the trial).
    pub current_period: Option<Window>,
    /// When the trial ends, if there is one.
    #[serde(with = "time::serde::rfc3339::option")]
    pub trial_end: Option<OffsetDateTime>,
    /// Ends at the period's end instead of renewing.
    pub cancel_at_period_end: bool,
    /// A downgrade that takes effect at the next period.
    pub pending_plan: Option<String>,
    /// The payment provider's id (`sub_…` at Stripe).
    pub external_id: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub canceled_at: Option<OffsetDateTime>,
    /// The newest provider state applied ([`SyncVersion`](crate::payments::SyncVersion));
    /// 0 for a subscription no provider event has touched.
    pub version: i64,
    /// Since when a renewal has gone unpaid (set on entering `past_due`, cleared by a
    /// payment): the dunning grace counts from here.
    #[serde(with = "time::serde::rfc3339::option")]
    pub past_due_since: Option<OffsetDateTime>,
}

impl Subscription {
    /// What a save expects the stored record to still be.
    pub fn expected(&self) -> Expected {
        Expected {
            status: self.status,
            version: self.version,
        }
    }
}

/// The stored state an update was computed from (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The status read.
    pub status: SubscriptionStatus,
    /// The version read.
    pub version: i64,
}

/// What a transition asks the rest of the system to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum SubscriptionEffect {
    /// Grant credits for a period, once: `key` is the idempotency key.
    GrantAllowance {
        /// The account.
        account: AccountId,
        /// Credits to grant.
        credits: Credits,
        /// The rollover cap of the plan's allowance.
        rollover_cap: Credits,
        /// The period; the credits expire at its end.
        period: Window,
        /// Idempotency key.
        key: String,
    },
    /// The account's plan is now this one (the subscription's, or the default plan when
    /// access ends).
    SetAccountPlan {
        /// The account.
        account: AccountId,
        /// The plan.
        plan: String,
    },
}

/// The result of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The subscription as it now is.
    pub subscription: Subscription,
    /// What to carry out.
    pub effects: Vec<SubscriptionEffect>,
}

/// Why a transition or plan change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SubscriptionError {
    /// The event cannot happen in this state.
    #[error("`{event}` cannot happen to a {from:?} subscription")]
    InvalidTransition {
        /// The state.
        from: SubscriptionStatus,
        /// The event.
        event: String,
    },
    /// The plan is not in the catalog.
    #[error("unknown plan `{plan}`")]
    UnknownPlan {
        /// The plan named.
        plan: String,
    },
    /// The plan is free; there is nothing to subscribe to.
    #[error("plan `{plan}` has no price for `{interval:?}`")]
    NotForSale {
        /// The plan named.
        plan: String,
        /// The interval asked for.
        interval: Interval,
    },
    /// Already on that plan.
    #[error("already on plan `{plan}`")]
    SamePlan {
        /// The plan named.
        plan: String,
    },
}

fn invalid(sub: &Subscription, event: &str) -> SubscriptionError {
    SubscriptionError::InvalidTransition {
        from: sub.status,
        event: event.to_owned(),
    }
}

/// The idempotency key of a subscription period's allowance grant.
pub fn allowance_key(sub: &SubscriptionId, period: &Window) -> String {
    format!("allowance:{sub}:{}", period.start.unix_timestamp())
}

/// Whether moving between two plans is an upgrade: a higher `tier`, or on equal tiers a
/// higher monthly-equivalent price.
pub fn is_upgrade(catalog: &Catalog, from: &str, to: &str) -> bool {
    let monthly = |id: &str| {
        catalog.plan(id).and_then(|p| {
            p.prices
                .get(&Interval::Month)
                .map(|price| price.amount)
                .or_else(|| {
                    p.prices
                        .get(&Interval::Year)
                        .map(|price| price.amount / rust_decimal::Decimal::from(12))
                })
        })
    };
    let tier = |id: &str| catalog.plan(id).map_or(0, |p| p.tier);
    match tier(to).cmp(&tier(from)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => monthly(to) > monthly(from),
    }
}

/// Whether moving between two plans takes effect at once, by the catalog's `plan_changes`.
pub fn takes_effect_now(catalog: &Catalog, from: &str, to: &str) -> bool {
    let timing = if is_upgrade(catalog, from, to) {
        catalog.plan_changes.upgrade
    } else {
        catalog.plan_changes.downgrade
    };
    timing == ChangeTiming::Now
}

/// Changes the plan of a live subscription, at once or at the period's end as the catalog's
/// `plan_changes` says (by default an upgrade at once, a downgrade at the period's end).
/// A change at once to a plan with a larger period allowance tops the current period's
/// allowance up by the difference (once per period and plan). Asking for the plan in force
/// takes back a pending change.
pub fn change_plan(
    sub: &Subscription,
    to: &str,
    catalog: &Catalog,
) -> Result<Transition, SubscriptionError> {
    let Some(plan) = catalog.plan(to) else {
        return Err(SubscriptionError::UnknownPlan {
            plan: to.to_owned(),
        });
    };
    if !plan.prices.contains_key(&sub.interval) {
        return Err(SubscriptionError::NotForSale {
            plan: to.to_owned(),
            interval: sub.interval,
        });
    }
    if sub.plan == to && sub.pending_plan.is_none() {
        return Err(SubscriptionError::SamePlan {
            plan: to.to_owned(),
        });
    }
    if !matches!(
        sub.status,
        SubscriptionStatus::Trialing | SubscriptionStatus::Active
    ) {
        return Err(invalid(sub, "change_plan"));
    }
    let mut next = sub.clone();
    let mut effects = Vec::new();
    if sub.plan == to {
        // Cancels a pending downgrade.
        next.pending_plan = None;
    } else if takes_effect_now(catalog, &sub.plan, to) {
        let credits = |id: &str| {
            catalog
                .plan(id)
                .and_then(|p| p.allowance.as_ref())
                .filter(|a| a.cadence == Cadence::BillingPeriod)
                .map_or(0, |a| a.credits)
        };
        let top_up = credits(to).saturating_sub(credits(&sub.plan));
        next.plan = to.to_owned();
        next.pending_plan = None;
        if let (Some(period), true) = (sub.current_period, top_up > 0) {
            effects.push(SubscriptionEffect::GrantAllowance {
                account: sub.account.clone(),
                credits: top_up,
                rollover_cap: 0,
                period,
                key: format!("{}:upgrade:{to}", allowance_key(&sub.id, &period)),
            });
        }
        effects.push(SubscriptionEffect::SetAccountPlan {
            account: sub.account.clone(),
            plan: to.to_owned(),
        });
    } else {
        next.pending_plan = Some(to.to_owned());
    }
    Ok(Transition {
        subscription: next,
        effects,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::ids::{PrefixedId, Ulid};
    use crate::testing::sample_catalog;

    fn period(start: OffsetDateTime) -> Window {
        Window {
            start,
            end: start + time::Duration::days(30),
        }
    }

    fn sub(status: SubscriptionStatus, plan: &str) -> Subscription {
        Subscription {
            id: SubscriptionId::from_ulid(Ulid(1)),
            account: AccountId::from_ulid(Ulid(2)),
            plan: plan.into(),
            interval: Interval::Month,
            status,
            current_period: Some(period(datetime!(2026-01-01 0:00 UTC))),
            trial_end: None,
            cancel_at_period_end: false,
            pending_plan: None,
            external_id: None,
            created_at: datetime!(2026-01-01 0:00 UTC),
            canceled_at: None,
            version: 0,
            past_due_since: None,
        }
    }

    #[test]
    fn upgrade_now_with_top_up_downgrade_at_period_end() {
        let catalog = sample_catalog();
        let s = sub(SubscriptionStatus::Active, "pro");
        let up = change_plan(&s, "max", &catalog).unwrap();
        assert_eq!(up.subscription.plan, "max");
        assert!(
            up.effects
                .iter()
                .any(|e| matches!(e, SubscriptionEffect::GrantAllowance { credits: 4000, .. }))
        );
        let down = change_plan(&up.subscription, "pro", &catalog).unwrap();
        assert_eq!(down.subscription.plan, "max");
        assert_eq!(down.subscription.pending_plan.as_deref(), Some("pro"));
        assert!(down.effects.is_empty());
        assert!(matches!(
            change_plan(&s, "pro", &catalog),
            Err(SubscriptionError::SamePlan { .. })
        ));
        assert!(matches!(
            change_plan(&s, "gold", &catalog),
            Err(SubscriptionError::UnknownPlan { .. })
        ));
        assert!(matches!(
            change_plan(&s, "free", &catalog),
            Err(SubscriptionError::NotForSale { .. })
        ));
    }

    #[test]
    fn the_catalog_can_make_upgrades_wait_and_downgrades_immediate() {
        let mut catalog = sample_catalog();
        catalog.plan_changes = crate::catalog::PlanChanges {
            upgrade: ChangeTiming::PeriodEnd,
            downgrade: ChangeTiming::Now,
        };
        let s = sub(SubscriptionStatus::Active, "pro");
        let up = change_plan(&s, "max", &catalog).unwrap();
        assert_eq!(up.subscription.plan, "pro");
        assert_eq!(up.subscription.pending_plan.as_deref(), Some("max"));
        assert!(up.effects.is_empty());
        let max = sub(SubscriptionStatus::Active, "max");
        let down = change_plan(&max, "pro", &catalog).unwrap();
        assert_eq!(down.subscription.plan, "pro");
        // A downgrade at once grants nothing, and the account's plan follows.
        assert_eq!(
            down.effects,
            vec![SubscriptionEffect::SetAccountPlan {
                account: max.account.clone(),
                plan: "pro".into()
            }]
        );
        // Asking for the plan in force takes a pending change back.
        let back = change_plan(&up.subscription, "pro", &catalog).unwrap();
        assert_eq!(back.subscription.pending_plan, None);
    }

    #[test]
    fn stripe_status_names_parse() {
        assert_eq!(
            SubscriptionStatus::from_stripe("past_due"),
            Some(SubscriptionStatus::PastDue)
        );
        assert_eq!(
            SubscriptionStatus::from_stripe("incomplete_expired"),
            Some(SubscriptionStatus::Canceled)
        );
        assert_eq!(SubscriptionStatus::from_stripe("bogus"), None);
    }
}
