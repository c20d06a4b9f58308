//! The control family: `request_control` and `release_control`, the lease of one pilot in
//! command (decided by the gate, `auth::lease`; recorded and announced by `mcp::guard`).

use serde_json::{Value, json};

use super::call::{ToolCall, ToolFuture};
use super::{Handler, Hints, ToolEntry, no_arguments};
use crate::auth::permissions::Permission;
use crate::mcp::errors::tool_error;
use crate::mcp::schema;

pub const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "request_control",
        title: "Take the controls",
        description: "Asks for the control lease: only one session at a time may command \
            motion (arm, takeoff, goto, land...). Granted if nobody holds it; an ADMIN \
            takes it over from an OPERATOR (who is told). The lease ends with \
            release_control, when the session ends, or after a few seconds without any \
            call from the holder. Needs OPERATOR. Takes no arguments.",
        input_schema: no_arguments,
        output_schema: control_lease_schema,
        permission: Permission::CONTROL,
        hints: Hints::CHANGE,
        needs_camera: false,
        handler: Handler::Run(request_control),
    },
    ToolEntry {
        name: "release_control",
        title: "Give the controls back",
        description: "Releases the control lease held by this session. Takes no arguments.",
        input_schema: no_arguments,
        output_schema: control_lease_schema,
        permission: Permission::CONTROL,
        hints: Hints::CHANGE,
        needs_camera: false,
        handler: Handler::Run(release_control),
    },
];

fn request_control(call: ToolCall) -> ToolFuture {
    lease(call, "request_control", true)
}

fn release_control(call: ToolCall) -> ToolFuture {
    lease(call, "release_control", false)
}

fn lease(call: ToolCall, tool: &'static str, request: bool) -> ToolFuture {
    Box::pin(async move {
        if !call.arguments.is_empty() {
            return Ok(tool_error(format!(
                "{tool} takes no arguments; call it with {{}}"
            )));
        }
        let result = call.guard.control(&call.session, request).await;
        // The ground-station endpoints learn the new holder at once, not at the next tick.
        if let Some(control) = &call.control {
            control.publish_lease_holder(call.guard.lease_holder_subject());
        }
        result
    })
}

/// Result of `request_control` and `release_control` (written by `Guard::control`).
fn control_lease_schema() -> Value {
    let written = json!({
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "What happened to the lease."},
            "holder": {
                "description": "Who holds the controls now; null when nobody does.",
                "type": ["object", "null"],
                "properties": {
                    "holder_subject": {"type": "string"},
                    "holder_role": {"type": "string"},
                    "expires_in_ms": {"type": "integer", "minimum": 0}
                }
            }
        },
        "required": ["message", "holder"]
    });
    schema::compact(written, true)
}
