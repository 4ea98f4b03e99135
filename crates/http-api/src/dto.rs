//! Request and response bodies. Timestamps are RFC 3339 strings, amounts of money decimal
//! strings, credits integers.

use billing_core::catalog::{Catalog, Pack, Plan};
use billing_core::ledger::{Grant, Hold, Receipt, Transaction};
use billing_core::records::{Account, Role, User};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{Validate, max_chars, max_chars_opt};

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The longest text each kind of field takes (characters). Documented in the OpenAPI
/// schemas; a longer value is 422 naming the field.
pub mod limits {
    /// An email address (RFC 5321's path limit).
    pub const EMAIL: usize = 254;
    /// A password (the rule is 8 to 128; longer is refused before hashing).
    pub const PASSWORD: usize = 128;
    /// A display name, an API key's name.
    pub const NAME: usize = 100;
    /// A saved item's title.
    pub const TITLE: usize = 200;
    /// An admin's reason for an adjustment.
    pub const REASON: usize = 500;
    /// A catalog id (action, model, feature, meter).
    pub const ID: usize = 64;
    /// A token presented back (refresh token, mailed code).
    pub const TOKEN: usize = 200;
    /// A saved item's content, in bytes.
    pub const CONTENT_BYTES: usize = 32 * 1024;
}

/// Sign-up.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Email address (case-insensitive; compared after Unicode NFKC normalisation).
    #[schema(max_length = 254, format = "email")]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// Display name, up to 100 characters.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

impl Validate for SignupRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("email", &self.email, limits::EMAIL)?;
        max_chars("password", &self.password, limits::PASSWORD)?;
        max_chars_opt("name", self.name.as_ref(), limits::NAME)
    }
}

/// Sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Email address.
    #[schema(max_length = 254)]
    pub email: String,
    /// Password.
    #[schema(max_length = 128)]
    pub password: String,
}

impl Validate for LoginRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("email", &self.email, limits::EMAIL)?;
        max_chars("password", &self.password, limits::PASSWORD)
    }
}

/// A refresh token presented to rotate or revoke it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last sign-in or refresh.
    #[schema(max_length = 200)]
    pub refresh_token: String,
}

impl Validate for RefreshRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("refresh_token", &self.refresh_token, limits::TOKEN)
    }
}

/// A new pair of tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// A short-lived JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// An opaque token to get the next pair; each works once.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
}

/// A user, as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// `usr_…`.
    pub id: String,
    /// Email address.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// `user` or `admin`.
    pub role: String,
    /// Whether the email was verified.
    pub email_verified: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: match u.role {
                Role::User => "user".into(),
                Role::Admin => "admin".into(),
            },
            email_verified: u.email_verified,
            created_at: rfc3339(u.created_at),
        }
    }
}

/// The billing account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// `acc_…`.
    pub id: String,
    /// The plan in force.
    pub plan: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.to_string(),
            plan: a.plan.clone(),
        }
    }
}

/// A signed-in session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// The user.
    pub user: UserView,
    /// Their account.
    pub account: AccountView,
    /// Tokens.
    pub tokens: TokenPair,
}

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// The user.
    pub user: UserView,
    /// Their account.
    pub account: AccountView,
    /// Spendable credits.
    pub balance: i64,
}

/// A price.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    /// `month` or `year`.
    pub interval: Option<String>,
    /// Decimal string, major units (`"9.99"`).
    pub amount: String,
    /// ISO 4217, lowercase.
    pub currency: String,
}

/// A plan's credit allowance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowanceView {
    /// Credits per period.
    pub credits: u64,
    /// `day`, `month` or `billing_period`.
    pub cadence: String,
    /// Credits that may carry into the next period.
    pub rollover_cap: u64,
}

/// A plan's limit on one meter.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    /// The meter.
    pub meter: String,
    /// Units per period (for a gauge: at any time); absent means unlimited.
    pub limit: Option<u64>,
    /// `day`, `month` or `billing_period`; null for a gauge, which never resets.
    pub period: Option<String>,
}

