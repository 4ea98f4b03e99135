//! Claiming catalog rewards, and an admin's decision on the ones held for approval (see
//! [`crate::rewards`] for the rules).

use super::{Billing, BillingError, key};
use crate::ids::{AccountId, ClaimId, PrefixedId, UserId};
use crate::ledger::{GrantSource, LedgerCommand, LedgerPolicy};
use crate::ports::{RewardStore, StoreError};
use crate::rewards::{ClaimStatus, Ineligible, RewardClaim, eligibility};

impl Billing {
    /// Claims `reward` for the account: granted at once, or pending when the reward needs an
    /// admin's approval.
    pub async fn claim_reward(
        &self,
        store: &dyn RewardStore,
        account: &AccountId,
        user: &UserId,
        reward_id: &str,
        evidence: serde_json::Value,
    ) -> Result<RewardClaim, BillingError> {
        let reward = self
            .catalog
            .rewards
            .get(reward_id)
            .ok_or_else(|| BillingError::UnknownReward(reward_id.to_owned()))?;
        let now = self.clock.now();
        let earlier = store.claims_of(account, Some(reward_id.to_owned())).await?;
        let seq = eligibility(reward, &earlier, now).map_err(BillingError::RewardIneligible)?;
        let claim = RewardClaim {
            id: ClaimId::from_ulid(self.ids.ulid()),
            account: account.clone(),
            user: user.clone(),
            reward: reward_id.to_owned(),
            seq,
            status: ClaimStatus::Pending,
            credits: reward.credits,
            evidence,
            created_at: now,
            decided_at: None,
            decided_by: None,
        };
        match store.insert_claim(&claim).await {
            Ok(()) => {}
            // Another claim took this place meanwhile: refuse as its rules now say.
            Err(StoreError::Conflict(_)) => {
                let earlier = store.claims_of(account, Some(reward_id.to_owned())).await?;
                let why = eligibility(reward, &earlier, now).err();
                return Err(BillingError::RewardIneligible(
                    why.unwrap_or(Ineligible::Pending),
                ));
            }
            Err(other) => return Err(other.into()),
        }
        if reward.approval {
            return Ok(claim);
        }
        // Granted first, then marked: a crash between leaves a pending claim whose approval
        // grants nothing more (the grant is keyed by the claim).
        self.grant_claim(&claim).await?;
        store
            .move_claim(
                &claim.id,
                ClaimStatus::Pending,
                ClaimStatus::Granted,
                now,
                Some("automatic".into()),
            )
            .await?;
        Ok(RewardClaim {
            status: ClaimStatus::Granted,
            decided_at: Some(now),
            decided_by: Some("automatic".into()),
            ..claim
        })
    }

    /// An admin's decision on a pending claim: approving grants its credits once, rejecting
    /// frees its place.
    pub async fn decide_reward_claim(
        &self,
        store: &dyn RewardStore,
        id: &ClaimId,
        approve: bool,
        by: &str,
    ) -> Result<RewardClaim, BillingError> {
        let claim = store.claim(id).await?.ok_or(BillingError::ClaimNotFound)?;
        if claim.status != ClaimStatus::Pending {
            return Err(BillingError::ClaimDecided(claim.status));
        }
        let now = self.clock.now();
        let to = if approve {
            ClaimStatus::Granted
        } else {
            ClaimStatus::Rejected
        };
        // Marked first, so that a concurrent rejection and approval cannot both happen.
        if !store
            .move_claim(id, ClaimStatus::Pending, to, now, Some(by.to_owned()))
            .await?
        {
            let now_is = store.claim(id).await?.map_or(to, |c| c.status);
            return Err(BillingError::ClaimDecided(now_is));
        }
        if approve && let Err(err) = self.grant_claim(&claim).await {
            // Back to pending, so that the approval can be tried again.
            store
                .move_claim(id, ClaimStatus::Granted, ClaimStatus::Pending, now, None)
                .await?;
            return Err(err);
        }
        Ok(RewardClaim {
            status: to,
            decided_at: Some(now),
            decided_by: Some(by.to_owned()),
            ..claim
        })
    }

    /// The claim's grant, journaled once (keyed by the claim).
    async fn grant_claim(&self, claim: &RewardClaim) -> Result<(), BillingError> {
        let name = self
            .catalog
            .rewards
            .get(&claim.reward)
            .and_then(|r| r.name.clone())
            .unwrap_or_else(|| claim.reward.clone());
        let command = LedgerCommand::Grant {
            amount: claim.credits,
            source: GrantSource::Reward,
            priority: 0,
            expires_at: None,
            rollover_cap: 0,
            rollover_until: None,
            reference: Some(format!("reward:{}", claim.reward)),
            memo: Some(name),
        };
        let k = key(format!("reward-claim:{}", claim.id))?;
        self.run(&claim.account, k, command, LedgerPolicy::default())
            .await
            .map(|_| ())
    }
}
