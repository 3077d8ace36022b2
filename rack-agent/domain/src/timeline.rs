//! The boot timeline of every node: every time the agent serves a node its
//! kernel, a new boot session starts (node, MAC, image, kernel hash and
//! version, transport, time), and each boot phase the agent sees (DHCP
//! OFFER/ACK, first TFTP byte, kernel requested and sent, initrd sent, first
//! log line) is stamped once. Log lines are tagged with the node's current
//! session, so logs stay tied to the kernel actually served.
//!
//! [`Timeline`] is pure: inputs are `on_*(now, ...)` calls (`now` in Unix
//! milliseconds), outputs are polled with [`Timeline::poll_event`]. One task
//! of the agent owns it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;

use rackboot_dhcp_core::Mac;
pub use rackboot_state::{Phase, Transport};

use crate::view::{ImageEntry, NodeEntry, RackView};

/// One boot of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSession {
    /// Session id: `<node>-<unix millis>`.
    pub id: String,
    /// Node number.
    pub node: u32,
    /// The node's first MAC.
    pub mac: String,
    /// Image name.
    pub image: String,
    /// Kernel blob served.
    pub kernel_blake3: String,
    /// Its version.
    pub kernel_version: String,
    /// How the kernel was served.
    pub transport: Transport,
    /// Start time.
    pub unix_millis: u64,
    /// Boot timeline: phase → unix millis.
    pub phases: BTreeMap<Phase, u64>,
}

/// Longest time from a boot's first DHCP answer to its kernel request that
/// still counts as one boot.
pub const BOOT_CYCLE_MILLIS: u64 = 300_000;

/// Most events waiting to be polled; older ones are dropped first (and
/// counted) when the owner falls behind.
pub const MAX_EVENTS: usize = 65_536;

/// What the timeline tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A session started or gained a phase: report it to the coordinator.
    Report(BootSession),
    /// A phase was stamped, `offset_secs` after its boot's first phase.
    PhaseObserved {
        /// The phase.
        phase: Phase,
        /// Seconds since the first phase of the same boot.
        offset_secs: f64,
    },
}

/// Seconds from `first` to `at` (unix millis).
fn offset_secs(first: Option<u64>, at: u64) -> f64 {
    at.saturating_sub(first.unwrap_or(at)) as f64 / 1000.0
}

/// The image a node was served `hash` as kernel from: its assigned image
/// when that matches, else any image of the rack with that kernel.
fn image_with_kernel<'v>(
    view: &'v RackView,
    node: &NodeEntry,
    hash: &str,
) -> Option<&'v ImageEntry> {
    let assigned = node.image.as_ref().and_then(|n| view.images.get(n));
    assigned
        .filter(|im| im.kernel.digest.to_string() == hash)
        .or_else(|| {
            view.images
                .values()
                .find(|im| im.kernel.digest.to_string() == hash)
        })
}

