//! The ticket kernel over HTTP, written once for every ticket type: who may reach a type,
//! which tickets a caller sees, what requesters may not see, the view with the caller's
//! allowed actions, notes, history, and the sort and cursor of lists.
//!
//! Each type's route module keeps its own `#[utoipa::path]` functions (each operation keeps its
//! operationId and schema) and calls these bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use domain::notes::{Note, Visibility};
use domain::priority::Priority;
use domain::Role;
use persistence::tickets::{Position, Sort, SortField, TicketTable};
use persistence::{audit, notes, DbConnection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::Validate;

use crate::auth::Caller;
use crate::concurrency::with_etag;
use crate::error::{not_found_as, ApiError, ApiResult};
use crate::listing::{
    cursor_fields, decode_cursor_key, decode_cursor_time, encode_cursor_time, Cursor, Page,
    QueryParams, CURSOR_KEY, CURSOR_TIME, PAGE_PARAMS,
};
use crate::routes::feed::{Actor, AuditEvent};
use crate::state::AppState;

/// What the caller may do with a ticket type at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Works every ticket of the type.
    Staff,
    /// Sees and follows only the tickets raised for them.
    Requester,
}

/// A ticket type as the API serves it.
pub trait TicketApi: TicketTable {
    /// Roles that work the type (admin always does).
    const STAFF: &'static [Role];
    /// Whether requesters reach their own tickets of the type; if not, every route is 404 to
    /// them, as if the type did not exist.
    const REQUESTERS_SEE_OWN: bool;
    /// The ticket with the caller's allowed actions, as the API shows it.
    type View: Serialize;

    fn view(self, allowed_actions: Vec<Self::Action>) -> Self::View;

    /// How the caller relates to the ticket, reading what else that needs.
    fn relation(
        conn: &mut DbConnection,
        access: Access,
        caller: &Caller,
        ticket: &Self,
    ) -> ApiResult<Self::Relation>;
}

/// The caller's access to ticket type `T`.
pub fn access<T: TicketApi>(caller: &Caller) -> ApiResult<Access> {
    if caller.has_any(T::STAFF) {
        Ok(Access::Staff)
    } else if caller.roles.contains(&Role::Requester) {
        if T::REQUESTERS_SEE_OWN {
            Ok(Access::Requester)
        } else {
            Err(ApiError::NotFound("no resource at this path".into()))
        }
    } else {
        let roles: Vec<&str> = T::STAFF.iter().map(|r| r.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "{}s require the role {}",
            T::KIND,
            roles.join(", ")
        )))
    }
}

/// A caller who may use ticket type `T` at all, checked before the request body is read, so
/// that a caller refused the type never learns what a valid body looks like.
pub struct TicketCaller<T> {
    pub caller: Caller,
    pub access: Access,
    ticket: std::marker::PhantomData<T>,
}

impl<T: TicketApi> actix_web::FromRequest for TicketCaller<T> {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let caller = crate::auth::authenticate(&req).await?;
            let access = access::<T>(&caller)?;
            crate::auth::probe_stops(&req)?;
            Ok(TicketCaller {
                caller,
                access,
                ticket: std::marker::PhantomData,
            })
        })
    }
}

/// Loads a ticket the caller may see; another requester's ticket is 404.
pub fn visible<T: TicketApi>(
    conn: &mut DbConnection,
    id: &str,
    access: Access,
    caller: &Caller,
) -> ApiResult<T> {
    let ticket = T::get(conn, id).map_err(|e| not_found_as(e, T::KIND.as_str()))?;
    shown_to(ticket, access, caller)
}

/// The ticket if the caller may see it; another requester's ticket is 404.
pub fn shown_to<T: TicketApi>(ticket: T, access: Access, caller: &Caller) -> ApiResult<T> {
    if access == Access::Requester && ticket.requester() != Some(caller.id.as_str()) {
        return Err(ApiError::not_found(T::KIND.as_str()));
    }
    Ok(ticket)
}

/// The JSON a caller receives: requesters get the ticket without its internal fields. Staff
/// views, nearly every request, are serialized straight from the typed view.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Body<V> {
    Staff(Box<V>),
    Requester(Value),
}

pub fn body<T: TicketApi>(ticket: T, access: Access, relation: T::Relation) -> Body<T::View> {
    let allowed_actions = ticket.allowed_actions(relation);
    let full = ticket.view(allowed_actions);
    if access == Access::Staff {
        return Body::Staff(Box::new(full));
    }
    let mut value = serde_json::to_value(full).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        for field in T::INTERNAL_FIELDS {
            fields.remove(*field);
        }
    }
    Body::Requester(value)
}

