//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, auth, catalog, credits, me, password, quotas, system};

/// Tollgate's API description, served at `/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Tollgate API", version = "1", description = "Accounts, plans, credits and quotas for AI apps. Errors are application/problem+json with a stable `code`."),
    paths(
        system::health, system::ready, system::openapi,
        auth::signup, auth::login, auth::refresh, auth::logout, auth::me,
        password::change, password::request_reset, password::confirm_reset,
        password::request_verification, password::confirm_verification,
        me::update_profile, me::preferences, me::set_preferences,
        me::save_item, me::items, me::item, me::delete_item,
        me::create_api_key, me::api_keys, me::revoke_api_key,
        catalog::plans, catalog::packs,
        credits::balance, credits::journal, credits::spend,
        quotas::usage, quotas::track, quotas::check,
        admin::list_users, admin::get_account, admin::adjust_credits, admin::audit_log,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-up, sign-in and tokens"),
        (name = "me", description = "The caller's profile, preferences, saved items and API keys"),
        (name = "catalog", description = "Plans and packs"),
        (name = "credits", description = "The caller's credits"),
        (name = "quotas", description = "Usage quotas and entitlements"),
        (name = "admin", description = "Operators (admin role or admin API key)"),
        (name = "system", description = "Health and description"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT, or the admin API key")
                    .build(),
            ),
        );
    }
}
