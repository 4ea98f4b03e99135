//! The HTTP server: `Application::build` binds (port 0 for tests) and
//! `run_until_stopped` serves until SIGINT or SIGTERM, then drains in-flight requests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use billing_core::catalog::Catalog;
use serde_json::json;

use crate::settings::Settings;

/// What handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The validated catalog.
    pub catalog: Arc<Catalog>,
}

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener and builds the server.
    pub fn build(settings: &Settings, catalog: Catalog) -> std::io::Result<Self> {
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            catalog: Arc::new(catalog),
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/health", web::get().to(health))
                .route("/ready", web::get().to(ready))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_seconds)
        .disable_signals();
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Self { port, server })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server is stopped (see [`Application::run_until_signal`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting and lets in-flight requests
    /// finish (up to `server.shutdown_timeout_seconds`).
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
        tracing::info!("server stopped");
        result
    }
}

async fn shutdown_signal() -> &'static str {
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

/// Liveness: the process is up.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Readiness: every dependency the server needs is usable. Today that is the catalog; the
/// database check joins it with the store.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let catalog_ok = state.catalog.default_plan().is_some();
    let body = json!({
        "status": if catalog_ok { "ready" } else { "unavailable" },
        "checks": { "catalog": if catalog_ok { "ok" } else { "no default plan" } },
    });
    if catalog_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", Duration::from_secs(5).as_secs().to_string()))
            .json(body)
    }
}
