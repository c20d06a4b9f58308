//! The firmware bridge's sans-IO parts: the daemon's side of the protocol with its safety
//! microcontroller (`core`: [`BridgeLink`]) and the bridge's health in the status report
//! (`status`: [`BridgeStatus`]). The serial IO task and `bridge-sim` are the daemon's
//! (`flight_companion::bridge`).
//!
//! The wire format is the crate `fwbridge-protocol` (`firmware-bridge/PROTOCOL.md`).

pub mod core;
pub mod status;

pub use self::core::{BridgeEvent, BridgeInput, BridgeLink, BridgeLinkOptions};
pub use self::status::{BridgeState, BridgeStatus};

/// The daemon's version as the bridge hello carries it (the workspace's version, which the
/// daemon's package shares).
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
