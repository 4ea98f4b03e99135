//! Metered LLM calls: the [`UsageStore`] port.

use async_trait::async_trait;
use billing_core::analytics::Spent;
use billing_core::catalog::TokenUsage;
use billing_core::gateway::LlmCall;
use billing_core::ids::AccountId;
use billing_core::ports::{StoreError, UsageStore};
use diesel::prelude::*;
use time::OffsetDateTime;

use crate::db::{credits, from_ts, parse_enum, parse_id, signed, ts, tx_error};
use crate::schema::llm_calls;
use crate::sql::call;
use crate::store::DieselStore;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = llm_calls, treat_none_as_default_value = false)]
pub(crate) struct LlmCallRow {
    pub id: String,
    pub account_id: String,
    pub api_key: Option<String>,
    pub model: String,
    pub provider: String,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_micros: i64,
    pub currency: String,
    pub credits: i64,
    pub latency_ms: i64,
    pub outcome: String,
    pub created_at: i64,
}

impl LlmCallRow {
    fn from_domain(c: &LlmCall) -> Self {
        Self {
            id: c.id.clone(),
            account_id: c.account.to_string(),
            api_key: c.api_key.clone(),
            model: c.model.clone(),
            provider: c.provider.clone(),
            input_tokens: signed(c.usage.input),
            cached_input_tokens: signed(c.usage.cached_input),
            output_tokens: signed(c.usage.output),
            reasoning_tokens: signed(c.usage.reasoning),
            cost_micros: c.cost_micros.max(0),
            currency: c.currency.code().to_owned(),
            credits: signed(c.credits),
            latency_ms: signed(c.latency_ms),
            outcome: c.outcome.as_str().to_owned(),
            created_at: ts(c.created_at),
        }
    }

    fn into_domain(self) -> Result<LlmCall, StoreError> {
        Ok(LlmCall {
            id: self.id,
            account: parse_id(&self.account_id)?,
            api_key: self.api_key,
            model: self.model,
            provider: self.provider,
            usage: TokenUsage {
                input: credits(self.input_tokens),
                cached_input: credits(self.cached_input_tokens),
                output: credits(self.output_tokens),
                reasoning: credits(self.reasoning_tokens),
            },
            cost_micros: self.cost_micros,
            currency: self
                .currency
                .parse()
                .map_err(|e| StoreError::Other(format!("corrupt currency: {e}")))?,
            credits: credits(self.credits),
            latency_ms: credits(self.latency_ms),
            outcome: parse_enum(&self.outcome)?,
            created_at: from_ts(self.created_at),
        })
    }
}

/// The usage queries; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! usage_queries {
    () => {
        use crate::schema::llm_calls;
        use crate::usage::LlmCallRow;

        pub(crate) async fn llm_call_insert(c: &mut Conn, row: LlmCallRow) -> Result<(), TxError> {
            diesel::insert_into(llm_calls::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            Ok(())
        }

        pub(crate) async fn llm_calls_between(
            c: &mut Conn,
            account: String,
            from: i64,
            to: i64,
        ) -> Result<Vec<LlmCallRow>, TxError> {
            Ok(llm_calls::table
                .filter(llm_calls::account_id.eq(account))
                .filter(llm_calls::created_at.ge(from))
                .filter(llm_calls::created_at.lt(to))
                .select(LlmCallRow::as_select())
                .order((llm_calls::created_at.asc(), llm_calls::id.asc()))
                .load(c)
                .await?)
        }
    };
}
pub(crate) use usage_queries;

/// Queries for consumption analytics; stamped into `sql::pg` and `sql::sqlite`.
macro_rules! spent_queries {
    () => {
        /// (kind, reference, amount, refunded, created_at) of the debits and captures.
        pub(crate) async fn spent_between(
            c: &mut Conn,
            account: String,
            from: i64,
            to: i64,
        ) -> Result<Vec<(String, Option<String>, i64, i64, i64)>, TxError> {
            use crate::schema::ledger_transactions as t;
            Ok(t::table
                .filter(t::account_id.eq(account))
                .filter(t::kind.eq_any(["debit", "capture"]))
                .filter(t::created_at.ge(from))
                .filter(t::created_at.lt(to))
                .select((t::kind, t::reference, t::amount, t::refunded, t::created_at))
                .order((t::created_at.asc(), t::id.asc()))
                .load(c)
                .await?)
        }
    };
}
pub(crate) use spent_queries;

#[async_trait]
impl UsageStore for DieselStore {
    async fn record_call(&self, call: &LlmCall) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        call!(conn, llm_call_insert(LlmCallRow::from_domain(call))).map_err(tx_error)
    }

    async fn calls_between(
        &self,
        account: &AccountId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<LlmCall>, StoreError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<LlmCallRow> = call!(
            conn,
            llm_calls_between(account.to_string(), ts(from), ts(to))
        )
        .map_err(tx_error)?;
        rows.into_iter().map(LlmCallRow::into_domain).collect()
    }

    async fn spent_between(
        &self,
        account: &AccountId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Spent>, StoreError> {
        let mut conn = self.pool.get().await?;
        let rows =
            call!(conn, spent_between(account.to_string(), ts(from), ts(to))).map_err(tx_error)?;
        rows.into_iter()
            .map(|(kind, reference, amount, refunded, at)| {
                Ok(Spent {
                    kind: parse_enum(&kind)?,
                    reference,
                    credits: credits(amount.saturating_sub(refunded)),
                    at: from_ts(at),
                })
            })
            .collect()
    }
}
