//! The MCP server of one session: tools, resources, logging (an rmcp `ServerHandler`).
//!
//! Adding a tool is one [`ToolEntry`] in [`tools`] plus its handler function. A handler
//! gets a [`ToolCall`]: the arguments, the latest status, a [`Progress`] reporter and the
//! call's cancellation token (set by `notifications/cancelled`). It returns a
//! `CallToolResult`; bad arguments are a tool error (`isError: true`) that says what would
//! be accepted, as MCP 2025-11-25 asks.

// rmcp marks logging deprecated because MCP 2026-07-28 drops it; this transport serves
// 2024-11-05..=2025-11-25, where `logging/setLevel` is part of the protocol.
#![allow(deprecated)]

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListResourcesResult, ListToolsResult,
    LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    SetLevelRequestParams, SubscribeRequestParams, Tool, ToolAnnotations, UnsubscribeRequestParams,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::camera_tools::{self, CAMERA_URI};
use super::errors;
use super::guard::Guard;
use super::schema;
use super::version::Features;
use crate::camera::CameraHandle;
use crate::control::{Caller, ControlClient, ControlReply};
use crate::flight::{Action, Outcome};
use crate::health::RaisedAlert;
use crate::metrics::ToolOutcome;
use crate::role::Role;
use crate::status::StatusReport;
use crate::supervisor::EnvelopeEvent;

/// URI of the status resource.
pub const STATUS_URI: &str = "vehicle://status";
/// URI of the health summary resource (the `health` part of the status).
pub const HEALTH_URI: &str = "health://summary";
/// URI of the security summary (READ_ONLY).
pub const SECURITY_URI: &str = "audit://security";
/// URI of the recent audit records (ADMIN).
pub const AUDIT_RECENT_URI: &str = "audit://recent";

/// The versions served over this transport (all with the initialize handshake).
pub const SUPPORTED_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2024_11_05,
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
];

/// Progress notifications of one call: numbered 1, 2, 3... so they are monotonic even if a
/// client reorders nothing else.
#[derive(Clone)]
pub struct Progress {
    target: Option<ProgressTarget>,
    sent: Arc<AtomicU64>,
    /// The session's negotiated version: `message` exists from 2025-03-26.
    features: Features,
}

/// Where a call's progress goes.
#[derive(Clone)]
enum ProgressTarget {
    /// The session's client, with the request's `progressToken`.
    Peer(Peer<RoleServer>, ProgressToken),
    /// A channel, for the tests of this module.
    #[cfg(test)]
    Channel(tokio::sync::mpsc::UnboundedSender<ProgressNotificationParam>),
}

/// A call with a `progressToken` that has reported nothing for this long reports that it is
/// still running: a client (or the ground bridge) that times out on silence then keeps a
/// long call alive however long it runs, and a silent call means a stuck daemon.
pub const PROGRESS_KEEPALIVE: Duration = Duration::from_secs(5);

impl Progress {
    /// Sends the next progress notification (no-op without a `progressToken`).
    pub async fn report(&self, total: Option<f64>, message: String) {
        let Some(target) = &self.target else {
            return;
        };
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let token = match target {
            ProgressTarget::Peer(_, token) => token.clone(),
            #[cfg(test)]
            ProgressTarget::Channel(_) => ProgressToken(rmcp::model::NumberOrString::Number(0)),
        };
        let mut param = ProgressNotificationParam::new(token, n as f64);
        param.total = total;
        if self.features.progress_message() {
            param.message = Some(message);
        }
        match target {
            ProgressTarget::Peer(peer, _) => {
                let _ = peer.notify_progress(param).await;
            }
            #[cfg(test)]
            ProgressTarget::Channel(tx) => {
                let _ = tx.send(param);
            }
        }
    }

    fn count(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Runs a tool's future; while it runs, reports "still running" whenever `period`
/// ([`PROGRESS_KEEPALIVE`]) went by without any other progress (only with a `progressToken`).
async fn with_keepalive(
    run: ToolFuture,
    progress: &Progress,
    tool: &str,
    period: Duration,
) -> CallToolResult {
    if progress.target.is_none() {
        return run.await;
    }
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(started + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = progress.count();
    tokio::pin!(run);
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = tick.tick() => {
                if progress.count() == seen {
                    let running_s = started.elapsed().as_secs();
                    progress.report(None, format!("{tool}: still running ({running_s} s)")).await;
                }
                seen = progress.count();
            }
        }
    }
}

/// What a tool handler receives.
pub struct ToolCall {
    pub arguments: JsonObject,
    pub status: watch::Receiver<StatusReport>,
    pub progress: Progress,
    pub cancel: CancellationToken,
    /// The camera, when one is configured.
    pub camera: Option<CameraHandle>,
    /// The decision loop; `None` when the server runs without a vehicle (tests).
    pub control: Option<ControlClient>,
    /// Who calls. Until identity (issue 6) every MCP caller is an `Operator`.
    pub caller: Caller,
    /// The e-stop channel (not the control channel); `None` without a vehicle (tests).
    pub estop: Option<crate::estop::StopClient>,
}

pub type ToolFuture = Pin<Box<dyn Future<Output = CallToolResult> + Send>>;

/// One tool: its description for the model, schemas, annotations and handler.
pub struct ToolEntry {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub input_schema: fn() -> Value,
    pub output_schema: fn() -> Value,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    /// Acts on the physical world beyond the daemon (the vehicle's motion).
    pub open_world: bool,
    /// Served only when a camera is configured.
    pub needs_camera: bool,
    pub run: fn(ToolCall) -> ToolFuture,
}

impl ToolEntry {
    fn to_tool(&self) -> Tool {
        let object = |v: Value| match v {
            Value::Object(o) => o,
            _ => JsonObject::new(),
        };
        let mut annotations = ToolAnnotations::new()
            .read_only(self.read_only)
            .destructive(self.destructive)
            .idempotent(self.idempotent)
            .open_world(self.open_world);
        // The display name of 2025-03-26 clients, which have no `Tool.title`.
        annotations.title = Some(self.title.into());
        Tool::new(self.name, self.description, object((self.input_schema)()))
            .with_title(self.title)
            .with_raw_output_schema(Arc::new(object((self.output_schema)())))
            .with_annotations(annotations)
    }
}

/// The tools served to a caller of `role`: the table less the camera's tools without a
/// camera, less what the role may not call.
pub fn served_tools(role: Role, camera: bool) -> impl Iterator<Item = &'static ToolEntry> {
    tools().iter().filter(move |t| {
        (camera || !t.needs_camera) && crate::auth::permissions::tool(t.name).role <= role
    })
}