/// A public plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    /// Plan id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Display description.
    pub description: Option<String>,
    /// Prices by interval (none for a free plan).
    pub prices: Vec<PriceView>,
    /// Free trial days.
    pub trial_days: u32,
    /// Credits granted at sign-up.
    pub welcome_credits: u64,
    /// Credits granted every period.
    pub allowance: Option<AllowanceView>,
    /// Usage limits.
    pub quotas: Vec<QuotaView>,
    /// Models the plan may use (`*` for all).
    pub models: Vec<String>,
    /// Feature flags.
    pub features: Vec<String>,
    /// Whether this is the plan of accounts without a subscription.
    pub default: bool,
    /// Its place in the upgrade order (higher is an upgrade).
    pub tier: u32,
}

fn snake<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl PlanView {
    pub(crate) fn new(id: &str, plan: &Plan, catalog: &Catalog) -> Self {
        Self {
            id: id.to_owned(),
            name: plan.name.clone(),
            description: plan.description.clone(),
            prices: plan
                .prices
                .iter()
                .map(|(interval, price)| {
                    let money = price.money(catalog.currency);
                    PriceView {
                        interval: Some(interval.as_str().to_owned()),
                        amount: money.amount.to_string(),
                        currency: money.currency.to_string(),
                    }
                })
                .collect(),
            trial_days: plan.trial_days,
            welcome_credits: plan.welcome_credits,
            allowance: plan.allowance.as_ref().map(|a| AllowanceView {
                credits: a.credits,
                cadence: snake(a.cadence),
                rollover_cap: a.rollover_cap,
            }),
            quotas: plan
                .quotas
                .iter()
                .map(|(meter, rule)| QuotaView {
                    meter: meter.clone(),
                    limit: rule.limit,
                    period: rule.period.map(snake),
                })
                .collect(),
            models: plan.models.clone(),
            features: plan.features.iter().cloned().collect(),
            default: catalog.default_plan == id,
            tier: plan.tier,
        }
    }
}

/// A credit pack for sale.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackView {
    /// Pack id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Credits bought.
    pub credits: u64,
    /// Extra credits given with it.
    pub bonus_credits: u64,
    /// What it costs.
    pub price: PriceView,
    /// Plans that may buy it (absent: all).
    pub plans: Option<Vec<String>>,
    /// Days until its credits expire (absent: never).
    pub expires_after_days: Option<u32>,
}

impl PackView {
    pub(crate) fn new(id: &str, pack: &Pack, catalog: &Catalog) -> Self {
        let money = pack.price.money(catalog.currency);
        Self {
            id: id.to_owned(),
            name: pack.name.clone(),
            credits: pack.credits,
            bonus_credits: pack.bonus_credits,
            price: PriceView {
                interval: None,
                amount: money.amount.to_string(),
                currency: money.currency.to_string(),
            },
            plans: pack.plans.clone(),
            expires_after_days: pack.expires_after_days,
        }
    }
}

/// A grant of credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    /// `grt_…`.
    pub id: String,
    /// `welcome`, `period_allowance`, `purchase`, …
    pub source: String,
    /// Credits granted.
    pub amount: u64,
    /// Credits left.
    pub remaining: u64,
    /// RFC 3339, or absent if they never expire.
    pub expires_at: Option<String>,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> Self {
        Self {
            id: g.id.to_string(),
            source: g.source.as_str().to_owned(),
            amount: g.amount,
            remaining: g.remaining,
            expires_at: g.expires_at.map(rfc3339),
        }
    }
}

/// A pending hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    /// `hld_…`.
    pub id: String,
    /// Credits reserved.
    pub amount: u64,
    /// What it is for.
    pub reference: Option<String>,
    /// RFC 3339.
    pub expires_at: String,
}

impl From<&Hold> for HoldView {
    fn from(h: &Hold) -> Self {
        Self {
            id: h.id.to_string(),
            amount: h.amount,
            reference: h.reference.clone(),
            expires_at: rfc3339(h.expires_at),
        }
    }
}

