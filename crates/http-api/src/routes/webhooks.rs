//! Payment-provider webhooks: verify, store once, acknowledge. A worker applies them.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::ids::{PrefixedId, WebhookId};
use billing_core::ports::PaymentError;
use billing_core::records::{WebhookEvent, WebhookStatus};

use crate::dto::WebhookReceived;
use crate::error::{ApiError, Problem};
use crate::state::ApiState;

/// Receives a Stripe event. The raw body is checked against the `Stripe-Signature` header
/// (every configured signing secret, 300 s tolerance); the event is stored once by its id
/// and answered 200 at once, a duplicate delivery too. A worker applies stored events
/// (with retries), so a slow or failing apply never makes Stripe wait or resend.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "payments",
    request_body(content = Object, content_type = "application/json", description = "The event, exactly as Stripe sent it"),
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body")),
    responses(
        (status = 200, description = "Stored (or already stored); it will be applied", body = WebhookReceived),
        (status = 400, description = "Signed, but not an event (`malformed_event`)", body = Problem),
        (status = 401, description = "No signature, or not a valid one (`invalid_signature`)", body = Problem),
        (status = 404, description = "No Stripe signing secret is configured (`not_configured`)", body = Problem),
    ))]
pub async fn stripe(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let invalid = |detail: String| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "Invalid signature",
            detail,
        )
    };
    // An unsigned request is refused as such, whether or not a secret is configured.
    let signature = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid("the Stripe-Signature header is missing".into()))?;
    let Some(intake) = &state.webhook_intake else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "Not configured",
            "no Stripe webhook signing secret is configured",
        ));
    };
    let now = state.billing.clock.now();
    let verified = intake
        .verify(&body, signature, now)
        .map_err(|err| match err {
            PaymentError::MalformedEvent(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_event",
                "Malformed event",
                why,
            ),
            other => invalid(other.to_string()),
        })?;
    let stored = state
        .webhooks
        .record(WebhookEvent {
            id: WebhookId::from_ulid(state.billing.ids.ulid()),
            external_id: verified.id.clone(),
            kind: verified.kind.clone(),
            payload: verified.payload,
            status: WebhookStatus::Received,
            attempts: 0,
            last_error: None,
            received_at: now,
        })
        .await?;
    tracing::info!(event = %verified.id, kind = %verified.kind, duplicate = !stored, "webhook received");
    Ok(HttpResponse::Ok().json(WebhookReceived {
        received: true,
        duplicate: !stored,
    }))
}
