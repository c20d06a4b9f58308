use super::*;
use crate::link::dialect::{
    COMMAND_INT_DATA, COMMAND_LONG_DATA, HEARTBEAT_DATA, MavModeFlag, MavParamType, MavState,
    MavType, PARAM_REQUEST_READ_DATA, PARAM_SET_DATA, SET_POSITION_TARGET_LOCAL_NED_DATA,
};
use mavlink::types::CharArray;
use proptest::prelude::*;

fn wl() -> Whitelist {
    Whitelist::new(&EnvelopeConfig::default())
}

const GROUND: VehicleView = VehicleView {
    armed: false,
    landed: Landed::OnGround,
    autopilot: Some(AutopilotKind::Ardupilot),
    home_altitude_msl_m: None,
    ..VehicleView::UNKNOWN
};
const ARMED_GROUND: VehicleView = VehicleView {
    armed: true,
    landed: Landed::OnGround,
    autopilot: Some(AutopilotKind::Ardupilot),
    home_altitude_msl_m: None,
    ..VehicleView::UNKNOWN
};
const AIR: VehicleView = VehicleView {
    armed: true,
    landed: Landed::InAir,
    autopilot: Some(AutopilotKind::Ardupilot),
    home_altitude_msl_m: None,
    ..VehicleView::UNKNOWN
};

const PX4_AIR: VehicleView = VehicleView {
    armed: true,
    landed: Landed::InAir,
    autopilot: Some(AutopilotKind::Px4),
    home_altitude_msl_m: Some(488.0),
    ..VehicleView::UNKNOWN
};

fn long(command: MavCmd, params: [f32; 7]) -> MavMessage {
    let [param1, param2, param3, param4, param5, param6, param7] = params;
    MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
        param1,
        param2,
        param3,
        param4,
        param5,
        param6,
        param7,
        command,
        target_system: 1,
        target_component: 1,
        confirmation: 0,
    })
}

fn param_set(name: &str, value: f32) -> MavMessage {
    let mut id = [0u8; 16];
    id[..name.len()].copy_from_slice(name.as_bytes());
    MavMessage::PARAM_SET(PARAM_SET_DATA {
        param_value: value,
        target_system: 1,
        target_component: 1,
        param_id: CharArray::new(id),
        param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
    })
}

fn velocity(vx: f32, vy: f32, vz: f32) -> MavMessage {
    MavMessage::SET_POSITION_TARGET_LOCAL_NED(SET_POSITION_TARGET_LOCAL_NED_DATA {
        vx,
        vy,
        vz,
        type_mask: PositionTargetTypemask::from_bits_truncate(0b0000_1101_1100_0111),
        coordinate_frame: MavFrame::MAV_FRAME_LOCAL_NED,
        target_system: 1,
        target_component: 1,
        ..SET_POSITION_TARGET_LOCAL_NED_DATA::DEFAULT
    })
}

fn heartbeat() -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype: MavType::MAV_TYPE_ONBOARD_CONTROLLER,
        autopilot: MavAutopilot::MAV_AUTOPILOT_INVALID,
        base_mode: MavModeFlag::empty(),
        system_status: MavState::MAV_STATE_ACTIVE,
        mavlink_version: 3,
    })
}

