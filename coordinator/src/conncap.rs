//! A cap on the gRPC connections a replica holds open at once.
//!
//! Every agent holds one long-lived connection (its rack watch), every
//! replica a few, every CLI call one: a few hundred on a large site. A
//! client that opens connections without end (a bug, an attack) would
//! otherwise exhaust file descriptors and memory. Beyond
//! [`MAX_CONNECTIONS`] a new connection is closed at once and counted; the
//! ones open are a gauge (`rackboot_coordinator_grpc_connections`,
//! `…_connections_refused_total`). Each HTTP/2 connection is further capped
//! at [`MAX_STREAMS_PER_CONNECTION`] concurrent streams (the server's
//! SETTINGS).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Most connections open at once.
pub const MAX_CONNECTIONS: i64 = 4096;
/// Most concurrent HTTP/2 streams per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Open and refused connections.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicI64,
    refused: AtomicU64,
}

impl ConnStats {
    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because [`MAX_CONNECTIONS`] were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Admit an accepted connection, or drop it (closing it) when the cap is
    /// reached.
    pub fn admit(self: &Arc<Self>, stream: TcpStream, max: i64) -> Option<Capped> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(refused = n, max, "gRPC connection refused: too many open");
            }
            return None;
        }
        Some(Capped {
            inner: stream,
            stats: self.clone(),
        })
    }
}

/// An admitted connection; counted open until dropped.
#[derive(Debug)]
pub struct Capped {
    inner: TcpStream,
    stats: Arc<ConnStats>,
}

impl Drop for Capped {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ConnStats::default());
        let mut held = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (s, _) = listener.accept().await.unwrap();
            if let Some(c) = stats.admit(s, 2) {
                held.push(c);
            }
        }
        assert_eq!((stats.open(), stats.refused()), (2, 1));
        // The refused one was closed: its client reads end-of-stream.
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut clients[2], &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 0);
        held.pop();
        assert_eq!(stats.open(), 1);
    }
}
