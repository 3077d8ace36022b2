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
//! - every applied command bumps the revision by exactly one, so watchers can
//!   resume from a revision without gap or duplicate.

pub mod boot;
mod command;
mod error;
mod machine;
mod types;

pub use boot::{BootRecords, BootSession, LogLine};
pub use command::{AssignTarget, Command, Envelope, Outcome};
pub use error::StateError;
pub use machine::{RackView, State};
pub use types::{
    Blake3Digest, BlobRef, Image, ImageName, Mac, Node, NodeNumber, ParseError, Rack, RackName,
};
