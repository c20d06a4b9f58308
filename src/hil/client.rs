//! The one raw MCP client of the rig, the benchmarks and the demo: JSON-RPC written by hand
//! (no rmcp: what a benchmark times is the daemon and the broker, not a client library), over
//! either wire:
//! - MCP over MQTT ([`MqttConn`]): the product's own connection (`mcp::mqtt`: mutual TLS,
//!   `TCP_NODELAY`), its topics and user properties from `mcp::transport`;
//! - stdio: line-delimited JSON-RPC to a child process, as a desktop MCP host speaks to a stdio
//!   server (the demo, in front of the ground bridge).
//!
//! Two ways to use it, one implementation:
//! - [`Client`], one request at a time (`&mut self`): the benchmarks' path (nothing between the
//!   publish and the answer but the MQTT driver) and the demo's;
//! - [`Session`], the rig's: the same client in a task of its own, shared by every step of a
//!   scenario (cheap to clone, calls in parallel). It survives what the rig does to the daemon
//!   and the broker: it subscribes again after a reconnect and initializes again whenever the
//!   drone's presence comes back, as the ground bridge does, and fails the calls in flight when
//!   the drone or the broker goes away (their answers can no longer come) instead of letting
//!   them hang.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Filter;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::mcp::mqtt::{self, ConnectionSpec, MqttEvent};
use crate::mcp::transport::{ComponentType, Topics};

/// How long a [`MqttConn`] waits for a CONNACK or a SUBACK, and a benchmark for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One MQTT connection of the transport and the events its driver forwards.
pub struct MqttConn {
    client: AsyncClient,
    events: mpsc::Receiver<MqttEvent>,
    /// The client id: the CN of the certificate, which a broker that binds identities uses
    /// whatever id is asked for (dev-setup's Mosquitto does) and binds the topics to.
    pub id: String,
    component: ComponentType,
}

impl MqttConn {
    /// Starts connecting with `mqtt`'s certificate (without one, an id unique to this
    /// process) and returns at once: the CONNACK is the first event.
    pub fn start(
        mqtt: &MqttConfig,
        component: ComponentType,
        implementation: &str,
        events_capacity: usize,
        stop: &CancellationToken,
    ) -> anyhow::Result<MqttConn> {
        let id = mqtt
            .client_cert_path
            .as_deref()
            .and_then(|p| crate::cert::common_name(p).ok())
            .unwrap_or_else(|| format!("fc-raw-{}-{:x}", std::process::id(), fastrand::u64(..)));
        let spec = ConnectionSpec {
            client_id: id.clone(),
            component_type: component,
            meta: json!({"implementation": implementation, "version": crate::VERSION}),
            will: None,
            packet_bytes_max: 1 << 20,
            request_capacity: 256,
        };
        let (client, eventloop) = mqtt::connect(mqtt, &spec)
            .with_context(|| format!("MQTT connection to {}:{}", mqtt.host, mqtt.port))?;
        // Bounded; the driver waits when full (each connection is read by one task).
        let (tx, events) = mpsc::channel(events_capacity);
        mqtt::spawn_driver(eventloop, mqtt, tx, stop.clone());
        Ok(MqttConn {
            client,
            events,
            id,
            component,
        })
    }

