//! One error type for the whole API, rendered as RFC 9457 `application/problem+json`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::{DomainError, FieldError};
use persistence::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::request_context;

const PROBLEM_BASE: &str = "https://itsm.example/problems/";

/// The most field errors one problem lists.
pub const MAX_LISTED_ERRORS: usize = 20;

/// Everything a request can fail with, each mapped to exactly one status and problem type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("{detail}")]
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// An atomic batch that the stored data refuses (an entry that conflicts, names an unknown
    /// class or attributes its class does not take): nothing was written (409), and `errors`
    /// names each refused entry.
    #[error("{detail}")]
    BatchRefused {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// Every listed field names a record that does not exist: the request is well formed
    /// but conflicts with what is stored (409), and `errors` names each field.
    #[error("{detail}")]
    UnknownReference {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed here")]
    MethodNotAllowed {
        method: String,
        allow: Vec<&'static str>,
    },
    #[error("{0}")]
    Conflict(String),
    /// A database constraint refused a write that validation let through (a record referred
    /// to vanished meanwhile, a name taken at the same instant). The client gets a stable
    /// problem type and the request id; `cause`, which names tables, goes to the log only.
    #[error(
        "the request conflicts with data stored meanwhile; read the records it refers to and retry"
    )]
    ConstraintViolation { cause: String },
    #[error("{detail}")]
    InvalidTransition {
        detail: String,
        allowed_actions: Vec<String>,
    },
    /// A change's planned window hits freeze windows: 409 listing every window and item.
    #[error("{detail}")]
    Frozen {
        detail: String,
        freeze_windows: serde_json::Value,
    },
    #[error("{}", version_mismatch_detail(*expected, *actual))]
    VersionMismatch { expected: i64, actual: i64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// The storage cannot take the request for now (disk full, read-only, PostgreSQL gone):
    /// 503 with a problem type per cause; the database's own text goes to the log only.
    #[error("{0}; retry shortly")]
    Outage(persistence::Outage),
    #[error("internal error")]
    Internal(String),
    /// Never answered to a client: a replay's authorisation check passed (see `idempotency`).
    #[error("authorised")]
    AuthorisationProbe,
}

fn version_mismatch_detail(expected: i64, actual: i64) -> String {
    if expected == crate::concurrency::NO_VERSION {
        format!("If-Match names only weak ETags, which never match (the current version is \"{actual}\")")
    } else {
        format!("If-Match \"{expected}\" does not match current version \"{actual}\"")
    }
}

/// The problem document clients receive.
/// Named after RFC 9457 (Problem Details), apart from the ITIL `Problem` record.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProblemDetails)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The request path the problem occurred on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request id, as echoed in `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The fields at fault: each invalid field (422), each field naming a missing record
    /// (409 `unknown-reference`) or each refused entry of an atomic batch (409 `batch-refused`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ProblemFieldError>)]
    pub errors: Vec<FieldError>,
    /// The actions the resource allows now (409 on a transition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_actions: Option<Vec<String>>,
    /// Every freeze window a change's planned window hits, with every item concerned (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub freeze_windows: Option<serde_json::Value>,
}

