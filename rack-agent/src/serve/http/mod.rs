//! HTTP boot on the agent: verified blobs and static-root files sent from
//! disk with `sendfile(2)` (memory does not grow with files), generated
//! boot files from memory, with `Content-Length`, single range requests
//! (64-bit offsets) and an `ETag` (a blob's blake3; a digest of generated
//! bytes; a stamp of a static file); `/boot-info` for the caller's own node
//! only. No redirects on boot paths (some UEFI HTTP clients cannot follow
//! them). Connections are bounded and cut when idle or too slow, so slow
//! clients cannot exhaust the server. The boot port's connections are
//! served by the `boot` module.
//!
//! The operator listener ([`run_operator`], `--metrics-listen`) is a
//! separate port, kept off the rack network: `/metrics` (Prometheus) and
//! `/boot-info?mac=` about any node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rackboot_dhcp_core::Mac;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::files::FileTable;
use door::Door;

mod boot;
mod door;
use rackboot_agent_domain::view::RackView;

use crate::timeline::TimelineHandle;

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Open connections at most; further ones are closed at once, counted.
    pub max_connections: usize,
    /// Of those, kept for the rack's nodes (sources the view knows): other
    /// hosts together hold at most `max_connections - reserved_for_nodes`.
    pub reserved_for_nodes: usize,
    /// Open connections one address may hold.
    pub max_per_source: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Every connection's lifetime budget: this much, plus one second per
    /// `min_rate` bytes it has sent (a request must arrive, and a body be
    /// taken, at least that fast).
    pub grace: Duration,
    /// See `grace` (bytes per second).
    pub min_rate: u64,
    /// Operator listener: longest a request may take.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            reserved_for_nodes: 256,
            max_per_source: 64,
            idle_timeout: Duration::from_secs(20),
            grace: Duration::from_secs(10),
            min_rate: 64 << 10,
            request_timeout: Duration::from_secs(300),
        }
    }
}

impl HttpLimits {
    fn door(&self) -> door::DoorLimits {
        door::DoorLimits {
            max_connections: self.max_connections.max(1),
            reserved_for_nodes: self.reserved_for_nodes.min(self.max_connections),
            max_per_source: self.max_per_source.max(1),
            idle_timeout: self.idle_timeout,
            grace: self.grace,
            min_rate: self.min_rate.max(1),
        }
    }
}

/// Counters of the HTTP server (for metrics).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Body bytes of the responses (their Content-Length; HEAD answers
    /// count none).
    pub response_bytes: AtomicU64,
    /// Requests answered, by status code.
    pub requests: Mutex<BTreeMap<u16, u64>>,
    /// Connections closed by the front door, by reason (`full`,
    /// `full_for_others`, `per_source`, `idle`, `deadline`).
    pub closed: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests that waited for a blob being fetched or verified.
    pub not_ready_waits: AtomicU64,
}

