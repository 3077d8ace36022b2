//! Sockets of the servers: how the agent binds its UDP ports (DHCP, TFTP,
//! syslog).

use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use tokio::net::UdpSocket;

/// Receive buffer asked for on the agent's UDP sockets: a burst of a
/// thousand DISCOVERs or RRQs must wait in the socket, not be dropped by the
/// kernel. (The kernel caps it at `net.core.rmem_max`; raise that on busy
/// racks.)
pub const RECV_BUFFER: usize = 8 << 20;

/// Bind a UDP server socket: address reuse, a large receive buffer, broadcast
/// if asked, and bound to the rack interface when given (so broadcasts leave
/// through it).
pub fn bind_udp(
    addr: SocketAddr,
    iface: Option<&str>,
    broadcast: bool,
) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(broadcast)?;
    if let Err(e) = s.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the receive buffer");
    }
    if let Some(dev) = iface {
        s.bind_device(Some(dev.as_bytes()))?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The IPv4 address and subnet of an interface.
pub fn interface_network(name: &str) -> std::io::Result<(Ipv4Addr, Ipv4Net)> {
    for iface in if_addrs::get_if_addrs()? {
        if iface.name != name {
            continue;
        }
        if let if_addrs::IfAddr::V4(v4) = iface.addr {
            let prefix = u32::from(v4.netmask).leading_ones();
            let prefix = u8::try_from(prefix).unwrap_or(32);
            let net = Ipv4Net::new(v4.ip, prefix)
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .trunc();
            return Ok((v4.ip, net));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("interface {name} has no IPv4 address (or does not exist)"),
    ))
}

/// The first host address after `server` (the default node base).
pub fn default_node_base(server: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(server).saturating_add(1))
}
