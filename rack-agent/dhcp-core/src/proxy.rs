//! proxyDHCP (PXE specification §2.2.3): beside a site DHCP server that
//! hands out addresses, the agent answers PXE clients with boot information
//! only — an OFFER on port 67 with no address, and an ACK from the boot
//! server port 4011 — with option 43 set so the client skips boot server
//! discovery and uses the boot file at once (one transaction fewer).
//!
//! Pure, like [`crate::handle`]: same parsing, same boot-file policy.

use dhcproto::v4::MessageType;

use crate::reply::{self, DestKind, Kind};
use crate::{Decision, DropReason, NodeDirectory, Request, ServerConfig};

/// Which socket a proxy request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPort {
    /// UDP 67, shared with the site DHCP server: answer DISCOVERs.
    Dhcp,
    /// UDP 4011, the PXE boot server port: answer REQUESTs.
    BootServer,
}

/// Decide what a proxyDHCP server does with one request.
///
/// - Non-PXE clients (no `PXEClient` vendor class, no iPXE user class) and
///   anything but DISCOVER on 67 / REQUEST on 4011 are dropped: the site
///   server answers them.
/// - An unknown MAC is reported ([`Decision::UnknownClient`]).
pub fn handle_proxy(
    config: &ServerConfig,
    nodes: &impl NodeDirectory,
    packet: &[u8],
    port: ProxyPort,
) -> Decision {
    decide(config, nodes, packet, port).unwrap_or_else(Decision::Drop)
}

fn decide(
    config: &ServerConfig,
    nodes: &impl NodeDirectory,
    packet: &[u8],
    port: ProxyPort,
) -> Result<Decision, DropReason> {
    decide_parsed(config, nodes, &crate::parse_request(packet)?, port)
}

/// [`handle_proxy`] on a request already parsed.
pub(crate) fn decide_parsed(
    config: &ServerConfig,
    nodes: &impl NodeDirectory,
    request: &Request,
    port: ProxyPort,
) -> Result<Decision, DropReason> {
    let (pkt, mac, client) = (&request.pkt, request.mac, &request.client);
    let header = &pkt.header;
    if !(client.is_pxe() || client.is_ipxe()) {
        return Err(DropReason::NotPxe);
    }
    let kind = match (port, client.message_type) {
        (ProxyPort::Dhcp, Some(MessageType::Discover)) => Kind::ProxyOffer,
        (ProxyPort::BootServer, Some(MessageType::Request)) => Kind::ProxyAck,
        (_, Some(t)) => return Err(DropReason::UnsupportedMessageType(u8::from(t))),
        (_, None) => return Err(DropReason::UnsupportedMessageType(0)),
    };
    let Some(binding) = nodes.lookup(&mac) else {
        return Ok(Decision::UnknownClient {
            mac,
            info: client.clone(),
        });
    };
    let input = reply::Input {
        kind,
        header,
        client,
        binding: &binding,
        relay_info: pkt.options.get(82),
    };
    let (message, bytes) = reply::build(config, &input)?;
    Ok(Decision::Reply {
        message,
        bytes,
        dest: reply::destination(DestKind::Other, header.ciaddr, header.giaddr),
    })
}
