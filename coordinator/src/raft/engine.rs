//! [`Core`]: the sans-IO replica. No tokio, sockets or clock: time is
//! [`Core::tick`], input is [`Core::step`] and the request calls, output is
//! the `send` callback of [`Core::handle_ready`] plus [`Core::take_events`].

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use protobuf::Message as PbMessage;
use rackboot_state::{Envelope, Outcome, State, StateError};
use raft::prelude::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use serde::{Deserialize, Serialize};

use super::faults::{Faults, Site};
use super::log_bridge;
use super::storage::{Addresses, RaftStore, StoreError};
use super::{MemberStatus, PeerReport, ReplicaError, ReplicaStatus};

/// Index and term of the bootstrap snapshot every founding replica writes, so
/// that a replica joining later (with an empty log) is sent a snapshot, which
/// carries the configuration, instead of entries from index 1.
const BOOTSTRAP_INDEX: u64 = 1;

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

/// What a snapshot holds: the members' addresses and the state.
#[derive(Debug, Deserialize)]
pub struct SnapshotData {
    /// Peer addresses by replica id.
    pub addresses: Addresses,
    /// The state machine.
    pub state: State,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    addresses: &'a Addresses,
    state: &'a State,
}

/// blake3 (hex) of the state's JSON encoding.
pub fn digest(state: &State) -> String {
    let mut hasher = blake3::Hasher::new();
    match serde_json::to_writer(HashWriter(&mut hasher), state) {
        Ok(()) => hasher.finalize().to_hex().to_string(),
        Err(e) => format!("unencodable: {e}"),
    }
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What travels in a normal log entry.
#[derive(Serialize, Deserialize)]
struct Proposal {
    /// Replica that proposed it (only it has a waiter).
    origin: u64,
    /// That replica's incarnation (process start), so an entry proposed
    /// before a restart never answers a request made after it.
    #[serde(default)]
    incarnation: u64,
    /// Per-incarnation request id.
    id: u64,
    envelope: Envelope,
}

/// What travels in a conf change's context.
#[derive(Serialize, Deserialize)]
struct ConfContext {
    origin: u64,
    incarnation: u64,
    id: u64,
    /// Address of the replica being added.
    address: Option<String>,
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a replica that receives the log but does not vote.
    AddLearner {
        /// Replica id.
        id: u64,
        /// Its peer address.
        address: String,
    },
    /// Add a voter, or promote a learner.
    AddVoter {
        /// Replica id.
        id: u64,
        /// Its peer address.
        address: String,
    },
    /// Remove a voter or learner.
    Remove {
        /// Replica id.
        id: u64,
    },
}

/// The outcome of a request, for the request's id.
#[derive(Debug)]
pub enum Event {
    /// A proposed write.
    Write {
        /// Request id returned by [`Core::propose`].
        req: u64,
        /// The state machine's answer, or why there is none.
        result: Result<Result<Outcome, StateError>, ReplicaError>,
    },
    /// A read barrier or membership change.
    Done {
        /// Request id returned by [`Core::read_index`] or [`Core::change_members`].
        req: u64,
        /// Success, or why not.
        result: Result<(), ReplicaError>,
    },
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

struct PendingRead {
    since: u64,
    last_sent: u64,
    index: Option<u64>,
}

/// The sans-IO replica (see the module docs).
pub struct Core {
    cfg: CoreConfig,
    raw: RawNode<RaftStore>,
    store: RaftStore,
    applied: Arc<RwLock<Applied>>,
    applied_index: u64,
    last_snapshot: u64,
    addresses: Addresses,
    incarnation: u64,
    next_req: u64,
    writes: BTreeMap<u64, u64>,
    changes: BTreeMap<u64, u64>,
    reads: BTreeMap<u64, PendingRead>,
    events: Vec<Event>,
    faults: Box<dyn Faults>,
    ticks: u64,
    seen: (u64, u64),
}

fn decode_snapshot(data: &[u8]) -> Result<SnapshotData, ReplicaFatal> {
    match serde_json::from_slice::<SnapshotData>(data) {
        Ok(d) => Ok(d),
        // Written before snapshots carried addresses: the bare state.
        Err(e) => match serde_json::from_slice::<State>(data) {
            Ok(state) => Ok(SnapshotData {
                addresses: Addresses::new(),
                state,
            }),
            Err(_) => Err(ReplicaFatal::Snapshot(e.to_string())),
        },
    }
}

fn encode_snapshot(addresses: &Addresses, state: &State) -> Result<Vec<u8>, ReplicaFatal> {
    serde_json::to_vec(&SnapshotRef { addresses, state })
        .map_err(|e| ReplicaFatal::Snapshot(e.to_string()))
}

/// Found a new group on an empty `store`: the founding voters `peers` and
/// the initial `state` (empty for a new cluster, a backup for a restore),
/// as a snapshot at the bootstrap index.
pub fn bootstrap_store(
    store: &RaftStore,
    peers: &Addresses,
    state: &State,
) -> Result<(), ReplicaFatal> {
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = BOOTSTRAP_INDEX;
    meta.term = 1;
    meta.set_conf_state(ConfState {
        voters: peers.keys().copied().collect(),
        ..Default::default()
    });
    snap.set_data(encode_snapshot(peers, state)?.into());
    store.apply_snapshot(&snap, peers)?;
    Ok(())
}

/// The state a stopped replica's `store` holds: its last snapshot with
/// every committed entry after it applied, and the index reached. Reads
/// only; used to back up a replica offline (e.g. the survivor of a lost
/// quorum).
pub fn stored_state(store: &RaftStore) -> Result<(State, u64), ReplicaFatal> {
    use raft::Storage;
    let (mut state, mut index) = match store.stored_snapshot()? {
        Some(snap) => {
            let d = decode_snapshot(snap.get_data())?;
            (d.state, snap.get_metadata().index)
        }
        None => (State::default(), 0),
    };
    // A group of one voter commits what it persists: its whole log. Others
    // only what the stored commit index says (a clean stop writes it).
    let single = store.conf_state().voters.len() == 1;
    let commit = if single {
        raft::Storage::last_index(store)
            .map_err(|e| ReplicaFatal::Snapshot(format!("reading the log: {e}")))?
    } else {
        store.hard_state().commit
    };
    while index < commit {
        let entries = store
            .entries(
                index + 1,
                commit + 1,
                Some(8 << 20),
                raft::GetEntriesContext::empty(false),
            )
            .map_err(|e| ReplicaFatal::Snapshot(format!("reading committed entries: {e}")))?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            if entry.get_entry_type() == EntryType::EntryNormal
                && !entry.data.is_empty()
                && let Ok(p) = serde_json::from_slice::<Proposal>(&entry.data)
            {
                // Refused commands leave the state as every replica left it.
                let _ = state.apply(p.envelope);
            }
            index = entry.index;
        }
    }
    Ok((state, index))
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
                let d = decode_snapshot(snap.get_data())?;
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
            writes: BTreeMap::new(),
            changes: BTreeMap::new(),
            reads: BTreeMap::new(),
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

    fn next_req(&mut self) -> u64 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    fn not_leader(&self) -> ReplicaError {
        ReplicaError::NotLeader {
            leader: self.leader_hint(),
        }
    }

    /// One clock tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        self.expire();
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
                self.writes.insert(id, self.ticks);
                Ok(id)
            }
            Err(raft::Error::ProposalDropped) => Err(self.not_leader()),
            Err(e) => Err(ReplicaError::Refused(e.to_string())),
        }
    }

    /// Start a linearizable read (ReadIndex): [`Event::Done`] arrives once the
    /// applied state is at least the leader's commit index at this call.
    pub fn read_index(&mut self) -> Result<u64, ReplicaError> {
        if self.raw.raft.leader_id == 0 {
            return Err(self.not_leader());
        }
        let id = self.next_req();
        self.raw.read_index(self.read_ctx(id));
        self.reads.insert(
            id,
            PendingRead {
                since: self.ticks,
                last_sent: self.ticks,
                index: None,
            },
        );
        Ok(id)
    }

    fn read_ctx(&self, id: u64) -> Vec<u8> {
        let mut ctx = self.incarnation.to_be_bytes().to_vec();
        ctx.extend_from_slice(&id.to_be_bytes());
        ctx
    }

    /// Propose a membership change (leader only).
    pub fn change_members(&mut self, change: MemberChange) -> Result<u64, ReplicaError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        // raft-rs turns a conf change proposed while another is unapplied
        // (a new leader counts its whole log as pending) into an empty entry
        // and reports success: the caller would wait for nothing.
        if self.raw.raft.has_pending_conf() {
            return Err(ReplicaError::ConfChangePending);
        }
        let id = self.next_req();
        let (node_id, change_type, address) = match change {
            MemberChange::AddLearner { id, address } => {
                (id, ConfChangeType::AddLearnerNode, Some(address))
            }
            MemberChange::AddVoter { id, address } => (id, ConfChangeType::AddNode, Some(address)),
            MemberChange::Remove { id } => (id, ConfChangeType::RemoveNode, None),
        };
        let ctx = ConfContext {
            origin: self.cfg.id,
            incarnation: self.incarnation,
            id,
            address,
        };
        let ctx = serde_json::to_vec(&ctx).map_err(|e| ReplicaError::Refused(e.to_string()))?;
        let mut single = ConfChangeSingle {
            node_id,
            ..Default::default()
        };
        single.set_change_type(change_type);
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        match self.raw.propose_conf_change(ctx, cc) {
            Ok(()) => {
                self.changes.insert(id, self.ticks);
                Ok(id)
            }
            Err(raft::Error::ProposalDropped) => Err(ReplicaError::Membership(
                "another membership change is still in progress; retry".to_string(),
            )),
            Err(e) => Err(ReplicaError::Membership(e.to_string())),
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
        let data = decode_snapshot(snap.get_data())?;
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

    fn set_applied(&mut self, index: u64) {
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
            && self.writes.remove(&proposal.id).is_some()
        {
            self.events.push(Event::Write {
                req: proposal.id,
                result: Ok(result),
            });
        }
    }

    fn apply_conf_change_v2(
        &mut self,
        index: u64,
        cc: &ConfChangeV2,
        context: &[u8],
    ) -> Result<(), ReplicaFatal> {
        let ctx: Option<ConfContext> = serde_json::from_slice(context).ok();
        let cs = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                // Refused the same way everywhere (e.g. removing the last voter).
                tracing::error!(error = %e, index, "conf change refused");
                self.set_applied(index);
                if let Some(ctx) = ctx.filter(|c| self.is_mine(c.origin, c.incarnation))
                    && self.changes.remove(&ctx.id).is_some()
                {
                    self.events.push(Event::Done {
                        req: ctx.id,
                        result: Err(ReplicaError::Membership(e.to_string())),
                    });
                }
                return Ok(());
            }
        };
        for change in cc.get_changes() {
            match change.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Some(addr) = ctx.as_ref().and_then(|c| c.address.clone()) {
                        self.addresses.insert(change.node_id, addr);
                    }
                }
                ConfChangeType::RemoveNode => {
                    if change.node_id == self.cfg.id {
                        tracing::warn!(
                            "this replica was removed from the cluster; it can be stopped"
                        );
                    } else {
                        self.addresses.remove(&change.node_id);
                    }
                }
            }
        }
        self.store.set_conf_state(&cs, &self.addresses)?;
        self.set_applied(index);
        tracing::info!(voters = ?cs.voters, learners = ?cs.learners, index, "membership changed");
        if let Some(ctx) = ctx.filter(|c| self.is_mine(c.origin, c.incarnation))
            && self.changes.remove(&ctx.id).is_some()
        {
            self.events.push(Event::Done {
                req: ctx.id,
                result: Ok(()),
            });
        }
        Ok(())
    }

    fn is_mine(&self, origin: u64, incarnation: u64) -> bool {
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
            encode_snapshot(&self.addresses, &applied.state)?
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

    fn note_read_state(&mut self, ctx: &[u8], index: u64) {
        if ctx.len() != 16 || ctx[..8] != self.incarnation.to_be_bytes() {
            return;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&ctx[8..]);
        if let Some(r) = self.reads.get_mut(&u64::from_be_bytes(id))
            && r.index.is_none()
        {
            r.index = Some(index);
        }
    }

    fn finish_reads(&mut self) {
        let applied = self.applied_index;
        let done: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.reads.remove(&id);
            self.events.push(Event::Done {
                req: id,
                result: Ok(()),
            });
        }
    }

    /// A new leader drops reads until it has committed an entry of its term,
    /// and a read to a leader that just died is lost: ask again every few
    /// heartbeats until answered or given up.
    fn resend_reads(&mut self) {
        if self.raw.raft.leader_id == 0 {
            return;
        }
        let every = (2 * self.cfg.heartbeat_ticks).max(2) as u64;
        let now = self.ticks;
        let due: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_none() && now - r.last_sent >= every)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let ctx = self.read_ctx(id);
            self.raw.read_index(ctx);
            if let Some(r) = self.reads.get_mut(&id) {
                r.last_sent = now;
            }
        }
    }

    fn expire(&mut self) {
        let limit = self.cfg.request_ticks;
        let now = self.ticks;
        let old = |since: u64| now.saturating_sub(since) > limit;
        let timeout = || ReplicaError::Refused("gave up waiting".to_string());
        let writes: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, s)| old(**s))
            .map(|(id, _)| *id)
            .collect();
        for req in writes {
            self.writes.remove(&req);
            self.events.push(Event::Write {
                req,
                result: Err(timeout()),
            });
        }
        let changes: Vec<u64> = self
            .changes
            .iter()
            .filter(|(_, s)| old(**s))
            .map(|(id, _)| *id)
            .collect();
        let reads: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| old(r.since))
            .map(|(id, _)| *id)
            .collect();
        for req in changes {
            self.changes.remove(&req);
            self.events.push(Event::Done {
                req,
                result: Err(timeout()),
            });
        }
        for req in reads {
            self.reads.remove(&req);
            self.events.push(Event::Done {
                req,
                result: Err(timeout()),
            });
        }
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
        if self.writes.is_empty() && self.reads.is_empty() && self.changes.is_empty() {
            return;
        }
        let err = self.not_leader();
        for (req, _) in std::mem::take(&mut self.writes) {
            self.events.push(Event::Write {
                req,
                result: Err(err.clone()),
            });
        }
        for (req, _) in std::mem::take(&mut self.changes) {
            self.events.push(Event::Done {
                req,
                result: Err(err.clone()),
            });
        }
        let reads = std::mem::take(&mut self.reads);
        for (req, _) in reads {
            self.events.push(Event::Done {
                req,
                result: Err(err.clone()),
            });
        }
    }

    /// The replica's status.
    pub fn status(&self) -> ReplicaStatus {
        let raft = &self.raw.raft;
        let conf = raft.prs().conf();
        let leader = raft.state == StateRole::Leader;
        let mut members = BTreeMap::new();
        let voters: Vec<u64> = conf.voters().ids().iter().collect();
        for (id, voter) in voters
            .iter()
            .map(|id| (*id, true))
            .chain(conf.learners().iter().map(|id| (*id, false)))
        {
            let matched = if leader {
                raft.prs().get(id).map(|p| p.matched).unwrap_or_default()
            } else {
                0
            };
            members.insert(
                id,
                MemberStatus {
                    address: self.addresses.get(&id).cloned().unwrap_or_default(),
                    voter,
                    matched,
                },
            );
        }
        let role = match members.get(&self.cfg.id) {
            None => "removed",
            Some(m) if !m.voter => "learner",
            Some(_) => match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            },
        };
        let revision = self
            .applied
            .read()
            .map(|a| a.state.revision())
            .unwrap_or_default();
        ReplicaStatus {
            id: self.cfg.id,
            leader_id: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied_index,
            last_index: raft.raft_log.last_index(),
            revision,
            role: role.to_string(),
            members,
        }
    }
}
