//! `/api/v1/assignment-rules`: ordered routing of new incidents by category to a group.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use domain::routing::AssignmentRule;
use persistence::assignment_rules::{self, RuleFields};
use persistence::{groups, DbConnection};
use serde::Deserialize;
use utoipa::ToSchema;
use validator::Validate;

use crate::auth::{Admins, Authorized, Staff};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, unknown_reference, ApiError, ApiResult};
use crate::json_body::ValidJson;
use crate::listing::{Page, QueryParams};
use crate::recent::RecentReads;
use crate::state::AppState;

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// Rules are tried from the lowest position up.
    #[validate(range(min = 0, max = 1000000))]
    pub position: i32,
    #[validate(length(min = 1, max = 100))]
    #[schema(example = "network")]
    pub category: String,
    /// `null` matches every subcategory.
    #[validate(length(min = 1, max = 100))]
    pub subcategory: Option<String>,
    pub assignment_group: String,
}

fn fields(conn: &mut DbConnection, request: RuleRequest) -> ApiResult<RuleFields> {
    groups::get(conn, &request.assignment_group)
        .map_err(|e| unknown_reference(e, "assignment_group", "no such group"))?;
    let category = request.category.trim().to_owned();
    if category.is_empty() {
        return Err(ApiError::invalid("category", "must not be blank"));
    }
    Ok(RuleFields {
        position: request.position,
        category,
        subcategory: request
            .subcategory
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        group_id: request.assignment_group,
    })
}

/// Add an assignment rule.
#[utoipa::path(
    tag = "incidents", operation_id = "create_assignment_rule",
    request_body = RuleRequest,
    responses((status = 201, body = AssignmentRule), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/assignment-rules")]
pub async fn create_rule(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<RuleRequest>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let request = body.0;
    let rule = state
        .db
        .write(move |conn| -> ApiResult<AssignmentRule> {
            let fields = fields(conn, request)?;
            Ok(assignment_rules::create(conn, &ctx, fields)?)
        })
        .await?;
    state.routing_rules.forget(&());
    Ok(created(
        format!("/api/v1/assignment-rules/{}", rule.id),
        rule.version,
        &rule,
    ))
}

/// List assignment rules in the order they are tried.
#[utoipa::path(
    tag = "incidents", operation_id = "list_assignment_rules",
    responses((status = 200, body = Page<AssignmentRule>)),
)]
#[get("/api/v1/assignment-rules")]
pub async fn list_rules(
    _caller: Authorized<Staff>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    QueryParams::parse(&req, &[])?;
    let rules = state
        .db
        .read(assignment_rules::all)
        .await
        .map_err(ApiError::from)?;
    Ok(Page {
        items: rules,
        next_cursor: None,
    }
    .respond(&req))
}

/// Get an assignment rule.
#[utoipa::path(
    tag = "incidents", operation_id = "get_assignment_rule",
    params(("id" = String, Path)),
    responses((status = 200, body = AssignmentRule), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/assignment-rules/{id}")]
pub async fn get_rule(
    _caller: Authorized<Staff>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let rule = state
        .db
        .read(move |conn| assignment_rules::get(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "assignment rule"))?;
    Ok(with_etag(StatusCode::OK, rule.version, &rule))
}

/// Replace an assignment rule.
#[utoipa::path(
    tag = "incidents", operation_id = "replace_assignment_rule",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = RuleRequest,
    responses((status = 200, body = AssignmentRule), (status = 404, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/assignment-rules/{id}")]
pub async fn replace_rule(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<RuleRequest>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let ctx = caller.write_context();
    let id = id.into_inner();
    let request = body.0;
    let rule = state
        .db
        .write(move |conn| -> ApiResult<AssignmentRule> {
            assignment_rules::get(conn, &id).map_err(|e| not_found_as(e, "assignment rule"))?;
            let fields = fields(conn, request)?;
            Ok(assignment_rules::replace(
                conn,
                &ctx,
                &id,
                expected_version,
                fields,
            )?)
        })
        .await?;
    state.routing_rules.forget(&());
    Ok(with_etag(StatusCode::OK, rule.version, &rule))
}

/// Delete an assignment rule.
#[utoipa::path(
    tag = "incidents", operation_id = "delete_assignment_rule",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/assignment-rules/{id}")]
pub async fn delete_rule(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let id = id.into_inner();
    state
        .db
        .write(move |conn| assignment_rules::delete(conn, &ctx, &id))
        .await
        .map_err(|e| not_found_as(e, "assignment rule"))?;
    state.routing_rules.forget(&());
    Ok(HttpResponse::NoContent().finish())
}

/// The rules in the order they are tried, as every new incident with a category needs them,
/// trusted for a second after they were read (see `recent`); a change here applies at once.
pub async fn routing_rules(state: &AppState) -> ApiResult<Arc<Vec<AssignmentRule>>> {
    state
        .routing_rules
        .get_or_read(&(), || async {
            let rules = state.db.read_bounded(assignment_rules::all).await?;
            Ok(Arc::new(rules))
        })
        .await
}

pub fn recent_rules() -> RecentReads<(), Arc<Vec<AssignmentRule>>> {
    RecentReads::new(Duration::from_secs(1), 1)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_rule)
        .service(list_rules)
        .service(get_rule)
        .service(replace_rule)
        .service(delete_rule);
}
