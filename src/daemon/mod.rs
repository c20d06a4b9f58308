//! The daemon's shell: one loop, one closed set of inputs.
//!
//! Every source (the e-stop channel, the bridge, the autopilot link, the ground link, the
//! tools' requests, the CPU temperature sampler, timers, the shutdown signal) becomes a
//! branch of one biased `select!` in [`Shell::next_input`]; every decision is taken by the
//! sans-IO [`Core`]; the shell only carries out what it returns ([`Shell::drain`]).
//! Because the companion heartbeat comes out of this loop, a stalled loop stops
//! heartbeating and the autopilot's own failsafe sees it.
//!
//! - `core`: [`Core`], [`Input`] and what comes out of it (sans-IO; the core crate's
//!   `flight_companion_core::daemon`, so Cargo keeps it free of IO).
//! - `start`: opening the links and spawning the tasks around the loop; the shutdown order.

pub use flight_companion_core::daemon as core;
mod start;
mod timer;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use self::core::{Core, CoreOptions, Event, Handled, Input, Transmit};
use crate::bridge::BridgeInput;
use crate::bridge::shell::BridgeWriter;
use crate::config::Config;
use crate::control::{ControlReply, ControlRequest, EnvelopeChange, EnvelopeView, VehicleSummary};
use crate::estop::StopRequest;
use crate::flight::{ExecutorEvent, JobId, ProgressUpdate};
use crate::link::transport::{LinkEvents, LinkHandle, SendError};
use crate::notify::{Notifier, State};
use crate::status::StatusReport;

/// The flags of the loop's rare wake-ups (`Shell::signals`): the daemon is stopping.
const SHUTDOWN: u8 = 1;
/// The ground's state (`GroundState`) changed.
const GROUND: u8 = 1 << 1;
/// A new CPU temperature reading.
const CPU_TEMPERATURE: u8 = 1 << 2;
/// A tool queued a request (`Requests`; raised by `ControlClient` itself).
const REQUESTS: u8 = 1 << 3;
/// How often the status seen by MCP clients is refreshed from the cores.
const STATUS_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// A status that is due is published by the next turn of the loop, whatever woke it; the
/// loop's timer wakes it for the status only when no turn came this long after it was due. A
/// busy link turns the loop every few milliseconds, so the status then costs no wake-up of
/// its own.
const STATUS_LATE_MAX: Duration = Duration::from_millis(10);
/// Link events handled in one loop turn at most: the frames already queued behind the one
/// that woke the loop are taken in the same turn, so the loop turns about once per read of
/// the link rather than once per frame, and a batch stays short next to an e-stop (which
/// also ends a batch at once).
const LINK_EVENTS_PER_TURN: usize = 32;
/// How long a fatal bridge refusal waits for the frames already queued to the MCU.
const BRIDGE_FLUSH_ON_EXIT: Duration = Duration::from_millis(200);
/// How long the loop's runtime waits for its own tasks once the loop has stopped.
const LOOP_RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);
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

/// Runs the loop on a thread of its own, with its own single-threaded runtime: the link's
/// frames reach it without crossing between worker threads (a wake-up across threads per
/// read cost a quarter of the ingest's CPU), and the MCP side, camera and metrics keep the
/// main runtime's workers, so a burst of ground calls never delays a turn of the loop.
async fn run_with_audit(
    config: Config,
    shutdown: CancellationToken,
    audit: crate::audit::AuditHandle,
) -> anyhow::Result<ExitCode> {
    let main_runtime = tokio::runtime::Handle::current();
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("decision-loop".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("cannot start the decision loop's runtime: {e}"))
                .and_then(|runtime| {
                    let result = runtime.block_on(run_loop(config, shutdown, audit, &main_runtime));
                    // Never wait on stuck blocking tasks (serial reads): the stop must end.
                    runtime.shutdown_timeout(LOOP_RUNTIME_SHUTDOWN);
                    result
                });
            let _ = done_tx.send(result);
        })
        .map_err(|e| anyhow::anyhow!("cannot start the decision loop's thread: {e}"))?;
    done.await
        .map_err(|_| anyhow::anyhow!("the decision loop's thread ended without an answer"))?
}

