//! The metered gateway's rules: what a call may cost at most (the hold), what it did cost
//! (the capture), and what a call cut short is charged.
//!
//! **The worst case.** Input tokens are counted with the provider's own tokenizer where
//! Tollgate has it (OpenAI's models: tiktoken's `o200k_base` or `cl100k_base`), and
//! otherwise bounded by the input's UTF-8 bytes: every tokenizer the providers use
//! (byte-level BPE at OpenAI and Anthropic, SentencePiece with byte fallback at Google)
//! makes each token cover at least one byte, so a text of `n` bytes is at most `n` tokens. Each message adds [`MESSAGE_OVERHEAD`] tokens for its role and
//! framing, and a call [`CALL_OVERHEAD`] for the reply's priming. Output is bounded by the
//! cap sent with the call (the client's `max_tokens`, at most the model's
//! `max_output_tokens`). The bound is generous (English runs near four bytes a token);
//! what it reserves beyond the real cost returns the moment the call ends.
//!
//! **The cost.** Computed exactly in decimal from the provider's reported usage and the
//! model's prices per million tokens, then rounded **up** to the next micro-unit of the
//! currency (`cost_micros`, an integer: 1 USD = 1,000,000). Credits are the model's charge
//! rule applied to the same usage, rounded up to whole credits, and never more than the
//! hold.
//!
//! **A call cut short** (the client disconnects mid-stream): the provider's stream is
//! dropped, which stops it. The usage charged is the provider's last report where it made
//! one, else an estimate of a quarter token per byte, rounded up: for the input, its
//! bytes; for the output, the bytes relayed so far. Never more than the hold.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog::{Catalog, Model, TokenUsage};
use crate::ids::AccountId;
use crate::ledger::Credits;
use crate::money::Currency;
use crate::ports::ChatMessage;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The provider answered in full.
    Ok,
    /// The provider failed or refused; nothing was charged.
    Error,
    /// The client went away mid-stream; what was generated was charged.
    Disconnected,
}

impl CallOutcome {
    /// The snake_case name used in storage and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Disconnected => "disconnected",
        }
    }
}

impl std::str::FromStr for CallOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ok" => Self::Ok,
            "error" => Self::Error,
            "disconnected" => Self::Disconnected,
            other => return Err(format!("unknown call outcome `{other}`")),
        })
    }
}

/// One metered call, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmCall {
    /// Its id (`call_…`).
    pub id: String,
    /// Who paid.
    pub account: AccountId,
    /// The API key it came with, if one.
    pub api_key: Option<String>,
    /// The model, as the catalog names it.
    pub model: String,
    /// Who served it (`openai`, `anthropic`, `gemini`, `mock`).
    pub provider: String,
    /// Tokens used.
    pub usage: TokenUsage,
    /// What it cost at the provider's prices, in micro-units of `currency`, rounded up.
    pub cost_micros: i64,
    /// The prices' currency.
    pub currency: Currency,
    /// Credits charged.
    pub credits: Credits,
    /// From the request to the last byte, in milliseconds.
    pub latency_ms: u64,
    /// How it ended.
    pub outcome: CallOutcome,
    /// When it began.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Usage of one model on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDay {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// The model.
    pub model: String,
    /// Calls made (whatever their outcome).
    pub calls: u64,
    /// Tokens used.
    pub usage: TokenUsage,
    /// Cost in micro-units of `currency`.
    pub cost_micros: i64,
    /// The prices' currency.
    pub currency: Currency,
    /// Credits charged.
    pub credits: Credits,
}

/// Sums calls by day (UTC) and model, in that order.
pub fn usage_by_day(calls: &[LlmCall]) -> Vec<UsageDay> {
    let mut days: std::collections::BTreeMap<(String, String), UsageDay> =
        std::collections::BTreeMap::new();
    for call in calls {
        let day = call.created_at.date().to_string();
        let entry = days
            .entry((day.clone(), call.model.clone()))
            .or_insert_with(|| UsageDay {
                day,
                model: call.model.clone(),
                calls: 0,
                usage: TokenUsage::default(),
                cost_micros: 0,
                currency: call.currency,
                credits: 0,
            });
        entry.calls += 1;
        entry.usage.input += call.usage.input;
        entry.usage.cached_input += call.usage.cached_input;
        entry.usage.output += call.usage.output;
        entry.usage.reasoning += call.usage.reasoning;
        entry.cost_micros = entry.cost_micros.saturating_add(call.cost_micros);
        entry.credits = entry.credits.saturating_add(call.credits);
    }
    days.into_values().collect()
}

/// Tokens counted for each message's role and framing (OpenAI documents 3-4).
pub const MESSAGE_OVERHEAD: u64 = 8;
/// Tokens counted per call for the reply's priming.
pub const CALL_OVERHEAD: u64 = 16;
/// The output cap of a model that names none.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;

/// At most how many input tokens these messages are: each text's count by `count` (an
/// exact tokenizer, where one is known for the model), else its bytes; plus the framing.
pub fn input_token_bound(messages: &[ChatMessage], count: impl Fn(&str) -> Option<u64>) -> u64 {
    let tokens = |text: &str| count(text).unwrap_or_else(|| to_u64(text.len()));
    messages
        .iter()
        .map(|m| tokens(&m.content) + tokens(&m.role) + MESSAGE_OVERHEAD)
        .sum::<u64>()
        + CALL_OVERHEAD
}

