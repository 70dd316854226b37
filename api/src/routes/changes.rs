//! `/api/v1/changes`: change enablement on the ticket kernel. Agents, change managers,
//! integrations and admins work changes; requesters request changes and see only those they
//! requested. Approvers decide their approvals; `/api/v1/me/approvals` lists what waits on them.

use actix_web::http::StatusCode;
use actix_web::{get, patch, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use domain::change::approval::{ChangeApproval, Decision};
use domain::change::schedule::{Conflict, FreezeHit, Window};
use domain::change::{
    Change, ChangeAction, ChangeInput, ChangeOutcome, ChangeRelation, ChangeState, ChangeType,
    RiskAnswers, RiskLevel,
};
use domain::notes::{Note, Visibility};
use domain::ticket::{self, trimmed, Lifecycle};
use domain::{ExternalRef, Role};
use persistence::changes::{self, ChangeFilter};
use persistence::tickets::TicketTable;
use persistence::DbConnection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::feed::AuditEvent;
use crate::auth::Caller;
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{ApiError, ApiResult};
use crate::json_body::{nullable, required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;
use crate::tickets::{
    self, access, enum_filter, visible, Access, CreateNote, ListOrder, TicketApi, TicketCaller,
};
use crate::usecases::changes::{
    self as usecase, ApprovalsView, Calendar, ChangeDraft, ChangePatch, ConflictReport,
    TransitionRequest,
};

/// A change with the actions the caller may take now (and, when it was just scheduled, its
/// conflicts).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeView {
    #[serde(flatten)]
    pub change: Change,
    pub allowed_actions: Vec<ChangeAction>,
    /// After `schedule`: every overlapping change on linked items (a warning; a change manager
    /// acknowledges them with `acknowledge_conflicts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Vec<Conflict>>,
}

impl TicketApi for Change {
    const STAFF: &'static [Role] = usecase::STAFF;
    const REQUESTERS_SEE_OWN: bool = true;
    type View = ChangeView;

    fn view(self, allowed_actions: Vec<ChangeAction>) -> ChangeView {
        ChangeView {
            change: self,
            allowed_actions,
            conflicts: None,
        }
    }

    fn relation(
        _: &mut DbConnection,
        _: Access,
        caller: &Caller,
        change: &Change,
    ) -> ApiResult<ChangeRelation> {
        Ok(usecase::relation(caller, change))
    }
}

fn respond_change(
    status: StatusCode,
    change: Change,
    access: Access,
    caller: &Caller,
) -> HttpResponse {
    let relation = usecase::relation(caller, &change);
    tickets::respond(status, (change, relation), access)
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChange {
    /// Defaults to `normal`; `standard` needs a `template`.
    #[serde(rename = "type")]
    pub change_type: Option<ChangeType>,
    /// The standard change template (id) a standard change comes from.
    pub template: Option<String>,
    /// Required unless the template fixes it.
    #[validate(length(min = 1, max = 200))]
    #[schema(example = "Upgrade the orders database to PostgreSQL 17")]
    pub title: Option<String>,
    #[validate(length(max = 20000))]
    pub description: Option<String>,
    #[validate(length(max = 20000))]
    pub justification: Option<String>,
    #[validate(length(max = 20000))]
    pub implementation_plan: Option<String>,
    #[validate(length(max = 20000))]
    pub backout_plan: Option<String>,
    #[validate(length(max = 20000))]
    pub test_plan: Option<String>,
    /// The risk questionnaire; unanswered questions count as their riskier answer.
    pub risk_answers: Option<RiskAnswers>,
    /// Change managers only, with `risk_override_reason`: a level against the assessment.
    pub risk: Option<RiskLevel>,
    #[validate(length(min = 1, max = 2000))]
    pub risk_override_reason: Option<String>,
    pub planned_start: Option<DateTime<Utc>>,
    /// After `planned_start`, at most 31 days later.
    pub planned_end: Option<DateTime<Utc>>,
    /// Ids of the configuration items the change touches.
    #[serde(default)]
    #[validate(length(max = 50))]
    pub configuration_items: Vec<String>,
    /// Id of the business service affected.
    pub service: Option<String>,
    pub assignment_group: Option<String>,
    /// Needs `assignment_group` (given, or fixed by the template) and must be an active member
    /// of it.
    pub assignee: Option<String>,
    /// Staff may request on someone's behalf (user id); defaults to the caller.
    pub requested_by: Option<String>,
    /// Problem ids or numbers the change fixes.
    #[serde(default)]
    #[validate(length(max = 50))]
    pub fixes_problems: Vec<String>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
}

impl CreateChange {
    fn into_draft(self) -> ApiResult<ChangeDraft> {
        ExternalRef::validate_list(&self.external_refs, "external_refs")?;
        // A template may fix the group; without one the request alone must give it.
        if self.template.is_none() {
            ticket::assignee_has_group(self.assignment_group.as_deref(), self.assignee.as_deref())?;
        }
        Ok(ChangeDraft {
            change_type: self.change_type.unwrap_or(ChangeType::Normal),
            template: self.template,
            title: self.title,
            description: self.description,
            justification: trimmed(self.justification),
            implementation_plan: trimmed(self.implementation_plan),
            backout_plan: trimmed(self.backout_plan),
            test_plan: trimmed(self.test_plan),
            risk_answers: self.risk_answers,
            risk: self.risk,
            risk_override_reason: trimmed(self.risk_override_reason),
            planned_start: self.planned_start,
            planned_end: self.planned_end,
            configuration_items: self.configuration_items,
            service: self.service,
            assignment_group: self.assignment_group,
            assignee: self.assignee,
            requested_by: self.requested_by,
            fixes_problems: self.fixes_problems,
            external_refs: self.external_refs,
        })
    }
}

/// A merge patch of a change. State, approvals, actual times and outcome change only through
/// transitions; `risk_assessment` is computed.
#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChange {
    #[validate(length(min = 1, max = 200))]
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub title: Option<String>,
    #[validate(length(max = 20000))]
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(max = 20000))]
    #[schema(value_type = Option<String>)]
    pub justification: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(max = 20000))]
    #[schema(value_type = Option<String>)]
    pub implementation_plan: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(max = 20000))]
    #[schema(value_type = Option<String>)]
    pub backout_plan: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(max = 20000))]
    #[schema(value_type = Option<String>)]
    pub test_plan: Option<Option<String>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub risk_answers: Option<RiskAnswers>,
    /// Change managers only, with `risk_override_reason`.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub risk: Option<RiskLevel>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(min = 1, max = 2000))]
    pub risk_override_reason: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub planned_start: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub planned_end: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(max = 50))]
    pub configuration_items: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub service: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub assignment_group: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub assignee: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[validate(length(max = 20000))]
    #[schema(value_type = Option<String>)]
    pub review_notes: Option<Option<String>>,
    /// Incident ids or numbers a failed or backed-out change caused.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(max = 100))]
    pub caused_incidents: Option<Vec<String>>,
    /// Problem ids or numbers the change fixes.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(max = 50))]
    pub fixes_problems: Option<Vec<String>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub external_refs: Option<Vec<ExternalRef>>,
    /// With planned times, items or a service that move an emergency change asking for
    /// authorisation or scheduled into a freeze: why it may enter (audited,
    /// `change.freeze_overridden`), as with `schedule`.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[validate(length(min = 1, max = 2000))]
    pub override_reason: Option<String>,
}

