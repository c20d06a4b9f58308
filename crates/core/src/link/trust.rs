//! What a link refuses (frames that fail signing, datagrams and connections from peers other
//! than the pinned one), its counters, and a budget for reporting refusals, sans-IO.
//!
//! Every refused frame is counted at once (the counters are exact, in `get_status`, the
//! metrics and `probe`). Reports — the log line, the audit record, the health alert — are
//! budgeted per reason: the first refusal of a reason is reported at once, later ones at most
//! once per [`REPORT_INTERVAL`] with how many there were, so a peer flooding the link with
//! forged frames cannot flood the log or the audit trail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::signing::{SignatureRefusal, SigningCounters, SigningMode};

/// Refusals of one reason are reported at most this often (the first at once).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Why a link refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// A frame that failed the signing rules.
    Signature(SignatureRefusal),
    /// A datagram from an address other than the pinned peer (`udpin`).
    ForeignPeer,
    /// A connection from a client other than the pinned peer, closed at once (`tcpin`).
    ConnectionRefused,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::Signature(SignatureRefusal::Unsigned),
        Refusal::Signature(SignatureRefusal::BadSignature),
        Refusal::Signature(SignatureRefusal::Replayed),
        Refusal::Signature(SignatureRefusal::OldTimestamp),
        Refusal::Signature(SignatureRefusal::StreamsFull),
        Refusal::ForeignPeer,
        Refusal::ConnectionRefused,
    ];

    /// The reason's name in counters, metrics labels and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Signature(reason) => reason.as_str(),
            Refusal::ForeignPeer => "foreign_peer",
            Refusal::ConnectionRefused => "connection_refused",
        }
    }

    /// Whether it says someone else is on the link or holds the wrong key, as opposed to
    /// the transient `old_timestamp` of an autopilot restarted without the time (it takes the
    /// daemon's timestamp from the first signed frame it receives, within a second).
    pub fn is_intrusion(self) -> bool {
        self != Refusal::Signature(SignatureRefusal::OldTimestamp)
    }
}

/// What a link refused and how it signs, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrustCounters {
    pub signing: SigningMode,
    /// Frames whose signature verified.
    pub signed_frames: u64,
    /// Frames accepted without a signature where one could be checked (mode `sign`, or the
    /// radio's `RADIO_STATUS`).
    pub unsigned_accepted: u64,
    pub unsigned: u64,
    pub bad_signature: u64,
    pub replayed: u64,
    pub old_timestamp: u64,
    pub streams_full: u64,
    /// Datagrams from an address other than the pinned peer.
    pub foreign_peer: u64,
    /// Connections closed at once because another peer holds the link.
    pub connections_refused: u64,
}

impl TrustCounters {
    /// The counter of one reason.
    pub fn refused(&self, reason: Refusal) -> u64 {
        match reason {
            Refusal::Signature(SignatureRefusal::Unsigned) => self.unsigned,
            Refusal::Signature(SignatureRefusal::BadSignature) => self.bad_signature,
            Refusal::Signature(SignatureRefusal::Replayed) => self.replayed,
            Refusal::Signature(SignatureRefusal::OldTimestamp) => self.old_timestamp,
            Refusal::Signature(SignatureRefusal::StreamsFull) => self.streams_full,
            Refusal::ForeignPeer => self.foreign_peer,
            Refusal::ConnectionRefused => self.connections_refused,
        }
    }

    /// Every refusal, whatever the reason.
    pub fn refused_total(&self) -> u64 {
        Refusal::ALL.iter().map(|r| self.refused(*r)).sum()
    }

    /// The signing part, from the link's signing state.
    pub fn with_signing(mut self, mode: SigningMode, c: SigningCounters) -> TrustCounters {
        self.signing = mode;
        self.signed_frames = c.signed;
        self.unsigned_accepted = c.unsigned_accepted;
        self.unsigned = c.unsigned;
        self.bad_signature = c.bad_signature;
        self.replayed = c.replayed;
        self.old_timestamp = c.old_timestamp;
        self.streams_full = c.streams_full;
        self
    }
}