/// One invalid field of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemFieldError {
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::from_field_errors(vec![FieldError::new(field, message)])
    }

    /// A 422 listing `errors` once each and at most `MAX_LISTED_ERRORS` of them, so a request
    /// with thousands of bad parameters gets a short answer.
    pub fn from_field_errors(mut errors: Vec<FieldError>) -> Self {
        // The contract promises at least one listed field on every 422.
        if errors.is_empty() {
            errors.push(FieldError::new("body", "is invalid"));
        }
        let (detail, errors) = listed(errors);
        if errors.iter().all(|error| error.unknown_reference) {
            return Self::UnknownReference { detail, errors };
        }
        Self::Invalid { detail, errors }
    }

    /// An atomic batch refused by what is stored (409), each refused entry listed as for a 422.
    pub fn batch_refused(errors: Vec<FieldError>) -> Self {
        let (detail, errors) = listed(errors);
        Self::BatchRefused {
            detail: format!("the atomic batch was refused and nothing was written: {detail}"),
            errors,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Malformed(_) => ("malformed-request", "Malformed request"),
            ApiError::Invalid { .. } => ("validation", "Invalid request"),
            ApiError::UnknownReference { .. } => {
                ("unknown-reference", "Refers to a missing record")
            }
            ApiError::BatchRefused { .. } => ("batch-refused", "Batch refused"),
            ApiError::Unauthenticated(_) => ("unauthenticated", "Authentication required"),
            ApiError::Forbidden(_) => ("forbidden", "Forbidden"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::ConstraintViolation { .. } => {
                ("constraint-violation", "Conflict with stored data")
            }
            ApiError::InvalidTransition { .. } => ("invalid-transition", "Transition not allowed"),
            ApiError::Frozen { .. } => ("change-freeze", "Change freeze"),
            ApiError::VersionMismatch { .. } => ("version-mismatch", "Resource has changed"),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", "Request body too large"),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported-media-type", "Unsupported media type")
            }
            ApiError::TooManyRequests { .. } => ("rate-limited", "Too many requests"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Outage(outage) => (outage.as_str(), "Service unavailable"),
            ApiError::Internal(_) | ApiError::AuthorisationProbe => ("internal", "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.kind();
        let context = request_context::current();
        let detail = match self {
            // Internal details go to the log, never to the client.
            ApiError::Internal(_) => "the server failed to handle the request".to_owned(),
            other => other.to_string(),
        };
        Problem {
            problem_type: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: self.status_code().as_u16(),
            detail,
            instance: context.as_ref().map(|c| c.path.clone()),
            request_id: context.map(|c| c.request_id),
            errors: match self {
                ApiError::Invalid { errors, .. }
                | ApiError::UnknownReference { errors, .. }
                | ApiError::BatchRefused { errors, .. } => errors.clone(),
                _ => Vec::new(),
            },
            allowed_actions: match self {
                ApiError::InvalidTransition {
                    allowed_actions, ..
                } => Some(allowed_actions.clone()),
                _ => None,
            },
            freeze_windows: match self {
                ApiError::Frozen { freeze_windows, .. } => Some(freeze_windows.clone()),
                _ => None,
            },
        }
    }
}

/// `errors` once each and at most `MAX_LISTED_ERRORS` of them, with a detail naming the one
/// field or counting them.
fn listed(errors: Vec<FieldError>) -> (String, Vec<FieldError>) {
    let mut listed: Vec<FieldError> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for error in errors {
        if !seen.insert((error.field.clone(), error.message.clone())) {
            continue;
        }
        total += 1;
        if listed.len() < MAX_LISTED_ERRORS {
            listed.push(error);
        }
    }
    let detail = match listed.as_slice() {
        [one] => format!("{}: {}", one.field, one.message),
        _ if total > listed.len() => format!(
            "{total} fields are invalid; the first {} are listed",
            listed.len()
        ),
        many => format!("{} fields are invalid", many.len()),
    };
    (detail, listed)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_)
            | ApiError::UnknownReference { .. }
            | ApiError::BatchRefused { .. }
            | ApiError::ConstraintViolation { .. }
            | ApiError::InvalidTransition { .. }
            | ApiError::Frozen { .. } => StatusCode::CONFLICT,
            ApiError::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Outage(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::AuthorisationProbe => StatusCode::NO_CONTENT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = request_context::current_request_id().unwrap_or_default();
        match self {
            ApiError::Internal(cause) => {
                log::error!("internal error (request {request_id}): {cause}")
            }
            ApiError::ConstraintViolation { cause } => {
                log::warn!("constraint violation (request {request_id}): {cause}")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match self {
            ApiError::Unauthenticated(_) => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, allow.join(", ")));
            }
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::Outage(outage) => {
                response.insert_header((header::RETRY_AFTER, retry_after(*outage)));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, (*retry_after).max(1).to_string()));
            }
            _ => {}
        }
        response.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

/// Seconds a client should wait before retrying during an outage: a connection or a lock comes
/// back by itself within moments; a full disk or a read-only file waits for an operator.
fn retry_after(outage: persistence::Outage) -> HeaderValue {
    use persistence::Outage;
    HeaderValue::from_static(match outage {
        Outage::Unreachable | Outage::Busy => "1",
        Outage::Full | Outage::ReadOnly | Outage::IoError => "5",
    })
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid(errors) => ApiError::from_field_errors(errors),
            DomainError::InvalidTransition {
                detail,
                allowed_actions,
            } => ApiError::InvalidTransition {
                detail,
                allowed_actions,
            },
            DomainError::Conflict(detail) => ApiError::Conflict(detail),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("resource not found".into()),
            StoreError::Conflict(detail) => ApiError::Conflict(detail),
            constraint @ StoreError::Constraint { .. } => ApiError::ConstraintViolation {
                cause: constraint.to_string(),
            },
            StoreError::VersionMismatch { expected, actual } => {
                ApiError::VersionMismatch { expected, actual }
            }
            StoreError::Outage { outage, detail } => {
                log::warn!("{}: {detail}", outage.as_str());
                ApiError::Outage(outage)
            }
            StoreError::Unavailable(detail) => {
                log::warn!("database unavailable: {detail}");
                ApiError::Unavailable("the database is unavailable, retry shortly".into())
            }
            StoreError::SearchTimedOut => ApiError::Unavailable(
                "the word search took longer than its time limit: add words or filters \
                 (state=, created_after=...) to narrow it, or retry shortly"
                    .into(),
            ),
            StoreError::Database(e) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Units of work run inside diesel transactions, which report diesel's own error type.
impl From<persistence::DieselError> for ApiError {
    fn from(error: persistence::DieselError) -> Self {
        StoreError::from(error).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A lookup of the resource in the path: missing is a 404 naming `what`.
pub fn not_found_as(error: StoreError, what: &str) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

/// A lookup of a record the request body refers to: missing is a 422 on `field`.
pub fn unknown_reference(error: StoreError, field: &str, message: &str) -> ApiError {
    match error {
        StoreError::NotFound => {
            let what = message.strip_prefix("no such ").unwrap_or(message);
            ApiError::from_field_errors(vec![FieldError::unknown(field, what)])
        }
        other => other.into(),
    }
}
