//! What every handler can reach.

use std::sync::Arc;

use async_trait::async_trait;
use billing_core::ports::{
    ApiKeyStore, AuditStore, Mailer, QuotaStore, SessionStore, UserDataStore,
};
use billing_core::usecases::Billing;

use billing_core::ids::UserId;

use crate::auth::AuthKeys;
use crate::error::ApiError;

/// The API's dependencies, injected by the application.
pub struct ApiState {
    /// The use cases, with the catalog, stores, clock and ids they need.
    pub billing: Billing,
    /// Refresh tokens.
    pub sessions: Arc<dyn SessionStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    /// Quota meters.
    pub quotas: Arc<dyn QuotaStore>,
    /// Preferences and saved items.
    pub user_data: Arc<dyn UserDataStore>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Sends password-reset and verification mail.
    pub mailer: Arc<dyn Mailer>,
    /// Token keys and lifetimes.
    pub auth: AuthKeys,
    /// What `/ready` checks.
    pub readiness: Arc<dyn Readiness>,
    /// Rate limits and failed sign-ins.
    pub limits: crate::limits::Limits,
    /// Sign-ins (and external identities) recently found live.
    pub session_cache: crate::session_cache::SessionCache,
    /// Scheduled jobs' runs and the background queues.
    pub jobs: Arc<dyn billing_core::ports::JobStore>,
    /// The business view's aggregates.
    pub reports: Arc<dyn billing_core::ports::ReportStore>,
    /// Reward claims.
    pub rewards: Arc<dyn billing_core::ports::RewardStore>,
    /// What `/metrics` exports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// External identity providers whose tokens are accepted (Clerk, Supabase).
    pub identities: crate::identity::ExternalIdentities,
    /// The bounded pool that hashes and verifies passwords.
    pub hashing: crate::hashing::Hashing,
    /// The OpenAPI document served at `/openapi.json` (see [`crate::openapi::document`]).
    pub openapi: serde_json::Value,
    /// Checks payment webhooks; `None` when no signing secret is configured.
    pub webhook_intake: Option<Arc<dyn billing_core::ports::WebhookIntake>>,
    /// Stored payment webhooks.
    pub webhooks: Arc<dyn billing_core::ports::WebhookEventStore>,
    /// The payment provider: Stripe, or the local stand-in; `None` when neither may run
    /// (production without a Stripe key).
    pub payments: Option<Arc<dyn billing_core::ports::PaymentGateway>>,
    /// The local stand-in's page, when it is the provider.
    pub local_payments: Option<Arc<payments_local::LocalPayments>>,
    /// Origins customers may be sent back to after a checkout or the portal.
    pub return_origins: Vec<String>,
    /// The LLM providers (each real, or the mock standing in).
    pub llm: Arc<dyn billing_core::ports::LlmRouter>,
    /// Metered LLM calls.
    pub usage: Arc<dyn billing_core::ports::UsageStore>,
    /// The task queue's use cases.
    pub tasks: billing_core::usecases::Tasks,
}

impl ApiState {
    /// Ends every sign-in of a user, every API key and every outstanding reset code (a
    /// password change or reset): tokens already issued stop working on the next request.
    pub async fn end_credentials(&self, user: &UserId) -> Result<(), ApiError> {
        let now = self.billing.clock.now();
        self.sessions.revoke_user(user, now).await?;
        self.session_cache.forget_user(user);
        self.sessions
            .revoke_one_time(user, crate::routes::password::RESET, now)
            .await?;
        let keys = self.api_keys.revoke_user_keys(user, now).await?;
        tracing::info!(%user, revoked_api_keys = keys, "every credential of the user ended");
        Ok(())
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// A dependency `/ready` checks (the database, …).
#[async_trait]
pub trait Readiness: Send + Sync {
    /// Each check's name and outcome (`Err` holds a short, secret-free reason).
    async fn checks(&self) -> Vec<(&'static str, Result<(), String>)>;
    /// Facts worth showing beside the checks (`backend: sqlite`).
    fn info(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}
