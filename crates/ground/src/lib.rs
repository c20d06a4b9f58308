//! `flight-companion ground`: a stdio MCP server on the ground machine that forwards to one
//! drone over mutual-TLS MQTT 5, as an MCP-over-MQTT *client* (EMQX transport spec).
//!
//! Any ordinary MCP client (an IDE, an agent, the official SDKs) launches it as a subprocess
//! and speaks newline-delimited JSON-RPC on its stdin/stdout. Nothing but MCP JSON-RPC is
//! written to stdout; logs go to stderr.
//!
//! **Why raw forwarding, not rmcp, on the stdio side.** The bridge passes JSON-RPC messages
//! through unchanged (ids, `_meta`, progress tokens, unknown future fields) instead of
//! decoding them into an SDK's types and re-encoding them. That keeps it faithful to whatever
//! the drone and the client speak, needs no change when the drone gains a tool, and leaves the
//! bridge only the transport's own work: discovery, the initialize handshake (which it also
//! replays transparently after the drone comes back), the routing of capability-topic
//! notifications, and answering requests that can no longer be answered by the drone.
//! The stdio client's `initialize` is forwarded to the drone with its own parameters, and the
//! drone's result (capabilities, serverInfo, negotiated protocolVersion) is returned as is.
//!
//! - [`config`]: `ground.toml` → [`config::GroundConfig`].
//! - [`bridge`]: the sans-IO core (presence, session, routing, timeouts).
//! - [`fleet`]: fleet mode (`--fleet PATTERN`, `[fleet]`): every matching drone as one MCP
//!   server, one [`bridge::Bridge`] per drone.
//! - [`era`]: MCP 2026-07-28 (stateless) on the stdio side, in front of either core, detected
//!   from the client's first request.
//! - [`shell`]: the async shell (stdin/stdout, rumqttc, timers).
//! - [`console`]: the web console (fleet mode), a small HTTP server in the same process.
//!
//! A crate of its own (the daemon's package re-exports it as `flight_companion::ground`), so
//! that editing the bridge does not recompile the daemon and the daemon's library does not
//! carry it. It builds on the core crate (`config`, `mcp::transport`, the resource URIs) and
//! the MQTT crate (the broker connection); it cannot import the daemon, so what only the
//! daemon's package knows (the binary's version) is passed in by the CLI.

pub mod bridge;
pub mod config;
pub mod console;
pub mod era;
pub mod fleet;
pub mod shell;

use std::time::Instant;

use bridge::{Action, Bridge};
use fleet::Fleet;

/// A deciding core the shell drives: one drone ([`Bridge`]) or a fleet ([`Fleet`]), and the
/// 2026-07-28 adapter in front of either ([`era::EraAdapter`]); all take the same inputs and
/// return the same [`Action`]s.
pub trait GroundCore: Send {
    fn handle_connected(&mut self, now: Instant, filters: Option<Vec<String>>);
    fn handle_disconnected(&mut self, now: Instant);
    fn handle_taken_over(&mut self, now: Instant);
    fn handle_stdin_line(&mut self, now: Instant, line: &str);
    fn handle_mqtt_message(&mut self, now: Instant, topic: &str, payload: &[u8]);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_action(&mut self) -> Option<Action>;
    /// The counters, for the log at exit.
    fn summary(&self) -> String;
    /// Serves the web console from now on (fleet mode only; see [`Fleet::serve_console`]).
    fn serve_console(&mut self, _now: Instant) {}
    /// A web console request; answered by an [`Action::Console`] (see
    /// [`Fleet::handle_console_request`]). Only the fleet serves the console, which the
    /// configuration checks.
    fn handle_console_request(
        &mut self,
        _now: Instant,
        _token: u64,
        _method: &str,
        _params: serde_json::Value,
    ) {
    }
}

impl GroundCore for Bridge {
    fn handle_connected(&mut self, now: Instant, filters: Option<Vec<String>>) {
        Bridge::handle_connected(self, now, filters)
    }
    fn handle_disconnected(&mut self, now: Instant) {
        Bridge::handle_disconnected(self, now)
    }
    fn handle_taken_over(&mut self, _now: Instant) {
        Bridge::handle_taken_over(self)
    }
    fn handle_stdin_line(&mut self, now: Instant, line: &str) {
        Bridge::handle_stdin_line(self, now, line)
    }
    fn handle_mqtt_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        Bridge::handle_mqtt_message(self, now, topic, payload)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Bridge::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Bridge::poll_timeout(self)
    }
    fn poll_action(&mut self) -> Option<Action> {
        Bridge::poll_action(self)
    }
    fn summary(&self) -> String {
        let c = self.counters();
        format!(
            "{} stdin messages refused, {} MQTT messages dropped, {} requests timed out, {} failed while offline",
            c.stdin_refused, c.mqtt_dropped, c.requests_timed_out, c.requests_failed_offline
        )
    }
}

impl GroundCore for Fleet {
    fn handle_connected(&mut self, now: Instant, filters: Option<Vec<String>>) {
        Fleet::handle_connected(self, now, filters)
    }
    fn handle_disconnected(&mut self, now: Instant) {
        Fleet::handle_disconnected(self, now)
    }
    fn handle_taken_over(&mut self, now: Instant) {
        Fleet::handle_taken_over(self, now)
    }
    fn handle_stdin_line(&mut self, now: Instant, line: &str) {
        Fleet::handle_stdin_line(self, now, line)
    }
    fn handle_mqtt_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        Fleet::handle_mqtt_message(self, now, topic, payload)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Fleet::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Fleet::poll_timeout(self)
    }
    fn poll_action(&mut self) -> Option<Action> {
        Fleet::poll_action(self)
    }
    fn serve_console(&mut self, now: Instant) {
        Fleet::serve_console(self, now)
    }
    fn handle_console_request(
        &mut self,
        now: Instant,
        token: u64,
        method: &str,
        params: serde_json::Value,
    ) {
        Fleet::handle_console_request(self, now, token, method, params)
    }
    fn summary(&self) -> String {
        let c = self.counters();
        format!(
            "fleet: {} stdin messages refused, {} MQTT messages dropped, {} calls refused before any drone",
            c.stdin_refused, c.mqtt_dropped, c.calls_refused
        )
    }
}
