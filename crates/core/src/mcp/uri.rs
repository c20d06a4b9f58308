//! The URIs of the drone's MCP resources. Here, not beside the resource registry
//! (`mcp::resources` in the daemon, which re-exports them), because the ground bridge's web
//! console reads some of them and cannot import the daemon.

/// URI of the status resource.
pub const STATUS_URI: &str = "vehicle://status";
/// URI of the latest camera image.
pub const CAMERA_URI: &str = "camera://latest";
/// URI of the health summary resource (the `health` part of the status).
pub const HEALTH_URI: &str = "health://summary";
/// URI of the security summary (READ_ONLY).
pub const SECURITY_URI: &str = "audit://security";
/// URI of the recent audit records (ADMIN).
pub const AUDIT_RECENT_URI: &str = "audit://recent";
