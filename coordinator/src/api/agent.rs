//! The agent-facing service.

use rackboot_proto::v1 as pb;
use rackboot_state::{
    Blake3Digest, BootSession, Command, Envelope, LogLine, Mac, NodeNumber, Outcome,
    RackCacheReport, RackName,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::admin::BoxStream;
use super::blob_peer::local_blob_stream;
use super::convert::{field, node_to_pb, pending_to_pb, rack_from_pb, rack_state, rack_to_pb};
use super::{Ctx, key, unix_now};
use crate::auth::{agent_rack, check_rack};

/// Inventory as the probe may report it: at most 16 entries, keys
/// `[a-z0-9_]{1,32}`, values up to 128 bytes without control characters.
fn checked_inventory(
    raw: std::collections::HashMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, Status> {
    if raw.len() > 16 {
        return Err(Status::invalid_argument(format!(
            "inventory: {} entries, at most 16",
            raw.len()
        )));
    }
    for (k, v) in &raw {
        let key_ok = (1..=32).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return Err(Status::invalid_argument(format!(
                "inventory key {k:?}: 1-32 of a-z 0-9 _"
            )));
        }
        if v.len() > 128 || v.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "inventory value of {k}: at most 128 bytes, no control characters"
            )));
        }
    }
    Ok(raw.into_iter().collect())
}

