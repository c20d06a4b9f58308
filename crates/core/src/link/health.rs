//! Sans-IO link health: frames lost from sequence gaps, the autopilot's heartbeat age,
//! connection state and reconnects, combined with the decoder's error counters.

use std::collections::HashMap;
use std::time::Instant;

use mavlink::MavHeader;

use super::MavMessage;
use super::dialect::MavAutopilot;
use super::frame::FrameCounters;
use super::trust::{LinkRefusal, Refusal};
use crate::vehicle::snapshot::{LinkHealthStatus, LinkTrustStatus, RefusedCounts};

/// `old_timestamp` refusals are expected for about a second after an autopilot restarts
/// without the time; when they go on this long, the autopilot is not getting the daemon's
/// frames (or its clock is far off), and they count as an intrusion.
pub const OLD_TIMESTAMP_TOLERATED: std::time::Duration = std::time::Duration::from_secs(10);

/// Link health as seen from the daemon's side of the link.
///
/// Call order: [`handle_connected`](Self::handle_connected) /
/// [`handle_disconnected`](Self::handle_disconnected) on the transport's events,
/// [`handle_frame`](Self::handle_frame) for every decoded frame in arrival order, and
/// [`status`](Self::status) whenever a report is needed, with the decoder's counters.
///
/// Loss is estimated per sender (system, component) from the gap between a frame's
/// sequence number and the one expected after the previous frame of that sender, modulo
/// 256. A repeated sequence number is a duplicate, not a loss of 255 frames. A gap of 256
/// frames or more is invisible, as in every MAVLink tool. Sequences are forgotten when the
/// link drops, so the silence of an outage is not counted as loss.
#[derive(Debug, Default)]
pub struct LinkHealth {
    /// Last sequence number seen per sender.
    last_sequence: SequenceTable,
    frames_seen: u64,
    frames_lost: u64,
    duplicates: u64,
    last_autopilot_heartbeat: Option<Instant>,
    connected: bool,
    /// Whether the link has been up before, so the next connection is a reconnect.
    was_connected: bool,
    reconnects: u64,
    last_intrusion: Option<Instant>,
    last_refusal: Option<String>,
    /// Since when old-timestamp refusals go on without an autopilot heartbeat in between.
    old_timestamps_since: Option<Instant>,
}

/// The last sequence number of each sender, looked up for every frame: a table indexed by
/// system and component (a frame's system id is one byte on the wire), so a frame costs an
/// index, not a SipHash of its sender (issue 17). A system's row of 256 components is made
/// when it is first heard: 2 KiB for the row pointers, 512 bytes per system heard, bounded
/// whatever a hostile link sends.
#[derive(Debug, Default)]
struct SequenceTable {
    /// Indexed by system id, then component id; `UNSEEN` where nothing was heard.
    systems: Vec<Option<Box<[u16; 256]>>>,
    /// Senders whose system id does not fit a byte (never decoded from a link; a header
    /// made by hand can hold one).
    others: HashMap<(u32, u8), u8>,
}

impl SequenceTable {
    const UNSEEN: u16 = u16::MAX;

    /// Records `sequence` for `sender`; the sequence it had before, if it was heard.
    fn insert(&mut self, (system, component): (u32, u8), sequence: u8) -> Option<u8> {
        let Ok(system) = u8::try_from(system) else {
            return self.others.insert((system, component), sequence);
        };
        if self.systems.is_empty() {
            self.systems.resize_with(256, || None);
        }
        let row =
            self.systems[usize::from(system)].get_or_insert_with(|| Box::new([Self::UNSEEN; 256]));
        let last = std::mem::replace(&mut row[usize::from(component)], u16::from(sequence));
        u8::try_from(last).ok()
    }

    fn clear(&mut self) {
        self.systems.clear();
        self.others.clear();
    }
}

