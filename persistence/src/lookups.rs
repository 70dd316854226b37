//! Lookups by key that wait for a PostgreSQL read connection together are answered by one
//! query. Each lookup is a round trip that costs the server, PostgreSQL and the kernel's
//! loopback far more than the index probe itself; under load, every lookup that arrives while
//! the connections are busy joins the next query instead of queueing for a round trip of its
//! own. On SQLite a lookup runs in place, where a round trip costs nothing.

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::{Backend, Database, DbConnection, StoreError};

type Answer<V> = oneshot::Sender<Result<Option<V>, StoreError>>;

/// The rows of one kind, looked up by a text key (an id or a number).
pub struct Lookups<V> {
    waiting: Mutex<Vec<(String, Answer<V>)>>,
    /// Loads the rows for some keys; a key without a row has none in the answer.
    load: fn(&mut DbConnection, &[String]) -> Result<Vec<V>, StoreError>,
    /// True when the row is the one the key names.
    matches: fn(&V, &str) -> bool,
}

impl<V: Clone + Send + 'static> Lookups<V> {
    pub fn new(
        load: fn(&mut DbConnection, &[String]) -> Result<Vec<V>, StoreError>,
        matches: fn(&V, &str) -> bool,
    ) -> Self {
        Self {
            waiting: Mutex::new(Vec::new()),
            load,
            matches,
        }
    }

    fn take_waiting(&self) -> Vec<(String, Answer<V>)> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Loads the rows for every waiting key and answers each waiter. An error is also
    /// returned, so that the pool checks the connection before its next use.
    fn answer(
        load: fn(&mut DbConnection, &[String]) -> Result<Vec<V>, StoreError>,
        matches: fn(&V, &str) -> bool,
        conn: &mut DbConnection,
        waiting: Vec<(String, Answer<V>)>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = waiting.iter().map(|(key, _)| key.clone()).collect();
        match load(conn, &keys) {
            Ok(rows) => {
                for (key, answer) in waiting {
                    let row = rows.iter().find(|row| matches(row, &key)).cloned();
                    let _ = answer.send(Ok(row));
                }
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                let outage = error.outage();
                for (_, answer) in waiting {
                    let shared = match outage {
                        Some(outage) => StoreError::Outage {
                            outage,
                            detail: message.clone(),
                        },
                        None => StoreError::Unavailable(message.clone()),
                    };
                    let _ = answer.send(Err(shared));
                }
                Err(error)
            }
        }
    }
}

impl Database {
    /// The row `key` names, if any, read with whatever other lookups of `lookups` are waiting.
    pub async fn look_up<V: Clone + Send + 'static>(
        &self,
        lookups: &Lookups<V>,
        key: String,
    ) -> Result<Option<V>, StoreError> {
        let (load, matches) = (lookups.load, lookups.matches);
        if self.backend() == Backend::Sqlite {
            return self
                .read_bounded(move |conn| {
                    let rows = load(conn, std::slice::from_ref(&key))?;
                    Ok(rows.into_iter().find(|row| matches(row, &key)))
                })
                .await;
        }
        let (answer, mut answered) = oneshot::channel();
        lookups
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, answer));
        let closed = || StoreError::Unavailable("the lookup was dropped".into());
        // Whoever gets a connection first answers everyone waiting by then; the others are
        // answered before their turn comes and give up their place in the queue.
        tokio::select! {
            biased;
            result = &mut answered => return result.map_err(|_| closed())?,
            slot = self.read_slot() => {
                let _slot = slot?;
                let waiting = lookups.take_waiting();
                if !waiting.is_empty() {
                    // An error reaches every waiter through its answer.
                    let _ = self
                        .on_read_thread(move |conn| Lookups::answer(load, matches, conn, waiting))
                        .await;
                }
            }
        }
        answered.await.map_err(|_| closed())?
    }
}
