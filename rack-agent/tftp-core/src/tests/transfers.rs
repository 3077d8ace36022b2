//! Whole transfers through the simulated network.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::harness::{ClientSpec, Sim, content, every_nth, files, lcg_loss};
use crate::{Config, Event, Local, Mode, Outcome, Packet};

const LIMIT: Duration = Duration::from_secs(600);

fn fetch(size: usize, options: &[(&str, &str)]) -> Sim {
    let data = content(size);
    let mut sim = Sim::new(Config::default(), files(&[("f", data.clone())]));
    sim.add_client(ClientSpec::new("f", options));
    sim.run(LIMIT);
    sim.assert_received(0, &data);
    assert_eq!(sim.server.active(), 0);
    assert!(matches!(
        sim.closed().as_slice(),
        [(_, Outcome::Completed { bytes, .. })] if *bytes == size as u64
    ));
    sim
}

#[test]
fn plain_rfc1350_sizes() {
    for size in [0, 1, 511, 512, 513, 1024, 1025, 512 * 7, 100_000] {
        let sim = fetch(size, &[]);
        // No OACK without options; lockstep 512-byte blocks; a multiple of
        // 512 ends with an empty block.
        assert!(
            !sim.sent
                .iter()
                .any(|s| matches!(s.packet, Packet::Oack { .. }))
        );
        assert_eq!(sim.data_sent(), size / 512 + 1, "size {size}");
        let last = sim.sent.last().map(|s| s.packet.clone());
        assert!(
            matches!(last, Some(Packet::Data { ref data, .. }) if data.len() == size % 512),
            "size {size}: {last:?}"
        );
    }
}

#[test]
fn negotiated_blksize_multiples() {
    for size in [0, 1467, 1468, 1469, 1468 * 3, 1468 * 3 + 1] {
        let sim = fetch(size, &[("blksize", "1468"), ("tsize", "0")]);
        assert_eq!(sim.data_sent(), size / 1468 + 1, "size {size}");
        assert!(matches!(
            &sim.sent[0].packet,
            Packet::Oack { options } if options[1].value == size.to_string()
        ));
    }
}

#[test]
fn windowsize_4_sends_windows() {
    let size = 1468 * 10 + 5;
    let sim = fetch(size, &[("blksize", "1468"), ("windowsize", "4")]);
    assert_eq!(sim.data_sent(), 11);
    // 11 blocks in windows of 4: the client ACKs 4, 8 and the final 11.
    let acks_needed = 3;
    let server_stats = sim.server.stats();
    assert_eq!(server_stats.data_sent, 11);
    assert_eq!(server_stats.retransmits_timeout, 0);
    assert_eq!(server_stats.datagrams_received, 1 + 1 + acks_needed);
    // Blocks 1..=4 went out back to back, before any ACK could return.
    let first_four: Vec<_> = sim.sent[1..5].iter().map(|s| s.at).collect();
    assert!(first_four.iter().all(|&t| t == first_four[0]));
}

#[test]
fn windowsize_is_clamped_to_config() {
    let sim = fetch(100_000, &[("windowsize", "64")]);
    assert!(matches!(
        &sim.sent[0].packet,
        Packet::Oack { options } if options[0].value == "8"
    ));
}

#[test]
fn block_numbers_wrap_past_65535() {
    // blksize 8: 600 000 bytes is 75 001 blocks.
    let size = 600_000;
    let sim = fetch(size, &[("blksize", "8"), ("windowsize", "8")]);
    assert_eq!(sim.data_sent(), size / 8 + 1);
    let wrapped = sim
        .sent
        .iter()
        .filter(|s| matches!(s.packet, Packet::Data { block: 0, .. }))
        .count();
    assert_eq!(wrapped, 1, "block 65536 goes out as 0");
    assert_eq!(sim.server.stats().retransmits_timeout, 0);
}

#[test]
fn block_numbers_wrap_in_lockstep_with_loss() {
    let data = content(530_000);
    let mut sim = Sim::new(Config::default(), files(&[("f", data.clone())]));
    sim.loss = every_nth(997);
    let mut spec = ClientSpec::new("f", &[("blksize", "8")]);
    spec.retry_interval = Duration::from_millis(300);
    sim.add_client(spec);
    sim.run(LIMIT);
    sim.assert_received(0, &data);
}

#[test]
fn netascii_is_converted() {
    let data = Bytes::from_static(b"line1\nline2\r\n");
    let mut sim = Sim::new(Config::default(), files(&[("t", data)]));
    let mut spec = ClientSpec::new("t", &[("tsize", "0")]);
    spec.mode = Mode::Netascii;
    sim.add_client(spec);
    sim.run(LIMIT);
    sim.assert_received(0, &Bytes::from_static(b"line1\r\nline2\r\0\r\n"));
    assert!(matches!(
        &sim.sent[0].packet,
        Packet::Oack { options } if options[0].value == "16"
    ));
}

