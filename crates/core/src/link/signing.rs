//! MAVLink 2 message signing on one link, sans-IO: keys, timestamps, signing outgoing frames
//! and checking incoming ones by the rules of the MAVLink signing specification
//! (<https://mavlink.io/en/guide/message_signing.html>).
//!
//! - A signature is the first 48 bits of SHA-256(key ‖ frame from its start marker to its
//!   checksum ‖ link id ‖ 48-bit timestamp); the 13-byte trailer carries the link id, the
//!   timestamp (10 µs units since 2015-01-01 00:00 UTC) and those 6 bytes.
//! - Each link signs with its own link id and a timestamp that never goes backwards: the
//!   largest of the last one used plus one, the wall clock (when the caller has one), and the
//!   newest timestamp of a frame accepted on the link. The caller persists
//!   [`LinkSigning::timestamp`] and restarts from it plus [`RESTART_MARGIN`] (ArduPilot's rule:
//!   saved every 30 s, restored one minute ahead), so a restart never reuses a timestamp.
//! - An incoming signed frame is accepted when its signature verifies with the key, then per
//!   *stream* — (system id, component id, link id) — when its timestamp is newer than the
//!   stream's last one (else `replayed`), and, for a stream not seen before, when it is at most
//!   one minute behind the link's own timestamp (else `old_timestamp`). This is the order and
//!   the arithmetic of the C library (`mavlink_helpers.h` `mavlink_signature_check`) and
//!   pymavlink; unlike pymavlink, a stream's timestamp is recorded only after the signature
//!   verified, so a forged frame cannot poison a stream.
//! - What happens to an unsigned frame is the link's [`Acceptance`].
//!
//! Nothing here reads a clock or a file: the shell passes the wall clock as a timestamp
//! (`clock`), or `None` for a system without one (the simulator, like an autopilot before its
//! GPS has the time), and reads the key file ([`crate::link::keys`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Length of a signing key.
pub const KEY_LEN: usize = 32;
/// The signature trailer: link id, 6-byte timestamp, 6-byte signature.
pub const SIGNATURE_BLOCK_LEN: usize = 13;
/// The signature proper: the first 48 bits of the SHA-256.
pub const SIGNATURE_VALUE_LEN: usize = 6;
/// Timestamp units per second (one unit is 10 µs).
pub const TIMESTAMP_UNITS_PER_S: u64 = 100_000;
/// 2015-01-01 00:00:00 UTC in Unix seconds: the signing timestamp's epoch.
pub const EPOCH_UNIX_S: u64 = 1_420_070_400;
/// Timestamps are 48 bits.
pub const TIMESTAMP_MAX: u64 = (1 << 48) - 1;
/// A stream not seen before is accepted only if its timestamp is at most this far behind the
/// link's own (one minute: the specification, `mavlink_signature_check`, pymavlink).
pub const NEW_STREAM_WINDOW: u64 = 60 * TIMESTAMP_UNITS_PER_S;
/// Added to a persisted timestamp at start-up: at least twice the persistence interval, so
/// timestamps used after the last save are never used again (ArduPilot: saved every 30 s,
/// restored 60 s ahead, `GCS_Signing.cpp` `load_signing_key`).
pub const RESTART_MARGIN: u64 = 60 * TIMESTAMP_UNITS_PER_S;
/// How often the shell should persist the timestamp (ArduPilot: every 30 s).
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(30);
/// Streams remembered per link; a new stream beyond it is refused (`streams_full`). Only a
/// holder of the key can create a stream (the signature is checked first), so this bounds
/// memory against a misbehaving peer, not against forgers. The C library keeps 16.
pub const STREAMS_MAX: usize = 64;
/// Messages accepted unsigned even where signatures are required: radio modems inject
/// `RADIO_STATUS` (109) and `RADIO` (166) frames they cannot sign, and neither carries any
/// authority over the vehicle. The list ArduPilot uses (`GCS_Signing.cpp` `accept_list`).
pub const UNSIGNED_ACCEPTED_MESSAGES: [u32; 2] = [109, 166];

/// The signing timestamp of a wall-clock time (since the Unix epoch); 0 before 2015.
pub fn timestamp_at(since_unix_epoch: Duration) -> u64 {
    let units = since_unix_epoch
        .as_micros()
        .saturating_sub(u128::from(EPOCH_UNIX_S) * 1_000_000)
        / 10;
    u64::try_from(units).unwrap_or(u64::MAX).min(TIMESTAMP_MAX)
}

/// How a link treats signatures (`vehicle.signing.mode`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SigningMode {
    /// No key: nothing is signed, signatures are not checked.
    #[default]
    Off,
    /// Every outgoing frame signed, every signed incoming frame checked, unsigned frames still
    /// accepted: for installing a key or moving a fleet to signing, never for flying.
    Sign,
    /// Every outgoing frame signed; only signed frames that verify are accepted (and the
    /// radio's own `RADIO_STATUS`/`RADIO`).
    Required,
}

