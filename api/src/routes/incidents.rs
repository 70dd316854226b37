//! `/api/v1/incidents`: the incident lifecycle, notes and history.
//!
//! Staff (agents, managers, integrations, admins) see and work every incident. Requesters create
//! incidents as their own caller, see only their own (others are 404), add public comments,
//! confirm or reopen their resolved incidents, and never see internal fields or work notes.

use actix_web::http::StatusCode;
use actix_web::{get, patch, post, web, HttpRequest, HttpResponse};
use chrono::Utc;
use domain::incident::{
    Channel, ClosedBy, Impact, Incident, IncidentAction, IncidentState, OnHoldReason, Priority,
    Relation, ResolutionCode, TransitionInput, Urgency,
};
use domain::notes::{Note, Visibility};
use domain::{routing, ExternalRef, Role};
use persistence::incidents::{self, IncidentFilter, Position, Sort, SortField};
use persistence::{audit, groups, notes, users, DbConnection, WriteContext};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::Validate;

use super::feed::AuditEvent;
use crate::app::AppState;
use crate::auth::Caller;
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, unknown_reference, ApiError, ApiResult};
use crate::json_body::{nullable, required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};

/// Roles that work incidents; admin is always included.
const STAFF: &[Role] = &[
    Role::Agent,
    Role::ChangeManager,
    Role::ProblemManager,
    Role::Integration,
];
/// Fields a requester never sees.
const INTERNAL_FIELDS: [&str; 5] = [
    "assignment_group",
    "assignee",
    "major",
    "parent_id",
    "external_refs",
];

/// What the caller may do with incidents at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Staff,
    Requester,
}

fn access(caller: &Caller) -> ApiResult<Access> {
    if caller.has_any(STAFF) {
        Ok(Access::Staff)
    } else if caller.roles.contains(&Role::Requester) {
        Ok(Access::Requester)
    } else {
        Err(ApiError::Forbidden(
            "incidents require the role agent or requester".into(),
        ))
    }
}

/// How the caller relates to `incident`; a child's parent state is read when it has one.
fn relation(
    conn: &mut DbConnection,
    access: Access,
    caller: &Caller,
    incident: &Incident,
) -> ApiResult<Relation> {
    let parent_final = match &incident.parent_id {
        Some(parent) => incidents::get(conn, parent)?.state.is_final(),
        None => false,
    };
    Ok(Relation {
        parent_final,
        ..relation_without_parent(access, caller, incident)
    })
}

/// The caller's relation to an incident, as if it had no parent (or an open one).
fn relation_without_parent(access: Access, caller: &Caller, incident: &Incident) -> Relation {
    Relation {
        is_agent: access == Access::Staff,
        is_caller: incident.caller == caller.id,
        parent_final: false,
    }
}

/// An incident with the actions the caller may take now.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    pub allowed_actions: Vec<IncidentAction>,
}

/// The JSON a caller receives: requesters get the incident without its internal fields.
/// Staff views, nearly every request, are serialized straight from the typed view.
#[derive(Serialize)]
#[serde(untagged)]
enum IncidentBody {
    Staff(Box<IncidentView>),
    Requester(Value),
}

fn view(incident: Incident, access: Access, relation: Relation) -> IncidentBody {
    let allowed_actions = incident.allowed_actions(relation);
    let full = IncidentView {
        incident,
        allowed_actions,
    };
    if access == Access::Staff {
        return IncidentBody::Staff(Box::new(full));
    }
    let mut value = serde_json::to_value(full).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        for field in INTERNAL_FIELDS {
            fields.remove(field);
        }
    }
    IncidentBody::Requester(value)
}

fn respond(
    status: StatusCode,
    (incident, relation): (Incident, Relation),
    access: Access,
) -> HttpResponse {
    let version = incident.version;
    with_etag(status, version, &view(incident, access, relation))
}

/// Loads an incident the caller may see; another requester's incident is 404.
fn visible(
    conn: &mut DbConnection,
    id: &str,
    access: Access,
    caller: &Caller,
) -> ApiResult<Incident> {
    let incident = incidents::get(conn, id).map_err(|e| not_found_as(e, "incident"))?;
    shown_to(incident, access, caller)
}

/// The incident if the caller may see it; another requester's incident is 404.
fn shown_to(incident: Incident, access: Access, caller: &Caller) -> ApiResult<Incident> {
    if access == Access::Requester && incident.caller != caller.id {
        return Err(ApiError::not_found("incident"));
    }
    Ok(incident)
}

