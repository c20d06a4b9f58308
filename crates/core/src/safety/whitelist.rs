//! The command whitelist: every MAVLink message and `MAV_CMD` the daemon may ever emit, deny
//! by default (sans-IO).
//!
//! # API
//! [`Whitelist::new`]`(&EnvelopeConfig)` then [`Whitelist::check`]`(&msg, &VehicleView, role)`
//! just before a message is handed to the link writer. `Err(Violation)` means the message
//! must not be sent: it is an internal error to log and count, never transmitted.
//! Nothing here keeps state, reads a clock or does IO.
//!
//! # The table
//! [`RULES`] lists each allowed message or command with the least [`Role`] that may cause it,
//! the flight states it is allowed in, and a parameter check ([`Bounds`]). Anything not in
//! the table is refused, and [`NEVER`] names the dangerous commands explicitly so their
//! refusal says why. The daemon's own heartbeat and telemetry requests are `Role::System`.
//! There is no raw passthrough: a ground client can only reach this through a flight tool.

use std::fmt;

use crate::link::dialect::{MavAutopilot, MavCmd, MavFrame, MavMessage, PositionTargetTypemask};
use mavlink::Message;

use super::envelope_config::EnvelopeConfig;
use crate::role::Role;
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;

pub use crate::vehicle::view::{Landed, VehicleView};

/// In which flight states a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// Disarmed and known to be on the ground.
    DisarmedOnGround,
    /// Armed and known to be on the ground.
    ArmedOnGround,
    /// Armed and known to be in the air.
    ArmedInAir,
    /// Armed, wherever it is.
    Armed,
    /// Disarmed.
    Disarmed,
}

impl When {
    fn allows(self, s: &VehicleView) -> bool {
        match self {
            When::Always => true,
            // `Landed::Unknown` is neither: ground-only and air-only commands are refused.
            When::DisarmedOnGround => !s.armed && s.landed.on_ground(),
            When::ArmedOnGround => s.armed && s.landed.on_ground(),
            When::ArmedInAir => s.armed && s.landed.in_air(),
            When::Armed => s.armed,
            When::Disarmed => !s.armed,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            When::Always => "in any state",
            When::DisarmedOnGround => "only disarmed on the ground",
            When::ArmedOnGround => "only armed on the ground",
            When::ArmedInAir => "only armed in the air",
            When::Armed => "only while armed",
            When::Disarmed => "only while disarmed",
        }
    }
}

/// The parameter check of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    None,
    Heartbeat,
    /// `SET_MESSAGE_INTERVAL`: interval ≥ 10 ms, or -1 (stop) / 0 (default).
    MessageInterval,
    /// `COMPONENT_ARM_DISARM` to arm: param1 = 1, no force (param2 = 0).
    Arm,
    /// `COMPONENT_ARM_DISARM` to disarm: param1 = 0, no force.
    Disarm,
    /// `NAV_TAKEOFF`: altitude (param7) in (0, ceiling] above home; PX4's param7 is above
    /// mean sea level, so it needs home's altitude.
    Takeoff,
    /// `DO_SET_MODE`: only guided, hold, brake, land, return modes.
    SafeMode,
    /// `DO_CHANGE_SPEED`: speed within the envelope's limit.
    Speed,
    /// `DO_REPOSITION`: speed within limit, altitude ≤ ceiling, a real position.
    Reposition,
    /// `CONDITION_YAW`: heading 0..360, relative/absolute flag 0/1, rate ≤ 90°/s.
    Yaw,
    /// `DO_FENCE_ENABLE`: only 1 (enable).
    FenceEnableOnly,
    /// `SET_POSITION_TARGET_*`: velocities within limits, altitude ≤ ceiling, safe frames.
    PositionTarget,
    /// `PARAM_SET`: only [`PARAM_ALLOWLIST`], within each entry's bounds.
    ParamSet,
    /// `MISSION_ITEM_INT`: in the mission list only [`MISSION_COMMANDS`] at a real position,
    /// altitude at most the ceiling above home, speeds within the limit, `current` 0; in the
    /// fence list only fence items; in the rally list only rally points.
    MissionItem,
    /// `PARAM_REQUEST_READ`: by name (index -1) or by index (the download's gaps).
    ParamRead,
}

/// What a rule matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Key {
    /// A message id other than `COMMAND_LONG`/`COMMAND_INT`.
    Message(u32),
    /// A command, sent as `COMMAND_LONG` or `COMMAND_INT`.
    Command(MavCmd),
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub key: Key,
    pub role_min: Role,
    pub when: When,
    pub bounds: Bounds,
}

const fn msg(id: u32, role_min: Role, when: When, bounds: Bounds) -> Rule {
    Rule {
        key: Key::Message(id),
        role_min,
        when,
        bounds,
    }
}

const fn cmd(c: MavCmd, role_min: Role, when: When, bounds: Bounds) -> Rule {
    Rule {
        key: Key::Command(c),
        role_min,
        when,
        bounds,
    }
}

