//! The MAVLink command protocol (`COMMAND_LONG`/`COMMAND_INT` → `COMMAND_ACK`) as a sans-IO
//! state machine, the mode-change helper confirmed by heartbeat, and the telemetry requests.
//!
//! MAVLink ACKs carry no request id: an ACK names only the command. So at most one command
//! of a kind may be outstanding per target (a second is refused with `Busy` rather than
//! confused with the first), and an ACK is matched on the command *and* on its sender being
//! the target. A late ACK for an earlier, timed-out command of the same kind that arrives
//! after a new one was sent cannot be told apart; that is a limit of the protocol.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use mavlink::MessageData;

use crate::link::dialect::{
    self, COMMAND_INT_DATA, COMMAND_LONG_DATA, MavCmd, MavFrame, MavResult,
};
use crate::link::{MavHeader, MavMessage};

use super::modes::FlightMode;
use super::snapshot::AutopilotKind;

/// Commands outstanding at once; more are refused (`Busy::TooManyPending`).
pub const PENDING_MAX: usize = 16;

/// Finished commands remembered so their late or duplicate ACKs are recognised as such.
const RECENT_MAX: usize = 32;

/// Identifies one submitted command in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command #{}", self.0)
    }
}

/// A command to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CommandRequest {
    Long {
        command: MavCmd,
        params: [f32; 7],
    },
    /// Positions go as `COMMAND_INT` so latitude and longitude keep their 1e-7° integers.
    Int {
        command: MavCmd,
        frame: MavFrame,
        params: [f32; 4],
        x: i32,
        y: i32,
        z: f32,
    },
}

impl CommandRequest {
    pub fn command(&self) -> MavCmd {
        match self {
            CommandRequest::Long { command, .. } | CommandRequest::Int { command, .. } => *command,
        }
    }
}

/// Knobs of `CommandProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandOptions {
    /// Wait this long for an ACK before re-sending (`vehicle.command_ack_timeout_ms`).
    pub ack_timeout: Duration,
    /// Re-sends after the first send before giving up (`vehicle.command_retries_max`).
    pub retries_max: u8,
    /// How long a command may stay `IN_PROGRESS` without a new ACK.
    pub in_progress_timeout: Duration,
    /// Our own ids: an ACK addressed to someone else is not ours.
    pub source_system: u8,
    pub source_component: u8,
}

impl CommandOptions {
    pub fn from_config(config: &crate::config::VehicleConfig) -> Self {
        Self {
            ack_timeout: Duration::from_millis(config.command_ack_timeout_ms),
            retries_max: config.command_retries_max,
            in_progress_timeout: Duration::from_millis(config.command_in_progress_timeout_ms),
            source_system: config.system_id,
            source_component: config.component_id,
        }
    }
}

/// Why `submit` refused a command.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Busy {
    #[error(
        "{command:?} is already pending for this target as {existing}; wait for it to finish \
         (its ACK could not be told apart from a second one)"
    )]
    SameCommandPending {
        command: MavCmd,
        existing: CommandId,
    },
    #[error("{limit} commands are already pending; wait for some to finish")]
    TooManyPending { limit: usize },
}

