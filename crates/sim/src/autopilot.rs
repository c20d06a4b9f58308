//! The simulated autopilot: an ArduCopter (or PX4) multicopter as seen from outside, sans-IO.
//!
//! # Call order
//!
//! [`SimAutopilot`] never reads a clock; `now` is virtual time since boot, non-decreasing.
//!
//! 1. For every received frame: [`SimAutopilot::handle_message`]`(now, header, msg)`.
//! 2. Periodically (the shell does it at every physics step): [`SimAutopilot::step`]`(now)`,
//!    which advances the physics in fixed 20 ms steps up to `now` and queues the telemetry
//!    that is due.
//! 3. After either: [`SimAutopilot::poll_transmit`] until `None` (messages for every link), and
//!    [`SimAutopilot::poll_event`] until `None` (lines for a person or a test to read).
//!
//! # What it does, like the firmware
//!
//! - HEARTBEAT at 1 Hz with the firmware's `custom_mode` encoding (ArduCopter mode numbers; PX4
//!   `main_mode << 16 | sub_mode << 24`), `base_mode` with CUSTOM_MODE_ENABLED and
//!   SAFETY_ARMED, system status STANDBY/ACTIVE (FLIGHT_TERMINATION after PX4 termination).
//! - Modes by `SET_MODE` and `MAV_CMD_DO_SET_MODE`, refused honestly: position modes need a
//!   fix, ArduCopter AUTO needs a mission (there is none), PX4 OFFBOARD needs a setpoint in
//!   the last second.
//! - Arming refused without a 3D fix (`PreArm: Need 3D Fix`), with a low battery, or in a mode
//!   that cannot arm; force arm with param2 = 2989 (ArduPilot) or 21196 (PX4). Disarm in the
//!   air only with param2 = 21196. Disarms by itself 1 s (ArduPilot) / 2 s (PX4) after LAND or
//!   RTL touches down, and 10 s after arming if it never took off.
//! - Takeoff (ArduPilot: armed, GUIDED, param7 relative; PX4: armed, param7 AMSL, or
//!   `MIS_TAKEOFF_ALT` above where it stands when NaN, never below it (`navigator/takeoff.cpp`),
//!   AUTO.TAKEOFF then AUTO.LOITER), position targets (global and local NED, positions and
//!   velocities, velocities time out after 3 s) in GUIDED/OFFBOARD, DO_REPOSITION,
//!   DO_CHANGE_SPEED, LAND, RTL, BRAKE/LOITER hold, flight termination (motors off: it falls),
//!   SET_MESSAGE_INTERVAL (0 = default rate, -1 = off), GET_MESSAGE_INTERVAL, REQUEST_MESSAGE,
//!   BATTERY_RESET (ArduPilot), and UNSUPPORTED for anything else. Every ACK is addressed to the
//!   sender.
//! - Losing position in the air in a position mode lands (ArduCopter's EKF failsafe).
//!
//! # Speeds, as the firmware sets them
//!
//! - ArduCopter GUIDED flies position targets at the position controller's speed, which is
//!   `WPNAV_SPEED` whenever the controller starts: on entering GUIDED (`ModeGuided::init` →
//!   `pva_control_start`) and on the first position target after a takeoff, a velocity target or
//!   entering GUIDED (`set_destination` → `pos_control_start`). `DO_REPOSITION` ignores its
//!   speed (param1) and its yaw (param4), and is DENIED outside GUIDED without the change-mode
//!   flag (`GCS_MAVLink_Copter.cpp`). `DO_CHANGE_SPEED` is taken only in GUIDED, AUTO and RTL
//!   (`set_speed_xy_cms` overrides), `MAV_RESULT_FAILED` in every other mode, DENIED without a
//!   positive speed.
//! - ArduCopter RTL (`mode_rtl.cpp`): cruises at `RTL_SPEED` (0: `WPNAV_SPEED`), which a
//!   `DO_CHANGE_SPEED` in RTL changes; climbs first to max(`RTL_ALT`, 30 cm, here +
//!   `RTL_CLIMB_MIN`), lowered inside the `RTL_CONE_SLOPE` cone, never descending; flies home;
//!   lands.
//! - PX4 (`navigator_main.cpp`): `DO_REPOSITION` needs the change-mode flag (UNSUPPORTED
//!   without, `Commander.cpp`), flies in AUTO.LOITER to param5/6 at param7 *above mean sea level
//!   whatever the frame says*, at param1 m/s (≤ 0: `MPC_XY_CRUISE` when entering Hold, else the
//!   speed already set), turning to param4 *radians*. `DO_CHANGE_SPEED` is accepted in every
//!   mode and applies to the next setpoint (the next reposition, the next RTL leg); entering
//!   Hold, Return, Land or Takeoff resets it. Nothing flies faster than `MPC_XY_VEL_MAX`. RTL
//!   climbs to `RTL_RETURN_ALT` and cruises at `MPC_XY_CRUISE`.
//!
//! # Start-up: the estimator's time to trust its position
//!
//! After boot the EKF needs time before it trusts a position (`SimOptions::ekf_ready_s`; the
//! default is the firmware's own timeline, [`EkfTimeline::firmware`], as measured on ArduCopter
//! SITL 4.7.0-dev and PX4 SIH: `/work/shared/reference/sitl.md`, `/work/sitl/NOTES.md`).
//! ArduCopter: EKF3 initialised at ~5 s, GPS at ~10 s, origin and home at ~20 s, EKF3 using
//! GPS at ~42 s, arming from ~44 s. Until then EKF_STATUS_REPORT has no absolute position
//! (constant-position mode: `AP_NavEKF3_Control.cpp` `updateFilterStatus`), there is no
//! GLOBAL_POSITION_INT or HOME_POSITION before the origin, and arming fails (`Arm: AHRS:
//! waiting for home`, then `Arm: Need Position Estimate`); while disarmed every mode is
//! accepted (`Copter::set_mode`: `ignore_checks = !motors->armed()`), armed a position mode
//! needs the position. PX4: GPS at ~2 s, home at ~2.5 s, ESTIMATOR_STATUS 1023 at ~3 s, arming
//! (`TEMPORARILY_REJECTED` with "Arming denied: Resolve system health failures first" before)
//! from ~5 s. A shorter `ekf_ready_s` scales every stage.
//!
//! PX4's ESTIMATOR_STATUS flags are its EKF2 solution status (`ekf_helper.cpp`
//! `get_ekf_soln_status`): CONST_POS_MODE is also set whenever the vehicle is at rest
//! (`vehicle_at_rest`), so a healthy vehicle on the ground reports 1023 and 895 in the air.
//!
//! # Battery
//!
//! ArduCopter SITL flies a 3S pack whose voltage is `SIM_BATT_VOLTAGE` (12.6 V) whatever is
//! used: the default quad frame has no capacity (`SIM_Frame.h` `battCapacityAh` 0), so
//! `SIM_BATT_VOLTAGE` moves the volts only. The percentage is the autopilot's count of consumed
//! mAh against `BATT_CAPACITY` (3300 mAh) for a current-measuring monitor (`BATT_MONITOR` 4),
//! unknown (-1) otherwise or below 10 mAh of capacity
//! (`AP_BattMonitor_Backend::capacity_remaining_pct`); `MAV_CMD_BATTERY_RESET` sets it
//! (`reset_remaining`). Arming checks `BATT_ARM_VOLT`, `BATT_ARM_MAH` and the low and critical
//! failsafe levels (`AP_BattMonitor_Backend::arming_checks`). `SIM_BATT_CAP_AH` is declared by
//! SITL and read nowhere at 90700977c553; it is stored here and changes nothing. The PX4
//! personality keeps a 4S 5000 mAh pack whose percentage follows its resting voltage (a
//! voltage-based estimate, `BAT1_CAPACITY` -1), overridable with `SIM_BATT_VOLTAGE`.
//! - Telemetry: GLOBAL_POSITION_INT, ATTITUDE, VFR_HUD (4 Hz), SYS_STATUS, BATTERY_STATUS,
//!   GPS_RAW_INT, EXTENDED_SYS_STATE, EKF_STATUS_REPORT (ArduPilot) / ESTIMATOR_STATUS (PX4),
//!   SIMSTATE (ArduPilot) / SIM_STATE (PX4) (1 Hz), HOME_POSITION (0.2 Hz); AUTOPILOT_VERSION
//!   on request. GLOBAL_POSITION_INT is not sent while there is no position (as PX4 does).
//!
//! # Parameters and fault injection
//!
//! PARAM_REQUEST_LIST, PARAM_REQUEST_READ and PARAM_SET answer with PARAM_VALUE; unknown names
//! are ignored, as the firmware does. Real parameters, with the firmware's defaults (ArduPilot
//! as SITL's `copter.parm` sets them): ArduPilot `ARMING_CHECK`, `DISARM_DELAY`, `LAND_SPEED`
//! (cm/s), `LOIT_SPEED` (cm/s), `RTL_ALT`, `RTL_CLIMB_MIN` (cm), `RTL_CONE_SLOPE`, `RTL_SPEED`,
//! `WPNAV_SPEED`, `WPNAV_SPEED_UP`, `WPNAV_SPEED_DN` (cm/s), `WPNAV_ACCEL` (cm/s²),
//! `BATT_MONITOR`, `BATT_CAPACITY` (mAh), `BATT_ARM_VOLT`, `BATT_ARM_MAH`, `BATT_LOW_VOLT`,
//! `BATT_LOW_MAH`, `BATT_CRT_VOLT`, `BATT_CRT_MAH`; stored and not acted on: `BATT_FS_LOW_ACT`,
//! `BATT_FS_CRT_ACT`, `FENCE_MARGIN`, `FS_GCS_ENABLE`; the fence
//! (`FENCE_ENABLE`, `FENCE_TYPE` bits 0 and 1, `FENCE_ALT_MAX`, `FENCE_RADIUS`, `FENCE_ACTION`)
//! is enforced by the simulator itself (`check_fence`). PX4 `COM_DISARM_LAND`, `MIS_TAKEOFF_ALT`,
//! `MPC_LAND_SPEED`, `MPC_XY_CRUISE`, `MPC_XY_VEL_MAX`, `MPC_Z_VEL_MAX_UP`, `MPC_Z_VEL_MAX_DN`,
//! `RTL_RETURN_ALT`; stored and not acted on: `COM_DL_LOSS_T`, `COM_LOW_BAT_ACT`,
//! `BAT1_CAPACITY`, `BAT_LOW_THR`, `BAT_CRIT_THR`, `BAT_EMERGEN_THR`, `RTL_DESCEND_ALT`;
//! enforced: the geofence `GF_ACTION`, `GF_MAX_HOR_DIST`, `GF_MAX_VER_DIST` (SI units; INT32 values encoded
//! bytewise as PX4 does).
//!
//! The faults are ArduPilot-SITL-style `SIM_*` parameters, for both personalities, so a test
//! harness injects them over MAVLink as it would against SITL:
//!
//! - `SIM_GPS_DISABLE` = 1: GPS lost: no fix, no position (EKF flags cleared, no
//!   GLOBAL_POSITION_INT); arming and position modes are refused; in the air it lands.
//! - `SIM_BATT_VOLTAGE` = V: ArduPilot: the pack's voltage (default 12.6, a full 3S; the
//!   percentage does not move with it). PX4: the resting voltage (0, the default, follows the
//!   discharge model; 13.2 is an empty 4S pack).
//! - `SIM_WIND_SPD` (m/s) / `SIM_WIND_DIR` (degrees the wind blows *from*): a wind, with
//!   seeded gusts of standard deviation `SIM_WIND_TURB` (m/s, default 0 as in SITL), scaled with
//!   height by `SIM_WIND_T` (0: √(altitude / `SIM_WIND_T_ALT`) below 60 m,
//!   1: none, 2: linear with `SIM_WIND_T_COEF`), of which the position controller cancels only
//!   half, so the vehicle drifts down-wind off its point (by about the uncancelled wind speed ×
//!   1 s; more than its top speed carries it away).
//! - `SIM_LINK_DROP_S` = N: after answering this PARAM_SET, the simulator goes silent both ways
//!   for N simulated seconds (it keeps flying); the parameter reads 0 again afterwards.

// Ground stations and both firmwares still speak SET_MODE, the `*_INT` frames and the
// superseded request commands; the simulator must answer them as the firmware does.
#![allow(deprecated)]

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use mavlink::Message;
use nalgebra::Vector3;

use super::mission::MissionServer;
use super::physics::{GeoPoint, Physics, SplitMix64, Target, WindProfile};
use super::signing::StoredKey;
use flight_companion_core::link::MavHeader;
use flight_companion_core::link::dialect::*;

mod auto;

/// Fixed physics step.
pub const PHYSICS_STEP: Duration = Duration::from_millis(20);
/// MAV_COMP_ID_ONBOARD_COMPUTER: the companion whose heartbeat is watched.
pub const COMPANION_COMPONENT_ID: u8 = 191;
/// Silence after which the companion's heartbeat counts as lost.
pub const COMPANION_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// The vehicle's own component id (MAV_COMP_ID_AUTOPILOT1).
pub const AUTOPILOT_COMPONENT_ID: u8 = 1;

/// `COMPONENT_ARM_DISARM` param2 that forces a disarm in the air (both firmwares).
const FORCE_DISARM_MAGIC: f32 = 21196.0;
/// `COMPONENT_ARM_DISARM` param2 that forces ArduPilot to arm without checks.
const ARDUPILOT_FORCE_ARM_MAGIC: f32 = 2989.0;
/// ArduCopter switches to its slow final descent below this height.
const LAND_FINAL_ALTITUDE_M: f64 = 10.0;
/// Armed on the ground without taking off: the firmware disarms after this.
const IDLE_DISARM_DELAY: Duration = Duration::from_secs(10);
/// Guided velocity targets stop after this without a new one (ArduCopter).
const VELOCITY_TARGET_TIMEOUT: Duration = Duration::from_secs(3);
/// PX4 refuses OFFBOARD without a setpoint this recent.
const OFFBOARD_SETPOINT_MAX_AGE: Duration = Duration::from_secs(1);
/// PX4: below this resting voltage (3.5 V/cell of its 4S pack) the pre-arm check refuses.
const ARMING_VOLTAGE_MIN_V: f64 = 14.0;
/// ArduCopter's `RTL_ALT_MIN` (`config.h`): RTL never returns lower than 30 cm.
const RTL_ALT_MIN_M: f64 = 0.3;
/// ArduCopter's `RTL_MIN_CONE_SLOPE` (`config.h`): shallower cones are ignored.
const RTL_MIN_CONE_SLOPE: f64 = 0.5;
/// `WPNAV_WP_SPEED_MIN_CMS` (`AC_WPNav.cpp`): slower speed changes are ignored in RTL.
const WPNAV_SPEED_MIN_M_S: f64 = 0.1;
/// ArduPilot's battery percentage needs a capacity above 10 mAh (`capacity_remaining_pct`).
const BATT_CAPACITY_MAH_MIN: f32 = 10.0;
/// PX4's ESTIMATOR_STATUS flags of a healthy EKF2 at rest and moving (`get_ekf_soln_status`).
const PX4_ESTIMATOR_FLAGS_AT_REST: u16 = 1023;
const PX4_ESTIMATOR_FLAGS_MOVING: u16 = 895;
/// The controller cancels this share of an injected wind (the drift fault).
const INJECTED_WIND_COMPENSATION: f64 = 0.5;

const MSG_HEARTBEAT: u32 = 0;
const MSG_SYS_STATUS: u32 = 1;
const MSG_GPS_RAW_INT: u32 = 24;
const MSG_ATTITUDE: u32 = 30;
const MSG_GLOBAL_POSITION_INT: u32 = 33;
const MSG_VFR_HUD: u32 = 74;
const MSG_SIM_STATE: u32 = 108;
const MSG_BATTERY_STATUS: u32 = 147;
const MSG_AUTOPILOT_VERSION: u32 = 148;
const MSG_SIMSTATE: u32 = 164;
const MSG_EKF_STATUS_REPORT: u32 = 193;
const MSG_ESTIMATOR_STATUS: u32 = 230;
const MSG_HOME_POSITION: u32 = 242;
const MSG_EXTENDED_SYS_STATE: u32 = 245;

// Its own module so that the mission server can name it without importing the autopilot
// that owns the server (no import cycle between the two).
pub use crate::personality::Personality;

/// How to start a simulated autopilot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimOptions {
    pub autopilot: Personality,
    /// Home on the ground (altitude above mean sea level); the vehicle starts there.
    pub home: GeoPoint,
    pub seed: u64,
    pub system_id: u8,
    /// Simulated seconds from boot until the estimator trusts its position; `None`: the
    /// firmware's own timeline ([`EkfTimeline::firmware`]). Tests that are not about start-up
    /// set it short.
    pub ekf_ready_s: Option<f64>,
}

/// When the estimator reaches each stage after boot (simulated time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EkfTimeline {
    /// The filter is initialised: attitude good, no horizontal position.
    pub initialised: Duration,
    /// The GPS is detected and reports a fix.
    pub gps_detected: Duration,
    /// The EKF origin and home are set (ArduPilot); GLOBAL_POSITION_INT and HOME_POSITION start.
    pub origin_set: Duration,
    /// The EKF uses the GPS: absolute position trusted, position modes allowed.
    pub position_trusted: Duration,
    /// The pre-arm checks pass (a little after the position is trusted).
    pub arming_ready: Duration,
}

impl EkfTimeline {
    /// The firmware's own timeline, as measured on SITL 4.7.0-dev and PX4 SIH
    /// (`/work/sitl/NOTES.md` §5): ArduCopter EKF3 initialised 4.8 s, GPS 10.5 s, origin and
    /// home 20.4 s, "EKF3 IMU0 is using GPS" 42 s, first arm accepted 44 s; PX4 GPS fix 2.1 s,
    /// home 2.5 s, ESTIMATOR_STATUS 1023 at 3.0 s, first arm accepted 5.0 s.
    pub fn firmware(personality: Personality) -> EkfTimeline {
        let s = Duration::from_secs_f64;
        match personality {
            Personality::ArduPilot => EkfTimeline {
                initialised: s(4.8),
                gps_detected: s(10.5),
                origin_set: s(20.4),
                position_trusted: s(42.0),
                arming_ready: s(44.0),
            },
            Personality::Px4 => EkfTimeline {
                initialised: s(1.0),
                gps_detected: s(2.1),
                origin_set: s(2.5),
                position_trusted: s(3.0),
                arming_ready: s(5.0),
            },
        }
    }

    /// The firmware's timeline scaled so that the position is trusted after `ready_s`.
    pub fn scaled(personality: Personality, ready_s: f64) -> EkfTimeline {
        let full = EkfTimeline::firmware(personality);
        let ready_s = if ready_s.is_finite() {
            ready_s.clamp(0.0, 3600.0)
        } else {
            0.0
        };
        let factor = ready_s / full.position_trusted.as_secs_f64();
        let scale = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * factor);
        EkfTimeline {
            initialised: scale(full.initialised),
            gps_detected: scale(full.gps_detected),
            origin_set: scale(full.origin_set),
            position_trusted: scale(full.position_trusted),
            arming_ready: scale(full.arming_ready),
        }
    }
}

/// ArduCopter GUIDED's sub-mode, which decides when the position controller restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuidedSub {
    /// On entering GUIDED (`init` starts velocity-acceleration control).
    VelAccel,
    TakeOff,
    Pos,
}

/// Flight modes of both firmwares; `custom_mode` encodes them per personality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightMode {
    /// ArduCopter STABILIZE (0) / PX4 MANUAL.
    Manual,
    /// ArduCopter ALT_HOLD (2) / PX4 ALTCTL.
    AltHold,
    /// ArduCopter POSHOLD (16) / PX4 POSCTL.
    PosHold,
    /// ArduCopter AUTO (3) / PX4 AUTO.MISSION.
    Mission,
    /// ArduCopter GUIDED (4) / PX4 OFFBOARD.
    Guided,
    /// ArduCopter LOITER (5) / PX4 AUTO.LOITER (Hold).
    Loiter,
    /// ArduCopter RTL (6) / PX4 AUTO.RTL.
    Rtl,
    /// ArduCopter LAND (9) / PX4 AUTO.LAND.
    Land,
    /// ArduCopter BRAKE (17); PX4 has none.
    Brake,
    /// PX4 AUTO.TAKEOFF; ArduCopter has none (takeoff happens in GUIDED).
    Takeoff,
}

const ALL_MODES: [FlightMode; 10] = [
    FlightMode::Manual,
    FlightMode::AltHold,
    FlightMode::PosHold,
    FlightMode::Mission,
    FlightMode::Guided,
    FlightMode::Loiter,
    FlightMode::Rtl,
    FlightMode::Land,
    FlightMode::Brake,
    FlightMode::Takeoff,
];

const PX4_MAIN_MANUAL: u32 = 1;
const PX4_MAIN_ALTCTL: u32 = 2;
const PX4_MAIN_POSCTL: u32 = 3;
const PX4_MAIN_AUTO: u32 = 4;
const PX4_MAIN_OFFBOARD: u32 = 6;
const PX4_AUTO_TAKEOFF: u32 = 2;
const PX4_AUTO_LOITER: u32 = 3;
const PX4_AUTO_MISSION: u32 = 4;
const PX4_AUTO_RTL: u32 = 5;
const PX4_AUTO_LAND: u32 = 6;

fn px4_mode(main: u32, sub: u32) -> u32 {
    (main << 16) | (sub << 24)
}

impl FlightMode {
    /// The firmware's `custom_mode`, or `None` if this firmware has no such mode.
    pub fn custom_mode(self, personality: Personality) -> Option<u32> {
        use FlightMode::*;
        match personality {
            Personality::ArduPilot => Some(match self {
                Manual => 0,
                AltHold => 2,
                Mission => 3,
                Guided => 4,
                Loiter => 5,
                Rtl => 6,
                Land => 9,
                PosHold => 16,
                Brake => 17,
                Takeoff => return None,
            }),
            Personality::Px4 => Some(match self {
                Manual => px4_mode(PX4_MAIN_MANUAL, 0),
                AltHold => px4_mode(PX4_MAIN_ALTCTL, 0),
                PosHold => px4_mode(PX4_MAIN_POSCTL, 0),
                Mission => px4_mode(PX4_MAIN_AUTO, PX4_AUTO_MISSION),
                Guided => px4_mode(PX4_MAIN_OFFBOARD, 0),
                Loiter => px4_mode(PX4_MAIN_AUTO, PX4_AUTO_LOITER),
                Rtl => px4_mode(PX4_MAIN_AUTO, PX4_AUTO_RTL),
                Land => px4_mode(PX4_MAIN_AUTO, PX4_AUTO_LAND),
                Takeoff => px4_mode(PX4_MAIN_AUTO, PX4_AUTO_TAKEOFF),
                Brake => return None,
            }),
        }
    }

    /// Decodes a `custom_mode`; PX4 sub-modes only count for the AUTO main mode.
    pub fn from_custom_mode(personality: Personality, custom_mode: u32) -> Option<FlightMode> {
        let custom_mode = match personality {
            Personality::ArduPilot => custom_mode,
            Personality::Px4 => {
                let main = (custom_mode >> 16) & 0xff;
                let sub = if main == PX4_MAIN_AUTO {
                    (custom_mode >> 24) & 0xff
                } else {
                    0
                };
                px4_mode(main, sub)
            }
        };
        ALL_MODES
            .into_iter()
            .find(|m| m.custom_mode(personality) == Some(custom_mode))
    }

