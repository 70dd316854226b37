//! `Idempotency-Key` on POST: the first response is stored and replayed for a retry with the same
//! key and body; the same key with another body, or a key in use by a running request, is a
//! 409. Keys are per caller and kept 24 hours.
//!
//! A response that carries a secret (marked `Cache-Control: no-store`) is never kept: its replay
//! is a 409 saying the secret was shown once. A replay first checks that the caller may still
//! make the request (the credential extractors run, the handler does not). A request with no
//! credential passes through untouched, so routes that need none accept the header.

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, Error, HttpMessage, HttpResponse, ResponseError};
use chrono::TimeDelta;
use persistence::idempotency::{self, Claim};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::json_body::{read_body, BodyLimit};
use crate::state::AppState;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub const MAX_KEY_LEN: usize = 255;
/// How long a key is remembered.
pub const RETENTION: TimeDelta = TimeDelta::hours(24);
/// The response headers a replay repeats.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.method() != Method::POST
        || !req.headers().contains_key(&IDEMPOTENCY_KEY)
        || !req.headers().contains_key(header::AUTHORIZATION)
    {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let mut req = req;
    let claimed = claim(&mut req).await;
    match claimed {
        Err(error) => Ok(req.error_response(error)),
        Ok(Claimed::Replay(response, body)) => {
            // The caller's roles or access may have changed since the first response: the
            // request runs as far as its credential checks before the replay is given.
            req.extensions_mut().insert(auth::AuthorisationProbe);
            req.set_payload(Payload::from(body));
            let checked = next.call(req).await?;
            let permitted = checked
                .response()
                .error()
                .and_then(|e| e.as_error::<ApiError>())
                .is_some_and(|e| matches!(e, ApiError::AuthorisationProbe));
            let refused = matches!(
                checked.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            );
            if refused && !permitted {
                return Ok(checked.map_into_boxed_body());
            }
            let (http_request, _) = checked.into_parts();
            Ok(ServiceResponse::new(http_request, response))
        }
        Ok(Claimed::Run(claim)) => {
            req.set_payload(Payload::from(claim.body.clone()));
            let outcome = next.call(req).await;
            finish(claim, outcome).await
        }
    }
}

/// A claimed key and what its request needs to run and be recorded.
struct KeyClaim {
    state: web::Data<AppState>,
    principal: String,
    key: String,
    body: Bytes,
}

enum Claimed {
    /// The key answered before: its stored response, and the request body.
    Replay(HttpResponse, Bytes),
    /// The key is ours: run the request.
    Run(KeyClaim),
}

/// Authenticates the caller (keys are per caller), reads the body and claims the key.
async fn claim(req: &mut ServiceRequest) -> ApiResult<Claimed> {
    let key = idempotency_key(req.headers())?;
    let caller = auth::authenticate(req.request()).await?;
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let limit = req
        .app_data::<web::Data<BodyLimit>>()
        .map_or(1 << 20, |l| l.0);
    let body = read_body(req.take_payload(), limit).await?;
    let request_hash = fingerprint(req.method(), req.path(), req.query_string(), &body);

    let principal = caller.principal();
    let claim = {
        let (principal, key, request_hash) = (principal.clone(), key.clone(), request_hash.clone());
        state
            .db
            .write(move |conn| {
                let now = persistence::now_utc();
                idempotency::claim(conn, &principal, &key, &request_hash, now, now - RETENTION)
            })
            .await?
    };
    if let Claim::Existing(stored) = claim {
        if stored.request_hash != request_hash {
            // The request itself is valid; it conflicts with the key's state, as a key in
            // use does: 409, so a schema-valid request is never a 422.
            return Err(ApiError::Conflict(
                "this Idempotency-Key was already used with a different request; use a new key"
                    .into(),
            ));
        }
        let Some(status) = stored.status else {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress; retry later".into(),
            ));
        };
        return Ok(Claimed::Replay(
            replay(
                status,
                stored.response_headers.as_deref(),
                stored.response_body.unwrap_or_default(),
            ),
            body,
        ));
    }
    Ok(Claimed::Run(KeyClaim {
        state,
        principal,
        key,
        body,
    }))
}

