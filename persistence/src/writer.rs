//! The write path (DESIGN.md section 6).
//!
//! A writer thread owns a write connection. It takes the units of work waiting in its queue,
//! up to `max_batch`, runs them in one write transaction (`BEGIN IMMEDIATE` on SQLite), each in
//! a savepoint (its own, or one shared by consecutive new-row units, see [`Lane`]), commits once,
//! and only then answers each caller. A unit of work that fails rolls back its own work alone;
//! a failed commit fails every unit of the batch. The units' audit entries and events are
//! written together just before the commit (`journal`). So a 2xx is always durable and the
//! commit cost is shared.
//!
//! The primary writer runs every unit that may change existing rows. SQLite has only it, so it
//! never sees two writers in this process. On PostgreSQL, extra writers run the units that only
//! add rows (see [`Lane`]), because there a unit's time is mostly round trips, not the database.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::WalGate;
use crate::error::take_outage_seen;
use crate::{journal, DbConnection, Outage, StoreError};

type Connect = Arc<dyn Fn() -> Result<DbConnection, StoreError> + Send + Sync>;
type SharedQueue = Arc<Mutex<mpsc::Receiver<Box<dyn Job>>>>;

const QUEUE_CAPACITY: usize = 4096;

/// A transaction takes no further unit once this many audit entries and events wait for its
/// commit: they are held in memory until then, and a few large units (1,000-item reconcile
/// batches) would otherwise hold all of theirs in one transaction. The units not yet run wait
/// for the next transaction, first in line.
const MAX_WAITING_RECORDS: usize = 2_000;

/// Which writers may run a unit of work, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The primary writer, each unit in its own savepoint. It runs every unit that may change
    /// an existing row: one thread, so two units never wait on each other's row locks (no
    /// deadlocks) and check-then-write holds.
    Primary,
    /// Units that only add new rows and lock no existing one (creating an incident). They
    /// rarely fail, so consecutive ones share one savepoint, and run again each in its own if
    /// one of them fails: a unit here may run twice. On PostgreSQL any of the extra writers
    /// runs them, so inserts overlap their round trips.
    NewRows,
}

/// How a unit of work's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Succeeded,
    Failed,
    /// The connection's transaction state can no longer be trusted.
    Panicked,
}

/// A unit of work in the queue, with the caller waiting for it.
trait Job: Send {
    fn lane(&self) -> Lane;
    /// Runs the unit (again, for a `NewRows` unit whose shared savepoint was rolled back),
    /// inside a savepoint of its own or, with `own_savepoint` false, a shared one.
    fn run(&mut self, conn: &mut DbConnection, own_savepoint: bool) -> Run;
    /// Answers the caller once the batch's transaction ended.
    fn deliver(self: Box<Self>, committed: Result<(), BatchFailure>);
}

/// Why a batch's transaction did not commit: every unit of it is answered with this.
#[derive(Debug, Clone)]
struct BatchFailure {
    /// The storage outage behind it, if it was one.
    outage: Option<Outage>,
    detail: String,
}

impl BatchFailure {
    fn new(context: &str, error: &StoreError) -> Self {
        Self {
            outage: error.outage(),
            detail: format!("{context}: {error}"),
        }
    }

    fn of_diesel(context: &str, error: diesel::result::Error) -> Self {
        Self::new(context, &StoreError::from(error))
    }

    fn into_store_error(self) -> StoreError {
        match self.outage {
            Some(outage) => StoreError::Outage {
                outage,
                detail: self.detail,
            },
            None => StoreError::Unavailable(self.detail),
        }
    }
}

/// The outage the last batch of any writer met, cleared by the next batch that commits: the
/// readiness probe reports it.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth(Mutex<Option<Outage>>);

impl WriteHealth {
    pub(crate) fn outage(&self) -> Option<Outage> {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, committed: &Result<(), BatchFailure>) {
        let now = match committed {
            Ok(()) => None,
            Err(failure) => match failure.outage {
                Some(outage) => Some(outage),
                // A failure that is no outage says nothing about the storage.
                None => return,
            },
        };
        let mut current = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current != now {
            match now {
                Some(outage) => log::error!("the write path stopped committing: {outage}"),
                None => log::warn!("the write path commits again"),
            }
            *current = now;
        }
    }
}