    /// The name the firmware's ground stations show.
    pub fn name(self, personality: Personality) -> &'static str {
        use FlightMode::*;
        match personality {
            Personality::ArduPilot => match self {
                Manual => "STABILIZE",
                AltHold => "ALT_HOLD",
                Mission => "AUTO",
                Guided => "GUIDED",
                Loiter => "LOITER",
                Rtl => "RTL",
                Land => "LAND",
                PosHold => "POSHOLD",
                Brake => "BRAKE",
                Takeoff => "TAKEOFF",
            },
            Personality::Px4 => match self {
                Manual => "MANUAL",
                AltHold => "ALTCTL",
                PosHold => "POSCTL",
                Mission => "AUTO.MISSION",
                Guided => "OFFBOARD",
                Loiter => "AUTO.LOITER",
                Rtl => "AUTO.RTL",
                Land => "AUTO.LAND",
                Takeoff => "AUTO.TAKEOFF",
                Brake => "BRAKE",
            },
        }
    }

    fn requires_position(self) -> bool {
        !matches!(
            self,
            FlightMode::Manual | FlightMode::AltHold | FlightMode::Land
        )
    }
}

/// Something a person or a test watching the simulator wants to see, one line each.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    ModeChanged(&'static str),
    Armed,
    Disarmed,
    /// A COMMAND_LONG or COMMAND_INT addressed to the vehicle, and its result.
    Command {
        name: String,
        from_system: u32,
        from_component: u8,
        result: MavResult,
    },
    /// The first heartbeat from the companion component since the simulator started.
    CompanionHeartbeatSeen,
    CompanionHeartbeatLost,
    CompanionHeartbeatBack,
    /// A STATUSTEXT the vehicle sent.
    StatusText(String),
    /// A mission's camera item (`DO_DIGICAM_CONTROL`, `IMAGE_START_CAPTURE`) ran.
    CameraTrigger {
        item: u16,
    },
}

impl fmt::Display for SimEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimEvent::ModeChanged(name) => write!(f, "mode {name}"),
            SimEvent::Armed => write!(f, "armed"),
            SimEvent::Disarmed => write!(f, "disarmed"),
            SimEvent::Command {
                name,
                from_system,
                from_component,
                result,
            } => write!(
                f,
                "command {name} from {from_system}/{from_component} -> {result:?}"
            ),
            SimEvent::CompanionHeartbeatSeen => write!(f, "companion heartbeat seen"),
            SimEvent::CompanionHeartbeatLost => write!(f, "companion heartbeat lost"),
            SimEvent::CompanionHeartbeatBack => write!(f, "companion heartbeat back"),
            SimEvent::StatusText(text) => write!(f, "statustext {text}"),
            SimEvent::CameraTrigger { item } => write!(f, "camera trigger at item {item}"),
        }
    }
}

/// Counters of input that was not acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Messages for another system, or ignored in the present state.
    pub ignored: u64,
    /// Malformed or out-of-range content (NaN coordinates, unknown parameters).
    pub rejected: u64,
    /// Dropped by an injected link drop.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Param {
    name: &'static str,
    value: f32,
    kind: MavParamType,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    message_id: u32,
    default_interval: Option<Duration>,
    interval: Option<Duration>,
    next_due: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RtlStage {
    Climb,
    Return,
    Descend,
}

/// A COMMAND_LONG or COMMAND_INT, normalised.
#[derive(Debug, Clone, Copy)]
struct Command {
    command: MavCmd,
    params: [f32; 4],
    /// Latitude for position commands: degrees (COMMAND_INT x / 1e7, COMMAND_LONG param5).
    x: f64,
    y: f64,
    z: f32,
    frame: Option<MavFrame>,
}

/// The simulated ArduCopter / PX4 multicopter. See the module documentation for the call
/// order and behaviour.
#[derive(Debug, Clone)]
pub struct SimAutopilot {
    personality: Personality,
    system_id: u8,
    home: GeoPoint,
    physics: Physics,
    physics_time: Duration,
    mode: FlightMode,
    armed: bool,
    /// Since when the vehicle has been armed on the ground.
    grounded_since: Option<Duration>,
    has_flown: bool,
    takeoff_altitude_m: Option<f64>,
    rtl_stage: RtlStage,
    /// The altitude this RTL returns at, fixed when it starts (`build_path`).
    rtl_return_alt_m: Option<f64>,
    velocity_target_at: Option<Duration>,
    terminated: bool,
    gps_disabled: bool,
    /// The autopilot's own fence is breached (its action taken once, until it clears).
    fence_breached: bool,
    params: Vec<Param>,
    streams: Vec<Stream>,
    /// Extra telemetry (`--extra-telemetry-hz`): frames per second of the high-rate mix on
    /// top of the requested streams, the fraction not yet sent, and where in the mix it is.
    extra_telemetry_hz: f64,
    extra_telemetry_carry: f64,
    extra_telemetry_at: Option<Duration>,
    extra_telemetry_next: usize,
    outbox: VecDeque<MavMessage>,
    events: VecDeque<SimEvent>,
    link_drop_until: Option<Duration>,
    link_drop_pending_s: Option<f64>,
    companion_heartbeat_at: Option<Duration>,
    companion_lost: bool,
    offboard_setpoint_at: Option<Duration>,
    noise: SplitMix64,
    counters: SimCounters,
    /// The latest simulated time seen (inputs and steps).
    clock: Duration,
    ekf: EkfTimeline,
    /// ArduCopter GUIDED: sub-mode and the position controller's horizontal speed.
    guided_sub: GuidedSub,
    guided_speed_m_s: f64,
    /// ArduCopter RTL's cruise speed (from `RTL_SPEED`, or a `DO_CHANGE_SPEED` in RTL).
    rtl_speed_m_s: f64,
    /// PX4 navigator's speed for the next setpoint (≤ 0: default) and the current setpoint's.
    px4_cruise_next_m_s: f64,
    px4_cruise_m_s: f64,
    /// PX4: the last mode that allows arming, where it returns after disarming.
    px4_mode_after_disarm: FlightMode,
    /// The mission, fence and rally lists and their protocol (`sim::mission`).
    missions: MissionServer,
    /// AUTO's progress through the mission (`autopilot/auto.rs`).
    auto: auto::AutoState,
    /// SETUP_SIGNING keys for the shell to store and activate (ArduPilot).
    signing_setups: VecDeque<StoredKey>,
}

impl SimAutopilot {
    pub fn new(options: SimOptions) -> Self {
        let personality = options.autopilot;
        let mut sim = SimAutopilot {
            personality,
            system_id: options.system_id,
            home: options.home,
            physics: Physics::new(options.seed),
            physics_time: Duration::ZERO,
            mode: match personality {
                Personality::ArduPilot => FlightMode::Manual,
                // PX4 SIH boots in AUTO.LOITER (Hold): /work/sitl/NOTES.md §6.
                Personality::Px4 => FlightMode::Loiter,
            },
            armed: false,
            grounded_since: None,
            has_flown: false,
            takeoff_altitude_m: None,
            rtl_stage: RtlStage::Climb,
            rtl_return_alt_m: None,
            velocity_target_at: None,
            terminated: false,
            gps_disabled: false,
            fence_breached: false,
            params: default_params(personality),
            streams: default_streams(personality),
            extra_telemetry_hz: 0.0,
            extra_telemetry_carry: 0.0,
            extra_telemetry_at: None,
            extra_telemetry_next: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            link_drop_until: None,
            link_drop_pending_s: None,
            companion_heartbeat_at: None,
            companion_lost: false,
            offboard_setpoint_at: None,
            // Sensor noise has its own stream so it never changes the flight.
            noise: SplitMix64::new(options.seed ^ 0x005E_ED0F_5E45_0125),
            counters: SimCounters::default(),
            clock: Duration::ZERO,
            ekf: match options.ekf_ready_s {
                Some(ready_s) => EkfTimeline::scaled(personality, ready_s),
                None => EkfTimeline::firmware(personality),
            },
            guided_sub: GuidedSub::VelAccel,
            guided_speed_m_s: 0.0,
            rtl_speed_m_s: 0.0,
            px4_cruise_next_m_s: -1.0,
            px4_cruise_m_s: -1.0,
            px4_mode_after_disarm: FlightMode::Loiter,
            signing_setups: VecDeque::new(),
            missions: MissionServer::new(personality, options.system_id, AUTOPILOT_COMPONENT_ID),
            auto: auto::AutoState::new(),
        };
        if personality == Personality::ArduPilot {
            // SITL's quad: a 3S pack whose voltage does not follow its charge.
            let battery = sim.physics.battery_mut();
            battery.cells = 3.0;
            battery.capacity_mah = 0.0;
        }
        sim.apply_params();
        sim.guided_speed_m_s = sim.wpnav_speed_m_s();
        sim.rtl_speed_m_s = sim.wpnav_speed_m_s();
        sim
    }

    // ----- inputs -----

    /// A frame from any link.
    pub fn handle_message(&mut self, now: Duration, header: &MavHeader, message: &MavMessage) {
        self.clock = self.clock.max(now);
        if self.silent(now) {
            self.counters.dropped += 1;
            return;
        }
        if let MavMessage::HEARTBEAT(_) = message {
            if header.component_id == COMPANION_COMPONENT_ID {
                if self.companion_heartbeat_at.is_none() {
                    self.events.push_back(SimEvent::CompanionHeartbeatSeen);
                }
                self.companion_heartbeat_at = Some(now);
                if self.companion_lost {
                    self.companion_lost = false;
                    self.events.push_back(SimEvent::CompanionHeartbeatBack);
                }
            }
            return;
        }
        if !self.addressed_to_me(message) {
            self.counters.ignored += 1;
            return;
        }
        if self.handle_mission_message(now, header, message) {
            return;
        }
        match message {
            MavMessage::COMMAND_LONG(c) => {
                let command = Command {
                    command: c.command,
                    params: [c.param1, c.param2, c.param3, c.param4],
                    x: c.param5 as f64,
                    y: c.param6 as f64,
                    z: c.param7,
                    frame: None,
                };
                self.handle_command(now, header, command);
            }
            MavMessage::COMMAND_INT(c) => {
                let command = Command {
                    command: c.command,
                    params: [c.param1, c.param2, c.param3, c.param4],
                    x: c.x as f64 / 1e7,
                    y: c.y as f64 / 1e7,
                    z: c.z,
                    frame: Some(c.frame),
                };
                self.handle_command(now, header, command);
            }
            MavMessage::SET_MODE(m) => {
                let result = if m
                    .base_mode
                    .contains(MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED)
                {
                    self.request_mode_number(now, m.custom_mode)
                } else {
                    MavResult::MAV_RESULT_DENIED
                };
                // Both firmwares answer SET_MODE with an ACK for DO_SET_MODE.
                self.ack(header, MavCmd::MAV_CMD_DO_SET_MODE, result);
            }
            MavMessage::SET_POSITION_TARGET_GLOBAL_INT(t) => self.handle_global_target(now, t),
            MavMessage::SET_POSITION_TARGET_LOCAL_NED(t) => self.handle_local_target(now, t),
            MavMessage::PARAM_REQUEST_LIST(_) => {
                for index in 0..self.params.len() {
                    self.send_param(index);
                }
            }
            MavMessage::PARAM_REQUEST_READ(r) => {
                let index = if r.param_index >= 0 {
                    Some(r.param_index as usize).filter(|i| *i < self.params.len())
                } else {
                    self.param_index(&r.param_id)
                };
                match index {
                    Some(i) => self.send_param(i),
                    None => self.counters.rejected += 1,
                }
            }
            MavMessage::PARAM_SET(p) => self.handle_param_set(p),
            MavMessage::SETUP_SIGNING(s) if self.personality == Personality::ArduPilot => {
                self.handle_setup_signing(s)
            }
            // The PX4 this simulator follows (the SIH build of sitl.md, December 2024) has no
            // signing: SETUP_SIGNING is ignored like any message it does not handle.
            _ => self.counters.ignored += 1,
        }
    }

    /// ArduPilot `GCS_MAVLINK::handle_setup_signing` (`GCS_Signing.cpp`): refused while
    /// armed, with a STATUSTEXT; otherwise the key and `initial_timestamp` go to storage and
    /// are loaded on every link at once (the shell does both: [`Self::poll_signing_setup`]).
    /// No ACK: the message has none.
    fn handle_setup_signing(&mut self, setup: &SETUP_SIGNING_DATA) {
        if self.armed {
            self.status_text(
                MavSeverity::MAV_SEVERITY_WARNING,
                "ERROR: Won't setup signing when armed",
            );
            return;
        }
        self.signing_setups.push_back(StoredKey {
            timestamp: setup.initial_timestamp,
            key: setup.secret_key,
        });
    }

    /// A key that SETUP_SIGNING asked to store and activate on every link.
    pub fn poll_signing_setup(&mut self) -> Option<StoredKey> {
        self.signing_setups.pop_front()
    }

    /// The shell could not store a SETUP_SIGNING key: said as ArduPilot says it, and
    /// nothing is activated.
    pub fn signing_save_failed(&mut self) {
        self.status_text(
            MavSeverity::MAV_SEVERITY_WARNING,
            "ERROR: Failed to save signing key",
        );
    }

    /// The GPS gives the time (detected, and not disabled): ArduPilot then raises its
    /// signing timestamps to it.
    pub fn gps_time_known(&self) -> bool {
        !self.gps_disabled && self.clock >= self.ekf.gps_detected
    }

    /// Advances the simulation to `now` and queues the telemetry that is due.
    pub fn step(&mut self, now: Duration) {
        self.clock = self.clock.max(now);
        while self.physics_time + PHYSICS_STEP <= now {
            self.physics.step(PHYSICS_STEP.as_secs_f64());
            self.physics_time += PHYSICS_STEP;
            let t = self.physics_time;
            self.tick_flight(t);
        }
        self.tick_missions(now);
        if let Some(seconds) = self.link_drop_pending_s.take() {
            self.link_drop_until = Some(now + Duration::from_secs_f64(seconds));
        }
        if let Some(until) = self.link_drop_until
            && now >= until
        {
            self.link_drop_until = None;
            self.set_param_value("SIM_LINK_DROP_S", 0.0);
        }
        if let Some(at) = self.companion_heartbeat_at
            && !self.companion_lost
            && now.saturating_sub(at) > COMPANION_HEARTBEAT_TIMEOUT
        {
            self.companion_lost = true;
            self.events.push_back(SimEvent::CompanionHeartbeatLost);
        }
        let silent = self.silent(now);
        for i in 0..self.streams.len() {
            let stream = self.streams[i];
            let Some(interval) = stream.interval else {
                continue;
            };
            if now < stream.next_due {
                continue;
            }
            // Skip missed slots rather than bursting after a pause.
            let mut next = stream.next_due + interval;
            if next <= now {
                next = now + interval;
            }
            self.streams[i].next_due = next;
            if !silent && let Some(message) = self.build(stream.message_id, now) {
                self.outbox.push_back(message);
            }
        }
        self.queue_extra_telemetry(now, silent);
    }

    /// Streams `hz` frames per second of ArduCopter's high-rate mix (ATTITUDE,
    /// GLOBAL_POSITION_INT, VFR_HUD, SYS_STATUS in turn, as the routing benchmark's fake
    /// autopilot sends) on top of the requested streams: a flight controller streaming at
    /// its loop rate, as the soak's load (2,000 frames/s), which `SET_MESSAGE_INTERVAL` cannot
    /// ask of this simulator (its streams are capped at the 50 Hz physics step). 0: off.
    pub fn set_extra_telemetry_hz(&mut self, hz: f64) {
        self.extra_telemetry_hz = if hz.is_finite() { hz.max(0.0) } else { 0.0 };
    }

    fn queue_extra_telemetry(&mut self, now: Duration, silent: bool) {
        const MIX: [u32; 4] = [
            MSG_ATTITUDE,
            MSG_GLOBAL_POSITION_INT,
            MSG_VFR_HUD,
            MSG_SYS_STATUS,
        ];
        // After a pause (a stalled process) the missed frames are skipped, not burst.
        const CATCH_UP_MAX: Duration = Duration::from_millis(100);
        if self.extra_telemetry_hz <= 0.0 {
            return;
        }
        let since = self.extra_telemetry_at.map_or(Duration::ZERO, |at| {
            now.saturating_sub(at).min(CATCH_UP_MAX)
        });
        self.extra_telemetry_at = Some(now);
        self.extra_telemetry_carry += self.extra_telemetry_hz * since.as_secs_f64();
        let due = self.extra_telemetry_carry.floor();
        self.extra_telemetry_carry -= due;
        if silent {
            return;
        }
        for _ in 0..due as u64 {
            let id = MIX[self.extra_telemetry_next % MIX.len()];
            self.extra_telemetry_next = self.extra_telemetry_next.wrapping_add(1);
            if let Some(message) = self.build(id, now) {
                self.outbox.push_back(message);
            }
        }
    }

    // ----- outputs -----

