//! Connecting to a coordinator cluster, with errors an operator can act on.
//!
//! Every call goes through a [`Router`]: it knows every coordinator address
//! given, follows the `rackboot-leader` hint a follower returns with
//! `UNAVAILABLE`, moves on to the next address when one does not answer, and
//! retries (for up to [`RETRY_FOR`]) on `UNAVAILABLE`, `DEADLINE_EXCEEDED`
//! and transport errors. Mutating calls carry an idempotency key in the
//! `rackboot-idempotency-key` metadata, generated once per call and kept
//! across its retries, so a retried write that had in fact happened returns
//! the first outcome (a node number is never handed out twice).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use http_body_util::BodyExt;
use rackboot_proto::v1::{
    assignment_service_client::AssignmentServiceClient,
    cluster_service_client::ClusterServiceClient, image_service_client::ImageServiceClient,
    node_service_client::NodeServiceClient, rack_service_client::RackServiceClient,
};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower_service::Service;

/// Largest message sent or accepted.
const MAX_MESSAGE: usize = 64 << 20;
/// How long one call keeps retrying.
pub const RETRY_FOR: Duration = Duration::from_secs(20);
/// Longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Metadata carrying the leader's address on `UNAVAILABLE`.
pub const LEADER_HINT: &str = "rackboot-leader";
/// Metadata carrying an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "rackboot-idempotency-key";

/// Calls that change state: they get an idempotency key.
const MUTATING: &[&str] = &[
    "/rackboot.v1.ImageService/CommitImage",
    "/rackboot.v1.ImageService/TagImage",
    "/rackboot.v1.AssignmentService/Assign",
    "/rackboot.v1.AgentService/Register",
    "/rackboot.v1.AgentService/DiscoverNode",
    "/rackboot.v1.NodeService/ReplaceNode",
    "/rackboot.v1.NodeService/RetireNode",
    "/rackboot.v1.NodeService/AcceptMachine",
    "/rackboot.v1.NodeService/RejectMachine",
    "/rackboot.v1.NodeService/AddNodes",
    "/rackboot.v1.MetaService/SetMeta",
    "/rackboot.v1.ClusterService/AddMember",
    "/rackboot.v1.ClusterService/RemoveMember",
];
/// Calls whose request is a stream: sent once, never replayed.
const STREAMING_REQUEST: &[&str] = &[
    "/rackboot.v1.ImageService/PutBlob",
    "/rackboot.v1.AgentService/ShipLogs",
];

/// A connection to a coordinator cluster.
pub struct Conn {
    router: Router,
}

