//! Boot sessions and node logs, kept per node and bounded: the last
//! [`SESSIONS_PER_NODE`] sessions and the last [`LINES_PER_NODE`] log lines.
//! A line carries the session (the kernel served) it belongs to, so logs stay
//! in step with the kernel each node actually ran.
//!
//! These records are replicated like everything else but do not bump the
//! state revision: they never change what an agent serves.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::types::NodeNumber;

/// Sessions kept per node.
pub const SESSIONS_PER_NODE: usize = 16;
/// Log lines kept per node.
pub const LINES_PER_NODE: usize = 4096;
/// Longest log line kept (bytes; longer lines are cut).
pub const MAX_LINE: usize = 2048;

/// What a rack agent's blob cache holds, as it last reported (not
/// revisioned: a report changes no rack view).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RackCacheReport {
    /// The reporting agent.
    pub agent_id: String,
    /// Blobs held, verified (at most [`RackCacheReport::MAX_HELD`]).
    pub held: Vec<crate::types::BlobRef>,
    /// Bytes of the cache's files.
    pub bytes: u64,
    /// The cache's bound.
    pub max_bytes: u64,
    /// Blobs evicted since the agent started.
    pub evicted: u64,
    /// Corrupt 1 MiB groups found on disk and fetched again since it started.
    pub repaired_groups: u64,
    /// When the agent sent it (ms since the Unix epoch).
    pub unix_millis: u64,
    /// What the agent cannot serve as configured (at most
    /// [`RackCacheReport::MAX_PROBLEMS`] of [`RackCacheReport::MAX_PROBLEM_LEN`]
    /// bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl RackCacheReport {
    /// Most blobs one report may list.
    pub const MAX_HELD: usize = 4096;
    /// Most problems one report may list.
    pub const MAX_PROBLEMS: usize = 16;
    /// Longest problem text.
    pub const MAX_PROBLEM_LEN: usize = 512;

    /// Cut the lists to their bounds (problems on a character boundary).
    pub fn bound(&mut self) {
        self.held.truncate(Self::MAX_HELD);
        self.problems.truncate(Self::MAX_PROBLEMS);
        for p in &mut self.problems {
            if p.len() > Self::MAX_PROBLEM_LEN {
                let mut end = Self::MAX_PROBLEM_LEN;
                while !p.is_char_boundary(end) {
                    end -= 1;
                }
                p.truncate(end);
            }
        }
    }
}

/// One boot of one node: the agent served it this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSession {
    /// Agent-chosen id, `NODE-UNIXMILLIS`.
    pub id: String,
    /// Node.
    pub node: NodeNumber,
    /// MAC that booted.
    pub mac: String,
    /// Image name.
    pub image: String,
    /// Kernel blob served.
    pub kernel_blake3: String,
    /// Kernel version.
    pub kernel_version: String,
    /// `tftp` or `http`.
    pub transport: String,
    /// When (agent clock).
    pub unix_millis: u64,
    /// Which rack's agent served it.
    pub rack: String,
    /// Boot timeline: phase (see [`PHASES`]) → unix millis (agent clock).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, u64>,
}

/// A boot phase an agent records. The one list of phases: reports carry
/// [`Phase::name`], and the replicated state keeps only known names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// DHCP OFFER sent (starts a new boot cycle).
    DhcpOffer,
    /// DHCP ACK sent.
    DhcpAck,
    /// First TFTP transfer of this boot started.
    FirstTftpByte,
    /// Kernel request seen (the session starts).
    KernelRequested,
    /// Last kernel byte handed to the network.
    KernelSent,
    /// Last initrd byte handed to the network.
    InitrdSent,
    /// First syslog line of the session.
    FirstLogLine,
}

impl Phase {
    /// Every phase, in boot order.
    pub const ALL: [Phase; 7] = [
        Phase::DhcpOffer,
        Phase::DhcpAck,
        Phase::FirstTftpByte,
        Phase::KernelRequested,
        Phase::KernelSent,
        Phase::InitrdSent,
        Phase::FirstLogLine,
    ];

    /// Its name in reports and in the state.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::DhcpOffer => "dhcp_offer",
            Phase::DhcpAck => "dhcp_ack",
            Phase::FirstTftpByte => "first_tftp_byte",
            Phase::KernelRequested => "kernel_requested",
            Phase::KernelSent => "kernel_sent",
            Phase::InitrdSent => "initrd_sent",
            Phase::FirstLogLine => "first_log_line",
        }
    }

    /// The phase of a name, if it is one.
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The names of [`Phase::ALL`], in boot order.
pub const PHASES: [&str; 7] = {
    let mut names = [""; 7];
    let mut i = 0;
    while i < names.len() {
        names[i] = Phase::ALL[i].name();
        i += 1;
    }
    names
};

