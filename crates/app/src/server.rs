//! The HTTP server and the background workers: `Application::build` connects the store,
//! migrates as configured, binds (port 0 for tests); `run_until_signal` serves until
//! SIGINT or SIGTERM, then drains in-flight requests and stops the workers.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use billing_core::catalog::Catalog;
use billing_core::ports::{Clock, IdGenerator, StoreError};
use billing_core::usecases::Billing;
use http_api::auth::AuthKeys;
use http_api::{ApiState, Readiness};
use store_diesel::{Backend, DieselStore, migrate};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::schedule::Scheduler;
use crate::settings::{Settings, redact_url};
use crate::system::{SystemClock, UlidGenerator};
use crate::workers;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be reached or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// PostgreSQL has migrations to apply and `database.auto_migrate` is off.
    #[error("the database has {} pending migration(s) ({}); run `tollgate migrate` or set database.auto_migrate = true", .0.len(), .0.join(", "))]
    PendingMigrations(Vec<String>),
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    /// The shared limit store (Redis) could not be reached.
    #[error("limits: {0}")]
    Limits(StoreError),
    /// The LLM providers' client could not be built.
    #[error("llm: {0}")]
    Llm(String),
    /// The identity providers' key client could not be built.
    #[error("identity: {0}")]
    Identity(String),
    /// The payment provider's client could not be built.
    #[error("payments: {0}")]
    Payments(#[from] billing_core::ports::PaymentError),
}

/// The configured counters of rate limits and failed sign-ins.
pub async fn connect_limiter(
    settings: &Settings,
) -> Result<Arc<dyn billing_core::ports::RateLimiter>, StartupError> {
    use crate::settings::LimitStore;
    use secrecy::ExposeSecret;
    let limits = &settings.limits;
    match (limits.store, &limits.redis_url) {
        (LimitStore::Redis, Some(url)) => {
            let limiter =
                ratelimit_redis::RedisLimiter::connect(url.expose_secret(), &limits.redis_prefix)
                    .await
                    .map_err(StartupError::Limits)?;
            tracing::info!(url = %redact_url(url.expose_secret()), "rate limits are counted in Redis");
            Ok(Arc::new(limiter))
        }
        (LimitStore::Redis, None) => Err(StartupError::Limits(StoreError::Other(
            "limits.store is redis but limits.redis_url is not set".into(),
        ))),
        (LimitStore::Memory, _) => Ok(Arc::new(http_api::limits::MemoryLimiter::default())),
    }
}

