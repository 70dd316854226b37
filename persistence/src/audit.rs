//! The audit trail: who changed what, when, in which request. Written in the same transaction
//! as the change it describes, together with that change's outbox event.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::Value;

use crate::schema::audit_entries;
use crate::{journal, DbConnection, Slice, StoreError};

/// Who performs a unit of work, in which request, and the time it is recorded at.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// A user, an API token, or the service itself (bootstrap, background jobs).
    pub actor: domain::Actor,
    pub request_id: Option<String>,
    pub at: NaiveDateTime,
    /// The SLA policies in force, for writes of tickets; `None` or empty: tickets get no
    /// timers and their timers are not looked at.
    pub sla: Option<std::sync::Arc<domain::sla_timers::SlaRules>>,
}

impl WriteContext {
    pub fn system(reason: &str) -> Self {
        Self {
            actor: domain::Actor::system(reason),
            request_id: None,
            at: crate::now_utc(),
            sla: None,
        }
    }
}

/// One mutation as the audit trail and the event feed record it.
#[derive(Debug)]
pub struct Mutation<'a> {
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    /// The audit action: `create`, `update`, `deactivate`, `add_member`...
    pub action: &'a str,
    /// `{"field": [old, new]}`; secrets appear only as `[redacted]`.
    pub changes: Value,
    /// The outbox event type: `user.created`, `group.member_added`...
    pub event_type: &'a str,
    /// The event payload: the public representation, never a secret.
    pub event_data: Value,
}

/// An audit entry as stored: read here, written by the journal when its transaction commits.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_entries)]
// None binds NULL (see `insert_rows!`).
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct AuditRow {
    pub(crate) id: String,
    pub(crate) at: NaiveDateTime,
    pub(crate) actor_id: Option<String>,
    pub(crate) actor_name: String,
    pub(crate) actor_kind: String,
    pub(crate) entity_type: String,
    pub(crate) entity_id: String,
    pub(crate) action: String,
    pub(crate) changes: String,
    pub(crate) request_id: Option<String>,
}

/// One entry of the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: String,
    pub at: NaiveDateTime,
    pub actor: domain::Actor,
    pub entity_type: String,
    pub entity_id: String,
    pub action: String,
    pub changes: String,
    pub request_id: Option<String>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    /// An unknown stored actor kind is corrupt data, said so loudly, never guessed.
    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        let kind = row.actor_kind.parse().map_err(|_| {
            StoreError::Database(diesel::result::Error::DeserializationError(
                format!(
                    "audit entry {} has the unknown actor kind {:?}",
                    row.id, row.actor_kind
                )
                .into(),
            ))
        })?;
        Ok(AuditEntry {
            id: row.id,
            at: row.at,
            actor: domain::Actor {
                kind,
                id: row.actor_id,
                username: row.actor_name,
            },
            entity_type: row.entity_type,
            entity_id: row.entity_id,
            action: row.action,
            changes: row.changes,
            request_id: row.request_id,
        })
    }
}

/// Records `mutation` in the audit trail and the outbox, in the open write transaction.
/// Records the audit entry and the event of a mutation; the audit entry's id.
pub fn record(ctx: &WriteContext, mutation: Mutation<'_>) -> Result<String, StoreError> {
    let audit_entry_id = journal::add_audit_entry(
        ctx,
        mutation.entity_type,
        mutation.entity_id,
        mutation.action,
        &mutation.changes,
    )?;
    journal::add_event(
        ctx,
        mutation.event_type,
        mutation.entity_type,
        mutation.entity_id,
        &mutation.event_data,
    )?;
    Ok(audit_entry_id)
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// Leaves out entries of these actions (work notes, for requesters).
    pub exclude_actions: Vec<String>,
}

/// Newest first; `before` is the id of the last entry of the previous page.
pub fn list(
    conn: &mut DbConnection,
    filter: &AuditFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Slice<AuditEntry>, StoreError> {
    let mut query = audit_entries::table
        .select(AuditRow::as_select())
        .order(audit_entries::id.desc())
        .into_boxed();
    if let Some(entity_type) = &filter.entity_type {
        query = query.filter(audit_entries::entity_type.eq(entity_type));
    }
    if let Some(entity_id) = &filter.entity_id {
        query = query.filter(audit_entries::entity_id.eq(entity_id));
    }
    if !filter.exclude_actions.is_empty() {
        query = query.filter(audit_entries::action.ne_all(filter.exclude_actions.clone()));
    }
    if let Some(before) = before {
        query = query.filter(audit_entries::id.lt(before));
    }
    let page: Slice<AuditRow> = crate::load_page(conn, query, limit)?;
    Ok(Slice {
        items: page
            .items
            .into_iter()
            .map(AuditEntry::try_from)
            .collect::<Result<_, _>>()?,
        more: page.more,
    })
}
