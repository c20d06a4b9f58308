//! The daemon's shell: one loop, one closed set of inputs.
//!
//! Every source (link events, timers, the shutdown signal) becomes a branch of one
//! `select!`; every decision is taken by the sans-IO [`Supervisor`]; this loop only
//! carries out what it returns. Because the companion heartbeat comes out of this loop,
//! a stalled loop stops heartbeating and the autopilot's own failsafe sees it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::bridge::shell::{BridgeInput, BridgeShellOptions, BridgeWriter};
use crate::bridge::{BridgeEvent, BridgeLink, BridgeLinkOptions, BridgeState};

use crate::config::Config;
use crate::link::transport::{Link, LinkOptions, SendError};
use crate::status::StatusReport;
use crate::supervisor::{Notice, Supervisor, SupervisorOptions};

/// How often the status seen by MCP clients is refreshed from the cores.
const STATUS_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// How long shutdown waits for the MCP side to say goodbye (presence, disconnects).
const MCP_SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let link_shutdown = shutdown.child_token();
    let (link, mut events) = Link::open(
        &config.vehicle.link,
        LinkOptions {
            system_id: config.vehicle.system_id,
            component_id: config.vehicle.component_id,
            reconnect_backoff_min: Duration::from_millis(config.vehicle.reconnect_backoff_ms_min),
            reconnect_backoff_max: Duration::from_millis(config.vehicle.reconnect_backoff_ms_max),
        },
        link_shutdown.clone(),
    )
    .await
    .with_context(|| format!("cannot open the autopilot link {}", config.vehicle.link))?;

    let mut supervisor = Supervisor::new(
        SupervisorOptions::from_config(&config.vehicle),
        Instant::now(),
    );
    let (counters, reconnects) = link.counters();
    let (status_tx, status_rx) = watch::channel(StatusReport::from_snapshot(supervisor.snapshot(
        Instant::now(),
        counters,
        reconnects,
    )));

    let mcp_shutdown = CancellationToken::new();
    let mcp_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = if config.mqtt.enabled {
        // Its own task: MQTT never blocks this loop (and so never the heartbeat).
        let mcp_config = config.clone();
        let token = mcp_shutdown.clone();
        Some(tokio::spawn(async move {
            crate::mcp::serve(&mcp_config, status_rx, token).await
        }))
    } else {
        info!("MQTT is disabled in the configuration: no ground clients can connect");
        None
    };

    let bridge_shutdown = shutdown.child_token();
    let mut bridge = config
        .bridge
        .enabled
        .then(|| Bridge::open(&config.bridge, bridge_shutdown.clone()));
    let bridge_deadline = Instant::now() + Duration::from_millis(config.bridge.startup_timeout_ms);

    info!(link = %config.vehicle.link, version = crate::VERSION, "flight-companion ready");
    let mut status_tick = tokio::time::interval(STATUS_PUBLISH_INTERVAL);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let mut wake = supervisor.poll_timeout();
        if let Some(bridge) = &bridge {
            wake = wake.min(bridge.core.poll_timeout());
        }
        let wake = tokio::time::Instant::from_std(wake);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            // Second only to shutdown: a bridge e-stop is never behind MQTT or telemetry.
            Some(input) = next_bridge_input(&mut bridge) => {
                if let Some(bridge) = &mut bridge {
                    bridge.handle_input(Instant::now(), input);
                }
            }
            event = events.recv() => match event {
                Some(event) => supervisor.handle_link_event(Instant::now(), &event),
                None => anyhow::bail!("the autopilot link task ended unexpectedly"),
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = status_tick.tick() => {
                let (counters, reconnects) = link.counters();
                let mut report = StatusReport::from_snapshot(supervisor.snapshot(Instant::now(), counters, reconnects));
                if let Some(bridge) = &bridge {
                    report.bridge = bridge.status(Instant::now());
                }
                // A watch keeps only the latest value: slow readers skip to the newest status.
                status_tx.send_replace(report);
            }
        }
        let now = Instant::now();
        while let Some(message) = supervisor.poll_transmit(now) {
            match link.send(&message) {
                Ok(()) => {}
                // Nothing is queued for later: the core's retry logic decides what to resend.
                Err(SendError::NotConnected) => {
                    debug!("link down: not sent: {}", message_name(&message))
                }
                Err(error) => warn!("not sent: {}: {error}", message_name(&message)),
            }
        }
        while let Some(notice) = supervisor.poll_notice() {
            log_notice(&notice);
        }
        if let Some(bridge) = &mut bridge {
            bridge.core.set_armed(supervisor.vehicle().is_armed());
            while let Some(message) = bridge.core.poll_transmit(now) {
                // Never blocks; a full queue drops and counts (see bridge::shell).
                bridge.writer.send(&message);
            }
            while let Some(event) = bridge.core.poll_event() {
                if let Some(fatal) = on_bridge_event(&event, config.bridge.required) {
                    bridge_shutdown.cancel();
                    anyhow::bail!("{fatal}");
                }
            }
            if config.bridge.required
                && bridge.core.status(now).state != BridgeState::Healthy
                && now >= bridge_deadline
                && !bridge.seen_healthy
            {
                let why = bridge
                    .core
                    .status(now)
                    .message
                    .unwrap_or_else(|| "no hello from it".into());
                bridge_shutdown.cancel();
                anyhow::bail!(
                    "bridge.required = true but no compatible bridge on {} within {} ms: {why}",
                    config.bridge.serial,
                    config.bridge.startup_timeout_ms
                );
            }
        }
    }
    bridge_shutdown.cancel();

    info!("shutting down: no more commands will be sent to the autopilot");
    // Stop the link first: from here on nothing reaches the autopilot.
    link_shutdown.cancel();
    mcp_shutdown.cancel();
    if let Some(task) = mcp_task {
        match tokio::time::timeout(MCP_SHUTDOWN_GRACE, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => warn!("MCP server ended with an error: {error:#}"),
            Ok(Err(error)) => warn!("MCP server task failed: {error}"),
            Err(_) => warn!("MCP server did not stop within {MCP_SHUTDOWN_GRACE:?}"),
        }
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The bridge's pieces in the daemon: the sans-IO core, the writer, the inputs.
struct Bridge {
    core: BridgeLink,
    writer: BridgeWriter,
    inputs: tokio::sync::mpsc::Receiver<BridgeInput>,
    seen_healthy: bool,
}

impl Bridge {
    fn open(config: &crate::config::BridgeConfig, shutdown: CancellationToken) -> Bridge {
        let (writer, inputs) = crate::bridge::shell::spawn(
            BridgeShellOptions {
                path: config.serial.clone(),
                baud: config.baud,
                backoff_min: Duration::from_millis(config.reconnect_backoff_ms_min),
                backoff_max: Duration::from_millis(config.reconnect_backoff_ms_max),
            },
            shutdown,
        );
        let core = BridgeLink::new(
            BridgeLinkOptions {
                heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
                timeout: Duration::from_millis(config.timeout_ms),
                hello_interval: Duration::from_secs(1),
                required: config.required,
                software_version: crate::bridge::software_version(),
            },
            Instant::now(),
        );
        Bridge {
            core,
            writer,
            inputs,
            seen_healthy: false,
        }
    }

    fn handle_input(&mut self, now: Instant, input: BridgeInput) {
        match input {
            BridgeInput::Connected => {
                info!("bridge port open; waiting for the bridge's hello");
                self.core.handle_connected(now);
            }
            BridgeInput::Disconnected(reason) => {
                warn!("bridge not connected: {reason}");
                self.core.handle_disconnected(now, &reason);
            }
            BridgeInput::Message(message) => self.core.handle_message(now, &message),
            BridgeInput::FrameError(error) => {
                debug!("bridge frame dropped: {error}");
                self.core.handle_frame_error(error);
            }
        }
        if self.core.status(now).state == BridgeState::Healthy {
            self.seen_healthy = true;
        }
    }

    fn status(&self, now: Instant) -> crate::bridge::BridgeStatus {
        let mut status = self.core.status(now);
        status.tx_dropped += self.writer.dropped();
        status
    }
}

async fn next_bridge_input(bridge: &mut Option<Bridge>) -> Option<BridgeInput> {
    match bridge {
        Some(bridge) => bridge.inputs.recv().await,
        None => std::future::pending().await,
    }
}

/// Acts on a bridge event; returns a reason to stop the daemon when it must.
///
/// The e-stop hook: issue 5 connects its e-stop trigger to `EstopAsserted` here, in the
/// decision loop, so the bridge path has no queue or task between the frame and the stop.
fn on_bridge_event(event: &BridgeEvent, required: bool) -> Option<String> {
    match event {
        BridgeEvent::EstopAsserted { source, seq } => {
            warn!("bridge e-stop asserted: source={source} seq={seq}")
        }
        BridgeEvent::EstopReleased { source } => info!("bridge e-stop released (was {source})"),
        BridgeEvent::Connected {
            mcu_version,
            watchdog_ms,
        } => info!("bridge connected: firmware {mcu_version}, companion watchdog {watchdog_ms} ms"),
        BridgeEvent::VersionMismatch { message } => {
            error!("{message}");
            if required {
                return Some(format!("{message} (bridge.required = true)"));
            }
        }
        BridgeEvent::Lost { reason } => warn!("bridge lost: {reason}"),
        BridgeEvent::OutputChanged { asserted: true } => {
            warn!("bridge safety output asserted")
        }
        BridgeEvent::OutputChanged { asserted: false } => info!("bridge safety output released"),
        BridgeEvent::ReleaseAnswered { result } => info!("bridge release request: {result:?}"),
    }
    None
}

fn message_name(message: &crate::link::MavMessage) -> &'static str {
    use mavlink::Message;
    message.message_name()
}

fn log_notice(notice: &Notice) {
    match notice {
        Notice::LinkUp { peer } => info!("autopilot link up: {peer}"),
        Notice::LinkDown { reason } => warn!("autopilot link down: {reason}"),
        Notice::AutopilotFound { description } => info!("autopilot found: {description}"),
        Notice::AutopilotLost { silent_for } => {
            warn!(
                "autopilot lost: no heartbeat for {:.1} s",
                silent_for.as_secs_f64()
            )
        }
        Notice::TelemetryRequested { accepted, refused } => {
            info!("telemetry requested: {accepted} streams accepted, {refused} refused")
        }
        Notice::CommandFinished { description } => info!("command finished: {description}"),
    }
}
