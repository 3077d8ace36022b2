//! # rackboot-dhcp-core
//!
//! The sans-IO core of the rack agent's DHCPv4 service (authoritative and
//! proxyDHCP), in two layers:
//! - **decisions**: [`handle`] (authoritative) and [`handle_proxy`] read one
//!   UDP payload, look the client's MAC up in a [`NodeDirectory`] and decide
//!   to reply (OFFER, ACK, NAK or BOOTREPLY, already encoded, with its
//!   destination), to report an unknown client, or to drop the packet with a
//!   countable reason. PXE boot options are chosen by [`bootfile::select`].
//! - **the server** ([`Server`]): the state between requests — front-door
//!   guards ([`guard`]), the provisional pool, deferred requests of machines
//!   being numbered, report cooldowns — driven by
//!   `handle_datagram/handle_view_changed/handle_timeout(now, …)` with
//!   replies and events polled out (`poll_transmit`, `poll_event`,
//!   `poll_timeout`).
//!
//! The shell (`rackboot-agent`) owns the sockets and the clock, moves bytes
//! between them and a [`Server`], counts its events and passes its reports
//! to the coordinator.
//!
//! ## Invariants
//! - **Decisions are pure.** `handle` is a function of its arguments: no
//!   state between calls, no clock, no randomness. A retransmitted request (iPXE resends its
//!   DISCOVER after ~1 s with the same `xid`) gets a byte-identical answer,
//!   and a node always gets the address bound to it, so one exchange can
//!   never hand out two addresses. There is no lease table: addresses follow
//!   from node numbers.
//! - **Bounded.** Every table the [`Server`] keeps (rate buckets, deferred
//!   requests, report cooldowns, the pool, queued events) has a cap; a flood
//!   of random MACs is refused or forgotten, never grows memory.
//! - **Identity is the MAC** (`chaddr`). Client id (61) and UUID (97) are
//!   recorded in [`ClientInfo`], never used to find a node, so the PXE ROM
//!   (with a client id) and the booted OS (maybe without) get the same
//!   address.
//! - **Never panics on input.** Every byte is untrusted: requests are framed
//!   by this crate's own option walker, not `dhcproto`'s decoder (which
//!   has debug assertions on option lengths), and malformed ones become
//!   [`DropReason::Malformed`]. Property tests feed arbitrary and mutated
//!   packets.
//! - **Replies fit the client**: at most its option 57 size (never assumed
//!   above 576 without it), dropping DNS, domain and log server first, and
//!   padded to 300 bytes for BOOTP-era clients and relays.
//!
//! ## Must never depend on
//! tokio or any async runtime, sockets, the file system, the system clock or
//! a random number generator (`dhcproto::v4::Message::default` draws a
//! random `xid`, so it is not used). `cargo tree -p rackboot-dhcp-core` must
//! show no tokio. The [`Server`] keeps no clock: time is passed in as `now`.

pub mod bootfile;
pub mod client;
mod config;
pub mod guard;
mod mac;
pub mod policy;
pub mod probe;
pub mod provisional;
mod proxy;
mod reply;
pub mod server;
mod wire;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use dhcproto::v4::{Message, MessageType};

pub use client::{Arch, ClientInfo};
pub use config::{BootFiles, NodeBinding, NodeDirectory, ServerConfig};
pub use mac::{Mac, MacParseError};
pub use policy::{AcceptPolicy, DhcpMode, UnknownName};
pub use probe::{ProbeKey, ProbeReport, ProbeToken};
pub use provisional::{PoolError, ProvisionalPool};
pub use proxy::{ProxyPort, handle_proxy};
pub use server::{Event, ProbeRefusal, Report, Role, Server, Settings, Transmit};
pub use wire::MalformedError;

use reply::{DestKind, Kind};

/// What the shell should do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send `bytes` (the encoding of `message`, zero-padded to at least 300
    /// bytes) to `dest`.
    Reply {
        /// The reply, for logging and inspection.
        message: Message,
        /// The UDP payload to send.
        bytes: Vec<u8>,
        /// Where to send it.
        dest: ReplyDest,
    },
    /// The MAC is known to no one. No reply now. The [`Server`] reports the
    /// machine for numbering and, in authoritative mode with `--accept
    /// first-seen`, keeps the request (bounded, for up to 3 s) and decides
    /// again as soon as its directory knows the MAC: the client is answered
    /// then, not at its next retransmission (4 s later for a PXE ROM). With
    /// a provisional pool, the server answers it from the pool instead.
    UnknownClient {
        /// The client's MAC.
        mac: Mac,
        /// What the request said about the client.
        info: ClientInfo,
    },
    /// Send nothing; count the reason.
    Drop(DropReason),
}

