//! The envelope family: `get_envelope`, `preflight_check` (the autopilot's own settings
//! against the envelope) and `set_envelope`.

use serde_json::{Value, json};

use super::call::{ToolCall, ToolFuture, answer, no_args};
use super::{Handler, Hints, ToolEntry, no_arguments};
use crate::auth::permissions::Permission;
use crate::control::ControlReply;
use crate::mcp::errors::{structured, tool_error};
use crate::mcp::schema;

pub const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "get_envelope",
        title: "Safety envelope",
        description: "Returns the safety envelope every motion command is checked against: \
            keep-in and keep-out zones, altitude floor and ceiling (metres above home) and \
            the highest and lowest targets allowed after the margins, speed limits, maximum \
            distance from home, battery reserve, GPS requirements and the breach action. \
            Read-only; takes no arguments.",
        input_schema: no_arguments,
        output_schema: schema::output::<crate::safety::EnvelopeSummary>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: false,
        handler: Handler::Run(get_envelope),
    },
    ToolEntry {
        name: "preflight_check",
        title: "Pre-flight check of the autopilot",
        description: "Checks the autopilot's own settings against the safety envelope, \
            from its parameters (read at link-up, after each landing and before arming): \
            its speeds (ArduPilot WPNAV_SPEED, RTL_SPEED; PX4 MPC_XY_CRUISE, \
            MPC_XY_VEL_MAX) against the speed limit, its return altitude (RTL_ALT, \
            RTL_RETURN_ALT) against the ceiling, its battery monitor and low-battery \
            failsafe against the reserve, and its own fence. Each finding names the \
            parameter, its value and what to set it to; `error` findings refuse arming. \
            Also gives the speed the horizontal margins are sized from and why. Read-only; \
            takes no arguments.",
        input_schema: no_arguments,
        output_schema: schema::output::<crate::safety::preflight::PreflightReport>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: false,
        handler: Handler::Run(preflight_check),
    },
    ToolEntry {
        name: "set_envelope",
        title: "Change the safety envelope",
        description: "Not implemented in this version: it always refuses and changes \
            nothing. The envelope comes from the `[envelope]` section of the daemon's \
            configuration; change it there and restart the daemon (get_envelope shows the \
            one in force). Needs the ADMIN role.",
        input_schema: set_envelope_schema,
        output_schema: schema::output::<ControlReply>,
        permission: Permission::ADMIN,
        hints: Hints {
            destructive: true,
            ..Hints::CHANGE
        },
        needs_camera: false,
        handler: Handler::Run(set_envelope),
    },
];

fn get_envelope(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(text) = no_args(&call.arguments, "get_envelope") {
            return tool_error(text);
        }
        let Some(control) = &call.control else {
            return tool_error("this server has no vehicle attached".into());
        };
        match control.envelope() {
            Ok(summary) => structured(&summary),
            Err(reason) => tool_error(format!(
                "no envelope is in force: {reason}; until there is one only hold, land, \
                 return_home and disarm are accepted"
            )),
        }
    })
}

fn preflight_check(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(text) = no_args(&call.arguments, "preflight_check") {
            return tool_error(text);
        }
        let report = call.status.borrow().preflight.clone();
        match report {
            Some(report) => structured(&report),
            None => tool_error(
                "no pre-flight report yet: the daemon has not published its first status; try \
                 again in a moment"
                    .into(),
            ),
        }
    })
}

fn set_envelope_schema() -> Value {
    json!({"type": "object", "description": "The new [envelope] section as JSON (same keys as the configuration file).", "additionalProperties": true})
}

fn set_envelope(_call: ToolCall) -> ToolFuture {
    answer(async move {
        tool_error(
            "set_envelope is not implemented in this version: nothing was changed. The \
             envelope comes from the `[envelope]` section of the daemon's configuration; change \
             it there and restart the daemon. get_envelope shows the envelope in force."
                .into(),
        )
    })
}
