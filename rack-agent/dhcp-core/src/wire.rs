//! The edge: raw request bytes → a checked [`Packet`] (fixed header plus
//! option TLVs), or a [`MalformedError`] naming what is wrong.
//!
//! Requests are parsed here rather than with `dhcproto`'s decoder on purpose:
//! `dhcproto` 0.15 has `debug_assert!`s on option lengths (options 80, 81,
//! 94, 152–155) that panic in debug builds on hostile input (verified), its
//! `Message::chaddr()` panics when `hlen` > 16, and it silently stops at the
//! first option it cannot decode, losing every option after it. This walker only checks TLV framing and keeps raw
//! values; [`crate::client`] interprets the few options the server needs.
//! `dhcproto` is used to build and encode replies.

use std::net::Ipv4Addr;

/// The DHCP magic cookie (RFC 2131 §3).
pub(crate) const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header (236 bytes) plus the magic cookie.
pub(crate) const HEADER_LEN: usize = 240;

/// BOOTP `op` value of a request.
pub(crate) const OP_BOOTREQUEST: u8 = 1;
/// `htype` of Ethernet.
pub(crate) const HTYPE_ETHERNET: u8 = 1;

const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;
/// Option 52, option overload (RFC 2132 §9.3).
pub(crate) const OPT_OVERLOAD: u8 = 52;

/// Why a packet could not be read as a BOOTP/DHCP request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedError {
    /// Shorter than the 240-byte header plus cookie.
    #[error("packet is {len} bytes, shorter than the {HEADER_LEN}-byte BOOTP header and cookie")]
    TooShort {
        /// Length received.
        len: usize,
    },
    /// The four bytes after the header are neither the DHCP cookie nor zeros.
    #[error("bad magic cookie {magic:?}")]
    BadMagic {
        /// The bytes found.
        magic: [u8; 4],
    },
    /// An option's length runs past the end of its area.
    #[error("option {code} at offset {offset} of the {area} runs past the end of it")]
    OptionTruncated {
        /// Option code.
        code: u8,
        /// Offset of the option's code byte within its area.
        offset: usize,
        /// `options`, `file` or `sname`.
        area: &'static str,
    },
    /// An option the server acts on has the wrong length.
    #[error("option {code} has length {len}, expected {expected}")]
    BadOptionLength {
        /// Option code.
        code: u8,
        /// Length received.
        len: usize,
        /// Length required.
        expected: usize,
    },
    /// Option 52 (overload) names areas other than 1, 2 or 3.
    #[error("option overload value {value} is not 1, 2 or 3")]
    BadOverload {
        /// Value received.
        value: u8,
    },
}

/// The fixed BOOTP header of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
}

/// Option values by code, in first-seen order. Repeated codes are
/// concatenated (RFC 3396), across the options, `file` and `sname` areas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Options {
    entries: Vec<(u8, Vec<u8>)>,
}

impl Options {
    /// The value of option `code`, if present.
    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of option `code`, which must be exactly `N` bytes long.
    pub fn get_exact<const N: usize>(&self, code: u8) -> Result<Option<[u8; N]>, MalformedError> {
        match self.get(code) {
            None => Ok(None),
            Some(v) => v
                .try_into()
                .map(Some)
                .map_err(|_| MalformedError::BadOptionLength {
                    code,
                    len: v.len(),
                    expected: N,
                }),
        }
    }

    fn push(&mut self, code: u8, value: &[u8]) {
        match self.entries.iter_mut().find(|(c, _)| *c == code) {
            Some((_, v)) => v.extend_from_slice(value),
            None => self.entries.push((code, value.to_vec())),
        }
    }
}

/// A request whose framing has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub header: Header,
    pub options: Options,
}

fn u32_at(head: &[u8; HEADER_LEN], at: usize) -> u32 {
    let b = |i: usize| head.get(at + i).copied().unwrap_or(0);
    u32::from_be_bytes([b(0), b(1), b(2), b(3)])
}

/// Parse the header and options of a request. Header fields are not judged
/// here (op, htype, hlen are the caller's business); only framing is.
pub(crate) fn parse(bytes: &[u8]) -> Result<Packet, MalformedError> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(MalformedError::TooShort { len: bytes.len() })?;
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&head[28..44]);
    let header = Header {
        op: head[0],
        htype: head[1],
        hlen: head[2],
        xid: u32_at(head, 4),
        flags: u16::from_be_bytes([head[10], head[11]]),
        ciaddr: Ipv4Addr::from(u32_at(head, 12)),
        giaddr: Ipv4Addr::from(u32_at(head, 24)),
        chaddr,
    };
    let magic = [head[236], head[237], head[238], head[239]];
    let mut options = Options::default();
    if magic == MAGIC {
        let rest = bytes.get(HEADER_LEN..).unwrap_or_default();
        walk(rest, "options", &mut options)?;
        if let Some(v) = options.get(OPT_OVERLOAD) {
            let value = match v {
                [value] => *value,
                _ => {
                    return Err(MalformedError::BadOptionLength {
                        code: OPT_OVERLOAD,
                        len: v.len(),
                        expected: 1,
                    });
                }
            };
            if !(1..=3).contains(&value) {
                return Err(MalformedError::BadOverload { value });
            }
            // RFC 2131 §4.1: options, then `file`, then `sname`.
            if value & 1 != 0 {
                walk(&head[108..236], "file", &mut options)?;
            }
            if value & 2 != 0 {
                walk(&head[44..108], "sname", &mut options)?;
            }
        }
    } else if magic != [0; 4] {
        // All zeros is a plain RFC 951 BOOTP request with an empty vendor area.
        return Err(MalformedError::BadMagic { magic });
    }
    Ok(Packet { header, options })
}

