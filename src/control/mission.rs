//! The mission tools' requests to the decision loop (`upload_mission`, `get_mission`,
//! `clear_mission`, and what `start_mission` and `resume_mission` ask before they fly):
//! each is one transfer of the mission protocol, answered when it ends.
//! Checking against the envelope happens in the loop, with the vehicle of that turn: an
//! upload before anything is sent, a download as soon as it arrives.

use tokio::sync::{mpsc, oneshot};

use super::{BUSY_RETRY_MS, ControlClient, SubmitError};
// What is asked and answered is plain data the Core takes and returns: the core crate's.
pub use flight_companion_core::control::mission::{MissionAnswer, MissionAsk};

/// Mission requests waiting for the loop. Overflow policy: refused at once with "busy"; the
/// loop runs one transfer at a time and refuses a second while one runs.
pub const MISSION_REQUESTS: usize = 4;

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
            Ok(()) => self.queued(),
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
