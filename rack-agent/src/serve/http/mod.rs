//! HTTP boot on the agent: blobs and generated boot files from the in-memory
//! file table (verified bytes only), with `Content-Length`, single range
//! requests and `ETag` = blake3; `/boot-info` for the caller's own node
//! only. No redirects on boot paths (some UEFI HTTP clients cannot follow
//! them). Connections are bounded and requests time out, so slow clients
//! cannot exhaust the server.
//!
//! The operator listener ([`run_operator`], `--metrics-listen`) is a
//! separate port, kept off the rack network: `/metrics` (Prometheus) and
//! `/boot-info?mac=` about any node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use rackboot_dhcp_core::Mac;
use rackboot_tftp_core::SafePath;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::files::FileTable;
use door::Door;

mod door;
use rackboot_agent_domain::timeline::Transport;
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
    /// Longest a request handler may take (a 64 MiB initrd at 100 Mbit/s
    /// takes ~6 s).
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
}

/// The agent's metrics as `/metrics` serves them (every component
/// registered by the process that owns them).
pub type Exposition = Arc<rackboot_metrics::Exposition>;

/// Run the HTTP boot server on `listener` until `shutdown`, counting its
/// requests in `stats`.
pub async fn run(
    listener: TcpListener,
    files: watch::Receiver<Arc<FileTable>>,
    view: watch::Receiver<Arc<RackView>>,
    sessions: Option<TimelineHandle>,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    shutdown: CancellationToken,
) {
    let view_for_door = view.clone();
    let app = router(Ctx {
        files,
        view,
        sessions,
        metrics: None,
        scoped: true,
    })
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ))
    .layer(axum::middleware::from_fn_with_state(stats.clone(), count));
    let listener = Door::new(listener, limits.door(), view_for_door, stats);
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "http server stopped");
    }
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/boot-info", get(boot_info))
        .route("/boot-info.env", get(boot_info_env))
        .fallback(serve_file)
        .with_state(ctx)
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
        });
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

/// Counts a request under its status code, and its response's body bytes.
async fn count(
    State(stats): State<Arc<HttpStats>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::body::HttpBody;
    let head = req.method() == Method::HEAD;
    let resp = next.run(req).await;
    let bytes = if head {
        0
    } else {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| resp.body().size_hint().exact())
            .unwrap_or(0)
    };
    stats.response_bytes.fetch_add(bytes, Ordering::Relaxed);
    *stats
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(resp.status().as_u16())
        .or_default() += 1;
    resp
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text exposition.
async fn metrics_page(State(ctx): State<Ctx>) -> Response {
    let Some(m) = &ctx.metrics else {
        return text(StatusCode::NOT_FOUND, "no metrics\n");
    };
    rackboot_metrics::scrape(m.clone()).await
}

#[derive(Deserialize)]
struct InfoQuery {
    mac: Option<String>,
    format: Option<String>,
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

/// Boot-info of the node `q.mac` names, or of the caller's address. On the
/// boot port (`ctx.scoped`) a node may ask only about itself: a MAC of
/// another node is refused (403) without saying whether it exists.
fn info_response(ctx: &Ctx, peer: IpAddr, q: InfoQuery, env: bool) -> Response {
    let view = ctx.view.borrow().clone();
    let caller = match peer {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    let node = match &q.mac {
        Some(m) => match m.parse::<Mac>() {
            Ok(mac) => {
                let node = view.node_by_mac(&mac);
                if ctx.scoped && (node.is_none() || node.map(|n| n.addr) != caller) {
                    return text(
                        StatusCode::FORBIDDEN,
                        "boot-info is answered only about the asking node; operators ask the agent's operator listener (--metrics-listen)\n",
                    );
                }
                node
            }
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("mac: {e}\n")),
        },
        None if !ctx.scoped => {
            return text(StatusCode::BAD_REQUEST, "give ?mac=MAC\n");
        }
        None => caller.and_then(|ip| view.node_by_addr(ip)),
    };
    let Some(node) = node else {
        let who = q.mac.clone().unwrap_or_else(|| peer.to_string());
        return text(StatusCode::NOT_FOUND, format!("no node known for {who}\n"));
    };
    let env = env || q.format.as_deref() == Some("env");
    let table = ctx.files.borrow().clone();
    match table.boot_info(node.number) {
        Some(info) if env => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            info.to_env(),
        )
            .into_response(),
        Some(info) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            info.to_json(),
        )
            .into_response(),
        None => text(StatusCode::NOT_FOUND, "boot info not ready\n"),
    }
}

async fn boot_info(State(ctx): State<Ctx>, peer: PeerIp, Query(q): Query<InfoQuery>) -> Response {
    info_response(&ctx, peer.0, q, false)
}

async fn boot_info_env(
    State(ctx): State<Ctx>,
    peer: PeerIp,
    Query(q): Query<InfoQuery>,
) -> Response {
    info_response(&ctx, peer.0, q, true)
}

