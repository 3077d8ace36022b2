//! The agent's Prometheus metrics, served on `GET /metrics` by its HTTP
//! server and by the metrics listener (OpenMetrics text, `prometheus-client`).
//!
//! The counters live where the events happen (`DhcpStats`, `TftpStats`,
//! `HttpStats`, `SyslogStats`, `LogShipStats`, `SyncStats`, the cache and
//! the boot timeline, whose phase histogram is
//! [`PhaseHistograms`](crate::timeline::PhaseHistograms)); this module only
//! reads and registers them, at scrape time, so a scrape costs nothing until
//! it happens and never touches the packet path. Every name is listed, with
//! its meaning, in `docs/operations.md` ("Metrics").

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::serve::dhcp::DhcpStats;
use crate::serve::http::HttpStats;
use crate::serve::syslog::SyslogStats;
use crate::serve::tftp::TftpStats;
use crate::store::cache::BlobCache;
use crate::timeline::TimelineHandle;
use crate::upstream::follow::SyncStats;
use crate::upstream::logship::LogShipStats;
use rackboot_agent_domain::view::RackView;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Depth and capacity of a queue, read at scrape time.
type QueueProbe = Box<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

/// The agent's metrics: the counters the servers update, and the registry
/// that renders them.
pub struct AgentMetrics {
    registry: Registry,
    /// DHCP counters.
    pub dhcp: Arc<DhcpStats>,
    /// TFTP counters, published by the TFTP task.
    pub tftp: Arc<TftpStats>,
    /// HTTP counters.
    pub http: Arc<HttpStats>,
    /// Syslog receiver counters.
    pub syslog: Arc<SyslogStats>,
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
        let mut metrics = AgentMetrics {
            registry: Registry::default(),
            dhcp: Arc::default(),
            tftp: Arc::default(),
            http: Arc::default(),
            syslog: Arc::default(),
            logship: Arc::default(),
            sync: Arc::default(),
            queues: queues.clone(),
        };
        metrics.registry.register(
            "rackboot_agent_boot_phase_seconds",
            "Offset of each boot phase from the first phase of its boot, observed when the phase is recorded",
            sessions.phase_histograms().0.clone(),
        );
        let sources = Sources {
            dhcp: metrics.dhcp.clone(),
            tftp: metrics.tftp.clone(),
            http: metrics.http.clone(),
            syslog: metrics.syslog.clone(),
            logship: metrics.logship.clone(),
            sync: metrics.sync.clone(),
            view,
            cache,
            sessions,
            queues,
        };
        metrics.registry.register_collector(Box::new(sources));
        metrics
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
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Everything read at scrape time.
struct Sources {
    dhcp: Arc<DhcpStats>,
    tftp: Arc<TftpStats>,
    http: Arc<HttpStats>,
    syslog: Arc<SyslogStats>,
    logship: Arc<LogShipStats>,
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

/// A counter without labels (`name` without `_total`; the encoder adds it).
pub(crate) fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

/// A counter with one label.
pub(crate) fn counters<L: AsRef<str>>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(L, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        let labels = [(label, l.as_ref())];
        ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
pub(crate) fn gauge<N: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    g.encode(m)
}

/// A gauge with one label.
pub(crate) fn gauges<L: AsRef<str>, N: EncodeGaugeValue + Copy>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(L, N)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in values {
        let labels = [(label, l.as_ref())];
        ConstGauge::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Sources {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.encode_dhcp(&mut e)?;
        self.encode_tftp(&mut e)?;
        self.encode_http(&mut e)?;
        self.encode_logs(&mut e)?;
        self.encode_state(&mut e)
    }
}

impl Sources {
    fn encode_dhcp(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let d = &self.dhcp;
        counter(
            e,
            "rackboot_agent_dhcp_received",
            "DHCP datagrams received",
            d.received.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_dhcp_replied",
            "DHCP replies sent",
            d.replied.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_dhcp_unknown",
            "DHCP requests from machines the rack view does not know",
            d.unknown.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_dhcp_provisional",
            "Provisional offers and leases handed to unknown machines",
            d.provisional.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_dhcp_probes",
            "Probe reports (every MAC of a machine) received",
            d.probes.load(Relaxed),
        )?;
        let drops: Vec<(&str, u64)> = {
            let drops = d.drops.lock().unwrap_or_else(|p| p.into_inner());
            drops.iter().map(|(k, v)| (*k, *v)).collect()
        };
        counters(
            e,
            "rackboot_agent_dhcp_dropped",
            "DHCP datagrams dropped without a reply, by reason",
            "reason",
            &drops,
        )
    }

