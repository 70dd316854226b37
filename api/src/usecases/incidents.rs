//! What happens when someone reports, changes, or moves an incident along its lifecycle:
//! references checked, rules routed, children cascaded, all in one unit of work.

use domain::cmdb::impact::{self, Direction, ImpactedItem};
use domain::incident::{
    Channel, Incident, IncidentAction, IncidentState, NewIncident, Relation, TransitionInput,
};
use domain::notes::Visibility;
use domain::priority::Priority;
use domain::routing;
use domain::ticket::{trimmed, Lifecycle};
use domain::ExternalRef;
use persistence::tickets::{self, Change, TicketTable};
use persistence::{cmdb, incidents, notes, DbConnection, WriteContext};

use super::{check_active_user, check_assignee, check_cmdb_links, check_group};
use crate::auth::Caller;
use crate::error::{unknown_reference, ApiError, ApiResult};
use crate::state::AppState;
use crate::tickets::{check_not_final, related, visible, Access};

/// The caller's relation to an incident, as if it had no parent (or an open one).
pub(crate) fn relation_without_parent(
    access: Access,
    caller: &Caller,
    incident: &Incident,
) -> Relation {
    Relation {
        is_agent: access == Access::Staff,
        is_caller: incident.caller == caller.id,
        parent_final: false,
    }
}

/// The references of an incident that must exist.
#[derive(Debug, Clone, Copy)]
pub struct References<'a> {
    /// `None` for a new incident.
    pub id: Option<&'a str>,
    pub caller: &'a str,
    pub assignment_group: Option<&'a str>,
    pub assignee: Option<&'a str>,
    pub parent_id: Option<&'a str>,
}

impl<'a> References<'a> {
    fn of_new(new: &'a NewIncident) -> Self {
        Self {
            id: None,
            caller: &new.caller,
            assignment_group: new.assignment_group.as_deref(),
            assignee: new.assignee.as_deref(),
            parent_id: new.parent_id.as_deref(),
        }
    }

    fn of(incident: &'a Incident) -> Self {
        Self {
            id: Some(&incident.id),
            caller: &incident.caller,
            assignment_group: incident.assignment_group.as_deref(),
            assignee: incident.assignee.as_deref(),
            parent_id: incident.parent_id.as_deref(),
        }
    }
}

/// Checks that the references of an incident exist: an active caller, a group, an assignee who
/// is an active member of that group, and a parent that may have children. Only what changed
/// since `before` is checked, so an incident whose caller has left can still be worked. Returns
/// the parent's id when a parent (possibly given by number) was checked. The acting user's own
/// account was checked when the request was authenticated, so it is not read again.
fn check_references(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    now: References<'_>,
    before: Option<References<'_>>,
) -> ApiResult<Option<String>> {
    let changed = |field: for<'r> fn(&References<'r>) -> Option<&'r str>| {
        before.as_ref().is_none_or(|b| field(b) != field(&now))
    };
    if changed(|r| Some(r.caller)) && ctx.actor.id.as_deref() != Some(now.caller) {
        check_active_user(conn, now.caller, "caller")?;
    }
    if let (true, Some(group)) = (changed(|r| r.assignment_group), now.assignment_group) {
        check_group(conn, group)?;
    }
    let assignment_changed = changed(|r| r.assignee) || changed(|r| r.assignment_group);
    if let (true, Some(assignee)) = (assignment_changed, now.assignee) {
        check_assignee(conn, now.assignment_group, assignee)?;
    }
    match (changed(|r| r.parent_id), now.parent_id) {
        (true, Some(parent_ref)) => {
            let parent = Incident::get(conn, parent_ref)
                .map_err(|e| unknown_reference(e, "parent_id", "no such incident"))?;
            check_parent(conn, now.id, &parent)?;
            Ok(Some(parent.id))
        }
        _ => Ok(None),
    }
}

/// Whether `parent` may become the parent of incident `id` (`None` for a new one).
fn check_parent(conn: &mut DbConnection, id: Option<&str>, parent: &Incident) -> ApiResult<()> {
    let has_children = match id {
        Some(id) => incidents::has_children(conn, id)?,
        None => false,
    };
    Incident::check_parent(id.unwrap_or(""), parent, has_children)?;
    Ok(())
}

