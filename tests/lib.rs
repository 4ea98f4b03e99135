//! Helpers for the black-box tests: start the real server on a free port, on SQLite (a
//! temporary file) or PostgreSQL (a fresh schema, when `TOLLGATE_TEST_DATABASE_URL` is set),
//! and talk HTTP to it.

pub mod identity;

use std::path::Path;
use std::sync::Arc;

use app::Application;
use app::settings::{Sources, load};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use reqwest::{Method, Response};
use serde_json::Value;
use store_diesel::DieselStore;

/// The admin API key the test server accepts.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// The JWT secret of the test server (so tests can forge expired tokens).
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

/// The worker key every test server accepts on the worker routes.
pub const WORKER_KEY: &str = "test-worker-key-0123456789abcdef";

/// The secret test servers sign task webhooks with (when a test sets a webhook URL).
pub const TASK_WEBHOOK_SECRET: &str = "test-task-webhook-secret-0123456789";

/// The Stripe webhook signing secret of servers started with [`TestApp::with_stripe`].
pub const STRIPE_SECRET: &str = "whsec_test_0123456789abcdefghijklmnop";

/// A `Stripe-Signature` header for `body`, signed now with [`STRIPE_SECRET`].
pub fn stripe_signature(body: &str) -> String {
    stripe_signature_at(time::OffsetDateTime::now_utc().unix_timestamp(), body)
}

/// The same, signed at `at` (unix seconds: a server on a test clock checks the age
/// against its own time).
pub fn stripe_signature_at(at: i64, body: &str) -> String {
    format!(
        "t={at},v1={}",
        payments_stripe::sign(STRIPE_SECRET, at, body.as_bytes())
    )
}

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh schema in `TOLLGATE_TEST_DATABASE_URL`.
    Postgres,
}

/// Lifts every rate limit (per address, per user, per plan), so that a test measures what
/// it tests rather than the limiter; for the tweak of [`TestApp::spawn_with`].
pub fn lift_rate_limits(loaded: &mut app::settings::Loaded) {
    loaded.settings.http.anonymous_rate_limit = None;
    loaded.settings.http.user_rate_limit = None;
    for plan in loaded.catalog.plans.values_mut() {
        plan.rate_limit = None;
    }
}

/// A running server and a client for it.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The server's store, to look behind the API.
    pub store: DieselStore,
    _dir: tempfile::TempDir,
    pg_schema: Option<(String, String)>,
    /// The configuration it started with, to start a twin on the same database.
    loaded: app::settings::Loaded,
}

impl TestApp {
    /// A server on SQLite with `config/` and `TOLLGATE_ENV=test`, plus `files`.
    pub async fn spawn(files: &[&str]) -> Self {
        Self::spawn_on(Db::Sqlite, files)
            .await
            .expect("sqlite is always there")
    }

    /// A server on the given database; `None` for PostgreSQL when it is not configured.
    /// Rate limits are lifted so that tests measure what they test; see [`TestApp::spawn_with`].
    pub async fn spawn_on(db: Db, files: &[&str]) -> Option<Self> {
        Self::spawn_with(db, files, lift_rate_limits).await
    }

    /// A server whose loaded configuration `tweak` adjusts first.
    pub async fn spawn_with(
        db: Db,
        files: &[&str],
        tweak: impl FnOnce(&mut app::settings::Loaded),
    ) -> Option<Self> {
        Self::spawn_at(db, files, Arc::new(app::system::SystemClock), tweak).await
    }

