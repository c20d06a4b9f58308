//! The vehicle as the wire shows it (sans-IO): mode, armed, position, landed state, rebuilt
//! from the autopilot's own frames that crossed the serial relay.
//!
//! The rig judges the daemon by this, never by the daemon's own status: a daemon that
//! believes it braked while the autopilot kept flying must fail the scenario.

use crate::hil::scenario::WaitFor;
use crate::hil::wire::{Direction, Fate, WireFrame};
use crate::link::dialect::{
    MavAutopilot, MavLandedState, MavMessage, MavModeFlag, MavSysStatusSensor,
};
use crate::safety::whitelist::{Landed, VehicleView};
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;

/// `MAV_COMP_ID_AUTOPILOT1`: frames from any other component (a camera, a gimbal, the
/// companion itself) say nothing about the flight.
const AUTOPILOT_COMPONENT_ID: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Truth {
    pub autopilot: Option<AutopilotKind>,
    pub mode: Option<FlightMode>,
    pub armed: Option<bool>,
    /// Above home, from `GLOBAL_POSITION_INT.relative_alt`.
    pub altitude_m: Option<f64>,
    pub latitude_deg: Option<f64>,
    pub longitude_deg: Option<f64>,
    /// The first position seen, or `HOME_POSITION` once reported.
    pub home_deg: Option<(f64, f64)>,
    home_reported: bool,
    /// Home's altitude above mean sea level, from `HOME_POSITION`.
    pub home_altitude_msl_m: Option<f64>,
    /// From `EXTENDED_SYS_STATE`.
    pub landed: Option<bool>,
    /// The autopilot's own pre-arm checks pass, from `SYS_STATUS`: ArduPilot sets
    /// `MAV_SYS_STATUS_PREARM_CHECK` present and enabled, healthy when they pass (`GCS.cpp`);
    /// PX4 sets only the health bit, when it can arm in its current navigation state
    /// (`SYS_STATUS.hpp`: `can_arm_mode_flags`). `None` when the autopilot does not say.
    pub prearm_ok: Option<bool>,
}

impl Truth {
    /// Takes in one frame; anything but the autopilot's telemetry is ignored.
    pub fn observe(&mut self, frame: &WireFrame) {
        // Only what reached the companion intact: a dropped or corrupted frame told it nothing.
        if frame.direction != Direction::ToCompanion
            || frame.component_id != AUTOPILOT_COMPONENT_ID
            || !matches!(frame.fate, Fate::Forwarded | Fate::Delayed { .. })
        {
            return;
        }
        let Some(message) = &frame.message else {
            return;
        };
        match message {
            MavMessage::HEARTBEAT(hb) => {
                let kind = match hb.autopilot {
                    MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA => AutopilotKind::Ardupilot,
                    MavAutopilot::MAV_AUTOPILOT_PX4 => AutopilotKind::Px4,
                    // A ground station or peripheral relayed through the autopilot.
                    MavAutopilot::MAV_AUTOPILOT_INVALID => return,
                    _ => AutopilotKind::Other,
                };
                self.autopilot = Some(kind);
                self.armed = Some(
                    hb.base_mode
                        .contains(MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED),
                );
                self.mode = Some(FlightMode::decode(
                    kind,
                    hb.base_mode.bits(),
                    hb.custom_mode,
                ));
            }
            MavMessage::GLOBAL_POSITION_INT(p) => {
                let lat = f64::from(p.lat) / 1e7;
                let lon = f64::from(p.lon) / 1e7;
                if p.lat == 0 && p.lon == 0 {
                    return;
                }
                self.latitude_deg = Some(lat);
                self.longitude_deg = Some(lon);
                self.altitude_m = Some(f64::from(p.relative_alt) / 1000.0);
                if self.home_deg.is_none() {
                    self.home_deg = Some((lat, lon));
                }
            }
            MavMessage::HOME_POSITION(h) => {
                if !self.home_reported {
                    self.home_reported = true;
                    self.home_deg =
                        Some((f64::from(h.latitude) / 1e7, f64::from(h.longitude) / 1e7));
                }
                self.home_altitude_msl_m = Some(f64::from(h.altitude) / 1000.0);
            }
            MavMessage::SYS_STATUS(s) => {
                let prearm = MavSysStatusSensor::MAV_SYS_STATUS_PREARM_CHECK;
                let reported = (s.onboard_control_sensors_present.contains(prearm)
                    && s.onboard_control_sensors_enabled.contains(prearm))
                    || self.autopilot == Some(AutopilotKind::Px4);
                self.prearm_ok =
                    reported.then(|| s.onboard_control_sensors_health.contains(prearm));
            }
            MavMessage::EXTENDED_SYS_STATE(s) => {
                self.landed = match s.landed_state {
                    MavLandedState::MAV_LANDED_STATE_ON_GROUND => Some(true),
                    MavLandedState::MAV_LANDED_STATE_UNDEFINED => None,
                    _ => Some(false),
                };
            }
            _ => {}
        }
    }

