//! Option negotiation: blksize (RFC 2348), tsize and timeout (RFC 2349),
//! windowsize (RFC 7440), within the OACK framework of RFC 2347.
//!
//! Rules:
//! - `blksize`: values below 8 are ignored; larger ones are clamped to
//!   65464 and then to the server's [`OptionLimits::max_blksize`].
//! - `windowsize`: 0 is ignored; larger ones are clamped to 65535 and then to
//!   [`OptionLimits::max_windowsize`].
//! - `timeout`: 1..=255 seconds is accepted and echoed, anything else is
//!   ignored. The server keeps its own (shorter) retransmit timer regardless.
//! - `tsize`: answered with the file size, whatever value the client sent.
//! - Unknown options and unparsable values are left out of the OACK.
//! - No accepted options → no OACK; the transfer starts with DATA 1 of 512
//!   bytes in lockstep, as plain RFC 1350.

use crate::packet::RawOption;

/// Block size when none is negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest valid `blksize` (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest valid `blksize` (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;

/// Server-side limits applied during negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionLimits {
    /// Largest block size granted (8..=65464).
    pub max_blksize: u16,
    /// Largest window granted (1..=65535).
    pub max_windowsize: u16,
}

/// The parameters of one transfer after negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent per window; 1 is lockstep.
    pub windowsize: u16,
    /// Accepted client timeout, in seconds.
    pub timeout: Option<u8>,
    /// Reported transfer size, when the client asked.
    pub tsize: Option<u64>,
    /// Options for the OACK in request order; empty means send no OACK.
    pub oack: Vec<RawOption>,
}

impl Negotiated {
    /// Whether the transfer begins with an OACK (and waits for ACK 0).
    pub fn has_oack(&self) -> bool {
        !self.oack.is_empty()
    }
}

/// Negotiates the requested options for a file of `file_size` bytes.
pub fn negotiate(requested: &[RawOption], file_size: u64, limits: OptionLimits) -> Negotiated {
    let mut out = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: None,
        tsize: None,
        oack: Vec::new(),
    };
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let max_windowsize = limits.max_windowsize.max(1);
    for option in requested {
        let value = option.value.parse::<u64>().ok();
        let accepted = match (option.name.as_str(), value) {
            ("blksize", Some(v)) if v >= u64::from(MIN_BLKSIZE) => {
                let v = clamp_u16(v, max_blksize);
                out.blksize = v;
                Some(v.to_string())
            }
            ("windowsize", Some(v)) if v >= 1 => {
                let v = clamp_u16(v, max_windowsize);
                out.windowsize = v;
                Some(v.to_string())
            }
            ("timeout", Some(v @ 1..=255)) => {
                out.timeout = u8::try_from(v).ok();
                Some(v.to_string())
            }
            ("tsize", _) => {
                out.tsize = Some(file_size);
                Some(file_size.to_string())
            }
            _ => None,
        };
        if let Some(value) = accepted {
            out.oack.push(RawOption {
                name: option.name.clone(),
                value,
            });
        }
    }
    out
}

fn clamp_u16(v: u64, max: u16) -> u16 {
    u16::try_from(v).map_or(max, |v| v.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OptionLimits = OptionLimits {
        max_blksize: 1468,
        max_windowsize: 8,
    };

    fn opts(pairs: &[(&str, &str)]) -> Vec<RawOption> {
        pairs.iter().map(|(n, v)| RawOption::new(*n, *v)).collect()
    }

    fn oack(n: &Negotiated) -> Vec<(&str, &str)> {
        n.oack
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_str()))
            .collect()
    }

    #[test]
    fn no_options_means_no_oack() {
        let n = negotiate(&[], 100, LIMITS);
        assert!(!n.has_oack());
        assert_eq!((n.blksize, n.windowsize), (512, 1));
    }

    #[test]
    fn unknown_options_are_ignored() {
        let n = negotiate(&opts(&[("multicast", ""), ("rollover", "0")]), 100, LIMITS);
        assert!(!n.has_oack());
    }

    #[test]
    fn edk2_first_request() {
        let n = negotiate(
            &opts(&[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]),
            8_000_000,
            LIMITS,
        );
        assert_eq!(
            oack(&n),
            [
                ("tsize", "8000000"),
                ("blksize", "1468"),
                ("windowsize", "4")
            ]
        );
        assert_eq!(
            (n.blksize, n.windowsize, n.tsize),
            (1468, 4, Some(8_000_000))
        );
    }

    #[test]
    fn clamps_to_limits() {
        let n = negotiate(
            &opts(&[("blksize", "65464"), ("windowsize", "64")]),
            1,
            LIMITS,
        );
        assert_eq!(oack(&n), [("blksize", "1468"), ("windowsize", "8")]);
        let n = negotiate(&opts(&[("blksize", "99999999999999999999")]), 1, LIMITS);
        assert!(!n.has_oack(), "unparsable values are ignored");
        let n = negotiate(&opts(&[("blksize", "70000")]), 1, LIMITS);
        assert_eq!(oack(&n), [("blksize", "1468")]);
    }

    #[test]
    fn out_of_range_values_are_ignored() {
        let n = negotiate(
            &opts(&[
                ("blksize", "7"),
                ("windowsize", "0"),
                ("timeout", "0"),
                ("timeout2", "1"),
            ]),
            1,
            LIMITS,
        );
        assert!(!n.has_oack());
        let n = negotiate(&opts(&[("timeout", "256")]), 1, LIMITS);
        assert!(!n.has_oack());
        let n = negotiate(&opts(&[("timeout", "255"), ("blksize", "8")]), 1, LIMITS);
        assert_eq!(oack(&n), [("timeout", "255"), ("blksize", "8")]);
        assert_eq!(n.timeout, Some(255));
    }

    #[test]
    fn tsize_answers_file_size_whatever_was_sent() {
        let n = negotiate(&opts(&[("tsize", "junk")]), 42, LIMITS);
        assert_eq!(oack(&n), [("tsize", "42")]);
    }
}
