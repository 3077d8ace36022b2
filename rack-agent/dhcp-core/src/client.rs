//! What a request says about its client: architecture (option 93), vendor
//! class (60), user class (77), client id (61), UUID (97), hostname (12),
//! requested address (50), maximum message size (57), parameter request
//! list (55).
//!
//! Identity is always the `chaddr` MAC: the client id and the UUID are
//! recorded, never used to find a node (PXE sends a client id and the booted
//! OS may not; UUIDs are often all zeros or duplicated — seed 003).

use std::fmt;
use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use crate::mac::Mac;
use crate::wire::{MalformedError, Packet};

/// Client system architecture (RFC 4578 option 93, IANA registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 0: x86 BIOS (legacy PXE).
    X86Bios,
    /// 6: x86 (32-bit) UEFI.
    EfiIa32,
    /// 7: x64 UEFI.
    EfiX64,
    /// 9: EFI byte code; in practice x64 UEFI firmware that reports 9.
    EfiBc,
    /// 10: 32-bit ARM UEFI.
    EfiArm32,
    /// 11: 64-bit ARM UEFI.
    EfiArm64,
    /// 16: x64 UEFI HTTP boot.
    EfiX64Http,
    /// 19: 64-bit ARM UEFI HTTP boot.
    EfiArm64Http,
    /// Any other registered or unregistered value.
    Other(u16),
}

impl From<u16> for Arch {
    fn from(n: u16) -> Self {
        match n {
            0 => Arch::X86Bios,
            6 => Arch::EfiIa32,
            7 => Arch::EfiX64,
            9 => Arch::EfiBc,
            10 => Arch::EfiArm32,
            11 => Arch::EfiArm64,
            16 => Arch::EfiX64Http,
            19 => Arch::EfiArm64Http,
            n => Arch::Other(n),
        }
    }
}

impl From<Arch> for u16 {
    fn from(a: Arch) -> Self {
        match a {
            Arch::X86Bios => 0,
            Arch::EfiIa32 => 6,
            Arch::EfiX64 => 7,
            Arch::EfiBc => 9,
            Arch::EfiArm32 => 10,
            Arch::EfiArm64 => 11,
            Arch::EfiX64Http => 16,
            Arch::EfiArm64Http => 19,
            Arch::Other(n) => n,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Other(n) => write!(f, "arch {n}"),
            known => write!(f, "{known:?} ({})", u16::from(*known)),
        }
    }
}

/// Everything the server learned about a client from one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Hardware address from `chaddr`: the client's identity.
    pub mac: Mac,
    /// Option 53; `None` for a plain BOOTP request.
    pub message_type: Option<MessageType>,
    /// Option 93 (first entry); if absent, the `Arch:NNNNN` field of a
    /// `PXEClient`/`HTTPClient` vendor class.
    pub arch: Option<Arch>,
    /// Option 60, lossily decoded as UTF-8.
    pub vendor_class: Option<String>,
    /// Option 77 as a list of classes. Both RFC 3004 (length-prefixed) and
    /// the raw text iPXE sends (`iPXE`) are accepted.
    pub user_class: Vec<String>,
    /// Option 97 without its type byte, in wire (SMBIOS mixed-endian) order.
    /// Recorded only: never trusted as identity.
    pub uuid: Option<[u8; 16]>,
    /// Option 61, raw. Recorded only.
    pub client_id: Option<Vec<u8>>,
    /// Option 12, lossily decoded as UTF-8.
    pub hostname: Option<String>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 57 as sent (not clamped).
    pub max_message_size: Option<u16>,
    /// Option 55, raw option codes in the client's order.
    pub parameter_request_list: Option<Vec<u8>>,
    /// `giaddr`, if the request came through a relay agent.
    pub relay_agent: Option<Ipv4Addr>,
}

impl ClientInfo {
    /// A client known only by its MAC: a DHCP DISCOVER with no options.
    /// Useful for building test inputs to [`crate::bootfile::select`].
    pub fn new(mac: Mac) -> Self {
        ClientInfo {
            mac,
            message_type: Some(MessageType::Discover),
            arch: None,
            vendor_class: None,
            user_class: Vec::new(),
            uuid: None,
            client_id: None,
            hostname: None,
            requested_ip: None,
            max_message_size: None,
            parameter_request_list: None,
            relay_agent: None,
        }
    }

