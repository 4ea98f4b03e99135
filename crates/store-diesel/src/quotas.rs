//! Usage tracking: a batch of events decided in memory and written in one transaction.
//!
//! The transaction locks the accounts, reads what the events' keys already hold and the
//! usage of each (meter, window) they touch (one query each per account), decides every
//! event in order with [`plan`], then writes the new events in multi-row inserts and each
//! touched usage row once. A single `track` is a batch of one.

use std::collections::HashMap;

use billing_core::catalog::QuotaRule;
use billing_core::ports::{TrackOutcome, TrackRequest};
use billing_core::quota::{QuotaPeriod, check, decide_release, decide_track};
use diesel::prelude::*;

use crate::db::{credits, signed, ts};
use crate::schema::quota_events;

/// Rows per multi-row insert: 7 parameters each stays far below both databases' limits.
pub(crate) const INSERT_CHUNK: usize = 1_000;

/// What a key recorded: its meter, amount and the period's total after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub meter: String,
    pub amount: i64,
    pub used_after: i64,
}

/// A new event row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = quota_events)]
pub(crate) struct QuotaEventRow {
    pub account_id: String,
    pub key: String,
    pub meter: String,
    pub amount: i64,
    pub window_start: i64,
    pub used_after: i64,
    pub created_at: i64,
}

/// A (meter, window) usage row the batch changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageWrite {
    pub account: String,
    pub meter: String,
    pub window_start: i64,
    pub window_end: i64,
    pub used: i64,
    /// Whether the row exists (update) or not (insert).
    pub existed: bool,
}

/// (account, key) → what it recorded.
pub(crate) type SeenKeys = HashMap<(String, String), Seen>;
/// (account, meter, window start) → units used.
pub(crate) type Usage = HashMap<(String, String, i64), i64>;

/// A batch's decisions and the writes they need.
#[derive(Debug, Default)]
pub(crate) struct TrackPlan {
    pub outcomes: Vec<TrackOutcome>,
    pub events: Vec<QuotaEventRow>,
    pub usage: Vec<UsageWrite>,
}

/// Decides each request in order against the stored keys and usage, as if each were
/// tracked alone after the ones before it.
pub(crate) fn plan(
    requests: &[TrackRequest],
    mut seen: SeenKeys,
    stored_usage: &Usage,
    now: i64,
) -> TrackPlan {
    let mut usage = stored_usage.clone();
    let mut touched: Vec<(String, String, i64, i64)> = Vec::new();
    let mut out = TrackPlan::default();
    for request in requests {
        let account = request.account.to_string();
        let id = (account.clone(), request.key.clone());
        if let Some(before) = seen.get(&id) {
            let same = before.meter == request.meter && before.amount == request.amount;
            out.outcomes.push(if same {
                TrackOutcome::Replayed {
                    used: credits(before.used_after),
                }
            } else {
                TrackOutcome::Conflict
            });
            continue;
        }
        let start = ts(request.window.start);
        let slot = (account.clone(), request.meter.clone(), start);
        let used = usage.get(&slot).copied().unwrap_or(0);
        let decided = if request.amount < 0 {
            decide_release(&request.meter, credits(used), request.amount.unsigned_abs())
        } else {
            // Only the limit matters to the decision; the period is already in the window.
            let rule = QuotaRule {
                limit: request.limit,
                period: Some(QuotaPeriod::Day),
            };
            decide_track(&check(
                &request.meter,
                Some(&rule),
                credits(used),
                request.amount.unsigned_abs(),
                request.window,
            ))
        };
        let total = match decided {
            Ok(total) => signed(total),
            Err(error) => {
                out.outcomes.push(TrackOutcome::Rejected { error });
                continue;
            }
        };
        if !touched
            .iter()
            .any(|(a, m, s, _)| (a, m, s) == (&slot.0, &slot.1, &slot.2))
        {
            touched.push((
                slot.0.clone(),
                slot.1.clone(),
                slot.2,
                ts(request.window.end),
            ));
        }
        usage.insert(slot, total);
        seen.insert(
            id,
            Seen {
                meter: request.meter.clone(),
                amount: request.amount,
                used_after: total,
            },
        );
        out.events.push(QuotaEventRow {
            account_id: account,
            key: request.key.clone(),
            meter: request.meter.clone(),
            amount: request.amount,
            window_start: start,
            used_after: total,
            created_at: now,
        });
        out.outcomes.push(TrackOutcome::Recorded {
            used: credits(total),
        });
    }
    for (account, meter, window_start, window_end) in touched {
        let slot = (account, meter, window_start);
        let used = usage.get(&slot).copied().unwrap_or(0);
        let existed = stored_usage.contains_key(&slot);
        let (account, meter, window_start) = slot;
        out.usage.push(UsageWrite {
            account,
            meter,
            window_start,
            window_end,
            used,
            existed,
        });
    }
    out
}

