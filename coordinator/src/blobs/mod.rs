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
//! Unreferenced blobs are collected once the collector has seen them
//! unnamed for the grace period, measured on the monotonic clock, never by
//! file times ([`BlobStore::collect`]); a blob named by a committed image
//! never is.
//!
//! Modules: `store` (the layout, opening, reading and verifying stored
//! blobs), `upload` (streamed uploads, [`Upload`]), `partials` (resumable
//! pushes, [`Resumable`]), `collection` (reclaiming idle partials and
//! collecting unreferenced blobs, at a time the caller gives).
//!
//! Invariants: no file system call, fsync or hash of blob data runs on an
//! async runtime thread: each goes through [`tokio::task::spawn_blocking`]
//! (or `tokio::fs`). At most one push streams into a blob's partial upload
//! at a time (its [`KeyedLocks`](crate::keyed_locks::KeyedLocks) entry).
//!
//! Must not depend on: the Raft replica, the gRPC API or the rack agent;
//! which blobs are referenced is the caller's business.

mod collection;
mod partials;
mod store;
mod upload;

use std::path::Path;
use std::time::Duration;

use rackboot_image::outboard::OutboardError;
use rackboot_state::Blake3Digest;

pub use partials::{PartialStatus, Resumable};
pub use store::{BlobStore, GroupReadError, VerifiedGroups};
pub use upload::Upload;

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Run blocking work (file system calls, fsync, hashing) off the runtime's
/// threads; a task that cannot be joined is an I/O error on `path`.
async fn off_runtime<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io(path)(std::io::Error::other(e)))?
}

/// [`off_runtime`] for work whose errors are I/O errors on `path`.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BlobError> {
    let p = path.to_path_buf();
    off_runtime(path, move || f().map_err(io(&p))).await
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_state::BlobRef;

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
