//! `rackboot storm`: a boot-storm emulator. N emulated PXE ROM clients, each
//! with its own MAC, do what real firmware does — DHCP DISCOVER/REQUEST with
//! PXE options and the firmware's retry timers, then TFTP with a tsize probe,
//! abort, and the real request — and fail their boot where a ROM would.
//! With `--transport http` the files come over HTTP/1.1 instead, as iPXE
//! loads a kernel and initrd: one keep-alive TCP connection per client, a GET
//! per file, bounded retries.
//!
//! The client behaviour is sans-IO (`dhcp_client`, `tftp_client`,
//! `http_client`); this module only moves bytes and time.

pub mod dhcp_client;
pub mod http_client;
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

/// How the clients fetch their files.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TFTP, as a PXE ROM (tsize probe, lockstep blocks, re-ACK timers).
    Tftp,
    /// HTTP/1.1, as iPXE: one keep-alive TCP connection per client, a GET per
    /// file (`/NAME` on --http-port), the body's blake3 checked against a
    /// blake3 ETag, retries on connection errors, silences and 5xx.
    Http,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tftp => "tftp",
            Transport::Http => "http",
        }
    }
}

/// Arguments of `storm`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Transports:
  --transport tftp (default)  PXE ROM TFTP: tsize probe, abort, RRQ, lockstep.
  --transport http            iPXE-style HTTP/1.1: each client opens one TCP
                              connection to --server:--http-port and GETs
                              /FILE then /SECOND-FILE on it (keep-alive). A
                              request that stalls for --http-timeout-secs, a
                              dropped connection or a 5xx is retried on a new
                              connection up to --http-retries times (from the
                              start, or with Range/If-Range with --http-resume);
                              every body is checked against a blake3 ETag and
                              the first against --expect-blake3.
  With --tftp-only (no DHCP) the transport applies to --file/--second-file;
  after DHCP it fetches the lease's boot file (a URL's path only) from the
  lease's next-server.

Example: 200 clients loading a kernel and initrd over HTTP from an agent:
  rackboot storm --server 10.0.0.1 --tftp-only --transport http \\
      --file vmlinuz --second-file initrd.img --clients 200")]
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
    /// Skip DHCP: every client fetches --file straight away (over --transport).
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
    /// How the files are fetched: `tftp` (PXE ROM) or `http` (iPXE-style).
    #[arg(long, value_enum, default_value = "tftp")]
    pub transport: Transport,
    /// Server HTTP port (--transport http).
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// HTTP: silence (no connection, no response head, no body bytes) after
    /// which an attempt fails (seconds, before --time-scale).
    #[arg(long, default_value_t = 30)]
    pub http_timeout_secs: u64,
    /// HTTP: failed attempts per file retried before the boot fails.
    #[arg(long, default_value_t = 3)]
    pub http_retries: u32,
    /// HTTP: resume a broken transfer with Range/If-Range instead of
    /// starting it over.
    #[arg(long)]
    pub http_resume: bool,
    /// Local address for the clients' sockets (default: any).
    #[arg(long)]
    pub bind: Option<Ipv4Addr>,
    /// Spread the clients' TFTP/HTTP sockets over the host addresses of this
    /// subnet (client i uses the (i mod n)-th), as a rack of distinct
    /// machines would; the addresses must be configured on the client side.
    #[arg(long, conflicts_with = "bind")]
    pub source_range: Option<ipnet::Ipv4Net>,
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
    /// Also flood the server with this many DHCPDISCOVERs from random MACs
    /// (a starvation attack, or a rack of unknown machines), from a socket of
    /// their own, at --flood-rate; the emulated clients power on 1 s into
    /// the flood. Their report shows whether known machines are still
    /// answered.
    #[arg(long, default_value_t = 0)]
    pub flood: u64,
    /// Flood rate (DISCOVERs per second).
    #[arg(long, default_value_t = 20_000)]
    pub flood_rate: u64,
    /// Also flood the TFTP server with this many read requests for --file
    /// (with the PXE options), each from a fresh source port and never
    /// acknowledged — the half-open transfers a broken or hostile machine
    /// leaves — at --flood-rate, from --flood-from; the emulated clients
    /// power on 1 s into the flood.
    #[arg(long, default_value_t = 0)]
    pub tftp_flood: u64,
    /// Source address of the floods (it must be configured on this side;
    /// default: --bind). Use another address than the emulated clients',
    /// as an attacker is another machine.
    #[arg(long, value_name = "IP")]
    pub flood_from: Option<Ipv4Addr>,
    /// Threads that drive the clients with --tftp-only, each a
    /// single-threaded event loop over its share of them (0 = one per
    /// CPU). Emulated clients only cost the emulator's CPU, which on a
    /// test machine competes with the server's: no work stealing between
    /// threads keeps that cost down.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Run `clients` (futures) on `threads` threads, each a single-threaded
