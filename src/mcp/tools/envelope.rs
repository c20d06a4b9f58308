//! The envelope family: `get_envelope`, `preflight_check` (the autopilot's own settings
//! against the envelope) and `set_envelope` (an ADMIN's tightening, decided by the supervisor
//! with the envelope's own `tighten`).

use super::call::{ToolCall, ToolFuture, answer, no_args, parse};
use super::{Handler, Hints, ToolEntry, no_arguments};
use crate::auth::permissions::Permission;
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
        title: "Tighten the safety envelope",
        description: "Tightens the envelope in force, in flight or on the ground: lower the \
            ceiling, raise the floor, narrow the speed limits or the distance from home, widen \
            the margins, raise the battery reserve or the GPS requirements, shrink keep-in \
            zones, add or grow keep-out zones. Give only the keys to change, with the \
            configuration file's names and units; a zone list replaces the whole list, so send \
            the current zones (get_envelope lists them) with the new one. Refused with the \
            reason, changing nothing, if anything would be looser than now, or if the vehicle \
            or home would end up outside the new envelope. Lasts until the daemon restarts; \
            widening is done in the configuration file. Needs the ADMIN role. Returns the \
            envelope now in force.",
        input_schema: schema::input::<SetEnvelopeArgs>,
        output_schema: schema::output::<SetEnvelopeResult>,
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

/// Arguments of `set_envelope`: the `[envelope]` keys it may tighten
/// (`safety::tightening::TIGHTENABLE`), each optional.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read for validation; the loop applies the JSON itself.
struct SetEnvelopeArgs {
    /// Floor above home for goal targets, metres (only higher).
    altitude_m_min: Option<f64>,
    /// Ceiling above home, metres (only lower).
    altitude_m_max: Option<f64>,
    /// Horizontal margin inside keep-ins and around keep-outs, metres (only wider).
    margin_horizontal_m: Option<f64>,
    /// Vertical margin below the ceiling and above the floor, metres (only wider).
    margin_vertical_m: Option<f64>,
    /// Horizontal speed limit, m/s (only lower).
    speed_horizontal_m_s_max: Option<f64>,
    /// Vertical speed limit, m/s (only lower).
    speed_vertical_m_s_max: Option<f64>,
    /// Farthest from home, metres (only nearer).
    distance_from_home_m_max: Option<f64>,
    /// Battery kept for the way back, percent (only higher).
    battery_reserve_percent: Option<f64>,
    /// Weakest GPS fix accepted: `2d_fix`, `3d_fix`, `dgps`, `rtk_float`, `rtk_fixed` (only
    /// stronger).
    gps_fix_type_min: Option<String>,
    /// Fewest satellites accepted (only more).
    gps_satellites_min: Option<u8>,
    /// Largest HDOP accepted (only lower).
    gps_hdop_max: Option<f64>,
    /// Seconds held after a breach before the breach action (only shorter).
    breach_hold_s: Option<f64>,
    /// Keep-in zones, all of them (each new one inside a current one).
    keep_in: Option<Vec<ZoneArgs>>,
    /// Keep-out zones, all of them (each current one inside a new one).
    keep_out: Option<Vec<ZoneArgs>>,
}

/// One zone, as in the configuration file: a polygon or a circle.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ZoneArgs {
    /// Shown in refusals.
    name: String,
    /// Vertices `[latitude_deg, longitude_deg]` around the boundary, first not repeated.
    polygon_lat_lon_deg: Option<Vec<[f64; 2]>>,
    /// Circle centre `[latitude_deg, longitude_deg]`.
    center_lat_lon_deg: Option<[f64; 2]>,
    /// Circle radius, metres.
    radius_m: Option<f64>,
}

/// Result of `set_envelope`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct SetEnvelopeResult {
    /// What changed.
    message: String,
    /// The envelope now in force.
    #[schemars(schema_with = "same_as_get_envelope")]
    envelope: crate::safety::EnvelopeSummary,
}

/// The envelope inside the result: described, not repeated (get_envelope's output schema has
/// it in full).
fn same_as_get_envelope(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The envelope now in force, the same object get_envelope returns (see its outputSchema)."
    })
}

/// Checks the arguments' shape here (a clear refusal before anything reaches the loop), then
/// asks the loop, where the supervisor applies them and the envelope judges the result.
fn set_envelope(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(e) = parse::<SetEnvelopeArgs>(
            &call.arguments,
            "the [envelope] keys to tighten with their new values, e.g. {\"altitude_m_max\": 60}",
        ) {
            return e;
        }
        let Some(control) = &call.control else {
            return tool_error("this server has no vehicle attached; nothing was changed".into());
        };
        let keys: Vec<String> = call.arguments.keys().cloned().collect();
        match control
            .change_envelope(call.arguments.clone(), call.caller.clone())
            .await
        {
            Ok(envelope) => structured(&SetEnvelopeResult {
                message: format!(
                    "envelope tightened ({}); it is in force now and until the daemon restarts",
                    keys.join(", ")
                ),
                envelope,
            }),
            Err(reason) => tool_error(format!("set_envelope: {reason}; nothing was changed")),
        }
    })
}
