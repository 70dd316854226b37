//! `/api/v1/ci-relationships`: typed, directed relationships between configuration items.

use actix_web::{delete, get, post, web, HttpResponse};
use domain::cmdb::item::Relationship;
use domain::cmdb::RelationshipType;
use persistence::cmdb::relationships;
use serde::Deserialize;
use utoipa::ToSchema;
use validator::Validate;

use super::not_found_as;
use crate::auth::{Authorized, CmdbReaders, CmdbWriters};
use crate::error::{ApiError, ApiResult};
use crate::json_body::ValidJson;
use crate::state::AppState;

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRelationship {
    /// The id of the item the relationship starts from (`app` in `app depends_on db`).
    pub source_id: String,
    #[serde(rename = "type")]
    pub rel_type: RelationshipType,
    /// The id of the item the relationship ends at: another item than `source_id` (an item
    /// does not relate to itself).
    pub target_id: String,
}

/// Relate two items. Self-loops are refused (422) and so is a relationship stored already
/// (409); cycles are allowed.
#[utoipa::path(
    tag = "cmdb", operation_id = "create_ci_relationship",
    request_body = CreateRelationship,
    responses((status = 201, body = Relationship, headers(("Location" = String))),
              (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/ci-relationships")]
pub async fn create_relationship(
    caller: Authorized<CmdbWriters>,
    state: web::Data<AppState>,
    body: ValidJson<CreateRelationship>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let ctx = caller.write_context();
    let relationship = state
        .db
        .write(move |conn| {
            relationships::create(conn, &ctx, &body.source_id, body.rel_type, &body.target_id)
        })
        .await
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/api/v1/ci-relationships/{}", relationship.id),
        ))
        .json(relationship))
}

/// Get a relationship.
#[utoipa::path(
    tag = "cmdb", operation_id = "get_ci_relationship",
    params(("id" = String, Path)),
    responses((status = 200, body = Relationship), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/ci-relationships/{id}")]
pub async fn get_relationship(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let relationship = state
        .db
        .read(move |conn| relationships::get(conn, &id))
        .await
        .map_err(|e| crate::error::not_found_as(e, "relationship"))?;
    Ok(HttpResponse::Ok().json(relationship))
}

/// Remove a relationship.
#[utoipa::path(
    tag = "cmdb", operation_id = "delete_ci_relationship",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/ci-relationships/{id}")]
pub async fn delete_relationship(
    caller: Authorized<CmdbWriters>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let id = id.into_inner();
    state
        .db
        .write(move |conn| relationships::delete(conn, &ctx, &id))
        .await
        .map_err(|e| not_found_as(e, "relationship"))?;
    Ok(HttpResponse::NoContent().finish())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_relationship)
        .service(get_relationship)
        .service(delete_relationship);
}
