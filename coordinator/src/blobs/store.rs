//! The blob store's layout and its stored blobs: [`BlobStore`] opens the
//! directories, names where a blob, its outboard and its partial upload
//! live, and reads stored blobs back, verified.
//!
//! Invariants: a file under `ab/<hex>` always hashes to `<hex>` (a read that
//! finds otherwise removes it, so it is pulled again); an outboard is
//! trusted only once it verifies against the blob's name. Every file read,
//! hash and removal runs off the async runtime's threads.
//!
//! Must not depend on: the Raft replica, the gRPC API or the wall clock
//! (except stamping a blob's modification time in [`BlobStore::touch`]).

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rackboot_image::outboard::{self, Outboard, OutboardBuilder};
use rackboot_state::Blake3Digest;

use super::partials::PartialSlots;
use super::{BlobError, DEFAULT_GRACE, io, off_runtime};
use crate::keyed_locks::KeyedLocks;

/// Content-addressed blob files under one directory.
#[derive(Debug)]
pub struct BlobStore {
    pub(super) root: PathBuf,
    pub(super) tmp_seq: AtomicU64,
    pub(super) grace: Duration,
    /// Resumable pushes by blob, each under its own lock.
    pub(super) partials: PartialSlots,
    /// When the collector first saw each orphaned partial-upload file.
    pub(super) orphan_partials: super::collection::Sightings,
    /// When the collector first saw each stored blob no image names.
    pub(super) unreferenced: super::collection::Sightings,
}

/// A stored blob opened to be read group by group, each 1 MiB group
/// verified against the blob's outboard (off the runtime's threads) before
/// it is handed out.
pub struct VerifiedGroups {
    file: Arc<std::fs::File>,
    outboard: Arc<Outboard>,
}

/// Why a group of a stored blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GroupReadError {
    /// The file could not be read (short, or an I/O error).
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The bytes read do not verify against the outboard.
    #[error("group does not verify against the outboard")]
    Verify,
}

impl VerifiedGroups {
    /// The blob's outboard.
    pub fn outboard(&self) -> &Outboard {
        &self.outboard
    }

    /// Group `index` (bytes `off..off + len` per
    /// [`outboard::group_range`]), verified.
    pub async fn read(&self, index: u64, off: u64, len: u64) -> Result<Vec<u8>, GroupReadError> {
        let (file, ob) = (self.file.clone(), self.outboard.clone());
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.read_exact_at(&mut buf, off)
                .map_err(GroupReadError::Read)?;
            ob.verify_group(index, &buf)
                .map_err(|_| GroupReadError::Verify)?;
            Ok(buf)
        })
        .await
        .map_err(|e| GroupReadError::Read(std::io::Error::other(e)))?
    }
}

/// Open a stored blob for reading (`NotFound` when it is not stored).
/// Blocking.
fn open_stored(path: &Path, digest: &Blake3Digest) -> Result<std::fs::File, BlobError> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound(*digest)),
        Err(e) => Err(io(path)(e)),
    }
}

