//! One decision: may this account do X — an action, a model, a feature, an amount of a
//! meter — and if not, why, and what remains.

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Plan};
use crate::ledger::{Credits, to_i64};
use crate::quota::QuotaCheck;
use crate::subscription::SubscriptionStatus;

/// What the account wants to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    /// Perform a priced action.
    Action {
        /// The action's name.
        action: String,
    },
    /// Use a model.
    Model {
        /// The model's id.
        model: String,
    },
    /// Use a feature.
    Feature {
        /// The feature flag.
        feature: String,
    },
    /// Use `amount` units of a meter.
    Meter {
        /// The meter.
        meter: String,
        /// Units.
        amount: u64,
    },
}

/// Why the answer is no.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Denial {
    /// No such action, model, feature or meter in the catalog.
    Unknown {
        /// What was asked for.
        name: String,
    },
    /// The account's plan does not include it.
    NotInPlan {
        /// The plan in force.
        plan: String,
    },
    /// The subscription's plan would include it, but the subscription is not in good
    /// standing (unpaid, paused, incomplete, canceled).
    SubscriptionInactive {
        /// The subscription's status.
        status: SubscriptionStatus,
    },
    /// The period's quota is used up.
    QuotaExceeded {
        /// The check, with limit, usage and period.
        quota: QuotaCheck,
    },
    /// Not enough credits.
    InsufficientCredits {
        /// The available balance.
        balance: i64,
        /// What is needed.
        required: Credits,
    },
}

/// What remains once the answer is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Remaining {
    /// Credits: the balance now, and after the action if it is priced.
    Credits {
        /// The available balance.
        balance: i64,
        /// The balance after the action.
        after: Option<i64>,
    },
    /// A meter's quota.
    Quota {
        /// The check.
        quota: QuotaCheck,
    },
    /// Nothing is counted.
    Nothing,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Yes or no.
    pub allowed: bool,
    /// Why not.
    pub denial: Option<Denial>,
    /// The plan that decided.
    pub plan: String,
    /// What remains.
    pub remaining: Remaining,
}

/// What the decision needs to know about the account.
#[derive(Debug, Clone, Copy)]
pub struct AccountState<'a> {
    /// The plan in force (the subscription's while it grants access, else the default).
    pub plan: &'a str,
    /// The subscription's plan and status, if the account has one.
    pub subscription: Option<(&'a str, SubscriptionStatus)>,
    /// The available credit balance.
    pub balance: i64,
    /// For a meter ask: the quota check for the period (usage against the plan's rule).
    pub quota: Option<&'a QuotaCheck>,
}

/// Whether the plan in force lets the account perform `action`, credits aside: the one rule
/// that both the entitlement check and spending apply. `None`: it may (or the action is
/// unknown, which the caller reports on its own terms).
pub fn action_denial(
    catalog: &Catalog,
    plan: &str,
    subscription: Option<(&str, SubscriptionStatus)>,
    action: &str,
) -> Option<Denial> {
    feature_denial(catalog, plan, subscription, catalog.action_feature(action)?)
}

/// Whether the plan in force includes `feature`: the rule behind actions and task types.
/// An unpaid subscription whose plan has it answers `SubscriptionInactive`.
pub fn feature_denial(
    catalog: &Catalog,
    plan: &str,
    subscription: Option<(&str, SubscriptionStatus)>,
    feature: &str,
) -> Option<Denial> {
    let has = |p: &Plan| p.features.contains(feature);
    if catalog.plan(plan).is_some_and(has) {
        return None;
    }
    let inactive = subscription.and_then(|(sub_plan, status)| {
        let sub = catalog.plan(sub_plan)?;
        (!status.grants_access() && has(sub)).then_some(Denial::SubscriptionInactive { status })
    });
    Some(inactive.unwrap_or(Denial::NotInPlan {
        plan: plan.to_owned(),
    }))
}