/// Why every pending command is given up at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    LinkLost,
    ShuttingDown,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    /// `MAV_RESULT_ACCEPTED`: the autopilot accepted and executed (or started) it.
    Accepted,
    /// `MAV_RESULT_TEMPORARILY_REJECTED`: valid, but not now; retrying later may work.
    TemporarilyRejected,
    /// `MAV_RESULT_DENIED`: refused in the vehicle's current state.
    Denied { result_param2: i32 },
    /// `MAV_RESULT_UNSUPPORTED`: this autopilot does not know the command.
    Unsupported,
    /// `MAV_RESULT_FAILED`: accepted but execution failed.
    Failed { result_param2: i32 },
    /// `MAV_RESULT_CANCELLED`: the autopilot cancelled it.
    Cancelled,
    /// `MAV_RESULT_COMMAND_LONG_ONLY`.
    LongOnly,
    /// `MAV_RESULT_COMMAND_INT_ONLY`.
    IntOnly,
    /// `MAV_RESULT_COMMAND_UNSUPPORTED_MAV_FRAME`.
    UnsupportedFrame,
    /// `MAV_RESULT_NOT_IN_CONTROL`: another system controls the vehicle.
    NotInControl,
    /// No ACK after every attempt.
    TimedOut { attempts: u8, elapsed: Duration },
    /// It went `IN_PROGRESS` and then nothing more came within the in-progress timeout.
    InProgressTimedOut { last_percent: Option<u8> },
    /// The link was lost; nothing will be retried.
    LinkLost,
    /// The daemon is shutting down; nothing will be retried.
    ShuttingDown,
    /// We stopped waiting (`cancel`); the autopilot may still act on it.
    Withdrawn,
}

impl CommandOutcome {
    /// The outcome of an ACK's result; `None` for `IN_PROGRESS`, which is not an end.
    pub fn from_ack(result: MavResult, result_param2: i32) -> Option<Self> {
        use MavResult as R;
        Some(match result {
            R::MAV_RESULT_ACCEPTED => Self::Accepted,
            R::MAV_RESULT_TEMPORARILY_REJECTED => Self::TemporarilyRejected,
            R::MAV_RESULT_DENIED => Self::Denied { result_param2 },
            R::MAV_RESULT_UNSUPPORTED => Self::Unsupported,
            R::MAV_RESULT_FAILED => Self::Failed { result_param2 },
            R::MAV_RESULT_IN_PROGRESS => return None,
            R::MAV_RESULT_CANCELLED => Self::Cancelled,
            R::MAV_RESULT_COMMAND_LONG_ONLY => Self::LongOnly,
            R::MAV_RESULT_COMMAND_INT_ONLY => Self::IntOnly,
            R::MAV_RESULT_COMMAND_UNSUPPORTED_MAV_FRAME => Self::UnsupportedFrame,
            R::MAV_RESULT_NOT_IN_CONTROL => Self::NotInControl,
        })
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }

    /// True when the answer came from the autopilot (as opposed to a timeout or us).
    pub fn is_from_autopilot(&self) -> bool {
        !matches!(
            self,
            Self::TimedOut { .. }
                | Self::InProgressTimedOut { .. }
                | Self::LinkLost
                | Self::ShuttingDown
                | Self::Withdrawn
        )
    }

    /// One sentence a person or a model can act on, naming the command.
    pub fn describe(&self, command: MavCmd) -> String {
        let c = format!("{command:?}");
        match self {
            Self::Accepted => format!("the autopilot accepted {c}"),
            Self::TemporarilyRejected => format!(
                "the autopilot temporarily rejected {c}: it is busy or not ready; try again shortly"
            ),
            // No "see its STATUSTEXT": many refusals come without one (ArduCopter's
            // DO_CHANGE_SPEED outside GUIDED, AUTO and RTL); the executor quotes the
            // autopilot's own words when a STATUSTEXT did come after the command.
            Self::Denied { result_param2 } => format!(
                "the autopilot denied {c}: the vehicle refused in its current state{}",
                detail(*result_param2)
            ),
            Self::Unsupported => {
                format!("the autopilot does not support {c}: this firmware does not implement it")
            }
            Self::Failed { result_param2 } => format!(
                "the autopilot accepted {c} but executing it failed{}",
                detail(*result_param2)
            ),
            Self::Cancelled => format!("the autopilot cancelled {c} before it completed"),
            Self::LongOnly => format!("the autopilot accepts {c} only as COMMAND_LONG"),
            Self::IntOnly => format!("the autopilot accepts {c} only as COMMAND_INT"),
            Self::UnsupportedFrame => {
                format!("the autopilot does not support the coordinate frame given for {c}")
            }
            Self::NotInControl => {
                format!("the autopilot refused {c}: another system is in control of the vehicle")
            }
            Self::TimedOut { attempts, elapsed } => format!(
                "no COMMAND_ACK for {c} after {attempts} attempts over {:.1} s: is the link up?",
                elapsed.as_secs_f64()
            ),
            Self::InProgressTimedOut { last_percent } => format!(
                "{c} was in progress{} and then the autopilot went quiet; its result is unknown",
                last_percent.map_or(String::new(), |p| format!(" ({p}%)"))
            ),
            Self::LinkLost => format!(
                "the link to the autopilot was lost while {c} was pending; it was not retried \
                 and may or may not have been executed"
            ),
            Self::ShuttingDown => {
                format!("the daemon is shutting down; {c} was abandoned and not retried")
            }
            Self::Withdrawn => format!(
                "stopped waiting for {c}; the autopilot may still act on it if it received it"
            ),
        }
    }
}

