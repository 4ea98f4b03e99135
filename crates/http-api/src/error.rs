//! Every error the API returns, mapped to `application/problem+json` in one place.
//!
//! A problem has a stable machine-readable `code` (also in `type` as
//! `urn:tollgate:problem:{code}`), the HTTP `status`, a `title`, a human `detail`, and
//! extra members where they help (`balance` and `required` on 402, `field` on 422).
//! Internal failures are logged with their cause and answered with a generic 500: a
//! store's message never reaches a client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use billing_core::entitlements::Denial;
use billing_core::ledger::LedgerError;
use billing_core::ports::{PaymentError, StoreError};
use billing_core::subscription::SubscriptionError;
use billing_core::usecases::BillingError;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The problem document, for the OpenAPI description.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:tollgate:problem:{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// A stable machine-readable code (`insufficient_credits`, `invalid_field`, …).
    pub code: String,
    /// What happened here.
    pub detail: String,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
}

impl ApiError {
    /// A problem with a status, a stable code, a title and a detail.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What happened.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Adds a member to the problem document.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// An extra member of the problem document.
    pub fn member(&self, key: &str) -> Option<&Value> {
        self.extra.get(key)
    }

    /// 401: no usable credentials.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
        )
    }

    /// 403: authenticated, not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            format!("{what} not found"),
        )
    }

    /// 422 naming the field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "Invalid field",
            format!("`{field}` {message}"),
        )
        .with("field", field)
    }

    /// 500, after logging the cause (which the client never sees).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "something went wrong on our side; it has been logged",
        )
    }

    fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("urn:tollgate:problem:{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Value::Object(map) = &mut body {
            for (key, value) in &self.extra {
                map.insert(key.clone(), value.clone());
            }
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        if let Some(Value::Number(seconds)) = self.extra.get("retry_after") {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(self.body().to_string())
    }
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        let detail = err.to_string();
        let code = err.code();
        match err {
            LedgerError::InsufficientCredits { balance, required } => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                code,
                "Insufficient credits",
                detail,
            )
            .with("balance", balance)
            .with("required", required),
            LedgerError::HoldNotFound { .. } | LedgerError::TransactionNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, code, "Not found", detail)
            }
            LedgerError::HoldNotPending { .. }
            | LedgerError::HoldExpired { .. }
            | LedgerError::HoldNotYetExpired { .. } => {
                Self::new(StatusCode::CONFLICT, code, "Hold not in that state", detail)
            }
            LedgerError::InvalidAmount
            | LedgerError::ExpiryNotInFuture
            | LedgerError::Overflow
            | LedgerError::CaptureExceedsHold { .. }
            | LedgerError::NotRefundable { .. }
            | LedgerError::RefundExceedsSpend { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                "Invalid request",
                detail,
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::not_found("resource"),
            StoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                format!("conflicts with existing data ({what})"),
            ),
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "the database is unavailable; try again shortly",
                )
            }
            StoreError::Other(cause) => Self::internal(cause),
        }
    }
}

