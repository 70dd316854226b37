//! `/api/v1/audit-events` (the audit trail) and `/api/v1/events` (the event feed integrators poll).

use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use persistence::audit::{self, AuditEntry, AuditFilter};
use persistence::outbox::{self, EventTypePattern, OutboxEvent};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Admins, Authorized, FeedReaders};
use crate::error::{ApiError, ApiResult};
use crate::listing::{next_page_link, Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;

pub use domain::Actor;

/// One change to one record.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    /// `{"field": [old, new]}`.
    #[schema(value_type = Object)]
    pub changes: Value,
    pub request_id: Option<String>,
}

impl From<AuditEntry> for AuditEvent {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            at: entry.at.and_utc(),
            actor: entry.actor,
            action: entry.action,
            entity_type: entry.entity_type,
            entity_id: entry.entity_id,
            changes: serde_json::from_str(&entry.changes).unwrap_or(Value::Null),
            request_id: entry.request_id,
        }
    }
}

/// Read the audit trail, newest first.
#[utoipa::path(
    tag = "audit", operation_id = "list_audit_events",
    params(("entity_type" = Option<String>, Query), ("entity_id" = Option<String>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<AuditEvent>), (status = 403, body = crate::error::Problem)),
)]
#[get("/api/v1/audit-events")]
pub async fn list_audit_events(
    _caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(
        &req,
        &[&PAGE_PARAMS[..], &["entity_type", "entity_id"]].concat(),
    )?;
    let filter = AuditFilter {
        entity_type: params.text("entity_type")?,
        entity_id: params.text("entity_id")?,
        exclude_actions: Vec::new(),
    };
    let page = params.page::<String>()?;
    let slice = state
        .db
        .read(move |conn| audit::list(conn, &filter, page.cursor.as_deref(), page.limit))
        .await
        .map_err(ApiError::from)?;
    Ok(Page::from_slice(slice, |entry| entry.id.clone())
        .map(AuditEvent::from)
        .respond(&req))
}

/// One domain event, in the order the changes committed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    /// Gap-free and increasing in commit order; resume with `after=` this value.
    pub sequence: i64,
    #[serde(rename = "type")]
    #[schema(example = "user.created")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub entity_type: String,
    pub entity_id: String,
    /// The stored JSON, passed through as written (no parse into a tree and back).
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
}

impl From<OutboxEvent> for Event {
    fn from(event: OutboxEvent) -> Self {
        Self {
            sequence: event.sequence,
            event_type: event.event_type,
            occurred_at: event.occurred_at.and_utc(),
            entity_type: event.entity_type,
            entity_id: event.entity_id,
            data: RawValue::from_string(event.data).unwrap_or_else(|_| null_json()),
        }
    }
}

/// JSON `null`, for an event whose stored data does not parse (which the writer never stores).
fn null_json() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

/// One event type filter: an exact type (`user.created`) or a family (`user.*`), 1 to 100
/// characters before the `*`. `type_patterns` checks each item with it and the contract
/// publishes it (`types_pattern`).
pub const TYPE_FILTER_ITEM: &str = "(?:[a-z0-9_.]{1,100}|[a-z0-9_.]{0,99}[.][*])";

/// The whole `types` value: filters separated by commas.
pub fn types_pattern() -> String {
    format!("^{TYPE_FILTER_ITEM}(?:,{TYPE_FILTER_ITEM})*$")
}

/// Parses `types=user.created,group.*` (repeatable, comma-separated).
fn type_patterns(values: &[&str]) -> ApiResult<Vec<EventTypePattern>> {
    // The pattern is a constant; the unit test below proves it compiles.
    static ITEM: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(&format!("^{TYPE_FILTER_ITEM}$")).ok());
    let mut patterns = Vec::new();
    for value in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if !ITEM.as_ref().is_some_and(|item| item.is_match(value)) {
            return Err(ApiError::invalid(
                "types",
                "must be event types such as user.created, or families such as user.*",
            ));
        }
        patterns.push(match value.strip_suffix('*') {
            Some(prefix) => EventTypePattern::Prefix(prefix.to_owned()),
            None => EventTypePattern::Exact(value.to_owned()),
        });
    }
    Ok(patterns)
}

/// Poll the event feed: events after a sequence number, oldest first.
///
/// `next_cursor` is the sequence of the last event returned (pass it as `after`); it is
/// `null` only when no event was returned, in which case poll again with the same `after`.
#[utoipa::path(
    tag = "events", operation_id = "list_events",
    params(("after" = Option<i64>, Query, minimum = 0, description = "Return events with a greater sequence; default 0"),
           ("types" = Option<String>, Query, description = "Comma-separated types or families (user.*)"),
           ("limit" = Option<i64>, Query, description = "1 to 500, default 50")),
    responses((status = 200, body = Page<Event>), (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/events")]
pub async fn list_events(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(&req, &["after", "types", "limit"])?;
    let after = params
        .parsed::<i64>("after", "a sequence number (0 or more)")?
        .unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid(
            "after",
            "must be a sequence number (0 or more)",
        ));
    }
    let limit = params.limit()?;
    let types = type_patterns(&params.all("types"))?;
    // Without a type filter a page is a walk along the sequence; a rare type may scan far.
    let bounded = types.is_empty();
    let slice = state
        .db
        .read_bounded_if(bounded, move |conn| {
            outbox::list(conn, after, &types, limit)
        })
        .await
        .map_err(ApiError::from)?;
    let more = slice.more;
    let items: Vec<Event> = slice.items.into_iter().map(Event::from).collect();
    let next_cursor = items.last().map(|event| event.sequence.to_string());
    let mut response = HttpResponse::Ok();
    if let (true, Some(cursor)) = (more, &next_cursor) {
        response.insert_header(("Link", next_page_link(&req, "after", cursor)));
    }
    Ok(response.json(Page { items, next_cursor }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_audit_events).service(list_events);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_take_exact_names_and_families() {
        assert_eq!(
            type_patterns(&["user.created,group.*"]).unwrap(),
            vec![
                EventTypePattern::Exact("user.created".into()),
                EventTypePattern::Prefix("group.".into())
            ]
        );
        assert!(type_patterns(&["user%"]).is_err());
        assert!(type_patterns(&["*"]).is_err());
        assert!(type_patterns(&["us*er.created"]).is_err());
    }
}