    /// The mode as the autopilot names it, or `?` before the first heartbeat.
    pub fn mode_name(&self) -> String {
        match (self.autopilot, self.mode) {
            (Some(kind), Some(FlightMode::Other(n))) => {
                format!("{}({n})", FlightMode::Other(n).name(kind))
            }
            (Some(kind), Some(mode)) => mode.name(kind).to_owned(),
            _ => "?".into(),
        }
    }

    /// True when the current mode is any of `names` (the autopilot's spellings, any case;
    /// PX4 also takes QGroundControl's labels such as `HOLD`).
    pub fn mode_is(&self, names: &[&str]) -> bool {
        let (Some(kind), Some(mode)) = (self.autopilot, self.mode) else {
            return false;
        };
        names
            .iter()
            .any(|n| FlightMode::from_name(kind, n) == Some(mode))
    }

    /// Horizontal distance from home in metres, once both are known.
    pub fn distance_from_home_m(&self) -> Option<f64> {
        let (home_lat, home_lon) = self.home_deg?;
        Some(crate::geodesy::distance_m(
            home_lat,
            home_lon,
            self.latitude_deg?,
            self.longitude_deg?,
        ))
    }

    /// Whether the vehicle part of `wait` holds (the daemon-log part is the runner's).
    pub fn satisfies(&self, wait: &WaitFor) -> bool {
        wait.mode.as_ref().is_none_or(|m| self.mode_is(&m.items()))
            && wait.armed.is_none_or(|a| self.armed == Some(a))
            && wait
                .altitude_m_min
                .is_none_or(|min| self.altitude_m.is_some_and(|a| a >= min))
            && wait
                .altitude_m_max
                .is_none_or(|max| self.altitude_m.is_some_and(|a| a <= max))
            && wait.landed.is_none_or(|l| self.landed == Some(l))
    }

    /// The whitelist's view of this state.
    pub fn flight_state(&self) -> VehicleView {
        VehicleView {
            armed: self.armed.unwrap_or(false),
            landed: match self.landed {
                Some(true) => Landed::OnGround,
                Some(false) => Landed::InAir,
                None => Landed::Unknown,
            },
            autopilot: self.autopilot,
            home_altitude_msl_m: self.home_altitude_msl_m,
            ..VehicleView::UNKNOWN
        }
    }

