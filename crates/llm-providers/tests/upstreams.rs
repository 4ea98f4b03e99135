//! Each provider against a fake upstream (wiremock) replaying its real response and
//! stream shapes: what is sent, and the usage read the way each provider reports it
//! (cached and reasoning tokens included; Anthropic's cumulative stream usage assigned,
//! not added; Gemini's last metadata the total).

use std::time::Duration;

use billing_core::catalog::TokenUsage;
use billing_core::ports::{ChatChunk, ChatMessage, ChatRequest, LlmError, LlmProvider};
use futures_util::StreamExt;
use llm_providers::{Anthropic, Gemini, OpenAi, Retry};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk-upstream-test-key";

fn request(model: &str) -> ChatRequest {
    ChatRequest {
        upstream_model: model.into(),
        messages: vec![
            ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "Hello?".into(),
            },
        ],
        max_output_tokens: 256,
    }
}

fn retry() -> Retry {
    Retry {
        attempts: 3,
        backoff: Duration::from_millis(1),
    }
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| {
            if name.is_empty() {
                format!("data: {data}\n\n")
            } else {
                format!("event: {name}\ndata: {data}\n\n")
            }
        })
        .collect()
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

async fn collect(
    provider: &dyn LlmProvider,
    req: ChatRequest,
) -> (String, Option<TokenUsage>, Option<String>) {
    let mut stream = provider.chat_stream(req).await.unwrap();
    let (mut text, mut usage, mut finish) = (String::new(), None, None);
    while let Some(chunk) = stream.next().await {
        match chunk.unwrap() {
            ChatChunk::Text(t) => text.push_str(&t),
            ChatChunk::Usage(u) => usage = Some(u),
            ChatChunk::Finish(f) => finish = Some(f),
        }
    }
    (text, usage, finish)
}

fn openai(server: &MockServer) -> OpenAi {
    OpenAi::new(
        reqwest::Client::new(),
        &format!("{}/v1", server.uri()),
        KEY.to_owned().into(),
        retry(),
    )
}

#[tokio::test]
async fn openai_usage_separates_cached_input_and_counts_reasoning() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "o4-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                      "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 192}}
        })))
        .mount(&server)
        .await;
    let answer = openai(&server).chat(request("o4-mini")).await.unwrap();
    assert_eq!(answer.content, "Hi.");
    assert_eq!(
        answer.usage,
        TokenUsage {
            input: 86,
            cached_input: 1920,
            output: 300,
            reasoning: 192
        }
    );
    let sent = body(&server.received_requests().await.unwrap()[0]);
    assert_eq!(sent["model"], "o4-mini");
    assert_eq!(sent["max_completion_tokens"], 256);
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
}

#[tokio::test]
async fn openai_streams_ask_for_usage_and_read_the_last_chunk() {
    let server = MockServer::start().await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let stream = sse(&[
        (
            "",
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        ),
        ("", chunk(json!({"content": "Hel"}), Value::Null)),
        ("", chunk(json!({"content": "lo."}), Value::Null)),
        ("", chunk(json!({}), json!("length"))),
        (
            "",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                    "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
                                              "prompt_tokens_details": {"cached_tokens": 0}}}),
        ),
    ]) + "data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(stream, "text/event-stream"))
        .mount(&server)
        .await;
    let (text, usage, finish) = collect(&openai(&server), request("gpt-4o-mini")).await;
    assert_eq!(text, "Hello.");
    assert_eq!(finish.as_deref(), Some("length"));
    assert_eq!(
        usage,
        Some(TokenUsage {
            input: 12,
            cached_input: 0,
            output: 2,
            reasoning: 0
        })
    );
    let sent = body(&server.received_requests().await.unwrap()[0]);
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn rate_limits_and_failures_are_retried_and_refusals_are_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})))
        .mount(&server)
        .await;
    assert_eq!(
        openai(&server).chat(request("m")).await.unwrap().content,
        "ok"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {"message": "max_completion_tokens is too large", "type": "invalid_request_error"}})))
        .mount(&refusing)
        .await;
    let err = openai(&refusing).chat(request("m")).await.unwrap_err();
    assert_eq!(
        err,
        LlmError::Rejected("openai (HTTP 400): max_completion_tokens is too large".into())
    );
    assert_eq!(refusing.received_requests().await.unwrap().len(), 1);

    let limited = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .mount(&limited)
        .await;
    assert_eq!(
        openai(&limited).chat(request("m")).await.unwrap_err(),
        LlmError::RateLimited {
            retry_after: Some(0)
        }
    );
    let unauthorized = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}}),
        ))
        .mount(&unauthorized)
        .await;
    let err = openai(&unauthorized).chat(request("m")).await.unwrap_err();
    assert!(!err.to_string().contains(KEY), "{err}");
}

