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

// The sans-IO parts (framing, health, signing, pin, trust, events) are the core crate's;
// the shells that read files and sockets stay here.
pub use flight_companion_core::link::*;

pub mod keys;
pub mod transport;
