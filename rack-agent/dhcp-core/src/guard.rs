//! Front-door guards of the rack's UDP servers: who may ask at all (rack
//! subnets) and how often (per-key token buckets). The DHCP [`Server`]
//! applies them to every datagram; the agent's TFTP shell uses the same two
//! types. Pure: time is passed in. Bounded: the table of keys is capped, and
//! idle entries are forgotten.
//!
//! [`Server`]: crate::Server

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

use ipnet::Ipv4Net;

/// Sources allowed to use a server.
#[derive(Debug, Clone)]
pub struct Allow {
    nets: Vec<Ipv4Net>,
}

impl Allow {
    /// Allow these subnets (an unconfigured client of a rack has 0.0.0.0,
    /// which DHCP must accept; TFTP and HTTP clients always have an address).
    pub fn new(nets: Vec<Ipv4Net>) -> Self {
        Allow { nets }
    }

    /// True when `ip` may be answered.
    pub fn permits(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.nets.iter().any(|n| n.contains(&v4)),
            IpAddr::V6(_) => false,
        }
    }

    /// The allowed subnets.
    pub fn nets(&self) -> &[Ipv4Net] {
        &self.nets
    }
}

/// Per-key token buckets: `rate` events per second with a `burst`.
///
/// Bounded with O(1) work per event whatever arrives: keys live in two
/// generations of at most `max_keys / 2` each; a key seen again moves to
/// the current one, and when the current one fills up the older generation
/// is forgotten whole. A flood of new keys therefore only makes idle keys
/// be forgotten sooner (they start again with a full bucket): it never
/// refuses a newcomer or a known client for lack of room, and never scans
/// the table.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    current: HashMap<K, Bucket>,
    previous: HashMap<K, Bucket>,
    /// Events refused.
    pub limited: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `rate`/s per key with `burst`, remembering at most
    /// `max_keys` keys.
    pub fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        RateLimiter {
            rate,
            burst,
            max_keys: max_keys.max(2),
            current: HashMap::new(),
            previous: HashMap::new(),
            limited: 0,
        }
    }

    /// Take one token for `key` at `now`; false when over the limit.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        if !self.current.contains_key(key) {
            let bucket = self.previous.remove(key).unwrap_or(Bucket {
                tokens: self.burst,
                last: now,
            });
            if self.current.len() >= self.max_keys / 2 {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(key.clone(), bucket);
        }
        let Some(b) = self.current.get_mut(key) else {
            return true;
        };
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            self.limited += 1;
            false
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn allow_list() {
        let a = Allow::new(vec!["10.0.0.0/24".parse().unwrap()]);
        assert!(a.permits("10.0.0.7".parse().unwrap()));
        assert!(!a.permits("10.0.1.7".parse().unwrap()));
        assert!(!a.permits("::1".parse().unwrap()));
    }

    #[test]
    fn bucket_refills_and_bounds_keys() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 5.0, 3);
        let allowed = (0..20).filter(|_| r.allow(&1u32, t0)).count();
        assert_eq!(allowed, 5, "burst");
        assert!(!r.allow(&1, t0 + Duration::from_millis(50)));
        assert!(
            r.allow(&1, t0 + Duration::from_millis(150)),
            "one token per 100 ms"
        );
        assert!(r.allow(&2, t0) && r.allow(&3, t0));
        // Past the bound, a newcomer still gets in (the oldest generation
        // is forgotten), and the table stays bounded.
        assert!(r.allow(&4, t0));
        assert!(r.len() <= 3);
        for k in 5..1_000 {
            assert!(r.allow(&k, t0), "newcomer {k} refused");
            assert!(r.len() <= 3);
        }
    }

    #[test]
    fn an_active_key_keeps_its_bucket_through_a_flood_of_others() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 5.0, 1_000);
        // Key 0 spends its burst, then a flood of 100,000 other keys
        // interleaved with it: it stays limited (its bucket is not reset
        // while it is active), and no newcomer is refused.
        for _ in 0..5 {
            assert!(r.allow(&0u32, t0));
        }
        let mut zero_allowed = 0;
        for k in 1..100_000u32 {
            assert!(r.allow(&k, t0), "newcomer {k} refused");
            if k % 100 == 0 && r.allow(&0, t0) {
                zero_allowed += 1;
            }
        }
        assert_eq!(zero_allowed, 0, "an active key's bucket survived the flood");
        assert!(r.len() <= 1_000);
    }
}
