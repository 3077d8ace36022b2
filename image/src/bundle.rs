//! A kernel-module bundle: an uncompressed tar holding
//! `lib/modules/<release>/…` (or `usr/lib/modules/<release>/…`) with its
//! `modules.dep`, and optionally `etc/modprobe.d/*.conf`,
//! `lib/modprobe.d/*.conf` or `usr/lib/modprobe.d/*.conf`.
//!
//! [`inspect`] finds the one release it is for, counts the modules and keeps
//! the tables (`modules.*` beside the release directory's top and the
//! modprobe.d files), which the agent serves as separate small files.

use std::collections::BTreeMap;
use std::io::Read;

use thiserror::Error;

/// Largest table kept (modules.alias.bin of a distribution kernel is ~1 MiB).
pub const MAX_TABLE: u64 = 16 << 20;
/// Largest total of all tables.
pub const MAX_TABLES_TOTAL: u64 = 64 << 20;
/// Most archive entries read.
pub const MAX_ENTRIES: usize = 200_000;

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleBundle {
    /// The kernel release (`lib/modules/<release>/`).
    pub release: String,
    /// Number of module files (`*.ko`, `*.ko.xz`, `*.ko.zst`, `*.ko.gz`).
    pub modules: usize,
    /// Tables by served name: `modules.dep`, …, `modprobe.d/<file>`.
    pub tables: BTreeMap<String, Vec<u8>>,
}

/// Why a bundle is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BundleError {
    /// gzip, xz or zstd magic.
    #[error(
        "the module bundle is {0}-compressed; push an uncompressed tar (blobs are content-addressed and deduplicated; nodes fetch it over the rack network)"
    )]
    Compressed(&'static str),
    /// The tar could not be read.
    #[error("the module bundle is not a readable tar archive: {0}")]
    NotTar(String),
    /// No `lib/modules/<release>/`.
    #[error("the module bundle holds no lib/modules/<release>/ directory")]
    NoModules,
    /// Two releases.
    #[error("the module bundle holds modules for two kernels, {0} and {1}; one bundle per kernel")]
    SeveralReleases(String, String),
    /// No modules.dep.
    #[error("the module bundle has no lib/modules/{0}/modules.dep (run depmod when building it)")]
    NoModulesDep(String),
    /// Limits.
    #[error("the module bundle exceeds a limit: {0}")]
    TooLarge(String),
}

fn compression(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else {
        None
    }
}

/// Where an archive path points, for our purposes.
#[derive(Debug, PartialEq, Eq)]
enum Place<'a> {
    /// `lib/modules/<release>/<rest…>`.
    Modules {
        release: &'a str,
        rest: Vec<&'a str>,
    },
    /// `…/modprobe.d/<file>`.
    Modprobe(&'a str),
    Other,
}

fn place(path: &str) -> Place<'_> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Place::Other;
    }
    let tail = match parts.as_slice() {
        ["usr", "lib", rest @ ..] | ["lib", rest @ ..] => rest,
        ["etc", "modprobe.d", file] => return Place::Modprobe(file),
        _ => return Place::Other,
    };
    match tail {
        ["modules", release, rest @ ..] => Place::Modules {
            release,
            rest: rest.to_vec(),
        },
        ["modprobe.d", file] => Place::Modprobe(file),
        _ => Place::Other,
    }
}

fn is_module(name: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Read a bundle.
pub fn inspect(bytes: &[u8]) -> Result<ModuleBundle, BundleError> {
    inspect_reader(bytes)
}

/// Read a bundle from a reader (a file on disk), in one pass, keeping only
/// its tables in memory.
pub fn inspect_reader<R: std::io::Read>(mut reader: R) -> Result<ModuleBundle, BundleError> {
    let not_tar = |e: std::io::Error| BundleError::NotTar(e.to_string());
    // The first header block: compression magic, or an empty archive.
    let mut first = Vec::with_capacity(512);
    (&mut reader)
        .take(512)
        .read_to_end(&mut first)
        .map_err(not_tar)?;
    if let Some(kind) = compression(&first) {
        return Err(BundleError::Compressed(kind));
    }
    let first_is_zero = first.iter().all(|&b| b == 0);
    let mut archive = tar::Archive::new(std::io::Read::chain(&first[..], reader));
    let mut release: Option<String> = None;
    let mut modules = 0usize;
    let mut tables = BTreeMap::new();
    let mut total = 0u64;
    let mut any_entry = false;
    for (i, entry) in archive.entries().map_err(not_tar)?.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(BundleError::TooLarge(format!(
                "more than {MAX_ENTRIES} entries"
            )));
        }
        let mut entry = entry.map_err(not_tar)?;
        any_entry = true;
        let path = entry
            .path()
            .map_err(not_tar)?
            .to_string_lossy()
            .into_owned();
        let file = entry.header().entry_type().is_file();
        let (name, keep) = match place(&path) {
            Place::Modules { release: r, rest } => {
                match &release {
                    None => release = Some(r.to_string()),
                    Some(have) if have != r => {
                        return Err(BundleError::SeveralReleases(have.clone(), r.to_string()));
                    }
                    Some(_) => {}
                }
                match rest.as_slice() {
                    [t] if file && t.starts_with("modules.") => (t.to_string(), true),
                    [.., last] if file && is_module(last) => {
                        modules += 1;
                        (String::new(), false)
                    }
                    _ => (String::new(), false),
                }
            }
            Place::Modprobe(f) if file && f.ends_with(".conf") => (format!("modprobe.d/{f}"), true),
            _ => (String::new(), false),
        };
        if !keep {
            continue;
        }
        let size = entry.header().size().map_err(not_tar)?;
        if size > MAX_TABLE {
            return Err(BundleError::TooLarge(format!(
                "{path} is {size} bytes (tables up to {MAX_TABLE})"
            )));
        }
        total += size;
        if total > MAX_TABLES_TOTAL {
            return Err(BundleError::TooLarge(format!(
                "tables over {MAX_TABLES_TOTAL} bytes in all"
            )));
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry.read_to_end(&mut data).map_err(not_tar)?;
        tables.insert(name, data);
    }
    if !any_entry && !first_is_zero {
        return Err(BundleError::NotTar("no archive entries".into()));
    }
    let release = release.ok_or(BundleError::NoModules)?;
    if !tables.contains_key("modules.dep") {
        return Err(BundleError::NoModulesDep(release));
    }
    Ok(ModuleBundle {
        release,
        modules,
        tables,
    })
}

