//! What crossed the wire: a sans-IO MAVLink frame splitter and the rig's shared wire log.
//!
//! The rig measures the daemon from outside (e-stop latency, failsafe reaction, whitelist
//! conformance) by the frames that actually passed the serial relay, independent of the
//! daemon's own logs. [`FrameSplitter`] cuts a byte stream into frames without changing
//! it: every byte pushed comes back out, in order, either inside a frame or as unframed
//! bytes, so a relay can forward exactly what it read and still say which frame was which.
//! Framing and CRC checks are the daemon's own [`FrameDecoder`] (one implementation of the
//! wire format, tested once); the splitter adds the byte accounting a relay needs.
//!
//! [`WireLog`] is the bounded, shared record of frames and fault events, with the queries a
//! scenario runner asks and a `watch` to wait for new entries without polling.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mavlink::Message;
use tokio::sync::watch;

use crate::link::MavMessage;
use crate::link::dialect::MavModeFlag;
use crate::link::frame::{FrameDecoder, FrameError};

const STX_V2: u8 = 0xFD;
const STX_V1: u8 = 0xFE;

/// Bytes handed to the decoder at once: far below its `BUFFER_LEN_MAX`, so a huge chunk
/// is never truncated by the decoder's overflow policy and every byte is accounted for.
const PUSH_CHUNK_LEN: usize = 4096;

/// Which way a frame was travelling through the rig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the daemon (companion) towards the autopilot.
    ToAutopilot,
    /// From the autopilot towards the daemon.
    ToCompanion,
}

impl Direction {
    /// The arrow of the excerpt lines.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ToAutopilot => "-> autopilot",
            Direction::ToCompanion => "-> companion",
        }
    }
}

/// What the rig did with a frame it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Forwarded unchanged, at once.
    Forwarded,
    /// Forwarded unchanged after a delay.
    Delayed { delay_ms: u64 },
    /// Not forwarded (line cut, device unplugged, dropped by the fault, or overrun).
    Dropped,
    /// Forwarded with one byte flipped.
    Corrupted,
}

/// One MAVLink frame seen by the rig.
#[derive(Debug, Clone, PartialEq)]
pub struct WireFrame {
    /// When its last byte was read, since the rig's epoch.
    pub at: Duration,
    pub direction: Direction,
    pub system_id: u8,
    pub component_id: u8,
    pub sequence: u8,
    pub message_id: u32,
    /// The message, when the dialect parses it (a frame with a valid checksum whose fields
    /// the dialect refuses, e.g. an undefined enum value, has `None`).
    pub message: Option<MavMessage>,
    /// Bytes on the wire, start marker to signature.
    pub len: usize,
    /// Written by the rig itself (e.g. a `SIM_*` PARAM_SET), not by the daemon or autopilot.
    pub injected: bool,
    pub fate: Fate,
}

impl WireFrame {
    /// The message's name, or `#ID` when it did not parse.
    pub fn name(&self) -> String {
        match &self.message {
            Some(message) => message.message_name().to_owned(),
            None => format!("#{}", self.message_id),
        }
    }

    /// Whether the frame reached the other side (possibly late or corrupted).
    pub fn was_forwarded(&self) -> bool {
        self.fate != Fate::Dropped
    }
}

/// An entry of the wire log.
// Almost every entry is a frame, so boxing it would add an allocation per frame only to make
// the rare fault and note events smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WireEvent {
    Frame(WireFrame),
    /// A fault was set or cleared (or anything else the rig wants next to the frames).
    Fault {
        at: Duration,
        description: String,
    },
    /// Something the rig saw happen that it did not cause, e.g. the autopilot side of the
    /// relay disconnecting.
    Note {
        at: Duration,
        text: String,
    },
}

impl WireEvent {
    pub fn at(&self) -> Duration {
        match self {
            WireEvent::Frame(frame) => frame.at,
            WireEvent::Fault { at, .. } | WireEvent::Note { at, .. } => *at,
        }
    }
}

