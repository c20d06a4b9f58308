//! The daemon as one sans-IO state machine: every decision the decision loop takes.
//!
//! [`Core`] owns the supervisor (vehicle, commands, executor, envelope, the one whitelist),
//! the emergency stop, the firmware bridge's link, the systemd watchdog's schedule and the
//! health monitor. It reads no clock, opens nothing and holds no channel: the shell
//! (`flight_companion::daemon`) turns every source into one [`Input`] and carries out what
//! comes back.
//!
//! Call order, once per loop turn:
//! 1. `handle(now, input)` with the one input that woke the loop (its answer, if the input
//!    asked a question, is the returned [`Handled`]); then `handle(now, Input::Cancel(job))`
//!    for every call whose caller went away.
//! 2. `poll_transmit(now)` until `None`: the e-stop's commands first, then the supervisor's
//!    (heartbeat, parameters, commands), then the frames to the bridge. Every MAVLink
//!    message leaves here and nowhere else, and every one passed the one whitelist.
//! 3. `poll_event()` until `None`: audit records, job progress and ends, the e-stop's
//!    status, watchdog pings, a fatal condition.
//! 4. Sleep until at most `poll_timeout()`.
//!
//! **Invariant:** a stop request is decided in the `handle` of its own turn and its first
//! command is the first thing `poll_transmit` returns in that turn; the hardware switch's
//! press (a bridge frame) stops the vehicle in the turn the frame arrives.

mod bridge;
mod mission;
pub mod params;
mod stop;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::bridge::{BridgeInput, BridgeLinkOptions};
use crate::config::{Config, HealthConfig};
use crate::control::{Caller, EnvelopeView};
use crate::estop::request::GROUND_SILENT_MAX;
use crate::estop::{EmergencyStop, GroundState, StopAck, StopAsk, StopOptions, StopStatus};
use crate::flight::{Action, ExecutorEvent, JobId};
use crate::health::{HealthMonitor, HealthSummary};
use crate::link::MavMessage;
use crate::link::event::LinkEvent;
use crate::link::frame::FrameCounters;
use crate::refusal::Refusal;
use crate::status::StatusReport;
use crate::supervisor::{Notice, Supervisor, SupervisorOptions};
use crate::watchdog::Watchdog;

/// Everything that can wake the decision loop: a closed set.
// A `Link` frame is by far the most frequent input: boxing it would add an allocation per
// frame to make the rare inputs smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Input {
    /// An e-stop trigger, reset or kill (answered with [`Handled::Stop`]).
    Stop(StopAsk),
    /// What the firmware bridge's shell reports.
    Bridge(BridgeInput),
    /// What the autopilot link's shell reports.
    Link(LinkEvent),
    /// The broker connection as the MCP shell sees it (the ground failsafes watch it).
    Ground(GroundState),
    /// A flight request (answered with [`Handled::Accepted`] or [`Handled::Refused`]).
    Control { action: Action, caller: Caller },
    /// The caller of a running job cancelled or went away: the vehicle holds.
    Cancel(JobId),
    /// An ADMIN's change to the envelope (answered with [`Handled::Envelope`]).
    EnvelopeChange {
        changes: serde_json::Map<String, serde_json::Value>,
        caller: Caller,
    },
    /// A parameter tool's request (answered with [`Handled::Param`] or
    /// [`Handled::ParamWrite`]).
    Param(crate::control::param::ParamAsk),
    /// A mission tool's request (answered with [`Handled::Mission`] or
    /// [`Handled::MissionTransfer`]).
    Mission(crate::control::mission::MissionAsk),
    /// A reading of the CPU temperature (`None`: the sensor could not be read).
    CpuTemperature(Option<f64>),
    /// A timer: the Core's own `poll_timeout`, the status's deadline, the job tick.
    Tick,
}

/// The answer to an input that asked a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Nothing to answer.
    Done,
    Stop(StopAck),
    /// The request is being flown as this job; its progress and end come out of `poll_event`.
    Accepted(JobId),
    /// Refused before anything was sent: why, and what would be allowed.
    Refused(Refusal),
    /// The envelope in force after the change, or why the change was refused.
    Envelope(EnvelopeView),
    /// A parameter read's answer, or a write's refusal.
    Param(crate::control::param::ParamAnswer),
    /// A parameter write accepted: its answer comes as [`Event::ParamWritten`].
    ParamWrite(crate::vehicle::param_table::WriteId),
    /// A mission request refused before anything was sent.
    Mission(crate::control::mission::MissionAnswer),
    /// A mission transfer started: its answer comes as [`Event::MissionDone`].
    MissionTransfer(crate::vehicle::mission::TransferId),
}