/// Whether the plan in force lets the account call `model`, credits aside: the one rule
/// that the entitlement check, the model list and the gateway apply. `None`: it may.
pub fn model_denial(
    catalog: &Catalog,
    plan: &str,
    subscription: Option<(&str, SubscriptionStatus)>,
    model: &str,
) -> Option<Denial> {
    if !catalog.models.contains_key(model) {
        return Some(Denial::Unknown {
            name: model.to_owned(),
        });
    }
    let allows = |p: &Plan| p.allows_model(model);
    if catalog.plan(plan).is_some_and(allows) {
        return None;
    }
    let inactive = subscription.and_then(|(sub_plan, status)| {
        let sub = catalog.plan(sub_plan)?;
        (!status.grants_access() && allows(sub)).then_some(Denial::SubscriptionInactive { status })
    });
    Some(inactive.unwrap_or(Denial::NotInPlan {
        plan: plan.to_owned(),
    }))
}

/// Decides an ask.
pub fn decide(catalog: &Catalog, state: AccountState<'_>, ask: &Ask) -> Entitlement {
    let plan_id = state.plan.to_owned();
    let Some(plan) = catalog.plan(state.plan) else {
        return deny(
            plan_id,
            Denial::Unknown {
                name: state.plan.to_owned(),
            },
            Remaining::Nothing,
        );
    };
    let credits = |after: Option<i64>| Remaining::Credits {
        balance: state.balance,
        after,
    };
    // Whether the subscription's own plan would allow what this plan does not.
    let inactive_plan_allows = |allows: &dyn Fn(&Plan) -> bool| {
        state.subscription.and_then(|(sub_plan, status)| {
            let sub = catalog.plan(sub_plan)?;
            (!status.grants_access() && allows(sub))
                .then_some(Denial::SubscriptionInactive { status })
        })
    };
    match ask {
        Ask::Action { action } => {
            let Some(cost) = catalog.action_cost(action) else {
                return deny(
                    plan_id,
                    Denial::Unknown {
                        name: action.clone(),
                    },
                    credits(None),
                );
            };
            if let Some(denial) = action_denial(catalog, state.plan, state.subscription, action) {
                return deny(plan_id, denial, credits(None));
            }
            let after = state.balance - to_i64(cost);
            if after < -to_i64(plan.overdraft) {
                return deny(
                    plan_id,
                    Denial::InsufficientCredits {
                        balance: state.balance,
                        required: cost,
                    },
                    credits(None),
                );
            }
            allow(plan_id, credits(Some(after)))
        }
        Ask::Model { model } => {
            if let Some(denial) = model_denial(catalog, state.plan, state.subscription, model) {
                return deny(plan_id, denial, credits(None));
            }
            if state.balance <= -to_i64(plan.overdraft) {
                return deny(
                    plan_id,
                    Denial::InsufficientCredits {
                        balance: state.balance,
                        required: 1,
                    },
                    credits(None),
                );
            }
            allow(plan_id, credits(None))
        }
        Ask::Feature { feature } => {
            if plan.features.contains(feature) {
                return allow(plan_id, Remaining::Nothing);
            }
            let known = catalog.plans.values().any(|p| p.features.contains(feature));
            let denial = if known {
                inactive_plan_allows(&|p: &Plan| p.features.contains(feature)).unwrap_or(
                    Denial::NotInPlan {
                        plan: plan_id.clone(),
                    },
                )
            } else {
                Denial::Unknown {
                    name: feature.clone(),
                }
            };
            deny(plan_id, denial, Remaining::Nothing)
        }
        Ask::Meter { meter, .. } => {
            if !catalog.meters.contains_key(meter) {
                return deny(
                    plan_id,
                    Denial::Unknown {
                        name: meter.clone(),
                    },
                    Remaining::Nothing,
                );
            }
            match state.quota {
                Some(check) if !check.allowed => deny(
                    plan_id,
                    Denial::QuotaExceeded {
                        quota: check.clone(),
                    },
                    Remaining::Quota {
                        quota: check.clone(),
                    },
                ),
                Some(check) => allow(
                    plan_id,
                    Remaining::Quota {
                        quota: check.clone(),
                    },
                ),
                None => allow(plan_id, Remaining::Nothing),
            }
        }
    }
}