impl From<BillingError> for ApiError {
    fn from(err: BillingError) -> Self {
        match err {
            BillingError::Invalid { field, message } => Self::invalid_field(field, message),
            BillingError::AccountNotFound => Self::not_found("account"),
            BillingError::SubscriptionNotFound => Self::not_found("subscription"),
            BillingError::UnknownAction(action) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_action",
                "Unknown action",
                format!("`action` names no action in the catalog (`{action}`)"),
            )
            .with("field", "action"),
            BillingError::UnknownTaskType(kind) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_task_type",
                "Unknown task type",
                format!("`type` names no task type in the catalog (`{kind}`)"),
            )
            .with("field", "type"),
            BillingError::TaskNotFound => Self::not_found("task"),
            BillingError::TaskState { status, attempt } => Self::new(
                StatusCode::CONFLICT,
                "task_state",
                "Task moved on",
                format!(
                    "the task is {} (claim {attempt}): it was cancelled, timed out, finished or claimed again",
                    status.as_str()
                ),
            )
            .with("task_status", status.as_str())
            .with("attempt", attempt),
            BillingError::UnknownPack(pack) => {
                Self::invalid_field("pack", format!("names no pack in the catalog (`{pack}`)"))
            }
            BillingError::UnknownModel(model) => Self::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                "Unknown model",
                format!("no model `{model}` in the catalog (`GET /v1/models`)"),
            ),
            BillingError::UnpricedModel(model) => Self::internal(format!(
                "model `{model}` cannot be priced: the catalog has no credit value"
            )),
            BillingError::UnknownReward(reward) => Self::new(
                StatusCode::NOT_FOUND,
                "reward_not_found",
                "Unknown reward",
                format!("the catalog has no reward `{reward}`"),
            ),
            BillingError::RewardIneligible(why) => match why {
                billing_core::rewards::Ineligible::Exhausted { max } => Self::new(
                    StatusCode::CONFLICT,
                    "reward_claimed",
                    "Reward already claimed",
                    format!("this account has claimed this reward as often as it may ({max})"),
                )
                .with("max_per_account", max),
                billing_core::rewards::Ineligible::Pending => Self::new(
                    StatusCode::CONFLICT,
                    "reward_pending",
                    "Claim pending",
                    "a claim of this reward is waiting for an admin's decision",
                ),
                billing_core::rewards::Ineligible::Cooldown {
                    until,
                    wait_seconds,
                } => {
                    // Measured by the use case on its own clock, at the decision.
                    Self::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "reward_cooldown",
                        "Too soon",
                        "this reward may be claimed again after its cooldown",
                    )
                    .with("retry_after", wait_seconds)
                    .with("next_claim_at", crate::dto::rfc3339(until))
                }
            },
            BillingError::ClaimNotFound => Self::not_found("reward claim"),
            BillingError::ClaimDecided(status) => Self::new(
                StatusCode::CONFLICT,
                "claim_decided",
                "Already decided",
                format!("the claim is already {}", status.as_str()),
            )
            .with("claim_status", status.as_str()),
            BillingError::EmailTaken => Self::new(
                StatusCode::CONFLICT,
                "email_taken",
                "Email already registered",
                "an account with this email already exists",
            ),
            BillingError::AlreadyGranted(payment) => Self::new(
                StatusCode::CONFLICT,
                "already_granted",
                "Already granted",
                format!("the credits of payment {payment} were granted already"),
            ),
            BillingError::IdempotencyConflict => Self::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "Idempotency key reused",
                "this Idempotency-Key was used with a different request",
            ),
            BillingError::NotEntitled(denial) => {
                let (code, detail) = match &denial {
                    Denial::SubscriptionInactive { status } => (
                        "subscription_inactive",
                        format!("the subscription that includes it is {}", status.as_str()),
                    ),
                    Denial::NotInPlan { plan } => (
                        "not_in_plan",
                        format!("the `{plan}` plan does not include it"),
                    ),
                    other => ("not_entitled", format!("{other:?}")),
                };
                let mut problem =
                    Self::new(StatusCode::FORBIDDEN, code, "Not in your plan", detail);
                if let Ok(Value::Object(members)) = serde_json::to_value(&denial) {
                    for (key, value) in members {
                        if key != "code" {
                            problem = problem.with(&key, value);
                        }
                    }
                }
                problem
            }
            BillingError::Ledger(err) => err.into(),
            BillingError::Subscription(SubscriptionError::UnknownPlan { plan }) => {
                Self::invalid_field("plan", format!("names no plan in the catalog (`{plan}`)"))
            }
            BillingError::Subscription(SubscriptionError::NotForSale { plan, interval }) => {
                Self::invalid_field(
                    "interval",
                    format!("plan `{plan}` has no {} price", interval.as_str()),
                )
            }
            BillingError::Subscription(SubscriptionError::SamePlan { plan }) => {
                Self::invalid_field("plan", format!("the subscription is on `{plan}` already"))
            }
            BillingError::AlreadySubscribed(plan) => Self::new(
                StatusCode::CONFLICT,
                "already_subscribed",
                "Already subscribed",
                format!(
                    "the account has a live subscription to `{plan}`; change or cancel it instead"
                ),
            ),
            BillingError::Payment(err) => {
                let (status, code) = match &err {
                    PaymentError::Unavailable(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "payment_provider_unavailable",
                    ),
                    PaymentError::NotConfigured(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "payments_not_configured")
                    }
                    _ => (StatusCode::BAD_GATEWAY, "payment_provider_error"),
                };
                Self::new(status, code, "Payment provider", err.to_string())
            }
            BillingError::Subscription(err) => Self::new(
                StatusCode::CONFLICT,
                "subscription_state",
                "Subscription state",
                err.to_string(),
            ),
            BillingError::Store(err) => err.into(),
        }
    }
}