fn trimmed(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIncident {
    #[validate(length(min = 1, max = 200))]
    #[schema(example = "VPN gateway unreachable")]
    pub title: String,
    #[serde(default)]
    #[validate(length(max = 20000))]
    pub description: String,
    /// The user the incident is for; defaults to the signed-in user. Requesters cannot set it.
    pub caller: Option<String>,
    /// Defaults to `portal` for requesters and `api` otherwise.
    pub channel: Option<Channel>,
    #[validate(length(min = 1, max = 100))]
    pub category: Option<String>,
    #[validate(length(min = 1, max = 100))]
    pub subcategory: Option<String>,
    /// Defaults to `medium`.
    pub impact: Option<Impact>,
    /// Defaults to `medium`.
    pub urgency: Option<Urgency>,
    /// When absent, the first matching assignment rule chooses the group.
    pub assignment_group: Option<String>,
    /// Must be an active member of the assignment group; assigning starts the work.
    pub assignee: Option<String>,
    pub parent_id: Option<String>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
}

/// A merge patch of an incident. State, priority, number and timestamps change only through
/// transitions and the priority matrix.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIncident {
    #[validate(length(min = 1, max = 200))]
    #[serde(default, deserialize_with = "required")]
    pub title: Option<String>,
    #[validate(length(max = 20000))]
    #[serde(default, deserialize_with = "required")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "required")]
    pub caller: Option<String>,
    #[serde(default, deserialize_with = "required")]
    pub channel: Option<Channel>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(min = 1, max = 100))]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(min = 1, max = 100))]
    #[schema(value_type = Option<String>)]
    pub subcategory: Option<Option<String>>,
    #[serde(default, deserialize_with = "required")]
    pub impact: Option<Impact>,
    #[serde(default, deserialize_with = "required")]
    pub urgency: Option<Urgency>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub assignment_group: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub assignee: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "required")]
    pub external_refs: Option<Vec<ExternalRef>>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub action: IncidentAction,
    /// Required by `hold`.
    pub on_hold_reason: Option<OnHoldReason>,
    /// Required by `resolve`.
    pub resolution_code: Option<ResolutionCode>,
    /// Required by `resolve`.
    #[validate(length(max = 20000))]
    pub resolution_notes: Option<String>,
    /// Required by `declare_major`; recorded with `cancel`.
    #[validate(length(max = 2000))]
    pub reason: Option<String>,
    /// Required by `assign`.
    pub assignee: Option<String>,
    /// With `assign`: move to this group as well.
    pub assignment_group: Option<String>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNote {
    /// Defaults to `internal` for staff (a work note) and `public` for requesters.
    pub visibility: Option<Visibility>,
    #[validate(length(min = 1, max = 20000))]
    pub body: String,
}

/// The references of an incident must exist: an active caller, a group, an assignee who is an
/// active member of that group, and a parent that may have children. Only what changed since
/// `before` is checked, so an incident whose caller has left can still be worked. A parent given
/// by number is stored by id. The acting user's own account was checked when the request was
/// authenticated, so it is not read again.
fn check_references(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    incident: &mut Incident,
    before: Option<&Incident>,
) -> ApiResult<()> {
    let changed =
        |field: fn(&Incident) -> Option<&str>| before.is_none_or(|b| field(b) != field(incident));
    let active_user = |conn: &mut DbConnection, id: &str, field: &str| -> ApiResult<()> {
        match users::access(conn, id)? {
            Some((_, true, _)) => Ok(()),
            Some(_) => Err(ApiError::invalid(field, "the user is deactivated")),
            None => Err(ApiError::invalid(field, "no such user")),
        }
    };
    let acting = ctx.actor_id.as_deref();
    if changed(|i| Some(i.caller.as_str())) && acting != Some(incident.caller.as_str()) {
        active_user(conn, &incident.caller, "caller")?;
    }
    if let (true, Some(group)) = (
        changed(|i| i.assignment_group.as_deref()),
        &incident.assignment_group,
    ) {
        groups::get(conn, group)
            .map_err(|e| unknown_reference(e, "assignment_group", "no such group"))?;
    }
    let assignment_changed =
        changed(|i| i.assignee.as_deref()) || changed(|i| i.assignment_group.as_deref());
    if let (true, Some(assignee)) = (assignment_changed, &incident.assignee) {
        active_user(conn, assignee, "assignee")?;
        let Some(group) = &incident.assignment_group else {
            return Err(ApiError::invalid("assignee", "needs an assignment_group"));
        };
        if !groups::is_member(conn, group, assignee)? {
            return Err(ApiError::invalid(
                "assignee",
                "must be a member of the assignment group",
            ));
        }
    }
    if let (true, Some(parent_ref)) = (
        changed(|i| i.parent_id.as_deref()),
        incident.parent_id.clone(),
    ) {
        let parent = incidents::get(conn, &parent_ref)
            .map_err(|e| unknown_reference(e, "parent_id", "no such incident"))?;
        let has_children = !incident.id.is_empty() && incidents::has_children(conn, &incident.id)?;
        incident.check_parent(&parent, has_children)?;
        incident.parent_id = Some(parent.id);
    }
    Ok(())
}

