//! Changes on the ticket kernel, with their approvals, approval policies, standard change
//! templates and freeze windows.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use domain::change::approval::{ApprovalPolicy, ApprovalState, ChangeApproval, PolicyRules};
use domain::change::schedule::{FreezeScope, FreezeWindow, PlannedChange, Window};
use domain::change::{
    Change, ChangeState, ChangeType, NewChange, RiskLevel, StandardChangeTemplate, TemplateFields,
};
use domain::ticket::TicketKind;
use domain::Changes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::conditions::{InList, RowAfter};
use crate::schema::{
    change_approval_policies as policies, change_approvals as approvals,
    change_freeze_windows as freezes, changes, standard_change_templates as templates,
    ticket_configuration_items as links,
};
use crate::tickets::{
    self, stored, LinkFlags, Links, Position, Sort, SortField, TicketTable, WordsCondition,
};
use crate::{fixed_update, utc, DbConnection, Slice, StoreError, WriteContext};

pub const ENTITY: &str = "change";
pub const POLICY: &str = "change_approval_policy";
pub const TEMPLATE: &str = "standard_change_template";
pub const FREEZE: &str = "change_freeze_window";

/// What PostgreSQL's word index (`changes_words_idx`) is built on.
const WORDS_DOCUMENT: &str = "changes.title || ' ' || changes.description";

/// The longest planned window: conflicts look for overlaps among windows starting this long
/// before a change's end at most.
pub const MAX_WINDOW_DAYS: i64 = 31;

fn parsed<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Database(diesel::result::Error::DeserializationError(
            format!("stored {what} is not valid: {e}").into(),
        ))
    })
}

fn text(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn naive(at: Option<DateTime<Utc>>) -> Option<NaiveDateTime> {
    at.map(|t| t.naive_utc())
}

/// The plans of a change, stored together (`plans`).
#[derive(Serialize, Deserialize)]
struct Plans {
    justification: Option<String>,
    implementation_plan: Option<String>,
    backout_plan: Option<String>,
    test_plan: Option<String>,
}

/// The risk of a change besides its level (`risk_detail`).
#[derive(Serialize, Deserialize)]
struct RiskDetail {
    answers: domain::change::RiskAnswers,
    assessment: domain::change::RiskAssessment,
    override_reason: Option<String>,
}

/// The state of a change's authorisation (the `approval` column).
#[derive(Serialize, Deserialize)]
struct Authorization {
    policy: Option<String>,
    quorum: Option<i64>,
    rejection: Option<domain::change::Rejection>,
    freeze_override_reason: Option<String>,
}

/// The tickets a change links to (`related`).
#[derive(Serialize, Deserialize)]
struct Related {
    caused_incidents: Vec<String>,
    fixes_problems: Vec<String>,
}

/// The JSON columns of a change: plans, risk detail, approval, related.
fn json_columns(change: &Change) -> (String, String, String, String) {
    (
        text(&Plans {
            justification: change.justification.clone(),
            implementation_plan: change.implementation_plan.clone(),
            backout_plan: change.backout_plan.clone(),
            test_plan: change.test_plan.clone(),
        }),
        text(&RiskDetail {
            answers: change.risk_answers.clone(),
            assessment: change.risk_assessment.clone(),
            override_reason: change.risk_override_reason.clone(),
        }),
        text(&Authorization {
            policy: change.approval_policy.clone(),
            quorum: change.approval_quorum,
            rejection: change.rejection.clone(),
            freeze_override_reason: change.freeze_override_reason.clone(),
        }),
        text(&Related {
            caused_incidents: change.caused_incidents.clone(),
            fixes_problems: change.fixes_problems.clone(),
        }),
    )
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = changes)]
struct ChangeRow {
    id: String,
    number: String,
    change_type: String,
    title: String,
    description: String,
    plans: String,
    state: String,
    risk: String,
    risk_detail: String,
    planned_start: Option<NaiveDateTime>,
    planned_end: Option<NaiveDateTime>,
    actual_start: Option<NaiveDateTime>,
    actual_end: Option<NaiveDateTime>,
    service_id: Option<String>,
    assignment_group_id: Option<String>,
    assignee_id: Option<String>,
    requested_by: String,
    template_id: Option<String>,
    approval_round: i64,
    authorized_at: Option<NaiveDateTime>,
    retrospective: bool,
    approval: String,
    outcome: Option<String>,
    review_notes: Option<String>,
    related: String,
    cancel_reason: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    closed_at: Option<NaiveDateTime>,
    version: i64,
    has_external_refs: bool,
    has_configuration_items: bool,
}

