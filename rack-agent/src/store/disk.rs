//! Files served from disk, never loaded whole: verified cache blobs and
//! static-root files. What a served path holds is a [`Body`]; a request
//! opens it ([`Body::open`]) and gets [`Served`] bytes: a memory slice, or
//! an [`Opened`] file that TFTP reads block by block (`pread`) and HTTP
//! hands to the kernel (`sendfile`).
//!
//! - **Verified blobs** ([`VerifiedFile`]) keep the descriptor their
//!   verification read through, with the file's stamp (device, inode, size,
//!   modification time) at that moment. Every open compares the descriptor's
//!   stamp and the inode at the path with it; a file changed behind the
//!   agent's back is not served, and is handed to [`Recheck`] to be verified
//!   again (and repaired) before it is served again.
//! - **Static-root files** ([`StaticFile`]) are the operator's: served as
//!   they are on disk when asked for. A descriptor is kept per file (up to
//!   [`MAX_KEPT_STATIC`] across the root) and reopened when the file at the
//!   path changes; it is opened without following a final link and
//!   refused unless it is a regular file.
//!
//! These calls (`fstat`, `stat`, `open`, `pread` of a resident file) run on
//! the servers' event loops: they take microseconds on a file the kernel
//! holds, and the serving paths read one block or one `sendfile` chunk at a
//! time. Their time is counted in [`DiskStats`] (metrics) so that a slow
//! disk shows.

#![allow(
    clippy::disallowed_methods,
    reason = "the serving path's metadata calls and opens: microseconds, counted in DiskStats"
)]

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rackboot_state::Blake3Digest;
use rackboot_tftp_core::{Content, ReadAt};

/// Static-root descriptors kept open across the whole root; files past this
/// are opened per request.
pub const MAX_KEPT_STATIC: usize = 1024;

/// What identifies a file's content on disk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    /// The stamp of `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn same_file(&self, other: &Stamp) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// An HTTP entity tag for a file that has no digest (nginx's form:
    /// modification time and size, plus the inode).
    fn etag(&self) -> String {
        format!(
            "{:x}-{:x}.{:x}-{:x}",
            self.ino, self.mtime, self.mtime_nsec, self.len
        )
    }
}

/// Time spent reading served files on the event loops.
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Reads (`pread` of TFTP blocks).
    pub reads: AtomicU64,
    /// Nanoseconds spent in them.
    pub read_nanos: AtomicU64,
    /// The longest one, in nanoseconds.
    pub read_max_nanos: AtomicU64,
    /// Opens of served files (metadata checks included).
    pub opens: AtomicU64,
    /// Nanoseconds spent in them.
    pub open_nanos: AtomicU64,
    /// Requests refused because a verified file had changed on disk.
    pub changed: AtomicU64,
}

impl DiskStats {
    fn record_read(&self, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_nanos.fetch_add(ns, Ordering::Relaxed);
        self.read_max_nanos.fetch_max(ns, Ordering::Relaxed);
    }

    fn record_open(&self, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.opens.fetch_add(1, Ordering::Relaxed);
        self.open_nanos.fetch_add(ns, Ordering::Relaxed);
    }
}

/// The process's disk-read counters (the serving paths of every server
/// share them).
pub fn disk_stats() -> &'static DiskStats {
    static STATS: DiskStats = DiskStats {
        reads: AtomicU64::new(0),
        read_nanos: AtomicU64::new(0),
        read_max_nanos: AtomicU64::new(0),
        opens: AtomicU64::new(0),
        open_nanos: AtomicU64::new(0),
        changed: AtomicU64::new(0),
    };
    &STATS
}

/// Verified blobs that changed on disk, waiting to be verified again. One
/// task (the agent's cache warden) takes them; requests only add to it.
/// A blob is suspected once until the warden is done with it: requests
/// that meet it meanwhile wait for the file table to serve it again.
#[derive(Debug, Default)]
pub struct Recheck {
    state: Mutex<RecheckState>,
    notify: tokio::sync::Notify,
    fetch: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct RecheckState {
    /// Reported, not yet taken.
    pending: HashSet<Blake3Digest>,
    /// Taken by the warden, until it calls [`Recheck::done`].
    checking: HashSet<Blake3Digest>,
}

impl Recheck {
    /// Report a blob whose file changed.
    pub fn suspect(&self, digest: Blake3Digest) {
        let new = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            !s.checking.contains(&digest) && s.pending.insert(digest)
        };
        if new {
            tracing::warn!(blob = %digest, "cached blob changed on disk behind the agent; not served until verified again");
            self.notify.notify_one();
        }
    }

