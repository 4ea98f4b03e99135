//! The gateway's own routes: the models the caller's plan allows, a simple chat call for
//! products that want no SDK, and the caller's usage by day and model.

use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::entitlements::model_denial;
use billing_core::ports::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, Time};
use utoipa::ToSchema;

use super::{GatewayError, admit, authenticate, run};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Validate, max_chars};
use crate::state::ApiState;

/// The models the caller may call: those of the catalog that the plan in force includes
/// (the rule the gateway enforces). In Anthropic's shape when the request carries
/// `anthropic-version` (as Anthropic's SDKs send it), else in OpenAI's.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", security(("bearer" = [])),
    responses(
        (status = 200, description = "`{object: list, data: [{id, object: model, owned_by}]}` (OpenAI) or `{data: [{id, type: model, display_name}], has_more}` (Anthropic)"),
        (status = 401, description = "No or a bad credential"),
    ))]
pub async fn models(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let anthropic = req.headers().contains_key("anthropic-version");
    let caller = match authenticate(&req).await {
        Ok(caller) => caller,
        Err(err) if anthropic => return super::anthropic::error(&err),
        Err(err) => return super::openai::error(&err),
    };
    let allowed = match allowed_models(&state, &caller).await {
        Ok(allowed) => allowed,
        Err(err) if anthropic => return super::anthropic::error(&err),
        Err(err) => return super::openai::error(&err),
    };
    if anthropic {
        let data: Vec<_> = allowed
            .iter()
            .map(|(id, _)| {
                json!({"type": "model", "id": id, "display_name": id,
                       "created_at": "2024-01-01T00:00:00Z"})
            })
            .collect();
        return HttpResponse::Ok().json(json!({
            "data": data, "has_more": false,
            "first_id": allowed.first().map(|(id, _)| id),
            "last_id": allowed.last().map(|(id, _)| id),
        }));
    }
    let data: Vec<_> = allowed
        .iter()
        .map(|(id, provider)| json!({"id": id, "object": "model", "created": 0, "owned_by": provider}))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

async fn allowed_models(
    state: &ApiState,
    caller: &Caller,
) -> Result<Vec<(String, String)>, GatewayError> {
    let (account, _) = super::payer(caller)?;
    let record = state
        .billing
        .accounts
        .account(&account)
        .await
        .map_err(|e| GatewayError::from(billing_core::usecases::BillingError::from(e)))?
        .ok_or_else(|| GatewayError::from(billing_core::usecases::BillingError::AccountNotFound))?;
    let subscription = state
        .billing
        .subscriptions
        .current(&account)
        .await
        .map_err(|e| GatewayError::from(billing_core::usecases::BillingError::from(e)))?;
    let sub = subscription.as_ref().map(|s| (s.plan.as_str(), s.status));
    let catalog = &state.billing.catalog;
    Ok(catalog
        .models
        .iter()
        .filter(|(id, _)| model_denial(catalog, &record.plan, sub, id).is_none())
        .map(|(id, model)| {
            let provider = serde_json::to_value(model.provider)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (id.clone(), provider)
        })
        .collect())
}

/// Who said a message.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One message of context.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextMessage {
    /// Who said it.
    pub role: Role,
    /// The text.
    #[schema(max_length = 200000)]
    pub content: String,
}

/// A chat call without an SDK.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimpleChatRequest {
    /// A model of `GET /v1/models`.
    #[schema(max_length = 128)]
    pub model: String,
    /// What to ask.
    #[schema(max_length = 200000)]
    pub prompt: String,
    /// Earlier messages, oldest first.
    #[serde(default)]
    pub context: Vec<ContextMessage>,
    /// A cap on the answer's tokens (at most the model's).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
}

impl Validate for SimpleChatRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("model", &self.model, 128)?;
        max_chars("prompt", &self.prompt, 200_000)?;
        for (i, m) in self.context.iter().enumerate() {
            max_chars(&format!("context[{i}].content"), &m.content, 200_000)?;
        }
        if self.max_tokens == Some(0) {
            return Err(ApiError::invalid_field("max_tokens", "must be at least 1"));
        }
        Ok(())
    }
}

/// Tokens a call used.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenUsageView {
    /// Input tokens not served from the provider's cache.
    pub input_tokens: u64,
    /// Input tokens served from the cache.
    pub cached_input_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// Of the output, reasoning tokens.
    pub reasoning_tokens: u64,
}

impl From<billing_core::catalog::TokenUsage> for TokenUsageView {
    fn from(u: billing_core::catalog::TokenUsage) -> Self {
        Self {
            input_tokens: u.input,
            cached_input_tokens: u.cached_input,
            output_tokens: u.output,
            reasoning_tokens: u.reasoning,
        }
    }
}

/// A simple chat call's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimpleChatView {
    /// The call (`call_…`).
    pub id: String,
    /// The model.
    pub model: String,
    /// The answer.
    pub result: String,
    /// Why it stopped: `stop`, or `length` (the token cap).
    pub finish_reason: String,
    /// Tokens used.
    pub usage: TokenUsageView,
    /// Credits charged.
    pub credits: u64,
    /// Cost at the provider's prices, in micro-units of `currency` (rounded up).
    pub cost_micros: i64,
    /// The cost's currency.
    pub currency: String,
}

