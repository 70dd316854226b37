//! The monitoring intake: alerts deduplicated by key, incidents opened, reopened and resolved
//! for them through the incident use cases, all of one request in one unit of work.
//!
//! Alerts change existing rows (counts, the incident of a key), so their units run on the
//! primary writer, which batches waiting units into one transaction: the storm's repeats
//! share commits. At most `ITSM_ALERT_QUEUE` requests are in progress; past that the intake
//! answers 429 with `Retry-After` at once instead of letting senders time out.

use std::sync::Arc;

use chrono::Duration;
use domain::alert::{
    self, AlertOutcome, AlertRule, AlertStatus, Decision, Handling, IncomingAlert,
};
use domain::incident::{
    Channel, Incident, IncidentAction, IncidentState, NewIncident, Relation, ResolutionCode,
    TransitionInput,
};
use domain::notes::Visibility;
use domain::routing::{self, AssignmentRule};
use persistence::alerts::{self, StoredKey};
use persistence::tickets::TicketTable;
use persistence::{api_tokens, incidents, notes, DbConnection, WriteContext};
use serde::Serialize;
use utoipa::ToSchema;

use super::incidents::{report_in, resolve_in, transition_in};
use crate::auth::{Caller, CallerKind};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What became of one alert of a request, in the order sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Received {
    /// The stored alert (one per key).
    pub id: String,
    pub source: String,
    pub dedup_key: String,
    pub outcome: AlertOutcome,
    /// The incident of the key, if it has one.
    pub incident_id: Option<String>,
}

/// What every alert of a unit of work needs besides itself.
struct Context {
    ctx: WriteContext,
    rules: Arc<Vec<AlertRule>>,
    routing: Arc<Vec<AssignmentRule>>,
    flap_window: Duration,
    /// The API token whose creator incidents are reported for; `None` for an admin user.
    token_id: Option<String>,
    /// The caller of incidents opened, once known.
    reporter: Option<String>,
}

/// Receives `incoming` from `caller`: each alert deduplicated by key, in order.
pub async fn receive(
    state: &AppState,
    caller: Caller,
    incoming: Vec<IncomingAlert>,
) -> ApiResult<Vec<Received>> {
    let _in_progress = state
        .alert_intake
        .try_acquire()
        .map_err(|_| ApiError::TooManyRequests {
            detail: "the alert intake is saturated; retry shortly".into(),
            retry_after: 1,
        })?;
    let rules = alert_rules(state).await?;
    let routing = crate::routes::assignment_rules::routing_rules(state).await?;
    let mut context = Context {
        ctx: state.ticket_context(&caller).await?,
        rules,
        routing,
        flap_window: state.alert_flap_window,
        reporter: (caller.kind == CallerKind::User).then(|| caller.id.clone()),
        token_id: (caller.kind == CallerKind::ApiToken).then_some(caller.id),
    };
    state
        .db
        .write(move |conn| -> ApiResult<Vec<Received>> {
            incoming
                .iter()
                .map(|alert| receive_one(conn, &mut context, alert))
                .collect()
        })
        .await
}

/// The alert rules in the order they are tried, trusted for a second after they were read;
/// a change through the API applies at once on this node.
pub async fn alert_rules(state: &AppState) -> ApiResult<Arc<Vec<AlertRule>>> {
    state
        .alert_rules
        .get_or_read(&(), || async {
            let rules = state.db.read_bounded(alerts::all_rules).await?;
            Ok(Arc::new(rules))
        })
        .await
}

fn receive_one(
    conn: &mut DbConnection,
    context: &mut Context,
    alert: &IncomingAlert,
) -> ApiResult<Received> {
    let now = context.ctx.at.and_utc();
    if alert.status == AlertStatus::Firing {
        // Most alerts of a storm repeat a firing key: counted in one statement.
        let counted =
            alerts::count_if_firing(conn, &alert.source, &alert.dedup_key, context.ctx.at)?;
        if let Some((id, incident_id)) = counted {
            return Ok(Received {
                id,
                source: alert.source.clone(),
                dedup_key: alert.dedup_key.clone(),
                outcome: AlertOutcome::Deduplicated,
                incident_id,
            });
        }
    }
    let stored = alerts::by_key(conn, &alert.source, &alert.dedup_key)?;
    let decision = Decision::of(
        stored.as_ref().map(|s| s.known),
        alert.status,
        now,
        context.flap_window,
    );
    let received = |id: String, incident_id: Option<String>| Received {
        id,
        source: alert.source.clone(),
        dedup_key: alert.dedup_key.clone(),
        outcome: decision.outcome(),
        incident_id,
    };
    let (decision, stored) = match (decision, stored) {
        (Decision::Open, _) | (Decision::ResolvedUnseen, _) => {
            let handling = alert::handling(&context.rules, alert);
            let incident = match (decision, handling.open_incident) {
                (Decision::Open, true) => Some(open_incident(conn, context, alert, &handling)?.id),
                _ => None,
            };
            let rule = handling.rule_id.as_deref();
            let stored = alerts::insert(conn, &context.ctx, alert, incident.as_deref(), rule)?;
            return Ok(received(stored.id, stored.incident_id));
        }
        (decision, Some(stored)) => (decision, stored),
        (_, None) => {
            return Err(ApiError::Internal(
                "an alert decision needs the stored key".into(),
            ))
        }
    };
    let StoredKey {
        id, incident_id, ..
    } = stored;
    match decision {
        Decision::Repeat => {
            alerts::count_repeat(conn, &id, context.ctx.at)?;
            Ok(received(id, incident_id))
        }
        Decision::RepeatResolved => Ok(received(id, incident_id)),
        Decision::Reopen | Decision::Reoccur => {
            let incident = fire_again(conn, context, alert, incident_id.as_deref(), decision)?;
            let action = if decision == Decision::Reopen {
                "reopen"
            } else {
                "fire_again"
            };
            let stored =
                alerts::fire_again(conn, &context.ctx, &id, alert, incident.as_deref(), action)?;
            Ok(received(stored.id, stored.incident_id))
        }
        Decision::Resolve => {
            let stored = alerts::resolve(conn, &context.ctx, &id, alert)?;
            if let Some(incident) = &stored.incident_id {
                all_resolved(conn, context, alert, incident)?;
            }
            Ok(received(stored.id, stored.incident_id))
        }
        Decision::Open | Decision::ResolvedUnseen => {
            Err(ApiError::Internal("a new key was decided as stored".into()))
        }
    }
}

