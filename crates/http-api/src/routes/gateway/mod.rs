//! The metered gateway's HTTP side: OpenAI's chat completions ([`openai`]), Anthropic's
//! messages ([`anthropic`]), the model list and the usage report ([`usage`]). Each API
//! answers in its own shapes, errors included; what they share is here: admitting a call
//! (plan, then the worst case held), running it, and settling it.
//!
//! Streaming: the provider's stream is read by a task of its own, which relays chunks to
//! the response through a small channel. When the client goes away the channel closes;
//! the task then drops the provider's stream (which stops it) and charges what was
//! generated (the rule in `billing_core::gateway`). Either way the task settles the hold
//! and records the call before the response's last event, so a client that saw the end
//! sees its usage.

pub mod anthropic;
pub mod openai;
pub mod usage;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web;
use billing_core::catalog::TokenUsage;
use billing_core::entitlements::Denial;
use billing_core::gateway::{CallOutcome, LlmCall, estimated_tokens};
use billing_core::ids::AccountId;
use billing_core::ledger::LedgerError;
use billing_core::ports::{ChatChunk, ChatMessage, ChatResponse, LlmError, LlmProvider};
use billing_core::usecases::{AdmittedCall, BillingError, CallEnd};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::state::ApiState;

/// What went wrong, for each API to render in its own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A message for the developer.
    pub message: String,
    /// The balance, for `402`.
    pub balance: Option<i64>,
    /// The credits the call needed held, for `402`.
    pub reserved: Option<u64>,
    /// Seconds to wait, for `429`.
    pub retry_after: Option<u64>,
}

/// Kinds of failure, which each API names its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed request.
    InvalidRequest,
    /// No or a bad credential.
    Authentication,
    /// The plan does not include the model.
    Permission,
    /// No such model.
    NotFound,
    /// The balance does not cover the worst case.
    InsufficientCredits,
    /// Too many requests (the provider's, passed on).
    RateLimited,
    /// The provider failed.
    Upstream,
    /// Tollgate failed.
    Internal,
}

impl GatewayError {
    pub(crate) fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            balance: None,
            reserved: None,
            retry_after: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message)
    }

    /// The response with an API's error `body`, completed with what every shape carries:
    /// the balance and the hold needed (a 402), and `Retry-After` (a 429).
    pub(crate) fn respond(&self, mut body: serde_json::Value) -> actix_web::HttpResponse {
        if let Some(balance) = self.balance {
            body["error"]["balance"] = balance.into();
        }
        if let Some(reserved) = self.reserved {
            body["error"]["reserved"] = reserved.into();
        }
        let mut response = actix_web::HttpResponse::build(self.status);
        if let Some(after) = self.retry_after {
            response.insert_header(("retry-after", after.to_string()));
        }
        response.json(body)
    }
}

impl From<BillingError> for GatewayError {
    fn from(err: BillingError) -> Self {
        match err {
            BillingError::NotEntitled(Denial::Unknown { name })
            | BillingError::UnknownModel(name) => Self::new(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                format!("The model `{name}` does not exist (GET /v1/models lists yours)"),
            ),
            BillingError::NotEntitled(Denial::SubscriptionInactive { status }) => Self::new(
                StatusCode::FORBIDDEN,
                ErrorKind::Permission,
                format!(
                    "The subscription that includes this model is {}",
                    status.as_str()
                ),
            ),
            BillingError::NotEntitled(denial) => Self::new(
                StatusCode::FORBIDDEN,
                ErrorKind::Permission,
                match denial {
                    Denial::NotInPlan { plan } => {
                        format!("Your plan `{plan}` does not include this model")
                    }
                    other => format!("Not allowed: {other:?}"),
                },
            ),
            BillingError::Ledger(LedgerError::InsufficientCredits { balance, required }) => Self {
                balance: Some(balance),
                reserved: Some(required),
                ..Self::new(
                    StatusCode::PAYMENT_REQUIRED,
                    ErrorKind::InsufficientCredits,
                    format!(
                        "Insufficient credits: this call needs {required} held (its worst \
                             case) and the balance is {balance}"
                    ),
                )
            },
            BillingError::Invalid { field, message } => {
                Self::invalid(format!("`{field}` {message}"))
            }
            other => {
                tracing::error!(error = %other, "gateway call failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Internal,
                    "internal error",
                )
            }
        }
    }
}

