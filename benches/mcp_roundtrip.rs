//! Benchmark (not a test): the MCP `tools/call get_status` round trip through the broker with
//! Rust clients built on the product's own MQTT connection (`mcp::mqtt`, rumqttc, mTLS,
//! TCP_NODELAY), with 1 and 10 concurrent clients, next to a bare MQTT publish -> echo ->
//! reply round trip on the same broker, identities and topics.
//!
//! Needs a running broker and daemon (BENCHMARKS.md has the commands), then:
//! `cargo bench --bench mcp_roundtrip -- --config DIR/ground.toml [--calls 2000]`.
//! The echo uses the drone's certificate from `drone.toml` beside `ground.toml`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flight_companion::config::{Config, MqttConfig};
use flight_companion::ground::config::GroundConfig;
use flight_companion::mcp::mqtt::{self, ComponentType, ConnectionSpec, MqttEvent};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Filter;
use serde_json::{Value, json};
use tokio::sync::{Barrier, mpsc};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(10);
const WARMUP_CALLS: usize = 20;

struct Conn {
    client: AsyncClient,
    events: mpsc::Receiver<MqttEvent>,
    id: String,
    component: ComponentType,
}

impl Conn {
    async fn open(
        mqtt: &MqttConfig,
        component: ComponentType,
        stop: &CancellationToken,
    ) -> anyhow::Result<Conn> {
        let id = format!("bench-rs-{}-{:x}", std::process::id(), fastrand::u64(..));
        let spec = ConnectionSpec {
            client_id: id.clone(),
            component_type: component,
            meta: json!({"implementation": "mcp_roundtrip bench"}),
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

    async fn subscribe(&mut self, topic: String, no_local: bool) -> anyhow::Result<()> {
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

    async fn publish(&self, topic: String, payload: Vec<u8>) -> anyhow::Result<()> {
        let properties = mqtt::publish_properties(self.component, &self.id);
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
            .await?;
        Ok(())
    }

    /// The next PUBLISH (topic, payload) satisfying `want`.
    async fn receive(
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
                Ok(Some(_)) => {}
                Ok(None) => bail!("driver stopped"),
                Err(_) => bail!("no answer within {TIMEOUT:?}"),
            }
        }
    }
}

fn id_of(payload: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    if v.get("method").is_some() {
        return None;
    }
    v.get("id")?.as_u64()
}

async fn discover(
    ground: &GroundConfig,
    stop: &CancellationToken,
) -> anyhow::Result<(String, String)> {
    let mut conn = Conn::open(&ground.mqtt, ComponentType::Client, stop).await?;
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

/// One initialized MCP session calling `get_status` sequentially.
async fn mcp_worker(
    ground: GroundConfig,
    sid: String,
    name: String,
    calls: usize,
    start: Arc<Barrier>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let g = &ground.ground;
    let mut conn = Conn::open(&ground.mqtt, ComponentType::Client, &stop).await?;
    let rpc = format!("{}/{}/{sid}/{name}", g.rpc_topic_root, conn.id);
    conn.subscribe(rpc.clone(), true).await?;
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}});
    conn.publish(
        format!("{}/{sid}/{name}", g.server_topic_root),
        init.to_string().into_bytes(),
    )
    .await?;
    conn.receive(|_, p| id_of(p) == Some(0))
        .await
        .context("initialize")?;
    conn.publish(
        rpc.clone(),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"})
            .to_string()
            .into_bytes(),
    )
    .await?;
    let mut samples = Vec::with_capacity(calls + WARMUP_CALLS);
    for id in 1..=(calls + WARMUP_CALLS) as u64 {
        if id == WARMUP_CALLS as u64 + 1 {
            start.wait().await;
        }
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"get_status","arguments":{}}});
        let started = Instant::now();
        conn.publish(rpc.clone(), call.to_string().into_bytes())
            .await?;
        let (_, answer) = conn.receive(|_, p| id_of(p) == Some(id)).await?;
        samples.push(started.elapsed());
        let v: Value = serde_json::from_slice(&answer)?;
        if v.get("error").is_some() || v.pointer("/result/isError") == Some(&Value::Bool(true)) {
            bail!("get_status failed: {v}");
        }
    }
    Ok(samples.split_off(WARMUP_CALLS))
}

