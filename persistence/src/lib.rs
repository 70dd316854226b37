//! Storage for the ITSM service: one schema over SQLite and PostgreSQL, a read pool, the write
//! path with group commit, embedded migrations, and the repositories (the only code that speaks
//! SQL).
//!
//! Lookups by a unique key use `get_result`, not `first`: `first` binds `LIMIT ?`, and binding a
//! LIMIT expires SQLite's prepared statement, so it is prepared again on every call (measured
//! at a tenth of the write path's time). Pages use `load_page`.

// No panic on a request path (issue 19): tests and start-up code may panic, nothing else.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Runs `$body` with `$inner` bound to the backend's own connection. A query sent through
/// [`DbConnection`] pays for diesel's multi-backend wrapper, which writes the whole SQL text
/// out again on each pass over the query (the cache lookup, the safety check, the binds) even
/// when its prepared statement is cached: a sixth of the writer's time went to that on the
/// incident insert. The body is compiled once per backend, so it is written once.
macro_rules! with_backend {
    ($conn:expr, $inner:ident => $body:expr) => {
        match $conn {
            $crate::DbConnection::Sqlite($inner) => $body,
            $crate::DbConnection::Postgresql($inner) => $body,
        }
    };
}

/// Inserts all `rows` in multi-row INSERTs (which diesel's `MultiConnection` does not offer,
/// so on the backend's own connection) of 64, 16, 4, 2 or 1 rows. diesel caches a multi-row
/// INSERT only for a fixed row count; one of the batch's size was parsed and planned on every
/// commit, which on PostgreSQL showed as the parser among its busiest functions. Two is the
/// usual count of a ticket's SLA timers. The rows' `Insertable` must bind `None` as NULL
/// (`treat_none_as_default_value = false`; no such column has a default): with `DEFAULT` for
/// `None`, the statement's text depends on the values, so diesel builds it on every execution
/// and never prepares it, and on SQLite it inserts the rows one at a time under a savepoint.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let mut rest = &$rows[..];
        loop {
            rest = if let Some((chunk, after)) = rest.split_first_chunk::<64>() {
                insert_rows!($conn, $table, chunk, after)
            } else if let Some((chunk, after)) = rest.split_first_chunk::<16>() {
                insert_rows!($conn, $table, chunk, after)
            } else if let Some((chunk, after)) = rest.split_first_chunk::<4>() {
                insert_rows!($conn, $table, chunk, after)
            } else if let Some((chunk, after)) = rest.split_first_chunk::<2>() {
                insert_rows!($conn, $table, chunk, after)
            } else if let Some((chunk, after)) = rest.split_first_chunk::<1>() {
                insert_rows!($conn, $table, chunk, after)
            } else {
                break;
            };
        }
    }};
    ($conn:expr, $table:expr, $chunk:expr, $after:expr) => {{
        with_backend!(&mut *$conn, c => diesel::insert_into($table).values($chunk).execute(c))?;
        $after
    }};
}

pub mod alerts;
pub mod api_tokens;
pub mod assignment_rules;
pub mod audit;
pub mod backup;
pub mod changes;
mod checkpoint;
pub mod cmdb;
mod conditions;
mod counters;
mod db;
mod error;
pub mod external_refs;
pub mod groups;
pub mod idempotency;
pub mod incidents;
mod journal;
mod lookups;
pub mod notes;
pub mod outbox;
pub mod problems;
pub mod schema;
pub mod settings;
pub mod signing_keys;
pub mod sla;
pub mod sla_timers;
pub mod ticket_items;
pub mod tickets;
pub mod users;
pub mod webhooks;
mod writer;

pub use audit::WriteContext;
pub use backup::ServeLock;
pub use db::{Backend, Database, DatabaseConfig, DbConnection, MultiBackend, Unready};
pub use diesel::result::Error as DieselError;
pub use error::{ConstraintKind, Outage, StoreError};
pub use lookups::Lookups;
pub use writer::in_savepoint;

/// Now, in UTC, at the microsecond precision both backends store, so that what a create
/// returns equals what a later read returns.
pub fn now_utc() -> chrono::NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::microseconds(1)).unwrap_or(now)
}

