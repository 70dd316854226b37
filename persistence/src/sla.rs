//! Business calendars, with every version kept, and SLA policies. Both are small sets read
//! whole, stored as the JSON definitions clients write.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::sla::{CalendarDefinition, CalendarRecord, PolicyDefinition, PolicyRecord};
use domain::sla_timers::{CalendarVersion, PolicyEntry, SlaRules};
use domain::Changes;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::schema::{calendar_versions, calendars, sla_policies};
use crate::{check_version, fixed_update, utc, DbConnection, StoreError, WriteContext};

pub const CALENDAR: &str = "calendar";
pub const POLICY: &str = "sla_policy";

fn parsed<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Database(diesel::result::Error::DeserializationError(
            format!("stored {what} is not valid: {e}").into(),
        ))
    })
}

fn text(definition: &impl serde::Serialize) -> String {
    serde_json::to_string(definition).unwrap_or_default()
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = calendars)]
struct CalendarRow {
    id: String,
    name: String,
    definition: String,
    builtin: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl CalendarRow {
    fn into_record(self) -> Result<CalendarRecord, StoreError> {
        Ok(CalendarRecord {
            definition: parsed(CALENDAR, &self.definition)?,
            id: self.id,
            name: self.name,
            builtin: self.builtin,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

fn record(
    ctx: &WriteContext,
    entity_type: &str,
    id: &str,
    action: &str,
    changes: Changes,
    data: serde_json::Value,
) -> Result<(), StoreError> {
    audit::record(
        ctx,
        Mutation {
            entity_type,
            entity_id: id,
            action,
            changes: changes.into_value(),
            event_type: &format!("{entity_type}.{}", past(action)),
            event_data: data,
        },
    )
    .map(|_| ())
}

fn past(action: &str) -> &str {
    match action {
        "create" => "created",
        "update" => "updated",
        _ => "deleted",
    }
}

/// Stores a new calendar as its version 1.
pub fn create_calendar(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    name: &str,
    definition: &CalendarDefinition,
) -> Result<CalendarRecord, StoreError> {
    let id = crate::new_id();
    let definition_text = text(definition);
    diesel::insert_into(calendars::table)
        .values((
            calendars::id.eq(&id),
            calendars::name.eq(name),
            calendars::definition.eq(&definition_text),
            calendars::builtin.eq(false),
            calendars::created_at.eq(ctx.at),
            calendars::updated_at.eq(ctx.at),
            calendars::version.eq(1),
        ))
        .execute(conn)?;
    add_version(conn, ctx, &id, 1, &definition_text)?;
    let calendar = get_calendar(conn, &id)?;
    record(
        ctx,
        CALENDAR,
        &id,
        "create",
        Changes::created(&calendar),
        json!(calendar),
    )?;
    Ok(calendar)
}

fn add_version(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    version: i64,
    definition: &str,
) -> Result<(), StoreError> {
    diesel::insert_into(calendar_versions::table)
        .values((
            calendar_versions::calendar_id.eq(id),
            calendar_versions::version.eq(version),
            calendar_versions::definition.eq(definition),
            calendar_versions::created_at.eq(ctx.at),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn get_calendar(conn: &mut DbConnection, id: &str) -> Result<CalendarRecord, StoreError> {
    calendars::table
        .find(id)
        .select(CalendarRow::as_select())
        .get_result::<CalendarRow>(conn)?
        .into_record()
}

/// Every calendar by name.
pub fn all_calendars(conn: &mut DbConnection) -> Result<Vec<CalendarRecord>, StoreError> {
    calendars::table
        .select(CalendarRow::as_select())
        .order((calendars::name.asc(), calendars::id.asc()))
        .load::<CalendarRow>(conn)?
        .into_iter()
        .map(CalendarRow::into_record)
        .collect()
}

/// The definition of one version of a calendar.
pub fn calendar_version(
    conn: &mut DbConnection,
    id: &str,
    version: i64,
) -> Result<CalendarDefinition, StoreError> {
    let definition: String = calendar_versions::table
        .find((id, version))
        .select(calendar_versions::definition)
        .get_result(conn)?;
    parsed(CALENDAR, &definition)
}

/// Replaces a calendar's name and definition as its next version. Built-in calendars are
/// refused.
pub fn replace_calendar(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    expected_version: Option<i64>,
    name: &str,
    definition: &CalendarDefinition,
) -> Result<CalendarRecord, StoreError> {
    let before = get_calendar(conn, id)?;
    check_version(expected_version, before.version)?;
    if before.builtin {
        return Err(StoreError::Conflict(format!(
            "calendar {} is built in and cannot change",
            before.name
        )));
    }
    if before.name == name && &before.definition == definition {
        return Ok(before);
    }
    let version = before.version + 1;
    let definition_text = text(definition);
    let updated = fixed_update(
        calendars::table,
        (
            calendars::name.eq(name),
            calendars::definition.eq(&definition_text),
            calendars::updated_at.eq(ctx.at),
            calendars::version.eq(version),
        ),
        calendars::id
            .eq(id)
            .and(calendars::version.eq(before.version)),
    )
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: version,
        });
    }
    add_version(conn, ctx, id, version, &definition_text)?;
    let after = get_calendar(conn, id)?;
    let mut changes = Changes::new();
    changes.field("name", &before.name, &after.name).field(
        "definition",
        &before.definition,
        &after.definition,
    );
    record(ctx, CALENDAR, id, "update", changes, json!(after))?;
    Ok(after)
}

/// Deletes a calendar no policy uses; built-in ones stay.
pub fn delete_calendar(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
) -> Result<(), StoreError> {
    let calendar = get_calendar(conn, id)?;
    if calendar.builtin {
        return Err(StoreError::Conflict(format!(
            "calendar {} is built in and cannot be deleted",
            calendar.name
        )));
    }
    let users: i64 = sla_policies::table
        .filter(sla_policies::calendar_id.eq(id))
        .count()
        .get_result(conn)?;
    if users > 0 {
        return Err(StoreError::Conflict(format!(
            "calendar {} is used by {users} SLA polic{}",
            calendar.name,
            if users == 1 { "y" } else { "ies" }
        )));
    }
    diesel::delete(calendars::table.find(id)).execute(conn)?;
    record(
        ctx,
        CALENDAR,
        id,
        "delete",
        Changes::new(),
        json!({ "id": id, "name": calendar.name }),
    )
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = sla_policies)]
struct PolicyRow {
    id: String,
    definition: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl PolicyRow {
    fn into_record(self) -> Result<PolicyRecord, StoreError> {
        Ok(PolicyRecord {
            definition: parsed(POLICY, &self.definition)?,
            id: self.id,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

/// Stores a validated policy.
pub fn create_policy(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    definition: &PolicyDefinition,
) -> Result<PolicyRecord, StoreError> {
    let id = crate::new_id();
    diesel::insert_into(sla_policies::table)
        .values((
            sla_policies::id.eq(&id),
            sla_policies::name.eq(&definition.name),
            sla_policies::precedence.eq(definition.precedence),
            sla_policies::ticket_type.eq(definition.applies_to.ticket_type.as_str()),
            sla_policies::calendar_id.eq(&definition.calendar_id),
            sla_policies::definition.eq(text(definition)),
            sla_policies::created_at.eq(ctx.at),
            sla_policies::updated_at.eq(ctx.at),
            sla_policies::version.eq(1),
        ))
        .execute(conn)?;
    let policy = get_policy(conn, &id)?;
    record(
        ctx,
        POLICY,
        &id,
        "create",
        Changes::created(&policy),
        json!(policy),
    )?;
    Ok(policy)
}

pub fn get_policy(conn: &mut DbConnection, id: &str) -> Result<PolicyRecord, StoreError> {
    sla_policies::table
        .find(id)
        .select(PolicyRow::as_select())
        .get_result::<PolicyRow>(conn)?
        .into_record()
}

/// Every policy in the order they are tried.
pub fn all_policies(conn: &mut DbConnection) -> Result<Vec<PolicyRecord>, StoreError> {
    sla_policies::table
        .select(PolicyRow::as_select())
        .order((sla_policies::precedence.asc(), sla_policies::id.asc()))
        .load::<PolicyRow>(conn)?
        .into_iter()
        .map(PolicyRow::into_record)
        .collect()
}

pub fn replace_policy(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    expected_version: Option<i64>,
    definition: &PolicyDefinition,
) -> Result<PolicyRecord, StoreError> {
    let before = get_policy(conn, id)?;
    check_version(expected_version, before.version)?;
    if &before.definition == definition {
        return Ok(before);
    }
    let updated = fixed_update(
        sla_policies::table,
        (
            sla_policies::name.eq(&definition.name),
            sla_policies::precedence.eq(definition.precedence),
            sla_policies::ticket_type.eq(definition.applies_to.ticket_type.as_str()),
            sla_policies::calendar_id.eq(&definition.calendar_id),
            sla_policies::definition.eq(text(definition)),
            sla_policies::updated_at.eq(ctx.at),
            sla_policies::version.eq(before.version + 1),
        ),
        sla_policies::id
            .eq(id)
            .and(sla_policies::version.eq(before.version)),
    )
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: before.version + 1,
        });
    }
    let after = get_policy(conn, id)?;
    let (old, new) = (json!(before.definition), json!(after.definition));
    let mut changes = Changes::new();
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
        for (field, value) in new {
            changes.field(field, &old.get(field), &Some(value));
        }
    }
    record(ctx, POLICY, id, "update", changes, json!(after))?;
    Ok(after)
}

pub fn delete_policy(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
) -> Result<(), StoreError> {
    let policy = get_policy(conn, id)?;
    diesel::delete(sla_policies::table.find(id)).execute(conn)?;
    record(
        ctx,
        POLICY,
        id,
        "delete",
        Changes::new(),
        json!({ "id": id, "name": policy.definition.name }),
    )
}

/// A stored calendar version, parsed; one that no longer parses is a loud error.
pub(crate) fn parsed_calendar(
    id: &str,
    version: i64,
    definition: &CalendarDefinition,
) -> Result<std::sync::Arc<domain::calendar::Calendar>, StoreError> {
    let calendar = definition.calendar().map_err(|e| {
        StoreError::Database(diesel::result::Error::DeserializationError(
            format!("stored calendar {id} version {version} is not valid: {e}").into(),
        ))
    })?;
    Ok(std::sync::Arc::new(calendar))
}

/// The SLA policies in force, with the current version of every calendar, parsed.
pub fn rules(conn: &mut DbConnection) -> Result<SlaRules, StoreError> {
    let policies = all_policies(conn)?
        .into_iter()
        .map(|p| PolicyEntry {
            id: p.id,
            definition: p.definition,
        })
        .collect();
    let calendars = all_calendars(conn)?
        .into_iter()
        .map(|c| {
            Ok(CalendarVersion {
                calendar: parsed_calendar(&c.id, c.version, &c.definition)?,
                id: c.id,
                version: c.version,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(SlaRules::new(policies, calendars))
}
