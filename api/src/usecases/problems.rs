//! Problem management: recording problems, linking the incidents they cause, and what their
//! resolution means for those incidents, each in one unit of work.

use domain::incident::Incident;
use domain::notes::Visibility;
use domain::priority::{Impact, Priority, Urgency};
use domain::problem::{NewProblem, Problem, ProblemAction, ProblemInput, ProblemRelation};
use domain::ticket::{trimmed, Lifecycle};
use domain::{ExternalRef, FieldError, Role};
use persistence::tickets::{self, Change, TicketTable};
use persistence::{incidents, notes, problems, DbConnection, WriteContext};

use super::{check_assignment, check_cmdb_links};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tickets::{check_not_final, visible, Access};

/// Problem managers and admins move problems along and reassign them.
pub fn relation(caller: &Caller) -> ProblemRelation {
    ProblemRelation {
        manages: caller.has_any(&[Role::ProblemManager]),
    }
}

fn require_manager(caller: &Caller) -> ApiResult<()> {
    if relation(caller).manages {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this action requires the role problem_manager or admin".into(),
        ))
    }
}

fn check_assignment_change(
    conn: &mut DbConnection,
    before: &Problem,
    after: &Problem,
) -> ApiResult<()> {
    if before.assignment_group == after.assignment_group && before.assignee == after.assignee {
        return Ok(());
    }
    check_assignment(
        conn,
        after.assignment_group.as_deref(),
        after.assignee.as_deref(),
    )
}

/// Records a new problem.
pub async fn create(state: &AppState, caller: Caller, new: NewProblem) -> ApiResult<Problem> {
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write_new_rows(move |conn| -> ApiResult<Problem> {
            check_assignment(
                conn,
                new.assignment_group.as_deref(),
                new.assignee.as_deref(),
            )?;
            check_cmdb_links(conn, &new.configuration_items, new.service.as_deref(), None)?;
            Ok(problems::create(conn, &ctx, new.clone())?)
        })
        .await
}

/// What a problem is created from an incident with: the incident's own words and weight
/// unless given.
#[derive(Debug, Default)]
pub struct FromIncident {
    pub title: Option<String>,
    pub description: Option<String>,
    pub impact: Option<Impact>,
    pub urgency: Option<Urgency>,
    pub category: Option<String>,
    pub assignment_group: Option<String>,
    pub hold_incident: bool,
}

/// Creates a problem from an incident and links the incident to it.
pub async fn create_from_incident(
    state: &AppState,
    caller: Caller,
    incident_id: String,
    given: FromIncident,
) -> ApiResult<Problem> {
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write(move |conn| -> ApiResult<Problem> {
            let incident = Incident::get(conn, &incident_id)
                .map_err(|e| crate::error::not_found_as(e, "incident"))?;
            if let Some(problem_id) = &incident.problem_id {
                let problem = Problem::get(conn, problem_id)?;
                return Err(ApiError::Conflict(format!(
                    "incident {} is already linked to problem {}",
                    incident.number, problem.number
                )));
            }
            let new = NewProblem {
                title: given
                    .title
                    .clone()
                    .unwrap_or_else(|| incident.title.clone()),
                description: given
                    .description
                    .clone()
                    .unwrap_or_else(|| incident.description.clone()),
                impact: given.impact.unwrap_or(incident.impact),
                urgency: given.urgency.unwrap_or(incident.urgency),
                category: given.category.clone().or_else(|| incident.category.clone()),
                assignment_group: given.assignment_group.clone(),
                assignee: None,
                root_cause: None,
                workaround: None,
                external_refs: Vec::new(),
                configuration_items: incident.configuration_items.clone(),
                service: incident.service.clone(),
            };
            check_assignment(conn, new.assignment_group.as_deref(), None)?;
            let problem = problems::create(conn, &ctx, new)?;
            link_one(conn, &ctx, &problem, &incident, given.hold_incident)?;
            Ok(problem)
        })
        .await
}

