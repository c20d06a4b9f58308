//! The parameter family: `get_parameter` and `list_parameters` (READ_ONLY, from the cached
//! download of the autopilot's whole table, with its progress) and `set_parameter` (ADMIN,
//! from the `[[parameters.allow]]` allowlist within its bounds, never a fence, failsafe,
//! arming-check or signing parameter; confirmed by the autopilot's echo and audited with the
//! old and new value).

use super::call::{ToolCall, ToolFuture, answer, parse};
use super::{Handler, Hints, ToolEntry};
use crate::auth::permissions::Permission;
use crate::control::param::{ParamAnswer, ParamAsk};
use crate::mcp::errors::{structured, tool_error};
use crate::mcp::schema;
use crate::safety::param_allow::ParamAllow;
use crate::vehicle::param_table::{DownloadProgress, ParamValue};

/// `list_parameters`' page when the caller gives no `limit`.
const LIST_LIMIT_DEFAULT: usize = 50;

pub const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "get_parameter",
        title: "Read an autopilot parameter",
        description: "Returns one autopilot parameter (value in the firmware's own units, \
            its type and index) from the daemon's copy of the autopilot's parameter table, \
            downloaded at link-up and kept current from the autopilot's broadcasts, with the \
            download's progress. Read-only.",
        input_schema: schema::input::<GetArgs>,
        output_schema: schema::output::<GetResult>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: false,
        handler: Handler::Run(get_parameter),
    },
    ToolEntry {
        name: "list_parameters",
        title: "List autopilot parameters",
        description: "Lists the autopilot's parameters whose names start with `prefix` \
            (e.g. `WPNAV_`, `MPC_`), in name order, at most `limit` of them (default 50, at \
            most 200), with how many matched, the download's progress (received of count) \
            and the parameters set_parameter may write with their bounds. Read-only.",
        input_schema: schema::input::<ListArgs>,
        output_schema: schema::output::<ListResult>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: false,
        handler: Handler::Run(list_parameters),
    },
    ToolEntry {
        name: "set_parameter",
        title: "Write an autopilot parameter",
        description: "Writes one autopilot parameter, in the firmware's own units, and \
            answers once the autopilot confirms the new value (its PARAM_VALUE echo). Only \
            the parameters of the configured allowlist, within their bounds \
            (list_parameters shows them), only with the vehicle disarmed on the ground; \
            fence, failsafe, arming-check and signing parameters are never written. Audited \
            with the old and new value. Needs the ADMIN role.",
        input_schema: schema::input::<SetArgs>,
        output_schema: schema::output::<SetResult>,
        permission: Permission::ADMIN,
        hints: Hints {
            destructive: true,
            ..Hints::CHANGE
        },
        needs_camera: false,
        handler: Handler::Run(set_parameter),
    },
];

/// Arguments of `get_parameter`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    /// The autopilot's name for it, e.g. `WPNAV_SPEED` (ArduPilot) or `MPC_XY_CRUISE` (PX4).
    name: String,
}

/// Result of `get_parameter`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct GetResult {
    parameter: ParamValue,
    download: DownloadProgress,
}

/// Arguments of `list_parameters`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Only names starting with this (default: all).
    #[serde(default)]
    prefix: String,
    /// At most this many (default 50, at most 200).
    limit: Option<usize>,
}

/// Result of `list_parameters`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct ListResult {
    parameters: Vec<ParamValue>,
    /// How many names matched the prefix (more than listed when cut at the limit).
    matched: usize,
    download: DownloadProgress,
    /// What set_parameter may write (firmware units).
    writable: Vec<ParamAllow>,
}

/// Arguments of `set_parameter`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetArgs {
    /// The autopilot's name for it.
    name: String,
    /// The new value, in the firmware's own units (an integer for an integer parameter).
    value: f64,
}

/// Result of `set_parameter`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct SetResult {
    message: String,
    name: String,
    old_value: f64,
    new_value: f64,
}

fn get_parameter(call: ToolCall) -> ToolFuture {
    answer(async move {
        let args: GetArgs = match parse(&call.arguments, "{\"name\": \"WPNAV_SPEED\"}") {
            Ok(args) => args,
            Err(e) => return e,
        };
        let Some(control) = &call.control else {
            return tool_error("this server has no vehicle attached".into());
        };
        let ask = ParamAsk::Get {
            name: args.name.clone(),
        };
        match control.params(ask).await {
            Ok(ParamAnswer::Value {
                value: Some(parameter),
                progress,
            }) => structured(&GetResult {
                parameter,
                download: progress,
            }),
            Ok(ParamAnswer::Value {
                value: None,
                progress,
            }) => tool_error(format!(
                "`{}` has not been read from the autopilot: {} of {} parameters read ({}); \
                 check the name with list_parameters and a prefix",
                args.name,
                progress.received,
                progress.count.map_or("?".into(), |c| c.to_string()),
                serde_json::to_value(progress.state).unwrap_or_default()
            )),
            Ok(other) => tool_error(format!("unexpected answer: {other:?}")),
            Err(why) => tool_error(why),
        }
    })
}

fn list_parameters(call: ToolCall) -> ToolFuture {
    answer(async move {
        let args: ListArgs = match parse(&call.arguments, "{\"prefix\": \"WPNAV_\", \"limit\": 20}")
        {
            Ok(args) => args,
            Err(e) => return e,
        };
        let Some(control) = &call.control else {
            return tool_error("this server has no vehicle attached".into());
        };
        let ask = ParamAsk::List {
            prefix: args.prefix,
            limit: args.limit.unwrap_or(LIST_LIMIT_DEFAULT),
        };
        match control.params(ask).await {
            Ok(ParamAnswer::List {
                parameters,
                matched,
                progress,
                writable,
            }) => structured(&ListResult {
                parameters,
                matched,
                download: progress,
                writable,
            }),
            Ok(other) => tool_error(format!("unexpected answer: {other:?}")),
            Err(why) => tool_error(why),
        }
    })
}

fn set_parameter(call: ToolCall) -> ToolFuture {
    answer(async move {
        let args: SetArgs = match parse(
            &call.arguments,
            "{\"name\": \"WPNAV_SPEED\", \"value\": 500}",
        ) {
            Ok(args) => args,
            Err(e) => return e,
        };
        let Some(control) = &call.control else {
            return tool_error("this server has no vehicle attached; nothing was sent".into());
        };
        let ask = ParamAsk::Set {
            name: args.name,
            value: args.value,
            caller: call.caller.clone(),
        };
        match control.params(ask).await {
            Ok(ParamAnswer::Written { name, old, new }) => structured(&SetResult {
                message: format!("{name} changed from {old} to {new}; the autopilot confirmed it"),
                name,
                old_value: old,
                new_value: new,
            }),
            Ok(ParamAnswer::Refused(why)) => tool_error(why),
            Ok(other) => tool_error(format!("unexpected answer: {other:?}")),
            Err(why) => tool_error(why),
        }
    })
}
