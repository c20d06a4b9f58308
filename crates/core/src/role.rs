//! Caller roles, from least to most privileged.
//!
//! Shared by the permission table (which tool needs which role), the command whitelist
//! (which MAVLink a role may cause), the control lease and the audit log.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who is asking. Ordered: a role may do everything a lesser role may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Presence and ping only.
    Public,
    /// Status and resources.
    ReadOnly,
    /// Flight tools within the envelope.
    Operator,
    /// Envelope changes, reset of the emergency stop, allowlisted parameter writes, audit.
    Admin,
    /// Local processes on the companion only (the daemon's own failsafes, the local e-stop
    /// socket); never granted to a ground client.
    System,
}

impl Role {
    /// Every role, least privileged first.
    pub const ALL: [Role; 5] = [
        Role::Public,
        Role::ReadOnly,
        Role::Operator,
        Role::Admin,
        Role::System,
    ];

    /// The name as written in tokens and configuration (`OPERATOR`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Public => "PUBLIC",
            Role::ReadOnly => "READ_ONLY",
            Role::Operator => "OPERATOR",
            Role::Admin => "ADMIN",
            Role::System => "SYSTEM",
        }
    }

    /// Parses a role name, ignoring case (`operator`, `READ_ONLY`).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who asks: a role, and an identity for logs and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The MCP client id (or the local source) for logs and, later, audit.
    pub identity: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Public < Role::ReadOnly && Role::ReadOnly < Role::Operator);
        assert!(Role::Operator < Role::Admin && Role::Admin < Role::System);
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.name()), Some(role));
            assert_eq!(Role::from_name(&role.name().to_lowercase()), Some(role));
        }
        assert_eq!(Role::from_name("root"), None);
    }
}
