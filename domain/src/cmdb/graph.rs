//! An in-memory copy of the relationship graph, for impact walks that read no database.
//!
//! Items are numbered in the order of their ids, so that a walk over the numbers orders its
//! steps exactly as a walk over the ids does and gives the same answer. Relationships are kept
//! both ways as compressed adjacency lists (an offset per item into one array of neighbours):
//! about 20 bytes per relationship and 100 per item, where rows as strings took ten times that.

use std::convert::Infallible;

use super::impact::{walk, Direction, Impact, NodeInfo, Step, Walk, Walked};
use super::item::{CiStatus, Criticality, RelationshipType};

/// An item as the graph keeps it, as read from storage.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphItem {
    pub id: String,
    pub name: String,
    pub class: String,
    pub status: CiStatus,
    pub criticality: Option<Criticality>,
}

/// The neighbours of every item one way: those of item `n` are
/// `ends[offsets[n]..offsets[n + 1]]`, reached over `types` of the same positions.
#[derive(Debug, Default)]
struct Adjacency {
    offsets: Vec<u32>,
    ends: Vec<u32>,
    types: Vec<RelationshipType>,
}

impl Adjacency {
    /// From `(from, type, to)` triples over `items` items (a counting sort by `from`).
    fn of(items: usize, edges: &[(u32, RelationshipType, u32)]) -> Self {
        let mut offsets = vec![0u32; items + 1];
        for (from, _, _) in edges {
            offsets[*from as usize + 1] += 1;
        }
        for n in 0..items {
            offsets[n + 1] += offsets[n];
        }
        let mut next: Vec<u32> = offsets[..items].to_vec();
        let mut ends = vec![0u32; edges.len()];
        let mut types = vec![RelationshipType::DependsOn; edges.len()];
        for (from, rel_type, to) in edges {
            let at = next[*from as usize] as usize;
            next[*from as usize] += 1;
            ends[at] = *to;
            types[at] = *rel_type;
        }
        Self {
            offsets,
            ends,
            types,
        }
    }

    fn of_item(&self, n: u32) -> impl Iterator<Item = (RelationshipType, u32)> + '_ {
        let range = self.offsets[n as usize] as usize..self.offsets[n as usize + 1] as usize;
        self.types[range.clone()]
            .iter()
            .copied()
            .zip(self.ends[range].iter().copied())
    }
}

/// Collects a graph's items, one by one and in any order (storage reads them in id order),
/// without holding them as rows: each goes straight into the graph's own columns.
pub struct GraphItems {
    graph: Graph,
    /// Whether every item so far came after the one before in id order.
    in_order: bool,
}

impl GraphItems {
    pub fn push(&mut self, item: GraphItem) {
        let graph = &mut self.graph;
        let class = match graph.classes.iter().position(|(c, _)| *c == item.class) {
            Some(at) => at,
            None => {
                graph.classes.push((item.class, false));
                graph.classes.len() - 1
            }
        };
        self.in_order &= graph.ids.last().is_none_or(|last| **last < *item.id);
        graph.ids.push(item.id.into_boxed_str());
        graph.names.push(item.name.into_boxed_str());
        graph
            .class_of
            .push(u16::try_from(class).unwrap_or(u16::MAX));
        graph.status.push(item.status);
        graph.criticality.push(item.criticality);
    }

    /// Ends the items (numbered in id order, each id kept once); `relationships` is how many
    /// will follow, `is_service` tells which classes are business services.
    pub fn relationships(
        mut self,
        relationships: usize,
        is_service: impl Fn(&str) -> bool,
    ) -> GraphBuilder {
        if !self.in_order {
            self.graph.sort_by_id();
        }
        for (class, service) in &mut self.graph.classes {
            *service = is_service(class);
        }
        GraphBuilder {
            graph: self.graph,
            edges: Vec::with_capacity(relationships),
        }
    }
}

/// Collects a graph's relationships, once its items are in.
pub struct GraphBuilder {
    graph: Graph,
    /// `(source, type, target)` by item number.
    edges: Vec<(u32, RelationshipType, u32)>,
}

impl GraphBuilder {
    /// Relates two items by id; false (and nothing added) when either is not in the graph.
    pub fn relate(&mut self, source: &str, rel_type: RelationshipType, target: &str) -> bool {
        match (self.graph.number(source), self.graph.number(target)) {
            (Some(source), Some(target)) => {
                self.edges.push((source, rel_type, target));
                true
            }
            _ => false,
        }
    }

    pub fn finish(mut self) -> Graph {
        let items = self.graph.ids.len();
        self.graph.down = Adjacency::of(items, &self.edges);
        for edge in &mut self.edges {
            std::mem::swap(&mut edge.0, &mut edge.2);
        }
        self.graph.up = Adjacency::of(items, &self.edges);
        self.graph
    }
}

