//! The OpenAPI document, generated from the handlers' annotations.

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admin, auth, billing, business, catalog, credits, gateway, jobs, local_pay, me, password,
    quotas, rewards, system, tasks, track_batch, webhooks,
};

/// Tollgate's API description, served at `/openapi.json`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Tollgate API", version = "1", description = "Accounts, plans, credits and quotas for AI apps. Errors are application/problem+json with a stable `code`."),
    paths(
        system::health, system::ready, system::openapi, crate::metrics::scrape,
        auth::signup, auth::login, auth::refresh, auth::logout, auth::me,
        password::change, password::request_reset, password::confirm_reset,
        password::request_verification, password::confirm_verification,
        me::update_profile, me::preferences, me::set_preferences,
        me::save_item, me::items, me::item, me::delete_item,
        me::create_api_key, me::api_keys, me::revoke_api_key,
        catalog::catalog, catalog::plans, catalog::packs,
        rewards::list, rewards::claim, rewards::admin_list, rewards::approve, rewards::reject,
        credits::balance, credits::journal, credits::spend, credits::subscription, credits::analytics,
        billing::cancel_subscription, billing::resume_subscription, billing::change_plan,
        billing::checkout_pack, billing::checkout_subscription, billing::quick_buy,
        billing::portal, billing::history, billing::comp,
        local_pay::show, local_pay::pay, local_pay::decline,
        quotas::usage, quotas::track, track_batch::track_batch, quotas::check,
        admin::list_users, admin::get_account, admin::adjust_credits, admin::audit_log,
        admin::list_webhooks, admin::get_webhook, admin::retry_webhook,
        business::business_metrics, jobs::jobs,
        webhooks::stripe,
        gateway::openai::chat_completions, gateway::anthropic::messages,
        gateway::usage::models, gateway::usage::simple_chat, gateway::usage::usage,
        tasks::create, tasks::list, tasks::get, tasks::cancel,
        tasks::claim, tasks::heartbeat, tasks::complete, tasks::fail, tasks::deliveries,
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
        (name = "billing", description = "Checkouts, the subscription's cancellation, billing history"),
        (name = "payments", description = "The payment provider's webhooks"),
        (name = "system", description = "Health and description"),
        (name = "gateway", description = "The metered LLM gateway: models, a simple chat call, usage"),
        (name = "tasks", description = "Asynchronous tasks: created with their credits held, charged on success, refunded on failure or cancel"),
        (name = "workers", description = "A product's own task workers (the worker key): claim, heartbeat, complete, fail"),
        (name = "compat", description = "OpenAI- and Anthropic-compatible routes, in those APIs' own shapes (for their SDKs)"),
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

/// The document as served: what the annotations generate, made exact for the running
/// catalog and for what every route can answer.
///
/// * Every problem is `application/problem+json` (the annotations can only say JSON).
/// * Every operation lists the error statuses its middleware and extractors can produce:
///   422 (a NUL or bad parameter) everywhere; 429 where rate limits apply; 503 where the
///   database is used; 401 and 403 with credentials; 400, 413, 415 and 422 with a body; 404
///   with a path parameter; 400 with an `Idempotency-Key`.
/// * Every free-text string refuses the NUL character (`pattern`), as the server does.
/// * Names the catalog defines (actions, meters) are enums of this catalog's names.
pub fn document(catalog: &billing_core::catalog::Catalog) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let actions: Vec<Value> = catalog.actions.keys().map(|a| json!(a)).collect();
    let meters: Vec<Value> = catalog.meters.keys().map(|m| json!(m)).collect();
    let task_types: Vec<Value> = catalog.tasks.keys().map(|t| json!(t)).collect();
    if let Some(preferences) = doc.pointer_mut(
        "/paths/~1v1~1me~1preferences/put/requestBody/content/application~1json/schema",
    ) {
        *preferences = json!({"$ref": "#/components/schemas/NulFreeObject"});
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                complete_operation(path, op);
                if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                    for param in params {
                        if param["name"] == "type"
                            && param["in"] == "query"
                            && path == "/v1/tasks"
                            && !task_types.is_empty()
                        {
                            param["schema"] = json!({"type": "string", "enum": task_types});
                        }
                        if param["name"] == "meter" && !meters.is_empty() {
                            param["schema"] = json!({"type": "string", "enum": meters});
                        }
                        if param["name"] == "kind" && param["in"] == "query" {
                            param["schema"] =
                                json!({"type": "string", "enum": ["prompt", "reply"]});
                        }
                        if param["name"] == "status"
                            && param["in"] == "query"
                            && path == "/v1/admin/webhooks"
                        {
                            param["schema"] = json!({"type": "string",
                                "enum": ["received", "processed", "failed", "ignored"]});
                        }
                        exact_parameter(param);
                    }
                }
            }
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        let kinds = [
            ("NewSavedItem", json!(["prompt", "reply"])),
            (
                "EntitlementRequest",
                json!(["action", "model", "feature", "meter"]),
            ),
        ];
        for (schema, values) in kinds {
            if let Some(kind) = schemas
                .get_mut(schema)
                .and_then(|s| s.pointer_mut("/properties/kind"))
            {
                kind["enum"] = values;
            }
        }
        if !task_types.is_empty() {
            if let Some(kind) = schemas
                .get_mut("CreateTaskRequest")
                .and_then(|s| s.pointer_mut("/properties/type"))
            {
                kind["enum"] = json!(task_types);
            }
            if let Some(items) = schemas
                .get_mut("ClaimBody")
                .and_then(|s| s.pointer_mut("/properties/types/items"))
            {
                items["enum"] = json!(task_types);
            }
        }
        // A task's input: an object without NUL (like preferences) holding the fields its
        // type's prompt takes; one alternative per type.
        if let Some(create) = schemas.get_mut("CreateTaskRequest") {
            let alternatives: Vec<Value> = catalog
                .tasks
                .iter()
                .map(|(id, task)| {
                    let fields = task
                        .prompt
                        .as_deref()
                        .map(billing_core::tasks::prompt_fields)
                        .unwrap_or_default();
                    json!({"properties": {
                        "type": {"const": id},
                        "input": {"allOf": [
                            {"$ref": "#/components/schemas/NulFreeObject"},
                            {"type": "object", "required": fields}
                        ]}
                    }})
                })
                .collect();
            if let Some(input) = create.pointer_mut("/properties/input") {
                *input = json!({"$ref": "#/components/schemas/NulFreeObject"});
            }
            if !alternatives.is_empty() {
                create["oneOf"] = json!(alternatives);
            }
        }
        // A worker's output: JSON without NUL.
        for (schema, field, reference) in [("CompleteBody", "output", "NulFreeJson")] {
            if let Some(property) = schemas
                .get_mut(schema)
                .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
            {
                *property = json!({"$ref": format!("#/components/schemas/{reference}")});
            }
        }
        // Text that must hold more than white space.
        let not_blank = json!("^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$");
        for (schema, field) in [
            ("CreateApiKey", "name"),
            ("AdjustRequest", "reason"),
            ("NewSavedItem", "content"),
            ("ClaimBody", "worker"),
        ] {
            if let Some(property) = schemas
                .get_mut(schema)
                .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
            {
                property["pattern"] = not_blank.clone();
            }
        }
        // Free-form JSON (preferences, an item's metadata) holds no NUL either, at any depth.
        let nul_free = json!("^[^\\u0000]*$");
        schemas.insert(
            "NulFreeJson".into(),
            json!({"description": "Any JSON without a NUL character in a string or key",
            "anyOf": [
                {"type": "string", "pattern": nul_free},
                {"type": ["number", "boolean", "null"]},
                {"type": "array", "items": {"$ref": "#/components/schemas/NulFreeJson"}},
                {"$ref": "#/components/schemas/NulFreeObject"}
            ]}),
        );
        schemas.insert(
            "NulFreeObject".into(),
            json!({"type": "object", "propertyNames": {"pattern": nul_free},
                "additionalProperties": {"$ref": "#/components/schemas/NulFreeJson"}}),
        );
        if let Some(metadata) = schemas
            .get_mut("NewSavedItem")
            .and_then(|s| s.pointer_mut("/properties/metadata"))
        {
            *metadata = json!({"description": "Client data: a JSON object (or null: none)",
                "anyOf": [{"$ref": "#/components/schemas/NulFreeObject"}, {"type": "null"}]});
        }
        if let Some(delta) = schemas
            .get_mut("AdjustRequest")
            .and_then(|s| s.pointer_mut("/properties/delta"))
        {
            delta["not"] = json!({"const": 0});
        }
        if let Some(action) = schemas
            .get_mut("SpendRequest")
            .and_then(|s| s.pointer_mut("/properties/action"))
            && !actions.is_empty()
        {
            *action = json!({"type": "string", "enum": actions, "description": "An action of the catalog"});
        }
        if let Some(meter) = schemas
            .get_mut("TrackEventBody")
            .and_then(|s| s.pointer_mut("/properties/meter"))
            && !meters.is_empty()
        {
            *meter =
                json!({"type": "string", "enum": meters, "description": "A meter of the catalog"});
        }
        let packs: Vec<Value> = catalog.packs.keys().map(|p| json!(p)).collect();
        for schema in ["PackCheckoutRequest", "QuickBuyRequest"] {
            if let Some(pack) = schemas
                .get_mut(schema)
                .and_then(|s| s.pointer_mut("/properties/pack"))
                && !packs.is_empty()
            {
                *pack = json!({"type": "string", "enum": packs, "description": "A pack of the catalog"});
            }
        }
        let plans: Vec<Value> = catalog.plans.keys().map(|p| json!(p)).collect();
        if let Some(plan) = schemas
            .get_mut("CompRequest")
            .and_then(|s| s.pointer_mut("/properties/plan"))
        {
            *plan =
                json!({"type": "string", "enum": plans, "description": "A plan of the catalog"});
        }
        // A plan is sold for the intervals it has prices for: one alternative per plan.
        if let Some(checkout) = schemas.get_mut("PlanCheckoutRequest") {
            let choices: Vec<Value> = catalog
                .plans
                .iter()
                .filter(|(_, plan)| plan.is_paid())
                .map(|(id, plan)| {
                    let intervals: Vec<&str> = plan.prices.keys().map(|i| i.as_str()).collect();
                    json!({"properties": {"plan": {"const": id}, "interval": {"enum": intervals}}})
                })
                .collect();
            if !choices.is_empty() {
                checkout["oneOf"] = json!(choices);
            }
        }
    }
    forbid_nul(&mut doc);
    doc
}