    /// Vendor class starts with `PXEClient` (a PXE ROM, iPXE included).
    pub fn is_pxe(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with("PXEClient"))
    }

    /// Vendor class starts with `HTTPClient` (UEFI HTTP Boot).
    pub fn is_http_client(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with("HTTPClient"))
    }

    /// Vendor class starts with `U-Boot` (`U-Boot.armv8`, `U-Boot` on
    /// riscv64): U-Boot's own DHCP client, whose distro boot then asks the
    /// next-server for a boot script.
    pub fn is_uboot(&self) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with("U-Boot"))
    }

    /// User class contains `iPXE`: iPXE is running and wants its script, not
    /// another copy of itself.
    pub fn is_ipxe(&self) -> bool {
        self.user_class.iter().any(|c| c == "iPXE")
    }

    /// No option 53: an RFC 951 BOOTP request.
    pub fn is_bootp(&self) -> bool {
        self.message_type.is_none()
    }

    /// Option 55 asks for `code`, or there is no option 55 at all.
    pub fn wants(&self, code: u8) -> bool {
        self.parameter_request_list
            .as_deref()
            .is_none_or(|prl| prl.contains(&code))
    }

    /// Read a client from a framed request. Only options the server acts on
    /// are held to exact lengths (53); others are recorded when well-formed
    /// and ignored otherwise.
    pub(crate) fn from_packet(mac: Mac, packet: &Packet) -> Result<Self, MalformedError> {
        let opts = &packet.options;
        let message_type = opts.get_exact::<1>(53)?.map(|[t]| MessageType::from(t));
        let vendor_class = opts.get(60).map(lossy);
        let arch = opts
            .get(93)
            .and_then(|v| match v {
                [hi, lo, ..] if v.len() % 2 == 0 => {
                    Some(Arch::from(u16::from_be_bytes([*hi, *lo])))
                }
                _ => None,
            })
            .or_else(|| vendor_class.as_deref().and_then(arch_from_vendor_class));
        let uuid = opts.get(97).and_then(|v| match v.split_first() {
            Some((0, rest)) => rest.try_into().ok(),
            _ => None,
        });
        let relay_agent = Some(packet.header.giaddr).filter(|a| !a.is_unspecified());
        Ok(ClientInfo {
            mac,
            message_type,
            arch,
            vendor_class,
            user_class: opts.get(77).map(user_classes).unwrap_or_default(),
            uuid,
            client_id: opts.get(61).filter(|v| !v.is_empty()).map(<[u8]>::to_vec),
            hostname: opts.get(12).filter(|v| !v.is_empty()).map(lossy),
            requested_ip: opts
                .get(50)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(Ipv4Addr::from),
            max_message_size: opts
                .get(57)
                .and_then(|v| <[u8; 2]>::try_from(v).ok())
                .map(u16::from_be_bytes),
            parameter_request_list: opts.get(55).map(<[u8]>::to_vec),
            relay_agent,
        })
    }
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// `PXEClient:Arch:00007:UNDI:003000` → arch 7, for clients that send a
/// vendor class but no option 93 (e.g. udhcpc with `-V`).
fn arch_from_vendor_class(vc: &str) -> Option<Arch> {
    let mut fields = vc.split(':');
    let kind = fields.next()?;
    if kind != "PXEClient" && kind != "HTTPClient" {
        return None;
    }
    if fields.next()? != "Arch" {
        return None;
    }
    let digits = fields.next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u16>().ok().map(Arch::from)
}

/// Option 77: RFC 3004 says a list of length-prefixed classes; iPXE sends
/// the bare text `iPXE`. Read it as RFC 3004 when it parses exactly (every
/// length non-zero, ending at the end), else as one raw class.
fn user_classes(v: &[u8]) -> Vec<String> {
    let mut classes = Vec::new();
    let mut rest = v;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        match tail.get(..len) {
            Some(class) if len > 0 => {
                classes.push(lossy(class));
                rest = tail.get(len..).unwrap_or_default();
            }
            _ => return vec![lossy(v)],
        }
    }
    if classes.is_empty() && !v.is_empty() {
        return vec![lossy(v)];
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_round_trip() {
        for n in [0u16, 6, 7, 9, 10, 11, 16, 19, 1, 0xffff] {
            assert_eq!(u16::from(Arch::from(n)), n);
        }
        assert_eq!(Arch::from(7), Arch::EfiX64);
        assert_eq!(Arch::from(42), Arch::Other(42));
        assert_eq!(Arch::EfiX64.to_string(), "EfiX64 (7)");
        assert_eq!(Arch::Other(42).to_string(), "arch 42");
    }

    #[test]
    fn user_class_encodings() {
        assert_eq!(user_classes(b"iPXE"), vec!["iPXE"]);
        assert_eq!(user_classes(b"\x04iPXE"), vec!["iPXE"]);
        assert_eq!(user_classes(b"\x04iPXE\x03foo"), vec!["iPXE", "foo"]);
        // Length runs past the end: raw text.
        assert_eq!(user_classes(b"\x09iPXE"), vec!["\x09iPXE"]);
        // A zero length is not RFC 3004.
        assert_eq!(user_classes(b"\x00ab"), vec!["\x00ab"]);
        assert!(user_classes(b"").is_empty());
    }

    #[test]
    fn arch_from_vendor_class_field() {
        let f = arch_from_vendor_class;
        assert_eq!(f("PXEClient:Arch:00000:UNDI:002001"), Some(Arch::X86Bios));
        assert_eq!(f("PXEClient:Arch:00011:UNDI:003000"), Some(Arch::EfiArm64));
        assert_eq!(
            f("HTTPClient:Arch:00016:UNDI:003001"),
            Some(Arch::EfiX64Http)
        );
        assert_eq!(f("PXEClient"), None);
        assert_eq!(f("PXEClient:Arch:"), None);
        assert_eq!(f("PXEClient:Arch:+7"), None);
        assert_eq!(f("PXEClient:Arch:99999999"), None);
        assert_eq!(f("udhcp 1.36.1"), None);
    }

    #[test]
    fn wants_without_prl_is_everything() {
        let mut c = ClientInfo::new(Mac([2, 0, 0, 0, 0, 1]));
        assert!(c.wants(6));
        c.parameter_request_list = Some(vec![1, 3]);
        assert!(c.wants(3));
        assert!(!c.wants(6));
    }

    #[test]
    fn class_predicates() {
        let mut c = ClientInfo::new(Mac([2, 0, 0, 0, 0, 1]));
        assert!(!c.is_pxe() && !c.is_http_client() && !c.is_ipxe() && !c.is_bootp());
        c.vendor_class = Some("PXEClient:Arch:00007:UNDI:003000".into());
        assert!(c.is_pxe());
        c.vendor_class = Some("HTTPClient:Arch:00016:UNDI:003001".into());
        assert!(c.is_http_client() && !c.is_pxe());
        c.user_class = vec!["iPXE".into()];
        assert!(c.is_ipxe());
        c.message_type = None;
        assert!(c.is_bootp());
    }
}
