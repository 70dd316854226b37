//! `/api/v1/groups`: assignment groups (teams) and their members.

use actix_web::http::StatusCode;
use actix_web::{delete, get, patch, post, put, web, HttpRequest, HttpResponse};
use domain::{ExternalRef, Group, User};
use persistence::groups::{self, GroupFilter, GroupUpdate, NewGroup};
use persistence::users;
use serde::Deserialize;
use utoipa::ToSchema;
use validator::Validate;

use super::users::non_blank;
use crate::auth::{Admins, Authorized, Caller, Staff};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, unknown_reference, ApiError, ApiResult};
use crate::json_body::{nullable, required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;
use crate::usecases::{upsert_by_reference, with_path_reference, Upserted};

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    #[validate(length(min = 1, max = 100))]
    #[schema(example = "Service Desk")]
    pub name: String,
    #[serde(default)]
    #[validate(length(max = 2000))]
    #[schema(example = "First line")]
    pub description: String,
    #[validate(email, length(max = 254))]
    pub email: Option<String>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(min = 1, max = 100))]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(max = 2000))]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(email, length(max = 254))]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub external_refs: Option<Vec<ExternalRef>>,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    #[validate(length(min = 1, max = 64))]
    pub user_id: String,
}

fn check_refs(refs: Option<&[ExternalRef]>) -> ApiResult<()> {
    match refs {
        Some(refs) => ExternalRef::validate_list(refs, "external_refs").map_err(ApiError::from),
        None => Ok(()),
    }
}

