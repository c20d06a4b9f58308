//! The record format (pure): postcard payloads, framed and chained.
//!
//! A frame is `len: u32 LE | payload: len bytes | check: 8 bytes`, where `check` is the
//! first 8 bytes of SHA-256(len | payload) (a checksum that also covers the length) and
//! the payload is a postcard [`Record`]. Each record carries `prev`, the SHA-256 of the
//! previous record's payload (zeros for the first record of a log); the chain continues
//! across rotated files, so deleting, reordering or editing a record breaks it.

use sha2::{Digest, Sha256};

/// Largest payload accepted when reading (a record is a few hundred bytes).
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Bytes around the payload: length and checksum.
pub const FRAME_OVERHEAD: usize = 4 + 8;
/// The first allocation of a frame being encoded: a call's record with its arguments cut at
/// [`ARGS_CHARS_MAX`] fits; a larger one grows it.
const FRAME_BYTES_TYPICAL: usize = 1024;

// The record types are the core's (the Core's audit events are made of them); the frame
// format, which only the writer and the readers use, stays here.
pub use flight_companion_core::audit::record::{
    ARGS_CHARS_MAX, Call, Event, Gap, Pruned, PrunedFile, Record, Segment,
};
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
    // The payload is serialised straight into the frame, after room for its length: no
    // second copy, and a typical record fits the first allocation (issue 17: the payload's
    // growing buffer showed in the audit writer's profile).
    let mut frame = Vec::with_capacity(FRAME_BYTES_TYPICAL);
    frame.extend_from_slice(&[0; 4]);
    let mut frame = postcard::to_extend(record, frame).map_err(|e| format!("postcard: {e}"))?;
    let payload_bytes = frame.len() - 4;
    if payload_bytes > PAYLOAD_BYTES_MAX {
        return Err(format!("record of {payload_bytes} bytes is too large"));
    }
    let len = u32::try_from(payload_bytes)
        .map_err(|_| "record too large".to_string())?
        .to_le_bytes();
    frame[..4].copy_from_slice(&len);
    let payload = &frame[4..];
    let (checksum, hash) = (check(len, payload), hash(payload));
    frame.extend_from_slice(&checksum);
    Ok((frame, hash))
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
