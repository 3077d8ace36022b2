//! Server configuration (the validated runtime layer; the agent's serde
//! layer maps onto it).

use std::time::Duration;

use crate::options::{MAX_BLKSIZE, MIN_BLKSIZE, OptionLimits};
use crate::transfer::Timing;

/// TFTP server settings. Every field has a documented default
/// ([`Config::default`]).
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
    /// 12 (about 6 s with the default intervals).
    pub max_retries: u32,
    /// Most transfers running at once. Default 512. Must be at least 1.
    pub max_active: usize,
    /// Most requests waiting for a slot; more are dropped (the client
    /// retries). Default 4096.
    pub max_queue: usize,
    /// A waiting request whose client has not repeated it for this long is
    /// presumed abandoned and skipped. Default 8 s (iPXE's last RRQ resend
    /// is at 7.95 s, EDK2 repeats every 4 s).
    pub queue_stale_after: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_blksize: 1468,
            max_windowsize: 8,
            retransmit_initial: Duration::from_millis(250),
            retransmit_min: Duration::from_millis(50),
            retransmit_max: Duration::from_millis(500),
            max_retries: 12,
            max_active: 512,
            max_queue: 4096,
            queue_stale_after: Duration::from_secs(8),
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
        Ok(())
    }

    /// A copy with every out-of-range field clamped into range.
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
            max_queue: self.max_queue,
            queue_stale_after: self.queue_stale_after,
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
    }
}
