//! Incidents: storage, lists with keyset pagination, and the audit/event record of each change.

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use domain::incident::{
    incident_number, incident_sequence, is_incident_number, search_terms, Incident, IncidentState,
    Priority,
};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::conditions::{InList, Key, RowAfter};
use crate::schema::incidents;
use crate::{
    counters, external_refs, fixed_update, journal, utc, DbConnection, Lookups, Slice, StoreError,
    WriteContext,
};

pub const ENTITY: &str = "incident";
const NUMBERING: &str = "incident_number";

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
}

/// Stored enumerations were validated on the way in; reading one back cannot fail.
fn stored<T: std::str::FromStr>(value: &str, fallback: T) -> T {
    value.parse().unwrap_or(fallback)
}

impl IncidentRow {
    fn load_refs(self, conn: &mut DbConnection) -> Result<Incident, StoreError> {
        let refs = if self.has_external_refs {
            external_refs::of(conn, ENTITY, &self.id)?
        } else {
            Vec::new()
        };
        Ok(self.into_incident(refs))
    }

    fn into_incident(self, external_refs: Vec<domain::ExternalRef>) -> Incident {
        use domain::incident::{Channel, Impact, Urgency};
        Incident {
            channel: stored(&self.channel, Channel::Api),
            impact: stored(&self.impact, Impact::Medium),
            urgency: stored(&self.urgency, Urgency::Medium),
            priority: stored(&self.priority, Priority::P3),
            state: stored(&self.state, IncidentState::New),
            on_hold_reason: self.on_hold_reason.and_then(|v| v.parse().ok()),
            resolution_code: self.resolution_code.and_then(|v| v.parse().ok()),
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
            resolution_notes: self.resolution_notes,
            external_refs,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            first_response_at: self.first_response_at.map(utc),
            resolved_at: self.resolved_at.map(utc),
            closed_at: self.closed_at.map(utc),
            reopen_count: self.reopen_count,
            version: self.version,
        }
    }
}

fn search_text(incident: &Incident) -> String {
    format!("{}\n{}", incident.title, incident.description)
}

/// Stores a new incident drafted by the domain; the number is handed out here.
pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    draft: Incident,
) -> Result<Incident, StoreError> {
    let id = crate::new_id();
    let columns = (
        incidents::id.eq(&id),
        incidents::title.eq(&draft.title),
        incidents::description.eq(&draft.description),
        incidents::caller_id.eq(&draft.caller),
        incidents::channel.eq(draft.channel.as_str()),
        incidents::category.eq(&draft.category),
        incidents::subcategory.eq(&draft.subcategory),
        incidents::impact.eq(draft.impact.as_str()),
        incidents::urgency.eq(draft.urgency.as_str()),
        incidents::priority.eq(draft.priority.as_str()),
        incidents::state.eq(draft.state.as_str()),
        incidents::on_hold_reason.eq(draft.on_hold_reason.map(|r| r.as_str())),
        incidents::assignment_group_id.eq(&draft.assignment_group),
        incidents::assignee_id.eq(&draft.assignee),
        incidents::major.eq(draft.major),
        incidents::parent_id.eq(&draft.parent_id),
        incidents::created_at.eq(ctx.at),
        incidents::updated_at.eq(ctx.at),
        incidents::first_response_at.eq(draft.first_response_at.map(|t| t.naive_utc())),
        incidents::reopen_count.eq(0),
        incidents::version.eq(1),
        incidents::has_external_refs.eq(!draft.external_refs.is_empty()),
    );
    let number = match conn {
        // The column's default takes the next number from a sequence, in the same round trip
        // (several writers create at once there; a counter row would queue them).
        DbConnection::Postgresql(c) => diesel::insert_into(incidents::table)
            .values(columns)
            .returning(incidents::number)
            .get_result(c)?,
        // One writer: the counter row hands out gap-free numbers.
        DbConnection::Sqlite(_) => {
            let number = incident_number(counters::advance(conn, NUMBERING, 1)?);
            with_backend!(conn, c => diesel::insert_into(incidents::table)
                .values((incidents::number.eq(&number), columns))
                .execute(c))?;
            number
        }
    };
    index_words(conn, &number, None, &draft)?;
    if !draft.external_refs.is_empty() {
        external_refs::replace(conn, ENTITY, &id, &draft.external_refs)?;
    }
    let incident = Incident {
        id: id.clone(),
        number,
        created_at: utc(ctx.at),
        updated_at: utc(ctx.at),
        version: 1,
        ..draft
    };
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &id,
            action: "create",
            changes: domain::Changes::created(&incident).into_value(),
            event_type: "incident.created",
            event_data: json!(incident),
        },
    )?;
    if incident.assignee.is_some() {
        journal::add_event(ctx, "incident.assigned", ENTITY, &id, &json!(incident))?;
    }
    Ok(incident)
}

