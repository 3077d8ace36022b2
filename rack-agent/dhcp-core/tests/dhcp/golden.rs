//! Golden tests: DISCOVERs and REQUESTs exactly as real firmware sends them
//! (`/work/shared/reference/firmware-behaviour.md`, DHCP section).

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, MessageType, Opcode, OptionCode};
use rackboot_dhcp_core::{ReplyDest, handle};

use crate::support::*;

/// What every boot reply to a known node carries.
fn assert_boot_offer(r: &Reply, msg_type: MessageType, file: &str) {
    assert_eq!(r.msg.opcode(), Opcode::BootReply);
    assert_eq!(r.msg.opts().msg_type(), Some(msg_type));
    assert_eq!(r.msg.yiaddr(), NODE_ADDR);
    assert_eq!(r.msg.siaddr(), SERVER);
    assert_eq!(r.msg.chaddr(), &NODE_MAC.0);
    assert_eq!(r.msg.sname(), None, "sname stays unset");
    assert_eq!(
        r.opt(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        r.opt(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(r.opt(OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
    assert_eq!(
        r.opt(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    assert_eq!(
        r.opt(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        r.opt(OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 254)]))
    );
    assert_eq!(r.text(OptionCode::Hostname).as_deref(), Some("n23"));
    assert_eq!(
        r.text(OptionCode::TFTPServerName).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(r.text(OptionCode::BootfileName).as_deref(), Some(file));
    assert_eq!(r.file_field().as_deref(), Some(file));
    assert_eq!(
        r.text(OptionCode::ClassIdentifier).as_deref(),
        Some("PXEClient")
    );
}

#[test]
fn ipxe_bios_discover_gets_its_script() {
    let req = ipxe_bios(NODE_MAC, 0x1d2c_3b4a, DISCOVER);
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_boot_offer(&r, MessageType::Offer, SCRIPT);
    assert_eq!(r.msg.xid(), 0x1d2c_3b4a);
    // No broadcast flag, no ciaddr: broadcast (see ReplyDest docs).
    assert_eq!(r.dest, ReplyDest::Broadcast);
    assert!(!r.msg.flags().broadcast());
    // Client id echoed (RFC 6842); iPXE asked for 6, 7, 15: all present.
    assert_eq!(
        r.bytes_opt(OptionCode::ClientIdentifier),
        Some(client_id(NODE_MAC))
    );
    assert!(r.has(OptionCode::DomainNameServer));
    assert!(r.has(OptionCode::DomainName));
    assert_eq!(
        r.opt(OptionCode::LogServer),
        Some(&DhcpOption::LogServer(vec![SERVER]))
    );
    assert!(r.bytes.len() <= 1472 - 28);
}

#[test]
fn ipxe_bios_request_is_acked() {
    let req = ipxe_bios(NODE_MAC, 0x1d2c_3b4a, REQUEST)
        .opt(54, SERVER.octets())
        .opt(50, NODE_ADDR.octets());
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_boot_offer(&r, MessageType::Ack, SCRIPT);
    assert_eq!(r.dest, ReplyDest::Broadcast);
}

#[test]
fn edk2_discover_gets_uefi_ipxe_broadcast() {
    let req = edk2(NODE_MAC, 0x0bad_cafe, DISCOVER);
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_boot_offer(&r, MessageType::Offer, "ipxe.efi");
    assert_eq!(r.dest, ReplyDest::Broadcast);
    assert!(r.msg.flags().broadcast(), "broadcast flag copied");
    assert!(!r.has(OptionCode::ClientIdentifier), "EDK2 sent none");
    // Without option 43 EDK2 asks port 4011 for the file (PXE-E16).
    assert_eq!(
        r.opt(OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    // EDK2 asked for 6 and 15 but not 7.
    assert!(r.has(OptionCode::DomainNameServer));
    assert!(r.has(OptionCode::DomainName));
    assert!(!r.has(OptionCode::LogServer));
}

#[test]
fn edk2_request_with_large_max_size_is_acked() {
    let req = edk2(NODE_MAC, 0x0bad_cafe, REQUEST)
        .set(57, 65280u16.to_be_bytes())
        .opt(54, SERVER.octets())
        .opt(50, NODE_ADDR.octets());
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_boot_offer(&r, MessageType::Ack, "ipxe.efi");
    assert_eq!(r.dest, ReplyDest::Broadcast);
}

#[test]
fn ipxe_efi_discover_gets_its_script() {
    let req = ipxe_efi(NODE_MAC, 7, DISCOVER);
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_boot_offer(&r, MessageType::Offer, SCRIPT);
    assert_eq!(r.dest, ReplyDest::Broadcast);
}

/// After boot the OS gets an address and no boot file, but still the
/// next-server (`siaddr` and option 66): every lease names it.
#[test]
fn udhcpc_after_boot_gets_address_but_no_boot_file() {
    let req = udhcpc(NODE_MAC, 99, DISCOVER, "udhcp 1.36.1");
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.msg.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(r.msg.yiaddr(), NODE_ADDR);
    assert_eq!(r.msg.siaddr(), SERVER);
    assert_eq!(r.file_field(), None);
    assert!(!r.has(OptionCode::BootfileName));
    assert_eq!(
        r.text(OptionCode::TFTPServerName).as_deref(),
        Some("10.0.0.1")
    );
    assert!(!r.has(OptionCode::ClassIdentifier));
    assert_eq!(r.text(OptionCode::Hostname).as_deref(), Some("n23"));
    assert!(r.has(OptionCode::DomainNameServer));
    assert!(!r.has(OptionCode::LogServer), "7 not in udhcpc's option 55");
    assert!(r.bytes.len() <= 576 - 28);
    assert_eq!(r.dest, ReplyDest::Broadcast);
}

#[test]
fn udhcpc_as_pxe_client_reads_the_file_field() {
    // udhcpc -V PXEClient:…: no option 93, arch from the vendor class; it
    // does not ask for 67, so it reads the BOOTP `file` field.
    let req = udhcpc(NODE_MAC, 100, DISCOVER, "PXEClient:Arch:00000:UNDI:002001");
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_boot_offer(&r, MessageType::Offer, "undionly.kpxe");
    assert!(r.bytes.len() <= 576 - 28);
}

#[test]
fn udhcpc_arm64_vendor_class_gets_arm64_file() {
    let req = udhcpc(NODE_MAC, 101, DISCOVER, "PXEClient:Arch:00011:UNDI:003000");
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.file_field().as_deref(), Some("ipxe-arm64.efi"));
}

#[test]
fn uefi_http_boot_gets_uri_and_http_client_echo() {
    let req = edk2(NODE_MAC, 5, DISCOVER)
        .set(93, [0, 16])
        .set(60, "HTTPClient:Arch:00016:UNDI:003001");
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    let uri = "http://10.0.0.1:8080/boot/52-54-00-12-34-56/shim.efi";
    assert_eq!(r.text(OptionCode::BootfileName).as_deref(), Some(uri));
    assert_eq!(
        r.text(OptionCode::ClassIdentifier).as_deref(),
        Some("HTTPClient")
    );
}

#[test]
fn uefi_http_boot_without_uri_gets_no_file() {
    let mut cfg = config();
    cfg.boot.http_boot_uri = None;
    let req = edk2(NODE_MAC, 5, DISCOVER).set(60, "HTTPClient:Arch:00016:UNDI:003001");
    let r = reply(handle(&cfg, &nodes(), &req.bytes()));
    assert!(!r.has(OptionCode::BootfileName));
    assert!(
        !r.has(OptionCode::ClassIdentifier),
        "an HTTPClient offer without a URI is discarded by OVMF: no echo"
    );
    assert_eq!(r.msg.yiaddr(), NODE_ADDR);
}

#[test]
fn unsupported_arch_gets_address_without_file() {
    let req = edk2(NODE_MAC, 5, DISCOVER)
        .set(93, [0, 6])
        .set(60, "PXEClient:Arch:00006:UNDI:003000");
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert!(!r.has(OptionCode::BootfileName));
    assert_eq!(
        r.text(OptionCode::ClassIdentifier).as_deref(),
        Some("PXEClient")
    );
}

#[test]
fn rfc3004_user_class_is_ipxe_too() {
    let req = ipxe_bios(NODE_MAC, 1, DISCOVER).set(77, b"\x04iPXE");
    let r = reply(handle(&config(), &nodes(), &req.bytes()));
    assert_eq!(r.text(OptionCode::BootfileName).as_deref(), Some(SCRIPT));
}

/// U-Boot's distro boot (vendor class `U-Boot.armv8`, arch 22) gets its
/// address, the next-server in `siaddr` and option 66 (without it U-Boot
/// stops: "serverip not set"), and the boot script's name; no PXE class
/// is echoed. The same for the REQUEST.
#[test]
fn uboot_gets_next_server_and_its_boot_script() {
    for (kind, want) in [(DISCOVER, MessageType::Offer), (REQUEST, MessageType::Ack)] {
        let mut req = uboot_arm64(NODE_MAC, 0x5252_5b0d, kind);
        if kind == REQUEST {
            req = req.opt(50, NODE_ADDR.octets()).opt(54, SERVER.octets());
        }
        let r = reply(handle(&config(), &nodes(), &req.bytes()));
        assert_eq!(r.msg.opts().msg_type(), Some(want));
        assert_eq!(r.msg.yiaddr(), NODE_ADDR);
        assert_eq!(r.msg.siaddr(), SERVER);
        assert_eq!(
            r.text(OptionCode::TFTPServerName).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(r.file_field().as_deref(), Some("boot.scr.uimg"));
        assert_eq!(
            r.text(OptionCode::BootfileName).as_deref(),
            Some("boot.scr.uimg")
        );
        assert!(!r.has(OptionCode::ClassIdentifier));
        assert!(r.bytes.len() <= 576 - 28);
    }
}