impl SigningMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningMode::Off => "off",
            SigningMode::Sign => "sign",
            SigningMode::Required => "required",
        }
    }
}

impl fmt::Display for SigningMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "holds {len} bytes; a MAVLink signing key is 32 bytes, raw or as 64 hex digits \
         (`flight-companion signing keygen --out FILE` writes one)"
    )]
    Size { len: usize },
    #[error(
        "is {len} characters of text but not 64 hex digits; a MAVLink signing key is 32 bytes, \
         raw or as 64 hex digits"
    )]
    NotHex { len: usize },
    #[error("is all zeros, which is how SETUP_SIGNING turns signing off; generate a real key")]
    Zero,
}

/// A 32-byte signing secret. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey([u8; KEY_LEN]);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.fingerprint())
    }
}

impl SigningKey {
    /// A key from its bytes; the all-zero key is refused (it means "signing off").
    pub fn new(bytes: [u8; KEY_LEN]) -> Result<SigningKey, KeyError> {
        if bytes == [0; KEY_LEN] {
            return Err(KeyError::Zero);
        }
        Ok(SigningKey(bytes))
    }

    /// A key file's contents: exactly 32 raw bytes, or 64 hex digits with surrounding
    /// whitespace (what `signing keygen` writes).
    pub fn parse(contents: &[u8]) -> Result<SigningKey, KeyError> {
        if let Ok(raw) = <[u8; KEY_LEN]>::try_from(contents) {
            // 32 bytes that are all hex digits would be 16 hex-encoded bytes: still a raw key.
            return SigningKey::new(raw);
        }
        let text = contents.trim_ascii();
        if text.len() != 2 * KEY_LEN {
            return Err(match std::str::from_utf8(text) {
                Ok(t) if t.chars().all(|c| c.is_ascii_hexdigit()) && !t.is_empty() => {
                    KeyError::NotHex { len: text.len() }
                }
                _ => KeyError::Size {
                    len: contents.len(),
                },
            });
        }
        let mut bytes = [0u8; KEY_LEN];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => *byte = (high * 16 + low) as u8,
                _ => return Err(KeyError::NotHex { len: text.len() }),
            }
        }
        SigningKey::new(bytes)
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// 64 lowercase hex digits: the key file's text form.
    pub fn to_hex(&self) -> String {
        crate::escape::hex(&self.0)
    }

    /// Names the key in logs and audit records without revealing it: the first 8 bytes of
    /// SHA-256 of "flight-companion signing key" and the key, as hex.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"flight-companion signing key")
            .chain_update(self.0)
            .finalize();
        crate::escape::hex(&digest[..8])
    }
}

/// The trailer of a signed MAVLink 2 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureBlock {
    pub link_id: u8,
    pub timestamp: u64,
    pub value: [u8; SIGNATURE_VALUE_LEN],
}

impl SignatureBlock {
    /// The trailer of a whole frame that carries one (its last 13 bytes).
    pub fn of(frame: &[u8]) -> Option<SignatureBlock> {
        let start = frame.len().checked_sub(SIGNATURE_BLOCK_LEN)?;
        let block = frame.get(start..)?;
        let mut timestamp = [0u8; 8];
        timestamp[..6].copy_from_slice(block.get(1..7)?);
        let mut value = [0u8; SIGNATURE_VALUE_LEN];
        value.copy_from_slice(block.get(7..)?);
        Some(SignatureBlock {
            link_id: block[0],
            timestamp: u64::from_le_bytes(timestamp),
            value,
        })
    }
}

/// The 48-bit signature of `signed`: the frame from its start marker through its checksum,
/// then the link id and the 6 timestamp bytes.
pub fn signature_value(key: &SigningKey, signed: &[u8]) -> [u8; SIGNATURE_VALUE_LEN] {
    let digest = Sha256::new()
        .chain_update(key.0)
        .chain_update(signed)
        .finalize();
    let mut value = [0u8; SIGNATURE_VALUE_LEN];
    value.copy_from_slice(&digest[..SIGNATURE_VALUE_LEN]);
    value
}

/// Appends the signature trailer to a frame already marked signed (incompatibility flag
/// 0x01 set, checksum computed with it).
pub fn append_signature(frame: &mut Vec<u8>, key: &SigningKey, link_id: u8, timestamp: u64) {
    frame.push(link_id);
    frame.extend_from_slice(&timestamp.min(TIMESTAMP_MAX).to_le_bytes()[..6]);
    let value = signature_value(key, frame);
    frame.extend_from_slice(&value);
}

