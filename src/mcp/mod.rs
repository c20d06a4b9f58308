//! The MCP server over mutual-TLS MQTT 5 (EMQX "MCP over MQTT" transport).
