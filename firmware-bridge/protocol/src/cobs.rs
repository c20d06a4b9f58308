//! Consistent Overhead Byte Stuffing: removes every zero byte so that zero can delimit frames.
//!
//! Written here rather than taken from a crate so that every access is bounds-checked by
//! `get`, with no path to a panic, which the decoder's property tests rely on.

/// Encodes `src` into `dst`; returns the encoded length, or `None` if `dst` is too small.
/// The output never contains a zero byte and is at most `src.len() + src.len() / 254 + 1`.
pub(crate) fn encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut code_index = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    for &byte in src {
        if byte == 0 {
            *dst.get_mut(code_index)? = code;
            code_index = out;
            out += 1;
            code = 1;
        } else {
            *dst.get_mut(out)? = byte;
            out += 1;
            code += 1;
            if code == 0xFF {
                *dst.get_mut(code_index)? = code;
                code_index = out;
                out += 1;
                code = 1;
            }
        }
    }
    *dst.get_mut(code_index)? = code;
    Some(out)
}

/// Why a COBS block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CobsError {
    /// A zero byte inside the block, or a block that ends before its code says.
    Invalid,
    /// The decoded bytes do not fit in the output.
    TooLong,
}

/// Decodes one COBS block (without its delimiter) into `dst`; returns the decoded length.
pub(crate) fn decode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    let mut i = 0;
    let mut out = 0;
    while let Some(&code) = src.get(i) {
        if code == 0 {
            return Err(CobsError::Invalid);
        }
        i += 1;
        for _ in 1..code {
            let byte = *src.get(i).ok_or(CobsError::Invalid)?;
            if byte == 0 {
                return Err(CobsError::Invalid);
            }
            *dst.get_mut(out).ok_or(CobsError::TooLong)? = byte;
            out += 1;
            i += 1;
        }
        if code != 0xFF && i < src.len() {
            *dst.get_mut(out).ok_or(CobsError::TooLong)? = 0;
            out += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_encode_and_decode() {
        // Examples from the COBS paper (Cheshire & Baker): input → encoded.
        let cases: &[(&[u8], &[u8])] = &[
            (&[], &[0x01]),
            (&[0x00], &[0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x22, 0x33, 0x44], &[0x05, 0x11, 0x22, 0x33, 0x44]),
            (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
        ];
        for (plain, encoded) in cases {
            let mut buf = [0u8; 16];
            let n = encode(plain, &mut buf).unwrap();
            assert_eq!(&buf[..n], *encoded, "encode {plain:02x?}");
            let mut back = [0u8; 16];
            let m = decode(encoded, &mut back).unwrap();
            assert_eq!(&back[..m], *plain, "decode {encoded:02x?}");
        }
    }

    #[test]
    fn long_runs_without_zero_use_full_blocks() {
        let plain = [0x42u8; 300];
        let mut buf = [0u8; 310];
        let n = encode(&plain, &mut buf).unwrap();
        assert_eq!(n, 302);
        assert!(!buf[..n].contains(&0));
        let mut back = [0u8; 310];
        assert_eq!(decode(&buf[..n], &mut back), Ok(300));
        assert_eq!(&back[..300], &plain[..]);
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let mut out = [0u8; 8];
        assert_eq!(decode(&[0x05, 0x11], &mut out), Err(CobsError::Invalid));
        assert_eq!(decode(&[0x02, 0x00], &mut out), Err(CobsError::Invalid));
        assert_eq!(decode(&[0x0A; 12], &mut out), Err(CobsError::TooLong));
        assert_eq!(encode(&[1, 2, 3], &mut [0u8; 3]), None);
    }
}
