//! The DHCP shell: moves datagrams between a UDP socket and the sans-IO
//! decision core (`rackboot-dhcp-core`). It never waits on the coordinator:
//! an unknown client is reported upstream (`upstream::follow`) and its
//! request held (up to 3 s); it is answered as soon as its node appears in
//! the local view.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rackboot_agent_domain::discovery::Unknown;
use rackboot_agent_domain::view::RackView;
use rackboot_dhcp_core::{AcceptPolicy, Decision, Mac, ProxyPort, ReplyDest, ServerConfig};
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

/// How long an unknown MAC is not reported again.
const UNKNOWN_COOLDOWN: Duration = Duration::from_secs(3);
/// Bound on the unknown-MAC memory.
const UNKNOWN_TABLE: usize = 65_536;

/// Which socket a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Port 67 in authoritative mode.
    Server,
    /// Port 67 in proxy mode.
    ProxyDhcp,
    /// Port 4011 in proxy mode.
    ProxyBoot,
}

/// Settings of the DHCP shell.
#[derive(Debug, Clone)]
pub struct DhcpShellConfig {
    /// Decision-core configuration (replaced live on SIGHUP).
    pub core: watch::Receiver<Arc<ServerConfig>>,
    /// Port replies to clients go to (68; tests may use others).
    pub client_port: u16,
    /// Which socket this task serves.
    pub role: Role,
    /// Boot timelines (OFFER and ACK times), when tracked.
    pub sessions: Option<crate::timeline::TimelineHandle>,
    /// When to report unknown machines to the coordinator.
    pub accept: AcceptPolicy,
    /// Provisional leases for unknown machines (`Role::Server` with the
    /// probe or manual policy).
    pub pool: Option<rackboot_dhcp_core::ProvisionalPool>,
    /// Subnets a request may come from (besides an unconfigured client's
    /// 0.0.0.0) and a relay (giaddr) may be on: the rack's.
    pub allow: crate::serve::guard::Allow,
}

/// Why a datagram is not even looked at: `None` when it may be. A request
/// comes from an unconfigured client (0.0.0.0), a machine or relay on the
/// rack's subnets, or loopback (development); a relayed one names a relay
/// (giaddr) on the rack's subnets — else a spoofed giaddr would make the
/// agent send its answer to any address.
pub fn front_door(
    allow: &crate::serve::guard::Allow,
    src: SocketAddr,
    packet: &[u8],
) -> Option<&'static str> {
    let source_ok = match src.ip() {
        std::net::IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || allow.permits(src.ip())
        }
        std::net::IpAddr::V6(_) => false,
    };
    if !source_ok {
        return Some("source_not_allowed");
    }
    let giaddr = packet
        .get(24..28)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(std::net::Ipv4Addr::from)
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    if !giaddr.is_unspecified() && !allow.permits(std::net::IpAddr::V4(giaddr)) {
        return Some("relay_not_allowed");
    }
    None
}

