//! [`Core`]: the sans-IO replica and its `Ready` loop. No tokio, sockets or
//! clock: time is [`Core::tick`], input is [`Core::step`] and the request
//! calls, output is the [`Sink`] of [`Core::handle_ready`] plus
//! [`Core::take_events`].
//!
//! Invariants: `handle_ready` follows raft-rs's `Ready` order (see the
//! `raft` module docs); a vote or append acknowledgement leaves only once
//! what it acknowledges is fsynced; committed entries are applied in log
//! order, each exactly once; a request is answered once, when its entry is
//! applied here, when it expires, or when the leader changes under it.
//!
//! Must not depend on: tokio, the owner thread, peer transport or the wall
//! clock (the simulation test drives several `Core`s deterministically).

use std::sync::{Arc, RwLock};

use protobuf::Message as PbMessage;
use rackboot_state::{Envelope, State};
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};

use super::entries::Proposal;
use super::faults::{Faults, Site};
use super::log_bridge;
use super::pending::{Event, PendingRequests};
use super::recovery::bootstrap_store;
use super::snapshot;
use super::storage::{Addresses, RaftStore, StoreError};
use super::{PeerReport, ReplicaError};

/// The replica could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaFatal {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// raft-rs refused the configuration or its state.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The data directory cannot be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot or conf change does not decode.
    #[error("snapshot state does not decode: {0}")]
    Snapshot(String),
    /// The thread that owns the replica cannot be started.
    #[error("cannot start the raft-owner thread: {0}")]
    OwnerThread(#[source] std::io::Error),
    /// A fail point fired (simulated crash).
    #[error("crashed at fail point {0}")]
    Crashed(Site),
}

/// The state machine's state and the log index it was applied up to, under
/// one lock so readers always see a consistent pair.
#[derive(Debug, Default)]
pub struct Applied {
    /// The state.
    pub state: State,
    /// Last applied log index.
    pub index: u64,
}

/// Where a [`Core`] puts what it produces while handling a `Ready`: messages
/// for peers, and outcomes for waiting callers — the latter as soon as the
/// entry is applied, before the `Ready`'s own write, so an answer never waits
/// for an fsync it does not depend on.
pub trait Sink {
    /// A message for a peer, to send now.
    fn send(&mut self, msg: Message);
    /// A request's outcome.
    fn event(&mut self, event: Event);
}

/// Settings of a [`Core`].
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This replica's id.
    pub id: u64,
    /// Founding voters (or, when joining, replicas to talk to) and addresses.
    pub peers: Addresses,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots.
    pub snapshot_every: u64,
    /// Start empty and wait to be added.
    pub join: bool,
    /// Ticks after which an unanswered request is given up.
    pub request_ticks: u64,
}

/// The sans-IO replica (see the module docs).
pub struct Core {
    pub(super) cfg: CoreConfig,
    pub(super) raw: RawNode<RaftStore>,
    pub(super) store: RaftStore,
    pub(super) applied: Arc<RwLock<Applied>>,
    pub(super) applied_index: u64,
    last_snapshot: u64,
    pub(super) addresses: Addresses,
    pub(super) incarnation: u64,
    next_req: u64,
    pub(super) pending: PendingRequests,
    pub(super) events: Vec<Event>,
    faults: Box<dyn Faults>,
    pub(super) ticks: u64,
    seen: (u64, u64),
}

