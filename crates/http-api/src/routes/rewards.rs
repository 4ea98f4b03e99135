//! Engagement rewards: the caller's view and claims, and the admin's decisions on claims held
//! for approval. Every claim and decision is audited (they are POSTs that change something).

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use billing_core::ids::ClaimId;
use billing_core::rewards::{ClaimStatus, RewardClaim, eligibility};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::dto::rfc3339;
use crate::error::{ApiError, Problem};
use crate::extract::Json;
use crate::middleware::AuditNote;
use crate::state::ApiState;

/// The most bytes of evidence a claim may carry.
pub const MAX_EVIDENCE_BYTES: usize = 4096;

/// A claim of a reward.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimView {
    /// `rwc_…`.
    pub id: String,
    /// The reward.
    pub reward: String,
    /// `pending` (waiting for an admin), `granted` or `rejected`.
    pub status: String,
    /// Credits it grants.
    pub credits: u64,
    /// What the product sent as proof.
    pub evidence: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
    /// When it was decided (RFC 3339).
    pub decided_at: Option<String>,
    /// The account credited (`acc_…`).
    pub account_id: String,
    /// The user who claimed (`usr_…`).
    pub user_id: String,
}

impl From<&RewardClaim> for ClaimView {
    fn from(c: &RewardClaim) -> Self {
        Self {
            id: c.id.to_string(),
            reward: c.reward.clone(),
            status: c.status.as_str().to_owned(),
            credits: c.credits,
            evidence: c.evidence.clone(),
            created_at: rfc3339(c.created_at),
            decided_at: c.decided_at.map(rfc3339),
            account_id: c.account.to_string(),
            user_id: c.user.to_string(),
        }
    }
}

/// A reward as the caller sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RewardView {
    /// The reward's id.
    pub id: String,
    /// Its display name.
    pub name: Option<String>,
    /// Credits each claim grants.
    pub credits: u64,
    /// How many times an account may earn it.
    pub max_per_account: u32,
    /// Hours between two claims.
    pub cooldown_hours: u32,
    /// Whether an admin approves each claim.
    pub approval: bool,
    /// Claims of the caller's account that count (granted or pending).
    pub claimed: u32,
    /// Whether the caller may claim it now.
    pub claimable: bool,
    /// When the caller may claim it next, if a cooldown runs (RFC 3339).
    pub next_claim_at: Option<String>,
}

/// The catalog's rewards with the caller's standing on each.
#[utoipa::path(get, path = "/v1/rewards", tag = "rewards", security(("bearer" = [])),
    responses((status = 200, description = "Every reward", body = [RewardView])))]
