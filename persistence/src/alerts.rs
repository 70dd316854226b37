//! Monitoring alerts, one row per key (source, dedup key), and the alert rules.
//!
//! A repeat of a firing alert is the storm's common case: it counts on the row (one lookup,
//! one update) and writes no audit entry or event, like a token's last use. Anything that
//! changes what the alert means (new, resolved, firing again) is audited.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::alert::{Alert, AlertRule, AlertStatus, IncomingAlert, KnownAlert};
use domain::Changes;
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::schema::{alert_rules, alerts};
use crate::tickets::stored;
use crate::{fixed_update, journal, utc, DbConnection, Growth, Slice, StoreError, WriteContext};

pub const ENTITY: &str = "alert";
pub const RULE_ENTITY: &str = "alert_rule";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = alerts)]
struct AlertRow {
    id: String,
    source: String,
    dedup_key: String,
    status: String,
    severity: String,
    summary: String,
    description: String,
    resources: String,
    labels: String,
    annotations: String,
    count: i64,
    first_seen: NaiveDateTime,
    last_seen: NaiveDateTime,
    starts_at: Option<NaiveDateTime>,
    ends_at: Option<NaiveDateTime>,
    resolved_at: Option<NaiveDateTime>,
    incident_id: Option<String>,
    rule_id: Option<String>,
    updated_at: NaiveDateTime,
    version: i64,
}

fn json_column<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Database(diesel::result::Error::DeserializationError(
            format!("stored {column} is not valid: {e}").into(),
        ))
    })
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

