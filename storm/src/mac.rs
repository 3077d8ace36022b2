//! The emulated clients' MAC addresses: `--mac-base` parsed into a number,
//! and a number back into six bytes (client `i` is base + `i`).

use crate::error::StormError;

/// `--mac-base` (`52:54:00:00:00:00` or with `-`) as a 48-bit number.
pub(crate) fn parse_mac(s: &str) -> Result<u64, StormError> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(StormError::Args(format!(
            "--mac-base {s}: expected six hex bytes"
        )));
    }
    let mut v = 0u64;
    for p in parts {
        let byte = u8::from_str_radix(p, 16).map_err(|source| StormError::MacBase {
            mac: s.to_string(),
            source,
        })?;
        v = (v << 8) | u64::from(byte);
    }
    Ok(v)
}

/// The low 48 bits of `v` as a MAC.
pub(crate) fn mac_bytes(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mac_base_round_trips_and_names_the_flag_when_wrong() {
        let v = parse_mac("52:54:00:ab:cd:ef").unwrap();
        assert_eq!(mac_bytes(v), [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        assert_eq!(parse_mac("52-54-00-ab-cd-ef").unwrap(), v);
        assert_eq!(
            parse_mac("52:54:00").unwrap_err().to_string(),
            "--mac-base 52:54:00: expected six hex bytes"
        );
        let e = parse_mac("52:54:00:zz:00:00").unwrap_err();
        assert_eq!(e.to_string(), "--mac-base 52:54:00:zz:00:00");
        assert!(std::error::Error::source(&e).is_some());
    }
}
