//! The executor: turns one [`Action`] into MAVLink, confirms each step by what the vehicle
//! reports, and reports progress and the end. Sans-IO.
//!
//! An action becomes a [`Plan`]: a short list of steps (ensure a mode, arm, send a command
//! and wait for its ACK, send a setpoint, wait until the vehicle reports a condition).
//! A step is done only when the vehicle says so: a mode by the heartbeat, arming by the
//! heartbeat's armed flag, a command by its `COMMAND_ACK`, an arrival by the position.
//!
//! One motion job runs at a time; a new motion job supersedes it (the old one ends
//! `Superseded`, its outstanding command is withdrawn). `set_speed` runs beside it.
//! A switch to a manual mode that no job asked for ends the running job (`TakenOver`): the
//! pilot always wins. A link loss ends everything at once (`LinkLost`).
//!
//! Speed: every motion flies at a speed the daemon chose ([`Executor::set_speed_policy`]: the
//! envelope's limit, or the autopilot's own cruise when that is slower; a goto's `speed_m_s`
//! or the last `set_speed` when given), kept by [`super::speed::SpeedKeeper`] *after* the
//! target was accepted (ArduCopter restarts at `WPNAV_SPEED` on a new target) and again on
//! every mode change; PX4 also gets it inside `DO_REPOSITION` (param1).
//!
//! PX4's frames, as its navigator reads them (`navigator_main.cpp`): `DO_REPOSITION` param7
//! is above mean sea level whatever the frame field says, so the executor sends home's AMSL
//! altitude plus the relative one, in `MAV_FRAME_GLOBAL`; param4 (yaw) is in radians;
//! `NAV_TAKEOFF` param7 is AMSL too; modes are `DO_SET_MODE` with PX4's main and sub modes.
//!
//! Call order (the supervisor does this on each turn):
//! 1. `set_speed_policy(limit, cruise)`; `plan(now, action, vehicle)` then, after the envelope
//!    allowed its goal, `start(now, plan, commands)`; `cancel(now, job, vehicle, commands)`;
//!    `abort_all(outcome, message)`;
//! 2. `handle_message(now, header, msg)` for every message from the link (after the vehicle
//!    state took it), `handle_command_event(now, event)` for every command-protocol event;
//! 3. `poll(now, vehicle, commands)`, then `poll_transmit()` until `None` (setpoints that
//!    have no ACK), then drain `poll_event()`;
//! 4. wake up at `poll_timeout()` at the latest.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::link::dialect::{MavCmd, MavFrame};
use crate::link::{MavHeader, MavMessage};
use crate::vehicle::command::{
    CommandEvent, CommandId, CommandProtocol, CommandRequest, ModeChange, ModeChangeOutcome,
};
use crate::vehicle::mission::{MissionProgress, MissionTarget};
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;
use crate::vehicle::state::VehicleState;

use super::action::{Action, Goal, JobEnd, Outcome, ProgressUpdate};

mod plan;
use super::speed::{SpeedKeeper, takes_speed_change};
use crate::geodesy as geo;

/// `MAV_DO_REPOSITION_FLAGS_CHANGE_MODE`: ArduPilot switches to GUIDED to fly there.
const REPOSITION_CHANGE_MODE: f32 = 1.0;
/// Side jobs (`set_speed`) at once; an older one is ended when more arrive.
const SIDE_JOBS_MAX: usize = 4;
/// Events waiting for the supervisor; the oldest progress is dropped first.
const EVENTS_MAX: usize = 64;
/// `set_speed` waits this long for the autopilot's answer to the kept speed.
const SPEED_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Tolerances and timeouts of the executor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecutorOptions {
    /// A mode change must show in the heartbeat within this.
    pub mode_change_timeout: Duration,
    /// Arming or disarming must show in the heartbeat within this.
    pub arm_timeout: Duration,
    /// Arrived: horizontally within this of the target...
    pub arrival_m_tolerance: f64,
    /// ...vertically within this...
    pub altitude_m_tolerance: f64,
    /// ...and moving slower than this.
    pub arrival_speed_m_s_max: f64,
    /// A heading within this of the target counts as reached.
    pub heading_deg_tolerance: f64,
    /// Progress of long actions at most this often.
    pub progress_interval: Duration,
    /// Slowest horizontal and vertical speeds assumed when sizing a wait's deadline.
    pub speed_m_s_assumed: f64,
    /// Added to every wait's deadline.
    pub wait_slack: Duration,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            mode_change_timeout: Duration::from_secs(5),
            arm_timeout: Duration::from_secs(5),
            arrival_m_tolerance: 1.5,
            altitude_m_tolerance: 0.7,
            arrival_speed_m_s_max: 0.5,
            heading_deg_tolerance: 5.0,
            progress_interval: Duration::from_secs(1),
            speed_m_s_assumed: 0.5,
            wait_slack: Duration::from_secs(30),
        }
    }
}

/// Identifies one job in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// What the executor reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorEvent {
    Progress {
        job: JobId,
        update: ProgressUpdate,
    },
    /// The job ended; it produces no further event.
    Finished {
        job: JobId,
        end: JobEnd,
    },
}

/// What a plan waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Condition {
    Altitude {
        altitude_m: f64,
    },
    Arrived {
        latitude_deg: f64,
        longitude_deg: f64,
        altitude_m: f64,
    },
    Heading {
        heading_deg: f64,
    },
    /// On the ground and disarmed; progress toward `home` when given (return home).
    LandedDisarmed {
        home: Option<(f64, f64)>,
    },
    /// The mission flown to its end ([`MissionRun`]): its last item reached, or on the
    /// ground and disarmed when it ends with a landing or the return.
    MissionDone,
}

