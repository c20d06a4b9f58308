//! The audit log's sans-IO parts: the record types (`record`), the one place that decides
//! what is recorded of each source (`events`) and the log's status as the report shows it
//! (`status`). The writer thread, the files, checkpoints and the commands are the daemon's
//! (`flight_companion::audit`); it re-exports these at their old paths.

pub mod events;
pub mod record;
pub mod status;

pub use self::record::{Call, Event, Record};
pub use self::status::AuditStatus;
