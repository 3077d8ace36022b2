//! The send scheduler: which transfer's packet leaves next.
//!
//! Transfers do not push packets into a FIFO. Handling an ACK only *marks*
//! the transfer as having a window to send (seed 003: "pull them out ASAP
//! and mark that client as needing a response"); the packets are built when
//! [`crate::Server::poll_transmit`] asks for one, in this order:
//!
//! 1. **Control** packets (ERROR replies from the listener, ERROR 5 to a
//!    stranger): tiny, sent at once, still charged to the bandwidth cap.
//! 2. **[`Priority::Retry`]**: transfers whose client shows it missed data
//!    (a duplicate ACK, an ACK of part of a window, the server's retransmit
//!    timer, a repeated request) or that waited longer than one tick. Served
//!    before anyone doing well, so a client that missed once does not keep
//!    missing (the "capture effect" of seed 002).
//! 3. **[`Priority::RoundRobin`]**: everyone else, in the order they became
//!    ready. A transfer sends its whole window and leaves the ring until its
//!    client ACKs, then rejoins at the back: each ready transfer gets one
//!    window per round, and a client that ACKs fast cannot lap the others.
//!
//! Within a class the order is the sequence number given when the transfer
//! became ready; a promotion keeps it, so a transfer promoted after waiting
//! goes ahead of retries that became ready later. A transfer keeps its place
//! while its window is only partly sent (the bandwidth cap ran out), so
//! windows stay contiguous unless a retry pre-empts them.
//!
//! Every operation is O(log n) in the number of transfers with something to
//! send.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::bucket::later;
use crate::id::{Local, TransferId};
use crate::packet::Packet;

/// The scheduling class of a transfer with packets waiting to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Its client missed data or waited too long: served first.
    Retry,
    /// Doing well: one window per round, in turn.
    RoundRobin,
}

/// A packet not tied to a transfer's window (ERROR replies).
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) local: Local,
    pub(crate) dest: SocketAddr,
    pub(crate) packet: Packet,
}

/// What a transfer has waiting to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) priority: Priority,
    /// Packets not yet sent in the current pass.
    pub(crate) packets: u64,
    /// Their encoded size, in bytes.
    pub(crate) bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    priority: Priority,
    seq: u64,
    since: Instant,
    packets: u64,
    bytes: u64,
}

type Key = (Priority, u64, TransferId);

/// Transfers with packets to send, ordered by (class, turn).
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    order: BTreeSet<Key>,
    entries: HashMap<TransferId, Entry>,
    next_seq: u64,
    packets: u64,
    bytes: u64,
    retry: usize,
    /// ERROR replies, sent before any window.
    pub(crate) control: VecDeque<Outgoing>,
}

impl Scheduler {
    /// Brings a transfer's entry in line with what it wants to send.
    /// Classes only go up while waiting (a promotion is never undone until
    /// the pass is sent). Returns whether the transfer was promoted from
    /// round-robin to retry.
    pub(crate) fn update(&mut self, id: TransferId, want: Option<Want>, now: Instant) -> bool {
        let Some(want) = want else {
            self.remove(id);
            return false;
        };
        let mut promoted = false;
        let entry = match self.entries.get(&id).copied() {
            Some(mut entry) => {
                self.packets -= entry.packets;
                self.bytes -= entry.bytes;
                if want.priority < entry.priority {
                    self.order.remove(&(entry.priority, entry.seq, id));
                    self.set_class(&mut entry, want.priority, id);
                    promoted = true;
                }
                entry.packets = want.packets;
                entry.bytes = want.bytes;
                entry
            }
            None => {
                let entry = Entry {
                    priority: want.priority,
                    seq: self.next_seq,
                    since: now,
                    packets: want.packets,
                    bytes: want.bytes,
                };
                self.next_seq += 1;
                self.order.insert((entry.priority, entry.seq, id));
                if entry.priority == Priority::Retry {
                    self.retry += 1;
                }
                entry
            }
        };
        self.packets += entry.packets;
        self.bytes += entry.bytes;
        self.entries.insert(id, entry);
        promoted
    }

    /// Forgets a transfer (its pass is sent, or it closed).
    pub(crate) fn remove(&mut self, id: TransferId) {
        if let Some(entry) = self.entries.remove(&id) {
            self.order.remove(&(entry.priority, entry.seq, id));
            self.packets -= entry.packets;
            self.bytes -= entry.bytes;
            if entry.priority == Priority::Retry {
                self.retry -= 1;
            }
        }
    }

    /// The transfer whose packet goes next.
    pub(crate) fn first(&self) -> Option<TransferId> {
        self.order.first().map(|&(_, _, id)| id)
    }

    /// The class a transfer waits in, if it waits.
    pub(crate) fn priority(&self, id: TransferId) -> Option<Priority> {
        self.entries.get(&id).map(|e| e.priority)
    }