impl ChangeRow {
    fn links(&self) -> LinkFlags<'_> {
        (
            &self.id,
            self.has_external_refs,
            self.has_configuration_items,
        )
    }

    fn load_refs(self, conn: &mut DbConnection) -> Result<Change, StoreError> {
        let links = tickets::links_of(conn, TicketKind::Change, self.links())?;
        self.into_change(links)
    }

    fn into_change(self, links: Links) -> Result<Change, StoreError> {
        let plans: Plans = parsed("plans", &self.plans)?;
        let risk: RiskDetail = parsed("risk_detail", &self.risk_detail)?;
        let authorization: Authorization = parsed("approval", &self.approval)?;
        let related: Related = parsed("related", &self.related)?;
        Ok(Change {
            change_type: stored("change_type", &self.change_type)?,
            state: stored("state", &self.state)?,
            risk: stored("risk", &self.risk)?,
            risk_answers: risk.answers,
            risk_assessment: risk.assessment,
            risk_override_reason: risk.override_reason,
            rejection: authorization.rejection,
            approval_policy: authorization.policy,
            approval_quorum: authorization.quorum,
            freeze_override_reason: authorization.freeze_override_reason,
            outcome: self.outcome.map(|v| stored("outcome", &v)).transpose()?,
            caused_incidents: related.caused_incidents,
            fixes_problems: related.fixes_problems,
            justification: plans.justification,
            implementation_plan: plans.implementation_plan,
            backout_plan: plans.backout_plan,
            test_plan: plans.test_plan,
            id: self.id,
            number: self.number,
            title: self.title,
            description: self.description,
            planned_start: self.planned_start.map(utc),
            planned_end: self.planned_end.map(utc),
            actual_start: self.actual_start.map(utc),
            actual_end: self.actual_end.map(utc),
            configuration_items: links.configuration_items,
            service: self.service_id,
            assignment_group: self.assignment_group_id,
            assignee: self.assignee_id,
            requested_by: self.requested_by,
            template: self.template_id,
            approval_round: self.approval_round,
            authorized_at: self.authorized_at.map(utc),
            retrospective: self.retrospective,
            review_notes: self.review_notes,
            cancel_reason: self.cancel_reason,
            external_refs: links.external_refs,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            closed_at: self.closed_at.map(utc),
            version: self.version,
        })
    }
}

/// Stores a new change and records it; the number is handed out here.
pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewChange,
) -> Result<Change, StoreError> {
    let id = crate::new_id();
    let change = Change::create(new, id, String::new(), utc(ctx.at));
    let (plans, risk_detail, authorization, related) = json_columns(&change);
    let columns = (
        changes::id.eq(&change.id),
        changes::change_type.eq(change.change_type.as_str()),
        changes::title.eq(&change.title),
        changes::description.eq(&change.description),
        changes::plans.eq(plans),
        changes::state.eq(change.state.as_str()),
        changes::risk.eq(change.risk.as_str()),
        changes::risk_detail.eq(risk_detail),
        changes::planned_start.eq(naive(change.planned_start)),
        changes::planned_end.eq(naive(change.planned_end)),
        changes::service_id.eq(&change.service),
        changes::assignment_group_id.eq(&change.assignment_group),
        changes::assignee_id.eq(&change.assignee),
        changes::requested_by.eq(&change.requested_by),
        changes::template_id.eq(&change.template),
        changes::approval_round.eq(0),
        changes::retrospective.eq(false),
        changes::approval.eq(authorization),
        changes::related.eq(related),
        changes::created_at.eq(ctx.at),
        changes::updated_at.eq(ctx.at),
        changes::version.eq(1),
        changes::has_external_refs.eq(!change.external_refs.is_empty()),
        changes::has_configuration_items.eq(!change.configuration_items.is_empty()),
    );
    let number = match conn {
        DbConnection::Postgresql(c) => diesel::insert_into(changes::table)
            .values(columns)
            .returning(changes::number)
            .get_result(c)?,
        DbConnection::Sqlite(_) => {
            let number = tickets::next_number(conn, TicketKind::Change)?;
            diesel::insert_into(changes::table)
                .values((changes::number.eq(&number), columns))
                .execute(conn)?;
            number
        }
    };
    let change = Change { number, ..change };
    tickets::record_created(conn, ctx, &change)?;
    Ok(change)
}

impl TicketTable for Change {
    const TABLE: &'static str = "changes";

    fn get(conn: &mut DbConnection, id_or_number: &str) -> Result<Change, StoreError> {
        let row: ChangeRow = if TicketKind::Change.is_number(id_or_number) {
            changes::table
                .filter(changes::number.eq(id_or_number))
                .select(ChangeRow::as_select())
                .get_result(conn)?
        } else {
            changes::table
                .find(id_or_number)
                .select(ChangeRow::as_select())
                .get_result(conn)?
        };
        row.load_refs(conn)
    }

