//! Layered configuration.
//!
//! Layers, later ones overriding earlier ones key by key:
//!
//! 1. `config/default.toml` (the copy built into the binary if the file is absent);
//! 2. `config/{TOLLGATE_ENV}.toml`, if present (`TOLLGATE_ENV` defaults to `development`);
//! 3. files named with `--config FILE` or in `TOLLGATE_CONFIG` (comma-separated);
//! 4. environment variables `TOLLGATE__SECTION__KEY` (`TOLLGATE__SERVER__PORT=9000`).
//!
//! The `config/` folder is `TOLLGATE_CONFIG_DIR` if set. The catalog is different: it is
//! taken whole from the last file that has a `[catalog]` table, never merged key by key, so
//! a product's file replaces the default catalog instead of adding plans to it.

use std::fmt;
use std::path::{Path, PathBuf};

use billing_core::catalog::Catalog;
use serde::Deserialize;

/// The built-in copy of `config/default.toml`.
const EMBEDDED_DEFAULT: &str = include_str!("../../../config/default.toml");

/// Everything but the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP server.
    pub server: ServerSettings,
    /// Logging.
    pub log: LogSettings,
    /// The database.
    pub database: DatabaseSettings,
    /// The ledger.
    pub ledger: LedgerSettings,
    /// Sign-in and tokens.
    pub auth: AuthSettings,
    /// HTTP limits.
    pub http: HttpSettings,
    /// Outgoing mail.
    pub mail: MailSettings,
    /// Where rate limits and failed sign-ins are counted.
    #[serde(default)]
    pub limits: LimitsSettings,
    /// How long records kept only for idempotency live.
    #[serde(default)]
    pub retention: RetentionSettings,
    /// The payment provider.
    #[serde(default)]
    pub payments: PaymentsSettings,
    /// The LLM providers behind the gateway.
    #[serde(default)]
    pub llm: LlmSettings,
    /// The task queue: its workers, the key external workers use, and its webhooks.
    #[serde(default)]
    pub tasks: TaskSettings,
    /// The catalog is read separately (see the module docs); this only lets the key exist.
    #[serde(default, rename = "catalog")]
    _catalog: Option<serde::de::IgnoredAny>,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    pub shutdown_timeout_seconds: u64,
    /// Worker threads; the number of cores if omitted.
    #[serde(default)]
    pub workers: Option<usize>,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for machines.
    pub format: LogFormat,
    /// A tracing filter (`info`, `app=debug,actix_web=info`); `RUST_LOG` overrides it.
    pub level: String,
}

/// The database.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path` (the default, `sqlite://data/tollgate.db`) or `postgres://…`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Seconds to wait for a connection.
    pub connect_timeout_seconds: u64,
    /// SQLite: milliseconds a writer waits for the lock.
    pub busy_timeout_ms: u64,
    /// Milliseconds an account, its subscription and its balance may be served from
    /// memory; another instance's changes are seen within this (0: no cache).
    pub read_cache_ms: u64,
    /// PostgreSQL: apply pending migrations when `serve` starts (SQLite always does).
    pub auto_migrate: bool,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl DatabaseSettings {
    /// The store's connection settings.
    pub fn config(&self) -> store_diesel::DatabaseConfig {
        store_diesel::DatabaseConfig {
            url: self.url.clone(),
            pool_size: self.pool_size,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_seconds),
            busy_timeout: std::time::Duration::from_millis(self.busy_timeout_ms),
            read_cache: std::time::Duration::from_millis(self.read_cache_ms),
        }
    }
}

pub use store_diesel::redact_url;

/// The ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Seconds a hold lasts when the caller does not say.
    pub hold_ttl_seconds: u64,
    /// Seconds between sweeps of expired holds.
    pub hold_sweep_seconds: u64,
    /// Seconds between passes that grant daily and monthly allowances.
    pub allowance_sweep_seconds: u64,
}

