//! The probe report: what `rackboot probe`, run in the discovery image, tells
//! the agent about a machine in one DHCPINFORM.
//!
//! A machine seen for the first time gets a provisional lease and boots the
//! discovery image; the probe there sends a DHCPINFORM from its provisional
//! address carrying **every** MAC of the machine in option
//! [`OPTION_MACS`] (6 bytes each) and a short inventory in option
//! [`OPTION_INVENTORY`] (`key=value` lines). The agent asks the coordinator
//! to number the machine with all those MACs at once, so a two-NIC machine
//! becomes one node with two MACs, never two nodes. The answer (an INFORM
//! ACK) carries option 12 `n<number>` once the machine is numbered; the
//! probe repeats its INFORM until then.
//!
//! A report counts only with the **probe token** the machine was handed in
//! its discovery boot parameters (`rackboot.token=<hex>`, option
//! [`OPTION_TOKEN`]): a keyed blake3 hash of the machine's MAC and its
//! provisional address under a secret only the agent holds
//! ([`ProbeKey`]). A host on the rack that forges a report without having
//! leased that address with that MAC and fetched its discovery script
//! cannot produce one.
//!
//! All three options are in the site-specific range (RFC 2132 §2: 128–254
//! are site-specific; 224–254 are left unassigned by RFC 3942).

use std::net::Ipv4Addr;

use crate::mac::Mac;

/// Option code of the MAC list: `n × 6` bytes, every MAC of the machine.
pub const OPTION_MACS: u8 = 224;
/// Option code of the inventory: UTF-8 `key=value` lines.
pub const OPTION_INVENTORY: u8 = 225;
/// Option code of the probe token: [`TOKEN_LEN`] bytes.
pub const OPTION_TOKEN: u8 = 226;
/// Bytes of a probe token.
pub const TOKEN_LEN: usize = 32;
/// The kernel parameter that hands the token to the discovery image.
pub const TOKEN_PARAM: &str = "rackboot.token";
/// MACs that fit in one option (255 / 6).
pub const MAX_MACS: usize = 42;
/// Inventory entries kept.
pub const MAX_INVENTORY: usize = 16;

/// The agent's secret for probe tokens. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct ProbeKey([u8; 32]);

impl std::fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeKey(..)")
    }
}

impl ProbeKey {
    /// A key from 32 secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        ProbeKey(bytes)
    }

    /// The token of the machine `mac` at its provisional address `addr`.
    pub fn token(&self, mac: Mac, addr: Ipv4Addr) -> ProbeToken {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"rackboot probe token v1\0");
        h.update(&mac.0);
        h.update(&addr.octets());
        ProbeToken(h.finalize())
    }

    /// Whether `sent` (option [`OPTION_TOKEN`]'s payload) is the token of
    /// `mac` at `addr` (compared in constant time).
    pub fn verify(&self, mac: Mac, addr: Ipv4Addr, sent: &[u8]) -> bool {
        let Ok(bytes) = <[u8; TOKEN_LEN]>::try_from(sent) else {
            return false;
        };
        self.token(mac, addr).0 == blake3::Hash::from_bytes(bytes)
    }
}

/// A probe token (see the module docs); `Display` and `FromStr` use hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeToken(blake3::Hash);

impl ProbeToken {
    /// The option payload.
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        self.0.as_bytes()
    }
}

impl std::fmt::Display for ProbeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.to_hex().as_str())
    }
}

/// A token that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a probe token is {} hex digits", TOKEN_LEN * 2)]
pub struct BadToken;

impl std::str::FromStr for ProbeToken {
    type Err = BadToken;
    fn from_str(s: &str) -> Result<Self, BadToken> {
        blake3::Hash::from_hex(s.trim())
            .map(ProbeToken)
            .map_err(|_| BadToken)
    }
}

/// The token in a kernel command line (`rackboot.token=<hex>`), if any.
pub fn token_from_cmdline(cmdline: &str) -> Option<Result<ProbeToken, BadToken>> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(TOKEN_PARAM)?.strip_prefix('='))
        .map(str::parse)
}

/// A probe report read from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Every MAC the machine reported, the asking one (`chaddr`) first,
    /// unicast only, without duplicates.
    pub macs: Vec<Mac>,
    /// Inventory entries (keys `[a-z0-9_]{1,32}`, values ≤ 128 bytes,
    /// printable), in the order sent.
    pub inventory: Vec<(String, String)>,
}

