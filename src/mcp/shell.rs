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
use rumqttc::v5::mqttbytes::v5::{Filter, Publish, RetainForwardRule, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::errors;
use super::guard::Guard;
use super::mqtt::{self, ConnectionSpec, MqttEvent, Will};
use super::resources::{self, CAMERA_URI, STATUS_URI, Subscription};
use super::server::{DroneServer, SessionShared};
use super::session::{Action, Authority, CallKind, EndReason, Limits, Sender, Sessions};
use super::transport::{self, ComponentType, Topics};
use crate::auth::permissions::{Class, Pool};
use crate::config::Config;
use crate::control::ControlClient;
use crate::status::StatusReport;

/// The e-stop's ends in the MCP shell: the channel into the decision loop (for the panic
/// topic and the `emergency_stop` fast path) and the broker connection's state (for the
/// ground-link failsafe).
pub struct EstopLink {
    pub client: crate::estop::StopClient,
    /// Skip to latest: the loop only needs the newest connection state and activity count.
    pub ground: watch::Sender<crate::estop::GroundState>,
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

/// What the session table reads of an outgoing message (`Sessions::handle_outgoing`):
/// whether it has a method (the table reads only that there is one), its id, and whether it
/// is a result or an error; not the body.
fn message_head(message: &ServerJsonRpcMessage) -> Value {
    let id = |id: &rmcp::model::RequestId| serde_json::to_value(id).unwrap_or(Value::Null);
    match message {
        ServerJsonRpcMessage::Request(r) => json!({"method": "request", "id": id(&r.id)}),
        ServerJsonRpcMessage::Notification(_) => json!({"method": "notification"}),
        ServerJsonRpcMessage::Response(r) => json!({"id": id(&r.id), "result": {}}),
        ServerJsonRpcMessage::Error(e) => match &e.id {
            Some(i) => json!({"id": id(i), "error": {}}),
            None => json!({"error": {}}),
        },
    }
}

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
    inbox: mpsc::Sender<ClientJsonRpcMessage>,
    shared: Arc<SessionShared>,
    stop: CancellationToken,
}

/// What a SUBSCRIBE was for.
#[derive(Debug, Clone)]
enum SubscribePurpose {
    Control,
    Panic,
    /// Every client's RPC, presence and capability topics towards this server.
    Clients,
}

/// The gate, as the session table asks it.
struct GuardAuthority<'a>(&'a Guard);

impl Authority for GuardAuthority<'_> {
    fn candidate_subject(&self, client_id: &str, generation: u64) -> Option<String> {
        self.0.candidate_subject(client_id, generation)
    }
    /// From the tool's registry entry: its class and pool, and for a reserved tool whether
    /// the gate lets this session through (the lease holder, the role).
    fn call_kind(&self, client_id: &str, generation: Option<u64>, tool: &str) -> CallKind {
        let Some(entry) = super::tools::find(tool) else {
            return CallKind::Ordinary;
        };
        let p = entry.permission;
        match p.pool {
            _ if p.class == Class::EmergencyStop => CallKind::EmergencyStop,
            Pool::LongWait => CallKind::LongWait,
            Pool::Reserved if generation.is_some_and(|g| self.0.is_priority(client_id, g, p)) => {
                CallKind::Reserved
            }
            _ => CallKind::Ordinary,
        }
    }
}

