//! proxyDHCP golden exchanges: boot information only, no address.

use dhcproto::v4::{MessageType, OptionCode};
use rackboot_dhcp_core::{Decision, DropReason, ProxyPort, ReplyDest, handle_proxy};

use crate::support::*;

#[test]
fn edk2_discover_on_67_gets_a_proxy_offer_without_address() {
    let req = edk2(NODE_MAC, 0x0bad_cafe, DISCOVER);
    let r = reply(handle_proxy(
        &config(),
        &nodes(),
        &req.bytes(),
        ProxyPort::Dhcp,
    ));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Offer));
    assert!(
        r.msg.yiaddr().is_unspecified(),
        "the site server owns addresses"
    );
    assert_eq!(r.msg.siaddr(), SERVER);
    assert_eq!(
        r.text(OptionCode::BootfileName).as_deref(),
        Some("ipxe.efi")
    );
    assert_eq!(
        r.text(OptionCode::ClassIdentifier).as_deref(),
        Some("PXEClient")
    );
    assert_eq!(
        r.opt(OptionCode::VendorExtensions),
        Some(&dhcproto::v4::DhcpOption::VendorExtensions(vec![
            6, 1, 8, 255
        ])),
        "skip boot server discovery"
    );
    match r.opt(OptionCode::ClientMachineIdentifier) {
        Some(dhcproto::v4::DhcpOption::ClientMachineIdentifier(v)) => {
            assert_eq!(v.len(), 17, "type 0 + 16-byte UUID echoed");
            assert_eq!(v[0], 0);
        }
        other => panic!("UUID not echoed: {other:?}"),
    }
    assert!(
        !r.has(OptionCode::SubnetMask)
            && !r.has(OptionCode::AddressLeaseTime)
            && !r.has(OptionCode::Router)
    );
    assert_eq!(r.dest, ReplyDest::Broadcast);
}

#[test]
fn request_on_4011_gets_a_proxy_ack_to_the_client() {
    let client = std::net::Ipv4Addr::new(192, 168, 7, 40);
    let mut req = ipxe_bios(NODE_MAC, 9, REQUEST);
    req.ciaddr = client;
    let r = reply(handle_proxy(
        &config(),
        &nodes(),
        &req.bytes(),
        ProxyPort::BootServer,
    ));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Ack));
    assert!(r.msg.yiaddr().is_unspecified());
    assert_eq!(r.msg.ciaddr(), client);
    assert_eq!(r.text(OptionCode::BootfileName).as_deref(), Some(SCRIPT));
    assert_eq!(r.dest, ReplyDest::Unicast(client));
}

#[test]
fn proxy_ignores_what_the_site_server_answers() {
    // Plain OS client: not PXE.
    let req = udhcpc(NODE_MAC, 1, DISCOVER, "udhcp 1.35.0");
    assert_eq!(
        handle_proxy(&config(), &nodes(), &req.bytes(), ProxyPort::Dhcp),
        Decision::Drop(DropReason::NotPxe)
    );
    // A REQUEST on 67 is for the site server.
    let req = edk2(NODE_MAC, 2, REQUEST)
        .opt(54, SERVER.octets())
        .opt(50, NODE_ADDR.octets());
    assert!(matches!(
        handle_proxy(&config(), &nodes(), &req.bytes(), ProxyPort::Dhcp),
        Decision::Drop(DropReason::UnsupportedMessageType(3))
    ));
    // Unknown PXE machine: reported, not answered.
    let req = edk2(STRANGER, 3, DISCOVER);
    assert!(matches!(
        handle_proxy(&config(), &nodes(), &req.bytes(), ProxyPort::Dhcp),
        Decision::UnknownClient { .. }
    ));
}