fn no_arguments() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

/// Structured output plus the same JSON as a text block.
fn structured<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => tool_error(format!("internal error serialising the result: {e}")),
    }
}

/// A tool execution error the model can read and act on.
pub fn tool_error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// The tool table.
pub fn tools() -> &'static [ToolEntry] {
    &[
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
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: get_status,
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
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: wait_for_mode_change,
        },
        ToolEntry {
            name: "capture_image",
            title: "Take a picture",
            description: "Returns the newest camera frame as a JPEG image (MCP image content) \
                with metadata: capture time (UTC), age_ms, the vehicle's latitude_deg, \
                longitude_deg, altitude_m (above mean sea level), altitude_relative_m, \
                heading_deg, roll/pitch at capture, and the image's width_px, height_px and \
                bytes. The image is downscaled to max_width_px (default 640) and re-encoded to \
                stay under the link's size limit. If the newest frame is older than the \
                configured limit the call fails and says how old it is; it never returns a \
                stale picture as current. With save: true the full-resolution frame is also \
                kept onboard with EXIF GPS tags (see list_captures, get_capture).",
            input_schema: camera_tools::capture_input_schema,
            output_schema: camera_tools::capture_output_schema,
            read_only: false,
            destructive: false,
            idempotent: false,
            open_world: false,
            needs_camera: true,
            run: camera_tools::capture_image,
        },
        ToolEntry {
            name: "camera_status",
            title: "Camera status",
            description: "Reports the camera: source, state (connecting, streaming, \
                reconnecting), whether the newest frame is fresh, last_frame_age_ms, \
                resolution, frame_rate_hz, frames received, reconnections and error counters \
                (corrupt, zero-sized, oversized frames, stream errors). Takes no arguments; \
                read-only.",
            input_schema: no_arguments,
            output_schema: camera_tools::status_output_schema,
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: true,
            run: camera_tools::camera_status,
        },
        ToolEntry {
            name: "list_captures",
            title: "List saved pictures",
            description: "Lists the pictures kept onboard by capture_image with save: true, \
                newest first (limit 1 to 200, default 50): id, time, file path on the vehicle, \
                bytes, resolution and the position, altitude and heading at capture. The oldest \
                are deleted automatically when the storage limit is reached. Read-only.",
            input_schema: camera_tools::list_input_schema,
            output_schema: camera_tools::list_output_schema,
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: true,
            run: camera_tools::list_captures,
        },
        ToolEntry {
            name: "get_capture",
            title: "Get a saved picture",
            description: "Returns a picture kept onboard (id from list_captures or from \
                capture_image's saved.id) as a JPEG downscaled to max_width_px (default 640), \
                with its metadata. Read-only.",
            input_schema: camera_tools::get_input_schema,
            output_schema: camera_tools::get_output_schema,
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: true,
            run: camera_tools::get_capture,
        },
        ToolEntry {
            name: "arm",
            title: "Arm the motors",
            description: "Arms the motors on the ground (the propellers start to spin at idle). \
                The autopilot runs its own pre-arm checks and may refuse (the reason is returned). \
                ArduPilot and PX4 disarm again by themselves after about 10 s without a takeoff, \
                so prefer `takeoff`, which arms as needed. Takes no arguments. Ends with the \
                vehicle's state.",
            input_schema: no_arguments,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: arm,
        },
        ToolEntry {
            name: "disarm",
            title: "Disarm the motors",
            description: "Stops the motors, on the ground only: refused while the vehicle is in \
                the air (use `land` or `return_home`; they disarm on touchdown). Takes no \
                arguments. Ends with the vehicle's state.",
            input_schema: no_arguments,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: disarm,
        },
        ToolEntry {
            name: "takeoff",
            title: "Take off",
            description: "Arms if needed and climbs straight up to `altitude_m` metres above \
                home, then holds there. Checked against the safety envelope first (ceiling, \
                battery reserve, GPS). Long-running: sends progress (altitude) and returns when \
                the vehicle reports the altitude reached. Cancelling holds position.",
            input_schema: schema::input::<TakeoffArgs>,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: false,
            open_world: true,
            needs_camera: false,
            run: takeoff,
        },
        ToolEntry {
            name: "goto",
            title: "Fly to a position",
            description: "Flies in a straight line to `latitude_deg`, `longitude_deg` (WGS-84 \
                degrees) at `altitude_m` metres above home, optionally at `speed_m_s`. Refused \
                with the reason, before anything is sent, if the target or the path leaves the \
                keep-in zones (minus the margin), enters a keep-out zone (plus the margin), is \
                outside the altitude band, too far from home or too fast (call get_envelope to \
                see the limits). Long-running: progress gives the distance remaining; returns \
                when the vehicle reports arrival. A new motion command supersedes it; \
                cancelling holds position.",
            input_schema: schema::input::<GotoArgs>,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: goto,
        },
        ToolEntry {
            name: "move_relative",
            title: "Move relative to the vehicle",
            description: "Moves `forward_m` metres ahead, `right_m` metres to the right and \
                `up_m` metres up (negative values go back, left, down), in the vehicle's own \
                frame from its current heading: \"move right 50 cm\" is right_m 0.5. Checked \
                against the envelope like goto; returns when the vehicle reports arrival.",
            input_schema: schema::input::<MoveRelativeArgs>,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: false,
            open_world: true,
            needs_camera: false,
            run: move_relative,
        },
        ToolEntry {
            name: "set_heading",
            title: "Turn to a heading",
            description: "Turns in place to face `heading_deg` (0 north, 90 east, clockwise), \
                keeping position. Returns when the vehicle reports the heading.",
            input_schema: schema::input::<HeadingArgs>,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: set_heading,
        },
        ToolEntry {
            name: "set_speed",
            title: "Set the horizontal speed",
            description: "Sets the horizontal ground speed for the current and later moves to \
                `speed_m_s` (bounded by the envelope's speed limit). Does not interrupt a \
                running goto. Returns when the autopilot acknowledges it.",
            input_schema: schema::input::<SpeedArgs>,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: set_speed,
        },
        ToolEntry {
            name: "hold",
            title: "Hold position",
            description: "Stops and holds the current position (ArduPilot BRAKE, PX4 Hold). \
                Always accepted, even outside the envelope or below the battery reserve. \
                Supersedes any running move. Takes no arguments.",
            input_schema: no_arguments,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: hold,
        },
        ToolEntry {
            name: "land",
            title: "Land here",
            description: "Descends and lands where the vehicle is, then disarms. Always \
                accepted. Long-running: progress gives the altitude; returns when the vehicle \
                reports it is on the ground and disarmed. Cancelling holds position.",
            input_schema: no_arguments,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: land,
        },
        ToolEntry {
            name: "return_home",
            title: "Return home and land",
            description: "Climbs to the autopilot's return altitude, flies straight home and \
                lands, then disarms (ArduPilot RTL, PX4 Return). Always accepted. Long-running: \
                progress gives the distance from home and the altitude. Cancelling holds.",
            input_schema: no_arguments,
            output_schema: schema::output::<ControlReply>,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: return_home,
        },
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
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: get_envelope,
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
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: preflight_check,
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
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: set_envelope,
        },
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
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: true,
            needs_camera: false,
            run: emergency_stop,
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
            read_only: false,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: reset_emergency_stop,
        },
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
            read_only: false,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: handled_by_the_server,
        },
        ToolEntry {
            name: "release_control",
            title: "Give the controls back",
            description: "Releases the control lease held by this session. Takes no arguments.",
            input_schema: no_arguments,
            output_schema: control_lease_schema,
            read_only: false,
            destructive: false,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: handled_by_the_server,
        },
        ToolEntry {
            name: "revoke_token",
            title: "Revoke a token or a subject",
            description: "Adds a token id (`jti`) and/or a subject to the denylist, persisted on \
                the drone; matching sessions end at once. Needs ADMIN.",
            input_schema: revoke_schema,
            output_schema: revoke_result_schema,
            read_only: false,
            destructive: true,
            idempotent: true,
            open_world: false,
            needs_camera: false,
            run: handled_by_the_server,
        },
    ]
}

