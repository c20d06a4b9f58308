//! The signing rules, row by row, on frames from the project's own encoder and decoder; the
//! golden frame was signed by pymavlink 2.4.50 (an independent implementation).

use std::time::Duration;

use mavlink::Message;
use proptest::prelude::*;

use super::*;
use crate::link::MavMessage;
use crate::link::dialect::*;
use crate::link::frame::{Frame, FrameDecoder, FrameEncoder};

fn key(seed: u8) -> SigningKey {
    SigningKey::new(std::array::from_fn(|i| seed.wrapping_add(i as u8))).unwrap()
}

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

fn decode(bytes: &[u8]) -> Frame {
    let mut decoder = FrameDecoder::new();
    decoder.push(bytes);
    decoder.poll().expect("a frame").expect("a valid frame")
}

/// A frame of (sys 1, comp 1) signed with `key` on `link_id` at `timestamp`.
fn signed(key: &SigningKey, link_id: u8, timestamp: u64) -> Frame {
    decode(&FrameEncoder::new(1, 1).encode_signed(&heartbeat(), key, link_id, timestamp))
}

const NOW: u64 = 360_000_000_000; // about 2016-02-21: any time after the epoch

fn required(key: SigningKey) -> LinkSigning {
    LinkSigning::new(key, 0, Acceptance::SignedOnly, NOW)
}

#[test]
fn the_encoder_signs_byte_for_byte_as_pymavlink() {
    // pymavlink 2.4.50: MAVLink(srcSystem=1, srcComponent=1), secret_key bytes 1..=32,
    // link_id 7, timestamp 123456789, heartbeat(QUADROTOR, ARDUPILOTMEGA, CUSTOM_MODE_ENABLED,
    // 4, STANDBY).pack().
    let golden = "fd0901000001010000000400000002030103038f0f0715cd5b0700004557e11b2806";
    let key = SigningKey::new(std::array::from_fn(|i| i as u8 + 1)).unwrap();
    let frame = FrameEncoder::new(1, 1).encode_signed(&heartbeat(), &key, 7, 123_456_789);
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, golden);
    let block = SignatureBlock::of(&frame).unwrap();
    assert_eq!((block.link_id, block.timestamp), (7, 123_456_789));
}

#[test]
fn timestamps_count_10_us_since_2015() {
    let at = |s: u64| timestamp_at(Duration::from_secs(s));
    assert_eq!(at(EPOCH_UNIX_S), 0);
    assert_eq!(at(EPOCH_UNIX_S + 1), 100_000);
    assert_eq!(
        timestamp_at(Duration::from_micros(EPOCH_UNIX_S * 1_000_000 + 25)),
        2
    );
    assert_eq!(at(0), 0, "a clock before 2015 is no time at all");
    assert_eq!(timestamp_at(Duration::MAX), TIMESTAMP_MAX);
}

#[test]
fn a_signed_frame_verifies_and_is_counted() {
    let k = key(1);
    let mut link = required(k.clone());
    let frame = signed(&k, 3, NOW + 5);
    assert_eq!(link.check(frame.view(), None), Ok(Accepted::Signed));
    assert_eq!(link.counters().signed, 1);
    // The link's next timestamp is newer than what it accepted.
    assert!(link.next_timestamp(None) > NOW + 5);
}

