//! Protocol rules, one datagram at a time: duplicate ACKs, transfer IDs,
//! refusals, timers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::direct::{Direct, Out, addr, data_blocks};
use super::harness::{content, files};
use crate::{
    AbortReason, Config, ErrorCode, Event, Local, OpenError, Outcome, Packet, SafePath, Server,
};

fn ack(block: u16) -> Packet {
    Packet::Ack { block }
}

/// The transfer socket the replies came from.
fn tid(out: &[Out]) -> Local {
    match out.first() {
        Some((local @ Local::Transfer(_), _, _)) => *local,
        other => panic!("expected a reply from a transfer socket, got {other:?}"),
    }
}

fn error_code(out: &[Out]) -> ErrorCode {
    match out {
        [(_, _, Packet::Error { code, .. })] => *code,
        other => panic!("expected one ERROR, got {other:?}"),
    }
}

fn started(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Started { .. }))
        .count()
}

fn big() -> Direct {
    Direct::new(Config::default(), files(&[("f", content(100_000))]))
}

#[test]
fn first_duplicate_ack_resends_once() {
    let mut d = big();
    let c = addr(1, 2000);
    let out = d.rrq(c, "f", &[]);
    assert_eq!(data_blocks(&out), [1]);
    let t = tid(&out);
    assert_eq!(data_blocks(&d.at_ms(10).send(t, c, &ack(1))), [2]);
    // Block 2 is lost; the client's own timer re-ACKs 1: resend at once.
    let out = d.at_ms(40).send(t, c, &ack(1));
    assert_eq!(data_blocks(&out), [2]);
    // Further duplicates of the same block are ignored.
    assert!(d.at_ms(41).send(t, c, &ack(1)).is_empty());
    assert!(d.at_ms(45).send(t, c, &ack(1)).is_empty());
    assert_eq!(d.server.stats().retransmits_duplicate, 1);
    assert_eq!(d.server.stats().dropped_duplicate_ack, 2);
    // Block 2 went out twice, so a second ACK 2 may be an echo of our own
    // resend: it is left to the timer.
    assert_eq!(data_blocks(&d.at_ms(50).send(t, c, &ack(2))), [3]);
    assert!(d.at_ms(90).send(t, c, &ack(2)).is_empty());
    // Block 3 went out once: progress re-arms the rule for block 4.
    assert_eq!(data_blocks(&d.at_ms(95).send(t, c, &ack(3))), [4]);
    assert_eq!(data_blocks(&d.at_ms(135).send(t, c, &ack(3))), [4]);
    assert_eq!(d.server.stats().retransmits_duplicate, 2);
}

#[test]
fn echoes_of_our_own_resend_do_not_double_the_stream() {
    // Sorcerer's Apprentice: block 1 goes out twice (the first ACK was
    // slow), so the client ACKs 1 twice. The second ACK must not trigger a
    // resend of block 2, or every later block would go out twice.
    let mut d = big();
    let c = addr(1, 2000);
    let t = tid(&d.rrq(c, "f", &[]));
    let due = d.next_timeout_ms().expect("timer armed");
    assert_eq!(data_blocks(&d.at_ms(due as u64).timeout()), [1]);
    assert_eq!(data_blocks(&d.at_ms(300).send(t, c, &ack(1))), [2]);
    assert!(d.at_ms(301).send(t, c, &ack(1)).is_empty(), "echo ignored");
    assert_eq!(data_blocks(&d.at_ms(302).send(t, c, &ack(2))), [3]);
    // Block 2 went out once, so the chain is broken: a later duplicate ACK 2
    // (the client timing out on a lost block 3) gets its one resend.
    assert_eq!(data_blocks(&d.at_ms(400).send(t, c, &ack(2))), [3]);
    assert_eq!(d.server.stats().retransmits_duplicate, 1);
    assert_eq!(d.server.stats().dropped_duplicate_ack, 1);
}

