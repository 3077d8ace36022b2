//! Commands: the only way the replicated state changes.

use serde::{Deserialize, Serialize};

use crate::boot::{BootSession, LogLine, RackCacheReport};
use std::collections::BTreeMap;

use crate::types::{Image, ImageName, Mac, Node, NodeNumber, PendingMachine, Rack, RackName};

/// Which nodes an assignment is for. The most specific wins: node, then rack, then default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignTarget {
    /// Every node without a rack or node assignment.
    Default,
    /// Every node of a rack without a node assignment.
    Rack(RackName),
    /// One node.
    Node(NodeNumber),
    /// Machines not numbered yet (provisional leases): the discovery image
    /// that runs `rackboot probe`.
    Discovery,
}

impl std::fmt::Display for AssignTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssignTarget::Default => f.write_str("default"),
            AssignTarget::Rack(r) => write!(f, "rack:{r}"),
            AssignTarget::Node(n) => write!(f, "node:{n}"),
            AssignTarget::Discovery => f.write_str("discovery"),
        }
    }
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a rack or update its network settings (an agent registering).
    RegisterRack {
        /// The rack.
        rack: Rack,
    },
    /// An administrator changes an existing rack's network settings, moving
    /// its nodes' addresses if the node base moves (an agent's
    /// re-registration never may).
    MoveRack {
        /// The rack with its new settings.
        rack: Rack,
    },
    /// A machine was seen: return its node, or accept it with the next free number.
    DiscoverNode {
        /// Rack it was seen in.
        rack: RackName,
        /// Its MACs, the asking one first.
        macs: Vec<Mac>,
        /// Its reported UUID (recorded only).
        uuid: Option<String>,
        /// Inventory the probe reported (recorded only).
        #[serde(default)]
        inventory: BTreeMap<String, String>,
        /// Manual acceptance: an unknown machine is held as pending (for
        /// `AcceptMachine`) instead of being numbered.
        #[serde(default)]
        hold: bool,
        /// Unix seconds when the agent reported it (stamped by the proposer).
        #[serde(default)]
        seen_at: u64,
    },
    /// Number a pending machine (manual acceptance), found by any of its MACs.
    AcceptMachine {
        /// One of its MACs.
        mac: Mac,
    },
    /// Forget a pending machine without numbering it, found by any of its
    /// MACs (its next report holds it again).
    RejectMachine {
        /// One of its MACs.
        mac: Mac,
    },
    /// Give node `number` — its address, name and assignments — to new
    /// hardware: its MACs become exactly `macs`.
    ReplaceNode {
        /// The node.
        number: NodeNumber,
        /// The new hardware's MACs.
        macs: Vec<Mac>,
    },
    /// Take a node out of service: its MACs are forgotten (the machine is
    /// unknown again), its number and address stay reserved for
    /// `ReplaceNode`.
    RetireNode {
        /// The node.
        number: NodeNumber,
    },
    /// Commit an image manifest.
    CommitImage {
        /// The manifest.
        image: Image,
    },
    /// An agent served kernels: record the boot sessions.
    RecordBootSessions {
        /// The reporting agent's rack.
        rack: RackName,
        /// Sessions.
        sessions: Vec<BootSession>,
    },
    /// Point a tag (a movable image name, e.g. `compute:latest`) at an
    /// image; nodes assigned the tag boot what it points to.
    TagImage {
        /// The tag.
        tag: ImageName,
        /// The image (not a tag).
        image: ImageName,
    },
    /// An agent reported what its blob cache holds.
    RecordRackCache {
        /// The reporting agent's rack.
        rack: RackName,
        /// The report.
        report: RackCacheReport,
    },
    /// An agent shipped node log lines.
    AppendLogs {
        /// The reporting agent's rack.
        rack: RackName,
        /// Lines by node.
        lines: Vec<(NodeNumber, LogLine)>,
        /// Lines the agent had to drop before these.
        dropped: u64,
    },
    /// Set (`Some`) or remove (`None`) a site key-value served in every
    /// node's boot-info.
    SetMeta {
        /// Key (see [`crate::validate_meta`]).
        key: String,
        /// Value.
        value: Option<String>,
    },
    /// Assign an image.
    Assign {
        /// For whom.
        target: AssignTarget,
        /// Which image.
        image: ImageName,
    },
}

/// A command as proposed: with an optional idempotency key, so a retried
/// request after an ambiguous timeout gets the first outcome back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Client-chosen key; the same key always yields the first outcome.
    pub idempotency_key: Option<String>,
    /// The command.
    pub command: Command,
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The rack as stored.
    Rack(Rack),
    /// The node (existing or newly accepted).
    Node(Node),
    /// The machine is held for manual acceptance.
    Pending(PendingMachine),
    /// The image as stored (the first commit's when identical content is pushed again).
    Image(Box<Image>),
    /// Boot records stored: how many were kept (lines for nodes that are
    /// not in the reporting rack are not).
    Recorded {
        /// Records kept.
        kept: u64,
    },
    /// The site key-values changed (or were already so) at this revision.
    Meta {
        /// Revision after the change.
        revision: u64,
    },
    /// A tag was moved.
    Tagged {
        /// The image it pointed to before, if any.
        previous: Option<ImageName>,
        /// State revision after the change.
        revision: u64,
    },
    /// The assignment took effect at this revision.
    Assigned {
        /// Revision after the change.
        revision: u64,
    },
}
