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
    InitializeResult, JsonObject, ListResourcesResult, ListToolsResult, LoggingLevel,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, SetLevelRequestParams,
    SubscribeRequestParams, Tool, ToolAnnotations, UnsubscribeRequestParams,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::camera_tools::{self, CAMERA_URI};
use super::errors;
use crate::camera::CameraHandle;
use crate::status::StatusReport;

/// URI of the status resource.
pub const STATUS_URI: &str = "vehicle://status";

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
    target: Option<(Peer<RoleServer>, ProgressToken)>,
    sent: Arc<AtomicU64>,
}

impl Progress {
    /// Sends the next progress notification (no-op without a `progressToken`).
    pub async fn report(&self, total: Option<f64>, message: String) {
        let Some((peer, token)) = &self.target else {
            return;
        };
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let mut param = ProgressNotificationParam::new(token.clone(), n as f64);
        param.total = total;
        param.message = Some(message);
        let _ = peer.notify_progress(param).await;
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
    pub run: fn(ToolCall) -> ToolFuture,
}

impl ToolEntry {
    fn to_tool(&self) -> Tool {
        let object = |v: Value| match v {
            Value::Object(o) => o,
            _ => JsonObject::new(),
        };
        Tool::new(self.name, self.description, object((self.input_schema)()))
            .with_title(self.title)
            .with_raw_output_schema(Arc::new(object((self.output_schema)())))
            .with_annotations(
                ToolAnnotations::new()
                    .read_only(self.read_only)
                    .destructive(self.destructive)
                    .idempotent(self.idempotent)
                    .open_world(false),
            )
    }
}

/// A JSON schema as a JSON value (draft 2020-12, schemars' default).
fn schema_of<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_else(|_| json!({"type": "object"}))
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
            output_schema: schema_of::<StatusReport>,
            read_only: true,
            destructive: false,
            idempotent: true,
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
            input_schema: schema_of::<WaitArgs>,
            output_schema: schema_of::<WaitResult>,
            read_only: true,
            destructive: false,
            idempotent: true,
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
            run: camera_tools::get_capture,
        },
    ]
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
    status: StatusReport,
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

/// State one session shares with the shell.
#[derive(Debug, Default)]
pub struct SessionShared {
    /// The client called `resources/subscribe` for `vehicle://status`.
    pub status_subscribed: AtomicBool,
    /// The client called `resources/subscribe` for `camera://latest`.
    pub camera_subscribed: AtomicBool,
}

/// The handler of one session.
#[derive(Clone)]
pub struct DroneServer {
    status: watch::Receiver<StatusReport>,
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
    ) -> DroneServer {
        DroneServer {
            status,
            shared,
            log_level: Arc::new(Mutex::new(None)),
            instructions: format!(
                "{description}. Call get_status first; subscribe to {STATUS_URI} for updates."
            ),
            camera: None,
        }
    }

    /// Serves the camera tools and `camera://latest` from `camera`.
    pub fn with_camera(mut self, camera: Option<CameraHandle>) -> DroneServer {
        self.camera = camera;
        self
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

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(SUPPORTED_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            tools().iter().map(ToolEntry::to_tool).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools()
            .iter()
            .find(|t| t.name == name)
            .map(ToolEntry::to_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(entry) = tools().iter().find(|t| t.name == request.name) else {
            let names: Vec<&str> = tools().iter().map(|t| t.name).collect();
            return Err(errors::invalid_params(
                format!(
                    "unknown tool `{}`; available tools: {}",
                    request.name,
                    names.join(", ")
                ),
                None,
            ));
        };
        self.log(
            &context.peer,
            LoggingLevel::Debug,
            json!({"event": "tools/call", "tool": entry.name}),
        )
        .await;
        let progress = Progress {
            target: context
                .meta
                .get_progress_token()
                .map(|t| (context.peer.clone(), t)),
            sent: Arc::new(AtomicU64::new(0)),
        };
        let call = ToolCall {
            arguments: request.arguments.unwrap_or_default(),
            status: self.status.clone(),
            progress,
            cancel: context.ct.clone(),
            camera: self.camera.clone(),
        };
        Ok((entry.run)(call).await.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
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
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
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
        if request.uri != STATUS_URI {
            return Err(unknown_resource(&request.uri));
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
        if request.uri == CAMERA_URI && self.camera.is_some() {
            self.shared.camera_subscribed.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if request.uri != STATUS_URI {
            return Err(unknown_resource(&request.uri));
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
        if request.uri != STATUS_URI {
            return Err(unknown_resource(&request.uri));
        }
        self.shared.status_subscribed.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
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

fn unknown_resource(uri: &str) -> ErrorData {
    errors::invalid_params(
        format!("unknown resource `{uri}`; available: {STATUS_URI}"),
        Some(json!({"uri": uri})),
    )
}
