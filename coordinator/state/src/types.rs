//! Validated domain types. Raw strings and bytes from the outside are parsed
//! into these at the edge; nothing deeper re-checks them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Input that does not parse into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a MAC address.
    #[error("invalid MAC address '{0}': expected six hex bytes like aa:bb:cc:dd:ee:ff")]
    Mac(String),
    /// Not a blake3 digest.
    #[error("invalid blake3 digest '{0}': expected 64 lowercase hex characters")]
    Digest(String),
    /// Not a valid image name.
    #[error("invalid image name '{0}': use 1-128 characters from A-Z a-z 0-9 . _ : -")]
    ImageName(String),
    /// Not a valid rack name.
    #[error("invalid rack name '{0}': use 1-63 characters from a-z 0-9 . _ -")]
    RackName(String),
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Lowercase, hyphen separated (`aa-bb-cc-dd-ee-ff`), as used in file names.
    pub fn hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl Mac {
    /// Names one machine: not all zeros, no group (multicast or broadcast) bit.
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 0x01 == 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = ParseError;
    /// Accepts `:` or `-` separated hex bytes, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::Mac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl TryFrom<String> for Mac {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

/// A node's persistent, cluster-wide number. Its name is `n<number>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeNumber(pub u32);

impl NodeNumber {
    /// The node's name, `n<number>`.
    pub fn name(self) -> String {
        format!("n{}", self.0)
    }
}

impl fmt::Display for NodeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A blake3 digest: the name of every blob.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Blake3Digest(pub [u8; 32]);

impl Blake3Digest {
    /// Hash some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Blake3Digest(*blake3::hash(bytes).as_bytes())
    }
}

impl From<blake3::Hash> for Blake3Digest {
    fn from(h: blake3::Hash) -> Self {
        Blake3Digest(*h.as_bytes())
    }
}

impl fmt::Display for Blake3Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Blake3Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blake3Digest({self})")
    }
}

impl FromStr for Blake3Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::Digest(s.to_string());
        if s.len() != 64 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(err)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(Blake3Digest(out))
    }
}

impl TryFrom<String> for Blake3Digest {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Blake3Digest> for String {
    fn from(d: Blake3Digest) -> String {
        d.to_string()
    }
}

/// A blob reference: hash and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    /// The blob's blake3.
    pub digest: Blake3Digest,
    /// Its size in bytes.
    pub size: u64,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $ok:expr, $err:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let ok: fn(char) -> bool = $ok;
                if s.is_empty() || s.len() > $max || !s.chars().all(ok) {
                    return Err(ParseError::$err(s.to_string()));
                }
                Ok($name(s.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A versioned image name such as `compute:2026-11`.
    ImageName,
    128,
    |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'),
    ImageName
);
name_type!(
    /// A rack name such as `r1`.
    RackName,
    63,
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'),
    RackName
);

/// A rack and its network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rack {
    /// Name.
    pub name: RackName,
    /// The rack subnet.
    pub subnet: Ipv4Net,
    /// The agent's own address on the rack network.
    pub server_address: Ipv4Addr,
    /// Address of slot 0.
    pub node_base: Ipv4Addr,
    /// Gateway for nodes.
    pub gateway: Option<Ipv4Addr>,
}

impl Rack {
    /// Check the settings are consistent: the node base and gateway lie in
    /// the subnet. The server (agent) address may lie outside it: a rack
    /// behind a DHCP relay.
    pub fn validate(&self) -> Result<(), String> {
        if !self.subnet.contains(&self.node_base) || self.node_base == self.subnet.network() {
            return Err(format!(
                "node base {} is not a host address of subnet {}",
                self.node_base, self.subnet
            ));
        }
        if let Some(gw) = self.gateway
            && !self.subnet.contains(&gw)
        {
            return Err(format!("gateway {gw} is outside subnet {}", self.subnet));
        }
        Ok(())
    }

    /// Number of slots: host addresses from `node_base` up to (excluding) the broadcast address.
    pub fn slot_count(&self) -> u32 {
        let base = u32::from(self.node_base);
        let bcast = u32::from(self.subnet.broadcast());
        bcast.saturating_sub(base)
    }

