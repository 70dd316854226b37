//! `/api/v1/auth/token`, `/api/v1/api-tokens` and `/api/v1/me`.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::{ApiToken, ExternalRef, Role};
use persistence::api_tokens::{self, NewApiToken};
use persistence::{groups, users};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::auth::{generate_api_token, verify_password, Admins, Authorized, Caller, CallerKind};
use crate::concurrency::created;
use crate::error::{not_found_as, ApiError, ApiResult};
use crate::json_body::ValidJson;
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[validate(length(min = 1, max = 64))]
    pub username: String,
    #[validate(length(min = 1, max = 256))]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
    /// The password was reset by an admin: until a new one is chosen with
    /// `POST /api/v1/me/password`, the token serves only that, `/me` and logout.
    pub password_change_required: bool,
}

/// Exchange a username and password for an access token.
#[utoipa::path(
    tag = "auth", operation_id = "issue_token", security(()),
    request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem),
              (status = 429, description = "Too many failed sign-ins for this username or address; see Retry-After", body = crate::error::Problem),
              (status = 503, description = "Too many sign-ins at once; see Retry-After", body = crate::error::Problem)),
)]
#[post("/api/v1/auth/token")]
pub async fn issue_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ValidJson<TokenRequest>,
) -> ApiResult<HttpResponse> {
    let TokenRequest { username, password } = body.0;
    let username = username.to_lowercase();
    let address = req.peer_addr().map(|a| a.ip());
    state.login_throttle.attempt(&username, address)?;
    let lookup = username.clone();
    let credentials = state
        .db
        .read(move |conn| users::credentials_by_username(conn, &lookup))
        .await
        .map_err(ApiError::from)?;
    let stored_hash = credentials.as_ref().and_then(|c| c.password_hash.clone());
    // Unknown users are verified against a dummy hash: same answer, same time class.
    let verified = state
        .password_hashing
        .run(move || verify_password(stored_hash.as_deref(), &password))
        .await?;
    let credentials = match credentials {
        Some(c) if verified && c.active => c,
        _ => return Err(ApiError::Unauthenticated("invalid username or password")),
    };
    state.login_throttle.succeeded(&username, address);
    token_response(
        &state,
        &credentials.id,
        &credentials.roles(),
        credentials.must_change_password,
    )
    .await
}

async fn token_response(
    state: &AppState,
    user_id: &str,
    roles: &[Role],
    password_change_required: bool,
) -> ApiResult<HttpResponse> {
    let access_token = state.tokens.issue(&state.db, user_id, roles).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: state.tokens.ttl_seconds,
            password_change_required,
        }))
}

/// Sign out: the presented access token is refused from now on (on other nodes within the
/// second their access cache trusts a read).
#[utoipa::path(
    tag = "auth", operation_id = "logout",
    responses((status = 204), (status = 401, body = crate::error::Problem),
              (status = 422, description = "API tokens are revoked with DELETE /api/v1/api-tokens/{id}", body = crate::error::Problem)),
)]
#[post("/api/v1/auth/logout")]
pub async fn logout(caller: Caller, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let Some((jti, exp)) = caller.session.clone() else {
        return Err(ApiError::invalid(
            "Authorization",
            "an API token is revoked with DELETE /api/v1/api-tokens/{id}",
        ));
    };
    let expires_at = DateTime::from_timestamp(exp, 0)
        .unwrap_or_else(Utc::now)
        .naive_utc();
    let user_id = caller.id.clone();
    state
        .db
        .write(move |conn| {
            users::revoke_token(conn, &jti, &user_id, expires_at, persistence::now_utc())
        })
        .await
        .map_err(ApiError::from)?;
    state.access.forget(&caller.id);
    Ok(HttpResponse::NoContent().finish())
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[validate(length(min = 1, max = 256))]
    pub current_password: String,
    /// 12 to 256 characters.
    #[schema(min_length = 12, max_length = 256)]
    pub new_password: String,
}

/// Change the caller's own password. Every token issued before is refused from now on; the
/// response carries a new one.
#[utoipa::path(
    tag = "auth", operation_id = "change_my_password",
    request_body = ChangePassword,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem),
              (status = 403, description = "The current password is wrong", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem),
              (status = 429, description = "Too many wrong current passwords; see Retry-After", body = crate::error::Problem)),
)]
#[post("/api/v1/me/password")]
pub async fn change_my_password(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ValidJson<ChangePassword>,
) -> ApiResult<HttpResponse> {
    if caller.kind != CallerKind::User {
        return Err(ApiError::Forbidden(
            "API tokens have no password; create a new token instead".into(),
        ));
    }
    let ChangePassword {
        current_password,
        new_password,
    } = body.0;
    domain::validate_password(&new_password)
        .map_err(|_| ApiError::invalid("new_password", "must be 12 to 256 characters long"))?;
    if new_password == current_password {
        return Err(ApiError::invalid(
            "new_password",
            "must differ from the current password",
        ));
    }
    // A stolen token must not become a way to guess the password: throttled like sign-in.
    let address = req.peer_addr().map(|a| a.ip());
    state.login_throttle.attempt(&caller.name, address)?;
    let id = caller.id.clone();
    let stored = state
        .db
        .read(move |conn| users::password_hash(conn, &id))
        .await
        .map_err(ApiError::from)?;
    let verified = state
        .password_hashing
        .run(move || verify_password(stored.as_deref(), &current_password))
        .await?;
    if !verified {
        return Err(ApiError::Forbidden("the current password is wrong".into()));
    }
    state.login_throttle.succeeded(&caller.name, address);
    let hash = super::users::hash_new_password(&state, Some(new_password))
        .await?
        .ok_or_else(|| ApiError::Internal("no password hash".into()))?;
    let ctx = caller.write_context();
    let id = caller.id.clone();
    state
        .db
        .write(move |conn| users::change_password(conn, &ctx, &id, &hash))
        .await
        .map_err(ApiError::from)?;
    state.access.forget(&caller.id);
    token_response(&state, &caller.id, &caller.roles, false).await
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    #[validate(length(min = 1, max = 100))]
    #[schema(example = "crm-sync")]
    pub name: String,
    pub role: Role,
    /// When the token stops working, in the future; `null` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// What the token may do within its role, per route family: `incidents:read`,
    /// `incidents:write`, `problems:read`, `problems:write`, `changes:read`, `changes:write`,
    /// `cmdb:read`, `cmdb:write`, `slas:read`, `slas:write`, `events:read`, `audit:read`,
    /// `directory:read`, `directory:write`, `alerts:read`, `alerts:write`, `webhooks:read`,
    /// `webhooks:write`, `metrics:read` (`write` includes `read`). Omitted or `null`: read-only, every read
    /// the role allows and no change.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// A new API token. `token` is shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiToken {
    #[serde(flatten)]
    pub token: ApiToken,
    #[serde(rename = "token")]
    pub secret: String,
}