/// (label, message, state, role, expected: None = allowed, Some(needle) = refused with it)
#[test]
fn table_of_allowed_and_refused_messages() {
    let guided = FlightMode::encode(AutopilotKind::Ardupilot, FlightMode::Guided).unwrap();
    let stabilize = FlightMode::encode(AutopilotKind::Ardupilot, FlightMode::Stabilize).unwrap();
    let cases: Vec<(&str, MavMessage, VehicleView, Role, Option<&str>)> = vec![
        ("heartbeat", heartbeat(), AIR, Role::System, None),
        (
            "heartbeat from the ground",
            heartbeat(),
            AIR,
            Role::Admin,
            Some("needs role SYSTEM"),
        ),
        (
            "telemetry rate",
            long(
                MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
                [33.0, 100_000.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::System,
            None,
        ),
        (
            "telemetry flood",
            long(
                MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
                [33.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::System,
            Some("faster than"),
        ),
        (
            "arm",
            long(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            GROUND,
            Role::Operator,
            None,
        ),
        (
            "forced arm",
            long(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 2989.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            GROUND,
            Role::Operator,
            Some("no forced arming"),
        ),
        (
            "arm by a reader",
            long(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            GROUND,
            Role::ReadOnly,
            Some("needs role OPERATOR or above, the caller is READ_ONLY"),
        ),
        (
            "disarm in the air",
            long(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::Admin,
            Some("only armed on the ground"),
        ),
        (
            "forced disarm in the air",
            long(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [0.0, 21196.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::System,
            Some("only armed on the ground"),
        ),
        (
            "disarm on the ground",
            long(MavCmd::MAV_CMD_COMPONENT_ARM_DISARM, [0.0; 7]),
            ARMED_GROUND,
            Role::Operator,
            None,
        ),
        (
            "takeoff",
            long(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, 10.0],
            ),
            ARMED_GROUND,
            Role::Operator,
            None,
        ),
        (
            "takeoff above the ceiling",
            long(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 500.0],
            ),
            ARMED_GROUND,
            Role::Operator,
            Some("at most the ceiling, 120 m"),
        ),
        (
            "takeoff disarmed",
            long(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0],
            ),
            GROUND,
            Role::Operator,
            Some("only armed on the ground"),
        ),
        (
            "land",
            long(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]),
            AIR,
            Role::Operator,
            None,
        ),
        (
            "return",
            long(MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH, [0.0; 7]),
            AIR,
            Role::Operator,
            None,
        ),
        (
            "guided",
            long(
                MavCmd::MAV_CMD_DO_SET_MODE,
                [guided.0 as f32, guided.1 as f32, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            GROUND,
            Role::Operator,
            None,
        ),
        (
            "stabilize",
            long(
                MavCmd::MAV_CMD_DO_SET_MODE,
                [
                    stabilize.0 as f32,
                    stabilize.1 as f32,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                ],
            ),
            AIR,
            Role::Operator,
            Some("not one the daemon uses"),
        ),
        (
            "speed",
            long(
                MavCmd::MAV_CMD_DO_CHANGE_SPEED,
                [1.0, 5.0, -1.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::Operator,
            None,
        ),
        (
            "too fast",
            long(
                MavCmd::MAV_CMD_DO_CHANGE_SPEED,
                [1.0, 5.5, -1.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::Operator,
            Some("at most 5 m/s"),
        ),
        (
            "climb too fast",
            long(
                MavCmd::MAV_CMD_DO_CHANGE_SPEED,
                [2.0, 3.0, -1.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::Operator,
            Some("at most 2.5 m/s"),
        ),
        (
            "fence on",
            long(
                MavCmd::MAV_CMD_DO_FENCE_ENABLE,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::Admin,
            None,
        ),
        (
            "fence off",
            long(MavCmd::MAV_CMD_DO_FENCE_ENABLE, [0.0; 7]),
            GROUND,
            Role::System,
            Some("only ever sent to enable"),
        ),
        (
            "floor off",
            long(
                MavCmd::MAV_CMD_DO_FENCE_ENABLE,
                [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            AIR,
            Role::System,
            Some("only ever sent to enable"),
        ),
        (
            "reboot",
            long(
                MavCmd::MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
            GROUND,
            Role::System,
            Some("never sent: reboot"),
        ),
        (
            "motor test",
            long(MavCmd::MAV_CMD_DO_MOTOR_TEST, [1.0; 7]),
            GROUND,
            Role::System,
            Some("never sent: motor tests"),
        ),
        (
            "calibration",
            long(MavCmd::MAV_CMD_PREFLIGHT_CALIBRATION, [1.0; 7]),
            GROUND,
            Role::System,
            Some("never sent"),
        ),
        (
            "storage reset",
            long(MavCmd::MAV_CMD_PREFLIGHT_STORAGE, [2.0; 7]),
            GROUND,
            Role::System,
            Some("never sent"),
        ),
        (
            "termination",
            long(MavCmd::MAV_CMD_DO_FLIGHTTERMINATION, [1.0; 7]),
            AIR,
            Role::System,
            Some("never sent"),
        ),
        (
            "set home",
            long(MavCmd::MAV_CMD_DO_SET_HOME, [1.0; 7]),
            AIR,
            Role::System,
            Some("never sent"),
        ),
        (
            "unknown command",
            long(MavCmd::MAV_CMD_DO_GRIPPER, [1.0; 7]),
            AIR,
            Role::System,
            Some("not in the whitelist"),
        ),
        (
            "velocity",
            velocity(3.0, 3.0, 1.0),
            AIR,
            Role::Operator,
            None,
        ),
        (
            "velocity too fast",
            velocity(4.0, 4.0, 0.0),
            AIR,
            Role::Operator,
            Some("5.66 m/s horizontal"),
        ),
        (
            "velocity on the ground",
            velocity(1.0, 0.0, 0.0),
            ARMED_GROUND,
            Role::Operator,
            Some("only armed in the air"),
        ),
        (
            "velocity, landed state unknown",
            velocity(1.0, 0.0, 0.0),
            VehicleView {
                landed: Landed::Unknown,
                ..AIR
            },
            Role::Operator,
            Some("only armed in the air"),
        ),
        (
            "speed param",
            param_set("WPNAV_SPEED", 400.0),
            GROUND,
            Role::Admin,
            None,
        ),
        (
            "speed param above the limit",
            param_set("WPNAV_SPEED", 1500.0),
            GROUND,
            Role::Admin,
            Some("at most 5"),
        ),
        (
            "speed param while armed",
            param_set("WPNAV_SPEED", 400.0),
            ARMED_GROUND,
            Role::Admin,
            Some("only disarmed on the ground"),
        ),
        (
            "speed param by an operator",
            param_set("WPNAV_SPEED", 400.0),
            GROUND,
            Role::Operator,
            Some("needs role ADMIN"),
        ),
        (
            "fence param",
            param_set("FENCE_ENABLE", 0.0),
            GROUND,
            Role::System,
            Some("never writable from the ground"),
        ),
        (
            "PX4 geofence param",
            param_set("GF_ACTION", 0.0),
            GROUND,
            Role::System,
            Some("never writable"),
        ),
        (
            "failsafe param",
            param_set("FS_GCS_ENABLE", 0.0),
            GROUND,
            Role::System,
            Some("never writable"),
        ),
        (
            "arming check param",
            param_set("ARMING_CHECK", 0.0),
            GROUND,
            Role::System,
            Some("never writable"),
        ),
        (
            "signing param",
            param_set("MAV_SIGN_CFG", 0.0),
            GROUND,
            Role::System,
            Some("never writable"),
        ),
        (
            "other param",
            param_set("ATC_RAT_RLL_P", 0.2),
            GROUND,
            Role::System,
            Some("not in the parameter allowlist"),
        ),
        (
            "mission clear (the mission list; the fence list is ADMIN's, disarmed)",
            MavMessage::MISSION_CLEAR_ALL(Default::default()),
            GROUND,
            Role::System,
            None,
        ),
        (
            "rc override",
            MavMessage::RC_CHANNELS_OVERRIDE(Default::default()),
            AIR,
            Role::System,
            Some("never sent"),
        ),
        (
            "shell",
            MavMessage::SERIAL_CONTROL(Default::default()),
            GROUND,
            Role::System,
            Some("never sent"),
        ),
        (
            "signing setup",
            MavMessage::SETUP_SIGNING(Default::default()),
            GROUND,
            Role::System,
            Some("never sent"),
        ),
        (
            "mission upload (the mission core's MISSION_COUNT)",
            MavMessage::MISSION_COUNT(Default::default()),
            GROUND,
            Role::System,
            None,
        ),
        (
            "reposition as COMMAND_INT",
            MavMessage::COMMAND_INT(COMMAND_INT_DATA {
                command: MavCmd::MAV_CMD_DO_REPOSITION,
                param1: 3.0,
                x: 473_977_420,
                y: 85_455_940,
                z: 30.0,
                frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                ..COMMAND_INT_DATA::DEFAULT
            }),
            AIR,
            Role::Operator,
            None,
        ),
        (
            "reposition above the ceiling",
            MavMessage::COMMAND_INT(COMMAND_INT_DATA {
                command: MavCmd::MAV_CMD_DO_REPOSITION,
                param1: -1.0,
                x: 473_977_420,
                y: 85_455_940,
                z: 300.0,
                frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                ..COMMAND_INT_DATA::DEFAULT
            }),
            AIR,
            Role::Operator,
            Some("at most 120 m"),
        ),
        // PX4 reads param7 above mean sea level whatever the frame (navigator_main.cpp).
        (
            "PX4 reposition above sea level",
            MavMessage::COMMAND_INT(COMMAND_INT_DATA {
                command: MavCmd::MAV_CMD_DO_REPOSITION,
                param1: 3.0,
                x: 473_977_420,
                y: 85_455_940,
                z: 488.0 + 30.0,
                frame: MavFrame::MAV_FRAME_GLOBAL,
                ..COMMAND_INT_DATA::DEFAULT
            }),
            PX4_AIR,
            Role::Operator,
            None,
        ),
        (
            "PX4 reposition in a relative frame",
            MavMessage::COMMAND_INT(COMMAND_INT_DATA {
                command: MavCmd::MAV_CMD_DO_REPOSITION,
                param1: 3.0,
                x: 473_977_420,
                y: 85_455_940,
                z: 30.0,
                frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                ..COMMAND_INT_DATA::DEFAULT
            }),
            PX4_AIR,
            Role::Operator,
            Some("above mean sea level"),
        ),
        (
            "PX4 reposition above the ceiling",
            MavMessage::COMMAND_INT(COMMAND_INT_DATA {
                command: MavCmd::MAV_CMD_DO_REPOSITION,
                param1: -1.0,
                x: 473_977_420,
                y: 85_455_940,
                z: 488.0 + 121.0,
                frame: MavFrame::MAV_FRAME_GLOBAL,
                ..COMMAND_INT_DATA::DEFAULT
            }),
            PX4_AIR,
            Role::Operator,
            Some("at most 120 m above home"),
        ),
        // Reads change nothing: by name (the pre-flight check) or by index (the download's
        // gaps); a request that is neither is refused.
        (
            "read a pre-flight parameter",
            MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
                param_index: -1,
                target_system: 1,
                target_component: 1,
                param_id: "RTL_ALT".into(),
            }),
            AIR,
            Role::System,
            None,
        ),
        (
            "read another parameter",
            MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
                param_index: -1,
                target_system: 1,
                target_component: 1,
                param_id: "SYSID_THISMAV".into(),
            }),
            GROUND,
            Role::System,
            None,
        ),
        (
            "read a parameter by index",
            MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
                param_index: 12,
                target_system: 1,
                target_component: 1,
                param_id: "".into(),
            }),
            GROUND,
            Role::System,
            None,
        ),
        (
            "read neither by name nor by index",
            MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
                param_index: -1,
                target_system: 1,
                target_component: 1,
                param_id: "".into(),
            }),
            GROUND,
            Role::System,
            Some("by name (param_index -1) or by index"),
        ),
    ];
    let wl = wl();
    for (label, msg, state, role, expected) in cases {
        let result = wl.check(&msg, &state, role);
        match (expected, result) {
            (None, Ok(())) => {}
            (None, Err(v)) => panic!("{label}: refused: {v}"),
            (Some(needle), Ok(())) => panic!("{label}: allowed, expected `{needle}`"),
            (Some(needle), Err(v)) => {
                assert!(v.to_string().contains(needle), "{label}: {v}")
            }
        }
    }
}

#[test]
fn the_supervisors_own_messages_pass_as_system() {
    // What the supervisor sends today: its heartbeat and telemetry requests.
    let wl = wl();
    for state in [GROUND, AIR] {
        assert_eq!(wl.check(&heartbeat(), &state, Role::System), Ok(()));
        let request = long(
            MavCmd::MAV_CMD_REQUEST_MESSAGE,
            [148.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
        assert_eq!(wl.check(&request, &state, Role::System), Ok(()));
    }
}

/// An independent statement of what may ever be sent, to check the table against.
fn oracle_may_send(msg: &MavMessage, state: &VehicleView, role: Role) -> bool {
    let vmax = 5.0f32;
    match msg {
        MavMessage::COMMAND_LONG(c) => {
            let p = [
                c.param1, c.param2, c.param3, c.param4, c.param5, c.param6, c.param7,
            ];
            match c.command {
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM => {
                    role >= Role::Operator
                        && p[1] == 0.0
                        && state.landed == Landed::OnGround
                        && ((p[0] == 1.0 && !state.armed) || (p[0] == 0.0 && state.armed))
                }
                MavCmd::MAV_CMD_DO_FENCE_ENABLE => role >= Role::Admin && p[0] == 1.0,
                MavCmd::MAV_CMD_DO_CHANGE_SPEED => {
                    role >= Role::Operator
                        && state.armed
                        && (p[1] == -1.0 || (p[1] > 0.0 && p[1] <= vmax))
                }
                MavCmd::MAV_CMD_NAV_TAKEOFF => {
                    role >= Role::Operator
                        && state.armed
                        && state.landed == Landed::OnGround
                        && p[6] > 0.0
                        && p[6] <= 120.0
                }
                MavCmd::MAV_CMD_NAV_LAND | MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH => {
                    role >= Role::Operator && state.armed
                }
                MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL | MavCmd::MAV_CMD_REQUEST_MESSAGE => {
                    role >= Role::System
                }
                MavCmd::MAV_CMD_DO_SET_MODE => role >= Role::Operator,
                MavCmd::MAV_CMD_CONDITION_YAW => role >= Role::Operator && state.armed,
                _ => false,
            }
        }
        MavMessage::PARAM_SET(p) => {
            let id = p
                .param_id
                .to_str()
                .unwrap_or("")
                .trim_end_matches('\0')
                .to_string();
            role >= Role::Admin
                && !state.armed
                && [
                    "WPNAV_SPEED",
                    "WPNAV_SPEED_UP",
                    "MPC_XY_CRUISE",
                    "RTL_ALT",
                    "LAND_SPEED",
                ]
                .iter()
                .chain(PARAM_ALLOWLIST.iter().map(|(n, _, _)| n))
                .any(|n| *n == id)
        }
        MavMessage::HEARTBEAT(_) => role >= Role::System,
        // The mission list only (these generators make no fence items), the OPERATOR's.
        MavMessage::MISSION_CLEAR_ALL(m) => {
            role >= Role::Operator
                && m.mission_type == crate::link::dialect::MavMissionType::MAV_MISSION_TYPE_MISSION
        }
        MavMessage::MISSION_ITEM_INT(m) => {
            role >= Role::Operator
                && m.mission_type == crate::link::dialect::MavMissionType::MAV_MISSION_TYPE_MISSION
                && m.current == 0
                && m.z <= 120.0
        }
        MavMessage::SET_POSITION_TARGET_LOCAL_NED(t) => {
            role >= Role::Operator
                && state.armed
                && state.landed == Landed::InAir
                && t.vx.hypot(t.vy) <= vmax
        }
        _ => false,
    }
}

fn any_command() -> impl Strategy<Value = MavCmd> {
    // Every command of the dialect, plus extra weight on the table's own entries.
    let all: Vec<MavCmd> = (0u32..=50_000)
        .filter_map(num_traits::FromPrimitive::from_u32)
        .collect();
    prop_oneof![
        prop::sample::select(all),
        prop::sample::select(
            RULES
                .iter()
                .filter_map(|r| match r.key {
                    Key::Command(c) => Some(c),
                    Key::Message(_) => None,
                })
                .collect::<Vec<_>>()
        ),
    ]
}

fn param() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(0.0f32),
        Just(1.0),
        Just(2.0),
        Just(-1.0),
        Just(21196.0),
        Just(f32::NAN),
        Just(f32::INFINITY),
        -200.0f32..2000.0,
    ]
}

fn any_message() -> impl Strategy<Value = MavMessage> {
    prop_oneof![
        4 => (any_command(), prop::array::uniform7(param())).prop_map(|(c, p)| long(c, p)),
        1 => (
            prop::sample::select(vec![
                "WPNAV_SPEED", "FENCE_ENABLE", "GF_ACTION", "ARMING_CHECK", "FS_THR_ENABLE",
                "MPC_XY_CRUISE", "RTL_ALT", "SYSID_THISMAV", "BATT_FS_LOW_ACT", "MAV_SIGN_CFG",
                "COM_RC_LOSS_T", "ATC_ACCEL_P_MAX", "LAND_SPEED",
            ]),
            param()
        )
            .prop_map(|(n, v)| param_set(n, v)),
        1 => (param(), param(), param()).prop_map(|(x, y, z)| velocity(x, y, z)),
        1 => Just(heartbeat()),
        1 => Just(MavMessage::MISSION_CLEAR_ALL(Default::default())),
        1 => Just(MavMessage::RC_CHANNELS_OVERRIDE(Default::default())),
        1 => Just(MavMessage::MANUAL_CONTROL(Default::default())),
        1 => Just(MavMessage::FILE_TRANSFER_PROTOCOL(Default::default())),
        1 => Just(MavMessage::SETUP_SIGNING(Default::default())),
        1 => Just(MavMessage::MISSION_ITEM_INT(Default::default())),
    ]
}

fn any_state() -> impl Strategy<Value = VehicleView> {
    (
        any::<bool>(),
        prop::sample::select(vec![Landed::OnGround, Landed::InAir, Landed::Unknown]),
    )
        .prop_map(|(armed, landed)| VehicleView {
            armed,
            landed,
            autopilot: Some(AutopilotKind::Ardupilot),
            home_altitude_msl_m: None,
            ..VehicleView::UNKNOWN
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 100_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Nothing outside the whitelist is accepted: every accepted message is one an
    /// independent statement of the policy also allows.
    #[test]
    fn nothing_outside_the_whitelist_is_accepted(
        msg in any_message(),
        state in any_state(),
        role in prop::sample::select(Role::ALL.to_vec()),
    ) {
        let wl = wl();
        if wl.check(&msg, &state, role).is_ok() {
            prop_assert!(oracle_may_send(&msg, &state, role), "accepted {msg:?} in {state:?} as {role}");
        }
    }
}

// PX4 encodes takeoff altitude above sea level and modes as main/sub mode in param2/param3.
fn px4(armed: bool, landed: Landed, home_altitude_msl_m: Option<f64>) -> VehicleView {
    VehicleView {
        armed,
        landed,
        autopilot: Some(AutopilotKind::Px4),
        home_altitude_msl_m,
        ..VehicleView::UNKNOWN
    }
}

fn takeoff(param7: f32) -> MavMessage {
    long(
        MavCmd::MAV_CMD_NAV_TAKEOFF,
        [-1.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, param7],
    )
}

#[test]
fn px4_takeoff_altitude_is_above_sea_level_and_capped_relative_to_home() {
    let w = Whitelist::new(&EnvelopeConfig::default()); // ceiling 120 m
    let on_ground = px4(true, Landed::OnGround, Some(488.0));
    assert_eq!(w.check(&takeoff(498.0), &on_ground, Role::Operator), Ok(()));
    let e = w
        .check(&takeoff(650.0), &on_ground, Role::Operator)
        .unwrap_err();
    assert!(e.reason.contains("162.0 m above home"), "{e}");
    // Below home (e.g. a relative altitude sent by mistake) is refused, not flown.
    assert!(w.check(&takeoff(10.0), &on_ground, Role::Operator).is_err());
    let e = w
        .check(
            &takeoff(498.0),
            &px4(true, Landed::OnGround, None),
            Role::Operator,
        )
        .unwrap_err();
    assert!(e.reason.contains("home's altitude"), "{e}");
    // ArduPilot's param7 stays relative to home.
    let ardupilot = VehicleView {
        autopilot: Some(AutopilotKind::Ardupilot),
        ..on_ground
    };
    assert_eq!(w.check(&takeoff(10.0), &ardupilot, Role::Operator), Ok(()));
    assert!(
        w.check(&takeoff(498.0), &ardupilot, Role::Operator)
            .is_err()
    );
}

#[test]
fn px4_set_mode_reads_main_mode_in_param2_and_sub_mode_in_param3() {
    let w = Whitelist::new(&EnvelopeConfig::default());
    let flying = px4(true, Landed::InAir, Some(488.0));
    let mode = |main: f32, sub: f32| {
        long(
            MavCmd::MAV_CMD_DO_SET_MODE,
            [1.0, main, sub, 0.0, 0.0, 0.0, 0.0],
        )
    };
    for (main, sub, name) in [
        (4.0, 3.0, "AUTO.LOITER"),
        (4.0, 5.0, "AUTO.RTL"),
        (4.0, 6.0, "AUTO.LAND"),
        (4.0, 2.0, "AUTO.TAKEOFF"),
        // start_mission: the supervisor checked the mission first.
        (4.0, 4.0, "AUTO.MISSION"),
    ] {
        assert_eq!(
            w.check(&mode(main, sub), &flying, Role::Operator),
            Ok(()),
            "{name}"
        );
    }
    // MANUAL (1), ALTCTL (2), ACRO (5) and AUTO.FOLLOW_TARGET (4/8) are refused.
    for (main, sub) in [(1.0, 0.0), (2.0, 0.0), (5.0, 0.0), (4.0, 8.0)] {
        assert!(
            w.check(&mode(main, sub), &flying, Role::Operator).is_err(),
            "{main}/{sub}"
        );
    }
    assert!(
        w.check(&mode(4.0, f32::NAN), &flying, Role::Operator)
            .is_err()
    );
}

mod mission_protocol {
    use super::*;
    use crate::link::dialect::{
        MISSION_CLEAR_ALL_DATA, MISSION_COUNT_DATA, MISSION_ITEM_INT_DATA,
        MISSION_REQUEST_LIST_DATA, MavMissionType,
    };

    const MISSION: MavMissionType = MavMissionType::MAV_MISSION_TYPE_MISSION;
    const FENCE: MavMissionType = MavMissionType::MAV_MISSION_TYPE_FENCE;

    fn item(command: MavCmd, z: f32, mission_type: MavMissionType) -> MavMessage {
        MavMessage::MISSION_ITEM_INT(MISSION_ITEM_INT_DATA {
            seq: 1,
            command,
            x: 473_977_000,
            y: 85_456_000,
            z,
            frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
            target_system: 1,
            target_component: 1,
            mission_type,
            ..MISSION_ITEM_INT_DATA::DEFAULT
        })
    }

    fn count(mission_type: MavMissionType) -> MavMessage {
        MavMessage::MISSION_COUNT(MISSION_COUNT_DATA {
            count: 3,
            target_system: 1,
            target_component: 1,
            mission_type,
            opaque_id: 0,
        })
    }

    #[test]
    fn the_mission_core_messages_pass_at_their_authority() {
        let wl = wl();
        let ceiling = EnvelopeConfig::default().altitude_m_max as f32;
        let list = MavMessage::MISSION_REQUEST_LIST(MISSION_REQUEST_LIST_DATA {
            target_system: 1,
            target_component: 1,
            mission_type: MISSION,
        });
        assert!(wl.check(&list, &AIR, Role::ReadOnly).is_ok());
        assert!(wl.check(&count(MISSION), &AIR, Role::Operator).is_ok());
        assert!(wl.check(&count(MISSION), &AIR, Role::ReadOnly).is_err());
        let wp = item(MavCmd::MAV_CMD_NAV_WAYPOINT, ceiling - 1.0, MISSION);
        assert!(wl.check(&wp, &AIR, Role::Operator).is_ok());
        let clear = MavMessage::MISSION_CLEAR_ALL(MISSION_CLEAR_ALL_DATA {
            target_system: 1,
            target_component: 1,
            mission_type: MISSION,
        });
        assert!(wl.check(&clear, &GROUND, Role::Operator).is_ok());
    }

    #[test]
    fn mission_items_are_bounded() {
        let wl = wl();
        let ceiling = EnvelopeConfig::default().altitude_m_max as f32;
        let high = item(MavCmd::MAV_CMD_NAV_WAYPOINT, ceiling + 1.0, MISSION);
        let err = wl.check(&high, &AIR, Role::Operator).unwrap_err();
        assert!(err.reason.contains("ceiling"), "{err}");
        let servo = item(MavCmd::MAV_CMD_DO_SET_SERVO, 0.0, MISSION);
        assert!(
            wl.check(&servo, &AIR, Role::Operator)
                .unwrap_err()
                .reason
                .contains("not one of the mission items")
        );
        let MavMessage::MISSION_ITEM_INT(mut fast) =
            item(MavCmd::MAV_CMD_DO_CHANGE_SPEED, 0.0, MISSION)
        else {
            unreachable!()
        };
        fast.param2 = EnvelopeConfig::default().speed_horizontal_m_s_max as f32 + 1.0;
        assert!(
            wl.check(&MavMessage::MISSION_ITEM_INT(fast), &AIR, Role::Operator)
                .is_err()
        );
        let MavMessage::MISSION_ITEM_INT(mut guided) =
            item(MavCmd::MAV_CMD_NAV_WAYPOINT, 10.0, MISSION)
        else {
            unreachable!()
        };
        guided.current = 2;
        assert!(
            wl.check(&MavMessage::MISSION_ITEM_INT(guided), &AIR, Role::Operator)
                .is_err()
        );
    }

    #[test]
    fn the_fence_list_is_admins_and_written_only_disarmed_on_the_ground() {
        let wl = wl();
        assert!(
            wl.check(&count(FENCE), &GROUND, Role::Operator)
                .unwrap_err()
                .reason
                .contains("ADMIN")
        );
        assert!(wl.check(&count(FENCE), &GROUND, Role::Admin).is_ok());
        assert!(wl.check(&count(FENCE), &AIR, Role::Admin).is_err());
        let vertex = item(
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
            0.0,
            FENCE,
        );
        assert!(wl.check(&vertex, &GROUND, Role::Admin).is_ok());
        let wp_in_fence = item(MavCmd::MAV_CMD_NAV_WAYPOINT, 10.0, FENCE);
        assert!(wl.check(&wp_in_fence, &GROUND, Role::Admin).is_err());
        let clear_all = MavMessage::MISSION_CLEAR_ALL(MISSION_CLEAR_ALL_DATA {
            target_system: 1,
            target_component: 1,
            mission_type: MavMissionType::MAV_MISSION_TYPE_ALL,
        });
        assert!(wl.check(&clear_all, &GROUND, Role::System).is_err());
    }

    /// The one sanctioned write of fence parameters: the mirror's path passes exactly the
    /// names it writes, on the ground; `check` keeps refusing them for every role.
    #[test]
    fn only_the_fence_mirrors_path_writes_fence_parameters() {
        let wl = wl();
        for name in crate::safety::fence_mirror::MIRROR_PARAMS {
            let write = param_set(name, 1.0);
            assert!(wl.check_fence_mirror(&write, &GROUND).is_ok(), "{name}");
            assert!(
                wl.check_fence_mirror(&write, &AIR)
                    .unwrap_err()
                    .reason
                    .contains("only disarmed on the ground"),
                "{name}"
            );
            for role in [Role::ReadOnly, Role::Operator] {
                assert!(wl.check(&write, &GROUND, role).is_err(), "{name} as {role}");
            }
            for role in [Role::Admin, Role::System] {
                assert!(
                    wl.check(&write, &GROUND, role)
                        .unwrap_err()
                        .reason
                        .contains("never writable"),
                    "{name} as {role}"
                );
            }
        }
        assert!(
            wl.check_fence_mirror(&param_set("FENCE_ALT_MAX", f32::NAN), &GROUND)
                .is_err()
        );
        // Other never-write parameters stay refused on the mirror's path too.
        for other in [
            "FENCE_AUTOENABLE",
            "FS_THR_ENABLE",
            "ARMING_CHECK",
            "GF_PREDICT",
        ] {
            assert!(
                wl.check_fence_mirror(&param_set(other, 0.0), &GROUND)
                    .is_err(),
                "{other}"
            );
        }
        // Its mission messages are checked as ADMIN's: the fence list, not the mission.
        assert!(wl.check_fence_mirror(&count(FENCE), &GROUND).is_ok());
        assert!(wl.check_fence_mirror(&count(FENCE), &AIR).is_err());
    }
}
