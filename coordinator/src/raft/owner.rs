//! The owner of the [`Core`]: a named OS thread (`raft-owner`) running a
//! current-thread runtime that ticks the core, feeds it requests and peer
//! messages, drains its `Ready` after every input, and answers the waiting
//! callers.
//!
//! Invariants: only this thread touches the `Core` and its storage; its
//! storage writes block on fsync, so it never shares a thread with the
//! runtime that serves gRPC and sends to peers. It stops when the shutdown
//! token is cancelled (recording how far it applied), when every request
//! sender is gone, or when storage fails; then it answers every waiting
//! caller with [`ReplicaError::Stopped`] and cancels the token.
//!
//! Must not depend on: gRPC handlers, the blob store or the wall clock
//! beyond the process start (the incarnation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackboot_state::{Outcome, StateError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::peers::PeerSender;
use super::pending::Event;
use super::replica_core::{Core, CoreConfig, ReplicaFatal, Sink};
use super::storage::RaftStore;
use super::{PROPOSE_TIMEOUT, Replica, ReplicaConfig, ReplicaError, ReplicaStatus, Request};

type WriteReply = oneshot::Sender<Result<Result<Outcome, StateError>, ReplicaError>>;
type DoneReply = oneshot::Sender<Result<(), ReplicaError>>;

/// Most requests handled before the `Ready` is drained again.
const BATCH: usize = 1024;

/// Name of the thread that owns the [`Core`].
pub const OWNER_THREAD: &str = "raft-owner";

struct Owner {
    core: Core,
    peers: PeerSender,
    writes: HashMap<u64, WriteReply>,
    dones: HashMap<u64, DoneReply>,
    revision: watch::Sender<u64>,
    status: watch::Sender<ReplicaStatus>,
    tick: Duration,
}

/// A number that differs between starts of this process.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// Start the replica on its own thread ([`OWNER_THREAD`]). Returns its
/// handle and a task that ends with the thread: when `shutdown` is cancelled
/// or storage fails.
pub fn spawn(
    cfg: ReplicaConfig,
    shutdown: CancellationToken,
) -> Result<(Replica, JoinHandle<Result<(), ReplicaFatal>>), ReplicaFatal> {
    spawn_with_source(cfg, None, shutdown)
}

/// [`spawn`], binding outgoing peer connections to `source` (the listen
/// address's IP), so that peer links can be told apart by address.
pub fn spawn_with_source(
    cfg: ReplicaConfig,
    source: Option<std::net::IpAddr>,
    shutdown: CancellationToken,
) -> Result<(Replica, JoinHandle<Result<(), ReplicaFatal>>), ReplicaFatal> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ReplicaFatal::DataDir {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    let store = RaftStore::open(&cfg.data_dir.join("raft.redb"))?;
    let tick_ms = cfg.tick.as_millis().max(1) as u64;
    let core_cfg = CoreConfig {
        id: cfg.id,
        peers: cfg.peers.clone(),
        election_ticks: cfg.election_ticks,
        heartbeat_ticks: cfg.heartbeat_ticks,
        snapshot_every: cfg.snapshot_every,
        join: cfg.join,
        request_ticks: 2 * PROPOSE_TIMEOUT.as_millis() as u64 / tick_ms,
    };
    let core = Core::new(core_cfg, store, super::faults::from_env(), incarnation())?;
    let (tx, rx) = mpsc::channel(4096);
    let applied = core.applied();
    let status0 = core.status();
    let (revision, revision_rx) = watch::channel(status0.revision);
    let (status, status_rx) = watch::channel(status0);
    let handle = Replica {
        tx: tx.clone(),
        proposals: Arc::default(),
        applied,
        revision: revision_rx,
        status: status_rx,
        digest: Arc::new(Mutex::new((0, String::new()))),
        shutdown: shutdown.clone(),
    };
    let mut peers = PeerSender::new(cfg.id, source, tx, shutdown.clone());
    peers.set_addresses(core.addresses());
    let owner = Owner {
        core,
        peers,
        writes: HashMap::new(),
        dones: HashMap::new(),
        revision,
        status,
        tick: cfg.tick,
    };
    // The owner gets a thread of its own: its storage writes block (fsync),
    // and nothing else — peer senders, gRPC handlers waiting for an outcome —
    // may wait behind them on a shared worker thread.
    let (done, outcome) = oneshot::channel();
    std::thread::Builder::new()
        .name(OWNER_THREAD.into())
        .spawn(move || {
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                owner.run_on_own_runtime(rx, shutdown)
            }));
            let _ = done.send(ended);
        })
        .map_err(ReplicaFatal::OwnerThread)?;
    // The returned task ends as the thread does: with its result, or with
    // its panic (a `JoinError` to whoever awaits it).
    let task = tokio::spawn(async move {
        match outcome.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => std::panic::resume_unwind(Box::new(
                "the raft-owner thread ended without an outcome",
            )),
        }
    });
    Ok((handle, task))
}

