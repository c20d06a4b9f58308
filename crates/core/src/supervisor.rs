//! The supervisor core: what the daemon decides on each input, with no IO.
//!
//! It composes the vehicle-state tracker, the link-health tracker and the command protocol,
//! schedules the companion heartbeat, and asks the autopilot for the telemetry the state
//! needs once the autopilot is found (and again when it comes back).
//!
//! Call order, on every turn of the shell's loop:
//! 1. `handle_link_event(now, event)` for each link event, or nothing on a timer tick;
//! 2. `poll_transmit(now)` until `None`, sending each message on the link;
//! 3. `poll_notice()` until `None`, logging each one;
//! 4. sleep until `poll_timeout()` or the next input.
//!
//! The companion heartbeat is produced here and nowhere else, so a stalled decision loop
//! stops heartbeating and the autopilot's own companion/GCS failsafe fires.

mod fence;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{BreachAction, EnvelopeConfig};
use crate::flight::{Action, Executor, ExecutorEvent, ExecutorOptions, JobId, Outcome};
use crate::link::dialect::{self, MavAutopilot, MavModeFlag, MavState, MavType};
use crate::link::event::LinkEvent;
use crate::link::frame::FrameCounters;
use crate::link::health::LinkHealth;
use crate::link::{MavHeader, MavMessage};
use crate::refusal::{Refusal, RefusalKind};
use crate::role::Caller;
use crate::role::Role;
use crate::safety::preflight::{self, PreflightReport, Severity};
use crate::safety::{
    ActionKind, Envelope, GeoPosition, GoalRequest, MonitorVerdict, VehicleView, Verdict, Whitelist,
};
use crate::vehicle::command::{
    AbortReason, CommandEvent, CommandOptions, CommandOutcome, CommandProtocol, CommandRequest,
    telemetry_requests,
};
use crate::vehicle::modes::FlightMode;
use crate::vehicle::param_table::{
    DownloadProgress, ParamTable, ParamValue, WriteId, WriteOutcome,
};
use crate::vehicle::params::{ParamReader, ReadState};
use crate::vehicle::snapshot::{AutopilotKind, VehicleSnapshot};
use crate::vehicle::state::{VehicleState, VehicleStateOptions};

/// What the supervisor is configured with (from `[vehicle]`).
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub system_id: u8,
    pub component_id: u8,
    /// `MAV_TYPE_ONBOARD_CONTROLLER` for the daemon, `MAV_TYPE_GCS` for `probe`.
    pub heartbeat_type: MavType,
    pub heartbeat_interval: Duration,
    pub telemetry_rate_hz: f32,
    pub stale_after: Duration,
    pub heartbeat_timeout: Duration,
    pub command_ack_timeout: Duration,
    pub command_retries_max: u8,
    pub command_in_progress_timeout: Duration,
    /// The safety envelope (`[envelope]`); built once home is known.
    pub envelope: EnvelopeConfig,
    /// `[parameters]`: what an ADMIN may write (the whitelist's parameter table).
    pub parameters: crate::safety::param_allow::ParametersConfig,
    /// Download the autopilot's whole parameter table at link-up (the daemon; not `probe`).
    pub download_parameters: bool,
}

impl SupervisorOptions {
    /// The daemon's options from its configuration.
    pub fn from_config(vehicle: &crate::config::VehicleConfig) -> Self {
        Self {
            system_id: vehicle.system_id,
            component_id: vehicle.component_id,
            heartbeat_type: MavType::MAV_TYPE_ONBOARD_CONTROLLER,
            heartbeat_interval: Duration::from_millis(vehicle.heartbeat_interval_ms),
            telemetry_rate_hz: vehicle.telemetry_rate_hz,
            stale_after: Duration::from_millis(vehicle.stale_after_ms),
            heartbeat_timeout: Duration::from_millis(vehicle.heartbeat_timeout_ms),
            command_ack_timeout: Duration::from_millis(vehicle.command_ack_timeout_ms),
            command_retries_max: vehicle.command_retries_max,
            command_in_progress_timeout: Duration::from_millis(
                vehicle.command_in_progress_timeout_ms,
            ),
            envelope: EnvelopeConfig::default(),
            parameters: Default::default(),
            download_parameters: false,
        }
    }
}

/// Something worth telling a person, produced by the core and logged by the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    LinkUp {
        peer: String,
    },
    LinkDown {
        reason: String,
    },
    AutopilotFound {
        description: String,
    },
    AutopilotLost {
        silent_for: Duration,
    },
    TelemetryRequested {
        accepted: usize,
        refused: usize,
    },
    CommandFinished {
        description: String,
    },
    /// The envelope could not be built (home unusable, or home outside a keep-in).
    EnvelopeInvalid {
        reason: String,
    },
    /// The vehicle came within a margin (or moved away again: `warning` is `None`).
    EnvelopeWarning {
        warning: Option<String>,
    },
    /// The vehicle left the envelope; the hold was started in the same monitor turn.
    EnvelopeBreach {
        what: String,
    },
    /// A message the whitelist refused: never transmitted.
    WhitelistViolation {
        description: String,
    },
    /// The link refused frames or a connection (signing, pinning): `count` since the last
    /// report of this reason, the last one described.
    LinkRefused {
        reason: &'static str,
        count: u64,
        peer: Option<String>,
        detail: String,
    },
}

/// An envelope event for the clients (MCP `notifications/message`): approaching a margin is
/// a warning, a breach and the daemon's breach action are errors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct EnvelopeEvent {
    /// 1, 2, 3... in order, for this daemon process: a reader sends each one once.
    pub sequence: u64,
    /// `warning` or `error` (MCP logging levels).
    pub level: String,
    /// What happened and what the daemon does about it, in words.
    pub message: String,
}

/// Envelope events kept for readers; older ones are dropped (a reader that missed them
/// still has `envelope_warning` in the status and the daemon's log).
pub const ENVELOPE_EVENTS_MAX: usize = 16;

/// The supervisor state machine. See the module doc for the call order.
#[derive(Debug)]
pub struct Supervisor {
    options: SupervisorOptions,
    vehicle: VehicleState,
    health: LinkHealth,
    commands: CommandProtocol,
    next_heartbeat_at: Instant,
    /// Autopilot `(system, component)` we requested telemetry from; cleared on loss so a
    /// rebooted or reconnected autopilot is asked again.
    telemetry_target: Option<(u8, u8)>,
    /// `SET_MESSAGE_INTERVAL` requests still to send: one at a time, because the command
    /// protocol allows one outstanding command per (command id, target).
    telemetry_queue: VecDeque<CommandRequest>,
    telemetry_outstanding: Option<crate::vehicle::command::CommandId>,
    telemetry_accepted: usize,
    telemetry_refused: usize,
    autopilot_present: bool,
    notices: VecDeque<Notice>,
    executor: Executor,
    /// Why the link is down, while it is; requests are refused at once meanwhile.
    link_down: Option<String>,
    envelope: Option<Envelope>,
    /// Why there is no envelope (shown in refusals).
    envelope_missing: String,
    whitelist: Whitelist,
    whitelist_violations: u64,
    next_monitor_at: Instant,
    envelope_warning: Option<(WarningKind, String)>,
    breach: Option<BreachResponse>,
    /// The role whose request produced the commands now being sent (the whitelist keys on it).
    command_role: Role,
    envelope_events: VecDeque<EnvelopeEvent>,
    envelope_event_sequence: u64,
    /// Set while the emergency stop is latched (its refusal text): the e-stop's ladder
    /// commands the vehicle, so no job runs and the breach response stays out of its way.
    stop_refusal: Option<String>,
    /// The autopilot's parameters the pre-flight check reads.
    params: ParamReader,
    /// The autopilot's whole parameter table (`get_parameter`, `list_parameters`,
    /// `set_parameter`), downloaded at link-up when `download_parameters`.
    param_table: ParamTable,
    /// The live speed check: since when the ground speed exceeds the limit (with tolerance).
    speed_over_since: Option<Instant>,
    /// A speed excess was reported (once per excess) and, in a return or landing, when the
    /// limit was last asked for.
    speed_excess_reported: bool,
    speed_reasserted_at: Option<Instant>,
    /// The envelope mirrored into the autopilot's fence (issue 18, `supervisor/fence.rs`).
    fence: crate::vehicle::fence_sync::FenceSync,
    /// A check of the autopilot's fence is due (set at link-up, run once the parameters the
    /// pre-flight check reads are in, so the link-up burst is not doubled).
    fence_check_due: bool,
    /// A check found a difference and `[envelope] mirror_to_autopilot` is set.
    fence_mirror_due: bool,
    /// The pre-flight check as the status last showed it, and what it was computed from
    /// (`preflight_shown`).
    preflight_kept: Option<PreflightShown>,
}