/// Arguments of `takeoff`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TakeoffArgs {
    /// Altitude above home to climb to, in metres (1 to 1000; the envelope's ceiling minus
    /// its margin is the real limit).
    #[schemars(range(min = 1, max = 1000))]
    altitude_m: f64,
}

/// Arguments of `goto`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GotoArgs {
    /// Target latitude, WGS-84 degrees (-90 to 90).
    #[schemars(range(min = -90, max = 90))]
    latitude_deg: f64,
    /// Target longitude, WGS-84 degrees (-180 to 180).
    #[schemars(range(min = -180, max = 180))]
    longitude_deg: f64,
    /// Target altitude above home, metres (0 to 1000; the envelope narrows it).
    #[schemars(range(min = 0, max = 1000))]
    altitude_m: f64,
    /// Horizontal speed, m/s (0.1 to 30; the envelope narrows it). Default: the autopilot's.
    #[schemars(range(min = 0.1, max = 30))]
    #[serde(default)]
    speed_m_s: Option<f64>,
}

/// Arguments of `move_relative`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct MoveRelativeArgs {
    /// Metres ahead along the current heading (negative: back), -1000 to 1000.
    #[schemars(range(min = -1000, max = 1000))]
    #[serde(default)]
    forward_m: f64,
    /// Metres to the right (negative: left), -1000 to 1000.
    #[schemars(range(min = -1000, max = 1000))]
    #[serde(default)]
    right_m: f64,
    /// Metres up (negative: down), -1000 to 1000.
    #[schemars(range(min = -1000, max = 1000))]
    #[serde(default)]
    up_m: f64,
}

/// Arguments of `set_heading`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct HeadingArgs {
    /// Heading to face, degrees clockwise from north (0 to 360).
    #[schemars(range(min = 0, max = 360))]
    heading_deg: f64,
}

/// Arguments of `set_speed`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpeedArgs {
    /// Horizontal ground speed, m/s (0.1 to 30; the envelope narrows it).
    #[schemars(range(min = 0.1, max = 30))]
    speed_m_s: f64,
}

fn set_envelope_schema() -> Value {
    json!({"type": "object", "description": "The new [envelope] section as JSON (same keys as the configuration file).", "additionalProperties": true})
}

/// Parses arguments; a bad argument is a tool error that says what is expected.
fn parse<T: serde::de::DeserializeOwned>(
    call: &ToolCall,
    tool: &str,
    expected: &str,
) -> Result<T, CallToolResult> {
    serde_json::from_value(Value::Object(call.arguments.clone())).map_err(|e| {
        tool_error(format!(
            "invalid arguments for {tool}: {e}. Expected {expected}."
        ))
    })
}

fn no_args(call: &ToolCall, tool: &str) -> Result<(), CallToolResult> {
    if call.arguments.is_empty() {
        Ok(())
    } else {
        let names: Vec<&String> = call.arguments.keys().collect();
        Err(tool_error(format!(
            "{tool} takes no arguments; got {names:?}. Call it with {{}}."
        )))
    }
}

/// How long a call waits for the loop's answer after it was cancelled.
const CANCEL_REPLY_WAIT: Duration = Duration::from_secs(2);