struct Pending<T, E, F> {
    lane: Lane,
    unit: F,
    result: Option<Result<T, E>>,
    answer: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    F: FnMut(&mut DbConnection) -> Result<T, E> + Send,
    T: Send,
    E: From<StoreError> + From<diesel::result::Error> + Send,
{
    fn lane(&self) -> Lane {
        self.lane
    }

    fn run(&mut self, conn: &mut DbConnection, own_savepoint: bool) -> Run {
        let unit = &mut self.unit;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if own_savepoint {
                in_own_savepoint(conn, unit)
            } else {
                unit(conn)
            }
        }));
        let (run, result) = match outcome {
            Ok(Ok(value)) => (Run::Succeeded, Ok(value)),
            Ok(Err(e)) => (Run::Failed, Err(e)),
            Err(_) => (
                Run::Panicked,
                Err(StoreError::Unavailable("the unit of work panicked".into()).into()),
            ),
        };
        self.result = Some(result);
        run
    }

    fn deliver(self: Box<Self>, committed: Result<(), BatchFailure>) {
        let reply = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => {
                Err(StoreError::Unavailable("the unit of work never ran".into()).into())
            }
            (Err(failure), _) => Err(failure.into_store_error().into()),
        };
        // The caller may have gone away (client disconnected): nothing to answer.
        let _ = self.answer.send(reply);
    }
}

#[derive(Clone)]
pub(crate) struct Writer {
    primary: mpsc::Sender<Box<dyn Job>>,
    /// Feeds the extra writers; `None` when there is only the primary (SQLite).
    new_rows: Option<mpsc::Sender<Box<dyn Job>>>,
    health: Arc<WriteHealth>,
}