fn anthropic(server: &MockServer) -> Anthropic {
    Anthropic::new(
        reqwest::Client::new(),
        &server.uri(),
        KEY.to_owned().into(),
        retry(),
    )
}

#[tokio::test]
async fn anthropic_sends_the_system_apart_and_counts_cache_reads_as_cached() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there."}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 2,
                      "cache_read_input_tokens": 5, "output_tokens": 20}
        })))
        .mount(&server)
        .await;
    let answer = anthropic(&server)
        .chat(request("claude-sonnet-4-20250514"))
        .await
        .unwrap();
    assert_eq!(answer.content, "Hi there.");
    assert_eq!(answer.finish_reason, "length");
    assert_eq!(
        answer.usage,
        TokenUsage {
            input: 12,
            cached_input: 5,
            output: 20,
            reasoning: 0
        }
    );
    let sent = body(&server.received_requests().await.unwrap()[0]);
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Hello?"}])
    );
    assert_eq!(sent["max_tokens"], 256);
}

#[tokio::test]
async fn anthropic_stream_usage_is_assigned_not_added() {
    let server = MockServer::start().await;
    let stream = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude",
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
                                 "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                                 "usage": {"output_tokens": 15}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(stream, "text/event-stream"))
        .mount(&server)
        .await;
    let (text, usage, finish) = collect(&anthropic(&server), request("claude")).await;
    assert_eq!(text, "Hello!");
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(
        usage,
        Some(TokenUsage {
            input: 25,
            cached_input: 3,
            output: 15,
            reasoning: 0
        })
    );
}

fn gemini(server: &MockServer) -> Gemini {
    Gemini::new(
        reqwest::Client::new(),
        &server.uri(),
        KEY.to_owned().into(),
        retry(),
    )
}

#[tokio::test]
async fn gemini_counts_thoughts_as_output_and_keeps_the_key_out_of_the_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(header("x-goog-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking…", "thought": true}, {"text": "Hi."}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 40,
                              "candidatesTokenCount": 50, "thoughtsTokenCount": 30,
                              "totalTokenCount": 180},
            "modelVersion": "gemini-2.5-flash"
        })))
        .mount(&server)
        .await;
    let answer = gemini(&server)
        .chat(request("gemini-2.5-flash"))
        .await
        .unwrap();
    assert_eq!(answer.content, "Hi.");
    assert_eq!(
        answer.usage,
        TokenUsage {
            input: 60,
            cached_input: 40,
            output: 80,
            reasoning: 30
        }
    );
    let sent = &server.received_requests().await.unwrap()[0];
    assert!(!sent.url.as_str().contains(KEY));
    let sent = body(sent);
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(
        sent["contents"],
        json!([{"role": "user", "parts": [{"text": "Hello?"}]}])
    );
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 256);
}

#[tokio::test]
async fn gemini_streams_take_the_last_metadata() {
    let server = MockServer::start().await;
    let part = |text: &str, usage: Value, finish: Option<&str>| {
        let mut candidate =
            json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        json!({"candidates": [candidate], "usageMetadata": usage})
    };
    let stream = sse(&[
        (
            "",
            part(
                "Hel",
                json!({"promptTokenCount": 9, "candidatesTokenCount": 1}),
                None,
            ),
        ),
        (
            "",
            part(
                "lo",
                json!({"promptTokenCount": 9, "candidatesTokenCount": 2}),
                None,
            ),
        ),
        (
            "",
            part(
                "!",
                json!({"promptTokenCount": 9, "candidatesTokenCount": 3}),
                Some("MAX_TOKENS"),
            ),
        ),
    ]);
    Mock::given(method("POST"))
        .and(path(
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        ))
        .and(wiremock::matchers::query_param("alt", "sse"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(stream, "text/event-stream"))
        .mount(&server)
        .await;
    let (text, usage, finish) = collect(&gemini(&server), request("gemini-2.0-flash")).await;
    assert_eq!(text, "Hello!");
    assert_eq!(finish.as_deref(), Some("length"));
    assert_eq!(
        usage,
        Some(TokenUsage {
            input: 9,
            cached_input: 0,
            output: 3,
            reasoning: 0
        })
    );
}