    /// Address of a slot, if it lies in the rack's range.
    pub fn slot_address(&self, slot: u32) -> Option<Ipv4Addr> {
        (slot < self.slot_count()).then(|| Ipv4Addr::from(u32::from(self.node_base) + slot))
    }
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Persistent number.
    pub number: NodeNumber,
    /// Every MAC of the machine; the first is the one it was first seen with.
    pub macs: Vec<Mac>,
    /// Its rack.
    pub rack: RackName,
    /// Slot in the rack.
    pub slot: u32,
    /// SMBIOS UUID as reported; recorded, never used as identity.
    pub uuid: Option<String>,
    /// Retired: no MACs, number and slot kept for a replacement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// What the probe reported (CPUs, memory, product …); recorded only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inventory: BTreeMap<String, String>,
}

/// A machine seen by a rack whose policy holds new machines for manual
/// acceptance (`rackboot node accept`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMachine {
    /// Rack it was seen in.
    pub rack: RackName,
    /// Every MAC it reported.
    pub macs: Vec<Mac>,
    /// Reported UUID.
    pub uuid: Option<String>,
    /// Reported inventory.
    pub inventory: BTreeMap<String, String>,
    /// Unix seconds it was first reported.
    pub seen_at: u64,
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Name.
    pub name: ImageName,
    /// Kernel blob.
    pub kernel: BlobRef,
    /// Initrd blob.
    pub initrd: BlobRef,
    /// Default kernel command line.
    pub cmdline: String,
    /// Kernel version, when known.
    pub kernel_version: String,
    /// Kernel-module bundle for `kernel_version`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<BlobRef>,
    /// Device tree blob, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtb: Option<BlobRef>,
    /// Unix seconds at commit (stamped by the proposer).
    pub committed_at: u64,
}

impl Image {
    /// blake3 of the canonical encoding of the content (name excluded from
    /// nothing, time excluded): the same push gives the same hash.
    pub fn manifest_hash(&self) -> Blake3Digest {
        let mut canonical = serde_json::json!({
            "name": self.name,
            "kernel": self.kernel,
            "initrd": self.initrd,
            "cmdline": self.cmdline,
            "kernel_version": self.kernel_version,
        });
        // Absent from images without one, so their hashes stay as they were.
        if let (Some(m), Some(obj)) = (&self.modules, canonical.as_object_mut()) {
            obj.insert("modules".into(), serde_json::json!(m));
        }
        if let (Some(d), Some(obj)) = (&self.dtb, canonical.as_object_mut()) {
            obj.insert("dtb".into(), serde_json::json!(d));
        }
        Blake3Digest::of(canonical.to_string().as_bytes())
    }

    /// Every blob of the image: kernel, initrd, then the optional parts.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobRef> {
        [&self.kernel, &self.initrd]
            .into_iter()
            .chain(self.modules.as_ref())
            .chain(self.dtb.as_ref())
    }

    /// True when both describe the same content (commit time ignored).
    pub fn same_content(&self, other: &Image) -> bool {
        self.manifest_hash() == other.manifest_hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        let m: Mac = "AA-bb-CC-00-11-22".parse().expect("valid");
        assert_eq!(m.to_string(), "aa:bb:cc:00:11:22");
        assert_eq!(m.hyphenated(), "aa-bb-cc-00-11-22");
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "zz:bb:cc:dd:ee:ff",
            "aaa:b:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_round_trips() {
        let d = Blake3Digest::of(b"hello");
        let s = d.to_string();
        assert_eq!(s.parse::<Blake3Digest>(), Ok(d));
        assert!(s.to_uppercase().parse::<Blake3Digest>().is_err());
        assert!("00".parse::<Blake3Digest>().is_err());
    }

    #[test]
    fn names_validate() {
        assert!("compute:2026-11".parse::<ImageName>().is_ok());
        assert!("bad name".parse::<ImageName>().is_err());
        assert!("../x".parse::<ImageName>().is_err());
        assert!("r1".parse::<RackName>().is_ok());
        assert!("R1".parse::<RackName>().is_err());
    }

    #[test]
    fn rack_slots() {
        let r = Rack {
            name: "r1".parse().expect("valid"),
            subnet: "10.0.0.0/24".parse().expect("valid"),
            server_address: Ipv4Addr::new(10, 0, 0, 1),
            node_base: Ipv4Addr::new(10, 0, 0, 100),
            gateway: None,
        };
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(r.slot_count(), 155);
        assert_eq!(r.slot_address(0), Some(Ipv4Addr::new(10, 0, 0, 100)));
        assert_eq!(r.slot_address(154), Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(r.slot_address(155), None);
    }
}
