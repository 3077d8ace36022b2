//! Backups of the coordinator's replicated state: one file, a JSON header
//! line (format, revision, Raft index, size and blake3 of the body) and the
//! state as JSON. Made online (`rackboot cluster backup FILE`, a linearizable
//! read of the leader's state) or offline from a stopped replica's data
//! directory (`rackboot-coordinator --export-state FILE`, also what recovers
//! a group that lost its quorum); restored into an empty data directory with
//! `rackboot-coordinator --restore-state FILE`, which founds a new group
//! whose first snapshot is the backup.
//!
//! The format itself is pure and lives in [`rackboot_state::backup`] (where
//! it is unit-tested and fuzzed); this module reads and writes the files.
//!
//! Blobs are not in the state: they live content-addressed under each
//! replica's `blobs/`; copy that directory along (any replica's will do).

use std::path::Path;

use rackboot_state::State;

use crate::raft::ReplicaFatal;
use crate::raft::storage::{Addresses, RaftStore};

pub use rackboot_state::backup::FORMAT;

/// A backup that cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not a backup, or damaged.
    #[error("{0}")]
    Invalid(String),
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] ReplicaFatal),
}

impl From<rackboot_state::backup::BackupFormatError> for BackupError {
    fn from(e: rackboot_state::backup::BackupFormatError) -> Self {
        BackupError::Invalid(e.0)
    }
}

/// Encode `state` (at Raft index `raft_index`) as a backup
/// ([`rackboot_state::backup`]).
pub fn encode(state: &State, raft_index: u64) -> Result<Vec<u8>, BackupError> {
    Ok(rackboot_state::backup::encode(state, raft_index)?)
}

/// Decode and verify a backup: the state and its revision.
pub fn decode(bytes: &[u8]) -> Result<State, BackupError> {
    Ok(rackboot_state::backup::decode(bytes)?)
}

/// Back up a stopped replica's data directory into `out`.
pub fn export_offline(data_dir: &Path, out: &Path) -> Result<(u64, u64), BackupError> {
    let store = RaftStore::open(&data_dir.join("raft.redb")).map_err(ReplicaFatal::from)?;
    let (state, index) = crate::raft::stored_state(&store)?;
    write_atomically(out, &encode(&state, index)?)?;
    Ok((state.revision(), index))
}

/// Found a new group in the empty `data_dir` from the backup `file`, with
/// `peers` as its voters. Refuses a data directory that holds a store.
pub fn restore(data_dir: &Path, file: &Path, peers: &Addresses) -> Result<u64, BackupError> {
    let bytes = std::fs::read(file).map_err(|source| BackupError::Io {
        path: file.display().to_string(),
        source,
    })?;
    let state = decode(&bytes)?;
    std::fs::create_dir_all(data_dir).map_err(|source| BackupError::Io {
        path: data_dir.display().to_string(),
        source,
    })?;
    let store = RaftStore::open(&data_dir.join("raft.redb")).map_err(ReplicaFatal::from)?;
    if !store.is_empty() {
        return Err(BackupError::Invalid(format!(
            "{} already holds a replica's state; restore into an empty data directory",
            data_dir.display()
        )));
    }
    crate::raft::bootstrap_store(&store, peers, &state)?;
    Ok(state.revision())
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
