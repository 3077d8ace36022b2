//! A cap on the gRPC connections a replica holds open at once.
//!
//! Every agent holds one long-lived connection (its rack watch), every
//! replica a few, every CLI call one: a few hundred on a large site. A
//! client that opens connections without end (a bug, an attack) would
//! otherwise exhaust file descriptors and memory. Beyond
//! [`MAX_CONNECTIONS`] a new connection is closed at once and counted; so is
//! one from an address that already holds [`MAX_PER_SOURCE`] (one flooding
//! host must not lock the agents and administrators out: the global cap
//! alone would). The ones open are a gauge
//! (`rackboot_coordinator_grpc_connections`), the refused a counter by
//! reason (`…_connections_refused_total{reason="max_open"|"per_source"}`).
//! Each HTTP/2 connection is further capped at
//! [`MAX_STREAMS_PER_CONNECTION`] concurrent streams (the server's
//! SETTINGS). A connection whose client sends nothing for
//! [`GREETING_TIMEOUT`] after connecting is closed and counted
//! (`reason="silent"`): otherwise one that opens and never speaks would
//! hold its slot until the client goes away. With TLS the whole handshake
//! must finish within [`TLS_HANDSHAKE_TIMEOUT`] (see `server::use_tls`).
//! A connection that stops answering HTTP/2 PINGs is closed after
//! [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Most connections open at once.
pub const MAX_CONNECTIONS: i64 = 4096;
/// Most connections open at once from one address (an agent holds one or
/// two, a replica a few, each CLI call one).
pub const MAX_PER_SOURCE: u32 = 256;
/// Most concurrent HTTP/2 streams per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// How long a new connection may stay silent before its client's first
/// bytes (the HTTP/2 preface or a TLS ClientHello, sent at once by every
/// real client).
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take from the connection's start (longer
/// than [`GREETING_TIMEOUT`], so that a silent client is counted as such).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// After this long without a frame from the client, the server sends an
/// HTTP/2 PING...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// ...and closes the connection when its ACK has not come within this: a
/// client that crashed, froze or was cut off (an agent's watch stream would
/// otherwise stay open until TCP gives up, minutes to hours later). Live
/// clients answer at once (their HTTP/2 stack does; agents and replicas
/// also ping the server themselves).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open and refused connections.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicI64,
    refused: AtomicU64,
    refused_per_source: AtomicU64,
    silent: AtomicU64,
    by_source: Mutex<HashMap<IpAddr, u32>>,
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

    /// Connections closed at once because their address held
    /// [`MAX_PER_SOURCE`] already.
    pub fn refused_per_source(&self) -> u64 {
        self.refused_per_source.load(Ordering::Relaxed)
    }

    /// Connections closed because their client sent nothing within the
    /// greeting deadline.
    pub fn silent(&self) -> u64 {
        self.silent.load(Ordering::Relaxed)
    }

    /// Refused connections by reason, for the metric.
    pub fn refusals(&self) -> [(&'static str, u64); 3] {
        [
            ("max_open", self.refused()),
            ("per_source", self.refused_per_source()),
            ("silent", self.silent()),
        ]
    }

    /// Admit an accepted connection, or drop it (closing it) when `max` are
    /// open or its address holds `max_per_source`. An admitted connection
    /// whose client sends nothing within `greeting` fails its next read
    /// (`TimedOut`), which closes it. Call within a tokio runtime.
    pub fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        max: i64,
        max_per_source: u32,
        greeting: Duration,
    ) -> Option<Capped> {
        let source = stream.peer_addr().ok().map(|a| a.ip());
        if let Some(ip) = source {
            let mut by_source = self
                .by_source
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = by_source.entry(ip).or_insert(0);
            if *held >= max_per_source {
                drop(by_source);
                let n = self.refused_per_source.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(refused = n, %ip, max_per_source, "gRPC connection refused: too many open from one address");
                }
                return None;
            }
            *held += 1;
        }
        let capped = Capped {
            inner: stream,
            source,
            stats: self.clone(),
            greeting: Some(Box::pin(tokio::time::sleep(greeting))),
        };
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(refused = n, max, "gRPC connection refused: too many open");
            }
            return None; // dropping `capped` undoes both counts
        }
        Some(capped)
    }

    fn release(&self, source: Option<IpAddr>) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = source {
            let mut by_source = self
                .by_source
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(held) = by_source.get_mut(&ip) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    by_source.remove(&ip);
                }
            }
        }
    }
}