fn detail(result_param2: i32) -> String {
    if result_param2 == 0 {
        String::new()
    } else {
        format!(" [result_param2 {result_param2}]")
    }
}

/// What the protocol reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CommandEvent {
    /// `IN_PROGRESS`; `percent` is `None` when the autopilot does not estimate it.
    Progress {
        id: CommandId,
        command: MavCmd,
        percent: Option<u8>,
    },
    /// The command ended; it produces no further event.
    Finished {
        id: CommandId,
        command: MavCmd,
        outcome: CommandOutcome,
    },
}

impl fmt::Display for CommandEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandEvent::Progress {
                command, percent, ..
            } => match percent {
                Some(p) => write!(f, "{command:?} in progress: {p}%"),
                None => write!(f, "{command:?} in progress"),
            },
            CommandEvent::Finished {
                command, outcome, ..
            } => f.write_str(&outcome.describe(*command)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Submitted, waiting for `poll_transmit`.
    Unsent,
    /// Sent `attempts` times; re-send or give up at `deadline`.
    AwaitingAck { deadline: Instant },
    /// The autopilot said `IN_PROGRESS`: no re-sends; give up at `deadline`.
    InProgress {
        deadline: Instant,
        percent: Option<u8>,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    id: CommandId,
    target_system: u8,
    target_component: u8,
    request: CommandRequest,
    attempts: u8,
    first_sent_at: Option<Instant>,
    phase: Phase,
}

/// `COMMAND_LONG`/`COMMAND_INT` with ACK matching, retransmission and timeouts.
///
/// Call order, as with any sans-IO core:
/// 1. `submit(now, ...)` to queue a command; `cancel(id)` / `abort_all(reason)` as needed.
/// 2. `handle_message(now, header, msg)` for every message from the link (only
///    `COMMAND_ACK` matters).
/// 3. `handle_timeout(now)` when `poll_timeout()` has passed (`poll_transmit` also does it).
/// 4. Drain `poll_transmit(now)` and send each message with our system/component ids.
/// 5. Drain `poll_event()`.
/// 6. Sleep until `poll_timeout()` or the next input.
#[derive(Debug)]
pub struct CommandProtocol {
    options: CommandOptions,
    next_id: u64,
    pending: Vec<Pending>,
    events: VecDeque<CommandEvent>,
    /// (command, target system, target component) of recently finished commands.
    recent: VecDeque<(MavCmd, u8, u8)>,
    late_acks: u64,
    foreign_acks: u64,
}

impl CommandProtocol {
    pub fn new(options: CommandOptions) -> Self {
        Self {
            options,
            next_id: 1,
            pending: Vec::new(),
            events: VecDeque::new(),
            recent: VecDeque::with_capacity(RECENT_MAX),
            late_acks: 0,
            foreign_acks: 0,
        }
    }

    /// Queues a command for `target_system`/`target_component` (0 = any component).
    /// Refused while the same command is pending for the same target.
    pub fn submit(
        &mut self,
        _now: Instant,
        target_system: u8,
        target_component: u8,
        request: CommandRequest,
    ) -> Result<CommandId, Busy> {
        let command = request.command();
        if let Some(existing) = self.pending.iter().find(|p| {
            p.request.command() == command
                && p.target_system == target_system
                && components_overlap(p.target_component, target_component)
        }) {
            return Err(Busy::SameCommandPending {
                command,
                existing: existing.id,
            });
        }
        if self.pending.len() >= PENDING_MAX {
            return Err(Busy::TooManyPending { limit: PENDING_MAX });
        }
        let id = CommandId(self.next_id);
        self.next_id += 1;
        self.pending.push(Pending {
            id,
            target_system,
            target_component,
            request,
            attempts: 0,
            first_sent_at: None,
            phase: Phase::Unsent,
        });
        Ok(id)
    }

    /// The next message to send: a first send, or a re-send whose ACK timeout passed.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        self.handle_timeout(now);
        let options = self.options;
        let p = self.pending.iter_mut().find(|p| match p.phase {
            Phase::Unsent => true,
            Phase::AwaitingAck { deadline } => deadline <= now && p.attempts <= options.retries_max,
            Phase::InProgress { .. } => false,
        })?;
        // `confirmation` counts re-sends so the autopilot can tell a retry from a new request.
        let confirmation = p.attempts;
        p.attempts = p.attempts.saturating_add(1);
        p.first_sent_at.get_or_insert(now);
        p.phase = Phase::AwaitingAck {
            deadline: now + options.ack_timeout,
        };
        Some(build(p, confirmation))
    }

    /// Gives up on commands whose last attempt or in-progress time ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        let retries_max = self.options.retries_max;
        let mut finished = Vec::new();
        self.pending.retain(|p| {
            let outcome = match p.phase {
                Phase::AwaitingAck { deadline } if deadline <= now && p.attempts > retries_max => {
                    CommandOutcome::TimedOut {
                        attempts: p.attempts,
                        elapsed: p
                            .first_sent_at
                            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                    }
                }
                Phase::InProgress { deadline, percent } if deadline <= now => {
                    CommandOutcome::InProgressTimedOut {
                        last_percent: percent,
                    }
                }
                _ => return true,
            };
            finished.push((p.clone(), outcome));
            false
        });
        for (p, outcome) in finished {
            self.finished(&p, outcome);
        }
    }

    /// The earliest instant at which `handle_timeout`/`poll_transmit` has work; `None` when
    /// nothing waits on time. An unsent command is not a timeout: drain `poll_transmit`
    /// after `submit`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|p| match p.phase {
                Phase::Unsent => None,
                Phase::AwaitingAck { deadline } | Phase::InProgress { deadline, .. } => {
                    Some(deadline)
                }
            })
            .min()
    }

    /// Takes `COMMAND_ACK`s; every other message is ignored.
    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, msg: &MavMessage) {
        let MavMessage::COMMAND_ACK(ack) = msg else {
            return;
        };
        // MAVLink 1 ACKs (and lazy senders) leave the target fields 0: accept those.
        let addressed_to_us = (ack.target_system == 0
            || ack.target_system == self.options.source_system)
            && (ack.target_component == 0 || ack.target_component == self.options.source_component);
        let Ok(sender_system) = u8::try_from(header.system_id) else {
            self.foreign_acks += 1;
            return;
        };
        if !addressed_to_us {
            self.foreign_acks += 1;
            return;
        }
        let sent = |p: &&Pending| {
            p.request.command() == ack.command
                && p.target_system == sender_system
                && p.phase != Phase::Unsent
        };
        // A command sent to one component is answered by that component; one sent to all
        // components (0) may be answered by any of them. Exact matches first.
        let index = self
            .pending
            .iter()
            .position(|p| sent(&p) && p.target_component == header.component_id)
            .or_else(|| {
                self.pending
                    .iter()
                    .position(|p| sent(&p) && p.target_component == 0)
            });
        let Some(index) = index else {
            let known = self.recent.iter().any(|(command, system, component)| {
                *command == ack.command
                    && *system == sender_system
                    && (*component == 0 || *component == header.component_id)
            });
            if known {
                self.late_acks += 1;
            } else {
                self.foreign_acks += 1;
            }
            return;
        };
        match CommandOutcome::from_ack(ack.result, ack.result_param2) {
            None => {
                let percent = (ack.progress <= 100).then_some(ack.progress);
                let Some(p) = self.pending.get_mut(index) else {
                    return;
                };
                p.phase = Phase::InProgress {
                    deadline: now + self.options.in_progress_timeout,
                    percent,
                };
                let (id, command) = (p.id, p.request.command());
                // Coalesce: a caller that drains slowly sees the latest progress only.
                let queued = self.events.iter_mut().find_map(|e| match e {
                    CommandEvent::Progress {
                        id: queued,
                        percent,
                        ..
                    } if *queued == id => Some(percent),
                    _ => None,
                });
                match queued {
                    Some(queued_percent) => *queued_percent = percent,
                    None => self.events.push_back(CommandEvent::Progress {
                        id,
                        command,
                        percent,
                    }),
                }
            }
            Some(outcome) => {
                let p = self.pending.remove(index);
                self.finished(&p, outcome);
            }
        }
    }

    /// Stops waiting for `id`; it finishes as `Withdrawn`. Returns false if it was not
    /// pending. Nothing is sent to the autopilot.
    pub fn cancel(&mut self, id: CommandId) -> bool {
        let Some(index) = self.pending.iter().position(|p| p.id == id) else {
            return false;
        };
        let p = self.pending.remove(index);
        self.finished(&p, CommandOutcome::Withdrawn);
        true
    }

    /// Finishes every pending command at once (link lost, shutdown); none is retried later.
    pub fn abort_all(&mut self, reason: AbortReason) {
        let outcome = match reason {
            AbortReason::LinkLost => CommandOutcome::LinkLost,
            AbortReason::ShuttingDown => CommandOutcome::ShuttingDown,
        };
        for p in std::mem::take(&mut self.pending) {
            self.finished(&p, outcome);
        }
    }

    pub fn poll_event(&mut self) -> Option<CommandEvent> {
        self.events.pop_front()
    }

    /// Commands submitted and not finished.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// ACKs for commands that had already finished (duplicates, ACKs after a timeout or
    /// after `abort_all`), recognised among the last few finished commands.
    pub fn late_acks(&self) -> u64 {
        self.late_acks
    }

    /// ACKs for commands we never sent (or not yet), from other senders, or addressed to
    /// others.
    pub fn foreign_acks(&self) -> u64 {
        self.foreign_acks
    }

    fn finished(&mut self, p: &Pending, outcome: CommandOutcome) {
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent
            .push_back((p.request.command(), p.target_system, p.target_component));
        // A finished command's queued progress is moot; drop it so events stay bounded.
        self.events
            .retain(|e| !matches!(e, CommandEvent::Progress { id, .. } if *id == p.id));
        self.events.push_back(CommandEvent::Finished {
            id: p.id,
            command: p.request.command(),
            outcome,
        });
    }
}

