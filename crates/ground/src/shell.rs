//! The bridge's async shell: stdin/stdout, the MQTT connection (`flight_companion_mqtt`), timers.
//! It decides nothing; [`crate::bridge::Bridge`] does.
//!
//! stdout carries only the JSON-RPC lines the core emits; every log line goes to stderr.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Filter;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::{AsyncClient, ClientError};
use serde_json::json;
use std::collections::HashMap;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::GroundCore;
use crate::bridge::{Action, Bridge, BridgeSettings};
use crate::config::GroundConfig;
use crate::console::{self, ConsoleRequest};
use crate::era::EraAdapter;
use crate::fleet::{Fleet, FleetSettings};
use flight_companion_core::mcp::transport::{self, ComponentType, PROP_SERVER_NAME_FILTERS};
use flight_companion_mqtt::{self as mqtt, ConnectionSpec, MqttEvent, Will};

/// Capacity of the stdin line channel. Policy when full: the reader waits, i.e. stdin is not
/// read until the loop catches up (back-pressure to the client; nothing is dropped).
const STDIN_LINES_CAPACITY: usize = 64;
/// Capacity of the MQTT event channel. Policy when full: the driver waits (see
/// `mqtt::spawn_driver`); the broker queues for us.
const MQTT_EVENTS_CAPACITY: usize = 256;
/// Capacity of rumqttc's request channel. Policy when full: the publish is refused by
/// `try_publish` and counted; the core answers the affected request by its timeout.
const MQTT_REQUESTS_CAPACITY: usize = 256;

/// A line read from stdin, or a line refused for its size (its content is discarded while it
/// is read, so an endless line cannot exhaust memory).
#[derive(Debug, PartialEq, Eq)]
enum StdinLine {
    Line(String),
    Oversize(usize),
}