/// Report an incident.
#[utoipa::path(
    tag = "incidents", operation_id = "create_incident",
    request_body = CreateIncident,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retry")),
    responses((status = 201, body = IncidentView, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/incidents")]
pub async fn create_incident(
    caller: Caller,
    state: web::Data<AppState>,
    body: ValidJson<CreateIncident>,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let body = body.0;
    if access == Access::Requester {
        let staff_only = [
            (
                "caller",
                body.caller.as_ref().is_some_and(|c| *c != caller.id),
            ),
            ("assignment_group", body.assignment_group.is_some()),
            ("assignee", body.assignee.is_some()),
            ("parent_id", body.parent_id.is_some()),
            ("external_refs", !body.external_refs.is_empty()),
        ];
        let errors: Vec<domain::FieldError> = staff_only
            .iter()
            .filter(|(_, set)| *set)
            .map(|(field, _)| domain::FieldError::new(*field, "may only be set by agents"))
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::from_field_errors(errors));
        }
    }
    ExternalRef::validate_list(&body.external_refs, "external_refs")?;
    let caller_id = match (&body.caller, caller.kind) {
        (Some(id), _) => id.clone(),
        (None, crate::auth::CallerKind::User) => caller.id.clone(),
        (None, crate::auth::CallerKind::ApiToken) => {
            return Err(ApiError::invalid(
                "caller",
                "is required when an API token reports an incident",
            ))
        }
    };
    let impact = body.impact.unwrap_or(Impact::Medium);
    let urgency = body.urgency.unwrap_or(Urgency::Medium);
    let now = Utc::now();
    let mut draft = Incident {
        id: String::new(),
        number: String::new(),
        title: body.title.trim().to_owned(),
        description: body.description,
        caller: caller_id,
        channel: body.channel.unwrap_or(if access == Access::Requester {
            Channel::Portal
        } else {
            Channel::Api
        }),
        category: trimmed(body.category),
        subcategory: trimmed(body.subcategory),
        impact,
        urgency,
        priority: Priority::from_matrix(impact, urgency),
        state: IncidentState::New,
        on_hold_reason: None,
        assignment_group: body.assignment_group,
        assignee: None,
        major: false,
        parent_id: body.parent_id,
        resolution_code: None,
        resolution_notes: None,
        external_refs: body.external_refs,
        created_at: now,
        updated_at: now,
        first_response_at: None,
        resolved_at: None,
        closed_at: None,
        reopen_count: 0,
        version: 0,
    };
    if draft.title.is_empty() {
        return Err(ApiError::invalid("title", "must not be blank"));
    }
    // Routing reads the rules on a reader, not on the serial write path. A rule changed
    // meanwhile routes this incident as the rules stood when it was reported.
    let routed_group = match (&draft.assignment_group, &draft.category) {
        (None, Some(category)) => {
            let rules = super::assignment_rules::routing_rules(&state).await?;
            routing::route(&rules, category, draft.subcategory.as_deref()).map(str::to_owned)
        }
        _ => None,
    };
    let ctx = caller.write_context();
    draft.assign(body.assignee, ctx.at.and_utc());
    let writer = caller.clone();
    let incident = state
        .db
        .write_new_rows(move |conn| -> ApiResult<(Incident, Relation)> {
            let mut draft = draft.clone();
            // A routed group needs no lookup (its rule's foreign key kept it, and the
            // incident's keeps it now), unless an assignee must be one of its members.
            let route = |draft: &mut Incident| {
                if draft.assignment_group.is_none() {
                    draft.assignment_group = routed_group.clone();
                }
            };
            if draft.assignee.is_some() {
                route(&mut draft);
            }
            check_references(conn, &ctx, &mut draft, None)?;
            route(&mut draft);
            let incident = incidents::create(conn, &ctx, draft)?;
            let relation = relation(conn, access, &writer, &incident)?;
            Ok((incident, relation))
        })
        .await?;
    let location = format!("/api/v1/incidents/{}", incident.0.number);
    let version = incident.0.version;
    Ok(created(
        location,
        version,
        &view(incident.0, access, incident.1),
    ))
}

