//! A sans-IO DHCP client that behaves like a PXE ROM: DISCOVER with the PXE
//! options (60, 93, 94, 97, 55), retries at 4, 8, 16 and 32 s (scaled), then
//! REQUEST for the offered address. No sockets, no clock.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

/// A PXE client's lease and boot instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Address given.
    pub yiaddr: Ipv4Addr,
    /// Next server (siaddr).
    pub next_server: Ipv4Addr,
    /// Boot file (option 67, else the BOOTP file field).
    pub boot_file: String,
    /// Hostname (option 12).
    pub hostname: String,
}

#[derive(Debug, Clone)]
enum State {
    Discover {
        first: Instant,
        sent: usize,
    },
    Request {
        offer: Lease,
        server: Ipv4Addr,
        first: Instant,
        sent: usize,
    },
    Bound {
        lease: Lease,
        at: Instant,
    },
    Failed {
        reason: String,
    },
}

/// One emulated client's DHCP exchange.
#[derive(Debug)]
pub struct DhcpExchange {
    mac: [u8; 6],
    xid: u32,
    started: Instant,
    discover_schedule: Vec<Duration>,
    request_schedule: Vec<Duration>,
    state: State,
    out: Vec<Vec<u8>>,
    /// NAKs received.
    pub naks: u32,
    /// DISCOVERs and REQUESTs sent.
    pub sent: u32,
}

fn pxe_options(msg: &mut Message, mac: &[u8; 6]) {
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MaxMessageSize(1472));
    opts.insert(DhcpOption::ClientSystemArchitecture(
        dhcproto::v4::Architecture::X86_Bios,
    ));
    opts.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    opts.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    let mut uuid = vec![0u8];
    uuid.extend_from_slice(&[0x52, 0x42, 0, 0, 0, 0, 0, 0, 0, 0]);
    uuid.extend_from_slice(mac);
    opts.insert(DhcpOption::ClientMachineIdentifier(uuid));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::VendorExtensions,
        OptionCode::ServerIdentifier,
        OptionCode::ClassIdentifier,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
    ]));
}

impl DhcpExchange {
    /// Start at `now`; `scale` shrinks the firmware timers (1.0 = real).
    pub fn new(mac: [u8; 6], xid: u32, now: Instant, scale: f64) -> Self {
        let s = |secs: f64| Duration::from_secs_f64(secs * scale);
        let mut x = DhcpExchange {
            mac,
            xid,
            started: now,
            discover_schedule: vec![s(4.0), s(12.0), s(28.0), s(60.0)],
            request_schedule: vec![s(1.0), s(3.0), s(6.0), s(10.0)],
            state: State::Discover {
                first: now,
                sent: 1,
            },
            out: Vec::new(),
            naks: 0,
            sent: 0,
        };
        x.send_discover();
        x
    }

