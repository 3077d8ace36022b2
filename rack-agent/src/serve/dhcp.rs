//! The DHCP shell: moves datagrams and time between a UDP socket and the
//! sans-IO [`Server`] of `rackboot-dhcp-core`, which owns the front door,
//! the provisional pool, deferred requests and report cooldowns. It never
//! waits on the coordinator: the server's reports go upstream
//! (`upstream::follow`) over a bounded queue, and a deferred request is
//! answered as soon as its node appears in the local view.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dhcproto::v4::MessageType;
use rackboot_agent_domain::discovery::Unknown;
use rackboot_agent_domain::view::RackView;
use rackboot_dhcp_core::{DropReason, Event, Server, ServerConfig, Settings};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Counters of the DHCP shell.
#[derive(Debug, Default)]
pub struct DhcpStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Replies sent.
    pub replied: AtomicU64,
    /// Requests from unknown machines (reported for discovery).
    pub unknown: AtomicU64,
    /// Dropped datagrams (malformed, not for us, ...).
    pub dropped: AtomicU64,
    /// Datagrams over a MAC's rate limit.
    pub rate_limited: AtomicU64,
    /// Provisional leases and offers handed to unknown machines.
    pub provisional: AtomicU64,
    /// Unknown machines refused because the provisional pool was exhausted.
    pub provisional_full: AtomicU64,
    /// Probe reports received.
    pub probes: AtomicU64,
    /// Provisional leases and offers live now (gauge).
    pub provisional_in_use: AtomicU64,
    /// Drops by reason ([`rackboot_dhcp_core::DropReason::label`]).
    pub drops: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Probe reports not taken, by reason
    /// ([`rackboot_dhcp_core::ProbeRefusal::label`]).
    pub probes_refused: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl DhcpStats {
    /// Count a drop under its reason.
    pub fn count_drop(&self, reason: &'static str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        *drops.entry(reason).or_default() += 1;
    }

    /// Drops by reason, as `reason=count` words.
    pub fn drops_text(&self) -> String {
        let drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        drops
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Settings of the DHCP shell.
#[derive(Debug)]
pub struct DhcpShellConfig {
    /// Decision-core configuration (replaced live on SIGHUP).
    pub core: watch::Receiver<Arc<ServerConfig>>,
    /// The server's settings: role, policy, front door, provisional pool.
    pub settings: Settings,
    /// Boot timelines (OFFER and ACK times), when tracked.
    pub sessions: Option<crate::timeline::TimelineHandle>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Run the DHCP server on `socket` until `shutdown`.
pub async fn run(
    socket: UdpSocket,
    cfg: DhcpShellConfig,
    view: watch::Receiver<Arc<RackView>>,
    unknown_tx: mpsc::Sender<Unknown>,
    stats: Arc<DhcpStats>,
    shutdown: CancellationToken,
) {
    let DhcpShellConfig {
        mut core,
        settings,
        sessions,
    } = cfg;
    let mut server = Server::new(settings, (**core.borrow_and_update()).clone());
    let mut buf = vec![0u8; 4096];
    let mut changes = view.clone();
    changes.borrow_and_update();
    let mut core_open = true;
    loop {
        let deadline = server.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                let v = changes.borrow_and_update().clone();
                server.handle_view_changed(now(), &v.bindings);
            }
            r = core.changed(), if core_open => {
                if r.is_err() {
                    // No more reloads: keep serving with the last config.
                    core_open = false;
                    continue;
                }
                let c = (**core.borrow_and_update()).clone();
                server.handle_config(c);
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                server.handle_timeout(now());
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, src)) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    let v = view.borrow().clone();
                    server.handle_datagram(now(), src, buf.get(..n).unwrap_or_default(), &v.bindings);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dhcp recv failed");
                    continue;
                }
            },
        }
        while let Some(t) = server.poll_transmit() {
            match socket.send_to(&t.bytes, t.dest).await {
                Ok(_) => {
                    stats.replied.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, to = %t.dest, "dhcp send failed"),
            }
        }
        while let Some(event) = server.poll_event() {
            on_event(&mut server, event, &stats, sessions.as_ref(), &unknown_tx);
        }
        if let Some(n) = server.provisional_in_use(now()) {
            stats.provisional_in_use.store(n as u64, Ordering::Relaxed);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Count an event, record it in the boot timeline, or pass a report on.
fn on_event(
    server: &mut Server,
    event: Event,
    stats: &DhcpStats,
    sessions: Option<&crate::timeline::TimelineHandle>,
    unknown_tx: &mpsc::Sender<Unknown>,
) {
    use rackboot_agent_domain::timeline::Phase;
    match event {
        Event::Replied {
            mac,
            message_type,
            provisional,
        } => {
            if provisional {
                stats.provisional.fetch_add(1, Ordering::Relaxed);
            }
            let phase = match message_type {
                Some(MessageType::Offer) => Phase::DhcpOffer,
                Some(MessageType::Ack) => Phase::DhcpAck,
                _ => return,
            };
            if let Some(sessions) = sessions {
                sessions.dhcp(mac, phase);
            }
        }
        Event::Unknown { .. } => {
            stats.unknown.fetch_add(1, Ordering::Relaxed);
        }
        Event::Probe { .. } => {
            stats.probes.fetch_add(1, Ordering::Relaxed);
        }
        Event::Report(report) => {
            let mac = report.mac;
            tracing::info!(%mac, macs = report.macs.len(), hold = report.hold, "asking the coordinator to number a machine");
            if unknown_tx.try_send(Unknown::from(report)).is_err() {
                tracing::warn!(%mac, "discovery queue full; will retry on next request");
                server.handle_report_refused(mac);
            }
        }
        Event::Dropped { src, reason } => {
            match reason {
                DropReason::ProvisionalPoolFull(_) => {
                    stats.provisional_full.fetch_add(1, Ordering::Relaxed);
                }
                DropReason::RateLimited(_) => {
                    stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            stats.count_drop(reason.label());
            tracing::debug!(%src, reason = reason.label(), detail = %reason, "dhcp datagram dropped");
        }
        Event::ProbeRefused { src, mac, reason } => {
            let mut refused = stats
                .probes_refused
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *refused.entry(reason.label()).or_default() += 1;
            tracing::debug!(%src, %mac, reason = reason.label(), "probe report refused");
        }
        Event::DeferralExpired { mac } => {
            tracing::debug!(%mac, "deferred request expired before the machine was numbered");
        }
    }
}

/// Bind the DHCP socket (see [`bind_udp`](crate::serve::net::bind_udp)).
pub fn bind(addr: SocketAddr, iface: Option<&str>) -> std::io::Result<UdpSocket> {
    crate::serve::net::bind_udp(addr, iface, true)
}

impl rackboot_metrics::Component for DhcpStats {
    fn encode(&self, e: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use rackboot_metrics::{counter, counters};
        use std::sync::atomic::Ordering::Relaxed;

        let d = self;
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
        )?;
        let refused: Vec<(&str, u64)> = {
            let r = d.probes_refused.lock().unwrap_or_else(|p| p.into_inner());
            r.iter().map(|(k, v)| (*k, *v)).collect()
        };
        counters(
            e,
            "rackboot_agent_dhcp_probes_refused",
            "Probe reports not taken (no or wrong token, not from the machine's provisional lease, MAC already numbered), by reason",
            "reason",
            &refused,
        )
    }
}
