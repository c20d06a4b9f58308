//! The record format (pure): postcard payloads, framed and chained.
//!
//! A frame is `len: u32 LE | payload: len bytes | check: 8 bytes`, where `check` is the
//! first 8 bytes of SHA-256(len | payload) (a checksum that also covers the length) and
//! the payload is a postcard [`Record`]. Each record carries `prev`, the SHA-256 of the
//! previous record's payload (zeros for the first record of a log); the chain continues
//! across rotated files, so deleting, reordering or editing a record breaks it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest payload accepted when reading (a record is a few hundred bytes).
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Bytes around the payload: length and checksum.
pub const FRAME_OVERHEAD: usize = 4 + 8;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 0, 1, 2... over the whole log, across files.
    pub seq: u64,
    /// Wall-clock time of the event, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// SHA-256 of the previous record's payload.
    pub prev: [u8; 32],
    pub event: Event,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    DaemonStart {
        version: String,
        recovered: String,
    },
    DaemonStop {
        reason: String,
    },
    /// One MCP request (tool call, resource read, other method).
    Call(Call),
    /// Bad/expired/revoked token, denied role, rate limit, control takeover...
    Security {
        kind: String,
        session: String,
        subject: String,
        detail: String,
    },
    /// Something the operator should know later that has no kind of its own below.
    Notice {
        kind: String,
        detail: String,
    },
    // Issue 15. New kinds are appended: postcard encodes the variant's index, so the order
    // above is the on-disk format of older logs and never changes.
    /// The first record of every file: where the log stands, so a reader can begin at any
    /// file (after retention or damage) and the writer resumes without a replay.
    Segment(Segment),
    /// The emergency stop: a trigger (with its source and identity), a rung of the ladder,
    /// the pilot taking over, a reset, a refused reset.
    Stop {
        /// `triggered`, `rung_started`, `rung_confirmed`, `rung_refused`, `pilot_took_over`,
        /// `stopped`, `reset`, `reset_refused`, `kill_confirmation_required`, ...
        kind: String,
        /// `mcp_tool`, `mqtt_panic`, `local`, `hardware`, `failsafe`; empty when not a trigger.
        source: String,
        /// Who: the client, `local uid N`, `bridge`; empty when not a trigger.
        identity: String,
        detail: String,
    },
    /// A failsafe raised or cleared: `ground_link_lost`, `ground_inactive`,
    /// `battery_critical`, `autopilot_link_lost`, `pilot_takeover`, `companion_stall`.
    Failsafe {
        failsafe: String,
        raised: bool,
        detail: String,
    },
    /// A link up or down: `autopilot` (MAVLink), `ground` (the broker), `bridge` (the MCU).
    Link {
        link: String,
        up: bool,
        detail: String,
    },
    /// The configuration the daemon runs with.
    Config {
        /// The file, or `built-in defaults`.
        source: String,
        /// Hex SHA-256 of the file's bytes (empty for the defaults).
        sha256: String,
    },
    /// The envelope in force, a breach, a whitelist refusal.
    Safety {
        kind: String,
        detail: String,
    },
    /// The control lease: `granted`, `released`, `taken_over`, `expired`, `refused`.
    Lease {
        change: String,
        session: String,
        subject: String,
        detail: String,
    },
    /// Files removed by retention: what they held, so the log that remains still verifies.
    Pruned(Pruned),
    /// What the daemon found when it opened the log: an unclean stop, a torn record, damage.
    Recovery {
        /// `unclean_stop`, `torn_tail`, `damaged`, `replayed`.
        kind: String,
        detail: String,
    },
}

/// The first record of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// This file's number (a file renamed or swapped is named by it).
    pub file: u32,
    /// The Merkle frontier over the `seq` records before this one (RFC 9162, see `merkle`).
    pub frontier: Vec<[u8; 32]>,
    /// The log's checkpoint origin and the key that signs its checkpoints (a C2SP vkey).
    pub origin: String,
    pub verifier_key: String,
    /// `new log`, `rotation`, `after a torn record`, `after damage`, `after a replay`.
    pub reason: String,
    /// What the writer left behind in an earlier file, kept as evidence.
    pub after: Option<Gap>,
}

/// Bytes the writer did not continue from: a torn last record or damage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub file: u32,
    /// Where the first unusable byte is.
    pub offset: u64,
    /// `torn` or `damaged`.
    pub kind: String,
    pub detail: String,
}

/// What retention removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    pub files: Vec<PrunedFile>,
    /// The oldest record and file that remain.
    pub first_kept_seq: u64,
    pub first_kept_file: u32,
    /// `size` or `age`, with the limit.
    pub reason: String,
}

/// One removed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedFile {
    pub file: u32,
    pub first_seq: u64,
    pub records: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the file as it was removed.
    pub sha256: String,
}

