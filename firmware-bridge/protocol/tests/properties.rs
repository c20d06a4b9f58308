//! Property tests of the wire protocol: every message round-trips; any byte stream decodes
//! to valid messages or counted errors, never a panic.

use fwbridge_protocol::*;
use proptest::prelude::*;

fn source() -> impl Strategy<Value = EstopSource> {
    prop_oneof![
        Just(EstopSource::Switch),
        Just(EstopSource::CompanionSilent)
    ]
}

fn refuse_reason() -> impl Strategy<Value = RefuseReason> {
    prop_oneof![
        Just(RefuseReason::VersionMismatch),
        Just(RefuseReason::HelloRequired),
        Just(RefuseReason::NotLatched),
        Just(RefuseReason::SwitchOpen),
        Just(RefuseReason::CompanionNotHealthy),
    ]
}

pub fn message() -> impl Strategy<Value = Message> {
    let hello = (
        prop_oneof![Just(Role::Companion), Just(Role::Mcu)],
        any::<u16>(),
        any::<u32>(),
        any::<[u16; 3]>(),
        any::<u32>(),
    )
        .prop_map(
            |(role, protocol_version, schema_hash, software_version, watchdog_ms)| {
                Message::Hello(Hello {
                    role,
                    protocol_version,
                    schema_hash,
                    software_version,
                    watchdog_ms,
                })
            },
        );
    let companion =
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(seq, uptime_ms, armed)| {
            Message::CompanionHeartbeat(CompanionHeartbeat {
                seq,
                uptime_ms,
                armed,
            })
        });
    let mcu = (
        any::<u32>(),
        any::<u32>(),
        prop_oneof![
            Just(SwitchState::Unknown),
            Just(SwitchState::Closed),
            Just(SwitchState::Open)
        ],
        prop_oneof![Just(OutputState::Released), Just(OutputState::Asserted)],
        proptest::option::of(source()),
        prop_oneof![
            Just(CompanionLink::NotYetHeard),
            Just(CompanionLink::Healthy),
            Just(CompanionLink::Lost)
        ],
    )
        .prop_map(|(seq, uptime_ms, switch, output, latched, companion)| {
            Message::McuHeartbeat(McuHeartbeat {
                seq,
                uptime_ms,
                switch,
                output,
                latched,
                companion,
            })
        });
    let ack = (
        any::<u32>(),
        prop_oneof![
            Just(AckedKind::Hello),
            Just(AckedKind::EstopAsserted),
            Just(AckedKind::EstopReleased),
            Just(AckedKind::ReleaseRequest)
        ],
        prop_oneof![
            Just(AckResult::Accepted),
            refuse_reason().prop_map(AckResult::Refused)
        ],
    )
        .prop_map(|(seq, kind, result)| Message::Ack(Ack { seq, kind, result }));
    prop_oneof![
        hello,
        companion,
        mcu,
        (any::<u32>(), source()).prop_map(|(seq, source)| Message::EstopAsserted { seq, source }),
        (any::<u32>(), source()).prop_map(|(seq, source)| Message::EstopReleased { seq, source }),
        any::<u32>().prop_map(|seq| Message::ReleaseRequest { seq }),
        ack,
    ]
}