/// A report of refusals: the first of its reason, or those since the last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRefusal {
    pub reason: Refusal,
    /// Refusals of this reason since the last report (at least 1).
    pub count: u64,
    /// The address of the refused peer, when the link has addresses.
    pub peer: Option<String>,
    /// The last refused frame or connection, in words.
    pub detail: String,
}

#[derive(Debug, Default)]
struct Slot {
    reported_at: Option<Instant>,
    pending: u64,
    last: Option<(Option<String>, String)>,
}

/// The reporting budget. Call order: [`refused`](Self::refused) for every refusal (report
/// what it returns); [`poll`](Self::poll) when [`poll_timeout`](Self::poll_timeout) is due.
#[derive(Debug, Default)]
pub struct RefusalReporter {
    slots: BTreeMap<Refusal, Slot>,
}

impl RefusalReporter {
    pub fn new() -> RefusalReporter {
        RefusalReporter::default()
    }

    /// One refusal; returns a report when the budget allows one now.
    pub fn refused(
        &mut self,
        now: Instant,
        reason: Refusal,
        peer: Option<String>,
        detail: String,
    ) -> Option<LinkRefusal> {
        let slot = self.slots.entry(reason).or_default();
        slot.pending += 1;
        slot.last = Some((peer, detail));
        let due = slot
            .reported_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_INTERVAL);
        due.then(|| Self::take(reason, slot, now)).flatten()
    }

    /// A report held back by the budget whose time has come.
    pub fn poll(&mut self, now: Instant) -> Option<LinkRefusal> {
        self.slots.iter_mut().find_map(|(reason, slot)| {
            let due = slot.pending > 0
                && slot
                    .reported_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_INTERVAL);
            if due {
                Self::take(*reason, slot, now)
            } else {
                None
            }
        })
    }

    /// When the next held-back report is due; `None` when nothing waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|slot| slot.pending > 0)
            .filter_map(|slot| slot.reported_at.map(|at| at + REPORT_INTERVAL))
            .min()
    }

    fn take(reason: Refusal, slot: &mut Slot, now: Instant) -> Option<LinkRefusal> {
        let (peer, detail) = slot.last.take()?;
        let count = std::mem::take(&mut slot.pending);
        slot.reported_at = Some(now);
        Some(LinkRefusal {
            reason,
            count,
            peer,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_reported_at_once_then_summed_per_interval() {
        let t0 = Instant::now();
        let mut r = RefusalReporter::new();
        let foreign = Refusal::ForeignPeer;
        let first = r.refused(t0, foreign, Some("10.0.0.9:1".into()), "a".into());
        assert_eq!(first.map(|f| f.count), Some(1));
        assert_eq!(r.poll_timeout(), None);
        for i in 0..999 {
            assert_eq!(
                r.refused(t0 + Duration::from_millis(i), foreign, None, format!("{i}")),
                None
            );
        }
        // Another reason has its own budget.
        let unsigned = Refusal::Signature(SignatureRefusal::Unsigned);
        assert!(r.refused(t0, unsigned, None, "u".into()).is_some());
        assert_eq!(r.poll_timeout(), Some(t0 + REPORT_INTERVAL));
        assert_eq!(
            r.poll(t0 + REPORT_INTERVAL - Duration::from_millis(1)),
            None
        );
        let held = r.poll(t0 + REPORT_INTERVAL).unwrap();
        assert_eq!((held.reason, held.count), (foreign, 999));
        assert_eq!(held.detail, "998", "the last refusal is described");
        assert_eq!(r.poll(t0 + REPORT_INTERVAL), None);
        assert_eq!(r.poll_timeout(), None);
        // After a quiet interval, the next one is reported at once again.
        let later = t0 + 3 * REPORT_INTERVAL;
        assert_eq!(
            r.refused(later, foreign, None, "b".into()).map(|f| f.count),
            Some(1)
        );
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let names: std::collections::BTreeSet<_> =
            Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Refusal::ALL.len());
        assert!(names.contains("bad_signature") && names.contains("foreign_peer"));
        let counters = TrustCounters {
            replayed: 2,
            foreign_peer: 3,
            ..TrustCounters::default()
        };
        assert_eq!(counters.refused_total(), 5);
        assert!(!Refusal::Signature(SignatureRefusal::OldTimestamp).is_intrusion());
        assert!(Refusal::ConnectionRefused.is_intrusion());
    }
}
