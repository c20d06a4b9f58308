//! What the vehicle is doing, tracked from the messages its autopilot sends (sans-IO).
//!
//! `VehicleState` finds the autopilot from its first qualifying HEARTBEAT, then trusts only
//! that sender. Every group of values (mode, position, attitude, battery, GPS, estimator,
//! home) keeps its own receive time so a snapshot can say how old each one is; a value
//! the vehicle stopped reporting is shown as stale, never as current.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::link::MavHeader;
use crate::link::MavMessage;
use crate::link::dialect::{
    EkfStatusFlags, EstimatorStatusFlags, MavAutopilot, MavLandedState, MavModeFlag, MavState,
};

use super::modes::FlightMode;
use super::snapshot::{
    AttitudeStatus, AutopilotIdentity, AutopilotKind, BatteryStatus, EstimatorStatus, FixType,
    Freshness, GpsStatus, HomeStatus, LandedState, LinkHealthStatus, ModeName, ModeStatus,
    PositionStatus, StatusText, SystemStatus, VehicleSnapshot,
};
use super::view::{Landed, VehicleView};
use crate::geodesy::GeoPosition;

/// How many STATUSTEXTs are kept (newest last); older ones are dropped.
pub const STATUS_TEXTS_MAX: usize = 16;

/// PX4's commander distrusts a global position less accurate than this (`COM_POS_FS_EPH`
/// default, metres), read from `ESTIMATOR_STATUS.pos_horiz_accuracy`.
const PX4_POSITION_ACCURACY_M_MAX: f32 = 5.0;

/// Attitude angles beyond this (a little over 2π, for rounding) are not angles in radians.
const ANGLE_RAD_MAX: f32 = 7.0;

/// Knobs of `VehicleState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VehicleStateOptions {
    /// A group older than this is reported as stale (`vehicle.stale_after_ms`).
    pub stale_after: Duration,
    /// No autopilot heartbeat for this long means the link counts as lost
    /// (`vehicle.heartbeat_timeout_ms`).
    pub heartbeat_timeout: Duration,
}

impl VehicleStateOptions {
    pub fn from_config(config: &crate::config::VehicleConfig) -> Self {
        Self {
            stale_after: Duration::from_millis(config.stale_after_ms),
            heartbeat_timeout: Duration::from_millis(config.heartbeat_timeout_ms),
        }
    }
}

/// The autopilot's position from `GLOBAL_POSITION_INT`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub altitude_msl_m: f64,
    /// Above home.
    pub altitude_relative_m: f64,
    pub velocity_north_m_s: f64,
    pub velocity_east_m_s: f64,
    /// Positive down.
    pub velocity_down_m_s: f64,
    pub received_at: Instant,
}

