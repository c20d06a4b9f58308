//! Around the loop: opening the autopilot link, the channels and the tasks (local e-stop
//! socket, camera, metrics, CPU temperature, MCP, bridge) before it, and stopping them in
//! order after it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{AUDIT_CLOSE_GRACE, BridgeIo, Core, CoreOptions, Shell};
use crate::bridge::shell::BridgeShellOptions;
use crate::config::Config;
use crate::estop::local::{LocalEstopState, LocalEstopStatus};
use crate::link::transport::{Link, LinkHandle, LinkOptions};
use crate::notify::State;
use crate::status::StatusReport;

/// How long shutdown waits for the MCP side to say goodbye (presence, disconnects).
const MCP_SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// The tasks around the loop, stopped in order by [`Tasks::stop`].
pub(super) struct Tasks {
    local_shutdown: CancellationToken,
    local: Option<JoinHandle<()>>,
    camera_shutdown: CancellationToken,
    camera: Option<JoinHandle<()>>,
    mcp_shutdown: CancellationToken,
    mcp: Option<JoinHandle<anyhow::Result<()>>>,
    side: tokio_util::task::TaskTracker,
    /// The senders nobody else holds when MQTT is off: kept so their channels stay open.
    _unused_senders: Option<(crate::control::ControlClient, crate::estop::StopClient)>,
    _ground: Option<watch::Sender<crate::estop::GroundState>>,
}