/// The ticket with its ETag.
pub fn respond<T: TicketApi>(
    status: StatusCode,
    (ticket, relation): (T, T::Relation),
    access: Access,
) -> HttpResponse {
    let version = ticket.version();
    with_etag(status, version, &body(ticket, access, relation))
}

/// A ticket and the caller's relation to it, read in the unit of work that loaded it.
pub fn related<T: TicketApi>(
    conn: &mut DbConnection,
    access: Access,
    caller: &Caller,
    ticket: T,
) -> ApiResult<(T, T::Relation)> {
    let relation = T::relation(conn, access, caller, &ticket)?;
    Ok((ticket, relation))
}

/// Refuses changes to a closed or canceled ticket.
pub fn check_not_final<T: TicketApi>(ticket: &T) -> ApiResult<()> {
    if ticket.is_final() {
        return Err(ApiError::Conflict(format!(
            "{} {} is {} and cannot change",
            T::KIND,
            ticket.number(),
            ticket.state_name()
        )));
    }
    Ok(())
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNote {
    /// Defaults to `internal` for staff (a work note) and `public` for requesters.
    pub visibility: Option<Visibility>,
    #[validate(length(min = 1, max = 20000))]
    pub body: String,
}

/// Adds a comment or a work note to a ticket the caller may see.
pub async fn add_note<T: TicketApi>(
    caller: Caller,
    state: &AppState,
    id: String,
    body: CreateNote,
) -> ApiResult<HttpResponse> {
    let access = access::<T>(&caller)?;
    let visibility = body.visibility.unwrap_or(match access {
        Access::Staff => Visibility::Internal,
        Access::Requester => Visibility::Public,
    });
    if access == Access::Requester && visibility == Visibility::Internal {
        return Err(ApiError::invalid(
            "visibility",
            "requesters can only add public comments",
        ));
    }
    if body.body.trim().is_empty() {
        return Err(ApiError::invalid("body", "must not be blank"));
    }
    let ctx = caller.write_context();
    let note = state
        .db
        .write(move |conn| -> ApiResult<Note> {
            let ticket = visible::<T>(conn, &id, access, &caller)?;
            Ok(notes::add(
                conn,
                &ctx,
                T::KIND.as_str(),
                ticket.id(),
                visibility,
                &body.body,
                T::KIND.event(domain::ticket::TicketEvent::NoteAdded),
            )?)
        })
        .await?;
    Ok(HttpResponse::Created().json(note))
}

/// A ticket's comments and work notes, oldest first; requesters see comments only.
pub async fn list_notes<T: TicketApi>(
    caller: Caller,
    state: &AppState,
    req: &HttpRequest,
    id: String,
) -> ApiResult<HttpResponse> {
    let access = access::<T>(&caller)?;
    let params = QueryParams::parse(req, &[&PAGE_PARAMS[..], &["visibility"]].concat())?;
    let only =
        params.parsed::<Visibility>("visibility", &format!("one of {}", Visibility::names()))?;
    let page = params.page::<String>()?;
    let include_internal = access == Access::Staff && only != Some(Visibility::Public);
    let only_internal = only == Some(Visibility::Internal);
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let ticket = visible::<T>(conn, &id, access, &caller)?;
            let mut slice = notes::list(
                conn,
                T::KIND.as_str(),
                ticket.id(),
                include_internal,
                page.cursor.as_deref(),
                page.limit,
            )?;
            if only_internal {
                slice
                    .items
                    .retain(|note| note.visibility == Visibility::Internal);
            }
            Ok(slice)
        })
        .await?;
    Ok(Page::from_slice(slice, |note| note.id.clone()).respond(req))
}

/// A ticket's SLA timers, read now, oldest first: whoever may see the ticket may see how its
/// service levels stand.
pub async fn timers<T: TicketApi>(
    caller: Caller,
    state: &AppState,
    req: &HttpRequest,
    id: String,
) -> ApiResult<HttpResponse> {
    let access = access::<T>(&caller)?;
    QueryParams::parse(req, &[])?;
    let rules = state.sla_rules().await?;
    let now = state.clock.now().and_utc();
    let timers = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let ticket = visible::<T>(conn, &id, access, &caller)?;
            Ok(persistence::sla_timers::of_ticket(
                conn,
                Some(&rules),
                ticket.id(),
                now,
            )?)
        })
        .await?;
    Ok(Page {
        items: timers,
        next_cursor: None,
    }
    .respond(req))
}

