//! Probes for orchestrators: liveness and readiness (unauthenticated), and the gauges of the
//! bounded resources (admins, or a token scoped `metrics:read`).

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use std::sync::atomic::Ordering;

use persistence::Unready;

use crate::auth::{Admins, Authorized};
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

/// Gauges of the resources this process bounds, in the Prometheus text format: password
/// hashes running (and the most seen at once, against their slots) and word searches running.
/// Per process: each node answers for itself.
#[utoipa::path(tag = "health", operation_id = "get_metrics",
    responses((status = 200, content_type = "text/plain", body = String),
              (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)))]
#[get("/api/v1/metrics")]
pub async fn metrics(_caller: Authorized<Admins>, state: web::Data<AppState>) -> HttpResponse {
    let hashing = &state.password_hashing;
    let gauges = [
        (
            "itsm_password_hashes_running",
            "Password hashes running now.",
            hashing.running(),
        ),
        (
            "itsm_password_hashes_running_peak",
            "The most password hashes that ran at once since the process started.",
            hashing.peak_running.load(Ordering::Acquire),
        ),
        (
            "itsm_password_hash_slots",
            "How many password hashes may run at once.",
            hashing.slots(),
        ),
        (
            "itsm_password_hashes_admitted",
            "Sign-ins hashing or waiting for a slot now.",
            hashing.admitted(),
        ),
        (
            "itsm_word_searches_running",
            "Word searches holding a search slot now.",
            state.search_slots_in_use(),
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in gauges {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics);
}
