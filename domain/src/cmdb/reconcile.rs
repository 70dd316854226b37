//! Reconciliation: matching a batch of discovered items to the inventory by their class's
//! identification rules, and deciding per item whether to create, update or leave it, under
//! each class's source precedence.
//!
//! The planner sees the inventory only through [`Inventory`], so a dry run and a real run
//! plan with the very same code; the repository then writes the plan (or does not).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::class::ClassSet;
use super::item::{AttributeSource, CiStatus, ConfigurationItem, Criticality, Environment};
use crate::FieldError;

/// The largest batch accepted.
pub const MAX_BATCH: usize = 1000;

/// One item of a batch, as the API parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub class: String,
    /// Used when the item is created; an existing item keeps its name.
    pub name: Option<String>,
    /// Set when the item is created (default `operational`).
    pub status: Option<CiStatus>,
    pub environment: Option<Environment>,
    pub criticality: Option<Criticality>,
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    Conflict,
    Invalid,
}

/// An attribute the batch's source may not overwrite.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RefusedAttribute {
    pub name: String,
    /// The source that set the current value, which ranks above this batch's source.
    pub held_by: String,
    #[schema(value_type = Object)]
    pub offered: Value,
}

/// What happened (or, in a dry run, would happen) to one batch item.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ItemResult {
    pub action: Action,
    /// The matched or created item (`null` for a creation in a dry run, conflicts and invalid items).
    pub id: Option<String>,
    /// The index of the identification rule that matched.
    pub matched_rule: Option<usize>,
    pub changed_attributes: Vec<String>,
    pub refused_attributes: Vec<RefusedAttribute>,
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
}

/// Counts per action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub conflict: usize,
    pub invalid: usize,
}

/// What happened (or would happen) to one relationship of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RelationshipResult {
    /// `created`, `unchanged` or `invalid`.
    pub action: Action,
    /// The relationship (`null` for a creation in a dry run and for invalid ones).
    pub id: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
}

/// The answer to a reconciliation batch, in the order of the batch.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Report {
    pub dry_run: bool,
    pub results: Vec<ItemResult>,
    pub relationships: Vec<RelationshipResult>,
    pub summary: Summary,
}

/// The inventory as the planner reads it.
pub trait Inventory {
    type Error;
    /// Ids of stored items of one of `classes` holding every `(attribute, value)` given.
    fn matching(
        &mut self,
        classes: &[String],
        identifiers: &[(String, String)],
    ) -> Result<Vec<String>, Self::Error>;
    fn item(&mut self, id: &str) -> Result<ConfigurationItem, Self::Error>;
}

/// A stored item's new state, or a new item.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// `None` for a new item.
    pub before: Option<ConfigurationItem>,
    pub after: ConfigurationItem,
}

/// The outcome of planning a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub results: Vec<ItemResult>,
    pub summary: Summary,
    /// The items to write, in the order the batch first touched them.
    pub writes: Vec<Write>,
}

struct Working {
    before: Option<ConfigurationItem>,
    after: ConfigurationItem,
}

/// The items a batch has reached so far, by id and by attribute value: an item of the batch
/// is matched against those before it through the values of its identifiers, not by a scan of
/// the whole batch (which made a batch of 1,000 compare half a million pairs).
#[derive(Default)]
struct Batch {
    working: Vec<Working>,
    index_of: HashMap<String, usize>,
    /// `(attribute, identifier value)` to the items that held it at some point of the batch;
    /// an item that changed since is checked again by its current values.
    by_value: HashMap<(String, String), Vec<usize>>,
}

impl Batch {
    fn push(&mut self, working: Working) -> usize {
        let at = self.working.len();
        self.index_of.insert(working.after.id.clone(), at);
        self.working.push(working);
        self.index_values(at);
        at
    }

    /// Indexes the current attribute values of item `at`.
    fn index_values(&mut self, at: usize) {
        for (name, value) in &self.working[at].after.attributes {
            let key = (name.clone(), super::class::identifier_value(value));
            let holders = self.by_value.entry(key).or_default();
            if holders.last() != Some(&at) {
                holders.push(at);
            }
        }
    }

