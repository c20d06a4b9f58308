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

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::control::{ControlReply, ControlRequest, VehicleSummary};
use crate::flight::{ExecutorEvent, JobId, ProgressUpdate};
use crate::link::transport::{Link, LinkOptions, SendError};
use crate::notify::State;
use crate::status::StatusReport;
use crate::supervisor::{Notice, Supervisor, SupervisorOptions};

/// How often the status seen by MCP clients is refreshed from the cores.
const STATUS_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// Link events handled in one loop turn at most: the frames already queued behind the one
/// that woke the loop are taken in the same turn, so the loop turns about once per read of
/// the link rather than once per frame, and a batch stays short next to an e-stop (which
/// also ends a batch at once).
const LINK_EVENTS_PER_TURN: usize = 32;
/// How long a fatal bridge refusal waits for the frames already queued to the MCU.
const BRIDGE_FLUSH_ON_EXIT: Duration = Duration::from_millis(200);
/// How long shutdown waits for the MCP side to say goodbye (presence, disconnects).
const MCP_SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// How long shutdown waits for the audit writer's last checkpoint.
const AUDIT_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    // The audit log first: the daemon's start, its configuration and what recovery found are
    // its first records, and a start that fails is recorded too.
    let audit = crate::audit::open(&config)?;
    let result = run_with_audit(config, shutdown, audit.clone()).await;
    if let Err(error) = &result {
        let stopped = crate::audit::Event::DaemonStop {
            reason: format!("failed: {error:#}"),
        };
        let _ = audit.record_acked(stopped, Duration::from_secs(1)).await;
        let _ = audit.close(AUDIT_CLOSE_GRACE).await;
    }
    result
}

