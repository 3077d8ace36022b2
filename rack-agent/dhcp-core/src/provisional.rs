//! Provisional leases: short leases from a small pool for machines the rack
//! does not know yet (seed 004: "a temporary lease for a machine seen for
//! the first time"; a number only once it has booted the probe).
//!
//! The pool is disjoint from the node addresses (the shell checks it lies
//! outside `node_base..broadcast`), so moving a machine from its provisional
//! address to its permanent one can never give one address to two machines:
//! the permanent address was nobody's, and the provisional address stays
//! reserved for its MAC until its lease has run out, even after the machine
//! got its number.
//!
//! State, but no clock: every call takes `now` (seconds on any monotonic
//! scale the caller keeps).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::mac::Mac;

/// How long an OFFER holds an address for a client that has not sent its
/// REQUEST yet (a starvation attack of DISCOVERs from random MACs frees its
/// addresses after this).
pub const OFFER_HOLD_SECS: u64 = 15;

/// One provisional lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub addr: Ipv4Addr,
    /// When it ends (same scale as `now`).
    pub expires: u64,
    /// Acknowledged (REQUEST → ACK), not only offered.
    pub bound: bool,
}

/// Why no provisional address was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every address is leased or held by an offer.
    #[error("provisional pool exhausted ({size} addresses leased or offered)")]
    Exhausted {
        /// Pool size.
        size: u32,
    },
    /// The client asked for an address that is not its provisional lease.
    #[error("{asked} is not this machine's provisional address")]
    NotYours {
        /// The address asked for.
        asked: Ipv4Addr,
    },
}

/// The provisional address pool of one rack.
#[derive(Debug, Clone)]
pub struct ProvisionalPool {
    first: u32,
    last: u32,
    lease_secs: u32,
    leases: HashMap<Mac, Lease>,
    holders: BTreeMap<u32, Mac>,
    next: u32,
}

