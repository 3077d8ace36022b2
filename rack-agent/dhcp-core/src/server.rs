//! The DHCP server of one socket as a sans-IO state machine, the way
//! `rackboot-tftp-core`'s `Server` is: datagrams, view changes and time go
//! in (`handle_*(now, …)`), replies and events come out (`poll_*`). The
//! shell only moves bytes between a socket and this struct, and time.
//!
//! Beside the pure decision of [`crate::handle`], it owns the state a rack's
//! DHCP service keeps between requests:
//! - the **front door**: who may ask (the rack's subnets, an unconfigured
//!   client's 0.0.0.0, loopback for development; a relay `giaddr` on the
//!   rack's subnets) and how often (a token bucket per MAC);
//! - the **provisional pool** of short leases for machines not yet numbered
//!   ([`ProvisionalPool`]);
//! - **deferred requests**: with the first-seen policy, the request of a
//!   machine being numbered is kept (bounded, for [`DEFER_TTL`]) and answered
//!   as soon as the node appears in the view — not at the client's next
//!   retransmission, 4 s later for a PXE ROM;
//! - **report cooldowns**: a machine is reported for numbering at most once
//!   per [`REPORT_COOLDOWN`] (clients retransmit).
//!
//! Every table is bounded. `now` is any monotonic clock the caller keeps;
//! tests drive it by hand.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::v4::MessageType;

use crate::guard::{Allow, RateLimiter};
use crate::policy::AcceptPolicy;
use crate::probe::ProbeKey;
use crate::{
    Decision, DropReason, Mac, NodeDirectory, ProbeReport, ProvisionalPool, ProxyPort, ReplyDest,
    Request, ServerConfig,
};

/// How long a deferred request may still be answered (a PXE ROM resends its
/// DISCOVER after 4 s with the same xid; an answer after that would race it).
pub const DEFER_TTL: Duration = Duration::from_secs(3);
/// Bound on deferred requests.
pub const DEFER_MAX: usize = 16_384;
/// How long a machine is not reported again.
pub const REPORT_COOLDOWN: Duration = Duration::from_secs(3);
/// Bound on the report-cooldown table.
pub const REPORT_TABLE: usize = 65_536;
/// Per-MAC limit: a PXE client sends a handful of packets per exchange; a
/// MAC sending more than 10/s (burst 20) is looping or hostile.
pub const PER_MAC_RATE: f64 = 10.0;
/// Burst of [`PER_MAC_RATE`].
pub const PER_MAC_BURST: f64 = 20.0;
/// MACs the rate limiter remembers.
pub const PER_MAC_TABLE: usize = 131_072;
/// Events kept for [`Server::poll_event`] (a shell drains them after every
/// input; past this, the oldest are dropped).
const MAX_EVENTS: usize = 1_024;

/// Which socket a server answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Port 67, authoritative: addresses and boot options.
    Authoritative,
    /// Port 67 beside a site DHCP server: boot options for PXE clients only.
    ProxyDhcp,
    /// Port 4011, the PXE boot server port of proxy mode.
    ProxyBoot,
}

/// What a [`Server`] is, fixed for its life.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which socket it answers on.
    pub role: Role,
    /// When an unknown machine is reported for numbering.
    pub accept: AcceptPolicy,
    /// Port replies to clients go to (68; tests may use others).
    pub client_port: u16,
    /// Subnets a request may come from (besides an unconfigured client's
    /// 0.0.0.0 and loopback) and a relay (`giaddr`) may be on.
    pub allow: Allow,
    /// Provisional leases for unknown machines (authoritative role only).
    pub pool: Option<ProvisionalPool>,
    /// The secret probe tokens are checked with; without one no probe
    /// report is taken.
    pub probe_key: Option<ProbeKey>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: SocketAddr,
    /// The UDP payload.
    pub bytes: Vec<u8>,
}

/// A machine to ask the coordinator to number (or hold, with the manual
/// policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The MAC that asked.
    pub mac: Mac,
    /// Every MAC of the machine (a probe report), the asking one first;
    /// empty otherwise.
    pub macs: Vec<Mac>,
    /// Option 97, recorded only.
    pub uuid: Option<[u8; 16]>,
    /// Probe inventory, recorded only.
    pub inventory: Vec<(String, String)>,
    /// Hold for manual acceptance instead of numbering.
    pub hold: bool,
}