/// Sign-in and tokens. The two secrets come only from the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Seconds an access token (JWT) lives.
    pub access_token_ttl_seconds: u64,
    /// Days a refresh token lives.
    pub refresh_token_ttl_days: u64,
    /// Seconds a sign-in found live is trusted before it is checked again (0: always).
    #[serde(default = "default_session_check_seconds")]
    pub session_check_seconds: u64,
    /// Passwords hashed or verified at once (each argon2id hash takes 7 MiB).
    #[serde(default = "default_hashing_threads")]
    pub hashing_threads: usize,
    /// Seconds a sign-in waits for a hashing thread before it is answered 503.
    #[serde(default = "default_hashing_queue_seconds")]
    pub hashing_queue_seconds: u64,
    /// The HS256 signing secret, at least 32 bytes (`TOLLGATE__AUTH__JWT_SECRET`).
    #[serde(default)]
    pub jwt_secret: Option<secrecy::SecretString>,
    /// A key that authenticates as an admin (`TOLLGATE__AUTH__ADMIN_API_KEY`).
    #[serde(default)]
    pub admin_api_key: Option<secrecy::SecretString>,
    /// A bearer token that may read `GET /metrics` (`TOLLGATE__AUTH__METRICS_TOKEN`); the
    /// admin API key may too.
    #[serde(default)]
    pub metrics_token: Option<secrecy::SecretString>,
    /// External identity providers whose tokens are accepted, by name
    /// (`[auth.identity.clerk]`); none by default.
    #[serde(default)]
    pub identity: std::collections::BTreeMap<String, IdentityProviderSettings>,
}

/// An external identity provider (Clerk, Supabase): whose RS256/ES256 tokens, checked
/// against the keys published at `jwks_url`, sign users in (see docs/configuration.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderSettings {
    /// The exact `iss` of its tokens (`https://clerk.example.com`).
    pub issuer: String,
    /// Its JWKS document (`https://clerk.example.com/.well-known/jwks.json`).
    pub jwks_url: String,
    /// Accepted `aud` values; empty: not checked (Clerk's session tokens carry none).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `azp` values (Clerk: the front end's origins); empty: not checked.
    #[serde(default)]
    pub authorized_parties: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_identity_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Seconds fetched keys are used before they are fetched again.
    #[serde(default = "default_identity_cache_seconds")]
    pub cache_seconds: u64,
    /// The least seconds between two fetches (a token with an unknown `kid` asks for one).
    #[serde(default = "default_identity_refresh_cooldown_seconds")]
    pub refresh_cooldown_seconds: u64,
    /// Whether the provider verifies every address it puts in a token's `email` (Clerk's
    /// primary addresses); otherwise only an address with `email_verified: true` is used.
    #[serde(default)]
    pub trust_email: bool,
}

fn default_identity_leeway_seconds() -> u64 {
    5
}

fn default_identity_cache_seconds() -> u64 {
    3600
}

fn default_identity_refresh_cooldown_seconds() -> u64 {
    30
}

fn default_session_check_seconds() -> u64 {
    2
}

fn default_hashing_threads() -> usize {
    2
}

fn default_hashing_queue_seconds() -> u64 {
    10
}

/// Outgoing mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    /// The folder the default mailer writes messages into.
    pub outbox_dir: PathBuf,
}

/// HTTP limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// The largest JSON body accepted.
    pub body_limit_bytes: usize,
    /// Requests per IP for callers without credentials; omitted means unlimited.
    #[serde(default)]
    pub anonymous_rate_limit: Option<billing_core::catalog::RateLimit>,
    /// Requests per user when their plan sets no `rate_limit`; omitted means unlimited.
    #[serde(default)]
    pub user_rate_limit: Option<billing_core::catalog::RateLimit>,
    /// Browser origins allowed to call the API (CORS); empty allows none.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// Addresses or ranges (`10.0.0.0/8`) of reverse proxies whose `X-Forwarded-For` names
    /// the client; empty trusts none (the peer address is the client).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// Where rate limits and failed sign-ins are counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// `memory` (each process counts alone) or `redis` (every instance counts together).
    pub store: LimitStore,
    /// `redis://[:password@]host:port[/db]`, for `store = "redis"`; set it in the
    /// environment (`TOLLGATE__LIMITS__REDIS_URL`) when it holds a password.
    #[serde(default)]
    pub redis_url: Option<secrecy::SecretString>,
    /// The prefix of every Redis key.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            store: LimitStore::Memory,
            redis_url: None,
            redis_prefix: default_redis_prefix(),
        }
    }
}

fn default_redis_prefix() -> String {
    "tollgate:".to_owned()
}

