//! The Raft replica. [`Core`] is the sans-IO heart: it owns the raft-rs
//! `RawNode`, its redb storage and the state machine, and is driven by calls
//! (`tick`, `step`, `propose`, `read_index`, `handle_ready`) with no clock,
//! sockets or tasks of its own. [`spawn`] runs a `Core` on a named OS thread
//! of its own ([`OWNER_THREAD`]) and hands out a [`Replica`] handle (an
//! `mpsc` of requests, each with a `oneshot` reply); the simulation test
//! drives several `Core`s over an in-memory network instead.
//!
//! `Core::handle_ready` follows raft-rs's `Ready` order: send the leader's
//! messages, install a snapshot if any, apply committed entries, persist new
//! entries and the HardState (fsynced), send the messages that required
//! persistence, advance, then handle the light ready the same way. A write is
//! acknowledged only once its entry is committed and applied here.
//!
//! Modules: `replica_core` (the [`Core`] and its `Ready` loop), `membership`
//! (conf changes and [`ReplicaStatus`]), `pending` (requests waiting for an
//! outcome, one expiry rule), `entries` (what goes into log entries and
//! ReadIndex contexts), `snapshot` (the snapshot codec and state digest),
//! `recovery` (founding a store, reading a stopped one), `owner` (the thread
//! that runs a `Core`), `peers` (sending to other replicas), [`storage`]
//! (redb), [`faults`] (crash injection).
//!
//! Must not depend on: the gRPC API, the blob store or the rack agent; the
//! state machine comes from `rackboot-state`.

mod entries;
pub mod faults;
mod log_bridge;
mod membership;
mod owner;
/// Fatal replica errors.
pub mod node_error {
    pub use super::replica_core::ReplicaFatal;
}
mod peers;
mod pending;
mod read_barrier;
mod recovery;
mod replica_core;
mod snapshot;
pub mod storage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use rackboot_state::{Envelope, Outcome, State, StateError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use faults::{Faults, NoFaults, Site};
pub use membership::MemberChange;
pub use owner::{OWNER_THREAD, spawn, spawn_with_source};
pub use peers::MAX_PEER_MESSAGE;
pub use pending::Event;
pub use recovery::{bootstrap_store, stored_state};
pub use replica_core::{Applied, Core, CoreConfig, ReplicaFatal, Sink};
pub use snapshot::SnapshotData;
pub use snapshot::digest as digest_of;
pub use storage::{Addresses, RaftStore, StoreError};

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's id (non-zero).
    pub id: u64,
    /// Every voter's id and peer address (including this one). With `join`,
    /// the replicas to talk to until the cluster's own list arrives.
    pub peers: BTreeMap<u64, String>,
    /// Data directory (holds `raft.redb`).
    pub data_dir: PathBuf,
    /// Raft tick.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots (and log compactions).
    pub snapshot_every: u64,
    /// Start with empty storage and no voters; wait to be added.
    pub join: bool,
    /// How long an interrupted push and an unreferenced blob are kept.
    pub upload_grace: Duration,
}

impl ReplicaConfig {
    /// A one-replica group (the `dev` mode).
    pub fn single(data_dir: PathBuf, address: String) -> Self {
        ReplicaConfig {
            id: 1,
            peers: BTreeMap::from([(1, address)]),
            data_dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 10_000,
            join: false,
            upload_grace: crate::blobs::DEFAULT_GRACE,
        }
    }
}

/// Why a request to the replica did not produce an outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicaError {
    /// Not the leader (or the leader is unknown or changed while waiting);
    /// `leader` is where to go. A write may still have happened: retry with
    /// the same idempotency key.
    #[error("not the leader{}", leader_hint(.leader))]
    NotLeader {
        /// Leader id and address, when known.
        leader: Option<(u64, String)>,
    },
    /// The replica task has stopped.
    #[error("replica stopped")]
    Stopped,
    /// No outcome within the deadline; the write may or may not have happened
    /// (retry with the same idempotency key).
    #[error("no outcome within {0:?}; retry with the same idempotency key")]
    Timeout(Duration),
    /// Raft refused the proposal.
    #[error("proposal refused: {0}")]
    Refused(String),
    /// A membership change is not possible now.
    #[error("membership: {0}")]
    Membership(String),
    /// An earlier membership change, or a new leader's first entry, is not
    /// applied yet: raft-rs would silently drop a conf change proposed now.
    #[error(
        "membership: an earlier change (or the new leader's first entry) is not applied yet; retry"
    )]
    ConfChangePending,
}

fn leader_hint(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!(": leader is replica {id} at {addr}"),
        None => ": no leader elected yet".to_string(),
    }
}

/// One member of the group as this replica sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// Peer address.
    pub address: String,
    /// Voter (true) or learner (false).
    pub voter: bool,
    /// Highest log index known replicated there (leader only, else 0).
    pub matched: u64,
}

/// Observable status of a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// This replica.
    pub id: u64,
    /// Current leader (0 = none).
    pub leader_id: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// State revision.
    pub revision: u64,
    /// Role: "leader", "follower", "candidate", "pre-candidate", "learner",
    /// "removed" (not a member).
    pub role: String,
    /// Members (voters and learners) by id.
    pub members: BTreeMap<u64, MemberStatus>,
}

impl ReplicaStatus {
    /// The leader's id and address, when known.
    pub fn leader(&self) -> Option<(u64, String)> {
        self.members
            .get(&self.leader_id)
            .map(|m| (self.leader_id, m.address.clone()))
    }
}

/// Where a peer message could not go.
#[derive(Debug, Clone, Copy)]
pub enum PeerReport {
    /// Sending to this peer failed.
    Unreachable(u64),
    /// A snapshot to this peer was delivered (true) or not.
    Snapshot(u64, bool),
}

