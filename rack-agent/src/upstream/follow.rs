//! Following the coordinator: register, watch the rack's state, report
//! unknown machines, fetch assigned blobs. None of it is on the packet path:
//! the servers read the last view and file table, whatever the coordinator does.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rackboot_proto::v1 as pb;
use rackboot_proto::v1::agent_service_client::AgentServiceClient;
use rackboot_state::Blake3Digest;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use rackboot_agent_domain::discovery::Unknown;
use rackboot_agent_domain::retry::Backoff;
use rackboot_agent_domain::view::RackView;

use crate::store::cache::BlobCache;
use crate::store::view_file;

/// Settings of the sync task.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Coordinator URLs, tried in order.
    pub coordinators: Vec<String>,
    /// The rack as this agent registers it.
    pub rack: pb::Rack,
    /// Agent id (host name or chosen id).
    pub agent_id: String,
    /// Where the view is persisted.
    pub view_path: std::path::PathBuf,
    /// Connection state and counters (metrics).
    pub stats: Arc<SyncStats>,
    /// What the agent cannot serve as configured, sent with cache reports.
    pub problems: watch::Receiver<Arc<Vec<String>>>,
}

/// The sync task's state, for metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Registered and watching the rack on a coordinator.
    pub connected: AtomicBool,
    /// Rack views received (and accepted) from the coordinator.
    pub updates: AtomicU64,
    /// Coordinator sessions that ended in an error (then it reconnects).
    pub session_errors: AtomicU64,
    /// When the last view arrived.
    pub last_update: std::sync::Mutex<Option<Instant>>,
}

impl SyncStats {
    /// Seconds since the last view arrived from the coordinator (None
    /// before the first).
    pub fn since_last_update(&self) -> Option<f64> {
        let last = self.last_update.lock().unwrap_or_else(|e| e.into_inner());
        last.map(|t| t.elapsed().as_secs_f64())
    }
}

/// Largest message accepted from the coordinator.
const MAX_MESSAGE: usize = 64 << 20;

/// Run until `shutdown`, reconnecting with bounded backoff.
pub async fn run(
    cfg: SyncConfig,
    view_tx: watch::Sender<Arc<RackView>>,
    mut unknown_rx: mpsc::Receiver<Unknown>,
    cache: Arc<BlobCache>,
    cache_changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let fetching = Arc::new(Mutex::new(()));
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let url = cfg
            .coordinators
            .get(backoff.which(cfg.coordinators.len()))
            .cloned()
            .unwrap_or_default();
        match session(
            &cfg,
            &url,
            &view_tx,
            &mut unknown_rx,
            &cache,
            &cache_changed,
            &fetching,
            &shutdown,
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                if cfg.stats.connected.swap(false, Ordering::Relaxed) {
                    // A session that was up: the next attempt starts from
                    // the shortest wait.
                    backoff.succeeded();
                }
                cfg.stats.session_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(coordinator = %url, error = %e, "coordinator session ended; serving from the local view meanwhile");
            }
        }
        let at = backoff.failed(tokio::time::Instant::now().into_std());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(at.into()) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach coordinator: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("watch stream ended")]
    Ended,
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &SyncConfig,
    url: &str,
    view_tx: &watch::Sender<Arc<RackView>>,
    unknown_rx: &mut mpsc::Receiver<Unknown>,
    cache: &Arc<BlobCache>,
    cache_changed: &Arc<Notify>,
    fetching: &Arc<Mutex<()>>,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let channel = crate::upstream::channel::connect(url).await?;
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    client
        .register(pb::RegisterRequest {
            rack: Some(cfg.rack.clone()),
            agent_id: cfg.agent_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .await?;
    let from = view_tx.borrow().revision;
    tracing::info!(coordinator = %url, rack = %cfg.rack.name, from_revision = from, "registered; watching rack");
    let mut stream = client
        .watch_rack(pb::WatchRackRequest {
            rack: cfg.rack.name.clone(),
            from_revision: from,
        })
        .await?
        .into_inner();
    cfg.stats.connected.store(true, Ordering::Relaxed);
    // Blobs of the current view may still be missing (e.g. first start).
    let reporter = Arc::new(CacheReporter::new(
        &cfg.rack.name,
        &cfg.agent_id,
        cfg.problems.clone(),
    ));
    spawn_fetch(
        client.clone(),
        view_tx.borrow().clone(),
        cache.clone(),
        cache_changed.clone(),
        fetching.clone(),
        reporter.clone(),
    );
    // Blobs that failed to arrive (or to verify) are fetched again on this
    // tick, not only at the next view change.
    let mut retry = tokio::time::interval(BLOB_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retry.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            () = next_fetch(&mut retry, cache.recheck()) => {
                let view = view_tx.borrow().clone();
                let missing = view.needed_blobs().iter().any(|b| cache.get(&b.digest).is_none());
                // A fetch still running covers it.
                let idle = fetching.try_lock().is_ok();
                if idle {
                    if missing {
                        tracing::info!("some assigned blobs are not cached yet; fetching them again");
                    }
                    // Also keeps the bound and re-sends an undelivered cache report.
                    spawn_fetch(client.clone(), view, cache.clone(), cache_changed.clone(), fetching.clone(), reporter.clone());
                }
            }
            msg = stream.message() => {
                let Some(state) = msg? else { return Err(SessionError::Ended) };
                match RackView::from_pb(state) {
                    Ok(view) => {
                        let view = Arc::new(view);
                        // Write and fsync on a blocking thread; awaited, so
                        // saves stay in order.
                        let (v, path) = (view.clone(), cfg.view_path.clone());
                        match tokio::task::spawn_blocking(move || view_file::save(&v, &path)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::error!(error = %e, path = %cfg.view_path.display(), "cannot persist rack view"),
                            Err(e) => tracing::error!(error = %e, "rack view persistence task failed"),
                        }
                        tracing::info!(revision = view.revision, nodes = view.nodes.len(), images = view.images.len(), "rack view updated");
                        cfg.stats.updates.fetch_add(1, Ordering::Relaxed);
                        *cfg.stats.last_update.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                        view_tx.send_replace(view.clone());
                        spawn_fetch(client.clone(), view, cache.clone(), cache_changed.clone(), fetching.clone(), reporter.clone());
                    }
                    Err(e) => tracing::error!(error = %e, "rack view refused; keeping the previous one"),
                }
            }
            Some(u) = unknown_rx.recv() => {
                let mut c = client.clone();
                let rack = cfg.rack.name.clone();
                tokio::spawn(async move {
                    let req = pb::DiscoverNodeRequest {
                        rack,
                        mac: u.mac.to_string(),
                        macs: u.macs.iter().map(ToString::to_string).collect(),
                        uuid: u.uuid.unwrap_or_default(),
                        hold: u.hold,
                        inventory: u.inventory.into_iter().collect(),
                        // A MAC identifies its node: rediscovery is naturally idempotent.
                        idempotency_key: String::new(),
                    };
                    match c.discover_node(req).await {
                        Ok(n) => {
                            let n = n.into_inner();
                            if n.pending {
                                tracing::info!(mac = %u.mac, macs = n.macs.len(), "machine held for acceptance (rackboot node accept)");
                            } else {
                                tracing::info!(mac = %u.mac, node = n.number, address = %n.address, macs = n.macs.len(), "machine numbered");
                            }
                        }
                        Err(e) => tracing::warn!(mac = %u.mac, error = %e, "discovery failed"),
                    }
                });
            }
        }
    }
}