    /// Promotes every round-robin transfer that has waited `tick` or longer
    /// (every active client is served each tick). Returns how many.
    pub(crate) fn promote_aged(&mut self, now: Instant, tick: Duration) -> usize {
        let mut promoted = 0;
        while let Some(&(priority, seq, id)) = self.oldest_round_robin() {
            let Some(mut entry) = self.entries.get(&id).copied() else {
                // Unreachable: `order` and `entries` change together.
                self.order.remove(&(priority, seq, id));
                continue;
            };
            if later(entry.since, tick) > now {
                break;
            }
            self.order.remove(&(priority, seq, id));
            self.set_class(&mut entry, Priority::Retry, id);
            self.entries.insert(id, entry);
            promoted += 1;
        }
        promoted
    }

    /// When the oldest round-robin transfer will have waited a tick.
    pub(crate) fn aging_deadline(&self, tick: Duration) -> Option<Instant> {
        let &(_, _, id) = self.oldest_round_robin()?;
        self.entries.get(&id).map(|e| later(e.since, tick))
    }

    /// Transfers with packets waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Of those, in the retry class.
    pub(crate) fn retry_len(&self) -> usize {
        self.retry
    }

    /// Packets waiting (control packets excluded).
    pub(crate) fn packets(&self) -> u64 {
        self.packets
    }

    /// Encoded bytes waiting (control packets excluded).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn oldest_round_robin(&self) -> Option<&Key> {
        self.order
            .range((
                Bound::Included((Priority::RoundRobin, 0, TransferId::MIN)),
                Bound::Unbounded,
            ))
            .next()
    }

    /// Moves `entry` (already out of `order`) into `class`.
    fn set_class(&mut self, entry: &mut Entry, class: Priority, id: TransferId) {
        if entry.priority == Priority::Retry {
            self.retry -= 1;
        }
        if class == Priority::Retry {
            self.retry += 1;
        }
        entry.priority = class;
        self.order.insert((class, entry.seq, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(priority: Priority) -> Option<Want> {
        Some(Want {
            priority,
            packets: 1,
            bytes: 100,
        })
    }

    fn id(n: u64) -> TransferId {
        TransferId::from_raw(n)
    }

    #[test]
    fn retries_first_then_round_robin_in_turn() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        for n in 1..=3 {
            s.update(id(n), want(Priority::RoundRobin), t0);
        }
        s.update(id(4), want(Priority::Retry), t0);
        assert_eq!(s.first(), Some(id(4)));
        assert_eq!((s.len(), s.retry_len(), s.bytes()), (4, 1, 400));
        s.remove(id(4));
        assert_eq!(s.first(), Some(id(1)));
        // Promoting 3 puts it ahead of 1 and 2; demotion is ignored.
        assert!(s.update(id(3), want(Priority::Retry), t0));
        assert!(!s.update(id(3), want(Priority::RoundRobin), t0));
        assert_eq!(s.priority(id(3)), Some(Priority::Retry));
        assert_eq!(s.first(), Some(id(3)));
        s.remove(id(3));
        s.remove(id(1));
        // 1 rejoins at the back, behind 2.
        s.update(id(1), want(Priority::RoundRobin), t0);
        assert_eq!(s.first(), Some(id(2)));
        s.update(id(2), None, t0);
        assert_eq!(s.first(), Some(id(1)));
        s.remove(id(1));
        assert_eq!(
            (s.len(), s.retry_len(), s.packets(), s.bytes()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn waiting_a_tick_promotes_ahead_of_later_retries() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(500);
        let mut s = Scheduler::default();
        s.update(id(1), want(Priority::RoundRobin), t0);
        s.update(
            id(2),
            want(Priority::RoundRobin),
            t0 + Duration::from_millis(100),
        );
        s.update(
            id(3),
            want(Priority::Retry),
            t0 + Duration::from_millis(200),
        );
        assert_eq!(s.aging_deadline(tick), Some(t0 + tick));
        assert_eq!(s.promote_aged(t0 + Duration::from_millis(499), tick), 0);
        assert_eq!(s.promote_aged(t0 + tick, tick), 1);
        // 1 keeps its turn number, older than 3's.
        assert_eq!(s.first(), Some(id(1)));
        assert_eq!(s.retry_len(), 2);
        assert_eq!(
            s.aging_deadline(tick),
            Some(t0 + Duration::from_millis(600))
        );
        assert_eq!(s.promote_aged(t0 + Duration::from_secs(9), tick), 1);
        assert_eq!(s.aging_deadline(tick), None);
        let order: Vec<_> = std::iter::from_fn(|| {
            let first = s.first()?;
            s.remove(first);
            Some(first)
        })
        .collect();
        assert_eq!(order, [id(1), id(2), id(3)]);
    }
}