/// Where the service reads the time: the system clock, or in tests a clock they set, so that a
/// ticket can be driven across a weekend without sleeping. Nothing in the API can set it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Microseconds since the epoch, when set by hand.
    manual: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `at` until set or advanced.
    pub fn manual(at: chrono::DateTime<chrono::Utc>) -> Self {
        let clock = Self {
            manual: Some(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0))),
        };
        clock.set(at);
        clock
    }

    /// Sets a manual clock; the system clock ignores it.
    pub fn set(&self, at: chrono::DateTime<chrono::Utc>) {
        if let Some(manual) = &self.manual {
            manual.store(at.timestamp_micros(), std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Now, at the precision both backends store (see [`now_utc`]).
    pub fn now(&self) -> chrono::NaiveDateTime {
        match &self.manual {
            None => now_utc(),
            Some(manual) => {
                let micros = manual.load(std::sync::atomic::Ordering::SeqCst);
                chrono::DateTime::from_timestamp_micros(micros)
                    .map(|at| at.naive_utc())
                    .unwrap_or_else(now_utc)
            }
        }
    }
}

/// The rows a table gained on this node, for tables that fill in bursts from empty. On
/// PostgreSQL the table is analysed after every `every` rows: statements are prepared once per
/// connection under a generic plan, and one planned while the table was nearly empty keeps a
/// sort or a sequential scan (48 ms a webhook claim among 13,000 due deliveries; alert lookups
/// by key or id) until something analyses it (autovacuum, if it runs, within its naptime).
/// Analysing invalidates those plans on every connection.
pub(crate) struct Growth {
    table: &'static str,
    every: usize,
    rows: std::sync::atomic::AtomicUsize,
}

impl Growth {
    pub(crate) const fn new(table: &'static str, every: usize) -> Self {
        Self {
            table,
            every,
            rows: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Counts `rows` added by the open unit of work, and analyses the table (PostgreSQL) when
    /// they cross a multiple of `every`.
    pub(crate) fn added(&self, conn: &mut DbConnection, rows: usize) -> Result<(), StoreError> {
        let before = self
            .rows
            .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        if (before + rows) / self.every == before / self.every {
            return Ok(());
        }
        if let DbConnection::Postgresql(c) = conn {
            diesel::RunQueryDsl::execute(diesel::sql_query(format!("ANALYZE {}", self.table)), c)?;
        }
        Ok(())
    }
}

/// A new opaque, time-ordered identifier (UUID v7 as text).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// One page of rows from a repository, fetched with one extra row to know whether more follow.
#[derive(Debug, Clone)]
pub struct Slice<T> {
    pub items: Vec<T>,
    pub more: bool,
}

impl<T> Slice<T> {
    pub(crate) fn from_overfetch(mut rows: Vec<T>, limit: i64) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = rows.len() > limit;
        rows.truncate(limit);
        Self { items: rows, more }
    }
}

diesel::define_sql_function! {
    /// SQL `lower()`, the same on both backends, for case-insensitive search.
    fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// Escapes LIKE wildcards so that client text matches literally (use with `.escape('\\')`).
pub(crate) fn escape_like(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// `%text%` for a case-insensitive contains search with `lower(column)`.
pub(crate) fn contains_pattern(text: &str) -> String {
    format!("%{}%", escape_like(&text.to_lowercase()))
}

pub(crate) fn utc(at: chrono::NaiveDateTime) -> chrono::DateTime<chrono::Utc> {
    at.and_utc()
}

/// Optimistic concurrency: `expected` (from `If-Match`) must be the current version.
pub fn check_version(expected: Option<i64>, actual: i64) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != actual => {
            Err(StoreError::VersionMismatch { expected, actual })
        }
        _ => Ok(()),
    }
}

/// Loads one page of `query`: `limit` rows, and whether more follow (one row more is fetched).
///
/// The LIMIT is written into the SQL as a number, not bound: SQLite plans a bound LIMIT by
/// its value, so binding one expired the prepared statement and the whole query was parsed
/// and planned again on every call (a tenth of a list request). The statement cache then holds
/// one statement per page size in use.
pub(crate) fn load_page<'q, C, Q, U>(
    conn: &mut C,
    query: Q,
    limit: i64,
) -> Result<Slice<U>, StoreError>
where
    C: diesel::Connection,
    LimitedTo<Q>: diesel::query_dsl::LoadQuery<'q, C, U>,
{
    let rows = diesel::RunQueryDsl::load(LimitedTo::page(query, limit), conn)?;
    Ok(Slice::from_overfetch(rows, limit))
}

/// `<query> LIMIT <rows>`, with the number written into the SQL.
pub(crate) struct LimitedTo<Q> {
    query: Q,
    rows: i64,
}

/// The row counts a page query is written with: each distinct number is a statement of its own
/// in every connection's cache, so a client choosing any limit from 1 to 500 would make 500
/// of each list query. A page reads the smallest of these that holds its limit and one more.
const PAGE_ROWS: [i64; 5] = [11, 26, 51, 101, 501];

impl<Q> LimitedTo<Q> {
    /// A page of `limit` rows and one more, which tells whether more follow (rounded up to one
    /// of a few sizes; `Slice::from_overfetch` drops the rest).
    fn page(query: Q, limit: i64) -> Self {
        let wanted = limit.max(0) + 1;
        let rows = PAGE_ROWS
            .into_iter()
            .find(|&rows| rows >= wanted)
            .unwrap_or(wanted);
        Self { query, rows }
    }
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for LimitedTo<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> diesel::query_builder::QueryId for LimitedTo<Q> {
    type QueryId = ();
    // Cached by its SQL text, which holds the number.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB, Q> diesel::query_builder::QueryFragment<DB> for LimitedTo<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(&format!(" LIMIT {}", self.rows));
        Ok(())
    }
}

impl<Q, C> diesel::RunQueryDsl<C> for LimitedTo<Q> {}

/// How the database would run one page of `query`: the lines of SQLite's
/// `EXPLAIN QUERY PLAN` or PostgreSQL's `EXPLAIN`, for the very query a list request sends.
pub(crate) fn explain_page<'q, C, Q>(
    conn: &mut C,
    query: Q,
    limit: i64,
) -> Result<Vec<String>, StoreError>
where
    C: diesel::Connection,
    Explain<LimitedTo<Q>>: diesel::query_dsl::LoadQuery<'q, C, PlanLine>,
{
    let plan = Explain(LimitedTo::page(query, limit));
    let lines: Vec<PlanLine> = diesel::RunQueryDsl::load(plan, conn)?;
    Ok(lines.into_iter().map(|line| line.0).collect())
}

/// `EXPLAIN QUERY PLAN <query>` on SQLite, `EXPLAIN <query>` on PostgreSQL.
pub(crate) struct Explain<Q>(Q);

impl<Q> diesel::query_builder::Query for Explain<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q> diesel::query_builder::QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, C> diesel::RunQueryDsl<C> for Explain<Q> {}

macro_rules! explain_for {
    ($backend:ty, $prefix:literal, $column:literal) => {
        impl<Q: diesel::query_builder::QueryFragment<$backend>>
            diesel::query_builder::QueryFragment<$backend> for Explain<Q>
        {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, $backend>,
            ) -> diesel::QueryResult<()> {
                out.unsafe_to_cache_prepared();
                out.push_sql($prefix);
                self.0.walk_ast(out)
            }
        }

        impl diesel::QueryableByName<$backend> for PlanLine {
            fn build<'a>(
                row: &impl diesel::row::NamedRow<'a, $backend>,
            ) -> diesel::deserialize::Result<Self> {
                let line =
                    diesel::row::NamedRow::get::<diesel::sql_types::Text, String>(row, $column)?;
                Ok(PlanLine(line))
            }
        }
    };
}

