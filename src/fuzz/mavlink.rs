//! The autopilot link's way in: bytes → `FrameDecoder` → `VehicleState` → its view.
//!
//! Input: one to twelve real MAVLink 2 frames (messages the daemon reads, with random field
//! values, from the autopilot's ids or another system's), often mutated as a noisy radio
//! would, pushed in random chunks. Checked after every input:
//! - every byte pushed is in a decoded frame, in `garbage_bytes` or still buffered, and the
//!   buffer never holds more than `BUFFER_LEN_MAX`;
//! - the counters agree with what `poll` returned;
//! - every decoded message re-encodes to a frame that decodes to the same bytes;
//! - the vehicle state never reports what its checks must never see: a position outside
//!   the globe or not finite, a battery percentage outside 0..=100, a non-finite velocity;
//!   its snapshot always serialises.

use std::time::{Duration, Instant};

use mavlink::{MavlinkVersion, Message};

use super::{Rng, mutate};
use crate::link::MavMessage;
use crate::link::frame::{BUFFER_LEN_MAX, FrameDecoder, FrameEncoder};
use crate::vehicle::state::{VehicleState, VehicleStateOptions};

/// Messages the vehicle state and the link read (and a few it must ignore).
const IDS: &[u32] = &[
    0,   // HEARTBEAT
    1,   // SYS_STATUS
    2,   // SYSTEM_TIME
    22,  // PARAM_VALUE
    24,  // GPS_RAW_INT
    30,  // ATTITUDE
    32,  // LOCAL_POSITION_NED
    33,  // GLOBAL_POSITION_INT
    42,  // MISSION_CURRENT
    74,  // VFR_HUD
    77,  // COMMAND_ACK
    108, // SIM_STATE
    109, // RADIO_STATUS
    147, // BATTERY_STATUS
    148, // AUTOPILOT_VERSION
    164, // SIMSTATE
    193, // EKF_STATUS_REPORT
    230, // ESTIMATOR_STATUS
    242, // HOME_POSITION
    245, // EXTENDED_SYS_STATE
    253, // STATUSTEXT
];

/// A message of `id` with random field values, when the dialect knows `id` and accepts the
/// bytes (enums refuse values they do not define).
fn random_message(rng: &mut Rng) -> Option<MavMessage> {
    let id = if rng.one_in(8) {
        rng.below(1 << 16) as u32
    } else {
        *rng.pick(IDS)
    };
    let len = rng.below(256);
    let mut payload = rng.bytes(len);
    for _ in 0..4 {
        if let Ok(message) = MavMessage::parse(MavlinkVersion::V2, id, &payload) {
            return Some(message);
        }
        // Zeros are valid for every enum: retry with fewer random bytes.
        let keep = payload.len() / 2;
        payload.truncate(keep);
    }
    MavMessage::default_message_from_id(id)
}

pub fn run(rng: &mut Rng) -> Result<(), String> {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..1 + rng.below(12) {
        let Some(message) = random_message(rng) else {
            continue;
        };
        let (system, component) = match rng.below(4) {
            0 => (255, 190),
            1 => (rng.below(256) as u8, rng.below(256) as u8),
            _ => (1, 1),
        };
        let frame = FrameEncoder::new(system, component).encode(&message);
        stream.extend_from_slice(&frame);
        frames.push(frame);
    }
    if rng.below(3) > 0 {
        let donors: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        mutate(rng, &mut stream, &donors);
    }
    if rng.one_in(50) {
        // More than the decoder keeps, in one push.
        let n = BUFFER_LEN_MAX + rng.below(4096);
        let extra = rng.bytes(n);
        stream.extend_from_slice(&extra);
    }

    let mut decoder = FrameDecoder::new();
    let mut state = VehicleState::new(VehicleStateOptions {
        stale_after: Duration::from_millis(1 + rng.below(5000) as u64),
        heartbeat_timeout: Duration::from_millis(1 + rng.below(5000) as u64),
    });
    let mut now = Instant::now();
    let (mut decoded_bytes, mut decoded, mut errors) = (0u64, 0u64, 0u64);
    let mut rest = stream.as_slice();
    while !rest.is_empty() {
        let n = (1 + rng.below(300)).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        decoder.push(chunk);
        if decoder.buffered_len() > BUFFER_LEN_MAX {
            return Err(format!("{} bytes buffered", decoder.buffered_len()));
        }
        while let Some(outcome) = decoder.poll() {
            let frame = match outcome {
                Ok(frame) => frame,
                Err(_) => {
                    errors += 1;
                    continue;
                }
            };
            decoded += 1;
            decoded_bytes += frame.raw.len() as u64;
            check_round_trip(&frame.message)?;
            now += Duration::from_millis(rng.below(400) as u64);
            state.handle_message(now, &frame.header, &frame.message);
            check_state(&state, now)?;
        }
    }
    let c = decoder.counters();
    let pushed = stream.len() as u64;
    let accounted = decoded_bytes + c.garbage_bytes + decoder.buffered_len() as u64;
    if accounted != pushed {
        return Err(format!(
            "{pushed} bytes pushed, {accounted} accounted for ({decoded_bytes} in frames, {} \
             garbage, {} buffered)",
            c.garbage_bytes,
            decoder.buffered_len()
        ));
    }
    if c.frames != decoded || c.crc_errors + c.parse_errors + c.unknown_messages != errors {
        return Err(format!(
            "counters {c:?} against {decoded} frames and {errors} errors returned"
        ));
    }
    // Time passing alone (everything goes stale) must keep the state sound too.
    check_state(&state, now + Duration::from_secs(3600))
}

/// A decoded message encodes to a frame that decodes to a message encoding to the same
/// bytes (bytes, not `==`: a NaN field is not equal to itself).
fn check_round_trip(message: &MavMessage) -> Result<(), String> {
    let first = FrameEncoder::new(1, 1).encode(message);
    let mut decoder = FrameDecoder::new();
    decoder.push(&first);
    match decoder.poll() {
        Some(Ok(again)) => {
            let second = FrameEncoder::new(1, 1).encode(&again.message);
            if first != second {
                return Err(format!(
                    "{} re-encoded differently: {first:02x?} then {second:02x?}",
                    message.message_name()
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "{} did not decode from its own encoding: {other:?}",
            message.message_name()
        )),
    }
}

fn check_state(state: &VehicleState, now: Instant) -> Result<(), String> {
    let view = state.view(now);
    if let Some(p) = &view.position {
        let lat_ok = p.latitude_deg.is_finite() && p.latitude_deg.abs() <= 90.0;
        let lon_ok = p.longitude_deg.is_finite() && p.longitude_deg.abs() <= 180.0;
        if !lat_ok || !lon_ok || !p.altitude_m.is_finite() {
            return Err(format!("the view's position is not on the globe: {p:?}"));
        }
    }
    if let Some(b) = view.battery_remaining_percent
        && !(0.0..=100.0).contains(&b)
    {
        return Err(format!("battery remaining {b} %"));
    }
    if view.velocity_ned_m_s.iter().any(|v| !v.is_finite()) {
        return Err(format!("velocity {:?}", view.velocity_ned_m_s));
    }
    serde_json::to_string(&state.snapshot(now))
        .map(drop)
        .map_err(|e| format!("the snapshot does not serialise: {e}"))
}
