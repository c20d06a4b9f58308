//! `CLOCK_MONOTONIC` as nanoseconds, for latency measured across processes.
//!
//! On Linux every process reads the same `CLOCK_MONOTONIC`, and `std::time::Instant` is that
//! clock, so a stamp taken by one process (a benchmark's harness just before it sends a
//! trigger) can be subtracted from a stamp taken by another (the simulator when it read the
//! command). Only the simulators' `--stamp-monotonic` output and the benchmarks use this: the
//! daemon's cores never read a clock.

use std::time::Instant;

/// Now, in nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Converts `Instant`s taken earlier (e.g. when bytes were read) to `CLOCK_MONOTONIC`
/// nanoseconds, so the stamp is the moment of the read, not of the conversion.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicStamp {
    anchor: Instant,
    anchor_ns: u64,
}

impl MonotonicStamp {
    /// Pairs an `Instant` with the clock's nanoseconds, read back to back (tens of ns apart).
    pub fn new() -> Self {
        let anchor = Instant::now();
        let anchor_ns = monotonic_ns();
        Self { anchor, anchor_ns }
    }

    /// `at` in nanoseconds of `CLOCK_MONOTONIC`.
    pub fn ns(&self, at: Instant) -> u64 {
        if at >= self.anchor {
            self.anchor_ns.saturating_add(
                u64::try_from(at.duration_since(self.anchor).as_nanos()).unwrap_or(u64::MAX),
            )
        } else {
            self.anchor_ns.saturating_sub(
                u64::try_from(self.anchor.duration_since(at).as_nanos()).unwrap_or(u64::MAX),
            )
        }
    }
}

impl Default for MonotonicStamp {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_converts_to_the_same_clock() {
        let stamp = MonotonicStamp::new();
        let before = monotonic_ns();
        let at = Instant::now();
        let after = monotonic_ns();
        let ns = stamp.ns(at);
        // The anchor pair is read back to back; allow a little scheduling slack.
        assert!(
            ns + 1_000_000 >= before && ns <= after + 1_000_000,
            "{before} {ns} {after}"
        );
        let earlier = stamp.ns(at - std::time::Duration::from_millis(5));
        assert_eq!(ns - earlier, 5_000_000);
    }
}
