//! The event outbox: one row per domain event, numbered by a gap-free sequence in commit order.
//!
//! The sequence comes from a counter row advanced in the writing transaction, just before it
//! commits (see `journal`). Its row lock is held until commit, so sequences are handed out in
//! commit order, and a rolled-back unit never takes a number: a client that polls `after=N` never misses an event that commits later with a lower
//! number, which an auto-increment column cannot promise under concurrent writers.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::{counters, outbox_events};
use crate::{journal, DbConnection, Slice, StoreError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox_events)]
pub struct OutboxEvent {
    pub sequence: i64,
    pub event_type: String,
    pub occurred_at: NaiveDateTime,
    pub entity_type: String,
    pub entity_id: String,
    pub data: String,
}

/// An event type filter: `incident.created` exactly, or `incident.*` for a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypePattern {
    Exact(String),
    Prefix(String),
}

type TypeCondition<DB> =
    Box<dyn BoxableExpression<outbox_events::table, DB, SqlType = diesel::sql_types::Bool>>;

/// Events after `after` in sequence order, optionally of the given types.
pub fn list(
    conn: &mut DbConnection,
    after: i64,
    types: &[EventTypePattern],
    limit: i64,
) -> Result<Slice<OutboxEvent>, StoreError> {
    with_backend!(conn, c => {
        let mut query = outbox_events::table
            .select(OutboxEvent::as_select())
            .filter(outbox_events::sequence.gt(after))
            .order(outbox_events::sequence.asc())
            .into_boxed();
        let mut conditions = types.iter().map(|pattern| -> TypeCondition<_> {
            match pattern {
                EventTypePattern::Exact(name) => {
                    Box::new(outbox_events::event_type.eq(name.clone()))
                }
                EventTypePattern::Prefix(prefix) => Box::new(
                    outbox_events::event_type
                        .like(format!("{}%", crate::escape_like(prefix)))
                        .escape('\\'),
                ),
            }
        });
        if let Some(first) = conditions.next() {
            query = query.filter(conditions.fold(first, |any, next| Box::new(any.or(next))));
        }
        crate::load_page(c, query, limit)
    })
}

/// The highest sequence handed out so far (0 when there are no events).
pub fn latest_sequence(conn: &mut DbConnection) -> Result<i64, StoreError> {
    Ok(counters::table
        .find(journal::EVENT_SEQUENCE)
        .select(counters::value)
        .get_result(conn)?)
}
