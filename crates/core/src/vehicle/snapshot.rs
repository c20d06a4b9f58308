//! What the daemon knows about the vehicle at one instant, as plain data.
//!
//! This is the contract between the vehicle-state core (which fills it), `probe --json`,
//! and the MCP `get_status` tool (which serialises it). Units are last in every name.
//! Every group carries `age_ms` and `stale`: a value the vehicle stopped reporting is
//! shown as stale, never as current.

use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;

use crate::link::dialect::{GpsFixType, MavLandedState, MavState};

pub use super::modes::AutopilotKind;
use super::modes::FlightMode;

/// `MAV_LANDED_STATE` as the autopilot reported it; serialised as its MAVLink name in
/// snake case (`on_ground`, `in_air`, `takeoff`, `landing`, `undefined`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LandedState {
    Undefined,
    OnGround,
    InAir,
    Takeoff,
    Landing,
}

impl LandedState {
    pub fn from_mavlink(state: MavLandedState) -> LandedState {
        match state {
            MavLandedState::MAV_LANDED_STATE_UNDEFINED => LandedState::Undefined,
            MavLandedState::MAV_LANDED_STATE_ON_GROUND => LandedState::OnGround,
            MavLandedState::MAV_LANDED_STATE_IN_AIR => LandedState::InAir,
            MavLandedState::MAV_LANDED_STATE_TAKEOFF => LandedState::Takeoff,
            MavLandedState::MAV_LANDED_STATE_LANDING => LandedState::Landing,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LandedState::Undefined => "undefined",
            LandedState::OnGround => "on_ground",
            LandedState::InAir => "in_air",
            LandedState::Takeoff => "takeoff",
            LandedState::Landing => "landing",
        }
    }
}

/// `MAV_STATE` from the heartbeat; serialised as its MAVLink name in snake case
/// (`standby`, `active`, `critical`, `emergency`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemStatus {
    Uninit,
    Boot,
    Calibrating,
    Standby,
    Active,
    Critical,
    Emergency,
    Poweroff,
    FlightTermination,
}

impl SystemStatus {
    pub fn from_mavlink(state: MavState) -> SystemStatus {
        match state {
            MavState::MAV_STATE_UNINIT => SystemStatus::Uninit,
            MavState::MAV_STATE_BOOT => SystemStatus::Boot,
            MavState::MAV_STATE_CALIBRATING => SystemStatus::Calibrating,
            MavState::MAV_STATE_STANDBY => SystemStatus::Standby,
            MavState::MAV_STATE_ACTIVE => SystemStatus::Active,
            MavState::MAV_STATE_CRITICAL => SystemStatus::Critical,
            MavState::MAV_STATE_EMERGENCY => SystemStatus::Emergency,
            MavState::MAV_STATE_POWEROFF => SystemStatus::Poweroff,
            MavState::MAV_STATE_FLIGHT_TERMINATION => SystemStatus::FlightTermination,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SystemStatus::Uninit => "uninit",
            SystemStatus::Boot => "boot",
            SystemStatus::Calibrating => "calibrating",
            SystemStatus::Standby => "standby",
            SystemStatus::Active => "active",
            SystemStatus::Critical => "critical",
            SystemStatus::Emergency => "emergency",
            SystemStatus::Poweroff => "poweroff",
            SystemStatus::FlightTermination => "flight_termination",
        }
    }
}

/// `GPS_FIX_TYPE`; serialised as its MAVLink name in snake case (`no_gps`, `3d_fix`,
/// `rtk_fixed`, ...). Ordered by quality up to `rtk_fixed`; `static` (a base station's
/// survey) and `ppp` rank as no fix in [`FixType::quality`], as the envelope and health
/// have always read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FixType {
    NoGps,
    NoFix,
    #[serde(rename = "2d_fix")]
    Fix2d,
    #[serde(rename = "3d_fix")]
    Fix3d,
    Dgps,
    RtkFloat,
    RtkFixed,
    Static,
    Ppp,
}

impl FixType {
    pub fn from_mavlink(fix: GpsFixType) -> FixType {
        match fix {
            GpsFixType::GPS_FIX_TYPE_NO_GPS => FixType::NoGps,
            GpsFixType::GPS_FIX_TYPE_NO_FIX => FixType::NoFix,
            GpsFixType::GPS_FIX_TYPE_2D_FIX => FixType::Fix2d,
            GpsFixType::GPS_FIX_TYPE_3D_FIX => FixType::Fix3d,
            GpsFixType::GPS_FIX_TYPE_DGPS => FixType::Dgps,
            GpsFixType::GPS_FIX_TYPE_RTK_FLOAT => FixType::RtkFloat,
            GpsFixType::GPS_FIX_TYPE_RTK_FIXED => FixType::RtkFixed,
            GpsFixType::GPS_FIX_TYPE_STATIC => FixType::Static,
            GpsFixType::GPS_FIX_TYPE_PPP => FixType::Ppp,
        }
    }

