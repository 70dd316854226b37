//! The ticket kernel's storage, written once for every ticket type: numbering, saving with the
//! audit diff and the standard events, the word index, and the keyset sort of lists.
//!
//! A ticket type's repository owns its table and its typed queries, and implements
//! [`TicketTable`] so that the kernel can save and look its tickets up.

use chrono::NaiveDateTime;
use domain::search::search_terms;
use domain::ticket::{Stamp, Ticket, TicketEvent, TicketKind};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::conditions::{Key, RowAfter};
use crate::sla_timers;
use crate::{
    counters, external_refs, journal, ticket_items, utc, DbConnection, Lookups, Slice, StoreError,
    WriteContext,
};

/// What a ticket type's repository gives the kernel.
pub trait TicketTable: Ticket + Sized {
    /// The table, as written in SQL.
    const TABLE: &'static str;

    /// One ticket by id or by number.
    fn get(conn: &mut DbConnection, id_or_number: &str) -> Result<Self, StoreError>;

    /// The tickets these ids and numbers name, in no particular order.
    fn get_many(conn: &mut DbConnection, keys: &[String]) -> Result<Vec<Self>, StoreError>;

    /// Writes `after` over the row of `before` if its version is still `before`'s, at
    /// `ctx.at` with the next version; the number of rows updated.
    fn update_row(
        conn: &mut DbConnection,
        ctx: &WriteContext,
        before: &Self,
        after: &Self,
    ) -> Result<usize, StoreError>;

    /// The stored version of the ticket `id`.
    fn current_version(conn: &mut DbConnection, id: &str) -> Result<i64, StoreError>;
}

/// Lookups of a ticket type by id or number, coalesced on PostgreSQL (see [`Lookups`]).
pub fn lookups<T: TicketTable + Clone>() -> Lookups<T> {
    Lookups::new(T::get_many, |ticket, key| {
        ticket.number() == key || ticket.id() == key
    })
}

/// Splits keys into numbers of `kind` and ids.
pub(crate) fn numbers_and_ids(kind: TicketKind, keys: &[String]) -> (Vec<&str>, Vec<&str>) {
    keys.iter()
        .map(String::as_str)
        .partition(|key| kind.is_number(key))
}

/// The next number of `kind` from its counter row, for SQLite: one writer, gap-free numbers.
/// (PostgreSQL numbers in the INSERT, from a sequence: see the migrations' `next_*_number`.)
pub(crate) fn next_number(conn: &mut DbConnection, kind: TicketKind) -> Result<String, StoreError> {
    let counter = format!("{kind}_number");
    Ok(kind.number(counters::advance(conn, &counter, 1)?))
}

/// Records a new ticket: its words, its external references, the audit entry with every
/// field, `<kind>.created`, and `<kind>.assigned` when it was created with an assignee.
pub(crate) fn record_created<T: Ticket>(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    ticket: &T,
) -> Result<(), StoreError> {
    let kind = T::KIND;
    if matches!(conn, DbConnection::Sqlite(_)) {
        index_words(conn, kind, ticket.number(), None, &ticket.search_text())?;
    }
    if !ticket.external_refs().is_empty() {
        external_refs::replace(conn, kind.as_str(), ticket.id(), ticket.external_refs())?;
    }
    if !ticket.configuration_items().is_empty() {
        ticket_items::replace(conn, kind, ticket.id(), ticket.configuration_items())?;
    }
    let audit_entry_id = audit::record(
        ctx,
        Mutation {
            entity_type: kind.as_str(),
            entity_id: ticket.id(),
            action: "create",
            changes: domain::Changes::created(ticket).into_value(),
            event_type: kind.event(TicketEvent::Created),
            event_data: json!(ticket),
        },
    )?;
    if ticket.assignee().is_some() {
        let data = json!(ticket);
        journal::add_event(
            ctx,
            kind.event(TicketEvent::Assigned),
            kind.as_str(),
            ticket.id(),
            &data,
        )?;
    }
    sla_timers::follow(conn, ctx, None, ticket, &audit_entry_id)
}

