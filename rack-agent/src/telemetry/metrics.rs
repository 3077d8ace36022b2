//! The agent's Prometheus metrics, served on `GET /metrics` by its HTTP
//! server and by the metrics listener (OpenMetrics text, `prometheus-client`).
//!
//! The counters live where the events happen, and each server encodes its
//! own (`DhcpStats`, `TftpStats`, `HttpStats`, `SyslogStats` and
//! `LogShipStats` implement [`rackboot_metrics::Component`] in their
//! modules); this module registers them, and reads what no server owns
//! (queues, the view, the cache, coordinator sync, and the boot timeline,
//! whose phase histogram is
//! [`PhaseHistograms`](crate::timeline::PhaseHistograms)), at scrape time, so a scrape costs nothing until
//! it happens and never touches the packet path. Every name is listed, with
//! its meaning, in `docs/operations.md` ("Metrics").

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use rackboot_metrics::{Component, Exposition, counter, gauge, gauges};
use tokio::sync::{mpsc, watch};

use crate::serve::dhcp::DhcpStats;
use crate::serve::http::HttpStats;
use crate::serve::router_advert::RaMetrics;
use crate::serve::syslog::SyslogStats;
use crate::serve::tftp::TftpStats;
use crate::store::cache::BlobCache;
use crate::timeline::TimelineHandle;
use crate::upstream::follow::SyncStats;
use crate::upstream::logship::LogShipStats;
use rackboot_agent_domain::view::RackView;

/// Content type of the exposition.
pub use rackboot_metrics::CONTENT_TYPE;

/// Depth and capacity of a queue, read at scrape time.
type QueueProbe = Box<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

/// The agent's metrics: the counters the servers update, and the registry
/// that renders them.
pub struct AgentMetrics {
    exposition: Arc<Exposition>,
    /// DHCP counters.
    pub dhcp: Arc<DhcpStats>,
    /// TFTP counters, published by the TFTP task.
    pub tftp: Arc<TftpStats>,
    /// HTTP counters.
    pub http: Arc<HttpStats>,
    /// Syslog receiver counters.
    pub syslog: Arc<SyslogStats>,
    /// IPv6 router-advertisement counters.
    pub router_advert: Arc<RaMetrics>,
    /// Log shipping: what waits, what was shipped.
    pub logship: Arc<LogShipStats>,
    /// Coordinator sync state.
    pub sync: Arc<SyncStats>,
    queues: Arc<Mutex<Vec<(&'static str, QueueProbe)>>>,
}

impl fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Metrics over the agent's view, cache and boot sessions, with fresh
    /// counters for the servers to update.
    pub fn new(
        view: watch::Receiver<Arc<RackView>>,
        cache: Arc<BlobCache>,
        sessions: TimelineHandle,
    ) -> Self {
        let queues: Arc<Mutex<Vec<(&'static str, QueueProbe)>>> = Arc::default();
        let (dhcp, tftp, http, syslog, logship, sync) = <_>::default();
        let router_advert: Arc<RaMetrics> = Arc::default();
        let mut x = Exposition::new();
        x.register_metric(
            "rackboot_agent_boot_phase_seconds",
            "Offset of each boot phase from the first phase of its boot, observed when the phase is recorded",
            sessions.phase_histograms().0.clone(),
        );
        // Each server's counters, encoded by the server's own module.
        x.register::<DhcpStats>(Arc::clone(&dhcp));
        x.register::<TftpStats>(Arc::clone(&tftp));
        x.register::<HttpStats>(Arc::clone(&http));
        x.register::<SyslogStats>(Arc::clone(&syslog));
        x.register::<RaMetrics>(Arc::clone(&router_advert));
        x.register::<LogShipStats>(Arc::clone(&logship));
        // What this module reads itself: queues, view, cache, sync state.
        x.register(Arc::new(Sources {
            sync: Arc::clone(&sync),
            view,
            cache,
            sessions,
            queues: queues.clone(),
        }));
        AgentMetrics {
            exposition: Arc::new(x),
            dhcp,
            tftp,
            http,
            syslog,
            router_advert,
            logship,
            sync,
            queues,
        }
    }

    /// Report the depth of the queue behind `tx` as
    /// `rackboot_agent_queue_depth{queue=name}` (while the channel is open).
    pub fn watch_queue<T: Send + 'static>(&self, name: &'static str, tx: &mpsc::Sender<T>) {
        let weak = tx.downgrade();
        let probe: QueueProbe = Box::new(move || {
            let tx = weak.upgrade()?;
            let max = tx.max_capacity();
            Some((max.saturating_sub(tx.capacity()), max))
        });
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, probe));
    }

    /// The exposition text.
    pub fn render(&self) -> Result<String, fmt::Error> {
        self.exposition.render()
    }

    /// Everything registered, for the listeners that serve `/metrics`.
    pub fn exposition(&self) -> Arc<Exposition> {
        self.exposition.clone()
    }
}