/// The payment provider (Stripe).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSettings {
    /// Webhook signing secret(s), `whsec_…`, comma-separated while one is rolled
    /// (`TOLLGATE__PAYMENTS__STRIPE_WEBHOOK_SECRET`; environment only).
    #[serde(default)]
    pub stripe_webhook_secret: Option<secrecy::SecretString>,
    /// Stripe's secret API key, `sk_…` or a restricted `rk_…`
    /// (`TOLLGATE__PAYMENTS__STRIPE_SECRET_KEY` or `STRIPE_SECRET_KEY`; environment only).
    /// With it, payments go to Stripe; without it, to the local adapter.
    #[serde(default)]
    pub stripe_secret_key: Option<secrecy::SecretString>,
    /// Stripe's API address (another only for a stand-in in tests).
    pub stripe_api_base: String,
    /// Seconds one call to Stripe may take.
    pub stripe_timeout_seconds: u64,
    /// How old a webhook's signature may be, in seconds.
    pub webhook_tolerance_seconds: i64,
    /// Attempts to apply an event before it is left failed (dead-lettered).
    pub webhook_max_attempts: u32,
    /// Milliseconds between passes of the worker that applies stored events.
    pub webhook_sweep_ms: u64,
    /// Without a Stripe key, checkouts go to Tollgate's own pay/decline page, which takes
    /// no money (refused in production).
    pub local_adapter: bool,
    /// The server's address as a browser reaches it (the local pay page's links).
    pub public_url: String,
    /// Origins a checkout or the portal may send customers back to: `scheme://host:port`,
    /// or `scheme://host` for any port.
    pub return_origins: Vec<String>,
}

impl PaymentsSettings {
    /// Whether checkouts go to the local adapter (no Stripe key, and it is allowed).
    pub fn uses_local_adapter(&self) -> bool {
        self.local_adapter && self.stripe_secret_key.is_none()
    }
}

impl Default for PaymentsSettings {
    fn default() -> Self {
        Self {
            stripe_webhook_secret: None,
            stripe_secret_key: None,
            stripe_api_base: payments_stripe::DEFAULT_API_BASE.into(),
            stripe_timeout_seconds: 20,
            webhook_tolerance_seconds: 300,
            webhook_max_attempts: 8,
            webhook_sweep_ms: 2000,
            local_adapter: true,
            public_url: "http://127.0.0.1:8080".into(),
            return_origins: vec!["http://localhost".into(), "http://127.0.0.1".into()],
        }
    }
}

/// The LLM providers behind the gateway. A provider without a key is answered by the
/// deterministic mock (the log says so).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// OpenAI's key (`OPENAI_API_KEY` or `TOLLGATE__LLM__OPENAI_API_KEY`; environment only).
    #[serde(default)]
    pub openai_api_key: Option<secrecy::SecretString>,
    /// Anthropic's key (`ANTHROPIC_API_KEY` or `TOLLGATE__LLM__ANTHROPIC_API_KEY`).
    #[serde(default)]
    pub anthropic_api_key: Option<secrecy::SecretString>,
    /// Gemini's key (`GEMINI_API_KEY` or `TOLLGATE__LLM__GEMINI_API_KEY`).
    #[serde(default)]
    pub gemini_api_key: Option<secrecy::SecretString>,
    /// OpenAI's API (or any OpenAI-compatible upstream), up to `/v1`.
    pub openai_base_url: String,
    /// Anthropic's API.
    pub anthropic_base_url: String,
    /// Gemini's API.
    pub gemini_base_url: String,
    /// Attempts of a call the provider rate limits or fails before answering (at least 1).
    pub attempts: u32,
    /// The first wait between attempts, in milliseconds (each next one doubles).
    pub backoff_ms: u64,
    /// Seconds to connect to a provider.
    pub connect_timeout_seconds: u64,
    /// The mock's delay before answering, in milliseconds.
    pub mock_latency_ms: u64,
    /// Words per streamed chunk of the mock.
    pub mock_chunk_words: usize,
    /// The mock's delay between streamed chunks, in milliseconds.
    pub mock_chunk_delay_ms: u64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            openai_api_key: None,
            anthropic_api_key: None,
            gemini_api_key: None,
            openai_base_url: "https://api.openai.com/v1".into(),
            anthropic_base_url: "https://api.anthropic.com".into(),
            gemini_base_url: "https://generativelanguage.googleapis.com".into(),
            attempts: 3,
            backoff_ms: 250,
            connect_timeout_seconds: 10,
            mock_latency_ms: 0,
            mock_chunk_words: 4,
            mock_chunk_delay_ms: 0,
        }
    }
}

