//! Transfer modes (RFC 1350) and the netascii conversion.

use bytes::{BufMut, Bytes, BytesMut};

/// The transfer mode named in a request. Matched case-insensitively on the
/// wire and always encoded in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Raw 8-bit bytes; what every boot client uses.
    Octet,
    /// Text with CR LF line ends (`\n` → `\r\n`, `\r` → `\r\0`).
    Netascii,
    /// Obsolete mail delivery mode; parsed but always refused.
    Mail,
}

impl Mode {
    /// Parses a mode name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Mode> {
        if name.eq_ignore_ascii_case("octet") {
            Some(Mode::Octet)
        } else if name.eq_ignore_ascii_case("netascii") {
            Some(Mode::Netascii)
        } else if name.eq_ignore_ascii_case("mail") {
            Some(Mode::Mail)
        } else {
            None
        }
    }

    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
        }
    }
}

/// Converts file content to netascii: every `\n` becomes `\r\n` and every
/// bare `\r` becomes `\r\0` (RFC 764). Returns the input unchanged (no copy)
/// when it contains neither.
pub(crate) fn to_netascii(data: &Bytes) -> Bytes {
    let extra = data.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    if extra == 0 {
        return data.clone();
    }
    let mut out = BytesMut::with_capacity(data.len().saturating_add(extra));
    for &b in data.iter() {
        match b {
            b'\n' => out.put_slice(b"\r\n"),
            b'\r' => out.put_slice(b"\r\0"),
            other => out.put_u8(other),
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(Mode::from_name("OcTeT"), Some(Mode::Octet));
        assert_eq!(Mode::from_name("NETASCII"), Some(Mode::Netascii));
        assert_eq!(Mode::from_name("mail"), Some(Mode::Mail));
        assert_eq!(Mode::from_name("binary"), None);
    }

    #[test]
    fn netascii_converts_line_ends() {
        let input = Bytes::from_static(b"a\nb\rc");
        assert_eq!(&to_netascii(&input)[..], b"a\r\nb\r\0c");
        let plain = Bytes::from_static(b"abc");
        assert_eq!(to_netascii(&plain), plain);
    }
}