fn url_of(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(rackboot_proto::tls::endpoint(url)
        .map_err(|e| anyhow!("invalid coordinator URL {url}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}

impl Conn {
    /// Connect to the first coordinator that answers; the others stay known
    /// for failover.
    pub async fn connect(urls: &[String]) -> anyhow::Result<Conn> {
        let mut errors = Vec::new();
        for url in urls {
            match endpoint(url)?.connect().await {
                Ok(channel) => {
                    return Ok(Conn {
                        router: Router::new(urls, url, channel),
                    });
                }
                Err(e) => errors.push(format!("{url}: {}", root_cause(&e))),
            }
        }
        Err(anyhow!(
            "cannot reach coordinator at {} (is rackboot-coordinator or `rackboot dev` running? set --coordinator or RACKBOOT_COORDINATOR)",
            errors.join("; ")
        ))
    }

    /// A connection to exactly this address (no failover), e.g. to ask one
    /// replica for its own status.
    pub fn direct(addr: &str) -> anyhow::Result<Conn> {
        let url = url_of(addr);
        let channel = endpoint(&url)?.connect_lazy();
        Ok(Conn {
            router: Router::pinned(&url, channel),
        })
    }

    /// Turn a status into an error naming the coordinator.
    pub fn err(&self, what: &str, s: tonic::Status) -> anyhow::Error {
        let mut msg = format!("{what}: {}", s.message());
        if let Some(leader) = s.metadata().get(LEADER_HINT).and_then(|v| v.to_str().ok()) {
            msg.push_str(&format!(" (leader: {leader})"));
        }
        if s.code() == tonic::Code::Unavailable && s.message().contains("transport") {
            msg.push_str(&format!(" [coordinator {}]", self.router.current()));
        }
        anyhow!(msg)
    }

    /// Image service client.
    pub fn images(&self) -> ImageServiceClient<Router> {
        ImageServiceClient::new(self.router.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Node service client.
    pub fn nodes(&self) -> NodeServiceClient<Router> {
        NodeServiceClient::new(self.router.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// Rack service client.
    pub fn racks(&self) -> RackServiceClient<Router> {
        RackServiceClient::new(self.router.clone())
    }

    /// Assignment service client.
    pub fn assignments(&self) -> AssignmentServiceClient<Router> {
        AssignmentServiceClient::new(self.router.clone())
    }

    /// Cluster service client.
    pub fn cluster(&self) -> ClusterServiceClient<Router> {
        ClusterServiceClient::new(self.router.clone())
    }

    /// Site key-value service client.
    pub fn meta(&self) -> rackboot_proto::v1::meta_service_client::MetaServiceClient<Router> {
        rackboot_proto::v1::meta_service_client::MetaServiceClient::new(self.router.clone())
    }
}

/// Routes gRPC calls across coordinator replicas (see the module docs).
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    /// Known URLs, in the order given (leader hints are added).
    urls: Mutex<Vec<String>>,
    /// Where calls go now.
    current: Mutex<String>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Never leave `current` (for [`Conn::direct`]).
    pinned: bool,
    /// Unique per process: prefix of idempotency keys.
    invocation: String,
    calls: AtomicU64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Router {
    fn new(urls: &[String], current: &str, channel: Channel) -> Router {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = format!("{}:{nanos}", std::process::id());
        let invocation = blake3::hash(seed.as_bytes()).to_hex()[..16].to_string();
        Router {
            inner: Arc::new(RouterInner {
                urls: Mutex::new(urls.to_vec()),
                current: Mutex::new(current.to_string()),
                channels: Mutex::new(HashMap::from([(current.to_string(), channel)])),
                pinned: false,
                invocation,
                calls: AtomicU64::new(0),
            }),
        }
    }

    fn pinned(url: &str, channel: Channel) -> Router {
        let mut r = Router::new(&[url.to_string()], url, channel);
        if let Some(inner) = Arc::get_mut(&mut r.inner) {
            inner.pinned = true;
        }
        r
    }

    /// The URL calls go to now.
    pub fn current(&self) -> String {
        self.inner.current()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RouterInner {
    fn current(&self) -> String {
        lock(&self.current).clone()
    }

    fn channel(&self, url: &str) -> Result<Channel, BoxError> {
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let c = endpoint(url)
            .map_err(|e| -> BoxError { e.into() })?
            .connect_lazy();
        channels.insert(url.to_string(), c.clone());
        Ok(c)
    }

    /// After a failure at `failed`: go to the hinted leader, or the next URL.
    fn move_on(&self, failed: &str, hint: Option<String>) {
        if self.pinned {
            return;
        }
        let mut urls = lock(&self.urls);
        let next = match hint {
            Some(h) => {
                let u = url_of(&h);
                if !urls.contains(&u) {
                    urls.push(u.clone());
                }
                u
            }
            None => {
                let i = urls.iter().position(|u| u == failed).unwrap_or(0);
                urls.get((i + 1) % urls.len().max(1))
                    .cloned()
                    .unwrap_or_else(|| failed.to_string())
            }
        };
        *lock(&self.current) = next;
    }

    async fn route(
        self: Arc<Self>,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        let path = req.uri().path().to_string();
        if STREAMING_REQUEST.contains(&path.as_str()) {
            let mut ch = self.channel(&self.current())?;
            std::future::poll_fn(|cx| ch.poll_ready(cx)).await?;
            return Ok(ch.call(req).await?);
        }
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let mut headers = parts.headers.clone();
        if MUTATING.contains(&path.as_str()) && !headers.contains_key(IDEMPOTENCY_KEY) {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            let key = format!("cli-{}-{n}", self.invocation);
            if let Ok(v) = http::HeaderValue::from_str(&key) {
                headers.insert(IDEMPOTENCY_KEY, v);
            }
        }
        let deadline = Instant::now() + RETRY_FOR;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let url = self.current();
            let mut builder = http::Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.clone())
                .version(parts.version);
            if let Some(h) = builder.headers_mut() {
                *h = headers.clone();
            }
            let req = builder.body(Body::new(http_body_util::Full::new(bytes.clone())))?;
            let mut ch = self.channel(&url)?;
            let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
                std::future::poll_fn(|cx| ch.poll_ready(cx)).await?;
                ch.call(req).await
            })
            .await;
            let last = Instant::now() >= deadline || self.pinned;
            let (why, hint) = match sent {
                Ok(Ok(resp)) => {
                    let code = resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok());
                    let retry = matches!(code, Some(c) if c == tonic::Code::Unavailable as i32
                        || c == tonic::Code::DeadlineExceeded as i32);
                    if !retry || last {
                        return Ok(resp);
                    }
                    let hint = resp
                        .headers()
                        .get(LEADER_HINT)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                        .filter(|h| url_of(h) != url);
                    ("unavailable".to_string(), hint)
                }
                Ok(Err(e)) => {
                    if last {
                        return Err(e.into());
                    }
                    (root_cause(&e), None)
                }
                Err(_) => {
                    if last {
                        return Err(
                            format!("no answer from {url} within {ATTEMPT_TIMEOUT:?}").into()
                        );
                    }
                    ("timeout".to_string(), None)
                }
            };
            tracing::debug!(%url, %path, attempt, %why, ?hint, "retrying");
            let hinted = hint.is_some();
            self.move_on(&url, hint);
            if !hinted {
                let backoff = Duration::from_millis(50 * u64::from(attempt.min(10)));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

impl Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.inner.clone().route(req))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
