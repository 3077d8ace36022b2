//! The coordinator's blob store: files named by their blake3 hash.
//!
//! Layout under the store's root:
//!
//! - `ab/<hex>`: a stored blob, only ever created by a rename once every byte
//!   was checked against its name and fsynced (then the directory fsynced).
//!   So a blob under a name always hashes to that name.
//! - `obao/<hex>`: its outboard (the chaining values of its 1 MiB groups,
//!   [`rackboot_image::outboard`]), sent ahead of the data on every fetch so
//!   the receiver verifies each group as it arrives. Derived data: rebuilt
//!   from the blob when missing or wrong.
//! - `tmp/`: streamed uploads in flight (replica pulls, pushes without an
//!   outboard); removed at start-up.
//! - `partial/<hex>.part` + `<hex>.obao`: a resumable push. Each group is
//!   verified against the outboard before it is written, so a partial file
//!   holds only verified groups (and holes). A push that breaks keeps them;
//!   the next push of the blob sends only the rest. Partials idle for the
//!   grace period are removed ([`BlobStore::reclaim`]); after a restart a
//!   partial's groups are verified again before they count.
//!
//! Unreferenced blobs older than the grace period are collected
//! ([`BlobStore::collect`]); a blob named by a committed image never is.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rackboot_image::outboard::{self, GROUP, Outboard, OutboardBuilder, OutboardError};
use rackboot_state::{Blake3Digest, BlobRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A blob store failure.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// File system error.
    #[error("blob store {path}: {source}")]
    Io {
        /// Path involved.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The content does not hash to its claimed name.
    #[error("blob content hashes to {actual}, but was sent as {expected}")]
    HashMismatch {
        /// Claimed.
        expected: Blake3Digest,
        /// Actual.
        actual: Blake3Digest,
    },
    /// The content's size differs from the declared size.
    #[error("blob {digest} declared {declared} bytes but {actual} arrived")]
    SizeMismatch {
        /// The blob.
        digest: Blake3Digest,
        /// Declared.
        declared: u64,
        /// Received.
        actual: u64,
    },
    /// Not stored.
    #[error("blob {0} not found")]
    NotFound(Blake3Digest),
    /// An outboard or a group that does not match the blob's name.
    #[error("blob {digest}: {source}")]
    Outboard {
        /// The blob.
        digest: Blake3Digest,
        /// What did not match.
        #[source]
        source: OutboardError,
    },
    /// Data not on group boundaries.
    #[error("blob {digest}: data at offset {offset} ({len} bytes) is not whole 1 MiB groups")]
    Misaligned {
        /// The blob.
        digest: Blake3Digest,
        /// Offset given.
        offset: u64,
        /// Length given.
        len: u64,
    },
    /// Another push of the same blob is streaming.
    #[error("blob {0} is being uploaded by another push; retry when it ends")]
    Busy(Blake3Digest),
}

/// How long an interrupted upload and an unreferenced blob are kept by default.
pub const DEFAULT_GRACE: Duration = rackboot_coordinator_settings::DEFAULT_UPLOAD_GRACE;

/// Upload progress of one blob, for `MissingBlobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialStatus {
    /// The blob.
    pub blob: BlobRef,
    /// Which groups are held.
    pub held: Vec<bool>,
    /// Their bytes.
    pub bytes: u64,
}

/// A resumable upload: verified groups in a sparse file.
#[derive(Debug)]
struct Partial {
    blob: BlobRef,
    outboard: Outboard,
    held: Vec<bool>,
    file: Arc<std::fs::File>,
    data_path: PathBuf,
    outboard_path: PathBuf,
    touched: SystemTime,
}

impl Partial {
    fn status(&self) -> PartialStatus {
        let bytes = self
            .held
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .filter_map(|(i, _)| outboard::group_range(self.blob.size, i as u64))
            .map(|(_, len)| len)
            .sum();
        PartialStatus {
            blob: self.blob,
            held: self.held.clone(),
            bytes,
        }
    }
}

