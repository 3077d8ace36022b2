//! The replica's settings: file and flags, validated
//! ([`rackboot_coordinator_settings`]), and the Raft replica configuration
//! made from them.

pub use rackboot_coordinator_settings::*;

use crate::raft::ReplicaConfig;

/// The replica configuration the settings describe.
pub fn replica_config(s: &Settings) -> ReplicaConfig {
    ReplicaConfig {
        id: s.id,
        peers: s.peers.clone(),
        data_dir: s.data_dir.clone(),
        tick: s.tick,
        election_ticks: s.election_ticks,
        heartbeat_ticks: s.heartbeat_ticks,
        snapshot_every: s.snapshot_every,
        join: s.join,
        upload_grace: s.upload_grace,
    }
}