/// Stores the response under the key, or frees the key when there is nothing durable to replay.
async fn finish(
    claim: KeyClaim,
    outcome: Result<ServiceResponse<impl MessageBody + 'static>, Error>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let KeyClaim {
        state,
        principal,
        key,
        ..
    } = claim;
    let response = match outcome {
        Ok(response) if !response.status().is_server_error() => response.map_into_boxed_body(),
        other => {
            let release = state
                .db
                .write(move |conn| idempotency::release(conn, &principal, &key))
                .await;
            if let Err(e) = release {
                log::warn!("cannot release an idempotency key: {e}");
            }
            return other.map(ServiceResponse::map_into_boxed_body);
        }
    };
    let (http_request, response) = response.into_parts();
    let status = response.status();
    let kept = kept_headers(response.headers());
    let (head, response_body) = response.into_parts();
    let Ok(bytes) = body::to_bytes(response_body).await else {
        let error = ApiError::Internal("cannot buffer the response".into());
        return Ok(ServiceResponse::new(http_request, error.error_response()));
    };
    let (stored_body, kept) = if carries_secret(&head) {
        // Shown once, never stored: the replay only says so.
        (String::new(), withheld(&kept))
    } else {
        (String::from_utf8_lossy(&bytes).into_owned(), kept)
    };
    let stored = state
        .db
        .write(move |conn| {
            idempotency::complete(conn, &principal, &key, status.as_u16(), &stored_body, &kept)
        })
        .await;
    if let Err(e) = stored {
        // The change itself committed; only its replay could not be kept.
        log::warn!("cannot store an idempotent response: {e}");
    }
    Ok(ServiceResponse::new(
        http_request,
        head.set_body(BoxBody::new(bytes)),
    ))
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<String> {
    headers
        .get(&IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| {
            !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })
}

/// The same key is only replayed for the same method, path, query and body.
fn fingerprint(method: &Method, path: &str, query: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        query.as_bytes(),
    ] {
        hasher.update(part);
        hasher.update([0]);
    }
    hasher.update(body);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn kept_headers(headers: &HeaderMap) -> String {
    let kept: Map<String, Value> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), Value::from(value)))
        })
        .collect();
    Value::Object(kept).to_string()
}

/// Marks, among the kept headers, a response whose body was not kept.
const WITHHELD: &str = "x-itsm-secret-withheld";

/// Responses that must not be stored anywhere say so with `Cache-Control: no-store`.
fn carries_secret<B>(response: &HttpResponse<B>) -> bool {
    response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-store"))
}

fn withheld(kept: &str) -> String {
    let mut headers: Map<String, Value> = serde_json::from_str(kept).unwrap_or_default();
    headers.remove(header::CONTENT_TYPE.as_str());
    headers.insert(WITHHELD.into(), Value::from("true"));
    Value::Object(headers).to_string()
}

fn replay(status: i32, headers: Option<&str>, body: String) -> HttpResponse {
    let headers: Map<String, Value> = headers
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    if headers.contains_key(WITHHELD) {
        let mut response = ApiError::Conflict(
            "the first response to this Idempotency-Key carried a secret, which is shown only \
             once and was not kept; the resource it created is at Location"
                .into(),
        )
        .error_response();
        if let Some(location) = headers
            .get(header::LOCATION.as_str())
            .and_then(Value::as_str)
            .and_then(|l| HeaderValue::from_str(l).ok())
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
        return response;
    }
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.insert_header((REPLAYED, HeaderValue::from_static("true")));
    for (name, value) in headers {
        if let (Ok(name), Some(value)) = (HeaderName::try_from(name), value.as_str()) {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.insert_header((name, value));
            }
        }
    }
    response.body(body)
}