    fn base(&self, ty: MessageType) -> Message {
        let mut m = Message::new_with_id(
            self.xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        m.set_opcode(Opcode::BootRequest);
        m.set_flags(Flags::default());
        m.opts_mut().insert(DhcpOption::MessageType(ty));
        pxe_options(&mut m, &self.mac);
        m
    }

    fn push(&mut self, m: &Message) {
        if let Ok(bytes) = m.to_vec() {
            self.sent += 1;
            self.out.push(bytes);
        }
    }

    fn send_discover(&mut self) {
        let m = self.base(MessageType::Discover);
        self.push(&m);
    }

    fn send_request(&mut self, offer: &Lease, server: Ipv4Addr) {
        let mut m = self.base(MessageType::Request);
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.yiaddr));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        self.push(&m);
    }

    /// Datagrams to send to the server.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.out)
    }

    /// The lease and when it was bound, once bound.
    pub fn bound(&self) -> Option<(&Lease, Duration)> {
        match &self.state {
            State::Bound { lease, at } => Some((lease, at.duration_since(self.started))),
            _ => None,
        }
    }

    /// Why it failed, if it did.
    pub fn failed(&self) -> Option<&str> {
        match &self.state {
            State::Failed { reason } => Some(reason),
            _ => None,
        }
    }

    /// Next timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Discover { first, sent } => {
                self.discover_schedule.get(sent - 1).map(|d| *first + *d)
            }
            State::Request { first, sent, .. } => {
                self.request_schedule.get(sent - 1).map(|d| *first + *d)
            }
            _ => None,
        }
    }

    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        match self.state.clone() {
            State::Discover { first, sent } => {
                if sent >= self.discover_schedule.len() {
                    self.state = State::Failed {
                        reason: "no DHCP offer (PXE-E51)".into(),
                    };
                } else {
                    self.state = State::Discover {
                        first,
                        sent: sent + 1,
                    };
                    self.send_discover();
                }
            }
            State::Request {
                offer,
                server,
                first,
                sent,
            } => {
                if sent >= self.request_schedule.len() {
                    // Start over, as ROMs do.
                    self.state = State::Discover {
                        first: now,
                        sent: 1,
                    };
                    self.send_discover();
                } else {
                    self.send_request(&offer, server);
                    self.state = State::Request {
                        offer,
                        server,
                        first,
                        sent: sent + 1,
                    };
                }
            }
            _ => {}
        }
    }

    /// A reply arrived (already matched by xid by the caller or not).
    pub fn handle_reply(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(m) = Message::from_bytes(bytes) else {
            return;
        };
        if m.xid() != self.xid
            || m.opcode() != Opcode::BootReply
            || m.chaddr().get(..6) != Some(&self.mac[..])
        {
            return;
        }
        let ty = m.opts().msg_type();
        let server = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => *ip,
            _ => m.siaddr(),
        };
        let boot_file = match m.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(f)) => String::from_utf8_lossy(f)
                .trim_end_matches('\0')
                .to_string(),
            _ => m
                .fname()
                .map(|f| {
                    String::from_utf8_lossy(f)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default(),
        };
        let hostname = match m.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => h.clone(),
            _ => String::new(),
        };
        let lease = Lease {
            yiaddr: m.yiaddr(),
            next_server: m.siaddr(),
            boot_file,
            hostname,
        };
        match (&self.state, ty) {
            (State::Discover { .. }, Some(MessageType::Offer)) => {
                self.send_request(&lease, server);
                self.state = State::Request {
                    offer: lease,
                    server,
                    first: now,
                    sent: 1,
                };
            }
            (State::Request { offer, .. }, Some(MessageType::Ack)) => {
                let mut lease = lease;
                if lease.boot_file.is_empty() {
                    lease.boot_file = offer.boot_file.clone();
                }
                self.state = State::Bound { lease, at: now };
            }
            (State::Request { .. }, Some(MessageType::Nak)) => {
                self.naks += 1;
                self.state = State::Discover {
                    first: now,
                    sent: 1,
                };
                self.send_discover();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    use rackboot_dhcp_core::{BootFiles, Decision, Mac, NodeBinding, ServerConfig, handle};

    #[test]
    fn pxe_rom_exchange_against_the_real_core() {
        let cfg = ServerConfig {
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            dns: vec![],
            domain: None,
            log_server: None,
            lease_secs: 60,
            boot: BootFiles {
                bios: "undionly.kpxe".into(),
                uefi_x64: "ipxe.efi".into(),
                uefi_arm64: String::new(),
                ipxe_script: "ipxe/{mac}.ipxe".into(),
                http_boot_uri: None,
                uboot_script: String::new(),
            },
        };
        let mac = [0x52, 0x54, 0, 0, 0, 7];
        let nodes: HashMap<Mac, NodeBinding> = HashMap::from([(
            Mac(mac),
            NodeBinding {
                number: 7,
                addr: Ipv4Addr::new(10, 0, 0, 8),
                hostname: "n7".into(),
            },
        )]);
        let now = Instant::now();
        let mut c = DhcpExchange::new(mac, 42, now, 1.0);
        for _ in 0..2 {
            for pkt in c.drain() {
                if let Decision::Reply { bytes, .. } = handle(&cfg, &nodes, &pkt) {
                    c.handle_reply(now, &bytes);
                }
            }
        }
        let (lease, _) = c.bound().unwrap();
        assert_eq!(lease.yiaddr, Ipv4Addr::new(10, 0, 0, 8));
        assert_eq!(lease.boot_file, "undionly.kpxe");
        assert_eq!(lease.hostname, "n7");
        assert_eq!(c.sent, 2);
    }

    #[test]
    fn unanswered_discover_follows_the_pxe_schedule_then_fails() {
        let now = Instant::now();
        let mut c = DhcpExchange::new([2, 0, 0, 0, 0, 1], 1, now, 1.0);
        let mut times = vec![Duration::ZERO];
        c.drain();
        while c.failed().is_none() {
            let t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
            if !c.drain().is_empty() {
                times.push(t.duration_since(now));
            }
        }
        let secs: Vec<u64> = times.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![0, 4, 12, 28]);
    }
}