    /// The items of the batch of a class in `family` that hold `identifiers` now.
    fn holding<'a>(
        &'a self,
        family: &'a [String],
        identifiers: &'a [(String, String)],
    ) -> impl Iterator<Item = &'a ConfigurationItem> + 'a {
        let candidates: Vec<usize> = match identifiers.first() {
            Some(first) => self.by_value.get(first).cloned().unwrap_or_default(),
            None => (0..self.working.len()).collect(),
        };
        candidates
            .into_iter()
            .map(|at| &self.working[at].after)
            .filter(move |item| family.contains(&item.class) && holds(item, identifiers))
    }
}

/// Plans `items` from `source`. `new_id` names created items; `now` stamps attribute sources.
pub fn plan<I: Inventory>(
    classes: &ClassSet,
    source: &str,
    items: &[BatchItem],
    now: DateTime<Utc>,
    inventory: &mut I,
    mut new_id: impl FnMut() -> String,
) -> Result<Plan, I::Error> {
    let mut batch = Batch::default();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let result = plan_one(
            classes,
            source,
            item,
            now,
            inventory,
            &mut batch,
            &mut new_id,
        )?;
        results.push(result);
    }
    let mut summary = Summary::default();
    for result in &results {
        match result.action {
            Action::Created => summary.created += 1,
            Action::Updated => summary.updated += 1,
            Action::Unchanged => summary.unchanged += 1,
            Action::Conflict => summary.conflict += 1,
            Action::Invalid => summary.invalid += 1,
        }
    }
    let writes = batch
        .working
        .into_iter()
        .filter(|w| w.before.as_ref() != Some(&w.after))
        .map(|w| Write {
            before: w.before,
            after: w.after,
        })
        .collect();
    Ok(Plan {
        results,
        summary,
        writes,
    })
}

fn rejected(action: Action, errors: Vec<FieldError>) -> ItemResult {
    ItemResult {
        action,
        id: None,
        matched_rule: None,
        changed_attributes: Vec::new(),
        refused_attributes: Vec::new(),
        errors,
    }
}

fn holds(item: &ConfigurationItem, identifiers: &[(String, String)]) -> bool {
    identifiers.iter().all(|(name, value)| {
        item.attributes
            .get(name)
            .is_some_and(|v| &super::class::identifier_value(v) == value)
    })
}