/// The checked mission the executor may fly ([`Executor::set_mission`]) and how far the
/// vehicle says it got (`MISSION_CURRENT`, `MISSION_ITEM_REACHED`).
#[derive(Debug, Clone)]
struct MissionRun {
    route: super::mission::Route,
    target: MissionTarget,
    progress: MissionProgress,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Mode(FlightMode),
    Arm,
    Disarm,
    Command(CommandRequest),
    Send(Box<MavMessage>),
    Until(Condition),
    /// From here on the motion flies at this horizontal speed (the speed keeper says it).
    KeepSpeed(f64),
    /// `set_speed`: the speed of the running and the later motions.
    SetSpeed(f64),
}

/// An action turned into steps, with the goal the envelope must allow first.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    action: Action,
    goal: Option<Goal>,
    steps: Vec<Step>,
    /// Modes the vehicle may switch to while this plan waits without it being interrupted.
    modes_expected: Vec<FlightMode>,
}

impl Plan {
    pub fn action(&self) -> Action {
        self.action
    }

    /// Where the vehicle would go; `None` for actions that go nowhere new (arm, disarm,
    /// hold, land, return home, heading, speed).
    pub fn goal(&self) -> Option<&Goal> {
        self.goal.as_ref()
    }
}

#[derive(Debug)]
enum Running {
    /// Start the next step.
    Next,
    Mode(ModeChange),
    Ack {
        id: CommandId,
        command: MavCmd,
    },
    Arming {
        want_armed: bool,
        id: Option<CommandId>,
        deadline: Instant,
    },
    Until {
        condition: Condition,
        started_at: Instant,
        deadline: Instant,
        next_progress_at: Instant,
    },
    /// `set_speed` beside a motion: waits for the autopilot's answer to the kept speed.
    SpeedAnswer {
        speed_m_s: f64,
        deadline: Instant,
    },
    /// The autopilot refused a command; `poll` ends the job with this.
    Failed(String),
}

#[derive(Debug)]
struct Job {
    id: JobId,
    action: Action,
    steps: VecDeque<Step>,
    running: Running,
    modes_expected: Vec<FlightMode>,
    /// The last mode seen while this job ran, to tell a change from a stale heartbeat.
    mode_seen: Option<FlightMode>,
    /// The setpoint this job sent, re-sent with each progress report while it waits:
    /// setpoints have no ACK, so one lost frame must not strand the job.
    setpoint: Option<MavMessage>,
    /// When the job's last command went out: only a STATUSTEXT after it explains a refusal.
    command_sent_at: Option<Instant>,
}

impl Job {
    fn command_id(&self) -> Option<CommandId> {
        match &self.running {
            Running::Ack { id, .. } => Some(*id),
            Running::Arming { id, .. } => *id,
            _ => None,
        }
    }
}

/// The executor. See the module doc for the call order.
#[derive(Debug)]
pub struct Executor {
    options: ExecutorOptions,
    next_id: u64,
    main: Option<Job>,
    side: Vec<Job>,
    transmit: VecDeque<MavMessage>,
    events: VecDeque<ExecutorEvent>,
    /// Mode changes in flight, by job; they watch heartbeats.
    mode_changes_watched: u64,
    /// Keeps the running motion's speed.
    keeper: SpeedKeeper,
    /// The envelope's horizontal limit; no motion asks for more.
    speed_limit_m_s: Option<f64>,
    /// The speed a motion flies at when nothing else was asked (≤ the limit).
    speed_cruise_m_s: Option<f64>,
    /// The last `set_speed`, for the running and later motions.
    speed_wanted_m_s: Option<f64>,
    /// The mission checked against the envelope, which `RunMission` flies.
    mission: Option<MissionRun>,
}

impl Executor {
    pub fn new(options: ExecutorOptions) -> Self {
        Self {
            options,
            next_id: 1,
            main: None,
            side: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            mode_changes_watched: 0,
            keeper: SpeedKeeper::new(),
            speed_limit_m_s: None,
            speed_cruise_m_s: None,
            speed_wanted_m_s: None,
            mission: None,
        }
    }

