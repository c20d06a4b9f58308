//! A plain MCP-over-MQTT client for the benchmark harnesses (`benches/mcp_roundtrip.rs`,
//! `benches/estop_latency.rs`): one connection on the product's own [`super::mqtt`] (mTLS,
//! `TCP_NODELAY`), raw JSON-RPC, no rmcp, so a harness measures the daemon and the broker
//! rather than a client library. Not used by the daemon.

use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Filter;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::mqtt::{self, ConnectionSpec, MqttEvent};
use super::transport::ComponentType;
use crate::config::MqttConfig;
use crate::ground::config::GroundConfig;

/// How long any single wait (CONNACK, SUBACK, an answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One MQTT connection and the events its driver forwards.
pub struct Conn {
    pub client: AsyncClient,
    pub events: mpsc::Receiver<MqttEvent>,
    pub id: String,
    pub component: ComponentType,
}

/// `mqtt` with the certificate of the identity `name` (issued by the dev CA beside
/// `mqtt.ca_cert_path` on first use, as `flight-companion cert issue` does): every
/// connection of a harness has its own identity, because the broker takes a certificate's
/// CN as the client id (two connections of one identity would take over each other).
pub fn identity(mqtt: &MqttConfig, name: &str) -> anyhow::Result<MqttConfig> {
    let certs = mqtt
        .ca_cert_path
        .as_deref()
        .and_then(std::path::Path::parent)
        .context("mqtt.ca_cert_path has no directory")?;
    let pki = crate::cert::Pki::new(certs);
    let (cert, key) = pki.paths(name, crate::cert::Kind::Client);
    if !cert.exists() {
        pki.issue(&crate::cert::IssueRequest {
            name,
            kind: crate::cert::Kind::Client,
            sans: vec![],
            days: 1,
            now_unix_s: i64::try_from(crate::auth::shell::unix_s_now()).unwrap_or(i64::MAX),
        })
        .map_err(|e| anyhow::anyhow!("certificate for {name}: {e}"))?;
    }
    let mut config = mqtt.clone();
    config.client_cert_path = Some(cert);
    config.client_key_path = Some(key);
    Ok(config)
}

impl Conn {
    /// Connects as the certificate's identity (its CN is the client id) and waits for the
    /// CONNACK.
    pub async fn open(
        mqtt: &MqttConfig,
        component: ComponentType,
        stop: &CancellationToken,
    ) -> anyhow::Result<Conn> {
        let id = mqtt
            .client_cert_path
            .as_deref()
            .and_then(|p| crate::cert::common_name(p).ok())
            .unwrap_or_else(|| format!("bench-rs-{}-{:x}", std::process::id(), fastrand::u64(..)));
        let spec = ConnectionSpec {
            client_id: id.clone(),
            component_type: component,
            meta: json!({"implementation": "flight-companion bench client"}),
            will: None,
            packet_bytes_max: 1 << 20,
            request_capacity: 64,
        };
        let (client, eventloop) = mqtt::connect(mqtt, &spec)?;
        // Bounded; the driver waits when full (each connection is read by one task).
        let (tx, mut events) = mpsc::channel(256);
        mqtt::spawn_driver(eventloop, mqtt, tx, stop.clone());
        match tokio::time::timeout(TIMEOUT, events.recv()).await {
            Ok(Some(MqttEvent::Connected(_))) => {}
            other => bail!("no CONNACK from {}:{}: {other:?}", mqtt.host, mqtt.port),
        }
        Ok(Conn {
            client,
            events,
            id,
            component,
        })
    }

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