    /// The next message to send on every link.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<MavMessage> {
        if self.silent(now) {
            self.counters.dropped += self.outbox.len() as u64;
            self.outbox.clear();
            return None;
        }
        self.outbox.pop_front()
    }

    /// The next thing worth a line of output.
    pub fn poll_event(&mut self) -> Option<SimEvent> {
        self.events.pop_front()
    }

    // ----- observation (tests, the shell) -----

    pub fn mode(&self) -> FlightMode {
        self.mode
    }

    pub fn armed(&self) -> bool {
        self.armed
    }

    pub fn physics(&self) -> &Physics {
        &self.physics
    }

    pub fn counters(&self) -> SimCounters {
        self.counters
    }

    /// Height above home.
    pub fn altitude_m(&self) -> f64 {
        self.physics.altitude_m()
    }

    /// One of the autopilot's lists as stored (the mission without ArduPilot's home slot).
    pub fn mission_list(
        &self,
        mission_type: MavMissionType,
    ) -> &[flight_companion_core::vehicle::mission::MissionItem] {
        self.missions.list(mission_type)
    }

    /// Where the vehicle truly is.
    pub fn position(&self) -> GeoPoint {
        self.home.offset_by(&self.physics.position_ned_m())
    }

    // ----- commands -----

    fn handle_command(&mut self, now: Duration, header: &MavHeader, command: Command) {
        let result = self.execute(now, command);
        self.ack(header, command.command, result);
        self.events.push_back(SimEvent::Command {
            name: format!("{:?}", command.command),
            from_system: header.system_id,
            from_component: header.component_id,
            result,
        });
    }

    fn execute(&mut self, now: Duration, c: Command) -> MavResult {
        let [p1, p2, p3, _p4] = c.params;
        match c.command {
            MavCmd::MAV_CMD_COMPONENT_ARM_DISARM => {
                if p1 > 0.5 {
                    self.arm(now, p2)
                } else {
                    self.disarm_command(p2)
                }
            }
            MavCmd::MAV_CMD_DO_SET_MODE => {
                if (p1 as u32) & MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED.bits() as u32 == 0 {
                    return MavResult::MAV_RESULT_DENIED;
                }
                let custom_mode = match self.personality {
                    Personality::ArduPilot => p2 as u32,
                    Personality::Px4 => px4_mode(p2 as u32, p3 as u32),
                };
                self.request_mode_number(now, custom_mode)
            }
            MavCmd::MAV_CMD_NAV_TAKEOFF => self.takeoff(c.z),
            MavCmd::MAV_CMD_NAV_LAND => self.request_mode(now, FlightMode::Land),
            MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH => self.request_mode(now, FlightMode::Rtl),
            MavCmd::MAV_CMD_DO_REPOSITION => self.reposition(now, c),
            MavCmd::MAV_CMD_DO_CHANGE_SPEED => self.change_speed(p1, p2),
            MavCmd::MAV_CMD_DO_PAUSE_CONTINUE => self.pause_continue(now, p1 > 0.5),
            MavCmd::MAV_CMD_BATTERY_RESET if self.personality == Personality::ArduPilot => {
                self.battery_reset(p1, p2)
            }
            MavCmd::MAV_CMD_DO_FLIGHTTERMINATION => {
                if p1 > 0.5 {
                    self.terminate();
                }
                MavResult::MAV_RESULT_ACCEPTED
            }
            MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL => self.set_message_interval(now, p1, p2),
            MavCmd::MAV_CMD_GET_MESSAGE_INTERVAL => {
                match self.streams.iter().find(|s| s.message_id == p1 as u32) {
                    Some(stream) => {
                        let interval_us = stream
                            .interval
                            .map_or(-1, |i| i.as_micros().min(i32::MAX as u128) as i32);
                        self.outbox.push_back(MavMessage::MESSAGE_INTERVAL(
                            MESSAGE_INTERVAL_DATA {
                                interval_us,
                                message_id: p1 as u16,
                            },
                        ));
                        MavResult::MAV_RESULT_ACCEPTED
                    }
                    None => MavResult::MAV_RESULT_DENIED,
                }
            }
            MavCmd::MAV_CMD_REQUEST_MESSAGE => self.request_message(now, p1),
            MavCmd::MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES => {
                self.request_message(now, MSG_AUTOPILOT_VERSION as f32)
            }
            MavCmd::MAV_CMD_GET_HOME_POSITION => {
                self.request_message(now, MSG_HOME_POSITION as f32)
            }
            _ => MavResult::MAV_RESULT_UNSUPPORTED,
        }
    }

    fn refusal(&self) -> MavResult {
        match self.personality {
            Personality::ArduPilot => MavResult::MAV_RESULT_FAILED,
            Personality::Px4 => MavResult::MAV_RESULT_DENIED,
        }
    }

    fn arm(&mut self, now: Duration, p2: f32) -> MavResult {
        if self.armed {
            return MavResult::MAV_RESULT_ACCEPTED;
        }
        if self.terminated {
            self.status_text(
                MavSeverity::MAV_SEVERITY_CRITICAL,
                "Arming denied: terminated",
            );
            return self.refusal();
        }
        let forced = match self.personality {
            Personality::ArduPilot => p2 == ARDUPILOT_FORCE_ARM_MAGIC,
            Personality::Px4 => p2 == FORCE_DISARM_MAGIC,
        };
        if !forced {
            let checks = self.personality == Personality::Px4 || self.param("ARMING_CHECK") != 0.0;
            let reason = if checks && self.gps_disabled {
                Some(match self.personality {
                    Personality::ArduPilot => "PreArm: Need 3D Fix",
                    Personality::Px4 => "Preflight Fail: No valid global position",
                })
            } else if checks && self.clock < self.ekf.arming_ready {
                // AP_Arming.cpp, AP_Arming_Copter.cpp: the arming command's refusal reads
                // "Arm: <check>" (sitl.md/NOTES.md saw them in this order); PX4's commander
                // answers TEMPORARILY_REJECTED until its health checks pass.
                let text = match self.personality {
                    Personality::ArduPilot if !self.origin_set() => "Arm: AHRS: waiting for home",
                    Personality::ArduPilot => "Arm: Need Position Estimate",
                    Personality::Px4 => "Arming denied: Resolve system health failures first",
                };
                self.status_text(MavSeverity::MAV_SEVERITY_CRITICAL, text);
                return match self.personality {
                    Personality::ArduPilot => MavResult::MAV_RESULT_FAILED,
                    Personality::Px4 => MavResult::MAV_RESULT_TEMPORARILY_REJECTED,
                };
            } else if let Some(why) = checks.then(|| self.battery_arming_refusal()).flatten() {
                Some(why)
            } else if self.mode_prevents_arming() {
                Some(match self.personality {
                    Personality::ArduPilot => "Arm: Mode not armable",
                    Personality::Px4 => "Arming denied: mode not armable",
                })
            } else if self.mode.requires_position() && self.gps_disabled {
                Some(match self.personality {
                    Personality::ArduPilot => "Arm: Mode requires position",
                    Personality::Px4 => "Arming denied: mode requires global position",
                })
            } else {
                None
            };
            if let Some(reason) = reason {
                self.status_text(MavSeverity::MAV_SEVERITY_CRITICAL, reason);
                return self.refusal();
            }
        }
        self.armed = true;
        self.has_flown = false;
        self.grounded_since = Some(now);
        self.physics.set_target(Target::GroundIdle);
        self.events.push_back(SimEvent::Armed);
        MavResult::MAV_RESULT_ACCEPTED
    }

    fn disarm_command(&mut self, p2: f32) -> MavResult {
        if !self.armed {
            return MavResult::MAV_RESULT_ACCEPTED;
        }
        if !self.physics.on_ground() && p2 != FORCE_DISARM_MAGIC {
            let text = match self.personality {
                Personality::ArduPilot => "Disarm: vehicle is flying",
                Personality::Px4 => "Disarming denied: not landed",
            };
            self.status_text(MavSeverity::MAV_SEVERITY_CRITICAL, text);
            return self.refusal();
        }
        self.disarm();
        MavResult::MAV_RESULT_ACCEPTED
    }

    fn disarm(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        self.takeoff_altitude_m = None;
        self.grounded_since = None;
        self.physics.set_target(Target::MotorsOff);
        self.events.push_back(SimEvent::Disarmed);
        // PX4 (UserModeIntention::onDisarm): after disarming it returns to the last mode that
        // allows arming, so a landing or a return ends in Hold.
        if self.personality == Personality::Px4 && self.mode_prevents_arming() {
            self.set_mode(self.px4_mode_after_disarm);
        }
    }

    /// Modes the firmware will not arm in.
    fn mode_prevents_arming(&self) -> bool {
        matches!(
            self.mode,
            FlightMode::Rtl | FlightMode::Land | FlightMode::Mission | FlightMode::Brake
        )
    }

    fn terminate(&mut self) {
        self.terminated = true;
        self.takeoff_altitude_m = None;
        self.physics.set_target(Target::MotorsOff);
        match self.personality {
            // ArduCopter disarms at once (the motors stop; it falls).
            Personality::ArduPilot => self.disarm(),
            // PX4 locks the outputs; it reports armed until it is down.
            Personality::Px4 => self.status_text(
                MavSeverity::MAV_SEVERITY_EMERGENCY,
                "Flight termination active",
            ),
        }
    }

    fn takeoff(&mut self, param7: f32) -> MavResult {
        let altitude_m = match self.personality {
            Personality::ArduPilot => {
                if self.mode != FlightMode::Guided || !self.armed || !self.physics.on_ground() {
                    return MavResult::MAV_RESULT_FAILED;
                }
                if !param7.is_finite() || param7 <= 0.0 {
                    return MavResult::MAV_RESULT_FAILED;
                }
                param7 as f64
            }
            Personality::Px4 => {
                if !self.armed
                    || !self.physics.on_ground()
                    || self.gps_disabled
                    || !self.position_trusted()
                {
                    self.status_text(
                        MavSeverity::MAV_SEVERITY_CRITICAL,
                        "Takeoff denied: not armed on the ground with a position",
                    );
                    return MavResult::MAV_RESULT_DENIED;
                }
                // navigator/takeoff.cpp: param7 is AMSL; NaN takes MIS_TAKEOFF_ALT above
                // where the vehicle is; it never goes below where it is.
                let here_m = self.physics.altitude_m();
                if param7.is_finite() {
                    (param7 as f64 - self.home.alt_amsl_m).max(here_m)
                } else {
                    here_m + self.param("MIS_TAKEOFF_ALT") as f64
                }
            }
        };
        match self.personality {
            Personality::Px4 => self.set_mode(FlightMode::Takeoff),
            Personality::ArduPilot => self.guided_sub = GuidedSub::TakeOff,
        }
        let here = self.physics.position_ned_m();
        self.takeoff_altitude_m = Some(altitude_m);
        self.has_flown = true;
        self.physics.set_target(Target::Position {
            ned_m: Vector3::new(here.x, here.y, -altitude_m),
        });
        MavResult::MAV_RESULT_ACCEPTED
    }

    fn reposition(&mut self, now: Duration, c: Command) -> MavResult {
        let change_mode = (c.params[1] as u32) & 1 == 1;
        if self.personality == Personality::Px4 && !change_mode {
            // Commander.cpp: a reposition that does not ask for the mode switch is unsupported.
            return MavResult::MAV_RESULT_UNSUPPORTED;
        }
        if !self.armed || self.physics.on_ground() || !self.position_ok() {
            return self.refusal();
        }
        let here = self.position();
        let lat_deg = if c.x.is_finite() && c.x != 0.0 {
            c.x
        } else {
            here.lat_deg
        };
        let lon_deg = if c.y.is_finite() && c.y != 0.0 {
            c.y
        } else {
            here.lon_deg
        };
        let alt_amsl_m = if !c.z.is_finite() {
            here.alt_amsl_m
        } else {
            match self.personality {
                // navigator_main.cpp: position_setpoint.alt = param7, above mean sea level,
                // whatever the frame field says.
                Personality::Px4 => c.z as f64,
                Personality::ArduPilot => match c.frame {
                    Some(
                        MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT
                        | MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
                        | MavFrame::MAV_FRAME_GLOBAL_TERRAIN_ALT
                        | MavFrame::MAV_FRAME_GLOBAL_TERRAIN_ALT_INT,
                    ) => self.home.alt_amsl_m + c.z as f64,
                    _ => c.z as f64,
                },
            }
        };
        if !(-90.0..=90.0).contains(&lat_deg) || !(-180.0..=180.0).contains(&lon_deg) {
            self.counters.rejected += 1;
            return MavResult::MAV_RESULT_DENIED;
        }
        let goal = self.home.ned_to(&GeoPoint {
            lat_deg,
            lon_deg,
            alt_amsl_m,
        });
        match self.personality {
            Personality::ArduPilot => {
                if self.mode != FlightMode::Guided {
                    if !change_mode {
                        return MavResult::MAV_RESULT_DENIED;
                    }
                    let result = self.request_mode(now, FlightMode::Guided);
                    if result != MavResult::MAV_RESULT_ACCEPTED {
                        return result;
                    }
                }
                // param1 (speed) and param4 (yaw) are not read: set_destination(loc, false, 0..).
                self.guided_position_target();
            }
            Personality::Px4 => {
                let entering = self.mode != FlightMode::Loiter;
                if entering {
                    self.set_mode(FlightMode::Loiter);
                }
                let speed = c.params[0];
                self.px4_cruise_m_s = if speed > 0.0 && speed.is_finite() {
                    speed as f64
                } else if entering {
                    -1.0
                } else {
                    self.px4_cruise_next_m_s
                };
                // PX4 takes the reposition's yaw in radians (PositionSetpoint.yaw).
                let yaw = c.params[3];
                self.physics
                    .set_yaw_target(yaw.is_finite().then_some(yaw as f64));
            }
        }
        self.physics.set_target(Target::Position { ned_m: goal });
        MavResult::MAV_RESULT_ACCEPTED
    }

    /// ArduCopter: a position target restarts the position controller (at `WPNAV_SPEED`)
    /// unless GUIDED already flies one (`ModeGuided::set_destination` → `pos_control_start`).
    fn guided_position_target(&mut self) {
        if self.guided_sub != GuidedSub::Pos {
            self.guided_sub = GuidedSub::Pos;
            self.guided_speed_m_s = self.wpnav_speed_m_s();
        }
    }

    fn change_speed(&mut self, speed_type: f32, speed_m_s: f32) -> MavResult {
        match self.personality {
            Personality::ArduPilot => {
                // GCS_MAVLink_Copter.cpp handle_MAV_CMD_DO_CHANGE_SPEED.
                if !(speed_m_s.is_finite() && speed_m_s > 0.0) {
                    return MavResult::MAV_RESULT_DENIED;
                }
                let speed = speed_m_s as f64;
                let accepted = match (speed_type as u32, self.mode) {
                    (4.., _) => return MavResult::MAV_RESULT_DENIED,
                    (0 | 1, FlightMode::Guided) => {
                        self.guided_speed_m_s = speed;
                        true
                    }
                    (0 | 1, FlightMode::Rtl) => {
                        // AC_WPNav::set_speed_NE_cms ignores speeds below its minimum.
                        if speed >= WPNAV_SPEED_MIN_M_S {
                            self.rtl_speed_m_s = speed;
                        }
                        true
                    }
                    (2, FlightMode::Guided | FlightMode::Rtl) => {
                        self.physics.limits_mut().speed_up_m_s_max = speed.clamp(0.1, 10.0);
                        true
                    }
                    (3, FlightMode::Guided | FlightMode::Rtl) => {
                        self.physics.limits_mut().speed_down_m_s_max = speed.clamp(0.1, 10.0);
                        true
                    }
                    // AUTO: ModeAuto::set_speed_xy_cms, the speed of the legs from here on
                    // (as the mission's own DO_CHANGE_SPEED item).
                    (0 | 1, FlightMode::Mission) => {
                        self.auto.speed_m_s = Some(speed);
                        true
                    }
                    // Climb and descent rates: without a mission there is nothing to fly.
                    (_, FlightMode::Mission) => true,
                    _ => false,
                };
                if accepted {
                    MavResult::MAV_RESULT_ACCEPTED
                } else {
                    MavResult::MAV_RESULT_FAILED
                }
            }
            Personality::Px4 => {
                // navigator_main.cpp: any mode; the next setpoint takes it; ≤ 0 resets.
                self.px4_cruise_next_m_s = if speed_m_s.is_finite() && speed_m_s > 0.0 {
                    speed_m_s as f64
                } else {
                    -1.0
                };
                MavResult::MAV_RESULT_ACCEPTED
            }
        }
    }

    /// `MAV_CMD_BATTERY_RESET`: the remaining percentage of the masked batteries.
    fn battery_reset(&mut self, mask: f32, percent: f32) -> MavResult {
        if (mask as u32) & 1 == 0 || self.param("BATT_MONITOR") == 0.0 || !percent.is_finite() {
            return MavResult::MAV_RESULT_FAILED;
        }
        let used = (100.0 - f64::from(percent).clamp(0.0, 100.0)) * 0.01;
        self.physics.battery_mut().consumed_mah = used * self.param("BATT_CAPACITY") as f64;
        MavResult::MAV_RESULT_ACCEPTED
    }

    fn set_message_interval(
        &mut self,
        now: Duration,
        message_id: f32,
        interval_us: f32,
    ) -> MavResult {
        let id = message_id as u32;
        if self.build(id, now).is_none() && id != MSG_GLOBAL_POSITION_INT {
            return MavResult::MAV_RESULT_DENIED;
        }
        let index = match self.streams.iter().position(|s| s.message_id == id) {
            Some(i) => i,
            None => {
                self.streams.push(Stream {
                    message_id: id,
                    default_interval: None,
                    interval: None,
                    next_due: now,
                });
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index];
        stream.interval = if interval_us == 0.0 {
            stream.default_interval
        } else if interval_us < 0.0 || !interval_us.is_finite() {
            None
        } else {
            // At most 50 Hz: the physics steps no faster.
            Some(Duration::from_micros(interval_us as u64).max(PHYSICS_STEP))
        };
        stream.next_due = now;
        MavResult::MAV_RESULT_ACCEPTED
    }

    fn request_message(&mut self, now: Duration, message_id: f32) -> MavResult {
        match self.build(message_id as u32, now) {
            Some(message) => {
                self.outbox.push_back(message);
                MavResult::MAV_RESULT_ACCEPTED
            }
            None => MavResult::MAV_RESULT_DENIED,
        }
    }

    fn ack(&mut self, header: &MavHeader, command: MavCmd, result: MavResult) {
        self.outbox
            .push_back(MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
                command,
                result,
                progress: 0,
                result_param2: 0,
                target_system: u8::try_from(header.system_id).unwrap_or(0),
                target_component: header.component_id,
            }));
    }

    fn status_text(&mut self, severity: MavSeverity, text: &str) {
        self.outbox
            .push_back(MavMessage::STATUSTEXT(STATUSTEXT_DATA {
                severity,
                text: text.into(),
                id: 0,
                chunk_seq: 0,
            }));
        self.events.push_back(SimEvent::StatusText(text.to_owned()));
    }

    fn addressed_to_me(&self, message: &MavMessage) -> bool {
        let system_ok = message
            .target_system_id()
            .is_none_or(|s| s == 0 || s == self.system_id);
        let component_ok = message
            .target_component_id()
            .is_none_or(|c| c == 0 || c == AUTOPILOT_COMPONENT_ID);
        system_ok && component_ok
    }

    // ----- modes -----

    fn request_mode_number(&mut self, now: Duration, custom_mode: u32) -> MavResult {
        match FlightMode::from_custom_mode(self.personality, custom_mode) {
            Some(mode) => self.request_mode(now, mode),
            None => {
                self.counters.rejected += 1;
                self.mode_refusal(&format!("Unknown mode {custom_mode}"))
            }
        }
    }

    fn mode_refusal(&mut self, reason: &str) -> MavResult {
        self.status_text(MavSeverity::MAV_SEVERITY_WARNING, reason);
        match self.personality {
            Personality::ArduPilot => MavResult::MAV_RESULT_FAILED,
            Personality::Px4 => MavResult::MAV_RESULT_TEMPORARILY_REJECTED,
        }
    }

    /// A mode change asked from outside, with the firmware's refusals.
    fn request_mode(&mut self, now: Duration, mode: FlightMode) -> MavResult {
        if mode.custom_mode(self.personality).is_none() {
            return self.mode_refusal("Unknown mode");
        }
        if mode == self.mode {
            return MavResult::MAV_RESULT_ACCEPTED;
        }
        let name = mode.name(self.personality);
        // ArduCopter/mode.cpp Copter::set_mode: ignore_checks = !motors->armed(), "we rely on
        // the arming check"; PX4 checks a mode's requirements armed or not.
        let checks = self.armed || self.personality == Personality::Px4;
        let reason = if checks && mode.requires_position() && !self.position_ok() {
            Some("requires position")
        } else if mode == FlightMode::Mission
            && let Some(refusal) = self.auto_refusal()
        {
            Some(refusal)
        } else if self.personality == Personality::Px4
            && mode == FlightMode::Guided
            && self
                .offboard_setpoint_at
                .is_none_or(|at| now.saturating_sub(at) > OFFBOARD_SETPOINT_MAX_AGE)
        {
            Some("no offboard setpoints")
        } else if self.personality == Personality::Px4 && mode == FlightMode::Takeoff && !self.armed
        {
            Some("not armed")
        } else if self.terminated {
            Some("terminated")
        } else {
            None
        };
        if let Some(reason) = reason {
            let text = match self.personality {
                Personality::ArduPilot => format!("Mode change to {name} failed: {reason}"),
                Personality::Px4 => format!("Switching to {name} is not possible: {reason}"),
            };
            return self.mode_refusal(&text);
        }
        self.set_mode(mode);
        MavResult::MAV_RESULT_ACCEPTED
    }

    /// The autopilot's own fence, which holds whatever the companion does (or if it is dead).
    ///
    /// ArduCopter (`AC_Fence::check`, `libraries/AC_Fence/AC_Fence.cpp`; the action in
    /// `Copter::fence_check`, `ArduCopter/fence.cpp`): with `FENCE_ENABLE` = 1, `FENCE_TYPE`
    /// bit 0 breaches above `FENCE_ALT_MAX` (m above home), bit 1 beyond `FENCE_RADIUS` from
    /// home; a new breach in the air takes `FENCE_ACTION`: 0 report only, 1 and 3 and 5 RTL
    /// (the SmartRTL variants fall back to RTL), 2 LAND, 4 BRAKE. Bit 2 checks the
    /// fence list's polygons and circles (`sim::fence`, `AC_PolyFence_loader::breached`).
    ///
    /// PX4 (`Geofence::isInsidePolygonOrCircle` and `Geofence::checkAll`,
    /// `src/modules/navigator/geofence.cpp`; the action in the commander's failsafe):
    /// `GF_MAX_HOR_DIST` and `GF_MAX_VER_DIST` (0 disables each) around home; `GF_ACTION`:
    /// 0 none, 1 warn, 2 Hold, 3 Return, 5 Land (4, terminate, is not simulated: reported
    /// only); the fence list's polygons and circles are always checked when uploaded.
    fn check_fence(&mut self, on_ground: bool) {
        let ned = self.physics.position_ned_m();
        let horizontal_m = ned.x.hypot(ned.y);
        let altitude_m = self.physics.altitude_m();
        let (breach, action) = match self.personality {
            Personality::ArduPilot => {
                let types = self.param("FENCE_TYPE") as i32;
                let enabled = self.param("FENCE_ENABLE") >= 0.5;
                let above = types & 1 != 0 && altitude_m > f64::from(self.param("FENCE_ALT_MAX"));
                let beyond = types & 2 != 0 && horizontal_m > f64::from(self.param("FENCE_RADIUS"));
                let zone = types & 4 != 0 && self.fence_zone_breached(&ned);
                let action = match self.param("FENCE_ACTION") as i32 {
                    1 | 3 | 5 => Some(FlightMode::Rtl),
                    2 => Some(FlightMode::Land),
                    4 => Some(FlightMode::Brake),
                    _ => None,
                };
                (enabled && (above || beyond || zone), action)
            }
            Personality::Px4 => {
                let horizontal_max = f64::from(self.param("GF_MAX_HOR_DIST"));
                let vertical_max = f64::from(self.param("GF_MAX_VER_DIST"));
                let beyond = horizontal_max > 0.0 && horizontal_m > horizontal_max;
                let above = vertical_max > 0.0 && altitude_m > vertical_max;
                let zone = self.fence_zone_breached(&ned);
                let action = match self.param("GF_ACTION") as i32 {
                    2 => Some(FlightMode::Loiter),
                    3 => Some(FlightMode::Rtl),
                    5 => Some(FlightMode::Land),
                    _ => None,
                };
                (beyond || above || zone, action)
            }
        };
        if !breach {
            self.fence_breached = false;
            return;
        }
        if self.fence_breached || !self.armed || on_ground {
            return;
        }
        self.fence_breached = true;
        let text = match self.personality {
            Personality::ArduPilot => "Fence Breached",
            Personality::Px4 => "Geofence violation",
        };
        self.status_text(MavSeverity::MAV_SEVERITY_CRITICAL, text);
        if let Some(mode) = action
            && !matches!(self.mode, FlightMode::Land)
        {
            self.set_mode(mode);
        }
    }

    /// True when the vehicle is outside an inclusion zone or inside an exclusion zone of the
    /// uploaded fence list.
    fn fence_zone_breached(&self, ned: &Vector3<f64>) -> bool {
        let items = self
            .missions
            .list(flight_companion_core::link::dialect::MavMissionType::MAV_MISSION_TYPE_FENCE);
        super::fence::breached_zone(items, &self.home, ned).is_some()
    }

    /// Enters a mode (no checks) and sets what the airframe does in it.
    fn set_mode(&mut self, mode: FlightMode) {
        if mode != self.mode {
            self.mode = mode;
            if !self.mode_prevents_arming() {
                self.px4_mode_after_disarm = mode;
            }
            self.events
                .push_back(SimEvent::ModeChanged(mode.name(self.personality)));
            match (self.personality, mode) {
                // ModeGuided::init: velocity-acceleration control at WPNAV_SPEED.
                // Entering AUTO resumes the current item at the next step (`autopilot/auto.rs`).
                (_, FlightMode::Mission) => self.enter_auto(),
                (Personality::ArduPilot, FlightMode::Guided) => {
                    self.guided_sub = GuidedSub::VelAccel;
                    self.guided_speed_m_s = self.wpnav_speed_m_s();
                }
                // ModeRTL::init: wp_and_spline_init_cm(RTL_SPEED), 0 meaning WPNAV_SPEED.
                (Personality::ArduPilot, FlightMode::Rtl) => {
                    let rtl = self.param("RTL_SPEED") as f64 / 100.0;
                    self.rtl_speed_m_s = if rtl > 0.0 {
                        rtl
                    } else {
                        self.wpnav_speed_m_s()
                    };
                }
                // Loiter, RTL, Land and Takeoff reset the navigator's cruising speed on
                // activation (loiter.cpp, rtl_direct.cpp, land.cpp, takeoff.cpp).
                (Personality::Px4, _) => {
                    self.px4_cruise_next_m_s = -1.0;
                    self.px4_cruise_m_s = -1.0;
                }
                _ => {}
            }
        }
        self.physics.set_yaw_target(None);
        self.takeoff_altitude_m = None;
        self.velocity_target_at = None;
        self.rtl_stage = RtlStage::Climb;
        self.rtl_return_alt_m = None;
        if !self.armed || self.terminated {
            return;
        }
        if self.physics.on_ground() {
            self.physics.set_target(Target::GroundIdle);
            return;
        }
        self.physics.set_target(match mode {
            FlightMode::Land | FlightMode::Rtl => Target::Descend {
                speed_m_s: self.land_speed_m_s(),
            },
            _ => Target::Hold,
        });
    }

    fn land_speed_m_s(&self) -> f64 {
        if self.physics.altitude_m() > LAND_FINAL_ALTITUDE_M {
            self.physics.limits().speed_down_m_s_max
        } else {
            match self.personality {
                Personality::ArduPilot => self.param("LAND_SPEED") as f64 / 100.0,
                Personality::Px4 => self.param("MPC_LAND_SPEED") as f64,
            }
        }
    }

    /// The altitude RTL returns at, from where it starts (`ModeRTL::compute_return_target`
    /// for ArduCopter; PX4 climbs to `RTL_RETURN_ALT`); never below where it is.
    fn rtl_altitude_m(&self) -> f64 {
        let here_m = self.physics.altitude_m();
        match self.personality {
            Personality::ArduPilot => {
                let climb_min_m = (self.param("RTL_CLIMB_MIN") as f64 / 100.0).max(0.0);
                let min_rtl_m = RTL_ALT_MIN_M.max(here_m + climb_min_m);
                let mut target_m = (self.param("RTL_ALT") as f64 / 100.0).max(min_rtl_m);
                let slope = self.param("RTL_CONE_SLOPE") as f64;
                if slope >= RTL_MIN_CONE_SLOPE {
                    let distance_m = self.physics.horizontal_distance_m(&Vector3::zeros());
                    target_m = target_m.min((distance_m * slope).max(min_rtl_m));
                }
                target_m.max(here_m)
            }
            Personality::Px4 => (self.param("RTL_RETURN_ALT") as f64).max(here_m),
        }
    }

    fn wpnav_speed_m_s(&self) -> f64 {
        (self.param("WPNAV_SPEED") as f64 / 100.0).clamp(WPNAV_SPEED_MIN_M_S, 20.0)
    }

    /// The horizontal speed the firmware flies at in its present mode.
    fn cruise_speed_m_s(&self) -> f64 {
        match self.personality {
            Personality::ArduPilot => match self.mode {
                FlightMode::Guided => self.guided_speed_m_s,
                FlightMode::Rtl => self.rtl_speed_m_s,
                FlightMode::Loiter | FlightMode::PosHold => self.param("LOIT_SPEED") as f64 / 100.0,
                FlightMode::Mission => self
                    .auto_speed_m_s()
                    .unwrap_or_else(|| self.wpnav_speed_m_s()),
                _ => self.wpnav_speed_m_s(),
            },
            Personality::Px4 => {
                let cruise = match self.mode {
                    FlightMode::Guided => f64::INFINITY,
                    FlightMode::Mission if let Some(speed) = self.auto_speed_m_s() => speed,
                    _ if self.px4_cruise_m_s > 0.0 => self.px4_cruise_m_s,
                    _ => self.param("MPC_XY_CRUISE") as f64,
                };
                cruise.min(self.param("MPC_XY_VEL_MAX") as f64)
            }
        }
        .clamp(0.1, 30.0)
    }

    /// The GPS works and the EKF trusts its absolute position.
    fn position_ok(&self) -> bool {
        !self.gps_disabled && self.position_trusted()
    }

    fn position_trusted(&self) -> bool {
        self.clock >= self.ekf.position_trusted
    }

    fn origin_set(&self) -> bool {
        self.clock >= self.ekf.origin_set
    }

    /// ArduPilot's battery percentage from consumed mAh (`capacity_remaining_pct`); PX4's from
    /// the resting voltage. `None` when the autopilot cannot tell.
    fn battery_percent(&self) -> Option<f64> {
        let battery = self.physics.battery();
        match self.personality {
            Personality::ArduPilot => {
                let capacity = self.param("BATT_CAPACITY");
                if self.param("BATT_MONITOR") != 4.0 || capacity <= BATT_CAPACITY_MAH_MIN {
                    return None;
                }
                let capacity = capacity as f64;
                Some((100.0 * (capacity - battery.consumed_mah) / capacity).clamp(0.0, 100.0))
            }
            Personality::Px4 => Some(battery.remaining_pct()),
        }
    }

    /// ArduPilot's low and critical battery failsafe levels (`check_failsafe_types`).
    fn battery_failsafe(&self) -> (bool, bool) {
        if self.personality != Personality::ArduPilot || self.param("BATT_MONITOR") == 0.0 {
            return (false, false);
        }
        let voltage = self.physics.battery().voltage_v();
        let remaining_mah =
            self.param("BATT_CAPACITY") as f64 - self.physics.battery().consumed_mah;
        let below = |volts: &str, mah: &str| {
            let v = self.param(volts) as f64;
            let m = self.param(mah) as f64;
            (v > 0.0 && voltage < v) || (m > 0.0 && remaining_mah < m)
        };
        (
            below("BATT_LOW_VOLT", "BATT_LOW_MAH"),
            below("BATT_CRT_VOLT", "BATT_CRT_MAH"),
        )
    }

    /// Why the battery refuses arming, in the firmware's words.
    fn battery_arming_refusal(&self) -> Option<&'static str> {
        match self.personality {
            Personality::ArduPilot => {
                if self.param("BATT_MONITOR") == 0.0 {
                    return None;
                }
                let voltage = self.physics.battery().voltage_v();
                let remaining_mah =
                    self.param("BATT_CAPACITY") as f64 - self.physics.battery().consumed_mah;
                let arm_volt = self.param("BATT_ARM_VOLT") as f64;
                let arm_mah = self.param("BATT_ARM_MAH") as f64;
                let (low, critical) = self.battery_failsafe();
                if arm_volt > 0.0 && voltage < arm_volt {
                    Some("PreArm: Battery 1 below minimum arming voltage")
                } else if arm_mah > 0.0 && remaining_mah < arm_mah {
                    Some("PreArm: Battery 1 below minimum arming capacity")
                } else if critical {
                    Some("PreArm: Battery 1 critical failsafe")
                } else if low {
                    Some("PreArm: Battery 1 low failsafe")
                } else {
                    None
                }
            }
            Personality::Px4 => (self.physics.battery().resting_voltage_v() < ARMING_VOLTAGE_MIN_V)
                .then_some("Preflight Fail: low battery"),
        }
    }

    /// What the firmware decides at every physics step.
    fn tick_flight(&mut self, now: Duration) {
        let cruise = self.cruise_speed_m_s();
        self.physics.limits_mut().speed_horizontal_m_s_max = cruise;
        if let Some(speed) = self.physics.take_touchdown_speed_m_s()
            && speed > 3.0
        {
            self.status_text(MavSeverity::MAV_SEVERITY_CRITICAL, "Crash: hit the ground");
        }
        if self.terminated {
            if self.armed && self.physics.on_ground() {
                self.disarm();
            }
            return;
        }
        if !self.armed {
            return;
        }
        let on_ground = self.physics.on_ground();
        if on_ground {
            if self.grounded_since.is_none() {
                self.grounded_since = Some(now);
            }
        } else {
            self.grounded_since = None;
            self.has_flown = true;
        }

        // Losing position in the air in a position mode: land (EKF failsafe).
        if self.gps_disabled && !on_ground && self.mode.requires_position() {
            let text = match self.personality {
                Personality::ArduPilot => "EKF Failsafe: changed to LAND Mode",
                Personality::Px4 => "Failsafe: no global position, landing",
            };
            self.status_text(MavSeverity::MAV_SEVERITY_CRITICAL, text);
            self.set_mode(FlightMode::Land);
        }

        self.check_fence(on_ground);

        if let Some(target_m) = self.takeoff_altitude_m
            && self.physics.altitude_m() >= target_m - 0.1
        {
            self.takeoff_altitude_m = None;
            if self.personality == Personality::Px4 {
                self.set_mode(FlightMode::Loiter);
            }
        }

        if let Some(at) = self.velocity_target_at
            && now.saturating_sub(at) > VELOCITY_TARGET_TIMEOUT
        {
            self.velocity_target_at = None;
            self.physics.set_target(Target::Hold);
        }

        match self.mode {
            FlightMode::Land if !on_ground => self.physics.set_target(Target::Descend {
                speed_m_s: self.land_speed_m_s(),
            }),
            FlightMode::Rtl if !on_ground || self.rtl_stage != RtlStage::Descend => self.tick_rtl(),
            FlightMode::Mission => self.tick_auto(now),
            _ => {}
        }

        let landing = matches!(self.mode, FlightMode::Land | FlightMode::Rtl);
        if let Some(since) = self.grounded_since
            && self.takeoff_altitude_m.is_none()
        {
            let on_ground_for = now.saturating_sub(since);
            let disarm_after = if landing || self.has_flown {
                match self.personality {
                    Personality::ArduPilot => Duration::from_secs(1),
                    Personality::Px4 => {
                        Duration::from_secs_f64(self.param("COM_DISARM_LAND").max(0.0) as f64)
                    }
                }
            } else {
                match self.personality {
                    Personality::ArduPilot => {
                        Duration::from_secs_f64(self.param("DISARM_DELAY").max(0.0) as f64)
                    }
                    Personality::Px4 => IDLE_DISARM_DELAY,
                }
            };
            let disabled = !landing && !self.has_flown && disarm_after.is_zero();
            if !disabled && on_ground_for >= disarm_after {
                self.disarm();
            }
        }
    }

    fn tick_rtl(&mut self) {
        let here = self.physics.position_ned_m();
        let rtl_altitude_m = match self.rtl_return_alt_m {
            Some(altitude_m) => altitude_m,
            None => {
                let altitude_m = self.rtl_altitude_m();
                self.rtl_return_alt_m = Some(altitude_m);
                altitude_m
            }
        };
        let home = Vector3::zeros();
        match self.rtl_stage {
            RtlStage::Climb => {
                let cruise_m = rtl_altitude_m;
                if self.physics.altitude_m() >= rtl_altitude_m - 0.2 {
                    self.rtl_stage = RtlStage::Return;
                    // PX4: the return leg is a new setpoint, with the speed set since.
                    self.px4_cruise_m_s = self.px4_cruise_next_m_s;
                    self.physics.set_target(Target::Position {
                        ned_m: Vector3::new(home.x, home.y, -cruise_m),
                    });
                } else {
                    self.physics.set_target(Target::Position {
                        ned_m: Vector3::new(here.x, here.y, -cruise_m),
                    });
                }
            }
            RtlStage::Return => {
                if self.physics.horizontal_distance_m(&home) < 0.5
                    && self.physics.velocity_ned_m_s().xy().norm() < 0.3
                {
                    self.rtl_stage = RtlStage::Descend;
                }
            }
            RtlStage::Descend => self.physics.set_target(Target::Descend {
                speed_m_s: self.land_speed_m_s(),
            }),
        }
    }

    // ----- position targets -----

    fn guided_and_flying(&self) -> bool {
        self.mode == FlightMode::Guided
            && self.armed
            && !self.terminated
            && self.takeoff_altitude_m.is_none()
            && !self.physics.on_ground()
            && self.position_ok()
    }

    fn handle_global_target(&mut self, now: Duration, t: &SET_POSITION_TARGET_GLOBAL_INT_DATA) {
        self.offboard_setpoint_at = Some(now);
        if !self.guided_and_flying() {
            self.counters.ignored += 1;
            return;
        }
        let mask = t.type_mask;
        if !mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_X_IGNORE) {
            let alt_amsl_m = match t.coordinate_frame {
                MavFrame::MAV_FRAME_GLOBAL | MavFrame::MAV_FRAME_GLOBAL_INT => t.alt as f64,
                MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT
                | MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
                | MavFrame::MAV_FRAME_GLOBAL_TERRAIN_ALT
                | MavFrame::MAV_FRAME_GLOBAL_TERRAIN_ALT_INT => self.home.alt_amsl_m + t.alt as f64,
                _ => {
                    self.counters.rejected += 1;
                    return;
                }
            };
            let lat_deg = t.lat_int as f64 / 1e7;
            let lon_deg = t.lon_int as f64 / 1e7;
            if !alt_amsl_m.is_finite()
                || !(-90.0..=90.0).contains(&lat_deg)
                || !(-180.0..=180.0).contains(&lon_deg)
            {
                self.counters.rejected += 1;
                return;
            }
            let goal = self.home.ned_to(&GeoPoint {
                lat_deg,
                lon_deg,
                alt_amsl_m,
            });
            self.velocity_target_at = None;
            if self.personality == Personality::ArduPilot {
                self.guided_position_target();
            }
            self.physics.set_target(Target::Position { ned_m: goal });
        } else if !mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VX_IGNORE) {
            self.set_velocity_target(now, Vector3::new(t.vx, t.vy, t.vz), false);
        } else {
            self.counters.rejected += 1;
            return;
        }
        self.apply_yaw(mask, t.yaw);
    }

    fn handle_local_target(&mut self, now: Duration, t: &SET_POSITION_TARGET_LOCAL_NED_DATA) {
        self.offboard_setpoint_at = Some(now);
        if !self.guided_and_flying() {
            self.counters.ignored += 1;
            return;
        }
        let mask = t.type_mask;
        let body = matches!(
            t.coordinate_frame,
            MavFrame::MAV_FRAME_BODY_NED | MavFrame::MAV_FRAME_BODY_OFFSET_NED
        );
        if !mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_X_IGNORE) {
            let offset = Vector3::new(t.x as f64, t.y as f64, t.z as f64);
            if !(offset.x.is_finite() && offset.y.is_finite() && offset.z.is_finite()) {
                self.counters.rejected += 1;
                return;
            }
            let here = self.physics.position_ned_m();
            let goal = match t.coordinate_frame {
                MavFrame::MAV_FRAME_LOCAL_NED => offset,
                MavFrame::MAV_FRAME_LOCAL_OFFSET_NED => here + offset,
                MavFrame::MAV_FRAME_BODY_NED | MavFrame::MAV_FRAME_BODY_OFFSET_NED => {
                    here + self.body_to_ned(offset)
                }
                _ => {
                    self.counters.rejected += 1;
                    return;
                }
            };
            self.velocity_target_at = None;
            if self.personality == Personality::ArduPilot {
                self.guided_position_target();
            }
            self.physics.set_target(Target::Position { ned_m: goal });
        } else if !mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VX_IGNORE) {
            self.set_velocity_target(now, Vector3::new(t.vx, t.vy, t.vz), body);
        } else {
            self.counters.rejected += 1;
            return;
        }
        self.apply_yaw(mask, t.yaw);
    }

    fn set_velocity_target(&mut self, now: Duration, v: Vector3<f32>, body: bool) {
        let v = v.cast::<f64>();
        if !(v.x.is_finite() && v.y.is_finite() && v.z.is_finite()) {
            self.counters.rejected += 1;
            return;
        }
        let v = if body { self.body_to_ned(v) } else { v };
        // ModeGuided::set_velaccel → velaccel_control_start restarts at WPNAV_SPEED.
        if self.personality == Personality::ArduPilot && self.guided_sub != GuidedSub::VelAccel {
            self.guided_sub = GuidedSub::VelAccel;
            self.guided_speed_m_s = self.wpnav_speed_m_s();
        }
        self.velocity_target_at = Some(now);
        self.physics.set_target(Target::Velocity { ned_m_s: v });
    }

    fn apply_yaw(&mut self, mask: PositionTargetTypemask, yaw_rad: f32) {
        if !mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_YAW_IGNORE)
            && yaw_rad.is_finite()
        {
            self.physics.set_yaw_target(Some(yaw_rad as f64));
        } else {
            self.physics.set_yaw_target(None);
        }
    }

    fn body_to_ned(&self, v: Vector3<f64>) -> Vector3<f64> {
        let (sin, cos) = self.physics.yaw_rad().sin_cos();
        Vector3::new(v.x * cos - v.y * sin, v.x * sin + v.y * cos, v.z)
    }

    // ----- parameters -----

    fn param_index(&self, id: &[u8; 16]) -> Option<usize> {
        let end = id.iter().position(|b| *b == 0).unwrap_or(id.len());
        let name = std::str::from_utf8(id.get(..end)?).ok()?;
        self.params.iter().position(|p| p.name == name)
    }

    fn param(&self, name: &str) -> f32 {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map_or(0.0, |p| p.value)
    }

    fn set_param_value(&mut self, name: &str, value: f32) {
        if let Some(p) = self.params.iter_mut().find(|p| p.name == name) {
            p.value = value;
        }
    }

    /// PX4 sends integers bytewise in the float field; ArduPilot casts them.
    fn encode_param(&self, param: &Param) -> f32 {
        match (self.personality, param.kind) {
            (Personality::Px4, MavParamType::MAV_PARAM_TYPE_INT32) => {
                f32::from_bits(param.value as i32 as u32)
            }
            _ => param.value,
        }
    }

    fn decode_param(&self, kind: MavParamType, wire: f32) -> f32 {
        match (self.personality, kind) {
            (Personality::Px4, MavParamType::MAV_PARAM_TYPE_INT32) => wire.to_bits() as i32 as f32,
            _ => wire,
        }
    }

    /// ArduPilot's broadcast of a changed value: index 65535 (-1).
    fn broadcast_param(&mut self, index: usize) {
        self.send_param(index);
        if let Some(MavMessage::PARAM_VALUE(p)) = self.outbox.back_mut() {
            p.param_index = u16::MAX;
        }
    }

    fn send_param(&mut self, index: usize) {
        let Some(param) = self.params.get(index).copied() else {
            return;
        };
        self.outbox
            .push_back(MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
                param_value: self.encode_param(&param),
                param_count: self.params.len() as u16,
                param_index: index as u16,
                param_id: param.name.into(),
                param_type: param.kind,
            }));
    }

    /// PARAM_SET as each firmware takes it.
    ///
    /// ArduPilot (`GCS_MAVLINK::handle_param_set`, `libraries/GCS_MAVLink/GCS_Param.cpp`,
    /// and `AP_Param::set_float`, `libraries/AP_Param/AP_Param.cpp`): an unknown name, a NaN
    /// or an infinity is ignored; the declared type of the message is not looked at; an
    /// integer parameter takes the value nudged by 0.01 away from zero, limited to its
    /// type's range and truncated; the new value is broadcast as PARAM_VALUE with index
    /// 65535 (`GCS::send_parameter_value`). No @Range is enforced.
    ///
    /// PX4 (`MavlinkParametersManager::handle_message`,
    /// `src/modules/mavlink/mavlink_parameters.cpp`): an unknown name or a `param_type` other
    /// than the parameter's own (INT32 or REAL32) is refused with a STATUSTEXT and nothing
    /// changes; integers come bytewise; the answer carries the parameter's index. Its
    /// metadata's min/max are not enforced either.
    fn handle_param_set(&mut self, p: &PARAM_SET_DATA) {
        let Some(index) = self.param_index(&p.param_id) else {
            self.counters.rejected += 1;
            return;
        };
        let Some(kind) = self.params.get(index).map(|p| p.kind) else {
            return;
        };
        // The `SIM_*` faults are SITL's, taken as ArduPilot takes them in both personalities
        // (the harnesses write them as REAL32).
        let sim_fault = self
            .params
            .get(index)
            .is_some_and(|p| p.name.starts_with("SIM_"));
        if self.personality == Personality::Px4 && !sim_fault && p.param_type != kind {
            self.counters.rejected += 1;
            self.status_text(MavSeverity::MAV_SEVERITY_ERROR, "param types mismatch");
            return;
        }
        let value = self.decode_param(kind, p.param_value);
        if !value.is_finite() {
            self.counters.rejected += 1;
            return;
        }
        let value = match (self.personality, integer_range(kind)) {
            (Personality::ArduPilot, Some((low, high))) => {
                let nudged = value + if value < 0.0 { -0.01 } else { 0.01 };
                (nudged as f64).clamp(low, high).trunc() as f32
            }
            _ => value,
        };
        if let Some(param) = self.params.get_mut(index) {
            param.value = value;
        }
        match self.personality {
            Personality::ArduPilot => self.broadcast_param(index),
            Personality::Px4 => self.send_param(index),
        }
        if self
            .params
            .get(index)
            .is_some_and(|p| p.name == "SIM_LINK_DROP_S")
            && value > 0.0
        {
            // Go silent after this answer has gone out (at the next step).
            self.link_drop_pending_s = Some(value.min(3600.0) as f64);
        }
        self.apply_params();
    }

    /// Pushes parameter values into the simulation. The horizontal speed is the mode's own
    /// (see `cruise_speed_m_s`), set at every step.
    fn apply_params(&mut self) {
        let (speed_up, speed_down) = match self.personality {
            Personality::ArduPilot => (
                self.param("WPNAV_SPEED_UP") / 100.0,
                self.param("WPNAV_SPEED_DN") / 100.0,
            ),
            Personality::Px4 => (
                self.param("MPC_Z_VEL_MAX_UP"),
                self.param("MPC_Z_VEL_MAX_DN"),
            ),
        };
        let accel = match self.personality {
            Personality::ArduPilot => self.param("WPNAV_ACCEL") / 100.0,
            Personality::Px4 => 3.0,
        };
        let cruise = self.cruise_speed_m_s();
        let limits = self.physics.limits_mut();
        limits.speed_horizontal_m_s_max = cruise;
        limits.speed_up_m_s_max = (speed_up as f64).clamp(0.1, 10.0);
        limits.speed_down_m_s_max = (speed_down as f64).clamp(0.1, 10.0);
        limits.accel_horizontal_m_s2_max = (accel as f64).clamp(0.5, 10.0);

        self.gps_disabled = self.param("SIM_GPS_DISABLE") >= 0.5;
        let voltage = self.param("SIM_BATT_VOLTAGE") as f64;
        self.physics
            .set_battery_voltage_override((voltage > 0.0).then_some(voltage));
        let wind_m_s = self.param("SIM_WIND_SPD") as f64;
        self.physics
            .set_wind(wind_m_s, self.param("SIM_WIND_DIR") as f64);
        self.physics
            .set_turbulence(self.param("SIM_WIND_TURB") as f64);
        let full_altitude_m = self.param("SIM_WIND_T_ALT") as f64;
        self.physics
            .set_wind_profile(match self.param("SIM_WIND_T") as i32 {
                1 => WindProfile::Uniform,
                2 => WindProfile::Linear {
                    full_altitude_m,
                    coefficient_per_m: self.param("SIM_WIND_T_COEF") as f64,
                },
                _ => WindProfile::SquareRoot { full_altitude_m },
            });
        self.physics.set_wind_compensation(if wind_m_s > 0.0 {
            INJECTED_WIND_COMPENSATION
        } else {
            1.0
        });
    }

    fn silent(&self, now: Duration) -> bool {
        self.link_drop_until.is_some_and(|until| now < until)
    }

    // ----- telemetry -----

    fn landed_state(&self) -> MavLandedState {
        if !self.armed || self.physics.on_ground() {
            MavLandedState::MAV_LANDED_STATE_ON_GROUND
        } else if self.takeoff_altitude_m.is_some() {
            MavLandedState::MAV_LANDED_STATE_TAKEOFF
        } else if self.mode == FlightMode::Land
            || (self.mode == FlightMode::Rtl && self.rtl_stage == RtlStage::Descend)
        {
            MavLandedState::MAV_LANDED_STATE_LANDING
        } else {
            MavLandedState::MAV_LANDED_STATE_IN_AIR
        }
    }

    fn heartbeat(&self) -> HEARTBEAT_DATA {
        let mut base_mode = MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
            | MavModeFlag::MAV_MODE_FLAG_STABILIZE_ENABLED;
        if self.personality == Personality::ArduPilot {
            base_mode |= MavModeFlag::MAV_MODE_FLAG_MANUAL_INPUT_ENABLED;
        }
        if !matches!(self.mode, FlightMode::Manual | FlightMode::AltHold) {
            base_mode |= MavModeFlag::MAV_MODE_FLAG_GUIDED_ENABLED;
        }
        if self.armed {
            base_mode |= MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED;
        }
        let system_status = if self.terminated && self.personality == Personality::Px4 {
            MavState::MAV_STATE_FLIGHT_TERMINATION
        } else if self.armed {
            MavState::MAV_STATE_ACTIVE
        } else {
            MavState::MAV_STATE_STANDBY
        };
        HEARTBEAT_DATA {
            custom_mode: self.mode.custom_mode(self.personality).unwrap_or(0),
            mavtype: MavType::MAV_TYPE_QUADROTOR,
            autopilot: match self.personality {
                Personality::ArduPilot => MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
                Personality::Px4 => MavAutopilot::MAV_AUTOPILOT_PX4,
            },
            base_mode,
            system_status,
            mavlink_version: 3,
        }
    }

    /// Builds one telemetry message, or `None` if this vehicle does not send it now.
    fn build(&mut self, message_id: u32, now: Duration) -> Option<MavMessage> {
        let time_boot_ms = now.as_millis().min(u32::MAX as u128) as u32;
        let time_usec = now.as_micros().min(u64::MAX as u128) as u64;
        let position = self.position();
        let ned = self.physics.position_ned_m();
        let velocity = self.physics.velocity_ned_m_s();
        let yaw_rad = self.physics.yaw_rad();
        let (roll_rad, pitch_rad) = self.physics.roll_pitch_rad();
        let heading_deg = yaw_rad.to_degrees().rem_euclid(360.0);
        let ardupilot = self.personality == Personality::ArduPilot;
        Some(match message_id {
            MSG_HEARTBEAT => MavMessage::HEARTBEAT(self.heartbeat()),
            MSG_GLOBAL_POSITION_INT => {
                // No position before the EKF origin (ArduPilot) / global position (PX4).
                if self.gps_disabled || !self.origin_set() {
                    return None;
                }
                MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
                    time_boot_ms,
                    lat: deg_e7(position.lat_deg),
                    lon: deg_e7(position.lon_deg),
                    alt: (position.alt_amsl_m * 1000.0).round() as i32,
                    relative_alt: (-ned.z * 1000.0).round() as i32,
                    vx: (velocity.x * 100.0).round() as i16,
                    vy: (velocity.y * 100.0).round() as i16,
                    vz: (velocity.z * 100.0).round() as i16,
                    hdg: ((heading_deg * 100.0).round() as u16) % 36000,
                })
            }
            MSG_ATTITUDE => MavMessage::ATTITUDE(ATTITUDE_DATA {
                time_boot_ms,
                roll: roll_rad as f32,
                pitch: pitch_rad as f32,
                yaw: yaw_rad as f32,
                rollspeed: 0.0,
                pitchspeed: 0.0,
                yawspeed: self.physics.yaw_rate_rad_s() as f32,
            }),
            MSG_VFR_HUD => MavMessage::VFR_HUD(VFR_HUD_DATA {
                airspeed: velocity.xy().norm() as f32,
                groundspeed: velocity.xy().norm() as f32,
                alt: position.alt_amsl_m as f32,
                climb: -velocity.z as f32,
                heading: heading_deg.round() as i16 % 360,
                throttle: if self.physics.on_ground() {
                    0
                } else {
                    let a = self.physics.accel_ned_m_s2();
                    ((1.0 - a.z / 9.80665) * 50.0).clamp(0.0, 100.0) as u16
                },
            }),
            MSG_SYS_STATUS => self.sys_status(),
            MSG_BATTERY_STATUS => return self.battery_status(),
            MSG_GPS_RAW_INT => self.gps_raw_int(now),
            MSG_EXTENDED_SYS_STATE => MavMessage::EXTENDED_SYS_STATE(EXTENDED_SYS_STATE_DATA {
                vtol_state: MavVtolState::MAV_VTOL_STATE_UNDEFINED,
                landed_state: self.landed_state(),
            }),
            // Home is set with the EKF origin (ArduPilot) / the global position (PX4).
            MSG_HOME_POSITION if !self.origin_set() => return None,
            MSG_HOME_POSITION => MavMessage::HOME_POSITION(HOME_POSITION_DATA {
                latitude: deg_e7(self.home.lat_deg),
                longitude: deg_e7(self.home.lon_deg),
                altitude: (self.home.alt_amsl_m * 1000.0).round() as i32,
                x: 0.0,
                y: 0.0,
                z: 0.0,
                q: [1.0, 0.0, 0.0, 0.0],
                approach_x: 0.0,
                approach_y: 0.0,
                approach_z: 0.0,
                time_usec,
            }),
            MSG_EKF_STATUS_REPORT if ardupilot => self.ekf_status_report(now),
            MSG_ESTIMATOR_STATUS if !ardupilot => self.estimator_status(now),
            MSG_SIMSTATE if ardupilot => self.simstate(),
            MSG_SIM_STATE if !ardupilot => self.sim_state(),
            MSG_AUTOPILOT_VERSION => self.autopilot_version(),
            _ => return None,
        })
    }

    /// SYS_STATUS: the sensors present and healthy (GPS and the pre-arm bit only once the EKF
    /// can arm, the battery's once it would not refuse), and the battery as its monitor reports it.
    fn sys_status(&self) -> MavMessage {
        let battery = self.physics.battery();
        let ardupilot = self.personality == Personality::ArduPilot;
        // ArduPilot truncates its percentage to an integer (uint8_t).
        let percent = self.battery_percent().map_or(-1, |p| p.floor() as i8);
        let sensors = MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_GYRO
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_ACCEL
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_MAG
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_GPS
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_ANGULAR_RATE_CONTROL
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_ATTITUDE_STABILIZATION
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_YAW_POSITION
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_Z_ALTITUDE_CONTROL
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_XY_POSITION_CONTROL
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_MOTOR_OUTPUTS
            | MavSysStatusSensor::MAV_SYS_STATUS_AHRS
            | MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_BATTERY
            | MavSysStatusSensor::MAV_SYS_STATUS_PREARM_CHECK;
        let mut health = sensors;
        if self.gps_disabled || self.clock < self.ekf.arming_ready {
            health.remove(
                MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_GPS
                    | MavSysStatusSensor::MAV_SYS_STATUS_PREARM_CHECK,
            );
        }
        if self.battery_arming_refusal().is_some() {
            health.remove(
                MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_BATTERY
                    | MavSysStatusSensor::MAV_SYS_STATUS_PREARM_CHECK,
            );
        }
        let monitor = if ardupilot {
            self.param("BATT_MONITOR") as i32
        } else {
            4
        };
        MavMessage::SYS_STATUS(SYS_STATUS_DATA {
            onboard_control_sensors_present: sensors,
            onboard_control_sensors_enabled: sensors,
            onboard_control_sensors_health: health,
            load: 250,
            voltage_battery: if monitor == 0 {
                u16::MAX
            } else {
                (battery.voltage_v() * 1000.0).round().min(65534.0) as u16
            },
            current_battery: if monitor == 4 {
                (battery.current_a * 100.0).round() as i16
            } else {
                -1
            },
            drop_rate_comm: 0,
            errors_comm: 0,
            errors_count1: 0,
            errors_count2: 0,
            errors_count3: 0,
            errors_count4: 0,
            battery_remaining: percent,
            onboard_control_sensors_present_extended: MavSysStatusSensorExtended::empty(),
            onboard_control_sensors_enabled_extended: MavSysStatusSensorExtended::empty(),
            onboard_control_sensors_health_extended: MavSysStatusSensorExtended::empty(),
        })
    }

    /// BATTERY_STATUS, or `None` on ArduPilot without a battery monitor.
    fn battery_status(&self) -> Option<MavMessage> {
        let battery = self.physics.battery();
        let ardupilot = self.personality == Personality::ArduPilot;
        if ardupilot && self.param("BATT_MONITOR") == 0.0 {
            return None;
        }
        let mut voltages = [u16::MAX; 10];
        voltages[0] = (battery.voltage_v() * 1000.0).round().min(65534.0) as u16;
        let charge_state = if ardupilot {
            match self.battery_failsafe() {
                (_, true) => MavBatteryChargeState::MAV_BATTERY_CHARGE_STATE_CRITICAL,
                (true, _) => MavBatteryChargeState::MAV_BATTERY_CHARGE_STATE_LOW,
                _ => MavBatteryChargeState::MAV_BATTERY_CHARGE_STATE_OK,
            }
        } else {
            let per_cell_v = battery.resting_voltage_v() / battery.cells.max(1.0);
            if per_cell_v < 3.4 {
                MavBatteryChargeState::MAV_BATTERY_CHARGE_STATE_CRITICAL
            } else if per_cell_v < 3.6 {
                MavBatteryChargeState::MAV_BATTERY_CHARGE_STATE_LOW
            } else {
                MavBatteryChargeState::MAV_BATTERY_CHARGE_STATE_OK
            }
        };
        let measures_current = !ardupilot || self.param("BATT_MONITOR") == 4.0;
        Some(MavMessage::BATTERY_STATUS(BATTERY_STATUS_DATA {
            current_consumed: if measures_current {
                battery.consumed_mah.round() as i32
            } else {
                -1
            },
            energy_consumed: -1,
            temperature: i16::MAX,
            voltages,
            current_battery: if measures_current {
                (battery.current_a * 100.0).round() as i16
            } else {
                -1
            },
            id: 0,
            battery_function: MavBatteryFunction::MAV_BATTERY_FUNCTION_ALL,
            mavtype: MavBatteryType::MAV_BATTERY_TYPE_LIPO,
            battery_remaining: self.battery_percent().map_or(-1, |p| p.floor() as i8),
            time_remaining: 0,
            charge_state,
            voltages_ext: [0; 4],
            mode: MavBatteryMode::MAV_BATTERY_MODE_UNKNOWN,
            fault_bitmask: MavBatteryFault::empty(),
        }))
    }

    /// GPS_RAW_INT: no GPS until it is detected, no fix while it is disabled, a noisy fix
    /// otherwise.
    fn gps_raw_int(&mut self, now: Duration) -> MavMessage {
        let time_usec = now.as_micros().min(u64::MAX as u128) as u64;
        let ned = self.physics.position_ned_m();
        let velocity = self.physics.velocity_ned_m_s();
        let detected = now >= self.ekf.gps_detected;
        let fix = !self.gps_disabled && detected;
        let noise_m = 0.3;
        let noisy = self.home.offset_by(&Vector3::new(
            ned.x + self.noise.next_gaussian() * noise_m,
            ned.y + self.noise.next_gaussian() * noise_m,
            ned.z + self.noise.next_gaussian() * noise_m,
        ));
        let speed = velocity.xy().norm();
        MavMessage::GPS_RAW_INT(GPS_RAW_INT_DATA {
            time_usec,
            lat: if fix { deg_e7(noisy.lat_deg) } else { 0 },
            lon: if fix { deg_e7(noisy.lon_deg) } else { 0 },
            alt: if fix {
                (noisy.alt_amsl_m * 1000.0).round() as i32
            } else {
                0
            },
            eph: if fix { 80 } else { u16::MAX },
            epv: if fix { 120 } else { u16::MAX },
            vel: if fix {
                (speed * 100.0).round() as u16
            } else {
                u16::MAX
            },
            cog: if fix && speed > 0.2 {
                ((velocity.y.atan2(velocity.x).to_degrees().rem_euclid(360.0) * 100.0) as u16)
                    % 36000
            } else {
                u16::MAX
            },
            fix_type: if fix {
                GpsFixType::GPS_FIX_TYPE_3D_FIX
            } else if detected {
                GpsFixType::GPS_FIX_TYPE_NO_FIX
            } else {
                GpsFixType::GPS_FIX_TYPE_NO_GPS
            },
            satellites_visible: if fix { 12 } else { 0 },
            alt_ellipsoid: 0,
            h_acc: if fix { 500 } else { 0 },
            v_acc: if fix { 800 } else { 0 },
            vel_acc: if fix { 200 } else { 0 },
            hdg_acc: 0,
            yaw: 0,
        })
    }

    /// ArduPilot's EKF_STATUS_REPORT.
    fn ekf_status_report(&self, now: Duration) -> MavMessage {
        // AP_NavEKF3_Control.cpp updateFilterStatus: without GPS aiding the filter is
        // in constant-position mode (AID_NONE) with no absolute horizontal position.
        let flags = if now < self.ekf.initialised {
            EkfStatusFlags::EKF_UNINITIALIZED
        } else if self.gps_disabled || !self.position_trusted() {
            EkfStatusFlags::EKF_ATTITUDE
                | EkfStatusFlags::EKF_VELOCITY_VERT
                | EkfStatusFlags::EKF_POS_VERT_ABS
                | EkfStatusFlags::EKF_CONST_POS_MODE
        } else {
            EkfStatusFlags::EKF_ATTITUDE
                | EkfStatusFlags::EKF_VELOCITY_HORIZ
                | EkfStatusFlags::EKF_VELOCITY_VERT
                | EkfStatusFlags::EKF_POS_HORIZ_REL
                | EkfStatusFlags::EKF_POS_HORIZ_ABS
                | EkfStatusFlags::EKF_POS_VERT_ABS
                | EkfStatusFlags::EKF_PRED_POS_HORIZ_REL
                | EkfStatusFlags::EKF_PRED_POS_HORIZ_ABS
        };
        let variance = if self.position_ok() { 0.05 } else { 1.2 };
        MavMessage::EKF_STATUS_REPORT(EKF_STATUS_REPORT_DATA {
            velocity_variance: variance,
            pos_horiz_variance: variance,
            pos_vert_variance: 0.05,
            compass_variance: 0.02,
            terrain_alt_variance: 0.0,
            flags,
            airspeed_variance: 0.0,
        })
    }

    /// PX4's ESTIMATOR_STATUS.
    fn estimator_status(&self, now: Duration) -> MavMessage {
        let time_usec = now.as_micros().min(u64::MAX as u128) as u64;
        // ekf_helper.cpp get_ekf_soln_status: without aiding the EKF fuses a fake
        // position (CONST_POS_MODE, no absolute position); when healthy, CONST_POS_MODE
        // is set at rest too (vehicle_at_rest): 1023 on the ground, 895 moving.
        let at_rest = self.physics.on_ground()
            && self.physics.velocity_ned_m_s().norm() < 0.1
            && !matches!(self.physics.target(), Target::Position { .. });
        let flags = if now < self.ekf.initialised {
            EstimatorStatusFlags::empty()
        } else if !self.position_ok() {
            EstimatorStatusFlags::ESTIMATOR_ATTITUDE
                | EstimatorStatusFlags::ESTIMATOR_VELOCITY_VERT
                | EstimatorStatusFlags::ESTIMATOR_POS_VERT_ABS
                | EstimatorStatusFlags::ESTIMATOR_CONST_POS_MODE
        } else if at_rest {
            EstimatorStatusFlags::from_bits_truncate(PX4_ESTIMATOR_FLAGS_AT_REST)
        } else {
            EstimatorStatusFlags::from_bits_truncate(PX4_ESTIMATOR_FLAGS_MOVING)
        };
        MavMessage::ESTIMATOR_STATUS(ESTIMATOR_STATUS_DATA {
            time_usec,
            vel_ratio: 0.1,
            pos_horiz_ratio: if self.position_ok() { 0.1 } else { 1.5 },
            pos_vert_ratio: 0.1,
            mag_ratio: 0.05,
            hagl_ratio: 0.0,
            tas_ratio: 0.0,
            pos_horiz_accuracy: if self.position_ok() { 0.5 } else { 50.0 },
            pos_vert_accuracy: 0.8,
            flags,
        })
    }

    /// ArduPilot's SIMSTATE: the simulator's truth.
    fn simstate(&self) -> MavMessage {
        let position = self.position();
        let yaw_rad = self.physics.yaw_rad();
        let (roll_rad, pitch_rad) = self.physics.roll_pitch_rad();
        let a = self.physics.accel_ned_m_s2();
        MavMessage::SIMSTATE(SIMSTATE_DATA {
            roll: roll_rad as f32,
            pitch: pitch_rad as f32,
            yaw: yaw_rad as f32,
            xacc: a.x as f32,
            yacc: a.y as f32,
            zacc: (a.z - 9.80665) as f32,
            xgyro: 0.0,
            ygyro: 0.0,
            zgyro: self.physics.yaw_rate_rad_s() as f32,
            lat: deg_e7(position.lat_deg),
            lng: deg_e7(position.lon_deg),
        })
    }

    /// PX4's SIM_STATE: the simulator's truth.
    fn sim_state(&self) -> MavMessage {
        let position = self.position();
        let velocity = self.physics.velocity_ned_m_s();
        let yaw_rad = self.physics.yaw_rad();
        let (roll_rad, pitch_rad) = self.physics.roll_pitch_rad();
        let a = self.physics.accel_ned_m_s2();
        let q = nalgebra::UnitQuaternion::from_euler_angles(roll_rad, pitch_rad, yaw_rad);
        MavMessage::SIM_STATE(SIM_STATE_DATA {
            q1: q.w as f32,
            q2: q.i as f32,
            q3: q.j as f32,
            q4: q.k as f32,
            roll: roll_rad as f32,
            pitch: pitch_rad as f32,
            yaw: yaw_rad as f32,
            xacc: a.x as f32,
            yacc: a.y as f32,
            zacc: (a.z - 9.80665) as f32,
            xgyro: 0.0,
            ygyro: 0.0,
            zgyro: self.physics.yaw_rate_rad_s() as f32,
            lat: position.lat_deg as f32,
            lon: position.lon_deg as f32,
            alt: position.alt_amsl_m as f32,
            std_dev_horz: 0.0,
            std_dev_vert: 0.0,
            vn: velocity.x as f32,
            ve: velocity.y as f32,
            vd: velocity.z as f32,
            lat_int: deg_e7(position.lat_deg),
            lon_int: deg_e7(position.lon_deg),
        })
    }

    /// AUTOPILOT_VERSION: the capabilities and version each autopilot reports.
    fn autopilot_version(&self) -> MavMessage {
        let ardupilot = self.personality == Personality::ArduPilot;
        let mut capabilities = MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_MAVLINK2
            | MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_MISSION_INT
            | MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_COMMAND_INT
            | MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_SET_POSITION_TARGET_LOCAL_NED
            | MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_SET_POSITION_TARGET_GLOBAL_INT
            | MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_FLIGHT_TERMINATION;
        capabilities |= if ardupilot {
            MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_C_CAST
        } else {
            MavProtocolCapability::MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE
        };
        // major.minor.patch and FIRMWARE_VERSION_TYPE_OFFICIAL (255).
        let flight_sw_version = if ardupilot {
            (4 << 24) | (5 << 16) | (7 << 8) | 255
        } else {
            (1 << 24) | (15 << 16) | 255
        };
        MavMessage::AUTOPILOT_VERSION(AUTOPILOT_VERSION_DATA {
            capabilities,
            uid: 0x5349_4D00_0000_0000 | self.system_id as u64,
            flight_sw_version,
            middleware_sw_version: 0,
            os_sw_version: 0,
            board_version: 0,
            vendor_id: 0,
            product_id: 0,
            flight_custom_version: *b"fcsim\0\0\0",
            middleware_custom_version: [0; 8],
            os_custom_version: [0; 8],
            uid2: [0; 18],
        })
    }
}