fn components_overlap(a: u8, b: u8) -> bool {
    a == b || a == 0 || b == 0
}

fn build(p: &Pending, confirmation: u8) -> MavMessage {
    match p.request {
        CommandRequest::Long { command, params } => {
            let [param1, param2, param3, param4, param5, param6, param7] = params;
            MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                param1,
                param2,
                param3,
                param4,
                param5,
                param6,
                param7,
                command,
                target_system: p.target_system,
                target_component: p.target_component,
                confirmation,
            })
        }
        CommandRequest::Int {
            command,
            frame,
            params,
            x,
            y,
            z,
        } => {
            let [param1, param2, param3, param4] = params;
            MavMessage::COMMAND_INT(COMMAND_INT_DATA {
                param1,
                param2,
                param3,
                param4,
                x,
                y,
                z,
                command,
                target_system: p.target_system,
                target_component: p.target_component,
                frame,
                current: 0,
                autocontinue: 0,
            })
        }
    }
}

/// How a mode change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChangeOutcome {
    /// A heartbeat from the target showed the requested mode.
    Confirmed,
    /// The autopilot answered the command with something other than `ACCEPTED`.
    Refused(CommandOutcome),
    /// The command was given up locally (link lost, shutdown, withdrawn).
    Aborted(CommandOutcome),
    /// No heartbeat showed the mode before the deadline (whatever the ACK said).
    TimedOut { last_seen: Option<FlightMode> },
}