    /// The horizontal speed limit (the envelope's) and the default cruise speed (the limit, or
    /// the autopilot's own when slower); `None` when there is no envelope.
    pub fn set_speed_policy(&mut self, limit_m_s: Option<f64>, cruise_m_s: Option<f64>) {
        self.speed_limit_m_s = limit_m_s.filter(|s| s.is_finite() && *s > 0.0);
        self.speed_cruise_m_s = cruise_m_s
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|c| self.speed_limit_m_s.map_or(c, |l| c.min(l)));
    }

    /// The speed a motion flies at: what it asked, else the last `set_speed`, else the
    /// cruise; never above the limit.
    pub(super) fn motion_speed_m_s(&self, asked: Option<f64>) -> Option<f64> {
        let cap = |s: f64| self.speed_limit_m_s.map_or(s, |l| s.min(l));
        asked
            .or(self.speed_wanted_m_s)
            .map(cap)
            .or(self.speed_cruise_m_s)
            .or(self.speed_limit_m_s)
    }

    /// The speed the running motion is kept at, if any.
    pub fn kept_speed_m_s(&self) -> Option<f64> {
        self.keeper.current_demand()
    }

    /// The running motion job, if any.
    pub fn current(&self) -> Option<(JobId, Action)> {
        self.main.as_ref().map(|j| (j.id, j.action))
    }

    /// The mission `RunMission` flies, as the supervisor checked it (`None`: none checked;
    /// a mission run then is refused).
    pub fn set_mission(&mut self, mission: Option<(super::mission::Route, MissionTarget)>) {
        // The vehicle's current item outlives a new check of the same vehicle's list (a
        // resume checks from it).
        let kept = self
            .mission
            .take()
            .map(|m| m.progress)
            .filter(|p| mission.as_ref().is_some_and(|(_, t)| p.target() == *t));
        self.mission = mission.map(|(route, target)| MissionRun {
            route,
            target,
            progress: kept.unwrap_or_else(|| MissionProgress::new(target)),
        });
    }

    /// The mission checked for flying, and the vehicle's current item once reported.
    pub fn mission(&self) -> Option<(&super::mission::Route, Option<u16>)> {
        self.mission
            .as_ref()
            .map(|m| (&m.route, m.progress.current()))
    }

    /// Starts a planned job. A motion job supersedes the running one.
    pub fn start(&mut self, _now: Instant, plan: Plan, commands: &mut CommandProtocol) -> JobId {
        if let (Action::RunMission { .. }, Some(m)) = (plan.action, &mut self.mission) {
            // Only what is reached during this run counts towards its end.
            m.progress = MissionProgress::new(m.target);
        }
        let id = JobId(self.next_id);
        self.next_id += 1;
        let job = Job {
            id,
            action: plan.action,
            steps: plan.steps.into(),
            running: Running::Next,
            modes_expected: plan.modes_expected,
            mode_seen: None,
            setpoint: None,
            command_sent_at: None,
        };
        if plan.action.is_motion() {
            // The new motion says its own speed (if any) once its target is accepted.
            self.keeper.release();
            if let Some(old) = self.main.take() {
                let message = format!("superseded by {}", plan.action);
                self.end(old, Outcome::Superseded, message, commands);
            }
            self.main = Some(job);
        } else {
            if self.side.len() >= SIDE_JOBS_MAX {
                let old = self.side.remove(0);
                let message = format!("superseded by {}", plan.action);
                self.end(old, Outcome::Superseded, message, commands);
            }
            self.side.push(job);
        }
        id
    }

    /// Cancels a job. A cancelled motion job is followed by a hold when the vehicle flies;
    /// returns the hold's job id then. Unknown or finished jobs are ignored.
    pub fn cancel(
        &mut self,
        now: Instant,
        job: JobId,
        vehicle: &VehicleState,
        commands: &mut CommandProtocol,
    ) -> Option<JobId> {
        if let Some(index) = self.side.iter().position(|j| j.id == job) {
            let old = self.side.remove(index);
            self.end(old, Outcome::Cancelled, "cancelled".into(), commands);
            return None;
        }
        if self.main.as_ref().is_none_or(|j| j.id != job) {
            return None;
        }
        let old = self.main.take()?;
        let flying = vehicle.is_armed() && vehicle.in_air();
        let hold = if flying && old.action != Action::Hold {
            self.plan(now, Action::Hold, vehicle).ok()
        } else {
            None
        };
        let message = if hold.is_some() {
            format!("cancelled {}; the vehicle holds position", old.action)
        } else {
            format!("cancelled {}", old.action)
        };
        self.end(old, Outcome::Cancelled, message, commands);
        hold.map(|plan| self.start(now, plan, commands))
    }

    /// Ends every job at once with `outcome` (link lost, e-stop, breach action).
    pub fn abort_all(&mut self, outcome: Outcome, message: &str, commands: &mut CommandProtocol) {
        if let Some(job) = self.main.take() {
            self.end(job, outcome, message.to_string(), commands);
        }
        for job in std::mem::take(&mut self.side) {
            self.end(job, outcome, message.to_string(), commands);
        }
    }

    /// Feeds heartbeats to the mode changes in flight.
    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, msg: &MavMessage) {
        if let Some(m) = &mut self.mission
            && matches!(
                msg,
                MavMessage::MISSION_CURRENT(_) | MavMessage::MISSION_ITEM_REACHED(_)
            )
        {
            m.progress.handle_message(header, msg);
            return;
        }
        if self.mode_changes_watched == 0 || !matches!(msg, MavMessage::HEARTBEAT(_)) {
            return;
        }
        for job in self.main.iter_mut().chain(self.side.iter_mut()) {
            if let Running::Mode(change) = &mut job.running {
                change.handle_message(now, header, msg);
            }
        }
    }

    /// Takes the command protocol's events (ACKs, refusals, timeouts).
    pub fn handle_command_event(&mut self, now: Instant, event: &CommandEvent) {
        if self.keeper.handle_command_event(now, event) {
            return;
        }
        let CommandEvent::Finished { id, outcome, .. } = event else {
            return;
        };
        for job in self.main.iter_mut().chain(self.side.iter_mut()) {
            match &mut job.running {
                Running::Mode(change) => change.handle_command_event(event),
                Running::Ack {
                    id: waiting,
                    command,
                } if waiting == id => {
                    job.running = if outcome.is_accepted() {
                        Running::Next
                    } else {
                        Running::Failed(outcome.describe(*command))
                    };
                }
                Running::Arming {
                    id: waiting @ Some(_),
                    ..
                } if *waiting == Some(*id) => {
                    if outcome.is_accepted() {
                        // Accepted; the heartbeat's armed flag completes the step.
                        *waiting = None;
                    } else {
                        job.running =
                            Running::Failed(outcome.describe(MavCmd::MAV_CMD_COMPONENT_ARM_DISARM));
                    }
                }
                _ => {}
            }
        }
    }

    /// Advances every job: starts steps, checks waits against the vehicle, ends jobs.
    pub fn poll(&mut self, now: Instant, vehicle: &VehicleState, commands: &mut CommandProtocol) {
        if let Some(job) = self.main.take() {
            self.main = self.advance(now, job, vehicle, commands, true);
        }
        for job in std::mem::take(&mut self.side) {
            if let Some(job) = self.advance(now, job, vehicle, commands, false) {
                self.side.push(job);
            }
        }
        // The speed is kept while the motion that asked for it runs.
        if self.main.is_none() {
            self.keeper.release();
        }
        self.keeper.poll(now, vehicle, commands);
        while let Some(note) = self.keeper.take_note() {
            if let Some(job) = self.main.as_ref().map(|j| j.id) {
                self.progress(job, note, vehicle, None);
            }
        }
        self.mode_changes_watched = self
            .main
            .iter()
            .chain(self.side.iter())
            .filter(|j| matches!(j.running, Running::Mode(_)))
            .count() as u64;
    }

    /// Setpoints to send (they have no ACK; the command protocol sends the rest).
    pub fn poll_transmit(&mut self) -> Option<MavMessage> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ExecutorEvent> {
        self.events.pop_front()
    }

    /// When `poll` needs to run again at the latest (deadlines and progress).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.main
            .iter()
            .chain(self.side.iter())
            .filter_map(|j| match &j.running {
                Running::Next => None,
                Running::Mode(change) => change.poll_timeout(),
                Running::Ack { .. } | Running::Failed(_) => None,
                Running::Arming { deadline, .. } => Some(*deadline),
                Running::SpeedAnswer { deadline, .. } => Some(*deadline),
                Running::Until {
                    deadline,
                    next_progress_at,
                    ..
                } => Some((*deadline).min(*next_progress_at)),
            })
            .chain(self.keeper.poll_timeout())
            .min()
    }

    fn advance(
        &mut self,
        now: Instant,
        mut job: Job,
        vehicle: &VehicleState,
        commands: &mut CommandProtocol,
        motion: bool,
    ) -> Option<Job> {
        let kind = vehicle
            .autopilot()
            .map_or(AutopilotKind::Other, |a| a.autopilot);
        if motion && let Some(end) = self.watch_mode(&mut job, vehicle, kind) {
            self.end(job, end.outcome, end.message, commands);
            return None;
        }
        // A handful of steps may complete in one turn (mode already set, then a send...).
        for _ in 0..8 {
            match self.step(now, &mut job, vehicle, commands, kind) {
                StepResult::Wait => return Some(job),
                StepResult::Again => continue,
                StepResult::End(outcome, message) => {
                    self.end(job, outcome, message, commands);
                    return None;
                }
            }
        }
        Some(job)
    }

    /// Pilot takeover and unexpected mode changes while a motion job runs.
    fn watch_mode(
        &self,
        job: &mut Job,
        vehicle: &VehicleState,
        kind: AutopilotKind,
    ) -> Option<JobEnd> {
        let mode = vehicle.flight_mode();
        if mode == job.mode_seen {
            return None;
        }
        let first_look = job.mode_seen.is_none();
        job.mode_seen = mode;
        let mode = mode?;
        if first_look {
            return None;
        }
        // On the ground at the end of a landing or a return the autopilot may change mode by
        // itself (PX4 goes back to Hold when it disarms, UserModeIntention::onDisarm): that is
        // the landing finishing, not an interruption; the wait for disarm decides. Disarmed
        // counts as on the ground here: PX4's heartbeat can bring the disarm and Hold before
        // its EXTENDED_SYS_STATE says the landing ended, and a disarmed vehicle flies nothing.
        if matches!(
            job.running,
            Running::Until {
                condition: Condition::LandedDisarmed { .. } | Condition::MissionDone,
                ..
            }
        ) && (!vehicle.in_air() || !vehicle.is_armed())
        {
            return None;
        }
        let requested = job.modes_expected.contains(&mode)
            || matches!(&job.running, Running::Mode(c) if c.mode() == mode);
        if requested {
            return None;
        }
        if FlightMode::is_manual(kind, mode) {
            return Some(JobEnd {
                outcome: Outcome::TakenOver,
                message: format!(
                    "the pilot took over: the vehicle switched to {} (a manual mode) during {}; \
                     the daemon stopped and will not fight the pilot",
                    mode.name(kind),
                    job.action
                ),
            });
        }
        if matches!(job.running, Running::Until { .. }) {
            return Some(JobEnd {
                outcome: Outcome::Failed,
                message: format!(
                    "{} was interrupted: the vehicle switched to {} (the autopilot's own \
                     failsafe or fence, or another ground station)",
                    job.action,
                    mode.name(kind)
                ),
            });
        }
        None
    }

    fn step(
        &mut self,
        now: Instant,
        job: &mut Job,
        vehicle: &VehicleState,
        commands: &mut CommandProtocol,
        kind: AutopilotKind,
    ) -> StepResult {
        match &mut job.running {
            Running::Next => self.next_step(now, job, vehicle, commands, kind),
            Running::Mode(change) => {
                change.handle_timeout(now);
                match change.outcome() {
                    None => StepResult::Wait,
                    Some(ModeChangeOutcome::Confirmed) => {
                        job.running = Running::Next;
                        StepResult::Again
                    }
                    Some(_) => {
                        let message = change.describe().unwrap_or_default();
                        StepResult::End(Outcome::Failed, with_status_text(message, vehicle, now))
                    }
                }
            }
            Running::Failed(message) => {
                let message = std::mem::take(message);
                let since = job.command_sent_at;
                StepResult::End(
                    Outcome::Failed,
                    with_status_text_since(message, vehicle, now, since),
                )
            }
            Running::Ack { .. } => StepResult::Wait,
            Running::SpeedAnswer {
                speed_m_s,
                deadline,
            } => {
                let speed_m_s = *speed_m_s;
                if self.keeper.current_demand() != Some(speed_m_s) {
                    return StepResult::End(
                        Outcome::Superseded,
                        "another speed or motion replaced it".into(),
                    );
                }
                if self.keeper.is_accepted() {
                    return StepResult::End(Outcome::Completed, completion(job.action, vehicle));
                }
                if self.keeper.is_refused() || now >= *deadline {
                    let mode = vehicle
                        .flight_mode()
                        .map_or("its present mode".to_string(), |m| m.name(kind).to_string());
                    return StepResult::End(
                        Outcome::Completed,
                        format!(
                            "kept at {speed_m_s} m/s for the running motion and the next ones; \
                             the autopilot has not taken it in {mode} yet, and the daemon says \
                             it again when the vehicle changes mode"
                        ),
                    );
                }
                StepResult::Wait
            }
            Running::Arming {
                want_armed,
                id,
                deadline,
            } => {
                if id.is_none() && vehicle.is_armed() == *want_armed {
                    job.running = Running::Next;
                    return StepResult::Again;
                }
                if now >= *deadline {
                    let what = if *want_armed { "armed" } else { "disarmed" };
                    return StepResult::End(
                        Outcome::Failed,
                        with_status_text(
                            format!(
                                "the vehicle did not report {what} within {:.0} s",
                                self.options.arm_timeout.as_secs_f64()
                            ),
                            vehicle,
                            now,
                        ),
                    );
                }
                StepResult::Wait
            }
            Running::Until { .. } => self.wait_until(now, job, vehicle),
        }
    }

    /// Starts the job's next step: a command submitted, a mode change begun, a wait armed.
    fn next_step(
        &mut self,
        now: Instant,
        job: &mut Job,
        vehicle: &VehicleState,
        commands: &mut CommandProtocol,
        kind: AutopilotKind,
    ) -> StepResult {
        let target = vehicle.autopilot().map(|a| (a.system_id, a.component_id));
        let Some(step) = job.steps.pop_front() else {
            return StepResult::End(Outcome::Completed, completion(job.action, vehicle));
        };
        let Some((system, component)) = target else {
            return StepResult::End(Outcome::Failed, "the autopilot is no longer known".into());
        };
        match step {
            Step::Mode(mode) => {
                if vehicle.flight_mode() == Some(mode) {
                    return StepResult::Again;
                }
                let Some((mut change, request)) = ModeChange::new(
                    now,
                    kind,
                    system,
                    component,
                    mode,
                    self.options.mode_change_timeout,
                ) else {
                    return StepResult::End(
                        Outcome::Failed,
                        format!("this autopilot has no {mode:?} mode"),
                    );
                };
                match commands.submit(now, system, component, request) {
                    Ok(id) => change.set_command(id),
                    Err(busy) => return StepResult::End(Outcome::Failed, busy.to_string()),
                }
                self.progress(
                    job.id,
                    format!("switching to {}", mode.name(kind)),
                    vehicle,
                    None,
                );
                job.running = Running::Mode(change);
                StepResult::Wait
            }
            Step::Arm | Step::Disarm => {
                let want_armed = step == Step::Arm;
                if vehicle.is_armed() == want_armed {
                    return StepResult::Again;
                }
                let request = CommandRequest::Long {
                    command: MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                    // param2 0: never the force magic; the autopilot's own checks stand.
                    params: [
                        if want_armed { 1.0 } else { 0.0 },
                        0.0,
                        0.0,
                        0.0,
                        0.0,
                        0.0,
                        0.0,
                    ],
                };
                match commands.submit(now, system, component, request) {
                    Ok(id) => {
                        self.progress(
                            job.id,
                            if want_armed { "arming" } else { "disarming" }.into(),
                            vehicle,
                            None,
                        );
                        job.running = Running::Arming {
                            want_armed,
                            id: Some(id),
                            deadline: now + self.options.arm_timeout,
                        };
                        StepResult::Wait
                    }
                    Err(busy) => StepResult::End(Outcome::Failed, busy.to_string()),
                }
            }
            Step::Command(request) => match commands.submit(now, system, component, request) {
                Ok(id) => {
                    job.running = Running::Ack {
                        id,
                        command: request.command(),
                    };
                    job.command_sent_at = Some(now);
                    StepResult::Wait
                }
                Err(busy) => StepResult::End(Outcome::Failed, busy.to_string()),
            },
            Step::KeepSpeed(speed_m_s) => {
                self.keeper.demand(speed_m_s);
                StepResult::Again
            }
            Step::SetSpeed(speed_m_s) => self.set_speed(now, job, vehicle, kind, speed_m_s),
            Step::Send(message) => {
                let message = address(*message, system, component);
                job.setpoint = Some(message.clone());
                self.transmit.push_back(message);
                StepResult::Again
            }
            Step::Until(condition) => {
                let deadline = now + self.wait_budget(&condition, vehicle);
                job.running = Running::Until {
                    condition,
                    started_at: now,
                    deadline,
                    next_progress_at: now,
                };
                StepResult::Again
            }
        }
    }

    /// A new speed: kept for the running motion (answered once the autopilot takes it),
    /// or for the next motion when none runs.
    fn set_speed(
        &mut self,
        now: Instant,
        job: &mut Job,
        vehicle: &VehicleState,
        kind: AutopilotKind,
        speed_m_s: f64,
    ) -> StepResult {
        self.speed_wanted_m_s = Some(speed_m_s);
        if self.keeper.current_demand().is_some() {
            self.keeper.demand(speed_m_s);
            job.running = Running::SpeedAnswer {
                speed_m_s,
                deadline: now + SPEED_ANSWER_TIMEOUT,
            };
            return StepResult::Wait;
        }
        let flying = vehicle.flight_mode().map_or(String::new(), |m| {
            if takes_speed_change(kind, m) {
                String::new()
            } else {
                format!(
                    " (the vehicle is in {}, where the autopilot takes no speed \
                     change; the daemon sends it with the next motion)",
                    m.name(kind)
                )
            }
        });
        StepResult::End(
            Outcome::Completed,
            format!(
                "the next goto, move_relative, set_heading or return_home flies \
                 at {speed_m_s} m/s: no motion is running now{flying}"
            ),
        )
    }

    /// A wait for the vehicle: done when its condition is met, failed when the vehicle
    /// disarms or the budget runs out, with progress (and the setpoint again) meanwhile.
    fn wait_until(&mut self, now: Instant, job: &mut Job, vehicle: &VehicleState) -> StepResult {
        let Running::Until {
            condition,
            started_at,
            deadline,
            next_progress_at,
        } = &mut job.running
        else {
            return StepResult::Wait;
        };
        let condition = *condition;
        let first = *started_at == now;
        if self.condition_met(&condition, vehicle) {
            job.running = Running::Next;
            return StepResult::Again;
        }
        if !matches!(condition, Condition::LandedDisarmed { .. }) && !vehicle.is_armed() {
            return StepResult::End(
                Outcome::Failed,
                with_status_text(
                    format!("the vehicle disarmed during {}", job.action),
                    vehicle,
                    now,
                ),
            );
        }
        if now >= *deadline {
            return StepResult::End(
                Outcome::Failed,
                format!(
                    "{} did not complete in time: {}. The autopilot may still be \
                     carrying it out; call hold to stop it",
                    job.action,
                    self.remaining(&condition, vehicle).message
                ),
            );
        }
        if now >= *next_progress_at {
            *next_progress_at = now + self.options.progress_interval;
            if !first && let Some(setpoint) = &job.setpoint {
                self.transmit.push_back(setpoint.clone());
            }
            let update = self.remaining(&condition, vehicle);
            self.push_event(ExecutorEvent::Progress {
                job: job.id,
                update,
            });
        }
        StepResult::Wait
    }

    fn condition_met(&self, condition: &Condition, vehicle: &VehicleState) -> bool {
        let o = &self.options;
        match *condition {
            Condition::LandedDisarmed { .. } => !vehicle.is_armed() && !vehicle.in_air(),
            Condition::MissionDone => self.mission.as_ref().is_some_and(|m| {
                if m.route.lands {
                    !vehicle.is_armed() && !vehicle.in_air()
                } else {
                    m.route
                        .last_reached
                        .is_some_and(|last| m.progress.last_reached().is_some_and(|r| r >= last))
                }
            }),
            Condition::Heading { heading_deg } => vehicle
                .heading_deg()
                .is_some_and(|h| geo::heading_error_deg(h, heading_deg) <= o.heading_deg_tolerance),
            Condition::Altitude { altitude_m } => vehicle.position().is_some_and(|p| {
                (p.altitude_relative_m - altitude_m).abs() <= o.altitude_m_tolerance
            }),
            Condition::Arrived {
                latitude_deg,
                longitude_deg,
                altitude_m,
            } => vehicle.position().is_some_and(|p| {
                let distance =
                    geo::distance_m(p.latitude_deg, p.longitude_deg, latitude_deg, longitude_deg);
                let speed = p.velocity_north_m_s.hypot(p.velocity_east_m_s);
                distance <= o.arrival_m_tolerance
                    && (p.altitude_relative_m - altitude_m).abs() <= o.altitude_m_tolerance
                    && speed <= o.arrival_speed_m_s_max
            }),
        }
    }

    fn remaining(&self, condition: &Condition, vehicle: &VehicleState) -> ProgressUpdate {
        let position = vehicle.position();
        let altitude_m = position.map(|p| p.altitude_relative_m);
        let distance_to = |lat: f64, lon: f64| {
            position.map(|p| geo::distance_m(p.latitude_deg, p.longitude_deg, lat, lon))
        };
        let (distance_m_remaining, message) = match *condition {
            Condition::Altitude { altitude_m: target } => (
                None,
                format!(
                    "climbing: {} of {target:.1} m",
                    altitude_m.map_or("unknown".into(), |a| format!("{a:.1}"))
                ),
            ),
            Condition::Arrived {
                latitude_deg,
                longitude_deg,
                altitude_m: target,
            } => {
                let d = distance_to(latitude_deg, longitude_deg);
                (
                    d,
                    format!(
                        "{} m to go, altitude {} m (target {target:.1} m)",
                        d.map_or("unknown".into(), |d| format!("{d:.1}")),
                        altitude_m.map_or("unknown".into(), |a| format!("{a:.1}"))
                    ),
                )
            }
            Condition::Heading { heading_deg } => (
                None,
                format!(
                    "turning: heading {} of {heading_deg:.0}°",
                    vehicle
                        .heading_deg()
                        .map_or("unknown".into(), |h| format!("{h:.0}°"))
                ),
            ),
            Condition::MissionDone => self.mission_progress(vehicle),
            Condition::LandedDisarmed { home } => {
                let d = home.and_then(|(lat, lon)| distance_to(lat, lon));
                (
                    d,
                    format!(
                        "{}altitude {} m, {}",
                        d.map_or(String::new(), |d| format!("{d:.1} m from home, ")),
                        altitude_m.map_or("unknown".into(), |a| format!("{a:.1}")),
                        landing_phase(vehicle, d)
                    ),
                )
            }
        };
        ProgressUpdate {
            message,
            distance_m_remaining,
            altitude_m,
        }
    }

    /// A running mission's progress: the current item of the total, the items reached, the
    /// distance left along the route.
    fn mission_progress(&self, vehicle: &VehicleState) -> (Option<f64>, String) {
        let Some(m) = &self.mission else {
            return (None, "flying the mission".into());
        };
        let position = vehicle.position();
        let current = m.progress.current();
        let distance = match (position, current) {
            (Some(p), Some(item)) => {
                Some(m.route.remaining_m((p.latitude_deg, p.longitude_deg), item))
            }
            _ => None,
        };
        let mut message = format!(
            "mission: item {} of {}",
            current.map_or("?".into(), |c| (c + 1).to_string()),
            m.route.items
        );
        if let Some(r) = m.progress.last_reached() {
            message.push_str(&format!(", item {} reached", r + 1));
        }
        if let Some(d) = distance {
            message.push_str(&format!(", {d:.0} m to go"));
        }
        if let Some(p) = position {
            message.push_str(&format!(", altitude {:.1} m", p.altitude_relative_m));
        }
        (distance, message)
    }

    /// How long a wait may take: its distance at a slow assumed speed, plus slack.
    fn wait_budget(&self, condition: &Condition, vehicle: &VehicleState) -> Duration {
        let position = vehicle.position();
        let metres = match *condition {
            Condition::Altitude { altitude_m } => {
                position.map_or(altitude_m, |p| (p.altitude_relative_m - altitude_m).abs())
            }
            Condition::Arrived {
                latitude_deg,
                longitude_deg,
                altitude_m,
            } => position.map_or(0.0, |p| {
                geo::distance_m(p.latitude_deg, p.longitude_deg, latitude_deg, longitude_deg)
                    + (p.altitude_relative_m - altitude_m).abs()
            }),
            Condition::Heading { .. } => 0.0,
            // The route, the way down and a minute per item (loiters, photos, turns).
            Condition::MissionDone => self.mission.as_ref().map_or(0.0, |m| {
                let from = position.map_or((0.0, 0.0), |p| (p.latitude_deg, p.longitude_deg));
                let first = m.route.points.first().map_or(0, |p| p.item);
                m.route.remaining_m(from, first)
                    + position.map_or(0.0, |p| p.altitude_relative_m.abs() * 2.0)
                    + f64::from(m.route.items) * 60.0 * self.options.speed_m_s_assumed
            }),
            Condition::LandedDisarmed { home } => position.map_or(0.0, |p| {
                p.altitude_relative_m.abs() * 2.0
                    + home.map_or(0.0, |(lat, lon)| {
                        geo::distance_m(p.latitude_deg, p.longitude_deg, lat, lon)
                    })
            }),
        };
        let seconds = if metres.is_finite() {
            (metres / self.options.speed_m_s_assumed).min(3600.0)
        } else {
            0.0
        };
        Duration::from_secs_f64(seconds) + self.options.wait_slack
    }

    fn progress(
        &mut self,
        job: JobId,
        message: String,
        vehicle: &VehicleState,
        distance: Option<f64>,
    ) {
        self.push_event(ExecutorEvent::Progress {
            job,
            update: ProgressUpdate {
                message,
                distance_m_remaining: distance,
                altitude_m: vehicle.position().map(|p| p.altitude_relative_m),
            },
        });
    }

    fn push_event(&mut self, event: ExecutorEvent) {
        if self.events.len() >= EVENTS_MAX
            && let Some(index) = self
                .events
                .iter()
                .position(|e| matches!(e, ExecutorEvent::Progress { .. }))
        {
            self.events.remove(index);
        }
        self.events.push_back(event);
    }

    fn end(&mut self, job: Job, outcome: Outcome, message: String, commands: &mut CommandProtocol) {
        // Nothing of an ended job is sent later: its outstanding command is withdrawn.
        if let Some(id) = job.command_id() {
            commands.cancel(id);
        }
        self.events
            .retain(|e| !matches!(e, ExecutorEvent::Progress { job: j, .. } if *j == job.id));
        self.events.push_back(ExecutorEvent::Finished {
            job: job.id,
            end: JobEnd { outcome, message },
        });
    }
}

