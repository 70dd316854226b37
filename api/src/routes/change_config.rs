//! What change enablement runs on, as data: approval policies
//! (`/api/v1/change-approval-policies`), standard change templates
//! (`/api/v1/standard-change-templates`) and freeze windows (`/api/v1/change-freeze-windows`).
//! Change managers and admins write them; staff and integrations read them.

use actix_web::http::StatusCode;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::change::approval::{ApprovalPolicy, Approver, PolicyRules};
use domain::change::schedule::{FreezeScope, FreezeWindow, Window};
use domain::change::{ChangeType, RiskLevel, StandardChangeTemplate, TemplateFields};
use domain::FieldError;
use persistence::changes::{self, FREEZE, POLICY, TEMPLATE};
use persistence::StoreError;
use serde::Deserialize;
use utoipa::ToSchema;
use validator::Validate;

use crate::auth::{Authorized, ChangeManagers, FeedReaders};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, ApiError, ApiResult};
use crate::json_body::ValidJson;
use crate::listing::{Page, QueryParams};
use crate::state::AppState;
use crate::usecases::changes::{check_freeze_scope, check_policy_approvers};
use crate::usecases::check_cmdb_links;

/// A name already taken is a 409 naming it.
fn name_taken(error: StoreError, what: &str, name: &str) -> ApiError {
    match error {
        StoreError::Conflict(_) => ApiError::Conflict(format!("a {what} named {name:?} exists")),
        taken if taken.is_unique_violation() => {
            ApiError::Conflict(format!("a {what} named {name:?} exists"))
        }
        StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

fn blank(name: &str, field: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid(field, "must not be blank"));
    }
    Ok(name.to_owned())
}

// --- approval policies ---------------------------------------------------------------------

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    #[validate(length(min = 1, max = 100))]
    #[schema(example = "CAB for high risk")]
    pub name: String,
    /// Lower first; the first policy covering a change decides. Default 100.
    pub precedence: Option<i32>,
    /// Types covered (normal, emergency); empty covers both.
    #[serde(default)]
    pub change_types: Vec<ChangeType>,
    /// Risk levels covered; empty covers every level.
    #[serde(default)]
    pub risks: Vec<RiskLevel>,
    /// `{"user": id}`, `{"group": id}` (every active member) or `{"role": "change_manager"}`.
    /// 1 to 50 (`PolicyRules::validate`).
    #[schema(min_items = 1, max_items = 50)]
    pub approvers: Vec<Approver>,
    /// Approvals that authorise, 1 to 1,000. Default 1.
    pub quorum: Option<u32>,
}

impl PolicyRequest {
    fn parse(self) -> ApiResult<(String, i32, PolicyRules)> {
        let rules = PolicyRules {
            change_types: self.change_types,
            risks: self.risks,
            approvers: self.approvers,
            quorum: self.quorum.unwrap_or(1),
        };
        rules.validate()?;
        Ok((
            blank(&self.name, "name")?,
            self.precedence.unwrap_or(100),
            rules,
        ))
    }
}

/// Add an approval policy.
#[utoipa::path(
    tag = "changes", operation_id = "create_change_approval_policy",
    request_body = PolicyRequest,
    responses((status = 201, body = ApprovalPolicy, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/change-approval-policies")]
pub async fn create_policy(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    body: ValidJson<PolicyRequest>,
) -> ApiResult<HttpResponse> {
    let (name, precedence, rules) = body.0.parse()?;
    let ctx = caller.write_context();
    let policy = state
        .db
        .write(move |conn| -> ApiResult<ApprovalPolicy> {
            check_policy_approvers(conn, &rules.approvers)?;
            changes::put_policy(conn, &ctx, None, &name, precedence, &rules)
                .map_err(|e| name_taken(e, POLICY, &name))
        })
        .await?;
    Ok(created(
        format!("/api/v1/change-approval-policies/{}", policy.id),
        policy.version,
        &policy,
    ))
}

/// List approval policies in the order they are tried.
#[utoipa::path(
    tag = "changes", operation_id = "list_change_approval_policies",
    responses((status = 200, body = Page<ApprovalPolicy>), (status = 403, body = crate::error::Problem)),
)]
#[get("/api/v1/change-approval-policies")]
pub async fn list_policies(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    QueryParams::parse(&req, &[])?;
    let items = state
        .db
        .read(changes::policies)
        .await
        .map_err(ApiError::from)?;
    Ok(Page {
        items,
        next_cursor: None,
    }
    .respond(&req))
}