/// A request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub session: String,
    pub subject: String,
    pub role: String,
    /// `tools/call:arm`, `resources/read:vehicle://status`, `initialize`...
    pub target: String,
    /// The JSON-RPC id, as JSON text.
    pub request_id: String,
    /// Hex SHA-256 of the arguments' JSON text.
    pub args_sha256: String,
    /// The arguments' JSON text, cut at [`ARGS_CHARS_MAX`].
    pub args: String,
    /// `allow` or `deny`.
    pub decision: String,
    pub reason: String,
    /// `ok`, `tool_error: ...`, `denied`.
    pub outcome: String,
    pub latency_us: u64,
}

/// Longest argument text kept in a record; the digest covers all of it.
pub const ARGS_CHARS_MAX: usize = 512;

impl Call {
    /// Digest and (cut) copy of the arguments.
    pub fn args_of(json_text: &str) -> (String, String) {
        let digest = hex(&Sha256::digest(json_text.as_bytes()));
        let kept: String = json_text.chars().take(ARGS_CHARS_MAX).collect();
        (digest, kept)
    }
}

pub use flight_companion_core::escape::hex;

/// SHA-256 of a payload: what the next record's `prev` must be.
pub fn hash(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// A decoded frame: the record, its chain hash (SHA-256 of the payload), its Merkle leaf
/// hash (RFC 9162: SHA-256(0x00 || payload)) and the frame's length.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub record: Record,
    pub hash: [u8; 32],
    pub leaf: [u8; 32],
    pub used: usize,
}

fn check(len: [u8; 4], payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(len);
    h.update(payload);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// A frame, its payload's chain hash and its Merkle leaf hash.
pub type Encoded = (Vec<u8>, [u8; 32], [u8; 32]);

/// Encodes a record as one frame; returns (frame, payload hash, Merkle leaf hash).
pub fn encode_with_leaf(record: &Record) -> Result<Encoded, String> {
    let (frame, hash) = encode(record)?;
    let leaf = super::merkle::leaf_hash(frame.get(4..frame.len() - 8).unwrap_or_default());
    Ok((frame, hash, leaf))
}

/// Decodes like [`decode`], with the Merkle leaf hash.
pub fn decode_full(bytes: &[u8]) -> Result<Decoded, FrameError> {
    let (record, hash, used) = decode(bytes)?;
    let payload = bytes.get(4..used - 8).unwrap_or_default();
    Ok(Decoded {
        record,
        hash,
        leaf: super::merkle::leaf_hash(payload),
        used,
    })
}

/// Encodes a record as one frame; returns (frame, payload hash).
pub fn encode(record: &Record) -> Result<(Vec<u8>, [u8; 32]), String> {
    let payload = postcard::to_stdvec(record).map_err(|e| format!("postcard: {e}"))?;
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(format!("record of {} bytes is too large", payload.len()));
    }
    let len = u32::try_from(payload.len())
        .map_err(|_| "record too large".to_string())?
        .to_le_bytes();
    let mut frame = Vec::with_capacity(payload.len() + FRAME_OVERHEAD);
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(&check(len, &payload));
    Ok((frame, hash(&payload)))
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end inside the frame (a torn write if this is the end of the last file).
    Truncated,
    BadLength(usize),
    BadChecksum,
    Undecodable(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "the file ends inside the record"),
            FrameError::BadLength(n) => write!(f, "impossible record length {n}"),
            FrameError::BadChecksum => write!(f, "checksum mismatch (the record was altered)"),
            FrameError::Undecodable(e) => write!(f, "the record does not decode: {e}"),
        }
    }
}

/// Decodes the frame at the start of `bytes`: (record, payload hash, frame length).
pub fn decode(bytes: &[u8]) -> Result<(Record, [u8; 32], usize), FrameError> {
    let Some(len_bytes) = bytes.get(..4) else {
        return Err(FrameError::Truncated);
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(len_bytes);
    let n = u32::from_le_bytes(len) as usize;
    if n == 0 || n > PAYLOAD_BYTES_MAX {
        return Err(FrameError::BadLength(n));
    }
    let Some(payload) = bytes.get(4..4 + n) else {
        return Err(FrameError::Truncated);
    };
    let Some(stored) = bytes.get(4 + n..4 + n + 8) else {
        return Err(FrameError::Truncated);
    };
    if stored != check(len, payload) {
        return Err(FrameError::BadChecksum);
    }
    let record: Record =
        postcard::from_bytes(payload).map_err(|e| FrameError::Undecodable(e.to_string()))?;
    Ok((record, hash(payload), 4 + n + 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            time_unix_ms: 1_700_000_000_000 + seq,
            prev: [7; 32],
            event: Event::Security {
                kind: "bad_signature".into(),
                session: "s".into(),
                subject: "x".into(),
                detail: "d".into(),
            },
        }
    }

    #[test]
    fn round_trip_and_every_flipped_byte_is_caught() {
        let (frame, h) = encode(&rec(3)).unwrap();
        let (back, h2, used) = decode(&frame).unwrap();
        assert_eq!(back, rec(3));
        assert_eq!((h, used), (h2, frame.len()));
        for i in 0..frame.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = frame.clone();
                bad[i] ^= bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of byte {i} bit {bit:#x} went unnoticed"
                );
            }
        }
        for cut in 0..frame.len() {
            assert!(decode(&frame[..cut]).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
