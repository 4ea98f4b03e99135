//! `POST /v1/messages` in Anthropic's shapes, streaming and not, for any model of the
//! catalog whatever its provider. Errors come in Anthropic's `{"type": "error", …}` shape
//! (a short balance is its `billing_error`, 402).

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use billing_core::catalog::TokenUsage;
use billing_core::ports::{ChatChunk, ChatMessage};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openai::tokio_stream;
use super::{ErrorKind, GatewayError, Relay, admit, authenticate, run, start_stream, text_of};
use crate::state::ApiState;

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
struct Request {
    model: String,
    max_tokens: u32,
    messages: Vec<Message>,
    #[serde(default)]
    system: Value,
    #[serde(default)]
    stream: Option<bool>,
}

/// An error in Anthropic's shape.
pub(crate) fn error(err: &GatewayError) -> HttpResponse {
    let kind = match err.kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::InsufficientCredits => "billing_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Upstream => "api_error",
        ErrorKind::Internal => "api_error",
    };
    err.respond(json!({"type": "error", "error": {"type": kind, "message": err.message}}))
}

fn usage(usage: TokenUsage) -> Value {
    json!({"input_tokens": usage.input, "output_tokens": usage.output,
           "cache_read_input_tokens": usage.cached_input, "cache_creation_input_tokens": 0})
}

fn stop_reason(finish: &str) -> &'static str {
    if finish == "length" {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn parse(body: &[u8]) -> Result<(Request, Vec<ChatMessage>), GatewayError> {
    let request: Request = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid(format!("invalid request body: {e}")))?;
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    let system = text_of(&request.system, "system")?;
    if !system.is_empty() {
        messages.push(ChatMessage {
            role: "system".into(),
            content: system,
        });
    }
    for (i, m) in request.messages.iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(GatewayError::invalid(format!(
                "messages.{i}.role: `{}` is not `user` or `assistant`",
                m.role
            )));
        }
        messages.push(ChatMessage {
            role: m.role.clone(),
            content: text_of(&m.content, &format!("messages.{i}.content"))?,
        });
    }
    Ok((request, messages))
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Anthropic's messages, for any model of `GET /v1/models`, streaming (`stream: true`,
/// server-sent events) or not; paid by holding the worst case first.
#[utoipa::path(post, path = "/v1/messages", tag = "compat", security(("bearer" = [])),
    request_body(content = Object, description = "Anthropic's messages request"),
    responses(
        (status = 200, description = "Anthropic's message (or events, streamed)"),
        (status = 400, description = "A malformed request (Anthropic's error shape)"),
        (status = 401, description = "No or a bad credential (`x-api-key` or a bearer token)"),
        (status = 402, description = "The balance does not cover the worst case (`billing_error`)"),
        (status = 403, description = "The plan does not include the model"),
        (status = 404, description = "No such model"),
        (status = 429, description = "The provider is rate limiting (`Retry-After`)"),
        (status = 502, description = "The provider failed; nothing was charged"),
    ))]
pub async fn messages(state: web::Data<ApiState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    match handle(state, req, body).await {
        Ok(response) => response,
        Err(err) => error(&err),
    }
}

async fn handle(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, GatewayError> {
    let caller = authenticate(&req).await?;
    let (request, messages) = parse(&body)?;
    if request.max_tokens == 0 {
        return Err(GatewayError::invalid("max_tokens: must be at least 1"));
    }
    let call = admit(
        &state,
        &caller,
        &request.model,
        messages,
        Some(request.max_tokens),
    )
    .await?;
    let id = format!("msg_{}", call.admitted.id);
    let model = request.model.clone();
    if !request.stream.unwrap_or(false) {
        let (answer, record) = run(state.clone(), call).await?;
        return Ok(HttpResponse::Ok()
            .insert_header(("x-tollgate-credits", record.credits.to_string()))
            .insert_header(("x-tollgate-cost-micros", record.cost_micros.to_string()))
            .json(json!({
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": answer.content}],
                "stop_reason": stop_reason(&answer.finish_reason), "stop_sequence": null,
                "usage": usage(record.usage),
            })));
    }
    let rx = start_stream(state.clone(), call).await?;
    let mut started = false;
    let mut block_open = false;
    let mut finish = String::from("stop");
    let mut input = TokenUsage::default();
    let events = tokio_stream(rx).map(move |relay| {
        let mut out: Vec<Bytes> = Vec::new();
        let mut start = |out: &mut Vec<Bytes>, input: TokenUsage| {
            if !started {
                started = true;
                out.push(event(
                    "message_start",
                    &json!({"type": "message_start", "message": {
                        "id": id, "type": "message", "role": "assistant", "model": model,
                        "content": [], "stop_reason": null, "stop_sequence": null,
                        "usage": usage(TokenUsage { output: 0, ..input }),
                    }}),
                ));
            }
        };
        match relay {
            Relay::Chunk(ChatChunk::Usage(u)) => {
                input = u;
                start(&mut out, input);
            }
            Relay::Chunk(ChatChunk::Text(text)) => {
                start(&mut out, input);
                if !block_open {
                    block_open = true;
                    out.push(event(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}}),
                    ));
                }
                out.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            Relay::Chunk(ChatChunk::Finish(reason)) => finish = reason,
            Relay::Settled(record) => {
                start(&mut out, input);
                if block_open {
                    out.push(event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": 0}),
                    ));
                }
                out.push(event(
                    "message_delta",
                    &json!({"type": "message_delta",
                            "delta": {"stop_reason": stop_reason(&finish), "stop_sequence": null},
                            "usage": usage(record.usage)}),
                ));
                out.push(event("message_stop", &json!({"type": "message_stop"})));
            }
            Relay::Failed(err) => {
                out.push(event(
                    "error",
                    &json!({"type": "error", "error": {"type": "api_error", "message": err.message}}),
                ));
            }
        }
        futures_util::stream::iter(out.into_iter().map(Ok::<_, actix_web::Error>))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(events.flatten()))
}
