//! The coordinator's Prometheus metrics: `GET /metrics` on a plain HTTP
//! listener of its own (`--metrics-listen ADDR`, off by default,
//! [`rackboot_metrics::serve`]), in the OpenMetrics text format.
//!
//! Raft and state figures are read from the replica's published status and
//! applied state at scrape time; the API keeps a few counters of its own
//! ([`ApiStats`]: watch streams, gRPC requests by method) and the replica
//! handle counts proposals ([`crate::raft::ProposalStats`]). Every name is
//! listed, with its meaning, in `docs/operations.md` ("Metrics").

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use prometheus_client::encoding::DescriptorEncoder;
use rackboot_metrics::{Component, Exposition, counter, counters, gauge, gauges};

use crate::blobs::BlobStore;
use crate::raft::Replica;

/// Distinct gRPC method names counted; requests for further (unknown)
/// paths are counted under `method="other"`, so a client cannot grow the
/// label set without bound.
pub const MAX_METHODS: usize = 256;

/// Counters of the gRPC API.
#[derive(Debug, Default)]
pub struct ApiStats {
    watch_streams: AtomicI64,
    requests: RwLock<BTreeMap<String, AtomicU64>>,
    /// Calls refused by certificate authorization (`auth.rs`).
    pub auth_denied: Arc<AtomicU64>,
    /// gRPC connections open and refused (`conncap.rs`).
    pub connections: Arc<crate::conncap::ConnStats>,
}

/// Counts one open `WatchRack` stream while it lives.
#[derive(Debug)]
pub struct WatchOpen(Arc<ApiStats>);

impl Drop for WatchOpen {
    fn drop(&mut self) {
        self.0.watch_streams.fetch_sub(1, Relaxed);
    }
}

impl ApiStats {
    /// A `WatchRack` stream opened; it counts as open until the guard drops.
    pub fn watch_opened(self: &Arc<Self>) -> WatchOpen {
        self.watch_streams.fetch_add(1, Relaxed);
        WatchOpen(self.clone())
    }

    /// `WatchRack` streams open.
    pub fn watch_streams(&self) -> i64 {
        self.watch_streams.load(Relaxed)
    }

    /// Count a gRPC request for `path` (`/package.Service/Method`).
    pub fn grpc_request(&self, path: &str) {
        {
            let map = self.requests.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map.get(path) {
                c.fetch_add(1, Relaxed);
                return;
            }
        }
        let mut map = self.requests.write().unwrap_or_else(|e| e.into_inner());
        let key = if map.len() < MAX_METHODS {
            path
        } else {
            "other"
        };
        map.entry(key.to_string())
            .or_default()
            .fetch_add(1, Relaxed);
    }

    /// gRPC requests so far, by method path.
    pub fn grpc_requests(&self) -> Vec<(String, u64)> {
        let map = self.requests.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, v)| (k.clone(), v.load(Relaxed)))
            .collect()
    }
}

/// A tower layer that counts every gRPC request by its path.
#[derive(Debug, Clone)]
pub struct GrpcCountLayer(Arc<ApiStats>);

impl GrpcCountLayer {
    /// Count into `stats`.
    pub fn new(stats: Arc<ApiStats>) -> Self {
        GrpcCountLayer(stats)
    }
}

impl<S> tower::Layer<S> for GrpcCountLayer {
    type Service = GrpcCount<S>;

    fn layer(&self, inner: S) -> GrpcCount<S> {
        GrpcCount {
            inner,
            stats: self.0.clone(),
        }
    }
}

/// The service of [`GrpcCountLayer`].
#[derive(Debug, Clone)]
pub struct GrpcCount<S> {
    inner: S,
    stats: Arc<ApiStats>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for GrpcCount<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        self.stats.grpc_request(req.uri().path());
        self.inner.call(req)
    }
}

/// The coordinator's metrics: `replica`'s Raft and state figures, its blob
/// store and its API, read at scrape time. Render it off the async runtime
/// (the blob store is walked): [`rackboot_metrics::serve`] does.
pub fn exposition(replica: Replica, blobs: Arc<BlobStore>, api: Arc<ApiStats>) -> Exposition {
    let mut x = Exposition::new();
    x.register(Arc::new(Sources {
        replica,
        blobs,
        api,
    }));
    x
}

