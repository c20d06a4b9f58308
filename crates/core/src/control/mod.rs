//! What the tools ask the decision loop and what it answers (pure data): the flight
//! request's reply and the envelope view (`reply`), the parameter tools' (`param`) and the
//! mission tools' (`mission`) requests and answers. The channels that carry them, and the
//! client the tools call, are the daemon's (`flight_companion::control`).

pub mod mission;
pub mod param;
pub mod reply;

pub use self::reply::{ControlReply, EnvelopeView, VehicleSummary};
pub use crate::role::Caller;