/// The task queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// The key a product's own workers send as `Authorization: Bearer` to the worker routes
    /// (`TOLLGATE__TASKS__WORKER_KEY`; environment only; at least 24 characters). Unset: the
    /// worker routes answer 401.
    #[serde(default)]
    pub worker_key: Option<secrecy::SecretString>,
    /// Workers inside `tollgate serve` that run `llm` tasks (0: none; run `tollgate worker`).
    pub workers: u32,
    /// How often an idle worker looks for tasks, in milliseconds.
    pub poll_ms: u64,
    /// How often leases and deadlines are swept, in seconds.
    pub sweep_seconds: u64,
    /// Where finished tasks are announced (`POST`, JSON, signed); unset: no webhooks.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The secret webhooks are signed with (`TOLLGATE__TASKS__WEBHOOK_SECRET`; environment
    /// only; required with `webhook_url`).
    #[serde(default)]
    pub webhook_secret: Option<secrecy::SecretString>,
    /// Attempts of one delivery before it is given up.
    pub webhook_max_attempts: u32,
    /// Seconds to wait for the endpoint's answer.
    pub webhook_timeout_seconds: u64,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            worker_key: None,
            workers: 2,
            poll_ms: 200,
            sweep_seconds: 5,
            webhook_url: None,
            webhook_secret: None,
            webhook_max_attempts: 10,
            webhook_timeout_seconds: 10,
        }
    }
}

/// How long records kept only for idempotency live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days an idempotency key (ledger, API, quota event) is remembered (at least 1).
    pub idempotency_days: u32,
    /// Seconds between prunings.
    pub sweep_seconds: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            idempotency_days: 30,
            sweep_seconds: 3600,
        }
    }
}

/// Where limits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitStore {
    /// In this process.
    Memory,
    /// In Redis, shared by every instance.
    Redis,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// The copy of default.toml built into the binary.
    Embedded,
    /// The environment.
    Environment,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Embedded => f.write_str("built-in config/default.toml"),
            Self::Environment => f.write_str("environment"),
        }
    }
}

/// One configuration problem: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file (or the environment).
    pub origin: Origin,
    /// The key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {key}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Where to look for configuration.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The `config/` folder.
    pub dir: PathBuf,
    /// `TOLLGATE_ENV`.
    pub environment: String,
    /// Extra files, in order.
    pub files: Vec<PathBuf>,
}

impl Sources {
    /// From the process environment, plus files given on the command line.
    pub fn from_env(cli_files: &[PathBuf]) -> Self {
        let dir = std::env::var_os("TOLLGATE_CONFIG_DIR")
            .map_or_else(|| PathBuf::from("config"), PathBuf::from);
        let environment =
            std::env::var("TOLLGATE_ENV").unwrap_or_else(|_| "development".to_owned());
        let mut files: Vec<PathBuf> = std::env::var("TOLLGATE_CONFIG")
            .ok()
            .map(|list| {
                list.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| PathBuf::from(s.trim()))
                    .collect()
            })
            .unwrap_or_default();
        files.extend(cli_files.iter().cloned());
        Self {
            dir,
            environment,
            files,
        }
    }
}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Settings.
    pub settings: Settings,
    /// The validated catalog.
    pub catalog: Catalog,
    /// The file the catalog came from.
    pub catalog_origin: Origin,
    /// Every file layer used, in order.
    pub layers: Vec<Origin>,
    /// `TOLLGATE_ENV`.
    pub environment: String,
}

struct Layer {
    origin: Origin,
    text: String,
}