impl Writer {
    /// Starts the primary writer on `conn`, and `extra_writers` more threads, each with a
    /// connection of its own, that share the queue of new-row units.
    pub(crate) fn start(
        conn: DbConnection,
        wal_gate: Option<Arc<WalGate>>,
        connect: Connect,
        max_batch: usize,
        extra_writers: usize,
    ) -> Result<Self, StoreError> {
        let (primary, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let primary_queue = Arc::new(Mutex::new(receiver));
        let health = Arc::new(WriteHealth::default());
        spawn_writer(
            "itsm-writer",
            conn,
            connect.clone(),
            primary_queue,
            wal_gate,
            max_batch,
            health.clone(),
        );
        let new_rows = if extra_writers == 0 {
            None
        } else {
            let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
            let shared = Arc::new(Mutex::new(receiver));
            for n in 1..=extra_writers {
                let conn = connect()?;
                spawn_writer(
                    &format!("itsm-writer-{n}"),
                    conn,
                    connect.clone(),
                    shared.clone(),
                    None,
                    max_batch,
                    health.clone(),
                );
            }
            Some(sender)
        };
        Ok(Self {
            primary,
            new_rows,
            health,
        })
    }

    /// The outage the last failed batch met, until a batch commits again.
    pub(crate) fn outage(&self) -> Option<Outage> {
        self.health.outage()
    }

    /// Queues `unit` and waits until its batch committed. A `Lane::Primary` unit runs once; a
    /// `Lane::NewRows` unit may run twice (see [`Lane`]), so it keeps no state of its own.
    pub(crate) async fn submit<T, E, F>(&self, lane: Lane, unit: F) -> Result<T, E>
    where
        F: FnMut(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T, E>>();
        let job = Box::new(Pending {
            lane,
            unit,
            result: None,
            answer,
        });
        let queue = match (lane, &self.new_rows) {
            (Lane::NewRows, Some(new_rows)) => new_rows,
            _ => &self.primary,
        };
        queue
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the write path is shut down".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Unavailable("the write path stopped".into()))?
    }
}

/// Start-up only (`Database::open`), where failing to start a thread may stop the service.
#[allow(clippy::expect_used)]
fn spawn_writer(
    name: &str,
    conn: DbConnection,
    reconnect: Connect,
    queue: SharedQueue,
    wal_gate: Option<Arc<WalGate>>,
    max_batch: usize,
    health: Arc<WriteHealth>,
) {
    thread::Builder::new()
        .name(name.into())
        .spawn(move || run(conn, reconnect, queue, wal_gate, max_batch, &health))
        .expect("the operating system refused to start a writer thread");
}

/// Takes the next batch: after the units the last transaction left (see
/// [`MAX_WAITING_RECORDS`]), or else one it waits for, those already waiting.
fn next_batch(queue: &SharedQueue, batch: &mut Vec<Box<dyn Job>>, max_batch: usize) -> bool {
    let mut queue = queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if batch.is_empty() {
        let Some(first) = queue.blocking_recv() else {
            return false;
        };
        batch.push(first);
    }
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    true
}

fn run(
    mut conn: DbConnection,
    reconnect: Connect,
    queue: SharedQueue,
    wal_gate: Option<Arc<WalGate>>,
    max_batch: usize,
    health: &WriteHealth,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while next_batch(&queue, &mut batch, max_batch) {
        // The SQLite checkpoint thread closes it, rarely, to let the WAL start over.
        let _batch_open = wal_gate.as_ref().map(|gate| gate.enter());
        take_outage_seen();
        // How many units, from the front of the batch, the transaction ran.
        let mut ran = batch.len();
        let committed = match begin(&mut conn) {
            Err(e) => Err(BatchFailure::of_diesel(
                "cannot begin a write transaction",
                e,
            )),
            Ok(()) => {
                journal::open();
                run_units(&mut conn, &mut batch).and_then(|units_run| {
                    ran = units_run;
                    journal::flush(&mut conn)
                        .map_err(|e| BatchFailure::new("cannot write the audit trail", &e))
                        .and_then(|()| {
                            commit(&mut conn)
                                .map_err(|e| BatchFailure::of_diesel("commit failed", e))
                        })
                })
            }
        };
        journal::close();
        health.record(&committed);
        if let Err(failure) = &committed {
            log::warn!(
                "a write batch of {} failed: {}",
                batch.len(),
                failure.detail
            );
            // Whatever state the connection is in, a fresh one is the safe way on; dropping
            // the old one rolls back whatever it had begun.
            match reconnect() {
                Ok(fresh) => conn = fresh,
                Err(e) => log::error!("writer cannot reconnect: {e}"),
            }
        }
        // Units never run (begin failed) learn that the write path is unavailable; after a
        // commit, those the transaction left wait for the next one.
        let answered = if committed.is_ok() { ran } else { batch.len() };
        for job in batch.drain(..answered) {
            job.deliver(committed.clone());
        }
    }
    log::info!("write path stopped");
}

/// Runs the batch's units in the open transaction. A unit that panicked, or any database
/// error that stood for an outage (even one a unit turned into an answer), fails the batch and
/// no further unit runs: SQLite rolls the whole transaction back by itself on some of them
/// (SQLITE_FULL, SQLITE_IOERR), after which a unit's savepoint would commit on its own, without
/// the batch's audit entries and events. Consecutive `NewRows` units share a savepoint; if one
/// of them fails, that savepoint is rolled back and they run again, each in a savepoint of its
/// own. Once [`MAX_WAITING_RECORDS`] wait for the commit, no further unit runs: returns how
/// many units, from the front of the batch, ran.
fn run_units(conn: &mut DbConnection, batch: &mut [Box<dyn Job>]) -> Result<usize, BatchFailure> {
    let outage_met = |(outage, detail): (Outage, String)| BatchFailure {
        outage: Some(outage),
        detail: format!("a unit of work of the batch met an outage: {detail}"),
    };
    let total = batch.len();
    let mut rest = batch;
    while let Some(first) = rest.first() {
        if journal::waiting() >= MAX_WAITING_RECORDS {
            return Ok(total - rest.len());
        }
        let shared = match first.lane() {
            Lane::NewRows => rest
                .iter()
                .take_while(|job| job.lane() == Lane::NewRows)
                .count(),
            Lane::Primary => 0,
        };
        let (units, after) = rest.split_at_mut(shared.max(1));
        rest = after;
        if shared > 0 {
            let all_succeeded = run_in_shared_savepoint(conn, units);
            if let Some(outage) = take_outage_seen() {
                return Err(outage_met(outage));
            }
            if all_succeeded {
                continue;
            }
            if !transaction_alive(conn) {
                return Err(BatchFailure {
                    outage: None,
                    detail: "the database rolled the batch back; retry".into(),
                });
            }
        }
        for job in units {
            let mark = journal::mark();
            let run = job.run(conn, true);
            if let Some(outage) = take_outage_seen() {
                return Err(outage_met(outage));
            }
            match run {
                Run::Succeeded => {}
                Run::Failed if !transaction_alive(conn) => {
                    return Err(BatchFailure {
                        outage: None,
                        detail: "the database rolled the batch back; retry".into(),
                    })
                }
                Run::Failed => journal::cut(mark),
                Run::Panicked => {
                    return Err(BatchFailure {
                        outage: None,
                        detail: "a unit of work in the same transaction failed; retry".into(),
                    })
                }
            }
        }
    }
    Ok(total)
}

/// Runs `unit` in a savepoint of its own, so that its failure undoes its work alone. On
/// PostgreSQL, where every statement is a round trip, a unit that succeeded leaves its
/// savepoint open until the commit instead of releasing it: a quarter of a PATCH's round trips
/// on the primary writer. The savepoints nest (one per unit of the batch, as many
/// subtransactions as releasing them would leave), and a rollback returns to the latest.
/// SQLite releases each: there a release costs no round trip, and open savepoints would make
/// it copy the pages each unit changes once more per level.
fn in_own_savepoint<T, E>(
    conn: &mut DbConnection,
    unit: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::SimpleConnection;
    if !matches!(conn, DbConnection::Postgresql(_)) {
        return conn.transaction(unit);
    }
    conn.batch_execute("SAVEPOINT unit")?;
    let result = unit(conn);
    if result.is_err() {
        conn.batch_execute("ROLLBACK TO SAVEPOINT unit")?;
    }
    result
}

/// Runs `part`, a part of a unit of work that may fail on its own (one request of several a
/// unit runs together), in a savepoint of its own: when it fails, what it wrote, its audit
/// entries and its events are undone, and the rest of the unit goes on.
pub fn in_savepoint<T, E>(
    conn: &mut DbConnection,
    part: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    let mark = journal::mark();
    let result = conn.transaction(part);
    if result.is_err() {
        journal::cut(mark);
    }
    result
}

/// Runs `units` in one savepoint; false (and nothing of theirs kept) unless all succeeded.
fn run_in_shared_savepoint(conn: &mut DbConnection, units: &mut [Box<dyn Job>]) -> bool {
    // Inside the batch's transaction, diesel's transaction steps are savepoint steps.
    type Savepoint = <DbConnection as Connection>::TransactionManager;
    let mark = journal::mark();
    if Savepoint::begin_transaction(conn).is_err() {
        return false;
    }
    let all_succeeded = units
        .iter_mut()
        .all(|job| job.run(conn, false) == Run::Succeeded);
    let ended = if all_succeeded {
        Savepoint::commit_transaction(conn)
    } else {
        Savepoint::rollback_transaction(conn)
    };
    if ended.is_ok() && all_succeeded {
        return true;
    }
    journal::cut(mark);
    false
}

/// After a unit failed: whether the batch's transaction is still open. SQLite rolls it back by
/// itself on some errors; a `BEGIN` then succeeds where it would fail inside a transaction
/// (and is rolled back at once). PostgreSQL never ends a transaction on its own: a broken
/// connection fails the commit.
fn transaction_alive(conn: &mut DbConnection) -> bool {
    use diesel::connection::SimpleConnection;
    let DbConnection::Sqlite(c) = conn else {
        return true;
    };
    if c.batch_execute("BEGIN").is_err() {
        return true;
    }
    let _ = c.batch_execute("ROLLBACK");
    log::error!("SQLite rolled back a write batch by itself after a failed unit of work");
    false
}

fn begin(conn: &mut DbConnection) -> QueryResult<()> {
    match conn {
        // IMMEDIATE takes the write lock up front, so no statement of the batch can fail
        // with SQLITE_BUSY half-way (DESIGN.md section 6).
        DbConnection::Sqlite(c) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
        }
        DbConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction(c),
    }
}

