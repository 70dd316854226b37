//! Incidents: storage, lists with keyset pagination, and the audit/event record of each change.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::incident::{Incident, IncidentState, NewIncident};
use domain::priority::Priority;
use domain::ticket::TicketKind;

use crate::conditions::{InList, RowAfter};
use crate::schema::incidents;
use crate::tickets::{
    self, shared_ticket_filters, stored, LinkFlags, Links, Position, Sort, TicketTable,
    WordsCondition,
};
use crate::{fixed_update, utc, DbConnection, Slice, StoreError, WriteContext};

pub const ENTITY: &str = "incident";
/// What PostgreSQL's word index (`incidents_words_idx`) is built on.
const WORDS_DOCUMENT: &str = "incidents.title || ' ' || incidents.description";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = incidents)]
struct IncidentRow {
    id: String,
    number: String,
    title: String,
    description: String,
    caller_id: String,
    channel: String,
    category: Option<String>,
    subcategory: Option<String>,
    impact: String,
    urgency: String,
    priority: String,
    state: String,
    on_hold_reason: Option<String>,
    assignment_group_id: Option<String>,
    assignee_id: Option<String>,
    major: bool,
    parent_id: Option<String>,
    resolution_code: Option<String>,
    resolution_notes: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    first_response_at: Option<NaiveDateTime>,
    resolved_at: Option<NaiveDateTime>,
    closed_at: Option<NaiveDateTime>,
    reopen_count: i32,
    version: i64,
    /// Whether to look its external references up at all: most incidents have none, and on
    /// PostgreSQL the lookup was one of a GET's three round trips.
    has_external_refs: bool,
    problem_id: Option<String>,
    service_id: Option<String>,
    has_configuration_items: bool,
}

impl IncidentRow {
    fn links(&self) -> LinkFlags<'_> {
        (
            &self.id,
            self.has_external_refs,
            self.has_configuration_items,
        )
    }

    fn load_refs(self, conn: &mut DbConnection) -> Result<Incident, StoreError> {
        let links = tickets::links_of(conn, TicketKind::Incident, self.links())?;
        self.into_incident(links)
    }

    fn into_incident(self, links: Links) -> Result<Incident, StoreError> {
        Ok(Incident {
            channel: stored("channel", &self.channel)?,
            impact: stored("impact", &self.impact)?,
            urgency: stored("urgency", &self.urgency)?,
            priority: stored("priority", &self.priority)?,
            state: stored("state", &self.state)?,
            on_hold_reason: self
                .on_hold_reason
                .map(|v| stored("on_hold_reason", &v))
                .transpose()?,
            resolution_code: self
                .resolution_code
                .map(|v| stored("resolution_code", &v))
                .transpose()?,
            id: self.id,
            number: self.number,
            title: self.title,
            description: self.description,
            caller: self.caller_id,
            category: self.category,
            subcategory: self.subcategory,
            assignment_group: self.assignment_group_id,
            assignee: self.assignee_id,
            major: self.major,
            parent_id: self.parent_id,
            problem_id: self.problem_id,
            resolution_notes: self.resolution_notes,
            external_refs: links.external_refs,
            configuration_items: links.configuration_items,
            service: self.service_id,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            first_response_at: self.first_response_at.map(utc),
            resolved_at: self.resolved_at.map(utc),
            closed_at: self.closed_at.map(utc),
            reopen_count: self.reopen_count,
            version: self.version,
        })
    }
}

