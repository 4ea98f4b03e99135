//! LLM providers for Tollgate's metered gateway, behind billing-core's [`LlmProvider`]
//! port: [`OpenAi`] (and any OpenAI-compatible upstream), [`Anthropic`], [`Gemini`] over
//! reqwest with rustls, and the deterministic [`MockProvider`], which stands in for any
//! provider whose key is not set.
//!
//! Each reads usage the way its provider reports it (see each module); a request that the
//! provider rate limits (429) or fails (5xx, or a broken connection) before answering is
//! retried with exponential backoff ([`Retry`]).

mod anthropic;
mod gemini;
mod http;
pub mod mock;
mod openai;
pub mod sse;
pub mod tokens;

pub use anthropic::Anthropic;
use billing_core::ports::LlmProvider;
pub use gemini::Gemini;
pub use http::Retry;
pub use mock::{MockConfig, MockProvider};
pub use openai::OpenAi;

/// One provider's settings.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The API's base URL.
    pub base_url: String,
    /// The key; without one the mock stands in.
    pub key: Option<secrecy::SecretString>,
}

/// Every provider's settings.
#[derive(Debug, Clone)]
pub struct ProvidersConfig {
    /// OpenAI (or an OpenAI-compatible upstream).
    pub openai: ProviderConfig,
    /// Anthropic.
    pub anthropic: ProviderConfig,
    /// Gemini.
    pub gemini: ProviderConfig,
    /// How the mock behaves.
    pub mock: MockConfig,
    /// Retries before an answer.
    pub retry: Retry,
    /// Per-request timeout for the whole answer (streams excepted: their first byte).
    pub connect_timeout: std::time::Duration,
}

/// The providers, by catalog name.
#[derive(Clone)]
pub struct Providers {
    /// `openai`.
    pub openai: std::sync::Arc<dyn LlmProvider>,
    /// `anthropic`.
    pub anthropic: std::sync::Arc<dyn LlmProvider>,
    /// `gemini`.
    pub gemini: std::sync::Arc<dyn LlmProvider>,
    /// `mock`.
    pub mock: std::sync::Arc<dyn LlmProvider>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("openai", &self.openai.name())
            .field("anthropic", &self.anthropic.name())
            .field("gemini", &self.gemini.name())
            .finish()
    }
}

impl Providers {
    /// The providers the configuration allows: each with a key is real; each without is
    /// the mock, and the log says so.
    pub fn new(config: &ProvidersConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mock: std::sync::Arc<dyn LlmProvider> =
            std::sync::Arc::new(MockProvider::new(config.mock.clone()));
        let pick =
            |name: &str,
             provider: &ProviderConfig,
             make: &dyn Fn(secrecy::SecretString) -> std::sync::Arc<dyn LlmProvider>| {
                match &provider.key {
                    Some(key) => {
                        tracing::info!(provider = name, base_url = %provider.base_url, "LLM provider configured");
                        make(key.clone())
                    }
                    None => {
                        tracing::warn!(
                            provider = name,
                            "no key for this LLM provider: the mock provider answers its models"
                        );
                        mock.clone()
                    }
                }
            };
        let retry = config.retry.clone();
        Ok(Self {
            openai: pick("openai", &config.openai, &|key| {
                std::sync::Arc::new(OpenAi::new(
                    client.clone(),
                    &config.openai.base_url,
                    key,
                    retry.clone(),
                ))
            }),
            anthropic: pick("anthropic", &config.anthropic, &|key| {
                std::sync::Arc::new(Anthropic::new(
                    client.clone(),
                    &config.anthropic.base_url,
                    key,
                    retry.clone(),
                ))
            }),
            gemini: pick("gemini", &config.gemini, &|key| {
                std::sync::Arc::new(Gemini::new(
                    client.clone(),
                    &config.gemini.base_url,
                    key,
                    retry.clone(),
                ))
            }),
            mock: mock.clone(),
        })
    }
}

/// Builds, on a thread of its own, the token tables of the encodings the given OpenAI models
/// use, so that the first call to each is not slowed by building one (about 7 MB for
/// `o200k_base`, see [`tokens`]). A catalog without OpenAI models builds none.
pub fn warm_tokenizers<'a>(upstream_models: impl IntoIterator<Item = &'a str>) {
    let encodings: std::collections::HashSet<tokens::Encoding> = upstream_models
        .into_iter()
        .filter_map(tokens::Encoding::for_model)
        .collect();
    if encodings.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for encoding in encodings {
            encoding.vocabulary();
        }
    });
}

/// OpenAI's models are counted as tiktoken (the tokenizer OpenAI publishes) counts them;
/// other providers publish none that runs offline, so their input is bounded by its bytes.
impl billing_core::ports::TokenCounter for Providers {
    fn count_tokens(&self, model: &billing_core::catalog::Model, text: &str) -> Option<u64> {
        if model.provider != billing_core::catalog::Provider::Openai {
            return None;
        }
        let count = tokens::Encoding::for_model(&model.upstream)?
            .vocabulary()
            .count(text)?;
        u64::try_from(count).ok()
    }
}

impl billing_core::ports::LlmRouter for Providers {
    fn route(&self, provider: billing_core::catalog::Provider) -> std::sync::Arc<dyn LlmProvider> {
        use billing_core::catalog::Provider;
        match provider {
            Provider::Openai => self.openai.clone(),
            Provider::Anthropic => self.anthropic.clone(),
            Provider::Gemini => self.gemini.clone(),
            Provider::Mock => self.mock.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use billing_core::catalog::Provider;
    use billing_core::ports::TokenCounter;

    use super::*;

    #[test]
    fn openai_models_are_counted_with_tiktoken_and_others_are_not() {
        let providers = Providers::new(&ProvidersConfig {
            openai: ProviderConfig {
                base_url: "http://127.0.0.1:1".into(),
                key: None,
            },
            anthropic: ProviderConfig {
                base_url: "http://127.0.0.1:1".into(),
                key: None,
            },
            gemini: ProviderConfig {
                base_url: "http://127.0.0.1:1".into(),
                key: None,
            },
            mock: MockConfig::default(),
            retry: Retry::default(),
            connect_timeout: std::time::Duration::from_secs(1),
        })
        .unwrap();
        let catalog = billing_core::testing::sample_catalog();
        let mut model = catalog.models.values().next().unwrap().clone();
        model.provider = Provider::Openai;
        model.upstream = "gpt-4o-mini".into();
        assert_eq!(providers.count_tokens(&model, "hello world"), Some(2));
        model.upstream = "gpt-4".into();
        assert_eq!(providers.count_tokens(&model, "hello world"), Some(2));
        model.upstream = "some-local-llama".into();
        assert_eq!(providers.count_tokens(&model, "hello world"), None);
        model.provider = Provider::Anthropic;
        model.upstream = "claude-sonnet-4-20250514".into();
        assert_eq!(providers.count_tokens(&model, "hello world"), None);
    }
}