/// The next time to fetch what is missing: the retry tick, or at once when
/// a recheck found a cached blob damaged.
async fn next_fetch(retry: &mut tokio::time::Interval, recheck: &crate::store::disk::Recheck) {
    tokio::select! {
        _ = retry.tick() => {}
        () = recheck.fetch_wanted() => {}
    }
}

/// How often missing blobs are fetched again while connected.
pub const BLOB_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

fn spawn_fetch(
    mut client: AgentServiceClient<Channel>,
    view: Arc<RackView>,
    cache: Arc<BlobCache>,
    changed: Arc<Notify>,
    fetching: Arc<Mutex<()>>,
    reporter: Arc<CacheReporter>,
) {
    tokio::spawn(async move {
        let _one_at_a_time = fetching.lock().await;
        let mut any = false;
        let needed = view.needed_blobs();
        for blob in &needed {
            if cache.get(&blob.digest).is_some() {
                continue;
            }
            match cache.ensure(&mut client, blob).await {
                Ok(()) => any = true,
                Err(e) => tracing::error!(error = %e, "blob fetch failed; will retry on next view"),
            }
        }
        // Only what the rack is assigned stays in memory and is safe from
        // eviction; the rest of the disk is kept under the bound, LRU first.
        let assigned: HashSet<Blake3Digest> = needed.iter().map(|b| b.digest).collect();
        cache.retain_loaded(&assigned);
        let c = cache.clone();
        let _ = tokio::task::spawn_blocking(move || c.enforce_bound(&assigned)).await;
        if any {
            changed.notify_one();
        }
        reporter.report(&mut client, &cache).await;
    });
}

/// Tells the coordinator what the cache holds, when that changed.
#[derive(Debug)]
pub struct CacheReporter {
    rack: String,
    agent_id: String,
    last: Mutex<Option<pb::ReportCacheRequest>>,
    problems: watch::Receiver<Arc<Vec<String>>>,
}

impl CacheReporter {
    /// For this rack and agent.
    pub fn new(rack: &str, agent_id: &str, problems: watch::Receiver<Arc<Vec<String>>>) -> Self {
        CacheReporter {
            rack: rack.to_string(),
            agent_id: agent_id.to_string(),
            last: Mutex::new(None),
            problems,
        }
    }

    /// Send a report unless it equals the last one sent.
    pub async fn report(&self, client: &mut AgentServiceClient<Channel>, cache: &BlobCache) {
        let stats = cache.stats();
        let mut files = cache.files();
        files.sort_by_key(|f| f.digest);
        files.truncate(4096);
        let req = pb::ReportCacheRequest {
            rack: self.rack.clone(),
            agent_id: self.agent_id.clone(),
            held: files
                .iter()
                .map(|f| pb::BlobRef {
                    blake3: f.digest.to_string(),
                    size: f.size,
                })
                .collect(),
            bytes: files.iter().map(|f| f.size).sum(),
            max_bytes: stats.max_bytes,
            evicted: stats.evicted,
            repaired_groups: stats.repaired_groups,
            problems: self.problems.borrow().iter().take(16).cloned().collect(),
        };
        let mut last = self.last.lock().await;
        if last.as_ref() == Some(&req) {
            return;
        }
        match client.report_cache(req.clone()).await {
            Ok(_) => *last = Some(req),
            Err(e) => {
                tracing::debug!(error = %e, "cache report not delivered; sent again with the next change")
            }
        }
    }
}
