//! The caller's own things: profile, preferences, saved items, API keys.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use billing_core::ids::{ApiKeyId, PrefixedId};
use billing_core::records::{ApiKey, SavedItem};

use crate::auth::{Caller, new_api_key};
use crate::dto::{
    ApiKeyCreated, ApiKeyView, CreateApiKey, ItemPage, ItemQuery, NewSavedItem, ProfileUpdate,
    SavedItemView, UserView,
};
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::state::ApiState;

/// The largest preferences document, serialized.
pub const PREFERENCES_LIMIT: usize = 16 * 1024;

/// Updates the caller's profile (display name).
#[utoipa::path(patch, path = "/v1/me", tag = "me", security(("bearer" = [])), request_body = ProfileUpdate,
    responses(
        (status = 200, description = "The updated user", body = UserView),
        (status = 422, description = "Invalid field", body = Problem),
    ))]
pub async fn update_profile(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<ProfileUpdate>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let mut user = state
        .billing
        .accounts
        .user(user)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if let Some(name) = body.into_inner().name {
        let name = name.trim().to_owned();
        if name.chars().count() > 100 {
            return Err(ApiError::invalid_field(
                "name",
                "must be at most 100 characters",
            ));
        }
        user.name = (!name.is_empty()).then_some(name);
    }
    state.billing.accounts.update_user(&user).await?;
    Ok(HttpResponse::Ok().json(UserView::from(&user)))
}

/// The caller's preferences (`{}` until set).
#[utoipa::path(get, path = "/v1/me/preferences", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "A JSON object")))]
pub async fn preferences(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let value = state
        .user_data
        .preferences(user)
        .await?
        .unwrap_or_else(|| serde_json::json!({}));
    Ok(HttpResponse::Ok().json(value))
}

/// Replaces the caller's preferences: any JSON object up to 16 KiB.
#[utoipa::path(put, path = "/v1/me/preferences", tag = "me", security(("bearer" = [])),
    request_body = Object,
    responses(
        (status = 200, description = "The stored preferences"),
        (status = 413, description = "Larger than 16 KiB", body = Problem),
        (status = 422, description = "Not a JSON object", body = Problem),
    ))]
pub async fn set_preferences(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    // The extractor has already refused anything but a JSON object.
    let value = body.into_inner();
    let size = value.to_string().len();
    if size > PREFERENCES_LIMIT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "preferences_too_large",
            "Preferences too large",
            format!("preferences may be at most {PREFERENCES_LIMIT} bytes; these are {size}"),
        ));
    }
    state
        .user_data
        .set_preferences(user, value.clone(), state.billing.clock.now())
        .await?;
    Ok(HttpResponse::Ok().json(value))
}

const KINDS: [&str; 2] = ["prompt", "reply"];

/// Saves a prompt or a reply.
#[utoipa::path(post, path = "/v1/saved-items", tag = "me", security(("bearer" = [])), request_body = NewSavedItem,
    responses(
        (status = 201, description = "Saved", body = SavedItemView),
        (status = 422, description = "Invalid field", body = Problem),
    ))]
pub async fn save_item(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<NewSavedItem>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let body = body.into_inner();
    if !KINDS.contains(&body.kind.as_str()) {
        return Err(ApiError::invalid_field(
            "kind",
            "must be `prompt` or `reply`",
        ));
    }
    if body.content.trim().is_empty() {
        return Err(ApiError::invalid_field("content", "must not be empty"));
    }
    if body.content.len() > 32 * 1024 {
        return Err(ApiError::invalid_field("content", "must be at most 32 KiB"));
    }
    let item = SavedItem {
        id: format!("itm_{}", state.billing.ids.ulid().encode()),
        user: user.clone(),
        kind: body.kind,
        title: body
            .title
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        content: body.content,
        metadata: body.metadata.unwrap_or_else(|| serde_json::json!({})),
        created_at: state.billing.clock.now(),
    };
    state.user_data.save_item(&item).await?;
    Ok(HttpResponse::Created().json(SavedItemView::from(&item)))
}

/// The caller's saved items, newest first.
#[utoipa::path(get, path = "/v1/saved-items", tag = "me", security(("bearer" = [])), params(ItemQuery),
    responses((status = 200, description = "A page of items", body = ItemPage)))]
pub async fn items(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<ItemQuery>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let query = query.into_inner();
    if let Some(kind) = &query.kind
        && !KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            "Invalid query",
            "`kind` must be `prompt` or `reply`",
        )
        .with("field", "kind"));
    }
    let page = state
        .user_data
        .items(
            user,
            query.kind,
            crate::routes::page(query.limit, query.after, "itm")?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ItemPage {
        items: page.items.iter().map(SavedItemView::from).collect(),
        next: page.next,
    }))
}

/// One of the caller's saved items (404 for anyone else's).
#[utoipa::path(get, path = "/v1/saved-items/{item_id}", tag = "me", security(("bearer" = [])),
    params(("item_id" = String, Path, description = "`itm_…`")),
    responses(
        (status = 200, description = "The item", body = SavedItemView),
        (status = 404, description = "No such item of yours", body = Problem),
    ))]
pub async fn item(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let item = state
        .user_data
        .item(user, &path)
        .await?
        .ok_or_else(|| ApiError::not_found("saved item"))?;
    Ok(HttpResponse::Ok().json(SavedItemView::from(&item)))
}

/// Deletes one of the caller's saved items (404 for anyone else's).
#[utoipa::path(delete, path = "/v1/saved-items/{item_id}", tag = "me", security(("bearer" = [])),
    params(("item_id" = String, Path, description = "`itm_…`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such item of yours", body = Problem),
    ))]
pub async fn delete_item(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    if state.user_data.delete_item(user, &path).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("saved item"))
    }
}

/// Creates an API key that acts as the caller. The key is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "me", security(("bearer" = [])), request_body = CreateApiKey,
    responses(
        (status = 201, description = "The new key, shown once", body = ApiKeyCreated),
        (status = 422, description = "Invalid name", body = Problem),
    ))]
pub async fn create_api_key(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let name = body.into_inner().name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    let (secret, prefix, key_hash) = new_api_key();
    let key = ApiKey {
        id: ApiKeyId::from_ulid(state.billing.ids.ulid()),
        user: user.clone(),
        name,
        prefix,
        key_hash,
        created_at: state.billing.clock.now(),
        revoked_at: None,
    };
    state.api_keys.create_key(&key).await?;
    Ok(HttpResponse::Created().json(ApiKeyCreated {
        key: secret,
        details: ApiKeyView::from(&key),
    }))
}

/// The caller's API keys (prefixes only).
#[utoipa::path(get, path = "/v1/api-keys", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "Keys, newest first", body = [ApiKeyView])))]
pub async fn api_keys(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    let keys: Vec<ApiKeyView> = state
        .api_keys
        .keys(user)
        .await?
        .iter()
        .map(ApiKeyView::from)
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}

/// Revokes one of the caller's API keys.
#[utoipa::path(delete, path = "/v1/api-keys/{key_id}", tag = "me", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "`key_…`")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such live key of yours", body = Problem),
    ))]
pub async fn revoke_api_key(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = caller.user()?;
    if state
        .api_keys
        .revoke_key(user, &path, state.billing.clock.now())
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("API key"))
    }
}
