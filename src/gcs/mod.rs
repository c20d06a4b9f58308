//! Ground stations beside the daemon (issue 19): QGroundControl, Mission Planner or MAVProxy
//! share the autopilot link without a second way in.
//!
//! - `router`: the sans-IO core. Which endpoints an autopilot frame goes to (by target system
//!   and component, as mavlink-router routes), and what becomes of each frame a ground station
//!   sends: absorbed, forwarded to the autopilot, turned into a flight [`Action`] for the
//!   control path, or refused with what would be allowed.
//! - `tlog`: the telemetry log's record format (MAVProxy's `.tlog`).
//! - `shell`: the endpoints' links, the loop's side (`GcsLoop`), the telemetry log writer.
//!
//! Call order (all in the daemon's decision loop): `GcsLoop::from_autopilot` for every
//! `LinkEvent` of the autopilot link, after the supervisor has seen it; `GcsLoop::handle`
//! for every `GcsInput` (a frame or a connection change of an endpoint), which forwards,
//! answers, or hands a `ControlRequest` to the loop's `accept`, the MCP tools' own path.
//!
//! [`Action`]: crate::flight::Action

pub use flight_companion_core::gcs::router;
pub mod shell;
pub mod tlog;

pub use router::{Decision, EndpointCounters, Facts, Reply, Router};
pub use shell::{GcsInput, GcsLoop};

pub use flight_companion_core::gcs::ENDPOINTS_MAX;