#[test]
fn windowed_partial_ack_restarts_window_and_ignores_echoed_naks() {
    let mut d = Direct::new(Config::default(), files(&[("f", content(100))]));
    let c = addr(1, 2000);
    let out = d.rrq(c, "f", &[("blksize", "8"), ("windowsize", "4")]);
    let t = tid(&out);
    assert!(matches!(out[0].2, Packet::Oack { .. }));
    assert_eq!(data_blocks(&d.at_ms(10).send(t, c, &ack(0))), [1, 2, 3, 4]);
    // Block 3 lost: the client ACKs 2, the server goes back to 3.
    assert_eq!(data_blocks(&d.at_ms(20).send(t, c, &ack(2))), [3, 4, 5, 6]);
    // Block 4 (out of order at the client) makes it ACK 2 again at once:
    // an echo of the damaged window, not a timeout; ignored.
    assert!(d.at_us(20_100).send(t, c, &ack(2)).is_empty());
    assert_eq!(data_blocks(&d.at_ms(30).send(t, c, &ack(6))), [7, 8, 9, 10]);
    // Stale ACKs (before the window) are dropped.
    assert!(d.at_ms(31).send(t, c, &ack(3)).is_empty());
    assert_eq!(d.server.stats().dropped_stale_ack, 1);
    // 100 bytes at 8 = 13 blocks, the last one 4 bytes.
    assert_eq!(data_blocks(&d.at_ms(40).send(t, c, &ack(10))), [11, 12, 13]);
    assert!(d.at_ms(50).send(t, c, &ack(13)).is_empty());
    assert!(matches!(
        d.events().last(),
        Some(Event::Closed {
            outcome: Outcome::Completed { bytes: 100, .. },
            ..
        })
    ));
}

#[test]
fn wrong_source_gets_error_5_and_transfer_continues() {
    let mut d = big();
    let c = addr(1, 2000);
    let t = tid(&d.rrq(c, "f", &[]));
    for intruder in [addr(1, 2001), addr(9, 2000)] {
        let out = d.at_ms(5).send(t, intruder, &ack(1));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, t, "sent from the transfer's socket");
        assert_eq!(out[0].1, intruder);
        assert_eq!(error_code(&out), ErrorCode::UnknownTransferId);
    }
    // An ERROR from a stranger is never answered (no ERROR ping-pong).
    let stray = Packet::Error {
        code: ErrorCode::UnknownTransferId,
        msg: String::new(),
    };
    assert!(d.at_ms(6).send(t, addr(1, 2001), &stray).is_empty());
    assert_eq!(d.server.stats().dropped_wrong_source, 3);
    assert_eq!(data_blocks(&d.at_ms(10).send(t, c, &ack(1))), [2]);
    assert_eq!(d.server.active(), 1);
}

#[test]
fn write_requests_are_refused() {
    let mut d = big();
    let wrq = Packet::Wrq {
        filename: "f".to_owned(),
        mode: crate::Mode::Octet,
        options: vec![],
    };
    let out = d.send(Local::Listener, addr(1, 2000), &wrq);
    assert_eq!(error_code(&out), ErrorCode::AccessViolation);
    assert!(matches!(&out[0].2, Packet::Error { msg, .. } if msg == "server is read-only"));
    assert_eq!(out[0].0, Local::Listener);
    assert_eq!(d.server.active(), 0);
    assert_eq!(d.server.stats().refused_write, 1);
}