explain_for!(diesel::sqlite::Sqlite, "EXPLAIN QUERY PLAN ", "detail");
explain_for!(diesel::pg::Pg, "EXPLAIN ", "QUERY PLAN");

/// One line of a query plan.
pub(crate) struct PlanLine(String);

/// `UPDATE <table> SET <changes> WHERE <filter>`, kept prepared.
///
/// diesel never caches an UPDATE it builds (its changeset may skip `None` fields and so vary
/// its SQL), and overriding `is_safe_to_cache_prepared` on a wrapper does not help: diesel asks
/// through a reference, which walks the inner statement again. This one is built from the
/// parts, whose SQL never varies. On SQLite an uncached UPDATE was parsed and planned on
/// every call; on PostgreSQL it also cost a round trip to prepare it.
pub(crate) struct FixedUpdate<T, V, W> {
    table: T,
    changes: V,
    filter: W,
}

pub(crate) fn fixed_update<T, C, W>(
    table: T,
    changes: C,
    filter: W,
) -> FixedUpdate<T, C::Changeset, W>
where
    C: diesel::AsChangeset<Target = T>,
{
    FixedUpdate {
        table,
        changes: changes.as_changeset(),
        filter,
    }
}

impl<T, V, W> diesel::query_builder::QueryId for FixedUpdate<T, V, W> {
    type QueryId = ();
    // Cached by its SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB, T, V, W> diesel::query_builder::QueryFragment<DB> for FixedUpdate<T, V, W>
where
    DB: diesel::backend::Backend,
    T: diesel::query_builder::QueryFragment<DB>,
    V: diesel::query_builder::QueryFragment<DB>,
    W: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        out.push_sql("UPDATE ");
        self.table.walk_ast(out.reborrow())?;
        out.push_sql(" SET ");
        self.changes.walk_ast(out.reborrow())?;
        out.push_sql(" WHERE ");
        self.filter.walk_ast(out.reborrow())
    }
}

impl<T, V, W, C> diesel::RunQueryDsl<C> for FixedUpdate<T, V, W> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_page_limit_reads_one_of_a_few_row_counts() {
        let mut rows: Vec<i64> = (1..=500)
            .map(|limit| LimitedTo::page((), limit).rows)
            .collect();
        assert!(rows.iter().zip(1..=500).all(|(&r, limit)| r > limit));
        rows.dedup();
        assert_eq!(rows, PAGE_ROWS);
    }
}
