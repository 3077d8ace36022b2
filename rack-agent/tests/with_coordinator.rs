//! The agent and a one-replica coordinator in this process, on loopback
//! ports the kernel picks: a machine the rack has never seen is numbered
//! and answered within one client retry, and a rack whose coordinator is
//! gone keeps answering the nodes it knows. Real sockets and a real Raft
//! replica; no root, no namespaces. (Timers are real too: the replica keeps
//! its own clock on its own thread, so this layer does not pause tokio's;
//! the timers' logic is tested on virtual clocks in the sans-IO cores.)
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Parser;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use rackboot_agent::config::args::ServeArgs;
use rackboot_dhcp_core::Mac;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

struct Rig {
    agent: rackboot_agent::Agent,
    coordinator: Option<rackboot_coordinator::server::Coordinator>,
    coordinator_stop: CancellationToken,
    agent_stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// A coordinator, and an agent of rack `r1` following it with the
    /// first-seen policy, once the agent holds the rack's first view.
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let coordinator_stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = rackboot_coordinator::raft::ReplicaConfig::single(
            dir.path().join("coordinator"),
            addr.to_string(),
        );
        let coordinator = rackboot_coordinator::start(cfg, listener, coordinator_stop.clone())
            .await
            .unwrap();
        let cli = Cli::try_parse_from([
            "rackboot-agent",
            "--dhcp-port",
            "0",
            "--tftp-port",
            "0",
            "--no-http",
            "--syslog-port",
            "0",
        ])
        .unwrap();
        let cfg = cli
            .serve
            .into_config(
                "r1".into(),
                vec![format!("http://{addr}")],
                dir.path().join("agent"),
            )
            .unwrap();
        let agent_stop = CancellationToken::new();
        let agent = rackboot_agent::start(cfg, agent_stop.clone())
            .await
            .unwrap();
        let rig = Rig {
            agent,
            coordinator: Some(coordinator),
            coordinator_stop,
            agent_stop,
            _dir: dir,
        };
        rig.wait_for_view(|v| v.revision > 0).await;
        rig
    }

    async fn wait_for_view(&self, ok: impl Fn(&rackboot_agent_domain::view::RackView) -> bool) {
        let mut rx = self.agent.view.clone();
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|v| ok(v)))
            .await
            .expect("the agent's view never got there")
            .unwrap();
    }

    async fn stop_coordinator(&mut self) {
        self.coordinator_stop.cancel();
        if let Some(c) = self.coordinator.take() {
            let _ = c.server.await;
            let _ = c.replica_task.await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.agent_stop.cancel();
        self.coordinator_stop.cancel();
    }
}

/// A PXE client's request from `mac`.
fn request(mac: Mac, xid: u32, kind: MessageType, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    m.set_opcode(Opcode::BootRequest).set_xid(xid);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    if let Some(ip) = requested {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    }
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

/// Send `bytes` to the agent and wait up to `wait` for a reply with `xid`.
async fn exchange(agent: SocketAddr, bytes: &[u8], xid: u32, wait: Duration) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, agent).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        let m = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
        if m.xid() == xid {
            return Some(m);
        }
    }
}

const STRANGER: Mac = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_machine_is_numbered_and_answered_before_its_first_retry() {
    let rig = Rig::start().await;
    let started = Instant::now();
    let offer = exchange(
        rig.agent.dhcp_addr,
        &request(STRANGER, 0x5eed, MessageType::Discover, None),
        0x5eed,
        Duration::from_secs(4),
    )
    .await
    .expect("an OFFER for the first DISCOVER, before a PXE ROM's 4 s retry");
    let waited = started.elapsed();
    // Numbered by the coordinator, learnt through the view, and the held
    // request answered then: well inside the 3 s a request is held.
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let view = rig.agent.view.borrow().clone();
    let binding = view.bindings.get(&STRANGER).expect("numbered in the view");
    assert_eq!(offer.yiaddr(), binding.addr);
    assert!(matches!(
        offer.opts().get(OptionCode::Hostname),
        Some(DhcpOption::Hostname(h)) if *h == binding.hostname
    ));
    // And it completes its lease.
    let ack = exchange(
        rig.agent.dhcp_addr,
        &request(STRANGER, 0x5eee, MessageType::Request, Some(binding.addr)),
        0x5eee,
        Duration::from_secs(2),
    )
    .await
    .expect("an ACK");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), binding.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_coordinator_gone_known_nodes_are_still_answered() {
    let mut rig = Rig::start().await;
    let first = exchange(
        rig.agent.dhcp_addr,
        &request(STRANGER, 1, MessageType::Discover, None),
        1,
        Duration::from_secs(4),
    )
    .await
    .expect("numbered while the coordinator is up");
    rig.stop_coordinator().await;
    let again = exchange(
        rig.agent.dhcp_addr,
        &request(STRANGER, 2, MessageType::Discover, None),
        2,
        Duration::from_secs(2),
    )
    .await
    .expect("a known node is answered from the local view");
    assert_eq!(again.yiaddr(), first.yiaddr());
    // A machine nobody can number now gets silence, counted, not an
    // invented address.
    let other = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0x02]);
    let unknown_before = rig
        .agent
        .dhcp_stats
        .unknown
        .load(std::sync::atomic::Ordering::Relaxed);
    let silence = exchange(
        rig.agent.dhcp_addr,
        &request(other, 3, MessageType::Discover, None),
        3,
        Duration::from_millis(3_500),
    )
    .await;
    assert!(silence.is_none(), "no coordinator, no number: {silence:?}");
    let unknown_after = rig
        .agent
        .dhcp_stats
        .unknown
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(unknown_after, unknown_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_flooding_its_log_is_held_to_its_share() {
    let rig = Rig::start().await;
    let offer = exchange(
        rig.agent.dhcp_addr,
        &request(STRANGER, 7, MessageType::Discover, None),
        7,
        Duration::from_secs(4),
    )
    .await
    .expect("numbered");
    let syslog = rig.agent.syslog_addr.expect("syslog on");
    // The node's own address (loopback /8 in this layout).
    let from = UdpSocket::bind(SocketAddr::from((offer.yiaddr(), 0)))
        .await
        .unwrap();
    let stats = &rig.agent.syslog_stats;
    let sent = 8_000u64;
    let started = Instant::now();
    for i in 0..sent {
        let line = format!("<13>kernel: line {i}");
        from.send_to(line.as_bytes(), syslog).await.unwrap();
        if i % 100 == 0 {
            // Let the receiver keep up (the socket buffer is finite).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.received.load(relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = stats.received.load(relaxed);
    let limited = stats.rate_limited.load(relaxed);
    // The burst (5,000) plus 200 a second for as long as it took.
    let share = 5_000 + 200 * (started.elapsed().as_secs() + 1);
    assert!(
        received > share,
        "only {received} of {sent} datagrams arrived"
    );
    assert!(
        limited >= received - share,
        "{limited} of {received} lines over a share of {share}"
    );
}
