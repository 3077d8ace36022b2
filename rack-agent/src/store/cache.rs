//! The agent's blob cache: files named by blake3 under `cache/`, each with
//! its outboard (`<hex>.obao`: the chaining values of its 1 MiB groups, see
//! `rackboot_image::outboard`).
//!
//! - **Fetch**: the coordinator sends the outboard first; it is checked
//!   against the blob's name, then every group is verified as it arrives. A
//!   stream that breaks or delivers a bad group is resumed from the last
//!   good group (up to [`FETCH_ATTEMPTS`]).
//!   Verified groups go to a temporary file as they arrive (memory holds
//!   one group), which is synced and renamed into place when complete.
//! - **Load** (start-up, every view change): each group is read from disk
//!   and verified against the outboard before the blob is served; groups
//!   that fail are fetched again one by one and written in place, the rest
//!   are kept. A verified blob is then served from its file
//!   ([`VerifiedFile`]: the descriptor the verification read, and the
//!   file's stamp then), never loaded whole: memory does not grow with
//!   images. A file changed on disk after that is not served; it is
//!   verified again ([`BlobCache::recheck`]).
//! - **Bound**: the files are kept under a size bound, evicting the least
//!   recently used first (a blob is used each time a view assigns it; the
//!   clock is the file's access time); a blob assigned to the rack is never
//!   evicted, and only assigned blobs are served.

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous storage: callers on a runtime use spawn_blocking"
)]

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rackboot_image::bundle::ModuleBundle;
use rackboot_image::outboard::{self, GROUP, Outboard, OutboardBuilder};
use rackboot_proto::v1 as pb;
use rackboot_proto::v1::agent_service_client::AgentServiceClient;
use rackboot_state::{Blake3Digest, BlobRef};
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

use crate::store::disk::{Recheck, Stamp, VerifiedFile};

/// A cache failure.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// File system error.
    #[error("cache {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Content does not match its name.
    #[error("blob {expected} failed verification (content hashes to {actual}, {size} bytes)")]
    Corrupt {
        /// Expected digest.
        expected: Blake3Digest,
        /// Actual digest.
        actual: Blake3Digest,
        /// Bytes received.
        size: u64,
    },
    /// The coordinator sent an outboard that does not match the name.
    #[error("blob {digest}: {source}")]
    Outboard {
        /// The blob.
        digest: Blake3Digest,
        /// What did not match.
        #[source]
        source: rackboot_image::OutboardError,
    },
    /// The coordinator's stream stopped sending (no message within the
    /// idle limit): given up, so the next blob is not held behind it.
    #[error("fetching blob {digest}: nothing received for {idle_secs} s; given up")]
    Stalled {
        /// The blob.
        digest: Blake3Digest,
        /// The idle limit.
        idle_secs: u64,
    },
    /// The coordinator could not provide it.
    #[error("fetching blob {digest}: {status}")]
    Fetch {
        /// The blob.
        digest: Blake3Digest,
        /// gRPC status.
        status: Box<tonic::Status>,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How many times one fetch is resumed after a broken stream or a bad group.
pub const FETCH_ATTEMPTS: u32 = 4;
/// Default bound on the cache's files (20 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 20 << 30;

/// A module bundle as read from its verified file, or why it cannot be
/// served.
pub type InspectedBundle = Result<Arc<ModuleBundle>, String>;

/// Verified blobs on disk, served from their files.
#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Longest wait for the next message of a fetch ([`FETCH_IDLE`]).
    fetch_idle: std::time::Duration,
    served: RwLock<HashMap<Blake3Digest, Arc<VerifiedFile>>>,
    /// Module bundles read once from their verified files.
    bundles: RwLock<HashMap<Blake3Digest, InspectedBundle>>,
    recheck: Arc<Recheck>,
    hits: AtomicU64,
    misses: AtomicU64,
    repaired: AtomicU64,
    evicted: AtomicU64,
    rechecked: AtomicU64,
}

/// A blob file in the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// The blob.
    pub digest: Blake3Digest,
    /// Bytes on disk.
    pub size: u64,
    /// Last use (access time).
    pub used: SystemTime,
}

