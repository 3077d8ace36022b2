//! Server configuration (the validated runtime layer; the agent's serde
//! layer maps onto it).

use std::time::Duration;

use crate::options::{MAX_BLKSIZE, MIN_BLKSIZE, OptionLimits};

const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_secs(1);

/// TFTP server settings for one link (one listening socket). Every field
/// has a documented default ([`Config::default`]); the defaults suit a rack
/// on 1 GbE with up to a few thousand PXE clients booting at once.
///
/// How the load-shedding settings fit together (seed 003: "smoothly switch
/// from bandwidth control to round-robin responses, then to slightly
/// deferring DHCP responses"):
/// 1. the **bandwidth cap** (`rate_limit_*`) paces packets; when it runs out,
///    windows wait in the scheduler (resends first, then round-robin);
/// 2. when the packets waiting for the cap would take longer than
///    `admission_pause_backlog` to send, **new transfers are not admitted**
///    (requests wait in the queue, up to `max_queue`), as they are when
///    `max_active` transfers run;
/// 3. a request that has waited `queue_first_answer_deadline` is admitted
///    anyway, over the cap by at most `max_overflow`, so its client gets a
///    first answer long before its first-packet timeout (iPXE ~16 s, EDK2
///    ~24 s);
/// 4. [`crate::Server::load`] reports the pressure, so the DHCP server can
///    defer its answers to new clients a little (load shed at the front
///    door, never by letting a transfer in progress time out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest block size granted. Default 1468: DATA plus UDP and IPv4
    /// headers fits a 1500-byte MTU. Valid: 8..=65464.
    pub max_blksize: u16,
    /// Largest RFC 7440 window granted. Default 8. Valid: 1..=65535.
    pub max_windowsize: u16,
    /// Retransmit interval before a round-trip time has been measured.
    /// Default 250 ms. Must lie within `retransmit_min..=retransmit_max`.
    pub retransmit_initial: Duration,
    /// Floor of the adaptive retransmit interval. Default 50 ms. Must be
    /// at least 1 ms.
    pub retransmit_min: Duration,
    /// Ceiling of the adaptive retransmit interval, and the interval of
    /// every resend after the first one without progress. Default 500 ms
    /// (well under the 1 s a PXE ROM waits).
    pub retransmit_max: Duration,
    /// Timer resends without progress before a transfer times out. Default
    /// 24 (about 12 s with the default intervals): longer than any client
    /// waits before it re-ACKs itself (EDK2 ~4 s, atftp 5 s), so a client
    /// whose ACK and re-ACK were both lost can still resume.
    pub max_retries: u32,
    /// Most transfers running at once (beyond this only requests past their
    /// first-answer deadline are admitted, see `max_overflow`). Default
    /// 4096: a round of one 1468-byte block each then takes ~50 ms at
    /// 1 Gbit/s, still far below a PXE ROM's 1 s retry timer, while a queued
    /// ROM gives up after ~16 s of silence (iPXE) — so with a slow (lossy)
    /// storm a low cap fails clients in the queue, not active ones. (512 failed
    /// half of a 2,000-client storm at 2% loss in the benchmark.) Must be at
    /// least 1.
    pub max_active: usize,
    /// Most transfers admitted over `max_active` for requests that reached
    /// `queue_first_answer_deadline`; the hard ceiling is `max_active +
    /// max_overflow`. Default 1024 (a round of 5,120 lockstep windows is
    /// still ~62 ms at 1 Gbit/s). 0 makes `max_active` a hard limit.
    pub max_overflow: usize,
    /// Most requests waiting for a slot; more are dropped (the client
    /// retries). Default 16,384.
    pub max_queue: usize,
    /// Most transfers one source address may have running at once; its
    /// further requests are dropped (counted, no answer: a flood gets no
    /// amplification) until one ends. A PXE ROM runs one, a test rig or a
    /// NAT a few hundred, a broken or hostile machine thousands of
    /// half-open ones that would hold every slot for their whole timeout.
    /// Default 1,024; 0: no cap.
    pub max_per_source: usize,
    /// A waiting request whose client has not repeated it for this long is
    /// presumed abandoned and skipped. Default 8 s (iPXE's last RRQ resend
    /// is at 7.95 s, EDK2 repeats every 4 s).
    pub queue_stale_after: Duration,
    /// A request waiting this long for a slot is admitted even over
    /// `max_active` (within `max_overflow`) and even while admission is
    /// paused, and its first packet goes in the retry class. Default 2 s:
    /// iPXE has resent its RRQ four times by then and gives up at ~16 s,
    /// EDK2 at ~24 s, so there is ample margin even for the queue behind a
    /// full overflow.
    pub queue_first_answer_deadline: Duration,
    /// The service tick: a window that waited this long for its round-robin
    /// turn is promoted to the retry class, so every active client is
    /// served at least once a tick; also the time constant of the throttle
    /// meter behind [`crate::Server::load`]. Default 500 ms (seed 003:
    /// "check that every client asked for and received a packet in the
    /// last half second"). Valid: 1 ms..=1 s.
    pub tick: Duration,
    /// The per-link bandwidth cap, in bytes per second, counting each
    /// packet's UDP payload plus `rate_limit_packet_overhead`. `None`: no
    /// cap (the kernel's socket buffer paces sends). Default
    /// `Some(125_000_000)`: the line rate of 1 GbE, each frame counted as
    /// the wire carries it (see the overhead), so the queue forms here,
    /// where resends go first, instead of in a NIC or switch buffer that
    /// drops at random, and the link is still used to the full. (It was
    /// 118 MB/s counted without preamble, gap and FCS: 4% of the link left
    /// idle in every storm.) `Some(0)` is invalid.
    pub rate_limit_bytes_per_sec: Option<u64>,
    /// How many bytes the cap lets out at once after an idle spell: the
    /// credit a shell that was late (descheduled, or busy with a burst of
    /// requests) may spend to catch up, so the link loses no time. Default
    /// 1 MiB, ~8 ms at 1 Gbit/s. (It was 256 KiB, ~2 ms: on a 2-core agent
    /// sharing its cores in a 1,000-client storm the thread was late by more
    /// than that often enough to leave 3% of the link idle.) What it lets
    /// out waits in the NIC's queue, ahead of a resend by at most that long,
    /// against a PXE ROM's 1 s retry timer.
    pub rate_limit_burst: u64,
    /// Bytes added to each packet's UDP payload when charging the cap.
    /// Default 66, what an IPv4 UDP datagram costs on Ethernet besides its
    /// payload: preamble and start delimiter (8), header (14), FCS (4),
    /// inter-frame gap (12), IPv4 (20) and UDP (8) headers.
    pub rate_limit_packet_overhead: u32,
    /// New transfers are not admitted while the packets already waiting for
    /// the bandwidth cap would take longer than this to send (only with a
    /// cap). Default 100 ms: a tenth of a PXE ROM's 1 s retry timer. A
    /// request past `queue_first_answer_deadline` is admitted regardless.
    pub admission_pause_backlog: Duration,
}