fn commit(conn: &mut DbConnection) -> QueryResult<()> {
    match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::commit_transaction(c),
        DbConnection::Postgresql(c) => AnsiTransactionManager::commit_transaction(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    use crate::{outbox, Database, DatabaseConfig, WriteContext};

    /// Units queued behind a unit that holds the writer make one batch; each queues 900 events.
    /// No unit starts while `MAX_WAITING_RECORDS` or more wait for the commit, and every unit
    /// commits (the ones left over in the next transaction).
    #[test]
    fn a_transaction_takes_no_more_units_once_enough_records_wait() {
        let path = std::env::temp_dir().join(format!("itsm-writer-{}.db", crate::new_id()));
        let db = Database::open(&DatabaseConfig {
            url: Some(format!("sqlite://{}", path.display())),
            ..DatabaseConfig::default()
        })
        .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let waiting_at_start: Vec<usize> = thread::scope(|scope| {
            let holding = scope.spawn(|| {
                runtime.block_on(db.write(|_| -> Result<(), StoreError> {
                    thread::sleep(std::time::Duration::from_millis(500));
                    Ok(())
                }))
            });
            thread::sleep(std::time::Duration::from_millis(100));
            let units: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        runtime.block_on(db.write(|_| -> Result<usize, StoreError> {
                            let waiting = journal::waiting();
                            let ctx = WriteContext::system("test");
                            for n in 0..900 {
                                let id = n.to_string();
                                journal::add_event(&ctx, "test.event", "test", &id, &Value::Null)?;
                            }
                            Ok(waiting)
                        }))
                    })
                })
                .collect();
            holding.join().unwrap().unwrap();
            units
                .into_iter()
                .map(|unit| unit.join().unwrap().unwrap())
                .collect()
        });
        assert!(
            waiting_at_start.iter().all(|&w| w < MAX_WAITING_RECORDS),
            "{waiting_at_start:?}"
        );
        // Some unit started a transaction of its own after the first took two others.
        assert!(
            waiting_at_start.iter().filter(|&&w| w == 0).count() >= 3,
            "{waiting_at_start:?}"
        );
        let events = runtime.block_on(db.read(outbox::latest_sequence)).unwrap();
        assert_eq!(events, 8 * 900);
        drop(db);
        let _ = std::fs::remove_file(&path);
    }
}