/// Record an OFFER or ACK in the node's boot timeline.
fn timeline(sessions: &crate::timeline::TimelineHandle, reply: &dhcproto::v4::Message) {
    use dhcproto::v4::MessageType;
    use rackboot_agent_domain::timeline::Phase;
    let phase = match reply.opts().msg_type() {
        Some(MessageType::Offer) => Phase::DhcpOffer,
        Some(MessageType::Ack) => Phase::DhcpAck,
        _ => return,
    };
    if let Some(ch) = reply.chaddr().get(..6)
        && let Ok(mac) = <[u8; 6]>::try_from(ch)
    {
        sessions.dhcp(Mac::from(mac), phase);
    }
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
    let mut buf = vec![0u8; 4096];
    let mut reported: HashMap<Mac, Instant> = HashMap::new();
    // Per-MAC limit: a PXE client sends a handful of packets per exchange;
    // a MAC sending more than 10/s (burst 20) is looping or hostile.
    let mut per_mac: crate::serve::guard::RateLimiter<[u8; 6]> =
        crate::serve::guard::RateLimiter::new(10.0, 20.0, 131_072);
    let mut pool = cfg.pool.clone();
    let started = Instant::now();
    // Requests of machines being numbered (first-seen): answered as soon as
    // the view knows them, not at the client's next retransmission (4 s
    // later for a PXE ROM).
    let mut deferred: HashMap<Mac, Deferred> = HashMap::new();
    let mut changes = view.clone();
    changes.borrow_and_update();
    loop {
        let (n, src) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed(), if !deferred.is_empty() => {
                if r.is_err() {
                    return;
                }
                changes.borrow_and_update();
                answer_deferred(&socket, &cfg, &view, &mut deferred, &stats).await;
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "dhcp recv failed");
                    continue;
                }
            },
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let packet = buf.get(..n).unwrap_or_default();
        if let Some(reason) = front_door(&cfg.allow, src, packet) {
            stats.count_drop(reason);
            continue;
        }
        if let Some(ch) = packet.get(28..34)
            && let Ok(mac) = <[u8; 6]>::try_from(ch)
            && !per_mac.allow(&mac, Instant::now())
        {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            stats.count_drop("rate_limited");
            continue;
        }
        let handled = {
            let v = view.borrow();
            let core = cfg.core.borrow().clone();
            match (cfg.role, pool.as_mut()) {
                (Role::Server, Some(pool)) => {
                    let now = started.elapsed().as_secs();
                    pool.expire(now);
                    stats
                        .provisional_in_use
                        .store(pool.in_use(now) as u64, Ordering::Relaxed);
                    rackboot_dhcp_core::handle_with_pool(&core, &v.bindings, pool, now, packet)
                }
                (Role::Server, None) => {
                    plain(rackboot_dhcp_core::handle(&core, &v.bindings, packet))
                }
                (Role::ProxyDhcp, _) => plain(rackboot_dhcp_core::handle_proxy(
                    &core,
                    &v.bindings,
                    packet,
                    ProxyPort::Dhcp,
                )),
                (Role::ProxyBoot, _) => plain(rackboot_dhcp_core::handle_proxy(
                    &core,
                    &v.bindings,
                    packet,
                    ProxyPort::BootServer,
                )),
            }
        };
        if let Some(report) = &handled.probe {
            stats.probes.fetch_add(1, Ordering::Relaxed);
            let new_macs = {
                let v = view.borrow();
                report.macs.iter().any(|m| !v.bindings.contains_key(m))
            };
            if new_macs {
                let uuid = handled.client.as_ref().and_then(|c| c.uuid).map(hex);
                let mac = report.macs.first().copied().unwrap_or(Mac([0; 6]));
                report_machine(
                    &mut reported,
                    &unknown_tx,
                    Unknown {
                        mac,
                        macs: report.macs.clone(),
                        uuid,
                        inventory: report.inventory.clone(),
                        hold: cfg.accept == AcceptPolicy::Manual,
                    },
                );
            }
        }
        let decision = handled.decision;
        if handled.unknown && matches!(decision, Decision::Reply { .. }) {
            stats.provisional.fetch_add(1, Ordering::Relaxed);
        }
        if handled.unknown
            && cfg.accept == AcceptPolicy::FirstSeen
            && let Some(client) = &handled.client
        {
            report_machine(
                &mut reported,
                &unknown_tx,
                Unknown {
                    mac: client.mac,
                    macs: Vec::new(),
                    uuid: client.uuid.map(hex),
                    inventory: Vec::new(),
                    hold: false,
                },
            );
        }
        match decision {
            Decision::Reply {
                bytes,
                dest,
                message,
            } => {
                if let Some(sessions) = &cfg.sessions {
                    timeline(sessions, &message);
                }
                // The boot server port answers where the request came from.
                let to = if cfg.role == Role::ProxyBoot {
                    src
                } else {
                    destination(dest, src, cfg.client_port)
                };
                match socket.send_to(&bytes, to).await {
                    Ok(_) => {
                        stats.replied.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, %to, "dhcp send failed"),
                }
            }
            Decision::UnknownClient { mac, .. } => {
                stats.unknown.fetch_add(1, Ordering::Relaxed);
                if cfg.role == Role::Server && cfg.accept == AcceptPolicy::FirstSeen {
                    let now = Instant::now();
                    if deferred.len() >= DEFER_MAX {
                        deferred.retain(|_, d| d.until > now);
                    }
                    if deferred.len() < DEFER_MAX {
                        deferred.insert(
                            mac,
                            Deferred {
                                packet: packet.to_vec(),
                                src,
                                until: now + DEFER_TTL,
                            },
                        );
                    }
                }
            }
            Decision::Drop(reason) => {
                if matches!(
                    reason,
                    rackboot_dhcp_core::DropReason::ProvisionalPoolFull(_)
                ) {
                    stats.provisional_full.fetch_add(1, Ordering::Relaxed);
                }
                stats.count_drop(reason.label());
                tracing::debug!(%src, reason = reason.label(), detail = %reason, "dhcp datagram dropped");
            }
        }
    }
}

