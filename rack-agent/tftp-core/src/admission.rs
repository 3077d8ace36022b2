//! Admission control: requests waiting for a free transfer slot.
//!
//! This is the scheduler seam. The server only calls [`AdmissionQueue::touch`],
//! [`AdmissionQueue::push`], [`AdmissionQueue::pop`] and
//! [`AdmissionQueue::len`]; the policy here is plain FIFO. A smarter
//! scheduler (per-link bandwidth, deferring new clients) replaces this type
//! without touching the transfer logic.
//!
//! Bounds: at most `capacity` entries. A waiting client keeps resending its
//! request (iPXE at 0.26, 0.81, 1.85, 3.88, 7.95 s; EDK2 every 4 s); each
//! repeat refreshes its entry. An entry not refreshed for `stale_after` is
//! presumed abandoned (the ROM gave up) and is skipped instead of admitted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::options::Negotiated;
use crate::path::SafePath;
use crate::stats::Stats;

/// Identifies a request: the client's address and port, and the file.
pub(crate) type RequestKey = (SocketAddr, SafePath);

/// A request that was accepted (file found, options negotiated) but waits
/// for a transfer slot.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) client: SocketAddr,
    pub(crate) path: SafePath,
    pub(crate) data: Bytes,
    pub(crate) negotiated: Negotiated,
    pub(crate) last_seen: Instant,
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

    /// Refreshes a waiting request repeated by its client. Returns whether
    /// it was waiting.
    pub(crate) fn touch(&mut self, key: &RequestKey, now: Instant) -> bool {
        match self.entries.get_mut(key) {
            Some(pending) => {
                pending.last_seen = pending.last_seen.max(now);
                true
            }
            None => false,
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
        let key = (pending.client, pending.path.clone());
        self.order.push_back(key.clone());
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