    /// Parses the names above (the envelope's `gps_fix_type_min`).
    pub fn from_name(name: &str) -> Option<FixType> {
        [
            FixType::NoGps,
            FixType::NoFix,
            FixType::Fix2d,
            FixType::Fix3d,
            FixType::Dgps,
            FixType::RtkFloat,
            FixType::RtkFixed,
            FixType::Static,
            FixType::Ppp,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FixType::NoGps => "no_gps",
            FixType::NoFix => "no_fix",
            FixType::Fix2d => "2d_fix",
            FixType::Fix3d => "3d_fix",
            FixType::Dgps => "dgps",
            FixType::RtkFloat => "rtk_float",
            FixType::RtkFixed => "rtk_fixed",
            FixType::Static => "static",
            FixType::Ppp => "ppp",
        }
    }

    /// Quality for comparisons: no GPS < no fix < 2D < 3D < DGPS < RTK float < RTK fixed;
    /// `static` and `ppp` count as no fix.
    pub fn quality(self) -> u8 {
        match self {
            FixType::NoGps => 0,
            FixType::NoFix | FixType::Static | FixType::Ppp => 1,
            FixType::Fix2d => 2,
            FixType::Fix3d => 3,
            FixType::Dgps => 4,
            FixType::RtkFloat => 5,
            FixType::RtkFixed => 6,
        }
    }

    /// A 3D fix or better (3D, DGPS, RTK float or fixed).
    pub fn is_3d(self) -> bool {
        self.quality() >= FixType::Fix3d.quality()
    }
}

/// The flight mode of the last heartbeat, serialised as its name in the autopilot's own
/// terms (`GUIDED`, `AUTO.LOITER`); `UNKNOWN` before a heartbeat and for a mode missing
/// from that autopilot's table (the raw `custom_mode` is reported beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeName {
    pub mode: Option<FlightMode>,
    pub autopilot: AutopilotKind,
}

impl ModeName {
    /// Before any heartbeat.
    pub const UNKNOWN: ModeName = ModeName {
        mode: None,
        autopilot: AutopilotKind::Other,
    };

    pub fn as_str(self) -> &'static str {
        self.mode.map_or("UNKNOWN", |m| m.name(self.autopilot))
    }
}

impl Serialize for ModeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

macro_rules! fact_as_text {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )*};
}
fact_as_text!(LandedState, SystemStatus, FixType, ModeName);

/// The autopilot the daemon found from its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AutopilotIdentity {
    pub system_id: u8,
    pub component_id: u8,
    pub autopilot: AutopilotKind,
    /// `MAV_TYPE` as a name, e.g. `quadrotor`.
    pub vehicle_type: String,
    /// Firmware version from `AUTOPILOT_VERSION`, e.g. `4.5.7`, when reported.
    pub firmware_version: Option<String>,
    /// True when the vehicle itself says it is simulated (ArduPilot `SIMSTATE`, `SIM_STATE`).
    pub simulated: bool,
}

