//! The on-disk spool of node log lines the coordinator has not acknowledged
//! yet: while it is away, lines beyond what memory holds go to disk in
//! segments of one batch each (`<seq>-<lines>.batch`, a protobuf
//! `LogBatch`), oldest shipped first, each deleted once acknowledged. The
//! spool is bounded in bytes: when full, the oldest segment is dropped and
//! its lines counted. Segments survive an agent restart; a segment that
//! cannot be read back is moved aside and counted as dropped.

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous storage: callers on a runtime use spawn_blocking"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use rackboot_proto::v1 as pb;

use rackboot_agent_domain::syslog::TaggedLine;

/// Default bound of the spool, in bytes.
pub const DEFAULT_SPOOL_BYTES: u64 = 256 << 20;

/// A spool failure (the caller logs it and keeps the lines in memory).
#[derive(Debug, thiserror::Error)]
#[error("log spool {path}: {source}")]
pub struct SpoolError {
    path: String,
    #[source]
    source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.display().to_string(),
        source,
    }
}

/// The spool directory and its index.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// seq → (lines, bytes).
    segments: BTreeMap<u64, (u64, u64)>,
    bytes: u64,
    next_seq: u64,
    /// Lines dropped (spool full, unreadable segment) not yet reported.
    pub dropped: u64,
}

fn segment_name(seq: u64, lines: u64) -> String {
    format!("{seq:012}-{lines}.batch")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".batch")?;
    let (seq, lines) = stem.split_once('-')?;
    Some((seq.parse().ok()?, lines.parse().ok()?))
}

impl Spool {
    /// Open (create) the spool at `dir`, indexing what an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let mut segments = BTreeMap::new();
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir).map_err(err(dir))? {
            let entry = entry.map_err(err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match parse_name(&name) {
                Some((seq, lines)) => {
                    let size = entry.metadata().map_err(err(&entry.path()))?.len();
                    segments.insert(seq, (lines, size));
                    bytes += size;
                }
                // Temporary files of an interrupted write: never acknowledged
                // as spooled, their lines were still in memory then.
                None if name.ends_with(".tmp") => {
                    let _ = std::fs::remove_file(entry.path());
                }
                None => {}
            }
        }
        let next_seq = segments.keys().next_back().map_or(0, |s| s + 1);
        if !segments.is_empty() {
            tracing::info!(
                segments = segments.len(),
                bytes,
                "log spool: lines from an earlier run will be shipped"
            );
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segments,
            bytes,
            next_seq,
            dropped: 0,
        })
    }

    /// Lines on disk.
    pub fn lines(&self) -> u64 {
        self.segments.values().map(|(l, _)| l).sum()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when nothing is spooled.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Write `lines` as the newest segment (durably: write, fsync, rename),
    /// dropping the oldest segments while over the bound.
    pub fn push(&mut self, lines: &[TaggedLine]) -> Result<(), SpoolError> {
        if lines.is_empty() {
            return Ok(());
        }
        let batch = pb::LogBatch {
            lines: lines.iter().map(to_pb).collect(),
            ..Default::default()
        };
        let data = batch.encode_to_vec();
        let seq = self.next_seq;
        let n = lines.len() as u64;
        let path = self.dir.join(segment_name(seq, n));
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
            f.write_all(&data).map_err(err(&tmp))?;
            f.sync_data().map_err(err(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(err(&path))?;
        self.next_seq += 1;
        self.segments.insert(seq, (n, data.len() as u64));
        self.bytes += data.len() as u64;
        while self.bytes > self.max_bytes && self.segments.len() > 1 {
            if let Some((lines, _)) = self.remove_oldest_entry() {
                self.dropped += lines;
            }
        }
        Ok(())
    }

    fn remove_oldest_entry(&mut self) -> Option<(u64, u64)> {
        let (&seq, &(lines, size)) = self.segments.iter().next()?;
        let path = self.dir.join(segment_name(seq, lines));
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "log spool: cannot remove segment");
        }
        self.segments.remove(&seq);
        self.bytes = self.bytes.saturating_sub(size);
        Some((lines, size))
    }

    /// The oldest segment's lines. An unreadable segment is moved aside
    /// (`.bad`), counted as dropped, and the next one is tried.
    pub fn oldest(&mut self) -> Option<Vec<TaggedLine>> {
        loop {
            let (&seq, &(lines, size)) = self.segments.iter().next()?;
            let path = self.dir.join(segment_name(seq, lines));
            let decoded = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| pb::LogBatch::decode(b.as_slice()).map_err(|e| e.to_string()));
            match decoded {
                Ok(batch) => return Some(batch.lines.into_iter().map(from_pb).collect()),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "log spool: unreadable segment set aside");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                    self.segments.remove(&seq);
                    self.bytes = self.bytes.saturating_sub(size);
                    self.dropped += lines;
                }
            }
        }
    }

    /// The oldest segment was acknowledged: delete it.
    pub fn ack_oldest(&mut self) {
        self.remove_oldest_entry();
    }
}

