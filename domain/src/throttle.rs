//! Growing delays after failed sign-ins: a few failures are free, then each further one doubles
//! the wait before the next attempt is even checked, up to a ceiling. The wait is the whole
//! penalty: once it passed, a correct password signs in and clears the count.

use std::time::{Duration, Instant};

/// How failures of one key (a username, an address) turn into a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Failures that cost nothing.
    pub free_failures: u32,
    /// The wait after the first failure past the free ones; each further failure doubles it.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// A key with no failure for this long starts again from nothing.
    pub forget_after: Duration,
}

impl BackoffPolicy {
    /// The wait after `failures` failures.
    pub fn delay_after(&self, failures: u32) -> Duration {
        let Some(past_free) = failures.checked_sub(self.free_failures) else {
            return Duration::ZERO;
        };
        if past_free == 0 {
            return Duration::ZERO;
        }
        let doublings = (past_free - 1).min(30);
        self.first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// The failures of one key so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failures {
    pub count: u32,
    pub last: Instant,
}

impl Failures {
    /// How long an attempt must still wait at `now`; `None` when it may go ahead.
    pub fn wait(&self, policy: &BackoffPolicy, now: Instant) -> Option<Duration> {
        let delay = policy.delay_after(self.count);
        if delay.is_zero() {
            // Even when a concurrent attempt recorded its failure after `now` was read.
            return None;
        }
        let until = self.last + delay;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// The failures after one more at `now` (a count idle past `forget_after` starts afresh).
    pub fn after_failure(previous: Option<Failures>, policy: &BackoffPolicy, now: Instant) -> Self {
        let count = match previous {
            Some(f) if !f.forgotten(policy, now) => f.count.saturating_add(1),
            _ => 1,
        };
        Failures { count, last: now }
    }

    /// Whether the key may be dropped: it makes no attempt wait and its count has lapsed.
    pub fn forgotten(&self, policy: &BackoffPolicy, now: Instant) -> bool {
        let keep_for = policy.forget_after.max(policy.delay_after(self.count));
        now.saturating_duration_since(self.last) >= keep_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BackoffPolicy = BackoffPolicy {
        free_failures: 3,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        forget_after: Duration::from_secs(900),
    };

    #[test]
    fn free_failures_cost_nothing_then_delays_double_up_to_the_ceiling() {
        let delays: Vec<u64> = (0..12).map(|n| POLICY.delay_after(n).as_secs()).collect();
        assert_eq!(delays, [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(POLICY.delay_after(u32::MAX), POLICY.max_delay);
    }

    #[test]
    fn an_attempt_waits_out_the_delay_of_the_last_failure() {
        let start = Instant::now();
        let mut failures = None;
        for _ in 0..4 {
            failures = Some(Failures::after_failure(failures, &POLICY, start));
        }
        let failures = failures.unwrap();
        assert_eq!(failures.count, 4);
        assert_eq!(failures.wait(&POLICY, start), Some(Duration::from_secs(1)));
        assert!(failures
            .wait(&POLICY, start + Duration::from_millis(1500))
            .is_none());
        let three = Failures {
            count: 3,
            last: start,
        };
        assert!(three.wait(&POLICY, start).is_none());
        let later = Failures {
            count: 3,
            last: start + Duration::from_millis(5),
        };
        assert!(
            later.wait(&POLICY, start).is_none(),
            "free, however the clocks raced"
        );
    }

    #[test]
    fn idle_keys_are_forgotten_and_start_again() {
        let start = Instant::now();
        let old = Failures {
            count: 20,
            last: start,
        };
        assert!(!old.forgotten(&POLICY, start + Duration::from_secs(899)));
        let later = start + Duration::from_secs(900);
        assert!(old.forgotten(&POLICY, later));
        assert_eq!(Failures::after_failure(Some(old), &POLICY, later).count, 1);
    }
}
