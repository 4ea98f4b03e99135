//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Requests are counted by route template (`/v1/tasks/{id}`, never the id itself) so the
//! number of series stays bounded; a path that matches no route is `unmatched`. The
//! application records ledger operations, scheduled-job runs, and, at each scrape, the
//! queues' depth and age and the database pool (see [`Scrape`]).

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::state::ApiState;

/// A request's method, route template and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`…
    pub method: String,
    /// The route template, or `unmatched`.
    pub route: String,
    /// The response status.
    pub status: u16,
}

/// A request's method and route template.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `POST`…
    pub method: String,
    /// The route template, or `unmatched`.
    pub route: String,
}

/// A ledger operation and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LedgerLabels {
    /// `grant`, `debit`, `hold`, `capture`…
    pub operation: String,
    /// `executed`, `replayed`, `refused` or `error`.
    pub outcome: String,
    /// Why it was refused (`insufficient_credits`…); empty otherwise.
    pub reason: String,
}

/// A scheduled job and how a run ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `expire_holds`, `renew_allowances`…
    pub job: String,
    /// `ok` or `failed`; `skipped` when another instance had the period.
    pub outcome: String,
}

/// A scheduled job.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobName {
    /// `expire_holds`, `renew_allowances`…
    pub job: String,
}

/// A queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `tasks`, `task_webhooks`, `payment_events`.
    pub queue: String,
}

/// A state of the database pool's connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `idle`, `in_use` or `max`.
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What the application refreshes just before a scrape (values read from the store).
#[async_trait::async_trait]
pub trait Scrape: Send + Sync {
    /// Sets the gauges of `metrics` to the current values.
    async fn refresh(&self, metrics: &Metrics);
}

/// Every metric Tollgate exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// `tollgate_http_requests_total`.
    pub http_requests: Family<RequestLabels, Counter>,
    /// `tollgate_http_request_duration_seconds`.
    pub http_duration: HistogramFamily<RouteLabels>,
    /// `tollgate_ledger_operations_total`.
    pub ledger_operations: Family<LedgerLabels, Counter>,
    /// `tollgate_job_runs_total`.
    pub job_runs: Family<JobLabels, Counter>,
    /// `tollgate_job_last_success_timestamp_seconds`.
    pub job_last_success: Family<JobName, Gauge>,
    /// `tollgate_queue_depth`.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// `tollgate_queue_oldest_age_seconds`.
    pub queue_oldest_age: Family<QueueLabels, Gauge>,
    /// `tollgate_db_pool_connections`.
    pub db_pool: Family<PoolLabels, Gauge>,
    scrape: std::sync::OnceLock<Arc<dyn Scrape>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, registered under the `tollgate` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        let ledger_operations = Family::<LedgerLabels, Counter>::default();
        let job_runs = Family::<JobLabels, Counter>::default();
        let job_last_success = Family::<JobName, Gauge>::default();
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        let queue_oldest_age = Family::<QueueLabels, Gauge>::default();
        let db_pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            http_duration.clone(),
        );
        registry.register(
            "ledger_operations",
            "Ledger operations, by operation and outcome (refusals with their reason)",
            ledger_operations.clone(),
        );
        registry.register(
            "job_runs",
            "Scheduled job periods, by job and outcome (skipped: another instance ran it)",
            job_runs.clone(),
        );
        registry.register(
            "job_last_success_timestamp_seconds",
            "When each scheduled job last finished a run on this instance (unix seconds)",
            job_last_success.clone(),
        );
        registry.register(
            "queue_depth",
            "Items waiting in each queue (queued tasks, pending task webhooks, unapplied payment events)",
            queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest waiting item of each queue (its lag); 0 when empty",
            queue_oldest_age.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections: idle, in use, and the most it opens",
            db_pool.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            ledger_operations,
            job_runs,
            job_last_success,
            queue_depth,
            queue_oldest_age,
            db_pool,
            scrape: std::sync::OnceLock::new(),
        }
    }

    /// Sets what refreshes the store-backed gauges before each scrape (once).
    pub fn on_scrape(&self, scrape: Arc<dyn Scrape>) {
        let _ = self.scrape.set(scrape);
    }

    /// The OpenMetrics text of every metric.
    pub async fn render(&self) -> Result<String, std::fmt::Error> {
        if let Some(scrape) = self.scrape.get() {
            scrape.refresh(self).await;
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts a scheduled job's period.
    pub fn job_ran(&self, job: &str, outcome: &str) {
        self.job_runs
            .get_or_create(&JobLabels {
                job: job.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// The method as a label: the standard ones by name, any other token as `OTHER`, so that
/// invented methods cannot create series without end.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts and times every request (outermost but for CORS, so refusals by the rate limit
/// and the audit layer are counted too).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<ApiState>>()
        .map(|state| state.metrics.clone());
    let method = method_label(req.method()).to_owned();
    let response = next.call(req).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &response {
            Ok(res) => (
                res.request().match_pattern(),
                res.response().status().as_u16(),
            ),
            Err(err) => (None, err.as_response_error().status_code().as_u16()),
        };
        let route = route.unwrap_or_else(|| "unmatched".to_owned());
        metrics
            .http_duration
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        metrics
            .http_requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
    response
}

/// Prometheus metrics in the OpenMetrics text format, for a scraper holding the metrics token
/// (or the admin API key).
#[utoipa::path(get, path = "/metrics", tag = "system", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every metric (OpenMetrics text)", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No metrics token or admin key", body = crate::error::Problem),
    ))]
pub async fn scrape(
    state: web::Data<ApiState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if !state.auth.may_scrape(presented) {
        return Err(ApiError::unauthenticated(
            "send `Authorization: Bearer <metrics token or admin API key>`",
        ));
    }
    let text = state.metrics.render().await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn families_are_encoded_with_their_labels() {
        let metrics = Metrics::new();
        metrics.job_ran("expire_holds", "ok");
        metrics
            .http_duration
            .get_or_create(&RouteLabels {
                method: "GET".into(),
                route: "/v1/tasks/{id}".into(),
            })
            .observe(0.002);
        let text = metrics.render().await.unwrap();
        assert!(
            text.contains(r#"tollgate_job_runs_total{job="expire_holds",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.lines().any(|line| line
                .starts_with("tollgate_http_request_duration_seconds_bucket{")
                && line.contains(r#"route="/v1/tasks/{id}""#)
                && line.contains(r#"le="0.004""#)
                && line.ends_with(" 1")),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn invented_methods_share_one_label() {
        let invented = actix_web::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&invented), "OTHER");
        assert_eq!(method_label(&actix_web::http::Method::PATCH), "PATCH");
    }
}
