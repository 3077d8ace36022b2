//! One read transfer: lockstep or windowed (RFC 7440) sending, block number
//! wrap, retransmission timers and the duplicate-ACK rule.
//!
//! Blocks are numbered from 1 with a `u64` internally and sent as the low 16
//! bits, so block 65536 goes out as 0 (the common "roll over to 0"
//! convention). A file of `n` bytes has `n / blksize + 1` blocks; the last
//! is short, and empty when `n` is a multiple of the block size.
//!
//! A transfer never queues packets itself. Inputs (ACKs, timers) decide what
//! the current *pass* is — the OACK, or the window `base..=end` — and the
//! scheduler pulls its packets one at a time with [`Transfer::next_packet`]
//! when the transfer's turn comes ([`crate::scheduler`]). The retransmit
//! timer is armed only when the last packet of a pass actually leaves, so
//! time spent waiting for a turn or for the bandwidth cap is never mistaken
//! for a lost packet, and round-trip samples measure the network and the
//! client, not the server's own queue.
//!
//! Resending:
//! - on the **timer**: the whole window in flight (go-back-N). The first
//!   resend after a pass waits the adaptive RTO (`max(4·srtt, srtt +
//!   4·rttvar)` clamped to the configured min/max, the configured initial
//!   value before any sample; after a timeout it is held at double, still
//!   within the maximum, until a clean sample: Karn's algorithm); later
//!   ones wait the configured maximum. The interval never grows beyond
//!   that: no exponential backoff. After
//!   `max_retries` timer resends without progress the transfer times out.
//! - on a **duplicate ACK** (an ACK of the block before the window, which is
//!   how a client says "I timed out waiting"): the window is resent at once,
//!   but only once per window (Sorcerer's Apprentice, RFC 1123), and not
//!   when the duplicate can be an echo of packets we sent twice ourselves
//!   (the previous window went out more than once, or contained resent
//!   blocks) or of a window still in flight (it came less than srtt/2 +
//!   rttvar after we sent it, or less than an RTO after we resent it: it
//!   crossed our resend). Those are left to the timer. A duplicate ACK while the pass
//!   still waits to be sent resends nothing; it only moves the transfer to
//!   the retry class.
//!
//! - on an ACK of only **part of a window**: the window restarts after the
//!   last block the client has (RFC 7440: a receiver drops the blocks after
//!   a gap) and the rest is resent at once — unless the rest is known to be
//!   still in flight: the ACK came less than srtt/2 + rttvar after the pass
//!   (it may have left the client before the pass arrived), or it names exactly the last
//!   block this window *repeated* (a go-back window) within a plausible
//!   round trip (`srtt + 4·rttvar`), which is the client answering our
//!   duplicate of a block it already had. Going back then would duplicate
//!   the next blocks and provoke the next such ACK, a resend per window for
//!   the rest of the file (the windowed form of the Sorcerer's Apprentice,
//!   started by a single duplicated datagram). The window only slides:
//!   blocks in flight are not resent, only new ones, and the timer keeps the
//!   deadline of the blocks in flight, so a real loss is not recovered any
//!   later than without the slide.
//!
//! Every resend (timer, duplicate ACK, an ACK of only part of a window) and
//! a first answer to a client that already repeated its request are sent in
//! the [`Priority::Retry`] class.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::bucket::later;
use crate::config::Timing;
use crate::event::{Outcome, TransferSummary};
use crate::id::TransferId;
use crate::options::Negotiated;
use crate::packet::{Packet, RawOption};
use crate::path::SafePath;
use crate::scheduler::{Priority, Want};
use crate::source::Content;
use crate::stats::Stats;

/// What the server must do after an input to a transfer.
#[derive(Debug)]
pub(crate) enum Step {
    Continue,
    Closed(Outcome),
}

/// Why the current pass is being sent; resent packets are counted under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// A new window after the client acknowledged the previous one.
    Fresh,
    /// The retransmit timer fired.
    Timer,
    /// The client's duplicate ACK.
    Duplicate,
    /// The client acknowledged only part of the previous window.
    PartialAck,
}

