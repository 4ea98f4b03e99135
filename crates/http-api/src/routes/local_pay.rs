//! The local payment adapter's page: what a hosted checkout is at Stripe, served by Tollgate
//! itself when no Stripe key is set. "Pay" applies the same domain events Stripe's webhooks
//! would, through the same use case; "Decline" changes nothing. Only present outside
//! production (the app does not configure it there).

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, web};
use payments_local::{LocalSession, SessionError};

use crate::error::{ApiError, Problem};
use crate::state::ApiState;

fn session(state: &ApiState, token: &str) -> Result<LocalSession, ApiError> {
    let local = state
        .local_payments
        .as_ref()
        .ok_or_else(|| ApiError::not_found("payment session"))?;
    local.open(token).map_err(|err| match err {
        SessionError::Invalid => ApiError::not_found("payment session"),
        SessionError::Expired => ApiError::new(
            StatusCode::GONE,
            "session_expired",
            "Payment session expired",
            "this payment page is more than an hour old; start the checkout again",
        ),
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header(("Content-Security-Policy", "default-src 'none'; form-action 'self'; style-src 'unsafe-inline'"))
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>body{{font-family:sans-serif;max-width:32em;margin:4em auto}}button{{font-size:1.1em;margin-right:1em}}</style>\
             </head><body><h1>{title}</h1>{body}</body></html>"
        ))
}

fn back_to(url: &str, fallback_title: &str, fallback: &str) -> HttpResponse {
    if url.is_empty() {
        page(fallback_title, &format!("<p>{fallback}</p>"))
    } else {
        HttpResponse::SeeOther()
            .insert_header((LOCATION, url.to_owned()))
            .finish()
    }
}

/// The local payment page: what is bought, "Pay" and "Decline". Takes no money.
#[utoipa::path(get, path = "/v1/local-pay/{session}", tag = "billing",
    params(("session" = String, Path, description = "The session token a checkout's `url` holds")),
    responses(
        (status = 200, description = "The payment page", content_type = "text/html", body = String),
        (status = 404, description = "No such session (or payments are not local)", body = Problem),
        (status = 410, description = "The session expired", body = Problem),
    ))]
pub async fn show(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    let session = session(&state, &token)?;
    let token = escape(&token);
    Ok(page(
        "Tollgate test payment",
        &format!(
            "<p>{}</p><p>No money moves: this page stands in for Stripe while no Stripe key is set.</p>\
             <form method=\"post\" action=\"/v1/local-pay/{token}/pay\" style=\"display:inline\"><button type=\"submit\">Pay</button></form>\
             <form method=\"post\" action=\"/v1/local-pay/{token}/decline\" style=\"display:inline\"><button type=\"submit\">Decline</button></form>",
            escape(&session.describe()),
        ),
    ))
}

/// Pays a local session: applies what Stripe would report, then sends the customer to the
/// success URL. Paying again grants nothing more.
#[utoipa::path(post, path = "/v1/local-pay/{session}/pay", tag = "billing",
    params(("session" = String, Path, description = "The session token a checkout's `url` holds")),
    responses(
        (status = 200, description = "Paid (a quick buy, which has no success URL)", content_type = "text/html", body = String),
        (status = 303, description = "Paid; on to the success URL"),
        (status = 404, description = "No such session", body = Problem),
        (status = 410, description = "The session expired", body = Problem),
    ))]
pub async fn pay(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = session(&state, &path)?;
    for event in session.paid(state.billing.clock.now()) {
        state.billing.apply_payment_event(event).await?;
    }
    tracing::info!(session = %session.id(), account = %session.account, "local payment made");
    Ok(back_to(
        &session.success_url,
        "Paid",
        "The payment is done; you can close this page.",
    ))
}

/// Declines a local session: nothing happens; on to the cancel URL.
#[utoipa::path(post, path = "/v1/local-pay/{session}/decline", tag = "billing",
    params(("session" = String, Path, description = "The session token a checkout's `url` holds")),
    responses(
        (status = 200, description = "Declined (a quick buy)", content_type = "text/html", body = String),
        (status = 303, description = "Declined; on to the cancel URL"),
        (status = 404, description = "No such session", body = Problem),
        (status = 410, description = "The session expired", body = Problem),
    ))]
pub async fn decline(
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = session(&state, &path)?;
    Ok(back_to(
        &session.cancel_url,
        "Declined",
        "Nothing was paid; you can close this page.",
    ))
}