/// `AgentService`.
pub struct AgentApi(pub Ctx);

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let idempotency_key = key("", req.metadata());
        let peer_ext = req.extensions().clone();
        let r = req.into_inner();
        let rack = rack_from_pb(r.rack.as_ref())?;
        check_rack(&peer_ext, &rack.name.to_string())?;
        tracing::info!(rack = %rack.name, agent = %r.agent_id, version = %r.agent_version, "agent registering");
        match self
            .0
            .propose(Envelope {
                idempotency_key,
                command: Command::RegisterRack { rack },
            })
            .await?
        {
            Outcome::Rack(rack) => Ok(Response::new(pb::RegisterResponse {
                rack: Some(rack_to_pb(&rack)),
                revision: self.0.replica.status().revision,
            })),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    type WatchRackStream = BoxStream<pb::RackState>;

    async fn watch_rack(
        &self,
        req: Request<pb::WatchRackRequest>,
    ) -> Result<Response<Self::WatchRackStream>, Status> {
        let peer_ext = req.extensions().clone();
        let r = req.into_inner();
        let rack: RackName = field("rack", &r.rack)?;
        check_rack(&peer_ext, &rack.to_string())?;
        if self.0.replica.state().rack(&rack).is_none() {
            return Err(Status::not_found(format!(
                "rack '{rack}' not found; register first"
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let replica = self.0.replica.clone();
        let mut revisions = replica.revisions();
        let from = r.from_revision;
        let open = self.0.stats.watch_opened();
        tokio::spawn(async move {
            let _open = open;
            let mut last_sent: Option<pb::RackState> = None;
            loop {
                let view = rack_state(&replica.state(), &rack);
                let Some(view) = view else {
                    let _ = tx
                        .send(Err(Status::not_found(format!("rack '{rack}' is gone"))))
                        .await;
                    return;
                };
                let changed = match &last_sent {
                    None => from == 0 || view.revision > from,
                    Some(prev) => {
                        prev.rack != view.rack
                            || prev.nodes != view.nodes
                            || prev.images != view.images
                    }
                };
                if changed {
                    if tx.send(Ok(view.clone())).await.is_err() {
                        return; // agent went away
                    }
                    last_sent = Some(view);
                } else if last_sent.is_none() {
                    last_sent = Some(view);
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    r = revisions.changed() => if r.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchBlobStream = BoxStream<pb::BlobChunk>;

    async fn fetch_blob(
        &self,
        req: Request<pb::FetchBlobRequest>,
    ) -> Result<Response<Self::FetchBlobStream>, Status> {
        let own_rack = agent_rack(req.extensions()).map(str::to_string);
        let r = req.into_inner();
        let digest: Blake3Digest = field("blake3", &r.blake3)?;
        if let Some(rack) = own_rack {
            // An agent certificate fetches only what its rack boots.
            let rack: RackName = field("certificate rack", &rack)?;
            let allowed = self.0.replica.state().rack_view(&rack).is_some_and(|v| {
                v.images
                    .iter()
                    .any(|i| i.blobs().any(|b| b.digest == digest))
            });
            if !allowed {
                return Err(Status::permission_denied(format!(
                    "blob {digest} is not part of an image assigned to rack {rack}"
                )));
            }
        }
        if self.0.blobs.size(&digest).await.is_none() {
            // Not here (this replica was down when it was pushed, or the
            // repair has not reached it yet): pull it from a peer first when
            // a committed image names it.
            let Some(size) = self.0.repl.committed_size(&digest) else {
                return Err(Status::not_found(format!("blob {digest} not found")));
            };
            let blob = rackboot_state::BlobRef { digest, size };
            let limit = crate::replication::quorum_timeout(size);
            let pulled =
                tokio::time::timeout(limit, self.0.repl.ensure_local_detached(blob, Vec::new()))
                    .await;
            match pulled {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(Status::unavailable(format!(
                        "blob {digest} is not on this coordinator and no peer supplied it: {e}"
                    )));
                }
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "blob {digest} is not on this coordinator and was not pulled from a peer within {limit:?}"
                    )));
                }
            }
        }
        Ok(Response::new(
            local_blob_stream(&self.0.blobs, digest, r.offset, r.length).await?,
        ))
    }

    async fn discover_node(
        &self,
        req: Request<pb::DiscoverNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let metadata = req.metadata().clone();
        let peer_ext = req.extensions().clone();
        let r = req.into_inner();
        let rack: RackName = field("rack", &r.rack)?;
        check_rack(&peer_ext, &rack.to_string())?;
        let mut macs: Vec<Mac> = vec![field("mac", &r.mac)?];
        for (i, m) in r.macs.iter().enumerate() {
            let m: Mac = field(&format!("macs[{i}]"), m)?;
            if !macs.contains(&m) {
                macs.push(m);
            }
        }
        let uuid = (!r.uuid.is_empty()).then_some(r.uuid);
        let inventory = checked_inventory(r.inventory)?;
        match self
            .0
            .propose(Envelope {
                idempotency_key: key(&r.idempotency_key, &metadata),
                command: Command::DiscoverNode {
                    rack,
                    macs,
                    uuid,
                    inventory,
                    hold: r.hold,
                    seen_at: unix_now(),
                },
            })
            .await?
        {
            Outcome::Node(n) => Ok(Response::new(node_to_pb(&self.0.replica.state(), &n))),
            Outcome::Pending(p) => {
                let state = self.0.replica.state();
                if let Some(node) = p.macs.iter().find_map(|m| state.node_by_mac(m)) {
                    tracing::warn!(
                        rack = %p.rack,
                        node = %node.number,
                        macs = %p.macs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                        "a report names a node's MAC beside new ones: held for an administrator (`rackboot node accept` joins them to the node, `node reject` forgets them)"
                    );
                }
                Ok(Response::new(pending_to_pb(&state, &p)))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn report_cache(
        &self,
        req: Request<pb::ReportCacheRequest>,
    ) -> Result<Response<pb::ReportCacheResponse>, Status> {
        let peer_ext = req.extensions().clone();
        let r = req.into_inner();
        let rack: RackName = field("rack", &r.rack)?;
        check_rack(&peer_ext, &rack.to_string())?;
        if r.held.len() > RackCacheReport::MAX_HELD {
            return Err(Status::invalid_argument(format!(
                "held: {} blobs, at most {} per report",
                r.held.len(),
                RackCacheReport::MAX_HELD
            )));
        }
        if r.problems.len() > RackCacheReport::MAX_PROBLEMS
            || r.problems
                .iter()
                .any(|p| p.len() > RackCacheReport::MAX_PROBLEM_LEN)
        {
            return Err(Status::invalid_argument(format!(
                "problems: at most {} per report, {} bytes each",
                RackCacheReport::MAX_PROBLEMS,
                RackCacheReport::MAX_PROBLEM_LEN
            )));
        }
        let mut held = Vec::with_capacity(r.held.len());
        for (i, b) in r.held.iter().enumerate() {
            held.push(super::convert::blob_from_pb(
                &format!("held[{i}]"),
                Some(b),
            )?);
        }
        let report = RackCacheReport {
            agent_id: r.agent_id,
            held,
            bytes: r.bytes,
            max_bytes: r.max_bytes,
            evicted: r.evicted,
            repaired_groups: r.repaired_groups,
            problems: r.problems,
            unix_millis: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        };
        self.0
            .propose(Envelope {
                idempotency_key: None,
                command: Command::RecordRackCache { rack, report },
            })
            .await?;
        Ok(Response::new(pb::ReportCacheResponse {}))
    }

    async fn report_boot_events(
        &self,
        req: Request<pb::ReportBootEventsRequest>,
    ) -> Result<Response<pb::ReportBootEventsResponse>, Status> {
        let peer_ext = req.extensions().clone();
        let r = req.into_inner();
        let rack: RackName = field("rack", &r.rack)?;
        check_rack(&peer_ext, &rack.to_string())?;
        let mut sessions = Vec::with_capacity(r.events.len());
        for (i, e) in r.events.into_iter().enumerate() {
            if e.session_id.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "events[{i}].session_id: missing"
                )));
            }
            sessions.push(BootSession {
                id: e.session_id,
                node: NodeNumber(e.node),
                mac: e.mac,
                image: e.image,
                kernel_blake3: e.kernel_blake3,
                kernel_version: e.kernel_version,
                transport: e.transport,
                unix_millis: e.unix_millis,
                rack: rack.to_string(),
                phases: e.phases.into_iter().collect(),
            });
        }
        // The session ids make a retried report idempotent.
        match self
            .0
            .propose(Envelope {
                idempotency_key: None,
                command: Command::RecordBootSessions { rack, sessions },
            })
            .await?
        {
            Outcome::Recorded { kept } => Ok(Response::new(pb::ReportBootEventsResponse {
                accepted: u32::try_from(kept).unwrap_or(u32::MAX),
            })),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    type ShipLogsStream = BoxStream<pb::LogAck>;

    async fn ship_logs(
        &self,
        req: Request<Streaming<pb::LogBatch>>,
    ) -> Result<Response<Self::ShipLogsStream>, Status> {
        let peer_ext = req.extensions().clone();
        let mut stream = req.into_inner();
        let ctx = self.0.clone();
        // One ack per batch, after its lines are committed: the agent keeps
        // a batch until it is acknowledged (backpressure and no loss).
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let batch = match stream.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "log stream ended");
                        return;
                    }
                };
                let rack: RackName = match field("rack", &batch.rack)
                    .and_then(|r: RackName| check_rack(&peer_ext, &r.to_string()).map(|()| r))
                {
                    Ok(r) => r,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let lines = batch
                    .lines
                    .into_iter()
                    .map(|l| {
                        (
                            NodeNumber(l.node),
                            LogLine {
                                session: l.boot_session,
                                unix_millis: l.unix_millis,
                                text: l.text,
                            },
                        )
                    })
                    .collect();
                if batch.dropped > 0 {
                    tracing::warn!(%rack, dropped = batch.dropped, "agent dropped node log lines while buffering");
                }
                let r = ctx
                    .propose(Envelope {
                        // No key: sequence numbers restart with the agent. A batch
                        // retried after a lost ack may be stored twice, never lost.
                        idempotency_key: None,
                        command: Command::AppendLogs {
                            rack,
                            lines,
                            dropped: batch.dropped,
                        },
                    })
                    .await;
                let reply = r.map(|_| pb::LogAck {
                    sequence: batch.sequence,
                });
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
