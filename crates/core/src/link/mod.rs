//! The MAVLink link to the autopilot.
//!
//! - `endpoint`: endpoint strings (pure).
//! - `frame`: sans-IO MAVLink 2/1 frame decoder and encoder with error counters.
//! - `health`: sans-IO link health (sequence gaps, loss %, heartbeat age).
//! - `event`: `LinkEvent`, what the shell reports (pure data).
//! - `signing`: sans-IO MAVLink 2 signing (keys, timestamps, signing and checking frames).
//! - `pin`: sans-IO choice of the peer of a listening link (`udpin`, `tcpin`).
//! - `trust`: what a link refuses, its counters, and the budget for reporting refusals.
//! - `keys`: the signing key and timestamp files (shell).
//! - `transport`: the async shell that opens serial/UDP/TCP, reopens with backoff, and
//!   turns bytes into decoded frames.

pub mod endpoint;
pub mod event;
pub mod frame;
pub mod health;
pub mod pin;
pub mod signing;
pub mod trust;

pub use mavlink::MavHeader;
/// The dialect every part of the daemon speaks: ArduPilot's, which includes `common`.
pub use mavlink::dialects::ardupilotmega as dialect;
pub use mavlink::dialects::ardupilotmega::MavMessage;

/// True for a heartbeat of a flight controller: a real autopilot field, and not a ground
/// station, companion computer or peripheral (which carry `MAV_AUTOPILOT_INVALID` by
/// convention, but a buggy one might not). The vehicle state identifies the autopilot by it,
/// and a listening link pins its peer by it.
pub fn is_autopilot_heartbeat(heartbeat: &dialect::HEARTBEAT_DATA) -> bool {
    use dialect::MavType as T;
    heartbeat.autopilot != dialect::MavAutopilot::MAV_AUTOPILOT_INVALID
        && !matches!(
            heartbeat.mavtype,
            T::MAV_TYPE_GCS
                | T::MAV_TYPE_ONBOARD_CONTROLLER
                | T::MAV_TYPE_ANTENNA_TRACKER
                | T::MAV_TYPE_GIMBAL
                | T::MAV_TYPE_ADSB
                | T::MAV_TYPE_CAMERA
                | T::MAV_TYPE_CHARGING_STATION
                | T::MAV_TYPE_FLARM
                | T::MAV_TYPE_SERVO
                | T::MAV_TYPE_ODID
                | T::MAV_TYPE_BATTERY
                | T::MAV_TYPE_PARACHUTE
                | T::MAV_TYPE_LOG
                | T::MAV_TYPE_OSD
                | T::MAV_TYPE_IMU
                | T::MAV_TYPE_GPS
                | T::MAV_TYPE_WINCH
                | T::MAV_TYPE_ILLUMINATOR
                | T::MAV_TYPE_RADIO
                | T::MAV_TYPE_GRIPPER
        )
}
