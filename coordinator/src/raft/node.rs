//! The task that owns the `RawNode`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use protobuf::Message as PbMessage;
use rackboot_state::{Envelope, Outcome, State, StateError};
use raft::prelude::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::peers::PeerSender;
use super::storage::{RaftStore, StoreError};
use super::{Replica, ReplicaConfig, ReplicaError, ReplicaStatus, Request, log_bridge};

/// What travels in a normal log entry.
#[derive(Serialize, Deserialize)]
struct Proposal {
    /// Replica that proposed it (only it has a waiter).
    origin: u64,
    /// Per-origin proposal id.
    id: u64,
    envelope: Envelope,
}

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
    /// A snapshot's state does not decode.
    #[error("snapshot state does not decode: {0}")]
    Snapshot(String),
}

type Reply = oneshot::Sender<Result<Result<Outcome, StateError>, ReplicaError>>;

struct Owner {
    cfg: ReplicaConfig,
    raw: RawNode<RaftStore>,
    store: RaftStore,
    state: Arc<RwLock<State>>,
    revision: watch::Sender<u64>,
    status: watch::Sender<ReplicaStatus>,
    pending: HashMap<u64, Reply>,
    next_id: u64,
    applied: u64,
    last_snapshot: u64,
    peers: PeerSender,
    term: u64,
}

/// Start the replica task. Returns its handle and the task, which ends when
/// `shutdown` is cancelled or storage fails.
pub fn spawn(
    cfg: ReplicaConfig,
    shutdown: CancellationToken,
) -> Result<(Replica, JoinHandle<Result<(), ReplicaFatal>>), ReplicaFatal> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ReplicaFatal::DataDir {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    let store = RaftStore::open(&cfg.data_dir.join("raft.redb"))?;
    let fresh = store.is_empty();
    if fresh {
        let cs = ConfState {
            voters: cfg.peers.keys().copied().collect(),
            ..Default::default()
        };
        store.set_conf_state(&cs)?;
    }
    let (state, applied) = match store.stored_snapshot()? {
        Some(snap) => {
            let state: State = serde_json::from_slice(snap.get_data())
                .map_err(|e| ReplicaFatal::Snapshot(e.to_string()))?;
            (state, snap.get_metadata().index)
        }
        None => (State::default(), 0),
    };
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let mut raw = RawNode::new(&raft_cfg, store.clone(), &log_bridge::logger())?;
    if fresh && cfg.peers.len() == 1 {
        // The only voter: no reason to wait an election timeout.
        raw.campaign()?;
    }
    let (tx, rx) = mpsc::channel(4096);
    let state = Arc::new(RwLock::new(state));
    let rev0 = state.read().map(|s| s.revision()).unwrap_or(0);
    let (revision, revision_rx) = watch::channel(rev0);
    let (status, status_rx) = watch::channel(ReplicaStatus {
        id: cfg.id,
        ..Default::default()
    });
    let handle = Replica {
        tx,
        state: state.clone(),
        revision: revision_rx,
        status: status_rx,
        peers: Arc::new(cfg.peers.clone()),
        shutdown: shutdown.clone(),
    };
    let peers = PeerSender::new(cfg.id, &cfg.peers, shutdown.clone());
    let owner = Owner {
        raw,
        store,
        state,
        revision,
        status,
        pending: HashMap::new(),
        next_id: 1,
        applied,
        last_snapshot: applied,
        peers,
        term: 0,
        cfg,
    };
    let task = tokio::spawn(owner.run(rx, shutdown));
    Ok((handle, task))
}

