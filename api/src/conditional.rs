//! Conditional reads (RFC 9110 section 13): a GET whose `If-None-Match` names the current
//! ETag answers 304 Not Modified, for every resource that has an ETag. `If-Match` on changes is
//! in [`crate::concurrency`].

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};

/// The headers a 304 carries from the 200 it stands for (RFC 9110 section 15.4.5).
const KEPT_ON_NOT_MODIFIED: [header::HeaderName; 5] = [
    header::ETAG,
    header::CACHE_CONTROL,
    header::VARY,
    header::CONTENT_LOCATION,
    header::EXPIRES,
];

/// For GET and HEAD: when the answer would be 200 and `If-None-Match` is `*` or names its ETag
/// (weak comparison, so `W/"3"` names `"3"`), 304 with the 200's ETag and caching headers and
/// no body. Other methods ignore the header.
pub async fn not_modified(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let condition = match *req.method() {
        Method::GET | Method::HEAD => req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        _ => None,
    };
    let response = next.call(req).await?;
    let Some(condition) = condition else {
        return Ok(response.map_into_left_body());
    };
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|value| value.to_str().ok());
    if response.status() != StatusCode::OK || !none_match_fails(&condition, etag) {
        return Ok(response.map_into_left_body());
    }
    let (request, full) = response.into_parts();
    let mut answer = HttpResponse::NotModified();
    copy_kept_headers(full.headers(), &mut answer);
    Ok(ServiceResponse::new(request, answer.finish()).map_into_right_body())
}

fn copy_kept_headers(from: &HeaderMap, to: &mut actix_web::HttpResponseBuilder) {
    for name in KEPT_ON_NOT_MODIFIED {
        for value in from.get_all(&name) {
            to.append_header((name.clone(), value.clone()));
        }
    }
}

/// Whether the `If-None-Match` condition is false for a representation with `etag`: the list
/// is `*`, or one of its tags equals the ETag by weak comparison.
pub fn none_match_fails(condition: &str, etag: Option<&str>) -> bool {
    if condition.trim() == "*" {
        return true;
    }
    let Some(current) = etag.map(opaque_tag) else {
        return false;
    };
    condition
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .any(|tag| opaque_tag(tag) == current)
}

/// An entity tag without its weakness mark: weak comparison compares only this.
fn opaque_tag(tag: &str) -> &str {
    let tag = tag.trim();
    tag.strip_prefix("W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::none_match_fails;

    #[test]
    fn if_none_match_compares_weakly_and_star_matches_any() {
        assert!(none_match_fails("\"3\"", Some("\"3\"")));
        assert!(none_match_fails("W/\"3\"", Some("\"3\"")));
        assert!(none_match_fails("\"1\", W/\"3\"", Some("\"3\"")));
        assert!(none_match_fails("*", Some("\"3\"")));
        assert!(none_match_fails("*", None));
        assert!(!none_match_fails("\"2\"", Some("\"3\"")));
        assert!(!none_match_fails("\"3\"", None));
        assert!(!none_match_fails("3", Some("\"3\"")));
    }
}