    /// [`MqttConn::start`], then waits for the CONNACK.
    pub async fn open(
        mqtt: &MqttConfig,
        component: ComponentType,
        implementation: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<MqttConn> {
        let mut conn = MqttConn::start(mqtt, component, implementation, 256, stop)?;
        match tokio::time::timeout(TIMEOUT, conn.events.recv()).await {
            Ok(Some(MqttEvent::Connected(_))) => Ok(conn),
            other => bail!("no CONNACK from {}:{}: {other:?}", mqtt.host, mqtt.port),
        }
    }

    /// Subscribes `topic` (No Local for the transport's RPC topics) and waits for the SUBACK.
    pub async fn subscribe(&mut self, topic: String, no_local: bool) -> anyhow::Result<()> {
        let mut filter = Filter::new(topic, QoS::AtLeastOnce);
        filter.nolocal = no_local;
        self.client.subscribe_many([filter]).await?;
        loop {
            match tokio::time::timeout(TIMEOUT, self.events.recv()).await {
                Ok(Some(MqttEvent::SubAck(_))) => return Ok(()),
                Ok(Some(_)) => {}
                other => bail!("no SUBACK: {other:?}"),
            }
        }
    }

    /// Publishes at QoS 1 with the transport's user properties.
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> anyhow::Result<()> {
        self.publish_qos(topic, payload, QoS::AtLeastOnce).await
    }

    pub async fn publish_qos(
        &self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
    ) -> anyhow::Result<()> {
        let properties = mqtt::publish_properties(self.component, &self.id);
        self.client
            .publish_with_properties(topic, qos, false, payload, properties)
            .await?;
        Ok(())
    }

    /// The next event of the connection; `None` when its driver has stopped.
    pub async fn next_event(&mut self) -> Option<MqttEvent> {
        self.events.recv().await
    }

    /// The next PUBLISH (topic, payload) satisfying `want`, within [`TIMEOUT`]; a lost
    /// connection is an error.
    pub async fn receive(
        &mut self,
        want: impl Fn(&str, &[u8]) -> bool,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(MqttEvent::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if want(&topic, &p.payload) {
                        return Ok((topic, p.payload.to_vec()));
                    }
                }
                Ok(Some(MqttEvent::Disconnected { error, .. })) => bail!("disconnected: {error}"),
                Ok(Some(MqttEvent::TakenOver { .. })) => {
                    bail!("another client connected with this client id")
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("driver stopped"),
                Err(_) => bail!("no answer within {TIMEOUT:?}"),
            }
        }
    }
}

/// What the client says of itself.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `clientInfo.name` of `initialize`.
    pub name: String,
    /// The JWT `initialize` presents at `params._meta["flight-companion/token"]`.
    pub token: Option<String>,
    /// The protocol version `initialize` asks for.
    pub protocol_version: &'static str,
    /// How long [`Client::request`] waits for an answer; `None`: as long as it takes (the
    /// caller bounds it).
    pub answer_timeout: Option<Duration>,
}

impl ClientOptions {
    pub fn new(name: &str) -> ClientOptions {
        ClientOptions {
            name: name.into(),
            token: None,
            protocol_version: "2025-11-25",
            answer_timeout: None,
        }
    }
}

/// What arrived on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON-RPC message of the server: an answer, a notification or a request.
    Message(Value),
    /// The drone's presence (MQTT): online (`true`) or cleared (`false`).
    Presence(bool),
    /// The broker connection is (again) up: Clean Start, so the subscriptions must be made
    /// again (MQTT).
    Connected,
    /// The broker connection was lost or taken over (MQTT), and why.
    Disconnected(String),
}

/// How the client reaches the server.
enum Wire {
    /// MCP over MQTT to the drone of `topics`.
    Mqtt { conn: MqttConn, topics: Topics },
    /// Line-delimited JSON-RPC on a child's stdio.
    Stdio {
        stdin: ChildStdin,
        stdout: Lines<BufReader<ChildStdout>>,
    },
}

/// One MCP client: request ids, `initialize`, answers matched by id.
pub struct Client {
    wire: Wire,
    options: ClientOptions,
    next_id: u64,
}

impl Client {
    /// Over MQTT to the drone of `topics`, on `conn` (started, not necessarily connected):
    /// nothing is subscribed until [`Client::subscribe`].
    pub fn over_mqtt(conn: MqttConn, topics: Topics, options: ClientOptions) -> Client {
        Client {
            wire: Wire::Mqtt { conn, topics },
            options,
            next_id: 1,
        }
    }

    /// Over a child's stdio (a stdio MCP server, e.g. `flight-companion ground`).
    pub fn over_stdio(stdin: ChildStdin, stdout: ChildStdout, options: ClientOptions) -> Client {
        Client {
            wire: Wire::Stdio {
                stdin,
                stdout: BufReader::new(stdout).lines(),
            },
            options,
            next_id: 1,
        }
    }

    /// Connects to the drone of `topics` with `mqtt`'s certificate, waits for the CONNACK and
    /// subscribes its RPC topic (No Local) and its presence (SUBACKs awaited): ready for
    /// [`Client::initialize`].
    pub async fn connect_mqtt(
        mqtt: &MqttConfig,
        topics: Topics,
        options: ClientOptions,
        stop: &CancellationToken,
    ) -> anyhow::Result<Client> {
        let mut conn = MqttConn::open(mqtt, ComponentType::Client, &options.name, stop).await?;
        conn.subscribe(topics.rpc(&conn.id), true).await?;
        conn.subscribe(topics.presence(), false).await?;
        Ok(Client::over_mqtt(conn, topics, options))
    }