#[test]
fn refusals_row_by_row() {
    let k = key(1);
    let other = key(2);
    struct Row {
        what: &'static str,
        /// Frames fed first (all accepted), then the one judged.
        before: Vec<Frame>,
        frame: Frame,
        expected: Result<Accepted, SignatureRefusal>,
    }
    let mut tampered = FrameEncoder::new(1, 1).encode_signed(&heartbeat(), &k, 3, NOW);
    // Change the custom mode, then fix the checksum (which the signature does not cover
    // alone): only the signature can catch it.
    tampered[10] ^= 0x01;
    let crc_end = tampered.len() - SIGNATURE_BLOCK_LEN - 2;
    let crc = mavlink::calculate_crc(&tampered[1..crc_end], MavMessage::extra_crc(0));
    tampered[crc_end..crc_end + 2].copy_from_slice(&crc.to_le_bytes());
    let mut relinked = FrameEncoder::new(1, 1).encode_signed(&heartbeat(), &k, 3, NOW);
    let at = relinked.len() - SIGNATURE_BLOCK_LEN;
    relinked[at] = 4; // another link id, same signature: it covers the link id
    let rows = vec![
        Row {
            what: "unsigned",
            before: vec![],
            frame: decode(&FrameEncoder::new(1, 1).encode(&heartbeat())),
            expected: Err(SignatureRefusal::Unsigned),
        },
        Row {
            what: "another key",
            before: vec![],
            frame: signed(&other, 3, NOW),
            expected: Err(SignatureRefusal::BadSignature),
        },
        Row {
            what: "payload changed after signing",
            before: vec![],
            frame: decode(&tampered),
            expected: Err(SignatureRefusal::BadSignature),
        },
        Row {
            what: "link id changed after signing",
            before: vec![],
            frame: decode(&relinked),
            expected: Err(SignatureRefusal::BadSignature),
        },
        Row {
            what: "the same frame again",
            before: vec![signed(&k, 3, NOW + 10)],
            frame: signed(&k, 3, NOW + 10),
            expected: Err(SignatureRefusal::Replayed),
        },
        Row {
            what: "an older frame of the same stream",
            before: vec![signed(&k, 3, NOW + 10)],
            frame: signed(&k, 3, NOW + 9),
            expected: Err(SignatureRefusal::Replayed),
        },
        Row {
            what: "a new stream more than a minute behind",
            before: vec![],
            frame: signed(&k, 3, NOW - NEW_STREAM_WINDOW - 1),
            expected: Err(SignatureRefusal::OldTimestamp),
        },
        Row {
            what: "a new stream exactly a minute behind",
            before: vec![],
            frame: signed(&k, 3, NOW - NEW_STREAM_WINDOW),
            expected: Ok(Accepted::Signed),
        },
        Row {
            what: "an old timestamp on a known stream is only a replay check",
            before: vec![signed(&k, 3, NOW - NEW_STREAM_WINDOW)],
            frame: signed(&k, 3, NOW - NEW_STREAM_WINDOW + 1),
            expected: Ok(Accepted::Signed),
        },
        Row {
            what: "streams are per link id: the same timestamp on another link",
            before: vec![signed(&k, 3, NOW + 10)],
            frame: signed(&k, 4, NOW + 10),
            expected: Ok(Accepted::Signed),
        },
        Row {
            what: "RADIO_STATUS from a radio modem, unsigned",
            before: vec![],
            frame: decode(
                &FrameEncoder::new(51, 68).encode(&MavMessage::RADIO_STATUS(Default::default())),
            ),
            expected: Ok(Accepted::Unsigned),
        },
    ];
    for row in rows {
        let mut link = required(k.clone());
        for frame in &row.before {
            assert_eq!(
                link.check(frame.view(), None),
                Ok(Accepted::Signed),
                "{}",
                row.what
            );
        }
        assert_eq!(
            link.check(row.frame.view(), None),
            row.expected,
            "{}",
            row.what
        );
        let c = link.counters();
        if let Err(reason) = row.expected {
            assert_eq!(c.refused(reason), 1, "{}: {c:?}", row.what);
        }
    }
}

#[test]
fn the_wall_clock_sets_the_window_of_a_new_stream() {
    let k = key(1);
    let mut link = LinkSigning::new(k.clone(), 0, Acceptance::SignedOnly, 0);
    let frame = signed(&k, 3, NOW);
    // The link itself started at 0, but its clock says an hour later.
    let clock = NOW + 3600 * TIMESTAMP_UNITS_PER_S;
    assert_eq!(
        link.check(frame.view(), Some(clock)),
        Err(SignatureRefusal::OldTimestamp)
    );
    assert_eq!(link.check(frame.view(), None), Ok(Accepted::Signed));
}