    fn get_many(conn: &mut DbConnection, keys: &[String]) -> Result<Vec<Change>, StoreError> {
        let (numbers, ids) = tickets::numbers_and_ids(TicketKind::Change, keys);
        let rows: Vec<ChangeRow> = changes::table
            .filter(changes::number.eq_any(numbers).or(changes::id.eq_any(ids)))
            .select(ChangeRow::as_select())
            .load(conn)?;
        rows.into_iter().map(|row| row.load_refs(conn)).collect()
    }

    fn update_row(
        conn: &mut DbConnection,
        ctx: &WriteContext,
        before: &Change,
        after: &Change,
    ) -> Result<usize, StoreError> {
        let (plans, risk_detail, authorization, related) = json_columns(after);
        Ok(fixed_update(
            changes::table,
            (
                (
                    changes::change_type.eq(after.change_type.as_str()),
                    changes::title.eq(&after.title),
                    changes::description.eq(&after.description),
                    changes::plans.eq(plans),
                    changes::state.eq(after.state.as_str()),
                    changes::risk.eq(after.risk.as_str()),
                    changes::risk_detail.eq(risk_detail),
                    changes::planned_start.eq(naive(after.planned_start)),
                    changes::planned_end.eq(naive(after.planned_end)),
                    changes::actual_start.eq(naive(after.actual_start)),
                    changes::actual_end.eq(naive(after.actual_end)),
                ),
                (
                    changes::service_id.eq(&after.service),
                    changes::assignment_group_id.eq(&after.assignment_group),
                    changes::assignee_id.eq(&after.assignee),
                    changes::requested_by.eq(&after.requested_by),
                    changes::template_id.eq(&after.template),
                    changes::approval_round.eq(after.approval_round),
                    changes::authorized_at.eq(naive(after.authorized_at)),
                    changes::retrospective.eq(after.retrospective),
                    changes::approval.eq(authorization),
                    changes::outcome.eq(after.outcome.map(|o| o.as_str())),
                    changes::review_notes.eq(&after.review_notes),
                ),
                (
                    changes::related.eq(related),
                    changes::cancel_reason.eq(&after.cancel_reason),
                    changes::updated_at.eq(ctx.at),
                    changes::closed_at.eq(naive(after.closed_at)),
                    changes::version.eq(before.version + 1),
                    changes::has_external_refs.eq(!after.external_refs.is_empty()),
                    changes::has_configuration_items.eq(!after.configuration_items.is_empty()),
                ),
            ),
            changes::id
                .eq(&before.id)
                .and(changes::version.eq(before.version)),
        )
        .execute(conn)?)
    }

    fn current_version(conn: &mut DbConnection, id: &str) -> Result<i64, StoreError> {
        Ok(changes::table
            .find(id)
            .select(changes::version)
            .get_result(conn)?)
    }
}

#[derive(Debug, Default, Clone)]
pub struct ChangeFilter {
    pub states: Vec<ChangeState>,
    pub types: Vec<ChangeType>,
    pub risks: Vec<RiskLevel>,
    pub assignment_group: Option<String>,
    pub assignee: Option<String>,
    pub requested_by: Option<String>,
    pub configuration_item: Option<String>,
    pub service: Option<String>,
    pub created_after: Option<NaiveDateTime>,
    pub created_before: Option<NaiveDateTime>,
    /// Words that must all appear in title or description.
    pub q: Option<String>,
}

/// The list query of a filter, a sort and a position for the backend connection matched.
macro_rules! change_list_query {
    ($filter:expr, $sort:expr, $words:expr, $after:expr) => {{
        use diesel::dsl::sql;
        use diesel::sql_types::{Bool, Text};
        let (filter, sort, words, after): (
            &ChangeFilter,
            Sort,
            &Option<WordsCondition>,
            Option<RowAfter>,
        ) = ($filter, $sort, $words, $after);
        let mut query = changes::table.select(ChangeRow::as_select()).into_boxed();
        if !filter.states.is_empty() {
            let names = filter.states.iter().map(|s| s.as_str()).collect();
            query = query.filter(InList::names("changes.state", names));
        }
        if !filter.types.is_empty() {
            let names = filter.types.iter().map(|s| s.as_str()).collect();
            query = query.filter(InList::names("changes.change_type", names));
        }
        if !filter.risks.is_empty() {
            let names = filter.risks.iter().map(|s| s.as_str()).collect();
            query = query.filter(InList::names("changes.risk", names));
        }
        if let Some(group) = &filter.assignment_group {
            query = query.filter(changes::assignment_group_id.eq(group.clone()));
        }
        if let Some(assignee) = &filter.assignee {
            query = query.filter(changes::assignee_id.eq(assignee.clone()));
        }
        if let Some(requested_by) = &filter.requested_by {
            query = query.filter(changes::requested_by.eq(requested_by.clone()));
        }
        if let Some(item) = &filter.configuration_item {
            let concerned = links::table
                .filter(links::ticket_type.eq(TicketKind::Change.as_str()))
                .filter(links::ci_id.eq(item.clone()))
                .select(links::ticket_id);
            query = query.filter(changes::id.eq_any(concerned));
        }
        if let Some(service) = &filter.service {
            query = query.filter(changes::service_id.eq(service.clone()));
        }
        if let Some(at) = filter.created_after {
            query = query.filter(changes::created_at.ge(at));
        }
        if let Some(at) = filter.created_before {
            query = query.filter(changes::created_at.lt(at));
        }
        if let Some(words) = words {
            query = query.filter(
                sql::<Bool>(&words.before)
                    .bind::<Text, _>(words.text.clone())
                    .sql(&words.after),
            );
        }
        if let Some(after) = after {
            query = query.filter(after);
        }
        match (sort.field, sort.descending) {
            (SortField::UpdatedAt, false) => {
                query.order((changes::updated_at.asc(), changes::id.asc()))
            }
            (SortField::UpdatedAt, true) => {
                query.order((changes::updated_at.desc(), changes::id.desc()))
            }
            (_, false) => query.order((changes::created_at.asc(), changes::id.asc())),
            (_, true) => query.order((changes::created_at.desc(), changes::id.desc())),
        }
    }};
}