/// Stores a new incident and records it; the number is handed out here.
pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewIncident,
) -> Result<Incident, StoreError> {
    let id = crate::new_id();
    let at = utc(ctx.at);
    let columns = (
        incidents::id.eq(&id),
        incidents::title.eq(&new.title),
        incidents::description.eq(&new.description),
        incidents::caller_id.eq(&new.caller),
        incidents::channel.eq(new.channel.as_str()),
        incidents::category.eq(&new.category),
        incidents::subcategory.eq(&new.subcategory),
        incidents::impact.eq(new.impact.as_str()),
        incidents::urgency.eq(new.urgency.as_str()),
        incidents::priority.eq(new.priority().as_str()),
        incidents::state.eq(new.initial_state().as_str()),
        incidents::on_hold_reason.eq(None::<&str>),
        incidents::assignment_group_id.eq(&new.assignment_group),
        incidents::assignee_id.eq(&new.assignee),
        incidents::major.eq(false),
        incidents::parent_id.eq(&new.parent_id),
        incidents::created_at.eq(ctx.at),
        incidents::updated_at.eq(ctx.at),
        incidents::first_response_at.eq(new.first_response_at(at).map(|t| t.naive_utc())),
        incidents::reopen_count.eq(0),
        incidents::version.eq(1),
        incidents::has_external_refs.eq(!new.external_refs.is_empty()),
        incidents::service_id.eq(&new.service),
        incidents::has_configuration_items.eq(!new.configuration_items.is_empty()),
    );
    let number = match conn {
        // The column's default takes the next number from a sequence, in the same round trip
        // (several writers create at once there; a counter row would queue them).
        DbConnection::Postgresql(c) => diesel::insert_into(incidents::table)
            .values(columns)
            .returning(incidents::number)
            .get_result(c)?,
        DbConnection::Sqlite(_) => {
            let number = tickets::next_number(conn, TicketKind::Incident)?;
            with_backend!(conn, c => diesel::insert_into(incidents::table)
                .values((incidents::number.eq(&number), columns))
                .execute(c))?;
            number
        }
    };
    let incident = Incident::create(new, id, number, at);
    tickets::record_created(conn, ctx, &incident)?;
    Ok(incident)
}

impl TicketTable for Incident {
    const TABLE: &'static str = "incidents";

    fn get(conn: &mut DbConnection, id_or_number: &str) -> Result<Incident, StoreError> {
        let row: IncidentRow = if TicketKind::Incident.is_number(id_or_number) {
            let query = incidents::table.filter(incidents::number.eq(id_or_number));
            with_backend!(conn, c => query.select(IncidentRow::as_select()).get_result(c))?
        } else {
            let query = incidents::table.find(id_or_number);
            with_backend!(conn, c => query.select(IncidentRow::as_select()).get_result(c))?
        };
        row.load_refs(conn)
    }

    /// One query for the numbers and one for the ids (a single key takes `get`'s cached
    /// statement).
    fn get_many(conn: &mut DbConnection, keys: &[String]) -> Result<Vec<Incident>, StoreError> {
        if let [key] = keys {
            return match Self::get(conn, key) {
                Ok(incident) => Ok(vec![incident]),
                Err(StoreError::NotFound) => Ok(Vec::new()),
                Err(error) => Err(error),
            };
        }
        let (numbers, ids) = tickets::numbers_and_ids(TicketKind::Incident, keys);
        let mut rows: Vec<IncidentRow> = Vec::with_capacity(keys.len());
        if !numbers.is_empty() {
            let query = incidents::table.filter(incidents::number.eq_any(numbers));
            rows.extend(with_backend!(conn, c => query.select(IncidentRow::as_select()).load(c))?);
        }
        if !ids.is_empty() {
            let query = incidents::table.filter(incidents::id.eq_any(ids));
            rows.extend(with_backend!(conn, c => query.select(IncidentRow::as_select()).load(c))?);
        }
        rows.into_iter().map(|row| row.load_refs(conn)).collect()
    }

    fn update_row(
        conn: &mut DbConnection,
        ctx: &WriteContext,
        before: &Incident,
        after: &Incident,
    ) -> Result<usize, StoreError> {
        Ok(with_backend!(conn, c => fixed_update(
            incidents::table,
            (
                incidents::title.eq(&after.title),
                incidents::description.eq(&after.description),
                incidents::caller_id.eq(&after.caller),
                incidents::channel.eq(after.channel.as_str()),
                incidents::category.eq(&after.category),
                incidents::subcategory.eq(&after.subcategory),
                incidents::impact.eq(after.impact.as_str()),
                incidents::urgency.eq(after.urgency.as_str()),
                incidents::priority.eq(after.priority.as_str()),
                incidents::state.eq(after.state.as_str()),
                incidents::on_hold_reason.eq(after.on_hold_reason.map(|r| r.as_str())),
                incidents::assignment_group_id.eq(&after.assignment_group),
                incidents::assignee_id.eq(&after.assignee),
                incidents::major.eq(after.major),
                incidents::parent_id.eq(&after.parent_id),
                incidents::resolution_code.eq(after.resolution_code.map(|c| c.as_str())),
                incidents::resolution_notes.eq(&after.resolution_notes),
                incidents::updated_at.eq(ctx.at),
                incidents::first_response_at.eq(after.first_response_at.map(|t| t.naive_utc())),
                incidents::resolved_at.eq(after.resolved_at.map(|t| t.naive_utc())),
                incidents::closed_at.eq(after.closed_at.map(|t| t.naive_utc())),
                incidents::reopen_count.eq(after.reopen_count),
                incidents::version.eq(before.version + 1),
                incidents::has_external_refs.eq(!after.external_refs.is_empty()),
                incidents::service_id.eq(&after.service),
                incidents::has_configuration_items.eq(!after.configuration_items.is_empty()),
                incidents::problem_id.eq(&after.problem_id),
            ),
            incidents::id
                .eq(&before.id)
                .and(incidents::version.eq(before.version)),
        )
        .execute(c))?)
    }

