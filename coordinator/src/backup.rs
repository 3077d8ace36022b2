//! Backups of the coordinator's replicated state: one file, a JSON header
//! line (format, revision, Raft index, size and blake3 of the body) and the
//! state as JSON. Made online (`rackboot cluster backup FILE`, a linearizable
//! read of the leader's state) or offline from a stopped replica's data
//! directory (`rackboot-coordinator --export-state FILE`, also what recovers
//! a group that lost its quorum); restored into an empty data directory with
//! `rackboot-coordinator --restore-state FILE`, which founds a new group
//! whose first snapshot is the backup.
//!
//! Blobs are not in the state: they live content-addressed under each
//! replica's `blobs/`; copy that directory along (any replica's will do).

use std::path::Path;

use rackboot_state::State;
use serde::{Deserialize, Serialize};

use crate::raft::ReplicaFatal;
use crate::raft::storage::{Addresses, RaftStore};

/// Format name in the header.
pub const FORMAT: &str = "rackboot-state/1";

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

/// The header line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    revision: u64,
    raft_index: u64,
    size: u64,
    blake3: String,
}

/// Encode `state` (at Raft index `raft_index`) as a backup.
pub fn encode(state: &State, raft_index: u64) -> Result<Vec<u8>, BackupError> {
    let body = serde_json::to_vec(state).map_err(|e| BackupError::Invalid(e.to_string()))?;
    let header = Header {
        format: FORMAT.to_string(),
        revision: state.revision(),
        raft_index,
        size: body.len() as u64,
        blake3: blake3::hash(&body).to_hex().to_string(),
    };
    let mut out = serde_json::to_vec(&header).map_err(|e| BackupError::Invalid(e.to_string()))?;
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode and verify a backup: the state and its revision.
pub fn decode(bytes: &[u8]) -> Result<State, BackupError> {
    let bad = |m: String| BackupError::Invalid(m);
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("not a rackboot backup (no header line)".into()))?;
    let (head, body) = (&bytes[..nl], &bytes[nl + 1..]);
    let header: Header = serde_json::from_slice(head)
        .map_err(|e| bad(format!("not a rackboot backup (header: {e})")))?;
    if header.format != FORMAT {
        return Err(bad(format!(
            "backup format {:?}, this coordinator reads {FORMAT:?}",
            header.format
        )));
    }
    if body.len() as u64 != header.size {
        return Err(bad(format!(
            "backup truncated: {} bytes of state, the header says {}",
            body.len(),
            header.size
        )));
    }
    let actual = blake3::hash(body).to_hex().to_string();
    if actual != header.blake3 {
        return Err(bad(format!(
            "backup damaged: state hashes to {actual}, the header says {}",
            header.blake3
        )));
    }
    let state: State =
        serde_json::from_slice(body).map_err(|e| bad(format!("backup state: {e}")))?;
    if state.revision() != header.revision {
        return Err(bad("backup revision does not match its state".into()));
    }
    Ok(state)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detected() {
        let state = State::default();
        let bytes = encode(&state, 7).unwrap_or_default();
        assert!(decode(&bytes).is_ok());
        let mut damaged = bytes.clone();
        if let Some(b) = damaged.last_mut() {
            *b ^= 1;
        }
        let e = decode(&damaged)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("damaged") || e.contains("state"), "{e}");
        let e = decode(&bytes[..bytes.len() - 1])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("truncated"), "{e}");
        assert!(decode(b"hello").is_err());
    }
}
