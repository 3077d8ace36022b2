//! Streamed uploads ([`Upload`]): a blob written front to back into `tmp/`,
//! hashed as it arrives, and moved into place only once it hashes to its
//! name. Used by replica pulls and by pushes that send no outboard.
//!
//! Invariants: nothing reaches `ab/<hex>` unless its bytes hash to `<hex>`
//! and were fsynced, and the directory is fsynced after the rename; an
//! upload dropped before [`Upload::finish`] leaves no temporary file. Every
//! write, hash and fsync runs off the async runtime's threads.
//!
//! Must not depend on: the Raft replica, the gRPC API or partial uploads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rackboot_image::outboard::OutboardBuilder;
use rackboot_state::{Blake3Digest, BlobRef};

use super::{BlobError, BlobStore, blocking, fsync_dir, io, off_runtime};

impl BlobStore {
    /// Start writing a blob.
    pub async fn begin(&self, blob: BlobRef) -> Result<Upload, BlobError> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}.{n}", blob.digest, std::process::id()));
        let t = tmp.clone();
        let file = blocking(&tmp, move || std::fs::File::create(&t)).await?;
        Ok(Upload {
            blob,
            tmp,
            file: Some(file),
            hasher: Some(OutboardBuilder::new(blob.size)),
            written: 0,
            dest: self.path(&blob.digest),
            outboard_dest: self.outboard_path(&blob.digest),
        })
    }
}

/// A blob being written. Dropped without [`Upload::finish`], its temporary
/// file is removed.
pub struct Upload {
    blob: BlobRef,
    tmp: PathBuf,
    /// The temporary file and the hash so far; both are away (on a blocking
    /// thread) while a write runs, and gone for good if one was cancelled.
    file: Option<std::fs::File>,
    hasher: Option<OutboardBuilder>,
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

    /// The file and hasher, unless an earlier write was cancelled midway.
    fn take_parts(&mut self) -> Result<(std::fs::File, OutboardBuilder), BlobError> {
        match (self.file.take(), self.hasher.take()) {
            (Some(file), Some(hasher)) => Ok((file, hasher)),
            _ => Err(io(&self.tmp)(std::io::Error::other(
                "an earlier write of this upload was interrupted",
            ))),
        }
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
        let (mut file, mut hasher) = self.take_parts()?;
        let data = data.to_vec();
        let (file, hasher, wrote) = off_runtime(&self.tmp, move || {
            hasher.update(&data);
            let wrote = file.write_all(&data);
            Ok((file, hasher, wrote))
        })
        .await?;
        self.file = Some(file);
        self.hasher = Some(hasher);
        wrote.map_err(io(&self.tmp))
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
        let (file, hasher) = self.take_parts()?;
        let blob = self.blob;
        let (tmp, dest, ob_path) = (
            self.tmp.clone(),
            self.dest.clone(),
            self.outboard_dest.clone(),
        );
        off_runtime(&self.tmp, move || {
            let outboard = hasher.finish().map_err(|source| BlobError::Outboard {
                digest: blob.digest,
                source,
            })?;
            let actual = Blake3Digest(outboard.root());
            if actual != blob.digest {
                return Err(BlobError::HashMismatch {
                    expected: blob.digest,
                    actual,
                });
            }
            std::fs::write(&ob_path, outboard.to_bytes()).map_err(io(&ob_path))?;
            file.sync_all().map_err(io(&tmp))?;
            drop(file);
            let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
            fsync_dir(&dir).map_err(io(&dir))?;
            Ok(blob)
        })
        .await
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
