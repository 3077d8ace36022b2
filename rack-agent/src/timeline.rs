//! The boot timeline's owner: one task holds the pure
//! [`rackboot_agent_domain::timeline::Timeline`], fed by the
//! servers through a [`TimelineHandle`] (DHCP answers, files served and
//! finished, log lines), and publishes what others read: each node's
//! current session (boot-info, syslog tagging), the phase histograms and the
//! session reports for the coordinator.
//!
//! Feeding never blocks a server: inputs go into a bounded queue and are
//! dropped (and counted) when it is full. The published sessions are written
//! by the owner only.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use rackboot_agent_domain::timeline::{BootSession, Event, Phase, Timeline, Transport};
use rackboot_agent_domain::view::RackView;
use rackboot_dhcp_core::Mac;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Inputs waiting for the owner, at most.
pub const INPUT_QUEUE: usize = 16_384;

/// Upper bounds (seconds) of the boot phase histogram's buckets: from a
/// DHCP exchange (well under a second) to a slow firmware's kernel download.
pub const PHASE_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

type PhaseLabel = [(&'static str, &'static str); 1];

fn phase_histogram() -> Histogram {
    Histogram::new(PHASE_BUCKETS)
}

/// `rackboot_agent_boot_phase_seconds{phase}`: each boot phase's offset from
/// the first phase of its boot, observed once per boot when the phase is
/// recorded. Every phase has a series from the start.
#[derive(Debug, Clone)]
pub struct PhaseHistograms(pub Family<PhaseLabel, Histogram, fn() -> Histogram>);

impl Default for PhaseHistograms {
    fn default() -> Self {
        let family = Family::new_with_constructor(phase_histogram as fn() -> Histogram);
        for phase in Phase::ALL {
            drop(family.get_or_create(&[("phase", phase.name())]));
        }
        PhaseHistograms(family)
    }
}

impl PhaseHistograms {
    /// Observe `phase` at `secs` after its boot's first phase.
    pub fn observe(&self, phase: Phase, secs: f64) {
        self.0
            .get_or_create(&[("phase", phase.name())])
            .observe(secs);
    }
}

/// One input to the timeline.
#[derive(Debug)]
enum Input {
    Dhcp(Mac, Phase),
    FileServed(Ipv4Addr, String, Transport),
    FileDone(Ipv4Addr, String),
    LogLine(u32),
}

/// What the owner publishes and counts.
#[derive(Debug, Default)]
struct Published {
    /// Current session per node; written by the owner only.
    current: RwLock<HashMap<u32, BootSession>>,
    phase_seconds: PhaseHistograms,
    started: AtomicU64,
    inputs_dropped: AtomicU64,
    reports_dropped: AtomicU64,
}

/// How servers feed the timeline and read what it publishes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TimelineHandle {
    tx: mpsc::Sender<Input>,
    published: Arc<Published>,
    report: mpsc::Sender<BootSession>,
}

