//! SLA timers of tickets and their timelines.
//!
//! A timer row keeps its clock (how far it has run, whether it runs, what it has read: see
//! [`ClockSnapshot`]) for lists, list filters and the worker, which looks at a timer only when
//! its `next_alarm_at` falls due; its timeline, the record of why, is kept in the row as one
//! JSON line per line, appended to and read back only to show the timeline or to replay it
//! under another calendar version. Every change to a timer goes through [`settle`] (or, for
//! the worker's chunks, [`fire_all`]), which goes on from the stored clock, appends the lines,
//! announces each warning and breach crossed (a line and an event, once), runs the policy's
//! escalations, and stores the new clock under a version check, so that two nodes (or the
//! worker and a ticket save) never announce the same breach twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use domain::calendar::Calendar;
use domain::incident::Incident;
use domain::problem::Problem;
use domain::sla::{
    Clock, ClockSnapshot, EscalationAction, Reading, SlaMetric, Threshold, TimerState,
};
use domain::sla_timers::{
    self as timers, SlaRules, SlaView, TimelineKind, TimelineLine, TimerHead, TimerRecord,
    TimerStep,
};
use domain::ticket::{Ticket, TicketKind};
use serde_json::json;

use crate::schema::{calendars, sla_timers};
use crate::tickets::{self, stored, Change, TicketTable};
use crate::{audit, fixed_update, journal, utc, DbConnection, Slice, StoreError, WriteContext};

pub const TIMER: &str = "sla_timer";

/// The list position of timers that have no due time (paused, or stopped before one).
fn end_of_time() -> NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(NaiveDateTime::MAX)
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sla_timers)]
// None binds NULL (see `insert_rows!`).
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct TimerRow {
    id: String,
    ticket_type: String,
    ticket_id: String,
    metric: String,
    policy_id: String,
    calendar_id: String,
    calendar_version: i64,
    warning_percent: i32,
    target_seconds: i64,
    state: String,
    started_at: NaiveDateTime,
    as_of: NaiveDateTime,
    elapsed_seconds: i64,
    paused_seconds: i64,
    due_at: Option<NaiveDateTime>,
    warned_at: Option<NaiveDateTime>,
    breached_at: Option<NaiveDateTime>,
    stopped_at: Option<NaiveDateTime>,
    next_alarm_at: Option<NaiveDateTime>,
    due_order: NaiveDateTime,
    version: i64,
    clock_running: bool,
    /// The lines as stored (see [`timeline_text`]); a settled timer's new lines are appended
    /// by its UPDATE, not here.
    timeline: String,
}

/// Lines as stored in a timer's `timeline`: each line's JSON and a newline.
fn timeline_text(lines: &[TimelineLine]) -> Result<String, StoreError> {
    let mut text = String::new();
    for line in lines {
        text.push_str(&serde_json::to_string(line).map_err(|e| corrupt_timeline(&e))?);
        text.push('\n');
    }
    Ok(text)
}

/// The lines of a stored `timeline`, in order.
pub(crate) fn timeline_lines(text: &str) -> Result<Vec<TimelineLine>, StoreError> {
    text.lines()
        .map(|line| serde_json::from_str(line).map_err(|e| corrupt_timeline(&e)))
        .collect()
}

fn corrupt_timeline(error: &serde_json::Error) -> StoreError {
    StoreError::Database(diesel::result::Error::DeserializationError(
        format!("an SLA timeline line: {error}").into(),
    ))
}

impl TimerRow {
    fn state(&self) -> Result<TimerState, StoreError> {
        stored("timer state", &self.state)
    }

    fn ended(&self) -> bool {
        self.stopped_at.is_some()
    }

    fn head(&self) -> Result<TimerHead, StoreError> {
        let state = self.state()?;
        Ok(TimerHead {
            metric: stored("metric", &self.metric)?,
            policy_id: self.policy_id.clone(),
            target_seconds: self.target_seconds,
            paused: state == TimerState::Paused,
            ended: self.ended(),
            canceled: state == TimerState::Canceled,
        })
    }

    fn warning_percent(&self) -> u8 {
        u8::try_from(self.warning_percent).unwrap_or(75)
    }

