//! The MCP server of one session: tools, resources, logging (an rmcp `ServerHandler`).
//!
//! What is served comes from the registries: `mcp::tools` (one entry per tool: schemas,
//! permission, annotations, handler) and `mcp::resources`. This file is the glue: it lists
//! them cut to the caller's role and the session's version, authorizes each call with the
//! entry's permission, runs the handler with a progress keepalive, and audits the answer.

// rmcp marks logging deprecated because MCP 2026-07-28 drops it; this transport serves
// 2024-11-05..=2025-11-25, where `logging/setLevel` is part of the protocol.
#![allow(deprecated)]

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, InitializeRequestParams,
    InitializeResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ServerCapabilities, SetLevelRequestParams, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::errors;
use super::guard::Guard;
use super::resources::{self, ResourceRead, STATUS_URI, Subscription};
use super::tools::{self, PROGRESS_KEEPALIVE, Progress, ToolCall, with_keepalive};
use super::version::Features;
use crate::auth::permissions::Class;
use crate::camera::CameraHandle;
use crate::control::{Caller, ControlClient};
use crate::health::RaisedAlert;
use crate::metrics::ToolOutcome;
use crate::role::Role;
use crate::status::StatusReport;
use crate::supervisor::EnvelopeEvent;

/// The versions served over this transport (all with the initialize handshake).
pub const SUPPORTED_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2024_11_05,
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
];

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

    /// The flag of one kind of resource updates.
    pub fn subscribed(&self, kind: Subscription) -> &AtomicBool {
        match kind {
            Subscription::Status => &self.status_subscribed,
            Subscription::Camera => &self.camera_subscribed,
        }
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
        resources::served(role, self.camera.is_some())
            .map(resources::ResourceEntry::to_resource)
            .collect()
    }

    /// The resource of this server at `uri`, if it serves one there.
    fn resource(&self, uri: &str) -> Option<&'static resources::ResourceEntry> {
        resources::find(uri, self.camera.is_some())
    }

    /// A served resource that sends no `notifications/resources/updated`.
    fn not_subscribable(&self, uri: &str) -> ErrorData {
        let subscribable: Vec<&str> = resources::on_this_drone(self.camera.is_some())
            .filter(|r| r.subscription.is_some())
            .map(|r| r.uri)
            .collect();
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
        let uris: Vec<&str> = resources::served(role, self.camera.is_some())
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

    /// The answer to a call that must be recorded before it is answered while the audit log
    /// cannot be written (a full disk): refused before it runs, with the reason and what
    /// still works. Its own record is tried (and counted as lost) without waiting.
    async fn refuse_unrecorded(
        &self,
        caller: &crate::auth::Caller,
        tool: &str,
        context: &RequestContext<RoleServer>,
        started: std::time::Instant,
    ) -> rmcp::model::CallToolResult {
        let why = self
            .guard
            .audit
            .status()
            .unwritable
            .unwrap_or_else(|| "its last write failed".into());
        let text = format!(
            "refused: `{tool}` must be in the audit log before it is answered, and the audit \
             log cannot be written ({}); still available: emergency_stop, hold, land, \
             return_home, the control lease and every read; the log resumes by itself once its \
             disk has space again (alert `audit_unwritable`)",
            crate::audit::escape(&why)
        );
        self.guard
            .record_call(
                caller,
                &format!("tools/call:{tool}"),
                serde_json::to_string(&context.id).unwrap_or_default(),
                &Value::Null,
                "refused: audit_unwritable".into(),
                started,
                false,
            )
            .await;
        crate::metrics::global().record_tool_call(tool, ToolOutcome::Error, started.elapsed());
        errors::tool_error(text)
    }

    /// The error of a `tools/call` for a tool this caller cannot see (`-32602`), listing the
    /// tools it may call: a READ_ONLY caller is not shown the flight tools, and no caller is
    /// shown the camera's tools on a drone without a camera.
    fn unknown_tool(&self, name: &str) -> ErrorData {
        let role = self.guard.role(&self.session_id).unwrap_or(Role::Public);
        let names: Vec<&str> = tools::served(role, self.camera.is_some())
            .map(|t| t.name)
            .collect();
        let why = if self.camera.is_none() && tools::find(name).is_some_and(|t| t.needs_camera) {
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
    /// `data` is built only when the client asked for `level`: most calls log nothing.
    async fn log(
        &self,
        peer: &Peer<RoleServer>,
        level: LoggingLevel,
        data: impl FnOnce() -> Value,
    ) {
        let wanted = self.log_level.lock().map(|l| *l).unwrap_or(None);
        if wanted.is_some_and(|w| level_rank(level) >= level_rank(w)) {
            let mut param = LoggingMessageNotificationParam::new(level, data());
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
            tools::served(caller.role, self.camera.is_some())
                .map(|t| {
                    let mut tool = t.to_tool();
                    features.tool(&mut tool);
                    tool
                })
                .collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::on_this_drone(self.camera.is_some())
            .find(|t| t.name == name)
            .map(tools::ToolEntry::to_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = std::time::Instant::now();
        let Some(entry) =
            tools::on_this_drone(self.camera.is_some()).find(|t| t.name == request.name)
        else {
            return Err(self.unknown_tool(&request.name));
        };
        let caller = self
            .guard
            .authorize_tool(&self.session_id, entry.name, entry.permission)?;
        self.log(
            &context.peer,
            LoggingLevel::Debug,
            || json!({"event": "tools/call", "tool": entry.name}),
        )
        .await;
        let features = self.shared.features();
        if entry.permission.refused_unrecorded() && self.guard.audit.unwritable() {
            return Ok(self
                .refuse_unrecorded(&caller, entry.name, &context, started)
                .await
                .into());
        }
        let progress = Progress::new(&context.peer, context.meta.get_progress_token(), features);
        let arguments = request.arguments.unwrap_or_default();
        let args_json = Value::Object(arguments.clone());
        // The journal gets TOOL and CORRELATION_ID (the JSON-RPC id) on every event of the call.
        let span = tracing::info_span!("tool", tool = entry.name, correlation_id = %context.id);
        let call = ToolCall {
            arguments,
            status: self.status.clone(),
            progress: progress.clone(),
            cancel: context.ct.clone(),
            camera: self.camera.clone(),
            control: self.control.clone(),
            // The verified identity: its role is what the decision loop checks. It is named by
            // its subject (e-stop history, logs), never by its client id.
            caller: Caller {
                role: caller.role,
                identity: caller.subject.clone(),
            },
            session: caller.clone(),
            guard: self.guard.clone(),
            estop: self.estop.clone(),
        };
        let run = with_keepalive(entry.run(call), &progress, entry.name, PROGRESS_KEEPALIVE);
        let mut result = tracing::Instrument::instrument(run, span).await?;
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
        let wait = entry.permission.class != Class::EmergencyStop;
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
        let Some(entry) = self.resource(&request.uri) else {
            self.guard
                .authorize_method(&self.session_id, "resources/read")?;
            return Err(self.unknown_resource(&request.uri));
        };
        let started = std::time::Instant::now();
        let caller = self
            .guard
            .authorize_resource(&self.session_id, entry.uri, entry.role)?;
        // Every read is recorded (without waiting: a read changes nothing).
        self.guard
            .record_call(
                &caller,
                &format!("resources/read:{}", entry.uri),
                serde_json::to_string(&context.id).unwrap_or_default(),
                &Value::Null,
                "ok".into(),
                started,
                false,
            )
            .await;
        let contents = (entry.read)(ResourceRead {
            status: self.status.clone(),
            guard: self.guard.clone(),
            camera: self.camera.clone(),
        })
        .await?;
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let Some(entry) = self.resource(&request.uri) else {
            self.guard
                .authorize_method(&self.session_id, "resources/subscribe")?;
            return Err(self.unknown_resource(&request.uri));
        };
        let started = std::time::Instant::now();
        let caller = self
            .guard
            .authorize_resource(&self.session_id, entry.uri, entry.role)?;
        self.guard
            .record_call(
                &caller,
                &format!("resources/subscribe:{}", entry.uri),
                serde_json::to_string(&context.id).unwrap_or_default(),
                &Value::Null,
                "ok".into(),
                started,
                false,
            )
            .await;
        let Some(kind) = entry.subscription else {
            return Err(self.not_subscribable(entry.uri));
        };
        self.shared.subscribed(kind).store(true, Ordering::SeqCst);
        self.log(
            &context.peer,
            LoggingLevel::Info,
            || json!({"event": "subscribed", "uri": entry.uri}),
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
        let Some(entry) = self.resource(&request.uri) else {
            return Err(self.unknown_resource(&request.uri));
        };
        let Some(kind) = entry.subscription else {
            return Err(self.not_subscribable(entry.uri));
        };
        self.shared.subscribed(kind).store(false, Ordering::SeqCst);
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
            || json!({"event": "logging level set", "level": request.level}),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::errors::tool_error;
    use crate::mcp::schema;
    use crate::mcp::tools::ToolFuture;
    use std::time::Duration;

    /// `tools/list` as an ADMIN sees it on a drone with a camera (the longest list).
    fn longest_list() -> Value {
        let tools: Vec<Tool> = tools::served(Role::Admin, true)
            .map(tools::ToolEntry::to_tool)
            .collect();
        serde_json::to_value(ListToolsResult::with_all_items(tools)).unwrap()
    }

    /// Bound on the longest `tools/list` (compact JSON, as sent). It was 118 KB, 101 KB of
    /// it output schemas (get_status's 23 KB status schema twice, the e-stop status three
    /// times, schemars' formats and titles everywhere); it was about 73 KB, and 83 KB with the
    /// three parameter tools and the status' new keys (the lease holder, the audit outage), and
    /// 98 KB with the seven mission tools (15 KB, bounded by `mcp::tools::mission`'s own test),
    /// 103 KB with `mirror_fence` (2.5 KB) and the status' `autopilot_fence` (1.5 KB).
    /// The bound leaves room for a few more tools, and fails if a copy of get_status's 30 KB
    /// status schema comes back into another tool's outputSchema. `mcp_conformance.py` checks the
    /// list an OPERATOR gets over the wire against its own bound.
    const TOOLS_LIST_BYTES_MAX: usize = 106_000;

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

    #[tokio::test]
    async fn a_silent_call_reports_that_it_still_runs_a_talking_one_is_left_alone() {
        let period = Duration::from_millis(40);
        let (progress, mut rx) = Progress::channel(Features::LATEST);
        let silent: ToolFuture = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(190)).await;
            Ok(tool_error("done".into()))
        });
        let started = std::time::Instant::now();
        with_keepalive(silent, &progress, "goto", period)
            .await
            .unwrap();
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
        let (progress, mut rx) = Progress::channel(Features::LATEST);
        let own = progress.clone();
        let talking: ToolFuture = Box::pin(async move {
            for i in 0..8 {
                own.report(None, format!("step {i}")).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(tool_error("done".into()))
        });
        with_keepalive(talking, &progress, "goto", period)
            .await
            .unwrap();
        let mut messages = Vec::new();
        while let Ok(p) = rx.try_recv() {
            messages.push(p.message.unwrap());
        }
        assert!(
            messages.iter().all(|m| m.starts_with("step")),
            "{messages:?}"
        );
        // A 2024-11-05 session gets progress without `message`.
        let (progress, mut rx) = Progress::channel(Features::of_str("2024-11-05"));
        progress.report(None, "climbing".into()).await;
        assert_eq!(rx.try_recv().unwrap().message, None);
    }
}