/// Everything the daemon may emit.
pub const RULES: &[Rule] = &[
    msg(0, Role::System, When::Always, Bounds::Heartbeat), // HEARTBEAT
    msg(20, Role::ReadOnly, When::Always, Bounds::ParamRead), // PARAM_REQUEST_READ
    msg(21, Role::ReadOnly, When::Always, Bounds::None),   // PARAM_REQUEST_LIST
    msg(23, Role::Admin, When::DisarmedOnGround, Bounds::ParamSet), // PARAM_SET
    msg(84, Role::Operator, When::ArmedInAir, Bounds::PositionTarget), // SET_POSITION_TARGET_LOCAL_NED
    msg(86, Role::Operator, When::ArmedInAir, Bounds::PositionTarget), // SET_POSITION_TARGET_GLOBAL_INT
    // The mission protocol (`vehicle::mission`); the list type's authority is checked first
    // (`mission_authority`): the fence and rally lists are ADMIN's and written only disarmed.
    msg(41, Role::Operator, When::Always, Bounds::None), // MISSION_SET_CURRENT
    msg(43, Role::ReadOnly, When::Always, Bounds::None), // MISSION_REQUEST_LIST
    msg(44, Role::Operator, When::Always, Bounds::None), // MISSION_COUNT
    msg(45, Role::Operator, When::Always, Bounds::None), // MISSION_CLEAR_ALL
    msg(47, Role::ReadOnly, When::Always, Bounds::None), // MISSION_ACK
    msg(51, Role::ReadOnly, When::Always, Bounds::None), // MISSION_REQUEST_INT
    msg(73, Role::Operator, When::Always, Bounds::MissionItem), // MISSION_ITEM_INT
    cmd(
        MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
        Role::System,
        When::Always,
        Bounds::MessageInterval,
    ),
    cmd(
        MavCmd::MAV_CMD_REQUEST_MESSAGE,
        Role::System,
        When::Always,
        Bounds::None,
    ),
    cmd(
        MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
        Role::Operator,
        When::DisarmedOnGround,
        Bounds::Arm,
    ),
    cmd(
        MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
        Role::Operator,
        When::ArmedOnGround,
        Bounds::Disarm,
    ),
    cmd(
        MavCmd::MAV_CMD_NAV_TAKEOFF,
        Role::Operator,
        When::ArmedOnGround,
        Bounds::Takeoff,
    ),
    cmd(
        MavCmd::MAV_CMD_NAV_LAND,
        Role::Operator,
        When::Armed,
        Bounds::None,
    ),
    cmd(
        MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH,
        Role::Operator,
        When::Armed,
        Bounds::None,
    ),
    cmd(
        MavCmd::MAV_CMD_DO_SET_MODE,
        Role::Operator,
        When::Always,
        Bounds::SafeMode,
    ),
    cmd(
        MavCmd::MAV_CMD_DO_CHANGE_SPEED,
        Role::Operator,
        When::Armed,
        Bounds::Speed,
    ),
    cmd(
        MavCmd::MAV_CMD_DO_REPOSITION,
        Role::Operator,
        When::ArmedInAir,
        Bounds::Reposition,
    ),
    cmd(
        MavCmd::MAV_CMD_CONDITION_YAW,
        Role::Operator,
        When::ArmedInAir,
        Bounds::Yaw,
    ),
    cmd(
        MavCmd::MAV_CMD_DO_FENCE_ENABLE,
        Role::Admin,
        When::Always,
        Bounds::FenceEnableOnly,
    ),
];

/// Commands that are never sent, with the reason shown in the violation.
pub const NEVER: &[(MavCmd, &str)] = &[
    (
        MavCmd::MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN,
        "reboot/shutdown can drop a flying vehicle",
    ),
    (
        MavCmd::MAV_CMD_PREFLIGHT_CALIBRATION,
        "calibration is done on the bench, not over the air",
    ),
    (
        MavCmd::MAV_CMD_PREFLIGHT_STORAGE,
        "storage reset wipes the autopilot's parameters",
    ),
    (
        MavCmd::MAV_CMD_DO_MOTOR_TEST,
        "motor tests spin the propellers",
    ),
    (
        MavCmd::MAV_CMD_DO_FLIGHTTERMINATION,
        "flight termination drops the vehicle",
    ),
    (
        MavCmd::MAV_CMD_DO_PARACHUTE,
        "the parachute is a local decision",
    ),
    (
        MavCmd::MAV_CMD_DO_SET_HOME,
        "moving home moves the return point and the fence",
    ),
    (
        MavCmd::MAV_CMD_DO_SET_SERVO,
        "raw actuator control bypasses the autopilot",
    ),
    (
        MavCmd::MAV_CMD_DO_SET_ACTUATOR,
        "raw actuator control bypasses the autopilot",
    ),
    (
        MavCmd::MAV_CMD_MISSION_START,
        "a mission starts only through start_mission (AUTO, after the daemon checked it)",
    ),
];