/// Every item and relationship, as compact as a walk allows.
#[derive(Debug, Default)]
pub struct Graph {
    /// Sorted: an item's number is its position.
    ids: Vec<Box<str>>,
    names: Vec<Box<str>>,
    class_of: Vec<u16>,
    /// Each class named once, with whether it is a business service.
    classes: Vec<(String, bool)>,
    status: Vec<CiStatus>,
    criticality: Vec<Option<Criticality>>,
    /// From sources to targets.
    down: Adjacency,
    /// From targets to sources.
    up: Adjacency,
}

impl Graph {
    /// Starts a graph of about `items` items, added with [`GraphItems::push`].
    pub fn builder(items: usize) -> GraphItems {
        GraphItems {
            graph: Graph {
                ids: Vec::with_capacity(items),
                names: Vec::with_capacity(items),
                class_of: Vec::with_capacity(items),
                status: Vec::with_capacity(items),
                criticality: Vec::with_capacity(items),
                ..Graph::default()
            },
            in_order: true,
        }
    }

    /// Puts the items in id order, in place, keeping the first of each id.
    fn sort_by_id(&mut self) {
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_by(|a, b| self.ids[*a].cmp(&self.ids[*b]));
        // Cycle by cycle: position `at` takes the item at `order[at]`.
        let mut placed = vec![false; order.len()];
        for start in 0..order.len() {
            let mut at = start;
            while !placed[at] {
                placed[at] = true;
                let from = order[at];
                if from == start {
                    break;
                }
                self.swap_items(at, from);
                at = from;
            }
        }
        let mut kept = 0;
        for n in 0..self.ids.len() {
            if kept == 0 || self.ids[n] != self.ids[kept - 1] {
                self.swap_items(kept, n);
                kept += 1;
            }
        }
        self.ids.truncate(kept);
        self.names.truncate(kept);
        self.class_of.truncate(kept);
        self.status.truncate(kept);
        self.criticality.truncate(kept);
    }

    fn swap_items(&mut self, a: usize, b: usize) {
        self.ids.swap(a, b);
        self.names.swap(a, b);
        self.class_of.swap(a, b);
        self.status.swap(a, b);
        self.criticality.swap(a, b);
    }

    fn number(&self, id: &str) -> Option<u32> {
        self.ids
            .binary_search_by(|probe| (**probe).cmp(id))
            .ok()
            .map(|n| n as u32)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.number(id).is_some()
    }

    pub fn items(&self) -> usize {
        self.ids.len()
    }

    pub fn relationships(&self) -> usize {
        self.down.ends.len()
    }

    fn info(&self, n: u32) -> Option<NodeInfo> {
        let n = n as usize;
        let (class, is_service) = self.classes.get(usize::from(self.class_of[n]))?;
        Some(NodeInfo {
            name: self.names[n].to_string(),
            class: class.clone(),
            status: self.status[n],
            criticality: self.criticality[n],
            is_service: *is_service,
        })
    }

    /// The impact of `start` (see [`super::impact::walk`]), following only `types` when
    /// some are given; `None` when `start` is not in the graph.
    pub fn impact(
        &self,
        start: &str,
        direction: Direction,
        depth: u32,
        types: &[RelationshipType],
        limit: usize,
    ) -> Option<Impact> {
        let found = self.walk(start, direction, depth, types, limit)?;
        Some(found.describe(|n| self.ids[*n as usize].to_string(), |n| self.info(*n)))
    }

    /// What a walk from `start` reaches, by id, without describing it (see [`Walked`]);
    /// `None` when `start` is not in the graph.
    pub fn reach(
        &self,
        start: &str,
        direction: Direction,
        depth: u32,
        limit: usize,
    ) -> Option<Walked> {
        let found = self.walk(start, direction, depth, &[], limit)?;
        Some(found.walked(|n| self.ids[*n as usize].to_string(), |_| true))
    }