/// A request from a machine being numbered, kept to answer once its node
/// appears in the view.
struct Deferred {
    packet: Vec<u8>,
    src: SocketAddr,
    until: Instant,
}

/// How long a deferred request may still be answered (a PXE ROM resends its
/// DISCOVER after 4 s with the same xid; an answer after that would race it).
const DEFER_TTL: Duration = Duration::from_secs(3);
/// Bound on deferred requests.
const DEFER_MAX: usize = 16_384;

/// Answer the deferred requests of machines the view now knows; forget
/// expired ones.
async fn answer_deferred(
    socket: &UdpSocket,
    cfg: &DhcpShellConfig,
    view: &watch::Receiver<Arc<RackView>>,
    deferred: &mut HashMap<Mac, Deferred>,
    stats: &DhcpStats,
) {
    let now = Instant::now();
    deferred.retain(|_, d| d.until > now);
    let v = view.borrow().clone();
    let known: Vec<Mac> = deferred
        .keys()
        .filter(|m| v.bindings.contains_key(m))
        .copied()
        .collect();
    if known.is_empty() {
        return;
    }
    let core = cfg.core.borrow().clone();
    for mac in known {
        let Some(d) = deferred.remove(&mac) else {
            continue;
        };
        if let Decision::Reply {
            bytes,
            dest,
            message,
        } = rackboot_dhcp_core::handle(&core, &v.bindings, &d.packet)
        {
            if let Some(sessions) = &cfg.sessions {
                timeline(sessions, &message);
            }
            let to = destination(dest, d.src, cfg.client_port);
            match socket.send_to(&bytes, to).await {
                Ok(_) => {
                    stats.replied.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, %to, "dhcp send failed"),
            }
        }
    }
}

/// A decision of the pool-less roles, as [`rackboot_dhcp_core::Handled`].
fn plain(decision: Decision) -> rackboot_dhcp_core::Handled {
    let unknown = matches!(decision, Decision::UnknownClient { .. });
    let client = match &decision {
        Decision::UnknownClient { info, .. } => Some(info.clone()),
        _ => None,
    };
    rackboot_dhcp_core::Handled {
        decision,
        unknown,
        probe: None,
        client,
    }
}

fn hex(uuid: [u8; 16]) -> String {
    uuid.iter().map(|b| format!("{b:02x}")).collect()
}

