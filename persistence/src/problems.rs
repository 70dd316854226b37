//! Problems and the known-error database, on the ticket kernel.

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use domain::priority::Priority;
use domain::problem::{NewProblem, Problem, ProblemState};
use domain::search::{rank_by_relevance, search_terms};
use domain::ticket::{Ticket, TicketKind};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::conditions::RowAfter;
use crate::schema::problems;
use crate::tickets::{
    self, shared_ticket_filters, stored, LinkFlags, Links, Position, Sort, TicketTable,
    WordsCondition,
};
use crate::{fixed_update, utc, DbConnection, Slice, StoreError, WriteContext};

pub const ENTITY: &str = "problem";
/// What PostgreSQL's word index (`problems_words_idx`) is built on.
const WORDS_DOCUMENT: &str = "problems.title || ' ' || problems.description || ' ' || \
     coalesce(problems.root_cause, '') || ' ' || coalesce(problems.workaround, '')";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = problems)]
struct ProblemRow {
    id: String,
    number: String,
    title: String,
    description: String,
    impact: String,
    urgency: String,
    priority: String,
    state: String,
    assignment_group_id: Option<String>,
    assignee_id: Option<String>,
    category: Option<String>,
    root_cause: Option<String>,
    workaround: Option<String>,
    known_error: bool,
    known_error_at: Option<NaiveDateTime>,
    resolution_code: Option<String>,
    resolution_notes: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    resolved_at: Option<NaiveDateTime>,
    closed_at: Option<NaiveDateTime>,
    version: i64,
    has_external_refs: bool,
    service_id: Option<String>,
    has_configuration_items: bool,
    fix_change_id: Option<String>,
}

impl ProblemRow {
    fn links(&self) -> LinkFlags<'_> {
        (
            &self.id,
            self.has_external_refs,
            self.has_configuration_items,
        )
    }

    fn load_refs(self, conn: &mut DbConnection) -> Result<Problem, StoreError> {
        let links = tickets::links_of(conn, TicketKind::Problem, self.links())?;
        self.into_problem(links)
    }

    fn into_problem(self, links: Links) -> Result<Problem, StoreError> {
        Ok(Problem {
            impact: stored("impact", &self.impact)?,
            urgency: stored("urgency", &self.urgency)?,
            priority: stored("priority", &self.priority)?,
            state: stored("state", &self.state)?,
            resolution_code: self
                .resolution_code
                .map(|v| stored("resolution_code", &v))
                .transpose()?,
            id: self.id,
            number: self.number,
            title: self.title,
            description: self.description,
            assignment_group: self.assignment_group_id,
            assignee: self.assignee_id,
            category: self.category,
            root_cause: self.root_cause,
            workaround: self.workaround,
            known_error: self.known_error,
            known_error_at: self.known_error_at.map(utc),
            resolution_notes: self.resolution_notes,
            external_refs: links.external_refs,
            configuration_items: links.configuration_items,
            service: self.service_id,
            fix_change_id: self.fix_change_id,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            resolved_at: self.resolved_at.map(utc),
            closed_at: self.closed_at.map(utc),
            version: self.version,
        })
    }
}

