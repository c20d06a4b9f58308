//! Sans-IO MAVLink 2 and 1 framing: bytes in, decoded frames or counted errors out.
//!
//! The `mavlink` crate's own connections skip frames with a bad checksum (and unsigned
//! frames when signing is on) without telling anyone. A link that silently loses frames
//! looks healthy when it is not, so framing is ours: every byte that does not end up in a
//! decoded frame is counted, and every rejected frame says why. The crate supplies the
//! message definitions, their CRC extras and payload (de)serialisation.
//!
//! No IO, no clock: the transport shell pushes bytes and polls results.

use std::collections::VecDeque;

use mavlink::{MavHeader, MavlinkVersion, Message};

use super::MavMessage;
use super::signing::{FrameView, SigningKey, append_signature};

/// Start marker of a MAVLink 2 frame.
const STX_V2: u8 = 0xFD;
/// Start marker of a MAVLink 1 frame.
const STX_V1: u8 = 0xFE;
/// MAVLink 2 header after the start marker: len, incompat, compat, seq, sys, comp, msgid[3].
const HEADER_V2: usize = 9;
/// MAVLink 1 header after the start marker: len, seq, sys, comp, msgid.
const HEADER_V1: usize = 5;
const CHECKSUM: usize = 2;
/// Link id, 6-byte timestamp and 6-byte signature appended when `IFLAG_SIGNED` is set.
const SIGNATURE: usize = 13;
/// The only incompatibility flag of standard MAVLink 2: the frame is signed.
const IFLAG_SIGNED: u8 = 0x01;
/// The largest frame (signed MAVLink 2 with a 255-byte payload).
pub const FRAME_LEN_MAX: usize = 1 + HEADER_V2 + 255 + CHECKSUM + SIGNATURE;
/// Capacity reserved up front: a partial frame plus a typical read.
const BUFFER_LEN_HINT: usize = 4 * FRAME_LEN_MAX;
/// Hard bound on unconsumed bytes. A caller that polls until `None` after every push
/// keeps less than one frame buffered, so this is only reached by a caller that pushes
/// without polling (or pushes one huge chunk); see [`FrameDecoder::push`].
pub const BUFFER_LEN_MAX: usize = 64 * 1024;

/// Totals of what the decoder has seen since it was created.
///
/// Every byte pushed ends up either in a decoded frame, in `garbage_bytes`, or still
/// buffered waiting for the rest of a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounters {
    /// Frames decoded (checksum valid, message known and parsed).
    pub frames: u64,
    /// Frames of a known message whose checksum was wrong.
    pub crc_errors: u64,
    /// Frames that could not be parsed: unknown incompatibility flags, or a valid checksum
    /// over field values the dialect refuses (e.g. an enum value it does not define).
    pub parse_errors: u64,
    /// Frames whose message id the dialect does not know (they cannot be CRC-checked).
    pub unknown_messages: u64,
    /// Bytes skipped while looking for the start of a frame, including the start byte of
    /// every rejected frame and bytes discarded by `reset`.
    pub garbage_bytes: u64,
    /// What the link's trust refused after decoding (signing, pinning); filled by the
    /// transport, zero from the decoder itself.
    pub trust: super::trust::TrustCounters,
}

/// A frame that decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub version: MavlinkVersion,
    pub header: MavHeader,
    pub message: MavMessage,
    /// The whole frame as received, start marker to signature, for a later signing check.
    pub raw: Vec<u8>,
}

impl Frame {
    /// True when the frame carries a MAVLink 2 signature trailer (not yet verified).
    pub fn is_signed(&self) -> bool {
        self.version == MavlinkVersion::V2 && self.raw.get(2).is_some_and(|f| f & IFLAG_SIGNED != 0)
    }

    /// What the signing check needs of this frame.
    pub fn view(&self) -> FrameView<'_> {
        FrameView {
            raw: &self.raw,
            mavlink2: self.version == MavlinkVersion::V2,
            // A MAVLink 2 header carries 8-bit ids; `MavHeader` widens them.
            system_id: u8::try_from(self.header.system_id).unwrap_or(u8::MAX),
            component_id: self.header.component_id,
            message_id: self.message.message_id(),
        }
    }
}