/// An admitted connection; counted open until dropped.
#[derive(Debug)]
pub struct Capped {
    inner: TcpStream,
    source: Option<IpAddr>,
    stats: Arc<ConnStats>,
    /// Until the client's first bytes: when it must have spoken by.
    greeting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drop for Capped {
    fn drop(&mut self) {
        self.stats.release(self.source);
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
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = this.greeting.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.greeting = None,
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                this.greeting = None;
                let n = this.stats.silent.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(closed = n, source = ?this.source, "gRPC connection closed: the client sent nothing within {GREETING_TIMEOUT:?}");
                }
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client sent nothing within the greeting deadline",
                )));
            }
            _ => {}
        }
        read
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
            if let Some(c) = stats.admit(s, 2, 100, GREETING_TIMEOUT) {
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
        assert_eq!(stats.by_source.lock().unwrap().values().sum::<u32>(), 1);
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ConnStats::default());
        let mut held = Vec::new();
        let mut clients = Vec::new();
        // Four from 127.0.0.2 (cap 3 per address), then one from 127.0.0.1.
        for from in [
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.1",
        ] {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
            clients.push(sock.connect(addr).await.unwrap());
            let (s, _) = listener.accept().await.unwrap();
            if let Some(c) = stats.admit(s, 10, 3, GREETING_TIMEOUT) {
                held.push(c);
            }
        }
        assert_eq!(
            stats.open(),
            4,
            "3 from the flooding address, 1 from another"
        );
        assert_eq!((stats.refused(), stats.refused_per_source()), (0, 1));
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut clients[3], &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 0, "the fourth from 127.0.0.2 was closed");
        // Closing one frees a slot for that address again.
        held.remove(0);
        assert_eq!(stats.open(), 3);
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let _c = sock.connect(addr).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let last = stats.admit(s, 10, 3, GREETING_TIMEOUT);
        assert!(last.is_some());
        held.clear();
        assert_eq!(
            stats
                .by_source
                .lock()
                .unwrap()
                .get(&"127.0.0.2".parse().unwrap()),
            Some(&1),
            "only the last one is left"
        );
        drop(last);
        assert!(stats.by_source.lock().unwrap().is_empty());
        assert_eq!(stats.open(), 0);
    }
    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_greeting_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ConnStats::default());
        let greeting = Duration::from_millis(300);
        // One client that never speaks, one that speaks at once.
        let _silent_client = TcpStream::connect(addr).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let mut silent = stats.admit(s, 10, 10, greeting).unwrap();
        let mut talker_client = TcpStream::connect(addr).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let mut talker = stats.admit(s, 10, 10, greeting).unwrap();
        talker_client.write_all(b"PRI").await.unwrap();

        let mut buf = [0u8; 8];
        let t0 = std::time::Instant::now();
        let e = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() >= greeting, "not before the deadline");
        assert_eq!(stats.silent(), 1);

        // The one that spoke keeps reading past the deadline.
        let n = talker.read(&mut buf).await.unwrap();
        assert_eq!(buf.get(..n), Some(&b"PRI"[..]));
        tokio::time::sleep(greeting * 2).await;
        talker_client.write_all(b"*").await.unwrap();
        let n = talker.read(&mut buf).await.unwrap();
        assert_eq!(buf.get(..n), Some(&b"*"[..]));
        assert_eq!(stats.silent(), 1, "only the silent one was closed");
        drop(silent);
        drop(talker);
        assert_eq!(stats.open(), 0);
    }
}
