//! What the benchmark harnesses (`benches/mcp_roundtrip.rs`, `benches/estop_latency.rs`) need
//! besides the raw client (`hil::client`): an identity per connection, the drone's discovery,
//! an initialized session, the bare-MQTT echo on the drone's RPC topics, percentiles. Not
//! used by the daemon.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::client::{Client, ClientOptions, MqttConn, TIMEOUT};
use crate::config::MqttConfig;
use crate::ground::config::GroundConfig;
use crate::mcp::mqtt::MqttEvent;
use crate::mcp::transport::{self, ComponentType, TopicKind, Topics};

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

/// The transport's topics of the drone `sid`/`name` under the ground's roots.
pub fn drone_topics(ground: &GroundConfig, sid: &str, name: &str) -> Topics {
    let g = &ground.ground;
    Topics {
        server_root: g.server_topic_root.clone(),
        client_root: g.client_topic_root.clone(),
        rpc_root: g.rpc_topic_root.clone(),
        server_id: sid.to_owned(),
        server_name: name.to_owned(),
    }
}

/// The first drone announcing itself: (server id, server name).
pub async fn discover(
    ground: &GroundConfig,
    stop: &CancellationToken,
) -> anyhow::Result<(String, String)> {
    let mqtt = identity(&ground.mqtt, "bench-discover")?;
    let mut conn = MqttConn::open(&mqtt, ComponentType::Client, "bench discover", stop).await?;
    let root = &ground.ground.server_topic_root;
    let filter = ground.ground.server_name.clone().unwrap_or("#".into());
    conn.subscribe(transport::server_presence_filter(root, &filter), false)
        .await?;
    let (topic, _) = conn
        .receive(|topic, payload| {
            !payload.is_empty() && transport::parse_server_presence(root, topic).is_some()
        })
        .await
        .context("no drone presence; is the daemon running?")?;
    let (sid, name) = transport::parse_server_presence(root, &topic)
        .and_then(Result::ok)
        .context("presence topic without a name")?;
    Ok((sid.to_owned(), name.to_owned()))
}

/// An initialized MCP session with the drone `sid`/`name` as the identity `who` (see
/// [`identity`]), presenting `token` when given; each answer awaited at most [`TIMEOUT`].
pub async fn session(
    ground: &GroundConfig,
    who: &str,
    sid: &str,
    name: &str,
    token: Option<&str>,
    stop: &CancellationToken,
) -> anyhow::Result<Client> {
    let mqtt = identity(&ground.mqtt, who)?;
    let mut options = ClientOptions::new("bench");
    options.token = token.map(str::to_owned);
    options.answer_timeout = Some(TIMEOUT);
    let mut client =
        Client::connect_mqtt(&mqtt, drone_topics(ground, sid, name), options, stop).await?;
    client.initialize().await?;
    Ok(client)
}

/// The `result` of a tool's answer; a tool error (`isError: true`) is an `Err`.
pub fn tool_result(name: &str, result: Value) -> anyhow::Result<Value> {
    if result.get("isError") == Some(&Value::Bool(true)) {
        anyhow::bail!("{name} failed: {result}");
    }
    Ok(result)
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
    let mut conn = MqttConn::open(&echo, ComponentType::Server, "bench echo", &stop).await?;
    conn.subscribe(format!("{rpc_root}/+/{sid}/bench-ping"), true)
        .await?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            event = conn.next_event() => match event {
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

/// The floor of an MCP call on the daemon's own MQTT stack: a server that does nothing but
/// answer, as the drone (`mqtt`, `topics`) would, with the same connection code
/// ([`MqttConn`]: rumqttc, rustls, the driver task and its channel) on the same broker.
/// `initialize` gets a minimal result, `tools/call` a text result of about `answer_bytes`
/// bytes (the size of the daemon's `get_status` answer, measured by the harness), any other
/// request an empty result; notifications are dropped. Per call it parses the request into a
/// `Value` and writes the answer's bytes around the request's id, and nothing else: no session,
/// no token, no audit, no vehicle. `ready` is called once it is subscribed.
pub async fn serve_null_mcp(
    mqtt: MqttConfig,
    topics: Topics,
    answer_bytes: usize,
    ready: impl FnOnce(),
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut conn = MqttConn::open(&mqtt, ComponentType::Server, "bench null server", &stop).await?;
    conn.subscribe(topics.control(), false).await?;
    conn.subscribe(topics.rpc_filter(), true).await?;
    ready();
    let head = br#"{"jsonrpc":"2.0","id":"#;
    let mut tail =
        br#","result":{"content":[{"type":"text","text":""}],"isError":false}}"#.to_vec();
    let filler = answer_bytes.saturating_sub(head.len() + tail.len() + 4);
    let quote = tail.len() - r#""}],"isError":false}}"#.len();
    tail.splice(quote..quote, std::iter::repeat_n(b'x', filler));
    loop {
        let publish = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            event = conn.next_event() => match event {
                Some(MqttEvent::Publish(p)) => p,
                Some(_) => continue,
                None => return Ok(()),
            },
        };
        let topic = String::from_utf8_lossy(&publish.topic);
        let client = match topics.classify(&topic) {
            TopicKind::Rpc(client) => client,
            TopicKind::Control => match publish.properties.as_ref().and_then(|p| {
                transport::user_property(&p.user_properties, transport::PROP_CLIENT_ID)
            }) {
                Some(client) => client.to_owned(),
                None => continue,
            },
            _ => continue,
        };
        let Ok(request) = serde_json::from_slice::<Value>(&publish.payload) else {
            continue;
        };
        let (Some(id), Some(method)) = (request.get("id"), request["method"].as_str()) else {
            continue;
        };
        let answer = match method {
            "tools/call" => {
                let mut bytes = Vec::with_capacity(head.len() + 20 + tail.len());
                bytes.extend_from_slice(head);
                serde_json::to_writer(&mut bytes, id)?;
                bytes.extend_from_slice(&tail);
                bytes
            }
            "initialize" => serde_json::to_vec(&serde_json::json!({
                "jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": request["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "bench-null-server", "version": crate::VERSION},
                }
            }))?,
            _ => {
                serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {}}))?
            }
        };
        conn.publish(topics.rpc(&client), answer).await?;
    }
}

/// The bare round trip's topics of the client `client_id`: `{rpc}/bench-ping` and
/// `{rpc}/bench-pong` under its RPC topic with the drone `sid` (no server name: the echo
/// answers any).
pub fn echo_base(ground: &GroundConfig, client_id: &str, sid: &str) -> String {
    format!("{}/{client_id}/{sid}", ground.ground.rpc_topic_root)
}

/// `calls` bare round trips through [`serve_echo`] from one client connection.
pub async fn echo_round_trips(
    ground: &GroundConfig,
    sid: &str,
    calls: usize,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mqtt = identity(&ground.mqtt, "bench-ping")?;
    let mut conn = MqttConn::open(&mqtt, ComponentType::Client, "bench ping", stop).await?;
    let base = echo_base(ground, &conn.id, sid);
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
