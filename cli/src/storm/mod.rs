//! `rackboot storm`: a boot-storm emulator. N emulated PXE ROM clients, each
//! with its own MAC, do what real firmware does — DHCP DISCOVER/REQUEST with
//! PXE options and the firmware's retry timers, then TFTP with a tsize probe,
//! abort, and the real request — and fail their boot where a ROM would.
//!
//! The client behaviour is sans-IO (`dhcp_client`, `tftp_client`); this
//! module only moves bytes and time.

pub mod dhcp_client;
mod report;
pub mod tftp_client;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use dhcp_client::DhcpExchange;
use report::{ClientOutcome, Report};
use tftp_client::{ClientConfig, Fetch, FetchResult, Sock};

/// Arguments of `storm`.
#[derive(clap::Args, Debug, Clone)]
pub struct StormArgs {
    /// The agent's (or reference server's) address.
    #[arg(long)]
    pub server: Ipv4Addr,
    /// Number of emulated clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Delay between client power-ons (0 = all at once).
    #[arg(long, default_value_t = 0)]
    pub ripple_ms: u64,
    /// Skip DHCP: every client fetches --file straight away.
    #[arg(long, conflicts_with = "dhcp_only")]
    pub tftp_only: bool,
    /// Only DHCP: stop once every client is bound.
    #[arg(long)]
    pub dhcp_only: bool,
    /// File to fetch with --tftp-only, or instead of the DHCP boot file when given.
    #[arg(long)]
    pub file: Option<String>,
    /// A second, larger file every client fetches after the first (e.g. a kernel).
    #[arg(long)]
    pub second_file: Option<String>,
    /// Server DHCP port.
    #[arg(long, default_value_t = 67)]
    pub dhcp_port: u16,
    /// Local DHCP client port (68 as real clients; 0 = ephemeral, for loopback tests).
    #[arg(long, default_value_t = 68)]
    pub dhcp_client_port: u16,
    /// Server TFTP port.
    #[arg(long, default_value_t = 69)]
    pub tftp_port: u16,
    /// Local address for the clients' sockets (default: any).
    #[arg(long)]
    pub bind: Option<Ipv4Addr>,
    /// TFTP block size requested.
    #[arg(long, default_value_t = 1456)]
    pub blksize: u16,
    /// TFTP window size requested (1 = lockstep, as PXE ROMs).
    #[arg(long, default_value_t = 1)]
    pub windowsize: u16,
    /// Do not probe the size first.
    #[arg(long)]
    pub no_probe: bool,
    /// Multiply every firmware timer by this (0.1 = ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Silence after which a client re-ACKs (ms, before --time-scale).
    #[arg(long, default_value_t = 1000)]
    pub ack_timeout_ms: u64,
    /// Re-ACKs before a client's boot fails.
    #[arg(long, default_value_t = 6)]
    pub ack_retries: u32,
    /// First MAC; client i uses it + i.
    #[arg(long, default_value = "52:54:00:00:00:00")]
    pub mac_base: String,
    /// Give up on the whole storm after this long.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Expected blake3 of the first file (checked for every client).
    #[arg(long)]
    pub expect_blake3: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_mac(s: &str) -> anyhow::Result<u64> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    anyhow::ensure!(parts.len() == 6, "--mac-base {s}: expected six hex bytes");
    let mut v = 0u64;
    for p in parts {
        v = (v << 8)
            | u64::from(u8::from_str_radix(p, 16).with_context(|| format!("--mac-base {s}"))?);
    }
    Ok(v)
}