#[test]
fn traversal_paths_are_refused_without_a_transfer() {
    let mut d = big();
    d.files.insert("etc/passwd".to_owned(), content(10));
    for (i, name) in [
        "../etc/passwd",
        "a/../../b",
        "%2e%2e/x",
        "a\\b",
        "C:/x",
        "/../f",
    ]
    .into_iter()
    .enumerate()
    {
        let out = d.rrq(addr(1, 3000 + i as u16), name, &[]);
        assert_eq!(error_code(&out), ErrorCode::AccessViolation, "{name}");
        assert_eq!(out[0].0, Local::Listener);
    }
    // A NUL cannot be inside a file name on the wire: it ends the name, and
    // what follows is not a valid mode. Refused as a malformed request.
    let out = d.raw(
        Local::Listener,
        addr(1, 4000),
        b"\x00\x01f\x00/etc\x00octet\x00",
    );
    assert_eq!(error_code(&out), ErrorCode::IllegalOperation);
    assert_eq!(d.server.active(), 0);
    assert_eq!(started(&d.events()), 0);
    assert_eq!(d.server.stats().refused_path, 6);
    assert_eq!(d.server.stats().dropped_malformed, 1);
}

#[test]
fn leading_slash_is_the_same_file() {
    let mut d = Direct::new(Config::default(), files(&[("vmlinuz", content(700))]));
    let c = addr(1, 2000);
    let out = d.rrq(c, "/vmlinuz", &[]);
    let t = tid(&out);
    assert!(matches!(&out[0].2, Packet::Data { data, .. } if data[..] == content(700)[..512]));
    assert!(matches!(
        &d.events()[..],
        [Event::Started { path, .. }] if path.as_str() == "vmlinuz"
    ));
    d.send(t, c, &ack(1));
    d.send(t, c, &ack(2));
    assert_eq!(d.server.stats().transfers_completed, 1);
}

#[test]
fn not_found_and_access_denied() {
    let mut d = big();
    let out = d.rrq(addr(1, 2000), "missing", &[("tsize", "0")]);
    assert_eq!(error_code(&out), ErrorCode::FileNotFound);
    assert!(matches!(
        &d.events()[..],
        [Event::Refused { code: ErrorCode::FileNotFound, filename: Some(f), .. }] if f == "missing"
    ));

    let mut server = Server::new(Config::default());
    let deny =
        |_: &SafePath, _: SocketAddr| -> Result<Bytes, OpenError> { Err(OpenError::AccessDenied) };
    server.handle_datagram(
        d.now,
        Local::Listener,
        addr(1, 2000),
        &Packet::Rrq {
            filename: "secret".to_owned(),
            mode: crate::Mode::Octet,
            options: vec![],
        }
        .encode(),
        &deny,
    );
    let t = server.poll_transmit().expect("an error reply");
    assert!(matches!(
        Packet::parse(&t.payload),
        Ok(Packet::Error {
            code: ErrorCode::AccessViolation,
            ..
        })
    ));
    assert_eq!(server.stats().refused_access_denied, 1);
}

/// A file that is not ready yet (being fetched or verified) gets no answer
/// at all, so the client's retransmitted request is served once it is.
#[test]
fn not_ready_is_left_unanswered_and_the_retransmission_is_served() {
    let ready = std::cell::Cell::new(false);
    let source = |_: &SafePath, _: SocketAddr| -> Result<Bytes, OpenError> {
        if ready.get() {
            Ok(Bytes::from_static(b"boot file"))
        } else {
            Err(OpenError::NotReady)
        }
    };
    let mut server = Server::new(Config::default());
    let rrq = Packet::Rrq {
        filename: "blobs/x".to_owned(),
        mode: crate::Mode::Octet,
        options: vec![],
    }
    .encode();
    let now = std::time::Instant::now();
    server.handle_datagram(now, Local::Listener, addr(1, 2000), &rrq, &source);
    assert!(server.poll_transmit().is_none(), "no ERROR, no DATA");
    assert_eq!(server.stats().dropped_not_ready, 1);
    assert_eq!(server.stats().refused_not_found, 0);

    ready.set(true);
    let later = now + std::time::Duration::from_secs(1);
    server.handle_datagram(later, Local::Listener, addr(1, 2000), &rrq, &source);
    let t = server.poll_transmit().expect("the first block");
    assert!(matches!(
        Packet::parse(&t.payload),
        Ok(Packet::Data { block: 1, .. })
    ));
}

