//! The emulated PXE ROM against the real TFTP server core, on a virtual
//! clock: byte-exact fetches, loss, windowed mode, errors and silences.
#![allow(clippy::unwrap_used)]

use super::*;
use bytes::Bytes;
use rackboot_tftp_core::{Config, Local, OpenError, SafePath, Server};

/// The emulated ROM against the real server core, on a virtual clock,
/// with every `drop_every`-th server packet lost.
fn run(size: usize, cfg: ClientConfig, drop_every: usize) -> (FetchResult, u32) {
    let content: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let file = Bytes::from(content.clone());
    let files = move |p: &SafePath, _c: SocketAddr| -> Result<Bytes, OpenError> {
        if p.as_str() == "boot.bin" {
            Ok(file.clone())
        } else {
            Err(OpenError::NotFound)
        }
    };
    let mut server = Server::new(Config::default());
    let server_addr: SocketAddr = "10.0.0.1:69".parse().unwrap();
    let probe_addr: SocketAddr = "10.0.0.9:2001".parse().unwrap();
    let fetch_addr: SocketAddr = "10.0.0.9:2002".parse().unwrap();
    let mut now = Instant::now();
    let mut client = Fetch::new(cfg, "boot.bin", server_addr, now);
    let mut tids = std::collections::HashMap::new();
    let mut n = 0usize;
    for _ in 0..200_000 {
        if let Some(r) = client.result() {
            return (r, client.resends);
        }
        while let Some(o) = client.poll_transmit() {
            let src = if o.sock == Sock::Probe {
                probe_addr
            } else {
                fetch_addr
            };
            let local = tids
                .get(&o.to)
                .copied()
                .map(Local::Transfer)
                .unwrap_or(Local::Listener);
            server.handle_datagram(now, local, src, &o.payload, &files);
        }
        while let Some(t) = server.poll_transmit() {
            n += 1;
            let from = match t.local {
                Local::Listener => server_addr,
                Local::Transfer(id) => {
                    let a: SocketAddr = format!("10.0.0.1:{}", 10_000 + id.as_u64())
                        .parse()
                        .unwrap();
                    tids.insert(a, id);
                    a
                }
            };
            if drop_every > 0 && n.is_multiple_of(drop_every) {
                continue;
            }
            let sock = if t.dest == probe_addr {
                Sock::Probe
            } else {
                Sock::Fetch
            };
            client.handle_datagram(now, sock, from, &t.payload);
        }
        while server.poll_event().is_some() {}
        let next = [client.poll_timeout(), server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if client.out.is_empty()
            && let Some(next) = next
        {
            now = now.max(next);
        }
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    panic!("no result");
}

#[test]
fn rom_fetches_byte_exact_with_probe() {
    let (r, _) = run(100_000, ClientConfig::pxe_rom(1.0), 0);
    let expected: Vec<u8> = (0..100_000usize).map(|i| (i * 31 % 251) as u8).collect();
    assert_eq!(
        r,
        FetchResult::Done {
            bytes: 100_000,
            elapsed: match &r {
                FetchResult::Done { elapsed, .. } => *elapsed,
                _ => Duration::ZERO,
            },
            digest: blake3::hash(&expected).to_hex().to_string(),
        }
    );
}

/// A ROM that asks for real from its probe's port sends everything from
/// that one port and still gets every byte, with and without loss.
#[test]
fn rom_reusing_its_probe_port_fetches_byte_exact() {
    let expected: Vec<u8> = (0..100_000usize).map(|i| (i * 31 % 251) as u8).collect();
    let digest = blake3::hash(&expected).to_hex().to_string();
    let mut cfg = ClientConfig::pxe_rom(1.0);
    cfg.same_port = true;
    let mut client = Fetch::new(
        cfg.clone(),
        "boot.bin",
        "10.0.0.1:69".parse().unwrap(),
        Instant::now(),
    );
    assert_eq!(client.poll_transmit().map(|o| o.sock), Some(Sock::Probe));
    for drop_every in [0, 5, 9] {
        let (r, _) = run(100_000, cfg.clone(), drop_every);
        assert!(
            matches!(&r, FetchResult::Done { bytes: 100_000, digest: d, .. } if *d == digest),
            "drop every {drop_every}: {r:?}"
        );
    }
}

#[test]
fn rom_survives_loss_and_windowed_mode() {
    let mut cfg = ClientConfig::pxe_rom(1.0);
    cfg.windowsize = 4;
    let (r, resends) = run(300_000, cfg, 13);
    assert!(
        matches!(r, FetchResult::Done { bytes: 300_000, .. }),
        "{r:?}"
    );
    assert!(resends < 200, "resends {resends}");
}

#[test]
fn missing_file_fails_the_boot_with_the_server_error() {
    let files =
        |_p: &SafePath, _c: SocketAddr| -> Result<Bytes, OpenError> { Err(OpenError::NotFound) };
    let mut server = Server::new(Config::default());
    let now = Instant::now();
    let sa: SocketAddr = "10.0.0.1:69".parse().unwrap();
    let mut c = Fetch::new(ClientConfig::pxe_rom(1.0), "nope", sa, now);
    let o = c.poll_transmit().unwrap();
    server.handle_datagram(
        now,
        Local::Listener,
        "10.0.0.9:2001".parse().unwrap(),
        &o.payload,
        &files,
    );
    let t = server.poll_transmit().unwrap();
    c.handle_datagram(now, Sock::Probe, sa, &t.payload);
    assert!(
        matches!(c.result(), Some(FetchResult::Failed(m)) if m.contains("FileNotFound") || m.contains("not found"))
    );
}

#[test]
fn silent_server_fails_at_the_firmware_limit() {
    let now = Instant::now();
    let mut c = Fetch::new(
        ClientConfig::pxe_rom(1.0),
        "x",
        "10.0.0.1:69".parse().unwrap(),
        now,
    );
    let mut t = now;
    let mut sent = 0;
    while c.result().is_none() {
        while c.poll_transmit().is_some() {
            sent += 1;
        }
        t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
    }
    assert_eq!(
        sent, 6,
        "RRQ sent at 0 and at each scheduled retry but the last"
    );
    let waited = t.duration_since(now);
    assert!(
        waited >= Duration::from_secs(15) && waited <= Duration::from_secs(17),
        "{waited:?}"
    );
}
