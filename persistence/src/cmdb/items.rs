//! Configuration items, their identifier index and their audit trail.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::expression::{is_aggregate, AppearsOnTable, SelectableExpression, ValidGrouping};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Bool, HasSqlType, Nullable, Text};
use domain::cmdb::item::{validate_item_name, MANUAL_SOURCE};
use domain::cmdb::reconcile::attribute_changes;
use domain::cmdb::{
    AttributeSource, CiStatus, ClassSet, ConfigurationItem, Criticality, Environment,
};
use domain::{Changes, DomainError, ExternalRef};
use serde_json::{json, Map, Value};

use super::{from_json, padded, to_json, CmdbError};
use crate::audit::{self, Mutation};
use crate::conditions::InList;
use crate::schema::{assignment_groups, ci_identifiers, configuration_items};
use crate::{
    external_refs, fixed_update, lower, utc, DbConnection, Slice, StoreError, WriteContext,
};

pub const ENTITY: &str = "configuration_item";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = configuration_items)]
pub(crate) struct ItemRow {
    id: String,
    name: String,
    class: String,
    status: String,
    environment: Option<String>,
    criticality: Option<String>,
    owner_group_id: Option<String>,
    attributes: String,
    attribute_sources: String,
    has_external_refs: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

fn corrupt(error: DomainError) -> StoreError {
    StoreError::Database(diesel::result::Error::DeserializationError(
        format!("stored configuration item is not valid: {error}").into(),
    ))
}

impl ItemRow {
    fn into_item(self, external_refs: Vec<ExternalRef>) -> Result<ConfigurationItem, StoreError> {
        Ok(ConfigurationItem {
            status: CiStatus::parse(&self.status).map_err(corrupt)?,
            environment: self
                .environment
                .as_deref()
                .map(Environment::parse)
                .transpose()
                .map_err(corrupt)?,
            criticality: self
                .criticality
                .as_deref()
                .map(Criticality::parse)
                .transpose()
                .map_err(corrupt)?,
            attributes: from_json(&self.attributes, "attributes")?,
            attribute_sources: from_json(&self.attribute_sources, "attribute sources")?,
            id: self.id,
            name: self.name,
            class: self.class,
            owner_group: self.owner_group_id,
            external_refs,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        })
    }
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<ConfigurationItem, StoreError> {
    let row: ItemRow = configuration_items::table
        .find(id)
        .select(ItemRow::as_select())
        .get_result(conn)?;
    let refs = if row.has_external_refs {
        external_refs::of(conn, ENTITY, id)?
    } else {
        Vec::new()
    };
    row.into_item(refs)
}

/// Writes an item's row, identifiers and references: a new one when `before` is `None`.
pub(crate) fn store(
    conn: &mut DbConnection,
    classes: &ClassSet,
    before: Option<&ConfigurationItem>,
    after: &ConfigurationItem,
) -> Result<(), StoreError> {
    let at = after.updated_at.naive_utc();
    let shown_by_walks = |b: &ConfigurationItem| {
        (&b.name, &b.class, b.status, b.criticality)
            == (&after.name, &after.class, after.status, after.criticality)
    };
    if !before.is_some_and(shown_by_walks) {
        crate::journal::graph_changed()?;
    }
    match before {
        None => {
            diesel::insert_into(configuration_items::table)
                .values((
                    configuration_items::id.eq(&after.id),
                    configuration_items::name.eq(&after.name),
                    configuration_items::class.eq(&after.class),
                    configuration_items::status.eq(after.status.as_str()),
                    configuration_items::environment.eq(after.environment.map(Environment::as_str)),
                    configuration_items::criticality.eq(after.criticality.map(Criticality::as_str)),
                    configuration_items::owner_group_id.eq(&after.owner_group),
                    configuration_items::attributes.eq(to_json(&after.attributes)),
                    configuration_items::attribute_sources.eq(to_json(&after.attribute_sources)),
                    configuration_items::has_external_refs.eq(!after.external_refs.is_empty()),
                    configuration_items::created_at.eq(at),
                    configuration_items::updated_at.eq(at),
                    configuration_items::version.eq(after.version),
                ))
                .execute(conn)?;
        }
        Some(before) => {
            let updated = fixed_update(
                configuration_items::table,
                (
                    configuration_items::name.eq(&after.name),
                    configuration_items::status.eq(after.status.as_str()),
                    configuration_items::environment.eq(after.environment.map(Environment::as_str)),
                    configuration_items::criticality.eq(after.criticality.map(Criticality::as_str)),
                    configuration_items::owner_group_id.eq(&after.owner_group),
                    configuration_items::attributes.eq(to_json(&after.attributes)),
                    configuration_items::attribute_sources.eq(to_json(&after.attribute_sources)),
                    configuration_items::has_external_refs.eq(!after.external_refs.is_empty()),
                    configuration_items::updated_at.eq(at),
                    configuration_items::version.eq(after.version),
                ),
                configuration_items::id
                    .eq(&after.id)
                    .and(configuration_items::version.eq(before.version)),
            )
            .execute(conn)?;
            if updated == 0 {
                return Err(StoreError::VersionMismatch {
                    expected: before.version,
                    actual: before.version + 1,
                });
            }
        }
    }
    let old_ids = before
        .map(|b| classes.identifiers(&b.class, &b.attributes))
        .unwrap_or_default();
    let new_ids = classes.identifiers(&after.class, &after.attributes);
    if old_ids != new_ids {
        if before.is_some() {
            diesel::delete(ci_identifiers::table.filter(ci_identifiers::ci_id.eq(&after.id)))
                .execute(conn)?;
        }
        for (name, value) in &new_ids {
            diesel::insert_into(ci_identifiers::table)
                .values((
                    ci_identifiers::ci_id.eq(&after.id),
                    ci_identifiers::name.eq(name),
                    ci_identifiers::value.eq(value),
                ))
                .execute(conn)?;
        }
    }
    if before.map_or(!after.external_refs.is_empty(), |b| {
        b.external_refs != after.external_refs
    }) {
        external_refs::replace(conn, ENTITY, &after.id, &after.external_refs)?;
    }
    Ok(())
}

/// The audit difference of an item write: core fields, then attributes with their sources.
pub(crate) fn changes_of(before: Option<&ConfigurationItem>, after: &ConfigurationItem) -> Value {
    let mut changes = Changes::new();
    let none: Option<&str> = None;
    let b = before;
    changes
        .field(
            "name",
            &b.map(|b| b.name.as_str()).or(none),
            &Some(after.name.as_str()),
        )
        .field(
            "class",
            &b.map(|b| b.class.as_str()).or(none),
            &Some(after.class.as_str()),
        )
        .field("status", &b.map(|b| b.status), &Some(after.status))
        .field(
            "environment",
            &b.and_then(|b| b.environment),
            &after.environment,
        )
        .field(
            "criticality",
            &b.and_then(|b| b.criticality),
            &after.criticality,
        )
        .field(
            "owner_group",
            &b.and_then(|b| b.owner_group.clone()),
            &after.owner_group,
        )
        .field(
            "external_refs",
            &b.map(|b| b.external_refs.clone()).unwrap_or_default(),
            &after.external_refs,
        );
    let mut value = changes.into_value();
    if let Value::Object(fields) = &mut value {
        for (name, [old, new]) in attribute_changes(before, after) {
            fields.insert(name, json!([old, new]));
        }
    }
    value
}

/// Records an item write in the audit trail and the outbox.
pub(crate) fn record(
    ctx: &WriteContext,
    before: Option<&ConfigurationItem>,
    after: &ConfigurationItem,
    action: &str,
) -> Result<(), StoreError> {
    let event_type = match before {
        None => "ci.created",
        Some(b) if b.status != CiStatus::Retired && after.status == CiStatus::Retired => {
            "ci.retired"
        }
        Some(_) => "ci.updated",
    };
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &after.id,
            action,
            changes: changes_of(before, after),
            event_type,
            event_data: json!(after),
        },
    )
    .map(|_| ())
}

