//! The emergency stop's sans-IO parts: the stop-and-failsafe machine (`core`), its
//! requests and answers (`request`), stop commands as MAVLink messages (`wire`) and the
//! local socket's status (`local_status`). The channel into the daemon loop and the socket
//! itself are the daemon's (`flight_companion::estop`).

pub mod core;
pub mod local_status;
pub mod request;
pub mod wire;

pub use self::core::{
    EmergencyStop, Failsafe, GroundLossAction, HoldMode, KillAction, KillReply, Rung, Source,
    StopCommand, StopEvent, StopOptions, StopStatus, Trigger,
};
pub use self::request::{GroundState, StopAck, StopAsk};
