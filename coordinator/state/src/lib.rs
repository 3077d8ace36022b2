//! The coordinator's replicated state machine.
//!
//! Every replica applies the same committed [`Command`]s in the same order to a
//! [`State`] and so reaches the same result. That only holds if applying is a
//! pure function of the state and the command: this crate must never depend on
//! tokio, sockets, the file system, the clock or randomness. Time, where a
//! command needs it, travels inside the command (stamped by the proposer).
//!
//! Invariants kept by [`State::apply`]:
//! - a node number is handed out once and never reused for other hardware
//!   unless an administrator says so;
//! - a MAC belongs to at most one node;
//! - an image name, once committed, always means the same manifest;
//! - an assignment only ever names an existing image;
//! - every applied command that changes racks, nodes, held machines,
//!   images, tags, assignments or site key-values bumps the revision by
//!   exactly one, so watchers can resume from a revision without gap or
//!   duplicate; a command that changes nothing, and the boot-session,
//!   node-log and rack-cache records (replicated, but never part of a rack
//!   view), leave it as it is.

pub mod backup;
pub mod boot;
mod command;
mod error;
mod machine;
mod types;

pub use boot::{BootRecords, BootSession, LogLine, PHASES, Phase, RackCacheReport, Transport};
pub use command::{AssignTarget, Command, Envelope, Outcome};
pub use error::StateError;
pub use machine::{RackView, State};
pub use types::{
    Blake3Digest, BlobRef, Image, ImageName, Mac, Node, NodeNumber, ParseError, PendingMachine,
    Rack, RackName,
};

/// Most machines held for manual acceptance at once.
pub const MAX_PENDING: usize = 4096;
/// A machine held for acceptance is forgotten this long (seconds) after
/// it was first seen, at the next report of any machine (a machine still
/// reporting is held again at once).
pub const PENDING_TTL_SECS: u64 = 24 * 3600;
/// Most MACs per node.
pub const MAX_MACS_PER_NODE: usize = 42;

/// Most site key-values.
pub const MAX_META_KEYS: usize = 256;
/// Longest site value (bytes).
pub const MAX_META_VALUE: usize = 4096;

/// A site key-value as boot-info serves it: the key becomes part of a shell
/// variable name (`RACKBOOT_META_<KEY>`), so it is 1–64 of `A-Z a-z 0-9 _`
/// not starting with a digit; the value is at most [`MAX_META_VALUE`] bytes
/// without NUL or line breaks.
pub fn validate_meta(key: &str, value: Option<&str>) -> Result<(), String> {
    if key.is_empty() || key.len() > 64 {
        return Err("keys are 1 to 64 characters".into());
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(
            "keys use only letters, digits and _ (they become shell variable names)".into(),
        );
    }
    if key.as_bytes()[0].is_ascii_digit() {
        return Err("keys do not start with a digit".into());
    }
    if let Some(v) = value {
        if v.len() > MAX_META_VALUE {
            return Err(format!("values are at most {MAX_META_VALUE} bytes"));
        }
        if v.contains(['\0', '\n', '\r']) {
            return Err("values hold no NUL or line break".into());
        }
    }
    Ok(())
}
