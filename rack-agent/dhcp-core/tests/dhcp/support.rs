//! Test support: a request builder that keeps options in the exact order
//! given (dhcproto sorts them), firmware DISCOVERs as observed in
//! `firmware-behaviour.md`, a test config and a node directory.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dhcproto::Decodable;
use dhcproto::v4::{DhcpOption, Message, OptionCode};
use rackboot_dhcp_core::{BootFiles, Decision, Mac, NodeBinding, ReplyDest, ServerConfig};

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const NODE_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 23);
pub const STRANGER: Mac = Mac([0x52, 0x54, 0x00, 0x99, 0x99, 0x99]);
pub const SCRIPT: &str = "http://10.0.0.1:8080/ipxe/52-54-00-12-34-56.ipxe";

pub fn config() -> ServerConfig {
    ServerConfig {
        server_ip: SERVER,
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 0, 0, 254)),
        dns: vec![SERVER],
        domain: Some("rack1.cluster".into()),
        log_server: Some(SERVER),
        lease_secs: 3600,
        boot: BootFiles {
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
            ipxe_script: "http://10.0.0.1:8080/ipxe/{mac}.ipxe".into(),
            http_boot_uri: Some("http://10.0.0.1:8080/boot/{mac}/shim.efi".into()),
            uboot_script: "boot.scr.uimg".into(),
        },
    }
}

pub fn nodes() -> HashMap<Mac, NodeBinding> {
    HashMap::from([(
        NODE_MAC,
        NodeBinding {
            number: 23,
            addr: NODE_ADDR,
            hostname: "n23".into(),
        },
    )])
}

/// A BOOTP/DHCP request with options emitted in insertion order.
#[derive(Debug, Clone)]
pub struct Req {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub options: Vec<(u8, Vec<u8>)>,
    /// Write no magic cookie or options at all (RFC 951 BOOTP).
    pub no_cookie: bool,
    /// The `file` header field (at most 128 bytes), if set.
    pub file: Option<Vec<u8>>,
}

impl Req {
    pub fn new(mac: Mac, xid: u32) -> Self {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac.0);
        Req {
            op: 1,
            htype: 1,
            hlen: 6,
            xid,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options: Vec::new(),
            no_cookie: false,
            file: None,
        }
    }

    pub fn opt(mut self, code: u8, value: impl AsRef<[u8]>) -> Self {
        self.options.push((code, value.as_ref().to_vec()));
        self
    }

    /// Replace (or append) option `code`.
    pub fn set(mut self, code: u8, value: impl AsRef<[u8]>) -> Self {
        match self.options.iter_mut().find(|(c, _)| *c == code) {
            Some((_, v)) => *v = value.as_ref().to_vec(),
            None => self.options.push((code, value.as_ref().to_vec())),
        }
        self
    }

    pub fn without(mut self, code: u8) -> Self {
        self.options.retain(|(c, _)| *c != code);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut p = vec![0u8; 236];
        p[0] = self.op;
        p[1] = self.htype;
        p[2] = self.hlen;
        p[4..8].copy_from_slice(&self.xid.to_be_bytes());
        p[10..12].copy_from_slice(&self.flags.to_be_bytes());
        p[12..16].copy_from_slice(&self.ciaddr.octets());
        p[24..28].copy_from_slice(&self.giaddr.octets());
        p[28..44].copy_from_slice(&self.chaddr);
        if let Some(file) = &self.file {
            p[108..108 + file.len()].copy_from_slice(file);
        }
        if self.no_cookie {
            p.resize(300, 0);
            return p;
        }
        p.extend_from_slice(&[99, 130, 83, 99]);
        for (code, value) in &self.options {
            p.push(*code);
            p.push(u8::try_from(value.len()).expect("test option under 256 bytes"));
            p.extend_from_slice(value);
        }
        p.push(255);
        p
    }
}

pub fn client_id(mac: Mac) -> Vec<u8> {
    let mut id = vec![1];
    id.extend_from_slice(&mac.0);
    id
}

fn uuid_opt(uuid: [u8; 16]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&uuid);
    v
}

/// QEMU with a configured `-uuid`, as it appears in option 97 (mixed-endian).
pub const UUID: [u8; 16] = [
    0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
];

const IPXE_PRL: &[u8] = &[
    1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175,
    203,
];
const IPXE_175: &[u8] = &[
    177, 5, 1, 0x80, 0x86, 0x10, 0x0e, 33, 1, 1, 16, 1, 2, 19, 1, 1,
];

/// iPXE in the SeaBIOS option ROM: 53 57 93 94 60 77 55 175 61 97.
pub fn ipxe_bios(mac: Mac, xid: u32, msg_type: u8) -> Req {
    Req::new(mac, xid)
        .opt(53, [msg_type])
        .opt(57, 1472u16.to_be_bytes())
        .opt(93, [0, 0])
        .opt(94, [1, 2, 1])
        .opt(60, "PXEClient:Arch:00000:UNDI:002001")
        .opt(77, "iPXE")
        .opt(55, IPXE_PRL)
        .opt(175, IPXE_175)
        .opt(61, client_id(mac))
        .opt(97, uuid_opt(UUID))
}