/// Something that happened, for counters, timelines and discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A reply was queued for `mac`.
    Replied {
        /// The client.
        mac: Mac,
        /// Its option 53 (`None` for a BOOTREPLY).
        message_type: Option<MessageType>,
        /// From the provisional pool (the machine has no number yet).
        provisional: bool,
    },
    /// A request from a machine no node has got no answer (for now).
    Unknown {
        /// The machine.
        mac: Mac,
    },
    /// A request carried a probe report.
    Probe {
        /// The machine.
        mac: Mac,
        /// MACs it reported.
        macs: usize,
    },
    /// Ask the coordinator to number a machine. If the shell cannot pass it
    /// on, it calls [`Server::handle_report_refused`].
    Report(Report),
    /// A datagram got no reply.
    Dropped {
        /// Who sent it.
        src: SocketAddr,
        /// Why.
        reason: DropReason,
    },
    /// A probe report was not taken (the request itself is still answered).
    ProbeRefused {
        /// Who sent it.
        src: SocketAddr,
        /// The MAC that asked.
        mac: Mac,
        /// Why.
        reason: ProbeRefusal,
    },
    /// A deferred request ran out of time before its machine was numbered.
    DeferralExpired {
        /// The machine.
        mac: Mac,
    },
}

/// Why a probe report was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeRefusal {
    /// The server has no probe key.
    NoKey,
    /// The report has no `ciaddr`, or does not come from it (unrelayed).
    NotFromItsAddress,
    /// The asking MAC holds no acknowledged provisional lease at `ciaddr`.
    NoLease,
    /// No token option, or one of the wrong length.
    NoToken,
    /// The token is not this MAC's at this address.
    BadToken,
    /// The asking MAC already has a node: its token is spent; the MACs it
    /// names that no node has are not added to it.
    Spent,
}

impl ProbeRefusal {
    /// Short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ProbeRefusal::NoKey => "no_key",
            ProbeRefusal::NotFromItsAddress => "not_from_its_address",
            ProbeRefusal::NoLease => "no_lease",
            ProbeRefusal::NoToken => "no_token",
            ProbeRefusal::BadToken => "bad_token",
            ProbeRefusal::Spent => "spent",
        }
    }
}

/// A request kept until its machine is numbered.
#[derive(Debug)]
struct Deferred {
    request: Request,
    src: SocketAddr,
    until: Instant,
}

/// The DHCP server of one socket. See the module docs.
#[derive(Debug)]
pub struct Server {
    settings: Settings,
    config: ServerConfig,
    per_mac: RateLimiter<Mac>,
    deferred: HashMap<Mac, Deferred>,
    /// Deferral deadlines in arrival order (the TTL is constant, so this is
    /// deadline order); entries whose MAC was answered or deferred again
    /// are skipped when they come up.
    deadlines: VecDeque<(Instant, Mac)>,
    reported: HashMap<Mac, Instant>,
    /// Report times in order (the cooldown is constant, so this is expiry
    /// order): expired entries leave from the front, O(1) per report.
    reported_order: VecDeque<(Instant, Mac)>,
    /// The origin of the pool's seconds scale.
    epoch: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    events_dropped: u64,
}

impl Server {
    /// A server with `settings`, answering with `config`.
    pub fn new(settings: Settings, config: ServerConfig) -> Self {
        let mut settings = settings;
        if settings.role != Role::Authoritative {
            // Proxy roles hand out no addresses.
            settings.pool = None;
        }
        Server {
            settings,
            config,
            per_mac: RateLimiter::new(PER_MAC_RATE, PER_MAC_BURST, PER_MAC_TABLE),
            deferred: HashMap::new(),
            deadlines: VecDeque::new(),
            reported: HashMap::new(),
            reported_order: VecDeque::new(),
            epoch: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            events_dropped: 0,
        }
    }