    /// The MQTT client id (`None` over stdio).
    pub fn client_id(&self) -> Option<&str> {
        match &self.wire {
            Wire::Mqtt { conn, .. } => Some(&conn.id),
            Wire::Stdio { .. } => None,
        }
    }

    /// Subscribes the session's topics without waiting for the SUBACK: its RPC topic (No
    /// Local, as the transport requires) and the drone's presence (retained: its arrival is
    /// when to initialize).
    pub async fn subscribe(&self) -> anyhow::Result<()> {
        let Wire::Mqtt { conn, topics } = &self.wire else {
            return Ok(());
        };
        let mut rpc = Filter::new(topics.rpc(&conn.id), QoS::AtLeastOnce);
        rpc.nolocal = true;
        let presence = Filter::new(topics.presence(), QoS::AtLeastOnce);
        conn.client.subscribe_many([rpc, presence]).await?;
        Ok(())
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends one JSON-RPC message: over MQTT on the session's RPC topic, except `initialize`,
    /// which goes to the drone's control topic.
    pub async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        match &mut self.wire {
            Wire::Mqtt { conn, topics } => {
                let topic = if message["method"] == "initialize" {
                    topics.control()
                } else {
                    topics.rpc(&conn.id)
                };
                conn.publish(topic, message.to_string().into_bytes()).await
            }
            Wire::Stdio { stdin, .. } => {
                let mut line = message.to_string();
                line.push('\n');
                stdin
                    .write_all(line.as_bytes())
                    .await
                    .context("the server closed its stdin")
            }
        }
    }

    /// Publishes raw bytes on any topic from this client's connection (the panic topic).
    pub async fn publish_raw(&self, topic: String, payload: Vec<u8>) -> anyhow::Result<()> {
        match &self.wire {
            Wire::Mqtt { conn, .. } => conn.publish(topic, payload).await,
            Wire::Stdio { .. } => bail!("a stdio client has no topics"),
        }
    }

    /// What arrives next; an error when the wire is gone (the driver stopped, stdout closed).
    pub async fn next(&mut self) -> anyhow::Result<Incoming> {
        match &mut self.wire {
            Wire::Mqtt { conn, topics } => loop {
                let event = conn.next_event().await.context("the MQTT driver stopped")?;
                return Ok(match event {
                    MqttEvent::Connected(_) => Incoming::Connected,
                    MqttEvent::Disconnected { error, .. } => Incoming::Disconnected(error),
                    MqttEvent::TakenOver { .. } => Incoming::Disconnected(
                        "another client connected with this client id".into(),
                    ),
                    MqttEvent::Publish(p) => {
                        if p.topic == topics.presence().as_bytes() {
                            Incoming::Presence(!p.payload.is_empty())
                        } else {
                            // Not JSON: nothing a client can answer; skipped.
                            match serde_json::from_slice(&p.payload) {
                                Ok(v) => Incoming::Message(v),
                                Err(_) => continue,
                            }
                        }
                    }
                    MqttEvent::SubAck(_) | MqttEvent::SubscribeSent(_) => continue,
                });
            },
            Wire::Stdio { stdout, .. } => {
                let line = stdout
                    .next_line()
                    .await?
                    .context("the server closed its stdout")?;
                let message = serde_json::from_str(&line).with_context(|| {
                    format!("the server wrote something that is not JSON: {line}")
                })?;
                Ok(Incoming::Message(message))
            }
        }
    }

    /// The next JSON-RPC message of the server; presence and connection events are skipped,
    /// a lost connection is an error.
    pub async fn next_message(&mut self) -> anyhow::Result<Value> {
        loop {
            match self.next().await? {
                Incoming::Message(v) => return Ok(v),
                Incoming::Disconnected(why) => bail!("disconnected: {why}"),
                Incoming::Presence(_) | Incoming::Connected => {}
            }
        }
    }