/// Message ids never sent, with the reason.
pub const NEVER_MESSAGES: &[(u32, &str)] = &[
    (69, "MANUAL_CONTROL injects stick input"),
    (70, "RC_CHANNELS_OVERRIDE injects stick input"),
    (82, "SET_ATTITUDE_TARGET bypasses position control"),
    (
        110,
        "FILE_TRANSFER_PROTOCOL can write the autopilot's files",
    ),
    (126, "SERIAL_CONTROL is a shell on the autopilot"),
    (121, "LOG_ERASE deletes the flight logs"),
    (232, "GPS_INPUT spoofs the position"),
    (256, "SETUP_SIGNING changes the link key"),
];

/// What a mission uploaded through the daemon may contain: the items the mission tools build.
pub const MISSION_COMMANDS: &[MavCmd] = &[
    MavCmd::MAV_CMD_NAV_WAYPOINT,
    MavCmd::MAV_CMD_NAV_TAKEOFF,
    MavCmd::MAV_CMD_NAV_LOITER_TIME,
    MavCmd::MAV_CMD_NAV_LAND,
    MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH,
    MavCmd::MAV_CMD_DO_CHANGE_SPEED,
    MavCmd::MAV_CMD_DO_DIGICAM_CONTROL,
    MavCmd::MAV_CMD_IMAGE_START_CAPTURE,
];

/// Parameter writes the ground may make (disarmed only), with the accepted value range as a
/// function of the envelope: (name, unit scale to SI, which limit bounds it).
pub const PARAM_ALLOWLIST: &[(&str, f64, ParamLimit)] = &[
    ("WPNAV_SPEED", 0.01, ParamLimit::HorizontalSpeed),
    ("WPNAV_SPEED_UP", 0.01, ParamLimit::VerticalSpeed),
    ("WPNAV_SPEED_DN", 0.01, ParamLimit::VerticalSpeed),
    ("LAND_SPEED", 0.01, ParamLimit::VerticalSpeed),
    ("RTL_ALT", 0.01, ParamLimit::Ceiling),
    ("RTL_SPEED", 0.01, ParamLimit::HorizontalSpeed),
    ("MPC_XY_CRUISE", 1.0, ParamLimit::HorizontalSpeed),
    ("MPC_Z_V_AUTO_UP", 1.0, ParamLimit::VerticalSpeed),
    ("MPC_Z_V_AUTO_DN", 1.0, ParamLimit::VerticalSpeed),
    ("MPC_LAND_SPEED", 1.0, ParamLimit::VerticalSpeed),
    ("RTL_RETURN_ALT", 1.0, ParamLimit::Ceiling),
];

// Owned by `param_allow` (the allowlist's check reads it), so the two do not import each
// other; named here too, where the whitelist's tables are.
pub use super::param_allow::PARAM_FORBIDDEN_PREFIXES;

/// Which envelope limit bounds an allowlisted parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamLimit {
    HorizontalSpeed,
    VerticalSpeed,
    Ceiling,
}

/// Why a message may not be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// `COMMAND_LONG`, `PARAM_SET`, ...
    pub message: &'static str,
    /// The command, for `COMMAND_LONG`/`COMMAND_INT`.
    pub command: Option<MavCmd>,
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.command {
            Some(c) => write!(f, "{} {:?} refused: {}", self.message, c, self.reason),
            None => write!(f, "{} refused: {}", self.message, self.reason),
        }
    }
}

impl std::error::Error for Violation {}

/// The whitelist with the envelope limits its bounds refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct Whitelist {
    speed_horizontal_m_s_max: f64,
    speed_vertical_m_s_max: f64,
    altitude_m_max: f64,
    /// `[[parameters.allow]]`: the configured writable parameters (see `param_allow`).
    parameters: Vec<crate::safety::param_allow::ParamAllow>,
}

/// Largest yaw rate accepted in `CONDITION_YAW`.
pub const YAW_RATE_DEG_S_MAX: f32 = 90.0;
/// Shortest telemetry interval accepted in `SET_MESSAGE_INTERVAL` (100 Hz).
pub const MESSAGE_INTERVAL_US_MIN: f32 = 10_000.0;

impl Whitelist {
    pub fn new(envelope: &EnvelopeConfig) -> Whitelist {
        Whitelist {
            speed_horizontal_m_s_max: envelope.speed_horizontal_m_s_max,
            speed_vertical_m_s_max: envelope.speed_vertical_m_s_max,
            altitude_m_max: envelope.altitude_m_max,
            parameters: Vec::new(),
        }
    }

    /// The same whitelist, with the configured writable parameters (`[parameters]`, checked
    /// by `ParametersConfig::check`; a never-write name stays refused here anyway).
    pub fn with_parameters(
        mut self,
        parameters: &crate::safety::param_allow::ParametersConfig,
    ) -> Self {
        self.parameters = parameters.allow.clone();
        self
    }

