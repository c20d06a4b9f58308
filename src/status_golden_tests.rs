//! The `get_status` JSON, pinned: every key and every string value, for an ArduCopter and a
//! PX4 vehicle in several states and for the report before any vehicle was heard. The typed
//! facts (landed state, flight mode, fix type, system status) serialise through serde to
//! exactly these strings; a change here changes what every ground client reads.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::link::MavHeader;
use crate::link::dialect::*;
use crate::status::StatusReport;
use crate::vehicle::state::{VehicleState, VehicleStateOptions};

/// `path: type` for every value, and `path = "string"` for every string.
fn flatten(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if map.is_empty() {
                out.push(format!("{path}: {{}}"));
            }
            for (key, v) in map {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                flatten(v, &p, out);
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push(format!("{path}: []"));
            }
            for (i, v) in items.iter().enumerate() {
                flatten(v, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => out.push(format!("{path} = {s:?}")),
        Value::Number(_) => out.push(format!("{path}: number")),
        Value::Bool(b) => out.push(format!("{path} = {b}")),
        Value::Null => out.push(format!("{path}: null")),
    }
}

/// The vehicle part of the report, flattened (the daemon's own parts have their own tests).
fn vehicle_lines(report: &StatusReport) -> String {
    let value = serde_json::to_value(report).expect("serialises");
    let mut lines = Vec::new();
    flatten(&value["vehicle"], "vehicle", &mut lines);
    for key in ["simulated", "autopilot_seen"] {
        flatten(&value[key], key, &mut lines);
    }
    // Its value changes with every build.
    assert!(value["daemon_version"].is_string());
    lines.join("\n")
}

fn header() -> MavHeader {
    MavHeader {
        system_id: 1,
        component_id: 1,
        sequence: 0,
    }
}

fn heartbeat(autopilot: MavAutopilot, base: u8, custom: u32, status: MavState) -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode: custom,
        mavtype: MavType::MAV_TYPE_QUADROTOR,
        autopilot,
        base_mode: MavModeFlag::from_bits_retain(base),
        system_status: status,
        mavlink_version: 3,
    })
}

fn feed(state: &mut VehicleState, now: Instant, messages: &[MavMessage]) {
    for m in messages {
        state.handle_message(now, &header(), m);
    }
}

fn telemetry(landed: MavLandedState, fix: GpsFixType) -> Vec<MavMessage> {
    vec![
        MavMessage::EXTENDED_SYS_STATE(EXTENDED_SYS_STATE_DATA {
            vtol_state: MavVtolState::MAV_VTOL_STATE_UNDEFINED,
            landed_state: landed,
        }),
        MavMessage::GPS_RAW_INT(GPS_RAW_INT_DATA {
            fix_type: fix,
            satellites_visible: 12,
            eph: 80,
            ..GPS_RAW_INT_DATA::DEFAULT
        }),
        MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
            lat: -353632610,
            lon: 1491652300,
            alt: 594_000,
            relative_alt: 10_000,
            vx: 100,
            vy: -50,
            vz: 0,
            hdg: 9000,
            time_boot_ms: 1,
        }),
        MavMessage::HOME_POSITION(HOME_POSITION_DATA {
            latitude: -353632610,
            longitude: 1491652300,
            altitude: 584_000,
            ..HOME_POSITION_DATA::DEFAULT
        }),
        MavMessage::SYS_STATUS(SYS_STATUS_DATA {
            voltage_battery: 12_600,
            current_battery: 1_000,
            battery_remaining: 80,
            ..SYS_STATUS_DATA::DEFAULT
        }),
        MavMessage::STATUSTEXT(STATUSTEXT_DATA {
            severity: MavSeverity::MAV_SEVERITY_WARNING,
            text: "PreArm: test".into(),
            ..STATUSTEXT_DATA::DEFAULT
        }),
    ]
}

fn options() -> VehicleStateOptions {
    VehicleStateOptions {
        stale_after: Duration::from_secs(3),
        heartbeat_timeout: Duration::from_secs(3),
    }
}