    fn current_version(conn: &mut DbConnection, id: &str) -> Result<i64, StoreError> {
        Ok(incidents::table
            .find(id)
            .select(incidents::version)
            .get_result(conn)?)
    }
}

/// The open or resolved children of `parent_id`.
pub fn children(conn: &mut DbConnection, parent_id: &str) -> Result<Vec<Incident>, StoreError> {
    let rows: Vec<IncidentRow> = incidents::table
        .filter(incidents::parent_id.eq(parent_id))
        .select(IncidentRow::as_select())
        .order(incidents::id.asc())
        .load(conn)?;
    rows.into_iter().map(|row| row.load_refs(conn)).collect()
}

pub fn has_children(conn: &mut DbConnection, id: &str) -> Result<bool, StoreError> {
    let count: i64 = incidents::table
        .filter(incidents::parent_id.eq(id))
        .count()
        .get_result(conn)?;
    Ok(count > 0)
}

/// The incidents linked to `problem_id`, oldest first.
pub fn of_problem(conn: &mut DbConnection, problem_id: &str) -> Result<Vec<Incident>, StoreError> {
    let rows: Vec<IncidentRow> = incidents::table
        .filter(incidents::problem_id.eq(problem_id))
        .select(IncidentRow::as_select())
        .order((incidents::created_at.asc(), incidents::id.asc()))
        .load(conn)?;
    rows.into_iter().map(|row| row.load_refs(conn)).collect()
}

/// Ids of incidents resolved before `cutoff`, oldest first (for automatic closure).
pub fn resolved_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(incidents::table
        // A literal, not a parameter, so that the partial index on resolved incidents applies.
        .filter(InList::names(
            "incidents.state",
            vec![IncidentState::Resolved.as_str()],
        ))
        .filter(incidents::resolved_at.lt(cutoff))
        .order(incidents::resolved_at.asc())
        .select(incidents::id)
        .limit(limit)
        .load(conn)?)
}

#[derive(Debug, Default, Clone)]
pub struct IncidentFilter {
    pub states: Vec<IncidentState>,
    pub priorities: Vec<Priority>,
    pub assignment_group: Option<String>,
    pub assignee: Option<String>,
    pub caller: Option<String>,
    pub major: Option<bool>,
    pub category: Option<String>,
    /// Where the incidents were reported (`monitoring` for alerts).
    pub channel: Option<domain::incident::Channel>,
    pub parent_id: Option<String>,
    pub problem_id: Option<String>,
    /// Tickets concerning this configuration item (id).
    pub configuration_item: Option<String>,
    /// Tickets affecting this business service (id).
    pub service: Option<String>,
    pub created_after: Option<NaiveDateTime>,
    pub created_before: Option<NaiveDateTime>,
    pub updated_after: Option<NaiveDateTime>,
    /// Words that must all appear in title or description.
    pub q: Option<String>,
    /// Tickets with a timer that breached (`true`) or with none (`false`).
    pub sla_breached: Option<bool>,
    /// Tickets with a running timer due before this instant.
    pub sla_due_before: Option<NaiveDateTime>,
    /// The incident holding this reference to another system's record.
    pub external_ref: Option<domain::ExternalRef>,
}