impl ProvisionalPool {
    /// A pool of the addresses `first..=last` handing out `lease_secs`
    /// leases. `None` if the range is empty or reversed.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr, lease_secs: u32) -> Option<Self> {
        let (first, last) = (u32::from(first), u32::from(last));
        (first <= last).then_some(ProvisionalPool {
            first,
            last,
            lease_secs: lease_secs.max(1),
            leases: HashMap::new(),
            holders: BTreeMap::new(),
            next: first,
        })
    }

    /// Number of addresses.
    pub fn size(&self) -> u32 {
        self.last - self.first + 1
    }

    /// Lease length handed out.
    pub fn lease_secs(&self) -> u32 {
        self.lease_secs
    }

    /// Whether `addr` is in the pool.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(addr))
    }

    /// The lease of `mac`, if it has one that has not run out.
    pub fn lease(&self, mac: &Mac, now: u64) -> Option<Lease> {
        self.leases.get(mac).copied().filter(|l| l.expires > now)
    }

    /// Leases and offers not yet run out.
    pub fn in_use(&self, now: u64) -> usize {
        self.leases.values().filter(|l| l.expires > now).count()
    }

    /// Every lease, for state dumps.
    pub fn leases(&self) -> impl Iterator<Item = (&Mac, &Lease)> {
        self.leases.iter()
    }

    /// DISCOVER: the address to offer `mac` — its current lease if it has
    /// one, else a free address held for [`OFFER_HOLD_SECS`].
    pub fn offer(&mut self, mac: Mac, now: u64) -> Result<Ipv4Addr, PoolError> {
        if let Some(l) = self.leases.get_mut(&mac)
            && l.expires > now
        {
            if !l.bound {
                l.expires = now + OFFER_HOLD_SECS;
            }
            return Ok(l.addr);
        }
        let addr = self
            .free_address(now)
            .ok_or(PoolError::Exhausted { size: self.size() })?;
        self.put(
            mac,
            Lease {
                addr,
                expires: now + OFFER_HOLD_SECS,
                bound: false,
            },
        );
        Ok(addr)
    }

    /// REQUEST for `asked`: bind (or renew) it if it is `mac`'s lease or
    /// offer, or — after an agent restart, which forgets the pool — a free
    /// pool address nobody holds. Returns the lease.
    pub fn request(&mut self, mac: Mac, asked: Ipv4Addr, now: u64) -> Result<Lease, PoolError> {
        let n = u32::from(asked);
        if !self.contains(asked) {
            return Err(PoolError::NotYours { asked });
        }
        match self.holders.get(&n) {
            Some(holder) if *holder != mac => {
                let live = self.leases.get(holder).is_some_and(|l| l.expires > now);
                if live {
                    return Err(PoolError::NotYours { asked });
                }
            }
            _ => {}
        }
        if let Some(l) = self.leases.get(&mac)
            && l.expires > now
            && l.addr != asked
        {
            return Err(PoolError::NotYours { asked });
        }
        let lease = Lease {
            addr: asked,
            expires: now + u64::from(self.lease_secs),
            bound: true,
        };
        self.put(mac, lease);
        Ok(lease)
    }

    /// RELEASE: the address is free again.
    pub fn release(&mut self, mac: &Mac) {
        if let Some(l) = self.leases.remove(mac) {
            let n = u32::from(l.addr);
            if self.holders.get(&n) == Some(mac) {
                self.holders.remove(&n);
            }
        }
    }

    /// A machine got its number: an unbound offer is dropped at once, a bound
    /// lease is kept (the machine may still use the address) until it runs
    /// out, and is not renewed.
    pub fn numbered(&mut self, mac: &Mac) {
        if self.leases.get(mac).is_some_and(|l| !l.bound) {
            self.release(mac);
        }
    }

    /// Forget leases that ran out.
    pub fn expire(&mut self, now: u64) {
        let holders = &mut self.holders;
        self.leases.retain(|mac, l| {
            let keep = l.expires > now;
            if !keep {
                let n = u32::from(l.addr);
                if holders.get(&n) == Some(mac) {
                    holders.remove(&n);
                }
            }
            keep
        });
    }

    fn put(&mut self, mac: Mac, lease: Lease) {
        if let Some(old) = self.leases.insert(mac, lease) {
            let n = u32::from(old.addr);
            if old.addr != lease.addr && self.holders.get(&n) == Some(&mac) {
                self.holders.remove(&n);
            }
        }
        if let Some(prev) = self.holders.insert(u32::from(lease.addr), mac)
            && prev != mac
        {
            self.leases.remove(&prev);
        }
    }

    /// The next address nobody holds, round robin (so a just-freed address
    /// is the last to be reused).
    fn free_address(&mut self, now: u64) -> Option<Ipv4Addr> {
        let size = self.size();
        for i in 0..size {
            let n = self.first + (self.next - self.first + i) % size;
            let free = match self.holders.get(&n) {
                None => true,
                Some(mac) => self.leases.get(mac).is_none_or(|l| l.expires <= now),
            };
            if free {
                self.next = if n == self.last { self.first } else { n + 1 };
                return Some(Ipv4Addr::from(n));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, i])
    }

    fn pool(n: u8) -> ProvisionalPool {
        ProvisionalPool::new(
            Ipv4Addr::new(10, 0, 0, 200),
            Ipv4Addr::new(10, 0, 0, 200 + n - 1),
            60,
        )
        .unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn offer_request_renew() {
        let mut p = pool(2);
        let a = p.offer(mac(1), 0);
        assert_eq!(a, Ok(Ipv4Addr::new(10, 0, 0, 200)));
        // The retransmitted DISCOVER gets the same address.
        assert_eq!(p.offer(mac(1), 1), a);
        let l = p.request(mac(1), Ipv4Addr::new(10, 0, 0, 200), 2);
        assert_eq!(l.map(|l| (l.bound, l.expires)), Ok((true, 62)));
        // Someone else cannot take it.
        assert!(p.request(mac(2), Ipv4Addr::new(10, 0, 0, 200), 3).is_err());
        assert_eq!(p.offer(mac(2), 3), Ok(Ipv4Addr::new(10, 0, 0, 201)));
        // A third machine: exhausted while both hold theirs.
        assert_eq!(p.offer(mac(3), 4), Err(PoolError::Exhausted { size: 2 }));
        // mac(2)'s unanswered offer runs out after OFFER_HOLD_SECS.
        assert_eq!(
            p.offer(mac(3), 4 + OFFER_HOLD_SECS),
            Ok(Ipv4Addr::new(10, 0, 0, 201))
        );
    }

    #[test]
    fn numbered_machine_keeps_its_bound_address_until_expiry() {
        let mut p = pool(1);
        let addr = Ipv4Addr::new(10, 0, 0, 200);
        assert!(p.request(mac(1), addr, 0).is_ok());
        p.numbered(&mac(1));
        assert_eq!(p.offer(mac(2), 10), Err(PoolError::Exhausted { size: 1 }));
        assert_eq!(p.offer(mac(2), 60), Ok(addr));
        p.expire(61);
        assert_eq!(p.lease(&mac(1), 61), None);
    }

    #[test]
    fn restarted_agent_rebinds_a_free_address() {
        let mut p = pool(4);
        let addr = Ipv4Addr::new(10, 0, 0, 202);
        assert!(p.request(mac(9), addr, 100).is_ok());
        assert!(
            p.request(mac(9), Ipv4Addr::new(10, 0, 0, 9), 100).is_err(),
            "outside the pool"
        );
    }

    proptest::proptest! {
        /// Whatever the sequence of DISCOVERs, REQUESTs, RELEASEs and time
        /// steps, no two MACs ever hold one live address.
        #[test]
        fn never_two_holders(ops in proptest::collection::vec((0u8..4, 0u8..8, 0u8..6, 0u64..30), 1..200)) {
            let mut p = pool(4);
            let mut now = 0u64;
            for (op, m, a, dt) in ops {
                now += dt;
                match op {
                    0 => { let _ = p.offer(mac(m), now); }
                    1 => { let _ = p.request(mac(m), Ipv4Addr::new(10, 0, 0, 198 + a), now); }
                    2 => p.release(&mac(m)),
                    _ => p.expire(now),
                }
                let mut seen = std::collections::HashSet::new();
                for (_, l) in p.leases().filter(|(_, l)| l.expires > now) {
                    proptest::prop_assert!(seen.insert(l.addr), "two live leases on {}", l.addr);
                    proptest::prop_assert!(p.contains(l.addr));
                }
            }
        }
    }
}