/// Create an API token for a machine.
#[utoipa::path(
    tag = "api-tokens", operation_id = "create_api_token",
    request_body = CreateApiToken,
    responses((status = 201, body = CreatedApiToken), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/api-tokens")]
pub async fn create_api_token(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<CreateApiToken>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::invalid("expires_at", "must be in the future"));
    }
    let name = body.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be blank"));
    }
    let scopes = body.scopes.map(|mut scopes| {
        scopes.sort();
        scopes.dedup();
        scopes
    });
    if let Some(scopes) = &scopes {
        domain::scopes::validate(scopes)?;
    }
    let (secret, token_hash) = generate_api_token();
    let new = NewApiToken {
        name,
        role: body.role,
        token_hash,
        expires_at: body.expires_at.map(|at| at.naive_utc()),
        scopes,
    };
    let ctx = caller.write_context();
    let token = state
        .db
        .write(move |conn| api_tokens::create(conn, &ctx, new))
        .await
        .map_err(ApiError::from)?;
    let location = format!("/api/v1/api-tokens/{}", token.id);
    let mut response = created(location, 1, &CreatedApiToken { token, secret });
    // The secret is in this response only: no cache, proxy or idempotency store may keep it.
    response.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    Ok(response.map_into_boxed_body())
}

/// List API tokens (never their secrets).
#[utoipa::path(
    tag = "api-tokens", operation_id = "list_api_tokens",
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<ApiToken>)),
)]
#[get("/api/v1/api-tokens")]
pub async fn list_api_tokens(
    _caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = QueryParams::parse(&req, &PAGE_PARAMS)?.page::<String>()?;
    let slice = state
        .db
        .read(move |conn| api_tokens::list(conn, page.cursor.as_deref(), page.limit))
        .await
        .map_err(ApiError::from)?;
    Ok(Page::from_slice(slice, |token| token.id.clone()).respond(&req))
}

/// Revoke an API token; it is refused from the next request on.
#[utoipa::path(
    tag = "api-tokens", operation_id = "revoke_api_token",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/api-tokens/{id}")]
pub async fn revoke_api_token(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let ctx = caller.write_context();
    state
        .db
        .write(move |conn| api_tokens::revoke(conn, &ctx, &id))
        .await
        .map_err(|e| not_found_as(e, "active API token"))?;
    // Tokens are kept by the hash of their secret, which is not stored with the id.
    state.api_tokens.forget_all();
    Ok(HttpResponse::NoContent().finish())
}

/// A group as listed on `/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
}

/// The caller: a user with their groups, or an API token.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: String,
    /// `user` or `api_token`.
    pub kind: &'static str,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<Role>,
    pub groups: Vec<GroupRef>,
    pub external_refs: Vec<ExternalRef>,
}

/// Who am I: the caller's identity, roles and groups.
#[utoipa::path(
    tag = "auth", operation_id = "get_me",
    responses((status = 200, body = Me), (status = 401, body = crate::error::Problem)),
)]
#[get("/api/v1/me")]
pub async fn me(caller: Caller, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if caller.kind == CallerKind::ApiToken {
        return Ok(HttpResponse::Ok().json(Me {
            id: caller.id,
            kind: "api_token",
            display_name: caller.name.clone(),
            username: caller.name,
            email: None,
            roles: caller.roles,
            groups: Vec::new(),
            external_refs: Vec::new(),
        }));
    }
    let id = caller.id.clone();
    let (user, groups) = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let user = users::get(conn, &id)?;
            let groups = groups::of_user(conn, &id)?;
            Ok((user, groups))
        })
        .await?;
    Ok(HttpResponse::Ok().json(Me {
        id: user.id,
        kind: "user",
        username: user.username,
        display_name: user.display_name,
        email: user.email,
        roles: user.roles,
        groups: groups
            .into_iter()
            .map(|(id, name)| GroupRef { id, name })
            .collect(),
        external_refs: user.external_refs,
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(issue_token)
        .service(logout)
        .service(change_my_password)
        .service(create_api_token)
        .service(list_api_tokens)
        .service(revoke_api_token)
        .service(me);
}
