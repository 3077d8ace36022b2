//! Requests made to a [`Core`](super::Core) that wait for their outcome:
//! one generic map of waiters, [`Pending`], with the single expiry rule, and
//! the three kinds a replica keeps ([`PendingRequests`]: writes, membership
//! changes, read barriers). An outcome leaves as an [`Event`].
//!
//! Invariants: a request id is answered at most once (an answer removes its
//! waiter); a waiter older than the request limit is failed, never kept; when
//! several waiters are failed at once, writes go first, then membership
//! changes, then reads, each in request-id order.
//!
//! Must not depend on: raft-rs, storage, the owner thread or a clock (time
//! is the tick count the caller passes in).

use std::collections::BTreeMap;

use rackboot_state::{Outcome, StateError};

use super::ReplicaError;

/// The outcome of a request, for the request's id.
#[derive(Debug)]
pub enum Event {
    /// A proposed write.
    Write {
        /// Request id returned by [`Core::propose`](super::Core::propose).
        req: u64,
        /// The state machine's answer, or why there is none.
        result: Result<Result<Outcome, StateError>, ReplicaError>,
    },
    /// A read barrier or membership change.
    Done {
        /// Request id returned by [`Core::read_index`](super::Core::read_index)
        /// or [`Core::change_members`](super::Core::change_members).
        req: u64,
        /// Success, or why not.
        result: Result<(), ReplicaError>,
    },
}

/// One waiting request: the tick it was made at and what its kind tracks.
struct Waiter<T> {
    since: u64,
    progress: T,
}

/// Waiting requests of one kind, by request id.
pub(super) struct Pending<T> {
    waiting: BTreeMap<u64, Waiter<T>>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> Pending<T> {
    /// Start waiting for request `id`, made at tick `since`.
    pub(super) fn insert(&mut self, id: u64, since: u64, progress: T) {
        self.waiting.insert(id, Waiter { since, progress });
    }

    /// Stop waiting for `id`; true when it was waited for.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        self.waiting.remove(&id).is_some()
    }

    /// What request `id` tracks, when it is waited for.
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.waiting.get_mut(&id).map(|w| &mut w.progress)
    }

    /// No request waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Ids of the requests whose progress satisfies `pred`, in order.
    pub(super) fn ids_where(&self, pred: impl Fn(&T) -> bool) -> Vec<u64> {
        self.waiting
            .iter()
            .filter(|(_, w)| pred(&w.progress))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Remove and return (in order) the requests waiting for more than
    /// `limit` ticks at tick `now`.
    pub(super) fn take_expired(&mut self, now: u64, limit: u64) -> Vec<u64> {
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.since) > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.waiting.remove(id);
        }
        expired
    }

    /// Remove and return (in order) every waiting request.
    pub(super) fn take_all(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.waiting).into_keys().collect()
    }
}

/// How far a read barrier got.
pub(super) struct ReadProgress {
    /// Tick its ReadIndex request was last sent at.
    pub(super) last_sent: u64,
    /// The commit index the leader answered with, once it did.
    pub(super) index: Option<u64>,
}

/// Everything a replica waits for, by kind.
#[derive(Default)]
pub(super) struct PendingRequests {
    /// Proposed writes, answered by [`Event::Write`].
    pub(super) writes: Pending<()>,
    /// Membership changes, answered by [`Event::Done`].
    pub(super) changes: Pending<()>,
    /// Read barriers, answered by [`Event::Done`].
    pub(super) reads: Pending<ReadProgress>,
}

impl PendingRequests {
    /// Nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.reads.is_empty() && self.changes.is_empty()
    }

    /// Fail every request waiting for more than `limit` ticks at tick `now`.
    pub(super) fn expire(&mut self, now: u64, limit: u64, events: &mut Vec<Event>) {
        let writes = self.writes.take_expired(now, limit);
        let changes = self.changes.take_expired(now, limit);
        let reads = self.reads.take_expired(now, limit);
        let err = ReplicaError::Refused("gave up waiting".to_string());
        fail(writes, changes, reads, &err, events);
    }

    /// Fail every waiting request with `err`.
    pub(super) fn fail_all(&mut self, err: &ReplicaError, events: &mut Vec<Event>) {
        let writes = self.writes.take_all();
        let changes = self.changes.take_all();
        let reads = self.reads.take_all();
        fail(writes, changes, reads, err, events);
    }
}

fn fail(
    writes: Vec<u64>,
    changes: Vec<u64>,
    reads: Vec<u64>,
    err: &ReplicaError,
    events: &mut Vec<Event>,
) {
    for req in writes {
        events.push(Event::Write {
            req,
            result: Err(err.clone()),
        });
    }
    for req in changes.into_iter().chain(reads) {
        events.push(Event::Done {
            req,
            result: Err(err.clone()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_takes_only_requests_older_than_the_limit() {
        let mut p: Pending<()> = Pending::default();
        p.insert(1, 0, ());
        p.insert(2, 5, ());
        p.insert(3, 10, ());
        assert_eq!(p.take_expired(10, 5), vec![1]);
        assert_eq!(p.take_expired(10, 5), Vec::<u64>::new());
        assert_eq!(p.take_expired(16, 5), vec![2, 3]);
        assert!(p.is_empty());
    }

    #[test]
    fn failing_orders_writes_then_changes_then_reads() {
        let mut r = PendingRequests::default();
        r.reads.insert(
            1,
            0,
            ReadProgress {
                last_sent: 0,
                index: None,
            },
        );
        r.changes.insert(2, 0, ());
        r.writes.insert(3, 0, ());
        let mut events = Vec::new();
        r.fail_all(&ReplicaError::Stopped, &mut events);
        let order: Vec<(bool, u64)> = events
            .iter()
            .map(|e| match e {
                Event::Write { req, .. } => (true, *req),
                Event::Done { req, .. } => (false, *req),
            })
            .collect();
        assert_eq!(order, vec![(true, 3), (false, 2), (false, 1)]);
        assert!(r.is_empty());
    }
}
