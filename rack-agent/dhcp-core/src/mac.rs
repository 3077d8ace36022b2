//! `Mac`: a validated 48-bit Ethernet hardware address.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet hardware address (the `chaddr` of a DHCP request with
/// `htype` 1 and `hlen` 6).
///
/// Displays as lowercase colon-separated hex (`aa:bb:cc:dd:ee:ff`); parses
/// from colon- or hyphen-separated hex in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The address as lowercase hex joined by hyphens (`aa-bb-cc-dd-ee-ff`),
    /// the form used in boot file templates and `pxelinux.cfg/01-…` names.
    pub fn hyphenated(&self) -> String {
        self.join('-')
    }

    /// True for an address that can name one machine: not all zeros and
    /// without the group (multicast/broadcast) bit.
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 0x01 == 0
    }

    fn join(&self, sep: char) -> String {
        let mut out = String::with_capacity(17);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(sep);
            }
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
        out
    }
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('?')
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join(':'))
    }
}

impl From<[u8; 6]> for Mac {
    fn from(bytes: [u8; 6]) -> Self {
        Mac(bytes)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacParseError {
    /// The string does not have six `:`- or `-`-separated groups.
    #[error("MAC address {input:?} must have six groups separated by ':' or '-'")]
    GroupCount {
        /// The rejected input.
        input: String,
    },
    /// A group is not one or two hex digits.
    #[error("MAC address {input:?} has a bad group {group:?} (want two hex digits)")]
    BadGroup {
        /// The rejected input.
        input: String,
        /// The offending group.
        group: String,
    },
}

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let groups: Vec<&str> = s.split(sep).collect();
        if groups.len() != 6 {
            return Err(MacParseError::GroupCount {
                input: s.to_owned(),
            });
        }
        let mut out = [0u8; 6];
        for (slot, group) in out.iter_mut().zip(groups) {
            let ok = (1..=2).contains(&group.len()) && group.chars().all(|c| c.is_ascii_hexdigit());
            *slot = match u8::from_str_radix(group, 16) {
                Ok(b) if ok => b,
                _ => {
                    return Err(MacParseError::BadGroup {
                        input: s.to_owned(),
                        group: group.to_owned(),
                    });
                }
            };
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_hyphenated() {
        let mac = Mac([0x52, 0x54, 0x00, 0x0a, 0xbc, 0xff]);
        assert_eq!(mac.to_string(), "52:54:00:0a:bc:ff");
        assert_eq!(mac.hyphenated(), "52-54-00-0a-bc-ff");
    }

    #[test]
    fn parse_round_trip_and_separators() {
        let mac = Mac([0x52, 0x54, 0x00, 0x0a, 0xbc, 0xff]);
        assert_eq!("52:54:00:0a:bc:ff".parse::<Mac>(), Ok(mac));
        assert_eq!("52-54-00-0A-BC-FF".parse::<Mac>(), Ok(mac));
        assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
    }

    #[test]
    fn parse_rejects_bad_input() {
        for bad in [
            "",
            "52:54:00:0a:bc",
            "52:54:00:0a:bc:ff:00",
            "52:54:00:0a:bc:fg",
            "52:54:00:0a:bc:+f",
            "52:54:00:0a:bc:",
            "525:4:00:0a:bc:ff",
            "52:54-00:0a:bc:ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn unicast() {
        assert!(Mac([0x52, 0x54, 0, 0, 0, 1]).is_unicast());
        assert!(!Mac([0; 6]).is_unicast());
        assert!(!Mac([0xff; 6]).is_unicast());
        assert!(!Mac([0x01, 0, 0x5e, 0, 0, 1]).is_unicast());
    }
}