fn allow(plan: String, remaining: Remaining) -> Entitlement {
    Entitlement {
        allowed: true,
        denial: None,
        plan,
        remaining,
    }
}

fn deny(plan: String, denial: Denial, remaining: Remaining) -> Entitlement {
    Entitlement {
        allowed: false,
        denial: Some(denial),
        plan,
        remaining,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::quota::{self, Timezone, Window};
    use crate::testing::sample_catalog;

    fn state(plan: &str, balance: i64) -> AccountState<'_> {
        AccountState {
            plan,
            subscription: None,
            balance,
            quota: None,
        }
    }

    fn action(name: &str) -> Ask {
        Ask::Action {
            action: name.into(),
        }
    }

    #[test]
    fn actions_need_their_cost_in_credits() {
        let c = sample_catalog();
        let yes = decide(&c, state("free", 20), &action("long_chat"));
        assert!(yes.allowed);
        assert_eq!(
            yes.remaining,
            Remaining::Credits {
                balance: 20,
                after: Some(0)
            }
        );
        let no = decide(&c, state("free", 19), &action("long_chat"));
        assert_eq!(
            no.denial,
            Some(Denial::InsufficientCredits {
                balance: 19,
                required: 20
            })
        );
        let unknown = decide(&c, state("free", 100), &action("teleport"));
        assert_eq!(
            unknown.denial,
            Some(Denial::Unknown {
                name: "teleport".into()
            })
        );
    }

    #[test]
    fn overdraft_lets_the_balance_go_below_zero_up_to_the_limit() {
        let c = sample_catalog();
        // `max` allows an overdraft of 100.
        assert!(decide(&c, state("max", 0), &action("image_analysis")).allowed);
        assert!(!decide(&c, state("max", -60), &action("image_analysis")).allowed);
    }

    #[test]
    fn models_and_features_follow_the_plan() {
        let c = sample_catalog();
        let model = |m: &str| Ask::Model { model: m.into() };
        assert!(decide(&c, state("free", 10), &model("mock-small")).allowed);
        assert_eq!(
            decide(&c, state("free", 10), &model("mock-large")).denial,
            Some(Denial::NotInPlan {
                plan: "free".into()
            })
        );
        assert!(decide(&c, state("max", 10), &model("mock-large")).allowed);
        let feature = |f: &str| Ask::Feature { feature: f.into() };
        assert!(decide(&c, state("max", 0), &feature("agent_mode")).allowed);
        assert!(!decide(&c, state("pro", 0), &feature("agent_mode")).allowed);
        assert_eq!(
            decide(&c, state("pro", 0), &feature("time_travel")).denial,
            Some(Denial::Unknown {
                name: "time_travel".into()
            })
        );
    }

    #[test]
    fn an_unpaid_subscription_says_so_instead_of_not_in_plan() {
        let c = sample_catalog();
        let s = AccountState {
            plan: "free",
            subscription: Some(("max", SubscriptionStatus::Unpaid)),
            balance: 10,
            quota: None,
        };
        assert_eq!(
            decide(
                &c,
                s,
                &Ask::Feature {
                    feature: "agent_mode".into()
                }
            )
            .denial,
            Some(Denial::SubscriptionInactive {
                status: SubscriptionStatus::Unpaid
            })
        );
    }

    #[test]
    fn meters_answer_with_the_quota() {
        let c = sample_catalog();
        let window = Window::month(datetime!(2026-05-10 12:00 UTC), Timezone::utc());
        let rule = &c.plans["free"].quotas["exports"];
        let full = quota::check("exports", Some(rule), 3, 1, window);
        let s = AccountState {
            plan: "free",
            subscription: None,
            balance: 0,
            quota: Some(&full),
        };
        let e = decide(
            &c,
            s,
            &Ask::Meter {
                meter: "exports".into(),
                amount: 1,
            },
        );
        assert!(!e.allowed);
        assert!(matches!(e.denial, Some(Denial::QuotaExceeded { .. })));
    }
}
