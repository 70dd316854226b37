//! Reconciliation batches: planned by `domain::cmdb::reconcile` over the stored inventory,
//! then written as one unit of work (or, in a dry run, only reported).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use domain::cmdb::class::identifier_value;
use domain::cmdb::reconcile::{
    self, Action, BatchItem, Inventory, Plan, RelationshipResult, Report,
};
use domain::cmdb::{ClassSet, ConfigurationItem, RelationshipType};
use domain::{DomainError, FieldError};
use serde_json::json;

use super::{items, relationships, CmdbError};
use crate::audit::{self, Mutation};
use crate::schema::ci_relationships;
use crate::{DbConnection, StoreError, WriteContext};

/// A relationship between two items of the batch, by their keys.
#[derive(Debug, Clone)]
pub struct BatchRelationship {
    pub source: String,
    pub rel_type: RelationshipType,
    pub target: String,
}

#[derive(Debug, Clone)]
pub struct Batch {
    pub source: String,
    /// Each item with its optional key, which relationships refer to.
    pub items: Vec<(Option<String>, BatchItem)>,
    pub relationships: Vec<BatchRelationship>,
    /// All or nothing: any conflict or invalid entry refuses the whole batch.
    pub atomic: bool,
}

/// The stored items a batch may match. Rules of one attribute (a serial number) are answered
/// from holders read up front for the whole batch, a few queries instead of two per item;
/// rules of several attributes, whose values may each be shared by many items (a DNS
/// domain), by one query per item that intersects them along the identifier index.
struct StoredInventory<'c> {
    conn: &'c mut DbConnection,
    /// Holders of each `(attribute, value)` of the batch's one-attribute rules.
    holders: HashMap<(String, String), Vec<String>>,
    items: HashMap<String, ConfigurationItem>,
}

impl<'c> StoredInventory<'c> {
    fn load(
        conn: &'c mut DbConnection,
        classes: &ClassSet,
        batch: &[BatchItem],
    ) -> Result<Self, StoreError> {
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for item in batch {
            for rule in classes.identification_rules(&item.class) {
                if let [name] = rule.as_slice() {
                    if let Some(value) = item.attributes.get(name).filter(|v| !v.is_null()) {
                        wanted
                            .entry(name.clone())
                            .or_default()
                            .insert(identifier_value(value));
                    }
                }
            }
        }
        let mut holders: HashMap<(String, String), Vec<String>> = HashMap::new();
        let mut ids = BTreeSet::new();
        for (name, values) in wanted {
            let values: Vec<String> = values.into_iter().collect();
            // A value nobody holds is an answer too: no item matches it.
            for value in &values {
                holders.insert((name.clone(), value.clone()), Vec::new());
            }
            for (id, value) in items::identifier_holders(conn, &name, &values)? {
                ids.insert(id.clone());
                holders.entry((name.clone(), value)).or_default().push(id);
            }
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let items = items::get_many(conn, &ids)?
            .into_iter()
            .map(|item| (item.id.clone(), item))
            .collect();
        Ok(Self {
            conn,
            holders,
            items,
        })
    }
}

impl Inventory for StoredInventory<'_> {
    type Error = StoreError;