/// Why an incoming frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignatureRefusal {
    /// No signature (or MAVLink 1, which cannot carry one) where one is required.
    Unsigned,
    /// The signature does not verify: another key, or the frame was changed.
    BadSignature,
    /// The timestamp is not newer than the last one of its stream: a replay.
    Replayed,
    /// A stream not seen before whose timestamp is more than a minute behind the link's.
    OldTimestamp,
    /// A new stream while [`STREAMS_MAX`] are already known.
    StreamsFull,
}

impl SignatureRefusal {
    pub const ALL: [SignatureRefusal; 5] = [
        SignatureRefusal::Unsigned,
        SignatureRefusal::BadSignature,
        SignatureRefusal::Replayed,
        SignatureRefusal::OldTimestamp,
        SignatureRefusal::StreamsFull,
    ];

    /// The reason's name in counters, metrics and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureRefusal::Unsigned => "unsigned",
            SignatureRefusal::BadSignature => "bad_signature",
            SignatureRefusal::Replayed => "replayed",
            SignatureRefusal::OldTimestamp => "old_timestamp",
            SignatureRefusal::StreamsFull => "streams_full",
        }
    }
}

/// Which unsigned frames a link accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Mode `sign`: every unsigned frame (a frame whose signature fails is still refused).
    SignedOrUnsigned,
    /// Mode `required`: none but [`UNSIGNED_ACCEPTED_MESSAGES`]; a frame whose signature
    /// fails is refused whatever its message.
    SignedOnly,
    /// ArduPilot on its channel `channel` (`GCS_Signing.cpp` `accept_unsigned_callback`, as
    /// the C parser calls it in `mavlink_helpers.h`): a frame that is unsigned *or whose
    /// signature fails* is accepted on channel 0 (USB on a flight controller, SERIAL0 in
    /// SITL: "assumed to be secure channel") and for [`UNSIGNED_ACCEPTED_MESSAGES`].
    ArduPilot { channel: u8 },
}

impl Acceptance {
    fn unsigned_ok(self, message_id: u32) -> bool {
        match self {
            Acceptance::SignedOrUnsigned => true,
            Acceptance::SignedOnly => UNSIGNED_ACCEPTED_MESSAGES.contains(&message_id),
            Acceptance::ArduPilot { channel } => {
                channel == 0 || UNSIGNED_ACCEPTED_MESSAGES.contains(&message_id)
            }
        }
    }

    fn failed_check_ok(self, message_id: u32) -> bool {
        match self {
            Acceptance::SignedOrUnsigned | Acceptance::SignedOnly => false,
            Acceptance::ArduPilot { .. } => self.unsigned_ok(message_id),
        }
    }
}

/// How an accepted frame was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Its signature verified.
    Signed,
    /// Unsigned (or failing its check), and the link's [`Acceptance`] lets it through.
    Unsigned,
}

/// What a link's signing has seen since it was set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigningCounters {
    /// Frames whose signature verified.
    pub signed: u64,
    /// Frames accepted without a valid signature (see [`Acceptance`]).
    pub unsigned_accepted: u64,
    pub unsigned: u64,
    pub bad_signature: u64,
    pub replayed: u64,
    pub old_timestamp: u64,
    pub streams_full: u64,
}

impl SigningCounters {
    pub fn refused(&self, reason: SignatureRefusal) -> u64 {
        match reason {
            SignatureRefusal::Unsigned => self.unsigned,
            SignatureRefusal::BadSignature => self.bad_signature,
            SignatureRefusal::Replayed => self.replayed,
            SignatureRefusal::OldTimestamp => self.old_timestamp,
            SignatureRefusal::StreamsFull => self.streams_full,
        }
    }

    fn count(&mut self, reason: SignatureRefusal) {
        let counter = match reason {
            SignatureRefusal::Unsigned => &mut self.unsigned,
            SignatureRefusal::BadSignature => &mut self.bad_signature,
            SignatureRefusal::Replayed => &mut self.replayed,
            SignatureRefusal::OldTimestamp => &mut self.old_timestamp,
            SignatureRefusal::StreamsFull => &mut self.streams_full,
        };
        *counter += 1;
    }
}

/// A frame as the signing check needs it: the bytes as received and who it claims to be.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    /// The whole frame, start marker to signature.
    pub raw: &'a [u8],
    /// False for MAVLink 1 (which has no signature).
    pub mavlink2: bool,
    pub system_id: u8,
    pub component_id: u8,
    pub message_id: u32,
}

impl FrameView<'_> {
    fn signed(&self) -> bool {
        self.mavlink2 && self.raw.get(2).is_some_and(|flags| flags & 0x01 != 0)
    }
}