impl HttpStats {
    /// Count a connection closed by the front door.
    pub fn count_closed(&self, reason: &'static str) {
        *self
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Connections closed by the front door so far, by reason.
    pub fn closed(&self) -> Vec<(&'static str, u64)> {
        let c = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        c.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Requests answered so far, by status code.
    pub fn requests(&self) -> Vec<(u16, u64)> {
        let r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

#[derive(Clone)]
struct Ctx {
    files: watch::Receiver<Arc<FileTable>>,
    view: watch::Receiver<Arc<RackView>>,
    sessions: Option<TimelineHandle>,
    metrics: Option<Exposition>,
    /// Boot port: `/boot-info` only about the caller's own node.
    scoped: bool,
    /// Boot port: its counters.
    stats: Option<Arc<HttpStats>>,
}

/// The agent's metrics as `/metrics` serves them (every component
/// registered by the process that owns them).
pub type Exposition = Arc<rackboot_metrics::Exposition>;

/// Run the HTTP boot server on `listener` until `shutdown`, counting its
/// requests in `stats`. At shutdown it stops accepting, closes idle
/// connections, and returns once the responses in progress are sent.
pub async fn run(
    listener: TcpListener,
    files: watch::Receiver<Arc<FileTable>>,
    view: watch::Receiver<Arc<RackView>>,
    sessions: Option<TimelineHandle>,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    shutdown: CancellationToken,
) {
    let ctx = Ctx {
        files,
        view: view.clone(),
        sessions,
        metrics: None,
        scoped: true,
        stats: Some(stats.clone()),
    };
    let mut door = Door::new(listener, limits.door(), view, stats);
    let tracker = TaskTracker::new();
    loop {
        let (conn, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            c = door.accept() => c,
        };
        tracker.spawn(boot::connection(conn, peer, ctx.clone(), shutdown.clone()));
    }
    drop(door);
    tracker.close();
    tracker.wait().await;
}

/// Run the operator listener on `listener` until `shutdown`: `/metrics`
/// (the agent's Prometheus exposition) and `/boot-info[.env]?mac=` about
/// any node. Plain HTTP: bind it to the management network or loopback.
pub async fn run_operator(
    listener: TcpListener,
    files: watch::Receiver<Arc<FileTable>>,
    view: watch::Receiver<Arc<RackView>>,
    metrics: Exposition,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/boot-info", get(boot_info))
        .route("/boot-info.env", get(boot_info_env))
        .with_state(Ctx {
            files,
            view,
            sessions: None,
            metrics: Some(metrics),
            scoped: false,
            stats: None,
        })
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operator listener (GET /metrics, /boot-info?mac=)");
    }
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "operator listener stopped");
    }
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text exposition.
async fn metrics_page(State(ctx): State<Ctx>) -> Response {
    let Some(m) = &ctx.metrics else {
        return text(404, "no metrics\n").into_response();
    };
    rackboot_metrics::scrape(m.clone()).await
}

#[derive(Deserialize)]
struct InfoQuery {
    mac: Option<String>,
    format: Option<String>,
}

/// A short generated answer (boot-info, errors).
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response()
    }
}

fn text(status: u16, msg: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: msg.into(),
    }
}

/// Boot-info of the node `mac` names, or of the caller's address. On the
/// boot port (`ctx.scoped`) a node may ask only about itself: a MAC of
/// another node is refused (403) without saying whether it exists.
fn boot_info_reply(
    ctx: &Ctx,
    peer: IpAddr,
    mac: Option<String>,
    format: Option<String>,
    env: bool,
) -> Reply {
    let view = ctx.view.borrow().clone();
    let caller = match peer {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    let node = match &mac {
        Some(m) => match m.parse::<Mac>() {
            Ok(mac) => {
                let node = view.node_by_mac(&mac);
                if ctx.scoped && (node.is_none() || node.map(|n| n.addr) != caller) {
                    return text(
                        403,
                        "boot-info is answered only about the asking node; operators ask the agent's operator listener (--metrics-listen)\n",
                    );
                }
                node
            }
            Err(e) => return text(400, format!("mac: {e}\n")),
        },
        None if !ctx.scoped => {
            return text(400, "give ?mac=MAC\n");
        }
        None => caller.and_then(|ip| view.node_by_addr(ip)),
    };
    let Some(node) = node else {
        let who = mac.clone().unwrap_or_else(|| peer.to_string());
        return text(404, format!("no node known for {who}\n"));
    };
    let env = env || format.as_deref() == Some("env");
    let table = ctx.files.borrow().clone();
    match table.boot_info(node.number) {
        Some(info) if env => Reply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: info.to_env(),
        },
        Some(info) => Reply {
            status: 200,
            content_type: "application/json",
            body: info.to_json(),
        },
        None => text(404, "boot info not ready\n"),
    }
}

async fn boot_info(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<InfoQuery>,
) -> Reply {
    boot_info_reply(&ctx, peer.ip(), q.mac, q.format, false)
}

async fn boot_info_env(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<InfoQuery>,
) -> Reply {
    boot_info_reply(&ctx, peer.ip(), q.mac, q.format, true)
}

