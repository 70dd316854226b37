//! `/api/v1/ci-classes`: built-in and admin-defined CI classes, their schemas and the source
//! precedence reconciliation follows.

use actix_web::http::StatusCode;
use actix_web::{delete, get, patch, post, put, web, HttpRequest, HttpResponse};
use domain::cmdb::{AttributeDef, CiClass, ClassSet, IdentificationRule};
use persistence::cmdb::classes::{self, ClassUpdate, NewClass};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::not_found_as;
use crate::auth::{Admins, Authorized, CmdbReaders};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{ApiError, ApiResult};
use crate::json_body::{required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClass {
    #[schema(example = "linux_server")]
    pub name: String,
    #[schema(example = "server")]
    pub parent: Option<String>,
    #[serde(default)]
    #[validate(length(max = 2000))]
    pub description: String,
    /// The class's own attributes, each named once and none named like an inherited one.
    #[serde(default)]
    pub attributes: Vec<AttributeDef>,
    #[serde(default)]
    #[schema(example = json!([["serial_number"], ["hostname", "dns_domain"]]))]
    pub identification_rules: Vec<IdentificationRule>,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClass {
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(max = 2000))]
    pub description: Option<String>,
    /// The class's own attributes, replaced as a whole: each named once and none named like an
    /// inherited one.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub attributes: Option<Vec<AttributeDef>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub identification_rules: Option<Vec<IdentificationRule>>,
}

/// A class with its inheritance resolved.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassView {
    #[serde(flatten)]
    pub class: CiClass,
    /// Inherited attributes first, then the class's own.
    pub effective_attributes: Vec<AttributeDef>,
    /// The class's rules, or its nearest ancestor's.
    pub effective_identification_rules: Vec<IdentificationRule>,
    /// The class's source precedence, or its nearest ancestor's.
    pub effective_source_precedence: Vec<String>,
}

impl ClassView {
    fn of(set: &ClassSet, class: CiClass) -> Self {
        Self {
            effective_attributes: set.effective_attributes(&class.name),
            effective_identification_rules: set.identification_rules(&class.name),
            effective_source_precedence: set.source_precedence(&class.name),
            class,
        }
    }
}

async fn view(state: &AppState, name: String) -> ApiResult<ClassView> {
    state
        .db
        .read(move |conn| -> ApiResult<ClassView> {
            let set = classes::all(conn)?;
            let class = set
                .get(&name)
                .cloned()
                .ok_or_else(|| ApiError::not_found("class"))?;
            Ok(ClassView::of(&set, class))
        })
        .await
}