/// Why bytes that looked like the start of a frame were rejected. Already counted in
/// [`FrameCounters`] when returned; returned so the shell can log it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "checksum mismatch in message id {message_id} (received {received:#06x}, computed {computed:#06x})"
    )]
    Crc {
        message_id: u32,
        received: u16,
        computed: u16,
    },
    #[error("unknown incompatibility flags {flags:#04x} (only 0x01, signed, is defined)")]
    IncompatFlags { flags: u8 },
    #[error("message id {message_id} does not parse: {reason}")]
    Parse { message_id: u32, reason: String },
    #[error("message id {message_id} is not in the ardupilotmega dialect")]
    UnknownMessage { message_id: u32 },
}

/// Incremental MAVLink decoder.
///
/// Call order: [`push`](Self::push) the bytes just read, then [`poll`](Self::poll) until it
/// returns `None`; repeat. [`counters`](Self::counters) may be read at any time.
/// [`reset`](Self::reset) when the byte stream is broken (a new connection), so the tail
/// of an old stream is not glued to the head of a new one.
///
/// On a checksum, parse or unknown-id error only the start byte is dropped and the search
/// resumes at the next byte: a false start marker inside noise must not swallow the real
/// frame that follows it. The exception is a frame whose checksum is valid but whose
/// fields do not parse: it is a real frame, so it is skipped whole.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: VecDeque<u8>,
    counters: FrameCounters,
    /// Frames handed back by the caller ([`recycle`](Self::recycle)), decoded into again:
    /// their box and their raw bytes' vector, so a caller that hands every frame back
    /// decodes without allocating (issue 17).
    spare: SpareFrames,
}

/// The frames a decoder may decode into again: boxes, because the box itself is what is
/// reused (a caller gets frames as `Box<Frame>` and hands the same boxes back).
#[derive(Debug, Default)]
#[allow(clippy::vec_box)]
struct SpareFrames(Vec<Box<Frame>>);

/// How many frames [`FrameDecoder::recycle`] keeps: more than one read of the link holds.
const SPARE_FRAMES_MAX: usize = 64;

/// What the bytes at the head of the buffer are.
enum Head {
    /// Not enough bytes yet to decide.
    Incomplete,
    /// The first byte is not the start of any frame.
    Garbage,
    /// A frame; consume its length.
    Frame(Box<Frame>),
    /// A false or broken frame; drop the first `skip` bytes.
    Reject { error: FrameError, skip: usize },
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands a frame from [`poll_boxed`](Self::poll_boxed) back, to decode a later frame into
    /// it without allocating; at most [`SPARE_FRAMES_MAX`] are kept.
    pub fn recycle(&mut self, frame: Box<Frame>) {
        if self.spare.0.len() < SPARE_FRAMES_MAX {
            self.spare.0.push(frame);
        }
    }

    /// Appends bytes received from the link.
    ///
    /// Overflow policy: at most [`BUFFER_LEN_MAX`] unconsumed bytes are kept; beyond that
    /// the oldest are dropped and counted as `garbage_bytes`, so memory stays bounded even
    /// if the caller forgets to poll. Nothing is dropped silently.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.buffer.capacity() < BUFFER_LEN_HINT {
            self.buffer.reserve(BUFFER_LEN_HINT);
        }
        // Only the newest `BUFFER_LEN_MAX` bytes of a huge chunk can survive anyway.
        let skipped = bytes.len().saturating_sub(BUFFER_LEN_MAX);
        self.counters.garbage_bytes += skipped as u64;
        self.buffer.extend(bytes.get(skipped..).unwrap_or_default());
        let excess = self.buffer.len().saturating_sub(BUFFER_LEN_MAX);
        if excess > 0 {
            self.discard(excess);
        }
    }

    /// The next decoded frame or rejected frame, or `None` when more bytes are needed.
    /// Garbage before a start marker is counted, never returned.
    pub fn poll(&mut self) -> Option<Result<Frame, FrameError>> {
        self.poll_boxed().map(|item| item.map(|frame| *frame))
    }

    /// [`poll`](Self::poll), with the frame left where it was decoded: a frame is a few
    /// hundred bytes, and a caller that moves its message on (the link task, into a batch)
    /// copies it once from here rather than once per move (issue 17).
    pub fn poll_boxed(&mut self) -> Option<Result<Box<Frame>, FrameError>> {
        loop {
            // Skip everything up to the next start marker in one go.
            let start = self
                .buffer
                .iter()
                .position(|&b| b == STX_V2 || b == STX_V1)
                .unwrap_or(self.buffer.len());
            if start > 0 {
                self.discard(start);
            }
            if self.buffer.is_empty() {
                return None;
            }
            self.buffer.make_contiguous();
            let (bytes, _) = self.buffer.as_slices();
            match classify(bytes, &mut self.spare) {
                Head::Incomplete => return None,
                Head::Garbage => self.discard(1),
                Head::Frame(frame) => {
                    self.buffer.drain(..frame.raw.len());
                    self.counters.frames += 1;
                    return Some(Ok(frame));
                }
                Head::Reject { error, skip } => {
                    match error {
                        FrameError::Crc { .. } => self.counters.crc_errors += 1,
                        FrameError::IncompatFlags { .. } | FrameError::Parse { .. } => {
                            self.counters.parse_errors += 1
                        }
                        FrameError::UnknownMessage { .. } => self.counters.unknown_messages += 1,
                    }
                    self.discard(skip);
                    return Some(Err(error));
                }
            }
        }
    }

    /// Counters since the decoder was created.
    pub fn counters(&self) -> FrameCounters {
        self.counters
    }

    /// Bytes waiting for the rest of a frame.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// Drops a partial frame (counted as garbage): the stream it belonged to is gone.
    pub fn reset(&mut self) {
        let len = self.buffer.len();
        self.discard(len);
    }

    fn discard(&mut self, len: usize) {
        let len = len.min(self.buffer.len());
        self.buffer.drain(..len);
        self.counters.garbage_bytes += len as u64;
    }
}