impl UpdateChange {
    fn into_patch(self) -> ApiResult<ChangePatch> {
        if let Some(refs) = &self.external_refs {
            ExternalRef::validate_list(refs, "external_refs")?;
        }
        if self.title.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ApiError::invalid("title", "must not be blank"));
        }
        Ok(ChangePatch {
            title: self.title,
            description: self.description,
            justification: self.justification,
            implementation_plan: self.implementation_plan,
            backout_plan: self.backout_plan,
            test_plan: self.test_plan,
            risk_answers: self.risk_answers,
            risk: self.risk,
            risk_override_reason: trimmed(self.risk_override_reason),
            planned_start: self.planned_start,
            planned_end: self.planned_end,
            configuration_items: self.configuration_items,
            service: self.service,
            assignment_group: self.assignment_group,
            assignee: self.assignee,
            review_notes: self.review_notes,
            caused_incidents: self.caused_incidents,
            fixes_problems: self.fixes_problems,
            external_refs: self.external_refs,
            override_reason: trimmed(self.override_reason),
        })
    }
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeTransitionRequest {
    pub action: ChangeAction,
    /// Required by `cancel`.
    #[validate(length(max = 2000))]
    pub reason: Option<String>,
    /// With `implement`: when work started (default now).
    pub actual_start: Option<DateTime<Utc>>,
    /// Required by `review` unless set.
    pub actual_end: Option<DateTime<Utc>>,
    /// Required by `review`.
    pub outcome: Option<ChangeOutcome>,
    /// Required by `close` unless set.
    #[validate(length(max = 20000))]
    pub review_notes: Option<String>,
    /// With `review` of a change that did not fully succeed: incident ids or numbers it caused.
    #[validate(length(max = 100))]
    pub caused_incidents: Option<Vec<String>>,
    /// Required by `assign`.
    pub assignee: Option<String>,
    /// With `assign`: move to this group as well.
    pub assignment_group: Option<String>,
    /// With `request_authorization` or `schedule` of an emergency change whose window hits a
    /// freeze: why it may enter (audited, `change.freeze_overridden`).
    #[validate(length(min = 1, max = 2000))]
    pub override_reason: Option<String>,
    /// With `schedule`: a change manager acknowledges the conflicts listed
    /// (`change.conflict_acknowledged`).
    #[serde(default)]
    pub acknowledge_conflicts: bool,
}