/// What the cache holds and how often it had what was wanted (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blobs verified and served.
    pub blobs: u64,
    /// Their bytes (on disk; none of them held in memory).
    pub bytes: u64,
    /// Wanted blobs found served or intact on disk.
    pub hits: u64,
    /// Wanted blobs that had to be fetched from the coordinator.
    pub misses: u64,
    /// 1 MiB groups found corrupt on disk and fetched again.
    pub repaired_groups: u64,
    /// Blobs evicted to keep under the bound.
    pub evicted: u64,
    /// Served blobs verified again after their file changed on disk.
    pub rechecked: u64,
    /// The bound on the files.
    pub max_bytes: u64,
}

/// What the disk holds of a blob.
enum OnDisk {
    /// Nothing usable.
    Missing,
    /// Every group verified through `file`, whose stamp was `stamp`
    /// before and after.
    Intact { file: std::fs::File, stamp: Stamp },
    /// Some groups failed verification (or the file has the wrong size);
    /// the rest are good.
    Damaged { outboard: Outboard, bad: Vec<u64> },
}

/// Longest a blob fetch waits for the coordinator's next message (or its
/// answer to the request) before giving up.
pub const FETCH_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The next message of a fetch stream, or [`CacheError::Stalled`] after
/// `idle` without one.
async fn next_chunk(
    stream: &mut tonic::Streaming<pb::BlobChunk>,
    digest: Blake3Digest,
    idle: std::time::Duration,
) -> Result<Option<pb::BlobChunk>, CacheError> {
    match tokio::time::timeout(idle, stream.message()).await {
        Ok(r) => r.map_err(|status| CacheError::Fetch {
            digest,
            status: Box::new(status),
        }),
        Err(_) => Err(CacheError::Stalled {
            digest,
            idle_secs: idle.as_secs(),
        }),
    }
}

/// Run blocking storage work off the runtime.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io(path)(std::io::Error::other(e)))?
}

/// Verify `file` (of `size` bytes) group by group against `ob`, one group
/// in memory at a time; returns the groups that fail.
fn bad_groups(file: &std::fs::File, ob: &Outboard) -> std::io::Result<Vec<u64>> {
    let mut buf = vec![0u8; usize::try_from(GROUP).unwrap_or(1 << 20)];
    let mut bad = Vec::new();
    for g in 0..outboard::groups(ob.size()) {
        let Some((off, len)) = outboard::group_range(ob.size(), g) else {
            break;
        };
        let chunk = &mut buf[..usize::try_from(len).unwrap_or(0)];
        file.read_exact_at(chunk, off)?;
        if ob.verify_group(g, chunk).is_err() {
            bad.push(g);
        }
    }
    Ok(bad)
}

