//! Admission control: bounded active transfers, FIFO queue, expiry.

use std::time::Duration;

use super::direct::{Direct, addr, data_blocks};
use super::harness::{ClientSpec, Sim, content, files};
use crate::{Config, Event, Local, Packet};

#[test]
fn five_clients_two_slots_all_complete_in_fifo_order() {
    let file = content(2_000_000);
    let config = Config {
        max_active: 2,
        // A hard cap: no admission over it at the first-answer deadline.
        max_overflow: 0,
        ..Config::default()
    };
    let mut sim = Sim::new(config, files(&[("initrd", file.clone())]));
    // A larger latency so each transfer takes seconds and waiting clients
    // keep repeating their RRQ (which must not queue them twice).
    sim.latency = Duration::from_millis(1);
    for i in 0..5 {
        let mut spec = ClientSpec::new("initrd", &[("blksize", "1468"), ("tsize", "0")]);
        spec.start_at = Duration::from_millis(i);
        spec.retry_interval = Duration::from_millis(700);
        spec.max_retries = 100;
        sim.add_client(spec);
    }
    sim.run(Duration::from_secs(300));
    for i in 0..5 {
        sim.assert_received(i, &file);
    }
    let mut active = 0usize;
    let mut max_active = 0;
    let mut order = Vec::new();
    for (_, e) in &sim.events {
        match e {
            Event::Started { client, .. } => {
                active += 1;
                max_active = max_active.max(active);
                order.push(sim.clients.iter().position(|c| c.addr == *client));
            }
            Event::Closed { .. } => active -= 1,
            Event::Refused { .. } => panic!("nobody is refused"),
        }
    }
    assert_eq!(max_active, 2);
    assert_eq!(order, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
    let s = sim.server.stats();
    assert_eq!(s.transfers_started, 5);
    assert_eq!(s.queued, 3);
    assert!(
        s.duplicate_requests > 0,
        "waiting clients repeated their RRQ"
    );
}

#[test]
fn full_queue_drops_and_counts() {
    let config = Config {
        max_active: 1,
        max_queue: 2,
        ..Config::default()
    };
    let mut d = Direct::new(config, files(&[("f", content(10_000))]));
    assert_eq!(data_blocks(&d.rrq(addr(1, 1), "f", &[])), [1]);
    for i in 2..=5 {
        assert!(d.rrq(addr(i, 1), "f", &[]).is_empty(), "waiting is silent");
    }
    assert_eq!((d.server.active(), d.server.queued()), (1, 2));
    assert_eq!(d.server.stats().dropped_queue_full, 2);
    // A repeat of a queued request neither queues twice nor counts as full.
    assert!(d.rrq(addr(2, 1), "f", &[]).is_empty());
    assert_eq!(d.server.queued(), 2);
    assert_eq!(d.server.stats().dropped_queue_full, 2);
}

#[test]
fn abandoned_waiters_expire_and_the_next_is_admitted() {
    let config = Config {
        max_active: 1,
        queue_stale_after: Duration::from_secs(1),
        ..Config::default()
    };
    let mut d = Direct::new(config, files(&[("f", content(10_000))]));
    let a = addr(1, 1);
    let out = d.rrq(a, "f", &[]);
    let t = out[0].0;
    d.rrq(addr(2, 1), "f", &[]); // B: never repeats
    d.at_ms(1500).rrq(addr(3, 1), "f", &[]); // C
    d.at_ms(1500).rrq(addr(4, 1), "f", &[]); // D
    // A aborts at 2 s: B last asked 2 s ago and is skipped; C is admitted.
    let abort = Packet::Error {
        code: crate::ErrorCode::NotDefined,
        msg: String::new(),
    };
    let out = d.at_ms(2000).send(t, a, &abort);
    assert!(
        matches!(&out[..], [(Local::Transfer(_), dest, Packet::Data { block: 1, .. })] if *dest == addr(3, 1))
    );
    assert_eq!(d.server.stats().queue_expired, 1);
    assert_eq!((d.server.active(), d.server.queued()), (1, 1));
}

#[test]
fn full_queue_purges_abandoned_waiters_first() {
    let config = Config {
        max_active: 1,
        max_queue: 1,
        queue_stale_after: Duration::from_secs(1),
        ..Config::default()
    };
    let mut d = Direct::new(config, files(&[("f", content(10_000))]));
    d.rrq(addr(1, 1), "f", &[]);
    d.rrq(addr(2, 1), "f", &[]);
    d.at_ms(3000).rrq(addr(3, 1), "f", &[]);
    assert_eq!(d.server.queued(), 1);
    assert_eq!(d.server.stats().queue_expired, 1);
    assert_eq!(d.server.stats().dropped_queue_full, 0);
}