/// Stores a new problem and records it; the number is handed out here.
pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewProblem,
) -> Result<Problem, StoreError> {
    let id = crate::new_id();
    let columns = (
        problems::id.eq(&id),
        problems::title.eq(&new.title),
        problems::description.eq(&new.description),
        problems::impact.eq(new.impact.as_str()),
        problems::urgency.eq(new.urgency.as_str()),
        problems::priority.eq(new.priority().as_str()),
        problems::state.eq(ProblemState::New.as_str()),
        problems::assignment_group_id.eq(&new.assignment_group),
        problems::assignee_id.eq(&new.assignee),
        problems::category.eq(&new.category),
        problems::root_cause.eq(&new.root_cause),
        problems::workaround.eq(&new.workaround),
        problems::known_error.eq(false),
        problems::created_at.eq(ctx.at),
        problems::updated_at.eq(ctx.at),
        problems::version.eq(1),
        problems::has_external_refs.eq(!new.external_refs.is_empty()),
        problems::service_id.eq(&new.service),
        problems::has_configuration_items.eq(!new.configuration_items.is_empty()),
    );
    let number = match conn {
        DbConnection::Postgresql(c) => diesel::insert_into(problems::table)
            .values(columns)
            .returning(problems::number)
            .get_result(c)?,
        DbConnection::Sqlite(_) => {
            let number = tickets::next_number(conn, TicketKind::Problem)?;
            diesel::insert_into(problems::table)
                .values((problems::number.eq(&number), columns))
                .execute(conn)?;
            number
        }
    };
    let problem = Problem::create(new, id, number, utc(ctx.at));
    tickets::record_created(conn, ctx, &problem)?;
    Ok(problem)
}

impl TicketTable for Problem {
    const TABLE: &'static str = "problems";

    fn get(conn: &mut DbConnection, id_or_number: &str) -> Result<Problem, StoreError> {
        let row: ProblemRow = if TicketKind::Problem.is_number(id_or_number) {
            problems::table
                .filter(problems::number.eq(id_or_number))
                .select(ProblemRow::as_select())
                .get_result(conn)?
        } else {
            problems::table
                .find(id_or_number)
                .select(ProblemRow::as_select())
                .get_result(conn)?
        };
        row.load_refs(conn)
    }

    fn get_many(conn: &mut DbConnection, keys: &[String]) -> Result<Vec<Problem>, StoreError> {
        let (numbers, ids) = tickets::numbers_and_ids(TicketKind::Problem, keys);
        let rows: Vec<ProblemRow> = problems::table
            .filter(
                problems::number
                    .eq_any(numbers)
                    .or(problems::id.eq_any(ids)),
            )
            .select(ProblemRow::as_select())
            .load(conn)?;
        rows.into_iter().map(|row| row.load_refs(conn)).collect()
    }

    fn update_row(
        conn: &mut DbConnection,
        ctx: &WriteContext,
        before: &Problem,
        after: &Problem,
    ) -> Result<usize, StoreError> {
        let at = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.naive_utc());
        Ok(fixed_update(
            problems::table,
            (
                problems::title.eq(&after.title),
                problems::description.eq(&after.description),
                problems::impact.eq(after.impact.as_str()),
                problems::urgency.eq(after.urgency.as_str()),
                problems::priority.eq(after.priority.as_str()),
                problems::state.eq(after.state.as_str()),
                problems::assignment_group_id.eq(&after.assignment_group),
                problems::assignee_id.eq(&after.assignee),
                problems::category.eq(&after.category),
                problems::root_cause.eq(&after.root_cause),
                problems::workaround.eq(&after.workaround),
                problems::known_error.eq(after.known_error),
                problems::known_error_at.eq(at(after.known_error_at)),
                problems::resolution_code.eq(after.resolution_code.map(|c| c.as_str())),
                problems::resolution_notes.eq(&after.resolution_notes),
                problems::updated_at.eq(ctx.at),
                problems::resolved_at.eq(at(after.resolved_at)),
                problems::closed_at.eq(at(after.closed_at)),
                problems::version.eq(before.version + 1),
                problems::has_external_refs.eq(!after.external_refs.is_empty()),
                problems::service_id.eq(&after.service),
                problems::has_configuration_items.eq(!after.configuration_items.is_empty()),
                problems::fix_change_id.eq(&after.fix_change_id),
            ),
            problems::id
                .eq(&before.id)
                .and(problems::version.eq(before.version)),
        )
        .execute(conn)?)
    }

    fn current_version(conn: &mut DbConnection, id: &str) -> Result<i64, StoreError> {
        Ok(problems::table
            .find(id)
            .select(problems::version)
            .get_result(conn)?)
    }
}