/// A mode change, resolved by the vehicle's heartbeat rather than by the ACK alone: an
/// autopilot can accept `DO_SET_MODE` and still not switch (or switch back at once), and
/// only the heartbeat says what it actually flies in.
///
/// Call order: `new` gives the `CommandRequest` to `submit` to the `CommandProtocol`;
/// feed `handle_message` every message from the link and `handle_command_event` the
/// events of that command; call `handle_timeout(now)` at `poll_timeout()`; read
/// `outcome()` until it is `Some`.
#[derive(Debug, Clone)]
pub struct ModeChange {
    autopilot: AutopilotKind,
    target_system: u8,
    target_component: u8,
    mode: FlightMode,
    deadline: Instant,
    command: Option<CommandId>,
    last_seen: Option<FlightMode>,
    outcome: Option<ModeChangeOutcome>,
}

impl ModeChange {
    /// Starts a change to `mode`, to be confirmed within `timeout`. `None` when this
    /// autopilot has no such mode.
    pub fn new(
        now: Instant,
        autopilot: AutopilotKind,
        target_system: u8,
        target_component: u8,
        mode: FlightMode,
        timeout: Duration,
    ) -> Option<(Self, CommandRequest)> {
        let params = FlightMode::set_mode_params(autopilot, mode)?;
        let request = CommandRequest::Long {
            command: MavCmd::MAV_CMD_DO_SET_MODE,
            params,
        };
        let change = Self {
            autopilot,
            target_system,
            target_component,
            mode,
            deadline: now + timeout,
            command: None,
            last_seen: None,
            outcome: None,
        };
        Some((change, request))
    }

