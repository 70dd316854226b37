//! CI classes: built-in ones from the migration, admin-defined ones written here.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::cmdb::class::{check_schema_change, validate_definition, validate_name};
use domain::cmdb::{AttributeDef, CiClass, ClassSet, IdentificationRule};
use domain::{Changes, DomainError, FieldError};
use serde_json::json;

use super::{from_json, to_json, CmdbError};
use crate::audit::{self, Mutation};
use crate::conditions::InList;
use crate::schema::{ci_classes, configuration_items};
use crate::{fixed_update, utc, DbConnection, StoreError, WriteContext};

pub const ENTITY: &str = "ci_class";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ci_classes)]
struct ClassRow {
    name: String,
    parent: Option<String>,
    description: String,
    builtin: bool,
    attributes: String,
    identification_rules: String,
    source_precedence: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl ClassRow {
    fn into_class(self) -> Result<CiClass, StoreError> {
        Ok(CiClass {
            attributes: from_json(&self.attributes, "class attributes")?,
            identification_rules: from_json(&self.identification_rules, "identification rules")?,
            source_precedence: from_json(&self.source_precedence, "source precedence")?,
            name: self.name,
            parent: self.parent,
            description: self.description,
            builtin: self.builtin,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

/// Every class (they are few), with inheritance resolvable.
pub fn all(conn: &mut DbConnection) -> Result<ClassSet, StoreError> {
    let rows: Vec<ClassRow> = ci_classes::table
        .select(ClassRow::as_select())
        .order(ci_classes::name.asc())
        .load(conn)?;
    let classes = rows
        .into_iter()
        .map(ClassRow::into_class)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClassSet::new(classes))
}

pub fn get(conn: &mut DbConnection, name: &str) -> Result<CiClass, StoreError> {
    ci_classes::table
        .find(name)
        .select(ClassRow::as_select())
        .get_result(conn)?
        .into_class()
}

#[derive(Debug, Clone)]
pub struct NewClass {
    pub name: String,
    pub parent: Option<String>,
    pub description: String,
    pub attributes: Vec<AttributeDef>,
    pub identification_rules: Vec<IdentificationRule>,
}

pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewClass,
) -> Result<CiClass, CmdbError> {
    validate_name(&new.name, "name").map_err(|e| DomainError::Invalid(vec![e]))?;
    let set = all(conn)?;
    if set.get(&new.name).is_some() {
        return Err(CmdbError::conflict(format!(
            "a class named {} exists",
            new.name
        )));
    }
    let inherited = match &new.parent {
        Some(parent) if set.get(parent).is_none() => {
            return Err(CmdbError::Rule(DomainError::Invalid(vec![
                FieldError::unknown("parent", "class"),
            ])))
        }
        Some(parent) => set.effective_attributes(parent),
        None => Vec::new(),
    };
    validate_definition(&new.attributes, &inherited, &new.identification_rules)?;
    diesel::insert_into(ci_classes::table)
        .values((
            ci_classes::name.eq(&new.name),
            ci_classes::parent.eq(&new.parent),
            ci_classes::description.eq(&new.description),
            ci_classes::builtin.eq(false),
            ci_classes::attributes.eq(to_json(&new.attributes)),
            ci_classes::identification_rules.eq(to_json(&new.identification_rules)),
            ci_classes::source_precedence.eq("[]"),
            ci_classes::created_at.eq(ctx.at),
            ci_classes::updated_at.eq(ctx.at),
            ci_classes::version.eq(1),
        ))
        .execute(conn)?;
    let class = get(conn, &new.name)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &class.name,
            action: "create",
            changes: Changes::created(&class).into_value(),
            event_type: "ci_class.created",
            event_data: json!(class),
        },
    )?;
    Ok(class)
}

/// Whether any item is of `classes`.
fn in_use(conn: &mut DbConnection, classes: Vec<String>) -> Result<bool, StoreError> {
    let found: Option<String> = configuration_items::table
        .filter(InList::bound("configuration_items.class", classes))
        .select(configuration_items::id)
        .limit(1)
        .get_result(conn)
        .optional()?;
    Ok(found.is_some())
}

#[derive(Debug, Default, Clone)]
pub struct ClassUpdate {
    pub description: Option<String>,
    pub attributes: Option<Vec<AttributeDef>>,
    pub identification_rules: Option<Vec<IdentificationRule>>,
}

pub fn update(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    name: &str,
    expected_version: Option<i64>,
    update: ClassUpdate,
) -> Result<CiClass, CmdbError> {
    let set = all(conn)?;
    let before = set.get(name).cloned().ok_or(StoreError::NotFound)?;
    crate::check_version(expected_version, before.version)?;
    let mut after = before.clone();
    if let Some(description) = update.description {
        after.description = description;
    }
    if let Some(attributes) = update.attributes {
        after.attributes = attributes;
    }
    if let Some(rules) = update.identification_rules {
        after.identification_rules = rules;
    }
    let mut changes = Changes::new();
    changes
        .field("description", &before.description, &after.description)
        .field("attributes", &before.attributes, &after.attributes)
        .field(
            "identification_rules",
            &before.identification_rules,
            &after.identification_rules,
        );
    if changes.is_empty() {
        return Ok(before);
    }
    let inherited = after
        .parent
        .as_deref()
        .map(|p| set.effective_attributes(p))
        .unwrap_or_default();
    validate_definition(&after.attributes, &inherited, &after.identification_rules)?;
    // Subclasses must still make sense over the new schema.
    let changed = ClassSet::new(
        set.iter()
            .filter(|c| c.name != name)
            .cloned()
            .chain([after.clone()]),
    );
    for sub in changed
        .iter()
        .filter(|c| c.name != name && changed.is_a(&c.name, name))
    {
        let parent = sub.parent.as_deref().unwrap_or_default();
        // The stored subclass is what the new schema conflicts with.
        if let Err(broken) = validate_definition(
            &sub.attributes,
            &changed.effective_attributes(parent),
            &sub.identification_rules,
        ) {
            let detail = match broken {
                DomainError::Invalid(errors) => errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            return Err(CmdbError::conflict(format!(
                "attributes: breaks subclass {}: {detail}",
                sub.name
            )));
        }
    }
    if before.attributes != after.attributes && in_use(conn, set.with_descendants(name))? {
        check_schema_change(&before.attributes, &after.attributes)?;
    }
    let updated = fixed_update(
        ci_classes::table,
        (
            ci_classes::description.eq(&after.description),
            ci_classes::attributes.eq(to_json(&after.attributes)),
            ci_classes::identification_rules.eq(to_json(&after.identification_rules)),
            ci_classes::updated_at.eq(ctx.at),
            ci_classes::version.eq(before.version + 1),
        ),
        ci_classes::name
            .eq(name)
            .and(ci_classes::version.eq(before.version)),
    )
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: before.version + 1,
        }
        .into());
    }
    let class = get(conn, name)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: name,
            action: "update",
            changes: changes.into_value(),
            event_type: "ci_class.updated",
            event_data: json!(class),
        },
    )?;
    Ok(class)
}