    /// The `initialize` request (with the token in `_meta` when there is one) and its id.
    pub fn initialize_request(&mut self) -> (u64, Value) {
        let id = self.next_id();
        let mut params = json!({
            "protocolVersion": self.options.protocol_version,
            "capabilities": {},
            "clientInfo": {"name": self.options.name, "version": crate::VERSION},
        });
        if let Some(token) = &self.options.token {
            params["_meta"] = json!({ crate::auth::TOKEN_META_KEY: token });
        }
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params});
        (id, request)
    }

    /// `initialize`, then `notifications/initialized`; returns the initialize result.
    pub async fn initialize(&mut self) -> anyhow::Result<Value> {
        let (id, request) = self.initialize_request();
        self.send(&request).await?;
        let result = self
            .answer(id, "initialize", &mut |_| {})
            .await
            .context("initialize")?;
        self.notify("notifications/initialized", json!({})).await?;
        Ok(result)
    }

    /// Sends a notification.
    pub async fn notify(&mut self, method: &str, params: Value) -> anyhow::Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    /// Ends the session as a client does: `notifications/disconnected`, then (over MQTT) the
    /// DISCONNECT; a stdio client just closes nothing here (drop it to close its pipes).
    pub async fn disconnect(&mut self) -> anyhow::Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/disconnected"}))
            .await?;
        if let Wire::Mqtt { conn, .. } = &self.wire {
            conn.client.disconnect().await?;
        }
        Ok(())
    }

    /// A request with the next id, not sent yet (a benchmark builds it before it starts the
    /// clock): send it with [`Client::send`], wait with [`Client::answer`].
    pub fn request_message(&mut self, method: &str, params: Value) -> (u64, Value) {
        let id = self.next_id();
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        (id, request)
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send_request(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        let (id, request) = self.request_message(method, params);
        self.send(&request).await?;
        Ok(id)
    }

    /// A request and its `result`; a JSON-RPC error is an `Err` naming the method. The
    /// server's other messages meanwhile are skipped.
    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.send_request(method, params).await?;
        self.answer(id, method, &mut |_| {}).await
    }

    /// `tools/call` of `name` and its `result` (a tool error is a result with `isError`); a
    /// JSON-RPC error is an `Err`.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> anyhow::Result<Value> {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }

    /// [`Client::call_tool`] with a `progressToken`: each message of the server until the
    /// answer (progress, log messages) is handed to `seen`.
    pub async fn call_tool_watching(
        &mut self,
        name: &str,
        arguments: Value,
        seen: &mut (dyn FnMut(&Value) + Send),
    ) -> anyhow::Result<Value> {
        let id = self.next_id();
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": {"progressToken": id}}});
        self.send(&call).await?;
        self.answer(id, name, seen).await
    }

    /// Waits for the answer to request `id` (within `answer_timeout` if set) and returns its
    /// `result`; a JSON-RPC error is an `Err` naming `what`. Every other message of the server
    /// is handed to `seen`.
    pub async fn answer(
        &mut self,
        id: u64,
        what: &str,
        seen: &mut (dyn FnMut(&Value) + Send),
    ) -> anyhow::Result<Value> {
        let limit = self.options.answer_timeout;
        let wait = async {
            loop {
                let message = self.next_message().await?;
                if message.get("method").is_none() && message["id"] == id {
                    return anyhow::Ok(message);
                }
                seen(&message);
            }
        };
        let message: Value = match limit {
            Some(limit) => tokio::time::timeout(limit, wait)
                .await
                .map_err(|_| anyhow::anyhow!("{what}: no answer within {limit:?}"))??,
            None => wait.await?,
        };
        if let Some(error) = message.get("error") {
            bail!(
                "{what} failed: {}",
                error["message"].as_str().unwrap_or("?")
            );
        }
        Ok(message["result"].clone())
    }
}

/// Where the drone is on the broker.
#[derive(Debug, Clone)]
pub struct DroneAddress {
    /// The transport's topics of the drone.
    pub topics: Topics,
    pub panic_topic_root: String,
}

impl DroneAddress {
    /// The panic topic `publisher` (its own certificate identity) may publish to.
    pub fn panic_topic(&self, publisher: &str) -> String {
        crate::estop::panic_topic(&self.panic_topic_root, &self.topics.server_id, publisher)
    }
}

/// What a tool call answered.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// False for a tool error (`isError`), a JSON-RPC error or a lost answer.
    pub ok: bool,
    /// The tool's text, the error's message, or why there is no answer.
    pub text: String,
}

enum Ask {
    /// A request (`tools/call`, `resources/subscribe`, ...) and where its answer goes.
    Request {
        method: String,
        params: Value,
        reply: oneshot::Sender<CallOutcome>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        done: oneshot::Sender<anyhow::Result<()>>,
    },
    /// End the session as a client does, then the task.
    Close { done: oneshot::Sender<()> },
}