/// Something to send.
// Almost everything sent is a MAVLink message: boxing it would add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// To the autopilot's link writer (never blocks; the Core re-sends on its own schedule).
    Autopilot(MavMessage),
    /// To the bridge's writer.
    Bridge(fwbridge_protocol::Message),
}

/// Something the shell carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A record for the audit log.
    Audit(crate::audit::Event),
    /// A job's progress or end.
    Job(ExecutorEvent),
    /// The e-stop's status changed (published to the MCP side).
    StopStatus(StopStatus),
    /// `WATCHDOG=1` is due.
    WatchdogPing,
    /// A parameter write ended (confirmed or not): the answer for its waiting call.
    ParamWritten {
        id: crate::vehicle::param_table::WriteId,
        answer: crate::control::param::ParamAnswer,
    },
    /// A mission transfer ended: the answer for its waiting call.
    MissionDone {
        id: crate::vehicle::mission::TransferId,
        answer: crate::control::mission::MissionAnswer,
    },
    /// The daemon must stop: why. `flush_bridge`: let the frames already queued to the MCU go
    /// out first.
    Fatal { reason: String, flush_bridge: bool },
}

/// The Core's configuration.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    pub supervisor: SupervisorOptions,
    pub stop: StopOptions,
    /// No ground link to lose (MQTT disabled): the ground failsafes never fire.
    pub without_ground_link: bool,
    pub bridge: Option<BridgeOptions>,
    pub health: HealthConfig,
    /// The systemd watchdog's ping interval (`None`: no watchdog).
    pub watchdog_interval: Option<Duration>,
    /// The mission protocol's timeouts and ids.
    pub mission: crate::vehicle::mission::MissionOptions,
}

/// `[bridge]` as the Core needs it.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    pub link: BridgeLinkOptions,
    /// With `required`, no healthy bridge by then stops the daemon.
    pub startup_timeout: Duration,
    /// The port, named in the reason the daemon stops.
    pub serial: String,
}

impl CoreOptions {
    pub fn from_config(config: &Config, watchdog_interval: Option<Duration>) -> CoreOptions {
        let bridge = config.bridge.enabled.then(|| BridgeOptions {
            link: BridgeLinkOptions {
                heartbeat_interval: Duration::from_millis(config.bridge.heartbeat_interval_ms),
                timeout: Duration::from_millis(config.bridge.timeout_ms),
                hello_interval: Duration::from_secs(1),
                required: config.bridge.required,
                software_version: crate::bridge::software_version(),
            },
            startup_timeout: Duration::from_millis(config.bridge.startup_timeout_ms),
            serial: config.bridge.serial.clone(),
        });
        CoreOptions {
            supervisor: SupervisorOptions {
                envelope: config.envelope.clone(),
                parameters: config.parameters.clone(),
                download_parameters: true,
                ..SupervisorOptions::from_config(&config.vehicle)
            },
            stop: config.stop_options(),
            without_ground_link: !config.mqtt.enabled,
            bridge,
            health: config.health.clone(),
            watchdog_interval,
            mission: crate::vehicle::mission::MissionOptions::from_config(&config.vehicle),
        }
    }
}

