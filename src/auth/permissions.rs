//! The permission table: every tool and resource with the least role that may use it,
//! and whether it moves the vehicle (needs the control lease, has its own rate limit).
//!
//! A tool missing from the table is treated as ADMIN-only motion (fail closed); a unit test
//! checks that every tool the MCP server registers has an entry here.

use crate::role::Role;

/// How a tool is gated beyond the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reads and waits: no lease, the general call limit only.
    Read,
    /// Commands the vehicle to move or changes its flight state: lease and motion limit.
    Motion,
    /// Taking and giving back the control lease.
    Control,
    /// Configuration and administration (envelope, e-stop reset, revocation, audit).
    Admin,
    /// The emergency stop: any authenticated role, no lease, never rate-limited.
    EmergencyStop,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub name: &'static str,
    pub role: Role,
    pub class: Class,
}

impl Permission {
    pub fn needs_lease(&self) -> bool {
        self.class == Class::Motion
    }
}

const fn p(name: &'static str, role: Role, class: Class) -> Permission {
    Permission { name, role, class }
}

/// Every tool, with its least role. Names of tools other issues add are reserved here so
/// that they are gated correctly the moment they land.
pub const TOOLS: &[Permission] = &[
    p("get_status", Role::ReadOnly, Class::Read),
    p("wait_for_mode_change", Role::ReadOnly, Class::Read),
    p("get_envelope", Role::ReadOnly, Class::Read),
    p("preflight_check", Role::ReadOnly, Class::Read),
    p("get_mission", Role::ReadOnly, Class::Read),
    p("get_camera_image", Role::ReadOnly, Class::Read),
    p("camera_status", Role::ReadOnly, Class::Read),
    p("list_captures", Role::ReadOnly, Class::Read),
    p("get_capture", Role::ReadOnly, Class::Read),
    // Writes a file on the drone's storage, but moves nothing.
    p("capture_image", Role::Operator, Class::Read),
    p("request_control", Role::Operator, Class::Control),
    p("release_control", Role::Operator, Class::Control),
    p("arm", Role::Operator, Class::Motion),
    p("disarm", Role::Operator, Class::Motion),
    p("takeoff", Role::Operator, Class::Motion),
    p("land", Role::Operator, Class::Motion),
    p("return_to_launch", Role::Operator, Class::Motion),
    p("return_home", Role::Operator, Class::Motion),
    p("goto", Role::Operator, Class::Motion),
    p("go_to", Role::Operator, Class::Motion),
    p("set_mode", Role::Operator, Class::Motion),
    p("hold", Role::Operator, Class::Motion),
    p("set_velocity", Role::Operator, Class::Motion),
    p("set_yaw", Role::Operator, Class::Motion),
    p("move_relative", Role::Operator, Class::Motion),
    p("set_heading", Role::Operator, Class::Motion),
    p("set_speed", Role::Operator, Class::Motion),
    p("upload_mission", Role::Operator, Class::Motion),
    p("start_mission", Role::Operator, Class::Motion),
    p("pause_mission", Role::Operator, Class::Motion),
    p("emergency_stop", Role::Public, Class::EmergencyStop),
    p("reset_emergency_stop", Role::Admin, Class::Admin),
    p("set_envelope", Role::Admin, Class::Admin),
    p("set_parameter", Role::Admin, Class::Admin),
    p("revoke_token", Role::Admin, Class::Admin),
];

/// What a tool not in [`TOOLS`] gets: only ADMIN, and only with the lease.
pub const UNKNOWN_TOOL: Permission = p("", Role::Admin, Class::Motion);

/// Resources by URI, with their least role.
pub const RESOURCES: &[(&str, Role)] = &[
    ("vehicle://status", Role::ReadOnly),
    ("health://summary", Role::ReadOnly),
    ("camera://latest", Role::ReadOnly),
    ("audit://security", Role::ReadOnly),
    ("audit://recent", Role::Admin),
];

/// The row of `tool` (or the fail-closed default).
pub fn tool(name: &str) -> Permission {
    TOOLS
        .iter()
        .find(|t| t.name == name)
        .copied()
        .unwrap_or(UNKNOWN_TOOL)
}

/// Least role of a resource; unknown URIs need ADMIN.
pub fn resource(uri: &str) -> Role {
    RESOURCES
        .iter()
        .find(|(u, _)| *u == uri)
        .map(|(_, r)| *r)
        .unwrap_or(Role::Admin)
}

/// Least role of a JSON-RPC method other than `tools/call` and `resources/read`.
/// Listing is PUBLIC because the lists are filtered by role.
pub fn method(name: &str) -> Role {
    match name {
        "initialize"
        | "ping"
        | "tools/list"
        | "resources/list"
        | "resources/templates/list"
        | "logging/setLevel"
        | "prompts/list" => Role::Public,
        "resources/subscribe" | "resources/unsubscribe" | "completion/complete" => Role::ReadOnly,
        _ => Role::ReadOnly,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_tool_has_an_explicit_entry() {
        for entry in crate::mcp::server::tools() {
            assert!(
                TOOLS.iter().any(|t| t.name == entry.name),
                "tool `{}` has no row in auth::permissions::TOOLS",
                entry.name
            );
        }
    }

    #[test]
    fn table_rules() {
        assert_eq!(tool("arm").role, Role::Operator);
        assert!(tool("arm").needs_lease());
        assert!(!tool("get_status").needs_lease());
        assert_eq!(tool("emergency_stop").role, Role::Public);
        assert!(!tool("emergency_stop").needs_lease());
        assert_eq!(tool("reset_emergency_stop").role, Role::Admin);
        assert_eq!(tool("brand_new_tool"), UNKNOWN_TOOL);
        assert_eq!(resource("audit://recent"), Role::Admin);
        assert_eq!(resource("vehicle://status"), Role::ReadOnly);
        assert_eq!(resource("file:///etc/passwd"), Role::Admin);
        // No tool is reachable by SYSTEM only: SYSTEM never comes from the ground.
        assert!(TOOLS.iter().all(|t| t.role < Role::System));
        let mut names: Vec<_> = TOOLS.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TOOLS.len(), "duplicate rows");
    }
}
