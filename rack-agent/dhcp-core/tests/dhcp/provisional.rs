//! Provisional leases and the probe report: an unknown machine gets a short
//! lease from the pool, its probe reports every MAC, and once numbered the
//! machine moves to its permanent address (its provisional REQUEST is
//! NAKed, its DISCOVER offered the node address).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use rackboot_dhcp_core::probe::{OPTION_INVENTORY, OPTION_MACS, OPTION_TOKEN};
use rackboot_dhcp_core::{
    AcceptPolicy, DropReason, Event, Mac, NodeBinding, ProbeRefusal, ProbeReport, Report,
};

use crate::rig::{CLIENT, Rig, probe_key, with_pool};
use crate::support::*;

const FIRST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const SECOND_NIC: Mac = Mac([0x52, 0x54, 0x00, 0x99, 0x99, 0x9a]);

#[test]
fn unknown_machine_gets_a_short_provisional_lease_with_boot_options() {
    let (dir, mut rig) = (nodes(), Rig::new(with_pool(4, 120)));
    let step = rig.send(0, CLIENT, &ipxe_bios(STRANGER, 1, DISCOVER).bytes(), &dir);
    assert!(
        step.has(
            |e| matches!(e, Event::Replied { mac, provisional: true, .. } if mac == &STRANGER)
        )
    );
    assert!(
        step.reports().is_empty(),
        "the probe policy waits for the probe"
    );
    let offer = step.reply();
    assert_eq!(offer.msg.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.msg.yiaddr(), FIRST);
    assert_eq!(
        offer.opt(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(120))
    );
    assert!(!offer.has(OptionCode::Hostname), "no name before a number");
    assert!(
        offer.file_field().is_some(),
        "a provisional machine still PXE boots"
    );

    let req = ipxe_bios(STRANGER, 2, REQUEST)
        .opt(54, SERVER.octets())
        .opt(50, FIRST.octets());
    let ack = rig.send(1_000, CLIENT, &req.bytes(), &dir).reply();
    assert_eq!(ack.msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.msg.yiaddr(), FIRST);
    // Another machine asking for the same address is refused.
    let thief = Mac([0x52, 0x54, 0x00, 0x77, 0x77, 0x77]);
    let steal = ipxe_bios(thief, 3, REQUEST).opt(50, FIRST.octets());
    let nak = rig.send(2_000, CLIENT, &steal.bytes(), &dir).reply();
    assert_eq!(nak.msg.opts().msg_type(), Some(MessageType::Nak));
    assert!(
        nak.text(OptionCode::Message)
            .unwrap()
            .contains("provisional")
    );
}

#[test]
fn known_nodes_are_answered_as_without_a_pool() {
    let (cfg, dir, mut rig) = (config(), nodes(), Rig::new(with_pool(4, 120)));
    let req = ipxe_bios(NODE_MAC, 9, DISCOVER).bytes();
    let step = rig.send(0, CLIENT, &req, &dir);
    assert!(step.has(|e| matches!(
        e,
        Event::Replied {
            provisional: false,
            ..
        }
    )));
    assert_eq!(
        step.reply().bytes,
        reply(rackboot_dhcp_core::handle(&cfg, &dir, &req)).bytes
    );
    assert_eq!(rig.server.provisional_in_use(rig.at(0)), Some(0));
}

#[test]
fn exhausted_pool_drops_with_a_reason_and_bootp_gets_no_provisional_lease() {
    let (dir, mut rig) = (nodes(), Rig::new(with_pool(1, 120)));
    let a = Mac([2, 0, 0, 0, 0, 1]);
    let b = Mac([2, 0, 0, 0, 0, 2]);
    assert_eq!(
        rig.send(0, CLIENT, &udhcpc(a, 1, DISCOVER, "x").bytes(), &dir)
            .transmits
            .len(),
        1
    );
    let full = rig.send(0, CLIENT, &udhcpc(b, 1, DISCOVER, "x").bytes(), &dir);
    assert!(full.transmits.is_empty());
    assert_eq!(full.dropped(), Some(DropReason::ProvisionalPoolFull(b)));
    let bootp = udhcpc(b, 1, DISCOVER, "x").without(53);
    assert_eq!(
        rig.send(0, CLIENT, &bootp.bytes(), &dir).dropped(),
        Some(DropReason::ProvisionalBootp(b))
    );
}