/// Everything read at scrape time.
struct Sources {
    sync: Arc<SyncStats>,
    view: watch::Receiver<Arc<RackView>>,
    cache: Arc<BlobCache>,
    sessions: TimelineHandle,
    queues: Arc<Mutex<Vec<(&'static str, QueueProbe)>>>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Component for Sources {
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        self.encode_queues(e)?;
        self.encode_state(e)
    }
}

impl Sources {
    fn encode_queues(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut depth: Vec<(&str, u64)> = Vec::new();
        let mut capacity: Vec<(&str, u64)> = Vec::new();
        let (n, max) = self.sessions.report_queue();
        depth.push(("boot_sessions", n as u64));
        capacity.push(("boot_sessions", max as u64));
        for (name, probe) in self.queues.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some((n, max)) = probe() {
                depth.push((name, n as u64));
                capacity.push((name, max as u64));
            }
        }
        gauges(
            e,
            "rackboot_agent_queue_depth",
            "Items waiting in an internal queue",
            "queue",
            &depth,
        )?;
        gauges(
            e,
            "rackboot_agent_queue_capacity",
            "Capacity of an internal queue",
            "queue",
            &capacity,
        )
    }

    fn encode_state(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let c = self.cache.stats();
        gauge(
            e,
            "rackboot_agent_cache_blobs",
            "Verified blobs served (from their files on disk)",
            c.blobs,
        )?;
        gauge(
            e,
            "rackboot_agent_cache_bytes",
            "Bytes of the verified blobs served (on disk, not in memory)",
            c.bytes,
        )?;
        counter(
            e,
            "rackboot_agent_cache_hits",
            "Wanted blobs already served or found intact on disk",
            c.hits,
        )?;
        counter(
            e,
            "rackboot_agent_cache_rechecks",
            "Served blobs verified again because their file changed on disk",
            c.rechecked,
        )?;
        let d = crate::store::disk::disk_stats();
        counter(
            e,
            "rackboot_agent_disk_reads",
            "Reads of served files on the event loops (TFTP blocks, read ahead)",
            d.reads.load(Relaxed),
        )?;
        seconds(
            e,
            "rackboot_agent_disk_read_seconds",
            "Time spent in those reads",
            Seconds(d.read_nanos.load(Relaxed)),
        )?;
        gauge(
            e,
            "rackboot_agent_disk_read_max_seconds",
            "The longest of those reads",
            d.read_max_nanos.load(Relaxed) as f64 / 1e9,
        )?;
        counter(
            e,
            "rackboot_agent_disk_opens",
            "Opens of served files (with their change checks)",
            d.opens.load(Relaxed),
        )?;
        seconds(
            e,
            "rackboot_agent_disk_open_seconds",
            "Time spent in those opens",
            Seconds(d.open_nanos.load(Relaxed)),
        )?;
        counter(
            e,
            "rackboot_agent_disk_changed_refusals",
            "Requests not served because a verified file had changed on disk",
            d.changed.load(Relaxed),
        )?;
        if let Some(rss) = resident_bytes() {
            gauge(
                e,
                "rackboot_agent_resident_memory_bytes",
                "Resident memory of the agent process (files are served from disk: this does not grow with images)",
                rss,
            )?;
        }
        counter(
            e,
            "rackboot_agent_cache_misses",
            "Wanted blobs fetched from the coordinator",
            c.misses,
        )?;
        counter(
            e,
            "rackboot_agent_cache_repaired_groups",
            "1 MiB groups of cached blobs that failed verification and were fetched again",
            c.repaired_groups,
        )?;
        counter(
            e,
            "rackboot_agent_cache_evictions",
            "Blobs evicted to keep the cache under its bound",
            c.evicted,
        )?;
        gauge(
            e,
            "rackboot_agent_cache_max_bytes",
            "The cache's bound on disk",
            c.max_bytes,
        )?;
        let view = self.view.borrow().clone();
        gauge(
            e,
            "rackboot_agent_view_revision",
            "State revision of the rack view served",
            view.revision,
        )?;
        gauge(
            e,
            "rackboot_agent_view_nodes",
            "Nodes in the rack view",
            view.nodes.len() as u64,
        )?;
        gauge(
            e,
            "rackboot_agent_view_images",
            "Images in the rack view",
            view.images.len() as u64,
        )?;
        let s = &self.sync;
        gauge(
            e,
            "rackboot_agent_coordinator_connected",
            "1 while registered and watching the rack on a coordinator",
            u64::from(s.connected.load(Relaxed)),
        )?;
        counter(
            e,
            "rackboot_agent_coordinator_session_errors",
            "Coordinator sessions that ended in an error (the agent reconnects)",
            s.session_errors.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_view_updates",
            "Rack views received from the coordinator",
            s.updates.load(Relaxed),
        )?;
        // No sample before the first view arrives.
        let m = e.encode_descriptor(
            "rackboot_agent_view_update_age_seconds",
            "Seconds since the last rack view arrived from the coordinator (it sends one per change of the rack)",
            None,
            MetricType::Gauge,
        )?;
        if let Some(age) = s.since_last_update() {
            ConstGauge::new(age).encode(m)?;
        }
        counter(
            e,
            "rackboot_agent_boot_sessions",
            "Boot sessions started (kernels served to known nodes)",
            self.sessions.started(),
        )
    }
}

