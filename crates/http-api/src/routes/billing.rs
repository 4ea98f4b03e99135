//! Taking money: checkouts, quick buys, the subscription's cancellation, the customer portal,
//! billing history, and an admin's comp. The provider is Stripe, or the local stand-in
//! when no Stripe key is set (`/v1/local-pay/…`).

use actix_web::{HttpRequest, HttpResponse, web};
use billing_core::catalog::Interval;
use billing_core::payments::Payment;
use billing_core::ports::PaymentGateway;
use billing_core::usecases::ReturnUrls;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::dto::{HistoryQuery, SubscriptionView, rfc3339};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Validate, max_chars};
use crate::routes::idempotency_key;
use crate::state::ApiState;

const URL_MAX: usize = 2000;

/// Buy a credit pack through a hosted checkout.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackCheckoutRequest {
    /// The pack (`GET /v1/packs`).
    #[schema(max_length = 64)]
    pub pack: String,
    /// Where to send the customer after paying (an allowed origin).
    #[schema(max_length = 2000)]
    pub success_url: String,
    /// Where to send them if they give up (an allowed origin).
    #[schema(max_length = 2000)]
    pub cancel_url: String,
}

impl Validate for PackCheckoutRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("pack", &self.pack, 64)?;
        max_chars("success_url", &self.success_url, URL_MAX)?;
        max_chars("cancel_url", &self.cancel_url, URL_MAX)
    }
}

/// Subscribe to a plan through a hosted checkout.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanCheckoutRequest {
    /// The plan (`GET /v1/plans`).
    #[schema(max_length = 64)]
    pub plan: String,
    /// `month` or `year`.
    pub interval: IntervalParam,
    /// Where to send the customer after paying (an allowed origin).
    #[schema(max_length = 2000)]
    pub success_url: String,
    /// Where to send them if they give up (an allowed origin).
    #[schema(max_length = 2000)]
    pub cancel_url: String,
}

impl Validate for PlanCheckoutRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("plan", &self.plan, 64)?;
        max_chars("success_url", &self.success_url, URL_MAX)?;
        max_chars("cancel_url", &self.cancel_url, URL_MAX)
    }
}

/// A billing interval.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntervalParam {
    /// Monthly.
    Month,
    /// Yearly.
    Year,
}

impl From<IntervalParam> for Interval {
    fn from(value: IntervalParam) -> Self {
        match value {
            IntervalParam::Month => Self::Month,
            IntervalParam::Year => Self::Year,
        }
    }
}

/// A started checkout: send the customer to `url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    /// The session (`cs_…`).
    pub id: String,
    /// The payment page.
    pub url: String,
}

/// Buy a pack in the product's own page.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuickBuyRequest {
    /// The pack (`GET /v1/packs`).
    #[schema(max_length = 64)]
    pub pack: String,
}

impl Validate for QuickBuyRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("pack", &self.pack, 64)
    }
}

/// A payment to confirm with the provider's front-end library.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuickBuyView {
    /// The payment (`pi_…`).
    pub id: String,
    /// What Stripe.js confirms it with.
    pub client_secret: String,
    /// With the local payment adapter: the page that completes it.
    pub url: Option<String>,
}

/// End the subscription.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// At the current period's end (default), or now.
    #[serde(default)]
    pub at_period_end: Option<bool>,
}

impl Validate for CancelRequest {}

/// Move the subscription to another plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanRequest {
    /// The plan (`GET /v1/plans`); the plan in force takes back a scheduled change.
    #[schema(max_length = 64)]
    pub plan: String,
}

impl Validate for ChangePlanRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("plan", &self.plan, 64)
    }
}

/// Open the provider's customer portal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalRequest {
    /// Where the portal returns to (an allowed origin).
    #[schema(max_length = 2000)]
    pub return_url: String,
}

impl Validate for PortalRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("return_url", &self.return_url, URL_MAX)
    }
}

/// A link to the customer portal.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalView {
    /// The portal.
    pub url: String,
}

/// Put an account on a plan without payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompRequest {
    /// The plan.
    #[schema(max_length = 64)]
    pub plan: String,
}

