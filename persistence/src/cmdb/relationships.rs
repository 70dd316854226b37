//! Typed, directed relationships between items, and the impact walk over them.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::cmdb::impact::{self, Direction, Impact, NodeInfo, Step, Walked};
use std::sync::Arc;

use super::graph::GraphCache;
use domain::cmdb::item::{ItemRelationship, RelatedItem, Relationship};
use domain::cmdb::{CiStatus, ClassSet, Criticality, RelationshipType};
use domain::DomainError;
use serde_json::json;

use super::items::ENTITY as ITEM;
use super::{padded, CmdbError};
use crate::audit::{self, Mutation};
use crate::conditions::InList;
use crate::schema::{ci_relationships, configuration_items};
use crate::{utc, DbConnection, Slice, StoreError, WriteContext};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ci_relationships)]
struct RelationshipRow {
    id: String,
    source_id: String,
    rel_type: String,
    target_id: String,
    created_at: NaiveDateTime,
}

fn parse_type(text: &str) -> Result<RelationshipType, StoreError> {
    RelationshipType::parse(text).map_err(|e| {
        StoreError::Database(diesel::result::Error::DeserializationError(
            format!("stored relationship type is not valid: {e}").into(),
        ))
    })
}

impl RelationshipRow {
    fn into_relationship(self) -> Result<Relationship, StoreError> {
        let rel_type = parse_type(&self.rel_type)?;
        Ok(Relationship {
            id: self.id,
            source_id: self.source_id,
            rel_type,
            inverse: rel_type.inverse(),
            target_id: self.target_id,
            created_at: utc(self.created_at),
        })
    }
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<Relationship, StoreError> {
    ci_relationships::table
        .find(id)
        .select(RelationshipRow::as_select())
        .get_result(conn)?
        .into_relationship()
}

fn existing(
    conn: &mut DbConnection,
    source_id: &str,
    rel_type: RelationshipType,
    target_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(ci_relationships::table
        .filter(ci_relationships::source_id.eq(source_id))
        .filter(ci_relationships::rel_type.eq(rel_type.as_str()))
        .filter(ci_relationships::target_id.eq(target_id))
        .select(ci_relationships::id)
        .get_result(conn)
        .optional()?)
}

fn item_exists(conn: &mut DbConnection, id: &str) -> Result<bool, StoreError> {
    Ok(configuration_items::table
        .find(id)
        .select(configuration_items::id)
        .get_result::<String>(conn)
        .optional()?
        .is_some())
}

/// Adds `source type target`: both items must exist, differ, and not be related so already.
pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    source_id: &str,
    rel_type: RelationshipType,
    target_id: &str,
) -> Result<Relationship, CmdbError> {
    let mut errors = Vec::new();
    if source_id == target_id {
        errors.push(domain::FieldError::new(
            "target_id",
            "must differ from source_id: an item cannot relate to itself",
        ));
    }
    for (field, id) in [("source_id", source_id), ("target_id", target_id)] {
        if !item_exists(conn, id)? {
            errors.push(domain::FieldError::unknown(field, "configuration item"));
        }
    }
    if !errors.is_empty() {
        return Err(DomainError::Invalid(errors).into());
    }
    if let Some(id) = existing(conn, source_id, rel_type, target_id)? {
        // A stored relationship is what the request conflicts with.
        return Err(CmdbError::conflict(format!(
            "the relationship exists already: {id}"
        )));
    }
    insert(conn, ctx, source_id, rel_type, target_id)
}

/// Inserts a checked relationship with its audit entry (on the source item) and event.
pub(crate) fn insert(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    source_id: &str,
    rel_type: RelationshipType,
    target_id: &str,
) -> Result<Relationship, CmdbError> {
    let relationship = Relationship {
        id: crate::new_id(),
        source_id: source_id.to_owned(),
        rel_type,
        inverse: rel_type.inverse(),
        target_id: target_id.to_owned(),
        created_at: utc(ctx.at),
    };
    diesel::insert_into(ci_relationships::table)
        .values((
            ci_relationships::id.eq(&relationship.id),
            ci_relationships::source_id.eq(source_id),
            ci_relationships::rel_type.eq(rel_type.as_str()),
            ci_relationships::target_id.eq(target_id),
            ci_relationships::created_at.eq(ctx.at),
        ))
        .execute(conn)?;
    crate::journal::graph_changed()?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ITEM,
            entity_id: source_id,
            action: "add_relationship",
            changes: json!({ format!("relationships.{}", rel_type.as_str()): [null, target_id] }),
            event_type: "ci.relationship_added",
            event_data: json!(relationship),
        },
    )?;
    Ok(relationship)
}