/// The home position from `HOME_POSITION`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Home {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub altitude_msl_m: f64,
    pub received_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    armed: bool,
    mode: FlightMode,
    custom_mode: u32,
    system_status: MavState,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Stamped<T> {
    value: T,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Attitude {
    roll_deg: f64,
    pitch_deg: f64,
    yaw_deg: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Battery {
    voltage_v: Option<f64>,
    current_a: Option<f64>,
    remaining_percent: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Gps {
    fix_type: crate::link::dialect::GpsFixType,
    satellites_visible: u8,
    hdop: Option<f64>,
}

#[derive(Debug, Clone)]
struct Text {
    severity: String,
    text: String,
    at: Instant,
}

/// The vehicle as its autopilot reports it.
///
/// Call order: `handle_message(now, header, msg)` for every decoded frame from the link, in
/// arrival order; `snapshot(now)` and the accessors whenever the daemon needs them. Nothing
/// here reads the clock or expires on its own: staleness is computed against the `now` of
/// the query.
#[derive(Debug)]
pub struct VehicleState {
    options: VehicleStateOptions,
    identity: Option<AutopilotIdentity>,
    heartbeat: Option<Heartbeat>,
    landed: Option<Stamped<MavLandedState>>,
    position: Option<Position>,
    /// From `GLOBAL_POSITION_INT.hdg` or `VFR_HUD.heading`; the yaw is used when neither came.
    heading_deg: Option<f64>,
    ground_speed_m_s: f64,
    attitude: Option<Stamped<Attitude>>,
    battery: Option<Stamped<Battery>>,
    gps: Option<Stamped<Gps>>,
    /// From `EKF_STATUS_REPORT` or `ESTIMATOR_STATUS`: position trusted.
    estimator: Option<Stamped<bool>>,
    home: Option<Home>,
    status_texts: VecDeque<Text>,
    rejected_values: u64,
    last_rejection: Option<String>,
    ignored_messages: u64,
}

impl VehicleState {
    pub fn new(options: VehicleStateOptions) -> Self {
        Self {
            options,
            identity: None,
            heartbeat: None,
            landed: None,
            position: None,
            heading_deg: None,
            ground_speed_m_s: 0.0,
            attitude: None,
            battery: None,
            gps: None,
            estimator: None,
            home: None,
            status_texts: VecDeque::with_capacity(STATUS_TEXTS_MAX),
            rejected_values: 0,
            last_rejection: None,
            ignored_messages: 0,
        }
    }

    /// Takes one decoded message from the link.
    ///
    /// Messages from anything other than the autopilot (ground stations, cameras, other
    /// vehicles, this daemon's own heartbeat echoed back) are counted in
    /// `ignored_messages()` and change nothing.
    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, msg: &MavMessage) {
        if let MavMessage::HEARTBEAT(hb) = msg
            && self.identity.is_none()
            && let Some(identity) = identify(header, hb)
        {
            self.identity = Some(identity);
        }
        let from_autopilot = match &self.identity {
            Some(id) => {
                u8::try_from(header.system_id) == Ok(id.system_id)
                    && header.component_id == id.component_id
            }
            None => false,
        };
        if !from_autopilot {
            self.ignored_messages += 1;
            return;
        }
        let kind = self
            .identity
            .as_ref()
            .map_or(AutopilotKind::Other, |id| id.autopilot);
        match msg {
            MavMessage::HEARTBEAT(hb) => {
                let base_mode = hb.base_mode.bits();
                self.heartbeat = Some(Heartbeat {
                    armed: hb
                        .base_mode
                        .contains(MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED),
                    mode: FlightMode::decode(kind, base_mode, hb.custom_mode),
                    custom_mode: hb.custom_mode,
                    system_status: hb.system_status,
                    at: now,
                });
            }
            MavMessage::EXTENDED_SYS_STATE(ext) => {
                self.landed = Some(Stamped {
                    value: ext.landed_state,
                    at: now,
                });
            }
            MavMessage::GLOBAL_POSITION_INT(p) => self.handle_global_position(now, p),
            MavMessage::ATTITUDE(a) => self.handle_attitude(now, a),
            MavMessage::VFR_HUD(v) => {
                if (0..=360).contains(&v.heading) {
                    self.heading_deg = Some(f64::from(v.heading) % 360.0);
                } else {
                    self.reject(format!("VFR_HUD heading {} is not in 0..360", v.heading));
                }
            }
            MavMessage::SYS_STATUS(s) => {
                let battery = Battery {
                    voltage_v: (s.voltage_battery != u16::MAX)
                        .then(|| f64::from(s.voltage_battery) / 1000.0),
                    current_a: (s.current_battery != -1)
                        .then(|| f64::from(s.current_battery) / 100.0),
                    remaining_percent: percent(s.battery_remaining),
                };
                self.update_battery(now, battery, "SYS_STATUS");
            }
            MavMessage::BATTERY_STATUS(b) => self.handle_battery_status(now, b),
            MavMessage::GPS_RAW_INT(g) => {
                self.gps = Some(Stamped {
                    value: Gps {
                        fix_type: g.fix_type,
                        // 255 is "unknown"; shown as 0 (none we can count on).
                        satellites_visible: if g.satellites_visible == u8::MAX {
                            0
                        } else {
                            g.satellites_visible
                        },
                        hdop: (g.eph != u16::MAX).then(|| f64::from(g.eph) / 100.0),
                    },
                    at: now,
                });
            }
            MavMessage::EKF_STATUS_REPORT(e) => {
                self.estimator = Some(Stamped {
                    value: ardupilot_position_trusted(e),
                    at: now,
                });
            }
            MavMessage::ESTIMATOR_STATUS(e) => {
                self.estimator = Some(Stamped {
                    value: px4_position_trusted(e),
                    at: now,
                });
            }
            MavMessage::HOME_POSITION(h) => match lat_lon(h.latitude, h.longitude) {
                Some((latitude_deg, longitude_deg)) => {
                    self.home = Some(Home {
                        latitude_deg,
                        longitude_deg,
                        altitude_msl_m: f64::from(h.altitude) / 1000.0,
                        received_at: now,
                    });
                }
                None => self.reject(format!(
                    "HOME_POSITION lat/lon {}/{} (1e-7 deg) is not on Earth",
                    h.latitude, h.longitude
                )),
            },
            MavMessage::AUTOPILOT_VERSION(v) => {
                if let Some(id) = &mut self.identity {
                    id.firmware_version = Some(firmware_version(v.flight_sw_version));
                }
            }
            MavMessage::SIMSTATE(_) | MavMessage::SIM_STATE(_) => {
                if let Some(id) = &mut self.identity {
                    id.simulated = true;
                }
            }
            MavMessage::STATUSTEXT(s) => self.handle_status_text(now, s),
            _ => {}
        }
    }

    fn handle_attitude(&mut self, now: Instant, a: &crate::link::dialect::ATTITUDE_DATA) {
        let angles = [a.roll, a.pitch, a.yaw];
        if angles
            .iter()
            .any(|v| !v.is_finite() || v.abs() > ANGLE_RAD_MAX)
        {
            self.reject(format!(
                "ATTITUDE roll/pitch/yaw {}/{}/{} rad are not finite angles",
                a.roll, a.pitch, a.yaw
            ));
            return;
        }
        self.attitude = Some(Stamped {
            value: Attitude {
                roll_deg: f64::from(a.roll).to_degrees(),
                pitch_deg: f64::from(a.pitch).to_degrees(),
                yaw_deg: f64::from(a.yaw).to_degrees(),
            },
            at: now,
        });
    }

    fn handle_battery_status(
        &mut self,
        now: Instant,
        b: &crate::link::dialect::BATTERY_STATUS_DATA,
    ) {
        // Only the primary battery feeds the snapshot; the others are for later.
        if b.id != 0 {
            return;
        }
        let cells = b.voltages.iter().chain(b.voltages_ext.iter());
        let known: Vec<u16> = cells
            .copied()
            // voltages_ext uses 0 for "not present", voltages UINT16_MAX.
            .filter(|mv| *mv != u16::MAX && *mv != 0)
            .collect();
        let voltage_v = (!known.is_empty())
            .then(|| known.iter().map(|mv| f64::from(*mv)).sum::<f64>() / 1000.0);
        let battery = Battery {
            voltage_v,
            current_a: (b.current_battery != -1).then(|| f64::from(b.current_battery) / 100.0),
            remaining_percent: percent(b.battery_remaining),
        };
        self.update_battery(now, battery, "BATTERY_STATUS");
    }

    fn handle_status_text(&mut self, now: Instant, s: &crate::link::dialect::STATUSTEXT_DATA) {
        let bytes: &[u8] = &s.text[..];
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(bytes.get(..end).unwrap_or(bytes));
        if self.status_texts.len() == STATUS_TEXTS_MAX {
            self.status_texts.pop_front();
        }
        self.status_texts.push_back(Text {
            severity: enum_name(&s.severity, "MAV_SEVERITY_"),
            text: text.trim_end().to_owned(),
            at: now,
        });
    }

    fn handle_global_position(
        &mut self,
        now: Instant,
        p: &crate::link::dialect::GLOBAL_POSITION_INT_DATA,
    ) {
        // ArduPilot sends 0/0 before its first fix: that is "no position", not a place.
        if p.lat == 0 && p.lon == 0 {
            return;
        }
        let Some((latitude_deg, longitude_deg)) = lat_lon(p.lat, p.lon) else {
            self.reject(format!(
                "GLOBAL_POSITION_INT lat/lon {}/{} (1e-7 deg) is not on Earth",
                p.lat, p.lon
            ));
            return;
        };
        let north = f64::from(p.vx) / 100.0;
        let east = f64::from(p.vy) / 100.0;
        self.position = Some(Position {
            latitude_deg,
            longitude_deg,
            altitude_msl_m: f64::from(p.alt) / 1000.0,
            altitude_relative_m: f64::from(p.relative_alt) / 1000.0,
            velocity_north_m_s: north,
            velocity_east_m_s: east,
            velocity_down_m_s: f64::from(p.vz) / 100.0,
            received_at: now,
        });
        self.ground_speed_m_s = north.hypot(east);
        match p.hdg {
            u16::MAX => {}
            0..=35999 => self.heading_deg = Some(f64::from(p.hdg) / 100.0),
            _ => self.reject(format!(
                "GLOBAL_POSITION_INT heading {} cdeg is not in 0..36000",
                p.hdg
            )),
        }
    }

    fn update_battery(&mut self, now: Instant, new: Battery, source: &str) {
        if let Some(v) = new.voltage_v
            && !(0.0..=1000.0).contains(&v)
        {
            self.reject(format!("{source} battery voltage {v} V is implausible"));
            return;
        }
        // A field the autopilot reports as unknown keeps no old value: unknown now is
        // unknown, except the voltage, which the snapshot cannot show as unknown and
        // so keeps its last known value.
        let voltage_v = new
            .voltage_v
            .or_else(|| self.battery.and_then(|b| b.value.voltage_v));
        self.battery = Some(Stamped {
            value: Battery { voltage_v, ..new },
            at: now,
        });
    }

    fn reject(&mut self, message: String) {
        self.rejected_values += 1;
        self.last_rejection = Some(message);
    }

    /// The autopilot, once its first heartbeat arrived.
    pub fn autopilot(&self) -> Option<&AutopilotIdentity> {
        self.identity.as_ref()
    }

    /// Time since the autopilot's last heartbeat; `None` before the first.
    pub fn heartbeat_age(&self, now: Instant) -> Option<Duration> {
        self.heartbeat
            .map(|hb| now.saturating_duration_since(hb.at))
    }

    /// When the autopilot's last heartbeat arrived; `None` before the first.
    pub fn heartbeat_at(&self) -> Option<Instant> {
        self.heartbeat.map(|hb| hb.at)
    }

    /// True when no autopilot heartbeat arrived within `heartbeat_timeout` (or ever).
    pub fn heartbeat_lost(&self, now: Instant) -> bool {
        self.heartbeat_age(now)
            .is_none_or(|age| age > self.options.heartbeat_timeout)
    }

    /// Armed according to the last heartbeat (false before the first). Check
    /// `heartbeat_lost` too: an old "disarmed" says nothing about now.
    pub fn is_armed(&self) -> bool {
        self.heartbeat.is_some_and(|hb| hb.armed)
    }

    /// The flight mode of the last heartbeat.
    pub fn flight_mode(&self) -> Option<FlightMode> {
        self.heartbeat.map(|hb| hb.mode)
    }

    /// `MAV_LANDED_STATE` from the last `EXTENDED_SYS_STATE`, if one came.
    pub fn landed_state(&self) -> Option<MavLandedState> {
        self.landed.map(|l| l.value)
    }

    /// True when the vehicle may be flying: the executor's and the envelope monitor's reading
    /// of [`Landed`]'s one rule for `Unknown`. From `EXTENDED_SYS_STATE` when the autopilot
    /// sends it (`in_air`, `takeoff` and `landing` count as flying); when it never sent one,
    /// or the state is `undefined`, an armed vehicle counts as flying: the daemon must never
    /// treat a vehicle that might be airborne as safely on the ground.
    pub fn in_air(&self) -> bool {
        match Landed::from_reported(self.landed.map(|l| LandedState::from_mavlink(l.value))) {
            Landed::OnGround => false,
            Landed::InAir => true,
            Landed::Unknown => self.is_armed(),
        }
    }

    /// Heading in degrees (0..360, clockwise from north): from `GLOBAL_POSITION_INT.hdg` or
    /// `VFR_HUD.heading`, else the attitude's yaw; `None` before either came.
    pub fn heading_deg(&self) -> Option<f64> {
        self.heading_deg
            .or_else(|| self.attitude.map(|a| a.value.yaw_deg.rem_euclid(360.0)))
    }

    /// The last trusted position, with its receive time.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// The home position, once the autopilot reported one.
    pub fn home(&self) -> Option<&Home> {
        self.home.as_ref()
    }

    /// True when the autopilot trusts its horizontal position now.
    ///
    /// Rule: from `EKF_STATUS_REPORT` (ArduPilot) or `ESTIMATOR_STATUS` (PX4) when one has
    /// ever arrived — attitude, horizontal velocity and absolute horizontal position valid;
    /// not uninitialised, GPS-glitching or accelerometer-faulted; ArduPilot not in
    /// constant-position mode (EKF3 sets it only without aiding); PX4 within 5 m of accuracy
    /// (its CONST_POS_MODE also means "at rest" and is not read).
    /// When neither is streamed, a fresh 3D-or-better GPS fix together with a fresh
    /// `GLOBAL_POSITION_INT` stands in. A stale answer is `false`.
    pub fn position_valid(&self, now: Instant) -> bool {
        let (valid, at) = self.estimator_view();
        valid && !self.is_stale(at, now)
    }

    fn estimator_view(&self) -> (bool, Option<Instant>) {
        if let Some(e) = self.estimator {
            return (e.value, Some(e.at));
        }
        let fix_ok = self.gps.is_some_and(|g| {
            use crate::link::dialect::GpsFixType as F;
            !matches!(
                g.value.fix_type,
                F::GPS_FIX_TYPE_NO_GPS | F::GPS_FIX_TYPE_NO_FIX | F::GPS_FIX_TYPE_2D_FIX
            )
        });
        // Freshness of the stand-in is that of its older input.
        let at = match (self.gps, self.position) {
            (Some(g), Some(p)) => Some(g.at.min(p.received_at)),
            _ => None,
        };
        (fix_ok && at.is_some(), at)
    }

    /// Values that came in malformed (NaN, latitude beyond 90°, ...) and were dropped.
    pub fn rejected_values(&self) -> u64 {
        self.rejected_values
    }

    /// What the last rejected value was, for logs and `probe`.
    pub fn last_rejection(&self) -> Option<&str> {
        self.last_rejection.as_deref()
    }

    /// Messages not from the autopilot (or before it was found), ignored.
    pub fn ignored_messages(&self) -> u64 {
        self.ignored_messages
    }

    fn is_stale(&self, at: Option<Instant>, now: Instant) -> bool {
        at.is_none_or(|at| now.saturating_duration_since(at) > self.options.stale_after)
    }

    fn freshness(&self, at: Option<Instant>, now: Instant) -> Freshness {
        Freshness {
            age_ms: at.map(|at| millis(now.saturating_duration_since(at))),
            stale: self.is_stale(at, now),
        }
    }

    /// The vehicle as every safety check sees it at `now` (`vehicle::view`): stale groups
    /// as unknown, the landed state by [`Landed::from_reported`].
    pub fn view(&self, now: Instant) -> VehicleView {
        let fresh = |at: Instant| !self.is_stale(Some(at), now);
        let position = self.position.filter(|p| fresh(p.received_at));
        let gps = self.gps.filter(|g| fresh(g.at));
        let battery = self.battery.filter(|b| fresh(b.at));
        VehicleView {
            autopilot: self.identity.as_ref().map(|a| a.autopilot),
            heartbeat_fresh: !self.heartbeat_lost(now),
            heartbeat_at: self.heartbeat_at(),
            armed: self.is_armed(),
            landed: Landed::from_reported(self.landed.map(|l| LandedState::from_mavlink(l.value))),
            mode: self.flight_mode(),
            position: position.map(|p| GeoPosition {
                latitude_deg: p.latitude_deg,
                longitude_deg: p.longitude_deg,
                altitude_m: p.altitude_relative_m,
            }),
            velocity_ned_m_s: position.map_or([0.0; 3], |p| {
                [
                    p.velocity_north_m_s,
                    p.velocity_east_m_s,
                    p.velocity_down_m_s,
                ]
            }),
            position_valid: self.position_valid(now),
            battery_remaining_percent: battery.and_then(|b| b.value.remaining_percent),
            gps_fix_type: gps.map_or(FixType::NoFix, |g| FixType::from_mavlink(g.value.fix_type)),
            satellites_visible: gps.map_or(0, |g| g.value.satellites_visible),
            hdop: gps.and_then(|g| g.value.hdop),
            home_altitude_msl_m: self.home.map(|h| h.altitude_msl_m),
        }
    }

    /// Everything known at `now`. `link` is left at its default: the caller fills it from
    /// `link::health`.
    pub fn snapshot(&self, now: Instant) -> VehicleSnapshot {
        let kind = self
            .identity
            .as_ref()
            .map_or(AutopilotKind::Other, |id| id.autopilot);
        let hb = self.heartbeat;
        let mode = ModeStatus {
            freshness: self.freshness(hb.map(|h| h.at), now),
            armed: self.is_armed(),
            flight_mode: ModeName {
                mode: hb.map(|h| h.mode),
                autopilot: kind,
            },
            custom_mode: hb.map_or(0, |h| h.custom_mode),
            landed_state: self.landed.map_or(LandedState::Undefined, |l| {
                LandedState::from_mavlink(l.value)
            }),
            system_status: hb.map_or(SystemStatus::Uninit, |h| {
                SystemStatus::from_mavlink(h.system_status)
            }),
        };
        let p = self.position;
        let position = PositionStatus {
            freshness: self.freshness(p.map(|p| p.received_at), now),
            latitude_deg: p.map_or(0.0, |p| p.latitude_deg),
            longitude_deg: p.map_or(0.0, |p| p.longitude_deg),
            altitude_msl_m: p.map_or(0.0, |p| p.altitude_msl_m),
            altitude_relative_m: p.map_or(0.0, |p| p.altitude_relative_m),
            velocity_north_m_s: p.map_or(0.0, |p| p.velocity_north_m_s),
            velocity_east_m_s: p.map_or(0.0, |p| p.velocity_east_m_s),
            velocity_down_m_s: p.map_or(0.0, |p| p.velocity_down_m_s),
            ground_speed_m_s: if p.is_some() {
                self.ground_speed_m_s
            } else {
                0.0
            },
        };
        let att = self.attitude;
        let yaw_deg = att.map_or(0.0, |a| a.value.yaw_deg);
        let attitude = AttitudeStatus {
            freshness: self.freshness(att.map(|a| a.at), now),
            roll_deg: att.map_or(0.0, |a| a.value.roll_deg),
            pitch_deg: att.map_or(0.0, |a| a.value.pitch_deg),
            yaw_deg,
            heading_deg: self.heading_deg.unwrap_or(yaw_deg.rem_euclid(360.0)),
        };
        let bat = self.battery;
        let battery = BatteryStatus {
            freshness: self.freshness(bat.map(|b| b.at), now),
            voltage_v: bat.and_then(|b| b.value.voltage_v).unwrap_or(0.0),
            current_a: bat.and_then(|b| b.value.current_a),
            remaining_percent: bat.and_then(|b| b.value.remaining_percent),
        };
        let gps = self.gps;
        let gps = GpsStatus {
            freshness: self.freshness(gps.map(|g| g.at), now),
            fix_type: gps.map_or(FixType::NoGps, |g| FixType::from_mavlink(g.value.fix_type)),
            satellites_visible: gps.map_or(0, |g| g.value.satellites_visible),
            hdop: gps.and_then(|g| g.value.hdop),
        };
        let (position_valid, estimator_at) = self.estimator_view();
        let estimator = EstimatorStatus {
            freshness: self.freshness(estimator_at, now),
            position_valid,
        };
        let home = self.home.map(|h| HomeStatus {
            freshness: self.freshness(Some(h.received_at), now),
            latitude_deg: h.latitude_deg,
            longitude_deg: h.longitude_deg,
            altitude_msl_m: h.altitude_msl_m,
        });
        let status_texts = self
            .status_texts
            .iter()
            .map(|t| StatusText {
                age_ms: millis(now.saturating_duration_since(t.at)),
                severity: t.severity.clone(),
                text: t.text.clone(),
            })
            .collect();
        VehicleSnapshot {
            autopilot: self.identity.clone(),
            mode,
            position,
            attitude,
            battery,
            gps,
            estimator,
            home,
            status_texts,
            link: LinkHealthStatus::default(),
        }
    }
}

/// The identity a heartbeat announces, if it comes from a flight controller
/// ([`crate::link::is_autopilot_heartbeat`]).
fn identify(
    header: &MavHeader,
    hb: &crate::link::dialect::HEARTBEAT_DATA,
) -> Option<AutopilotIdentity> {
    if !crate::link::is_autopilot_heartbeat(hb) {
        return None;
    }
    let system_id = u8::try_from(header.system_id).ok()?;
    Some(AutopilotIdentity {
        system_id,
        component_id: header.component_id,
        autopilot: match hb.autopilot {
            MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA => AutopilotKind::Ardupilot,
            MavAutopilot::MAV_AUTOPILOT_PX4 => AutopilotKind::Px4,
            _ => AutopilotKind::Other,
        },
        vehicle_type: enum_name(&hb.mavtype, "MAV_TYPE_"),
        firmware_version: None,
        simulated: false,
    })
}

/// `lat`/`lon` in 1e-7 degrees, if they are on Earth.
fn lat_lon(lat: i32, lon: i32) -> Option<(f64, f64)> {
    let lat = f64::from(lat) / 1e7;
    let lon = f64::from(lon) / 1e7;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// ArduPilot (`EKF_STATUS_REPORT`): the estimator trusts its attitude, horizontal velocity
/// and absolute horizontal position, and reports no constant-position mode, no missing
/// initialisation and no GPS glitch.
fn ardupilot_position_trusted(e: &crate::link::dialect::EKF_STATUS_REPORT_DATA) -> bool {
    let needed = EkfStatusFlags::EKF_ATTITUDE
        | EkfStatusFlags::EKF_VELOCITY_HORIZ
        | EkfStatusFlags::EKF_POS_HORIZ_ABS;
    let bad = EkfStatusFlags::EKF_CONST_POS_MODE
        | EkfStatusFlags::EKF_UNINITIALIZED
        | EkfStatusFlags::EKF_GPS_GLITCHING;
    e.flags.contains(needed) && !e.flags.intersects(bad)
}

/// PX4 (`ESTIMATOR_STATUS`): see the comment inside for what is and is not trusted.
fn px4_position_trusted(e: &crate::link::dialect::ESTIMATOR_STATUS_DATA) -> bool {
    // PX4 (ekf2 `get_ekf_soln_status`): POS_HORIZ_ABS is the EKF's own "global
    // horizontal position valid". CONST_POS_MODE is also set whenever the vehicle
    // is at rest (`vehicle_at_rest`), so it says nothing against a trusted position
    // on the ground; without aiding POS_HORIZ_ABS is clear anyway. Like PX4's
    // commander (`estimatorCheck.cpp`), an accuracy worse than COM_POS_FS_EPH's
    // default (5 m) is not trusted either.
    let needed = EstimatorStatusFlags::ESTIMATOR_ATTITUDE
        | EstimatorStatusFlags::ESTIMATOR_VELOCITY_HORIZ
        | EstimatorStatusFlags::ESTIMATOR_POS_HORIZ_ABS;
    let bad =
        EstimatorStatusFlags::ESTIMATOR_GPS_GLITCH | EstimatorStatusFlags::ESTIMATOR_ACCEL_ERROR;
    let accurate =
        !(e.pos_horiz_accuracy.is_finite() && e.pos_horiz_accuracy > PX4_POSITION_ACCURACY_M_MAX);
    e.flags.contains(needed) && !e.flags.intersects(bad) && accurate
}

/// MAVLink battery percentages: -1 is unknown, anything outside 0..=100 is not a percentage.
fn percent(value: i8) -> Option<f64> {
    (0..=100).contains(&value).then(|| f64::from(value))
}

/// `flight_sw_version` as `major.minor.patch`, with a suffix for non-release builds
/// (`FIRMWARE_VERSION_TYPE` in the low byte).
fn firmware_version(v: u32) -> String {
    let [major, minor, patch, kind] = v.to_be_bytes();
    let suffix = match kind {
        0 => "-dev",
        64 => "-alpha",
        128 => "-beta",
        192 => "-rc",
        _ => "",
    };
    format!("{major}.{minor}.{patch}{suffix}")
}

/// `MAV_TYPE_QUADROTOR` → `quadrotor`: the snapshot's snake_case names for MAVLink enums.
fn enum_name(value: &impl std::fmt::Debug, prefix: &str) -> String {
    let debug = format!("{value:?}");
    debug
        .strip_prefix(prefix)
        .unwrap_or(&debug)
        .to_ascii_lowercase()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::dialect::*;

    const AP: (u32, u8) = (1, 1);

    fn header(system_id: u32, component_id: u8) -> MavHeader {
        MavHeader {
            system_id,
            component_id,
            sequence: 0,
        }
    }

    fn options() -> VehicleStateOptions {
        VehicleStateOptions {
            stale_after: Duration::from_secs(3),
            heartbeat_timeout: Duration::from_secs(3),
        }
    }

    fn heartbeat(autopilot: MavAutopilot, mavtype: MavType, base: u8, custom: u32) -> MavMessage {
        MavMessage::HEARTBEAT(HEARTBEAT_DATA {
            custom_mode: custom,
            mavtype,
            autopilot,
            base_mode: MavModeFlag::from_bits_retain(base),
            system_status: MavState::MAV_STATE_ACTIVE,
            mavlink_version: 3,
        })
    }

    fn arducopter(base: u8, custom: u32) -> MavMessage {
        heartbeat(
            MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            MavType::MAV_TYPE_QUADROTOR,
            base,
            custom,
        )
    }

    /// A state that already knows an ArduCopter at 1/1, armed in GUIDED.
    fn with_autopilot(now: Instant) -> VehicleState {
        let mut state = VehicleState::new(options());
        state.handle_message(now, &header(AP.0, AP.1), &arducopter(1 | 128, 4));
        state
    }

    fn position(lat: i32, lon: i32) -> MavMessage {
        MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
            lat,
            lon,
            alt: 120_500,
            relative_alt: 20_250,
            vx: 300,
            vy: -400,
            vz: -50,
            hdg: 9000,
            ..GLOBAL_POSITION_INT_DATA::DEFAULT
        })
    }

    #[test]
    fn finds_the_autopilot_and_ignores_companions_gcs_and_other_systems() {
        let now = Instant::now();
        let mut state = VehicleState::new(options());
        // Our own heartbeat, a GCS and a camera come first: none of them is the autopilot.
        state.handle_message(
            now,
            &header(1, 191),
            &heartbeat(
                MavAutopilot::MAV_AUTOPILOT_INVALID,
                MavType::MAV_TYPE_ONBOARD_CONTROLLER,
                0,
                0,
            ),
        );
        state.handle_message(
            now,
            &header(255, 190),
            &heartbeat(
                MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
                MavType::MAV_TYPE_GCS,
                0,
                0,
            ),
        );
        state.handle_message(
            now,
            &header(1, 100),
            &heartbeat(
                MavAutopilot::MAV_AUTOPILOT_GENERIC,
                MavType::MAV_TYPE_CAMERA,
                0,
                0,
            ),
        );
        assert!(state.autopilot().is_none());
        assert_eq!(state.heartbeat_age(now), None);
        assert!(state.heartbeat_lost(now));

        state.handle_message(now, &header(1, 1), &arducopter(1 | 128, 5));
        let id = state.autopilot().unwrap();
        assert_eq!((id.system_id, id.component_id), (1, 1));
        assert_eq!(id.autopilot, AutopilotKind::Ardupilot);
        assert_eq!(id.vehicle_type, "quadrotor");
        assert!(state.is_armed());
        assert_eq!(state.flight_mode(), Some(FlightMode::Loiter));

        // A second vehicle on the same network says it is disarmed in LAND: not ours.
        let later = now + Duration::from_millis(500);
        state.handle_message(later, &header(2, 1), &arducopter(1, 9));
        state.handle_message(later, &header(2, 1), &position(10_000_000, 10_000_000));
        assert!(state.is_armed());
        assert_eq!(state.flight_mode(), Some(FlightMode::Loiter));
        assert!(state.position().is_none());
        assert_eq!(state.autopilot().unwrap().system_id, 1);
        assert_eq!(state.heartbeat_age(later), Some(Duration::from_millis(500)));
        assert_eq!(state.ignored_messages(), 5);
    }

    #[test]
    fn px4_heartbeat_is_decoded_in_px4_terms() {
        let now = Instant::now();
        let mut state = VehicleState::new(options());
        state.handle_message(
            now,
            &header(1, 1),
            &heartbeat(
                MavAutopilot::MAV_AUTOPILOT_PX4,
                MavType::MAV_TYPE_QUADROTOR,
                1,
                0x0304_0000,
            ),
        );
        assert_eq!(state.autopilot().unwrap().autopilot, AutopilotKind::Px4);
        assert_eq!(state.flight_mode(), Some(FlightMode::Loiter));
        let snap = state.snapshot(now);
        assert_eq!(snap.mode.flight_mode, "AUTO.LOITER");
        assert_eq!(snap.mode.custom_mode, 0x0304_0000);
        assert!(!snap.mode.armed);
        assert_eq!(snap.mode.system_status, "active");
    }

    #[test]
    fn global_position_is_converted_and_bad_coordinates_are_rejected() {
        let now = Instant::now();
        let mut state = with_autopilot(now);
        let ap = header(AP.0, AP.1);
        state.handle_message(now, &ap, &position(473_977_420, 85_455_940));
        let p = *state.position().unwrap();
        assert!((p.latitude_deg - 47.397742).abs() < 1e-9);
        assert!((p.longitude_deg - 8.545594).abs() < 1e-9);
        assert_eq!(p.altitude_msl_m, 120.5);
        assert_eq!(p.altitude_relative_m, 20.25);
        assert_eq!(
            (
                p.velocity_north_m_s,
                p.velocity_east_m_s,
                p.velocity_down_m_s
            ),
            (3.0, -4.0, -0.5)
        );
        let snap = state.snapshot(now);
        assert_eq!(snap.position.ground_speed_m_s, 5.0);
        assert_eq!(snap.attitude.heading_deg, 90.0);

        // Latitude 95°: kept the old position, counted, explained.
        let later = now + Duration::from_secs(1);
        state.handle_message(later, &ap, &position(950_000_000, 85_455_940));
        assert_eq!(state.position().unwrap().received_at, now);
        assert_eq!(state.rejected_values(), 1);
        assert!(state.last_rejection().unwrap().contains("not on Earth"));
        // 0/0 is "no fix yet", not a rejection and not a position.
        state.handle_message(later, &ap, &position(0, 0));
        assert_eq!(state.position().unwrap().received_at, now);
        assert_eq!(state.rejected_values(), 1);
    }

    #[test]
    fn attitude_nan_is_rejected_and_heading_falls_back_to_yaw() {
        let now = Instant::now();
        let mut state = with_autopilot(now);
        let ap = header(AP.0, AP.1);
        let attitude = |roll: f32, yaw: f32| {
            MavMessage::ATTITUDE(ATTITUDE_DATA {
                roll,
                pitch: 0.1,
                yaw,
                ..ATTITUDE_DATA::DEFAULT
            })
        };
        state.handle_message(now, &ap, &attitude(0.2, -std::f32::consts::FRAC_PI_2));
        state.handle_message(now, &ap, &attitude(f32::NAN, 0.0));
        state.handle_message(now, &ap, &attitude(0.0, f32::INFINITY));
        assert_eq!(state.rejected_values(), 2);
        let snap = state.snapshot(now);
        assert!((snap.attitude.roll_deg - 11.459).abs() < 1e-2);
        assert!((snap.attitude.yaw_deg + 90.0).abs() < 1e-4);
        assert!((snap.attitude.heading_deg - 270.0).abs() < 1e-4);
        assert!(!snap.attitude.freshness.stale);

        // VFR_HUD's heading wins over the yaw once it arrives.
        state.handle_message(
            now,
            &ap,
            &MavMessage::VFR_HUD(VFR_HUD_DATA {
                heading: 45,
                ..VFR_HUD_DATA::DEFAULT
            }),
        );
        assert_eq!(state.snapshot(now).attitude.heading_deg, 45.0);
    }

    #[test]
    fn battery_sentinels_are_unknown() {
        let now = Instant::now();
        let mut state = with_autopilot(now);
        let ap = header(AP.0, AP.1);
        state.handle_message(
            now,
            &ap,
            &MavMessage::SYS_STATUS(SYS_STATUS_DATA {
                voltage_battery: 12_600,
                current_battery: 1_550,
                battery_remaining: 87,
                ..SYS_STATUS_DATA::DEFAULT
            }),
        );
        let b = state.snapshot(now).battery;
        assert_eq!(
            (b.voltage_v, b.current_a, b.remaining_percent),
            (12.6, Some(15.5), Some(87.0))
        );
        state.handle_message(
            now,
            &ap,
            &MavMessage::SYS_STATUS(SYS_STATUS_DATA {
                voltage_battery: u16::MAX,
                current_battery: -1,
                battery_remaining: -1,
                ..SYS_STATUS_DATA::DEFAULT
            }),
        );
        let b = state.snapshot(now).battery;
        assert_eq!(
            (b.voltage_v, b.current_a, b.remaining_percent),
            (12.6, None, None)
        );
    }

    #[test]
    fn battery_status_sums_cells_and_skips_other_batteries() {
        let now = Instant::now();
        let mut state = with_autopilot(now);
        let ap = header(AP.0, AP.1);
        let mut voltages = [u16::MAX; 10];
        voltages[..4].copy_from_slice(&[4_000, 4_100, 4_000, 4_100]);
        state.handle_message(
            now,
            &ap,
            &MavMessage::BATTERY_STATUS(BATTERY_STATUS_DATA {
                voltages,
                current_battery: 2_000,
                battery_remaining: 50,
                id: 0,
                ..BATTERY_STATUS_DATA::DEFAULT
            }),
        );
        state.handle_message(
            now,
            &ap,
            &MavMessage::BATTERY_STATUS(BATTERY_STATUS_DATA {
                voltages: [3_000; 10],
                id: 1,
                ..BATTERY_STATUS_DATA::DEFAULT
            }),
        );
        let b = state.snapshot(now).battery;
        assert!((b.voltage_v - 16.2).abs() < 1e-9);
        assert_eq!(b.current_a, Some(20.0));
        assert_eq!(b.remaining_percent, Some(50.0));
    }

    #[test]
    fn gps_hdop_unknown_is_none() {
        let now = Instant::now();
        let mut state = with_autopilot(now);
        let ap = header(AP.0, AP.1);
        let gps = |fix_type, eph| {
            MavMessage::GPS_RAW_INT(GPS_RAW_INT_DATA {
                fix_type,
                satellites_visible: 14,
                eph,
                ..GPS_RAW_INT_DATA::DEFAULT
            })
        };
        state.handle_message(now, &ap, &gps(GpsFixType::GPS_FIX_TYPE_RTK_FIXED, 70));
        let g = state.snapshot(now).gps;
        assert_eq!(
            (g.fix_type.as_str(), g.satellites_visible, g.hdop),
            ("rtk_fixed", 14, Some(0.7))
        );
        state.handle_message(now, &ap, &gps(GpsFixType::GPS_FIX_TYPE_3D_FIX, u16::MAX));
        let g = state.snapshot(now).gps;
        assert_eq!((g.fix_type.as_str(), g.hdop), ("3d_fix", None));
    }

    #[test]
    fn estimator_validity_from_ekf_and_px4_flags_and_gps_fallback() {
        let now = Instant::now();
        let ap = header(AP.0, AP.1);

        // Fallback: 3D fix plus a fresh position.
        let mut state = with_autopilot(now);
        state.handle_message(
            now,
            &ap,
            &MavMessage::GPS_RAW_INT(GPS_RAW_INT_DATA {
                fix_type: GpsFixType::GPS_FIX_TYPE_3D_FIX,
                ..GPS_RAW_INT_DATA::DEFAULT
            }),
        );
        assert!(!state.position_valid(now), "no position yet");
        state.handle_message(now, &ap, &position(1, 1));
        assert!(state.position_valid(now));
        assert!(!state.position_valid(now + Duration::from_secs(4)), "stale");

        // EKF report takes over once streamed, even if the GPS looks fine.
        let good = EkfStatusFlags::EKF_ATTITUDE
            | EkfStatusFlags::EKF_VELOCITY_HORIZ
            | EkfStatusFlags::EKF_POS_HORIZ_ABS;
        let ekf = |flags| {
            MavMessage::EKF_STATUS_REPORT(EKF_STATUS_REPORT_DATA {
                flags,
                ..EKF_STATUS_REPORT_DATA::DEFAULT
            })
        };
        state.handle_message(now, &ap, &ekf(good | EkfStatusFlags::EKF_CONST_POS_MODE));
        assert!(!state.position_valid(now));
        state.handle_message(now, &ap, &ekf(good | EkfStatusFlags::EKF_GPS_GLITCHING));
        assert!(!state.position_valid(now));
        state.handle_message(now, &ap, &ekf(good));
        assert!(state.position_valid(now));
        assert!(state.snapshot(now).estimator.position_valid);

        let flags = EstimatorStatusFlags::ESTIMATOR_ATTITUDE
            | EstimatorStatusFlags::ESTIMATOR_VELOCITY_HORIZ
            | EstimatorStatusFlags::ESTIMATOR_POS_HORIZ_ABS;
        let px4 = |flags| {
            MavMessage::ESTIMATOR_STATUS(ESTIMATOR_STATUS_DATA {
                flags,
                ..ESTIMATOR_STATUS_DATA::DEFAULT
            })
        };
        state.handle_message(now, &ap, &px4(flags));
        assert!(state.position_valid(now));
        state.handle_message(
            now,
            &ap,
            &px4(flags | EstimatorStatusFlags::ESTIMATOR_GPS_GLITCH),
        );
        assert!(!state.position_valid(now));
        // PX4 at rest (sitl.md: flags 1023 on the ground, 895 in the air): trusted.
        let rest = |bits| {
            MavMessage::ESTIMATOR_STATUS(ESTIMATOR_STATUS_DATA {
                flags: EstimatorStatusFlags::from_bits_truncate(bits),
                pos_horiz_accuracy: 0.5,
                ..ESTIMATOR_STATUS_DATA::DEFAULT
            })
        };
        state.handle_message(now, &ap, &rest(1023));
        assert!(state.position_valid(now), "CONST_POS_MODE at rest");
        state.handle_message(now, &ap, &rest(895));
        assert!(state.position_valid(now));
        // Without aiding PX4 clears POS_HORIZ_ABS (and fakes a constant position).
        state.handle_message(now, &ap, &rest(1 | 4 | 32 | 128));
        assert!(!state.position_valid(now));
        // Too inaccurate for PX4's own commander.
        state.handle_message(
            now,
            &ap,
            &MavMessage::ESTIMATOR_STATUS(ESTIMATOR_STATUS_DATA {
                flags: EstimatorStatusFlags::from_bits_truncate(895),
                pos_horiz_accuracy: 12.0,
                ..ESTIMATOR_STATUS_DATA::DEFAULT
            }),
        );
        assert!(!state.position_valid(now));
    }

    #[test]
    fn landed_state_drives_in_air_and_armed_counts_as_flying_when_unknown() {
        let now = Instant::now();
        let ap = header(AP.0, AP.1);
        let mut state = with_autopilot(now);
        assert!(state.in_air(), "armed, no EXTENDED_SYS_STATE");
        let landed = |landed_state| {
            MavMessage::EXTENDED_SYS_STATE(EXTENDED_SYS_STATE_DATA {
                landed_state,
                ..EXTENDED_SYS_STATE_DATA::DEFAULT
            })
        };
        state.handle_message(
            now,
            &ap,
            &landed(MavLandedState::MAV_LANDED_STATE_ON_GROUND),
        );
        assert!(!state.in_air());
        assert_eq!(state.snapshot(now).mode.landed_state, "on_ground");
        state.handle_message(now, &ap, &landed(MavLandedState::MAV_LANDED_STATE_TAKEOFF));
        assert!(state.in_air());
        state.handle_message(now, &ap, &arducopter(1, 4));
        state.handle_message(
            now,
            &ap,
            &landed(MavLandedState::MAV_LANDED_STATE_UNDEFINED),
        );
        assert!(!state.in_air(), "disarmed and undefined");
    }

    #[test]
    fn home_version_simulation_and_status_texts() {
        let now = Instant::now();
        let ap = header(AP.0, AP.1);
        let mut state = with_autopilot(now);
        state.handle_message(
            now,
            &ap,
            &MavMessage::HOME_POSITION(HOME_POSITION_DATA {
                latitude: -353_632_620,
                longitude: 1_491_652_370,
                altitude: 584_090,
                ..HOME_POSITION_DATA::DEFAULT
            }),
        );
        state.handle_message(
            now,
            &ap,
            &MavMessage::AUTOPILOT_VERSION(AUTOPILOT_VERSION_DATA {
                flight_sw_version: 0x0405_07ff,
                ..AUTOPILOT_VERSION_DATA::DEFAULT
            }),
        );
        state.handle_message(now, &ap, &MavMessage::SIMSTATE(SIMSTATE_DATA::DEFAULT));
        for i in 0..20 {
            state.handle_message(
                now + Duration::from_millis(i),
                &ap,
                &MavMessage::STATUSTEXT(STATUSTEXT_DATA {
                    severity: MavSeverity::MAV_SEVERITY_WARNING,
                    text: format!("PreArm: check {i}").as_str().into(),
                    ..STATUSTEXT_DATA::DEFAULT
                }),
            );
        }
        let snap = state.snapshot(now + Duration::from_millis(100));
        let home = snap.home.unwrap();
        assert!((home.latitude_deg + 35.363262).abs() < 1e-9);
        assert!((home.altitude_msl_m - 584.09).abs() < 1e-9);
        let id = snap.autopilot.unwrap();
        assert_eq!(id.firmware_version.as_deref(), Some("4.5.7"));
        assert!(id.simulated);
        assert_eq!(snap.status_texts.len(), STATUS_TEXTS_MAX);
        assert_eq!(snap.status_texts[0].text, "PreArm: check 4");
        let last = snap.status_texts.last().unwrap();
        assert_eq!(
            (last.text.as_str(), last.severity.as_str(), last.age_ms),
            ("PreArm: check 19", "warning", 81)
        );
        assert_eq!(firmware_version(0x010e_0300), "1.14.3-dev");
    }

    #[test]
    fn each_group_goes_stale_on_its_own() {
        let t0 = Instant::now();
        let ap = header(AP.0, AP.1);
        let mut state = with_autopilot(t0);
        state.handle_message(t0, &ap, &position(1, 1));
        let t1 = t0 + Duration::from_secs(2);
        state.handle_message(t1, &ap, &arducopter(1 | 128, 4));

        let snap = state.snapshot(t0 + Duration::from_millis(3500));
        assert_eq!(snap.mode.freshness.age_ms, Some(1500));
        assert!(!snap.mode.freshness.stale);
        assert_eq!(snap.position.freshness.age_ms, Some(3500));
        assert!(snap.position.freshness.stale);
        assert_eq!(snap.battery.freshness.age_ms, None);
        assert!(snap.battery.freshness.stale);
        assert!(snap.home.is_none());
        assert_eq!(snap.link, LinkHealthStatus::default());

        assert!(!state.heartbeat_lost(t1 + Duration::from_secs(3)));
        assert!(state.heartbeat_lost(t1 + Duration::from_millis(3001)));
    }

    #[test]
    fn snapshot_before_any_heartbeat_is_all_stale() {
        let now = Instant::now();
        let state = VehicleState::new(options());
        let snap = state.snapshot(now);
        assert!(snap.autopilot.is_none());
        assert_eq!(snap.mode.flight_mode, "UNKNOWN");
        assert!(snap.mode.freshness.stale && snap.position.freshness.stale);
        assert!(snap.estimator.freshness.stale && !snap.estimator.position_valid);
        assert!(!state.in_air());
    }
}
