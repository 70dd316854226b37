//! The write path (DESIGN.md section 6).
//!
//! A writer thread owns a write connection. It takes the units of work waiting in its queue,
//! up to `max_batch`, runs them in one write transaction (`BEGIN IMMEDIATE` on SQLite), each in
//! its own savepoint, commits once, and only then answers each caller. A unit of work that fails
//! rolls back its savepoint alone; a failed commit fails every unit of the batch. The units'
//! audit entries and events are written together just before the commit (`journal`). So a 2xx is
//! always durable and the commit cost is shared.
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
use crate::{journal, DbConnection, StoreError};

/// Tells a waiting caller how its batch ended.
type Delivery = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A unit of work: runs on the writer's connection and returns how to answer its caller.
type Job = Box<dyn FnOnce(&mut DbConnection) -> JobRun + Send>;
type Connect = Arc<dyn Fn() -> Result<DbConnection, StoreError> + Send + Sync>;
type SharedQueue = Arc<Mutex<mpsc::Receiver<Job>>>;

struct JobRun {
    deliver: Delivery,
    /// The unit panicked: the connection's transaction state can no longer be trusted.
    poisoned: bool,
}

const QUEUE_CAPACITY: usize = 4096;

/// Which writers may run a unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The primary writer: every unit that may change an existing row. One thread, so two
    /// units never wait on each other's row locks (no deadlocks) and check-then-write holds.
    Primary,
    /// Units that only add new rows and lock no existing one (creating an incident): on
    /// PostgreSQL any of the extra writers runs them, so inserts overlap their round trips.
    NewRows,
}

#[derive(Clone)]
pub(crate) struct Writer {
    primary: mpsc::Sender<Job>,
    /// Feeds the extra writers; `None` when there is only the primary (SQLite).
    new_rows: Option<mpsc::Sender<Job>>,
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
        spawn_writer(
            "itsm-writer",
            conn,
            connect.clone(),
            primary_queue,
            wal_gate,
            max_batch,
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
                );
            }
            Some(sender)
        };
        Ok(Self { primary, new_rows })
    }

    pub(crate) async fn submit<T, E, F>(&self, lane: Lane, unit: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let mark = journal::mark();
            let outcome = catch_unwind(AssertUnwindSafe(|| conn.transaction::<T, E, _>(unit)));
            if !matches!(outcome, Ok(Ok(_))) {
                journal::cut(mark);
            }
            let poisoned = outcome.is_err();
            let result = outcome.unwrap_or_else(|_| {
                Err(StoreError::Unavailable("the unit of work panicked".into()).into())
            });
            JobRun {
                poisoned,
                deliver: Box::new(move |committed| {
                    let reply = match committed {
                        Ok(()) => result,
                        Err(reason) => Err(StoreError::Unavailable(reason).into()),
                    };
                    // The caller may have gone away (client disconnected): nothing to answer.
                    let _ = answer.send(reply);
                }),
            }
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

fn spawn_writer(
    name: &str,
    conn: DbConnection,
    reconnect: Connect,
    queue: SharedQueue,
    wal_gate: Option<Arc<WalGate>>,
    max_batch: usize,
) {
    thread::Builder::new()
        .name(name.into())
        .spawn(move || run(conn, reconnect, queue, wal_gate, max_batch))
        .expect("the operating system refused to start a writer thread");
}

/// Takes the next batch: waits for one unit, then takes those already waiting.
fn next_batch(queue: &SharedQueue, batch: &mut Vec<Job>, max_batch: usize) -> bool {
    let mut queue = queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(first) = queue.blocking_recv() else {
        return false;
    };
    batch.push(first);
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
) {
    let mut batch = Vec::with_capacity(max_batch);
    while next_batch(&queue, &mut batch, max_batch) {
        // The SQLite checkpoint thread closes it, rarely, to let the WAL start over.
        let _batch_open = wal_gate.as_ref().map(|gate| gate.enter());
        let mut runs = Vec::with_capacity(batch.len());
        let committed = match begin(&mut conn) {
            Err(e) => Err(format!("cannot begin a write transaction: {e}")),
            Ok(()) => {
                journal::open();
                for job in batch.drain(..) {
                    runs.push(job(&mut conn));
                }
                if runs.iter().any(|run| run.poisoned) {
                    Err("a unit of work in the same transaction failed; retry".to_owned())
                } else {
                    journal::flush(&mut conn)
                        .map_err(|e| format!("cannot write the audit trail: {e}"))
                        .and_then(|()| commit(&mut conn).map_err(|e| format!("commit failed: {e}")))
                }
            }
        };
        journal::close();
        // Units never started (begin failed) are dropped: their callers learn the write
        // path is unavailable and may retry.
        batch.clear();
        if committed.is_err() {
            // Whatever state the connection is in, a fresh one is the safe way on.
            match reconnect() {
                Ok(fresh) => conn = fresh,
                Err(e) => log::error!("writer cannot reconnect: {e}"),
            }
        }
        for run in runs {
            (run.deliver)(committed.clone());
        }
    }
    log::info!("write path stopped");
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