/// Opens everything the loop reads and writes; READY is sent once it is.
pub(super) async fn start(
    config: Config,
    shutdown: CancellationToken,
    audit: crate::audit::AuditHandle,
    main_runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(Shell, Tasks)> {
    let link_shutdown = shutdown.child_token();
    let (link, link_events) = open_link(&config, link_shutdown.clone()).await?;
    // systemd: READY once the configuration is loaded and the link is open (see notify.rs
    // for why not "autopilot heard"); WATCHDOG from the loop only.
    let (mut notifier, watchdog) = crate::notify::from_process(Instant::now());
    let mut core = Core::new(
        CoreOptions::from_config(&config, watchdog.interval()),
        Instant::now(),
    );
    let (signals, raiser) = crate::wake::flags();
    let (control, requests, envelope) = requests(&raiser);
    let lease_holder = control.lease_holder_watch();
    // The e-stop: its own bounded channel, read by the loop's first branch.
    let (stop_client, stop_loop) = crate::estop::channel(core.stop_status());
    // The MCP shell's view of the broker connection (skip to latest).
    let (ground_tx, ground) = watch::channel(crate::estop::GroundState::default());
    let local_shutdown = CancellationToken::new();
    let (local_estop, local) = local_estop(&config, &stop_client, &local_shutdown);
    let (status, status_rx) = watch::channel(first_status(&mut core, &link));
    // The camera runs in its own task and on blocking threads, never on this loop; it reads
    // the vehicle status through the same `watch` (skip to latest) to tag its frames.
    let camera_shutdown = CancellationToken::new();
    let (camera, camera_task) = match config.camera.enabled {
        true => {
            // On the main runtime: the camera's blocking work never shares the loop's thread.
            let _on_main = main_runtime.enter();
            let shutdown = camera_shutdown.clone();
            let (handle, task) =
                crate::camera::spawn(config.camera.clone(), status_rx.clone(), shutdown);
            (Some(handle), Some(task))
        }
        false => (None, None),
    };
    let (side, cpu_temperature) =
        side_tasks(&config, &status_rx, &link_shutdown, main_runtime).await?;
    // Ground stations beside the daemon (issue 19): their endpoints are one more input.
    // Opened on the main runtime, so their sockets, reading and decoding live there: a flood
    // on a ground station's port costs the runtime workers, never the loop's thread.
    let gcs = {
        let (config, control, audit) = (config.clone(), control.clone(), audit.clone());
        let shutdown = link_shutdown.clone();
        main_runtime
            .spawn(
                async move { crate::gcs::GcsLoop::open(&config, control, audit, shutdown).await },
            )
            .await
            .context("opening the ground-station endpoints")??
    };
    let mcp_shutdown = CancellationToken::new();
    let (mcp, unused_senders, unused_ground) = if config.mqtt.enabled {
        let estop = crate::mcp::EstopLink {
            client: stop_client,
            ground: ground_tx,
        };
        let (config, token, audit) = (config.clone(), mcp_shutdown.clone(), audit.clone());
        let camera = camera.clone();
        // Its own task on the main runtime: MQTT never blocks the loop (and so never the
        // heartbeat), and the ground's calls never take the loop's thread.
        let task = main_runtime.spawn(async move {
            crate::mcp::shell::serve_with_audit(
                &config,
                status_rx,
                Some(control),
                Some(estop),
                camera,
                audit,
                token,
            )
            .await
        });
        (Some(task), None, None)
    } else {
        info!("MQTT is disabled in the configuration: no ground clients can connect");
        (None, Some((control, stop_client)), Some(ground_tx))
    };
    let bridge = config
        .bridge
        .enabled
        .then(|| open_bridge(&config, &shutdown));
    info!(link = %config.vehicle.link, version = crate::VERSION, "flight-companion ready");
    notifier.notify(&[
        State::Ready,
        State::Status(format!("autopilot link {} open", config.vehicle.link)),
    ]);
    let home_kept = (config.vehicle.last_home_path.as_deref())
        .and_then(|p| crate::last_home::read(p).ok().flatten());
    let shell = Shell {
        core,
        audit,
        signals: loop_signals(signals, raiser, &shutdown, &ground, &cpu_temperature),
        link,
        link_events,
        link_shutdown,
        notifier,
        stop_requests: stop_loop.requests,
        stop_status: stop_loop.status,
        ground,
        ground_fed: crate::estop::GroundState::default(),
        requests,
        param_waiting: HashMap::new(),
        mission_waiting: HashMap::new(),
        envelope,
        cpu_temperature,
        bridge,
        gcs,
        status,
        camera,
        local_estop,
        lease_holder,
        home_kept,
        waiting: HashMap::new(),
        timer: super::timer::LoopTimer::new()
            .map_err(|e| anyhow::anyhow!("cannot create the decision loop's timer: {e}"))?,
        job_tick: job_tick(&config),
        // The first turn publishes.
        status_due: std::time::Instant::now(),
        config,
    };
    let tasks = Tasks {
        local_shutdown,
        local,
        camera_shutdown,
        camera: camera_task,
        mcp_shutdown,
        mcp,
        side,
        _unused_senders: unused_senders,
        _ground: unused_ground,
    };
    Ok((shell, tasks))
}

/// The tools' channels to the loop: the client, which raises [`super::REQUESTS`] with every
/// request it queues, and the loop's receivers.
fn requests(
    raiser: &crate::wake::Raiser,
) -> (
    crate::control::ControlClient,
    super::Requests,
    watch::Sender<crate::control::EnvelopeView>,
) {
    let (control, control_rx, envelope) = crate::control::channel();
    // An ADMIN's set_envelope: its own small channel, answered after the status is published.
    let (envelope_changes_tx, envelope_changes) = mpsc::channel(crate::control::ENVELOPE_CHANGES);
    // The parameter tools: their own small channel (reads answered in one turn).
    let (params_tx, params) = mpsc::channel(crate::control::param::PARAM_REQUESTS);
    // The mission tools: their own small channel (one transfer at a time).
    let (missions_tx, missions) = mpsc::channel(crate::control::mission::MISSION_REQUESTS);
    let control = (control.with_envelope_changes(envelope_changes_tx))
        .with_params(params_tx)
        .with_missions(missions_tx)
        .with_wake(raiser.clone(), super::REQUESTS);
    let requests = super::Requests {
        control: control_rx,
        envelope_changes,
        params,
        missions,
    };
    (control, requests, envelope)
}

/// The loop's rare wake-ups as flags, each raised by a task of the loop's runtime that waits
/// on its source (`crate::wake`); the tools' requests raise theirs themselves.
fn loop_signals(
    signals: crate::wake::Flags,
    raiser: crate::wake::Raiser,
    shutdown: &CancellationToken,
    ground: &watch::Receiver<crate::estop::GroundState>,
    cpu_temperature: &watch::Receiver<Option<f64>>,
) -> crate::wake::Flags {
    use super::{CPU_TEMPERATURE, GROUND, SHUTDOWN};
    tokio::spawn(raiser.clone().on_cancel(shutdown.clone(), SHUTDOWN));
    tokio::spawn(raiser.clone().on_change(ground.clone(), GROUND));
    tokio::spawn(raiser.on_change(cpu_temperature.clone(), CPU_TEMPERATURE));
    signals
}

/// The loop's tick while a request is flown, at the envelope monitor's period: a cancelled
/// call holds as soon as the monitor would act.
fn job_tick(config: &Config) -> tokio::time::Interval {
    let period = config.envelope.check_interval_s.clamp(0.005, 0.04);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

async fn open_link(
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<(
    crate::link::transport::LinkHandle,
    crate::link::transport::LinkEvents,
)> {
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
    Link::open(&config.vehicle.link, link_options, shutdown)
        .await
        .with_context(|| format!("cannot open the autopilot link {}", config.vehicle.link))
}

/// The local e-stop socket (`flight-companion estop`), and what the status says of it.
fn local_estop(
    config: &Config,
    stop_client: &crate::estop::StopClient,
    shutdown: &CancellationToken,
) -> (LocalEstopStatus, Option<JoinHandle<()>>) {
    let mut status = LocalEstopStatus::default();
    let Some(path) = config.estop.socket_path() else {
        warn!("estop.socket_path is empty: no local e-stop socket");
        return (status, None);
    };
    status.socket_path = Some(path.display().to_string());
    match crate::estop::local::bind(&path) {
        Ok(listener) => {
            info!(socket = %path.display(), "local e-stop socket ready (flight-companion estop)");
            status.state = LocalEstopState::Listening;
            let task =
                crate::estop::local::serve(listener, path, stop_client.clone(), shutdown.clone());
            (status, Some(tokio::spawn(task)))
        }
        Err(e) => {
            // The other triggers still work; say loudly that this one does not, in the log
            // and as a health alert in the status every client sees.
            tracing::error!("no local e-stop: {e:#}");
            status.state = LocalEstopState::Unavailable;
            status.error = Some(format!("{e:#}"));
            (status, None)
        }
    }
}

/// Metrics and the CPU temperature sampler: the listener is bound before READY so a wrong
/// address fails the start. The sampler's readings reach the Core as inputs.
async fn side_tasks(
    config: &Config,
    status_rx: &watch::Receiver<StatusReport>,
    shutdown: &CancellationToken,
    main_runtime: &tokio::runtime::Handle,
) -> anyhow::Result<(tokio_util::task::TaskTracker, watch::Receiver<Option<f64>>)> {
    let side = tokio_util::task::TaskTracker::new();
    if let Some(listen) = config.metrics.listen {
        // Bound on the main runtime, where it is served: a scrape never takes the loop's thread.
        let listener = main_runtime
            .spawn(crate::metrics::bind(listen))
            .await
            .context("the metrics listener's task failed")??;
        let shown = listener.local_addr().unwrap_or(listen);
        info!("metrics on http://{shown}/metrics");
        side.spawn_on(
            crate::metrics::serve(listener, status_rx.clone(), shutdown.clone()),
            main_runtime,
        );
    }
    let (temperature_tx, temperature) = watch::channel(None);
    side.spawn_on(
        crate::metrics::sample_cpu_temperature(
            config.health.cpu_temperature_path.clone(),
            Duration::from_millis(config.health.cpu_temperature_interval_ms),
            temperature_tx,
            shutdown.clone(),
        ),
        main_runtime,
    );
    side.close();
    Ok((side, temperature))
}

fn open_bridge(config: &Config, shutdown: &CancellationToken) -> BridgeIo {
    let shutdown = shutdown.child_token();
    let b = &config.bridge;
    let (writer, inputs) = crate::bridge::shell::spawn(
        BridgeShellOptions {
            path: b.serial.clone(),
            baud: b.baud,
            backoff_min: Duration::from_millis(b.reconnect_backoff_ms_min),
            backoff_max: Duration::from_millis(b.reconnect_backoff_ms_max),
        },
        shutdown.clone(),
    );
    BridgeIo {
        writer,
        inputs,
        shutdown,
    }
}

impl Tasks {
    /// The shutdown order: the link first (from then on nothing reaches the autopilot), the
    /// local socket, the camera, the audit's last records, MCP last (it publishes them).
    pub(super) async fn stop(self, mut shell: Shell) {
        info!("shutting down: no more commands will be sent to the autopilot");
        shell.notifier.notify(&[State::Stopping]);
        shell.link_shutdown.cancel();
        shell.link.persisted(Duration::from_millis(500)).await;
        self.local_shutdown.cancel();
        if let Some(task) = self.local {
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        self.camera_shutdown.cancel();
        if let Some(task) = self.camera {
            // Frames in flight are dropped; the camera never delays the stop.
            let _ = tokio::time::timeout(Duration::from_millis(300), task).await;
        }
        // The stop record, then a last checkpoint while the MQTT shell still runs to publish it.
        let audit = &shell.audit;
        let stopped = crate::audit::Event::DaemonStop {
            reason: "shutdown requested".into(),
        };
        if audit.enabled() && !audit.record_acked(stopped, Duration::from_secs(1)).await {
            warn!("the audit record of the stop was not confirmed");
        }
        if audit.enabled() && !audit.close(AUDIT_CLOSE_GRACE).await {
            warn!("the audit log's last checkpoint was not confirmed");
        }
        self.mcp_shutdown.cancel();
        if let Some(task) = self.mcp {
            match tokio::time::timeout(MCP_SHUTDOWN_GRACE, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => warn!("MCP server ended with an error: {error:#}"),
                Ok(Err(error)) => warn!("MCP server task failed: {error}"),
                Err(_) => warn!("MCP server did not stop within {MCP_SHUTDOWN_GRACE:?}"),
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), self.side.wait()).await;
        info!("stopped");
    }
}

/// Writes the autopilot's home to `vehicle.last_home_path` when it moved (off the loop: the
/// loop never waits on the disk).
pub(super) fn keep_home(
    config: &Config,
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

/// The status published before the loop's first turn, complete with its health.
fn first_status(core: &mut Core, link: &LinkHandle) -> StatusReport {
    let (counters, reconnects) = link.counters();
    let mut report = core.status(Instant::now(), counters, reconnects);
    report.health = core.assess_health(&report);
    report
}