    /// The next PUBLISH (topic, payload) satisfying `want`.
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

/// The JSON-RPC id of a response (not of a request or notification).
pub fn id_of(payload: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    if v.get("method").is_some() {
        return None;
    }
    v.get("id")?.as_u64()
}

/// The first drone announcing itself: (server id, server name).
pub async fn discover(
    ground: &GroundConfig,
    stop: &CancellationToken,
) -> anyhow::Result<(String, String)> {
    let mqtt = identity(&ground.mqtt, "bench-discover")?;
    let mut conn = Conn::open(&mqtt, ComponentType::Client, stop).await?;
    let root = &ground.ground.server_topic_root;
    let filter = ground.ground.server_name.clone().unwrap_or("#".into());
    conn.subscribe(format!("{root}/presence/+/{filter}"), false)
        .await?;
    let prefix = format!("{root}/presence/");
    let (topic, _) = conn
        .receive(|topic, payload| !payload.is_empty() && topic.starts_with(&prefix))
        .await
        .context("no drone presence; is the daemon running?")?;
    let (sid, name) = topic[prefix.len()..]
        .split_once('/')
        .context("presence topic without a name")?;
    Ok((sid.to_owned(), name.to_owned()))
}

/// An initialized MCP session with one drone.
pub struct Session {
    pub conn: Conn,
    /// This session's RPC topic.
    pub rpc: String,
    next_id: u64,
}

impl Session {
    /// Connects as the identity `who` (see [`identity`]), subscribes its RPC topic, sends
    /// `initialize` (with `token` in `_meta` when given) and `notifications/initialized`.
    pub async fn open(
        ground: &GroundConfig,
        who: &str,
        sid: &str,
        name: &str,
        token: Option<&str>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Session> {
        let g = &ground.ground;
        let mqtt = identity(&ground.mqtt, who)?;
        let mut conn = Conn::open(&mqtt, ComponentType::Client, stop).await?;
        let rpc = format!("{}/{}/{sid}/{name}", g.rpc_topic_root, conn.id);
        conn.subscribe(rpc.clone(), true).await?;
        let mut init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}});
        if let Some(token) = token {
            init["params"]["_meta"] = json!({ crate::auth::TOKEN_META_KEY: token });
        }
        conn.publish(
            format!("{}/{sid}/{name}", g.server_topic_root),
            init.to_string().into_bytes(),
        )
        .await?;
        let (_, answer) = conn
            .receive(|_, p| id_of(p) == Some(0))
            .await
            .context("initialize")?;
        let v: Value = serde_json::from_slice(&answer)?;
        if let Some(error) = v.get("error") {
            bail!("initialize refused: {error}");
        }
        conn.publish(
            rpc.clone(),
            json!({"jsonrpc":"2.0","method":"notifications/initialized"})
                .to_string()
                .into_bytes(),
        )
        .await?;
        Ok(Session {
            conn,
            rpc,
            next_id: 1,
        })
    }

    /// Publishes `tools/call` of `name`; returns the request id without waiting.
    pub async fn send_tool(&mut self, name: &str, arguments: Value) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":arguments}});
        self.conn
            .publish(self.rpc.clone(), call.to_string().into_bytes())
            .await?;
        Ok(id)
    }

    /// Calls a tool and returns its `result`; a JSON-RPC error or `isError: true` is an `Err`.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> anyhow::Result<Value> {
        let id = self.send_tool(name, arguments).await?;
        let (_, answer) = self.conn.receive(|_, p| id_of(p) == Some(id)).await?;
        let v: Value = serde_json::from_slice(&answer)?;
        if v.get("error").is_some() || v.pointer("/result/isError") == Some(&Value::Bool(true)) {
            bail!("{name} failed: {v}");
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// p50, p99 and max of `samples` (sorted in place); `None` when empty.
pub fn percentiles(samples: &mut [Duration]) -> Option<(Duration, Duration, Duration)> {
    samples.sort();
    let last = *samples.last()?;
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Some((at(0.5), at(0.99), last))
}

/// The identity of [`serve_echo`]: dev-setup's ACL lets it read `bench-ping` and write
/// `bench-pong` under the drone's RPC topics, and nothing else.
pub const ECHO_IDENTITY: &str = "bench-echo";

/// The far end of a bare MQTT round trip, as [`ECHO_IDENTITY`] (`echo` is its MQTT
/// configuration, see [`identity`]): republishes every `{rpc_root}/+/{sid}/bench-ping` to
/// `…/bench-pong`, on the same broker, TLS and RPC topics as MCP, until `stop`.
pub async fn serve_echo(
    echo: MqttConfig,
    rpc_root: String,
    sid: String,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut conn = Conn::open(&echo, ComponentType::Server, &stop).await?;
    conn.subscribe(format!("{rpc_root}/+/{sid}/bench-ping"), true)
        .await?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            event = conn.events.recv() => match event {
                Some(MqttEvent::Publish(p)) => {
                    let topic = String::from_utf8_lossy(&p.topic);
                    let Some(base) = topic.strip_suffix("/bench-ping") else { continue };
                    conn.publish(format!("{base}/bench-pong"), p.payload.to_vec()).await?;
                }
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// `calls` bare round trips through [`serve_echo`] from one client connection.
pub async fn echo_round_trips(
    ground: &GroundConfig,
    sid: &str,
    calls: usize,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mqtt = identity(&ground.mqtt, "bench-ping")?;
    let mut conn = Conn::open(&mqtt, ComponentType::Client, stop).await?;
    let base = format!("{}/{}/{sid}", ground.ground.rpc_topic_root, conn.id);
    conn.subscribe(format!("{base}/bench-pong"), true).await?;
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = std::time::Instant::now();
        conn.publish(
            format!("{base}/bench-ping"),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec(),
        )
        .await?;
        conn.receive(|t, _| t.ends_with("/bench-pong")).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}