/// Bare MQTT on the same topics: publish `.../bench-ping`, the echo answers `.../bench-pong`.
async fn echo_worker(
    ground: GroundConfig,
    sid: String,
    calls: usize,
    start: Arc<Barrier>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = Conn::open(&ground.mqtt, ComponentType::Client, &stop).await?;
    let base = format!("{}/{}/{sid}", ground.ground.rpc_topic_root, conn.id);
    conn.subscribe(format!("{base}/bench-pong"), true).await?;
    let mut samples = Vec::with_capacity(calls + WARMUP_CALLS);
    for i in 0..calls + WARMUP_CALLS {
        if i == WARMUP_CALLS {
            start.wait().await;
        }
        let started = Instant::now();
        conn.publish(
            format!("{base}/bench-ping"),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec(),
        )
        .await?;
        conn.receive(|t, _| t.ends_with("/bench-pong")).await?;
        samples.push(started.elapsed());
    }
    Ok(samples.split_off(WARMUP_CALLS))
}

async fn run_echo(
    drone: MqttConfig,
    rpc_root: String,
    sid: String,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut conn = Conn::open(&drone, ComponentType::Server, &stop).await?;
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

fn row(name: &str, clients: usize, samples: &mut [Duration], wall: Duration) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<34} {clients:>7} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>11.0}",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1]),
        samples.len() as f64 / wall.as_secs_f64()
    );
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; without --config there is nothing to measure.
    let Some(config) = arg(&args, "--config") else {
        eprintln!(
            "mcp_roundtrip: pass `-- --config DIR/ground.toml` (see BENCHMARKS.md); nothing measured"
        );
        return Ok(());
    };
    let calls: usize = arg(&args, "--calls")
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(2000);
    let config = PathBuf::from(config);
    let ground = GroundConfig::load(&config)?;
    let drone_path = config.parent().unwrap_or(Path::new(".")).join("drone.toml");
    let drone = Config::load(&drone_path)?.mqtt;
    let stop = CancellationToken::new();
    let (sid, name) = discover(&ground, &stop).await?;
    println!(
        "# drone {name} (server id {sid}) at {}:{}; Rust clients (rumqttc via mcp::mqtt)",
        ground.mqtt.host, ground.mqtt.port
    );
    println!(
        "{:<34} {:>7} {:>6} {:>8} {:>8} {:>8} {:>11}",
        "scenario", "clients", "calls", "p50_ms", "p99_ms", "max_ms", "calls_per_s"
    );
    let echo = tokio::spawn(run_echo(
        drone,
        ground.ground.rpc_topic_root.clone(),
        sid.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for clients in [1usize, 10] {
        let each = (calls / clients).max(1);
        for bare in [false, true] {
            // Every client connects and warms up, then all start timing together.
            let start = Arc::new(Barrier::new(clients + 1));
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    let (g, s, n, b, st) = (
                        ground.clone(),
                        sid.clone(),
                        name.clone(),
                        start.clone(),
                        stop.clone(),
                    );
                    tokio::spawn(async move {
                        if bare {
                            echo_worker(g, s, each, b, st).await
                        } else {
                            mcp_worker(g, s, n, each, b, st).await
                        }
                    })
                })
                .collect();
            tokio::time::timeout(TIMEOUT, start.wait())
                .await
                .context("clients did not get ready")?;
            let started = Instant::now();
            let mut samples = Vec::new();
            for t in tasks {
                samples.extend(t.await??);
            }
            let wall = started.elapsed();
            let label = if bare {
                "bare mqtt publish->echo->reply"
            } else {
                "mcp tools/call get_status"
            };
            row(label, clients, &mut samples, wall);
        }
    }
    stop.cancel();
    let _ = echo.await;
    Ok(())
}