/// Get an approval policy.
#[utoipa::path(
    tag = "changes", operation_id = "get_change_approval_policy",
    params(("id" = String, Path)),
    responses((status = 200, body = ApprovalPolicy, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/change-approval-policies/{id}")]
pub async fn get_policy(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let policy = state
        .db
        .read(move |conn| changes::policy(conn, &id))
        .await
        .map_err(|e| not_found_as(e, POLICY))?;
    Ok(with_etag(StatusCode::OK, policy.version, &policy))
}

/// Replace an approval policy. Rounds already open keep the approvers they asked.
#[utoipa::path(
    tag = "changes", operation_id = "replace_change_approval_policy",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = PolicyRequest,
    responses((status = 200, body = ApprovalPolicy, headers(("ETag" = String))), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/change-approval-policies/{id}")]
pub async fn replace_policy(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<PolicyRequest>,
) -> ApiResult<HttpResponse> {
    let expected = if_match(&req)?;
    let (name, precedence, rules) = body.0.parse()?;
    let ctx = caller.write_context();
    let id = id.into_inner();
    let policy = state
        .db
        .write(move |conn| -> ApiResult<ApprovalPolicy> {
            let before = changes::policy(conn, &id).map_err(|e| not_found_as(e, POLICY))?;
            check_policy_approvers(conn, &rules.approvers)?;
            changes::put_policy(
                conn,
                &ctx,
                Some((&before, expected)),
                &name,
                precedence,
                &rules,
            )
            .map_err(|e| name_taken(e, POLICY, &name))
        })
        .await?;
    Ok(with_etag(StatusCode::OK, policy.version, &policy))
}

async fn delete_entity(
    caller: Authorized<ChangeManagers>,
    state: &AppState,
    entity: &'static str,
    id: String,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    state
        .db
        .write(move |conn| changes::delete(conn, &ctx, entity, &id))
        .await
        .map_err(|e| not_found_as(e, entity))?;
    Ok(HttpResponse::NoContent().finish())
}

/// Delete an approval policy.
#[utoipa::path(
    tag = "changes", operation_id = "delete_change_approval_policy",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/change-approval-policies/{id}")]
pub async fn delete_policy(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    delete_entity(caller, &state, POLICY, id.into_inner()).await
}

// --- standard change templates --------------------------------------------------------------

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    #[validate(length(min = 1, max = 100))]
    #[schema(example = "Restart an application server")]
    pub name: String,
    #[serde(default)]
    #[validate(length(max = 20000))]
    pub description: String,
    /// The fields a change from the template takes and may not set itself.
    #[serde(default)]
    pub fields: TemplateFields,
    /// The only items a change from the template may touch (ids).
    #[validate(length(max = 500))]
    #[serde(default)]
    pub configuration_items: Vec<String>,
    /// The highest risk a change from the template may have.
    pub risk_cap: RiskLevel,
    /// Default true.
    pub active: Option<bool>,
}

impl TemplateRequest {
    fn parse(self) -> ApiResult<StandardChangeTemplate> {
        let name = blank(&self.name, "name")?;
        if self
            .fields
            .title
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ApiError::invalid("fields.title", "must not be blank"));
        }
        let now = Utc::now();
        Ok(StandardChangeTemplate {
            id: String::new(),
            name,
            description: self.description,
            fields: self.fields,
            configuration_items: self.configuration_items,
            risk_cap: self.risk_cap,
            active: self.active.unwrap_or(true),
            created_at: now,
            updated_at: now,
            version: 0,
        })
    }
}

fn check_template(
    conn: &mut persistence::DbConnection,
    given: &StandardChangeTemplate,
) -> ApiResult<()> {
    if let Some(group) = &given.fields.assignment_group {
        crate::usecases::check_group(conn, group).map_err(|_| {
            ApiError::from_field_errors(vec![FieldError::unknown(
                "fields.assignment_group",
                "group",
            )])
        })?;
    }
    check_cmdb_links(conn, &given.configuration_items, None, None)
}

