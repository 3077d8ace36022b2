//! The table of files the agent serves: generated boot scripts, verified
//! blobs and the operator's static root, all in memory. Rebuilt whenever the
//! view, the cache or the static root changes; readers take an `Arc` snapshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use rackboot_tftp_core::{FileSource, OpenError, SafePath};

use crate::boot::ipxe_script;
use crate::bootinfo::{BootInfo, Site};
use crate::cache::BlobCache;
use crate::view::RackView;

/// Largest static-root file loaded (bigger files are skipped with a warning).
pub const MAX_STATIC_FILE: u64 = 512 << 20;

/// Path of a node's iPXE script, relative to the served root.
pub fn ipxe_script_path(mac_hyphenated: &str) -> String {
    format!("ipxe/{mac_hyphenated}.ipxe")
}

/// A snapshot of everything served.
#[derive(Debug, Default, Clone)]
pub struct FileTable {
    files: HashMap<String, Bytes>,
}

impl FileTable {
    /// Build from the view, the cache and static files.
    pub fn build(
        view: &RackView,
        cache: &BlobCache,
        statics: &HashMap<String, Bytes>,
        site: &Site,
    ) -> Self {
        let mut files = statics.clone();
        for digest in cache.loaded() {
            if let Some(b) = cache.get(&digest) {
                files.insert(format!("blobs/{digest}"), b);
            }
        }
        for node in view.nodes.values() {
            let image = node.image.as_ref().and_then(|n| view.images.get(n));
            // Only offer an image whose blobs are verified and loaded.
            let ready = image.filter(|im| {
                cache.get(&im.kernel.digest).is_some() && cache.get(&im.initrd.digest).is_some()
            });
            for mac in &node.macs {
                let path = ipxe_script_path(&mac.hyphenated());
                let script = ipxe_script(&site.blob_base, node, ready, &path);
                files.insert(path, Bytes::from(script));
                let info = BootInfo::new(site, node, ready, view.revision);
                let hy = mac.hyphenated();
                files.insert(format!("boot-info/{hy}.json"), Bytes::from(info.to_json()));
                files.insert(format!("boot-info/{hy}.env"), Bytes::from(info.to_env()));
            }
        }
        FileTable { files }
    }

    /// A table holding exactly these files (tests, tools).
    pub fn from_map(files: HashMap<String, Bytes>) -> Self {
        FileTable { files }
    }

    /// Look up a path.
    pub fn get(&self, path: &str) -> Option<&Bytes> {
        self.files.get(path)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FileSource for FileTable {
    fn open(&self, path: &SafePath, _client: SocketAddr) -> Result<Bytes, OpenError> {
        self.files
            .get(path.as_str())
            .cloned()
            .ok_or(OpenError::NotFound)
    }
}

/// Load every regular file under `root` (recursively) into memory, keyed by
/// its relative path with `/` separators. Symlinks are followed only when
/// they stay inside the root.
pub fn load_static_root(root: &Path) -> std::io::Result<HashMap<String, Bytes>> {
    let mut out = HashMap::new();
    let canonical_root = root.canonicalize()?;
    let mut stack = vec![canonical_root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = match entry.path().canonicalize() {
                Ok(p) if p.starts_with(&canonical_root) => p,
                _ => {
                    tracing::warn!(path = %entry.path().display(), "static root: skipping link leaving the root");
                    continue;
                }
            };
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                if meta.len() > MAX_STATIC_FILE {
                    tracing::warn!(path = %path.display(), size = meta.len(), "static root: file too large, skipped");
                    continue;
                }
                // Relative to the canonical root: the walk is over canonical
                // paths, whatever form (relative, symlinked) `root` was given in.
                let rel = dir
                    .join(entry.file_name())
                    .strip_prefix(&canonical_root)
                    .map(|r| r.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                if rel.is_empty() {
                    tracing::warn!(path = %entry.path().display(), "static root: file outside the root skipped");
                    continue;
                }
                out.insert(rel, Bytes::from(std::fs::read(&path)?));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn static_root_given_relative_or_through_a_symlink_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), b"a").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let files = load_static_root(&link).unwrap();
        assert_eq!(files.get("sub/a").unwrap().as_ref(), b"a");
        let dotted = dir.path().join("root/./sub/..");
        assert_eq!(load_static_root(&dotted).unwrap().len(), 1);
    }

    #[test]
    fn static_root_loads_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("grub")).unwrap();
        std::fs::write(dir.path().join("undionly.kpxe"), b"rom").unwrap();
        std::fs::write(dir.path().join("grub/grub.cfg"), b"cfg").unwrap();
        let files = load_static_root(dir.path()).unwrap();
        assert_eq!(files.get("undionly.kpxe").unwrap().as_ref(), b"rom");
        assert_eq!(files.get("grub/grub.cfg").unwrap().as_ref(), b"cfg");
    }
}