    fn encode_tftp(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let t = self.tftp.snapshot();
        let s = &t.core;
        counter(
            e,
            "rackboot_agent_tftp_datagrams_received",
            "TFTP datagrams handled by the engine",
            s.datagrams_received,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_datagrams_sent",
            "TFTP datagrams sent",
            s.datagrams_sent,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_bytes_sent",
            "TFTP bytes sent (UDP payload: headers, retransmissions and errors included)",
            s.bytes_sent,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_transfers_started",
            "TFTP transfers started",
            s.transfers_started,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_transfers_completed",
            "TFTP transfers whose last block was acknowledged",
            s.transfers_completed,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_option_probes",
            "TFTP transfers the client ended after the option answer (ERROR 8: a PXE ROM's tsize probe)",
            s.transfers_option_refused,
        )?;
        counters(
            e,
            "rackboot_agent_tftp_transfers_failed",
            "TFTP transfers that did not complete (option probes aside), by reason",
            "reason",
            &[
                (
                    "aborted",
                    s.transfers_aborted
                        .saturating_sub(s.transfers_option_refused),
                ),
                ("timed_out", s.transfers_timed_out),
            ],
        )?;
        counter(
            e,
            "rackboot_agent_tftp_data_packets_sent",
            "TFTP DATA packets sent for the first time",
            s.data_sent,
        )?;
        counters(
            e,
            "rackboot_agent_tftp_retransmits",
            "TFTP packets sent again, by cause",
            "reason",
            &[
                ("timeout", s.retransmits_timeout),
                ("duplicate_ack", s.retransmits_duplicate),
                ("partial_ack", s.retransmits_partial_ack),
            ],
        )?;
        counters(
            e,
            "rackboot_agent_tftp_dropped",
            "TFTP datagrams dropped, by reason",
            "reason",
            &[
                ("malformed", s.dropped_malformed),
                ("unexpected_on_listener", s.dropped_unexpected_on_listener),
                ("unknown_transfer", s.dropped_unknown_transfer),
                ("wrong_source", s.dropped_wrong_source),
                ("unexpected_on_transfer", s.dropped_unexpected_on_transfer),
                ("stale_ack", s.dropped_stale_ack),
                ("duplicate_ack", s.dropped_duplicate_ack),
                ("queue_full", s.dropped_queue_full),
                ("per_source_cap", s.dropped_per_source),
                ("draining", s.dropped_draining),
                ("source_not_allowed", t.refused_source),
                ("rate_limited", t.rate_limited),
                ("stray", t.strays),
            ],
        )?;
        counters(
            e,
            "rackboot_agent_tftp_refused",
            "TFTP requests answered with an ERROR, by reason",
            "reason",
            &[
                ("write", s.refused_write),
                ("path", s.refused_path),
                ("mode", s.refused_mode),
                ("not_found", s.refused_not_found),
                ("access_denied", s.refused_access_denied),
            ],
        )?;
        counter(
            e,
            "rackboot_agent_tftp_duplicate_requests",
            "Repeated TFTP requests absorbed by a running or waiting transfer",
            s.duplicate_requests,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_requests_queued",
            "TFTP requests that had to wait for a transfer slot",
            s.queued,
        )?;
        gauge(
            e,
            "rackboot_agent_tftp_active_transfers",
            "TFTP transfers running",
            t.active as u64,
        )?;
        gauge(
            e,
            "rackboot_agent_tftp_queued_requests",
            "TFTP requests waiting for a transfer slot",
            t.queued as u64,
        )
    }

    fn encode_http(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let h = &self.http;
        let requests: Vec<(String, u64)> = h
            .requests()
            .into_iter()
            .map(|(code, n)| (code.to_string(), n))
            .collect();
        counters(
            e,
            "rackboot_agent_http_requests",
            "HTTP requests answered, by status code",
            "code",
            &requests,
        )?;
        counter(
            e,
            "rackboot_agent_http_response_bytes",
            "HTTP response body bytes (Content-Length; HEAD answers count none)",
            h.response_bytes.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_http_connections",
            "HTTP connections accepted",
            h.connections.load(Relaxed),
        )?;
        gauge(
            e,
            "rackboot_agent_http_active_connections",
            "HTTP connections open",
            h.active.load(Relaxed),
        )
    }

    fn encode_logs(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.syslog;
        counter(
            e,
            "rackboot_agent_syslog_received",
            "Syslog datagrams received",
            s.received.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_syslog_unknown_sender",
            "Syslog lines from senders that are not nodes of this rack (not kept)",
            s.unknown_sender.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_syslog_dropped",
            "Syslog lines dropped because the shipping queue was full",
            s.dropped.load(Relaxed),
        )?;
        let l = &self.logship;
        gauge(
            e,
            "rackboot_agent_log_memory_lines",
            "Node log lines waiting in memory to be shipped",
            l.memory_lines.load(Relaxed),
        )?;
        gauge(
            e,
            "rackboot_agent_log_spool_lines",
            "Node log lines waiting in the on-disk spool",
            l.spool_lines.load(Relaxed),
        )?;
        gauge(
            e,
            "rackboot_agent_log_spool_bytes",
            "Bytes of the on-disk log spool",
            l.spool_bytes.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_log_shipped_lines",
            "Node log lines the coordinator acknowledged",
            l.shipped_lines.load(Relaxed),
        )?;
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
            "Verified blobs held in memory for serving",
            c.blobs,
        )?;
        gauge(
            e,
            "rackboot_agent_cache_bytes",
            "Bytes of the blobs held",
            c.bytes,
        )?;
        counter(
            e,
            "rackboot_agent_cache_hits",
            "Wanted blobs found in memory or intact on disk",
            c.hits,
        )?;
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
