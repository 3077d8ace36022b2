//! Draining for shutdown on the virtual clock: running and queued transfers
//! finish, new requests get silence, and what is still running when the
//! drain period ends is aborted then, not later.

use std::time::Duration;

use super::harness::{ClientResult, ClientSpec, Sim, content, files};
use crate::{AbortReason, Config, Event, Outcome};

const LIMIT: Duration = Duration::from_secs(120);
const PERIOD: Duration = Duration::from_secs(8);

#[test]
fn a_running_transfer_finishes_and_new_requests_get_silence() {
    let data = content(100_000);
    let mut sim = Sim::new(Config::default(), files(&[("f", data.clone())]));
    sim.add_client(ClientSpec::new("f", &[]));
    let mut late = ClientSpec::new("f", &[]);
    late.start_at = Duration::from_millis(50);
    late.max_retries = 2;
    sim.add_client(late);
    sim.advance(Duration::from_millis(20));
    assert_eq!(sim.server.active(), 1);
    let now = sim.now;
    sim.server.handle_drain(now, PERIOD);
    assert!(sim.server.is_draining());
    assert!(!sim.server.is_drained(), "a transfer is still running");
    sim.run(LIMIT);
    sim.assert_received(0, &data);
    assert_eq!(sim.result(1), Some(&ClientResult::GaveUp));
    assert!(sim.server.stats().dropped_draining >= 1);
    assert!(sim.server.is_drained());
    assert_eq!(sim.server.poll_timeout(), None, "nothing left to wake for");
    assert!(matches!(
        sim.closed().as_slice(),
        [(_, Outcome::Completed { .. })]
    ));
}

#[test]
fn queued_requests_still_run_during_the_drain() {
    let data = content(20_000);
    let config = Config {
        max_active: 1,
        max_overflow: 0,
        ..Config::default()
    };
    let mut sim = Sim::new(config, files(&[("f", data.clone())]));
    sim.add_client(ClientSpec::new("f", &[]));
    sim.add_client(ClientSpec::new("f", &[]));
    sim.advance(Duration::from_millis(5));
    assert_eq!((sim.server.active(), sim.server.queued()), (1, 1));
    let now = sim.now;
    sim.server.handle_drain(now, PERIOD);
    sim.run(LIMIT);
    sim.assert_received(0, &data);
    sim.assert_received(1, &data);
    assert!(sim.server.is_drained());
}

#[test]
fn what_still_runs_at_the_deadline_is_aborted_then() {
    let mut sim = Sim::new(Config::default(), files(&[("f", content(100_000))]));
    // A client that stops acknowledging after its first few blocks, and
    // retries for far longer than the drain period.
    let mut spec = ClientSpec::new("f", &[]);
    spec.max_retries = 100;
    sim.add_client(spec);
    sim.loss = Box::new(|w| w.to_server && w.n >= 3);
    sim.advance(Duration::from_millis(10));
    let start = sim.elapsed();
    let now = sim.now;
    sim.server.handle_drain(now, PERIOD);
    // A second request to drain never extends the deadline.
    sim.server
        .handle_drain(now + Duration::from_secs(5), PERIOD);
    assert_eq!(
        sim.server.poll_timeout().map(|t| t <= now + PERIOD),
        Some(true)
    );
    sim.advance(PERIOD - Duration::from_millis(1));
    assert_eq!(sim.server.active(), 1, "still within the drain period");
    sim.advance(Duration::from_millis(2));
    assert_eq!(sim.server.active(), 0);
    assert!(sim.server.is_drained());
    let aborted: Vec<Duration> = sim
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Closed {
                outcome:
                    Outcome::Aborted {
                        reason: AbortReason::Shutdown,
                    },
                ..
            } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(aborted, vec![start + PERIOD]);
}
