//! A CORS preflight the configuration refuses (an origin not in `ITSM_CORS_ORIGINS`, or a
//! malformed preflight) answers an RFC 9457 problem document like every other refusal, not the
//! CORS layer's plain text.

use actix_cors::CorsError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::Error;

use crate::error::ApiError;

/// Wraps the CORS layer: its refusals become problems (403 for an origin, method or header not
/// allowed, 400 for a malformed preflight).
pub async fn refusals_as_problems(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let response = next.call(req).await?;
    let refusal = response
        .response()
        .error()
        .and_then(|error| error.as_error::<CorsError>())
        .map(|refusal| problem_for(refusal, &origin));
    let Some(problem) = refusal else {
        return Ok(response.map_into_left_body());
    };
    let (request, _) = response.into_parts();
    let answer = actix_web::ResponseError::error_response(&problem);
    Ok(ServiceResponse::new(request, answer).map_into_right_body())
}

fn problem_for(refusal: &CorsError, origin: &str) -> ApiError {
    match refusal {
        CorsError::OriginNotAllowed => ApiError::Forbidden(format!(
            "the origin {origin:?} may not call this API from a browser (ITSM_CORS_ORIGINS)"
        )),
        CorsError::MethodNotAllowed | CorsError::HeadersNotAllowed => {
            ApiError::Forbidden(format!("CORS refused the request: {refusal}"))
        }
        other => ApiError::Malformed(format!("malformed CORS preflight: {other}")),
    }
}