/// A read transfer in progress.
#[derive(Debug)]
pub(crate) struct Transfer {
    id: TransferId,
    client: SocketAddr,
    path: SafePath,
    data: Content,
    /// Bytes read ahead from a file (a few blocks from one offset), so a
    /// file is read a window at a time, not a block.
    ahead: Option<(u64, bytes::Bytes)>,
    blksize: usize,
    windowsize: u64,
    last_block: u64,
    oack: Vec<RawOption>,
    oack_len: u64,
    started: Instant,
    timing: Timing,
    rtt: Rtt,
    phase: Phase,
    /// Whether the current pass goes in the retry class.
    urgent: bool,
    /// Highest block ever sent (0: none).
    high: u64,
    /// Packets resent over the whole transfer.
    retransmits: u64,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    last_progress: Instant,
}

/// Where the transfer is. Finished transfers do not exist: the server
/// removes them as soon as a step returns [`Step::Closed`].
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// The OACK is to be sent (`unsent`) or was sent; waiting for ACK 0.
    Negotiating { flight: Flight, unsent: bool },
    /// The window `base..=end`; `base - 1` is acknowledged and `next` is the
    /// next block of the current pass to send (`end + 1` once all are sent).
    Sending {
        base: u64,
        end: u64,
        next: u64,
        flight: Flight,
    },
}

/// Bookkeeping for the current window (or OACK).
#[derive(Clone, Copy, Debug)]
struct Flight {
    /// When the last pass finished leaving.
    sent_at: Instant,
    /// When the timer resends; `None` while the pass is not fully sent.
    deadline: Option<Instant>,
    /// Timer resends since the last progress.
    retries: u32,
    /// Passes started (1 = once; only then is an RTT sample taken).
    sends: u32,
    /// Whether the one duplicate-ACK resend was used.
    dup_resent: bool,
    /// Whether the previous window went out exactly once; if not,
    /// duplicate ACKs for it may be echoes of our own resends.
    prev_clean: bool,
    /// The last block of this window that was sent before the window began
    /// (a window restarted by a partial ACK repeats its head); below `base`
    /// when it repeats none.
    repeat_top: u64,
    /// Why the current pass is sent.
    reason: Reason,
    /// A deadline inherited from blocks still in flight (a slid window):
    /// the timer never fires later than this.
    cap: Option<Instant>,
}

impl Flight {
    fn new(now: Instant, prev_clean: bool, repeat_top: u64, reason: Reason) -> Flight {
        Flight {
            sent_at: now,
            deadline: None,
            retries: 0,
            sends: 1,
            dup_resent: false,
            prev_clean,
            repeat_top,
            reason,
            cap: None,
        }
    }

    fn complete(&self) -> bool {
        self.deadline.is_some()
    }
}

/// Smoothed round-trip time (RFC 6298 style), sampled only from passes sent
/// once (Karn's rule). After a timer resend the RTO is held at double its
/// value (at most the ceiling) until the next clean sample (the rest of
/// Karn's algorithm): otherwise a path slower than the estimate would time
/// out on every window, no window would be clean, and the estimate would
/// never learn.
#[derive(Clone, Copy, Debug, Default)]
struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: Option<Duration>,
}

impl Rtt {
    /// Called when the timer fired: hold the RTO at double.
    fn timed_out(&mut self, timing: &Timing) {
        self.backoff = Some(self.rto(timing).saturating_mul(2).min(timing.max));
    }

