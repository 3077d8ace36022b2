//! Resumable pushes: a push that sends the blob's outboard first streams
//! whole 1 MiB groups into a sparse `partial/<hex>.part`, each verified
//! before it is written ([`Resumable`]). A push that breaks keeps what it
//! wrote; the next push of the blob asks what is held
//! ([`BlobStore::partial_status`]) and sends only the rest.
//!
//! Invariants: a partial file holds only verified groups (and holes); after
//! a restart its groups are verified again before they count; one push at a
//! time streams into a blob's partial (it holds that blob's lock in
//! [`PartialSlots`]; another push is refused with [`BlobError::Busy`]).
//! Every file call and every group hash runs off the async runtime's
//! threads.
//!
//! Must not depend on: the Raft replica, the gRPC API or collection (which
//! decides when an idle partial goes).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rackboot_image::outboard::{self, GROUP, Outboard};
use rackboot_state::{Blake3Digest, BlobRef};

use super::{BlobError, BlobStore, blocking, fsync_dir, io, off_runtime};
use crate::keyed_locks::KeyedLocks;

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
pub(super) struct Partial {
    pub(super) blob: BlobRef,
    outboard: Arc<Outboard>,
    held: Vec<bool>,
    file: Arc<std::fs::File>,
    pub(super) data_path: PathBuf,
    pub(super) outboard_path: PathBuf,
    /// Last time a group arrived (or the partial was opened).
    pub(super) touched: Instant,
}

/// The partial upload of each blob being pushed, under that blob's lock
/// (`None` until loaded from disk or started).
pub(super) type PartialSlots = KeyedLocks<Blake3Digest, Option<Partial>>;

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

/// Read a partial left on disk: its outboard checked against the name (both
/// files removed when it does not match), each group present verified
/// again. Blocking; `None` when there is nothing usable.
fn read_partial(
    blob: BlobRef,
    data_path: &Path,
    outboard_path: &Path,
) -> Option<(Outboard, std::fs::File, Vec<bool>)> {
    let ob_bytes = std::fs::read(outboard_path).ok()?;
    let Ok(ob) = Outboard::new(blob.size, &ob_bytes, &blob.digest.0) else {
        let _ = std::fs::remove_file(outboard_path);
        let _ = std::fs::remove_file(data_path);
        return None;
    };
    let verified = || -> std::io::Result<(std::fs::File, Vec<bool>)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(data_path)?;
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
    };
    let (file, held) = verified().ok()?;
    Some((ob, file, held))
}

impl BlobStore {
    /// Load a partial left on disk (after a restart): its outboard checked
    /// against the name, each group present verified again.
    async fn load_partial(&self, blob: BlobRef) -> Option<Partial> {
        let (data_path, outboard_path) = self.partial_paths(&blob.digest);
        let (d, o) = (data_path.clone(), outboard_path.clone());
        let (outboard, file, held) =
            off_runtime(&data_path, move || Ok(read_partial(blob, &d, &o)))
                .await
                .ok()
                .flatten()?;
        Some(Partial {
            blob,
            outboard: Arc::new(outboard),
            held,
            file: Arc::new(file),
            data_path,
            outboard_path,
            touched: Instant::now(),
        })
    }

    /// What an interrupted push of `blob` left (None when nothing).
    pub async fn partial_status(&self, blob: BlobRef) -> Option<PartialStatus> {
        let known = self.partials.get(&blob.digest);
        let slot = match known {
            Some(s) => s,
            None if tokio::fs::metadata(self.partial_paths(&blob.digest).0)
                .await
                .is_ok() =>
            {
                self.partials.get_or_insert(&blob.digest)
            }
            None => return None,
        };
        let mut guard = slot.try_lock().ok()?;
        if guard.is_none() {
            *guard = self.load_partial(blob).await;
        }
        guard
            .as_ref()
            .filter(|p| p.blob == blob && p.held.iter().any(|h| *h))
            .map(Partial::status)
    }