/// The loop itself, on its own thread: the links it decides on, then the turns, then the
/// shutdown order.
async fn run_loop(
    config: Config,
    shutdown: CancellationToken,
    audit: crate::audit::AuditHandle,
    main_runtime: &tokio::runtime::Handle,
) -> anyhow::Result<ExitCode> {
    let (mut shell, tasks) = start::start(config, shutdown, audit, main_runtime).await?;
    while let Some(arrival) = shell.next_input().await? {
        shell.turn(arrival).await?;
    }
    shell.answer_the_waiting();
    tasks.stop(shell).await;
    Ok(ExitCode::SUCCESS)
}

/// What woke the loop: an input for the Core, and where its answer goes.
///
/// Kept small: it is moved several times on every turn, and a variant holding a frame (an
/// `Input`, a ground station's frame) made each move a copy of a few hundred bytes (issue 17).
enum Arrival {
    /// `Input::Tick`: a deadline of the Core or the status, or a request being flown.
    Tick,
    Bridge(crate::bridge::BridgeInput),
    /// Link events are buffered: read in place by the turn (`link_events_turn`).
    Link,
    Stop(StopRequest),
    Control(ControlRequest),
    EnvelopeChange(EnvelopeChange),
    Param(crate::control::param::ParamRequest),
    Mission(crate::control::mission::MissionRequest),
    /// A ground station's frame or connection (issue 19), boxed: rare next to the link.
    Gcs(Box<crate::gcs::GcsInput>),
    /// The flags of `Shell::signals` raised: the broker connection went up or down (read with the
    /// ground's activity at the start of the turn, `ground_turn`), or a new CPU temperature.
    Changed(u8),
}

/// A request being flown: where its progress and end go, and how its caller cancels.
struct Waiter {
    action: &'static str,
    reply: oneshot::Sender<ControlReply>,
    progress: mpsc::Sender<ProgressUpdate>,
    cancel: CancellationToken,
}

/// The bridge's IO in the loop: its writer and what its task reports.
struct BridgeIo {
    writer: BridgeWriter,
    inputs: mpsc::Receiver<BridgeInput>,
    shutdown: CancellationToken,
}

/// The tools' requests to the loop, each kind on a channel of its own with its own bound. The
/// loop does not wait on them: the client raises [`REQUESTS`] with each request it queues, and
/// the loop then reads them in this order without waiting ([`Requests::next`]).
struct Requests {
    control: mpsc::Receiver<ControlRequest>,
    envelope_changes: mpsc::Receiver<EnvelopeChange>,
    params: mpsc::Receiver<crate::control::param::ParamRequest>,
    missions: mpsc::Receiver<crate::control::mission::MissionRequest>,
}

impl Requests {
    /// The next request queued, if any: flight and lease requests first.
    fn next(&mut self) -> Option<Arrival> {
        if let Ok(request) = self.control.try_recv() {
            return Some(Arrival::Control(request));
        }
        if let Ok(change) = self.envelope_changes.try_recv() {
            return Some(Arrival::EnvelopeChange(change));
        }
        if let Ok(request) = self.params.try_recv() {
            return Some(Arrival::Param(request));
        }
        self.missions.try_recv().ok().map(Arrival::Mission)
    }
}

