//! Bad input: every case is a `Drop` (or a well-formed reply), never a panic.

use dhcproto::Decodable;
use dhcproto::v4::Message;
use proptest::prelude::*;
use rackboot_dhcp_core::{Decision, DropReason, MalformedError, handle};

use crate::support::*;

fn decide(bytes: &[u8]) -> Decision {
    handle(&config(), &nodes(), bytes)
}

fn malformed(bytes: &[u8]) -> MalformedError {
    match decide(bytes) {
        Decision::Drop(DropReason::Malformed(e)) => e,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn every_truncation_of_a_discover_is_handled() {
    let full = ipxe_bios(NODE_MAC, 1, DISCOVER).bytes();
    for len in 0..full.len() {
        let d = decide(&full[..len]);
        if len < 240 {
            assert_eq!(
                d,
                Decision::Drop(DropReason::Malformed(MalformedError::TooShort { len }))
            );
        }
        // Cut at an option boundary it is a shorter valid DISCOVER (End is
        // optional); cut inside an option it is malformed or lacks 53.
        assert!(
            matches!(d, Decision::Drop(_) | Decision::Reply { .. }),
            "len {len}: {d:?}"
        );
    }
    // Cut in the middle of option 60's value.
    assert!(matches!(
        malformed(&full[..260]),
        MalformedError::OptionTruncated { code: 60, .. }
    ));
}

#[test]
fn bad_hardware_address_lengths() {
    for (htype, hlen) in [
        (1u8, 17u8),
        (1, 255),
        (1, 16),
        (1, 0),
        (1, 5),
        (6, 6),
        (32, 20),
    ] {
        let mut req = ipxe_bios(NODE_MAC, 1, DISCOVER);
        req.htype = htype;
        req.hlen = hlen;
        assert_eq!(
            decide(&req.bytes()),
            Decision::Drop(DropReason::HlenInvalid { htype, hlen })
        );
    }
}

#[test]
fn replies_and_garbage_ops_are_not_boot_requests() {
    for op in [0u8, 2, 255] {
        let mut req = ipxe_bios(NODE_MAC, 1, DISCOVER);
        req.op = op;
        assert_eq!(
            decide(&req.bytes()),
            Decision::Drop(DropReason::NotBootRequest { op })
        );
    }
}

#[test]
fn non_unicast_chaddr_is_dropped() {
    for mac in [[0u8; 6], [0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 1]] {
        let req = ipxe_bios(rackboot_dhcp_core::Mac(mac), 1, DISCOVER);
        assert!(matches!(
            decide(&req.bytes()),
            Decision::Drop(DropReason::BadMac(_))
        ));
    }
}

#[test]
fn garbage_is_dropped() {
    for garbage in [
        vec![],
        vec![0u8; 1],
        vec![0xff; 600],
        vec![0x00; 600],
        (0..=255u8).cycle().take(1500).collect::<Vec<_>>(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ] {
        assert!(matches!(decide(&garbage), Decision::Drop(_)), "{garbage:?}");
    }
}

#[test]
fn bad_magic_cookie() {
    let mut bytes = ipxe_bios(NODE_MAC, 1, DISCOVER).bytes();
    bytes[236..240].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        malformed(&bytes),
        MalformedError::BadMagic {
            magic: [1, 2, 3, 4]
        }
    );
}

#[test]
fn option_overflow() {
    // Length byte runs past the end of the packet.
    let mut bytes = ipxe_bios(NODE_MAC, 1, DISCOVER).bytes();
    bytes.pop(); // End
    bytes.extend_from_slice(&[43, 200, 1, 2, 3]);
    assert!(matches!(
        malformed(&bytes),
        MalformedError::OptionTruncated { code: 43, .. }
    ));
    // Option overload into `file`, whose options overflow its 128 bytes.
    let mut bytes = ipxe_bios(NODE_MAC, 1, DISCOVER).opt(52, [1]).bytes();
    bytes[108] = 12;
    bytes[109] = 250;
    assert!(matches!(
        malformed(&bytes),
        MalformedError::OptionTruncated { area: "file", .. }
    ));
    // Overload value out of range.
    let bytes = ipxe_bios(NODE_MAC, 1, DISCOVER).opt(52, [9]).bytes();
    assert_eq!(malformed(&bytes), MalformedError::BadOverload { value: 9 });
}

#[test]
fn overloaded_options_are_read() {
    // Option 53 lives in `sname`, via overload 2.
    let req = ipxe_bios(NODE_MAC, 1, DISCOVER).without(53).opt(52, [2]);
    let mut bytes = req.bytes();
    bytes[44..48].copy_from_slice(&[53, 1, DISCOVER, 255]);
    let r = reply(decide(&bytes));
    assert_eq!(
        r.text(dhcproto::v4::OptionCode::BootfileName).as_deref(),
        Some(SCRIPT)
    );
}

#[test]
fn wrong_lengths_of_acted_on_options() {
    let bytes = ipxe_bios(NODE_MAC, 1, DISCOVER).set(53, [1, 1]).bytes();
    assert!(matches!(
        malformed(&bytes),
        MalformedError::BadOptionLength {
            code: 53,
            len: 2,
            expected: 1
        }
    ));
    let bytes = ipxe_bios(NODE_MAC, 1, REQUEST).opt(54, [10, 0, 0]).bytes();
    assert!(matches!(
        malformed(&bytes),
        MalformedError::BadOptionLength { code: 54, .. }
    ));
    let bytes = ipxe_bios(NODE_MAC, 1, REQUEST)
        .opt(50, [10, 0, 0, 23, 0])
        .bytes();
    assert!(matches!(
        malformed(&bytes),
        MalformedError::BadOptionLength { code: 50, .. }
    ));
}

#[test]
fn options_that_trip_dhcproto_debug_asserts_are_harmless() {
    // dhcproto 0.15's decoder panics in debug builds on 80, 81, 94 and
    // 152 with these lengths (checked); our walker does not care.
    for (code, value) in [
        (80u8, vec![1u8, 2, 3]),
        (81, vec![]),
        (94, vec![]),
        (151, vec![]),
        (152, vec![1]),
        (93, vec![7]),
        (57, vec![1]),
        (97, vec![1, 2]),
        (12, vec![0xff, 0xfe]),
    ] {
        let bytes = ipxe_bios(NODE_MAC, 1, DISCOVER).set(code, value).bytes();
        assert!(
            matches!(decide(&bytes), Decision::Reply { .. }),
            "option {code}"
        );
    }
}

fn check_decision(d: &Decision) {
    if let Decision::Reply { message, bytes, .. } = d {
        let decoded = Message::from_bytes(bytes).expect("our replies decode");
        assert_eq!(decoded.opts(), message.opts());
        assert!(bytes.len() >= 300);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        check_decision(&decide(&bytes));
    }

    #[test]
    fn arbitrary_options_after_a_valid_header_never_panic(
        options in proptest::collection::vec(any::<u8>(), 0..700),
        known in any::<bool>(),
    ) {
        let mac = if known { NODE_MAC } else { STRANGER };
        let mut bytes = Req::new(mac, 1).bytes();
        bytes.truncate(240);
        bytes.extend_from_slice(&options);
        check_decision(&decide(&bytes));
    }

    #[test]
    fn mutated_discovers_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = match which {
            0 => ipxe_bios(NODE_MAC, 1, DISCOVER).bytes(),
            1 => edk2(NODE_MAC, 1, DISCOVER).bytes(),
            2 => ipxe_efi(NODE_MAC, 1, REQUEST).opt(50, NODE_ADDR.octets()).bytes(),
            _ => udhcpc(NODE_MAC, 1, DISCOVER, "PXEClient:Arch:00007:UNDI:003000").bytes(),
        };
        // Bias edits towards the options area, where structure lives.
        for (at, value) in edits {
            let len = bytes.len();
            let i = if at % 2 == 0 { 236 + at / 2 % (len - 236) } else { at % len };
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            let len = bytes.len();
            bytes.truncate(cut % (len + 1));
        }
        check_decision(&decide(&bytes));
    }
}