    /// The stored clock, as it stood at `as_of`.
    fn clock(&self) -> Result<Clock, StoreError> {
        Ok(Clock::resume(&ClockSnapshot {
            state: self.state()?,
            started_at: utc(self.started_at),
            position: utc(self.as_of),
            running: self.clock_running,
            target_seconds: self.target_seconds,
            elapsed_seconds: self.elapsed_seconds,
            paused_seconds: self.paused_seconds,
            warned_at: self.warned_at.map(utc),
            breached_at: self.breached_at.map(utc),
            stopped_at: self.stopped_at.map(utc),
        }))
    }

    /// The timer as the API shows it, read at `now`.
    fn read_at(&self, calendar: &Calendar, now: DateTime<Utc>) -> Result<TimerRecord, StoreError> {
        let mut clock = self.clock()?;
        clock.run_until(calendar, self.warning_percent(), now);
        self.record(&clock.reading)
    }

    fn record(&self, reading: &Reading) -> Result<TimerRecord, StoreError> {
        Ok(TimerRecord {
            id: self.id.clone(),
            ticket_type: stored("ticket type", &self.ticket_type)?,
            ticket_id: self.ticket_id.clone(),
            metric: stored("metric", &self.metric)?,
            state: reading.state,
            started_at: reading.started_at,
            due_at: reading.due_at,
            elapsed_seconds: reading.elapsed_seconds,
            paused_seconds: reading.paused_seconds,
            remaining_seconds: reading.remaining_seconds,
            target_seconds: reading.target_seconds,
            warned_at: reading.warned_at,
            breached_at: reading.breached_at,
            stopped_at: reading.stopped_at,
            policy_id: self.policy_id.clone(),
            calendar_id: self.calendar_id.clone(),
            calendar_version: self.calendar_version,
            version: self.version,
        })
    }
}

fn corrupt(id: &str) -> StoreError {
    StoreError::Database(diesel::result::Error::DeserializationError(
        format!("SLA timer {id} has no start line").into(),
    ))
}

/// A calendar version: from the rules when it is the current one, else from storage.
fn calendar_of(
    conn: &mut DbConnection,
    rules: Option<&SlaRules>,
    id: &str,
    version: i64,
) -> Result<Arc<Calendar>, StoreError> {
    if let Some(current) = rules
        .and_then(|r| r.calendar(id))
        .filter(|c| c.version == version)
    {
        return Ok(current.calendar.clone());
    }
    let definition = crate::sla::calendar_version(conn, id, version)?;
    crate::sla::parsed_calendar(id, version, &definition)
}

fn timer_row(conn: &mut DbConnection, id: &str) -> Result<TimerRow, StoreError> {
    journal::write_timers(conn)?;
    Ok(sla_timers::table
        .find(id)
        .select(TimerRow::as_select())
        .get_result(conn)?)
}

/// The timers of a ticket; on PostgreSQL locked until the unit of work commits, so that the
/// worker's claim of one of them waits for this save instead of failing it.
fn timers_of_locked(conn: &mut DbConnection, ticket_id: &str) -> Result<Vec<TimerRow>, StoreError> {
    journal::write_timers(conn)?;
    let query = sla_timers::table
        .filter(sla_timers::ticket_id.eq(ticket_id))
        .order(sla_timers::started_at);
    Ok(match conn {
        DbConnection::Postgresql(c) => query.select(TimerRow::as_select()).for_update().load(c)?,
        DbConnection::Sqlite(c) => query.select(TimerRow::as_select()).load(c)?,
    })
}

/// Brings a ticket's timers in line with a change from `before` (`None`: it is new) to
/// `after`, under the rules of `ctx`; `audit_entry_id` is the change's audit entry.
pub(crate) fn follow<T: Ticket>(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    before: Option<&T>,
    after: &T,
    audit_entry_id: &str,
) -> Result<(), StoreError> {
    let Some(rules) = ctx.sla.as_deref().filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let Some(view) = after.sla_view() else {
        return Ok(());
    };
    let before_view = before.and_then(Ticket::sla_view);
    if before_view == Some(view) {
        return Ok(());
    }
    let rows = match before {
        Some(_) => timers_of_locked(conn, after.id())?,
        None => Vec::new(),
    };
    bring_in_line(
        conn,
        ctx,
        rules,
        before_view.as_ref(),
        after,
        rows,
        Some(audit_entry_id),
    )
}

