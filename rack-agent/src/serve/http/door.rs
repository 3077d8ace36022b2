//! The HTTP front door: who may hold a connection, and for how long.
//!
//! Every connection is accepted at once (none waits in the kernel backlog
//! behind idle ones) and then admitted or closed, counted by reason:
//! - `full`: `max_connections` are open;
//! - `full_for_others`: the source is not a node of the rack and the
//!   connections left are kept for nodes (`reserved_for_nodes`);
//! - `per_source`: the address already holds `max_per_source`.
//!
//! An admitted connection is closed when it makes no progress for
//! `idle_timeout` (`idle`), or when it outlives its budget (`deadline`):
//! `grace` plus one second per `min_rate` bytes sent, so a request must
//! arrive and a body be taken at least that fast — a client trickling its
//! headers or holding a download open without reading is cut, a real
//! download of any size is not.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rackboot_agent_domain::view::RackView;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::HttpStats;

/// The front door's limits (see [`super::HttpLimits`]).
#[derive(Debug, Clone)]
pub(super) struct DoorLimits {
    pub max_connections: usize,
    pub reserved_for_nodes: usize,
    pub max_per_source: usize,
    pub idle_timeout: Duration,
    pub grace: Duration,
    pub min_rate: u64,
}

/// Open connections: in all, and per source address (an entry per address
/// holding one; bounded by `max_connections`).
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection is not admitted.
fn refusal(open: &Open, limits: &DoorLimits, ip: IpAddr, node: bool) -> Option<&'static str> {
    if open.total >= limits.max_connections {
        return Some("full");
    }
    if !node && open.total >= limits.max_connections - limits.reserved_for_nodes {
        return Some("full_for_others");
    }
    if open.by_source.get(&ip).copied().unwrap_or(0) >= limits.max_per_source {
        return Some("per_source");
    }
    None
}

/// The boot port's listener: admits connections, or closes them counted.
pub(super) struct Door {
    inner: TcpListener,
    limits: DoorLimits,
    view: watch::Receiver<Arc<RackView>>,
    open: Arc<Mutex<Open>>,
    stats: Arc<HttpStats>,
}

impl Door {
    pub(super) fn new(
        inner: TcpListener,
        limits: DoorLimits,
        view: watch::Receiver<Arc<RackView>>,
        stats: Arc<HttpStats>,
    ) -> Door {
        Door {
            inner,
            limits,
            view,
            open: Arc::default(),
            stats,
        }
    }

    fn admit(&self, stream: TcpStream, addr: SocketAddr) -> Option<Conn> {
        let ip = addr.ip();
        let node = match ip {
            IpAddr::V4(v4) => self.view.borrow().node_by_addr(v4).is_some(),
            IpAddr::V6(_) => false,
        };
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = refusal(&open, &self.limits, ip, node) {
                drop(open);
                self.stats.count_closed(reason);
                tracing::debug!(%addr, reason, "http connection refused");
                return None;
            }
            open.total += 1;
            *open.by_source.entry(ip).or_default() += 1;
        }
        let _ = stream.set_nodelay(true);
        self.stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        Some(Conn {
            stream,
            held: Held {
                ip,
                open: self.open.clone(),
                stats: self.stats.clone(),
            },
            start: now,
            last_progress: now,
            sent: 0,
            idle: self.limits.idle_timeout,
            grace: self.limits.grace,
            min_rate: self.limits.min_rate,
            timer: Box::pin(tokio::time::sleep_until(
                now + self.limits.idle_timeout.min(self.limits.grace),
            )),
        })
    }
}

impl Door {
    /// The next admitted connection.
    pub(super) async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if let Some(conn) = self.admit(stream, addr) {
                        return (conn, addr);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A connection's place in the door's count, given back when it closes.
struct Held {
    ip: IpAddr,
    open: Arc<Mutex<Open>>,
    stats: Arc<HttpStats>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_source.remove(&self.ip);
            }
        }
        self.stats
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An admitted connection, closed when idle or past its budget.
pub struct Conn {
    stream: TcpStream,
    held: Held,
    start: Instant,
    last_progress: Instant,
    sent: u64,
    idle: Duration,
    grace: Duration,
    min_rate: u64,
    timer: Pin<Box<Sleep>>,
}

impl Conn {
    /// When the connection must close: the earlier of its idle deadline and
    /// its budget, and why.
    fn deadline(&self) -> (Instant, &'static str) {
        let idle = self.last_progress + self.idle;
        let budget = self.start
            + self.grace
            + Duration::from_secs_f64(self.sent as f64 / self.min_rate as f64);
        if idle <= budget {
            (idle, "idle")
        } else {
            (budget, "deadline")
        }
    }

    /// Excuse `waited` from the idle timer and the budget: the server kept
    /// the client waiting, not the other way round.
    pub(super) fn excuse(&mut self, waited: Duration) {
        self.start += waited;
        self.last_progress += waited;
    }

    /// Count what a write sent; with it pending, check the deadline.
    fn after_write(
        &mut self,
        r: Poll<std::io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                self.sent += n as u64;
                self.last_progress = Instant::now();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_expired(cx).map(Err),
        }
    }

