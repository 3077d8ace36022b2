//! The kernel release in a Linux x86 boot image (bzImage).
//!
//! The setup header (Documentation/arch/x86/boot.rst) carries the signature
//! `HdrS` at 0x202, the boot protocol version at 0x206 and, from protocol
//! 2.00, a 16-bit pointer at 0x20E: the version string sits at that value +
//! 0x200, NUL-terminated, e.g. `6.1.0-27-amd64 (debian-kernel@…) #1 SMP …`.
//! Its first word is the release `uname -r` prints, the name of the
//! `lib/modules/<release>/` directory.

use thiserror::Error;

const SIGNATURE_AT: usize = 0x202;
const PROTOCOL_AT: usize = 0x206;
const VERSION_PTR_AT: usize = 0x20E;
/// The longest version string read.
const MAX_VERSION_LEN: usize = 512;

/// Why no release could be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KernelError {
    /// No boot-protocol signature.
    #[error("not a Linux x86 boot image: no 'HdrS' signature at offset 0x202")]
    NotBzImage,
    /// Protocol too old to carry a version string.
    #[error("boot protocol {0:#06x} predates the kernel version field (needs 2.00 or later)")]
    OldProtocol(u16),
    /// The pointer is zero or outside the image.
    #[error("the setup header names no kernel version string inside the image")]
    NoVersion,
    /// No NUL within the bound.
    #[error(
        "the kernel version string at offset {0:#x} is not terminated within {MAX_VERSION_LEN} bytes"
    )]
    Unterminated(usize),
    /// Not printable ASCII, or empty.
    #[error("the kernel version string at offset {0:#x} is empty or not printable text")]
    NotText(usize),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// The whole version string of a bzImage.
pub fn kernel_version_string(image: &[u8]) -> Result<&str, KernelError> {
    if image.get(SIGNATURE_AT..SIGNATURE_AT + 4) != Some(b"HdrS") {
        return Err(KernelError::NotBzImage);
    }
    let protocol = u16_at(image, PROTOCOL_AT).ok_or(KernelError::NotBzImage)?;
    if protocol < 0x0200 {
        return Err(KernelError::OldProtocol(protocol));
    }
    let ptr = u16_at(image, VERSION_PTR_AT).ok_or(KernelError::NoVersion)?;
    if ptr == 0 {
        return Err(KernelError::NoVersion);
    }
    let at = usize::from(ptr) + 0x200;
    let rest = image.get(at..).ok_or(KernelError::NoVersion)?;
    let window = &rest[..rest.len().min(MAX_VERSION_LEN)];
    let end = window
        .iter()
        .position(|&c| c == 0)
        .ok_or(KernelError::Unterminated(at))?;
    let text = std::str::from_utf8(&window[..end]).map_err(|_| KernelError::NotText(at))?;
    if text.trim().is_empty() || text.chars().any(|c| !(c.is_ascii_graphic() || c == ' ')) {
        return Err(KernelError::NotText(at));
    }
    Ok(text)
}

/// The release (`uname -r`) of a bzImage: the first word of its version string.
pub fn kernel_release(image: &[u8]) -> Result<String, KernelError> {
    let text = kernel_version_string(image)?;
    let at = usize::from(u16_at(image, VERSION_PTR_AT).unwrap_or(0)) + 0x200;
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or(KernelError::NotText(at))
}

/// Build a minimal image with this version string (tests, fuzz seeds).
pub fn synthetic_bzimage(version: &str) -> Vec<u8> {
    let mut b = vec![0u8; 0x400];
    b[SIGNATURE_AT..SIGNATURE_AT + 4].copy_from_slice(b"HdrS");
    b[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    let ptr: u16 = 0x100; // string at 0x300
    b[VERSION_PTR_AT..VERSION_PTR_AT + 2].copy_from_slice(&ptr.to_le_bytes());
    b.truncate(0x300);
    b.extend_from_slice(version.as_bytes());
    b.push(0);
    b.extend_from_slice(&[0x90; 64]);
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_release_word() {
        let img = synthetic_bzimage("6.1.0-27-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(kernel_release(&img).unwrap(), "6.1.0-27-amd64");
        assert!(kernel_version_string(&img).unwrap().ends_with("#1 SMP"));
    }

    #[test]
    fn refuses_what_is_not_a_bzimage() {
        assert_eq!(kernel_release(b"").unwrap_err(), KernelError::NotBzImage);
        assert_eq!(
            kernel_release(&[0u8; 4096]).unwrap_err(),
            KernelError::NotBzImage
        );
        let mut old = synthetic_bzimage("6.1");
        old[PROTOCOL_AT..PROTOCOL_AT + 2].copy_from_slice(&0x0104u16.to_le_bytes());
        assert_eq!(
            kernel_release(&old).unwrap_err(),
            KernelError::OldProtocol(0x0104)
        );
        let mut none = synthetic_bzimage("6.1");
        none[VERSION_PTR_AT] = 0;
        none[VERSION_PTR_AT + 1] = 0;
        assert_eq!(kernel_release(&none).unwrap_err(), KernelError::NoVersion);
        let mut unterminated = synthetic_bzimage("6.1");
        unterminated.truncate(0x302);
        assert_eq!(
            kernel_release(&unterminated).unwrap_err(),
            KernelError::Unterminated(0x300)
        );
        let binary = synthetic_bzimage("6.1\u{1}x");
        assert_eq!(
            kernel_release(&binary).unwrap_err(),
            KernelError::NotText(0x300)
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = kernel_release(&bytes);
        }

        #[test]
        fn any_header_prefix_is_safe(v in "[a-z0-9.+-]{1,40}", cut in 0usize..0x400) {
            let img = synthetic_bzimage(&v);
            let short = &img[..cut.min(img.len())];
            let _ = kernel_release(short);
            prop_assert_eq!(kernel_release(&img).unwrap(), v);
        }
    }
}