/// Brings the timers of tickets timed under `policy_id` in line with the policies of `ctx` (the
/// policy as just edited): a new target applies to the time already elapsed and paused, and a
/// ticket the policy no longer covers goes to the policy that covers it now, or its timers are
/// canceled. The number of tickets looked at.
pub fn follow_policy(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    policy_id: &str,
) -> Result<usize, StoreError> {
    let Some(rules) = ctx.sla.as_deref() else {
        return Ok(0);
    };
    journal::write_timers(conn)?;
    let tickets: Vec<(String, String)> = sla_timers::table
        .filter(sla_timers::policy_id.eq(policy_id))
        .filter(sla_timers::stopped_at.is_null())
        .select((sla_timers::ticket_type, sla_timers::ticket_id))
        .distinct()
        .load(conn)?;
    for (ticket_type, ticket_id) in &tickets {
        match stored::<TicketKind>("ticket type", ticket_type)? {
            TicketKind::Incident => follow_ticket::<Incident>(conn, ctx, rules, ticket_id)?,
            TicketKind::Problem => follow_ticket::<Problem>(conn, ctx, rules, ticket_id)?,
            _ => {}
        }
    }
    Ok(tickets.len())
}

/// Plans ticket `id`'s timers again as it stands (see [`follow_policy`]).
fn follow_ticket<T: TicketTable>(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    rules: &SlaRules,
    id: &str,
) -> Result<(), StoreError> {
    let ticket = T::get(conn, id)?;
    let Some(view) = ticket.sla_view() else {
        return Ok(());
    };
    let rows = timers_of_locked(conn, id)?;
    bring_in_line(conn, ctx, rules, Some(&view), &ticket, rows, None)
}

/// Runs the plan from `before_view` to `after`'s view over its timers `rows`: starts the
/// timers it needs and settles the others with their new lines, which point to the audit entry
/// of the change, if there is one.
fn bring_in_line<T: Ticket>(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    rules: &SlaRules,
    before_view: Option<&SlaView<'_>>,
    after: &T,
    rows: Vec<TimerRow>,
    audit_entry_id: Option<&str>,
) -> Result<(), StoreError> {
    let Some(view) = after.sla_view() else {
        return Ok(());
    };
    let heads = rows
        .iter()
        .map(TimerRow::head)
        .collect::<Result<Vec<_>, _>>()?;
    let steps = timers::plan(rules, before_view, &view, &heads);
    if steps.is_empty() {
        return Ok(());
    }
    let now = utc(ctx.at);
    let mut new_lines: HashMap<usize, Vec<TimelineLine>> = HashMap::new();
    let mut started = Vec::new();
    for step in steps {
        match step {
            TimerStep::Start {
                metric,
                policy_id,
                calendar_id,
                target_seconds,
                warning_percent,
                paused,
                reason,
            } => {
                let Some(calendar) = rules.calendar(&calendar_id) else {
                    continue;
                };
                let line = |kind, target_seconds, policy_id, reason| TimelineLine {
                    at: now,
                    kind,
                    reason,
                    target_seconds,
                    policy_id,
                    calendar_version: calendar.version,
                    audit_entry_id: audit_entry_id.map(str::to_owned),
                };
                let mut lines = vec![line(
                    TimelineKind::Start,
                    Some(target_seconds),
                    Some(policy_id.clone()),
                    reason,
                )];
                if paused {
                    let why = format!("state {}", view.state);
                    lines.push(line(TimelineKind::Pause, None, None, why));
                }
                let row = TimerRow {
                    id: crate::new_id(),
                    ticket_type: T::KIND.as_str().to_owned(),
                    ticket_id: after.id().to_owned(),
                    metric: metric.as_str().to_owned(),
                    policy_id,
                    calendar_id,
                    calendar_version: calendar.version,
                    warning_percent: i32::from(warning_percent),
                    target_seconds,
                    state: TimerState::Running.as_str().to_owned(),
                    started_at: ctx.at,
                    as_of: ctx.at,
                    elapsed_seconds: 0,
                    paused_seconds: 0,
                    due_at: None,
                    warned_at: None,
                    breached_at: None,
                    stopped_at: None,
                    next_alarm_at: None,
                    due_order: end_of_time(),
                    version: 0,
                    clock_running: true,
                    timeline: String::new(),
                };
                let clock = row.clock()?;
                let settled = Settled::read(row, clock, lines, &calendar.calendar, now)?;
                started.push(settled);
            }
            TimerStep::Line {
                timer,
                kind,
                target_seconds,
                policy_id,
                reason,
            } => {
                let calendar_version = rows[timer].calendar_version;
                new_lines.entry(timer).or_default().push(TimelineLine {
                    at: now,
                    kind,
                    reason,
                    target_seconds,
                    policy_id,
                    calendar_version,
                    audit_entry_id: audit_entry_id.map(str::to_owned),
                });
            }
        }
    }
    insert_new(conn, ctx, started)?;
    for (index, lines) in new_lines {
        let mut row = rows[index].clone();
        if let Some(policy) = lines.iter().rev().find_map(|l| l.policy_id.clone()) {
            row.policy_id = policy;
        }
        let calendar = calendar_of(conn, Some(rules), &row.calendar_id, row.calendar_version)?;
        let clock = row.clock()?;
        settle(conn, ctx, row, clock, lines, &calendar)?;
    }
    Ok(())
}

