//! Impact analysis: a breadth-first walk over relationships from one item, level by level.
//!
//! The walk is pure and generic over how items are named: it asks `next_level` for the
//! relationships leaving a frontier, a batch of items at a time, and never sees a database.
//! The repository answers each batch with one query (ids as strings), or an in-memory
//! [`super::graph::Graph`] answers it (ids as compact integers). Once the answer is full it
//! asks for nothing more, so a hub does not make it read the relationships of a whole level
//! it will not report. Every item is reached once, at its shortest distance, so cycles end
//! the walk instead of looping.

use std::collections::HashMap;
use std::hash::Hash;

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

/// Which of an item's relationships a list shows, as the item reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RelationshipSide {
    /// The relationships it is the source of.
    Outgoing,
    /// The relationships it is the target of.
    Incoming,
    /// Both (the default).
    Both,
}

impl std::str::FromStr for RelationshipSide {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "outgoing" => Ok(Self::Outgoing),
            "incoming" => Ok(Self::Incoming),
            "both" => Ok(Self::Both),
            _ => Err("must be outgoing, incoming or both".to_owned()),
        }
    }
}

pub const MAX_DEPTH: u32 = 10;
pub const DEFAULT_DEPTH: u32 = 5;
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;
/// The most frontier items whose relationships are asked for at once.
pub const BATCH: usize = 500;

/// What the answer shows of an item the walk reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub class: String,
    pub status: CiStatus,
    pub criticality: Option<Criticality>,
    /// Its class is `business_service` or below it.
    pub is_service: bool,
}

/// One step of the walk: from an item of the frontier, over a relationship, to another item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<N> {
    pub from: N,
    pub rel_type: RelationshipType,
    pub to: N,
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

/// An item a walk reached, in the order reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Reached<N> {
    pub node: N,
    /// The index in [`Walk::reached`] of the item before it on its path; `None`: the start.
    pub parent: Option<usize>,
    pub distance: u32,
    pub via: RelationshipType,
}

/// What a walk found, before it is described as an [`Impact`].
#[derive(Debug, Clone, PartialEq)]
pub struct Walk<N> {
    pub start: N,
    pub reached: Vec<Reached<N>>,
    pub truncated: bool,
    pub depth_reached: u32,
}

/// Walks from `start` up to `depth` steps, stopping after `limit` items.
///
/// `next_level` gets up to [`BATCH`] items of one level's frontier and returns the steps
/// leaving them, in any order: the walk orders them by `(to, from, type)`, so that the answer
/// does not depend on the order rows came back in (the order of `N` must be that of the ids).
pub fn walk<N, E>(
    start: N,
    depth: u32,
    limit: usize,
    mut next_level: impl FnMut(&[N]) -> Result<Vec<Step<N>>, E>,
) -> Result<Walk<N>, E>
where
    N: Clone + Eq + Hash + Ord,
{
    // Every item seen, with its index in `reached` (`None` for the start).
    let mut seen: HashMap<N, Option<usize>> = HashMap::from([(start.clone(), None)]);
    let mut reached: Vec<Reached<N>> = Vec::new();
    let mut frontier = vec![start.clone()];
    let mut truncated = false;
    let mut depth_reached = 0;
    'levels: for distance in 1..=depth {
        if frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for batch in frontier.chunks(BATCH) {
            let mut steps = next_level(batch)?;
            steps.sort_by(|a, b| (&a.to, &a.from, a.rel_type).cmp(&(&b.to, &b.from, b.rel_type)));
            for step in steps {
                if seen.contains_key(&step.to) {
                    continue;
                }
                if reached.len() >= limit {
                    truncated = true;
                    break 'levels;
                }
                // The frontier holds only seen items.
                let parent = seen.get(&step.from).copied().flatten();
                seen.insert(step.to.clone(), Some(reached.len()));
                depth_reached = distance;
                next.push(step.to.clone());
                reached.push(Reached {
                    node: step.to,
                    parent,
                    distance,
                    via: step.rel_type,
                });
            }
        }
        frontier = next;
    }
    Ok(Walk {
        start,
        reached,
        truncated,
        depth_reached,
    })
}

/// The items a walk reached, by id, each with the item before it on one shortest path: what
/// change scheduling asks of a walk. Paths are spelled out only for the items asked about, so
/// a walk over thousands of items costs a string per item, not a described item and its path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Walked {
    start: String,
    /// Reached items in the order reached: id, the index of the item before it (`None`: the
    /// start), distance.
    reached: Vec<(String, Option<usize>, u32)>,
    index: HashMap<String, usize>,
}

impl Walked {
    /// A walk from `start` over `steps` of `(item, item before it)`, in the order reached (each
    /// item before appears as an item first, or is the start): for tests and for callers that
    /// build a walk themselves.
    pub fn from_steps(start: &str, steps: &[(&str, &str)]) -> Walked {
        let mut walked = Walked {
            start: start.to_owned(),
            ..Walked::default()
        };
        for (item, before) in steps {
            let parent = walked.index.get(*before).copied();
            let distance = parent.map_or(0, |p| walked.reached[p].2) + 1;
            walked.push((*item).to_owned(), parent, distance);
        }
        walked
    }

    fn push(&mut self, id: String, parent: Option<usize>, distance: u32) {
        self.index.insert(id.clone(), self.reached.len());
        self.reached.push((id, parent, distance));
    }

