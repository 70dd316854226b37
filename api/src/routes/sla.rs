//! `/api/v1/calendars` and `/api/v1/sla-policies`: the business calendars and the policies
//! that set service-level targets. Admins write them; staff and integrations read them.

use actix_web::http::StatusCode;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use domain::sla::{
    CalendarDefinition, CalendarRecord, HolidaySpec, HoursSpec, PolicyDefinition, PolicyRecord,
};
use domain::FieldError;
use persistence::{groups, sla, sla_timers, DbConnection, StoreError};
use serde::Deserialize;
use utoipa::ToSchema;
use validator::{Validate, ValidationErrors};

use crate::auth::{Admins, Authorized, FeedReaders};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, ApiError, ApiResult};
use crate::json_body::ValidJson;
use crate::listing::{Page, QueryParams};
use crate::state::AppState;
use crate::usecases::business_service_error;

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarRequest {
    #[validate(length(min = 1, max = 100))]
    #[schema(example = "Berlin office")]
    pub name: String,
    /// An IANA time zone.
    #[validate(length(min = 1, max = 64))]
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// Ranges of one weekday do not overlap; a range whose end is at or before its start runs
    /// past midnight and counts into the next day (Sunday's into Monday).
    #[validate(length(min = 1, max = 100))]
    pub working_hours: Vec<HoursSpec>,
    /// Whole days, or with `start` and `end` (both, `end` after `start`) the closed part of one.
    #[serde(default)]
    #[validate(length(max = 1000))]
    pub holidays: Vec<HolidaySpec>,
}

impl CalendarRequest {
    /// The name and the definition, checked: every wrong field named at once.
    fn parse(self) -> ApiResult<(String, CalendarDefinition)> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(ApiError::invalid("name", "must not be blank"));
        }
        let definition = CalendarDefinition {
            time_zone: self.time_zone,
            working_hours: self.working_hours,
            holidays: self.holidays,
        };
        definition.calendar()?;
        Ok((name, definition))
    }
}

/// A name already taken is a 409 naming it, not the database's words.
fn name_taken(error: StoreError, what: &str, name: &str) -> ApiError {
    match error {
        StoreError::Conflict(_) => ApiError::Conflict(format!("a {what} named {name:?} exists")),
        taken if taken.is_unique_violation() => {
            ApiError::Conflict(format!("a {what} named {name:?} exists"))
        }
        other => other.into(),
    }
}

/// Add a business calendar.
#[utoipa::path(
    tag = "service-levels", operation_id = "create_calendar",
    request_body = CalendarRequest,
    responses((status = 201, body = CalendarRecord, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/calendars")]
pub async fn create_calendar(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<CalendarRequest>,
) -> ApiResult<HttpResponse> {
    let (name, definition) = body.0.parse()?;
    let ctx = caller.write_context();
    let calendar = state
        .db
        .write(move |conn| {
            sla::create_calendar(conn, &ctx, &name, &definition)
                .map_err(|e| name_taken(e, "calendar", &name))
        })
        .await?;
    state.sla_rules.forget(&());
    Ok(created(
        format!("/api/v1/calendars/{}", calendar.id),
        calendar.version,
        &calendar,
    ))
}

/// List business calendars by name, the built-in `24x7` among them.
#[utoipa::path(
    tag = "service-levels", operation_id = "list_calendars",
    responses((status = 200, body = Page<CalendarRecord>), (status = 403, body = crate::error::Problem)),
)]
#[get("/api/v1/calendars")]
pub async fn list_calendars(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    QueryParams::parse(&req, &[])?;
    let calendars = state
        .db
        .read(sla::all_calendars)
        .await
        .map_err(ApiError::from)?;
    Ok(Page {
        items: calendars,
        next_cursor: None,
    }
    .respond(&req))
}

