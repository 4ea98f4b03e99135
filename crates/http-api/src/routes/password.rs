//! Password change, password reset and email verification, by single-use tokens sent
//! through the mailer port.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use billing_core::ports::Mail;
use time::Duration;

use crate::auth::{Caller, sha256_hex};
use crate::dto::{ChangePassword, ConfirmReset, ConfirmVerification, RequestReset};
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::routes::auth::check_password;
use crate::state::ApiState;

/// The purpose of password-reset codes.
pub(crate) const RESET: &str = "password_reset";
const VERIFY: &str = "email_verification";

async fn hashed(state: &ApiState, password: String) -> Result<String, ApiError> {
    state.hashing.hash(password).await
}

fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("ott_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = sha256_hex(&token);
    (token, hash)
}

/// Issues a single-use code for `purpose`, valid for `ttl`, and mails it to the user. A
/// mail that cannot be sent is logged; the code stays valid.
async fn mail_code(
    state: &ApiState,
    user: &billing_core::records::User,
    purpose: &str,
    ttl: Duration,
    subject: &str,
    intro: &str,
) -> Result<(), ApiError> {
    let now = state.billing.clock.now();
    let (token, hash) = new_token();
    state
        .sessions
        .issue_one_time(&user.id, purpose, &hash, now + ttl, now)
        .await?;
    let mail = Mail {
        to: user.email.clone(),
        subject: subject.to_owned(),
        body: format!("{intro}\n\n{token}\n"),
    };
    if let Err(err) = state.mailer.send(mail).await {
        tracing::warn!(error = %err, purpose, "could not send the mail");
    }
    Ok(())
}

/// Uses up a mailed code for `purpose` and returns its user; 422 for an unknown, used or
/// expired code.
async fn user_by_code(
    state: &ApiState,
    token: &str,
    purpose: &str,
) -> Result<billing_core::records::User, ApiError> {
    let now = state.billing.clock.now();
    let user = state
        .sessions
        .consume_one_time(&sha256_hex(token), purpose, now)
        .await?
        .ok_or_else(invalid_token)?;
    state
        .billing
        .accounts
        .user(&user)
        .await?
        .ok_or_else(invalid_token)
}

/// A mailed code that is unknown, used or expired: like a wrong password, 401.
fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_code",
        "Invalid code",
        "the code is unknown, used or expired",
    )
    .with("field", "token")
}

/// Changes the caller's password; every session is signed out.
#[utoipa::path(post, path = "/v1/auth/password", tag = "auth", security(("bearer" = [])), request_body = ChangePassword,
    responses(
        (status = 204, description = "Changed; sign in again"),
        (status = 401, description = "The current password is wrong", body = Problem),
        (status = 422, description = "The new password is invalid", body = Problem),
    ))]
pub async fn change(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<ChangePassword>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let body = body.into_inner();
    check_password("new_password", &body.new_password)?;
    let mut user = state
        .billing
        .accounts
        .user(user)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    // A user without a password (an external identity) has none to change.
    let phc = user.password_hash.clone().unwrap_or_default();
    let matches = state
        .hashing
        .verify(body.current_password, Some(phc))
        .await?;
    if !matches {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid credentials",
            "the current password is wrong",
        ));
    }
    user.password_hash = Some(hashed(&state, body.new_password).await?);
    state.billing.accounts.update_user(&user).await?;
    state.end_credentials(&user.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Sends a password-reset token to the email, if it belongs to an account. The answer is
/// the same either way, so it reveals nothing.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = RequestReset,
    responses((status = 202, description = "If the email is registered, a token is on its way")))]
pub async fn request_reset(
    state: web::Data<ApiState>,
    body: Json<RequestReset>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let email = billing_core::usecases::normalize_email(&body.email)
        .unwrap_or_else(|_| body.email.trim().to_lowercase());
    if let Some(user) = state.billing.accounts.user_by_email(&email).await? {
        let intro = "Someone asked to reset the password of this account. If it was you, use this \
                     code within an hour (if not, ignore this message):";
        mail_code(
            &state,
            &user,
            RESET,
            Duration::hours(1),
            "Reset your password",
            intro,
        )
        .await?;
    }
    Ok(HttpResponse::Accepted().json(serde_json::json!({"status": "sent if registered"})))
}

/// Sets a new password with a reset token; every session is signed out.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = ConfirmReset,
    responses(
        (status = 204, description = "The password is changed; sign in"),
        (status = 401, description = "Unknown, used or expired code (`invalid_code`)", body = Problem),
        (status = 422, description = "Invalid password", body = Problem),
    ))]
pub async fn confirm_reset(
    state: web::Data<ApiState>,
    body: Json<ConfirmReset>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_password("new_password", &body.new_password)?;
    let mut user = user_by_code(&state, &body.token, RESET).await?;
    user.password_hash = Some(hashed(&state, body.new_password).await?);
    state.billing.accounts.update_user(&user).await?;
    state.end_credentials(&user.id).await?;
    state.limits.login_succeeded(&user.email).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Sends an email-verification token to the caller's address.
#[utoipa::path(post, path = "/v1/auth/email-verification", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 202, description = "A token is on its way (nothing is sent if already verified)"),
        (status = 409, description = "The user has no address to verify (an external identity whose token carried none)", body = Problem),
    ))]
pub async fn request_verification(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let user = state
        .billing
        .accounts
        .user(user)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if !billing_core::usecases::has_mailbox(&user) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_email_address",
            "No email address",
            "this user has no email address to verify; set one with PATCH /v1/me",
        ));
    }
    if !user.email_verified {
        let intro = "Use this code within a day to confirm your email address:";
        mail_code(
            &state,
            &user,
            VERIFY,
            Duration::days(1),
            "Confirm your email address",
            intro,
        )
        .await?;
    }
    Ok(HttpResponse::Accepted().json(serde_json::json!({"status": if user.email_verified { "already verified" } else { "sent" }})))
}

/// Confirms the email address with a verification token.
#[utoipa::path(post, path = "/v1/auth/email-verification/confirm", tag = "auth", request_body = ConfirmVerification,
    responses(
        (status = 204, description = "Verified"),
        (status = 401, description = "Unknown, used or expired code (`invalid_code`)", body = Problem),
    ))]
pub async fn confirm_verification(
    state: web::Data<ApiState>,
    body: Json<ConfirmVerification>,
) -> Result<HttpResponse, ApiError> {
    let mut user = user_by_code(&state, &body.token, VERIFY).await?;
    user.email_verified = true;
    state.billing.accounts.update_user(&user).await?;
    Ok(HttpResponse::NoContent().finish())
}
