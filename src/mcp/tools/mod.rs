//! The tool registry: every tool the drone serves is one [`ToolEntry`] carrying its name,
//! title, description, input and output schema, [`Permission`] (least role, class, pool),
//! annotations ([`Hints`]), whether it needs the camera, and its [`Handler`], in a module per
//! family:
//! - `status`: `get_status`, `wait_for_mode_change`;
//! - `camera`: `capture_image`, `camera_status`, `list_captures`, `get_capture`;
//! - `flight`: the ten motion tools, served by one generic handler ([`flight::fly`]);
//! - `envelope`: `get_envelope`, `preflight_check`, `set_envelope`;
//! - `estop`: `emergency_stop`, `reset_emergency_stop`;
//! - `control`: `request_control`, `release_control` (the lease);
//! - `audit`: `revoke_token`;
//! - `params`: `get_parameter`, `list_parameters`, `set_parameter`;
//! - `mission`: `upload_mission`, `get_mission`, `start_mission`, `pause_mission`,
//!   `resume_mission`, `clear_mission`, `plan_survey`;
//! - `fence`: `mirror_fence` (the envelope into the autopilot's own fence, issue 18).
//!
//! Everything that needs to know about a tool reads its entry: `tools/list` and `tools/call`
//! (`mcp::server`), authorization (the gate is handed the entry's permission), the session
//! table's pools and the e-stop's fast path (`mcp::shell`'s authority), the presence's RBAC,
//! the audit's wait. A tool cannot be served without its row, and nothing is dispatched by
//! name.
//!
//! A handler gets a [`ToolCall`] and answers a `CallToolResult`; bad arguments are a tool
//! error (`isError: true`) that says what would be accepted, as MCP 2025-11-25 asks.

pub mod audit;
pub mod call;
pub mod camera;
pub mod control;
pub mod envelope;
pub mod estop;
pub mod fence;
pub mod flight;
pub mod mission;
pub mod params;
pub mod status;

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

pub use call::{PROGRESS_KEEPALIVE, Progress, ToolCall, ToolFuture, with_keepalive};

use crate::auth::permissions::Permission;
use crate::flight::Action;
use crate::mcp::errors::tool_error;
use crate::role::Role;

/// The MCP annotations of a tool (hints: clients treat them as untrusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    /// Acts on the physical world beyond the daemon (the vehicle's motion).
    pub open_world: bool,
}

impl Hints {
    /// Reads: nothing changes, asking twice is the same.
    pub const READ: Hints = Hints {
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
    /// Moves the vehicle; asking twice asks for the same thing.
    pub const MOTION: Hints = Hints {
        read_only: false,
        destructive: true,
        idempotent: true,
        open_world: true,
    };
    /// Changes the daemon's own state only (the lease, the e-stop latch); repeatable.
    pub const CHANGE: Hints = Hints {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
}

/// What runs a tool.
#[derive(Clone, Copy)]
pub enum Handler {
    /// A flight command: the arguments become an `Action` (or the refusal's text, given the
    /// tool's name), which [`flight::fly`], the one handler of every motion tool, hands to the
    /// decision loop.
    Motion(fn(&str, &JsonObject) -> Result<Action, String>),
    /// Any other tool.
    Run(fn(ToolCall) -> ToolFuture),
    /// A motion (or a change of what the vehicle will fly) that prepares before it hands
    /// anything to the loop (the mission tools: download and check first); its permission is
    /// a motion's, with the lease.
    Prepared(fn(ToolCall) -> ToolFuture),
}

/// One tool.
pub struct ToolEntry {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub input_schema: fn() -> Value,
    pub output_schema: fn() -> Value,
    /// What calling it needs: the least role, the class (lease, motion limit), the pool.
    pub permission: Permission,
    pub hints: Hints,
    /// Served only when a camera is configured.
    pub needs_camera: bool,
    pub handler: Handler,
}

impl ToolEntry {
    /// The tool as `tools/list` lists it (in the newest version; `mcp::version` cuts it to a
    /// session's).
    pub fn to_tool(&self) -> Tool {
        let object = |v: Value| match v {
            Value::Object(o) => o,
            _ => JsonObject::new(),
        };
        let mut annotations = ToolAnnotations::new()
            .read_only(self.hints.read_only)
            .destructive(self.hints.destructive)
            .idempotent(self.hints.idempotent)
            .open_world(self.hints.open_world);
        // The display name of 2025-03-26 clients, which have no `Tool.title`.
        annotations.title = Some(self.title.into());
        Tool::new(self.name, self.description, object((self.input_schema)()))
            .with_title(self.title)
            .with_raw_output_schema(Arc::new(object((self.output_schema)())))
            .with_annotations(annotations)
    }

    /// Runs the tool.
    pub fn run(&self, call: ToolCall) -> ToolFuture {
        match self.handler {
            Handler::Motion(action) => {
                let action = action(self.name, &call.arguments).map_err(tool_error);
                Box::pin(async move { Ok(flight::fly(call, action).await) })
            }
            Handler::Run(run) | Handler::Prepared(run) => run(call),
        }
    }
}

/// Every tool, in the order `tools/list` gives them.
pub fn all() -> impl Iterator<Item = &'static ToolEntry> {
    [
        status::TOOLS,
        camera::TOOLS,
        flight::TOOLS,
        envelope::TOOLS,
        estop::TOOLS,
        control::TOOLS,
        audit::TOOLS,
        params::TOOLS,
        mission::TOOLS,
        fence::TOOLS,
    ]
    .into_iter()
    .flatten()
}

/// The tool named `name`, served or not.
pub fn find(name: &str) -> Option<&'static ToolEntry> {
    all().find(|t| t.name == name)
}