#[test]
fn retransmits_on_a_short_fixed_timer_then_times_out() {
    let mut d = big();
    let c = addr(1, 2000);
    d.rrq(c, "f", &[]);
    let mut resends = Vec::new();
    let mut last = 0u128;
    while let Some(due) = d.next_timeout_ms() {
        assert!(due > last, "time moves forward");
        last = due;
        let out = d.at_ms(due as u64).timeout();
        if !out.is_empty() {
            assert_eq!(data_blocks(&out), [1]);
            resends.push(due);
        }
    }
    let config = Config::default();
    assert_eq!(resends.len(), config.max_retries as usize);
    let mut intervals = vec![resends[0]];
    intervals.extend(resends.windows(2).map(|w| w[1] - w[0]));
    // First resend after the initial RTO, then a fixed 500 ms: well under a
    // second, and never growing.
    assert_eq!(intervals[0], 250);
    assert!(intervals[1..].iter().all(|&i| i == 500), "{intervals:?}");
    assert!(matches!(
        d.events().last(),
        Some(Event::Closed {
            outcome: Outcome::TimedOut { acked_bytes: 0 },
            ..
        })
    ));
    assert_eq!(d.server.active(), 0);
    assert_eq!(d.server.poll_timeout(), None);
    assert_eq!(d.server.stats().transfers_timed_out, 1);
}

#[test]
fn retransmit_interval_adapts_to_rtt() {
    let mut d = big();
    let c = addr(1, 2000);
    let t = tid(&d.rrq(c, "f", &[]));
    // RTT 2 ms: the RTO hits the 50 ms floor.
    d.at_ms(2).send(t, c, &ack(1));
    assert_eq!(d.next_timeout_ms(), Some(52));
    // RTT 200 ms pushes it to the 500 ms ceiling, never above.
    d.at_ms(202).send(t, c, &ack(2));
    d.at_ms(402).send(t, c, &ack(3));
    d.at_ms(602).send(t, c, &ack(4));
    let due = d.next_timeout_ms().expect("armed") - 602;
    assert!((250..=500).contains(&due), "{due}");
}

#[test]
fn oack_is_retransmitted_until_max_retries() {
    let mut d = Direct::new(
        Config {
            max_retries: 3,
            ..Config::default()
        },
        files(&[("f", content(10))]),
    );
    let out = d.rrq(addr(1, 2000), "f", &[("tsize", "0")]);
    assert!(matches!(out[0].2, Packet::Oack { .. }));
    let mut oacks = 0;
    while let Some(due) = d.next_timeout_ms() {
        oacks += d
            .at_ms(due as u64)
            .timeout()
            .iter()
            .filter(|o| matches!(o.2, Packet::Oack { .. }))
            .count();
    }
    assert_eq!(oacks, 3);
    assert!(matches!(
        d.events().last(),
        Some(Event::Closed {
            outcome: Outcome::TimedOut { .. },
            ..
        })
    ));
}

#[test]
fn repeated_rrq_does_not_start_a_second_transfer() {
    let mut d = big();
    let c = addr(1, 2000);
    let out = d.rrq(c, "f", &[("tsize", "0")]);
    let t = tid(&out);
    // The OACK was lost; the client repeats its RRQ: the OACK goes out
    // again from the same transfer socket, once.
    let out = d.at_ms(260).rrq(c, "f", &[("tsize", "0")]);
    assert!(matches!(&out[..], [(l, _, Packet::Oack { .. })] if *l == t));
    assert!(d.at_ms(270).rrq(c, "f", &[("tsize", "0")]).is_empty());
    assert_eq!(d.server.active(), 1);
    assert_eq!(started(&d.events()), 1);
    assert_eq!(d.server.stats().duplicate_requests, 2);
    // A different port is a different transfer.
    let out = d.rrq(addr(1, 2001), "f", &[]);
    assert_ne!(tid(&out), t);
    assert_eq!(d.server.active(), 2);
}