    /// Wait until there is something to recheck.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// The blobs to verify again (taken until [`Recheck::done`]).
    pub fn take(&self) -> Vec<Blake3Digest> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let taken: Vec<Blake3Digest> = s.pending.drain().collect();
        s.checking.extend(taken.iter().copied());
        taken
    }

    /// The warden is done with `digests` and the servers have the result:
    /// a later change is reported again.
    pub fn done(&self, digests: &[Blake3Digest]) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for d in digests {
            s.checking.remove(d);
        }
    }

    /// Ask for the assigned blobs to be fetched now (a recheck found one
    /// damaged: its requests are waiting for the repair).
    pub fn want_fetch(&self) {
        self.fetch.notify_one();
    }

    /// Wait until [`Recheck::want_fetch`] is called.
    pub async fn fetch_wanted(&self) {
        self.fetch.notified().await;
    }
}

/// A file opened for one request: its descriptor (shared), its length at
/// open, and its entity tag.
#[derive(Debug, Clone)]
pub struct Opened {
    file: Arc<File>,
    len: u64,
    etag: String,
    /// For a verified file, the stamp its content was verified under.
    verified: Option<Stamp>,
}

impl Opened {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entity tag (the blob's digest, or a stamp for a static file).
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The descriptor (for `sendfile`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// False once a verified file's content may have changed since it was
    /// verified (checked between the chunks of a long body).
    pub fn intact(&self) -> bool {
        let Some(stamp) = self.verified else {
            return true;
        };
        self.file.metadata().is_ok_and(|m| Stamp::of(&m) == stamp)
    }
}

impl ReadAt for Opened {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let started = Instant::now();
        let mut buf = vec![0u8; len];
        let r = self.file.read_exact_at(&mut buf, offset);
        disk_stats().record_read(started);
        r.map(|()| Bytes::from(buf))
    }
}

/// A blob whose every group was verified against its outboard, served
/// from the descriptor the verification read.
#[derive(Debug)]
pub struct VerifiedFile {
    digest: Blake3Digest,
    path: PathBuf,
    file: Arc<File>,
    stamp: Stamp,
    recheck: Arc<Recheck>,
}

impl VerifiedFile {
    /// A file verified through `file`, whose stamp then was `stamp`.
    pub fn new(
        digest: Blake3Digest,
        path: PathBuf,
        file: File,
        stamp: Stamp,
        recheck: Arc<Recheck>,
    ) -> Self {
        VerifiedFile {
            digest,
            path,
            file: Arc::new(file),
            stamp,
            recheck,
        }
    }

    /// The blob.
    pub fn digest(&self) -> Blake3Digest {
        self.digest
    }

    /// Its size.
    pub fn len(&self) -> u64 {
        self.stamp.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.stamp.len == 0
    }

    /// Open for a request: `None` (and the blob handed to [`Recheck`]) when
    /// the file changed since it was verified, in place or by being
    /// replaced.
    pub fn open(&self) -> Option<Opened> {
        let started = Instant::now();
        let now = self.file.metadata().map(|m| Stamp::of(&m));
        let at_path = std::fs::metadata(&self.path).map(|m| Stamp::of(&m));
        disk_stats().record_open(started);
        let intact = now.as_ref().is_ok_and(|s| *s == self.stamp)
            && at_path.as_ref().is_ok_and(|s| s.same_file(&self.stamp));
        if !intact {
            disk_stats().changed.fetch_add(1, Ordering::Relaxed);
            self.recheck.suspect(self.digest);
            return None;
        }
        Some(Opened {
            file: self.file.clone(),
            len: self.stamp.len,
            etag: self.digest.to_string(),
            verified: Some(self.stamp),
        })
    }
}

/// How many static-root descriptors are kept open.
static KEPT_STATIC: AtomicUsize = AtomicUsize::new(0);

/// An operator's file in the static root, at its canonical path.
#[derive(Debug)]
pub struct StaticFile {
    path: PathBuf,
    kept: Mutex<Option<(Arc<File>, Stamp)>>,
}

impl StaticFile {
    /// The file at `path` (canonical, inside the root).
    pub fn new(path: PathBuf) -> Self {
        StaticFile {
            path,
            kept: Mutex::new(None),
        }
    }

    /// Open for a request: the file as it is on disk now.
    pub fn open(&self) -> std::io::Result<Opened> {
        let started = Instant::now();
        let r = self.open_inner();
        disk_stats().record_open(started);
        r
    }