/// The tracking queries; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! quota_queries {
    () => {
        use crate::quotas::{Seen, SeenKeys, TrackPlan, Usage};

        pub(crate) async fn quota_usage_get(
            c: &mut Conn,
            account: String,
            meter: String,
            window_start: i64,
        ) -> Result<i64, TxError> {
            use crate::schema::quota_usage;
            Ok(quota_usage::table
                .find((account, meter, window_start))
                .select(quota_usage::used)
                .first::<i64>(c)
                .await
                .optional()?
                .unwrap_or(0))
        }

        /// Locks the requests' accounts, decides every request in order and records what
        /// was allowed; idempotent by key, so a retried batch records nothing twice.
        pub(crate) async fn quota_track_many(
            c: &mut Conn,
            requests: Vec<billing_core::ports::TrackRequest>,
            now: i64,
        ) -> Result<Vec<billing_core::ports::TrackOutcome>, TxError> {
            use crate::schema::{quota_events, quota_usage};
            let mut accounts: Vec<String> =
                requests.iter().map(|r| r.account.to_string()).collect();
            accounts.sort_unstable();
            accounts.dedup();
            lock_accounts(c, &accounts).await?;
            let mut seen = SeenKeys::new();
            let mut usage = Usage::new();
            for account in &accounts {
                let mine = || requests.iter().filter(|r| r.account.as_str() == account);
                let keys: Vec<&str> = mine().map(|r| r.key.as_str()).collect();
                let mut meters: Vec<&str> = mine().map(|r| r.meter.as_str()).collect();
                meters.sort_unstable();
                meters.dedup();
                let mut starts: Vec<i64> = mine().map(|r| crate::db::ts(r.window.start)).collect();
                starts.sort_unstable();
                starts.dedup();
                // One account: `key = ANY(..)` walks the primary key's second column.
                let stored: Vec<(String, String, i64, i64)> = quota_events::table
                    .filter(quota_events::account_id.eq(account))
                    .filter(quota_events::key.eq_any(&keys))
                    .select((
                        quota_events::key,
                        quota_events::meter,
                        quota_events::amount,
                        quota_events::used_after,
                    ))
                    .load(c)
                    .await?;
                for (key, meter, amount, used_after) in stored {
                    seen.insert(
                        (account.clone(), key),
                        Seen {
                            meter,
                            amount,
                            used_after,
                        },
                    );
                }
                let rows: Vec<(String, i64, i64)> = quota_usage::table
                    .filter(quota_usage::account_id.eq(account))
                    .filter(quota_usage::meter.eq_any(&meters))
                    .filter(quota_usage::window_start.eq_any(&starts))
                    .select((
                        quota_usage::meter,
                        quota_usage::window_start,
                        quota_usage::used,
                    ))
                    .load(c)
                    .await?;
                for (meter, start, used) in rows {
                    usage.insert((account.clone(), meter, start), used);
                }
            }
            let TrackPlan {
                outcomes,
                events,
                usage: writes,
            } = crate::quotas::plan(&requests, seen, &usage, now);
            insert_quota_events(c, &events).await?;
            for w in writes {
                if w.existed {
                    diesel::update(quota_usage::table.find((
                        w.account.as_str(),
                        w.meter.as_str(),
                        w.window_start,
                    )))
                    .set(quota_usage::used.eq(w.used))
                    .execute(c)
                    .await?;
                } else {
                    diesel::insert_into(quota_usage::table)
                        .values((
                            quota_usage::account_id.eq(w.account.as_str()),
                            quota_usage::meter.eq(w.meter.as_str()),
                            quota_usage::window_start.eq(w.window_start),
                            quota_usage::window_end.eq(w.window_end),
                            quota_usage::used.eq(w.used),
                        ))
                        .execute(c)
                        .await?;
                }
            }
            Ok(outcomes)
        }
    };
}
pub(crate) use quota_queries;