/// An account's credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// Spendable credits (negative only with a plan's overdraft).
    pub available: i64,
    /// Credits reserved by pending holds.
    pub held: u64,
    /// Live grants, in the order spending burns them.
    pub grants: Vec<GrantView>,
    /// Pending holds.
    pub holds: Vec<HoldView>,
}

impl From<&billing_core::records::Balance> for BalanceView {
    fn from(b: &billing_core::records::Balance) -> Self {
        Self {
            available: b.available,
            held: b.held,
            grants: b.grants.iter().map(GrantView::from).collect(),
            holds: b.holds.iter().map(HoldView::from).collect(),
        }
    }
}

/// One journal entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionView {
    /// `txn_…`.
    pub id: String,
    /// `grant`, `debit`, `reserve`, `capture`, `void`, `hold_expiry`, `expiry`, `refund`.
    pub kind: String,
    /// Credits moved.
    pub amount: u64,
    /// Change to the spendable balance.
    pub delta: i64,
    /// What it was for (an action, a pack…).
    pub reference: Option<String>,
    /// A note (an admin's reason…).
    pub memo: Option<String>,
    /// The hold it reserved or resolved.
    pub hold_id: Option<String>,
    /// The grant it created.
    pub grant_id: Option<String>,
    /// For a refund, the spend it refunds.
    pub refund_of: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Transaction> for TransactionView {
    fn from(t: &Transaction) -> Self {
        Self {
            id: t.id.to_string(),
            kind: t.kind.as_str().to_owned(),
            amount: t.amount,
            delta: t.delta(),
            reference: t.reference.clone(),
            memo: t.memo.clone(),
            hold_id: t.hold.as_ref().map(ToString::to_string),
            grant_id: t.grant.as_ref().map(ToString::to_string),
            refund_of: t.refund_of.as_ref().map(ToString::to_string),
            created_at: rfc3339(t.created_at),
        }
    }
}

/// A page of the journal, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalPage {
    /// Entries.
    pub items: Vec<TransactionView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// Query of a journal page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JournalQuery {
    /// Entries per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^txn_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}

/// Spend an action's configured cost.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendRequest {
    /// An action of the catalog (`short_chat`).
    #[schema(max_length = 64)]
    pub action: String,
}

impl Validate for SpendRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("action", &self.action, limits::ID)
    }
}

/// What a credit movement did. A replay with the same Idempotency-Key returns the same body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    /// The journal entry (`txn_…`).
    pub transaction_id: Option<String>,
    /// Its kind.
    pub kind: Option<String>,
    /// Credits moved.
    pub amount: u64,
    /// Spendable credits afterwards.
    pub balance: i64,
    /// The hold placed or resolved.
    pub hold_id: Option<String>,
    /// The grant created.
    pub grant_id: Option<String>,
    /// RFC 3339.
    pub at: String,
}

impl From<&Receipt> for ReceiptView {
    fn from(r: &Receipt) -> Self {
        Self {
            transaction_id: r.txn.as_ref().map(ToString::to_string),
            kind: r.kind.map(|k| k.as_str().to_owned()),
            amount: r.amount,
            balance: r.balance,
            hold_id: r.hold.as_ref().map(ToString::to_string),
            grant_id: r.grant.as_ref().map(ToString::to_string),
            at: rfc3339(r.at),
        }
    }
}

/// An admin's adjustment of an account's credits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// Credits to add (positive) or take (negative); not zero, at most 10^15 either way.
    #[schema(minimum = -1_000_000_000_000_000_i64, maximum = 1_000_000_000_000_000_i64)]
    pub delta: i64,
    /// Why, 1 to 500 characters; recorded in the journal and the audit log.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

impl Validate for AdjustRequest {
    fn validate(&self) -> Result<(), ApiError> {
        if self.delta == 0 {
            return Err(ApiError::invalid_field("delta", "must not be zero"));
        }
        if self.delta.unsigned_abs() > 1_000_000_000_000_000 {
            return Err(ApiError::invalid_field(
                "delta",
                "must be at most 10^15 either way",
            ));
        }
        max_chars("reason", &self.reason, limits::REASON)
    }
}

