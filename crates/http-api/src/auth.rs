//! Credentials: short-lived JWT access tokens, opaque refresh tokens (stored as SHA-256
//! hashes), API keys and an admin API key from the environment. Passwords are hashed in
//! [`crate::hashing`].

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use billing_core::ids::PrefixedId;
use billing_core::ids::{AccountId, UserId};
use billing_core::records::Role;
use billing_core::usecases::ExternalIdentity;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::error::ApiError;
use crate::state::ApiState;

/// Signing keys and lifetimes.
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// How long an access token lives.
    pub access_ttl: Duration,
    /// How long a refresh token lives.
    pub refresh_ttl: Duration,
    admin_key_hash: Option<[u8; 32]>,
    worker_key_hash: Option<[u8; 32]>,
    metrics_key_hash: Option<[u8; 32]>,
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKeys")
            .field("access_ttl", &self.access_ttl)
            .field("admin_key", &self.admin_key_hash.map(|_| "[set]"))
            .finish_non_exhaustive()
    }
}

impl AuthKeys {
    /// Keys from the JWT secret (at least 32 bytes) and the admin API key, if any.
    pub fn new(
        jwt_secret: &[u8],
        access_ttl: Duration,
        refresh_ttl: Duration,
        admin_api_key: Option<&str>,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "sid"]);
        Self {
            encoding: EncodingKey::from_secret(jwt_secret),
            decoding: DecodingKey::from_secret(jwt_secret),
            validation,
            access_ttl,
            refresh_ttl,
            admin_key_hash: admin_api_key.map(|key| Sha256::digest(key.as_bytes()).into()),
            worker_key_hash: None,
            metrics_key_hash: None,
        }
    }

    /// The same, accepting `worker_key` as the task workers' key.
    pub fn with_worker_key(mut self, worker_key: Option<&str>) -> Self {
        self.worker_key_hash = worker_key.map(|key| Sha256::digest(key.as_bytes()).into());
        self
    }

    /// The same, accepting `metrics_key` on `GET /metrics`.
    pub fn with_metrics_key(mut self, metrics_key: Option<&str>) -> Self {
        self.metrics_key_hash = metrics_key.map(|key| Sha256::digest(key.as_bytes()).into());
        self
    }

    /// Whether `presented` may read `/metrics`: the metrics token or the admin key.
    pub fn may_scrape(&self, presented: &str) -> bool {
        same_key(self.metrics_key_hash.as_ref(), presented) || self.is_admin_key(presented)
    }

    /// A signed access token for a user's sign-in (`session`: its refresh-token family,
    /// which every request checks is still live).
    pub fn access_token(
        &self,
        user: &UserId,
        account: &AccountId,
        role: Role,
        session: &str,
        now: OffsetDateTime,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user.to_string(),
            acc: account.to_string(),
            sid: session.to_owned(),
            role,
            iat: now.unix_timestamp(),
            exp: (now + self.access_ttl).unix_timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    fn claims(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(token_error)
    }

    fn is_admin_key(&self, presented: &str) -> bool {
        same_key(self.admin_key_hash.as_ref(), presented)
    }

    fn is_worker_key(&self, presented: &str) -> bool {
        same_key(self.worker_key_hash.as_ref(), presented)
    }
}

/// 401 `invalid_token`: the bearer token is not one Tollgate accepts.
pub(crate) fn invalid_token() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::UNAUTHORIZED,
        "invalid_token",
        "Invalid token",
        "the bearer token is not valid",
    )
}

/// Why a JWT was refused: `token_expired` when only its time ran out, else `invalid_token`.
pub(crate) fn token_error(err: jsonwebtoken::errors::Error) -> ApiError {
    match err.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "token_expired",
            "Token expired",
            "the access token has expired; refresh it",
        ),
        _ => invalid_token(),
    }
}