/// What a ticket row does not hold itself: its external references and its items.
#[derive(Debug, Default)]
pub(crate) struct Links {
    pub external_refs: Vec<domain::ExternalRef>,
    pub configuration_items: Vec<String>,
}

/// Which links a row has, so that tickets without any (most) cost no query: its id, whether it
/// has external references, whether it has items.
pub(crate) type LinkFlags<'r> = (&'r str, bool, bool);

/// The links of one ticket.
pub(crate) fn links_of(
    conn: &mut DbConnection,
    kind: TicketKind,
    (id, has_refs, has_items): LinkFlags<'_>,
) -> Result<Links, StoreError> {
    Ok(Links {
        external_refs: if has_refs {
            external_refs::of(conn, kind.as_str(), id)?
        } else {
            Vec::new()
        },
        configuration_items: if has_items {
            ticket_items::of(conn, kind, id)?
        } else {
            Vec::new()
        },
    })
}

/// Turns a page of rows into tickets with their links: at most one query per kind of link
/// for the whole page.
pub(crate) fn attach_links<R, T>(
    conn: &mut DbConnection,
    kind: TicketKind,
    rows: Slice<R>,
    flags: impl Fn(&R) -> LinkFlags<'_>,
    build: impl Fn(R, Links) -> Result<T, StoreError>,
) -> Result<Slice<T>, StoreError> {
    let with_refs: Vec<&str> = rows
        .items
        .iter()
        .map(&flags)
        .filter(|f| f.1)
        .map(|f| f.0)
        .collect();
    let with_items: Vec<&str> = rows
        .items
        .iter()
        .map(&flags)
        .filter(|f| f.2)
        .map(|f| f.0)
        .collect();
    let mut refs = external_refs::of_many(conn, kind.as_str(), &with_refs)?;
    let mut items = ticket_items::of_many(conn, kind, &with_items)?;
    let tickets = rows
        .items
        .into_iter()
        .map(|row| {
            let id = flags(&row).0.to_owned();
            let links = Links {
                external_refs: refs.remove(&id).unwrap_or_default(),
                configuration_items: items.remove(&id).unwrap_or_default(),
            };
            build(row, links)
        })
        .collect::<Result<_, _>>()?;
    Ok(Slice {
        items: tickets,
        more: rows.more,
    })
}

/// How a save is recorded: the audit action, a reason shown in the diff, and the type's own
/// events beyond the standard ones.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub action: &'a str,
    pub reason: Option<&'a str>,
    pub events: &'a [&'static str],
}

impl<'a> Change<'a> {
    pub fn action(action: &'a str) -> Self {
        Self {
            action,
            reason: None,
            events: &[],
        }
    }
}

/// Saves `after` over `before` if nobody changed it meanwhile, and records the change: one
/// audit entry with the field diff, `<kind>.state_changed` or `<kind>.updated`,
/// `<kind>.assigned` when the assignment changed, and the change's own events. A save that
/// changes nothing records nothing.
pub fn save<T: TicketTable>(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    before: &T,
    after: &T,
    change: Change<'_>,
) -> Result<T, StoreError> {
    let mut changes = before.changes_to(after);
    if let Some(reason) = change.reason {
        changes.field("reason", &None::<&str>, &Some(reason));
    }
    if changes.is_empty() {
        return Ok(before.clone());
    }
    if T::update_row(conn, ctx, before, after)? == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version(),
            actual: T::current_version(conn, before.id())?,
        });
    }
    let kind = T::KIND;
    if matches!(conn, DbConnection::Sqlite(_)) && before.search_text_changed(after) {
        let (old_text, new_text) = (before.search_text(), after.search_text());
        index_words(conn, kind, before.number(), Some(&old_text), &new_text)?;
    }
    if before.external_refs() != after.external_refs() {
        external_refs::replace(conn, kind.as_str(), after.id(), after.external_refs())?;
    }
    if before.configuration_items() != after.configuration_items() {
        ticket_items::replace(conn, kind, after.id(), after.configuration_items())?;
    }
    let mut saved = after.clone();
    saved.stamp(Stamp {
        id: None,
        number: None,
        created_at: None,
        updated_at: utc(ctx.at),
        version: before.version() + 1,
    });
    let data = json!(saved);
    let main_event = if before.state_name() != saved.state_name() {
        TicketEvent::StateChanged
    } else {
        TicketEvent::Updated
    };
    let audit_entry_id = audit::record(
        ctx,
        Mutation {
            entity_type: kind.as_str(),
            entity_id: saved.id(),
            action: change.action,
            changes: changes.into_value(),
            event_type: kind.event(main_event),
            event_data: data.clone(),
        },
    )?;
    if before.assignee() != saved.assignee()
        || before.assignment_group() != saved.assignment_group()
    {
        journal::add_event(
            ctx,
            kind.event(TicketEvent::Assigned),
            kind.as_str(),
            saved.id(),
            &data,
        )?;
    }
    for event in change.events {
        journal::add_event(ctx, event, kind.as_str(), saved.id(), &data)?;
    }
    sla_timers::follow(conn, ctx, Some(before), &saved, &audit_entry_id)?;
    Ok(saved)
}

