//! The per-link bandwidth cap (a token bucket) and the meter of how much of
//! the time it held packets back.
//!
//! Credit is kept in nano-bytes (bytes × 10⁹) so that refilling at `rate`
//! bytes per second for `dt` nanoseconds is the exact integer `rate × dt`:
//! no rounding drift however often the clock advances. The bucket may go
//! into deficit by one packet: a packet may leave whenever the credit is not
//! negative, and its full size is then charged. Over any interval the bytes
//! sent are therefore at most `rate × interval + burst + one packet`.

use std::time::{Duration, Instant};

const NANO: i128 = 1_000_000_000;

/// A token bucket: `rate` bytes per second, at most `burst` bytes saved up.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: i128,
    burst: i128,
    credit: i128,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. `rate` must not be 0 (the config layer guarantees it).
    pub(crate) fn new(rate: u64, burst: u64) -> TokenBucket {
        let burst = i128::from(burst).saturating_mul(NANO);
        TokenBucket {
            rate: i128::from(rate.max(1)),
            burst,
            credit: burst,
            last: None,
        }
    }

    /// Adds the credit earned up to `now` (never more than `burst`).
    pub(crate) fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last.filter(|&last| now > last) {
            let dt = i128::try_from(now.duration_since(last).as_nanos()).unwrap_or(i128::MAX);
            self.credit = self
                .credit
                .saturating_add(self.rate.saturating_mul(dt))
                .min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    /// Whether a packet may leave now.
    pub(crate) fn can_send(&self) -> bool {
        self.credit >= 0
    }

    /// Charges a packet of `bytes`.
    pub(crate) fn consume(&mut self, bytes: u64) {
        self.credit = self
            .credit
            .saturating_sub(i128::from(bytes).saturating_mul(NANO));
    }

    /// When a packet may leave again; `None` when it may leave now (or the
    /// bucket has never seen the clock).
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        if self.credit >= 0 {
            return None;
        }
        let last = self.last?;
        Some(later(last, self.nanos_for(-self.credit)))
    }

    /// How long sending `bytes` more would take at the rate, after the
    /// credit already saved up.
    pub(crate) fn delay_for(&self, bytes: u64) -> Duration {
        let need = i128::from(bytes)
            .saturating_mul(NANO)
            .saturating_sub(self.credit);
        if need <= 0 {
            Duration::ZERO
        } else {
            self.nanos_for(need)
        }
    }

    /// The rate in bytes per second.
    pub(crate) fn rate(&self) -> u64 {
        u64::try_from(self.rate).unwrap_or(u64::MAX)
    }

    /// Credit in whole bytes (negative in deficit).
    pub(crate) fn credit_bytes(&self) -> i64 {
        i64::try_from(self.credit / NANO).unwrap_or(i64::MIN)
    }

    /// Time to earn `nano_bytes` of credit, rounded up.
    fn nanos_for(&self, nano_bytes: i128) -> Duration {
        let ns = (nano_bytes + self.rate - 1) / self.rate;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// Smoothed fraction of time the bucket was the bottleneck (packets were
/// waiting and the credit was negative): an exponential moving average with
/// time constant `tau`.
#[derive(Clone, Debug)]
pub(crate) struct ThrottleMeter {
    tau: f64,
    fraction: f64,
}

impl ThrottleMeter {
    pub(crate) fn new(tau: Duration) -> ThrottleMeter {
        ThrottleMeter {
            tau: tau.as_secs_f64().max(1e-6),
            fraction: 0.0,
        }
    }

    /// Accounts an interval of length `elapsed` of which `busy` was spent
    /// throttled.
    pub(crate) fn record(&mut self, elapsed: Duration, busy: Duration) {
        if elapsed.is_zero() {
            return;
        }
        let dt = elapsed.as_secs_f64();
        let x = (busy.as_secs_f64() / dt).clamp(0.0, 1.0);
        let keep = (-dt / self.tau).exp();
        self.fraction = self.fraction * keep + x * (1.0 - keep);
    }

    /// The smoothed fraction, 0.0..=1.0.
    pub(crate) fn fraction(&self) -> f64 {
        self.fraction.clamp(0.0, 1.0)
    }
}

pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, 10_000);
        b.refill(t0);
        assert!(b.can_send());
        b.consume(15_000);
        assert!(!b.can_send());
        assert_eq!(b.credit_bytes(), -5_000);
        // 5 000 bytes at 1 MB/s: 5 ms.
        assert_eq!(b.ready_at(), Some(t0 + Duration::from_millis(5)));
        b.refill(t0 + Duration::from_micros(4_999));
        assert!(!b.can_send());
        b.refill(t0 + Duration::from_millis(5));
        assert!(b.can_send());
        assert_eq!(b.ready_at(), None);
        b.refill(t0 + Duration::from_secs(60));
        assert_eq!(b.credit_bytes(), 10_000, "capped at burst");
        assert_eq!(b.delay_for(10_000), Duration::ZERO);
        assert_eq!(b.delay_for(11_000), Duration::from_millis(1));
        // The clock never runs backwards.
        b.refill(t0);
        assert_eq!(b.credit_bytes(), 10_000);
    }

    #[test]
    fn bucket_has_no_rounding_drift() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 10_000);
        b.refill(t0);
        b.consume(10_000);
        for i in 1..=1000u64 {
            b.refill(t0 + Duration::from_nanos(i * 333_333_333));
        }
        // 333.333333 s at 3 B/s = 999.999999 bytes: 1 000 nano-bytes short
        // of 1 000 bytes, earned in 334 ns.
        b.consume(1000);
        assert_eq!(
            b.ready_at(),
            Some(t0 + Duration::from_nanos(333_333_333_000 + 334))
        );
    }

    #[test]
    fn meter_tracks_the_busy_fraction() {
        let mut m = ThrottleMeter::new(Duration::from_millis(500));
        for _ in 0..100 {
            m.record(Duration::from_millis(50), Duration::from_millis(50));
        }
        assert!(m.fraction() > 0.99);
        for _ in 0..100 {
            m.record(Duration::from_millis(50), Duration::from_millis(25));
        }
        assert!((m.fraction() - 0.5).abs() < 0.01);
        m.record(Duration::from_secs(10), Duration::ZERO);
        assert!(m.fraction() < 0.01);
        m.record(Duration::ZERO, Duration::ZERO);
    }
}