impl Validate for CompRequest {
    fn validate(&self) -> Result<(), ApiError> {
        max_chars("plan", &self.plan, 64)
    }
}

/// A payment and what became of the credits it bought.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// Tollgate's id (`pay_…`).
    pub id: String,
    /// `pack` or `invoice`.
    pub kind: String,
    /// The provider's id of what was paid (`cs_…`, `pi_…`, `in_…`).
    pub external_id: String,
    /// The pack or plan bought.
    pub item: String,
    /// Paid, in major units (`"19.00"`).
    pub amount: String,
    /// The currency.
    pub currency: String,
    /// Refunded so far, in major units.
    pub refunded: String,
    /// `open`, `won` or `lost` if the payment was disputed.
    pub dispute: Option<String>,
    /// Credits the payment granted.
    pub credits: u64,
    /// Of those, taken back because of refunds or a dispute.
    pub credits_withheld: u64,
    /// When it was recorded.
    pub created_at: String,
}

/// A page of billing history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    /// The payments.
    pub items: Vec<PaymentView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

fn gateway(state: &ApiState) -> Result<&dyn PaymentGateway, ApiError> {
    state.payments.as_deref().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "payments_not_configured",
            "Payments are not configured",
            "no payment provider is configured (set a Stripe key, or run outside production for the local one)",
        )
    })
}

/// The origin (`scheme://host[:port]`) of an absolute http(s) URL without credentials.
pub(crate) fn origin_of(url: &str) -> Option<(&str, &str, Option<&str>)> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') || authority.contains('\\') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (host, Some(port))
        }
        _ => (authority, None),
    };
    Some((scheme, host, port))
}

/// 422 unless `url` is an http(s) URL on an allowed origin: an entry of
/// `payments.return_origins` equal to its origin, or naming its scheme and host with no
/// port (any port). Customers are never sent elsewhere (no open redirect).
pub(crate) fn check_return_url(state: &ApiState, field: &str, url: &str) -> Result<(), ApiError> {
    let Some((scheme, host, port)) = origin_of(url) else {
        return Err(ApiError::invalid_field(
            field,
            "must be an absolute http(s) URL without credentials",
        ));
    };
    let allowed = state.return_origins.iter().any(|entry| {
        origin_of(entry).is_some_and(|(s, h, p)| {
            s == scheme && h.eq_ignore_ascii_case(host) && (p.is_none() || p == port)
        })
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            field,
            format!(
                "`{scheme}://{host}` is not an allowed return origin (payments.return_origins)"
            ),
        ))
    }
}

/// The checkout's return URLs, each checked with [`check_return_url`].
fn return_urls(
    state: &ApiState,
    success_url: String,
    cancel_url: String,
) -> Result<ReturnUrls, ApiError> {
    check_return_url(state, "success_url", &success_url)?;
    check_return_url(state, "cancel_url", &cancel_url)?;
    Ok(ReturnUrls {
        success_url,
        cancel_url,
    })
}

/// Starts a hosted checkout for a credit pack (seed 001's `buy_pack`). Answers where to
/// send the customer; the credits are granted when the payment is confirmed (by Stripe's
/// webhook, or the local page), once per payment. `Idempotency-Key` makes a retry return
/// the same session.
#[utoipa::path(post, path = "/v1/checkout/pack", tag = "billing", security(("bearer" = [])),
    request_body = PackCheckoutRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 200, description = "Send the customer to `url`", body = CheckoutView),
        (status = 422, description = "Unknown pack, a pack not sold on the plan, or a return URL outside the allowed origins", body = Problem),
        (status = 502, description = "The payment provider refused", body = Problem),
    ))]
pub async fn checkout_pack(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<PackCheckoutRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let body = body.into_inner();
    let urls = return_urls(&state, body.success_url, body.cancel_url)?;
    let key = idempotency_key(&req, &state)?;
    let session = state
        .billing
        .checkout_pack(gateway(&state)?, account, &body.pack, urls, &key)
        .await?;
    Ok(HttpResponse::Ok().json(CheckoutView {
        id: session.id,
        url: session.url,
    }))
}