/// Get a business calendar.
#[utoipa::path(
    tag = "service-levels", operation_id = "get_calendar",
    params(("id" = String, Path)),
    responses((status = 200, body = CalendarRecord, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/calendars/{id}")]
pub async fn get_calendar(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let calendar = state
        .db
        .read(move |conn| sla::get_calendar(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "calendar"))?;
    Ok(with_etag(StatusCode::OK, calendar.version, &calendar))
}

/// Replace a business calendar: its next version. Running timers keep the version they started
/// under.
#[utoipa::path(
    tag = "service-levels", operation_id = "replace_calendar",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = CalendarRequest,
    responses((status = 200, body = CalendarRecord, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/calendars/{id}")]
pub async fn replace_calendar(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<CalendarRequest>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let (name, definition) = body.0.parse()?;
    let ctx = caller.write_context();
    let id = id.into_inner();
    let calendar = state
        .db
        .write(move |conn| {
            sla::replace_calendar(conn, &ctx, &id, expected_version, &name, &definition).map_err(
                |e| match e {
                    StoreError::NotFound => ApiError::not_found("calendar"),
                    StoreError::Conflict(detail) if detail.contains("built in") => {
                        ApiError::Conflict(detail)
                    }
                    other => name_taken(other, "calendar", &name),
                },
            )
        })
        .await?;
    state.sla_rules.forget(&());
    Ok(with_etag(StatusCode::OK, calendar.version, &calendar))
}

/// Delete a business calendar that no policy uses.
#[utoipa::path(
    tag = "service-levels", operation_id = "delete_calendar",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
)]
#[delete("/api/v1/calendars/{id}")]
pub async fn delete_calendar(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let id = id.into_inner();
    state
        .db
        .write(move |conn| sla::delete_calendar(conn, &ctx, &id))
        .await
        .map_err(|e| not_found_as(e, "calendar"))?;
    state.sla_rules.forget(&());
    Ok(HttpResponse::NoContent().finish())
}

/// A policy as the request body carries it; the domain checks it (`PolicyDefinition::validated`).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct PolicyBody(PolicyDefinition);

impl Validate for PolicyBody {
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }
}

/// The policy, checked, with its references: the calendar, the group and the service exist.
fn checked_policy(conn: &mut DbConnection, body: PolicyBody) -> ApiResult<PolicyDefinition> {
    let policy = body.0.validated()?;
    let mut errors = Vec::new();
    match sla::get_calendar(conn, &policy.calendar_id) {
        Ok(_) => {}
        Err(StoreError::NotFound) => errors.push(FieldError::unknown("calendar_id", "calendar")),
        Err(other) => return Err(other.into()),
    }
    if let Some(group) = &policy.applies_to.assignment_group {
        match groups::get(conn, group) {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                errors.push(FieldError::unknown("applies_to.assignment_group", "group"))
            }
            Err(other) => return Err(other.into()),
        }
    }
    if let Some(service) = &policy.applies_to.service {
        errors.extend(business_service_error(conn, service, "applies_to.service")?);
    }
    for (index, escalation) in policy.escalations.iter().enumerate() {
        match groups::get(conn, &escalation.group) {
            Ok(_) => {}
            Err(StoreError::NotFound) => errors.push(FieldError::unknown(
                format!("escalations[{index}].group"),
                "group",
            )),
            Err(other) => return Err(other.into()),
        }
    }
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Add an SLA policy.
#[utoipa::path(
    tag = "service-levels", operation_id = "create_sla_policy",
    request_body = PolicyDefinition,
    responses((status = 201, body = PolicyRecord, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/sla-policies")]
pub async fn create_policy(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<PolicyBody>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let body = body.0;
    let policy = state
        .db
        .write(move |conn| -> ApiResult<PolicyRecord> {
            let definition = checked_policy(conn, body)?;
            sla::create_policy(conn, &ctx, &definition)
                .map_err(|e| name_taken(e, "policy", &definition.name))
        })
        .await?;
    state.sla_rules.forget(&());
    Ok(created(
        format!("/api/v1/sla-policies/{}", policy.id),
        policy.version,
        &policy,
    ))
}

/// List SLA policies in the order they are tried.
#[utoipa::path(
    tag = "service-levels", operation_id = "list_sla_policies",
    responses((status = 200, body = Page<PolicyRecord>), (status = 403, body = crate::error::Problem)),
)]
#[get("/api/v1/sla-policies")]
pub async fn list_policies(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    QueryParams::parse(&req, &[])?;
    let policies = state
        .db
        .read(sla::all_policies)
        .await
        .map_err(ApiError::from)?;
    Ok(Page {
        items: policies,
        next_cursor: None,
    }
    .respond(&req))
}

/// Get an SLA policy.
#[utoipa::path(
    tag = "service-levels", operation_id = "get_sla_policy",
    params(("id" = String, Path)),
    responses((status = 200, body = PolicyRecord, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/sla-policies/{id}")]
pub async fn get_policy(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let policy = state
        .db
        .read(move |conn| sla::get_policy(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "SLA policy"))?;
    Ok(with_etag(StatusCode::OK, policy.version, &policy))
}

/// Replace an SLA policy.
///
/// The running timers it times follow at once, in the same unit of work: a new target applies
/// to the time already elapsed and paused (a `retarget` line, "policy … edited"), and a ticket
/// it no longer covers moves to the policy that covers it now, or its timer is canceled.
#[utoipa::path(
    tag = "service-levels", operation_id = "replace_sla_policy",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = PolicyDefinition,
    responses((status = 200, body = PolicyRecord, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/sla-policies/{id}")]
pub async fn replace_policy(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<PolicyBody>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let mut ctx = caller.write_context();
    let id = id.into_inner();
    let body = body.0;
    let policy = state
        .db
        .write(move |conn| -> ApiResult<PolicyRecord> {
            let before = sla::get_policy(conn, &id).map_err(|e| not_found_as(e, "SLA policy"))?;
            let definition = checked_policy(conn, body)?;
            let policy = sla::replace_policy(conn, &ctx, &id, expected_version, &definition)
                .map_err(|e| name_taken(e, "policy", &definition.name))?;
            if policy.version != before.version {
                ctx.sla = Some(std::sync::Arc::new(sla::rules(conn)?));
                sla_timers::follow_policy(conn, &ctx, &id)?;
            }
            Ok(policy)
        })
        .await?;
    state.sla_rules.forget(&());
    Ok(with_etag(StatusCode::OK, policy.version, &policy))
}

/// Delete an SLA policy; its running timers are canceled, each with a line saying why.
#[utoipa::path(
    tag = "service-levels", operation_id = "delete_sla_policy",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/sla-policies/{id}")]
pub async fn delete_policy(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let id = id.into_inner();
    state
        .db
        .write(move |conn| {
            let policy = sla::get_policy(conn, &id)?;
            sla_timers::cancel_of_policy(conn, &ctx, &id, &policy.definition.name)?;
            sla::delete_policy(conn, &ctx, &id)
        })
        .await
        .map_err(|e| not_found_as(e, "SLA policy"))?;
    state.sla_rules.forget(&());
    Ok(HttpResponse::NoContent().finish())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_calendar)
        .service(list_calendars)
        .service(get_calendar)
        .service(replace_calendar)
        .service(delete_calendar)
        .service(create_policy)
        .service(list_policies)
        .service(get_policy)
        .service(replace_policy)
        .service(delete_policy);
}
