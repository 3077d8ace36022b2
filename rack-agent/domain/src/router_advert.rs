//! "No IPv6 here": the agent's answer to router solicitations on an IPv4
//! rack.
//!
//! iPXE configures IPv6 beside DHCPv4 and waits for a router advertisement
//! before it boots (ten seconds and more on a segment without a router,
//! measured at ~13 s under QEMU). An advertisement that carries nothing (router lifetime 0: not a
//! default router; no prefix; neither "managed" nor "other" configuration
//! flag: no DHCPv6) ends that wait at once and configures nothing, in iPXE
//! as in any IPv6 host. So the agent answers each Router Solicitation
//! with one, unless a real router advertises on the segment: its
//! advertisement (a lifetime, a prefix or a DHCPv6 flag) is what the
//! nodes must hear first, and the agent stays quiet for [`QUIET_FOR`]
//! after each one it sees. Advertisements that carry nothing (another
//! agent of the rack) never silence it.
//!
//! Sans-IO: [`RouterAdvertiser::handle_datagram`] takes an ICMPv6 message
//! as a raw socket delivers it (no IP header) with its source address;
//! [`RouterAdvertiser::poll_transmit`] gives the advertisements to send,
//! which the kernel checksums and sends with hop limit 255 from the
//! interface's link-local address.

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use etherparse::icmpv6::{
    Icmpv6PayloadSlice, NdpOptionSlice, RouterAdvertisementHeader, RouterAdvertisementPayload,
};
use etherparse::{Icmpv6Header, Icmpv6Slice, Icmpv6Type};

/// How long a real router's advertisement keeps the agent quiet.
pub const QUIET_FOR: Duration = Duration::from_secs(30 * 60);
/// RFC 4861 `MIN_DELAY_BETWEEN_RAS`: multicast advertisements (answers to
/// solicitations from the unspecified address) at most this often.
pub const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// Unicast answers per second at most (a solicitation flood is answered at
/// this rate; the rest are counted and dropped).
pub const MAX_ANSWERS_PER_SEC: u32 = 1_000;
/// Advertisements waiting to be sent at most.
const MAX_QUEUED: usize = 1_024;

/// An advertisement to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The soliciting node's link-local address, or all-nodes (`ff02::1`).
    pub dest: Ipv6Addr,
    /// The ICMPv6 message (checksum left to the kernel).
    pub payload: Vec<u8>,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaStats {
    /// Router solicitations received.
    pub solicitations: u64,
    /// Advertisements queued to send.
    pub answered: u64,
    /// Solicitations not answered: a real router advertises here.
    pub quiet: u64,
    /// Solicitations not answered: over the rate or the multicast interval.
    pub rate_limited: u64,
    /// Advertisements of a real router seen on the segment.
    pub other_routers: u64,
    /// ICMPv6 messages that could not be parsed.
    pub malformed: u64,
}

/// The responder. One task owns it.
#[derive(Debug, Default)]
pub struct RouterAdvertiser {
    quiet_until: Option<Instant>,
    last_multicast: Option<Instant>,
    second: Option<Instant>,
    answered_this_second: u32,
    out: VecDeque<Transmit>,
    stats: RaStats,
    /// Set once a real router was seen: (when, its address).
    last_router: Option<(Instant, Ipv6Addr)>,
}

/// The advertisement the agent sends: not a router, no prefix, no DHCPv6.
pub fn null_advertisement() -> Vec<u8> {
    let header = Icmpv6Header::new(Icmpv6Type::RouterAdvertisement(RouterAdvertisementHeader {
        cur_hop_limit: 0,
        managed_address_config: false,
        other_config: false,
        router_lifetime: 0,
    }));
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(
        &RouterAdvertisementPayload {
            reachable_time: 0,
            retrans_timer: 0,
        }
        .to_bytes(),
    );
    bytes
}