    /// What `set_parameter` may write, for refusals and `list_parameters`: each name with
    /// its range in firmware units.
    pub fn writable_parameters(&self) -> Vec<crate::safety::param_allow::ParamAllow> {
        let mut out: Vec<crate::safety::param_allow::ParamAllow> = self.parameters.clone();
        for (name, scale, limit) in PARAM_ALLOWLIST {
            let max = self.limit(*limit) / scale;
            match out.iter_mut().find(|a| a.name == *name) {
                Some(a) => a.max = a.max.min(max),
                None => out.push(crate::safety::param_allow::ParamAllow {
                    name: (*name).into(),
                    min: 0.0,
                    max,
                }),
            }
        }
        out
    }

    fn limit(&self, limit: ParamLimit) -> f64 {
        match limit {
            ParamLimit::HorizontalSpeed => self.speed_horizontal_m_s_max,
            ParamLimit::VerticalSpeed => self.speed_vertical_m_s_max,
            ParamLimit::Ceiling => self.altitude_m_max,
        }
    }

    /// May `role` cause `msg` to be sent in `state`? Deny by default.
    pub fn check(
        &self,
        msg: &MavMessage,
        state: &VehicleView,
        role: Role,
    ) -> Result<(), Violation> {
        let name = msg.message_name();
        let (key, command) = match msg {
            MavMessage::COMMAND_LONG(c) => (Key::Command(c.command), Some(c.command)),
            MavMessage::COMMAND_INT(c) => (Key::Command(c.command), Some(c.command)),
            other => (Key::Message(other.message_id()), None),
        };
        let violation = |reason: String| Violation {
            message: name,
            command,
            reason,
        };
        if let Some(c) = command {
            if let Some((_, why)) = NEVER.iter().find(|(n, _)| *n == c) {
                return Err(violation(format!("never sent: {why}")));
            }
        } else if let Some((_, why)) = NEVER_MESSAGES
            .iter()
            .find(|(id, _)| Key::Message(*id) == key)
        {
            return Err(violation(format!("never sent: {why}")));
        }
        if let Err(reason) = mission_authority(msg, state, role) {
            return Err(violation(reason));
        }
        let rows: Vec<&Rule> = RULES.iter().filter(|r| r.key == key).collect();
        if rows.is_empty() {
            return Err(violation(
                "not in the whitelist; the daemon never sends it".into(),
            ));
        }
        // Of the rows for this key, report the one that got furthest: a failed parameter
        // bound says more than a wrong state, which says more than a missing role.
        let mut best: (u8, String) = (0, String::new());
        for rule in rows {
            let (rank, reason) = if role < rule.role_min {
                (
                    1,
                    format!(
                        "needs role {} or above, the caller is {role}",
                        rule.role_min
                    ),
                )
            } else if !rule.when.allows(state) {
                (
                    2,
                    format!(
                        "allowed {} (armed: {}, landed: {:?})",
                        rule.when.describe(),
                        state.armed,
                        state.landed
                    ),
                )
            } else {
                match self.bounds(rule.bounds, msg, state) {
                    Ok(()) => return Ok(()),
                    Err(reason) => (3, reason),
                }
            };
            if rank > best.0 {
                best = (rank, reason);
            } else if rank == best.0 && rank == 2 {
                // Several rows for one command (arm, disarm): name every state allowed.
                best.1 = format!("{} or {}", best.1, reason);
            }
        }
        let last = best.1;
        Err(violation(last))
    }