/// Return URLs (a checkout's success and cancel URLs, the portal's return URL) must be on
/// one of `origins` (`scheme://host[:port]`; without a port, any port): a pattern the
/// server checks too.
pub fn restrict_return_urls(doc: &mut Value, origins: &[String]) {
    let escape = |text: &str| {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == ':' || c == '/' || c == '-' || c == '_' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect::<String>()
    };
    let alternatives: Vec<String> = origins
        .iter()
        .map(|origin| {
            let origin = origin.trim_end_matches('/');
            let has_port = billing::origin_of(origin).is_some_and(|(_, _, port)| port.is_some());
            if has_port {
                escape(origin)
            } else {
                format!("{}(:[0-9]{{1,5}})?", escape(origin))
            }
        })
        .collect();
    let pattern = if alternatives.is_empty() {
        // No origin is allowed: nothing matches.
        "^(?!)$".to_owned()
    } else {
        format!("^({})([/?#][^\\u0000]*)?$", alternatives.join("|"))
    };
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (schema, field) in [
        ("PackCheckoutRequest", "success_url"),
        ("PackCheckoutRequest", "cancel_url"),
        ("PlanCheckoutRequest", "success_url"),
        ("PlanCheckoutRequest", "cancel_url"),
        ("PortalRequest", "return_url"),
    ] {
        if let Some(property) = schemas
            .get_mut(schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
        {
            property["pattern"] = json!(pattern);
        }
    }
}

/// What the server checks of a parameter, in its schema: a query parameter is optional
/// and never `null` (a query cannot say null); ids in paths and the `Idempotency-Key`
/// header have their exact forms.
fn exact_parameter(param: &mut Value) {
    if param["in"] == "query" {
        param["required"] = json!(false);
        if let Some(types) = param
            .pointer_mut("/schema/type")
            .and_then(Value::as_array_mut)
        {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types[0].clone();
                param["schema"]["type"] = only;
            }
        }
    }
    let id = |prefix: &str| json!({"type": "string", "pattern": format!("^{prefix}_[0-7][0-9A-HJKMNP-TV-Z]{{25}}$")});
    match (param["in"].as_str(), param["name"].as_str()) {
        (Some("path"), Some("item_id")) => param["schema"] = id("itm"),
        (Some("path"), Some("key_id")) => param["schema"] = id("key"),
        (Some("path"), Some("account_id")) => param["schema"] = id("acc"),
        (Some("path"), Some("event_id")) => {
            param["schema"] = json!({"type": "string", "pattern": "^evt_[A-Za-z0-9_]{1,250}$"});
        }
        (Some("header"), Some("Idempotency-Key")) => {
            param["schema"] = json!({"type": "string", "pattern": "^[!-~]{1,200}$"});
        }
        _ => {}
    }
}