/// Walk one option area. Stops at End or at the end of the area (a missing
/// End is tolerated); errors if an option's length runs past the area.
fn walk(area: &[u8], name: &'static str, out: &mut Options) -> Result<(), MalformedError> {
    let mut at = 0usize;
    while let Some(&code) = area.get(at) {
        match code {
            OPT_PAD => at += 1,
            OPT_END => return Ok(()),
            _ => {
                let truncated = MalformedError::OptionTruncated {
                    code,
                    offset: at,
                    area: name,
                };
                let len = usize::from(*area.get(at + 1).ok_or_else(|| truncated.clone())?);
                let value = area.get(at + 2..at + 2 + len).ok_or(truncated)?;
                out.push(code, value);
                at += 2 + len;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[236..240].copy_from_slice(&MAGIC);
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn header_fields() {
        let mut p = packet(&[255]);
        p[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p[10] = 0x80;
        p[12..16].copy_from_slice(&[10, 0, 0, 5]);
        p[24..28].copy_from_slice(&[10, 1, 0, 1]);
        p[28..34].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let parsed = parse(&p).expect("parse");
        assert_eq!(parsed.header.xid, 0xdead_beef);
        assert_eq!(parsed.header.flags, 0x8000);
        assert_eq!(parsed.header.ciaddr, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(parsed.header.giaddr, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(parsed.header.chaddr[..6], [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn pads_end_and_concatenation() {
        let p = packet(&[
            0, 0, 53, 1, 1, 12, 2, b'a', b'b', 0, 12, 1, b'c', 255, 12, 1, b'z',
        ]);
        let parsed = parse(&p).expect("parse");
        assert_eq!(parsed.options.get(53), Some(&[1u8][..]));
        assert_eq!(parsed.options.get(12), Some(&b"abc"[..]));
    }

    #[test]
    fn missing_end_is_tolerated() {
        let parsed = parse(&packet(&[53, 1, 1])).expect("parse");
        assert_eq!(parsed.options.get(53), Some(&[1u8][..]));
    }

    #[test]
    fn truncated_option() {
        assert_eq!(
            parse(&packet(&[53, 1, 1, 60, 9, b'P'])),
            Err(MalformedError::OptionTruncated {
                code: 60,
                offset: 3,
                area: "options"
            })
        );
        assert!(matches!(
            parse(&packet(&[53])),
            Err(MalformedError::OptionTruncated { code: 53, .. })
        ));
    }

    #[test]
    fn too_short_and_bad_magic() {
        assert_eq!(parse(&[1; 239]), Err(MalformedError::TooShort { len: 239 }));
        let mut p = packet(&[255]);
        p[236] = 1;
        assert!(matches!(parse(&p), Err(MalformedError::BadMagic { .. })));
        p[236..240].copy_from_slice(&[0; 4]);
        assert_eq!(parse(&p).expect("bootp").options, Options::default());
    }

    #[test]
    fn overload_reads_file_then_sname() {
        let mut p = packet(&[52, 1, 3, 53, 1, 3, 255]);
        p[108..113].copy_from_slice(&[12, 2, b'n', b'1', 255]);
        p[44..48].copy_from_slice(&[12, 1, b'7', 255]);
        let parsed = parse(&p).expect("parse");
        assert_eq!(parsed.options.get(12), Some(&b"n17"[..]));
        // An option in `file` that runs past its 128 bytes is malformed.
        p[108..110].copy_from_slice(&[12, 200]);
        assert!(matches!(
            parse(&p),
            Err(MalformedError::OptionTruncated { area: "file", .. })
        ));
    }

    #[test]
    fn bad_overload() {
        assert_eq!(
            parse(&packet(&[52, 1, 4, 255])),
            Err(MalformedError::BadOverload { value: 4 })
        );
        assert!(matches!(
            parse(&packet(&[52, 2, 1, 1, 255])),
            Err(MalformedError::BadOptionLength { code: 52, .. })
        ));
    }

    #[test]
    fn get_exact() {
        let parsed = parse(&packet(&[54, 3, 1, 2, 3, 57, 2, 5, 192])).expect("parse");
        assert!(parsed.options.get_exact::<4>(54).is_err());
        assert_eq!(parsed.options.get_exact::<2>(57), Ok(Some([5, 192])));
        assert_eq!(parsed.options.get_exact::<4>(50), Ok(None));
    }
}