    // The deprecated frame names are still what ArduPilot and PX4 accept for body offsets and
    // relative altitude; they must stay recognised.
    #[allow(deprecated)]
    fn bounds(&self, bounds: Bounds, msg: &MavMessage, state: &VehicleView) -> Result<(), String> {
        // COMMAND_LONG and COMMAND_INT share the first four params; the rest differ in type.
        let (p, x_y_z) = match msg {
            MavMessage::COMMAND_LONG(c) => (
                [
                    c.param1, c.param2, c.param3, c.param4, c.param5, c.param6, c.param7,
                ],
                None,
            ),
            MavMessage::COMMAND_INT(c) => (
                [c.param1, c.param2, c.param3, c.param4, 0.0, 0.0, c.z],
                Some((c.x, c.y, c.z, c.frame)),
            ),
            _ => ([0.0; 7], None),
        };
        let vmax = self.speed_horizontal_m_s_max as f32;
        let vzmax = self.speed_vertical_m_s_max as f32;
        let ceiling = self.altitude_m_max as f32;
        match bounds {
            Bounds::None => Ok(()),
            Bounds::Heartbeat => match msg {
                // The companion's heartbeat must never claim to be an autopilot.
                MavMessage::HEARTBEAT(h) if h.autopilot == MavAutopilot::MAV_AUTOPILOT_INVALID => {
                    Ok(())
                }
                _ => Err("the daemon's heartbeat must say MAV_AUTOPILOT_INVALID".into()),
            },
            Bounds::MessageInterval => {
                let interval = p[1];
                if interval == -1.0 || interval == 0.0 || interval >= MESSAGE_INTERVAL_US_MIN {
                    Ok(())
                } else {
                    Err(format!(
                        "interval {interval} µs is faster than {MESSAGE_INTERVAL_US_MIN} µs"
                    ))
                }
            }
            Bounds::Arm => {
                if p[0] == 1.0 && p[1] == 0.0 {
                    Ok(())
                } else {
                    Err("only a plain arm (param1 = 1, param2 = 0: no forced arming) is sent while disarmed".into())
                }
            }
            Bounds::Disarm => {
                if p[0] == 0.0 && p[1] == 0.0 {
                    Ok(())
                } else {
                    Err("only a plain disarm (param1 = 0, param2 = 0: never forced) is sent while armed on the ground".into())
                }
            }
            Bounds::Takeoff => Self::takeoff(&p, state, ceiling),
            Bounds::SafeMode => Self::safe_mode(&p, state),
            Bounds::Speed => {
                let (kind, speed) = (p[0], p[1]);
                let limit = if kind == 2.0 || kind == 3.0 {
                    vzmax
                } else {
                    vmax
                };
                if !(0.0..=3.0).contains(&kind) || kind.fract() != 0.0 {
                    Err(format!("speed type {kind} is not 0..=3"))
                } else if speed == -1.0 || (speed > 0.0 && speed <= limit) {
                    Ok(())
                } else {
                    Err(format!(
                        "speed {speed} m/s must be above 0 and at most {limit} m/s"
                    ))
                }
            }
            Bounds::Reposition => Self::reposition(&p, x_y_z, state, vmax, ceiling),
            Bounds::Yaw => {
                if (0.0..=360.0).contains(&p[0])
                    && (0.0..=YAW_RATE_DEG_S_MAX).contains(&p[1])
                    && (-1.0..=1.0).contains(&p[2])
                    && (p[3] == 0.0 || p[3] == 1.0)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "heading must be 0..360°, rate 0..{YAW_RATE_DEG_S_MAX}°/s, direction -1..1, relative 0 or 1"
                    ))
                }
            }
            Bounds::FenceEnableOnly => {
                if p[0] == 1.0 {
                    Ok(())
                } else {
                    Err("DO_FENCE_ENABLE is only ever sent to enable the fence (param1 = 1)".into())
                }
            }
            Bounds::PositionTarget => self.position_target(msg),
            Bounds::ParamSet => self.param_set(msg, state),
            Bounds::MissionItem => self.mission_item(msg, state),
            Bounds::ParamRead => Self::param_read(msg),
        }
    }

    /// NAV_TAKEOFF: to an altitude above home and at most the ceiling (PX4 reads param7
    /// above sea level).
    fn takeoff(p: &[f32; 7], state: &VehicleView, ceiling: f32) -> Result<(), String> {
        let (alt, datum) = match state.autopilot {
            Some(AutopilotKind::Px4) => {
                let Some(home) = state.home_altitude_msl_m else {
                    return Err("PX4 takes off to an altitude above sea level and home's \
                                altitude is not known yet"
                        .into());
                };
                // f64: an f32 AMSL altitude keeps only centimetres, enough here.
                (f64::from(p[6]) - home, " (param7 minus home's altitude)")
            }
            _ => (f64::from(p[6]), ""),
        };
        if alt.is_finite() && alt > 0.0 && alt <= f64::from(ceiling) {
            Ok(())
        } else {
            Err(format!(
                "takeoff altitude {alt:.1} m above home{datum} must be above 0 and at \
                 most the ceiling, {ceiling} m"
            ))
        }
    }

    /// DO_SET_MODE: only the modes the daemon flies with.
    fn safe_mode(p: &[f32; 7], state: &VehicleView) -> Result<(), String> {
        let Some(kind) = state.autopilot else {
            return Err("the autopilot is not known yet, so the mode cannot be decoded".into());
        };
        let Some(mode) = FlightMode::from_set_mode_params(kind, p) else {
            return Err("mode parameters must be non-negative numbers".into());
        };
        if matches!(
            mode,
            FlightMode::Guided
                | FlightMode::Loiter
                | FlightMode::Brake
                | FlightMode::Land
                | FlightMode::Rtl
                | FlightMode::SmartRtl
                | FlightMode::Takeoff
                // start_mission and resume_mission, once the supervisor checked every
                // leg of the autopilot's mission against the envelope.
                | FlightMode::Auto
        ) {
            Ok(())
        } else {
            Err(format!(
                "mode {mode:?} is not one the daemon uses (guided, hold, brake, land, return, takeoff, auto)"
            ))
        }
    }

    /// DO_REPOSITION: as COMMAND_INT, in the frame each autopilot reads, at most the
    /// horizontal speed limit and the ceiling.
    // The deprecated frame names are still what ArduPilot and PX4 accept.
    #[allow(deprecated)]
    fn reposition(
        p: &[f32; 7],
        x_y_z: Option<(i32, i32, f32, MavFrame)>,
        state: &VehicleView,
        vmax: f32,
        ceiling: f32,
    ) -> Result<(), String> {
        let speed = p[0];
        if !(speed == -1.0 || (speed > 0.0 && speed <= vmax)) {
            return Err(format!(
                "speed {speed} m/s must be -1 (default) or within 0..{vmax} m/s"
            ));
        }
        // PX4's navigator takes param7 above mean sea level whatever the frame says
        // (navigator_main.cpp), so PX4 gets an AMSL altitude in MAV_FRAME_GLOBAL and
        // the ceiling is checked against it minus home's altitude; ArduPilot honours
        // the frame and gets a relative one.
        let (frames_ok, above_home, datum) = match (x_y_z, state.autopilot) {
            (Some((_, _, z, frame)), Some(AutopilotKind::Px4)) => {
                let Some(home) = state.home_altitude_msl_m else {
                    return Err("PX4 takes DO_REPOSITION's altitude above sea level and \
                                home's altitude is not known yet"
                        .into());
                };
                (
                    matches!(
                        frame,
                        MavFrame::MAV_FRAME_GLOBAL | MavFrame::MAV_FRAME_GLOBAL_INT
                    ),
                    f64::from(z) - home,
                    "in MAV_FRAME_GLOBAL (above mean sea level, as PX4 reads it)",
                )
            }
            (Some((_, _, z, frame)), _) => (
                matches!(
                    frame,
                    MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT
                        | MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
                ),
                f64::from(z),
                "in a relative-altitude frame",
            ),
            (None, _) => (false, f64::NAN, "as COMMAND_INT"),
        };
        match x_y_z {
            Some((x, y, _, _))
                if frames_ok
                    && x.unsigned_abs() <= 900_000_000
                    && y.unsigned_abs() <= 1_800_000_000
                    && above_home.is_finite()
                    && above_home <= f64::from(ceiling) + 0.01 =>
            {
                Ok(())
            }
            _ => Err(format!(
                "DO_REPOSITION is sent only as COMMAND_INT {datum}, with a real position and an altitude at most {ceiling} m above home"
            )),
        }
    }

    /// PARAM_REQUEST_READ: by name or by index.
    fn param_read(msg: &MavMessage) -> Result<(), String> {
        let MavMessage::PARAM_REQUEST_READ(r) = msg else {
            return Err("not a PARAM_REQUEST_READ".into());
        };
        let name = r
            .param_id
            .to_str()
            .unwrap_or_default()
            .trim_end_matches('\0');
        // Reading changes nothing: the whole table is downloaded (`ParamTable`), the
        // stream's gaps asked for by index.
        if (r.param_index == -1 && !name.is_empty()) || r.param_index >= 0 {
            Ok(())
        } else {
            Err(format!(
                "a parameter is read by name (param_index -1) or by index (0 or more); \
                 got `{name}` at index {}",
                r.param_index
            ))
        }
    }

    /// A mission, fence or rally item the daemon uploads (`Bounds::MissionItem`).
    #[allow(deprecated)] // the *_INT frames: what both autopilots take in mission items
    fn mission_item(&self, msg: &MavMessage, state: &VehicleView) -> Result<(), String> {
        use crate::link::dialect::MavMissionType as T;
        let MavMessage::MISSION_ITEM_INT(m) = msg else {
            return Err("not a MISSION_ITEM_INT".into());
        };
        if m.current != 0 {
            return Err(format!(
                "current = {} makes an item a guided command; mission items go with current = 0",
                m.current
            ));
        }
        if m.x.unsigned_abs() > 900_000_000 || m.y.unsigned_abs() > 1_800_000_000 {
            return Err(format!(
                "latitude {} / longitude {} (1e-7°) is not on Earth",
                m.x, m.y
            ));
        }
        match m.mission_type {
            T::MAV_MISSION_TYPE_FENCE => {
                return if matches!(
                    m.command,
                    MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_RETURN_POINT
                ) {
                    Ok(())
                } else {
                    Err(format!("{:?} is not a fence item", m.command))
                };
            }
            T::MAV_MISSION_TYPE_RALLY => {
                return if m.command == MavCmd::MAV_CMD_NAV_RALLY_POINT {
                    Ok(())
                } else {
                    Err(format!("{:?} is not a rally point", m.command))
                };
            }
            T::MAV_MISSION_TYPE_MISSION => {}
            T::MAV_MISSION_TYPE_ALL => return Err("an item belongs to one list, not ALL".into()),
        }
        if !MISSION_COMMANDS.contains(&m.command) {
            return Err(format!(
                "{:?} is not one of the mission items the daemon uploads ({})",
                m.command,
                MISSION_COMMANDS
                    .iter()
                    .map(|c| format!("{c:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if m.command == MavCmd::MAV_CMD_DO_CHANGE_SPEED {
            let limit = self.speed_horizontal_m_s_max as f32;
            let speed = m.param2;
            return if speed == -1.0 || (speed > 0.0 && speed <= limit) {
                Ok(())
            } else {
                Err(format!(
                    "speed {speed} m/s must be above 0 and at most {limit} m/s"
                ))
            };
        }
        if matches!(
            m.command,
            MavCmd::MAV_CMD_DO_DIGICAM_CONTROL
                | MavCmd::MAV_CMD_IMAGE_START_CAPTURE
                | MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH
        ) {
            return Ok(());
        }
        let above_home_m = match m.frame {
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT
            | MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT => f64::from(m.z),
            // ArduPilot's home slot (index 0) is the only AMSL item the daemon sends.
            MavFrame::MAV_FRAME_GLOBAL | MavFrame::MAV_FRAME_GLOBAL_INT => {
                if m.seq == 0 && m.x == 0 && m.y == 0 && m.z == 0.0 {
                    0.0
                } else if let Some(home) = state.home_altitude_msl_m {
                    f64::from(m.z) - home
                } else {
                    return Err(
                        "an altitude above sea level needs home's altitude, not known yet".into(),
                    );
                }
            }
            other => {
                return Err(format!(
                    "frame {other:?} cannot be checked against the ceiling"
                ));
            }
        };
        let ceiling = self.altitude_m_max;
        if above_home_m.is_finite() && above_home_m <= ceiling {
            Ok(())
        } else {
            Err(format!(
                "item {} at {above_home_m:.1} m above home is above the ceiling, {ceiling} m",
                m.seq
            ))
        }
    }

    #[allow(deprecated)]
    fn position_target(&self, msg: &MavMessage) -> Result<(), String> {
        let (vx, vy, vz, z_up, frame, mask) = match msg {
            MavMessage::SET_POSITION_TARGET_LOCAL_NED(t) => {
                (t.vx, t.vy, t.vz, -t.z, t.coordinate_frame, t.type_mask)
            }
            MavMessage::SET_POSITION_TARGET_GLOBAL_INT(t) => {
                if t.lat_int.unsigned_abs() > 900_000_000
                    || t.lon_int.unsigned_abs() > 1_800_000_000
                {
                    return Err("the target is not a position".into());
                }
                (t.vx, t.vy, t.vz, t.alt, t.coordinate_frame, t.type_mask)
            }
            _ => return Err("not a position target".into()),
        };
        let ignore_pos = mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_X_IGNORE)
            && mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_Y_IGNORE)
            && mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_Z_IGNORE);
        let ignore_vel = mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VX_IGNORE)
            && mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VY_IGNORE)
            && mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_VZ_IGNORE);
        let accel = !(mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_AX_IGNORE)
            && mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_AY_IGNORE)
            && mask.contains(PositionTargetTypemask::POSITION_TARGET_TYPEMASK_AZ_IGNORE));
        if accel {
            return Err("acceleration targets are never sent".into());
        }
        let frame_ok = match msg {
            MavMessage::SET_POSITION_TARGET_LOCAL_NED(_) => matches!(
                frame,
                MavFrame::MAV_FRAME_LOCAL_NED
                    | MavFrame::MAV_FRAME_LOCAL_OFFSET_NED
                    | MavFrame::MAV_FRAME_BODY_OFFSET_NED
                    | MavFrame::MAV_FRAME_BODY_NED
            ),
            _ => matches!(
                frame,
                MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
                    | MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT
            ),
        };
        if !frame_ok {
            return Err(format!("frame {frame:?} is not used by the daemon"));
        }
        if !ignore_vel {
            let vh = vx.hypot(vy);
            if !(vh.is_finite() && vz.is_finite())
                || vh > self.speed_horizontal_m_s_max as f32
                || vz.abs() > self.speed_vertical_m_s_max as f32
            {
                return Err(format!(
                    "velocity {vh:.2} m/s horizontal / {:.2} m/s vertical exceeds {} / {} m/s",
                    vz.abs(),
                    self.speed_horizontal_m_s_max,
                    self.speed_vertical_m_s_max
                ));
            }
        }
        if !ignore_pos {
            let absolute_alt = !matches!(
                frame,
                MavFrame::MAV_FRAME_LOCAL_OFFSET_NED
                    | MavFrame::MAV_FRAME_BODY_OFFSET_NED
                    | MavFrame::MAV_FRAME_BODY_NED
            );
            if !z_up.is_finite() || (absolute_alt && z_up > self.altitude_m_max as f32) {
                return Err(format!(
                    "altitude {z_up} m is above the ceiling, {} m",
                    self.altitude_m_max
                ));
            }
        }
        Ok(())
    }

    /// A parameter write: never a never-write family; otherwise a configured entry within
    /// its bounds, and a built-in one within the envelope (a name in both: both).
    fn param_set(&self, msg: &MavMessage, state: &VehicleView) -> Result<(), String> {
        let MavMessage::PARAM_SET(p) = msg else {
            return Err("not a parameter write".into());
        };
        let Ok(id) = p.param_id.to_str() else {
            return Err("the parameter name is not text".into());
        };
        let id = id.trim_end_matches('\0');
        if crate::safety::param_allow::never_writable(id).is_some() {
            return Err(format!(
                "`{id}` is a fence, failsafe, arming-check or signing parameter: never writable from the ground"
            ));
        }
        let allowed = || {
            self.writable_parameters()
                .iter()
                .map(|a| format!("{} {}..{}", a.name, a.min, a.max))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let configured = self.parameters.iter().find(|a| a.name == id);
        let builtin = PARAM_ALLOWLIST.iter().find(|(n, _, _)| *n == id);
        if configured.is_none() && builtin.is_none() {
            return Err(format!(
                "`{id}` is not in the parameter allowlist; writable: {}",
                allowed()
            ));
        }
        // As the autopilot will read it: PX4 integers are bytewise.
        let Some(value) =
            crate::vehicle::params::decode(state.autopilot, p.param_type, p.param_value)
        else {
            return Err(format!("`{id}`: the value is not a number"));
        };
        if let Some(a) = configured
            && !(a.min..=a.max).contains(&value)
        {
            return Err(format!(
                "`{id}` = {value} is outside its allowlisted range {}..{}",
                a.min, a.max
            ));
        }
        if let Some((_, scale, limit)) = builtin {
            let max = self.limit(*limit);
            let si = value * scale;
            if !(si.is_finite() && si > 0.0 && si <= max + 1e-9) {
                return Err(format!(
                    "`{id}` = {value} is {si} in SI units; it must be above 0 and at most {max} (the envelope's limit)"
                ));
            }
        }
        Ok(())
    }
}