/// The list query of a filter, a sort and a position, built for the backend connection the
/// caller matched (see [`with_backend!`]): [`list`] loads a page of it, [`list_plan`] explains
/// the same query.
macro_rules! incident_list_query {
    ($filter:expr, $sort:expr, $words:expr, $after:expr) => {{
        let (filter, sort, words, after) = ($filter, $sort, $words, $after);
        let mut query = incidents::table
            .select(IncidentRow::as_select())
            .into_boxed();
        if let Some(caller) = &filter.caller {
            query = query.filter(incidents::caller_id.eq(caller.clone()));
        }
        if let Some(major) = filter.major {
            query = query.filter(incidents::major.eq(major));
        }
        if let Some(channel) = filter.channel {
            query = query.filter(incidents::channel.eq(channel.as_str()));
        }
        if let Some(parent) = &filter.parent_id {
            query = query.filter(incidents::parent_id.eq(parent.clone()));
        }
        if let Some(problem) = &filter.problem_id {
            query = query.filter(incidents::problem_id.eq(problem.clone()));
        }
        if let Some(at) = filter.updated_after {
            query = query.filter(incidents::updated_at.ge(at));
        }
        if let Some(reference) = &filter.external_ref {
            // One row at most, by the unique index on (entity_type, system, external_id).
            let holder = crate::schema::external_refs::table
                .filter(crate::schema::external_refs::entity_type.eq("incident"))
                .filter(crate::schema::external_refs::system.eq(reference.system.clone()))
                .filter(crate::schema::external_refs::external_id.eq(reference.id.clone()))
                .select(crate::schema::external_refs::entity_id);
            query = query.filter(incidents::id.eq_any(holder));
        }
        shared_ticket_filters!(
            query,
            incidents,
            TicketKind::Incident,
            filter,
            sort,
            words,
            after
        )
    }};
}

/// What [`incident_list_query!`] needs beyond the filter: the word condition of `q` and the
/// keyset condition of the position.
type ListConditions = (Option<WordsCondition>, Option<RowAfter>);

fn list_conditions(
    conn: &DbConnection,
    filter: &IncidentFilter,
    sort: Sort,
    after: Option<&Position>,
) -> Result<ListConditions, StoreError> {
    let words = filter
        .q
        .as_deref()
        .and_then(|q| tickets::words_condition::<Incident>(conn, q, WORDS_DOCUMENT));
    let after = after
        .map(|position| sort.row_after::<Incident>(position))
        .transpose()?;
    Ok((words, after))
}

/// The plan of the query [`list`] sends for the same arguments.
pub fn list_plan(
    conn: &mut DbConnection,
    filter: &IncidentFilter,
    sort: Sort,
    after: Option<&Position>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let (words, after) = list_conditions(conn, filter, sort, after)?;
    with_backend!(conn, c => {
        let query = incident_list_query!(filter, sort, &words, after);
        crate::explain_page(c, query, limit)
    })
}

/// One page of incidents in `sort` order after `after`.
pub fn list(
    conn: &mut DbConnection,
    filter: &IncidentFilter,
    sort: Sort,
    after: Option<&Position>,
    limit: i64,
) -> Result<Slice<Incident>, StoreError> {
    let (words, after) = list_conditions(conn, filter, sort, after)?;
    let load = |conn: &mut DbConnection| {
        with_backend!(conn, c => {
            let query = incident_list_query!(filter, sort, &words, after);
            crate::load_page(c, query, limit)
        })
    };
    // How many rows a word matches decides the plan: walk the newest incidents for a common
    // word, the word index for a rare one.
    let rows: Slice<IncidentRow> = if words.is_some() {
        crate::db::with_search_limit(conn, load)?
    } else {
        load(conn)?
    };
    tickets::attach_links(
        conn,
        TicketKind::Incident,
        rows,
        IncidentRow::links,
        IncidentRow::into_incident,
    )
}

/// Which of `ids` are closed or canceled incidents (the parents whose children cannot reopen).
pub fn final_among(
    conn: &mut DbConnection,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, StoreError> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let finals = [
        IncidentState::Closed.as_str(),
        IncidentState::Canceled.as_str(),
    ];
    let ids = ids.iter().map(|id| id.to_string()).collect();
    Ok(incidents::table
        .filter(InList::bound("incidents.id", ids))
        .filter(InList::names("incidents.state", finals.to_vec()))
        .select(incidents::id)
        .load::<String>(conn)?
        .into_iter()
        .collect())
}
