//! Sign-up, sign-in, token refresh, sign-out, and who am I.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use billing_core::ids::{AccountId, PrefixedId, UserId};
use billing_core::records::{RefreshToken, Role, Rotation, User};
use billing_core::usecases::SignUp;

use crate::auth::{Caller, new_refresh_token, sha256_hex};
use crate::dto::{
    AccountView, LoginRequest, MeResponse, RefreshRequest, SessionResponse, SignupRequest,
    TokenPair, UserView,
};
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::state::ApiState;

/// The password rule: 8 to 128 characters. `field` names it in the error.
pub(crate) fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if !(8..=128).contains(&length) {
        return Err(ApiError::invalid_field(
            field,
            "must be 8 to 128 characters",
        ));
    }
    Ok(())
}

/// Issues a new token pair, starting a new refresh-token family.
async fn issue(
    state: &ApiState,
    user: &UserId,
    account: &AccountId,
    role: Role,
) -> Result<TokenPair, ApiError> {
    let now = state.billing.clock.now();
    let (refresh_token, token_hash) = new_refresh_token();
    let family = format!("fam_{}", state.billing.ids.ulid().encode());
    state
        .sessions
        .issue(&RefreshToken {
            id: format!("rtk_{}", state.billing.ids.ulid().encode()),
            user: user.clone(),
            family: family.clone(),
            token_hash,
            expires_at: now + state.auth.refresh_ttl,
            created_at: now,
        })
        .await?;
    pair(state, user, account, role, &family, refresh_token)
}

fn pair(
    state: &ApiState,
    user: &UserId,
    account: &AccountId,
    role: Role,
    family: &str,
    refresh_token: String,
) -> Result<TokenPair, ApiError> {
    let now = state.billing.clock.now();
    Ok(TokenPair {
        access_token: state.auth.access_token(user, account, role, family, now)?,
        token_type: "Bearer",
        expires_in: state.auth.access_ttl.whole_seconds(),
        refresh_token,
        refresh_expires_in: state.auth.refresh_ttl.whole_seconds(),
    })
}

/// Creates an account with its first user, grants the default plan's welcome credits and
/// signs in.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses(
        (status = 201, description = "Signed up and signed in", body = SessionResponse),
        (status = 409, description = "Email already registered", body = Problem),
        (status = 422, description = "A field is invalid (named in `field`)", body = Problem),
    ))]
pub async fn signup(
    state: web::Data<ApiState>,
    req: actix_web::HttpRequest,
    body: Json<SignupRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_password("password", &body.password)?;
    let password = body.password;
    let hash = state.hashing.hash(password).await?;
    let signed_up = state
        .billing
        .sign_up(SignUp {
            email: body.email,
            name: body.name,
            password_hash: Some(hash),
            external_subject: None,
            email_verified: false,
        })
        .await?;
    let tokens = issue(
        &state,
        &signed_up.user.id,
        &signed_up.account.id,
        signed_up.user.role,
    )
    .await?;
    tracing::info!(user = %signed_up.user.id, account = %signed_up.account.id, "signed up");
    actix_web::HttpMessage::extensions_mut(&req).insert(crate::middleware::AuditNote {
        target: Some(signed_up.account.id.to_string()),
        details: serde_json::json!({ "user": signed_up.user.id.to_string() }),
    });
    Ok(HttpResponse::Created().json(SessionResponse {
        user: UserView::from(&signed_up.user),
        account: AccountView::from(&signed_up.account),
        tokens,
    }))
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "Invalid credentials",
        "the email or password is wrong",
    )
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionResponse),
        (status = 401, description = "Wrong email or password", body = Problem),
        (status = 429, description = "Too many failed sign-ins for this email or address; see Retry-After", body = Problem),
    ))]