/// A meter's usage in the current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaStatusView {
    /// The meter.
    pub meter: String,
    /// `counter` (usage per period) or `gauge` (a level that goes up and down).
    pub kind: String,
    /// Units allowed per period (for a gauge: at any time); absent means unlimited.
    pub limit: Option<u64>,
    /// Units used this period (for a gauge: held now).
    pub used: u64,
    /// Units left; absent means unlimited.
    pub remaining: Option<u64>,
    /// RFC 3339: when the period began; null for a gauge.
    pub period_start: Option<String>,
    /// RFC 3339: when the period ends and usage starts again from zero; null for a gauge,
    /// which never resets.
    pub resets_at: Option<String>,
}

impl QuotaStatusView {
    /// The view of `used` units of `meter` in `window`.
    pub(crate) fn new(
        meter: &str,
        kind: billing_core::catalog::MeterKind,
        limit: Option<u64>,
        used: u64,
        window: billing_core::quota::Window,
    ) -> Self {
        let periodic = !window.is_forever();
        Self {
            meter: meter.to_owned(),
            kind: kind.as_str().to_owned(),
            limit,
            used,
            remaining: limit.map(|l| l.saturating_sub(used)),
            period_start: periodic.then(|| rfc3339(window.start)),
            resets_at: periodic.then(|| rfc3339(window.end)),
        }
    }
}

/// Usage to record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackRequestBody {
    /// Units, 1 to 1,000,000,000 (default 1); for a gauge meter, -1 to -1,000,000,000
    /// releases units.
    #[serde(default)]
    #[schema(schema_with = signed_units_schema)]
    pub amount: Option<i64>,
}

/// 1 to [`MAX_UNITS`], or -1 to -[`MAX_UNITS`]: a signed amount that is never 0 (or null,
/// for the default).
pub(crate) fn signed_units_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    let max = i64::try_from(MAX_UNITS).unwrap_or(i64::MAX);
    OneOfBuilder::new()
        .item(range(1, max))
        .item(range(-max, -1))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// The most units one request may track or ask about.
pub const MAX_UNITS: u64 = 1_000_000_000;

/// 422 naming `field` unless `amount` (if given) is 1 to [`MAX_UNITS`], or -1 to
/// -[`MAX_UNITS`] (a release, which only a gauge takes: see `routes::quotas::amount_for`).
pub(crate) fn signed_units(field: &str, amount: Option<i64>) -> Result<(), ApiError> {
    match amount {
        Some(0) => Err(ApiError::invalid_field(field, "must not be 0")),
        Some(n) if n.unsigned_abs() > MAX_UNITS => Err(ApiError::invalid_field(
            field,
            "must be between -1000000000 and 1000000000",
        )),
        _ => Ok(()),
    }
}

/// 422 naming `field` unless `amount` (if given) is 1 to [`MAX_UNITS`].
pub(crate) fn units(field: &str, amount: Option<u64>) -> Result<(), ApiError> {
    match amount {
        Some(0) => Err(ApiError::invalid_field(field, "must be at least 1")),
        Some(n) if n > MAX_UNITS => {
            Err(ApiError::invalid_field(field, "must be at most 1000000000"))
        }
        _ => Ok(()),
    }
}

impl Validate for TrackRequestBody {
    fn validate(&self) -> Result<(), ApiError> {
        signed_units("amount", self.amount)
    }
}

/// A question for the entitlement decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementRequest {
    /// `action`, `model`, `feature` or `meter`.
    pub kind: String,
    /// The action, model, feature or meter.
    #[schema(max_length = 64)]
    pub name: String,
    /// For a meter: units, 1 to 1,000,000,000 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub amount: Option<u64>,
}

impl Validate for EntitlementRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("name", &self.name, limits::ID)?;
        units("amount", self.amount)
    }
}

