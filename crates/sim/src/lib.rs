//! The simulated autopilot (`flight-companion sim`), sans-IO on virtual time.
//!
//! - `physics`: point-mass kinematics (nalgebra), seeded, deterministic.
//! - `autopilot`: ArduCopter/PX4 behaviour seen from the outside (modes, arming,
//!   commands, telemetry streams, parameters, injected faults).
//! - `mission`: the mission, fence and rally lists and the vehicle's side of the mission protocol,
//!   as ArduCopter and PX4 run it; `autopilot/auto.rs` flies the mission in AUTO.
//! - `fence`: the fence list's polygons and circles as both autopilots enforce them.
//! - `signing`: MAVLink 2 signing as ArduPilot keeps it (the stored key, its rules).
//!
//! Its own crate so that it is compiled and tested without the daemon's library, and the
//! deployed daemon (built without the feature `sim`) does not carry it. It builds on
//! `flight_companion_core` (the dialect, signing, mission items, geodesy) and does no IO:
//! the root package's `sim::shell` serves it over real MAVLink bytes, and its command line is
//! the root package's `sim::args`. See the repository's `ARCHITECTURE.md`.

pub mod autopilot;
pub mod fence;
pub mod mission;
pub mod personality;
pub mod physics;
pub mod signing;