fn decode_all(bytes: &[u8]) -> (Vec<Message>, DecoderStats) {
    let mut decoder = FrameDecoder::new();
    let messages = decoder.feed(bytes).filter_map(Result::ok).collect();
    (messages, decoder.stats())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn every_message_round_trips(message in message()) {
        let frame = encode(&message).unwrap();
        prop_assert!(frame.len() <= MAX_FRAME_LEN);
        prop_assert_eq!(frame[0], 0);
        prop_assert_eq!(frame[frame.len() - 1], 0);
        prop_assert!(!frame[1..frame.len() - 1].contains(&0));
        let (messages, stats) = decode_all(&frame);
        prop_assert_eq!(messages, vec![message]);
        prop_assert_eq!(stats.errors(), 0);
    }

    #[test]
    fn glued_frames_all_decode_in_order(messages in proptest::collection::vec(message(), 0..20)) {
        let mut stream = Vec::new();
        for m in &messages {
            // Without the leading delimiter: frames glued end to start still separate.
            stream.extend_from_slice(&encode(m).unwrap()[1..]);
        }
        let (decoded, stats) = decode_all(&stream);
        prop_assert_eq!(decoded, messages);
        prop_assert_eq!(stats.errors(), 0);
    }

    #[test]
    fn random_bytes_never_panic_and_every_frame_is_accounted_for(
        bytes in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        let mut decoder = FrameDecoder::new();
        let results: Vec<_> = decoder.feed(&bytes).collect();
        let stats = decoder.stats();
        let ok = results.iter().filter(|r| r.is_ok()).count() as u32;
        prop_assert_eq!(stats.frames_ok, ok);
        prop_assert_eq!(stats.errors(), results.len() as u32 - ok);
        // A frame completes only at a delimiter.
        prop_assert!(results.len() <= bytes.iter().filter(|&&b| b == 0).count());
    }

    #[test]
    fn garbage_before_a_frame_costs_at_most_one_error(
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
        message in message(),
    ) {
        let mut stream = garbage.clone();
        stream.extend_from_slice(&encode(&message).unwrap());
        let (decoded, stats) = decode_all(&stream);
        // The frame's leading delimiter resynchronises: the message itself always survives.
        prop_assert_eq!(decoded.last(), Some(&message));
        prop_assert!(stats.errors() as usize <= garbage.iter().filter(|&&b| b == 0).count() + 1);
    }

    #[test]
    fn a_truncated_frame_is_an_error_and_the_next_frame_survives(
        first in message(),
        second in message(),
        cut in 1usize..MAX_FRAME_LEN,
    ) {
        let a = encode(&first).unwrap();
        let cut = cut.min(a.len() - 2).max(1);
        let mut stream = a[..cut].to_vec();
        stream.extend_from_slice(&encode(&second).unwrap());
        let (decoded, stats) = decode_all(&stream);
        prop_assert_eq!(decoded, vec![second]);
        prop_assert!(stats.errors() <= 1);
    }

    #[test]
    fn a_bit_flip_is_detected_or_harmless(message in message(), bit in 0usize..(8 * MAX_FRAME_LEN)) {
        let mut frame = encode(&message).unwrap().to_vec();
        let bit = bit % (8 * frame.len());
        frame[bit / 8] ^= 1 << (bit % 8);
        let mut decoder = FrameDecoder::new();
        let results: Vec<_> = decoder.feed(&frame).collect();
        // A single flipped bit never yields a *different* valid message: the CRC catches it
        // (a flip in a delimiter only splits or merges frames, which then fail their checks).
        for decoded in results.iter().flatten() {
            prop_assert_eq!(decoded, &message);
        }
    }
}

#[test]
fn the_largest_message_fits() {
    let largest = [
        Message::Hello(Hello {
            role: Role::Companion,
            protocol_version: u16::MAX,
            schema_hash: u32::MAX,
            software_version: [u16::MAX; 3],
            watchdog_ms: u32::MAX,
        }),
        Message::McuHeartbeat(McuHeartbeat {
            seq: u32::MAX,
            uptime_ms: u32::MAX,
            switch: SwitchState::Open,
            output: OutputState::Asserted,
            latched: Some(EstopSource::CompanionSilent),
            companion: CompanionLink::Lost,
        }),
    ];
    for m in largest {
        let frame = encode(&m).unwrap();
        assert!(frame.len() <= MAX_FRAME_LEN, "{m:?}: {} bytes", frame.len());
    }
}

/// The bytes of a few messages, fixed. If this fails you changed the wire format: update
/// `SCHEMA` (and so `SCHEMA_HASH`), bump `PROTOCOL_VERSION` if an old peer would misread the
/// new bytes, describe the change in PROTOCOL.md, and only then update these bytes.
#[test]
fn golden_bytes_pin_the_wire_format() {
    let cases: [(Message, &str); 4] = [
        (
            Message::Hello(Hello::this_build(Role::Mcu, [0, 1, 0], 500)),
            "hello",
        ),
        (
            Message::CompanionHeartbeat(CompanionHeartbeat {
                seq: 7,
                uptime_ms: 1000,
                armed: true,
            }),
            "companion heartbeat",
        ),
        (
            Message::EstopAsserted {
                seq: 1,
                source: EstopSource::Switch,
            },
            "estop",
        ),
        (
            Message::Ack(Ack {
                seq: 3,
                kind: AckedKind::ReleaseRequest,
                result: AckResult::Refused(RefuseReason::SwitchOpen),
            }),
            "ack",
        ),
    ];
    let got: Vec<String> = cases
        .iter()
        .map(|(m, name)| {
            let hex: String = encode(m)
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{name}: {hex}")
        })
        .collect();
    let want = GOLDEN.lines().collect::<Vec<_>>();
    assert_eq!(
        got, want,
        "wire format changed; see this test's doc comment"
    );
}

const GOLDEN: &str = "\
hello: 00010801019785d7a005020105f40337b900
companion heartbeat: 00080107e80701566a00
estop: 0003030103fda600
ack: 00080603030103571d00";

#[test]
fn the_schema_hash_is_pinned() {
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!(SCHEMA_HASH, 0x5415_c297, "schema hash {SCHEMA_HASH:#010x}");
}
