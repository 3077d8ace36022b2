//! Which boot loader an architecture's PXE clients are offered, decided by
//! what the static root holds: a client is never pointed at a file that is
//! not there.
//!
//! For arm64 UEFI clients (PXE arch 11: arm64 firmware, and U-Boot's own
//! UEFI step) the configured loader is offered when the static root holds
//! it; otherwise the first of [`ARM64_UEFI_LOADERS`] it holds; otherwise
//! none, and the agent says so at start, in its logs and in the rack's
//! cache report (`rackboot rack cache`).

/// arm64 UEFI loaders tried after the configured one, in order: iPXE (the
/// agent's own boot scripts), then Debian's network grub
/// (`grub-efi-arm64-bin`: `grubnetaa64.efi`; signed: `grubnetaa64.efi.signed`).
pub const ARM64_UEFI_LOADERS: &[&str] = &[
    "ipxe-arm64.efi",
    "grubnetaa64.efi",
    "grubnetaa64.efi.signed",
];

/// The outcome for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    /// File to offer; empty: offer none.
    pub file: String,
    /// What an operator should know: a fallback taken, or no loader at all.
    pub note: Option<String>,
    /// True when no loader can be offered although one is configured.
    pub missing: bool,
}

/// Choose the arm64 UEFI loader. `configured` empty means "offer none" (no
/// note); a name holding `{mac}` is per client and cannot be checked, so
/// it is kept. `present` says whether the static root holds a file.
pub fn arm64_uefi(configured: &str, present: impl Fn(&str) -> bool) -> Loader {
    if configured.is_empty() || configured.contains("{mac}") || present(configured) {
        return Loader {
            file: configured.to_string(),
            note: None,
            missing: false,
        };
    }
    if let Some(found) = ARM64_UEFI_LOADERS.iter().find(|f| present(f)) {
        return Loader {
            file: (*found).to_string(),
            note: Some(format!(
                "arm64 UEFI loader {configured} is not in the static root; arm64 UEFI clients are offered {found} instead"
            )),
            missing: false,
        };
    }
    let others: Vec<&str> = ARM64_UEFI_LOADERS
        .iter()
        .copied()
        .filter(|f| *f != configured)
        .collect();
    Loader {
        file: String::new(),
        note: Some(format!(
            "arm64 UEFI loader {configured} is not in the static root (nor is {}): arm64 UEFI clients get no boot file; put one there (Debian: grubnetaa64.efi from grub-efi-arm64-bin)",
            others.join(" or ")
        )),
        missing: true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn configured_then_fallbacks_then_none() {
        let has = |names: &'static [&'static str]| move |f: &str| names.contains(&f);
        let l = arm64_uefi(
            "ipxe-arm64.efi",
            has(&["ipxe-arm64.efi", "grubnetaa64.efi"]),
        );
        assert_eq!(
            (l.file.as_str(), l.missing, l.note),
            ("ipxe-arm64.efi", false, None)
        );

        let l = arm64_uefi("ipxe-arm64.efi", has(&["grubnetaa64.efi"]));
        assert_eq!(l.file, "grubnetaa64.efi");
        assert!(!l.missing);
        assert!(l.note.unwrap().contains("offered grubnetaa64.efi instead"));

        let l = arm64_uefi("ipxe-arm64.efi", has(&["undionly.kpxe"]));
        assert_eq!(l.file, "");
        assert!(l.missing);
        assert!(
            l.note
                .unwrap()
                .contains("ipxe-arm64.efi is not in the static root")
        );

        let l = arm64_uefi("", has(&[]));
        assert_eq!((l.file.as_str(), l.missing, l.note), ("", false, None));
        let l = arm64_uefi("arm/{mac}.efi", has(&[]));
        assert_eq!(l.file, "arm/{mac}.efi");
    }
}