/// A server-id unique to this process: no `/`, `+`, `#`.
fn generated_server_id() -> String {
    format!("fc-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

struct Shell {
    client: AsyncClient,
    server_id: String,
    sessions: Sessions,
    /// Running rmcp services by session key (`{client_id}#{generation}`): a client's
    /// session and, beside it, the candidate of a new `initialize`.
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
    /// `{panic_topic_root}/{server_id}/`: the panic topics, followed by the publisher.
    panic_prefix: String,
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

    /// CONNACK: the broker's suggested server name, the session table told, every
    /// subscription made again (Clean Start), the ground link up for the e-stop.
    fn on_connected(
        &mut self,
        connack: &rumqttc::v5::mqttbytes::v5::ConnAck,
        topics: &mut Topics,
        limits: Limits,
        checkpoint: Option<(&str, &crate::audit::Published)>,
    ) {
        let suggested = connack
            .properties
            .as_ref()
            .and_then(|p| transport::user_property(&p.user_properties, transport::PROP_SERVER_NAME))
            .filter(|n| !n.is_empty() && !n.contains(['+', '#']))
            .map(str::to_owned);
        if let Some(name) = suggested
            && name != topics.server_name
        {
            // The Will keeps the configured name; the broker cleans it up.
            tracing::info!(name, "broker suggested MCP-SERVER-NAME; using it");
            topics.server_name = name;
            // The old table's sessions end first (their services stop).
            let actions = self.sessions.handle_connected();
            self.execute(actions);
            self.sessions = Sessions::new(topics.clone(), limits);
        }
        let actions = self.sessions.handle_connected();
        self.execute(actions);
        self.subscribes.clear();
        self.in_flight_subscribes.clear();
        tracing::info!(control = topics.control(), "connected to the broker");
        // Every client's topics towards this server, before the control topic:
        // a client is heard (and answered) whether or not it has a session,
        // and no initialize waits for a per-client SUBACK.
        let mut rpc = Filter::new(topics.rpc_filter(), QoS::AtLeastOnce);
        rpc.nolocal = true;
        let mut presence = Filter::new(topics.client_presence_filter(), QoS::AtLeastOnce);
        presence.retain_forward_rule = RetainForwardRule::Never;
        let mut capability = Filter::new(topics.client_capability_filter(), QoS::AtLeastOnce);
        capability.retain_forward_rule = RetainForwardRule::Never;
        self.subscribe(vec![rpc, presence, capability], SubscribePurpose::Clients);
        let control = Filter::new(topics.control(), QoS::AtLeastOnce);
        self.subscribe(vec![control], SubscribePurpose::Control);
        if let Some((topic, checkpoint)) = checkpoint {
            self.publish_checkpoint(topic, checkpoint);
        }
        if let Some(estop) = &self.estop {
            estop.ground.send_modify(|g| g.connected = true);
            // QoS 1 subscription: panic buttons may publish at QoS 0 or 1.
            // Retained messages are never sent: a stored press must not stop
            // the vehicle again at every start and reconnect.
            let mut panic = Filter::new(format!("{}+", self.panic_prefix), QoS::AtLeastOnce);
            panic.retain_forward_rule = RetainForwardRule::Never;
            self.subscribe(vec![panic], SubscribePurpose::Panic);
        }
    }

    /// A SUBACK, matched to what the subscription was for.
    fn on_suback(&mut self, suback: &rumqttc::v5::mqttbytes::v5::SubAck, topics: &Topics) {
        let ok = suback
            .return_codes
            .iter()
            .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
        match self.in_flight_subscribes.remove(&suback.pkid) {
            Some(SubscribePurpose::Control) if ok => {
                let presence = self.presence_message();
                self.publish(&topics.presence(), &presence, true);
                tracing::info!(presence = topics.presence(), "MCP server online");
            }
            Some(SubscribePurpose::Control) => {
                tracing::error!(codes = ?suback.return_codes, "the broker refused the control topic subscription (check the ACL); staying offline");
            }
            Some(SubscribePurpose::Panic) if ok => {
                tracing::info!(
                    topics = format!("{}+", self.panic_prefix),
                    "e-stop panic topics subscribed"
                );
            }
            Some(SubscribePurpose::Panic) => {
                tracing::error!(topics = format!("{}+", self.panic_prefix), codes = ?suback.return_codes, "the broker refused the e-stop panic topics (check the ACL): that trigger does not work");
            }
            Some(SubscribePurpose::Clients) if ok => {
                tracing::info!(rpc = topics.rpc_filter(), "client topics subscribed");
            }
            Some(SubscribePurpose::Clients) => {
                tracing::error!(codes = ?suback.return_codes, "the broker refused the subscription to the clients' RPC, presence or capability topics (check the ACL): clients will not be heard");
            }
            None => {}
        }
    }

    /// The connection is gone: said once, and the e-stop's ground-link failsafe told.
    fn on_disconnected(&mut self, was_connected: bool, error: &str, retry_in: Duration) {
        if was_connected {
            tracing::warn!(error, "MQTT connection lost; reconnecting");
        }
        if let Some(estop) = &self.estop {
            estop.ground.send_modify(|g| g.connected = false);
        }
        tracing::debug!(error, ?retry_in, "MQTT reconnect scheduled");
    }

    /// Stamps that this shell still serves, without waking the loop (it reads the stamp at
    /// its next turn, and its own deadline wakes it if the stamps stop).
    fn stamp_serving(&mut self) {
        if let Some(estop) = &self.estop {
            let now = std::time::Instant::now();
            estop.ground.send_if_modified(|g| {
                g.serving_at = Some(now);
                false
            });
        }
    }

    /// The status tick: session timeouts, the lease's expiry, `status://` updates.
    fn on_tick(
        &mut self,
        connected: bool,
        status_rx: &mut watch::Receiver<StatusReport>,
        compat_resource_updates_on_rpc: bool,
    ) {
        let actions = self.sessions.poll_timeouts(std::time::Instant::now());
        self.execute(actions);
        // Lease expiry may notify a session: never await its outgoing queue here.
        let g = self.guard.clone();
        let control = self.control.clone();
        tokio::spawn(async move {
            g.poll().await;
            // Expiry and session ends change the holder too (ground stations read it).
            if let Some(control) = control {
                control.publish_lease_holder(g.lease_holder_subject());
            }
        });
        if connected && status_rx.has_changed().unwrap_or(false) {
            status_rx.borrow_and_update();
            self.status_updated(compat_resource_updates_on_rpc);
        }
    }

    /// Graceful shutdown: tell every client, clear presence (a normal DISCONNECT discards
    /// the Will), then disconnect.
    fn say_goodbye(
        &mut self,
        connected: bool,
        checkpoints: &mut watch::Receiver<Option<Arc<crate::audit::Published>>>,
        checkpoint_topic: &str,
        topics: &Topics,
    ) {
        let actions = self.sessions.handle_shutdown();
        self.execute(actions);
        if connected {
            // The daemon's last checkpoint (signed at shutdown), before the DISCONNECT.
            if checkpoints.has_changed().unwrap_or(false) {
                let latest = checkpoints.borrow_and_update().clone();
                if let Some(checkpoint) = latest {
                    self.publish_checkpoint(checkpoint_topic, &checkpoint);
                }
            }
            self.publish_raw(&topics.presence(), Vec::new(), true);
        }
        let _ = self.client.try_disconnect();
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
        transport::server_online(
            &self.sessions.topics().server_name,
            &self.description,
            json!({
                "version": crate::VERSION,
                "implementation": "flight-companion",
                "server_id": self.server_id,
                "rbac": {"roles": rbac_roles()},
                "panic_topic": format!("{}{{client_id}}", self.panic_prefix),
            }),
        )
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
        for action in actions {
            match action {
                Action::StartSession {
                    client_id,
                    generation,
                    initialize,
                } => self.start_session(client_id, generation, *initialize),
                Action::Promote {
                    client_id,
                    generation,
                    replaced,
                    cut_short,
                } => self.promote(&client_id, generation, replaced, cut_short),
                Action::EndSession {
                    client_id,
                    generation,
                    reason,
                    established,
                } => {
                    let key = crate::auth::session_key(&client_id, generation);
                    if let Some(handle) = self.handles.remove(&key) {
                        handle.stop.cancel();
                    }
                    // A replaced session's identity and lease are settled by the promotion
                    // that follows (the lease may pass to the new session).
                    if !(established && reason == EndReason::Replaced) {
                        self.guard.session_ended(&key);
                    }
                    if established {
                        tracing::info!(client_id, generation, ?reason, "MCP session ended");
                    } else {
                        tracing::debug!(
                            client_id,
                            generation,
                            ?reason,
                            "initialize candidate ended"
                        );
                    }
                }
                Action::Deliver {
                    client_id,
                    generation,
                    message,
                } => self.deliver(&client_id, generation, *message),
                Action::EmergencyStop {
                    client_id,
                    generation,
                    id,
                    arguments,
                } => self.emergency_stop(&client_id, generation, id, arguments),
                Action::Publish { topic, message } => self.publish(&topic, &message, false),
                Action::Security {
                    kind,
                    client_id,
                    attested,
                    detail,
                    generation,
                } => {
                    tracing::warn!(kind, client_id, attested, "{detail}");
                    // A candidate's verified token names who sent the claim.
                    let subject = generation
                        .and_then(|g| self.guard.candidate_subject(&client_id, g))
                        .unwrap_or_default();
                    self.guard
                        .security_event(kind, &client_id, attested, &subject, &detail);
                }
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

    /// The candidate proved its client id: the gate makes it the session; a replaced
    /// session's client is told what happened to its requests and to the lease.
    fn promote(
        &mut self,
        client_id: &str,
        generation: u64,
        replaced: Option<u64>,
        cut_short: usize,
    ) {
        let Some(promotion) = self
            .guard
            .promote(client_id, generation, replaced, cut_short)
        else {
            tracing::warn!(
                client_id,
                generation,
                "promoted candidate unknown to the gate"
            );
            return;
        };
        tracing::info!(
            client_id,
            generation,
            subject = promotion.identity.subject,
            role = %promotion.identity.role,
            "MCP session started"
        );
        if let Some(old) = replaced {
            let note = json!({
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {
                    "level": "warning",
                    "logger": "flight-companion/session",
                    "data": {
                        "event": "session_replaced",
                        "text": format!(
                            "this client initialized again: the previous session (generation {old}) \
                             ended and its {cut_short} requests in flight were answered with an \
                             error; control lease: {}",
                            super::guard::lease_sentence(&promotion.lease)
                        ),
                        "requests_ended": cut_short,
                        "lease": format!("{:?}", promotion.lease).to_lowercase(),
                    },
                },
            });
            let topic = self.sessions.topics().rpc(client_id);
            self.publish(&topic, &note, false);
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
            generation,
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
        tracing::debug!(client_id, generation, "initialize candidate started");
        self.handles.insert(
            crate::auth::session_key(&client_id, generation),
            SessionHandle {
                inbox: inbox_tx,
                shared,
                stop,
            },
        );
    }

    fn deliver(&mut self, client_id: &str, generation: u64, message: ClientJsonRpcMessage) {
        let Some(handle) = self
            .handles
            .get(&crate::auth::session_key(client_id, generation))
        else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(message)) = handle.inbox.try_send(message) {
            if let ClientJsonRpcMessage::Request(request) = &message {
                let id = serde_json::to_value(&request.id).ok();
                let reply = errors::error_response(
                    id.as_ref(),
                    errors::SERVER_BUSY,
                    "this session has too many messages waiting; retry shortly",
                    Some(json!({"kind": "busy"})),
                );
                // As the session's own answer: the table ends the request's accounting.
                self.handle_outgoing_value(client_id, generation, reply);
            }
            tracing::warn!(client_id, "session inbox full: message refused");
        }
    }

    /// A message of a session's rmcp service: serialised once, straight to the payload (a
    /// `get_status` answer gets the published status's own JSON, see `splice`); the session
    /// table sees only its head (method, id, result or error).
    fn handle_outgoing(&mut self, (client_id, generation, message): Outgoing) {
        let Ok(mut payload) = serde_json::to_vec(&message) else {
            tracing::error!(client_id, "cannot serialise an outgoing MCP message");
            return;
        };
        if super::splice::is_marked(&message) {
            let status = self.status.borrow().serialized();
            payload = super::splice::splice(&payload, &status);
        }
        let head = message_head(&message);
        let (publish, actions) =
            self.sessions
                .handle_outgoing(std::time::Instant::now(), &client_id, generation, &head);
        if publish {
            let topic = self.sessions.topics().rpc(&client_id);
            self.publish_raw(&topic, payload, false);
        }
        self.execute(actions);
    }

    /// A message of a session (or answered on its behalf), through the table before it
    /// leaves.
    fn handle_outgoing_value(&mut self, client_id: &str, generation: u64, value: Value) {
        let (publish, actions) =
            self.sessions
                .handle_outgoing(std::time::Instant::now(), client_id, generation, &value);
        if publish {
            let topic = self.sessions.topics().rpc(client_id);
            self.publish(&topic, &value, false);
        }
        self.execute(actions);
    }

    fn handle_publish(&mut self, publish: Publish) {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let properties = publish
            .properties
            .as_ref()
            .map(|p| p.user_properties.as_slice())
            .unwrap_or(&[]);
        let sender = Sender {
            client_id: transport::user_property(properties, transport::PROP_CLIENT_ID),
            component_type: transport::user_property(properties, transport::PROP_COMPONENT_TYPE),
            retain: publish.retain,
        };
        let panic = topic.strip_prefix(&self.panic_prefix);
        // Everything that reaches us came through the broker's mTLS and ACL: ground activity.
        if let Some(estop) = &self.estop {
            // Counted without waking the decision loop, which reads it at its next turn (at
            // most `envelope.check_interval_s` away, clamped to 40 ms). A panic message
            // wakes it now: its thread is then awake when the stop request reaches it.
            let now = std::time::Instant::now();
            estop.ground.send_if_modified(|g| {
                g.activity_at = Some(now);
                panic.is_some()
            });
        }
        if let Some(publisher) = panic {
            let publisher = publisher.to_owned();
            self.handle_panic(&publisher, &publish.payload, publish.retain);
            return;
        }
        let authority = GuardAuthority(&self.guard);
        let actions = self.sessions.handle_publish(
            std::time::Instant::now(),
            &topic,
            &publish.payload,
            sender,
            &authority,
        );
        self.execute(actions);
    }

    /// A panic topic: stop now, without the session machinery, attributed to the identity
    /// the broker attested (the topic's last level, bound to the publisher's certificate by
    /// the ACL). A retained message is never acted on: it was stored, not pressed now (the
    /// subscription asks for none, and a broker that sends one anyway is not obeyed).
    fn handle_panic(&mut self, publisher: &str, payload: &[u8], retained: bool) {
        let reason = match crate::estop::panic_decision(publisher, payload, retained) {
            crate::estop::PanicDecision::Drop => {
                tracing::warn!(topic_tail = %publisher.escape_debug(), "panic topic with no usable publisher level: dropped");
                return;
            }
            crate::estop::PanicDecision::IgnoreRetained { reason } => {
                self.guard.record_panic(
                    publisher,
                    &reason,
                    false,
                    "retained message on the panic topic: not acted on (a stored message is not a press)",
                );
                tracing::warn!(publisher, "retained panic-topic message ignored");
                return;
            }
            crate::estop::PanicDecision::Stop { reason } => reason,
        };
        let Some(estop) = &self.estop else {
            tracing::warn!("panic topic message, but no vehicle is attached");
            return;
        };
        let client = estop.client.clone();
        let identity = self.guard.record_panic(
            publisher,
            &reason,
            true,
            "panic topic: emergency stop sent to the e-stop channel",
        );
        let ask = crate::estop::StopAsk::Stop(crate::estop::Trigger {
            source: crate::estop::Source::MqttPanic,
            identity,
            reason,
        });
        if let Err(e) = client.send(ask) {
            tracing::error!("panic topic: the stop could not be queued: {e}");
        }
    }

    /// `tools/call` of `emergency_stop` from the client of an RPC topic (session or not):
    /// outside the session's queue and every limit, on the e-stop channel from here; its
    /// answer is published from a task.
    fn emergency_stop(
        &mut self,
        client_id: &str,
        generation: Option<u64>,
        id: Value,
        arguments: Value,
    ) {
        let identity = self
            .guard
            .record_emergency_stop(client_id, generation, &id, &arguments);
        let client = self.estop.as_ref().map(|e| e.client.clone());
        let mqtt_client = self.client.clone();
        let topic = self.sessions.topics().rpc(client_id);
        let properties = mqtt::publish_properties(ComponentType::Server, &self.server_id);
        let arguments = match arguments {
            Value::Object(a) => a,
            _ => serde_json::Map::new(),
        };
        // Answered in the fields of the session's negotiated version, as the session would
        // (the newest for a client without a session).
        let features = generation
            .and_then(|g| self.handles.get(&crate::auth::session_key(client_id, g)))
            .map(|h| h.shared.features())
            .unwrap_or(super::version::Features::LATEST);
        tokio::spawn(async move {
            let mut result =
                super::tools::estop::emergency_stop_result(client.as_ref(), arguments, &identity)
                    .await;
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
        let clients: Vec<String> = self
            .sessions
            .active()
            .map(|(cid, _)| cid.to_owned())
            .collect();
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
        self.resource_updated(STATUS_URI, compat_on_rpc, Subscription::Status);
    }

    fn resource_updated(&mut self, uri: &str, compat_on_rpc: bool, kind: Subscription) {
        let subscribed: Vec<String> = self
            .sessions
            .active()
            .filter(|(cid, generation)| {
                self.handles
                    .get(&crate::auth::session_key(cid, *generation))
                    .is_some_and(|h| h.shared.subscribed(kind).load(Ordering::SeqCst))
            })
            .map(|(cid, _)| cid.to_owned())
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

/// `meta.rbac.roles` of the presence message, as the transport spec describes it: what each
/// role may call, from the tool and resource registries (a stock client learns its role's
/// reach from the presence alone; what it is given is decided per session, by token or broker
/// identity).
pub fn rbac_roles() -> Value {
    use crate::auth::permissions;
    use crate::role::Role;
    let served: Vec<&super::tools::ToolEntry> = super::tools::all().collect();
    let methods: Vec<&str> = errors::CLIENT_REQUESTS.to_vec();
    let describe = |role: Role| match role {
        Role::Public => "ping and lists; emergency_stop",
        Role::ReadOnly => "status, waits and resources",
        Role::Operator => "flight tools, with the control lease (one pilot at a time)",
        _ => "envelope, e-stop reset, revocation, audit; takes the controls over",
    };
    let roles: Vec<Value> = [Role::Public, Role::ReadOnly, Role::Operator, Role::Admin]
        .into_iter()
        .map(|role| {
            let tools: Vec<&str> = served
                .iter()
                .filter(|t| t.permission.role <= role)
                .map(|t| t.name)
                .collect();
            let allowed_tools = if tools.len() == served.len() {
                json!("all")
            } else {
                json!(tools)
            };
            // Without the camera's: whether this drone has one is not the role's business.
            let allowed_resources: Vec<&str> =
                resources::served(role, false).map(|r| r.uri).collect();
            let allowed_methods: Vec<&str> = methods
                .iter()
                .copied()
                .filter(|m| *m == "initialize" || permissions::method(m) <= role)
                .collect();
            json!({
                "name": role.name(),
                "description": describe(role),
                "allowed_methods": allowed_methods,
                "allowed_tools": allowed_tools,
                "allowed_resources": allowed_resources,
            })
        })
        .collect();
    Value::Array(roles)
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

/// The server's topics, with its configured id or a generated one.
fn topics_of(mcp_config: &crate::config::McpConfig) -> Topics {
    let server_id = mcp_config
        .server_id
        .clone()
        .unwrap_or_else(generated_server_id);
    Topics {
        server_root: mcp_config.server_topic_root.clone(),
        client_root: mcp_config.client_topic_root.clone(),
        rpc_root: mcp_config.rpc_topic_root.clone(),
        server_id,
        server_name: mcp_config.server_name.clone(),
    }
}

/// A session taken over is not fatal for the drone: it takes its server id back (a ground
/// certificate must not be able to silence a drone that way), so it is a disconnect.
fn taken_over_is_a_disconnect(event: MqttEvent, server_id: &str) -> MqttEvent {
    match event {
        MqttEvent::TakenOver { retry_in } => {
            tracing::error!(
                server_id,
                "the broker closed the connection: another client connected with this server id (mcp.server_id must be unique per drone); reconnecting"
            );
            MqttEvent::Disconnected {
                error: "session taken over".into(),
                retry_in,
            }
        }
        other => other,
    }
}

/// The gate of every call (the tokens' keys, revocations, rate limits, the lease) behind the
/// guard that records each decision.
fn guard(config: &Config, audit: crate::audit::AuditHandle) -> anyhow::Result<Arc<Guard>> {
    let gate_config =
        crate::auth::shell::gate_config(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if gate_config.verifier.keys.is_empty() && !gate_config.allow_anonymous {
        tracing::warn!("no [[auth.keys]]: every session will be refused");
    }
    if gate_config.allow_anonymous {
        tracing::warn!("auth.danger_allow_anonymous: sessions without a token get READ_ONLY");
    }
    Ok(Arc::new(Guard::new(
        crate::auth::Gate::new(gate_config),
        audit,
        config.auth.revocation_path.clone(),
    )))
}

/// The server's MQTT connection: its client id, presence Will and packet limit.
fn connection_spec(mcp_config: &crate::config::McpConfig, topics: &Topics) -> ConnectionSpec {
    // Accept packets well above the MCP limit so an oversized message arrives and is
    // refused with an error instead of being dropped silently by the broker.
    let packet_bytes_max = u32::try_from(mcp_config.message_bytes_max.saturating_mul(4))
        .unwrap_or(u32::MAX)
        .clamp(64 * 1024, 256 * 1024 * 1024);
    ConnectionSpec {
        client_id: topics.server_id.clone(),
        component_type: ComponentType::Server,
        meta: json!({"version": crate::VERSION, "implementation": "flight-companion"}),
        will: Some(Will {
            topic: topics.presence(),
            payload: Vec::new(),
            retain: true,
        }),
        packet_bytes_max,
        request_capacity: MQTT_REQUESTS,
    }
}

/// A bounded channel whose depth `/metrics` shows under `name`.
fn watched_channel<T: Send + 'static>(
    name: &str,
    capacity: usize,
) -> (mpsc::Sender<T>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    crate::metrics::global().watch_channel(name, &tx);
    (tx, rx)
}

/// The shell's periodic work, each skipping the ticks it missed.
struct Tickers {
    /// Session timeouts, the lease's expiry, `status://` updates (`mcp.status_update_rate_hz`).
    status: tokio::time::Interval,
    /// `camera://latest` updates: at most at the configured low rate, only when a new frame
    /// arrived since the last one (images are large; subscribers fetch them when told).
    camera: tokio::time::Interval,
    /// The stamps that say this shell still serves (`GroundState::serving_at`): the first at
    /// once, so the loop knows the shell before the broker answers.
    serving: tokio::time::Interval,
}

impl Tickers {
    fn new(config: &Config) -> Tickers {
        let every = |period: Duration| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            interval
        };
        let hz = |rate: f32| Duration::from_secs_f64(1.0 / f64::from(rate));
        Tickers {
            status: every(hz(config.mcp.status_update_rate_hz)),
            camera: every(hz(config.camera.resource_update_rate_hz.max(0.01))),
            serving: every(crate::estop::request::GROUND_SERVING_STAMP_PERIOD),
        }
    }
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
    let guard = guard(config, audit)?;
    let mcp_config = &config.mcp;
    let mut topics = topics_of(mcp_config);
    let server_id = topics.server_id.clone();
    let limits = Limits::from_config(mcp_config);
    let spec = connection_spec(mcp_config, &topics);
    let (client, eventloop) = mqtt::connect(&config.mqtt, &spec)?;
    let (events_tx, mut events) = watched_channel("mqtt_events", MQTT_EVENTS);
    let driver_stop = CancellationToken::new();
    let driver = mqtt::spawn_driver(eventloop, &config.mqtt, events_tx, driver_stop.clone());
    let (outgoing_tx, mut outgoing) = watched_channel("mqtt_outgoing", OUTGOING_QUEUE);
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
        panic_prefix: crate::estop::panic_topic_prefix(&mcp_config.panic_topic_root, &server_id),
        stop_seq_announced: estop
            .as_ref()
            .and_then(|e| e.client.status().borrow().history.last().map(|r| r.seq))
            .unwrap_or(0),
        estop,
        camera: camera.clone(),
    };
    let mut stop_status = shell.estop.as_ref().map(|e| e.client.status());
    let mut tickers = Tickers::new(config);
    let mut camera_frames = camera.as_ref().map(|c| c.frames());
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
                match taken_over_is_a_disconnect(event, &shell.server_id) {
                    MqttEvent::Connected(connack) => {
                        connected = true;
                        if ever_connected {
                            crate::metrics::global().record_mqtt_reconnect();
                        }
                        ever_connected = true;
                        let latest = checkpoints.borrow_and_update().clone();
                        let checkpoint = latest.as_deref().map(|c| (checkpoint_topic.as_str(), c));
                        shell.on_connected(&connack, &mut topics, limits, checkpoint);
                    }
                    MqttEvent::SubscribeSent(pkid) => {
                        if let Some(purpose) = shell.subscribes.pop_front() {
                            shell.in_flight_subscribes.insert(pkid, purpose);
                        }
                    }
                    MqttEvent::SubAck(suback) => shell.on_suback(&suback, &topics),
                    MqttEvent::Publish(publish) => shell.handle_publish(publish),
                    MqttEvent::Disconnected { error, retry_in } => {
                        shell.on_disconnected(connected, &error, retry_in);
                        connected = false;
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
            _ = tickers.status.tick() => {
                let compat = mcp_config.compat_resource_updates_on_rpc;
                shell.on_tick(connected, &mut status_rx, compat);
            }
            _ = tickers.serving.tick(), if shell.estop.is_some() => shell.stamp_serving(),
            _ = tickers.camera.tick(), if camera_frames.is_some() => {
                if connected
                    && let Some(frames) = camera_frames.as_mut()
                    && frames.has_changed().unwrap_or(false)
                {
                    frames.borrow_and_update();
                    let compat = mcp_config.compat_resource_updates_on_rpc;
                    shell.resource_updated(CAMERA_URI, compat, Subscription::Camera);
                }
            }
        }
    }

    shell.say_goodbye(connected, &mut checkpoints, &checkpoint_topic, &topics);
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