/// The parameters the simulator answers for, with the firmware's defaults: ArduPilot's from its
/// parameter tables (`AC_WPNav.cpp`, `ArduCopter/config.h`, `AP_BattMonitor_Params.cpp`,
/// `AC_Fence.cpp`) as SITL's `copter.parm` overrides them (`BATT_MONITOR` 4, `FENCE_RADIUS`
/// 150); PX4's from its `PARAM_DEFINE_*`/`module.yaml` (`multicopter_autonomous_params.c`,
/// `multicopter_position_control_limits_params.c`, `rtl_params.c`, `commander_params.c`,
/// `lib/battery/module.yaml`, `geofence_params.c`) as SITL's start-up overrides them
/// (`init.d/rc.mc_defaults`: `RTL_RETURN_ALT` 30, `RTL_DESCEND_ALT` 10; `init.d-posix/rcS`:
/// `COM_LOW_BAT_ACT` 3) — the values read from PX4 SIH (`/work/sitl/NOTES.md` §6).
/// The values an integer parameter type holds (`None`: a float).
fn integer_range(kind: MavParamType) -> Option<(f64, f64)> {
    use MavParamType::*;
    match kind {
        MAV_PARAM_TYPE_INT8 => Some((f64::from(i8::MIN), f64::from(i8::MAX))),
        MAV_PARAM_TYPE_UINT8 => Some((0.0, f64::from(u8::MAX))),
        MAV_PARAM_TYPE_INT16 => Some((f64::from(i16::MIN), f64::from(i16::MAX))),
        MAV_PARAM_TYPE_UINT16 => Some((0.0, f64::from(u16::MAX))),
        MAV_PARAM_TYPE_INT32 => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        MAV_PARAM_TYPE_UINT32 => Some((0.0, f64::from(u32::MAX))),
        _ => None,
    }
}

