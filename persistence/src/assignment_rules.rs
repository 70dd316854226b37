//! Ordered routing rules: category (and subcategory) to assignment group.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::routing::AssignmentRule;
use domain::Changes;
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::schema::assignment_rules;
use crate::{fixed_update, utc, DbConnection, StoreError, WriteContext};

pub const ENTITY: &str = "assignment_rule";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = assignment_rules)]
struct RuleRow {
    id: String,
    position: i32,
    category: String,
    subcategory: Option<String>,
    group_id: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl From<RuleRow> for AssignmentRule {
    fn from(row: RuleRow) -> Self {
        AssignmentRule {
            id: row.id,
            position: row.position,
            category: row.category,
            subcategory: row.subcategory,
            assignment_group: row.group_id,
            created_at: utc(row.created_at),
            updated_at: utc(row.updated_at),
            version: row.version,
        }
    }
}

pub struct RuleFields {
    pub position: i32,
    pub category: String,
    pub subcategory: Option<String>,
    pub group_id: String,
}

pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    fields: RuleFields,
) -> Result<AssignmentRule, StoreError> {
    let id = crate::new_id();
    diesel::insert_into(assignment_rules::table)
        .values((
            assignment_rules::id.eq(&id),
            assignment_rules::position.eq(fields.position),
            assignment_rules::category.eq(&fields.category),
            assignment_rules::subcategory.eq(&fields.subcategory),
            assignment_rules::group_id.eq(&fields.group_id),
            assignment_rules::created_at.eq(ctx.at),
            assignment_rules::updated_at.eq(ctx.at),
            assignment_rules::version.eq(1),
        ))
        .execute(conn)?;
    let rule = get(conn, &id)?;
    record(
        ctx,
        &rule,
        "create",
        Changes::created(&rule),
        "assignment_rule.created",
    )?;
    Ok(rule)
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<AssignmentRule, StoreError> {
    Ok(assignment_rules::table
        .find(id)
        .select(RuleRow::as_select())
        .get_result::<RuleRow>(conn)?
        .into())
}

/// Every rule in the order they are tried. Rule sets are small (tens), so no paging.
pub fn all(conn: &mut DbConnection) -> Result<Vec<AssignmentRule>, StoreError> {
    Ok(assignment_rules::table
        .select(RuleRow::as_select())
        .order((assignment_rules::position.asc(), assignment_rules::id.asc()))
        .load::<RuleRow>(conn)?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub fn replace(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    expected_version: Option<i64>,
    fields: RuleFields,
) -> Result<AssignmentRule, StoreError> {
    let before = get(conn, id)?;
    crate::check_version(expected_version, before.version)?;
    let updated = fixed_update(
        assignment_rules::table,
        (
            assignment_rules::position.eq(fields.position),
            assignment_rules::category.eq(&fields.category),
            assignment_rules::subcategory.eq(&fields.subcategory),
            assignment_rules::group_id.eq(&fields.group_id),
            assignment_rules::updated_at.eq(ctx.at),
            assignment_rules::version.eq(before.version + 1),
        ),
        assignment_rules::id
            .eq(id)
            .and(assignment_rules::version.eq(before.version)),
    )
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: before.version + 1,
        });
    }
    let after = get(conn, id)?;
    let mut changes = Changes::new();
    changes
        .field("position", &before.position, &after.position)
        .field("category", &before.category, &after.category)
        .field("subcategory", &before.subcategory, &after.subcategory)
        .field(
            "assignment_group",
            &before.assignment_group,
            &after.assignment_group,
        );
    record(ctx, &after, "update", changes, "assignment_rule.updated")?;
    Ok(after)
}

pub fn delete(conn: &mut DbConnection, ctx: &WriteContext, id: &str) -> Result<(), StoreError> {
    let rule = get(conn, id)?;
    diesel::delete(assignment_rules::table.find(id)).execute(conn)?;
    let mut changes = Changes::new();
    changes.field("rule", &Some(&rule), &None);
    record(ctx, &rule, "delete", changes, "assignment_rule.deleted")
}

fn record(
    ctx: &WriteContext,
    rule: &AssignmentRule,
    action: &str,
    changes: Changes,
    event_type: &str,
) -> Result<(), StoreError> {
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &rule.id,
            action,
            changes: changes.into_value(),
            event_type,
            event_data: json!(rule),
        },
    )?;
    Ok(())
}
