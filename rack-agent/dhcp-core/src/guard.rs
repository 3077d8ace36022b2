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
use std::time::{Duration, Instant};

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
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<K, (f64, Instant)>,
    /// Events refused.
    pub limited: u64,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter allowing `rate`/s per key with `burst`, remembering at most
    /// `max_keys` keys.
    pub fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        RateLimiter {
            rate,
            burst,
            max_keys,
            buckets: HashMap::new(),
            limited: 0,
        }
    }

    /// Take one token for `key` at `now`; false when over the limit.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(key) {
            // Forget sources idle long enough to have refilled.
            let full_after = Duration::from_secs_f64(self.burst / self.rate.max(1e-9));
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < full_after);
            if self.buckets.len() >= self.max_keys {
                // Still full: a flood of distinct sources. Refuse newcomers
                // rather than forget the ones being limited.
                self.limited += 1;
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(key.clone()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.limited += 1;
            false
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        // Table full of active keys: a fourth source is refused, not evicting.
        assert!(!r.allow(&4, t0));
        // Later, idle keys are forgotten and newcomers get in.
        assert!(r.allow(&4, t0 + Duration::from_secs(2)));
        assert!(r.len() <= 3);
    }
}