impl LinkHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport opened the link. A connection after an earlier one counts as a reconnect.
    pub fn handle_connected(&mut self) {
        if self.connected {
            return;
        }
        if self.was_connected {
            self.reconnects += 1;
        }
        self.connected = true;
        self.was_connected = true;
    }

    /// The transport lost the link.
    pub fn handle_disconnected(&mut self) {
        self.connected = false;
        self.last_sequence.clear();
    }

    /// The transport replaced the link in one step (e.g. `tcpin` accepted a new client in
    /// place of the old one): a disconnect followed by a connect.
    pub fn handle_reconnect(&mut self) {
        self.handle_disconnected();
        self.handle_connected();
    }

    /// A frame decoded from the link.
    pub fn handle_frame(&mut self, now: Instant, header: &MavHeader, message: &MavMessage) {
        self.frames_seen += 1;
        let sender = (header.system_id, header.component_id);
        if let Some(last) = self.last_sequence.insert(sender, header.sequence) {
            if header.sequence == last {
                self.duplicates += 1;
            } else {
                let expected = last.wrapping_add(1);
                self.frames_lost += u64::from(header.sequence.wrapping_sub(expected));
            }
        }
        if let MavMessage::HEARTBEAT(heartbeat) = message {
            // GCSs, companions and gimbals also send heartbeats; only an autopilot's
            // heartbeat says the autopilot is alive.
            if heartbeat.autopilot != MavAutopilot::MAV_AUTOPILOT_INVALID {
                self.last_autopilot_heartbeat = Some(now);
                self.old_timestamps_since = None;
            }
        }
    }

    /// The link refused frames or a connection (a report within its budget).
    pub fn handle_refused(&mut self, now: Instant, refusal: &LinkRefusal) {
        self.last_refusal = Some(format!("{}: {}", refusal.reason.as_str(), refusal.detail));
        let intrusion = match refusal.reason {
            reason if reason.is_intrusion() => true,
            _ => {
                let since = *self.old_timestamps_since.get_or_insert(now);
                now.saturating_duration_since(since) >= OLD_TIMESTAMP_TOLERATED
            }
        };
        if intrusion {
            self.last_intrusion = Some(now);
        }
    }

    /// Frames lost so far, estimated from sequence gaps.
    pub fn frames_lost(&self) -> u64 {
        self.frames_lost
    }

    /// Frames that repeated their sender's previous sequence number.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The report at `now`, with the decoder's counters.
    pub fn status(&self, now: Instant, counters: FrameCounters) -> LinkHealthStatus {
        let heartbeat_age_ms = self.last_autopilot_heartbeat.map(|at| {
            u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
        });
        let expected = self.frames_seen + self.frames_lost;
        let loss_percent = if expected == 0 {
            0.0
        } else {
            self.frames_lost as f64 * 100.0 / expected as f64
        };
        LinkHealthStatus {
            connected: self.connected,
            heartbeat_age_ms,
            frames_received: counters.frames,
            frames_lost: self.frames_lost,
            loss_percent,
            crc_errors: counters.crc_errors,
            parse_errors: counters.parse_errors,
            unknown_messages: counters.unknown_messages,
            garbage_bytes: counters.garbage_bytes,
            reconnects: self.reconnects,
            trust: self.trust_status(now, counters),
        }
    }

    fn trust_status(&self, now: Instant, counters: FrameCounters) -> LinkTrustStatus {
        let t = counters.trust;
        let count = |r| t.refused(r);
        use crate::link::signing::SignatureRefusal as S;
        LinkTrustStatus {
            signing: t.signing,
            signed_frames: t.signed_frames,
            unsigned_accepted: t.unsigned_accepted,
            refused: RefusedCounts {
                unsigned: count(Refusal::Signature(S::Unsigned)),
                bad_signature: count(Refusal::Signature(S::BadSignature)),
                replayed: count(Refusal::Signature(S::Replayed)),
                old_timestamp: count(Refusal::Signature(S::OldTimestamp)),
                streams_full: count(Refusal::Signature(S::StreamsFull)),
                foreign_peer: count(Refusal::ForeignPeer),
                connection_refused: count(Refusal::ConnectionRefused),
            },
            last_intrusion_age_ms: self.last_intrusion.map(|at| {
                u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
            }),
            last_refusal: self.last_refusal.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::link::dialect::{HEARTBEAT_DATA, MavType, SYSTEM_TIME_DATA};

    fn header(system_id: u32, component_id: u8, sequence: u8) -> MavHeader {
        MavHeader {
            system_id,
            component_id,
            sequence,
        }
    }

    fn heartbeat(autopilot: MavAutopilot) -> MavMessage {
        MavMessage::HEARTBEAT(HEARTBEAT_DATA {
            autopilot,
            mavtype: MavType::MAV_TYPE_QUADROTOR,
            ..Default::default()
        })
    }

    fn other() -> MavMessage {
        MavMessage::SYSTEM_TIME(SYSTEM_TIME_DATA::default())
    }

    /// (name, frames as (system, component, sequence), expected lost, expected duplicates)
    type GapCase = (&'static str, &'static [(u32, u8, u8)], u64, u64);

    #[test]
    fn sequence_gaps_table() {
        let cases: &[GapCase] = &[
            ("in order", &[(1, 1, 0), (1, 1, 1), (1, 1, 2)], 0, 0),
            ("one gap of two", &[(1, 1, 0), (1, 1, 3)], 2, 0),
            (
                "wraps at 255",
                &[(1, 1, 254), (1, 1, 255), (1, 1, 0), (1, 1, 1)],
                0,
                0,
            ),
            ("gap across the wrap", &[(1, 1, 250), (1, 1, 2)], 7, 0),
            ("duplicate", &[(1, 1, 5), (1, 1, 5), (1, 1, 6)], 0, 1),
            ("first frame is not a gap", &[(1, 1, 100)], 0, 0),
            (
                "senders are independent",
                &[(1, 1, 0), (1, 154, 50), (1, 1, 1), (1, 154, 51), (2, 1, 9)],
                0,
                0,
            ),
            (
                "gaps per sender add up",
                &[(1, 1, 0), (1, 154, 0), (1, 1, 2), (1, 154, 5)],
                1 + 4,
                0,
            ),
            (
                "the edges of the table: system 0 and 255, component 0 and 255",
                &[
                    (0, 0, 1),
                    (255, 255, 7),
                    (0, 0, 3),
                    (255, 255, 7),
                    (0, 255, 9),
                ],
                1,
                1,
            ),
            (
                "a system id wider than a byte is still a sender of its own",
                &[(256, 1, 0), (0, 1, 40), (256, 1, 2), (0, 1, 41)],
                1,
                0,
            ),
            (
                "late frame counts as a long gap",
                &[(1, 1, 10), (1, 1, 9)],
                254,
                0,
            ),
        ];
        let now = Instant::now();
        for (name, frames, lost, duplicates) in cases {
            let mut health = LinkHealth::new();
            health.handle_connected();
            for &(sys, comp, seq) in *frames {
                health.handle_frame(now, &header(sys, comp, seq), &other());
            }
            assert_eq!(health.frames_lost(), *lost, "{name}: lost");
            assert_eq!(health.duplicates(), *duplicates, "{name}: duplicates");
        }
    }

    #[test]
    fn loss_percent_is_lost_over_expected() {
        let now = Instant::now();
        let mut health = LinkHealth::new();
        for seq in [0u8, 1, 2, 5] {
            health.handle_frame(now, &header(1, 1, seq), &other());
        }
        let status = health.status(now, FrameCounters::default());
        assert_eq!(status.frames_lost, 2);
        // 4 received + 2 lost = 6 expected.
        assert!((status.loss_percent - 100.0 * 2.0 / 6.0).abs() < 1e-9);
        assert_eq!(
            LinkHealth::new()
                .status(now, FrameCounters::default())
                .loss_percent,
            0.0
        );
    }

    #[test]
    fn heartbeat_age_counts_only_autopilots() {
        let start = Instant::now();
        let mut health = LinkHealth::new();
        assert_eq!(
            health
                .status(start, FrameCounters::default())
                .heartbeat_age_ms,
            None
        );
        // A GCS heartbeat (autopilot INVALID) does not count.
        health.handle_frame(
            start,
            &header(255, 190, 0),
            &heartbeat(MavAutopilot::MAV_AUTOPILOT_INVALID),
        );
        assert_eq!(
            health
                .status(start, FrameCounters::default())
                .heartbeat_age_ms,
            None
        );
        health.handle_frame(
            start,
            &header(1, 1, 0),
            &heartbeat(MavAutopilot::MAV_AUTOPILOT_PX4),
        );
        let later = start + Duration::from_millis(1500);
        assert_eq!(
            health
                .status(later, FrameCounters::default())
                .heartbeat_age_ms,
            Some(1500)
        );
        // A `now` before the heartbeat (clock handed in out of order) is age 0, not a panic.
        assert_eq!(
            health
                .status(start, FrameCounters::default())
                .heartbeat_age_ms,
            Some(0)
        );
    }

    #[test]
    fn connection_state_and_reconnects() {
        let now = Instant::now();
        let mut health = LinkHealth::new();
        assert!(!health.status(now, FrameCounters::default()).connected);
        health.handle_connected();
        let status = health.status(now, FrameCounters::default());
        assert!(status.connected);
        assert_eq!(status.reconnects, 0);
        health.handle_frame(now, &header(1, 1, 10), &other());
        health.handle_disconnected();
        assert!(!health.status(now, FrameCounters::default()).connected);
        health.handle_connected();
        // A repeated connected event is not another reconnect.
        health.handle_connected();
        // The autopilot's sequence moved on during the outage: not counted as loss.
        health.handle_frame(now, &header(1, 1, 200), &other());
        health.handle_reconnect();
        let status = health.status(now, FrameCounters::default());
        assert!(status.connected);
        assert_eq!(status.reconnects, 2);
        assert_eq!(status.frames_lost, 0);
    }

    #[test]
    fn decoder_counters_pass_through() {
        let counters = FrameCounters {
            frames: 10,
            crc_errors: 1,
            parse_errors: 2,
            unknown_messages: 3,
            garbage_bytes: 4,
            trust: crate::link::trust::TrustCounters {
                signing: crate::link::signing::SigningMode::Required,
                signed_frames: 9,
                bad_signature: 5,
                foreign_peer: 6,
                ..Default::default()
            },
        };
        let status = LinkHealth::new().status(Instant::now(), counters);
        let trust = &status.trust;
        assert_eq!(trust.signing, crate::link::signing::SigningMode::Required);
        assert_eq!(trust.signed_frames, 9);
        assert_eq!(
            (trust.refused.bad_signature, trust.refused.foreign_peer),
            (5, 6)
        );
        assert_eq!(trust.refused.total(), 11);
        assert_eq!(
            (
                status.frames_received,
                status.crc_errors,
                status.parse_errors,
                status.unknown_messages,
                status.garbage_bytes
            ),
            (10, 1, 2, 3, 4)
        );
    }

    fn refusal(reason: Refusal) -> LinkRefusal {
        LinkRefusal {
            reason,
            count: 1,
            peer: Some("10.0.0.9:14550".into()),
            detail: "what".into(),
        }
    }

    #[test]
    fn an_intrusion_is_dated_and_old_timestamps_only_when_they_go_on() {
        use crate::link::signing::SignatureRefusal;
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let age = |h: &LinkHealth, now| {
            h.status(now, FrameCounters::default())
                .trust
                .last_intrusion_age_ms
        };
        let mut health = LinkHealth::new();
        assert_eq!(age(&health, t0), None);
        let old = refusal(Refusal::Signature(SignatureRefusal::OldTimestamp));
        // An autopilot restarted without the time: refused until it takes the daemon's.
        health.handle_refused(t0, &old);
        health.handle_refused(at(900), &old);
        health.handle_frame(
            at(1000),
            &header(1, 1, 0),
            &heartbeat(MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA),
        );
        health.handle_refused(at(12_000), &old);
        assert_eq!(age(&health, at(12_000)), None, "each run was short");
        // Refused for 10 s on end: the autopilot does not get the daemon's frames.
        health.handle_refused(at(22_000), &old);
        assert_eq!(age(&health, at(22_500)), Some(500));
        let mut health = LinkHealth::new();
        health.handle_refused(at(5), &refusal(Refusal::ForeignPeer));
        assert_eq!(age(&health, at(1005)), Some(1000));
        let status = health.status(at(1005), FrameCounters::default());
        assert_eq!(
            status.trust.last_refusal.as_deref(),
            Some("foreign_peer: what")
        );
    }
}