impl rackboot_metrics::Component for HttpStats {
    fn encode(&self, e: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use rackboot_metrics::{counter, counters, gauge};
        use std::sync::atomic::Ordering::Relaxed;

        let h = self;
        let requests: Vec<(String, u64)> = h
            .requests()
            .into_iter()
            .map(|(code, n)| (code.to_string(), n))
            .collect();
        counters(
            e,
            "rackboot_agent_http_requests",
            "HTTP requests answered, by status code",
            "code",
            &requests,
        )?;
        counter(
            e,
            "rackboot_agent_http_response_bytes",
            "HTTP response body bytes (Content-Length; HEAD answers count none)",
            h.response_bytes.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_http_not_ready_waits",
            "HTTP requests that waited for a blob of the rack being fetched or verified (answered when it was served, or 503)",
            h.not_ready_waits.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_http_connections",
            "HTTP connections accepted",
            h.connections.load(Relaxed),
        )?;
        counters(
            e,
            "rackboot_agent_http_connections_closed",
            "HTTP connections closed by the front door, by reason: full, full_for_others (room kept for the rack's nodes), per_source, idle, deadline",
            "reason",
            &h.closed(),
        )?;
        gauge(
            e,
            "rackboot_agent_http_active_connections",
            "HTTP connections open",
            h.active.load(Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A boot port on loopback serving `table` and `view`; its senders,
    /// counters and task are kept for the test.
    struct BootPort {
        addr: SocketAddr,
        stop: CancellationToken,
        files: watch::Sender<Arc<FileTable>>,
        _view: watch::Sender<Arc<RackView>>,
        stats: Arc<HttpStats>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn boot_port(table: FileTable, view: Arc<RackView>) -> BootPort {
        let (files, frx) = watch::channel(Arc::new(table));
        let (view, vrx) = watch::channel(view);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stats = Arc::new(HttpStats::default());
        let task = tokio::spawn(run(
            l,
            frx,
            vrx,
            None,
            HttpLimits::default(),
            stats.clone(),
            stop.clone(),
        ));
        BootPort {
            addr,
            stop,
            files,
            _view: view,
            stats,
            task,
        }
    }

    async fn serve(files: HashMap<String, bytes::Bytes>) -> (SocketAddr, CancellationToken) {
        let port = boot_port(FileTable::from_map(files), Arc::default()).await;
        let out = (port.addr, port.stop.clone());
        // Keep the senders alive for the test's duration.
        std::mem::forget(port);
        out
    }

    async fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let status = head[9..12].parse().unwrap();
        (status, head.to_lowercase(), buf[split + 4..].to_vec())
    }

    /// A blob of the view not served yet is waited for: answered once a
    /// new table serves it, or 503 after `NOT_READY_WAIT`; a path that is
    /// not pending is 404 at once.
    #[tokio::test(start_paused = true)]
    async fn a_pending_blob_is_waited_for_then_served_or_503() {
        let table =
            FileTable::from_map(HashMap::new()).with_pending(&["blobs/soon", "blobs/never"]);
        let port = boot_port(table, Arc::default()).await;
        let (addr, stop, ftx, stats) = (port.addr, &port.stop, &port.files, &port.stats);
        let (st, _, _) = get(addr, "/blobs/other", "").await;
        assert_eq!(st, 404, "not pending: not found at once");

        let soon = tokio::spawn(async move { get(addr, "/blobs/soon", "").await });
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert!(!soon.is_finished(), "waits while pending");
        let served = FileTable::from_map(HashMap::from([(
            "blobs/soon".to_string(),
            bytes::Bytes::from_static(b"verified bytes"),
        )]))
        .with_pending(&["blobs/never"]);
        ftx.send_replace(Arc::new(served));
        let (st, _, body) = soon.await.unwrap();
        assert_eq!((st, &body[..]), (200, &b"verified bytes"[..]));

        let started = tokio::time::Instant::now();
        let (st, _, body) = get(addr, "/blobs/never", "").await;
        assert_eq!(st, 503);
        assert!(String::from_utf8_lossy(&body).contains("not ready yet"));
        assert!(started.elapsed() >= boot::NOT_READY_WAIT);
        assert_eq!(
            stats
                .not_ready_waits
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn serves_ranges_etags_and_refuses_traversal() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let digest = blake3::hash(&data).to_hex().to_string();
        let files = HashMap::from([(format!("blobs/{digest}"), bytes::Bytes::from(data.clone()))]);
        let (addr, stop) = serve(files).await;
        let path = format!("/blobs/{digest}");

        let (st, head, body) = get(addr, &path, "").await;
        assert_eq!(st, 200);
        assert!(head.contains("content-length: 10000"));
        assert!(head.contains(&format!("etag: \"{digest}\"")));
        assert_eq!(body, data);

        let (st, head, body) = get(addr, &path, "Range: bytes=100-199\r\n").await;
        assert_eq!(st, 206);
        assert!(
            head.contains("content-range: bytes 100-199/10000"),
            "{head}"
        );
        assert_eq!(body, &data[100..200]);

        let (st, _, _) = get(addr, &path, "Range: bytes=20000-30000\r\n").await;
        assert_eq!(st, 416);

        let (st, _, body) = get(addr, &path, &format!("If-None-Match: \"{digest}\"\r\n")).await;
        assert_eq!(st, 304);
        assert!(body.is_empty());

        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/blobs/..%2f..%2fetc",
            "/a\\..\\b",
        ] {
            let (st, _, body) = get(addr, bad, "").await;
            assert!(st == 400 || st == 404, "{bad}: {st}");
            assert!(!String::from_utf8_lossy(&body).contains("root:"), "{bad}");
        }
        let (st, _, _) = get(addr, "/boot-info?mac=zz", "").await;
        assert_eq!(st, 400);
        let (st, _, _) = get(addr, "/boot-info", "").await;
        assert_eq!(st, 404, "unknown caller gets 404, not a guess");
        stop.cancel();
    }

    /// A rack whose agent is this host's loopback address.
    fn loopback_site() -> rackboot_agent_domain::bootinfo::Site {
        rackboot_agent_domain::bootinfo::Site {
            rack: "r1".into(),
            server: "127.0.0.1".parse().unwrap(),
            subnet: "127.0.0.0/8".parse().unwrap(),
            gateway: None,
            blob_base: "http://127.0.0.1".into(),
        }
    }

    /// Read one response (head and Content-Length body) off `s`.
    async fn response(s: &mut tokio::net::TcpStream, head_only: bool) -> (u16, String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut byte).await.unwrap(),
                1,
                "connection closed mid-head"
            );
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; if head_only { 0 } else { len }];
        s.read_exact(&mut body).await.unwrap();
        (status, head, body)
    }

