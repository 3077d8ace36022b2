//! The send scheduler, the bandwidth cap and admission, on a virtual clock:
//! retries first, round-robin fairness, the rate cap's accuracy, first
//! answers within the deadline, service every tick, the load signal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::direct::{Direct, Out, addr, data_blocks};
use super::harness::{ClientSpec, Sim, content, files, lookup};
use crate::{Config, Event, Local, Packet, Priority, SafePath};

fn ack(block: u16) -> Packet {
    Packet::Ack { block }
}

/// Delivers a datagram without draining the server's output.
fn deliver(d: &mut Direct, local: Local, src: SocketAddr, packet: &Packet) {
    let files = &d.files;
    d.server
        .handle_datagram(d.now, local, src, &packet.encode(), &|p: &SafePath, _| {
            lookup(files, p)
        });
}

/// Runs the server's own deadlines up to `until` (after the start),
/// draining after each; returns what was sent, with times.
fn pump(d: &mut Direct, until: Duration) -> Vec<(Duration, Out)> {
    let mut sent = Vec::new();
    while let Some(t) = d.server.poll_timeout() {
        if t > d.base + until {
            break;
        }
        d.now = d.now.max(t);
        let at = d.now - d.base;
        sent.extend(d.timeout().into_iter().map(|o| (at, o)));
    }
    d.now = d.now.max(d.base + until);
    sent
}

fn dest_and_block(out: &Out) -> Option<(SocketAddr, u16)> {
    match out {
        (_, dest, Packet::Data { block, .. }) => Some((*dest, *block)),
        _ => None,
    }
}

/// 50 clients in lockstep; one of them (the last) lost its block 2 and
/// re-ACKs block 1, another lost block 2 and stays silent. The lossy
/// clients' resends leave before any other client's new data, whatever the
/// order the ACKs arrived in; the rest go in the order they became ready.
#[test]
fn resends_go_before_fifty_clients_new_data() {
    let config = Config {
        rate_limit_bytes_per_sec: None,
        ..Config::default()
    };
    let mut d = Direct::new(config, files(&[("f", content(100_000))]));
    let clients: Vec<SocketAddr> = (1..=50).map(|i| addr(i, 2000)).collect();
    let mut tids = Vec::new();
    for &c in &clients {
        let out = d.rrq(c, "f", &[]);
        tids.push(out[0].0);
    }
    d.at_ms(10);
    for (&c, &t) in clients.iter().zip(&tids) {
        deliver(&mut d, t, c, &ack(1));
    }
    assert_eq!(d.transmits().len(), 50, "block 2 for everyone");
    // 40 ms: 48 clients ACK 2; client 49 (index 48) heard nothing and says
    // nothing; client 50 (index 49) re-ACKs 1 after its own timer, in the
    // middle of the others.
    d.at_ms(40);
    for i in 0..48 {
        deliver(&mut d, tids[i], clients[i], &ack(2));
        if i == 24 {
            deliver(&mut d, tids[49], clients[49], &ack(1));
        }
    }
    let out = d.transmits();
    let order: Vec<_> = out.iter().filter_map(dest_and_block).collect();
    assert_eq!(order[0], (clients[49], 2), "the retry goes first");
    let fresh: Vec<_> = order[1..].iter().map(|&(c, _)| c).collect();
    assert_eq!(fresh, clients[..48].to_vec(), "then round-robin, in turn");
    // 60 ms: the silent client's timer fires while ten clients' ACKs are
    // being handled: its resend still leaves first.
    d.at_ms(60);
    for i in 0..10 {
        deliver(&mut d, tids[i], clients[i], &ack(3));
    }
    d.server.handle_timeout(d.now);
    let order: Vec<_> = d.transmits().iter().filter_map(dest_and_block).collect();
    assert_eq!(order[0], (clients[48], 2), "the timer resend goes first");
    assert_eq!(order.len(), 11);
    assert!(order[1..].iter().all(|&(_, b)| b == 4));
    let s = d.server.stats();
    assert_eq!((s.retransmits_duplicate, s.retransmits_timeout), (1, 1));
}

/// Packets to each client in the order sent, grouped into windows
/// (consecutive DATA to the same client).
fn windows(sim: &Sim) -> Vec<SocketAddr> {
    let mut windows = Vec::new();
    let mut last = None;
    for s in &sim.sent {
        if !matches!(s.packet, Packet::Data { .. }) {
            last = None;
            continue;
        }
        if last != Some(s.dest) {
            windows.push(s.dest);
        }
        last = Some(s.dest);
    }
    windows
}

