#![allow(deprecated)] // ground stations still send REQUEST_DATA_STREAM and MAV_FRAME_GLOBAL_INT

use super::*;
use crate::config::{EnvelopeConfig, GcsEndpointConfig, GcsRole};
use crate::link::dialect::*;
use crate::safety::Landed;
use crate::vehicle::modes::FlightMode;

const GCS: usize = 0;
const MONITOR: usize = 1;
const READER: usize = 2;

fn endpoint(name: &str, role: GcsRole, authority: Option<Role>) -> GcsEndpointConfig {
    GcsEndpointConfig {
        name: name.into(),
        link: "udpin:127.0.0.1:0".parse().unwrap(),
        role,
        authority,
    }
}

fn router() -> Router {
    Router::new(
        &[
            endpoint("qgc", GcsRole::Gcs, None),
            endpoint("watch", GcsRole::Monitor, None),
            endpoint("reader", GcsRole::Gcs, Some(Role::ReadOnly)),
        ],
        Whitelist::new(&EnvelopeConfig::default()),
    )
}

fn flying() -> VehicleView {
    VehicleView {
        autopilot: Some(AutopilotKind::Ardupilot),
        heartbeat_fresh: true,
        armed: true,
        landed: Landed::InAir,
        mode: Some(FlightMode::Guided),
        home_altitude_msl_m: Some(100.0),
        ..VehicleView::UNKNOWN
    }
}

fn gcs_header() -> MavHeader {
    MavHeader {
        system_id: 255,
        component_id: 190,
        sequence: 7,
    }
}

fn facts(view: &VehicleView) -> Facts<'_> {
    Facts {
        view,
        vehicle_system_id: 1,
        estop_latched: false,
        lease_holder: None,
    }
}

#[allow(deprecated)]
fn reposition(lat: f64, lon: f64, alt: f32) -> MavMessage {
    MavMessage::COMMAND_INT(COMMAND_INT_DATA {
        target_system: 1,
        target_component: 1,
        frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
        command: MavCmd::MAV_CMD_DO_REPOSITION,
        param1: -1.0,
        x: (lat * 1e7) as i32,
        y: (lon * 1e7) as i32,
        z: alt,
        ..Default::default()
    })
}

fn command_long(command: MavCmd, p: [f32; 7]) -> MavMessage {
    MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
        target_system: 1,
        target_component: 1,
        command,
        param1: p[0],
        param2: p[1],
        param3: p[2],
        param4: p[3],
        param5: p[4],
        param6: p[5],
        param7: p[6],
        confirmation: 0,
    })
}

fn decide(r: &mut Router, endpoint: usize, m: &MavMessage, f: &Facts<'_>) -> Decision {
    r.handle_from_endpoint(Instant::now(), endpoint, &gcs_header(), m, f)
}