/// Queue a machine for the coordinator, at most once per
/// [`UNKNOWN_COOLDOWN`] per MAC (clients retransmit; the coordinator call is
/// idempotent, but need not be repeated).
fn report_machine(
    reported: &mut HashMap<Mac, Instant>,
    unknown_tx: &mpsc::Sender<Unknown>,
    machine: Unknown,
) {
    let now = Instant::now();
    let due = reported
        .get(&machine.mac)
        .is_none_or(|t| now.duration_since(*t) >= UNKNOWN_COOLDOWN);
    if !due {
        return;
    }
    if reported.len() >= UNKNOWN_TABLE {
        reported.retain(|_, t| now.duration_since(*t) < UNKNOWN_COOLDOWN);
    }
    let mac = machine.mac;
    reported.insert(mac, now);
    tracing::info!(%mac, macs = machine.macs.len(), hold = machine.hold, "asking the coordinator to number a machine");
    if unknown_tx.try_send(machine).is_err() {
        tracing::warn!(%mac, "discovery queue full; will retry on next request");
        reported.remove(&mac);
    }
}

/// Where a reply goes. A client that did not send from the DHCP client port
/// (a test client, or a loopback `dev` setup) is answered where it came from.
fn destination(dest: ReplyDest, src: SocketAddr, client_port: u16) -> SocketAddr {
    if src.port() != client_port && src.port() != 67 {
        return src;
    }
    match dest {
        ReplyDest::Broadcast => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, client_port)),
        ReplyDest::Unicast(ip) => SocketAddr::V4(SocketAddrV4::new(ip, client_port)),
        ReplyDest::Relay(giaddr) => SocketAddr::V4(SocketAddrV4::new(giaddr, 67)),
    }
}

/// Bind the DHCP socket (see [`bind_udp`](crate::serve::net::bind_udp)).
pub fn bind(addr: SocketAddr, iface: Option<&str>) -> std::io::Result<UdpSocket> {
    crate::serve::net::bind_udp(addr, iface, true)
}

#[cfg(test)]
mod front_door_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with_giaddr(g: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 300];
        p[24..28].copy_from_slice(&g);
        p
    }

    #[test]
    fn only_rack_sources_and_relays_are_looked_at() {
        let allow = crate::serve::guard::Allow::new(vec!["10.1.0.0/24".parse().unwrap()]);
        let from = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 68);
        let plain = with_giaddr([0, 0, 0, 0]);
        assert_eq!(front_door(&allow, from("0.0.0.0"), &plain), None);
        assert_eq!(front_door(&allow, from("10.1.0.7"), &plain), None);
        assert_eq!(front_door(&allow, from("127.0.0.1"), &plain), None);
        assert_eq!(
            front_door(&allow, from("10.9.0.7"), &plain),
            Some("source_not_allowed")
        );
        assert_eq!(
            front_door(&allow, from("10.1.0.2"), &with_giaddr([10, 1, 0, 1])),
            None
        );
        assert_eq!(
            front_door(&allow, from("10.1.0.2"), &with_giaddr([192, 0, 2, 1])),
            Some("relay_not_allowed")
        );
        // Too short to hold a giaddr: left to the parser.
        assert_eq!(front_door(&allow, from("10.1.0.2"), &[1, 2, 3]), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_where_rfc2131_says_unless_the_client_is_not_on_68() {
        let client: SocketAddr = "0.0.0.0:68".parse().unwrap_or_else(|_| unreachable!());
        let tester: SocketAddr = "127.0.0.1:40000".parse().unwrap_or_else(|_| unreachable!());
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert_eq!(
            destination(ReplyDest::Broadcast, client, 68).to_string(),
            "255.255.255.255:68"
        );
        assert_eq!(
            destination(ReplyDest::Unicast(ip), client, 68).to_string(),
            "10.0.0.5:68"
        );
        assert_eq!(
            destination(
                ReplyDest::Relay(ip),
                "10.0.0.5:67".parse().unwrap_or(client),
                68
            )
            .to_string(),
            "10.0.0.5:67"
        );
        assert_eq!(destination(ReplyDest::Broadcast, tester, 68), tester);
    }
}