/// A ticket's audit trail, newest first. Requesters see neither work notes, nor the type's
/// internal actions, nor its internal fields, nor who on the staff acted (an entry they did not
/// make themselves names the service desk).
pub async fn history<T: TicketApi>(
    caller: Caller,
    state: &AppState,
    req: &HttpRequest,
    id: String,
) -> ApiResult<HttpResponse> {
    let access = access::<T>(&caller)?;
    let caller_id = caller.id.clone();
    let page = QueryParams::parse(req, &PAGE_PARAMS)?.page::<String>()?;
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let ticket = visible::<T>(conn, &id, access, &caller)?;
            let exclude_actions = match access {
                Access::Requester => std::iter::once(notes::add_action(Visibility::Internal))
                    .chain(T::INTERNAL_ACTIONS.iter().copied())
                    .map(str::to_owned)
                    .collect(),
                Access::Staff => Vec::new(),
            };
            let filter = audit::AuditFilter {
                entity_type: Some(T::KIND.as_str().into()),
                entity_id: Some(ticket.id().to_owned()),
                exclude_actions,
            };
            Ok(audit::list(
                conn,
                &filter,
                page.cursor.as_deref(),
                page.limit,
            )?)
        })
        .await?;
    let mut page = Page::from_slice(slice, |entry| entry.id.clone()).map(|entry| {
        let mut event = AuditEvent::from(entry);
        if access == Access::Requester {
            if let Value::Object(changes) = &mut event.changes {
                for field in T::INTERNAL_FIELDS {
                    changes.remove(*field);
                }
            }
            if event.actor.id.as_deref() != Some(caller_id.as_str()) {
                event.actor = Actor {
                    kind: domain::ActorKind::System,
                    id: None,
                    username: SERVICE_DESK.to_owned(),
                };
                event.request_id = None;
            }
        }
        event
    });
    // An entry that changed internal fields only says nothing a requester may see.
    page.items.retain(|event| {
        event
            .changes
            .as_object()
            .is_none_or(|changes| !changes.is_empty())
    });
    Ok(page.respond(req))
}

/// Who a requester is told acted, when someone else did.
pub const SERVICE_DESK: &str = "service-desk";

/// The sort of `sort=created_at|-created_at|updated_at|-updated_at|priority|-priority`.
/// The fields a ticket list sorts by (`sort=field` or `sort=-field`).
pub const SORT_FIELDS: [&str; 3] = ["created_at", "updated_at", "priority"];

pub fn parse_sort(value: &str) -> ApiResult<Sort> {
    let (descending, name) = match value.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, value),
    };
    let field = match name {
        "created_at" => SortField::CreatedAt,
        "updated_at" => SortField::UpdatedAt,
        "priority" => SortField::Priority,
        _ => {
            return Err(ApiError::invalid(
                "sort",
                format!(
                    "must be {}, optionally prefixed with -",
                    SORT_FIELDS.join(", ")
                ),
            ))
        }
    };
    Ok(Sort { field, descending })
}

/// A ticket list's cursor: the last item's creation and update times (microseconds since the
/// epoch), its priority (0 for none, 1 to 5) and its id, as `created.updated.priority.id`.
/// It carries every sort's key, so a cursor continues after its item in whatever order the
/// request asks for.
#[derive(Debug)]
pub struct TicketCursor {
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    priority: Option<Priority>,
    id: String,
}

impl TicketCursor {
    fn of<T: TicketApi>(ticket: &T) -> Self {
        Self {
            created_at: ticket.created_at().naive_utc(),
            updated_at: ticket.updated_at().naive_utc(),
            priority: ticket.priority(),
            id: ticket.id().to_owned(),
        }
    }
}

impl Cursor for TicketCursor {
    fn pattern() -> String {
        format!("^{CURSOR_TIME}[.]{CURSOR_TIME}[.][0-5][.]{CURSOR_KEY}$")
    }