/// The outboard of `file` computed by reading it, one group at a time.
fn compute_outboard(file: &std::fs::File, size: u64) -> std::io::Result<Outboard> {
    let mut builder = OutboardBuilder::new(size);
    let mut buf = vec![0u8; usize::try_from(GROUP).unwrap_or(1 << 20)];
    let mut off = 0u64;
    while off < size {
        let n = usize::try_from((size - off).min(GROUP)).unwrap_or(0);
        file.read_exact_at(&mut buf[..n], off)?;
        builder.update(&buf[..n]);
        off += n as u64;
    }
    builder
        .finish()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

impl BlobCache {
    /// The same cache with another fetch idle limit (default
    /// [`FETCH_IDLE`]).
    pub fn with_fetch_idle(mut self, idle: std::time::Duration) -> Self {
        self.fetch_idle = idle;
        self
    }

    /// Open (create) the cache directory, bounded by [`DEFAULT_MAX_BYTES`].
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        Self::open_bounded(dir, DEFAULT_MAX_BYTES)
    }

    /// Open (create) the cache directory with a bound on its files.
    pub fn open_bounded(dir: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(BlobCache {
            dir: dir.to_path_buf(),
            max_bytes,
            fetch_idle: FETCH_IDLE,
            served: RwLock::new(HashMap::new()),
            bundles: RwLock::new(HashMap::new()),
            recheck: Arc::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            rechecked: AtomicU64::new(0),
        })
    }

    /// Served blobs whose file changed on disk: [`BlobCache::recheck_changed`]
    /// verifies them again.
    pub fn recheck(&self) -> &Arc<Recheck> {
        &self.recheck
    }

    /// Blobs and bytes held, hits and misses.
    pub fn stats(&self) -> CacheStats {
        let (blobs, bytes) = {
            let served = self.served.read().unwrap_or_else(|e| e.into_inner());
            (served.len() as u64, served.values().map(|b| b.len()).sum())
        };
        CacheStats {
            blobs,
            bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            repaired_groups: self.repaired.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            rechecked: self.rechecked.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
        }
    }

    fn path(&self, d: &Blake3Digest) -> PathBuf {
        self.dir.join(d.to_string())
    }

    fn outboard_path(&self, d: &Blake3Digest) -> PathBuf {
        self.dir.join(format!("{d}.obao"))
    }

    /// The blob files on disk (a directory walk).
    pub fn files(&self) -> Vec<CachedFile> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let digest = e.file_name().to_str()?.parse::<Blake3Digest>().ok()?;
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| CachedFile {
                    digest,
                    size: meta.len(),
                    used: meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH),
                })
            })
            .collect()
    }

    /// Keep the files under the bound: evict the least recently used blobs
    /// that `assigned` does not name. Returns the blobs evicted. When the
    /// assigned blobs alone exceed the bound they all stay (and a warning
    /// says so).
    pub fn enforce_bound(&self, assigned: &HashSet<Blake3Digest>) -> Vec<Blake3Digest> {
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        files.sort_by_key(|f| f.used);
        let mut evicted = Vec::new();
        for f in files {
            if total <= self.max_bytes {
                break;
            }
            if assigned.contains(&f.digest) {
                continue;
            }
            if std::fs::remove_file(self.path(&f.digest)).is_ok() {
                let _ = std::fs::remove_file(self.outboard_path(&f.digest));
                self.forget(&f.digest);
                total = total.saturating_sub(f.size);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(blob = %f.digest, size = f.size, "evicted from the cache (least recently used)");
                evicted.push(f.digest);
            }
        }
        if total > self.max_bytes {
            tracing::warn!(
                bytes = total,
                max_bytes = self.max_bytes,
                "the blobs assigned to this rack alone exceed the cache bound; keeping them"
            );
        }
        evicted
    }

    fn forget(&self, d: &Blake3Digest) {
        self.served
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(d);
        self.bundles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(d);
    }

    /// Stop serving every blob `assigned` does not name (they stay on disk;
    /// transfers in flight keep their own descriptor).
    pub fn retain_loaded(&self, assigned: &HashSet<Blake3Digest>) {
        self.served
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d, _| assigned.contains(d));
        self.bundles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d, _| assigned.contains(d));
    }

    /// Mark a blob used now (the LRU clock is the file's access time, so it
    /// survives restarts and leaves the modification time, part of the
    /// served file's stamp, alone).
    fn touch(path: &Path) {
        if let Ok(f) = std::fs::File::open(path) {
            let _ = f.set_times(std::fs::FileTimes::new().set_accessed(SystemTime::now()));
        }
    }

    /// Read a blob from disk and verify it group by group (blocking).
    fn read_disk(path: &Path, ob_path: &Path, blob: &BlobRef) -> Result<OnDisk, CacheError> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
            Err(e) => return Err(io(path)(e)),
        };
        let before = Stamp::of(&file.metadata().map_err(io(path))?);
        let ob = match std::fs::read(ob_path) {
            Ok(bytes) => Outboard::new(blob.size, &bytes, &blob.digest.0).ok(),
            Err(_) => None,
        };
        let Some(ob) = ob else {
            // No usable outboard (a cache from before outboards): compute it
            // from the file, and keep it when its root is the blob's name.
            if before.len() == blob.size
                && let Ok(ob) = compute_outboard(&file, blob.size)
                && ob.root() == blob.digest.0
            {
                std::fs::write(ob_path, ob.to_bytes()).map_err(io(ob_path))?;
                return Self::read_disk(path, ob_path, blob);
            }
            tracing::warn!(path = %path.display(), "cached blob corrupt; removing it");
            std::fs::remove_file(path).map_err(io(path))?;
            return Ok(OnDisk::Missing);
        };
        if before.len() != blob.size {
            // Truncated or grown: the groups past the right size are bad.
            file.set_len(blob.size).map_err(io(path))?;
            let bad = bad_groups(&file, &ob).map_err(io(path))?;
            tracing::warn!(path = %path.display(), size = before.len(), expected = blob.size, bad_groups = ?bad, "cached blob has the wrong size: the groups that fail verification are fetched again");
            return Ok(OnDisk::Damaged { outboard: ob, bad });
        }
        let bad = bad_groups(&file, &ob).map_err(io(path))?;
        if !bad.is_empty() {
            tracing::warn!(path = %path.display(), bad_groups = ?bad, "cached blob corrupt: the groups that fail verification are fetched again");
            return Ok(OnDisk::Damaged { outboard: ob, bad });
        }
        let after = Stamp::of(&file.metadata().map_err(io(path))?);
        if after != before {
            tracing::warn!(path = %path.display(), "cached blob changed while it was verified; verifying it again later");
            return Ok(OnDisk::Missing);
        }
        Ok(OnDisk::Intact {
            file,
            stamp: before,
        })
    }

    async fn read_disk_async(&self, blob: &BlobRef) -> Result<OnDisk, CacheError> {
        let (path, ob_path, b) = (
            self.path(&blob.digest),
            self.outboard_path(&blob.digest),
            *blob,
        );
        let p = path.clone();
        blocking(&p, move || {
            let r = Self::read_disk(&path, &ob_path, &b)?;
            if matches!(r, OnDisk::Intact { .. }) {
                Self::touch(&path);
            }
            Ok(r)
        })
        .await
    }

    /// A verified blob, if served.
    pub fn get(&self, d: &Blake3Digest) -> Option<Arc<VerifiedFile>> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .cloned()
    }

    /// Digests currently served.
    pub fn loaded(&self) -> Vec<Blake3Digest> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn insert(&self, d: Blake3Digest, file: std::fs::File, stamp: Stamp) {
        let v = VerifiedFile::new(d, self.path(&d), file, stamp, self.recheck.clone());
        self.served
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d, Arc::new(v));
        // A bundle read from an earlier file is read again.
        self.bundles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&d);
    }

    /// The module bundle in a served blob, read from its file once
    /// (blocking: its tar headers are read through).
    pub fn bundle(&self, d: &Blake3Digest) -> Option<InspectedBundle> {
        if let Some(b) = self
            .bundles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
        {
            return Some(b.clone());
        }
        let opened = self.get(d)?.open()?;
        let reader = std::io::BufReader::with_capacity(
            64 << 10,
            ReadFrom {
                opened: &opened,
                offset: 0,
            },
        );
        let inspected = rackboot_image::bundle::inspect_reader(reader)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        self.bundles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*d, inspected.clone());
        Some(inspected)
    }

    /// Load a blob from disk if present and intact (every group verified).
    /// A damaged file is kept for [`BlobCache::ensure`] to repair (only its
    /// bad groups are fetched again) and not served. Returns true when the
    /// blob is now served (counted as a cache hit).
    pub async fn load_from_disk(&self, blob: &BlobRef) -> Result<bool, CacheError> {
        if self.get(&blob.digest).is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let path = self.path(&blob.digest);
            let _ = tokio::task::spawn_blocking(move || Self::touch(&path)).await;
            return Ok(true);
        }
        match self.read_disk_async(blob).await? {
            OnDisk::Intact { file, stamp } => {
                self.insert(blob.digest, file, stamp);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            OnDisk::Missing | OnDisk::Damaged { .. } => Ok(false),
        }
    }

    /// Verify again the served blobs whose file changed on disk (see
    /// [`Recheck`]): each is taken out of service, read and verified
    /// group by group, and served again if intact. A damaged one is left
    /// to [`BlobCache::ensure`] to fetch its bad groups, asked for at once
    /// ([`Recheck::want_fetch`]). Returns the blobs taken; the caller
    /// calls [`Recheck::done`] with them once the servers have the result.
    pub async fn recheck_changed(&self, sizes: &HashMap<Blake3Digest, u64>) -> Vec<Blake3Digest> {
        let suspects = self.recheck.take();
        for &digest in &suspects {
            self.forget(&digest);
            self.rechecked.fetch_add(1, Ordering::Relaxed);
            let Some(&size) = sizes.get(&digest) else {
                continue;
            };
            let blob = BlobRef { digest, size };
            match self.load_from_disk(&blob).await {
                Ok(true) => {
                    tracing::info!(blob = %digest, "changed cached blob verified again: intact, served")
                }
                Ok(false) => {
                    tracing::warn!(blob = %digest, "changed cached blob is damaged: its bad groups are fetched again");
                    self.recheck.want_fetch();
                }
                Err(e) => {
                    tracing::error!(blob = %digest, error = %e, "changed cached blob could not be verified again");
                    self.recheck.want_fetch();
                }
            }
        }
        suspects
    }

    /// Make a blob available: from disk (its bad groups fetched again and
    /// written in place), or fetched from the coordinator group by group,
    /// verified, written durably and served (a fetch or a repair counts as
    /// a cache miss).
    pub async fn ensure(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
    ) -> Result<(), CacheError> {
        if self.get(&blob.digest).is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match self.read_disk_async(blob).await? {
            OnDisk::Intact { file, stamp } => {
                self.insert(blob.digest, file, stamp);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            OnDisk::Damaged { outboard, bad } => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.repair(client, blob, &outboard, bad).await?;
            }
            OnDisk::Missing => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.fetch_whole(client, blob).await?;
            }
        }
        match self.read_disk_async(blob).await? {
            OnDisk::Intact { file, stamp } => {
                self.insert(blob.digest, file, stamp);
                tracing::info!(blob = %blob.digest, size = blob.size, "blob cached and verified");
                Ok(())
            }
            _ => Err(CacheError::Corrupt {
                expected: blob.digest,
                actual: blob.digest,
                size: blob.size,
            }),
        }
    }

    /// Fetch the bad groups of a damaged file and write them in place.
    async fn repair(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
        outboard: &Outboard,
        bad: Vec<u64>,
    ) -> Result<(), CacheError> {
        let path = self.path(&blob.digest);
        for g in bad {
            let Some((off, len)) = outboard::group_range(blob.size, g) else {
                continue;
            };
            let (_, bytes) = self.fetch_range(client, blob, off, len).await?;
            outboard
                .verify_group(g, &bytes)
                .map_err(|source| CacheError::Outboard {
                    digest: blob.digest,
                    source,
                })?;
            let p = path.clone();
            blocking(&path, move || {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(io(&p))?;
                f.write_all_at(&bytes, off).map_err(io(&p))?;
                f.sync_data().map_err(io(&p))
            })
            .await?;
            self.repaired.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(blob = %blob.digest, "damaged cached blob repaired");
        Ok(())
    }

    /// Ask the coordinator for `length` bytes (0: to the end) of `blob` from
    /// `offset`; [`CacheError::Stalled`] when no answer comes within the
    /// idle limit.
    async fn open_fetch(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
        offset: u64,
        length: u64,
    ) -> Result<tonic::Streaming<pb::BlobChunk>, CacheError> {
        let request = client.fetch_blob(pb::FetchBlobRequest {
            blake3: blob.digest.to_string(),
            offset,
            length,
        });
        match tokio::time::timeout(self.fetch_idle, request).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CacheError::Fetch {
                digest: blob.digest,
                status: Box::new(status),
            }),
            Err(_) => Err(CacheError::Stalled {
                digest: blob.digest,
                idle_secs: self.fetch_idle.as_secs(),
            }),
        }
    }

    /// Fetch `len` bytes (at most a group) from `offset` in one stream;
    /// returns the outboard bytes (sent with the first message) and the
    /// data.
    async fn fetch_range(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
        offset: u64,
        len: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), CacheError> {
        let mut stream = self.open_fetch(client, blob, offset, len).await?;
        let mut ob = Vec::new();
        let mut data = Vec::with_capacity(usize::try_from(len.min(GROUP)).unwrap_or(0));
        while let Some(chunk) = next_chunk(&mut stream, blob.digest, self.fetch_idle).await? {
            if ob.is_empty() {
                ob = chunk.outboard;
            }
            if data.len() as u64 + chunk.data.len() as u64 > len {
                return Err(CacheError::Corrupt {
                    expected: blob.digest,
                    actual: Blake3Digest::of(&data),
                    size: offset + data.len() as u64 + chunk.data.len() as u64,
                });
            }
            data.extend_from_slice(&chunk.data);
        }
        Ok((ob, data))
    }

    /// Fetch a whole blob into a temporary file, verifying each group as it
    /// arrives and resuming after the last good group when the stream
    /// breaks or a group is bad; then sync it and move it into place with
    /// its outboard.
    async fn fetch_whole(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
    ) -> Result<(), CacheError> {
        let tmp = self.dir.join(format!(".{}.tmp", blob.digest));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let mut written = 0u64;
        let mut outboard: Option<Outboard> = None;
        let mut last_err = None;
        let mut done = false;
        for _ in 0..FETCH_ATTEMPTS {
            match self
                .fetch_groups(client, blob, &mut file, &tmp, &mut written, &mut outboard)
                .await
            {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e @ CacheError::Fetch { .. }) | Err(e @ CacheError::Corrupt { .. }) => {
                    tracing::warn!(blob = %blob.digest, verified = written, error = %e, "blob fetch interrupted; resuming after the last verified group");
                    last_err = Some(e);
                }
                Err(e) => {
                    drop(file);
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e);
                }
            }
        }
        let ob = match (done, outboard) {
            (true, Some(ob)) => ob,
            (done, _) => {
                drop(file);
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(last_err.filter(|_| !done).unwrap_or(CacheError::Corrupt {
                    expected: blob.digest,
                    actual: blob.digest,
                    size: written,
                }));
            }
        };
        file.flush().await.map_err(io(&tmp))?;
        file.sync_all().await.map_err(io(&tmp))?;
        drop(file);
        let (path, ob_path) = (self.path(&blob.digest), self.outboard_path(&blob.digest));
        let ob_bytes = ob.to_bytes();
        let p = path.clone();
        blocking(&path, move || {
            std::fs::write(&ob_path, &ob_bytes).map_err(io(&ob_path))?;
            std::fs::rename(&tmp, &p).map_err(io(&p))
        })
        .await
    }

    /// One stream from `written` (a group boundary): every group verified
    /// before it is appended to `file`.
    async fn fetch_groups(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
        file: &mut tokio::fs::File,
        tmp: &Path,
        written: &mut u64,
        outboard: &mut Option<Outboard>,
    ) -> Result<(), CacheError> {
        let fetch_err = |status: tonic::Status| CacheError::Fetch {
            digest: blob.digest,
            status: Box::new(status),
        };
        let mut stream = self.open_fetch(client, blob, *written, 0).await?;
        let mut group: Vec<u8> = Vec::new();
        let corrupt = |at: u64, extra: u64| CacheError::Corrupt {
            expected: blob.digest,
            actual: blob.digest,
            size: at + extra,
        };
        while let Some(chunk) = next_chunk(&mut stream, blob.digest, self.fetch_idle).await? {
            if outboard.is_none() {
                let ob = Outboard::new(blob.size, &chunk.outboard, &blob.digest.0).map_err(
                    |source| CacheError::Outboard {
                        digest: blob.digest,
                        source,
                    },
                )?;
                *outboard = Some(ob);
            }
            let Some(ob) = outboard.as_ref() else {
                continue;
            };
            let mut rest = &chunk.data[..];
            while !rest.is_empty() || (blob.size == 0 && *written == 0 && group.is_empty()) {
                let index = *written / GROUP;
                let Some((_, glen)) = outboard::group_range(blob.size, index) else {
                    return Err(corrupt(*written, rest.len() as u64));
                };
                let want = usize::try_from(glen).unwrap_or(0) - group.len();
                let (now, tail) = rest.split_at(want.min(rest.len()));
                group.extend_from_slice(now);
                rest = tail;
                if group.len() as u64 == glen {
                    if ob.verify_group(index, &group).is_err() {
                        // Resume from this group's start.
                        return Err(corrupt(*written, group.len() as u64));
                    }
                    file.write_all(&group).await.map_err(io(tmp))?;
                    *written += glen;
                    group.clear();
                }
                if blob.size == 0 {
                    return Ok(());
                }
            }
        }
        if *written < blob.size {
            return Err(fetch_err(tonic::Status::unavailable(format!(
                "stream ended after {} of {} bytes",
                written, blob.size
            ))));
        }
        Ok(())
    }
}