/// 50 clients share a link capped at 4 MB/s (so they always wait for
/// their turn), some lockstep, some with windows of 4: between two windows
/// to one client every other client gets exactly one window (none gets two
/// before everyone else got one), and clients of each kind finish within 2%
/// of each other.
#[test]
fn round_robin_gives_every_ready_client_one_window_per_round() {
    let file = content(150_000);
    let config = Config {
        rate_limit_bytes_per_sec: Some(4_000_000),
        rate_limit_burst: 16_384,
        ..Config::default()
    };
    let mut sim = Sim::new(config, files(&[("f", file.clone())]));
    for i in 0..50 {
        let options: &[(&str, &str)] = if i % 2 == 0 {
            &[("blksize", "1432")]
        } else {
            &[("blksize", "1432"), ("windowsize", "4")]
        };
        sim.add_client(ClientSpec::new("f", options));
    }
    sim.run(Duration::from_secs(120));
    for i in 0..50 {
        sim.assert_received(i, &file);
    }
    assert_eq!(sim.server.stats().retransmits_timeout, 0);
    let windows = windows(&sim);
    let mut last_seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut checked = 0;
    for (k, &client) in windows.iter().enumerate() {
        if let Some(&prev) = last_seen.get(&client) {
            let between = &windows[prev + 1..k];
            let mut per_client: HashMap<SocketAddr, usize> = HashMap::new();
            for &other in between {
                *per_client.entry(other).or_default() += 1;
            }
            let most = per_client.values().copied().max().unwrap_or(0);
            assert!(
                most <= 1,
                "window {k}: another client got {most} windows in between"
            );
            // Every other client still transferring got its turn.
            let skipped = sim
                .clients
                .iter()
                .filter(|c| c.addr != client && last_seen.contains_key(&c.addr))
                .filter(|c| windows[k..].contains(&c.addr))
                .find(|c| !per_client.contains_key(&c.addr));
            assert!(skipped.is_none(), "window {k}: {skipped:?} was skipped");
            checked += 1;
        }
        last_seen.insert(client, k);
    }
    assert!(checked > 2000, "{checked} rounds checked");
    // One window per round: clients with windows of 4 move four blocks a
    // round and finish first; within each kind, everyone finishes together.
    for kind in [0, 1] {
        let done: Vec<Duration> = sim
            .events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Closed { client, .. } => sim
                    .clients
                    .iter()
                    .position(|c| c.addr == *client)
                    .filter(|i| i % 2 == kind)
                    .map(|_| *at),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), 25);
        let (first, last) = (done[0], done[done.len() - 1]);
        assert!(
            last.as_secs_f64() <= first.as_secs_f64() * 1.02,
            "first done at {first:?}, last at {last:?}"
        );
    }
}

/// Bytes sent per virtual second (UDP payload + 42 bytes of headers, as
/// the cap counts) under a 2 MB/s cap with 20 greedy windowed clients: every
/// full second within 5% of the cap (in fact within one packet), and the
/// whole run within rate × time + burst + one packet.
#[test]
fn token_bucket_caps_bytes_per_second_within_5_percent() {
    const RATE: u64 = 2_000_000;
    const BURST: u64 = 65_536;
    let file = content(1_000_000);
    let config = Config {
        rate_limit_bytes_per_sec: Some(RATE),
        rate_limit_burst: BURST,
        rate_limit_packet_overhead: 42,
        ..Config::default()
    };
    let mut sim = Sim::new(config, files(&[("f", file.clone())]));
    for _ in 0..20 {
        sim.add_client(ClientSpec::new(
            "f",
            &[("blksize", "1468"), ("windowsize", "8")],
        ));
    }
    sim.run(Duration::from_secs(60));
    for i in 0..20 {
        sim.assert_received(i, &file);
    }
    let bytes = |s: &super::harness::Sent| s.packet.encoded_len() as u64 + 42;
    let end = sim.sent.last().map(|s| s.at).unwrap_or_default();
    let mut per_second = vec![0u64; end.as_secs() as usize + 1];
    for s in &sim.sent {
        per_second[s.at.as_secs() as usize] += bytes(s);
    }
    let full = &per_second[1..per_second.len() - 1];
    assert!(full.len() >= 8, "{} full seconds", full.len());
    for (k, &b) in full.iter().enumerate() {
        let error = (b as f64 - RATE as f64).abs() / RATE as f64;
        assert!(error < 0.05, "second {}: {b} bytes", k + 1);
        assert!(b.abs_diff(RATE) <= 1510 * 2, "second {}: {b} bytes", k + 1);
    }
    let total: u64 = sim.sent.iter().map(bytes).sum();
    let allowed = RATE as f64 * end.as_secs_f64() + (BURST + 1510) as f64;
    assert!(total as f64 <= allowed, "{total} bytes in {end:?}");
    let load = sim.server.load();
    assert!(!load.throttled && load.backlog_packets == 0);
}