    /// The same on a clock of the test's (what the use cases and workers take as now).
    pub async fn spawn_at(
        db: Db,
        files: &[&str],
        clock: Arc<dyn billing_core::ports::Clock>,
        tweak: impl FnOnce(&mut app::settings::Loaded),
    ) -> Option<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sources = Sources {
            dir: root.join("config"),
            environment: "test".into(),
            files: files.iter().map(|f| root.join(f)).collect(),
        };
        let mut loaded = load(&sources).unwrap_or_else(|problems| panic!("config: {problems:?}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let mut pg_schema = None;
        loaded.settings.database.url = match db {
            Db::Sqlite => format!("sqlite://{}", dir.path().join("api.db").display()),
            Db::Postgres => {
                let Ok(admin) = std::env::var("TOLLGATE_TEST_DATABASE_URL") else {
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        b"NOTE: PostgreSQL API test SKIPPED: TOLLGATE_TEST_DATABASE_URL is not set\n",
                    );
                    return None;
                };
                let schema = format!(
                    "api_{}_{}",
                    std::process::id(),
                    time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000_000
                );
                let mut conn = AsyncPgConnection::establish(&admin)
                    .await
                    .expect("reach PostgreSQL");
                conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .unwrap();
                let separator = if admin.contains('?') { '&' } else { '?' };
                let url = format!(
                    "{admin}{separator}options=-csearch_path%3D{schema}&application_name={schema}"
                );
                pg_schema = Some((admin, schema));
                loaded.settings.database.auto_migrate = true;
                url
            }
        };
        loaded.settings.auth.admin_api_key = Some(ADMIN_KEY.to_owned().into());
        loaded.settings.auth.jwt_secret = Some(JWT_SECRET.to_owned().into());
        loaded.settings.tasks.worker_key = Some(WORKER_KEY.to_owned().into());
        loaded.settings.mail.outbox_dir = dir.path().join("outbox");
        tweak(&mut loaded);
        let kept = loaded.clone();
        let app = Application::build_with_clock(&loaded.settings, loaded.catalog, clock)
            .await
            .expect("start");
        let address = format!("http://127.0.0.1:{}", app.port());
        let store = app.store().clone();
        tokio::spawn(app.run_until_stopped());
        Some(Self {
            address,
            client: reqwest::Client::new(),
            store,
            _dir: dir,
            pg_schema,
            loaded: kept,
        })
    }

    /// The use cases over this server's store and configuration (what the CLI runs).
    pub fn billing(&self) -> billing_core::usecases::Billing {
        app::server::billing(
            &self.loaded.settings,
            self.loaded.catalog.clone(),
            Arc::new(self.store.clone()),
            Arc::new(app::system::SystemClock),
        )
    }

    /// A second server with the same configuration on the same database (another instance
    /// behind the same load balancer); the first one's drop cleans the database up.
    pub async fn twin(&self) -> Self {
        let mut loaded = self.loaded.clone();
        loaded.settings.server.port = 0;
        let app = Application::build(&loaded.settings, loaded.catalog.clone())
            .await
            .expect("start the twin");
        let address = format!("http://127.0.0.1:{}", app.port());
        let store = app.store().clone();
        tokio::spawn(app.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::new(),
            store,
            _dir: tempfile::tempdir().expect("temp dir"),
            pg_schema: None,
            loaded,
        }
    }