    /// Replace the reply configuration (a live reload).
    pub fn handle_config(&mut self, config: ServerConfig) {
        self.config = config;
    }

    /// The reply configuration in use.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// One datagram from `src`; `nodes` is the rack's view now.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        bytes: &[u8],
        nodes: &impl NodeDirectory,
    ) {
        let request = match self.front_door(now, src, bytes) {
            Ok(r) => r,
            Err(reason) => {
                self.event(Event::Dropped { src, reason });
                return;
            }
        };
        let mac = request.mac;
        if let Some(probe) = request.probe() {
            self.on_probe(now, src, &request, probe, nodes);
        }
        let decision = match self.settings.role {
            Role::Authoritative => crate::decide_parsed(&self.config, nodes, &request),
            Role::ProxyDhcp => {
                crate::proxy::decide_parsed(&self.config, nodes, &request, ProxyPort::Dhcp)
            }
            Role::ProxyBoot => {
                crate::proxy::decide_parsed(&self.config, nodes, &request, ProxyPort::BootServer)
            }
        }
        .unwrap_or_else(Decision::Drop);
        match decision {
            Decision::Reply {
                bytes,
                dest,
                message,
            } => {
                if let Some(pool) = &mut self.settings.pool {
                    // A numbered machine's unbound offer goes back.
                    pool.numbered(&mac);
                }
                self.reply(src, mac, message.opts().msg_type(), bytes, dest, false);
            }
            Decision::Drop(reason) => self.event(Event::Dropped { src, reason }),
            Decision::UnknownClient { .. } => self.on_unknown(now, src, request),
        }
    }

    /// The rack's view changed: answer deferred requests of machines it
    /// now knows.
    pub fn handle_view_changed(&mut self, now: Instant, nodes: &impl NodeDirectory) {
        self.expire(now);
        if self.deferred.is_empty() {
            return;
        }
        let known: Vec<Mac> = self
            .deferred
            .keys()
            .filter(|m| nodes.lookup(m).is_some())
            .copied()
            .collect();
        for mac in known {
            let Some(d) = self.deferred.remove(&mac) else {
                continue;
            };
            if let Ok(Decision::Reply {
                bytes,
                dest,
                message,
            }) = crate::decide_parsed(&self.config, nodes, &d.request)
            {
                self.reply(d.src, mac, message.opts().msg_type(), bytes, dest, false);
            }
        }
    }

    /// Time passed: forget deferred requests that ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    /// The shell could not pass a [`Event::Report`] on (its queue was full):
    /// the machine is reported again at its next request, without waiting
    /// for the cooldown.
    pub fn handle_report_refused(&mut self, mac: Mac) {
        self.reported.remove(&mac);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] is next due (the earliest deferral
    /// deadline), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|(t, _)| *t)
    }

    /// Requests waiting for their machine to be numbered.
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }

    /// Provisional leases and offers live at `now` (`None` without a pool).
    pub fn provisional_in_use(&mut self, now: Instant) -> Option<usize> {
        let secs = self.pool_secs(now);
        self.settings.pool.as_ref().map(|p| p.in_use(secs))
    }

    /// The provisional pool, for state dumps.
    pub fn pool(&self) -> Option<&ProvisionalPool> {
        self.settings.pool.as_ref()
    }

    /// Events dropped because the shell did not drain them.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Everything a datagram must pass before it is looked at: its source,
    /// its form, its relay and its MAC's rate.
    fn front_door(
        &mut self,
        now: Instant,
        src: SocketAddr,
        bytes: &[u8],
    ) -> Result<Request, DropReason> {
        self.admit_source(src)?;
        let request = crate::parse_request(bytes)?;
        self.admit_relay(&request)?;
        if !self.per_mac.allow(&request.mac, now) {
            return Err(DropReason::RateLimited(request.mac));
        }
        Ok(request)
    }

    /// Who may ask: an unconfigured client (0.0.0.0), a machine or relay on
    /// the rack's subnets, or loopback (development).
    fn admit_source(&self, src: SocketAddr) -> Result<(), DropReason> {
        let ok = match src.ip() {
            IpAddr::V4(v4) => {
                v4.is_unspecified() || v4.is_loopback() || self.settings.allow.permits(src.ip())
            }
            IpAddr::V6(_) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(DropReason::SourceNotAllowed(src.ip()))
        }
    }

    /// A relayed request names a relay (`giaddr`) on the rack's subnets —
    /// else a spoofed `giaddr` would make the server send its answer to any
    /// address.
    fn admit_relay(&self, request: &Request) -> Result<(), DropReason> {
        let giaddr = request.pkt.header.giaddr;
        if giaddr.is_unspecified() || self.settings.allow.permits(IpAddr::V4(giaddr)) {
            Ok(())
        } else {
            Err(DropReason::RelayNotAllowed(giaddr))
        }
    }

    /// A probe report: ask for the machine to be numbered with all its MACs
    /// when the view lacks any of them, if the report is authentic
    /// ([`Server::check_probe`]).
    fn on_probe(
        &mut self,
        now: Instant,
        src: SocketAddr,
        request: &Request,
        probe: ProbeReport,
        nodes: &impl NodeDirectory,
    ) {
        self.event(Event::Probe {
            mac: request.mac,
            macs: probe.macs.len(),
        });
        if probe.macs.iter().all(|m| nodes.lookup(m).is_some()) {
            // A numbered machine repeating its report until it hears its
            // number: nothing to do.
            return;
        }
        if let Err(reason) = self.check_probe(now, src, request, nodes) {
            self.event(Event::ProbeRefused {
                src,
                mac: request.mac,
                reason,
            });
            return;
        }
        let hold = self.settings.accept == AcceptPolicy::Manual;
        self.report(
            now,
            Report {
                mac: probe.macs.first().copied().unwrap_or(request.mac),
                macs: probe.macs,
                uuid: request.client.uuid,
                inventory: probe.inventory,
                hold,
            },
        );
    }

    /// A report counts only from a machine without a node, sent from its
    /// address (`ciaddr`; with a provisional pool, the MAC's acknowledged
    /// provisional lease), carrying the token of that MAC at that address.
    fn check_probe(
        &mut self,
        now: Instant,
        src: SocketAddr,
        request: &Request,
        nodes: &impl NodeDirectory,
    ) -> Result<(), ProbeRefusal> {
        let Some(key) = self.settings.probe_key.clone() else {
            return Err(ProbeRefusal::NoKey);
        };
        if nodes.lookup(&request.mac).is_some() {
            return Err(ProbeRefusal::Spent);
        }
        let header = &request.pkt.header;
        let ciaddr = header.ciaddr;
        let relayed = !header.giaddr.is_unspecified();
        if ciaddr.is_unspecified() || (!relayed && src.ip() != IpAddr::V4(ciaddr)) {
            return Err(ProbeRefusal::NotFromItsAddress);
        }
        let secs = self.pool_secs(now);
        if let Some(pool) = &self.settings.pool {
            let leased = pool
                .lease(&request.mac, secs)
                .is_some_and(|l| l.bound && l.addr == ciaddr);
            if !leased {
                return Err(ProbeRefusal::NoLease);
            }
        }
        let Some(sent) = request.pkt.options.get(crate::probe::OPTION_TOKEN) else {
            return Err(ProbeRefusal::NoToken);
        };
        if key.verify(request.mac, ciaddr, sent) {
            Ok(())
        } else {
            Err(ProbeRefusal::BadToken)
        }
    }

    /// A request from a machine no node has: a provisional lease, or report
    /// it and (first-seen, authoritative) keep the request until its node
    /// appears.
    fn on_unknown(&mut self, now: Instant, src: SocketAddr, request: Request) {
        let mac = request.mac;
        let secs = self.pool_secs(now);
        if let Some(pool) = &mut self.settings.pool {
            pool.expire(secs);
            let decision = crate::provisional_reply(&self.config, pool, secs, &request)
                .unwrap_or_else(Decision::Drop);
            match decision {
                Decision::Reply {
                    bytes,
                    dest,
                    message,
                } => {
                    self.reply(src, mac, message.opts().msg_type(), bytes, dest, true);
                }
                Decision::Drop(reason) => self.event(Event::Dropped { src, reason }),
                Decision::UnknownClient { .. } => self.event(Event::Unknown { mac }),
            }
        } else {
            self.event(Event::Unknown { mac });
        }
        if self.settings.accept != AcceptPolicy::FirstSeen {
            return;
        }
        self.report(
            now,
            Report {
                mac,
                macs: Vec::new(),
                uuid: request.client.uuid,
                inventory: Vec::new(),
                hold: false,
            },
        );
        if self.settings.role == Role::Authoritative && self.settings.pool.is_none() {
            self.defer(now, src, request);
        }
    }

    fn defer(&mut self, now: Instant, src: SocketAddr, request: Request) {
        let mac = request.mac;
        if self.deferred.len() >= DEFER_MAX && !self.deferred.contains_key(&mac) {
            self.expire(now);
            if self.deferred.len() >= DEFER_MAX {
                // Full of live requests: the newcomer is answered at its
                // retransmission instead.
                return;
            }
        }
        let until = now + DEFER_TTL;
        self.deferred.insert(
            mac,
            Deferred {
                request,
                src,
                until,
            },
        );
        self.deadlines.push_back((until, mac));
        if self.deadlines.len() > 2 * DEFER_MAX {
            // Machines deferred again and again leave stale deadlines.
            let deferred = &self.deferred;
            self.deadlines
                .retain(|(t, m)| deferred.get(m).is_some_and(|d| d.until == *t));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(until, mac)) = self.deadlines.front() {
            if until > now {
                break;
            }
            self.deadlines.pop_front();
            if self.deferred.get(&mac).is_some_and(|d| d.until == until) {
                self.deferred.remove(&mac);
                self.event(Event::DeferralExpired { mac });
            }
        }
    }

    /// Queue a report, at most once per [`REPORT_COOLDOWN`] per MAC. With
    /// [`REPORT_TABLE`] MACs reported within one cooldown (a flood of random
    /// MACs), newcomers are not reported until the oldest expire.
    fn report(&mut self, now: Instant, report: Report) {
        while let Some(&(at, mac)) = self.reported_order.front() {
            if now.saturating_duration_since(at) < REPORT_COOLDOWN {
                break;
            }
            self.reported_order.pop_front();
            if self.reported.get(&mac) == Some(&at) {
                self.reported.remove(&mac);
            }
        }
        let mac = report.mac;
        if self.reported.contains_key(&mac) {
            return;
        }
        if self.reported.len() >= REPORT_TABLE {
            return;
        }
        self.reported.insert(mac, now);
        self.reported_order.push_back((now, mac));
        if self.reported_order.len() > 2 * REPORT_TABLE {
            // Reports refused by the shell and made again leave stale
            // entries behind.
            let reported = &self.reported;
            self.reported_order
                .retain(|(t, m)| reported.get(m) == Some(t));
        }
        self.event(Event::Report(report));
    }

    fn reply(
        &mut self,
        src: SocketAddr,
        mac: Mac,
        message_type: Option<MessageType>,
        bytes: Vec<u8>,
        dest: ReplyDest,
        provisional: bool,
    ) {
        // The boot server port answers where the request came from.
        let dest = if self.settings.role == Role::ProxyBoot {
            src
        } else {
            destination(dest, src, self.settings.client_port)
        };
        self.transmits.push_back(Transmit { dest, bytes });
        self.event(Event::Replied {
            mac,
            message_type,
            provisional,
        });
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn pool_secs(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }
}

/// Where a reply goes. A client that did not send from the DHCP client port
/// (a test client, or a loopback `dev` setup) is answered where it came from.
pub fn destination(dest: ReplyDest, src: SocketAddr, client_port: u16) -> SocketAddr {
    if src.port() != client_port && src.port() != 67 {
        return src;
    }
    match dest {
        ReplyDest::Broadcast => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, client_port)),
        ReplyDest::Unicast(ip) => SocketAddr::V4(SocketAddrV4::new(ip, client_port)),
        ReplyDest::Relay(giaddr) => SocketAddr::V4(SocketAddrV4::new(giaddr, 67)),
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
