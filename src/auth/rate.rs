//! Token buckets (sans-IO): a burst up to `capacity`, refilled at `refill_per_s`.

use std::time::{Duration, Instant};

/// One bucket. Call order: `take(now)` per call; nothing else.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    refill_per_s: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. A non-positive rate means no refill after the burst.
    pub fn new(capacity: u32, refill_per_s: f64) -> TokenBucket {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            refill_per_s: if refill_per_s.is_finite() {
                refill_per_s.max(0.0)
            } else {
                0.0
            },
            tokens: capacity,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.refill_per_s).min(self.capacity);
        }
        self.last = Some(now);
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.refill_per_s <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        let wait_s = (1.0 - self.tokens) / self.refill_per_s;
        Err(Duration::from_secs_f64(wait_s.min(3600.0)).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_with_retry_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 2.0);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(b.take(t0 + Duration::from_millis(499)).is_err());
        assert!(b.take(t0 + Duration::from_millis(1000)).is_ok());
        // Never above capacity after a long pause.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_more_than_burst_plus_rate(steps in proptest::collection::vec(0u64..200, 1..300)) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(5, 10.0);
            let mut now = t0;
            let mut granted = 0u64;
            for ms in steps {
                now += Duration::from_millis(ms);
                if b.take(now).is_ok() { granted += 1; }
            }
            let elapsed = now.duration_since(t0).as_secs_f64();
            proptest::prop_assert!(granted as f64 <= 5.0 + 10.0 * elapsed + 1e-6);
        }
    }
}