#[test]
fn get_status_keys_and_strings_are_pinned() {
    let t0 = Instant::now();
    let mut cases = Vec::new();

    // Before anything was heard (the report the MCP side starts from). Its flight mode is
    // `UNKNOWN`, as a vehicle state's before its first heartbeat: the one spelling of the
    // typed `ModeName` (this report alone used to say `unknown`).
    cases.push((
        "without a vehicle",
        vehicle_lines(&StatusReport::without_vehicle()),
    ));

    // An ArduCopter armed in GUIDED, flying, 3D fix.
    let mut ardupilot = VehicleState::new(options());
    feed(
        &mut ardupilot,
        t0,
        &[heartbeat(
            MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            1 | 128,
            4,
            MavState::MAV_STATE_ACTIVE,
        )],
    );
    feed(
        &mut ardupilot,
        t0,
        &telemetry(
            MavLandedState::MAV_LANDED_STATE_IN_AIR,
            GpsFixType::GPS_FIX_TYPE_3D_FIX,
        ),
    );
    cases.push((
        "ArduCopter GUIDED in the air",
        vehicle_lines(&StatusReport::from_snapshot(ardupilot.snapshot(t0))),
    ));
    // The same vehicle 5 s later: every group stale.
    cases.push((
        "ArduCopter stale",
        vehicle_lines(&StatusReport::from_snapshot(
            ardupilot.snapshot(t0 + Duration::from_secs(5)),
        )),
    ));

    // A PX4 disarmed in AUTO.LOITER on the ground, RTK fix, in standby; then taking off,
    // landing, and with other fix types and states.
    let px4_loiter = (4u32 << 16) | (3u32 << 24);
    let mut px4 = VehicleState::new(options());
    feed(
        &mut px4,
        t0,
        &[heartbeat(
            MavAutopilot::MAV_AUTOPILOT_PX4,
            1,
            px4_loiter,
            MavState::MAV_STATE_STANDBY,
        )],
    );
    feed(
        &mut px4,
        t0,
        &telemetry(
            MavLandedState::MAV_LANDED_STATE_ON_GROUND,
            GpsFixType::GPS_FIX_TYPE_RTK_FIXED,
        ),
    );
    cases.push((
        "PX4 AUTO.LOITER on the ground",
        vehicle_lines(&StatusReport::from_snapshot(px4.snapshot(t0))),
    ));
    let more = [
        (
            MavLandedState::MAV_LANDED_STATE_TAKEOFF,
            GpsFixType::GPS_FIX_TYPE_2D_FIX,
            MavState::MAV_STATE_CRITICAL,
            1u32 << 16,
        ),
        (
            MavLandedState::MAV_LANDED_STATE_LANDING,
            GpsFixType::GPS_FIX_TYPE_NO_FIX,
            MavState::MAV_STATE_EMERGENCY,
            3u32 << 16,
        ),
        (
            MavLandedState::MAV_LANDED_STATE_UNDEFINED,
            GpsFixType::GPS_FIX_TYPE_DGPS,
            MavState::MAV_STATE_BOOT,
            (4u32 << 16) | (5u32 << 24),
        ),
        (
            MavLandedState::MAV_LANDED_STATE_IN_AIR,
            GpsFixType::GPS_FIX_TYPE_RTK_FLOAT,
            MavState::MAV_STATE_CALIBRATING,
            0xffff,
        ),
        (
            MavLandedState::MAV_LANDED_STATE_IN_AIR,
            GpsFixType::GPS_FIX_TYPE_STATIC,
            MavState::MAV_STATE_POWEROFF,
            2u32 << 16,
        ),
        (
            MavLandedState::MAV_LANDED_STATE_IN_AIR,
            GpsFixType::GPS_FIX_TYPE_PPP,
            MavState::MAV_STATE_FLIGHT_TERMINATION,
            6u32 << 16,
        ),
        (
            MavLandedState::MAV_LANDED_STATE_IN_AIR,
            GpsFixType::GPS_FIX_TYPE_NO_GPS,
            MavState::MAV_STATE_UNINIT,
            (4u32 << 16) | (2u32 << 24),
        ),
    ];
    for (landed, fix, status, custom) in more {
        feed(
            &mut px4,
            t0,
            &[heartbeat(
                MavAutopilot::MAV_AUTOPILOT_PX4,
                1 | 128,
                custom,
                status,
            )],
        );
        feed(&mut px4, t0, &telemetry(landed, fix));
        let snapshot = px4.snapshot(t0);
        cases.push((
            "PX4 (mode, landed, fix, status)",
            format!(
                "{} {} {} {}",
                snapshot.mode.flight_mode,
                serde_json::to_value(snapshot.mode.landed_state).unwrap(),
                serde_json::to_value(snapshot.gps.fix_type).unwrap(),
                serde_json::to_value(snapshot.mode.system_status).unwrap()
            ),
        ));
    }
    // A mode without the custom-mode flag: not decoded.
    feed(
        &mut px4,
        t0,
        &[heartbeat(
            MavAutopilot::MAV_AUTOPILOT_PX4,
            0,
            7,
            MavState::MAV_STATE_ACTIVE,
        )],
    );
    cases.push((
        "PX4 without the custom-mode flag",
        px4.snapshot(t0).mode.flight_mode.to_string(),
    ));

    let got: String = cases
        .iter()
        .map(|(name, lines)| format!("## {name}\n{lines}\n"))
        .collect();
    let golden = include_str!("status_golden.txt");
    if got != golden {
        let path = std::env::temp_dir().join("status_golden.got.txt");
        let _ = std::fs::write(&path, &got);
        panic!(
            "the get_status JSON changed; what it is now is in {} (diff it against \
             src/status_golden.txt)",
            path.display()
        );
    }
}
