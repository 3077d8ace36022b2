//! The TFTP driver: one client's files fetched as a PXE ROM does, each a
//! `tftp_client::Fetch` run over two UDP sockets (the tsize probe's and the
//! transfer's) with one re-armed timer.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::args::StormArgs;
use crate::report::ClientOutcome;
use crate::tftp_client::{ClientConfig, Fetch, FetchResult, Sock};

/// One client's TFTP phase: first file, then the optional second one (no
/// size probe for it), each checked against its expected digest
/// ([`crate::args::expected_digest`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn tftp_boot(
    args: &StormArgs,
    i: usize,
    files: &[String],
    server_ip: Ipv4Addr,
    dhcp_time: Option<Duration>,
    naks: u32,
    bind_ip: Ipv4Addr,
    deadline: Instant,
) -> ClientOutcome {
    let mut cfg = ClientConfig::pxe_rom(args.time_scale);
    cfg.blksize = args.blksize;
    cfg.windowsize = args.windowsize;
    cfg.probe = !args.no_probe;
    cfg.same_port = args.same_port;
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
                        if let Some(exp) = crate::args::expected_digest(args, k, file)
                            && !exp.eq_ignore_ascii_case(&digest)
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
    outcome
}

async fn bind_udp(ip: Ipv4Addr) -> std::io::Result<Arc<UdpSocket>> {
    Ok(Arc::new(UdpSocket::bind(SocketAddr::from((ip, 0))).await?))
}

/// One file over TFTP, until it is complete, the client gives up, or the
/// storm's deadline; with the client's resend count.
async fn fetch(
    cfg: ClientConfig,
    file: &str,
    server: SocketAddr,
    bind_ip: Ipv4Addr,
    deadline: Instant,
) -> std::io::Result<(FetchResult, u32)> {
    let probe = bind_udp(bind_ip).await?;
    let main = bind_udp(bind_ip).await?;
    let same_port = cfg.same_port;
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
        // One port for everything: the probe's socket stays open.
        let probing = f.probing() || same_port;
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
