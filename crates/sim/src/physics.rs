//! Sans-IO point-mass kinematics of a multicopter, good enough to be flown from outside.
//!
//! The state is a point in a local NED frame (metres north, east, down) whose origin is home
//! on the ground. A two-stage controller turns a [`Target`] into a velocity demand (a square
//! root controller, so the vehicle stops at a point without overshoot) and the velocity demand
//! into an acceleration, both clamped to the [`Limits`], horizontal and vertical separately.
//!
//! Wind: a constant wind plus seeded gusts (an Ornstein–Uhlenbeck random walk) whose standard
//! deviation is the turbulence (ArduPilot SITL's `SIM_WIND_TURB`, m/s, default 0: a steady
//! wind). A healthy
//! position controller cancels wind completely; the share it does *not* cancel
//! (`1 - wind_compensation`) drifts the vehicle down-wind. The position loop fights back, so a
//! drift smaller than the speed limit pushes the vehicle off its point by `drift / KP` metres;
//! a larger one carries it away. That is the drift fault of the simulator.
//!
//! Wind profile: below a full-strength altitude the wind is weaker, as ArduPilot SITL scales
//! `SIM_WIND_SPD` (`AP_HAL_SITL/SITL_State.cpp`: by √(altitude / `SIM_WIND_T_ALT`) with the
//! default `SIM_WIND_T` 0, unchanged with 1, linearly with 2).
//!
//! Battery: a pack of `cells` drained by a current proportional to thrust; the charge it has
//! used is counted in mAh. With a capacity the resting voltage follows the charge and sags under
//! load through an internal resistance; without one (capacity 0, as ArduPilot SITL's default
//! quad frame: `SIM_Frame.h` `battCapacityAh` 0) the voltage stays where it is set. The resting
//! voltage can be overridden (fault injection).
//!
//! Deterministic: the only randomness comes from [`SplitMix64`] seeded by the caller, and time
//! only advances through [`Physics::step`] (virtual seconds).

use nalgebra::{Vector2, Vector3};

/// Standard gravity.
pub const GRAVITY_M_S2: f64 = 9.80665;
/// Position loop gain (1/s): velocity demand per metre of position error.
const POSITION_GAIN_PER_S: f64 = 1.0;
/// Velocity loop gain (1/s): acceleration demand per m/s of velocity error.
const VELOCITY_GAIN_PER_S: f64 = 2.0;
/// Below this horizontal speed a braking vehicle counts as stopped and holds where it is.
const STOPPED_SPEED_M_S: f64 = 0.2;
/// Falling with motors off, drag caps the speed.
const TERMINAL_SPEED_M_S: f64 = 30.0;
/// Time constant of the gust random walk.
const GUST_TIME_CONSTANT_S: f64 = 3.0;
/// Beyond this horizontal distance a vehicle flying to a point turns to face it.
const FACE_TARGET_DISTANCE_M: f64 = 2.0;

/// A small, fast, seedable PRNG (SplitMix64, Steele/Lea/Flood 2014): same seed, same numbers,
/// on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller).
    pub fn next_gaussian(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A point on the earth: latitude and longitude in degrees, altitude above mean sea level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub lat_deg: f64,
    pub lon_deg: f64,
    pub alt_amsl_m: f64,
}

impl GeoPoint {
    /// The point `ned_m` away from this one, in the plane around `self` of the daemon's one
    /// Earth model (`flight_companion_core::geodesy`: ArduPilot's own `LATLON_TO_M`).
    pub fn offset_by(&self, ned_m: &Vector3<f64>) -> GeoPoint {
        let (lat_deg, lon_deg) = flight_companion_core::geodesy::offset_deg(
            self.lat_deg,
            self.lon_deg,
            ned_m.x,
            ned_m.y,
        );
        GeoPoint {
            lat_deg,
            lon_deg,
            alt_amsl_m: self.alt_amsl_m - ned_m.z,
        }
    }

    /// Where `other` is, in metres NED from this point (inverse of [`GeoPoint::offset_by`]).
    pub fn ned_to(&self, other: &GeoPoint) -> Vector3<f64> {
        let (north_m, east_m) = flight_companion_core::geodesy::north_east_m(
            self.lat_deg,
            self.lon_deg,
            other.lat_deg,
            other.lon_deg,
        );
        Vector3::new(north_m, east_m, self.alt_amsl_m - other.alt_amsl_m)
    }
}