impl Owner {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) -> Result<(), ReplicaFatal> {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = ticker.tick() => { self.raw.tick(); }
                req = rx.recv() => match req {
                    None => break Ok(()),
                    Some(req) => {
                        self.handle(req);
                        // Batch whatever else is queued into this Ready.
                        while let Ok(req) = rx.try_recv() {
                            self.handle(req);
                        }
                    }
                },
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "replica storage failed; stopping");
                break Err(e);
            }
        };
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(ReplicaError::Stopped));
        }
        shutdown.cancel();
        result
    }

    fn leader_hint(&self) -> Option<(u64, String)> {
        let id = self.raw.raft.leader_id;
        self.cfg.peers.get(&id).map(|a| (id, a.clone()))
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Propose { envelope, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(ReplicaError::NotLeader {
                        leader: self.leader_hint(),
                    }));
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let proposal = Proposal {
                    origin: self.cfg.id,
                    id,
                    envelope,
                };
                let data = match serde_json::to_vec(&proposal) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply.send(Err(ReplicaError::Refused(e.to_string())));
                        return;
                    }
                };
                match self.raw.propose(vec![], data) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let _ = reply.send(Err(ReplicaError::NotLeader {
                            leader: self.leader_hint(),
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ReplicaError::Refused(e.to_string())));
                    }
                }
            }
            Request::Step(msg) => {
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "dropped raft message");
                }
            }
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.peers.send(m);
        }
    }

    fn on_ready(&mut self) -> Result<(), ReplicaFatal> {
        if !self.raw.has_ready() {
            self.publish_status();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            let state: State = serde_json::from_slice(snap.get_data())
                .map_err(|e| ReplicaFatal::Snapshot(e.to_string()))?;
            self.store.apply_snapshot(&snap)?;
            *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
            self.applied = snap.get_metadata().index;
            self.last_snapshot = self.applied;
        }
        self.apply_entries(ready.take_committed_entries())?;
        self.store.persist(ready.entries(), ready.hs())?;
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.publish_status();
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), ReplicaFatal> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.applied = entry.index;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if entry.data.is_empty() {
                        continue; // a new leader's empty entry
                    }
                    self.apply_proposal(&entry.data);
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| ReplicaFatal::Snapshot(format!("conf change: {e}")))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.store.set_conf_state(&cs)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| ReplicaFatal::Snapshot(format!("conf change: {e}")))?;
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.store.set_conf_state(&cs)?;
                }
            }
        }
        let rev = self.state.read().map(|s| s.revision()).unwrap_or(0);
        self.revision.send_if_modified(|r| {
            let changed = *r != rev;
            *r = rev;
            changed
        });
        Ok(())
    }

    fn apply_proposal(&mut self, data: &[u8]) {
        let proposal: Proposal = match serde_json::from_slice(data) {
            Ok(p) => p,
            Err(e) => {
                // Every replica skips the same bytes the same way.
                tracing::error!(error = %e, "committed entry does not decode; skipped");
                return;
            }
        };
        let result = self
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(proposal.envelope);
        if proposal.origin == self.cfg.id
            && let Some(reply) = self.pending.remove(&proposal.id)
        {
            let _ = reply.send(Ok(result));
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), ReplicaFatal> {
        if self.applied < self.last_snapshot + self.cfg.snapshot_every {
            return Ok(());
        }
        let data = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            serde_json::to_vec(&*state).map_err(|e| ReplicaFatal::Snapshot(e.to_string()))?
        };
        self.store.compact_to_snapshot(self.applied, data)?;
        tracing::info!(index = self.applied, "snapshot taken, log compacted");
        self.last_snapshot = self.applied;
        Ok(())
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        if raft.term != self.term {
            self.term = raft.term;
            if raft.state != StateRole::Leader && !self.pending.is_empty() {
                // Outcome unknown: the entries may still commit under the new
                // leader. Clients retry with the same idempotency key.
                let leader = self.leader_hint();
                for (_, reply) in self.pending.drain() {
                    let _ = reply.send(Err(ReplicaError::NotLeader {
                        leader: leader.clone(),
                    }));
                }
            }
        }
        let status = self.raw.status();
        let progress = status
            .progress
            .map(|p| p.iter().map(|(id, pr)| (*id, pr.matched)).collect())
            .unwrap_or_default();
        let next = ReplicaStatus {
            id: self.cfg.id,
            leader_id: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied,
            revision: *self.revision.borrow(),
            role: match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            }
            .to_string(),
            progress,
        };
        self.status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}
