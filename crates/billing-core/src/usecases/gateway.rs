//! Paying for an LLM call before it is spent: [`Billing::begin_llm_call`] checks the model
//! against the plan and holds the worst case; [`Billing::end_llm_call`] captures the exact
//! cost (or voids on failure) and records the call. The rules are in [`crate::gateway`].

use time::{Duration, OffsetDateTime};

use super::{Billing, BillingError};
use crate::catalog::{Model, TokenUsage};
use crate::entitlements::model_denial;
use crate::gateway::{self, CallOutcome, LlmCall};
use crate::ids::{AccountId, CallId, HoldId, PrefixedId};
use crate::ledger::{Credits, LedgerCommand, LedgerPolicy, Receipt};
use crate::ports::{ChatMessage, ChatRequest, StoreError, TokenCounter, UsageStore};

/// How long a call's hold lives if it is never settled (a crash mid-call): long enough for
/// the slowest call, short enough that the credits come back the same hour.
const CALL_HOLD_TTL: Duration = Duration::minutes(15);

/// A call admitted: the hold taken and the request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmittedCall {
    /// The call's id (`call_…`), also the stem of its ledger idempotency keys.
    pub id: String,
    /// Who pays.
    pub account: AccountId,
    /// The model, as the catalog names it.
    pub model_id: String,
    /// Its catalog entry.
    pub model: Model,
    /// The plan in force (whose credit value prices the call).
    pub plan: String,
    /// The hold.
    pub hold: HoldId,
    /// Credits held: the worst case.
    pub reserved: Credits,
    /// What to send the provider (the output cap always set).
    pub request: ChatRequest,
    /// The models to try in turn if this one's provider fails before answering (the
    /// catalog's `fallbacks`), with their catalog entries; the hold covers each one's
    /// worst case.
    pub fallbacks: Vec<(String, Model)>,
    /// When it was admitted.
    pub started: OffsetDateTime,
}

/// How a call ended, as the gateway saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// The fallback that served it (an index into `AdmittedCall::fallbacks`), if not the
    /// model asked for.
    pub fallback: Option<usize>,
    /// Who served it (`LlmProvider::name`).
    pub provider: String,
    /// The API key it came with, if one.
    pub api_key: Option<String>,
    /// How it ended.
    pub outcome: CallOutcome,
    /// The usage to charge (the provider's report, or for a call cut short the documented
    /// estimate); `None`: nothing (the hold is voided).
    pub usage: Option<TokenUsage>,
}

/// What a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedCall {
    /// The record written.
    pub call: LlmCall,
    /// The hold's settlement.
    pub receipt: Receipt,
}

impl Billing {
    /// Admits a call of `model_id`: the plan in force must include the model (the rule of
    /// [`model_denial`]), and the worst case (see [`crate::gateway`]; input counted by
    /// `tokens` where it knows the model's tokenizer) is held. Refusals:
    /// `NotEntitled` (unknown model, not in the plan, unpaid subscription) and
    /// `Ledger(InsufficientCredits { balance, required })`, before any provider is called.
    pub async fn begin_llm_call(
        &self,
        account: &AccountId,
        model_id: &str,
        messages: Vec<ChatMessage>,
        max_output_tokens: Option<u32>,
        tokens: &dyn TokenCounter,
    ) -> Result<AdmittedCall, BillingError> {
        let record = self.account(account).await?;
        let subscription = self.subscriptions.current(account).await?;
        let sub = subscription.as_ref().map(|s| (s.plan.as_str(), s.status));
        if let Some(denial) = model_denial(&self.catalog, &record.plan, sub, model_id) {
            return Err(BillingError::NotEntitled(denial));
        }
        let plan = self.plan_of(&record)?;
        let model = self
            .catalog
            .models
            .get(model_id)
            .cloned()
            .ok_or_else(|| BillingError::UnknownModel(model_id.to_owned()))?;
        let cap = gateway::output_cap(max_output_tokens, plan.max_output_tokens, &model);
        let fallbacks: Vec<(String, Model)> = model
            .fallbacks
            .iter()
            .filter_map(|id| self.catalog.models.get(id).map(|m| (id.clone(), m.clone())))
            .collect();
        let mut reserved: Credits = 1;
        for (id, candidate) in std::iter::once((model_id, &model))
            .chain(fallbacks.iter().map(|(id, m)| (id.as_str(), m)))
        {
            // Each model's own tokenizer and cap, so that a fallback's worst case is
            // covered too.
            let input_bound =
                gateway::input_token_bound(&messages, |text| tokens.count_tokens(candidate, text));
            let worst = gateway::worst_case(input_bound, cap.min(candidate.max_output_tokens));
            let credits = gateway::credits(&self.catalog, &record.plan, candidate, worst)
                .ok_or_else(|| BillingError::UnpricedModel(id.to_owned()))?;
            reserved = reserved.max(credits);
        }
        let id = CallId::from_ulid(self.ids.ulid()).to_string();
        let now = self.clock.now();
        let command = LedgerCommand::Reserve {
            amount: reserved,
            expires_at: now + CALL_HOLD_TTL,
            reference: Some(id.clone()),
            memo: Some(format!("`{model_id}` call, worst case")),
        };
        let policy = LedgerPolicy {
            overdraft_limit: plan.overdraft,
        };
        let moved = self
            .run(account, super::key(format!("{id}:hold"))?, command, policy)
            .await?;
        let hold = moved.receipt.hold.clone().ok_or_else(|| {
            BillingError::Store(StoreError::Other("a reserve made no hold".into()))
        })?;
        Ok(AdmittedCall {
            request: ChatRequest {
                upstream_model: model.upstream.clone(),
                messages,
                max_output_tokens: cap,
            },
            fallbacks,
            id,
            account: account.clone(),
            model_id: model_id.to_owned(),
            plan: record.plan.clone(),
            model,
            hold,
            reserved,
            started: now,
        })
    }