/// Add a standard change template.
#[utoipa::path(
    tag = "changes", operation_id = "create_standard_change_template",
    request_body = TemplateRequest,
    responses((status = 201, body = StandardChangeTemplate, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/standard-change-templates")]
pub async fn create_template(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    body: ValidJson<TemplateRequest>,
) -> ApiResult<HttpResponse> {
    let given = body.0.parse()?;
    let ctx = caller.write_context();
    let template = state
        .db
        .write(move |conn| -> ApiResult<StandardChangeTemplate> {
            check_template(conn, &given)?;
            changes::put_template(conn, &ctx, None, &given)
                .map_err(|e| name_taken(e, TEMPLATE, &given.name))
        })
        .await?;
    Ok(created(
        format!("/api/v1/standard-change-templates/{}", template.id),
        template.version,
        &template,
    ))
}

/// List standard change templates by name.
#[utoipa::path(
    tag = "changes", operation_id = "list_standard_change_templates",
    responses((status = 200, body = Page<StandardChangeTemplate>), (status = 403, body = crate::error::Problem)),
)]
#[get("/api/v1/standard-change-templates")]
pub async fn list_templates(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    QueryParams::parse(&req, &[])?;
    let items = state
        .db
        .read(changes::templates)
        .await
        .map_err(ApiError::from)?;
    Ok(Page {
        items,
        next_cursor: None,
    }
    .respond(&req))
}