/// Four slow transfers hold all four slots for ~16 s; forty clients ask
/// for a small file a second later, retrying every second. Each gets its
/// first packet within the 2 s deadline (plus a packet's wait at the cap),
/// by admission over the cap, which never exceeds max_active +
/// max_overflow; everyone completes.
#[test]
fn queued_clients_get_a_first_answer_within_the_deadline() {
    for max_overflow in [64, 8] {
        let big = content(4_000_000);
        let small = content(50_000);
        let config = Config {
            max_active: 4,
            max_overflow,
            rate_limit_bytes_per_sec: Some(1_000_000),
            rate_limit_burst: 16_384,
            ..Config::default()
        };
        let mut sim = Sim::new(
            config,
            files(&[("big", big.clone()), ("small", small.clone())]),
        );
        for _ in 0..4 {
            let mut spec = ClientSpec::new("big", &[("blksize", "1468"), ("tsize", "0")]);
            spec.max_retries = 15;
            sim.add_client(spec);
        }
        for i in 0..40u64 {
            let mut spec = ClientSpec::new("small", &[("blksize", "1432"), ("tsize", "0")]);
            spec.start_at = Duration::from_millis(1000 + 10 * i);
            spec.max_retries = 15;
            sim.add_client(spec);
        }
        sim.run(Duration::from_secs(120));
        for i in 0..4 {
            sim.assert_received(i, &big);
        }
        for i in 4..44 {
            sim.assert_received(i, &small);
        }
        let (mut active, mut most) = (0usize, 0usize);
        for (_, e) in &sim.events {
            match e {
                Event::Started { .. } => active += 1,
                Event::Closed { .. } => active -= 1,
                Event::Refused { .. } => panic!("nobody is refused"),
            }
            most = most.max(active);
        }
        assert_eq!(most, 4 + max_overflow.min(40), "overflow {max_overflow}");
        let first_answer = |i: usize| {
            let c = &sim.clients[i];
            let asked = c.spec.start_at;
            let answered = sim.sent.iter().find(|s| s.dest == c.addr).map(|s| s.at);
            answered.map(|a| a - asked)
        };
        let waits: Vec<Duration> = (4..44).filter_map(first_answer).collect();
        assert_eq!(waits.len(), 40);
        let within: Vec<&Duration> = waits
            .iter()
            .filter(|w| **w <= Duration::from_millis(2010))
            .collect();
        if max_overflow >= 40 {
            assert_eq!(within.len(), 40, "{waits:?}");
        } else {
            // The first eight over the cap in time, the rest when slots
            // free up — still far below a PXE ROM's 16 s.
            assert!(within.len() >= max_overflow, "{waits:?}");
            assert!(
                waits.iter().all(|w| *w < Duration::from_secs(8)),
                "{waits:?}"
            );
        }
        // The big transfers held the four slots throughout: every small
        // one ran over the cap.
        assert_eq!(sim.server.stats().admitted_over_cap, 40);
    }
}