/// The word index keys a ticket by its kind's code in the bits above these and the sequence
/// of its number below: incidents (code 0) keep the sequence itself.
const KIND_SHIFT: u32 = 40;

pub(crate) fn word_rowids(kind: TicketKind) -> (i64, i64) {
    let first = kind.code() << KIND_SHIFT;
    (first, first + (1 << KIND_SHIFT) - 1)
}

/// Keeps SQLite's full-text index in step with a ticket's search text (PostgreSQL indexes the
/// columns themselves): queues its words for the journal when they changed.
fn index_words(
    conn: &DbConnection,
    kind: TicketKind,
    number: &str,
    before: Option<&str>,
    after: &str,
) -> Result<(), StoreError> {
    if !matches!(conn, DbConnection::Sqlite(_)) {
        return Ok(());
    }
    let terms = search_terms(after);
    if before.map(search_terms).as_ref() == Some(&terms) {
        return Ok(());
    }
    let sequence = kind
        .sequence(number)
        .ok_or_else(|| StoreError::Unavailable(format!("{number} is not a {kind} number")))?;
    journal::index_words(
        word_rowids(kind).0 + sequence,
        terms.join(" "),
        before.is_some(),
    )
}

/// The words of `q` as a full-text condition on `T`'s table: SQL to put before and after the
/// bound text. An FTS5 index on SQLite, a GIN-indexed tsvector of `document` (the SQL the
/// type's index is built on) on PostgreSQL; both match whole words, case-insensitively, all
/// of them.
pub(crate) fn words_condition<T: TicketTable>(
    conn: &DbConnection,
    q: &str,
    document: &str,
) -> Option<WordsCondition> {
    let words = search_terms(q);
    if words.is_empty() {
        return None;
    }
    let kind = T::KIND;
    Some(match conn {
        // Each word quoted, so that it is a word and never an FTS5 operator.
        DbConnection::Sqlite(_) => {
            let (first, last) = word_rowids(kind);
            WordsCondition {
                // The time limit is checked on the rows of both the word index and the table
                // (see `db::with_search_limit`).
                before: format!(
                    "{in_time}() AND {table}.number IN (SELECT printf('{prefix}%07d', rowid - \
                     {first}) FROM ticket_words WHERE {in_time}() AND ticket_words MATCH ",
                    table = T::TABLE,
                    prefix = kind.prefix(),
                    in_time = crate::db::SEARCH_IN_TIME_FUNCTION,
                ),
                text: words
                    .iter()
                    .map(|word| format!("\"{word}\""))
                    .collect::<Vec<_>>()
                    .join(" "),
                after: format!(" AND rowid BETWEEN {first} AND {last})"),
            }
        }
        DbConnection::Postgresql(_) => WordsCondition {
            before: format!("to_tsvector('simple', {document}) @@ plainto_tsquery('simple', "),
            text: words.join(" "),
            after: ")".to_owned(),
        },
    })
}