/// The pre-flight check's verdict and everything it was computed from. The check formats a
/// sentence per finding (16,000 instructions and a dozen allocations, ten times a second for
/// the status); its inputs change a few times per flight.
#[derive(Debug, Clone)]
struct PreflightShown {
    parameters_generation: u64,
    kind: AutopilotKind,
    state: ReadState,
    reading: bool,
    missing: Vec<&'static str>,
    envelope: EnvelopeConfig,
    verdict: PreflightVerdict,
}

/// What `preflight::check` and the cruise speed say, before the report adds the times.
#[derive(Debug, Clone)]
struct PreflightVerdict {
    findings: std::sync::Arc<[preflight::Finding]>,
    margin_speed: preflight::MarginSpeed,
    margin_horizontal_m: f64,
    cruise_speed_m_s: f64,
    arming_allowed: bool,
}

/// A ground speed this far above the envelope's limit (at least [`SPEED_TOLERANCE_M_S_MIN`])
/// counts as an excess: the speed a healthy controller overshoots by, and GPS velocity noise.
pub const SPEED_TOLERANCE_FRACTION: f64 = 0.1;
pub const SPEED_TOLERANCE_M_S_MIN: f64 = 0.5;
/// An excess that lasts this long is a breach; it ends only at or below the limit itself
/// (hysteresis), so noise around the threshold does not trip it.
pub const SPEED_BREACH_AFTER: Duration = Duration::from_secs(1);
/// In a return or a landing the daemon asks for the limit again at most this often.
const SPEED_REASSERT_PERIOD: Duration = Duration::from_secs(2);

/// What the monitor's warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WarningKind {
    /// Within a margin (other than the floor's).
    Near,
    /// Outside the envelope.
    Breach,
}

/// The daemon's own answer to a breach: hold now, then the configured action.
#[derive(Debug, Clone)]
struct BreachResponse {
    what: String,
    escalate_at: Option<Instant>,
}

/// Which whitelist check a message leaving the core takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `Whitelist::check` at the message's role.
    Normal,
    /// `Whitelist::check_fence_mirror`: the one sanctioned writer of fence parameters.
    FenceMirror,
}

/// At most this many notices wait for the shell; older ones are dropped (they are logs).
const NOTICES_MAX: usize = 64;

impl Supervisor {
    pub fn new(options: SupervisorOptions, now: Instant) -> Self {
        let vehicle = VehicleState::new(VehicleStateOptions {
            stale_after: options.stale_after,
            heartbeat_timeout: options.heartbeat_timeout,
        });
        let commands = CommandProtocol::new(CommandOptions {
            ack_timeout: options.command_ack_timeout,
            retries_max: options.command_retries_max,
            in_progress_timeout: options.command_in_progress_timeout,
            source_system: options.system_id,
            source_component: options.component_id,
        });
        Self {
            vehicle,
            health: LinkHealth::new(),
            commands,
            next_heartbeat_at: now,
            telemetry_target: None,
            telemetry_queue: VecDeque::new(),
            telemetry_outstanding: None,
            telemetry_accepted: 0,
            telemetry_refused: 0,
            autopilot_present: false,
            notices: VecDeque::new(),
            whitelist: Whitelist::new(&options.envelope).with_parameters(&options.parameters),
            executor: Executor::new(ExecutorOptions::default()),
            link_down: None,
            envelope: None,
            envelope_missing: "the autopilot has not reported its home position yet".into(),
            whitelist_violations: 0,
            next_monitor_at: now,
            envelope_warning: None,
            breach: None,
            command_role: Role::System,
            envelope_events: VecDeque::new(),
            envelope_event_sequence: 0,
            stop_refusal: None,
            params: ParamReader::new(preflight::params_for),
            param_table: ParamTable::new(),
            speed_over_since: None,
            speed_excess_reported: false,
            speed_reasserted_at: None,
            fence: crate::vehicle::fence_sync::FenceSync::new(fence::mission_options(&options)),
            fence_check_due: false,
            fence_mirror_due: false,
            preflight_kept: None,
            options,
        }
    }

    /// The emergency stop's latch, from the e-stop driver on every turn. Latching ends the
    /// running job at once (nothing more is sent for it) and cancels the breach response.
    pub fn set_stop(&mut self, _now: Instant, refusal: Option<String>) {
        if self.stop_refusal.is_none()
            && let Some(reason) = &refusal
        {
            self.executor.abort_all(
                Outcome::Preempted,
                &format!("the emergency stop took over: {reason}"),
                &mut self.commands,
            );
            self.breach = None;
        }
        self.stop_refusal = refusal;
    }

    /// A flight request from a client. `Ok` is the job whose progress and end come out of
    /// `poll_job_event`; `Err` is a refusal, before anything was sent, that says why and
    /// what would be allowed.
    pub fn handle_request(
        &mut self,
        now: Instant,
        action: Action,
        caller: &Caller,
    ) -> Result<JobId, Refusal> {
        if caller.role < Role::Operator {
            return Err(Refusal::new(
                RefusalKind::Role,
                format!(
                    "{} needs the OPERATOR role; {} has {}",
                    action.name(),
                    caller.identity,
                    caller.role
                ),
            ));
        }
        if let Some(reason) = &self.stop_refusal
            && action != Action::Disarm
        {
            return Err(Refusal::new(
                RefusalKind::EmergencyStop,
                format!(
                    "{}: {reason}; only disarm (on the ground) is accepted while stopped",
                    action.name()
                ),
            ));
        }
        self.track_autopilot(now);
        if let Some(reason) = &self.link_down {
            return Err(Refusal::new(
                RefusalKind::LinkDown,
                format!(
                    "the autopilot link is down ({reason}); nothing can be sent until it is back"
                ),
            ));
        }
        if !self.autopilot_present {
            return Err(Refusal::new(
                RefusalKind::NoAutopilot,
                "the autopilot is not heard (no heartbeat); nothing can be commanded until it is back",
            ));
        }
        self.refresh_speed_policy();
        if matches!(action, Action::Arm | Action::Takeoff { .. }) && !self.vehicle.is_armed() {
            // Re-read before arming (the answers also update later decisions), and refuse
            // arming where the envelope cannot hold.
            self.params.refresh(now);
            self.preflight_refusal(now, action)?;
        }
        let plan = self.executor.plan(now, action, &self.vehicle)?;
        if let Verdict::Refused(refusal) = self.check_envelope(now, &plan) {
            return Err(refusal);
        }
        if self.breach.is_some() && !action.is_recovery() {
            return Err(Refusal::new(
                RefusalKind::BreachActive,
                "the vehicle breached the envelope and the daemon's breach action is running; \
                 only hold, land and return_home are accepted until it is back inside",
            ));
        }
        self.command_role = caller.role;
        Ok(self.executor.start(now, plan, &mut self.commands))
    }