    /// Settles an admitted call: with `usage` (the provider's report, or for a call cut
    /// short the documented estimate), captures its credits, at most the hold, and the rest
    /// returns; without, voids. Records the call either way. Safe to repeat.
    pub async fn end_llm_call(
        &self,
        usage_store: &dyn UsageStore,
        call: &AdmittedCall,
        end: CallEnd,
    ) -> Result<FinishedCall, BillingError> {
        let account = &call.account;
        let (model_id, model) = match end.fallback.and_then(|i| call.fallbacks.get(i)) {
            Some((id, model)) => (id.as_str(), model),
            None => (call.model_id.as_str(), &call.model),
        };
        let (command, usage) = match end.usage {
            Some(usage) => {
                let credits = gateway::credits(&self.catalog, &call.plan, model, usage)
                    .unwrap_or(call.reserved)
                    .min(call.reserved);
                (
                    LedgerCommand::Capture {
                        hold: call.hold.clone(),
                        amount: credits,
                        memo: Some(format!("`{model_id}` call")),
                    },
                    usage,
                )
            }
            None => (
                LedgerCommand::Void {
                    hold: call.hold.clone(),
                    memo: Some(format!("`{}` call failed", call.model_id)),
                },
                TokenUsage::default(),
            ),
        };
        let credits = match &command {
            LedgerCommand::Capture { amount, .. } => *amount,
            _ => 0,
        };
        let moved = self
            .run(
                account,
                super::key(format!("{}:settle", call.id))?,
                command,
                LedgerPolicy::default(),
            )
            .await?;
        let now = self.clock.now();
        let record = LlmCall {
            id: call.id.clone(),
            account: account.clone(),
            api_key: end.api_key,
            model: model_id.to_owned(),
            provider: end.provider,
            usage,
            cost_micros: gateway::cost_micros(model, usage, &self.catalog),
            currency: model.currency.unwrap_or(self.catalog.currency),
            credits,
            latency_ms: u64::try_from((now - call.started).whole_milliseconds()).unwrap_or(0),
            outcome: end.outcome,
            created_at: call.started,
        };
        usage_store.record_call(&record).await?;
        Ok(FinishedCall {
            call: record,
            receipt: moved.receipt,
        })
    }

    /// The caller's usage by day (UTC) and model over `[from, to)`.
    pub async fn llm_usage(
        &self,
        usage_store: &dyn UsageStore,
        account: &AccountId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<gateway::UsageDay>, BillingError> {
        let calls = usage_store.calls_between(account, from, to).await?;
        Ok(gateway::usage_by_day(&calls))
    }

    /// What the account's credits went on over `[from, to)`, by day (UTC), action and model
    /// (see [`crate::analytics`]).
    pub async fn consumption(
        &self,
        usage_store: &dyn UsageStore,
        account: &AccountId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<crate::analytics::ConsumptionDay>, BillingError> {
        let spent = usage_store.spent_between(account, from, to).await?;
        let calls = usage_store.calls_between(account, from, to).await?;
        Ok(crate::analytics::consumption_by_day(
            &spent,
            &calls,
            &self.catalog.actions,
        ))
    }
}
