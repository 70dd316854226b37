//! List conventions: strict query parameters, transparent keyset cursors, pages with `Link`
//! headers.

use std::str::FromStr;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::{ExternalRef, FieldError};
use persistence::Slice;
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
    pub fn page<C: Cursor>(&self) -> ApiResult<PageRequest<C>> {
        let limit = self.limit()?;
        let cursor = self
            .single("cursor")?
            .map(|text| {
                C::decode(text).ok_or_else(|| {
                    ApiError::invalid("cursor", "is not a cursor: pass a list's next_cursor")
                })
            })
            .transpose()?;
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

/// A keyset position as lists print it in `next_cursor` and read it back from `cursor`.
///
/// Cursors are transparent rather than opaque: every text that matches `pattern()` is a
/// position the list continues after, so the contract can state exactly which cursors the
/// server accepts (the pattern is published on each list's `cursor` parameter).
pub trait Cursor: Sized {
    /// The cursors this list reads, as an anchored pattern.
    fn pattern() -> String;
    fn encode(&self) -> String;
    fn decode(text: &str) -> Option<Self>;
}

/// An id (or name) cursor: the last item's key; the list continues with greater keys.
pub const CURSOR_KEY: &str = "[!-~]{1,256}";

pub fn decode_cursor_key(text: &str) -> Option<String> {
    (!text.is_empty() && text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_owned())
}

impl Cursor for String {
    fn pattern() -> String {
        format!("^{CURSOR_KEY}$")
    }

    fn encode(&self) -> String {
        self.clone()
    }

    fn decode(text: &str) -> Option<Self> {
        decode_cursor_key(text)
    }
}

/// The latest time a cursor names: later microsecond counts read as this one, which sorts
/// after every stored time.
pub fn decode_cursor_time(micros: &str) -> Option<chrono::NaiveDateTime> {
    let latest =
        chrono::NaiveDate::from_ymd_opt(9999, 12, 31)?.and_hms_micro_opt(23, 59, 59, 999_999)?;
    if micros.is_empty() || micros.len() > 18 || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = micros.parse().ok()?;
    Some(
        DateTime::from_timestamp_micros(micros)
            .map(|at| at.naive_utc())
            .filter(|at| *at <= latest)
            .unwrap_or(latest),
    )
}

/// A time in a cursor: microseconds since the epoch, 1 to 18 digits.
pub const CURSOR_TIME: &str = "[0-9]{1,18}";

pub fn encode_cursor_time(at: chrono::NaiveDateTime) -> String {
    at.and_utc().timestamp_micros().max(0).to_string()
}

/// `micros.key`: a time and the last item's key (the SLA timer list: due order, timer id).
impl Cursor for (chrono::NaiveDateTime, String) {
    fn pattern() -> String {
        format!("^{CURSOR_TIME}[.]{CURSOR_KEY}$")
    }

    fn encode(&self) -> String {
        format!("{}.{}", encode_cursor_time(self.0), self.1)
    }

    fn decode(text: &str) -> Option<Self> {
        let (time, key) = text.split_once('.')?;
        Some((decode_cursor_time(time)?, decode_cursor_key(key)?))
    }
}

/// The parts of a `a.b.c.rest` cursor: `n` dot-separated fields, the last one the rest.
pub fn cursor_fields(text: &str, n: usize) -> Option<Vec<&str>> {
    let fields: Vec<&str> = text.splitn(n, '.').collect();
    (fields.len() == n).then_some(fields)
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
    pub fn from_slice<P: Cursor>(slice: Slice<T>, position: impl Fn(&T) -> P) -> Self {
        let next_cursor = if slice.more {
            slice.items.last().map(|last| position(last).encode())
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

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn key_and_timer_cursors_are_what_their_patterns_say() {
        let key = regex::Regex::new(&String::pattern()).unwrap();
        for text in [
            "a",
            "0192f1e4-7b1a-7c3e-9a51-3f8e2d6c4b10",
            "linux_server",
            &"~".repeat(256),
        ] {
            assert!(key.is_match(text));
            assert_eq!(String::decode(text).as_deref(), Some(text));
        }
        for text in ["", "a b", "\u{e9}", &"a".repeat(257)] {
            assert!(!key.is_match(text));
            assert!(String::decode(text).is_none());
        }
        type Timer = (chrono::NaiveDateTime, String);
        let timer = regex::Regex::new(&Timer::pattern()).unwrap();
        let at = chrono::DateTime::from_timestamp_micros(1_732_700_000_123_456)
            .unwrap()
            .naive_utc();
        let written = (at, "t1".to_owned()).encode();
        assert!(timer.is_match(&written));
        assert_eq!(Timer::decode(&written), Some((at, "t1".to_owned())));
        // Past year 9999 reads as the latest time, after every stored one.
        assert!(Timer::decode("999999999999999999.x").is_some());
        assert!(Timer::decode("12x.x").is_none() && !timer.is_match("12x.x"));
    }
}