#[test]
fn a_forged_frame_does_not_move_a_stream_or_the_clock() {
    let k = key(1);
    let mut link = required(k.clone());
    let far = NOW + 1_000 * TIMESTAMP_UNITS_PER_S;
    assert_eq!(
        link.check(signed(&key(9), 3, far).view(), None),
        Err(SignatureRefusal::BadSignature)
    );
    // Had the forgery been recorded (pymavlink records the stream's timestamp before it
    // checks the signature), this genuine frame would now be a "replay".
    assert_eq!(
        link.check(signed(&k, 3, NOW + 1).view(), None),
        Ok(Accepted::Signed)
    );
    assert!(link.timestamp() < far);
}

#[test]
// RADIO (166) is deprecated in the dialect, and still what SiK radios send.
#[allow(deprecated)]
fn acceptance_of_unsigned_and_failing_frames() {
    let k = key(1);
    let unsigned = decode(&FrameEncoder::new(255, 190).encode(&heartbeat()));
    let forged = signed(&key(2), 0, NOW);
    let radio = decode(&FrameEncoder::new(51, 68).encode(&MavMessage::RADIO(Default::default())));
    let cases = [
        (
            Acceptance::SignedOrUnsigned,
            &unsigned,
            Ok(Accepted::Unsigned),
        ),
        (
            Acceptance::SignedOrUnsigned,
            &forged,
            Err(SignatureRefusal::BadSignature),
        ),
        (Acceptance::SignedOnly, &radio, Ok(Accepted::Unsigned)),
        (
            Acceptance::SignedOnly,
            &forged,
            Err(SignatureRefusal::BadSignature),
        ),
        // ArduPilot: channel 0 takes anything, even a bad signature (GCS_Signing.cpp
        // accept_unsigned_callback, consulted by mavlink_helpers.h for both).
        (
            Acceptance::ArduPilot { channel: 0 },
            &unsigned,
            Ok(Accepted::Unsigned),
        ),
        (
            Acceptance::ArduPilot { channel: 0 },
            &forged,
            Ok(Accepted::Unsigned),
        ),
        (
            Acceptance::ArduPilot { channel: 1 },
            &unsigned,
            Err(SignatureRefusal::Unsigned),
        ),
        (
            Acceptance::ArduPilot { channel: 1 },
            &forged,
            Err(SignatureRefusal::BadSignature),
        ),
        (
            Acceptance::ArduPilot { channel: 2 },
            &radio,
            Ok(Accepted::Unsigned),
        ),
    ];
    for (acceptance, frame, expected) in cases {
        let mut link = LinkSigning::new(k.clone(), 0, acceptance, NOW);
        assert_eq!(
            link.check(frame.view(), None),
            expected,
            "{acceptance:?} {:?}",
            frame.message
        );
    }
}

#[test]
fn mavlink1_cannot_be_signed_and_is_refused_where_signatures_are_required() {
    let mut payload = [0u8; 255];
    let len = heartbeat().ser(mavlink::MavlinkVersion::V1, &mut payload);
    // Start marker, length, sequence, system, component, message id.
    let mut frame = vec![0xFE, len as u8, 0, 1, 1, 0];
    frame.extend_from_slice(&payload[..len]);
    let crc = mavlink::calculate_crc(&frame[1..], MavMessage::extra_crc(0));
    frame.extend_from_slice(&crc.to_le_bytes());
    let frame = decode(&frame);
    let mut link = required(key(1));
    assert_eq!(
        link.check(frame.view(), None),
        Err(SignatureRefusal::Unsigned)
    );
}

#[test]
fn streams_are_bounded() {
    let k = key(1);
    let mut link = required(k.clone());
    for link_id in 0..STREAMS_MAX {
        assert_eq!(
            link.check(signed(&k, link_id as u8, NOW).view(), None),
            Ok(Accepted::Signed)
        );
    }
    assert_eq!(
        link.check(signed(&k, STREAMS_MAX as u8, NOW).view(), None),
        Err(SignatureRefusal::StreamsFull)
    );
    // Known streams still work.
    assert_eq!(
        link.check(signed(&k, 0, NOW + 1).view(), None),
        Ok(Accepted::Signed)
    );
}