/// Connects to the configured database, applying migrations where the policy says so:
/// SQLite always migrates itself; PostgreSQL only with `database.auto_migrate`, and
/// otherwise refuses to start with pending migrations.
pub async fn connect_store(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<DieselStore, StartupError> {
    let config = settings.database.config();
    let backend = config.backend();
    if backend == Backend::Sqlite || settings.database.auto_migrate {
        let applied = migrate::run_pending(&config).await?;
        if !applied.is_empty() {
            tracing::info!(backend = backend.name(), applied = ?applied, "applied migrations");
        }
    } else {
        let pending = migrate::pending(&config).await?;
        if !pending.is_empty() {
            return Err(StartupError::PendingMigrations(pending));
        }
    }
    let ids: Arc<dyn IdGenerator> = Arc::new(UlidGenerator::default());
    // The ledger's clock is the use cases' (a test's clock moves both).
    let store = DieselStore::connect(&config, clock, ids).await?;
    tracing::info!(backend = backend.name(), url = %redact_url(&config.url), "database ready");
    Ok(store)
}

/// A bound, not yet running server, with its workers.
pub struct Application {
    port: u16,
    server: Server,
    store: DieselStore,
    stop_workers: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects the store, starts the workers, binds the listener and builds the server.
    pub async fn build(settings: &Settings, catalog: Catalog) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, catalog, Arc::new(SystemClock)).await
    }

    /// The same on another clock (tests set the time the use cases and workers see).
    pub async fn build_with_clock(
        settings: &Settings,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let store = connect_store(settings, clock.clone()).await?;
        let limiter = connect_limiter(settings).await?;
        Self::with_store(settings, catalog, store, limiter, clock)
    }

    /// The same with a store already connected.
    pub fn with_store(
        settings: &Settings,
        catalog: Catalog,
        store: DieselStore,
        limiter: Arc<dyn billing_core::ports::RateLimiter>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(api_state(
            settings,
            catalog,
            store.clone(),
            limiter,
            clock.clone(),
        )?);
        let billing = state.billing.clone();
        let mailer = state.mailer.clone();
        let scheduler = Scheduler::for_this_process(Arc::new(store.clone()), state.metrics.clone());
        state
            .metrics
            .on_scrape(Arc::new(crate::observe::StoreScrape {
                store: store.clone(),
                clock: clock.clone(),
            }));
        let (tasks, llm, usage) = (state.tasks.clone(), state.llm.clone(), state.usage.clone());
        let body_limit = settings.http.body_limit_bytes;
        let origins = settings.http.cors_allowed_origins.clone();
        let mut server = HttpServer::new(move || {
            // Outermost last: CORS, then the metrics, the request id, the rate limit, the
            // audit record, the refusal of NUL characters in the URI.
            App::new()
                .app_data(state.clone())
                .wrap(actix_web::middleware::from_fn(http_api::reject_nul))
                .wrap(actix_web::middleware::from_fn(http_api::audit))
                .wrap(actix_web::middleware::from_fn(http_api::rate_limit))
                .wrap(actix_web::middleware::from_fn(http_api::request_id))
                .wrap(actix_web::middleware::from_fn(http_api::metrics::track))
                .wrap(actix_web::middleware::Condition::new(
                    !origins.is_empty(),
                    cors(&origins),
                ))
                .configure(|cfg| http_api::configure(cfg, body_limit))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_seconds)
        .disable_signals();
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        let (stop_workers, stopped) = watch::channel(false);
        let mut workers = task_background(
            settings,
            &tasks,
            llm,
            usage,
            settings.tasks.workers,
            &stopped,
            &scheduler,
        );
        workers.extend([
            tokio::spawn(workers::expire_holds(
                scheduler.clone(),
                store.clone(),
                clock.clone(),
                Duration::from_secs(settings.ledger.hold_sweep_seconds),
                stopped.clone(),
            )),
            tokio::spawn(workers::renew_allowances(
                scheduler.clone(),
                billing.clone(),
                Duration::from_secs(settings.ledger.allowance_sweep_seconds),
                stopped.clone(),
            )),
            tokio::spawn(workers::apply_webhooks(
                scheduler.clone(),
                billing,
                Arc::new(store.clone()),
                mailer,
                settings.payments.webhook_max_attempts,
                Duration::from_millis(settings.payments.webhook_sweep_ms),
                stopped.clone(),
            )),
            tokio::spawn(workers::prune_idempotency(
                scheduler,
                store.clone(),
                clock,
                time::Duration::days(i64::from(settings.retention.idempotency_days)),
                Duration::from_secs(settings.retention.sweep_seconds),
                stopped,
            )),
        ]);
        Ok(Self {
            port,
            server,
            store,
            stop_workers,
            workers,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store the application uses.
    pub fn store(&self) -> &DieselStore {
        &self.store
    }

    /// Serves until the server is stopped.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.stop_workers.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
        self.store.flush_audit().await;
        result
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting, lets in-flight requests finish
    /// (up to `server.shutdown_timeout_seconds`) and stops the workers.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            "shutdown signal received; draining in-flight requests"
        );
        handle.stop(true).await;
        let result = server.await.map_err(std::io::Error::other)?;
        let _ = self.stop_workers.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
        self.store.flush_audit().await;
        tracing::info!("server stopped");
        result
    }
}

pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// CORS for the configured browser origins.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header;
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allowed_header("idempotency-key")
        .allowed_header("x-request-id")
        // Anthropic's SDKs send these (the gateway takes `x-api-key` like a bearer token).
        .allowed_header("x-api-key")
        .allowed_header("anthropic-version")
        .expose_headers([
            "x-request-id",
            "retry-after",
            "idempotent-replayed",
            "x-tollgate-credits",
            "x-tollgate-cost-micros",
        ])
        .max_age(3600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// The task queue's background work: `llm_workers` workers running `llm` tasks, the
/// sweeper, and the webhook sender when an endpoint is configured.
pub fn task_background(
    settings: &Settings,
    tasks: &billing_core::usecases::Tasks,
    llm: Arc<dyn billing_core::ports::LlmRouter>,
    usage: Arc<dyn billing_core::ports::UsageStore>,
    llm_workers: u32,
    stop: &watch::Receiver<bool>,
    scheduler: &Scheduler,
) -> Vec<JoinHandle<()>> {
    use crate::task_workers;
    let poll = Duration::from_millis(settings.tasks.poll_ms.max(1));
    let mut handles = task_workers::run_llm_workers(tasks, llm, usage, llm_workers, poll, stop);
    handles.push(tokio::spawn(task_workers::sweep_tasks(
        scheduler.clone(),
        tasks.clone(),
        Duration::from_secs(settings.tasks.sweep_seconds.max(1)),
        stop.clone(),
    )));
    if let (Some(url), Some(secret)) = (&settings.tasks.webhook_url, &settings.tasks.webhook_secret)
    {
        handles.push(tokio::spawn(task_workers::deliver_webhooks(
            tasks.clone(),
            task_workers::WebhookTarget {
                url: url.clone(),
                secret: secret.clone(),
                max_attempts: settings.tasks.webhook_max_attempts.max(1),
                timeout: Duration::from_secs(settings.tasks.webhook_timeout_seconds.max(1)),
            },
            poll,
            stop.clone(),
        )));
    }
    handles
}

/// The use cases over the store.
pub fn billing(
    settings: &Settings,
    catalog: Catalog,
    store: Arc<DieselStore>,
    clock: Arc<dyn Clock>,
) -> Billing {
    Billing {
        catalog: Arc::new(catalog),
        accounts: store.clone(),
        ledger: store.clone(),
        subscriptions: store.clone(),
        payments: store,
        clock,
        ids: Arc::new(UlidGenerator::default()),
        default_hold_ttl: time::Duration::seconds(
            i64::try_from(settings.ledger.hold_ttl_seconds).unwrap_or(900),
        ),
    }
}

/// Composes the API's dependencies: the use cases over the store, token keys from the
/// settings (a random JWT secret, announced, when none is configured outside production).
pub fn api_state(
    settings: &Settings,
    catalog: Catalog,
    store: DieselStore,
    limiter: Arc<dyn billing_core::ports::RateLimiter>,
    clock: Arc<dyn Clock>,
) -> Result<ApiState, StartupError> {
    use secrecy::ExposeSecret;
    let store = Arc::new(store);
    let metrics = Arc::new(http_api::metrics::Metrics::new());
    let mut billing = billing(settings, catalog, store.clone(), clock.clone());
    billing.ledger = Arc::new(crate::observe::MeteredLedger {
        inner: billing.ledger.clone(),
        metrics: metrics.clone(),
    });
    llm_providers::warm_tokenizers(
        billing
            .catalog
            .models
            .values()
            .filter(|m| m.provider == billing_core::catalog::Provider::Openai)
            .map(|m| m.upstream.as_str()),
    );
    let mut openapi = http_api::openapi::document(&billing.catalog);
    http_api::openapi::restrict_return_urls(&mut openapi, &settings.payments.return_origins);
    let (payments, local) = payment_gateway(settings, clock.clone())?;
    let auth = &settings.auth;
    let secret: Vec<u8> = match &auth.jwt_secret {
        Some(secret) => secret.expose_secret().as_bytes().to_vec(),
        None => {
            tracing::warn!(
                "TOLLGATE__AUTH__JWT_SECRET is not set: signing tokens with a random secret made at start; \
                 sessions will not survive a restart"
            );
            rand::random::<[u8; 32]>().to_vec()
        }
    };
    let keys = AuthKeys::new(
        &secret,
        time::Duration::seconds(i64::try_from(auth.access_token_ttl_seconds).unwrap_or(900)),
        time::Duration::days(i64::try_from(auth.refresh_token_ttl_days).unwrap_or(30)),
        auth.admin_api_key.as_ref().map(|k| k.expose_secret()),
    )
    .with_worker_key(
        settings
            .tasks
            .worker_key
            .as_ref()
            .map(|k| k.expose_secret()),
    )
    .with_metrics_key(auth.metrics_token.as_ref().map(|k| k.expose_secret()));
    let tasks = billing_core::usecases::Tasks {
        billing: billing.clone(),
        store: store.clone(),
        notify: settings.tasks.webhook_url.is_some(),
    };
    Ok(ApiState {
        billing,
        sessions: store.clone(),
        audit: store.clone(),
        quotas: store.clone(),
        user_data: store.clone(),
        api_keys: store.clone(),
        mailer: Arc::new(crate::mail::OutboxMailer::new(
            settings.mail.outbox_dir.clone(),
        )),
        auth: keys,
        readiness: Arc::new(StoreReadiness(store.clone())),
        limits: http_api::limits::Limits {
            anonymous: settings.http.anonymous_rate_limit.clone(),
            default_user: settings.http.user_rate_limit.clone(),
            limiter,
            trusted_proxies: settings
                .http
                .trusted_proxies
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
        },
        session_cache: http_api::session_cache::SessionCache::new(Duration::from_secs(
            auth.session_check_seconds,
        )),
        identities: crate::identity::providers(&auth.identity)?,
        metrics,
        rewards: store.clone(),
        reports: store.clone(),
        jobs: store.clone(),
        openapi,
        webhook_intake: webhook_intake(settings),
        webhooks: store.clone(),
        payments,
        local_payments: local,
        return_origins: settings.payments.return_origins.clone(),
        llm: Arc::new(llm_providers(settings)?),
        usage: store.clone(),
        tasks,
        hashing: http_api::hashing::Hashing::new(
            auth.hashing_threads,
            Duration::from_secs(auth.hashing_queue_seconds),
        ),
    })
}

/// The LLM providers: each with a key is real, each without is the mock.
pub fn llm_providers(settings: &Settings) -> Result<llm_providers::Providers, StartupError> {
    let llm = &settings.llm;
    let provider =
        |base_url: &str, key: &Option<secrecy::SecretString>| llm_providers::ProviderConfig {
            base_url: base_url.to_owned(),
            key: key.clone(),
        };
    llm_providers::Providers::new(&llm_providers::ProvidersConfig {
        openai: provider(&llm.openai_base_url, &llm.openai_api_key),
        anthropic: provider(&llm.anthropic_base_url, &llm.anthropic_api_key),
        gemini: provider(&llm.gemini_base_url, &llm.gemini_api_key),
        mock: llm_providers::MockConfig {
            latency: Duration::from_millis(llm.mock_latency_ms),
            chunk_words: llm.mock_chunk_words.max(1),
            chunk_delay: Duration::from_millis(llm.mock_chunk_delay_ms),
        },
        retry: llm_providers::Retry {
            attempts: llm.attempts.max(1),
            backoff: Duration::from_millis(llm.backoff_ms),
        },
        connect_timeout: Duration::from_secs(llm.connect_timeout_seconds.max(1)),
    })
    .map_err(StartupError::Llm)
}

/// The payment provider: Stripe when an API key is set, else the local stand-in when it is
/// allowed, else none (the payment routes answer that payments are not configured).
#[allow(clippy::type_complexity)]
fn payment_gateway(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<
    (
        Option<Arc<dyn billing_core::ports::PaymentGateway>>,
        Option<Arc<payments_local::LocalPayments>>,
    ),
    StartupError,
> {
    use secrecy::ExposeSecret;
    let payments = &settings.payments;
    if let Some(key) = &payments.stripe_secret_key {
        let stripe = payments_stripe::StripePayments::new(
            &payments_stripe::StripeConfig {
                secret_key: key.expose_secret().to_owned(),
                api_base: payments.stripe_api_base.clone(),
                timeout: Duration::from_secs(payments.stripe_timeout_seconds),
            },
            clock,
        )?;
        tracing::info!(api = %payments.stripe_api_base, "payments: Stripe");
        if payments.stripe_webhook_secret.is_none() {
            tracing::warn!(
                "payments: Stripe is on but TOLLGATE__PAYMENTS__STRIPE_WEBHOOK_SECRET is not set: \
                 POST /v1/webhooks/stripe answers 404 and no payment is applied"
            );
        }
        return Ok((Some(Arc::new(stripe)), None));
    }
    if !payments.local_adapter {
        tracing::warn!(
            "payments: no Stripe key and the local adapter is off; checkouts are refused"
        );
        return Ok((None, None));
    }
    tracing::warn!(
        public_url = %payments.public_url,
        "payments: the local adapter is on (no Stripe API key): checkouts go to \
         Tollgate's own pay/decline page and take no money"
    );
    // Sessions are signed with a key from the JWT secret (so they survive a restart when it
    // is set), else a random one.
    let key: Vec<u8> = match &settings.auth.jwt_secret {
        Some(secret) => {
            use sha2::Digest;
            sha2::Sha256::digest(format!("local-pay:{}", secret.expose_secret())).to_vec()
        }
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    let local = Arc::new(payments_local::LocalPayments::new(
        &key,
        &payments.public_url,
        clock,
    ));
    Ok((
        Some(local.clone() as Arc<dyn billing_core::ports::PaymentGateway>),
        Some(local),
    ))
}

/// Stripe's webhook check, when signing secrets are configured (several, comma-separated,
/// while one is being rolled).
fn webhook_intake(settings: &Settings) -> Option<Arc<dyn billing_core::ports::WebhookIntake>> {
    use secrecy::ExposeSecret;
    let secrets = settings.payments.stripe_webhook_secret.as_ref()?;
    let verifier = payments_stripe::WebhookVerifier::new(
        secrets.expose_secret().split(',').map(str::to_owned),
    )
    .with_tolerance(settings.payments.webhook_tolerance_seconds);
    if !verifier.is_configured() {
        return None;
    }
    tracing::info!("Stripe webhooks are verified with the configured signing secret(s)");
    Some(Arc::new(verifier))
}

/// `/ready` checks that the database answers.
struct StoreReadiness(Arc<DieselStore>);

#[async_trait::async_trait]
impl Readiness for StoreReadiness {
    async fn checks(&self) -> Vec<(&'static str, Result<(), String>)> {
        let database = self.0.ping().await.map_err(|err| {
            tracing::warn!(error = %err, "database check failed");
            match err {
                StoreError::Unavailable(_) => "cannot connect".to_owned(),
                _ => "error".to_owned(),
            }
        });
        vec![("database", database)]
    }

    fn info(&self) -> Vec<(&'static str, String)> {
        vec![("backend", self.0.backend().name().to_owned())]
    }
}
