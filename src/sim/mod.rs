//! The simulated autopilot (`flight-companion sim`).
//!
//! - `physics`: sans-IO point-mass kinematics (nalgebra), seeded, deterministic.
//! - `autopilot`: sans-IO ArduCopter/PX4 behaviour seen from the outside (modes, arming,
//!   commands, telemetry streams, parameters, injected faults).
//! - `mission`: the mission, fence and rally lists and the vehicle's side of the mission protocol,
//!   as ArduCopter and PX4 run it; `autopilot/auto.rs` flies the mission in AUTO.
//! - `fence`: the fence list's polygons and circles as both autopilots enforce them.
//! - `args`: its command line (`SimArgs`).
//! - `shell`: serves it over real MAVLink bytes on one or more endpoints.
//! - `signing`: MAVLink 2 signing as ArduPilot keeps it (the stored key, its rules).

pub mod args;
pub mod autopilot;
pub mod fence;
pub mod mission;
pub mod physics;
pub mod shell;
pub mod signing;
