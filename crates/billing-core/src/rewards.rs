//! Rewards for engagement (seed 002: following an account, sharing a track): claimed by a
//! user with the evidence the product sends, granted at once or after an admin approves.
//!
//! The rules, decided by [`eligibility`] from the account's earlier claims of the reward:
//! at most `max_per_account` claims that were not rejected; one pending claim at a time; and
//! `cooldown_hours` between one claim and the next. A rejected claim frees its place. Each
//! claim takes the next sequence number of its (account, reward), which the store keeps
//! unique, so of two claims racing for the same place one is refused.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::catalog::Reward;
use crate::ids::{AccountId, ClaimId, UserId};
use crate::ledger::Credits;

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimStatus {
    /// Waiting for an admin.
    Pending,
    /// Its credits were granted.
    Granted,
    /// An admin refused it; it does not count against the reward's limit.
    Rejected,
}

impl ClaimStatus {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Rejected => "rejected",
        }
    }
}

/// One claim of a reward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardClaim {
    /// Its id.
    pub id: ClaimId,
    /// The account credited.
    pub account: AccountId,
    /// The user who claimed.
    pub user: UserId,
    /// The catalog reward.
    pub reward: String,
    /// Its place among the account's claims of this reward (1, 2, …).
    pub seq: u32,
    /// Where it stands.
    pub status: ClaimStatus,
    /// Credits it grants.
    pub credits: Credits,
    /// What the product sent as proof (a post's URL, a handle…).
    pub evidence: serde_json::Value,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When an admin (or the automatic grant) decided it.
    pub decided_at: Option<OffsetDateTime>,
    /// Who decided it: an admin's id, `admin-key`, or `automatic`.
    pub decided_by: Option<String>,
}

/// Why an account may not claim a reward now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// It has earned it as often as it may.
    Exhausted {
        /// The reward's limit.
        max: u32,
    },
    /// A claim of it is waiting for an admin.
    Pending,
    /// The cooldown since the last claim has not passed.
    Cooldown {
        /// When it may claim again.
        until: OffsetDateTime,
        /// Whole seconds from the decision until then (at least 1), for `Retry-After`.
        wait_seconds: i64,
    },
}

/// The sequence number a new claim takes, or why none may be made. `claims` are the
/// account's earlier claims of this reward, in any order.
pub fn eligibility(
    reward: &Reward,
    claims: &[RewardClaim],
    now: OffsetDateTime,
) -> Result<u32, Ineligible> {
    let counted: Vec<&RewardClaim> = claims
        .iter()
        .filter(|c| c.status != ClaimStatus::Rejected)
        .collect();
    if counted.iter().any(|c| c.status == ClaimStatus::Pending) {
        return Err(Ineligible::Pending);
    }
    if counted.len() >= usize::try_from(reward.max_per_account).unwrap_or(usize::MAX) {
        return Err(Ineligible::Exhausted {
            max: reward.max_per_account,
        });
    }
    if reward.cooldown_hours > 0
        && let Some(last) = counted.iter().map(|c| c.created_at).max()
    {
        let until = last + Duration::hours(i64::from(reward.cooldown_hours));
        if now < until {
            return Err(Ineligible::Cooldown {
                until,
                wait_seconds: (until - now).whole_seconds().max(1),
            });
        }
    }
    let taken = claims.iter().map(|c| c.seq).max().unwrap_or(0);
    Ok(taken + 1)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::ids::{PrefixedId, Ulid};

    const NOW: OffsetDateTime = datetime!(2026-12-06 12:00 UTC);

    fn reward(max: u32, cooldown_hours: u32) -> Reward {
        Reward {
            name: None,
            credits: 10,
            max_per_account: max,
            cooldown_hours,
            approval: false,
        }
    }

    fn claim(seq: u32, status: ClaimStatus, hours_ago: i64) -> RewardClaim {
        RewardClaim {
            id: ClaimId::from_ulid(Ulid(u128::from(seq))),
            account: AccountId::from_ulid(Ulid(1)),
            user: UserId::from_ulid(Ulid(2)),
            reward: "share".into(),
            seq,
            status,
            credits: 10,
            evidence: serde_json::Value::Null,
            created_at: NOW - Duration::hours(hours_ago),
            decided_at: None,
            decided_by: None,
        }
    }

    #[test]
    fn a_once_reward_is_claimed_once_unless_rejected() {
        let once = reward(1, 0);
        assert_eq!(eligibility(&once, &[], NOW), Ok(1));
        let granted = [claim(1, ClaimStatus::Granted, 1)];
        assert_eq!(
            eligibility(&once, &granted, NOW),
            Err(Ineligible::Exhausted { max: 1 })
        );
        let pending = [claim(1, ClaimStatus::Pending, 1)];
        assert_eq!(eligibility(&once, &pending, NOW), Err(Ineligible::Pending));
        // A rejection frees the place; the next claim takes the next number.
        let rejected = [claim(1, ClaimStatus::Rejected, 1)];
        assert_eq!(eligibility(&once, &rejected, NOW), Ok(2));
    }

    #[test]
    fn a_repeatable_reward_waits_out_its_cooldown() {
        let daily = reward(3, 24);
        let one = [claim(1, ClaimStatus::Granted, 23)];
        assert_eq!(
            eligibility(&daily, &one, NOW),
            Err(Ineligible::Cooldown {
                until: NOW + Duration::hours(1),
                wait_seconds: 3600,
            })
        );
        let one = [claim(1, ClaimStatus::Granted, 24)];
        assert_eq!(eligibility(&daily, &one, NOW), Ok(2));
        let three = [
            claim(1, ClaimStatus::Granted, 72),
            claim(2, ClaimStatus::Granted, 48),
            claim(3, ClaimStatus::Granted, 25),
        ];
        assert_eq!(
            eligibility(&daily, &three, NOW),
            Err(Ineligible::Exhausted { max: 3 })
        );
    }
}
