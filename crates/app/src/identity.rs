//! The configured external identity providers, with their keys fetched over HTTPS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_api::identity::{ExternalIdentities, JwksSource, ProviderConfig};

use crate::server::StartupError;
use crate::settings::IdentityProviderSettings;

/// A JWKS document is a few kilobytes; anything much larger is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Fetches JWKS documents with a short timeout.
#[derive(Debug)]
struct HttpJwks(reqwest::Client);

#[async_trait::async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self, url: &str) -> Result<String, String> {
        let response = self
            .0
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: {status}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "GET {url}: {} bytes is not a JWKS document",
                body.len()
            ));
        }
        String::from_utf8(body.to_vec()).map_err(|_| format!("GET {url}: not UTF-8"))
    }
}

/// The providers of `auth.identity`; none configured accepts only Tollgate's own tokens.
pub fn providers(
    configured: &BTreeMap<String, IdentityProviderSettings>,
) -> Result<ExternalIdentities, StartupError> {
    if configured.is_empty() {
        return Ok(ExternalIdentities::none());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .user_agent("Tollgate-Identity/1")
        .build()
        .map_err(|e| StartupError::Identity(e.to_string()))?;
    let configs = configured
        .iter()
        .map(|(name, p)| ProviderConfig {
            name: name.clone(),
            issuer: p.issuer.clone(),
            jwks_url: p.jwks_url.clone(),
            audiences: p.audiences.clone(),
            authorized_parties: p.authorized_parties.clone(),
            leeway: Duration::from_secs(p.leeway_seconds),
            cache_for: Duration::from_secs(p.cache_seconds),
            refresh_cooldown: Duration::from_secs(p.refresh_cooldown_seconds),
            trust_email: p.trust_email,
        })
        .collect();
    Ok(ExternalIdentities::new(configs, Arc::new(HttpJwks(client))))
}