    /// The subjects of the messages to `to` in the outbox, oldest first.
    pub fn mail_subjects(&self, to: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self._dir.path().join("outbox")) else {
            return Vec::new();
        };
        let mut mails: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        mails.sort();
        mails
            .iter()
            .filter_map(|path| {
                let text = std::fs::read_to_string(path).ok()?;
                let rest = text.strip_prefix(&format!("To: {to}\nSubject: "))?;
                rest.lines().next().map(str::to_owned)
            })
            .collect()
    }

    /// The single-use code in the newest message to `to` in the outbox, if any.
    pub fn mailed_code(&self, to: &str) -> Option<String> {
        let mut mails: Vec<_> = std::fs::read_dir(self._dir.path().join("outbox"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .collect();
        mails.sort();
        mails.iter().rev().find_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            text.starts_with(&format!("To: {to}\n")).then_some(())?;
            text.split_whitespace()
                .find(|w| w.starts_with("ott_"))
                .map(str::to_owned)
        })
    }

    /// Sends a request; `token` goes in `Authorization: Bearer`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// GETs a path.
    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None, None, &[]).await
    }

    /// Sends a request with a token (and a JSON body) and returns status and JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let response = self.send(method, path, Some(token), body, &[]).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs a path with a token and returns status and JSON.
    pub async fn get_as(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(Method::GET, path, token, None).await
    }

    /// POSTs JSON and returns status and JSON.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let response = self.send(Method::POST, path, token, Some(body), &[]).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A server that takes Stripe webhooks signed with [`STRIPE_SECRET`] and applies them
    /// every 50 ms.
    pub async fn with_stripe(db: Db) -> Option<Self> {
        Self::spawn_with(db, &[], |loaded| {
            loaded.settings.payments.stripe_webhook_secret = Some(STRIPE_SECRET.to_owned().into());
            loaded.settings.payments.webhook_sweep_ms = 50;
        })
        .await
    }

    /// Delivers a webhook body with a `Stripe-Signature` header; returns status and JSON.
    pub async fn deliver(&self, body: &str, signature: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/v1/webhooks/stripe", self.address))
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the worker has taken up every stored webhook event (none is left
    /// `received`); panics after 20 s.
    /// Waits as long as another instance's change may still be answered from this one's read
    /// cache (`database.read_cache_ms`, the documented rule for several instances).
    pub async fn outwait_read_cache(&self) {
        let ttl = self.loaded.settings.database.read_cache_ms;
        tokio::time::sleep(std::time::Duration::from_millis(ttl + 100)).await;
    }

    pub async fn settle_webhooks(&self) {
        for _ in 0..800 {
            let (_, page) = self
                .get_as("/v1/admin/webhooks?status=received&limit=1", ADMIN_KEY)
                .await;
            if page["items"].as_array().is_some_and(Vec::is_empty) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("webhook events were not applied in time");
    }

    /// `POST /v1/credits/spend` of `action`, with `key` as its `Idempotency-Key` if given.
    pub async fn spend(&self, token: &str, action: &str, key: Option<&str>) -> Response {
        let headers: Vec<(&str, &str)> = key
            .map(|k| vec![("Idempotency-Key", k)])
            .unwrap_or_default();
        self.send(
            Method::POST,
            "/v1/credits/spend",
            Some(token),
            Some(serde_json::json!({"action": action})),
            &headers,
        )
        .await
    }

    /// Puts the account on `plan` (with the admin key).
    pub async fn set_plan(&self, account: &str, plan: &str) {
        let (status, body) = self
            .post(
                &format!("/v1/admin/accounts/{account}/plan"),
                Some(ADMIN_KEY),
                serde_json::json!({"plan": plan}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The caller's spendable credits (`GET /v1/credits`, `available`).
    pub async fn available(&self, token: &str) -> i64 {
        let (status, credits) = self.get_as("/v1/credits", token).await;
        assert_eq!(status, 200, "{credits}");
        credits["available"].as_i64().expect("available")
    }

    /// Proves the account against its journal (what `tollgate ledger verify` does).
    pub async fn assert_ledger_sound(&self, account: &str) {
        let id: billing_core::ids::AccountId = account.parse().expect("an account id");
        let snapshot = billing_core::ports::LedgerStore::snapshot(&self.store, &id)
            .await
            .expect("snapshot");
        assert_eq!(
            billing_core::ledger::verify(&snapshot, 0),
            vec![],
            "{account}"
        );
    }

    /// Signs a new user up; returns (access token, refresh token, account id).
    pub async fn sign_up(&self, email: &str) -> (String, String, String) {
        let (status, body) = self
            .post(
                "/v1/auth/signup",
                None,
                serde_json::json!({"email": email, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["tokens"]["access_token"].as_str().unwrap().to_owned(),
            body["tokens"]["refresh_token"].as_str().unwrap().to_owned(),
            body["account"]["id"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg_schema.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    if let Ok(mut conn) = AsyncPgConnection::establish(&url).await {
                        let _ = conn
                            .batch_execute(&format!(
                                // A connection of the app's pool may sit in a transaction
                                // that a task of this test's (now stopped) runtime began:
                                // end those first, or the DROP waits on them for ever.
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                 WHERE application_name = '{schema}'; \
                                 DROP SCHEMA {schema} CASCADE"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}