/// Records that `incident` was linked to (or unlinked from) `problem`: an audit entry on the
/// problem and `problem.incident_linked` or `problem.incident_unlinked`.
pub fn record_link(
    ctx: &WriteContext,
    problem: &Problem,
    incident_id: &str,
    incident_number: &str,
    linked: bool,
) -> Result<(), StoreError> {
    let (action, event_type, change) = if linked {
        (
            "link_incident",
            "problem.incident_linked",
            json!({ "incidents": [null, incident_number] }),
        )
    } else {
        (
            "unlink_incident",
            "problem.incident_unlinked",
            json!({ "incidents": [incident_number, null] }),
        )
    };
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &problem.id,
            action,
            changes: change,
            event_type,
            event_data: json!({
                "problem_id": problem.id,
                "problem_number": problem.number,
                "incident_id": incident_id,
                "incident_number": incident_number,
            }),
        },
    )
    .map(|_| ())
}

#[derive(Debug, Default, Clone)]
pub struct ProblemFilter {
    pub states: Vec<ProblemState>,
    pub priorities: Vec<Priority>,
    pub assignment_group: Option<String>,
    pub assignee: Option<String>,
    pub category: Option<String>,
    pub known_error: Option<bool>,
    /// Tickets concerning this configuration item (id).
    pub configuration_item: Option<String>,
    /// Tickets affecting this business service (id).
    pub service: Option<String>,
    pub created_after: Option<NaiveDateTime>,
    pub created_before: Option<NaiveDateTime>,
    /// Words that must all appear in title, description, root cause or workaround.
    pub q: Option<String>,
    /// Tickets with a timer that breached (`true`) or with none (`false`).
    pub sla_breached: Option<bool>,
    /// Tickets with a running timer due before this instant.
    pub sla_due_before: Option<NaiveDateTime>,
    /// The problem holding this reference to another system's record.
    pub external_ref: Option<domain::ExternalRef>,
}

/// The list query of a filter, a sort and a position, built for the backend connection the
/// caller matched: [`list`] loads a page of it, [`list_plan`] explains the same query.
macro_rules! problem_list_query {
    ($filter:expr, $sort:expr, $words:expr, $after:expr) => {{
        let (filter, sort, words, after): (
            &ProblemFilter,
            Sort,
            &Option<WordsCondition>,
            Option<RowAfter>,
        ) = ($filter, $sort, $words, $after);
        let mut query = problems::table.select(ProblemRow::as_select()).into_boxed();
        if let Some(known_error) = filter.known_error {
            query = query.filter(problems::known_error.eq(known_error));
        }
        if let Some(reference) = &filter.external_ref {
            // One row at most, by the unique index on (entity_type, system, external_id).
            let holder = crate::schema::external_refs::table
                .filter(crate::schema::external_refs::entity_type.eq("problem"))
                .filter(crate::schema::external_refs::system.eq(reference.system.clone()))
                .filter(crate::schema::external_refs::external_id.eq(reference.id.clone()))
                .select(crate::schema::external_refs::entity_id);
            query = query.filter(problems::id.eq_any(holder));
        }
        shared_ticket_filters!(
            query,
            problems,
            TicketKind::Problem,
            filter,
            sort,
            words,
            after
        )
    }};
}

/// The word condition of `q` and the keyset condition of the position.
fn list_conditions(
    conn: &DbConnection,
    filter: &ProblemFilter,
    sort: Sort,
    after: Option<&Position>,
) -> Result<(Option<WordsCondition>, Option<RowAfter>), StoreError> {
    let words = filter
        .q
        .as_deref()
        .and_then(|q| tickets::words_condition::<Problem>(conn, q, WORDS_DOCUMENT));
    let after = after
        .map(|position| sort.row_after::<Problem>(position))
        .transpose()?;
    Ok((words, after))
}

