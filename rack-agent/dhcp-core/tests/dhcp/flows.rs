//! Exchanges: retransmissions, the REQUEST states, INFORM, relays, BOOTP,
//! unknown clients, size limits.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use rackboot_dhcp_core::{Arch, Decision, DropReason, ReplyDest, handle};

use crate::support::*;

#[test]
fn retransmitted_discover_gets_identical_answer() {
    let req = ipxe_bios(NODE_MAC, 0xabcd, DISCOVER).bytes();
    let (cfg, dir) = (config(), nodes());
    let first = handle(&cfg, &dir, &req);
    let again = handle(&cfg, &dir, &req);
    assert_eq!(first, again);
    assert!(matches!(first, Decision::Reply { .. }));
}

#[test]
fn discover_asking_for_a_stale_address_is_offered_its_own() {
    let req = udhcpc(NODE_MAC, 7, DISCOVER, "x").opt(50, [10, 0, 0, 99]);
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(r.msg.yiaddr(), NODE_ADDR);
}

#[test]
fn selecting_request_for_another_server_is_not_for_us() {
    let other = Ipv4Addr::new(10, 0, 0, 2);
    let req = ipxe_bios(NODE_MAC, 1, REQUEST)
        .opt(54, other.octets())
        .opt(50, NODE_ADDR.octets());
    assert_eq!(
        handle(&config(), &nodes(), &req.bytes()),
        Decision::Drop(DropReason::NotForUs { server_id: other })
    );
}

#[test]
fn request_for_wrong_address_is_nakked_by_broadcast() {
    let req = ipxe_bios(NODE_MAC, 1, REQUEST)
        .opt(54, SERVER.octets())
        .opt(50, [10, 0, 0, 99]);
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(r.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.msg.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.file_field(), None);
    assert_eq!(r.dest, ReplyDest::Broadcast);
    assert!(r.has(OptionCode::ServerIdentifier));
    assert!(r.has(OptionCode::Message));
    assert!(!r.has(OptionCode::AddressLeaseTime));
    assert!(!r.has(OptionCode::BootfileName));
}

#[test]
fn init_reboot_request_is_acked() {
    // INIT-REBOOT: option 50, no server id.
    let req = udhcpc(NODE_MAC, 2, REQUEST, "udhcp 1.36.1").opt(50, NODE_ADDR.octets());
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.msg.yiaddr(), NODE_ADDR);
    assert_eq!(r.dest, ReplyDest::Broadcast);
}

#[test]
fn renewing_request_is_acked_by_unicast() {
    let mut req = udhcpc(NODE_MAC, 3, REQUEST, "udhcp 1.36.1");
    req.ciaddr = NODE_ADDR;
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.msg.yiaddr(), NODE_ADDR);
    assert_eq!(r.msg.ciaddr(), NODE_ADDR);
    assert_eq!(r.dest, ReplyDest::Unicast(NODE_ADDR));
}

#[test]
fn renewing_from_a_stale_address_is_nakked_by_broadcast() {
    let mut req = udhcpc(NODE_MAC, 3, REQUEST, "udhcp 1.36.1");
    req.ciaddr = Ipv4Addr::new(10, 0, 0, 200);
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(r.dest, ReplyDest::Broadcast);
}

#[test]
fn request_without_any_address_is_dropped() {
    let req = udhcpc(NODE_MAC, 3, REQUEST, "udhcp 1.36.1");
    assert_eq!(
        handle(&config(), &nodes(), &req.bytes()),
        Decision::Drop(DropReason::NoRequestedAddress)
    );
}

#[test]
fn inform_gets_config_without_address_or_lease() {
    let mut req = udhcpc(NODE_MAC, 4, INFORM, "udhcp 1.36.1");
    req.ciaddr = NODE_ADDR;
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.msg.ciaddr(), NODE_ADDR);
    assert!(!r.has(OptionCode::AddressLeaseTime));
    assert!(!r.has(OptionCode::Renewal));
    assert!(r.has(OptionCode::SubnetMask));
    assert_eq!(r.dest, ReplyDest::Unicast(NODE_ADDR));
}

#[test]
fn release_and_decline_are_dropped() {
    let mut rel = udhcpc(NODE_MAC, 5, RELEASE, "udhcp 1.36.1");
    rel.ciaddr = NODE_ADDR;
    assert_eq!(
        handle(&config(), &nodes(), &rel.bytes()),
        Decision::Drop(DropReason::Released(NODE_MAC))
    );
    let dec = udhcpc(NODE_MAC, 5, DECLINE, "udhcp 1.36.1").opt(50, NODE_ADDR.octets());
    assert_eq!(
        handle(&config(), &nodes(), &dec.bytes()),
        Decision::Drop(DropReason::Declined {
            mac: NODE_MAC,
            addr: Some(NODE_ADDR)
        })
    );
}

