//! OpenAI's chat completions (and any upstream that speaks them): `POST
//! {base}/chat/completions`, streamed as server-sent events with
//! `stream_options.include_usage` always set, so that the final chunk reports the usage.
//!
//! Usage as OpenAI reports it: `prompt_tokens` includes the cached
//! `prompt_tokens_details.cached_tokens` (Tollgate's `input` is the rest);
//! `completion_tokens` includes `completion_tokens_details.reasoning_tokens`.

use async_trait::async_trait;
use billing_core::catalog::TokenUsage;
use billing_core::ports::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, LlmError, LlmProvider,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Retry, chat_stream, send};

/// An OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    base_url: String,
    key: SecretString,
    retry: Retry,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: u64,
    #[serde(default)]
    reasoning_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
}

impl From<Usage> for TokenUsage {
    fn from(u: Usage) -> Self {
        let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
        TokenUsage {
            input: u.prompt_tokens.saturating_sub(cached),
            cached_input: cached,
            output: u.completion_tokens,
            reasoning: u
                .completion_tokens_details
                .map_or(0, |d| d.reasoning_tokens),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    delta: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// OpenAI's finish reasons, as Tollgate names them.
fn finish(reason: &str) -> String {
    match reason {
        "length" => "length",
        _ => "stop",
    }
    .to_owned()
}

impl OpenAi {
    /// An upstream at `base_url` (`https://api.openai.com/v1`).
    pub fn new(client: reqwest::Client, base_url: &str, key: SecretString, retry: Retry) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            retry,
        }
    }

    fn body(request: &ChatRequest, stream: bool) -> serde_json::Value {
        let mut body = json!({
            "model": request.upstream_model,
            "messages": request.messages,
            "max_completion_tokens": request.max_output_tokens,
        });
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    async fn post(&self, body: &serde_json::Value) -> Result<reqwest::Response, LlmError> {
        let url = format!("{}/chat/completions", self.base_url);
        send("openai", &self.retry, || {
            self.client
                .post(&url)
                .bearer_auth(self.key.expose_secret())
                .json(body)
        })
        .await
    }
}

#[async_trait]
impl LlmProvider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let response = self.post(&Self::body(&request, false)).await?;
        let completion: Completion = response
            .json()
            .await
            .map_err(|e| LlmError::Unavailable(format!("openai: unreadable answer: {e}")))?;
        let usage = completion
            .usage
            .ok_or_else(|| LlmError::Unavailable("openai: the answer reports no usage".into()))?;
        let choice = completion.choices.into_iter().next();
        Ok(ChatResponse {
            content: choice
                .as_ref()
                .and_then(|c| c.message.as_ref())
                .and_then(|m| m.content.clone())
                .unwrap_or_default(),
            finish_reason: finish(
                choice
                    .as_ref()
                    .and_then(|c| c.finish_reason.as_deref())
                    .unwrap_or("stop"),
            ),
            usage: usage.into(),
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError> {
        let response = self.post(&Self::body(&request, true)).await?;
        Ok(chat_stream("openai", response, |chunk: Completion| {
            let mut out = Vec::new();
            for choice in chunk.choices {
                if let Some(text) = choice.delta.and_then(|d| d.content)
                    && !text.is_empty()
                {
                    out.push(Ok(ChatChunk::Text(text)));
                }
                if let Some(reason) = choice.finish_reason {
                    out.push(Ok(ChatChunk::Finish(finish(&reason))));
                }
            }
            if let Some(usage) = chunk.usage {
                out.push(Ok(ChatChunk::Usage(usage.into())));
            }
            out
        }))
    }
}
