//! The IO shell of the MCP server: MQTT in and out, one rmcp service per session, the
//! status-update ticker. Decisions are made by [`Sessions`]; this file carries them out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::RoleServer;
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Publish, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::errors;
use super::guard::Guard;
use super::mqtt::{self, ComponentType, ConnectionSpec, MqttEvent, Will};
use super::server::{DroneServer, STATUS_URI, SessionShared};
use super::session::{Action, Limits, Sender, Sessions, Topics};
use crate::config::Config;
use crate::control::ControlClient;
use crate::status::StatusReport;

/// The e-stop's ends in the MCP shell: the channel into the decision loop (for the panic
/// topic and the `emergency_stop` fast path) and the broker connection's state (for the
/// ground-link failsafe).
pub struct EstopLink {
    pub client: crate::estop::StopClient,
    /// Skip to latest: the loop only needs the newest connection state and activity count.
    pub ground: watch::Sender<crate::estop::driver::GroundState>,
}

/// Messages one session's rmcp service sends, tagged with the session.
type Outgoing = (String, u64, ServerJsonRpcMessage);

/// Capacity of one session's inbound queue. Overflow policy: a request that does not fit
/// is answered with a busy error; a notification is dropped and logged.
const SESSION_INBOX: usize = 64;
/// Capacity of the queue of messages all sessions send. Sessions wait for room
/// (back-pressure on the handlers; nothing is dropped).
const OUTGOING_QUEUE: usize = 256;
/// Capacity of the MQTT driver's event queue (the driver waits for room).
const MQTT_EVENTS: usize = 256;
/// Capacity of rumqttc's request queue. Overflow policy: a publish that does not fit is
/// dropped and logged (the loop never blocks on MQTT).
const MQTT_REQUESTS: usize = 512;

#[derive(Debug, thiserror::Error)]
#[error("the session's message loop has stopped")]
pub struct SessionClosed;

/// rmcp transport over two channels: messages in from the shell, out to the shell.
struct ChannelTransport {
    inbox: mpsc::Receiver<ClientJsonRpcMessage>,
    out: mpsc::Sender<Outgoing>,
    client_id: String,
    generation: u64,
}

