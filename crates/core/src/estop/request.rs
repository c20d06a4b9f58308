//! What the e-stop's triggers ask of the decision loop and what it answers, and the ground
//! link's state that its failsafes watch (pure data; the channels are `estop`'s).

use crate::role::Role;

use super::core::{StopStatus, Trigger};

/// What a request asks.
#[derive(Debug, Clone, PartialEq)]
pub enum StopAsk {
    Stop(Trigger),
    Reset {
        identity: String,
        role: Role,
    },
    /// The two-step kill: `code` is `None` the first time.
    Kill {
        trigger: Trigger,
        code: Option<u32>,
    },
}

/// The loop's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StopAck {
    pub ok: bool,
    /// One sentence for the caller.
    pub message: String,
    pub status: StopStatus,
}

/// The broker connection as the MCP shell sees it.
///
/// A change of `connected` wakes the decision loop; activity and the shell's stamps do not
/// (one wake-up per MCP message would turn the loop once per call): the loop reads it at
/// every turn, and a late read loses no precision because the state says when things came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroundState {
    pub connected: bool,
    /// When the last authenticated message from a ground client arrived.
    pub activity_at: Option<std::time::Instant>,
    /// When the MCP shell last stamped that it is serving (every
    /// [`GROUND_SERVING_STAMP_PERIOD`]); `None` before its first stamp. A shell that stops
    /// stamping (its runtime stalled) can no longer report the connection: the Core then
    /// takes the connection as lost ([`GROUND_SILENT_MAX`]).
    pub serving_at: Option<std::time::Instant>,
}

/// How often the MCP shell stamps [`GroundState::serving_at`].
pub const GROUND_SERVING_STAMP_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

/// A connected ground whose shell has not stamped for this long counts as a lost connection:
/// four stamps missed, so a busy moment of the shell's runtime is not taken for a stall.
pub const GROUND_SILENT_MAX: std::time::Duration = std::time::Duration::from_secs(2);
