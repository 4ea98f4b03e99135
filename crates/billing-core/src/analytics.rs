//! What a user's credits went on, day by day (UTC): the figures behind a product's usage
//! page (Audio Studio's `/api/tokens/analytics`).
//!
//! Consumed credits are the account's debits and captures, net of what was refunded for
//! them. Debits are broken down by the catalog action they paid for, gateway calls by model;
//! the rest (a task's capture, an admin's debit) counts in the day's total only.

use std::collections::BTreeMap;

use time::{Date, OffsetDateTime};

use crate::gateway::LlmCall;
use crate::ledger::{Credits, TxnKind};

/// One debit or capture of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    /// `Debit` or `Capture`.
    pub kind: TxnKind,
    /// What it was for (an action, a call or task id…).
    pub reference: Option<String>,
    /// Credits it took, less what was refunded for it.
    pub credits: Credits,
    /// When.
    pub at: OffsetDateTime,
}

/// Credits and how many movements made them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Credits.
    pub credits: Credits,
    /// Debits (for an action) or calls (for a model).
    pub count: u64,
}

impl Tally {
    fn add(&mut self, credits: Credits) {
        self.credits = self.credits.saturating_add(credits);
        self.count += 1;
    }
}

/// One day's consumption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumptionDay {
    /// The day (UTC).
    pub day: Date,
    /// Every credit consumed that day.
    pub credits: Credits,
    /// By catalog action.
    pub by_action: BTreeMap<String, Tally>,
    /// By model, from the gateway's calls.
    pub by_model: BTreeMap<String, Tally>,
}

/// The days with any consumption, oldest first. `actions` are the catalog's: a debit whose
/// reference is not one of them counts in its day's total only.
pub fn consumption_by_day(
    spent: &[Spent],
    calls: &[LlmCall],
    actions: &BTreeMap<String, Credits>,
) -> Vec<ConsumptionDay> {
    let mut days: BTreeMap<Date, ConsumptionDay> = BTreeMap::new();
    for s in spent {
        let entry = days
            .entry(s.at.date())
            .or_insert_with(|| empty(s.at.date()));
        entry.credits = entry.credits.saturating_add(s.credits);
        if s.kind == TxnKind::Debit
            && let Some(action) = s.reference.as_ref().filter(|r| actions.contains_key(*r))
        {
            entry
                .by_action
                .entry(action.clone())
                .or_default()
                .add(s.credits);
        }
    }
    for call in calls.iter().filter(|c| c.credits > 0) {
        let date = call.created_at.date();
        days.entry(date)
            .or_insert_with(|| empty(date))
            .by_model
            .entry(call.model.clone())
            .or_default()
            .add(call.credits);
    }
    days.into_values().collect()
}

fn empty(day: Date) -> ConsumptionDay {
    ConsumptionDay {
        day,
        credits: 0,
        by_action: BTreeMap::new(),
        by_model: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::catalog::TokenUsage;
    use crate::gateway::CallOutcome;
    use crate::money::Currency;

    fn spent(kind: TxnKind, reference: &str, credits: Credits, at: OffsetDateTime) -> Spent {
        Spent {
            kind,
            reference: Some(reference.into()),
            credits,
            at,
        }
    }

    #[test]
    fn days_sum_every_credit_and_break_down_actions_and_models() {
        let actions = BTreeMap::from([("short_chat".to_owned(), 5), ("long_chat".to_owned(), 20)]);
        let day1 = datetime!(2026-12-01 23:59 UTC);
        let day2 = datetime!(2026-12-02 00:00 UTC);
        let spent = [
            spent(TxnKind::Debit, "short_chat", 5, day1),
            spent(TxnKind::Debit, "short_chat", 5, day1),
            // Refunded in part: only what it kept counts.
            spent(TxnKind::Debit, "long_chat", 12, day2),
            // An admin's debit and a task's capture: the total only.
            spent(TxnKind::Debit, "adjustment", 7, day2),
            spent(TxnKind::Capture, "tsk_1", 30, day2),
        ];
        let call = LlmCall {
            id: "call_1".into(),
            account: crate::ids::PrefixedId::from_ulid(crate::ids::Ulid(1)),
            api_key: None,
            model: "gpt-4o-mini".into(),
            provider: "openai".into(),
            usage: TokenUsage::default(),
            cost_micros: 10,
            currency: Currency::USD,
            credits: 3,
            latency_ms: 5,
            outcome: CallOutcome::Ok,
            created_at: day2,
        };
        let days = consumption_by_day(&spent, &[call], &actions);
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].credits, 10);
        assert_eq!(
            days[0].by_action["short_chat"],
            Tally {
                credits: 10,
                count: 2
            }
        );
        assert_eq!(days[1].credits, 12 + 7 + 30);
        assert_eq!(days[1].by_action.keys().collect::<Vec<_>>(), ["long_chat"]);
        assert_eq!(
            days[1].by_model["gpt-4o-mini"],
            Tally {
                credits: 3,
                count: 1
            }
        );
    }
}