pub fn delete(conn: &mut DbConnection, ctx: &WriteContext, id: &str) -> Result<(), CmdbError> {
    let relationship = get(conn, id)?;
    diesel::delete(ci_relationships::table.find(id)).execute(conn)?;
    crate::journal::graph_changed()?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ITEM,
            entity_id: &relationship.source_id,
            action: "remove_relationship",
            changes: json!({
                format!("relationships.{}", relationship.rel_type.as_str()):
                    [relationship.target_id, null]
            }),
            event_type: "ci.relationship_removed",
            event_data: json!(relationship),
        },
    )?;
    Ok(())
}

/// Which relationships of an item to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Outgoing,
    Incoming,
    Both,
}

type Summary = (String, String, String, String, Option<String>);

fn summaries(
    conn: &mut DbConnection,
    ids: Vec<String>,
) -> Result<HashMap<String, Summary>, StoreError> {
    let rows: Vec<Summary> = configuration_items::table
        .filter(InList::bound("configuration_items.id", ids))
        .select((
            configuration_items::id,
            configuration_items::name,
            configuration_items::class,
            configuration_items::status,
            configuration_items::criticality,
        ))
        .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.0.clone(), r)).collect())
}

/// The relationships of an item in id order; `after` is the last id of the previous page.
pub fn of_item(
    conn: &mut DbConnection,
    item_id: &str,
    side: Side,
    types: &[RelationshipType],
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<ItemRelationship>, StoreError> {
    if !item_exists(conn, item_id)? {
        return Err(StoreError::NotFound);
    }
    let mut query = ci_relationships::table
        .select(RelationshipRow::as_select())
        .order(ci_relationships::id.asc())
        .into_boxed();
    let id = item_id.to_owned();
    query = match side {
        Side::Outgoing => query.filter(ci_relationships::source_id.eq(id)),
        Side::Incoming => query.filter(ci_relationships::target_id.eq(id)),
        Side::Both => query.filter(
            ci_relationships::source_id
                .eq(id.clone())
                .or(ci_relationships::target_id.eq(id)),
        ),
    };
    if !types.is_empty() {
        query = query.filter(InList::names(
            "ci_relationships.rel_type",
            types.iter().map(|t| t.as_str()).collect(),
        ));
    }
    if let Some(after) = after {
        query = query.filter(ci_relationships::id.gt(after.to_owned()));
    }
    let rows = crate::load_page::<_, _, RelationshipRow>(conn, query, limit)?;
    let others: Vec<String> = rows
        .items
        .iter()
        .map(|r| {
            if r.source_id == item_id {
                r.target_id.clone()
            } else {
                r.source_id.clone()
            }
        })
        .collect();
    let found = summaries(conn, others)?;
    let mut items = Vec::with_capacity(rows.items.len());
    for row in rows.items {
        let relationship = row.into_relationship()?;
        let outgoing = relationship.source_id == item_id;
        let other = if outgoing {
            &relationship.target_id
        } else {
            &relationship.source_id
        };
        let (id, name, class, status, _) = found.get(other).cloned().ok_or(StoreError::NotFound)?;
        items.push(ItemRelationship {
            name: if outgoing {
                relationship.rel_type.as_str()
            } else {
                relationship.inverse
            },
            direction: if outgoing { "outgoing" } else { "incoming" },
            related: RelatedItem {
                id,
                name,
                class,
                status: CiStatus::parse(&status).map_err(corrupt)?,
            },
            id: relationship.id,
            rel_type: relationship.rel_type,
            source_id: relationship.source_id,
            target_id: relationship.target_id,
            created_at: relationship.created_at,
        });
    }
    Ok(Slice {
        items,
        more: rows.more,
    })
}

/// Frontier ids per query: well under both backends' limits on bound parameters.
const LEVEL_CHUNK: usize = domain::cmdb::impact::BATCH;

/// The relationships leaving `ids` in `direction`: `(source, type, target)`.
fn level_edges(
    conn: &mut DbConnection,
    ids: Vec<String>,
    direction: Direction,
    types: &[RelationshipType],
) -> Result<Vec<(String, String, String)>, StoreError> {
    let column = match direction {
        Direction::Downstream => "ci_relationships.source_id",
        Direction::Upstream => "ci_relationships.target_id",
    };
    let mut query = ci_relationships::table
        .select((
            ci_relationships::source_id,
            ci_relationships::rel_type,
            ci_relationships::target_id,
        ))
        .filter(InList::bound(column, ids))
        .into_boxed();
    if !types.is_empty() {
        query = query.filter(InList::names(
            "ci_relationships.rel_type",
            types.iter().map(|t| t.as_str()).collect(),
        ));
    }
    Ok(query.load(conn)?)
}

/// The steps leaving `frontier` (at most a batch of the walk) in `direction`, and what the
/// answer shows of each item they reach (into `nodes`): the relationships, then the items they
/// reach by primary key. A step to an item gone since is left out.
///
/// Two queries, not one join: PostgreSQL's generic plan of the join estimated thousands of
/// rows for a long `IN` list and hashed the whole item table on every level.
fn next_level(
    conn: &mut DbConnection,
    frontier: &[String],
    direction: Direction,
    types: &[RelationshipType],
    classes: &ClassSet,
    nodes: &mut HashMap<String, NodeInfo>,
) -> Result<Vec<Step<String>>, StoreError> {
    let edges = level_edges(conn, padded(frontier), direction, types)?;
    let mut reached: Vec<String> = edges
        .iter()
        .map(|(source, _, target)| match direction {
            Direction::Downstream => target.clone(),
            Direction::Upstream => source.clone(),
        })
        .filter(|id| !nodes.contains_key(id))
        .collect();
    reached.sort();
    reached.dedup();
    for ids in reached.chunks(LEVEL_CHUNK) {
        for (id, (_, name, class, status, criticality)) in summaries(conn, padded(ids))? {
            let info = NodeInfo {
                is_service: classes.is_a(&class, "business_service"),
                name,
                class,
                status: CiStatus::parse(&status).map_err(corrupt)?,
                criticality: criticality
                    .as_deref()
                    .map(Criticality::parse)
                    .transpose()
                    .map_err(corrupt)?,
            };
            nodes.insert(id, info);
        }
    }
    let mut steps = Vec::with_capacity(edges.len());
    for (source, rel_type, target) in edges {
        let (from, to) = match direction {
            Direction::Downstream => (source, target),
            Direction::Upstream => (target, source),
        };
        if nodes.contains_key(&to) {
            steps.push(Step {
                from,
                rel_type: parse_type(&rel_type)?,
                to,
            });
        }
    }
    Ok(steps)
}

fn corrupt(error: DomainError) -> StoreError {
    StoreError::Database(diesel::result::Error::DeserializationError(
        format!("stored configuration item is not valid: {error}").into(),
    ))
}

/// The impact of `start` (see [`impact::walk`]): over the node's copy of the graph when it is
/// current, else over the database with one query per level and batch.
pub fn impact(
    conn: &mut DbConnection,
    graphs: &Arc<GraphCache>,
    start: &str,
    direction: Direction,
    depth: u32,
    types: &[RelationshipType],
    limit: usize,
) -> Result<Impact, StoreError> {
    if let Some(copy) = graphs.current(conn)? {
        return copy
            .graph
            .impact(start, direction, depth, types, limit)
            .ok_or(StoreError::NotFound);
    }
    impact_from_database(conn, start, direction, depth, types, limit)
}

/// What a walk from `start` reaches, by id (see [`Walked`]): from the node's graph copy when
/// it is current, else level by level from the database.
pub fn reach(
    conn: &mut DbConnection,
    graphs: &Arc<GraphCache>,
    start: &str,
    direction: Direction,
    depth: u32,
    limit: usize,
) -> Result<Walked, StoreError> {
    if let Some(copy) = graphs.current(conn)? {
        return copy
            .graph
            .reach(start, direction, depth, limit)
            .ok_or(StoreError::NotFound);
    }
    let (found, nodes) = walk_database(conn, start, direction, depth, &[], limit)?;
    Ok(found.walked(|id| id.clone(), |id| nodes.contains_key(id)))
}

/// The impact of `start` read level by level from the database.
pub fn impact_from_database(
    conn: &mut DbConnection,
    start: &str,
    direction: Direction,
    depth: u32,
    types: &[RelationshipType],
    limit: usize,
) -> Result<Impact, StoreError> {
    let (found, nodes) = walk_database(conn, start, direction, depth, types, limit)?;
    Ok(found.describe(|id| id.clone(), |id| nodes.get(id).cloned()))
}

/// A walk from `start` level by level over the database, with what it read of each item.
fn walk_database(
    conn: &mut DbConnection,
    start: &str,
    direction: Direction,
    depth: u32,
    types: &[RelationshipType],
    limit: usize,
) -> Result<(impact::Walk<String>, HashMap<String, NodeInfo>), StoreError> {
    if !item_exists(conn, start)? {
        return Err(StoreError::NotFound);
    }
    let classes = super::classes::all(conn)?;
    let mut nodes = HashMap::new();
    let found = impact::walk(start.to_owned(), depth, limit, |frontier| {
        next_level(conn, frontier, direction, types, &classes, &mut nodes)
    })?;
    Ok((found, nodes))
}