/// Whether `presented` hashes to `expected`, compared in constant time.
fn same_key(expected: Option<&[u8; 32]>, presented: &str) -> bool {
    let Some(expected) = expected else {
        return false;
    };
    {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare every byte whatever the first difference, so timing reveals nothing.
        digest
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// What an access token says.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    acc: String,
    /// The sign-in (refresh-token family) the token belongs to.
    sid: String,
    role: Role,
    iat: i64,
    exp: i64,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A signed-in user.
    User {
        /// The user.
        user: UserId,
        /// Their account.
        account: AccountId,
        /// Their role when the token was issued.
        role: Role,
        /// The API key they called with (`None`: a session token).
        api_key: Option<billing_core::ids::ApiKeyId>,
    },
    /// The operator's admin API key.
    AdminKey,
    /// A product's task worker, by the worker key.
    Worker,
}

impl Caller {
    /// Whether the caller may use admin routes.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Self::AdminKey
                | Self::User {
                    role: Role::Admin,
                    ..
                }
        )
    }

    /// The caller's user and account, or 403 for the admin key (which has none).
    pub fn user(&self) -> Result<(&UserId, &AccountId), ApiError> {
        match self {
            Self::User { user, account, .. } => Ok((user, account)),
            Self::AdminKey => Err(ApiError::forbidden(
                "this route needs a user's token, not the admin key",
            )),
            Self::Worker => Err(ApiError::forbidden(
                "this route needs a user's token, not the worker key",
            )),
        }
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this route is for admins"))
        }
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Self::User { user, .. } => user.to_string(),
            Self::AdminKey => "admin-key".to_owned(),
            Self::Worker => "worker-key".to_owned(),
        }
    }

    /// 403 unless the caller is a task worker.
    pub fn require_worker(&self) -> Result<(), ApiError> {
        match self {
            Self::Worker => Ok(()),
            _ => Err(ApiError::forbidden(
                "this route is for task workers (the worker key)",
            )),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { caller(&req).await })
    }
}

/// The prefix of API keys, which tells them from JWTs.
pub const API_KEY_PREFIX: &str = "tgk_";

/// Who is calling, from the request's headers: the admin key, an API key, or a JWT.
/// Resolved once per request (the rate limiter, the handler and the audit record share it).
/// A refusal of the credentials is kept too, so that the layers after the first do not check
/// them again (an external token's signature, an API key's lookup); a failure to reach the
/// store is not, and the next layer tries again.
pub async fn caller(req: &HttpRequest) -> Result<Caller, ApiError> {
    if let Some(Resolved(known)) = req.extensions().get::<Resolved>() {
        return known.clone();
    }
    let resolved = resolve(req).await;
    let settled = resolved
        .as_ref()
        .err()
        .is_none_or(|err| err.status() == actix_web::http::StatusCode::UNAUTHORIZED);
    if settled {
        req.extensions_mut().insert(Resolved(resolved.clone()));
    }
    resolved
}

/// The caller as resolved for this request.
#[derive(Debug, Clone)]
struct Resolved(Result<Caller, ApiError>);

async fn resolve(req: &HttpRequest) -> Result<Caller, ApiError> {
    let token = bearer(req)?;
    let state = req
        .app_data::<web::Data<ApiState>>()
        .ok_or_else(|| ApiError::internal("API state missing"))?;
    if token.starts_with(API_KEY_PREFIX) {
        let invalid = || {
            ApiError::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Invalid API key",
                "the API key is unknown or revoked",
            )
        };
        let key = state
            .api_keys
            .live_key(&sha256_hex(&token))
            .await?
            .ok_or_else(invalid)?;
        let user = state
            .billing
            .accounts
            .user(&key.user)
            .await?
            .ok_or_else(invalid)?;
        return Ok(Caller::User {
            user: user.id,
            account: user.account,
            role: user.role,
            api_key: Some(key.id),
        });
    }
    token_caller(state, &token).await
}

/// The header Anthropic's SDKs send the key in, accepted in place of `Authorization`.
pub const X_API_KEY: &str = "x-api-key";

/// The caller's token: `Authorization: Bearer <token>` (OpenAI's SDKs and everyone else),
/// or `x-api-key: <token>` (Anthropic's SDKs).
fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return req
            .headers()
            .get(X_API_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "send `Authorization: Bearer <token>` (or `x-api-key: <token>`)",
                )
            });
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must be `Bearer <token>`")
        })
}

