//! Garbage collection in the blob store: interrupted pushes idle for the
//! grace period are reclaimed ([`BlobStore::reclaim`]), and stored blobs no
//! committed image names are collected ([`BlobStore::collect`]).
//!
//! Invariants:
//! - **Monotonic time decides deletion.** A file is removed only after the
//!   collector has seen it deletable, continuously, for the grace period
//!   of the caller's monotonic clock (`now`, an [`Instant`]). File times
//!   and the wall clock are never consulted, so a clock stepped forward (or
//!   a file with an old mtime) cannot delete a push in progress or a blob
//!   about to be named; after a restart every file gets a full grace
//!   period again.
//! - A partial a push holds open is never idle; a blob in the referenced
//!   set is never removed, and naming it again ([`BlobStore::touch`])
//!   restarts its grace period.
//! - Every file call runs off the async runtime's threads (except at open,
//!   which is synchronous).
//!
//! Must not depend on: the Raft replica (the caller says what is
//! referenced), the gRPC API or the system clock.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rackboot_state::Blake3Digest;

use super::{BlobError, BlobStore, blocking, io};

/// When the collector first saw each deletable file, by path: a file is due
/// once it has been seen deletable for the grace period. Files that stop
/// being deletable (named, resumed, gone) are forgotten.
#[derive(Debug, Default)]
pub(super) struct Sightings(Mutex<HashMap<PathBuf, Instant>>);

impl Sightings {
    /// Record `deletable` as seen at `now` (keeping earlier sightings,
    /// forgetting paths no longer deletable) and return those seen for at
    /// least `grace`.
    fn due(
        &self,
        deletable: &[(PathBuf, u64)],
        now: Instant,
        grace: Duration,
    ) -> Vec<(PathBuf, u64)> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let current: HashSet<&PathBuf> = deletable.iter().map(|(p, _)| p).collect();
        seen.retain(|p, _| current.contains(p));
        deletable
            .iter()
            .filter(|(p, _)| {
                let first = *seen.entry(p.clone()).or_insert(now);
                now.saturating_duration_since(first) >= grace
            })
            .cloned()
            .collect()
    }

    /// Forget `path`: its grace period starts again when next seen.
    pub(super) fn forget(&self, path: &Path) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }

    fn remove(&self, paths: &[(PathBuf, u64)]) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (p, _) in paths {
            seen.remove(p);
        }
    }
}

/// The blob (hex name) a partial-upload file (`<hex>.part`, `<hex>.obao`)
/// belongs to.
fn partial_blob(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    name.split('.').next().map(str::to_string)
}

/// Partial-upload files in `dir` whose blob is not in `live`, with their
/// sizes. Blocking.
fn orphan_partial_files(
    dir: &Path,
    live: &HashSet<String>,
) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        if partial_blob(&entry.path()).is_some_and(|b| live.contains(&b)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        out.push((entry.path(), meta.len()));
    }
    Ok(out)
}