fn default_params(personality: Personality) -> Vec<Param> {
    use MavParamType::*;
    let p = |name, value, kind| Param { name, value, kind };
    let mut params = match personality {
        Personality::ArduPilot => vec![
            p("ARMING_CHECK", 1.0, MAV_PARAM_TYPE_INT32),
            p("BATT_ARM_MAH", 0.0, MAV_PARAM_TYPE_INT32),
            p("BATT_ARM_VOLT", 0.0, MAV_PARAM_TYPE_REAL32),
            p("BATT_CAPACITY", 3300.0, MAV_PARAM_TYPE_INT32),
            p("BATT_CRT_MAH", 0.0, MAV_PARAM_TYPE_REAL32),
            p("BATT_CRT_VOLT", 0.0, MAV_PARAM_TYPE_REAL32),
            p("BATT_FS_CRT_ACT", 0.0, MAV_PARAM_TYPE_INT8),
            p("BATT_FS_LOW_ACT", 0.0, MAV_PARAM_TYPE_INT8),
            p("BATT_LOW_MAH", 0.0, MAV_PARAM_TYPE_REAL32),
            p("BATT_LOW_VOLT", 10.5, MAV_PARAM_TYPE_REAL32),
            p("BATT_MONITOR", 4.0, MAV_PARAM_TYPE_INT8),
            p("DISARM_DELAY", 10.0, MAV_PARAM_TYPE_INT8),
            p("FENCE_ACTION", 1.0, MAV_PARAM_TYPE_INT8),
            p("FENCE_ALT_MAX", 100.0, MAV_PARAM_TYPE_REAL32),
            p("FENCE_ENABLE", 0.0, MAV_PARAM_TYPE_INT8),
            p("FENCE_MARGIN", 2.0, MAV_PARAM_TYPE_REAL32),
            p("FENCE_RADIUS", 150.0, MAV_PARAM_TYPE_REAL32),
            p("FENCE_TYPE", 7.0, MAV_PARAM_TYPE_INT8),
            p("FS_GCS_ENABLE", 0.0, MAV_PARAM_TYPE_INT8),
            p("LAND_SPEED", 50.0, MAV_PARAM_TYPE_INT16),
            p("LOIT_SPEED", 1250.0, MAV_PARAM_TYPE_REAL32),
            p("RTL_ALT", 1500.0, MAV_PARAM_TYPE_INT32),
            p("RTL_CLIMB_MIN", 0.0, MAV_PARAM_TYPE_INT16),
            p("RTL_CONE_SLOPE", 3.0, MAV_PARAM_TYPE_REAL32),
            p("RTL_SPEED", 0.0, MAV_PARAM_TYPE_INT16),
            p("WPNAV_ACCEL", 250.0, MAV_PARAM_TYPE_REAL32),
            p("WPNAV_SPEED", 1000.0, MAV_PARAM_TYPE_REAL32),
            p("WPNAV_SPEED_DN", 150.0, MAV_PARAM_TYPE_REAL32),
            p("WPNAV_SPEED_UP", 250.0, MAV_PARAM_TYPE_REAL32),
            p("SIM_BATT_CAP_AH", 0.0, MAV_PARAM_TYPE_REAL32),
            p("SIM_BATT_VOLTAGE", 12.6, MAV_PARAM_TYPE_REAL32),
        ],
        Personality::Px4 => vec![
            p("BAT1_CAPACITY", -1.0, MAV_PARAM_TYPE_REAL32),
            p("BAT_CRIT_THR", 0.07, MAV_PARAM_TYPE_REAL32),
            p("BAT_EMERGEN_THR", 0.05, MAV_PARAM_TYPE_REAL32),
            p("BAT_LOW_THR", 0.15, MAV_PARAM_TYPE_REAL32),
            p("COM_DISARM_LAND", 2.0, MAV_PARAM_TYPE_REAL32),
            p("COM_DL_LOSS_T", 10.0, MAV_PARAM_TYPE_INT32),
            p("COM_LOW_BAT_ACT", 3.0, MAV_PARAM_TYPE_INT32),
            p("GF_ACTION", 2.0, MAV_PARAM_TYPE_INT32),
            p("GF_MAX_HOR_DIST", 0.0, MAV_PARAM_TYPE_REAL32),
            p("GF_MAX_VER_DIST", 0.0, MAV_PARAM_TYPE_REAL32),
            p("MIS_TAKEOFF_ALT", 2.5, MAV_PARAM_TYPE_REAL32),
            p("MPC_LAND_SPEED", 0.7, MAV_PARAM_TYPE_REAL32),
            p("MPC_XY_CRUISE", 5.0, MAV_PARAM_TYPE_REAL32),
            p("MPC_XY_VEL_MAX", 12.0, MAV_PARAM_TYPE_REAL32),
            p("MPC_Z_VEL_MAX_DN", 1.5, MAV_PARAM_TYPE_REAL32),
            p("MPC_Z_VEL_MAX_UP", 3.0, MAV_PARAM_TYPE_REAL32),
            p("RTL_DESCEND_ALT", 10.0, MAV_PARAM_TYPE_REAL32),
            p("RTL_RETURN_ALT", 30.0, MAV_PARAM_TYPE_REAL32),
            p("SIM_BATT_VOLTAGE", 0.0, MAV_PARAM_TYPE_REAL32),
        ],
    };
    params.extend([
        p("SIM_GPS_DISABLE", 0.0, MAV_PARAM_TYPE_INT8),
        p("SIM_LINK_DROP_S", 0.0, MAV_PARAM_TYPE_REAL32),
        p("SIM_WIND_DIR", 180.0, MAV_PARAM_TYPE_REAL32),
        p("SIM_WIND_SPD", 0.0, MAV_PARAM_TYPE_REAL32),
        p("SIM_WIND_T", 0.0, MAV_PARAM_TYPE_INT8),
        p("SIM_WIND_T_ALT", 60.0, MAV_PARAM_TYPE_REAL32),
        p("SIM_WIND_T_COEF", 0.01, MAV_PARAM_TYPE_REAL32),
        p("SIM_WIND_TURB", 0.0, MAV_PARAM_TYPE_REAL32),
    ]);
    params
}

