//! Garbage collection in the blob store: interrupted pushes idle for the
//! grace period are reclaimed ([`BlobStore::reclaim`]), and stored blobs no
//! committed image names, older than the grace period, are collected
//! ([`BlobStore::collect`]).
//!
//! Invariants: the time is the caller's (`now`), never read here, so a test
//! can age files without waiting; a partial a push holds open is never
//! idle; a blob in the referenced set is never removed, whatever its age.
//! Every file call runs off the async runtime's threads (except at open,
//! which is synchronous).
//!
//! Must not depend on: the Raft replica (the caller says what is
//! referenced), the gRPC API or the system clock.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rackboot_state::Blake3Digest;

use super::{BlobError, BlobStore, blocking, io};

/// How long ago, at `now`, a file was last modified (zero when unknown or
/// in the future).
fn age(meta: &std::fs::Metadata, now: SystemTime) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default()
}

/// Remove the files in `dir` (partial uploads) whose blob is not in `live`
/// and that are at least `grace` old at `now`. Blocking. Returns (files,
/// bytes) removed.
fn remove_idle_partial_files(
    dir: &Path,
    live: &HashSet<String>,
    grace: Duration,
    now: SystemTime,
) -> std::io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let stem = name.split('.').next().unwrap_or_default().to_string();
        if live.contains(&stem) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if age(&meta, now) >= grace && std::fs::remove_file(entry.path()).is_ok() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

impl BlobStore {
    /// Names of the blobs with a partial upload known in memory.
    fn live_partials(&self) -> HashSet<String> {
        self.partials
            .keys()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Remove partial-upload files idle at `now` for longer than the grace
    /// period that no push holds open. Blocking (used at open).
    pub(super) fn reclaim_files_blocking(&self, now: SystemTime) -> Result<(u64, u64), BlobError> {
        let dir = self.partial_dir();
        remove_idle_partial_files(&dir, &self.live_partials(), self.grace, now).map_err(io(&dir))
    }

    /// Forget interrupted pushes idle at `now` for longer than the grace
    /// period and remove their files. Returns (files, bytes) removed.
    pub async fn reclaim(&self, now: SystemTime) -> Result<(u64, u64), BlobError> {
        for (digest, slot) in self.partials.entries() {
            // A push streaming into it holds the lock: not idle.
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let idle = guard
                .as_ref()
                .is_none_or(|p| now.duration_since(p.touched).unwrap_or_default() >= self.grace);
            if idle {
                if let Some(p) = guard.take() {
                    let (data, outboard) = (p.data_path, p.outboard_path);
                    let _ = blocking(&data.clone(), move || {
                        let _ = std::fs::remove_file(&data);
                        let _ = std::fs::remove_file(&outboard);
                        Ok(())
                    })
                    .await;
                }
                self.partials.remove(&digest);
            }
        }
        let dir = self.partial_dir();
        let (live, grace) = (self.live_partials(), self.grace);
        let d = dir.clone();
        blocking(&dir, move || {
            remove_idle_partial_files(&d, &live, grace, now)
        })
        .await
    }

    /// Remove stored blobs that `referenced` does not name and that are
    /// older than the grace period at `now`. Returns (blobs, bytes) removed.
    pub async fn collect(
        &self,
        referenced: HashSet<Blake3Digest>,
        now: SystemTime,
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
                    if referenced.contains(&digest) || age(&meta, now) < grace {
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