/// Request a change.
#[utoipa::path(
    tag = "changes", operation_id = "create_change",
    request_body = CreateChange,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retry")),
    responses((status = 201, body = ChangeView, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/changes")]
pub async fn create_change(
    caller: TicketCaller<Change>,
    state: web::Data<AppState>,
    body: ValidJson<CreateChange>,
) -> ApiResult<HttpResponse> {
    let (caller, access) = (caller.caller, caller.access);
    let draft = body.0.into_draft()?;
    let viewer = caller.clone();
    let change = usecase::create(&state, caller, draft).await?;
    let location = format!("/api/v1/changes/{}", change.number);
    let version = change.version;
    let relation = usecase::relation(&viewer, &change);
    Ok(created(
        location,
        version,
        &tickets::body(change, access, relation),
    ))
}

/// List changes; requesters see those they requested.
#[utoipa::path(
    tag = "changes", operation_id = "list_changes",
    params(
        ("state" = Option<Vec<ChangeState>>, Query, description = "Repeatable"),
        ("type" = Option<Vec<ChangeType>>, Query, description = "Repeatable"),
        ("risk" = Option<Vec<RiskLevel>>, Query, description = "Repeatable"),
        ("assignment_group" = Option<String>, Query), ("assignee" = Option<String>, Query),
        ("requested_by" = Option<String>, Query),
        ("configuration_item" = Option<String>, Query, description = "Changes touching this configuration item (id)"),
        ("service" = Option<String>, Query, description = "Changes affecting this business service (id)"),
        ("created_after" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("created_before" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("q" = Option<String>, Query, description = "Words that must all appear in title or description"),
        ("sort" = Option<String>, Query, description = "created_at or updated_at; prefix - for descending; default -created_at"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<ChangeView>), (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/changes")]
pub async fn list_changes(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let access = access::<Change>(&caller)?;
    let filters = [
        "state",
        "type",
        "risk",
        "assignment_group",
        "assignee",
        "requested_by",
        "configuration_item",
        "service",
        "created_after",
        "created_before",
        "q",
        "sort",
    ];
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &filters].concat())?;
    let mut filter = ChangeFilter {
        states: enum_filter(&params, "state", &ChangeState::names())?,
        types: enum_filter(&params, "type", &ChangeType::names())?,
        risks: enum_filter(&params, "risk", &RiskLevel::names())?,
        assignment_group: params.text("assignment_group")?,
        assignee: params.text("assignee")?,
        requested_by: params.text("requested_by")?,
        configuration_item: params.text("configuration_item")?,
        service: params.text("service")?,
        created_after: params.timestamp("created_after")?.map(|t| t.naive_utc()),
        created_before: params.timestamp("created_before")?.map(|t| t.naive_utc()),
        q: params.text("q")?,
    };
    if access == Access::Requester {
        if filter
            .requested_by
            .as_ref()
            .is_some_and(|r| *r != caller.id)
        {
            return Ok(Page::<ChangeView> {
                items: Vec::new(),
                next_cursor: None,
            }
            .respond(&req));
        }
        filter.requested_by = Some(caller.id.clone());
    }
    let order = ListOrder::parse(&params)?;
    if order.sort.field == persistence::tickets::SortField::Priority {
        return Err(ApiError::invalid(
            "sort",
            "changes sort by created_at or updated_at, optionally prefixed with -",
        ));
    }
    let (sort, after, limit) = (order.sort, order.after.clone(), order.limit);
    let _search = match filter.q {
        Some(_) => Some(state.search_slot().await?),
        None => None,
    };
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            changes::list(conn, &filter, sort, after.as_ref(), limit).map_err(tickets::cursor_error)
        })
        .await?;
    let slice = persistence::Slice {
        items: slice
            .items
            .into_iter()
            .map(|c| {
                let relation = usecase::relation(&caller, &c);
                (c, relation)
            })
            .collect(),
        more: slice.more,
    };
    Ok(order
        .page(slice)
        .map(|(change, relation)| tickets::body(change, access, relation))
        .respond(&req))
}

/// Get a change by id or number.
#[utoipa::path(
    tag = "changes", operation_id = "get_change",
    params(("id" = String, Path, description = "Id or number (CHG0000042)")),
    responses((status = 200, body = ChangeView, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/changes/{id}")]
pub async fn get_change(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let access = access::<Change>(&caller)?;
    let change = state
        .db
        .look_up(&state.change_lookups, id.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("change"))?;
    let change = tickets::shown_to(change, access, &caller)?;
    Ok(respond_change(StatusCode::OK, change, access, &caller))
}

/// Change a change's details (JSON merge patch). Staff only.
#[utoipa::path(
    tag = "changes", operation_id = "update_change",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UpdateChange, content_type = "application/merge-patch+json"),
    responses((status = 200, body = ChangeView, headers(("ETag" = String))), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/changes/{id}")]
pub async fn update_change(
    caller: TicketCaller<Change>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateChange>,
) -> ApiResult<HttpResponse> {
    let (caller, access) = (caller.caller, caller.access);
    let expected_version = if_match(&req)?;
    let patch = body.0.into_patch()?;
    let viewer = caller.clone();
    let change = usecase::update(&state, caller, id.into_inner(), expected_version, patch).await?;
    Ok(respond_change(StatusCode::OK, change, access, &viewer))
}

/// Take an action: assess, request_authorization, schedule, implement, review, close, cancel,
/// assign. `request_authorization` and `schedule` need the change's planned window (set by
/// PATCH): without one the change is in no state to take them (409).
#[utoipa::path(
    tag = "changes", operation_id = "transition_change",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = ChangeTransitionRequest,
    responses((status = 200, body = ChangeView, headers(("ETag" = String))), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 409, description = "Not allowed now (lists allowed_actions), or a freeze (lists freeze_windows)", body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/changes/{id}/transitions")]
pub async fn transition_change(
    caller: TicketCaller<Change>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<ChangeTransitionRequest>,
) -> ApiResult<HttpResponse> {
    let (caller, access) = (caller.caller, caller.access);
    let expected_version = if_match(&req)?;
    let body = body.0;
    let input = ChangeInput {
        reason: trimmed(body.reason),
        actual_start: body.actual_start,
        actual_end: body.actual_end,
        outcome: body.outcome,
        review_notes: body.review_notes,
        caused_incidents: body.caused_incidents,
        assignee: body.assignee,
        assignment_group: body.assignment_group,
    };
    let request = TransitionRequest {
        action: body.action,
        input,
        override_reason: trimmed(body.override_reason),
        acknowledge_conflicts: body.acknowledge_conflicts,
    };
    let viewer = caller.clone();
    let done = usecase::transition(
        &state,
        caller,
        access,
        id.into_inner(),
        expected_version,
        request,
    )
    .await?;
    let relation = usecase::relation(&viewer, &done.change);
    let version = done.change.version;
    let view = ChangeView {
        allowed_actions: done.change.allowed_actions(relation),
        change: done.change,
        conflicts: done.conflicts,
    };
    Ok(with_etag(StatusCode::OK, version, &view))
}

/// Add a work note (internal) or a comment (public) to a change.
#[utoipa::path(
    tag = "changes", operation_id = "add_change_note",
    params(("id" = String, Path)),
    request_body = CreateNote,
    responses((status = 201, body = Note), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/changes/{id}/notes")]
pub async fn add_note(
    caller: TicketCaller<Change>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<CreateNote>,
) -> ApiResult<HttpResponse> {
    tickets::add_note::<Change>(caller.caller, &state, id.into_inner(), body.0).await
}

/// List a change's notes, oldest first.
#[utoipa::path(
    tag = "changes", operation_id = "list_change_notes",
    params(("id" = String, Path), ("visibility" = Option<Visibility>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Note>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/changes/{id}/notes")]
pub async fn list_notes(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    tickets::list_notes::<Change>(caller, &state, &req, id.into_inner()).await
}

/// The change's audit trail, newest first.
#[utoipa::path(
    tag = "changes", operation_id = "change_history",
    params(("id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<AuditEvent>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/changes/{id}/history")]
pub async fn history(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    tickets::history::<Change>(caller, &state, &req, id.into_inner()).await
}

/// The approvals of every authorisation round of a change.
#[utoipa::path(
    tag = "changes", operation_id = "list_change_approvals",
    params(("id" = String, Path)),
    responses((status = 200, body = ApprovalsView), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/changes/{id}/approvals")]
pub async fn list_approvals(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let access = access::<Change>(&caller)?;
    let id = id.into_inner();
    let view = state
        .db
        .read(move |conn| -> ApiResult<ApprovalsView> {
            let change = visible::<Change>(conn, &id, access, &caller)?;
            usecase::approvals_view(conn, &change)
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
    /// Required to reject.
    #[validate(length(max = 2000))]
    pub comment: Option<String>,
}

/// A decision and the change after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResult {
    pub approval: ChangeApproval,
    pub change: ChangeView,
    /// When the quorum was reached but the planned window hits a freeze: the windows, each
    /// with the items concerned. The change stays in `authorize`, authorised, until `schedule`
    /// finds its window clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by_freeze: Option<Vec<FreezeHit>>,
}

/// Approve or reject: the named approver only, once. Any rejection returns the change to
/// `new`; the quorum authorises it and moves it on (a change it schedules comes back with its
/// conflicts).
#[utoipa::path(
    tag = "changes", operation_id = "decide_change_approval",
    params(("id" = String, Path), ("approval_id" = String, Path)),
    request_body = DecisionRequest,
    responses((status = 200, body = DecisionResult), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/changes/{id}/approvals/{approval_id}/decision")]
pub async fn decide_approval(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: ValidJson<DecisionRequest>,
) -> ApiResult<HttpResponse> {
    let (id, approval_id) = path.into_inner();
    let body = body.0;
    let viewer = caller.clone();
    let decided =
        usecase::decide(&state, caller, id, approval_id, body.decision, body.comment).await?;
    let relation = usecase::relation(&viewer, &decided.change);
    Ok(HttpResponse::Ok().json(DecisionResult {
        approval: decided.approval,
        change: ChangeView {
            allowed_actions: decided.change.allowed_actions(relation),
            change: decided.change,
            conflicts: decided.conflicts,
        },
        held_by_freeze: decided.held_by_freeze,
    }))
}

/// Every other scheduled or implementing change overlapping this one on linked items (with the
/// CMDB path that links them), and every freeze window its planned window hits.
#[utoipa::path(
    tag = "changes", operation_id = "change_conflicts",
    params(("id" = String, Path)),
    responses((status = 200, body = ConflictReport), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/changes/{id}/conflicts")]
pub async fn conflicts(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let access = access::<Change>(&caller)?;
    let id = id.into_inner();
    let graphs = state.db.graphs();
    let report = state
        .db
        .read(move |conn| -> ApiResult<ConflictReport> {
            let change = visible::<Change>(conn, &id, access, &caller)?;
            usecase::analyse(conn, &graphs, &change)
        })
        .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// The longest range the calendar answers.
const CALENDAR_MAX_DAYS: i64 = 366;

/// Changes planned and freeze windows in a range. Staff and integrations.
#[utoipa::path(
    tag = "changes", operation_id = "change_calendar",
    params(("from" = String, Query, description = "RFC 3339"), ("to" = String, Query, description = "RFC 3339; the answer covers at most 366 days from `from`"),
           ("configuration_item" = Option<String>, Query), ("service" = Option<String>, Query, description = "Changes on the service or any item it depends on")),
    responses((status = 200, body = Calendar), (status = 403, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/changes/calendar")]
pub async fn calendar(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    if access::<Change>(&caller)? != Access::Staff {
        return Err(ApiError::Forbidden(
            "the change calendar is for staff".into(),
        ));
    }
    let params = QueryParams::parse(&req, &["from", "to", "configuration_item", "service"])?;
    let from = params
        .timestamp("from")?
        .ok_or_else(|| ApiError::invalid("from", "is required"))?;
    let to = params
        .timestamp("to")?
        .ok_or_else(|| ApiError::invalid("to", "is required"))?;
    // An empty or inverted period holds nothing; a longer one than a calendar covers is cut
    // at its first CALENDAR_MAX_DAYS days, and the answer's `to` says where it stopped.
    if to <= from {
        return Ok(HttpResponse::Ok().json(usecase::Calendar {
            from,
            to,
            changes: Vec::new(),
            freeze_windows: Vec::new(),
        }));
    }
    let to = to.min(from + chrono::Duration::days(CALENDAR_MAX_DAYS));
    let window = Window {
        start: from,
        end: to,
    };
    let item = params.text("configuration_item")?;
    let service = params.text("service")?;
    let graphs = state.db.graphs();
    let calendar = state
        .db
        .read(move |conn| {
            usecase::calendar(conn, &graphs, window, item.as_deref(), service.as_deref())
        })
        .await?;
    Ok(HttpResponse::Ok().json(calendar))
}

/// A pending approval with the change it is for.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingApproval {
    #[serde(flatten)]
    pub approval: ChangeApproval,
    #[schema(example = "CHG0000042")]
    pub change_number: String,
    pub change_title: String,
    pub change_type: ChangeType,
    pub risk: RiskLevel,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
}

/// What waits on the caller's decision, oldest first.
#[utoipa::path(
    tag = "changes", operation_id = "my_approvals",
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<PendingApproval>)),
)]
#[get("/api/v1/me/approvals")]
pub async fn my_approvals(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = QueryParams::parse(&req, &PAGE_PARAMS)?.page::<String>()?;
    let user = caller.id.clone();
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let pending = changes::pending_for(conn, &user, page.cursor.as_deref(), page.limit)?;
            let keys: Vec<String> = pending.items.iter().map(|a| a.change_id.clone()).collect();
            let found = Change::get_many(conn, &keys)?;
            let items = pending
                .items
                .into_iter()
                .filter_map(|approval| {
                    let change = found.iter().find(|c| c.id == approval.change_id)?;
                    Some(PendingApproval {
                        change_number: change.number.clone(),
                        change_title: change.title.clone(),
                        change_type: change.change_type,
                        risk: change.risk,
                        planned_start: change.planned_start,
                        planned_end: change.planned_end,
                        approval,
                    })
                })
                .collect();
            Ok(persistence::Slice {
                items,
                more: pending.more,
            })
        })
        .await?;
    Ok(Page::from_slice(slice, |p| p.approval.id.clone()).respond(&req))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_change)
        .service(list_changes)
        .service(calendar)
        .service(get_change)
        .service(update_change)
        .service(transition_change)
        .service(add_note)
        .service(list_notes)
        .service(history)
        .service(list_approvals)
        .service(decide_approval)
        .service(conflicts)
        .service(my_approvals);
}