/// By id or by number (`INC0000042`).
pub fn get(conn: &mut DbConnection, id_or_number: &str) -> Result<Incident, StoreError> {
    let row: IncidentRow = if is_incident_number(id_or_number) {
        let query = incidents::table.filter(incidents::number.eq(id_or_number));
        with_backend!(conn, c => query.select(IncidentRow::as_select()).get_result(c))?
    } else {
        let query = incidents::table.find(id_or_number);
        with_backend!(conn, c => query.select(IncidentRow::as_select()).get_result(c))?
    };
    row.load_refs(conn)
}

/// The incidents these ids and numbers name, in no particular order: one query for the
/// numbers and one for the ids (a single key takes [`get`]'s cached statement).
pub fn get_many(conn: &mut DbConnection, keys: &[String]) -> Result<Vec<Incident>, StoreError> {
    if let [key] = keys {
        return match get(conn, key) {
            Ok(incident) => Ok(vec![incident]),
            Err(StoreError::NotFound) => Ok(Vec::new()),
            Err(error) => Err(error),
        };
    }
    let (numbers, ids): (Vec<&str>, Vec<&str>) = keys
        .iter()
        .map(String::as_str)
        .partition(|key| is_incident_number(key));
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

/// Lookups of incidents by id or number, coalesced on PostgreSQL (see [`Lookups`]).
pub fn lookups() -> Lookups<Incident> {
    Lookups::new(get_many, |incident, key| {
        incident.number == key || incident.id == key
    })
}

/// Saves `after` over `before` if nobody changed it meanwhile, and records the change: one
/// audit entry with the field diff, and the events the change means (`incident.updated`,
/// `incident.state_changed`, `incident.assigned`, `incident.major_declared`).
pub fn save(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    before: &Incident,
    after: &Incident,
    action: &str,
    note: Option<&str>,
) -> Result<Incident, StoreError> {
    let mut changes = before.changes_to(after);
    if let Some(note) = note {
        changes.field("reason", &None::<&str>, &Some(note));
    }
    if changes.is_empty() {
        return Ok(before.clone());
    }
    let updated = with_backend!(conn, c => fixed_update(
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
        ),
        incidents::id
            .eq(&before.id)
            .and(incidents::version.eq(before.version)),
    )
    .execute(c))?;
    if updated == 0 {
        let current: i64 = incidents::table
            .find(&before.id)
            .select(incidents::version)
            .get_result(conn)?;
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: current,
        });
    }
    if before.title != after.title || before.description != after.description {
        index_words(conn, &before.number, Some(before), after)?;
    }
    if before.external_refs != after.external_refs {
        external_refs::replace(conn, ENTITY, &after.id, &after.external_refs)?;
    }
    let saved = Incident {
        updated_at: utc(ctx.at),
        version: before.version + 1,
        ..after.clone()
    };
    let data = json!(saved);
    let main_event = if before.state != saved.state {
        "incident.state_changed"
    } else {
        "incident.updated"
    };
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &saved.id,
            action,
            changes: changes.into_value(),
            event_type: main_event,
            event_data: data.clone(),
        },
    )?;
    if before.assignee != saved.assignee || before.assignment_group != saved.assignment_group {
        journal::add_event(ctx, "incident.assigned", ENTITY, &saved.id, &data)?;
    }
    if !before.major && saved.major {
        journal::add_event(ctx, "incident.major_declared", ENTITY, &saved.id, &data)?;
    }
    Ok(saved)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    CreatedAt,
    UpdatedAt,
    Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub field: SortField,
    pub descending: bool,
}

