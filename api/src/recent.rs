//! Values that requests read on nearly every call (a signed-in user's roles, the routing
//! rules), kept for a moment instead of read from the database each time.
//!
//! A value is trusted for `fresh_for` after it was read. A change made through this process
//! forgets it as soon as the change committed, so here it applies at once; `fresh_for` bounds
//! how long another process serving the same database may act on a value changed elsewhere.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub struct RecentReads<K, V> {
    values: RwLock<HashMap<K, (V, Instant)>>,
    /// Advanced by each `forget`, so that a read begun before a change is not kept after it.
    generation: AtomicU64,
    fresh_for: Duration,
    /// Past this many values the cache starts over.
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> RecentReads<K, V> {
    pub fn new(fresh_for: Duration, capacity: usize) -> Self {
        Self {
            values: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            fresh_for,
            capacity,
        }
    }

    /// The value of `key`: the one kept if it is fresh, else what `read` returns, kept when
    /// it is `Ok`. An `Err` (say, a deactivated user) is not kept.
    pub async fn get_or_read<E, Fut>(&self, key: &K, read: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.fresh(key) {
            return Ok(value);
        }
        let read_from = self.generation.load(Ordering::Acquire);
        let value = read().await?;
        self.keep(read_from, key.clone(), value.clone());
        Ok(value)
    }

    fn fresh(&self, key: &K) -> Option<V> {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        values
            .get(key)
            .filter(|(_, read_at)| read_at.elapsed() < self.fresh_for)
            .map(|(value, _)| value.clone())
    }

    fn keep(&self, read_from: u64, key: K, value: V) {
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != read_from {
            return;
        }
        if values.len() >= self.capacity {
            values.clear();
        }
        values.insert(key, (value, Instant::now()));
    }

    /// Called once a change to `key` committed: the next request reads it again.
    pub fn forget(&self, key: &K) {
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        values.remove(key);
    }

    /// Called once a change committed whose key is not known here: everything is read again.
    pub fn forget_all(&self) {
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        values.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn read_counting(
        reads: &Cell<u32>,
        value: &'static str,
    ) -> impl Future<Output = Result<&'static str, ()>> {
        reads.set(reads.get() + 1);
        std::future::ready(Ok(value))
    }

    #[actix_web::test]
    async fn a_value_is_read_once_while_fresh_and_again_once_forgotten() {
        let recent = RecentReads::new(Duration::from_secs(60), 10);
        let reads = Cell::new(0);
        for _ in 0..3 {
            let value = recent
                .get_or_read(&"u1", || read_counting(&reads, "agent"))
                .await;
            assert_eq!(value, Ok("agent"));
        }
        assert_eq!(reads.get(), 1);

        recent.forget(&"u1");
        let value = recent
            .get_or_read(&"u1", || read_counting(&reads, "admin"))
            .await;
        assert_eq!((value, reads.get()), (Ok("admin"), 2));

        recent.forget_all();
        let value = recent
            .get_or_read(&"u1", || read_counting(&reads, "agent"))
            .await;
        assert_eq!((value, reads.get()), (Ok("agent"), 3));
    }

    #[actix_web::test]
    async fn stale_values_and_failed_reads_are_read_again() {
        let recent = RecentReads::new(Duration::ZERO, 10);
        let reads = Cell::new(0);
        for _ in 0..2 {
            let _ = recent
                .get_or_read(&"u1", || read_counting(&reads, "agent"))
                .await;
        }
        assert_eq!(reads.get(), 2, "nothing is fresh for zero seconds");

        let recent = RecentReads::new(Duration::from_secs(60), 10);
        let refused = recent.get_or_read(&"u1", || std::future::ready(Err::<&str, _>("inactive")));
        assert_eq!(refused.await, Err("inactive"));
        assert!(recent.fresh(&"u1").is_none());
    }

    #[test]
    fn a_read_begun_before_a_change_is_not_kept() {
        let recent = RecentReads::new(Duration::from_secs(60), 10);
        let read_from = recent.generation.load(Ordering::Acquire);
        recent.forget(&"u1");
        recent.keep(read_from, "u1", "agent");
        assert!(recent.fresh(&"u1").is_none());
    }
}