/// What the vehicle can do. Defaults are ArduCopter's (`WPNAV_SPEED` 10 m/s,
/// `WPNAV_SPEED_UP` 2.5 m/s, `WPNAV_SPEED_DN` 1.5 m/s, `WPNAV_ACCEL` 2.5 m/s²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub speed_horizontal_m_s_max: f64,
    pub speed_up_m_s_max: f64,
    pub speed_down_m_s_max: f64,
    pub accel_horizontal_m_s2_max: f64,
    pub accel_vertical_m_s2_max: f64,
    pub yaw_rate_rad_s_max: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            speed_horizontal_m_s_max: 10.0,
            speed_up_m_s_max: 2.5,
            speed_down_m_s_max: 1.5,
            accel_horizontal_m_s2_max: 2.5,
            accel_vertical_m_s2_max: 2.5,
            yaw_rate_rad_s_max: 90f64.to_radians(),
        }
    }
}

/// What the controller is asked to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Motors stopped: stays on the ground, or falls.
    MotorsOff,
    /// Motors spinning at idle on the ground (armed, not flying): stays on the ground.
    GroundIdle,
    /// Brake to zero velocity, then hold the point where it stopped.
    Hold,
    /// Fly to a point (NED from home).
    Position { ned_m: Vector3<f64> },
    /// Fly at a velocity (NED), within the limits.
    Velocity { ned_m_s: Vector3<f64> },
    /// Brake and hold horizontally while descending at `speed_m_s` until touchdown.
    Descend { speed_m_s: f64 },
}

/// How the wind changes with height (ArduPilot SITL's `SIM_WIND_T`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindProfile {
    /// 0: × √(altitude / `full_altitude_m`) below that altitude, full strength above it.
    SquareRoot { full_altitude_m: f64 },
    /// 1: the same wind at every height.
    Uniform,
    /// 2: + (altitude − `full_altitude_m`) × `coefficient_per_m` m/s, never below 0.
    Linear {
        full_altitude_m: f64,
        coefficient_per_m: f64,
    },
}

impl WindProfile {
    /// The wind speed at `altitude_m` for a configured (full-strength) `speed_m_s`.
    pub fn speed_at(&self, speed_m_s: f64, altitude_m: f64) -> f64 {
        let speed = match *self {
            WindProfile::SquareRoot { full_altitude_m } => {
                if altitude_m < full_altitude_m && full_altitude_m > 0.0 {
                    speed_m_s * (altitude_m / full_altitude_m).max(0.0).sqrt()
                } else {
                    speed_m_s
                }
            }
            WindProfile::Uniform => speed_m_s,
            WindProfile::Linear {
                full_altitude_m,
                coefficient_per_m,
            } => speed_m_s + (altitude_m - full_altitude_m) * coefficient_per_m,
        };
        if speed.is_finite() {
            speed.max(0.0)
        } else {
            0.0
        }
    }
}

/// The pack: `cells` LiPo cells, linear-enough discharge curve, sag through internal resistance.
#[derive(Debug, Clone, PartialEq)]
pub struct Battery {
    pub cells: f64,
    /// The pack's charge; 0: the voltage does not follow the charge (see the module doc).
    pub capacity_mah: f64,
    pub consumed_mah: f64,
    pub current_a: f64,
    /// A forced resting voltage (fault injection), instead of the one the charge gives.
    pub voltage_override_v: Option<f64>,
}

const CELL_FULL_V: f64 = 4.2;
const CELL_EMPTY_V: f64 = 3.3;
const INTERNAL_RESISTANCE_OHM: f64 = 0.015;
const HOVER_CURRENT_A: f64 = 18.0;
const IDLE_CURRENT_A: f64 = 3.0;
const AVIONICS_CURRENT_A: f64 = 0.5;

impl Battery {
    fn new() -> Self {
        Battery {
            cells: 4.0,
            capacity_mah: 5000.0,
            consumed_mah: 0.0,
            current_a: AVIONICS_CURRENT_A,
            voltage_override_v: None,
        }
    }

    /// Resting (open-circuit) voltage.
    pub fn resting_voltage_v(&self) -> f64 {
        self.voltage_override_v.unwrap_or_else(|| {
            if self.capacity_mah <= 0.0 {
                return self.cells * CELL_FULL_V;
            }
            let charge = (1.0 - self.consumed_mah / self.capacity_mah).clamp(0.0, 1.0);
            self.cells * (CELL_EMPTY_V + (CELL_FULL_V - CELL_EMPTY_V) * charge)
        })
    }

