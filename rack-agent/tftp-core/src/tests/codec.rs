//! Codec: golden bytes, every error variant, and property tests.

use bytes::Bytes;
use proptest::prelude::*;

use crate::packet::{Field, MAX_OPTIONS};
use crate::{ErrorCode, Mode, Packet, PacketError, RawOption, SafePath};

fn parse(bytes: &[u8]) -> Packet {
    match Packet::parse(bytes) {
        Ok(p) => p,
        Err(e) => panic!("{bytes:?}: {e}"),
    }
}

fn parse_err(bytes: &[u8]) -> PacketError {
    match Packet::parse(bytes) {
        Ok(p) => panic!("{bytes:?} parsed as {p:?}"),
        Err(e) => e,
    }
}

fn opt(name: &str, value: &str) -> RawOption {
    RawOption::new(name, value)
}

#[test]
fn golden_ipxe_rrq() {
    let wire = b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00";
    let packet = Packet::Rrq {
        filename: "undionly.kpxe".to_owned(),
        mode: Mode::Octet,
        options: vec![opt("blksize", "1432"), opt("tsize", "0")],
    };
    assert_eq!(parse(wire), packet);
    assert_eq!(&packet.encode()[..], &wire[..]);
    assert_eq!(packet.encoded_len(), wire.len());
}

#[test]
fn golden_data_ack_error_oack() {
    let data = Packet::Data {
        block: 0x0102,
        data: Bytes::from_static(b"abc"),
    };
    assert_eq!(&data.encode()[..], b"\x00\x03\x01\x02abc");
    assert_eq!(parse(b"\x00\x03\x01\x02abc"), data);
    assert_eq!(
        parse(b"\x00\x03\xff\xff"),
        Packet::Data {
            block: 65535,
            data: Bytes::new()
        }
    );

    let ack = Packet::Ack { block: 65535 };
    assert_eq!(&ack.encode()[..], b"\x00\x04\xff\xff");
    assert_eq!(parse(b"\x00\x04\xff\xff"), ack);

    let error = Packet::Error {
        code: ErrorCode::FileNotFound,
        msg: "file not found".to_owned(),
    };
    assert_eq!(&error.encode()[..], b"\x00\x05\x00\x01file not found\x00");
    assert_eq!(parse(b"\x00\x05\x00\x01file not found\x00"), error);

    let oack = Packet::Oack {
        options: vec![opt("tsize", "8000000"), opt("blksize", "1468")],
    };
    assert_eq!(
        &oack.encode()[..],
        b"\x00\x06tsize\x008000000\x00blksize\x001468\x00"
    );
    assert_eq!(parse(&oack.encode()), oack);
}

