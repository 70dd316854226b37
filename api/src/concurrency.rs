//! Optimistic concurrency: `version` and `ETag` out, `If-Match` in.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// A version no resource has: demanded by an `If-Match` that names only weak tags, which never
/// match (versions start at 1).
pub const NO_VERSION: i64 = i64::MIN;

/// The `If-Match` values every operation takes, for the contract: `*` or one strong ETag
/// (`if_match` also reads lists and weak tags, which never match).
pub const IF_MATCH_PATTERN: &str = "^(?:[*]|\"[0-9]{1,18}\"|[0-9]{1,18})$";

/// The version `If-Match` demands, if the header is present; `*` demands none (any current
/// version). Tags compare strongly (RFC 9110 section 13.1.1): a weak tag (`W/"3"`) never
/// matches, so a list of weak tags only demands [`NO_VERSION`] and the change is refused with
/// 412 once the resource is found (a missing resource stays a 404).
pub fn if_match(req: &HttpRequest) -> ApiResult<Option<i64>> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let malformed = || ApiError::Malformed("If-Match must be an ETag such as \"7\"".into());
    let value = value.to_str().map_err(|_| malformed())?.trim();
    if value == "*" {
        return Ok(None);
    }
    let mut strong = Vec::new();
    for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match tag.strip_prefix("W/") {
            Some(weak) => {
                version_of(weak).ok_or_else(malformed)?;
            }
            None => strong.push(version_of(tag).ok_or_else(malformed)?),
        }
    }
    strong.dedup();
    match strong.as_slice() {
        [] => Ok(Some(NO_VERSION)),
        [version] => Ok(Some(*version)),
        _ => Err(ApiError::Malformed(
            "If-Match names one version (\"7\"): a resource has one current version".into(),
        )),
    }
}

/// The version in an entity tag (`"7"`, or `7` from clients that drop the quotes); `None`
/// when it is not one of ours.
fn version_of(tag: &str) -> Option<i64> {
    let unquoted = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None if tag.bytes().all(|b| b.is_ascii_digit()) => tag,
        None => return None,
    };
    unquoted
        .parse::<i64>()
        .ok()
        .filter(|version| *version != NO_VERSION)
}

/// `status` with `body` and its `ETag`.
pub fn with_etag(status: StatusCode, version: i64, body: &impl Serialize) -> HttpResponse {
    HttpResponseBuilder::new(status)
        .insert_header((header::ETAG, format!("\"{version}\"")))
        .json(body)
}

/// 201 Created with `Location`, `ETag` and the body.
pub fn created(location: String, version: i64, body: &impl Serialize) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header((header::ETAG, format!("\"{version}\"")))
        .json(body)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::{if_match, IF_MATCH_PATTERN};

    /// Every If-Match the contract admits is read as a version (or as none, for `*`).
    #[test]
    fn the_published_if_match_values_are_read() {
        let pattern = regex::Regex::new(IF_MATCH_PATTERN).unwrap();
        for value in ["*", "\"0\"", "\"7\"", "7", "\"999999999999999999\""] {
            assert!(pattern.is_match(value), "{value}");
            let req = TestRequest::default()
                .insert_header(("If-Match", value))
                .to_http_request();
            assert!(if_match(&req).is_ok(), "{value}");
        }
        for value in ["W/\"7\"", "x7", "\"7\", \"8\"", ""] {
            assert!(!pattern.is_match(value), "{value}");
        }
    }
}