/// The client's address, from whichever listener took the connection.
struct PeerIp(IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let ext = &parts.extensions;
        let ip = ext
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.0.ip())
            .or_else(|| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(PeerIp(ip))
    }
}

async fn serve_file(
    State(ctx): State<Ctx>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "read-only\n");
    }
    let path = match SafePath::parse(uri.path()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("path: {e}\n")),
    };
    let table = ctx.files.borrow().clone();
    let Some(body) = table.get_for(path.as_str(), peer.ip()) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{} not found\n", path.as_str()),
        );
    };
    let etag = format!("\"{}\"", table.etag(path.as_str(), &body));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .body(Body::empty())
            .unwrap_or_default();
    }
    let len = body.len() as u64;
    let (status, slice, range_header) =
        match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            None => (StatusCode::OK, body, None),
            Some(r) => match http_range_header::parse_range_header(r).and_then(|p| p.validate(len))
            {
                Ok(ranges) if ranges.len() == 1 => {
                    let Some(range) = ranges.first() else {
                        return text(StatusCode::RANGE_NOT_SATISFIABLE, "bad range\n");
                    };
                    let (a, b) = (*range.start(), *range.end());
                    let (Ok(start), Ok(end)) = (usize::try_from(a), usize::try_from(b)) else {
                        return text(StatusCode::RANGE_NOT_SATISFIABLE, "bad range\n");
                    };
                    (
                        StatusCode::PARTIAL_CONTENT,
                        body.slice(start..=end),
                        Some(format!("bytes {a}-{b}/{len}")),
                    )
                }
                // Several ranges: send the whole file (allowed by RFC 9110).
                Ok(_) => (StatusCode::OK, body, None),
                Err(_) => {
                    return Response::builder()
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                        .body(Body::empty())
                        .unwrap_or_default();
                }
            },
        };
    let from_start = range_header
        .as_deref()
        .is_none_or(|r| r.starts_with("bytes 0-"));
    if method == Method::GET
        && from_start
        && let (Some(sessions), IpAddr::V4(ip)) = (&ctx.sessions, peer.ip())
    {
        sessions.file_served(ip, path.as_str(), Transport::Http);
    }
    let ctype = if path.as_str().ends_with(".ipxe") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, slice.len())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::ETAG,
            HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
        );
    if let Some(cr) = range_header.as_deref() {
        builder = builder.header(header::CONTENT_RANGE, cr);
    }
    let to_end = range_header
        .as_deref()
        .is_none_or(|r| r.ends_with(&format!("-{}/{len}", len.saturating_sub(1))));
    let body = if method == Method::HEAD {
        Body::empty()
    } else if let (true, Some(sessions), IpAddr::V4(ip)) = (to_end, &ctx.sessions, peer.ip()) {
        // The last byte handed to the connection completes the kernel or
        // initrd phase of the node's boot timeline.
        let sessions = sessions.clone();
        let path = path.as_str().to_string();
        Body::from_stream(Pieces::new(slice, move || {
            sessions.file_done(ip, &path);
        }))
    } else {
        Body::from(slice)
    };
    builder.body(body).unwrap_or_default()
}

/// A response body in zero-copy pieces that runs a callback when the
/// connection takes the last piece (hyper stops polling a body once it has
/// written Content-Length bytes, so "after the last piece" never comes).
struct Pieces {
    rest: Bytes,
    done: Option<Box<dyn FnOnce() + Send>>,
}

impl Pieces {
    const PIECE: usize = 256 << 10;

    fn new(body: Bytes, done: impl FnOnce() + Send + 'static) -> Self {
        Pieces {
            rest: body,
            done: Some(Box::new(done)),
        }
    }
}

impl tokio_stream::Stream for Pieces {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.rest.is_empty() {
            if let Some(done) = self.done.take() {
                done();
            }
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(Self::PIECE);
        let piece = self.rest.split_to(n);
        if self.rest.is_empty()
            && let Some(done) = self.done.take()
        {
            done();
        }
        Poll::Ready(Some(Ok(piece)))
    }
}

/// The client's address, for `/boot-info` by caller.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Door>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Door>) -> Self {
        Peer(*stream.remote_addr())
    }
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

    async fn serve(files: HashMap<String, bytes::Bytes>) -> (SocketAddr, CancellationToken) {
        let table = FileTable::from_map(files);
        let (ftx, frx) = watch::channel(Arc::new(table));
        let (vtx, vrx) = watch::channel(Arc::new(RackView::default()));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(run(
            l,
            frx,
            vrx,
            None,
            HttpLimits::default(),
            Arc::default(),
            stop.clone(),
        ));
        // Keep the senders alive for the test's duration.
        std::mem::forget(ftx);
        std::mem::forget(vtx);
        (addr, stop)
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
        let site = rackboot_agent_domain::bootinfo::Site {
            rack: "r1".into(),
            server: "127.0.0.1".parse().unwrap(),
            subnet: "127.0.0.0/8".parse().unwrap(),
            gateway: None,
            blob_base: "http://127.0.0.1".into(),
        };
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