/// Remove `files`, skipping those already gone. Blocking. Returns (files,
/// bytes) removed.
fn remove_files(files: &[(PathBuf, u64)]) -> (u64, u64) {
    let (mut n, mut bytes) = (0u64, 0u64);
    for (path, len) in files {
        if std::fs::remove_file(path).is_ok() {
            n += 1;
            bytes += len;
        }
    }
    (n, bytes)
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

    /// Start the grace period of every orphaned partial-upload file now
    /// (at open: nothing is removed before a full grace period has passed
    /// in this process). Blocking.
    pub(super) fn sight_partial_files_blocking(&self, now: Instant) -> Result<(), BlobError> {
        let dir = self.partial_dir();
        let orphans = orphan_partial_files(&dir, &self.live_partials()).map_err(io(&dir))?;
        self.orphan_partials.due(&orphans, now, self.grace);
        Ok(())
    }

    /// Forget interrupted pushes idle at `now` for longer than the grace
    /// period and remove their files, and partial files no push knows once
    /// they have been seen orphaned for the grace period. Returns (files,
    /// bytes) removed.
    pub async fn reclaim(&self, now: Instant) -> Result<(u64, u64), BlobError> {
        for (digest, slot) in self.partials.entries() {
            // A push streaming into it holds the lock: not idle.
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let idle = guard
                .as_ref()
                .is_none_or(|p| now.saturating_duration_since(p.touched) >= self.grace);
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
        let live = self.live_partials();
        let d = dir.clone();
        let orphans = blocking(&dir, move || orphan_partial_files(&d, &live)).await?;
        let due = self.orphan_partials.due(&orphans, now, self.grace);
        self.orphan_partials.remove(&due);
        // A push may have started on one of them meanwhile: leave those.
        let live = self.live_partials();
        let due: Vec<(PathBuf, u64)> = due
            .into_iter()
            .filter(|(p, _)| !partial_blob(p).is_some_and(|b| live.contains(&b)))
            .collect();
        blocking(&dir, move || Ok(remove_files(&due))).await
    }

    /// Remove stored blobs that `referenced` does not name once the
    /// collector has seen them unnamed for the grace period (of `now`'s
    /// clock). Returns (blobs, bytes) removed.
    pub async fn collect(
        &self,
        referenced: HashSet<Blake3Digest>,
        now: Instant,
    ) -> Result<(u64, u64), BlobError> {
        let root = self.root.clone();
        let unnamed = blocking(&self.root.clone(), move || {
            let mut out = Vec::new();
            for dir in std::fs::read_dir(&root)?.flatten() {
                if dir.file_name().len() != 2 {
                    continue;
                }
                for f in std::fs::read_dir(dir.path())?.flatten() {
                    let name = f.file_name().to_string_lossy().to_string();
                    let Ok(digest) = name.parse::<Blake3Digest>() else {
                        continue;
                    };
                    if referenced.contains(&digest) {
                        continue;
                    }
                    let Ok(meta) = f.metadata() else { continue };
                    out.push((f.path(), meta.len()));
                }
            }
            Ok(out)
        })
        .await?;
        let due = self.unreferenced.due(&unnamed, now, self.grace);
        self.unreferenced.remove(&due);
        let root = self.root.clone();
        blocking(&self.root.clone(), move || {
            let (mut blobs, mut bytes) = (0u64, 0u64);
            for (path, len) in &due {
                if std::fs::remove_file(path).is_err() {
                    continue;
                }
                if let Some(name) = path.file_name() {
                    let _ = std::fs::remove_file(root.join("obao").join(name));
                }
                blobs += 1;
                bytes += len;
                tracing::info!(blob = %path.display(), size = len, "unreferenced blob collected");
            }
            Ok((blobs, bytes))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_state::BlobRef;

    async fn stored(store: &BlobStore, data: &[u8]) -> BlobRef {
        let blob = BlobRef {
            digest: Blake3Digest::of(data),
            size: data.len() as u64,
        };
        let mut up = store.begin(blob).await.unwrap();
        up.write(data).await.unwrap();
        up.finish().await.unwrap();
        blob
    }

    /// A blob whose file time is ten years old (what a wall clock stepped
    /// forward by ten years looks like) is not collected: its grace period
    /// starts when the collector first sees it unnamed, on the monotonic
    /// clock. It goes once that much monotonic time has passed; a named
    /// blob never does, and naming one again restarts its grace.
    #[tokio::test]
    async fn unnamed_blobs_wait_a_monotonic_grace_whatever_the_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let grace = Duration::from_secs(3600);
        let store = BlobStore::open_with_grace(dir.path(), grace).unwrap();
        let unnamed = stored(&store, b"pushed, not yet committed").await;
        let named = stored(&store, b"a committed kernel").await;
        let touched = stored(&store, b"named again later").await;
        let decade = std::time::SystemTime::now() - Duration::from_secs(10 * 365 * 86_400);
        for b in [&unnamed, &named, &touched] {
            std::fs::File::options()
                .write(true)
                .open(store.path(&b.digest))
                .unwrap()
                .set_modified(decade)
                .unwrap();
        }
        let referenced = HashSet::from([named.digest]);
        let t0 = Instant::now();
        assert_eq!(store.collect(referenced.clone(), t0).await.unwrap(), (0, 0));
        assert!(
            store.path(&unnamed.digest).exists(),
            "an old mtime deletes nothing"
        );
        let almost = t0 + grace - Duration::from_secs(1);
        assert_eq!(
            store.collect(referenced.clone(), almost).await.unwrap(),
            (0, 0)
        );
        store.touch(&touched.digest).await;
        let later = t0 + grace;
        let (n, bytes) = store.collect(referenced.clone(), later).await.unwrap();
        assert_eq!((n, bytes), (1, unnamed.size));
        assert!(!store.path(&unnamed.digest).exists());
        assert!(store.path(&named.digest).exists());
        assert!(
            store.path(&touched.digest).exists(),
            "touched: grace restarted"
        );
        assert_eq!(
            store.collect(referenced, later + grace).await.unwrap(),
            (1, touched.size)
        );
        assert!(store.path(&named.digest).exists(), "named: never collected");
    }

    /// Orphaned partial files found at open get a full grace period from
    /// then, however old their file times.
    #[tokio::test]
    async fn orphaned_partial_files_wait_a_grace_from_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("partial")).unwrap();
        let orphan = dir
            .path()
            .join("partial")
            .join(format!("{}.data", Blake3Digest::of(b"x")));
        std::fs::write(&orphan, b"half a push").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&orphan)
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        let grace = Duration::from_secs(60);
        let opened = Instant::now();
        let store = BlobStore::open_with_grace(dir.path(), grace).unwrap();
        assert!(orphan.exists(), "not removed at open");
        assert_eq!(store.reclaim(opened).await.unwrap(), (0, 0));
        assert!(orphan.exists());
        assert_eq!(
            store
                .reclaim(opened + grace + Duration::from_secs(1))
                .await
                .unwrap(),
            (1, 11)
        );
        assert!(!orphan.exists());
    }
}
