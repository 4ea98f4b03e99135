//! The public catalog.

use actix_web::{HttpResponse, web};

use crate::dto::{PackView, PlanView};
use crate::state::ApiState;

/// Public plans, from configuration.
#[utoipa::path(get, path = "/v1/plans", tag = "catalog",
    responses((status = 200, description = "Plans shown to the public", body = [PlanView])))]
pub async fn plans(state: web::Data<ApiState>) -> HttpResponse {
    let catalog = &state.billing.catalog;
    let plans: Vec<PlanView> = catalog
        .plans
        .iter()
        .filter(|(_, plan)| plan.public)
        .map(|(id, plan)| PlanView::new(id, plan, catalog))
        .collect();
    HttpResponse::Ok().json(plans)
}

/// Credit packs for sale.
#[utoipa::path(get, path = "/v1/packs", tag = "catalog",
    responses((status = 200, description = "Credit packs", body = [PackView])))]
pub async fn packs(state: web::Data<ApiState>) -> HttpResponse {
    let catalog = &state.billing.catalog;
    let packs: Vec<PackView> = catalog
        .packs
        .iter()
        .map(|(id, pack)| PackView::new(id, pack, catalog))
        .collect();
    HttpResponse::Ok().json(packs)
}
