//! The audit entries and events of the open write transaction, and on SQLite the tickets'
//! words for the full-text index, held back and written together just before it commits.
//!
//! Writing them per unit of work cost two counter updates and two inserts per change; held
//! back, a whole batch takes one counter update and one multi-row insert per table. The event
//! counter row is then locked only between that update and the commit, which also keeps
//! concurrent PostgreSQL writers from queueing behind each other for the whole transaction.
//!
//! The journal lives on the writer thread (a thread-local), because the units of work only see
//! the connection. The writer opens it with the transaction, marks it before each unit, cuts a
//! failed unit's records off, and flushes it before `COMMIT`.
//!
//! New SLA timers wait here too (one multi-row insert per batch, not a statement per new
//! ticket); a unit of work about to read timers writes those still waiting
//! first ([`write_timers`]), so that it sees every timer of the transaction.
//!
//! SQLite's full-text index (FTS5) writes a segment of the words added since the last one at
//! every savepoint and at the commit; written here, outside the units' savepoints, a batch's
//! words make one segment.

use std::cell::RefCell;
use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::Value;

use crate::audit::AuditRow;
use crate::schema::{audit_entries, outbox_events, sla_timers, ticket_words};
use crate::sla_timers::TimerRow;
use crate::{counters, DbConnection, StoreError, WriteContext};

pub(crate) const EVENT_SEQUENCE: &str = "event_sequence";
/// Advanced once by each transaction that changed the CMDB's graph (see `cmdb::graph`).
pub(crate) const CMDB_GRAPH: &str = "cmdb_graph";

#[derive(Insertable)]
#[diesel(table_name = outbox_events)]
struct NewEvent {
    sequence: i64,
    event_type: String,
    occurred_at: NaiveDateTime,
    entity_type: String,
    entity_id: String,
    data: String,
}

#[derive(Insertable)]
#[diesel(table_name = ticket_words)]
struct NewWords {
    rowid: i64,
    terms: String,
}

/// A ticket's words for the full-text index; `replaces` when it had words before.
struct IndexedWords {
    words: NewWords,
    replaces: bool,
}

#[derive(Default)]
struct Journal {
    audit: Vec<AuditRow>,
    events: Vec<NewEvent>,
    words: Vec<IndexedWords>,
    /// Units of work that changed the CMDB's graph.
    graph_changes: usize,
    /// New SLA timers; the first `timers_written` are in the database already.
    timers: Vec<TimerRow>,
    timers_written: usize,
}

/// Where the journal stood before a unit of work, to cut that unit's records off.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mark {
    audit: usize,
    events: usize,
    words: usize,
    graph_changes: usize,
    timers: usize,
    timers_written: usize,
}

thread_local! {
    static OPEN: RefCell<Option<Journal>> = const { RefCell::new(None) };
}

/// Starts collecting for a new write transaction on this thread.
pub(crate) fn open() {
    OPEN.with(|open| *open.borrow_mut() = Some(Journal::default()));
}

/// Drops whatever was collected (after a commit, or when the transaction failed).
pub(crate) fn close() {
    OPEN.with(|open| *open.borrow_mut() = None);
}

pub(crate) fn mark() -> Mark {
    with_journal(|journal| Mark {
        audit: journal.audit.len(),
        events: journal.events.len(),
        words: journal.words.len(),
        graph_changes: journal.graph_changes,
        timers: journal.timers.len(),
        timers_written: journal.timers_written,
    })
    .unwrap_or_default()
}

/// How many audit entries and events wait for the commit.
pub(crate) fn waiting() -> usize {
    with_journal(|journal| journal.audit.len() + journal.events.len()).unwrap_or(0)
}

/// Forgets the records added since `mark` (their unit of work rolled back).
pub(crate) fn cut(mark: Mark) {
    let _ = with_journal(|journal| {
        journal.audit.truncate(mark.audit);
        journal.events.truncate(mark.events);
        journal.words.truncate(mark.words);
        journal.graph_changes = journal.graph_changes.min(mark.graph_changes);
        journal.timers.truncate(mark.timers);
        // Timers written since the mark were rolled back with the unit: they wait again.
        journal.timers_written = journal.timers_written.min(mark.timers_written);
    });
}

fn with_journal<T>(f: impl FnOnce(&mut Journal) -> T) -> Result<T, StoreError> {
    OPEN.with(|open| match open.borrow_mut().as_mut() {
        Some(journal) => Ok(f(journal)),
        None => Err(StoreError::Unavailable(
            "audit entries and events are written only on the write path".into(),
        )),
    })
}

