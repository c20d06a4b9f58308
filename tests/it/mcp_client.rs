//! A small MCP-over-MQTT test client in Rust (rumqttc, MQTT 5, mTLS with the ground
//! certificate of a dev-setup directory), and an in-process MCP server to drive.

use std::path::PathBuf;
use std::time::Duration;

use flight_companion::config::{Config, MqttConfig};
use flight_companion::mcp::mqtt::{self, ConnectionSpec, MqttEvent};
use flight_companion::mcp::transport::{self, ComponentType};
use flight_companion::status::StatusReport;
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Filter;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::support::broker::Broker;

pub const SERVER_ID: &str = "drone-1";
pub const SERVER_NAME: &str = "flight-companion/drone";

/// A message seen by the client: topic, payload (None when empty), retain flag.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Option<Value>,
    pub raw: Vec<u8>,
    /// The PUBLISH's user properties, as they came over the wire.
    pub user_properties: Vec<(String, String)>,
}

pub struct TestClient {
    pub cid: String,
    client: AsyncClient,
    events: mpsc::Receiver<MqttEvent>,
    stop: CancellationToken,
    next_id: i64,
    /// Messages received while waiting for something else.
    pub backlog: Vec<Seen>,
    /// The token `initialize` presents (the dev-setup OPERATOR token by default).
    pub token: Option<String>,
}

/// The MQTT settings of the ground identity `cid` (its own certificate, CN `cid`).
pub fn ground_config(broker: &Broker, cid: &str) -> MqttConfig {
    let (cert, key) = broker.dev.identity(cid);
    MqttConfig {
        enabled: true,
        host: "localhost".into(),
        port: broker.port(),
        ca_cert_path: Some(PathBuf::from(broker.dev.certs("ca.pem"))),
        client_cert_path: Some(PathBuf::from(cert)),
        client_key_path: Some(PathBuf::from(key)),
        keep_alive_s: 5,
        reconnect_backoff_ms_min: 50,
        reconnect_backoff_ms_max: 500,
    }
}

impl TestClient {
    /// Connects as the ground identity `cid` (a certificate of its own: the broker takes
    /// the CN as the client id), subscribes presence, capability and its RPC topic, waits
    /// for the SUBACK.
    pub async fn connect(broker: &Broker, cid: &str) -> TestClient {
        let spec = ConnectionSpec {
            client_id: cid.into(),
            component_type: ComponentType::Client,
            meta: json!({"implementation": "flight-companion tests"}),
            will: None,
            packet_bytes_max: 4 << 20,
            request_capacity: 64,
        };
        let config = ground_config(broker, cid);
        let (client, eventloop) = mqtt::connect(&config, &spec).unwrap();
        let (tx, events) = mpsc::channel(256);
        let stop = CancellationToken::new();
        mqtt::spawn_driver(eventloop, &config, tx, stop.clone());
        let mut me = TestClient {
            cid: cid.into(),
            client,
            events,
            stop,
            next_id: 0,
            backlog: Vec::new(),
            token: std::fs::read_to_string(broker.dev.path("tokens/operator.jwt"))
                .ok()
                .map(|t| t.trim().to_owned()),
        };
        me.wait_event(|e| matches!(e, MqttEvent::Connected(_)), "CONNACK")
            .await;
        let mut rpc = Filter::new(me.rpc_topic(), QoS::AtLeastOnce);
        rpc.nolocal = true;
        me.client
            .subscribe_many(vec![
                rpc,
                Filter::new(
                    format!("$mcp-server/capability/{SERVER_ID}/{SERVER_NAME}"),
                    QoS::AtLeastOnce,
                ),
                Filter::new(
                    format!("$mcp-server/presence/+/{SERVER_NAME}"),
                    QoS::AtLeastOnce,
                ),
            ])
            .await
            .unwrap();
        me.wait_event(|e| matches!(e, MqttEvent::SubAck(_)), "SUBACK")
            .await;
        me
    }

