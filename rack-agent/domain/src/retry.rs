//! When to try the coordinator again: a doubling backoff between a floor
//! and a ceiling, and the rotation through the configured coordinator
//! addresses. Pure: every call takes `now`, so the schedule is tested on a
//! virtual clock.

use std::time::{Duration, Instant};

/// First wait after a failure.
pub const FLOOR: Duration = Duration::from_millis(200);
/// Longest wait between attempts (a coordinator that comes back is found
/// within this).
pub const CEILING: Duration = Duration::from_secs(5);

/// A doubling backoff that rotates through a list of upstream addresses.
#[derive(Debug, Clone)]
pub struct Backoff {
    floor: Duration,
    ceiling: Duration,
    next_wait: Duration,
    retry_at: Option<Instant>,
    attempt: usize,
    failures: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(FLOOR, CEILING)
    }
}

impl Backoff {
    /// Waits of `floor`, doubling up to `ceiling` (raised to `floor` if
    /// lower).
    pub fn new(floor: Duration, ceiling: Duration) -> Self {
        Backoff {
            floor,
            ceiling: ceiling.max(floor),
            next_wait: floor,
            retry_at: None,
            attempt: 0,
            failures: 0,
        }
    }

    /// Which of `n` upstream addresses the next attempt uses (the next one
    /// after each failure; 0 when `n` is 0).
    pub fn which(&self, n: usize) -> usize {
        self.attempt.checked_rem(n).unwrap_or(0)
    }

    /// An attempt failed at `now`: the next one is due at the returned
    /// instant, on the next address.
    pub fn failed(&mut self, now: Instant) -> Instant {
        let at = now + self.next_wait;
        self.retry_at = Some(at);
        self.next_wait = (self.next_wait * 2).min(self.ceiling);
        self.attempt = self.attempt.wrapping_add(1);
        self.failures += 1;
        at
    }

    /// An attempt succeeded: the next failure waits the floor again (the
    /// address that worked is kept).
    pub fn succeeded(&mut self) {
        self.next_wait = self.floor;
        self.retry_at = None;
    }

    /// Whether an attempt may be made at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    /// When the next attempt is due, if one is waited for.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Failures so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_double_to_the_ceiling_and_reset_on_success() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.ready(t0));
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let at = b.failed(now);
            assert!(!b.ready(at - ms(1)));
            assert!(b.ready(at));
            waits.push((at - now).as_millis());
            now = at;
        }
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.failures(), 8);
        b.succeeded();
        assert!(b.ready(now));
        assert_eq!(b.failed(now) - now, FLOOR);
    }

    #[test]
    fn each_failure_moves_to_the_next_address() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let seen: Vec<usize> = (0..5)
            .map(|_| {
                let w = b.which(3);
                b.failed(t0);
                w
            })
            .collect();
        assert_eq!(seen, [0, 1, 2, 0, 1]);
        // A success keeps the address that worked.
        b.succeeded();
        assert_eq!(b.which(3), 2);
        assert_eq!(b.which(0), 0, "no address configured: no panic");
    }
}