fn check_owner_group(conn: &mut DbConnection, group: &Option<String>) -> Result<(), CmdbError> {
    if let Some(group) = group {
        let found: Option<String> = assignment_groups::table
            .find(group)
            .select(assignment_groups::id)
            .get_result(conn)
            .optional()?;
        if found.is_none() {
            return Err(CmdbError::Rule(domain::DomainError::Invalid(vec![
                domain::FieldError::unknown("owner_group", "group"),
            ])));
        }
    }
    Ok(())
}

fn check_attributes(
    classes: &ClassSet,
    class: &str,
    attributes: &Map<String, Value>,
) -> Result<Map<String, Value>, CmdbError> {
    classes
        .validate_attributes(class, attributes)
        .map_err(|errors| CmdbError::Rule(DomainError::Invalid(errors)))
}

fn manual_sources(
    attributes: &Map<String, Value>,
    at: chrono::DateTime<chrono::Utc>,
) -> BTreeMap<String, AttributeSource> {
    attributes
        .keys()
        .map(|k| {
            (
                k.clone(),
                AttributeSource {
                    source: MANUAL_SOURCE.to_owned(),
                    updated_at: at,
                },
            )
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub name: String,
    pub class: String,
    pub status: CiStatus,
    pub environment: Option<Environment>,
    pub criticality: Option<Criticality>,
    pub owner_group: Option<String>,
    pub attributes: Map<String, Value>,
    pub external_refs: Vec<ExternalRef>,
}

pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewItem,
) -> Result<ConfigurationItem, CmdbError> {
    let name = validate_item_name(&new.name)?;
    let classes = super::classes::all(conn)?;
    if classes.get(&new.class).is_none() {
        return Err(CmdbError::Rule(domain::DomainError::Invalid(vec![
            domain::FieldError::unknown("class", "class"),
        ])));
    }
    let attributes = check_attributes(&classes, &new.class, &new.attributes)?;
    check_owner_group(conn, &new.owner_group)?;
    let at = utc(ctx.at);
    let item = ConfigurationItem {
        id: crate::new_id(),
        name,
        class: new.class,
        status: new.status,
        environment: new.environment,
        criticality: new.criticality,
        owner_group: new.owner_group,
        attribute_sources: manual_sources(&attributes, at),
        attributes,
        external_refs: new.external_refs,
        created_at: at,
        updated_at: at,
        version: 1,
    };
    store(conn, &classes, None, &item)?;
    record(ctx, None, &item, "create")?;
    Ok(item)
}

#[derive(Debug, Default, Clone)]
pub struct ItemUpdate {
    pub name: Option<String>,
    pub status: Option<CiStatus>,
    pub environment: Option<Option<Environment>>,
    pub criticality: Option<Option<Criticality>>,
    pub owner_group: Option<Option<String>>,
    /// A merge patch of the attributes: `null` removes one.
    pub attributes: Option<Map<String, Value>>,
    pub external_refs: Option<Vec<ExternalRef>>,
}

pub fn update(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    expected_version: Option<i64>,
    update: ItemUpdate,
) -> Result<ConfigurationItem, CmdbError> {
    let before = get(conn, id)?;
    crate::check_version(expected_version, before.version)?;
    let classes = super::classes::all(conn)?;
    let mut after = before.clone();
    if let Some(name) = update.name {
        after.name = validate_item_name(&name)?;
    }
    if let Some(status) = update.status {
        after.status = status;
    }
    if let Some(environment) = update.environment {
        after.environment = environment;
    }
    if let Some(criticality) = update.criticality {
        after.criticality = criticality;
    }
    if let Some(group) = update.owner_group {
        if group != before.owner_group {
            check_owner_group(conn, &group)?;
        }
        after.owner_group = group;
    }
    if let Some(refs) = update.external_refs {
        after.external_refs = refs;
    }
    let at = utc(ctx.at);
    if let Some(patch) = update.attributes {
        let mut merged = before.attributes.clone();
        for (name, value) in patch {
            if value.is_null() {
                merged.remove(&name);
            } else {
                merged.insert(name, value);
            }
        }
        after.attributes = check_attributes(&classes, &after.class, &merged)?;
        for name in before.attributes.keys().chain(after.attributes.keys()) {
            if before.attributes.get(name) != after.attributes.get(name) {
                match after.attributes.contains_key(name) {
                    true => after.attribute_sources.insert(
                        name.clone(),
                        AttributeSource {
                            source: MANUAL_SOURCE.to_owned(),
                            updated_at: at,
                        },
                    ),
                    false => after.attribute_sources.remove(name),
                };
            }
        }
    }
    if after == before {
        return Ok(before);
    }
    after.updated_at = at;
    after.version = before.version + 1;
    store(conn, &classes, Some(&before), &after)?;
    record(ctx, Some(&before), &after, "update")?;
    Ok(after)
}

#[derive(Debug, Default, Clone)]
pub struct ItemFilter {
    /// The class and its subclasses.
    pub classes: Option<Vec<String>>,
    pub statuses: Vec<CiStatus>,
    pub environments: Vec<Environment>,
    pub criticalities: Vec<Criticality>,
    pub owner_group: Option<String>,
    /// Identifying attribute equalities, served by the identifier index.
    pub identifiers: Vec<(String, String)>,
    pub q: Option<String>,
    pub external_ref: Option<ExternalRef>,
}

fn filtered(filter: &ItemFilter) -> configuration_items::BoxedQuery<'static, crate::MultiBackend> {
    let mut query = configuration_items::table.into_boxed();
    if let Some(classes) = &filter.classes {
        query = query.filter(InList::bound("configuration_items.class", classes.clone()));
    }
    if !filter.statuses.is_empty() {
        query = query.filter(InList::names(
            "configuration_items.status",
            filter.statuses.iter().map(|s| s.as_str()).collect(),
        ));
    }
    if !filter.environments.is_empty() {
        query = query.filter(InList::names(
            "configuration_items.environment",
            filter.environments.iter().map(|s| s.as_str()).collect(),
        ));
    }
    if !filter.criticalities.is_empty() {
        query = query.filter(InList::names(
            "configuration_items.criticality",
            filter.criticalities.iter().map(|s| s.as_str()).collect(),
        ));
    }
    if let Some(group) = &filter.owner_group {
        query = query.filter(configuration_items::owner_group_id.eq(group.clone()));
    }
    for (name, value) in &filter.identifiers {
        query = query.filter(HasIdentifier {
            name: name.clone(),
            value: value.clone(),
        });
    }
    if let Some(q) = &filter.q {
        query = query.filter(
            lower(configuration_items::name)
                .like(crate::contains_pattern(q))
                .escape('\\'),
        );
    }
    query
}