/// Runs the bridge until stdin closes or `shutdown` is cancelled. `version` is what it reports
/// of itself (the binary's version and commit, which the caller's package knows).
pub async fn run(
    config: GroundConfig,
    version: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let client_id = match &config.ground.client_id {
        Some(id) => id.clone(),
        None => default_client_id(&config),
    };
    let presence_topic = transport::client_presence(&config.ground.client_topic_root, &client_id);
    let disconnected = transport::disconnected().to_string();
    let spec = connection_spec(&config, version, &client_id, &presence_topic, &disconnected);
    let (client, eventloop) =
        mqtt::connect(&config.mqtt, &spec).context("cannot set up the MQTT connection")?;
    let (events_tx, mut events) = mpsc::channel(MQTT_EVENTS_CAPACITY);
    let stop_driver = shutdown.child_token();
    let driver = mqtt::spawn_driver(eventloop, &config.mqtt, events_tx, stop_driver.clone());
    tracing::info!(
        "ground bridge: connecting to {}:{} as mcp-client-id {client_id}",
        config.mqtt.host,
        config.mqtt.port
    );

    let (lines_tx, mut lines) = mpsc::channel(STDIN_LINES_CAPACITY);
    let max = config.ground.message_bytes_max;
    tokio::spawn(read_stdin(
        BufReader::new(tokio::io::stdin()),
        max,
        lines_tx,
    ));

    let mut bridge = core(&config, version, &client_id)?;
    // The web console: its requests enter the loop here and go through the fleet core.
    let mut console = ConsolePort::open(&config, &mut bridge, &client_id, &shutdown).await?;
    // With the console, the process outlives its stdio client: the console is a client too.
    let mut stdin_open = true;
    let mut stdout = tokio::io::stdout();
    let publish_properties = mqtt::publish_properties(ComponentType::Client, &client_id);
    let mut publish_failures: u64 = 0;
    let mut was_connected = false;
    // False once the connection was taken over: the driver is stopped for good.
    let mut mqtt_alive = true;
    loop {
        let timeout = bridge.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = console.recv() => console.hand(&mut bridge, request),
            line = lines.recv(), if stdin_open => match line {
                Some(StdinLine::Line(line)) => bridge.handle_stdin_line(Instant::now(), &line),
                Some(StdinLine::Oversize(bytes)) => {
                    write_line(&mut stdout, &oversize_refusal(bytes, max)).await?;
                }
                None if console.enabled() => {
                    tracing::info!("stdin closed: the MCP client is gone; the console stays (stop with SIGINT or SIGTERM)");
                    stdin_open = false;
                }
                None => {
                    tracing::info!("stdin closed: the MCP client is gone; shutting down");
                    break;
                }
            },
            event = events.recv(), if mqtt_alive => match event {
                Some(MqttEvent::Connected(connack)) => {
                    let filters = server_name_filters(&connack);
                    tracing::info!("connected to the broker{}", filters.as_ref().map(|f| format!("; server name filters {f:?}")).unwrap_or_default());
                    was_connected = true;
                    bridge.handle_connected(Instant::now(), filters);
                }
                Some(MqttEvent::Publish(publish)) => match std::str::from_utf8(&publish.topic) {
                    Ok(topic) => bridge.handle_mqtt_message(Instant::now(), topic, &publish.payload),
                    Err(_) => tracing::warn!("dropped a PUBLISH whose topic is not UTF-8"),
                },
                Some(MqttEvent::Disconnected { error, retry_in }) => {
                    if was_connected {
                        tracing::warn!("lost the broker connection: {error}; retrying in {} ms", retry_in.as_millis());
                    } else {
                        tracing::warn!("cannot connect to the broker: {error}; retrying in {} ms", retry_in.as_millis());
                    }
                    was_connected = false;
                    bridge.handle_disconnected(Instant::now());
                }
                Some(MqttEvent::SubAck(suback)) => {
                    if suback.return_codes.iter().any(|c| !matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))) {
                        tracing::warn!("the broker refused a subscription: {:?} (check its ACLs for this certificate)", suback.return_codes);
                    }
                }
                Some(MqttEvent::SubscribeSent(_)) => {}
                // The core stops the connection (Action::StopConnection) and says why.
                Some(MqttEvent::TakenOver { .. }) => bridge.handle_taken_over(Instant::now()),
                None => anyhow::bail!("the MQTT driver stopped unexpectedly"),
            },
            _ = sleep_until(timeout) => bridge.handle_timeout(Instant::now()),
        }
        while let Some(action) = bridge.poll_action() {
            let sent = match action {
                Action::Stdout(line) => {
                    write_line(&mut stdout, &line).await?;
                    Ok(())
                }
                Action::Console(line) => {
                    console.answer(&line);
                    Ok(())
                }
                Action::Subscribe { topic, no_local } => {
                    let mut filter = Filter::new(topic, QoS::AtLeastOnce);
                    filter.nolocal = no_local;
                    client.try_subscribe_many([filter])
                }
                Action::Unsubscribe { topic } => client.try_unsubscribe(topic),
                Action::StopConnection => {
                    // No reconnect: it would take the client id back from the other client,
                    // and the two would take turns forever.
                    stop_driver.cancel();
                    mqtt_alive = false;
                    was_connected = false;
                    Ok(())
                }
                Action::Publish { topic, payload } => client.try_publish_with_properties(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    payload,
                    publish_properties.clone(),
                ),
            };
            if let Err(e) = sent {
                publish_failures += 1;
                log_send_failure(&e);
            }
        }
    }

    let departure = Departure {
        presence_topic,
        disconnected,
        publish_properties,
    };
    leave(&client, departure, driver, &stop_driver).await;
    tracing::info!(
        "ground bridge stopped: {}, {publish_failures} MQTT sends failed",
        bridge.summary()
    );
    Ok(ExitCode::SUCCESS)
}

/// What the bridge publishes as it leaves: `disconnected` on its presence topic.
struct Departure {
    presence_topic: String,
    disconnected: String,
    publish_properties: PublishProperties,
}

/// Leaves the broker: the departure, a DISCONNECT, then up to a second for the driver to send
/// both before it is stopped.
async fn leave(
    client: &AsyncClient,
    departure: Departure,
    driver: tokio::task::JoinHandle<()>,
    stop_driver: &CancellationToken,
) {
    // A graceful DISCONNECT discards the Will, so announce the departure explicitly.
    let _ = client.try_publish_with_properties(
        departure.presence_topic,
        QoS::AtLeastOnce,
        false,
        departure.disconnected,
        departure.publish_properties,
    );
    let _ = client.try_disconnect();
    if tokio::time::timeout(Duration::from_millis(1000), driver)
        .await
        .is_err()
    {
        stop_driver.cancel();
    }
}