    /// The envelope's verdict on a plan, before anything is sent.
    fn check_envelope(&self, now: Instant, plan: &crate::flight::Plan) -> Verdict {
        let action = plan.action();
        let Some(envelope) = &self.envelope else {
            return if action.is_recovery() || action == Action::Disarm {
                Verdict::Allowed
            } else {
                Verdict::Refused(Refusal::new(
                    RefusalKind::NoEnvelope,
                    format!(
                        "no safety envelope is in force ({}); only hold, land, return_home and \
                         disarm are accepted",
                        self.envelope_missing
                    ),
                ))
            };
        };
        let facts = self.vehicle.view(now);
        let kind = match action {
            Action::Goto { .. } | Action::MoveRelative { .. } => {
                let Some(goal) = plan.goal() else {
                    return Verdict::Refused(Refusal::new(
                        RefusalKind::Internal,
                        "internal error: a motion plan without a goal",
                    ));
                };
                return envelope.check_goal(
                    &GoalRequest {
                        from: GeoPosition {
                            latitude_deg: goal.from_latitude_deg,
                            longitude_deg: goal.from_longitude_deg,
                            altitude_m: goal.from_altitude_m,
                        },
                        to: GeoPosition {
                            latitude_deg: goal.to_latitude_deg,
                            longitude_deg: goal.to_longitude_deg,
                            altitude_m: goal.to_altitude_m,
                        },
                        speed_m_s: goal.speed_m_s,
                    },
                    &facts,
                );
            }
            Action::Arm => ActionKind::Arm,
            Action::Disarm => ActionKind::Disarm,
            Action::Takeoff { altitude_m } => ActionKind::Takeoff { altitude_m },
            Action::Hold => ActionKind::Hold,
            Action::Land => ActionKind::Land,
            Action::ReturnHome => ActionKind::ReturnHome,
            Action::SetSpeed { speed_m_s } => ActionKind::SetSpeed { speed_m_s },
            Action::SetHeading { heading_deg } => ActionKind::SetHeading { heading_deg },
            Action::PauseMission => ActionKind::Hold,
            Action::RunMission { resume } => return self.check_mission(envelope, &facts, resume),
        };
        envelope.check_action(kind, &facts)
    }

    /// A mission run: every point and leg of the checked mission again, from where the
    /// vehicle is now to the item it will fly to first (the first, or on resume the current).
    fn check_mission(&self, envelope: &Envelope, facts: &VehicleView, resume: bool) -> Verdict {
        let refused = |message: String| {
            Verdict::Refused(Refusal::new(
                RefusalKind::Envelope(Default::default()),
                message,
            ))
        };
        let Some((route, current)) = self.executor.mission() else {
            return refused(
                "no mission has been downloaded and checked against the envelope".into(),
            );
        };
        let Some(from) = facts.position else {
            return refused("the mission cannot be checked without a trusted position".into());
        };
        let from_item = if resume { current.unwrap_or(0) } else { 0 };
        match crate::flight::mission::check_route(envelope, facts, from, route, from_item) {
            Ok(()) => Verdict::Allowed,
            Err(why) => refused(format!(
                "the mission is refused: {why}; nothing was started"
            )),
        }
    }

    /// The mission a run may fly, as the caller downloaded and checked it (`None`: forget
    /// it, after an upload or a clear, until the autopilot's list is read back).
    pub fn set_mission(&mut self, route: Option<crate::flight::mission::Route>) {
        let target = self
            .vehicle
            .autopilot()
            .map(|a| crate::vehicle::mission::MissionTarget {
                system: a.system_id,
                component: a.component_id,
                autopilot: a.autopilot,
            });
        self.executor.set_mission(route.zip(target));
    }

    /// The mission a run would fly and the vehicle's current item, once reported.
    pub fn mission(&self) -> Option<(&crate::flight::mission::Route, Option<u16>)> {
        self.executor.mission()
    }

    /// The executor flies every motion at the envelope's horizontal limit, or slower when the
    /// autopilot's own cruise is slower; the envelope's margins are sized from the fastest
    /// speed the autopilot is configured to fly. Without an envelope nothing but recovery
    /// flies.
    fn refresh_speed_policy(&mut self) {
        let kind = self.params.autopilot();
        let params = &self.params;
        let value = |name: &str| params.value(name);
        let Some(envelope) = &mut self.envelope else {
            self.executor.set_speed_policy(None, None);
            return;
        };
        let limit = envelope.config().speed_horizontal_m_s_max;
        let (basis, cruise) = match kind {
            Some(kind) => (
                preflight::margin_speed(kind, &value, limit),
                preflight::autopilot_cruise_m_s(kind, &value),
            ),
            None => (
                preflight::margin_speed(AutopilotKind::Other, &value, limit),
                None,
            ),
        };
        if *envelope.margin_speed() != basis {
            envelope.set_margin_speed(basis);
        }
        self.executor
            .set_speed_policy(Some(limit), Some(cruise.map_or(limit, |c| c.min(limit))));
    }

    /// The pre-flight check of the autopilot against the envelope, as of now.
    pub fn preflight(&self, now: Instant) -> PreflightReport {
        self.preflight_report(now, self.preflight_verdict())
    }

    /// [`preflight`](Self::preflight) for the status, ten times a second: the verdict is
    /// computed again only when something it is computed from changed (the parameters'
    /// values, the autopilot, the reading's progress, the names given up on, the envelope).
    /// The arming gate never uses it: it asks `preflight`, so a key that missed an input
    /// could only make the status lag, never let an arming through.
    pub fn preflight_shown(&mut self, now: Instant) -> PreflightReport {
        let config = self.envelope_config();
        let params = &self.params;
        let fresh = |shown: &PreflightShown| {
            shown.parameters_generation == params.generation()
                && shown.kind == params.autopilot().unwrap_or(AutopilotKind::Other)
                && shown.state == params.state()
                && shown.reading == self.preflight_reading()
                && shown.missing == params.missing()
                && shown.envelope == *config
        };
        let verdict = match &self.preflight_kept {
            Some(shown) if fresh(shown) => shown.verdict.clone(),
            _ => {
                let verdict = self.preflight_verdict();
                self.preflight_kept = Some(PreflightShown {
                    parameters_generation: self.params.generation(),
                    kind: self.params.autopilot().unwrap_or(AutopilotKind::Other),
                    state: self.params.state(),
                    reading: self.preflight_reading(),
                    missing: self.params.missing().to_vec(),
                    envelope: self.envelope_config().clone(),
                    verdict: verdict.clone(),
                });
                verdict
            }
        };
        self.preflight_report(now, verdict)
    }

    /// The envelope's configuration in force, or the configured one before home is known.
    fn envelope_config(&self) -> &EnvelopeConfig {
        self.envelope
            .as_ref()
            .map_or(&self.options.envelope, |e| e.config())
    }

    fn preflight_verdict(&self) -> PreflightVerdict {
        let config = self.envelope_config();
        let kind = self.params.autopilot().unwrap_or(AutopilotKind::Other);
        let params = &self.params;
        let value = |name: &str| params.value(name);
        let reading = self.preflight_reading();
        let (findings, margin_speed, margin_horizontal_m) = preflight::check(
            &preflight::Parameters {
                kind,
                value: &value,
                reading,
                missing: params.missing(),
            },
            config,
        );
        let limit = config.speed_horizontal_m_s_max;
        let cruise = preflight::autopilot_cruise_m_s(kind, &value).map_or(limit, |c| c.min(limit));
        let arming_allowed = !reading
            && params.state() != ReadState::NotStarted
            && findings.iter().all(|f| f.severity != Severity::Error);
        PreflightVerdict {
            findings: findings.into(),
            margin_speed,
            margin_horizontal_m,
            cruise_speed_m_s: cruise,
            arming_allowed,
        }
    }

