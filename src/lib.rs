//! flight-companion: the one trusted gate between the ground and the autopilot.
//!
//! See `ARCHITECTURE.md` for the code map. Cores (`vehicle`, `link::frame`, `link::health`,
//! `sim::autopilot`, `mcp::session`) are sans-IO state machines that take `now` as an
//! argument; shells (`link::transport`, `daemon`, `sim::shell`, `mcp::mqtt`) do the IO.

// The sans-IO cores live in the core crate; every old path keeps working.
pub use flight_companion_core::{
    backoff, config, geodesy, health, refusal, role, safety, status, supervisor, vehicle, watchdog,
};

pub mod audit;
pub mod auth;
pub mod bridge;
pub mod camera;
pub mod cert;
pub mod cli;
pub mod clock;
pub mod control;
pub mod daemon;
// `demo` drives the whole chain with the rig's client; `dev-setup` writes a trial setup.
#[cfg(feature = "hil")]
pub mod demo;
#[cfg(feature = "dev-setup")]
pub mod dev_setup;
pub mod estop;
pub mod flight;
#[cfg(test)]
mod function_length;
// The fuzz targets include the rig's scenario parser.
#[cfg(feature = "hil")]
pub mod fuzz;
pub mod gcs;
// The ground bridge is a crate of its own (editing it does not recompile the daemon); every
// old path (`ground::config::GroundConfig`, ...) keeps working.
pub use flight_companion_ground as ground;
#[cfg(feature = "hil")]
pub mod hil;
pub mod last_home;
pub mod link;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod signing_tool;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wake;

/// The version and the git commit this binary was built from (the core crate's, which the
/// status report names; both packages share the workspace's version and commit rule).
pub use flight_companion_core::VERSION;

/// `--version`: the version, the commit and the optional parts compiled in (`sim`, `hil`,
/// `dev-setup`; the deployed package has none of them), so a binary says what it can do.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FC_GIT_COMMIT"),
    ")\nfeatures: ",
    env!("FC_FEATURES")
);

#[cfg(test)]
mod status_golden_tests;