/// The signing state of one link.
///
/// Call order: [`next_timestamp`](Self::next_timestamp) for every frame sent (the encoder
/// appends the trailer with [`append_signature`]); [`check`](Self::check) for every frame
/// received, in order; [`timestamp`](Self::timestamp) whenever the shell persists it;
/// [`advance_to`](Self::advance_to) when the system learns the time (a GPS fix).
#[derive(Debug, Clone)]
pub struct LinkSigning {
    key: SigningKey,
    link_id: u8,
    acceptance: Acceptance,
    /// The link's timestamp: the last one sent, or the newest accepted, whichever is larger.
    timestamp: u64,
    /// Last timestamp per (system, component, link id).
    streams: BTreeMap<(u8, u8, u8), u64>,
    counters: SigningCounters,
}

impl LinkSigning {
    /// `timestamp`: where the link starts (a persisted timestamp plus [`RESTART_MARGIN`], or
    /// the `initial_timestamp` of a SETUP_SIGNING).
    pub fn new(key: SigningKey, link_id: u8, acceptance: Acceptance, timestamp: u64) -> Self {
        LinkSigning {
            key,
            link_id,
            acceptance,
            timestamp: timestamp.min(TIMESTAMP_MAX),
            streams: BTreeMap::new(),
            counters: SigningCounters::default(),
        }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn link_id(&self) -> u8 {
        self.link_id
    }

    pub fn acceptance(&self) -> Acceptance {
        self.acceptance
    }

    /// The link's current timestamp (what to persist).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    pub fn counters(&self) -> SigningCounters {
        self.counters
    }

    /// The time became known (`clock`, e.g. from GPS): the timestamp moves up to it, never
    /// back (ArduPilot `update_signing_timestamp`).
    pub fn advance_to(&mut self, clock: u64) {
        self.timestamp = self.timestamp.max(clock.min(TIMESTAMP_MAX));
    }

    /// The timestamp for the next frame sent: newer than every one before, and at least
    /// the wall clock when there is one.
    pub fn next_timestamp(&mut self, clock: Option<u64>) -> u64 {
        let next = self
            .timestamp
            .saturating_add(1)
            .max(clock.unwrap_or(0))
            .min(TIMESTAMP_MAX);
        self.timestamp = next;
        next
    }

    /// Decides on one received frame; counted either way.
    pub fn check(
        &mut self,
        frame: FrameView<'_>,
        clock: Option<u64>,
    ) -> Result<Accepted, SignatureRefusal> {
        let verdict = if frame.signed() {
            self.verify(frame, clock)
        } else {
            Err(SignatureRefusal::Unsigned)
        };
        let verdict = match verdict {
            Ok(()) => Ok(Accepted::Signed),
            Err(SignatureRefusal::Unsigned) if self.acceptance.unsigned_ok(frame.message_id) => {
                Ok(Accepted::Unsigned)
            }
            Err(SignatureRefusal::Unsigned) => Err(SignatureRefusal::Unsigned),
            Err(_) if self.acceptance.failed_check_ok(frame.message_id) => Ok(Accepted::Unsigned),
            Err(refusal) => Err(refusal),
        };
        match verdict {
            Ok(Accepted::Signed) => self.counters.signed += 1,
            Ok(Accepted::Unsigned) => self.counters.unsigned_accepted += 1,
            Err(reason) => self.counters.count(reason),
        }
        verdict
    }

    fn verify(&mut self, frame: FrameView<'_>, clock: Option<u64>) -> Result<(), SignatureRefusal> {
        let block = SignatureBlock::of(frame.raw).ok_or(SignatureRefusal::BadSignature)?;
        let signed_len = frame.raw.len() - SIGNATURE_VALUE_LEN;
        let signed = frame
            .raw
            .get(..signed_len)
            .ok_or(SignatureRefusal::BadSignature)?;
        // Not constant-time: the value is 48 bits of a keyed hash that an attacker sees
        // refused either way, and a timing channel on a serial or radio link would reveal
        // at most where a forged guess first differs.
        if signature_value(&self.key, signed) != block.value {
            return Err(SignatureRefusal::BadSignature);
        }
        let stream = (frame.system_id, frame.component_id, block.link_id);
        match self.streams.get(&stream) {
            Some(last) if block.timestamp <= *last => return Err(SignatureRefusal::Replayed),
            Some(_) => {}
            None => {
                if self.streams.len() >= STREAMS_MAX {
                    return Err(SignatureRefusal::StreamsFull);
                }
                let local = self.timestamp.max(clock.unwrap_or(0));
                if block.timestamp.saturating_add(NEW_STREAM_WINDOW) < local {
                    return Err(SignatureRefusal::OldTimestamp);
                }
            }
        }
        self.streams.insert(stream, block.timestamp);
        // The next frame this link sends must be newer than anything it accepted.
        self.timestamp = self.timestamp.max(block.timestamp);
        Ok(())
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