    async fn wait_event(&mut self, want: impl Fn(&MqttEvent) -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: no {what} within 10 s", self.cid))
                .expect("driver alive");
            if want(&event) {
                return;
            }
            if let MqttEvent::Publish(p) = event {
                self.backlog.push(seen(&p));
            }
        }
    }

    pub fn rpc_topic(&self) -> String {
        format!("$mcp-rpc/{}/{SERVER_ID}/{SERVER_NAME}", self.cid)
    }

    pub fn control_topic() -> String {
        format!("$mcp-server/{SERVER_ID}/{SERVER_NAME}")
    }

    /// Publishes raw bytes with the MCP user properties (`client_id_property` overrides the
    /// `MCP-MQTT-CLIENT-ID` value; `None` leaves it out).
    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: Vec<u8>,
        client_id_property: Option<&str>,
    ) {
        let mut props = mqtt::publish_properties(ComponentType::Client, &self.cid);
        props
            .user_properties
            .retain(|(k, _)| k != transport::PROP_CLIENT_ID);
        if let Some(id) = client_id_property {
            props
                .user_properties
                .push((transport::PROP_CLIENT_ID.into(), id.into()));
        }
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
            .await
            .unwrap();
    }

    pub async fn send(&self, message: &Value) {
        let cid = self.cid.clone();
        self.publish_raw(
            &self.rpc_topic(),
            message.to_string().into_bytes(),
            Some(&cid),
        )
        .await;
    }

    /// Sends a request on the RPC topic; returns its id.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// Puts messages back, oldest first, for the next `next` or `wait_for`.
    pub fn requeue(&mut self, seen: Vec<Seen>) {
        let mut seen = seen;
        seen.append(&mut self.backlog);
        self.backlog = seen;
    }

    /// Next message on any subscribed topic within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Seen> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return None,
                Ok(None) => return None,
                Ok(Some(MqttEvent::Publish(p))) => return Some(seen(&p)),
                Ok(Some(_)) => continue,
            }
        }
    }

    /// Waits for a message matching `want`; others go to `skipped`.
    pub async fn wait_for(
        &mut self,
        want: impl Fn(&Seen) -> bool,
        timeout: Duration,
        skipped: &mut Vec<Seen>,
    ) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pending: Vec<Seen> = std::mem::take(&mut self.backlog);
        loop {
            while !pending.is_empty() {
                let m = pending.remove(0);
                if want(&m) {
                    self.backlog.extend(pending);
                    return Some(m);
                }
                skipped.push(m);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(MqttEvent::Publish(p))) => pending.push(seen(&p)),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// Waits for the response to `id` on the RPC topic; notifications seen meanwhile are
    /// returned too.
    pub async fn response(&mut self, id: &Value) -> (Value, Vec<Seen>) {
        let mut skipped = Vec::new();
        let rpc = self.rpc_topic();
        let id = id.clone();
        let found = self
            .wait_for(
                |m| {
                    m.topic == rpc
                        && m.payload
                            .as_ref()
                            .is_some_and(|p| p.get("method").is_none() && p.get("id") == Some(&id))
                },
                Duration::from_secs(10),
                &mut skipped,
            )
            .await;
        let found = found.unwrap_or_else(|| {
            panic!(
                "{}: no response to id {id} within 10 s; saw {skipped:?}",
                self.cid
            )
        });
        (found.payload.unwrap(), skipped)
    }

    /// `initialize` on the control topic with the dev-setup OPERATOR token, then
    /// `notifications/initialized`.
    pub async fn initialize(&mut self, version: &str) -> Value {
        let token = self.token.clone();
        self.initialize_with(version, token.as_deref()).await
    }

    /// `initialize` presenting `token` (None: no `_meta` at all).
    pub async fn initialize_with(&mut self, version: &str, token: Option<&str>) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        let mut message = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "fc-test", "version": "1"},
            },
        });
        if let Some(token) = token {
            message["params"]["_meta"] = json!({ flight_companion::auth::TOKEN_META_KEY: token });
        }
        let cid = self.cid.clone();
        self.publish_raw(
            &Self::control_topic(),
            message.to_string().into_bytes(),
            Some(&cid),
        )
        .await;
        let (response, _) = self.response(&id).await;
        if response.get("result").is_some() {
            self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .await;
        }
        response
    }

    pub async fn call(&mut self, method: &str, params: Value) -> (Value, Vec<Seen>) {
        let id = self.request(method, params).await;
        self.response(&id).await
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn seen(p: &rumqttc::v5::mqttbytes::v5::Publish) -> Seen {
    Seen {
        topic: String::from_utf8_lossy(&p.topic).into_owned(),
        payload: if p.payload.is_empty() {
            None
        } else {
            serde_json::from_slice(&p.payload).ok()
        },
        raw: p.payload.to_vec(),
        user_properties: p
            .properties
            .as_ref()
            .map(|p| p.user_properties.clone())
            .unwrap_or_default(),
    }
}

/// An MCP server running in this process against `broker`, with a status the test sets.
pub struct InProcessServer {
    pub status: watch::Sender<StatusReport>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessServer {
    pub fn start(broker: &Broker, tweak: impl FnOnce(&mut Config)) -> InProcessServer {
        let mut config = Config::load(&broker.dev.path("drone.toml")).unwrap();
        config.mqtt.reconnect_backoff_ms_min = 50;
        config.mqtt.reconnect_backoff_ms_max = 500;
        config.mqtt.keep_alive_s = 5;
        tweak(&mut config);
        let (status, rx) = watch::channel(StatusReport::without_vehicle());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            flight_companion::mcp::serve(&config, rx, None, None, None, token).await
        });
        InProcessServer {
            status,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve stops within 5 s")
            .unwrap();
        result.unwrap();
    }
}

/// Waits until a retained presence with `server_name` arrives.
pub async fn wait_online(client: &mut TestClient) -> Value {
    let mut skipped = Vec::new();
    let m = client
        .wait_for(
            |m| {
                m.topic.starts_with("$mcp-server/presence/")
                    && m.payload
                        .as_ref()
                        .is_some_and(|p| p["method"] == "notifications/server/online")
            },
            Duration::from_secs(10),
            &mut skipped,
        )
        .await
        .unwrap_or_else(|| panic!("no presence within 10 s; saw {skipped:?}"));
    m.payload.unwrap()
}
