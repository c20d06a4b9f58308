//! Flight actions and the executor that carries them out (sans-IO).
//!
//! - `action.rs`: what a client may ask (`Action`), its bounds, the `Goal` the envelope
//!   checks, and how an action ends (`Outcome`, `JobEnd`, `ProgressUpdate`).
//! - `executor.rs`: `Executor`, which turns an action into MAVLink for ArduPilot or PX4
//!   and confirms every step by what the vehicle reports.
//! - geometry (offsets, distances, headings) is `crate::geodesy`, the one Earth model.

pub use flight_companion_core::flight::*;

// These tests fly the daemon's Core against the simulator, which is not the core crate's.
#[cfg(all(test, feature = "sim"))]
mod tests;
