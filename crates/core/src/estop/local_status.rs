//! The local e-stop socket's state as the status shows it (pure data; the socket itself is
//! `local`'s).

/// Whether the local e-stop socket is there to use: in `get_status` (`local_estop`) and, when
/// it could not be bound, a health alert (`local_estop_unavailable`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct LocalEstopStatus {
    /// `listening`, `unavailable` (it could not be bound: see `error`) or `disabled`
    /// (`estop.socket_path = ""`).
    pub state: LocalEstopState,
    /// The socket's path, when one is configured or defaulted.
    pub socket_path: Option<String>,
    /// Why it is unavailable, and what to change.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocalEstopState {
    Listening,
    Unavailable,
    #[default]
    Disabled,
}
