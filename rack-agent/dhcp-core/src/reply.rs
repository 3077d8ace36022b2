//! Building OFFER, ACK, NAK and BOOTP replies, and choosing where they go.
//!
//! Replies are `dhcproto` messages. A blank reply is made by decoding a fixed
//! 241-byte template rather than with `Message::default()`/`Message::new()`,
//! which draw a random `xid` from the thread RNG: this crate uses no
//! randomness at all.

use std::net::Ipv4Addr;

use dhcproto::v4::relay::RelayAgentInformation;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

use crate::bootfile::{self, BootChoice};
use crate::client::ClientInfo;
use crate::config::{NodeBinding, ServerConfig};
use crate::wire::{HEADER_LEN, Header, MAGIC};
use crate::{DropReason, ReplyDest};

/// Smallest message every client must accept (RFC 2131 §2), counting the IP
/// and UDP headers.
pub(crate) const MIN_MAX_MESSAGE_SIZE: u16 = 576;
/// IPv4 (no options) plus UDP header bytes, subtracted from option 57.
const IP_UDP_HEADERS: usize = 28;
/// Replies shorter than this are zero-padded, as BOOTP relays and old
/// clients expect (RFC 951 fixed 300-byte packets; RFC 1542 §2.1).
pub(crate) const MIN_REPLY_LEN: usize = 300;
/// The `file` header field is 128 bytes; longer names go in option 67 only.
const FILE_FIELD_LEN: usize = 128;

/// Options dropped, in this order, when a reply exceeds the client's maximum
/// message size. Everything else is needed to boot.
const DROPPABLE: [OptionCode; 3] = [
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::LogServer,
];

/// Which reply is being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// DHCPOFFER to a DISCOVER.
    Offer,
    /// DHCPACK to a REQUEST for the node's own address.
    Ack,
    /// DHCPACK to an INFORM: configuration only, no address or lease.
    InformAck,
    /// DHCPNAK to a REQUEST for another address.
    Nak,
    /// RFC 951 BOOTREPLY to a request without option 53.
    Bootp,
    /// proxyDHCP OFFER on port 67: boot information only, no address.
    ProxyOffer,
    /// proxyDHCP ACK from the boot server port 4011: boot information only.
    ProxyAck,
}

/// PXE vendor options (option 43) of a proxy reply: PXE_DISCOVERY_CONTROL
/// (tag 6) = 8, "use the boot file in this reply, skip boot server
/// discovery", then the end tag.
pub(crate) const PXE_VENDOR_SKIP_DISCOVERY: [u8; 4] = [6, 1, 8, 255];

/// Everything a reply is built from.
pub(crate) struct Input<'a> {
    pub kind: Kind,
    pub header: &'a Header,
    pub client: &'a ClientInfo,
    pub binding: &'a NodeBinding,
    /// Raw option 82 from the request, echoed to the relay (RFC 3046 §2.2).
    pub relay_info: Option<&'a [u8]>,
}

/// Where a reply goes (RFC 2131 §4.1), before port choice.
///
/// A relayed request is answered to the relay. A NAK is broadcast. A client
/// that has an address (`ciaddr`) gets unicast. Otherwise the reply is
/// broadcast, whether or not the client set the broadcast flag: the client
/// has no address yet, so unicasting to `yiaddr` needs a neighbour entry the
/// shell would have to install first. A shell that does keep neighbour
/// entries (it knows `yiaddr` and `chaddr` from the message) may unicast when
/// the broadcast flag is clear; broadcasting is always correct.
pub(crate) fn destination(kind: DestKind, ciaddr: Ipv4Addr, giaddr: Ipv4Addr) -> ReplyDest {
    if !giaddr.is_unspecified() {
        ReplyDest::Relay(giaddr)
    } else if kind == DestKind::Nak {
        ReplyDest::Broadcast
    } else if !ciaddr.is_unspecified() {
        ReplyDest::Unicast(ciaddr)
    } else {
        ReplyDest::Broadcast
    }
}

/// Whether [`destination`] is choosing for a NAK (always broadcast unless
/// relayed) or any other reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DestKind {
    /// DHCPNAK.
    Nak,
    /// OFFER, ACK or BOOTREPLY.
    Other,
}

fn blank() -> Result<Message, DropReason> {
    let mut t = [0u8; HEADER_LEN + 1];
    t[0] = 2; // BOOTREPLY
    t[1] = 1; // Ethernet
    t[2] = 6;
    t[236..240].copy_from_slice(&MAGIC);
    t[240] = 255;
    Message::from_bytes(&t).map_err(|e| DropReason::Encode(e.to_string()))
}

