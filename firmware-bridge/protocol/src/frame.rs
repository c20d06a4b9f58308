//! Framing: `0x00 | COBS(postcard(Message) | CRC-16 LE) | 0x00`.

use crate::cobs::{self, CobsError};
use crate::{MAX_FRAME_LEN, MAX_PAYLOAD_LEN, Message};

/// CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF, the "CCITT-FALSE" CRC): detects every burst
/// of up to 16 bits and every 1-, 2- and 3-bit error in frames this short.
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

/// Why bytes could not become a message. Every variant is counted in [`DecoderStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_FRAME_LEN`] bytes without a delimiter: dropped up to the next one.
    Oversize,
    /// Not valid COBS (line noise, or a frame that lost bytes).
    Cobs,
    /// Shorter than one message byte plus the CRC.
    TooShort,
    /// The CRC does not match: corrupted on the wire.
    Crc,
    /// The CRC matched but the bytes are not a message of this schema (an unknown variant,
    /// a field out of range, or trailing bytes): most likely a peer of another build.
    Malformed,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FrameError::Oversize => "frame longer than the maximum",
            FrameError::Cobs => "invalid COBS framing",
            FrameError::TooShort => "frame too short",
            FrameError::Crc => "CRC mismatch",
            FrameError::Malformed => "not a message of this protocol schema",
        })
    }
}

/// Why a message could not be encoded. Unreachable for this schema (a test encodes the
/// largest message), but a caller counts it rather than trusting that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeError;

/// Encodes `message` as one delimited frame into `out`; returns its length.
pub fn encode_into(message: &Message, out: &mut [u8; MAX_FRAME_LEN]) -> Result<usize, EncodeError> {
    let mut payload = [0u8; MAX_PAYLOAD_LEN + 2];
    let used = postcard::to_slice(message, &mut payload[..MAX_PAYLOAD_LEN])
        .map_err(|_| EncodeError)?
        .len();
    let crc = CRC16.checksum(payload.get(..used).ok_or(EncodeError)?);
    let crc_bytes = crc.to_le_bytes();
    *payload.get_mut(used).ok_or(EncodeError)? = crc_bytes[0];
    *payload.get_mut(used + 1).ok_or(EncodeError)? = crc_bytes[1];
    // A leading delimiter flushes whatever partial garbage the receiver holds, so a frame is
    // never glued to noise that preceded it.
    out[0] = 0;
    let body = out.get_mut(1..MAX_FRAME_LEN - 1).ok_or(EncodeError)?;
    let n = cobs::encode(payload.get(..used + 2).ok_or(EncodeError)?, body).ok_or(EncodeError)?;
    *out.get_mut(n + 1).ok_or(EncodeError)? = 0;
    Ok(n + 2)
}

/// Encodes `message` as one delimited frame.
pub fn encode(message: &Message) -> Result<heapless::Vec<u8, MAX_FRAME_LEN>, EncodeError> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = encode_into(message, &mut buf)?;
    heapless::Vec::from_slice(buf.get(..n).ok_or(EncodeError)?).map_err(|_| EncodeError)
}

/// Counters of a [`FrameDecoder`], for health reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Messages decoded.
    pub frames_ok: u32,
    /// [`FrameError::Oversize`].
    pub oversize: u32,
    /// [`FrameError::Cobs`].
    pub cobs_errors: u32,
    /// [`FrameError::TooShort`].
    pub too_short: u32,
    /// [`FrameError::Crc`].
    pub crc_errors: u32,
    /// [`FrameError::Malformed`].
    pub malformed: u32,
}

impl DecoderStats {
    /// Every error, summed.
    pub fn errors(&self) -> u32 {
        self.oversize
            .saturating_add(self.cobs_errors)
            .saturating_add(self.too_short)
            .saturating_add(self.crc_errors)
            .saturating_add(self.malformed)
    }
}

