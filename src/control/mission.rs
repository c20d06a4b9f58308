//! The mission tools' requests to the decision loop (`upload_mission`, `get_mission`,
//! `clear_mission`, and what `start_mission` and `resume_mission` ask before they fly):
//! each is one transfer of the mission protocol, answered when it ends.
//! Checking against the envelope happens in the loop, with the vehicle of that turn: an
//! upload before anything is sent, a download as soon as it arrives.

use tokio::sync::{mpsc, oneshot};

use super::{BUSY_RETRY_MS, ControlClient, SubmitError};
use crate::flight::mission::{MissionEnd, MissionStep, Route};
use crate::role::Caller;

/// Mission requests waiting for the loop. Overflow policy: refused at once with "busy"; the
/// loop runs one transfer at a time and refuses a second while one runs.
pub const MISSION_REQUESTS: usize = 4;

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

/// One request with its reply.
#[derive(Debug)]
pub struct MissionRequest {
    pub ask: MissionAsk,
    pub reply: oneshot::Sender<MissionAnswer>,
}

impl ControlClient {
    /// Sends mission requests to the loop over `requests` (bounded by [`MISSION_REQUESTS`]).
    pub fn with_missions(mut self, requests: mpsc::Sender<MissionRequest>) -> Self {
        self.missions = Some(requests);
        self
    }

    /// Asks the loop for a mission transfer; a full queue is refused at once.
    pub async fn mission(&self, ask: MissionAsk) -> Result<MissionAnswer, String> {
        let Some(tx) = &self.missions else {
            return Err("this daemon serves no missions".into());
        };
        let (reply, answer) = oneshot::channel();
        match tx.try_send(MissionRequest { ask, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(format!(
                    "busy: {MISSION_REQUESTS} mission requests are waiting; retry in \
                     {BUSY_RETRY_MS} ms (nothing was sent)"
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(SubmitError::Closed.to_string());
            }
        }
        answer
            .await
            .map_err(|_| "the daemon stopped before answering".to_string())
    }
}
