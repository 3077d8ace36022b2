//! Where file content comes from.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::path::SafePath;

/// Why a [`FileSource`] could not open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No such file (TFTP error 1).
    #[error("file not found")]
    NotFound,
    /// The file exists but this client may not read it (TFTP error 2).
    #[error("access denied")]
    AccessDenied,
    /// The file will be served shortly (it is being fetched or verified):
    /// the request is left unanswered, so the client's retransmission asks
    /// again, instead of failing its boot on an ERROR.
    #[error("not ready yet")]
    NotReady,
}

/// Content read at an offset: a verified cache file or a static-root file
/// the caller opened. Reads must not block for long: the caller keeps what
/// it hands out resident (a file it just verified or just opened, whose
/// pages the kernel reads ahead), and the core reads one block at a time.
pub trait ReadAt: Send + Sync + fmt::Debug {
    /// Length in bytes, fixed when the content was opened.
    fn len(&self) -> u64;

    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exactly `len` bytes from `offset` (the caller never asks past
    /// [`ReadAt::len`]). An error (the file shrank, an I/O error) aborts
    /// the transfer.
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes>;
}

/// A file's content as a transfer reads it: bytes in memory (generated
/// configs, small files; each block is a zero-copy slice) or a [`ReadAt`]
/// (files on disk, read block by block, never whole).
#[derive(Clone, Debug)]
pub struct Content(Inner);

#[derive(Clone, Debug)]
enum Inner {
    Memory(Bytes),
    Reader(Arc<dyn ReadAt>),
}

impl Content {
    /// Content read through `reader`.
    pub fn reader(reader: Arc<dyn ReadAt>) -> Self {
        Content(Inner::Reader(reader))
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match &self.0 {
            Inner::Memory(b) => b.len() as u64,
            Inner::Reader(r) => r.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the bytes are in memory (reads are free slices).
    pub fn in_memory(&self) -> bool {
        matches!(self.0, Inner::Memory(_))
    }

    /// `len` bytes from `offset`, clamped to the content.
    pub fn read(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let size = self.len();
        let start = offset.min(size);
        let len = usize::try_from((size - start).min(len as u64)).unwrap_or(0);
        match &self.0 {
            Inner::Memory(b) => {
                let start = usize::try_from(start).unwrap_or(b.len());
                Ok(b.slice(start..start.saturating_add(len).min(b.len())))
            }
            Inner::Reader(_) if len == 0 => Ok(Bytes::new()),
            Inner::Reader(r) => {
                let data = r.read_at(start, len)?;
                if data.len() != len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("read {} of {len} bytes at offset {start}", data.len()),
                    ));
                }
                Ok(data)
            }
        }
    }

    /// The whole content in memory, if it is at most `max` bytes.
    pub fn read_all(&self, max: u64) -> std::io::Result<Bytes> {
        if self.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("{} bytes (at most {max} here)", self.len()),
            ));
        }
        self.read(0, usize::try_from(self.len()).unwrap_or(usize::MAX))
    }
}

impl From<Bytes> for Content {
    fn from(b: Bytes) -> Self {
        Content(Inner::Memory(b))
    }
}

impl From<Vec<u8>> for Content {
    fn from(b: Vec<u8>) -> Self {
        Content(Inner::Memory(Bytes::from(b)))
    }
}

impl From<&'static [u8]> for Content {
    fn from(b: &'static [u8]) -> Self {
        Content(Inner::Memory(Bytes::from_static(b)))
    }
}

/// Where file content comes from: the agent's verified blob cache, its
/// generated files and its static root. Must not block. Any
/// `Fn(&SafePath, SocketAddr) -> Result<C, OpenError>` closure whose `C`
/// converts into [`Content`] (`Bytes`, `Vec<u8>`) is a `FileSource`.
pub trait FileSource {
    /// Opens `path` as seen by `client`.
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError>;
}

impl<F, C> FileSource for F
where
    F: Fn(&SafePath, SocketAddr) -> Result<C, OpenError>,
    C: Into<Content>,
{
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Content, OpenError> {
        self(path, client).map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug)]
    struct Short;

    impl ReadAt for Short {
        fn len(&self) -> u64 {
            10
        }
        fn read_at(&self, _offset: u64, len: usize) -> std::io::Result<Bytes> {
            Ok(Bytes::from(vec![7; len / 2]))
        }
    }

    #[test]
    fn memory_reads_are_clamped_slices() {
        let c = Content::from(Bytes::from_static(b"0123456789"));
        assert_eq!(c.read(8, 5).unwrap(), Bytes::from_static(b"89"));
        assert_eq!(c.read(20, 5).unwrap(), Bytes::new());
        assert_eq!(c.read_all(10).unwrap().len(), 10);
        assert!(c.read_all(9).is_err());
    }

    #[test]
    fn a_short_read_is_an_error_never_a_short_block() {
        let c = Content::reader(Arc::new(Short));
        let e = c.read(0, 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(c.read(10, 4).unwrap(), Bytes::new());
    }
}