    /// One line for reports: `GUIDED armed alt 10.1 m 3.2 m from home`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} alt {} {}",
            self.mode_name(),
            match self.armed {
                Some(true) => "armed",
                Some(false) => "disarmed",
                None => "?",
            },
            self.altitude_m.map_or("?".into(), |a| format!("{a:.1} m")),
            self.distance_from_home_m()
                .map_or(String::new(), |d| format!("{d:.1} m from home")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hil::scenario::OneOrMany;
    use crate::link::dialect::{
        EXTENDED_SYS_STATE_DATA, GLOBAL_POSITION_INT_DATA, HEARTBEAT_DATA, MavType,
    };
    use std::time::Duration;

    fn frame(direction: Direction, component_id: u8, message: MavMessage) -> WireFrame {
        WireFrame {
            at: Duration::ZERO,
            direction,
            system_id: 1,
            component_id,
            sequence: 0,
            message_id: mavlink::Message::message_id(&message),
            message: Some(message),
            len: 0,
            injected: false,
            fate: Fate::Forwarded,
        }
    }

    fn heartbeat(autopilot: MavAutopilot, armed: bool, custom_mode: u32) -> MavMessage {
        let mut base_mode = MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED;
        if armed {
            base_mode |= MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED;
        }
        MavMessage::HEARTBEAT(HEARTBEAT_DATA {
            custom_mode,
            mavtype: MavType::MAV_TYPE_QUADROTOR,
            autopilot,
            base_mode,
            ..HEARTBEAT_DATA::DEFAULT
        })
    }

    #[test]
    fn prearm_is_read_from_sys_status_only_when_the_autopilot_reports_it() {
        use crate::link::dialect::SYS_STATUS_DATA;
        let prearm = MavSysStatusSensor::MAV_SYS_STATUS_PREARM_CHECK;
        let gyro = MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_GYRO;
        let status = |present, enabled, health| {
            frame(
                Direction::ToCompanion,
                1,
                MavMessage::SYS_STATUS(SYS_STATUS_DATA {
                    onboard_control_sensors_present: present,
                    onboard_control_sensors_enabled: enabled,
                    onboard_control_sensors_health: health,
                    ..SYS_STATUS_DATA::DEFAULT
                }),
            )
        };
        let mut t = Truth::default();
        // ArduPilot (GCS.cpp): present and enabled, healthy once the checks pass.
        t.observe(&status(prearm | gyro, prearm | gyro, gyro));
        assert_eq!(t.prearm_ok, Some(false));
        t.observe(&status(prearm | gyro, prearm | gyro, prearm | gyro));
        assert_eq!(t.prearm_ok, Some(true));
        // Another autopilot that does not report the checks: unknown.
        t.observe(&status(gyro, gyro, gyro));
        assert_eq!(t.prearm_ok, None);
        // PX4 (SYS_STATUS.hpp) sets only the health bit: "Arming denied: Resolve system
        // health failures first" until it does, about 2 s after its home on SIH.
        t.observe(&frame(
            Direction::ToCompanion,
            1,
            heartbeat(MavAutopilot::MAV_AUTOPILOT_PX4, false, 0),
        ));
        t.observe(&status(gyro, gyro, gyro));
        assert_eq!(t.prearm_ok, Some(false));
        t.observe(&status(gyro, gyro, gyro | prearm));
        assert_eq!(t.prearm_ok, Some(true));
    }

    #[test]
    fn the_autopilot_frames_build_the_truth_and_nothing_else_does() {
        let mut t = Truth::default();
        // The companion's own heartbeat (to the autopilot) and a GCS heartbeat are not truth.
        t.observe(&frame(
            Direction::ToAutopilot,
            1,
            heartbeat(MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA, true, 4),
        ));
        t.observe(&frame(
            Direction::ToCompanion,
            1,
            heartbeat(MavAutopilot::MAV_AUTOPILOT_INVALID, true, 4),
        ));
        t.observe(&frame(
            Direction::ToCompanion,
            100,
            heartbeat(MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA, true, 4),
        ));
        assert_eq!(t, Truth::default());

        t.observe(&frame(
            Direction::ToCompanion,
            1,
            heartbeat(MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA, true, 17),
        ));
        assert_eq!(t.mode_name(), "BRAKE");
        assert!(t.mode_is(&["brake"]));
        assert!(!t.mode_is(&["GUIDED"]));
        t.observe(&frame(
            Direction::ToCompanion,
            1,
            MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
                lat: 473_977_420,
                lon: 85_455_940,
                relative_alt: 10_000,
                ..GLOBAL_POSITION_INT_DATA::DEFAULT
            }),
        ));
        t.observe(&frame(
            Direction::ToCompanion,
            1,
            MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
                lat: 473_978_420,
                lon: 85_455_940,
                relative_alt: 12_500,
                ..GLOBAL_POSITION_INT_DATA::DEFAULT
            }),
        ));
        t.observe(&frame(
            Direction::ToCompanion,
            1,
            MavMessage::EXTENDED_SYS_STATE(EXTENDED_SYS_STATE_DATA {
                landed_state: MavLandedState::MAV_LANDED_STATE_IN_AIR,
                ..EXTENDED_SYS_STATE_DATA::DEFAULT
            }),
        ));
        let d = t.distance_from_home_m().unwrap();
        assert!((d - 11.1).abs() < 0.2, "{d}");
        let wait = WaitFor {
            mode: Some(OneOrMany::Many(vec!["LOITER".into(), "BRAKE".into()])),
            armed: Some(true),
            altitude_m_min: Some(12.0),
            landed: Some(false),
            ..WaitFor::default()
        };
        assert!(t.satisfies(&wait));
        assert!(!t.satisfies(&WaitFor {
            altitude_m_max: Some(12.0),
            ..WaitFor::default()
        }));
        assert_eq!(t.flight_state().landed, Landed::InAir);
    }

    #[test]
    fn px4_modes_match_their_ground_station_labels() {
        let mut t = Truth::default();
        // AUTO (4) / LOITER (3): main mode in bits 16..24, sub mode in bits 24..32.
        t.observe(&frame(
            Direction::ToCompanion,
            1,
            heartbeat(MavAutopilot::MAV_AUTOPILOT_PX4, true, (4 << 16) | (3 << 24)),
        ));
        assert_eq!(t.mode_name(), "AUTO.LOITER");
        assert!(t.mode_is(&["BRAKE", "HOLD"]));
    }
}