/// A frame cut out of the stream by [`FrameSplitter`].
#[derive(Debug, Clone, PartialEq)]
pub struct SplitFrame {
    pub system_id: u8,
    pub component_id: u8,
    pub sequence: u8,
    pub message_id: u32,
    pub message: Option<MavMessage>,
    /// The frame's bytes exactly as pushed.
    pub raw: Vec<u8>,
}

/// A piece of the stream, in order. Concatenating every piece returned gives back every
/// byte pushed, except the tail still waiting to complete a frame.
// Most pieces are frames (unframed bytes are noise), so boxing them would only add an
// allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Bytes that are not part of a valid frame (noise, boot chatter, a broken frame).
    Unframed(Vec<u8>),
    Frame(SplitFrame),
}

/// What the splitter has seen since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitCounters {
    /// Frames whose message parsed.
    pub frames: u64,
    /// Frames with a valid checksum whose fields the dialect refuses (`message: None`).
    pub undecoded_frames: u64,
    /// Candidate frames of a known message id with a wrong checksum.
    pub crc_errors: u64,
    /// Candidate frames with a message id the dialect does not know (no CRC extra).
    pub unknown_messages: u64,
    /// Candidate frames with incompatibility flags other than "signed".
    pub bad_flags: u64,
    /// Bytes returned as [`Piece::Unframed`].
    pub garbage_bytes: u64,
}

/// Sans-IO splitter: bytes in, [`Piece`]s out, in stream order, nothing altered.
///
/// Frames are MAVLink 2 (0xFD, signed or not) and MAVLink 1 (0xFE) of the ardupilotmega
/// dialect, checked with each message's CRC extra. Never panics on any input; memory is
/// bounded by one frame plus one push chunk.
#[derive(Debug, Default)]
pub struct FrameSplitter {
    decoder: FrameDecoder,
    /// A copy of the bytes the decoder has not consumed yet, so the bytes it skips can be
    /// handed back as unframed pieces.
    pending: VecDeque<u8>,
    counters: SplitCounters,
}

impl FrameSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pushes bytes just read; returns the pieces completed by them, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for chunk in bytes.chunks(PUSH_CHUNK_LEN) {
            self.pending.extend(chunk);
            self.decoder.push(chunk);
            self.drain(&mut pieces);
        }
        pieces
    }

    /// Counters since the splitter was created.
    pub fn counters(&self) -> SplitCounters {
        self.counters
    }

    /// Bytes held back waiting for the rest of a frame.
    pub fn buffered_len(&self) -> usize {
        self.pending.len()
    }

    /// Hands back the partial frame still held (when the stream it belonged to ends, or to
    /// forward it as it is); the decoder starts afresh.
    pub fn flush(&mut self) -> Option<Piece> {
        self.decoder.reset();
        let rest = self.take_unframed(self.pending.len());
        (!rest.is_empty()).then_some(Piece::Unframed(rest))
    }

    fn drain(&mut self, pieces: &mut Vec<Piece>) {
        loop {
            // The decoder first skips everything before the next start marker, then
            // decides about the candidate frame there; `start` is where that candidate is.
            let start = self
                .pending
                .iter()
                .position(|&b| b == STX_V2 || b == STX_V1)
                .unwrap_or(self.pending.len());
            let garbage_before = self.decoder.counters().garbage_bytes;
            let item = self.decoder.poll();
            let skipped = (self.decoder.counters().garbage_bytes - garbage_before) as usize;
            match item {
                None => {
                    self.emit_unframed(skipped, pieces);
                    return;
                }
                Some(Ok(frame)) => {
                    self.emit_unframed(skipped, pieces);
                    let raw = self.take_raw(frame.raw.len());
                    self.counters.frames += 1;
                    pieces.push(Piece::Frame(SplitFrame {
                        system_id: u8::try_from(frame.header.system_id).unwrap_or(u8::MAX),
                        component_id: frame.header.component_id,
                        sequence: frame.header.sequence,
                        message_id: frame.message.message_id(),
                        message: Some(frame.message),
                        raw,
                    }));
                }
                Some(Err(FrameError::Parse { message_id, .. })) if skipped > start => {
                    // A valid checksum over fields the dialect refuses: a real frame,
                    // skipped whole by the decoder; it is handed on as a frame.
                    self.emit_unframed(start, pieces);
                    let raw = self.take_raw(skipped - start);
                    self.counters.undecoded_frames += 1;
                    pieces.push(Piece::Frame(undecoded(message_id, raw)));
                }
                Some(Err(error)) => {
                    match error {
                        FrameError::Crc { .. } => self.counters.crc_errors += 1,
                        FrameError::UnknownMessage { .. } => self.counters.unknown_messages += 1,
                        FrameError::IncompatFlags { .. } | FrameError::Parse { .. } => {
                            self.counters.bad_flags += 1
                        }
                    }
                    self.emit_unframed(skipped, pieces);
                }
            }
        }
    }

    fn take_raw(&mut self, len: usize) -> Vec<u8> {
        let len = len.min(self.pending.len());
        self.pending.drain(..len).collect()
    }

    fn take_unframed(&mut self, len: usize) -> Vec<u8> {
        let bytes = self.take_raw(len);
        self.counters.garbage_bytes += bytes.len() as u64;
        bytes
    }

    /// Moves `len` skipped bytes into the last unframed piece (adjacent ones are merged).
    fn emit_unframed(&mut self, len: usize, pieces: &mut Vec<Piece>) {
        if len == 0 {
            return;
        }
        let bytes = self.take_unframed(len);
        if let Some(Piece::Unframed(last)) = pieces.last_mut() {
            last.extend(bytes);
        } else {
            pieces.push(Piece::Unframed(bytes));
        }
    }
}