/// How a node was served its kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TFTP (RFC 1350).
    Tftp,
    /// HTTP.
    Http,
}

impl Transport {
    /// Its name in reports and in the state.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Tftp => "tftp",
            Transport::Http => "http",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Boot session it belongs to ("" when the node had none yet).
    pub session: String,
    /// Receive time (agent clock).
    pub unix_millis: u64,
    /// Text.
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct NodeRecords {
    sessions: VecDeque<BootSession>,
    lines: VecDeque<LogLine>,
}

/// Per-node sessions and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecords {
    nodes: BTreeMap<NodeNumber, NodeRecords>,
    /// Lines agents reported they had to drop.
    pub dropped_lines: u64,
}

impl BootRecords {
    /// Record a session. A session already recorded (same id) only gains
    /// phases it did not have (the first time of each phase is kept), so
    /// agents re-report a session as its boot progresses.
    pub fn record_session(&mut self, s: BootSession) {
        let r = self.nodes.entry(s.node).or_default();
        if let Some(existing) = r.sessions.iter_mut().find(|x| x.id == s.id) {
            for (phase, at) in s.phases {
                if Phase::from_name(&phase).is_some() {
                    existing.phases.entry(phase).or_insert(at);
                }
            }
            return;
        }
        let mut s = s;
        s.phases.retain(|k, _| Phase::from_name(k).is_some());
        r.sessions.push_back(s);
        while r.sessions.len() > SESSIONS_PER_NODE {
            r.sessions.pop_front();
        }
    }

    /// Append a node's line.
    pub fn append(&mut self, node: NodeNumber, mut line: LogLine) {
        if line.text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.text.is_char_boundary(cut) {
                cut -= 1;
            }
            line.text.truncate(cut);
        }
        let r = self.nodes.entry(node).or_default();
        r.lines.push_back(line);
        while r.lines.len() > LINES_PER_NODE {
            r.lines.pop_front();
        }
    }

    /// A node's sessions, oldest first.
    pub fn sessions(&self, node: NodeNumber) -> Vec<BootSession> {
        self.nodes
            .get(&node)
            .map(|r| r.sessions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A node's lines, optionally of one session, oldest first.
    pub fn lines(&self, node: NodeNumber, session: Option<&str>) -> Vec<LogLine> {
        self.nodes
            .get(&node)
            .map(|r| {
                r.lines
                    .iter()
                    .filter(|l| session.is_none_or(|s| l.session == s))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(node: u32, id: &str) -> BootSession {
        BootSession {
            id: id.into(),
            node: NodeNumber(node),
            mac: "52:54:00:00:00:01".into(),
            image: "img".into(),
            kernel_blake3: "k".into(),
            kernel_version: "6.1".into(),
            transport: "http".into(),
            unix_millis: 1,
            rack: "r1".into(),
            phases: BTreeMap::new(),
        }
    }

    #[test]
    fn bounded_and_filtered() {
        let mut b = BootRecords::default();
        for i in 0..40 {
            b.record_session(session(1, &format!("1-{i}")));
        }
        b.record_session(session(1, "1-39"));
        let s = b.sessions(NodeNumber(1));
        assert_eq!(s.len(), SESSIONS_PER_NODE);
        assert_eq!(s.last().map(|x| x.id.as_str()), Some("1-39"));
        for i in 0..(LINES_PER_NODE + 10) {
            let session = if i % 2 == 0 { "a" } else { "b" };
            b.append(
                NodeNumber(1),
                LogLine {
                    session: session.into(),
                    unix_millis: i as u64,
                    text: "x".repeat(if i == 0 { 10_000 } else { 3 }),
                },
            );
        }
        assert_eq!(b.lines(NodeNumber(1), None).len(), LINES_PER_NODE);
        assert_eq!(b.lines(NodeNumber(1), Some("a")).len(), LINES_PER_NODE / 2);
        assert!(b.lines(NodeNumber(2), None).is_empty());
    }

    #[test]
    fn re_reported_sessions_gain_phases_keeping_the_first_times() {
        let mut b = BootRecords::default();
        let mut s = session(1, "1-1");
        s.phases.insert("kernel_requested".into(), 10);
        s.phases.insert("bogus".into(), 1);
        b.record_session(s.clone());
        s.phases.insert("kernel_requested".into(), 99);
        s.phases.insert("initrd_sent".into(), 20);
        b.record_session(s);
        let got = &b.sessions(NodeNumber(1))[0];
        assert_eq!(got.phases.get("kernel_requested"), Some(&10));
        assert_eq!(got.phases.get("initrd_sent"), Some(&20));
        assert!(!got.phases.contains_key("bogus"));
        assert_eq!(b.sessions(NodeNumber(1)).len(), 1);
    }
}