impl From<LlmError> for GatewayError {
    fn from(err: LlmError) -> Self {
        match err {
            LlmError::Rejected(message) => Self::invalid(message),
            LlmError::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after.unwrap_or(1)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorKind::RateLimited,
                    "The provider is rate limiting; retry later",
                )
            },
            LlmError::Unavailable(message) => {
                Self::new(StatusCode::BAD_GATEWAY, ErrorKind::Upstream, message)
            }
            LlmError::NotConfigured(message) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Upstream,
                message,
            ),
        }
    }
}

/// A call admitted for an account.
pub(crate) struct Call {
    pub admitted: AdmittedCall,
    pub api_key: Option<String>,
    pub provider: Arc<dyn LlmProvider>,
    /// The fallback serving the call, if not the model asked for.
    pub served: Option<usize>,
    /// The request as sent to whichever model serves it.
    pub request: billing_core::ports::ChatRequest,
}

impl Call {
    /// Moves the call to its next fallback model, if it has one left.
    fn fall_back(&mut self, state: &ApiState) -> bool {
        let next = self.served.map_or(0, |i| i + 1);
        let Some((id, model)) = self.admitted.fallbacks.get(next) else {
            return false;
        };
        tracing::warn!(call = %self.admitted.id, from = %self.admitted.model_id, to = %id,
            "the provider failed before answering; trying the fallback model");
        self.served = Some(next);
        self.provider = state.llm.route(model.provider);
        self.request.upstream_model = model.upstream.clone();
        self.request.max_output_tokens =
            self.request.max_output_tokens.min(model.max_output_tokens);
        true
    }
}

/// Whether another model may answer in place of one that failed like this.
fn worth_falling_back(err: &LlmError) -> bool {
    matches!(err, LlmError::RateLimited { .. } | LlmError::Unavailable(_))
}

/// The caller of a gateway route: a user (by token or API key); the admin key has no
/// account to charge.
pub(crate) fn payer(caller: &Caller) -> Result<(AccountId, Option<String>), GatewayError> {
    match caller {
        Caller::User {
            account, api_key, ..
        } => Ok((account.clone(), api_key.as_ref().map(ToString::to_string))),
        Caller::AdminKey | Caller::Worker => Err(GatewayError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Permission,
            "the admin and worker keys have no account to charge; call as a user or with their API key",
        )),
    }
}

/// Checks the plan and holds the worst case.
pub(crate) async fn admit(
    state: &ApiState,
    caller: &Caller,
    model: &str,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
) -> Result<Call, GatewayError> {
    let (account, api_key) = payer(caller)?;
    if messages.is_empty() {
        return Err(GatewayError::invalid("`messages` must not be empty"));
    }
    let admitted = state
        .billing
        .begin_llm_call(&account, model, messages, max_tokens, state.llm.as_ref())
        .await?;
    let provider = state.llm.route(admitted.model.provider);
    let request = admitted.request.clone();
    Ok(Call {
        admitted,
        api_key,
        provider,
        served: None,
        request,
    })
}

async fn settle(
    state: &ApiState,
    call: &Call,
    outcome: CallOutcome,
    usage: Option<TokenUsage>,
) -> Result<LlmCall, GatewayError> {
    let finished = state
        .billing
        .end_llm_call(
            state.usage.as_ref(),
            &call.admitted,
            CallEnd {
                fallback: call.served,
                provider: call.provider.name().to_owned(),
                api_key: call.api_key.clone(),
                outcome,
                usage,
            },
        )
        .await?;
    Ok(finished.call)
}

/// Runs a call to the end: the answer, with the call as recorded. The call runs in a task
/// of its own, so that a client that goes away does not cancel it half-way: the provider
/// answers in full and bills for it, so the call is settled and charged all the same.
pub(crate) async fn run(
    state: web::Data<ApiState>,
    mut call: Call,
) -> Result<(ChatResponse, LlmCall), GatewayError> {
    let task = tokio::spawn(async move {
        loop {
            match call.provider.chat(call.request.clone()).await {
                Ok(answer) => {
                    let record = settle(&state, &call, CallOutcome::Ok, Some(answer.usage)).await?;
                    return Ok((answer, record));
                }
                Err(err) if worth_falling_back(&err) && call.fall_back(&state) => {}
                Err(err) => {
                    settle(&state, &call, CallOutcome::Error, None).await?;
                    return Err(err.into());
                }
            }
        }
    });
    task.await.map_err(|err| {
        tracing::error!(error = %err, "a gateway call's task failed");
        GatewayError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            "internal error",
        )
    })?
}

/// What a streamed call relays to the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Relay {
    /// A provider chunk.
    Chunk(ChatChunk),
    /// The call is settled: its record (the usage charged).
    Settled(LlmCall),
    /// The provider failed after the stream began.
    Failed(GatewayError),
}