#[cfg(test)]
mod tests {
    use billing_core::ids::{AccountId, PrefixedId};
    use billing_core::quota::{QuotaError, Timezone, Window};
    use time::macros::datetime;

    use super::*;

    fn request(account: &AccountId, key: &str, amount: i64) -> TrackRequest {
        TrackRequest {
            account: account.clone(),
            meter: "exports".into(),
            amount,
            window: Window::month(datetime!(2026-05-10 12:00 UTC), Timezone::utc()),
            limit: Some(5),
            key: key.into(),
        }
    }

    #[test]
    fn a_gauge_release_is_decided_against_the_running_level_and_replays() {
        let account = AccountId::from_ulid(billing_core::ids::Ulid::from_parts(1, 1));
        let gauge = |key: &str, amount: i64| TrackRequest {
            window: Window::forever(),
            limit: Some(3),
            meter: "seats".into(),
            ..request(&account, key, amount)
        };
        let batch = [
            gauge("add", 3),
            gauge("more", 1),
            gauge("drop", -2),
            gauge("drop", -2),
            gauge("too-many", -2),
            gauge("back", 2),
        ];
        let plan = plan(&batch, SeenKeys::new(), &Usage::new(), 7);
        assert_eq!(
            plan.outcomes,
            vec![
                TrackOutcome::Recorded { used: 3 },
                TrackOutcome::Rejected {
                    error: QuotaError::QuotaExceeded {
                        meter: "seats".into(),
                        limit: 3,
                        used: 3,
                        requested: 1,
                        resets_at: Window::forever().end,
                    }
                },
                TrackOutcome::Recorded { used: 1 },
                TrackOutcome::Replayed { used: 1 },
                TrackOutcome::Rejected {
                    error: QuotaError::BelowZero {
                        meter: "seats".into(),
                        used: 1,
                        released: 2,
                    }
                },
                TrackOutcome::Recorded { used: 3 },
            ]
        );
        assert_eq!(plan.usage[0].used, 3);
    }

    #[test]
    fn a_batch_decides_in_order_against_its_own_running_total() {
        let account = AccountId::from_ulid(billing_core::ids::Ulid::from_parts(1, 1));
        let start = ts(request(&account, "x", 1).window.start);
        let mut stored = Usage::new();
        stored.insert((account.to_string(), "exports".into(), start), 2);
        let mut seen = SeenKeys::new();
        seen.insert(
            (account.to_string(), "old".into()),
            Seen {
                meter: "exports".into(),
                amount: 2,
                used_after: 2,
            },
        );
        let batch = [
            request(&account, "old", 2),
            request(&account, "a", 2),
            request(&account, "b", 2),
            request(&account, "a", 2),
            request(&account, "a", 1),
            request(&account, "c", 1),
            request(&account, "b", 2),
        ];
        let plan = plan(&batch, seen, &stored, 7);
        assert_eq!(
            plan.outcomes,
            vec![
                TrackOutcome::Replayed { used: 2 },
                TrackOutcome::Recorded { used: 4 },
                TrackOutcome::Rejected {
                    error: QuotaError::QuotaExceeded {
                        meter: "exports".into(),
                        limit: 5,
                        used: 4,
                        requested: 2,
                        resets_at: batch[2].window.end,
                    }
                },
                TrackOutcome::Replayed { used: 4 },
                TrackOutcome::Conflict,
                TrackOutcome::Recorded { used: 5 },
                // A refused key was not stored, so it is decided again (and refused again).
                TrackOutcome::Rejected {
                    error: QuotaError::QuotaExceeded {
                        meter: "exports".into(),
                        limit: 5,
                        used: 5,
                        requested: 2,
                        resets_at: batch[6].window.end,
                    }
                },
            ]
        );
        let keys: Vec<&str> = plan.events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(
            plan.usage,
            vec![UsageWrite {
                account: account.to_string(),
                meter: "exports".into(),
                window_start: start,
                window_end: ts(batch[0].window.end),
                used: 5,
                existed: true,
            }]
        );
    }
}
