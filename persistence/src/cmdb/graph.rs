//! The CMDB's graph kept in memory for impact walks, and how a node knows it is current.
//!
//! Every transaction that changes the graph (an item created, or renamed, reclassed, given
//! another status or criticality; a relationship added or removed) advances the `cmdb_graph`
//! counter before it commits (`journal::graph_changed`). A walk reads that counter (one read
//! by key) and uses the copy only when the copy was built at the same value; otherwise it
//! walks the database level by level, as always correct, and a thread of its own builds a new
//! copy. So a node sees another node's writes on its next walk, whatever it has in memory.
//!
//! A build reads every item and relationship in one read transaction (a consistent snapshot,
//! with the counter's value in it), in pages, so that the rows as strings are never all held
//! at once. Builds do not follow each other closer than the last one took, so that a
//! stream of graph writes costs at most half a core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use domain::cmdb::graph::{Graph, GraphItem};
use domain::cmdb::{CiStatus, ClassSet, Criticality, RelationshipType};

use crate::journal::CMDB_GRAPH;
use crate::schema::{ci_relationships, configuration_items, counters};
use crate::{DbConnection, StoreError};

/// Rows read per query while building: each page is held as strings until it is copied.
const PAGE: i64 = 5_000;

pub(crate) type Connect = Arc<dyn Fn() -> Result<DbConnection, StoreError> + Send + Sync>;

/// A copy of the graph as it was when the counter had `version`.
pub struct Snapshot {
    pub version: i64,
    pub graph: Graph,
}

/// The latest copy of the graph, shared by every request of the node.
pub struct GraphCache {
    current: RwLock<Option<Arc<Snapshot>>>,
    building: AtomicBool,
    /// When the last build ended and how long it took.
    last_build: Mutex<Option<(Instant, Duration)>>,
    /// Opens a read connection for a build.
    connect: Option<Connect>,
}

impl GraphCache {
    pub(crate) fn new(connect: Connect) -> Self {
        Self {
            current: RwLock::new(None),
            building: AtomicBool::new(false),
            last_build: Mutex::new(None),
            connect: Some(connect),
        }
    }

    /// A cache that never builds: every walk reads the database.
    pub fn disabled() -> Self {
        Self {
            current: RwLock::new(None),
            building: AtomicBool::new(false),
            last_build: Mutex::new(None),
            connect: None,
        }
    }

    /// The copy of the graph if it is as new as the graph `conn` sees; otherwise `None`, and a
    /// build starts if none runs (and the last one ended long enough ago).
    pub fn current(
        self: &Arc<Self>,
        conn: &mut DbConnection,
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        // This write transaction changed the graph: only the database shows it so far.
        if crate::journal::graph_changed_here() {
            return Ok(None);
        }
        let version = graph_version(conn)?;
        let copy = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(copy) = copy {
            if copy.version == version {
                return Ok(Some(copy));
            }
            // Inside a write transaction the counter may be ahead of anything committed: a
            // build could not see it yet.
            if copy.version > version {
                return Ok(None);
            }
            // Older than what is committed, so never used again (the counter only advances):
            // let it go before its successor is built, not after.
            self.forget(&copy);
        }
        self.start_build();
        Ok(None)
    }

    fn forget(&self, stale: &Arc<Snapshot>) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            *current = None;
        }
    }

    /// Builds a copy now on `conn` and keeps it (tests, and start-up when wanted).
    pub fn build_now(&self, conn: &mut DbConnection) -> Result<Arc<Snapshot>, StoreError> {
        let snapshot = Arc::new(build(conn)?);
        self.keep(snapshot.clone());
        Ok(snapshot)
    }

    fn keep(&self, snapshot: Arc<Snapshot>) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A slower build may end after a newer one.
        if current
            .as_ref()
            .is_none_or(|c| c.version < snapshot.version)
        {
            *current = Some(snapshot);
        }
    }

    fn start_build(self: &Arc<Self>) {
        let Some(connect) = self.connect.clone() else {
            return;
        };
        let rested = self
            .last_build
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_none_or(|(ended, took)| ended.elapsed() >= took);
        if !rested || self.building.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = self.clone();
        let started = std::thread::Builder::new()
            .name("itsm-cmdb-graph".into())
            .spawn(move || {
                let began = Instant::now();
                match connect().and_then(|mut conn| build(&mut conn)) {
                    Ok(snapshot) => {
                        log::debug!(
                            "CMDB graph copied to memory: {} items, {} relationships, {} ms",
                            snapshot.graph.items(),
                            snapshot.graph.relationships(),
                            began.elapsed().as_millis()
                        );
                        cache.keep(Arc::new(snapshot));
                    }
                    Err(error) => log::warn!("cannot copy the CMDB graph to memory: {error}"),
                }
                *cache
                    .last_build
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some((Instant::now(), began.elapsed()));
                cache.building.store(false, Ordering::Release);
            });
        if started.is_err() {
            self.building.store(false, Ordering::Release);
        }
    }
}