impl Whitelist {
    /// The one sanctioned write of fence parameters: the fence mirror's messages
    /// (`vehicle::fence_sync`). A `PARAM_SET` of a parameter the mirror writes
    /// (`fence_mirror::MIRROR_PARAMS`) passes with a finite value, disarmed on the ground;
    /// every other message is `check`ed as ADMIN's. `check` itself keeps refusing them for
    /// every role (MCP `set_parameter`, ground stations).
    pub fn check_fence_mirror(
        &self,
        msg: &MavMessage,
        state: &VehicleView,
    ) -> Result<(), Violation> {
        if let MavMessage::PARAM_SET(p) = msg {
            let id = p.param_id.to_str().unwrap_or("").trim_end_matches('\0');
            if crate::safety::fence_mirror::MIRROR_PARAMS.contains(&id) {
                let violation = |reason: String| Violation {
                    message: msg.message_name(),
                    command: None,
                    reason,
                };
                if !When::DisarmedOnGround.allows(state) {
                    return Err(violation(format!(
                        "the fence mirror writes `{id}` only disarmed on the ground"
                    )));
                }
                if !p.param_value.is_finite() {
                    return Err(violation(format!(
                        "`{id}` = {} is not a number",
                        p.param_value
                    )));
                }
                return Ok(());
            }
        }
        self.check(msg, state, Role::Admin)
    }
}

