//! The MCP server over mutual-TLS MQTT 5 (EMQX "MCP over MQTT" transport).
//!
//! - `mqtt`: the broker connection (TLS, CONNECT options, reconnecting driver), shared with
//!   the ground bridge.

pub mod errors;
pub mod mqtt;
pub mod session;