/// A full-text condition: `before`, the bound `text`, `after`.
#[derive(Debug, Clone)]
pub(crate) struct WordsCondition {
    pub before: String,
    pub text: String,
    pub after: String,
}

/// Orders a boxed query of a ticket table (`incidents`, `problems`) by a [`Sort`], the id
/// breaking ties, so that the keyset condition of [`Sort::row_after`] walks the same order.
macro_rules! order_by_sort {
    ($query:expr, $table:ident, $sort:expr) => {{
        use $crate::tickets::SortField;
        match ($sort.field, $sort.descending) {
            (SortField::CreatedAt, false) => {
                $query.order(($table::created_at.asc(), $table::id.asc()))
            }
            (SortField::CreatedAt, true) => {
                $query.order(($table::created_at.desc(), $table::id.desc()))
            }
            (SortField::UpdatedAt, false) => {
                $query.order(($table::updated_at.asc(), $table::id.asc()))
            }
            (SortField::UpdatedAt, true) => {
                $query.order(($table::updated_at.desc(), $table::id.desc()))
            }
            (SortField::Priority, false) => {
                $query.order(($table::priority.asc(), $table::id.asc()))
            }
            (SortField::Priority, true) => {
                $query.order(($table::priority.desc(), $table::id.desc()))
            }
        }
    }};
}
pub(crate) use order_by_sort;

/// The filters every ticket list shares, applied to the boxed query `$query` of `$table` from
/// the fields of the same names in `$filter` (`states`, `priorities`, `assignment_group`,
/// `assignee`, `category`, `configuration_item`, `service`, `created_after`,
/// `created_before`), then the words of `q`, the keyset position and the order. A type's list
/// query applies its own filters first.
macro_rules! shared_ticket_filters {
    ($query:ident, $table:ident, $kind:expr, $filter:expr, $sort:expr, $words:expr, $after:expr) => {{
        use diesel::dsl::sql;
        use diesel::sql_types::{Bool, Text};
        use $crate::conditions::InList;
        use $crate::schema::ticket_configuration_items as links;
        let filter = $filter;
        if !filter.states.is_empty() {
            let names = filter.states.iter().map(|s| s.as_str()).collect();
            $query = $query.filter(InList::names(concat!(stringify!($table), ".state"), names));
        }
        if !filter.priorities.is_empty() {
            let names = filter.priorities.iter().map(|p| p.as_str()).collect();
            $query = $query.filter(InList::names(
                concat!(stringify!($table), ".priority"),
                names,
            ));
        }
        if let Some(group) = &filter.assignment_group {
            $query = $query.filter($table::assignment_group_id.eq(group.clone()));
        }
        if let Some(assignee) = &filter.assignee {
            $query = $query.filter($table::assignee_id.eq(assignee.clone()));
        }
        if let Some(category) = &filter.category {
            $query = $query.filter($table::category.eq(category.clone()));
        }
        if let Some(item) = &filter.configuration_item {
            let concerned = links::table
                .filter(links::ticket_type.eq($kind.as_str()))
                .filter(links::ci_id.eq(item.clone()))
                .select(links::ticket_id);
            $query = $query.filter($table::id.eq_any(concerned));
        }
        if let Some(service) = &filter.service {
            $query = $query.filter($table::service_id.eq(service.clone()));
        }
        if let Some(breached) = filter.sla_breached {
            use $crate::schema::sla_timers as timers;
            let breached_ids = timers::table
                .filter(timers::breached_at.is_not_null())
                .filter(timers::ticket_type.eq($kind.as_str()))
                .select(timers::ticket_id);
            $query = match breached {
                true => $query.filter($table::id.eq_any(breached_ids)),
                false => $query.filter(diesel::dsl::not($table::id.eq_any(breached_ids))),
            };
        }
        if let Some(at) = filter.sla_due_before {
            use $crate::schema::sla_timers as timers;
            // The state as a literal, so that both planners use the partial index.
            let due = timers::table
                .filter(sql::<Bool>("sla_timers.state = 'running'"))
                .filter(timers::due_at.lt(at))
                .filter(timers::ticket_type.eq($kind.as_str()))
                .select(timers::ticket_id);
            $query = $query.filter($table::id.eq_any(due));
        }
        if let Some(at) = filter.created_after {
            $query = $query.filter($table::created_at.ge(at));
        }
        if let Some(at) = filter.created_before {
            $query = $query.filter($table::created_at.lt(at));
        }
        if let Some(words) = $words {
            $query = $query.filter(
                sql::<Bool>(&words.before)
                    .bind::<Text, _>(words.text.clone())
                    .sql(&words.after),
            );
        }
        if let Some(after) = $after {
            $query = $query.filter(after);
        }
        $query = $crate::tickets::order_by_sort!($query, $table, $sort);
        $query
    }};
}
pub(crate) use shared_ticket_filters;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    CreatedAt,
    UpdatedAt,
    Priority,
}