/// The fields of a merge patch of a problem: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProblemPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub impact: Option<Impact>,
    pub urgency: Option<Urgency>,
    pub category: Option<Option<String>>,
    pub assignment_group: Option<Option<String>>,
    pub assignee: Option<Option<String>>,
    pub root_cause: Option<Option<String>>,
    pub workaround: Option<Option<String>>,
    pub external_refs: Option<Vec<ExternalRef>>,
    pub configuration_items: Option<Vec<String>>,
    pub service: Option<Option<String>>,
}

/// Changes a problem's details: problem managers only, never a closed or canceled problem.
pub async fn update(
    state: &AppState,
    caller: Caller,
    id: String,
    expected_version: Option<i64>,
    patch: ProblemPatch,
) -> ApiResult<Problem> {
    require_manager(&caller)?;
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write(move |conn| -> ApiResult<Problem> {
            let before = visible::<Problem>(conn, &id, Access::Staff, &caller)?;
            persistence::check_version(expected_version, before.version)?;
            check_not_final(&before)?;
            let mut after = before.clone();
            if let Some(title) = patch.title {
                after.title = title.trim().to_owned();
            }
            if let Some(description) = patch.description {
                after.description = description;
            }
            after.impact = patch.impact.unwrap_or(after.impact);
            after.urgency = patch.urgency.unwrap_or(after.urgency);
            after.priority = Priority::from_matrix(after.impact, after.urgency);
            if let Some(category) = patch.category {
                after.category = trimmed(category);
            }
            if let Some(group) = patch.assignment_group {
                after.assignment_group = group;
                if patch.assignee.is_none() && after.assignment_group != before.assignment_group {
                    // A new group without a new assignee releases the old one.
                    after.assignee = None;
                }
            }
            if let Some(assignee) = patch.assignee {
                after.assignee = assignee;
            }
            if let Some(root_cause) = patch.root_cause {
                after.root_cause = trimmed(root_cause);
            }
            if let Some(workaround) = patch.workaround {
                after.workaround = trimmed(workaround);
            }
            if after.known_error && !after.can_be_known_error() {
                return Err(ApiError::invalid(
                    "workaround",
                    "a known error keeps a workaround or a root cause",
                ));
            }
            if let Some(refs) = patch.external_refs {
                after.external_refs = refs;
            }
            if let Some(items) = patch.configuration_items {
                after.configuration_items = items;
            }
            if let Some(service) = patch.service {
                after.service = service;
            }
            check_cmdb_links(
                conn,
                &after.configuration_items,
                after.service.as_deref(),
                Some((&before.configuration_items, before.service.as_deref())),
            )?;
            check_assignment_change(conn, &before, &after)?;
            Ok(tickets::save(
                conn,
                &ctx,
                &before,
                &after,
                Change::action("update"),
            )?)
        })
        .await
}

/// Takes an action on a problem. Resolving it resumes the incidents held for it, or with
/// `resolve_linked_incidents` resolves every open linked incident with its resolution.
pub async fn transition(
    state: &AppState,
    caller: Caller,
    id: String,
    expected_version: Option<i64>,
    action: ProblemAction,
    input: ProblemInput,
    resolve_linked_incidents: bool,
) -> ApiResult<Problem> {
    let ctx = state.ticket_context(&caller).await?;
    let relation = relation(&caller);
    state
        .db
        .write(move |conn| -> ApiResult<Problem> {
            let before = visible::<Problem>(conn, &id, Access::Staff, &caller)?;
            persistence::check_version(expected_version, before.version)?;
            let mut after = before.clone();
            let applied = after.apply(action, &input, relation, ctx.at.and_utc())?;
            check_assignment_change(conn, &before, &after)?;
            let change = Change {
                action: applied.audit_action,
                reason: input.reason.as_deref(),
                events: &applied.events,
            };
            let saved = tickets::save(conn, &ctx, &before, &after, change)?;
            if action == ProblemAction::Resolve {
                release_incidents(conn, &ctx, &saved, resolve_linked_incidents)?;
            }
            Ok(saved)
        })
        .await
}

