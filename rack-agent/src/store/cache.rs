//! The agent's blob cache: files named by blake3 under `cache/`, each with
//! its outboard (`<hex>.obao`: the chaining values of its 1 MiB groups, see
//! `rackboot_image::outboard`).
//!
//! - **Fetch**: the coordinator sends the outboard first; it is checked
//!   against the blob's name, then every group is verified as it arrives. A
//!   stream that breaks or delivers a bad group is resumed from the last
//!   good group (up to [`FETCH_ATTEMPTS`]).
//! - **Load** (start-up, every view change): each group is verified against
//!   the outboard before the blob is served; groups that fail are fetched
//!   again one by one, the rest are kept. Served bytes then live in memory,
//!   verified, so the packet path never touches the file system and nothing
//!   is rehashed per read.
//! - **Bound**: the files are kept under a size bound, evicting the least
//!   recently used first (a blob is used each time a view assigns it); a
//!   blob assigned to the rack is never evicted, and only assigned blobs stay
//!   in memory.

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous storage: callers on a runtime use spawn_blocking"
)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use rackboot_image::outboard::{self, GROUP, Outboard};
use rackboot_proto::v1 as pb;
use rackboot_proto::v1::agent_service_client::AgentServiceClient;
use rackboot_state::{Blake3Digest, BlobRef};
use tonic::transport::Channel;

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

/// Verified blobs on disk and in memory.
#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Longest wait for the next message of a fetch ([`FETCH_IDLE`]).
    fetch_idle: std::time::Duration,
    mem: RwLock<HashMap<Blake3Digest, Bytes>>,
    hits: AtomicU64,
    misses: AtomicU64,
    repaired: AtomicU64,
    evicted: AtomicU64,
}

/// A blob file in the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// The blob.
    pub digest: Blake3Digest,
    /// Bytes on disk.
    pub size: u64,
    /// Last use (modification time).
    pub used: SystemTime,
}

/// What the cache holds and how often it had what was wanted (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blobs loaded.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Wanted blobs found in memory or intact on disk.
    pub hits: u64,
    /// Wanted blobs that had to be fetched from the coordinator.
    pub misses: u64,
    /// 1 MiB groups found corrupt on disk and fetched again.
    pub repaired_groups: u64,
    /// Blobs evicted to keep under the bound.
    pub evicted: u64,
    /// The bound on the files.
    pub max_bytes: u64,
}

/// What the disk holds of a blob.
enum OnDisk {
    /// Nothing usable.
    Missing,
    /// Intact.
    Intact(Vec<u8>),
    /// Some groups failed verification; the rest are good.
    Damaged {
        data: Vec<u8>,
        outboard: Outboard,
        bad: Vec<u64>,
    },
}