    fn walk(
        &self,
        start: &str,
        direction: Direction,
        depth: u32,
        types: &[RelationshipType],
        limit: usize,
    ) -> Option<Walk<u32>> {
        let start = self.number(start)?;
        let adjacency = match direction {
            Direction::Downstream => &self.down,
            Direction::Upstream => &self.up,
        };
        let found = walk::<u32, Infallible>(start, depth, limit, |frontier| {
            let mut steps = Vec::new();
            for &from in frontier {
                for (rel_type, to) in adjacency.of_item(from) {
                    if types.is_empty() || types.contains(&rel_type) {
                        steps.push(Step { from, rel_type, to });
                    }
                }
            }
            Ok(steps)
        });
        match found {
            Ok(found) => Some(found),
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn builder_of(items: Vec<GraphItem>, is_service: impl Fn(&str) -> bool) -> GraphBuilder {
        let mut graph = Graph::builder(items.len());
        for item in items {
            graph.push(item);
        }
        graph.relationships(0, is_service)
    }

    /// A graph of `depends_on` pairs, named as `impact`'s tests name them (`svc*` are
    /// business services, `svc_crit*` critical); `start` is in it even when unrelated.
    pub(crate) fn graph_of(edges: &[(&str, &str)], start: &str) -> Graph {
        let mut names: Vec<&str> = edges.iter().flat_map(|(s, t)| [*s, *t]).collect();
        names.push(start);
        let items = names
            .into_iter()
            .map(|id| GraphItem {
                id: id.to_owned(),
                name: id.to_owned(),
                class: if id.starts_with("svc") {
                    "business_service"
                } else {
                    "server"
                }
                .into(),
                status: CiStatus::Operational,
                criticality: id.starts_with("svc_crit").then_some(Criticality::Critical),
            })
            .collect();
        let mut builder = builder_of(items, |class| class == "business_service");
        for (source, target) in edges {
            assert!(builder.relate(source, RelationshipType::DependsOn, target));
        }
        builder.finish()
    }

    #[test]
    fn items_are_numbered_in_id_order_and_kept_once() {
        let graph = graph_of(&[("b", "a"), ("c", "a"), ("a", "b")], "z");
        assert_eq!(graph.items(), 4);
        assert_eq!(graph.relationships(), 3);
        assert_eq!(graph.number("a"), Some(0));
        assert_eq!(graph.number("z"), Some(3));
        assert!(!graph.contains("y"));
    }

    #[test]
    fn relationships_to_unknown_items_are_refused() {
        let mut builder = builder_of(
            vec![GraphItem {
                id: "a".into(),
                name: "a".into(),
                class: "server".into(),
                status: CiStatus::Operational,
                criticality: None,
            }],
            |_| false,
        );
        assert!(!builder.relate("a", RelationshipType::Uses, "gone"));
        assert_eq!(builder.finish().relationships(), 0);
    }

    #[test]
    fn walks_follow_only_the_types_asked_for() {
        // Out of id order: each item keeps its own name, class and status when sorted.
        let items = ["vm", "app", "db"]
            .iter()
            .map(|id| GraphItem {
                id: (*id).into(),
                name: format!("{id}-name"),
                class: "server".into(),
                status: CiStatus::Installed,
                criticality: Some(Criticality::Low),
            })
            .collect();
        let mut builder = builder_of(items, |_| false);
        builder.relate("app", RelationshipType::DependsOn, "db");
        builder.relate("app", RelationshipType::RunsOn, "vm");
        let graph = builder.finish();
        let only_runs = graph
            .impact(
                "app",
                Direction::Downstream,
                3,
                &[RelationshipType::RunsOn],
                10,
            )
            .unwrap();
        assert_eq!(only_runs.items.len(), 1);
        let vm = &only_runs.items[0];
        assert_eq!(
            (vm.id.as_str(), vm.name.as_str(), vm.via, vm.status),
            (
                "vm",
                "vm-name",
                RelationshipType::RunsOn,
                CiStatus::Installed
            )
        );
        assert_eq!(vm.path, ["app", "vm"]);
        let up = graph.impact("db", Direction::Upstream, 3, &[], 10).unwrap();
        assert_eq!(up.items[0].id, "app");
        assert!(graph
            .impact("nowhere", Direction::Upstream, 3, &[], 10)
            .is_none());
    }
    #[test]
    fn a_reach_holds_what_the_impact_shows_without_describing_it() {
        // A diamond with a cycle back and a longer way round.
        let edges = [
            ("svc", "app"),
            ("app", "db"),
            ("app", "cache"),
            ("cache", "db"),
            ("db", "disk"),
            ("disk", "app"),
            ("svc_crit", "disk"),
        ];
        let graph = graph_of(&edges, "svc");
        for direction in [Direction::Downstream, Direction::Upstream] {
            for start in ["svc", "app", "db", "disk"] {
                for limit in [1, 2, 10] {
                    let impact = graph.impact(start, direction, 5, &[], limit).unwrap();
                    let reach = graph.reach(start, direction, 5, limit).unwrap();
                    for item in &impact.items {
                        assert_eq!(reach.path_to(&item.id).as_ref(), Some(&item.path));
                        assert_eq!(reach.distance(&item.id), Some(item.distance));
                    }
                    let reached: Vec<String> = reach.into_ids().collect();
                    let shown: Vec<String> = impact.items.iter().map(|i| i.id.clone()).collect();
                    assert_eq!(reached, shown, "{start} {direction:?} limit {limit}");
                }
            }
        }
        let reach = graph.reach("db", Direction::Upstream, 5, 10).unwrap();
        assert_eq!(reach.path_to("nowhere"), None);
        assert_eq!(
            reach.distance("db"),
            None,
            "the start is not among the reached"
        );
    }
}