/// A checked frame that does not parse: the header fields read from its bytes.
fn undecoded(message_id: u32, raw: Vec<u8>) -> SplitFrame {
    let field = |i: usize| raw.get(i).copied().unwrap_or_default();
    let (sequence, system_id, component_id) = if raw.first() == Some(&STX_V1) {
        (field(2), field(3), field(4))
    } else {
        (field(4), field(5), field(6))
    };
    SplitFrame {
        system_id,
        component_id,
        sequence,
        message_id,
        message: None,
        raw,
    }
}

/// Entries kept by [`WireLog::default`]: about 20 minutes of a busy link (~80 frames/s).
pub const WIRE_LOG_CAPACITY: usize = 100_000;

/// The shared wire log: cheap to clone, bounded (the oldest entries are dropped and
/// counted), in the order entries were recorded.
#[derive(Debug, Clone)]
pub struct WireLog {
    inner: Arc<Mutex<LogInner>>,
    /// The number of entries ever recorded; bumped after each one.
    recorded: Arc<watch::Sender<u64>>,
}

#[derive(Debug)]
struct LogInner {
    entries: VecDeque<WireEvent>,
    capacity: usize,
    dropped: u64,
}

impl Default for WireLog {
    fn default() -> Self {
        Self::new(WIRE_LOG_CAPACITY)
    }
}

