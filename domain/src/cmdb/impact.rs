//! Impact analysis: a breadth-first walk over relationships from one item, level by level.
//!
//! The walk is pure: it asks `next_level` for the relationships of a frontier, a batch of
//! items at a time (the repository answers each batch with one query), and never sees a
//! database. Once the answer is full it asks for nothing more, so a hub does not make it read
//! the relationships of a whole level it will not report. Every item
//! is reached once, at its shortest distance, so cycles end the walk instead of looping.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::item::{CiStatus, Criticality, RelationshipType};

/// Which way the walk follows relationships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// To the items that rely on this one (sources of relationships that target it): who
    /// suffers when it fails.
    Upstream,
    /// To the items this one relies on (targets of its relationships).
    Downstream,
}

pub const MAX_DEPTH: u32 = 10;
pub const DEFAULT_DEPTH: u32 = 5;
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;
/// The most frontier items whose relationships are asked for at once.
pub const BATCH: usize = 500;

/// What the walk needs to know of an item it reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub class: String,
    pub status: CiStatus,
    pub criticality: Option<Criticality>,
}

/// One step of the walk: from an item of the frontier, over a relationship, to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub from: String,
    pub rel_type: RelationshipType,
    pub to: String,
    pub node: NodeInfo,
}

/// An item the walk reached.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ImpactedItem {
    pub id: String,
    pub name: String,
    pub class: String,
    pub status: CiStatus,
    pub criticality: Option<Criticality>,
    /// The number of relationships between the start and this item.
    pub distance: u32,
    /// The relationship type of the last step.
    pub via: RelationshipType,
    /// One shortest path: item ids from the start to this item, both included.
    pub path: Vec<String>,
}

/// The answer of a walk.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = ImpactAnalysis)]
pub struct Impact {
    pub items: Vec<ImpactedItem>,
    /// The reached items of a business service class, most critical first.
    pub business_services: Vec<ImpactedItem>,
    /// True when `limit` items were reached and more would have followed.
    pub truncated: bool,
    /// The greatest distance reached.
    pub depth_reached: u32,
}

