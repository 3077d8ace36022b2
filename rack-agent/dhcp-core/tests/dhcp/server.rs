//! The DHCP [`Server`](rackboot_dhcp_core::Server) on a virtual clock:
//! deferred requests, report cooldowns, provisional-pool expiry, the front
//! door and the bounds of its tables. No sleeps: time is an argument.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use dhcproto::v4::MessageType;
use rackboot_dhcp_core::server::{DEFER_MAX, DEFER_TTL, REPORT_COOLDOWN};
use rackboot_dhcp_core::{DropReason, Event, Mac, NodeBinding, Role, Settings};

use crate::rig::{CLIENT, Rig, settings, with_pool};
use crate::support::*;

fn numbered(mac: Mac) -> HashMap<Mac, NodeBinding> {
    let mut dir = nodes();
    dir.insert(
        mac,
        NodeBinding {
            number: 40,
            addr: Ipv4Addr::new(10, 0, 0, 40),
            hostname: "n40".into(),
        },
    );
    dir
}

const TTL_MS: u64 = DEFER_TTL.as_millis() as u64;
const COOLDOWN_MS: u64 = REPORT_COOLDOWN.as_millis() as u64;

#[test]
fn a_deferred_request_is_answered_when_the_view_learns_its_machine() {
    let mut rig = Rig::new(settings());
    let discover = ipxe_bios(STRANGER, 0x77, DISCOVER).bytes();
    let step = rig.send(0, CLIENT, &discover, &nodes());
    assert!(step.transmits.is_empty(), "nothing to offer yet");
    assert!(step.has(|e| matches!(e, Event::Unknown { mac } if mac == &STRANGER)));
    assert_eq!(step.reports().len(), 1);
    assert_eq!(rig.server.deferred(), 1);
    assert_eq!(rig.server.poll_timeout().map(|t| rig.ms(t)), Some(TTL_MS));

    // A view change that does not name it answers nothing.
    assert!(rig.view_changed(500, &nodes()).transmits.is_empty());
    assert_eq!(rig.server.deferred(), 1);

    // The coordinator numbered it: the OFFER goes out now, for the xid the
    // client is waiting on.
    let step = rig.view_changed(800, &numbered(STRANGER));
    let offer = step.reply();
    assert_eq!(offer.msg.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.msg.xid(), 0x77);
    assert_eq!(offer.msg.yiaddr(), Ipv4Addr::new(10, 0, 0, 40));
    assert!(step.has(|e| matches!(e, Event::Replied { mac, message_type: Some(MessageType::Offer), provisional: false } if mac == &STRANGER)));
    assert_eq!(rig.server.deferred(), 0);
    // Answered once only.
    assert!(
        rig.view_changed(900, &numbered(STRANGER))
            .transmits
            .is_empty()
    );
}

#[test]
fn a_deferred_request_expires_before_the_client_retransmits() {
    let mut rig = Rig::new(settings());
    rig.send(
        0,
        CLIENT,
        &ipxe_bios(STRANGER, 1, DISCOVER).bytes(),
        &nodes(),
    );
    // Not yet due.
    let step = rig.timeout(TTL_MS - 1);
    assert!(step.events.is_empty());
    assert_eq!(rig.server.deferred(), 1);
    // Due: forgotten, with an event; nothing left to wait for.
    let step = rig.timeout(TTL_MS);
    assert!(step.has(|e| matches!(e, Event::DeferralExpired { mac } if mac == &STRANGER)));
    assert_eq!(rig.server.deferred(), 0);
    assert_eq!(rig.server.poll_timeout(), None);
    // Numbered after expiry: the stale xid is not answered (the client's
    // retransmission will be).
    assert!(
        rig.view_changed(TTL_MS + 500, &numbered(STRANGER))
            .transmits
            .is_empty()
    );
    let again = rig.send(
        4_000,
        CLIENT,
        &ipxe_bios(STRANGER, 2, DISCOVER).bytes(),
        &numbered(STRANGER),
    );
    assert_eq!(again.reply().msg.xid(), 2);
}

#[test]
fn a_retransmission_replaces_the_deferred_request_and_its_deadline() {
    let mut rig = Rig::new(settings());
    rig.send(
        0,
        CLIENT,
        &ipxe_bios(STRANGER, 1, DISCOVER).bytes(),
        &nodes(),
    );
    rig.send(
        2_000,
        CLIENT,
        &ipxe_bios(STRANGER, 2, DISCOVER).bytes(),
        &nodes(),
    );
    assert_eq!(rig.server.deferred(), 1);
    // The first deadline passes; the second request is still held.
    let step = rig.timeout(TTL_MS);
    assert!(!step.has(|e| matches!(e, Event::DeferralExpired { .. })));
    assert_eq!(rig.server.deferred(), 1);
    assert_eq!(
        rig.server.poll_timeout().map(|t| rig.ms(t)),
        Some(2_000 + TTL_MS)
    );
    let offer = rig.view_changed(2_500, &numbered(STRANGER)).reply();
    assert_eq!(offer.msg.xid(), 2, "the latest request is answered");
}

