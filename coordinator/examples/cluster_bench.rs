//! Benchmark of a local 3-replica coordinator cluster (separate processes of
//! the real binary): committed-write latency and throughput of node
//! registrations (`AgentService.DiscoverNode`, each acknowledged only after
//! Raft commit with the log fsynced on a quorum), and leader failover time
//! (SIGKILL of the leader → first successful write).
//!
//! ```text
//! cargo build --release -p rackboot-coordinator --bins --examples
//! target/release/examples/cluster_bench [SECONDS_PER_PHASE] [FAILOVERS]
//! ```
//!
//! The replica binary is looked up next to this example's directory
//! (`target/<profile>/rackboot-coordinator`) or in `RACKBOOT_COORDINATOR_BIN`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rackboot_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

type Agent = pb::agent_service_client::AgentServiceClient<Channel>;

struct Replica {
    id: u64,
    addr: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    bin: PathBuf,
    replicas: Vec<Replica>,
    channels: Vec<Channel>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Cluster {
    fn new(bin: PathBuf) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("rackboot-bench-")
            .tempdir()
            .expect("tempdir");
        let replicas: Vec<Replica> = (1..=3)
            .map(|id| Replica {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                data: dir.path().join(format!("r{id}")),
                log: dir.path().join(format!("r{id}.log")),
                child: None,
            })
            .collect();
        let channels = replicas
            .iter()
            .map(|r| {
                Endpoint::from_shared(format!("http://{}", r.addr))
                    .unwrap()
                    .connect_timeout(Duration::from_millis(200))
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
            .collect();
        let mut c = Cluster {
            bin,
            replicas,
            channels,
            _dir: dir,
        };
        for i in 0..3 {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let peers: Vec<String> = self
            .replicas
            .iter()
            .map(|r| format!("{}={}", r.id, r.addr))
            .collect();
        let r = &mut self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--plaintext",
            "--id",
            &r.id.to_string(),
            "--listen",
            &r.addr,
        ])
        .arg("--data")
        .arg(&r.data)
        .args([
            "--tick-ms",
            "50",
            "--election-ticks",
            "10",
            "--heartbeat-ticks",
            "2",
        ]);
        for p in &peers {
            cmd.args(["--peer", p]);
        }
        cmd.env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        r.child = Some(cmd.spawn().expect("start rackboot-coordinator"));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn leader(&self) -> Option<usize> {
        for (i, ch) in self.channels.iter().enumerate() {
            let mut c = pb::cluster_service_client::ClusterServiceClient::new(ch.clone());
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_secs(1),
                c.status(pb::ClusterStatusRequest {}),
            )
            .await
                && s.get_ref().role == "leader"
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_leader(&self) -> usize {
        for _ in 0..300 {
            if let Some(l) = self.leader().await {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader");
    }

    async fn wait_caught_up(&self) {
        for _ in 0..300 {
            let mut applied = Vec::new();
            for ch in &self.channels {
                let mut c = pb::cluster_service_client::ClusterServiceClient::new(ch.clone());
                if let Ok(Ok(s)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    c.status(pb::ClusterStatusRequest {}),
                )
                .await
                {
                    applied.push(s.get_ref().applied_index);
                }
            }
            if applied.len() == 3 && applied.iter().all(|a| *a == applied[0]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill(i);
        }
    }
}

fn mac(n: u64) -> String {
    format!(
        "52:55:{:02x}:{:02x}:{:02x}:{:02x}",
        (n >> 24) & 0xff,
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

async fn discover(c: &mut Agent, n: u64, limit: Duration) -> bool {
    let req = pb::DiscoverNodeRequest {
        rack: "r1".into(),
        mac: mac(n),
        macs: vec![],
        uuid: String::new(),
        idempotency_key: format!("bench-{n}"),
        ..Default::default()
    };
    matches!(
        tokio::time::timeout(limit, c.discover_node(req)).await,
        Ok(Ok(_))
    )
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// `clients` writers to the leader for `secs`; paced at `rate` writes/s in
/// total when given, else closed-loop. Returns (latencies, writes/s).
async fn phase(
    leader: Channel,
    clients: u64,
    rate: Option<f64>,
    secs: u64,
    next: Arc<AtomicU64>,
) -> (Vec<Duration>, f64) {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let mut c = Agent::new(leader.clone());
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
            // Paced clients are spread evenly over the interval, not in step.
            let mut due = Instant::now() + interval.unwrap_or_default() * k as u32 / clients as u32;
            while Instant::now() < end {
                if let Some(i) = interval {
                    due += i;
                    tokio::time::sleep_until(due.into()).await;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if discover(&mut c, n, Duration::from_secs(5)).await {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    (all, rate)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let failovers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let bin = std::env::var_os("RACKBOOT_COORDINATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .and_then(|p| p.parent())
                .unwrap()
                .join("rackboot-coordinator")
        });
    assert!(bin.exists(), "{} not found: build it first", bin.display());
    let mut cluster = Cluster::new(bin);
    let l = cluster.wait_leader().await;
    let mut agent = Agent::new(cluster.channels[l].clone());
    agent
        .register(pb::RegisterRequest {
            rack: Some(pb::Rack {
                name: "r1".into(),
                subnet: "10.0.0.0/8".into(),
                server_address: "10.0.0.1".into(),
                node_base: "10.0.0.10".into(),
                gateway: String::new(),
            }),
            agent_id: "bench".into(),
            agent_version: "0".into(),
        })
        .await
        .expect("register rack");

    let next = Arc::new(AtomicU64::new(1));
    println!("| load | writes/s | p50 | p99 | p99.9 |");
    println!("|---|---:|---:|---:|---:|");
    for (label, clients, rate) in [
        ("1 client, sequential", 1, None),
        ("8 clients, paced 200 writes/s", 8, Some(200.0)),
        ("8 clients, closed loop", 8, None),
        ("32 clients, closed loop", 32, None),
    ] {
        let leader = cluster.channels[cluster.wait_leader().await].clone();
        let (mut lat, rate) = phase(leader, clients, rate, secs, next.clone()).await;
        println!(
            "| {label} | {rate:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
            pct(&mut lat, 50.0).as_secs_f64() * 1e3,
            pct(&mut lat, 99.0).as_secs_f64() * 1e3,
            pct(&mut lat, 99.9).as_secs_f64() * 1e3,
        );
    }

    // Failover: kill the leader, then write (to every replica in turn, 200 ms
    // per attempt) until one write succeeds.
    let mut times = Vec::new();
    for _ in 0..failovers {
        cluster.wait_caught_up().await;
        let l = cluster.wait_leader().await;
        let killed = Instant::now();
        cluster.kill(l);
        let mut i = (l + 1) % 3;
        loop {
            let mut c = Agent::new(cluster.channels[i].clone());
            let n = next.fetch_add(1, Ordering::Relaxed);
            if discover(&mut c, n, Duration::from_millis(200)).await {
                break;
            }
            i = (i + 1) % 3;
            if i == l {
                i = (i + 1) % 3;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                panic!("no write within 30 s of killing the leader");
            }
        }
        times.push(killed.elapsed());
        cluster.start(l);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let max = times.iter().max().copied().unwrap_or_default();
    println!();
    println!(
        "failover (SIGKILL leader → first acknowledged write), {} runs: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        times.len(),
        pct(&mut times, 50.0).as_secs_f64() * 1e3,
        pct(&mut times, 99.0).as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}