fn list_conditions(
    conn: &DbConnection,
    filter: &ChangeFilter,
    sort: Sort,
    after: Option<&Position>,
) -> Result<(Option<WordsCondition>, Option<RowAfter>), StoreError> {
    if sort.field == SortField::Priority {
        return Err(StoreError::Conflict(
            "changes sort by created_at or updated_at".into(),
        ));
    }
    let words = filter
        .q
        .as_deref()
        .and_then(|q| tickets::words_condition::<Change>(conn, q, WORDS_DOCUMENT));
    let after = after
        .map(|position| sort.row_after::<Change>(position))
        .transpose()?;
    Ok((words, after))
}

/// One page of changes in `sort` order after `after`.
pub fn list(
    conn: &mut DbConnection,
    filter: &ChangeFilter,
    sort: Sort,
    after: Option<&Position>,
    limit: i64,
) -> Result<Slice<Change>, StoreError> {
    let (words, after) = list_conditions(conn, filter, sort, after)?;
    let load = |conn: &mut DbConnection| {
        with_backend!(conn, c => {
            let query = change_list_query!(filter, sort, &words, after);
            crate::load_page(c, query, limit)
        })
    };
    let rows: Slice<ChangeRow> = if words.is_some() {
        crate::db::with_search_limit(conn, load)?
    } else {
        load(conn)?
    };
    tickets::attach_links(
        conn,
        TicketKind::Change,
        rows,
        ChangeRow::links,
        ChangeRow::into_change,
    )
}

/// The plan of the query [`list`] sends for the same arguments.
pub fn list_plan(
    conn: &mut DbConnection,
    filter: &ChangeFilter,
    sort: Sort,
    after: Option<&Position>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let (words, after) = list_conditions(conn, filter, sort, after)?;
    with_backend!(conn, c => {
        let query = change_list_query!(filter, sort, &words, after);
        crate::explain_page(c, query, limit)
    })
}

