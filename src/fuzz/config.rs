//! Files a user writes, and the firmware bridge's wire.
//!
//! `run`: the shipped configuration files (the daemon's three, a ground bridge's) and the
//! HIL starter scenarios, mutated at the byte level and at the TOML level (a value replaced
//! by an awkward number or string, a line dropped or repeated). Checked: no panic; a refusal
//! names the file and says what is wrong; an accepted daemon configuration keeps the limits
//! its checks promise (positive sizes and periods, a ceiling above the floor).
//!
//! `run_bridge_frames`: frames of real bridge messages, mutated, through the protocol's
//! decoder into the daemon's `BridgeLink`. Checked: every decoded message re-encodes to
//! itself; the decoder's counters agree with what it returned; every new e-stop press of
//! the MCU is an event, and every copy of it is acknowledged.

use std::path::Path;
use std::time::{Duration, Instant};

use fwbridge_protocol::{
    Ack, AckResult, AckedKind, CompanionHeartbeat, CompanionLink, EstopSource, FrameDecoder, Hello,
    McuHeartbeat, Message, OutputState, RefuseReason, Role, SwitchState,
};

use super::{Rng, mutate};
use crate::bridge::core::{BridgeEvent, BridgeLink, BridgeLinkOptions};

const DAEMON_FILES: [(&str, &str); 3] = [
    (
        "flight-companion.toml",
        include_str!("../../config/flight-companion.toml"),
    ),
    (
        "raspberry-pi.toml",
        include_str!("../../config/raspberry-pi.toml"),
    ),
    (
        "simulator.toml",
        include_str!("../../config/simulator.toml"),
    ),
];

const GROUND_FILE: &str = "[mqtt]\nhost = \"127.0.0.1\"\nport = 8883\nca_path = \"ca.pem\"\n\
client_cert_path = \"ground.pem\"\nclient_key_path = \"ground.key\"\n[ground]\n\
server_name = \"drone-1\"\ncall_idle_timeout_ms = 60000\nrequest_timeout_ms = 30000\n\
message_bytes_max = 262144\n";

const SCENARIOS: [&str; 4] = [
    include_str!("../../hil/scenarios/01-fly-a-square.toml"),
    include_str!("../../hil/scenarios/05-estop-from-each-trigger-during-a-goto.toml"),
    include_str!("../../hil/scenarios/12-two-operators-racing-for-control.toml"),
    include_str!("../../hil/px4/01-takeoff-goto-land.toml"),
];

/// Replaces one TOML value, drops or repeats one line.
fn mutate_toml(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        return String::new();
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(lines.len());
        match rng.below(4) {
            0 => {
                lines.remove(i);
                if lines.is_empty() {
                    break;
                }
            }
            1 => {
                let copy = lines[i].clone();
                lines.insert(i, copy);
            }
            _ => {
                if let Some((key, _)) = lines[i].split_once('=') {
                    let value = match rng.below(9) {
                        0 => "nan".to_owned(),
                        1 => "inf".to_owned(),
                        2 => "-1".to_owned(),
                        3 => "0".to_owned(),
                        4 => "18446744073709551615".to_owned(),
                        5 => "\"\"".to_owned(),
                        6 => "[]".to_owned(),
                        7 => format!("{}", rng.awkward_f64()),
                        _ => format!("\"{}\"", "x".repeat(rng.below(300))),
                    };
                    lines[i] = format!("{key}= {value}");
                }
            }
        }
    }
    lines.join("\n")
}

fn text(rng: &mut Rng, source: &str) -> String {
    if rng.one_in(3) {
        let mut bytes = source.as_bytes().to_vec();
        mutate(rng, &mut bytes, &[b"= 1\n", b"[vehicle]\n"]);
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        mutate_toml(rng, source)
    }
}