fn mac_bytes(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Run the storm and print the report.
pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.time_scale > 0.0, "--time-scale must be positive");
    if args.tftp_only && args.file.is_none() {
        anyhow::bail!("--tftp-only needs --file NAME");
    }
    let base = parse_mac(&args.mac_base)?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.deadline_secs);
    let (done_tx, mut done_rx) = mpsc::channel::<ClientOutcome>(args.clients);
    let bind_ip = args.bind.unwrap_or(Ipv4Addr::UNSPECIFIED);

    if args.tftp_only {
        for i in 0..args.clients {
            let start = t0 + Duration::from_millis(args.ripple_ms * i as u64);
            tokio::spawn(boot_client(
                args.clone(),
                i,
                start,
                None,
                deadline,
                bind_ip,
                done_tx.clone(),
            ));
        }
    } else {
        let socket = dhcp_socket(bind_ip, args.dhcp_client_port).await?;
        tokio::spawn(dhcp_storm(
            args.clone(),
            base,
            socket,
            t0,
            deadline,
            bind_ip,
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    let mut report = Report::new(args.clients);
    while let Some(outcome) = done_rx.recv().await {
        report.add(outcome);
    }
    report.finish(t0.elapsed());
    if args.json {
        say!("{}", report.json());
    } else {
        say!("{}", report.table(&args).trim_end());
    }
    if report.failed() > 0 {
        std::process::exit(2);
    }
    Ok(())
}

async fn dhcp_socket(ip: Ipv4Addr, port: u16) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((ip, port)).into())
        .with_context(|| format!("binding the DHCP client socket {ip}:{port} (port 68 needs root; use --dhcp-client-port 0 on loopback)"))?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// All DHCP exchanges on one socket, demultiplexed by xid.
async fn dhcp_storm(
    args: StormArgs,
    mac_base: u64,
    socket: UdpSocket,
    t0: Instant,
    deadline: Instant,
    bind_ip: Ipv4Addr,
    done: mpsc::Sender<ClientOutcome>,
) {
    let server = SocketAddr::V4(SocketAddrV4::new(args.server, args.dhcp_port));
    let n = args.clients;
    let mut exchanges: Vec<Option<DhcpExchange>> = (0..n).map(|_| None).collect();
    let mut finished = vec![false; n];
    let mut by_xid: HashMap<u32, usize> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut remaining = n;
    let tick = Duration::from_millis(5);
    while remaining > 0 {
        let now = Instant::now();
        if now >= deadline {
            for (i, f) in finished.iter().enumerate() {
                if !f {
                    let _ = done
                        .send(ClientOutcome::failed(
                            i,
                            "storm deadline reached during DHCP",
                        ))
                        .await;
                }
            }
            return;
        }
        // Power on whoever is due.
        for (i, slot) in exchanges.iter_mut().enumerate() {
            if slot.is_none()
                && !finished[i]
                && now >= t0 + Duration::from_millis(args.ripple_ms * i as u64)
            {
                let xid = 0x5254_0000u32.wrapping_add(i as u32);
                by_xid.insert(xid, i);
                *slot = Some(DhcpExchange::new(
                    mac_bytes(mac_base + i as u64),
                    xid,
                    now,
                    args.time_scale,
                ));
            }
        }
        // Timers and sends.
        for i in 0..n {
            let Some(x) = exchanges[i].as_mut() else {
                continue;
            };
            x.handle_timeout(now);
            for pkt in x.drain() {
                let _ = socket.send_to(&pkt, server).await;
            }
            if let Some(reason) = x.failed() {
                let _ = done.send(ClientOutcome::failed(i, reason)).await;
                finished[i] = true;
                exchanges[i] = None;
                remaining -= 1;
            }
        }
        // Receive until the next tick, draining everything that is there.
        let until = tokio::time::Instant::from_std(Instant::now() + tick);
        loop {
            let r = tokio::select! {
                r = socket.recv_from(&mut buf) => r,
                _ = tokio::time::sleep_until(until) => break,
            };
            let Ok((len, _)) = r else { continue };
            let pkt = buf.get(..len).unwrap_or_default();
            let Some(xid) = pkt
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                continue;
            };
            let Some(&i) = by_xid.get(&xid) else { continue };
            let Some(x) = exchanges[i].as_mut() else {
                continue;
            };
            let at = Instant::now();
            x.handle_reply(at, pkt);
            for out in x.drain() {
                let _ = socket.send_to(&out, server).await;
            }
            if let Some((lease, took)) = x.bound() {
                let lease = lease.clone();
                let naks = x.naks;
                finished[i] = true;
                exchanges[i] = None;
                remaining -= 1;
                if args.dhcp_only {
                    let _ = done.send(ClientOutcome::dhcp_only(i, took, naks)).await;
                } else {
                    let start = Instant::now();
                    let info = Some((took, naks, lease));
                    tokio::spawn(boot_client(
                        args.clone(),
                        i,
                        start,
                        info,
                        deadline,
                        bind_ip,
                        done.clone(),
                    ));
                }
            }
        }
    }
}