/// One MCP session on its own MQTT connection, driven by a task of its own (the rig's).
/// Cheap to clone.
#[derive(Clone)]
pub struct Session {
    asks: mpsc::Sender<Ask>,
    pub principal: String,
    /// The client id: the CN of the session's certificate.
    pub client_id: String,
}

impl Session {
    /// Connects with `mqtt_config`'s certificate (one per principal: the broker takes its CN
    /// as the client id) and starts initializing; calls made before the drone answers wait.
    pub async fn open(
        mqtt_config: &MqttConfig,
        drone: DroneAddress,
        principal: &str,
        token: String,
        stop: CancellationToken,
    ) -> anyhow::Result<Session> {
        let cert = mqtt_config
            .client_cert_path
            .as_deref()
            .context("no client certificate for the session")?;
        crate::cert::common_name(cert)
            .with_context(|| format!("the certificate of {principal}"))?;
        let conn = MqttConn::start(
            mqtt_config,
            ComponentType::Client,
            "flight-companion hil",
            1024,
            &stop,
        )
        .with_context(|| format!("MQTT connection for {principal}"))?;
        let client_id = conn.id.clone();
        let mut options = ClientOptions::new("flight-companion-hil");
        options.token = Some(token);
        let (asks, ask_rx) = mpsc::channel(1024);
        let actor = Actor {
            client: Client::over_mqtt(conn, drone.topics, options),
            pending: HashMap::new(),
            waiting: Vec::new(),
            init_id: None,
            initialized: false,
        };
        tokio::spawn(actor.run(ask_rx, stop));
        Ok(Session {
            asks,
            principal: principal.to_owned(),
            client_id,
        })
    }

    /// Calls `tool`; `limit` bounds the wait (a lost answer is a failed call, not a hang).
    pub async fn call(&self, tool: &str, args: Value, limit: Duration) -> CallOutcome {
        self.request(
            "tools/call",
            json!({"name": tool, "arguments": args}),
            limit,
        )
        .await
    }