/// Who may touch which list: the mission is the OPERATOR's (the rows), the fence and rally
/// lists are ADMIN's and are written only disarmed on the ground (a fence is never weakened in
/// flight), and `MAV_MISSION_TYPE_ALL` is never written (one clear would take the fence too).
/// Messages outside the mission protocol pass.
fn mission_authority(msg: &MavMessage, state: &VehicleView, role: Role) -> Result<(), String> {
    use crate::link::dialect::MavMissionType as T;
    let (mission_type, writes) = match msg {
        MavMessage::MISSION_COUNT(m) => (m.mission_type, true),
        MavMessage::MISSION_CLEAR_ALL(m) => (m.mission_type, true),
        MavMessage::MISSION_ITEM_INT(m) => (m.mission_type, true),
        MavMessage::MISSION_REQUEST_LIST(m) => (m.mission_type, false),
        MavMessage::MISSION_REQUEST_INT(m) => (m.mission_type, false),
        MavMessage::MISSION_ACK(m) => (m.mission_type, false),
        _ => return Ok(()),
    };
    match mission_type {
        T::MAV_MISSION_TYPE_MISSION => Ok(()),
        T::MAV_MISSION_TYPE_ALL if writes => {
            Err("the mission, fence and rally lists are never written at once".into())
        }
        T::MAV_MISSION_TYPE_ALL => Ok(()),
        T::MAV_MISSION_TYPE_FENCE | T::MAV_MISSION_TYPE_RALLY => {
            if writes && role < Role::Admin {
                Err(format!(
                    "the autopilot's {} list is written only by ADMIN (the fence mirror), the \
                     caller is {role}",
                    if mission_type == T::MAV_MISSION_TYPE_FENCE {
                        "fence"
                    } else {
                        "rally"
                    }
                ))
            } else if writes && !When::DisarmedOnGround.allows(state) {
                Err("the fence and rally lists are written only disarmed on the ground".into())
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[path = "whitelist_tests.rs"]
mod tests;