/// Build the reply message and its padded wire bytes.
pub(crate) fn build(
    config: &ServerConfig,
    input: &Input<'_>,
) -> Result<(Message, Vec<u8>), DropReason> {
    let Input {
        kind,
        header,
        client,
        binding,
        relay_info,
    } = *input;
    let mut msg = blank()?;
    let mut flags = Flags::new(header.flags);
    if kind == Kind::Nak && !header.giaddr.is_unspecified() {
        // RFC 2131 §4.3.2: a relayed NAK asks the relay to broadcast.
        flags = flags.set_broadcast();
    }
    msg.set_opcode(Opcode::BootReply)
        .set_xid(header.xid)
        .set_flags(flags)
        .set_giaddr(header.giaddr)
        .set_chaddr(&client.mac.0);
    match kind {
        Kind::Offer | Kind::Bootp => {
            msg.set_yiaddr(binding.addr);
        }
        Kind::Ack => {
            msg.set_yiaddr(binding.addr).set_ciaddr(header.ciaddr);
        }
        Kind::InformAck | Kind::ProxyAck => {
            msg.set_ciaddr(header.ciaddr);
        }
        Kind::Nak | Kind::ProxyOffer => {}
    }

    let choice = if kind == Kind::Nak {
        BootChoice::NotBoot
    } else {
        bootfile::select(&config.boot, client)
    };
    // Next-server on every lease, whatever the client: U-Boot (and any
    // loader that fetches files by name) needs it even when no boot file
    // is chosen for its vendor class.
    if choice.file().is_some() || matches!(kind, Kind::Offer | Kind::Ack | Kind::Bootp) {
        msg.set_siaddr(config.server_ip);
    }
    if let Some(file) = choice.file()
        && file.len() < FILE_FIELD_LEN
    {
        msg.set_fname_str(file);
    }

    let opts = options(config, input, choice.file());
    for opt in opts {
        msg.opts_mut().insert(opt);
    }
    if let Some(info) = relay_info
        .and_then(|raw| RelayAgentInformation::from_bytes(raw).ok())
        .filter(|info| info.iter().next().is_some())
    {
        msg.opts_mut()
            .insert(DhcpOption::RelayAgentInformation(info));
    }
    let droppable: &[OptionCode] = if kind == Kind::Bootp {
        &[OptionCode::Hostname]
    } else {
        &DROPPABLE
    };
    fit(msg, limit(kind, client), droppable)
}

/// The reply size limit in bytes of DHCP payload.
fn limit(kind: Kind, client: &ClientInfo) -> usize {
    if kind == Kind::Bootp {
        return MIN_REPLY_LEN;
    }
    let mms = client
        .max_message_size
        .unwrap_or(MIN_MAX_MESSAGE_SIZE)
        .max(MIN_MAX_MESSAGE_SIZE);
    usize::from(mms) - IP_UDP_HEADERS
}

/// Encode, dropping optional options until the reply fits `limit`.
fn fit(
    mut msg: Message,
    limit: usize,
    droppable: &[OptionCode],
) -> Result<(Message, Vec<u8>), DropReason> {
    let mut next = droppable.iter();
    loop {
        let mut bytes = msg
            .to_vec()
            .map_err(|e| DropReason::Encode(e.to_string()))?;
        if bytes.len() <= limit {
            if bytes.len() < MIN_REPLY_LEN {
                bytes.resize(MIN_REPLY_LEN, 0);
            }
            return Ok((msg, bytes));
        }
        match next.next() {
            Some(code) => {
                msg.opts_mut().remove(*code);
            }
            None => {
                return Err(DropReason::ReplyTooLarge {
                    size: bytes.len(),
                    limit,
                });
            }
        }
    }
}