impl AlertRow {
    fn into_alert(self) -> Result<Alert, StoreError> {
        Ok(Alert {
            status: stored("status", &self.status)?,
            severity: stored("severity", &self.severity)?,
            resources: json_column("resources", &self.resources)?,
            labels: json_column("labels", &self.labels)?,
            annotations: json_column("annotations", &self.annotations)?,
            id: self.id,
            source: self.source,
            dedup_key: self.dedup_key,
            summary: self.summary,
            description: self.description,
            count: self.count,
            first_seen: utc(self.first_seen),
            last_seen: utc(self.last_seen),
            starts_at: self.starts_at.map(utc),
            ends_at: self.ends_at.map(utc),
            resolved_at: self.resolved_at.map(utc),
            incident_id: self.incident_id,
            rule_id: self.rule_id,
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

/// What the intake needs of a stored key to decide.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub id: String,
    pub known: KnownAlert,
    pub incident_id: Option<String>,
}

/// The stored state of a key, if it was seen.
pub fn by_key(
    conn: &mut DbConnection,
    source: &str,
    key: &str,
) -> Result<Option<StoredKey>, StoreError> {
    type Row = (String, String, Option<NaiveDateTime>, Option<String>);
    let row: Option<Row> = with_backend!(conn, c => alerts::table
        .filter(alerts::source.eq(source))
        .filter(alerts::dedup_key.eq(key))
        .select((alerts::id, alerts::status, alerts::resolved_at, alerts::incident_id))
        .get_result(c)
        .optional())?;
    row.map(|(id, status, resolved_at, incident_id)| {
        Ok(StoredKey {
            id,
            known: KnownAlert {
                status: stored("status", &status)?,
                resolved_at: resolved_at.map(utc),
            },
            incident_id,
        })
    })
    .transpose()
}

/// A key of an alert: (source, dedup key).
pub type Key = (String, String);

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    source: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    dedup_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    incident_id: Option<String>,
}

/// A stored key as the intake sees it first.
#[derive(Debug, Clone)]
pub struct KeyState {
    pub id: String,
    pub firing: bool,
    pub incident_id: Option<String>,
}

/// The stored keys among `keys` (distinct). On PostgreSQL one statement for all of them, their
/// rows locked until the commit, in id order, so that another node cannot change one before
/// this transaction counts it; on SQLite (one writer, no round trips) one lookup by key each.
pub fn states_of_keys(
    conn: &mut DbConnection,
    keys: &[Key],
) -> Result<HashMap<Key, KeyState>, StoreError> {
    let mut found = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(found);
    }
    let firing = AlertStatus::Firing.as_str();
    match conn {
        DbConnection::Sqlite(c) => {
            for (source, key) in keys {
                let row: Option<(String, String, Option<String>)> = alerts::table
                    .filter(alerts::source.eq(source))
                    .filter(alerts::dedup_key.eq(key))
                    .select((alerts::id, alerts::status, alerts::incident_id))
                    .get_result(c)
                    .optional()?;
                if let Some((id, status, incident_id)) = row {
                    let state = KeyState {
                        id,
                        firing: status == firing,
                        incident_id,
                    };
                    found.insert((source.clone(), key.clone()), state);
                }
            }
        }
        DbConnection::Postgresql(c) => {
            use diesel::sql_types::{Array, Text};
            let (sources, dedup_keys): (Vec<&str>, Vec<&str>) = keys
                .iter()
                .map(|(source, key)| (source.as_str(), key.as_str()))
                .unzip();
            let rows: Vec<KeyRow> = diesel::sql_query(
                "SELECT a.id, a.source, a.dedup_key, a.status, a.incident_id FROM alerts a \
                 JOIN unnest($1::text[], $2::text[]) AS k(source, dedup_key) \
                 ON a.source = k.source AND a.dedup_key = k.dedup_key \
                 ORDER BY a.id FOR UPDATE OF a",
            )
            .bind::<Array<Text>, _>(sources)
            .bind::<Array<Text>, _>(dedup_keys)
            .load(c)?;
            for row in rows {
                let state = KeyState {
                    id: row.id,
                    firing: row.status == firing,
                    incident_id: row.incident_id,
                };
                found.insert((row.source, row.dedup_key), state);
            }
        }
    }
    Ok(found)
}

/// Counts repeats of firing alerts: for each alert id (distinct), how many repeats and the
/// last time seen. On PostgreSQL one statement for all of them.
pub fn count_repeats(
    conn: &mut DbConnection,
    repeats: &[(String, i64, NaiveDateTime)],
) -> Result<(), StoreError> {
    if repeats.is_empty() {
        return Ok(());
    }
    match conn {
        DbConnection::Sqlite(c) => {
            for (id, n, at) in repeats {
                fixed_update(
                    alerts::table,
                    (
                        alerts::count.eq(alerts::count + *n),
                        alerts::last_seen.eq(*at),
                    ),
                    alerts::id.eq(id),
                )
                .execute(c)?;
            }
        }
        DbConnection::Postgresql(c) => {
            use diesel::sql_types::{Array, BigInt, Text, Timestamp};
            let ids: Vec<&str> = repeats.iter().map(|(id, _, _)| id.as_str()).collect();
            let counts: Vec<i64> = repeats.iter().map(|(_, n, _)| *n).collect();
            let seen: Vec<NaiveDateTime> = repeats.iter().map(|(_, _, at)| *at).collect();
            diesel::sql_query(
                "UPDATE alerts SET count = alerts.count + k.n, last_seen = k.at \
                 FROM unnest($1::text[], $2::bigint[], $3::timestamp[]) AS k(id, n, at) \
                 WHERE alerts.id = k.id",
            )
            .bind::<Array<Text>, _>(ids)
            .bind::<Array<BigInt>, _>(counts)
            .bind::<Array<Timestamp>, _>(seen)
            .execute(c)?;
        }
    }
    Ok(())
}

/// Counts a repeat of a firing alert.
pub fn count_repeat(
    conn: &mut DbConnection,
    id: &str,
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    with_backend!(conn, c => fixed_update(
        alerts::table,
        (alerts::count.eq(alerts::count + 1), alerts::last_seen.eq(at)),
        alerts::id.eq(id),
    )
    .execute(c))?;
    Ok(())
}

/// New alert keys: lookups by key and id need their statistics (see [`Growth`]).
static ALERTS: Growth = Growth::new("alerts", 5_000);

/// Stores a key seen for the first time (firing, or already resolved), with its audit entry
/// and event (`alert.received` when firing, `alert.resolved` when not).
pub fn insert(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    alert: &IncomingAlert,
    incident_id: Option<&str>,
    rule_id: Option<&str>,
) -> Result<Alert, StoreError> {
    let id = crate::new_id();
    let resolved = alert.status == AlertStatus::Resolved;
    diesel::insert_into(alerts::table)
        .values((
            alerts::id.eq(&id),
            alerts::source.eq(&alert.source),
            alerts::dedup_key.eq(&alert.dedup_key),
            alerts::status.eq(alert.status.as_str()),
            alerts::severity.eq(alert.severity.as_str()),
            alerts::summary.eq(&alert.summary),
            alerts::description.eq(&alert.description),
            alerts::resources.eq(to_json(&alert.resources)),
            alerts::labels.eq(to_json(&alert.labels)),
            alerts::annotations.eq(to_json(&alert.annotations)),
            alerts::count.eq(1),
            alerts::first_seen.eq(ctx.at),
            alerts::last_seen.eq(ctx.at),
            alerts::starts_at.eq(alert.starts_at.map(|t| t.naive_utc())),
            alerts::ends_at.eq(alert.ends_at.map(|t| t.naive_utc())),
            alerts::resolved_at.eq(resolved.then_some(ctx.at)),
            alerts::incident_id.eq(incident_id),
            alerts::rule_id.eq(rule_id),
            alerts::updated_at.eq(ctx.at),
            alerts::version.eq(1),
        ))
        .execute(conn)?;
    ALERTS.added(conn, 1)?;
    let stored = get(conn, &id)?;
    let event = if resolved {
        "alert.resolved"
    } else {
        "alert.received"
    };
    record(ctx, &stored, "create", Changes::created(&stored), event)?;
    Ok(stored)
}

/// A resolved key firing again: the same row fires, counted, linked to `incident_id`. Audited;
/// no event (`alert.received` is for new keys).
pub fn fire_again(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    alert: &IncomingAlert,
    incident_id: Option<&str>,
    action: &str,
) -> Result<Alert, StoreError> {
    let before = get(conn, id)?;
    fixed_update(
        alerts::table,
        (
            alerts::status.eq(AlertStatus::Firing.as_str()),
            alerts::severity.eq(alert.severity.as_str()),
            alerts::summary.eq(&alert.summary),
            alerts::count.eq(alerts::count + 1),
            alerts::last_seen.eq(ctx.at),
            alerts::starts_at.eq(alert.starts_at.map(|t| t.naive_utc())),
            alerts::ends_at.eq(None::<NaiveDateTime>),
            alerts::resolved_at.eq(None::<NaiveDateTime>),
            alerts::incident_id.eq(incident_id),
            alerts::updated_at.eq(ctx.at),
            alerts::version.eq(alerts::version + 1),
        ),
        alerts::id.eq(id),
    )
    .execute(conn)?;
    let after = get(conn, id)?;
    journal::add_audit_entry(ctx, ENTITY, id, action, &diff(&before, &after))?;
    Ok(after)
}

/// A firing alert resolved: audited, with the `alert.resolved` event.
pub fn resolve(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    alert: &IncomingAlert,
) -> Result<Alert, StoreError> {
    let before = get(conn, id)?;
    fixed_update(
        alerts::table,
        (
            alerts::status.eq(AlertStatus::Resolved.as_str()),
            alerts::last_seen.eq(ctx.at),
            alerts::ends_at.eq(alert.ends_at.map(|t| t.naive_utc())),
            alerts::resolved_at.eq(Some(ctx.at)),
            alerts::updated_at.eq(ctx.at),
            alerts::version.eq(alerts::version + 1),
        ),
        alerts::id.eq(id),
    )
    .execute(conn)?;
    let after = get(conn, id)?;
    record(
        ctx,
        &after,
        "resolve",
        diff_changes(&before, &after),
        "alert.resolved",
    )?;
    Ok(after)
}

fn diff_changes(before: &Alert, after: &Alert) -> Changes {
    let mut changes = Changes::new();
    changes
        .field("status", &before.status, &after.status)
        .field("severity", &before.severity, &after.severity)
        .field("incident_id", &before.incident_id, &after.incident_id)
        .field("resolved_at", &before.resolved_at, &after.resolved_at)
        .field("ends_at", &before.ends_at, &after.ends_at);
    changes
}

fn diff(before: &Alert, after: &Alert) -> serde_json::Value {
    diff_changes(before, after).into_value()
}

fn record(
    ctx: &WriteContext,
    alert: &Alert,
    action: &str,
    changes: Changes,
    event_type: &str,
) -> Result<(), StoreError> {
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &alert.id,
            action,
            changes: changes.into_value(),
            event_type,
            event_data: json!(alert),
        },
    )
    .map(|_| ())
}

