//! Sending a provider request: retries on 429 and 5xx (and on a connection that fails)
//! with exponential backoff, before any output has been received; errors mapped to
//! [`LlmError`] without the provider's key.

use std::time::Duration;

use billing_core::ports::LlmError;
use reqwest::{RequestBuilder, Response, StatusCode};

/// How a provider is reached.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The first wait; each next one doubles.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(250),
        }
    }
}

fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The message a provider put in its error body (OpenAI's, Anthropic's and Google's all
/// nest it under `error.message`).
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

/// Sends the request built by `build` until it succeeds, is refused, or attempts run out.
pub(crate) async fn send(
    provider: &str,
    retry: &Retry,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response, LlmError> {
    let mut wait = retry.backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= retry.attempts.max(1);
        let error = match build().send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                let after = retry_after(&response);
                let body = response.text().await.unwrap_or_default();
                match status {
                    StatusCode::TOO_MANY_REQUESTS => {
                        if !last {
                            let pause = after.map_or(wait, |s| Duration::from_secs(s.min(10)));
                            tokio::time::sleep(pause).await;
                            wait *= 2;
                            continue;
                        }
                        return Err(LlmError::RateLimited { retry_after: after });
                    }
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(LlmError::Unavailable(format!(
                            "{provider} refused the configured key (HTTP {})",
                            status.as_u16()
                        )));
                    }
                    s if s.is_server_error() => {
                        LlmError::Unavailable(format!("{provider} answered HTTP {}", s.as_u16()))
                    }
                    s => {
                        return Err(LlmError::Rejected(format!(
                            "{provider} (HTTP {}): {}",
                            s.as_u16(),
                            message(&body)
                        )));
                    }
                }
            }
            Err(err) => {
                LlmError::Unavailable(format!("cannot reach {provider}: {}", err.without_url()))
            }
        };
        if last {
            return Err(error);
        }
        tracing::warn!(provider, attempt, %error, "provider call failed; retrying");
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

/// A stream read error, as the gateway sees it.
pub(crate) fn broken(provider: &str, err: &reqwest::Error) -> LlmError {
    LlmError::Unavailable(format!(
        "{provider} stream broke: {}",
        err.to_string().chars().take(200).collect::<String>()
    ))
}

/// A provider's server-sent events as chat chunks: each event's data read as `T` and
/// handed to `each` (`[DONE]` markers skipped); a broken connection or an unreadable
/// event ends the stream with an error.
pub(crate) fn chat_stream<T, F>(
    provider: &'static str,
    response: Response,
    mut each: F,
) -> billing_core::ports::ChatStream
where
    T: serde::de::DeserializeOwned,
    F: FnMut(T) -> Vec<Result<billing_core::ports::ChatChunk, LlmError>> + Send + 'static,
{
    use futures_util::StreamExt;
    let stream = crate::sse::events(response).flat_map(move |event| {
        let chunks = match event {
            Err(err) => vec![Err(broken(provider, &err))],
            Ok(event) if event.data.trim() == "[DONE]" => Vec::new(),
            Ok(event) => match serde_json::from_str::<T>(&event.data) {
                Ok(parsed) => each(parsed),
                Err(err) => vec![Err(LlmError::Unavailable(format!(
                    "{provider}: unreadable stream event: {err}"
                )))],
            },
        };
        futures_util::stream::iter(chunks)
    });
    Box::pin(stream)
}