impl BlobStore {
    /// Open the store, creating directories and removing leftovers of
    /// streamed uploads; partial files of interrupted pushes are removed
    /// once no push has resumed them for [`DEFAULT_GRACE`] after this.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        Self::open_with_grace(root, DEFAULT_GRACE)
    }

    /// [`BlobStore::open`] with another grace period for interrupted pushes
    /// and unreferenced blobs.
    pub fn open_with_grace(root: &Path, grace: Duration) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        for dir in [tmp, root.join("partial"), root.join("obao")] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        let store = BlobStore {
            root: root.to_path_buf(),
            tmp_seq: AtomicU64::new(0),
            grace,
            partials: KeyedLocks::new(),
            orphan_partials: Default::default(),
            unreferenced: Default::default(),
        };
        store.sight_partial_files_blocking(std::time::Instant::now())?;
        Ok(store)
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    pub(super) fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    pub(super) fn partial_paths(&self, digest: &Blake3Digest) -> (PathBuf, PathBuf) {
        let dir = self.partial_dir();
        (
            dir.join(format!("{digest}.part")),
            dir.join(format!("{digest}.obao")),
        )
    }

    pub(super) fn outboard_path(&self, digest: &Blake3Digest) -> PathBuf {
        self.root.join("obao").join(digest.to_string())
    }

    /// Bytes in partial uploads and streamed uploads in flight (metrics and
    /// tests). Blocking.
    pub fn temp_bytes(&self) -> u64 {
        let mut bytes = 0;
        for dir in [self.partial_dir(), self.root.join("tmp")] {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if let Ok(m) = e.metadata() {
                        // Sparse partial files count what they hold.
                        bytes += std::os::unix::fs::MetadataExt::blocks(&m) * 512;
                    }
                }
            }
        }
        bytes
    }

    /// Where a blob lives.
    pub fn path(&self, digest: &Blake3Digest) -> PathBuf {
        let hex = digest.to_string();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Blobs stored and their bytes (a walk of the store's directories:
    /// blocking, for metrics scrapes).
    pub fn stored(&self) -> (u64, u64) {
        let (mut blobs, mut bytes) = (0u64, 0u64);
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return (0, 0);
        };
        for dir in dirs.flatten() {
            // Blobs live in `<first two hex digits>/<hex>`; `tmp/` holds uploads.
            if dir.file_name().len() != 2 {
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Ok(m) = f.metadata()
                    && m.is_file()
                {
                    blobs += 1;
                    bytes += m.len();
                }
            }
        }
        (blobs, bytes)
    }

    /// Size of a stored blob, if present.
    pub async fn size(&self, digest: &Blake3Digest) -> Option<u64> {
        tokio::fs::metadata(self.path(digest))
            .await
            .ok()
            .map(|m| m.len())
    }

    /// Hash a stored blob again; when it no longer hashes to its name, remove
    /// it (so it is pulled again from a replica that has it) and say so.
    /// `Ok(true)` when it is intact, `Ok(false)` when it was removed.
    pub async fn verify_or_remove(&self, digest: &Blake3Digest) -> Result<bool, BlobError> {
        let path = self.path(digest);
        let (p, d) = (path.clone(), *digest);
        let intact = off_runtime(&path, move || {
            let mut f = open_stored(&p, &d)?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(io(&p))?;
                if n == 0 {
                    break;
                }
                hasher.update(buf.get(..n).unwrap_or_default());
            }
            if Blake3Digest::from(hasher.finalize()) == d {
                return Ok(true);
            }
            std::fs::remove_file(&p).map_err(io(&p))?;
            Ok(false)
        })
        .await?;
        if !intact {
            tracing::error!(blob = %digest, path = %path.display(), "stored blob no longer hashes to its name; removed");
        }
        Ok(intact)
    }

    /// The first group (up to 1 MiB) of a stored blob, verified against its
    /// outboard: enough for a kernel's boot header without reading the
    /// whole kernel.
    pub async fn read_head_verified(&self, digest: &Blake3Digest) -> Result<Vec<u8>, BlobError> {
        let ob = self.outboard(digest).await?;
        let (_, len) = outboard::group_range(ob.size(), 0).unwrap_or_default();
        let path = self.path(digest);
        let (p, d) = (path.clone(), *digest);
        off_runtime(&path, move || {
            let mut f = open_stored(&p, &d)?;
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            f.read_exact(&mut buf).map_err(io(&p))?;
            ob.verify_group(0, &buf)
                .map_err(|source| BlobError::Outboard { digest: d, source })?;
            Ok(buf)
        })
        .await
    }

    /// Open a stored blob to be read group by group, verified
    /// ([`VerifiedGroups`]). `NotFound` when it is not stored or cannot be
    /// opened.
    pub async fn open_verified_groups(
        &self,
        digest: &Blake3Digest,
    ) -> Result<VerifiedGroups, BlobError> {
        let outboard = self.outboard(digest).await?;
        let path = self.path(digest);
        let (p, d) = (path.clone(), *digest);
        let file = off_runtime(&path, move || {
            std::fs::File::open(&p).map_err(|_| BlobError::NotFound(d))
        })
        .await?;
        Ok(VerifiedGroups {
            file: Arc::new(file),
            outboard: Arc::new(outboard),
        })
    }

    /// Read a whole blob, verifying its hash.
    pub async fn read_verified(&self, digest: &Blake3Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let (p, d) = (path.clone(), *digest);
        off_runtime(&path, move || {
            let mut f = open_stored(&p, &d)?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(io(&p))?;
            let actual = Blake3Digest::of(&buf);
            if actual != d {
                return Err(BlobError::HashMismatch {
                    expected: d,
                    actual,
                });
            }
            Ok(buf)
        })
        .await
    }

    /// A blob's outboard: from `obao/`, or rebuilt from the blob (and the
    /// blob removed, `NotFound`, when it no longer hashes to its name).
    pub async fn outboard(&self, digest: &Blake3Digest) -> Result<Outboard, BlobError> {
        let Some(size) = self.size(digest).await else {
            return Err(BlobError::NotFound(*digest));
        };
        let ob_path = self.outboard_path(digest);
        let blob_path = self.path(digest);
        let (op, bp, d) = (ob_path.clone(), blob_path.clone(), *digest);
        let rebuilt = off_runtime(&ob_path, move || {
            if let Ok(bytes) = std::fs::read(&op)
                && let Ok(ob) = Outboard::new(size, &bytes, &d.0)
            {
                return Ok(Some(ob));
            }
            let mut f = open_stored(&bp, &d)?;
            let mut b = OutboardBuilder::new(size);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(io(&bp))?;
                if n == 0 {
                    break;
                }
                b.update(buf.get(..n).unwrap_or_default());
            }
            match b.finish() {
                Ok(ob) if ob.root() == d.0 => {
                    std::fs::write(&op, ob.to_bytes()).map_err(io(&op))?;
                    Ok(Some(ob))
                }
                _ => {
                    std::fs::remove_file(&bp).map_err(io(&bp))?;
                    Ok(None)
                }
            }
        })
        .await?;
        match rebuilt {
            Some(ob) => Ok(ob),
            None => {
                tracing::error!(blob = %digest, "stored blob no longer hashes to its name; removed");
                Err(BlobError::NotFound(*digest))
            }
        }
    }

    /// A blob was just named: the collector's grace period for it starts
    /// again (on the monotonic clock) should it become unnamed.
    pub async fn touch(&self, digest: &Blake3Digest) {
        self.unreferenced.forget(&self.path(digest));
    }
}