#[test]
fn probe_inform_reports_every_mac_then_the_machine_moves_to_its_number() {
    let mut rig = Rig::new(with_pool(4, 120));
    let mut dir: HashMap<Mac, NodeBinding> = nodes();
    let offer = rig
        .send(0, CLIENT, &udhcpc(STRANGER, 1, DISCOVER, "x").bytes(), &dir)
        .reply();
    let addr = offer.msg.yiaddr();
    let req = udhcpc(STRANGER, 1, REQUEST, "x").opt(50, addr.octets());
    assert_eq!(rig.send(0, CLIENT, &req.bytes(), &dir).transmits.len(), 1);

    // The probe: INFORM from the provisional address with both MACs and
    // the token its discovery script carried.
    let mut inform = udhcpc(STRANGER, 2, INFORM, "x")
        .opt(
            OPTION_MACS,
            ProbeReport::encode_macs(&[SECOND_NIC, STRANGER]),
        )
        .opt(OPTION_INVENTORY, b"cpus=2\nmem_mib=512\n")
        .opt(OPTION_TOKEN, probe_key().token(STRANGER, addr).as_bytes());
    inform.ciaddr = addr;
    let from = std::net::SocketAddr::from((addr, 68));
    let step = rig.send(0, from, &inform.bytes(), &dir);
    assert!(step.has(|e| matches!(e, Event::Probe { macs: 2, .. })));
    assert_eq!(
        step.reports(),
        vec![Report {
            mac: STRANGER,
            macs: vec![STRANGER, SECOND_NIC],
            uuid: None,
            inventory: vec![
                ("cpus".into(), "2".into()),
                ("mem_mib".into(), "512".into())
            ],
            hold: false,
        }]
    );
    let ack = step.reply();
    assert_eq!(ack.msg.opts().msg_type(), Some(MessageType::Ack));
    assert!(!ack.has(OptionCode::Hostname), "not numbered yet");

    // The coordinator numbers it: node 7 at .30.
    let permanent = Ipv4Addr::new(10, 0, 0, 30);
    for m in [STRANGER, SECOND_NIC] {
        dir.insert(
            m,
            NodeBinding {
                number: 7,
                addr: permanent,
                hostname: "n7".into(),
            },
        );
    }
    // The probe's next INFORM learns its name, and is no longer reported.
    let step = rig.send(1_000, from, &inform.bytes(), &dir);
    assert!(step.reports().is_empty(), "every MAC is known now");
    assert_eq!(
        step.reply().text(OptionCode::Hostname).as_deref(),
        Some("n7")
    );
    // Renewing the provisional address: NAK; a fresh DISCOVER: the number's address.
    let renew = udhcpc(STRANGER, 3, REQUEST, "x").opt(50, addr.octets());
    let nak = rig.send(2_000, CLIENT, &renew.bytes(), &dir).reply();
    assert_eq!(nak.msg.opts().msg_type(), Some(MessageType::Nak));
    let offer = rig
        .send(
            3_000,
            CLIENT,
            &udhcpc(STRANGER, 4, DISCOVER, "x").bytes(),
            &dir,
        )
        .reply();
    assert_eq!(offer.msg.yiaddr(), permanent);
    // The provisional address stays reserved until its lease runs out.
    let other = Mac([2, 0, 0, 0, 0, 5]);
    for i in 0..3u8 {
        let m = Mac([2, 0, 0, 0, 1, i]);
        let o = rig
            .send(4_000, CLIENT, &udhcpc(m, 5, DISCOVER, "x").bytes(), &dir)
            .reply();
        assert_ne!(o.msg.yiaddr(), addr);
    }
    assert_eq!(
        rig.send(
            4_000,
            CLIENT,
            &udhcpc(other, 5, DISCOVER, "x").bytes(),
            &dir
        )
        .dropped(),
        Some(DropReason::ProvisionalPoolFull(other))
    );
}

/// A provisional lease for `mac` (DISCOVER, REQUEST): its address.
fn lease(rig: &mut Rig, dir: &HashMap<Mac, NodeBinding>, mac: Mac) -> Ipv4Addr {
    let offer = rig
        .send(0, CLIENT, &udhcpc(mac, 1, DISCOVER, "x").bytes(), dir)
        .reply();
    let addr = offer.msg.yiaddr();
    let req = udhcpc(mac, 1, REQUEST, "x").opt(50, addr.octets());
    assert_eq!(
        rig.send(0, CLIENT, &req.bytes(), dir)
            .reply()
            .msg
            .opts()
            .msg_type(),
        Some(MessageType::Ack)
    );
    addr
}