#[test]
fn a_machine_is_reported_once_per_cooldown() {
    let mut rig = Rig::new(settings());
    let d = |xid| ipxe_bios(STRANGER, xid, DISCOVER).bytes();
    assert_eq!(rig.send(0, CLIENT, &d(1), &nodes()).reports().len(), 1);
    assert!(
        rig.send(1_000, CLIENT, &d(2), &nodes())
            .reports()
            .is_empty()
    );
    assert!(
        rig.send(COOLDOWN_MS - 1, CLIENT, &d(3), &nodes())
            .reports()
            .is_empty()
    );
    let r = rig.send(COOLDOWN_MS, CLIENT, &d(4), &nodes()).reports();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].mac, STRANGER);
    assert!(!r[0].hold);
    // Another machine has its own cooldown.
    let other = Mac([2, 0, 0, 0, 0, 9]);
    assert_eq!(
        rig.send(
            COOLDOWN_MS,
            CLIENT,
            &ipxe_bios(other, 1, DISCOVER).bytes(),
            &nodes()
        )
        .reports()
        .len(),
        1
    );
}

#[test]
fn a_refused_report_is_retried_at_the_next_request() {
    let mut rig = Rig::new(settings());
    let d = |xid| ipxe_bios(STRANGER, xid, DISCOVER).bytes();
    assert_eq!(rig.send(0, CLIENT, &d(1), &nodes()).reports().len(), 1);
    // The shell's queue to the coordinator was full.
    rig.server.handle_report_refused(STRANGER);
    assert_eq!(rig.send(500, CLIENT, &d(2), &nodes()).reports().len(), 1);
}

#[test]
fn an_offer_hold_and_a_provisional_lease_expire_on_the_clock() {
    // One address, 60 s leases; an unanswered OFFER holds it for 15 s.
    let mut rig = Rig::new(with_pool(1, 60));
    let dir = nodes();
    let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
    let addr = rig
        .send(0, CLIENT, &udhcpc(a, 1, DISCOVER, "x").bytes(), &dir)
        .reply()
        .msg
        .yiaddr();
    assert_eq!(rig.server.provisional_in_use(rig.at(0)), Some(1));
    assert_eq!(
        rig.send(14_000, CLIENT, &udhcpc(b, 1, DISCOVER, "x").bytes(), &dir)
            .dropped(),
        Some(DropReason::ProvisionalPoolFull(b))
    );
    // a never sent its REQUEST: the hold runs out, b gets the address.
    let offer = rig
        .send(16_000, CLIENT, &udhcpc(b, 2, DISCOVER, "x").bytes(), &dir)
        .reply();
    assert_eq!(offer.msg.yiaddr(), addr);
    let ack = rig
        .send(
            17_000,
            CLIENT,
            &udhcpc(b, 2, REQUEST, "x").opt(50, addr.octets()).bytes(),
            &dir,
        )
        .reply();
    assert_eq!(ack.msg.opts().msg_type(), Some(MessageType::Ack));
    // b's lease holds for 60 s from its ACK.
    assert_eq!(
        rig.send(76_000, CLIENT, &udhcpc(a, 3, DISCOVER, "x").bytes(), &dir)
            .dropped(),
        Some(DropReason::ProvisionalPoolFull(a))
    );
    assert_eq!(rig.server.provisional_in_use(rig.at(76_000)), Some(1));
    assert_eq!(rig.server.provisional_in_use(rig.at(78_000)), Some(0));
    let offer = rig
        .send(78_000, CLIENT, &udhcpc(a, 4, DISCOVER, "x").bytes(), &dir)
        .reply();
    assert_eq!(offer.msg.yiaddr(), addr);
}

#[test]
fn the_front_door_drops_strangers_spoofed_relays_and_floods() {
    let mut rig = Rig::new(settings());
    let dir = nodes();
    let d = ipxe_bios(NODE_MAC, 1, DISCOVER);
    let off_rack: SocketAddr = "192.0.2.5:68".parse().unwrap();
    assert_eq!(
        rig.send(0, off_rack, &d.bytes(), &dir).dropped(),
        Some(DropReason::SourceNotAllowed(off_rack.ip()))
    );
    let relay_src: SocketAddr = "10.0.0.254:67".parse().unwrap();
    let mut spoofed = d.clone();
    spoofed.giaddr = Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(
        rig.send(0, relay_src, &spoofed.bytes(), &dir).dropped(),
        Some(DropReason::RelayNotAllowed(Ipv4Addr::new(192, 0, 2, 1)))
    );
    // A relay on the rack is answered at its server port.
    let mut relayed = d.clone();
    relayed.giaddr = Ipv4Addr::new(10, 0, 0, 254);
    let step = rig.send(0, relay_src, &relayed.bytes(), &dir);
    assert_eq!(step.transmits[0].dest, relay_src);
    // Garbage from an allowed source is malformed, not a crash.
    assert!(matches!(
        rig.send(0, CLIENT, &[1, 2, 3], &dir).dropped(),
        Some(DropReason::Malformed(_))
    ));

    // A MAC gets a burst of 20, then 10 per second.
    let mut rig = Rig::new(settings());
    let bytes = d.bytes();
    let answered = (0..30)
        .filter(|_| rig.send(1_000, CLIENT, &bytes, &dir).transmits.len() == 1)
        .count();
    assert_eq!(answered, 20);
    assert_eq!(
        rig.send(1_000, CLIENT, &bytes, &dir).dropped(),
        Some(DropReason::RateLimited(NODE_MAC))
    );
    let answered = (0..30)
        .filter(|_| rig.send(2_000, CLIENT, &bytes, &dir).transmits.len() == 1)
        .count();
    assert_eq!(answered, 10, "one second refills ten tokens");
}