/// Walks from `start` up to `depth` steps, stopping after `limit` items.
///
/// `next_level` gets the ids of up to [`BATCH`] items of one level's frontier and returns the
/// steps leaving them;
/// `is_service` tells which classes are business services.
pub fn traverse<E>(
    start: &str,
    depth: u32,
    limit: usize,
    is_service: impl Fn(&str) -> bool,
    mut next_level: impl FnMut(&[String]) -> Result<Vec<Step>, E>,
) -> Result<Impact, E> {
    let mut seen: HashSet<String> = HashSet::from([start.to_owned()]);
    // id -> (parent id, item) for every reached item.
    let mut parents: HashMap<String, String> = HashMap::new();
    let mut items: Vec<ImpactedItem> = Vec::new();
    let mut frontier = vec![start.to_owned()];
    let mut truncated = false;
    let mut depth_reached = 0;
    'levels: for distance in 1..=depth {
        if frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for batch in frontier.chunks(BATCH) {
            let mut steps = next_level(batch)?;
            // The same answer whatever order the database returned the rows in.
            steps.sort_by(|a, b| (&a.to, &a.from, a.rel_type).cmp(&(&b.to, &b.from, b.rel_type)));
            for step in steps {
                if seen.contains(&step.to) {
                    continue;
                }
                if items.len() >= limit {
                    truncated = true;
                    break 'levels;
                }
                seen.insert(step.to.clone());
                parents.insert(step.to.clone(), step.from.clone());
                let mut path = vec![step.to.clone()];
                let mut at = &step.from;
                while let Some(parent) = parents.get(at) {
                    path.push(at.clone());
                    at = parent;
                }
                path.push(start.to_owned());
                path.reverse();
                depth_reached = distance;
                items.push(ImpactedItem {
                    id: step.to.clone(),
                    name: step.node.name,
                    class: step.node.class,
                    status: step.node.status,
                    criticality: step.node.criticality,
                    distance,
                    via: step.rel_type,
                    path,
                });
                next.push(step.to);
            }
        }
        frontier = next;
    }
    let mut business_services: Vec<ImpactedItem> = items
        .iter()
        .filter(|item| is_service(&item.class))
        .cloned()
        .collect();
    // Criticality orders critical first; items without one come last.
    business_services
        .sort_by_key(|item| (item.criticality.is_none(), item.criticality, item.distance));
    Ok(Impact {
        items,
        business_services,
        truncated,
        depth_reached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A graph as (source, target) pairs; nodes named `svc*` are business services.
    fn walk(
        edges: &[(&str, &str)],
        start: &str,
        depth: u32,
        limit: usize,
        dir: Direction,
    ) -> (Impact, usize) {
        let mut queries = 0;
        let impact = traverse::<Infallible>(
            start,
            depth,
            limit,
            |class| class == "business_service",
            |frontier| {
                queries += 1;
                Ok(edges
                    .iter()
                    .filter_map(|(s, t)| match dir {
                        Direction::Downstream if frontier.iter().any(|f| f == s) => Some((s, t)),
                        Direction::Upstream if frontier.iter().any(|f| f == t) => Some((t, s)),
                        _ => None,
                    })
                    .map(|(from, to)| Step {
                        from: from.to_string(),
                        rel_type: RelationshipType::DependsOn,
                        to: to.to_string(),
                        node: NodeInfo {
                            name: to.to_string(),
                            class: if to.starts_with("svc") {
                                "business_service"
                            } else {
                                "server"
                            }
                            .into(),
                            status: CiStatus::Operational,
                            criticality: to
                                .starts_with("svc_crit")
                                .then_some(Criticality::Critical),
                        },
                    })
                    .collect())
            },
        )
        .unwrap();
        (impact, queries)
    }

    fn distances(impact: &Impact) -> Vec<(String, u32)> {
        impact
            .items
            .iter()
            .map(|i| (i.id.clone(), i.distance))
            .collect()
    }

    #[test]
    fn cycles_end_the_walk() {
        let edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")];
        let (impact, queries) = walk(&edges, "a", 10, 100, Direction::Downstream);
        assert_eq!(
            distances(&impact),
            [("b".into(), 1), ("c".into(), 2), ("d".into(), 3)]
        );
        assert_eq!(impact.items[2].path, ["a", "b", "c", "d"]);
        assert!(!impact.truncated);
        // One query per level, and the walk stops when a level adds nothing.
        assert_eq!(queries, 4);
    }

    #[test]
    fn the_depth_bound_is_honoured() {
        let edges = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")];
        let (impact, queries) = walk(&edges, "a", 2, 100, Direction::Downstream);
        assert_eq!(distances(&impact), [("b".into(), 1), ("c".into(), 2)]);
        assert_eq!(impact.depth_reached, 2);
        assert_eq!(queries, 2);
    }

    #[test]
    fn diamonds_reach_each_item_once_at_its_shortest_distance() {
        // svc depends on app1 and app2, both on db; db on disk; svc also directly on disk.
        let edges = [
            ("svc", "app1"),
            ("svc", "app2"),
            ("app1", "db"),
            ("app2", "db"),
            ("db", "disk"),
            ("svc", "disk"),
        ];
        let (impact, _) = walk(&edges, "svc", 10, 100, Direction::Downstream);
        assert_eq!(
            distances(&impact),
            [
                ("app1".into(), 1),
                ("app2".into(), 1),
                ("disk".into(), 1),
                ("db".into(), 2)
            ]
        );
        assert_eq!(impact.items[3].path, ["svc", "app1", "db"]);
    }

    #[test]
    fn upstream_walks_find_business_services_most_critical_first() {
        let edges = [
            ("svc_low", "app"),
            ("svc_crit", "app2"),
            ("app", "srv"),
            ("app2", "srv"),
            ("srv", "svc_low"),
        ];
        let (impact, _) = walk(&edges, "srv", 10, 100, Direction::Upstream);
        let services: Vec<_> = impact
            .business_services
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(services, ["svc_crit", "svc_low"]);
        let crit = &impact.business_services[0];
        assert_eq!(crit.path, ["srv", "app2", "svc_crit"]);
        assert_eq!(crit.criticality, Some(Criticality::Critical));
    }

    #[test]
    fn the_answer_is_capped_and_says_so() {
        let edges: Vec<(String, String)> = (0..50)
            .map(|i| ("hub".to_owned(), format!("n{i:02}")))
            .collect();
        let borrowed: Vec<(&str, &str)> = edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (impact, _) = walk(&borrowed, "hub", 3, 10, Direction::Downstream);
        assert_eq!(impact.items.len(), 10);
        assert!(impact.truncated);
        let (exact, _) = walk(&borrowed, "hub", 3, 50, Direction::Downstream);
        assert_eq!(exact.items.len(), 50);
        assert!(!exact.truncated);
    }

    #[test]
    fn a_full_answer_stops_reading_the_level() {
        let mut edges: Vec<(String, String)> = Vec::new();
        for i in 0..1200 {
            edges.push(("hub".into(), format!("c{i:04}")));
            edges.push((format!("c{i:04}"), format!("g{i:04}")));
        }
        let borrowed: Vec<(&str, &str)> = edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (impact, queries) = walk(&borrowed, "hub", 5, 1300, Direction::Downstream);
        assert_eq!(impact.items.len(), 1300);
        assert!(impact.truncated);
        // The hub's level, then the first batch of the next: not its three other batches.
        assert_eq!(queries, 2);
    }

    #[test]
    fn a_lone_item_affects_nothing() {
        let (impact, _) = walk(&[], "a", 10, 10, Direction::Upstream);
        assert!(impact.items.is_empty() && impact.business_services.is_empty());
        assert_eq!(impact.depth_reached, 0);
    }
}
