//! The simulated autopilot (`flight-companion sim`).
//!
//! The sans-IO simulator is the crate `flight_companion_sim` (`crates/sim`: `physics`,
//! `autopilot`, `mission`, `fence`, `signing`), re-exported here so `crate::sim::autopilot`
//! and the others keep their paths. What needs this package's shells stays here:
//! - `args`: its command line (`SimArgs`).
//! - `shell`: serves it over real MAVLink bytes on one or more endpoints
//!   (`link::transport`).

pub use flight_companion_sim::*;

pub mod args;
pub mod shell;
