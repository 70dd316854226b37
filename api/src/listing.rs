//! List conventions: strict query parameters, opaque cursors, pages with `Link` headers.

use std::str::FromStr;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::{ExternalRef, FieldError};
use persistence::Slice;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// The query parameters of a request, checked against the names an endpoint accepts.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parses the query string; any parameter not in `accepted` (or `limit`/`cursor` for lists)
    /// is a 422 naming it, so a typo never silently widens a result.
    pub fn parse(req: &HttpRequest, accepted: &[&str]) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let unknown: Vec<FieldError> = pairs
            .iter()
            .filter(|(name, _)| !accepted.contains(&name.as_str()))
            .map(|(name, _)| {
                let accepted = if accepted.is_empty() {
                    "this endpoint takes no query parameters".to_owned()
                } else {
                    format!("unknown query parameter; accepted: {}", accepted.join(", "))
                };
                FieldError::new(name.clone(), accepted)
            })
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::from_field_errors(unknown));
        }
        Ok(Self { pairs })
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A parameter that may appear at most once.
    pub fn single(&self, name: &str) -> ApiResult<Option<&str>> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(ApiError::invalid(name, "must be given at most once")),
        }
    }

    /// A single text filter of 1 to `text_filter_max(name)` characters, not all whitespace.
    pub fn text(&self, name: &str) -> ApiResult<Option<String>> {
        self.text_up_to(name, text_filter_max(name))
    }

    /// A single text parameter of 1 to `max_len` characters, not all whitespace.
    pub fn text_up_to(&self, name: &str, max_len: usize) -> ApiResult<Option<String>> {
        match self.single(name)? {
            None => Ok(None),
            Some(value) if value.trim().is_empty() || value.chars().count() > max_len => {
                Err(ApiError::invalid(
                    name,
                    format!("must be 1 to {max_len} characters, not all blank"),
                ))
            }
            Some(value) => Ok(Some(value.trim().to_owned())),
        }
    }

    /// A single parameter parsed with `FromStr`; `expected` describes valid values.
    pub fn parsed<T: FromStr>(&self, name: &str, expected: &str) -> ApiResult<Option<T>> {
        self.single(name)?
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| ApiError::invalid(name, format!("must be {expected}")))
            })
            .transpose()
    }

    pub fn boolean(&self, name: &str) -> ApiResult<Option<bool>> {
        self.parsed(name, "true or false")
    }

    pub fn timestamp(&self, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
        self.single(name)?
            .map(|value| {
                DateTime::parse_from_rfc3339(value)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| ApiError::invalid(name, "must be an RFC 3339 timestamp"))
            })
            .transpose()
    }

    /// `external_ref=system:id`, the lookup integrators sync by.
    pub fn external_ref(&self) -> ApiResult<Option<ExternalRef>> {
        let Some(value) = self.single("external_ref")? else {
            return Ok(None);
        };
        let invalid = || ApiError::invalid("external_ref", "must be system:id");
        let (system, id) = value.split_once(':').ok_or_else(invalid)?;
        let reference = ExternalRef {
            system: system.to_owned(),
            id: id.to_owned(),
        };
        ExternalRef::validate_list(std::slice::from_ref(&reference), "external_ref")
            .map_err(|_| invalid())?;
        Ok(Some(reference))
    }

    /// `limit` (1..=500, default 50) and the decoded `cursor` of the previous page.
    pub fn page<C: DeserializeOwned>(&self) -> ApiResult<PageRequest<C>> {
        let limit = self.limit()?;
        let cursor = self.single("cursor")?.map(decode_cursor).transpose()?;
        Ok(PageRequest { limit, cursor })
    }

    /// `limit`: 1 to 500, default 50.
    pub fn limit(&self) -> ApiResult<i64> {
        let limit = self
            .parsed::<i64>("limit", &format!("a whole number from 1 to {MAX_LIMIT}"))?
            .unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be a whole number from 1 to {MAX_LIMIT}"),
            ));
        }
        Ok(limit)
    }
}

/// The longest id a filter takes.
pub const ID_FILTER_MAX: usize = 64;

/// The longest value of each text filter, by name: `QueryParams::text` checks it and the
/// contract publishes it. Filters naming a record (`assignee`, `service`, ...) take an id.
pub fn text_filter_max(name: &str) -> usize {
    match name {
        "q" | "key" => 200,
        "category" | "source" => 100,
        _ => ID_FILTER_MAX,
    }
}

/// The query parameters that are RFC 3339 timestamps (`QueryParams::timestamp`).
pub const TIMESTAMP_PARAMS: [&str; 7] = [
    "created_after",
    "created_before",
    "updated_after",
    "due_before",
    "sla_due_before",
    "from",
    "to",
];

/// A pattern for text that is not all whitespace: it holds one character that `str::trim`
/// does not remove (Rust's `White_Space`, spelled out so every regex dialect reads it alike).
pub const NOT_BLANK_PATTERN: &str =
    "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// The parameters every list accepts besides its filters.
pub const PAGE_PARAMS: [&str; 2] = ["limit", "cursor"];

pub struct PageRequest<C> {
    pub limit: i64,
    pub cursor: Option<C>,
}

/// Cursors are opaque to clients: base64url of the keyset position.
pub fn encode_cursor(position: &impl Serialize) -> String {
    let json = serde_json::to_vec(position).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_cursor<C: DeserializeOwned>(cursor: &str) -> ApiResult<C> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this list returned"))
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from a repository slice; `position` gives the keyset position of an item.
    pub fn from_slice<P: Serialize>(slice: Slice<T>, position: impl Fn(&T) -> P) -> Self {
        let next_cursor = if slice.more {
            slice
                .items
                .last()
                .map(|last| encode_cursor(&position(last)))
        } else {
            None
        };
        Self {
            items: slice.items,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

impl<T: Serialize> Page<T> {
    /// 200 with the page, and `Link: <...>; rel="next"` when a next page exists.
    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let mut response = HttpResponse::Ok();
        if let Some(cursor) = &self.next_cursor {
            response.insert_header((header::LINK, next_page_link(req, "cursor", cursor)));
        }
        response.json(self)
    }
}

/// `Link: <the same request with `position` set to `value`>; rel="next"`.
pub fn next_page_link(req: &HttpRequest, position: &str, value: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, existing) in form_urlencoded::parse(req.query_string().as_bytes()) {
        if name != position {
            query.append_pair(&name, &existing);
        }
    }
    query.append_pair(position, value);
    format!("<{}?{}>; rel=\"next\"", req.path(), query.finish())
}
