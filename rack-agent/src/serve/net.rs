//! Sockets of the servers: how the agent binds its UDP ports (DHCP, TFTP,
//! syslog).

use std::net::SocketAddr;

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
