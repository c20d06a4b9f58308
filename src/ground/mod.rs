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
//! - [`shell`]: the async shell (stdin/stdout, rumqttc, timers).

pub mod bridge;
pub mod config;
pub mod fleet;
pub mod shell;
