//! The TFTP shell: one task owns the sans-IO `rackboot_tftp_core::Server`;
//! the listener socket and one ephemeral socket per transfer (its TID) only
//! move bytes. Every wake-up drains all readable datagrams before sending, so
//! ACKs never queue in the kernel as a substitute for scheduling.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rackboot_tftp_core::{Event, Local, Outcome, Server, TransferId};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::files::FileTable;
use crate::guard::{Allow, RateLimiter};
use crate::sessions::Sessions;
use crate::view::RackView;

const MAX_DATAGRAM: usize = 65_536;
/// Receive buffer of a transfer socket: clients send only ACKs (4 bytes) and
/// ERRORs there. A bigger datagram arrives truncated and is dropped as
/// malformed. (64 KiB per transfer would be 64 MiB for 1,000 transfers.)
const TRANSFER_DATAGRAM: usize = 1_500;

struct TransferSocket {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for TransferSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Run the TFTP server until `shutdown`. `bind_ip` is the address transfer
/// sockets bind to (the agent's rack address).
pub async fn run(listener: UdpSocket, task: TftpTask, shutdown: CancellationToken) {
    let TftpTask {
        bind_ip,
        config,
        files,
        view,
        sessions,
        dump,
        guard,
    } = task;
    let TftpGuard { allow, mut limiter } = guard;
    let mut refused_source = 0u64;
    let listener = Arc::new(listener);
    let mut server = Server::new(config);
    let (in_tx, mut in_rx) = mpsc::channel::<(TransferId, SocketAddr, Vec<u8>)>(16_384);
    let mut sockets: HashMap<TransferId, TransferSocket> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = server.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = dump.notified() => {
                tracing::info!(active = server.active(), queued = server.queued(), "TFTP state (SIGUSR1):\n{}", server.dump());
            }
            r = listener.recv_from(&mut buf) => {
                if let Ok((n, src)) = r
                    && admit(&allow, &mut limiter, &mut refused_source, src)
                {
                    let table = files.borrow().clone();
                    server.handle_datagram(now(), Local::Listener, src, buf.get(..n).unwrap_or_default(), &*table);
                }
            }
            Some((id, src, data)) = in_rx.recv() => {
                let table = files.borrow().clone();
                server.handle_datagram(now(), Local::Transfer(id), src, &data, &*table);
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => server.handle_timeout(now()),
        }
        // Drain everything already waiting before answering anyone.
        let table = files.borrow().clone();
        while let Ok((n, src)) = listener.try_recv_from(&mut buf) {
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
        while let Ok((id, src, data)) = in_rx.try_recv() {
            server.handle_datagram(now(), Local::Transfer(id), src, &data, &*table);
        }
        server.handle_timeout(now());
        flush(
            &mut server,
            &listener,
            &mut sockets,
            bind_ip,
            &in_tx,
            &view,
            &sessions,
        )
        .await;
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
    /// The rack view (node by address, for boot sessions).
    pub view: watch::Receiver<Arc<RackView>>,
    /// Boot sessions, started when a kernel is served.
    pub sessions: Arc<Sessions>,
    /// Notified on SIGUSR1: log the transfer table.
    pub dump: Arc<tokio::sync::Notify>,
    /// Front-door limits.
    pub guard: TftpGuard,
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
    listener: &Arc<UdpSocket>,
    sockets: &mut HashMap<TransferId, TransferSocket>,
    bind_ip: IpAddr,
    in_tx: &mpsc::Sender<(TransferId, SocketAddr, Vec<u8>)>,
    view: &watch::Receiver<Arc<RackView>>,
    sessions: &Sessions,
) {
    while let Some(t) = server.poll_transmit() {
        let socket = match t.local {
            Local::Listener => listener.clone(),
            Local::Transfer(id) => match sockets.get(&id) {
                Some(s) => s.socket.clone(),
                None => match open_transfer_socket(id, bind_ip, in_tx.clone()).await {
                    Ok(s) => {
                        let sock = s.socket.clone();
                        sockets.insert(id, s);
                        sock
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open a transfer socket");
                        continue;
                    }
                },
            },
        };
        if let Err(e) = socket.send_to(&t.payload, t.dest).await {
            tracing::debug!(error = %e, dest = %t.dest, "tftp send failed");
        }
    }
    while let Some(ev) = server.poll_event() {
        match ev {
            Event::Started {
                id,
                client,
                path,
                size,
            } => {
                if let std::net::IpAddr::V4(ip) = client.ip() {
                    sessions.file_served(&view.borrow(), ip, path.as_str(), "tftp");
                }
                tracing::debug!(id = id.as_u64(), %client, path = path.as_str(), size, "tftp transfer started");
            }
            Event::Closed {
                id,
                client,
                path,
                outcome,
            } => {
                sockets.remove(&id);
                if let (Outcome::Completed { .. }, std::net::IpAddr::V4(ip)) =
                    (&outcome, client.ip())
                {
                    sessions.file_done(&view.borrow(), ip, path.as_str());
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

async fn open_transfer_socket(
    id: TransferId,
    bind_ip: IpAddr,
    in_tx: mpsc::Sender<(TransferId, SocketAddr, Vec<u8>)>,
) -> std::io::Result<TransferSocket> {
    let socket = Arc::new(UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?);
    let rx = socket.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; TRANSFER_DATAGRAM];
        while let Ok((n, src)) = rx.recv_from(&mut buf).await {
            let data = buf.get(..n).unwrap_or_default().to_vec();
            if in_tx.send((id, src, data)).await.is_err() {
                return;
            }
        }
    });
    Ok(TransferSocket { socket, reader })
}