/// Query of a page of users.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// Part of an email or name, up to 100 characters.
    #[param(max_length = 100)]
    pub search: Option<String>,
    /// Per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^usr_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    /// Users.
    pub items: Vec<UserView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// An account as an admin sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDetailView {
    /// `acc_…`.
    pub id: String,
    /// The plan in force.
    pub plan: String,
    /// RFC 3339.
    pub created_at: String,
    /// The live subscription's status, if any.
    pub subscription_status: Option<String>,
    /// Credits.
    pub balance: BalanceView,
}

/// Query of a page of the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only records about this account or user (its id, up to 64 characters).
    #[param(max_length = 64)]
    pub target: Option<String>,
    /// Per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^aud_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}

/// One audit record.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// `aud_…`.
    pub id: String,
    /// A user id, `admin-key` or `anonymous`.
    pub actor: String,
    /// Method and route (`POST /v1/credits/spend`).
    pub action: String,
    /// What was acted on.
    pub target: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
    /// Status and details.
    pub details: serde_json::Value,
    /// RFC 3339.
    pub at: String,
}

impl From<&billing_core::records::AuditRecord> for AuditView {
    fn from(r: &billing_core::records::AuditRecord) -> Self {
        Self {
            id: r.id.to_string(),
            actor: r.actor.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            request_id: r.request_id.clone(),
            details: r.details.clone(),
            at: rfc3339(r.at),
        }
    }
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Records.
    pub items: Vec<AuditView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// Profile changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// Display name, up to 100 characters (empty clears it).
    #[serde(default)]
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

impl Validate for ProfileUpdate {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars_opt("name", self.name.as_ref(), limits::NAME)
    }
}

/// A new saved item.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSavedItem {
    /// `prompt` or `reply`.
    pub kind: String,
    /// A title, up to 200 characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub title: Option<String>,
    /// The text, up to 32 KiB.
    #[schema(min_length = 1, max_length = 32768)]
    pub content: String,
    /// Client data: a JSON object.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

impl Validate for NewSavedItem {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars_opt("title", self.title.as_ref(), limits::TITLE)?;
        if self.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(ApiError::invalid_field("metadata", "must be a JSON object"));
        }
        if self.content.len() > limits::CONTENT_BYTES {
            return Err(ApiError::invalid_field("content", "must be at most 32 KiB"));
        }
        Ok(())
    }
}

/// A saved item.
#[derive(Debug, Serialize, ToSchema)]
pub struct SavedItemView {
    /// `itm_…`.
    pub id: String,
    /// `prompt` or `reply`.
    pub kind: String,
    /// A title.
    pub title: Option<String>,
    /// The text.
    pub content: String,
    /// Client data.
    pub metadata: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&billing_core::records::SavedItem> for SavedItemView {
    fn from(i: &billing_core::records::SavedItem) -> Self {
        Self {
            id: i.id.clone(),
            kind: i.kind.clone(),
            title: i.title.clone(),
            content: i.content.clone(),
            metadata: i.metadata.clone(),
            created_at: rfc3339(i.created_at),
        }
    }
}

/// Query of saved items.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ItemQuery {
    /// `prompt` or `reply`; all if absent.
    pub kind: Option<String>,
    /// Per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^itm_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}

/// A page of saved items.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage {
    /// Items.
    pub items: Vec<SavedItemView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A name to recognise it by, up to 100 characters.
    #[schema(max_length = 100)]
    pub name: String,
}

impl Validate for CreateApiKey {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("name", &self.name, limits::NAME)
    }
}

/// An API key, without the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// `key_…`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if revoked.
    pub revoked_at: Option<String>,
}

impl From<&billing_core::records::ApiKey> for ApiKeyView {
    fn from(k: &billing_core::records::ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

/// A new API key, with the key itself: it is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyCreated {
    /// The key; send it as `Authorization: Bearer …`. Not retrievable later.
    pub key: String,
    /// The key's record.
    #[serde(flatten)]
    pub details: ApiKeyView,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password now.
    #[schema(max_length = 128)]
    pub current_password: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

impl Validate for ChangePassword {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("current_password", &self.current_password, limits::PASSWORD)?;
        max_chars("new_password", &self.new_password, limits::PASSWORD)
    }
}

/// A password-reset request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestReset {
    /// The account's email.
    #[schema(max_length = 254)]
    pub email: String,
}