    /// The id `CommandProtocol::submit` returned for this change's request.
    pub fn set_command(&mut self, id: CommandId) {
        self.command = Some(id);
    }

    pub fn mode(&self) -> FlightMode {
        self.mode
    }

    /// Watches the target's heartbeats for the requested mode.
    pub fn handle_message(&mut self, _now: Instant, header: &MavHeader, msg: &MavMessage) {
        let MavMessage::HEARTBEAT(hb) = msg else {
            return;
        };
        if self.outcome.is_some()
            || u8::try_from(header.system_id) != Ok(self.target_system)
            || (self.target_component != 0 && header.component_id != self.target_component)
        {
            return;
        }
        let seen = FlightMode::decode(self.autopilot, hb.base_mode.bits(), hb.custom_mode);
        self.last_seen = Some(seen);
        if seen == self.mode {
            self.outcome = Some(ModeChangeOutcome::Confirmed);
        }
    }

    /// Takes the command's events: a refusal ends the change; an ACCEPTED or a lost ACK
    /// does not (the heartbeat decides).
    pub fn handle_command_event(&mut self, event: &CommandEvent) {
        let CommandEvent::Finished { id, outcome, .. } = event else {
            return;
        };
        if self.outcome.is_some() || self.command != Some(*id) {
            return;
        }
        self.outcome = match outcome {
            CommandOutcome::Accepted
            | CommandOutcome::TimedOut { .. }
            | CommandOutcome::InProgressTimedOut { .. } => None,
            CommandOutcome::LinkLost | CommandOutcome::ShuttingDown | CommandOutcome::Withdrawn => {
                Some(ModeChangeOutcome::Aborted(*outcome))
            }
            refusal => Some(ModeChangeOutcome::Refused(*refusal)),
        };
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            self.outcome = Some(ModeChangeOutcome::TimedOut {
                last_seen: self.last_seen,
            });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outcome.is_none().then_some(self.deadline)
    }