/// Reports an incident: routes it by the assignment rules when no group is given, checks its
/// references and stores it.
pub async fn report(
    state: &AppState,
    caller: Caller,
    access: Access,
    mut new: NewIncident,
) -> ApiResult<(Incident, Relation)> {
    // Routing reads the rules on a reader, not on the serial write path. A rule changed
    // meanwhile routes this incident as the rules stood when it was reported.
    let routed_group = match (&new.assignment_group, &new.category) {
        (None, Some(category)) => {
            let rules = crate::routes::assignment_rules::routing_rules(state).await?;
            routing::route(&rules, category, new.subcategory.as_deref()).map(str::to_owned)
        }
        _ => None,
    };
    // A routed group needs no lookup (its rule's foreign key kept it, and the incident's keeps
    // it now), unless an assignee must be one of its members.
    let route_first = new.assignee.is_some();
    if route_first && new.assignment_group.is_none() {
        new.assignment_group = routed_group.clone();
    }
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write_new_rows(move |conn| -> ApiResult<(Incident, Relation)> {
            let incident = report_in(conn, &ctx, new.clone(), routed_group.as_deref())?;
            related(conn, access, &caller, incident)
        })
        .await
}

/// Stores a reported incident inside a unit of work: its configuration items, service and
/// references checked, the routed group given when it names none. Shared by [`report`] and
/// the monitoring intake.
pub(crate) fn report_in(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    mut new: NewIncident,
    routed_group: Option<&str>,
) -> ApiResult<Incident> {
    check_cmdb_links(conn, &new.configuration_items, new.service.as_deref(), None)?;
    if let Some(parent) = check_references(conn, ctx, References::of_new(&new), None)? {
        new.parent_id = Some(parent);
    }
    if new.assignment_group.is_none() {
        new.assignment_group = routed_group.map(str::to_owned);
    }
    Ok(incidents::create(conn, ctx, new)?)
}

/// Resolves an open incident on behalf of the service (monitoring saw the cause go away),
/// from whatever open state it is in, recorded as `action`, cascading to its children like
/// any resolution.
pub(crate) fn resolve_in(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    before: &Incident,
    code: domain::incident::ResolutionCode,
    notes: String,
    action: &str,
) -> ApiResult<Incident> {
    let mut after = before.clone();
    after.resolve(Some(code), notes, ctx.at.and_utc());
    let saved = tickets::save(conn, ctx, before, &after, Change::action(action))?;
    cascade_to_children(conn, ctx, &saved)?;
    Ok(saved)
}

/// The fields of a merge patch of an incident: `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct IncidentPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub caller: Option<String>,
    pub channel: Option<Channel>,
    pub category: Option<Option<String>>,
    pub subcategory: Option<Option<String>>,
    pub impact: Option<domain::priority::Impact>,
    pub urgency: Option<domain::priority::Urgency>,
    pub assignment_group: Option<Option<String>>,
    pub assignee: Option<Option<String>>,
    pub parent_id: Option<Option<String>>,
    pub external_refs: Option<Vec<ExternalRef>>,
    pub configuration_items: Option<Vec<String>>,
    pub service: Option<Option<String>>,
}

/// Applies a merge patch to an incident: staff only, never to a closed or canceled one, the
/// priority recalculated and the references checked.
pub async fn update(
    state: &AppState,
    caller: Caller,
    access: Access,
    id: String,
    expected_version: Option<i64>,
    patch: IncidentPatch,
) -> ApiResult<(Incident, Relation)> {
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write(move |conn| -> ApiResult<(Incident, Relation)> {
            let before = visible::<Incident>(conn, &id, access, &caller)?;
            if access != Access::Staff {
                return Err(ApiError::Forbidden(
                    "only agents change incidents; add a comment instead".into(),
                ));
            }
            persistence::check_version(expected_version, before.version)?;
            check_not_final(&before)?;
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
            match patch.assignee {
                Some(assignee) => after.assign(assignee, ctx.at.and_utc()),
                // A new group without a new assignee releases the old one.
                None if after.assignment_group != before.assignment_group => after.assignee = None,
                None => {}
            }
            let checked = check_references(
                conn,
                &ctx,
                References::of(&after),
                Some(References::of(&before)),
            )?;
            if let Some(parent) = checked {
                after.parent_id = Some(parent);
            }
            let saved = tickets::save(conn, &ctx, &before, &after, Change::action("update"))?;
            related(conn, access, &caller, saved)
        })
        .await
}