/// About how many tokens a text is (a quarter per byte, rounded up), for a call cut short
/// before the provider reported.
pub fn estimated_tokens(text_bytes: u64) -> u64 {
    text_bytes.div_ceil(4)
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The output cap sent to the provider: what the client asked, else the plan's default
/// (`plan_default`), at most the model's.
pub fn output_cap(requested: Option<u32>, plan_default: Option<u32>, model: &Model) -> u32 {
    let cap = model.max_output_tokens;
    requested.or(plan_default).map_or(cap, |r| r.clamp(1, cap))
}

/// What a call costs, in micro-units of the model's currency, rounded up.
pub fn cost_micros(model: &Model, usage: TokenUsage, catalog: &Catalog) -> i64 {
    let cost = model.cost(usage, catalog.currency);
    let micros = (cost.amount * Decimal::from(1_000_000u32)).ceil();
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// What the worst case of a call is: `input_bound` input tokens and `max_output` output.
pub fn worst_case(input_bound: u64, max_output: u32) -> TokenUsage {
    TokenUsage {
        input: input_bound,
        cached_input: 0,
        output: u64::from(max_output),
        reasoning: 0,
    }
}

/// The credits of a usage for the account's plan (its credit value, else the catalog's),
/// or `None` when the model cannot be priced.
pub fn credits(catalog: &Catalog, plan: &str, model: &Model, usage: TokenUsage) -> Option<Credits> {
    let value = catalog
        .plan(plan)
        .and_then(|p| catalog.credit_value_for(p))
        .or(catalog.credit_value.as_ref());
    model.credits_for(usage, catalog.currency, value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_catalog;

    fn message(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn the_input_bound_is_bytes_plus_framing() {
        let messages = [message("system", "Be brief."), message("user", "héllo")];
        // 6 + 9, 4 + 6 bytes ("é" is two), 8 per message, 16 per call.
        assert_eq!(input_token_bound(&messages, |_| None), 15 + 10 + 16 + 16);
        // With a tokenizer, its counts (here: one per word).
        let words = |t: &str| Some(t.split_whitespace().count() as u64);
        assert_eq!(input_token_bound(&messages, words), 1 + 2 + 1 + 1 + 16 + 16);
        assert_eq!(estimated_tokens(0), 0);
        assert_eq!(estimated_tokens(5), 2);
    }

    #[test]
    fn the_output_cap_is_the_clients_within_the_models() {
        let catalog = sample_catalog();
        let model = catalog.models.values().next().unwrap();
        assert_eq!(output_cap(None, None, model), model.max_output_tokens);
        assert_eq!(output_cap(None, Some(300), model), 300);
        assert_eq!(output_cap(Some(10), Some(300), model), 10);
        assert_eq!(output_cap(Some(0), None, model), 1);
        assert_eq!(
            output_cap(Some(u32::MAX), None, model),
            model.max_output_tokens
        );
        assert_eq!(
            output_cap(None, Some(u32::MAX), model),
            model.max_output_tokens
        );
    }

    /// Each provider's usage as its adapter reads it (the shapes of
    /// `llm-providers/tests/upstreams.rs`), priced at that provider's list prices per
    /// million tokens: exact integer micro-dollars, rounded up only where a fraction of a
    /// micro-unit remains.
    #[test]
    fn pricing_fixtures_per_provider() {
        let catalog = sample_catalog();
        let base = catalog.models.values().next().unwrap().clone();
        let model = |input: i64, cached: i64, output: i64, scale: u32| Model {
            input_per_mtok: Decimal::new(input, scale),
            cached_input_per_mtok: Some(Decimal::new(cached, scale)),
            output_per_mtok: Decimal::new(output, scale),
            ..base.clone()
        };
        let usage = |input, cached_input, output, reasoning| TokenUsage {
            input,
            cached_input,
            output,
            reasoning,
        };
        // OpenAI gpt-4o ($2.50, cached $1.25, out $10.00): 2,006 prompt tokens of which
        // 1,920 cached, 300 completion tokens of which 192 reasoning (billed as output).
        assert_eq!(
            cost_micros(
                &model(250, 125, 1000, 2),
                usage(86, 1920, 300, 192),
                &catalog
            ),
            215 + 2400 + 3000
        );
        // Anthropic claude-sonnet-4 ($3, cache read $0.30, out $15): 10 input + 2 written to
        // the cache (input), 5 read from it, 20 output: 36 + 1.5 + 300 → 338 (rounded up).
        assert_eq!(
            cost_micros(&model(300, 30, 1500, 2), usage(12, 5, 20, 0), &catalog),
            338
        );
        // Gemini 2.0 flash ($0.10, cached $0.025, out $0.40): 100 prompt tokens of which 40
        // cached, 50 candidates + 30 thoughts: 6 + 1 + 32.
        assert_eq!(
            cost_micros(&model(100, 25, 400, 3), usage(60, 40, 80, 30), &catalog),
            39
        );
    }

    #[test]
    fn costs_round_up_to_the_micro_unit() {
        let catalog = sample_catalog();
        let mut model = catalog.models.values().next().unwrap().clone();
        model.input_per_mtok = Decimal::new(15, 2); // $0.15 per million
        model.cached_input_per_mtok = Some(Decimal::new(75, 3));
        model.output_per_mtok = Decimal::new(60, 2);
        let usage = TokenUsage {
            input: 1000,
            cached_input: 1000,
            output: 1,
            reasoning: 0,
        };
        // 1000 × 0.15 + 1000 × 0.075 + 1 × 0.60 = 225.6 micro-dollars → 226.
        assert_eq!(cost_micros(&model, usage, &catalog), 226);
        let exact = TokenUsage {
            input: 1_000_000,
            ..TokenUsage::default()
        };
        assert_eq!(cost_micros(&model, exact, &catalog), 150_000);
    }
}
