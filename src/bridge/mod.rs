//! The firmware bridge: the daemon's link to its safety microcontroller (issue 9).
//!
//! - `core`: sans-IO [`BridgeLink`] (hello/version check, heartbeats both ways, e-stop
//!   events and their acknowledgements, health) → [`BridgeEvent`]s for the daemon loop
//!   (the core crate's).
//! - `shell.rs`: the serial IO task (tokio-serial), reopening with capped backoff.
//! - `sim.rs`: `flight-companion bridge-sim`, the MCU's own logic (`fwbridge-logic`) on the
//!   host, speaking the protocol over a serial device or pty.
//! - `status`: [`BridgeStatus`], the `bridge` field of `get_status` (the core crate's).
//!
//! The wire format is the crate `fwbridge-protocol` (`firmware-bridge/PROTOCOL.md`).

// The link and its status are sans-IO, the core crate's; the serial task and the
// simulated MCU stay here.
pub use flight_companion_core::bridge::{core, software_version, status};
pub mod shell;
#[cfg(feature = "sim")]
pub mod sim;

pub use self::core::{BridgeEvent, BridgeInput, BridgeLink, BridgeLinkOptions};
pub use self::status::{BridgeState, BridgeStatus};