/// The usage to charge for a stream that did not finish: the provider's last report where
/// it gave one, else the estimate of `billing_core::gateway`.
fn usage_so_far(call: &Call, reported: Option<TokenUsage>, relayed_bytes: u64) -> TokenUsage {
    let estimated_input = || {
        let bytes: usize = call.request.messages.iter().map(|m| m.content.len()).sum();
        estimated_tokens(u64::try_from(bytes).unwrap_or(u64::MAX))
    };
    let output = estimated_tokens(relayed_bytes);
    match reported {
        Some(usage) => TokenUsage {
            output: usage.output.max(output),
            ..usage
        },
        None => TokenUsage {
            input: estimated_input(),
            cached_input: 0,
            output,
            reasoning: 0,
        },
    }
}

/// Starts a streamed call. An error before the stream begins comes back at once (and the
/// hold is voided); after that, everything goes through the returned channel.
pub(crate) async fn start_stream(
    state: web::Data<ApiState>,
    call: Call,
) -> Result<mpsc::Receiver<Relay>, GatewayError> {
    let mut upstream = match call
        .provider
        .chat_stream(call.admitted.request.clone())
        .await
    {
        Ok(stream) => stream,
        Err(err) => {
            settle(&state, &call, CallOutcome::Error, None).await?;
            return Err(err.into());
        }
    };
    let (tx, rx) = mpsc::channel::<Relay>(32);
    tokio::spawn(async move {
        let mut reported: Option<TokenUsage> = None;
        let mut relayed: u64 = 0;
        let mut failure: Option<LlmError> = None;
        let mut gone = false;
        loop {
            tokio::select! {
                () = tx.closed() => {
                    gone = true;
                    break;
                }
                item = upstream.next() => match item {
                    None => break,
                    Some(Ok(chunk)) => {
                        match &chunk {
                            ChatChunk::Text(text) => {
                                relayed += u64::try_from(text.len()).unwrap_or(0);
                            }
                            ChatChunk::Usage(usage) => reported = Some(*usage),
                            ChatChunk::Finish(_) => {}
                        }
                        if tx.send(Relay::Chunk(chunk)).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    Some(Err(err)) => {
                        failure = Some(err);
                        break;
                    }
                }
            }
        }
        // Stops the provider's stream (a dropped HTTP response closes the connection).
        drop(upstream);
        let (outcome, usage) = if gone {
            (
                CallOutcome::Disconnected,
                Some(usage_so_far(&call, reported, relayed)),
            )
        } else if failure.is_some() {
            // Charged only for what was generated before it broke.
            let usage = (relayed > 0 || reported.is_some_and(|u| u.output > 0))
                .then(|| usage_so_far(&call, reported, relayed));
            (CallOutcome::Error, usage)
        } else {
            (
                CallOutcome::Ok,
                Some(reported.unwrap_or_else(|| usage_so_far(&call, None, relayed))),
            )
        };
        match settle(&state, &call, outcome, usage).await {
            Ok(record) => {
                if let Some(err) = failure {
                    let _ = tx.send(Relay::Failed(err.into())).await;
                } else {
                    let _ = tx.send(Relay::Settled(record)).await;
                }
            }
            Err(err) => {
                tracing::error!(call = %call.admitted.id, error = ?err, "a streamed call could not be settled; its hold lapses");
                let _ = tx.send(Relay::Failed(err)).await;
            }
        }
    });
    Ok(rx)
}

/// The Unix time now, for response bodies.
pub(crate) fn created(state: &ApiState) -> i64 {
    state.billing.clock.now().unix_timestamp()
}

/// The caller of a gateway route, or the API's own authentication error.
pub(crate) async fn authenticate(req: &actix_web::HttpRequest) -> Result<Caller, GatewayError> {
    crate::auth::caller(req).await.map_err(|err| {
        let kind = if err.status() == StatusCode::UNAUTHORIZED {
            ErrorKind::Authentication
        } else {
            ErrorKind::Internal
        };
        GatewayError::new(err.status(), kind, err.detail().to_owned())
    })
}

/// Text content as the APIs send it: a string, or a list of parts of which the `text`
/// ones count (others are refused: the gateway meters text).
pub(crate) fn text_of(content: &serde_json::Value, field: &str) -> Result<String, GatewayError> {
    match content {
        serde_json::Value::String(text) => Ok(text.clone()),
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(GatewayError::invalid(format!(
                            "`{field}`: only text parts are supported (got `{}`)",
                            kind.unwrap_or("?")
                        )));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(GatewayError::invalid(format!(
            "`{field}` must be a string or a list of text parts"
        ))),
    }
}