/// 1 GbE line rate in bytes per second.
pub const LINK_1GBE_BYTES_PER_SEC: u64 = 125_000_000;
/// What an IPv4 UDP datagram costs on Ethernet besides its payload:
/// preamble and SFD 8, header 14, FCS 4, inter-frame gap 12, IPv4 20, UDP 8.
pub const ETHERNET_UDP_OVERHEAD: u32 = 66;

impl Default for Config {
    fn default() -> Config {
        Config {
            max_blksize: 1468,
            max_windowsize: 8,
            retransmit_initial: Duration::from_millis(250),
            retransmit_min: Duration::from_millis(50),
            retransmit_max: Duration::from_millis(500),
            max_retries: 24,
            max_active: 4096,
            max_overflow: 1024,
            max_queue: 16_384,
            max_per_source: 1024,
            queue_stale_after: Duration::from_secs(8),
            queue_first_answer_deadline: Duration::from_secs(2),
            tick: Duration::from_millis(500),
            rate_limit_bytes_per_sec: Some(LINK_1GBE_BYTES_PER_SEC),
            rate_limit_burst: 1024 * 1024,
            rate_limit_packet_overhead: ETHERNET_UDP_OVERHEAD,
            admission_pause_backlog: Duration::from_millis(100),
        }
    }
}

