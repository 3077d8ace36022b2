//! [`run`]: one storm from its arguments to its [`StormOutcome`]: checks
//! the flags, starts the floods, powers the clients on (through the DHCP
//! driver, or straight to their transfers on `run_sharded`'s threads with
//! `--tftp-only`), and collects every client's outcome into the report.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::args::StormArgs;
use crate::driver::dhcp::{dhcp_socket, dhcp_storm};
use crate::driver::{boot_client, pick};
use crate::error::{StormError, ensure};
use crate::flood::{dhcp_flood, tftp_flood};
use crate::mac::parse_mac;
use crate::report::{ClientOutcome, Report};
use crate::shard::{ClientTask, run_sharded};

/// What a flood sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FloodStats {
    /// Packets sent.
    pub sent: u64,
    /// From the first send to the last.
    pub took: Duration,
}

impl FloodStats {
    /// Packets per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// What a storm that ran produced. Failed boots are in the report, not an
/// error: a storm that boots nobody still ran.
#[derive(Debug)]
pub struct StormOutcome {
    /// Every client's result and the aggregates.
    pub report: Report,
    /// The DHCPDISCOVER flood (`--flood`), if any.
    pub dhcp_flood: Option<FloodStats>,
    /// The unacknowledged-RRQ flood (`--tftp-flood`), if any.
    pub tftp_flood: Option<FloodStats>,
}

/// Run the storm `args` describe until every client has booted or failed
/// (or the storm's deadline), and the floods have ended.
///
/// Needs a tokio runtime with timers and I/O. Errors are for flags that
/// cannot work together and for the emulator's own sockets and threads.
pub async fn run(args: &StormArgs) -> Result<StormOutcome, StormError> {
    ensure(args.clients > 0, || "--clients must be at least 1".into())?;
    ensure(args.time_scale > 0.0, || {
        "--time-scale must be positive".into()
    })?;
    ensure(!args.tftp_only || args.file.is_some(), || {
        "--tftp-only needs --file NAME".into()
    })?;
    let base = parse_mac(&args.mac_base)?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.deadline_secs);
    let (done_tx, mut done_rx) = mpsc::channel::<ClientOutcome>(args.clients);
    let bind_ip = args.bind.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let sources: Vec<Ipv4Addr> = match args.source_range {
        Some(net) => {
            let hosts: Vec<Ipv4Addr> = net.hosts().take(65_536).collect();
            ensure(!hosts.is_empty(), || {
                format!("--source-range {net} has no host addresses")
            })?;
            hosts
        }
        None => vec![bind_ip],
    };
    let sources = Arc::new(sources);

    ensure(args.tftp_flood == 0 || args.file.is_some(), || {
        "--tftp-flood needs --file NAME".into()
    })?;
    let flood_lead = if args.flood > 0 || args.tftp_flood > 0 {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    let tftp_flood = match (&args.file, args.tftp_flood) {
        (Some(file), n) if n > 0 => Some(tokio::spawn(tftp_flood(
            args.flood_from.unwrap_or(bind_ip),
            SocketAddr::V4(SocketAddrV4::new(args.server, args.tftp_port)),
            file.clone(),
            n,
            args.flood_rate.max(1),
            deadline,
        ))),
        _ => None,
    };
    let mut sharded = None;
    if args.tftp_only {
        let mut clients: Vec<ClientTask> = Vec::with_capacity(args.clients);
        for i in 0..args.clients {
            let start = t0 + flood_lead + Duration::from_millis(args.ripple_ms * i as u64);
            clients.push(Box::pin(boot_client(
                args.clone(),
                i,
                start,
                None,
                deadline,
                pick(&sources, i),
                done_tx.clone(),
            )));
        }
        let threads = match args.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        sharded = Some(tokio::spawn(run_sharded(clients, threads)));
    } else {
        let socket = dhcp_socket(bind_ip, args.dhcp_client_port).await?;
        tokio::spawn(dhcp_storm(
            args.clone(),
            base,
            socket,
            t0 + flood_lead,
            deadline,
            sources.clone(),
            done_tx.clone(),
        ));
    }
    let flood = if args.flood > 0 {
        let socket = dhcp_socket(args.flood_from.unwrap_or(bind_ip), 0).await?;
        Some(tokio::spawn(dhcp_flood(
            socket,
            SocketAddr::V4(SocketAddrV4::new(args.server, args.dhcp_port)),
            args.flood,
            args.flood_rate.max(1),
            deadline,
        )))
    } else {
        None
    };
    drop(done_tx);
    let mut report = Report::new(args.clients, args.transport.name());
    while let Some(outcome) = done_rx.recv().await {
        report.add(outcome);
    }
    report.finish(t0.elapsed());
    if let Some(sharded) = sharded {
        sharded.await??;
    }
    let stats = |(sent, took): (u64, Duration)| FloodStats { sent, took };
    let dhcp_flood = match flood {
        Some(flood) => Some(stats(flood.await.unwrap_or_default())),
        None => None,
    };
    let tftp_flood = match tftp_flood {
        Some(flood) => Some(stats(flood.await.unwrap_or_default())),
        None => None,
    };
    Ok(StormOutcome {
        report,
        dhcp_flood,
        tftp_flood,
    })
}
