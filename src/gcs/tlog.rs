//! The telemetry log's record (MAVProxy's and QGroundControl's `.tlog`): each raw frame
//! after an 8-byte big-endian timestamp in microseconds since 1970 (MAVProxy writes
//! `struct.pack('>Q', usec)` before each frame it logs; pymavlink's `mavlogfile` reads that).

/// One record: the stamp, then the frame's bytes.
pub fn record(unix_us: u64, frame: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&unix_us.to_be_bytes());
    out.extend_from_slice(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_big_endian_microseconds_before_the_frame() {
        let mut out = Vec::new();
        record(0x0102_0304_0506_0708, &[0xFD, 9], &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 0xFD, 9]);
    }
}