/// Decides what the bytes at `bytes[0]` (a start marker) are. Never panics: every index
/// is checked against the length first.
fn classify(bytes: &[u8], spare: &mut SpareFrames) -> Head {
    match bytes.first() {
        Some(&STX_V2) => classify_v2(bytes, spare),
        Some(&STX_V1) => classify_v1(bytes, spare),
        Some(_) => Head::Garbage,
        None => Head::Incomplete,
    }
}

fn classify_v2(bytes: &[u8], spare: &mut SpareFrames) -> Head {
    let Some(header) = bytes.get(1..=HEADER_V2) else {
        return Head::Incomplete;
    };
    let payload_len = usize::from(header[0]);
    let incompat = header[1];
    if incompat & !IFLAG_SIGNED != 0 {
        return Head::Reject {
            error: FrameError::IncompatFlags { flags: incompat },
            skip: 1,
        };
    }
    let signature_len = if incompat & IFLAG_SIGNED != 0 {
        SIGNATURE
    } else {
        0
    };
    let message_id = u32::from_le_bytes([header[6], header[7], header[8], 0]);
    let header_fields = MavHeader {
        sequence: header[3],
        system_id: u32::from(header[4]),
        component_id: header[5],
    };
    let crc_end = 1 + HEADER_V2 + payload_len;
    let frame_len = crc_end + CHECKSUM + signature_len;
    decode_checked(
        bytes,
        MavlinkVersion::V2,
        header_fields,
        message_id,
        crc_end,
        frame_len,
        spare,
    )
}

fn classify_v1(bytes: &[u8], spare: &mut SpareFrames) -> Head {
    let Some(header) = bytes.get(1..=HEADER_V1) else {
        return Head::Incomplete;
    };
    let payload_len = usize::from(header[0]);
    let message_id = u32::from(header[4]);
    let header_fields = MavHeader {
        sequence: header[1],
        system_id: u32::from(header[2]),
        component_id: header[3],
    };
    let crc_end = 1 + HEADER_V1 + payload_len;
    let frame_len = crc_end + CHECKSUM;
    decode_checked(
        bytes,
        MavlinkVersion::V1,
        header_fields,
        message_id,
        crc_end,
        frame_len,
        spare,
    )
}