/// A timer gone on from its clock with new lines: the lines to store, what it crossed and must
/// announce.
struct Settled {
    row: TimerRow,
    /// The indexed columns as read, before the settle (see [`store`]).
    before: IndexedColumns,
    reading: Reading,
    /// The new lines, to append to the timeline.
    lines: Vec<TimelineLine>,
    announcements: Vec<(Threshold, DateTime<Utc>)>,
}

impl Settled {
    /// Runs `clock` (the timer's, as stored or replayed) through the `new` lines to `now`, adds
    /// a line for each warning and breach it crossed that was not announced yet, and sets the
    /// new clock in the row (with the next version).
    fn read(
        mut row: TimerRow,
        mut clock: Clock,
        mut lines: Vec<TimelineLine>,
        calendar: &Calendar,
        now: DateTime<Utc>,
    ) -> Result<Settled, StoreError> {
        let before = IndexedColumns::of(&row);
        let warning_percent = row.warning_percent();
        for entry in timers::clock_events(&lines) {
            clock.apply(calendar, warning_percent, &entry);
        }
        clock.run_until(calendar, warning_percent, now);
        let announcements = timers::unannounced(
            &clock.reading,
            row.warned_at.is_some(),
            row.breached_at.is_some(),
        );
        for &(threshold, at) in &announcements {
            let (kind, reason) = match threshold {
                Threshold::Warning => (
                    TimelineKind::Warning,
                    format!("{}% of the target ran", row.warning_percent),
                ),
                Threshold::Breach => (TimelineKind::Breach, "the target ran out".to_owned()),
            };
            lines.push(TimelineLine {
                at,
                kind,
                reason,
                target_seconds: None,
                policy_id: None,
                calendar_version: row.calendar_version,
                audit_entry_id: None,
            });
            match threshold {
                Threshold::Warning => row.warned_at = Some(at.naive_utc()),
                Threshold::Breach => row.breached_at = Some(at.naive_utc()),
            }
        }
        let announced = (row.warned_at.is_some(), row.breached_at.is_some());
        let reading = clock.reading;
        row.state = reading.state.as_str().to_owned();
        row.as_of = clock.position.naive_utc();
        row.clock_running = clock.running;
        row.target_seconds = reading.target_seconds;
        row.elapsed_seconds = reading.elapsed_seconds;
        row.paused_seconds = reading.paused_seconds;
        row.due_at = reading.due_at.map(|at| at.naive_utc());
        row.stopped_at = reading.stopped_at.map(|at| at.naive_utc());
        row.next_alarm_at = timers::next_alarm(&reading, calendar, warning_percent, now, announced)
            .map(|at| at.naive_utc());
        row.due_order = match (reading.stopped_at, reading.due_at) {
            (None, Some(due)) => due.naive_utc(),
            _ => end_of_time(),
        };
        row.version += 1;
        Ok(Settled {
            before,
            row,
            reading,
            lines,
            announcements,
        })
    }

    /// The events and escalations of what it crossed.
    fn announce(&self, conn: &mut DbConnection, ctx: &WriteContext) -> Result<(), StoreError> {
        if self.announcements.is_empty() {
            return Ok(());
        }
        let record = self.row.record(&self.reading)?;
        announce(conn, ctx, &self.row, &record, &self.announcements)
    }
}

