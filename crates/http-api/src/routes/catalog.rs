//! The public catalog.

use actix_web::{HttpResponse, web};

use billing_core::catalog::Catalog;
use serde::Serialize;
use utoipa::ToSchema;

use crate::dto::{PackView, PlanView};
use crate::state::ApiState;

/// The public plans, in upgrade order: by tier, then by the lowest price.
fn public_plans(catalog: &Catalog) -> Vec<PlanView> {
    let mut plans: Vec<_> = catalog
        .plans
        .iter()
        .filter(|(_, plan)| plan.public)
        .collect();
    plans.sort_by_key(|(id, plan)| {
        let cheapest = plan
            .prices
            .values()
            .map(|p| p.money(catalog.currency).amount)
            .min();
        (plan.tier, cheapest, id.as_str())
    });
    plans
        .into_iter()
        .map(|(id, plan)| PlanView::new(id, plan, catalog))
        .collect()
}

/// Public plans, from configuration, in upgrade order (by tier, then by price).
#[utoipa::path(get, path = "/v1/plans", tag = "catalog",
    responses((status = 200, description = "Plans shown to the public, in upgrade order", body = [PlanView])))]
pub async fn plans(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(public_plans(&state.billing.catalog))
}

/// What one action costs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    /// The action (`short_chat`).
    pub id: String,
    /// Credits it costs.
    pub credits: u64,
}

/// A usage meter that plans' quotas limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeterView {
    /// The meter (`exports`).
    pub id: String,
    /// Its display name.
    pub name: Option<String>,
    /// What one unit is.
    pub unit: Option<String>,
    /// `counter` (usage per period) or `gauge` (a level that goes up and down, never reset).
    pub kind: String,
}

/// Everything a pricing page shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogView {
    /// The currency of every price.
    pub currency: String,
    /// The time zone daily and monthly periods begin in.
    pub timezone: String,
    /// Public plans in upgrade order, each with its prices per interval, trial, allowance,
    /// quotas, models and features.
    pub plans: Vec<PlanView>,
    /// Credit packs for sale.
    pub packs: Vec<PackView>,
    /// What each action costs in credits.
    pub actions: Vec<ActionView>,
    /// The meters plans' quotas count.
    pub meters: Vec<MeterView>,
}

/// The whole public catalog in one response, for a pricing page.
#[utoipa::path(get, path = "/v1/catalog", tag = "catalog",
    responses((status = 200, description = "Plans, packs, action costs and meters", body = CatalogView)))]
pub async fn catalog(state: web::Data<ApiState>) -> HttpResponse {
    let catalog = &state.billing.catalog;
    HttpResponse::Ok().json(CatalogView {
        currency: catalog.currency.to_string(),
        timezone: catalog.timezone.clone(),
        plans: public_plans(catalog),
        packs: pack_views(catalog),
        actions: catalog
            .actions
            .iter()
            .map(|(id, credits)| ActionView {
                id: id.clone(),
                credits: *credits,
            })
            .collect(),
        meters: catalog
            .meters
            .iter()
            .map(|(id, meter)| MeterView {
                id: id.clone(),
                name: meter.name.clone(),
                unit: meter.unit.clone(),
                kind: meter.kind.as_str().to_owned(),
            })
            .collect(),
    })
}

/// Credit packs for sale.
#[utoipa::path(get, path = "/v1/packs", tag = "catalog",
    responses((status = 200, description = "Credit packs", body = [PackView])))]
pub async fn packs(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(pack_views(&state.billing.catalog))
}

fn pack_views(catalog: &Catalog) -> Vec<PackView> {
    catalog
        .packs
        .iter()
        .map(|(id, pack)| PackView::new(id, pack, catalog))
        .collect()
}