/// Where the previous page ended: the sort key of its last item and that item's id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub key: String,
    pub id: String,
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
    pub parent_id: Option<String>,
    pub created_after: Option<NaiveDateTime>,
    pub created_before: Option<NaiveDateTime>,
    pub updated_after: Option<NaiveDateTime>,
    /// Words that must all appear in title or description.
    pub q: Option<String>,
}

const TIME_KEY_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

fn time_key(at: NaiveDateTime) -> String {
    at.format(TIME_KEY_FORMAT).to_string()
}

fn parse_time_key(key: &str) -> Result<NaiveDateTime, StoreError> {
    NaiveDateTime::parse_from_str(key, TIME_KEY_FORMAT)
        .map_err(|_| StoreError::Conflict("the cursor does not belong to this sort".into()))
}

impl Sort {
    /// The keyset position of `incident` in this sort.
    pub fn position_of(&self, incident: &Incident) -> Position {
        let key = match self.field {
            SortField::CreatedAt => time_key(incident.created_at.naive_utc()),
            SortField::UpdatedAt => time_key(incident.updated_at.naive_utc()),
            SortField::Priority => incident.priority.as_str().to_owned(),
        };
        Position {
            key,
            id: incident.id.clone(),
        }
    }
}

/// The words of `q` as a full-text condition, `<sql> ?)` with the text to bind: an FTS5
/// index on SQLite, a GIN-indexed tsvector on PostgreSQL. Both match whole words,
/// case-insensitively, all of them.
fn words_condition(conn: &DbConnection, q: &str) -> Option<(&'static str, String)> {
    let words = search_terms(q);
    if words.is_empty() {
        return None;
    }
    Some(match conn {
        // Each word quoted, so that it is a word and never an FTS5 operator. The index's rowid
        // is the sequence of the incident's number, formatted here as `incident_number` does.
        DbConnection::Sqlite(_) => (
            "incidents.number IN (SELECT printf('INC%07d', rowid) FROM incident_words \
             WHERE incident_words MATCH ",
            words
                .iter()
                .map(|word| format!("\"{word}\""))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        DbConnection::Postgresql(_) => (
            "to_tsvector('simple', incidents.title || ' ' || incidents.description) \
             @@ plainto_tsquery('simple', ",
            words.join(" "),
        ),
    })
}

/// Keeps SQLite's full-text index in step with an incident's title and description
/// (PostgreSQL indexes the columns themselves): queues its words for the journal when they
/// changed, under the sequence of the incident's `number` (the index's rowid).
fn index_words(
    conn: &DbConnection,
    number: &str,
    before: Option<&Incident>,
    after: &Incident,
) -> Result<(), StoreError> {
    if !matches!(conn, DbConnection::Sqlite(_)) {
        return Ok(());
    }
    let terms = search_terms(&search_text(after));
    let old = before.map(|b| search_terms(&search_text(b)));
    if old.as_ref() == Some(&terms) {
        return Ok(());
    }
    let sequence = incident_sequence(number)
        .ok_or_else(|| StoreError::Unavailable(format!("{number} is not an incident number")))?;
    journal::index_words(sequence, terms.join(" "), before.is_some())
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
        if !filter.states.is_empty() {
            let names = filter.states.iter().map(|s| s.as_str()).collect();
            query = query.filter(InList::names("incidents.state", names));
        }
        if !filter.priorities.is_empty() {
            let names = filter.priorities.iter().map(|p| p.as_str()).collect();
            query = query.filter(InList::names("incidents.priority", names));
        }
        if let Some(group) = &filter.assignment_group {
            query = query.filter(incidents::assignment_group_id.eq(group.clone()));
        }
        if let Some(assignee) = &filter.assignee {
            query = query.filter(incidents::assignee_id.eq(assignee.clone()));
        }
        if let Some(caller) = &filter.caller {
            query = query.filter(incidents::caller_id.eq(caller.clone()));
        }
        if let Some(major) = filter.major {
            query = query.filter(incidents::major.eq(major));
        }
        if let Some(category) = &filter.category {
            query = query.filter(incidents::category.eq(category.clone()));
        }
        if let Some(parent) = &filter.parent_id {
            query = query.filter(incidents::parent_id.eq(parent.clone()));
        }
        if let Some(at) = filter.created_after {
            query = query.filter(incidents::created_at.ge(at));
        }
        if let Some(at) = filter.created_before {
            query = query.filter(incidents::created_at.lt(at));
        }
        if let Some(at) = filter.updated_after {
            query = query.filter(incidents::updated_at.ge(at));
        }
        if let Some((condition, text)) = &words {
            query = query.filter(
                sql::<Bool>(condition)
                    .bind::<Text, _>(text.clone())
                    .sql(")"),
            );
        }
        if let Some(after) = after {
            query = query.filter(after);
        }
        query = match (sort.field, sort.descending) {
            (SortField::CreatedAt, false) => {
                query.order((incidents::created_at.asc(), incidents::id.asc()))
            }
            (SortField::CreatedAt, true) => {
                query.order((incidents::created_at.desc(), incidents::id.desc()))
            }
            (SortField::UpdatedAt, false) => {
                query.order((incidents::updated_at.asc(), incidents::id.asc()))
            }
            (SortField::UpdatedAt, true) => {
                query.order((incidents::updated_at.desc(), incidents::id.desc()))
            }
            (SortField::Priority, false) => {
                query.order((incidents::priority.asc(), incidents::id.asc()))
            }
            (SortField::Priority, true) => {
                query.order((incidents::priority.desc(), incidents::id.desc()))
            }
        };
        query
    }};
}