/// The sort of `sort=created_at|-created_at|updated_at|-updated_at|priority|-priority`.
fn parse_sort(value: Option<&str>) -> ApiResult<Sort> {
    let value = value.unwrap_or("-created_at");
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
                "must be created_at, updated_at or priority, optionally prefixed with -",
            ))
        }
    };
    Ok(Sort { field, descending })
}

/// The keyset position a cursor carries, tied to the sort it was made for.
#[derive(Debug, Serialize, Deserialize)]
struct IncidentCursor {
    sort: String,
    #[serde(flatten)]
    position: Position,
}

/// List incidents.
#[utoipa::path(
    tag = "incidents", operation_id = "list_incidents",
    params(
        ("state" = Option<Vec<IncidentState>>, Query, description = "Repeatable"),
        ("priority" = Option<Vec<Priority>>, Query, description = "Repeatable"),
        ("assignment_group" = Option<String>, Query), ("assignee" = Option<String>, Query),
        ("caller" = Option<String>, Query), ("major" = Option<bool>, Query),
        ("category" = Option<String>, Query), ("parent_id" = Option<String>, Query),
        ("created_after" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("created_before" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("updated_after" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("q" = Option<String>, Query, description = "Words that must all appear in title or description"),
        ("sort" = Option<String>, Query, description = "created_at, updated_at or priority; prefix - for descending; default -created_at"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<IncidentView>), (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/incidents")]
pub async fn list_incidents(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let filters = [
        "state",
        "priority",
        "assignment_group",
        "assignee",
        "caller",
        "major",
        "category",
        "parent_id",
        "created_after",
        "created_before",
        "updated_after",
        "q",
        "sort",
    ];
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &filters].concat())?;
    let parse_all = |name: &str, names: String| -> ApiResult<Vec<String>> {
        params
            .all(name)
            .into_iter()
            .map(|v| v.to_owned())
            .map(|v| {
                if v.is_empty() {
                    Err(ApiError::invalid(name, format!("must be one of {names}")))
                } else {
                    Ok(v)
                }
            })
            .collect()
    };
    let states = parse_all("state", IncidentState::names())?
        .iter()
        .map(|v| {
            v.parse::<IncidentState>()
                .map_err(|m| ApiError::invalid("state", m))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let priorities = parse_all("priority", Priority::names())?
        .iter()
        .map(|v| {
            v.parse::<Priority>()
                .map_err(|m| ApiError::invalid("priority", m))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let mut filter = IncidentFilter {
        states,
        priorities,
        assignment_group: params.text("assignment_group", 64)?,
        assignee: params.text("assignee", 64)?,
        caller: params.text("caller", 64)?,
        major: params.boolean("major")?,
        category: params.text("category", 100)?,
        parent_id: params.text("parent_id", 64)?,
        created_after: params.timestamp("created_after")?.map(|t| t.naive_utc()),
        created_before: params.timestamp("created_before")?.map(|t| t.naive_utc()),
        updated_after: params.timestamp("updated_after")?.map(|t| t.naive_utc()),
        q: params.text("q", 200)?,
    };
    if access == Access::Requester {
        let internal: Vec<&str> = ["assignment_group", "assignee", "major", "parent_id"]
            .into_iter()
            .filter(|name| !params.all(name).is_empty())
            .collect();
        if let Some(name) = internal.first() {
            return Err(ApiError::invalid(
                *name,
                "is not a filter requesters can use",
            ));
        }
        if filter.caller.as_ref().is_some_and(|c| *c != caller.id) {
            return Ok(Page::<IncidentBody> {
                items: Vec::new(),
                next_cursor: None,
            }
            .respond(&req));
        }
        filter.caller = Some(caller.id.clone());
    }
    let sort_name = params.single("sort")?.unwrap_or("-created_at").to_owned();
    let sort = parse_sort(Some(&sort_name))?;
    let page = params.page::<IncidentCursor>()?;
    let after = match page.cursor {
        Some(cursor) if cursor.sort != sort_name => {
            return Err(ApiError::invalid("cursor", "was made for another sort"));
        }
        Some(cursor) => Some(cursor.position),
        None => None,
    };
    let reader = caller.clone();
    // A word search may sort every match; any other filter walks an index for one page.
    let bounded = filter.q.is_none();
    let read = move |conn: &mut DbConnection| -> ApiResult<_> {
        let slice = incidents::list(conn, &filter, sort, after.as_ref(), page.limit).map_err(
            |e| match e {
                persistence::StoreError::Conflict(message) => ApiError::invalid("cursor", message),
                other => other.into(),
            },
        )?;
        // One query for the parents of the page's children.
        let parents: Vec<&str> = slice
            .items
            .iter()
            .filter_map(|i| i.parent_id.as_deref())
            .collect();
        let final_parents = incidents::final_among(conn, &parents)?;
        let items = slice
            .items
            .into_iter()
            .map(|incident| {
                let relation = Relation {
                    is_agent: access == Access::Staff,
                    is_caller: incident.caller == reader.id,
                    parent_final: incident
                        .parent_id
                        .as_ref()
                        .is_some_and(|p| final_parents.contains(p)),
                };
                (incident, relation)
            })
            .collect();
        Ok(persistence::Slice {
            items,
            more: slice.more,
        })
    };
    let slice = state.db.read_bounded_if(bounded, read).await?;
    let page = Page::from_slice(slice, |(incident, _)| IncidentCursor {
        sort: sort_name.clone(),
        position: sort.position_of(incident),
    });
    Ok(page
        .map(|(incident, relation)| view(incident, access, relation))
        .respond(&req))
}

/// Get an incident by id or number.
#[utoipa::path(
    tag = "incidents", operation_id = "get_incident",
    params(("id" = String, Path, description = "Id or number (INC0000042)")),
    responses((status = 200, body = IncidentView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/incidents/{id}")]
pub async fn get_incident(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let incident = state
        .db
        .look_up(&state.incident_lookups, id.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("incident"))
        .and_then(|incident| shown_to(incident, access, &caller))?;
    let related = if incident.parent_id.is_some() {
        state
            .db
            .read_bounded(move |conn| -> ApiResult<_> {
                let relation = relation(conn, access, &caller, &incident)?;
                Ok((incident, relation))
            })
            .await?
    } else {
        let relation = relation_without_parent(access, &caller, &incident);
        (incident, relation)
    };
    Ok(respond(StatusCode::OK, related, access))
}

/// Change an incident's details (JSON merge patch). Staff only.
#[utoipa::path(
    tag = "incidents", operation_id = "update_incident",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UpdateIncident, content_type = "application/merge-patch+json"),
    responses((status = 200, body = IncidentView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/incidents/{id}")]
pub async fn update_incident(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateIncident>,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let expected_version = if_match(&req)?;
    let patch = body.0;
    if let Some(refs) = &patch.external_refs {
        ExternalRef::validate_list(refs, "external_refs")?;
    }
    if patch.title.as_ref().is_some_and(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid("title", "must not be blank"));
    }
    let id = id.into_inner();
    let ctx = caller.write_context();
    let writer = caller.clone();
    let incident = state
        .db
        .write(move |conn| -> ApiResult<(Incident, Relation)> {
            let before = visible(conn, &id, access, &writer)?;
            if access != Access::Staff {
                return Err(ApiError::Forbidden(
                    "only agents change incidents; add a comment instead".into(),
                ));
            }
            persistence::check_version(expected_version, before.version)?;
            if before.state.is_final() {
                return Err(ApiError::Conflict(format!(
                    "incident {} is {} and cannot change",
                    before.number, before.state
                )));
            }
            let mut after = before.clone();
            if let Some(title) = patch.title {
                after.title = title.trim().to_owned();
            }
            if let Some(description) = patch.description {
                after.description = description;
            }
            if let Some(caller_id) = patch.caller {
                after.caller = caller_id;
            }
            if let Some(channel) = patch.channel {
                after.channel = channel;
            }
            if let Some(category) = patch.category {
                after.category = trimmed(category);
            }
            if let Some(subcategory) = patch.subcategory {
                after.subcategory = trimmed(subcategory);
            }
            after.impact = patch.impact.unwrap_or(after.impact);
            after.urgency = patch.urgency.unwrap_or(after.urgency);
            after.priority = Priority::from_matrix(after.impact, after.urgency);
            if let Some(group) = patch.assignment_group {
                after.assignment_group = group;
            }
            if let Some(parent) = patch.parent_id {
                after.parent_id = parent;
            }
            if let Some(refs) = patch.external_refs {
                after.external_refs = refs;
            }
            match patch.assignee {
                Some(assignee) => after.assign(assignee, ctx.at.and_utc()),
                // A new group without a new assignee releases the old one.
                None if after.assignment_group != before.assignment_group => after.assignee = None,
                None => {}
            }
            check_references(conn, &ctx, &mut after, Some(&before))?;
            let saved = incidents::save(conn, &ctx, &before, &after, "update", None)?;
            let relation = relation(conn, access, &writer, &saved)?;
            Ok((saved, relation))
        })
        .await?;
    Ok(respond(StatusCode::OK, incident, access))
}

/// Applies `action` to the incident inside a unit of work, cascading to children when a parent
/// resolves or closes. Shared by the transitions endpoint and automatic closure.
pub(crate) fn transition_in(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    before: Incident,
    action: IncidentAction,
    input: &TransitionInput,
    relation: Relation,
) -> ApiResult<Incident> {
    let mut after = before.clone();
    let closed_by = after.apply(action, input, relation, ctx.at.and_utc())?;
    if action == IncidentAction::Assign {
        check_references(conn, ctx, &mut after, Some(&before))?;
    }
    let audit_action = match closed_by {
        Some(ClosedBy::Caller) => "close_by_caller",
        Some(ClosedBy::Agent) => "close",
        None => action.as_str(),
    };
    let saved = incidents::save(
        conn,
        ctx,
        &before,
        &after,
        audit_action,
        input.reason.as_deref(),
    )?;
    if matches!(action, IncidentAction::Resolve | IncidentAction::Close) {
        cascade_to_children(conn, ctx, &saved)?;
    }
    Ok(saved)
}

/// Resolving or closing a parent resolves or closes its open children, with a comment saying why.
fn cascade_to_children(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    parent: &Incident,
) -> ApiResult<()> {
    let now = ctx.at.and_utc();
    for child in incidents::children(conn, &parent.id)? {
        let mut after = child.clone();
        let note = match parent.state {
            IncidentState::Resolved if child.state.is_open() => {
                let notes = parent.resolution_notes.clone().unwrap_or_default();
                after.resolve(parent.resolution_code, notes, now);
                format!("Resolved together with parent incident {}.", parent.number)
            }
            IncidentState::Closed if !child.state.is_final() => {
                if child.state.is_open() {
                    after.resolve(
                        parent.resolution_code,
                        parent.resolution_notes.clone().unwrap_or_default(),
                        now,
                    );
                }
                after.close(now);
                format!("Closed together with parent incident {}.", parent.number)
            }
            _ => continue,
        };
        let action = if after.state == IncidentState::Closed {
            "close_with_parent"
        } else {
            "resolve_with_parent"
        };
        incidents::save(conn, ctx, &child, &after, action, None)?;
        notes::add(
            conn,
            ctx,
            incidents::ENTITY,
            &child.id,
            Visibility::Public,
            &note,
            "incident.note_added",
        )?;
    }
    Ok(())
}

/// Take an action: start, assign, hold, resume, resolve, reopen, close, cancel, declare_major.
#[utoipa::path(
    tag = "incidents", operation_id = "transition_incident",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = TransitionRequest,
    responses((status = 200, body = IncidentView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, description = "Not allowed now; lists allowed_actions", body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/incidents/{id}/transitions")]
pub async fn transition_incident(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<TransitionRequest>,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let expected_version = if_match(&req)?;
    let body = body.0;
    let action = body.action;
    let input = TransitionInput {
        on_hold_reason: body.on_hold_reason,
        resolution_code: body.resolution_code,
        resolution_notes: body.resolution_notes,
        reason: trimmed(body.reason),
        assignee: body.assignee,
        assignment_group: body.assignment_group,
    };
    let id = id.into_inner();
    let ctx = caller.write_context();
    let actor = caller.clone();
    let incident = state
        .db
        .write(move |conn| -> ApiResult<(Incident, Relation)> {
            let before = visible(conn, &id, access, &actor)?;
            persistence::check_version(expected_version, before.version)?;
            let relation = relation(conn, access, &actor, &before)?;
            let saved = transition_in(conn, &ctx, before, action, &input, relation)?;
            let relation = self::relation(conn, access, &actor, &saved)?;
            Ok((saved, relation))
        })
        .await?;
    Ok(respond(StatusCode::OK, incident, access))
}

/// Add a comment (public) or a work note (internal).
#[utoipa::path(
    tag = "incidents", operation_id = "add_incident_note",
    params(("id" = String, Path)),
    request_body = CreateNote,
    responses((status = 201, body = Note), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/incidents/{id}/notes")]
pub async fn add_note(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<CreateNote>,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let body = body.0;
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
    let id = id.into_inner();
    let ctx = caller.write_context();
    let actor = caller.clone();
    let note = state
        .db
        .write(move |conn| -> ApiResult<Note> {
            let incident = visible(conn, &id, access, &actor)?;
            Ok(notes::add(
                conn,
                &ctx,
                incidents::ENTITY,
                &incident.id,
                visibility,
                &body.body,
                "incident.note_added",
            )?)
        })
        .await?;
    Ok(HttpResponse::Created().json(note))
}

/// List comments and work notes, oldest first. Requesters see comments only.
#[utoipa::path(
    tag = "incidents", operation_id = "list_incident_notes",
    params(("id" = String, Path), ("visibility" = Option<Visibility>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Note>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/incidents/{id}/notes")]
pub async fn list_notes(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &["visibility"]].concat())?;
    let only =
        params.parsed::<Visibility>("visibility", &format!("one of {}", Visibility::names()))?;
    let page = params.page::<String>()?;
    let include_internal = access == Access::Staff && only != Some(Visibility::Public);
    let only_internal = only == Some(Visibility::Internal);
    let id = id.into_inner();
    let reader = caller.clone();
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let incident = visible(conn, &id, access, &reader)?;
            let mut slice = notes::list(
                conn,
                incidents::ENTITY,
                &incident.id,
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
    Ok(Page::from_slice(slice, |note| note.id.clone()).respond(&req))
}

/// The incident's audit trail, newest first. Requesters see neither work notes nor internal fields.
#[utoipa::path(
    tag = "incidents", operation_id = "incident_history",
    params(("id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<AuditEvent>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/incidents/{id}/history")]
pub async fn history(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let access = access(&caller)?;
    let page = QueryParams::parse(&req, &PAGE_PARAMS)?.page::<String>()?;
    let id = id.into_inner();
    let reader = caller.clone();
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let incident = visible(conn, &id, access, &reader)?;
            let filter = audit::AuditFilter {
                entity_type: Some(incidents::ENTITY.into()),
                entity_id: Some(incident.id),
                // Work notes and major declarations concern staff only.
                exclude_actions: if access == Access::Requester {
                    vec![
                        notes::add_action(Visibility::Internal).to_owned(),
                        IncidentAction::DeclareMajor.as_str().to_owned(),
                    ]
                } else {
                    Vec::new()
                },
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
                for field in INTERNAL_FIELDS {
                    changes.remove(field);
                }
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
    Ok(page.respond(&req))
}

/// Closes incidents resolved longer ago than `after`. Each closure is its own unit of work and
/// is skipped when the incident changed meanwhile, so several nodes may run this at once.
pub async fn auto_close(state: &AppState, after: chrono::TimeDelta) -> ApiResult<usize> {
    let cutoff = persistence::now_utc() - after;
    let due = state
        .db
        .read(move |conn| incidents::resolved_before(conn, cutoff, 200))
        .await?;
    let mut closed = 0;
    for id in due {
        let result = state
            .db
            .write(move |conn| -> ApiResult<bool> {
                let before = incidents::get(conn, &id)?;
                if before.state != IncidentState::Resolved {
                    return Ok(false);
                }
                let ctx = WriteContext::system("auto-close");
                let mut after = before.clone();
                after.close(ctx.at.and_utc());
                let saved = incidents::save(conn, &ctx, &before, &after, "auto_close", None)?;
                cascade_to_children(conn, &ctx, &saved)?;
                Ok(true)
            })
            .await;
        match result {
            Ok(true) => closed += 1,
            Ok(false) => {}
            Err(ApiError::VersionMismatch { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(closed)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_incident)
        .service(list_incidents)
        .service(get_incident)
        .service(update_incident)
        .service(transition_incident)
        .service(add_note)
        .service(list_notes)
        .service(history);
}