/// Build a bundle tar from `(path, content)` pairs (tests, tools).
pub fn build_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        // An in-memory writer cannot fail; a bad path is a caller bug.
        if let Err(e) = b.append_data(&mut h, path, *data) {
            panic!("build_tar: {path}: {e}");
        }
    }
    b.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn sample(release: &str) -> Vec<u8> {
        build_tar(&[
            (
                &format!("lib/modules/{release}/modules.dep"),
                b"kernel/drivers/net/e1000.ko:\n",
            ),
            (
                &format!("lib/modules/{release}/modules.alias"),
                b"alias pci:v00008086d0000100E* e1000\n",
            ),
            (
                &format!("lib/modules/{release}/kernel/drivers/net/e1000.ko"),
                b"\x7fELF",
            ),
            (
                &format!("lib/modules/{release}/kernel/drivers/net/virtio_net.ko.xz"),
                b"xz",
            ),
            ("etc/modprobe.d/rackboot.conf", b"options e1000 debug=0\n"),
            ("usr/share/doc/readme", b"ignored"),
        ])
    }

    #[test]
    fn finds_release_modules_and_tables() {
        let b = inspect(&sample("6.1.0-27-amd64")).unwrap();
        assert_eq!(b.release, "6.1.0-27-amd64");
        assert_eq!(b.modules, 2);
        assert_eq!(
            b.tables.keys().collect::<Vec<_>>(),
            ["modprobe.d/rackboot.conf", "modules.alias", "modules.dep"]
        );
        assert_eq!(
            b.tables["modules.dep"],
            b"kernel/drivers/net/e1000.ko:\n".to_vec()
        );
    }

    #[test]
    fn usr_lib_and_dot_prefixes_count() {
        let t = build_tar(&[("./usr/lib/modules/6.2/modules.dep", b"")]);
        assert_eq!(inspect(&t).unwrap().release, "6.2");
    }

    #[test]
    fn refusals_name_the_problem() {
        let two = build_tar(&[
            ("lib/modules/6.1/modules.dep", b""),
            ("lib/modules/6.2/modules.dep", b""),
        ]);
        assert_eq!(
            inspect(&two).unwrap_err(),
            BundleError::SeveralReleases("6.1".into(), "6.2".into())
        );
        let nodep = build_tar(&[("lib/modules/6.1/kernel/a.ko", b"")]);
        assert_eq!(
            inspect(&nodep).unwrap_err(),
            BundleError::NoModulesDep("6.1".into())
        );
        let none = build_tar(&[("etc/hostname", b"n1")]);
        assert_eq!(inspect(&none).unwrap_err(), BundleError::NoModules);
        assert_eq!(
            inspect(&[0x1f, 0x8b, 8, 0]).unwrap_err(),
            BundleError::Compressed("gzip")
        );
        assert!(matches!(
            inspect(b"definitely not a tar archive, just some text that is long enough")
                .unwrap_err(),
            BundleError::NotTar(_) | BundleError::NoModules
        ));
        // tar-rs refuses to write `..`; the reader still never matches it.
        assert_eq!(
            place("lib/modules/../modules/6.1/modules.dep"),
            Place::Other
        );
        assert_eq!(place("etc/modprobe.d/../x.conf"), Place::Other);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = inspect(&bytes);
        }

        #[test]
        fn truncated_bundles_never_panic(cut in 0usize..4096) {
            let t = sample("6.1.0");
            let _ = inspect(&t[..cut.min(t.len())]);
        }
    }
}