#[test]
fn option_names_and_mode_are_case_insensitive() {
    let p = parse(b"\x00\x01f\x00OCTET\x00BlkSize\x00512\x00TSIZE\x000\x00");
    assert_eq!(
        p,
        Packet::Rrq {
            filename: "f".to_owned(),
            mode: Mode::Octet,
            options: vec![opt("blksize", "512"), opt("tsize", "0")],
        }
    );
    assert_eq!(
        parse_err(b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x001024\x00"),
        PacketError::DuplicateOption("blksize".to_owned())
    );
}

#[test]
fn lenient_where_clients_are_sloppy() {
    // NUL padding after the options.
    let p = parse(b"\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00");
    assert!(matches!(p, Packet::Rrq { ref options, .. } if options.len() == 1));
    // ACK with trailing bytes.
    assert_eq!(parse(b"\x00\x04\x00\x07zz"), Packet::Ack { block: 7 });
    // ERROR without its NUL, and with non-ASCII bytes.
    assert_eq!(
        parse(b"\x00\x05\x00\x08abort"),
        Packet::Error {
            code: ErrorCode::OptionRefused,
            msg: "abort".to_owned()
        }
    );
    assert!(matches!(
        parse(b"\x00\x05\x00\x63\xff\x00"),
        Packet::Error {
            code: ErrorCode::Other(99),
            ..
        }
    ));
}

#[test]
fn every_error_variant() {
    assert_eq!(
        parse_err(b""),
        PacketError::Truncated {
            len: 0,
            what: "an opcode"
        }
    );
    assert!(matches!(
        parse_err(b"\x00"),
        PacketError::Truncated { len: 1, .. }
    ));
    assert!(matches!(
        parse_err(b"\x00\x04\x00"),
        PacketError::Truncated { len: 3, .. }
    ));
    assert!(matches!(
        parse_err(b"\x00\x03"),
        PacketError::Truncated { .. }
    ));
    assert!(matches!(
        parse_err(b"\x00\x05\x00"),
        PacketError::Truncated { .. }
    ));
    assert_eq!(parse_err(b"\x00\x07"), PacketError::UnknownOpcode(7));
    assert_eq!(parse_err(b"\x00\x00"), PacketError::UnknownOpcode(0));
    assert_eq!(
        parse_err(b"\x00\x01file"),
        PacketError::MissingNul(Field::Filename)
    );
    assert_eq!(
        parse_err(b"\x00\x01file\x00octet"),
        PacketError::MissingNul(Field::Mode)
    );
    assert_eq!(
        parse_err(b"\x00\x01f\x00octet\x00tsize"),
        PacketError::MissingNul(Field::OptionName)
    );
    assert_eq!(
        parse_err(b"\x00\x01f\x00octet\x00tsize\x000"),
        PacketError::MissingNul(Field::OptionValue)
    );
    assert_eq!(
        parse_err(b"\x00\x01caf\xc3\xa9\x00octet\x00"),
        PacketError::InvalidText {
            field: Field::Filename,
            offset: 3,
            byte: 0xc3
        }
    );
    assert_eq!(
        parse_err(b"\x00\x01a\x01b\x00octet\x00"),
        PacketError::InvalidText {
            field: Field::Filename,
            offset: 1,
            byte: 1
        }
    );
    assert_eq!(
        parse_err(b"\x00\x01f\x00binary\x00"),
        PacketError::BadMode("binary".to_owned())
    );
    assert_eq!(
        parse_err(b"\x00\x01f\x00octet\x00\x00x\x00"),
        PacketError::EmptyOptionName
    );
    assert!(matches!(
        parse_err(b"\x00\x01f\x00octet\x00t\xffsize\x000\x00"),
        PacketError::InvalidText {
            field: Field::OptionName,
            ..
        }
    ));

    let mut many = b"\x00\x01f\x00octet\x00".to_vec();
    for i in 0..=MAX_OPTIONS {
        many.extend_from_slice(format!("opt{i}\x001\x00").as_bytes());
    }
    assert_eq!(
        parse_err(&many),
        PacketError::TooManyOptions { max: MAX_OPTIONS }
    );

    let mut long = b"\x00\x01f\x00octet\x00".to_vec();
    long.extend_from_slice(&[b'x'; 65]);
    long.extend_from_slice(b"\x001\x00");
    assert_eq!(
        parse_err(&long),
        PacketError::TooLong {
            field: Field::OptionName,
            len: 65,
            max: 64
        }
    );
    let mut long_value = b"\x00\x06blksize\x00".to_vec();
    long_value.extend_from_slice(&[b'1'; 65]);
    long_value.push(0);
    assert!(matches!(
        parse_err(&long_value),
        PacketError::TooLong {
            field: Field::OptionValue,
            ..
        }
    ));
    let mut long_name = b"\x00\x01".to_vec();
    long_name.extend_from_slice(&[b'a'; 513]);
    long_name.extend_from_slice(b"\x00octet\x00");
    assert!(matches!(
        parse_err(&long_name),
        PacketError::TooLong {
            field: Field::Filename,
            ..
        }
    ));
}

#[test]
fn error_messages_name_the_problem() {
    let e = parse_err(b"\x00\x01f\x00binary\x00");
    assert_eq!(e.to_string(), "unknown transfer mode \"binary\"");
    let e = parse_err(b"\x00\x01f\x00octet\x00tsize\x000\x00TSize\x000\x00");
    assert_eq!(e.to_string(), "option \"tsize\" appears twice");
}

#[test]
fn error_codes_round_trip() {
    for code in 0..=u16::MAX {
        assert_eq!(ErrorCode::from_u16(code).as_u16(), code);
    }
    assert_eq!(ErrorCode::from_u16(8), ErrorCode::OptionRefused);
    assert_eq!(ErrorCode::from_u16(9), ErrorCode::Other(9));
}

#[test]
fn encode_drops_interior_nul() {
    let p = Packet::Error {
        code: ErrorCode::NotDefined,
        msg: "a\0b".to_owned(),
    };
    assert_eq!(
        parse(&p.encode()),
        Packet::Error {
            code: ErrorCode::NotDefined,
            msg: "ab".to_owned()
        }
    );
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).expect("valid regex")
}

fn options() -> impl Strategy<Value = Vec<RawOption>> {
    let name = proptest::string::string_regex("[a-z][a-z0-9]{0,15}").expect("valid regex");
    proptest::collection::btree_map(name, text(20), 0..8).prop_map(|m| {
        m.into_iter()
            .map(|(name, value)| RawOption { name, value })
            .collect()
    })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Octet), Just(Mode::Netascii), Just(Mode::Mail)]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        (text(100), mode(), options()).prop_map(|(filename, mode, options)| Packet::Rrq {
            filename,
            mode,
            options
        }),
        (text(100), mode(), options()).prop_map(|(filename, mode, options)| Packet::Wrq {
            filename,
            mode,
            options
        }),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(block, data)| {
            Packet::Data {
                block,
                data: data.into(),
            }
        }),
        any::<u16>().prop_map(|block| Packet::Ack { block }),
        (any::<u16>(), "[^\u{0}]{0,40}").prop_map(|(code, msg)| Packet::Error {
            code: ErrorCode::from_u16(code),
            msg
        }),
        options().prop_map(|options| Packet::Oack { options }),
    ]
}

/// Arbitrary bytes, biased towards starting with a valid opcode so the
/// parser gets past the first check.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (
            0u8..8,
            proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>(), b'a'..=b'z'], 0..300)
        )
            .prop_map(|(op, rest)| {
                let mut v = vec![0, op];
                v.extend(rest);
                v
            }),
    ]
}

proptest! {
    #[test]
    fn encode_parse_round_trip(p in packet()) {
        let bytes = p.encode();
        prop_assert_eq!(bytes.len(), p.encoded_len());
        prop_assert_eq!(Packet::parse(&bytes), Ok(p));
    }

    #[test]
    fn parse_never_panics(bytes in datagram()) {
        if let Ok(p) = Packet::parse(&bytes) {
            // Whatever parses re-encodes to something that parses the same.
            prop_assert_eq!(Packet::parse(&p.encode()), Ok(p));
        }
    }

    #[test]
    fn safe_path_never_escapes(raw in "[ -~/.%\\\\\u{0}\u{e9}]{0,40}") {
        if let Ok(p) = SafePath::parse(&raw) {
            let s = p.as_str();
            prop_assert!(!s.is_empty());
            prop_assert!(!s.starts_with('/'));
            prop_assert!(!s.contains('\\') && !s.contains('%') && !s.contains('\0'));
            prop_assert!(p.components().all(|c| !c.is_empty() && c != "." && c != ".."));
            prop_assert_eq!(SafePath::parse(s), Ok(p.clone()));
        }
    }
}
