//! The Raft replica: one task owns the raft-rs `RawNode`, its storage and the
//! state machine; everything else talks to it through a [`Replica`] handle.
//!
//! The owner follows raft-rs's `Ready` order: send the leader's messages,
//! install a snapshot if any, apply committed entries, persist new entries and
//! the HardState (fsynced), send the messages that required persistence,
//! advance, then handle the light ready the same way.

mod log_bridge;
mod node;
/// Fatal replica errors.
pub mod node_error {
    pub use super::node::ReplicaFatal;
}
mod peers;
pub mod storage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use rackboot_state::{Envelope, Outcome, State, StateError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use node::spawn;
pub use storage::{RaftStore, StoreError};

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's id (non-zero).
    pub id: u64,
    /// Every voter's id and peer address (including this one).
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
        }
    }
}

/// Why a request to the replica did not produce an outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicaError {
    /// Not the leader; writes must go to `leader`.
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
}

fn leader_hint(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!(": leader is replica {id} at {addr}"),
        None => ": no leader elected yet".to_string(),
    }
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
    /// State revision.
    pub revision: u64,
    /// Role: "leader", "follower", "candidate", "pre-candidate".
    pub role: String,
    /// Match index per peer (leader only).
    pub progress: BTreeMap<u64, u64>,
}

pub(crate) enum Request {
    Propose {
        envelope: Envelope,
        reply: oneshot::Sender<Result<Result<Outcome, StateError>, ReplicaError>>,
    },
    Step(raft::prelude::Message),
}

/// Handle to the replica task. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    tx: mpsc::Sender<Request>,
    state: Arc<RwLock<State>>,
    revision: watch::Receiver<u64>,
    status: watch::Receiver<ReplicaStatus>,
    peers: Arc<BTreeMap<u64, String>>,
    shutdown: CancellationToken,
}

/// Longest a proposal waits for its outcome.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Replica {
    /// Propose a command and wait until it is committed and applied here.
    pub async fn propose(
        &self,
        envelope: Envelope,
    ) -> Result<Result<Outcome, StateError>, ReplicaError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Propose { envelope, reply })
            .await
            .map_err(|_| ReplicaError::Stopped)?;
        match tokio::time::timeout(PROPOSE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ReplicaError::Stopped),
            Err(_) => Err(ReplicaError::Timeout(PROPOSE_TIMEOUT)),
        }
    }

    /// Hand a Raft message from a peer to the replica.
    pub async fn step(&self, msg: raft::prelude::Message) -> Result<(), ReplicaError> {
        self.tx
            .send(Request::Step(msg))
            .await
            .map_err(|_| ReplicaError::Stopped)
    }

    /// Read the applied state. Keep the guard short: the owner waits for it.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow the applied revision.
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.revision.clone()
    }

    /// Current status.
    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    /// Peer addresses by id.
    pub fn peers(&self) -> &BTreeMap<u64, String> {
        &self.peers
    }

    /// A token cancelled when the replica stops.
    pub fn stopped(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