/// The incident of a key firing again: a resolved one reopened when flapping, an open one kept,
/// otherwise a new one if the rules say so.
fn fire_again(
    conn: &mut DbConnection,
    context: &mut Context,
    alert: &IncomingAlert,
    incident_id: Option<&str>,
    decision: Decision,
) -> ApiResult<Option<String>> {
    let current = match incident_id {
        Some(id) => Some(Incident::get(conn, id)?),
        None => None,
    };
    match current {
        Some(incident) if incident.state.is_open() => {
            work_note(
                conn,
                &context.ctx,
                &incident.id,
                &format!(
                    "Alert {} from {} is firing again.",
                    alert.dedup_key, alert.source
                ),
            )?;
            Ok(Some(incident.id))
        }
        Some(incident)
            if incident.state == IncidentState::Resolved && decision == Decision::Reopen =>
        {
            let relation = Relation {
                is_agent: true,
                is_caller: false,
                parent_final: false,
            };
            let input = TransitionInput {
                reason: Some("the alert fired again soon after it resolved (flapping)".into()),
                ..TransitionInput::default()
            };
            let reopened = transition_in(
                conn,
                &context.ctx,
                incident,
                IncidentAction::Reopen,
                &input,
                relation,
            )?;
            work_note(
                conn,
                &context.ctx,
                &reopened.id,
                &format!(
                    "Alert {} from {} fired again within the flapping window: incident reopened.",
                    alert.dedup_key, alert.source
                ),
            )?;
            Ok(Some(reopened.id))
        }
        _ => {
            let handling = alert::handling(&context.rules, alert);
            if !handling.open_incident {
                return Ok(None);
            }
            Ok(Some(open_incident(conn, context, alert, &handling)?.id))
        }
    }
}

/// Every alert of `incident_id` resolved: a work note, and the incident resolved if the rule
/// of the alert says so.
fn all_resolved(
    conn: &mut DbConnection,
    context: &mut Context,
    alert: &IncomingAlert,
    incident_id: &str,
) -> ApiResult<()> {
    if alerts::firing_of_incident(conn, incident_id)? > 0 {
        return Ok(());
    }
    let incident = Incident::get(conn, incident_id)?;
    if !incident.state.is_open() {
        return Ok(());
    }
    let text = format!(
        "Every alert of this incident resolved (last: {} from {}).",
        alert.dedup_key, alert.source
    );
    work_note(conn, &context.ctx, incident_id, &text)?;
    if alert::handling(&context.rules, alert).resolve_incident {
        resolve_in(
            conn,
            &context.ctx,
            &incident,
            ResolutionCode::Fixed,
            "Resolved by monitoring: every alert of the incident resolved.".into(),
            "resolve_by_monitoring",
        )?;
    }
    Ok(())
}

fn work_note(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    incident_id: &str,
    text: &str,
) -> ApiResult<()> {
    notes::add(
        conn,
        ctx,
        incidents::ENTITY,
        incident_id,
        Visibility::Internal,
        text,
        "incident.note_added",
    )?;
    Ok(())
}

/// Opens an incident for `alert` through the incident use case: `channel: monitoring`, the
/// rule's impact, urgency, category and group (or the group the assignment rules route the
/// category to), and the configuration items whose hostname the alert names.
fn open_incident(
    conn: &mut DbConnection,
    context: &mut Context,
    alert: &IncomingAlert,
    handling: &Handling,
) -> ApiResult<Incident> {
    let caller = reporter(conn, context)?;
    let configuration_items = alerts::items_by_hostname(conn, &alert.host_candidates())?;
    let routed = match (&handling.assignment_group, &handling.category) {
        (None, Some(category)) => routing::route(&context.routing, category, None),
        _ => None,
    };
    let new = NewIncident {
        title: alert.incident_title(),
        description: alert.incident_description(),
        caller,
        channel: Channel::Monitoring,
        category: handling.category.clone(),
        subcategory: None,
        impact: handling.impact,
        urgency: handling.urgency,
        assignment_group: handling.assignment_group.clone(),
        assignee: None,
        parent_id: None,
        external_refs: Vec::new(),
        configuration_items: configuration_items.into_iter().take(50).collect(),
        service: None,
    };
    report_in(conn, &context.ctx, new, routed)
}

/// The user incidents from alerts are reported for: the admin sending them, or the user who
/// created the API token sending them (through the tokens that created it, if a token did).
fn reporter(conn: &mut DbConnection, context: &mut Context) -> ApiResult<String> {
    if let Some(known) = &context.reporter {
        return Ok(known.clone());
    }
    let token = context
        .token_id
        .as_deref()
        .ok_or_else(|| ApiError::Internal("an alert sender is neither user nor token".into()))?;
    let created_by = api_tokens::creating_user(conn, token)?.ok_or_else(|| {
        ApiError::Forbidden(
            "this API token has no creating user to report incidents for; create another".into(),
        )
    })?;
    context.reporter = Some(created_by.clone());
    Ok(created_by)
}
