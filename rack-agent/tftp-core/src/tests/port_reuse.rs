//! PXE ROMs that send their size probe and the real request from one UDP
//! port (reference/firmware-behaviour.md, "Port reuse"): whatever order the
//! network delivers the probe's abort, the request and the server's own
//! retransmissions in, the live transfer is never disturbed.

use super::direct::{Direct, Out, addr};
use super::harness::{content, files};
use crate::{AbortReason, Config, ErrorCode, Event, Local, Outcome, Packet};

const PROBE: &[(&str, &str)] = &[("tsize", "0"), ("blksize", "1456")];
const REQUEST: &[(&str, &str)] = &[("blksize", "1456")];

fn direct() -> Direct {
    Direct::new(
        Config::default(),
        files(&[("boot.bin", content(10_000)), ("next.bin", content(3_000))]),
    )
}

/// The transfer local of the first OACK in `out`.
fn oack_local(out: &[Out]) -> Local {
    out.iter()
        .find(|(_, _, p)| matches!(p, Packet::Oack { .. }))
        .map(|(l, _, _)| *l)
        .expect("an OACK")
}

fn abort() -> Packet {
    Packet::Error {
        code: ErrorCode::OptionRefused,
        msg: "tsize probe".into(),
    }
}

/// Runs the transfer on `local` to its end, lockstep; the bytes received.
fn fetch_rest(d: &mut Direct, local: Local, client: std::net::SocketAddr) -> usize {
    let mut got = 0;
    let mut block = 0u16;
    loop {
        let out = d.send(local, client, &Packet::Ack { block });
        let Some((_, _, Packet::Data { block: b, data })) = out
            .iter()
            .find(|(_, _, p)| matches!(p, Packet::Data { .. }))
            .cloned()
        else {
            return got;
        };
        got += data.len();
        block = b;
        if data.len() < 1456 {
            d.send(local, client, &Packet::Ack { block });
            return got;
        }
    }
}

/// The real request overtakes the probe's abort (both sent back to back;
/// the agent reads its listener first): the request replaces the probe
/// without a word to the client, and the abort arriving afterwards on the
/// new transfer is taken as the probe's, not the transfer's.
#[test]
fn request_overtaking_the_probe_abort_replaces_the_probe() {
    let mut d = direct();
    let rom = addr(5, 2070);
    let out = d.rrq(rom, "boot.bin", PROBE);
    let probe = oack_local(&out);
    d.at_ms(2);
    let out = d.rrq(rom, "boot.bin", REQUEST);
    assert!(
        !out.iter()
            .any(|(_, _, p)| matches!(p, Packet::Error { .. })),
        "nothing tells the client off: {out:?}"
    );
    let live = oack_local(&out);
    assert_ne!(live, probe, "a new transfer");
    d.at_ms(3);
    let out = d.send(live, rom, &abort());
    assert!(out.is_empty(), "the late abort is swallowed: {out:?}");
    assert_eq!(d.server.stats().dropped_stale_error, 1);
    assert_eq!(d.server.stats().requests_replaced, 1);
    assert_eq!(fetch_rest(&mut d, live, rom), 10_000);
    let closed: Vec<(Local, Outcome)> = d
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Closed { id, outcome, .. } => Some((Local::Transfer(id), outcome)),
            _ => None,
        })
        .collect();
    assert!(closed.iter().any(|(l, o)| *l == probe
        && *o
            == Outcome::Aborted {
                reason: AbortReason::Superseded
            }));
    assert!(
        closed
            .iter()
            .any(|(l, o)| *l == live && matches!(o, Outcome::Completed { .. }))
    );
}

/// The ROM took a late retransmission of the probe's OACK as the answer
/// to its real request and acknowledges it: that ACK reaches the live
/// transfer (the agent gives one client address and port one server
/// port), which sends the file. Options match, so the bytes are right.
#[test]
fn ack_of_a_late_probe_oack_drives_the_live_transfer() {
    let mut d = direct();
    let rom = addr(5, 2071);
    let out = d.rrq(rom, "boot.bin", PROBE);
    let probe = oack_local(&out);
    // The abort arrives first this time: the probe ends.
    d.at_ms(2);
    assert!(d.send(probe, rom, &abort()).is_empty());
    d.at_ms(3);
    let out = d.rrq(rom, "boot.bin", REQUEST);
    let live = oack_local(&out);
    // Nothing is left to absorb: the probe's abort already came.
    assert_eq!(d.server.stats().requests_replaced, 0);
    assert_eq!(fetch_rest(&mut d, live, rom), 10_000);
    assert_eq!(d.server.stats().dropped_stale_error, 0);
}