/// Where a reply goes (RFC 2131 §4.1); the shell picks the port.
///
/// A relayed request (`giaddr` set) is answered to the relay. A NAK is
/// broadcast. A client with an address (`ciaddr` set: renewing, rebinding,
/// INFORM) gets unicast. Everything else is broadcast, whether or not the
/// client set the broadcast flag (EDK2 does; iPXE does not): the client has
/// no address yet, and unicasting to `yiaddr` needs a neighbour entry for
/// `chaddr` that the shell would have to install first. A shell that keeps
/// such entries (it can read `yiaddr`, `chaddr` and the flag from the
/// message) may unicast instead when the broadcast flag is clear;
/// broadcasting is always correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyDest {
    /// To 255.255.255.255 on the receiving interface.
    Broadcast,
    /// To this client address.
    Unicast(Ipv4Addr),
    /// To this relay agent (server port).
    Relay(Ipv4Addr),
}

/// Why a packet got no reply. Values, not errors: the shell counts them by
/// [`DropReason::label`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The bytes are not a well-formed BOOTP/DHCP request.
    Malformed(MalformedError),
    /// `op` is not BOOTREQUEST (1).
    NotBootRequest {
        /// The `op` received.
        op: u8,
    },
    /// `htype` is not Ethernet (1) or `hlen` is not 6.
    HlenInvalid {
        /// The `htype` received.
        htype: u8,
        /// The `hlen` received (may exceed 16).
        hlen: u8,
    },
    /// `chaddr` is zero, broadcast or multicast: it cannot name a machine.
    BadMac(Mac),
    /// A REQUEST selecting another server's offer (option 54 is not ours).
    NotForUs {
        /// The server identifier in the request.
        server_id: Ipv4Addr,
    },
    /// A REQUEST with neither option 50 nor `ciaddr`.
    NoRequestedAddress,
    /// DHCPRELEASE: nothing to do, addresses are fixed per node.
    Released(Mac),
    /// DHCPDECLINE: the client found its address in use. Worth an alarm.
    Declined {
        /// The declining client.
        mac: Mac,
        /// Option 50, the address it declined.
        addr: Option<Ipv4Addr>,
    },
    /// A message type a server does not answer (OFFER, ACK, lease query …).
    UnsupportedMessageType(u8),
    /// Even without optional options the reply exceeds the client's limit.
    ReplyTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Encoding the reply failed (a bug, not bad input).
    Encode(String),
    /// proxyDHCP: not a PXE or iPXE client; the site server answers it.
    NotPxe,
    /// An unknown machine found the provisional pool exhausted.
    ProvisionalPoolFull(Mac),
    /// A BOOTP request from an unknown machine: BOOTP leases never end, so
    /// provisional addresses are not handed to BOOTP clients.
    ProvisionalBootp(Mac),
    /// The sender is not on the rack's subnets (nor 0.0.0.0 or loopback).
    SourceNotAllowed(IpAddr),
    /// A relayed request names a relay (`giaddr`) off the rack's subnets.
    RelayNotAllowed(Ipv4Addr),
    /// The MAC is over its rate limit.
    RateLimited(Mac),
}