/// The loop's side of every channel, and the Core.
struct Shell {
    core: Core,
    config: Config,
    audit: crate::audit::AuditHandle,
    /// The daemon's shutdown, the ground's state and the CPU temperature, as flags raised by
    /// small tasks (`crate::wake`), and the tools' requests, raised by their client: cheaper
    /// to wait on than a future per source on every turn.
    signals: crate::wake::Flags,
    link: LinkHandle,
    link_events: LinkEvents,
    link_shutdown: CancellationToken,
    notifier: Notifier,
    stop_requests: mpsc::Receiver<StopRequest>,
    stop_status: watch::Sender<crate::estop::StopStatus>,
    ground: watch::Receiver<crate::estop::GroundState>,
    /// The ground's state as the Core last got it.
    ground_fed: crate::estop::GroundState,
    requests: Requests,
    /// Parameter writes waiting for the autopilot's echo, and where their answer goes.
    param_waiting: HashMap<
        crate::vehicle::param_table::WriteId,
        oneshot::Sender<crate::control::param::ParamAnswer>,
    >,
    /// Mission transfers waiting for their end.
    mission_waiting: HashMap<
        crate::vehicle::mission::TransferId,
        oneshot::Sender<crate::control::mission::MissionAnswer>,
    >,
    envelope: watch::Sender<EnvelopeView>,
    cpu_temperature: watch::Receiver<Option<f64>>,
    bridge: Option<BridgeIo>,
    /// Ground stations beside the daemon, when endpoints are configured.
    gcs: Option<crate::gcs::GcsLoop>,
    status: watch::Sender<StatusReport>,
    camera: Option<crate::camera::CameraHandle>,
    local_estop: crate::estop::local::LocalEstopStatus,
    /// The MCP control lease's holder, published by the MCP shell (skip to latest).
    lease_holder: watch::Receiver<Option<String>>,
    /// The autopilot's home as last kept on disk for check-config (`vehicle.last_home_path`).
    home_kept: Option<crate::last_home::LastHome>,
    waiting: HashMap<JobId, Waiter>,
    /// Armed for the earliest of the Core's own `poll_timeout` and the status's
    /// `status_due + STATUS_LATE_MAX`; re-armed only when that deadline moves.
    timer: timer::LoopTimer,
    /// While a request is being flown, the loop turns at least this often, so a caller that
    /// cancels or goes away is seen within a tick. Not polled otherwise: an idle loop wakes
    /// for nothing (the envelope monitor of an armed vehicle is the Core's own deadline, in
    /// `poll_timeout`, at the same period).
    job_tick: tokio::time::Interval,
    /// When the status is next published (by the first turn at or after it).
    status_due: Instant,
}

impl Shell {
    /// Waits for the next input, the e-stop first; `None` when the daemon stops.
    async fn next_input(&mut self) -> anyhow::Result<Option<Arrival>> {
        let deadline = (self.core.poll_timeout()).min(self.status_due + STATUS_LATE_MAX);
        self.timer
            .set(deadline)
            .map_err(|e| anyhow::anyhow!("cannot arm the decision loop's timer: {e}"))?;
        loop {
            let arrival = self.wait().await?;
            if let Some(Arrival::Changed(REQUESTS)) = arrival {
                match self.requests.next() {
                    Some(request) => {
                        // Others may wait behind it: the flag stays up until one finds none.
                        self.signals.keep(REQUESTS);
                        return Ok(Some(request));
                    }
                    None => continue,
                }
            }
            return Ok(arrival);
        }
    }

    /// The biased `select!` of [`Shell::next_input`]; the tools' requests come as
    /// `Arrival::Changed(REQUESTS)`, taken apart from the other flags.
    async fn wait(&mut self) -> anyhow::Result<Option<Arrival>> {
        Ok(Some(tokio::select! {
            biased;
            // First: the e-stop. Decided and sent before anything else in this turn.
            Some(request) = self.stop_requests.recv() => Arrival::Stop(request),
            _ = self.signals.take(SHUTDOWN) => return Ok(None),
            // Second only to shutdown: a bridge e-stop is never behind MQTT or telemetry.
            Some(input) = next_bridge_input(&mut self.bridge) => Arrival::Bridge(input),
            ready = self.link_events.ready() => match ready {
                true => Arrival::Link,
                // Cancelling `shutdown` cancels its children (the link) before it marks
                // itself cancelled: a link that ended because we are stopping is no error.
                false if self.link_shutdown.is_cancelled() => return Ok(None),
                false => anyhow::bail!("the autopilot link task ended unexpectedly"),
            },
            // The ground's state is read at the start of the turn (`ground_turn`).
            changed = self.signals.take(GROUND | CPU_TEMPERATURE) => {
                Arrival::Changed(changed)
            }
            // The tools' requests (`Requests::next`), each queued request once.
            _ = self.signals.take(REQUESTS) => Arrival::Changed(REQUESTS),
            Some(input) = crate::gcs::GcsLoop::next_input(&mut self.gcs) => Arrival::Gcs(Box::new(input)),
            expired = self.timer.expired() => {
                expired.map_err(|e| anyhow::anyhow!("the decision loop's timer failed: {e}"))?;
                Arrival::Tick
            }
            _ = self.job_tick.tick(), if !self.waiting.is_empty() => Arrival::Tick,
        }))
    }

