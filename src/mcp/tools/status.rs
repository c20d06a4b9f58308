//! The status family: `get_status` and `wait_for_mode_change`.

use std::time::Duration;

use serde::Serialize;

use super::call::{ToolCall, ToolFuture, answer, no_args, parse};
use super::{Handler, Hints, ToolEntry, no_arguments};
use crate::auth::permissions::Permission;
use crate::mcp::errors::{structured, tool_error};
use crate::mcp::schema;
use crate::status::StatusReport;

pub const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "get_status",
        title: "Vehicle status",
        description: "Returns the current state of the drone as seen by the onboard companion: \
            armed state, flight mode, landed state, position (latitude/longitude in degrees, \
            altitude above mean sea level and above home in metres, velocities in m/s), \
            attitude and heading (degrees), battery (volts, amperes, percent remaining), GPS \
            fix and satellites, estimator health, home position, recent autopilot status \
            texts and MAVLink link health. Every group has `freshness.age_ms` and \
            `freshness.stale`: treat stale values as unknown. Takes no arguments; read-only.",
        input_schema: no_arguments,
        output_schema: schema::output::<StatusReport>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: false,
        handler: Handler::Run(get_status),
    },
    ToolEntry {
        name: "wait_for_mode_change",
        title: "Wait for a mode or arming change",
        description: "Waits until the vehicle's armed state, flight mode, landed state or \
            system status changes, or until `timeout_s` seconds (1 to 600) pass. Sends a \
            progress notification every second when the request has a progressToken, and \
            stops when cancelled. Returns `changed` (false on timeout), `waited_s` and the \
            status at the end. Use it to wait for a takeoff, landing or mode switch to take \
            effect instead of polling get_status. Read-only.",
        input_schema: schema::input::<WaitArgs>,
        output_schema: schema::output::<WaitResult>,
        permission: Permission::LONG_WAIT,
        hints: Hints::READ,
        needs_camera: false,
        handler: Handler::Run(wait_for_mode_change),
    },
];

fn get_status(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(text) = no_args(&call.arguments, "get_status") {
            return tool_error(text);
        }
        // Placeholders the shell replaces with the published report's JSON, made once per
        // report: nothing of the status is copied per call (`mcp::splice`).
        crate::mcp::splice::status_result()
    })
}

/// Arguments of `wait_for_mode_change`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    /// How long to wait at most, in seconds (1 to 600).
    #[schemars(range(min = 1, max = 600))]
    timeout_s: f64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
struct WaitResult {
    /// True when the mode, arming, landed state or system status changed.
    changed: bool,
    /// Seconds waited.
    waited_s: f64,
    /// The status when the wait ended.
    #[schemars(schema_with = "same_as_get_status")]
    status: StatusReport,
}

/// The status inside another result: described, not repeated (get_status's output schema
/// has it in full; repeating it would double the largest schema of `tools/list`).
fn same_as_get_status(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The vehicle's status, the same object get_status returns (see its outputSchema)."
    })
}

/// The part of the status whose change `wait_for_mode_change` waits for.
fn mode_key(report: &StatusReport) -> (bool, String, String, String) {
    let m = &report.vehicle.mode;
    (
        m.armed,
        m.flight_mode.to_string(),
        m.landed_state.to_string(),
        m.system_status.to_string(),
    )
}

fn wait_for_mode_change(call: ToolCall) -> ToolFuture {
    answer(async move {
        let args: WaitArgs = match parse(&call.arguments, "{\"timeout_s\": seconds from 1 to 600}")
        {
            Ok(a) => a,
            Err(e) => return e,
        };
        if !(args.timeout_s.is_finite() && (1.0..=600.0).contains(&args.timeout_s)) {
            return tool_error(format!(
                "timeout_s must be between 1 and 600 seconds; got {}",
                args.timeout_s
            ));
        }
        let mut status = call.status;
        let start = mode_key(&status.borrow_and_update());
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs_f64(args.timeout_s);
        let mut tick =
            tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
        let changed = loop {
            tokio::select! {
                _ = call.cancel.cancelled() => {
                    return tool_error("cancelled".into());
                }
                _ = tokio::time::sleep_until(deadline) => break false,
                _ = tick.tick() => {
                    let waited = started.elapsed().as_secs_f64().min(args.timeout_s);
                    call.progress
                        .report(
                            Some(args.timeout_s),
                            format!("waited {waited:.0} of {} s for a mode change", args.timeout_s),
                        )
                        .await;
                }
                changed = status.changed() => {
                    if changed.is_err() {
                        return tool_error("the daemon is shutting down".into());
                    }
                    if mode_key(&status.borrow_and_update()) != start {
                        break true;
                    }
                }
            }
        };
        let report = status.borrow().clone();
        structured(&WaitResult {
            changed,
            waited_s: started.elapsed().as_secs_f64(),
            status: report,
        })
    })
}