/// The deciding core: one drone or, with fleet patterns, the fleet; behind the 2026-07-28
/// adapter, which detects such clients by their first request and passes the others through.
fn core(config: &GroundConfig, version: &str, client_id: &str) -> anyhow::Result<EraAdapter> {
    let bridge_settings = settings(config, client_id)?;
    let inner: Box<dyn GroundCore> = if config.fleet.enabled() {
        tracing::info!(
            "fleet mode: serving every drone matching {}",
            config.fleet.server_names.join(", ")
        );
        Box::new(Fleet::new(FleetSettings::from_config(
            config,
            bridge_settings,
            version,
        )))
    } else {
        Box::new(Bridge::new(bridge_settings))
    };
    Ok(EraAdapter::new(inner))
}

/// The bridge's MQTT connection: its client id, its departure as the Will, the packet limit.
fn connection_spec(
    config: &GroundConfig,
    version: &str,
    client_id: &str,
    presence_topic: &str,
    disconnected: &str,
) -> ConnectionSpec {
    ConnectionSpec {
        client_id: client_id.to_owned(),
        component_type: ComponentType::Client,
        meta: json!({
            "implementation": "flight-companion ground",
            "version": version,
        }),
        will: Some(Will {
            topic: presence_topic.to_owned(),
            payload: disconnected.as_bytes().to_vec(),
            retain: false,
        }),
        // Above the message limit, so an oversize message arrives and is refused by the core
        // with a reason instead of being dropped silently by the broker.
        packet_bytes_max: u32::try_from(config.ground.message_bytes_max)
            .unwrap_or(u32::MAX)
            .saturating_add(64 * 1024),
        request_capacity: MQTT_REQUESTS_CAPACITY,
    }
}

/// The core's settings, with the token read from `ground.token_path`.
fn settings(config: &GroundConfig, client_id: &str) -> anyhow::Result<BridgeSettings> {
    let mut settings = BridgeSettings::from_config(&config.ground, client_id.to_owned());
    if let Some(path) = &config.ground.token_path {
        let token = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("ground.token_path {}: {e}", path.display()))?;
        settings.token = Some(token.trim().to_owned());
    } else {
        tracing::warn!("no ground.token_path or --token: the drone will refuse this session");
    }
    Ok(settings)
}

/// The broker's `MCP-SERVER-NAME-FILTERS` on CONNACK, if it sent valid ones.
fn server_name_filters(connack: &rumqttc::v5::mqttbytes::v5::ConnAck) -> Option<Vec<String>> {
    connack
        .properties
        .as_ref()
        .and_then(|p| transport::user_property(&p.user_properties, PROP_SERVER_NAME_FILTERS))
        .and_then(|text| match serde_json::from_str::<Vec<String>>(text) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("ignoring {PROP_SERVER_NAME_FILTERS} `{text}` from the broker: {e}");
                None
            }
        })
}

fn log_send_failure(error: &ClientError) {
    tracing::warn!("cannot hand a message to the MQTT client (queue full or closed): {error}");
}

/// The answer to a stdin line longer than `max` bytes.
fn oversize_refusal(bytes: usize, max: usize) -> String {
    tracing::warn!("refused a stdin line of {bytes} bytes");
    json!({"jsonrpc": "2.0", "id": null, "error": {
        "code": transport::code::INVALID_REQUEST,
        "message": format!("message of {bytes} bytes exceeds the bridge's limit of {max} bytes (ground.message_bytes_max)"),
    }})
    .to_string()
}

/// The web console's side of the loop: its requests, and the answers they wait for.
struct ConsolePort {
    requests: Option<mpsc::Receiver<ConsoleRequest>>,
    /// Token → the request waiting for its answer.
    waiting: HashMap<u64, oneshot::Sender<serde_json::Value>>,
    next: u64,
}

impl ConsolePort {
    /// Starts the console when `console.listen` is set (the fleet then opens its drone
    /// sessions without waiting for a stdio client).
    async fn open(
        config: &GroundConfig,
        core: &mut EraAdapter,
        client_id: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let requests = match config.console.listen {
            Some(_) => {
                core.serve_console(Instant::now());
                let identity = client_id.to_owned();
                Some(console::start(&config.console, identity, shutdown.child_token()).await?)
            }
            None => None,
        };
        Ok(Self {
            requests,
            waiting: HashMap::new(),
            next: 0,
        })
    }