/// One client's TFTP phase: first file, then the optional second one.
async fn boot_client(
    args: StormArgs,
    i: usize,
    start: Instant,
    dhcp: Option<(Duration, u32, dhcp_client::Lease)>,
    deadline: Instant,
    bind_ip: Ipv4Addr,
    done: mpsc::Sender<ClientOutcome>,
) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    let (dhcp_time, naks, server_ip, dhcp_file) = match &dhcp {
        Some((t, n, lease)) => {
            let ip = if lease.next_server.is_unspecified() {
                args.server
            } else {
                lease.next_server
            };
            (Some(*t), *n, ip, Some(lease.boot_file.clone()))
        }
        None => (None, 0, args.server, None),
    };
    let first = match (&args.file, dhcp_file) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) if !f.is_empty() => f,
        _ => {
            let _ = done
                .send(ClientOutcome::failed(i, "no boot file in the DHCP answer"))
                .await;
            return;
        }
    };
    let mut cfg = ClientConfig::pxe_rom(args.time_scale);
    cfg.blksize = args.blksize;
    cfg.windowsize = args.windowsize;
    cfg.probe = !args.no_probe;
    cfg.ack_timeout =
        Duration::from_secs_f64(args.ack_timeout_ms as f64 / 1000.0 * args.time_scale);
    cfg.ack_retries = args.ack_retries;
    let server = SocketAddr::V4(SocketAddrV4::new(server_ip, args.tftp_port));
    let mut outcome = ClientOutcome::new(i, dhcp_time, naks);
    let t_start = Instant::now();
    let mut files = vec![first];
    files.extend(args.second_file.clone());
    for (k, file) in files.iter().enumerate() {
        let cfg = if k == 0 {
            cfg.clone()
        } else {
            ClientConfig {
                probe: false,
                ..cfg.clone()
            }
        };
        match fetch(cfg, file, server, bind_ip, deadline).await {
            Ok((r, resends)) => {
                outcome.resends += resends;
                match r {
                    FetchResult::Done { bytes, digest, .. } => {
                        outcome.bytes += bytes;
                        if k == 0
                            && let Some(exp) = &args.expect_blake3
                            && *exp != digest
                        {
                            outcome
                                .fail(format!("{file}: content blake3 {digest} != expected {exp}"));
                            break;
                        }
                    }
                    FetchResult::Failed(reason) => {
                        outcome.fail(format!("{file}: {reason}"));
                        break;
                    }
                }
            }
            Err(e) => {
                outcome.fail(format!("{file}: {e}"));
                break;
            }
        }
    }
    outcome.tftp = Some(t_start.elapsed());
    let _ = done.send(outcome).await;
}

async fn bind_udp(ip: Ipv4Addr) -> std::io::Result<Arc<UdpSocket>> {
    Ok(Arc::new(UdpSocket::bind(SocketAddr::from((ip, 0))).await?))
}

async fn fetch(
    cfg: ClientConfig,
    file: &str,
    server: SocketAddr,
    bind_ip: Ipv4Addr,
    deadline: Instant,
) -> std::io::Result<(FetchResult, u32)> {
    let probe = bind_udp(bind_ip).await?;
    let main = bind_udp(bind_ip).await?;
    let mut f = Fetch::new(cfg, file, server, Instant::now());
    let mut b1 = vec![0u8; 65_536];
    let mut b2 = vec![0u8; 65_536];
    loop {
        while let Some(o) = f.poll_transmit() {
            let s = if o.sock == Sock::Probe { &probe } else { &main };
            let _ = s.send_to(&o.payload, o.to).await;
        }
        if let Some(r) = f.result() {
            return Ok((r, f.resends));
        }
        if Instant::now() >= deadline {
            return Ok((
                FetchResult::Failed("storm deadline reached".into()),
                f.resends,
            ));
        }
        let wake = f.poll_timeout().unwrap_or(deadline).min(deadline);
        tokio::select! {
            r = probe.recv_from(&mut b1) => if let Ok((n, from)) = r {
                f.handle_datagram(Instant::now(), Sock::Probe, from, b1.get(..n).unwrap_or_default());
            },
            r = main.recv_from(&mut b2) => if let Ok((n, from)) = r {
                f.handle_datagram(Instant::now(), Sock::Fetch, from, b2.get(..n).unwrap_or_default());
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                f.handle_timeout(Instant::now());
            }
        }
    }
}