impl Owner {
    /// Run on a current-thread runtime of this (the owner's) thread.
    fn run_on_own_runtime(
        self,
        rx: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) -> Result<(), ReplicaFatal> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|source| ReplicaFatal::DataDir {
                path: "(replica runtime)".to_string(),
                source,
            })?;
        rt.block_on(self.run(rx, shutdown))
    }
}

impl Owner {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) -> Result<(), ReplicaFatal> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = ticker.tick() => self.core.tick(),
                req = rx.recv() => match req {
                    None => break Ok(()),
                    Some(req) => {
                        self.handle(req);
                        // Batch whatever else is queued into this Ready.
                        let mut n = 1;
                        while n < BATCH {
                            let Ok(req) = rx.try_recv() else { break };
                            self.handle(req);
                            n += 1;
                        }
                    }
                },
            }
            let mut sink = Answer {
                peers: &self.peers,
                writes: &mut self.writes,
                dones: &mut self.dones,
            };
            if let Err(e) = self.core.handle_ready(&mut sink) {
                tracing::error!(error = %e, "replica failed; stopping");
                break Err(e);
            }
            self.peers.set_addresses(self.core.addresses());
            self.publish();
        };
        if result.is_ok() {
            // A clean stop records how far it applied, so an offline backup
            // (`--export-state`) of this data directory has every entry.
            self.core.persist_commit();
        }
        for (_, reply) in self.writes.drain() {
            let _ = reply.send(Err(ReplicaError::Stopped));
        }
        for (_, reply) in self.dones.drain() {
            let _ = reply.send(Err(ReplicaError::Stopped));
        }
        shutdown.cancel();
        result
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Propose { envelope, reply } => match self.core.propose(envelope) {
                Ok(id) => {
                    self.writes.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::Read { reply } => match self.core.read_index() {
                Ok(id) => {
                    self.dones.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::ChangeMembers { change, reply } => match self.core.change_members(change) {
                Ok(id) => {
                    self.dones.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::TransferLeader(to) => self.core.transfer_leader(to),
            Request::Step(msg) => self.core.step(msg),
            Request::Report(r) => self.core.report(r),
        }
    }

    fn publish(&mut self) {
        let next = self.core.status();
        let rev = next.revision;
        self.revision.send_if_modified(|r| {
            let changed = *r != rev;
            *r = rev;
            changed
        });
        self.status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}

/// Sends messages to peers and answers callers as the core produces them.
struct Answer<'a> {
    peers: &'a PeerSender,
    writes: &'a mut HashMap<u64, WriteReply>,
    dones: &'a mut HashMap<u64, DoneReply>,
}

impl Sink for Answer<'_> {
    fn send(&mut self, msg: raft::prelude::Message) {
        self.peers.send(msg);
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Write { req, result } => {
                if let Some(reply) = self.writes.remove(&req) {
                    let _ = reply.send(result);
                }
            }
            Event::Done { req, result } => {
                if let Some(reply) = self.dones.remove(&req) {
                    let _ = reply.send(result);
                }
            }
        }
    }
}