enum StepResult {
    Wait,
    Again,
    End(Outcome, String),
}

fn degrees_e7(degrees: f64) -> i32 {
    // Validated to ±180° before, so this never saturates in practice.
    (degrees * 1e7).round() as i32
}

/// `DO_REPOSITION` as each firmware reads it: ArduPilot in a relative-altitude frame (it
/// honours the frame, and ignores speed and yaw); PX4 with param7 above mean sea level (home's
/// altitude plus the relative one: its navigator ignores the frame), the ground speed in
/// param1 and the yaw in param4 in radians (`PositionSetpoint.yaw`).
fn reposition(
    kind: AutopilotKind,
    latitude_deg: f64,
    longitude_deg: f64,
    altitude_m: f64,
    home_msl_m: Option<f64>,
    speed_m_s: Option<f64>,
    yaw_deg: Option<f64>,
) -> CommandRequest {
    let (frame, z, yaw) = match (kind, home_msl_m) {
        (AutopilotKind::Px4, Some(home)) => (
            MavFrame::MAV_FRAME_GLOBAL,
            (home + altitude_m) as f32,
            yaw_deg.map_or(f32::NAN, |y| (y as f32).to_radians()),
        ),
        _ => (
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
            altitude_m as f32,
            yaw_deg.map_or(f32::NAN, |y| y as f32),
        ),
    };
    CommandRequest::Int {
        command: MavCmd::MAV_CMD_DO_REPOSITION,
        frame,
        params: [
            speed_m_s.map_or(-1.0, |s| s as f32),
            REPOSITION_CHANGE_MODE,
            0.0,
            yaw,
        ],
        x: degrees_e7(latitude_deg),
        y: degrees_e7(longitude_deg),
        z,
    }
}