/// Unix milliseconds now: the shell's clock, read once per input.
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl TimelineHandle {
    fn send(&self, input: Input) {
        if self.tx.try_send(input).is_err() {
            self.published
                .inputs_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The DHCP server sent `mac` an OFFER or ACK.
    pub fn dhcp(&self, mac: Mac, phase: Phase) {
        self.send(Input::Dhcp(mac, phase));
    }

    /// A transfer of `path` to `client` started.
    pub fn file_served(&self, client: Ipv4Addr, path: &str, transport: Transport) {
        self.send(Input::FileServed(client, path.to_string(), transport));
    }

    /// A transfer of `path` to `client` finished (every byte handed over).
    pub fn file_done(&self, client: Ipv4Addr, path: &str) {
        self.send(Input::FileDone(client, path.to_string()));
    }

    /// A log line from `node` arrived: tag it with the node's current
    /// session id ("" when none), and let the owner stamp the first one.
    pub fn log_line(&self, node: u32) -> String {
        let id = self.current(node).unwrap_or_default();
        if !id.is_empty() {
            self.send(Input::LogLine(node));
        }
        id
    }

    /// The node's current session id.
    pub fn current(&self, node: u32) -> Option<String> {
        self.read(|m| m.get(&node).map(|s| s.id.clone()))
    }

    /// The node's current session.
    pub fn session(&self, node: u32) -> Option<BootSession> {
        self.read(|m| m.get(&node).cloned())
    }

    fn read<T>(&self, f: impl FnOnce(&HashMap<u32, BootSession>) -> T) -> T {
        let m = self
            .published
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        f(&m)
    }

    /// The phase histograms, for the metrics registry.
    pub fn phase_histograms(&self) -> &PhaseHistograms {
        &self.published.phase_seconds
    }

    /// Sessions started (kernels served to known nodes).
    pub fn started(&self) -> u64 {
        self.published.started.load(Ordering::Relaxed)
    }

    /// Inputs dropped because the owner's queue was full.
    pub fn inputs_dropped(&self) -> u64 {
        self.published.inputs_dropped.load(Ordering::Relaxed)
    }

    /// Session reports dropped because the shipping queue was full.
    pub fn reports_dropped(&self) -> u64 {
        self.published.reports_dropped.load(Ordering::Relaxed)
    }

    /// Session reports waiting for the log shipper, and the queue's capacity.
    pub fn report_queue(&self) -> (usize, usize) {
        let max = self.report.max_capacity();
        (max.saturating_sub(self.report.capacity()), max)
    }
}

/// Start the owner task. New and updated sessions go to `report` (dropped
/// and counted when full); the task ends at `shutdown`.
pub fn spawn(
    view: watch::Receiver<Arc<RackView>>,
    report: mpsc::Sender<BootSession>,
    shutdown: CancellationToken,
) -> (TimelineHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let published = Arc::new(Published::default());
    let handle = TimelineHandle {
        tx,
        published: published.clone(),
        report: report.clone(),
    };
    let task = tokio::spawn(run(rx, view, report, published, shutdown));
    (handle, task)
}

async fn run(
    mut rx: mpsc::Receiver<Input>,
    view: watch::Receiver<Arc<RackView>>,
    report: mpsc::Sender<BootSession>,
    published: Arc<Published>,
    shutdown: CancellationToken,
) {
    let mut timeline = Timeline::new();
    loop {
        let input = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = rx.recv() => match i {
                Some(i) => i,
                None => return,
            },
        };
        let now = unix_millis();
        let v = view.borrow().clone();
        apply(&mut timeline, now, &v, input);
        // Everything already queued, before publishing (one burst, one pass).
        while let Ok(input) = rx.try_recv() {
            apply(&mut timeline, unix_millis(), &v, input);
        }
        publish(&mut timeline, &published, &report);
    }
}

fn apply(timeline: &mut Timeline, now: u64, view: &RackView, input: Input) {
    match input {
        Input::Dhcp(mac, phase) => timeline.on_dhcp(now, view, &mac, phase),
        Input::FileServed(client, path, transport) => {
            if let Some(s) = timeline.on_file_served(now, view, client, &path, transport) {
                tracing::info!(node = s.node, session = %s.id, image = %s.image, transport = %s.transport, "kernel served: boot session started");
            }
        }
        Input::FileDone(client, path) => timeline.on_file_done(now, view, client, &path),
        Input::LogLine(node) => {
            timeline.on_log_line(now, node);
        }
    }
}

fn publish(timeline: &mut Timeline, published: &Published, report: &mpsc::Sender<BootSession>) {
    published
        .started
        .store(timeline.started(), Ordering::Relaxed);
    let mut changed = Vec::new();
    while let Some(event) = timeline.poll_event() {
        match event {
            Event::PhaseObserved { phase, offset_secs } => {
                published.phase_seconds.observe(phase, offset_secs);
            }
            Event::Report(session) => changed.push(session),
        }
    }
    if changed.is_empty() {
        return;
    }
    {
        let mut current = published.current.write().unwrap_or_else(|e| e.into_inner());
        for s in &changed {
            current.insert(s.node, s.clone());
        }
    }
    for s in changed {
        if report.try_send(s).is_err() {
            published.reports_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("boot session report queue full; dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_proto::v1 as pb;
    use rackboot_state::Blake3Digest;

    fn view() -> RackView {
        RackView::from_pb(pb::RackState {
            revision: 1,
            nodes: vec![pb::Node {
                number: 5,
                name: "n5".into(),
                macs: vec!["52:54:00:00:00:05".into()],
                address: "10.0.0.6".into(),
                assigned_image: "img".into(),
                ..Default::default()
            }],
            images: vec![pb::ImageManifest {
                name: "img".into(),
                kernel: Some(pb::BlobRef {
                    blake3: Blake3Digest::of(b"k").to_string(),
                    size: 1,
                }),
                initrd: Some(pb::BlobRef {
                    blake3: Blake3Digest::of(b"i").to_string(),
                    size: 1,
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_owner_publishes_sessions_reports_and_histograms() {
        let (_view_tx, view_rx) = watch::channel(Arc::new(view()));
        let (report_tx, mut report_rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let (h, task) = spawn(view_rx, report_tx, shutdown.clone());
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        h.dhcp("52:54:00:00:00:05".parse().unwrap(), Phase::DhcpOffer);
        let kernel = format!("blobs/{}", Blake3Digest::of(b"k"));
        h.file_served(ip, &kernel, Transport::Http);
        let started = report_rx.recv().await.unwrap();
        assert_eq!(started.node, 5);
        assert!(started.phases.contains_key(&Phase::DhcpOffer));
        assert_eq!(h.current(5), Some(started.id.clone()));
        assert_eq!(h.log_line(5), started.id);
        assert_eq!(h.log_line(6), "");
        let tagged = report_rx.recv().await.unwrap();
        assert!(tagged.phases.contains_key(&Phase::FirstLogLine));
        assert_eq!(h.started(), 1);
        assert_eq!(h.inputs_dropped(), 0);
        shutdown.cancel();
        task.await.unwrap();
    }
}
