//! A stand-in identity provider for the external-identity tests: it publishes a JWKS over
//! HTTP (wiremock) and signs Clerk- or Supabase-shaped tokens with the test-only keys in
//! `fixtures/identity/`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A signing key of the fixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The provider's RS256 key before a rotation.
    RsaA,
    /// Its RS256 key after the rotation.
    RsaB,
    /// An ES256 key.
    EcA,
    /// A key the provider never published.
    Forged,
}

impl Key {
    fn private(self) -> EncodingKey {
        match self {
            Self::RsaA => EncodingKey::from_rsa_der(include_bytes!("fixtures/identity/rsa_a.der")),
            Self::RsaB => EncodingKey::from_rsa_der(include_bytes!("fixtures/identity/rsa_b.der")),
            Self::EcA => EncodingKey::from_ec_der(include_bytes!("fixtures/identity/ec_a.der")),
            Self::Forged => {
                EncodingKey::from_rsa_der(include_bytes!("fixtures/identity/rsa_forged.der"))
            }
        }
    }

    fn public(self) -> &'static str {
        match self {
            Self::RsaA => include_str!("fixtures/identity/rsa_a.jwk.json"),
            Self::RsaB => include_str!("fixtures/identity/rsa_b.jwk.json"),
            Self::EcA => include_str!("fixtures/identity/ec_a.jwk.json"),
            Self::Forged => include_str!("fixtures/identity/rsa_forged.jwk.json"),
        }
    }

    /// The algorithm this key signs with.
    pub fn alg(self) -> Algorithm {
        if self == Self::EcA {
            Algorithm::ES256
        } else {
            Algorithm::RS256
        }
    }

    /// Its public half as a JWK published under `kid`.
    pub fn jwk(self, kid: &str) -> Value {
        let mut jwk: Value = serde_json::from_str(self.public()).expect("fixture JWK");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(format!("{:?}", self.alg()));
        jwk
    }
}

/// A provider serving its JWKS at `/.well-known/jwks.json`.
#[derive(Debug)]
pub struct Provider {
    server: MockServer,
}

impl Provider {
    /// A provider publishing `keys` (key, kid).
    pub async fn start(keys: &[(Key, &str)]) -> Self {
        let provider = Self {
            server: MockServer::start().await,
        };
        provider.publish(keys).await;
        provider
    }

    /// Replaces the published keys (a rotation).
    pub async fn publish(&self, keys: &[(Key, &str)]) {
        self.server.reset().await;
        let body = json!({ "keys": keys.iter().map(|(k, kid)| k.jwk(kid)).collect::<Vec<_>>() });
        Mock::given(method("GET"))
            .and(path("/.well-known/jwks.json"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.server)
            .await;
    }

    /// Its issuer (`iss`).
    pub fn issuer(&self) -> String {
        self.server.uri()
    }

    /// Where its keys are.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.server.uri())
    }

    /// How many times its JWKS was fetched since the last [`publish`](Self::publish).
    pub async fn fetches(&self) -> usize {
        self.server
            .received_requests()
            .await
            .map_or(0, |requests| requests.len())
    }

    /// Settings that make a server accept this provider's tokens.
    pub fn settings(&self) -> app::settings::IdentityProviderSettings {
        app::settings::IdentityProviderSettings {
            issuer: self.issuer(),
            jwks_url: self.jwks_url(),
            audiences: Vec::new(),
            authorized_parties: Vec::new(),
            leeway_seconds: 0,
            cache_seconds: 3600,
            refresh_cooldown_seconds: 0,
            trust_email: false,
        }
    }

    /// A session token as Clerk issues it: `sub`, `iss`, `azp`, `sid`, a minute to live,
    /// plus `extra` claims (an `email` added by a session-token template).
    pub fn token(&self, key: Key, kid: &str, subject: &str, extra: Value) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "iss": self.issuer(),
            "sub": subject,
            "azp": "http://localhost:5173",
            "sid": "sess_2abc",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 60,
        });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            for (name, value) in extra {
                claims.insert(name.clone(), value.clone());
            }
        }
        sign(key, kid, &claims)
    }
}

/// `claims` signed with `key`, its header naming `kid`.
pub fn sign(key: Key, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(key.alg());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.private()).expect("sign")
}
