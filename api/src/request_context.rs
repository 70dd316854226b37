//! The request id and path of the request being handled, available to any code that runs for
//! it (error rendering, audit entries) without threading them through every call.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::Error;

use crate::error::ApiError;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub path: String,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// The context of the request this task is handling, if any.
pub fn current() -> Option<RequestContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

pub fn current_request_id() -> Option<String> {
    CONTEXT.try_with(|c| c.request_id.clone()).ok()
}

/// Honours a well-formed `X-Request-Id` or generates one, runs the request inside its context,
/// and echoes the id on the response.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let context = RequestContext {
        request_id: request_id.clone(),
        path: req.path().to_owned(),
    };
    // Errors returned by handlers and extractors are rendered inside this scope, so their
    // problem documents name this request.
    let mut response = CONTEXT
        .scope(context, async move {
            match nul_character_problem(&req) {
                Some(problem) => Ok(req.error_response(problem)),
                None => next
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_boxed_body),
            }
        })
        .await?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

/// No identifier or filter holds a NUL character (PostgreSQL text cannot), so a request that
/// carries one is refused before any handler runs.
fn nul_character_problem(req: &ServiceRequest) -> Option<ApiError> {
    if req.path().contains("%00") {
        return Some(ApiError::NotFound(format!("no resource at {}", req.path())));
    }
    form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        .map(|(name, _)| {
            ApiError::invalid(name.replace('\0', ""), "must not contain NUL characters")
        })
}

fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}
