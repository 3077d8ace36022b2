//! Sends Raft messages to peer replicas over gRPC (`RaftPeer.Send`), one queue
//! and one connection per peer. A full queue or a failed send drops the
//! message: Raft retransmits what matters.

use std::collections::BTreeMap;

use protobuf::Message as PbMessage;
use rackboot_proto::v1::RaftEnvelope;
use rackboot_proto::v1::raft_peer_client::RaftPeerClient;
use raft::prelude::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const QUEUE: usize = 4096;

/// Per-peer outbound queues.
pub struct PeerSender {
    queues: BTreeMap<u64, mpsc::Sender<Vec<u8>>>,
}

impl PeerSender {
    /// Start one sender task per peer other than `me`.
    pub fn new(me: u64, peers: &BTreeMap<u64, String>, shutdown: CancellationToken) -> Self {
        let mut queues = BTreeMap::new();
        for (&id, addr) in peers {
            if id == me {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run_peer(id, addr.clone(), rx, shutdown.clone()));
            queues.insert(id, tx);
        }
        PeerSender { queues }
    }

    /// Queue a message for its destination.
    pub fn send(&self, msg: Message) {
        let Some(q) = self.queues.get(&msg.to) else {
            tracing::warn!(to = msg.to, "raft message for unknown peer dropped");
            return;
        };
        match msg.write_to_bytes() {
            Ok(bytes) => {
                if q.try_send(bytes).is_err() {
                    tracing::debug!(to = msg.to, "peer queue full; raft message dropped");
                }
            }
            Err(e) => tracing::error!(error = %e, "raft message does not encode"),
        }
    }
}

fn endpoint(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn run_peer(
    id: u64,
    addr: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shutdown: CancellationToken,
) {
    let mut client: Option<RaftPeerClient<tonic::transport::Channel>> = None;
    loop {
        let bytes = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(b) => b, None => return },
        };
        if client.is_none() {
            match tonic::transport::Endpoint::from_shared(endpoint(&addr)) {
                Ok(ep) => {
                    let ep = ep.connect_timeout(std::time::Duration::from_millis(500));
                    client = Some(RaftPeerClient::new(ep.connect_lazy()));
                }
                Err(e) => {
                    tracing::error!(peer = id, %addr, error = %e, "bad peer address");
                    continue;
                }
            }
        }
        if let Some(c) = client.as_mut() {
            let req = RaftEnvelope { message: bytes };
            if let Err(e) = c.send(req).await {
                tracing::debug!(peer = id, error = %e, "raft send failed");
            }
        }
    }
}
