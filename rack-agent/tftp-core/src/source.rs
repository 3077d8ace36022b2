//! Where file content comes from.

use std::net::SocketAddr;

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
}

/// Where file content comes from: the agent's verified in-memory blob
/// cache. Must not block. Any `Fn(&SafePath, SocketAddr) -> Result<Bytes,
/// OpenError>` closure is a `FileSource`.
pub trait FileSource {
    /// Returns the whole content of `path` as seen by `client`.
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Bytes, OpenError>;
}

impl<F> FileSource for F
where
    F: Fn(&SafePath, SocketAddr) -> Result<Bytes, OpenError>,
{
    fn open(&self, path: &SafePath, client: SocketAddr) -> Result<Bytes, OpenError> {
        self(path, client)
    }
}
