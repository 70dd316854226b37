//! `/api/v1/incidents`: the incident lifecycle, notes and history.
//!
//! Staff (agents, managers, integrations, admins) see and work every incident. Requesters create
//! incidents as their own caller, see only their own (others are 404), add public comments,
//! confirm or reopen their resolved incidents, and never see internal fields or work notes.

use actix_web::http::StatusCode;
use actix_web::{get, patch, post, put, web, HttpRequest, HttpResponse};
use domain::cmdb::impact::ImpactedItem;
use domain::incident::{
    Channel, Incident, IncidentAction, IncidentState, NewIncident, OnHoldReason, Relation,
    ResolutionCode, TransitionInput,
};
use domain::notes::{Note, Visibility};
use domain::priority::{Impact, Priority, Urgency};
use domain::ticket::{self, trimmed, Lifecycle};
use domain::{ExternalRef, FieldError, Role};
use persistence::incidents::{self, IncidentFilter};
use persistence::DbConnection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::feed::AuditEvent;
use crate::auth::{Caller, CallerKind};
use crate::concurrency::{created, if_match};
use crate::error::{ApiError, ApiResult};
use crate::json_body::{nullable, required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;
use crate::tickets::{
    self, access, body, enum_filter, respond, shown_to, Access, CreateNote, ListOrder, TicketApi,
    TicketCaller,
};
use crate::usecases::incidents::{self as usecase, relation_without_parent, IncidentPatch};
use crate::usecases::Upserted;

/// An incident with the actions the caller may take now.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    pub allowed_actions: Vec<IncidentAction>,
    /// On creation with configuration items: the business services that depend on them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impacted_services: Option<Vec<ImpactedItem>>,
}

impl TicketApi for Incident {
    const STAFF: &'static [Role] = &[
        Role::Agent,
        Role::ChangeManager,
        Role::ProblemManager,
        Role::Integration,
    ];
    const REQUESTERS_SEE_OWN: bool = true;
    type View = IncidentView;

    fn view(self, allowed_actions: Vec<IncidentAction>) -> IncidentView {
        IncidentView {
            incident: self,
            allowed_actions,
            impacted_services: None,
        }
    }

    /// A child's parent state is read when it has one.
    fn relation(
        conn: &mut DbConnection,
        access: Access,
        caller: &Caller,
        incident: &Incident,
    ) -> ApiResult<Relation> {
        let parent_final = match &incident.parent_id {
            Some(parent) => <Incident as persistence::tickets::TicketTable>::get(conn, parent)?
                .state
                .is_final(),
            None => false,
        };
        Ok(Relation {
            parent_final,
            ..relation_without_parent(access, caller, incident)
        })
    }
}

#[contract_macros::schema_from_validate]
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
    /// Needs `assignment_group` and must be an active member of it; assigning starts the work.
    pub assignee: Option<String>,
    pub parent_id: Option<String>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    /// Ids of the configuration items concerned.
    #[serde(default)]
    #[validate(length(max = 50))]
    pub configuration_items: Vec<String>,
    /// Id of the business service (a `business_service` configuration item) affected.
    pub service: Option<String>,
}

/// A merge patch of an incident. State, priority, number and timestamps change only through
/// transitions and the priority matrix.
#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIncident {
    #[validate(length(min = 1, max = 200))]
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub title: Option<String>,
    #[validate(length(max = 20000))]
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub caller: Option<String>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
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
    #[schema(nullable = false)]
    pub impact: Option<Impact>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
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
    #[schema(nullable = false)]
    pub external_refs: Option<Vec<ExternalRef>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(max = 50))]
    pub configuration_items: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub service: Option<Option<String>>,
}

#[contract_macros::schema_from_validate]
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

