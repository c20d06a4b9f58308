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
use tracing::{debug, info, warn};

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

    // The camera runs in its own task and on blocking threads, never on this loop; it reads
    // the vehicle status through the same `watch` (skip to latest) to tag its frames.
    let camera_shutdown = CancellationToken::new();
    let (camera, camera_task) = if config.camera.enabled {
        let (handle, task) = crate::camera::spawn(
            config.camera.clone(),
            status_rx.clone(),
            camera_shutdown.clone(),
        );
        (Some(handle), Some(task))
    } else {
        (None, None)
    };

    let mcp_shutdown = CancellationToken::new();
    let mcp_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = if config.mqtt.enabled {
        // Its own task: MQTT never blocks this loop (and so never the heartbeat).
        let mcp_config = config.clone();
        let token = mcp_shutdown.clone();
        Some(tokio::spawn(async move {
            crate::mcp::serve(&mcp_config, status_rx, camera, token).await
        }))
    } else {
        info!("MQTT is disabled in the configuration: no ground clients can connect");
        None
    };

    info!(link = %config.vehicle.link, version = crate::VERSION, "flight-companion ready");
    let mut status_tick = tokio::time::interval(STATUS_PUBLISH_INTERVAL);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let wake = tokio::time::Instant::from_std(supervisor.poll_timeout());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => supervisor.handle_link_event(Instant::now(), &event),
                None => anyhow::bail!("the autopilot link task ended unexpectedly"),
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = status_tick.tick() => {
                let (counters, reconnects) = link.counters();
                let report = StatusReport::from_snapshot(supervisor.snapshot(Instant::now(), counters, reconnects));
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
    }

    info!("shutting down: no more commands will be sent to the autopilot");
    // Stop the link first: from here on nothing reaches the autopilot.
    link_shutdown.cancel();
    mcp_shutdown.cancel();
    camera_shutdown.cancel();
    if let Some(task) = camera_task {
        let _ = tokio::time::timeout(MCP_SHUTDOWN_GRACE, task).await;
    }
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
