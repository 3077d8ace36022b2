//! Boot sessions: every time the agent serves a node its kernel, a new
//! session starts (node, MAC, image, kernel hash and version, transport,
//! time). Log lines from the node are tagged with its current session, so
//! logs stay tied to the kernel actually served.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use rackboot_dhcp_core::Mac;

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
    /// "tftp" or "http".
    pub transport: &'static str,
    /// Start time.
    pub unix_millis: u64,
    /// Boot timeline: phase → unix millis (see [`rackboot_state::PHASES`]).
    pub phases: BTreeMap<String, u64>,
}

/// A boot phase the agent observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Its name in reports (one of [`rackboot_state::PHASES`]).
    pub fn name(self) -> &'static str {
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
}

/// Longest time from a boot's first DHCP answer to its kernel request that
/// still counts as one boot.
pub const BOOT_CYCLE_MILLIS: u64 = 300_000;

#[derive(Debug, Default)]
struct Inner {
    /// The current session per node.
    current: HashMap<u32, BootSession>,
    /// Phases seen before the kernel (DHCP, first TFTP byte), per node.
    pending: HashMap<u32, BTreeMap<String, u64>>,
}

/// Current sessions, and a queue of new and updated ones for the coordinator.
#[derive(Debug)]
pub struct Sessions {
    inner: RwLock<Inner>,
    report: mpsc::Sender<BootSession>,
    phase_seconds: crate::metrics::PhaseHistograms,
    started: AtomicU64,
}