/// A problem response, described.
fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn complete_operation(path: &str, op: &mut Value) {
    let secured = op.get("security").is_some();
    let has_body = op.get("requestBody").is_some();
    let params: Vec<(String, String)> = op
        .get("parameters")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["in"].as_str().unwrap_or_default().to_owned(),
                        p["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    // Problems the annotations declared as JSON are problem+json.
    for response in responses.values_mut() {
        let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
            continue;
        };
        let is_problem = content
            .get("application/json")
            .and_then(|c| c.pointer("/schema/$ref"))
            .is_some_and(|r| r == "#/components/schemas/Problem");
        if is_problem && let Some(json) = content.remove("application/json") {
            content.insert("application/problem+json".into(), json);
        }
    }
    let system = matches!(path, "/health" | "/ready" | "/openapi.json");
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    };
    add(
        "422",
        "A parameter, the body or the URI is invalid (`field` names it)",
    );
    if !matches!(path, "/health" | "/ready") {
        add("429", "Too many requests; see Retry-After");
    }
    if !system {
        add(
            "503",
            "The database (or the password-hashing queue) is busy or unavailable; see Retry-After",
        );
    }
    if secured {
        add("401", "No valid credentials, or the sign-in has ended");
        add("403", "Not allowed for these credentials");
    }
    if has_body {
        add("400", "The body is not valid JSON");
        add("413", "The body is too large");
        add("415", "The body is not application/json");
    }
    if path.contains('{') {
        add("404", "Not found (another user's looks the same)");
    }
    if params.iter().any(|(place, _)| place == "header") {
        add("400", "A header is malformed");
    }
}

/// Adds `pattern: ^[^\u0000]*$` to every free-text string schema (no format, enum or
/// pattern of its own), parameters included.
fn forbid_nul(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let free_text = map.get("type").is_some_and(|t| {
                t == "string"
                    || t.as_array()
                        .is_some_and(|ts| ts.iter().any(|t| t == "string"))
            }) && !map.contains_key("format")
                && !map.contains_key("enum")
                && !map.contains_key("pattern");
            if free_text {
                map.insert("pattern".into(), json!("^[^\\u0000]*$"));
            }
            for child in map.values_mut() {
                forbid_nul(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_nul),
        _ => {}
    }
}