/// iPXE-EFI: same order as iPXE BIOS, arch 7, UNDI 3.10.
pub fn ipxe_efi(mac: Mac, xid: u32, msg_type: u8) -> Req {
    ipxe_bios(mac, xid, msg_type)
        .set(93, [0, 7])
        .set(94, [1, 3, 10])
        .set(60, "PXEClient:Arch:00007:UNDI:003010")
}

const EDK2_PRL: &[u8] = &[
    1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66,
    67, 97, 128, 129, 130, 131, 132, 133, 134, 135,
];

/// OVMF's own PXE: 53 57 55 97 94 93 60, broadcast flag, no client id,
/// all-zeros UUID (QEMU without `-uuid`).
pub fn edk2(mac: Mac, xid: u32, msg_type: u8) -> Req {
    let mut r = Req::new(mac, xid)
        .opt(53, [msg_type])
        .opt(57, 1472u16.to_be_bytes())
        .opt(55, EDK2_PRL)
        .opt(97, uuid_opt([0; 16]))
        .opt(94, [1, 3, 0])
        .opt(93, [0, 7])
        .opt(60, "PXEClient:Arch:00007:UNDI:003000");
    r.flags = 0x8000;
    r
}

/// busybox udhcpc: 53 57 55 60 61, 57 = 576, no option 93.
pub fn udhcpc(mac: Mac, xid: u32, msg_type: u8, vendor_class: &str) -> Req {
    Req::new(mac, xid)
        .opt(53, [msg_type])
        .opt(57, 576u16.to_be_bytes())
        .opt(55, [1, 3, 6, 12, 15, 28, 42])
        .opt(60, vendor_class)
        .opt(61, client_id(mac))
}

/// U-Boot 2023.01 (`qemu_arm64`, Debian's u-boot-qemu) as captured from
/// its distro boot: 53 57 93 94 60 55, 57 = 576, arch 22 (arm64 U-Boot),
/// vendor class `U-Boot.armv8`, and the script's name already in `file`.
pub fn uboot_arm64(mac: Mac, xid: u32, msg_type: u8) -> Req {
    let mut r = Req::new(mac, xid)
        .opt(53, [msg_type])
        .opt(57, 576u16.to_be_bytes())
        .opt(93, [0, 22])
        .opt(94, [1, 0, 0])
        .opt(60, "U-Boot.armv8")
        .opt(55, [1, 3, 6, 12, 17]);
    r.file = Some(b"boot.scr.uimg".to_vec());
    r
}

pub const DISCOVER: u8 = 1;
pub const REQUEST: u8 = 3;
pub const DECLINE: u8 = 4;
pub const RELEASE: u8 = 7;
pub const INFORM: u8 = 8;

/// A reply, checked for consistency between `message` and `bytes`.
pub struct Reply {
    pub msg: Message,
    pub bytes: Vec<u8>,
    pub dest: ReplyDest,
}

impl Reply {
    pub fn opt(&self, code: OptionCode) -> Option<&DhcpOption> {
        self.msg.opts().get(code)
    }

    pub fn has(&self, code: OptionCode) -> bool {
        self.opt(code).is_some()
    }

    pub fn bytes_opt(&self, code: OptionCode) -> Option<Vec<u8>> {
        match self.opt(code)? {
            DhcpOption::BootfileName(v)
            | DhcpOption::TFTPServerName(v)
            | DhcpOption::ClassIdentifier(v)
            | DhcpOption::ClientIdentifier(v) => Some(v.clone()),
            DhcpOption::Hostname(s) | DhcpOption::DomainName(s) | DhcpOption::Message(s) => {
                Some(s.clone().into_bytes())
            }
            other => panic!("not a byte option: {other:?}"),
        }
    }

    pub fn text(&self, code: OptionCode) -> Option<String> {
        self.bytes_opt(code)
            .map(|v| String::from_utf8(v).expect("utf-8 option"))
    }

    /// The `file` header field as text (up to its NUL).
    pub fn file_field(&self) -> Option<String> {
        self.msg.fname().map(|f| {
            let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
            String::from_utf8(f[..end].to_vec()).expect("utf-8 file")
        })
    }
}

/// Unwrap a `Decision::Reply`, checking that `bytes` decode to `message`'s
/// options and header fields and are at least 300 bytes.
pub fn reply(decision: Decision) -> Reply {
    let Decision::Reply {
        message,
        bytes,
        dest,
    } = decision
    else {
        panic!("expected a reply, got {decision:?}");
    };
    assert!(bytes.len() >= 300, "reply is {} bytes", bytes.len());
    let decoded = Message::from_bytes(&bytes).expect("reply decodes");
    assert_eq!(decoded.opts(), message.opts());
    assert_eq!(decoded.xid(), message.xid());
    assert_eq!(decoded.yiaddr(), message.yiaddr());
    assert_eq!(decoded.siaddr(), message.siaddr());
    assert_eq!(decoded.giaddr(), message.giaddr());
    assert_eq!(decoded.chaddr(), message.chaddr());
    assert_eq!(decoded.flags(), message.flags());
    Reply {
        msg: message,
        bytes,
        dest,
    }
}