    fn sample(&mut self, d: Duration) {
        self.backoff = None;
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

    /// How soon after a pass an ACK may still predate its arrival at the
    /// client: half a round trip, plus the round trip's variation (zero
    /// before any sample).
    fn echo_guard(&self) -> Duration {
        self.srtt.map_or(Duration::ZERO, |srtt| {
            (srtt / 2).saturating_add(self.rttvar)
        })
    }

    /// The longest round trip that is not unusual: `srtt + 4·rttvar`
    /// (unclamped; 1 s before any sample).
    fn max_plausible(&self) -> Duration {
        self.srtt.map_or(Duration::from_secs(1), |srtt| {
            srtt.saturating_add(self.rttvar.saturating_mul(4))
        })
    }

    fn rto(&self, timing: &Timing) -> Duration {
        let rto = match self.srtt {
            None => timing.initial,
            Some(srtt) => srtt
                .saturating_mul(4)
                .max(srtt.saturating_add(self.rttvar.saturating_mul(4)))
                .clamp(timing.min, timing.max),
        };
        self.backoff.map_or(rto, |b| b.max(rto))
    }
}

/// Blocks read at once from a file (more when the window is larger).
const READ_AHEAD_BLOCKS: u64 = 8;
/// Most bytes read at once from a file for one transfer.
const READ_AHEAD_MAX: u64 = 64 << 10;

/// The wire form of an internal block number.
fn wire(block: u64) -> u16 {
    (block % 65536) as u16
}

impl Transfer {
    /// Starts a transfer: its first pass is the OACK, or DATA 1 when nothing
    /// was negotiated. `urgent` puts it in the retry class (the client has
    /// already repeated its request).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        id: TransferId,
        client: SocketAddr,
        path: SafePath,
        data: Content,
        negotiated: Negotiated,
        timing: Timing,
        now: Instant,
        urgent: bool,
    ) -> Transfer {
        let blksize = usize::from(negotiated.blksize.max(crate::options::MIN_BLKSIZE));
        let last_block = (data.len() / blksize as u64).saturating_add(1);
        let oack_len = Packet::Oack {
            options: negotiated.oack.clone(),
        }
        .encoded_len() as u64;
        let mut transfer = Transfer {
            id,
            client,
            path,
            data,
            ahead: None,
            blksize,
            windowsize: u64::from(negotiated.windowsize.max(1)),
            last_block,
            oack: negotiated.oack,
            oack_len,
            started: now,
            timing,
            rtt: Rtt::default(),
            phase: Phase::Negotiating {
                flight: Flight::new(now, true, 0, Reason::Fresh),
                unsent: true,
            },
            urgent,
            high: 0,
            retransmits: 0,
            first_sent: None,
            last_sent: None,
            last_progress: now,
        };
        if transfer.oack.is_empty() {
            transfer.begin_window(now, 1, true, Reason::Fresh, urgent);
        }
        transfer
    }