/// With the link capped at 1 MB/s and twenty windowed transfers keeping
/// ~240 ms of packets waiting, a new request is not admitted although slots
/// are free (the backlog exceeds 100 ms); the load signal shows it. The
/// request still gets its first answer by the 2 s deadline.
#[test]
fn admission_pauses_while_the_backlog_is_high() {
    let file = content(2_000_000);
    let config = Config {
        rate_limit_bytes_per_sec: Some(1_000_000),
        rate_limit_burst: 16_384,
        ..Config::default()
    };
    let mut sim = Sim::new(
        config,
        files(&[("f", file.clone()), ("g", content(10_000))]),
    );
    for _ in 0..20 {
        sim.add_client(ClientSpec::new(
            "f",
            &[("blksize", "1468"), ("windowsize", "8")],
        ));
    }
    let mut late = ClientSpec::new("g", &[("blksize", "1468")]);
    late.start_at = Duration::from_secs(3);
    let late = sim.add_client(late);
    sim.advance(Duration::from_millis(3500));
    let load = sim.server.load();
    assert_eq!((load.active, load.queued), (20, 1));
    assert!(load.admission_paused, "{load:?}");
    assert!(load.throttled_fraction > 0.9, "{load:?}");
    assert!(load.send_delay > Duration::from_millis(100), "{load:?}");
    // Saturated (0.5) and a quarter of the 2 s deadline waited (+0.125).
    assert!((0.6..0.65).contains(&load.pressure), "{load:?}");
    assert!(sim.server.dump().contains("admission paused"));
    sim.run(Duration::from_secs(120));
    sim.assert_received(late, &content(10_000));
    let addr = sim.clients[late].addr;
    let answered = sim.sent.iter().find(|s| s.dest == addr).map(|s| s.at);
    let wait = answered.map(|a| a - Duration::from_secs(3));
    assert!(
        wait.is_some_and(|w| w >= Duration::from_millis(1900) && w <= Duration::from_millis(2010)),
        "{wait:?}"
    );
    assert_eq!(sim.server.stats().admitted_over_cap, 0, "slots were free");
    // Idle again: no pressure.
    let load = sim.server.load();
    assert_eq!((load.active, load.queued, load.backlog_packets), (0, 0, 0));
}

/// A window waiting its round-robin turn while retries keep arriving is
/// promoted after one tick and goes ahead of the retries that became ready
/// after it.
#[test]
fn a_window_waiting_a_tick_is_promoted_ahead_of_later_retries() {
    let config = Config {
        // One 512-byte block (558 bytes counted) every 279 ms.
        rate_limit_bytes_per_sec: Some(2000),
        rate_limit_burst: 0,
        // At this rate one waiting packet is 558 ms of backlog: do not let
        // the admission pause queue the requests.
        admission_pause_backlog: Duration::from_secs(60),
        // No timer resends in this test's time span.
        retransmit_initial: Duration::from_secs(20),
        retransmit_min: Duration::from_secs(20),
        retransmit_max: Duration::from_secs(20),
        ..Config::default()
    };
    let mut d = Direct::new(config, files(&[("f", content(10_000))]));
    let b: Vec<SocketAddr> = (1..=8).map(|i| addr(i, 2000)).collect();
    let a = addr(9, 2000);
    for &c in &b {
        d.rrq(c, "f", &[]);
    }
    let sent = pump(&mut d, Duration::from_millis(2900));
    assert_eq!(sent.len(), 7, "DATA 1 to the other seven, at the cap");
    // 3.0 s: B1 repeats its request (its DATA 1 was lost): resent at once.
    let out = d.at_ms(3000).rrq(b[0], "f", &[]);
    assert_eq!(data_blocks(&out), [1]);
    // A asks: its DATA 1 waits (the cap is in deficit).
    assert!(d.rrq(a, "f", &[]).is_empty());
    // B2..B8 repeat their requests over the next 350 ms: retries.
    let mut sent = Vec::new();
    for (k, &c) in b[1..].iter().enumerate() {
        let at = 3050 + 50 * k as u64;
        sent.extend(pump(&mut d, Duration::from_millis(at)));
        d.at_ms(at);
        let now = d.now - d.base;
        sent.extend(d.rrq(c, "f", &[]).into_iter().map(|o| (now, o)));
    }
    sent.extend(pump(&mut d, Duration::from_millis(6000)));
    let order: Vec<(Duration, SocketAddr)> = sent.iter().map(|(at, o)| (*at, o.1)).collect();
    let a_at = order.iter().position(|&(_, c)| c == a).expect("A served");
    // Without promotion A would go last, after all seven retries (~5.2 s).
    assert!(a_at <= 1, "{order:?}");
    assert!(
        order[a_at].0 <= Duration::from_millis(3000 + 500 + 280),
        "{order:?}"
    );
    assert_eq!(order.len(), 8);
    assert!(d.server.stats().promoted >= 1);
}

