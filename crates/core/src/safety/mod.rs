//! Onboard safety: the envelope every motion command is checked against, and the whitelist
//! every MAVLink message passes before it reaches the autopilot. Both are sans-IO cores.
//!
//! - `geo`: the local plane around home, polygons, circles, distances (PolyCARP semantics).
//! - `envelope`: `Envelope::new`, `check_goal`, `check_action`, `monitor`, `tighten`, `summary`.
//! - `fence_mirror`: the envelope as the autopilot's own fence (plan per dialect, read-back comparison).
//! - `param_allow`: `[parameters]`, the writable parameters and their bounds.
//! - `whitelist`: `Whitelist::check`, deny by default.
//! - `tightening`: an ADMIN's run-time change of the envelope (`set_envelope`): which keys,
//!   applied and checked before `tighten` judges it.

pub mod envelope;
pub mod envelope_config;
pub mod fence_mirror;
pub mod geo;
pub mod param_allow;
pub mod preflight;
pub mod site;
pub mod tightening;
pub mod whitelist;

/// The one view of the vehicle every check here decides on.
pub use crate::vehicle::view::{Landed, VehicleView};
pub use envelope::{
    ActionKind, Envelope, EnvelopeError, EnvelopeSummary, FixType, GoalRequest, MonitorVerdict,
    Verdict, tighten,
};
pub use geo::{GeoPoint, GeoPosition};
pub use whitelist::{Violation, Whitelist};