fn problem(err: GatewayError) -> ApiError {
    let code = match err.kind {
        super::ErrorKind::InvalidRequest => "invalid_request",
        super::ErrorKind::Authentication => "unauthenticated",
        super::ErrorKind::Permission => "not_in_plan",
        super::ErrorKind::NotFound => "model_not_found",
        super::ErrorKind::InsufficientCredits => "insufficient_credits",
        super::ErrorKind::RateLimited => "upstream_rate_limited",
        super::ErrorKind::Upstream => "upstream_error",
        super::ErrorKind::Internal => "internal",
    };
    let mut problem = ApiError::new(err.status, code, "LLM call", err.message);
    if let Some(balance) = err.balance {
        problem = problem.with("balance", balance);
    }
    if let Some(reserved) = err.reserved {
        problem = problem.with("reserved", reserved);
    }
    if let Some(after) = err.retry_after {
        problem = problem.with("retry_after", after);
    }
    problem
}

/// A chat call without an SDK: the prompt (after any context) to a model of the plan;
/// the answer with its tokens, credits and cost. Paid like every gateway call: the worst
/// case held first (402 if the balance does not cover it), the exact cost captured.
#[utoipa::path(post, path = "/v1/chat", tag = "gateway", security(("bearer" = [])),
    request_body = SimpleChatRequest,
    responses(
        (status = 200, description = "The answer", body = SimpleChatView),
        (status = 422, description = "A malformed field, named", body = Problem),
        (status = 402, description = "The balance does not cover the call's worst case (`balance`, `reserved`)", body = Problem),
        (status = 403, description = "The plan does not include the model", body = Problem),
        (status = 404, description = "No such model", body = Problem),
        (status = 429, description = "The provider is rate limiting (`Retry-After`)", body = Problem),
        (status = 502, description = "The provider failed; nothing was charged", body = Problem),
    ))]
pub async fn simple_chat(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<SimpleChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut messages: Vec<ChatMessage> = body
        .context
        .into_iter()
        .map(|m| ChatMessage {
            role: m.role.as_str().to_owned(),
            content: m.content,
        })
        .collect();
    messages.push(ChatMessage {
        role: "user".into(),
        content: body.prompt,
    });
    let call = admit(&state, &caller, &body.model, messages, body.max_tokens)
        .await
        .map_err(problem)?;
    let id = call.admitted.id.clone();
    let (answer, record) = run(state.clone(), call).await.map_err(problem)?;
    Ok(HttpResponse::Ok().json(SimpleChatView {
        id,
        model: body.model,
        result: answer.content,
        finish_reason: answer.finish_reason,
        usage: record.usage.into(),
        credits: record.credits,
        cost_micros: record.cost_micros,
        currency: record.currency.code().to_owned(),
    }))
}

/// Which days.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day (UTC), `YYYY-MM-DD`; default 29 days before `to`.
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last day (UTC), `YYYY-MM-DD`, included; default today.
    #[param(format = Date)]
    pub to: Option<String>,
}

/// One model on one day.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDayView {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The model.
    pub model: String,
    /// Calls.
    pub calls: u64,
    /// Tokens.
    pub usage: TokenUsageView,
    /// Cost in micro-units of `currency`.
    pub cost_micros: i64,
    /// The currency.
    pub currency: String,
    /// Credits charged.
    pub credits: u64,
}

/// The caller's gateway usage by day and model.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// First day.
    pub from: String,
    /// Last day (included).
    pub to: String,
    /// By day, then model.
    pub days: Vec<UsageDayView>,
}

/// The days a query asks for (`to` defaults to today, `from` to 29 days before it) and the
/// instants `[start, end)` they span, in UTC.
pub(crate) fn day_range(
    state: &ApiState,
    query: &UsageQuery,
) -> Result<(Date, Date, OffsetDateTime, OffsetDateTime), ApiError> {
    let today = state.billing.clock.now().date();
    let to = match &query.to {
        Some(text) => day("to", text)?,
        None => today,
    };
    let from = match &query.from {
        Some(text) => day("from", text)?,
        None => to.checked_sub(Duration::days(29)).unwrap_or(Date::MIN),
    };
    let start = OffsetDateTime::new_utc(from, Time::MIDNIGHT);
    let end = OffsetDateTime::new_utc(to, Time::MIDNIGHT)
        .checked_add(Duration::days(1))
        .unwrap_or(OffsetDateTime::new_utc(Date::MAX, Time::MAX));
    Ok((from, to, start, end))
}

fn day(field: &str, text: &str) -> Result<Date, ApiError> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|_| ApiError::invalid_field(field, "must be a date, YYYY-MM-DD"))
}

/// The caller's gateway calls summed by day (UTC) and model: calls, tokens, cost, credits
/// (`from` after `to` is an empty range).
#[utoipa::path(get, path = "/v1/usage", tag = "gateway", security(("bearer" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "Usage by day and model", body = UsageView),
        (status = 422, description = "A malformed date", body = Problem),
    ))]
pub async fn usage(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let (from, to, start, end) = day_range(&state, &query)?;
    let days = state
        .billing
        .llm_usage(state.usage.as_ref(), account, start, end)
        .await?;
    Ok(HttpResponse::Ok().json(UsageView {
        from: from.to_string(),
        to: to.to_string(),
        days: days
            .into_iter()
            .map(|d| UsageDayView {
                day: d.day,
                model: d.model,
                calls: d.calls,
                usage: d.usage.into(),
                cost_micros: d.cost_micros,
                currency: d.currency.code().to_owned(),
                credits: d.credits,
            })
            .collect(),
    }))
}
