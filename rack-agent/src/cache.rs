//! The agent's blob cache: files named by blake3 under `cache/`, verified on
//! arrival and again when loaded for serving. Served bytes live in memory, so
//! the packet path never touches the file system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
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

/// Verified blobs on disk and in memory.
#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    mem: RwLock<HashMap<Blake3Digest, Bytes>>,
    hits: AtomicU64,
    misses: AtomicU64,
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

impl BlobCache {
    /// Open (create) the cache directory.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(BlobCache {
            dir: dir.to_path_buf(),
            mem: RwLock::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
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
        }
    }

    fn path(&self, d: &Blake3Digest) -> PathBuf {
        self.dir.join(d.to_string())
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

    /// Load a blob from disk if present and intact. A corrupt file is removed
    /// (it will be fetched again). Returns true when the blob is now loaded
    /// (counted as a cache hit).
    pub async fn load_from_disk(&self, blob: &BlobRef) -> Result<bool, CacheError> {
        if self.get(&blob.digest).is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let path = self.path(&blob.digest);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&path)(e)),
        };
        if let Err(e) = verify(blob, &data) {
            tracing::warn!(error = %e, path = %path.display(), "cached blob corrupt; removing it");
            tokio::fs::remove_file(&path).await.map_err(io(&path))?;
            return Ok(false);
        }
        self.insert(blob.digest, Bytes::from(data));
        self.hits.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Make a blob available: from disk, or fetched from the coordinator,
    /// verified, written durably and loaded (a fetch counts as a cache miss).
    pub async fn ensure(
        &self,
        client: &mut AgentServiceClient<Channel>,
        blob: &BlobRef,
    ) -> Result<(), CacheError> {
        if self.load_from_disk(blob).await? {
            return Ok(());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let fetch_err = |status: tonic::Status| CacheError::Fetch {
            digest: blob.digest,
            status: Box::new(status),
        };
        let mut stream = client
            .fetch_blob(pb::FetchBlobRequest {
                blake3: blob.digest.to_string(),
                offset: 0,
            })
            .await
            .map_err(fetch_err)?
            .into_inner();
        let cap = usize::try_from(blob.size.min(1 << 30)).unwrap_or(0);
        let mut data = Vec::with_capacity(cap);
        while let Some(chunk) = stream.message().await.map_err(fetch_err)? {
            if data.len() as u64 + chunk.data.len() as u64 > blob.size {
                return Err(CacheError::Corrupt {
                    expected: blob.digest,
                    actual: Blake3Digest::of(&data),
                    size: data.len() as u64 + chunk.data.len() as u64,
                });
            }
            data.extend_from_slice(&chunk.data);
        }
        verify(blob, &data)?;
        let path = self.path(&blob.digest);
        let tmp = self.dir.join(format!(".{}.tmp", blob.digest));
        let bytes = Bytes::from(data);
        let write = bytes.clone();
        let (t, p) = (tmp.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
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
