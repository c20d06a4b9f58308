//! The parameter tools' requests to the decision loop (`get_parameter`, `list_parameters`,
//! `set_parameter`): reads are answered from the supervisor's cached table in the same turn;
//! a write is answered once the autopilot's `PARAM_VALUE` echo confirms it, or not.

use tokio::sync::oneshot;

// What is asked and answered is plain data the Core takes and returns: the core crate's.
pub use flight_companion_core::control::param::{FenceMirrorReport, ParamAnswer, ParamAsk};

/// Parameter requests waiting for the loop. Overflow policy: refused at once with "busy", as
/// envelope changes are (reads are answered in one turn, so a full queue is a burst).
pub const PARAM_REQUESTS: usize = 8;

/// One request with its reply.
#[derive(Debug)]
pub struct ParamRequest {
    pub ask: ParamAsk,
    pub reply: oneshot::Sender<ParamAnswer>,
}