    /// Voltage at the terminals under the present load (no sag without a capacity: the
    /// voltage is simply what it was set to).
    pub fn voltage_v(&self) -> f64 {
        if self.capacity_mah <= 0.0 {
            return self.resting_voltage_v().max(0.0);
        }
        (self.resting_voltage_v() - self.current_a * INTERNAL_RESISTANCE_OHM).max(0.0)
    }

    /// Remaining charge in percent, from the resting voltage (as a voltage-based monitor does).
    pub fn remaining_pct(&self) -> f64 {
        let per_cell = self.resting_voltage_v() / self.cells.max(1.0);
        ((per_cell - CELL_EMPTY_V) / (CELL_FULL_V - CELL_EMPTY_V) * 100.0).clamp(0.0, 100.0)
    }
}

/// The simulated airframe. Call [`Physics::set_target`] (and the other setters) whenever the
/// autopilot decides, and [`Physics::step`] at a fixed virtual period.
#[derive(Debug, Clone)]
pub struct Physics {
    limits: Limits,
    target: Target,
    /// Where a braking vehicle decided to stop (for `Hold` and `Descend`).
    hold_point_ned_m: Option<Vector3<f64>>,
    position_ned_m: Vector3<f64>,
    /// The velocity the controller commands; the ground velocity adds the drift.
    velocity_control_ned_m_s: Vector3<f64>,
    drift_ned_m_s: Vector3<f64>,
    accel_command_ned_m_s2: Vector3<f64>,
    yaw_rad: f64,
    yaw_rate_rad_s: f64,
    yaw_target_rad: Option<f64>,
    /// The configured (full-strength) wind; [`Physics::wind_here_ned_m_s`] scales it.
    wind_ned_m_s: Vector3<f64>,
    wind_profile: WindProfile,
    /// Standard deviation of the gusts, m/s.
    turbulence_m_s: f64,
    gust_ned_m_s: Vector3<f64>,
    wind_compensation: f64,
    touchdown_speed_m_s: Option<f64>,
    battery: Battery,
    rng: SplitMix64,
}