/// Changes whose planned window overlaps `window`, in the given states (all when empty), with
/// their items: one query for the changes (by the start of their window, which is at most
/// [`MAX_WINDOW_DAYS`] before the end of any window it overlaps) and one for their items.
pub fn planned_in(
    conn: &mut DbConnection,
    window: &Window,
    on_schedule_only: bool,
) -> Result<Vec<PlannedChange>, StoreError> {
    let earliest = window.start.naive_utc() - chrono::Duration::days(MAX_WINDOW_DAYS);
    let mut query = changes::table
        .filter(changes::planned_start.ge(earliest))
        .filter(changes::planned_start.lt(window.end.naive_utc()))
        .filter(changes::planned_end.gt(window.start.naive_utc()))
        .select((
            changes::id,
            changes::number,
            changes::title,
            changes::state,
            changes::planned_start,
            changes::planned_end,
        ))
        .into_boxed();
    query = if on_schedule_only {
        // Written as `changes_planned_idx` declares it, and not ordered by (start, id): SQLite
        // uses a partial index only for the very same IN list, and the order would make it
        // walk `changes_calendar_idx` instead, reading every change of the 31 days from the
        // table to test its end (conflict detection: p99 73 ms). The few found are sorted here.
        query.filter(InList::fixed("changes.state", &["scheduled", "implement"]))
    } else {
        query.order((changes::planned_start.asc(), changes::id.asc()))
    };
    type Summary = (
        String,
        String,
        String,
        String,
        Option<NaiveDateTime>,
        Option<NaiveDateTime>,
    );
    let mut rows: Vec<Summary> = query.load(conn)?;
    if on_schedule_only {
        rows.sort_by(|a, b| (a.4, &a.0).cmp(&(b.4, &b.0)));
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut items = HashMap::new();
    for chunk in ids.chunks(500) {
        items.extend(crate::ticket_items::of_many(
            conn,
            TicketKind::Change,
            chunk,
        )?);
    }
    rows.into_iter()
        .filter_map(|(id, number, title, state, start, end)| {
            let (start, end) = (start?, end?);
            Some((id, number, title, state, start, end))
        })
        .map(|(id, number, title, state, start, end)| {
            Ok(PlannedChange {
                items: items.remove(&id).unwrap_or_default(),
                state: stored("state", &state)?,
                id,
                number,
                title,
                window: Window {
                    start: utc(start),
                    end: utc(end),
                },
            })
        })
        .collect()
}

/// Changes on any of `items` that failed or were backed out since `since` (risk facts).
pub fn recent_failures(
    conn: &mut DbConnection,
    items: &[String],
    since: NaiveDateTime,
) -> Result<usize, StoreError> {
    if items.is_empty() {
        return Ok(0);
    }
    let concerned = links::table
        .filter(links::ticket_type.eq(TicketKind::Change.as_str()))
        .filter(links::ci_id.eq_any(items.to_vec()))
        .select(links::ticket_id);
    let count: i64 = changes::table
        .filter(changes::id.eq_any(concerned))
        .filter(changes::outcome.eq_any(["failed", "backed_out"]))
        .filter(changes::actual_end.ge(since))
        .count()
        .get_result(conn)?;
    Ok(usize::try_from(count).unwrap_or(0))
}

// --- approvals ------------------------------------------------------------------------------

#[derive(Queryable, Selectable)]
#[diesel(table_name = approvals)]
struct ApprovalRow {
    id: String,
    change_id: String,
    round: i64,
    approver_id: String,
    asked_as: String,
    state: String,
    comment: Option<String>,
    decided_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
}

impl ApprovalRow {
    fn into_approval(self) -> Result<ChangeApproval, StoreError> {
        Ok(ChangeApproval {
            state: stored("state", &self.state)?,
            id: self.id,
            change_id: self.change_id,
            round: self.round,
            approver: self.approver_id,
            asked_as: self.asked_as,
            comment: self.comment,
            decided_at: self.decided_at.map(utc),
            created_at: utc(self.created_at),
        })
    }
}

/// Opens a round: one pending approval per `(approver, asked_as)`.
pub fn open_round(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    change: &Change,
    approvers: &[(String, String)],
) -> Result<Vec<ChangeApproval>, StoreError> {
    let mut opened = Vec::with_capacity(approvers.len());
    for (approver, asked_as) in approvers {
        let approval = ChangeApproval {
            id: crate::new_id(),
            change_id: change.id.clone(),
            round: change.approval_round,
            approver: approver.clone(),
            asked_as: asked_as.clone(),
            state: ApprovalState::Pending,
            comment: None,
            decided_at: None,
            created_at: utc(ctx.at),
        };
        diesel::insert_into(approvals::table)
            .values((
                approvals::id.eq(&approval.id),
                approvals::change_id.eq(&approval.change_id),
                approvals::round.eq(approval.round),
                approvals::approver_id.eq(&approval.approver),
                approvals::asked_as.eq(&approval.asked_as),
                approvals::state.eq(approval.state.as_str()),
                approvals::created_at.eq(ctx.at),
            ))
            .execute(conn)?;
        opened.push(approval);
    }
    Ok(opened)
}

/// Every approval of a change, oldest round first.
pub fn approvals_of(
    conn: &mut DbConnection,
    change_id: &str,
) -> Result<Vec<ChangeApproval>, StoreError> {
    let rows: Vec<ApprovalRow> = approvals::table
        .filter(approvals::change_id.eq(change_id))
        .order((approvals::round.asc(), approvals::id.asc()))
        .select(ApprovalRow::as_select())
        .load(conn)?;
    rows.into_iter().map(ApprovalRow::into_approval).collect()
}

/// Writes the state, comment and decision time of approvals that changed.
pub fn save_approvals(
    conn: &mut DbConnection,
    before: &[ChangeApproval],
    after: &[ChangeApproval],
) -> Result<(), StoreError> {
    for (old, new) in before.iter().zip(after) {
        if old == new {
            continue;
        }
        diesel::update(approvals::table.find(&new.id))
            .set((
                approvals::state.eq(new.state.as_str()),
                approvals::comment.eq(&new.comment),
                approvals::decided_at.eq(naive(new.decided_at)),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Ends the open round of a change (canceled, or asked again): pending approvals are withdrawn.
pub fn withdraw_round(conn: &mut DbConnection, change_id: &str) -> Result<(), StoreError> {
    diesel::update(
        approvals::table
            .filter(approvals::change_id.eq(change_id))
            .filter(approvals::state.eq(ApprovalState::Pending.as_str())),
    )
    .set(approvals::state.eq(ApprovalState::Withdrawn.as_str()))
    .execute(conn)?;
    Ok(())
}

/// Pending approvals waiting on `user`, oldest first, after the approval id `after`.
pub fn pending_for(
    conn: &mut DbConnection,
    user: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<ChangeApproval>, StoreError> {
    let mut query = approvals::table
        .filter(approvals::approver_id.eq(user))
        .filter(InList::names(
            "change_approvals.state",
            vec![ApprovalState::Pending.as_str()],
        ))
        .order(approvals::id.asc())
        .select(ApprovalRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(approvals::id.gt(after.to_owned()));
    }
    let rows: Slice<ApprovalRow> = crate::load_page(conn, query, limit)?;
    Ok(Slice {
        items: rows
            .items
            .into_iter()
            .map(ApprovalRow::into_approval)
            .collect::<Result<_, _>>()?,
        more: rows.more,
    })
}

// --- approval policies, templates, freeze windows --------------------------------------------

fn record(
    ctx: &WriteContext,
    entity_type: &str,
    id: &str,
    action: &str,
    changes: Changes,
    data: serde_json::Value,
) -> Result<(), StoreError> {
    let past = match action {
        "create" => "created",
        "update" => "updated",
        _ => "deleted",
    };
    audit::record(
        ctx,
        Mutation {
            entity_type,
            entity_id: id,
            action,
            changes: changes.into_value(),
            event_type: &format!("{entity_type}.{past}"),
            event_data: data,
        },
    )
    .map(|_| ())
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = policies)]
struct PolicyRow {
    id: String,
    name: String,
    precedence: i32,
    definition: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl PolicyRow {
    fn into_policy(self) -> Result<ApprovalPolicy, StoreError> {
        let rules: PolicyRules = parsed(POLICY, &self.definition)?;
        Ok(ApprovalPolicy {
            id: self.id,
            name: self.name,
            precedence: self.precedence,
            change_types: rules.change_types,
            risks: rules.risks,
            approvers: rules.approvers,
            quorum: rules.quorum,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

/// Every approval policy, by precedence then name.
pub fn policies(conn: &mut DbConnection) -> Result<Vec<ApprovalPolicy>, StoreError> {
    let rows: Vec<PolicyRow> = policies::table
        .order((policies::precedence.asc(), policies::name.asc()))
        .select(PolicyRow::as_select())
        .load(conn)?;
    rows.into_iter().map(PolicyRow::into_policy).collect()
}

pub fn policy(conn: &mut DbConnection, id: &str) -> Result<ApprovalPolicy, StoreError> {
    policies::table
        .find(id)
        .select(PolicyRow::as_select())
        .get_result::<PolicyRow>(conn)?
        .into_policy()
}

/// Stores a new policy, or replaces `replacing` (at its version) with it.
pub fn put_policy(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    replacing: Option<(&ApprovalPolicy, Option<i64>)>,
    name: &str,
    precedence: i32,
    rules: &PolicyRules,
) -> Result<ApprovalPolicy, StoreError> {
    let definition = text(rules);
    match replacing {
        None => {
            let id = crate::new_id();
            diesel::insert_into(policies::table)
                .values((
                    policies::id.eq(&id),
                    policies::name.eq(name),
                    policies::precedence.eq(precedence),
                    policies::definition.eq(&definition),
                    policies::created_at.eq(ctx.at),
                    policies::updated_at.eq(ctx.at),
                    policies::version.eq(1),
                ))
                .execute(conn)?;
            let created = policy(conn, &id)?;
            record(
                ctx,
                POLICY,
                &id,
                "create",
                Changes::created(&created),
                json!(created),
            )?;
            Ok(created)
        }
        Some((before, expected)) => {
            crate::check_version(expected, before.version)?;
            let updated = diesel::update(
                policies::table
                    .find(&before.id)
                    .filter(policies::version.eq(before.version)),
            )
            .set((
                policies::name.eq(name),
                policies::precedence.eq(precedence),
                policies::definition.eq(&definition),
                policies::updated_at.eq(ctx.at),
                policies::version.eq(before.version + 1),
            ))
            .execute(conn)?;
            if updated == 0 {
                return Err(StoreError::VersionMismatch {
                    expected: before.version,
                    actual: before.version + 1,
                });
            }
            let after = policy(conn, &before.id)?;
            let mut changes = Changes::new();
            changes
                .field("name", &before.name, &after.name)
                .field("precedence", &before.precedence, &after.precedence)
                .field("change_types", &before.change_types, &after.change_types)
                .field("risks", &before.risks, &after.risks)
                .field("approvers", &before.approvers, &after.approvers)
                .field("quorum", &before.quorum, &after.quorum);
            record(ctx, POLICY, &after.id, "update", changes, json!(after))?;
            Ok(after)
        }
    }
}

/// What a template's `definition` column holds.
#[derive(Serialize, Deserialize)]
struct TemplateDefinition {
    fields: TemplateFields,
    configuration_items: Vec<String>,
    risk_cap: RiskLevel,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = templates)]
struct TemplateRow {
    id: String,
    name: String,
    description: String,
    definition: String,
    active: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl TemplateRow {
    fn into_template(self) -> Result<StandardChangeTemplate, StoreError> {
        let definition: TemplateDefinition = parsed(TEMPLATE, &self.definition)?;
        Ok(StandardChangeTemplate {
            id: self.id,
            name: self.name,
            description: self.description,
            fields: definition.fields,
            configuration_items: definition.configuration_items,
            risk_cap: definition.risk_cap,
            active: self.active,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

pub fn templates(conn: &mut DbConnection) -> Result<Vec<StandardChangeTemplate>, StoreError> {
    let rows: Vec<TemplateRow> = templates::table
        .order(templates::name.asc())
        .select(TemplateRow::as_select())
        .load(conn)?;
    rows.into_iter().map(TemplateRow::into_template).collect()
}

pub fn template(conn: &mut DbConnection, id: &str) -> Result<StandardChangeTemplate, StoreError> {
    templates::table
        .find(id)
        .select(TemplateRow::as_select())
        .get_result::<TemplateRow>(conn)?
        .into_template()
}

/// Stores a new template, or replaces `replacing` (at its version) with `given`.
pub fn put_template(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    replacing: Option<(&StandardChangeTemplate, Option<i64>)>,
    given: &StandardChangeTemplate,
) -> Result<StandardChangeTemplate, StoreError> {
    let definition = text(&TemplateDefinition {
        fields: given.fields.clone(),
        configuration_items: given.configuration_items.clone(),
        risk_cap: given.risk_cap,
    });
    match replacing {
        None => {
            let id = crate::new_id();
            diesel::insert_into(templates::table)
                .values((
                    templates::id.eq(&id),
                    templates::name.eq(&given.name),
                    templates::description.eq(&given.description),
                    templates::definition.eq(&definition),
                    templates::active.eq(given.active),
                    templates::created_at.eq(ctx.at),
                    templates::updated_at.eq(ctx.at),
                    templates::version.eq(1),
                ))
                .execute(conn)?;
            let created = template(conn, &id)?;
            record(
                ctx,
                TEMPLATE,
                &id,
                "create",
                Changes::created(&created),
                json!(created),
            )?;
            Ok(created)
        }
        Some((before, expected)) => {
            crate::check_version(expected, before.version)?;
            let updated = diesel::update(
                templates::table
                    .find(&before.id)
                    .filter(templates::version.eq(before.version)),
            )
            .set((
                templates::name.eq(&given.name),
                templates::description.eq(&given.description),
                templates::definition.eq(&definition),
                templates::active.eq(given.active),
                templates::updated_at.eq(ctx.at),
                templates::version.eq(before.version + 1),
            ))
            .execute(conn)?;
            if updated == 0 {
                return Err(StoreError::VersionMismatch {
                    expected: before.version,
                    actual: before.version + 1,
                });
            }
            let after = template(conn, &before.id)?;
            let mut changes = Changes::new();
            changes
                .field("name", &before.name, &after.name)
                .field("description", &before.description, &after.description)
                .field("fields", &before.fields, &after.fields)
                .field(
                    "configuration_items",
                    &before.configuration_items,
                    &after.configuration_items,
                )
                .field("risk_cap", &before.risk_cap, &after.risk_cap)
                .field("active", &before.active, &after.active);
            record(ctx, TEMPLATE, &after.id, "update", changes, json!(after))?;
            Ok(after)
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = freezes)]
struct FreezeRow {
    id: String,
    name: String,
    reason: String,
    start_at: NaiveDateTime,
    end_at: NaiveDateTime,
    scope: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl FreezeRow {
    fn into_freeze(self) -> Result<FreezeWindow, StoreError> {
        Ok(FreezeWindow {
            scope: parsed::<FreezeScope>(FREEZE, &self.scope)?,
            id: self.id,
            name: self.name,
            reason: self.reason,
            start: utc(self.start_at),
            end: utc(self.end_at),
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

/// Freeze windows overlapping `window` (every one when `None`), by start.
pub fn freezes(
    conn: &mut DbConnection,
    window: Option<&Window>,
) -> Result<Vec<FreezeWindow>, StoreError> {
    let mut query = freezes::table
        .order((freezes::start_at.asc(), freezes::id.asc()))
        .select(FreezeRow::as_select())
        .into_boxed();
    if let Some(window) = window {
        query = query
            .filter(freezes::end_at.gt(window.start.naive_utc()))
            .filter(freezes::start_at.lt(window.end.naive_utc()));
    }
    let rows: Vec<FreezeRow> = query.load(conn)?;
    rows.into_iter().map(FreezeRow::into_freeze).collect()
}

pub fn freeze(conn: &mut DbConnection, id: &str) -> Result<FreezeWindow, StoreError> {
    freezes::table
        .find(id)
        .select(FreezeRow::as_select())
        .get_result::<FreezeRow>(conn)?
        .into_freeze()
}

/// Stores a new freeze window, or replaces `replacing` (at its version) with `given`.
pub fn put_freeze(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    replacing: Option<(&FreezeWindow, Option<i64>)>,
    given: &FreezeWindow,
) -> Result<FreezeWindow, StoreError> {
    let scope = text(&given.scope);
    match replacing {
        None => {
            let id = crate::new_id();
            diesel::insert_into(freezes::table)
                .values((
                    freezes::id.eq(&id),
                    freezes::name.eq(&given.name),
                    freezes::reason.eq(&given.reason),
                    freezes::start_at.eq(given.start.naive_utc()),
                    freezes::end_at.eq(given.end.naive_utc()),
                    freezes::scope.eq(&scope),
                    freezes::created_at.eq(ctx.at),
                    freezes::updated_at.eq(ctx.at),
                    freezes::version.eq(1),
                ))
                .execute(conn)?;
            let created = freeze(conn, &id)?;
            record(
                ctx,
                FREEZE,
                &id,
                "create",
                Changes::created(&created),
                json!(created),
            )?;
            Ok(created)
        }
        Some((before, expected)) => {
            crate::check_version(expected, before.version)?;
            let updated = diesel::update(
                freezes::table
                    .find(&before.id)
                    .filter(freezes::version.eq(before.version)),
            )
            .set((
                freezes::name.eq(&given.name),
                freezes::reason.eq(&given.reason),
                freezes::start_at.eq(given.start.naive_utc()),
                freezes::end_at.eq(given.end.naive_utc()),
                freezes::scope.eq(&scope),
                freezes::updated_at.eq(ctx.at),
                freezes::version.eq(before.version + 1),
            ))
            .execute(conn)?;
            if updated == 0 {
                return Err(StoreError::VersionMismatch {
                    expected: before.version,
                    actual: before.version + 1,
                });
            }
            let after = freeze(conn, &before.id)?;
            let mut changes = Changes::new();
            changes
                .field("name", &before.name, &after.name)
                .field("reason", &before.reason, &after.reason)
                .field("start", &before.start, &after.start)
                .field("end", &before.end, &after.end)
                .field("scope", &before.scope, &after.scope);
            record(ctx, FREEZE, &after.id, "update", changes, json!(after))?;
            Ok(after)
        }
    }
}

/// Deletes a policy, template or freeze window by entity type.
pub fn delete(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    entity_type: &str,
    id: &str,
) -> Result<(), StoreError> {
    let data = match entity_type {
        POLICY => {
            let before = policy(conn, id)?;
            diesel::delete(policies::table.find(id)).execute(conn)?;
            json!(before)
        }
        TEMPLATE => {
            let before = template(conn, id)?;
            diesel::delete(templates::table.find(id)).execute(conn)?;
            json!(before)
        }
        _ => {
            let before = freeze(conn, id)?;
            diesel::delete(freezes::table.find(id)).execute(conn)?;
            json!(before)
        }
    };
    record(ctx, entity_type, id, "delete", Changes::new(), data)
}

/// Records an approver's decision on the change: an audit entry and
/// `change.approval_decided`.
pub fn record_decision(
    ctx: &WriteContext,
    change: &Change,
    approval: &ChangeApproval,
) -> Result<(), StoreError> {
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &change.id,
            action: "decide_approval",
            changes: json!({
                "approval": [approval.id, approval.state],
                "comment": [null, approval.comment],
            }),
            event_type: "change.approval_decided",
            event_data: json!({
                "change_id": change.id,
                "change_number": change.number,
                "approval": approval,
            }),
        },
    )
    .map(|_| ())
}

/// Records a change event that is no field change of its own (`change.freeze_overridden`,
/// `change.conflict_acknowledged`): an audit entry and the event with `data`.
pub fn record_event(
    ctx: &WriteContext,
    change: &Change,
    action: &str,
    event_type: &str,
    data: serde_json::Value,
) -> Result<(), StoreError> {
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &change.id,
            action,
            changes: json!({ action: [null, data.clone()] }),
            event_type,
            event_data: json!({
                "change_id": change.id,
                "change_number": change.number,
                "details": data,
            }),
        },
    )
    .map(|_| ())
}
