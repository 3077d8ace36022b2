//! Linearizable reads (Raft ReadIndex) on the [`Core`]: starting a read
//! barrier, noting the commit index the leader answers with, answering the
//! barrier once that index is applied here, and asking again when the
//! answer is lost.
//!
//! Invariants: a barrier is answered only once the applied index reaches
//! the leader's commit index at the time it was asked; a ReadIndex answer
//! made for another incarnation of this replica is ignored.
//!
//! Must not depend on: the owner thread, peer transport or the wall clock.

use super::ReplicaError;
use super::entries;
use super::pending::{Event, ReadProgress};
use super::replica_core::Core;

impl Core {
    /// Start a linearizable read (ReadIndex): [`Event::Done`] arrives once the
    /// applied state is at least the leader's commit index at this call.
    pub fn read_index(&mut self) -> Result<u64, ReplicaError> {
        if self.raw.raft.leader_id == 0 {
            return Err(self.not_leader());
        }
        let id = self.next_req();
        self.raw.read_index(entries::read_ctx(self.incarnation, id));
        self.pending.reads.insert(
            id,
            self.ticks,
            ReadProgress {
                last_sent: self.ticks,
                index: None,
            },
        );
        Ok(id)
    }

    pub(super) fn note_read_state(&mut self, ctx: &[u8], index: u64) {
        let Some(id) = entries::parse_read_ctx(ctx, self.incarnation) else {
            return;
        };
        if let Some(r) = self.pending.reads.get_mut(id)
            && r.index.is_none()
        {
            r.index = Some(index);
        }
    }

    pub(super) fn finish_reads(&mut self) {
        let applied = self.applied_index;
        let done = self
            .pending
            .reads
            .ids_where(|r| r.index.is_some_and(|i| i <= applied));
        for id in done {
            self.pending.reads.remove(id);
            self.events.push(Event::Done {
                req: id,
                result: Ok(()),
            });
        }
    }

    /// A new leader drops reads until it has committed an entry of its term,
    /// and a read to a leader that just died is lost: ask again every few
    /// heartbeats until answered or given up.
    pub(super) fn resend_reads(&mut self) {
        if self.raw.raft.leader_id == 0 {
            return;
        }
        let every = (2 * self.cfg.heartbeat_ticks).max(2) as u64;
        let now = self.ticks;
        let due = self
            .pending
            .reads
            .ids_where(|r| r.index.is_none() && now - r.last_sent >= every);
        for id in due {
            self.raw.read_index(entries::read_ctx(self.incarnation, id));
            if let Some(r) = self.pending.reads.get_mut(id) {
                r.last_sent = now;
            }
        }
    }
}