    /// The ids reached, in the order reached.
    pub fn into_ids(self) -> impl Iterator<Item = String> {
        self.reached.into_iter().map(|(id, ..)| id)
    }

    /// The number of relationships from the start to `id`, if the walk reached it.
    pub fn distance(&self, id: &str) -> Option<u32> {
        self.index.get(id).map(|&at| self.reached[at].2)
    }

    /// One shortest path from the start to `id`, both included, if the walk reached it.
    pub fn path_to(&self, id: &str) -> Option<Vec<String>> {
        let mut at = Some(*self.index.get(id)?);
        let mut path = Vec::new();
        while let Some(index) = at {
            let (id, parent, _) = &self.reached[index];
            path.push(id.clone());
            at = *parent;
        }
        path.push(self.start.clone());
        path.reverse();
        Some(path)
    }
}

impl<N> Walk<N> {
    /// What the walk reached, by id (see [`Walked`]); `exists` leaves out an item gone since,
    /// with what was reached through it, as [`Walk::describe`] does.
    pub fn walked(self, id: impl Fn(&N) -> String, exists: impl Fn(&N) -> bool) -> Walked {
        let mut walked = Walked {
            start: id(&self.start),
            ..Walked::default()
        };
        // The index in `walked` of each reached item kept, `None` for one left out.
        let mut kept: Vec<Option<usize>> = Vec::with_capacity(self.reached.len());
        for reached in &self.reached {
            let parent = match reached.parent {
                None => Some(None),
                Some(parent) => kept[parent].map(Some),
            };
            match parent.filter(|_| exists(&reached.node)) {
                Some(parent) => {
                    kept.push(Some(walked.reached.len()));
                    walked.push(id(&reached.node), parent, reached.distance);
                }
                None => kept.push(None),
            }
        }
        walked
    }

    /// The answer: `id` names an item, `describe` tells what is shown of a reached one (an
    /// item it cannot describe, gone since, is left out with what was reached through it).
    pub fn describe(
        self,
        id: impl Fn(&N) -> String,
        describe: impl Fn(&N) -> Option<NodeInfo>,
    ) -> Impact {
        let start = id(&self.start);
        // The id of each reached item that is shown, `None` for one left out.
        let mut shown: Vec<Option<String>> = Vec::with_capacity(self.reached.len());
        let mut items = Vec::with_capacity(self.reached.len());
        let mut services = Vec::new();
        for reached in &self.reached {
            let parent_shown = reached.parent.is_none_or(|parent| shown[parent].is_some());
            let info = describe(&reached.node).filter(|_| parent_shown);
            let Some(info) = info else {
                shown.push(None);
                continue;
            };
            let item_id = id(&reached.node);
            let mut path = Vec::with_capacity(reached.distance as usize + 1);
            path.push(item_id.clone());
            let mut at = reached.parent;
            while let Some(parent) = at {
                path.extend(shown[parent].clone());
                at = self.reached[parent].parent;
            }
            path.push(start.clone());
            path.reverse();
            shown.push(Some(item_id.clone()));
            if info.is_service {
                services.push(items.len());
            }
            items.push(ImpactedItem {
                id: item_id,
                name: info.name,
                class: info.class,
                status: info.status,
                criticality: info.criticality,
                distance: reached.distance,
                via: reached.via,
                path,
            });
        }
        let mut business_services: Vec<ImpactedItem> =
            services.into_iter().map(|i| items[i].clone()).collect();
        // Criticality orders critical first; items without one come last.
        business_services
            .sort_by_key(|item| (item.criticality.is_none(), item.criticality, item.distance));
        Impact {
            depth_reached: items.iter().map(|i| i.distance).max().unwrap_or(0),
            items,
            business_services,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::convert::Infallible;

    fn info(id: &str) -> NodeInfo {
        NodeInfo {
            name: id.to_string(),
            class: if id.starts_with("svc") {
                "business_service"
            } else {
                "server"
            }
            .into(),
            status: CiStatus::Operational,
            criticality: id.starts_with("svc_crit").then_some(Criticality::Critical),
            is_service: id.starts_with("svc"),
        }
    }

    /// A graph as (source, target) pairs of `depends_on`; nodes named `svc*` are business
    /// services. Walked through `next_level` callbacks over strings: the answer and the
    /// number of batches asked for.
    pub(crate) fn walk_edges(
        edges: &[(&str, &str)],
        start: &str,
        depth: u32,
        limit: usize,
        dir: Direction,
    ) -> (Impact, usize) {
        let mut queries = 0;
        let found = super::walk::<String, Infallible>(start.to_owned(), depth, limit, |frontier| {
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
                })
                .collect())
        })
        .unwrap();
        (
            found.describe(|id| id.clone(), |id| Some(info(id))),
            queries,
        )
    }

    /// The same graph walked in memory (`super::super::graph`): it must answer the same.
    fn walk(
        edges: &[(&str, &str)],
        start: &str,
        depth: u32,
        limit: usize,
        dir: Direction,
    ) -> (Impact, usize) {
        let (by_levels, queries) = walk_edges(edges, start, depth, limit, dir);
        let graph = super::super::graph::tests::graph_of(edges, start);
        let in_memory = graph
            .impact(start, dir, depth, &[], limit)
            .expect("the start is in the graph");
        assert_eq!(in_memory, by_levels, "the in-memory walk answers the same");
        (by_levels, queries)
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
