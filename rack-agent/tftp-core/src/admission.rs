//! Admission control: requests waiting for a free transfer slot.
//!
//! Requests are admitted first come, first served: [`AdmissionQueue::pop`]
//! when a slot is free and admission is not paused by the bandwidth cap,
//! [`AdmissionQueue::pop_due`] for the oldest request once it has waited
//! the first-answer deadline (the server then admits it over the cap, within
//! `max_overflow`: see [`crate::Config`]).
//!
//! Why admit over the cap rather than answer "something" early: any answer
//! (an OACK) starts the client's much shorter inter-packet timer, so an
//! answer must be followed by data at the normal pace; a transfer is cheap
//! (a few hundred bytes of state, its file is a shared slice), and with
//! round-robin service a bounded number of extra transfers only lengthens
//! the round by a few milliseconds. So the first answer is a real start.
//!
//! Bounds: at most `capacity` entries. A waiting client keeps resending its
//! request (iPXE at 0.26, 0.81, 1.85, 3.88, 7.95 s; EDK2 every 4 s); each
//! repeat refreshes its entry. An entry not refreshed for `stale_after` is
//! presumed abandoned (the ROM gave up) and is skipped instead of admitted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::options::Negotiated;
use crate::path::SafePath;
use crate::stats::Stats;

/// Identifies a request: the client's address and port. A port asks for
/// one thing at a time: a new request from it replaces the one before.
pub(crate) type RequestKey = SocketAddr;

/// What [`AdmissionQueue::touch`] found for a client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touched {
    /// Nothing waits for this address and port.
    Absent,
    /// The same request waits: refreshed (a retransmission).
    Refreshed,
    /// Another request from this address and port waited: dropped, the
    /// new one replaces it.
    Replaced,
}

/// A request that was accepted (file found, options negotiated) but waits
/// for a transfer slot.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) client: SocketAddr,
    pub(crate) path: SafePath,
    pub(crate) data: crate::source::Content,
    pub(crate) negotiated: Negotiated,
    /// The request as asked (path, mode and options): a repeat with the
    /// same signature is a retransmission, another one a new request.
    pub(crate) sig: u64,
    /// It replaced an exchange of the same address and port whose
    /// client's abort may still be on its way: one ERROR from the client
    /// is taken as that abort's, not this transfer's.
    pub(crate) after_probe: bool,
    /// When the client first asked.
    pub(crate) first_seen: Instant,
    /// When the client last asked.
    pub(crate) last_seen: Instant,
    /// How often the client repeated the request while it waited.
    pub(crate) repeats: u32,
}

/// FIFO of waiting requests, bounded, deduplicated by [`RequestKey`].
#[derive(Debug)]
pub(crate) struct AdmissionQueue {
    order: VecDeque<RequestKey>,
    entries: HashMap<RequestKey, Pending>,
    capacity: usize,
    stale_after: Duration,
}

impl AdmissionQueue {
    pub(crate) fn new(capacity: usize, stale_after: Duration) -> AdmissionQueue {
        AdmissionQueue {
            order: VecDeque::new(),
            entries: HashMap::new(),
            capacity,
            stale_after,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// A request with signature `sig` from `key`: refreshes the same
    /// request waiting (merged, answered once), or drops another one from
    /// that address and port, which the new request replaces.
    pub(crate) fn touch(&mut self, key: &RequestKey, sig: u64, now: Instant) -> Touched {
        match self.entries.get_mut(key) {
            Some(pending) if pending.sig == sig => {
                pending.last_seen = pending.last_seen.max(now);
                pending.repeats = pending.repeats.saturating_add(1);
                Touched::Refreshed
            }
            Some(_) => {
                // Its place in `order` stays: the new request pushed under
                // the same key is admitted from there, a later duplicate
                // key finds nothing.
                self.entries.remove(key);
                Touched::Replaced
            }
            None => Touched::Absent,
        }
    }

    /// Queues a request and returns `true`. When full, abandoned entries
    /// are purged first; if still full the request is dropped (`false`).
    pub(crate) fn push(&mut self, now: Instant, pending: Pending, stats: &mut Stats) -> bool {
        if self.entries.len() >= self.capacity {
            self.purge_stale(now, stats);
        }
        if self.entries.len() >= self.capacity {
            return false;
        }
        let key = pending.client;
        self.order.push_back(key);
        self.entries.insert(key, pending);
        true
    }

    /// The next request to admit, skipping abandoned ones.
    pub(crate) fn pop(&mut self, now: Instant, stats: &mut Stats) -> Option<Pending> {
        while let Some(key) = self.order.pop_front() {
            let Some(pending) = self.entries.remove(&key) else {
                continue;
            };
            if self.is_stale(&pending, now) {
                stats.queue_expired += 1;
                continue;
            }
            return Some(pending);
        }
        None
    }

    /// The oldest request if it has waited `deadline` or longer, skipping
    /// abandoned ones.
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        deadline: Duration,
        stats: &mut Stats,
    ) -> Option<Pending> {
        while let Some(key) = self.order.front() {
            let Some(pending) = self.entries.get(key) else {
                self.order.pop_front();
                continue;
            };
            if self.is_stale(pending, now) {
                stats.queue_expired += 1;
                let key = self.order.pop_front()?;
                self.entries.remove(&key);
                continue;
            }
            if now.saturating_duration_since(pending.first_seen) < deadline {
                return None;
            }
            let key = self.order.pop_front()?;
            return self.entries.remove(&key);
        }
        None
    }

    /// When the oldest waiting request first asked.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.order
            .iter()
            .find_map(|key| self.entries.get(key))
            .map(|p| p.first_seen)
    }

    /// The waiting requests, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.order.iter().filter_map(|key| self.entries.get(key))
    }

    fn is_stale(&self, pending: &Pending, now: Instant) -> bool {
        now.saturating_duration_since(pending.last_seen) > self.stale_after
    }

    fn purge_stale(&mut self, now: Instant, stats: &mut Stats) {
        let stale_after = self.stale_after;
        let before = self.entries.len();
        self.entries
            .retain(|_, p| now.saturating_duration_since(p.last_seen) <= stale_after);
        let entries = &self.entries;
        self.order.retain(|key| entries.contains_key(key));
        stats.queue_expired += (before - self.entries.len()) as u64;
    }
}