/// Ids of the items of `classes` holding every `(attribute, value)` of `identifiers`: one
/// query along the identifier index, whatever the number of items sharing one of the values.
pub(crate) fn matching(
    conn: &mut DbConnection,
    classes: &[String],
    identifiers: &[(String, String)],
) -> Result<Vec<String>, StoreError> {
    if identifiers.is_empty() {
        return Ok(Vec::new());
    }
    let filter = ItemFilter {
        classes: Some(classes.to_vec()),
        identifiers: identifiers.to_vec(),
        ..ItemFilter::default()
    };
    Ok(filtered(&filter)
        .select(configuration_items::id)
        .order(configuration_items::id.asc())
        .load(conn)?)
}

/// The stored items with these ids (missing ones left out), a query per 500 ids.
pub(crate) fn get_many(
    conn: &mut DbConnection,
    ids: &[String],
) -> Result<Vec<ConfigurationItem>, StoreError> {
    let mut items = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let rows: Vec<ItemRow> = configuration_items::table
            .filter(InList::bound("configuration_items.id", padded(chunk)))
            .select(ItemRow::as_select())
            .load(conn)?;
        let slice = external_refs::attach(
            conn,
            ENTITY,
            Slice {
                items: rows,
                more: false,
            },
            |row| row.has_external_refs.then_some(row.id.as_str()),
            ItemRow::into_item,
        )?;
        items.extend(slice.items);
    }
    Ok(items)
}

