//! `column IN (...)` conditions whose prepared statements stay cached.
//!
//! diesel's `eq_any` and `sql()` mark a statement as never to be cached, so every list query that
//! used them was parsed and planned again (a third of a list request's time on SQLite). These
//! conditions are cached by their SQL text, which differs by the number of values only.

use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Text};
use diesel::QueryResult;

use crate::MultiBackend;

/// A condition `column IN (...)` on a column given as SQL (`incidents.state`).
pub(crate) struct InList {
    column: &'static str,
    values: Values,
}

enum Values {
    /// Our own names (enum values), written as literals: both planners then use the partial
    /// index of a single state.
    Names(Vec<&'static str>),
    /// Anything else, bound.
    Bound(Vec<String>),
}

impl InList {
    /// `column IN ('a', 'b')`; `names` are constants of the domain, never client text.
    pub(crate) fn names(column: &'static str, names: Vec<&'static str>) -> Self {
        Self {
            column,
            values: Values::Names(names),
        }
    }

    /// `column IN (?, ?)` with the values bound.
    pub(crate) fn bound(column: &'static str, values: Vec<String>) -> Self {
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

impl QueryFragment<MultiBackend> for InList {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        let empty = match &self.values {
            Values::Names(names) => names.is_empty(),
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
            Values::Names(names) => {
                out.push_sql(" IN ('");
                out.push_sql(&names.join("', '"));
                out.push_sql("')");
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