/// A goal that goes nowhere (speed changes): from and to where the vehicle is.
fn stationary_goal(vehicle: &VehicleState) -> Goal {
    let (lat, lon, alt) = vehicle.position().map_or((0.0, 0.0, 0.0), |p| {
        (p.latitude_deg, p.longitude_deg, p.altitude_relative_m)
    });
    Goal {
        from_latitude_deg: lat,
        from_longitude_deg: lon,
        from_altitude_m: alt,
        to_latitude_deg: lat,
        to_longitude_deg: lon,
        to_altitude_m: alt,
        speed_m_s: None,
    }
}

fn address(message: MavMessage, system: u8, component: u8) -> MavMessage {
    match message {
        MavMessage::SET_POSITION_TARGET_GLOBAL_INT(mut t) => {
            t.target_system = system;
            t.target_component = component;
            MavMessage::SET_POSITION_TARGET_GLOBAL_INT(t)
        }
        other => other,
    }
}

fn completion(action: Action, vehicle: &VehicleState) -> String {
    let at = vehicle.position().map_or(String::new(), |p| {
        format!(
            " at {:.7}, {:.7}, {:.1} m above home",
            p.latitude_deg, p.longitude_deg, p.altitude_relative_m
        )
    });
    match action {
        Action::Arm => "the vehicle reports armed".into(),
        Action::Disarm => "the vehicle reports disarmed".into(),
        Action::Takeoff { altitude_m } => {
            format!("took off to {altitude_m} m; the vehicle holds{at}")
        }
        Action::Goto { .. } | Action::MoveRelative { .. } => format!("arrived{at}"),
        Action::SetHeading { heading_deg } => format!("the vehicle faces {heading_deg:.0}°"),
        Action::SetSpeed { speed_m_s } => {
            format!("the autopilot accepted the speed of {speed_m_s} m/s")
        }
        Action::Hold => format!("the vehicle holds position{at}"),
        Action::Land => "landed and disarmed".into(),
        Action::ReturnHome => format!("returned home, landed and disarmed{at}"),
        Action::RunMission { .. } => format!("the mission is complete{at}"),
        Action::PauseMission => format!("the mission is paused: holding{at}"),
    }
}