#[test]
fn mail_mode_is_refused() {
    let mut sim = Sim::new(Config::default(), files(&[("f", content(1))]));
    let mut spec = ClientSpec::new("f", &[]);
    spec.mode = Mode::Mail;
    sim.add_client(spec);
    sim.run(LIMIT);
    assert!(matches!(
        sim.result(0),
        Some(super::harness::ClientResult::Error {
            code: crate::ErrorCode::IllegalOperation,
            ..
        })
    ));
    assert_eq!(sim.server.stats().transfers_started, 0);
}

#[test]
fn started_and_closed_events() {
    let sim = fetch(3000, &[]);
    let started: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Started {
                path, size, client, ..
            } => Some((path.as_str().to_owned(), *size, *client)),
            _ => None,
        })
        .collect();
    assert_eq!(started, [("f".to_owned(), 3000, sim.clients[0].addr)]);
    // Replies come from the transfer's own socket, never the listener.
    assert!(
        sim.sent
            .iter()
            .all(|s| matches!(s.local, Local::Transfer(_)))
    );
}

#[test]
fn two_percent_loss_many_clients() {
    let data = content(200_000);
    let mut sim = Sim::new(Config::default(), files(&[("kernel", data.clone())]));
    sim.loss = lcg_loss(7, 2);
    let options: [&[(&str, &str)]; 4] = [
        &[("blksize", "1432"), ("tsize", "0")],
        &[("tsize", "0"), ("blksize", "1408")],
        &[("blksize", "1468"), ("windowsize", "4")],
        &[],
    ];
    for i in 0..40 {
        let mut spec = ClientSpec::new("kernel", options[i % 4]);
        spec.retry_interval = Duration::from_millis(500);
        spec.max_retries = 30;
        sim.add_client(spec);
    }
    sim.run(LIMIT);
    for i in 0..40 {
        sim.assert_received(i, &data);
    }
    // Lost blocks are recovered by short timers: nowhere near the 2 s
    // per loss a slow server would stall.
    assert!(
        sim.elapsed() < Duration::from_secs(30),
        "{:?}",
        sim.elapsed()
    );
}

#[test]
fn targeted_loss_recovery_paths() {
    let data = content(512 * 5 + 10);
    let config = Config {
        // The server's own timer is slower than this client's re-ACK, so
        // the duplicate-ACK path recovers the lost block.
        retransmit_initial: Duration::from_millis(300),
        retransmit_min: Duration::from_millis(300),
        ..Config::default()
    };
    let mut sim = Sim::new(config, files(&[("f", data.clone())]));
    let mut lost_block_3 = false;
    let mut lost_final_ack = false;
    sim.loss = Box::new(move |w| match w.packet {
        Some(Packet::Data { block: 3, .. }) if !w.to_server && !lost_block_3 => {
            lost_block_3 = true;
            true
        }
        Some(Packet::Ack { block: 6 }) if w.to_server && !lost_final_ack => {
            lost_final_ack = true;
            true
        }
        _ => false,
    });
    let mut spec = ClientSpec::new("f", &[]);
    spec.retry_interval = Duration::from_millis(110); // pxelinux
    sim.add_client(spec);
    sim.run(LIMIT);
    sim.assert_received(0, &data);
    let dropped: Vec<_> = sim
        .sent
        .iter()
        .filter(|s| s.dropped)
        .map(|s| &s.packet)
        .collect();
    assert!(matches!(dropped[..], [Packet::Data { block: 3, .. }]));
    let s = sim.server.stats();
    // Block 3 came back on the client's re-ACK; the final block was resent
    // by the timer after the lost final ACK and the client dallied.
    assert_eq!(s.retransmits_duplicate, 1);
    assert_eq!(s.retransmits_timeout, 1);
    assert_eq!(s.transfers_completed, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any size, block size, window and loss pattern: the client ends up
    /// with exactly the file, and the server with no state.
    #[test]
    fn transfers_survive_loss(
        size in 0usize..20_000,
        blksize in prop_oneof![Just(None), (8u16..2000).prop_map(Some)],
        windowsize in prop_oneof![Just(None), (1u16..12).prop_map(Some)],
        seed in any::<u64>(),
        loss in 0u64..15,
    ) {
        let data = content(size);
        let mut sim = Sim::new(Config::default(), files(&[("f", data.clone())]));
        sim.loss = lcg_loss(seed, loss);
        let b = blksize.map(|b| b.to_string());
        let w = windowsize.map(|w| w.to_string());
        let mut options = Vec::new();
        if let Some(b) = &b { options.push(("blksize", b.as_str())); }
        if let Some(w) = &w { options.push(("windowsize", w.as_str())); }
        let mut spec = ClientSpec::new("f", &options);
        spec.retry_interval = Duration::from_millis(400);
        spec.max_retries = 50;
        sim.add_client(spec);
        sim.run(LIMIT);
        sim.assert_received(0, &data);
        prop_assert_eq!(sim.server.active(), 0);
        prop_assert_eq!(sim.server.poll_timeout(), None);
    }
}
