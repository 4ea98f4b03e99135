//! Reward claims: the [`RewardStore`] port.

use async_trait::async_trait;
use billing_core::ids::{AccountId, ClaimId};
use billing_core::ports::{RewardStore, StoreError};
use billing_core::rewards::{ClaimStatus, RewardClaim};
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::db::{credits, from_ts, parse_enum, parse_id, signed, ts, tx_error};
use crate::schema::reward_claims;
use crate::sql::call;
use crate::store::DieselStore;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = reward_claims, treat_none_as_default_value = false)]
pub(crate) struct ClaimRow {
    pub id: String,
    pub account_id: String,
    pub user_id: String,
    pub reward: String,
    pub seq: i32,
    pub status: String,
    pub credits: i64,
    pub evidence: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

impl ClaimRow {
    fn from_domain(c: &RewardClaim) -> Self {
        Self {
            id: c.id.to_string(),
            account_id: c.account.to_string(),
            user_id: c.user.to_string(),
            reward: c.reward.clone(),
            seq: i32::try_from(c.seq).unwrap_or(i32::MAX),
            status: c.status.as_str().to_owned(),
            credits: signed(c.credits),
            evidence: c.evidence.to_string(),
            created_at: ts(c.created_at),
            decided_at: c.decided_at.map(ts),
            decided_by: c.decided_by.clone(),
        }
    }

    fn into_domain(self) -> Result<RewardClaim, StoreError> {
        Ok(RewardClaim {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            user: parse_id(&self.user_id)?,
            reward: self.reward,
            seq: u32::try_from(self.seq).unwrap_or(0),
            status: parse_enum(&self.status)?,
            credits: credits(self.credits),
            evidence: serde_json::from_str(&self.evidence)
                .map_err(|e| StoreError::Other(e.to_string()))?,
            created_at: from_ts(self.created_at),
            decided_at: self.decided_at.map(from_ts),
            decided_by: self.decided_by,
        })
    }
}

/// The reward-claim queries; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! reward_queries {
    () => {
        use crate::rewards::ClaimRow;

        pub(crate) async fn claim_insert(c: &mut Conn, row: ClaimRow) -> Result<(), TxError> {
            use crate::schema::reward_claims;
            diesel::insert_into(reward_claims::table)
                .values(&row)
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn claims_of(
            c: &mut Conn,
            account: String,
            reward: Option<String>,
        ) -> Result<Vec<ClaimRow>, TxError> {
            use crate::schema::reward_claims;
            let mut query = reward_claims::table
                .filter(reward_claims::account_id.eq(account))
                .into_boxed();
            if let Some(reward) = reward {
                query = query.filter(reward_claims::reward.eq(reward));
            }
            Ok(query
                .order(reward_claims::id.asc())
                .select(ClaimRow::as_select())
                .load(c)
                .await?)
        }

        pub(crate) async fn claim_get(
            c: &mut Conn,
            id: String,
        ) -> Result<Option<ClaimRow>, TxError> {
            use crate::schema::reward_claims;
            Ok(reward_claims::table
                .find(id)
                .select(ClaimRow::as_select())
                .first(c)
                .await
                .optional()?)
        }

        pub(crate) async fn claim_move(
            c: &mut Conn,
            id: String,
            from: &'static str,
            to: &'static str,
            at: i64,
            by: Option<String>,
        ) -> Result<usize, TxError> {
            use crate::schema::reward_claims;
            Ok(diesel::update(
                reward_claims::table
                    .filter(reward_claims::id.eq(id))
                    .filter(reward_claims::status.eq(from)),
            )
            .set((
                reward_claims::status.eq(to),
                reward_claims::decided_at.eq(by.as_ref().map(|_| at)),
                reward_claims::decided_by.eq(by),
            ))
            .execute(c)
            .await?)
        }

        pub(crate) async fn claims_with(
            c: &mut Conn,
            status: Option<&'static str>,
            limit: i64,
        ) -> Result<Vec<ClaimRow>, TxError> {
            use crate::schema::reward_claims;
            let mut query = reward_claims::table.into_boxed();
            if let Some(status) = status {
                query = query.filter(reward_claims::status.eq(status));
            }
            Ok(query
                .order(reward_claims::id.asc())
                .limit(limit)
                .select(ClaimRow::as_select())
                .load(c)
                .await?)
        }
    };
}
pub(crate) use reward_queries;

fn rows(rows: Vec<ClaimRow>) -> Result<Vec<RewardClaim>, StoreError> {
    rows.into_iter().map(ClaimRow::into_domain).collect()
}

#[async_trait]
impl RewardStore for DieselStore {
    async fn insert_claim(&self, claim: &RewardClaim) -> Result<(), StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        call!(conn, claim_insert(ClaimRow::from_domain(claim))).map_err(tx_error)
    }

    async fn claims_of(
        &self,
        account: &AccountId,
        reward: Option<String>,
    ) -> Result<Vec<RewardClaim>, StoreError> {
        let mut conn = self.pool.get().await?;
        rows(call!(conn, claims_of(account.to_string(), reward)).map_err(tx_error)?)
    }

    async fn claim(&self, id: &ClaimId) -> Result<Option<RewardClaim>, StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, claim_get(id.to_string()))
            .map_err(tx_error)?
            .map(ClaimRow::into_domain)
            .transpose()
    }

    async fn move_claim(
        &self,
        id: &ClaimId,
        from: ClaimStatus,
        to: ClaimStatus,
        at: OffsetDateTime,
        by: Option<String>,
    ) -> Result<bool, StoreError> {
        let _writer = self.pool.write_guard().await;
        let mut conn = self.pool.get().await?;
        let moved = call!(
            conn,
            claim_move(id.to_string(), from.as_str(), to.as_str(), ts(at), by)
        )
        .map_err(tx_error)?;
        Ok(moved == 1)
    }

    async fn claims_with(
        &self,
        status: Option<ClaimStatus>,
        limit: u32,
    ) -> Result<Vec<RewardClaim>, StoreError> {
        let mut conn = self.pool.get().await?;
        rows(
            call!(
                conn,
                claims_with(status.map(ClaimStatus::as_str), i64::from(limit))
            )
            .map_err(tx_error)?,
        )
    }
}