fn graph_version(conn: &mut DbConnection) -> Result<i64, StoreError> {
    Ok(counters::table
        .find(CMDB_GRAPH)
        .select(counters::value)
        .get_result(conn)?)
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Database(diesel::result::Error::DeserializationError(
        format!("stored {what} is not valid: {error}").into(),
    ))
}

/// Reads the whole graph in one read transaction.
fn build(conn: &mut DbConnection) -> Result<Snapshot, StoreError> {
    let begin = match conn {
        DbConnection::Sqlite(_) => "BEGIN",
        DbConnection::Postgresql(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    };
    conn.batch_execute(begin)?;
    let built = read_graph(conn);
    // Only read: ending it either way leaves nothing behind.
    let ended = conn.batch_execute("ROLLBACK");
    let snapshot = built?;
    ended?;
    Ok(snapshot)
}

fn read_graph(conn: &mut DbConnection) -> Result<Snapshot, StoreError> {
    let version = graph_version(conn)?;
    let classes: ClassSet = super::classes::all(conn)?;
    // Counted first, so that the copy's columns are allocated once, at their size.
    let count: i64 = configuration_items::table.count().get_result(conn)?;
    let mut items = Graph::builder(usize::try_from(count).unwrap_or(0));
    let mut after = String::new();
    loop {
        let page: Vec<(String, String, String, String, Option<String>)> =
            configuration_items::table
                .filter(configuration_items::id.gt(&after))
                .order(configuration_items::id.asc())
                .limit(PAGE)
                .select((
                    configuration_items::id,
                    configuration_items::name,
                    configuration_items::class,
                    configuration_items::status,
                    configuration_items::criticality,
                ))
                .load(conn)?;
        let Some(last) = page.last() else { break };
        after = last.0.clone();
        let full = page.len() as i64 == PAGE;
        for (id, name, class, status, criticality) in page {
            items.push(GraphItem {
                id,
                name,
                class,
                status: CiStatus::parse(&status).map_err(|e| corrupt("item", e))?,
                criticality: criticality
                    .as_deref()
                    .map(Criticality::parse)
                    .transpose()
                    .map_err(|e| corrupt("item", e))?,
            });
        }
        if !full {
            break;
        }
    }
    let count: i64 = ci_relationships::table.count().get_result(conn)?;
    let mut builder = items.relationships(usize::try_from(count).unwrap_or(0), |class| {
        classes.is_a(class, "business_service")
    });
    let mut after = String::new();
    loop {
        let page: Vec<(String, String, String, String)> = ci_relationships::table
            .filter(ci_relationships::id.gt(&after))
            .order(ci_relationships::id.asc())
            .limit(PAGE)
            .select((
                ci_relationships::id,
                ci_relationships::source_id,
                ci_relationships::rel_type,
                ci_relationships::target_id,
            ))
            .load(conn)?;
        let Some(last) = page.last() else { break };
        after = last.0.clone();
        let full = page.len() as i64 == PAGE;
        for (_, source, rel_type, target) in page {
            let rel_type =
                RelationshipType::parse(&rel_type).map_err(|e| corrupt("relationship", e))?;
            builder.relate(&source, rel_type, &target);
        }
        if !full {
            break;
        }
    }
    Ok(Snapshot {
        version,
        graph: builder.finish(),
    })
}
