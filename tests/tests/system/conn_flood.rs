//! A connection flood against the coordinator's gRPC port: one host opens
//! far more TCP connections than any client needs and never speaks gRPC.
//! The coordinator keeps [`PER_SOURCE`] of them, closes the rest at once
//! and counts them (`rackboot_coordinator_grpc_connections_refused_total
//! {reason="per_source"}`), and goes on serving everyone else; once the
//! flood ends, its slots are free again. Loopback only (127.0.0.2 is the
//! flooding host), no root.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{self, LoopbackCoordinator, free_loopback_port};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Connections the flooding host opens.
const FLOOD: usize = 1_000;
/// The coordinator's per-address cap (`conncap::MAX_PER_SOURCE`).
const PER_SOURCE: usize = 256;

/// One value of the coordinator's `/metrics` (curl), by its full sample
/// name with labels; 0 when absent.
fn metric(port: u16, sample: &str) -> Result<f64> {
    let out = daemon::run_with_timeout(
        {
            let mut c = std::process::Command::new("curl");
            c.args(["-sS", "--fail", "--max-time", "5"])
                .arg(format!("http://127.0.0.1:{port}/metrics"));
            c
        },
        Duration::from_secs(10),
    )?
    .success()?;
    for line in out.stdout.lines() {
        if let Some(v) = line.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')) {
            return v
                .trim()
                .parse()
                .with_context(|| format!("value of {sample}: {line}"));
        }
    }
    Ok(0.0)
}

/// Polls `metric` until `ok` holds, at most 20 s; the last value.
fn wait_metric(port: u16, sample: &str, ok: impl Fn(f64) -> bool) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric(port, sample)?;
        if ok(v) || Instant::now() > deadline {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TCP connection from `from` (any port) to `to`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SockAddr::from(SocketAddr::from((from, 0))))?;
    s.connect_timeout(&SockAddr::from(to), Duration::from_secs(5))
        .with_context(|| format!("connecting to {to}"))?;
    Ok(s.into())
}

/// Whether the coordinator closed `s` (end of stream or reset), without
/// waiting: a connection it keeps has nothing to read.
fn closed_by_peer(s: &mut TcpStream) -> Result<bool> {
    s.set_nonblocking(true)?;
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Ok(true),
        Ok(_) => Ok(false), // the server spoke first (HTTP/2 SETTINGS): kept
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(true),
        Err(e) => Err(e.into()),
    }
}

#[test]
fn connection_flood_from_one_address_leaves_the_coordinator_serving() -> Result<()> {
    let metrics_port = free_loopback_port()?;
    let coord = LoopbackCoordinator::start_with(&[
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ])?;
    let refused = r#"rackboot_coordinator_grpc_connections_refused_total{reason="per_source"}"#;
    let open_gauge = "rackboot_coordinator_grpc_connections";

    let t0 = Instant::now();
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect_from([127, 0, 0, 2], coord.addr)?);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let expected = (FLOOD - PER_SOURCE) as f64;
    let seen = wait_metric(metrics_port, refused, |v| v >= expected)?;
    ensure!(
        seen == expected,
        "{FLOOD} connections from one address: {expected} should be refused per source, the metric says {seen}"
    );
    let mut closed = 0;
    for s in &mut flood {
        if closed_by_peer(s)? {
            closed += 1;
        }
    }
    ensure!(
        closed == FLOOD - PER_SOURCE,
        "the coordinator should keep {PER_SOURCE} of {FLOOD} and close the rest, closed {closed}"
    );

    // Everyone else is still served, through the flood.
    let t1 = Instant::now();
    let status = daemon::cli(
        None,
        &["--coordinator", &coord.url(), "cluster", "status"],
        Duration::from_secs(30),
    )?
    .success()?;
    let cli_secs = t1.elapsed().as_secs_f64();
    ensure!(
        status.stdout.contains("leader 1"),
        "cluster status during the flood:\n{status}"
    );
    let open = metric(metrics_port, open_gauge)?;
    ensure!(
        open >= PER_SOURCE as f64,
        "the gauge should show the {PER_SOURCE} kept connections, shows {open}"
    );

    // The flood ends: its slots are free again.
    drop(flood);
    let open_after = wait_metric(metrics_port, open_gauge, |v| v == 0.0)?;
    ensure!(
        open_after == 0.0,
        "connections open after the flood closed: {open_after}"
    );
    let again = connect_from([127, 0, 0, 2], coord.addr)?;
    let mut again = again;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        !closed_by_peer(&mut again)?,
        "the flooding address may connect again once its connections are closed"
    );
    println!(
        "conn_flood: {FLOOD} connections from 127.0.0.2 in {connect_secs:.2} s: {PER_SOURCE} kept, \
         {closed} closed at once (metric {seen}); cluster status from 127.0.0.1 answered in \
         {cli_secs:.2} s during the flood; 0 open after it"
    );
    Ok(())
}
