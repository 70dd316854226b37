//! `/api/v1/problems` and `/api/v1/known-errors`: problem management and the known-error
//! database. Agents, problem managers, integrations and admins see problems; agents create
//! them, add notes and link incidents; problem managers and admins move them along. Requesters
//! get 404 on every route here.

use actix_web::http::StatusCode;
use actix_web::{delete, get, patch, post, put, web, HttpRequest, HttpResponse};
use domain::incident::{Incident, ResolutionCode};
use domain::notes::{Note, Visibility};
use domain::priority::{Impact, Priority, Urgency};
use domain::problem::{
    NewProblem, Problem, ProblemAction, ProblemInput, ProblemRelation, ProblemState,
};
use domain::ticket::{self, trimmed};
use domain::{ExternalRef, Role};
use persistence::problems::{self, ProblemFilter};
use persistence::DbConnection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::feed::AuditEvent;
use super::incidents::IncidentView;
use crate::auth::Caller;
use crate::concurrency::{created, if_match};
use crate::error::{ApiError, ApiResult};
use crate::json_body::{nullable, required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;
use crate::tickets::{
    self, access, enum_filter, respond, Access, CreateNote, ListOrder, TicketApi, TicketCaller,
};
use crate::usecases::incidents::relation_without_parent;
use crate::usecases::problems::{self as usecase, FromIncident, ProblemPatch};
use crate::usecases::Upserted;

/// A problem with the actions the caller may take now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemView {
    #[serde(flatten)]
    pub problem: Problem,
    pub allowed_actions: Vec<ProblemAction>,
}

impl TicketApi for Problem {
    const STAFF: &'static [Role] = &[Role::Agent, Role::ProblemManager, Role::Integration];
    const REQUESTERS_SEE_OWN: bool = false;
    type View = ProblemView;

    fn view(self, allowed_actions: Vec<ProblemAction>) -> ProblemView {
        ProblemView {
            problem: self,
            allowed_actions,
        }
    }

    fn relation(
        _: &mut DbConnection,
        _: Access,
        caller: &Caller,
        _: &Problem,
    ) -> ApiResult<ProblemRelation> {
        Ok(usecase::relation(caller))
    }
}