fn verify(expected: &BlobRef, data: &[u8]) -> Result<(), CacheError> {
    let actual = Blake3Digest::of(data);
    if actual != expected.digest || data.len() as u64 != expected.size {
        return Err(CacheError::Corrupt {
            expected: expected.digest,
            actual,
            size: data.len() as u64,
        });
    }
    Ok(())
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
            mem: RwLock::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Blobs and bytes held, hits and misses.
    pub fn stats(&self) -> CacheStats {
        let (blobs, bytes) = {
            let mem = self.mem.read().unwrap_or_else(|e| e.into_inner());
            (mem.len() as u64, mem.values().map(|b| b.len() as u64).sum())
        };
        CacheStats {
            blobs,
            bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            repaired_groups: self.repaired.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
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
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
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
                self.mem
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&f.digest);
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

    /// Drop from memory every blob `assigned` does not name (they stay on
    /// disk; transfers in flight keep their own reference).
    pub fn retain_loaded(&self, assigned: &HashSet<Blake3Digest>) {
        self.mem
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d, _| assigned.contains(d));
    }

    /// Mark a blob used now (the LRU clock is the file's modification time,
    /// so it survives restarts).
    fn touch(&self, d: &Blake3Digest) {
        if let Ok(f) = std::fs::File::options().write(true).open(self.path(d)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Read a blob from disk and verify it group by group.
    async fn read_disk(&self, blob: &BlobRef) -> Result<OnDisk, CacheError> {
        let path = self.path(&blob.digest);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
            Err(e) => return Err(io(&path)(e)),
        };
        let ob = match tokio::fs::read(self.outboard_path(&blob.digest)).await {
            Ok(bytes) => Outboard::new(blob.size, &bytes, &blob.digest.0).ok(),
            Err(_) => None,
        };
        let Some(ob) = ob else {
            // No usable outboard (a cache from before outboards): verify
            // the whole file, and write the outboard when it is intact.
            if verify(blob, &data).is_ok() {
                let ob = Outboard::compute(&data);
                let _ = tokio::fs::write(self.outboard_path(&blob.digest), ob.to_bytes()).await;
                return Ok(OnDisk::Intact(data));
            }
            tracing::warn!(path = %path.display(), "cached blob corrupt; removing it");
            tokio::fs::remove_file(&path).await.map_err(io(&path))?;
            return Ok(OnDisk::Missing);
        };
        let mut data = data;
        if (data.len() as u64) > blob.size {
            data.truncate(usize::try_from(blob.size).unwrap_or(0));
        }
        let bad = ob.bad_groups(&data);
        if bad.is_empty() {
            return Ok(OnDisk::Intact(data));
        }
        tracing::warn!(path = %path.display(), bad_groups = ?bad, "cached blob corrupt: the groups that fail verification are fetched again");
        data.resize(usize::try_from(blob.size).unwrap_or(0), 0);
        Ok(OnDisk::Damaged {
            data,
            outboard: ob,
            bad,
        })
    }

    /// A verified blob, if loaded.
    pub fn get(&self, d: &Blake3Digest) -> Option<Bytes> {
        self.mem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .cloned()
    }

    /// Digests currently loaded.
    pub fn loaded(&self) -> Vec<Blake3Digest> {
        self.mem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn insert(&self, d: Blake3Digest, b: Bytes) {
        self.mem
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d, b);
    }

    /// Load a blob from disk if present and intact (every group verified).
    /// A damaged file is kept for [`BlobCache::ensure`] to repair (only its
    /// bad groups are fetched again) and not served. Returns true when the
    /// blob is now loaded (counted as a cache hit).
    pub async fn load_from_disk(&self, blob: &BlobRef) -> Result<bool, CacheError> {
        if self.get(&blob.digest).is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.touch(&blob.digest);
            return Ok(true);
        }
        match self.read_disk(blob).await? {
            OnDisk::Intact(data) => {
                self.insert(blob.digest, Bytes::from(data));
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.touch(&blob.digest);
                Ok(true)
            }
            OnDisk::Missing | OnDisk::Damaged { .. } => Ok(false),
        }
    }

    /// Make a blob available: from disk (its bad groups fetched again), or
    /// fetched from the coordinator group by group, verified, written
    /// durably and loaded (a fetch or a repair counts as a cache miss).
    pub async fn ensure(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
    ) -> Result<(), CacheError> {
        if self.get(&blob.digest).is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.touch(&blob.digest);
            return Ok(());
        }
        let data = match self.read_disk(blob).await? {
            OnDisk::Intact(data) => {
                self.insert(blob.digest, Bytes::from(data));
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.touch(&blob.digest);
                return Ok(());
            }
            OnDisk::Damaged {
                mut data,
                outboard,
                bad,
            } => {
                self.misses.fetch_add(1, Ordering::Relaxed);
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
                    let (a, b) = (
                        usize::try_from(off).unwrap_or(0),
                        usize::try_from(off + len).unwrap_or(0),
                    );
                    if let Some(dst) = data.get_mut(a..b) {
                        dst.copy_from_slice(&bytes);
                    }
                    self.repaired.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(blob = %blob.digest, "damaged cached blob repaired");
                (data, outboard)
            }
            OnDisk::Missing => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.fetch_whole(client, blob).await?
            }
        };
        let (data, ob) = data;
        verify(blob, &data)?;
        let path = self.path(&blob.digest);
        let tmp = self.dir.join(format!(".{}.tmp", blob.digest));
        let ob_path = self.outboard_path(&blob.digest);
        let bytes = Bytes::from(data);
        let write = bytes.clone();
        let ob_bytes = ob.to_bytes();
        let (t, p) = (tmp.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::write(&ob_path, &ob_bytes)?;
            let mut f = std::fs::File::create(&t)?;
            f.write_all(&write)?;
            f.sync_all()?;
            std::fs::rename(&t, &p)
        })
        .await
        .map_err(|e| io(&tmp)(std::io::Error::other(e)))?
        .map_err(io(&path))?;
        self.insert(blob.digest, bytes);
        tracing::info!(blob = %blob.digest, size = blob.size, "blob cached and verified");
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

    /// Fetch `len` bytes from `offset` in one stream; returns the outboard
    /// bytes (sent with the first message) and the data.
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

    /// Fetch a whole blob, verifying each group as it arrives and resuming
    /// after the last good group when the stream breaks or a group is bad.
    async fn fetch_whole(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
    ) -> Result<(Vec<u8>, Outboard), CacheError> {
        let cap = usize::try_from(blob.size.min(1 << 30)).unwrap_or(0);
        let mut data: Vec<u8> = Vec::with_capacity(cap);
        let mut outboard: Option<Outboard> = None;
        let mut last_err = None;
        for _ in 0..FETCH_ATTEMPTS {
            match self
                .fetch_groups(client, blob, &mut data, &mut outboard)
                .await
            {
                Ok(()) => {
                    if let Some(ob) = outboard {
                        return Ok((data, ob));
                    }
                    // Nothing at all arrived: the stream was empty.
                    return Err(CacheError::Corrupt {
                        expected: blob.digest,
                        actual: Blake3Digest::of(&data),
                        size: data.len() as u64,
                    });
                }
                Err(e @ CacheError::Fetch { .. }) | Err(e @ CacheError::Corrupt { .. }) => {
                    tracing::warn!(blob = %blob.digest, verified = data.len(), error = %e, "blob fetch interrupted; resuming after the last verified group");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(CacheError::Corrupt {
            expected: blob.digest,
            actual: Blake3Digest::of(&data),
            size: data.len() as u64,
        }))
    }

    /// One stream from `data.len()` (a group boundary): every group
    /// verified before it is appended to `data`.
    async fn fetch_groups(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
        data: &mut Vec<u8>,
        outboard: &mut Option<Outboard>,
    ) -> Result<(), CacheError> {
        let fetch_err = |status: tonic::Status| CacheError::Fetch {
            digest: blob.digest,
            status: Box::new(status),
        };
        let start = data.len() as u64;
        let mut stream = self.open_fetch(client, blob, start, 0).await?;
        let mut group: Vec<u8> = Vec::new();
        let corrupt = |data: &[u8], extra: u64| CacheError::Corrupt {
            expected: blob.digest,
            actual: Blake3Digest::of(data),
            size: data.len() as u64 + extra,
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
            while !rest.is_empty() || (blob.size == 0 && data.is_empty() && group.is_empty()) {
                let index = data.len() as u64 / GROUP;
                let Some((_, glen)) = outboard::group_range(blob.size, index) else {
                    return Err(corrupt(data, rest.len() as u64));
                };
                let want = usize::try_from(glen).unwrap_or(0) - group.len();
                let (now, tail) = rest.split_at(want.min(rest.len()));
                group.extend_from_slice(now);
                rest = tail;
                if group.len() as u64 == glen {
                    if ob.verify_group(index, &group).is_err() {
                        // Resume from this group's start.
                        return Err(corrupt(data, group.len() as u64));
                    }
                    data.append(&mut group);
                }
                if blob.size == 0 {
                    return Ok(());
                }
            }
        }
        if (data.len() as u64) < blob.size {
            return Err(fetch_err(tonic::Status::unavailable(format!(
                "stream ended after {} of {} bytes",
                data.len(),
                blob.size
            ))));
        }
        Ok(())
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
        assert_eq!(cache.get(&blob.digest).unwrap(), Bytes::from(data));
    }
}
