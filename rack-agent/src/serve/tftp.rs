//! The TFTP shell: one task owns the sans-IO `rackboot_tftp_core::Server`
//! and every socket; it only moves bytes. Each wake-up drains every readable
//! socket completely before sending, so ACKs never queue in the kernel as a
//! substitute for scheduling.
//!
//! A transfer's TID (its server port) comes from a small pool of
//! sockets shared by transfers of different clients: the pair (server port,
//! client address and port) is what identifies a transfer (RFC 1350), so
//! two transfers share a port only when their clients differ. This keeps
//! the socket count, the wake-ups and the per-datagram work independent of
//! the number of transfers: no task, channel or allocation per ACK.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;

use rackboot_tftp_core::{ErrorCode, Event, Local, Outcome, Packet, Server, TransferId};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::files::FileTable;
use crate::timeline::TimelineHandle;
use rackboot_agent_domain::timeline::Transport;
use rackboot_dhcp_core::guard::{Allow, RateLimiter};

const MAX_DATAGRAM: usize = 65_536;
/// Sockets transfers take their TID from. A (server port, client address
/// and port) pair identifies a transfer, so a few ports serve any number of
/// clients; each socket's readiness is polled on every wake-up (the cost of
/// a large pool, measured in boot storms), and a client's second transfer
/// while its first runs takes another port.
pub const POOL_SOCKETS: usize = 8;
/// Receive buffer of each pool socket (ACKs of many transfers land there).
const POOL_RCVBUF: usize = 4 << 20;

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The shared transfer sockets and which transfer each (socket, client)
/// pair belongs to.
struct Pool {
    sockets: Vec<UdpSocket>,
    by_peer: HashMap<(usize, SocketAddr), TransferId>,
    of: HashMap<TransferId, (usize, SocketAddr)>,
    /// Datagrams on a pool socket from a client with no transfer there.
    strays: u64,
}

impl Pool {
    fn bind(ip: IpAddr, n: usize) -> std::io::Result<Pool> {
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(SocketAddr::new(ip, 0)),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            // Best effort: the kernel caps it at net.core.rmem_max.
            let _ = s.set_recv_buffer_size(POOL_RCVBUF);
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::new(ip, 0).into())?;
            sockets.push(UdpSocket::from_std(s.into())?);
        }
        Ok(Pool {
            sockets,
            by_peer: HashMap::new(),
            of: HashMap::new(),
            strays: 0,
        })
    }

    /// The socket of transfer `id` (to `client`), chosen on first use: the
    /// client's home socket (a hash of its address and port), or the next
    /// one whose port this client is not already using. A client's address
    /// and port always meet the same server port while it has one transfer
    /// at a time: a PXE ROM that sends its size probe and then the real
    /// request from one port gets both answers from one port, so a late
    /// packet of the probe exchange lands on the transfer that replaced it
    /// (which knows what to make of it) instead of on a port that would
    /// answer ERROR 5 and end the boot.
    fn socket_for(&mut self, id: TransferId, client: SocketAddr) -> Option<usize> {
        if let Some(&(k, _)) = self.of.get(&id) {
            return Some(k);
        }
        let n = self.sockets.len();
        let home = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            client.hash(&mut h);
            usize::try_from(h.finish() % n.max(1) as u64).unwrap_or(0)
        };
        for i in 0..n {
            let k = (home + i) % n;
            if let std::collections::hash_map::Entry::Vacant(e) = self.by_peer.entry((k, client)) {
                e.insert(id);
                self.of.insert(id, (k, client));
                return Some(k);
            }
        }
        None
    }

    fn release(&mut self, id: TransferId) {
        if let Some(key) = self.of.remove(&id) {
            self.by_peer.remove(&key);
        }
    }

    /// The pool sockets readable now, into `ready`; registers for a wake-up
    /// on the others.
    fn poll_ready(&self, cx: &mut std::task::Context<'_>, ready: &mut Vec<usize>) {
        ready.clear();
        for (k, s) in self.sockets.iter().enumerate() {
            if s.poll_recv_ready(cx).is_ready() {
                ready.push(k);
            }
        }
    }

    /// Wait until some pool socket is readable; `ready` then lists those
    /// that are.
    async fn readable(&self, ready: &mut Vec<usize>) {
        poll_fn(|cx| {
            self.poll_ready(cx, ready);
            if ready.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// The pool sockets readable now, without waiting.
    async fn ready_now(&self, ready: &mut Vec<usize>) {
        poll_fn(|cx| {
            self.poll_ready(cx, ready);
            Poll::Ready(())
        })
        .await
    }
}

/// Run [`run`] on a thread of its own with a single-threaded runtime, and
/// return a handle (on the caller's runtime) that completes when it ends.
///
/// The TFTP task wakes once per batch of ACKs; on the shared multi-threaded
/// runtime every wake-up also woke an idle worker to look for work to steal
/// (and the task moved between workers), which in a boot storm cost more
/// CPU than the serving. Alone on its thread it sleeps in `epoll_wait`
/// itself and wakes nobody else. Everything it shares with the rest of the
/// agent (watch channels, the notifier, the cancellation token, counters)
/// works across runtimes.
pub fn spawn(
    listener: UdpSocket,
    task: TftpTask,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = listener.into_std()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("rackboot-tftp".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async move {
                    match UdpSocket::from_std(listener) {
                        Ok(listener) => run(listener, task, shutdown).await,
                        Err(e) => tracing::error!(error = %e, "cannot register the TFTP socket; TFTP is off"),
                    }
                }),
                Err(e) => tracing::error!(error = %e, "cannot start the TFTP runtime; TFTP is off"),
            }
            let _ = done_tx.send(());
        })?;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}

