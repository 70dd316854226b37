//! Probes for orchestrators: liveness and readiness. Unauthenticated.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `sqlite` or `postgres` (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
}

/// Liveness: the process is up.
#[utoipa::path(tag = "health", operation_id = "healthz", security(()), responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        database: None,
    })
}

/// Readiness: the database answers and every migration is applied.
#[utoipa::path(tag = "health", operation_id = "readyz", security(()),
    responses((status = 200, body = Health), (status = 503, body = crate::error::Problem)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if state.db.is_ready().await {
        Ok(HttpResponse::Ok().json(Health {
            status: "ready",
            database: Some(state.db.backend().as_str()),
        }))
    } else {
        Err(ApiError::Unavailable(
            "the database is unreachable or not migrated".into(),
        ))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz);
}