    /// One turn: the Core takes the input, then everything it has to say is carried out.
    async fn turn(&mut self, arrival: Arrival) -> anyhow::Result<()> {
        let now = Instant::now();
        // A stop goes first: the ground's state waits for the next turn (its activity keeps
        // its time).
        if !matches!(arrival, Arrival::Stop(_)) {
            self.ground_turn(now);
        }
        match arrival {
            Arrival::Changed(changed) => {
                if changed & CPU_TEMPERATURE != 0 {
                    let celsius = *self.cpu_temperature.borrow_and_update();
                    self.core.handle(now, Input::CpuTemperature(celsius));
                }
            }
            Arrival::Link => self.link_events_turn(now),
            Arrival::Tick => {
                self.core.handle(now, Input::Tick);
            }
            Arrival::Bridge(input) => {
                self.core.handle(now, Input::Bridge(input));
            }
            Arrival::Gcs(input) => self.gcs_input(now, *input),
            Arrival::Stop(StopRequest { ask, reply }) => {
                let answer = self.core.handle(now, Input::Stop(ask));
                // Decided, sent, published, then answered: the stop's commands leave first
                // (drain), and a client reading get_status right after the answer sees the
                // latch the answer reported.
                self.drain(now, true).await?;
                if let (Some(reply), Handled::Stop(ack)) = (reply, answer) {
                    let _ = reply.send(ack);
                }
                return Ok(());
            }
            Arrival::Control(request) => self.accept(now, request),
            Arrival::Param(crate::control::param::ParamRequest { ask, reply }) => {
                match self.core.handle(now, Input::Param(ask)) {
                    Handled::Param(answer) => {
                        let _ = reply.send(answer);
                    }
                    Handled::ParamWrite(id) => {
                        self.param_waiting.insert(id, reply);
                    }
                    _ => {}
                }
            }
            Arrival::Mission(crate::control::mission::MissionRequest { ask, reply }) => {
                match self.core.handle(now, Input::Mission(ask)) {
                    Handled::Mission(answer) => {
                        let _ = reply.send(answer);
                    }
                    Handled::MissionTransfer(id) => {
                        self.mission_waiting.insert(id, reply);
                    }
                    _ => {}
                }
            }
            Arrival::EnvelopeChange(EnvelopeChange {
                changes,
                caller,
                reply,
            }) => {
                let answer = self
                    .core
                    .handle(now, Input::EnvelopeChange { changes, caller });
                // Answered after the new envelope is published.
                self.drain(now, false).await?;
                if let Handled::Envelope(view) = answer {
                    let _ = reply.send(view);
                }
                return Ok(());
            }
        }
        self.drain(now, false).await
    }

    /// The ground's state, when it changed since the Core last got it: first in every turn,
    /// because ground activity does not wake the loop (`GroundState`), so a failsafe
    /// deadline is judged with the activity that came before it.
    fn ground_turn(&mut self, now: Instant) {
        let ground = *self.ground.borrow();
        if ground != self.ground_fed {
            self.ground_fed = ground;
            self.core.handle(now, Input::Ground(ground));
        }
    }

    /// The link events buffered, and those already queued behind them (at most
    /// [`LINK_EVENTS_PER_TURN`], ending at once when an e-stop request waits): one turn per
    /// read of the link, not per frame, each read handed to the Core in place. Ground
    /// stations see every frame of the vehicle.
    fn link_events_turn(&mut self, now: Instant) {
        let mut taken = 0;
        loop {
            let Shell {
                core,
                link_events,
                gcs,
                stop_requests,
                ..
            } = self;
            let mut handed = 0;
            let events = (link_events.buffered().iter())
                .take(LINK_EVENTS_PER_TURN - taken)
                .take_while(|_| {
                    // The first event of the turn always; after it, none once a stop waits.
                    let more = taken + handed == 0 || stop_requests.is_empty();
                    handed += usize::from(more);
                    more
                })
                .inspect(|event| {
                    if let Some(gcs) = gcs.as_mut() {
                        gcs.from_autopilot(event);
                    }
                });
            core.handle_link_events(now, events);
            link_events.consume(handed);
            taken += handed;
            if taken >= LINK_EVENTS_PER_TURN || !stop_requests.is_empty() || !link_events.try_fill()
            {
                return;
            }
        }
    }

