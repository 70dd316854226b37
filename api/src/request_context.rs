//! The request id and path of the request being handled, available to any code that runs for
//! it (error rendering, audit entries) without threading them through every call.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError};
use futures_util::FutureExt;

use crate::error::ApiError;

/// Panics caught in handlers since the process started.
pub static PANICS: AtomicU64 = AtomicU64::new(0);

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
                None => {
                    let (method, path) = (req.method().clone(), req.path().to_owned());
                    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
                        Ok(outcome) => outcome.map(ServiceResponse::map_into_boxed_body),
                        Err(panic) => Err(panicked(&method, &path, panic.as_ref())),
                    }
                }
            }
        })
        .await?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

/// A handler panicked (a bug): the client gets a 500 problem naming the request, the log gets
/// the panic's message, and the count goes up. The worker keeps serving. (The request itself
/// went down with the handler, so the response travels as an error the server renders.)
fn panicked(method: &Method, path: &str, panic: &(dyn Any + Send)) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    let count = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
    let error = ApiError::Internal(format!(
        "handler panicked on {method} {path} ({count} so far): {message}"
    ));
    let mut response = error.error_response();
    if let Some(id) = current_request_id().and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    InternalError::from_response("a handler panicked", response).into()
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

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App, HttpResponse};

    use super::*;

    async fn panics() -> HttpResponse {
        panic!("a bug in a handler");
    }

    #[actix_web::test]
    async fn a_panicking_handler_answers_a_500_problem_with_its_request_id() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(middleware))
                .route("/boom", web::get().to(panics))
                .route("/fine", web::get().to(HttpResponse::Ok)),
        )
        .await;
        let before = PANICS.load(Ordering::Relaxed);
        let request = test::TestRequest::get()
            .uri("/boom")
            .insert_header(("x-request-id", "req-42"))
            .to_request();
        let Err(error) = test::try_call_service(&app, request).await else {
            panic!("the panic became a response of its own");
        };
        let response = error.error_response();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers().get("x-request-id").unwrap(), "req-42");
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let bytes = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["request_id"], "req-42");
        assert!(!body.to_string().contains("a bug"), "{body}");
        assert!(PANICS.load(Ordering::Relaxed) > before);

        let response =
            test::call_service(&app, test::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(response.status(), 200);
    }
}
