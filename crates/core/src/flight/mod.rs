//! Flight actions and the executor that carries them out (sans-IO).
//!
//! - `action.rs`: what a client may ask (`Action`), its bounds, the `Goal` the envelope
//!   checks, and how an action ends (`Outcome`, `JobEnd`, `ProgressUpdate`).
//! - `executor.rs`: `Executor`, which turns an action into MAVLink for ArduPilot or PX4
//!   and confirms every step by what the vehicle reports.
//! - geometry (offsets, distances, headings) is `crate::geodesy`, the one Earth model.

pub mod action;
pub mod executor;
pub mod speed;

pub use action::{Action, Goal, JobEnd, Outcome, ProgressUpdate};
pub use executor::{Executor, ExecutorEvent, ExecutorOptions, JobId, Plan};
pub mod mission;
pub mod survey;
