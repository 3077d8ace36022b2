//! The whole agent in this process, on loopback ports the kernel picks, with
//! no coordinator reachable: what its flags promise, checked without root or
//! network namespaces.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use clap::Parser;
use rackboot_agent::config::args::ServeArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// An agent started from `flags` (plus kernel-chosen DHCP and TFTP ports),
/// following a coordinator nobody answers for.
async fn agent(
    dir: &tempfile::TempDir,
    flags: &[&str],
) -> (rackboot_agent::Agent, CancellationToken) {
    let mut argv = vec!["rackboot-agent", "--dhcp-port", "0", "--tftp-port", "0"];
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(argv).unwrap();
    let cfg = cli
        .serve
        .into_config(
            "r1".into(),
            vec!["http://127.0.0.1:9".into()],
            dir.path().join("agent"),
        )
        .unwrap();
    let shutdown = CancellationToken::new();
    let agent = rackboot_agent::start(cfg, shutdown.clone()).await.unwrap();
    (agent, shutdown)
}

/// `GET path` over HTTP/1.1: (status line, body).
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

#[tokio::test]
async fn metrics_listener_serves_metrics_when_http_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, shutdown) = agent(
        &dir,
        &[
            "--no-http",
            "--no-syslog",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    assert!(agent.http_addr.is_none(), "--no-http serves no HTTP");
    let addr = agent.metrics_addr.expect("a metrics listener");
    let (status, body) = get(addr, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    for family in [
        "# TYPE rackboot_agent_dhcp_received counter",
        "rackboot_agent_boot_phase_seconds_count{phase=\"dhcp_offer\"} 0",
        "# EOF",
    ] {
        assert!(body.contains(family), "{family:?} missing from:\n{body}");
    }
    // Operators' things only: no boot files; boot-info names its node.
    let (status, _) = get(addr, "/ipxe/52-54-00-00-00-99.ipxe").await;
    assert!(status.contains(" 404 "), "{status}");
    let (status, body) = get(addr, "/boot-info").await;
    assert!(
        status.contains(" 400 ") && body.contains("mac="),
        "{status} {body}"
    );
    shutdown.cancel();
    for t in agent.tasks {
        let _ = t.await;
    }
}

#[tokio::test]
async fn metrics_are_never_on_the_boot_port() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, shutdown) = agent(&dir, &["--http-port", "0", "--no-syslog"]).await;
    assert!(agent.metrics_addr.is_none());
    let http = agent.http_addr.expect("HTTP on");
    let (status, body) = get(http, "/metrics").await;
    assert!(status.contains(" 404 "), "{status}");
    assert!(!body.contains("rackboot_agent_dhcp_received"), "{body}");
    shutdown.cancel();
    for t in agent.tasks {
        let _ = t.await;
    }
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(to).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_holding_connections_open_does_not_stop_http_boot() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, shutdown) = agent(
        &dir,
        &[
            "--no-syslog",
            "--http-port",
            "0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let addr = agent.http_addr.expect("HTTP");
    // 1,100 idle connections from one host: the first 64 are admitted and
    // held, the rest closed at once.
    let mut held = Vec::new();
    for _ in 0..1_100 {
        if let Ok(s) = connect_from([127, 0, 0, 2], addr).await {
            held.push(s);
        }
    }
    let mut closed = 0;
    for s in &mut held {
        let mut b = [0u8; 1];
        // An admitted idle connection stays open (the read times out here);
        // a refused one reads EOF or a reset at once.
        if tokio::time::timeout(std::time::Duration::from_millis(20), s.read(&mut b))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert_eq!(held.len() - closed, 64, "admitted from one host");
    // Another host fetches at once.
    let started = std::time::Instant::now();
    let mut s = connect_from([127, 0, 0, 3], addr).await.unwrap();
    s.write_all(
        b"GET /ipxe/52-54-00-00-00-99.ipxe HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let refused =
        format!("rackboot_agent_http_connections_closed_total{{reason=\"per_source\"}} {closed}");
    assert!(held.len() > 500, "only {} connections made", held.len());
    let (_, metrics) = get(agent.metrics_addr.expect("metrics"), "/metrics").await;
    assert!(
        metrics.contains(&refused),
        "{refused} missing from:\n{metrics}"
    );
    shutdown.cancel();
}
