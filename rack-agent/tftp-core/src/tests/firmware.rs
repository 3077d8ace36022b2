//! Golden request patterns of real firmware (reference/firmware-behaviour.md).

use std::net::SocketAddr;
use std::time::Duration;

use super::harness::{ClientResult, ClientSpec, Sim, content, files};
use crate::{AbortReason, Config, ErrorCode, Event, Local, Outcome, Packet, RawOption};

const LIMIT: Duration = Duration::from_secs(120);

fn node(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 5], port))
}

fn oack_of(sim: &Sim, client: SocketAddr) -> Vec<u8> {
    sim.sent
        .iter()
        .find(|s| s.dest == client && matches!(s.packet, Packet::Oack { .. }))
        .map(|s| s.packet.encode().to_vec())
        .expect("an OACK")
}

#[test]
fn ipxe_blksize_1432_tsize_lockstep() {
    let file = content(70_000);
    let mut sim = Sim::new(Config::default(), files(&[("undionly.kpxe", file.clone())]));
    // The exact RRQ iPXE sends.
    let rrq = Packet::parse(b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00")
        .expect("iPXE's RRQ parses");
    let Packet::Rrq { options, .. } = rrq else {
        panic!("not an RRQ")
    };
    let mut spec = ClientSpec::new("undionly.kpxe", &[]);
    spec.options = options;
    sim.add_client_at(node(49152), spec);
    sim.run(LIMIT);
    sim.assert_received(0, &file);
    assert_eq!(
        oack_of(&sim, node(49152)),
        b"\x00\x06blksize\x001432\x00tsize\x0070000\x00"
    );
    // Lockstep: one ACK per block (plus ACK 0 and the RRQ).
    assert_eq!(sim.data_sent(), 70_000 / 1432 + 1);
    assert_eq!(
        sim.server.stats().datagrams_received as usize,
        2 + 70_000 / 1432 + 1
    );
}

#[test]
fn pxelinux_config_search_then_default() {
    let ldlinux = content(120_000);
    let default = content(300);
    let mut sim = Sim::new(
        Config::default(),
        files(&[
            ("ldlinux.c32", ldlinux.clone()),
            ("pxelinux.cfg/default", default.clone()),
        ]),
    );
    let mut names = vec![
        "ldlinux.c32".to_owned(),
        "pxelinux.cfg/01-52-54-00-12-34-56".to_owned(),
    ];
    let hex = "0A000005";
    for len in (2..=hex.len()).rev() {
        names.push(format!("pxelinux.cfg/{}", &hex[..len]));
    }
    names.push("pxelinux.cfg/default".to_owned());
    assert_eq!(names.len(), 10, "ldlinux, 8 misses, default");
    for (i, name) in names.iter().enumerate() {
        let mut spec = ClientSpec::new(name, &[("tsize", "0"), ("blksize", "1408")]);
        spec.start_at = Duration::from_millis(200 * i as u64);
        // Source ports count up from 49152.
        sim.add_client_at(node(49152 + i as u16), spec);
    }
    sim.run(LIMIT);
    sim.assert_received(0, &ldlinux);
    for (i, name) in names.iter().enumerate().take(9).skip(1) {
        assert!(
            matches!(
                sim.result(i),
                Some(ClientResult::Error {
                    code: ErrorCode::FileNotFound,
                    ..
                })
            ),
            "{name}: {:?}",
            sim.result(i)
        );
    }
    sim.assert_received(9, &default);
    let s = sim.server.stats();
    assert_eq!(s.refused_not_found, 8);
    assert_eq!(s.transfers_started, 2, "misses set up no transfer");
    assert_eq!(s.transfers_completed, 2);
    // Not-found answers come from the listener.
    assert!(
        sim.sent
            .iter()
            .filter(|s| matches!(s.packet, Packet::Error { .. }))
            .all(|s| s.local == Local::Listener)
    );
    assert_eq!(
        oack_of(&sim, node(49161)),
        b"\x00\x06tsize\x00300\x00blksize\x001408\x00"
    );
}

#[test]
fn edk2_size_probe_then_windowed_fetch() {
    let file = content(1468 * 40 + 100);
    let mut sim = Sim::new(Config::default(), files(&[("ipxe.efi", file.clone())]));
    let mut probe = ClientSpec::new(
        "ipxe.efi",
        &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")],
    );
    probe.abort_after_oack = true;
    probe.retry_interval = Duration::from_secs(4);
    sim.add_client_at(node(1000), probe);
    let mut fetch = ClientSpec::new("ipxe.efi", &[("blksize", "1468"), ("windowsize", "4")]);
    fetch.retry_interval = Duration::from_secs(4);
    fetch.start_at = Duration::from_millis(20);
    sim.add_client_at(node(1001), fetch);

    // The probe: OACK, ERROR 8, and nothing left behind.
    sim.advance(Duration::from_millis(10));
    let size = (1468 * 40 + 100).to_string();
    assert_eq!(
        sim.result(0),
        Some(&ClientResult::Probed {
            oack: vec![
                RawOption::new("tsize", size.as_str()),
                RawOption::new("blksize", "1468"),
                RawOption::new("windowsize", "4"),
            ]
        })
    );
    assert_eq!(sim.server.active(), 0);
    assert_eq!(sim.server.poll_timeout(), None);
    assert!(matches!(
        sim.closed().as_slice(),
        [(
            _,
            Outcome::Aborted {
                reason: AbortReason::ClientError {
                    code: ErrorCode::OptionRefused,
                    ..
                }
            }
        )]
    ));
    let sent_after_probe = sim.sent.len();
    assert_eq!(sent_after_probe, 1, "only the OACK");

    // The real fetch from a new port, four blocks per ACK.
    sim.run(LIMIT);
    sim.assert_received(1, &file);
    let acks = sim.server.stats().datagrams_received - 2 /* probe RRQ + ERROR */ - 1 /* RRQ */;
    assert_eq!(acks, 1 + 41_u64.div_ceil(4), "ACK 0 + one ACK per window");
    assert_eq!(sim.server.stats().retransmits_timeout, 0);
    // Metrics: the probe is an aborted transfer of its own kind, and the
    // bytes sent are those of every datagram.
    let s = sim.server.stats();
    assert_eq!((s.transfers_aborted, s.transfers_option_refused), (1, 1));
    let bytes: u64 = sim
        .sent
        .iter()
        .map(|t| t.packet.encode().len() as u64)
        .sum();
    assert_eq!(s.bytes_sent, bytes);
    assert!(s.bytes_sent > file.len() as u64);
}

#[test]
fn grub_leading_slash_and_lst_probes() {
    let cfg = content(900);
    let kernel = content(50_000);
    let mut sim = Sim::new(
        Config::default(),
        files(&[("grub/grub.cfg", cfg.clone()), ("vmlinuz", kernel.clone())]),
    );
    let names = [
        "/grub/x86_64-efi/command.lst",
        "/grub/x86_64-efi/fs.lst",
        "/grub/x86_64-efi/crypto.lst",
        "/grub/x86_64-efi/terminal.lst",
        "/grub/grub.cfg",
        "/vmlinuz",
    ];
    for (i, name) in names.iter().enumerate() {
        let mut spec = ClientSpec::new(name, &[("blksize", "1024"), ("tsize", "0")]);
        spec.start_at = Duration::from_millis(100 * i as u64);
        sim.add_client_at(node(50000 + i as u16), spec);
    }
    sim.run(LIMIT);
    for i in 0..4 {
        assert!(matches!(
            sim.result(i),
            Some(ClientResult::Error {
                code: ErrorCode::FileNotFound,
                ..
            })
        ));
    }
    sim.assert_received(4, &cfg);
    sim.assert_received(5, &kernel);
    let paths: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Started { path, .. } => Some(path.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(paths, ["grub/grub.cfg", "vmlinuz"]);
    assert_eq!(
        oack_of(&sim, node(50004)),
        b"\x00\x06blksize\x001024\x00tsize\x00900\x00"
    );
}