pub fn run(rng: &mut Rng) -> Result<(), String> {
    match rng.below(4) {
        0 | 1 => {
            let (name, source) = *rng.pick(&DAEMON_FILES);
            let text = text(rng, source);
            match crate::config::Config::parse(Path::new(name), &text) {
                Ok(config) => check_config(&config),
                Err(e) => refusal(name, &e.to_string()),
            }
        }
        2 => {
            let text = text(rng, GROUND_FILE);
            match crate::ground::config::GroundConfig::parse(Path::new("ground.toml"), &text) {
                Ok(_) => Ok(()),
                Err(e) => refusal("ground.toml", &e.to_string()),
            }
        }
        _ => {
            let source = *rng.pick(&SCENARIOS);
            let text = text(rng, source);
            match crate::hil::scenario::parse(Path::new("scenario.toml"), &text) {
                Ok(_) => Ok(()),
                Err(e) => refusal("scenario.toml", &e.to_string()),
            }
        }
    }
}

fn refusal(name: &str, message: &str) -> Result<(), String> {
    if !message.contains(name) || message.trim_end().ends_with(':') {
        return Err(format!(
            "a refusal that does not say what is wrong: {message:?}"
        ));
    }
    Ok(())
}

/// What an accepted configuration promises the rest of the daemon.
fn check_config(config: &crate::config::Config) -> Result<(), String> {
    let m = &config.mcp;
    if m.sessions_max == 0 || m.calls_concurrent_max == 0 || m.message_bytes_max == 0 {
        return Err(format!("accepted zero MCP limits: {m:?}"));
    }
    let v = &config.vehicle;
    if v.heartbeat_timeout_ms == 0 || v.stale_after_ms == 0 {
        return Err(format!("accepted zero vehicle timeouts: {v:?}"));
    }
    Ok(())
}

fn random_message(rng: &mut Rng) -> Message {
    let source = *rng.pick(&[EstopSource::Switch, EstopSource::CompanionSilent]);
    let seq = rng.below(8) as u32;
    match rng.below(8) {
        0 => Message::Hello(Hello {
            role: *rng.pick(&[Role::Companion, Role::Mcu]),
            protocol_version: fwbridge_protocol::PROTOCOL_VERSION,
            schema_hash: if rng.one_in(4) {
                rng.next_u64() as u32
            } else {
                fwbridge_protocol::SCHEMA_HASH
            },
            software_version: [1, 0, rng.below(3) as u16],
            watchdog_ms: rng.below(2000) as u32,
        }),
        1 => Message::CompanionHeartbeat(CompanionHeartbeat {
            seq,
            uptime_ms: rng.next_u64() as u32,
            armed: rng.one_in(2),
        }),
        2 => Message::McuHeartbeat(McuHeartbeat {
            seq,
            uptime_ms: rng.next_u64() as u32,
            switch: *rng.pick(&[SwitchState::Unknown, SwitchState::Closed, SwitchState::Open]),
            output: *rng.pick(&[OutputState::Released, OutputState::Asserted]),
            latched: *rng.pick(&[None, Some(source)]),
            companion: *rng.pick(&[
                CompanionLink::NotYetHeard,
                CompanionLink::Healthy,
                CompanionLink::Lost,
            ]),
        }),
        3 | 4 => Message::EstopAsserted { seq, source },
        5 => Message::EstopReleased { seq, source },
        6 => Message::ReleaseRequest { seq },
        _ => Message::Ack(Ack {
            seq,
            kind: *rng.pick(&[AckedKind::ReleaseRequest, AckedKind::EstopAsserted]),
            result: *rng.pick(&[
                AckResult::Accepted,
                AckResult::Refused(RefuseReason::CompanionNotHealthy),
            ]),
        }),
    }
}

