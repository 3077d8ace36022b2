//! The drivers: the I/O shells that run the sans-IO clients
//! (`dhcp_client`, `tftp_client`, `http_client`) over real sockets and
//! tokio timers. `dhcp` runs the DHCP phase of every client on one socket;
//! [`boot_client`] is one client's transfer phase after it, handing the
//! files to `tftp` or `http`. The drivers only move bytes and time: every
//! protocol decision is in the clients.

pub(crate) mod dhcp;
pub(crate) mod http;
pub(crate) mod tftp;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::args::{StormArgs, Transport};
use crate::dhcp_client::Lease;
use crate::report::ClientOutcome;

/// Client `i`'s source address.
pub(crate) fn pick(sources: &[Ipv4Addr], i: usize) -> Ipv4Addr {
    sources
        .get(i % sources.len().max(1))
        .copied()
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// One client's transfer phase, at `start`: the first file (`--file`, else
/// the lease's boot file), then the optional second one, over
/// `--transport` from the lease's next-server (else `--server`). Sends the
/// client's outcome on `done`.
pub(crate) async fn boot_client(
    args: StormArgs,
    i: usize,
    start: Instant,
    dhcp: Option<(Duration, u32, Lease)>,
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
    let outcome = match args.transport {
        Transport::Http => {
            http::http_boot(
                &args, i, &files, server_ip, dhcp_time, naks, bind_ip, deadline,
            )
            .await
        }
        Transport::Tftp => {
            tftp::tftp_boot(
                &args, i, &files, server_ip, dhcp_time, naks, bind_ip, deadline,
            )
            .await
        }
    };
    let _ = done.send(outcome).await;
}
