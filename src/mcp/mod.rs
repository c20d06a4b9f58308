//! The MCP server over mutual-TLS MQTT 5 (EMQX "MCP over MQTT" transport).
//!
//! - `mqtt`: the broker connection (TLS, CONNECT options, reconnecting driver), shared with
//!   the ground bridge.
//! - `session`: sans-IO session bookkeeping (which sessions exist, subscriptions, routing,
//!   limits).
//! - `errors`: every JSON-RPC/MCP error code, and the first check of incoming messages.
//! - `server`: one session's MCP handler (rmcp): the tool table, resources, logging.
//! - `camera_tools`: the camera's tools and `camera://latest`.
//! - `schema`: the tools' JSON Schemas, standard and compact.
//! - `version`: what each negotiated MCP version may carry.
//! - `shell`: the IO: MQTT in and out, one rmcp service per session, status updates.
//! - `bench_client`: a raw JSON-RPC client on the same connection, for the benchmark harnesses.

pub mod bench_client;
pub mod camera_tools;
pub mod errors;
pub mod guard;
pub mod mqtt;
pub mod schema;
pub mod server;
pub mod session;
pub mod shell;
pub mod transport;
pub mod version;

pub use shell::{EstopLink, serve};