/// Starts a hosted checkout for a plan and interval. The plan's trial applies only to an
/// account's first subscription; promotion codes are accepted. Refused while the account
/// has a live subscription.
#[utoipa::path(post, path = "/v1/checkout/subscription", tag = "billing", security(("bearer" = [])),
    request_body = PlanCheckoutRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 200, description = "Send the customer to `url`", body = CheckoutView),
        (status = 409, description = "A live subscription exists (`already_subscribed`)", body = Problem),
        (status = 422, description = "Unknown plan, no price for the interval, or a return URL outside the allowed origins", body = Problem),
        (status = 502, description = "The payment provider refused", body = Problem),
    ))]
pub async fn checkout_subscription(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<PlanCheckoutRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let body = body.into_inner();
    let urls = return_urls(&state, body.success_url, body.cancel_url)?;
    let key = idempotency_key(&req, &state)?;
    let session = state
        .billing
        .checkout_subscription(
            gateway(&state)?,
            account,
            &body.plan,
            body.interval.into(),
            urls,
            &key,
        )
        .await?;
    Ok(HttpResponse::Ok().json(CheckoutView {
        id: session.id,
        url: session.url,
    }))
}

/// Starts a pack payment confirmed in the product's own page (seed 001's
/// `buy_quick_pack`): answers a `client_secret` for Stripe.js.
#[utoipa::path(post, path = "/v1/checkout/quick-buy", tag = "billing", security(("bearer" = [])),
    request_body = QuickBuyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 200, description = "Confirm it with `client_secret`", body = QuickBuyView),
        (status = 422, description = "Unknown pack or not sold on the plan", body = Problem),
        (status = 502, description = "The payment provider refused", body = Problem),
    ))]
pub async fn quick_buy(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<QuickBuyRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let key = idempotency_key(&req, &state)?;
    let bought = state
        .billing
        .quick_buy(gateway(&state)?, account, &body.pack, &key)
        .await?;
    Ok(HttpResponse::Ok().json(QuickBuyView {
        id: bought.id,
        client_secret: bought.client_secret,
        url: bought.url,
    }))
}

/// Ends the caller's subscription at the period's end (default) or now.
#[utoipa::path(post, path = "/v1/subscription/cancel", tag = "billing", security(("bearer" = [])),
    request_body = CancelRequest,
    responses(
        (status = 200, description = "The subscription as it now is", body = SubscriptionView),
        (status = 404, description = "No live subscription", body = Problem),
    ))]
pub async fn cancel_subscription(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<CancelRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let at_period_end = body.at_period_end.unwrap_or(true);
    let sub = state
        .billing
        .set_cancellation(gateway(&state)?, account, at_period_end, false)
        .await?;
    Ok(HttpResponse::Ok().json(SubscriptionView::from(&sub)))
}

/// Takes back a cancellation at the period's end.
#[utoipa::path(post, path = "/v1/subscription/resume", tag = "billing", security(("bearer" = [])),
    responses(
        (status = 200, description = "The subscription as it now is", body = SubscriptionView),
        (status = 404, description = "No live subscription", body = Problem),
    ))]
pub async fn resume_subscription(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let sub = state
        .billing
        .set_cancellation(gateway(&state)?, account, true, true)
        .await?;
    Ok(HttpResponse::Ok().json(SubscriptionView::from(&sub)))
}

/// Moves the caller's subscription to another plan on the same interval. By default an
/// upgrade applies at once (the prorated difference is billed now and the period's
/// allowance topped up) and a downgrade at the period's end (`scheduled_plan` until then);
/// the catalog's `plan_changes` can say otherwise. Naming the plan in force takes back a
/// scheduled change.
#[utoipa::path(post, path = "/v1/subscription/change", tag = "billing", security(("bearer" = [])),
    request_body = ChangePlanRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 200, description = "The subscription as it now is", body = SubscriptionView),
        (status = 404, description = "No live subscription", body = Problem),
        (status = 409, description = "The subscription cannot change now (not active or trialing)", body = Problem),
        (status = 422, description = "Unknown plan, already on it, not sold on this interval, or a comp", body = Problem),
        (status = 502, description = "The payment provider refused", body = Problem),
    ))]
