//! The monitoring intake: alerts deduplicated by key, incidents opened, reopened and resolved
//! for them through the incident use cases.
//!
//! Alerts change existing rows (counts, the incident of a key), so they run on the primary
//! writer. Requests wait in the intake's queue while a unit of work runs; the next unit takes
//! every request waiting and handles them together (see [`receive_together`]): the storm's
//! common case, repeats of firing keys, costs one lookup and one update for the whole unit
//! however many requests repeat the same key, and each request is answered only after the
//! commit. At most `ITSM_ALERT_QUEUE` requests are in progress; past that the intake answers
//! 429 with `Retry-After` at once instead of letting senders time out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{Duration, NaiveDateTime};
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
use persistence::{api_tokens, incidents, notes, Backend, Database, DbConnection, WriteContext};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
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
#[derive(Clone)]
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
    let context = Context {
        ctx: state.ticket_context(&caller).await?,
        rules,
        routing,
        flap_window: state.alert_flap_window,
        reporter: (caller.kind == CallerKind::User).then(|| caller.id.clone()),
        token_id: (caller.kind == CallerKind::ApiToken).then_some(caller.id),
    };
    state
        .alert_queue
        .submit(
            &state.db,
            Request {
                context,
                incoming,
                returned: false,
            },
        )
        .await
}

/// One request of the intake: its alerts, and what they need besides themselves.
#[derive(Clone)]
struct Request {
    context: Context,
    incoming: Vec<IncomingAlert>,
    /// Back from the writers of new rows: the primary writer stores it whatever its keys.
    returned: bool,
}

impl Request {
    fn all_firing(&self) -> bool {
        self.incoming
            .iter()
            .all(|a| a.status == AlertStatus::Firing)
    }

    fn keys(&self) -> impl Iterator<Item = alerts::Key> + '_ {
        self.incoming
            .iter()
            .map(|a| (a.source.clone(), a.dedup_key.clone()))
    }
}

struct Waiting {
    request: Request,
    answer: oneshot::Sender<ApiResult<Vec<Received>>>,
}

/// The most requests, and the most alerts, one unit of work takes from the queue.
const MOST_REQUESTS: usize = 256;
const MOST_ALERTS: usize = 4096;

/// The queue of alert requests waiting for the write path, and the task that takes them to it
/// (started by the first request). Its length is bounded by the intake's permits.
pub struct Intake {
    queue: mpsc::UnboundedSender<Waiting>,
    taker: Mutex<Option<mpsc::UnboundedReceiver<Waiting>>>,
}

impl Default for Intake {
    fn default() -> Self {
        let (queue, taker) = mpsc::unbounded_channel();
        Self {
            queue,
            taker: Mutex::new(Some(taker)),
        }
    }
}

impl Intake {
    /// Queues `request` and waits until the unit of work that took it committed.
    async fn submit(&self, db: &Database, request: Request) -> ApiResult<Vec<Received>> {
        let taker = self
            .taker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(taker) = taker {
            let taking = Taking {
                db: db.clone(),
                queue: self.queue.downgrade(),
                new_keys: Arc::new(Mutex::new(HashMap::new())),
                reporters: Arc::new(Mutex::new(HashMap::new())),
            };
            // A thread of its own, not a task on the worker the first request came to: the
            // queue outlives any one worker (a graceful stop ends them one by one), and the
            // thread ends with the queue (the state dropped).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    ApiError::Unavailable(format!("cannot start the alert intake: {e}"))
                })?;
            std::thread::Builder::new()
                .name("itsm-alert-intake".into())
                .spawn(move || runtime.block_on(taking.run(taker)))
                .map_err(|e| {
                    ApiError::Unavailable(format!("cannot start the alert intake: {e}"))
                })?;
        }
        let (answer, answered) = oneshot::channel();
        let stopped = || ApiError::Unavailable("the alert intake stopped; retry shortly".into());
        self.queue
            .send(Waiting { request, answer })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Keys being stored for the first time on a writer of new rows, each with the requests that