    #[tokio::test]
    async fn files_on_disk_go_out_whole_in_ranges_and_pipelined() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        tokio::fs::write(dir.path().join("big.img"), &data)
            .await
            .unwrap();
        let statics = crate::store::files::load_static_root(dir.path()).unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = crate::store::cache::BlobCache::open(cache_dir.path()).unwrap();
        let site = loopback_site();
        let view = Arc::new(RackView::default());
        let table = FileTable::build(&view, &cache, &statics, &site, None, None);
        let port = boot_port(table, view).await;
        let (addr, stats) = (port.addr, port.stats.clone());

        // Two requests written at once on one connection, answered in order.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let two = "GET /big.img HTTP/1.1\r\nHost: x\r\n\r\nGET /big.img HTTP/1.1\r\nHost: x\r\nRange: bytes=2999990-\r\n\r\n";
        s.write_all(two.as_bytes()).await.unwrap();
        let (st, head, body) = response(&mut s, false).await;
        assert_eq!(st, 200);
        assert!(body == data, "the whole file, byte for byte");
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .unwrap()
            .to_string();
        let (st, head, body) = response(&mut s, false).await;
        assert_eq!(st, 206);
        assert!(
            head.contains("content-range: bytes 2999990-2999999/3000000"),
            "{head}"
        );
        assert_eq!(body, &data[2_999_990..]);
        // HEAD: the headers of the whole file, no body.
        s.write_all(b"HEAD /big.img HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (st, head, _) = response(&mut s, true).await;
        assert_eq!(st, 200);
        assert!(head.contains("content-length: 3000000"));
        // A range under If-Range with the current tag is honoured; with
        // another tag the whole file comes back.
        let req = format!(
            "GET /big.img HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-Range: {etag}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(response(&mut s, false).await.0, 206);
        s.write_all(
            b"GET /big.img HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-Range: \"old\"\r\n\r\n",
        )
        .await
        .unwrap();
        let (st, _, body) = response(&mut s, false).await;
        assert_eq!((st, body.len()), (200, 3_000_000));
        // The file changes on disk: served as it is now.
        tokio::fs::write(dir.path().join("big.img"), b"small now")
            .await
            .unwrap();
        s.write_all(b"GET /big.img HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(response(&mut s, false).await.2, b"small now");

        // A request with a body is answered and the connection closed.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /big.img HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap();
        let (st, head, _) = response(&mut s, false).await;
        assert_eq!(st, 405);
        assert!(head.contains("connection: close"));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        // Garbage: 400, closed. A head that never ends: 431, closed.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"\x16\x03\x01 not http\r\n\r\n").await.unwrap();
        assert_eq!(response(&mut s, false).await.0, 400);
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
        s.write_all(long.as_bytes()).await.unwrap();
        assert_eq!(response(&mut s, false).await.0, 431);
        let counted = stats.requests();
        for code in [200, 206, 400, 405, 431] {
            assert!(
                counted.iter().any(|(c, n)| *c == code && *n > 0),
                "{code}: {counted:?}"
            );
        }
        port.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), port.task)
            .await
            .unwrap()
            .unwrap();
    }

