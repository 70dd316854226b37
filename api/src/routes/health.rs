//! Probes for orchestrators: liveness and readiness. Unauthenticated.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use persistence::Unready;

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

/// Readiness: the database answers, every migration is applied, and writes commit. A 503
/// problem's `type` says why not: `database-unreachable`, `storage-full`,
/// `storage-read-only`, `storage-io-error`, `database-busy`, or `unavailable` (not migrated).
#[utoipa::path(tag = "health", operation_id = "readyz", security(()),
    responses((status = 200, body = Health), (status = 503, body = crate::error::Problem)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    match state.db.unready_because().await {
        None => Ok(HttpResponse::Ok().json(Health {
            status: "ready",
            database: Some(state.db.backend().as_str()),
        })),
        Some(Unready::Outage(outage)) => Err(ApiError::Outage(outage)),
        Some(Unready::NotMigrated) => Err(ApiError::Unavailable(
            "the database is not migrated to this version".into(),
        )),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz);
}
