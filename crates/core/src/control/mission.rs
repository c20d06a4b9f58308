//! The mission tools' requests to the decision loop and its answers (pure data): each is
//! one transfer of the mission protocol, answered when it ends. The channel that carries
//! them is the daemon's (`flight_companion::control::mission`).

use crate::flight::mission::{MissionEnd, MissionStep, Route};
use crate::role::Caller;

/// What a mission tool asks.
#[derive(Debug, Clone)]
pub enum MissionAsk {
    /// Build the items for the autopilot heard, check every point and leg from the vehicle,
    /// and upload them only if all pass.
    Upload {
        steps: Vec<MissionStep>,
        end: MissionEnd,
        caller: Caller,
    },
    /// Download the autopilot's mission and check it from the vehicle, from item
    /// `from_item` on (`None`: from the vehicle's current item, else 0).
    Download {
        from_item: Option<u16>,
        caller: Caller,
    },
    /// Make `seq` the current item (start from the first).
    SetCurrent { seq: u16, caller: Caller },
    /// Remove the mission from the autopilot.
    Clear { caller: Caller },
}

/// The loop's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum MissionAnswer {
    /// The autopilot took `items` items flying `route`.
    Uploaded {
        items: u16,
        route: Route,
    },
    /// The autopilot's mission: its route (or why the daemon cannot judge it), the envelope's
    /// verdict from the vehicle (`Ok` when every leg passes), the current item if known.
    Downloaded {
        items: u16,
        route: Result<Route, String>,
        verdict: Result<(), String>,
        current: Option<u16>,
    },
    CurrentSet {
        seq: u16,
    },
    Cleared,
    /// Refused before anything was sent, or the transfer failed: why, and what to do.
    Refused(String),
}