/// The daemon's decisions (see the module docs for the call order).
pub struct Core {
    supervisor: Supervisor,
    stop: EmergencyStop,
    /// The e-stop's commands, encoded and passed by the whitelist, not yet transmitted.
    stop_out: VecDeque<MavMessage>,
    /// The e-stop status last reported (`Event::StopStatus`).
    stop_published: StopStatus,
    /// The ground's last activity as last seen.
    ground_activity_at: Option<Instant>,
    /// The broker connection as the MCP shell last reported it.
    ground_connected: bool,
    /// The MCP shell's last stamp that it is serving (`GroundState::serving_at`).
    ground_serving_at: Option<Instant>,
    /// The shell is connected but has not stamped for `GROUND_SILENT_MAX`: the connection
    /// it reports can no longer be believed, and the e-stop takes it as lost.
    ground_silent: bool,
    /// Whether the stop was latched at the end of the previous turn (a reset asks the bridge
    /// to release its own latch).
    was_latched: bool,
    bridge: Option<bridge::BridgeSide>,
    watchdog: Watchdog,
    health: HealthMonitor,
    /// The newest CPU temperature reading.
    cpu_temperature_c: Option<f64>,
    /// The sequence of the newest alert already written to the journal.
    alerts_logged: u64,
    events: VecDeque<Event>,
    /// A job ended since the last `take_publish`.
    publish_due: bool,
    /// Parameter writes waiting for the autopilot's echo.
    param_writes: params::PendingWrites,
    /// The mission tools' transfers.
    mission: mission::MissionSide,
    /// Counts `mirror_fence` calls (their answers' ids).
    fence_mirror_next: u64,
}

impl Core {
    pub fn new(options: CoreOptions, now: Instant) -> Core {
        let stop = EmergencyStop::new(options.stop, now, options.without_ground_link);
        let stop_published = stop.status();
        Core {
            supervisor: Supervisor::new(options.supervisor, now),
            stop,
            stop_out: VecDeque::new(),
            stop_published,
            ground_activity_at: None,
            ground_connected: false,
            ground_serving_at: None,
            ground_silent: false,
            was_latched: false,
            bridge: options.bridge.map(|b| bridge::BridgeSide::new(b, now)),
            watchdog: Watchdog::new(options.watchdog_interval, now),
            health: HealthMonitor::new(options.health),
            cpu_temperature_c: None,
            alerts_logged: 0,
            events: VecDeque::new(),
            publish_due: false,
            param_writes: Default::default(),
            mission: mission::MissionSide::new(options.mission),
            fence_mirror_next: 0,
        }
    }

    /// Takes one input; answers it when it asked a question.
    pub fn handle(&mut self, now: Instant, input: Input) -> Handled {
        let handled = match input {
            Input::Stop(ask) => Handled::Stop(self.handle_stop(now, ask)),
            Input::Bridge(input) => {
                self.handle_bridge(now, input);
                Handled::Done
            }
            Input::Link(event) => {
                self.link_event(now, &event);
                Handled::Done
            }
            Input::Ground(ground) => {
                self.handle_ground(now, ground);
                Handled::Done
            }
            Input::Control { action, caller } => {
                info!(caller = %caller.identity, role = %caller.role, "request: {action}");
                match self.supervisor.handle_request(now, action, &caller) {
                    Ok(job) => Handled::Accepted(job),
                    Err(refusal) => {
                        info!("refused {action}: {refusal}");
                        Handled::Refused(refusal)
                    }
                }
            }
            Input::Cancel(job) => {
                self.supervisor.cancel_job(now, job);
                Handled::Done
            }
            Input::EnvelopeChange { changes, caller } => {
                self.publish_due = true;
                Handled::Envelope(self.change_envelope(changes, &caller))
            }
            Input::Param(ask) => self.param_ask(now, ask),
            Input::Mission(ask) => self.mission_ask(now, ask),
            Input::CpuTemperature(reading) => {
                self.cpu_temperature_c = reading;
                Handled::Done
            }
            Input::Tick => Handled::Done,
        };
        self.after_input(now);
        handled
    }