impl DropReason {
    /// A short stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            DropReason::Malformed(_) => "malformed",
            DropReason::NotBootRequest { .. } => "not_boot_request",
            DropReason::HlenInvalid { .. } => "hlen_invalid",
            DropReason::BadMac(_) => "bad_mac",
            DropReason::NotForUs { .. } => "not_for_us",
            DropReason::NoRequestedAddress => "no_requested_address",
            DropReason::Released(_) => "release",
            DropReason::Declined { .. } => "decline",
            DropReason::UnsupportedMessageType(_) => "unsupported_message_type",
            DropReason::ReplyTooLarge { .. } => "reply_too_large",
            DropReason::Encode(_) => "encode",
            DropReason::NotPxe => "not_pxe",
            DropReason::ProvisionalPoolFull(_) => "provisional_pool_full",
            DropReason::ProvisionalBootp(_) => "provisional_bootp",
            DropReason::SourceNotAllowed(_) => "source_not_allowed",
            DropReason::RelayNotAllowed(_) => "relay_not_allowed",
            DropReason::RateLimited(_) => "rate_limited",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Malformed(e) => write!(f, "malformed: {e}"),
            DropReason::NotBootRequest { op } => write!(f, "op {op} is not BOOTREQUEST"),
            DropReason::HlenInvalid { htype, hlen } => {
                write!(
                    f,
                    "htype {htype} hlen {hlen}: only Ethernet (1, 6) is served"
                )
            }
            DropReason::BadMac(mac) => write!(f, "chaddr {mac} is not a unicast MAC"),
            DropReason::NotForUs { server_id } => {
                write!(f, "REQUEST for server {server_id}, not us")
            }
            DropReason::NoRequestedAddress => f.write_str("REQUEST without option 50 or ciaddr"),
            DropReason::Released(mac) => write!(f, "RELEASE from {mac}"),
            DropReason::Declined { mac, addr } => match addr {
                Some(a) => write!(f, "DECLINE from {mac}: {a} is in use"),
                None => write!(f, "DECLINE from {mac}"),
            },
            DropReason::UnsupportedMessageType(t) => write!(f, "message type {t} not served"),
            DropReason::ReplyTooLarge { size, limit } => {
                write!(f, "reply of {size} bytes exceeds client limit {limit}")
            }
            DropReason::Encode(e) => write!(f, "encoding reply failed: {e}"),
            DropReason::NotPxe => f.write_str("not a PXE client (proxyDHCP answers only PXE)"),
            DropReason::ProvisionalPoolFull(mac) => {
                write!(f, "unknown machine {mac}: provisional pool exhausted")
            }
            DropReason::ProvisionalBootp(mac) => {
                write!(
                    f,
                    "unknown BOOTP client {mac}: no provisional lease for BOOTP"
                )
            }
            DropReason::SourceNotAllowed(ip) => {
                write!(f, "source {ip} is not on the rack's subnets")
            }
            DropReason::RelayNotAllowed(ip) => {
                write!(f, "relay (giaddr) {ip} is not on the rack's subnets")
            }
            DropReason::RateLimited(mac) => write!(f, "{mac} is over its rate limit"),
        }
    }
}

/// Decide what to do with one request (`packet` is the UDP payload).
///
/// - DISCOVER → OFFER of the node's address.
/// - REQUEST (selecting, init-reboot, renewing, rebinding) → ACK if it asks
///   for the node's address, NAK otherwise; dropped if it selects another
///   server.
/// - INFORM → ACK without address or lease.
/// - BOOTP (no option 53) → BOOTREPLY with address, `siaddr` and `file`.
/// - RELEASE, DECLINE and other types → [`Decision::Drop`].
/// - A MAC the directory does not know → [`Decision::UnknownClient`].
pub fn handle(config: &ServerConfig, nodes: &impl NodeDirectory, packet: &[u8]) -> Decision {
    decide(config, nodes, packet).unwrap_or_else(Decision::Drop)
}

/// A request that parsed: a well-formed BOOTREQUEST from an Ethernet
/// unicast MAC, and what it says about the client. Untrusted header fields
/// are read once, here, into types.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub pkt: wire::Packet,
    pub mac: Mac,
    pub client: ClientInfo,
}

impl Request {
    /// The probe report the request carries, if any.
    pub fn probe(&self) -> Option<ProbeReport> {
        ProbeReport::from_options(
            self.mac,
            self.pkt.options.get(probe::OPTION_MACS),
            self.pkt.options.get(probe::OPTION_INVENTORY),
        )
    }
}

/// Parse and check what every server role needs of a request.
pub(crate) fn parse_request(packet: &[u8]) -> Result<Request, DropReason> {
    let pkt = wire::parse(packet).map_err(DropReason::Malformed)?;
    let header = &pkt.header;
    if header.op != wire::OP_BOOTREQUEST {
        return Err(DropReason::NotBootRequest { op: header.op });
    }
    if header.htype != wire::HTYPE_ETHERNET || header.hlen != 6 {
        return Err(DropReason::HlenInvalid {
            htype: header.htype,
            hlen: header.hlen,
        });
    }
    let c = header.chaddr;
    let mac = Mac([c[0], c[1], c[2], c[3], c[4], c[5]]);
    if !mac.is_unicast() {
        return Err(DropReason::BadMac(mac));
    }
    let client = ClientInfo::from_packet(mac, &pkt).map_err(DropReason::Malformed)?;
    Ok(Request { pkt, mac, client })
}

