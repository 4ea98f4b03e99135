//! Google's Gemini API: `POST {base}/v1beta/models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse` for streaming; the key goes in `x-goog-api-key`, never
//! in the URL.
//!
//! Usage as Gemini reports it (`usageMetadata`): `promptTokenCount` includes the cached
//! `cachedContentTokenCount`; `candidatesTokenCount` excludes the reasoning
//! (`thoughtsTokenCount`), which is billed as output, so Tollgate's `output` is their sum.
//! A stream repeats the metadata; the last one is the total.

use async_trait::async_trait;
use billing_core::catalog::TokenUsage;
use billing_core::ports::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, LlmError, LlmProvider,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::http::{Retry, chat_stream, send};

/// Gemini.
#[derive(Debug, Clone)]
pub struct Gemini {
    client: reqwest::Client,
    base_url: String,
    key: SecretString,
    retry: Retry,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl From<UsageMetadata> for TokenUsage {
    fn from(u: UsageMetadata) -> Self {
        TokenUsage {
            input: u
                .prompt_token_count
                .saturating_sub(u.cached_content_token_count),
            cached_input: u.cached_content_token_count,
            output: u.candidates_token_count + u.thoughts_token_count,
            reasoning: u.thoughts_token_count,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
}

impl Response {
    fn text(&self) -> String {
        self.candidates
            .first()
            .and_then(|c| c.content.as_ref())
            .map(|c| {
                c.parts
                    .iter()
                    .filter(|p| p.thought != Some(true))
                    .filter_map(|p| p.text.as_deref())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn finish(&self) -> Option<String> {
        self.candidates
            .first()
            .and_then(|c| c.finish_reason.as_deref())
            .map(|r| if r == "MAX_TOKENS" { "length" } else { "stop" }.to_owned())
    }
}

impl Gemini {
    /// Gemini at `base_url` (`https://generativelanguage.googleapis.com`).
    pub fn new(client: reqwest::Client, base_url: &str, key: SecretString, retry: Retry) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            retry,
        }
    }

    fn body(request: &ChatRequest) -> serde_json::Value {
        let system: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| json!({"text": m.content}))
            .collect();
        let contents: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role != "system")
            .map(|m| {
                let role = if m.role == "assistant" {
                    "model"
                } else {
                    "user"
                };
                json!({"role": role, "parts": [{"text": m.content}]})
            })
            .collect();
        let mut body = json!({
            "contents": contents,
            "generationConfig": {"maxOutputTokens": request.max_output_tokens},
        });
        if !system.is_empty() {
            body["systemInstruction"] = json!({"parts": system});
        }
        body
    }

    async fn post(
        &self,
        request: &ChatRequest,
        method: &str,
    ) -> Result<reqwest::Response, LlmError> {
        let url = format!(
            "{}/v1beta/models/{}:{method}",
            self.base_url, request.upstream_model
        );
        let body = Self::body(request);
        send("gemini", &self.retry, || {
            self.client
                .post(&url)
                .header("x-goog-api-key", self.key.expose_secret())
                .json(&body)
        })
        .await
    }
}

#[async_trait]
impl LlmProvider for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let response: Response = self
            .post(&request, "generateContent")
            .await?
            .json()
            .await
            .map_err(|e| LlmError::Unavailable(format!("gemini: unreadable answer: {e}")))?;
        let usage = response
            .usage_metadata
            .ok_or_else(|| LlmError::Unavailable("gemini: the answer reports no usage".into()))?;
        Ok(ChatResponse {
            content: response.text(),
            finish_reason: response.finish().unwrap_or_else(|| "stop".into()),
            usage: usage.into(),
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError> {
        let response = self.post(&request, "streamGenerateContent?alt=sse").await?;
        Ok(chat_stream("gemini", response, |chunk: Response| {
            let mut out = Vec::new();
            let text = chunk.text();
            if !text.is_empty() {
                out.push(Ok(ChatChunk::Text(text)));
            }
            if let Some(usage) = chunk.usage_metadata {
                out.push(Ok(ChatChunk::Usage(usage.into())));
            }
            if let Some(reason) = chunk.finish() {
                out.push(Ok(ChatChunk::Finish(reason)));
            }
            out
        }))
    }
}