#[test]
fn deferred_requests_are_bounded() {
    let mut rig = Rig::new(settings());
    let dir = nodes();
    let n = DEFER_MAX + 100;
    for i in 0..n {
        let b = (i as u32).to_be_bytes();
        let mac = Mac([2, 0xee, b[0], b[1], b[2], b[3]]);
        rig.send(0, CLIENT, &udhcpc(mac, 1, DISCOVER, "x").bytes(), &dir);
    }
    assert_eq!(rig.server.deferred(), DEFER_MAX);
    // Once they expire, newcomers are held again.
    rig.timeout(TTL_MS);
    assert_eq!(rig.server.deferred(), 0);
    rig.send(
        TTL_MS,
        CLIENT,
        &udhcpc(STRANGER, 1, DISCOVER, "x").bytes(),
        &dir,
    );
    assert_eq!(rig.server.deferred(), 1);
}

#[test]
fn proxy_roles_report_unknown_machines_but_hold_nothing() {
    for role in [Role::ProxyDhcp, Role::ProxyBoot] {
        let mut rig = Rig::new(Settings {
            role,
            // A pool is meaningless beside a site DHCP server.
            ..with_pool(4, 60)
        });
        let msg = if role == Role::ProxyDhcp {
            DISCOVER
        } else {
            REQUEST
        };
        let step = rig.send(0, CLIENT, &ipxe_bios(STRANGER, 1, msg).bytes(), &nodes());
        assert!(step.transmits.is_empty(), "{role:?}");
        assert!(step.has(|e| matches!(e, Event::Unknown { .. })), "{role:?}");
        assert_eq!(rig.server.deferred(), 0, "{role:?}");
        assert_eq!(rig.server.provisional_in_use(rig.at(0)), None);
    }
    // The boot server port answers where the request came from.
    let mut rig = Rig::new(Settings {
        role: Role::ProxyBoot,
        ..settings()
    });
    let src: SocketAddr = "10.0.0.23:4011".parse().unwrap();
    let step = rig.send(0, src, &ipxe_bios(NODE_MAC, 1, REQUEST).bytes(), &nodes());
    assert_eq!(step.transmits[0].dest, src);
}

#[test]
fn a_flood_of_random_macs_never_costs_a_known_node_its_answer() {
    // 100,000 DISCOVERs from random MACs in one virtual second, with one of
    // 50 known nodes doing its DORA every 20 ms among them: every one of
    // their requests is answered, and every table stays within its bound.
    let mut rig = Rig::new(settings());
    let mut dir = nodes();
    let known: Vec<(Mac, Ipv4Addr)> = (0..50u8)
        .map(|k| {
            (
                Mac([0x52, 0x54, 0x00, 0x10, 0x00, k]),
                Ipv4Addr::new(10, 0, 0, 100 + k),
            )
        })
        .collect();
    for (k, (mac, addr)) in known.iter().enumerate() {
        dir.insert(
            *mac,
            NodeBinding {
                number: 100 + k as u32,
                addr: *addr,
                hostname: format!("n{}", 100 + k),
            },
        );
    }
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut known_sent, mut known_answered, mut reports) = (0, 0, 0);
    for i in 0..100_000u64 {
        let ms = i / 100;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let b = rng.to_be_bytes();
        let mac = Mac([0x02, b[1], b[2], b[3], b[4], b[5]]);
        let step = rig.send(ms, CLIENT, &udhcpc(mac, 1, DISCOVER, "x").bytes(), &dir);
        reports += step.reports().len();
        if i % 2_000 == 0 {
            let (mac, addr) = known[(i / 2_000) as usize % known.len()];
            let xid = i as u32;
            let offer = rig.send(ms, CLIENT, &ipxe_bios(mac, xid, DISCOVER).bytes(), &dir);
            let ack = rig.send(
                ms,
                CLIENT,
                &ipxe_bios(mac, xid, REQUEST).opt(50, addr.octets()).bytes(),
                &dir,
            );
            known_sent += 2;
            known_answered += offer.transmits.len() + ack.transmits.len();
            assert_eq!(ack.reply().msg.yiaddr(), addr);
        }
    }
    assert_eq!(known_answered, known_sent, "a known node was refused");
    assert!(rig.server.deferred() <= DEFER_MAX);
    assert!(
        reports <= rackboot_dhcp_core::server::REPORT_TABLE,
        "{reports} reports within one cooldown"
    );
}
