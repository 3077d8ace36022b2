//! Sends Raft messages to peer replicas over gRPC (`RaftPeer.Send`), one
//! queue, task and connection per peer. A full queue or a failed send drops
//! the message (Raft retransmits what matters) and is reported back to the
//! owner: `report_unreachable`, and `report_snapshot` for snapshots, so a
//! slow or dead follower is probed instead of flooded.
//!
//! With a `source` address, outgoing connections are bound to it (the listen
//! address's IP), so each replica's peer traffic carries its own address.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use protobuf::Message as PbMessage;
use rackboot_proto::v1::RaftEnvelope;
use rackboot_proto::v1::raft_peer_client::RaftPeerClient;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{PeerReport, Request};

const QUEUE: usize = 4096;
/// Longest a message may take to be delivered.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a snapshot may take to be delivered.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message sent to a peer (snapshots are whole states).
pub const MAX_PEER_MESSAGE: usize = 1 << 30;

struct Outgoing {
    bytes: Vec<u8>,
    snapshot: bool,
}

struct Peer {
    address: String,
    queue: mpsc::Sender<Outgoing>,
}

/// Per-peer outbound queues.
pub struct PeerSender {
    me: u64,
    /// The runtime the sender tasks run on (not the owner's own).
    runtime: tokio::runtime::Handle,
    source: Option<IpAddr>,
    feedback: mpsc::Sender<Request>,
    shutdown: CancellationToken,
    peers: BTreeMap<u64, Peer>,
}

impl PeerSender {
    /// A sender with no peers yet; `feedback` receives [`PeerReport`]s. Its
    /// tasks run on the current runtime, wherever the sender is used later.
    pub fn new(
        me: u64,
        source: Option<IpAddr>,
        feedback: mpsc::Sender<Request>,
        shutdown: CancellationToken,
    ) -> Self {
        PeerSender {
            me,
            runtime: tokio::runtime::Handle::current(),
            source,
            feedback,
            shutdown,
            peers: BTreeMap::new(),
        }
    }

    /// Follow the address book: start tasks for new peers, restart those whose
    /// address changed, stop those gone.
    pub fn set_addresses(&mut self, book: &BTreeMap<u64, String>) {
        if self.peers.len() + usize::from(book.contains_key(&self.me)) == book.len()
            && self
                .peers
                .iter()
                .all(|(id, p)| book.get(id) == Some(&p.address))
        {
            return;
        }
        self.peers.retain(|id, p| book.get(id) == Some(&p.address));
        for (&id, addr) in book {
            if id == self.me || self.peers.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            self.runtime.spawn(run_peer(
                id,
                addr.clone(),
                self.source,
                rx,
                self.feedback.clone(),
                self.shutdown.clone(),
            ));
            self.peers.insert(
                id,
                Peer {
                    address: addr.clone(),
                    queue: tx,
                },
            );
        }
    }

    /// Queue a message for its destination.
    pub fn send(&self, msg: Message) {
        let Some(peer) = self.peers.get(&msg.to) else {
            tracing::debug!(
                to = msg.to,
                "raft message for a peer without address dropped"
            );
            return;
        };
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        match msg.write_to_bytes() {
            Ok(bytes) => {
                if peer.queue.try_send(Outgoing { bytes, snapshot }).is_err() {
                    tracing::debug!(to = msg.to, "peer queue full; raft message dropped");
                    let _ = self
                        .feedback
                        .try_send(Request::Report(PeerReport::Unreachable(msg.to)));
                    if snapshot {
                        let _ = self
                            .feedback
                            .try_send(Request::Report(PeerReport::Snapshot(msg.to, false)));
                    }
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
    source: Option<IpAddr>,
    mut rx: mpsc::Receiver<Outgoing>,
    feedback: mpsc::Sender<Request>,
    shutdown: CancellationToken,
) {
    let report = |r: PeerReport| {
        let _ = feedback.try_send(Request::Report(r));
    };
    let mut client: Option<RaftPeerClient<tonic::transport::Channel>> = None;
    let mut failing = false;
    loop {
        let out = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(b) => b, None => return },
        };
        if client.is_none() {
            match rackboot_proto::tls::endpoint(&endpoint(&addr)) {
                Ok(ep) => {
                    let ep = ep
                        .connect_timeout(Duration::from_millis(500))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(1))
                        .keep_alive_timeout(Duration::from_secs(2))
                        .local_address(source);
                    client = Some(
                        RaftPeerClient::new(ep.connect_lazy())
                            .max_encoding_message_size(MAX_PEER_MESSAGE),
                    );
                }
                Err(e) => {
                    tracing::error!(peer = id, %addr, error = %e, "bad peer address");
                    report(PeerReport::Unreachable(id));
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let limit = if out.snapshot {
            SNAPSHOT_TIMEOUT
        } else {
            SEND_TIMEOUT
        };
        let req = RaftEnvelope { message: out.bytes };
        let sent = tokio::time::timeout(limit, c.send(req)).await;
        match sent {
            Ok(Ok(_)) => {
                tracing::trace!(peer = id, "raft message delivered");
                if out.snapshot {
                    report(PeerReport::Snapshot(id, true));
                }
                if failing {
                    tracing::info!(peer = id, %addr, "peer reachable again");
                    failing = false;
                }
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(peer = id, %addr, error = %e, "raft send failed; peer unreachable");
                }
                failing = true;
                fail(id, out.snapshot, &mut rx, &report);
                client = None;
            }
            Err(_) => {
                if !failing {
                    tracing::warn!(peer = id, %addr, "raft send timed out; peer unreachable");
                }
                failing = true;
                fail(id, out.snapshot, &mut rx, &report);
                client = None;
            }
        }
    }
}

/// After a failed send: report, and drop what is queued (stale by the time
/// the peer is back; Raft sends fresh messages).
fn fail(id: u64, snapshot: bool, rx: &mut mpsc::Receiver<Outgoing>, report: &impl Fn(PeerReport)) {
    report(PeerReport::Unreachable(id));
    if snapshot {
        report(PeerReport::Snapshot(id, false));
    }
    while let Ok(o) = rx.try_recv() {
        if o.snapshot {
            report(PeerReport::Snapshot(id, false));
        }
    }
}