pub(crate) fn add_audit_entry(
    ctx: &WriteContext,
    entity_type: &str,
    entity_id: &str,
    action: &str,
    changes: &Value,
) -> Result<String, StoreError> {
    let id = crate::new_id();
    let entry = AuditRow {
        id: id.clone(),
        at: ctx.at,
        actor_id: ctx.actor.id.clone(),
        actor_name: ctx.actor.username.clone(),
        actor_kind: ctx.actor.kind.as_str().to_owned(),
        entity_type: entity_type.to_owned(),
        entity_id: entity_id.to_owned(),
        action: action.to_owned(),
        changes: changes.to_string(),
        request_id: ctx.request_id.clone(),
    };
    with_journal(|journal| journal.audit.push(entry))?;
    Ok(id)
}

/// Queues an event (without an audit entry: for the further events of an audited change); its
/// sequence is handed out when the journal is flushed.
pub(crate) fn add_event(
    ctx: &WriteContext,
    event_type: &str,
    entity_type: &str,
    entity_id: &str,
    data: &Value,
) -> Result<(), StoreError> {
    let event = NewEvent {
        sequence: 0,
        event_type: event_type.to_owned(),
        occurred_at: ctx.at,
        entity_type: entity_type.to_owned(),
        entity_id: entity_id.to_owned(),
        data: data.to_string(),
    };
    with_journal(|journal| journal.events.push(event))
}

/// Notes that the unit of work changed the CMDB's graph (an item or relationship an impact
/// walk shows or follows): the transaction advances the `cmdb_graph` counter, which tells every
/// node that its in-memory copy of the graph is out of date.
pub(crate) fn graph_changed() -> Result<(), StoreError> {
    with_journal(|journal| journal.graph_changes += 1)
}

/// Whether a unit of work of the open write transaction on this thread changed the CMDB's
/// graph (the counter moves only at the commit).
pub(crate) fn graph_changed_here() -> bool {
    with_journal(|journal| journal.graph_changes > 0).unwrap_or(false)
}

/// Queues a ticket's words (`search_terms` joined by spaces) for SQLite's full-text index,
/// under its row id there; `replaces` when the ticket had words indexed before.
pub(crate) fn index_words(rowid: i64, terms: String, replaces: bool) -> Result<(), StoreError> {
    with_journal(|journal| {
        journal.words.push(IndexedWords {
            words: NewWords { rowid, terms },
            replaces,
        })
    })
}

/// Queues new SLA timers.
pub(crate) fn add_timers(timers: Vec<TimerRow>) -> Result<(), StoreError> {
    with_journal(|journal| journal.timers.extend(timers))
}

/// Writes the new SLA timers still waiting: called before a unit of work reads timers, and
/// before the commit. Nothing to do outside the write path.
pub(crate) fn write_timers(conn: &mut DbConnection) -> Result<(), StoreError> {
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        let Some(journal) = open.as_mut() else {
            return Ok(());
        };
        insert_rows!(
            conn,
            sla_timers::table,
            journal.timers[journal.timers_written..]
        );
        journal.timers_written = journal.timers.len();
        Ok(())
    })
}

/// Writes the collected records in the open transaction; the events get the next sequences in
/// the order they were added.
pub(crate) fn flush(conn: &mut DbConnection) -> Result<(), StoreError> {
    write_timers(conn)?;
    let Some(mut journal) = OPEN.with(|open| open.borrow_mut().take()) else {
        return Ok(());
    };
    if !journal.events.is_empty() {
        let count = journal.events.len() as i64;
        let last = counters::advance(conn, EVENT_SEQUENCE, count)?;
        for (sequence, event) in (last - count + 1..).zip(journal.events.iter_mut()) {
            event.sequence = sequence;
        }
    }
    // After the event counter, as every writer does: no two writers wait on each other's rows.
    if journal.graph_changes > 0 {
        counters::advance(conn, CMDB_GRAPH, 1)?;
    }
    insert_rows!(conn, audit_entries::table, journal.audit);
    insert_rows!(conn, outbox_events::table, journal.events);
    if !journal.words.is_empty() {
        write_words(conn, journal.words)?;
    }
    Ok(())
}

/// Writes the batch's words: a ticket's last words win, and the words it had before the
/// transaction, if any, go first.
fn write_words(conn: &mut DbConnection, queued: Vec<IndexedWords>) -> Result<(), StoreError> {
    let mut latest: BTreeMap<i64, IndexedWords> = BTreeMap::new();
    for entry in queued {
        match latest.get_mut(&entry.words.rowid) {
            Some(earlier) => earlier.words.terms = entry.words.terms,
            None => {
                latest.insert(entry.words.rowid, entry);
            }
        }
    }
    let stale: Vec<i64> = latest
        .values()
        .filter(|entry| entry.replaces)
        .map(|entry| entry.words.rowid)
        .collect();
    if !stale.is_empty() {
        diesel::delete(ticket_words::table.filter(ticket_words::rowid.eq_any(stale)))
            .execute(conn)?;
    }
    let rows: Vec<NewWords> = latest.into_values().map(|entry| entry.words).collect();
    insert_rows!(conn, ticket_words::table, rows);
    Ok(())
}