#[test]
fn repeated_rrq_after_progress_supersedes_once_stalled() {
    let mut d = big();
    let c = addr(1, 2000);
    let t = tid(&d.rrq(c, "f", &[]));
    d.at_ms(1).send(t, c, &ack(1));
    d.at_ms(2).send(t, c, &ack(2));
    // A copy of the first RRQ, delayed or duplicated by the network, while
    // the client is still acknowledging: ignored.
    assert!(d.at_ms(3).rrq(c, "f", &[]).is_empty());
    assert_eq!(d.server.stats().duplicate_requests, 1);
    assert_eq!(data_blocks(&d.at_ms(4).send(t, c, &ack(3))), [4]);
    // No progress for a tick (500 ms), then the request again: the client
    // started over.
    d.at_ms(300).timeout();
    let out = d.at_ms(504).rrq(c, "f", &[]);
    assert_eq!(data_blocks(&out), [1]);
    assert_ne!(tid(&out), t);
    let events = d.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Closed {
            outcome: Outcome::Aborted {
                reason: AbortReason::Superseded
            },
            ..
        }
    )));
    assert_eq!(started(&events), 2);
    assert_eq!(d.server.active(), 1);
}

#[test]
fn client_error_ends_transfer_and_purges_unsent_packets() {
    let mut d = big();
    let c = addr(1, 2000);
    let t = tid(&d.rrq(c, "f", &[("windowsize", "8")]));
    // Window 1..=8 queued but not yet polled when the client aborts.
    let files = d.files.clone();
    let lookup = |p: &SafePath, _: SocketAddr| super::harness::lookup(&files, p);
    d.server
        .handle_datagram(d.now, t, c, &ack(0).encode(), &lookup);
    let abort = Packet::Error {
        code: ErrorCode::NotDefined,
        msg: "user abort".to_owned(),
    };
    d.server
        .handle_datagram(d.now, t, c, &abort.encode(), &lookup);
    assert!(
        d.transmits().is_empty(),
        "nothing sent for a closed transfer"
    );
    assert!(matches!(
        d.events().last(),
        Some(Event::Closed {
            outcome: Outcome::Aborted {
                reason: AbortReason::ClientError { code: ErrorCode::NotDefined, message }
            },
            ..
        }) if message == "user abort"
    ));
    assert_eq!(d.server.poll_timeout(), None);
    // Late packets for the closed transfer are counted and dropped.
    assert!(d.send(t, c, &ack(1)).is_empty());
    assert_eq!(d.server.stats().dropped_unknown_transfer, 1);
}

#[test]
fn malformed_and_unexpected_datagrams_are_counted() {
    let mut d = big();
    let c = addr(1, 2000);
    assert!(d.raw(Local::Listener, c, b"\xff").is_empty());
    assert!(d.raw(Local::Listener, c, b"\x00\x09xx").is_empty());
    assert!(d.send(Local::Listener, c, &ack(1)).is_empty());
    let t = tid(&d.rrq(c, "f", &[]));
    assert!(d.raw(t, c, b"\x00\x04\x00").is_empty());
    assert!(d.send(t, c, &Packet::Oack { options: vec![] }).is_empty());
    let s = d.server.stats();
    assert_eq!(s.dropped_malformed, 3);
    assert_eq!(s.dropped_unexpected_on_listener, 1);
    assert_eq!(s.dropped_unexpected_on_transfer, 1);
    assert_eq!(s.datagrams_received, 6);
    assert_eq!(d.server.active(), 1);
}