/// A line as shipped.
pub fn to_pb(l: &TaggedLine) -> pb::LogLine {
    pb::LogLine {
        node: l.node,
        boot_session: l.boot_session.clone(),
        unix_millis: l.unix_millis,
        text: l.text.clone(),
    }
}

fn from_pb(l: pb::LogLine) -> TaggedLine {
    TaggedLine {
        node: l.node,
        boot_session: l.boot_session,
        unix_millis: l.unix_millis,
        text: l.text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn line(i: u64) -> TaggedLine {
        TaggedLine {
            node: 1,
            boot_session: "1-1".into(),
            unix_millis: i,
            text: format!("line {i} {}", "x".repeat(100)),
        }
    }

    #[test]
    fn segments_ship_oldest_first_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_SPOOL_BYTES).unwrap();
        s.push(&(0..10).map(line).collect::<Vec<_>>()).unwrap();
        s.push(&(10..20).map(line).collect::<Vec<_>>()).unwrap();
        assert_eq!(s.lines(), 20);
        drop(s);
        let mut s = Spool::open(dir.path(), DEFAULT_SPOOL_BYTES).unwrap();
        assert_eq!(s.lines(), 20);
        let first = s.oldest().unwrap();
        assert_eq!(first.first().unwrap().unix_millis, 0);
        assert_eq!(first.len(), 10);
        s.ack_oldest();
        assert_eq!(s.oldest().unwrap()[0].unix_millis, 10);
        s.ack_oldest();
        assert!(s.oldest().is_none() && s.is_empty() && s.bytes() == 0);
        // New segments after a restart sort after the old ones.
        s.push(&[line(30)]).unwrap();
        let s2 = Spool::open(dir.path(), DEFAULT_SPOOL_BYTES).unwrap();
        assert_eq!(s2.lines(), 1);
        assert_eq!(s2.dropped, 0);
    }

    #[test]
    fn bounded_dropping_oldest_and_counting() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 4096).unwrap();
        for k in 0..20 {
            s.push(&(k * 10..k * 10 + 10).map(line).collect::<Vec<_>>())
                .unwrap();
        }
        assert!(s.bytes() <= 4096 || s.segments.len() == 1, "{}", s.bytes());
        assert_eq!(s.dropped + s.lines(), 200);
        assert!(s.dropped > 0);
        // What is left is the newest.
        let newest_kept = s.oldest().unwrap()[0].unix_millis;
        assert_eq!(newest_kept, s.dropped);
        let on_disk = std::fs::read_dir(dir.path()).unwrap().count() as usize;
        assert_eq!(on_disk, s.segments.len());
    }

    #[test]
    fn unreadable_segments_are_set_aside_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_SPOOL_BYTES).unwrap();
        s.push(&(0..5).map(line).collect::<Vec<_>>()).unwrap();
        s.push(&(5..8).map(line).collect::<Vec<_>>()).unwrap();
        std::fs::write(
            dir.path().join(segment_name(0, 5)),
            b"\xff\xff\xff not protobuf",
        )
        .unwrap();
        std::fs::write(dir.path().join("000000000009-1.tmp"), b"half").unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_SPOOL_BYTES).unwrap();
        assert!(!dir.path().join("000000000009-1.tmp").exists());
        let got = s.oldest().unwrap();
        assert_eq!(got[0].unix_millis, 5);
        assert_eq!(s.dropped, 5);
        assert!(
            dir.path()
                .join(segment_name(0, 5))
                .with_extension("bad")
                .exists()
        );
    }
}