/// A real ERROR from a client on a transfer that did not replace a probe
/// still ends it: only the one abort that may be in flight is swallowed.
#[test]
fn only_one_late_abort_is_swallowed() {
    let mut d = direct();
    let rom = addr(5, 2072);
    d.rrq(rom, "boot.bin", PROBE);
    d.at_ms(1);
    let live = oack_local(&d.rrq(rom, "boot.bin", REQUEST));
    d.at_ms(2);
    assert!(d.send(live, rom, &abort()).is_empty());
    d.at_ms(3);
    d.send(live, rom, &abort());
    assert_eq!(d.server.active(), 0, "a second ERROR is the client's own");
}

/// The same request again from the same port is a retransmission (iPXE
/// keeps its port across an RRQ's retries): answered by the running
/// transfer, never a second one.
#[test]
fn the_same_request_again_is_a_retransmission() {
    let mut d = direct();
    let rom = addr(5, 2073);
    let first = oack_local(&d.rrq(rom, "boot.bin", REQUEST));
    d.at_ms(300);
    let out = d.rrq(rom, "boot.bin", REQUEST);
    assert_eq!(oack_local(&out), first, "the OACK again, same transfer");
    assert_eq!(d.server.active(), 1);
    assert_eq!(d.server.stats().duplicate_requests, 1);
    assert_eq!(d.server.stats().requests_replaced, 0);
}

/// A request for another file from the port of a running transfer: the
/// client left the first (a ROM moving on after giving up); the new one
/// replaces it.
#[test]
fn another_file_from_the_same_port_replaces_the_running_transfer() {
    let mut d = direct();
    let rom = addr(5, 2074);
    let first = oack_local(&d.rrq(rom, "boot.bin", REQUEST));
    d.send(first, rom, &Packet::Ack { block: 0 });
    d.at_ms(50);
    let second = oack_local(&d.rrq(rom, "next.bin", REQUEST));
    assert_ne!(first, second);
    assert_eq!(d.server.active(), 1, "one transfer per address and port");
    assert_eq!(fetch_rest(&mut d, second, rom), 3_000);
}

/// Requests waiting for a slot: a retransmission merges with the waiting
/// request (answered once), a different request from the same port
/// replaces it.
#[test]
fn a_waiting_request_is_merged_or_replaced() {
    let config = Config {
        max_active: 1,
        max_overflow: 0,
        ..Config::default()
    };
    let mut d = Direct::new(
        config,
        files(&[("boot.bin", content(10_000)), ("next.bin", content(3_000))]),
    );
    let busy = addr(9, 3000);
    let holder = oack_local(&d.rrq(busy, "boot.bin", REQUEST));
    let rom = addr(5, 2075);
    assert!(d.rrq(rom, "boot.bin", PROBE).is_empty(), "queued");
    d.at_ms(10);
    assert!(d.rrq(rom, "boot.bin", PROBE).is_empty());
    assert_eq!(d.server.queued(), 1, "merged");
    assert_eq!(d.server.stats().duplicate_requests, 1);
    d.at_ms(20);
    assert!(d.rrq(rom, "next.bin", REQUEST).is_empty());
    assert_eq!(d.server.queued(), 1, "replaced, not added");
    assert_eq!(d.server.stats().requests_replaced, 1);
    // The slot frees: the replacing request is the one answered, once.
    d.at_ms(30);
    let out = d.send(holder, busy, &abort());
    let oacks: Vec<_> = out
        .iter()
        .filter(|(_, dest, p)| *dest == rom && matches!(p, Packet::Oack { .. }))
        .collect();
    assert_eq!(oacks.len(), 1, "{out:?}");
    assert_eq!(fetch_rest(&mut d, oacks[0].0, rom), 3_000);
}