fn plan_one<I: Inventory>(
    classes: &ClassSet,
    source: &str,
    item: &BatchItem,
    now: DateTime<Utc>,
    inventory: &mut I,
    batch: &mut Batch,
    new_id: &mut impl FnMut() -> String,
) -> Result<ItemResult, I::Error> {
    if classes.get(&item.class).is_none() {
        return Ok(rejected(
            Action::Invalid,
            vec![FieldError::new(
                "class",
                format!("no class named {}", item.class),
            )],
        ));
    }
    // Unknown attributes and wrong types are reported before matching.
    let mut offered = item.attributes.clone();
    offered.retain(|_, v| !v.is_null());
    if let Err(errors) = classes.validate_attributes(&item.class, &item.attributes) {
        let errors: Vec<FieldError> = errors
            .into_iter()
            .filter(|e| !e.message.starts_with("is required"))
            .collect();
        if !errors.is_empty() {
            return Ok(rejected(Action::Invalid, errors));
        }
    }
    let rules = classes.identification_rules(&item.class);
    if rules.is_empty() {
        return Ok(rejected(
            Action::Invalid,
            vec![FieldError::new(
                "class",
                format!("class {} has no identification rules", item.class),
            )],
        ));
    }
    let family = classes.with_descendants(&item.class);
    let mut matched: Vec<(usize, String)> = Vec::new();
    let mut applicable = false;
    for (rule_index, rule) in rules.iter().enumerate() {
        let identifiers: Option<Vec<(String, String)>> = rule
            .iter()
            .map(|name| {
                offered
                    .get(name)
                    .map(|v| (name.clone(), super::class::identifier_value(v)))
            })
            .collect();
        let Some(identifiers) = identifiers else {
            continue;
        };
        applicable = true;
        let mut ids: Vec<String> = Vec::new();
        for id in inventory.matching(&family, &identifiers)? {
            // An item this batch already changed is judged by its new values.
            let still = match batch.index_of.get(&id) {
                Some(&at) => holds(&batch.working[at].after, &identifiers),
                None => true,
            };
            if still {
                ids.push(id);
            }
        }
        for held in batch.holding(&family, &identifiers) {
            if !ids.contains(&held.id) {
                ids.push(held.id.clone());
            }
        }
        ids.sort();
        if ids.len() > 1 {
            return Ok(rejected(
                Action::Conflict,
                vec![FieldError::new(
                    "attributes",
                    format!(
                        "identification rule {rule_index} ({}) matches {} items: {}",
                        rule.join(" + "),
                        ids.len(),
                        ids.join(", ")
                    ),
                )],
            ));
        }
        if let Some(id) = ids.pop() {
            matched.push((rule_index, id));
        }
    }
    if !applicable {
        let wanted: Vec<String> = rules.iter().map(|r| r.join(" + ")).collect();
        return Ok(rejected(
            Action::Invalid,
            vec![FieldError::new(
                "attributes",
                format!(
                    "carries the attributes of no identification rule of {}: {}",
                    item.class,
                    wanted.join("; ")
                ),
            )],
        ));
    }
    let mut distinct: Vec<&String> = matched.iter().map(|(_, id)| id).collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() > 1 {
        let detail = matched
            .iter()
            .map(|(rule, id)| format!("rule {rule} -> {id}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Ok(rejected(
            Action::Conflict,
            vec![FieldError::new(
                "attributes",
                format!("identifiers point at different items: {detail}"),
            )],
        ));
    }
    match matched.first() {
        None => Ok(create(classes, source, item, offered, now, batch, new_id)),
        Some((rule, id)) => {
            let at = match batch.index_of.get(id) {
                Some(&at) => at,
                None => {
                    let stored = inventory.item(id)?;
                    batch.push(Working {
                        before: Some(stored.clone()),
                        after: stored,
                    })
                }
            };
            let result = update(
                classes,
                source,
                &item.attributes,
                now,
                &mut batch.working[at],
                *rule,
            );
            batch.index_values(at);
            Ok(result)
        }
    }
}

fn create(
    classes: &ClassSet,
    source: &str,
    item: &BatchItem,
    offered: Map<String, Value>,
    now: DateTime<Utc>,
    batch: &mut Batch,
    new_id: &mut impl FnMut() -> String,
) -> ItemResult {
    let mut errors = Vec::new();
    let name = match item.name.as_deref().map(super::item::validate_item_name) {
        Some(Ok(name)) => Some(name),
        Some(Err(crate::DomainError::Invalid(e))) => {
            errors.extend(e);
            None
        }
        Some(Err(_)) | None => {
            errors.push(FieldError::new("name", "is required to create an item"));
            None
        }
    };
    let attributes = match classes.validate_attributes(&item.class, &offered) {
        Ok(valid) => valid,
        Err(e) => {
            errors.extend(e);
            Map::new()
        }
    };
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        return rejected(Action::Invalid, errors);
    };
    let attribute_sources = attributes
        .keys()
        .map(|key| {
            (
                key.clone(),
                AttributeSource {
                    source: source.to_owned(),
                    updated_at: now,
                },
            )
        })
        .collect();
    let id = new_id();
    let changed_attributes = attributes.keys().cloned().collect();
    batch.push(Working {
        before: None,
        after: ConfigurationItem {
            id: id.clone(),
            name,
            class: item.class.clone(),
            status: item.status.unwrap_or(CiStatus::Operational),
            environment: item.environment,
            criticality: item.criticality,
            owner_group: None,
            attributes,
            attribute_sources,
            external_refs: Vec::new(),
            created_at: now,
            updated_at: now,
            version: 1,
        },
    });
    ItemResult {
        action: Action::Created,
        id: Some(id),
        matched_rule: None,
        changed_attributes,
        refused_attributes: Vec::new(),
        errors: Vec::new(),
    }
}