/// One page of problems in `sort` order after `after`.
pub fn list(
    conn: &mut DbConnection,
    filter: &ProblemFilter,
    sort: Sort,
    after: Option<&Position>,
    limit: i64,
) -> Result<Slice<Problem>, StoreError> {
    let (words, after) = list_conditions(conn, filter, sort, after)?;
    let load = |conn: &mut DbConnection| {
        with_backend!(conn, c => {
            let query = problem_list_query!(filter, sort, &words, after);
            crate::load_page(c, query, limit)
        })
    };
    let rows: Slice<ProblemRow> = if words.is_some() {
        crate::db::with_search_limit(conn, load)?
    } else {
        load(conn)?
    };
    tickets::attach_links(
        conn,
        TicketKind::Problem,
        rows,
        ProblemRow::links,
        ProblemRow::into_problem,
    )
}

/// The plan of the query [`list`] sends for the same arguments.
pub fn list_plan(
    conn: &mut DbConnection,
    filter: &ProblemFilter,
    sort: Sort,
    after: Option<&Position>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let (words, after) = list_conditions(conn, filter, sort, after)?;
    with_backend!(conn, c => {
        let query = problem_list_query!(filter, sort, &words, after);
        crate::explain_page(c, query, limit)
    })
}

/// A known error found by words, with its relevance.
#[derive(Debug, Clone)]
pub struct KnownErrorMatch {
    pub problem: Problem,
    pub score: f64,
    /// The words of the query it contains.
    pub matched_words: Vec<String>,
}

/// Candidates a known-error search ranks at most; the most recent are kept.
const MAX_CANDIDATES: i64 = 2_000;

/// Known errors containing any word of `text`, ranked by relevance (not by date): the same
/// candidates from the word index on both backends, ranked by the domain's BM25 over the
/// known-error database.
pub fn search_known_errors(
    conn: &mut DbConnection,
    text: &str,
    limit: usize,
) -> Result<Vec<KnownErrorMatch>, StoreError> {
    let words = search_terms(text);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let (first, last) = tickets::word_rowids(TicketKind::Problem);
    let any_word = match conn {
        DbConnection::Sqlite(_) => WordsCondition {
            before: format!(
                "problems.number IN (SELECT printf('PRB%07d', rowid - {first}) \
                 FROM ticket_words WHERE ticket_words MATCH "
            ),
            text: words
                .iter()
                .map(|word| format!("\"{word}\""))
                .collect::<Vec<_>>()
                .join(" OR "),
            after: format!(" AND rowid BETWEEN {first} AND {last})"),
        },
        // Words are runs of letters and digits, never tsquery operators.
        DbConnection::Postgresql(_) => WordsCondition {
            before: format!("to_tsvector('simple', {WORDS_DOCUMENT}) @@ to_tsquery('simple', "),
            text: words.join(" | "),
            after: ")".to_owned(),
        },
    };
    let rows: Vec<ProblemRow> = problems::table
        .filter(problems::known_error.eq(true))
        .filter(
            sql::<Bool>(&any_word.before)
                .bind::<Text, _>(any_word.text)
                .sql(&any_word.after),
        )
        .order((problems::created_at.desc(), problems::id.desc()))
        .limit(MAX_CANDIDATES)
        .select(ProblemRow::as_select())
        .load(conn)?;
    let corpus: i64 = problems::table
        .filter(problems::known_error.eq(true))
        .count()
        .get_result(conn)?;
    let candidates: Vec<Problem> = rows
        .into_iter()
        .map(|row| row.load_refs(conn))
        .collect::<Result<_, _>>()?;
    let documents: Vec<Vec<String>> = candidates
        .iter()
        .map(|problem| search_terms(&problem.search_text()))
        .collect();
    let ranked = rank_by_relevance(&words, &documents, usize::try_from(corpus).unwrap_or(0));
    Ok(ranked
        .into_iter()
        .take(limit)
        .map(|(index, score)| KnownErrorMatch {
            problem: candidates[index].clone(),
            score,
            matched_words: words
                .iter()
                .filter(|word| documents[index].binary_search(word).is_ok())
                .cloned()
                .collect(),
        })
        .collect())
}
