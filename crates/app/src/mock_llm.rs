//! `tollgate mock-llm`: the mock provider as an OpenAI-compatible HTTP server, so that the
//! gateway can be measured against calling the same mock directly (point
//! `llm.openai_base_url` at it with any `OPENAI_API_KEY`). Answers `POST
//! /v1/chat/completions`, streaming and not, with the deterministic answers of
//! `llm_providers::mock`.

use std::net::TcpListener;

use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};
use billing_core::ports::{ChatMessage, ChatRequest};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
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
}

fn usage(u: billing_core::catalog::TokenUsage) -> Value {
    json!({"prompt_tokens": u.input, "completion_tokens": u.output,
           "total_tokens": u.input + u.output, "prompt_tokens_details": {"cached_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0}})
}

async fn completions(body: Bytes) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Request>(&body) else {
        return HttpResponse::BadRequest()
            .json(json!({"error": {"message": "invalid body", "type": "invalid_request_error"}}));
    };
    let chat = ChatRequest {
        upstream_model: request.model.clone(),
        messages: request
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role.clone(),
                content: m.content.as_str().unwrap_or_default().to_owned(),
            })
            .collect(),
        max_output_tokens: request
            .max_completion_tokens
            .or(request.max_tokens)
            .unwrap_or(4096),
    };
    let (words, cut, tokens) = llm_providers::mock::answer(&chat);
    let finish = if cut { "length" } else { "stop" };
    let text = words.join(" ");
    if !request.stream.unwrap_or(false) {
        return HttpResponse::Ok().json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": usage(tokens),
        }));
    }
    let chunk = |choices: Value, usage: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
                   "model": request.model, "choices": choices, "usage": usage})
        )
    };
    let mut body = String::new();
    for (i, word) in words.iter().enumerate() {
        let content = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        body.push_str(&chunk(
            json!([{"index": 0, "delta": {"content": content}, "finish_reason": null}]),
            Value::Null,
        ));
    }
    body.push_str(&chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        Value::Null,
    ));
    body.push_str(&chunk(json!([]), usage(tokens)));
    body.push_str("data: [DONE]\n\n");
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .body(body)
}

/// The mock's server on `listener` (await it, or spawn it).
pub fn serve(listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    Ok(
        HttpServer::new(|| App::new().route("/v1/chat/completions", web::post().to(completions)))
            .listen(listener)?
            .run(),
    )
}