pub async fn change_plan(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<ChangePlanRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let key = idempotency_key(&req, &state)?;
    let sub = state
        .billing
        .change_plan(gateway(&state)?, account, &body.plan, &key)
        .await?;
    Ok(HttpResponse::Ok().json(SubscriptionView::from(&sub)))
}

/// A link to the provider's customer portal (payment methods, invoices).
#[utoipa::path(post, path = "/v1/billing/portal", tag = "billing", security(("bearer" = [])),
    request_body = PortalRequest,
    responses(
        (status = 200, description = "Send the customer to `url`", body = PortalView),
        (status = 404, description = "The account has no customer at the provider yet (always so with the local adapter, which has no portal)", body = Problem),
    ))]
pub async fn portal(
    state: web::Data<ApiState>,
    caller: Caller,
    body: Json<PortalRequest>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    check_return_url(&state, "return_url", &body.return_url)?;
    let gateway = gateway(&state)?;
    let customer = state
        .billing
        .payments
        .customer_of(gateway.provider(), account)
        .await?;
    let url = match customer {
        Some(customer) => gateway
            .portal_url(&customer, body.into_inner().return_url)
            .await
            .map_err(billing_core::usecases::BillingError::from)?,
        // No checkout made one yet (the local adapter never does): nothing to manage.
        None => return Err(ApiError::not_found("customer")),
    };
    Ok(HttpResponse::Ok().json(PortalView { url }))
}

fn payment_view(payment: &Payment, refunded: i64, dispute: Option<String>) -> PaymentView {
    let money = |minor| billing_core::money::Money::from_minor_units(minor, payment.currency);
    PaymentView {
        id: payment.id.to_string(),
        kind: payment.kind.as_str().to_owned(),
        external_id: payment.external_id.clone(),
        item: payment.item.clone(),
        amount: money(payment.amount_minor).amount.to_string(),
        currency: payment.currency.code().to_owned(),
        refunded: money(refunded).amount.to_string(),
        dispute,
        credits: payment.credits,
        credits_withheld: payment.withheld,
        created_at: rfc3339(payment.created_at),
    }
}

/// The caller's payments, newest first: packs and subscription invoices, with refunds,
/// disputes and the credits each granted and had taken back.
#[utoipa::path(get, path = "/v1/billing/history", tag = "billing", security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "A page of payments", body = PaymentPage),
    ))]
pub async fn history(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let query = query.into_inner();
    let page = state
        .billing
        .payments
        .payments(
            account,
            crate::routes::page(query.limit, query.after, "pay")?,
        )
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for payment in &page.items {
        let charges = match &payment.payment_intent {
            Some(intent) => state.billing.payments.charges_for(intent).await?,
            None => Vec::new(),
        };
        let state = billing_core::payments::ChargeState::combined(&charges, payment.amount_minor);
        let refunded = state.refunded_minor;
        let dispute = state.dispute.map(|d| d.as_str().to_owned());
        items.push(payment_view(payment, refunded, dispute));
    }
    Ok(HttpResponse::Ok().json(PaymentPage {
        items,
        next: page.next,
    }))
}

/// Puts an account on a plan without payment (a comp) until an admin cancels it or a paid
/// subscription replaces it. Refused while a paid subscription is live.
#[utoipa::path(post, path = "/v1/admin/accounts/{account_id}/plan", tag = "admin", security(("bearer" = [])),
    request_body = CompRequest,
    params(("account_id" = String, Path, description = "`acc_…`")),
    responses(
        (status = 200, description = "The comp subscription", body = SubscriptionView),
        (status = 404, description = "No such account", body = Problem),
        (status = 409, description = "A paid subscription is live (`already_subscribed`)", body = Problem),
        (status = 422, description = "Unknown plan", body = Problem),
    ))]
pub async fn comp(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<CompRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let account = path.parse().map_err(|_| ApiError::not_found("account"))?;
    let sub = state.billing.comp(&account, &body.plan).await?;
    Ok(HttpResponse::Ok().json(SubscriptionView::from(&sub)))
}