/// How long transfers in flight may run on after a shutdown request.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(8);

/// Run the TFTP server until `shutdown`. `bind_ip` is the address transfer
/// sockets bind to (the agent's rack address). On shutdown no new request is
/// read (a client's retried RRQ reaches the next agent process); transfers
/// in flight and queued ones run to their end, for at most [`DRAIN`].
pub async fn run(listener: UdpSocket, task: TftpTask, shutdown: CancellationToken) {
    let TftpTask {
        bind_ip,
        config,
        files,
        sessions,
        dump,
        guard,
        stats,
    } = task;
    let TftpGuard { allow, mut limiter } = guard;
    let mut refused_source = 0u64;
    let mut pool = match Pool::bind(bind_ip, POOL_SOCKETS) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, ip = %bind_ip, "cannot open TFTP transfer sockets; TFTP is off");
            return;
        }
    };
    let mut server = Server::new(config);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut ready: Vec<usize> = Vec::new();
    // The futures that live across wake-ups are made once: a wake-up per
    // ACK must not register and unregister waiters and timers each time.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut dumped = std::pin::pin!(dump.notified());
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut timer_at: Option<tokio::time::Instant> = None;
    loop {
        let deadline = server.poll_timeout().map(tokio::time::Instant::from_std);
        // Re-arm the timer only when the deadline moved earlier: one that
        // moved later (every DATA sent pushes its transfer's retransmit
        // timer) costs at most a spurious wake-up, after which it is armed
        // at the true deadline.
        if let Some(d) = deadline
            && timer_at.is_none_or(|at| d < at)
        {
            timer.as_mut().reset(d);
            timer_at = Some(d);
        }
        tokio::select! {
            _ = &mut cancelled, if !server.is_draining() => {
                let (active, queued) = (server.active(), server.queued());
                server.handle_drain(now(), DRAIN);
                if server.is_drained() {
                    return;
                }
                tracing::info!(active, queued, "shutting down: finishing the TFTP transfers in flight (at most {DRAIN:?}), no new ones");
            }
            _ = &mut dumped => {
                dumped.set(dump.notified());
                tracing::info!(
                    active = server.active(),
                    queued = server.queued(),
                    pool_sockets = pool.sockets.len(),
                    strays = pool.strays,
                    "TFTP state (SIGUSR1):\n{}",
                    server.dump()
                );
            }
            _ = listener.readable(), if !server.is_draining() => {}
            _ = pool.readable(&mut ready) => {}
            _ = &mut timer, if timer_at.is_some() => {
                timer_at = None;
            }
        }
        // Drain everything already waiting before answering anyone (the
        // pool branch listed its ready sockets; after any other wake-up,
        // look at them now).
        if ready.is_empty() {
            pool.ready_now(&mut ready).await;
        }
        let table = files.borrow().clone();
        while !server.is_draining()
            && let Ok((n, src)) = listener.try_recv_from(&mut buf)
        {
            if !admit(&allow, &mut limiter, &mut refused_source, src) {
                continue;
            }
            server.handle_datagram(
                now(),
                Local::Listener,
                src,
                buf.get(..n).unwrap_or_default(),
                &*table,
            );
        }
        for k in ready.drain(..) {
            let Some(socket) = pool.sockets.get(k) else {
                continue;
            };
            while let Ok((n, src)) = socket.try_recv_from(&mut buf) {
                let data = buf.get(..n).unwrap_or_default();
                match pool.by_peer.get(&(k, src)) {
                    Some(&id) => {
                        server.handle_datagram(now(), Local::Transfer(id), src, data, &*table)
                    }
                    None => {
                        // RFC 1350: a packet for no transfer of this port
                        // gets ERROR 5; an ERROR is never answered, and
                        // neither is a client that has a live transfer on
                        // another port (a late packet of an exchange it
                        // left: an ERROR would end the live one too).
                        pool.strays += 1;
                        let live_elsewhere =
                            (0..pool.sockets.len()).any(|j| pool.by_peer.contains_key(&(j, src)));
                        if data.get(..2) != Some(&[0, 5]) && !live_elsewhere {
                            let reply = Packet::Error {
                                code: ErrorCode::UnknownTransferId,
                                msg: "unknown transfer ID".into(),
                            }
                            .encode();
                            let _ = socket.try_send_to(&reply, src);
                        }
                    }
                }
            }
        }
        server.handle_timeout(now());
        flush(&mut server, &listener, &mut pool, &sessions).await;
        stats.publish(&server, refused_source, limiter.limited, pool.strays);
        if server.is_drained() {
            tracing::info!("TFTP transfers drained");
            return;
        }
    }
}