/// Takes an action on an incident the caller may see.
pub async fn transition(
    state: &AppState,
    caller: Caller,
    access: Access,
    id: String,
    expected_version: Option<i64>,
    action: IncidentAction,
    input: TransitionInput,
) -> ApiResult<(Incident, Relation)> {
    let ctx = state.ticket_context(&caller).await?;
    state
        .db
        .write(move |conn| -> ApiResult<(Incident, Relation)> {
            let before = visible::<Incident>(conn, &id, access, &caller)?;
            persistence::check_version(expected_version, before.version)?;
            let (_, relation) = related(conn, access, &caller, before.clone())?;
            let saved = transition_in(conn, &ctx, before, action, &input, relation)?;
            related(conn, access, &caller, saved)
        })
        .await
}

/// Applies `action` to the incident inside a unit of work, cascading to children when a parent
/// resolves or closes. Shared by the transitions endpoint and the problem use cases.
pub(crate) fn transition_in(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    before: Incident,
    action: IncidentAction,
    input: &TransitionInput,
    relation: Relation,
) -> ApiResult<Incident> {
    let mut after = before.clone();
    let applied = after.apply(action, input, relation, ctx.at.and_utc())?;
    if action == IncidentAction::Assign {
        check_references(
            conn,
            ctx,
            References::of(&after),
            Some(References::of(&before)),
        )?;
    }
    let change = Change {
        action: applied.audit_action,
        reason: input.reason.as_deref(),
        events: &applied.events,
    };
    let saved = tickets::save(conn, ctx, &before, &after, change)?;
    if matches!(action, IncidentAction::Resolve | IncidentAction::Close) {
        cascade_to_children(conn, ctx, &saved)?;
    }
    Ok(saved)
}

/// Resolving or closing a parent resolves or closes its open children, with a comment saying why.
pub(crate) fn cascade_to_children(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    parent: &Incident,
) -> ApiResult<()> {
    let now = ctx.at.and_utc();
    for child in incidents::children(conn, &parent.id)? {
        let mut after = child.clone();
        let notes_of_parent = || parent.resolution_notes_for_child(&child);
        match parent.state {
            IncidentState::Resolved if child.state.is_open() => {
                after.resolve(parent.resolution_code, notes_of_parent(), now);
            }
            IncidentState::Closed if !child.state.is_final() => {
                if child.state.is_open() {
                    after.resolve(parent.resolution_code, notes_of_parent(), now);
                }
                after.close(now);
            }
            _ => continue,
        }
        let action = if after.state == IncidentState::Closed {
            "close_with_parent"
        } else {
            "resolve_with_parent"
        };
        tickets::save(conn, ctx, &child, &after, Change::action(action))?;
        // The child's caller may not see the parent (another caller's) nor who worked on it:
        // the comment is the service's, and names the parent only to its own caller.
        notes::add(
            conn,
            &WriteContext {
                request_id: ctx.request_id.clone(),
                at: ctx.at,
                ..WriteContext::system("cascade")
            },
            incidents::ENTITY,
            &child.id,
            Visibility::Public,
            &parent.cascade_comment(&child),
            "incident.note_added",
        )?;
    }
    Ok(())
}

/// Closes a resolved incident nobody confirmed; `false` when it changed meanwhile.
pub(crate) fn auto_close(conn: &mut DbConnection, id: &str) -> ApiResult<bool> {
    let before = Incident::get(conn, id)?;
    if before.state != IncidentState::Resolved {
        return Ok(false);
    }
    let ctx = WriteContext::system("auto-close");
    let mut after = before.clone();
    after.close(ctx.at.and_utc());
    let saved = tickets::save(conn, &ctx, &before, &after, Change::action("auto_close"))?;
    cascade_to_children(conn, &ctx, &saved)?;
    Ok(true)
}

/// The business services that depend on any of `items`, each once, nearest first, as the
/// CMDB's upstream impact finds them.
pub async fn impacted_services(
    state: &AppState,
    items: Vec<String>,
) -> ApiResult<Vec<ImpactedItem>> {
    let graphs = state.db.graphs();
    state
        .db
        .read(move |conn| -> ApiResult<Vec<ImpactedItem>> {
            let mut services: Vec<ImpactedItem> = Vec::new();
            for item in &items {
                let impact = cmdb::relationships::impact(
                    conn,
                    &graphs,
                    item,
                    Direction::Upstream,
                    impact::MAX_DEPTH,
                    &[],
                    impact::DEFAULT_LIMIT,
                )?;
                for service in impact.business_services {
                    match services.iter_mut().find(|s| s.id == service.id) {
                        Some(known) if known.distance > service.distance => *known = service,
                        Some(_) => {}
                        None => services.push(service),
                    }
                }
            }
            services.sort_by_key(|service| service.distance);
            Ok(services)
        })
        .await
}
