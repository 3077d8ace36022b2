//! Provisional leases and the probe report: an unknown machine gets a short
//! lease from the pool, its probe reports every MAC, and once numbered the
//! machine moves to its permanent address (its provisional REQUEST is
//! NAKed, its DISCOVER offered the node address).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use rackboot_dhcp_core::probe::{OPTION_INVENTORY, OPTION_MACS};
use rackboot_dhcp_core::{
    Decision, DropReason, Mac, NodeBinding, ProbeReport, ProvisionalPool, handle_with_pool,
};

use crate::support::*;

const FIRST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const SECOND_NIC: Mac = Mac([0x52, 0x54, 0x00, 0x99, 0x99, 0x9a]);

fn pool(size: u8) -> ProvisionalPool {
    ProvisionalPool::new(FIRST, Ipv4Addr::new(10, 0, 0, 199 + size), 120).unwrap()
}

#[test]
fn unknown_machine_gets_a_short_provisional_lease_with_boot_options() {
    let (cfg, dir, mut pool) = (config(), nodes(), pool(4));
    let h = handle_with_pool(
        &cfg,
        &dir,
        &mut pool,
        0,
        &ipxe_bios(STRANGER, 1, DISCOVER).bytes(),
    );
    assert!(h.unknown);
    assert_eq!(h.probe, None);
    let offer = reply(h.decision);
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
    let ack = reply(handle_with_pool(&cfg, &dir, &mut pool, 1, &req.bytes()).decision);
    assert_eq!(ack.msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.msg.yiaddr(), FIRST);
    // Another machine asking for the same address is refused.
    let thief = Mac([0x52, 0x54, 0x00, 0x77, 0x77, 0x77]);
    let steal = ipxe_bios(thief, 3, REQUEST).opt(50, FIRST.octets());
    let nak = reply(handle_with_pool(&cfg, &dir, &mut pool, 2, &steal.bytes()).decision);
    assert_eq!(nak.msg.opts().msg_type(), Some(MessageType::Nak));
    assert!(
        nak.text(OptionCode::Message)
            .unwrap()
            .contains("provisional")
    );
}

#[test]
fn known_nodes_are_answered_as_without_a_pool() {
    let (cfg, dir, mut pool) = (config(), nodes(), pool(4));
    let req = ipxe_bios(NODE_MAC, 9, DISCOVER).bytes();
    let h = handle_with_pool(&cfg, &dir, &mut pool, 0, &req);
    assert!(!h.unknown);
    assert_eq!(h.decision, rackboot_dhcp_core::handle(&cfg, &dir, &req));
    assert_eq!(pool.in_use(0), 0);
}

#[test]
fn exhausted_pool_drops_with_a_reason_and_bootp_gets_no_provisional_lease() {
    let (cfg, dir, mut pool) = (config(), nodes(), pool(1));
    let a = Mac([2, 0, 0, 0, 0, 1]);
    let b = Mac([2, 0, 0, 0, 0, 2]);
    assert!(matches!(
        handle_with_pool(
            &cfg,
            &dir,
            &mut pool,
            0,
            &udhcpc(a, 1, DISCOVER, "x").bytes()
        )
        .decision,
        Decision::Reply { .. }
    ));
    assert_eq!(
        handle_with_pool(
            &cfg,
            &dir,
            &mut pool,
            0,
            &udhcpc(b, 1, DISCOVER, "x").bytes()
        )
        .decision,
        Decision::Drop(DropReason::ProvisionalPoolFull(b))
    );
    let bootp = udhcpc(b, 1, DISCOVER, "x").without(53);
    assert_eq!(
        handle_with_pool(&cfg, &dir, &mut pool, 0, &bootp.bytes()).decision,
        Decision::Drop(DropReason::ProvisionalBootp(b))
    );
}

#[test]
fn probe_inform_reports_every_mac_then_the_machine_moves_to_its_number() {
    let (cfg, mut pool) = (config(), pool(4));
    let mut dir: HashMap<Mac, NodeBinding> = nodes();
    let now = 0;
    let offer = reply(
        handle_with_pool(
            &cfg,
            &dir,
            &mut pool,
            now,
            &udhcpc(STRANGER, 1, DISCOVER, "x").bytes(),
        )
        .decision,
    );
    let addr = offer.msg.yiaddr();
    let req = udhcpc(STRANGER, 1, REQUEST, "x").opt(50, addr.octets());
    assert!(matches!(
        handle_with_pool(&cfg, &dir, &mut pool, now, &req.bytes()).decision,
        Decision::Reply { .. }
    ));

    // The probe: INFORM from the provisional address with both MACs.
    let mut inform = udhcpc(STRANGER, 2, INFORM, "x")
        .opt(
            OPTION_MACS,
            ProbeReport::encode_macs(&[SECOND_NIC, STRANGER]),
        )
        .opt(OPTION_INVENTORY, b"cpus=2\nmem_mib=512\n");
    inform.ciaddr = addr;
    let h = handle_with_pool(&cfg, &dir, &mut pool, now, &inform.bytes());
    assert!(h.unknown);
    assert_eq!(
        h.probe,
        Some(ProbeReport {
            macs: vec![STRANGER, SECOND_NIC],
            inventory: vec![
                ("cpus".into(), "2".into()),
                ("mem_mib".into(), "512".into())
            ],
        })
    );
    let ack = reply(h.decision);
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
    // The probe's next INFORM learns its name.
    let ack = reply(handle_with_pool(&cfg, &dir, &mut pool, now + 1, &inform.bytes()).decision);
    assert_eq!(ack.text(OptionCode::Hostname).as_deref(), Some("n7"));
    // Renewing the provisional address: NAK; a fresh DISCOVER: the number's address.
    let renew = udhcpc(STRANGER, 3, REQUEST, "x").opt(50, addr.octets());
    let nak = reply(handle_with_pool(&cfg, &dir, &mut pool, now + 2, &renew.bytes()).decision);
    assert_eq!(nak.msg.opts().msg_type(), Some(MessageType::Nak));
    let offer = reply(
        handle_with_pool(
            &cfg,
            &dir,
            &mut pool,
            now + 3,
            &udhcpc(STRANGER, 4, DISCOVER, "x").bytes(),
        )
        .decision,
    );
    assert_eq!(offer.msg.yiaddr(), permanent);
    // The provisional address stays reserved until its lease runs out.
    let other = Mac([2, 0, 0, 0, 0, 5]);
    for i in 0..3u8 {
        let m = Mac([2, 0, 0, 0, 1, i]);
        let o = reply(
            handle_with_pool(
                &cfg,
                &dir,
                &mut pool,
                now + 4,
                &udhcpc(m, 5, DISCOVER, "x").bytes(),
            )
            .decision,
        );
        assert_ne!(o.msg.yiaddr(), addr);
    }
    assert_eq!(
        handle_with_pool(
            &cfg,
            &dir,
            &mut pool,
            now + 4,
            &udhcpc(other, 5, DISCOVER, "x").bytes()
        )
        .decision,
        Decision::Drop(DropReason::ProvisionalPoolFull(other))
    );
}