/// `(item id, value)` of the identifiers named `name` holding one of `values`, along the
/// identifier index, a query per 500 values.
pub(crate) fn identifier_holders(
    conn: &mut DbConnection,
    name: &str,
    values: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let mut holders = Vec::new();
    for chunk in values.chunks(500) {
        let rows: Vec<(String, String)> = ci_identifiers::table
            .filter(ci_identifiers::name.eq(name))
            .filter(InList::bound("ci_identifiers.value", padded(chunk)))
            .select((ci_identifiers::ci_id, ci_identifiers::value))
            .load(conn)?;
        holders.extend(rows);
    }
    Ok(holders)
}

/// `configuration_items.id IN (SELECT ci_id FROM ci_identifiers WHERE name = ? AND value = ?)`,
/// kept prepared: diesel's `eq_any` over a subquery marks its statement as never to be cached,
/// and reconciliation sends one such lookup per item and rule.
struct HasIdentifier {
    name: String,
    value: String,
}

impl Expression for HasIdentifier {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for HasIdentifier {}
impl<QS> SelectableExpression<QS> for HasIdentifier {}

impl ValidGrouping<()> for HasIdentifier {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for HasIdentifier {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for HasIdentifier
where
    DB: Backend + HasSqlType<Text>,
    String: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "configuration_items.id IN (SELECT ci_identifiers.ci_id FROM ci_identifiers \
             WHERE ci_identifiers.name = ",
        );
        out.push_bind_param::<Text, String>(&self.name)?;
        out.push_sql(" AND ci_identifiers.value = ");
        out.push_bind_param::<Text, String>(&self.value)?;
        out.push_sql(")");
        Ok(())
    }
}

