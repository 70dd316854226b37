//! Change enablement: recording changes with their risk, asking for authorisation, deciding
//! approvals, scheduling against freezes and conflicts, and linking what a change fixes or
//! caused, each in one unit of work.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use domain::change::approval::{
    self, choose_policy, ApprovalState, Approver, ChangeApproval, Decision, DecisionError,
    RoundOutcome,
};
use domain::change::risk::{self, RiskFacts};
use domain::change::schedule::{
    self, check_freeze, Conflict, Dependants, FreezeHit, FreezeOutcome, Reach, Window,
};
use domain::change::{
    Change, ChangeAction, ChangeInput, ChangeRelation, ChangeState, ChangeType, NewChange,
    RiskAnswers, RiskAssessment, RiskLevel, StandardChangeTemplate,
};
use domain::cmdb::impact::{Direction, MAX_DEPTH};
use domain::cmdb::item::Criticality;
use domain::incident::Incident;
use domain::problem::Problem;
use domain::ticket::Lifecycle;
use domain::{ExternalRef, FieldError, Role};
use persistence::cmdb::graph::GraphCache;
use persistence::tickets::{self, TicketTable};
use persistence::{changes, cmdb, groups, users, DbConnection, StoreError, WriteContext};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{check_active_user, check_assignment, check_cmdb_links};
use crate::auth::{Caller, CallerKind};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tickets::{check_not_final, visible, Access};

/// The roles that work changes besides admins.
pub const STAFF: &[Role] = &[Role::Agent, Role::ChangeManager, Role::Integration];

/// How failed changes on the same items count towards risk: those that ended this recently.
const RECENT_FAILURES_DAYS: i64 = 90;
/// The most items a CMDB walk from one of a change's items reaches.
const WALK_LIMIT: usize = 10_000;

pub fn manages(caller: &Caller) -> bool {
    caller.has_any(&[Role::ChangeManager])
}

/// How the caller relates to `change`.
pub fn relation(caller: &Caller, change: &Change) -> ChangeRelation {
    ChangeRelation {
        staff: caller.has_any(STAFF),
        manages: manages(caller),
        requested: change.requested_by == caller.id,
    }
}

/// The node's copy of the CMDB graph, which walks use when it is current.
pub type Graphs = std::sync::Arc<GraphCache>;

/// The business services above an item, reached walking up the CMDB.
fn services_above(
    conn: &mut DbConnection,
    graphs: &Graphs,
    item: &str,
) -> ApiResult<Vec<(String, Option<Criticality>)>> {
    let walk = cmdb::relationships::impact(
        conn,
        graphs,
        item,
        Direction::Upstream,
        MAX_DEPTH,
        &[],
        WALK_LIMIT,
    )?;
    Ok(walk
        .business_services
        .into_iter()
        .map(|s| (s.id, s.criticality))
        .collect())
}

/// What the CMDB and past changes say about a change's items, for its risk.
fn risk_facts(
    conn: &mut DbConnection,
    graphs: &Graphs,
    items: &[String],
    service: Option<&str>,
    backout_plan: bool,
    now: DateTime<Utc>,
) -> ApiResult<RiskFacts> {
    let mut item_criticality: Option<Criticality> = None;
    let mut services: BTreeMap<String, Option<Criticality>> = BTreeMap::new();
    for id in items {
        let item = cmdb::items::get(conn, id)?;
        item_criticality = highest(item_criticality, item.criticality);
        for (service, criticality) in services_above(conn, graphs, id)? {
            services.insert(service, criticality);
        }
    }
    if let Some(service) = service {
        let item = cmdb::items::get(conn, service)?;
        services.insert(item.id, item.criticality);
    }
    let service_criticality = services.values().copied().fold(None, highest);
    let since = (now - Duration::days(RECENT_FAILURES_DAYS)).naive_utc();
    Ok(RiskFacts {
        item_count: items.len(),
        item_criticality,
        service_count: services.len(),
        service_criticality,
        backout_plan,
        recent_failed_changes: changes::recent_failures(conn, items, since)?,
    })
}

/// The more critical of two (`Critical` orders first).
fn highest(a: Option<Criticality>, b: Option<Criticality>) -> Option<Criticality> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn assess(
    conn: &mut DbConnection,
    graphs: &Graphs,
    answers: &RiskAnswers,
    items: &[String],
    service: Option<&str>,
    backout_plan: bool,
    now: DateTime<Utc>,
) -> ApiResult<RiskAssessment> {
    let facts = risk_facts(conn, graphs, items, service, backout_plan, now)?;
    Ok(risk::assess(answers, &facts))
}

