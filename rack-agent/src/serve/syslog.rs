//! The node log receiver: syslog over UDP (RFC 3164, RFC 5424, netconsole
//! plain lines). Each line is tagged with the node that sent it (by source
//! address) and that node's current boot session, then queued for shipping
//! to the coordinator. Each node has a share of the receiver (a line rate
//! with a burst); lines over it, and a full queue, are dropped and counted;
//! nothing blocks the receiver.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use rackboot_agent_domain::syslog::{self as parse, TaggedLine};
use rackboot_agent_domain::view::RackView;
use rackboot_dhcp_core::guard::RateLimiter;

use crate::timeline::TimelineHandle;

/// Counters of the receiver.
#[derive(Debug, Default)]
pub struct SyslogStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Lines from senders that are not nodes of this rack.
    pub unknown_sender: AtomicU64,
    /// Lines dropped because the shipping queue was full.
    pub dropped: AtomicU64,
    /// Lines dropped because their node was over its share
    /// ([`NODE_LINES_PER_SEC`], burst [`NODE_LINES_BURST`]).
    pub rate_limited: AtomicU64,
}

/// Each node's share of the receiver: lines per second…
pub const NODE_LINES_PER_SEC: f64 = 200.0;
/// …with this burst (a kernel's boot messages arrive at once).
pub const NODE_LINES_BURST: f64 = 5_000.0;

/// Receive until `shutdown`.
pub async fn run(
    socket: UdpSocket,
    view: watch::Receiver<Arc<RackView>>,
    timeline: TimelineHandle,
    out: mpsc::Sender<TaggedLine>,
    stats: Arc<SyslogStats>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; parse::MAX_LINE + 1024];
    // One node (or a host spoofing one) cannot take the others' share.
    let mut shares: RateLimiter<u32> =
        RateLimiter::new(NODE_LINES_PER_SEC, NODE_LINES_BURST, 1 << 18);
    loop {
        let (n, src) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let Ok(rec) = parse::parse(buf.get(..n).unwrap_or_default()) else {
            continue;
        };
        let node = match src.ip() {
            IpAddr::V4(ip) => view.borrow().node_by_addr(ip).map(|n| n.number),
            IpAddr::V6(_) => None,
        };
        let Some(node) = node else {
            stats.unknown_sender.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%src, "log line from a sender that is not a node of this rack");
            continue;
        };
        if !shares.allow(&node, tokio::time::Instant::now().into_std()) {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let text = match &rec.app {
            Some(app) => format!("{app}: {}", rec.message),
            None => rec.message.clone(),
        };
        let line = TaggedLine {
            node,
            boot_session: timeline.log_line(node),
            unix_millis: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
                .unwrap_or(0),
            text,
        };
        if out.try_send(line).is_err() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl rackboot_metrics::Component for SyslogStats {
    fn encode(&self, e: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use rackboot_metrics::counter;
        use std::sync::atomic::Ordering::Relaxed;
        let s = self;
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
        counter(
            e,
            "rackboot_agent_syslog_rate_limited",
            "Syslog lines dropped because their node was over its share (200 lines/s, burst 5,000)",
            s.rate_limited.load(Relaxed),
        )
    }
}