/// Get a standard change template.
#[utoipa::path(
    tag = "changes", operation_id = "get_standard_change_template",
    params(("id" = String, Path)),
    responses((status = 200, body = StandardChangeTemplate, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/standard-change-templates/{id}")]
pub async fn get_template(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let template = state
        .db
        .read(move |conn| changes::template(conn, &id))
        .await
        .map_err(|e| not_found_as(e, TEMPLATE))?;
    Ok(with_etag(StatusCode::OK, template.version, &template))
}

/// Replace a standard change template. Changes made from it keep what they took.
#[utoipa::path(
    tag = "changes", operation_id = "replace_standard_change_template",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = TemplateRequest,
    responses((status = 200, body = StandardChangeTemplate, headers(("ETag" = String))), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/standard-change-templates/{id}")]
pub async fn replace_template(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<TemplateRequest>,
) -> ApiResult<HttpResponse> {
    let expected = if_match(&req)?;
    let given = body.0.parse()?;
    let ctx = caller.write_context();
    let id = id.into_inner();
    let template = state
        .db
        .write(move |conn| -> ApiResult<StandardChangeTemplate> {
            let before = changes::template(conn, &id).map_err(|e| not_found_as(e, TEMPLATE))?;
            check_template(conn, &given)?;
            changes::put_template(conn, &ctx, Some((&before, expected)), &given)
                .map_err(|e| name_taken(e, TEMPLATE, &given.name))
        })
        .await?;
    Ok(with_etag(StatusCode::OK, template.version, &template))
}

/// Delete a standard change template.
#[utoipa::path(
    tag = "changes", operation_id = "delete_standard_change_template",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/standard-change-templates/{id}")]
pub async fn delete_template(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    delete_entity(caller, &state, TEMPLATE, id.into_inner()).await
}

// --- freeze windows ------------------------------------------------------------------------

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    #[validate(length(min = 1, max = 100))]
    #[schema(example = "Year-end close")]
    pub name: String,
    #[validate(length(min = 1, max = 2000))]
    pub reason: String,
    pub start: DateTime<Utc>,
    /// After `start`.
    pub end: DateTime<Utc>,
    /// Everything (`everything: true` and no list), or 1 to 200 listed items and business
    /// services together (each covering every item it depends on).
    pub scope: FreezeScope,
}

impl FreezeRequest {
    fn parse(self) -> ApiResult<FreezeWindow> {
        let name = blank(&self.name, "name")?;
        let reason = blank(&self.reason, "reason")?;
        Window::of(Some(self.start), Some(self.end), "start", "end")?;
        self.scope.validate()?;
        let now = Utc::now();
        Ok(FreezeWindow {
            id: String::new(),
            name,
            reason,
            start: self.start,
            end: self.end,
            scope: self.scope,
            created_at: now,
            updated_at: now,
            version: 0,
        })
    }
}

/// Add a freeze window.
#[utoipa::path(
    tag = "changes", operation_id = "create_change_freeze_window",
    request_body = FreezeRequest,
    responses((status = 201, body = FreezeWindow, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/change-freeze-windows")]
pub async fn create_freeze(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    body: ValidJson<FreezeRequest>,
) -> ApiResult<HttpResponse> {
    let given = body.0.parse()?;
    let ctx = caller.write_context();
    let freeze = state
        .db
        .write(move |conn| -> ApiResult<FreezeWindow> {
            check_freeze_scope(conn, &given.scope)?;
            Ok(changes::put_freeze(conn, &ctx, None, &given)?)
        })
        .await?;
    Ok(created(
        format!("/api/v1/change-freeze-windows/{}", freeze.id),
        freeze.version,
        &freeze,
    ))
}

/// List freeze windows by start; `from`/`to` keep those overlapping the range.
#[utoipa::path(
    tag = "changes", operation_id = "list_change_freeze_windows",
    params(("from" = Option<String>, Query, description = "RFC 3339"), ("to" = Option<String>, Query, description = "RFC 3339")),
    responses((status = 200, body = Page<FreezeWindow>), (status = 403, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/change-freeze-windows")]
pub async fn list_freezes(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(&req, &["from", "to"])?;
    // Either bound alone is open on the other side; an empty or inverted period holds no
    // window.
    let window = match (params.timestamp("from")?, params.timestamp("to")?) {
        (None, None) => None,
        (from, to) => Some(Window {
            start: from.unwrap_or_else(|| instant(1, 1, 1, 0, 0, 0)),
            end: to.unwrap_or_else(|| instant(9999, 12, 31, 23, 59, 59)),
        }),
    };
    if window.is_some_and(|w| w.end <= w.start) {
        return Ok(Page::<FreezeWindow> {
            items: Vec::new(),
            next_cursor: None,
        }
        .respond(&req));
    }
    let items = state
        .db
        .read(move |conn| changes::freezes(conn, window.as_ref()))
        .await
        .map_err(ApiError::from)?;
    Ok(Page {
        items,
        next_cursor: None,
    }
    .respond(&req))
}

/// An instant in the years both databases store and compare alike (1 to 9999).
fn instant(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|day| day.and_hms_opt(hour, minute, second))
        .map_or(DateTime::<Utc>::UNIX_EPOCH, |at| at.and_utc())
}

/// Get a freeze window.
#[utoipa::path(
    tag = "changes", operation_id = "get_change_freeze_window",
    params(("id" = String, Path)),
    responses((status = 200, body = FreezeWindow, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/change-freeze-windows/{id}")]
pub async fn get_freeze(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let freeze = state
        .db
        .read(move |conn| changes::freeze(conn, &id))
        .await
        .map_err(|e| not_found_as(e, FREEZE))?;
    Ok(with_etag(StatusCode::OK, freeze.version, &freeze))
}

/// Replace a freeze window.
#[utoipa::path(
    tag = "changes", operation_id = "replace_change_freeze_window",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = FreezeRequest,
    responses((status = 200, body = FreezeWindow, headers(("ETag" = String))), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/change-freeze-windows/{id}")]
pub async fn replace_freeze(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<FreezeRequest>,
) -> ApiResult<HttpResponse> {
    let expected = if_match(&req)?;
    let given = body.0.parse()?;
    let ctx = caller.write_context();
    let id = id.into_inner();
    let freeze = state
        .db
        .write(move |conn| -> ApiResult<FreezeWindow> {
            let before = changes::freeze(conn, &id).map_err(|e| not_found_as(e, FREEZE))?;
            check_freeze_scope(conn, &given.scope)?;
            Ok(changes::put_freeze(
                conn,
                &ctx,
                Some((&before, expected)),
                &given,
            )?)
        })
        .await?;
    Ok(with_etag(StatusCode::OK, freeze.version, &freeze))
}

/// Delete a freeze window.
#[utoipa::path(
    tag = "changes", operation_id = "delete_change_freeze_window",
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/change-freeze-windows/{id}")]
pub async fn delete_freeze(
    caller: Authorized<ChangeManagers>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    delete_entity(caller, &state, FREEZE, id.into_inner()).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_policy)
        .service(list_policies)
        .service(get_policy)
        .service(replace_policy)
        .service(delete_policy)
        .service(create_template)
        .service(list_templates)
        .service(get_template)
        .service(replace_template)
        .service(delete_template)
        .service(create_freeze)
        .service(list_freezes)
        .service(get_freeze)
        .service(replace_freeze)
        .service(delete_freeze);
}