#[test]
fn server_message_types_are_unsupported() {
    for t in [2u8, 5, 6, 10, 200] {
        let req = udhcpc(NODE_MAC, 5, t, "x");
        assert_eq!(
            handle(&config(), &nodes(), &req.bytes()),
            Decision::Drop(DropReason::UnsupportedMessageType(t)),
            "type {t}"
        );
    }
}

#[test]
fn same_mac_after_kernel_boot_gets_same_address_without_boot_file() {
    let (cfg, dir) = (config(), nodes());
    let pxe = reply(handle(&cfg, &dir, &edk2(NODE_MAC, 1, DISCOVER).bytes()));
    // The OS: no PXE options and no client id at all.
    let os = Req::new(NODE_MAC, 2)
        .opt(53, [DISCOVER])
        .opt(55, [1, 3, 6, 15]);
    let os = reply(handle(&cfg, &dir, &os.bytes()));
    assert_eq!(pxe.msg.yiaddr(), os.msg.yiaddr());
    assert!(pxe.has(OptionCode::BootfileName));
    assert!(!os.has(OptionCode::BootfileName));
    assert!(!os.has(OptionCode::ClassIdentifier));
    assert!(!os.has(OptionCode::ClientIdentifier));
    // A different client id changes nothing: identity is the MAC.
    let other_id = udhcpc(NODE_MAC, 3, DISCOVER, "x").set(61, b"\x00some-duid");
    let other_id = reply(handle(&cfg, &dir, &other_id.bytes()));
    assert_eq!(other_id.msg.yiaddr(), NODE_ADDR);
}

#[test]
fn unknown_mac_is_reported_with_client_info() {
    let req = ipxe_bios(STRANGER, 9, DISCOVER)
        .opt(12, "localhost")
        .opt(50, [10, 0, 0, 77]);
    let Decision::UnknownClient { mac, info } = handle(&config(), &nodes(), &req.bytes()) else {
        panic!("expected UnknownClient");
    };
    assert_eq!(mac, STRANGER);
    assert_eq!(info.mac, STRANGER);
    assert_eq!(info.message_type, Some(MessageType::Discover));
    assert_eq!(info.arch, Some(Arch::X86Bios));
    assert_eq!(
        info.vendor_class.as_deref(),
        Some("PXEClient:Arch:00000:UNDI:002001")
    );
    assert_eq!(info.user_class, vec!["iPXE".to_owned()]);
    assert!(info.is_ipxe() && info.is_pxe() && !info.is_http_client());
    assert_eq!(info.uuid, Some(UUID));
    assert_eq!(info.client_id, Some(client_id(STRANGER)));
    assert_eq!(info.hostname.as_deref(), Some("localhost"));
    assert_eq!(info.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 77)));
    assert_eq!(info.max_message_size, Some(1472));
    assert_eq!(info.relay_agent, None);
}

#[test]
fn unknown_edk2_records_all_zero_uuid_and_no_client_id() {
    let Decision::UnknownClient { info, .. } =
        handle(&config(), &nodes(), &edk2(STRANGER, 1, DISCOVER).bytes())
    else {
        panic!("expected UnknownClient");
    };
    assert_eq!(info.uuid, Some([0; 16]));
    assert_eq!(info.client_id, None);
    assert_eq!(info.arch, Some(Arch::EfiX64));
    assert!(info.user_class.is_empty());
}

#[test]
fn unknown_client_request_and_bootp_are_reported_too() {
    let req = udhcpc(STRANGER, 1, REQUEST, "x").opt(50, [10, 0, 0, 5]);
    assert!(matches!(
        handle(&config(), &nodes(), &req.bytes()),
        Decision::UnknownClient { .. }
    ));
    let mut bootp = Req::new(STRANGER, 1);
    bootp.no_cookie = true;
    assert!(matches!(
        handle(&config(), &nodes(), &bootp.bytes()),
        Decision::UnknownClient { .. }
    ));
}