    fn preflight_report(&self, now: Instant, verdict: PreflightVerdict) -> PreflightReport {
        let params = &self.params;
        PreflightReport {
            state: match params.state() {
                ReadState::NotStarted => "not_started",
                ReadState::Reading => "reading",
                ReadState::Done => "done",
            }
            .into(),
            parameters_read: params.read_count(),
            parameters_expected: params.expected(),
            parameters_missing: params.missing().iter().map(|n| n.to_string()).collect(),
            parameters_age_ms: params.oldest_at().map(|at| {
                u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
            }),
            findings: verdict.findings,
            margin_speed: verdict.margin_speed,
            margin_horizontal_m: verdict.margin_horizontal_m,
            cruise_speed_m_s: verdict.cruise_speed_m_s,
            arming_allowed: verdict.arming_allowed,
        }
    }

    /// Some parameter was never read yet and is still being asked for.
    fn preflight_reading(&self) -> bool {
        self.params.state() == ReadState::Reading
            && self.params.read_count() + self.params.missing().len() < self.params.expected()
    }

    /// Arming is refused while the autopilot's parameters are first being read, and where a
    /// finding says the envelope cannot hold.
    fn preflight_refusal(&self, now: Instant, action: Action) -> Result<(), Refusal> {
        let refuse = |message| Err(Refusal::new(RefusalKind::Preflight, message));
        if self.params.state() == ReadState::NotStarted {
            return refuse(format!(
                "{} waits for the pre-flight check, which has not read the autopilot's \
                 parameters yet; try again in a moment",
                action.name()
            ));
        }
        if self.preflight_reading() {
            return refuse(format!(
                "{} waits for the pre-flight check, still reading the autopilot's parameters \
                 ({} of {}); try again in a moment",
                action.name(),
                self.params.read_count(),
                self.params.expected()
            ));
        }
        let report = self.preflight(now);
        if let Some(error) = report.first_error() {
            return refuse(format!(
                "{} refused by the pre-flight check: {}. Set {} to {} on the autopilot \
                 (preflight_check lists every finding)",
                action.name(),
                error.message,
                error.parameter,
                error.set_to
            ));
        }
        Ok(())
    }