fn refusal(d: &Decision) -> &str {
    match d {
        Decision::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn commands_become_actions_of_the_control_path() {
    let view = flying();
    let f = facts(&view);
    let mut r = router();
    let cases: Vec<(MavMessage, Action)> = vec![
        (
            reposition(47.1, 8.2, 20.0),
            Action::Goto {
                latitude_deg: 47.1,
                longitude_deg: 8.2,
                altitude_m: 20.0,
                speed_m_s: None,
            },
        ),
        (
            command_long(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            Action::Arm,
        ),
        (
            command_long(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 12.0],
            ),
            Action::Takeoff { altitude_m: 12.0 },
        ),
        (
            command_long(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]),
            Action::Land,
        ),
        (
            command_long(MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH, [0.0; 7]),
            Action::ReturnHome,
        ),
        (
            command_long(
                MavCmd::MAV_CMD_DO_CHANGE_SPEED,
                [1.0, 3.0, -1.0, 0.0, 0.0, 0.0, 0.0],
            ),
            Action::SetSpeed { speed_m_s: 3.0 },
        ),
        (
            // ArduCopter LOITER (5) as DO_SET_MODE: hold.
            command_long(
                MavCmd::MAV_CMD_DO_SET_MODE,
                [1.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            Action::Hold,
        ),
        (
            MavMessage::MISSION_ITEM_INT(MISSION_ITEM_INT_DATA {
                target_system: 1,
                target_component: 1,
                frame: MavFrame::MAV_FRAME_GLOBAL_INT,
                command: MavCmd::MAV_CMD_NAV_WAYPOINT,
                current: 2,
                x: 471_000_000,
                y: 82_000_000,
                z: 130.0,
                ..Default::default()
            }),
            Action::Goto {
                latitude_deg: 47.1,
                longitude_deg: 8.2,
                altitude_m: 30.0,
                speed_m_s: None,
            },
        ),
    ];
    for (message, want) in cases {
        match decide(&mut r, GCS, &message, &f) {
            Decision::Command { action, .. } => assert_eq!(action, want, "{message:?}"),
            other => panic!("{message:?}: {other:?}"),
        }
    }
    assert_eq!(r.counters(GCS).commands, 8);
}

#[test]
fn the_latch_the_lease_and_the_authority_come_first() {
    let view = flying();
    let goto = reposition(47.1, 8.2, 20.0);
    let mut r = router();
    let latched = Facts {
        estop_latched: true,
        ..facts(&view)
    };
    let why = refusal(&decide(&mut r, GCS, &goto, &latched)).to_owned();
    assert!(why.contains("emergency stop is latched"), "{why}");
    let leased = Facts {
        lease_holder: Some("alice"),
        ..facts(&view)
    };
    let why = refusal(&decide(&mut r, GCS, &goto, &leased)).to_owned();
    assert!(why.contains("alice holds the control lease"), "{why}");
    let why = refusal(&decide(&mut r, READER, &goto, &facts(&view))).to_owned();
    assert!(why.contains("need") && why.contains("OPERATOR"), "{why}");
    // Every refusal of a command is answered with a denied ACK.
    match decide(&mut r, GCS, &goto, &latched) {
        Decision::Refused {
            reply: Some(reply),
            notify: true,
            ..
        } => match reply.message(false) {
            MavMessage::COMMAND_ACK(a) => {
                assert_eq!(a.result, MavResult::MAV_RESULT_DENIED);
                assert_eq!((a.target_system, a.target_component), (255, 190));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_monitor_passes_nothing_in() {
    let view = flying();
    let mut r = router();
    for m in [
        reposition(47.1, 8.2, 20.0),
        command_long(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]),
        MavMessage::PARAM_REQUEST_LIST(PARAM_REQUEST_LIST_DATA {
            target_system: 1,
            target_component: 1,
        }),
    ] {
        let why = refusal(&decide(&mut r, MONITOR, &m, &facts(&view))).to_owned();
        assert!(
            why.contains("monitor endpoint") && why.contains("role = \"gcs\""),
            "{why}"
        );
    }
    // Its heartbeat is absorbed: it is still routed to.
    let hb = MavMessage::HEARTBEAT(HEARTBEAT_DATA::default());
    assert_eq!(
        decide(&mut r, MONITOR, &hb, &facts(&view)),
        Decision::Absorbed
    );
    assert_eq!(r.seen(MONITOR), &[(255, 190)]);
}

#[test]
fn what_is_not_a_flight_command_passes_only_the_whitelist() {
    let view = flying();
    let f = facts(&view);
    let mut r = router();
    let list = MavMessage::PARAM_REQUEST_LIST(PARAM_REQUEST_LIST_DATA {
        target_system: 1,
        target_component: 1,
    });
    assert_eq!(decide(&mut r, GCS, &list, &f), Decision::Forward);
    assert_eq!(decide(&mut r, READER, &list, &f), Decision::Forward);
    // A parameter write needs ADMIN (and the vehicle disarmed on the ground).
    let set = MavMessage::PARAM_SET(PARAM_SET_DATA {
        target_system: 1,
        target_component: 1,
        param_id: "WPNAV_SPEED".into(),
        param_value: 500.0,
        param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
    });
    let why = refusal(&decide(&mut r, GCS, &set, &f)).to_owned();
    assert!(why.contains("ADMIN"), "{why}");
    // Streamed setpoints, stick input and missions: refused, saying what is allowed.
    let setpoint = MavMessage::SET_POSITION_TARGET_GLOBAL_INT(Default::default());
    let why = refusal(&decide(&mut r, GCS, &setpoint, &f)).to_owned();
    assert!(
        why.contains("bypass") && why.contains(ALLOWED_SUMMARY),
        "{why}"
    );
    let mission = MavMessage::MISSION_COUNT(MISSION_COUNT_DATA {
        target_system: 1,
        target_component: 1,
        count: 3,
        ..Default::default()
    });
    assert!(refusal(&decide(&mut r, GCS, &mission, &f)).contains("missions"));
    // Dangerous commands: the whitelist's own reason.
    let reboot = command_long(
        MavCmd::MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN,
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    assert!(refusal(&decide(&mut r, GCS, &reboot, &f)).contains("never sent"));
    // Forced arming and the pilot's modes.
    let force = command_long(
        MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
        [0.0, 21196.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    assert!(refusal(&decide(&mut r, GCS, &force, &f)).contains("forced"));
    let stabilize = command_long(
        MavCmd::MAV_CMD_DO_SET_MODE,
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    assert!(refusal(&decide(&mut r, GCS, &stabilize, &f)).contains("RC pilot"));
}

#[test]
fn the_vehicles_id_and_other_systems_are_refused() {
    let view = flying();
    let f = facts(&view);
    let mut r = router();
    let land = command_long(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]);
    let spoof = MavHeader {
        system_id: 1,
        component_id: 1,
        sequence: 0,
    };
    let d = r.handle_from_endpoint(Instant::now(), GCS, &spoof, &land, &f);
    assert!(refusal(&d).contains("the vehicle's own id"));
    assert!(r.seen(GCS).is_empty(), "a spoofed id is not learnt");
    let mut other = command_long(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]);
    if let MavMessage::COMMAND_LONG(c) = &mut other {
        c.target_system = 42;
    }
    assert!(refusal(&decide(&mut r, GCS, &other, &f)).contains("system 42"));
}

#[test]
fn refusals_of_telemetry_requests_are_told_within_a_budget() {
    let view = flying();
    let f = facts(&view);
    let mut r = router();
    let stream = MavMessage::REQUEST_DATA_STREAM(REQUEST_DATA_STREAM_DATA {
        target_system: 1,
        target_component: 1,
        req_stream_id: MavDataStream::MAV_DATA_STREAM_ALL,
        req_message_rate: 4,
        start_stop: 1,
    });
    let t0 = Instant::now();
    let notified = |d: Decision| matches!(d, Decision::Refused { notify: true, .. });
    let h = gcs_header();
    assert!(notified(r.handle_from_endpoint(t0, GCS, &h, &stream, &f)));
    assert!(!notified(r.handle_from_endpoint(
        t0 + Duration::from_secs(1),
        GCS,
        &h,
        &stream,
        &f
    )));
    assert!(notified(r.handle_from_endpoint(
        t0 + REFUSAL_NOTICE_INTERVAL,
        GCS,
        &h,
        &stream,
        &f
    )));
    assert_eq!(r.counters(GCS).refused, 3);
}

/// mavlink-router's `Endpoint::accept_msg`: broadcast to all, targeted only where heard.
#[test]
fn routing_by_target_as_mavlink_router() {
    let view = flying();
    let f = facts(&view);
    let mut r = router();
    let hb = MavMessage::HEARTBEAT(HEARTBEAT_DATA::default());
    r.handle_from_endpoint(Instant::now(), GCS, &gcs_header(), &hb, &f);
    let mut out = Vec::new();
    r.route_from_autopilot(&hb, &mut out);
    assert_eq!(out, [GCS, MONITOR, READER], "untargeted: every endpoint");
    let ack = |s: u8, c: u8| {
        MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
            target_system: s,
            target_component: c,
            ..Default::default()
        })
    };
    r.route_from_autopilot(&ack(255, 190), &mut out);
    assert_eq!(out, [GCS], "to the endpoint that was heard as 255/190");
    r.route_from_autopilot(&ack(255, 0), &mut out);
    assert_eq!(out, [GCS], "component 0: any component of the system");
    r.route_from_autopilot(&ack(1, 191), &mut out);
    assert!(
        out.is_empty(),
        "the daemon's own ACKs reach no ground station"
    );
    r.route_from_autopilot(&ack(0, 0), &mut out);
    assert_eq!(out.len(), 3, "target system 0 is a broadcast");
    r.handle_disconnected(GCS);
    r.route_from_autopilot(&ack(255, 190), &mut out);
    assert!(out.is_empty(), "forgotten when its connection ended");
}

#[test]
fn statustext_is_chunked_as_mavlink_2_long_texts() {
    let text = "x".repeat(120);
    let chunks = statustext(9, &text);
    assert_eq!(chunks.len(), 3);
    for (i, m) in chunks.iter().enumerate() {
        let MavMessage::STATUSTEXT(s) = m else {
            panic!()
        };
        assert_eq!((s.id, usize::from(s.chunk_seq)), (9, i));
    }
}
