//! The audit entries and events of the open write transaction, held back and written together
//! just before it commits.
//!
//! Writing them per unit of work cost two counter updates and two inserts per change; held
//! back, a whole batch takes one counter update and one multi-row insert per table. The event
//! counter row is then locked only between that update and the commit, which also keeps
//! concurrent PostgreSQL writers from queueing behind each other for the whole transaction.
//!
//! The journal lives on the writer thread (a thread-local), because the units of work only see
//! the connection. The writer opens it with the transaction, marks it before each unit, cuts a
//! failed unit's records off, and flushes it before `COMMIT`.

use std::cell::RefCell;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::Value;

use crate::schema::{audit_entries, outbox_events};
use crate::{counters, DbConnection, StoreError, WriteContext};

pub(crate) const EVENT_SEQUENCE: &str = "event_sequence";

#[derive(Insertable)]
#[diesel(table_name = audit_entries)]
struct NewAuditEntry {
    id: String,
    at: NaiveDateTime,
    actor_id: Option<String>,
    actor_name: String,
    entity_type: String,
    entity_id: String,
    action: String,
    changes: String,
    request_id: Option<String>,
}

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

#[derive(Default)]
struct Journal {
    audit: Vec<NewAuditEntry>,
    events: Vec<NewEvent>,
}

/// Where the journal stood before a unit of work, to cut that unit's records off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    audit: usize,
    events: usize,
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
    })
    .unwrap_or(Mark {
        audit: 0,
        events: 0,
    })
}

/// Forgets the records added since `mark` (their unit of work rolled back).
pub(crate) fn cut(mark: Mark) {
    let _ = with_journal(|journal| {
        journal.audit.truncate(mark.audit);
        journal.events.truncate(mark.events);
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
) -> Result<(), StoreError> {
    let entry = NewAuditEntry {
        id: crate::new_id(),
        at: ctx.at,
        actor_id: ctx.actor_id.clone(),
        actor_name: ctx.actor_name.clone(),
        entity_type: entity_type.to_owned(),
        entity_id: entity_id.to_owned(),
        action: action.to_owned(),
        changes: changes.to_string(),
        request_id: ctx.request_id.clone(),
    };
    with_journal(|journal| journal.audit.push(entry))
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

/// Inserts all `rows` in multi-row INSERTs (which diesel's `MultiConnection` does not offer:
/// one per backend) of 64, 16, 4 or 1 rows. diesel caches a multi-row INSERT only for a fixed
/// row count; one of the batch's size was parsed and planned on every commit, which on
/// PostgreSQL showed as the parser among its busiest functions.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let mut rest = &$rows[..];
        while !rest.is_empty() {
            rest = match rest.len() {
                64.. => insert_rows!($conn, $table, first::<_, 64>(rest), rest),
                16.. => insert_rows!($conn, $table, first::<_, 16>(rest), rest),
                4.. => insert_rows!($conn, $table, first::<_, 4>(rest), rest),
                _ => insert_rows!($conn, $table, first::<_, 1>(rest), rest),
            };
        }
    }};
    ($conn:expr, $table:expr, $chunk:expr, $rest:expr) => {{
        let chunk = $chunk;
        match &mut *$conn {
            DbConnection::Sqlite(c) => diesel::insert_into($table).values(chunk).execute(c)?,
            DbConnection::Postgresql(c) => diesel::insert_into($table).values(chunk).execute(c)?,
        };
        &$rest[chunk.len()..]
    }};
}

/// The first `N` of `rows`, which has at least that many.
fn first<T, const N: usize>(rows: &[T]) -> &[T; N] {
    rows[..N]
        .try_into()
        .expect("the caller checked that there are N rows")
}

/// Writes the collected records in the open transaction; the events get the next sequences in
/// the order they were added.
pub(crate) fn flush(conn: &mut DbConnection) -> Result<(), StoreError> {
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
    insert_rows!(conn, audit_entries::table, journal.audit);
    insert_rows!(conn, outbox_events::table, journal.events);
    Ok(())
}