    /// The envelope in force, if any.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref()
    }

    /// Why there is no envelope, when there is none.
    pub fn envelope_missing(&self) -> Option<&str> {
        self.envelope
            .is_none()
            .then_some(self.envelope_missing.as_str())
    }

    /// The monitor's warning while the vehicle is near a margin.
    pub fn envelope_warning(&self) -> Option<&str> {
        self.envelope_warning
            .as_ref()
            .map(|(_, text)| text.as_str())
    }

    /// An ADMIN's tightening of the envelope in force (`set_envelope`): `changes` are
    /// `[envelope]` keys with their new values (`safety::tightening`). The new envelope must
    /// pass `Envelope::new` at the current home and position (so it cannot put the vehicle in
    /// breach) and `tighten` against the current one as if armed, on the ground too: at run
    /// time an envelope only tightens; widening is the configuration file's. It stays until
    /// the daemon restarts, rebuilt from the changed section when home moves.
    pub fn set_envelope(
        &mut self,
        changes: &serde_json::Map<String, serde_json::Value>,
        caller: &Caller,
    ) -> Result<crate::safety::EnvelopeSummary, String> {
        if caller.role < Role::Admin {
            return Err(format!(
                "set_envelope needs the ADMIN role; {} has {}",
                caller.identity, caller.role
            ));
        }
        let Some(current) = &self.envelope else {
            return Err(format!(
                "no envelope is in force ({}), so there is none to tighten",
                self.envelope_missing
            ));
        };
        let proposed = crate::safety::tightening::changed_config(current.config(), changes)?;
        let position = self.vehicle.position().map(|p| GeoPosition {
            latitude_deg: p.latitude_deg,
            longitude_deg: p.longitude_deg,
            altitude_m: p.altitude_relative_m,
        });
        let new = Envelope::new(&proposed, current.home(), position)
            .map_err(|e| format!("the tightened envelope is refused: {e}"))?;
        let new = match crate::safety::tighten(current, new, true) {
            Ok(new) => new,
            Err(crate::safety::EnvelopeError::Widening { what }) => {
                return Err(format!(
                    "set_envelope only tightens the envelope in force, but the new one {what}; \
                     to widen it, edit [envelope] in the configuration and restart the daemon"
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        self.whitelist = Whitelist::new(&proposed).with_parameters(&self.options.parameters);
        self.options.envelope = proposed;
        self.envelope = Some(new);
        self.refresh_speed_policy();
        self.envelope
            .as_ref()
            .map(Envelope::summary)
            .ok_or_else(|| "internal error: the tightened envelope is gone".to_string())
    }

    /// Messages the whitelist stopped (never transmitted).
    pub fn whitelist_violations(&self) -> u64 {
        self.whitelist_violations
    }

    /// (Re)builds the envelope when home appears or moves.
    fn track_envelope(&mut self) {
        let Some(home) = self.vehicle.home() else {
            return;
        };
        let home = GeoPosition {
            latitude_deg: home.latitude_deg,
            longitude_deg: home.longitude_deg,
            altitude_m: 0.0,
        };
        if let Some(current) = &self.envelope {
            let h = current.home();
            if crate::geodesy::distance_m(
                h.latitude_deg,
                h.longitude_deg,
                home.latitude_deg,
                home.longitude_deg,
            ) < 0.5
            {
                return;
            }
        }
        let position = self.vehicle.position().map(|p| GeoPosition {
            latitude_deg: p.latitude_deg,
            longitude_deg: p.longitude_deg,
            altitude_m: p.altitude_relative_m,
        });
        match Envelope::new(&self.options.envelope, home, position) {
            Ok(envelope) => self.envelope = Some(envelope),
            Err(error) => {
                let reason = format!("the configured envelope is refused: {error}");
                if self.envelope_missing != reason {
                    self.envelope_missing = reason.clone();
                    self.notice(Notice::EnvelopeInvalid { reason });
                }
                self.envelope = None;
            }
        }
    }

    /// The live monitor: at `check_interval_s`, warn near a margin, act on a breach.
    fn monitor(&mut self, now: Instant) {
        if now < self.next_monitor_at {
            return;
        }
        let interval =
            Duration::from_secs_f64(self.options.envelope.check_interval_s.clamp(0.005, 0.04));
        self.next_monitor_at = now + interval;
        self.track_envelope();
        let Some(envelope) = &self.envelope else {
            return;
        };
        if !(self.vehicle.is_armed() && self.vehicle.in_air()) {
            self.breach = None;
            self.set_warning(None);
            self.speed_over_since = None;
            self.speed_excess_reported = false;
            return;
        }
        let facts = self.vehicle.view(now);
        let limit_m_s = envelope.config().speed_horizontal_m_s_max;
        match envelope.monitor(&facts) {
            MonitorVerdict::Inside | MonitorVerdict::NoPosition => {
                self.set_warning(None);
            }
            // Every takeoff and landing passes through the floor's margin, and the floor is
            // never a breach (see `safety::envelope`): not worth a warning to every client.
            MonitorVerdict::NearMargin { floor: true, .. } => {
                self.set_warning(None);
            }
            MonitorVerdict::NearMargin {
                what, distance_m, ..
            } => {
                self.set_warning(Some((
                    WarningKind::Near,
                    format!("near the envelope: {distance_m:.1} m from {what}"),
                )));
            }
            MonitorVerdict::Breach { what } => {
                self.set_warning(Some((
                    WarningKind::Breach,
                    format!("envelope breach: {what}"),
                )));
                if self.breach.is_none() && self.stop_refusal.is_none() {
                    self.start_breach_response(now, what);
                }
            }
        }
        self.check_speed(now, &facts, limit_m_s);
        self.escalate_breach(now);
    }

    /// The live speed check: a ground speed above the envelope's limit (plus a tolerance) for
    /// [`SPEED_BREACH_AFTER`] is a breach. What it does depends on who flies:
    /// - the pilot (a manual mode, or ArduCopter LOITER): an event only; the pilot wins;
    /// - a return or a landing (RTL, LAND, SmartRTL: the way down, often the autopilot's own
    ///   failsafe): the daemon asks for the limit with `DO_CHANGE_SPEED` and never interrupts
    ///   it with a hold;
    /// - anything else: the breach response, as for leaving the envelope: hold now, then the
    ///   configured action after `breach_hold_s`.
    fn check_speed(&mut self, now: Instant, facts: &VehicleView, limit_m_s: f64) {
        if facts.position.is_none() {
            return;
        }
        let [north, east, _] = facts.velocity_ned_m_s;
        let ground_m_s = north.hypot(east);
        let tolerance = (limit_m_s * SPEED_TOLERANCE_FRACTION).max(SPEED_TOLERANCE_M_S_MIN);
        if ground_m_s <= limit_m_s {
            self.speed_over_since = None;
            self.speed_excess_reported = false;
            return;
        }
        if ground_m_s <= limit_m_s + tolerance && self.speed_over_since.is_none() {
            return;
        }
        let since = *self.speed_over_since.get_or_insert(now);
        let kind = self
            .vehicle
            .autopilot()
            .map_or(AutopilotKind::Other, |a| a.autopilot);
        let mode = self.vehicle.flight_mode();
        let mode_name = mode.map_or("an unknown mode", |m| m.name(kind));
        if !self.speed_excess_reported {
            self.speed_excess_reported = true;
            self.envelope_event(
                "warning",
                format!(
                    "ground speed {ground_m_s:.1} m/s is above the envelope's {limit_m_s} m/s \
                     limit (in {mode_name}); the daemon acts if it lasts {:.1} s",
                    SPEED_BREACH_AFTER.as_secs_f64()
                ),
            );
        }
        if now < since + SPEED_BREACH_AFTER || self.breach.is_some() || self.stop_refusal.is_some()
        {
            return;
        }
        let pilot = mode.is_some_and(|m| {
            FlightMode::is_manual(kind, m)
                || (kind == AutopilotKind::Ardupilot && m == FlightMode::Loiter)
        });
        let going_down = matches!(
            mode,
            Some(FlightMode::Rtl | FlightMode::Land | FlightMode::SmartRtl)
        );
        if pilot {
            return;
        }
        if going_down {
            if self
                .speed_reasserted_at
                .is_some_and(|at| now < at + SPEED_REASSERT_PERIOD)
            {
                return;
            }
            if let Some(a) = self.vehicle.autopilot() {
                let (system, component) = (a.system_id, a.component_id);
                if self
                    .commands
                    .submit(
                        now,
                        system,
                        component,
                        crate::flight::speed::change_speed(limit_m_s),
                    )
                    .is_ok()
                {
                    self.speed_reasserted_at = Some(now);
                    self.envelope_event(
                        "warning",
                        format!(
                            "the vehicle flies {mode_name} at {ground_m_s:.1} m/s, above the \
                             {limit_m_s} m/s limit: the daemon asked the autopilot for \
                             {limit_m_s} m/s (it does not interrupt a return or a landing)"
                        ),
                    );
                }
            }
            return;
        }
        self.start_breach_response(
            now,
            format!(
                "speed {ground_m_s:.1} m/s above the {limit_m_s} m/s limit for {:.1} s",
                now.saturating_duration_since(since).as_secs_f64()
            ),
        );
    }

    fn set_warning(&mut self, warning: Option<(WarningKind, String)>) {
        // Notices on changes of kind only, not on every distance update.
        let kind = warning.as_ref().map(|(kind, _)| *kind);
        if kind != self.envelope_warning.as_ref().map(|(kind, _)| *kind) {
            self.notice(Notice::EnvelopeWarning {
                warning: warning.as_ref().map(|(_, text)| text.clone()),
            });
            // Breaches are reported by the breach response, with the action taken.
            if let Some((WarningKind::Near, w)) = &warning {
                self.envelope_event(
                    "warning",
                    format!("{w}; the daemon acts if the vehicle leaves the envelope"),
                );
            }
        }
        self.envelope_warning = warning;
    }

    /// Hold at once, without waiting for the ground; the configured action follows.
    fn start_breach_response(&mut self, now: Instant, what: String) {
        self.executor.abort_all(
            Outcome::Preempted,
            &format!("envelope breach ({what}); the daemon's breach action took over"),
            &mut self.commands,
        );
        self.command_role = Role::System;
        if let Ok(plan) = self.executor.plan(now, Action::Hold, &self.vehicle) {
            self.executor.start(now, plan, &mut self.commands);
        }
        let hold = Duration::from_secs_f64(self.options.envelope.breach_hold_s.clamp(0.0, 60.0));
        self.notice(Notice::EnvelopeBreach { what: what.clone() });
        self.envelope_event(
            "error",
            format!(
                "envelope breach ({what}): the daemon holds position now and will {} after {:.1} s; \
                 only hold, land and return_home are accepted",
                self.breach_action_words(),
                hold.as_secs_f64()
            ),
        );
        self.breach = Some(BreachResponse {
            what,
            escalate_at: Some(now + hold),
        });
    }

    fn escalate_breach(&mut self, now: Instant) {
        let Some(breach) = &mut self.breach else {
            return;
        };
        if breach.escalate_at.is_none_or(|at| now < at) {
            return;
        }
        breach.escalate_at = None;
        let action = match self.options.envelope.breach_action {
            BreachAction::Land => Action::Land,
            BreachAction::ReturnHome => Action::ReturnHome,
        };
        self.command_role = Role::System;
        let what = breach.what.clone();
        if let Ok(plan) = self.executor.plan(now, action, &self.vehicle) {
            self.executor.start(now, plan, &mut self.commands);
        }
        let words = self.breach_action_words();
        self.envelope_event(
            "error",
            format!("breach action ({what}): the daemon is commanding the vehicle to {words}"),
        );
    }

    fn breach_action_words(&self) -> &'static str {
        match self.options.envelope.breach_action {
            BreachAction::Land => "land",
            BreachAction::ReturnHome => "return home",
        }
    }

    fn envelope_event(&mut self, level: &str, message: String) {
        self.envelope_event_sequence += 1;
        if self.envelope_events.len() == ENVELOPE_EVENTS_MAX {
            self.envelope_events.pop_front();
        }
        self.envelope_events.push_back(EnvelopeEvent {
            sequence: self.envelope_event_sequence,
            level: level.into(),
            message,
        });
    }

    /// The last envelope events, oldest first (at most [`ENVELOPE_EVENTS_MAX`]).
    pub fn envelope_events(&self) -> impl Iterator<Item = &EnvelopeEvent> {
        self.envelope_events.iter()
    }

    /// True while the daemon's own breach action runs.
    pub fn breach_active(&self) -> Option<&str> {
        self.breach.as_ref().map(|b| b.what.as_str())
    }

    /// Cancels a job (MCP `notifications/cancelled`); a cancelled motion holds position.
    pub fn cancel_job(&mut self, now: Instant, job: JobId) {
        self.executor
            .cancel(now, job, &self.vehicle, &mut self.commands);
    }

    /// Progress and ends of jobs.
    pub fn poll_job_event(&mut self) -> Option<ExecutorEvent> {
        self.executor.poll_event()
    }

    /// The action being flown, if any.
    pub fn active_action(&self) -> Option<Action> {
        self.executor.current().map(|(_, action)| action)
    }

    /// Feeds one event from the link shell.
    pub fn handle_link_event(&mut self, now: Instant, event: &LinkEvent) {
        match event {
            LinkEvent::Connected { peer } => {
                self.health.handle_connected();
                self.link_down = None;
                self.notice(Notice::LinkUp { peer: peer.clone() });
            }
            LinkEvent::Disconnected { reason } => {
                self.health.handle_disconnected();
                self.link_down = Some(reason.clone());
                self.executor.abort_all(
                    Outcome::LinkLost,
                    &format!(
                        "the autopilot link was lost ({reason}); the action ended and nothing \
                         more is sent for it; the autopilot's own failsafes apply"
                    ),
                    &mut self.commands,
                );
                // Nothing is queued to fly later: pending commands end now.
                self.commands.abort_all(AbortReason::LinkLost);
                self.forget_telemetry_requests();
                self.params.stop();
                self.param_table.stop();
                self.fence.set_target(None);
                self.notice(Notice::LinkDown {
                    reason: reason.clone(),
                });
            }
            LinkEvent::Frame { frame, .. } => {
                self.handle_message(now, &frame.header, &frame.message)
            }
            LinkEvent::Refused(refusal) => {
                self.health.handle_refused(now, refusal);
                self.notice(Notice::LinkRefused {
                    reason: refusal.reason.as_str(),
                    count: refusal.count,
                    peer: refusal.peer.clone(),
                    detail: refusal.detail.clone(),
                });
            }
        }
    }

    /// Feeds one decoded message (also used directly by tests).
    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, message: &MavMessage) {
        self.health.handle_frame(now, header, message);
        let was_armed = self.vehicle.is_armed();
        self.vehicle.handle_message(now, header, message);
        self.params.handle_message(now, header, message);
        self.param_table.handle_message(now, header, message);
        self.fence.handle_message(now, header, message);
        if was_armed && !self.vehicle.is_armed() {
            // Landed: read again, so a change made on the ground is seen before the next arm.
            self.params.refresh(now);
        }
        self.commands.handle_message(now, header, message);
        self.executor.handle_message(now, header, message);
        self.drain_command_events(now);
        // Who the autopilot is and whether it is alive change only with its heartbeat (its
        // silence is found by `poll_transmit`, which every turn runs).
        if matches!(message, MavMessage::HEARTBEAT(_)) {
            self.track_autopilot(now);
        }
        // A new position is checked on the next `poll_transmit`, not at the next tick: the
        // breach action then starts within a loop turn of the report that shows the breach.
        if matches!(message, MavMessage::GLOBAL_POSITION_INT(_)) {
            self.next_monitor_at = self.next_monitor_at.min(now);
        }
    }

    /// The one whitelist's verdict on a message another part of the daemon's Core sends (the
    /// e-stop's commands), against the vehicle as it is at `now`. Not counted as a violation
    /// here: the caller reports it.
    pub fn check_outgoing(
        &self,
        now: Instant,
        message: &MavMessage,
        role: Role,
    ) -> Result<(), crate::safety::whitelist::Violation> {
        self.whitelist.check(message, &self.vehicle.view(now), role)
    }

    /// The next message to send, if any: the companion heartbeat when due, then commands.
    ///
    /// This is the single point where messages leave the core: every one passes
    /// `Whitelist::check` here; a refused one is counted, reported and never returned.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        loop {
            let (message, role, path) = self.next_message(now)?;
            let view = self.vehicle.view(now);
            let verdict = match path {
                Path::FenceMirror => self.whitelist.check_fence_mirror(&message, &view),
                Path::Normal => self.whitelist.check(&message, &view, role),
            };
            match verdict {
                Ok(()) => return Some(message),
                Err(violation) => {
                    self.whitelist_violations += 1;
                    let description = violation.to_string();
                    // The job that produced it must not wait for an ACK that cannot come.
                    if role != Role::System || self.executor.current().is_some() {
                        self.executor.abort_all(
                            Outcome::Failed,
                            &format!(
                                "the daemon's command whitelist refused to send it ({description}); \
                                 nothing was sent. This is an internal error: please report it"
                            ),
                            &mut self.commands,
                        );
                    }
                    self.notice(Notice::WhitelistViolation { description });
                }
            }
        }
    }

    fn next_message(&mut self, now: Instant) -> Option<(MavMessage, Role, Path)> {
        // The fence mirror's traffic comes last: the heartbeat, the monitor and flight
        // commands never wait behind it.
        if let Some((message, role)) = self.next_other_message(now) {
            return Some((message, role, Path::Normal));
        }
        let message = self.next_fence_message(now)?;
        Some((message, Role::Admin, Path::FenceMirror))
    }

    fn next_other_message(&mut self, now: Instant) -> Option<(MavMessage, Role)> {
        self.track_autopilot(now);
        self.monitor(now);
        if now >= self.next_heartbeat_at {
            // Schedule from `now`, not from the missed deadline: after a stall the daemon
            // heartbeats once and resumes its rhythm instead of bursting to catch up.
            self.next_heartbeat_at = now + self.options.heartbeat_interval;
            return Some((self.heartbeat(), Role::System));
        }
        if self.link_down.is_none()
            && let Some(request) = self.params.poll_transmit(now)
        {
            return Some((request, Role::System));
        }
        // Writes were checked against the caller's role when accepted (`set_parameter`);
        // the whitelist checks them again here, with the vehicle's state of the moment.
        if self.link_down.is_none()
            && let Some(message) = self.param_table.poll_transmit(now)
        {
            let role = match message {
                MavMessage::PARAM_SET(_) => Role::Admin,
                _ => Role::System,
            };
            return Some((message, role));
        }
        self.refresh_speed_policy();
        self.executor.poll(now, &self.vehicle, &mut self.commands);
        if let Some(message) = self.executor.poll_transmit() {
            return Some((message, self.command_role));
        }
        let message = self.commands.poll_transmit(now);
        self.drain_command_events(now);
        let message = message?;
        // Telemetry requests are the daemon's own; flight commands carry their caller's role.
        let role = match &message {
            MavMessage::COMMAND_LONG(c)
                if matches!(
                    c.command,
                    dialect::MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL
                        | dialect::MavCmd::MAV_CMD_REQUEST_MESSAGE
                ) =>
            {
                Role::System
            }
            _ => self.command_role,
        };
        Some((message, role))
    }

    /// The earliest instant at which `poll_transmit` or the timeouts need a turn.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_heartbeat_at;
        if let Some(command_at) = self.commands.poll_timeout() {
            at = at.min(command_at);
        }
        if let Some(job_at) = self.executor.poll_timeout() {
            at = at.min(job_at);
        }
        if let Some(params_at) = self.params.poll_timeout() {
            at = at.min(params_at);
        }
        if let Some(table_at) = self.param_table.poll_timeout() {
            at = at.min(table_at);
        }
        if let Some(fence_at) = self.fence_poll_timeout() {
            at = at.min(fence_at);
        }
        if self.vehicle.is_armed() {
            at = at.min(self.next_monitor_at);
        }
        at
    }

    /// One parameter of the autopilot's table, if read.
    pub fn parameter(&self, name: &str) -> Option<ParamValue> {
        self.param_table.get(name)
    }

    /// The table's parameters starting with `prefix` (at most `limit`), and how many match.
    pub fn parameters(&self, prefix: &str, limit: usize) -> (Vec<ParamValue>, usize) {
        self.param_table.list(prefix, limit)
    }

    /// How far the table's download got.
    pub fn parameter_progress(&self) -> DownloadProgress {
        self.param_table.progress()
    }

    /// What `set_parameter` may write, with the bounds in force.
    pub fn writable_parameters(&self) -> Vec<crate::safety::param_allow::ParamAllow> {
        self.whitelist.writable_parameters()
    }

    /// Queues a write of `name` = `value` (firmware units) for `role`: refused at once, with
    /// what would be allowed, unless the whitelist would send it now (never-write families,
    /// allowlist and bounds, ADMIN, disarmed on the ground) and the value fits the
    /// parameter's type. The old value comes back for the audit.
    pub fn set_parameter(
        &mut self,
        now: Instant,
        name: &str,
        value: f64,
        role: Role,
    ) -> Result<(WriteId, f64), String> {
        let Some(current) = self.param_table.get(name) else {
            if let Some(prefix) = crate::safety::param_allow::never_writable(name) {
                return Err(format!(
                    "`{name}` is a {prefix}* parameter (fence, failsafe, arming checks, \
                     signing): never writable from the ground"
                ));
            }
            let progress = self.param_table.progress();
            return Err(format!(
                "`{name}` is not in the autopilot's parameter table as read so far ({} of {} \
                 read, {:?}); check the name with list_parameters",
                progress.received,
                progress.count.map_or("?".into(), |c| c.to_string()),
                progress.state
            ));
        };
        let Some((system, component)) = self.telemetry_target else {
            return Err("no autopilot is connected".into());
        };
        let kind_of_value = crate::vehicle::param_table::mav_type(current.kind);
        let message = MavMessage::PARAM_SET(dialect::PARAM_SET_DATA {
            param_value: crate::vehicle::params::encode(
                self.param_table.autopilot(),
                kind_of_value,
                value,
            ),
            target_system: system,
            target_component: component,
            param_id: name.into(),
            param_type: kind_of_value,
        });
        if let Err(violation) = self
            .whitelist
            .check(&message, &self.vehicle.view(now), role)
        {
            return Err(violation.reason);
        }
        let id = self.param_table.set(name, value)?;
        Ok((id, current.value))
    }

    /// The outcome of a parameter write, once it has one.
    pub fn poll_parameter_outcome(&mut self) -> Option<(WriteId, WriteOutcome)> {
        self.param_table.poll_outcome()
    }

    /// The next notice for the log.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Everything known about the vehicle, with link health from the shell's counters.
    pub fn snapshot(
        &self,
        now: Instant,
        counters: FrameCounters,
        reconnects: u64,
    ) -> VehicleSnapshot {
        let mut snapshot = self.vehicle.snapshot(now);
        let mut link = self.health.status(now, counters);
        link.reconnects = reconnects;
        snapshot.link = link;
        snapshot
    }

    /// The vehicle-state core, for reads.
    pub fn vehicle(&self) -> &VehicleState {
        &self.vehicle
    }

    fn heartbeat(&self) -> MavMessage {
        MavMessage::HEARTBEAT(dialect::HEARTBEAT_DATA {
            custom_mode: 0,
            mavtype: self.options.heartbeat_type,
            autopilot: MavAutopilot::MAV_AUTOPILOT_INVALID,
            base_mode: MavModeFlag::empty(),
            system_status: MavState::MAV_STATE_ACTIVE,
            mavlink_version: 3,
        })
    }

    /// Notices the autopilot appearing and disappearing; requests telemetry once per appearance.
    fn track_autopilot(&mut self, now: Instant) {
        // Called for every heartbeat and every turn: the description is formatted only when it
        // is announced.
        let identity = self
            .vehicle
            .autopilot()
            .map(|a| (a.system_id, a.component_id, a.autopilot));
        let alive = self
            .vehicle
            .heartbeat_age(now)
            .is_some_and(|age| age <= self.options.heartbeat_timeout);
        match (identity, alive) {
            (Some((system, component, kind)), true) => {
                if !self.autopilot_present {
                    self.autopilot_present = true;
                    let description = self.vehicle.autopilot().map_or_else(String::new, |a| {
                        format!(
                            "{:?} {} (system {}, component {})",
                            a.autopilot, a.vehicle_type, a.system_id, a.component_id
                        )
                    });
                    self.notice(Notice::AutopilotFound { description });
                }
                if self.telemetry_target != Some((system, component)) {
                    self.telemetry_target = Some((system, component));
                    // The pre-flight check reads the autopilot at link-up.
                    self.params.start(now, kind, system, component);
                    if self.options.download_parameters {
                        self.param_table.start(now, kind, system, component);
                    }
                    self.fence_link_up(system, component, kind);
                    self.telemetry_queue =
                        telemetry_requests(kind, self.options.telemetry_rate_hz).into();
                    self.telemetry_accepted = 0;
                    self.telemetry_refused = 0;
                    self.submit_next_telemetry_request(now);
                }
            }
            (Some(_), false) if self.autopilot_present => {
                self.autopilot_present = false;
                let silent_for = self.vehicle.heartbeat_age(now).unwrap_or_default();
                self.executor.abort_all(
                    Outcome::LinkLost,
                    &format!(
                        "the autopilot went silent (no heartbeat for {:.1} s); the action ended \
                         and nothing more is sent for it; the autopilot's own failsafes apply",
                        silent_for.as_secs_f64()
                    ),
                    &mut self.commands,
                );
                self.forget_telemetry_requests();
                self.params.stop();
                self.param_table.stop();
                self.fence.set_target(None);
                self.notice(Notice::AutopilotLost { silent_for });
            }
            _ => {}
        }
    }

    fn forget_telemetry_requests(&mut self) {
        self.telemetry_target = None;
        self.telemetry_queue.clear();
        if let Some(id) = self.telemetry_outstanding.take() {
            self.commands.cancel(id);
        }
    }

    fn submit_next_telemetry_request(&mut self, now: Instant) {
        let Some((system, component)) = self.telemetry_target else {
            return;
        };
        while self.telemetry_outstanding.is_none() {
            let Some(request) = self.telemetry_queue.pop_front() else {
                self.notice(Notice::TelemetryRequested {
                    accepted: self.telemetry_accepted,
                    refused: self.telemetry_refused,
                });
                return;
            };
            match self.commands.submit(now, system, component, request) {
                Ok(id) => self.telemetry_outstanding = Some(id),
                Err(_) => self.telemetry_refused += 1,
            }
        }
    }

    fn drain_command_events(&mut self, now: Instant) {
        while let Some(event) = self.commands.poll_event() {
            self.executor.handle_command_event(now, &event);
            if let CommandEvent::Finished { id, outcome, .. } = &event {
                let id = *id;
                if self.telemetry_outstanding == Some(id) {
                    self.telemetry_outstanding = None;
                    if matches!(outcome, CommandOutcome::Accepted) {
                        self.telemetry_accepted += 1;
                    } else {
                        self.telemetry_refused += 1;
                    }
                    self.submit_next_telemetry_request(now);
                } else {
                    self.notice(Notice::CommandFinished {
                        description: event.to_string(),
                    });
                }
            }
        }
    }

    fn notice(&mut self, notice: Notice) {
        if self.notices.len() == NOTICES_MAX {
            self.notices.pop_front();
        }
        self.notices.push_back(notice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::dialect::{COMMAND_ACK_DATA, MavCmd, MavResult};

    fn options() -> SupervisorOptions {
        SupervisorOptions::from_config(&crate::config::VehicleConfig::default())
    }

    fn autopilot_heartbeat() -> (MavHeader, MavMessage) {
        let header = MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 0,
        };
        let message = MavMessage::HEARTBEAT(dialect::HEARTBEAT_DATA {
            custom_mode: 0,
            mavtype: MavType::MAV_TYPE_QUADROTOR,
            autopilot: MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
            system_status: MavState::MAV_STATE_STANDBY,
            mavlink_version: 3,
        });
        (header, message)
    }

    fn ack(command: MavCmd) -> (MavHeader, MavMessage) {
        let header = MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 1,
        };
        let message = MavMessage::COMMAND_ACK(COMMAND_ACK_DATA {
            command,
            result: MavResult::MAV_RESULT_ACCEPTED,
            progress: 0,
            result_param2: 0,
            target_system: 1,
            target_component: 191,
        });
        (header, message)
    }

    fn drain(s: &mut Supervisor, now: Instant) -> Vec<MavMessage> {
        std::iter::from_fn(|| s.poll_transmit(now)).collect()
    }

    fn count_heartbeats(messages: &[MavMessage]) -> usize {
        messages
            .iter()
            .filter(|m| matches!(m, MavMessage::HEARTBEAT(_)))
            .count()
    }

    /// The status shows the pre-flight check from a kept verdict while its inputs stand
    /// (`preflight_shown`); at every step of a parameter read it must say what the arming
    /// gate's fresh check says: values arriving, a value changing, names given up on.
    #[test]
    fn the_status_preflight_says_what_the_fresh_check_says_at_every_step() {
        use crate::link::dialect::{MavParamType, PARAM_VALUE_DATA};
        let t0 = Instant::now();
        let mut s = Supervisor::new(options(), t0);
        let mut seen = Vec::new();
        let mut check = |s: &mut Supervisor, now: Instant, step: &str| {
            let shown = s.preflight_shown(now);
            assert_eq!(shown, s.preflight(now), "{step}");
            // Twice: the second comes from the kept verdict.
            assert_eq!(s.preflight_shown(now), shown, "{step}, kept");
            seen.push(shown);
        };
        check(&mut s, t0, "no autopilot");
        let (header, heartbeat) = autopilot_heartbeat();
        s.handle_message(t0, &header, &heartbeat);
        let mut now = t0;
        let mut asked = Vec::new();
        let ask = |s: &mut Supervisor, now: Instant, asked: &mut Vec<String>| {
            for message in drain(s, now) {
                if let MavMessage::PARAM_REQUEST_READ(r) = message {
                    asked.extend(r.param_id.to_str().ok().map(str::to_owned));
                }
            }
        };
        ask(&mut s, now, &mut asked);
        check(&mut s, now, "reading");
        let answer = |s: &mut Supervisor, now: Instant, name: &str, value: f32| {
            let message = MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
                param_id: name.into(),
                param_value: value,
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
                param_count: 900,
                param_index: 0,
            });
            s.handle_message(now, &header, &message);
        };
        // Every name but the first is answered (ArduPilot's WPNAV_SPEED above the limit first);
        // the first is never answered, so it ends up missing.
        let mut unanswered = None;
        for _ in 0..400 {
            let Some(name) = asked.pop() else {
                now += Duration::from_millis(100);
                // The autopilot stays heard: a silent one is forgotten with its reading.
                s.handle_message(now, &header, &heartbeat);
                ask(&mut s, now, &mut asked);
                if asked.is_empty() && s.params.state() == ReadState::Done {
                    break;
                }
                check(&mut s, now, "waiting");
                continue;
            };
            if unanswered.is_none() {
                unanswered = Some(name);
                continue;
            }
            if unanswered.as_deref() == Some(name.as_str()) {
                continue;
            }
            let value = if name == "WPNAV_SPEED" { 1500.0 } else { 1.0 };
            answer(&mut s, now, &name, value);
            check(&mut s, now, &format!("{name} answered"));
        }
        let missing = s.preflight(now).parameters_missing;
        assert_eq!(missing, unanswered.into_iter().collect::<Vec<_>>());
        check(&mut s, now, "one name missing");
        answer(&mut s, now, "WPNAV_SPEED", 300.0);
        check(&mut s, now, "WPNAV_SPEED lowered");
        let findings: std::collections::BTreeSet<_> =
            seen.iter().map(|r| format!("{:?}", r.findings)).collect();
        assert!(
            findings.len() >= 3,
            "the findings changed with the inputs: {findings:?}"
        );
    }

    #[test]
    fn heartbeats_at_the_interval_and_never_bursts_after_a_stall() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(options(), t0);
        let first = drain(&mut s, t0);
        assert_eq!(count_heartbeats(&first), 1);
        let MavMessage::HEARTBEAT(hb) = &first[0] else {
            panic!("heartbeat first")
        };
        assert_eq!(hb.mavtype, MavType::MAV_TYPE_ONBOARD_CONTROLLER);
        assert_eq!(hb.autopilot, MavAutopilot::MAV_AUTOPILOT_INVALID);
        assert_eq!(
            count_heartbeats(&drain(&mut s, t0 + Duration::from_millis(999))),
            0
        );
        assert_eq!(
            count_heartbeats(&drain(&mut s, t0 + Duration::from_millis(1000))),
            1
        );
        // A 10 s stall: one heartbeat when the loop runs again, not ten.
        let after_stall = t0 + Duration::from_secs(11);
        assert_eq!(count_heartbeats(&drain(&mut s, after_stall)), 1);
        assert_eq!(s.poll_timeout(), after_stall + Duration::from_secs(1));
    }

    #[test]
    fn telemetry_is_requested_one_command_at_a_time_once_the_autopilot_is_found() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(options(), t0);
        drain(&mut s, t0);
        let (h, m) = autopilot_heartbeat();
        s.handle_message(t0, &h, &m);
        let sent = drain(&mut s, t0);
        let commands: Vec<_> = sent
            .iter()
            .filter_map(|m| match m {
                MavMessage::COMMAND_LONG(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(commands.len(), 1, "one at a time: {sent:?}");
        assert_eq!(commands[0].command, MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL);
        assert_eq!(
            (commands[0].target_system, commands[0].target_component),
            (1, 1)
        );

        let mut requested = 1;
        for _ in 0..400 {
            let (h, m) = ack(MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL);
            s.handle_message(t0, &h, &m);
            let (h, m) = ack(MavCmd::MAV_CMD_REQUEST_MESSAGE);
            s.handle_message(t0, &h, &m);
            let next = drain(&mut s, t0);
            if next.is_empty() {
                break;
            }
            requested += next.len();
        }
        assert!(
            requested >= 8,
            "the state's telemetry was requested: {requested}"
        );
        let notices: Vec<_> = std::iter::from_fn(|| s.poll_notice()).collect();
        assert!(
            notices
                .iter()
                .any(|n| matches!(n, Notice::AutopilotFound { .. })),
            "{notices:?}"
        );
        assert!(
            notices
                .iter()
                .any(|n| matches!(n, Notice::TelemetryRequested { refused: 0, .. })),
            "{notices:?}"
        );
    }

    #[test]
    fn a_lost_link_abandons_requests_and_a_returning_autopilot_is_asked_again() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(options(), t0);
        let (h, m) = autopilot_heartbeat();
        s.handle_message(t0, &h, &m);
        drain(&mut s, t0);
        s.handle_link_event(
            t0,
            &LinkEvent::Disconnected {
                reason: "cable pulled".into(),
            },
        );
        // Nothing queued is sent later: only heartbeats come out while the link is down.
        let later = t0 + Duration::from_secs(5);
        let sent = drain(&mut s, later);
        assert!(
            sent.iter().all(|m| matches!(m, MavMessage::HEARTBEAT(_))),
            "{sent:?}"
        );
        s.handle_link_event(later, &LinkEvent::Connected { peer: "pty".into() });
        s.handle_message(later, &h, &m);
        let sent = drain(&mut s, later);
        assert!(
            sent.iter().any(|m| matches!(m, MavMessage::COMMAND_LONG(c) if c.command == MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL)),
            "asked again after the link came back: {sent:?}"
        );
    }

    #[test]
    fn a_silent_autopilot_is_reported_lost() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(options(), t0);
        let (h, m) = autopilot_heartbeat();
        s.handle_message(t0, &h, &m);
        drain(&mut s, t0 + Duration::from_secs(4));
        let notices: Vec<_> = std::iter::from_fn(|| s.poll_notice()).collect();
        assert!(
            notices.iter().any(|n| matches!(n, Notice::AutopilotLost { silent_for } if *silent_for >= Duration::from_secs(3))),
            "{notices:?}"
        );
    }
}
