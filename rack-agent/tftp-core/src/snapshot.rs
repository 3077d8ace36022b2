//! The load signal and the state dump (SIGUSR1 in the shell).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::event::TransferSummary;
use crate::path::SafePath;
use crate::scheduler::Priority;
use crate::stats::Stats;

/// How loaded the server is, for metrics and for the DHCP side, which can
/// defer its answers to new clients a little when TFTP is saturated
/// (seed 003). Cheap: O(1) to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    /// Transfers running.
    pub active: usize,
    /// Of those, how many run over [`crate::Config::max_active`] (admitted
    /// by the first-answer deadline).
    pub over_cap: usize,
    /// Requests waiting for admission.
    pub queued: usize,
    /// How long the oldest waiting request has waited.
    pub oldest_queued: Option<Duration>,
    /// Transfers with packets waiting to be sent.
    pub backlog_transfers: usize,
    /// Of those, in the retry class.
    pub backlog_retry: usize,
    /// Packets waiting to be sent.
    pub backlog_packets: u64,
    /// Their size, counted as the bandwidth cap counts.
    pub backlog_bytes: u64,
    /// How long sending the backlog takes at the bandwidth cap (zero
    /// without a cap).
    pub send_delay: Duration,
    /// Whether the cap is holding packets back right now.
    pub throttled: bool,
    /// Fraction of recent time (time constant: one tick) the cap held
    /// packets back, 0.0..=1.0.
    pub throttled_fraction: f64,
    /// Whether new admissions are paused because the backlog exceeds
    /// [`crate::Config::admission_pause_backlog`].
    pub admission_paused: bool,
    /// One number, 0.0..=1.0: `0.5 × throttled_fraction + 0.5 ×
    /// min(1, oldest_queued / queue_first_answer_deadline)`. About 0: TFTP
    /// keeps up. Towards 0.5: the link is saturated and served round-robin
    /// by the cap, but nobody waits to start. Above 0.5: requests wait for
    /// admission, and the longer they wait the closer to 1; a DHCP server
    /// should then defer answers to *new* clients in proportion (e.g. by
    /// `(pressure − 0.5) × 2 s`), so they arrive when there is room.
    pub pressure: f64,
}

/// A request waiting for admission, for the state dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedSummary {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The file.
    pub path: SafePath,
    /// File size in bytes.
    pub size: u64,
    /// How long it has waited.
    pub waited: Duration,
    /// How often the client repeated the request meanwhile.
    pub repeats: u32,
}

/// The whole state, for a SIGUSR1-style dump. Build it with
/// [`crate::Server::snapshot`]; `Display` renders the dump (also
/// [`crate::Server::dump`]). O(active + queued) to build.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The server's clock when taken (the latest time it was given).
    pub at: Option<Instant>,
    /// The load signal.
    pub load: Load,
    /// The bandwidth cap in bytes per second, if any.
    pub rate_limit: Option<u64>,
    /// The cap's saved-up credit in bytes (negative: in deficit).
    pub credit: Option<i64>,
    /// Active transfers, by id.
    pub transfers: Vec<TransferSummary>,
    /// Waiting requests, oldest first.
    pub queue: Vec<QueuedSummary>,
    /// Counters.
    pub stats: Stats,
}

fn ago(at: Option<Instant>, then: Instant) -> Duration {
    at.map_or(Duration::ZERO, |at| at.saturating_duration_since(then))
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.load;
        writeln!(
            f,
            "tftp: {} active ({} over cap), {} queued{}, pressure {:.2}",
            l.active,
            l.over_cap,
            l.queued,
            l.oldest_queued
                .map(|d| format!(" (oldest {d:.1?})"))
                .unwrap_or_default(),
            l.pressure,
        )?;
        match self.rate_limit {
            Some(rate) => writeln!(
                f,
                "  bandwidth: cap {rate} B/s, credit {} B, throttled {} ({:.0}% of recent time), \
                 admission {}",
                self.credit.unwrap_or(0),
                if l.throttled { "now" } else { "not now" },
                l.throttled_fraction * 100.0,
                if l.admission_paused { "paused" } else { "open" },
            )?,
            None => writeln!(f, "  bandwidth: no cap")?,
        }
        writeln!(
            f,
            "  backlog: {} transfers ({} retry), {} packets, {} B, {:.1?} to send",
            l.backlog_transfers, l.backlog_retry, l.backlog_packets, l.backlog_bytes, l.send_delay,
        )?;
        for t in &self.transfers {
            let state = match (t.negotiating, t.waiting) {
                (_, Some(Priority::Retry)) => "waiting (retry)",
                (_, Some(Priority::RoundRobin)) => "waiting (round-robin)",
                (true, None) => "OACK sent",
                (false, None) => "in flight",
            };
            writeln!(
                f,
                "  {} {} {} {:.1}% of {} B, blk {} win {}, rtt {}, retries {}, resent {}, {}, \
                 last progress {:.1?} ago, up {:.1?}",
                t.id,
                t.client,
                t.path,
                t.progress() * 100.0,
                t.size,
                t.blksize,
                t.windowsize,
                t.rtt.map_or_else(|| "-".to_owned(), |d| format!("{d:.1?}")),
                t.retries,
                t.retransmits,
                state,
                ago(self.at, t.last_progress),
                ago(self.at, t.started),
            )?;
        }
        for q in &self.queue {
            writeln!(
                f,
                "  queued {} {} ({} B), waited {:.1?}, repeats {}",
                q.client, q.path, q.size, q.waited, q.repeats,
            )?;
        }
        let s = &self.stats;
        write!(
            f,
            "  totals: started {} completed {} aborted {} timed out {}; data {} resent timer {} \
             dup {} partial {}; queued {} expired {} full {} over cap {}; promoted {} stalls {}",
            s.transfers_started,
            s.transfers_completed,
            s.transfers_aborted,
            s.transfers_timed_out,
            s.data_sent,
            s.retransmits_timeout,
            s.retransmits_duplicate,
            s.retransmits_partial_ack,
            s.queued,
            s.queue_expired,
            s.dropped_queue_full,
            s.admitted_over_cap,
            s.promoted,
            s.throttle_stalls,
        )
    }
}