#[test]
fn relayed_discover_goes_to_relay_with_option_82_echoed() {
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    let agent_info = [1u8, 4, b'p', b'o', b'r', b't', 2, 3, b's', b'w', b'1'];
    let mut req = edk2(NODE_MAC, 1, DISCOVER).opt(82, agent_info);
    req.giaddr = relay;
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.dest, ReplyDest::Relay(relay));
    assert_eq!(r.msg.giaddr(), relay);
    // Option 82 is echoed byte for byte, last before End.
    let mut tail = vec![82u8, agent_info.len() as u8];
    tail.extend_from_slice(&agent_info);
    tail.push(255);
    let end = r.bytes.iter().rposition(|b| *b == 255).expect("end") + 1;
    assert!(r.bytes[..end].ends_with(&tail), "82 not echoed last");
    let Decision::UnknownClient { info, .. } = handle(&config(), &nodes(), &{
        let mut s = req.clone();
        s.chaddr[5] = 0x01;
        s.bytes()
    }) else {
        panic!("expected UnknownClient");
    };
    assert_eq!(info.relay_agent, Some(relay));
}

#[test]
fn relayed_nak_sets_broadcast_flag() {
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    let mut req = ipxe_bios(NODE_MAC, 1, REQUEST).opt(50, [10, 9, 0, 50]);
    req.giaddr = relay;
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(r.dest, ReplyDest::Relay(relay));
    assert!(r.msg.flags().broadcast());
}

#[test]
fn bootp_request_gets_bootreply() {
    let mut req = Req::new(NODE_MAC, 0x42);
    req.no_cookie = true;
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.bytes.len(), 300);
    assert_eq!(r.msg.opts().msg_type(), None);
    assert_eq!(r.msg.yiaddr(), NODE_ADDR);
    assert_eq!(r.msg.siaddr(), SERVER);
    assert_eq!(r.file_field().as_deref(), Some("undionly.kpxe"));
    assert!(r.has(OptionCode::SubnetMask));
    assert!(!r.has(OptionCode::ServerIdentifier));
    assert!(!r.has(OptionCode::AddressLeaseTime));
    assert_eq!(r.dest, ReplyDest::Broadcast);
    // With a cookie and vendor options but no 53 it is still BOOTP.
    let with_cookie = Req::new(NODE_MAC, 0x43).opt(93, [0, 7]);
    let r = reply(handle(&config(), &nodes(), &with_cookie.bytes()));
    assert_eq!(r.file_field().as_deref(), Some("ipxe.efi"));
    assert_eq!(r.bytes.len(), 300);
}

#[test]
fn oversize_reply_drops_dns_and_domain_first() {
    let mut cfg = config();
    cfg.dns = (1..=40).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
    cfg.domain = Some("d".repeat(120));
    // udhcpc: 576 → 548-byte budget: DNS (162 bytes) and domain must go.
    let small = reply(handle(
        &cfg,
        &nodes(),
        &udhcpc(NODE_MAC, 1, DISCOVER, "x").bytes(),
    ));
    assert!(small.bytes.len() <= 548, "{} bytes", small.bytes.len());
    assert!(!small.has(OptionCode::DomainNameServer));
    assert!(small.has(OptionCode::Hostname));
    // EDK2: 1472 → everything fits.
    let big = reply(handle(&cfg, &nodes(), &edk2(NODE_MAC, 1, DISCOVER).bytes()));
    assert!(big.has(OptionCode::DomainNameServer));
    assert!(big.has(OptionCode::DomainName));
    assert!(big.bytes.len() > 548);
}

#[test]
fn reply_that_cannot_fit_is_dropped() {
    let mut cfg = config();
    cfg.boot.bios = "x".repeat(300);
    let req = udhcpc(NODE_MAC, 1, DISCOVER, "PXEClient:Arch:00000:UNDI:002001");
    assert!(matches!(
        handle(&cfg, &nodes(), &req.bytes()),
        Decision::Drop(DropReason::ReplyTooLarge { limit: 548, .. })
    ));
    // A long name goes in option 67 only, not the 128-byte `file` field.
    cfg.boot.bios = "y".repeat(200);
    let r = reply(handle(
        &cfg,
        &nodes(),
        &edk2(NODE_MAC, 1, DISCOVER).set(93, [0, 0]).bytes(),
    ));
    assert_eq!(r.file_field(), None);
    assert_eq!(r.bytes_opt(OptionCode::BootfileName), Some(vec![b'y'; 200]));
}

#[test]
fn infinite_lease_has_no_t1_t2() {
    let mut cfg = config();
    cfg.lease_secs = u32::MAX;
    let r = reply(handle(&cfg, &nodes(), &edk2(NODE_MAC, 1, DISCOVER).bytes()));
    assert_eq!(
        r.opt(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(u32::MAX))
    );
    assert!(!r.has(OptionCode::Renewal));
    assert!(!r.has(OptionCode::Rebinding));
}
