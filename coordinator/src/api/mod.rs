//! gRPC services. Handlers convert API types to domain types at once
//! (`convert`), propose commands to the replica or read its applied state.

mod admin;
mod agent;
pub mod convert;
mod raft_peer;

use std::sync::Arc;

use rackboot_state::{Envelope, Outcome};
use tonic::Status;

use crate::blobs::BlobStore;
use crate::raft::Replica;

pub use admin::{AssignmentApi, ClusterApi, ImageApi, NodeApi, RackApi};
pub use agent::AgentApi;
pub use raft_peer::RaftPeerApi;

/// What every service needs.
#[derive(Clone)]
pub struct Ctx {
    /// The replica.
    pub replica: Replica,
    /// Blob files.
    pub blobs: Arc<BlobStore>,
}

impl Ctx {
    /// Propose and map both failure layers to a status.
    pub async fn propose(&self, envelope: Envelope) -> Result<Outcome, Status> {
        self.replica
            .propose(envelope)
            .await
            .map_err(convert::replica_error)?
            .map_err(convert::state_error)
    }
}

/// An idempotency key from a request field ("" = none).
pub fn key(k: &str) -> Option<String> {
    (!k.is_empty()).then(|| k.to_string())
}

/// Unix seconds now (stamped by the proposer, never by the state machine).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
