//! The snapshot codec: what a Raft snapshot's data holds ([`SnapshotData`]:
//! the members' addresses and the state machine) and its JSON encoding, plus
//! the state [`digest`] replicas compare.
//!
//! Invariants: [`encode`] and [`decode`] are inverse; [`decode`] still reads
//! snapshots written before they carried addresses (the bare state). The
//! encoding is deterministic for a given state, so every replica hashes the
//! same state to the same digest.
//!
//! Must not depend on: the [`Core`](super::Core), storage, the owner thread
//! or any I/O. Pure functions of bytes and values.

use rackboot_state::State;
use serde::{Deserialize, Serialize};

use super::replica_core::ReplicaFatal;
use super::storage::Addresses;

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

/// Decode a snapshot's data.
pub(super) fn decode(data: &[u8]) -> Result<SnapshotData, ReplicaFatal> {
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

/// Encode a snapshot's data.
pub(super) fn encode(addresses: &Addresses, state: &State) -> Result<Vec<u8>, ReplicaFatal> {
    serde_json::to_vec(&SnapshotRef { addresses, state })
        .map_err(|e| ReplicaFatal::Snapshot(e.to_string()))
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
