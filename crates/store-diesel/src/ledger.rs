//! The ledger store: [`LedgerStore`] on both backends.
//!
//! `execute` runs in one transaction: lock the account row (PostgreSQL `FOR NO KEY UPDATE`; SQLite
//! holds the write lock since `BEGIN IMMEDIATE`), look the idempotency key up, load the
//! view, call [`billing_core::ledger::decide`], apply the decision, record the outcome under
//! the key, commit (see [`crate::ledger_exec`] for the statements, and
//! [`crate::group_commit`] for how concurrent requests share a transaction). Retryable
//! failures (serialization, deadlock, `database is locked`) run the whole transaction again,
//! up to [`MAX_ATTEMPTS`](crate::db::MAX_ATTEMPTS) times.

use billing_core::ids::{AccountId, GrantId, HoldId, TxnId};
use billing_core::ledger::{
    AccountSnapshot, Allocation, Grant, Hold, HoldStatus, Leg, Transaction, TxnKind,
};
use billing_core::ports::StoreError;
use diesel::prelude::*;

use crate::db::{credits, from_ts, parse_enum, parse_id, signed, ts};
use crate::schema::{grants, holds, ledger_legs, ledger_transactions};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = grants, treat_none_as_default_value = false)]
pub(crate) struct GrantRow {
    pub id: String,
    pub account_id: String,
    pub source: String,
    pub amount: i64,
    pub remaining: i64,
    pub priority: i32,
    pub expires_at: Option<i64>,
    pub rollover_cap: i64,
    pub reference: Option<String>,
    pub created_at: i64,
    pub rollover_until: Option<i64>,
}

impl GrantRow {
    pub(crate) fn from_domain(g: &Grant) -> Self {
        Self {
            id: g.id.to_string(),
            account_id: g.account.to_string(),
            source: g.source.as_str().to_owned(),
            amount: signed(g.amount),
            remaining: signed(g.remaining),
            priority: g.priority,
            expires_at: g.expires_at.map(ts),
            rollover_cap: signed(g.rollover_cap),
            reference: g.reference.clone(),
            created_at: ts(g.created_at),
            rollover_until: g.rollover_until.map(ts),
        }
    }

