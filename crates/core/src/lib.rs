//! flight-companion's cores: the parts that decide, as sans-IO state machines that take
//! `now` as an argument and return what to send, with no tokio, no sockets and no TLS.
//!
//! The daemon's shells (`flight_companion`) turn the world into inputs for these and carry
//! out what they return; they re-export every module here at its old path
//! (`flight_companion::vehicle`, `flight_companion::link::frame`, ...). Cargo enforces the
//! rule: this crate's dependencies have no tokio, rumqttc or rustls (`tests/deps.rs`).
//! See the repository's `ARCHITECTURE.md`.

pub mod audit;
pub mod backoff;
pub mod bridge;
pub mod camera;
pub mod config;
pub mod control;
pub mod daemon;
pub mod escape;
pub mod estop;
pub mod flight;
pub mod gcs;
pub mod geodesy;
pub mod health;
pub mod link;
pub mod mcp;
pub mod refusal;
pub mod role;
pub mod safety;
pub mod status;
pub mod supervisor;
pub mod vehicle;
pub mod watchdog;

/// The version and the git commit this build is made from: the status report's
/// `daemon_version` (the workspace shares one version; `build.rs` finds the commit).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FC_GIT_COMMIT"), ")");