/// Nanoseconds, exposed as a counter of seconds.
struct Seconds(u64);

fn seconds(e: &mut DescriptorEncoder, name: &str, help: &str, v: Seconds) -> fmt::Result {
    let c = prometheus_client::metrics::counter::ConstCounter::new(v.0 as f64 / 1e9);
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    prometheus_client::encoding::EncodeMetric::encode(&c, m)
}

/// The process's resident memory (`/proc/self/statm`), in bytes.
fn resident_bytes() -> Option<u64> {
    #[allow(
        clippy::disallowed_methods,
        reason = "procfs: served from memory by the kernel, never a disk"
    )]
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn renders_every_family_and_phase_observations() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(BlobCache::open(dir.path()).unwrap());
        let (tx, _rx) = mpsc::channel(8);
        let (_vtx, vrx) = watch::channel(Arc::new(RackView::default()));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (sessions, _task) = crate::timeline::spawn(vrx.clone(), tx, shutdown);
        let m = AgentMetrics::new(vrx, cache, sessions.clone());
        let (qtx, _qrx) = mpsc::channel::<u8>(16);
        qtx.try_send(1).unwrap();
        m.watch_queue("unknown_machines", &qtx);
        m.dhcp.count_drop("malformed");
        sessions
            .phase_histograms()
            .observe(rackboot_agent_domain::timeline::Phase::DhcpAck, 0.3);
        let text = m.render().unwrap();
        for line in [
            "# TYPE rackboot_agent_dhcp_replied counter",
            "rackboot_agent_dhcp_dropped_total{reason=\"malformed\"} 1",
            "rackboot_agent_queue_depth{queue=\"unknown_machines\"} 1",
            "rackboot_agent_queue_capacity{queue=\"unknown_machines\"} 16",
            "rackboot_agent_boot_phase_seconds_count{phase=\"dhcp_ack\"} 1",
            "rackboot_agent_boot_phase_seconds_bucket{le=\"0.5\",phase=\"dhcp_ack\"} 1",
            "rackboot_agent_boot_phase_seconds_count{phase=\"first_log_line\"} 0",
            "# TYPE rackboot_agent_view_update_age_seconds gauge",
            "rackboot_agent_coordinator_connected 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