/// Shared tail of both versions: unknown id, completeness, checksum, payload.
fn decode_checked(
    bytes: &[u8],
    version: MavlinkVersion,
    header: MavHeader,
    message_id: u32,
    crc_end: usize,
    frame_len: usize,
    spare: &mut SpareFrames,
) -> Head {
    // Unknown ids are decided on the header alone: waiting for a length that a false
    // marker made up would hold back the real frames behind it.
    let Some(extra_crc) = known_extra_crc(message_id) else {
        return Head::Reject {
            error: FrameError::UnknownMessage { message_id },
            skip: 1,
        };
    };
    let (Some(crc_input), Some(crc_bytes)) = (
        bytes.get(1..crc_end),
        bytes.get(crc_end..crc_end + CHECKSUM),
    ) else {
        return Head::Incomplete;
    };
    if bytes.len() < frame_len {
        return Head::Incomplete;
    }
    let received = u16::from_le_bytes([crc_bytes[0], crc_bytes[1]]);
    let computed = mavlink::calculate_crc(crc_input, extra_crc);
    if received != computed {
        return Head::Reject {
            error: FrameError::Crc {
                message_id,
                received,
                computed,
            },
            skip: 1,
        };
    }
    let payload_start = match version {
        MavlinkVersion::V2 => 1 + HEADER_V2,
        MavlinkVersion::V1 => 1 + HEADER_V1,
    };
    let payload = bytes.get(payload_start..crc_end).unwrap_or_default();
    // `parse` zero-pads payloads that MAVLink 2 truncated, so short payloads parse.
    match MavMessage::parse(version, message_id, payload) {
        Ok(message) => {
            let raw = bytes.get(..frame_len).unwrap_or_default();
            Head::Frame(match spare.0.pop() {
                Some(mut frame) => {
                    frame.version = version;
                    frame.header = header;
                    frame.message = message;
                    frame.raw.clear();
                    frame.raw.extend_from_slice(raw);
                    frame
                }
                None => Box::new(Frame {
                    version,
                    header,
                    message,
                    raw: raw.to_vec(),
                }),
            })
        }
        // The checksum (with this message's CRC extra) matched, so this is a real frame
        // whose contents we refuse: skip it whole rather than rescanning its payload.
        Err(error) => Head::Reject {
            error: FrameError::Parse {
                message_id,
                reason: error.to_string(),
            },
            skip: frame_len,
        },
    }
}

/// The CRC extra of a message id the dialect knows, `None` for an unknown id.
fn known_extra_crc(message_id: u32) -> Option<u8> {
    // `extra_crc` answers 0 for unknown ids, and 0 is also a legitimate CRC extra, so
    // knowledge is decided by whether the dialect can build a default of that id.
    MavMessage::default_message_from_id(message_id)?;
    Some(MavMessage::extra_crc(message_id))
}

/// MAVLink 2 encoder with the sender's identity and its own sequence counter.
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    pub system_id: u8,
    pub component_id: u8,
    /// Sequence number of the next frame; wraps after 255.
    pub sequence: u8,
}

impl FrameEncoder {
    pub fn new(system_id: u8, component_id: u8) -> Self {
        Self {
            system_id,
            component_id,
            sequence: 0,
        }
    }

    /// Encodes one unsigned MAVLink 2 frame and advances the sequence.
    pub fn encode(&mut self, message: &MavMessage) -> Vec<u8> {
        let header = self.next_header();
        let mut raw = mavlink::MAVLinkV2MessageRaw::new();
        raw.serialize_message(header, message);
        let len = 1 + HEADER_V2 + usize::from(raw.payload_length()) + CHECKSUM;
        raw.as_slice().get(..len).unwrap_or_default().to_vec()
    }

    /// Encodes one unsigned MAVLink 2 frame with `header` as given (another sender's frame
    /// passed on); no sequence of ours advances.
    pub fn encode_as(header: &MavHeader, message: &MavMessage) -> Vec<u8> {
        let mut raw = mavlink::MAVLinkV2MessageRaw::new();
        raw.serialize_message(*header, message);
        let len = 1 + HEADER_V2 + usize::from(raw.payload_length()) + CHECKSUM;
        raw.as_slice().get(..len).unwrap_or_default().to_vec()
    }

    /// Encodes one signed MAVLink 2 frame (incompatibility flag 0x01, checksum over it, then
    /// the 13-byte trailer with `link_id`, `timestamp` and the signature) and advances the
    /// sequence.
    pub fn encode_signed(
        &mut self,
        message: &MavMessage,
        key: &SigningKey,
        link_id: u8,
        timestamp: u64,
    ) -> Vec<u8> {
        let header = self.next_header();
        let mut raw = mavlink::MAVLinkV2MessageRaw::new();
        raw.serialize_message_for_signing(header, message);
        let len = 1 + HEADER_V2 + usize::from(raw.payload_length()) + CHECKSUM;
        let mut frame = Vec::with_capacity(len + SIGNATURE);
        frame.extend_from_slice(raw.as_slice().get(..len).unwrap_or_default());
        append_signature(&mut frame, key, link_id, timestamp);
        frame
    }