/// Appends the autopilot's latest warning, which usually says why it refused.
fn with_status_text(message: String, vehicle: &VehicleState, now: Instant) -> String {
    with_status_text_since(message, vehicle, now, None)
}

/// Appends the autopilot's latest warning if it came after `since` (when the command went
/// out; an older one is about something else) and within the last 5 s.
fn with_status_text_since(
    message: String,
    vehicle: &VehicleState,
    now: Instant,
    since: Option<Instant>,
) -> String {
    let snapshot = vehicle.snapshot(now);
    let newest_ms = since.map_or(5000, |at| {
        u64::try_from(now.saturating_duration_since(at).as_millis())
            .unwrap_or(u64::MAX)
            .min(5000)
    });
    match snapshot.status_texts.last() {
        Some(t) if t.age_ms <= newest_ms => {
            format!("{message}; the autopilot said: \"{}\"", t.text)
        }
        _ => message,
    }
}

/// What a landing or returning vehicle is doing, from what it reports: climbing to the return
/// altitude, flying home, descending, or on the ground.
fn landing_phase(vehicle: &VehicleState, distance_home_m: Option<f64>) -> &'static str {
    use crate::link::dialect::MavLandedState;
    if !vehicle.in_air() {
        return "on the ground, waiting for disarm";
    }
    let (horizontal, down) = vehicle.position().map_or((0.0, 0.0), |p| {
        (
            p.velocity_north_m_s.hypot(p.velocity_east_m_s),
            p.velocity_down_m_s,
        )
    });
    if vehicle.landed_state() == Some(MavLandedState::MAV_LANDED_STATE_LANDING) || down > 0.3 {
        "descending"
    } else if down < -0.3 {
        "climbing"
    } else if distance_home_m.is_some_and(|d| d <= 2.0) {
        "over home"
    } else if horizontal > 0.5 && distance_home_m.is_some() {
        "flying home"
    } else {
        "holding"
    }
}