/// Stores new timers: their rows wait in the journal with the batch's others.
fn insert_new(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    started: Vec<Settled>,
) -> Result<(), StoreError> {
    let timers = started
        .iter()
        .map(|settled| {
            let mut row = settled.row.clone();
            row.timeline = timeline_text(&settled.lines)?;
            Ok(row)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    journal::add_timers(timers)?;
    for settled in &started {
        settled.announce(conn, ctx)?;
    }
    Ok(())
}

/// Runs a stored timer's `clock` through `new` lines and stores it with the lines (see
/// [`Settled::read`]), with its announcements. `Ok(false)` when the stored timer is no longer
/// at `row`'s version (another node or unit settled it first): nothing was written.
fn settle(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    row: TimerRow,
    clock: Clock,
    new: Vec<TimelineLine>,
    calendar: &Calendar,
) -> Result<bool, StoreError> {
    let previous = row.version;
    let settled = Settled::read(row, clock, new, calendar, utc(ctx.at))?;
    if !store(conn, previous, &settled)? {
        return Ok(false);
    }
    settled.announce(conn, ctx)?;
    Ok(true)
}

/// The columns of a timer that its indexes cover, as read. A settle writes only those it
/// changed: SQLite rewrites the entries of every index over a column its `SET` names, changed
/// or not, and a warning or a breach (most of the worker's settles) changes only the next alarm
/// of the four indexed columns.
struct IndexedColumns {
    state: String,
    due_at: Option<NaiveDateTime>,
    breached_at: Option<NaiveDateTime>,
    next_alarm_at: Option<NaiveDateTime>,
    due_order: NaiveDateTime,
}

impl IndexedColumns {
    fn of(row: &TimerRow) -> Self {
        Self {
            state: row.state.clone(),
            due_at: row.due_at,
            breached_at: row.breached_at,
            next_alarm_at: row.next_alarm_at,
            due_order: row.due_order,
        }
    }
}

/// Writes a settled timer if it is still at version `previous`: whether it was.
fn store(conn: &mut DbConnection, previous: i64, settled: &Settled) -> Result<bool, StoreError> {
    let (row, before) = (&settled.row, &settled.before);
    let changes = (
        sla_timers::policy_id.eq(&row.policy_id),
        sla_timers::calendar_version.eq(row.calendar_version),
        sla_timers::target_seconds.eq(row.target_seconds),
        (before.state != row.state).then(|| sla_timers::state.eq(&row.state)),
        sla_timers::as_of.eq(row.as_of),
        sla_timers::elapsed_seconds.eq(row.elapsed_seconds),
        sla_timers::paused_seconds.eq(row.paused_seconds),
        (before.due_at != row.due_at).then(|| sla_timers::due_at.eq(row.due_at)),
        sla_timers::warned_at.eq(row.warned_at),
        (before.breached_at != row.breached_at)
            .then(|| sla_timers::breached_at.eq(row.breached_at)),
        sla_timers::stopped_at.eq(row.stopped_at),
        (before.next_alarm_at != row.next_alarm_at)
            .then(|| sla_timers::next_alarm_at.eq(row.next_alarm_at)),
        (before.due_order != row.due_order).then(|| sla_timers::due_order.eq(row.due_order)),
        sla_timers::version.eq(row.version),
        sla_timers::clock_running.eq(row.clock_running),
        sla_timers::timeline.eq(sla_timers::timeline.concat(timeline_text(&settled.lines)?)),
    );
    let this_version = sla_timers::id
        .eq(&row.id)
        .and(sla_timers::version.eq(previous));
    let updated = with_backend!(conn, c => fixed_update(sla_timers::table, changes, this_version)
        .execute(c))?;
    Ok(updated > 0)
}

/// [`store`] for many timers in one statement (PostgreSQL, where a statement per timer made
/// the worker's round trips its limit): the ids of those still at their `previous` version,
/// which were written.
fn store_all(
    conn: &mut diesel::PgConnection,
    settled: &[(i64, Settled)],
) -> Result<HashSet<String>, StoreError> {
    use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let rows = || settled.iter().map(|(_, s)| &s.row);
    let lines = settled
        .iter()
        .map(|(_, s)| timeline_text(&s.lines))
        .collect::<Result<Vec<_>, _>>()?;
    let stored: Vec<Stored> = diesel::sql_query(
        "UPDATE sla_timers AS t SET policy_id = u.policy_id, \
             calendar_version = u.calendar_version, target_seconds = u.target_seconds, \
             state = u.state, as_of = u.as_of, elapsed_seconds = u.elapsed_seconds, \
             paused_seconds = u.paused_seconds, due_at = u.due_at, warned_at = u.warned_at, \
             breached_at = u.breached_at, stopped_at = u.stopped_at, \
             next_alarm_at = u.next_alarm_at, due_order = u.due_order, version = u.version, \
             clock_running = u.clock_running, timeline = t.timeline || u.lines \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
             $6::text[], $7::timestamp[], $8::bigint[], $9::bigint[], $10::timestamp[], \
             $11::timestamp[], $12::timestamp[], $13::timestamp[], $14::timestamp[], \
             $15::timestamp[], $16::bigint[], $17::boolean[], $18::text[]) \
             AS u(id, previous, policy_id, calendar_version, target_seconds, state, as_of, \
                  elapsed_seconds, paused_seconds, due_at, warned_at, breached_at, stopped_at, \
                  next_alarm_at, due_order, version, clock_running, lines) \
         WHERE t.id = u.id AND t.version = u.previous \
         RETURNING t.id",
    )
    .bind::<Array<Text>, _>(rows().map(|r| r.id.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(
        settled
            .iter()
            .map(|(previous, _)| *previous)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(rows().map(|r| r.policy_id.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows().map(|r| r.calendar_version).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows().map(|r| r.target_seconds).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows().map(|r| r.state.as_str()).collect::<Vec<_>>())
    .bind::<Array<Timestamp>, _>(rows().map(|r| r.as_of).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows().map(|r| r.elapsed_seconds).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows().map(|r| r.paused_seconds).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamp>>, _>(rows().map(|r| r.due_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamp>>, _>(rows().map(|r| r.warned_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamp>>, _>(rows().map(|r| r.breached_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamp>>, _>(rows().map(|r| r.stopped_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamp>>, _>(rows().map(|r| r.next_alarm_at).collect::<Vec<_>>())
    .bind::<Array<Timestamp>, _>(rows().map(|r| r.due_order).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows().map(|r| r.version).collect::<Vec<_>>())
    .bind::<Array<Bool>, _>(rows().map(|r| r.clock_running).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(lines)
    .load(conn)?;
    Ok(stored.into_iter().map(|s| s.id).collect())
}

/// The `sla.warning` and `sla.breached` events of what a timer crossed, and the escalations its
/// policy asks for at them, in the same unit of work.
fn announce(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    row: &TimerRow,
    record: &TimerRecord,
    announcements: &[(Threshold, DateTime<Utc>)],
) -> Result<(), StoreError> {
    let data = json!(record);
    for &(threshold, _) in announcements {
        let event = match threshold {
            Threshold::Warning => "sla.warning",
            Threshold::Breach => "sla.breached",
        };
        journal::add_event(ctx, event, TIMER, &row.id, &data)?;
        let policy = ctx.sla.as_deref().and_then(|r| r.policy(&row.policy_id));
        let escalations = policy
            .map(|p| p.definition.escalations.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|e| e.concerns(threshold, record.metric));
        for escalation in escalations {
            journal::add_event(
                ctx,
                "sla.escalated",
                TIMER,
                &row.id,
                &json!({
                    "timer": record,
                    "threshold": threshold,
                    "action": escalation.action,
                    "group": escalation.group,
                }),
            )?;
            if escalation.action == EscalationAction::Reassign {
                let why = format!("SLA {} {threshold}", record.metric);
                match record.ticket_type {
                    TicketKind::Incident => {
                        hand_over::<Incident>(conn, ctx, &row.ticket_id, &escalation.group, &why)?
                    }
                    TicketKind::Problem => {
                        hand_over::<Problem>(conn, ctx, &row.ticket_id, &escalation.group, &why)?
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Hands a ticket to `group` as an escalation: audited as `sla_escalation` with the reason.
fn hand_over<T: TicketTable>(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    ticket_id: &str,
    group: &str,
    why: &str,
) -> Result<(), StoreError> {
    let before = T::get(conn, ticket_id)?;
    if before.is_final() || before.assignment_group() == Some(group) {
        return Ok(());
    }
    let mut after = before.clone();
    after.hand_to_group(group.to_owned());
    let change = Change {
        action: "sla_escalation",
        reason: Some(why),
        events: &[],
    };
    tickets::save(conn, ctx, &before, &after, change).map(|_| ())
}

/// A timer whose warning or breach fell due, as [`due`] read it.
#[derive(Debug, Clone)]
pub struct DueTimer(TimerRow);

impl DueTimer {
    pub fn id(&self) -> &str {
        &self.0.id
    }
}

/// Timers whose warning or breach falls due by `now`, soonest first, as they stand.
pub fn due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<DueTimer>, StoreError> {
    Ok(sla_timers::table
        .filter(sla_timers::next_alarm_at.le(now))
        .order(sla_timers::next_alarm_at)
        .select(TimerRow::as_select())
        .limit(limit)
        .load(conn)?
        .into_iter()
        .map(DueTimer)
        .collect())
}

/// Announces what each timer of `due` crossed by `ctx.at`, in one unit of work: an alarm storm
/// costs the write path one unit per chunk, and on PostgreSQL one statement. A timer is settled
/// from the reading [`due`] took, under its version: one that changed since is left to the
/// next round. The number of timers this call settled.
pub fn fire_all(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    due: &[DueTimer],
) -> Result<usize, StoreError> {
    let mut settled = Vec::with_capacity(due.len());
    for DueTimer(row) in due {
        let calendar = calendar_of(
            conn,
            ctx.sla.as_deref(),
            &row.calendar_id,
            row.calendar_version,
        )?;
        let clock = row.clock()?;
        let previous = row.version;
        settled.push((
            previous,
            Settled::read(row.clone(), clock, Vec::new(), &calendar, utc(ctx.at))?,
        ));
    }
    let stored = match conn {
        DbConnection::Postgresql(c) => store_all(c, &settled)?,
        DbConnection::Sqlite(_) => {
            let mut stored = HashSet::new();
            for (previous, timer) in &settled {
                if store(conn, *previous, timer)? {
                    stored.insert(timer.row.id.clone());
                }
            }
            stored
        }
    };
    let mut fired = 0;
    for (_, timer) in settled.iter().filter(|(_, t)| stored.contains(&t.row.id)) {
        timer.announce(conn, ctx)?;
        fired += 1;
    }
    Ok(fired)
}

/// Reads a running timer again under its calendar's current version, on purpose: audited, and
/// a line in its timeline. A stopped timer is a conflict.
pub fn recalculate(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
) -> Result<TimerRecord, StoreError> {
    let row = timer_row(conn, id)?;
    if row.ended() {
        return Err(StoreError::Conflict(format!(
            "the timer is {}: only a running or paused timer is recalculated",
            row.state
        )));
    }
    let current: i64 = calendars::table
        .find(&row.calendar_id)
        .select(calendars::version)
        .get_result(conn)?;
    let mut changes = domain::Changes::new();
    changes.field("calendar_version", &row.calendar_version, &current);
    let audit_entry_id = audit::record(
        ctx,
        audit::Mutation {
            entity_type: TIMER,
            entity_id: id,
            action: "recalculate",
            changes: changes.into_value(),
            event_type: "sla.recalculated",
            event_data: json!({ "id": id, "ticket_type": row.ticket_type, "ticket_id": row.ticket_id,
                "calendar_id": row.calendar_id, "calendar_version": current }),
        },
    )?;
    let line = TimelineLine {
        at: utc(ctx.at),
        kind: TimelineKind::Recalculation,
        reason: format!(
            "calendar {} version {} → {current}",
            row.calendar_id, row.calendar_version
        ),
        target_seconds: None,
        policy_id: None,
        calendar_version: current,
        audit_entry_id: Some(audit_entry_id),
    };
    let mut row = row;
    row.calendar_version = current;
    let calendar = calendar_of(conn, ctx.sla.as_deref(), &row.calendar_id, current)?;
    let lines = timeline_lines(&row.timeline)?;
    let clock = timers::replay(&calendar, row.warning_percent(), &lines, utc(ctx.at))
        .ok_or_else(|| corrupt(id))?;
    if !settle(conn, ctx, row, clock, vec![line], &calendar)? {
        return Err(StoreError::Conflict(
            "the timer changed meanwhile; retry".into(),
        ));
    }
    get(conn, ctx.sla.as_deref(), id, utc(ctx.at))
}

/// Cancels the running timers of a policy that is being deleted.
pub fn cancel_of_policy(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    policy_id: &str,
    policy_name: &str,
) -> Result<usize, StoreError> {
    journal::write_timers(conn)?;
    let rows: Vec<TimerRow> = sla_timers::table
        .filter(sla_timers::policy_id.eq(policy_id))
        .filter(sla_timers::stopped_at.is_null())
        .select(TimerRow::as_select())
        .load(conn)?;
    let count = rows.len();
    for row in rows {
        let calendar = calendar_of(conn, None, &row.calendar_id, row.calendar_version)?;
        let clock = row.clock()?;
        let cancel = TimelineLine {
            at: utc(ctx.at),
            kind: TimelineKind::Cancel,
            reason: format!("policy {policy_name} deleted"),
            target_seconds: None,
            policy_id: None,
            calendar_version: row.calendar_version,
            audit_entry_id: None,
        };
        settle(conn, ctx, row, clock, vec![cancel], &calendar)?;
    }
    Ok(count)
}

/// Reads stored timers at `now`.
fn records(
    conn: &mut DbConnection,
    rules: Option<&SlaRules>,
    rows: Vec<TimerRow>,
    now: DateTime<Utc>,
) -> Result<Vec<TimerRecord>, StoreError> {
    rows.iter()
        .map(|row| {
            let calendar = calendar_of(conn, rules, &row.calendar_id, row.calendar_version)?;
            row.read_at(&calendar, now)
        })
        .collect()
}

/// A ticket's timers, read at `now`, oldest first.
pub fn of_ticket(
    conn: &mut DbConnection,
    rules: Option<&SlaRules>,
    ticket_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<TimerRecord>, StoreError> {
    let rows = sla_timers::table
        .filter(sla_timers::ticket_id.eq(ticket_id))
        .order((sla_timers::started_at, sla_timers::metric))
        .select(TimerRow::as_select())
        .load(conn)?;
    records(conn, rules, rows, now)
}

pub fn get(
    conn: &mut DbConnection,
    rules: Option<&SlaRules>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<TimerRecord, StoreError> {
    let row = timer_row(conn, id)?;
    records(conn, rules, vec![row], now)?
        .pop()
        .ok_or(StoreError::NotFound)
}

/// A timer's timeline, in order.
pub fn timeline(conn: &mut DbConnection, id: &str) -> Result<Vec<TimelineLine>, StoreError> {
    timeline_lines(&timer_row(conn, id)?.timeline)
}

/// What the timer list is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct TimerFilter {
    pub state: Option<TimerState>,
    pub due_before: Option<NaiveDateTime>,
    pub ticket_type: Option<TicketKind>,
    pub metric: Option<SlaMetric>,
}

/// Where a page of the timer list starts: after this due order and id.
pub type TimerPosition = (NaiveDateTime, String);

/// Timers across tickets, soonest due first (paused and stopped ones last), read at `now`.
pub fn list(
    conn: &mut DbConnection,
    rules: Option<&SlaRules>,
    filter: &TimerFilter,
    after: Option<&TimerPosition>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Slice<(TimerRecord, TimerPosition)>, StoreError> {
    let mut query = sla_timers::table
        .select(TimerRow::as_select())
        .order((sla_timers::due_order, sla_timers::id))
        .into_boxed();
    if let Some(state) = filter.state {
        query = query.filter(sla_timers::state.eq(state.as_str()));
    }
    if let Some(before) = filter.due_before {
        query = query.filter(sla_timers::due_order.lt(before));
    }
    if let Some(kind) = filter.ticket_type {
        query = query.filter(sla_timers::ticket_type.eq(kind.as_str()));
    }
    if let Some(metric) = filter.metric {
        query = query.filter(sla_timers::metric.eq(metric.as_str()));
    }
    if let Some((order, id)) = after {
        query = query.filter(
            sla_timers::due_order.gt(*order).or(sla_timers::due_order
                .eq(*order)
                .and(sla_timers::id.gt(id.clone()))),
        );
    }
    let page: Slice<TimerRow> = crate::load_page(conn, query, limit)?;
    let positions: Vec<TimerPosition> = page
        .items
        .iter()
        .map(|r| (r.due_order, r.id.clone()))
        .collect();
    let items = records(conn, rules, page.items, now)?
        .into_iter()
        .zip(positions)
        .collect();
    Ok(Slice {
        items,
        more: page.more,
    })
}