    /// Send up to `len` bytes of `file` from `*offset` with `sendfile(2)`
    /// (the bytes go from the page cache to the socket, never through user
    /// space), advancing `*offset`; counts them like a write and honours the
    /// deadline while the socket is full.
    pub(super) async fn send_file(
        &mut self,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        len: usize,
    ) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_send_file(cx, file, offset, len)).await
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: BorrowedFd<'_>,
        offset: &mut u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            match self.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.poll_expired(cx).map(Err),
            }
            let stream = &self.stream;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                let mut at = *offset;
                rustix::fs::sendfile(stream, file, Some(&mut at), len).map_err(std::io::Error::from)
            });
            match sent {
                Ok(n) => {
                    *offset += n as u64;
                    self.sent += n as u64;
                    self.last_progress = Instant::now();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// With the I/O pending: `Ready(error)` once the deadline has passed,
    /// else arm the timer for it.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            let (at, reason) = self.deadline();
            if Instant::now() >= at {
                self.held.stats.count_closed(reason);
                return Poll::Ready(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("http connection closed: {reason}"),
                ));
            }
            if self.timer.deadline() != at {
                self.timer.as_mut().reset(at);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after_write(r, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after_write(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DoorLimits {
        DoorLimits {
            max_connections: 10,
            reserved_for_nodes: 4,
            max_per_source: 3,
            idle_timeout: Duration::from_secs(20),
            grace: Duration::from_secs(10),
            min_rate: 1,
        }
    }

    #[test]
    fn admission_keeps_room_for_nodes_and_caps_each_source() {
        let l = limits();
        let a: IpAddr = "10.0.0.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut open = Open::default();
        for i in 0..3 {
            assert_eq!(refusal(&open, &l, a, false), None, "connection {i}");
            open.total += 1;
            *open.by_source.entry(a).or_default() += 1;
        }
        assert_eq!(refusal(&open, &l, a, false), Some("per_source"));
        // Six open in all: strangers are refused, nodes still get in.
        open.total = 6;
        let b: IpAddr = "10.0.0.8".parse().unwrap_or(a);
        assert_eq!(refusal(&open, &l, b, false), Some("full_for_others"));
        assert_eq!(refusal(&open, &l, b, true), None);
        open.total = 10;
        assert_eq!(refusal(&open, &l, b, true), Some("full"));
    }

    /// A door on loopback with `limits`, and one client connected through it.
    async fn one_connection(limits: DoorLimits) -> (Conn, TcpStream, Arc<HttpStats>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (_tx, view) = watch::channel(Arc::new(RackView::default()));
        let stats = Arc::new(HttpStats::default());
        let mut door = Door::new(listener, limits, view, stats.clone());
        let client = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (conn, _) = door.accept().await;
        (conn, client, stats)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_at_its_deadline() {
        use tokio::io::AsyncReadExt;
        let (mut conn, _client, stats) = one_connection(limits()).await;
        let t0 = Instant::now();
        let mut buf = [0u8; 16];
        let err = conn.read(&mut buf).await.err().map(|e| e.kind());
        assert_eq!(err, Some(std::io::ErrorKind::TimedOut));
        // The budget (10 s) ends before the idle timeout (20 s).
        assert_eq!(t0.elapsed().as_secs(), 10);
        assert_eq!(stats.closed(), vec![("deadline", 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_client_is_cut_and_an_idle_one_too() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Trickling a byte every 4 s keeps it from being idle, not alive.
        let (mut conn, mut client, stats) = one_connection(limits()).await;
        let t0 = Instant::now();
        let trickle = tokio::spawn(async move {
            for _ in 0..10 {
                if client.write_all(b"G").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
        });
        let mut buf = [0u8; 16];
        let mut got = 0;
        let err = loop {
            match conn.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e.kind(),
            }
        };
        assert_eq!(err, std::io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed().as_secs(), 10);
        assert!(got >= 2, "{got} bytes arrived");
        assert_eq!(stats.closed(), vec![("deadline", 1)]);
        trickle.abort();

        // With a long budget, silence ends at the idle timeout.
        let l = DoorLimits {
            grace: Duration::from_secs(3600),
            ..limits()
        };
        let (mut conn, _client, stats) = one_connection(l).await;
        let t0 = Instant::now();
        assert!(conn.read(&mut buf).await.is_err());
        assert_eq!(t0.elapsed().as_secs(), 20);
        assert_eq!(stats.closed(), vec![("idle", 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn sending_extends_the_budget_by_its_size() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // 1 byte/s: each byte sent buys a second.
        let (mut conn, mut client, _stats) = one_connection(limits()).await;
        let t0 = Instant::now();
        conn.write_all(&[0u8; 30])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sink = [0u8; 64];
        let _ = client.read(&mut sink).await;
        let mut buf = [0u8; 16];
        assert!(conn.read(&mut buf).await.is_err());
        // Budget 10 s + 30 s; idle (20 s after the write) comes first.
        assert_eq!(t0.elapsed().as_secs(), 20);
    }
}