    /// Start or resume a push of `blob` with its outboard. Refused when the
    /// outboard does not match the name, or another push of the blob streams.
    pub async fn resume(&self, blob: BlobRef, outboard: &[u8]) -> Result<Resumable, BlobError> {
        let bytes = outboard.to_vec();
        let ob = off_runtime(&self.outboard_path(&blob.digest), move || {
            Outboard::new(blob.size, &bytes, &blob.digest.0).map_err(|source| BlobError::Outboard {
                digest: blob.digest,
                source,
            })
        })
        .await?;
        let slot = self.partials.get_or_insert(&blob.digest);
        let mut guard = slot
            .try_lock_owned()
            .map_err(|_| BlobError::Busy(blob.digest))?;
        if guard.as_ref().is_some_and(|p| p.blob != blob) {
            // Same name, another size: the one being written cannot complete
            // (no data verifies under a wrong size); start again.
            if let Some(p) = guard.take() {
                let _ = tokio::fs::remove_file(&p.data_path).await;
            }
        }
        if guard.is_none() {
            *guard = self.load_partial(blob).await;
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
                outboard: Arc::new(ob),
                file: Arc::new(file),
                data_path,
                outboard_path,
                touched: Instant::now(),
            });
        }
        Ok(Resumable {
            guard,
            dest: self.path(&blob.digest),
            outboard_dest: self.outboard_path(&blob.digest),
            digest: blob.digest,
        })
    }
}

/// A push being resumed: holds the blob's partial upload exclusively.
pub struct Resumable {
    guard: tokio::sync::OwnedMutexGuard<Option<Partial>>,
    dest: PathBuf,
    outboard_dest: PathBuf,
    digest: Blake3Digest,
}

/// What one [`Resumable::write`] did on its blocking thread.
struct GroupsWritten {
    /// Groups newly written (now held).
    newly_held: Vec<usize>,
    /// At least one group verified.
    any_verified: bool,
    /// Groups newly written, or why the write stopped.
    result: Result<u64, BlobError>,
}

/// Verify and write whole groups of `data` from `offset` (see
/// [`Resumable::write`]). Blocking.
fn write_groups(
    partial: (&Outboard, &std::fs::File, &Path),
    held: &[bool],
    digest: Blake3Digest,
    size: u64,
    offset: u64,
    data: &[u8],
) -> GroupsWritten {
    let (ob, file, data_path) = partial;
    let mut out = GroupsWritten {
        newly_held: Vec::new(),
        any_verified: false,
        result: Ok(0),
    };
    let misaligned = || BlobError::Misaligned {
        digest,
        offset,
        len: data.len() as u64,
    };
    let mut written = 0;
    let mut index = offset / GROUP;
    let mut rest = data;
    while !rest.is_empty() || (size == 0 && written == 0 && index == 0) {
        let Some((off, len)) = outboard::group_range(size, index) else {
            out.result = Err(misaligned());
            return out;
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if rest.len() < len {
            out.result = Err(misaligned());
            return out;
        }
        let (group, tail) = rest.split_at(len);
        if let Err(source) = ob.verify_group(index, group) {
            out.result = Err(BlobError::Outboard { digest, source });
            return out;
        }
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        if held.get(i) == Some(&false) {
            if let Err(e) = file.write_all_at(group, off) {
                out.result = Err(io(data_path)(e));
                return out;
            }
            out.newly_held.push(i);
            written += 1;
        }
        out.any_verified = true;
        rest = tail;
        index += 1;
        if size == 0 {
            break;
        }
    }
    out.result = Ok(written);
    out
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
        if !offset.is_multiple_of(GROUP)
            || offset > size
            || (data.is_empty() && size > 0)
            || (size == 0 && !data.is_empty())
        {
            return Err(BlobError::Misaligned {
                digest,
                offset,
                len: data.len() as u64,
            });
        }
        let (ob, file, path) = (p.outboard.clone(), p.file.clone(), p.data_path.clone());
        let held = p.held.clone();
        let data = data.to_vec();
        let done = off_runtime(&p.data_path, move || {
            Ok(write_groups(
                (&ob, &file, &path),
                &held,
                digest,
                size,
                offset,
                &data,
            ))
        })
        .await?;
        for i in done.newly_held {
            if let Some(h) = p.held.get_mut(i) {
                *h = true;
            }
        }
        if done.any_verified {
            p.touched = Instant::now();
        }
        done.result
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