impl rmcp::transport::Transport<RoleServer> for ChannelTransport {
    type Error = SessionClosed;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), SessionClosed>> + Send + 'static {
        // Queue now, in call order, so progress notifications and responses leave in the
        // order the handler produced them; wait only when the queue is full.
        let tagged = (self.client_id.clone(), self.generation, item);
        let out = self.out.clone();
        let queued = self.out.try_send(tagged);
        async move {
            match queued {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(tagged)) => {
                    out.send(tagged).await.map_err(|_| SessionClosed)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(SessionClosed),
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ClientJsonRpcMessage>> + Send {
        self.inbox.recv()
    }

    async fn close(&mut self) -> Result<(), SessionClosed> {
        self.inbox.close();
        Ok(())
    }
}

struct SessionHandle {
    generation: u64,
    inbox: mpsc::Sender<ClientJsonRpcMessage>,
    shared: Arc<SessionShared>,
    stop: CancellationToken,
}

/// What a SUBSCRIBE was for.
#[derive(Debug, Clone)]
enum SubscribePurpose {
    Control,
    Panic,
    Client(String),
}

/// A server-id unique to this process: no `/`, `+`, `#`.
fn generated_server_id() -> String {
    format!("fc-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

struct Shell {
    client: AsyncClient,
    server_id: String,
    sessions: Sessions,
    handles: HashMap<String, SessionHandle>,
    subscribes: VecDeque<SubscribePurpose>,
    in_flight_subscribes: HashMap<u16, SubscribePurpose>,
    outgoing_tx: mpsc::Sender<Outgoing>,
    status: watch::Receiver<StatusReport>,
    /// The decision loop's request channel; `None` when served without a vehicle (tests).
    control: Option<ControlClient>,
    description: String,
    publish_failures: u64,
    guard: Arc<Guard>,
    estop: Option<EstopLink>,
    /// `{server_topic_root}/{server_id}/estop`.
    panic_topic: String,
    /// The newest e-stop event already announced to clients.
    stop_seq_announced: u64,
    camera: Option<crate::camera::CameraHandle>,
}

impl Shell {
    fn publish(&mut self, topic: &str, message: &Value, retain: bool) {
        let payload = message.to_string();
        self.publish_raw(topic, payload.into_bytes(), retain);
    }

    fn publish_raw(&mut self, topic: &str, payload: Vec<u8>, retain: bool) {
        let properties = mqtt::publish_properties(ComponentType::Server, &self.server_id);
        if let Err(e) = self.client.try_publish_with_properties(
            topic,
            QoS::AtLeastOnce,
            retain,
            payload,
            properties,
        ) {
            self.publish_failures += 1;
            tracing::warn!(topic, error = %e, failures = self.publish_failures, "MQTT publish dropped");
        }
    }

    /// A signed audit checkpoint, retained: a witness that connects later gets the newest.
    fn publish_checkpoint(&mut self, topic: &str, checkpoint: &crate::audit::Published) {
        match self.client.try_publish(
            topic,
            QoS::AtLeastOnce,
            true,
            checkpoint.message.clone().into_bytes(),
        ) {
            Ok(()) => tracing::debug!(topic, size = checkpoint.size, "audit checkpoint published"),
            Err(e) => {
                self.publish_failures += 1;
                tracing::warn!(topic, error = %e, "audit checkpoint not published (the next one will be)");
            }
        }
    }

    fn presence_message(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "method": "notifications/server/online",
            "params": {
                "server_name": self.sessions.topics().server_name,
                "description": self.description,
                "meta": {
                    "version": crate::VERSION,
                    "implementation": "flight-companion",
                    "server_id": self.server_id,
                },
            },
        })
    }

    fn subscribe(&mut self, filters: Vec<Filter>, purpose: SubscribePurpose) -> bool {
        match self.client.try_subscribe_many(filters) {
            Ok(()) => {
                self.subscribes.push_back(purpose);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, ?purpose, "MQTT subscribe could not be queued");
                false
            }
        }
    }

    fn execute(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Subscribe { client_id, filters } => {
                    let filters = filters
                        .into_iter()
                        .map(|(path, no_local)| {
                            let mut f = Filter::new(path, QoS::AtLeastOnce);
                            f.nolocal = no_local;
                            f
                        })
                        .collect();
                    if !self.subscribe(filters, SubscribePurpose::Client(client_id.clone())) {
                        queue.extend(self.sessions.handle_suback(&client_id, false));
                    }
                }
                Action::Unsubscribe { topics } => {
                    for topic in topics {
                        if let Err(e) = self.client.try_unsubscribe(topic.clone()) {
                            tracing::warn!(topic, error = %e, "MQTT unsubscribe dropped");
                        }
                    }
                }
                Action::StartSession {
                    client_id,
                    generation,
                    initialize,
                } => self.start_session(client_id, generation, *initialize),
                Action::EndSession {
                    client_id,
                    generation,
                } => {
                    if self
                        .handles
                        .get(&client_id)
                        .is_some_and(|h| h.generation == generation)
                        && let Some(handle) = self.handles.remove(&client_id)
                    {
                        handle.stop.cancel();
                        self.guard.session_ended(&client_id);
                        tracing::info!(client_id, "MCP session ended");
                    }
                }
                Action::Deliver {
                    client_id,
                    generation,
                    message,
                } => self.deliver(&client_id, generation, *message),
                Action::Publish { topic, message } => self.publish(&topic, &message, false),
                Action::Log {
                    warning: true,
                    text,
                } => tracing::warn!("{text}"),
                Action::Log {
                    warning: false,
                    text,
                } => tracing::info!("{text}"),
            }
        }
    }

    fn start_session(
        &mut self,
        client_id: String,
        generation: u64,
        initialize: ClientJsonRpcMessage,
    ) {
        let (inbox_tx, inbox_rx) = mpsc::channel(SESSION_INBOX);
        let shared = Arc::new(SessionShared::default());
        let stop = CancellationToken::new();
        let transport = ChannelTransport {
            inbox: inbox_rx,
            out: self.outgoing_tx.clone(),
            client_id: client_id.clone(),
            generation,
        };
        let server = DroneServer::new(
            self.status.clone(),
            shared.clone(),
            &self.description,
            self.guard.clone(),
            client_id.clone(),
        )
        .with_camera(self.camera.clone())
        .with_control(self.control.clone(), &client_id)
        .with_estop(self.estop.as_ref().map(|e| e.client.clone()));
        let ct = stop.clone();
        let cid = client_id.clone();
        tokio::spawn(async move {
            match rmcp::service::serve_server_with_ct(server, transport, ct).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => {
                    tracing::warn!(client_id = cid, error = %e, "MCP session failed to start")
                }
            }
        });
        // The inbox is empty: the initialize always fits.
        let _ = inbox_tx.try_send(initialize);
        tracing::info!(client_id, generation, "MCP session started");
        self.handles.insert(
            client_id,
            SessionHandle {
                generation,
                inbox: inbox_tx,
                shared,
                stop,
            },
        );
    }

    fn deliver(&mut self, client_id: &str, generation: u64, message: ClientJsonRpcMessage) {
        let Some(handle) = self
            .handles
            .get(client_id)
            .filter(|h| h.generation == generation)
        else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(message)) = handle.inbox.try_send(message) {
            let topic = self.sessions.topics().rpc(client_id);
            if let ClientJsonRpcMessage::Request(request) = &message {
                let id = serde_json::to_value(&request.id).ok();
                let reply = errors::error_response(
                    id.as_ref(),
                    errors::SERVER_BUSY,
                    "this session has too many messages waiting; retry shortly",
                    None,
                );
                self.publish(&topic, &reply, false);
            }
            tracing::warn!(client_id, "session inbox full: message refused");
        }
    }

    fn handle_outgoing(&mut self, (client_id, generation, message): Outgoing) {
        let Ok(value) = serde_json::to_value(&message) else {
            tracing::error!(client_id, "cannot serialise an outgoing MCP message");
            return;
        };
        if self
            .sessions
            .handle_outgoing(&client_id, generation, &value)
        {
            let topic = self.sessions.topics().rpc(&client_id);
            self.publish(&topic, &value, false);
        }
    }

    fn handle_publish(&mut self, publish: Publish) {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let properties = publish
            .properties
            .as_ref()
            .map(|p| p.user_properties.as_slice())
            .unwrap_or(&[]);
        let sender = Sender {
            client_id: mqtt::user_property(properties, mqtt::PROP_CLIENT_ID),
            component_type: mqtt::user_property(properties, mqtt::PROP_COMPONENT_TYPE),
        };
        // Everything that reaches us came through the broker's mTLS and ACL: ground activity.
        if let Some(estop) = &self.estop {
            estop
                .ground
                .send_modify(|g| g.activity = g.activity.wrapping_add(1));
        }
        if topic == self.panic_topic {
            self.handle_panic(&publish.payload, sender.client_id);
            return;
        }
        if let Some(cid) = sender.client_id
            && self.handles.contains_key(cid)
            && topic == self.sessions.topics().rpc(cid)
            && self.emergency_stop_fast_path(cid, &publish.payload)
        {
            return;
        }
        let actions = self.sessions.handle_publish(
            std::time::Instant::now(),
            &topic,
            &publish.payload,
            sender,
        );
        self.execute(actions);
    }

    /// The panic topic: stop now, without the session machinery. Acknowledged in the log
    /// and to every client through the e-stop's notifications.
    fn handle_panic(&mut self, payload: &[u8], client_id: Option<&str>) {
        let Some(estop) = &self.estop else {
            tracing::warn!("panic topic message, but no vehicle is attached");
            return;
        };
        let reason = crate::estop::panic_reason(payload);
        let ask = crate::estop::StopAsk::Stop(crate::estop::Trigger {
            source: crate::estop::Source::MqttPanic,
            identity: client_id.unwrap_or("unnamed MQTT client").to_owned(),
            reason,
        });
        if let Err(e) = estop.client.send(ask) {
            tracing::error!("panic topic: the stop could not be queued: {e}");
        }
    }

    /// `tools/call` of `emergency_stop` bypasses the session's queue and call limits: it
    /// goes on the e-stop channel from here and its answer is published from a task.
    /// Returns false when the message is anything else (it then takes the normal path).
    fn emergency_stop_fast_path(&mut self, client_id: &str, payload: &[u8]) -> bool {
        let Some(estop) = &self.estop else {
            return false;
        };
        if payload.len() > 64 * 1024 {
            return false;
        }
        let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(payload) else {
            return false;
        };
        if message.get("method").and_then(Value::as_str) != Some("tools/call") {
            return false;
        }
        let Some(params) = message.get("params").and_then(Value::as_object) else {
            return false;
        };
        if params.get("name").and_then(Value::as_str) != Some("emergency_stop") {
            return false;
        }
        let Some(id) = message.get("id").cloned() else {
            return false;
        };
        let arguments = match params.get("arguments") {
            Some(Value::Object(a)) => a.clone(),
            _ => serde_json::Map::new(),
        };
        self.guard
            .record_emergency_stop(client_id, &id, &Value::Object(arguments.clone()));
        let client = estop.client.clone();
        let mqtt_client = self.client.clone();
        let topic = self.sessions.topics().rpc(client_id);
        let properties = mqtt::publish_properties(ComponentType::Server, &self.server_id);
        let identity = client_id.to_owned();
        // Answered in the fields of the session's negotiated version, as the session would.
        let features = self
            .handles
            .get(client_id)
            .map(|h| h.shared.features())
            .unwrap_or(super::version::Features::LATEST);
        tokio::spawn(async move {
            let mut result =
                super::server::emergency_stop_result(Some(&client), arguments, &identity).await;
            features.call_result(&mut result);
            let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
            if let Err(e) = mqtt_client.try_publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                false,
                reply.to_string().into_bytes(),
                properties,
            ) {
                tracing::warn!("emergency_stop reply not published: {e}");
            }
        });
        true
    }

    /// Every new e-stop event goes to every session as `notifications/message` (level
    /// `alert` for triggers, `notice` otherwise), whatever logging level it asked for: an
    /// emergency stop is not a debug message.
    fn announce_stop(&mut self, status: &crate::estop::StopStatus) {
        let new: Vec<_> = status
            .history
            .iter()
            .filter(|r| r.seq > self.stop_seq_announced)
            .cloned()
            .collect();
        let Some(last) = new.last() else {
            return;
        };
        self.stop_seq_announced = last.seq;
        let clients: Vec<String> = self.handles.keys().cloned().collect();
        for record in new {
            let level = match record.event {
                crate::estop::StopEvent::Triggered { .. }
                | crate::estop::StopEvent::FailsafeTriggered { .. }
                | crate::estop::StopEvent::PilotTookOver { .. } => "alert",
                crate::estop::StopEvent::RungRefused { .. }
                | crate::estop::StopEvent::AutopilotLinkLost => "warning",
                _ => "notice",
            };
            let note = json!({
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {
                    "level": level,
                    "logger": "flight-companion/emergency-stop",
                    "data": {
                        "text": record.text,
                        "seq": record.seq,
                        "event": record.event,
                        "latched": status.latched,
                    },
                },
            });
            for cid in &clients {
                let topic = self.sessions.topics().rpc(cid);
                self.publish(&topic, &note, false);
            }
        }
    }

    fn status_updated(&mut self, compat_on_rpc: bool) {
        self.resource_updated(STATUS_URI, compat_on_rpc, |s| &s.status_subscribed);
    }

    fn resource_updated(
        &mut self,
        uri: &str,
        compat_on_rpc: bool,
        flag: fn(&SessionShared) -> &std::sync::atomic::AtomicBool,
    ) {
        let subscribed: Vec<String> = self
            .handles
            .iter()
            .filter(|(_, h)| flag(&h.shared).load(Ordering::SeqCst))
            .map(|(cid, _)| cid.clone())
            .collect();
        if subscribed.is_empty() {
            return;
        }
        let note = json!({
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": uri},
        });
        // The transport spec: one message per server on the capability topic.
        let capability = self.sessions.topics().capability();
        self.publish(&capability, &note, false);
        if compat_on_rpc {
            for cid in subscribed {
                let topic = self.sessions.topics().rpc(&cid);
                self.publish(&topic, &note, false);
            }
        }
    }
}

