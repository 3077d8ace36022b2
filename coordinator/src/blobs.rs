//! The coordinator's blob store: files named by their blake3 hash.
//!
//! A blob is written to `tmp/` while it streams in, hashed as it arrives,
//! fsynced, checked against the name it claimed, and only then renamed into
//! place (and the directory fsynced). So a blob under a name always hashes to
//! that name, and an interrupted upload leaves only a temporary file, removed
//! at start-up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
}

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
}

impl BlobStore {
    /// Open the store, creating directories and removing leftovers of
    /// interrupted uploads.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
            tmp_seq: AtomicU64::new(0),
        })
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
            hasher: blake3::Hasher::new(),
            written: 0,
            dest: self.path(&blob.digest),
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

/// A blob being written. Dropped without [`Upload::finish`], its temporary
/// file is removed.
pub struct Upload {
    blob: BlobRef,
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: blake3::Hasher,
    written: u64,
    dest: PathBuf,
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
        let actual = Blake3Digest::from(self.hasher.finalize());
        if actual != self.blob.digest {
            return Err(BlobError::HashMismatch {
                expected: self.blob.digest,
                actual,
            });
        }
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
