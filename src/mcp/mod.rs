//! The MCP server over mutual-TLS MQTT 5 (EMQX "MCP over MQTT" transport).
//!
//! - `mqtt`: the broker connection (TLS, CONNECT options, reconnecting driver), shared with
//!   the ground bridge: the `flight-companion-mqtt` crate, re-exported here.
//! - `session`: sans-IO session bookkeeping (which sessions exist, subscriptions, routing,
//!   limits).
//! - `errors`: every JSON-RPC/MCP error code, and the first check of incoming messages.
//! - `tools`: the tool registry, one entry per tool (schemas, permission, annotations,
//!   handler) in a module per family.
//! - `resources`: the resource registry.
//! - `server`: one session's MCP handler (rmcp): lists, calls and reads from the registries,
//!   logging.
//! - `schema`: the tools' JSON Schemas, standard and compact.
//! - `version`: what each negotiated MCP version may carry.
//! - `transport`: the MCP-over-MQTT topic scheme, user properties and error codes (pure).
//! - `shell`: the IO: MQTT in and out, one rmcp service per session, status updates.
//! - `splice`: the status put into `get_status` answers as the shell serialises them (one
//!   serialisation per published report, no copy per call).

pub mod errors;
pub mod guard;
pub use flight_companion_mqtt as mqtt;
pub mod resources;
pub mod schema;
pub mod server;
pub mod session;
pub mod shell;
pub mod splice;
pub mod tools;
pub use flight_companion_core::mcp::transport;
pub mod version;

pub use shell::{EstopLink, serve};