/// Where `source` ranks in `precedence` (0 is highest); unlisted sources rank last, together.
fn rank(precedence: &[String], source: &str) -> usize {
    precedence
        .iter()
        .position(|s| s == source)
        .unwrap_or(precedence.len())
}

fn update(
    classes: &ClassSet,
    source: &str,
    offered: &Map<String, Value>,
    now: DateTime<Utc>,
    entry: &mut Working,
    rule: usize,
) -> ItemResult {
    let current = &entry.after;
    let precedence = classes.source_precedence(&current.class);
    let mut candidate = current.attributes.clone();
    let mut refused = Vec::new();
    for (name, value) in offered {
        let existing = current.attributes.get(name);
        if existing == Some(value) || (value.is_null() && existing.is_none()) {
            continue;
        }
        if let Some(holder) = current.attribute_sources.get(name) {
            if rank(&precedence, source) > rank(&precedence, &holder.source) {
                refused.push(RefusedAttribute {
                    name: name.clone(),
                    held_by: holder.source.clone(),
                    offered: value.clone(),
                });
                continue;
            }
        }
        if value.is_null() {
            candidate.remove(name);
        } else {
            candidate.insert(name.clone(), value.clone());
        }
    }
    let valid = match classes.validate_attributes(&current.class, &candidate) {
        Ok(valid) => valid,
        Err(errors) => return rejected(Action::Invalid, errors),
    };
    let mut changed: Vec<String> = valid
        .iter()
        .filter(|(k, v)| current.attributes.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(
            current
                .attributes
                .keys()
                .filter(|k| !valid.contains_key(*k))
                .cloned(),
        )
        .collect();
    changed.sort();
    let action = if changed.is_empty() {
        Action::Unchanged
    } else {
        let after = &mut entry.after;
        for name in &changed {
            if valid.contains_key(name) {
                after.attribute_sources.insert(
                    name.clone(),
                    AttributeSource {
                        source: source.to_owned(),
                        updated_at: now,
                    },
                );
            } else {
                after.attribute_sources.remove(name);
            }
        }
        after.attributes = valid;
        after.updated_at = now;
        Action::Updated
    };
    ItemResult {
        action,
        id: Some(entry.after.id.clone()),
        matched_rule: Some(rule),
        changed_attributes: changed,
        refused_attributes: refused,
        errors: Vec::new(),
    }
}

/// The attribute-level difference of a write, `{"attributes.<name>": [old, new]}`, with the
/// sources of changed attributes, for the audit trail.
pub fn attribute_changes(
    before: Option<&ConfigurationItem>,
    after: &ConfigurationItem,
) -> BTreeMap<String, [Value; 2]> {
    let empty = Map::new();
    let old = before.map_or(&empty, |b| &b.attributes);
    let mut changes = BTreeMap::new();
    for name in old.keys().chain(after.attributes.keys()) {
        let (o, n) = (old.get(name), after.attributes.get(name));
        if o != n {
            changes.insert(
                format!("attributes.{name}"),
                [
                    o.cloned().unwrap_or(Value::Null),
                    n.cloned().unwrap_or(Value::Null),
                ],
            );
            let source = |item: Option<&ConfigurationItem>| {
                item.and_then(|i| i.attribute_sources.get(name))
                    .map_or(Value::Null, |s| Value::from(s.source.clone()))
            };
            changes.insert(
                format!("attribute_sources.{name}"),
                [source(before), source(Some(after))],
            );
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdb::class::tests::{attr, class};
    use crate::cmdb::class::{AttributeDef, AttributeType};
    use serde_json::json;
    use std::convert::Infallible;

    fn classes(precedence: &[&str]) -> ClassSet {
        let identifying = |name: &str| AttributeDef {
            identifying: true,
            ..attr(name, AttributeType::String)
        };
        let mut server = class(
            "server",
            None,
            vec![
                identifying("serial_number"),
                identifying("hostname"),
                identifying("dns_domain"),
                attr("os", AttributeType::String),
                attr("cpu_count", AttributeType::Integer),
            ],
        );
        server.identification_rules = vec![
            vec!["serial_number".into()],
            vec!["hostname".into(), "dns_domain".into()],
        ];
        server.source_precedence = precedence.iter().map(|s| s.to_string()).collect();
        ClassSet::new([server])
    }

    #[derive(Default)]
    struct Store(Vec<ConfigurationItem>);

    impl Inventory for Store {
        type Error = Infallible;
        fn matching(
            &mut self,
            classes: &[String],
            identifiers: &[(String, String)],
        ) -> Result<Vec<String>, Infallible> {
            Ok(self
                .0
                .iter()
                .filter(|i| classes.contains(&i.class) && holds(i, identifiers))
                .map(|i| i.id.clone())
                .collect())
        }
        fn item(&mut self, id: &str) -> Result<ConfigurationItem, Infallible> {
            Ok(self.0.iter().find(|i| i.id == id).unwrap().clone())
        }
    }

    impl Store {
        fn apply(&mut self, plan: &Plan) {
            for write in &plan.writes {
                self.0.retain(|i| i.id != write.after.id);
                self.0.push(write.after.clone());
            }
        }
    }

    fn batch(items: Value) -> Vec<BatchItem> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| BatchItem {
                class: i["class"].as_str().unwrap_or("server").into(),
                name: i["name"].as_str().map(Into::into),
                status: None,
                environment: None,
                criticality: None,
                attributes: i["attributes"].as_object().cloned().unwrap_or_default(),
            })
            .collect()
    }

    fn run(store: &mut Store, classes: &ClassSet, source: &str, items: &[BatchItem]) -> Plan {
        let mut n = store.0.len();
        let plan = super::plan(classes, source, items, Utc::now(), store, || {
            n += 1;
            format!("ci{n}")
        })
        .unwrap();
        store.apply(&plan);
        plan
    }

    fn actions(plan: &Plan) -> Vec<Action> {
        plan.results.iter().map(|r| r.action).collect()
    }

    #[test]
    fn a_second_identical_batch_changes_nothing() {
        let classes = classes(&[]);
        let mut store = Store::default();
        let items = batch(json!([
            {"name": "web01", "attributes": {"serial_number": "S1", "os": "linux"}},
            {"name": "web02", "attributes": {"hostname": "web02", "dns_domain": "x.org"}},
            // The same machine again, by its second rule: an update of the first creation.
            {"name": "web02", "attributes": {"hostname": "web02", "dns_domain": "x.org", "cpu_count": 4}},
        ]));
        let first = run(&mut store, &classes, "disco", &items);
        assert_eq!(
            actions(&first),
            [Action::Created, Action::Created, Action::Updated]
        );
        assert_eq!(first.results[2].id, first.results[1].id);
        assert_eq!(first.results[2].matched_rule, Some(1));
        assert_eq!(first.writes.len(), 2);
        let second = run(&mut store, &classes, "disco", &items);
        assert_eq!(actions(&second), [Action::Unchanged; 3]);
        assert!(second.writes.is_empty());
        assert_eq!(second.summary.unchanged, 3);
    }

    #[test]
    fn lower_priority_sources_are_refused_and_reported() {
        let classes = classes(&["cmdb_admin", "disco"]);
        let mut store = Store::default();
        run(
            &mut store,
            &classes,
            "cmdb_admin",
            &batch(json!([
                {"name": "db1", "attributes": {"serial_number": "S1", "os": "linux"}},
            ])),
        );
        let plan = run(
            &mut store,
            &classes,
            "disco",
            &batch(json!([
                {"attributes": {"serial_number": "S1", "os": "windows", "cpu_count": 8}},
            ])),
        );
        let result = &plan.results[0];
        assert_eq!(result.action, Action::Updated);
        assert_eq!(result.changed_attributes, ["cpu_count"]);
        assert_eq!(result.refused_attributes[0].name, "os");
        assert_eq!(result.refused_attributes[0].held_by, "cmdb_admin");
        let stored = &store.0[0];
        assert_eq!(stored.attributes["os"], "linux");
        assert_eq!(stored.attribute_sources["cpu_count"].source, "disco");
        // A higher-priority source overwrites.
        let plan = run(
            &mut store,
            &classes,
            "cmdb_admin",
            &batch(json!([
                {"attributes": {"serial_number": "S1", "cpu_count": 16}},
            ])),
        );
        assert_eq!(plan.results[0].changed_attributes, ["cpu_count"]);
    }

    #[test]
    fn ambiguous_and_invalid_items_are_reported_without_stopping_the_others() {
        let classes = classes(&[]);
        let mut store = Store::default();
        run(
            &mut store,
            &classes,
            "a",
            &batch(json!([
                {"name": "one", "attributes": {"serial_number": "S1"}},
                {"name": "two", "attributes": {"hostname": "h", "dns_domain": "d"}},
            ])),
        );
        let plan = run(
            &mut store,
            &classes,
            "a",
            &batch(json!([
                {"attributes": {"serial_number": "S1", "hostname": "h", "dns_domain": "d"}},
                {"attributes": {"os": "linux"}},
                {"name": "x", "attributes": {"serial_number": "S9", "cpu_count": "many"}},
                {"class": "nothing", "name": "y", "attributes": {}},
                {"attributes": {"serial_number": "S7"}},
                {"name": "ok", "attributes": {"serial_number": "S8"}},
            ])),
        );
        assert_eq!(
            actions(&plan),
            [
                Action::Conflict,
                Action::Invalid,
                Action::Invalid,
                Action::Invalid,
                Action::Invalid,
                Action::Created
            ]
        );
        assert_eq!(plan.results[2].errors[0].field, "attributes.cpu_count");
        assert_eq!(plan.results[4].errors[0].field, "name");
        assert_eq!(plan.summary.invalid, 4);
        assert_eq!(plan.summary.conflict, 1);
    }

    #[test]
    fn items_of_one_batch_match_each_other_by_their_values_as_they_are_now() {
        let classes = classes(&[]);
        let mut store = Store::default();
        run(
            &mut store,
            &classes,
            "a",
            &batch(
                json!([{"name": "old", "attributes": {"serial_number": "S1", "hostname": "h1", "dns_domain": "d"}}]),
            ),
        );
        let plan = run(
            &mut store,
            &classes,
            "a",
            &batch(json!([
                // The stored item, renamed by its serial number: h1 is free afterwards.
                {"attributes": {"serial_number": "S1", "hostname": "h2", "dns_domain": "d"}},
                // h1 matches nothing now, so it is a new item; h2 is the stored one.
                {"name": "new", "attributes": {"hostname": "h1", "dns_domain": "d"}},
                {"attributes": {"hostname": "h2", "dns_domain": "d", "os": "linux"}},
                // Created in this batch, found again by its value.
                {"attributes": {"hostname": "h1", "dns_domain": "d", "cpu_count": 2}},
                // Both rules, pointing at two different items of the batch.
                {"attributes": {"serial_number": "S1", "hostname": "h1", "dns_domain": "d"}},
            ])),
        );
        assert_eq!(
            actions(&plan),
            [
                Action::Updated,
                Action::Created,
                Action::Updated,
                Action::Updated,
                Action::Conflict
            ]
        );
        let ids: Vec<Option<&str>> = plan.results.iter().map(|r| r.id.as_deref()).collect();
        assert_eq!(ids[0], Some("ci1"));
        assert_eq!(ids[2], Some("ci1"));
        assert_eq!(ids[3], ids[1]);
        assert_ne!(ids[1], Some("ci1"));
    }

    #[test]
    fn audit_changes_carry_old_new_and_source() {
        let classes = classes(&[]);
        let mut store = Store::default();
        let plan = run(
            &mut store,
            &classes,
            "disco",
            &batch(json!([
                {"name": "a", "attributes": {"serial_number": "S1"}},
            ])),
        );
        let changes = attribute_changes(None, &plan.writes[0].after);
        assert_eq!(
            changes["attributes.serial_number"],
            [Value::Null, json!("S1")]
        );
        assert_eq!(
            changes["attribute_sources.serial_number"],
            [Value::Null, json!("disco")]
        );
    }
}
