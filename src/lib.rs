//! flight-companion: the one trusted gate between the ground and the autopilot.
//!
//! See `ARCHITECTURE.md` for the code map. Cores (`vehicle`, `link::frame`, `link::health`,
//! `sim::autopilot`, `mcp::session`) are sans-IO state machines that take `now` as an
//! argument; shells (`link::transport`, `daemon`, `sim::shell`, `mcp::mqtt`) do the IO.

pub mod audit;
pub mod auth;
pub mod backoff;
pub mod bridge;
pub mod camera;
pub mod cert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod dev_setup;
pub mod estop;
pub mod flight;
#[cfg(test)]
mod function_length;
pub mod fuzz;
pub mod gcs;
pub mod geodesy;
pub mod ground;
pub mod health;
pub mod hil;
pub mod last_home;
pub mod link;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod refusal;
pub mod role;
pub mod safety;
pub mod signing_tool;
pub mod sim;
pub mod status;
pub mod supervisor;
pub mod vehicle;
pub mod watchdog;

/// The version and the git commit this binary was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FC_GIT_COMMIT"), ")");

#[cfg(test)]
mod status_golden_tests;