/// How many alerts of `incident_id` are firing.
pub fn firing_of_incident(conn: &mut DbConnection, incident_id: &str) -> Result<i64, StoreError> {
    Ok(alerts::table
        .filter(alerts::incident_id.eq(incident_id))
        .filter(alerts::status.eq(AlertStatus::Firing.as_str()))
        .count()
        .get_result(conn)?)
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<Alert, StoreError> {
    alerts::table
        .find(id)
        .select(AlertRow::as_select())
        .get_result::<AlertRow>(conn)?
        .into_alert()
}

#[derive(Debug, Default, Clone)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub source: Option<String>,
    pub dedup_key: Option<String>,
    pub incident_id: Option<String>,
}

/// Newest first (ids are time-ordered); `before` is the id of the last alert of the previous
/// page.
pub fn list(
    conn: &mut DbConnection,
    filter: &AlertFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Slice<Alert>, StoreError> {
    let mut query = alerts::table
        .select(AlertRow::as_select())
        .order(alerts::id.desc())
        .into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(alerts::status.eq(status.as_str()));
    }
    if let Some(source) = &filter.source {
        query = query.filter(alerts::source.eq(source.clone()));
    }
    if let Some(key) = &filter.dedup_key {
        query = query.filter(alerts::dedup_key.eq(key.clone()));
    }
    if let Some(incident) = &filter.incident_id {
        query = query.filter(alerts::incident_id.eq(incident.clone()));
    }
    if let Some(before) = before {
        query = query.filter(alerts::id.lt(before.to_owned()));
    }
    let rows: Slice<AlertRow> = crate::load_page(conn, query, limit)?;
    let items = rows
        .items
        .into_iter()
        .map(AlertRow::into_alert)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Slice {
        items,
        more: rows.more,
    })
}

