//! Capped exponential backoff, the one every reconnecting shell uses (sans-IO: durations in,
//! durations out; the randomness is passed in).
//!
//! Used by the autopilot link's serial and TCP reopens, the MQTT connection's driver (the
//! daemon, the ground bridge, the audit witness, the rig's and benchmarks' clients), the
//! firmware bridge's serial port, the camera source and the rig's serial relay; each keeps
//! its own limits and its own rule for when a connection counts as good again.
//!
//! Call order: `next_delay` before each new attempt (after a failure or a lost connection);
//! `reset` when a connection is good again (or `connection_lasted` with how long it was up,
//! for a device that may open and fail at once).

use std::time::Duration;

/// `min`, doubling up to `max` on each failure, optionally scaled by a random factor.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// Scales each delay by a factor in [0.5, 1.0] when present.
    jitter: Option<fastrand::Rng>,
}

impl Backoff {
    /// `min` first, doubling up to `max` (a `max` below `min` is `min`), without jitter. A zero
    /// `min` retries at once every time; a `min` near `Duration::MAX` saturates, never panics.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            jitter: None,
        }
    }

    /// Scales each delay by a factor in [0.5, 1.0] drawn from `rng`, so a fleet that lost the
    /// same broker does not reconnect in lockstep. The caller seeds `rng`: a test or a fault
    /// run can reproduce the delays.
    pub fn with_jitter(mut self, rng: fastrand::Rng) -> Backoff {
        self.jitter = Some(rng);
        self
    }

    /// The delay before the next attempt; the one after it is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        // Saturating: a configured minimum near Duration::MAX must not panic.
        self.next = self.next.saturating_mul(2).min(self.max);
        match &mut self.jitter {
            // A factor at most 1 cannot overflow.
            Some(rng) => base.mul_f64(0.5 + 0.5 * rng.f64()),
            None => base,
        }
    }

    /// The connection is good again: the next delay is the minimum.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// A connection ended after `up_for`: only one that stayed up at least the cap resets the
    /// delay, so a device that opens and fails at once is not hammered at the minimum delay.
    pub fn connection_lasted(&mut self, up_for: Duration) {
        if up_for >= self.max {
            self.reset();
        }
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn delays_ms(backoff: &mut Backoff, n: usize) -> Vec<u128> {
        (0..n).map(|_| backoff.next_delay().as_millis()).collect()
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(ms(100), ms(1000));
        assert_eq!(delays_ms(&mut b, 6), [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(delays_ms(&mut b, 2), [100, 200]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), ms(1000), "no overflow");
    }

    #[test]
    fn resets_only_after_a_connection_that_lasted() {
        let mut b = Backoff::new(ms(100), ms(1000));
        delays_ms(&mut b, 3);
        b.connection_lasted(ms(10));
        assert_eq!(
            delays_ms(&mut b, 1),
            [800],
            "a flapping device keeps backing off"
        );
        b.connection_lasted(Duration::from_secs(5));
        assert_eq!(delays_ms(&mut b, 2), [100, 200]);
    }

    #[test]
    fn survives_odd_configuration() {
        // Cap below the minimum: the minimum wins.
        assert_eq!(
            delays_ms(&mut Backoff::new(ms(500), ms(100)), 3),
            [500, 500, 500]
        );
        // Zero: retry at once, without spinning into an overflow.
        assert_eq!(delays_ms(&mut Backoff::new(ms(0), ms(0)), 2), [0, 0]);
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.next_delay(), Duration::MAX);
        assert_eq!(huge.next_delay(), Duration::MAX);
        let mut huge =
            Backoff::new(Duration::MAX, Duration::MAX).with_jitter(fastrand::Rng::with_seed(1));
        assert!(huge.next_delay() >= Duration::MAX / 2);
    }

    #[test]
    fn jitter_stays_within_half_and_whole_and_follows_its_seed() {
        let mut b = Backoff::new(ms(100), ms(1000)).with_jitter(fastrand::Rng::with_seed(7));
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000];
        let got: Vec<Duration> = bases.iter().map(|_| b.next_delay()).collect();
        for (delay, base) in got.iter().zip(bases) {
            assert!(
                *delay >= ms(base) / 2 && *delay <= ms(base),
                "{delay:?} for {base} ms"
            );
        }
        // The same seed gives the same delays; another seed other ones.
        let mut again = Backoff::new(ms(100), ms(1000)).with_jitter(fastrand::Rng::with_seed(7));
        let repeated: Vec<Duration> = bases.iter().map(|_| again.next_delay()).collect();
        assert_eq!(got, repeated);
        let mut other = Backoff::new(ms(100), ms(1000)).with_jitter(fastrand::Rng::with_seed(8));
        let different: Vec<Duration> = bases.iter().map(|_| other.next_delay()).collect();
        assert_ne!(got, different);
        // Spread over the range, not stuck at one end.
        let mut b = Backoff::new(ms(1000), ms(1000)).with_jitter(fastrand::Rng::with_seed(3));
        let samples: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(samples.iter().any(|d| *d < ms(650)));
        assert!(samples.iter().any(|d| *d > ms(850)));
    }
}
