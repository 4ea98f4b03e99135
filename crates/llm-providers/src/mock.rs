//! The mock provider: deterministic answers computed from the input, for development,
//! tests and benchmarks, with no key and no network.
//!
//! - The reply is made of words picked by a hash of the conversation, as many as the
//!   conversation's hash says (between 8 and 40), or as a last message containing
//!   `mock:words=N` asks, cut at the output cap (then it stops with `length`). The same
//!   input always gets the same reply.
//! - Usage: input tokens are a quarter of the input's bytes, rounded up, plus 3 per
//!   message; each reply word is one output token. Nothing is cached or reasoned.
//! - Streaming reports the input's usage, sends `chunk_words` words per chunk, then the
//!   finish, then the whole usage.
//! - `latency` passes before the answer (or its first chunk), `chunk_delay` between chunks.
//! - Errors on demand: a last message containing `mock:error=429`, `=500` or `=400`
//!   fails as the provider would (rate limited, unavailable, rejected).

use std::time::Duration;

use async_trait::async_trait;
use billing_core::catalog::TokenUsage;
use billing_core::ports::{
    ChatChunk, ChatMessage, ChatRequest, ChatResponse, ChatStream, LlmError, LlmProvider,
};
use futures_util::StreamExt;

const WORDS: [&str; 32] = [
    "the",
    "ledger",
    "holds",
    "credits",
    "before",
    "every",
    "call",
    "and",
    "settles",
    "after",
    "tokens",
    "flow",
    "through",
    "a",
    "gateway",
    "that",
    "counts",
    "them",
    "exactly",
    "once",
    "plans",
    "grant",
    "allowances",
    "each",
    "period",
    "while",
    "packs",
    "add",
    "more",
    "for",
    "busy",
    "days",
];

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before the answer.
    pub latency: Duration,
    /// Words per streamed chunk (at least 1).
    pub chunk_words: usize,
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunk_words: 4,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// The mock provider.
#[derive(Debug, Clone, Default)]
pub struct MockProvider {
    config: MockConfig,
}

/// FNV-1a, 64 bits: a fixed hash, the same on every machine (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The answer the mock gives a request: its words, whether the cap cut it, and its usage.
pub fn answer(request: &ChatRequest) -> (Vec<&'static str>, bool, TokenUsage) {
    let mut seed = 0u64;
    for m in &request.messages {
        seed ^= fnv1a(m.role.as_bytes()).rotate_left(7) ^ fnv1a(m.content.as_bytes());
        seed = seed.wrapping_mul(31);
    }
    let asked = request.messages.last().and_then(|m| {
        let rest = m.content.split("mock:words=").nth(1)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<usize>().ok()
    });
    let wanted = asked.unwrap_or_else(|| 8 + usize::try_from(seed % 33).unwrap_or(0));
    let cap = usize::try_from(request.max_output_tokens).unwrap_or(usize::MAX);
    let count = wanted.min(cap);
    let mut state = seed | 1;
    let words: Vec<&'static str> = (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            WORDS[usize::try_from(state % 32).unwrap_or(0)]
        })
        .collect();
    let input: u64 = request
        .messages
        .iter()
        .map(|m| u64::try_from(m.content.len()).unwrap_or(0).div_ceil(4) + 3)
        .sum();
    let usage = TokenUsage {
        input,
        cached_input: 0,
        output: u64::try_from(count).unwrap_or(0),
        reasoning: 0,
    };
    (words, count < wanted, usage)
}

fn failure(messages: &[ChatMessage]) -> Option<LlmError> {
    let last = messages.last()?;
    if last.content.contains("mock:error=429") {
        Some(LlmError::RateLimited {
            retry_after: Some(1),
        })
    } else if last.content.contains("mock:error=500") {
        Some(LlmError::Unavailable("mock: asked to fail (500)".into()))
    } else if last.content.contains("mock:error=400") {
        Some(LlmError::Rejected("mock: asked to refuse (400)".into()))
    } else {
        None
    }
}

fn finish(cut: bool) -> String {
    if cut { "length" } else { "stop" }.to_owned()
}

impl MockProvider {
    /// A mock behaving as `config` says.
    pub fn new(config: MockConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl LlmProvider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        if let Some(err) = failure(&request.messages) {
            return Err(err);
        }
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let (words, cut, usage) = answer(&request);
        Ok(ChatResponse {
            content: words.join(" "),
            usage,
            finish_reason: finish(cut),
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError> {
        if let Some(err) = failure(&request.messages) {
            return Err(err);
        }
        let latency = self.config.latency;
        let (words, cut, usage) = answer(&request);
        let per_chunk = self.config.chunk_words.max(1);
        let mut chunks: Vec<ChatChunk> = words
            .chunks(per_chunk)
            .enumerate()
            .map(|(i, group)| {
                let text = group.join(" ");
                ChatChunk::Text(if i == 0 { text } else { format!(" {text}") })
            })
            .collect();
        // As Anthropic does: the input side first, the whole usage at the end.
        chunks.insert(0, ChatChunk::Usage(TokenUsage { output: 0, ..usage }));
        chunks.push(ChatChunk::Finish(finish(cut)));
        chunks.push(ChatChunk::Usage(usage));
        let delay = self.config.chunk_delay;
        let stream = futures_util::stream::once(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
        })
        .flat_map(move |()| futures_util::stream::iter(chunks.clone().into_iter().enumerate()))
        .then(move |(i, chunk)| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(chunk)
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str, cap: u32) -> ChatRequest {
        ChatRequest {
            upstream_model: "mock".into(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: text.into(),
            }],
            max_output_tokens: cap,
        }
    }

    #[tokio::test]
    async fn the_same_input_gets_the_same_answer_and_streams_the_same_text() {
        let mock = MockProvider::default();
        let a = mock.chat(request("hello there", 100)).await.unwrap();
        let b = mock.chat(request("hello there", 100)).await.unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a.content,
            mock.chat(request("hello!", 100)).await.unwrap().content
        );
        assert_eq!(a.usage.input, 3 + 3);
        assert_eq!(a.usage.output, a.content.split(' ').count() as u64);
        let mut text = String::new();
        let mut usage = None;
        let mut stream = mock.chat_stream(request("hello there", 100)).await.unwrap();
        while let Some(chunk) = stream.next().await {
            match chunk.unwrap() {
                ChatChunk::Text(t) => text.push_str(&t),
                ChatChunk::Usage(u) => usage = Some(u),
                ChatChunk::Finish(f) => assert_eq!(f, "stop"),
            }
        }
        assert_eq!(text, a.content);
        assert_eq!(usage, Some(a.usage));
    }

    #[tokio::test]
    async fn the_cap_cuts_the_answer_and_errors_come_on_demand() {
        let mock = MockProvider::default();
        let cut = mock.chat(request("hello there", 3)).await.unwrap();
        assert_eq!(
            (cut.usage.output, cut.finish_reason.as_str()),
            (3, "length")
        );
        let long = mock
            .chat(request("mock:words=500 please", 1000))
            .await
            .unwrap();
        assert_eq!(
            (long.usage.output, long.finish_reason.as_str()),
            (500, "stop")
        );
        assert!(matches!(
            mock.chat(request("please mock:error=429", 10)).await,
            Err(LlmError::RateLimited { .. })
        ));
        assert!(matches!(
            mock.chat_stream(request("mock:error=500", 10)).await,
            Err(LlmError::Unavailable(_))
        ));
    }
}