pub async fn login(
    state: web::Data<ApiState>,
    req: actix_web::HttpRequest,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // The form addresses are stored in; one that cannot be an address matches no user (and
    // is answered like a wrong password, revealing nothing).
    let email = billing_core::usecases::normalize_email(&body.email)
        .unwrap_or_else(|_| body.email.trim().to_lowercase());
    let ip = state.limits.client_ip(&req);
    if let Err(seconds) = state.limits.login_allowed(&email, ip).await {
        return Err(crate::limits::too_many(
            seconds,
            "too many failed sign-ins; wait for the time in Retry-After",
        ));
    }
    let user = state.billing.accounts.user_by_email(&email).await?;
    // Verify against a decoy when there is no such user, so both cases take as long (the
    // decoy, too, is hashed on the pool).
    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = body.password;
    let matches = state.hashing.verify(password.clone(), phc).await?;
    let user: User = match user {
        Some(user) if matches && user.password_hash.is_some() => user,
        _ => {
            state.limits.login_failed(&email, ip).await;
            return Err(invalid_credentials());
        }
    };
    state.limits.login_succeeded(&email).await;
    if let Some(old) = user
        .password_hash
        .as_deref()
        .filter(|h| crate::hashing::outdated(h))
    {
        upgrade_hash(&state, &user.id, old, password).await;
    }
    let account = state
        .billing
        .accounts
        .account(&user.account)
        .await?
        .ok_or_else(|| ApiError::internal("a user without an account"))?;
    let tokens = issue(&state, &user.id, &account.id, user.role).await?;
    Ok(HttpResponse::Ok().json(SessionResponse {
        user: UserView::from(&user),
        account: AccountView::from(&account),
        tokens,
    }))
}

/// Hashes a password that was stored with older parameters again, replacing the old hash
/// only if no password change came meanwhile. Sign-in succeeds whatever happens here.
async fn upgrade_hash(state: &ApiState, user: &UserId, old: &str, password: String) {
    let new = match state.hashing.hash(password).await {
        Ok(new) => new,
        Err(err) => {
            tracing::warn!(user = %user, code = err.code(), "could not rehash a password");
            return;
        }
    };
    match state
        .billing
        .accounts
        .replace_password_hash(user, old, &new)
        .await
    {
        Ok(true) => tracing::info!(user = %user, "password hash upgraded"),
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(user = %user, error = %err, "could not store a rehashed password")
        }
    }
}

fn invalid_refresh() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
        "Invalid refresh token",
        "the refresh token is unknown, expired or revoked",
    )
}

/// Exchanges a refresh token for a new pair. Each refresh token works once; presenting one
/// again revokes every token descended from the same sign-in.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokenPair),
        (status = 401, description = "Unknown, expired, revoked or reused token", body = Problem),
    ))]
pub async fn refresh(
    state: web::Data<ApiState>,
    body: Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let now = state.billing.clock.now();
    let presented = sha256_hex(&body.refresh_token);
    let (refresh_token, token_hash) = new_refresh_token();
    let placeholder = UserId::from_ulid(billing_core::ids::Ulid(0));
    let next = RefreshToken {
        id: format!("rtk_{}", state.billing.ids.ulid().encode()),
        user: placeholder,
        family: String::new(),
        token_hash,
        expires_at: now + state.auth.refresh_ttl,
        created_at: now,
    };
    match state.sessions.rotate(&presented, &next, now).await? {
        Rotation::Rotated { user, family } => {
            let user = state
                .billing
                .accounts
                .user(&user)
                .await?
                .ok_or_else(invalid_refresh)?;
            let tokens = pair(
                &state,
                &user.id,
                &user.account,
                user.role,
                &family,
                refresh_token,
            )?;
            Ok(HttpResponse::Ok().json(tokens))
        }
        Rotation::Reused { user, family } => {
            state.session_cache.forget(&family);
            tracing::warn!(%user, "a rotated refresh token was presented again; its family is revoked");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "Refresh token reused",
                "this refresh token was already used; every session from that sign-in is revoked",
            ))
        }
        Rotation::Invalid => Err(invalid_refresh()),
    }
}

/// Signs out: revokes the refresh token and every token of the same sign-in; its access
/// tokens stop working on the next request.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "Signed out (also for an unknown token)")))]
pub async fn logout(
    state: web::Data<ApiState>,
    body: Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let now = state.billing.clock.now();
    if let Some(family) = state
        .sessions
        .revoke_family_of(&sha256_hex(&body.refresh_token), now)
        .await?
    {
        state.session_cache.forget(&family);
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The signed-in user, their account and balance.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "No valid token", body = Problem),
    ))]
pub async fn me(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let (user, account) = caller.user()?;
    let user = state
        .billing
        .accounts
        .user(user)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let account = state
        .billing
        .accounts
        .account(account)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let balance = state.billing.ledger.balance(&account.id).await?;
    Ok(HttpResponse::Ok().json(MeResponse {
        user: UserView::from(&user),
        account: AccountView::from(&account),
        balance: balance.available,
    }))
}