impl SortField {
    fn column(self) -> &'static str {
        match self {
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
            SortField::Priority => "priority",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub field: SortField,
    pub descending: bool,
}

impl Sort {
    pub const NEWEST_FIRST: Sort = Sort {
        field: SortField::CreatedAt,
        descending: true,
    };

    /// The keyset position of `ticket` in this sort.
    pub fn position_of<T: Ticket>(&self, ticket: &T) -> Position {
        self.position_at(
            ticket.created_at().naive_utc(),
            ticket.updated_at().naive_utc(),
            ticket.priority(),
            ticket.id().to_owned(),
        )
    }

    /// The keyset position in this sort of a ticket with these keys (a cursor carries every
    /// sort's key, so it fits any sort).
    pub fn position_at(
        &self,
        created_at: NaiveDateTime,
        updated_at: NaiveDateTime,
        priority: Option<domain::priority::Priority>,
        id: String,
    ) -> Position {
        let key = match self.field {
            SortField::CreatedAt => time_key(created_at),
            SortField::UpdatedAt => time_key(updated_at),
            SortField::Priority => priority.map(|p| p.as_str().to_owned()).unwrap_or_default(),
        };
        Position { key, id }
    }

    /// The keyset condition for the rows of `T` after `position` in this order.
    pub(crate) fn row_after<T: TicketTable>(
        &self,
        position: &Position,
    ) -> Result<RowAfter, StoreError> {
        let key = match self.field {
            SortField::CreatedAt | SortField::UpdatedAt => {
                Key::Time(parse_time_key(&position.key)?)
            }
            SortField::Priority => Key::Text(position.key.clone()),
        };
        let table = T::TABLE;
        Ok(RowAfter::new(
            format!("({table}.{}, {table}.id)", self.field.column()),
            self.descending,
            key,
            position.id.clone(),
        ))
    }
}

/// Where the previous page ended: the sort key of its last item and that item's id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub key: String,
    pub id: String,
}

const TIME_KEY_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

fn time_key(at: NaiveDateTime) -> String {
    at.format(TIME_KEY_FORMAT).to_string()
}

fn parse_time_key(key: &str) -> Result<NaiveDateTime, StoreError> {
    NaiveDateTime::parse_from_str(key, TIME_KEY_FORMAT)
        .map_err(|_| StoreError::Conflict("the cursor does not belong to this sort".into()))
}

/// Stored enumerations were validated on the way in; one that does not parse is a damaged row,
/// reported as such rather than read as some default.
pub(crate) fn stored<T: std::str::FromStr>(column: &str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| {
        StoreError::Database(diesel::result::Error::DeserializationError(
            format!("stored {column} {value:?} is not a known value").into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_rowids_of_kinds_do_not_overlap_and_incidents_keep_their_sequence() {
        assert_eq!(word_rowids(TicketKind::Incident).0, 0);
        let mut ranges: Vec<(i64, i64)> = TicketKind::ALL.iter().map(|k| word_rowids(*k)).collect();
        ranges.sort();
        for pair in ranges.windows(2) {
            assert!(pair[0].1 < pair[1].0);
        }
    }
}