/// name it and wait for that to commit.
type NewKeys = Arc<Mutex<HashMap<alerts::Key, Vec<Waiting>>>>;

/// The task that takes the intake's requests to the write path.
struct Taking {
    db: Database,
    /// To queue again a request that waited for a new key, or found it taken; weak, so that
    /// the queue closes when the state is dropped.
    queue: mpsc::WeakUnboundedSender<Waiting>,
    new_keys: NewKeys,
    /// The user each API token reports incidents for (a token's creator never changes).
    reporters: Reporters,
}

type Reporters = Arc<Mutex<HashMap<String, String>>>;

impl Taking {
    /// Takes every request waiting (up to a bound) into one unit of work on the primary
    /// writer, waits for its commit, answers each request, and takes the requests that arrived
    /// meanwhile. On PostgreSQL, requests whose every key is new go on to the writers of new
    /// rows, several at once (see [`open_new_keys`]).
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Waiting>) {
        let defer_new = self.db.backend() == Backend::Postgres;
        while let Some(first) = queue.recv().await {
            let mut alerts = first.request.incoming.len();
            let mut waiting = vec![first];
            while waiting.len() < MOST_REQUESTS && alerts < MOST_ALERTS {
                match queue.try_recv() {
                    Ok(next) => {
                        alerts += next.request.incoming.len();
                        waiting.push(next);
                    }
                    Err(_) => break,
                }
            }
            let waiting = self.hold_back_new_keys(waiting);
            if waiting.is_empty() {
                continue;
            }
            let (requests, answers): (Vec<Request>, Vec<_>) = waiting
                .into_iter()
                .map(|waiting| (waiting.request, waiting.answer))
                .unzip();
            let outcome = self
                .db
                .write(move |conn| receive_together(conn, requests, defer_new))
                .await;
            match outcome {
                Ok(handled) => {
                    for (answer, handled) in answers.into_iter().zip(handled) {
                        match handled {
                            // The sender may have gone away: nothing to answer.
                            Handled::Done(result) => drop(answer.send(result)),
                            Handled::New(request) => self.open_new(Waiting { request, answer }),
                        }
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Err(shared(&error)));
                    }
                }
            }
        }
    }

    /// Sets aside the requests naming a key that a writer of new rows is storing now: they
    /// are queued again once it committed (or failed).
    fn hold_back_new_keys(&self, waiting: Vec<Waiting>) -> Vec<Waiting> {
        let mut new_keys = self
            .new_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if new_keys.is_empty() {
            return waiting;
        }
        let mut go = Vec::with_capacity(waiting.len());
        for waiting in waiting {
            let held = waiting
                .request
                .keys()
                .find(|key| new_keys.contains_key(key));
            match held {
                Some(key) => new_keys.entry(key).or_default().push(waiting),
                None => go.push(waiting),
            }
        }
        go
    }

    /// Stores the new keys of `waiting` on a writer of new rows, unless another request is
    /// storing one of them (then it waits for that one).
    fn open_new(&self, waiting: Waiting) {
        let keys: Vec<alerts::Key> = {
            let mut new_keys = self
                .new_keys
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let held = waiting
                .request
                .keys()
                .find(|key| new_keys.contains_key(key));
            if let Some(key) = held {
                new_keys.entry(key).or_default().push(waiting);
                return;
            }
            let keys: Vec<alerts::Key> = waiting.request.keys().collect();
            for key in &keys {
                new_keys.entry(key.clone()).or_default();
            }
            keys
        };
        let (db, queue, new_keys) = (self.db.clone(), self.queue.clone(), self.new_keys.clone());
        let reporters = self.reporters.clone();
        tokio::spawn(async move {
            let Waiting {
                mut request,
                answer,
            } = waiting;
            if let (None, Some(token)) = (&request.context.reporter, &request.context.token_id) {
                let known = lock(&reporters).get(token).cloned();
                request.context.reporter = known;
            }
            let storing = request.clone();
            let outcome = db
                .write_new_rows(move |conn| open_new_keys(conn, &storing))
                .await;
            match outcome {
                Ok((received, reporter)) => {
                    if let (Some(token), Some(reporter)) = (&request.context.token_id, reporter) {
                        lock(&reporters).insert(token.clone(), reporter);
                    }
                    drop(answer.send(Ok(received)))
                }
                // A key was stored meanwhile (by another node): the primary writer counts it
                // as a repeat.
                Err(ApiError::ConstraintViolation { .. }) => {
                    let request = Request {
                        returned: true,
                        ..request
                    };
                    requeue(&queue, Waiting { request, answer });
                }
                Err(error) => drop(answer.send(Err(error))),
            }
            let mut new_keys = new_keys
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for key in keys {
                for waiting in new_keys.remove(&key).unwrap_or_default() {
                    requeue(&queue, waiting);
                }
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Queues `waiting` again; answered at once if the intake is gone.
fn requeue(queue: &mpsc::WeakUnboundedSender<Waiting>, waiting: Waiting) {
    let Some(queue) = queue.upgrade() else {
        let stopped = ApiError::Unavailable("the alert intake stopped; retry shortly".into());
        let _ = waiting.answer.send(Err(stopped));
        return;
    };
    if let Err(mpsc::error::SendError(waiting)) = queue.send(waiting) {
        let stopped = ApiError::Unavailable("the alert intake stopped; retry shortly".into());
        let _ = waiting.answer.send(Err(stopped));
    }
}

/// The failure of a unit of work, for each of its requests.
fn shared(error: &ApiError) -> ApiError {
    match error {
        ApiError::Outage(outage) => ApiError::Outage(*outage),
        ApiError::Unavailable(detail) => ApiError::Unavailable(detail.clone()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// What became of a request in a unit of work of the primary writer.
enum Handled {
    Done(ApiResult<Vec<Received>>),
    /// Every key of the request is new: it goes on to a writer of new rows.
    New(Request),
}

/// Receives `requests` in one unit of work. Requests made only of repeats of firing keys are
/// counted together: one lookup of the keys of the unit (locking their rows on PostgreSQL),
/// then one update of each key's count, however many requests repeat it. With `defer_new`,
/// requests whose every key is new are handed back, to be stored by the writers of new rows.
/// Every other request runs alone, in order, in a savepoint of its own, so that one that fails
/// leaves nothing behind and the others stand. The requests of a unit are concurrent (none is
/// answered before the commit): counting the repeats first is one of their orders.
fn receive_together(
    conn: &mut DbConnection,
    requests: Vec<Request>,
    defer_new: bool,
) -> ApiResult<Vec<Handled>> {
    let mut seen = HashSet::new();
    let keys: Vec<alerts::Key> = requests
        .iter()
        .filter(|request| request.all_firing())
        .flat_map(Request::keys)
        .filter(|key| seen.insert(key.clone()))
        .collect();
    let stored = alerts::states_of_keys(conn, &keys)?;
    let mut repeats: HashMap<&str, (i64, NaiveDateTime)> = HashMap::new();
    let mut handled: Vec<Option<Handled>> = Vec::with_capacity(requests.len());
    let mut rest: Vec<Option<Request>> = Vec::with_capacity(requests.len());
    for request in requests {
        if !request.all_firing() {
            handled.push(None);
            rest.push(Some(request));
            continue;
        }
        let states: Vec<Option<&alerts::KeyState>> =
            request.keys().map(|key| stored.get(&key)).collect();
        let distinct = || {
            let mut keys = HashSet::new();
            request.keys().all(|key| keys.insert(key))
        };
        if defer_new && !request.returned && states.iter().all(Option::is_none) && distinct() {
            handled.push(Some(Handled::New(request)));
            rest.push(None);
            continue;
        }
        if !states.iter().all(|s| s.is_some_and(|s| s.firing)) {
            handled.push(None);
            rest.push(Some(request));
            continue;
        }
        let at = request.context.ctx.at;
        let received = request
            .incoming
            .iter()
            .zip(states.into_iter().flatten())
            .map(|(alert, state)| {
                let counted = repeats.entry(state.id.as_str()).or_insert((0, at));
                counted.0 += 1;
                counted.1 = counted.1.max(at);
                Received {
                    id: state.id.clone(),
                    source: alert.source.clone(),
                    dedup_key: alert.dedup_key.clone(),
                    outcome: AlertOutcome::Deduplicated,
                    incident_id: state.incident_id.clone(),
                }
            })
            .collect();
        handled.push(Some(Handled::Done(Ok(received))));
        rest.push(None);
    }
    let mut repeats: Vec<(String, i64, NaiveDateTime)> = repeats
        .into_iter()
        .map(|(id, (n, at))| (id.to_owned(), n, at))
        .collect();
    // In id order, the order the lookup locked them in.
    repeats.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    alerts::count_repeats(conn, &repeats)?;
    // The user incidents are reported for, per API token, found once for the unit.
    let mut reporters: HashMap<String, String> = HashMap::new();
    for (outcome, request) in handled.iter_mut().zip(rest) {
        let Some(Request {
            mut context,
            incoming,
            ..
        }) = request
        else {
            continue;
        };
        if context.reporter.is_none() {
            let known = context.token_id.as_ref().and_then(|t| reporters.get(t));
            context.reporter = known.cloned();
        }
        let result = persistence::in_savepoint(conn, |conn| {
            incoming
                .iter()
                .map(|alert| receive_one(conn, &mut context, alert))
                .collect::<ApiResult<Vec<_>>>()
        });
        if let (Some(token), Some(reporter)) = (&context.token_id, &context.reporter) {
            reporters.insert(token.clone(), reporter.clone());
        }
        *outcome = Some(Handled::Done(result));
    }
    Ok(handled
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                Handled::Done(Err(ApiError::Internal("a request was not handled".into())))
            })
        })
        .collect())
}

/// Stores the alerts of `request`, whose keys were all new when the primary writer looked, as
/// a unit of work of the writers of new rows: it only adds rows (alerts, incidents). A key
/// stored by now (by another node) fails it with [`taken`], as does a key stored meanwhile by
/// a transaction not yet committed (a unique violation once that one commits): the request
/// then goes back to the primary writer. May run twice (see `Database::write_new_rows`).
/// Also returns the user incidents were reported for, if it was looked up.
fn open_new_keys(
    conn: &mut DbConnection,
    request: &Request,
) -> ApiResult<(Vec<Received>, Option<String>)> {
    let mut context = request.context.clone();
    let mut received = Vec::with_capacity(request.incoming.len());
    for alert in &request.incoming {
        if alerts::by_key(conn, &alert.source, &alert.dedup_key)?.is_some() {
            return Err(taken());
        }
        received.push(store_new_key(conn, &mut context, alert, Decision::Open)?);
    }
    Ok((received, context.reporter))
}

/// A key [`open_new_keys`] found stored: the request goes back to the primary writer.
fn taken() -> ApiError {
    ApiError::ConstraintViolation {
        cause: "the alert key was stored meanwhile".into(),
    }
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
            return store_new_key(conn, context, alert, decision);
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

/// Stores a key never seen (`Decision::Open` or `Decision::ResolvedUnseen`), opening its
/// incident when it fires and the rules say so.
fn store_new_key(
    conn: &mut DbConnection,
    context: &mut Context,
    alert: &IncomingAlert,
    decision: Decision,
) -> ApiResult<Received> {
    let handling = alert::handling(&context.rules, alert);
    let incident = match (decision, handling.open_incident) {
        (Decision::Open, true) => Some(open_incident(conn, context, alert, &handling)?.id),
        _ => None,
    };
    let rule = handling.rule_id.as_deref();
    let stored = alerts::insert(conn, &context.ctx, alert, incident.as_deref(), rule)?;
    Ok(Received {
        id: stored.id,
        source: alert.source.clone(),
        dedup_key: alert.dedup_key.clone(),
        outcome: decision.outcome(),
        incident_id: stored.incident_id,
    })
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