/// A timestamped group of values: how old it is and whether it counts as stale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct Freshness {
    /// Milliseconds since the vehicle last reported this group; null if never.
    pub age_ms: Option<u64>,
    /// True when never reported or older than `vehicle.stale_after_ms`.
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ModeStatus {
    pub freshness: Freshness,
    pub armed: bool,
    /// Decoded flight mode name in the autopilot's own terms (`GUIDED`, `LOITER`, `POSCTL`, ...).
    #[schemars(with = "String")]
    pub flight_mode: ModeName,
    /// `custom_mode` from the heartbeat, raw.
    pub custom_mode: u32,
    /// `MAV_LANDED_STATE` as a name: `on_ground`, `in_air`, `takeoff`, `landing`, `undefined`.
    #[schemars(with = "String")]
    pub landed_state: LandedState,
    /// `MAV_STATE` as a name: `standby`, `active`, `critical`, `emergency`, ...
    #[schemars(with = "String")]
    pub system_status: SystemStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PositionStatus {
    pub freshness: Freshness,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub altitude_msl_m: f64,
    /// Altitude above home.
    pub altitude_relative_m: f64,
    pub velocity_north_m_s: f64,
    pub velocity_east_m_s: f64,
    /// Positive down, as MAVLink reports it.
    pub velocity_down_m_s: f64,
    pub ground_speed_m_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AttitudeStatus {
    pub freshness: Freshness,
    pub roll_deg: f64,
    pub pitch_deg: f64,
    pub yaw_deg: f64,
    /// 0..360, clockwise from north.
    pub heading_deg: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BatteryStatus {
    pub freshness: Freshness,
    pub voltage_v: f64,
    /// Null when the autopilot does not measure current.
    pub current_a: Option<f64>,
    /// Null when the autopilot does not estimate it.
    pub remaining_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct GpsStatus {
    pub freshness: Freshness,
    /// `GPS_FIX_TYPE` as a name: `no_gps`, `no_fix`, `2d_fix`, `3d_fix`, `dgps`, `rtk_float`, `rtk_fixed`.
    #[schemars(with = "String")]
    pub fix_type: FixType,
    pub satellites_visible: u8,
    /// Null when unknown (MAVLink's UINT16_MAX).
    pub hdop: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EstimatorStatus {
    pub freshness: Freshness,
    /// The autopilot trusts its horizontal position (EKF / `ESTIMATOR_STATUS` flags).
    pub position_valid: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct HomeStatus {
    pub freshness: Freshness,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub altitude_msl_m: f64,
}

/// A STATUSTEXT the vehicle sent.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StatusText {
    pub age_ms: u64,
    /// `MAV_SEVERITY` as a name: `emergency` ... `debug`.
    pub severity: String,
    pub text: String,
}

/// Health of the MAVLink link, as counted by the daemon (not by the autopilot).
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
pub struct LinkHealthStatus {
    /// The link is open (serial port open, TCP connected, UDP bound).
    pub connected: bool,
    /// Milliseconds since the autopilot's last heartbeat; null if never.
    pub heartbeat_age_ms: Option<u64>,
    /// Frames received and decoded.
    pub frames_received: u64,
    /// Frames lost, estimated from sequence-number gaps.
    pub frames_lost: u64,
    /// Percentage lost over all frames from the autopilot: lost / (received + lost) * 100.
    pub loss_percent: f64,
    /// Frames whose checksum was wrong.
    pub crc_errors: u64,
    /// Frames that could not be parsed (bad length, bad field values, unknown incompat flags).
    pub parse_errors: u64,
    /// Frames of message ids the dialect does not know.
    pub unknown_messages: u64,
    /// Bytes skipped while looking for the start of a frame.
    pub garbage_bytes: u64,
    /// Times the link was reopened after it was lost.
    pub reconnects: u64,
    /// MAVLink 2 signing and peer pinning: what the link refused.
    pub trust: LinkTrustStatus,
}

/// What the link's signing and pinning accepted and refused since the daemon started.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
pub struct LinkTrustStatus {
    /// `off`, `sign` (signs, still accepts unsigned) or `required` (only verified frames).
    pub signing: crate::link::signing::SigningMode,
    /// Frames whose signature verified.
    pub signed_frames: u64,
    /// Frames accepted without a valid signature (mode `sign`; the radio's `RADIO_STATUS`).
    pub unsigned_accepted: u64,
    /// Frames and connections refused, by reason; none of them reached the daemon.
    pub refused: RefusedCounts,
    /// Milliseconds since the last refusal that says someone else is on the link or holds
    /// another key (or old timestamps refused for 10 s on end); null if none.
    pub last_intrusion_age_ms: Option<u64>,
    /// The last refusal reported, in words (reason: what).
    pub last_refusal: Option<String>,
}

/// Refusals by reason.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
pub struct RefusedCounts {
    /// Unsigned frames (or MAVLink 1) where signatures are required.
    pub unsigned: u64,
    /// Frames whose signature does not verify with the link's key.
    pub bad_signature: u64,
    /// Frames not newer than the last of their stream: replays.
    pub replayed: u64,
    /// New streams more than a minute behind the link's timestamp.
    pub old_timestamp: u64,
    /// New streams beyond the link's limit.
    pub streams_full: u64,
    /// Datagrams from an address other than the pinned peer (`udpin`).
    pub foreign_peer: u64,
    /// Connections closed at once because the pinned peer holds the link (`tcpin`).
    pub connection_refused: u64,
}

impl RefusedCounts {
    pub fn total(&self) -> u64 {
        self.unsigned
            + self.bad_signature
            + self.replayed
            + self.old_timestamp
            + self.streams_full
            + self.foreign_peer
            + self.connection_refused
    }
}

/// Everything known about the vehicle at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct VehicleSnapshot {
    /// Null until the autopilot's first heartbeat.
    pub autopilot: Option<AutopilotIdentity>,
    pub mode: ModeStatus,
    pub position: PositionStatus,
    pub attitude: AttitudeStatus,
    pub battery: BatteryStatus,
    pub gps: GpsStatus,
    pub estimator: EstimatorStatus,
    pub home: Option<HomeStatus>,
    /// Newest last, at most 16.
    pub status_texts: Vec<StatusText>,
    pub link: LinkHealthStatus,
}