    /// A ground station's input, decided with the vehicle's state of this turn; its flight
    /// commands enter the control path as the MCP tools' requests do.
    fn gcs_input(&mut self, now: Instant, input: crate::gcs::GcsInput) {
        let Some(mut gcs) = self.gcs.take() else {
            return;
        };
        let view = self.core.supervisor().vehicle().view(now);
        let latched = self.core.estop_latched();
        let link = self.link.clone();
        gcs.handle(now, input, &view, latched, &link, |request| {
            self.accept(now, request)
        });
        self.gcs = Some(gcs);
    }

    /// Carries out what the Core has to say: cancellations in, messages out, events, the
    /// status, the answers of the jobs that ended.
    async fn drain(&mut self, now: Instant, publish: bool) -> anyhow::Result<()> {
        // Cancelled calls (notifications/cancelled, or the caller went away) hold position.
        let cancelled: Vec<JobId> = (self.waiting.iter())
            .filter(|(_, w)| w.cancel.is_cancelled() || w.reply.is_closed())
            .map(|(job, _)| *job)
            .collect();
        for job in cancelled {
            self.core.handle(now, Input::Cancel(job));
        }
        self.transmit(now);
        let mut ended = Vec::new();
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Audit(record) => self.audit.record(record),
                Event::Job(ExecutorEvent::Progress { job, update }) => {
                    if let Some(w) = self.waiting.get(&job) {
                        // Full: this report is dropped; the next one is fresher anyway.
                        let _ = w.progress.try_send(update);
                    }
                }
                Event::Job(ExecutorEvent::Finished { job, end }) => {
                    ended.extend(self.waiting.remove(&job).map(|w| (w, end)));
                }
                Event::StopStatus(status) => {
                    self.stop_status.send_replace(status);
                }
                Event::WatchdogPing => self.ping_watchdog(),
                Event::ParamWritten { id, answer } => {
                    if let Some(reply) = self.param_waiting.remove(&id) {
                        let _ = reply.send(answer);
                    }
                }
                Event::MissionDone { id, answer } => {
                    if let Some(reply) = self.mission_waiting.remove(&id) {
                        let _ = reply.send(answer);
                    }
                }
                Event::Fatal {
                    reason,
                    flush_bridge,
                } => return self.fail(reason, flush_bridge).await,
            }
        }
        if publish | self.core.take_publish() | (now >= self.status_due) {
            self.publish(now);
        }
        // Answered after the status is published, so a client that reads get_status right
        // after the answer sees what the answer saw.
        for (w, end) in ended {
            let status = self.status.borrow().clone();
            let _ = w.reply.send(ControlReply {
                action: w.action.into(),
                outcome: end.outcome,
                message: end.message,
                vehicle: (status.autopilot_seen).then(|| VehicleSummary::from_status(&status)),
            });
        }
        Ok(())
    }

    /// Sends what the Core has to send: stop commands first.
    fn transmit(&mut self, now: Instant) {
        while let Some(transmit) = self.core.poll_transmit(now) {
            match transmit {
                Transmit::Autopilot(message) => match self.link.send(&message) {
                    Ok(()) => {}
                    // Nothing is queued for later: the Core's retry logic decides what to resend.
                    Err(SendError::NotConnected) => {
                        debug!("link down: not sent: {}", message_name(&message))
                    }
                    Err(error) => warn!("not sent: {}: {error}", message_name(&message)),
                },
                Transmit::Bridge(message) => {
                    if let Some(bridge) = &self.bridge {
                        // Never blocks; a full queue drops and counts (see bridge::shell).
                        bridge.writer.send(&message);
                    }
                }
            }
        }
    }

    fn ping_watchdog(&mut self) {
        if self.notifier.notify(&[State::Watchdog]) {
            crate::metrics::global().record_watchdog_ping();
        } else {
            debug!(
                "WATCHDOG=1 not sent ({} failures)",
                self.notifier.send_errors
            );
        }
    }

    async fn fail(&mut self, reason: String, flush_bridge: bool) -> anyhow::Result<()> {
        if let Some(bridge) = &self.bridge {
            if flush_bridge {
                bridge.writer.drained(BRIDGE_FLUSH_ON_EXIT).await;
            }
            bridge.shutdown.cancel();
        }
        anyhow::bail!("{reason}")
    }

    /// Hands a request to the Core; a refusal is answered at once.
    fn accept(&mut self, now: Instant, request: ControlRequest) {
        let ControlRequest {
            action,
            caller,
            reply,
            progress,
            cancel,
        } = request;
        match self.core.handle(now, Input::Control { action, caller }) {
            Handled::Accepted(job) => {
                let waiter = Waiter {
                    action: action.name(),
                    reply,
                    progress,
                    cancel,
                };
                self.waiting.insert(job, waiter);
            }
            Handled::Refused(reason) => {
                for label in reason.kind.labels() {
                    crate::metrics::global().record_envelope_refusal(label);
                }
                let (counters, reconnects) = self.link.counters();
                let status = self.core.status(now, counters, reconnects);
                let vehicle = (status.autopilot_seen).then(|| VehicleSummary::from_status(&status));
                let _ = reply.send(ControlReply::refused(&action, reason.message, vehicle));
            }
            other => debug!("a control request answered with {other:?}"),
        }
    }

    /// Publishes the status every MCP client reads (and the envelope in force when it
    /// changed). A `watch` keeps only the latest value: slow readers skip to the newest.
    fn publish(&mut self, now: Instant) {
        if now >= self.status_due {
            // The next one is due a period after this one was, not after it went out: the
            // status keeps its 100 ms cadence however late a turn carried it.
            self.status_due += STATUS_PUBLISH_INTERVAL;
            if self.status_due <= now {
                self.status_due = now + STATUS_PUBLISH_INTERVAL;
            }
        }
        let (counters, reconnects) = self.link.counters();
        let mut report = self.core.status(now, counters, reconnects);
        // Never waits for the camera: when its core is busy, the last health stands.
        report.camera = (self.camera.as_ref())
            .and_then(|c| c.try_status())
            .or_else(|| self.status.borrow().camera.clone());
        if let Some(bridge) = &self.bridge {
            report.bridge.tx_dropped += bridge.writer.dropped();
        }
        report.audit = self.audit.status();
        report.local_estop = self.local_estop.clone();
        report.lease_holder = self.lease_holder.borrow().clone();
        start::keep_home(&self.config, &report, &mut self.home_kept);
        report.health = self.core.assess_health(&report);
        let view = self.core.envelope_view();
        if *self.envelope.borrow() != view {
            self.audit.record(crate::audit::Event::Safety {
                kind: "envelope_in_force".into(),
                detail: match &view {
                    Ok(summary) => serde_json::to_string(summary).unwrap_or_default(),
                    Err(reason) => format!("no envelope: {reason}"),
                },
            });
            let _ = self.envelope.send_replace(view);
        }
        self.status.send_replace(report);
    }

    /// At shutdown: every request still being flown is told nothing more is sent for it.
    fn answer_the_waiting(&mut self) {
        for (_, w) in self.waiting.drain() {
            let _ = w.reply.send(ControlReply {
                action: w.action.into(),
                outcome: crate::flight::Outcome::Preempted,
                message: "the daemon is shutting down; nothing more is sent for this action".into(),
                vehicle: None,
            });
        }
        if let Some(bridge) = &self.bridge {
            bridge.shutdown.cancel();
        }
    }
}

async fn next_bridge_input(bridge: &mut Option<BridgeIo>) -> Option<BridgeInput> {
    match bridge {
        Some(bridge) => bridge.inputs.recv().await,
        None => std::future::pending().await,
    }
}

fn message_name(message: &crate::link::MavMessage) -> &'static str {
    use mavlink::Message;
    message.message_name()
}
