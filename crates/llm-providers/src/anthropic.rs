//! Anthropic's messages API: `POST {base}/v1/messages` (`anthropic-version: 2023-06-01`),
//! streamed as server-sent events.
//!
//! Usage as Anthropic reports it: `input_tokens` excludes the cache; tokens read from the
//! cache are `cache_read_input_tokens` (Tollgate's `cached_input`) and tokens written to it
//! `cache_creation_input_tokens` (counted as input). Streaming: `message_start` carries the
//! input side, and each `message_delta` the output so far, cumulatively: each report
//! replaces the last, it is never added to it.

use async_trait::async_trait;
use billing_core::catalog::TokenUsage;
use billing_core::ports::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, LlmError, LlmProvider,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Retry, chat_stream, send};

/// The API version sent.
pub const VERSION: &str = "2023-06-01";

/// Anthropic.
#[derive(Debug, Clone)]
pub struct Anthropic {
    client: reqwest::Client,
    base_url: String,
    key: SecretString,
    retry: Retry,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl Usage {
    /// `self` with what `later` reports in its place (cumulative figures: assigned).
    fn updated(self, later: Usage) -> Usage {
        Usage {
            input_tokens: later.input_tokens.or(self.input_tokens),
            cache_read_input_tokens: later
                .cache_read_input_tokens
                .or(self.cache_read_input_tokens),
            cache_creation_input_tokens: later
                .cache_creation_input_tokens
                .or(self.cache_creation_input_tokens),
            output_tokens: later.output_tokens.or(self.output_tokens),
        }
    }

    fn tokens(self) -> TokenUsage {
        TokenUsage {
            input: self.input_tokens.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0),
            cached_input: self.cache_read_input_tokens.unwrap_or(0),
            output: self.output_tokens.unwrap_or(0),
            reasoning: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn finish(reason: &str) -> String {
    match reason {
        "max_tokens" => "length",
        _ => "stop",
    }
    .to_owned()
}

impl Anthropic {
    /// Anthropic at `base_url` (`https://api.anthropic.com`).
    pub fn new(client: reqwest::Client, base_url: &str, key: SecretString, retry: Retry) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            retry,
        }
    }

    fn body(request: &ChatRequest, stream: bool) -> serde_json::Value {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role != "system")
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body = json!({
            "model": request.upstream_model,
            "max_tokens": request.max_output_tokens,
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if stream {
            body["stream"] = json!(true);
        }
        body
    }

    async fn post(&self, body: &serde_json::Value) -> Result<reqwest::Response, LlmError> {
        let url = format!("{}/v1/messages", self.base_url);
        send("anthropic", &self.retry, || {
            self.client
                .post(&url)
                .header("x-api-key", self.key.expose_secret())
                .header("anthropic-version", VERSION)
                .json(body)
        })
        .await
    }
}

#[async_trait]
impl LlmProvider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let response = self.post(&Self::body(&request, false)).await?;
        let message: Message = response
            .json()
            .await
            .map_err(|e| LlmError::Unavailable(format!("anthropic: unreadable answer: {e}")))?;
        Ok(ChatResponse {
            content: message
                .content
                .iter()
                .filter(|b| b.kind == "text")
                .filter_map(|b| b.text.as_deref())
                .collect(),
            finish_reason: finish(message.stop_reason.as_deref().unwrap_or("end_turn")),
            usage: message.usage.tokens(),
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError> {
        let response = self.post(&Self::body(&request, true)).await?;
        let mut usage = Usage::default();
        Ok(chat_stream(
            "anthropic",
            response,
            move |e: StreamEvent| match e.kind.as_str() {
                "message_start" => {
                    usage = usage.updated(e.message.map(|m| m.usage).unwrap_or_default());
                    vec![Ok(ChatChunk::Usage(usage.tokens()))]
                }
                "content_block_delta" => e
                    .delta
                    .and_then(|d| d.text)
                    .filter(|t| !t.is_empty())
                    .map(|t| vec![Ok(ChatChunk::Text(t))])
                    .unwrap_or_default(),
                "message_delta" => {
                    let mut out = Vec::new();
                    if let Some(later) = e.usage {
                        usage = usage.updated(later);
                        out.push(Ok(ChatChunk::Usage(usage.tokens())));
                    }
                    if let Some(reason) = e.delta.and_then(|d| d.stop_reason) {
                        out.push(Ok(ChatChunk::Finish(finish(&reason))));
                    }
                    out
                }
                "error" => vec![Err(LlmError::Unavailable(format!(
                    "anthropic stream error: {}",
                    e.error.map(|v| v.to_string()).unwrap_or_default()
                )))],
                _ => Vec::new(),
            },
        ))
    }
}