impl CreateIncident {
    /// The new incident this request reports: requesters report for themselves, through the
    /// portal, without staff fields.
    fn into_new(self, caller: &Caller, access: Access) -> ApiResult<NewIncident> {
        if access == Access::Requester {
            let staff_only = [
                (
                    "caller",
                    self.caller.as_ref().is_some_and(|c| *c != caller.id),
                ),
                ("assignment_group", self.assignment_group.is_some()),
                ("assignee", self.assignee.is_some()),
                ("parent_id", self.parent_id.is_some()),
                ("external_refs", !self.external_refs.is_empty()),
                ("configuration_items", !self.configuration_items.is_empty()),
                ("service", self.service.is_some()),
            ];
            let errors: Vec<FieldError> = staff_only
                .iter()
                .filter(|(_, set)| *set)
                .map(|(field, _)| FieldError::new(*field, "may only be set by agents"))
                .collect();
            if !errors.is_empty() {
                return Err(ApiError::from_field_errors(errors));
            }
        }
        ExternalRef::validate_list(&self.external_refs, "external_refs")?;
        ticket::assignee_has_group(self.assignment_group.as_deref(), self.assignee.as_deref())?;
        let caller_id = match (self.caller, caller.kind) {
            (Some(id), _) => id,
            (None, CallerKind::User) => caller.id.clone(),
            (None, CallerKind::ApiToken) => {
                return Err(ApiError::invalid(
                    "caller",
                    "is required when an API token reports an incident",
                ))
            }
        };
        let title = self.title.trim().to_owned();
        if title.is_empty() {
            return Err(ApiError::invalid("title", "must not be blank"));
        }
        Ok(NewIncident {
            title,
            description: self.description,
            caller: caller_id,
            channel: self.channel.unwrap_or(match access {
                Access::Requester => Channel::Portal,
                Access::Staff => Channel::Api,
            }),
            category: trimmed(self.category),
            subcategory: trimmed(self.subcategory),
            impact: self.impact.unwrap_or(Impact::Medium),
            urgency: self.urgency.unwrap_or(Urgency::Medium),
            assignment_group: self.assignment_group,
            assignee: self.assignee,
            parent_id: self.parent_id,
            external_refs: self.external_refs,
            configuration_items: self.configuration_items,
            service: self.service,
        })
    }
}

impl CreateIncident {
    /// The new incident of an upsert, the request kept for the update path.
    fn clone_new(&self, caller: &Caller, access: Access) -> ApiResult<NewIncident> {
        CreateIncident {
            title: self.title.clone(),
            description: self.description.clone(),
            caller: self.caller.clone(),
            channel: self.channel,
            category: self.category.clone(),
            subcategory: self.subcategory.clone(),
            impact: self.impact,
            urgency: self.urgency,
            assignment_group: self.assignment_group.clone(),
            assignee: self.assignee.clone(),
            parent_id: self.parent_id.clone(),
            external_refs: self.external_refs.clone(),
            configuration_items: self.configuration_items.clone(),
            service: self.service.clone(),
        }
        .into_new(caller, access)
    }

    /// The update of an upsert: the fields the body gives replace the incident's.
    fn into_replacement(self) -> ApiResult<IncidentPatch> {
        ExternalRef::validate_list(&self.external_refs, "external_refs")?;
        let title = self.title.trim().to_owned();
        if title.is_empty() {
            return Err(ApiError::invalid("title", "must not be blank"));
        }
        Ok(IncidentPatch {
            title: Some(title),
            description: Some(self.description),
            caller: self.caller,
            channel: self.channel,
            category: self.category.map(Some),
            subcategory: self.subcategory.map(Some),
            impact: self.impact,
            urgency: self.urgency,
            assignment_group: self.assignment_group.map(Some),
            assignee: self.assignee.map(Some),
            parent_id: self.parent_id.map(Some),
            external_refs: Some(self.external_refs),
            configuration_items: (!self.configuration_items.is_empty())
                .then_some(self.configuration_items),
            service: self.service.map(Some),
        })
    }
}