async fn token_caller(state: &ApiState, token: &str) -> Result<Caller, ApiError> {
    if state.auth.is_admin_key(token) {
        return Ok(Caller::AdminKey);
    }
    if state.auth.is_worker_key(token) {
        return Ok(Caller::Worker);
    }
    if let Some(identity) = state.identities.verify(token).await? {
        return external_caller(state, identity).await;
    }
    let claims = state.auth.claims(token)?;
    let user: UserId = claims.sub.parse().map_err(|_| invalid_token())?;
    let account: AccountId = claims.acc.parse().map_err(|_| invalid_token())?;
    // The sign-in must still be live: logout, refresh-token reuse and a password change or
    // reset end it for its access tokens too, and the role is the user's current one.
    let (live_user, _, role) = match state.session_cache.get(&claims.sid) {
        Some(found) => found,
        None => {
            let (live_user, role) = state
                .sessions
                .live_session(&claims.sid)
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        actix_web::http::StatusCode::UNAUTHORIZED,
                        "session_revoked",
                        "Session ended",
                        "this sign-in has ended (signed out, or the password changed); sign in again",
                    )
                })?;
            state
                .session_cache
                .put(&claims.sid, live_user.clone(), account.clone(), role);
            (live_user, account.clone(), role)
        }
    };
    if live_user != user {
        return Err(invalid_token());
    }
    Ok(Caller::User {
        user,
        account,
        role,
        api_key: None,
    })
}

/// The user an external provider's token stands for, provisioned on its first request.
/// Remembered like a live sign-in (`auth.session_check_seconds`), so that a known subject
/// costs no database round trip.
async fn external_caller(state: &ApiState, identity: ExternalIdentity) -> Result<Caller, ApiError> {
    let cache_key = format!("external:{}", identity.qualified_subject());
    if let Some((user, account, role)) = state.session_cache.get(&cache_key) {
        return Ok(Caller::User {
            user,
            account,
            role,
            api_key: None,
        });
    }
    let (issuer, subject) = (identity.issuer.clone(), identity.subject.clone());
    let (user, created) = state.billing.provision_external(identity).await?;
    if created {
        tracing::info!(user = %user.id, account = %user.account, issuer = %issuer, "external identity provisioned");
        let record = billing_core::records::AuditRecord {
            id: billing_core::ids::AuditId::from_ulid(state.billing.ids.ulid()),
            actor: user.id.to_string(),
            action: "identity.provision".into(),
            target: Some(user.account.to_string()),
            request_id: None,
            details: serde_json::json!({ "issuer": issuer, "subject": subject }),
            at: state.billing.clock.now(),
        };
        if let Err(err) = state.audit.append(&record).await {
            tracing::warn!(error = %err, "could not record the provisioning in the audit log");
        }
    }
    state
        .session_cache
        .put(&cache_key, user.id.clone(), user.account.clone(), user.role);
    Ok(Caller::User {
        user: user.id,
        account: user.account,
        role: user.role,
        api_key: None,
    })
}

/// A new API key (`tgk_` + 256 random bits), its displayable prefix and its SHA-256 hash.
pub fn new_api_key() -> (String, String, String) {
    let bytes: [u8; 32] = rand::random();
    let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let prefix = key.chars().take(12).collect();
    let hash = sha256_hex(&key);
    (key, prefix, hash)
}

/// A new opaque refresh token (`rt_` + 256 random bits) and its SHA-256 hash.
pub fn new_refresh_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("rt_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = sha256_hex(&token);
    (token, hash)
}

/// Hex SHA-256 of a string.
pub fn sha256_hex(text: &str) -> String {
    billing_core::ledger::Fingerprint::of_bytes(text.as_bytes())
        .as_str()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use billing_core::ids::{PrefixedId, Ulid};

    #[test]
    fn access_tokens_round_trip_and_expire() {
        let keys = AuthKeys::new(
            &[7; 32],
            Duration::minutes(15),
            Duration::days(30),
            Some("adm_secret"),
        );
        let user = UserId::from_ulid(Ulid(1));
        let account = AccountId::from_ulid(Ulid(2));
        let now = OffsetDateTime::now_utc();
        let token = keys
            .access_token(&user, &account, Role::User, "fam_1", now)
            .unwrap();
        let claims = keys.claims(&token).unwrap();
        assert_eq!(claims.sub, user.to_string());
        let old = keys
            .access_token(
                &user,
                &account,
                Role::User,
                "fam_1",
                now - Duration::hours(1),
            )
            .unwrap();
        assert_eq!(keys.claims(&old).unwrap_err().code(), "token_expired");
        let other = AuthKeys::new(&[8; 32], Duration::minutes(15), Duration::days(30), None);
        assert_eq!(other.claims(&token).unwrap_err().code(), "invalid_token");
        assert!(keys.is_admin_key("adm_secret"));
        assert!(!keys.is_admin_key("adm_secreT"));
        assert!(!other.is_admin_key("adm_secret"));
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert!(a.starts_with("rt_") && a.len() > 40);
        assert_eq!(hash_a, sha256_hex(&a));
        assert_ne!(hash_a, a);
    }
}