/// The keyset condition for the rows after `position` in `sort` order.
fn row_after(sort: Sort, position: &Position) -> Result<RowAfter, StoreError> {
    let (columns, key) = match sort.field {
        SortField::CreatedAt => (
            "(incidents.created_at, incidents.id)",
            Key::Time(parse_time_key(&position.key)?),
        ),
        SortField::UpdatedAt => (
            "(incidents.updated_at, incidents.id)",
            Key::Time(parse_time_key(&position.key)?),
        ),
        SortField::Priority => (
            "(incidents.priority, incidents.id)",
            Key::Text(position.key.clone()),
        ),
    };
    Ok(RowAfter::new(
        columns,
        sort.descending,
        key,
        position.id.clone(),
    ))
}

/// What [`incident_list_query!`] needs beyond the filter: the word condition of `q` and the
/// keyset condition of the position.
type ListConditions = (Option<(&'static str, String)>, Option<RowAfter>);

fn list_conditions(
    conn: &DbConnection,
    filter: &IncidentFilter,
    sort: Sort,
    after: Option<&Position>,
) -> Result<ListConditions, StoreError> {
    let words = filter.q.as_deref().and_then(|q| words_condition(conn, q));
    let after = after
        .map(|position| row_after(sort, position))
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
        crate::db::with_custom_plans(conn, load)?
    } else {
        load(conn)?
    };
    external_refs::attach(
        conn,
        ENTITY,
        rows,
        |row| row.has_external_refs.then_some(row.id.as_str()),
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