/// Seconds from `first` to `at` (unix millis).
fn offset_secs(first: Option<u64>, at: u64) -> f64 {
    at.saturating_sub(first.unwrap_or(at)) as f64 / 1000.0
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

impl Sessions {
    /// New tracker; new sessions are also sent to `report` (dropped when full).
    pub fn new(report: mpsc::Sender<BootSession>) -> Self {
        Sessions {
            inner: RwLock::new(Inner::default()),
            report,
            phase_seconds: crate::metrics::PhaseHistograms::default(),
            started: AtomicU64::new(0),
        }
    }

    /// Each phase's offset from the first phase of its boot, observed when
    /// the phase is recorded.
    pub fn phase_histograms(&self) -> &crate::metrics::PhaseHistograms {
        &self.phase_seconds
    }

    /// Sessions started (kernels served to known nodes).
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Session reports waiting for the log shipper, and the queue's capacity.
    pub fn report_queue(&self) -> (usize, usize) {
        let max = self.report.max_capacity();
        (max.saturating_sub(self.report.capacity()), max)
    }

    fn send(&self, session: &BootSession) {
        if self.report.try_send(session.clone()).is_err() {
            tracing::warn!(session = %session.id, "boot session report queue full; dropped");
        }
    }

    /// The DHCP server answered a node.
    pub fn dhcp(&self, view: &RackView, mac: &Mac, phase: Phase) {
        self.dhcp_at(view, mac, phase, unix_millis());
    }

    /// [`Sessions::dhcp`] at a given time. The first OFFER and ACK of a boot
    /// are kept (a chain loader such as iPXE asks again after the ROM did);
    /// an OFFER starts a new cycle when the pending one began more than
    /// [`BOOT_CYCLE_MILLIS`] ago without reaching a kernel.
    pub fn dhcp_at(&self, view: &RackView, mac: &Mac, phase: Phase, now: u64) {
        let Some(node) = view.node_by_mac(mac) else {
            return;
        };
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let pending = inner.pending.entry(node.number).or_default();
        let began = pending.values().min().copied();
        if phase == Phase::DhcpOffer
            && began.is_some_and(|b| now.saturating_sub(b) > BOOT_CYCLE_MILLIS)
        {
            pending.clear();
        }
        if !pending.contains_key(phase.name()) {
            pending.insert(phase.name().to_string(), now);
            let first = pending.values().min().copied();
            self.phase_seconds.observe(phase, offset_secs(first, now));
        }
    }

    /// A transfer of `path` to `client` started. The kernel of one of the
    /// rack's images starts a new boot session (of the image it belongs to,
    /// which is what the node will run); returns it.
    pub fn file_served(
        &self,
        view: &RackView,
        client: Ipv4Addr,
        path: &str,
        transport: &'static str,
    ) -> Option<BootSession> {
        let node = view.node_by_addr(client)?;
        let now = unix_millis();
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if transport == "tftp" {
            let pending = inner.pending.entry(node.number).or_default();
            if !pending.contains_key(Phase::FirstTftpByte.name()) {
                pending.insert(Phase::FirstTftpByte.name().to_string(), now);
                let first = pending.values().min().copied();
                self.phase_seconds
                    .observe(Phase::FirstTftpByte, offset_secs(first, now));
            }
        }
        let hash = path.strip_prefix("blobs/")?;
        let image = image_with_kernel(view, node, hash)?;
        // Session ids are `<node>-<millis>`: keep them unique per node even
        // for two kernel requests within one millisecond.
        let now = match inner.current.get(&node.number) {
            Some(prev) if prev.unix_millis >= now => prev.unix_millis + 1,
            _ => now,
        };
        let mut phases = inner.pending.remove(&node.number).unwrap_or_default();
        phases.insert(Phase::KernelRequested.name().to_string(), now);
        let first = phases.values().min().copied();
        self.phase_seconds
            .observe(Phase::KernelRequested, offset_secs(first, now));
        self.started.fetch_add(1, Ordering::Relaxed);
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
        inner.current.insert(node.number, session.clone());
        drop(inner);
        tracing::info!(node = node.number, session = %session.id, image = %session.image, transport, "kernel served: boot session started");
        self.send(&session);
        Some(session)
    }

    /// A transfer of `path` to `client` finished (every byte handed over):
    /// the kernel or initrd of the node's current session is sent.
    pub fn file_done(&self, view: &RackView, client: Ipv4Addr, path: &str) {
        let Some(node) = view.node_by_addr(client) else {
            return;
        };
        let Some(hash) = path.strip_prefix("blobs/") else {
            return;
        };
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(session) = inner.current.get_mut(&node.number) else {
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
        if session.phases.contains_key(phase.name()) {
            return;
        }
        let now = unix_millis();
        let first = session.phases.values().min().copied();
        session.phases.insert(phase.name().to_string(), now);
        self.phase_seconds.observe(phase, offset_secs(first, now));
        let s = session.clone();
        drop(inner);
        self.send(&s);
    }

    /// A log line from `node` arrived: its current session id (the first
    /// line of a session is a timeline phase).
    pub fn log_line(&self, node: u32) -> Option<String> {
        {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            let s = inner.current.get(&node)?;
            if s.phases.contains_key(Phase::FirstLogLine.name()) {
                return Some(s.id.clone());
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let s = inner.current.get_mut(&node)?;
        if !s.phases.contains_key(Phase::FirstLogLine.name()) {
            let now = unix_millis();
            let first = s.phases.values().min().copied();
            s.phases.insert(Phase::FirstLogLine.name().to_string(), now);
            self.phase_seconds
                .observe(Phase::FirstLogLine, offset_secs(first, now));
        }
        let s = s.clone();
        drop(inner);
        self.send(&s);
        Some(s.id)
    }

    /// The node's current session id.
    pub fn current(&self, node: u32) -> Option<String> {
        self.session(node).map(|s| s.id)
    }

    /// The node's current session.
    pub fn session(&self, node: u32) -> Option<BootSession> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .get(&node)
            .cloned()
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

    #[test]
    fn a_kernel_of_the_rack_starts_a_session_of_its_own_image() {
        let view = view();
        let (tx, mut rx) = mpsc::channel(16);
        let s = Sessions::new(tx);
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        assert!(s.file_served(&view, ip, "undionly.kpxe", "tftp").is_none());
        assert!(s.file_served(&view, ip, &blob("ib"), "http").is_none());
        assert!(
            s.file_served(&view, "10.0.0.99".parse().unwrap(), &blob("kb"), "http")
                .is_none()
        );
        assert!(s.file_served(&view, ip, &blob("unknown"), "http").is_none());
        let got = s.file_served(&view, ip, &blob("kb"), "http").unwrap();
        assert_eq!(
            (got.image.as_str(), got.kernel_version.as_str()),
            ("new", "6.1.0-b")
        );
        assert_eq!(s.current(5), Some(got.id.clone()));
        assert_eq!(rx.try_recv().unwrap(), got);
        // Node 5 still fetching the kernel of the image it was assigned
        // before (a reassignment raced its boot): the session names that
        // image, the one it will run.
        let old = s.file_served(&view, ip, &blob("ka"), "tftp").unwrap();
        assert_eq!(
            (old.image.as_str(), old.kernel_version.as_str()),
            ("old", "6.1.0-a")
        );
    }

    #[test]
    fn timeline_collects_every_phase_once_and_reports_each_change() {
        let view = view();
        let (tx, mut rx) = mpsc::channel(16);
        let s = Sessions::new(tx);
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        let mac: Mac = "52:54:00:00:00:05".parse().unwrap();
        // A stale cycle that never reached a kernel, then the real one:
        // the ROM's OFFER/ACK, its TFTP download of iPXE, iPXE's OFFER/ACK.
        let now = unix_millis();
        s.dhcp_at(
            &view,
            &mac,
            Phase::DhcpAck,
            now - BOOT_CYCLE_MILLIS - 10_000,
        );
        s.dhcp_at(&view, &mac, Phase::DhcpOffer, now - 3);
        s.dhcp_at(&view, &mac, Phase::DhcpAck, now - 2);
        s.file_served(&view, ip, "undionly.kpxe", "tftp");
        s.dhcp(&view, &mac, Phase::DhcpOffer);
        s.dhcp(&view, &mac, Phase::DhcpAck);
        let session = s.file_served(&view, ip, &blob("kb"), "http").unwrap();
        let names: Vec<&str> = session.phases.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "dhcp_ack",
                "dhcp_offer",
                "first_tftp_byte",
                "kernel_requested"
            ]
        );
        assert_eq!(session.phases["dhcp_offer"], now - 3);
        assert_eq!(session.phases["dhcp_ack"], now - 2);
        s.file_done(&view, ip, &blob("kb"));
        s.file_done(&view, ip, &blob("kb"));
        s.file_done(&view, ip, &blob("ka")); // not this session's
        s.file_done(&view, ip, &blob("ib"));
        assert_eq!(s.log_line(5), Some(session.id.clone()));
        assert_eq!(s.log_line(5), Some(session.id.clone()));
        assert_eq!(s.log_line(6), None);
        let reports: Vec<BootSession> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        // Start, kernel sent, initrd sent, first log line: one report each.
        assert_eq!(reports.len(), 4, "{reports:?}");
        let last = reports.last().unwrap();
        for p in rackboot_state::PHASES {
            assert!(
                last.phases.contains_key(p),
                "{p} missing: {:?}",
                last.phases
            );
        }
        // The next boot starts a fresh timeline.
        s.dhcp(&view, &mac, Phase::DhcpOffer);
        let next = s.file_served(&view, ip, &blob("kb"), "http").unwrap();
        assert_ne!(next.id, session.id);
        assert!(!next.phases.contains_key("first_log_line"));
        assert!(next.phases.contains_key("dhcp_offer"));
    }
}
