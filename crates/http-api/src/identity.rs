//! External identity providers (Clerk, Supabase): a bearer token signed by a configured
//! provider's key is accepted in place of Tollgate's own access token.
//!
//! The rules:
//! - Only RS256 and ES256, and only with a key of the matching type from the provider's
//!   JWKS, picked by the token's `kid`. A key of any other kind in the JWKS (`oct`, `enc`
//!   keys, other curves) is ignored, so a token can never be checked with an HMAC secret.
//! - `iss` must be a configured issuer exactly; `aud` must be one of the configured
//!   audiences when any are configured; `azp` one of the authorized parties when any are
//!   configured (Clerk puts the front end's origin there); `exp` is required and `nbf`
//!   honoured, with the provider's leeway.
//! - Keys are fetched on first use and kept for `cache_for`. A token naming a `kid` the
//!   cache does not hold triggers a refresh (that is how a rotation arrives), but at most one
//!   per `refresh_cooldown` per provider: a stream of forged `kid`s costs one fetch, not one
//!   per request. A failed fetch keeps the keys already held.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use billing_core::usecases::ExternalIdentity;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ApiError;

/// Where JWKS documents come from (the app fetches them over HTTPS; tests serve their own).
#[async_trait::async_trait]
pub trait JwksSource: Send + Sync + std::fmt::Debug {
    /// The body of the document at `url`, or why it could not be had.
    async fn fetch(&self, url: &str) -> Result<String, String>;
}

/// One provider, as configured.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// A name for logs (`clerk`).
    pub name: String,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    /// Where its public keys are published.
    pub jwks_url: String,
    /// Accepted `aud` values; empty: `aud` is not checked (Clerk's session tokens have none).
    pub audiences: Vec<String>,
    /// Accepted `azp` values; empty: `azp` is not checked.
    pub authorized_parties: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How long fetched keys are used before they are fetched again.
    pub cache_for: Duration,
    /// The least time between two fetches of its JWKS.
    pub refresh_cooldown: Duration,
    /// Whether every `email` its tokens carry is verified, `email_verified` or not (Clerk's
    /// primary addresses are); otherwise only one marked `email_verified: true` is used.
    pub trust_email: bool,
}

/// The configured providers and their cached keys.
#[derive(Debug)]
pub struct ExternalIdentities {
    providers: Vec<Provider>,
    source: Arc<dyn JwksSource>,
}

#[derive(Debug)]
struct Provider {
    config: ProviderConfig,
    keys: RwLock<Keys>,
    /// Held while fetching, so that concurrent misses fetch once.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, VerifyKey>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct VerifyKey {
    key: DecodingKey,
    alg: Algorithm,
}

/// The claims read from a provider's token.
#[derive(Debug, Deserialize)]
struct ProviderClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

/// Only `iss`, read before the signature is checked, to pick the provider whose keys
/// check it.
#[derive(Debug, Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: Option<String>,
}

fn invalid() -> ApiError {
    crate::auth::invalid_token()
}

impl ExternalIdentities {
    /// Providers whose keys come from `source`.
    pub fn new(configs: Vec<ProviderConfig>, source: Arc<dyn JwksSource>) -> Self {
        Self {
            providers: configs
                .into_iter()
                .map(|config| Provider {
                    config,
                    keys: RwLock::default(),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            source,
        }
    }

    /// No providers: only Tollgate's own tokens are accepted.
    pub fn none() -> Self {
        #[derive(Debug)]
        struct Nowhere;
        #[async_trait::async_trait]
        impl JwksSource for Nowhere {
            async fn fetch(&self, _: &str) -> Result<String, String> {
                Err("no identity provider is configured".into())
            }
        }
        Self::new(Vec::new(), Arc::new(Nowhere))
    }

    /// The identity a provider's token vouches for; `None` when the token is not an RS256
    /// or ES256 token (Tollgate's own HS256 tokens go their own way), or no provider is
    /// configured. A token that claims a provider and fails any check is refused.
    pub async fn verify(&self, token: &str) -> Result<Option<ExternalIdentity>, ApiError> {
        if self.providers.is_empty() {
            return Ok(None);
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Ok(None);
        }
        let issuer = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
            .ok()
            .and_then(|c| c.iss)
            .ok_or_else(invalid)?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.config.issuer == issuer)
            .ok_or_else(invalid)?;
        let kid = header.kid.ok_or_else(invalid)?;
        let Some(key) = provider.key(&kid, self.source.as_ref()).await else {
            tracing::info!(provider = %provider.config.name, kid = %kid, "token with a key the provider does not publish");
            return Err(invalid());
        };
        if key.alg != header.alg {
            return Err(invalid());
        }
        let claims = jsonwebtoken::decode::<ProviderClaims>(
            token,
            &key.key,
            &provider.config.validation(key.alg),
        )
        .map_err(crate::auth::token_error)?
        .claims;
        let parties = &provider.config.authorized_parties;
        if !parties.is_empty() && !claims.azp.as_ref().is_some_and(|azp| parties.contains(azp)) {
            return Err(invalid());
        }
        if claims.sub.trim().is_empty() || claims.sub.len() > 255 {
            return Err(invalid());
        }
        // An address the provider has not verified could be anyone's: it is not taken, unless
        // the provider verifies every address it puts in a token.
        let verified = claims.email_verified.unwrap_or(false) || provider.config.trust_email;
        Ok(Some(ExternalIdentity {
            issuer: claims.iss,
            subject: claims.sub,
            email: claims.email.filter(|_| verified),
            email_verified: verified,
            name: claims.name,
        }))
    }
}

impl ProviderConfig {
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.issuer]);
        if self.audiences.is_empty() {
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        } else {
            validation.set_audience(&self.audiences);
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        }
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        validation
    }
}