proptest! {
    #[test]
    fn server_never_panics_on_garbage(
        datagrams in proptest::collection::vec(
            (any::<bool>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64)),
            0..40,
        )
    ) {
        let mut d = Direct::new(Config::default(), files(&[("f", content(5000))]));
        let c = addr(1, 2000);
        let t = tid(&d.rrq(c, "f", &[("windowsize", "3"), ("blksize", "100")]));
        for (i, (to_transfer, port, mut bytes)) in datagrams.into_iter().enumerate() {
            if i % 3 == 0 {
                // Sometimes a plausible header.
                bytes.splice(0..0, [0u8, (port % 7) as u8]);
            }
            let local = if to_transfer { t } else { Local::Listener };
            let src = if port % 2 == 0 { c } else { addr(2, port) };
            d.at_ms(i as u64 * 10).raw(local, src, &bytes);
            d.timeout();
        }
        prop_assert!(d.server.active() <= 1 + 40);
    }
}

#[test]
fn timer_interval_never_exceeds_one_second() {
    let config = Config::default();
    assert!(config.retransmit_max < Duration::from_secs(1));
}

#[test]
fn one_source_runs_at_most_max_per_source_transfers() {
    let mut d = Direct::new(
        Config {
            max_per_source: 2,
            ..Config::default()
        },
        files(&[("f", content(100_000))]),
    );
    // Three requests from one address (three source ports): two start,
    // the third gets nothing (no answer to amplify) and is counted.
    assert_eq!(data_blocks(&d.rrq(addr(7, 3001), "f", &[])), [1]);
    assert_eq!(data_blocks(&d.rrq(addr(7, 3002), "f", &[])), [1]);
    assert!(d.rrq(addr(7, 3003), "f", &[]).is_empty());
    assert_eq!(d.server.stats().dropped_per_source, 1);
    // Another machine is not affected.
    assert_eq!(data_blocks(&d.rrq(addr(8, 3001), "f", &[])), [1]);
    // When one of the first address's transfers ends (nobody ACKs: they
    // time out), it may start another.
    let mut closed = 0;
    for i in 1..200u64 {
        d.at_ms(i * 500);
        let _ = d.timeout();
        closed += d
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Closed { .. }))
            .count();
        if closed > 0 {
            break;
        }
    }
    assert!(closed > 0, "an unanswered transfer times out");
    assert!(!data_blocks(&d.rrq(addr(7, 3004), "f", &[])).is_empty());
}

/// Content on "disk": each byte is its position mod 251; a read reaching
/// past `fail_from` fails; as large as `len` says (nothing is allocated for
/// the bytes never read).
#[derive(Debug)]
struct Reader {
    len: u64,
    fail_from: u64,
}

impl crate::ReadAt for Reader {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        if offset + len as u64 > self.fail_from {
            return Err(std::io::Error::other("EIO"));
        }
        Ok((offset..offset + len as u64)
            .map(|i| (i % 251) as u8)
            .collect())
    }
}

fn reader_source(
    len: u64,
    fail_from: u64,
) -> impl Fn(&SafePath, SocketAddr) -> Result<crate::Content, OpenError> {
    let reader = std::sync::Arc::new(Reader { len, fail_from });
    move |_: &SafePath, _: SocketAddr| Ok(crate::Content::reader(reader.clone()))
}

