//! The agent's probe-token secret (`<data>/probe.key`, 32 random bytes,
//! mode 0600): created on first start and kept across restarts, so a
//! discovery image booted before a restart still reports with a valid token.

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous storage: called once at start, on a blocking thread"
)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rackboot_dhcp_core::ProbeKey;

/// File name under the data directory.
pub const FILE: &str = "probe.key";

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ProbeKeyError {
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not 32 bytes.
    #[error("{path}: holds {len} bytes, not 32 (remove it to make a new key)")]
    Length {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The system random source failed.
    #[error("no random bytes for a new probe key: {0}")]
    Random(String),
}

/// Load the key from `data_dir`, or create it.
pub fn load_or_create(data_dir: &Path) -> Result<ProbeKey, ProbeKeyError> {
    let path = data_dir.join(FILE);
    let io = |source| ProbeKeyError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let len = bytes.len();
            let key = <[u8; 32]>::try_from(bytes).map_err(|_| ProbeKeyError::Length {
                path: path.clone(),
                len,
            })?;
            return Ok(ProbeKey::new(key));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| ProbeKeyError::Random(e.to_string()))?;
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&key).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(ProbeKey::new(key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(dir.path()).unwrap();
        let (mac, addr) = (
            rackboot_dhcp_core::Mac([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::LOCALHOST,
        );
        assert_eq!(a.token(mac, addr), b.token(mac, addr), "kept across starts");
        let other = tempfile::tempdir().unwrap();
        let c = load_or_create(other.path()).unwrap();
        assert_ne!(a.token(mac, addr), c.token(mac, addr), "random per agent");
        std::fs::write(dir.path().join(FILE), b"short").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(ProbeKeyError::Length { len: 5, .. })
        ));
    }
}