/// A probe INFORM of `macs` (the first asks) from `addr`, with `token`.
fn report_from(macs: &[Mac], addr: Ipv4Addr, token: Option<&[u8]>) -> Req {
    let mut p = udhcpc(macs[0], 9, INFORM, "x").opt(OPTION_MACS, ProbeReport::encode_macs(macs));
    if let Some(t) = token {
        p = p.opt(OPTION_TOKEN, t);
    }
    p.ciaddr = addr;
    p
}

#[test]
fn manual_policy_holds_probe_reports() {
    let settings = rackboot_dhcp_core::Settings {
        accept: AcceptPolicy::Manual,
        ..with_pool(4, 120)
    };
    let (dir, mut rig) = (nodes(), Rig::new(settings));
    let addr = lease(&mut rig, &dir, STRANGER);
    let token = probe_key().token(STRANGER, addr);
    let probe = report_from(&[STRANGER, SECOND_NIC], addr, Some(token.as_bytes()));
    let from = std::net::SocketAddr::from((addr, 68));
    let reports = rig.send(0, from, &probe.bytes(), &dir).reports();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].hold, "manual: held for an operator");
    // A plain DISCOVER of a stranger is not reported under manual or probe.
    let step = rig.send(
        0,
        CLIENT,
        &udhcpc(Mac([2, 0, 0, 0, 9, 9]), 1, DISCOVER, "x").bytes(),
        &dir,
    );
    assert!(step.reports().is_empty());
}

#[test]
fn forged_probe_reports_are_refused_and_counted() {
    let (mut rig, dir) = (Rig::new(with_pool(8, 120)), nodes());
    let addr = lease(&mut rig, &dir, STRANGER);
    let from = std::net::SocketAddr::from((addr, 68));
    let good = probe_key().token(STRANGER, addr);
    let known = *dir.keys().next().expect("the directory has a node");
    let forger = Mac([2, 0, 0, 0, 0x66, 1]);
    let forger_addr = lease(&mut rig, &dir, forger);
    let other_key = rackboot_dhcp_core::ProbeKey::new([1; 32]).token(STRANGER, addr);
    let cases: Vec<(&str, std::net::SocketAddr, Req, ProbeRefusal)> = vec![
        (
            "no token",
            from,
            report_from(&[STRANGER, SECOND_NIC], addr, None),
            ProbeRefusal::NoToken,
        ),
        (
            "token under another key",
            from,
            report_from(&[STRANGER, SECOND_NIC], addr, Some(other_key.as_bytes())),
            ProbeRefusal::BadToken,
        ),
        (
            "truncated token",
            from,
            report_from(&[STRANGER, SECOND_NIC], addr, Some(&good.as_bytes()[..16])),
            ProbeRefusal::BadToken,
        ),
        (
            "right token, sent from another address",
            std::net::SocketAddr::from((forger_addr, 68)),
            report_from(&[STRANGER, SECOND_NIC], addr, Some(good.as_bytes())),
            ProbeRefusal::NotFromItsAddress,
        ),
        (
            "no ciaddr",
            CLIENT,
            report_from(
                &[STRANGER, SECOND_NIC],
                Ipv4Addr::UNSPECIFIED,
                Some(good.as_bytes()),
            ),
            ProbeRefusal::NotFromItsAddress,
        ),
        (
            "a MAC without a provisional lease",
            from,
            report_from(
                &[SECOND_NIC, STRANGER],
                addr,
                Some(probe_key().token(SECOND_NIC, addr).as_bytes()),
            ),
            ProbeRefusal::NoLease,
        ),
        (
            "a forger's own token, with a known node's MAC asking",
            std::net::SocketAddr::from((forger_addr, 68)),
            report_from(
                &[known, forger],
                forger_addr,
                Some(probe_key().token(known, forger_addr).as_bytes()),
            ),
            ProbeRefusal::Spent,
        ),
    ];
    for (what, src, packet, reason) in cases {
        let step = rig.send(1_000, src, &packet.bytes(), &dir);
        assert!(step.reports().is_empty(), "{what}: must not be reported");
        assert!(
            step.has(|e| matches!(e, Event::ProbeRefused { reason: r, .. } if *r == reason)),
            "{what}: refused as {reason:?}, got {:?}",
            step.events
        );
    }
    // The genuine report is taken.
    let genuine = report_from(&[STRANGER, SECOND_NIC], addr, Some(good.as_bytes()));
    let reports = rig.send(2_000, from, &genuine.bytes(), &dir).reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].macs, vec![STRANGER, SECOND_NIC]);
}