/// `std::io::Read` over an opened served file (reading a bundle's tar).
struct ReadFrom<'a> {
    opened: &'a crate::store::disk::Opened,
    offset: u64,
}

impl std::io::Read for ReadFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use rackboot_tftp_core::ReadAt;
        let left = self.opened.len().saturating_sub(self.offset);
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(0);
        if n == 0 {
            return Ok(0);
        }
        let data = self.opened.read_at(self.offset, n)?;
        buf[..n].copy_from_slice(&data);
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn disk_blobs_are_verified_before_loading() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let data = b"initrd".to_vec();
        let blob = BlobRef {
            digest: Blake3Digest::of(&data),
            size: data.len() as u64,
        };
        assert!(!cache.load_from_disk(&blob).await.unwrap());
        std::fs::write(dir.path().join(blob.digest.to_string()), b"tampered").unwrap();
        assert!(
            !cache.load_from_disk(&blob).await.unwrap(),
            "corrupt file not served"
        );
        assert!(
            !dir.path().join(blob.digest.to_string()).exists(),
            "corrupt file removed"
        );
        std::fs::write(dir.path().join(blob.digest.to_string()), &data).unwrap();
        assert!(cache.load_from_disk(&blob).await.unwrap());
        let served = cache.get(&blob.digest).unwrap().open().unwrap();
        let content = crate::store::disk::Served::File(served).into_content();
        assert_eq!(&content.read(0, 100).unwrap()[..], &data[..]);
    }

    async fn cached(dir: &Path, data: &[u8]) -> (BlobCache, BlobRef) {
        let cache = BlobCache::open(dir).unwrap();
        let blob = BlobRef {
            digest: Blake3Digest::of(data),
            size: data.len() as u64,
        };
        std::fs::write(dir.join(blob.digest.to_string()), data).unwrap();
        std::fs::write(
            dir.join(format!("{}.obao", blob.digest)),
            Outboard::compute(data).to_bytes(),
        )
        .unwrap();
        assert!(cache.load_from_disk(&blob).await.unwrap());
        (cache, blob)
    }

    #[tokio::test]
    async fn a_served_file_changed_on_disk_is_verified_again_before_it_is_served() {
        let dir = tempfile::tempdir().unwrap();
        // Three groups: a flip in the middle one.
        let data: Vec<u8> = (0..(2 * GROUP + 1000)).map(|i| (i % 249) as u8).collect();
        let (cache, blob) = cached(dir.path(), &data).await;
        let path = dir.path().join(blob.digest.to_string());
        let sizes = HashMap::from([(blob.digest, blob.size)]);
        let file = cache.get(&blob.digest).unwrap();
        assert!(file.open().is_some());

        // Touched only (same bytes, new modification time): refused until
        // verified again, then served again.
        std::thread::sleep(std::time::Duration::from_millis(10));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now()).unwrap();
        drop(f);
        assert!(file.open().is_none(), "changed since verified: not served");
        assert!(file.open().is_none(), "asked again while waiting");
        assert_eq!(cache.recheck_changed(&sizes).await, vec![blob.digest]);
        // Suspected once, until done.
        assert!(cache.recheck_changed(&sizes).await.is_empty());
        cache.recheck().done(&[blob.digest]);
        let again = cache.get(&blob.digest).expect("intact: served again");
        assert!(again.open().is_some());
        assert_eq!(cache.stats().rechecked, 1);

        // A bit flipped in place: refused, and after the recheck not served
        // at all (its bad group waits for a fetch).
        std::thread::sleep(std::time::Duration::from_millis(10));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[data[GROUP as usize + 5] ^ 1], GROUP + 5)
            .unwrap();
        drop(f);
        assert!(again.open().is_none());
        let fetch = cache.recheck().clone();
        let wanted = tokio::spawn(async move { fetch.fetch_wanted().await });
        assert_eq!(cache.recheck_changed(&sizes).await, vec![blob.digest]);
        tokio::time::timeout(std::time::Duration::from_secs(5), wanted)
            .await
            .expect("a damaged blob asks for a fetch at once")
            .unwrap();
        assert!(cache.get(&blob.digest).is_none(), "damaged: not served");
        let path2 = cache.path(&blob.digest);
        let ob_path = cache.outboard_path(&blob.digest);
        match BlobCache::read_disk(&path2, &ob_path, &blob).unwrap() {
            OnDisk::Damaged { bad, .. } => assert_eq!(bad, vec![1], "only the flipped group"),
            _ => panic!("expected the middle group damaged"),
        }
    }

    #[tokio::test]
    async fn a_file_of_the_wrong_size_has_its_tail_groups_refetched() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(GROUP + 10)).map(|i| (i % 7) as u8).collect();
        let (cache, blob) = cached(dir.path(), &data).await;
        drop(cache);
        let path = dir.path().join(blob.digest.to_string());
        std::fs::write(&path, &data[..100]).unwrap();
        let ob_path = dir.path().join(format!("{}.obao", blob.digest));
        match BlobCache::read_disk(&path, &ob_path, &blob).unwrap() {
            OnDisk::Damaged { bad, .. } => assert_eq!(bad, vec![0, 1]),
            _ => panic!("a truncated file is damaged"),
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), blob.size);
    }
}
