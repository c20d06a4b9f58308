//! What a tool or resource needs to be used: the least role, the class (whether it moves the
//! vehicle: the control lease and the motion rate limit) and the pool its calls take.
//!
//! The tables themselves are the MCP server's registries (`mcp::tools`, `mcp::resources`):
//! each tool's entry carries its [`Permission`], so `tools/list` and authorization read the
//! same row and a tool cannot exist without one. The gate decides on the permission it is
//! given and knows no tool by name.

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

/// Which of the session table's pools a call takes (`mcp.*_concurrent_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The ordinary call pool and rate limits.
    Calls,
    /// May wait minutes without moving anything: the long-wait pool
    /// (`mcp.waits_concurrent_max`, `mcp.identity_waits_concurrent_max`), not the call pool.
    LongWait,
    /// Towards safety, always let through (the reserved pool, no rate limit): for a motion,
    /// only the lease holder's call; for anything else, a caller who has the role.
    Reserved,
}

/// What one tool needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub role: Role,
    pub class: Class,
    pub pool: Pool,
}

impl Permission {
    pub const fn new(role: Role, class: Class, pool: Pool) -> Permission {
        Permission { role, class, pool }
    }

    /// A read for READ_ONLY and above.
    pub const READ: Permission = Permission::new(Role::ReadOnly, Class::Read, Pool::Calls);
    /// A long wait for READ_ONLY and above (it moves nothing).
    pub const LONG_WAIT: Permission = Permission::new(Role::ReadOnly, Class::Read, Pool::LongWait);
    /// A motion for an OPERATOR holding the lease.
    pub const MOTION: Permission = Permission::new(Role::Operator, Class::Motion, Pool::Calls);
    /// A motion towards safety (hold, land, return home): the holder's always gets through.
    pub const MOTION_TOWARDS_SAFETY: Permission =
        Permission::new(Role::Operator, Class::Motion, Pool::Reserved);
    /// Taking or giving back the lease.
    pub const CONTROL: Permission = Permission::new(Role::Operator, Class::Control, Pool::Calls);
    /// Administration for an ADMIN.
    pub const ADMIN: Permission = Permission::new(Role::Admin, Class::Admin, Pool::Calls);
    /// An ADMIN's call towards safety (the e-stop reset): never limited.
    pub const ADMIN_TOWARDS_SAFETY: Permission =
        Permission::new(Role::Admin, Class::Admin, Pool::Reserved);
    /// The emergency stop: anyone authenticated, never limited.
    pub const EMERGENCY_STOP: Permission =
        Permission::new(Role::Public, Class::EmergencyStop, Pool::Calls);

    pub fn needs_lease(&self) -> bool {
        self.class == Class::Motion
    }

    /// Whether a call is refused while the audit log cannot be written (a full disk): a
    /// motion that is not towards safety and an administration (the e-stop reset included:
    /// it lets the vehicle fly again) must be on record before they are answered. The
    /// emergency stop, the holder's hold, land and return home, the lease (needed to land)
    /// and reads are never refused for the disk's sake: stopping never waits on the disk.
    pub fn refused_unrecorded(&self) -> bool {
        match self.class {
            Class::Read | Class::EmergencyStop | Class::Control => false,
            Class::Motion => self.pool != Pool::Reserved,
            Class::Admin => true,
        }
    }
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
    fn the_named_permissions() {
        assert!(Permission::MOTION.needs_lease());
        assert!(Permission::MOTION_TOWARDS_SAFETY.needs_lease());
        for p in [
            Permission::READ,
            Permission::LONG_WAIT,
            Permission::CONTROL,
            Permission::ADMIN,
            Permission::ADMIN_TOWARDS_SAFETY,
            Permission::EMERGENCY_STOP,
        ] {
            assert!(!p.needs_lease(), "{p:?}");
        }
        assert_eq!(Permission::EMERGENCY_STOP.role, Role::Public);
        assert_eq!(method("tools/list"), Role::Public);
        assert_eq!(method("resources/subscribe"), Role::ReadOnly);
        assert_eq!(method("anything/else"), Role::ReadOnly);
    }
}
