//! Security events over the last hour, counted by kind (sans-IO).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The window of the summary.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Events kept; beyond it the oldest are dropped and counted.
pub const EVENTS_MAX: usize = 100_000;

/// Counts by kind over the last hour, and since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SecuritySummary {
    pub last_hour: BTreeMap<String, u64>,
    pub since_start: BTreeMap<String, u64>,
}

/// The event log behind the summary. Call order: `handle_event(now, kind)`; `summary(now)`.
#[derive(Debug, Default)]
pub struct SecurityEvents {
    recent: VecDeque<(Instant, &'static str)>,
    since_start: BTreeMap<&'static str, u64>,
}

impl SecurityEvents {
    pub fn handle_event(&mut self, now: Instant, kind: &'static str) {
        if self.recent.len() >= EVENTS_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((now, kind));
        *self.since_start.entry(kind).or_default() += 1;
    }

    pub fn summary(&mut self, now: Instant) -> SecuritySummary {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
        let mut last_hour = BTreeMap::new();
        for (_, kind) in &self.recent {
            *last_hour.entry((*kind).to_owned()).or_default() += 1;
        }
        SecuritySummary {
            last_hour,
            since_start: self
                .since_start
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_hour() {
        let t0 = Instant::now();
        let mut e = SecurityEvents::default();
        e.handle_event(t0, "bad_signature");
        e.handle_event(t0 + Duration::from_secs(1800), "bad_signature");
        e.handle_event(t0 + Duration::from_secs(1800), "rate_limited");
        let s = e.summary(t0 + Duration::from_secs(3601));
        assert_eq!(s.last_hour.get("bad_signature"), Some(&1));
        assert_eq!(s.last_hour.get("rate_limited"), Some(&1));
        assert_eq!(s.since_start.get("bad_signature"), Some(&2));
    }
}