/// The TFTP task's counters and gauges, published after every wake-up (for
/// metrics; the engine's own [`rackboot_tftp_core::Stats`] live in the task).
#[derive(Debug, Default)]
pub struct TftpStats {
    last: std::sync::Mutex<TftpSnapshot>,
}

/// What [`TftpStats`] last published.
#[derive(Debug, Default, Clone)]
pub struct TftpSnapshot {
    /// The engine's counters.
    pub core: rackboot_tftp_core::Stats,
    /// Transfers running.
    pub active: usize,
    /// Requests waiting for a transfer slot.
    pub queued: usize,
    /// Requests ignored: source outside the allowed subnets.
    pub refused_source: u64,
    /// Requests ignored: over the per-source request rate.
    pub rate_limited: u64,
    /// Datagrams on a transfer socket from a client with no transfer there
    /// (answered with ERROR 5).
    pub strays: u64,
}

impl TftpStats {
    fn publish(&self, server: &Server, refused_source: u64, rate_limited: u64, strays: u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.core.clone_from(server.stats());
        last.active = server.active();
        last.queued = server.queued();
        last.refused_source = refused_source;
        last.rate_limited = rate_limited;
        last.strays = strays;
    }

    /// The last published state.
    pub fn snapshot(&self) -> TftpSnapshot {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the TFTP task works with.
pub struct TftpTask {
    /// Address transfer sockets bind to (the agent's rack address).
    pub bind_ip: IpAddr,
    /// Engine settings.
    pub config: rackboot_tftp_core::Config,
    /// Files served.
    pub files: watch::Receiver<Arc<FileTable>>,
    /// Boot sessions, started when a kernel is served.
    pub sessions: TimelineHandle,
    /// Notified on SIGUSR1: log the transfer table.
    pub dump: Arc<tokio::sync::Notify>,
    /// Front-door limits.
    pub guard: TftpGuard,
    /// Where the counters are published (metrics).
    pub stats: Arc<TftpStats>,
}

/// Who may open transfers, and how fast.
pub struct TftpGuard {
    /// Source subnets answered at all; others get no reply (not even an ERROR).
    pub allow: Allow,
    /// New requests per second per source address.
    pub limiter: RateLimiter<IpAddr>,
}

impl TftpGuard {
    /// Default limits: 100 requests/s per source address sustained, burst
    /// 10,000 (generous so one emulator address can play a whole storm; a
    /// single misbehaving host is still capped), 65,536 sources remembered.
    pub fn new(allow: Allow) -> Self {
        TftpGuard {
            allow,
            limiter: RateLimiter::new(100.0, 10_000.0, 65_536),
        }
    }
}

/// Whether a datagram on the listener is looked at.
fn admit(
    allow: &Allow,
    limiter: &mut RateLimiter<IpAddr>,
    refused: &mut u64,
    src: SocketAddr,
) -> bool {
    if !allow.permits(src.ip()) {
        *refused += 1;
        if refused.is_power_of_two() {
            tracing::warn!(%src, refused = *refused, "tftp request from outside the rack subnets ignored");
        }
        return false;
    }
    if !limiter.allow(&src.ip(), std::time::Instant::now()) {
        if limiter.limited.is_power_of_two() {
            tracing::warn!(%src, limited = limiter.limited, "tftp requests over the per-source rate ignored");
        }
        return false;
    }
    true
}

async fn flush(
    server: &mut Server,
    listener: &UdpSocket,
    pool: &mut Pool,
    sessions: &TimelineHandle,
) {
    // Closed transfers first: their (socket, client) pairs are free before
    // a transfer that replaced one of them takes its socket.
    handle_events(server, pool, sessions);
    while let Some(t) = server.poll_transmit() {
        let socket = match t.local {
            Local::Listener => listener,
            Local::Transfer(id) => match pool.socket_for(id, t.dest) {
                Some(k) => match pool.sockets.get(k) {
                    Some(s) => s,
                    None => continue,
                },
                None => {
                    tracing::warn!(dest = %t.dest, "no transfer socket free for this client; packet not sent");
                    continue;
                }
            },
        };
        // Non-blocking first; wait for room only when the send buffer is full.
        match socket.try_send_to(&t.payload, t.dest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.send_to(&t.payload, t.dest).await {
                    tracing::debug!(error = %e, dest = %t.dest, "tftp send failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, dest = %t.dest, "tftp send failed"),
        }
    }
    handle_events(server, pool, sessions);
}

/// The engine's events: the timeline, the log, and the pool's pairs.
fn handle_events(server: &mut Server, pool: &mut Pool, sessions: &TimelineHandle) {
    while let Some(ev) = server.poll_event() {
        match ev {
            Event::Started {
                id,
                client,
                path,
                size,
            } => {
                if let std::net::IpAddr::V4(ip) = client.ip() {
                    sessions.file_served(ip, path.as_str(), Transport::Tftp);
                }
                tracing::debug!(id = id.as_u64(), %client, path = path.as_str(), size, "tftp transfer started");
            }
            Event::Closed {
                id,
                client,
                path,
                outcome,
            } => {
                pool.release(id);
                if let (Outcome::Completed { .. }, std::net::IpAddr::V4(ip)) =
                    (&outcome, client.ip())
                {
                    sessions.file_done(ip, path.as_str());
                }
                tracing::info!(id = id.as_u64(), %client, path = path.as_str(), ?outcome, "tftp transfer closed");
            }
            Event::Refused {
                client,
                filename,
                code,
                message,
            } => {
                tracing::info!(%client, ?filename, ?code, %message, "tftp request refused");
            }
        }
    }
}

impl rackboot_metrics::Component for TftpStats {
    fn encode(&self, e: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use rackboot_metrics::{counter, counters, gauge};

        let t = self.snapshot();
        let s = &t.core;
        counter(
            e,
            "rackboot_agent_tftp_datagrams_received",
            "TFTP datagrams handled by the engine",
            s.datagrams_received,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_datagrams_sent",
            "TFTP datagrams sent",
            s.datagrams_sent,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_bytes_sent",
            "TFTP bytes sent (UDP payload: headers, retransmissions and errors included)",
            s.bytes_sent,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_transfers_started",
            "TFTP transfers started",
            s.transfers_started,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_transfers_completed",
            "TFTP transfers whose last block was acknowledged",
            s.transfers_completed,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_option_probes",
            "TFTP transfers the client ended after the option answer (ERROR 8: a PXE ROM's tsize probe)",
            s.transfers_option_refused,
        )?;
        counters(
            e,
            "rackboot_agent_tftp_transfers_failed",
            "TFTP transfers that did not complete (option probes aside), by reason",
            "reason",
            &[
                (
                    "aborted",
                    s.transfers_aborted
                        .saturating_sub(s.transfers_option_refused),
                ),
                ("timed_out", s.transfers_timed_out),
            ],
        )?;
        counter(
            e,
            "rackboot_agent_tftp_data_packets_sent",
            "TFTP DATA packets sent for the first time",
            s.data_sent,
        )?;
        counters(
            e,
            "rackboot_agent_tftp_retransmits",
            "TFTP packets sent again, by cause",
            "reason",
            &[
                ("timeout", s.retransmits_timeout),
                ("duplicate_ack", s.retransmits_duplicate),
                ("partial_ack", s.retransmits_partial_ack),
            ],
        )?;
        counters(
            e,
            "rackboot_agent_tftp_dropped",
            "TFTP datagrams dropped, by reason",
            "reason",
            &[
                ("malformed", s.dropped_malformed),
                ("unexpected_on_listener", s.dropped_unexpected_on_listener),
                ("unknown_transfer", s.dropped_unknown_transfer),
                ("wrong_source", s.dropped_wrong_source),
                ("unexpected_on_transfer", s.dropped_unexpected_on_transfer),
                ("stale_ack", s.dropped_stale_ack),
                ("duplicate_ack", s.dropped_duplicate_ack),
                ("queue_full", s.dropped_queue_full),
                ("per_source_cap", s.dropped_per_source),
                ("draining", s.dropped_draining),
                ("not_ready", s.dropped_not_ready),
                ("stale_error", s.dropped_stale_error),
                ("source_not_allowed", t.refused_source),
                ("rate_limited", t.rate_limited),
                ("stray", t.strays),
            ],
        )?;
        counters(
            e,
            "rackboot_agent_tftp_refused",
            "TFTP requests answered with an ERROR, by reason",
            "reason",
            &[
                ("write", s.refused_write),
                ("path", s.refused_path),
                ("mode", s.refused_mode),
                ("not_found", s.refused_not_found),
                ("access_denied", s.refused_access_denied),
                ("too_large", s.refused_too_large),
            ],
        )?;
        counter(
            e,
            "rackboot_agent_tftp_read_errors",
            "TFTP transfers aborted because a block could not be read from their file",
            s.read_errors,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_duplicate_requests",
            "Repeated TFTP requests absorbed by a running or waiting transfer",
            s.duplicate_requests,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_requests_replaced",
            "TFTP requests that replaced another one (running or waiting) from the same client address and port",
            s.requests_replaced,
        )?;
        counter(
            e,
            "rackboot_agent_tftp_requests_queued",
            "TFTP requests that had to wait for a transfer slot",
            s.queued,
        )?;
        gauge(
            e,
            "rackboot_agent_tftp_active_transfers",
            "TFTP transfers running",
            t.active as u64,
        )?;
        gauge(
            e,
            "rackboot_agent_tftp_queued_requests",
            "TFTP requests waiting for a transfer slot",
            t.queued as u64,
        )
    }
}