/// An advertisement that tells hosts something: a default router, a
/// prefix, a DNS server or DHCPv6.
fn carries_something(header: &RouterAdvertisementHeader, options: &[u8]) -> bool {
    header.router_lifetime > 0
        || header.managed_address_config
        || header.other_config
        || etherparse::icmpv6::NdpOptionsIterator::from_slice(options).any(|o| match o {
            Ok(NdpOptionSlice::PrefixInformation(_)) => true,
            // RDNSS (RFC 8106) and anything else unknown but present.
            Ok(NdpOptionSlice::Unknown(_)) => true,
            _ => false,
        })
}

impl RouterAdvertiser {
    /// A responder that answers from the start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn stats(&self) -> &RaStats {
        &self.stats
    }

    /// The last real router seen, if it keeps the agent quiet at `now`.
    pub fn quiet_because(&self, now: Instant) -> Option<Ipv6Addr> {
        match (self.quiet_until, self.last_router) {
            (Some(until), Some((_, addr))) if now < until => Some(addr),
            _ => None,
        }
    }

    /// An ICMPv6 message from `src` (the raw socket's payload: no IP
    /// header). Anything but a solicitation or an advertisement is ignored.
    pub fn handle_datagram(&mut self, now: Instant, src: Ipv6Addr, bytes: &[u8]) {
        let Ok(msg) = Icmpv6Slice::from_slice(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if msg.code_u8() != 0 {
            return;
        }
        match msg.icmp_type() {
            Icmpv6Type::RouterSolicitation => self.on_solicitation(now, src),
            Icmpv6Type::RouterAdvertisement(header) => {
                let options = match msg.payload_slice() {
                    Ok(Icmpv6PayloadSlice::RouterAdvertisement(p)) => p.options(),
                    _ => {
                        self.stats.malformed += 1;
                        return;
                    }
                };
                if carries_something(&header, options) {
                    self.stats.other_routers += 1;
                    self.quiet_until = Some(now + QUIET_FOR);
                    self.last_router = Some((now, src));
                }
            }
            _ => {}
        }
    }

    fn on_solicitation(&mut self, now: Instant, src: Ipv6Addr) {
        self.stats.solicitations += 1;
        if self.quiet_until.is_some_and(|until| now < until) {
            self.stats.quiet += 1;
            return;
        }
        let dest = if src.is_unspecified() {
            // No address to answer to yet: all nodes, and rarely.
            if self
                .last_multicast
                .is_some_and(|t| now.saturating_duration_since(t) < MIN_DELAY_BETWEEN_RAS)
            {
                self.stats.rate_limited += 1;
                return;
            }
            self.last_multicast = Some(now);
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
        } else {
            src
        };
        match self.second {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {}
            _ => {
                self.second = Some(now);
                self.answered_this_second = 0;
            }
        }
        if self.answered_this_second >= MAX_ANSWERS_PER_SEC || self.out.len() >= MAX_QUEUED {
            self.stats.rate_limited += 1;
            return;
        }
        self.answered_this_second += 1;
        self.stats.answered += 1;
        self.out.push_back(Transmit {
            dest,
            payload: null_advertisement(),
        });
    }

    /// The next advertisement to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rs() -> Vec<u8> {
        Icmpv6Header::new(Icmpv6Type::RouterSolicitation)
            .to_bytes()
            .to_vec()
    }

    fn ra(lifetime: u16, managed: bool, options: &[u8]) -> Vec<u8> {
        let mut b = Icmpv6Header::new(Icmpv6Type::RouterAdvertisement(RouterAdvertisementHeader {
            cur_hop_limit: 64,
            managed_address_config: managed,
            other_config: false,
            router_lifetime: lifetime,
        }))
        .to_bytes()
        .to_vec();
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(options);
        b
    }

    fn node() -> Ipv6Addr {
        "fe80::5054:ff:fe9b:1".parse().unwrap()
    }

    #[test]
    fn the_advertisement_is_rfc_4861_and_says_nothing() {
        let b = null_advertisement();
        // Type 134, code 0, checksum (kernel), hop limit 0, M=O=0,
        // lifetime 0, reachable 0, retrans 0.
        assert_eq!(b, [134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let msg = Icmpv6Slice::from_slice(&b).unwrap();
        let Icmpv6Type::RouterAdvertisement(h) = msg.icmp_type() else {
            panic!("not an RA")
        };
        assert!(!carries_something(&h, &[]));
    }

    #[test]
    fn a_solicitation_is_answered_to_its_sender() {
        let mut r = RouterAdvertiser::new();
        let now = Instant::now();
        r.handle_datagram(now, node(), &rs());
        let t = r.poll_transmit().unwrap();
        assert_eq!(t.dest, node());
        assert_eq!(t.payload, null_advertisement());
        assert!(r.poll_transmit().is_none());
        assert_eq!(r.stats().answered, 1);
    }

    #[test]
    fn from_the_unspecified_address_all_nodes_at_most_every_3_s() {
        let mut r = RouterAdvertiser::new();
        let t0 = Instant::now();
        r.handle_datagram(t0, Ipv6Addr::UNSPECIFIED, &rs());
        assert_eq!(
            r.poll_transmit().unwrap().dest,
            "ff02::1".parse::<Ipv6Addr>().unwrap()
        );
        r.handle_datagram(t0 + Duration::from_secs(1), Ipv6Addr::UNSPECIFIED, &rs());
        assert!(r.poll_transmit().is_none());
        r.handle_datagram(t0 + Duration::from_secs(3), Ipv6Addr::UNSPECIFIED, &rs());
        assert!(r.poll_transmit().is_some());
        assert_eq!(r.stats().rate_limited, 1);
    }

    #[test]
    fn a_real_router_silences_it_for_a_while_another_agent_does_not() {
        let mut r = RouterAdvertiser::new();
        let t0 = Instant::now();
        let router: Ipv6Addr = "fe80::1".parse().unwrap();
        // Another agent's empty advertisement: still answering.
        r.handle_datagram(t0, router, &null_advertisement());
        r.handle_datagram(t0, node(), &rs());
        assert!(r.poll_transmit().is_some());
        // A default router: quiet.
        r.handle_datagram(t0, router, &ra(1800, false, &[]));
        assert_eq!(r.quiet_because(t0), Some(router));
        r.handle_datagram(t0 + Duration::from_secs(1), node(), &rs());
        assert!(r.poll_transmit().is_none());
        assert_eq!(r.stats().quiet, 1);
        // DHCPv6 (M flag) with lifetime 0: quiet too; a prefix option too.
        let mut q = RouterAdvertiser::new();
        q.handle_datagram(t0, router, &ra(0, true, &[]));
        assert!(q.quiet_because(t0).is_some());
        let mut p = RouterAdvertiser::new();
        let mut prefix = vec![3u8, 4, 64, 0xc0];
        prefix.extend_from_slice(&[0; 28]);
        p.handle_datagram(t0, router, &ra(0, false, &prefix));
        assert!(p.quiet_because(t0).is_some());
        // It answers again once the router has been silent for QUIET_FOR.
        let later = t0 + QUIET_FOR + Duration::from_secs(1);
        r.handle_datagram(later, node(), &rs());
        assert!(r.poll_transmit().is_some());
    }

    #[test]
    fn a_flood_is_answered_at_the_rate_and_garbage_is_counted() {
        let mut r = RouterAdvertiser::new();
        let t0 = Instant::now();
        for _ in 0..(MAX_ANSWERS_PER_SEC + 500) {
            r.handle_datagram(t0, node(), &rs());
        }
        let mut sent = 0;
        while r.poll_transmit().is_some() {
            sent += 1;
        }
        assert_eq!(sent, MAX_QUEUED.min(MAX_ANSWERS_PER_SEC as usize));
        r.handle_datagram(t0, node(), &[133]);
        assert_eq!(r.stats().malformed, 1);
        // Echo requests and other ICMPv6 are none of its business.
        r.handle_datagram(t0, node(), &[128, 0, 0, 0, 0, 1, 0, 1]);
        assert!(r.poll_transmit().is_none());
    }
}