#[test]
fn outgoing_timestamps_never_go_back() {
    let mut link = LinkSigning::new(key(1), 0, Acceptance::SignedOnly, 1000);
    assert_eq!(link.next_timestamp(None), 1001);
    assert_eq!(link.next_timestamp(None), 1002);
    // The clock moves it forward, never back.
    assert_eq!(link.next_timestamp(Some(5000)), 5000);
    assert_eq!(link.next_timestamp(Some(10)), 5001);
    link.advance_to(4000);
    assert_eq!(link.next_timestamp(None), 5002);
    link.advance_to(9000);
    assert_eq!(link.next_timestamp(None), 9001);
    // 48 bits, saturating: no wrap to zero in 2104.
    let mut end = LinkSigning::new(key(1), 0, Acceptance::SignedOnly, TIMESTAMP_MAX);
    assert_eq!(end.next_timestamp(Some(u64::MAX)), TIMESTAMP_MAX);
}

#[test]
fn key_files_raw_or_hex() {
    let raw: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let k = SigningKey::parse(&raw).unwrap();
    assert_eq!(k.bytes(), &raw);
    let hex = format!("{}\n", k.to_hex());
    assert_eq!(SigningKey::parse(hex.as_bytes()).unwrap(), k);
    assert_eq!(
        SigningKey::parse(k.to_hex().to_uppercase().as_bytes()).unwrap(),
        k
    );
    assert_eq!(
        SigningKey::parse(&raw[..31]),
        Err(KeyError::Size { len: 31 })
    );
    assert_eq!(SigningKey::parse(b""), Err(KeyError::Size { len: 0 }));
    assert_eq!(
        SigningKey::parse(&k.to_hex().as_bytes()[..62]),
        Err(KeyError::NotHex { len: 62 })
    );
    let mut bad = k.to_hex().into_bytes();
    bad[5] = b'g';
    assert_eq!(SigningKey::parse(&bad), Err(KeyError::NotHex { len: 64 }));
    assert_eq!(SigningKey::parse(&[0u8; 32]), Err(KeyError::Zero));
    assert_eq!(
        SigningKey::parse("0".repeat(64).as_bytes()),
        Err(KeyError::Zero)
    );
    // The error says what a key is, and Debug never shows it.
    assert!(KeyError::Size { len: 3 }.to_string().contains("32 bytes"));
    let shown = format!("{k:?}");
    assert!(!shown.contains(&k.to_hex()[..8]), "{shown}");
    assert_eq!(k.fingerprint().len(), 16);
    assert_ne!(k.fingerprint(), key(2).fingerprint());
}

proptest! {
    #[test]
    fn any_bytes_marked_signed_are_judged_without_panicking(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        mavlink2 in any::<bool>(),
        message_id in any::<u32>(),
    ) {
        let mut raw = raw;
        if let Some(flags) = raw.get_mut(2) {
            *flags |= 0x01;
        }
        let mut link = required(key(1));
        let view = FrameView { raw: &raw, mavlink2, system_id: 1, component_id: 1, message_id };
        let verdict = link.check(view, Some(NOW));
        // Nothing random verifies, except RADIO_STATUS/RADIO let through unsigned.
        prop_assert!(verdict.is_err() || UNSIGNED_ACCEPTED_MESSAGES.contains(&message_id));
    }

    #[test]
    fn truncated_signed_frames_never_decode_into_something_that_verifies(cut in 1usize..13) {
        let k = key(1);
        let bytes = FrameEncoder::new(1, 1).encode_signed(&heartbeat(), &k, 0, NOW);
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes[..bytes.len() - cut]);
        // The decoder waits for the rest; whatever comes next is judged as a signature.
        prop_assert!(decoder.poll().is_none());
        decoder.push(&[0u8; 13]);
        let frame = decoder.poll().unwrap().unwrap();
        let mut link = required(k);
        prop_assert_eq!(link.check(frame.view(), None), Err(SignatureRefusal::BadSignature));
    }
}