async fn run_with_audit(
    config: Config,
    shutdown: CancellationToken,
    audit: crate::audit::AuditHandle,
) -> anyhow::Result<ExitCode> {
    let link_shutdown = shutdown.child_token();
    let link_options = LinkOptions::for_vehicle(&config.vehicle)
        .map_err(anyhow::Error::msg)
        .context("cannot set up the autopilot link's signing")?;
    if let Some(signing) = &link_options.signing {
        info!(
            mode = %signing.mode,
            key = %signing.key.fingerprint(),
            "MAVLink 2 signing on the autopilot link"
        );
    }
    let (link, mut events) = Link::open(&config.vehicle.link, link_options, link_shutdown.clone())
        .await
        .with_context(|| format!("cannot open the autopilot link {}", config.vehicle.link))?;
    // systemd: READY once the configuration is loaded and the link is open (see notify.rs
    // for why not "autopilot heard"); WATCHDOG from this loop only.
    let (mut notifier, mut watchdog) = crate::notify::from_process(Instant::now());

    let mut supervisor = Supervisor::new(
        SupervisorOptions {
            envelope: config.envelope.clone(),
            ..SupervisorOptions::from_config(&config.vehicle)
        },
        Instant::now(),
    );
    let (control, mut control_rx, envelope_tx) = crate::control::channel();
    // An ADMIN's set_envelope: its own small channel, answered after the status is published.
    let (envelope_changes_tx, mut envelope_changes) =
        mpsc::channel(crate::control::ENVELOPE_CHANGES);
    let control = control.with_envelope_changes(envelope_changes_tx);
    // The e-stop: its own bounded channel, read by the loop's first branch.
    let stop_core = crate::estop::EmergencyStop::new(
        config.stop_options(),
        Instant::now(),
        // Without MQTT there is no ground link to lose: the ground failsafes never fire.
        !config.mqtt.enabled,
    );
    let (stop_client, stop_loop) = crate::estop::channel(stop_core.status());
    let crate::estop::StopLoop {
        requests: mut stop_rx,
        status: stop_status_tx,
    } = stop_loop;
    let mut stop = crate::estop::driver::StopDriver::new(
        stop_core,
        crate::safety::Whitelist::new(&config.envelope),
        stop_status_tx,
    )
    .with_audit(audit.clone());
    // The MCP shell's view of the broker connection (skip to latest).
    let (ground_tx, mut ground_rx) = watch::channel(crate::estop::driver::GroundState::default());
    let local_shutdown = CancellationToken::new();
    let mut local_estop = crate::estop::local::LocalEstopStatus::default();
    let local_task = match config.estop.socket_path() {
        None => {
            warn!("estop.socket_path is empty: no local e-stop socket");
            None
        }
        Some(path) => {
            local_estop.socket_path = Some(path.display().to_string());
            match crate::estop::local::bind(&path) {
                Ok(listener) => {
                    info!(socket = %path.display(), "local e-stop socket ready (flight-companion estop)");
                    local_estop.state = crate::estop::local::LocalEstopState::Listening;
                    Some(tokio::spawn(crate::estop::local::serve(
                        listener,
                        path,
                        stop_client.clone(),
                        local_shutdown.clone(),
                    )))
                }
                Err(e) => {
                    // The other triggers still work; say loudly that this one does not, in
                    // the log and as a health alert in the status every client sees.
                    tracing::error!("no local e-stop: {e:#}");
                    local_estop.state = crate::estop::local::LocalEstopState::Unavailable;
                    local_estop.error = Some(format!("{e:#}"));
                    None
                }
            }
        }
    };
    // Requests being flown: their reply, progress and cancellation, by job.
    let mut waiting: HashMap<JobId, Waiter> = HashMap::new();
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
    let camera_status = camera.clone();
    // Metrics and health: the listener is bound before READY so a wrong address fails the
    // start; the endpoint and the temperature sampler are tasks of their own.
    let mut health = crate::health::HealthMonitor::new(config.health.clone());
    let side_tasks = tokio_util::task::TaskTracker::new();
    if let Some(listen) = config.metrics.listen {
        let listener = crate::metrics::bind(listen).await?;
        info!(
            "metrics on http://{}/metrics",
            listener.local_addr().unwrap_or(listen)
        );
        side_tasks.spawn(crate::metrics::serve(
            listener,
            status_rx.clone(),
            link_shutdown.clone(),
        ));
    }
    side_tasks.spawn(crate::metrics::sample_cpu_temperature(
        config.health.cpu_temperature_path.clone(),
        Duration::from_millis(config.health.cpu_temperature_interval_ms),
        link_shutdown.clone(),
    ));
    side_tasks.close();

    // Ground stations beside the daemon (issue 19): their endpoints are one more input.
    let mut gcs = crate::gcs::GcsLoop::open(
        &config,
        control.clone(),
        audit.clone(),
        link_shutdown.clone(),
    )
    .await?;

    let mcp_shutdown = CancellationToken::new();
    let mcp_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = if config.mqtt.enabled {
        // Its own task: MQTT never blocks this loop (and so never the heartbeat).
        let mcp_config = config.clone();
        let token = mcp_shutdown.clone();
        let audit = audit.clone();
        Some(tokio::spawn(async move {
            let estop = crate::mcp::EstopLink {
                client: stop_client,
                ground: ground_tx,
            };
            crate::mcp::shell::serve_with_audit(
                &mcp_config,
                status_rx,
                Some(control),
                Some(estop),
                camera,
                audit,
                token,
            )
            .await
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
    notifier.notify(&[
        State::Ready,
        State::Status(format!("autopilot link {} open", config.vehicle.link)),
    ]);
    let mut alerts_logged = 0;
    let mut ground_connected = false;
    // The autopilot's home as last kept on disk for check-config (`vehicle.last_home_path`).
    let mut home_kept = config
        .vehicle
        .last_home_path
        .as_deref()
        .and_then(|p| crate::last_home::read(p).ok().flatten());
    // The loop turns at least this often: the envelope monitor and cancellations.
    let mut monitor_tick = tokio::time::interval(Duration::from_secs_f64(
        config.envelope.check_interval_s.clamp(0.005, 0.04),
    ));
    monitor_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_tick = tokio::time::interval(STATUS_PUBLISH_INTERVAL);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let mut wake = supervisor.poll_timeout();
        if let Some(w) = watchdog.poll_timeout() {
            wake = wake.min(w);
        }
        if let Some(bridge) = &bridge {
            wake = wake.min(bridge.core.poll_timeout());
        }
        if let Some(w) = stop.poll_timeout() {
            wake = wake.min(w);
        }
        let wake = tokio::time::Instant::from_std(wake);
        let was_latched = stop.is_latched();
        // The status is published on its tick, and in the very turn a job ends, so a client
        // that reads get_status right after a tool's answer sees what the answer saw.
        let mut publish_now = false;
        // The answer to an envelope change, sent after the status is published.
        let mut envelope_answer = None;
        tokio::select! {
            biased;
            // First: the e-stop. Decided and sent before anything else in this turn.
            Some(request) = stop_rx.recv() => {
                stop.handle_request(Instant::now(), request, &mut supervisor, &link);
            }
            _ = shutdown.cancelled() => break,
            // Second only to shutdown: a bridge e-stop is never behind MQTT or telemetry.
            Some(input) = next_bridge_input(&mut bridge) => {
                if let Some(bridge) = &mut bridge {
                    bridge.handle_input(Instant::now(), input);
                }
            }
            event = events.recv() => match event {
                Some(event) => {
                    let now = Instant::now();
                    supervisor.handle_link_event(now, &event);
                    stop.handle_link_event(now, &event, &supervisor);
                    if let Some(gcs) = &mut gcs {
                        gcs.from_autopilot(&event);
                    }
                    for _ in 1..LINK_EVENTS_PER_TURN {
                        if !stop_rx.is_empty() {
                            break;
                        }
                        let Ok(event) = events.try_recv() else { break };
                        supervisor.handle_link_event(now, &event);
                        stop.handle_link_event(now, &event, &supervisor);
                        if let Some(gcs) = &mut gcs {
                            gcs.from_autopilot(&event);
                        }
                    }
                }
                // Cancelling `shutdown` cancels its children (the link) before it marks
                // itself cancelled: a link that ended because we are stopping is no error.
                None if link_shutdown.is_cancelled() => break,
                None => anyhow::bail!("the autopilot link task ended unexpectedly"),
            },
            Ok(()) = ground_rx.changed() => {
                let ground = *ground_rx.borrow_and_update();
                if ground.connected != ground_connected {
                    ground_connected = ground.connected;
                    audit.record(crate::audit::events::ground_link(ground.connected));
                }
                stop.handle_ground(Instant::now(), ground);
            }
            request = control_rx.recv() => {
                if let Some(request) = request {
                    let (counters, reconnects) = link.counters();
                    accept(&mut supervisor, request, &mut waiting, counters, reconnects);
                }
            }
            Some(input) = crate::gcs::GcsLoop::next_input(&mut gcs) => {
                if let Some(gcs) = &mut gcs {
                    let now = Instant::now();
                    let view = supervisor.vehicle().view(now);
                    let (counters, reconnects) = link.counters();
                    gcs.handle(now, input, &view, stop.is_latched(), &link, |request| {
                        accept(&mut supervisor, request, &mut waiting, counters, reconnects)
                    });
                }
            }
            Some(change) = envelope_changes.recv() => {
                envelope_answer = Some(change_envelope(&mut supervisor, change, &audit));
                publish_now = true;
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = monitor_tick.tick() => {}
            _ = status_tick.tick() => publish_now = true,
        }
        let now = Instant::now();
        // The stop's ladder before everything the supervisor sends.
        stop.turn(now, &mut supervisor, &link);
        if watchdog.poll_ping(now) {
            if notifier.notify(&[State::Watchdog]) {
                crate::metrics::global().record_watchdog_ping();
            } else {
                debug!("WATCHDOG=1 not sent ({} failures)", notifier.send_errors);
            }
        }
        // Cancelled calls (notifications/cancelled, or the caller went away) hold position.
        let cancelled: Vec<JobId> = waiting
            .iter()
            .filter(|(_, w)| w.cancel.is_cancelled() || w.reply.is_closed())
            .map(|(job, _)| *job)
            .collect();
        for job in cancelled {
            supervisor.cancel_job(now, job);
        }
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
        // Answers of the jobs that ended this turn: sent after the status is published.
        let mut ended = Vec::new();
        while let Some(event) = supervisor.poll_job_event() {
            match event {
                ExecutorEvent::Progress { job, update } => {
                    if let Some(w) = waiting.get(&job) {
                        // Full: this report is dropped; the next one is fresher anyway.
                        let _ = w.progress.try_send(update);
                    }
                }
                ExecutorEvent::Finished { job, end } => {
                    publish_now = true;
                    info!("job {job:?} ended: {:?}: {}", end.outcome, end.message);
                    audit.record_some(crate::audit::events::job_end(&end));
                    if let Some(w) = waiting.remove(&job) {
                        ended.push((w, end));
                    }
                }
            }
        }
        while let Some(notice) = supervisor.poll_notice() {
            log_notice(&notice);
            audit.record_some(crate::audit::events::notice(&notice));
        }
        if publish_now {
            let (counters, reconnects) = link.counters();
            let mut report = status_of(&supervisor, Instant::now(), counters, reconnects);
            // Never waits for the camera: when its core is busy, the last health stands.
            report.camera = camera_status
                .as_ref()
                .and_then(|c| c.try_status())
                .or_else(|| status_tx.borrow().camera.clone());
            if let Some(bridge) = &bridge {
                report.bridge = bridge.status(Instant::now());
            }
            report.emergency_stop = stop.status();
            report.audit = audit.status();
            report.local_estop = local_estop.clone();
            keep_home(&config, &report, &mut home_kept);
            let cpu_temperature = crate::metrics::global().cpu_temperature_celsius();
            report.health = health.assess(&report, cpu_temperature);
            // Each raised alert once in the journal (MCP clients get them as notifications).
            for alert in &report.health.recent_alerts {
                if alert.sequence > alerts_logged {
                    warn!(alert = %alert.alert, "alert: {}", alert.message);
                    alerts_logged = alert.sequence;
                }
            }
            let view = match (supervisor.envelope(), supervisor.envelope_missing()) {
                (Some(envelope), _) => Ok(envelope.summary()),
                (None, reason) => Err(reason.unwrap_or("no envelope").to_string()),
            };
            if *envelope_tx.borrow() != view {
                audit.record(crate::audit::Event::Safety {
                    kind: "envelope_in_force".into(),
                    detail: match &view {
                        Ok(summary) => serde_json::to_string(summary).unwrap_or_default(),
                        Err(reason) => format!("no envelope: {reason}"),
                    },
                });
                let _ = envelope_tx.send_replace(view);
            }
            // A watch keeps only the latest value: slow readers skip to the newest status.
            status_tx.send_replace(report);
        }
        if let Some((reply, answer)) = envelope_answer {
            let _ = reply.send(answer);
        }
        for (w, end) in ended {
            let status = status_tx.borrow().clone();
            let _ = w.reply.send(ControlReply {
                action: w.action.into(),
                outcome: end.outcome,
                message: end.message,
                vehicle: status
                    .autopilot_seen
                    .then(|| VehicleSummary::from_status(&status)),
            });
        }
        if let Some(bridge) = &mut bridge {
            bridge.core.set_armed(supervisor.vehicle().is_armed());
            if was_latched && !stop.is_latched() {
                // The stop was reset: the MCU keeps its latch (and would ignore the next
                // press) until the companion asks; it refuses while the switch is still open.
                info!("e-stop reset: asking the bridge to release its latch");
                bridge.core.request_release();
            }
            while let Some(message) = bridge.core.poll_transmit(now) {
                // Never blocks; a full queue drops and counts (see bridge::shell).
                bridge.writer.send(&message);
            }
            while let Some(event) = bridge.core.poll_event() {
                audit.record_some(crate::audit::events::bridge(&event));
                if let BridgeEvent::EstopAsserted { source, seq } = &event {
                    // The hardware switch stops the vehicle in this very turn: no queue, no task.
                    let trigger = crate::estop::Trigger {
                        source: crate::estop::Source::Hardware,
                        identity: "bridge".into(),
                        reason: format!("hardware e-stop ({source}, press {seq})"),
                    };
                    let request = crate::estop::StopRequest {
                        ask: crate::estop::StopAsk::Stop(trigger),
                        reply: None,
                    };
                    stop.handle_request(now, request, &mut supervisor, &link);
                }
                if let Some(fatal) = on_bridge_event(&event, config.bridge.required) {
                    bridge.writer.drained(BRIDGE_FLUSH_ON_EXIT).await;
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
    for (_, w) in waiting.drain() {
        let _ = w.reply.send(ControlReply {
            action: w.action.into(),
            outcome: crate::flight::Outcome::Preempted,
            message: "the daemon is shutting down; nothing more is sent for this action".into(),
            vehicle: None,
        });
    }
    bridge_shutdown.cancel();

    info!("shutting down: no more commands will be sent to the autopilot");
    notifier.notify(&[State::Stopping]);
    // Stop the link first: from here on nothing reaches the autopilot.
    link_shutdown.cancel();
    local_shutdown.cancel();
    if let Some(task) = local_task {
        let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
    }
    camera_shutdown.cancel();
    if let Some(task) = camera_task {
        // Frames in flight are dropped; the camera never delays the stop.
        let _ = tokio::time::timeout(Duration::from_millis(300), task).await;
    }
    // The stop record, then a last checkpoint while the MQTT shell still runs to publish it.
    let stopped = crate::audit::Event::DaemonStop {
        reason: "shutdown requested".into(),
    };
    if audit.enabled() && !audit.record_acked(stopped, Duration::from_secs(1)).await {
        warn!("the audit record of the stop was not confirmed");
    }
    if audit.enabled() && !audit.close(AUDIT_CLOSE_GRACE).await {
        warn!("the audit log's last checkpoint was not confirmed");
    }
    mcp_shutdown.cancel();
    if let Some(task) = mcp_task {
        match tokio::time::timeout(MCP_SHUTDOWN_GRACE, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => warn!("MCP server ended with an error: {error:#}"),
            Ok(Err(error)) => warn!("MCP server task failed: {error}"),
            Err(_) => warn!("MCP server did not stop within {MCP_SHUTDOWN_GRACE:?}"),
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), side_tasks.wait()).await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// A request being flown.
struct Waiter {
    action: &'static str,
    reply: oneshot::Sender<ControlReply>,
    progress: mpsc::Sender<ProgressUpdate>,
    cancel: CancellationToken,
}

/// Hands a request to the supervisor; a refusal is answered at once.
fn accept(
    supervisor: &mut Supervisor,
    request: ControlRequest,
    waiting: &mut HashMap<JobId, Waiter>,
    counters: crate::link::frame::FrameCounters,
    reconnects: u64,
) {
    let now = Instant::now();
    let ControlRequest {
        action,
        caller,
        reply,
        progress,
        cancel,
    } = request;
    info!(caller = %caller.identity, role = %caller.role, "request: {action}");
    match supervisor.handle_request(now, action, &caller) {
        Ok(job) => {
            waiting.insert(
                job,
                Waiter {
                    action: action.name(),
                    reply,
                    progress,
                    cancel,
                },
            );
        }
        Err(reason) => {
            info!("refused {action}: {reason}");
            for label in reason.kind.labels() {
                crate::metrics::global().record_envelope_refusal(label);
            }
            let status = status_of(supervisor, now, counters, reconnects);
            let _ = reply.send(ControlReply::refused(
                &action,
                reason.message,
                status
                    .autopilot_seen
                    .then(|| VehicleSummary::from_status(&status)),
            ));
        }
    }
}

/// An ADMIN's envelope change, decided by the supervisor; an accepted one is recorded (the
/// call itself is recorded by the MCP guard, the new envelope when it is published).
fn change_envelope(
    supervisor: &mut Supervisor,
    change: crate::control::EnvelopeChange,
    audit: &crate::audit::AuditHandle,
) -> (
    tokio::sync::oneshot::Sender<crate::control::EnvelopeView>,
    crate::control::EnvelopeView,
) {
    let answer = supervisor.set_envelope(&change.changes, &change.caller);
    match &answer {
        Ok(_) => {
            info!(caller = %change.caller.identity, "envelope tightened: {}", serde_json::Value::Object(change.changes.clone()));
            audit.record(crate::audit::Event::Safety {
                kind: "envelope_tightened".into(),
                detail: format!(
                    "by {}: {}",
                    change.caller.identity,
                    serde_json::Value::Object(change.changes)
                ),
            });
        }
        Err(reason) => info!(caller = %change.caller.identity, "envelope change refused: {reason}"),
    }
    (change.reply, answer)
}

/// The status report with the daemon's own fields filled in.
/// Writes the autopilot's home to `vehicle.last_home_path` when it moved (off the loop: the
/// loop never waits on the disk).
fn keep_home(
    config: &crate::config::Config,
    report: &StatusReport,
    kept: &mut Option<crate::last_home::LastHome>,
) {
    let (Some(path), Some(home)) = (&config.vehicle.last_home_path, &report.vehicle.home) else {
        return;
    };
    let new = crate::last_home::LastHome {
        latitude_deg: home.latitude_deg,
        longitude_deg: home.longitude_deg,
        altitude_msl_m: home.altitude_msl_m,
        seen_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    if !new.point().is_valid()
        || kept.is_some_and(|k| {
            crate::safety::site::great_circle_m(k.point(), new.point()) < crate::last_home::MOVED_M
        })
    {
        return;
    }
    *kept = Some(new);
    let path = path.clone();
    tokio::task::spawn_blocking(move || match crate::last_home::write(&path, &new) {
        Ok(()) => {
            info!(path = %path.display(), "home kept for check-config: {:.7}, {:.7}", new.latitude_deg, new.longitude_deg)
        }
        Err(e) => warn!("cannot keep the home in {}: {e}", path.display()),
    });
}

fn status_of(
    supervisor: &Supervisor,
    now: Instant,
    counters: crate::link::frame::FrameCounters,
    reconnects: u64,
) -> StatusReport {
    let mut report = StatusReport::from_snapshot(supervisor.snapshot(now, counters, reconnects));
    report.envelope_warning = supervisor.envelope_warning().map(str::to_owned);
    report.active_action = supervisor.active_action().map(|a| a.to_string());
    report.envelope_events = supervisor.envelope_events().cloned().collect();
    report.preflight = Some(supervisor.preflight(now));
    report
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
/// Logs each bridge event; `EstopAsserted` has already triggered the emergency stop in the
/// decision loop by then, so the bridge path has no queue or task between frame and stop.
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
        Notice::EnvelopeInvalid { reason } => warn!("{reason}"),
        Notice::EnvelopeWarning { warning: Some(w) } => warn!("{w}"),
        Notice::EnvelopeWarning { warning: None } => info!("back inside the envelope's margins"),
        Notice::EnvelopeBreach { what } => {
            warn!("envelope breach ({what}): holding now, then the configured breach action")
        }
        Notice::WhitelistViolation { description } => {
            tracing::error!("whitelist violation, not transmitted: {description}")
        }
        Notice::LinkRefused {
            reason,
            count,
            peer,
            detail,
        } => warn!(
            reason,
            count,
            peer = peer.as_deref().unwrap_or("-"),
            "autopilot link refused: {detail}"
        ),
    }
}