    /// When the retransmit timer fires; `None` while the pass is unsent.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.flight().deadline
    }

    /// Waiting for the ACK of its OACK (no block sent yet).
    pub(crate) fn negotiating(&self) -> bool {
        matches!(self.phase, Phase::Negotiating { .. })
    }

    /// The client's address and port (its transfer ID).
    pub(crate) fn client(&self) -> SocketAddr {
        self.client
    }

    /// What is waiting to be sent, with `overhead` bytes added per packet.
    pub(crate) fn want(&self, overhead: u64) -> Option<Want> {
        let (packets, payload) = match self.phase {
            Phase::Negotiating { unsent: true, .. } => (1, self.oack_len),
            Phase::Negotiating { .. } => return None,
            Phase::Sending { end, next, .. } if next <= end => {
                let packets = end - next + 1;
                let data = self.offset(end + 1) - self.offset(next);
                (packets, data + 4 * packets)
            }
            Phase::Sending { .. } => return None,
        };
        Some(Want {
            priority: if self.urgent {
                Priority::Retry
            } else {
                Priority::RoundRobin
            },
            packets,
            bytes: payload.saturating_add(overhead.saturating_mul(packets)),
        })
    }

    /// The next packet of the current pass, if any, as sent at `now`. The
    /// timer is armed when the pass's last packet leaves. A block that
    /// cannot be read is an error: the transfer must end.
    pub(crate) fn next_packet(
        &mut self,
        now: Instant,
        stats: &mut Stats,
    ) -> Option<std::io::Result<Packet>> {
        let rto = self.rtt.rto(&self.timing);
        let max = self.timing.max;
        let block = match &mut self.phase {
            Phase::Negotiating { flight, unsent } if *unsent => {
                *unsent = false;
                if flight.sends > 1 {
                    count_resend(stats, flight.reason);
                    self.retransmits += 1;
                }
                finish_pass(flight, now, rto, max);
                None
            }
            Phase::Sending {
                end, next, flight, ..
            } if *next <= *end => {
                let block = *next;
                *next += 1;
                if block > self.high {
                    self.high = block;
                    stats.data_sent += 1;
                } else {
                    count_resend(stats, flight.reason);
                    self.retransmits += 1;
                }
                if *next > *end {
                    finish_pass(flight, now, rto, max);
                }
                Some(block)
            }
            _ => return None,
        };
        let packet = match block {
            None => Packet::Oack {
                options: self.oack.clone(),
            },
            Some(block) => {
                let start = self.offset(block);
                let len = self.offset(block.saturating_add(1)) - start;
                match self.block_bytes(start, len) {
                    Ok(data) => Packet::Data {
                        block: wire(block),
                        data,
                    },
                    Err(e) => return Some(Err(e)),
                }
            }
        };
        self.first_sent.get_or_insert(now);
        self.last_sent = Some(now);
        Some(Ok(packet))
    }

    /// Handles an ACK from the client.
    pub(crate) fn handle_ack(&mut self, now: Instant, block: u16, stats: &mut Stats) -> Step {
        match self.phase {
            Phase::Negotiating { flight, .. } => {
                if block != 0 {
                    stats.dropped_stale_ack += 1;
                    return Step::Continue;
                }
                self.sample_rtt(now, &flight);
                self.last_progress = now;
                self.begin_window(now, 1, flight.sends == 1, Reason::Fresh, false);
                Step::Continue
            }
            Phase::Sending {
                base,
                end,
                next,
                flight,
            } => {
                let prev = base - 1;
                // The highest block of this window sent at least once.
                let top = end.min(self.high).max(prev);
                let delta = u64::from(block.wrapping_sub(wire(prev)));
                if delta > top - prev {
                    stats.dropped_stale_ack += 1;
                    return Step::Continue;
                }
                if delta == 0 {
                    self.handle_duplicate(now, stats);
                    return Step::Continue;
                }
                let acked = prev + delta;
                if acked >= self.last_block {
                    return Step::Closed(Outcome::Completed {
                        bytes: self.data.len(),
                        duration: now.saturating_duration_since(self.started),
                    });
                }
                self.sample_rtt(now, &flight);
                self.last_progress = now;
                let clean = flight.sends == 1 && flight.repeat_top < base;
                if acked >= end {
                    self.begin_window(now, acked + 1, clean, Reason::Fresh, false);
                } else if self.in_flight(now, &flight)
                    || (acked == flight.repeat_top
                        && now.saturating_duration_since(flight.sent_at) < self.rtt.max_plausible())
                {
                    // Either the ACK left the client before this pass could
                    // reach it, or it names exactly the last block this
                    // window repeated, within a round trip: the client had
                    // everything sent before the go-back and is answering
                    // our duplicate of one of those blocks. Either way the
                    // rest of the window is still in flight; resending it
                    // would make duplicates that provoke more such ACKs (the
                    // windowed Sorcerer's Apprentice). Slide the window and
                    // send only new blocks; the timer (its deadline kept)
                    // recovers a real loss.
                    let inherited = flight.deadline.or(flight.cap);
                    // In flight: what this pass has sent so far, or all of
                    // it once complete.
                    let in_flight = if flight.complete() { top } else { next - 1 };
                    self.slide_window(now, acked + 1, in_flight.max(acked), inherited);
                } else {
                    // Only part of the window arrived: the client missed the
                    // rest (an RFC 7440 receiver drops blocks after a gap).
                    // Go back at once, in the retry class.
                    self.begin_window(now, acked + 1, clean, Reason::PartialAck, true);
                }
                Step::Continue
            }
        }
    }

    /// Handles the same request again from the same client port: before any
    /// progress it means our first packet was lost, so it counts as a
    /// duplicate ACK. After progress it is either a copy of the request the
    /// network delayed or duplicated (the client is still acknowledging: it
    /// is ignored) or the client started over; returns `false` in that
    /// case — the transfer made no progress for `stall` — and the caller
    /// supersedes it. A client that really restarted repeats its request
    /// after its own timeout, so it is recognised then at the latest.
    pub(crate) fn handle_repeat_request(
        &mut self,
        now: Instant,
        stall: Duration,
        stats: &mut Stats,
    ) -> bool {
        match self.phase {
            Phase::Negotiating { .. } => self.handle_duplicate(now, stats),
            Phase::Sending { base: 1, .. } if self.oack.is_empty() => {
                self.handle_duplicate(now, stats);
            }
            Phase::Sending { base: 1, .. } => stats.dropped_duplicate_ack += 1,
            Phase::Sending { .. } => {
                return now.saturating_duration_since(self.last_progress) < stall;
            }
        }
        true
    }

    /// Handles the retransmit timer: restarts the pass in the retry class.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Step {
        let flight = self.flight();
        let Some(deadline) = flight.deadline else {
            return Step::Continue;
        };
        if now < deadline {
            return Step::Continue;
        }
        if flight.retries >= self.timing.max_retries {
            return Step::Closed(Outcome::TimedOut {
                acked_bytes: self.acked_bytes(),
            });
        }
        self.rtt.timed_out(&self.timing);
        self.restart_pass(Reason::Timer);
        self.flight_mut().retries += 1;
        Step::Continue
    }

    /// A snapshot for the state dump.
    pub(crate) fn summary(&self) -> TransferSummary {
        TransferSummary {
            id: self.id,
            client: self.client,
            path: self.path.clone(),
            size: self.data.len(),
            acked_bytes: self.acked_bytes(),
            blksize: u16::try_from(self.blksize).unwrap_or(u16::MAX),
            windowsize: u16::try_from(self.windowsize).unwrap_or(u16::MAX),
            started: self.started,
            negotiating: matches!(self.phase, Phase::Negotiating { .. }),
            retries: self.flight().retries,
            retransmits: self.retransmits,
            rtt: self.rtt.srtt,
            waiting: self.want(0).map(|w| w.priority),
            first_sent: self.first_sent,
            last_sent: self.last_sent,
            last_progress: self.last_progress,
        }
    }

    fn flight(&self) -> Flight {
        match self.phase {
            Phase::Negotiating { flight, .. } | Phase::Sending { flight, .. } => flight,
        }
    }

    /// The first block of the window (1 while negotiating).
    fn phase_base(&self) -> u64 {
        match self.phase {
            Phase::Negotiating { .. } => 1,
            Phase::Sending { base, .. } => base,
        }
    }

    fn flight_mut(&mut self) -> &mut Flight {
        match &mut self.phase {
            Phase::Negotiating { flight, .. } | Phase::Sending { flight, .. } => flight,
        }
    }

    /// `len` bytes of the file from `start`: a slice of what was read
    /// ahead, or a new read of [`READ_AHEAD`] bytes (at least a block, at
    /// most a window of up to 64 KiB).
    fn block_bytes(&mut self, start: u64, len: u64) -> std::io::Result<bytes::Bytes> {
        if let Some((at, buf)) = &self.ahead
            && start >= *at
            && start + len <= *at + buf.len() as u64
        {
            let a = usize::try_from(start - at).unwrap_or(0);
            return Ok(buf.slice(a..a + usize::try_from(len).unwrap_or(0)));
        }
        if self.data.in_memory() {
            return self.data.read(start, usize::try_from(len).unwrap_or(0));
        }
        let blocks = self.windowsize.max(READ_AHEAD_BLOCKS);
        let want = (self.blksize as u64)
            .saturating_mul(blocks)
            .min(READ_AHEAD_MAX)
            .max(len);
        let buf = self.data.read(start, usize::try_from(want).unwrap_or(0))?;
        let n = usize::try_from(len).unwrap_or(0).min(buf.len());
        let block = buf.slice(..n);
        self.ahead = Some((start, buf));
        Ok(block)
    }

    /// Byte offset of the start of `block` (1-based), clamped to the file.
    fn offset(&self, block: u64) -> u64 {
        block
            .saturating_sub(1)
            .saturating_mul(self.blksize as u64)
            .min(self.data.len())
    }

    fn acked_bytes(&self) -> u64 {
        match self.phase {
            Phase::Negotiating { .. } => 0,
            Phase::Sending { base, .. } => self.offset(base),
        }
    }

    fn sample_rtt(&mut self, now: Instant, flight: &Flight) {
        if flight.sends == 1 && flight.repeat_top < self.phase_base() && flight.complete() {
            self.rtt
                .sample(now.saturating_duration_since(flight.sent_at));
        }
    }

    /// Whether an ACK arriving now may have left the client before the
    /// current pass reached it (the pass is not fully sent, or went out less
    /// than [`Rtt::echo_guard`] ago).
    fn in_flight(&self, now: Instant, flight: &Flight) -> bool {
        !flight.complete() || now.saturating_duration_since(flight.sent_at) < self.rtt.echo_guard()
    }

    /// The first duplicate ACK for this window (that is not an echo)
    /// resends it once; the rest are dropped. While the pass still waits
    /// for its turn, the client is waiting for us: promote it instead.
    fn handle_duplicate(&mut self, now: Instant, stats: &mut Stats) {
        let flight = self.flight();
        if !flight.complete() {
            stats.dropped_duplicate_ack += 1;
            self.urgent = true;
            return;
        }
        // Too soon to say anything about the pass: within srtt/2 + rttvar of
        // a first send the ACK may echo the previous window; within an RTO
        // of a resend it most likely crossed our resend.
        let guard = if flight.sends > 1 {
            self.rtt.rto(&self.timing)
        } else {
            self.rtt.echo_guard()
        };
        if flight.dup_resent
            || !flight.prev_clean
            || now.saturating_duration_since(flight.sent_at) < guard
        {
            stats.dropped_duplicate_ack += 1;
            return;
        }
        self.restart_pass(Reason::Duplicate);
        self.flight_mut().dup_resent = true;
    }

    /// Sends the current pass again from its start, in the retry class.
    fn restart_pass(&mut self, reason: Reason) {
        self.urgent = true;
        match &mut self.phase {
            Phase::Negotiating { unsent, .. } => *unsent = true,
            Phase::Sending { base, next, .. } => *next = *base,
        }
        let flight = self.flight_mut();
        flight.sends = flight.sends.saturating_add(1);
        flight.reason = reason;
        flight.deadline = None;
        // The inherited deadline was for the packets now being resent.
        flight.cap = None;
    }

    /// Makes `base..` the new window, treating `..=top` as in flight: only
    /// blocks after `top` are sent. Its duplicate ACKs may be echoes, and it
    /// gives no RTT sample. The timer keeps the `inherited` deadline of the
    /// blocks in flight, so a lost one is not resent any later for the
    /// slide.
    fn slide_window(&mut self, now: Instant, base: u64, top: u64, inherited: Option<Instant>) {
        self.begin_window(now, base, false, Reason::Fresh, false);
        let rto = self.rtt.rto(&self.timing);
        let max = self.timing.max;
        if let Phase::Sending {
            end, next, flight, ..
        } = &mut self.phase
        {
            flight.cap = inherited;
            flight.repeat_top = top.min(*end);
            *next = top.saturating_add(1).max(*next);
            if *next > *end {
                finish_pass(flight, now, rto, max);
            }
        }
    }

    /// Makes `base..` the new window (not sent yet).
    fn begin_window(
        &mut self,
        now: Instant,
        base: u64,
        prev_clean: bool,
        reason: Reason,
        urgent: bool,
    ) {
        let end = base
            .saturating_add(self.windowsize - 1)
            .min(self.last_block);
        self.urgent = urgent;
        self.phase = Phase::Sending {
            base,
            end,
            next: base,
            flight: Flight::new(now, prev_clean, self.high.min(end), reason),
        };
    }
}

fn finish_pass(flight: &mut Flight, now: Instant, rto: Duration, max: Duration) {
    flight.sent_at = now;
    let wait = if flight.reason == Reason::Timer {
        max
    } else {
        rto
    };
    let deadline = later(now, wait);
    flight.deadline = Some(flight.cap.map_or(deadline, |cap| cap.min(deadline)));
}

fn count_resend(stats: &mut Stats, reason: Reason) {
    match reason {
        Reason::Timer => stats.retransmits_timeout += 1,
        Reason::Duplicate => stats.retransmits_duplicate += 1,
        Reason::PartialAck | Reason::Fresh => stats.retransmits_partial_ack += 1,
    }
}