fn read_layers(sources: &Sources) -> Result<Vec<Layer>, Vec<ConfigProblem>> {
    let mut layers = Vec::new();
    let mut problems = Vec::new();
    let default = sources.dir.join("default.toml");
    match std::fs::read_to_string(&default) {
        Ok(text) => layers.push(Layer {
            origin: Origin::File(default),
            text,
        }),
        Err(_) => layers.push(Layer {
            origin: Origin::Embedded,
            text: EMBEDDED_DEFAULT.to_owned(),
        }),
    }
    let env_file = sources.dir.join(format!("{}.toml", sources.environment));
    if env_file.is_file() {
        push_file(&mut layers, &mut problems, &env_file);
    }
    for file in &sources.files {
        push_file(&mut layers, &mut problems, file);
    }
    if problems.is_empty() {
        Ok(layers)
    } else {
        Err(problems)
    }
}

fn push_file(layers: &mut Vec<Layer>, problems: &mut Vec<ConfigProblem>, path: &Path) {
    match std::fs::read_to_string(path) {
        Ok(text) => layers.push(Layer {
            origin: Origin::File(path.to_owned()),
            text,
        }),
        Err(err) => problems.push(ConfigProblem {
            origin: Origin::File(path.to_owned()),
            key: None,
            message: format!("cannot read: {err}"),
        }),
    }
}