impl Core {
    /// Open a replica on `store`. A fresh store is bootstrapped with the
    /// founding voters (unless joining). `incarnation` must differ between
    /// starts of the same replica (the process start time will do).
    pub fn new(
        cfg: CoreConfig,
        store: RaftStore,
        faults: Box<dyn Faults>,
        incarnation: u64,
    ) -> Result<Core, ReplicaFatal> {
        if store.is_empty() && !cfg.join {
            bootstrap_store(&store, &cfg.peers, &State::default())?;
        }
        let (state, applied_index, snap_addresses) = match store.stored_snapshot()? {
            Some(snap) => {
                let d = snapshot::decode(snap.get_data())?;
                (d.state, snap.get_metadata().index, d.addresses)
            }
            None => (State::default(), 0, Addresses::new()),
        };
        let mut addresses = store.addresses()?.unwrap_or(snap_addresses);
        // The configuration knows best where the replicas it names are now.
        for (id, a) in &cfg.peers {
            addresses.insert(*id, a.clone());
        }
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied: applied_index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let mut raw = RawNode::new(&raft_cfg, store.clone(), &log_bridge::logger())?;
        let voters = raw.raft.prs().conf().voters().ids().len();
        if voters == 1 && raw.raft.promotable() && raw.raft.term <= 1 {
            // The only voter: no reason to wait an election timeout.
            raw.campaign()?;
        }
        Ok(Core {
            raw,
            store,
            applied: Arc::new(RwLock::new(Applied {
                state,
                index: applied_index,
            })),
            applied_index,
            last_snapshot: applied_index,
            addresses,
            incarnation,
            next_req: 1,
            pending: PendingRequests::default(),
            events: Vec::new(),
            faults,
            ticks: 0,
            seen: (0, 0),
            cfg,
        })
    }

    /// Write the commit index up to what is applied (a clean stop; best
    /// effort, logged on failure).
    pub fn persist_commit(&self) {
        let applied = self.applied_index;
        if self.store.hard_state().commit < applied
            && let Err(e) = self.store.set_commit(applied)
        {
            tracing::warn!(error = %e, "could not record the commit index at stop");
        }
    }