/// 50 clients, 10% loss both ways, the link capped at 2 MB/s: while a
/// transfer runs, its client never waits more than a tick (500 ms, plus a
/// packet at the cap) for a packet from the server — the server's own timer
/// and the tick promotion, not the client's 1 s timer, keep everyone served.
#[test]
fn every_active_client_is_served_every_tick() {
    let file = content(60_000);
    let config = Config {
        rate_limit_bytes_per_sec: Some(2_000_000),
        rate_limit_burst: 16_384,
        ..Config::default()
    };
    let mut sim = Sim::new(config, files(&[("f", file.clone())]));
    sim.loss = super::harness::random_loss(42, 10);
    for i in 0..50 {
        let mut spec = ClientSpec::new("f", &[("blksize", "1432"), ("tsize", "0")]);
        spec.start_at = Duration::from_millis(i);
        spec.max_retries = 15;
        sim.add_client(spec);
    }
    sim.run(Duration::from_secs(300));
    for i in 0..50 {
        sim.assert_received(i, &file);
    }
    let mut last: HashMap<Local, Duration> = HashMap::new();
    let mut worst = Duration::ZERO;
    for s in &sim.sent {
        if let Some(prev) = last.insert(s.local, s.at) {
            worst = worst.max(s.at - prev);
        }
    }
    assert!(worst <= Duration::from_millis(510), "worst gap {worst:?}");
    assert!(sim.server.stats().retransmits_timeout > 0);
}

/// When the cap holds packets back, poll_timeout names the moment it has
/// credit again, and the server sends then.
#[test]
fn poll_timeout_wakes_the_shell_when_the_cap_has_credit() {
    let config = Config {
        rate_limit_bytes_per_sec: Some(1_000_000),
        rate_limit_burst: 0,
        rate_limit_packet_overhead: 42,
        ..Config::default()
    };
    let mut d = Direct::new(config, files(&[("f", content(10_000))]));
    assert_eq!(data_blocks(&d.rrq(addr(1, 2000), "f", &[])), [1]);
    // The first packet put the bucket 558 bytes in deficit: 558 µs at 1 MB/s.
    assert!(d.rrq(addr(2, 2000), "f", &[]).is_empty());
    let load = d.server.load();
    assert!(load.throttled && load.backlog_packets == 1, "{load:?}");
    assert_eq!(
        load.backlog_bytes, 558,
        "a 512-byte block, 4 bytes of header, 42 of overhead"
    );
    assert_eq!(d.next_timeout_ms(), Some(0));
    assert_eq!(
        d.server.poll_timeout(),
        Some(d.base + Duration::from_micros(558))
    );
    assert!(d.at_us(557).timeout().is_empty());
    assert_eq!(data_blocks(&d.at_us(558).timeout()), [1]);
    assert!(d.server.stats().throttle_stalls >= 2);
    let t = d.server.transfers().find(|t| t.client == addr(2, 2000));
    assert!(t.is_some_and(|t| t.waiting.is_none() && t.first_sent.is_some()));
}

/// The dump lists the load, every transfer with its progress, and the
/// queue; the snapshot carries the same as data.
#[test]
fn dump_lists_transfers_queue_and_throttle_state() {
    let config = Config {
        max_active: 1,
        ..Config::default()
    };
    let mut d = Direct::new(config, files(&[("vmlinuz", content(5_000))]));
    let c = addr(1, 2000);
    let out = d.rrq(c, "vmlinuz", &[("blksize", "1000")]);
    let t = out[0].0;
    d.at_ms(1).send(t, c, &ack(0));
    d.at_ms(2).send(t, c, &ack(1));
    d.at_ms(3).send(t, c, &ack(2));
    d.at_ms(5).rrq(addr(2, 2000), "vmlinuz", &[]);
    d.at_ms(1005).timeout();
    let snap = d.server.snapshot();
    assert_eq!(snap.transfers.len(), 1);
    let tr = &snap.transfers[0];
    assert_eq!((tr.acked_bytes, tr.size), (2000, 5000));
    assert!((tr.progress() - 0.4).abs() < 1e-9);
    assert!(tr.rtt.is_some());
    assert_eq!(snap.queue.len(), 1);
    assert_eq!(snap.queue[0].waited, Duration::from_millis(1000));
    assert_eq!(snap.load.queued, 1);
    assert!(
        (0.24..0.26).contains(&snap.load.pressure),
        "{:?}",
        snap.load
    );
    let dump = d.server.dump();
    assert!(dump.contains("1 active (0 over cap), 1 queued"), "{dump}");
    assert!(
        dump.contains("10.0.0.1:2000 vmlinuz 40.0% of 5000 B"),
        "{dump}"
    );
    assert!(dump.contains("queued 10.0.0.2:2000 vmlinuz"), "{dump}");
    assert!(dump.contains("bandwidth: cap 125000000 B/s"), "{dump}");
    assert_eq!(dump.lines().count(), 6, "{dump}");
    let _ = Priority::Retry;
}