    fn open_inner(&self) -> std::io::Result<Opened> {
        let now = Stamp::of(&std::fs::metadata(&self.path)?);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((file, stamp)) = kept.as_ref()
            && *stamp == now
        {
            return Ok(Opened {
                file: file.clone(),
                len: stamp.len,
                etag: stamp.etag(),
                verified: None,
            });
        }
        // Not a FIFO (O_NONBLOCK: opening one never waits for a writer),
        // not a link swapped in for the file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                rustix::fs::OFlags::NOFOLLOW.bits() as i32
                    | rustix::fs::OFlags::NONBLOCK.bits() as i32,
            )
            .open(&self.path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let stamp = Stamp::of(&meta);
        let file = Arc::new(file);
        let opened = Opened {
            file: file.clone(),
            len: stamp.len,
            etag: stamp.etag(),
            verified: None,
        };
        match kept.as_mut() {
            Some(k) => *k = (file, stamp),
            None => {
                let n = KEPT_STATIC.fetch_add(1, Ordering::Relaxed);
                if n < MAX_KEPT_STATIC {
                    *kept = Some((file, stamp));
                } else {
                    KEPT_STATIC.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Ok(opened)
    }
}

impl Drop for StaticFile {
    fn drop(&mut self) {
        if self.kept.get_mut().map(|k| k.is_some()).unwrap_or(false) {
            KEPT_STATIC.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What a served path holds.
#[derive(Debug, Clone)]
pub enum Body {
    /// Generated bytes (configs, scripts, module tables).
    Memory(Bytes),
    /// A verified cache blob.
    Verified(Arc<VerifiedFile>),
    /// A static-root file.
    Static(Arc<StaticFile>),
}

/// Why a path's body cannot be served right now.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// A verified blob changed on disk; it is being verified again.
    #[error("changed on disk; being verified again")]
    Changed,
    /// The static file could not be opened.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A body opened for one request.
#[derive(Debug, Clone)]
pub enum Served {
    /// Bytes in memory.
    Memory(Bytes),
    /// A file.
    File(Opened),
}

impl Body {
    /// Open for one request.
    pub fn open(&self) -> Result<Served, Unavailable> {
        match self {
            Body::Memory(b) => Ok(Served::Memory(b.clone())),
            Body::Verified(v) => v.open().map(Served::File).ok_or(Unavailable::Changed),
            Body::Static(s) => Ok(Served::File(s.open()?)),
        }
    }

    /// The whole content, read now (blocking; tests and tools: the servers
    /// never load a file whole).
    pub fn read_all(&self) -> Result<Bytes, Unavailable> {
        match self.open()? {
            Served::Memory(b) => Ok(b),
            Served::File(f) => {
                let len = usize::try_from(f.len()).map_err(std::io::Error::other)?;
                Ok(f.read_at(0, len)?)
            }
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Memory(b)
    }
}

impl Served {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Served::Memory(b) => b.len() as u64,
            Served::File(f) => f.len,
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As TFTP reads it.
    pub fn into_content(self) -> Content {
        match self {
            Served::Memory(b) => Content::from(b),
            Served::File(f) => Content::reader(Arc::new(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn verified(dir: &std::path::Path, data: &[u8]) -> (Arc<VerifiedFile>, Arc<Recheck>, PathBuf) {
        let digest = Blake3Digest::of(data);
        let path = dir.join(digest.to_string());
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        let stamp = Stamp::of(&file.metadata().unwrap());
        let recheck = Arc::new(Recheck::default());
        let v = VerifiedFile::new(digest, path.clone(), file, stamp, recheck.clone());
        (Arc::new(v), recheck, path)
    }

    #[test]
    fn a_verified_file_is_read_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (v, recheck, _) = verified(dir.path(), &data);
        let opened = v.open().unwrap();
        assert_eq!(opened.len(), 10_000);
        assert_eq!(opened.etag(), Blake3Digest::of(&data).to_string());
        let c = Served::File(opened).into_content();
        assert_eq!(&c.read(9_000, 2_000).unwrap()[..], &data[9_000..]);
        assert!(recheck.take().is_empty());
    }

    #[test]
    fn a_verified_file_changed_in_place_is_not_served_and_is_rechecked() {
        let dir = tempfile::tempdir().unwrap();
        let (v, recheck, path) = verified(dir.path(), b"kernel bytes");
        let opened = v.open().unwrap();
        // A bit flip written behind the agent's back (the same size).
        std::thread::sleep(std::time::Duration::from_millis(10));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"K", 0).unwrap();
        drop(f);
        assert!(v.open().is_none());
        assert!(!opened.intact(), "a body in progress sees it too");
        assert_eq!(recheck.take(), vec![v.digest()]);
    }

    #[test]
    fn a_verified_file_replaced_at_its_path_is_rechecked() {
        let dir = tempfile::tempdir().unwrap();
        let (v, recheck, path) = verified(dir.path(), b"initrd bytes");
        let other = dir.path().join("other");
        std::fs::write(&other, b"initrd bytes").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(v.open().is_none());
        assert_eq!(recheck.take(), vec![v.digest()]);
    }

    #[test]
    fn a_static_file_is_served_as_it_is_now_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipxe.efi");
        std::fs::write(&path, b"first").unwrap();
        let s = StaticFile::new(path.clone());
        let a = s.open().unwrap();
        assert_eq!(a.len(), 5);
        // Same file: the kept descriptor.
        assert!(Arc::ptr_eq(&a.file, &s.open().unwrap().file));
        std::fs::write(&path, b"second!").unwrap();
        let b = s.open().unwrap();
        assert_eq!(b.len(), 7);
        assert_eq!(
            &Served::File(b).into_content().read(0, 7).unwrap()[..],
            b"second!"
        );
        // A link swapped in for the file is refused.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert!(s.open().is_err());
    }
}