/// Define a CI class (admin). A body that clashes with the parent's stored schema (an
/// attribute it has already, a rule over one of its attributes that does not identify) is a
/// conflict (409).
#[utoipa::path(
    tag = "cmdb", operation_id = "create_ci_class",
    request_body = CreateClass,
    responses((status = 201, body = ClassView, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/ci-classes")]
pub async fn create_class(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<CreateClass>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let new = NewClass {
        name: body.name,
        parent: body.parent,
        description: body.description,
        attributes: body.attributes,
        identification_rules: body.identification_rules,
    };
    let ctx = caller.write_context();
    let class = state
        .db
        .write(move |conn| classes::create(conn, &ctx, new))
        .await
        .map_err(ApiError::from)?;
    let view = view(&state, class.name.clone()).await?;
    Ok(created(
        format!("/api/v1/ci-classes/{}", class.name),
        class.version,
        &view,
    ))
}

/// List CI classes by name.
#[utoipa::path(
    tag = "cmdb", operation_id = "list_ci_classes",
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<ClassView>), (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/ci-classes")]
pub async fn list_classes(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = QueryParams::parse(&req, &PAGE_PARAMS)?.page::<String>()?;
    let set = state.db.read(classes::all).await.map_err(ApiError::from)?;
    let limit = usize::try_from(page.limit).unwrap_or(0);
    let mut views: Vec<ClassView> = set
        .iter()
        .filter(|c| page.cursor.as_ref().is_none_or(|after| &c.name > after))
        .take(limit + 1)
        .map(|c| ClassView::of(&set, c.clone()))
        .collect();
    let more = views.len() > limit;
    views.truncate(limit);
    let slice = persistence::Slice { items: views, more };
    Ok(Page::from_slice(slice, |view| view.class.name.clone()).respond(&req))
}

/// Get a CI class with its inherited schema.
#[utoipa::path(
    tag = "cmdb", operation_id = "get_ci_class",
    params(("name" = String, Path)),
    responses((status = 200, body = ClassView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/ci-classes/{name}")]
pub async fn get_class(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let view = view(&state, name.into_inner()).await?;
    Ok(with_etag(StatusCode::OK, view.class.version, &view))
}

/// Update a CI class (JSON merge patch; `attributes` replaces the class's own list). A schema
/// that clashes with the parent's or a subclass's, or that items of the class could no longer
/// keep (an attribute removed or retyped, enum values dropped, a new required attribute
/// without a default), is a conflict with what is stored (409).
#[utoipa::path(
    tag = "cmdb", operation_id = "update_ci_class",
    params(("name" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UpdateClass, content_type = "application/merge-patch+json"),
    responses((status = 200, body = ClassView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/ci-classes/{name}")]
pub async fn update_class(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    body: ValidJson<UpdateClass>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let body = body.0;
    let update = ClassUpdate {
        description: body.description,
        attributes: body.attributes,
        identification_rules: body.identification_rules,
    };
    let ctx = caller.write_context();
    let name = name.into_inner();
    let target = name.clone();
    let class = state
        .db
        .write(move |conn| classes::update(conn, &ctx, &target, expected_version, update))
        .await
        .map_err(|e| not_found_as(e, "class"))?;
    let view = view(&state, name).await?;
    Ok(with_etag(StatusCode::OK, class.version, &view))
}

/// Delete an admin-defined class that has no subclass and no item.
#[utoipa::path(
    tag = "cmdb", operation_id = "delete_ci_class",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
)]
#[delete("/api/v1/ci-classes/{name}")]
pub async fn delete_class(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let name = name.into_inner();
    state
        .db
        .write(move |conn| classes::delete(conn, &ctx, &name))
        .await
        .map_err(|e| not_found_as(e, "class"))?;
    Ok(HttpResponse::NoContent().finish())
}

/// The sources reconciliation accepts for a class, highest priority first. A source may
/// overwrite an attribute last set by a source of equal or lower priority; unlisted sources
/// rank below every listed one.
#[contract_macros::schema_from_validate]
#[derive(Debug, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcePrecedence {
    #[schema(example = json!(["manual", "sccm", "discovery"]))]
    #[validate(length(max = 50))]
    #[schema(value_type = Vec<SourceName>)]
    pub sources: Vec<String>,
}

/// A reporting source's name, as `check_source` accepts it.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
pub struct SourceName(String);

#[derive(Debug, Serialize, ToSchema)]
pub struct SourcePrecedenceView {
    pub class: String,
    /// The class's own list (empty: inherited).
    pub sources: Vec<String>,
    /// The list in force: the class's own, or its nearest ancestor's.
    pub effective_sources: Vec<String>,
}

fn precedence_view(view: &ClassView) -> SourcePrecedenceView {
    SourcePrecedenceView {
        class: view.class.name.clone(),
        sources: view.class.source_precedence.clone(),
        effective_sources: view.effective_source_precedence.clone(),
    }
}

/// Get a class's source precedence.
#[utoipa::path(
    tag = "cmdb", operation_id = "get_ci_class_source_precedence",
    params(("name" = String, Path)),
    responses((status = 200, body = SourcePrecedenceView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/ci-classes/{name}/source-precedence")]
pub async fn get_source_precedence(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let view = view(&state, name.into_inner()).await?;
    Ok(with_etag(
        StatusCode::OK,
        view.class.version,
        &precedence_view(&view),
    ))
}

/// Replace a class's source precedence (admin).
#[utoipa::path(
    tag = "cmdb", operation_id = "set_ci_class_source_precedence",
    params(("name" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = SourcePrecedence,
    responses((status = 200, body = SourcePrecedenceView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/ci-classes/{name}/source-precedence")]
pub async fn set_source_precedence(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    body: ValidJson<SourcePrecedence>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let sources = body.0.sources;
    for (index, source) in sources.iter().enumerate() {
        if let Err(message) = super::items::check_source(source) {
            return Err(ApiError::invalid(format!("sources[{index}]"), message));
        }
        if sources[..index].contains(source) {
            return Err(ApiError::invalid(
                format!("sources[{index}]"),
                "is listed twice",
            ));
        }
    }
    let ctx = caller.write_context();
    let name = name.into_inner();
    let target = name.clone();
    state
        .db
        .write(move |conn| {
            classes::set_source_precedence(conn, &ctx, &target, expected_version, sources)
        })
        .await
        .map_err(|e| not_found_as(e, "class"))?;
    let view = view(&state, name).await?;
    Ok(with_etag(
        StatusCode::OK,
        view.class.version,
        &precedence_view(&view),
    ))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_class)
        .service(list_classes)
        .service(get_class)
        .service(update_class)
        .service(delete_class)
        .service(get_source_precedence)
        .service(set_source_precedence);
}