impl WireLog {
    /// A log that keeps at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Mutex::new(LogInner {
                entries: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                dropped: 0,
            })),
            recorded: Arc::new(watch::Sender::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic elsewhere while holding the lock leaves the log consistent (every
        // mutation is a single push or pop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry; drops the oldest when full.
    pub fn record(&self, event: WireEvent) {
        {
            let mut inner = self.lock();
            if inner.entries.len() >= inner.capacity {
                inner.entries.pop_front();
                inner.dropped += 1;
            }
            inner.entries.push_back(event);
        }
        self.recorded.send_modify(|n| *n += 1);
    }

    pub fn record_frame(&self, frame: WireFrame) {
        self.record(WireEvent::Frame(frame));
    }

    pub fn record_fault(&self, at: Duration, description: impl Into<String>) {
        self.record(WireEvent::Fault {
            at,
            description: description.into(),
        });
    }

    pub fn record_note(&self, at: Duration, text: impl Into<String>) {
        self.record(WireEvent::Note {
            at,
            text: text.into(),
        });
    }

    /// Every entry kept, oldest first.
    pub fn events(&self) -> Vec<WireEvent> {
        self.lock().entries.iter().cloned().collect()
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Entries recorded since `cursor` (a count of entries ever recorded; start at 0), and
    /// the cursor to pass next time. Entries already dropped from a full log are skipped.
    /// Unlike a time, a cursor never repeats or misses entries stamped at the same instant.
    pub fn events_from(&self, cursor: u64) -> (Vec<WireEvent>, u64) {
        let inner = self.lock();
        let first_kept = inner.dropped;
        let next = first_kept + inner.entries.len() as u64;
        let skip = cursor.saturating_sub(first_kept) as usize;
        (inner.entries.iter().skip(skip).cloned().collect(), next)
    }

    /// Frames stamped at or after `at`, oldest first.
    pub fn frames_since(&self, at: Duration) -> Vec<WireFrame> {
        self.lock()
            .entries
            .iter()
            .filter_map(|e| match e {
                WireEvent::Frame(f) if f.at >= at => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    /// The first frame stamped at or after `at` for which `matches` holds.
    pub fn first_after(
        &self,
        at: Duration,
        mut matches: impl FnMut(&WireFrame) -> bool,
    ) -> Option<WireFrame> {
        self.lock().entries.iter().find_map(|e| match e {
            WireEvent::Frame(f) if f.at >= at && matches(f) => Some(f.clone()),
            _ => None,
        })
    }

    /// Fault events, oldest first.
    pub fn faults(&self) -> Vec<(Duration, String)> {
        self.lock()
            .entries
            .iter()
            .filter_map(|e| match e {
                WireEvent::Fault { at, description } => Some((*at, description.clone())),
                _ => None,
            })
            .collect()
    }

    /// A receiver of the count of entries ever recorded: `changed().await` wakes on the
    /// next entry.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.recorded.subscribe()
    }

    /// Waits until a frame stamped at or after `at` matches, or `timeout` passes.
    pub async fn wait_for(
        &self,
        at: Duration,
        timeout: Duration,
        mut matches: impl FnMut(&WireFrame) -> bool,
    ) -> Option<WireFrame> {
        let mut recorded = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Subscribing before looking means an entry recorded in between still wakes us.
            recorded.borrow_and_update();
            if let Some(frame) = self.first_after(at, &mut matches) {
                return Some(frame);
            }
            match tokio::time::timeout_at(deadline, recorded.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or every sender is gone (cannot happen while `self` lives).
                _ => return self.first_after(at, &mut matches),
            }
        }
    }

    /// Human lines for the entries within `window` either side of `around`, for failure
    /// reports, e.g. `+12.345 s -> autopilot 1/191 COMMAND_LONG(MAV_CMD_DO_SET_MODE ...)`.
    pub fn excerpt(&self, around: Duration, window: Duration) -> String {
        self.excerpt_where(around, window, |_| true).0
    }

    /// [`excerpt`](Self::excerpt) of the frames for which `keep` holds (faults and notes are
    /// always kept), and how many frames of the window were left out.
    pub fn excerpt_where(
        &self,
        around: Duration,
        window: Duration,
        keep: impl Fn(&WireFrame) -> bool,
    ) -> (String, usize) {
        let from = around.saturating_sub(window);
        let to = around.saturating_add(window);
        let mut left_out = 0;
        let inner = self.lock();
        let mut out = String::new();
        if inner.dropped > 0 && inner.entries.front().is_some_and(|e| e.at() > from) {
            let _ = writeln!(
                out,
                "({} older entries were dropped from the full wire log)",
                inner.dropped
            );
        }
        for event in inner
            .entries
            .iter()
            .filter(|e| (from..=to).contains(&e.at()))
        {
            if let WireEvent::Frame(f) = event
                && !keep(f)
            {
                left_out += 1;
                continue;
            }
            let _ = writeln!(out, "{}", describe_event(event));
        }
        (out, left_out)
    }
}

/// One excerpt line.
pub fn describe_event(event: &WireEvent) -> String {
    match event {
        WireEvent::Fault { at, description } => {
            format!("+{:.3} s fault: {description}", at.as_secs_f64())
        }
        WireEvent::Note { at, text } => format!("+{:.3} s note: {text}", at.as_secs_f64()),
        WireEvent::Frame(f) => {
            let message = match &f.message {
                Some(message) => describe_message(message),
                None => format!("#{} (does not parse)", f.message_id),
            };
            let mut line = format!(
                "+{:.3} s {} {}/{} {message}",
                f.at.as_secs_f64(),
                f.direction.arrow(),
                f.system_id,
                f.component_id
            );
            if f.injected {
                line.push_str(" [injected]");
            }
            match f.fate {
                Fate::Forwarded => {}
                Fate::Delayed { delay_ms } => {
                    let _ = write!(line, " [delayed {delay_ms} ms]");
                }
                Fate::Dropped => line.push_str(" [dropped]"),
                Fate::Corrupted => line.push_str(" [corrupted]"),
            }
            line
        }
    }
}

/// The message's name with the fields a person reading a failure needs.
// SET_MODE is deprecated in the dialect, which is exactly why it must be readable when a
// conformance check finds one on the wire.
#[allow(deprecated)]
pub fn describe_message(message: &MavMessage) -> String {
    let name = message.message_name();
    match message {
        MavMessage::COMMAND_LONG(d) => format!(
            "{name}({:?} {} {} {} {} {} {} {} to {}/{})",
            d.command,
            d.param1,
            d.param2,
            d.param3,
            d.param4,
            d.param5,
            d.param6,
            d.param7,
            d.target_system,
            d.target_component
        ),
        MavMessage::COMMAND_INT(d) => format!(
            "{name}({:?} {:?} {} {} {} {} x={} y={} z={} to {}/{})",
            d.command,
            d.frame,
            d.param1,
            d.param2,
            d.param3,
            d.param4,
            d.x,
            d.y,
            d.z,
            d.target_system,
            d.target_component
        ),
        MavMessage::COMMAND_ACK(d) => format!("{name}({:?} {:?})", d.command, d.result),
        MavMessage::HEARTBEAT(d) => {
            let armed = if d
                .base_mode
                .contains(MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED)
            {
                "armed"
            } else {
                "disarmed"
            };
            format!(
                "{name}({:?} {:?} custom_mode={} {armed} {:?})",
                d.mavtype, d.autopilot, d.custom_mode, d.system_status
            )
        }
        MavMessage::SET_MODE(d) => format!(
            "{name}(custom_mode={} to {})",
            d.custom_mode, d.target_system
        ),
        MavMessage::PARAM_SET(d) => format!(
            "{name}({} = {} to {}/{})",
            d.param_id.to_str().unwrap_or("?"),
            d.param_value,
            d.target_system,
            d.target_component
        ),
        MavMessage::PARAM_VALUE(d) => format!(
            "{name}({} = {})",
            d.param_id.to_str().unwrap_or("?"),
            d.param_value
        ),
        MavMessage::STATUSTEXT(d) => format!(
            "{name}({:?} {:?})",
            d.severity,
            d.text.to_str().unwrap_or("?")
        ),
        MavMessage::GLOBAL_POSITION_INT(d) => format!(
            "{name}(lat={} lon={} rel_alt={} mm)",
            d.lat, d.lon, d.relative_alt
        ),
        MavMessage::SET_POSITION_TARGET_GLOBAL_INT(d) => format!(
            "{name}({:?} lat={} lon={} alt={} to {}/{})",
            d.coordinate_frame, d.lat_int, d.lon_int, d.alt, d.target_system, d.target_component
        ),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::dialect::*;
    use crate::link::frame::FrameEncoder;
    use proptest::prelude::*;

    fn heartbeat() -> MavMessage {
        MavMessage::HEARTBEAT(HEARTBEAT_DATA {
            custom_mode: 4,
            mavtype: MavType::MAV_TYPE_QUADROTOR,
            autopilot: MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
                | MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED,
            system_status: MavState::MAV_STATE_ACTIVE,
            mavlink_version: 3,
        })
    }

    fn set_mode() -> MavMessage {
        MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
            target_system: 1,
            target_component: 1,
            command: MavCmd::MAV_CMD_DO_SET_MODE,
            param1: 1.0,
            param2: 4.0,
            ..Default::default()
        })
    }

    fn samples() -> Vec<MavMessage> {
        vec![
            heartbeat(),
            set_mode(),
            MavMessage::STATUSTEXT(STATUSTEXT_DATA {
                severity: MavSeverity::MAV_SEVERITY_WARNING,
                text: "EKF variance".into(),
                ..Default::default()
            }),
            MavMessage::PARAM_SET(PARAM_SET_DATA {
                param_value: 1.0,
                target_system: 1,
                target_component: 1,
                param_id: "SIM_GPS_DISABLE".into(),
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
            }),
            MavMessage::SYSTEM_TIME(Default::default()),
        ]
    }

    /// Every byte back out, in order: frames and unframed pieces concatenated, plus the
    /// partial frame still held.
    fn rejoin(pieces: &[Piece], splitter: &mut FrameSplitter) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Unframed(bytes) => out.extend(bytes),
                Piece::Frame(frame) => out.extend(&frame.raw),
            }
        }
        if let Some(Piece::Unframed(rest)) = splitter.flush() {
            out.extend(rest);
        }
        out
    }

    fn frames(pieces: &[Piece]) -> Vec<&SplitFrame> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Frame(f) => Some(f),
                Piece::Unframed(_) => None,
            })
            .collect()
    }

    #[test]
    fn splits_frames_and_keeps_noise_in_place() {
        let mut encoder = FrameEncoder::new(1, 191);
        let a = encoder.encode(&set_mode());
        let b = encoder.encode(&heartbeat());
        let stream = [b"boot\r\n".as_slice(), &a, b"\x00\x13", &b].concat();
        let mut splitter = FrameSplitter::new();
        let pieces = splitter.push(&stream);
        assert_eq!(pieces.len(), 4, "{pieces:?}");
        assert_eq!(pieces[0], Piece::Unframed(b"boot\r\n".to_vec()));
        assert_eq!(pieces[2], Piece::Unframed(b"\x00\x13".to_vec()));
        let got = frames(&pieces);
        assert_eq!(got[0].message, Some(set_mode()));
        assert_eq!((got[0].system_id, got[0].component_id), (1, 191));
        assert_eq!(got[0].message_id, 76);
        assert_eq!(got[1].raw, b);
        assert_eq!(got[1].sequence, 1);
        let c = splitter.counters();
        assert_eq!((c.frames, c.garbage_bytes), (2, 8));
    }

    #[test]
    fn holds_a_split_frame_until_its_last_byte() {
        let bytes = FrameEncoder::new(1, 1).encode(&heartbeat());
        let mut splitter = FrameSplitter::new();
        for (i, byte) in bytes.iter().enumerate() {
            let pieces = splitter.push(&[*byte]);
            if i + 1 < bytes.len() {
                assert!(pieces.is_empty(), "early piece at byte {i}: {pieces:?}");
                assert_eq!(splitter.buffered_len(), i + 1);
            } else {
                assert_eq!(frames(&pieces)[0].raw, bytes);
            }
        }
    }

    #[test]
    fn a_crc_failure_is_counted_and_passed_on_unframed() {
        let mut bad = FrameEncoder::new(1, 1).encode(&heartbeat());
        bad[12] ^= 0x01;
        let good = FrameEncoder::new(2, 1).encode(&heartbeat());
        let stream = [bad.clone(), good.clone()].concat();
        let mut splitter = FrameSplitter::new();
        let pieces = splitter.push(&stream);
        assert_eq!(pieces[0], Piece::Unframed(bad.clone()));
        assert_eq!(frames(&pieces)[0].raw, good);
        let c = splitter.counters();
        assert_eq!((c.frames, c.crc_errors), (1, 1));
        assert_eq!(c.garbage_bytes, bad.len() as u64);
    }

    #[test]
    fn a_checked_frame_that_does_not_parse_is_a_frame_without_message() {
        // HEARTBEAT with an autopilot enum value the dialect does not define (200), with a
        // correct checksum: a real frame the dialect refuses.
        let mut frame = FrameEncoder::new(7, 8).encode(&heartbeat());
        frame[10 + 5] = 200;
        let crc_end = frame.len() - 2;
        let crc = mavlink::calculate_crc(&frame[1..crc_end], MavMessage::extra_crc(0));
        frame[crc_end..].copy_from_slice(&crc.to_le_bytes());
        let stream = [
            b"xy".as_slice(),
            &frame,
            &FrameEncoder::new(1, 1).encode(&heartbeat()),
        ]
        .concat();
        let mut splitter = FrameSplitter::new();
        let pieces = splitter.push(&stream);
        assert_eq!(pieces[0], Piece::Unframed(b"xy".to_vec()));
        let got = frames(&pieces);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].message, None);
        assert_eq!(
            (got[0].system_id, got[0].component_id, got[0].message_id),
            (7, 8, 0)
        );
        assert_eq!(got[0].raw, frame);
        let c = splitter.counters();
        assert_eq!((c.frames, c.undecoded_frames, c.garbage_bytes), (1, 1, 2));
    }

    #[test]
    fn a_huge_chunk_is_split_without_losing_bytes() {
        let frame = FrameEncoder::new(1, 1).encode(&heartbeat());
        let mut stream = vec![0x55; 200_000];
        stream.extend(&frame);
        let mut splitter = FrameSplitter::new();
        let pieces = splitter.push(&stream);
        assert_eq!(rejoin(&pieces, &mut splitter), stream);
        assert_eq!(frames(&pieces).len(), 1);
        assert_eq!(splitter.counters().garbage_bytes, 200_000);
    }

    fn frame_at(at_ms: u64, direction: Direction, message: MavMessage) -> WireFrame {
        WireFrame {
            at: Duration::from_millis(at_ms),
            direction,
            system_id: 1,
            component_id: 191,
            sequence: 0,
            message_id: message.message_id(),
            message: Some(message),
            len: 20,
            injected: false,
            fate: Fate::Forwarded,
        }
    }

    #[test]
    fn the_log_drops_its_oldest_entries_and_counts_them() {
        let log = WireLog::new(3);
        for i in 0..5 {
            log.record_frame(frame_at(i, Direction::ToCompanion, heartbeat()));
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.dropped(), 2);
        assert_eq!(
            log.frames_since(Duration::ZERO)[0].at,
            Duration::from_millis(2)
        );
        assert_eq!(*log.subscribe().borrow(), 5);
    }

    #[test]
    fn queries_find_frames_by_time_and_content() {
        let log = WireLog::new(100);
        log.record_frame(frame_at(1000, Direction::ToCompanion, heartbeat()));
        log.record_fault(Duration::from_millis(1500), "line cut");
        log.record_frame(frame_at(2000, Direction::ToAutopilot, set_mode()));
        log.record_frame(frame_at(3000, Direction::ToCompanion, heartbeat()));
        assert_eq!(log.frames_since(Duration::from_millis(2000)).len(), 2);
        let found = log
            .first_after(Duration::from_millis(500), |f| {
                f.direction == Direction::ToAutopilot
            })
            .unwrap();
        assert_eq!(found.at, Duration::from_millis(2000));
        assert!(
            log.first_after(Duration::from_millis(2001), |f| f.name() == "COMMAND_LONG")
                .is_none()
        );
        assert_eq!(
            log.faults(),
            vec![(Duration::from_millis(1500), "line cut".into())]
        );
    }

    #[test]
    fn the_excerpt_is_readable() {
        let log = WireLog::new(100);
        log.record_frame(frame_at(12_345, Direction::ToAutopilot, set_mode()));
        log.record_fault(Duration::from_millis(12_400), "serial line: cut");
        let mut dropped = frame_at(12_500, Direction::ToCompanion, heartbeat());
        dropped.fate = Fate::Dropped;
        log.record_frame(dropped);
        log.record_frame(frame_at(20_000, Direction::ToCompanion, heartbeat()));
        let text = log.excerpt(Duration::from_millis(12_400), Duration::from_secs(1));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0]
                .starts_with("+12.345 s -> autopilot 1/191 COMMAND_LONG(MAV_CMD_DO_SET_MODE 1 4 0"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "+12.400 s fault: serial line: cut");
        assert!(
            lines[2].contains("-> companion 1/191 HEARTBEAT("),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("armed"), "{}", lines[2]);
        assert!(lines[2].ends_with("[dropped]"), "{}", lines[2]);
        // Leaving frames out keeps the faults and counts what was left out.
        let (text, left_out) =
            log.excerpt_where(Duration::from_millis(12_400), Duration::from_secs(1), |f| {
                f.direction == Direction::ToAutopilot
            });
        assert_eq!(left_out, 1, "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("fault: serial line: cut"), "{text}");
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_the_frame_it_waits_for() {
        let log = WireLog::new(100);
        let writer = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.record_frame(frame_at(1, Direction::ToCompanion, heartbeat()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.record_frame(frame_at(2, Direction::ToAutopilot, set_mode()));
        });
        let found = log
            .wait_for(Duration::ZERO, Duration::from_secs(5), |f| {
                f.direction == Direction::ToAutopilot
            })
            .await
            .unwrap();
        assert_eq!(found.at, Duration::from_millis(2));
        let none = log
            .wait_for(Duration::ZERO, Duration::from_millis(100), |f| f.injected)
            .await;
        assert!(none.is_none());
    }

    fn sample() -> impl Strategy<Value = MavMessage> {
        let all = samples();
        (0..all.len()).prop_map(move |i| all[i].clone())
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_chunks_come_back_out_unchanged(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..10)
        ) {
            let mut splitter = FrameSplitter::new();
            let mut pieces = Vec::new();
            for chunk in &chunks {
                pieces.extend(splitter.push(chunk));
                prop_assert!(splitter.buffered_len() <= crate::link::frame::FRAME_LEN_MAX);
            }
            let pushed: Vec<u8> = chunks.concat();
            prop_assert_eq!(rejoin(&pieces, &mut splitter), pushed);
        }

        #[test]
        fn glued_truncated_and_noisy_frames_keep_every_byte_and_every_whole_frame(
            parts in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..50), sample(), 0usize..3), 1..10),
            split in 1usize..80,
        ) {
            // Each part is noise (which may hold false start markers), then a frame that is
            // whole (0), cut short by a few bytes (1), or glued twice (2).
            let mut encoder = FrameEncoder::new(1, 1);
            let mut stream = Vec::new();
            let mut whole = Vec::new();
            for (noise, message, shape) in &parts {
                stream.extend_from_slice(noise);
                let frame = encoder.encode(message);
                match shape {
                    0 => { stream.extend(&frame); whole.push(frame); }
                    1 => stream.extend(&frame[..frame.len() - 3]),
                    _ => {
                        stream.extend(&frame);
                        whole.push(frame.clone());
                        let again = encoder.encode(message);
                        stream.extend(&again);
                        whole.push(again);
                    }
                }
            }
            let mut splitter = FrameSplitter::new();
            let mut pieces = Vec::new();
            for chunk in stream.chunks(split) {
                pieces.extend(splitter.push(chunk));
            }
            // Flush a candidate still open at the end with filler that holds no marker.
            let filler = vec![0u8; crate::link::frame::FRAME_LEN_MAX];
            pieces.extend(splitter.push(&filler));
            let got: Vec<Vec<u8>> = frames(&pieces).into_iter().map(|f| f.raw.clone()).collect();
            // A truncated frame or noise can only add a frame by matching a 16-bit CRC with
            // the right CRC extra, so whole frames are checked as a subsequence.
            let mut rest = got.iter();
            for frame in &whole {
                prop_assert!(rest.any(|g| g == frame), "a whole frame was lost");
            }
            let mut all = stream.clone();
            all.extend(&filler);
            prop_assert_eq!(rejoin(&pieces, &mut splitter), all);
        }
    }
}