type PartialSlot = Arc<tokio::sync::Mutex<Option<Partial>>>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Content-addressed blob files under one directory.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    tmp_seq: AtomicU64,
    grace: Duration,
    partials: Mutex<HashMap<Blake3Digest, PartialSlot>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io(path)(std::io::Error::other(e)))?
        .map_err(io(path))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all())
}

fn age(meta: &std::fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

impl BlobStore {
    /// Open the store, creating directories, removing leftovers of streamed
    /// uploads and interrupted pushes older than [`DEFAULT_GRACE`].
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
            partials: Mutex::new(HashMap::new()),
        };
        store.reclaim_files()?;
        Ok(store)
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    fn partial_paths(&self, digest: &Blake3Digest) -> (PathBuf, PathBuf) {
        let dir = self.root.join("partial");
        (
            dir.join(format!("{digest}.part")),
            dir.join(format!("{digest}.obao")),
        )
    }

    fn outboard_path(&self, digest: &Blake3Digest) -> PathBuf {
        self.root.join("obao").join(digest.to_string())
    }

    /// Remove partial-upload files idle for longer than the grace period
    /// that no push holds open.
    fn reclaim_files(&self) -> Result<(u64, u64), BlobError> {
        let dir = self.root.join("partial");
        let (mut files, mut bytes) = (0u64, 0u64);
        let live: HashSet<String> = lock(&self.partials)
            .keys()
            .map(ToString::to_string)
            .collect();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let stem = name.split('.').next().unwrap_or_default().to_string();
            if live.contains(&stem) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if age(&meta) >= self.grace && std::fs::remove_file(entry.path()).is_ok() {
                files += 1;
                bytes += meta.len();
            }
        }
        Ok((files, bytes))
    }

    /// Forget interrupted pushes idle for longer than the grace period and
    /// remove their files. Returns (files, bytes) removed.
    pub async fn reclaim(&self) -> Result<(u64, u64), BlobError> {
        let slots: Vec<(Blake3Digest, PartialSlot)> = lock(&self.partials)
            .iter()
            .map(|(d, s)| (*d, s.clone()))
            .collect();
        for (digest, slot) in slots {
            // A push streaming into it holds the lock: not idle.
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let idle = guard.as_ref().is_none_or(|p| {
                SystemTime::now()
                    .duration_since(p.touched)
                    .unwrap_or_default()
                    >= self.grace
            });
            if idle {
                if let Some(p) = guard.take() {
                    let _ = std::fs::remove_file(&p.data_path);
                    let _ = std::fs::remove_file(&p.outboard_path);
                }
                lock(&self.partials).remove(&digest);
            }
        }
        self.reclaim_files()
    }

    /// Bytes in partial uploads and streamed uploads in flight (metrics and tests).
    pub fn temp_bytes(&self) -> u64 {
        let mut bytes = 0;
        for dir in [self.root.join("partial"), self.root.join("tmp")] {
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

    /// Start writing a blob.
    pub async fn begin(&self, blob: BlobRef) -> Result<Upload, BlobError> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}.{n}", blob.digest, std::process::id()));
        let file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        Ok(Upload {
            blob,
            tmp,
            file: Some(file),
            hasher: OutboardBuilder::new(blob.size),
            written: 0,
            dest: self.path(&blob.digest),
            outboard_dest: self.outboard_path(&blob.digest),
        })
    }

    /// Hash a stored blob again; when it no longer hashes to its name, remove
    /// it (so it is pulled again from a replica that has it) and say so.
    /// `Ok(true)` when it is intact, `Ok(false)` when it was removed.
    pub async fn verify_or_remove(&self, digest: &Blake3Digest) -> Result<bool, BlobError> {
        let (path, mut f) = self.open_stored(digest).await?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await.map_err(io(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        if Blake3Digest::from(hasher.finalize()) == *digest {
            return Ok(true);
        }
        tokio::fs::remove_file(&path).await.map_err(io(&path))?;
        tracing::error!(blob = %digest, path = %path.display(), "stored blob no longer hashes to its name; removed");
        Ok(false)
    }

    /// Open a stored blob for reading (`NotFound` when it is not stored).
    async fn open_stored(
        &self,
        digest: &Blake3Digest,
    ) -> Result<(PathBuf, tokio::fs::File), BlobError> {
        let path = self.path(digest);
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound(*digest)),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The first group (up to 1 MiB) of a stored blob, verified against its
    /// outboard: enough for a kernel's boot header without reading the
    /// whole kernel.
    pub async fn read_head_verified(&self, digest: &Blake3Digest) -> Result<Vec<u8>, BlobError> {
        let ob = self.outboard(digest).await?;
        let (_, len) = outboard::group_range(ob.size(), 0).unwrap_or_default();
        let (path, mut f) = self.open_stored(digest).await?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        f.read_exact(&mut buf).await.map_err(io(&path))?;
        ob.verify_group(0, &buf)
            .map_err(|source| BlobError::Outboard {
                digest: *digest,
                source,
            })?;
        Ok(buf)
    }

    /// Read a whole blob, verifying its hash.
    pub async fn read_verified(&self, digest: &Blake3Digest) -> Result<Vec<u8>, BlobError> {
        let (path, mut f) = self.open_stored(digest).await?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).await.map_err(io(&path))?;
        let actual = Blake3Digest::of(&buf);
        if actual != *digest {
            return Err(BlobError::HashMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(buf)
    }
}

impl BlobStore {
    fn slot(&self, digest: &Blake3Digest) -> PartialSlot {
        lock(&self.partials)
            .entry(*digest)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone()
    }

    /// Load a partial left on disk (after a restart): its outboard checked
    /// against the name, each group present verified again.
    async fn load_partial(&self, blob: BlobRef) -> Result<Option<Partial>, BlobError> {
        let (data_path, outboard_path) = self.partial_paths(&blob.digest);
        let Ok(ob_bytes) = tokio::fs::read(&outboard_path).await else {
            return Ok(None);
        };
        let Ok(outboard) = Outboard::new(blob.size, &ob_bytes, &blob.digest.0) else {
            let _ = tokio::fs::remove_file(&outboard_path).await;
            let _ = tokio::fs::remove_file(&data_path).await;
            return Ok(None);
        };
        let (p, ob) = (data_path.clone(), outboard.clone());
        let loaded = blocking(&data_path, move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)?;
            let len = file.metadata()?.len();
            let mut held = vec![false; usize::try_from(ob.groups()).unwrap_or(0)];
            let mut buf = vec![0u8; usize::try_from(GROUP).unwrap_or(1 << 20)];
            for (i, h) in held.iter_mut().enumerate() {
                let Some((off, n)) = outboard::group_range(ob.size(), i as u64) else {
                    break;
                };
                if off + n > len {
                    break;
                }
                let piece = buf
                    .get_mut(..usize::try_from(n).unwrap_or(0))
                    .unwrap_or_default();
                file.read_exact_at(piece, off)?;
                *h = ob.verify_group(i as u64, piece).is_ok();
            }
            Ok((file, held))
        })
        .await;
        let Ok((file, held)) = loaded else {
            return Ok(None);
        };
        Ok(Some(Partial {
            blob,
            outboard,
            held,
            file: Arc::new(file),
            data_path,
            outboard_path,
            touched: SystemTime::now(),
        }))
    }

    /// What an interrupted push of `blob` left (None when nothing).
    pub async fn partial_status(&self, blob: BlobRef) -> Option<PartialStatus> {
        let known = lock(&self.partials).get(&blob.digest).cloned();
        let slot = match known {
            Some(s) => s,
            None if self.partial_paths(&blob.digest).0.exists() => self.slot(&blob.digest),
            None => return None,
        };
        let mut guard = slot.try_lock().ok()?;
        if guard.is_none() {
            *guard = self.load_partial(blob).await.ok().flatten();
        }
        guard
            .as_ref()
            .filter(|p| p.blob == blob && p.held.iter().any(|h| *h))
            .map(Partial::status)
    }

    /// Start or resume a push of `blob` with its outboard. Refused when the
    /// outboard does not match the name, or another push of the blob streams.
    pub async fn resume(&self, blob: BlobRef, outboard: &[u8]) -> Result<Resumable, BlobError> {
        let ob = Outboard::new(blob.size, outboard, &blob.digest.0).map_err(|source| {
            BlobError::Outboard {
                digest: blob.digest,
                source,
            }
        })?;
        let slot = self.slot(&blob.digest);
        let mut guard = slot
            .clone()
            .try_lock_owned()
            .map_err(|_| BlobError::Busy(blob.digest))?;
        if guard.as_ref().is_some_and(|p| p.blob != blob) {
            // Same name, another size: the one being written cannot complete
            // (no data verifies under a wrong size); start again.
            if let Some(p) = guard.take() {
                let _ = std::fs::remove_file(&p.data_path);
            }
        }
        if guard.is_none() {
            *guard = self.load_partial(blob).await?;
        }
        if guard.is_none() {
            let (data_path, outboard_path) = self.partial_paths(&blob.digest);
            let bytes = ob.to_bytes();
            let (d, o) = (data_path.clone(), outboard_path.clone());
            let file = blocking(&data_path, move || {
                std::fs::write(&o, &bytes)?;
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&d)
            })
            .await?;
            *guard = Some(Partial {
                blob,
                held: vec![false; usize::try_from(ob.groups()).unwrap_or(0)],
                outboard: ob,
                file: Arc::new(file),
                data_path,
                outboard_path,
                touched: SystemTime::now(),
            });
        }
        Ok(Resumable {
            guard,
            dest: self.path(&blob.digest),
            outboard_dest: self.outboard_path(&blob.digest),
            digest: blob.digest,
        })
    }

    /// A blob's outboard: from `obao/`, or rebuilt from the blob (and the
    /// blob removed, `NotFound`, when it no longer hashes to its name).
    pub async fn outboard(&self, digest: &Blake3Digest) -> Result<Outboard, BlobError> {
        let Some(size) = self.size(digest).await else {
            return Err(BlobError::NotFound(*digest));
        };
        let path = self.outboard_path(digest);
        if let Ok(bytes) = tokio::fs::read(&path).await
            && let Ok(ob) = Outboard::new(size, &bytes, &digest.0)
        {
            return Ok(ob);
        }
        let (blob_path, mut f) = self.open_stored(digest).await?;
        let mut b = OutboardBuilder::new(size);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await.map_err(io(&blob_path))?;
            if n == 0 {
                break;
            }
            b.update(buf.get(..n).unwrap_or_default());
        }
        match b.finish() {
            Ok(ob) if ob.root() == digest.0 => {
                let bytes = ob.to_bytes();
                let p = path.clone();
                blocking(&path, move || std::fs::write(&p, bytes)).await?;
                Ok(ob)
            }
            _ => {
                tokio::fs::remove_file(&blob_path)
                    .await
                    .map_err(io(&blob_path))?;
                tracing::error!(blob = %digest, "stored blob no longer hashes to its name; removed");
                Err(BlobError::NotFound(*digest))
            }
        }
    }

    /// Set a blob's modification time to now (it was just referenced: the
    /// collector's grace period starts again).
    pub async fn touch(&self, digest: &Blake3Digest) {
        let path = self.path(digest);
        let _ = blocking(&path.clone(), move || {
            std::fs::File::options()
                .write(true)
                .open(&path)?
                .set_modified(SystemTime::now())
        })
        .await;
    }

    /// Remove stored blobs that `referenced` does not name and that are
    /// older than the grace period. Returns (blobs, bytes) removed.
    pub async fn collect(
        &self,
        referenced: HashSet<Blake3Digest>,
    ) -> Result<(u64, u64), BlobError> {
        let root = self.root.clone();
        let grace = self.grace;
        blocking(&self.root.clone(), move || {
            let (mut blobs, mut bytes) = (0u64, 0u64);
            for dir in std::fs::read_dir(&root)?.flatten() {
                if dir.file_name().len() != 2 {
                    continue;
                }
                for f in std::fs::read_dir(dir.path())?.flatten() {
                    let name = f.file_name().to_string_lossy().to_string();
                    let Ok(digest) = name.parse::<Blake3Digest>() else {
                        continue;
                    };
                    let Ok(meta) = f.metadata() else { continue };
                    if referenced.contains(&digest) || age(&meta) < grace {
                        continue;
                    }
                    std::fs::remove_file(f.path())?;
                    let _ = std::fs::remove_file(root.join("obao").join(&name));
                    blobs += 1;
                    bytes += meta.len();
                    tracing::info!(blob = %digest, size = meta.len(), "unreferenced blob collected");
                }
            }
            Ok((blobs, bytes))
        })
        .await
    }
}