    fn encode(&self) -> String {
        let rank = self
            .priority
            .and_then(|p| Priority::ALL.iter().position(|q| *q == p))
            .map_or(0, |index| index + 1);
        format!(
            "{}.{}.{rank}.{}",
            encode_cursor_time(self.created_at),
            encode_cursor_time(self.updated_at),
            self.id
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let fields = cursor_fields(text, 4)?;
        let priority = match fields[2].as_bytes() {
            [b'0'] => None,
            [digit @ b'1'..=b'5'] => Some(Priority::ALL[usize::from(digit - b'1')]),
            _ => return None,
        };
        Some(Self {
            created_at: decode_cursor_time(fields[0])?,
            updated_at: decode_cursor_time(fields[1])?,
            priority,
            id: decode_cursor_key(fields[3])?,
        })
    }
}

/// The sort and the position of a list request: `sort=` (default newest first) and the
/// cursor, which must have been made for the same sort.
pub struct ListOrder {
    pub sort_name: String,
    pub sort: Sort,
    pub after: Option<Position>,
    pub limit: i64,
}

impl ListOrder {
    pub fn parse(params: &QueryParams) -> ApiResult<Self> {
        let sort_name = params.single("sort")?.unwrap_or("-created_at").to_owned();
        let sort = parse_sort(&sort_name)?;
        let page = params.page::<TicketCursor>()?;
        let after = page.cursor.map(|cursor| {
            sort.position_at(
                cursor.created_at,
                cursor.updated_at,
                cursor.priority,
                cursor.id,
            )
        });
        Ok(Self {
            sort_name,
            sort,
            after,
            limit: page.limit,
        })
    }

    /// The page of `slice` with cursors for this order.
    pub fn page<T: TicketApi, R>(&self, slice: persistence::Slice<(T, R)>) -> Page<(T, R)> {
        Page::from_slice(slice, |(ticket, _)| TicketCursor::of(ticket))
    }
}

/// Every value of a repeatable enumeration filter (`state=new&state=on_hold`).
pub fn enum_filter<E: std::str::FromStr<Err = String>>(
    params: &QueryParams,
    name: &str,
    names: &str,
) -> ApiResult<Vec<E>> {
    // Repeats say nothing more: each value counts once, in one order.
    let mut values = params.all(name);
    values.sort_unstable();
    values.dedup();
    values
        .into_iter()
        .map(|value| {
            if value.is_empty() {
                Err(ApiError::invalid(name, format!("must be one of {names}")))
            } else {
                value.parse::<E>().map_err(|m| ApiError::invalid(name, m))
            }
        })
        .collect()
}

/// Maps a cursor that does not fit its sort to a 422 on `cursor`.
pub fn cursor_error(error: persistence::StoreError) -> ApiError {
    match error {
        persistence::StoreError::Conflict(message) => ApiError::invalid("cursor", message),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use domain::change::Change;
    use domain::incident::Incident;
    use domain::problem::Problem;
    use domain::ticket::Ticket;
    use utoipa::OpenApi;

    /// Every text the published pattern admits decodes, and a cursor reads back as written.
    #[test]
    fn ticket_cursors_are_what_their_pattern_says() {
        use super::TicketCursor;
        use crate::listing::Cursor;
        let pattern = regex::Regex::new(&TicketCursor::pattern()).unwrap();
        for text in [
            "0.0.0.a",
            "1732700000000000.1732700000000001.3.0192f1e4-7b1a-7c3e-9a51-3f8e2d6c4b10",
            "999999999999999999.999999999999999999.5.~.~",
            "1.2.0.x",
        ] {
            assert!(pattern.is_match(text), "{text}");
            let cursor = TicketCursor::decode(text).unwrap_or_else(|| panic!("{text}"));
            if !text.starts_with("999") {
                assert_eq!(cursor.encode(), text);
            }
        }
        for text in ["", "1.2.6.x", "1.2.3.", "a.2.3.x", "1.2.3.x y", "1.2.3"] {
            assert!(!pattern.is_match(text), "{text}");
            assert!(TicketCursor::decode(text).is_none(), "{text}");
        }
    }

    /// Every internal field a type declares is a field of its schema: a renamed field cannot
    /// silently reach requesters.
    #[test]
    fn internal_fields_are_fields_of_the_schema() {
        let spec = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        let fields_of = |schema: &str| -> Vec<String> {
            let properties = &spec["components"]["schemas"][schema]["properties"];
            properties
                .as_object()
                .unwrap_or_else(|| panic!("no properties in {schema}"))
                .keys()
                .cloned()
                .collect()
        };
        for (schema, internal) in [
            ("Incident", Incident::INTERNAL_FIELDS),
            ("Problem", Problem::INTERNAL_FIELDS),
            ("Change", Change::INTERNAL_FIELDS),
        ] {
            let fields = fields_of(schema);
            for field in internal {
                assert!(
                    fields.contains(&field.to_string()),
                    "{schema} has no {field}"
                );
            }
        }
    }
}
