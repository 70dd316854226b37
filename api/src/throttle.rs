//! Sign-in under attack: failed attempts per username and per address make the next attempt
//! wait (429 with `Retry-After`), and password hashing runs at most a few at a time with a
//! short queue (503 with `Retry-After` beyond it), so no login flood takes memory or starves
//! other requests.
//!
//! Both are per process: with N nodes an attacker gets N times the attempts, which the growing
//! delays still keep to a handful per hour.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::web;
use domain::throttle::{BackoffPolicy, Failures};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// Past this many keys, lapsed ones are dropped (and if none lapsed, all are).
const MAX_KEYS: usize = 100_000;

/// Failed sign-ins per username and per client address.
pub struct LoginThrottle {
    users: Backoffs<String>,
    addresses: Backoffs<IpAddr>,
}

struct Backoffs<K> {
    policy: BackoffPolicy,
    failures: Mutex<HashMap<K, Failures>>,
}

impl<K: Eq + Hash + Clone> Backoffs<K> {
    fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(key)?.wait(&self.policy, now)
    }

    fn fail(&self, key: &K, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_KEYS && !failures.contains_key(key) {
            failures.retain(|_, f| !f.forgotten(&self.policy, now));
            if failures.len() >= MAX_KEYS {
                log::warn!("sign-in throttle: {MAX_KEYS} keys failing at once; starting over");
                failures.clear();
            }
        }
        let previous = failures.get(key).copied();
        failures.insert(
            key.clone(),
            Failures::after_failure(previous, &self.policy, now),
        );
    }

    /// Takes back one failure, counted before its attempt turned out to be right.
    fn undo(&self, key: &K) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = failures.get_mut(key) {
            f.count = f.count.saturating_sub(1);
        }
    }

    fn clear(&self, key: &K) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// The throttle's settings (see `Config`).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub free_failures_per_user: u32,
    pub free_failures_per_address: u32,
    pub max_delay: Duration,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        let policy = |free_failures| BackoffPolicy {
            free_failures,
            first_delay: Duration::from_secs(1),
            max_delay: limits.max_delay,
            forget_after: Duration::from_secs(15 * 60).max(limits.max_delay),
        };
        Self {
            users: Backoffs::new(policy(limits.free_failures_per_user)),
            addresses: Backoffs::new(policy(limits.free_failures_per_address)),
        }
    }

    /// Admits a sign-in attempt, counting it as failed until `succeeded` says otherwise: so a
    /// burst of concurrent guesses is counted before any of them is checked. Known and unknown
    /// usernames are treated alike.
    pub fn attempt(&self, username: &str, address: Option<IpAddr>) -> ApiResult<()> {
        let now = Instant::now();
        let user_key = username.to_owned();
        let wait = [
            self.users.wait(&user_key, now),
            address.and_then(|a| self.addresses.wait(&a, now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(ApiError::TooManyRequests {
                detail: "too many failed sign-ins; wait before trying again".into(),
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            });
        }
        self.users.fail(&user_key, now);
        if let Some(address) = address {
            self.addresses.fail(&address, now);
        }
        Ok(())
    }

    /// The attempt was right: the username starts again from nothing, and the address gets its
    /// attempt back.
    pub fn succeeded(&self, username: &str, address: Option<IpAddr>) {
        self.users.clear(&username.to_owned());
        if let Some(address) = address {
            self.addresses.undo(&address);
        }
    }
}

/// Runs password hashes (argon2: memory-hard, tens of MiB each) at most `concurrency` at a
/// time, with at most `queue` more waiting; past that a request is answered 503 at once.
pub struct PasswordHashing {
    permits: Semaphore,
    /// Hashes running or waiting.
    admitted: AtomicUsize,
    max_admitted: usize,
    concurrency: usize,
    running: AtomicUsize,
    /// The most hashes seen running at once (for tests and metrics).
    pub peak_running: AtomicUsize,
}

impl PasswordHashing {
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            permits: Semaphore::new(concurrency),
            admitted: AtomicUsize::new(0),
            max_admitted: concurrency + queue,
            concurrency,
            running: AtomicUsize::new(0),
            peak_running: AtomicUsize::new(0),
        }
    }

    /// Hashes running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Hashes running or waiting for a slot now.
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// How many hashes may run at once.
    pub fn slots(&self) -> usize {
        self.concurrency
    }

    /// One hash per core by default: more would only queue inside the CPU.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Runs `hash` on the blocking pool once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let _admission = Admission(&self.admitted);
        if admitted >= self.max_admitted {
            return Err(ApiError::Unavailable(
                "too many sign-ins at once; retry shortly".into(),
            ));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("the password hashing pool is closed".into()))?;
        let running = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        let _running = Admission(&self.running);
        self.peak_running.fetch_max(running, Ordering::AcqRel);
        web::block(hash)
            .await
            .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
    }
}

/// Decrements its counter when dropped, however the request ends (a client may hang up).
struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[actix_web::test]
    async fn hashes_never_run_beyond_the_bound_and_the_queue_is_short() {
        let pool = Arc::new(PasswordHashing::new(2, 3));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let pool = pool.clone();
                actix_web::rt::spawn(async move {
                    pool.run(|| std::thread::sleep(Duration::from_millis(20)))
                        .await
                })
            })
            .collect();
        let mut ran = 0;
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => ran += 1,
                Err(ApiError::Unavailable(_)) => refused += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(ran + refused, 40);
        assert!(ran >= 2 && refused > 0, "ran {ran}, refused {refused}");
        assert!(pool.peak_running.load(Ordering::Acquire) <= 2);
        assert_eq!(pool.admitted.load(Ordering::Acquire), 0);
    }

    #[test]
    fn guesses_wait_per_username_and_per_address_and_success_clears_the_user() {
        let throttle = LoginThrottle::new(LoginLimits {
            free_failures_per_user: 2,
            free_failures_per_address: 5,
            max_delay: Duration::from_secs(60),
        });
        let here: Option<IpAddr> = "192.0.2.1".parse().ok();
        for _ in 0..3 {
            throttle.attempt("alice", here).unwrap();
        }
        let Err(ApiError::TooManyRequests { retry_after, .. }) = throttle.attempt("alice", here)
        else {
            panic!("the fourth guess should wait");
        };
        assert_eq!(retry_after, 1);
        // Unknown or not, another username is counted on its own, until the address is spent.
        throttle.attempt("bob", here).unwrap();
        throttle.attempt("bob", here).unwrap();
        throttle.attempt("nobody", here).unwrap();
        assert!(throttle.attempt("dave", here).is_err());
        let elsewhere: Option<IpAddr> = "192.0.2.2".parse().ok();
        throttle.attempt("carol", elsewhere).unwrap();
        throttle.succeeded("carol", elsewhere);
        assert!(throttle
            .users
            .wait(&"carol".to_owned(), Instant::now())
            .is_none());
    }
}