/// The configuration items whose `hostname` identifier is one of `names`, each once.
pub fn items_by_hostname(
    conn: &mut DbConnection,
    names: &[String],
) -> Result<Vec<String>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = Vec::new();
    for (id, _) in crate::cmdb::items::identifier_holders(conn, "hostname", names)? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

// ---- alert rules ----

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = alert_rules)]
struct RuleRow {
    id: String,
    name: String,
    position: i32,
    source: Option<String>,
    severity: Option<String>,
    labels: String,
    impact: String,
    urgency: String,
    category: Option<String>,
    group_id: Option<String>,
    open_incident: bool,
    resolve_incident: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl RuleRow {
    fn into_rule(self) -> Result<AlertRule, StoreError> {
        Ok(AlertRule {
            severity: self
                .severity
                .as_deref()
                .map(|s| stored("severity", s))
                .transpose()?,
            labels: json_column("labels", &self.labels)?,
            impact: stored("impact", &self.impact)?,
            urgency: stored("urgency", &self.urgency)?,
            id: self.id,
            name: self.name,
            position: self.position,
            source: self.source,
            category: self.category,
            assignment_group: self.group_id,
            open_incident: self.open_incident,
            resolve_incident: self.resolve_incident,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

/// What a client sets on a rule.
#[derive(Debug, Clone)]
pub struct RuleFields {
    pub name: String,
    pub position: i32,
    pub source: Option<String>,
    pub severity: Option<domain::alert::Severity>,
    pub labels: BTreeMap<String, String>,
    pub impact: domain::priority::Impact,
    pub urgency: domain::priority::Urgency,
    pub category: Option<String>,
    pub group_id: Option<String>,
    pub open_incident: bool,
    pub resolve_incident: bool,
}

pub fn create_rule(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    fields: RuleFields,
) -> Result<AlertRule, StoreError> {
    let id = crate::new_id();
    diesel::insert_into(alert_rules::table)
        .values((
            alert_rules::id.eq(&id),
            alert_rules::name.eq(&fields.name),
            alert_rules::position.eq(fields.position),
            alert_rules::source.eq(&fields.source),
            alert_rules::severity.eq(fields.severity.map(|s| s.as_str())),
            alert_rules::labels.eq(to_json(&fields.labels)),
            alert_rules::impact.eq(fields.impact.as_str()),
            alert_rules::urgency.eq(fields.urgency.as_str()),
            alert_rules::category.eq(&fields.category),
            alert_rules::group_id.eq(&fields.group_id),
            alert_rules::open_incident.eq(fields.open_incident),
            alert_rules::resolve_incident.eq(fields.resolve_incident),
            alert_rules::created_at.eq(ctx.at),
            alert_rules::updated_at.eq(ctx.at),
            alert_rules::version.eq(1),
        ))
        .execute(conn)?;
    let rule = get_rule(conn, &id)?;
    record_rule(
        ctx,
        &rule,
        "create",
        Changes::created(&rule),
        "alert_rule.created",
    )?;
    Ok(rule)
}

pub fn get_rule(conn: &mut DbConnection, id: &str) -> Result<AlertRule, StoreError> {
    alert_rules::table
        .find(id)
        .select(RuleRow::as_select())
        .get_result::<RuleRow>(conn)?
        .into_rule()
}

/// Every rule in the order they are tried. Rule sets are small (tens), so no paging.
pub fn all_rules(conn: &mut DbConnection) -> Result<Vec<AlertRule>, StoreError> {
    alert_rules::table
        .select(RuleRow::as_select())
        .order((alert_rules::position.asc(), alert_rules::id.asc()))
        .load::<RuleRow>(conn)?
        .into_iter()
        .map(RuleRow::into_rule)
        .collect()
}

pub fn replace_rule(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    expected_version: Option<i64>,
    fields: RuleFields,
) -> Result<AlertRule, StoreError> {
    let before = get_rule(conn, id)?;
    crate::check_version(expected_version, before.version)?;
    let updated = fixed_update(
        alert_rules::table,
        (
            alert_rules::name.eq(&fields.name),
            alert_rules::position.eq(fields.position),
            alert_rules::source.eq(&fields.source),
            alert_rules::severity.eq(fields.severity.map(|s| s.as_str())),
            alert_rules::labels.eq(to_json(&fields.labels)),
            alert_rules::impact.eq(fields.impact.as_str()),
            alert_rules::urgency.eq(fields.urgency.as_str()),
            alert_rules::category.eq(&fields.category),
            alert_rules::group_id.eq(&fields.group_id),
            alert_rules::open_incident.eq(fields.open_incident),
            alert_rules::resolve_incident.eq(fields.resolve_incident),
            alert_rules::updated_at.eq(ctx.at),
            alert_rules::version.eq(before.version + 1),
        ),
        alert_rules::id
            .eq(id)
            .and(alert_rules::version.eq(before.version)),
    )
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: before.version + 1,
        });
    }
    let after = get_rule(conn, id)?;
    let mut changes = Changes::new();
    changes
        .field("name", &before.name, &after.name)
        .field("position", &before.position, &after.position)
        .field("source", &before.source, &after.source)
        .field("severity", &before.severity, &after.severity)
        .field("labels", &before.labels, &after.labels)
        .field("impact", &before.impact, &after.impact)
        .field("urgency", &before.urgency, &after.urgency)
        .field("category", &before.category, &after.category)
        .field(
            "assignment_group",
            &before.assignment_group,
            &after.assignment_group,
        )
        .field("open_incident", &before.open_incident, &after.open_incident)
        .field(
            "resolve_incident",
            &before.resolve_incident,
            &after.resolve_incident,
        );
    record_rule(ctx, &after, "update", changes, "alert_rule.updated")?;
    Ok(after)
}

pub fn delete_rule(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
) -> Result<(), StoreError> {
    let rule = get_rule(conn, id)?;
    diesel::delete(alert_rules::table.find(id)).execute(conn)?;
    let mut changes = Changes::new();
    changes.field("rule", &Some(&rule), &None);
    record_rule(ctx, &rule, "delete", changes, "alert_rule.deleted")
}

fn record_rule(
    ctx: &WriteContext,
    rule: &AlertRule,
    action: &str,
    changes: Changes,
    event_type: &str,
) -> Result<(), StoreError> {
    audit::record(
        ctx,
        Mutation {
            entity_type: RULE_ENTITY,
            entity_id: &rule.id,
            action,
            changes: changes.into_value(),
            event_type,
            event_data: json!(rule),
        },
    )
    .map(|_| ())
}