/// The tools a drone serves: the table less the camera's tools without a camera.
pub fn on_this_drone(camera: bool) -> impl Iterator<Item = &'static ToolEntry> {
    all().filter(move |t| camera || !t.needs_camera)
}

/// The tools served to a caller of `role`: those of this drone that the role may call.
pub fn served(role: Role, camera: bool) -> impl Iterator<Item = &'static ToolEntry> {
    on_this_drone(camera).filter(move |t| t.permission.role <= role)
}

/// The input schema of a tool without arguments.
pub fn no_arguments() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::permissions::{Class, Pool};

    #[test]
    fn the_table_rules() {
        let names: Vec<&str> = all().map(|t| t.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate names: {names:?}");
        let p = |name: &str| find(name).unwrap().permission;
        assert_eq!(p("arm").role, Role::Operator);
        assert!(p("arm").needs_lease());
        assert!(!p("get_status").needs_lease());
        assert_eq!(p("emergency_stop").role, Role::Public);
        assert_eq!(p("emergency_stop").class, Class::EmergencyStop);
        assert!(!p("emergency_stop").needs_lease());
        assert_eq!(p("reset_emergency_stop").role, Role::Admin);
        assert_eq!(p("capture_image").role, Role::Operator);
        assert_eq!(p("capture_image").class, Class::Read);
        // Towards safety: the holder's hold, land and return home, and the ADMIN's reset.
        let reserved: Vec<&str> = all()
            .filter(|t| t.permission.pool == Pool::Reserved)
            .map(|t| t.name)
            .collect();
        assert_eq!(
            reserved,
            [
                "hold",
                "land",
                "return_home",
                "reset_emergency_stop",
                "pause_mission"
            ]
        );
        let waits: Vec<&str> = all()
            .filter(|t| t.permission.pool == Pool::LongWait)
            .map(|t| t.name)
            .collect();
        assert_eq!(waits, ["wait_for_mode_change"]);
        // No tool is reachable by SYSTEM only: SYSTEM never comes from the ground.
        assert!(all().all(|t| t.permission.role < Role::System));
        // Every motion is a Motion handler (the generic one) and every Motion handler a motion.
        for t in all() {
            assert_eq!(
                matches!(t.handler, Handler::Motion(_) | Handler::Prepared(_)),
                t.permission.class == Class::Motion,
                "{}",
                t.name
            );
        }
        assert!(find("brand_new_tool").is_none());
    }

    #[test]
    fn camera_tools_are_served_only_with_a_camera() {
        let with: Vec<&str> = served(Role::Admin, true).map(|t| t.name).collect();
        let without: Vec<&str> = served(Role::Admin, false).map(|t| t.name).collect();
        for camera in [
            "capture_image",
            "camera_status",
            "list_captures",
            "get_capture",
        ] {
            assert!(
                with.contains(&camera) && !without.contains(&camera),
                "{camera}"
            );
        }
        assert_eq!(with.len(), without.len() + 4);
        let public: Vec<&str> = served(Role::Public, true).map(|t| t.name).collect();
        assert_eq!(public, vec!["emergency_stop"]);
    }

    #[test]
    fn motion_is_destructive_and_open_world_reads_are_read_only() {
        for entry in all() {
            let a = entry.to_tool().annotations.unwrap();
            let name = entry.name;
            match entry.permission.class {
                Class::Motion | Class::EmergencyStop => {
                    assert_eq!(a.destructive_hint, Some(true), "{name}");
                    assert_eq!(a.open_world_hint, Some(true), "{name}");
                    assert_eq!(a.read_only_hint, Some(false), "{name}");
                }
                // Reads but for the two that may change something: a capture, and a survey
                // plan uploaded with `upload: true`.
                Class::Read if name != "capture_image" && name != "plan_survey" => {
                    assert_eq!(a.read_only_hint, Some(true), "{name}");
                    assert_eq!(a.open_world_hint, Some(false), "{name}");
                }
                _ => {
                    assert_eq!(a.read_only_hint, Some(false), "{name}");
                    assert_eq!(a.open_world_hint, Some(false), "{name}");
                }
            }
            assert_eq!(a.title.as_deref(), Some(entry.title), "{name}");
        }
    }
}
