//! The systemd watchdog's schedule (sans-IO): when the next `WATCHDOG=1` is due. The
//! notification itself is `notify`'s; this is what the daemon's Core decides on.

use std::time::{Duration, Instant};

/// When the next `WATCHDOG=1` is due (sans-IO).
///
/// Call order, in the decision loop: sleep until at most `poll_timeout()`, then after each
/// wake-up call `poll_ping(now)` and send `WATCHDOG=1` when it returns true.
#[derive(Debug, Clone)]
pub struct Watchdog {
    interval: Option<Duration>,
    next: Option<Instant>,
}

impl Watchdog {
    /// `interval` is the ping interval (`None`: no watchdog); the first ping is due at once.
    pub fn new(interval: Option<Duration>, now: Instant) -> Watchdog {
        Watchdog {
            interval,
            next: interval.map(|_| now),
        }
    }

    /// The ping interval, if a watchdog is configured.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// When the loop must wake up next for the watchdog.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// True when a ping is due now; schedules the next one.
    pub fn poll_ping(&mut self, now: Instant) -> bool {
        match (self.interval, self.next) {
            (Some(interval), Some(next)) if now >= next => {
                // From `now`, not from `next`: after a stall, no burst of catch-up pings.
                self.next = Some(now + interval);
                true
            }
            _ => false,
        }
    }
}