    /// A view of two nodes: n1 at 127.0.0.1 (the test's own address), n2
    /// elsewhere; the table built from it.
    fn two_nodes() -> (Arc<RackView>, FileTable, tempfile::TempDir) {
        use rackboot_proto::v1 as pb;
        let node = |n: u32, mac: &str, addr: &str| pb::Node {
            number: n,
            name: format!("n{n}"),
            macs: vec![mac.into()],
            address: addr.into(),
            ..Default::default()
        };
        let state = pb::RackState {
            revision: 1,
            nodes: vec![
                node(1, "52:54:00:00:00:01", "127.0.0.1"),
                node(2, "52:54:00:00:00:02", "10.0.0.3"),
            ],
            ..Default::default()
        };
        let view = Arc::new(RackView::from_pb(state).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let cache = crate::store::cache::BlobCache::open(dir.path()).unwrap();
        let site = loopback_site();
        let table = FileTable::build(&view, &cache, &HashMap::new(), &site, None, None);
        (view, table, dir)
    }

    #[tokio::test]
    async fn boot_info_is_the_callers_own_and_operators_ask_their_own_port() {
        let (view, table, _dir) = two_nodes();
        let (_ftx, frx) = watch::channel(Arc::new(table));
        let (_vtx, vrx) = watch::channel(view);
        let stop = CancellationToken::new();
        let boot = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let boot_addr = boot.local_addr().unwrap();
        tokio::spawn(run(
            boot,
            frx.clone(),
            vrx.clone(),
            None,
            HttpLimits::default(),
            Arc::default(),
            stop.clone(),
        ));
        let op = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let op_addr = op.local_addr().unwrap();
        tokio::spawn(run_operator(
            op,
            frx,
            vrx,
            Arc::new(rackboot_metrics::Exposition::new()),
            stop.clone(),
        ));
        // The boot port: the caller (127.0.0.1 = n1) about itself.
        let (st, _, body) = get(boot_addr, "/boot-info", "").await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("\"n1\""));
        let (st, _, _) = get(boot_addr, "/boot-info?mac=52:54:00:00:00:01", "").await;
        assert_eq!(st, 200);
        // About another node, or a MAC nobody has: refused alike.
        for mac in ["52:54:00:00:00:02", "52:54:00:00:00:09"] {
            let (st, _, body) = get(boot_addr, &format!("/boot-info.env?mac={mac}"), "").await;
            assert_eq!(st, 403, "{mac}");
            assert!(!String::from_utf8_lossy(&body).contains("10.0.0.3"));
        }
        let (st, _, _) = get(boot_addr, "/boot-info-02.json", "").await;
        assert_eq!(st, 404);
        let (st, _, _) = get(boot_addr, "/boot-info/52-54-00-00-00-02.json", "").await;
        assert_eq!(st, 404, "the file form is scoped too");
        let (st, _, _) = get(boot_addr, "/metrics", "").await;
        assert_eq!(st, 404, "metrics are not on the boot port");
        // The operator listener: anyone, and metrics.
        let (st, _, body) = get(op_addr, "/boot-info.env?mac=52:54:00:00:00:02", "").await;
        assert_eq!(st, 200);
        assert!(String::from_utf8_lossy(&body).contains("10.0.0.3"));
        let (st, _, _) = get(op_addr, "/boot-info", "").await;
        assert_eq!(st, 400, "the operator names the node");
        let (st, _, _) = get(op_addr, "/metrics", "").await;
        assert_eq!(st, 200);
        stop.cancel();
    }
}
