//! SQLite checkpoints off the writer thread.
//!
//! Left to SQLite, the commit that crosses `wal_autocheckpoint` copies the WAL into the
//! database file and waits for its fsync, on the writer thread: every unit of work queued
//! behind it waited too, and the writer stood idle for that I/O. Here the writer never
//! checkpoints. A thread of its own runs passive checkpoints, which neither block nor wait for
//! the writer or the readers, while the writer goes on appending to the WAL.
//!
//! SQLite starts the WAL file over only when a write transaction begins with every frame
//! already copied back, which a writer that never pauses does not see. So once the WAL is
//! long, the checkpoint thread closes the writer's gate between two batches, copies the last
//! frames, and opens it again: the next batch starts the WAL over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use diesel::prelude::*;

use crate::StoreError;

/// How often the WAL is copied back into the database file.
const INTERVAL: Duration = Duration::from_millis(100);

/// WAL frames (pages) past which the writer is paused once so that the WAL starts over.
const RESTART_AFTER_FRAMES: i32 = 8192;

/// Held by the writer for each batch, and by the checkpoint thread to pause it.
#[derive(Default)]
pub(crate) struct WalGate {
    batch: Mutex<()>,
    /// The checkpoint thread waits for the gate. A plain mutex is not fair: the writer took it
    /// again for its next batch before the waiting thread woke, for up to 1.6 s, and the
    /// frames piling up meanwhile made the pause that followed last hundreds of milliseconds.
    pause_wanted: AtomicBool,
}

impl WalGate {
    /// The writer, before each batch: lets a waiting checkpoint go first.
    pub(crate) fn enter(&self) -> MutexGuard<'_, ()> {
        while self.pause_wanted.load(Ordering::Acquire) {
            thread::sleep(Duration::from_micros(100));
        }
        self.batch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The checkpoint thread: waits for the batch in progress and holds the next one off.
    fn pause(&self) -> MutexGuard<'_, ()> {
        self.pause_wanted.store(true, Ordering::Release);
        let paused = self
            .batch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.pause_wanted.store(false, Ordering::Release);
        paused
    }
}

/// Keeps the checkpoint thread running; it stops when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Checkpointer {
    _running: mpsc::SyncSender<()>,
}

impl Checkpointer {
    /// Start-up only (`Database::open`), where failing to start a thread may stop the service.
    #[allow(clippy::expect_used)]
    pub(crate) fn start(mut conn: SqliteConnection, gate: Arc<WalGate>) -> Self {
        let (running, stopped) = mpsc::sync_channel::<()>(0);
        thread::Builder::new()
            .name("itsm-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    if let Err(e) = copy_back(&mut conn, &gate) {
                        log::warn!("WAL checkpoint failed: {e}");
                    }
                }
            })
            .expect("the operating system refused to start the checkpoint thread");
        Self { _running: running }
    }
}

fn copy_back(conn: &mut SqliteConnection, gate: &WalGate) -> Result<(), StoreError> {
    let frames = passive_checkpoint(conn)?;
    if frames > RESTART_AFTER_FRAMES {
        // A pause of about 20 ms: the frames written since the pass above, and an fsync.
        let _paused = gate.pause();
        passive_checkpoint(conn)?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Outcome {
    /// Frames in the WAL.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
}

/// Copies what it can of the WAL back; returns the number of frames in the WAL.
fn passive_checkpoint(conn: &mut SqliteConnection) -> Result<i32, StoreError> {
    let outcome: Outcome = diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(conn)?;
    Ok(outcome.log)
}