/// Hands an action to the decision loop, forwards its progress, returns its end with the
/// vehicle's resulting state. Anything but `completed` is a tool error (`isError: true`)
/// whose text says why.
async fn fly(call: ToolCall, action: Result<Action, CallToolResult>) -> CallToolResult {
    let action = match action {
        Ok(a) => a,
        Err(result) => return result,
    };
    if let Err(reason) = action.validate() {
        return tool_error(format!("{}: {reason}", action.name()));
    }
    let Some(control) = &call.control else {
        return tool_error("this server has no vehicle attached; nothing was sent".into());
    };
    let mut pending = match control.submit(action, call.caller.clone(), call.cancel.clone()) {
        Ok(p) => p,
        Err(e) => return tool_error(e.to_string()),
    };
    let reply = loop {
        tokio::select! {
            reply = &mut pending.reply => break reply.ok(),
            Some(update) = pending.progress.recv() => {
                call.progress.report(None, update.message).await;
            }
            _ = call.cancel.cancelled() => {
                // The loop sees the token on its next turn and answers with the hold.
                break tokio::time::timeout(CANCEL_REPLY_WAIT, &mut pending.reply)
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
        }
    };
    let Some(reply) = reply else {
        return tool_error(format!(
            "{}: the daemon stopped before answering; check get_status",
            action.name()
        ));
    };
    match serde_json::to_value(&reply) {
        Ok(v) if reply.outcome == Outcome::Completed => CallToolResult::structured(v),
        Ok(v) => CallToolResult::structured_error(v),
        Err(e) => tool_error(format!("internal error serialising the result: {e}")),
    }
}

fn arm(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = no_args(&call, "arm").map(|_| Action::Arm);
        fly(call, a).await
    })
}

fn disarm(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = no_args(&call, "disarm").map(|_| Action::Disarm);
        fly(call, a).await
    })
}

fn hold(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = no_args(&call, "hold").map(|_| Action::Hold);
        fly(call, a).await
    })
}

fn land(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = no_args(&call, "land").map(|_| Action::Land);
        fly(call, a).await
    })
}

fn return_home(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = no_args(&call, "return_home").map(|_| Action::ReturnHome);
        fly(call, a).await
    })
}

fn takeoff(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = parse::<TakeoffArgs>(&call, "takeoff", "{\"altitude_m\": metres above home}").map(
            |a| Action::Takeoff {
                altitude_m: a.altitude_m,
            },
        );
        fly(call, a).await
    })
}

fn goto(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = parse::<GotoArgs>(
            &call,
            "goto",
            "{\"latitude_deg\", \"longitude_deg\", \"altitude_m\" above home, optional \"speed_m_s\"}",
        )
        .map(|a| Action::Goto {
            latitude_deg: a.latitude_deg,
            longitude_deg: a.longitude_deg,
            altitude_m: a.altitude_m,
            speed_m_s: a.speed_m_s,
        });
        fly(call, a).await
    })
}

fn move_relative(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = parse::<MoveRelativeArgs>(
            &call,
            "move_relative",
            "{\"forward_m\", \"right_m\", \"up_m\"} in metres",
        )
        .map(|a| Action::MoveRelative {
            forward_m: a.forward_m,
            right_m: a.right_m,
            up_m: a.up_m,
        });
        fly(call, a).await
    })
}

fn set_heading(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a =
            parse::<HeadingArgs>(&call, "set_heading", "{\"heading_deg\": 0 to 360}").map(|a| {
                Action::SetHeading {
                    heading_deg: a.heading_deg,
                }
            });
        fly(call, a).await
    })
}

fn set_speed(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let a = parse::<SpeedArgs>(&call, "set_speed", "{\"speed_m_s\": 0.1 to 30}").map(|a| {
            Action::SetSpeed {
                speed_m_s: a.speed_m_s,
            }
        });
        fly(call, a).await
    })
}

fn get_envelope(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        if let Err(result) = no_args(&call, "get_envelope") {
            return result;
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

fn set_envelope(_call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        tool_error(
            "set_envelope is not implemented in this version: nothing was changed. The \
             envelope comes from the `[envelope]` section of the daemon's configuration; change \
             it there and restart the daemon. get_envelope shows the envelope in force."
                .into(),
        )
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

/// Result of `revoke_token` (written by `Guard::revoke`).
fn revoke_result_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "revoked_jtis": {"type": "integer", "minimum": 0, "description": "Token ids on the denylist now."},
            "revoked_subjects": {"type": "integer", "minimum": 0, "description": "Subjects on the denylist now."},
            "persisted": {"type": "boolean", "description": "Written to auth.revocation_path."}
        },
        "required": ["revoked_jtis", "revoked_subjects", "persisted"]
    })
}

fn revoke_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "jti": {"type": "string", "minLength": 1, "maxLength": 128},
            "subject": {"type": "string", "minLength": 1, "maxLength": 128},
        },
        "additionalProperties": false,
    })
}

fn handled_by_the_server(_call: ToolCall) -> ToolFuture {
    Box::pin(async { tool_error("internal error: this tool is handled by the server".into()) })
}