fn respond_problem(status: StatusCode, problem: Problem, caller: &Caller) -> HttpResponse {
    respond(status, (problem, usecase::relation(caller)), Access::Staff)
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProblem {
    #[validate(length(min = 1, max = 200))]
    #[schema(example = "VPN tunnels drop for office Wi-Fi users")]
    pub title: String,
    #[serde(default)]
    #[validate(length(max = 20000))]
    pub description: String,
    /// Defaults to `medium`.
    pub impact: Option<Impact>,
    /// Defaults to `medium`.
    pub urgency: Option<Urgency>,
    #[validate(length(min = 1, max = 100))]
    pub category: Option<String>,
    pub assignment_group: Option<String>,
    /// Needs `assignment_group` and must be an active member of it.
    pub assignee: Option<String>,
    #[validate(length(max = 20000))]
    pub root_cause: Option<String>,
    #[validate(length(max = 20000))]
    pub workaround: Option<String>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    /// Ids of the configuration items concerned.
    #[serde(default)]
    #[validate(length(max = 50))]
    pub configuration_items: Vec<String>,
    /// Id of the business service (a `business_service` configuration item) affected.
    pub service: Option<String>,
}

impl CreateProblem {
    fn into_new(self) -> ApiResult<NewProblem> {
        ExternalRef::validate_list(&self.external_refs, "external_refs")?;
        ticket::assignee_has_group(self.assignment_group.as_deref(), self.assignee.as_deref())?;
        let title = self.title.trim().to_owned();
        if title.is_empty() {
            return Err(ApiError::invalid("title", "must not be blank"));
        }
        Ok(NewProblem {
            title,
            description: self.description,
            impact: self.impact.unwrap_or(Impact::Medium),
            urgency: self.urgency.unwrap_or(Urgency::Medium),
            category: trimmed(self.category),
            assignment_group: self.assignment_group,
            assignee: self.assignee,
            root_cause: trimmed(self.root_cause),
            workaround: trimmed(self.workaround),
            external_refs: self.external_refs,
            configuration_items: self.configuration_items,
            service: self.service,
        })
    }
}

impl CreateProblem {
    /// The new problem of an upsert, the request kept for the update path.
    fn clone_new(&self) -> ApiResult<NewProblem> {
        CreateProblem {
            title: self.title.clone(),
            description: self.description.clone(),
            impact: self.impact,
            urgency: self.urgency,
            category: self.category.clone(),
            assignment_group: self.assignment_group.clone(),
            assignee: self.assignee.clone(),
            root_cause: self.root_cause.clone(),
            workaround: self.workaround.clone(),
            external_refs: self.external_refs.clone(),
            configuration_items: self.configuration_items.clone(),
            service: self.service.clone(),
        }
        .into_new()
    }

    /// The update of an upsert: the fields the body gives replace the problem's.
    fn into_replacement(self) -> ApiResult<ProblemPatch> {
        ExternalRef::validate_list(&self.external_refs, "external_refs")?;
        let title = self.title.trim().to_owned();
        if title.is_empty() {
            return Err(ApiError::invalid("title", "must not be blank"));
        }
        Ok(ProblemPatch {
            title: Some(title),
            description: Some(self.description),
            impact: self.impact,
            urgency: self.urgency,
            category: self.category.map(Some),
            assignment_group: self.assignment_group.map(Some),
            assignee: self.assignee.map(Some),
            root_cause: self.root_cause.map(Some),
            workaround: self.workaround.map(Some),
            external_refs: Some(self.external_refs),
            configuration_items: (!self.configuration_items.is_empty())
                .then_some(self.configuration_items),
            service: self.service.map(Some),
        })
    }
}

/// A merge patch of a problem. State, priority, the known-error flag and timestamps change
/// only through transitions and the priority matrix.
#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProblem {
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
    pub impact: Option<Impact>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub urgency: Option<Urgency>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(min = 1, max = 100))]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub assignment_group: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub assignee: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(max = 20000))]
    #[schema(value_type = Option<String>)]
    pub root_cause: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(max = 20000))]
    #[schema(value_type = Option<String>)]
    pub workaround: Option<Option<String>>,
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

