//! Conditions diesel's DSL does not write the way our queries need, each cached by its SQL text.
//!
//! - `InList`: `column IN (...)`. diesel's `eq_any` and `sql()` mark a statement as never to be
//!   cached, so every list query that used them was parsed and planned again (a third of a list
//!   request's time on SQLite).
//! - `RowAfter`: a keyset position as a row value, `(key, id) < (?, ?)`.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Bool, HasSqlType, Text, Timestamp};
use diesel::QueryResult;

/// A condition `column IN (...)` on a column given as SQL (`incidents.state`).
pub(crate) struct InList {
    column: &'static str,
    values: Values,
}

enum Values {
    /// Our own names (enum values), written as literals: both planners then use the partial
    /// index of a single state.
    Names(Vec<&'static str>),
    /// A set our code fixes (never a client's combination), as written: cached like one name.
    Fixed(&'static [&'static str]),
    /// Anything else, bound.
    Bound(Vec<String>),
}

impl InList {
    /// `column IN ('a', 'b')`; `names` are constants of the domain, never client text. They are
    /// written sorted and once each; see `walk_ast` for which lists are cached.
    pub(crate) fn names(column: &'static str, mut names: Vec<&'static str>) -> Self {
        names.sort_unstable();
        names.dedup();
        Self {
            column,
            values: Values::Names(names),
        }
    }

    /// `column IN ('a', 'b')` for a set written in the code, in its order: a partial index over
    /// the same list (`changes_planned_idx`) serves it, and the statement stays prepared.
    pub(crate) fn fixed(column: &'static str, names: &'static [&'static str]) -> Self {
        Self {
            column,
            values: Values::Fixed(names),
        }
    }

    /// `column IN (?, ?)` with the values bound. The list is padded (repeating its last value)
    /// to a power of two, so that lists of any length make only a few statement shapes.
    pub(crate) fn bound(column: &'static str, mut values: Vec<String>) -> Self {
        if let Some(last) = values.last().cloned() {
            values.resize(values.len().next_power_of_two(), last);
        }
        Self {
            column,
            values: Values::Bound(values),
        }
    }
}

impl Expression for InList {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for InList {}
impl<QS> SelectableExpression<QS> for InList {}

impl ValidGrouping<()> for InList {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for InList {
    type QueryId = ();
    // Cached by the SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for InList
where
    DB: Backend + HasSqlType<Text>,
    String: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let empty = match &self.values {
            Values::Names(names) => names.is_empty(),
            Values::Fixed(names) => names.is_empty(),
            Values::Bound(values) => values.is_empty(),
        };
        if empty {
            out.push_sql("1 = 0");
            return Ok(());
        }
        out.push_sql(self.column);
        match &self.values {
            Values::Names(names) if names.len() == 1 => {
                out.push_sql(" = '");
                out.push_sql(names[0]);
                out.push_sql("'");
            }
            Values::Fixed(names) => push_names(&mut out, names),
            Values::Names(names) => {
                // Each set of names is a statement of its own: a client combining filter values
                // could fill every connection's statement cache. One name is cached (the hot
                // case, and bounded by the names there are); a set is prepared each time.
                out.unsafe_to_cache_prepared();
                push_names(&mut out, names);
            }
            Values::Bound(values) => {
                out.push_sql(" IN (");
                for (n, value) in values.iter().enumerate() {
                    if n > 0 {
                        out.push_sql(", ");
                    }
                    out.push_bind_param::<Text, String>(value)?;
                }
                out.push_sql(")");
            }
        }
        Ok(())
    }
}

/// `(key_column, id_column) < (key, id)`, or `>` in ascending order: the rows after a keyset
/// position. Both planners turn the row value into one index range; the equivalent
/// `key < ? OR (key = ? AND id < ?)` made PostgreSQL read and drop every row before the
/// position (5,002 rows for a page 100 pages deep).
pub(crate) struct RowAfter {
    /// `(incidents.created_at, incidents.id)`.
    columns: String,
    descending: bool,
    key: Key,
    id: String,
}

pub(crate) enum Key {
    Time(NaiveDateTime),
    Text(String),
}

impl RowAfter {
    pub(crate) fn new(columns: String, descending: bool, key: Key, id: String) -> Self {
        Self {
            columns,
            descending,
            key,
            id,
        }
    }
}

impl Expression for RowAfter {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for RowAfter {}
impl<QS> SelectableExpression<QS> for RowAfter {}

impl ValidGrouping<()> for RowAfter {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for RowAfter {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for RowAfter
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Timestamp>,
    String: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(&self.columns);
        out.push_sql(if self.descending { " < (" } else { " > (" });
        match &self.key {
            Key::Time(at) => out.push_bind_param::<Timestamp, NaiveDateTime>(at)?,
            Key::Text(text) => out.push_bind_param::<Text, String>(text)?,
        }
        out.push_sql(", ");
        out.push_bind_param::<Text, String>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}

/// ` IN ('a', 'b')`, written piece by piece.
fn push_names<DB: Backend>(out: &mut AstPass<'_, '_, DB>, names: &[&str]) {
    out.push_sql(" IN (");
    for (n, name) in names.iter().enumerate() {
        out.push_sql(if n == 0 { "'" } else { ", '" });
        out.push_sql(name);
        out.push_sql("'");
    }
    out.push_sql(")");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_lists_of_any_length_make_few_shapes() {
        let mut lengths: Vec<usize> = (1..=500)
            .map(|n| {
                let values = (0..n).map(|i| i.to_string()).collect();
                match InList::bound("t.id", values).values {
                    Values::Bound(v) => v.len(),
                    Values::Names(_) | Values::Fixed(_) => 0,
                }
            })
            .collect();
        lengths.dedup();
        assert_eq!(lengths, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
    }

    #[test]
    fn names_are_written_once_each_in_one_order() {
        let list = InList::names("t.state", vec!["new", "closed", "new", "closed"]);
        let Values::Names(names) = list.values else {
            panic!("names");
        };
        assert_eq!(names, ["closed", "new"]);
    }
}
