//! One read transfer: lockstep or windowed (RFC 7440) sending, block number
//! wrap, retransmission timers and the duplicate-ACK rule.
//!
//! Blocks are numbered from 1 with a `u64` internally and sent as the low 16
//! bits, so block 65536 goes out as 0 (the common "roll over to 0"
//! convention). A file of `n` bytes has `n / blksize + 1` blocks; the last
//! is short, and empty when `n` is a multiple of the block size.
//!
//! Resending:
//! - on the **timer**: the whole window in flight (go-back-N). The first
//!   resend after a send waits the adaptive RTO (`max(4·srtt, srtt +
//!   4·rttvar)` clamped to the configured min/max, the configured initial
//!   value before any sample); later ones wait the configured maximum. The
//!   interval never grows beyond that: no exponential backoff. After
//!   `max_retries` timer resends without progress the transfer times out.
//! - on a **duplicate ACK** (an ACK of the block before the window, which is
//!   how a client says "I timed out waiting"): the window is resent at once,
//!   but only once per window (Sorcerer's Apprentice, RFC 1123), and not
//!   when the duplicate can be an echo of packets we sent twice ourselves
//!   (the previous window was resent) or of a window still in flight (it
//!   came less than srtt/2 after we sent). Those are left to the timer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::{Outcome, TransferSummary};
use crate::options::Negotiated;
use crate::packet::{Packet, RawOption};
use crate::path::SafePath;
use crate::server::{Local, TransferId};
use crate::stats::Stats;

/// A packet waiting to be sent.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) local: Local,
    pub(crate) dest: SocketAddr,
    pub(crate) packet: Packet,
}

/// Packets a transfer wants sent. Resends go to `urgent`, which the server
/// drains first: a client that missed a packet is served before clients
/// that are doing well.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) urgent: std::collections::VecDeque<Outgoing>,
    pub(crate) normal: std::collections::VecDeque<Outgoing>,
}

impl Outbox {
    fn push(&mut self, urgent: bool, outgoing: Outgoing) {
        if urgent {
            self.urgent.push_back(outgoing);
        } else {
            self.normal.push_back(outgoing);
        }
    }
}

/// Retransmission settings, from [`crate::Config`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) initial: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) max_retries: u32,
}

/// What the server must do after an input to a transfer.
#[derive(Debug)]
pub(crate) enum Step {
    Continue,
    Closed(Outcome),
}

/// A read transfer in progress.
#[derive(Debug)]
pub(crate) struct Transfer {
    id: TransferId,
    client: SocketAddr,
    path: SafePath,
    data: Bytes,
    blksize: usize,
    windowsize: u64,
    last_block: u64,
    oack: Vec<RawOption>,
    started: Instant,
    timing: Timing,
    rtt: Rtt,
    phase: Phase,
}

/// Where the transfer is. Finished transfers do not exist: the server
/// removes them as soon as a step returns [`Step::Closed`].
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// OACK sent; waiting for ACK 0.
    Negotiating { flight: Flight },
    /// DATA blocks `base..=last_sent` in flight; `base - 1` is acknowledged.
    Sending {
        base: u64,
        last_sent: u64,
        flight: Flight,
    },
}

/// Bookkeeping for the packets in flight.
#[derive(Clone, Copy, Debug)]
struct Flight {
    /// When they were last sent.
    sent_at: Instant,
    /// When the timer resends them.
    deadline: Instant,
    /// Timer resends since the last progress.
    retries: u32,
    /// How often they were sent (1 = once; only then is an RTT sample taken).
    sends: u32,
    /// Whether the one duplicate-ACK resend was used.
    dup_resent: bool,
    /// Whether the previous flight went out only once; if not, duplicate
    /// ACKs for it may be echoes of our own resends.
    prev_clean: bool,
}

impl Flight {
    fn new(now: Instant, rto: Duration, prev_clean: bool) -> Flight {
        Flight {
            sent_at: now,
            deadline: later(now, rto),
            retries: 0,
            sends: 1,
            dup_resent: false,
            prev_clean,
        }
    }
}

/// Smoothed round-trip time (RFC 6298 style), sampled only from flights
/// sent once (Karn's rule).
#[derive(Clone, Copy, Debug, Default)]
struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rtt {
    fn sample(&mut self, d: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(d);
                self.rttvar = d / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(d);
                self.rttvar = (self.rttvar.saturating_mul(3).saturating_add(err)) / 4;
                self.srtt = Some(srtt.saturating_mul(7).saturating_add(d) / 8);
            }
        }
    }

    fn rto(&self, timing: &Timing) -> Duration {
        match self.srtt {
            None => timing.initial,
            Some(srtt) => srtt
                .saturating_mul(4)
                .max(srtt.saturating_add(self.rttvar.saturating_mul(4)))
                .clamp(timing.min, timing.max),
        }
    }
}

fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// The wire form of an internal block number.
fn wire(block: u64) -> u16 {
    (block % 65536) as u16
}

impl Transfer {
    /// Starts a transfer: sends the OACK, or DATA 1 when nothing was
    /// negotiated.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        id: TransferId,
        client: SocketAddr,
        path: SafePath,
        data: Bytes,
        negotiated: Negotiated,
        timing: Timing,
        now: Instant,
        out: &mut Outbox,
        stats: &mut Stats,
    ) -> Transfer {
        let blksize = usize::from(negotiated.blksize.max(crate::options::MIN_BLKSIZE));
        let last_block = u64::try_from(data.len() / blksize)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut transfer = Transfer {
            id,
            client,
            path,
            data,
            blksize,
            windowsize: u64::from(negotiated.windowsize.max(1)),
            last_block,
            oack: negotiated.oack,
            started: now,
            timing,
            rtt: Rtt::default(),
            phase: Phase::Negotiating {
                flight: Flight::new(now, timing.initial, true),
            },
        };
        if transfer.oack.is_empty() {
            transfer.begin_window(now, 1, true, out, stats);
        } else {
            transfer.send_oack(out, false);
        }
        transfer
    }

    /// When the retransmit timer fires.
    pub(crate) fn deadline(&self) -> Instant {
        self.flight().deadline
    }

    /// The client's address and port (its transfer ID).
    pub(crate) fn client(&self) -> SocketAddr {
        self.client
    }

    /// Handles an ACK from the client.
    pub(crate) fn handle_ack(
        &mut self,
        now: Instant,
        block: u16,
        out: &mut Outbox,
        stats: &mut Stats,
    ) -> Step {
        match self.phase {
            Phase::Negotiating { flight } => {
                if block != 0 {
                    stats.dropped_stale_ack += 1;
                    return Step::Continue;
                }
                self.sample_rtt(now, &flight);
                self.begin_window(now, 1, flight.sends == 1, out, stats);
                Step::Continue
            }
            Phase::Sending {
                base,
                last_sent,
                flight,
            } => {
                let prev = base - 1;
                let delta = u64::from(block.wrapping_sub(wire(prev)));
                if delta > last_sent - prev {
                    stats.dropped_stale_ack += 1;
                    return Step::Continue;
                }
                if delta == 0 {
                    self.handle_duplicate(now, out, stats);
                    return Step::Continue;
                }
                let acked = prev + delta;
                if acked >= self.last_block {
                    return Step::Closed(Outcome::Completed {
                        bytes: self.data.len() as u64,
                        duration: now.saturating_duration_since(self.started),
                    });
                }
                self.sample_rtt(now, &flight);
                self.begin_window(now, acked + 1, flight.sends == 1, out, stats);
                Step::Continue
            }
        }
    }

    /// Handles the same request again from the same client port: before any
    /// progress it means our first packet was lost, so it counts as a
    /// duplicate ACK. Returns `false` when the transfer has progressed and the
    /// client must have started over (the caller supersedes it).
    pub(crate) fn handle_repeat_request(
        &mut self,
        now: Instant,
        out: &mut Outbox,
        stats: &mut Stats,
    ) -> bool {
        match self.phase {
            Phase::Negotiating { .. } => self.handle_duplicate(now, out, stats),
            Phase::Sending { base: 1, .. } if self.oack.is_empty() => {
                self.handle_duplicate(now, out, stats);
            }
            Phase::Sending { base: 1, .. } => stats.dropped_duplicate_ack += 1,
            Phase::Sending { .. } => return false,
        }
        true
    }

    /// Handles the retransmit timer.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        out: &mut Outbox,
        stats: &mut Stats,
    ) -> Step {
        let flight = self.flight();
        if now < flight.deadline {
            return Step::Continue;
        }
        if flight.retries >= self.timing.max_retries {
            return Step::Closed(Outcome::TimedOut {
                acked_bytes: self.acked_bytes(),
            });
        }
        stats.retransmits_timeout += self.resend(out);
        let max = self.timing.max;
        let flight = self.flight_mut();
        flight.retries += 1;
        flight.sends = flight.sends.saturating_add(1);
        flight.sent_at = now;
        flight.deadline = later(now, max);
        Step::Continue
    }

    /// A snapshot for the state dump.
    pub(crate) fn summary(&self) -> TransferSummary {
        TransferSummary {
            id: self.id,
            client: self.client,
            path: self.path.clone(),
            size: self.data.len() as u64,
            acked_bytes: self.acked_bytes(),
            blksize: u16::try_from(self.blksize).unwrap_or(u16::MAX),
            windowsize: u16::try_from(self.windowsize).unwrap_or(u16::MAX),
            started: self.started,
            negotiating: matches!(self.phase, Phase::Negotiating { .. }),
            retries: self.flight().retries,
        }
    }

    fn flight(&self) -> Flight {
        match self.phase {
            Phase::Negotiating { flight } | Phase::Sending { flight, .. } => flight,
        }
    }

    fn flight_mut(&mut self) -> &mut Flight {
        match &mut self.phase {
            Phase::Negotiating { flight } | Phase::Sending { flight, .. } => flight,
        }
    }

    fn acked_bytes(&self) -> u64 {
        match self.phase {
            Phase::Negotiating { .. } => 0,
            Phase::Sending { base, .. } => (base - 1)
                .saturating_mul(self.blksize as u64)
                .min(self.data.len() as u64),
        }
    }

    fn sample_rtt(&mut self, now: Instant, flight: &Flight) {
        if flight.sends == 1 {
            self.rtt
                .sample(now.saturating_duration_since(flight.sent_at));
        }
    }

    /// The first duplicate ACK for this window (that is not an echo)
    /// resends it once; the rest are dropped.
    fn handle_duplicate(&mut self, now: Instant, out: &mut Outbox, stats: &mut Stats) {
        let flight = self.flight();
        let echo_window = self.rtt.srtt.map_or(Duration::ZERO, |srtt| srtt / 2);
        if flight.dup_resent
            || !flight.prev_clean
            || now.saturating_duration_since(flight.sent_at) < echo_window
        {
            stats.dropped_duplicate_ack += 1;
            return;
        }
        stats.retransmits_duplicate += self.resend(out);
        let rto = self.rtt.rto(&self.timing);
        let flight = self.flight_mut();
        flight.dup_resent = true;
        flight.sends = flight.sends.saturating_add(1);
        flight.sent_at = now;
        flight.deadline = later(now, rto);
    }

    /// Resends what is in flight (urgently); returns the packet count.
    fn resend(&self, out: &mut Outbox) -> u64 {
        match self.phase {
            Phase::Negotiating { .. } => {
                self.send_oack(out, true);
                1
            }
            Phase::Sending {
                base, last_sent, ..
            } => {
                for block in base..=last_sent {
                    self.send_data(block, out, true);
                }
                last_sent - base + 1
            }
        }
    }

    /// Sends a fresh window starting at `base` and enters `Sending`.
    fn begin_window(
        &mut self,
        now: Instant,
        base: u64,
        prev_clean: bool,
        out: &mut Outbox,
        stats: &mut Stats,
    ) {
        let last_sent = base
            .saturating_add(self.windowsize - 1)
            .min(self.last_block);
        for block in base..=last_sent {
            self.send_data(block, out, false);
        }
        stats.data_sent += last_sent - base + 1;
        self.phase = Phase::Sending {
            base,
            last_sent,
            flight: Flight::new(now, self.rtt.rto(&self.timing), prev_clean),
        };
    }

    fn send_oack(&self, out: &mut Outbox, urgent: bool) {
        self.send(
            Packet::Oack {
                options: self.oack.clone(),
            },
            out,
            urgent,
        );
    }

    fn send_data(&self, block: u64, out: &mut Outbox, urgent: bool) {
        let len = self.data.len();
        let start = usize::try_from(block - 1)
            .ok()
            .and_then(|i| i.checked_mul(self.blksize))
            .unwrap_or(usize::MAX)
            .min(len);
        let end = start.saturating_add(self.blksize).min(len);
        let data = self.data.slice(start..end);
        self.send(
            Packet::Data {
                block: wire(block),
                data,
            },
            out,
            urgent,
        );
    }

    fn send(&self, packet: Packet, out: &mut Outbox, urgent: bool) {
        out.push(
            urgent,
            Outgoing {
                local: Local::Transfer(self.id),
                dest: self.client,
                packet,
            },
        );
    }
}