    /// Sends any request (e.g. `resources/subscribe`); `limit` bounds the wait. The answer's
    /// `result` or `error` is the outcome, as for a tool call.
    pub async fn request(&self, method: &str, params: Value, limit: Duration) -> CallOutcome {
        let (reply, answer) = oneshot::channel();
        let ask = Ask::Request {
            method: method.to_owned(),
            params,
            reply,
        };
        if self.asks.send(ask).await.is_err() {
            return lost("the session has ended");
        }
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => lost("the session has ended"),
            Err(_) => lost(&format!("no answer within {:.1} s", limit.as_secs_f64())),
        }
    }

    /// Publishes raw bytes on `topic` from this session's connection (the panic topic).
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> anyhow::Result<()> {
        let (done, result) = oneshot::channel();
        self.asks
            .send(Ask::Publish {
                topic,
                payload,
                done,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the session has ended"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("the session has ended"))?
    }
}

impl Session {
    /// Ends the session as a client does (`notifications/disconnected`, then the MQTT
    /// DISCONNECT) and stops its task; every clone of it is ended too.
    pub async fn close(&self, limit: Duration) {
        let (done, closed) = oneshot::channel();
        if self.asks.send(Ask::Close { done }).await.is_ok() {
            let _ = tokio::time::timeout(limit, closed).await;
        }
    }
}

fn lost(why: &str) -> CallOutcome {
    CallOutcome {
        ok: false,
        text: format!("no answer: {why}"),
    }
}

/// A [`Session`]'s task: the client, the calls in flight and those waiting for `initialize`.
struct Actor {
    client: Client,
    pending: HashMap<u64, oneshot::Sender<CallOutcome>>,
    /// Requests (method, params) asked before the session was initialized.
    waiting: Vec<(u64, String, Value, oneshot::Sender<CallOutcome>)>,
    init_id: Option<u64>,
    initialized: bool,
}

impl Actor {
    async fn run(mut self, mut asks: mpsc::Receiver<Ask>, stop: CancellationToken) {
        let name = self.client.client_id().unwrap_or_default().to_owned();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                incoming = self.client.next() => match incoming {
                    Ok(incoming) => {
                        if let Err(e) = self.on_incoming(incoming).await {
                            tracing::debug!("hil session {name}: {e:#}");
                        }
                    }
                    Err(_) => return,
                },
                ask = asks.recv() => match ask {
                    Some(Ask::Close { done }) => {
                        if self.initialized
                            && let Err(e) = self.client.disconnect().await
                        {
                            tracing::debug!("hil session {name}: disconnect: {e:#}");
                        }
                        self.fail_pending("the session was closed");
                        let _ = done.send(());
                        return;
                    }
                    Some(ask) => self.on_ask(ask).await,
                    None => return,
                },
            }
        }
    }

    async fn on_ask(&mut self, ask: Ask) {
        match ask {
            Ask::Request {
                method,
                params,
                reply,
            } => {
                let id = self.client.next_id();
                if self.initialized {
                    self.send_request(id, &method, params, reply).await;
                } else {
                    self.waiting.push((id, method, params, reply));
                }
            }
            Ask::Publish {
                topic,
                payload,
                done,
            } => {
                let _ = done.send(self.client.publish_raw(topic, payload).await);
            }
            // Handled by the loop, which ends with it.
            Ask::Close { done } => {
                let _ = done.send(());
            }
        }
    }

    async fn send_request(
        &mut self,
        id: u64,
        method: &str,
        params: Value,
        reply: oneshot::Sender<CallOutcome>,
    ) {
        let request = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        match self.client.send(&request).await {
            Ok(()) => {
                self.pending.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(lost(&format!("cannot publish: {e}")));
            }
        }
    }

    fn fail_pending(&mut self, why: &str) {
        self.initialized = false;
        self.init_id = None;
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(lost(why));
        }
    }

    async fn on_incoming(&mut self, incoming: Incoming) -> anyhow::Result<()> {
        match incoming {
            Incoming::Connected => {
                // Clean Start: every subscription is gone; the presence (retained) tells us
                // when to initialize.
                self.initialized = false;
                self.init_id = None;
                self.client.subscribe().await?;
            }
            Incoming::Disconnected(_) => {
                self.fail_pending("the MQTT connection was lost before the answer")
            }
            Incoming::Presence(false) => {
                self.fail_pending("the drone went offline before the answer")
            }
            Incoming::Presence(true) => {
                let (id, request) = self.client.initialize_request();
                self.init_id = Some(id);
                self.initialized = false;
                self.client.send(&request).await?;
            }
            Incoming::Message(v) => self.on_message(&v).await?,
        }
        Ok(())
    }

    async fn on_message(&mut self, v: &Value) -> anyhow::Result<()> {
        if v.get("method").is_some() {
            // Notifications and server requests: the rig does not act on them.
            return Ok(());
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            return Ok(());
        };
        if Some(id) == self.init_id {
            if let Some(error) = v.get("error") {
                bail!("initialize refused: {error}");
            }
            self.init_id = None;
            self.initialized = true;
            self.client
                .notify("notifications/initialized", json!({}))
                .await?;
            for (id, method, params, reply) in std::mem::take(&mut self.waiting) {
                self.send_request(id, &method, params, reply).await;
            }
            return Ok(());
        }
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(outcome_of(v));
        }
        Ok(())
    }
}

/// A JSON-RPC response to `tools/call` as an outcome.
fn outcome_of(v: &Value) -> CallOutcome {
    if let Some(error) = v.get("error") {
        return CallOutcome {
            ok: false,
            text: error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned),
        };
    }
    let result = v.get("result").cloned().unwrap_or(Value::Null);
    // Flight tools put their one-sentence answer in `structuredContent.message`; the text
    // content is the whole structure as JSON.
    if let Some(message) = result
        .pointer("/structuredContent/message")
        .and_then(Value::as_str)
    {
        return CallOutcome {
            ok: result.get("isError") != Some(&Value::Bool(true)),
            text: message.to_owned(),
        };
    }
    let text = result
        .get("content")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    CallOutcome {
        ok: result.get("isError") != Some(&Value::Bool(true)),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_outcomes() {
        let ok = outcome_of(&json!({"id":1,"result":{"content":[{"type":"text","text":"done"}]}}));
        assert_eq!(
            ok,
            CallOutcome {
                ok: true,
                text: "done".into()
            }
        );
        let refused = outcome_of(
            &json!({"id":1,"result":{"isError":true,"content":[{"type":"text","text":"refused: outside"}]}}),
        );
        assert!(!refused.ok && refused.text == "refused: outside");
        let error = outcome_of(&json!({"id":1,"error":{"code":-32602,"message":"bad args"}}));
        assert!(!error.ok && error.text == "bad args");
    }
}