    fn matching(
        &mut self,
        classes: &[String],
        identifiers: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let [pair] = identifiers else {
            return items::matching(self.conn, classes, identifiers);
        };
        let Some(found) = self.holders.get(pair) else {
            return items::matching(self.conn, classes, identifiers);
        };
        let mut ids: Vec<String> = found
            .iter()
            .filter(|id| {
                self.items
                    .get(*id)
                    .is_some_and(|item| classes.contains(&item.class))
            })
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn item(&mut self, id: &str) -> Result<ConfigurationItem, StoreError> {
        match self.items.get(id) {
            Some(item) => Ok(item.clone()),
            None => items::get(self.conn, id),
        }
    }
}

/// What a batch would do, planned over the stored inventory.
struct Planned {
    plan: Plan,
    /// Ids given to items the batch creates.
    new_ids: HashSet<String>,
    /// Per batch relationship: `(source id, type, target id)` to create, or its result.
    relationships: Vec<Result<(String, RelationshipType, String), RelationshipResult>>,
}

fn rel_rejected(action: Action, id: Option<String>, errors: Vec<FieldError>) -> RelationshipResult {
    RelationshipResult { action, id, errors }
}

fn plan_batch(
    conn: &mut DbConnection,
    classes: &ClassSet,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<Planned, CmdbError> {
    let mut keys: HashMap<&str, usize> = HashMap::new();
    let mut duplicate_keys = Vec::new();
    for (index, (key, _)) in batch.items.iter().enumerate() {
        if let Some(key) = key {
            if keys.insert(key.as_str(), index).is_some() {
                duplicate_keys.push(FieldError::new(
                    format!("items[{index}].key"),
                    format!("the key {key} is used by another item of the batch"),
                ));
            }
        }
    }
    if !duplicate_keys.is_empty() {
        return Err(DomainError::Invalid(duplicate_keys).into());
    }
    let items: Vec<BatchItem> = batch.items.iter().map(|(_, item)| item.clone()).collect();
    let mut new_ids = HashSet::new();
    let plan = reconcile::plan(
        classes,
        &batch.source,
        &items,
        now,
        &mut StoredInventory::load(conn, classes, &items)?,
        || {
            let id = crate::new_id();
            new_ids.insert(id.clone());
            id
        },
    )?;
    let mut relationships = Vec::with_capacity(batch.relationships.len());
    let mut planned: HashSet<(String, RelationshipType, String)> = HashSet::new();
    for (index, rel) in batch.relationships.iter().enumerate() {
        let mut errors = Vec::new();
        let mut end = |key: &str, field: &str| match keys.get(key) {
            None => {
                errors.push(FieldError::new(
                    format!("relationships[{index}].{field}"),
                    format!("no item of the batch has the key {key}"),
                ));
                None
            }
            Some(&at) => match &plan.results[at].id {
                Some(id) => Some(id.clone()),
                None => {
                    errors.push(FieldError::new(
                        format!("relationships[{index}].{field}"),
                        format!("the item with the key {key} was not reconciled"),
                    ));
                    None
                }
            },
        };
        let source = end(&rel.source, "source");
        let target = end(&rel.target, "target");
        let (Some(source), Some(target)) = (source, target) else {
            relationships.push(Err(rel_rejected(Action::Invalid, None, errors)));
            continue;
        };
        if source == target {
            relationships.push(Err(rel_rejected(
                Action::Invalid,
                None,
                vec![FieldError::new(
                    format!("relationships[{index}].target"),
                    "an item cannot relate to itself",
                )],
            )));
            continue;
        }
        let key = (source.clone(), rel.rel_type, target.clone());
        if planned.contains(&key) {
            relationships.push(Err(rel_rejected(Action::Unchanged, None, Vec::new())));
            continue;
        }
        let stored: Option<String> = if new_ids.contains(&source) || new_ids.contains(&target) {
            None
        } else {
            ci_relationships::table
                .filter(ci_relationships::source_id.eq(&source))
                .filter(ci_relationships::rel_type.eq(rel.rel_type.as_str()))
                .filter(ci_relationships::target_id.eq(&target))
                .select(ci_relationships::id)
                .get_result(conn)
                .optional()?
        };
        match stored {
            Some(id) => {
                relationships.push(Err(rel_rejected(Action::Unchanged, Some(id), Vec::new())))
            }
            None => {
                planned.insert(key.clone());
                relationships.push(Ok(key));
            }
        }
    }
    Ok(Planned {
        plan,
        new_ids,
        relationships,
    })
}

/// An atomic batch with a conflict or an invalid entry is refused whole, naming each.
fn refuse_if_atomic(batch: &Batch, planned: &Planned) -> Result<(), CmdbError> {
    if !batch.atomic {
        return Ok(());
    }
    let mut errors = Vec::new();
    for (index, result) in planned.plan.results.iter().enumerate() {
        if matches!(result.action, Action::Conflict | Action::Invalid) {
            for error in &result.errors {
                errors.push(FieldError::new(
                    format!("items[{index}].{}", error.field),
                    format!("{:?}: {}", result.action, error.message).to_lowercase(),
                ));
            }
        }
    }
    for (index, result) in planned.relationships.iter().enumerate() {
        if let Err(result) = result {
            if result.action == Action::Invalid {
                for error in &result.errors {
                    errors.push(FieldError::new(error.field.clone(), error.message.clone()));
                }
                if result.errors.is_empty() {
                    errors.push(FieldError::new(
                        format!("relationships[{index}]"),
                        "is invalid",
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CmdbError::BatchRefused(errors))
    }
}

fn report(planned: Planned, dry_run: bool, created: Vec<Option<String>>) -> Report {
    let Planned {
        plan,
        new_ids,
        relationships,
    } = planned;
    let mut results = plan.results;
    if dry_run {
        for result in &mut results {
            if result.id.as_ref().is_some_and(|id| new_ids.contains(id)) {
                result.id = None;
            }
        }
    }
    let relationships = relationships
        .into_iter()
        .zip(created)
        .map(|(planned, id)| match planned {
            Ok(_) => RelationshipResult {
                action: Action::Created,
                id,
                errors: Vec::new(),
            },
            Err(result) => result,
        })
        .collect();
    Report {
        dry_run,
        results,
        relationships,
        summary: plan.summary,
    }
}

/// What `run` would do, writing nothing.
pub fn dry_run(conn: &mut DbConnection, batch: &Batch) -> Result<Report, CmdbError> {
    let classes = super::classes::all(conn)?;
    let planned = plan_batch(conn, &classes, batch, crate::utc(crate::now_utc()))?;
    refuse_if_atomic(batch, &planned)?;
    let created = vec![None; planned.relationships.len()];
    Ok(report(planned, true, created))
}

/// Reconciles a batch as one unit of work: items, relationships, their audit entries and
/// events, and one `ci.reconciled` event when anything changed.
pub fn run(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    batch: &Batch,
) -> Result<Report, CmdbError> {
    let classes = super::classes::all(conn)?;
    let planned = plan_batch(conn, &classes, batch, crate::utc(ctx.at))?;
    refuse_if_atomic(batch, &planned)?;
    // Updates that write an item's row alone go together in multi-row statements; new items
    // and updates of identifiers or references are written one by one.
    let mut written = Vec::with_capacity(planned.plan.writes.len());
    for write in &planned.plan.writes {
        let mut after = write.after.clone();
        if let Some(before) = &write.before {
            after.version = before.version + 1;
        }
        written.push(after);
    }
    let mut together = Vec::new();
    for (write, after) in planned.plan.writes.iter().zip(&written) {
        match &write.before {
            Some(before) if items::row_only(&classes, before, after) => {
                together.push((before, after));
            }
            before => items::store(conn, &classes, before.as_ref(), after)?,
        }
    }
    items::store_updates(conn, &together)?;
    for (write, after) in planned.plan.writes.iter().zip(&written) {
        items::record(ctx, write.before.as_ref(), after, "reconcile")?;
    }
    let mut created = Vec::with_capacity(planned.relationships.len());
    let mut added = 0;
    for rel in &planned.relationships {
        match rel {
            Ok((source, rel_type, target)) => {
                let relationship = relationships::insert(conn, ctx, source, *rel_type, target)?;
                created.push(Some(relationship.id));
                added += 1;
            }
            Err(_) => created.push(None),
        }
    }
    let summary = planned.plan.summary.clone();
    if !planned.plan.writes.is_empty() || added > 0 {
        let id = crate::new_id();
        audit::record(
            ctx,
            Mutation {
                entity_type: "ci_reconciliation",
                entity_id: &id,
                action: "reconcile",
                changes: json!({}),
                event_type: "ci.reconciled",
                event_data: json!({
                    "source": batch.source,
                    "items": batch.items.len(),
                    "summary": summary,
                    "relationships_added": added,
                }),
            },
        )?;
    }
    Ok(report(planned, false, created))
}