/// Runs the MCP server on the broker until `shutdown` is cancelled: presence, sessions,
/// status updates. Never blocks the caller's loop (spawn it). Returns an error only when
/// the connection cannot even be attempted (missing or invalid certificate files).
pub async fn serve(
    config: &Config,
    status: watch::Receiver<StatusReport>,
    control: Option<ControlClient>,
    estop: Option<EstopLink>,
    camera: Option<crate::camera::CameraHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let audit = open_audit(config)?;
    serve_with_audit(config, status, control, estop, camera, audit, shutdown).await
}

/// Opens the audit log of `config` (see [`crate::audit::open`]).
pub fn open_audit(config: &Config) -> anyhow::Result<crate::audit::AuditHandle> {
    crate::audit::open(config)
}

/// [`serve`] with an audit log the caller owns (the daemon records its start and stop).
pub async fn serve_with_audit(
    config: &Config,
    status: watch::Receiver<StatusReport>,
    control: Option<ControlClient>,
    estop: Option<EstopLink>,
    camera: Option<crate::camera::CameraHandle>,
    audit: crate::audit::AuditHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let gate_config =
        crate::auth::shell::gate_config(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if gate_config.verifier.keys.is_empty() && !gate_config.allow_anonymous {
        tracing::warn!("no [[auth.keys]]: every session will be refused");
    }
    if gate_config.allow_anonymous {
        tracing::warn!("auth.danger_allow_anonymous: sessions without a token get READ_ONLY");
    }
    let guard = Arc::new(Guard::new(
        crate::auth::Gate::new(gate_config),
        audit,
        config.auth.revocation_path.clone(),
    ));
    let mcp_config = &config.mcp;
    let server_id = mcp_config
        .server_id
        .clone()
        .unwrap_or_else(generated_server_id);
    let mut topics = Topics {
        server_root: mcp_config.server_topic_root.clone(),
        client_root: mcp_config.client_topic_root.clone(),
        rpc_root: mcp_config.rpc_topic_root.clone(),
        server_id: server_id.clone(),
        server_name: mcp_config.server_name.clone(),
    };
    let limits = Limits {
        sessions_max: mcp_config.sessions_max,
        session_calls_concurrent_max: mcp_config.session_calls_concurrent_max,
        calls_concurrent_max: mcp_config.calls_concurrent_max,
        message_bytes_max: mcp_config.message_bytes_max,
    };
    // Accept packets well above the MCP limit so an oversized message arrives and is
    // refused with an error instead of being dropped silently by the broker.
    let packet_bytes_max = u32::try_from(mcp_config.message_bytes_max.saturating_mul(4))
        .unwrap_or(u32::MAX)
        .clamp(64 * 1024, 256 * 1024 * 1024);
    let spec = ConnectionSpec {
        client_id: server_id.clone(),
        component_type: ComponentType::Server,
        meta: json!({"version": crate::VERSION, "implementation": "flight-companion"}),
        will: Some(Will {
            topic: topics.presence(),
            payload: Vec::new(),
            retain: true,
        }),
        packet_bytes_max,
        request_capacity: MQTT_REQUESTS,
    };
    let (client, eventloop) = mqtt::connect(&config.mqtt, &spec)?;
    let (events_tx, mut events) = mpsc::channel(MQTT_EVENTS);
    let driver_stop = CancellationToken::new();
    let driver = mqtt::spawn_driver(eventloop, &config.mqtt, events_tx, driver_stop.clone());
    let (outgoing_tx, mut outgoing) = mpsc::channel(OUTGOING_QUEUE);
    tracing::info!(
        server_id,
        server_name = topics.server_name,
        host = config.mqtt.host,
        port = config.mqtt.port,
        "MCP server connecting to the broker"
    );
    let mut shell = Shell {
        client,
        server_id: server_id.clone(),
        sessions: Sessions::new(topics.clone(), limits),
        handles: HashMap::new(),
        subscribes: VecDeque::new(),
        in_flight_subscribes: HashMap::new(),
        outgoing_tx,
        status: status.clone(),
        control,
        description: mcp_config.description.clone(),
        publish_failures: 0,
        guard: guard.clone(),
        panic_topic: crate::estop::panic_topic(&topics.server_root, &server_id),
        stop_seq_announced: estop
            .as_ref()
            .and_then(|e| e.client.status().borrow().history.last().map(|r| r.seq))
            .unwrap_or(0),
        estop,
        camera: camera.clone(),
    };
    let mut stop_status = shell.estop.as_ref().map(|e| e.client.status());
    // `camera://latest` updates: at most at the configured low rate, only when a new frame
    // arrived since the last one (images are large; subscribers fetch them when told).
    let camera_period =
        Duration::from_secs_f64(1.0 / f64::from(config.camera.resource_update_rate_hz.max(0.01)));
    let mut camera_ticker = tokio::time::interval(camera_period);
    camera_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut camera_frames = camera.as_ref().map(|c| c.frames());
    let period = Duration::from_secs_f64(1.0 / f64::from(mcp_config.status_update_rate_hz));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_rx = status;
    // The audit log's checkpoints, retained on their own topic for the ground's witness.
    let mut checkpoints = guard.audit.checkpoints();
    let checkpoint_topic = config.audit.resolved_topic(&config.mcp.server_name);
    let mut connected = false;
    // Every CONNACK after the first is a reconnect (the metrics count them).
    let mut ever_connected = false;

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.recv() => {
                let Some(event) = event else { break };
                let event = match event {
                    // Not fatal for the drone: it takes its server id back (a ground
                    // certificate must not be able to silence a drone that way).
                    MqttEvent::TakenOver { retry_in } => {
                        tracing::error!(server_id = shell.server_id, "the broker closed the connection: another client connected with this server id (mcp.server_id must be unique per drone); reconnecting");
                        MqttEvent::Disconnected { error: "session taken over".into(), retry_in }
                    }
                    other => other,
                };
                match event {
                    MqttEvent::Connected(connack) => {
                        connected = true;
                        if ever_connected {
                            crate::metrics::global().record_mqtt_reconnect();
                        }
                        ever_connected = true;
                        let suggested = connack
                            .properties
                            .as_ref()
                            .and_then(|p| mqtt::user_property(&p.user_properties, mqtt::PROP_SERVER_NAME))
                            .filter(|n| !n.is_empty() && !n.contains(['+', '#']))
                            .map(str::to_owned);
                        if let Some(name) = suggested
                            && name != topics.server_name
                        {
                            // The Will keeps the configured name; the broker cleans it up.
                            tracing::info!(name, "broker suggested MCP-SERVER-NAME; using it");
                            topics.server_name = name;
                            shell.sessions = Sessions::new(topics.clone(), limits);
                        }
                        let actions = shell.sessions.handle_connected();
                        shell.execute(actions);
                        shell.subscribes.clear();
                        shell.in_flight_subscribes.clear();
                        tracing::info!(control = topics.control(), "connected to the broker");
                        let control = Filter::new(topics.control(), QoS::AtLeastOnce);
                        shell.subscribe(vec![control], SubscribePurpose::Control);
                        let latest = checkpoints.borrow_and_update().clone();
                        if let Some(checkpoint) = latest {
                            shell.publish_checkpoint(&checkpoint_topic, &checkpoint);
                        }
                        if let Some(estop) = &shell.estop {
                            estop.ground.send_modify(|g| g.connected = true);
                            // QoS 1 subscription: panic buttons may publish at QoS 0 or 1.
                            let panic = Filter::new(shell.panic_topic.clone(), QoS::AtLeastOnce);
                            shell.subscribe(vec![panic], SubscribePurpose::Panic);
                        }
                    }
                    MqttEvent::SubscribeSent(pkid) => {
                        if let Some(purpose) = shell.subscribes.pop_front() {
                            shell.in_flight_subscribes.insert(pkid, purpose);
                        }
                    }
                    MqttEvent::SubAck(suback) => {
                        let ok = suback.return_codes.iter().all(|c| matches!(
                            c,
                            SubscribeReasonCode::Success(_)
                        ));
                        match shell.in_flight_subscribes.remove(&suback.pkid) {
                            Some(SubscribePurpose::Control) if ok => {
                                let presence = shell.presence_message();
                                shell.publish(&topics.presence(), &presence, true);
                                tracing::info!(presence = topics.presence(), "MCP server online");
                            }
                            Some(SubscribePurpose::Control) => {
                                tracing::error!(codes = ?suback.return_codes, "the broker refused the control topic subscription (check the ACL); staying offline");
                            }
                            Some(SubscribePurpose::Panic) if ok => {
                                tracing::info!(topic = shell.panic_topic, "e-stop panic topic subscribed");
                            }
                            Some(SubscribePurpose::Panic) => {
                                tracing::error!(topic = shell.panic_topic, codes = ?suback.return_codes, "the broker refused the e-stop panic topic (check the ACL): that trigger does not work");
                            }
                            Some(SubscribePurpose::Client(cid)) => {
                                let actions = shell.sessions.handle_suback(&cid, ok);
                                shell.execute(actions);
                            }
                            None => {}
                        }
                    }
                    MqttEvent::Publish(publish) => shell.handle_publish(publish),
                    MqttEvent::Disconnected { error, retry_in } => {
                        if connected {
                            tracing::warn!(error, "MQTT connection lost; reconnecting");
                        }
                        connected = false;
                        if let Some(estop) = &shell.estop {
                            estop.ground.send_modify(|g| g.connected = false);
                        }
                        tracing::debug!(error, ?retry_in, "MQTT reconnect scheduled");
                    }
                    MqttEvent::TakenOver { .. } => {}
                }
            }
            Some(Ok(())) = async {
                match stop_status.as_mut() {
                    Some(rx) => Some(rx.changed().await),
                    None => std::future::pending().await,
                }
            } => {
                if let Some(rx) = stop_status.as_mut() {
                    let status = rx.borrow_and_update().clone();
                    shell.announce_stop(&status);
                }
            }
            message = outgoing.recv() => {
                if let Some(message) = message {
                    shell.handle_outgoing(message);
                }
            }
            Ok(()) = checkpoints.changed() => {
                let latest = checkpoints.borrow_and_update().clone();
                if connected && let Some(checkpoint) = latest {
                    shell.publish_checkpoint(&checkpoint_topic, &checkpoint);
                }
            }
            _ = ticker.tick() => {
                let actions = shell.sessions.poll_timeouts(std::time::Instant::now());
                shell.execute(actions);
                // Lease expiry may notify a session: never await its outgoing queue here.
                let g = guard.clone();
                tokio::spawn(async move { g.poll().await });
                if connected && status_rx.has_changed().unwrap_or(false) {
                    status_rx.borrow_and_update();
                    shell.status_updated(mcp_config.compat_resource_updates_on_rpc);
                }
            }
            _ = camera_ticker.tick(), if camera_frames.is_some() => {
                if connected
                    && let Some(frames) = camera_frames.as_mut()
                    && frames.has_changed().unwrap_or(false)
                {
                    frames.borrow_and_update();
                    shell.resource_updated(
                        super::camera_tools::CAMERA_URI,
                        mcp_config.compat_resource_updates_on_rpc,
                        |s| &s.camera_subscribed,
                    );
                }
            }
        }
    }

    // Graceful shutdown: tell every client, clear presence (a normal DISCONNECT discards
    // the Will), then disconnect.
    let actions = shell.sessions.handle_shutdown();
    shell.execute(actions);
    if connected {
        // The daemon's last checkpoint (signed at shutdown), before the DISCONNECT.
        if checkpoints.has_changed().unwrap_or(false) {
            let latest = checkpoints.borrow_and_update().clone();
            if let Some(checkpoint) = latest {
                shell.publish_checkpoint(&checkpoint_topic, &checkpoint);
            }
        }
        shell.publish_raw(&topics.presence(), Vec::new(), true);
    }
    let _ = shell.client.try_disconnect();
    // Keep draining events so the driver can reach the DISCONNECT; it then ends and the
    // channel closes. Bounded: shutdown finishes within 1 s even with a dead broker (the daemon waits 1.5 s).
    let drained = tokio::time::timeout(Duration::from_secs(1), async {
        while events.recv().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        driver_stop.cancel();
    }
    let _ = driver.await;
    tracing::info!("MCP server stopped");
    Ok(())
}
