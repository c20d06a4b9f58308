//! The firmware bridge: the daemon's link to its safety microcontroller (issue 9).
//!
//! - `core.rs`: sans-IO [`BridgeLink`] (hello/version check, heartbeats both ways, e-stop
//!   events and their acknowledgements, health) → [`BridgeEvent`]s for the daemon loop.
//! - `shell.rs`: the serial IO task (tokio-serial), reopening with capped backoff.
//! - `sim.rs`: `flight-companion bridge-sim`, the MCU's own logic (`fwbridge-logic`) on the
//!   host, speaking the protocol over a serial device or pty.
//! - `status.rs`: [`BridgeStatus`], the `bridge` field of `get_status`.
//!
//! The wire format is the crate `fwbridge-protocol` (`firmware-bridge/PROTOCOL.md`).

pub mod core;
pub mod shell;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;

pub use self::core::{BridgeEvent, BridgeInput, BridgeLink, BridgeLinkOptions};
pub use self::status::{BridgeState, BridgeStatus};

/// The daemon's version as the bridge hello carries it.
pub fn software_version() -> [u16; 3] {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u16>().unwrap_or(0));
    [
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    ]
}
