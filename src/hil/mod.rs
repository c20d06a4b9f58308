//! The hardware-in-the-loop rig (issue 10): fault injectors between the daemon and its
//! peers, and the wire log that measures what actually crossed the wire.
//!
//! - `wire`: the sans-IO MAVLink frame splitter and the shared, bounded wire log.
//! - `relay`: the serial relay (a pty for the daemon, an endpoint for the autopilot) that
//!   stamps every frame and cuts, unplugs, drops, corrupts or delays the line.
//! - `proxy`: the TCP proxy between the daemon and the MQTT broker that partitions,
//!   delays or drops the ground link.

pub mod proxy;
pub mod relay;
pub mod wire;