impl Validate for RequestReset {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("email", &self.email, limits::EMAIL)
    }
}

/// A password reset with its token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmReset {
    /// The token from the email.
    #[schema(max_length = 200)]
    pub token: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

impl Validate for ConfirmReset {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("token", &self.token, limits::TOKEN)?;
        max_chars("new_password", &self.new_password, limits::PASSWORD)
    }
}

/// An email verification with its token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmVerification {
    /// The token from the email.
    #[schema(max_length = 200)]
    pub token: String,
}

impl Validate for ConfirmVerification {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("token", &self.token, limits::TOKEN)
    }
}

/// A webhook delivery was taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceived {
    /// Always true.
    pub received: bool,
    /// The event had been received before (nothing more will happen for it).
    pub duplicate: bool,
}

/// A stored payment webhook event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventView {
    /// Tollgate's id (`whk_…`), the list's cursor.
    pub id: String,
    /// The provider's event id (`evt_…`).
    pub event_id: String,
    /// The event type.
    pub kind: String,
    /// `received`, `processed`, `failed` or `ignored`.
    pub status: String,
    /// Attempts to apply it so far.
    pub attempts: u32,
    /// Why the last attempt failed, or why it was ignored.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub received_at: String,
    /// The event as the provider sent it.
    pub payload: serde_json::Value,
}

impl From<&billing_core::records::WebhookEvent> for WebhookEventView {
    fn from(e: &billing_core::records::WebhookEvent) -> Self {
        Self {
            id: e.id.to_string(),
            event_id: e.external_id.clone(),
            kind: e.kind.clone(),
            status: e.status.as_str().to_owned(),
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            received_at: rfc3339(e.received_at),
            payload: e.payload.clone(),
        }
    }
}

/// A page of webhook events.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventPage {
    /// Events, oldest first.
    pub items: Vec<WebhookEventView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// Query of a page of webhook events.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WebhookQuery {
    /// `received`, `processed`, `failed` (the default: the dead letters to look at) or
    /// `ignored`.
    pub status: Option<String>,
    /// Per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^whk_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}

/// The caller's plan and subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionStateView {
    /// The plan in force (the account's; the default plan without a subscription).
    pub plan: String,
    /// The subscription, if the account has a live one.
    pub subscription: Option<SubscriptionView>,
}

/// A subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// `sub_…`.
    pub id: String,
    /// The subscribed plan.
    pub plan: String,
    /// `month` or `year`.
    pub interval: String,
    /// `trialing`, `active`, `past_due`, `unpaid`, `paused`, `incomplete`, `canceled`…
    pub status: String,
    /// Whether the status grants the plan's access.
    pub grants_access: bool,
    /// The current period's start (RFC 3339).
    pub current_period_start: Option<String>,
    /// The current period's end (RFC 3339).
    pub current_period_end: Option<String>,
    /// When the trial ends (RFC 3339).
    pub trial_end: Option<String>,
    /// It ends at the period's end instead of renewing.
    pub cancel_at_period_end: bool,
    /// A plan change scheduled for the next period.
    pub scheduled_plan: Option<String>,
    /// When it ended (RFC 3339).
    pub canceled_at: Option<String>,
}

impl From<&billing_core::subscription::Subscription> for SubscriptionView {
    fn from(s: &billing_core::subscription::Subscription) -> Self {
        Self {
            id: s.id.to_string(),
            plan: s.plan.clone(),
            interval: s.interval.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            grants_access: s.status.grants_access(),
            current_period_start: s.current_period.map(|p| rfc3339(p.start)),
            current_period_end: s.current_period.map(|p| rfc3339(p.end)),
            trial_end: s.trial_end.map(rfc3339),
            cancel_at_period_end: s.cancel_at_period_end,
            scheduled_plan: s.pending_plan.clone(),
            canceled_at: s.canceled_at.map(rfc3339),
        }
    }
}

/// A page of billing history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^pay_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub after: Option<String>,
}