/// A machine the directory does not know gets a short lease from `pool`:
/// DISCOVER → OFFER of a provisional address, REQUEST → ACK of its
/// provisional lease (NAK for any other address), INFORM → ACK. `now` is in
/// seconds on the pool's scale.
pub(crate) fn provisional_reply(
    config: &ServerConfig,
    pool: &mut ProvisionalPool,
    now: u64,
    request: &Request,
) -> Result<Decision, DropReason> {
    let (pkt, mac, client) = (&request.pkt, request.mac, &request.client);
    let header = &pkt.header;
    let (kind, addr) = match client.message_type {
        None => return Err(DropReason::ProvisionalBootp(mac)),
        Some(MessageType::Discover) => (
            Kind::Offer,
            pool.offer(mac, now)
                .map_err(|_| DropReason::ProvisionalPoolFull(mac))?,
        ),
        Some(MessageType::Request) => {
            let asked = client
                .requested_ip
                .or(Some(header.ciaddr).filter(|a| !a.is_unspecified()))
                .ok_or(DropReason::NoRequestedAddress)?;
            match pool.request(mac, asked, now) {
                Ok(lease) => (Kind::Ack, lease.addr),
                Err(_) => (Kind::Nak, asked),
            }
        }
        Some(MessageType::Inform) => (Kind::InformAck, header.ciaddr),
        Some(other) => return Err(DropReason::UnsupportedMessageType(u8::from(other))),
    };
    let mut config = config.clone();
    config.lease_secs = pool.lease_secs();
    let binding = NodeBinding {
        number: 0,
        addr,
        hostname: String::new(),
    };
    let input = reply::Input {
        kind,
        header,
        client,
        binding: &binding,
        relay_info: pkt.options.get(82),
    };
    let (message, bytes) = reply::build(&config, &input)?;
    let dest_kind = if kind == Kind::Nak {
        DestKind::Nak
    } else {
        DestKind::Other
    };
    Ok(Decision::Reply {
        message,
        bytes,
        dest: reply::destination(dest_kind, header.ciaddr, header.giaddr),
    })
}

fn decide(
    config: &ServerConfig,
    nodes: &impl NodeDirectory,
    packet: &[u8],
) -> Result<Decision, DropReason> {
    decide_parsed(config, nodes, &parse_request(packet)?)
}

pub(crate) fn decide_parsed(
    config: &ServerConfig,
    nodes: &impl NodeDirectory,
    request: &Request,
) -> Result<Decision, DropReason> {
    let (pkt, mac, client) = (&request.pkt, request.mac, &request.client);
    let header = &pkt.header;

    let is_request = match client.message_type {
        None | Some(MessageType::Discover) | Some(MessageType::Inform) => false,
        Some(MessageType::Request) => true,
        Some(MessageType::Release) => return Err(DropReason::Released(mac)),
        Some(MessageType::Decline) => {
            return Err(DropReason::Declined {
                mac,
                addr: client.requested_ip,
            });
        }
        Some(other) => return Err(DropReason::UnsupportedMessageType(u8::from(other))),
    };
    let mut wanted = None;
    if is_request {
        if let Some(id) = pkt
            .options
            .get_exact::<4>(54)
            .map_err(DropReason::Malformed)?
        {
            let server_id = Ipv4Addr::from(id);
            if server_id != config.server_ip {
                return Err(DropReason::NotForUs { server_id });
            }
        }
        let requested = pkt
            .options
            .get_exact::<4>(50)
            .map_err(DropReason::Malformed)?;
        let ciaddr = Some(header.ciaddr).filter(|a| !a.is_unspecified());
        wanted = Some(
            requested
                .map(Ipv4Addr::from)
                .or(ciaddr)
                .ok_or(DropReason::NoRequestedAddress)?,
        );
    }

    let Some(binding) = nodes.lookup(&mac) else {
        return Ok(Decision::UnknownClient {
            mac,
            info: client.clone(),
        });
    };
    let kind = match (client.message_type, wanted) {
        (None, _) => Kind::Bootp,
        (Some(MessageType::Inform), _) => Kind::InformAck,
        (_, Some(addr)) if addr == binding.addr => Kind::Ack,
        (_, Some(_)) => Kind::Nak,
        (_, None) => Kind::Offer,
    };
    let input = reply::Input {
        kind,
        header,
        client,
        binding: &binding,
        relay_info: pkt.options.get(82),
    };
    let (message, bytes) = reply::build(config, &input)?;
    let dest_kind = if kind == Kind::Nak {
        DestKind::Nak
    } else {
        DestKind::Other
    };
    Ok(Decision::Reply {
        message,
        bytes,
        dest: reply::destination(dest_kind, header.ciaddr, header.giaddr),
    })
}