fn rrq(filename: &str, mode: crate::Mode, options: &[(&str, &str)]) -> Vec<u8> {
    Packet::Rrq {
        filename: filename.to_owned(),
        mode,
        options: options
            .iter()
            .map(|(n, v)| crate::RawOption {
                name: (*n).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
    }
    .encode()
    .to_vec()
}

#[test]
fn blocks_are_read_from_the_reader_at_their_offsets() {
    let mut server = Server::new(Config::default());
    let source = reader_source(1200, u64::MAX);
    let c = addr(1, 2000);
    let now = std::time::Instant::now();
    let req = rrq("big", crate::Mode::Octet, &[]);
    server.handle_datagram(now, Local::Listener, c, &req, &source);
    let t = server.poll_transmit().expect("DATA 1");
    match Packet::parse(&t.payload) {
        Ok(Packet::Data { block: 1, data }) => {
            assert_eq!(data.len(), 512);
            assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        }
        other => panic!("expected DATA 1, got {other:?}"),
    }
    let local = t.local;
    server.handle_datagram(now, local, c, &ack(1).encode(), &source);
    let t = server.poll_transmit().expect("DATA 2");
    match Packet::parse(&t.payload) {
        Ok(Packet::Data { block: 2, data }) => {
            assert_eq!(data.len(), 512);
            let want = (512..1024).map(|i| (i % 251) as u8);
            assert!(data.iter().copied().eq(want));
        }
        other => panic!("expected DATA 2, got {other:?}"),
    }
}

#[test]
fn a_block_that_cannot_be_read_ends_the_transfer_once() {
    let mut server = Server::new(Config::default());
    // Blocks are read 8 at a time (4 KiB at blksize 512): the first read
    // works, the second reaches past 6,000 bytes and fails.
    let source = reader_source(20_000, 6_000);
    let c = addr(1, 2000);
    let now = std::time::Instant::now();
    server.handle_datagram(
        now,
        Local::Listener,
        c,
        &rrq("f", crate::Mode::Octet, &[]),
        &source,
    );
    for block in 1..=8u16 {
        let t = server.poll_transmit().expect("a DATA packet");
        assert!(
            matches!(Packet::parse(&t.payload), Ok(Packet::Data { block: b, .. }) if b == block)
        );
        server.handle_datagram(now, t.local, c, &ack(block).encode(), &source);
    }
    assert!(server.poll_transmit().is_none(), "no block 9, no ERROR");
    let closed: Vec<_> = std::iter::from_fn(|| server.poll_event())
        .filter(|e| matches!(e, Event::Closed { .. }))
        .collect();
    assert!(
        matches!(
            &closed[..],
            [Event::Closed {
                outcome: Outcome::Aborted {
                    reason: AbortReason::ReadFailed { .. }
                },
                ..
            }]
        ),
        "{closed:?}"
    );
    assert_eq!(server.stats().read_errors, 1);
    assert_eq!(server.stats().transfers_aborted, 1);
}

#[test]
fn files_tftp_cannot_address_are_refused_clearly() {
    let mut server = Server::new(Config::default());
    let now = std::time::Instant::now();
    // 5 GiB: its tsize does not fit the 32 bits PXE ROMs read it into.
    let huge = reader_source(5 << 30, u64::MAX);
    let req = rrq("huge", crate::Mode::Octet, &[("tsize", "0")]);
    server.handle_datagram(now, Local::Listener, addr(1, 2000), &req, &huge);
    let t = server.poll_transmit().expect("an error reply");
    match Packet::parse(&t.payload) {
        Ok(Packet::Error { code, msg }) => {
            assert_eq!(code, ErrorCode::DiskFull);
            assert!(msg.contains("too large") && msg.contains("HTTP"), "{msg}");
        }
        other => panic!("expected ERROR 3, got {other:?}"),
    }
    // Netascii is converted in memory: bounded.
    let big = reader_source(crate::MAX_NETASCII_SIZE + 1, u64::MAX);
    let req = rrq("big", crate::Mode::Netascii, &[]);
    server.handle_datagram(now, Local::Listener, addr(1, 2001), &req, &big);
    let t = server.poll_transmit().expect("an error reply");
    assert!(matches!(
        Packet::parse(&t.payload),
        Ok(Packet::Error {
            code: ErrorCode::DiskFull,
            ..
        })
    ));
    assert_eq!(server.stats().refused_too_large, 2);
    assert_eq!(server.stats().transfers_started, 0);
    // Exactly 4 GiB - 1 is served (block numbers roll over past 65,535).
    let edge = reader_source(crate::MAX_FILE_SIZE, u64::MAX);
    let req = rrq("edge", crate::Mode::Octet, &[("tsize", "0")]);
    server.handle_datagram(now, Local::Listener, addr(1, 2002), &req, &edge);
    assert_eq!(server.stats().transfers_started, 1);
}