pub fn run_bridge_frames(rng: &mut Rng) -> Result<(), String> {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..1 + rng.below(10) {
        let message = random_message(rng);
        let frame = fwbridge_protocol::encode(&message)
            .map_err(|e| format!("{message:?} does not encode: {e:?}"))?;
        stream.extend_from_slice(&frame);
        frames.push(frame.to_vec());
    }
    if rng.below(3) > 0 {
        let donors: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        mutate(rng, &mut stream, &donors);
    }
    let mut now = Instant::now();
    let mut link = BridgeLink::new(
        BridgeLinkOptions {
            heartbeat_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(1 + rng.below(1000) as u64),
            hello_interval: Duration::from_millis(500),
            required: rng.one_in(2),
            software_version: [1, 0, 0],
        },
        now,
    );
    link.handle_connected(now);
    let mut decoder = FrameDecoder::new();
    let (mut ok, mut errors) = (0u32, 0u32);
    let mut last_press: Option<u32> = None;
    let mut last_uptime: Option<u32> = None;
    for &byte in &stream {
        let Some(outcome) = decoder.push(byte) else {
            continue;
        };
        now += Duration::from_millis(rng.below(50) as u64);
        let message = match outcome {
            Ok(message) => message,
            Err(error) => {
                errors += 1;
                link.handle_frame_error(error);
                continue;
            }
        };
        ok += 1;
        let again = fwbridge_protocol::encode(&message)
            .map_err(|e| format!("decoded {message:?} does not encode: {e:?}"))?;
        let mut check = FrameDecoder::new();
        let back: Vec<_> = check.feed(&again).collect();
        if back != [Ok(message)] {
            return Err(format!("{message:?} came back as {back:?}"));
        }
        // A new press must become an event; the previous seq (the MCU's repeats) is
        // acknowledged again but not a new event. A release shares the seq space.
        let new_press = match message {
            Message::EstopAsserted { seq, .. } => (last_press != Some(seq)).then_some(seq),
            _ => None,
        };
        match message {
            Message::EstopAsserted { seq, .. } | Message::EstopReleased { seq, .. } => {
                last_press = Some(seq);
            }
            // A (re)started MCU numbers its events from 1 again.
            Message::Hello(hello) if hello.role == Role::Mcu && hello.is_compatible() => {
                last_press = None;
            }
            // (Not listened to while the versions mismatch.)
            Message::McuHeartbeat(h)
                if link.status(now).state
                    != crate::bridge::status::BridgeState::VersionMismatch =>
            {
                if last_uptime.is_some_and(|u| h.uptime_ms < u) {
                    last_press = None;
                }
                last_uptime = Some(h.uptime_ms);
            }
            _ => {}
        }
        if super::tracing() {
            eprintln!("message {message:?} (state {:?})", link.status(now).state);
        }
        link.handle_message(now, &message);
        // A bridge of another protocol version is not listened to at all (the daemon
        // reports the mismatch and stops: nothing it says can be trusted).
        let mismatch =
            link.status(now).state == crate::bridge::status::BridgeState::VersionMismatch;
        let mut acked = false;
        while let Some(out) = link.poll_transmit(now) {
            fwbridge_protocol::encode(&out)
                .map_err(|e| format!("the link sent {out:?}, which does not encode: {e:?}"))?;
            if let (
                Message::Ack(Ack {
                    kind: AckedKind::EstopAsserted,
                    seq,
                    ..
                }),
                Message::EstopAsserted { seq: pressed, .. },
            ) = (&out, &message)
                && seq == pressed
            {
                acked = true;
            }
        }
        let mut events = Vec::new();
        while let Some(event) = link.poll_event() {
            events.push(event);
        }
        if mismatch {
            continue;
        }
        if matches!(message, Message::EstopAsserted { .. }) && !acked {
            return Err(format!("{message:?} not acknowledged"));
        }
        if let Some(seq) = new_press
            && !events
                .iter()
                .any(|e| matches!(e, BridgeEvent::EstopAsserted { seq: s, .. } if *s == seq))
        {
            return Err(format!("press {seq} is not an event: {events:?}"));
        }
    }
    let stats = decoder.stats();
    if stats.frames_ok != ok || stats.errors() != errors {
        return Err(format!(
            "stats {stats:?} against {ok} frames, {errors} errors"
        ));
    }
    Ok(())
}