type WriteReply = oneshot::Sender<Result<Result<Outcome, StateError>, ReplicaError>>;

pub(crate) enum Request {
    Propose {
        envelope: Envelope,
        reply: WriteReply,
    },
    Read {
        reply: oneshot::Sender<Result<(), ReplicaError>>,
    },
    ChangeMembers {
        change: MemberChange,
        reply: oneshot::Sender<Result<(), ReplicaError>>,
    },
    TransferLeader(u64),
    Step(raft::prelude::Message),
    Report(PeerReport),
}

/// Proposals made through a [`Replica`] and how they failed (metrics).
#[derive(Debug, Default)]
pub struct ProposalStats {
    /// Proposals made.
    pub proposed: std::sync::atomic::AtomicU64,
    /// Failures, by [`ProposalStats::REASONS`].
    failed: [std::sync::atomic::AtomicU64; 7],
}

impl ProposalStats {
    /// Failure reasons, in the order of [`ProposalStats::failures`]:
    /// `rejected` is the state machine refusing the command (validation,
    /// conflicts); the others are [`ReplicaError`]s.
    pub const REASONS: [&'static str; 7] = [
        "rejected",
        "not_leader",
        "stopped",
        "timeout",
        "refused",
        "membership",
        "conf_change_pending",
    ];

    fn count(&self, r: &Result<Result<Outcome, StateError>, ReplicaError>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.proposed.fetch_add(1, Relaxed);
        let reason = match r {
            Ok(Ok(_)) => return,
            Ok(Err(_)) => 0,
            Err(ReplicaError::NotLeader { .. }) => 1,
            Err(ReplicaError::Stopped) => 2,
            Err(ReplicaError::Timeout(_)) => 3,
            Err(ReplicaError::Refused(_)) => 4,
            Err(ReplicaError::Membership(_)) => 5,
            Err(ReplicaError::ConfChangePending) => 6,
        };
        if let Some(c) = self.failed.get(reason) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Failures so far, by reason.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        Self::REASONS
            .iter()
            .zip(&self.failed)
            .map(|(r, c)| (*r, c.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }
}

/// Handle to the replica task. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    tx: mpsc::Sender<Request>,
    proposals: Arc<ProposalStats>,
    applied: Arc<RwLock<Applied>>,
    revision: watch::Receiver<u64>,
    status: watch::Receiver<ReplicaStatus>,
    digest: Arc<std::sync::Mutex<(u64, String)>>,
    shutdown: CancellationToken,
}

/// Longest a proposal or read waits for its outcome.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A read guard on the applied state.
pub struct StateGuard<'a>(RwLockReadGuard<'a, Applied>);

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0.state
    }
}

impl StateGuard<'_> {
    /// Log index the state was applied up to.
    pub fn index(&self) -> u64 {
        self.0.index
    }
}

impl Replica {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ReplicaError>>) -> Request,
    ) -> Result<T, ReplicaError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ReplicaError::Stopped)?;
        match tokio::time::timeout(PROPOSE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ReplicaError::Stopped),
            Err(_) => Err(ReplicaError::Timeout(PROPOSE_TIMEOUT)),
        }
    }

    /// Propose a command and wait until it is committed and applied here. On
    /// a follower the proposal travels to the leader inside Raft.
    pub async fn propose(
        &self,
        envelope: Envelope,
    ) -> Result<Result<Outcome, StateError>, ReplicaError> {
        let r = self.ask(|reply| Request::Propose { envelope, reply }).await;
        self.proposals.count(&r);
        r
    }

    /// Proposals made through this replica's handles, and their failures.
    pub fn proposal_stats(&self) -> &ProposalStats {
        &self.proposals
    }

    /// Wait until this replica's applied state is at least as new as the
    /// leader's commit index at the time of the call (Raft ReadIndex). A read
    /// of [`Replica::state`] after this returns is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ReplicaError> {
        self.ask(|reply| Request::Read { reply }).await
    }

    /// Propose a membership change (leader only) and wait until it is
    /// applied. While an earlier change (or a new leader's first entry) is
    /// still pending, the proposal is retried for up to [`PROPOSE_TIMEOUT`].
    pub async fn change_members(&self, change: MemberChange) -> Result<(), ReplicaError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        loop {
            let change = change.clone();
            match self
                .ask(|reply| Request::ChangeMembers { change, reply })
                .await
            {
                Err(ReplicaError::ConfChangePending) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                r => return r,
            }
        }
    }

    /// Ask the leader to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), ReplicaError> {
        self.tx
            .send(Request::TransferLeader(to))
            .await
            .map_err(|_| ReplicaError::Stopped)
    }

    /// Hand a Raft message from a peer to the replica.
    pub async fn step(&self, msg: raft::prelude::Message) -> Result<(), ReplicaError> {
        self.tx
            .send(Request::Step(msg))
            .await
            .map_err(|_| ReplicaError::Stopped)
    }

    /// Read the applied state (not linearizable by itself: see
    /// [`Replica::read_barrier`]). Keep the guard short: the owner waits for it.
    pub fn state(&self) -> StateGuard<'_> {
        StateGuard(self.applied.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// blake3 of the state's JSON and the applied index it was taken at.
    /// Cached per index.
    pub fn state_digest(&self) -> (u64, String) {
        let guard = self.state();
        let index = guard.index();
        let mut cache = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != index || cache.1.is_empty() {
            *cache = (index, snapshot::digest(&guard));
        }
        cache.clone()
    }

    /// Follow the applied revision.
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.revision.clone()
    }

    /// Current status.
    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    /// Follow the status.
    pub fn status_changes(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// A token cancelled when the replica stops.
    pub fn stopped(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