impl UpdateIncident {
    fn into_patch(self) -> ApiResult<IncidentPatch> {
        if let Some(refs) = &self.external_refs {
            ExternalRef::validate_list(refs, "external_refs")?;
        }
        if self.title.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ApiError::invalid("title", "must not be blank"));
        }
        Ok(IncidentPatch {
            title: self.title,
            description: self.description,
            caller: self.caller,
            channel: self.channel,
            category: self.category,
            subcategory: self.subcategory,
            impact: self.impact,
            urgency: self.urgency,
            assignment_group: self.assignment_group,
            assignee: self.assignee,
            parent_id: self.parent_id,
            external_refs: self.external_refs,
            configuration_items: self.configuration_items,
            service: self.service,
        })
    }
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
    caller: TicketCaller<Incident>,
    state: web::Data<AppState>,
    body: ValidJson<CreateIncident>,
) -> ApiResult<HttpResponse> {
    let TicketCaller { caller, access, .. } = caller;
    let new = body.0.into_new(&caller, access)?;
    let (incident, relation) = usecase::report(&state, caller, access, new).await?;
    let location = format!("/api/v1/incidents/{}", incident.number);
    let version = incident.version;
    // Only staff report on configuration items, so the view needs no redaction.
    if !incident.configuration_items.is_empty() {
        let impacted =
            usecase::impacted_services(&state, incident.configuration_items.clone()).await?;
        let allowed_actions = incident.allowed_actions(relation);
        let mut view = incident.view(allowed_actions);
        view.impacted_services = Some(impacted);
        return Ok(created(location, version, &view));
    }
    Ok(created(
        location,
        version,
        &tickets::body(incident, access, relation),
    ))
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
        ("channel" = Option<Channel>, Query, description = "Where reported; `monitoring` for incidents opened by alerts"),
        ("problem_id" = Option<String>, Query, description = "Incidents linked to this problem (id)"),
        ("configuration_item" = Option<String>, Query, description = "Incidents concerning this configuration item (id)"),
        ("service" = Option<String>, Query, description = "Incidents affecting this business service (id)"),
        ("created_after" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("created_before" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("updated_after" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("q" = Option<String>, Query, description = "Words that must all appear in title or description"),
        ("sla_breached" = Option<bool>, Query, description = "With a breached SLA timer (true) or none (false)"),
        ("sla_due_before" = Option<String>, Query, description = "With a running SLA timer due before this instant (RFC 3339)"),
        ("external_ref" = Option<String>, Query, description = "system:id, the incident holding this reference"),
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
    let access = access::<Incident>(&caller)?;
    let filters = [
        "state",
        "priority",
        "assignment_group",
        "assignee",
        "caller",
        "major",
        "category",
        "channel",
        "parent_id",
        "problem_id",
        "configuration_item",
        "service",
        "created_after",
        "created_before",
        "updated_after",
        "q",
        "sla_breached",
        "sla_due_before",
        "sort",
        "external_ref",
    ];
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &filters].concat())?;
    let mut filter = IncidentFilter {
        states: enum_filter(&params, "state", &IncidentState::names())?,
        priorities: enum_filter(&params, "priority", &Priority::names())?,
        assignment_group: params.text("assignment_group")?,
        assignee: params.text("assignee")?,
        caller: params.text("caller")?,
        major: params.boolean("major")?,
        category: params.text("category")?,
        channel: params.parsed("channel", &Channel::names())?,
        parent_id: params.text("parent_id")?,
        problem_id: params.text("problem_id")?,
        configuration_item: params.text("configuration_item")?,
        service: params.text("service")?,
        created_after: params.timestamp("created_after")?.map(|t| t.naive_utc()),
        created_before: params.timestamp("created_before")?.map(|t| t.naive_utc()),
        updated_after: params.timestamp("updated_after")?.map(|t| t.naive_utc()),
        q: params.text("q")?,
        sla_breached: params.boolean("sla_breached")?,
        sla_due_before: params.timestamp("sla_due_before")?.map(|t| t.naive_utc()),
        external_ref: params.external_ref()?,
    };
    if access == Access::Requester {
        let internal: Vec<&str> = [
            "assignment_group",
            "assignee",
            "major",
            "parent_id",
            "problem_id",
            "configuration_item",
        ]
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
            return Ok(Page::<tickets::Body<IncidentView>> {
                items: Vec::new(),
                next_cursor: None,
            }
            .respond(&req));
        }
        filter.caller = Some(caller.id.clone());
    }
    let order = ListOrder::parse(&params)?;
    let (sort, after, limit) = (order.sort, order.after.clone(), order.limit);
    // A word search may sort every match; any other filter walks an index for one page.
    let bounded = filter.q.is_none();
    let read = move |conn: &mut DbConnection| -> ApiResult<_> {
        let slice = incidents::list(conn, &filter, sort, after.as_ref(), limit)
            .map_err(tickets::cursor_error)?;
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
                    parent_final: incident
                        .parent_id
                        .as_ref()
                        .is_some_and(|p| final_parents.contains(p)),
                    ..relation_without_parent(access, &caller, &incident)
                };
                (incident, relation)
            })
            .collect();
        Ok(persistence::Slice {
            items,
            more: slice.more,
        })
    };
    let _search = match bounded {
        true => None,
        false => Some(state.search_slot().await?),
    };
    let slice = state.db.read_bounded_if(bounded, read).await?;
    Ok(order
        .page(slice)
        .map(|(incident, relation)| body(incident, access, relation))
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
    let access = access::<Incident>(&caller)?;
    let incident = state
        .db
        .look_up(&state.incident_lookups, id.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("incident"))
        .and_then(|incident| shown_to(incident, access, &caller))?;
    let related = if incident.parent_id.is_some() {
        state
            .db
            .read_bounded(move |conn| tickets::related(conn, access, &caller, incident))
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
    caller: TicketCaller<Incident>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateIncident>,
) -> ApiResult<HttpResponse> {
    let TicketCaller { caller, access, .. } = caller;
    let expected_version = if_match(&req)?;
    let patch = body.0.into_patch()?;
    let updated = usecase::update(
        &state,
        caller,
        access,
        id.into_inner(),
        expected_version,
        patch,
    )
    .await?;
    Ok(respond(StatusCode::OK, updated, access))
}

/// Create or update the incident holding another system's reference (a CRM pushing its
/// record): 201 when it was created, 200 when it existed. The path's reference is added to the
/// body's `external_refs`; a body reference of the same system with another id is a 422. On
/// update, the fields of the body replace the incident's and absent fields stay as they are.
#[utoipa::path(
    tag = "incidents", operation_id = "upsert_incident_by_external_ref",
    params(("system" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The other system (crm)"),
           ("external_id" = String, Path, description = "The record's id there")),
    request_body = CreateIncident,
    responses((status = 200, body = IncidentView, headers(("ETag" = String))),
              (status = 201, body = IncidentView, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/incidents/by-external/{system}/{external_id}")]
pub async fn upsert_incident_by_external_ref(
    caller: TicketCaller<Incident>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: ValidJson<CreateIncident>,
) -> ApiResult<HttpResponse> {
    let TicketCaller { caller, access, .. } = caller;
    if access != Access::Staff {
        return Err(ApiError::Forbidden(
            "only agents and integrations push incidents by reference".into(),
        ));
    }
    let (system, id) = path.into_inner();
    let reference = ExternalRef { system, id };
    let mut request = body.0;
    request.external_refs = crate::usecases::with_path_reference(
        std::mem::take(&mut request.external_refs),
        &reference,
    )?;
    let created_by = caller.clone();
    let replacement = request.clone_new(&caller, access)?;
    let upserted = crate::usecases::upsert_by_reference(
        &state,
        "incident",
        &reference,
        || usecase::report(&state, created_by, access, replacement),
        |target| async {
            let patch = request.into_replacement()?;
            usecase::update(&state, caller, access, target, None, patch).await
        },
    )
    .await?;
    Ok(match upserted {
        Upserted::Created((incident, relation)) => {
            let location = format!("/api/v1/incidents/{}", incident.number);
            let version = incident.version;
            created(
                location,
                version,
                &tickets::body(incident, access, relation),
            )
        }
        Upserted::Updated(updated) => respond(StatusCode::OK, updated, access),
    })
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
    caller: TicketCaller<Incident>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<TransitionRequest>,
) -> ApiResult<HttpResponse> {
    let TicketCaller { caller, access, .. } = caller;
    let expected_version = if_match(&req)?;
    let body = body.0;
    let input = TransitionInput {
        on_hold_reason: body.on_hold_reason,
        resolution_code: body.resolution_code,
        resolution_notes: body.resolution_notes,
        reason: trimmed(body.reason),
        assignee: body.assignee,
        assignment_group: body.assignment_group,
    };
    let id = id.into_inner();
    let moved = usecase::transition(
        &state,
        caller,
        access,
        id,
        expected_version,
        body.action,
        input,
    )
    .await?;
    Ok(respond(StatusCode::OK, moved, access))
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
    caller: TicketCaller<Incident>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<CreateNote>,
) -> ApiResult<HttpResponse> {
    tickets::add_note::<Incident>(caller.caller, &state, id.into_inner(), body.0).await
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
    tickets::list_notes::<Incident>(caller, &state, &req, id.into_inner()).await
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
    tickets::history::<Incident>(caller, &state, &req, id.into_inner()).await
}

/// The incident's SLA timers, read now: state, due time, elapsed, paused and remaining time.
#[utoipa::path(
    tag = "incidents", operation_id = "incident_slas",
    params(("id" = String, Path)),
    responses((status = 200, body = Page<domain::sla_timers::TimerRecord>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/incidents/{id}/slas")]
pub async fn slas(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    tickets::timers::<Incident>(caller, &state, &req, id.into_inner()).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(upsert_incident_by_external_ref)
        .service(create_incident)
        .service(list_incidents)
        .service(get_incident)
        .service(update_incident)
        .service(transition_incident)
        .service(add_note)
        .service(list_notes)
        .service(history)
        .service(slas);
}
