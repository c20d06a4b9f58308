//! The MAVLink link to the autopilot.
//!
//! - `endpoint`: endpoint strings (pure).
//! - `frame`: sans-IO MAVLink 2/1 frame decoder and encoder with error counters.
//! - `health`: sans-IO link health (sequence gaps, loss %, heartbeat age).
//! - `event`: `LinkEvent`, what the shell reports (pure data).
//! - `transport`: the async shell that opens serial/UDP/TCP, reopens with backoff, and
//!   turns bytes into decoded frames.

pub mod endpoint;
pub mod event;
pub mod frame;
pub mod health;
pub mod transport;

pub use mavlink::MavHeader;
/// The dialect every part of the daemon speaks: ArduPilot's, which includes `common`.
pub use mavlink::dialects::ardupilotmega as dialect;
pub use mavlink::dialects::ardupilotmega::MavMessage;
