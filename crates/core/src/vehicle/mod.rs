//! Vehicle state and the command protocol: sans-IO cores.
//!
//! - `snapshot`: the plain-data view (serialised by `probe --json` and `get_status`).
//! - `modes`: ArduPilot and PX4 flight modes, decoded and encoded.
//! - `state`: `VehicleState`, fed every decoded message with `now`.
//! - `command`: `CommandProtocol`, COMMAND_LONG/INT with ACK matching, retries and timeouts.
//! - `param_table`: `ParamTable`, the whole parameter table (download, confirmed writes).
//! - `fence_sync`: the fence mirror's upload, read-back and comparison (issue 18).
//! - `mission`: `MissionProtocol`, the mission microservice (upload, download, clear, set current)
//!   for the mission, fence and rally lists, and `MissionProgress`.
//! - `view`: `VehicleView`, the typed facts every safety check decides on, and `Landed`.

pub mod command;
pub mod fence_sync;
pub mod mission;
pub mod modes;
pub mod param_table;
pub mod params;
pub mod snapshot;
pub mod state;
pub mod view;