/// Problem ids of `keys` (ids or numbers), each existing and not fixed by another change.
fn resolve_problems(
    conn: &mut DbConnection,
    keys: &[String],
    change_id: Option<&str>,
) -> ApiResult<Vec<String>> {
    let mut ids = Vec::with_capacity(keys.len());
    let mut errors = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let field = format!("fixes_problems[{index}]");
        match Problem::get(conn, key) {
            Ok(problem) if ids.contains(&problem.id) => {
                errors.push(FieldError::new(field, "is listed twice"))
            }
            Ok(problem) => match &problem.fix_change_id {
                Some(other) if Some(other.as_str()) != change_id => errors.push(FieldError::new(
                    field,
                    format!("{} is fixed by another change", problem.number),
                )),
                _ => ids.push(problem.id),
            },
            Err(StoreError::NotFound) => errors.push(FieldError::unknown(field, "problem")),
            Err(other) => return Err(other.into()),
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Incident ids of `keys` (ids or numbers), each existing.
fn resolve_incidents(conn: &mut DbConnection, keys: &[String]) -> ApiResult<Vec<String>> {
    let mut ids: Vec<String> = Vec::with_capacity(keys.len());
    let mut errors = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let field = format!("caused_incidents[{index}]");
        match Incident::get(conn, key) {
            Ok(incident) if ids.contains(&incident.id) => {
                errors.push(FieldError::new(field, "is listed twice"))
            }
            Ok(incident) => ids.push(incident.id),
            Err(StoreError::NotFound) => errors.push(FieldError::unknown(field, "incident")),
            Err(other) => return Err(other.into()),
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Points the problems a change fixes at it, and releases those it no longer lists.
fn link_problems(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    change: &Change,
    before: &[String],
) -> ApiResult<()> {
    for id in before
        .iter()
        .filter(|id| !change.fixes_problems.contains(id))
    {
        let problem = Problem::get(conn, id)?;
        let mut after = problem.clone();
        after.fix_change_id = None;
        tickets::save(
            conn,
            ctx,
            &problem,
            &after,
            tickets::Change::action("unlink_fix_change"),
        )?;
    }
    for id in change
        .fixes_problems
        .iter()
        .filter(|id| !before.contains(id))
    {
        let problem = Problem::get(conn, id)?;
        let mut after = problem.clone();
        after.fix_change_id = Some(change.id.clone());
        tickets::save(
            conn,
            ctx,
            &problem,
            &after,
            tickets::Change::action("link_fix_change"),
        )?;
    }
    Ok(())
}

/// A change as a client gives it, before references are checked.
#[derive(Debug, Clone)]
pub struct ChangeDraft {
    pub change_type: ChangeType,
    pub template: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub justification: Option<String>,
    pub implementation_plan: Option<String>,
    pub backout_plan: Option<String>,
    pub test_plan: Option<String>,
    pub risk_answers: Option<RiskAnswers>,
    pub risk: Option<RiskLevel>,
    pub risk_override_reason: Option<String>,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    pub configuration_items: Vec<String>,
    pub service: Option<String>,
    pub assignment_group: Option<String>,
    pub assignee: Option<String>,
    pub requested_by: Option<String>,
    pub fixes_problems: Vec<String>,
    pub external_refs: Vec<ExternalRef>,
}

/// A level against the assessment needs a change manager and a reason.
fn risk_override(
    caller: &Caller,
    risk: Option<RiskLevel>,
    reason: Option<String>,
) -> ApiResult<Option<(RiskLevel, String)>> {
    match (risk, reason) {
        (None, None) => Ok(None),
        (Some(_), _) if !manages(caller) => Err(ApiError::Forbidden(
            "only a change manager overrides the risk level".into(),
        )),
        (Some(level), Some(reason)) => Ok(Some((level, reason))),
        (Some(_), None) => Err(ApiError::invalid(
            "risk_override_reason",
            "is required to override the risk level",
        )),
        (None, Some(_)) => Err(ApiError::invalid(
            "risk",
            "is required with risk_override_reason",
        )),
    }
}

/// Fills a standard change from its template: the template's fields, and nothing set by the
/// client that the template fixes.
fn apply_template(draft: &mut ChangeDraft, template: &StandardChangeTemplate) -> ApiResult<()> {
    if !template.active {
        return Err(ApiError::invalid("template", "the template is not active"));
    }
    let fields = &template.fields;
    let mut errors = Vec::new();
    macro_rules! fix {
        ($name:ident) => {
            if let Some(value) = &fields.$name {
                if draft.$name.as_ref().is_some_and(|given| given != value) {
                    errors.push(FieldError::new(
                        stringify!($name),
                        "is fixed by the template",
                    ));
                }
                draft.$name = Some(value.clone());
            }
        };
    }
    fix!(title);
    fix!(description);
    fix!(justification);
    fix!(implementation_plan);
    fix!(backout_plan);
    fix!(test_plan);
    fix!(assignment_group);
    fix!(risk_answers);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Records a new change: standard changes from an active template and inside its bounds.
pub async fn create(state: &AppState, caller: Caller, given: ChangeDraft) -> ApiResult<Change> {
    let ctx = caller.write_context();
    let staff = caller.has_any(STAFF);
    let requested_by = match (&given.requested_by, staff, caller.kind) {
        (Some(_), false, _) => {
            return Err(ApiError::Forbidden(
                "requesters request changes for themselves only".into(),
            ))
        }
        (Some(user), true, _) => user.clone(),
        (None, _, CallerKind::User) => caller.id.clone(),
        (None, _, CallerKind::ApiToken) => {
            return Err(ApiError::invalid(
                "requested_by",
                "is required when an API token creates a change",
            ))
        }
    };
    let override_level = risk_override(&caller, given.risk, given.risk_override_reason.clone())?;
    if !staff && (given.assignee.is_some() || given.assignment_group.is_some()) {
        return Err(ApiError::Forbidden(
            "requesters do not assign changes".into(),
        ));
    }
    let now = ctx.at.and_utc();
    // Linking problems updates them: only then is the unit more than new rows.
    let updates_rows = !given.fixes_problems.is_empty();
    let graphs = state.db.graphs();
    let unit = move |conn: &mut DbConnection| -> ApiResult<Change> {
        let mut draft = given.clone();
        let template = match (&draft.template, draft.change_type) {
            (Some(id), ChangeType::Standard) => {
                Some(changes::template(conn, id).map_err(|e| {
                    crate::error::unknown_reference(e, "template", "no such template")
                })?)
            }
            (None, ChangeType::Standard) => {
                return Err(ApiError::invalid(
                    "template",
                    "is required for a standard change",
                ))
            }
            (Some(_), _) => {
                return Err(ApiError::invalid(
                    "template",
                    "only standard changes come from a template",
                ))
            }
            (None, _) => None,
        };
        // The stored template bounds what the change may be: a request outside it conflicts
        // with the template (409), it is not malformed.
        if let Some(template) = &template {
            apply_template(&mut draft, template).map_err(against_stored)?;
        }
        let title = draft
            .title
            .clone()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::invalid("title", "must not be blank"))?;
        Window::of(
            draft.planned_start,
            draft.planned_end,
            "planned_start",
            "planned_end",
        )?;
        check_window_length(draft.planned_start, draft.planned_end)?;
        check_active_user(conn, &requested_by, "requested_by")?;
        check_assignment(
            conn,
            draft.assignment_group.as_deref(),
            draft.assignee.as_deref(),
        )?;
        check_cmdb_links(
            conn,
            &draft.configuration_items,
            draft.service.as_deref(),
            None,
        )?;
        let fixes_problems = resolve_problems(conn, &draft.fixes_problems, None)?;
        let answers = draft.risk_answers.clone().unwrap_or_default();
        let assessment = assess(
            conn,
            &graphs,
            &answers,
            &draft.configuration_items,
            draft.service.as_deref(),
            draft.backout_plan.is_some(),
            now,
        )?;
        if let Some(template) = &template {
            let level = override_level.as_ref().map_or(assessment.level, |o| o.0);
            schedule::check_template_bounds(
                &template.configuration_items,
                template.risk_cap,
                &draft.configuration_items,
                level,
            )
            .map_err(|e| against_stored(e.into()))?;
        }
        let new = NewChange {
            change_type: draft.change_type,
            title,
            description: draft.description.clone().unwrap_or_default(),
            justification: draft.justification.clone(),
            implementation_plan: draft.implementation_plan.clone(),
            backout_plan: draft.backout_plan.clone(),
            test_plan: draft.test_plan.clone(),
            risk_answers: answers,
            risk_assessment: assessment,
            risk_override: override_level.clone(),
            planned_start: draft.planned_start,
            planned_end: draft.planned_end,
            configuration_items: draft.configuration_items.clone(),
            service: draft.service.clone(),
            assignment_group: draft.assignment_group.clone(),
            assignee: draft.assignee.clone(),
            requested_by: requested_by.clone(),
            template: template.map(|t| t.id),
            fixes_problems,
            external_refs: draft.external_refs.clone(),
        };
        let change = changes::create(conn, &ctx, new)?;
        link_problems(conn, &ctx, &change, &[])?;
        Ok(change)
    };
    if updates_rows {
        state.db.write(unit).await
    } else {
        state.db.write_new_rows(unit).await
    }
}

/// A planned window lasts at most [`changes::MAX_WINDOW_DAYS`].
fn check_window_length(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> ApiResult<()> {
    if let (Some(start), Some(end)) = (start, end) {
        if end - start > Duration::days(changes::MAX_WINDOW_DAYS) {
            return Err(ApiError::invalid(
                "planned_end",
                format!(
                    "a planned window lasts at most {} days",
                    changes::MAX_WINDOW_DAYS
                ),
            ));
        }
    }
    Ok(())
}

/// A refusal that a field earns only against what is stored (a bound against the other stored
/// bound, a field the change's template fixes): the request conflicts with the change as it
/// is (409), naming the fields in its detail.
fn against_stored(error: ApiError) -> ApiError {
    match error {
        ApiError::Invalid { errors, .. } => ApiError::Conflict(
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => other,
    }
}

/// The fields of a merge patch of a change: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ChangePatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub justification: Option<Option<String>>,
    pub implementation_plan: Option<Option<String>>,
    pub backout_plan: Option<Option<String>>,
    pub test_plan: Option<Option<String>>,
    pub risk_answers: Option<RiskAnswers>,
    pub risk: Option<RiskLevel>,
    pub risk_override_reason: Option<String>,
    pub planned_start: Option<Option<DateTime<Utc>>>,
    pub planned_end: Option<Option<DateTime<Utc>>>,
    pub configuration_items: Option<Vec<String>>,
    pub service: Option<Option<String>>,
    pub assignment_group: Option<Option<String>>,
    pub assignee: Option<Option<String>>,
    pub review_notes: Option<Option<String>>,
    pub caused_incidents: Option<Vec<String>>,
    pub fixes_problems: Option<Vec<String>>,
    pub external_refs: Option<Vec<ExternalRef>>,
    /// Lets an emergency change's planned window, items or service move into a freeze.
    pub override_reason: Option<String>,
}

/// Changes a change's details: staff only, never a closed or canceled change. A planned window
/// moved into a freeze is refused like scheduling into one, and an emergency change enters
/// with `override_reason` as it would on `schedule` (audited, `change.freeze_overridden`).
pub async fn update(
    state: &AppState,
    caller: Caller,
    id: String,
    expected_version: Option<i64>,
    patch: ChangePatch,
) -> ApiResult<Change> {
    if !caller.has_any(STAFF) {
        return Err(ApiError::Forbidden(
            "changes are edited by agents, change managers and admins".into(),
        ));
    }
    let override_level = risk_override(&caller, patch.risk, patch.risk_override_reason.clone())?;
    // A window the patch gives whole is checked as the patch's own content (422); one that
    // mixes a given bound with the stored other is checked against the change below (409).
    if let (Some(start), Some(end)) = (patch.planned_start, patch.planned_end) {
        Window::of(start, end, "planned_start", "planned_end")?;
        check_window_length(start, end)?;
    }
    let ctx = caller.write_context();
    let now = ctx.at.and_utc();
    let graphs = state.db.graphs();
    state
        .db
        .write(move |conn| -> ApiResult<Change> {
            let before = visible::<Change>(conn, &id, Access::Staff, &caller)?;
            persistence::check_version(expected_version, before.version)?;
            check_not_final(&before)?;
            let mut after = before.clone();
            if let Some(template) = &before.template {
                let template = changes::template(conn, template)?;
                let fixed = template.fields.fixed();
                let touched: Vec<FieldError> = [
                    ("title", patch.title.is_some()),
                    ("description", patch.description.is_some()),
                    ("justification", patch.justification.is_some()),
                    ("implementation_plan", patch.implementation_plan.is_some()),
                    ("backout_plan", patch.backout_plan.is_some()),
                    ("test_plan", patch.test_plan.is_some()),
                    ("assignment_group", patch.assignment_group.is_some()),
                    ("risk_answers", patch.risk_answers.is_some()),
                ]
                .into_iter()
                .filter(|(name, set)| *set && fixed.contains(name))
                .map(|(name, _)| FieldError::new(name, "is fixed by the template"))
                .collect();
                if !touched.is_empty() {
                    return Err(against_stored(ApiError::from_field_errors(touched)));
                }
            }
            if let Some(title) = patch.title {
                after.title = title.trim().to_owned();
            }
            if let Some(description) = patch.description {
                after.description = description;
            }
            for (field, value) in [
                (&mut after.justification, patch.justification),
                (&mut after.implementation_plan, patch.implementation_plan),
                (&mut after.backout_plan, patch.backout_plan),
                (&mut after.test_plan, patch.test_plan),
                (&mut after.review_notes, patch.review_notes),
            ] {
                if let Some(value) = value {
                    *field = domain::ticket::trimmed(value);
                }
            }
            if let Some(answers) = patch.risk_answers {
                after.risk_answers = answers;
            }
            if let Some(start) = patch.planned_start {
                after.planned_start = start;
            }
            if let Some(end) = patch.planned_end {
                after.planned_end = end;
            }
            Window::of(
                after.planned_start,
                after.planned_end,
                "planned_start",
                "planned_end",
            )
            .map_err(|e| against_stored(e.into()))?;
            check_window_length(after.planned_start, after.planned_end).map_err(against_stored)?;
            if matches!(after.state, ChangeState::Authorize | ChangeState::Scheduled)
                && after.window().is_none()
            {
                return Err(ApiError::Conflict(
                    "planned_start: a change asking for authorisation or scheduled keeps its \
                     planned window"
                        .into(),
                ));
            }
            if let Some(items) = patch.configuration_items {
                after.configuration_items = items;
            }
            if let Some(service) = patch.service {
                after.service = service;
            }
            if let Some(group) = patch.assignment_group {
                after.assignment_group = group;
                if patch.assignee.is_none() && after.assignment_group != before.assignment_group {
                    after.assignee = None;
                }
            }
            if let Some(assignee) = patch.assignee {
                after.assignee = assignee;
            }
            if let Some(refs) = patch.external_refs {
                after.external_refs = refs;
            }
            if let Some(caused) = patch.caused_incidents {
                if !caused.is_empty() && !after.outcome.is_some_and(|o| o.went_wrong()) {
                    return Err(ApiError::Conflict(
                        "caused_incidents: only a change reviewed as not fully successful \
                         causes incidents"
                            .into(),
                    ));
                }
                after.caused_incidents = resolve_incidents(conn, &caused)?;
            }
            if let Some(problems) = patch.fixes_problems {
                after.fixes_problems = resolve_problems(conn, &problems, Some(&before.id))?;
            }
            check_cmdb_links(
                conn,
                &after.configuration_items,
                after.service.as_deref(),
                Some((&before.configuration_items, before.service.as_deref())),
            )?;
            if before.assignment_group != after.assignment_group
                || before.assignee != after.assignee
            {
                check_assignment(
                    conn,
                    after.assignment_group.as_deref(),
                    after.assignee.as_deref(),
                )?;
            }
            if let Some((level, reason)) = override_level {
                after.risk = level;
                after.risk_override_reason = Some(reason);
            }
            if after.risk_answers != before.risk_answers
                || after.configuration_items != before.configuration_items
                || after.service != before.service
                || after.backout_plan.is_some() != before.backout_plan.is_some()
            {
                let assessment = assess(
                    conn,
                    &graphs,
                    &after.risk_answers,
                    &after.configuration_items,
                    after.service.as_deref(),
                    after.backout_plan.is_some(),
                    now,
                )?;
                after.reassess(assessment);
            }
            if let Some(template) = &after.template {
                let template = changes::template(conn, template)?;
                schedule::check_template_bounds(
                    &template.configuration_items,
                    template.risk_cap,
                    &after.configuration_items,
                    after.risk,
                )?;
            }
            let mut overridden = None;
            let moved = after.window() != before.window()
                || after.configuration_items != before.configuration_items
                || after.service != before.service;
            if moved && matches!(after.state, ChangeState::Authorize | ChangeState::Scheduled) {
                let window = after.window().ok_or_else(|| {
                    ApiError::invalid("planned_start", "is required once authorisation is asked")
                })?;
                let hits = freeze_hits_of(conn, &graphs, &after, &window)?;
                if let FreezeOutcome::Overridden(reason) =
                    enter_freeze(&after, &hits, patch.override_reason.as_deref())?
                {
                    after.freeze_override_reason = Some(reason.clone());
                    overridden = Some((reason, hits));
                }
            }
            let saved = tickets::save(
                conn,
                &ctx,
                &before,
                &after,
                tickets::Change {
                    action: "update",
                    reason: after
                        .risk_override_reason
                        .as_deref()
                        .filter(|_| after.risk_override_reason != before.risk_override_reason),
                    events: &[],
                },
            )?;
            link_problems(conn, &ctx, &saved, &before.fixes_problems)?;
            if let Some((reason, hits)) = overridden {
                changes::record_event(
                    &ctx,
                    &saved,
                    "override_freeze",
                    "change.freeze_overridden",
                    json!({"override_reason": reason, "freeze_windows": hits}),
                )?;
            }
            Ok(saved)
        })
        .await
}

/// Walks of the CMDB from each of `items`, one way: `walks[item][reached] = path`.
fn walks(
    conn: &mut DbConnection,
    graphs: &Graphs,
    items: &[String],
    direction: Direction,
) -> ApiResult<Dependants> {
    let mut walks = Dependants::new();
    for item in items {
        match cmdb::relationships::reach(conn, graphs, item, direction, MAX_DEPTH, WALK_LIMIT) {
            Ok(walked) => walks.insert(item.clone(), walked),
            // An item deleted since is reached by nothing.
            Err(StoreError::NotFound) => continue,
            Err(other) => return Err(other.into()),
        };
    }
    Ok(walks)
}

fn freeze_hits_of(
    conn: &mut DbConnection,
    graphs: &Graphs,
    change: &Change,
    window: &Window,
) -> ApiResult<Vec<FreezeHit>> {
    let freezes = changes::freezes(conn, Some(window))?;
    if freezes.is_empty() {
        return Ok(Vec::new());
    }
    let up = walks(
        conn,
        graphs,
        &change.configuration_items,
        Direction::Upstream,
    )?;
    Ok(schedule::freeze_hits(
        window,
        &change.configuration_items,
        change.service.as_deref(),
        &freezes,
        &up,
    ))
}

/// Refuses a freeze hit (409 naming every window and item), or lets an emergency change in
/// with a reason.
fn enter_freeze(
    change: &Change,
    hits: &[FreezeHit],
    override_reason: Option<&str>,
) -> ApiResult<FreezeOutcome> {
    check_freeze(change.change_type, hits, override_reason).map_err(|refusal| ApiError::Frozen {
        detail: refusal.detail,
        freeze_windows: json!(hits),
    })
}

/// Every conflict and freeze hit of a change over `window`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConflictReport {
    pub change_id: String,
    #[schema(example = "CHG0000042")]
    pub number: String,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    /// Other scheduled or implementing changes overlapping it on linked items: all of them.
    pub conflicts: Vec<Conflict>,
    /// Freeze windows its planned window hits: all of them.
    pub freeze_windows: Vec<FreezeHit>,
}

/// The conflicts and freeze hits of `change` (none without a planned window).
pub fn analyse(
    conn: &mut DbConnection,
    graphs: &Graphs,
    change: &Change,
) -> ApiResult<ConflictReport> {
    let mut report = ConflictReport {
        change_id: change.id.clone(),
        number: change.number.clone(),
        planned_start: change.planned_start,
        planned_end: change.planned_end,
        conflicts: Vec::new(),
        freeze_windows: Vec::new(),
    };
    let Some(window) = change.window() else {
        return Ok(report);
    };
    let up = walks(
        conn,
        graphs,
        &change.configuration_items,
        Direction::Upstream,
    )?;
    let others = changes::planned_in(conn, &window, true)?;
    if others
        .iter()
        .any(|o| o.id != change.id && !o.items.is_empty())
    {
        let down = walks(
            conn,
            graphs,
            &change.configuration_items,
            Direction::Downstream,
        )?;
        let reach = Reach::new(&change.configuration_items, &up, &down);
        report.conflicts = schedule::conflicts(&change.id, &window, &reach, &others);
    }
    let freezes = changes::freezes(conn, Some(&window))?;
    report.freeze_windows = schedule::freeze_hits(
        &window,
        &change.configuration_items,
        change.service.as_deref(),
        &freezes,
        &up,
    );
    Ok(report)
}

/// The users a policy's approvers name, each once with why they were asked.
fn expand_approvers(
    conn: &mut DbConnection,
    approvers: &[Approver],
) -> ApiResult<Vec<(String, String)>> {
    let mut asked: Vec<(String, String)> = Vec::new();
    let mut add = |user: String, why: String| {
        if !asked.iter().any(|(u, _)| *u == user) {
            asked.push((user, why));
        }
    };
    for approver in approvers {
        match approver {
            Approver::User(id) => {
                if let Some((_, true, _)) = users::access(conn, id)? {
                    add(id.clone(), "user".into());
                }
            }
            Approver::Group(id) => {
                let members = match groups::members(conn, id, None, 500) {
                    Ok(members) => members,
                    Err(StoreError::NotFound) => continue,
                    Err(other) => return Err(other.into()),
                };
                for member in members.items.into_iter().filter(|u| u.active) {
                    add(member.id, format!("group:{id}"));
                }
            }
            Approver::Role(role) => {
                let filter = users::UserFilter {
                    role: Some(*role),
                    active: Some(true),
                    ..Default::default()
                };
                for user in users::list(conn, &filter, None, 500)?.items {
                    add(user.id, format!("role:{role}"));
                }
            }
        }
    }
    Ok(asked)
}

/// A transition's result: the change, and for scheduling its conflicts.
pub struct Transitioned {
    pub change: Change,
    pub conflicts: Option<Vec<Conflict>>,
}

/// A transition as asked: the action, the domain's input, and what the use case needs.
#[derive(Debug)]
pub struct TransitionRequest {
    pub action: ChangeAction,
    pub input: ChangeInput,
    /// Lets an emergency change into a freeze.
    pub override_reason: Option<String>,
    /// A change manager acknowledges the conflicts of scheduling.
    pub acknowledge_conflicts: bool,
}

/// Takes an action on a change: asking for authorisation opens an approval round chosen by
/// policy; asking for authorisation and scheduling check freezes; scheduling lists conflicts.
pub async fn transition(
    state: &AppState,
    caller: Caller,
    access: Access,
    id: String,
    expected_version: Option<i64>,
    request: TransitionRequest,
) -> ApiResult<Transitioned> {
    let TransitionRequest {
        action,
        mut input,
        override_reason,
        acknowledge_conflicts,
    } = request;
    if acknowledge_conflicts && !manages(&caller) {
        return Err(ApiError::Forbidden(
            "only a change manager acknowledges conflicts".into(),
        ));
    }
    let ctx = caller.write_context();
    let graphs = state.db.graphs();
    state
        .db
        .write(move |conn| -> ApiResult<Transitioned> {
            let before = visible::<Change>(conn, &id, access, &caller)?;
            persistence::check_version(expected_version, before.version)?;
            let relation = relation(&caller, &before);
            if let Some(caused) = &input.caused_incidents {
                input.caused_incidents = Some(resolve_incidents(conn, caused)?);
            }
            let mut after = before.clone();
            let applied = after.apply(action, &input, relation, ctx.at.and_utc())?;
            if action == ChangeAction::Assign {
                check_assignment(
                    conn,
                    after.assignment_group.as_deref(),
                    after.assignee.as_deref(),
                )?;
            }
            let mut conflicts = None;
            let mut overridden = None;
            let mut approvers = Vec::new();
            if matches!(
                action,
                ChangeAction::RequestAuthorization | ChangeAction::Schedule
            ) {
                let report = analyse(conn, &graphs, &after)?;
                if let FreezeOutcome::Overridden(reason) =
                    enter_freeze(&after, &report.freeze_windows, override_reason.as_deref())?
                {
                    after.freeze_override_reason = Some(reason.clone());
                    overridden = Some((reason, report.freeze_windows.clone()));
                }
                if action == ChangeAction::Schedule {
                    conflicts = Some(report.conflicts);
                }
            }
            if action == ChangeAction::RequestAuthorization {
                let policies = changes::policies(conn)?;
                let policy =
                    choose_policy(&policies, after.change_type, after.risk).ok_or_else(|| {
                        ApiError::Conflict(format!(
                            "no approval policy covers {} changes of risk {}",
                            after.change_type, after.risk
                        ))
                    })?;
                approvers = expand_approvers(conn, &policy.approvers)?;
                if approvers.len() < policy.quorum as usize {
                    return Err(ApiError::Conflict(format!(
                        "approval policy {:?} names {} active approver(s) for a quorum of {}",
                        policy.name,
                        approvers.len(),
                        policy.quorum
                    )));
                }
                after.approval_policy = Some(policy.id.clone());
                after.approval_quorum = Some(i64::from(policy.quorum));
            }
            let change = tickets::Change {
                action: applied.audit_action,
                reason: input.reason.as_deref(),
                events: &applied.events,
            };
            let saved = tickets::save(conn, &ctx, &before, &after, change)?;
            match action {
                ChangeAction::RequestAuthorization => {
                    changes::withdraw_round(conn, &saved.id)?;
                    changes::open_round(conn, &ctx, &saved, &approvers)?;
                }
                ChangeAction::Cancel => changes::withdraw_round(conn, &saved.id)?,
                _ => {}
            }
            if let Some((reason, hits)) = overridden {
                changes::record_event(
                    &ctx,
                    &saved,
                    "override_freeze",
                    "change.freeze_overridden",
                    json!({"override_reason": reason, "freeze_windows": hits}),
                )?;
            }
            if let Some(found) = conflicts.as_ref().filter(|c| !c.is_empty()) {
                if acknowledge_conflicts {
                    changes::record_event(
                        &ctx,
                        &saved,
                        "acknowledge_conflicts",
                        "change.conflict_acknowledged",
                        json!({"conflicts": found}),
                    )?;
                }
            }
            Ok(Transitioned {
                change: saved,
                conflicts,
            })
        })
        .await
}

/// The approvals of a change, with where its current round stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalsView {
    pub change_id: String,
    #[schema(example = "CHG0000042")]
    pub number: String,
    pub state: ChangeState,
    pub round: i64,
    pub policy: Option<String>,
    pub quorum: Option<i64>,
    pub approved: usize,
    pub items: Vec<ChangeApproval>,
}

pub fn approvals_view(conn: &mut DbConnection, change: &Change) -> ApiResult<ApprovalsView> {
    let items = changes::approvals_of(conn, &change.id)?;
    let approved = items
        .iter()
        .filter(|a| a.round == change.approval_round && a.state == ApprovalState::Approved)
        .count();
    Ok(ApprovalsView {
        change_id: change.id.clone(),
        number: change.number.clone(),
        state: change.state,
        round: change.approval_round,
        policy: change.approval_policy.clone(),
        quorum: change.approval_quorum,
        approved,
        items,
    })
}

/// A decision and the change after it (with its conflicts when the decision scheduled it).
pub struct Decided {
    pub approval: ChangeApproval,
    pub change: Change,
    pub conflicts: Option<Vec<Conflict>>,
    /// The freeze windows that held an authorised change back from `scheduled`.
    pub held_by_freeze: Option<Vec<FreezeHit>>,
}

/// Records the caller's decision on one approval of a change: the named approver only, once;
/// any rejection returns the change to `new`; the quorum authorises it.
pub async fn decide(
    state: &AppState,
    caller: Caller,
    id: String,
    approval_id: String,
    decision: Decision,
    comment: Option<String>,
) -> ApiResult<Decided> {
    let ctx = caller.write_context();
    let graphs = state.db.graphs();
    state
        .db
        .write(move |conn| -> ApiResult<Decided> {
            let change =
                Change::get(conn, &id).map_err(|e| crate::error::not_found_as(e, "change"))?;
            let all = changes::approvals_of(conn, &change.id)?;
            let Some(target) = all.iter().find(|a| a.id == approval_id) else {
                return Err(ApiError::not_found("approval"));
            };
            if target.approver != caller.id {
                return Err(ApiError::Forbidden(
                    "only the named approver decides this approval".into(),
                ));
            }
            let before: Vec<ChangeApproval> = all
                .iter()
                .filter(|a| a.round == target.round)
                .cloned()
                .collect();
            let mut round = before.clone();
            let index = round
                .iter()
                .position(|a| a.id == approval_id)
                .unwrap_or_default();
            let quorum = u32::try_from(change.approval_quorum.unwrap_or(1)).unwrap_or(1);
            let outcome = approval::decide(
                &mut round,
                index,
                &caller.id,
                decision,
                comment,
                quorum,
                ctx.at.and_utc(),
            )
            .map_err(|e| match e {
                DecisionError::NotTheApprover => {
                    ApiError::Forbidden("only the named approver decides this approval".into())
                }
                DecisionError::AlreadyDecided(state) => {
                    ApiError::Conflict(format!("the approval is {state}: a decision is final"))
                }
                DecisionError::CommentRequired => {
                    ApiError::invalid("comment", "is required to reject")
                }
            })?;
            changes::save_approvals(conn, &before, &round)?;
            let decided = round[index].clone();
            changes::record_decision(&ctx, &change, &decided)?;
            let mut after = change.clone();
            let mut held_by_freeze = None;
            let applied = match outcome {
                RoundOutcome::Pending => None,
                RoundOutcome::Authorized => {
                    // Scheduling by quorum checks freezes as `schedule` does (without an
                    // override: only `schedule` takes one): a freeze set since the request
                    // holds the change, authorised, in `authorize`.
                    let hits = match change.window() {
                        Some(window) if change.state == ChangeState::Authorize => {
                            freeze_hits_of(conn, &graphs, &change, &window)?
                        }
                        _ => Vec::new(),
                    };
                    let frozen = check_freeze(change.change_type, &hits, None).is_err();
                    if frozen {
                        held_by_freeze = Some(hits);
                    }
                    Some(after.authorize(ctx.at.and_utc(), frozen))
                }
                RoundOutcome::Rejected => Some(after.reject(
                    &caller.id,
                    decided.comment.as_deref().unwrap_or_default(),
                    ctx.at.and_utc(),
                )),
            };
            let saved = match applied {
                Some(applied) => tickets::save(
                    conn,
                    &ctx,
                    &change,
                    &after,
                    tickets::Change {
                        action: applied.audit_action,
                        reason: None,
                        events: &applied.events,
                    },
                )?,
                None => change.clone(),
            };
            let conflicts = if saved.state == ChangeState::Scheduled
                && change.state != ChangeState::Scheduled
            {
                Some(analyse(conn, &graphs, &saved)?.conflicts)
            } else {
                None
            };
            Ok(Decided {
                approval: decided,
                change: saved,
                conflicts,
                held_by_freeze,
            })
        })
        .await
}

/// Checks the parts of a freeze window that need the database: listed items and services
/// exist.
pub fn check_freeze_scope(conn: &mut DbConnection, scope: &schedule::FreezeScope) -> ApiResult<()> {
    let mut errors = Vec::new();
    for (index, id) in scope.configuration_items.iter().enumerate() {
        match cmdb::items::get(conn, id) {
            Ok(_) => {}
            Err(StoreError::NotFound) => errors.push(FieldError::unknown(
                format!("scope.configuration_items[{index}]"),
                "configuration item",
            )),
            Err(other) => return Err(other.into()),
        }
    }
    for (index, id) in scope.services.iter().enumerate() {
        errors.extend(super::business_service_error(
            conn,
            id,
            &format!("scope.services[{index}]"),
        )?);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Checks a policy's named users and groups exist.
pub fn check_policy_approvers(conn: &mut DbConnection, approvers: &[Approver]) -> ApiResult<()> {
    let mut errors = Vec::new();
    for (index, approver) in approvers.iter().enumerate() {
        let field = format!("approvers[{index}]");
        match approver {
            Approver::User(id) => {
                if users::access(conn, id)?.is_none() {
                    errors.push(FieldError::unknown(field, "user"));
                }
            }
            Approver::Group(id) => match groups::get(conn, id) {
                Ok(_) => {}
                Err(StoreError::NotFound) => errors.push(FieldError::unknown(field, "group")),
                Err(other) => return Err(other.into()),
            },
            Approver::Role(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Changes and freeze windows in a range, optionally touching an item or affecting a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct Calendar {
    pub from: DateTime<Utc>,
    /// The end of the period covered: the `to` asked for, or 366 days after `from` when more
    /// was asked (ask again from there for the rest).
    pub to: DateTime<Utc>,
    pub changes: Vec<CalendarEntry>,
    pub freeze_windows: Vec<domain::change::schedule::FreezeWindow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalendarEntry {
    pub id: String,
    #[schema(example = "CHG0000042")]
    pub number: String,
    pub title: String,
    pub state: ChangeState,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub configuration_items: Vec<String>,
}

pub fn calendar(
    conn: &mut DbConnection,
    graphs: &Graphs,
    window: Window,
    item: Option<&str>,
    service: Option<&str>,
) -> ApiResult<Calendar> {
    // A service covers every item it depends on.
    let service_items: Option<Vec<String>> = match service {
        Some(service) => {
            let mut items = vec![service.to_owned()];
            if let Some(down) = walks(conn, graphs, &items, Direction::Downstream)?.remove(service)
            {
                items.extend(down.into_ids());
            }
            Some(items)
        }
        None => None,
    };
    let planned = changes::planned_in(conn, &window, false)?;
    let entries = planned
        .into_iter()
        .filter(|c| c.state != ChangeState::Canceled)
        .filter(|c| item.is_none_or(|i| c.items.iter().any(|x| x == i)))
        .filter(|c| {
            service_items
                .as_ref()
                .is_none_or(|s| c.items.iter().any(|x| s.contains(x)))
        })
        .map(|c| CalendarEntry {
            id: c.id,
            number: c.number,
            title: c.title,
            state: c.state,
            planned_start: c.window.start,
            planned_end: c.window.end,
            configuration_items: c.items,
        })
        .collect();
    let freezes = changes::freezes(conn, Some(&window))?
        .into_iter()
        .filter(|f| {
            f.scope.everything
                || (item.is_none() && service.is_none())
                || item.is_some_and(|i| f.scope.configuration_items.iter().any(|x| x == i))
                || service.is_some_and(|s| f.scope.services.iter().any(|x| x == s))
        })
        .collect();
    Ok(Calendar {
        from: window.start,
        to: window.end,
        changes: entries,
        freeze_windows: freezes,
    })
}