impl ProbeReport {
    /// Read the report from option payloads: `macs` is option
    /// [`OPTION_MACS`], `inventory` option [`OPTION_INVENTORY`]. `None` when
    /// the MAC option is absent or its length is not a multiple of 6.
    /// Entries that break the rules are skipped, never trusted.
    pub fn from_options(
        chaddr: Mac,
        macs: Option<&[u8]>,
        inventory: Option<&[u8]>,
    ) -> Option<Self> {
        let raw = macs?;
        if raw.is_empty() || raw.len() % 6 != 0 {
            return None;
        }
        let mut list = vec![chaddr];
        for chunk in raw.chunks_exact(6) {
            let Ok(bytes) = <[u8; 6]>::try_from(chunk) else {
                continue;
            };
            let mac = Mac(bytes);
            if mac.is_unicast() && !list.contains(&mac) && list.len() < MAX_MACS {
                list.push(mac);
            }
        }
        let mut inv = Vec::new();
        if let Some(text) = inventory {
            for line in String::from_utf8_lossy(text).lines() {
                if inv.len() >= MAX_INVENTORY {
                    break;
                }
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                let key_ok = (1..=32).contains(&k.len())
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                let value_ok = v.len() <= 128 && v.chars().all(|c| !c.is_control());
                if key_ok && value_ok {
                    inv.push((k.to_string(), v.to_string()));
                }
            }
        }
        Some(ProbeReport {
            macs: list,
            inventory: inv,
        })
    }

    /// Encode the MAC option payload (at most [`MAX_MACS`] MACs).
    pub fn encode_macs(macs: &[Mac]) -> Vec<u8> {
        macs.iter().take(MAX_MACS).flat_map(|m| m.0).collect()
    }

    /// Encode the inventory option payload: `key=value` lines, cut at a line
    /// boundary to fit one option (255 bytes).
    pub fn encode_inventory(inventory: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in inventory.iter().take(MAX_INVENTORY) {
            let line = format!("{k}={v}\n");
            if out.len() + line.len() > 255 {
                break;
            }
            out.extend_from_slice(line.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 2]);

    #[test]
    fn round_trip_puts_chaddr_first_and_dedups() {
        let macs = ProbeReport::encode_macs(&[B, A, B]);
        let inv = ProbeReport::encode_inventory(&[
            ("cpus".into(), "4".into()),
            ("product".into(), "Standard PC".into()),
        ]);
        let r = ProbeReport::from_options(A, Some(&macs), Some(&inv));
        assert_eq!(
            r,
            Some(ProbeReport {
                macs: vec![A, B],
                inventory: vec![
                    ("cpus".into(), "4".into()),
                    ("product".into(), "Standard PC".into())
                ],
            })
        );
    }

    #[test]
    fn bad_lengths_and_entries_are_refused_or_skipped() {
        assert_eq!(ProbeReport::from_options(A, None, None), None);
        assert_eq!(ProbeReport::from_options(A, Some(&[]), None), None);
        assert_eq!(ProbeReport::from_options(A, Some(&[1, 2, 3]), None), None);
        // Multicast and zero MACs are skipped.
        let r = ProbeReport::from_options(A, Some(&[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(r.map(|r| r.macs), Some(vec![A]));
        let inv = b"Bad=1\nok=2\nnoequals\nctl=\x07\nk=v\n";
        let r = ProbeReport::from_options(A, Some(&A.0), Some(inv));
        assert_eq!(
            r.map(|r| r.inventory),
            Some(vec![("ok".into(), "2".into()), ("k".into(), "v".into())])
        );
    }

    #[test]
    fn tokens_bind_mac_and_address_under_the_key() {
        let key = ProbeKey::new([7; 32]);
        let addr = Ipv4Addr::new(10, 0, 0, 200);
        let t = key.token(A, addr);
        assert!(key.verify(A, addr, t.as_bytes()));
        assert!(!key.verify(B, addr, t.as_bytes()), "another MAC");
        assert!(!key.verify(A, Ipv4Addr::new(10, 0, 0, 201), t.as_bytes()));
        assert!(!ProbeKey::new([8; 32]).verify(A, addr, t.as_bytes()));
        assert!(!key.verify(A, addr, &t.as_bytes()[..31]), "short");
        assert!(!key.verify(A, addr, &[]));
        let line = format!("console=ttyS0 {TOKEN_PARAM}={t} quiet");
        assert_eq!(token_from_cmdline(&line), Some(Ok(t)));
        assert_eq!(token_from_cmdline("rackboot.token=zz"), Some(Err(BadToken)));
        assert_eq!(token_from_cmdline("rackboot.tokenx=1 quiet"), None);
        assert_eq!(format!("{key:?}"), "ProbeKey(..)");
    }

    #[test]
    fn encoding_fits_one_option() {
        let many: Vec<Mac> = (0..100u8).map(|i| Mac([2, 0, 0, 0, 1, i])).collect();
        assert_eq!(ProbeReport::encode_macs(&many).len(), MAX_MACS * 6);
        let inv: Vec<(String, String)> = (0..40)
            .map(|i| (format!("key{i}"), "x".repeat(30)))
            .collect();
        assert!(ProbeReport::encode_inventory(&inv).len() <= 255);
    }
}