    pub fn outcome(&self) -> Option<ModeChangeOutcome> {
        self.outcome
    }

    /// One sentence about the outcome, in the autopilot's mode names.
    pub fn describe(&self) -> Option<String> {
        let want = self.mode.name(self.autopilot);
        Some(match self.outcome? {
            ModeChangeOutcome::Confirmed => format!("the vehicle is in {want}"),
            ModeChangeOutcome::Refused(o) | ModeChangeOutcome::Aborted(o) => {
                o.describe(MavCmd::MAV_CMD_DO_SET_MODE)
            }
            ModeChangeOutcome::TimedOut { last_seen } => format!(
                "the vehicle did not report {want} in time; it last reported {}",
                last_seen.map_or("no heartbeat", |m| m.name(self.autopilot))
            ),
        })
    }
}

/// The telemetry `VehicleState` needs, as `SET_MESSAGE_INTERVAL` requests at `rate_hz`
/// (clamped to 0.1..=50 Hz; a non-finite rate counts as 1 Hz), with `HOME_POSITION` at
/// 0.2 Hz, and one-off `REQUEST_MESSAGE`s for `AUTOPILOT_VERSION` and `HOME_POSITION`.
/// ArduPilot streams `EKF_STATUS_REPORT`, PX4 `ESTIMATOR_STATUS`; an unknown autopilot
/// is asked for both.
pub fn telemetry_requests(autopilot: AutopilotKind, rate_hz: f32) -> Vec<CommandRequest> {
    const HOME_RATE_HZ: f32 = 0.2;
    let rate_hz = if rate_hz.is_finite() {
        rate_hz.clamp(0.1, 50.0)
    } else {
        1.0
    };
    let mut streamed = vec![
        (dialect::GLOBAL_POSITION_INT_DATA::ID, rate_hz),
        (dialect::ATTITUDE_DATA::ID, rate_hz),
        (dialect::VFR_HUD_DATA::ID, rate_hz),
        (dialect::SYS_STATUS_DATA::ID, rate_hz),
        (dialect::GPS_RAW_INT_DATA::ID, rate_hz),
        (dialect::BATTERY_STATUS_DATA::ID, rate_hz),
        (dialect::EXTENDED_SYS_STATE_DATA::ID, rate_hz),
        (dialect::HOME_POSITION_DATA::ID, HOME_RATE_HZ),
    ];
    if autopilot != AutopilotKind::Px4 {
        streamed.push((dialect::EKF_STATUS_REPORT_DATA::ID, rate_hz));
    }
    if autopilot != AutopilotKind::Ardupilot {
        streamed.push((dialect::ESTIMATOR_STATUS_DATA::ID, rate_hz));
    }
    let mut requests: Vec<CommandRequest> = streamed
        .into_iter()
        .map(|(id, hz)| CommandRequest::Long {
            command: MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
            // param2: interval in microseconds; param7 0: to the default address.
            params: [id as f32, (1e6 / hz).round(), 0.0, 0.0, 0.0, 0.0, 0.0],
        })
        .collect();
    for id in [
        dialect::AUTOPILOT_VERSION_DATA::ID,
        dialect::HOME_POSITION_DATA::ID,
    ] {
        requests.push(CommandRequest::Long {
            command: MavCmd::MAV_CMD_REQUEST_MESSAGE,
            params: [id as f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        });
    }
    requests
}

#[cfg(test)]
mod tests;
