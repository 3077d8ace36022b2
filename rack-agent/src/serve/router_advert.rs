//! The router-advertisement shell: a raw ICMPv6 socket on the rack
//! interface, joined to all-routers (`ff02::2`), that moves solicitations
//! and advertisements between the wire and
//! [`rackboot_agent_domain::router_advert::RouterAdvertiser`].
//!
//! The kernel fills in what NDP needs: the checksum (always, on ICMPv6 raw
//! sockets), the link-local source address of the interface, and the hop
//! limit 255 the socket is given. Multicast loopback is off, so the agent
//! never hears itself.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rackboot_agent_domain::router_advert::{RaStats, RouterAdvertiser};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The responder's counters, as last published by its task.
#[derive(Debug, Default)]
pub struct RaMetrics {
    stats: Mutex<RaStats>,
}

impl RaMetrics {
    fn publish(&self, s: &RaStats) {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = s.clone();
    }

    /// The counters now.
    pub fn snapshot(&self) -> RaStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Open the raw ICMPv6 socket on `iface`; with the interface's index (for
/// multicast and link-local scope). A raw socket reads and writes through
/// `recvfrom`/`sendto` like a datagram socket, so tokio's `UdpSocket`
/// carries it.
pub fn bind(iface: &str) -> std::io::Result<(UdpSocket, u32)> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    let index = rustix::net::netdevice::name_to_index(&s, iface)?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    s.join_multicast_v6(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2), index)?;
    s.set_nonblocking(true)?;
    Ok((UdpSocket::from_std(s.into())?, index))
}

/// Answer solicitations on `sock` until `shutdown`.
pub async fn run(
    sock: UdpSocket,
    index: u32,
    metrics: Arc<RaMetrics>,
    shutdown: CancellationToken,
) {
    let mut core = RouterAdvertiser::new();
    let mut buf = vec![0u8; 2048];
    let mut quiet_logged = false;
    loop {
        let got = tokio::select! {
            () = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let (n, from) = match got {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "ipv6 router advertisements: receive failed");
                continue;
            }
        };
        let SocketAddr::V6(from) = from else {
            continue;
        };
        let now = Instant::now();
        core.handle_datagram(now, *from.ip(), buf.get(..n).unwrap_or_default());
        match core.quiet_because(now) {
            Some(router) if !quiet_logged => {
                quiet_logged = true;
                tracing::info!(%router, "a router advertises IPv6 on the rack segment: the agent stops answering router solicitations while it does");
            }
            None if quiet_logged => quiet_logged = false,
            _ => {}
        }
        while let Some(t) = core.poll_transmit() {
            let to = SocketAddrV6::new(t.dest, 0, 0, index);
            if let Err(e) = sock.send_to(&t.payload, to).await {
                tracing::debug!(error = %e, dest = %t.dest, "ipv6 router advertisement not sent");
            }
        }
        metrics.publish(core.stats());
    }
}

impl rackboot_metrics::Component for RaMetrics {
    fn encode(&self, e: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use rackboot_metrics::{counter, counters};
        let s = self.snapshot();
        counter(
            e,
            "rackboot_agent_ipv6_router_solicitations",
            "IPv6 router solicitations received on the rack interface",
            s.solicitations,
        )?;
        counter(
            e,
            "rackboot_agent_ipv6_router_advertisements_sent",
            "Empty IPv6 router advertisements sent (no router, no prefix, no DHCPv6): they end iPXE's IPv6 wait",
            s.answered,
        )?;
        counters(
            e,
            "rackboot_agent_ipv6_router_solicitations_unanswered",
            "Router solicitations not answered, by reason: quiet (a real router advertises here), rate_limited",
            "reason",
            &[("quiet", s.quiet), ("rate_limited", s.rate_limited)],
        )?;
        counter(
            e,
            "rackboot_agent_ipv6_other_routers",
            "Advertisements of a real IPv6 router seen on the rack segment",
            s.other_routers,
        )?;
        counter(
            e,
            "rackboot_agent_ipv6_malformed",
            "ICMPv6 messages on the rack interface that could not be parsed",
            s.malformed,
        )
    }
}