/// The linked incidents of a resolved problem: those waiting for it resume, or every open one
/// is resolved with the problem's resolution; each gets a public comment saying why.
fn release_incidents(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    problem: &Problem,
    resolve: bool,
) -> ApiResult<()> {
    let now = ctx.at.and_utc();
    let notes_of_problem = problem.resolution_notes.clone().unwrap_or_default();
    for incident in incidents::of_problem(conn, &problem.id)? {
        let mut after = incident.clone();
        let (action, comment) = if resolve && incident.state.is_open() {
            after.resolve(problem.resolution_code, notes_of_problem.clone(), now);
            (
                "resolve_with_problem",
                format!(
                    "Resolved together with problem {}: {notes_of_problem}",
                    problem.number
                ),
            )
        } else if incident.awaits_problem() {
            after.stop_awaiting_problem();
            (
                "resume_with_problem",
                format!(
                    "Problem {} is resolved: {notes_of_problem} Work on this incident resumes.",
                    problem.number
                ),
            )
        } else {
            continue;
        };
        tickets::save(conn, ctx, &incident, &after, Change::action(action))?;
        notes::add(
            conn,
            ctx,
            incidents::ENTITY,
            &incident.id,
            Visibility::Public,
            &comment,
            "incident.note_added",
        )?;
    }
    Ok(())
}

/// Links one incident to a problem, holding it for the problem when asked.
fn link_one(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    problem: &Problem,
    incident: &Incident,
    hold: bool,
) -> ApiResult<Incident> {
    let mut after = incident.clone();
    after.link_problem(&problem.id, hold);
    let saved = tickets::save(conn, ctx, incident, &after, Change::action("link_problem"))?;
    problems::record_link(ctx, problem, &incident.id, &incident.number, true)?;
    Ok(saved)
}

/// Links incidents to a problem, all or none: an unknown incident, or one already linked to
/// a problem, is a 422 naming it.
pub async fn link(
    state: &AppState,
    caller: Caller,
    id: String,
    incident_ids: Vec<String>,
    hold: bool,
) -> ApiResult<Vec<Incident>> {
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write(move |conn| -> ApiResult<Vec<Incident>> {
            let problem = visible::<Problem>(conn, &id, Access::Staff, &caller)?;
            check_not_final(&problem)?;
            let mut errors = Vec::new();
            let mut found: Vec<Incident> = Vec::new();
            for (index, key) in incident_ids.iter().enumerate() {
                let field = format!("incident_ids[{index}]");
                match Incident::get(conn, key) {
                    Ok(incident) if found.iter().any(|i| i.id == incident.id) => {
                        errors.push(FieldError::new(field, format!("{key} is listed twice")));
                    }
                    Ok(incident) => match &incident.problem_id {
                        Some(linked) if *linked == problem.id => errors.push(FieldError::new(
                            field,
                            format!("{} is already linked to this problem", incident.number),
                        )),
                        Some(linked) => {
                            let other = Problem::get(conn, linked)?;
                            errors.push(FieldError::new(
                                field,
                                format!(
                                    "{} is already linked to problem {}",
                                    incident.number, other.number
                                ),
                            ));
                        }
                        None => found.push(incident),
                    },
                    Err(persistence::StoreError::NotFound) => {
                        errors.push(FieldError::unknown(field, &format!("incident {key}")));
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::from_field_errors(errors));
            }
            found
                .iter()
                .map(|incident| link_one(conn, &ctx, &problem, incident, hold))
                .collect()
        })
        .await
}

/// Unlinks an incident from a problem; an incident held for it resumes.
pub async fn unlink(
    state: &AppState,
    caller: Caller,
    id: String,
    incident_id: String,
) -> ApiResult<()> {
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write(move |conn| -> ApiResult<()> {
            let problem = visible::<Problem>(conn, &id, Access::Staff, &caller)?;
            let incident = Incident::get(conn, &incident_id)
                .ok()
                .filter(|incident| incident.problem_id.as_deref() == Some(problem.id.as_str()))
                .ok_or_else(|| ApiError::not_found("linked incident"))?;
            let mut after = incident.clone();
            after.problem_id = None;
            after.stop_awaiting_problem();
            tickets::save(
                conn,
                &ctx,
                &incident,
                &after,
                Change::action("unlink_problem"),
            )?;
            problems::record_link(&ctx, &problem, &incident.id, &incident.number, false)?;
            Ok(())
        })
        .await
}