/// Current sessions of every node, and the phases seen before a kernel.
/// Bounded by the rack's nodes: only nodes of the view get entries.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The current session per node.
    current: HashMap<u32, BootSession>,
    /// Phases seen before the kernel (DHCP, first TFTP byte), per node.
    pending: HashMap<u32, BTreeMap<Phase, u64>>,
    events: VecDeque<Event>,
    started: u64,
    events_dropped: u64,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn stamp(&mut self, phase: Phase, first: Option<u64>, now: u64) {
        self.push(Event::PhaseObserved {
            phase,
            offset_secs: offset_secs(first, now),
        });
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Sessions started (kernels served to known nodes).
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Events dropped because the owner did not poll them in time.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// The node's current session.
    pub fn current(&self, node: u32) -> Option<&BootSession> {
        self.current.get(&node)
    }

    /// The DHCP server sent `mac` an OFFER or ACK (`phase`). The first OFFER
    /// and ACK of a boot are kept (a chain loader such as iPXE asks again
    /// after the ROM did); an OFFER starts a new cycle when the pending one
    /// began more than [`BOOT_CYCLE_MILLIS`] ago without reaching a kernel.
    pub fn on_dhcp(&mut self, now: u64, view: &RackView, mac: &Mac, phase: Phase) {
        let Some(node) = view.node_by_mac(mac) else {
            return;
        };
        let pending = self.pending.entry(node.number).or_default();
        let began = pending.values().min().copied();
        if phase == Phase::DhcpOffer
            && began.is_some_and(|b| now.saturating_sub(b) > BOOT_CYCLE_MILLIS)
        {
            pending.clear();
        }
        if let std::collections::btree_map::Entry::Vacant(e) = pending.entry(phase) {
            e.insert(now);
            let first = pending.values().min().copied();
            self.stamp(phase, first, now);
        }
    }

    /// A transfer of `path` to `client` started. The kernel of one of the
    /// rack's images starts a new boot session (of the image it belongs to,
    /// which is what the node will run); returns it.
    pub fn on_file_served(
        &mut self,
        now: u64,
        view: &RackView,
        client: Ipv4Addr,
        path: &str,
        transport: Transport,
    ) -> Option<BootSession> {
        let node = view.node_by_addr(client)?;
        if transport == Transport::Tftp {
            let pending = self.pending.entry(node.number).or_default();
            if let std::collections::btree_map::Entry::Vacant(e) =
                pending.entry(Phase::FirstTftpByte)
            {
                e.insert(now);
                let first = pending.values().min().copied();
                self.stamp(Phase::FirstTftpByte, first, now);
            }
        }
        let hash = path.strip_prefix("blobs/")?;
        let image = image_with_kernel(view, node, hash)?;
        // Session ids are `<node>-<millis>`: keep them unique per node even
        // for two kernel requests within one millisecond.
        let now = match self.current.get(&node.number) {
            Some(prev) if prev.unix_millis >= now => prev.unix_millis + 1,
            _ => now,
        };
        let mut phases = self.pending.remove(&node.number).unwrap_or_default();
        phases.insert(Phase::KernelRequested, now);
        let first = phases.values().min().copied();
        self.stamp(Phase::KernelRequested, first, now);
        self.started += 1;
        let session = BootSession {
            id: format!("{}-{now}", node.number),
            node: node.number,
            mac: node.macs.first().map(|m| m.to_string()).unwrap_or_default(),
            image: image.name.clone(),
            kernel_blake3: hash.to_string(),
            kernel_version: image.kernel_version.clone(),
            transport,
            unix_millis: now,
            phases,
        };
        self.current.insert(node.number, session.clone());
        self.push(Event::Report(session.clone()));
        Some(session)
    }

    /// A transfer of `path` to `client` finished (every byte handed over):
    /// the kernel or initrd of the node's current session is sent.
    pub fn on_file_done(&mut self, now: u64, view: &RackView, client: Ipv4Addr, path: &str) {
        let Some(node) = view.node_by_addr(client) else {
            return;
        };
        let Some(hash) = path.strip_prefix("blobs/") else {
            return;
        };
        let Some(session) = self.current.get_mut(&node.number) else {
            return;
        };
        let phase = if session.kernel_blake3 == hash {
            Phase::KernelSent
        } else if view
            .images
            .get(&session.image)
            .is_some_and(|im| im.initrd.digest.to_string() == hash)
        {
            Phase::InitrdSent
        } else {
            return;
        };
        if session.phases.contains_key(&phase) {
            return;
        }
        let first = session.phases.values().min().copied();
        session.phases.insert(phase, now);
        let report = session.clone();
        self.stamp(phase, first, now);
        self.push(Event::Report(report));
    }

    /// A log line from `node` arrived: its current session id (the first
    /// line of a session is a timeline phase).
    pub fn on_log_line(&mut self, now: u64, node: u32) -> Option<String> {
        let session = self.current.get_mut(&node)?;
        if session.phases.contains_key(&Phase::FirstLogLine) {
            return Some(session.id.clone());
        }
        let first = session.phases.values().min().copied();
        session.phases.insert(Phase::FirstLogLine, now);
        let report = session.clone();
        self.stamp(Phase::FirstLogLine, first, now);
        let id = report.id.clone();
        self.push(Event::Report(report));
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_proto::v1 as pb;
    use rackboot_state::Blake3Digest;

    fn image(name: &str, tag: &str, version: &str) -> pb::ImageManifest {
        pb::ImageManifest {
            name: name.into(),
            kernel: Some(pb::BlobRef {
                blake3: Blake3Digest::of(format!("k{tag}").as_bytes()).to_string(),
                size: 1,
            }),
            initrd: Some(pb::BlobRef {
                blake3: Blake3Digest::of(format!("i{tag}").as_bytes()).to_string(),
                size: 1,
            }),
            kernel_version: version.into(),
            ..Default::default()
        }
    }

    fn view() -> RackView {
        RackView::from_pb(pb::RackState {
            revision: 1,
            rack: None,
            meta: Default::default(),
            discovery_image: String::new(),
            nodes: vec![
                pb::Node {
                    number: 5,
                    name: "n5".into(),
                    macs: vec!["52:54:00:00:00:05".into()],
                    address: "10.0.0.6".into(),
                    assigned_image: "new".into(),
                    ..Default::default()
                },
                pb::Node {
                    number: 6,
                    name: "n6".into(),
                    macs: vec!["52:54:00:00:00:06".into()],
                    address: "10.0.0.7".into(),
                    assigned_image: "old".into(),
                    ..Default::default()
                },
            ],
            images: vec![image("new", "b", "6.1.0-b"), image("old", "a", "6.1.0-a")],
        })
        .unwrap()
    }

    fn blob(tag: &str) -> String {
        format!("blobs/{}", Blake3Digest::of(tag.as_bytes()))
    }

    fn reports(t: &mut Timeline) -> Vec<BootSession> {
        std::iter::from_fn(|| t.poll_event())
            .filter_map(|e| match e {
                Event::Report(s) => Some(s),
                Event::PhaseObserved { .. } => None,
            })
            .collect()
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_kernel_of_the_rack_starts_a_session_of_its_own_image() {
        let view = view();
        let mut t = Timeline::new();
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        let http = Transport::Http;
        assert!(
            t.on_file_served(T0, &view, ip, "undionly.kpxe", Transport::Tftp)
                .is_none()
        );
        assert!(t.on_file_served(T0, &view, ip, &blob("ib"), http).is_none());
        assert!(
            t.on_file_served(T0, &view, "10.0.0.99".parse().unwrap(), &blob("kb"), http)
                .is_none()
        );
        assert!(
            t.on_file_served(T0, &view, ip, &blob("unknown"), http)
                .is_none()
        );
        let got = t.on_file_served(T0, &view, ip, &blob("kb"), http).unwrap();
        assert_eq!(
            (got.image.as_str(), got.kernel_version.as_str()),
            ("new", "6.1.0-b")
        );
        assert_eq!(t.current(5).map(|s| s.id.clone()), Some(got.id.clone()));
        assert_eq!(reports(&mut t), std::slice::from_ref(&got));
        assert_eq!(t.started(), 1);
        // Node 5 still fetching the kernel of the image it was assigned
        // before (a reassignment raced its boot): the session names that
        // image, the one it will run.
        let old = t
            .on_file_served(T0, &view, ip, &blob("ka"), Transport::Tftp)
            .unwrap();
        assert_eq!(
            (old.image.as_str(), old.kernel_version.as_str()),
            ("old", "6.1.0-a")
        );
        // Two kernel requests in the same millisecond: distinct ids.
        assert_ne!(old.id, got.id);
    }

    #[test]
    fn timeline_collects_every_phase_once_and_reports_each_change() {
        let view = view();
        let mut t = Timeline::new();
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        let mac: Mac = "52:54:00:00:00:05".parse().unwrap();
        // A stale cycle that never reached a kernel, then the real one:
        // the ROM's OFFER/ACK, its TFTP download of iPXE, iPXE's OFFER/ACK.
        let now = T0;
        t.on_dhcp(
            now - BOOT_CYCLE_MILLIS - 10_000,
            &view,
            &mac,
            Phase::DhcpAck,
        );
        t.on_dhcp(now - 3, &view, &mac, Phase::DhcpOffer);
        t.on_dhcp(now - 2, &view, &mac, Phase::DhcpAck);
        t.on_file_served(now - 1, &view, ip, "undionly.kpxe", Transport::Tftp);
        t.on_dhcp(now, &view, &mac, Phase::DhcpOffer);
        t.on_dhcp(now, &view, &mac, Phase::DhcpAck);
        let session = t
            .on_file_served(now, &view, ip, &blob("kb"), Transport::Http)
            .unwrap();
        let phases: Vec<Phase> = session.phases.keys().copied().collect();
        assert_eq!(
            phases,
            [
                Phase::DhcpOffer,
                Phase::DhcpAck,
                Phase::FirstTftpByte,
                Phase::KernelRequested
            ]
        );
        assert_eq!(session.phases[&Phase::DhcpOffer], now - 3);
        assert_eq!(session.phases[&Phase::DhcpAck], now - 2);
        assert_eq!(session.phases[&Phase::FirstTftpByte], now - 1);
        t.on_file_done(now + 10, &view, ip, &blob("kb"));
        t.on_file_done(now + 11, &view, ip, &blob("kb"));
        t.on_file_done(now + 12, &view, ip, &blob("ka")); // not this session's
        t.on_file_done(now + 20, &view, ip, &blob("ib"));
        assert_eq!(t.on_log_line(now + 30, 5), Some(session.id.clone()));
        assert_eq!(t.on_log_line(now + 31, 5), Some(session.id.clone()));
        assert_eq!(t.on_log_line(now + 32, 6), None);
        let reports = reports(&mut t);
        // Start, kernel sent, initrd sent, first log line: one report each.
        assert_eq!(reports.len(), 4, "{reports:?}");
        let last = reports.last().unwrap();
        for p in Phase::ALL {
            assert!(
                last.phases.contains_key(&p),
                "{p:?} missing: {:?}",
                last.phases
            );
        }
        assert_eq!(last.phases[&Phase::KernelSent], now + 10);
        assert_eq!(last.phases[&Phase::InitrdSent], now + 20);
        assert_eq!(last.phases[&Phase::FirstLogLine], now + 30);
        // The next boot starts a fresh timeline.
        t.on_dhcp(now + 60_000, &view, &mac, Phase::DhcpOffer);
        let next = t
            .on_file_served(now + 60_001, &view, ip, &blob("kb"), Transport::Http)
            .unwrap();
        assert_ne!(next.id, session.id);
        assert!(!next.phases.contains_key(&Phase::FirstLogLine));
        assert!(next.phases.contains_key(&Phase::DhcpOffer));
    }

    #[test]
    fn phases_are_observed_as_offsets_from_the_first_of_their_boot() {
        let view = view();
        let mut t = Timeline::new();
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        let mac: Mac = "52:54:00:00:00:05".parse().unwrap();
        t.on_dhcp(T0, &view, &mac, Phase::DhcpOffer);
        t.on_dhcp(T0 + 500, &view, &mac, Phase::DhcpAck);
        t.on_file_served(T0 + 2_000, &view, ip, &blob("kb"), Transport::Http);
        let observed: Vec<(Phase, f64)> = std::iter::from_fn(|| t.poll_event())
            .filter_map(|e| match e {
                Event::PhaseObserved { phase, offset_secs } => Some((phase, offset_secs)),
                Event::Report(_) => None,
            })
            .collect();
        assert_eq!(
            observed,
            [
                (Phase::DhcpOffer, 0.0),
                (Phase::DhcpAck, 0.5),
                (Phase::KernelRequested, 2.0)
            ]
        );
    }

    #[test]
    fn an_owner_that_falls_behind_loses_the_oldest_events_only() {
        let view = view();
        let mut t = Timeline::new();
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        let n = MAX_EVENTS as u64 / 2 + 10;
        for i in 0..n {
            t.on_file_served(T0 + i, &view, ip, &blob("kb"), Transport::Http);
        }
        assert_eq!(t.events_dropped(), 2 * n - MAX_EVENTS as u64);
        let mut last = None;
        while let Some(e) = t.poll_event() {
            last = Some(e);
        }
        match last {
            Some(Event::Report(s)) => assert_eq!(s.unix_millis, T0 + n - 1),
            other => panic!("last event {other:?}"),
        }
    }
}