pub async fn list(state: web::Data<ApiState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let (_, account) = caller.user()?;
    let claims = state.rewards.claims_of(account, None).await?;
    let now = state.billing.clock.now();
    let views: Vec<RewardView> = state
        .billing
        .catalog
        .rewards
        .iter()
        .map(|(id, reward)| {
            let mine: Vec<RewardClaim> =
                claims.iter().filter(|c| &c.reward == id).cloned().collect();
            let decision = eligibility(reward, &mine, now);
            RewardView {
                id: id.clone(),
                name: reward.name.clone(),
                credits: reward.credits,
                max_per_account: reward.max_per_account,
                cooldown_hours: reward.cooldown_hours,
                approval: reward.approval,
                claimed: u32::try_from(
                    mine.iter()
                        .filter(|c| c.status != ClaimStatus::Rejected)
                        .count(),
                )
                .unwrap_or(u32::MAX),
                claimable: decision.is_ok(),
                next_claim_at: match decision {
                    Err(billing_core::rewards::Ineligible::Cooldown { until, .. }) => {
                        Some(rfc3339(until))
                    }
                    _ => None,
                },
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// A claim, with the product's proof.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// What shows the engagement (a post's URL, a handle…): a JSON object up to 4 KiB,
    /// kept with the claim for an admin to check.
    #[serde(default)]
    pub evidence: Option<serde_json::Map<String, serde_json::Value>>,
}

impl crate::extract::Validate for ClaimRequest {
    fn validate(&self) -> Result<(), ApiError> {
        let size = self.evidence.as_ref().map_or(0, |e| {
            serde_json::Value::Object(e.clone()).to_string().len()
        });
        if size > MAX_EVIDENCE_BYTES {
            return Err(ApiError::invalid_field(
                "evidence",
                format!("must be at most {MAX_EVIDENCE_BYTES} bytes of JSON"),
            ));
        }
        Ok(())
    }
}

/// Claims a reward for the caller's account: `201` with the credits granted, or `202` when
/// the reward waits for an admin's approval.
#[utoipa::path(post, path = "/v1/rewards/{reward_id}/claim", tag = "rewards", security(("bearer" = [])),
    request_body = ClaimRequest,
    params(("reward_id" = String, Path, description = "The catalog reward")),
    responses(
        (status = 201, description = "Granted", body = ClaimView),
        (status = 202, description = "Held for an admin's approval", body = ClaimView),
        (status = 404, description = "No such reward", body = Problem),
        (status = 409, description = "Already claimed as often as allowed, or a claim is pending", body = Problem),
        (status = 429, description = "The reward's cooldown runs; see Retry-After", body = Problem),
    ))]
pub async fn claim(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<ClaimRequest>,
) -> Result<HttpResponse, ApiError> {
    let (user, account) = caller.user()?;
    let evidence = serde_json::Value::Object(body.into_inner().evidence.unwrap_or_default());
    let claim = state
        .billing
        .claim_reward(state.rewards.as_ref(), account, user, &path, evidence)
        .await?;
    req.extensions_mut().insert(AuditNote {
        target: Some(account.to_string()),
        details: json!({"reward": claim.reward, "claim": claim.id.to_string(), "status": claim.status.as_str(), "credits": claim.credits}),
    });
    let mut response = match claim.status {
        ClaimStatus::Pending => HttpResponse::Accepted(),
        _ => HttpResponse::Created(),
    };
    Ok(response.json(ClaimView::from(&claim)))
}

/// Which claims an admin lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClaimsQuery {
    /// `pending` (default), `granted`, `rejected` or `all`.
    #[param(pattern = "^(pending|granted|rejected|all)$")]
    pub status: Option<String>,
    /// At most this many, 1–200 (default 50), oldest first.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// Reward claims, oldest first: by default the ones waiting for a decision.
#[utoipa::path(get, path = "/v1/admin/reward-claims", tag = "admin", security(("bearer" = [])),
    params(ClaimsQuery),
    responses(
        (status = 200, description = "Claims", body = [ClaimView]),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 422, description = "An unknown status or a limit out of range", body = Problem),
    ))]
pub async fn admin_list(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<ClaimsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let status = match query.status.as_deref().unwrap_or("pending") {
        "pending" => Some(ClaimStatus::Pending),
        "granted" => Some(ClaimStatus::Granted),
        "rejected" => Some(ClaimStatus::Rejected),
        "all" => None,
        _ => {
            return Err(ApiError::invalid_field(
                "status",
                "must be pending, granted, rejected or all",
            ));
        }
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be 1 to 200"));
    }
    let claims = state.rewards.claims_with(status, limit).await?;
    Ok(HttpResponse::Ok().json(claims.iter().map(ClaimView::from).collect::<Vec<_>>()))
}

async fn decide(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    approve: bool,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id: ClaimId = path
        .parse()
        .map_err(|_| ApiError::not_found("reward claim"))?;
    let claim = state
        .billing
        .decide_reward_claim(state.rewards.as_ref(), &id, approve, &caller.actor())
        .await?;
    req.extensions_mut().insert(AuditNote {
        target: Some(claim.account.to_string()),
        details: json!({"claim": claim.id.to_string(), "reward": claim.reward, "status": claim.status.as_str(), "credits": claim.credits}),
    });
    Ok(HttpResponse::Ok().json(ClaimView::from(&claim)))
}

/// Approves a pending claim: its credits are granted (journaled, once).
#[utoipa::path(post, path = "/v1/admin/reward-claims/{claim_id}/approve", tag = "admin", security(("bearer" = [])),
    params(("claim_id" = String, Path, description = "`rwc_…`")),
    responses(
        (status = 200, description = "Granted", body = ClaimView),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "No such claim", body = Problem),
        (status = 409, description = "Already decided", body = Problem),
    ))]
pub async fn approve(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    decide(state, caller, req, path, true).await
}

/// Rejects a pending claim: nothing is granted, and the claim's place is free again.
#[utoipa::path(post, path = "/v1/admin/reward-claims/{claim_id}/reject", tag = "admin", security(("bearer" = [])),
    params(("claim_id" = String, Path, description = "`rwc_…`")),
    responses(
        (status = 200, description = "Rejected", body = ClaimView),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "No such claim", body = Problem),
        (status = 409, description = "Already decided", body = Problem),
    ))]
pub async fn reject(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    decide(state, caller, req, path, false).await
}
