//! The hardware-in-the-loop rig (issue 10): scripted scenarios with injected faults against
//! the simulator, SITL or a bench autopilot, judged from what actually crossed the wire.
//!
//! - `wire`: the sans-IO MAVLink frame splitter and the shared, bounded wire log.
//! - `relay`: the serial relay (a pty for the daemon, an endpoint for the autopilot) that
//!   stamps every frame and cuts, unplugs, drops, corrupts or delays the line.
//! - `proxy`: the TCP proxy between the daemon and the MQTT broker that partitions,
//!   delays or drops the ground link.
//! - `scenario`: the scenario files (TOML), parsed and validated before anything starts.
//! - `truth`: the vehicle as the wire shows it (sans-IO).
//! - `client`: the one raw MCP client (over MQTT or stdio), used by the rig (one session
//!   per principal), the benchmarks and the demo.
//! - `bench`: the benchmark harnesses' identities, discovery, sessions and bare-MQTT echo.
//! - `sitl`: `--sitl-command`, a fresh SITL per scenario from the user's command line.
//! - `runner`: builds the rig for each scenario, runs the steps, judges the checks.
//! - `report`: the human summary and JUnit XML (sans-IO).
//! - `cmd`: `flight-companion hil run`.

pub mod bench;
pub mod client;
pub mod cmd;
pub mod proxy;
pub mod relay;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sitl;
pub mod truth;
pub mod wire;