/// A [`Config`] value out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `max_blksize` outside 8..=65464.
    #[error("max_blksize {0} is outside 8..=65464")]
    Blksize(u16),
    /// `max_windowsize` is 0.
    #[error("max_windowsize must be at least 1")]
    Windowsize,
    /// `retransmit_min` is below 1 ms.
    #[error("retransmit_min {0:?} is below 1 ms")]
    RetransmitMin(Duration),
    /// The retransmit intervals are not ordered min ≤ initial ≤ max.
    #[error(
        "retransmit intervals must satisfy min ({min:?}) <= initial ({initial:?}) <= max ({max:?})"
    )]
    RetransmitOrder {
        /// `retransmit_min`.
        min: Duration,
        /// `retransmit_initial`.
        initial: Duration,
        /// `retransmit_max`.
        max: Duration,
    },
    /// `max_active` is 0.
    #[error("max_active must be at least 1")]
    MaxActive,
    /// `tick` outside 1 ms..=1 s.
    #[error("tick {0:?} is outside 1ms..=1s")]
    Tick(Duration),
    /// `rate_limit_bytes_per_sec` is `Some(0)`.
    #[error("rate_limit_bytes_per_sec must be at least 1 (or None for no limit)")]
    RateLimit,
}

impl Config {
    /// Checks every field, naming the first one out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&self.max_blksize) {
            return Err(ConfigError::Blksize(self.max_blksize));
        }
        if self.max_windowsize == 0 {
            return Err(ConfigError::Windowsize);
        }
        if self.retransmit_min < Duration::from_millis(1) {
            return Err(ConfigError::RetransmitMin(self.retransmit_min));
        }
        if !(self.retransmit_min <= self.retransmit_initial
            && self.retransmit_initial <= self.retransmit_max)
        {
            return Err(ConfigError::RetransmitOrder {
                min: self.retransmit_min,
                initial: self.retransmit_initial,
                max: self.retransmit_max,
            });
        }
        if self.max_active == 0 {
            return Err(ConfigError::MaxActive);
        }
        if !(MIN_TICK..=MAX_TICK).contains(&self.tick) {
            return Err(ConfigError::Tick(self.tick));
        }
        if self.rate_limit_bytes_per_sec == Some(0) {
            return Err(ConfigError::RateLimit);
        }
        Ok(())
    }

    /// A copy with every out-of-range field clamped into range
    /// (`rate_limit_bytes_per_sec: Some(0)` becomes `None`).
    pub(crate) fn normalized(&self) -> Config {
        let min = self.retransmit_min.max(Duration::from_millis(1));
        let max = self.retransmit_max.max(min);
        Config {
            max_blksize: self.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE),
            max_windowsize: self.max_windowsize.max(1),
            retransmit_initial: self.retransmit_initial.clamp(min, max),
            retransmit_min: min,
            retransmit_max: max,
            max_retries: self.max_retries,
            max_active: self.max_active.max(1),
            max_overflow: self.max_overflow,
            max_queue: self.max_queue,
            max_per_source: self.max_per_source,
            queue_stale_after: self.queue_stale_after,
            queue_first_answer_deadline: self.queue_first_answer_deadline,
            tick: self.tick.clamp(MIN_TICK, MAX_TICK),
            rate_limit_bytes_per_sec: self.rate_limit_bytes_per_sec.filter(|&r| r > 0),
            rate_limit_burst: self.rate_limit_burst,
            rate_limit_packet_overhead: self.rate_limit_packet_overhead,
            admission_pause_backlog: self.admission_pause_backlog,
        }
    }

    pub(crate) fn limits(&self) -> OptionLimits {
        OptionLimits {
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
        }
    }

    pub(crate) fn timing(&self) -> Timing {
        Timing {
            initial: self.retransmit_initial,
            min: self.retransmit_min,
            max: self.retransmit_max,
            max_retries: self.max_retries,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().normalized(), Config::default());
    }

    #[test]
    fn validate_names_the_problem() {
        let bad = Config {
            max_blksize: 4,
            ..Config::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Blksize(4)));
        assert_eq!(bad.normalized().max_blksize, 8);
        let bad = Config {
            retransmit_initial: Duration::from_secs(2),
            ..Config::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::RetransmitOrder { .. })
        ));
        assert_eq!(
            bad.normalized().retransmit_initial,
            Duration::from_millis(500)
        );
        let bad = Config {
            max_active: 0,
            retransmit_min: Duration::ZERO,
            retransmit_max: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::RetransmitMin(Duration::ZERO))
        );
        let n = bad.normalized();
        assert_eq!(n.max_active, 1);
        assert!(n.retransmit_max >= Duration::from_millis(1));
        let bad = Config {
            tick: Duration::from_secs(5),
            ..Config::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::Tick(Duration::from_secs(5)))
        );
        assert_eq!(bad.normalized().tick, Duration::from_secs(1));
        let bad = Config {
            rate_limit_bytes_per_sec: Some(0),
            ..Config::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::RateLimit));
        assert_eq!(bad.normalized().rate_limit_bytes_per_sec, None);
    }
}