impl UpdateProblem {
    fn into_patch(self) -> ApiResult<ProblemPatch> {
        if let Some(refs) = &self.external_refs {
            ExternalRef::validate_list(refs, "external_refs")?;
        }
        if self.title.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ApiError::invalid("title", "must not be blank"));
        }
        Ok(ProblemPatch {
            title: self.title,
            description: self.description,
            impact: self.impact,
            urgency: self.urgency,
            category: self.category,
            assignment_group: self.assignment_group,
            assignee: self.assignee,
            root_cause: self.root_cause,
            workaround: self.workaround,
            external_refs: self.external_refs,
            configuration_items: self.configuration_items,
            service: self.service,
        })
    }
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProblemTransitionRequest {
    pub action: ProblemAction,
    /// Required by `cancel`.
    #[validate(length(max = 2000))]
    pub reason: Option<String>,
    /// Required by `resolve`.
    pub resolution_code: Option<ResolutionCode>,
    /// Required by `resolve`.
    #[validate(length(max = 20000))]
    pub resolution_notes: Option<String>,
    /// With `resolve`: resolve every open linked incident with the problem's resolution,
    /// instead of only resuming those held for it.
    #[serde(default)]
    pub resolve_linked_incidents: bool,
    /// Required by `record_workaround`.
    #[validate(length(max = 20000))]
    pub workaround: Option<String>,
    /// Required by `record_root_cause`.
    #[validate(length(max = 20000))]
    pub root_cause: Option<String>,
    /// Required by `assign`.
    pub assignee: Option<String>,
    /// With `assign`: move to this group as well.
    pub assignment_group: Option<String>,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkIncidents {
    /// Incident ids or numbers.
    #[validate(length(min = 1, max = 100))]
    pub incident_ids: Vec<String>,
    /// Put open incidents `on_hold`/`awaiting_problem` until the problem is resolved.
    #[serde(default)]
    pub hold_incidents: bool,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProblemFromIncident {
    /// Defaults to the incident's title.
    #[validate(length(min = 1, max = 200))]
    pub title: Option<String>,
    /// Defaults to the incident's description.
    #[validate(length(max = 20000))]
    pub description: Option<String>,
    /// Defaults to the incident's impact.
    pub impact: Option<Impact>,
    /// Defaults to the incident's urgency.
    pub urgency: Option<Urgency>,
    #[validate(length(min = 1, max = 100))]
    pub category: Option<String>,
    pub assignment_group: Option<String>,
    /// Put the incident `on_hold`/`awaiting_problem`.
    #[serde(default)]
    pub hold_incident: bool,
}

/// Record a problem.
#[utoipa::path(
    tag = "problems", operation_id = "create_problem",
    request_body = CreateProblem,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retry")),
    responses((status = 201, body = ProblemView, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/problems")]
pub async fn create_problem(
    caller: TicketCaller<Problem>,
    state: web::Data<AppState>,
    body: ValidJson<CreateProblem>,
) -> ApiResult<HttpResponse> {
    let caller = caller.caller;
    let new = body.0.into_new()?;
    let relation = usecase::relation(&caller);
    let problem = usecase::create(&state, caller, new).await?;
    Ok(created_problem(problem, relation))
}

/// Create or update the problem holding another system's reference: 201 when it was created,
/// 200 when it existed. The path's reference is added to the body's `external_refs`; a body
/// reference of the same system with another id is a 422. On update, the fields of the body
/// replace the problem's and absent fields stay as they are.
#[utoipa::path(
    tag = "problems", operation_id = "upsert_problem_by_external_ref",
    params(("system" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The other system (erp)"),
           ("external_id" = String, Path, description = "The record's id there")),
    request_body = CreateProblem,
    responses((status = 200, body = ProblemView, headers(("ETag" = String))),
              (status = 201, body = ProblemView, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/problems/by-external/{system}/{external_id}")]
pub async fn upsert_problem_by_external_ref(
    caller: TicketCaller<Problem>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: ValidJson<CreateProblem>,
) -> ApiResult<HttpResponse> {
    let caller = caller.caller;
    let (system, id) = path.into_inner();
    let reference = ExternalRef { system, id };
    let mut request = body.0;
    request.external_refs = crate::usecases::with_path_reference(
        std::mem::take(&mut request.external_refs),
        &reference,
    )?;
    let relation = usecase::relation(&caller);
    let new = request.clone_new()?;
    let upserted = crate::usecases::upsert_by_reference(
        &state,
        "problem",
        &reference,
        || usecase::create(&state, caller.clone(), new),
        |target| async {
            let patch = request.into_replacement()?;
            usecase::update(&state, caller.clone(), target, None, patch).await
        },
    )
    .await?;
    Ok(match upserted {
        Upserted::Created(problem) => created_problem(problem, relation),
        Upserted::Updated(problem) => respond_problem(StatusCode::OK, problem, &caller),
    })
}

/// Create a problem from an incident and link the incident to it.
#[utoipa::path(
    tag = "problems", operation_id = "create_problem_from_incident",
    params(("id" = String, Path, description = "Incident id or number")),
    request_body = ProblemFromIncident,
    responses((status = 201, body = ProblemView, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/incidents/{id}/problem")]
pub async fn create_from_incident(
    caller: TicketCaller<Problem>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<ProblemFromIncident>,
) -> ApiResult<HttpResponse> {
    let caller = caller.caller;
    let body = body.0;
    let given = FromIncident {
        title: trimmed(body.title),
        description: body.description,
        impact: body.impact,
        urgency: body.urgency,
        category: trimmed(body.category),
        assignment_group: body.assignment_group,
        hold_incident: body.hold_incident,
    };
    let relation = usecase::relation(&caller);
    let problem = usecase::create_from_incident(&state, caller, id.into_inner(), given).await?;
    Ok(created_problem(problem, relation))
}

/// 201 with the new problem, its `Location` and `ETag`.
fn created_problem(problem: Problem, relation: ProblemRelation) -> HttpResponse {
    let location = format!("/api/v1/problems/{}", problem.number);
    let version = problem.version;
    created(
        location,
        version,
        &tickets::body(problem, Access::Staff, relation),
    )
}

/// List problems.
#[utoipa::path(
    tag = "problems", operation_id = "list_problems",
    params(
        ("state" = Option<Vec<ProblemState>>, Query, description = "Repeatable"),
        ("priority" = Option<Vec<Priority>>, Query, description = "Repeatable"),
        ("assignment_group" = Option<String>, Query), ("assignee" = Option<String>, Query),
        ("category" = Option<String>, Query), ("known_error" = Option<bool>, Query),
        ("configuration_item" = Option<String>, Query, description = "Problems concerning this configuration item (id)"),
        ("service" = Option<String>, Query, description = "Problems affecting this business service (id)"),
        ("created_after" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("created_before" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("external_ref" = Option<String>, Query, description = "system:id, the problem holding this reference"),
        ("q" = Option<String>, Query, description = "Words that must all appear in title, description, root cause or workaround"),
        ("sla_breached" = Option<bool>, Query, description = "With a breached SLA timer (true) or none (false)"),
        ("sla_due_before" = Option<String>, Query, description = "With a running SLA timer due before this instant (RFC 3339)"),
        ("sort" = Option<String>, Query, description = "created_at, updated_at or priority; prefix - for descending; default -created_at"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<ProblemView>), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/problems")]
pub async fn list_problems(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    access::<Problem>(&caller)?;
    let filters = [
        "state",
        "priority",
        "assignment_group",
        "assignee",
        "category",
        "known_error",
        "configuration_item",
        "service",
        "created_after",
        "created_before",
        "q",
        "sla_breached",
        "sla_due_before",
        "sort",
        "external_ref",
    ];
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &filters].concat())?;
    let filter = ProblemFilter {
        states: enum_filter(&params, "state", &ProblemState::names())?,
        priorities: enum_filter(&params, "priority", &Priority::names())?,
        assignment_group: params.text("assignment_group")?,
        assignee: params.text("assignee")?,
        category: params.text("category")?,
        known_error: params.boolean("known_error")?,
        configuration_item: params.text("configuration_item")?,
        service: params.text("service")?,
        created_after: params.timestamp("created_after")?.map(|t| t.naive_utc()),
        created_before: params.timestamp("created_before")?.map(|t| t.naive_utc()),
        q: params.text("q")?,
        sla_breached: params.boolean("sla_breached")?,
        sla_due_before: params.timestamp("sla_due_before")?.map(|t| t.naive_utc()),
        external_ref: params.external_ref()?,
    };
    let order = ListOrder::parse(&params)?;
    let (sort, after, limit) = (order.sort, order.after.clone(), order.limit);
    let relation = usecase::relation(&caller);
    let _search = match filter.q {
        Some(_) => Some(state.search_slot().await?),
        None => None,
    };
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let slice = problems::list(conn, &filter, sort, after.as_ref(), limit)
                .map_err(tickets::cursor_error)?;
            Ok(persistence::Slice {
                items: slice.items.into_iter().map(|p| (p, relation)).collect(),
                more: slice.more,
            })
        })
        .await?;
    Ok(order
        .page(slice)
        .map(|(problem, relation)| tickets::body(problem, Access::Staff, relation))
        .respond(&req))
}

/// Get a problem by id or number.
#[utoipa::path(
    tag = "problems", operation_id = "get_problem",
    params(("id" = String, Path, description = "Id or number (PRB0000042)")),
    responses((status = 200, body = ProblemView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/problems/{id}")]
pub async fn get_problem(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    access::<Problem>(&caller)?;
    let problem = state
        .db
        .look_up(&state.problem_lookups, id.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("problem"))?;
    Ok(respond_problem(StatusCode::OK, problem, &caller))
}

/// Change a problem's details (JSON merge patch). Problem managers only.
#[utoipa::path(
    tag = "problems", operation_id = "update_problem",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UpdateProblem, content_type = "application/merge-patch+json"),
    responses((status = 200, body = ProblemView, headers(("ETag" = String))), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/problems/{id}")]
pub async fn update_problem(
    caller: TicketCaller<Problem>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateProblem>,
) -> ApiResult<HttpResponse> {
    let caller = caller.caller;
    let expected_version = if_match(&req)?;
    let patch = body.0.into_patch()?;
    let relation_of = caller.clone();
    let problem = usecase::update(&state, caller, id.into_inner(), expected_version, patch).await?;
    Ok(respond_problem(StatusCode::OK, problem, &relation_of))
}

/// Take an action: assess, start_analysis, start_fix, resolve, close, cancel, assign,
/// record_workaround, record_root_cause, declare_known_error.
#[utoipa::path(
    tag = "problems", operation_id = "transition_problem",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = ProblemTransitionRequest,
    responses((status = 200, body = ProblemView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, description = "Not allowed now; lists allowed_actions", body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/problems/{id}/transitions")]
pub async fn transition_problem(
    caller: TicketCaller<Problem>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<ProblemTransitionRequest>,
) -> ApiResult<HttpResponse> {
    let caller = caller.caller;
    let expected_version = if_match(&req)?;
    let body = body.0;
    let input = ProblemInput {
        reason: trimmed(body.reason),
        resolution_code: body.resolution_code,
        resolution_notes: body.resolution_notes,
        workaround: body.workaround,
        root_cause: body.root_cause,
        assignee: body.assignee,
        assignment_group: body.assignment_group,
    };
    let relation_of = caller.clone();
    let problem = usecase::transition(
        &state,
        caller,
        id.into_inner(),
        expected_version,
        body.action,
        input,
        body.resolve_linked_incidents,
    )
    .await?;
    Ok(respond_problem(StatusCode::OK, problem, &relation_of))
}

/// Link incidents to the problem, optionally holding them until it is resolved.
#[utoipa::path(
    tag = "problems", operation_id = "link_problem_incidents",
    params(("id" = String, Path)),
    request_body = LinkIncidents,
    responses((status = 200, body = Vec<IncidentView>), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/problems/{id}/incidents")]
pub async fn link_incidents(
    caller: TicketCaller<Problem>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<LinkIncidents>,
) -> ApiResult<HttpResponse> {
    let caller = caller.caller;
    let body = body.0;
    let viewer = caller.clone();
    let linked = usecase::link(
        &state,
        caller,
        id.into_inner(),
        body.incident_ids,
        body.hold_incidents,
    )
    .await?;
    Ok(HttpResponse::Ok().json(incident_bodies(&viewer, linked)))
}

fn incident_bodies(caller: &Caller, incidents: Vec<Incident>) -> Vec<tickets::Body<IncidentView>> {
    incidents
        .into_iter()
        .map(|incident| {
            let relation = relation_without_parent(Access::Staff, caller, &incident);
            tickets::body(incident, Access::Staff, relation)
        })
        .collect()
}

/// The incidents linked to the problem, oldest first.
#[utoipa::path(
    tag = "problems", operation_id = "list_problem_incidents",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<IncidentView>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/problems/{id}/incidents")]
pub async fn list_linked_incidents(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    access::<Problem>(&caller)?;
    let id = id.into_inner();
    let reader = caller.clone();
    let linked = state
        .db
        .read(move |conn| -> ApiResult<Vec<Incident>> {
            let problem = tickets::visible::<Problem>(conn, &id, Access::Staff, &reader)?;
            Ok(persistence::incidents::of_problem(conn, &problem.id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(incident_bodies(&caller, linked)))
}

/// Unlink an incident from the problem; an incident held for it resumes.
#[utoipa::path(
    tag = "problems", operation_id = "unlink_problem_incident",
    params(("id" = String, Path), ("incident_id" = String, Path, description = "Incident id or number")),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/problems/{id}/incidents/{incident_id}")]
pub async fn unlink_incident(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    access::<Problem>(&caller)?;
    let (id, incident_id) = path.into_inner();
    usecase::unlink(&state, caller, id, incident_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Add a work note (internal) or a comment (public) to a problem.
#[utoipa::path(
    tag = "problems", operation_id = "add_problem_note",
    params(("id" = String, Path)),
    request_body = CreateNote,
    responses((status = 201, body = Note), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/problems/{id}/notes")]
pub async fn add_note(
    caller: TicketCaller<Problem>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<CreateNote>,
) -> ApiResult<HttpResponse> {
    tickets::add_note::<Problem>(caller.caller, &state, id.into_inner(), body.0).await
}

/// List a problem's notes, oldest first.
#[utoipa::path(
    tag = "problems", operation_id = "list_problem_notes",
    params(("id" = String, Path), ("visibility" = Option<Visibility>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Note>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/problems/{id}/notes")]
pub async fn list_notes(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    tickets::list_notes::<Problem>(caller, &state, &req, id.into_inner()).await
}

/// The problem's audit trail, newest first.
#[utoipa::path(
    tag = "problems", operation_id = "problem_history",
    params(("id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<AuditEvent>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/problems/{id}/history")]
pub async fn history(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    tickets::history::<Problem>(caller, &state, &req, id.into_inner()).await
}

/// A known error matching a search, with what helps: its workaround and root cause.
#[derive(Debug, Serialize, ToSchema)]
pub struct KnownErrorHit {
    pub id: String,
    #[schema(example = "PRB0000042")]
    pub number: String,
    pub title: String,
    pub state: ProblemState,
    pub workaround: Option<String>,
    pub root_cause: Option<String>,
    pub known_error_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Relevance (BM25): higher is better.
    pub score: f64,
    /// The searched words it contains.
    pub matched_words: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KnownErrorResults {
    pub items: Vec<KnownErrorHit>,
}

fn known_error_results(matches: Vec<problems::KnownErrorMatch>) -> KnownErrorResults {
    KnownErrorResults {
        items: matches
            .into_iter()
            .map(|found| KnownErrorHit {
                id: found.problem.id,
                number: found.problem.number,
                title: found.problem.title,
                state: found.problem.state,
                workaround: found.problem.workaround,
                root_cause: found.problem.root_cause,
                known_error_at: found.problem.known_error_at,
                score: found.score,
                matched_words: found.matched_words,
            })
            .collect(),
    }
}

fn search_limit(params: &QueryParams) -> ApiResult<usize> {
    match params.single("limit")? {
        None => Ok(20),
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be a number from 1 to 100")),
    }
}

/// Find known errors by words of their title, description, root cause or workaround, most
/// relevant first.
#[utoipa::path(
    tag = "problems", operation_id = "search_known_errors",
    params(("q" = String, Query, min_length = 1, max_length = 1000, description = "Words; any of them may match"),
           ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20")),
    responses((status = 200, body = KnownErrorResults), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/known-errors")]
pub async fn search_known_errors(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    access::<Problem>(&caller)?;
    let params = QueryParams::parse(&req, &["q", "limit"])?;
    let q = params
        .text_up_to("q", 1000)?
        .ok_or_else(|| ApiError::invalid("q", "is required"))?;
    let limit = search_limit(&params)?;
    let _search = state.search_slot().await?;
    let found = state
        .db
        .read(move |conn| problems::search_known_errors(conn, &q, limit))
        .await?;
    Ok(HttpResponse::Ok().json(known_error_results(found)))
}

/// Known errors matching an incident's own words, so that an agent finds the workaround for
/// a symptom.
#[utoipa::path(
    tag = "problems", operation_id = "matching_known_errors",
    params(("id" = String, Path, description = "Incident id or number"),
           ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20")),
    responses((status = 200, body = KnownErrorResults), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/incidents/{id}/matching-known-errors")]
pub async fn matching_known_errors(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    access::<Problem>(&caller)?;
    let limit = search_limit(&QueryParams::parse(&req, &["limit"])?)?;
    let id = id.into_inner();
    let _search = state.search_slot().await?;
    let found = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let incident = <Incident as persistence::tickets::TicketTable>::get(conn, &id)
                .map_err(|e| crate::error::not_found_as(e, "incident"))?;
            let text = domain::ticket::Ticket::search_text(&incident);
            Ok(problems::search_known_errors(conn, &text, limit)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(known_error_results(found)))
}

/// The problem's SLA timers, read now: state, due time, elapsed, paused and remaining time.
#[utoipa::path(
    tag = "problems", operation_id = "problem_slas",
    params(("id" = String, Path)),
    responses((status = 200, body = Page<domain::sla_timers::TimerRecord>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/problems/{id}/slas")]
pub async fn slas(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    tickets::timers::<Problem>(caller, &state, &req, id.into_inner()).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(upsert_problem_by_external_ref)
        .service(create_problem)
        .service(list_problems)
        .service(search_known_errors)
        .service(get_problem)
        .service(update_problem)
        .service(transition_problem)
        .service(link_incidents)
        .service(list_linked_incidents)
        .service(unlink_incident)
        .service(add_note)
        .service(list_notes)
        .service(history)
        .service(slas)
        .service(create_from_incident)
        .service(matching_known_errors);
}