fn preflight_check(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        if let Err(result) = no_args(&call, "preflight_check") {
            return result;
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

fn get_status(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        if !call.arguments.is_empty() {
            let names: Vec<&String> = call.arguments.keys().collect();
            return tool_error(format!(
                "get_status takes no arguments; got {names:?}. Call it with {{}}."
            ));
        }
        let report = call.status.borrow().clone();
        structured(&report)
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
        m.flight_mode.clone(),
        m.landed_state.clone(),
        m.system_status.clone(),
    )
}

fn wait_for_mode_change(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
        let args: WaitArgs = match serde_json::from_value(Value::Object(call.arguments.clone())) {
            Ok(a) => a,
            Err(e) => {
                return tool_error(format!(
                    "invalid arguments: {e}. Expected {{\"timeout_s\": seconds from 1 to 600}}."
                ));
            }
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
    Box::pin(async move {
        emergency_stop_result(call.estop.as_ref(), call.arguments, &call.caller.identity).await
    })
}

fn reset_emergency_stop(call: ToolCall) -> ToolFuture {
    Box::pin(async move {
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

/// State one session shares with the shell.
#[derive(Debug, Default)]
pub struct SessionShared {
    /// The client called `resources/subscribe` for `vehicle://status`.
    pub status_subscribed: AtomicBool,
    /// The client called `resources/subscribe` for `camera://latest`.
    pub camera_subscribed: AtomicBool,
    /// The version `initialize` negotiated; `None` before (answers then use the newest).
    pub protocol_version: Mutex<Option<ProtocolVersion>>,
}

impl SessionShared {
    /// What the session's negotiated version may carry.
    pub fn features(&self) -> Features {
        self.protocol_version
            .lock()
            .ok()
            .and_then(|v| v.as_ref().map(Features::of))
            .unwrap_or(Features::LATEST)
    }
}

/// The handler of one session.
#[derive(Clone)]
pub struct DroneServer {
    status: watch::Receiver<StatusReport>,
    control: Option<ControlClient>,
    caller: Caller,
    estop: Option<crate::estop::StopClient>,
    /// Authorization and audit, shared by all sessions.
    guard: Arc<Guard>,
    /// The gate's key of this session (`{client_id}#{generation}`).
    session_id: String,
    /// The client id the broker attested (the RPC topic's) and this session's generation.
    client_id: String,
    generation: u64,
    shared: Arc<SessionShared>,
    /// Lowest level sent as `notifications/message`; none until `logging/setLevel`.
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    instructions: String,
    camera: Option<CameraHandle>,
}

fn level_rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

impl DroneServer {
    pub fn new(
        status: watch::Receiver<StatusReport>,
        shared: Arc<SessionShared>,
        description: &str,
        guard: Arc<Guard>,
        client_id: String,
        generation: u64,
    ) -> DroneServer {
        DroneServer {
            status,
            guard,
            session_id: crate::auth::session_key(&client_id, generation),
            client_id,
            generation,
            control: None,
            estop: None,
            caller: Caller {
                role: Role::Operator,
                identity: "unknown".into(),
            },
            shared,
            log_level: Arc::new(Mutex::new(None)),
            instructions: format!(
                "{description}. Call get_status first; subscribe to {STATUS_URI} for updates. \
                 Motion tools need the controls: call request_control first (one pilot at a time)."
            ),
            camera: None,
        }
    }

    /// Serves the camera tools and `camera://latest` from `camera`.
    pub fn with_camera(mut self, camera: Option<CameraHandle>) -> DroneServer {
        self.camera = camera;
        self
    }

    /// Attaches the decision loop. The caller given to tools is replaced on every call by
    /// the identity the gate verified (`call_tool`); this default is never used for a call.
    pub fn with_control(mut self, control: Option<ControlClient>, client_id: &str) -> DroneServer {
        self.control = control;
        self.caller = Caller {
            role: Role::Operator,
            identity: client_id.to_string(),
        };
        self
    }

    /// Attaches the e-stop channel.
    pub fn with_estop(mut self, estop: Option<crate::estop::StopClient>) -> DroneServer {
        self.estop = estop;
        self
    }

    /// The resources served to a caller of `role` (the camera's only with a camera).
    fn resources_for(&self, role: Role) -> Vec<Resource> {
        let mut resource = Resource::new(STATUS_URI, "vehicle-status")
            .with_title("Vehicle status")
            .with_description(
                "The same JSON as the get_status tool. Subscribe to receive \
                 notifications/resources/updated when it changes.",
            );
        resource.mime_type = Some("application/json".into());
        let mut resources = vec![resource];
        if self.camera.is_some() {
            let mut camera = Resource::new(CAMERA_URI, "camera-latest")
                .with_title("Latest camera image")
                .with_description(
                    "The newest fresh camera frame as a downscaled JPEG (base64 blob). \
                     Subscribe to be told, at a low configured rate, when a newer one exists.",
                );
            camera.mime_type = Some("image/jpeg".into());
            resources.push(camera);
        }
        let mut health = Resource::new(HEALTH_URI, "health-summary")
            .with_title("Health summary")
            .with_description(
                "healthy, degraded or failed, with the reasons, the alerts active now \
                 (battery_low, link_degraded, gps_lost, cpu_hot, audit_damaged, local_estop_unavailable, link_untrusted) and the last ones raised. \
                 Raised alerts are also sent as notifications/message (level warning).",
            );
        health.mime_type = Some("application/json".into());
        resources.push(health);
        let mut security = Resource::new(SECURITY_URI, "security-summary")
            .with_title("Security summary")
            .with_description(
                "Security events (bad or expired tokens, denied roles, rate limits, takeovers) \
                 counted by kind over the last hour and since start, the control lease, and \
                 the audit log's health.",
            );
        security.mime_type = Some("application/json".into());
        resources.push(security);
        let mut recent = Resource::new(AUDIT_RECENT_URI, "audit-recent")
            .with_title("Recent audit records")
            .with_description("The last 100 audit records, oldest first. ADMIN only.");
        recent.mime_type = Some("application/json".into());
        resources.push(recent);
        // Only what this caller may read.
        resources.retain(|r| crate::auth::permissions::resource(&r.uri) <= role);
        resources
    }

    /// True when `uri` is a resource of this server (the camera's only with a camera).
    fn serves(&self, uri: &str) -> bool {
        [STATUS_URI, HEALTH_URI, SECURITY_URI, AUDIT_RECENT_URI].contains(&uri)
            || (uri == CAMERA_URI && self.camera.is_some())
    }

    /// A served resource that sends no `notifications/resources/updated`.
    fn not_subscribable(&self, uri: &str) -> ErrorData {
        let mut subscribable = vec![STATUS_URI];
        if self.camera.is_some() {
            subscribable.push(CAMERA_URI);
        }
        errors::invalid_params(
            format!(
                "resource `{uri}` sends no update notifications; read it with resources/read. \
                 Subscribable: {}",
                subscribable.join(", ")
            ),
            Some(json!({"uri": uri})),
        )
    }

    /// The URIs a caller of `role` may read, for error messages.
    fn readable_uris(&self, role: Role) -> String {
        let uris: Vec<String> = self
            .resources_for(role)
            .into_iter()
            .map(|r| r.uri)
            .collect();
        if uris.is_empty() {
            "none for your role".into()
        } else {
            uris.join(", ")
        }
    }

    /// The error of a `resources/*` request for a URI this server does not serve (`-32002`,
    /// with the URI), listing what the caller may read. Only an authenticated caller is told
    /// the list.
    fn unknown_resource(&self, uri: &str) -> ErrorData {
        let role = self.guard.role(&self.session_id).unwrap_or(Role::Public);
        errors::resource_not_found(
            format!(
                "resource `{uri}` not found; resources you may read: {}",
                self.readable_uris(role)
            ),
            uri,
        )
    }

    /// The error of a `tools/call` for a tool this caller cannot see (`-32602`), listing the
    /// tools it may call: a READ_ONLY caller is not shown the flight tools, and no caller is
    /// shown the camera's tools on a drone without a camera.
    fn unknown_tool(&self, name: &str) -> ErrorData {
        let role = self.guard.role(&self.session_id).unwrap_or(Role::Public);
        let names: Vec<&str> = served_tools(role, self.camera.is_some())
            .map(|t| t.name)
            .collect();
        let why =
            if self.camera.is_none() && tools().iter().any(|t| t.name == name && t.needs_camera) {
                " (this drone has no camera configured)"
            } else {
                ""
            };
        errors::invalid_params(
            format!(
                "unknown tool `{name}`{why}; tools you may call: {}",
                names.join(", ")
            ),
            Some(json!({"tool": name})),
        )
    }

    /// Sends `notifications/message` if the client asked for this level or above.
    async fn log(&self, peer: &Peer<RoleServer>, level: LoggingLevel, data: Value) {
        let wanted = self.log_level.lock().map(|l| *l).unwrap_or(None);
        if wanted.is_some_and(|w| level_rank(level) >= level_rank(w)) {
            let mut param = LoggingMessageNotificationParam::new(level, data);
            param.logger = Some("flight-companion".into());
            let _ = peer.notify_logging_message(param).await;
        }
    }

    /// Sends every alert raised after the session started as `notifications/message`
    /// (level `warning`, logger `flight-companion.alerts`) unless the client asked only for
    /// `error` or above, and every envelope event (logger `flight-companion.envelope`, level
    /// `warning` near a margin, `error` for a breach and the breach action); ends when the
    /// session's transport closes or the daemon stops.
    async fn forward_alerts(self, peer: Peer<RoleServer>) {
        let mut status = self.status.clone();
        // Alerts raised before this session began are history (health://summary has them).
        let mut sent = status
            .borrow_and_update()
            .health
            .recent_alerts
            .last()
            .map_or(0, |a| a.sequence);
        let mut envelope_sent = status
            .borrow()
            .envelope_events
            .last()
            .map_or(0, |e| e.sequence);
        while status.changed().await.is_ok() {
            if peer.is_transport_closed() {
                return;
            }
            // Envelope warnings and breaches, at their own level, to every session.
            let envelope: Vec<EnvelopeEvent> = status
                .borrow()
                .envelope_events
                .iter()
                .filter(|e| e.sequence > envelope_sent)
                .cloned()
                .collect();
            for event in envelope {
                envelope_sent = event.sequence;
                let level = if event.level == "error" {
                    LoggingLevel::Error
                } else {
                    LoggingLevel::Warning
                };
                // Sent unless the client asked only for more severe messages: a client that
                // never called logging/setLevel still hears about its vehicle.
                let wanted = self.log_level.lock().map(|l| *l).unwrap_or(None);
                if wanted.is_some_and(|w| level_rank(w) > level_rank(level)) {
                    continue;
                }
                let mut param = LoggingMessageNotificationParam::new(
                    level,
                    json!({"event": "envelope", "message": event.message, "sequence": event.sequence}),
                );
                param.logger = Some("flight-companion.envelope".into());
                if peer.notify_logging_message(param).await.is_err() {
                    return;
                }
            }
            let fresh: Vec<RaisedAlert> = status
                .borrow_and_update()
                .health
                .recent_alerts
                .iter()
                .filter(|a| a.sequence > sent)
                .cloned()
                .collect();
            for alert in fresh {
                sent = alert.sequence;
                let wanted = self.log_level.lock().map(|l| *l).unwrap_or(None);
                if wanted.is_some_and(|w| level_rank(w) > level_rank(LoggingLevel::Warning)) {
                    continue;
                }
                let mut param = LoggingMessageNotificationParam::new(
                    LoggingLevel::Warning,
                    json!({"event": "alert", "alert": alert.alert, "message": alert.message, "sequence": alert.sequence}),
                );
                param.logger = Some("flight-companion.alerts".into());
                if peer.notify_logging_message(param).await.is_err() {
                    return;
                }
            }
        }
    }

    fn status_json(&self) -> Result<String, ErrorData> {
        serde_json::to_string(&*self.status.borrow())
            .map_err(|e| errors::internal(format!("status serialisation: {e}")))
    }
}

impl ServerHandler for DroneServer {
    fn get_info(&self) -> InitializeResult {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_logging()
            .build();
        let mut info = InitializeResult::new(capabilities);
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info.server_info = Implementation::new("flight-companion", crate::VERSION);
        info.instructions = Some(self.instructions.clone());
        info
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        // Its own task: a slow client never delays the session's requests.
        tokio::spawn(self.clone().forward_alerts(context.peer));
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(SUPPORTED_VERSIONS)
    }

    /// Verifies the token at `params._meta["flight-companion/token"]` before answering.
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let key = crate::auth::TOKEN_META_KEY;
        let from = |v: Option<Value>| {
            v.and_then(|m| m.get(key).and_then(Value::as_str).map(str::to_owned))
        };
        let token = from(
            request
                .meta
                .as_ref()
                .and_then(|m| serde_json::to_value(m).ok()),
        )
        .or_else(|| from(serde_json::to_value(&context.meta).ok()));
        self.guard.initialize(
            &self.client_id,
            self.generation,
            token.as_deref(),
            context.peer.clone(),
        )?;
        context.peer.set_peer_info(request.clone());
        let mut result = self.negotiate_initialize(&request)?;
        if let Ok(mut version) = self.shared.protocol_version.lock() {
            *version = Some(result.protocol_version.clone());
        }
        Features::of(&result.protocol_version).initialize(&mut result);
        Ok(result)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self
            .guard
            .authorize_method(&self.session_id, "tools/list")?;
        // Only what this caller may call, in the fields its version defines.
        let features = self.shared.features();
        Ok(ListToolsResult::with_all_items(
            served_tools(caller.role, self.camera.is_some())
                .map(|t| {
                    let mut tool = t.to_tool();
                    features.tool(&mut tool);
                    tool
                })
                .collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools()
            .iter()
            .find(|t| t.name == name && (self.camera.is_some() || !t.needs_camera))
            .map(ToolEntry::to_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = std::time::Instant::now();
        // A reserved name (a tool another issue adds) is authorized before "unknown tool",
        // so a READ_ONLY client asking for it learns it lacks the role either way.
        if !tools().iter().any(|t| t.name == request.name)
            && crate::auth::permissions::TOOLS
                .iter()
                .any(|p| p.name == request.name)
        {
            self.guard.authorize_tool(&self.session_id, &request.name)?;
        }
        let served = tools()
            .iter()
            .find(|t| t.name == request.name && (self.camera.is_some() || !t.needs_camera));
        let Some(entry) = served else {
            return Err(self.unknown_tool(&request.name));
        };
        let caller = self.guard.authorize_tool(&self.session_id, entry.name)?;
        self.log(
            &context.peer,
            LoggingLevel::Debug,
            json!({"event": "tools/call", "tool": entry.name}),
        )
        .await;
        let features = self.shared.features();
        let progress = Progress {
            target: context
                .meta
                .get_progress_token()
                .map(|t| ProgressTarget::Peer(context.peer.clone(), t)),
            sent: Arc::new(AtomicU64::new(0)),
            features,
        };
        let arguments = request.arguments.unwrap_or_default();
        let args_json = Value::Object(arguments.clone());
        // The journal gets TOOL and CORRELATION_ID (the JSON-RPC id) on every event of the call.
        let span = tracing::info_span!("tool", tool = entry.name, correlation_id = %context.id);
        let mut result = match entry.name {
            "request_control" | "release_control" if !arguments.is_empty() => tool_error(format!(
                "{} takes no arguments; call it with {{}}",
                entry.name
            )),
            "request_control" => self.guard.control(&caller, true).await?,
            "release_control" => self.guard.control(&caller, false).await?,
            "revoke_token" => self.guard.revoke(&caller, &args_json).await,
            _ => {
                let call = ToolCall {
                    arguments,
                    status: self.status.clone(),
                    progress: progress.clone(),
                    cancel: context.ct.clone(),
                    camera: self.camera.clone(),
                    control: self.control.clone(),
                    // The verified identity: its role is what the decision loop checks. It is
                    // named by its subject (e-stop history, logs), never by its client id.
                    caller: Caller {
                        role: caller.role,
                        identity: caller.subject.clone(),
                    },
                    estop: self.estop.clone(),
                };
                let run =
                    with_keepalive((entry.run)(call), &progress, entry.name, PROGRESS_KEEPALIVE);
                tracing::Instrument::instrument(run, span).await
            }
        };
        let audit_outcome = if result.is_error == Some(true) {
            let text = result
                .content
                .first()
                .and_then(|c| c.as_text().map(|t| t.text.clone()))
                .unwrap_or_default();
            format!("tool_error: {}", text.chars().take(200).collect::<String>())
        } else {
            "ok".to_string()
        };
        // The answer leaves only once its audit record is on disk (the e-stop never waits).
        let wait = crate::auth::permissions::tool(entry.name).class
            != crate::auth::permissions::Class::EmergencyStop;
        let request_id = serde_json::to_string(&context.id).unwrap_or_default();
        self.guard
            .record_call(
                &caller,
                &format!("tools/call:{}", entry.name),
                request_id,
                &args_json,
                audit_outcome,
                started,
                wait,
            )
            .await;
        let outcome = if context.ct.is_cancelled() {
            ToolOutcome::Cancelled
        } else if result.is_error == Some(true) {
            ToolOutcome::Error
        } else {
            ToolOutcome::Ok
        };
        crate::metrics::global().record_tool_call(entry.name, outcome, started.elapsed());
        features.call_result(&mut result);
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = self
            .guard
            .authorize_method(&self.session_id, "resources/list")?;
        let features = self.shared.features();
        let mut resources = self.resources_for(caller.role);
        for resource in &mut resources {
            features.resource(resource);
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if !self.serves(&request.uri) {
            self.guard
                .authorize_method(&self.session_id, "resources/read")?;
            return Err(self.unknown_resource(&request.uri));
        }
        let started = std::time::Instant::now();
        let caller = self
            .guard
            .authorize_resource(&self.session_id, &request.uri)?;
        // Every read is recorded (without waiting: a read changes nothing).
        self.guard
            .record_call(
                &caller,
                &format!("resources/read:{}", request.uri),
                serde_json::to_string(&context.id).unwrap_or_default(),
                &Value::Null,
                "ok".into(),
                started,
                false,
            )
            .await;
        if request.uri == SECURITY_URI || request.uri == AUDIT_RECENT_URI {
            let text = if request.uri == SECURITY_URI {
                self.guard.security_json().to_string()
            } else {
                Value::Array(self.guard.audit.recent(100)).to_string()
            };
            let contents = ResourceContents::text(text, request.uri.clone())
                .with_mime_type("application/json");
            return Ok(ReadResourceResult::new(vec![contents]).into());
        }
        if request.uri == CAMERA_URI
            && let Some(camera) = &self.camera
        {
            let captured = camera
                .capture(crate::camera::CaptureRequest::default())
                .await
                .map_err(|e| errors::internal(e.to_string()))?;
            use base64::Engine as _;
            let blob = base64::engine::general_purpose::STANDARD.encode(&captured.jpeg);
            let contents = ResourceContents::blob(blob, CAMERA_URI).with_mime_type("image/jpeg");
            return Ok(ReadResourceResult::new(vec![contents]).into());
        }
        if request.uri == HEALTH_URI {
            let text = serde_json::to_string(&self.status.borrow().health)
                .map_err(|e| errors::internal(format!("health serialisation: {e}")))?;
            let contents =
                ResourceContents::text(text, HEALTH_URI).with_mime_type("application/json");
            return Ok(ReadResourceResult::new(vec![contents]).into());
        }
        if request.uri != STATUS_URI {
            return Err(self.unknown_resource(&request.uri));
        }
        let contents = ResourceContents::text(self.status_json()?, STATUS_URI)
            .with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if !self.serves(&request.uri) {
            self.guard
                .authorize_method(&self.session_id, "resources/subscribe")?;
            return Err(self.unknown_resource(&request.uri));
        }
        let started = std::time::Instant::now();
        let caller = self
            .guard
            .authorize_resource(&self.session_id, &request.uri)?;
        self.guard
            .record_call(
                &caller,
                &format!("resources/subscribe:{}", request.uri),
                serde_json::to_string(&context.id).unwrap_or_default(),
                &Value::Null,
                "ok".into(),
                started,
                false,
            )
            .await;
        if request.uri == CAMERA_URI && self.camera.is_some() {
            self.shared.camera_subscribed.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if request.uri != STATUS_URI {
            return Err(self.not_subscribable(&request.uri));
        }
        self.shared.status_subscribed.store(true, Ordering::SeqCst);
        self.log(
            &context.peer,
            LoggingLevel::Info,
            json!({"event": "subscribed", "uri": STATUS_URI}),
        )
        .await;
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if request.uri == CAMERA_URI && self.camera.is_some() {
            self.shared.camera_subscribed.store(false, Ordering::SeqCst);
            return Ok(());
        }
        if !self.serves(&request.uri) {
            return Err(self.unknown_resource(&request.uri));
        }
        if request.uri != STATUS_URI {
            return Err(self.not_subscribable(&request.uri));
        }
        self.shared.status_subscribed.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.guard
            .authorize_method(&self.session_id, "logging/setLevel")?;
        if let Ok(mut level) = self.log_level.lock() {
            *level = Some(request.level);
        }
        self.log(
            &context.peer,
            LoggingLevel::Info,
            json!({"event": "logging level set", "level": request.level}),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::permissions::{self, Class};

    /// `tools/list` as an ADMIN sees it on a drone with a camera (the longest list).
    fn longest_list() -> Value {
        let tools: Vec<Tool> = served_tools(Role::Admin, true)
            .map(ToolEntry::to_tool)
            .collect();
        serde_json::to_value(ListToolsResult::with_all_items(tools)).unwrap()
    }

    /// Bound on the longest `tools/list` (compact JSON, as sent). It was 118 KB, 101 KB of
    /// it output schemas (get_status's 23 KB status schema twice, the e-stop status three
    /// times, schemars' formats and titles everywhere); it is about 73 KB now. The bound
    /// leaves room for a few more tools, and fails if a copy of get_status's 20 KB status
    /// schema comes back into another tool's outputSchema. `mcp_conformance.py` checks the
    /// list an OPERATOR gets over the wire against its own bound.
    const TOOLS_LIST_BYTES_MAX: usize = 80_000;

    #[test]
    fn tools_list_is_standard_json_schema_and_compact() {
        let list = longest_list();
        let bytes = list.to_string().len();
        assert!(bytes < TOOLS_LIST_BYTES_MAX, "tools/list is {bytes} bytes");
        for tool in list["tools"].as_array().unwrap() {
            for key in ["inputSchema", "outputSchema"] {
                let schema = &tool[key];
                assert!(schema.is_object(), "{}: {key}", tool["name"]);
                let formats = schema::formats(schema);
                assert!(
                    formats.is_empty(),
                    "{} {key}: formats {formats:?}",
                    tool["name"]
                );
                assert!(
                    !schema::has_type_arrays(schema),
                    "{} {key}: a `type` array is not portable: {schema}",
                    tool["name"]
                );
                let text = schema.to_string();
                assert!(
                    !text.contains("\"$schema\"") && !text.contains("\"title\""),
                    "{} {key}: {text}",
                    tool["name"]
                );
            }
        }
    }

    #[test]
    fn motion_is_destructive_and_open_world_reads_are_read_only() {
        for entry in tools() {
            let a = entry.to_tool().annotations.unwrap();
            let class = permissions::tool(entry.name).class;
            let name = entry.name;
            match class {
                Class::Motion | Class::EmergencyStop => {
                    assert_eq!(a.destructive_hint, Some(true), "{name}");
                    assert_eq!(a.open_world_hint, Some(true), "{name}");
                    assert_eq!(a.read_only_hint, Some(false), "{name}");
                }
                Class::Read if name != "capture_image" => {
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

    #[test]
    fn camera_tools_are_served_only_with_a_camera() {
        let with: Vec<&str> = served_tools(Role::Admin, true).map(|t| t.name).collect();
        let without: Vec<&str> = served_tools(Role::Admin, false).map(|t| t.name).collect();
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
        let public: Vec<&str> = served_tools(Role::Public, true).map(|t| t.name).collect();
        assert_eq!(public, vec!["emergency_stop"]);
    }

    fn channel_progress() -> (
        Progress,
        tokio::sync::mpsc::UnboundedReceiver<ProgressNotificationParam>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let progress = Progress {
            target: Some(ProgressTarget::Channel(tx)),
            sent: Arc::new(AtomicU64::new(0)),
            features: Features::LATEST,
        };
        (progress, rx)
    }

    #[tokio::test]
    async fn a_silent_call_reports_that_it_still_runs_a_talking_one_is_left_alone() {
        let period = Duration::from_millis(40);
        let (progress, mut rx) = channel_progress();
        let silent: ToolFuture = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(190)).await;
            tool_error("done".into())
        });
        let started = std::time::Instant::now();
        with_keepalive(silent, &progress, "goto", period).await;
        let periods = (started.elapsed().as_millis() / period.as_millis()) as usize;
        let mut got = Vec::new();
        while let Ok(p) = rx.try_recv() {
            got.push(p);
        }
        // One per period of silence (4 unless the machine stalled the sleep).
        assert!(
            got.len() >= 3 && got.len() <= periods,
            "{} keepalives in {periods} periods",
            got.len()
        );
        assert!(
            got[0]
                .message
                .as_deref()
                .unwrap()
                .starts_with("goto: still running")
        );
        let numbers: Vec<f64> = got.iter().map(|p| p.progress).collect();
        assert!(
            numbers.windows(2).all(|w| w[1] > w[0]),
            "increasing: {numbers:?}"
        );
        // A call that reports more often than the period gets no keepalive in between.
        let period = Duration::from_millis(100);
        let (progress, mut rx) = channel_progress();
        let own = progress.clone();
        let talking: ToolFuture = Box::pin(async move {
            for i in 0..8 {
                own.report(None, format!("step {i}")).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tool_error("done".into())
        });
        with_keepalive(talking, &progress, "goto", period).await;
        let mut messages = Vec::new();
        while let Ok(p) = rx.try_recv() {
            messages.push(p.message.unwrap());
        }
        assert!(
            messages.iter().all(|m| m.starts_with("step")),
            "{messages:?}"
        );
        // A 2024-11-05 session gets progress without `message`.
        let (mut progress, mut rx) = channel_progress();
        progress.features = Features::of_str("2024-11-05");
        progress.report(None, "climbing".into()).await;
        assert_eq!(rx.try_recv().unwrap().message, None);
    }
}
