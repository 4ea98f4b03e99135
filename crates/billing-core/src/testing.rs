//! Deterministic stand-ins for the clock and id ports, and a small catalog, for tests here
//! and in other crates.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use crate::catalog::{Catalog, Interval};
use crate::ids::{AccountId, PrefixedId, SubscriptionId, Ulid};
use crate::ports::{Clock, IdGenerator};
use crate::subscription::{Subscription, SubscriptionStatus};

/// Ids from a counter: the same sequence every run.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdGenerator for SequentialIds {
    fn ulid(&self) -> Ulid {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        Ulid::from_parts(n, u128::from(n))
    }
}

/// A clock that says what it is told.
#[derive(Debug)]
pub struct FixedClock(Mutex<OffsetDateTime>);

impl FixedClock {
    /// A clock stopped at `now`.
    pub fn new(now: OffsetDateTime) -> Self {
        Self(Mutex::new(now))
    }

    /// Moves the clock.
    pub fn set(&self, now: OffsetDateTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A monthly subscription of `account` to `pro` with the provider id `external_id`, in
/// `status`, as a payment webhook would first save it (no period yet); tests change the
/// rest as they need.
pub fn pro_subscription(
    id: Ulid,
    account: &AccountId,
    status: SubscriptionStatus,
    external_id: &str,
    created_at: OffsetDateTime,
) -> Subscription {
    Subscription {
        id: SubscriptionId::from_ulid(id),
        account: account.clone(),
        plan: "pro".into(),
        interval: Interval::Month,
        status,
        current_period: None,
        trial_end: None,
        cancel_at_period_end: false,
        pending_plan: None,
        external_id: Some(external_id.into()),
        created_at,
        canceled_at: None,
        version: 0,
        past_due_since: None,
    }
}

/// A small catalog: `free` (welcome 50, 20 a day, mock-small), `pro` (9.99/month, 1000 a
/// period) and `max` (29/month, 5000 a period, overdraft 100, all models, agent_mode).
pub fn sample_catalog() -> Catalog {
    let catalog: Catalog =
        serde_json::from_str(SAMPLE).unwrap_or_else(|e| panic!("sample catalog: {e}"));
    if let Err(errors) = catalog.validate("catalog") {
        panic!("sample catalog is invalid: {errors:?}");
    }
    catalog
}

const SAMPLE: &str = r#"{
    "default_plan": "free",
    "credit_value": {"amount": "0.001", "currency": "usd"},
    "plans": {
        "free": {"name": "Free", "welcome_credits": 50, "models": ["mock-small"],
                 "allowance": {"credits": 20, "cadence": "day"},
                 "quotas": {"exports": {"limit": 3, "period": "month"}}},
        "pro": {"name": "Pro", "tier": 1, "prices": {"month": {"amount": "9.99"}},
                "models": ["mock-small"], "features": ["exports"],
                "allowance": {"credits": 1000, "cadence": "billing_period", "rollover_cap": 200},
                "quotas": {"exports": {"limit": 100, "period": "billing_period"}}},
        "max": {"name": "Max", "tier": 2, "prices": {"month": {"amount": "29"}},
                "models": ["*"], "features": ["exports", "agent_mode"], "overdraft": 100,
                "allowance": {"credits": 5000, "cadence": "billing_period"}}
    },
    "packs": {"starter": {"name": "Starter", "credits": 100, "bonus_credits": 10,
                          "price": {"amount": "4.99"}, "expires_after_days": 365}},
    "actions": {"short_chat": 5, "long_chat": 20, "image_analysis": 50},
    "meters": {"exports": {"unit": "export"}},
    "models": {
        "mock-small": {"provider": "mock", "upstream": "mock-small",
                       "input_per_mtok": "0.10", "output_per_mtok": "0.40"},
        "mock-large": {"provider": "mock", "upstream": "mock-large",
                       "input_per_mtok": "3", "output_per_mtok": "15"}
    }
}"#;