impl Provider {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key `kid` names: from the cache while it is fresh, else after a refresh (one
    /// per cooldown); a stale key is still used when the refresh fails.
    async fn key(&self, kid: &str, source: &dyn JwksSource) -> Option<VerifyKey> {
        let attempted = {
            let keys = self.read();
            let fresh = keys
                .fetched
                .is_some_and(|at| at.elapsed() < self.config.cache_for);
            if fresh && let Some(key) = keys.by_kid.get(kid) {
                return Some(key.clone());
            }
            keys.attempted
        };
        let may_fetch = attempted.is_none_or(|at| at.elapsed() >= self.config.refresh_cooldown);
        if may_fetch {
            let _one_at_a_time = self.fetching.lock().await;
            // Whoever held the lock before may have just fetched.
            if self.read().attempted == attempted {
                self.refresh(source).await;
            }
        }
        self.read().by_kid.get(kid).cloned()
    }

    async fn refresh(&self, source: &dyn JwksSource) {
        let fetched = source.fetch(&self.config.jwks_url).await;
        let now = Instant::now();
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.attempted = Some(now);
        match fetched.and_then(|body| parse_jwks(&body)) {
            Ok(by_kid) => {
                tracing::info!(provider = %self.config.name, keys = by_kid.len(), "identity provider keys fetched");
                keys.by_kid = by_kid;
                keys.fetched = Some(now);
            }
            Err(err) => {
                tracing::warn!(provider = %self.config.name, error = %err, "could not fetch the identity provider's keys; keeping the ones held");
            }
        }
    }
}

/// The signing keys of a JWKS document, by `kid`: RSA keys for RS256 and P-256 keys for
/// ES256; anything else (and any key without a `kid`) is left out.
fn parse_jwks(body: &str) -> Result<HashMap<String, VerifyKey>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_str(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    Ok(document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                return None;
            }
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((kid, VerifyKey { key, alg }))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Served {
        body: Mutex<String>,
        fetches: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl JwksSource for Served {
        async fn fetch(&self, _: &str) -> Result<String, String> {
            *self.fetches.lock().unwrap() += 1;
            Ok(self.body.lock().unwrap().clone())
        }
    }

    #[test]
    fn only_signing_keys_of_the_two_algorithms_are_kept() {
        let rsa = r#"{"kty":"RSA","kid":"r1","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
        let ec = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"06z575rgmtBxYMMe_YIWM_RXFZjJ8POeKmbUPfGrGYM","y":"nYZX5RNFMjBcznCCsjZVeWqKOIL-wYWl_ZCbxqf6Auk"}"#;
        let body = format!(
            r#"{{"keys":[{rsa},{ec},
            {{"kty":"oct","kid":"h1","k":"c2VjcmV0"}},
            {{"kty":"RSA","kid":"x1","use":"enc","n":"AQAB","e":"AQAB"}},
            {{"kty":"RSA","n":"AQAB","e":"AQAB"}},
            {{"kty":"OKP","kid":"d1","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}},
            {{"kty":"weird","kid":"w1"}}]}}"#
        );
        let keys = parse_jwks(&body).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["e1", "r1"]);
        assert_eq!(keys["r1"].alg, Algorithm::RS256);
        assert_eq!(keys["e1"].alg, Algorithm::ES256);
        assert!(parse_jwks("{}").is_err());
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_most_once_per_cooldown() {
        let served = Arc::new(Served::default());
        *served.body.lock().unwrap() = r#"{"keys":[]}"#.into();
        let provider = Provider {
            config: ProviderConfig {
                name: "test".into(),
                issuer: "https://issuer.example".into(),
                jwks_url: "https://issuer.example/jwks".into(),
                audiences: vec![],
                authorized_parties: vec![],
                leeway: Duration::ZERO,
                cache_for: Duration::from_secs(600),
                refresh_cooldown: Duration::from_secs(600),
                trust_email: false,
            },
            keys: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        };
        for _ in 0..5 {
            assert!(provider.key("forged", served.as_ref()).await.is_none());
        }
        assert_eq!(
            *served.fetches.lock().unwrap(),
            1,
            "one fetch, not one per token"
        );
    }
}