    fn next_header(&mut self) -> MavHeader {
        let header = MavHeader {
            system_id: u32::from(self.system_id),
            component_id: self.component_id,
            sequence: self.sequence,
        };
        self.sequence = self.sequence.wrapping_add(1);
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::dialect::*;
    use proptest::prelude::*;

    fn heartbeat() -> MavMessage {
        MavMessage::HEARTBEAT(HEARTBEAT_DATA {
            custom_mode: 4,
            mavtype: MavType::MAV_TYPE_QUADROTOR,
            autopilot: MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
            system_status: MavState::MAV_STATE_STANDBY,
            mavlink_version: 3,
        })
    }

    /// A spread of message kinds: plain, with extensions, with strings, with arrays.
    fn samples() -> Vec<MavMessage> {
        vec![
            heartbeat(),
            MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                target_system: 1,
                target_component: 1,
                command: MavCmd::MAV_CMD_NAV_TAKEOFF,
                confirmation: 2,
                param1: 0.0,
                param7: 10.0,
                ..Default::default()
            }),
            MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
                command: MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                result: MavResult::MAV_RESULT_IN_PROGRESS,
                progress: 40,
                result_param2: -7,
                target_system: 255,
                target_component: 190,
            }),
            MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
                time_boot_ms: 123_456,
                lat: 473_977_420,
                lon: 85_455_940,
                alt: 488_000,
                relative_alt: 10_000,
                vx: -12,
                vy: 34,
                vz: 0,
                hdg: 9_000,
            }),
            MavMessage::STATUSTEXT(STATUSTEXT_DATA {
                severity: MavSeverity::MAV_SEVERITY_WARNING,
                text: "PreArm: GPS not healthy".into(),
                ..Default::default()
            }),
            // All-zero payload: MAVLink 2 truncates it to a single byte.
            MavMessage::SYSTEM_TIME(SYSTEM_TIME_DATA::default()),
            MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
                param_id: "WPNAV_SPEED".into(),
                param_value: 500.0,
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
                param_count: 900,
                param_index: 12,
            }),
        ]
    }

    fn decode_all(bytes: &[u8]) -> (Vec<Result<Frame, FrameError>>, FrameDecoder) {
        let mut decoder = FrameDecoder::new();
        decoder.push(bytes);
        let mut out = Vec::new();
        while let Some(item) = decoder.poll() {
            out.push(item);
        }
        (out, decoder)
    }

    /// A frame decoded into a recycled box, whose message and raw bytes were another frame's
    /// (longer, shorter, another version), is the frame a fresh decoder makes of those bytes.
    #[test]
    fn a_recycled_frame_decodes_as_a_fresh_one() {
        let mut encoder = FrameEncoder::new(42, 191);
        let mut stream = Vec::new();
        for message in samples().iter().chain(samples().iter().rev()) {
            stream.extend(encoder.encode(message));
        }
        stream.extend(v1_frame(7, 1, 1, &heartbeat()));
        let (fresh, _) = decode_all(&stream);
        let mut decoder = FrameDecoder::new();
        let mut recycled = Vec::new();
        // Byte by byte, each frame handed back as soon as it is read: every frame after the
        // first is decoded into the box of the one before it.
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(item) = decoder.poll_boxed() {
                let frame = item.expect("a valid stream");
                recycled.push((*frame).clone());
                decoder.recycle(frame);
            }
        }
        assert_eq!(decoder.spare.0.len(), 1, "one box did all the work");
        let fresh: Vec<Frame> = fresh.into_iter().map(Result::unwrap).collect();
        assert_eq!(recycled.len(), samples().len() * 2 + 1);
        assert_eq!(recycled, fresh);
    }

    /// A MAVLink 1 frame built by hand, to check the decoder against the wire format
    /// rather than against our own encoder.
    fn v1_frame(seq: u8, sys: u8, comp: u8, message: &MavMessage) -> Vec<u8> {
        let mut payload = [0u8; 255];
        let len = message.ser(MavlinkVersion::V1, &mut payload);
        let id = message.message_id();
        let mut frame = vec![STX_V1, len as u8, seq, sys, comp, id as u8];
        frame.extend_from_slice(&payload[..len]);
        let crc = mavlink::calculate_crc(&frame[1..], MavMessage::extra_crc(id));
        frame.extend_from_slice(&crc.to_le_bytes());
        frame
    }

    #[test]
    fn round_trips_every_sample_and_counts_the_sequence() {
        let mut encoder = FrameEncoder::new(42, 191);
        for (i, message) in samples().into_iter().enumerate() {
            let bytes = encoder.encode(&message);
            let (out, decoder) = decode_all(&bytes);
            assert_eq!(out.len(), 1, "{message:?}");
            let frame = out.into_iter().next().unwrap().unwrap();
            assert_eq!(frame.message, message);
            assert_eq!(frame.header.system_id, 42);
            assert_eq!(frame.header.component_id, 191);
            assert_eq!(usize::from(frame.header.sequence), i);
            assert_eq!(frame.raw, bytes);
            assert!(!frame.is_signed());
            assert_eq!(decoder.counters().frames, 1);
            assert_eq!(decoder.buffered_len(), 0);
        }
    }

    #[test]
    fn short_payloads_parse_after_truncation() {
        let bytes = FrameEncoder::new(1, 1).encode(&MavMessage::SYSTEM_TIME(Default::default()));
        assert!(bytes[1] < 12, "payload was not truncated: {}", bytes[1]);
        let (out, _) = decode_all(&bytes);
        assert_eq!(
            out[0].as_ref().unwrap().message,
            MavMessage::SYSTEM_TIME(Default::default())
        );
    }

    #[test]
    fn sequence_wraps_after_255() {
        let mut encoder = FrameEncoder::new(1, 1);
        encoder.sequence = 255;
        assert_eq!(encoder.encode(&heartbeat())[4], 255);
        assert_eq!(encoder.encode(&heartbeat())[4], 0);
        assert_eq!(encoder.sequence, 1);
    }

    #[test]
    fn decodes_mavlink1() {
        let bytes = v1_frame(7, 3, 4, &heartbeat());
        let (out, decoder) = decode_all(&bytes);
        let frame = out[0].as_ref().unwrap();
        assert_eq!(frame.version, MavlinkVersion::V1);
        assert_eq!(frame.message, heartbeat());
        assert_eq!(
            (
                frame.header.sequence,
                frame.header.system_id,
                frame.header.component_id
            ),
            (7, 3, 4)
        );
        assert_eq!(decoder.counters().frames, 1);
    }

    #[test]
    fn honours_the_signature_trailer() {
        let mut bytes = FrameEncoder::new(1, 1).encode(&heartbeat());
        // Mark it signed and recompute the checksum (the flag is covered by it).
        bytes[2] = IFLAG_SIGNED;
        let crc_end = bytes.len() - 2;
        let crc = mavlink::calculate_crc(&bytes[1..crc_end], MavMessage::extra_crc(0));
        bytes[crc_end..].copy_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&[0xAA; SIGNATURE]);
        let next = FrameEncoder::new(1, 1).encode(&heartbeat());
        bytes.extend_from_slice(&next);
        let (out, decoder) = decode_all(&bytes);
        assert_eq!(out.len(), 2);
        assert!(out[0].as_ref().unwrap().is_signed());
        assert_eq!(out[0].as_ref().unwrap().raw.len(), crc_end + 2 + SIGNATURE);
        assert!(!out[1].as_ref().unwrap().is_signed());
        assert_eq!(decoder.counters().garbage_bytes, 0);
    }

    #[test]
    fn rejects_unknown_incompat_flags_and_resyncs() {
        let mut bad = FrameEncoder::new(1, 1).encode(&heartbeat());
        bad[2] = 0x02;
        let good = FrameEncoder::new(1, 1).encode(&heartbeat());
        let (out, decoder) = decode_all(&[bad.clone(), good].concat());
        assert!(matches!(
            out[0],
            Err(FrameError::IncompatFlags { flags: 0x02 })
        ));
        assert_eq!(out.last().unwrap().as_ref().unwrap().message, heartbeat());
        let c = decoder.counters();
        assert_eq!((c.frames, c.parse_errors), (1, 1));
        assert_eq!(c.garbage_bytes, bad.len() as u64);
    }

    #[test]
    fn counts_unknown_message_ids() {
        // Message id 0xABCDEF is not in any dialect.
        let mut frame = vec![STX_V2, 1, 0, 0, 0, 1, 1, 0xEF, 0xCD, 0xAB, 0x11, 0x22, 0x33];
        frame.extend(FrameEncoder::new(1, 1).encode(&heartbeat()));
        let (out, decoder) = decode_all(&frame);
        assert!(matches!(
            out[0],
            Err(FrameError::UnknownMessage {
                message_id: 0xABCDEF
            })
        ));
        let c = decoder.counters();
        assert_eq!((c.frames, c.unknown_messages, c.garbage_bytes), (1, 1, 13));
    }

    #[test]
    fn counts_a_checksum_failure_and_keeps_the_next_frame() {
        let mut bad = FrameEncoder::new(1, 1).encode(&heartbeat());
        bad[12] ^= 0x10;
        let good = FrameEncoder::new(1, 1).encode(&heartbeat());
        let (out, decoder) = decode_all(&[b"noise".as_slice(), &bad, &good].concat());
        assert!(matches!(out[0], Err(FrameError::Crc { message_id: 0, .. })));
        assert_eq!(out.last().unwrap().as_ref().unwrap().message, heartbeat());
        let c = decoder.counters();
        assert_eq!((c.frames, c.crc_errors), (1, 1));
        assert_eq!(c.garbage_bytes, 5 + bad.len() as u64);
    }

    #[test]
    fn a_false_marker_does_not_swallow_the_real_frame() {
        // A false start marker claiming a 200-byte COMMAND_LONG right before a heartbeat.
        let mut bytes = vec![STX_V2, 200, 0, 0, 0, 1, 1, 76, 0, 0];
        bytes.extend(FrameEncoder::new(1, 1).encode(&heartbeat()));
        bytes.extend(vec![0u8; 200]);
        let (out, decoder) = decode_all(&bytes);
        let frames: Vec<_> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].message, heartbeat());
        assert_eq!(decoder.counters().crc_errors, 1);
    }

    #[test]
    fn waits_for_the_rest_of_a_split_frame() {
        let bytes = FrameEncoder::new(1, 1).encode(&heartbeat());
        let mut decoder = FrameDecoder::new();
        for (i, byte) in bytes.iter().enumerate() {
            decoder.push(&[*byte]);
            let item = decoder.poll();
            if i + 1 < bytes.len() {
                assert!(item.is_none(), "decoded early at byte {i}");
            } else {
                assert_eq!(item.unwrap().unwrap().message, heartbeat());
            }
        }
    }

    #[test]
    fn reset_discards_a_partial_frame_as_garbage() {
        let bytes = FrameEncoder::new(1, 1).encode(&heartbeat());
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes[..8]);
        assert!(decoder.poll().is_none());
        decoder.reset();
        decoder.push(&bytes);
        assert_eq!(decoder.poll().unwrap().unwrap().message, heartbeat());
        assert_eq!(decoder.counters().garbage_bytes, 8);
    }

    #[test]
    fn pushing_without_polling_stays_bounded_and_counted() {
        let mut decoder = FrameDecoder::new();
        let frame = FrameEncoder::new(1, 1).encode(&heartbeat());
        decoder.push(&vec![0x55; 3 * BUFFER_LEN_MAX]);
        assert_eq!(decoder.buffered_len(), BUFFER_LEN_MAX);
        decoder.push(&frame);
        assert_eq!(decoder.buffered_len(), BUFFER_LEN_MAX);
        // The newest bytes survive: the frame pushed last still decodes.
        assert_eq!(decoder.poll().unwrap().unwrap().message, heartbeat());
        assert!(decoder.poll().is_none());
        let c = decoder.counters();
        assert_eq!(c.garbage_bytes, 3 * BUFFER_LEN_MAX as u64);
        assert_eq!(c.frames, 1);
    }

    fn sample() -> impl Strategy<Value = MavMessage> {
        let all = samples();
        (0..all.len()).prop_map(move |i| all[i].clone())
    }

    /// Garbage with no start marker in it, so its byte count is known exactly.
    fn clean_garbage() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_filter("no start marker", |b| *b != STX_V1 && *b != STX_V2),
            0..40,
        )
    }

    fn total(c: FrameCounters) -> u64 {
        c.frames + c.crc_errors + c.parse_errors + c.unknown_messages
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_every_byte_is_accounted_for(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)
        ) {
            let mut decoder = FrameDecoder::new();
            let mut pushed = 0u64;
            let mut frame_bytes = 0u64;
            let mut items = 0u64;
            for chunk in &chunks {
                decoder.push(chunk);
                pushed += chunk.len() as u64;
                while let Some(item) = decoder.poll() {
                    items += 1;
                    if let Ok(frame) = item {
                        frame_bytes += frame.raw.len() as u64;
                    }
                }
            }
            let c = decoder.counters();
            prop_assert_eq!(total(c), items);
            // Rejected start bytes and skipped CRC-valid frames that do not parse are
            // counted as garbage too, so the bytes add up exactly.
            prop_assert_eq!(frame_bytes + c.garbage_bytes + decoder.buffered_len() as u64, pushed);
            prop_assert!(decoder.buffered_len() <= FRAME_LEN_MAX);
        }

        #[test]
        fn frames_separated_by_garbage_all_decode(
            parts in proptest::collection::vec((clean_garbage(), sample()), 1..12),
            split in 1usize..64,
        ) {
            let mut encoder = FrameEncoder::new(1, 1);
            let mut stream = Vec::new();
            let mut garbage = 0u64;
            for (noise, message) in &parts {
                stream.extend_from_slice(noise);
                garbage += noise.len() as u64;
                stream.extend(encoder.encode(message));
            }
            let mut decoder = FrameDecoder::new();
            let mut decoded = Vec::new();
            for chunk in stream.chunks(split) {
                decoder.push(chunk);
                while let Some(item) = decoder.poll() {
                    decoded.push(item.unwrap().message);
                }
            }
            let expected: Vec<_> = parts.into_iter().map(|(_, m)| m).collect();
            prop_assert_eq!(decoded, expected);
            prop_assert_eq!(decoder.counters().garbage_bytes, garbage);
            prop_assert_eq!(decoder.buffered_len(), 0);
        }

        #[test]
        fn frames_behind_noise_with_false_markers_all_decode(
            parts in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..60), sample()), 1..10),
            split in 1usize..64,
        ) {
            // Noise here may contain 0xFD/0xFE, i.e. false frame starts claiming up to 280
            // bytes that run into the real frame behind them.
            let mut encoder = FrameEncoder::new(1, 1);
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (noise, message) in &parts {
                stream.extend_from_slice(noise);
                let frame = encoder.encode(message);
                stream.extend_from_slice(&frame);
                expected.push(frame);
            }
            // Filler completes any false candidate still open at the end.
            stream.extend(vec![0u8; FRAME_LEN_MAX]);
            let mut decoder = FrameDecoder::new();
            let mut decoded = Vec::new();
            for chunk in stream.chunks(split) {
                decoder.push(chunk);
                while let Some(item) = decoder.poll() {
                    if let Ok(frame) = item {
                        decoded.push(frame.raw);
                    }
                }
            }
            // Every real frame comes out, in order. Noise could only add a frame of its own
            // by matching a 16-bit CRC with the right CRC extra and a parseable payload, so
            // the real frames are checked as a subsequence rather than the whole output.
            let mut rest = decoded.iter();
            for frame in &expected {
                prop_assert!(rest.any(|d| d == frame), "a real frame was lost behind noise");
            }
            prop_assert_eq!(decoder.buffered_len(), 0);
            let frame_bytes: usize = decoded.iter().map(Vec::len).sum();
            prop_assert_eq!(frame_bytes as u64 + decoder.counters().garbage_bytes, stream.len() as u64);
        }

        #[test]
        fn truncated_frames_never_decode(message in sample(), cut in 1usize..40) {
            let bytes = FrameEncoder::new(1, 1).encode(&message);
            let cut = cut.min(bytes.len() - 1);
            let (out, decoder) = decode_all(&bytes[..bytes.len() - cut]);
            prop_assert!(out.iter().all(|r| r.is_err()));
            prop_assert_eq!(decoder.counters().frames, 0);
        }

        #[test]
        fn single_bit_flips_are_counted_not_misdecoded(message in sample(), bit in 0usize..2400) {
            let bytes = FrameEncoder::new(1, 1).encode(&message);
            let bit = bit % (bytes.len() * 8);
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // A trailing frame flushes out whatever a flipped length field is waiting for.
            let tail = FrameEncoder::new(9, 9).encode(&heartbeat());
            flipped.extend_from_slice(&tail);
            flipped.extend(vec![0u8; FRAME_LEN_MAX]);
            let (out, decoder) = decode_all(&flipped);
            let frames: Vec<&Frame> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
            // CRC-16/MCRF4XX detects every single-bit error within its frame, so the
            // flipped frame itself never decodes as valid. A flip of the length or the
            // message id makes the decoder check a different span, where a collision is
            // possible in principle (1 in 65536); the flipped frame can then only come out
            // with a different shape, and the tail heartbeat (system 9) must still decode.
            prop_assert!(frames.iter().any(|f| f.header.system_id == 9));
            let c = decoder.counters();
            // A flipped start byte is no marker (0xFD and 0xFE differ in two bits), so the
            // frame is garbage; any other flip is a rejected candidate, counted as such.
            if bit / 8 != 0 {
                prop_assert!(c.crc_errors + c.parse_errors + c.unknown_messages > 0, "{:?}", c);
            }
            let originals = frames.iter().filter(|f| f.header.system_id == 1 && f.message == message).count();
            prop_assert_eq!(originals, 0, "a bit flip decoded as the original message");
        }
    }
}