    /// Link events handed over together (one read of the link): each is taken in order, as
    /// [`Input::Link`] would take it, and what every turn does after its input runs once,
    /// after the last. The events of one read share the turn's `now` and nothing leaves
    /// between them, so the e-stop's ladder judges the vehicle as the last of them left it,
    /// as it would after each; it is not run again per frame (issue 17: it was most of the
    /// Core's work per frame).
    pub fn handle_link_events<'a>(
        &mut self,
        now: Instant,
        events: impl IntoIterator<Item = &'a LinkEvent>,
    ) {
        for event in events {
            self.link_event(now, event);
        }
        self.after_input(now);
    }

    fn link_event(&mut self, now: Instant, event: &LinkEvent) {
        self.supervisor.handle_link_event(now, event);
        self.stop_link_event(now, event);
        self.mission_link_event(now, event);
    }

    /// What every turn does after its input: the e-stop's ladder (before anything the
    /// supervisor sends), the watchdog, the bridge's view of the vehicle.
    fn after_input(&mut self, now: Instant) {
        if self.ground_connected {
            self.sync_ground_link(now);
        }
        self.sync_stop(now);
        self.mission_timeouts(now);
        self.mission_outcomes(now);
        if self.watchdog.poll_ping(now) {
            self.events.push_back(Event::WatchdogPing);
        }
        let latched = self.stop.is_latched();
        let reset = self.was_latched && !latched;
        self.was_latched = latched;
        let armed = self.supervisor.vehicle().is_armed();
        if let Some(bridge) = &mut self.bridge {
            bridge.link.set_armed(armed);
            if reset {
                // The stop was reset: the MCU keeps its latch (and would ignore the next
                // press) until the companion asks; it refuses while the switch is still open.
                info!("e-stop reset: asking the bridge to release its latch");
                bridge.link.request_release();
            }
        }
    }

    /// The next message to send: the e-stop's commands first, then the supervisor's, then
    /// the bridge's frames.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        loop {
            if let Some(message) = self.stop_out.pop_front() {
                return Some(Transmit::Autopilot(message));
            }
            if let Some(message) = self.supervisor.poll_transmit(now) {
                return Some(Transmit::Autopilot(message));
            }
            if let Some(message) = self.mission_transmit(now) {
                return Some(Transmit::Autopilot(message));
            }
            if let Some(bridge) = &mut self.bridge
                && let Some(message) = bridge.link.poll_transmit(now)
            {
                return Some(Transmit::Bridge(message));
            }
            // The bridge's events (a press, a timeout found while polling) act in this turn;
            // a press queues stop commands, which then go first.
            if !self.bridge_events(now) {
                self.mission_outcomes(now);
                return None;
            }
        }
    }

    /// The next thing for the shell to carry out.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        self.param_outcomes();
        self.fence_outcomes();
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        if let Some(event) = self.supervisor.poll_job_event() {
            if let ExecutorEvent::Finished { job, end } = &event {
                self.publish_due = true;
                info!("job {job:?} ended: {:?}: {}", end.outcome, end.message);
                if let Some(record) = crate::audit::events::job_end(end) {
                    self.events.push_back(Event::Audit(record));
                }
            }
            return Some(Event::Job(event));
        }
        while let Some(notice) = self.supervisor.poll_notice() {
            log_notice(&notice);
            if let Some(record) = crate::audit::events::notice(&notice) {
                return Some(Event::Audit(record));
            }
        }
        if let Some(fatal) = self.bridge.as_mut().and_then(|b| b.fatal.take()) {
            return Some(fatal);
        }
        None
    }

    /// When the Core next needs a turn without input.
    pub fn poll_timeout(&self) -> Instant {
        let mut wake = self.supervisor.poll_timeout();
        if let Some(w) = self.watchdog.poll_timeout() {
            wake = wake.min(w);
        }
        if let Some(bridge) = &self.bridge {
            wake = wake.min(bridge.link.poll_timeout());
        }
        if let Some(w) = self.stop.poll_timeout() {
            wake = wake.min(w);
        }
        if let Some(w) = self.mission_poll_timeout() {
            wake = wake.min(w);
        }
        if self.ground_connected
            && !self.ground_silent
            && let Some(at) = self.ground_serving_at
        {
            wake = wake.min(at + GROUND_SILENT_MAX);
        }
        wake
    }

    /// True once after a job ended or the envelope was changed: the status is then published
    /// in the same turn, so a client that reads it right after the answer sees what the
    /// answer saw.
    pub fn take_publish(&mut self) -> bool {
        std::mem::take(&mut self.publish_due)
    }

    /// The status report of the Core's parts. The shell adds its own (camera, audit, local
    /// e-stop socket, bridge writer) and then asks [`Core::assess_health`].
    pub fn status(
        &mut self,
        now: Instant,
        counters: FrameCounters,
        reconnects: u64,
    ) -> StatusReport {
        let preflight = self.supervisor.preflight_shown(now);
        let s = &self.supervisor;
        let mut report = StatusReport::unassessed(s.snapshot(now, counters, reconnects));
        report.envelope_warning = s.envelope_warning().map(str::to_owned);
        report.active_action = s.active_action().map(|a| a.to_string());
        report.envelope_events = s.envelope_events().cloned().collect();
        report.preflight = Some(preflight);
        report.autopilot_fence = Some(crate::status::AutopilotFenceStatus::new(
            s.fence_status(),
            now,
            s.mirrors_to_autopilot(),
        ));
        if let Some(bridge) = &self.bridge {
            report.bridge = bridge.link.status(now);
        }
        report.emergency_stop = self.stop.status();
        report
    }

    /// The health summary of a complete report (alerts with hysteresis, from the newest CPU
    /// temperature reading); each raised alert is written to the journal once.
    pub fn assess_health(&mut self, report: &StatusReport) -> HealthSummary {
        let summary = self.health.assess(report, self.cpu_temperature_c);
        for alert in &summary.recent_alerts {
            if alert.sequence > self.alerts_logged {
                warn!(alert = %alert.alert, "alert: {}", alert.message);
                self.alerts_logged = alert.sequence;
            }
        }
        summary
    }

    /// The envelope in force as `get_envelope` shows it, or why there is none.
    pub fn envelope_view(&self) -> EnvelopeView {
        match (
            self.supervisor.envelope(),
            self.supervisor.envelope_missing(),
        ) {
            (Some(envelope), _) => Ok(envelope.summary()),
            (None, reason) => Err(reason.unwrap_or("no envelope").to_string()),
        }
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub fn stop_status(&self) -> StopStatus {
        self.stop.status()
    }

    /// The e-stop latch is set (what a ground station's command must respect).
    pub fn estop_latched(&self) -> bool {
        self.stop.is_latched()
    }

    /// An ADMIN's envelope change, decided by the supervisor; an accepted one is recorded
    /// (the call itself is recorded by the MCP guard, the new envelope when it is published).
    fn change_envelope(
        &mut self,
        changes: serde_json::Map<String, serde_json::Value>,
        caller: &Caller,
    ) -> EnvelopeView {
        let answer = self.supervisor.set_envelope(&changes, caller);
        let changes = serde_json::Value::Object(changes);
        match &answer {
            Ok(_) => {
                info!(caller = %caller.identity, "envelope tightened: {changes}");
                self.events
                    .push_back(Event::Audit(crate::audit::Event::Safety {
                        kind: "envelope_tightened".into(),
                        detail: format!("by {}: {changes}", caller.identity),
                    }));
            }
            Err(reason) => info!(caller = %caller.identity, "envelope change refused: {reason}"),
        }
        answer
    }

    fn handle_ground(&mut self, now: Instant, ground: GroundState) {
        if ground.connected != self.ground_connected {
            self.ground_connected = ground.connected;
            self.events
                .push_back(Event::Audit(crate::audit::events::ground_link(
                    ground.connected,
                )));
        }
        self.ground_serving_at = ground.serving_at;
        self.sync_ground_link(now);
        if ground.activity_at != self.ground_activity_at {
            self.ground_activity_at = ground.activity_at;
            if let Some(at) = ground.activity_at {
                self.stop.handle_ground_activity_at(now, at);
            }
        }
    }

    /// The ground link as the e-stop's failsafes see it: connected, and its MCP shell still
    /// stamping. A shell that stopped (its runtime stalled) would never report the broker
    /// dropping the connection, so its silence counts as the connection lost; its next stamp
    /// is the link back.
    fn sync_ground_link(&mut self, now: Instant) {
        let silent = self.ground_connected
            && self
                .ground_serving_at
                .is_some_and(|at| now.saturating_duration_since(at) >= GROUND_SILENT_MAX);
        if silent != self.ground_silent {
            self.ground_silent = silent;
            if silent {
                warn!(
                    "the MCP side has not stamped for {} s: the ground link counts as lost",
                    GROUND_SILENT_MAX.as_secs_f64()
                );
            } else {
                info!("the MCP side is serving again");
            }
            self.events
                .push_back(Event::Audit(crate::audit::events::ground_serving(
                    !silent,
                    GROUND_SILENT_MAX,
                )));
        }
        self.stop
            .handle_ground_link(now, self.ground_connected && !silent);
    }
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