impl Physics {
    /// On the ground at home, motors off, no wind, full battery.
    pub fn new(seed: u64) -> Self {
        Physics {
            limits: Limits::default(),
            target: Target::MotorsOff,
            hold_point_ned_m: None,
            position_ned_m: Vector3::zeros(),
            velocity_control_ned_m_s: Vector3::zeros(),
            drift_ned_m_s: Vector3::zeros(),
            accel_command_ned_m_s2: Vector3::zeros(),
            yaw_rad: 0.0,
            yaw_rate_rad_s: 0.0,
            yaw_target_rad: None,
            wind_ned_m_s: Vector3::zeros(),
            wind_profile: WindProfile::Uniform,
            turbulence_m_s: 0.0,
            gust_ned_m_s: Vector3::zeros(),
            wind_compensation: 1.0,
            touchdown_speed_m_s: None,
            battery: Battery::new(),
            rng: SplitMix64::new(seed),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.limits
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// A new target; a new `Hold` or `Descend` brakes first and then holds where it stopped
    /// (changing only the descent speed keeps the point).
    pub fn set_target(&mut self, target: Target) {
        if std::mem::discriminant(&target) != std::mem::discriminant(&self.target) {
            self.hold_point_ned_m = None;
        }
        self.target = target;
    }

    /// Heading to turn to (radians from north, clockwise); `None` lets a vehicle flying to a
    /// point face where it goes.
    pub fn set_yaw_target(&mut self, yaw_rad: Option<f64>) {
        self.yaw_target_rad = yaw_rad.filter(|y| y.is_finite());
    }

    /// Mean wind, blowing *from* `from_deg` (meteorological convention, like `SIM_WIND_DIR`).
    pub fn set_wind(&mut self, speed_m_s: f64, from_deg: f64) {
        let to_rad = (from_deg + 180.0).to_radians();
        let speed_m_s = if speed_m_s.is_finite() {
            speed_m_s.max(0.0)
        } else {
            0.0
        };
        self.wind_ned_m_s = Vector3::new(speed_m_s * to_rad.cos(), speed_m_s * to_rad.sin(), 0.0);
    }

    /// Gusts with this standard deviation (m/s); 0 is a steady wind.
    pub fn set_turbulence(&mut self, sigma_m_s: f64) {
        self.turbulence_m_s = if sigma_m_s.is_finite() {
            sigma_m_s.max(0.0)
        } else {
            0.0
        };
    }

    /// How the wind weakens near the ground.
    pub fn set_wind_profile(&mut self, profile: WindProfile) {
        self.wind_profile = profile;
    }

    /// The mean wind where the vehicle is (the configured wind scaled by the profile).
    pub fn wind_here_ned_m_s(&self) -> Vector3<f64> {
        let full = self.wind_ned_m_s.norm();
        if full <= 0.0 {
            return Vector3::zeros();
        }
        let here = self.wind_profile.speed_at(full, self.altitude_m());
        self.wind_ned_m_s * (here / full)
    }

    /// Share of the wind the position controller cancels (1 = all of it, healthy).
    pub fn set_wind_compensation(&mut self, share: f64) {
        self.wind_compensation = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            1.0
        };
    }

    pub fn battery(&self) -> &Battery {
        &self.battery
    }

    /// The pack, to configure (cells, capacity) or to set what has been used.
    pub fn battery_mut(&mut self) -> &mut Battery {
        &mut self.battery
    }

    pub fn set_battery_voltage_override(&mut self, voltage_v: Option<f64>) {
        self.battery.voltage_override_v = voltage_v.filter(|v| v.is_finite() && *v >= 0.0);
    }

    pub fn position_ned_m(&self) -> Vector3<f64> {
        self.position_ned_m
    }

    /// Ground velocity.
    pub fn velocity_ned_m_s(&self) -> Vector3<f64> {
        self.velocity_control_ned_m_s + self.drift_ned_m_s
    }

    pub fn altitude_m(&self) -> f64 {
        -self.position_ned_m.z
    }

    pub fn yaw_rad(&self) -> f64 {
        self.yaw_rad
    }

    pub fn yaw_rate_rad_s(&self) -> f64 {
        self.yaw_rate_rad_s
    }

    /// Roll and pitch (radians) a multicopter needs for the commanded acceleration, leaning
    /// into the wind it compensates.
    pub fn roll_pitch_rad(&self) -> (f64, f64) {
        if self.on_ground() {
            return (0.0, 0.0);
        }
        let lean = self.accel_command_ned_m_s2
            - (self.wind_here_ned_m_s() + self.gust_ned_m_s) * (0.2 * self.wind_compensation);
        let (sin, cos) = self.yaw_rad.sin_cos();
        let forward = lean.x * cos + lean.y * sin;
        let right = -lean.x * sin + lean.y * cos;
        (right.atan2(GRAVITY_M_S2), -forward.atan2(GRAVITY_M_S2))
    }

    /// Commanded acceleration (NED).
    pub fn accel_ned_m_s2(&self) -> Vector3<f64> {
        self.accel_command_ned_m_s2
    }

    /// Resting on the ground (not climbing away from it).
    pub fn on_ground(&self) -> bool {
        self.position_ned_m.z >= -1e-3 && self.velocity_control_ned_m_s.z >= -1e-3
    }

    /// The vertical speed of the last touchdown, taken (reported once).
    pub fn take_touchdown_speed_m_s(&mut self) -> Option<f64> {
        self.touchdown_speed_m_s.take()
    }

    /// Distance from the vehicle to a point, horizontally.
    pub fn horizontal_distance_m(&self, ned_m: &Vector3<f64>) -> f64 {
        (ned_m - self.position_ned_m).xy().norm()
    }

    /// Advances virtual time by `dt_s` seconds.
    pub fn step(&mut self, dt_s: f64) {
        if !(dt_s.is_finite() && dt_s > 0.0) {
            return;
        }
        self.step_wind(dt_s);
        let motors_on = !matches!(self.target, Target::MotorsOff);
        if motors_on {
            self.step_controller(dt_s);
        } else {
            self.accel_command_ned_m_s2 = Vector3::zeros();
            if !self.on_ground() {
                let v = &mut self.velocity_control_ned_m_s;
                v.z = (v.z + GRAVITY_M_S2 * dt_s).min(TERMINAL_SPEED_M_S);
                // Without thrust nothing holds the vehicle against the wind.
                let decay = (-0.5 * dt_s).exp();
                v.x *= decay;
                v.y *= decay;
            }
        }
        let on_ground_before = self.on_ground();
        self.drift_ned_m_s = if on_ground_before {
            Vector3::zeros()
        } else {
            let share = if motors_on {
                1.0 - self.wind_compensation
            } else {
                1.0
            };
            (self.wind_here_ned_m_s() + self.gust_ned_m_s) * share
        };
        self.position_ned_m += self.velocity_ned_m_s() * dt_s;
        if self.position_ned_m.z >= 0.0 {
            // Ground contact: the ground stops the fall and friction stops the slide.
            self.position_ned_m.z = 0.0;
            if self.velocity_control_ned_m_s.z > 0.0 {
                if !on_ground_before {
                    self.touchdown_speed_m_s = Some(self.velocity_control_ned_m_s.z);
                }
                self.velocity_control_ned_m_s.z = 0.0;
            }
            if self.velocity_control_ned_m_s.z >= 0.0 {
                self.velocity_control_ned_m_s.x = 0.0;
                self.velocity_control_ned_m_s.y = 0.0;
                self.drift_ned_m_s = Vector3::zeros();
            }
        }
        self.step_yaw(dt_s);
        self.step_battery(dt_s, motors_on);
    }

    fn step_wind(&mut self, dt_s: f64) {
        if self.turbulence_m_s <= 0.0 {
            self.gust_ned_m_s = Vector3::zeros();
            return;
        }
        let sigma = self.turbulence_m_s;
        let decay = dt_s / GUST_TIME_CONSTANT_S;
        let kick = sigma * (2.0 * decay).sqrt();
        let noise = Vector3::new(self.rng.next_gaussian(), self.rng.next_gaussian(), 0.0);
        self.gust_ned_m_s += -self.gust_ned_m_s * decay + noise * kick;
    }

    fn step_controller(&mut self, dt_s: f64) {
        let position = self.position_ned_m;
        let velocity = self.velocity_ned_m_s();
        let demand = match self.target {
            Target::MotorsOff | Target::GroundIdle => Vector3::zeros(),
            Target::Velocity { ned_m_s } => ned_m_s,
            Target::Position { ned_m } => self.velocity_to(position, ned_m),
            Target::Hold => match self.hold_point_ned_m {
                Some(point) => self.velocity_to(position, point),
                None => {
                    if velocity.xy().norm() < STOPPED_SPEED_M_S
                        && velocity.z.abs() < STOPPED_SPEED_M_S
                    {
                        self.hold_point_ned_m = Some(position);
                    }
                    Vector3::zeros()
                }
            },
            Target::Descend { speed_m_s } => {
                let horizontal = match self.hold_point_ned_m {
                    Some(point) => self.velocity_to(position, point),
                    None => {
                        if velocity.xy().norm() < STOPPED_SPEED_M_S {
                            self.hold_point_ned_m = Some(position);
                        }
                        Vector3::zeros()
                    }
                };
                Vector3::new(horizontal.x, horizontal.y, speed_m_s.abs())
            }
        };
        let demand = self.clamp_velocity(demand);
        if matches!(self.target, Target::GroundIdle) && self.on_ground() {
            self.velocity_control_ned_m_s = Vector3::zeros();
            self.accel_command_ned_m_s2 = Vector3::zeros();
            return;
        }
        let mut accel = (demand - self.velocity_control_ned_m_s) * VELOCITY_GAIN_PER_S;
        let horizontal = accel.xy();
        let norm = horizontal.norm();
        if norm > self.limits.accel_horizontal_m_s2_max {
            let scaled = horizontal * (self.limits.accel_horizontal_m_s2_max / norm);
            accel.x = scaled.x;
            accel.y = scaled.y;
        }
        let vertical_max = self.limits.accel_vertical_m_s2_max;
        accel.z = accel.z.clamp(-vertical_max, vertical_max);
        // Do not overshoot the demand within one step.
        let next = self.velocity_control_ned_m_s + accel * dt_s;
        let overshoot = |before: f64, after: f64, want: f64| {
            if (before - want) * (after - want) < 0.0 {
                want
            } else {
                after
            }
        };
        self.velocity_control_ned_m_s = Vector3::new(
            overshoot(self.velocity_control_ned_m_s.x, next.x, demand.x),
            overshoot(self.velocity_control_ned_m_s.y, next.y, demand.y),
            overshoot(self.velocity_control_ned_m_s.z, next.z, demand.z),
        );
        self.accel_command_ned_m_s2 = accel;
    }

    /// Square-root controller: proportional near the point, never faster than the vehicle can
    /// still stop from.
    fn velocity_to(&self, from: Vector3<f64>, to: Vector3<f64>) -> Vector3<f64> {
        let error = to - from;
        // Plan with half the acceleration: the velocity loop lags, and a stop must not overshoot.
        let shape = |distance: f64, accel: f64| {
            (POSITION_GAIN_PER_S * distance).min((accel * distance).sqrt())
        };
        let horizontal = error.xy();
        let distance_h = horizontal.norm();
        let speed_h = shape(distance_h, self.limits.accel_horizontal_m_s2_max);
        let h = if distance_h > 1e-9 {
            horizontal * (speed_h / distance_h)
        } else {
            Vector2::zeros()
        };
        let speed_v = shape(error.z.abs(), self.limits.accel_vertical_m_s2_max);
        Vector3::new(h.x, h.y, speed_v.copysign(error.z))
    }

    fn clamp_velocity(&self, mut v: Vector3<f64>) -> Vector3<f64> {
        if !(v.x.is_finite() && v.y.is_finite() && v.z.is_finite()) {
            return Vector3::zeros();
        }
        let horizontal = v.xy().norm();
        let max = self.limits.speed_horizontal_m_s_max;
        if horizontal > max {
            v.x *= max / horizontal;
            v.y *= max / horizontal;
        }
        v.z = v.z.clamp(
            -self.limits.speed_up_m_s_max,
            self.limits.speed_down_m_s_max,
        );
        v
    }

    fn step_yaw(&mut self, dt_s: f64) {
        let wanted = self.yaw_target_rad.or_else(|| match self.target {
            Target::Position { ned_m }
                if self.horizontal_distance_m(&ned_m) > FACE_TARGET_DISTANCE_M =>
            {
                let d = ned_m - self.position_ned_m;
                Some(d.y.atan2(d.x))
            }
            _ => None,
        });
        let motors_on = !matches!(self.target, Target::MotorsOff | Target::GroundIdle);
        match wanted {
            Some(yaw) if motors_on && !self.on_ground() => {
                let error = wrap_pi(yaw - self.yaw_rad);
                let max_step = self.limits.yaw_rate_rad_s_max * dt_s;
                let step = error.clamp(-max_step, max_step);
                self.yaw_rad = wrap_pi(self.yaw_rad + step);
                self.yaw_rate_rad_s = step / dt_s;
            }
            _ => self.yaw_rate_rad_s = 0.0,
        }
    }

    fn step_battery(&mut self, dt_s: f64, motors_on: bool) {
        let current_a = if !motors_on {
            AVIONICS_CURRENT_A
        } else if self.on_ground() {
            IDLE_CURRENT_A
        } else {
            // Thrust carries gravity minus the commanded vertical acceleration (NED: down +)
            // plus the horizontal acceleration.
            let a = self.accel_command_ned_m_s2;
            let thrust = Vector3::new(a.x, a.y, GRAVITY_M_S2 - a.z).norm() / GRAVITY_M_S2;
            AVIONICS_CURRENT_A + HOVER_CURRENT_A * thrust
        };
        self.battery.current_a = current_a;
        self.battery.consumed_mah += current_a * dt_s / 3.6;
    }
}

/// An angle in (-π, π].
pub fn wrap_pi(angle_rad: f64) -> f64 {
    let wrapped = angle_rad.rem_euclid(std::f64::consts::TAU);
    if wrapped > std::f64::consts::PI {
        wrapped - std::f64::consts::TAU
    } else {
        wrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DT_S: f64 = 0.02;

    fn run(physics: &mut Physics, seconds: f64) {
        for _ in 0..(seconds / DT_S).round() as usize {
            physics.step(DT_S);
        }
    }

    #[test]
    fn splitmix_is_deterministic_and_uniform_enough() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SplitMix64::new(43).next_u64(), xs[0]);
        let mut r = SplitMix64::new(7);
        let mean = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn geo_offsets_round_trip() {
        let home = GeoPoint {
            lat_deg: 47.397742,
            lon_deg: 8.545594,
            alt_amsl_m: 488.0,
        };
        let ned = Vector3::new(120.0, -45.0, -30.0);
        let p = home.offset_by(&ned);
        assert!((p.alt_amsl_m - 518.0).abs() < 1e-9);
        assert!(p.lat_deg > home.lat_deg && p.lon_deg < home.lon_deg);
        let back = home.ned_to(&p);
        assert!((back - ned).norm() < 1e-6, "{back:?}");
    }

    #[test]
    fn climbs_within_the_vertical_speed_limit_and_stops_at_the_point() {
        let mut p = Physics::new(1);
        p.set_target(Target::Position {
            ned_m: Vector3::new(0.0, 0.0, -10.0),
        });
        let mut max_climb_m_s: f64 = 0.0;
        for _ in 0..(15.0 / DT_S) as usize {
            p.step(DT_S);
            max_climb_m_s = max_climb_m_s.max(-p.velocity_ned_m_s().z);
        }
        assert!(max_climb_m_s <= 2.5 + 1e-9, "climb {max_climb_m_s}");
        assert!(
            (p.altitude_m() - 10.0).abs() < 0.1,
            "alt {}",
            p.altitude_m()
        );
        assert!(p.altitude_m() < 10.05, "no overshoot");
    }

    #[test]
    fn flies_to_a_point_within_speed_and_acceleration_limits() {
        let mut p = Physics::new(1);
        p.set_target(Target::Position {
            ned_m: Vector3::new(0.0, 0.0, -10.0),
        });
        run(&mut p, 10.0);
        let goal = Vector3::new(100.0, 50.0, -20.0);
        p.set_target(Target::Position { ned_m: goal });
        let mut speed_max: f64 = 0.0;
        let mut previous = p.velocity_ned_m_s();
        for _ in 0..(40.0 / DT_S) as usize {
            p.step(DT_S);
            let v = p.velocity_ned_m_s();
            speed_max = speed_max.max(v.xy().norm());
            assert!((v - previous).xy().norm() / DT_S <= 2.5 + 1e-6);
            previous = v;
        }
        assert!(speed_max <= 10.0 + 1e-9 && speed_max > 9.0, "{speed_max}");
        assert!((p.position_ned_m() - goal).norm() < 0.2);
        // It turned to face the goal on the way.
        let bearing = 50f64.atan2(100.0);
        assert!((p.yaw_rad() - bearing).abs() < 0.05, "yaw {}", p.yaw_rad());
    }

    #[test]
    fn hold_brakes_and_stays() {
        let mut p = Physics::new(1);
        p.set_target(Target::Velocity {
            ned_m_s: Vector3::new(8.0, 0.0, -1.0),
        });
        run(&mut p, 8.0);
        p.set_target(Target::Hold);
        run(&mut p, 6.0);
        let stopped = p.position_ned_m();
        run(&mut p, 10.0);
        assert!((p.position_ned_m() - stopped).norm() < 0.05);
        assert!(p.velocity_ned_m_s().norm() < 0.01);
    }

    #[test]
    fn descend_touches_down_and_motors_off_falls() {
        let mut p = Physics::new(1);
        p.set_target(Target::Position {
            ned_m: Vector3::new(0.0, 0.0, -5.0),
        });
        run(&mut p, 8.0);
        p.set_target(Target::Descend { speed_m_s: 0.5 });
        run(&mut p, 12.0);
        assert!(p.on_ground());
        let speed = p.take_touchdown_speed_m_s().expect("touchdown");
        assert!((speed - 0.5).abs() < 0.05, "{speed}");

        p.set_target(Target::Position {
            ned_m: Vector3::new(0.0, 0.0, -20.0),
        });
        run(&mut p, 15.0);
        p.set_target(Target::MotorsOff);
        run(&mut p, 1.0);
        assert!(p.velocity_ned_m_s().z > 9.0, "falling");
        run(&mut p, 5.0);
        assert!(p.on_ground());
        assert!(p.take_touchdown_speed_m_s().unwrap() > 15.0);
    }

    #[test]
    fn uncompensated_wind_pushes_the_vehicle_off_its_point() {
        let hover = |compensation: f64| {
            let mut p = Physics::new(9);
            p.set_target(Target::Position {
                ned_m: Vector3::new(0.0, 0.0, -10.0),
            });
            run(&mut p, 8.0);
            p.set_wind(8.0, 270.0); // from the west: pushes east
            p.set_wind_compensation(compensation);
            run(&mut p, 30.0);
            p.position_ned_m()
        };
        let healthy = hover(1.0);
        assert!(healthy.xy().norm() < 0.01, "{healthy:?}");
        let drifted = hover(0.5);
        assert!(drifted.y > 2.0, "{drifted:?}");
    }

    #[test]
    fn battery_drains_with_thrust_and_sags_under_load() {
        let mut p = Physics::new(1);
        let full = p.battery().voltage_v();
        assert!((full - 16.8).abs() < 0.05);
        p.set_target(Target::Position {
            ned_m: Vector3::new(0.0, 0.0, -10.0),
        });
        run(&mut p, 60.0);
        let b = p.battery();
        assert!(b.current_a > 15.0);
        assert!(
            b.consumed_mah > 250.0 && b.consumed_mah < 400.0,
            "{}",
            b.consumed_mah
        );
        assert!(b.voltage_v() < b.resting_voltage_v() - 0.2);
        p.set_battery_voltage_override(Some(13.4));
        assert!(p.battery().remaining_pct() < 10.0);
    }

    #[test]
    fn wind_weakens_near_the_ground_as_sitl_scales_it() {
        // AP_HAL_SITL/SITL_State.cpp, SIM_WIND_T 0 (WIND_TYPE_SQRT): below SIM_WIND_T_ALT
        // (60 m) the speed is multiplied by sqrt(altitude / 60); 30 m/s at 6 m is about 9.5.
        let sqrt = WindProfile::SquareRoot {
            full_altitude_m: 60.0,
        };
        assert!((sqrt.speed_at(30.0, 6.0) - 9.487).abs() < 0.01);
        assert_eq!(sqrt.speed_at(30.0, 60.0), 30.0);
        assert_eq!(sqrt.speed_at(30.0, 90.0), 30.0);
        assert_eq!(sqrt.speed_at(30.0, -2.0), 0.0);
        // SIM_WIND_T 1: no limit; 2: linear, never negative.
        assert_eq!(WindProfile::Uniform.speed_at(30.0, 6.0), 30.0);
        let linear = WindProfile::Linear {
            full_altitude_m: 60.0,
            coefficient_per_m: 0.01,
        };
        assert!((linear.speed_at(10.0, 10.0) - 9.5).abs() < 1e-9);
        assert_eq!(linear.speed_at(0.1, 0.0), 0.0);

        // A hovering vehicle drifts with the wind where it is, not the configured one.
        let drift_at = |altitude_m: f64| {
            let mut p = Physics::new(9);
            p.set_wind_profile(sqrt);
            p.set_target(Target::Position {
                ned_m: Vector3::new(0.0, 0.0, -altitude_m),
            });
            run(&mut p, 40.0);
            p.set_wind(20.0, 270.0);
            p.set_wind_compensation(0.0);
            p.set_target(Target::Hold);
            run(&mut p, 0.1);
            p.wind_here_ned_m_s().norm()
        };
        assert!((drift_at(15.0) - 10.0).abs() < 0.05, "{}", drift_at(15.0));
        assert!((drift_at(60.0) - 20.0).abs() < 0.05);
    }

    #[test]
    fn without_a_capacity_the_voltage_stays_where_it_is_set() {
        // SITL's default quad frame (SIM_Frame.h battCapacityAh 0, SIM_Battery.cpp): the
        // voltage is SIM_BATT_VOLTAGE whatever is consumed; only the mAh count moves.
        let mut p = Physics::new(1);
        p.battery_mut().cells = 3.0;
        p.battery_mut().capacity_mah = 0.0;
        p.set_battery_voltage_override(Some(12.6));
        p.set_target(Target::Position {
            ned_m: Vector3::new(0.0, 0.0, -10.0),
        });
        run(&mut p, 60.0);
        assert!(p.battery().consumed_mah > 250.0);
        assert_eq!(p.battery().voltage_v(), 12.6);
    }

    #[test]
    fn seeded_gusts_are_deterministic() {
        let fly = |seed| {
            let mut p = Physics::new(seed);
            p.set_target(Target::Position {
                ned_m: Vector3::new(0.0, 0.0, -10.0),
            });
            p.set_wind(6.0, 90.0);
            p.set_turbulence(1.5);
            p.set_wind_compensation(0.5);
            run(&mut p, 20.0);
            p.position_ned_m()
        };
        assert_eq!(fly(3), fly(3));
        assert_ne!(fly(3), fly(4));
    }

    #[test]
    fn wrap_pi_stays_in_range() {
        for a in [-10.0, -3.2, 0.0, 3.2, 7.0] {
            let w = wrap_pi(a);
            assert!(w > -std::f64::consts::PI - 1e-12 && w <= std::f64::consts::PI);
            assert!(((a - w) / std::f64::consts::TAU).fract().abs() < 1e-9);
        }
    }
}