/// Items in id (creation) order; `after` is the last id of the previous page.
pub fn list(
    conn: &mut DbConnection,
    filter: &ItemFilter,
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<ConfigurationItem>, StoreError> {
    let mut query = filtered(filter)
        .select(ItemRow::as_select())
        .order(configuration_items::id.asc());
    if let Some(reference) = &filter.external_ref {
        match external_refs::find_entity(conn, ENTITY, &reference.system, &reference.id)? {
            Some(id) => query = query.filter(configuration_items::id.eq(id)),
            None => {
                return Ok(Slice {
                    items: Vec::new(),
                    more: false,
                })
            }
        }
    }
    if let Some(after) = after {
        query = query.filter(configuration_items::id.gt(after.to_owned()));
    }
    let rows = crate::load_page::<_, _, ItemRow>(conn, query, limit)?;
    external_refs::attach(
        conn,
        ENTITY,
        rows,
        |row| row.has_external_refs.then_some(row.id.as_str()),
        ItemRow::into_item,
    )
}

/// How the database runs the `attr.<name>=<value>` filter of a list: the lines of SQLite's
/// `EXPLAIN QUERY PLAN` or PostgreSQL's `EXPLAIN`, to show that it reads the identifier index.
pub fn explain_identifier_filter(
    conn: &mut DbConnection,
    name: &str,
    value: &str,
) -> Result<Vec<String>, StoreError> {
    let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let query = format!(
        "SELECT configuration_items.id FROM configuration_items WHERE configuration_items.id IN \
         (SELECT ci_identifiers.ci_id FROM ci_identifiers WHERE ci_identifiers.name = {} \
         AND ci_identifiers.value = {}) ORDER BY configuration_items.id LIMIT 51",
        literal(name),
        literal(value)
    );
    let lines: Vec<crate::PlanLine> = match conn {
        DbConnection::Sqlite(c) => {
            diesel::sql_query(format!("EXPLAIN QUERY PLAN {query}")).load(c)?
        }
        DbConnection::Postgresql(c) => diesel::sql_query(format!("EXPLAIN {query}")).load(c)?,
    };
    Ok(lines.into_iter().map(|line| line.0).collect())
}

/// The columns of an item that an update of a reconciliation batch writes.
pub(crate) struct UpdatedRow {
    id: String,
    version_before: i64,
    name: String,
    status: &'static str,
    environment: Option<&'static str>,
    criticality: Option<&'static str>,
    owner_group_id: Option<String>,
    attributes: String,
    attribute_sources: String,
    has_external_refs: bool,
    updated_at: NaiveDateTime,
    version: i64,
}

/// Whether `store` of this update writes the item's row alone (its identifiers and external
/// references stay as they were), so that [`store_updates`] may write it with others.
pub(crate) fn row_only(
    classes: &ClassSet,
    before: &ConfigurationItem,
    after: &ConfigurationItem,
) -> bool {
    before.class == after.class
        && before.external_refs == after.external_refs
        && classes.identifiers(&before.class, &before.attributes)
            == classes.identifiers(&after.class, &after.attributes)
}

/// Updates the rows of several existing items in statements of up to 64 rows, where `store`
/// took one statement each (a round trip each on PostgreSQL). Each pair must be [`row_only`].
pub(crate) fn store_updates(
    conn: &mut DbConnection,
    updates: &[(&ConfigurationItem, &ConfigurationItem)],
) -> Result<(), StoreError> {
    let mut rows = Vec::with_capacity(updates.len());
    for (before, after) in updates {
        if (&before.name, before.status, before.criticality)
            != (&after.name, after.status, after.criticality)
        {
            crate::journal::graph_changed()?;
        }
        rows.push(UpdatedRow {
            id: after.id.clone(),
            version_before: before.version,
            name: after.name.clone(),
            status: after.status.as_str(),
            environment: after.environment.map(Environment::as_str),
            criticality: after.criticality.map(Criticality::as_str),
            owner_group_id: after.owner_group.clone(),
            attributes: to_json(&after.attributes),
            attribute_sources: to_json(&after.attribute_sources),
            has_external_refs: !after.external_refs.is_empty(),
            updated_at: after.updated_at.naive_utc(),
            version: after.version,
        });
    }
    let mut rest = &rows[..];
    while !rest.is_empty() {
        let size = [64, 16, 4, 1]
            .into_iter()
            .find(|size| rest.len() >= *size)
            .unwrap_or(1);
        let (chunk, after) = rest.split_at(size);
        let updated = with_backend!(&mut *conn, c => UpdateRows { rows: chunk }.execute(c))?;
        if updated != chunk.len() {
            // Another unit of work changed one of them since the batch read it.
            return Err(StoreError::VersionMismatch {
                expected: chunk[0].version_before,
                actual: chunk[0].version_before + 1,
            });
        }
        rest = after;
    }
    Ok(())
}

/// `WITH v(...) AS (VALUES (...), ...) UPDATE configuration_items SET ... FROM v WHERE id and
/// version match`, by hand: diesel has no multi-row UPDATE. Both backends take this form
/// (SQLite since 3.33).
struct UpdateRows<'a> {
    rows: &'a [UpdatedRow],
}