/// Deletes an admin-defined class that has no subclass and no item.
pub fn delete(conn: &mut DbConnection, ctx: &WriteContext, name: &str) -> Result<(), CmdbError> {
    let set = all(conn)?;
    let class = set.get(name).cloned().ok_or(StoreError::NotFound)?;
    if class.builtin {
        return Err(CmdbError::conflict(format!("{name} is a built-in class")));
    }
    if let Some(sub) = set.iter().find(|c| c.parent.as_deref() == Some(name)) {
        return Err(CmdbError::conflict(format!(
            "{name} has the subclass {}",
            sub.name
        )));
    }
    if in_use(conn, vec![name.to_owned()])? {
        return Err(CmdbError::conflict(format!(
            "{name} is in use by configuration items"
        )));
    }
    diesel::delete(ci_classes::table.find(name)).execute(conn)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: name,
            action: "delete",
            changes: json!({ "name": [name, null] }),
            event_type: "ci_class.deleted",
            event_data: json!({ "name": name }),
        },
    )?;
    Ok(())
}

/// Replaces a class's source precedence (highest priority first).
pub fn set_source_precedence(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    name: &str,
    expected_version: Option<i64>,
    sources: Vec<String>,
) -> Result<CiClass, CmdbError> {
    let before = get(conn, name)?;
    crate::check_version(expected_version, before.version)?;
    if before.source_precedence == sources {
        return Ok(before);
    }
    fixed_update(
        ci_classes::table,
        (
            ci_classes::source_precedence.eq(to_json(&sources)),
            ci_classes::updated_at.eq(ctx.at),
            ci_classes::version.eq(before.version + 1),
        ),
        ci_classes::name.eq(name),
    )
    .execute(conn)?;
    let class = get(conn, name)?;
    let mut changes = Changes::new();
    changes.field(
        "source_precedence",
        &before.source_precedence,
        &class.source_precedence,
    );
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: name,
            action: "set_source_precedence",
            changes: changes.into_value(),
            event_type: "ci_class.updated",
            event_data: json!(class),
        },
    )?;
    Ok(class)
}