    /// The applied state, shared with readers.
    pub fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }

    /// Last applied index.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// Peer addresses by id (members and configured contacts).
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// True while this replica leads.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader's id and address, when known.
    pub fn leader_hint(&self) -> Option<(u64, String)> {
        let id = self.raw.raft.leader_id;
        self.addresses.get(&id).map(|a| (id, a.clone()))
    }

    /// The raft-rs node (read-only, for tests and status).
    pub fn raw(&self) -> &RawNode<RaftStore> {
        &self.raw
    }

    /// The raft-rs state machine, mutable: for simulation tests only, which
    /// replace raft-rs's own (thread-RNG) election timeouts with seeded ones
    /// so that a run is reproducible.
    pub fn raft_mut(&mut self) -> &mut raft::Raft<RaftStore> {
        &mut self.raw.raft
    }

    pub(super) fn next_req(&mut self) -> u64 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    pub(super) fn not_leader(&self) -> ReplicaError {
        ReplicaError::NotLeader {
            leader: self.leader_hint(),
        }
    }

    /// One clock tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        self.pending
            .expire(self.ticks, self.cfg.request_ticks, &mut self.events);
        self.resend_reads();
    }

    /// A message from a peer.
    pub fn step(&mut self, msg: Message) {
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(error = %e, "dropped raft message");
        }
    }

    /// Feedback from the transport.
    pub fn report(&mut self, report: PeerReport) {
        match report {
            PeerReport::Unreachable(id) => self.raw.report_unreachable(id),
            PeerReport::Snapshot(id, ok) => self.raw.report_snapshot(
                id,
                if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                },
            ),
        }
    }

    /// Propose a write. On a follower raft-rs forwards it to the leader; the
    /// outcome arrives as [`Event::Write`] once the entry is applied here.
    pub fn propose(&mut self, envelope: Envelope) -> Result<u64, ReplicaError> {
        if self.raw.raft.leader_id == 0 {
            return Err(self.not_leader());
        }
        let id = self.next_req();
        let proposal = Proposal {
            origin: self.cfg.id,
            incarnation: self.incarnation,
            id,
            envelope,
        };
        let data =
            serde_json::to_vec(&proposal).map_err(|e| ReplicaError::Refused(e.to_string()))?;
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                self.pending.writes.insert(id, self.ticks, ());
                Ok(id)
            }
            Err(raft::Error::ProposalDropped) => Err(self.not_leader()),
            Err(e) => Err(ReplicaError::Refused(e.to_string())),
        }
    }

    /// Hand leadership to `to` (leader only; ignored otherwise).
    pub fn transfer_leader(&mut self, to: u64) {
        if self.is_leader() {
            self.raw.transfer_leader(to);
        }
    }

    /// Outcomes produced since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn fault(&mut self, site: Site) -> Result<(), ReplicaFatal> {
        if self.faults.hit(site) {
            return Err(ReplicaFatal::Crashed(site));
        }
        Ok(())
    }

    fn flush(&mut self, sink: &mut dyn Sink) {
        for ev in self.events.drain(..) {
            sink.event(ev);
        }
    }

    /// Drain raft-rs's `Ready` in order (see the module docs of `raft`):
    /// messages go out through the sink exactly when they may, outcomes as
    /// soon as they are known.
    pub fn handle_ready(&mut self, sink: &mut dyn Sink) -> Result<(), ReplicaFatal> {
        self.check_leader();
        self.flush(sink);
        if self.raw.has_ready() {
            let mut rd = self.raw.ready();
            // A leader may send its appends before its own write is durable.
            for m in rd.take_messages() {
                sink.send(m);
            }
            if !rd.snapshot().is_empty() {
                self.fault(Site::SnapshotInstall)?;
                let snap = rd.snapshot().clone();
                self.install_snapshot(&snap)?;
            }
            self.apply_entries(rd.take_committed_entries())?;
            for rs in rd.take_read_states() {
                self.note_read_state(&rs.request_ctx, rs.index);
            }
            self.finish_reads();
            self.flush(sink);
            #[cfg(feature = "mutant-send-before-persist")]
            {
                let early = rd.take_persisted_messages();
                if !early.is_empty() && !rd.entries().is_empty() {
                    tracing::debug!(
                        n = early.len(),
                        entries = rd.entries().len(),
                        "mutant: acknowledging before persisting"
                    );
                }
                for m in early {
                    sink.send(m);
                }
            }
            let wrote = !rd.entries().is_empty() || rd.hs().is_some();
            if !rd.entries().is_empty() {
                self.fault(Site::Append)?;
            } else if rd.hs().is_some() {
                self.fault(Site::HardState)?;
            }
            // Everything is fsynced, even a HardState that only moves the
            // commit index (raft-rs would allow that one unsynced: `must_sync`).
            // Relaxing it is a measured win only under load, and an unsynced
            // redb commit followed by a crash is a recovery path we would
            // rather not depend on.
            self.store.persist(rd.entries(), rd.hs())?;
            if wrote {
                self.fault(Site::AppendDone)?;
            }
            // Votes and append acknowledgements only once durable.
            for m in rd.take_persisted_messages() {
                sink.send(m);
            }
            // The light ready's commit index is not written on its own: it
            // goes to disk with the next HardState, and after a crash it is
            // learnt again from the leader. Snapshots keep the stored commit
            // at or above the applied index they record.
            let mut light = self.raw.advance(rd);
            for m in light.take_messages() {
                sink.send(m);
            }
            self.apply_entries(light.take_committed_entries())?;
            self.raw.advance_apply_to(self.applied_index);
        }
        self.maybe_snapshot()?;
        self.finish_reads();
        self.check_leader();
        self.flush(sink);
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), ReplicaFatal> {
        let data = snapshot::decode(snap.get_data())?;
        let index = snap.get_metadata().index;
        let mut addresses = data.addresses;
        for (id, a) in &self.addresses {
            addresses.entry(*id).or_insert_with(|| a.clone());
        }
        self.store.apply_snapshot(snap, &addresses)?;
        {
            let mut applied = self.applied.write().unwrap_or_else(|e| e.into_inner());
            applied.state = data.state;
            applied.index = index;
        }
        self.addresses = addresses;
        self.applied_index = index;
        self.last_snapshot = index;
        tracing::info!(index, "snapshot installed");
        Ok(())
    }

    pub(super) fn set_applied(&mut self, index: u64) {
        self.applied
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .index = index;
        self.applied_index = index;
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), ReplicaFatal> {
        for entry in entries {
            if entry.index <= self.applied_index {
                continue; // covered by an installed snapshot
            }
            if entry.index != self.applied_index + 1 {
                // raft-rs hands out committed entries in order from the
                // applied index; anything else would make replicas diverge.
                tracing::error!(
                    index = entry.index,
                    applied = self.applied_index,
                    "committed entry does not follow the applied index"
                );
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.set_applied(entry.index); // a new leader's empty entry
                }
                EntryType::EntryNormal => {
                    self.fault(Site::Apply)?;
                    self.apply_proposal(entry.index, &entry.data);
                    self.fault(Site::ApplyDone)?;
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| ReplicaFatal::Snapshot(format!("conf change: {e}")))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.store.set_conf_state(&cs, &self.addresses)?;
                    self.set_applied(entry.index);
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| ReplicaFatal::Snapshot(format!("conf change: {e}")))?;
                    self.apply_conf_change_v2(entry.index, &cc, &entry.context)?;
                }
            }
        }
        Ok(())
    }

    fn apply_proposal(&mut self, index: u64, data: &[u8]) {
        let proposal: Proposal = match serde_json::from_slice(data) {
            Ok(p) => p,
            Err(e) => {
                // Every replica skips the same bytes the same way.
                tracing::error!(error = %e, index, "committed entry does not decode; skipped");
                self.set_applied(index);
                return;
            }
        };
        let result = {
            let mut applied = self.applied.write().unwrap_or_else(|e| e.into_inner());
            let r = applied.state.apply(proposal.envelope);
            applied.index = index;
            r
        };
        self.applied_index = index;
        if proposal.origin == self.cfg.id
            && proposal.incarnation == self.incarnation
            && self.pending.writes.remove(proposal.id)
        {
            self.events.push(Event::Write {
                req: proposal.id,
                result: Ok(result),
            });
        }
    }

    pub(super) fn is_mine(&self, origin: u64, incarnation: u64) -> bool {
        origin == self.cfg.id && incarnation == self.incarnation
    }

    fn maybe_snapshot(&mut self) -> Result<(), ReplicaFatal> {
        let wanted = self.store.wanted_snapshot();
        let due = self.applied_index >= self.last_snapshot + self.cfg.snapshot_every;
        let asked = wanted != 0 && self.applied_index >= wanted;
        if !(due || asked) || self.applied_index <= self.last_snapshot {
            return Ok(());
        }
        self.fault(Site::SnapshotSave)?;
        let data = {
            let applied = self.applied.read().unwrap_or_else(|e| e.into_inner());
            snapshot::encode(&self.addresses, &applied.state)?
        };
        let size = data.len();
        let hash = blake3::hash(&data);
        self.store.compact_to_snapshot(self.applied_index, data)?;
        self.last_snapshot = self.applied_index;
        self.fault(Site::SnapshotSaved)?;
        tracing::info!(
            index = self.applied_index,
            bytes = size,
            blake3 = %hash.to_hex(),
            asked,
            "snapshot taken, log compacted"
        );
        Ok(())
    }

    /// When the term or the leader changes, nothing pending will be answered
    /// here for sure: fail it now (the client retries, with its idempotency
    /// key, on the new leader) rather than at the timeout.
    fn check_leader(&mut self) {
        let now = (self.raw.raft.term, self.raw.raft.leader_id);
        if now == self.seen {
            return;
        }
        self.seen = now;
        if self.pending.is_empty() {
            return;
        }
        let err = self.not_leader();
        self.pending.fail_all(&err, &mut self.events);
    }
}
