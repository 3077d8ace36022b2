//! The backup file format, pure: a JSON header line (format, revision, Raft
//! index, size and blake3 of the body) and the [`State`] as JSON. Reading
//! and writing files, and founding a group from a backup, are the
//! coordinator's (`rackboot_coordinator::backup`); this is what both sides
//! and the fuzz target `backup_file` share.

use serde::{Deserialize, Serialize};

use crate::State;

/// Format name in the header.
pub const FORMAT: &str = "rackboot-state/1";

/// Not a backup, or a damaged one: what is wrong, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackupFormatError(pub String);

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
pub fn encode(state: &State, raft_index: u64) -> Result<Vec<u8>, BackupFormatError> {
    let body = serde_json::to_vec(state).map_err(|e| BackupFormatError(e.to_string()))?;
    let header = Header {
        format: FORMAT.to_string(),
        revision: state.revision(),
        raft_index,
        size: body.len() as u64,
        blake3: blake3::hash(&body).to_hex().to_string(),
    };
    let mut out = serde_json::to_vec(&header).map_err(|e| BackupFormatError(e.to_string()))?;
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode and verify a backup: the state, whose revision the header names.
pub fn decode(bytes: &[u8]) -> Result<State, BackupFormatError> {
    let bad = |m: String| BackupFormatError(m);
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
