//! Why a command was refused.

use crate::types::{ImageName, Mac, NodeNumber, RackName};

/// A command that cannot be applied. Refusals are deterministic: every replica
/// refuses the same command the same way, and the state is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StateError {
    /// The named image does not exist.
    #[error("image '{0}' not found")]
    ImageNotFound(ImageName),
    /// The image name is taken by a different manifest.
    #[error(
        "image '{name}' already exists with manifest {existing}; images are immutable, push under a new name"
    )]
    ImageExists {
        /// The name.
        name: ImageName,
        /// Manifest hash already committed under it.
        existing: String,
    },
    /// A tag that cannot point there (or a name taken by an image).
    #[error("tag '{tag}': {reason}")]
    InvalidTag {
        /// The tag.
        tag: ImageName,
        /// Why.
        reason: String,
    },
    /// The rack does not exist.
    #[error("rack '{0}' not found")]
    RackNotFound(RackName),
    /// The node does not exist.
    #[error("node {0} not found")]
    NodeNotFound(NodeNumber),
    /// The rack's address range has no free slot left.
    #[error("rack '{rack}' is full: no free address between node_base and the end of {subnet}")]
    RackFull {
        /// The rack.
        rack: RackName,
        /// Its subnet.
        subnet: String,
    },
    /// The MAC already belongs to another node.
    #[error("MAC {mac} already belongs to node {node}")]
    MacTaken {
        /// The MAC.
        mac: Mac,
        /// Its node.
        node: NodeNumber,
    },
    /// An agent reported a MAC of a node of another rack: only that rack's
    /// agent (or an administrator) may change it.
    #[error("MAC {mac} belongs to node {node} of rack '{rack}', not to the reporting rack")]
    OtherRack {
        /// The MAC.
        mac: Mac,
        /// Its node.
        node: NodeNumber,
        /// The node's rack.
        rack: RackName,
    },
    /// An agent reported a MAC of a machine another rack's agent holds for
    /// acceptance.
    #[error("MAC {mac} is held for acceptance by rack '{rack}', not by the reporting rack")]
    HeldByOtherRack {
        /// The MAC.
        mac: Mac,
        /// The rack holding it.
        rack: RackName,
    },
    /// Registering the rack again with these values would change the
    /// address of nodes it has.
    #[error(
        "rack '{rack}' is registered with other addresses: node {node} would move from {from} to {to}; start the agent with the registered node base and subnet (`rackboot rack list`), or retire the rack's nodes first"
    )]
    RackWouldMoveNodes {
        /// The rack.
        rack: RackName,
        /// The first node (by number) that would move.
        node: NodeNumber,
        /// Its address now.
        from: std::net::Ipv4Addr,
        /// Its address with the new values.
        to: std::net::Ipv4Addr,
    },
    /// A MAC that cannot name one machine.
    #[error("MAC {0} is not a unicast address (all zeros, multicast or broadcast)")]
    NotUnicast(Mac),
    /// No pending machine has this MAC.
    #[error("no machine waiting for acceptance has MAC {0}")]
    NotPending(Mac),
    /// Too many machines wait for acceptance.
    #[error("{0} machines already wait for acceptance; accept or clear some first")]
    PendingFull(usize),
    /// A node needs at least one MAC, and at most a bounded number.
    #[error("a node needs 1 to {max} MACs, got {got}")]
    BadMacCount {
        /// MACs given.
        got: usize,
        /// Limit.
        max: usize,
    },
    /// A site key-value is refused.
    #[error("invalid meta key '{key}': {reason}")]
    InvalidMeta {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Rack settings are inconsistent.
    #[error("invalid rack '{rack}': {reason}")]
    InvalidRack {
        /// The rack.
        rack: RackName,
        /// What is wrong.
        reason: String,
    },
}
