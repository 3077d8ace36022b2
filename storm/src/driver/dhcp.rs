//! The DHCP phase of a storm: every emulated client's [`DhcpExchange`]
//! driven over one UDP socket, powered on by the ripple, demultiplexed by
//! xid, on a 5 ms tick for the firmware timers. A bound client goes on to
//! its file transfer (`driver::boot_client`) unless `--dhcp-only`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{boot_client, pick};
use crate::args::StormArgs;
use crate::dhcp_client::DhcpExchange;
use crate::error::StormError;
use crate::mac::mac_bytes;
use crate::report::ClientOutcome;

/// A broadcast UDP socket on `ip:port` for DHCP clients or a DHCP flood,
/// with a large receive buffer for a storm's worth of answers.
pub(crate) async fn dhcp_socket(ip: Ipv4Addr, port: u16) -> Result<UdpSocket, StormError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((ip, port)).into())
        .map_err(|source| StormError::BindDhcp { ip, port, source })?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// All DHCP exchanges on one socket, demultiplexed by xid.
pub(crate) async fn dhcp_storm(
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