fn default_streams(personality: Personality) -> Vec<Stream> {
    let hz = |rate: f64| Some(Duration::from_secs_f64(1.0 / rate));
    let (estimator, sim_state) = match personality {
        Personality::ArduPilot => (MSG_EKF_STATUS_REPORT, MSG_SIMSTATE),
        Personality::Px4 => (MSG_ESTIMATOR_STATUS, MSG_SIM_STATE),
    };
    [
        (MSG_HEARTBEAT, hz(1.0)),
        (MSG_GLOBAL_POSITION_INT, hz(4.0)),
        (MSG_ATTITUDE, hz(4.0)),
        (MSG_VFR_HUD, hz(4.0)),
        (MSG_SYS_STATUS, hz(1.0)),
        (MSG_BATTERY_STATUS, hz(1.0)),
        (MSG_GPS_RAW_INT, hz(1.0)),
        (MSG_EXTENDED_SYS_STATE, hz(1.0)),
        (estimator, hz(1.0)),
        (sim_state, hz(1.0)),
        (MSG_HOME_POSITION, hz(0.2)),
    ]
    .into_iter()
    .map(|(message_id, interval)| Stream {
        message_id,
        default_interval: interval,
        interval,
        next_due: Duration::ZERO,
    })
    .collect()
}

/// Degrees as MAVLink's integer 1e-7 degrees.
fn deg_e7(deg: f64) -> i32 {
    (deg * 1e7).round() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCS: MavHeader = MavHeader {
        system_id: 255,
        component_id: 190,
        sequence: 0,
    };

    /// A simulated vehicle driven on virtual time, with everything it sent.
    struct Harness {
        sim: SimAutopilot,
        now: Duration,
        sent: Vec<(Duration, MavMessage)>,
        events: Vec<SimEvent>,
    }

    impl Harness {
        fn new(personality: Personality) -> Self {
            Self::with_seed(personality, 1)
        }

        fn with_seed(personality: Personality, seed: u64) -> Self {
            Self::with_options(personality, seed, Some(0.0))
        }

        /// `ekf_ready_s`: `None` is the firmware's own start-up timeline.
        fn with_options(personality: Personality, seed: u64, ekf_ready_s: Option<f64>) -> Self {
            Harness {
                sim: SimAutopilot::new(SimOptions {
                    autopilot: personality,
                    home: GeoPoint {
                        lat_deg: 47.397742,
                        lon_deg: 8.545594,
                        alt_amsl_m: 488.0,
                    },
                    seed,
                    system_id: 1,
                    ekf_ready_s,
                }),
                now: Duration::ZERO,
                sent: Vec::new(),
                events: Vec::new(),
            }
        }

        fn drain(&mut self) {
            while let Some(m) = self.sim.poll_transmit(self.now) {
                self.sent.push((self.now, m));
            }
            while let Some(e) = self.sim.poll_event() {
                self.events.push(e);
            }
        }

        fn send_from(&mut self, header: MavHeader, message: MavMessage) {
            self.sim.handle_message(self.now, &header, &message);
            self.drain();
        }

        fn send(&mut self, message: MavMessage) {
            self.send_from(GCS, message);
        }

        fn run(&mut self, seconds: f64) {
            let end = self.now + Duration::from_secs_f64(seconds);
            while self.now < end {
                self.now += PHYSICS_STEP;
                self.sim.step(self.now);
                self.drain();
            }
        }

        /// Runs until `done` or `seconds` pass; returns the virtual time it took.
        fn run_until(&mut self, seconds: f64, done: impl Fn(&SimAutopilot) -> bool) -> f64 {
            let start = self.now;
            let end = self.now + Duration::from_secs_f64(seconds);
            while self.now < end {
                if done(&self.sim) {
                    return (self.now - start).as_secs_f64();
                }
                self.now += PHYSICS_STEP;
                self.sim.step(self.now);
                self.drain();
            }
            panic!(
                "not done within {seconds} s: mode {:?} armed {} alt {:.2} events {:?}",
                self.sim.mode(),
                self.sim.armed(),
                self.sim.altitude_m(),
                self.events
            );
        }

        fn command(&mut self, command: MavCmd, params: [f32; 7]) -> MavResult {
            self.send(MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                param1: params[0],
                param2: params[1],
                param3: params[2],
                param4: params[3],
                param5: params[4],
                param6: params[5],
                param7: params[6],
                command,
                target_system: 1,
                target_component: 1,
                confirmation: 0,
            }));
            self.last_ack(command)
        }

        fn last_ack(&self, command: MavCmd) -> MavResult {
            self.sent
                .iter()
                .rev()
                .find_map(|(_, m)| match m {
                    MavMessage::COMMAND_ACK(a) if a.command == command => Some(a.result),
                    _ => None,
                })
                .expect("an ACK")
        }

        fn set_param(&mut self, name: &str, value: f32) {
            self.send(MavMessage::PARAM_SET(PARAM_SET_DATA {
                param_value: value,
                target_system: 1,
                target_component: 1,
                param_id: name.into(),
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
            }));
        }

        fn status_texts(&self) -> Vec<String> {
            self.sent
                .iter()
                .filter_map(|(_, m)| match m {
                    MavMessage::STATUSTEXT(t) => Some(t.text.to_str().unwrap_or("").to_owned()),
                    _ => None,
                })
                .collect()
        }

        fn count(&self, name: &str, from: Duration, to: Duration) -> usize {
            self.sent
                .iter()
                .filter(|(t, m)| *t > from && *t <= to && m.message_name() == name)
                .count()
        }

        fn last_heartbeat(&self) -> HEARTBEAT_DATA {
            self.sent
                .iter()
                .rev()
                .find_map(|(_, m)| match m {
                    MavMessage::HEARTBEAT(h) => Some(h.clone()),
                    _ => None,
                })
                .expect("a heartbeat")
        }

        fn set_mode_ardupilot(&mut self, custom_mode: f32) -> MavResult {
            self.command(
                MavCmd::MAV_CMD_DO_SET_MODE,
                [1.0, custom_mode, 0.0, 0.0, 0.0, 0.0, 0.0],
            )
        }

        fn arm(&mut self) -> MavResult {
            self.command(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            )
        }

        /// ArduCopter: GUIDED, arm, take off to `altitude_m` and wait until there.
        fn ardupilot_airborne(&mut self, altitude_m: f32) {
            self.run(1.0);
            assert_eq!(self.set_mode_ardupilot(4.0), MavResult::MAV_RESULT_ACCEPTED);
            assert_eq!(self.arm(), MavResult::MAV_RESULT_ACCEPTED);
            let ack = self.command(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, altitude_m],
            );
            assert_eq!(ack, MavResult::MAV_RESULT_ACCEPTED);
            let target = altitude_m as f64;
            self.run_until(30.0, |s| s.altitude_m() > target - 0.1);
        }
    }

    /// ArduPilot `GCS_Signing.cpp` `handle_setup_signing`: the key (and its initial
    /// timestamp) is taken while disarmed, refused with "ERROR: Won't setup signing when
    /// armed" otherwise; there is no ACK either way. The PX4 of sitl.md has no signing.
    #[test]
    fn setup_signing_is_taken_only_while_disarmed_as_ardupilot_does() {
        let setup = |target_system| {
            MavMessage::SETUP_SIGNING(SETUP_SIGNING_DATA {
                initial_timestamp: 42,
                target_system,
                target_component: 1,
                secret_key: [7; 32],
            })
        };
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(1.0);
        h.send(setup(1));
        let taken = h.sim.poll_signing_setup().expect("a key to store");
        assert_eq!((taken.timestamp, taken.key), (42, [7; 32]));
        assert!(h.sim.poll_signing_setup().is_none());
        assert!(
            !h.sent
                .iter()
                .any(|(_, m)| matches!(m, MavMessage::COMMAND_ACK(_))),
            "SETUP_SIGNING has no ACK"
        );
        // Another system's key is not ours (MAVLink routing: not addressed to us).
        h.send(setup(2));
        assert!(h.sim.poll_signing_setup().is_none());
        // A failed save is said, as ArduPilot says it.
        h.sim.signing_save_failed();
        h.drain();
        assert!(
            h.status_texts()
                .iter()
                .any(|t| t == "ERROR: Failed to save signing key")
        );

        h.ardupilot_airborne(5.0);
        h.send(setup(1));
        assert!(h.sim.poll_signing_setup().is_none());
        assert!(
            h.status_texts()
                .iter()
                .any(|t| t == "ERROR: Won't setup signing when armed")
        );

        let mut px4 = Harness::new(Personality::Px4);
        px4.run(1.0);
        px4.send(setup(1));
        assert!(px4.sim.poll_signing_setup().is_none());
    }

    /// ArduPilot raises its signing timestamp to the GPS time once the GPS reports
    /// (`AP_RTC::set_utc_usec` → `update_signing_timestamp`): not before it is detected, nor
    /// while it is disabled.
    #[test]
    fn the_gps_gives_the_time_once_detected() {
        let mut h = Harness::with_options(Personality::ArduPilot, 1, None);
        h.run(1.0);
        assert!(!h.sim.gps_time_known(), "ArduCopter's GPS comes at ~10.5 s");
        h.run(11.0);
        assert!(h.sim.gps_time_known());
        h.set_param("SIM_GPS_DISABLE", 1.0);
        h.run(0.5);
        assert!(!h.sim.gps_time_known());
    }

    #[test]
    fn arming_without_a_fix_is_refused_with_the_reason() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(1.0);
        h.set_param("SIM_GPS_DISABLE", 1.0);
        h.run(1.0);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_FAILED);
        assert!(!h.sim.armed());
        assert!(h.status_texts().iter().any(|t| t == "PreArm: Need 3D Fix"));
        // And the GPS reports it: no fix, no position stream.
        let fix = h.sent.iter().rev().find_map(|(_, m)| match m {
            MavMessage::GPS_RAW_INT(g) => Some(g.fix_type),
            _ => None,
        });
        assert_eq!(fix, Some(GpsFixType::GPS_FIX_TYPE_NO_FIX));
        let after = h.now;
        h.run(2.0);
        assert_eq!(h.count("GLOBAL_POSITION_INT", after, h.now), 0);
        // While disarmed ArduCopter accepts any mode (mode.cpp: ignore_checks when disarmed);
        // arming in GUIDED without a fix is what is refused.
        assert_eq!(h.set_mode_ardupilot(4.0), MavResult::MAV_RESULT_ACCEPTED);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_FAILED);

        // PX4 denies it with its own words.
        let mut h = Harness::new(Personality::Px4);
        h.set_param("SIM_GPS_DISABLE", 1.0);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_DENIED);
        assert!(!h.sim.armed());

        // With the fix back, arming works and the ACK goes to the sender.
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(1.0);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_ACCEPTED);
        let ack = h.sent.iter().rev().find_map(|(_, m)| match m {
            MavMessage::COMMAND_ACK(a) => Some(a.clone()),
            _ => None,
        });
        let ack = ack.unwrap();
        assert_eq!((ack.target_system, ack.target_component), (255, 190));
        assert!(h.events.contains(&SimEvent::Armed));
        assert!(
            h.last_heartbeat()
                .base_mode
                .contains(MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED)
                || {
                    h.run(1.1);
                    h.last_heartbeat()
                        .base_mode
                        .contains(MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED)
                }
        );
    }

    #[test]
    fn ardupilot_takeoff_reaches_altitude_in_the_expected_time() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(1.0);
        // Not in GUIDED: refused.
        h.arm();
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0]
            ),
            MavResult::MAV_RESULT_FAILED
        );
        assert_eq!(h.set_mode_ardupilot(4.0), MavResult::MAV_RESULT_ACCEPTED);
        assert!(h.events.contains(&SimEvent::ModeChanged("GUIDED")));
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0]
            ),
            MavResult::MAV_RESULT_ACCEPTED
        );
        // 10 m at 2.5 m/s with 2.5 m/s² ramps: a little over 4 s, well under 8 s.
        let took_s = h.run_until(20.0, |s| s.altitude_m() > 9.9);
        assert!((4.0..8.0).contains(&took_s), "took {took_s} s");
        h.run(5.0);
        assert!((h.sim.altitude_m() - 10.0).abs() < 0.1);
        let relative_alt_mm = h.sent.iter().rev().find_map(|(_, m)| match m {
            MavMessage::GLOBAL_POSITION_INT(p) => Some(p.relative_alt),
            _ => None,
        });
        assert!((relative_alt_mm.unwrap() - 10_000).abs() < 100);
        let landed = h.sent.iter().rev().find_map(|(_, m)| match m {
            MavMessage::EXTENDED_SYS_STATE(s) => Some(s.landed_state),
            _ => None,
        });
        assert_eq!(landed, Some(MavLandedState::MAV_LANDED_STATE_IN_AIR));
    }

    #[test]
    fn goto_by_global_and_local_targets_arrives() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(10.0);
        let goal = h.sim.home.offset_by(&Vector3::new(60.0, -30.0, -15.0));
        h.send(MavMessage::SET_POSITION_TARGET_GLOBAL_INT(
            SET_POSITION_TARGET_GLOBAL_INT_DATA {
                time_boot_ms: 0,
                lat_int: (goal.lat_deg * 1e7) as i32,
                lon_int: (goal.lon_deg * 1e7) as i32,
                alt: 15.0,
                type_mask: PositionTargetTypemask::from_bits_truncate(0b0000_1111_1111_1000),
                target_system: 1,
                target_component: 1,
                coordinate_frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
                ..SET_POSITION_TARGET_GLOBAL_INT_DATA::DEFAULT
            },
        ));
        let target = Vector3::new(60.0, -30.0, -15.0);
        h.run_until(40.0, |s| {
            (s.physics().position_ned_m() - target).norm() < 0.3
        });
        // A local offset from there.
        h.send(MavMessage::SET_POSITION_TARGET_LOCAL_NED(
            SET_POSITION_TARGET_LOCAL_NED_DATA {
                x: -10.0,
                y: 0.0,
                z: 0.0,
                type_mask: PositionTargetTypemask::from_bits_truncate(0b0000_1111_1111_1000),
                target_system: 1,
                target_component: 1,
                coordinate_frame: MavFrame::MAV_FRAME_LOCAL_OFFSET_NED,
                ..SET_POSITION_TARGET_LOCAL_NED_DATA::DEFAULT
            },
        ));
        let target = Vector3::new(50.0, -30.0, -15.0);
        h.run_until(20.0, |s| {
            (s.physics().position_ned_m() - target).norm() < 0.3
        });
        // BRAKE holds where it is.
        assert_eq!(h.set_mode_ardupilot(17.0), MavResult::MAV_RESULT_ACCEPTED);
        h.run(5.0);
        assert!((h.sim.physics().position_ned_m() - target).norm() < 0.5);
    }

    #[test]
    fn land_touches_down_and_disarms() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(5.0);
        // Disarming in the air is refused unless forced.
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_FAILED
        );
        assert!(h.sim.armed());
        assert_eq!(
            h.command(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]),
            MavResult::MAV_RESULT_ACCEPTED
        );
        assert_eq!(h.sim.mode(), FlightMode::Land);
        // 5 m at 0.5 m/s: about 10 s, then disarm about a second after touchdown.
        let took_s = h.run_until(30.0, |s| !s.armed());
        assert!((10.0..14.0).contains(&took_s), "took {took_s} s");
        assert!(h.sim.physics().on_ground());
        assert!(h.events.contains(&SimEvent::Disarmed));
        assert!(h.events.iter().any(|e| matches!(
            e,
            SimEvent::Command { name, result: MavResult::MAV_RESULT_ACCEPTED, from_system: 255, from_component: 190 }
                if name == "MAV_CMD_NAV_LAND"
        )));
    }

    #[test]
    fn rtl_climbs_returns_home_and_lands() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(5.0);
        h.send(MavMessage::SET_POSITION_TARGET_LOCAL_NED(
            SET_POSITION_TARGET_LOCAL_NED_DATA {
                x: 80.0,
                y: 40.0,
                z: -5.0,
                type_mask: PositionTargetTypemask::from_bits_truncate(0b0000_1111_1111_1000),
                target_system: 1,
                target_component: 1,
                coordinate_frame: MavFrame::MAV_FRAME_LOCAL_NED,
                ..SET_POSITION_TARGET_LOCAL_NED_DATA::DEFAULT
            },
        ));
        h.run(25.0);
        assert!(h.sim.physics().horizontal_distance_m(&Vector3::zeros()) > 80.0);
        assert_eq!(
            h.command(MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH, [0.0; 7]),
            MavResult::MAV_RESULT_ACCEPTED
        );
        // It climbs to RTL_ALT (15 m) before going home.
        h.run_until(20.0, |s| s.altitude_m() > 14.8);
        assert!(h.sim.physics().horizontal_distance_m(&Vector3::zeros()) > 80.0);
        h.run_until(120.0, |s| !s.armed());
        assert!(h.sim.physics().horizontal_distance_m(&Vector3::zeros()) < 1.0);
        assert!(h.sim.physics().on_ground());
    }

    #[test]
    fn mode_encodings_of_both_personalities() {
        let ap = Personality::ArduPilot;
        let px4 = Personality::Px4;
        let expected_ap = [
            (FlightMode::Manual, 0),
            (FlightMode::AltHold, 2),
            (FlightMode::Mission, 3),
            (FlightMode::Guided, 4),
            (FlightMode::Loiter, 5),
            (FlightMode::Rtl, 6),
            (FlightMode::Land, 9),
            (FlightMode::PosHold, 16),
            (FlightMode::Brake, 17),
        ];
        for (mode, number) in expected_ap {
            assert_eq!(mode.custom_mode(ap), Some(number), "{mode:?}");
            assert_eq!(FlightMode::from_custom_mode(ap, number), Some(mode));
        }
        assert_eq!(FlightMode::Takeoff.custom_mode(ap), None);
        let expected_px4 = [
            (FlightMode::PosHold, 3 << 16),
            (FlightMode::Guided, 6 << 16),
            (FlightMode::Takeoff, (4 << 16) | (2 << 24)),
            (FlightMode::Loiter, (4 << 16) | (3 << 24)),
            (FlightMode::Mission, (4 << 16) | (4 << 24)),
            (FlightMode::Rtl, (4 << 16) | (5 << 24)),
            (FlightMode::Land, (4 << 16) | (6 << 24)),
        ];
        for (mode, number) in expected_px4 {
            assert_eq!(mode.custom_mode(px4), Some(number), "{mode:?}");
            assert_eq!(FlightMode::from_custom_mode(px4, number), Some(mode));
        }
        assert_eq!(FlightMode::Brake.custom_mode(px4), None);
        assert_eq!(FlightMode::from_custom_mode(ap, 99), None);

        // The heartbeats say who is talking.
        let mut h = Harness::new(Personality::Px4);
        h.run(1.5);
        let hb = h.last_heartbeat();
        assert_eq!(hb.autopilot, MavAutopilot::MAV_AUTOPILOT_PX4);
        assert_eq!(hb.mavtype, MavType::MAV_TYPE_QUADROTOR);
        // PX4 SIH boots in AUTO.LOITER (Hold), 50593792 (NOTES.md §6).
        assert_eq!(hb.custom_mode, (4 << 16) | (3 << 24));
        assert_eq!(hb.system_status, MavState::MAV_STATE_STANDBY);
        assert!(
            hb.base_mode
                .contains(MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED)
        );
        assert!(h.count("SIM_STATE", Duration::ZERO, h.now) >= 1);
        assert!(h.count("ESTIMATOR_STATUS", Duration::ZERO, h.now) >= 1);
        assert_eq!(h.count("SIMSTATE", Duration::ZERO, h.now), 0);
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(1.5);
        let hb = h.last_heartbeat();
        assert_eq!(hb.autopilot, MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA);
        assert_eq!(hb.custom_mode, 0);
        assert!(h.count("SIMSTATE", Duration::ZERO, h.now) >= 1);
        assert!(h.count("EKF_STATUS_REPORT", Duration::ZERO, h.now) >= 1);
    }

    #[test]
    fn px4_takeoff_goes_through_auto_takeoff_to_loiter_and_lands() {
        let mut h = Harness::new(Personality::Px4);
        h.run(1.0);
        // OFFBOARD without setpoints is refused.
        let offboard = h.command(
            MavCmd::MAV_CMD_DO_SET_MODE,
            [1.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
        assert_eq!(offboard, MavResult::MAV_RESULT_TEMPORARILY_REJECTED);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_ACCEPTED);
        // param7 is AMSL: home is 488 m.
        let ack = h.command(
            MavCmd::MAV_CMD_NAV_TAKEOFF,
            [0.0, 0.0, 0.0, 0.0, f32::NAN, f32::NAN, 498.0],
        );
        assert_eq!(ack, MavResult::MAV_RESULT_ACCEPTED);
        assert_eq!(h.sim.mode(), FlightMode::Takeoff);
        h.run(1.1);
        assert_eq!(h.last_heartbeat().custom_mode, (4 << 16) | (2 << 24));
        h.run_until(20.0, |s| s.mode() == FlightMode::Loiter);
        assert!((h.sim.altitude_m() - 10.0).abs() < 0.15);
        assert!(h.events.contains(&SimEvent::ModeChanged("AUTO.LOITER")));
        assert_eq!(
            h.command(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]),
            MavResult::MAV_RESULT_ACCEPTED
        );
        assert!(h.events.contains(&SimEvent::ModeChanged("AUTO.LAND")));
        h.run_until(40.0, |s| !s.armed());
    }

    #[test]
    fn extra_telemetry_adds_the_high_rate_mix_at_its_rate() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(2.0);
        let t0 = h.now;
        h.run(10.0);
        let before = h.count("ATTITUDE", t0, h.now);
        h.sim.set_extra_telemetry_hz(1000.0);
        h.run(1.0);
        let t1 = h.now;
        h.run(10.0);
        // A quarter of 10,000 frames on top of the 4 Hz stream, within a physics step.
        let attitude = h.count("ATTITUDE", t1, h.now);
        assert!(
            (before + 2490..=before + 2510).contains(&attitude),
            "{attitude} ATTITUDE in 10 s, {before} without the extra telemetry"
        );
        assert!((2490..=2550).contains(&h.count("VFR_HUD", t1, h.now)));
        h.sim.set_extra_telemetry_hz(0.0);
        let t2 = h.now;
        h.run(10.0);
        assert_eq!(h.count("ATTITUDE", t2, h.now), before);
    }

    #[test]
    fn set_message_interval_changes_rates() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(2.0);
        let t0 = h.now;
        h.run(10.0);
        assert!((39..=41).contains(&h.count("GLOBAL_POSITION_INT", t0, h.now)));
        assert!((9..=11).contains(&h.count("HEARTBEAT", t0, h.now)));
        // 20 Hz.
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
                [33.0, 50_000.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_ACCEPTED
        );
        let t1 = h.now;
        h.run(10.0);
        assert!((199..=201).contains(&h.count("GLOBAL_POSITION_INT", t1, h.now)));
        // -1 stops it.
        h.command(
            MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
            [33.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
        let t2 = h.now;
        h.run(5.0);
        assert_eq!(h.count("GLOBAL_POSITION_INT", t2, h.now), 0);
        // 0 restores the default.
        h.command(
            MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
            [33.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
        let t3 = h.now;
        h.run(10.0);
        assert!((39..=41).contains(&h.count("GLOBAL_POSITION_INT", t3, h.now)));
        // A message it cannot stream is denied; an unknown command unsupported.
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
                [999.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_DENIED
        );
        assert_eq!(
            h.command(MavCmd::MAV_CMD_DO_MOTOR_TEST, [0.0; 7]),
            MavResult::MAV_RESULT_UNSUPPORTED
        );
        // REQUEST_MESSAGE answers once.
        let t4 = h.now;
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_REQUEST_MESSAGE,
                [148.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_ACCEPTED
        );
        assert_eq!(
            h.sent
                .iter()
                .filter(|(t, m)| *t >= t4 && m.message_name() == "AUTOPILOT_VERSION")
                .count(),
            1
        );
    }

    #[test]
    fn same_seed_and_inputs_give_identical_telemetry() {
        let fly = |seed: u64| {
            let mut h = Harness::with_seed(Personality::ArduPilot, seed);
            h.set_param("SIM_WIND_SPD", 7.0);
            h.set_param("SIM_WIND_TURB", 2.0);
            h.ardupilot_airborne(10.0);
            h.run(20.0);
            h.sent
        };
        let a = fly(5);
        assert_eq!(a, fly(5));
        assert_ne!(a, fly(6));
    }

    #[test]
    fn injected_wind_drifts_the_vehicle_off_its_point() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(10.0);
        assert_eq!(h.set_mode_ardupilot(5.0), MavResult::MAV_RESULT_ACCEPTED);
        h.run(3.0);
        let before = h.sim.physics().position_ned_m();
        h.set_param("SIM_WIND_DIR", 0.0); // from the north: pushes south
        // SITL scales the wind with height: 20 m/s is about 8 m/s at 10 m.
        h.set_param("SIM_WIND_SPD", 20.0);
        h.run(30.0);
        let drift = h.sim.physics().position_ned_m() - before;
        assert!(drift.x < -2.0, "{drift:?}");
    }

    #[test]
    fn force_disarm_and_termination_drop_the_vehicle() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(20.0);
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [0.0, 21196.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_ACCEPTED
        );
        assert!(!h.sim.armed());
        h.run_until(5.0, |s| s.physics().on_ground());
        assert!(h.status_texts().iter().any(|t| t.starts_with("Crash")));

        let mut h = Harness::new(Personality::Px4);
        h.run(1.0);
        h.arm();
        h.command(
            MavCmd::MAV_CMD_NAV_TAKEOFF,
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 508.0],
        );
        h.run_until(20.0, |s| s.mode() == FlightMode::Loiter);
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_DO_FLIGHTTERMINATION,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_ACCEPTED
        );
        h.run(1.1);
        assert_eq!(
            h.last_heartbeat().system_status,
            MavState::MAV_STATE_FLIGHT_TERMINATION
        );
        h.run_until(5.0, |s| !s.armed());
        assert!(h.sim.physics().on_ground());
        assert_eq!(h.arm(), MavResult::MAV_RESULT_DENIED);
    }

    #[test]
    fn companion_heartbeat_loss_and_return_are_reported() {
        let mut h = Harness::new(Personality::ArduPilot);
        let companion = MavHeader {
            system_id: 1,
            component_id: COMPANION_COMPONENT_ID,
            sequence: 0,
        };
        let beat = MavMessage::HEARTBEAT(HEARTBEAT_DATA::DEFAULT);
        for _ in 0..5 {
            h.send_from(companion, beat.clone());
            h.run(1.0);
        }
        // Only the first heartbeat is announced.
        assert_eq!(
            h.events
                .iter()
                .filter(|e| **e == SimEvent::CompanionHeartbeatSeen)
                .count(),
            1
        );
        // Ground station heartbeats do not count.
        h.send(beat.clone());
        h.run(3.5);
        assert_eq!(
            h.events
                .iter()
                .filter(|e| **e == SimEvent::CompanionHeartbeatLost)
                .count(),
            1
        );
        h.run(5.0);
        assert_eq!(
            h.events
                .iter()
                .filter(|e| **e == SimEvent::CompanionHeartbeatLost)
                .count(),
            1
        );
        h.send_from(companion, beat);
        assert_eq!(h.events.last(), Some(&SimEvent::CompanionHeartbeatBack));
        assert_eq!(
            SimEvent::CompanionHeartbeatLost.to_string(),
            "companion heartbeat lost"
        );
    }

    #[test]
    fn link_drop_silences_both_ways_then_recovers() {
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(1.0);
        h.set_param("SIM_LINK_DROP_S", 5.0);
        // The answer to the PARAM_SET still goes out.
        assert!(matches!(
            h.sent.last(),
            Some((_, MavMessage::PARAM_VALUE(_)))
        ));
        let t0 = h.now;
        h.run(0.1);
        let before = h.sent.len();
        h.send(MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
            param1: 1.0,
            command: MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
            target_system: 1,
            target_component: 1,
            ..COMMAND_LONG_DATA::DEFAULT
        }));
        h.run(4.0);
        assert_eq!(
            h.sent.len(),
            before,
            "nothing goes out while the link is down"
        );
        assert!(!h.sim.armed(), "nothing comes in either");
        h.run(2.0);
        assert!(h.count("HEARTBEAT", t0 + Duration::from_secs(5), h.now) >= 1);
        assert_eq!(h.sim.param("SIM_LINK_DROP_S"), 0.0);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_ACCEPTED);
    }

    #[test]
    fn parameters_read_and_write_with_the_firmware_encoding() {
        let mut h = Harness::new(Personality::Px4);
        h.send(MavMessage::PARAM_REQUEST_LIST(PARAM_REQUEST_LIST_DATA {
            target_system: 1,
            target_component: 1,
        }));
        let values: Vec<PARAM_VALUE_DATA> = h
            .sent
            .iter()
            .filter_map(|(_, m)| match m {
                MavMessage::PARAM_VALUE(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(values.len(), values[0].param_count as usize);
        let loss = values
            .iter()
            .find(|p| p.param_id.to_str() == Ok("COM_DL_LOSS_T"))
            .unwrap();
        // INT32 travels bytewise on PX4.
        assert_eq!(loss.param_value.to_bits(), 10);
        h.send(MavMessage::PARAM_SET(PARAM_SET_DATA {
            param_value: f32::from_bits(5),
            target_system: 1,
            target_component: 1,
            param_id: "COM_DL_LOSS_T".into(),
            param_type: MavParamType::MAV_PARAM_TYPE_INT32,
        }));
        assert_eq!(h.sim.param("COM_DL_LOSS_T"), 5.0);
        // PX4 refuses a write whose type is not the parameter's own (mavlink_parameters.cpp).
        h.send(MavMessage::PARAM_SET(PARAM_SET_DATA {
            param_value: 7.0,
            target_system: 1,
            target_component: 1,
            param_id: "COM_DL_LOSS_T".into(),
            param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
        }));
        assert_eq!(h.sim.param("COM_DL_LOSS_T"), 5.0);
        assert_eq!(h.sim.counters().rejected, 1);
        // An unknown name is ignored, as the firmware does, and counted.
        let before = h.sent.len();
        h.set_param("NO_SUCH_PARAM", 1.0);
        assert_eq!(h.sent.len(), before);
        assert_eq!(h.sim.counters().rejected, 2);
        // Messages for another system are not for us.
        h.send(MavMessage::PARAM_REQUEST_LIST(PARAM_REQUEST_LIST_DATA {
            target_system: 7,
            target_component: 1,
        }));
        assert_eq!(h.sent.len(), before);
    }

    /// The autopilot's own fence holds without anyone on the link: ArduCopter's
    /// `FENCE_ACTION` (`ArduCopter/fence.cpp`) on a circle breach flying away from home, PX4's
    /// `GF_ACTION` (`navigator/geofence.cpp`) on an altitude breach in the takeoff.
    #[test]
    fn the_autopilots_fence_turns_the_vehicle_back_by_its_action() {
        for (action, mode) in [
            (1.0, FlightMode::Rtl),
            (2.0, FlightMode::Land),
            (4.0, FlightMode::Brake),
        ] {
            let mut h = Harness::new(Personality::ArduPilot);
            h.ardupilot_airborne(10.0);
            for (name, value) in [
                ("FENCE_TYPE", 3.0),
                ("FENCE_RADIUS", 40.0),
                ("FENCE_ACTION", action),
                ("FENCE_ENABLE", 1.0),
            ] {
                h.set_param(name, value);
            }
            let goal = h.sim.home.offset_by(&Vector3::new(150.0, 0.0, -10.0));
            h.send(MavMessage::SET_POSITION_TARGET_GLOBAL_INT(
                SET_POSITION_TARGET_GLOBAL_INT_DATA {
                    lat_int: (goal.lat_deg * 1e7) as i32,
                    lon_int: (goal.lon_deg * 1e7) as i32,
                    alt: 10.0,
                    type_mask: PositionTargetTypemask::from_bits_truncate(0b0000_1111_1111_1000),
                    target_system: 1,
                    target_component: 1,
                    coordinate_frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
                    ..SET_POSITION_TARGET_GLOBAL_INT_DATA::DEFAULT
                },
            ));
            h.run_until(30.0, |s| s.mode() != FlightMode::Guided);
            assert_eq!(h.sim.mode(), mode, "FENCE_ACTION {action}");
            assert!(h.status_texts().iter().any(|t| t == "Fence Breached"));
            // The action keeps it from flying on to the goal.
            h.run(20.0);
            let north_m = h.sim.physics().position_ned_m().x;
            assert!(north_m < 70.0, "FENCE_ACTION {action}: {north_m} m north");
        }
        let mut h = Harness::new(Personality::Px4);
        h.set_param("GF_MAX_VER_DIST", 8.0);
        h.send(MavMessage::PARAM_SET(PARAM_SET_DATA {
            param_value: f32::from_bits(5),
            target_system: 1,
            target_component: 1,
            param_id: "GF_ACTION".into(),
            param_type: MavParamType::MAV_PARAM_TYPE_INT32,
        }));
        h.run(1.0);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_ACCEPTED);
        let amsl = 488.0 + 20.0;
        h.command(
            MavCmd::MAV_CMD_NAV_TAKEOFF,
            [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, amsl],
        );
        h.run_until(30.0, |s| s.mode() == FlightMode::Land);
        assert_eq!(h.sim.mode(), FlightMode::Land);
        assert!(h.status_texts().iter().any(|t| t == "Geofence violation"));
        assert!(h.sim.altitude_m() < 12.0);
    }

    /// The uploaded polygon fence holds with no one on the link: a GUIDED goal beyond the
    /// inclusion polygon (ArduCopter, `FENCE_TYPE` bit 2) or into an exclusion polygon (PX4,
    /// always checked) is cut short by the fence's action.
    #[test]
    fn the_uploaded_polygons_turn_the_vehicle_back_by_its_action() {
        let square = |h: &Harness,
                      command,
                      north_m: f64,
                      half_m: f64|
         -> Vec<flight_companion_core::vehicle::mission::MissionItem> {
            [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
                .into_iter()
                .map(|(n, e)| {
                    let p =
                        h.sim
                            .home
                            .offset_by(&Vector3::new(north_m + n * half_m, e * half_m, 0.0));
                    flight_companion_core::vehicle::mission::MissionItem {
                        command,
                        frame: MavFrame::MAV_FRAME_GLOBAL,
                        params: [4.0, 0.0, 0.0, 0.0],
                        x: (p.lat_deg * 1e7).round() as i32,
                        y: (p.lon_deg * 1e7).round() as i32,
                        z: 0.0,
                        autocontinue: false,
                    }
                })
                .collect()
        };
        for personality in [Personality::ArduPilot, Personality::Px4] {
            let mut h = Harness::new(personality);
            let mut items = square(
                &h,
                MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
                0.0,
                60.0,
            );
            items.extend(square(
                &h,
                MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
                -40.0,
                10.0,
            ));
            h.sim
                .missions
                .set_list(MavMissionType::MAV_MISSION_TYPE_FENCE, items);
            let (goal_north_m, text) = match personality {
                Personality::ArduPilot => {
                    h.ardupilot_airborne(10.0);
                    for (name, value) in [
                        ("FENCE_TYPE", 4.0),
                        ("FENCE_ACTION", 1.0),
                        ("FENCE_ENABLE", 1.0),
                    ] {
                        h.set_param(name, value);
                    }
                    (150.0, "Fence Breached")
                }
                Personality::Px4 => {
                    h.px4_airborne(10.0);
                    // PX4 declares GF_ACTION INT32 and takes it bytewise.
                    h.send(MavMessage::PARAM_SET(PARAM_SET_DATA {
                        param_value: f32::from_bits(3),
                        target_system: 1,
                        target_component: 1,
                        param_id: "GF_ACTION".into(),
                        param_type: MavParamType::MAV_PARAM_TYPE_INT32,
                    }));
                    h.run(1.0);
                    (-40.0, "Geofence violation")
                }
            };
            if personality == Personality::Px4 {
                let amsl = (h.sim.home.alt_amsl_m + 10.0) as f32;
                let result = h.reposition(
                    goal_north_m,
                    0.0,
                    MavFrame::MAV_FRAME_GLOBAL_INT,
                    amsl,
                    -1.0,
                    f32::NAN,
                );
                assert_eq!(result, MavResult::MAV_RESULT_ACCEPTED);
            } else {
                let goal = h
                    .sim
                    .home
                    .offset_by(&Vector3::new(goal_north_m, 0.0, -10.0));
                h.send(MavMessage::SET_POSITION_TARGET_GLOBAL_INT(
                    SET_POSITION_TARGET_GLOBAL_INT_DATA {
                        lat_int: (goal.lat_deg * 1e7) as i32,
                        lon_int: (goal.lon_deg * 1e7) as i32,
                        alt: 10.0,
                        type_mask: PositionTargetTypemask::from_bits_truncate(
                            0b0000_1111_1111_1000,
                        ),
                        target_system: 1,
                        target_component: 1,
                        coordinate_frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
                        ..SET_POSITION_TARGET_GLOBAL_INT_DATA::DEFAULT
                    },
                ));
            }
            h.run_until(40.0, |s| s.mode() == FlightMode::Rtl);
            assert_eq!(h.sim.mode(), FlightMode::Rtl, "{personality:?}");
            assert!(
                h.status_texts().iter().any(|t| t == text),
                "{personality:?}"
            );
            h.run(20.0);
            let north_m = h.sim.physics().position_ned_m().x;
            assert!(north_m.abs() < 75.0, "{personality:?}: {north_m} m north");
        }
    }

    /// ArduPilot `AP_Param::set_float` (AP_Param.cpp): an integer takes the value nudged by
    /// 0.01 and truncated, within its type's range, whatever type the message declares; the
    /// change is broadcast with index 65535 (`GCS::send_parameter_value`, GCS_Param.cpp).
    #[test]
    fn ardupilot_integers_are_rounded_and_limited_and_broadcast() {
        let mut h = Harness::new(Personality::ArduPilot);
        for (value, kept) in [
            (4.999, 5.0),
            (-3.0, -3.0),
            (1000.0, 127.0),
            (-1000.0, -128.0),
        ] {
            h.sent.clear();
            h.send(MavMessage::PARAM_SET(PARAM_SET_DATA {
                param_value: value,
                target_system: 1,
                target_component: 1,
                param_id: "DISARM_DELAY".into(),
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
            }));
            assert_eq!(h.sim.param("DISARM_DELAY"), kept, "{value}");
            let echo = h
                .sent
                .iter()
                .find_map(|(_, m)| match m {
                    MavMessage::PARAM_VALUE(p) => Some(p.clone()),
                    _ => None,
                })
                .unwrap();
            assert_eq!((echo.param_value, echo.param_index), (kept, u16::MAX));
        }
    }

    // ----- fidelity to the firmware: one test per behaviour, citing its source -----

    impl Harness {
        fn command_int(
            &mut self,
            command: MavCmd,
            frame: MavFrame,
            params: [f32; 4],
            x: i32,
            y: i32,
            z: f32,
        ) -> MavResult {
            self.send(MavMessage::COMMAND_INT(COMMAND_INT_DATA {
                param1: params[0],
                param2: params[1],
                param3: params[2],
                param4: params[3],
                x,
                y,
                z,
                command,
                target_system: 1,
                target_component: 1,
                frame,
                current: 0,
                autocontinue: 0,
            }));
            self.last_ack(command)
        }

        /// DO_REPOSITION to `north_m`/`east_m` from home, altitude `z` as sent.
        fn reposition(
            &mut self,
            north_m: f64,
            east_m: f64,
            frame: MavFrame,
            z: f32,
            speed: f32,
            yaw: f32,
        ) -> MavResult {
            let goal = self.sim.home.offset_by(&Vector3::new(north_m, east_m, 0.0));
            self.command_int(
                MavCmd::MAV_CMD_DO_REPOSITION,
                frame,
                [speed, 1.0, 0.0, yaw],
                (goal.lat_deg * 1e7).round() as i32,
                (goal.lon_deg * 1e7).round() as i32,
                z,
            )
        }

        fn change_speed(&mut self, speed_m_s: f32) -> MavResult {
            self.command(
                MavCmd::MAV_CMD_DO_CHANGE_SPEED,
                [1.0, speed_m_s, -1.0, 0.0, 0.0, 0.0, 0.0],
            )
        }

        /// The fastest horizontal speed over the next `seconds`.
        fn top_speed(&mut self, seconds: f64) -> f64 {
            let mut top: f64 = 0.0;
            let end = self.now + Duration::from_secs_f64(seconds);
            while self.now < end {
                self.run(0.1);
                top = top.max(self.sim.physics().velocity_ned_m_s().xy().norm());
            }
            top
        }

        fn param_value(&mut self, name: &str) -> PARAM_VALUE_DATA {
            self.send(MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
                param_index: -1,
                target_system: 1,
                target_component: 1,
                param_id: name.into(),
            }));
            self.sent
                .iter()
                .rev()
                .find_map(|(_, m)| match m {
                    MavMessage::PARAM_VALUE(p) if p.param_id.to_str() == Ok(name) => {
                        Some(p.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no PARAM_VALUE for {name}"))
        }

        fn last_battery_percent(&self) -> i8 {
            self.sent
                .iter()
                .rev()
                .find_map(|(_, m)| match m {
                    MavMessage::SYS_STATUS(s) => Some(s.battery_remaining),
                    _ => None,
                })
                .expect("a SYS_STATUS")
        }

        /// PX4: arm, take off to `altitude_m` above home and wait for AUTO.LOITER.
        fn px4_airborne(&mut self, altitude_m: f32) {
            self.run(1.0);
            assert_eq!(self.arm(), MavResult::MAV_RESULT_ACCEPTED);
            let amsl = 488.0 + altitude_m;
            assert_eq!(
                self.command(
                    MavCmd::MAV_CMD_NAV_TAKEOFF,
                    [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, amsl]
                ),
                MavResult::MAV_RESULT_ACCEPTED
            );
            self.run_until(30.0, |s| s.mode() == FlightMode::Loiter);
        }
    }

    #[test]
    fn arducopter_guided_flies_at_wpnav_speed_and_ignores_the_reposition_speed() {
        // GCS_MAVLink_Copter.cpp handle_command_int_do_reposition: set_destination(loc, false,
        // 0, ...) reads neither param1 (speed) nor param4 (yaw); mode_guided.cpp
        // pva_control_start: the position controller flies at WPNAV_SPEED (1000 cm/s).
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(10.0);
        let ack = h.reposition(
            150.0,
            0.0,
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            10.0,
            3.0,
            90.0,
        );
        assert_eq!(ack, MavResult::MAV_RESULT_ACCEPTED);
        let top = h.top_speed(25.0);
        assert!(
            (9.5..=10.05).contains(&top),
            "flew at {top} m/s, not WPNAV_SPEED"
        );
        // Outside GUIDED without the change-mode flag it is DENIED.
        assert_eq!(h.set_mode_ardupilot(17.0), MavResult::MAV_RESULT_ACCEPTED);
        let goal = h.sim.home.offset_by(&Vector3::new(0.0, 20.0, 0.0));
        let ack = h.command_int(
            MavCmd::MAV_CMD_DO_REPOSITION,
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            [-1.0, 0.0, 0.0, f32::NAN],
            (goal.lat_deg * 1e7) as i32,
            (goal.lon_deg * 1e7) as i32,
            10.0,
        );
        assert_eq!(ack, MavResult::MAV_RESULT_DENIED);
    }

    #[test]
    fn arducopter_speed_set_before_a_new_controller_start_is_lost_and_after_it_holds() {
        // mode_guided.cpp: set_speed_xy_cms sets the position controller's speed; the first
        // position target after a takeoff (or after entering GUIDED) restarts the controller
        // at WPNAV_SPEED (set_destination → pos_control_start → pva_control_start); later
        // targets keep it.
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(10.0);
        assert_eq!(h.change_speed(4.0), MavResult::MAV_RESULT_ACCEPTED);
        h.reposition(
            150.0,
            0.0,
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            10.0,
            -1.0,
            f32::NAN,
        );
        let top = h.top_speed(12.0);
        assert!(
            top > 9.5,
            "the speed set before the first target was reset: {top}"
        );
        // Set after the target, it holds, and a later target keeps it.
        assert_eq!(h.change_speed(4.0), MavResult::MAV_RESULT_ACCEPTED);
        h.run(4.0);
        let top = h.top_speed(5.0);
        assert!((3.8..=4.05).contains(&top), "{top}");
        h.reposition(
            0.0,
            80.0,
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            10.0,
            -1.0,
            f32::NAN,
        );
        let top = h.top_speed(10.0);
        assert!(
            (3.8..=4.05).contains(&top),
            "a second target keeps the speed: {top}"
        );
        // Entering GUIDED again (from BRAKE, via the reposition's change-mode flag) resets it.
        assert_eq!(h.set_mode_ardupilot(17.0), MavResult::MAV_RESULT_ACCEPTED);
        h.run(5.0);
        h.reposition(
            -100.0,
            0.0,
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            10.0,
            -1.0,
            f32::NAN,
        );
        assert_eq!(h.sim.mode(), FlightMode::Guided);
        let top = h.top_speed(15.0);
        assert!(
            top > 9.5,
            "re-entering GUIDED restarts at WPNAV_SPEED: {top}"
        );
    }

    #[test]
    fn arducopter_takes_a_speed_change_only_in_guided_auto_and_rtl() {
        // GCS_MAVLink_Copter.cpp handle_MAV_CMD_DO_CHANGE_SPEED: DENIED without a positive
        // speed or with an unknown speed type; otherwise the mode's set_speed_xy_cms, which
        // only Guided, Auto and RTL override (mode.h): FAILED in every other mode.
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(10.0);
        assert_eq!(h.change_speed(3.0), MavResult::MAV_RESULT_ACCEPTED);
        assert_eq!(h.change_speed(0.0), MavResult::MAV_RESULT_DENIED);
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_DO_CHANGE_SPEED,
                [4.0, 3.0, -1.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_DENIED
        );
        for mode in [17.0, 5.0, 16.0, 0.0] {
            assert_eq!(h.set_mode_ardupilot(mode), MavResult::MAV_RESULT_ACCEPTED);
            assert_eq!(
                h.change_speed(3.0),
                MavResult::MAV_RESULT_FAILED,
                "mode {mode}"
            );
        }
        assert_eq!(h.set_mode_ardupilot(6.0), MavResult::MAV_RESULT_ACCEPTED);
        assert_eq!(h.change_speed(3.0), MavResult::MAV_RESULT_ACCEPTED);
    }

    #[test]
    fn arducopter_rtl_climbs_to_rtl_alt_then_cruises_at_rtl_speed() {
        // mode_rtl.cpp: init runs wp_and_spline_init_cm(RTL_SPEED) (0: WPNAV_SPEED);
        // compute_return_target climbs to max(RTL_ALT, here + RTL_CLIMB_MIN) inside the
        // RTL_CONE_SLOPE cone, never lower than here; set_speed_xy_cms changes the speed.
        let fly_home = |rtl_speed_cms: f32, change_to: Option<f32>| {
            let mut h = Harness::new(Personality::ArduPilot);
            h.set_param("RTL_SPEED", rtl_speed_cms);
            h.ardupilot_airborne(5.0);
            h.reposition(
                120.0,
                0.0,
                MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
                5.0,
                -1.0,
                f32::NAN,
            );
            h.run_until(60.0, |s| {
                s.physics().horizontal_distance_m(&Vector3::zeros()) > 119.0
                    && s.physics().velocity_ned_m_s().norm() < 0.2
            });
            assert_eq!(h.set_mode_ardupilot(6.0), MavResult::MAV_RESULT_ACCEPTED);
            if let Some(speed) = change_to {
                assert_eq!(h.change_speed(speed), MavResult::MAV_RESULT_ACCEPTED);
            }
            // It climbs to RTL_ALT (15 m) where it is before going home.
            h.run_until(20.0, |s| s.altitude_m() > 14.8);
            assert!(h.sim.physics().horizontal_distance_m(&Vector3::zeros()) > 118.0);
            let top = h.top_speed(20.0);
            h.run_until(120.0, |s| !s.armed());
            assert!(h.sim.physics().horizontal_distance_m(&Vector3::zeros()) < 1.0);
            top
        };
        let top = fly_home(0.0, None);
        assert!(
            (9.5..=10.05).contains(&top),
            "RTL_SPEED 0 cruises at WPNAV_SPEED: {top}"
        );
        let top = fly_home(300.0, None);
        assert!((2.9..=3.05).contains(&top), "RTL_SPEED 300 cm/s: {top}");
        let top = fly_home(0.0, Some(4.0));
        assert!((3.9..=4.05).contains(&top), "DO_CHANGE_SPEED in RTL: {top}");

        // Near home the cone lowers the climb: 2 m away with slope 3 gives 6 m, not 15 m.
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(4.0);
        h.reposition(
            2.0,
            0.0,
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            4.0,
            -1.0,
            f32::NAN,
        );
        h.run(8.0);
        assert_eq!(h.set_mode_ardupilot(6.0), MavResult::MAV_RESULT_ACCEPTED);
        let mut highest: f64 = 0.0;
        for _ in 0..400 {
            h.run(0.1);
            highest = highest.max(h.sim.altitude_m());
        }
        assert!((5.7..6.3).contains(&highest), "climbed to {highest} m");
    }

    #[test]
    fn px4_reposition_altitude_is_above_sea_level_whatever_the_frame() {
        // navigator_main.cpp (VEHICLE_CMD_DO_REPOSITION): position_setpoint.alt = param7, the
        // global position's altitude (AMSL); the frame is not read. Param1 is the ground speed
        // (≤ 0: MPC_XY_CRUISE, 5 m/s, on entering Hold); param4 the yaw in radians.
        let mut h = Harness::new(Personality::Px4);
        h.px4_airborne(10.0);
        let ack = h.reposition(
            60.0,
            0.0,
            MavFrame::MAV_FRAME_GLOBAL_INT,
            488.0 + 12.0,
            -1.0,
            f32::NAN,
        );
        assert_eq!(ack, MavResult::MAV_RESULT_ACCEPTED);
        let top = h.top_speed(20.0);
        assert!((4.8..=5.05).contains(&top), "MPC_XY_CRUISE: {top}");
        h.run(10.0);
        assert!(
            (h.sim.altitude_m() - 12.0).abs() < 0.2,
            "{}",
            h.sim.altitude_m()
        );
        // A relative altitude in a relative frame is still taken as AMSL: 12 m above sea level
        // is far below home (488 m), so the vehicle goes down to the ground.
        h.reposition(
            60.0,
            20.0,
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            12.0,
            3.0,
            f32::NAN,
        );
        h.run_until(40.0, |s| s.physics().on_ground());
        // Param1 carries the speed; the yaw is in radians.
        let mut h = Harness::new(Personality::Px4);
        h.px4_airborne(10.0);
        h.reposition(
            0.0,
            80.0,
            MavFrame::MAV_FRAME_GLOBAL_INT,
            498.0,
            3.0,
            std::f32::consts::PI,
        );
        let top = h.top_speed(15.0);
        assert!((2.9..=3.05).contains(&top), "{top}");
        h.run(20.0);
        assert!((h.sim.physics().yaw_rad().abs() - std::f64::consts::PI).abs() < 0.05);
        // Without the change-mode flag the commander answers UNSUPPORTED.
        let ack = h.command_int(
            MavCmd::MAV_CMD_DO_REPOSITION,
            MavFrame::MAV_FRAME_GLOBAL_INT,
            [-1.0, 0.0, 0.0, f32::NAN],
            0,
            0,
            498.0,
        );
        assert_eq!(ack, MavResult::MAV_RESULT_UNSUPPORTED);
    }

    #[test]
    fn px4_speed_change_applies_to_the_next_setpoint() {
        // navigator_main.cpp (VEHICLE_CMD_DO_CHANGE_SPEED): accepted in any mode, it sets the
        // navigator's cruising speed, which the next reposition (without its own speed) or the
        // next RTL leg takes; MPC_XY_VEL_MAX caps everything.
        let mut h = Harness::new(Personality::Px4);
        h.px4_airborne(10.0);
        h.reposition(
            0.0,
            100.0,
            MavFrame::MAV_FRAME_GLOBAL_INT,
            498.0,
            -1.0,
            f32::NAN,
        );
        h.run(3.0);
        assert_eq!(h.change_speed(2.0), MavResult::MAV_RESULT_ACCEPTED);
        let top = h.top_speed(5.0);
        assert!(top > 4.8, "the running leg keeps its speed: {top}");
        h.reposition(
            0.0,
            -50.0,
            MavFrame::MAV_FRAME_GLOBAL_INT,
            498.0,
            -1.0,
            f32::NAN,
        );
        h.run(3.0);
        let top = h.top_speed(10.0);
        assert!(
            (1.9..=2.05).contains(&top),
            "the next setpoint takes it: {top}"
        );
        h.set_param("MPC_XY_VEL_MAX", 4.0);
        h.reposition(
            0.0,
            100.0,
            MavFrame::MAV_FRAME_GLOBAL_INT,
            498.0,
            9.0,
            f32::NAN,
        );
        let top = h.top_speed(15.0);
        assert!(
            (3.9..=4.05).contains(&top),
            "capped by MPC_XY_VEL_MAX: {top}"
        );
    }

    #[test]
    fn px4_estimator_is_in_constant_position_mode_at_rest() {
        // ekf_helper.cpp get_ekf_soln_status: CONST_POS_MODE = fake_pos || valid_fake_pos ||
        // vehicle_at_rest: 1023 on the ground, 895 once it moves (sitl.md, SIH).
        let flags = |h: &Harness| {
            h.sent
                .iter()
                .rev()
                .find_map(|(_, m)| match m {
                    MavMessage::ESTIMATOR_STATUS(e) => Some(e.flags.bits()),
                    _ => None,
                })
                .expect("ESTIMATOR_STATUS")
        };
        let mut h = Harness::new(Personality::Px4);
        h.run(2.0);
        assert_eq!(flags(&h), 1023);
        h.px4_airborne(10.0);
        h.run(1.1);
        assert_eq!(flags(&h), 895);
        // Without GPS: constant position and no absolute position.
        h.set_param("SIM_GPS_DISABLE", 1.0);
        h.run(1.1);
        let f = EstimatorStatusFlags::from_bits_truncate(flags(&h));
        assert!(f.contains(EstimatorStatusFlags::ESTIMATOR_CONST_POS_MODE));
        assert!(!f.contains(EstimatorStatusFlags::ESTIMATOR_POS_HORIZ_ABS));
    }

    #[test]
    fn px4_returns_to_hold_after_disarming_from_a_landing() {
        // UserModeIntention::onDisarm: PX4 goes back to the last mode that allows arming, so a
        // landing ends in AUTO.LOITER once disarmed (seen on SIH: "Disarmed by landing").
        let mut h = Harness::new(Personality::Px4);
        h.px4_airborne(5.0);
        assert_eq!(
            h.command(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]),
            MavResult::MAV_RESULT_ACCEPTED
        );
        h.run_until(60.0, |s| !s.armed());
        assert_eq!(h.sim.mode(), FlightMode::Loiter);
        assert!(h.events.contains(&SimEvent::ModeChanged("AUTO.LOITER")));
    }

    #[test]
    fn px4_takeoff_altitude_is_amsl_or_the_default_above_where_it_stands() {
        // navigator/takeoff.cpp: param7 AMSL, never below the current altitude; NaN takes
        // MIS_TAKEOFF_ALT (2.5 m) above the vehicle.
        let mut h = Harness::new(Personality::Px4);
        h.run(1.0);
        h.arm();
        h.command(
            MavCmd::MAV_CMD_NAV_TAKEOFF,
            [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, f32::NAN],
        );
        h.run_until(20.0, |s| s.mode() == FlightMode::Loiter);
        assert!(
            (h.sim.altitude_m() - 2.5).abs() < 0.15,
            "{}",
            h.sim.altitude_m()
        );
        // Before a landing, a takeoff to 1 m AMSL (below home) keeps it on the ground.
        let mut h = Harness::new(Personality::Px4);
        h.run(1.0);
        h.arm();
        h.command(
            MavCmd::MAV_CMD_NAV_TAKEOFF,
            [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, 1.0],
        );
        h.run(5.0);
        assert!(h.sim.altitude_m() < 0.1);
    }

    #[test]
    fn the_estimator_trusts_its_position_only_after_the_firmware_timeline() {
        // NOTES.md §5 (ArduCopter SITL 4.7.0-dev): EKF3 4.8 s, GPS 10.5 s, origin and home
        // 20.4 s, using GPS 42 s, arming 44 s; "Arm: AHRS: waiting for home" (AP_Arming.cpp)
        // then "Arm: Need Position Estimate" (AP_Arming_Copter.cpp); AP_NavEKF3_Control.cpp:
        // CONST_POS_MODE without aiding; mode.cpp: any mode while disarmed.
        let mut h = Harness::with_options(Personality::ArduPilot, 1, None);
        let last = |h: &Harness, name: &str| {
            h.sent
                .iter()
                .rev()
                .find(|(_, m)| m.message_name() == name)
                .map(|(_, m)| m.clone())
        };
        h.run(2.0);
        assert!(
            matches!(last(&h, "EKF_STATUS_REPORT"), Some(MavMessage::EKF_STATUS_REPORT(e)) if e.flags.contains(EkfStatusFlags::EKF_UNINITIALIZED))
        );
        h.run(6.0);
        assert!(
            matches!(last(&h, "GPS_RAW_INT"), Some(MavMessage::GPS_RAW_INT(g)) if g.fix_type == GpsFixType::GPS_FIX_TYPE_NO_GPS)
        );
        assert!(
            matches!(last(&h, "EKF_STATUS_REPORT"), Some(MavMessage::EKF_STATUS_REPORT(e)) if e.flags.contains(EkfStatusFlags::EKF_CONST_POS_MODE))
        );
        assert_eq!(h.arm(), MavResult::MAV_RESULT_FAILED);
        assert!(
            h.status_texts()
                .iter()
                .any(|t| t == "Arm: AHRS: waiting for home")
        );
        assert_eq!(h.count("HOME_POSITION", Duration::ZERO, h.now), 0);
        assert_eq!(h.count("GLOBAL_POSITION_INT", Duration::ZERO, h.now), 0);
        // While disarmed GUIDED is accepted without a position.
        assert_eq!(h.set_mode_ardupilot(4.0), MavResult::MAV_RESULT_ACCEPTED);
        h.run(17.0);
        assert!(h.count("HOME_POSITION", Duration::ZERO, h.now) >= 1);
        assert!(h.count("GLOBAL_POSITION_INT", Duration::from_secs(21), h.now) >= 1);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_FAILED);
        assert!(
            h.status_texts()
                .iter()
                .any(|t| t == "Arm: Need Position Estimate")
        );
        h.run(18.0);
        assert!(
            matches!(last(&h, "EKF_STATUS_REPORT"), Some(MavMessage::EKF_STATUS_REPORT(e)) if e.flags.contains(EkfStatusFlags::EKF_POS_HORIZ_ABS) && !e.flags.contains(EkfStatusFlags::EKF_CONST_POS_MODE))
        );
        assert_eq!(
            h.arm(),
            MavResult::MAV_RESULT_FAILED,
            "position trusted at 42 s, arming at 44 s"
        );
        h.run(2.0);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_ACCEPTED);

        // PX4 SIH: ESTIMATOR_STATUS 1023 at 3 s, arming accepted from 5 s (TEMPORARILY_REJECTED
        // "Arming denied: Resolve system health failures first" before).
        let mut h = Harness::with_options(Personality::Px4, 1, None);
        h.run(3.5);
        assert!(
            matches!(last(&h, "ESTIMATOR_STATUS"), Some(MavMessage::ESTIMATOR_STATUS(e)) if e.flags.bits() == 1023)
        );
        assert_eq!(h.arm(), MavResult::MAV_RESULT_TEMPORARILY_REJECTED);
        // 51 characters: the STATUSTEXT carries 50 (PX4 sends the rest in a second chunk).
        assert!(
            h.status_texts()
                .iter()
                .any(|t| t.starts_with("Arming denied: Resolve system health failures"))
        );
        h.run(1.6);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_ACCEPTED);

        // A shorter timeline (the --ekf-ready-s option) scales every stage.
        let t = EkfTimeline::scaled(Personality::ArduPilot, 4.2);
        assert_eq!(t.position_trusted, Duration::from_secs_f64(4.2));
        assert!((t.origin_set.as_secs_f64() - 2.04).abs() < 1e-9);
        assert!((t.arming_ready.as_secs_f64() - 4.4).abs() < 1e-9);
    }

    #[test]
    fn ardupilot_battery_percentage_counts_consumed_mah_not_volts() {
        // AP_BattMonitor_Backend::capacity_remaining_pct: (BATT_CAPACITY − consumed mAh) /
        // BATT_CAPACITY for a current-measuring monitor (BATT_MONITOR 4), unknown otherwise;
        // SITL's quad keeps SIM_BATT_VOLTAGE whatever is consumed (SIM_Frame.h battCapacityAh
        // 0); reset_remaining sets the percentage (MAV_CMD_BATTERY_RESET).
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(10.0);
        h.run(60.0);
        let consumed = h.sim.physics().battery().consumed_mah;
        let expected = (100.0 * (3300.0 - consumed) / 3300.0).floor() as i8;
        h.run(1.1);
        let percent = h.last_battery_percent();
        assert!((percent - expected).abs() <= 1, "{percent} vs {expected}");
        let volts = |h: &Harness| {
            h.sent
                .iter()
                .rev()
                .find_map(|(_, m)| match m {
                    MavMessage::SYS_STATUS(s) => Some(s.voltage_battery),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(volts(&h), 12_600);
        // Volts move, the percentage does not.
        h.set_param("SIM_BATT_VOLTAGE", 11.1);
        h.run(1.1);
        assert_eq!(volts(&h), 11_100);
        assert!((h.last_battery_percent() - percent).abs() <= 1);
        // The ground station's reset sets it.
        assert_eq!(
            h.command(
                MavCmd::MAV_CMD_BATTERY_RESET,
                [1.0, 25.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_ACCEPTED
        );
        h.run(1.1);
        assert!(
            (23..=25).contains(&h.last_battery_percent()),
            "{}",
            h.last_battery_percent()
        );
        // Without a capacity, or a voltage-only monitor: unknown.
        h.set_param("BATT_CAPACITY", 0.0);
        h.run(1.1);
        assert_eq!(h.last_battery_percent(), -1);
        h.set_param("BATT_CAPACITY", 3300.0);
        h.set_param("BATT_MONITOR", 3.0);
        h.run(1.1);
        assert_eq!(h.last_battery_percent(), -1);
        // SIM_BATT_CAP_AH is declared by SITL and read nowhere: nothing changes.
        h.set_param("BATT_MONITOR", 4.0);
        h.set_param("SIM_BATT_CAP_AH", 0.5);
        h.run(1.1);
        assert!((22..=25).contains(&h.last_battery_percent()));

        // Arming checks (AP_BattMonitor_Backend::arming_checks): the arming voltage and the
        // low-voltage failsafe level.
        let mut h = Harness::new(Personality::ArduPilot);
        h.run(1.0);
        h.set_param("BATT_ARM_VOLT", 12.8);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_FAILED);
        assert!(
            h.status_texts()
                .iter()
                .any(|t| t == "PreArm: Battery 1 below minimum arming voltage")
        );
        h.set_param("BATT_ARM_VOLT", 0.0);
        h.set_param("SIM_BATT_VOLTAGE", 10.2);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_FAILED);
        assert!(
            h.status_texts()
                .iter()
                .any(|t| t == "PreArm: Battery 1 low failsafe")
        );
        h.set_param("SIM_BATT_VOLTAGE", 12.6);
        assert_eq!(h.arm(), MavResult::MAV_RESULT_ACCEPTED);
    }

    #[test]
    fn the_wind_is_scaled_with_height_as_sitl_scales_it() {
        // AP_HAL_SITL/SITL_State.cpp: SIM_WIND_T 0 multiplies SIM_WIND_SPD by
        // sqrt(altitude / SIM_WIND_T_ALT) below SIM_WIND_T_ALT (60 m); 1 leaves it alone.
        let mut h = Harness::new(Personality::ArduPilot);
        h.ardupilot_airborne(6.0);
        h.set_param("SIM_WIND_SPD", 30.0);
        h.run(0.1);
        let here = h.sim.physics().wind_here_ned_m_s().norm();
        assert!((here - 9.49).abs() < 0.05, "{here}");
        h.set_param("SIM_WIND_T", 1.0);
        h.run(0.1);
        assert!((h.sim.physics().wind_here_ned_m_s().norm() - 30.0).abs() < 1e-9);
        h.set_param("SIM_WIND_T", 0.0);
        h.set_param("SIM_WIND_T_ALT", 6.0);
        h.run(0.1);
        assert!((h.sim.physics().wind_here_ned_m_s().norm() - 30.0).abs() < 0.05);
        // SITL.cpp SIM_WIND_TURB (m/s, default 0): a steady wind unless turbulence is asked
        // for; then the vehicle's ground velocity wanders (SIM_Aircraft.cpp filtered noise).
        let wander = |h: &mut Harness| {
            let mut speeds = Vec::new();
            for _ in 0..50 {
                h.run(0.2);
                speeds.push(h.sim.physics().velocity_ned_m_s().xy().norm());
            }
            let mean = speeds.iter().sum::<f64>() / speeds.len() as f64;
            speeds.iter().map(|s| (s - mean).abs()).fold(0.0, f64::max)
        };
        h.set_param("SIM_WIND_SPD", 6.0);
        h.run(20.0);
        assert!(wander(&mut h) < 0.05);
        h.set_param("SIM_WIND_TURB", 3.0);
        assert!(wander(&mut h) > 0.3);
    }

    #[test]
    fn the_pre_flight_parameters_are_answered_with_the_firmware_defaults() {
        // Defaults from the parameter tables cited at default_params; PX4 INT32 bytewise.
        let mut h = Harness::new(Personality::ArduPilot);
        for (name, value) in [
            ("WPNAV_SPEED", 1000.0),
            ("RTL_SPEED", 0.0),
            ("RTL_ALT", 1500.0),
            ("LOIT_SPEED", 1250.0),
            ("BATT_MONITOR", 4.0),
            ("BATT_CAPACITY", 3300.0),
            ("BATT_LOW_VOLT", 10.5),
            ("BATT_FS_LOW_ACT", 0.0),
            ("FENCE_ENABLE", 0.0),
            ("FENCE_ALT_MAX", 100.0),
            ("FENCE_RADIUS", 150.0),
        ] {
            assert_eq!(h.param_value(name).param_value, value, "{name}");
        }
        let mut h = Harness::new(Personality::Px4);
        for (name, value) in [
            ("MPC_XY_CRUISE", 5.0),
            ("MPC_XY_VEL_MAX", 12.0),
            ("RTL_RETURN_ALT", 30.0),
            ("BAT1_CAPACITY", -1.0),
            ("BAT_LOW_THR", 0.15),
            ("GF_MAX_HOR_DIST", 0.0),
        ] {
            assert_eq!(h.param_value(name).param_value, value, "{name}");
        }
        for (name, value) in [("COM_LOW_BAT_ACT", 3), ("GF_ACTION", 2)] {
            let p = h.param_value(name);
            assert_eq!(p.param_type, MavParamType::MAV_PARAM_TYPE_INT32);
            assert_eq!(p.param_value.to_bits() as i32, value, "{name}");
        }
    }
}
