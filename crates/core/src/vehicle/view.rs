//! The vehicle as every safety check sees it: typed facts at one instant (pure data).
//!
//! The whitelist, the envelope, the emergency stop and the pre-flight gate all decide on a
//! [`VehicleView`], built by [`crate::vehicle::state::VehicleState::view`] from the vehicle
//! state at the turn's `now`: no check reads strings out of the JSON snapshot, and no check
//! has a rule of its own for what "on the ground" means.
//!
//! # Staleness
//! A group the autopilot stopped reporting for `vehicle.stale_after_ms` arrives as unknown:
//! no position, zero velocity, no battery figure, no fix, no satellites, no HDOP, an
//! untrusted estimator. The heartbeat's age is `heartbeat_fresh`. The landed state is the
//! autopilot's latest `EXTENDED_SYS_STATE`, whatever its age: it changes only on takeoff and
//! landing, and a silent autopilot is already covered by the heartbeat (every job ends and
//! every request is refused while it is lost).

use std::time::Instant;

use crate::geodesy::GeoPosition;

use super::modes::{AutopilotKind, FlightMode};
use super::snapshot::{FixType, LandedState};

/// Where the vehicle is, as every safety check reads it.
///
/// **The one rule for `Unknown`:** the vehicle may be in the air *and* may be on the ground,
/// and every check assumes whichever is worse for it: a command allowed only on the ground
/// is refused, a command allowed only in the air is refused, and a protection that acts
/// while the vehicle might fly (the stop's ladder, the ground-link failsafes) acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    OnGround,
    InAir,
    /// Never reported, or reported as `undefined`.
    Unknown,
}

impl Landed {
    /// From the latest `EXTENDED_SYS_STATE`: taking off and landing count as in the air.
    pub fn from_reported(state: Option<LandedState>) -> Landed {
        match state {
            Some(LandedState::OnGround) => Landed::OnGround,
            Some(LandedState::InAir | LandedState::Takeoff | LandedState::Landing) => Landed::InAir,
            Some(LandedState::Undefined) | None => Landed::Unknown,
        }
    }

    /// Known to be on the ground.
    pub fn on_ground(self) -> bool {
        self == Landed::OnGround
    }

    /// Known to be in the air.
    pub fn in_air(self) -> bool {
        self == Landed::InAir
    }

    /// In the air, or not known to be on the ground.
    pub fn may_be_flying(self) -> bool {
        self != Landed::OnGround
    }
}

/// What the safety checks know about the vehicle at one instant. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VehicleView {
    /// The autopilot's firmware family; `None` until its first heartbeat.
    pub autopilot: Option<AutopilotKind>,
    /// Its heartbeat arrived within `vehicle.heartbeat_timeout_ms`.
    pub heartbeat_fresh: bool,
    /// When its newest heartbeat arrived (`None` before the first). A heartbeat older than
    /// a stop's rung says what the vehicle flew before the stop, not whether it obeyed.
    pub heartbeat_at: Option<Instant>,
    /// Armed according to the last heartbeat.
    pub armed: bool,
    pub landed: Landed,
    /// The mode of the last heartbeat.
    pub mode: Option<FlightMode>,
    /// Fresh position, altitude relative to home; `None` when stale or never reported.
    pub position: Option<GeoPosition>,
    /// North, east, down; zero when the position is stale.
    pub velocity_ned_m_s: [f64; 3],
    /// The autopilot's estimator trusts its horizontal position now.
    pub position_valid: bool,
    /// `None` when not reported or stale.
    pub battery_remaining_percent: Option<f64>,
    /// `no_fix` when stale.
    pub gps_fix_type: FixType,
    /// 0 when stale.
    pub satellites_visible: u8,
    /// `None` when unknown or stale.
    pub hdop: Option<f64>,
    /// Home's altitude above mean sea level, once reported: PX4 names `NAV_TAKEOFF`'s and
    /// `DO_REPOSITION`'s altitude above sea level, so the ceiling is checked against it.
    pub home_altitude_msl_m: Option<f64>,
}

impl VehicleView {
    /// Nothing heard.
    pub const UNKNOWN: VehicleView = VehicleView {
        autopilot: None,
        heartbeat_fresh: false,
        heartbeat_at: None,
        armed: false,
        landed: Landed::Unknown,
        mode: None,
        position: None,
        velocity_ned_m_s: [0.0; 3],
        position_valid: false,
        battery_remaining_percent: None,
        gps_fix_type: FixType::NoFix,
        satellites_visible: 0,
        hdop: None,
        home_altitude_msl_m: None,
    };

    /// Armed and not known to be on the ground: what a stop or a failsafe must treat as
    /// flying.
    pub fn may_be_flying(&self) -> bool {
        self.armed && self.landed.may_be_flying()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_each_reported_landed_state() {
        use LandedState as L;
        let cases = [
            (None, Landed::Unknown),
            (Some(L::Undefined), Landed::Unknown),
            (Some(L::OnGround), Landed::OnGround),
            (Some(L::InAir), Landed::InAir),
            (Some(L::Takeoff), Landed::InAir),
            (Some(L::Landing), Landed::InAir),
        ];
        for (reported, landed) in cases {
            assert_eq!(Landed::from_reported(reported), landed, "{reported:?}");
        }
        // Unknown: neither known on the ground nor known in the air; may be flying.
        assert!(!Landed::Unknown.on_ground() && !Landed::Unknown.in_air());
        assert!(Landed::Unknown.may_be_flying() && Landed::InAir.may_be_flying());
        assert!(!Landed::OnGround.may_be_flying());
    }
}