/// Sans-IO frame decoder: bytes in, messages or counted errors out.
///
/// Call [`FrameDecoder::push`] for every received byte (or [`FrameDecoder::feed`] for a
/// slice). It holds at most one partial frame in a fixed buffer; after garbage it
/// resynchronises at the next zero byte. It never panics, whatever the input.
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    buf: heapless::Vec<u8, MAX_FRAME_LEN>,
    /// True while dropping the rest of an oversize frame.
    discarding: bool,
    stats: DecoderStats,
}

impl FrameDecoder {
    /// An empty decoder.
    pub const fn new() -> FrameDecoder {
        FrameDecoder {
            buf: heapless::Vec::new(),
            discarding: false,
            stats: DecoderStats {
                frames_ok: 0,
                oversize: 0,
                cobs_errors: 0,
                too_short: 0,
                crc_errors: 0,
                malformed: 0,
            },
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Takes one byte; returns a message or an error when it completes a frame.
    pub fn push(&mut self, byte: u8) -> Option<Result<Message, FrameError>> {
        if byte != 0 {
            if !self.discarding && self.buf.push(byte).is_err() {
                self.discarding = true;
                self.buf.clear();
            }
            return None;
        }
        if self.discarding {
            self.discarding = false;
            return Some(self.count(Err(FrameError::Oversize)));
        }
        if self.buf.is_empty() {
            // Back-to-back delimiters (every frame starts with one) carry nothing.
            return None;
        }
        let result = decode_body(&self.buf);
        self.buf.clear();
        Some(self.count(result))
    }

    /// Takes a slice; yields every message or error it completes, in order.
    pub fn feed<'a>(&'a mut self, bytes: &'a [u8]) -> Feed<'a> {
        Feed {
            decoder: self,
            bytes: bytes.iter(),
        }
    }

    fn count(&mut self, result: Result<Message, FrameError>) -> Result<Message, FrameError> {
        let counter = match result {
            Ok(_) => &mut self.stats.frames_ok,
            Err(FrameError::Oversize) => &mut self.stats.oversize,
            Err(FrameError::Cobs) => &mut self.stats.cobs_errors,
            Err(FrameError::TooShort) => &mut self.stats.too_short,
            Err(FrameError::Crc) => &mut self.stats.crc_errors,
            Err(FrameError::Malformed) => &mut self.stats.malformed,
        };
        *counter = counter.wrapping_add(1);
        result
    }
}

/// The iterator of [`FrameDecoder::feed`].
pub struct Feed<'a> {
    decoder: &'a mut FrameDecoder,
    bytes: core::slice::Iter<'a, u8>,
}

impl Iterator for Feed<'_> {
    type Item = Result<Message, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        for &byte in self.bytes.by_ref() {
            if let Some(result) = self.decoder.push(byte) {
                return Some(result);
            }
        }
        None
    }
}

fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    let mut plain = [0u8; MAX_FRAME_LEN];
    let n = cobs::decode(body, &mut plain).map_err(|e| match e {
        CobsError::Invalid => FrameError::Cobs,
        CobsError::TooLong => FrameError::Oversize,
    })?;
    let plain = plain.get(..n).ok_or(FrameError::Oversize)?;
    if plain.len() < 3 {
        return Err(FrameError::TooShort);
    }
    let (payload, crc_bytes) = plain.split_at(plain.len() - 2);
    let received = u16::from_le_bytes([
        *crc_bytes.first().ok_or(FrameError::TooShort)?,
        *crc_bytes.get(1).ok_or(FrameError::TooShort)?,
    ]);
    if CRC16.checksum(payload) != received {
        return Err(FrameError::Crc);
    }
    match postcard::take_from_bytes::<Message>(payload) {
        Ok((message, [])) => Ok(message),
        _ => Err(FrameError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_ccitt_false() {
        // The standard check value of CRC-16/IBM-3740, as PROTOCOL.md states.
        assert_eq!(CRC16.checksum(b"123456789"), 0x29B1);
    }
}
