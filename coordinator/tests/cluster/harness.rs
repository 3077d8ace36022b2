//! Replicas as separate OS processes of the real `rackboot-coordinator`
//! binary, and clients that register nodes against them while recording a
//! history.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rackboot_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::history::{History, Op, OpKind, OpResult};

/// The replica binary, built with this package's features.
pub const BIN: &str = env!("CARGO_BIN_EXE_rackboot-coordinator");

/// The test rack: a /16, room for 65k nodes.
pub const RACK: &str = "r1";

/// A seconds value from the environment, or `default`.
pub fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Raft and storage settings for every replica.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Tick in ms.
    pub tick_ms: u64,
    /// Election timeout in ticks.
    pub election_ticks: u64,
    /// Heartbeat in ticks.
    pub heartbeat_ticks: u64,
    /// Applied entries between snapshots.
    pub snapshot_every: u64,
    /// Listen IPs per replica (default: all 127.0.0.1 on free ports).
    pub ips: Option<Vec<IpAddr>>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 2_000,
            ips: None,
        }
    }
}

/// One replica process.
pub struct Proc {
    /// Replica id.
    pub id: u64,
    /// Listen address.
    pub addr: SocketAddr,
    /// Data directory.
    pub data: PathBuf,
    /// Log file (appended across restarts).
    pub log: PathBuf,
    /// The running process.
    pub child: Option<Child>,
    /// Extra environment for the next start.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments for the next start.
    pub args: Vec<String>,
    /// Start with `--join`.
    pub join: bool,
}

/// A cluster of replica processes.
pub struct Cluster {
    /// Scratch directory (kept with RACKBOOT_KEEP_TEST_DIR=1).
    pub dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
    /// Replicas by id.
    pub procs: BTreeMap<u64, Proc>,
    /// Settings.
    pub opts: Opts,
    /// Founding voters.
    pub voters: Vec<u64>,
}

fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    /// `n` founding replicas (not started).
    pub fn new(n: u64, opts: Opts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("rackboot-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut procs = BTreeMap::new();
        for id in 1..=n {
            let ip = opts
                .ips
                .as_ref()
                .and_then(|ips| ips.get(id as usize - 1).copied())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let port = if opts.ips.is_some() {
                7000
            } else {
                free_port(ip)
            };
            procs.insert(
                id,
                Proc {
                    id,
                    addr: SocketAddr::new(ip, port),
                    data: dir.path().join(format!("r{id}")),
                    log: dir.path().join(format!("r{id}.log")),
                    child: None,
                    env: Vec::new(),
                    args: Vec::new(),
                    join: false,
                },
            );
        }
        Cluster {
            dir: dir.path().to_path_buf(),
            tmp: Some(dir),
            procs,
            opts,
            voters: (1..=n).collect(),
        }
    }

    /// Define replica `id` (not started), which will start with `--join`.
    pub fn add_joiner(&mut self, id: u64) -> SocketAddr {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let addr = SocketAddr::new(ip, free_port(ip));
        self.procs.insert(
            id,
            Proc {
                id,
                addr,
                data: self.dir.join(format!("r{id}")),
                log: self.dir.join(format!("r{id}.log")),
                child: None,
                env: Vec::new(),
                args: Vec::new(),
                join: true,
            },
        );
        addr
    }

    /// Start every replica.
    pub fn start_all(&mut self) {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
    }

    /// Start (or restart) one replica.
    pub fn start(&mut self, id: u64) {
        let peers: Vec<String> = self
            .voters
            .iter()
            .map(|v| format!("{v}={}", self.procs[v].addr))
            .collect();
        let o = self.opts.clone();
        let p = self.procs.get_mut(&id).expect("replica");
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("--plaintext")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(p.addr.to_string())
            .arg("--data")
            .arg(&p.data)
            .arg("--tick-ms")
            .arg(o.tick_ms.to_string())
            .arg("--election-ticks")
            .arg(o.election_ticks.to_string())
            .arg("--heartbeat-ticks")
            .arg(o.heartbeat_ticks.to_string())
            .arg("--snapshot-every")
            .arg(o.snapshot_every.to_string());
        for peer in &peers {
            cmd.arg("--peer").arg(peer);
        }
        if p.join {
            cmd.arg("--join");
        }
        cmd.args(&p.args);
        cmd.env("RUST_LOG", "info,raft=info")
            .env("NO_COLOR", "1")
            .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        p.child = Some(cmd.spawn().expect("start rackboot-coordinator"));
    }

    /// SIGKILL one replica and reap it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.procs.get_mut(&id).and_then(|p| p.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, id: u64, sig: &str) {
        if let Some(c) = self.procs.get(&id).and_then(|p| p.child.as_ref()) {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// SIGSTOP: the process freezes (its sockets stay open, nothing answers).
    pub fn pause(&self, id: u64) {
        self.signal(id, "STOP");
    }

    /// SIGCONT.
    pub fn resume(&self, id: u64) {
        self.signal(id, "CONT");
    }

    /// The exit status, if the replica has exited (then reaped).
    pub fn exited(&mut self, id: u64) -> Option<ExitStatus> {
        let p = self.procs.get_mut(&id)?;
        let status = p.child.as_mut()?.try_wait().ok()??;
        p.child = None;
        Some(status)
    }

    /// True while the process runs.
    pub fn running(&mut self, id: u64) -> bool {
        self.exited(id);
        self.procs.get(&id).is_some_and(|p| p.child.is_some())
    }

    /// Endpoints of every replica, for clients.
    pub fn endpoints(&self) -> Arc<Endpoints> {
        Arc::new(Endpoints::new(
            self.procs.values().map(|p| (p.id, p.addr)).collect(),
        ))
    }

    /// The last lines of every replica's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in self.procs.values() {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "---- replica {} ({}) ----\n",
                p.id,
                p.log.display()
            ));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Keep the directory when asked (for post-mortems).
    pub fn keep_if_asked(&mut self) {
        if std::env::var_os("RACKBOOT_KEEP_TEST_DIR").is_some()
            && let Some(t) = self.tmp.take()
        {
            let path = t.keep();
            eprintln!("test directory kept: {}", path.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_if_asked();
        }
        for p in self.procs.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(c.id().to_string())
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// gRPC channels to every replica (lazily connected).
pub struct Endpoints {
    /// (id, address, channel).
    pub list: Vec<(u64, SocketAddr, Channel)>,
}

impl Endpoints {
    fn new(addrs: Vec<(u64, SocketAddr)>) -> Endpoints {
        let list = addrs
            .into_iter()
            .map(|(id, a)| {
                let ch = Endpoint::from_shared(format!("http://{a}"))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_millis(300))
                    .tcp_nodelay(true)
                    .connect_lazy();
                (id, a, ch)
            })
            .collect();
        Endpoints { list }
    }

    /// Channel of replica `id`.
    pub fn channel(&self, id: u64) -> Channel {
        self.list
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, _, c)| c.clone())
            .expect("known replica")
    }

    /// Index of the replica with this address.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.list.iter().position(|(_, a, _)| a.to_string() == addr)
    }

    /// One replica's status, or None within 1 s.
    pub async fn status(&self, id: u64) -> Option<pb::ClusterStatusResponse> {
        let mut c = pb::cluster_service_client::ClusterServiceClient::new(self.channel(id));
        tokio::time::timeout(
            Duration::from_secs(1),
            c.status(pb::ClusterStatusRequest {}),
        )
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
    }

    /// The leader as a replica that calls itself leader reports it (highest term).
    pub async fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for (id, _, _) in &self.list {
            if let Some(s) = self.status(*id).await
                && s.role == "leader"
                && best.is_none_or(|(t, _)| s.term > t)
            {
                best = Some((s.term, s.id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Wait for a leader.
    pub async fn wait_leader(&self, limit: Duration) -> Option<u64> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Wait until every replica in `ids` reports the same applied index (equal
    /// to its commit) and the same state digest; returns (index, digest).
    pub async fn converge(&self, ids: &[u64], limit: Duration) -> Result<(u64, String), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut views = Vec::new();
            for id in ids {
                match self.status(*id).await {
                    Some(s) => views.push(s),
                    None => {
                        last = format!("replica {id} does not answer");
                        break;
                    }
                }
            }
            if views.len() == ids.len() {
                let first = &views[0];
                let same = views.iter().all(|v| {
                    v.applied_index == first.applied_index
                        && v.commit_index == v.applied_index
                        && v.digest_index == v.applied_index
                        && v.state_digest == first.state_digest
                        && v.leader_id != 0
                });
                if same {
                    return Ok((first.applied_index, first.state_digest.clone()));
                }
                last = views
                    .iter()
                    .map(|v| {
                        format!(
                            "r{}: term {} commit {} applied {} digest {}@{}",
                            v.id,
                            v.term,
                            v.commit_index,
                            v.applied_index,
                            v.state_digest.get(..12).unwrap_or(""),
                            v.digest_index
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("replicas did not converge: {last}"))
    }

    /// Register the test rack (retrying until a leader takes it).
    pub async fn register_rack(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        let mut i = 0usize;
        while Instant::now() < deadline {
            let (_, _, ch) = &self.list[i % self.list.len()];
            i += 1;
            let mut c = pb::agent_service_client::AgentServiceClient::new(ch.clone());
            let req = pb::RegisterRequest {
                rack: Some(pb::Rack {
                    name: RACK.into(),
                    subnet: "10.0.0.0/16".into(),
                    server_address: "10.0.0.1".into(),
                    node_base: "10.0.0.10".into(),
                    gateway: String::new(),
                }),
                agent_id: "test".into(),
                agent_version: "0".into(),
            };
            match tokio::time::timeout(Duration::from_secs(2), c.register(req)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(s)) => last = s.to_string(),
                Err(_) => last = "timeout".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("rack registration failed: {last}"))
    }

    /// The final state (MAC → number) through a linearizable read on any
    /// replica that answers.
    pub async fn final_state(&self) -> Result<BTreeMap<String, u32>, String> {
        let mut last = String::new();
        for _ in 0..50 {
            for (_, _, ch) in &self.list {
                let mut c = pb::node_service_client::NodeServiceClient::new(ch.clone())
                    .max_decoding_message_size(1 << 30);
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    c.list_nodes(pb::ListNodesRequest {
                        rack: String::new(),
                    }),
                )
                .await;
                match r {
                    Ok(Ok(resp)) => {
                        let mut out = BTreeMap::new();
                        for n in resp.into_inner().nodes {
                            if n.macs.len() != 1 {
                                return Err(format!("node {} has MACs {:?}", n.number, n.macs));
                            }
                            if out.insert(n.macs[0].clone(), n.number).is_some() {
                                return Err(format!("MAC {} on two nodes", n.macs[0]));
                            }
                        }
                        return Ok(out);
                    }
                    Ok(Err(s)) => last = s.to_string(),
                    Err(_) => last = "timeout".into(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("cannot read the final state: {last}"))
    }
}

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: usize,
    /// Operations per second per client (paced).
    pub rate: f64,
    /// One op in `read_every` is a read (0 = none).
    pub read_every: u64,
    /// One op in `dup_every` re-discovers a MAC another client created (0 = none).
    pub dup_every: u64,
    /// Give up on one operation after this long.
    pub op_timeout: Duration,
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
    /// Most operations per client.
    pub max_ops: u64,
    /// Replica ids the clients may use (all when empty).
    pub targets: Vec<u64>,
    /// Replica every client starts with (else spread over the targets).
    pub prefer: Option<u64>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 8,
            rate: 30.0,
            read_every: 10,
            dup_every: 20,
            op_timeout: Duration::from_secs(30),
            attempt_timeout: Duration::from_millis(1500),
            max_ops: 1_000_000,
            targets: Vec::new(),
            prefer: None,
        }
    }
}

/// Shared between clients: acknowledged (mac, number) pairs, for reads and
/// duplicates.
#[derive(Default)]
pub struct Acked {
    list: std::sync::Mutex<Vec<(String, u32)>>,
}

impl Acked {
    fn push(&self, mac: &str, n: u32) {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((mac.to_string(), n));
    }

    fn pick(&self, r: u64) -> Option<(String, u32)> {
        let l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if l.is_empty() {
            return None;
        }
        // Mostly recent ones.
        let window = l.len().min(200);
        let i = l.len() - 1 - (r as usize % window);
        l.get(i).cloned()
    }

    fn max(&self) -> u32 {
        let l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().map(|(_, n)| *n).max().unwrap_or(0)
    }

    /// Number acknowledged.
    pub fn len(&self) -> usize {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Counters of a workload run.
#[derive(Default)]
pub struct Counters {
    /// Successful writes.
    pub acked: AtomicU64,
    /// Failed attempts (retried).
    pub retries: AtomicU64,
}

/// A tiny xorshift (tests need no more randomness than this).
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Run `w` until `stop` is cancelled; every client finishes the operation it
/// is in (bounded by `op_timeout`). Returns when all clients are done.
pub async fn run_workload(
    ep: Arc<Endpoints>,
    w: Workload,
    history: Arc<History>,
    stop: CancellationToken,
) -> (Arc<Acked>, Arc<Counters>) {
    let acked = Arc::new(Acked::default());
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    for client in 0..w.clients {
        let ep = ep.clone();
        let w = w.clone();
        let history = history.clone();
        let stop = stop.clone();
        let acked = acked.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(client, ep, w, history, stop, acked, counters).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (acked, counters)
}

async fn client_loop(
    client: usize,
    ep: Arc<Endpoints>,
    w: Workload,
    history: Arc<History>,
    stop: CancellationToken,
    acked: Arc<Acked>,
    counters: Arc<Counters>,
) {
    let mut rng = Rng::new(client as u64 + 1 + (history.now() << 8));
    let targets: Vec<usize> = if w.targets.is_empty() {
        (0..ep.list.len()).collect()
    } else {
        w.targets
            .iter()
            .filter_map(|t| ep.list.iter().position(|(id, _, _)| id == t))
            .collect()
    };
    let mut target = w
        .prefer
        .and_then(|p| {
            targets
                .iter()
                .position(|t| ep.list.get(*t).is_some_and(|(id, _, _)| *id == p))
        })
        .unwrap_or(client % targets.len());
    let interval = Duration::from_secs_f64(1.0 / w.rate);
    let mut next = Instant::now();
    let mut seq = 0u64;
    while !stop.is_cancelled() && seq < w.max_ops {
        next += interval;
        let now = Instant::now();
        if next > now {
            tokio::select! {
                _ = tokio::time::sleep(next - now) => {}
                _ = stop.cancelled() => break,
            }
        } else if now - next > Duration::from_secs(1) {
            next = now; // do not build a backlog after an outage
        }
        seq += 1;
        let r = rng.next();
        let kind = if w.read_every > 0 && r.is_multiple_of(w.read_every) {
            let number = match acked.pick(rng.next()) {
                Some((_, n)) if !rng.next().is_multiple_of(3) => n,
                _ => acked.max() + 1 + (rng.next() % 3) as u32,
            };
            OpKind::Read { number }
        } else if w.dup_every > 0 && r % w.dup_every == 1 {
            match acked.pick(rng.next()) {
                Some((mac, _)) => OpKind::Discover { mac },
                None => continue,
            }
        } else {
            OpKind::Discover {
                mac: format!(
                    "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                    client,
                    (seq >> 16) & 0xff,
                    (seq >> 8) & 0xff,
                    seq & 0xff
                ),
            }
        };
        let key = format!("c{client}-{seq}-{}", history.now());
        let op = run_op(
            &ep,
            &targets,
            &mut target,
            &w,
            &history,
            client,
            kind,
            &key,
            &counters,
        )
        .await;
        if let (OpKind::Discover { mac }, OpResult::Number(n)) = (&op.kind, &op.result) {
            acked.push(mac, *n);
            counters.acked.fetch_add(1, Ordering::Relaxed);
        }
        history.record(op);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_op(
    ep: &Endpoints,
    targets: &[usize],
    target: &mut usize,
    w: &Workload,
    history: &History,
    client: usize,
    kind: OpKind,
    key: &str,
    counters: &Counters,
) -> Op {
    let invoke = history.now();
    let deadline = Instant::now() + w.op_timeout;
    let mut attempt = 0u32;
    loop {
        let (id, _, ch) = &ep.list[targets[*target % targets.len()]];
        let attempt_at = history.now();
        let answer = attempt_once(ch.clone(), &kind, key, w.attempt_timeout).await;
        match answer {
            Ok(result) => {
                return Op {
                    client,
                    kind,
                    invoke,
                    complete: Some(history.now()),
                    result,
                    served_by: *id,
                    last_attempt: attempt_at,
                };
            }
            Err(hint) => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                let hinted = hint
                    .and_then(|h| ep.index_of(&h))
                    .and_then(|i| targets.iter().position(|t| *t == i));
                match hinted {
                    Some(t) if t != *target % targets.len() => *target = t,
                    _ => {
                        *target = (*target + 1) % targets.len();
                        tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt.min(10))))
                            .await;
                    }
                }
                if Instant::now() >= deadline {
                    return Op {
                        client,
                        kind,
                        invoke,
                        complete: None,
                        result: OpResult::Unknown,
                        served_by: 0,
                        last_attempt: attempt_at,
                    };
                }
            }
        }
    }
}

/// One attempt: the result, or Err(leader hint) when worth retrying.
async fn attempt_once(
    ch: Channel,
    kind: &OpKind,
    key: &str,
    limit: Duration,
) -> Result<OpResult, Option<String>> {
    let hint = |s: &tonic::Status| {
        s.metadata()
            .get("rackboot-leader")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match kind {
        OpKind::Discover { mac } => {
            let mut c = pb::agent_service_client::AgentServiceClient::new(ch);
            let req = pb::DiscoverNodeRequest {
                rack: RACK.into(),
                mac: mac.clone(),
                macs: Vec::new(),
                uuid: String::new(),
                idempotency_key: key.to_string(),
                ..Default::default()
            };
            match tokio::time::timeout(limit, c.discover_node(req)).await {
                Ok(Ok(n)) => Ok(OpResult::Number(n.into_inner().number)),
                Ok(Err(s)) => Err(hint(&s)),
                Err(_) => Err(None),
            }
        }
        OpKind::Read { number } => {
            let mut c = pb::node_service_client::NodeServiceClient::new(ch);
            let req = pb::GetNodeRequest { number: *number };
            match tokio::time::timeout(limit, c.get_node(req)).await {
                Ok(Ok(n)) => Ok(OpResult::Found(
                    n.into_inner().macs.first().cloned().unwrap_or_default(),
                )),
                Ok(Err(s)) if s.code() == tonic::Code::NotFound => Ok(OpResult::NotFound),
                Ok(Err(s)) => Err(hint(&s)),
                Err(_) => Err(None),
            }
        }
    }
}

/// Percentile (0..=100) of a list of durations.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Serializes the multi-process tests (two cores: they would starve each
/// other's timers).
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
