//! The MCP side's pure parts.

pub mod transport;
pub mod uri;
