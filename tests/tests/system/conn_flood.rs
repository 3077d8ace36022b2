//! A connection flood against the coordinator's gRPC port: one host opens
//! far more TCP connections than any client needs and never speaks gRPC.
//! The coordinator keeps [`PER_SOURCE`] of them, closes the rest at once
//! and counts them (`rackboot_coordinator_grpc_connections_refused_total
//! {reason="per_source"}`), and goes on serving everyone else. The ones it
//! kept never speak, so it closes them too once the greeting deadline
//! (`conncap::GREETING_TIMEOUT`, 10 s) has passed (`reason="silent"`), and
//! the flooding address may connect again. Loopback only (127.0.0.2 is the
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
/// How long a connection may stay silent (`conncap::GREETING_TIMEOUT`).
const GREETING: Duration = Duration::from_secs(10);

/// One value of the coordinator's `/metrics` (curl), by its full sample
/// name with labels; 0 when absent.
fn metric(port: u16, sample: &str) -> Result<f64> {
    for line in daemon::loopback_metrics(port)?.lines() {
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
    wait_metric_for(port, sample, Duration::from_secs(20), ok)
}

/// Polls `metric` until `ok` holds, at most `limit`; the last value.
fn wait_metric_for(
    port: u16,
    sample: &str,
    limit: Duration,
    ok: impl Fn(f64) -> bool,
) -> Result<f64> {
    let deadline = Instant::now() + limit;
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
/// waiting: reads what the server sent (it may speak first: HTTP/2
/// SETTINGS) up to the end of stream; a connection it keeps has nothing
/// more to read.
fn closed_by_peer(s: &mut TcpStream) -> Result<bool> {
    s.set_nonblocking(true)?;
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e.into()),
        }
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
    let silent = r#"rackboot_coordinator_grpc_connections_refused_total{reason="silent"}"#;
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
    // (Counted before the greeting deadline, or the kept ones would be
    // closed as silent too.)
    let counted_after = t0.elapsed();
    ensure!(
        counted_after < GREETING,
        "the test was too slow to see the kept connections before the greeting deadline ({counted_after:?})"
    );
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

    // The kept connections never speak: the coordinator closes them once
    // the greeting deadline has passed, and frees their slots.
    let silent_closed = wait_metric_for(
        metrics_port,
        silent,
        GREETING + Duration::from_secs(20),
        |v| v >= PER_SOURCE as f64,
    )?;
    let silent_secs = t0.elapsed().as_secs_f64();
    ensure!(
        silent_closed == PER_SOURCE as f64,
        "the {PER_SOURCE} silent connections should be closed after {GREETING:?}, the metric says {silent_closed}"
    );
    let mut closed_silent = 0;
    for s in &mut flood {
        if closed_by_peer(s)? {
            closed_silent += 1;
        }
    }
    ensure!(
        closed_silent == FLOOD,
        "every flood connection should be closed by now, {closed_silent} of {FLOOD} are"
    );
    let open_after = wait_metric(metrics_port, open_gauge, |v| v == 0.0)?;
    ensure!(
        open_after == 0.0,
        "connections open after the silent ones were closed: {open_after}"
    );
    drop(flood);
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
         {cli_secs:.2} s during the flood; the {PER_SOURCE} kept closed as silent by \
         {silent_secs:.1} s; 0 open after it"
    );
    Ok(())
}

/// A client that spoke HTTP/2 and then froze (its kernel still acknowledges
/// TCP, but it never answers a PING) is closed by the server's keepalive: a PING after
/// `conncap::KEEPALIVE_INTERVAL` (20 s) of silence, closed when no ACK came
/// within `KEEPALIVE_TIMEOUT` (10 s). Not by the greeting deadline: it
/// spoke.
#[test]
fn a_frozen_client_is_closed_by_the_keepalive() -> Result<()> {
    use std::io::Write;
    let metrics_port = free_loopback_port()?;
    let coord = LoopbackCoordinator::start_with(&[
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ])?;
    let open_gauge = "rackboot_coordinator_grpc_connections";
    let silent = r#"rackboot_coordinator_grpc_connections_refused_total{reason="silent"}"#;
    let mut frozen = connect_from([127, 0, 0, 3], coord.addr)?;
    // The HTTP/2 client preface and an empty SETTINGS frame; then nothing,
    // not even the SETTINGS ACK.
    frozen.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")?;
    frozen.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])?;
    let t0 = Instant::now();
    let open = wait_metric(metrics_port, open_gauge, |v| v >= 1.0)?;
    ensure!(
        open >= 1.0,
        "the connection should be open, the gauge says {open}"
    );
    // Past the greeting deadline it is still open: it spoke.
    std::thread::sleep(GREETING + Duration::from_secs(2));
    ensure!(
        !closed_by_peer(&mut frozen)?,
        "a client that spoke must not be closed by the greeting deadline"
    );
    ensure!(
        metric(metrics_port, silent)? == 0.0,
        "not counted as silent"
    );
    // Closed by the keepalive: PING at 20 s, no ACK by 30 s.
    let closed_at = loop {
        if closed_by_peer(&mut frozen)? {
            break t0.elapsed();
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "the frozen connection is still open after 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    ensure!(
        closed_at >= Duration::from_secs(25),
        "closed at {closed_at:?}: before the keepalive could have fired"
    );
    let open_after = wait_metric(metrics_port, open_gauge, |v| v == 0.0)?;
    ensure!(
        open_after == 0.0,
        "connections open after it was closed: {open_after}"
    );
    println!(
        "keepalive: a client that sent its preface and froze was closed after {:.1} s",
        closed_at.as_secs_f64()
    );
    Ok(())
}
