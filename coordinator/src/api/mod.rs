//! gRPC services. Handlers convert API types to domain types at once
//! (`convert`), propose commands to the replica or read its applied state.

mod admin;
mod agent;
mod blob_peer;
mod cluster;
pub mod convert;
mod raft_peer;

use std::sync::Arc;

use rackboot_state::{Envelope, Outcome};
use tonic::Status;

use crate::blobs::BlobStore;
use crate::raft::Replica;
use crate::replication::Replicator;

pub use admin::{AssignmentApi, ImageApi, MetaApi, NodeApi, RackApi};
pub use agent::AgentApi;
pub use blob_peer::BlobPeerApi;
pub use cluster::ClusterApi;
pub use raft_peer::RaftPeerApi;

/// What every service needs.
#[derive(Clone)]
pub struct Ctx {
    /// The replica.
    pub replica: Replica,
    /// Blob files.
    pub blobs: Arc<BlobStore>,
    /// Blob replication to and from the other replicas.
    pub repl: Arc<Replicator>,
    /// Counters of the API (metrics).
    pub stats: Arc<crate::metrics::ApiStats>,
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

    /// Wait until a read of the local state is linearizable (ReadIndex).
    pub async fn read(&self) -> Result<(), Status> {
        self.replica
            .read_barrier()
            .await
            .map_err(convert::replica_error)
    }
}

/// Metadata key that may carry an idempotency key for a mutating call whose
/// message has no (or an empty) `idempotency_key` field.
pub const IDEMPOTENCY_KEY: &str = "rackboot-idempotency-key";

/// The idempotency key of a request: the message field if set, else the
/// `rackboot-idempotency-key` metadata, else none.
pub fn key(field: &str, metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    if !field.is_empty() {
        return Some(field.to_string());
    }
    metadata
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

/// Unix seconds now (stamped by the proposer, never by the state machine).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