fn options(config: &ServerConfig, input: &Input<'_>, boot_file: Option<&str>) -> Vec<DhcpOption> {
    let Input {
        kind,
        client,
        binding,
        ..
    } = *input;
    let mut out = Vec::new();
    if matches!(kind, Kind::ProxyOffer | Kind::ProxyAck) {
        let ty = if kind == Kind::ProxyOffer {
            MessageType::Offer
        } else {
            MessageType::Ack
        };
        out.push(DhcpOption::MessageType(ty));
        out.push(DhcpOption::ServerIdentifier(config.server_ip));
        out.push(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        out.push(DhcpOption::VendorExtensions(
            PXE_VENDOR_SKIP_DISCOVERY.to_vec(),
        ));
        // PXE spec: proxy replies carry the client's UUID back.
        if let Some(uuid) = client.uuid {
            let mut v = vec![0u8];
            v.extend_from_slice(&uuid);
            out.push(DhcpOption::ClientMachineIdentifier(v));
        }
        if let Some(file) = boot_file {
            out.push(DhcpOption::TFTPServerName(
                config.server_ip.to_string().into_bytes(),
            ));
            out.push(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        }
        return out;
    }
    let msg_type = match kind {
        Kind::ProxyOffer | Kind::ProxyAck => MessageType::Offer,
        Kind::Offer => MessageType::Offer,
        Kind::Ack | Kind::InformAck => MessageType::Ack,
        Kind::Nak => MessageType::Nak,
        Kind::Bootp => {
            // BOOTP: only the basics, in a vendor area that fits 300 bytes.
            out.push(DhcpOption::SubnetMask(config.subnet_mask));
            out.extend(config.router.map(|r| DhcpOption::Router(vec![r])));
            if !binding.hostname.is_empty() {
                out.push(DhcpOption::Hostname(binding.hostname.clone()));
            }
            return out;
        }
    };
    out.push(DhcpOption::MessageType(msg_type));
    out.push(DhcpOption::ServerIdentifier(config.server_ip));
    // RFC 6842: echo the client identifier.
    if let Some(id) = &client.client_id {
        out.push(DhcpOption::ClientIdentifier(id.clone()));
    }
    if kind == Kind::Nak {
        out.push(DhcpOption::Message(if binding.number == 0 {
            format!("{} is not this machine's provisional address", binding.addr)
        } else {
            format!(
                "address is not this client's (node {} has {})",
                binding.number, binding.addr
            )
        }));
        return out;
    }
    if kind != Kind::InformAck {
        let lease = config.lease_secs;
        out.push(DhcpOption::AddressLeaseTime(lease));
        if lease != u32::MAX {
            let part = |num: u64, den: u64| {
                u32::try_from(u64::from(lease) * num / den).unwrap_or(u32::MAX)
            };
            out.push(DhcpOption::Renewal(part(1, 2)));
            out.push(DhcpOption::Rebinding(part(7, 8)));
        }
    }
    out.push(DhcpOption::SubnetMask(config.subnet_mask));
    out.extend(config.router.map(|r| DhcpOption::Router(vec![r])));
    if !binding.hostname.is_empty() {
        out.push(DhcpOption::Hostname(binding.hostname.clone()));
    }
    if !config.dns.is_empty() && client.wants(6) {
        out.push(DhcpOption::DomainNameServer(config.dns.clone()));
    }
    if let Some(domain) = config
        .domain
        .as_ref()
        .filter(|d| !d.is_empty() && client.wants(15))
    {
        out.push(DhcpOption::DomainName(domain.clone()));
    }
    if let Some(log) = config.log_server.filter(|_| client.wants(7)) {
        out.push(DhcpOption::LogServer(vec![log]));
    }
    // Option 66 names the next-server on every lease (like `siaddr`);
    // option 67 only when a boot file was chosen.
    out.push(DhcpOption::TFTPServerName(
        config.server_ip.to_string().into_bytes(),
    ));
    if let Some(file) = boot_file {
        out.push(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    }
    // A PXE client takes an offer that echoes option 60 `PXEClient` as a
    // PXE offer; without option 43 it then treats the offer as naming only a
    // boot server and asks it on port 4011 (EDK2 does: PXE-E16). Option 43
    // with discovery control 8 says "boot the file in this offer".
    if client.is_pxe() {
        out.push(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        if boot_file.is_some() {
            out.push(DhcpOption::VendorExtensions(
                PXE_VENDOR_SKIP_DISCOVERY.to_vec(),
            ));
        }
    } else if client.is_http_client() && boot_file.is_some() {
        // UEFI HTTP Boot discards an `HTTPClient` offer without a boot URI,
        // so the class is echoed only with one.
        out.push(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let zero = Ipv4Addr::UNSPECIFIED;
        let c = Ipv4Addr::new(10, 0, 0, 9);
        let g = Ipv4Addr::new(10, 9, 0, 1);
        assert_eq!(
            destination(DestKind::Other, zero, zero),
            ReplyDest::Broadcast
        );
        assert_eq!(destination(DestKind::Other, c, zero), ReplyDest::Unicast(c));
        assert_eq!(destination(DestKind::Other, c, g), ReplyDest::Relay(g));
        assert_eq!(destination(DestKind::Nak, c, zero), ReplyDest::Broadcast);
        assert_eq!(destination(DestKind::Nak, c, g), ReplyDest::Relay(g));
    }

    #[test]
    fn blank_is_deterministic() {
        let a = blank().expect("blank");
        let b = blank().expect("blank");
        assert_eq!(a, b);
        assert_eq!(a.opcode(), Opcode::BootReply);
        assert_eq!(a.xid(), 0);
    }

    #[test]
    fn size_limit() {
        let mut c = ClientInfo::new(crate::Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(limit(Kind::Offer, &c), 548);
        c.max_message_size = Some(100);
        assert_eq!(limit(Kind::Offer, &c), 548);
        c.max_message_size = Some(1472);
        assert_eq!(limit(Kind::Ack, &c), 1444);
        assert_eq!(limit(Kind::Bootp, &c), 300);
    }
}