/// Everything read at scrape time.
struct Sources {
    replica: Replica,
    blobs: Arc<BlobStore>,
    api: Arc<ApiStats>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Component for Sources {
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let s = self.replica.status();
        let leader = s.role == "leader";
        gauge(e, "rackboot_coordinator_raft_id", "This replica's id", s.id)?;
        gauge(
            e,
            "rackboot_coordinator_raft_term",
            "Current Raft term",
            s.term,
        )?;
        gauge(
            e,
            "rackboot_coordinator_raft_commit_index",
            "Raft commit index",
            s.commit,
        )?;
        gauge(
            e,
            "rackboot_coordinator_raft_applied_index",
            "Raft log index applied to the state machine",
            s.applied,
        )?;
        gauge(
            e,
            "rackboot_coordinator_raft_last_index",
            "Last Raft log index",
            s.last_index,
        )?;
        gauge(
            e,
            "rackboot_coordinator_raft_leader_id",
            "Id of the leader this replica knows (0: none)",
            s.leader_id,
        )?;
        gauge(
            e,
            "rackboot_coordinator_raft_is_leader",
            "1 on the leader",
            u64::from(leader),
        )?;
        let voters = s.members.values().filter(|m| m.voter).count() as u64;
        let learners = s.members.len() as u64 - voters;
        gauges(
            e,
            "rackboot_coordinator_raft_members",
            "Members of the group, by kind",
            "kind",
            &[("voter", voters), ("learner", learners)],
        )?;
        // Match indexes are known on the leader only.
        let peers: Vec<(String, u64, u64)> = if leader {
            s.members
                .iter()
                .map(|(id, m)| {
                    (
                        id.to_string(),
                        m.matched,
                        s.last_index.saturating_sub(m.matched),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let matched: Vec<(&str, u64)> = peers.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        let lag: Vec<(&str, u64)> = peers.iter().map(|(p, _, l)| (p.as_str(), *l)).collect();
        gauges(
            e,
            "rackboot_coordinator_raft_peer_match_index",
            "Highest log index known replicated on each member (on the leader only)",
            "peer",
            &matched,
        )?;
        gauges(
            e,
            "rackboot_coordinator_raft_peer_lag",
            "Log entries each member is behind the leader's last index (on the leader only)",
            "peer",
            &lag,
        )?;
        gauge(
            e,
            "rackboot_coordinator_state_revision",
            "Revision of the applied state",
            s.revision,
        )?;
        let (racks, nodes, images, pending) = {
            let st = self.replica.state();
            (
                st.racks().count() as u64,
                st.nodes().count() as u64,
                st.images().count() as u64,
                st.pending().count() as u64,
            )
        };
        gauge(e, "rackboot_coordinator_racks", "Racks registered", racks)?;
        gauge(e, "rackboot_coordinator_nodes", "Nodes numbered", nodes)?;
        gauge(
            e,
            "rackboot_coordinator_images",
            "Images registered",
            images,
        )?;
        gauge(
            e,
            "rackboot_coordinator_pending_machines",
            "Machines held for acceptance (manual policy)",
            pending,
        )?;
        let (blobs, bytes) = self.blobs.stored();
        gauge(
            e,
            "rackboot_coordinator_blobs_stored",
            "Blobs in this replica's blob store",
            blobs,
        )?;
        gauge(
            e,
            "rackboot_coordinator_blob_bytes_stored",
            "Bytes of the blobs in this replica's blob store",
            bytes,
        )?;
        gauge(
            e,
            "rackboot_coordinator_watch_streams",
            "Rack watch streams open (one per connected agent)",
            self.api.watch_streams(),
        )?;
        let p = self.replica.proposal_stats();
        counter(
            e,
            "rackboot_coordinator_proposals",
            "Commands proposed through this replica",
            p.proposed.load(Relaxed),
        )?;
        counters(
            e,
            "rackboot_coordinator_proposal_failures",
            "Proposals without a successful outcome, by reason",
            "reason",
            &p.failures(),
        )?;
        gauge(
            e,
            "rackboot_coordinator_grpc_connections",
            "gRPC connections open",
            self.api.connections.open(),
        )?;
        counters(
            e,
            "rackboot_coordinator_grpc_connections_refused",
            "gRPC connections closed by the server: at once because the cap of open connections (max_open) or of one address's (per_source) was reached, or because the client sent nothing within 10 s of connecting (silent)",
            "reason",
            &self.api.connections.refusals(),
        )?;
        counter(
            e,
            "rackboot_coordinator_auth_denied",
            "gRPC calls refused: no usable client certificate, or a role not allowed for the service or rack",
            self.api.auth_denied.load(Relaxed),
        )?;
        counters(
            e,
            "rackboot_coordinator_grpc_requests",
            "gRPC requests received, by method",
            "method",
            &self.api.grpc_requests(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grpc_methods_are_bounded() {
        let s = ApiStats::default();
        for i in 0..(MAX_METHODS + 10) {
            s.grpc_request(&format!("/x.Y/M{i}"));
        }
        s.grpc_request("/x.Y/M0");
        let r = s.grpc_requests();
        assert_eq!(r.len(), MAX_METHODS + 1);
        assert!(r.contains(&("other".to_string(), 10)));
        assert!(r.contains(&("/x.Y/M0".to_string(), 2)));
    }
}
