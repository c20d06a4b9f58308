//! The e-stop family: `emergency_stop` (any authenticated role; also answered on the MQTT
//! shell's fast path, which calls [`emergency_stop_result`]) and `reset_emergency_stop`.

use rmcp::model::{CallToolResult, JsonObject};
use serde::Serialize;
use serde_json::Value;

use super::call::{ToolCall, ToolFuture, answer};
use super::{Handler, Hints, ToolEntry, no_arguments};
use crate::auth::permissions::Permission;
use crate::mcp::errors::{structured, tool_error};
use crate::mcp::schema;

pub const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "emergency_stop",
        title: "EMERGENCY STOP",
        description: "Stops the drone now, whatever it is doing: it switches to a position \
            hold at once (ArduCopter BRAKE, PX4 AUTO.LOITER), lands if the hold is not \
            confirmed within 1.5 s or position is lost or the battery is critical, and \
            disarms once on the ground. The stop stays latched: every motion tool is \
            refused until reset_emergency_stop. Any client may call it; it never waits \
            behind other tools. Argument: `reason` (text, optional). Returns whether the \
            stop is latched and what is being commanded.",
        input_schema: schema::input::<StopArgs>,
        output_schema: schema::output::<StopResult>,
        permission: Permission::EMERGENCY_STOP,
        hints: Hints::MOTION,
        needs_camera: false,
        handler: Handler::Run(emergency_stop),
    },
    ToolEntry {
        name: "reset_emergency_stop",
        title: "Reset the emergency stop",
        description: "Clears a latched emergency stop so motion tools are accepted again. \
            The vehicle stays in the mode the stop left it in (hold, landing, or disarmed) \
            until commanded. Refused while a failsafe condition lasts (e.g. battery \
            critical) and after flight termination. Needs the ADMIN role. Takes no \
            arguments.",
        input_schema: no_arguments,
        output_schema: schema::output::<StopResult>,
        permission: Permission::ADMIN_TOWARDS_SAFETY,
        hints: Hints::CHANGE,
        needs_camera: false,
        handler: Handler::Run(reset_emergency_stop),
    },
];

/// Arguments of `emergency_stop`.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    /// Why (shown to every client and logged). Optional.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Result of `emergency_stop` and `reset_emergency_stop`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StopResult {
    /// The request was carried out.
    pub ok: bool,
    /// One sentence about what happened.
    pub message: String,
    /// The emergency stop after the request.
    #[schemars(schema_with = "same_as_status_emergency_stop")]
    pub emergency_stop: crate::estop::StopStatus,
}

/// The e-stop's status inside a stop's result: described, not repeated (get_status's
/// output schema has it in full under `emergency_stop`).
fn same_as_status_emergency_stop(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The emergency stop after the request, the same object as get_status's `emergency_stop` (see its outputSchema): latched, reason, source, rung, rung_confirmed, failsafes_active, history.",
        "required": ["latched"]
    })
}

/// The `emergency_stop` tool's work, shared with the MQTT shell's fast path (which calls it
/// without going through the session's queues).
pub async fn emergency_stop_result(
    estop: Option<&crate::estop::StopClient>,
    arguments: JsonObject,
    identity: &str,
) -> CallToolResult {
    let args: StopArgs = match serde_json::from_value(Value::Object(arguments)) {
        Ok(a) => a,
        // A malformed stop request still stops: the arguments are only the reason.
        Err(e) => StopArgs {
            reason: Some(format!("(arguments not understood: {e})")),
        },
    };
    let Some(estop) = estop else {
        return tool_error("this server has no vehicle attached; nothing to stop".into());
    };
    let ask = crate::estop::StopAsk::Stop(crate::estop::Trigger {
        source: crate::estop::Source::McpTool,
        identity: identity.to_owned(),
        reason: args.reason.unwrap_or_default(),
    });
    stop_reply(estop, ask).await
}

async fn stop_reply(
    estop: &crate::estop::StopClient,
    ask: crate::estop::StopAsk,
) -> CallToolResult {
    match estop.request(ask).await {
        Ok(ack) => {
            let result = StopResult {
                ok: ack.ok,
                message: ack.message,
                emergency_stop: ack.status,
            };
            if result.ok {
                structured(&result)
            } else {
                let mut r = structured(&result);
                r.is_error = Some(true);
                r
            }
        }
        Err(e) => tool_error(e.to_string()),
    }
}

fn emergency_stop(call: ToolCall) -> ToolFuture {
    answer(async move {
        emergency_stop_result(call.estop.as_ref(), call.arguments, &call.caller.identity).await
    })
}

fn reset_emergency_stop(call: ToolCall) -> ToolFuture {
    answer(async move {
        if !call.arguments.is_empty() {
            return tool_error("reset_emergency_stop takes no arguments; call it with {}.".into());
        }
        let Some(estop) = &call.estop else {
            return tool_error("this server has no vehicle attached; nothing to reset".into());
        };
        let ask = crate::estop::StopAsk::Reset {
            identity: call.caller.identity.clone(),
            role: call.caller.role,
        };
        stop_reply(estop, ask).await
    })
}