/// runtime with its share (round-robin); returns when all have finished.
/// Sockets a client opens belong to its thread's event loop: a wake-up
/// never crosses threads, and no idle thread is woken to steal work.
async fn run_sharded(
    clients: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    threads: usize,
) -> anyhow::Result<()> {
    let threads = threads.max(1).min(clients.len().max(1));
    let mut shards: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        if let Some(shard) = shards.get_mut(i % threads) {
            shard.push(c);
        }
    }
    let mut done = Vec::new();
    for (k, shard) in shards.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        std::thread::Builder::new()
            .name(format!("storm-{k}"))
            .spawn(move || {
                let r = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| {
                        rt.block_on(async move {
                            let mut set = tokio::task::JoinSet::new();
                            for c in shard {
                                set.spawn(c);
                            }
                            while set.join_next().await.is_some() {}
                        })
                    })
                    .map_err(anyhow::Error::from);
                let _ = tx.send(r);
            })?;
        done.push(rx);
    }
    for rx in done {
        rx.await
            .map_err(|_| anyhow::anyhow!("a storm thread ended without a result"))??;
    }
    Ok(())
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
    let sources: Vec<Ipv4Addr> = match args.source_range {
        Some(net) => {
            let hosts: Vec<Ipv4Addr> = net.hosts().take(65_536).collect();
            anyhow::ensure!(
                !hosts.is_empty(),
                "--source-range {net} has no host addresses"
            );
            hosts
        }
        None => vec![bind_ip],
    };
    let sources = Arc::new(sources);

    anyhow::ensure!(
        args.tftp_flood == 0 || args.file.is_some(),
        "--tftp-flood needs --file NAME"
    );
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
        let mut clients: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
            Vec::with_capacity(args.clients);
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
        let lead = flood_lead;
        tokio::spawn(dhcp_storm(
            args.clone(),
            base,
            socket,
            t0 + lead,
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
    if let Some(flood) = flood {
        let (sent, took) = flood.await.unwrap_or_default();
        eprintln!(
            "flood: {sent} DHCPDISCOVERs from random MACs in {:.2} s ({:.0}/s)",
            took.as_secs_f64(),
            sent as f64 / took.as_secs_f64().max(1e-9)
        );
    }
    if let Some(flood) = tftp_flood {
        let (sent, took) = flood.await.unwrap_or_default();
        eprintln!(
            "tftp flood: {sent} unacknowledged RRQs in {:.2} s ({:.0}/s)",
            took.as_secs_f64(),
            sent as f64 / took.as_secs_f64().max(1e-9)
        );
    }
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

/// Client `i`'s source address.
fn pick(sources: &[Ipv4Addr], i: usize) -> Ipv4Addr {
    sources
        .get(i % sources.len().max(1))
        .copied()
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
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

/// Paces a flood: `count` sends at `rate` per second in 1 ms batches, until
/// done or `deadline`.
struct Pacer {
    t0: Instant,
    tick: tokio::time::Interval,
    sent: u64,
    count: u64,
    rate: u64,
    deadline: Instant,
}

impl Pacer {
    fn new(count: u64, rate: u64, deadline: Instant) -> Pacer {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Pacer {
            t0: Instant::now(),
            tick,
            sent: 0,
            count,
            rate,
            deadline,
        }
    }

    /// How many to send now (counted as sent); `None` when the flood is over.
    async fn batch(&mut self) -> Option<u64> {
        if self.sent >= self.count || Instant::now() >= self.deadline {
            return None;
        }
        self.tick.tick().await;
        let due = (self.t0.elapsed().as_secs_f64() * self.rate as f64) as u64;
        let n = due.min(self.count).saturating_sub(self.sent);
        self.sent += n;
        Some(n)
    }

    /// Sent so far and the time taken.
    fn result(&self) -> (u64, Duration) {
        (self.sent, self.t0.elapsed())
    }
}

/// Send `count` DISCOVERs from pseudo-random locally administered MACs at
/// `rate` per second (in 1 ms batches), until done or `deadline`. Returns
/// how many were sent and how long it took.
async fn dhcp_flood(
    socket: UdpSocket,
    server: SocketAddr,
    count: u64,
    rate: u64,
    deadline: Instant,
) -> (u64, Duration) {
    // splitmix64: reproducible, no RNG dependency for a load generator.
    let mut state = 0x05ee_d0ff_100d_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut pacer = Pacer::new(count, rate, deadline);
    while let Some(n) = pacer.batch().await {
        for _ in 0..n {
            let r = next();
            let mut mac = mac_bytes(r);
            // Locally administered unicast: never a real vendor's MAC.
            mac[0] = (mac[0] & 0xfc) | 0x02;
            let mut x = DhcpExchange::new(mac, (r >> 16) as u32, Instant::now(), 1.0);
            for pkt in x.drain() {
                let _ = socket.send_to(&pkt, server).await;
            }
        }
    }
    pacer.result()
}

/// Send `count` RRQs for `file` (tsize and blksize as PXE asks), each from
/// a fresh socket on `from` closed right after, at `rate` per second, until
/// done or `deadline`. Returns how many were sent and how long it took.
async fn tftp_flood(
    from: Ipv4Addr,
    server: SocketAddr,
    file: String,
    count: u64,
    rate: u64,
    deadline: Instant,
) -> (u64, Duration) {
    let mut pkt = vec![0u8, 1];
    pkt.extend_from_slice(file.as_bytes());
    pkt.extend_from_slice(b"\0octet\0blksize\x001456\0tsize\x000\0");
    let mut pacer = Pacer::new(count, rate, deadline);
    while let Some(n) = pacer.batch().await {
        for _ in 0..n {
            if let Ok(s) = UdpSocket::bind(SocketAddr::from((from, 0))).await {
                let _ = s.send_to(&pkt, server).await;
            }
        }
    }
    pacer.result()
}

/// All DHCP exchanges on one socket, demultiplexed by xid.
async fn dhcp_storm(
    args: StormArgs,
    mac_base: u64,
    socket: UdpSocket,
    t0: Instant,
    deadline: Instant,
    sources: Arc<Vec<Ipv4Addr>>,
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
                        pick(&sources, i),
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
    let mut files = vec![first];
    files.extend(args.second_file.clone());
    if args.transport == Transport::Http {
        let outcome = http_boot(
            &args, i, &files, server_ip, dhcp_time, naks, bind_ip, deadline,
        )
        .await;
        let _ = done.send(outcome).await;
        return;
    }
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
    outcome.transfer = Some(t_start.elapsed());
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
    // One timer for the whole fetch, re-armed only when the client's next
    // timeout moves earlier (a re-ACK deadline moves later with every
    // block): a block costs no timer registration, a moved-out deadline at
    // most a spurious wake-up.
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
    tokio::pin!(timer);
    let mut timer_at = deadline;
    loop {
        while let Some(o) = f.poll_transmit() {
            let s = if o.sock == Sock::Probe { &probe } else { &main };
            let _ = s.send_to(&o.payload, o.to).await;
        }
        if let Some(r) = f.result() {
            return Ok((r, f.resends));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok((
                FetchResult::Failed("storm deadline reached".into()),
                f.resends,
            ));
        }
        let wake = f.poll_timeout().unwrap_or(deadline).min(deadline);
        if wake < timer_at || timer_at <= now {
            timer.as_mut().reset(tokio::time::Instant::from_std(wake));
            timer_at = wake;
        }
        let probing = f.probing();
        tokio::select! {
            r = probe.recv_from(&mut b1), if probing => if let Ok((n, from)) = r {
                f.handle_datagram(Instant::now(), Sock::Probe, from, b1.get(..n).unwrap_or_default());
            },
            r = main.recv_from(&mut b2) => if let Ok((n, from)) = r {
                f.handle_datagram(Instant::now(), Sock::Fetch, from, b2.get(..n).unwrap_or_default());
            },
            _ = &mut timer => {
                f.handle_timeout(Instant::now());
            }
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// One client's HTTP phase: every file over one keep-alive connection (a new
/// one only after a failure), as iPXE loads a kernel and initrd.
#[allow(clippy::too_many_arguments)]
async fn http_boot(
    args: &StormArgs,
    i: usize,
    files: &[String],
    server_ip: Ipv4Addr,
    dhcp_time: Option<Duration>,
    naks: u32,
    bind_ip: Ipv4Addr,
    deadline: Instant,
) -> ClientOutcome {
    let server = SocketAddr::V4(SocketAddrV4::new(server_ip, args.http_port));
    let idle = Duration::from_secs_f64(args.http_timeout_secs as f64 * args.time_scale);
    let mut outcome = ClientOutcome::new(i, dhcp_time, naks);
    let t_start = Instant::now();
    let mut conn: Option<Sender> = None;
    for (k, file) in files.iter().enumerate() {
        // A boot file from DHCP may be a URL: keep its path.
        let name = file
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.scheme().is_some())
            .map_or_else(|| file.clone(), |u| u.path().to_string());
        let cfg = http_client::HttpConfig {
            retries: args.http_retries,
            resume: args.http_resume,
            expect_blake3: if k == 0 {
                args.expect_blake3.clone()
            } else {
                None
            },
        };
        let mut get = http_client::Get::new(cfg, &name);
        let result = loop {
            let attempt = http_attempt(&mut get, &mut conn, server, bind_ip, idle, deadline).await;
            match attempt {
                Ok(done) => break Ok(done),
                Err(f) => {
                    // After any failure the connection's state is unknown.
                    conn = None;
                    if let Err(reason) = get.retry(f) {
                        break Err(reason);
                    }
                    outcome.resends += 1;
                    let pause = Duration::from_secs_f64(get.failures as f64 * args.time_scale);
                    if Instant::now() + pause >= deadline {
                        break Err(format!("{name}: storm deadline reached"));
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        };
        match result {
            Ok(done) => outcome.bytes += done.bytes,
            Err(reason) => {
                outcome.fail(reason);
                break;
            }
        }
    }
    outcome.transfer = Some(t_start.elapsed());
    outcome
}

/// `fut`, or a transient failure after `idle` or at the storm deadline.
async fn within<T, E: std::fmt::Display>(
    idle: Duration,
    deadline: Instant,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, http_client::Failure> {
    use http_client::Failure;
    let until = (Instant::now() + idle).min(deadline);
    match tokio::time::timeout_at(tokio::time::Instant::from_std(until), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Transient(format!("{what}: {e}"))),
        Err(_) if Instant::now() >= deadline => {
            Err(Failure::Fatal(format!("{what}: storm deadline reached")))
        }
        Err(_) => Err(Failure::Transient(format!(
            "{what}: nothing for {:.1} s",
            idle.as_secs_f64()
        ))),
    }
}

async fn http_connect(server: SocketAddr, bind_ip: Ipv4Addr) -> std::io::Result<Sender> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    if !bind_ip.is_unspecified() {
        sock.bind(SocketAddr::from((bind_ip, 0)))?;
    }
    let stream = sock.connect(server).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    // Ends when the sender is dropped or the server closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request for `get`, on the kept connection or a new one.
async fn http_attempt(
    get: &mut http_client::Get,
    conn: &mut Option<Sender>,
    server: SocketAddr,
    bind_ip: Ipv4Addr,
    idle: Duration,
    deadline: Instant,
) -> Result<http_client::Done, http_client::Failure> {
    use http::header;
    use http_body_util::BodyExt;
    let plan = get.plan();
    let what = plan.path.clone();
    let sender = match conn {
        Some(s) if !s.is_closed() => s,
        _ => conn.insert(
            within(
                idle,
                deadline,
                &format!("{what}: connect"),
                http_connect(server, bind_ip),
            )
            .await?,
        ),
    };
    within(idle, deadline, &what, sender.ready()).await?;
    let mut req = http::Request::builder()
        .method(http::Method::GET)
        .uri(&plan.path)
        .header(header::HOST, server.to_string())
        .header(header::USER_AGENT, "rackboot-storm (iPXE-like)");
    if let Some(from) = plan.range_from {
        req = req.header(header::RANGE, format!("bytes={from}-"));
    }
    if let Some(tag) = &plan.if_range {
        req = req.header(header::IF_RANGE, tag);
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| http_client::Failure::Fatal(format!("{what}: {e}")))?;
    let resp = within(idle, deadline, &what, sender.send_request(req)).await?;
    let h = resp.headers();
    let text = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let length = text(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let range = text(header::CONTENT_RANGE);
    let etag = text(header::ETAG);
    get.on_head(
        resp.status().as_u16(),
        length,
        range.as_deref(),
        etag.as_deref(),
    )?;
    let mut body = resp.into_body();
    // Ends with the body, at the idle timeout or the storm deadline; on_data
    // fails past the announced length.
    loop {
        let frame = within(idle, deadline, &what, async {
            Ok::<_, hyper::Error>(body.frame().await)
        })
        .await?;
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(http_client::Failure::Transient(format!(
                    "{what}: {e} after {} bytes",
                    get.received()
                )));
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    get.on_data(&data)?;
                }
            }
        }
    }
    get.on_end()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;
    use rackboot_agent::files::FileTable;
    use rackboot_agent::view::RackView;
    use tokio::sync::watch;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        storm: StormArgs,
    }

    /// Two files over one keep-alive connection from the agent's HTTP
    /// server, verified against its blake3 ETags and --expect-blake3.
    #[tokio::test]
    async fn http_client_loads_kernel_and_initrd_from_the_agent() {
        let kernel: bytes::Bytes = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let initrd: bytes::Bytes = (0..900_000u32).map(|i| (i % 241) as u8).collect();
        let files = HashMap::from([
            ("vmlinuz".to_string(), kernel.clone()),
            ("initrd.img".to_string(), initrd.clone()),
        ]);
        let (_ftx, frx) = watch::channel(Arc::new(FileTable::from_map(files)));
        let (_vtx, vrx) = watch::channel(Arc::new(RackView::default()));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(rackboot_agent::http::run(
            l,
            frx,
            vrx,
            None,
            rackboot_agent::http::HttpLimits::default(),
            None,
            stop.clone(),
        ));
        let digest = blake3::hash(&kernel).to_hex().to_string();
        let port_s = port.to_string();
        let args = |expect: &str| {
            Cli::parse_from([
                "storm",
                "--server",
                "127.0.0.1",
                "--tftp-only",
                "--transport",
                "http",
                "--http-port",
                &port_s,
                "--file",
                "vmlinuz",
                "--second-file",
                "/initrd.img",
                "--http-retries",
                "1",
                "--time-scale",
                "0.01",
                "--expect-blake3",
                expect,
            ])
            .storm
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let a = args(&digest);
        let files = vec!["vmlinuz".to_string(), "/initrd.img".to_string()];
        let ip = Ipv4Addr::LOCALHOST;
        let o = http_boot(&a, 0, &files, ip, None, 0, Ipv4Addr::UNSPECIFIED, deadline).await;
        assert_eq!(o.failure, None);
        assert_eq!(o.bytes, 1_200_000);
        assert_eq!(o.resends, 0);
        assert!(o.transfer.is_some());

        let a = args(&"0".repeat(64));
        let o = http_boot(&a, 1, &files, ip, None, 0, Ipv4Addr::UNSPECIFIED, deadline).await;
        assert!(o.failure.unwrap().contains("!= expected"));

        let missing = vec!["nope".to_string()];
        let o = http_boot(
            &a,
            2,
            &missing,
            ip,
            None,
            0,
            Ipv4Addr::UNSPECIFIED,
            deadline,
        )
        .await;
        assert_eq!(o.failure.as_deref(), Some("/nope: HTTP 404"));
        assert_eq!(o.resends, 0, "a 404 is not retried");
        stop.cancel();
    }
}
