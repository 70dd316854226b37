//! `/api/v1/users`: people and service accounts. Admins manage them; staff may look them up.

use actix_web::http::StatusCode;
use actix_web::{get, patch, post, put, web, HttpRequest, HttpResponse};
use domain::{validate_password, validate_username, ExternalRef, FieldError, Role, User};
use persistence::users::{self, NewUser, UserFilter, UserUpdate};
use serde::Deserialize;
use utoipa::ToSchema;
use validator::Validate;

use crate::auth::{hash_password, Admins, Authorized, Caller, Staff};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, ApiError, ApiResult};
use crate::json_body::{nullable, required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;
use crate::usecases::{upsert_by_reference, with_path_reference, Upserted};

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(example = "alice", pattern = "^[A-Za-z0-9_.@-]{2,64}$")]
    pub username: String,
    #[validate(email, length(max = 254))]
    #[schema(example = "alice@example.com")]
    pub email: Option<String>,
    #[validate(length(min = 1, max = 200))]
    #[schema(example = "Alice")]
    pub display_name: String,
    /// 12 to 256 characters; omit for accounts that never sign in with a password.
    #[schema(min_length = 12, max_length = 256)]
    pub password: Option<String>,
    #[validate(length(min = 1, max = 6, message = "must list 1 to 6 roles"))]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
}

/// A merge patch of a user: absent fields stay, `null` clears a nullable field.
#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "nullable")]
    #[validate(email, length(max = 254))]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(min = 1, max = 200))]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false, min_length = 12, max_length = 256)]
    pub password: Option<String>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(min = 1, max = 6, message = "must list 1 to 6 roles"))]
    pub roles: Option<Vec<Role>>,
    /// `false` deactivates: the user can no longer sign in and their tokens stop working.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub external_refs: Option<Vec<ExternalRef>>,
}

/// Checks the rules `validator` cannot express, all at once so the client sees every problem.
fn domain_checks(
    username: Option<&str>,
    password: Option<&str>,
    external_refs: Option<&[ExternalRef]>,
) -> ApiResult<()> {
    let mut errors: Vec<FieldError> = Vec::new();
    let mut collect = |result: Result<(), domain::DomainError>| {
        if let Err(domain::DomainError::Invalid(found)) = result {
            errors.extend(found);
        }
    };
    if let Some(username) = username {
        collect(validate_username(username));
    }
    if let Some(password) = password {
        collect(validate_password(password));
    }
    if let Some(refs) = external_refs {
        collect(ExternalRef::validate_list(refs, "external_refs"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Trims a name and refuses one that is only spaces.
pub(crate) fn non_blank(value: &str, field: &str) -> ApiResult<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(field, "must not be blank"));
    }
    Ok(trimmed.to_owned())
}

/// argon2 is deliberately slow and memory-hard: hash off the async executor, in the bounded
/// pool sign-ins use.
pub(crate) async fn hash_new_password(
    state: &AppState,
    password: Option<String>,
) -> ApiResult<Option<String>> {
    match password {
        Some(password) => Ok(Some(
            state
                .password_hashing
                .run(move || hash_password(&password))
                .await??,
        )),
        None => Ok(None),
    }
}

fn dedup_roles(mut roles: Vec<Role>) -> Vec<Role> {
    roles.sort();
    roles.dedup();
    roles
}

fn location(user: &User) -> String {
    format!("/api/v1/users/{}", user.id)
}

/// Create a user.
#[utoipa::path(
    tag = "users", operation_id = "create_user",
    request_body = CreateUser,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retry")),
    responses(
        (status = 201, body = User, headers(("Location" = String), ("ETag" = String))),
        (status = 409, description = "Username or external reference taken", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
    ),
)]
#[post("/api/v1/users")]
pub async fn create_user(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<CreateUser>,
) -> ApiResult<HttpResponse> {
    let user = create(&state, &caller, body.0).await?;
    Ok(created(location(&user), user.version, &user))
}

async fn create(state: &AppState, caller: &Caller, mut body: CreateUser) -> ApiResult<User> {
    // Usernames are case-insensitive: `Alice` and `alice` are one person.
    body.username = body.username.to_lowercase();
    let display_name = non_blank(&body.display_name, "display_name")?;
    domain_checks(
        Some(&body.username),
        body.password.as_deref(),
        Some(&body.external_refs),
    )?;
    let password_hash = hash_new_password(state, body.password).await?;
    let ctx = caller.write_context();
    let new = NewUser {
        username: body.username,
        email: body.email,
        display_name,
        password_hash,
        roles: dedup_roles(body.roles),
        external_refs: body.external_refs,
    };
    state
        .db
        .write(move |conn| users::create(conn, &ctx, new))
        .await
        .map_err(ApiError::from)
}