/// Create an assignment group.
#[utoipa::path(
    tag = "groups", operation_id = "create_group",
    request_body = CreateGroup,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retry")),
    responses((status = 201, body = Group, headers(("Location" = String), ("ETag" = String))),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/groups")]
pub async fn create_group(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<CreateGroup>,
) -> ApiResult<HttpResponse> {
    let group = create(&state, &caller, body.0).await?;
    Ok(created(location(&group), group.version, &group))
}

fn location(group: &Group) -> String {
    format!("/api/v1/groups/{}", group.id)
}

async fn create(state: &AppState, caller: &Caller, body: CreateGroup) -> ApiResult<Group> {
    check_refs(Some(&body.external_refs))?;
    let new = NewGroup {
        name: non_blank(&body.name, "name")?,
        description: body.description,
        email: body.email,
        external_refs: body.external_refs,
    };
    let ctx = caller.write_context();
    state
        .db
        .write(move |conn| groups::create(conn, &ctx, new))
        .await
        .map_err(ApiError::from)
}

/// Create or update the group holding another system's reference: 201 when created, 200 when
/// it existed (unchanged when the record is). The path's reference is added to the body's
/// `external_refs` (a body reference of the path's system carries the path's id: another one is
/// a 422); on update the body's fields replace the group's.
#[utoipa::path(
    tag = "groups", operation_id = "upsert_group_by_external_ref",
    params(("system" = String, Path, description = "The other system (hr)"),
           ("external_id" = String, Path, description = "The record's id there")),
    request_body = CreateGroup,
    responses((status = 200, body = Group, headers(("ETag" = String))),
              (status = 201, body = Group, headers(("Location" = String), ("ETag" = String))),
              (status = 409, description = "Name taken by another group", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/groups/by-external/{system}/{external_id}")]
pub async fn upsert_group_by_external_ref(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: ValidJson<CreateGroup>,
) -> ApiResult<HttpResponse> {
    let (system, id) = path.into_inner();
    let reference = ExternalRef { system, id };
    let mut body = body.0;
    body.external_refs = with_path_reference(std::mem::take(&mut body.external_refs), &reference)?;
    check_refs(Some(&body.external_refs))?;
    let update = GroupUpdate {
        name: Some(non_blank(&body.name, "name")?),
        description: Some(body.description.clone()),
        email: body.email.clone().map(Some),
        external_refs: Some(body.external_refs.clone()),
    };
    let ctx = caller.write_context();
    let upserted = upsert_by_reference(
        &state,
        groups::ENTITY,
        &reference,
        || create(&state, &caller, body),
        |id| async {
            state
                .db
                .write(move |conn| groups::update(conn, &ctx, &id, None, update))
                .await
                .map_err(ApiError::from)
        },
    )
    .await?;
    Ok(match upserted {
        Upserted::Created(group) => created(location(&group), group.version, &group),
        Upserted::Updated(group) => with_etag(StatusCode::OK, group.version, &group),
    })
}

/// List assignment groups.
#[utoipa::path(
    tag = "groups", operation_id = "list_groups",
    params(
        ("q" = Option<String>, Query, description = "Words in name or description"),
        ("member" = Option<String>, Query, description = "Only groups this user id belongs to"),
        ("external_ref" = Option<String>, Query, description = "system:id"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<Group>), (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/groups")]
pub async fn list_groups(
    _caller: Authorized<Staff>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(
        &req,
        &[&PAGE_PARAMS[..], &["q", "member", "external_ref"]].concat(),
    )?;
    let filter = GroupFilter {
        q: params.text("q")?,
        member: params.text("member")?,
        external_ref: params.external_ref()?,
    };
    let page = params.page::<String>()?;
    let slice = state
        .db
        .read(move |conn| groups::list(conn, &filter, page.cursor.as_deref(), page.limit))
        .await
        .map_err(ApiError::from)?;
    Ok(Page::from_slice(slice, |group| group.id.clone()).respond(&req))
}

/// Get an assignment group.
#[utoipa::path(
    tag = "groups", operation_id = "get_group",
    params(("id" = String, Path)),
    responses((status = 200, body = Group, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/groups/{id}")]
pub async fn get_group(
    _caller: Authorized<Staff>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let group = state
        .db
        .read(move |conn| groups::get(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "group"))?;
    Ok(with_etag(StatusCode::OK, group.version, &group))
}

/// Update an assignment group (JSON merge patch).
#[utoipa::path(
    tag = "groups", operation_id = "update_group",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UpdateGroup, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Group, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/groups/{id}")]
pub async fn update_group(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateGroup>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let body = body.0;
    check_refs(body.external_refs.as_deref())?;
    let update = GroupUpdate {
        name: body
            .name
            .as_deref()
            .map(|name| non_blank(name, "name"))
            .transpose()?,
        description: body.description,
        email: body.email,
        external_refs: body.external_refs,
    };
    let ctx = caller.write_context();
    let id = id.into_inner();
    let group = state
        .db
        .write(move |conn| groups::update(conn, &ctx, &id, expected_version, update))
        .await
        .map_err(|e| not_found_as(e, "group"))?;
    Ok(with_etag(StatusCode::OK, group.version, &group))
}

/// List the members of a group.
#[utoipa::path(
    tag = "groups", operation_id = "list_group_members",
    params(("id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<User>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/groups/{id}/members")]
pub async fn list_members(
    _caller: Authorized<Staff>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(&req, &PAGE_PARAMS)?;
    let page = params.page::<String>()?;
    let id = id.into_inner();
    let slice = state
        .db
        .read(move |conn| groups::members(conn, &id, page.cursor.as_deref(), page.limit))
        .await
        .map_err(|e| not_found_as(e, "group"))?;
    Ok(Page::from_slice(slice, |user| user.id.clone()).respond(&req))
}

/// Add a user to a group.
#[utoipa::path(
    tag = "groups", operation_id = "add_group_member",
    params(("id" = String, Path)),
    request_body = AddMember,
    responses((status = 201, body = User, headers(("Location" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/groups/{id}/members")]
pub async fn add_member(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<AddMember>,
) -> ApiResult<HttpResponse> {
    let group_id = id.into_inner();
    let user_id = body.0.user_id;
    let ctx = caller.write_context();
    let member = state
        .db
        .write(move |conn| -> ApiResult<User> {
            groups::get(conn, &group_id).map_err(|e| not_found_as(e, "group"))?;
            let user = users::get(conn, &user_id)
                .map_err(|e| unknown_reference(e, "user_id", "no such user"))?;
            if !user.active {
                // The stored user is what the request conflicts with.
                return Err(ApiError::Conflict(
                    "user_id: the user is deactivated".into(),
                ));
            }
            groups::add_member(conn, &ctx, &group_id, &user_id)?;
            Ok(user)
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/users/{}", member.id)))
        .json(member))
}

/// Remove a user from a group.
#[utoipa::path(
    tag = "groups", operation_id = "remove_group_member",
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/groups/{id}/members/{user_id}")]
pub async fn remove_member(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (group_id, user_id) = path.into_inner();
    let ctx = caller.write_context();
    state
        .db
        .write(move |conn| groups::remove_member(conn, &ctx, &group_id, &user_id))
        .await
        .map_err(|e| not_found_as(e, "membership"))?;
    Ok(HttpResponse::NoContent().finish())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_group)
        .service(upsert_group_by_external_ref)
        .service(list_groups)
        .service(get_group)
        .service(update_group)
        .service(list_members)
        .service(add_member)
        .service(remove_member);
}