/// Loads settings and catalog, and validates both. Every problem found is returned, each
/// with its file and key.
pub fn load(sources: &Sources) -> Result<Loaded, Vec<ConfigProblem>> {
    let layers = read_layers(sources)?;
    let mut problems = Vec::new();

    // Each file must be valid TOML on its own, so errors name the file and line.
    let mut parsed = Vec::new();
    for layer in &layers {
        match layer.text.parse::<toml::Table>() {
            Ok(table) => parsed.push(table),
            Err(err) => {
                problems.push(ConfigProblem {
                    origin: layer.origin.clone(),
                    key: None,
                    message: one_line(&err.to_string()),
                });
                parsed.push(toml::Table::new());
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // Secrets come only from the environment; a file that holds one is refused before
    // anything else, and the value is never repeated.
    for (layer, table) in layers.iter().zip(&parsed) {
        for key in secret_keys(table) {
            problems.push(ConfigProblem {
                origin: layer.origin.clone(),
                key: Some(key.clone()),
                message: format!(
                    "secrets are read only from the environment; remove it here and set {}",
                    env_var(&key)
                ),
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let settings = load_settings(&layers).map_err(|p| vec![p]);
    let catalog = load_catalog(&layers, &parsed);
    match (settings, catalog) {
        (Ok(settings), Ok((catalog, catalog_origin))) => {
            let mut extra = validate_settings(&settings, &layers, &sources.environment);
            if extra.is_empty() {
                Ok(Loaded {
                    settings,
                    catalog,
                    catalog_origin,
                    layers: layers.into_iter().map(|l| l.origin).collect(),
                    environment: sources.environment.clone(),
                })
            } else {
                problems.append(&mut extra);
                Err(problems)
            }
        }
        (settings, catalog) => {
            problems.extend(settings.err().into_iter().flatten());
            problems.extend(catalog.err().into_iter().flatten());
            Err(problems)
        }
    }
}

fn load_settings(layers: &[Layer]) -> Result<Settings, ConfigProblem> {
    let mut builder = config::Config::builder();
    for layer in layers {
        let source = config::File::from_str(&layer.text, config::FileFormat::Toml);
        builder = builder.add_source(source);
    }
    builder = builder.add_source(
        config::Environment::with_prefix("TOLLGATE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true),
    );
    let built = builder.build().map_err(|err| problem_from(&err, layers))?;
    let mut settings = built
        .try_deserialize::<Settings>()
        .map_err(|err| problem_from(&err, layers))?;
    // The providers' own names for their keys, as their SDKs read them.
    for (var, slot) in [
        ("OPENAI_API_KEY", &mut settings.llm.openai_api_key),
        ("ANTHROPIC_API_KEY", &mut settings.llm.anthropic_api_key),
        ("GEMINI_API_KEY", &mut settings.llm.gemini_api_key),
    ] {
        if slot.is_none()
            && let Ok(key) = std::env::var(var)
            && !key.trim().is_empty()
        {
            *slot = Some(key.trim().to_owned().into());
        }
    }
    // Stripe's own name for the key, as its libraries and CLI read it.
    if settings.payments.stripe_secret_key.is_none()
        && let Ok(key) = std::env::var("STRIPE_SECRET_KEY")
        && !key.trim().is_empty()
    {
        settings.payments.stripe_secret_key = Some(key.trim().to_owned().into());
    }
    Ok(settings)
}

/// Turns a `config` error into a problem naming the key and the layer that set it last.
fn problem_from(err: &config::ConfigError, layers: &[Layer]) -> ConfigProblem {
    let text = err.to_string();
    let key = match err {
        config::ConfigError::Type { key: Some(key), .. } => Some(key.clone()),
        _ => extract_key(&text),
    };
    let origin = key
        .as_deref()
        .map_or(Origin::Environment, |k| origin_of(k, layers));
    ConfigProblem {
        origin,
        key,
        message: one_line(&text),
    }
}

/// The key in a message like "missing field `port` for key `server`".
fn extract_key(message: &str) -> Option<String> {
    let start = message.find("for key `")? + "for key `".len();
    let end = message[start..].find('`')? + start;
    Some(message[start..end].to_owned())
}

/// Which layer set `key` last: the environment if a variable names it, else the last file
/// that has it (or, for a missing key, the file of its nearest existing parent).
fn origin_of(key: &str, layers: &[Layer]) -> Origin {
    if std::env::var_os(env_var(key)).is_some() {
        return Origin::Environment;
    }
    let parts: Vec<&str> = key.split('.').collect();
    for depth in (1..=parts.len()).rev() {
        for layer in layers.iter().rev() {
            if let Ok(table) = layer.text.parse::<toml::Table>()
                && lookup(&table, &parts[..depth]).is_some()
            {
                return layer.origin.clone();
            }
        }
    }
    layers
        .last()
        .map_or(Origin::Environment, |l| l.origin.clone())
}

fn lookup<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(*first)?;
    if rest.is_empty() {
        return Some(value);
    }
    lookup(value.as_table()?, rest)
}

fn load_catalog(
    layers: &[Layer],
    parsed: &[toml::Table],
) -> Result<(Catalog, Origin), Vec<ConfigProblem>> {
    let Some(layer) = layers
        .iter()
        .zip(parsed)
        .rev()
        .find_map(|(layer, table)| table.contains_key("catalog").then_some(layer))
    else {
        return Err(vec![ConfigProblem {
            origin: layers.last().map_or(Origin::Embedded, |l| l.origin.clone()),
            key: Some("catalog".into()),
            message: "no file defines a [catalog]".into(),
        }]);
    };
    let origin = layer.origin.clone();
    // Deserialize from the file's own text so errors point at its lines.
    let catalog = match toml::from_str::<CatalogOnly>(&layer.text) {
        Ok(file) => file.catalog,
        Err(err) => {
            return Err(vec![ConfigProblem {
                origin,
                key: None,
                message: describe_toml_error(&err, &layer.text),
            }]);
        }
    };
    match catalog.validate("catalog") {
        Ok(()) => Ok((catalog, origin)),
        Err(errors) => Err(errors
            .into_iter()
            .map(|e| ConfigProblem {
                origin: origin.clone(),
                key: Some(e.key),
                message: e.message,
            })
            .collect()),
    }
}

/// Reads only the catalog of a file; its other sections are the settings' business.
#[derive(Deserialize)]
struct CatalogOnly {
    catalog: Catalog,
}

fn describe_toml_error(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().to_owned();
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Whether keys may be fetched from `url`: over TLS, or from this machine (tests, a
/// sidecar).
fn is_https_or_loopback(url: &str) -> bool {
    if url
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty())
    {
        return true;
    }
    url.strip_prefix("http://").is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    })
}

fn validate_settings(
    settings: &Settings,
    layers: &[Layer],
    environment: &str,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if let Err(err) = tracing_subscriber::EnvFilter::try_new(&settings.log.level) {
        problems.push(ConfigProblem {
            origin: origin_of("log.level", layers),
            key: Some("log.level".into()),
            message: format!("not a valid log filter: {err}"),
        });
    }
    if settings.server.host.trim().is_empty() {
        problems.push(ConfigProblem {
            origin: origin_of("server.host", layers),
            key: Some("server.host".into()),
            message: "must not be empty".into(),
        });
    }
    let db = &settings.database;
    if !(db.url.starts_with("sqlite:")
        || db.url.starts_with("postgres://")
        || db.url.starts_with("postgresql://"))
    {
        problems.push(ConfigProblem {
            origin: origin_of("database.url", layers),
            key: Some("database.url".into()),
            message: format!(
                "`{}` is neither sqlite://PATH nor postgres://…",
                redact_url(&db.url)
            ),
        });
    }
    for (i, proxy) in settings.http.trusted_proxies.iter().enumerate() {
        if let Err(message) = proxy.parse::<http_api::limits::IpRange>() {
            let key = format!("http.trusted_proxies[{i}]");
            problems.push(ConfigProblem {
                origin: origin_of("http.trusted_proxies", layers),
                key: Some(key),
                message,
            });
        }
    }
    if settings.limits.store == LimitStore::Redis && settings.limits.redis_url.is_none() {
        problems.push(ConfigProblem {
            origin: origin_of("limits.store", layers),
            key: Some("limits.redis_url".into()),
            message: "store = \"redis\" needs a redis_url (TOLLGATE__LIMITS__REDIS_URL)".into(),
        });
    }
    if settings.retention.idempotency_days == 0 || settings.retention.sweep_seconds == 0 {
        problems.push(ConfigProblem {
            origin: origin_of("retention", layers),
            key: Some("retention".into()),
            message: "idempotency_days and sweep_seconds must be at least 1".into(),
        });
    }
    if settings.payments.uses_local_adapter() && environment == "production" {
        problems.push(ConfigProblem {
            origin: origin_of("payments.local_adapter", layers),
            key: Some("payments.local_adapter".into()),
            message: "the local payment adapter takes no money and is refused in production".into(),
        });
    }
    for (i, origin) in settings.payments.return_origins.iter().enumerate() {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(['/', '?', '#', '@', '\\'])) {
            problems.push(ConfigProblem {
                origin: origin_of("payments.return_origins", layers),
                key: Some(format!("payments.return_origins[{i}]")),
                message: format!("`{origin}` is not an origin (scheme://host[:port])"),
            });
        }
    }
    if settings.payments.webhook_sweep_ms < 50 {
        problems.push(ConfigProblem {
            origin: origin_of("payments.webhook_sweep_ms", layers),
            key: Some("payments.webhook_sweep_ms".into()),
            message: "must be at least 50: each period of a scheduled job is a row".into(),
        });
    }
    for (name, provider) in &settings.auth.identity {
        let key = format!("auth.identity.{name}");
        if provider.issuer.trim().is_empty() {
            problems.push(ConfigProblem {
                origin: origin_of(&key, layers),
                key: Some(format!("{key}.issuer")),
                message: "must not be empty".into(),
            });
        }
        if !is_https_or_loopback(&provider.jwks_url) {
            problems.push(ConfigProblem {
                origin: origin_of(&key, layers),
                key: Some(format!("{key}.jwks_url")),
                message: format!(
                    "`{}` must be an https:// URL (http:// only on 127.0.0.1 or localhost)",
                    provider.jwks_url
                ),
            });
        }
    }
    if db.pool_size == 0 {
        problems.push(ConfigProblem {
            origin: origin_of("database.pool_size", layers),
            key: Some("database.pool_size".into()),
            message: "must be at least 1".into(),
        });
    }
    if settings.ledger.hold_ttl_seconds == 0
        || settings.ledger.hold_sweep_seconds == 0
        || settings.ledger.allowance_sweep_seconds == 0
    {
        problems.push(ConfigProblem {
            origin: origin_of("ledger", layers),
            key: Some("ledger".into()),
            message: "hold_ttl_seconds, hold_sweep_seconds and allowance_sweep_seconds must be at least 1".into(),
        });
    }
    {
        use secrecy::ExposeSecret;
        let auth = &settings.auth;
        if auth
            .jwt_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().len() < 32)
        {
            problems.push(ConfigProblem {
                origin: Origin::Environment,
                key: Some("auth.jwt_secret".into()),
                message: "must be at least 32 bytes (set TOLLGATE__AUTH__JWT_SECRET)".into(),
            });
        }
        if auth.jwt_secret.is_none() && environment == "production" {
            problems.push(ConfigProblem {
                origin: Origin::Environment,
                key: Some("auth.jwt_secret".into()),
                message: "is required in production: set TOLLGATE__AUTH__JWT_SECRET to at least 32 random bytes".into(),
            });
        }
        if auth
            .admin_api_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 24)
        {
            problems.push(ConfigProblem {
                origin: Origin::Environment,
                key: Some("auth.admin_api_key".into()),
                message: "must be at least 24 characters (set TOLLGATE__AUTH__ADMIN_API_KEY)"
                    .into(),
            });
        }
        let tasks = &settings.tasks;
        if tasks
            .worker_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 24)
        {
            problems.push(ConfigProblem {
                origin: Origin::Environment,
                key: Some("tasks.worker_key".into()),
                message: "must be at least 24 characters (set TOLLGATE__TASKS__WORKER_KEY)".into(),
            });
        }
        if let Some(url) = &tasks.webhook_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.push(ConfigProblem {
                    origin: origin_of("tasks", layers),
                    key: Some("tasks.webhook_url".into()),
                    message: "must be an http(s) URL".into(),
                });
            }
            if tasks
                .webhook_secret
                .as_ref()
                .is_none_or(|k| k.expose_secret().len() < 24)
            {
                problems.push(ConfigProblem {
                    origin: Origin::Environment,
                    key: Some("tasks.webhook_secret".into()),
                    message: "must be set, at least 24 characters, with tasks.webhook_url (set TOLLGATE__TASKS__WEBHOOK_SECRET)".into(),
                });
            }
        }
        if tasks.poll_ms == 0 || tasks.sweep_seconds == 0 || tasks.webhook_max_attempts == 0 {
            problems.push(ConfigProblem {
                origin: origin_of("tasks", layers),
                key: Some("tasks".into()),
                message: "poll_ms, sweep_seconds and webhook_max_attempts must be at least 1"
                    .into(),
            });
        }
        if auth.access_token_ttl_seconds == 0 || auth.refresh_token_ttl_days == 0 {
            problems.push(ConfigProblem {
                origin: origin_of("auth", layers),
                key: Some("auth".into()),
                message: "token lifetimes must be at least 1".into(),
            });
        }
    }
    for (key, rule) in [
        (
            "http.anonymous_rate_limit",
            &settings.http.anonymous_rate_limit,
        ),
        ("http.user_rate_limit", &settings.http.user_rate_limit),
    ] {
        if rule
            .as_ref()
            .is_some_and(|r| r.requests == 0 || r.per_seconds == 0)
        {
            problems.push(ConfigProblem {
                origin: origin_of(key, layers),
                key: Some(key.into()),
                message: "requests and per_seconds must be at least 1".into(),
            });
        }
    }
    for (i, origin) in settings.http.cors_allowed_origins.iter().enumerate() {
        if !(origin.starts_with("http://") || origin.starts_with("https://"))
            || origin.ends_with('/')
        {
            problems.push(ConfigProblem {
                origin: origin_of("http.cors_allowed_origins", layers),
                key: Some(format!("http.cors_allowed_origins[{i}]")),
                message: format!("`{origin}` is not an origin like https://app.example.com"),
            });
        }
    }
    if settings.http.body_limit_bytes < 1024 {
        problems.push(ConfigProblem {
            origin: origin_of("http.body_limit_bytes", layers),
            key: Some("http.body_limit_bytes".into()),
            message: "must be at least 1024".into(),
        });
    }
    if settings.server.workers == Some(0) {
        problems.push(ConfigProblem {
            origin: origin_of("server.workers", layers),
            key: Some("server.workers".into()),
            message: "must be at least 1".into(),
        });
    }
    problems
}

/// Whether a settings key names a secret (by its last segment).
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "api_key",
        "apikey",
        "private_key",
    ]
    .iter()
    .any(|word| name.ends_with(word))
}

/// Keys of a file's settings (the catalog excluded) that name secrets.
fn secret_keys(table: &toml::Table) -> Vec<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) => walk(&key, inner, out),
                _ if is_secret_name(name) => out.push(key),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for (name, value) in table {
        if name == "catalog" {
            continue;
        }
        match value {
            toml::Value::Table(inner) => walk(name, inner, &mut out),
            _ if is_secret_name(name) => out.push(name.clone()),
            _ => {}
        }
    }
    out
}

/// The environment variable that sets a key.
pub fn env_var(key: &str) -> String {
    format!("TOLLGATE__{}", key.replace('.', "__").to_uppercase())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