/// A push being resumed: holds the blob's partial upload exclusively.
pub struct Resumable {
    guard: tokio::sync::OwnedMutexGuard<Option<Partial>>,
    dest: PathBuf,
    outboard_dest: PathBuf,
    digest: Blake3Digest,
}

impl Resumable {
    fn partial(&mut self) -> Result<&mut Partial, BlobError> {
        self.guard.as_mut().ok_or(BlobError::NotFound(self.digest))
    }

    /// What is held now.
    pub fn status(&mut self) -> Option<PartialStatus> {
        self.partial().ok().map(|p| p.status())
    }

    /// Whether every group is held.
    pub fn complete(&mut self) -> bool {
        self.partial().is_ok_and(|p| p.held.iter().all(|h| *h))
    }

    /// Write whole groups starting at `offset` (group-aligned; only the
    /// blob's last group may be short). Every group is verified before it
    /// is written; groups already held are skipped. Returns the groups newly
    /// written. A group that does not verify is refused and nothing after it
    /// is written; what was written before it stays.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<u64, BlobError> {
        let digest = self.digest;
        let p = self.partial()?;
        let size = p.blob.size;
        let misaligned = BlobError::Misaligned {
            digest,
            offset,
            len: data.len() as u64,
        };
        if !offset.is_multiple_of(GROUP)
            || offset > size
            || (data.is_empty() && size > 0)
            || (size == 0 && !data.is_empty())
        {
            return Err(misaligned);
        }
        let mut written = 0;
        let mut index = offset / GROUP;
        let mut rest = data;
        while !rest.is_empty() || (size == 0 && written == 0 && index == 0) {
            let Some((off, len)) = outboard::group_range(size, index) else {
                return Err(misaligned);
            };
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if rest.len() < len {
                return Err(misaligned);
            }
            let (group, tail) = rest.split_at(len);
            p.outboard
                .verify_group(index, group)
                .map_err(|source| BlobError::Outboard { digest, source })?;
            let i = usize::try_from(index).unwrap_or(usize::MAX);
            if p.held.get(i) == Some(&false) {
                let file = p.file.clone();
                let bytes = group.to_vec();
                blocking(&p.data_path, move || file.write_all_at(&bytes, off)).await?;
                if let Some(h) = p.held.get_mut(i) {
                    *h = true;
                }
                written += 1;
            }
            p.touched = SystemTime::now();
            rest = tail;
            index += 1;
            if size == 0 {
                break;
            }
        }
        Ok(written)
    }

    /// Make the completed blob durable and move it into place (with its
    /// outboard). Refused while groups are missing.
    pub async fn finish(mut self) -> Result<BlobRef, BlobError> {
        let digest = self.digest;
        let (dest, outboard_dest) = (self.dest.clone(), self.outboard_dest.clone());
        let p = self.partial()?;
        if let Some(missing) = p.held.iter().position(|h| !*h) {
            let (offset, _) =
                outboard::group_range(p.blob.size, missing as u64).unwrap_or_default();
            return Err(BlobError::SizeMismatch {
                digest,
                declared: p.blob.size,
                actual: offset,
            });
        }
        let blob = p.blob;
        let (file, data_path, ob_path) =
            (p.file.clone(), p.data_path.clone(), p.outboard_path.clone());
        let outboard = p.outboard.to_bytes();
        let d = dest.clone();
        blocking(&dest, move || {
            file.set_len(blob.size)?;
            file.sync_all()?;
            let dir = d.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&outboard_dest, &outboard)?;
            std::fs::rename(&data_path, &d)?;
            fsync_dir(&dir)?;
            let _ = std::fs::remove_file(&ob_path);
            Ok(())
        })
        .await?;
        // The slot is emptied: nothing partial remains of this blob.
        *self.guard = None;
        Ok(blob)
    }
}

