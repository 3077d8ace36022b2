//! `Pacer`: spreads a flood's sends over time at a fixed rate, in 1 ms
//! batches, until the count is sent or the storm's deadline passes.

use std::time::{Duration, Instant};

/// Paces a flood: `count` sends at `rate` per second in 1 ms batches, until
/// done or `deadline`.
pub(crate) struct Pacer {
    t0: Instant,
    tick: tokio::time::Interval,
    sent: u64,
    count: u64,
    rate: u64,
    deadline: Instant,
}

impl Pacer {
    pub(crate) fn new(count: u64, rate: u64, deadline: Instant) -> Pacer {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Pacer {
            t0: Instant::now(),
            tick,
            sent: 0,
            count,
            rate,
            deadline,
        }
    }

    /// How many to send now (counted as sent); `None` when the flood is over.
    pub(crate) async fn batch(&mut self) -> Option<u64> {
        if self.sent >= self.count || Instant::now() >= self.deadline {
            return None;
        }
        self.tick.tick().await;
        let due = (self.t0.elapsed().as_secs_f64() * self.rate as f64) as u64;
        let n = due.min(self.count).saturating_sub(self.sent);
        self.sent += n;
        Some(n)
    }

    /// Sent so far and the time taken.
    pub(crate) fn result(&self) -> (u64, Duration) {
        (self.sent, self.t0.elapsed())
    }
}