    pub(crate) fn into_domain(self) -> Result<Grant, StoreError> {
        Ok(Grant {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            source: parse_enum(&self.source)?,
            amount: credits(self.amount),
            remaining: credits(self.remaining),
            priority: self.priority,
            expires_at: self.expires_at.map(from_ts),
            rollover_cap: credits(self.rollover_cap),
            rollover_until: self.rollover_until.map(from_ts),
            reference: self.reference,
            created_at: from_ts(self.created_at),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = holds, treat_none_as_default_value = false)]
pub(crate) struct HoldRow {
    pub id: String,
    pub account_id: String,
    pub amount: i64,
    pub captured: i64,
    pub status: String,
    pub allocations: String,
    pub reference: Option<String>,
    pub expires_at: i64,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
}

impl HoldRow {
    pub(crate) fn from_domain(h: &Hold) -> Result<Self, StoreError> {
        Ok(Self {
            id: h.id.to_string(),
            account_id: h.account.to_string(),
            amount: signed(h.amount),
            captured: signed(h.captured),
            status: h.status.as_str().to_owned(),
            allocations: serde_json::to_string(&h.allocations)
                .map_err(|e| StoreError::Other(e.to_string()))?,
            reference: h.reference.clone(),
            expires_at: ts(h.expires_at),
            created_at: ts(h.created_at),
            resolved_at: h.resolved_at.map(ts),
        })
    }

    pub(crate) fn into_domain(self) -> Result<Hold, StoreError> {
        let allocations: Vec<Allocation> = serde_json::from_str(&self.allocations)
            .map_err(|e| StoreError::Other(format!("corrupt allocations of {}: {e}", self.id)))?;
        Ok(Hold {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            amount: credits(self.amount),
            captured: credits(self.captured),
            status: parse_enum::<HoldStatus>(&self.status)?,
            allocations,
            reference: self.reference,
            expires_at: from_ts(self.expires_at),
            created_at: from_ts(self.created_at),
            resolved_at: self.resolved_at.map(from_ts),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_transactions, treat_none_as_default_value = false)]
pub(crate) struct TxnRow {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub amount: i64,
    pub delta: i64,
    pub hold_id: Option<String>,
    pub grant_id: Option<String>,
    pub refund_of: Option<String>,
    pub refunded: i64,
    pub refund_expires_at: Option<i64>,
    pub reference: Option<String>,
    pub memo: Option<String>,
    pub created_at: i64,
}

impl TxnRow {
    pub(crate) fn from_domain(t: &Transaction) -> Self {
        Self {
            id: t.id.to_string(),
            account_id: t.account.to_string(),
            kind: t.kind.as_str().to_owned(),
            amount: signed(t.amount),
            delta: t.delta(),
            hold_id: t.hold.as_ref().map(ToString::to_string),
            grant_id: t.grant.as_ref().map(ToString::to_string),
            refund_of: t.refund_of.as_ref().map(ToString::to_string),
            refunded: signed(t.refunded),
            refund_expires_at: t.refund_expires_at.map(ts),
            reference: t.reference.clone(),
            memo: t.memo.clone(),
            created_at: ts(t.created_at),
        }
    }

    pub(crate) fn into_domain(self, legs: Vec<Leg>) -> Result<Transaction, StoreError> {
        Ok(Transaction {
            id: parse_id(&self.id)?,
            account: parse_id(&self.account_id)?,
            kind: parse_enum::<TxnKind>(&self.kind)?,
            amount: credits(self.amount),
            legs,
            hold: self
                .hold_id
                .as_deref()
                .map(parse_id::<HoldId>)
                .transpose()?,
            grant: self
                .grant_id
                .as_deref()
                .map(parse_id::<GrantId>)
                .transpose()?,
            refund_of: self
                .refund_of
                .as_deref()
                .map(parse_id::<TxnId>)
                .transpose()?,
            refunded: credits(self.refunded),
            refund_expires_at: self.refund_expires_at.map(from_ts),
            reference: self.reference,
            memo: self.memo,
            created_at: from_ts(self.created_at),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_legs, treat_none_as_default_value = false)]
pub(crate) struct LegRow {
    pub txn_id: String,
    pub position: i32,
    pub account_id: String,
    pub grant_id: Option<String>,
    pub delta: i64,
}

/// Groups legs by transaction, in position order.
pub(crate) fn attach_legs(
    rows: Vec<TxnRow>,
    legs: Vec<LegRow>,
) -> Result<Vec<Transaction>, StoreError> {
    let mut by_txn: std::collections::HashMap<String, Vec<LegRow>> =
        std::collections::HashMap::new();
    for leg in legs {
        by_txn.entry(leg.txn_id.clone()).or_default().push(leg);
    }
    rows.into_iter()
        .map(|row| {
            let mut legs = by_txn.remove(&row.id).unwrap_or_default();
            legs.sort_by_key(|l| l.position);
            let legs = legs
                .into_iter()
                .map(|l| {
                    Ok(Leg {
                        grant: l.grant_id.as_deref().map(parse_id::<GrantId>).transpose()?,
                        delta: l.delta,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            row.into_domain(legs)
        })
        .collect()
}

pub(crate) fn snapshot_of(
    account: AccountId,
    debt: i64,
    grants: Vec<GrantRow>,
    holds: Vec<HoldRow>,
    txns: Vec<TxnRow>,
    legs: Vec<LegRow>,
) -> Result<AccountSnapshot, StoreError> {
    Ok(AccountSnapshot {
        account,
        grants: grants
            .into_iter()
            .map(GrantRow::into_domain)
            .collect::<Result<_, _>>()?,
        holds: holds
            .into_iter()
            .map(HoldRow::into_domain)
            .collect::<Result<_, _>>()?,
        transactions: attach_legs(txns, legs)?,
        debt: credits(debt),
    })
}

/// The ledger's query functions; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! ledger_queries {
    () => {
        use crate::ledger::{GrantRow, HoldRow, LegRow, TxnRow};
        use crate::schema::{grants, holds, ledger_legs, ledger_transactions};
        use billing_core::ids::{AccountId as LedgerAccountId, HoldId as LedgerHoldId};
        use billing_core::ports::{LedgerOutcome, StoreError as LedgerStoreError};

        /// The grants with an expiry that a hold drew from, each with the credits already
        /// rolled over from it (two small queries, only for a hold that has such grants).
        async fn load_hold_sources(
            c: &mut Conn,
            account: &str,
            hold: &billing_core::ledger::Hold,
        ) -> Result<Vec<(billing_core::ledger::Grant, u64)>, TxError> {
            let ids: Vec<String> = hold
                .allocations
                .iter()
                .filter(|a| a.expires_at.is_some())
                .filter_map(|a| a.grant.as_ref().map(ToString::to_string))
                .collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let sources: Vec<GrantRow> = grants::table
                .filter(grants::account_id.eq(account))
                .filter(grants::id.eq_any(&ids))
                .select(GrantRow::as_select())
                .load(c)
                .await?;
            let rolled: Vec<(Option<String>, i64)> = grants::table
                .filter(grants::account_id.eq(account))
                .filter(grants::source.eq("rollover"))
                .filter(grants::reference.eq_any(&ids))
                .select((grants::reference, grants::amount))
                .load(c)
                .await?;
            sources
                .into_iter()
                .map(|row| {
                    let carried: i64 = rolled
                        .iter()
                        .filter(|(reference, _)| reference.as_deref() == Some(row.id.as_str()))
                        .map(|(_, amount)| amount)
                        .sum();
                    Ok((row.into_domain()?, crate::db::credits(carried)))
                })
                .collect::<Result<_, LedgerStoreError>>()
                .map_err(TxError::Store)
        }

        /// The account's debt, or `None` if there is no such account (no lock taken).
        async fn account_debt(c: &mut Conn, account: &str) -> Result<Option<i64>, TxError> {
            Ok(crate::schema::accounts::table
                .find(account)
                .select(crate::schema::accounts::debt)
                .first::<i64>(c)
                .await
                .optional()?)
        }

        /// Live grants (in burn order), pending holds and the debt.
        pub(crate) async fn ledger_balance(
            c: &mut Conn,
            account: String,
        ) -> Result<Option<(i64, Vec<GrantRow>, Vec<HoldRow>)>, TxError> {
            let Some(debt) = account_debt(c, &account).await? else {
                return Ok(None);
            };
            let live = grants::table
                .filter(grants::account_id.eq(&account))
                .filter(grants::remaining.gt(0))
                .select(GrantRow::as_select())
                .load(c)
                .await?;
            let pending = holds::table
                .filter(holds::account_id.eq(&account))
                .filter(holds::status.eq("pending"))
                .order(holds::id.asc())
                .select(HoldRow::as_select())
                .load(c)
                .await?;
            Ok(Some((debt, live, pending)))
        }

        /// A page of the journal, newest first, after the cursor.
        pub(crate) async fn ledger_journal(
            c: &mut Conn,
            account: String,
            after: Option<String>,
            limit: i64,
        ) -> Result<(Vec<TxnRow>, Vec<LegRow>), TxError> {
            let mut query = ledger_transactions::table
                .filter(ledger_transactions::account_id.eq(&account))
                .into_boxed();
            if let Some(after) = &after {
                query = query.filter(ledger_transactions::id.lt(after.clone()));
            }
            let rows: Vec<TxnRow> = query
                .order(ledger_transactions::id.desc())
                .limit(limit)
                .select(TxnRow::as_select())
                .load(c)
                .await?;
            let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            let legs = ledger_legs::table
                .filter(ledger_legs::txn_id.eq_any(ids))
                .select(LegRow::as_select())
                .load(c)
                .await?;
            Ok((rows, legs))
        }

        /// Everything about one account's ledger.
        pub(crate) async fn ledger_snapshot(
            c: &mut Conn,
            account: String,
        ) -> Result<Option<(i64, Vec<GrantRow>, Vec<HoldRow>, Vec<TxnRow>, Vec<LegRow>)>, TxError> {
            let Some(debt) = account_debt(c, &account).await? else {
                return Ok(None);
            };
            let all_grants = grants::table
                .filter(grants::account_id.eq(&account))
                .select(GrantRow::as_select())
                .load(c)
                .await?;
            let all_holds = holds::table
                .filter(holds::account_id.eq(&account))
                .select(HoldRow::as_select())
                .load(c)
                .await?;
            let txns = ledger_transactions::table
                .filter(ledger_transactions::account_id.eq(&account))
                .order(ledger_transactions::id.asc())
                .select(TxnRow::as_select())
                .load(c)
                .await?;
            let legs = ledger_legs::table
                .filter(ledger_legs::account_id.eq(&account))
                .select(LegRow::as_select())
                .load(c)
                .await?;
            Ok(Some((debt, all_grants, all_holds, txns, legs)))
        }

        /// Pending holds whose time is up, by id after the cursor.
        pub(crate) async fn ledger_expired_holds(
            c: &mut Conn,
            now: i64,
            after: Option<String>,
            limit: i64,
        ) -> Result<Vec<(LedgerAccountId, LedgerHoldId)>, TxError> {
            let mut query = holds::table
                .filter(holds::status.eq("pending"))
                .filter(holds::expires_at.le(now))
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(holds::id.gt(after));
            }
            let rows: Vec<(String, String)> = query
                .order(holds::id.asc())
                .limit(limit)
                .select((holds::account_id, holds::id))
                .load(c)
                .await?;
            rows.into_iter()
                .map(|(a, h)| Ok((crate::db::parse_id(&a)?, crate::db::parse_id(&h)?)))
                .collect::<Result<_, LedgerStoreError>>()
                .map_err(TxError::Store)
        }
    };
}
pub(crate) use ledger_queries;
