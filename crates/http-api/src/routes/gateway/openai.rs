//! `POST /v1/chat/completions` in OpenAI's shapes, streaming and not, for any model of the
//! catalog whatever its provider. Errors come in OpenAI's `{"error": {…}}` shape; the
//! call's credits and cost come back in `x-tollgate-credits` and `x-tollgate-cost-micros`
//! (and, streamed, in the usage chunk's `tollgate` member when usage is asked for).

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use billing_core::catalog::TokenUsage;
use billing_core::gateway::LlmCall;
use billing_core::ports::{ChatChunk, ChatMessage};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ErrorKind, GatewayError, Relay, admit, authenticate, created, run, start_stream, text_of,
};
use crate::state::ApiState;

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct Request {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

/// An error in OpenAI's shape.
pub(crate) fn error(err: &GatewayError) -> HttpResponse {
    let (kind, code) = match err.kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", Value::Null),
        ErrorKind::Authentication => ("authentication_error", json!("invalid_api_key")),
        ErrorKind::Permission => ("permission_error", json!("model_not_in_plan")),
        ErrorKind::NotFound => ("invalid_request_error", json!("model_not_found")),
        ErrorKind::InsufficientCredits => ("insufficient_credits", json!("insufficient_credits")),
        ErrorKind::RateLimited => ("rate_limit_error", json!("rate_limit_exceeded")),
        ErrorKind::Upstream => ("upstream_error", json!("upstream_error")),
        ErrorKind::Internal => ("api_error", Value::Null),
    };
    err.respond(json!({"error": {
        "message": err.message, "type": kind, "param": null, "code": code,
    }}))
}

fn usage(usage: TokenUsage) -> Value {
    let prompt = usage.input + usage.cached_input;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    })
}

fn charged(call: &LlmCall) -> Value {
    json!({"credits": call.credits, "cost_micros": call.cost_micros,
           "currency": call.currency.code()})
}

fn parse(body: &[u8]) -> Result<(Request, Vec<ChatMessage>), GatewayError> {
    let request: Request = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid(format!("invalid request body: {e}")))?;
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(GatewayError::invalid(format!(
                    "`messages[{i}].role`: `{other}` is not supported (system, developer, user, assistant)"
                )));
            }
        };
        messages.push(ChatMessage {
            role: role.to_owned(),
            content: text_of(&m.content, &format!("messages[{i}].content"))?,
        });
    }
    Ok((request, messages))
}

/// OpenAI's chat completions, for any model of `GET /v1/models`, streaming (`stream:
/// true`, server-sent events) or not; paid by holding the worst case first.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "compat", security(("bearer" = [])),
    request_body(content = Object, description = "OpenAI's chat completion request"),
    responses(
        (status = 200, description = "OpenAI's chat completion (or chunks, streamed)"),
        (status = 400, description = "A malformed request (OpenAI's error shape)"),
        (status = 401, description = "No or a bad credential"),
        (status = 402, description = "The balance does not cover the worst case (`error.balance`, `error.reserved`)"),
        (status = 403, description = "The plan does not include the model"),
        (status = 404, description = "No such model"),
        (status = 429, description = "The provider is rate limiting (`Retry-After`)"),
        (status = 502, description = "The provider failed; nothing was charged"),
    ))]
pub async fn chat_completions(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
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
    let max = request.max_completion_tokens.or(request.max_tokens);
    let call = admit(&state, &caller, &request.model, messages, max).await?;
    let model = request.model.clone();
    let id = format!("chatcmpl-{}", call.admitted.id);
    let created = created(&state);
    if !request.stream.unwrap_or(false) {
        let (answer, record) = run(state.clone(), call).await?;
        return Ok(HttpResponse::Ok()
            .insert_header(("x-tollgate-credits", record.credits.to_string()))
            .insert_header(("x-tollgate-cost-micros", record.cost_micros.to_string()))
            .json(json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": answer.content, "refusal": null},
                             "logprobs": null, "finish_reason": answer.finish_reason}],
                "usage": usage(record.usage),
                "service_tier": null, "system_fingerprint": null,
            })));
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let rx = start_stream(state.clone(), call).await?;
    let chunk = move |choices: Value, extra: Option<(&str, Value)>| {
        let mut body = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                              "model": model, "system_fingerprint": null, "choices": choices});
        if let Some((key, value)) = extra {
            body[key] = value;
        }
        Bytes::from(format!("data: {body}\n\n"))
    };
    let mut first = true;
    let events = tokio_stream(rx).map(move |relay| {
        let mut out: Vec<Bytes> = Vec::new();
        match relay {
            Relay::Chunk(ChatChunk::Text(text)) => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                first = false;
                out.push(chunk(
                    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
                    None,
                ));
            }
            Relay::Chunk(ChatChunk::Finish(reason)) => {
                if first {
                    first = false;
                    out.push(chunk(
                        json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "logprobs": null, "finish_reason": null}]),
                        None,
                    ));
                }
                out.push(chunk(
                    json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]),
                    None,
                ));
            }
            Relay::Chunk(ChatChunk::Usage(_)) => {}
            Relay::Settled(record) => {
                if include_usage {
                    let mut u = usage(record.usage);
                    u["tollgate"] = charged(&record);
                    out.push(chunk(json!([]), Some(("usage", u))));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Relay::Failed(err) => {
                let body = json!({"error": {"message": err.message, "type": "upstream_error",
                                            "param": null, "code": "upstream_error"}});
                out.push(Bytes::from(format!("data: {body}\n\n")));
            }
        }
        futures_util::stream::iter(out.into_iter().map(Ok::<_, actix_web::Error>))
    });
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(events.flatten()))
}

/// A channel's receiver as a stream.
pub(crate) fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