/// A blob being written. Dropped without [`Upload::finish`], its temporary
/// file is removed.
pub struct Upload {
    blob: BlobRef,
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: OutboardBuilder,
    written: u64,
    dest: PathBuf,
    outboard_dest: PathBuf,
}

impl Upload {
    /// Bytes written so far (where a resumed transfer continues).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The blob being written.
    pub fn blob(&self) -> BlobRef {
        self.blob
    }

    /// Append data.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.written += data.len() as u64;
        if self.written > self.blob.size {
            return Err(BlobError::SizeMismatch {
                digest: self.blob.digest,
                declared: self.blob.size,
                actual: self.written,
            });
        }
        self.hasher.update(data);
        if let Some(f) = self.file.as_mut() {
            f.write_all(data).await.map_err(io(&self.tmp))?;
        }
        Ok(())
    }

    /// Verify, make durable and move into place.
    pub async fn finish(mut self) -> Result<BlobRef, BlobError> {
        if self.written != self.blob.size {
            return Err(BlobError::SizeMismatch {
                digest: self.blob.digest,
                declared: self.blob.size,
                actual: self.written,
            });
        }
        let outboard = std::mem::replace(&mut self.hasher, OutboardBuilder::new(0))
            .finish()
            .map_err(|source| BlobError::Outboard {
                digest: self.blob.digest,
                source,
            })?;
        let actual = Blake3Digest(outboard.root());
        if actual != self.blob.digest {
            return Err(BlobError::HashMismatch {
                expected: self.blob.digest,
                actual,
            });
        }
        let (ob_path, ob_bytes) = (self.outboard_dest.clone(), outboard.to_bytes());
        blocking(&ob_path.clone(), move || std::fs::write(&ob_path, ob_bytes)).await?;
        if let Some(mut f) = self.file.take() {
            f.flush().await.map_err(io(&self.tmp))?;
            f.sync_all().await.map_err(io(&self.tmp))?;
        }
        let dir = self
            .dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await.map_err(io(&dir))?;
        tokio::fs::rename(&self.tmp, &self.dest)
            .await
            .map_err(io(&self.dest))?;
        let d = dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&d).and_then(|f| f.sync_all()))
            .await
            .map_err(|e| io(&dir)(std::io::Error::other(e)))?
            .map_err(io(&dir))?;
        Ok(self.blob)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn stores_verified_blobs_and_refuses_lies() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"kernel bytes".to_vec();
        let blob = BlobRef {
            digest: Blake3Digest::of(&data),
            size: data.len() as u64,
        };
        let mut up = store.begin(blob).await.unwrap();
        up.write(&data[..5]).await.unwrap();
        up.write(&data[5..]).await.unwrap();
        up.finish().await.unwrap();
        assert_eq!(store.read_verified(&blob.digest).await.unwrap(), data);

        let lie = BlobRef {
            digest: Blake3Digest::of(b"other"),
            size: data.len() as u64,
        };
        let mut up = store.begin(lie).await.unwrap();
        up.write(&data).await.unwrap();
        assert!(matches!(
            up.finish().await,
            Err(BlobError::HashMismatch { .. })
        ));
        assert!(
            !store.path(&lie.digest).exists(),
            "a lying blob is never stored"
        );
        let tmp_left = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(tmp_left, 0, "temporary file reclaimed");

        let short = BlobRef {
            digest: blob.digest,
            size: 3,
        };
        let mut up = store.begin(short).await.unwrap();
        assert!(matches!(
            up.write(&data).await,
            Err(BlobError::SizeMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn tampered_blob_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"abc".to_vec();
        let blob = BlobRef {
            digest: Blake3Digest::of(&data),
            size: 3,
        };
        let mut up = store.begin(blob).await.unwrap();
        up.write(&data).await.unwrap();
        up.finish().await.unwrap();
        std::fs::write(store.path(&blob.digest), b"abd").unwrap();
        assert!(matches!(
            store.read_verified(&blob.digest).await,
            Err(BlobError::HashMismatch { .. })
        ));
        assert!(!store.verify_or_remove(&blob.digest).await.unwrap());
        assert!(
            !store.path(&blob.digest).exists(),
            "a lying file is removed"
        );
    }
}