impl QueryId for UpdateRows<'_> {
    type QueryId = ();
    // Cached by its SQL text, one per chunk size.
    const HAS_STATIC_QUERY_ID: bool = false;
}

const UPDATED_COLUMNS: [&str; 10] = [
    "name",
    "status",
    "environment",
    "criticality",
    "owner_group_id",
    "attributes",
    "attribute_sources",
    "has_external_refs",
    "updated_at",
    "version",
];

impl<DB> QueryFragment<DB> for UpdateRows<'_>
where
    DB: Backend
        + HasSqlType<Text>
        + HasSqlType<diesel::sql_types::BigInt>
        + HasSqlType<Bool>
        + HasSqlType<diesel::sql_types::Timestamp>,
    str: ToSql<Text, DB>,
    String: ToSql<Text, DB>,
    i64: ToSql<diesel::sql_types::BigInt, DB>,
    bool: ToSql<Bool, DB>,
    NaiveDateTime: ToSql<diesel::sql_types::Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("WITH v(id, version_before, ");
        out.push_sql(&UPDATED_COLUMNS.join(", "));
        out.push_sql(") AS (VALUES ");
        for (n, row) in self.rows.iter().enumerate() {
            out.push_sql(if n == 0 { "(" } else { ", (" });
            out.push_bind_param::<Text, String>(&row.id)?;
            out.push_sql(", ");
            out.push_bind_param::<diesel::sql_types::BigInt, i64>(&row.version_before)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, String>(&row.name)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(row.status)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, Option<&str>>(&row.environment)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, Option<&str>>(&row.criticality)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, Option<String>>(&row.owner_group_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, String>(&row.attributes)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, String>(&row.attribute_sources)?;
            out.push_sql(", ");
            out.push_bind_param::<Bool, bool>(&row.has_external_refs)?;
            out.push_sql(", ");
            out.push_bind_param::<diesel::sql_types::Timestamp, NaiveDateTime>(&row.updated_at)?;
            out.push_sql(", ");
            out.push_bind_param::<diesel::sql_types::BigInt, i64>(&row.version)?;
            out.push_sql(")");
        }
        out.push_sql(") UPDATE configuration_items SET ");
        for (n, column) in UPDATED_COLUMNS.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            out.push_sql(column);
            out.push_sql(" = v.");
            out.push_sql(column);
        }
        out.push_sql(
            " FROM v WHERE configuration_items.id = v.id \
             AND configuration_items.version = v.version_before",
        );
        Ok(())
    }
}

impl<C> RunQueryDsl<C> for UpdateRows<'_> {}