    fn enabled(&self) -> bool {
        self.requests.is_some()
    }

    /// The next console request; never, without a console.
    async fn recv(&mut self) -> ConsoleRequest {
        match &mut self.requests {
            Some(rx) => match rx.recv().await {
                Some(r) => r,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    fn hand(&mut self, core: &mut EraAdapter, request: ConsoleRequest) {
        self.next += 1;
        // Answers the console stopped waiting for are forgotten here, so the table holds at
        // most what is in flight.
        self.waiting.retain(|_, reply| !reply.is_closed());
        self.waiting.insert(self.next, request.reply);
        core.handle_console_request(Instant::now(), self.next, &request.method, request.params);
    }

    /// Hands the fleet core's answer to the console request waiting for it.
    fn answer(&mut self, line: &str) {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let token = message
            .get("id")
            .and_then(serde_json::Value::as_str)
            .and_then(|id| id.strip_prefix(crate::fleet::CONSOLE_ID_PREFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(reply) = token.and_then(|t| self.waiting.remove(&t)) {
            let _ = reply.send(message);
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn write_line(stdout: &mut tokio::io::Stdout, line: &str) -> anyhow::Result<()> {
    stdout
        .write_all(line.as_bytes())
        .await
        .and(stdout.write_all(b"\n").await)
        .and(stdout.flush().await)
        .context("cannot write to stdout (the MCP client is gone)")
}

/// The client id when `[ground] client_id` is not set: the CN of the client certificate,
/// which is what a broker that binds identities uses whatever id is asked for (Mosquitto
/// `use_username_as_clientid`, as dev-setup configures it) and what its ACL binds topics to;
/// without a readable CN, an id unique to this process.
fn default_client_id(config: &GroundConfig) -> String {
    config
        .mqtt
        .client_cert_path
        .as_deref()
        .and_then(|path| flight_companion_mqtt::common_name(path).ok())
        .filter(|cn| transport::valid_client_id(cn))
        .unwrap_or_else(generated_client_id)
}

/// A client id unique per process: two bridges with one id would take over each other's
/// session every time they reconnect.
fn generated_client_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("fc-ground-{}-{nanos:08x}", std::process::id())
}

/// Reads newline-delimited lines of at most `max` bytes; longer ones are skipped to their end
/// and reported by size. Ends at EOF, on a read error, or when the receiver is gone.
async fn read_stdin<R: AsyncBufRead + Unpin>(
    mut reader: R,
    max: usize,
    lines: mpsc::Sender<StdinLine>,
) {
    let mut line: Vec<u8> = Vec::new();
    let mut skipped: usize = 0;
    loop {
        let buffer = match reader.fill_buf().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot read stdin: {e}");
                return;
            }
        };
        if buffer.is_empty() {
            return;
        }
        let (chunk, end) = match buffer.iter().position(|&b| b == b'\n') {
            Some(i) => (&buffer[..i], Some(i + 1)),
            None => (buffer, None),
        };
        let taken = end.unwrap_or(chunk.len());
        if skipped > 0 || line.len() + chunk.len() > max {
            skipped += line.len() + chunk.len();
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        reader.consume(taken);
        if end.is_some() {
            let item = if skipped > 0 {
                StdinLine::Oversize(std::mem::take(&mut skipped))
            } else {
                StdinLine::Line(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned())
            };
            if lines.send(item).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdin_lines_are_split_and_oversize_ones_skipped_to_their_end() {
        let input = format!("{{\"a\":1}}\n{}\n{{\"b\":2}}\nlast", "x".repeat(100));
        // A tiny buffer forces lines across several reads.
        let reader = tokio::io::BufReader::with_capacity(7, input.as_bytes());
        let (tx, mut rx) = mpsc::channel(8);
        read_stdin(reader, 50, tx).await;
        let mut got = Vec::new();
        while let Some(l) = rx.recv().await {
            got.push(l);
        }
        assert_eq!(
            got,
            vec![
                StdinLine::Line("{\"a\":1}".into()),
                StdinLine::Oversize(100),
                StdinLine::Line("{\"b\":2}".into()),
            ],
            "an unterminated last line is not a message"
        );
    }
}