/// Create or update the user holding another system's reference (a CRM or HR system pushing
/// its record): 201 when created, 200 when it existed (unchanged when the record is). The
/// path's reference is added to the body's `external_refs`. On update the body's fields replace
/// the user's and absent ones stay; the username never changes (another one is a 409), a body
/// reference of the path's system carries the path's id (another one is a 422), and a
/// `password` is used only to create the user: an existing user's password is theirs.
#[utoipa::path(
    tag = "users", operation_id = "upsert_user_by_external_ref",
    params(("system" = String, Path, description = "The other system (hr)"),
           ("external_id" = String, Path, description = "The record's id there")),
    request_body = CreateUser,
    responses((status = 200, body = User, headers(("ETag" = String))),
              (status = 201, body = User, headers(("Location" = String), ("ETag" = String))),
              (status = 409, description = "Username taken by another user", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/users/by-external/{system}/{external_id}")]
pub async fn upsert_user_by_external_ref(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: ValidJson<CreateUser>,
) -> ApiResult<HttpResponse> {
    let (system, id) = path.into_inner();
    let reference = ExternalRef { system, id };
    let mut body = body.0;
    body.external_refs = with_path_reference(std::mem::take(&mut body.external_refs), &reference)?;
    let replacement = UserReplacement::of(&body)?;
    let upserted = upsert_by_reference(
        &state,
        users::ENTITY,
        &reference,
        || create(&state, &caller, body),
        |id| replacement.apply(&state, &caller, id),
    )
    .await?;
    Ok(match upserted {
        Upserted::Created(user) => created(location(&user), user.version, &user),
        Upserted::Updated(user) => with_etag(StatusCode::OK, user.version, &user),
    })
}

/// What a pushed record replaces in an existing user.
struct UserReplacement {
    username: String,
    update: UserUpdate,
}

impl UserReplacement {
    fn of(body: &CreateUser) -> ApiResult<UserReplacement> {
        domain_checks(None, None, Some(&body.external_refs))?;
        Ok(UserReplacement {
            username: body.username.to_lowercase(),
            update: UserUpdate {
                email: body.email.clone().map(Some),
                display_name: Some(non_blank(&body.display_name, "display_name")?),
                roles: Some(dedup_roles(body.roles.clone())),
                active: None,
                password_hash: None,
                external_refs: Some(body.external_refs.clone()),
            },
        })
    }

    async fn apply(self, state: &AppState, caller: &Caller, id: String) -> ApiResult<User> {
        let ctx = caller.write_context();
        let updated_id = id.clone();
        let user = state
            .db
            .write(move |conn| {
                let existing = users::get(conn, &updated_id)?;
                if existing.username != self.username {
                    return Err(ApiError::Conflict(format!(
                        "username: the reference belongs to user {}; usernames do not change",
                        existing.username
                    )));
                }
                Ok(users::update(conn, &ctx, &updated_id, None, self.update)?)
            })
            .await?;
        state.access.forget(&id);
        Ok(user)
    }
}

/// List users.
#[utoipa::path(
    tag = "users", operation_id = "list_users",
    params(
        ("q" = Option<String>, Query, description = "Words in username, display name or email"),
        ("role" = Option<Role>, Query),
        ("active" = Option<bool>, Query),
        ("external_ref" = Option<String>, Query, description = "system:id"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<User>, headers(("Link" = String, description = "rel=\"next\""))),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/users")]
pub async fn list_users(
    _caller: Authorized<Staff>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(
        &req,
        &[&PAGE_PARAMS[..], &["q", "role", "active", "external_ref"]].concat(),
    )?;
    let filter = UserFilter {
        q: params.text("q")?,
        role: params.parsed("role", &format!("one of {}", Role::names()))?,
        active: params.boolean("active")?,
        external_ref: params.external_ref()?,
    };
    let page = params.page::<String>()?;
    let slice = state
        .db
        .read(move |conn| users::list(conn, &filter, page.cursor.as_deref(), page.limit))
        .await
        .map_err(ApiError::from)?;
    Ok(Page::from_slice(slice, |user| user.id.clone()).respond(&req))
}

/// Get a user.
#[utoipa::path(
    tag = "users", operation_id = "get_user",
    params(("id" = String, Path)),
    responses((status = 200, body = User, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/users/{id}")]
pub async fn get_user(
    _caller: Authorized<Staff>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let user = state
        .db
        .read(move |conn| users::get(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "user"))?;
    Ok(with_etag(StatusCode::OK, user.version, &user))
}

/// Update or deactivate a user (JSON merge patch).
#[utoipa::path(
    tag = "users", operation_id = "update_user",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")),
    request_body(content = UpdateUser, content_type = "application/merge-patch+json"),
    responses((status = 200, body = User, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, description = "Deactivates the signed-in caller, or an external reference is taken", body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/users/{id}")]
pub async fn update_user(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateUser>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let body = body.0;
    domain_checks(
        None,
        body.password.as_deref(),
        body.external_refs.as_deref(),
    )?;
    let id = id.into_inner();
    // `{"active": false}` is valid content; it conflicts only with who is signed in (the
    // caller would lock themselves out with the credential in use): a 409, not a 422.
    if id == caller.id && body.active == Some(false) {
        return Err(ApiError::Conflict(
            "active: you cannot deactivate yourself (the user signed in); another admin may"
                .to_owned(),
        ));
    }
    let password_hash = hash_new_password(&state, body.password).await?;
    let display_name = body
        .display_name
        .as_deref()
        .map(|name| non_blank(name, "display_name"))
        .transpose()?;
    let update = UserUpdate {
        email: body.email,
        display_name,
        roles: body.roles.map(dedup_roles),
        active: body.active,
        password_hash,
        external_refs: body.external_refs,
    };
    let ctx = caller.write_context();
    let updated_id = id.clone();
    let user = state
        .db
        .write(move |conn| users::update(conn, &ctx, &updated_id, expected_version, update))
        .await
        .map_err(|e| not_found_as(e, "user"))?;
    state.access.forget(&id);
    Ok(with_etag(StatusCode::OK, user.version, &user))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_user)
        .service(list_users)
        .service(get_user)
        .service(update_user)
        .service(upsert_user_by_external_ref);
}
