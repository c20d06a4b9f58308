//! The emergency stop and the failsafes as one sans-IO state machine.
//!
//! [`EmergencyStop`] is a pure function of time, its state and its inputs (in the manner of
//! PX4's `failsafe_test.cpp`): no tokio, no sockets, no clock. The shell feeds it triggers,
//! resets, what the vehicle reports and the ground link's state, and carries out the
//! [`StopCommand`]s it returns.
//!
//! Call order, on every turn of the daemon's loop:
//! 1. `handle_trigger` / `handle_reset` / `handle_kill` for requests (the e-stop channel is
//!    the loop's first branch), `handle_vehicle(now, &VehicleView)` after every link
//!    event, `handle_mode_ack` for a `COMMAND_ACK` to a stop command, `handle_ground_link`
//!    when the broker connection changes, `handle_ground_activity` for authenticated ground
//!    traffic, `handle_autopilot_link` when the MAVLink link goes up or down;
//! 2. `poll_transmit(now)` until `None`, sending each command at once;
//! 3. `poll_event()` until `None`, logging and reporting each one to every client;
//! 4. wake up again at `poll_timeout()` at the latest.
//!
//! # The ladder (default)
//! Hold at once (ArduCopter `BRAKE`, PX4 `AUTO.LOITER`); if the heartbeat does not show the
//! vehicle holding within `hold_confirm_timeout`, or position is lost, or the battery is
//! critical: `LAND`; on the ground: disarm. Each stop command is re-sent every
//! `resend_interval` until the heartbeat shows the mode, then the next rung if it never
//! does. Force-disarm and flight termination in the air exist only when
//! `danger_kill_action` is configured *and* a kill is requested twice (the second time with
//! the code the first returned, within `danger_kill_confirm_window`).
//!
//! # Arbitration
//! Every cause demands a [`Rung`]; the most severe demand wins and the ladder never steps
//! down while latched (PX4's ordering: hold < return < land < disarm < terminate).
//! Termination is final: nothing, not even a reset, undoes it.
//!
//! # Pilot takeover
//! When the heartbeat shows a manual mode while armed, the pilot flies from the RC: the
//! ladder stops sending anything (the latch stays, so the tools still refuse motion) and
//! says so. It never fights the pilot.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::role::Role;
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;
use crate::vehicle::view::{Landed, VehicleView};

/// Least role that may reset the stop: an ADMIN (or the companion itself), never the
/// operator who is flying, so a second person confirms it is safe to fly again.
/// The MCP permission table says the same (`auth::permissions`); the core checks it again.
pub const RESET_ROLE_MIN: Role = Role::Admin;

/// Events kept for the status report (newest last).
pub const HISTORY_MAX: usize = 16;
/// Events waiting for the shell; older ones are dropped first (they are also in the log).
const EVENTS_MAX: usize = 64;
/// Longest reason kept from a trigger, in characters (a panic button is not a document).
pub const REASON_CHARS_MAX: usize = 200;
/// Times the termination command is sent: it is final, there is nothing to confirm it by.
const TERMINATE_SENDS: u32 = 3;

/// Where a stop came from. Each source is independent of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The MCP tool `emergency_stop`.
    McpTool,
    /// The MQTT panic topic.
    MqttPanic,
    /// `flight-companion estop` on the companion (local socket).
    Local,
    /// The hardware switch, through the firmware bridge.
    Hardware,
    /// A failsafe of the daemon itself.
    Failsafe,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::McpTool => "MCP tool emergency_stop",
            Source::MqttPanic => "MQTT panic topic",
            Source::Local => "local estop command",
            Source::Hardware => "hardware e-stop switch",
            Source::Failsafe => "failsafe",
        })
    }
}

/// The daemon's own failsafes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Failsafe {
    /// No connection to the MQTT broker while in the air.
    GroundLinkLost,
    /// Connected, but no authenticated ground activity while in the air.
    GroundInactive,
    /// Battery at or below `battery_critical_percent` while in the air.
    BatteryCritical,
}

impl fmt::Display for Failsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failsafe::GroundLinkLost => "ground link lost",
            Failsafe::GroundInactive => "no ground activity",
            Failsafe::BatteryCritical => "battery critical",
        })
    }
}

/// One rung of the ladder, ordered by severity (the derive order is the arbitration order).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    /// Stop and hold position (ArduCopter `BRAKE` or `LOITER`, PX4 `AUTO.LOITER`).
    Hold,
    /// Return to home (ArduCopter `RTL`, PX4 `AUTO.RTL`).
    ReturnHome,
    /// Land where it is (`LAND`, `AUTO.LAND`).
    Land,
    /// Disarm, on the ground only.
    Disarm,
    /// `COMPONENT_ARM_DISARM` with 21196: motors stop in the air. Danger.
    ForceDisarm,
    /// `DO_FLIGHTTERMINATION`: irreversible until power cycle. Danger.
    Terminate,
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rung::Hold => "hold",
            Rung::ReturnHome => "return home",
            Rung::Land => "land",
            Rung::Disarm => "disarm",
            Rung::ForceDisarm => "force disarm",
            Rung::Terminate => "flight termination",
        })
    }
}

/// What follows a ground-link-loss hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroundLossAction {
    ReturnHome,
    Land,
}

/// Which hold mode ArduCopter gets (PX4 has one: `AUTO.LOITER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldMode {
    /// `BRAKE`: stops as hard as the vehicle can, then holds. The default.
    Brake,
    /// `LOITER`: decelerates gently, then holds.
    Loiter,
}

/// What may follow a confirmed two-step kill request. `None` unless configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillAction {
    None,
    ForceDisarm,
    Terminate,
}

/// The machine's knobs (from `[estop]` and `[failsafe]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StopOptions {
    pub hold_mode: HoldMode,
    /// A hold (or return) not shown by the heartbeat within this time escalates to land.
    pub hold_confirm_timeout: Duration,
    /// Stop commands are re-sent this often until the heartbeat confirms them.
    pub resend_interval: Duration,
    pub kill_action: KillAction,
    pub kill_confirm_window: Duration,
    /// `None` disables the ground-link failsafe.
    pub ground_link_timeout: Option<Duration>,
    /// `None` disables the ground-activity failsafe.
    pub ground_activity_timeout: Option<Duration>,
    /// How long the ground-loss failsafe holds before `ground_loss_action`.
    pub ground_loss_hold: Duration,
    pub ground_loss_action: GroundLossAction,
    /// At or below this percentage in the air: land. `None` disables it.
    pub battery_critical_percent: Option<f64>,
    /// A position is lost for the ladder only once it has been missing this long while the
    /// heartbeat was fresh: a daemon that was stalled (SIGSTOP, a hung disk) reads the
    /// autopilot's heartbeat from its backlog before the position that follows it, and its
    /// own stale view is no reason to land a vehicle that holds fine. Two telemetry periods
    /// (at least 500 ms); the autopilot's own EKF failsafe lands a vehicle that really lost it.
    pub position_loss_grace: Duration,
}

impl Default for StopOptions {
    fn default() -> Self {
        Self {
            hold_mode: HoldMode::Brake,
            hold_confirm_timeout: Duration::from_millis(1500),
            resend_interval: Duration::from_millis(250),
            kill_action: KillAction::None,
            kill_confirm_window: Duration::from_secs(10),
            ground_link_timeout: Some(Duration::from_secs(5)),
            ground_activity_timeout: None,
            ground_loss_hold: Duration::from_secs(5),
            ground_loss_action: GroundLossAction::ReturnHome,
            battery_critical_percent: Some(10.0),
            position_loss_grace: Duration::from_millis(500),
        }
    }
}

/// A stop request.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub source: Source,
    /// Who: the MCP client id, the MQTT client id, `local uid N`, `bridge`.
    pub identity: String,
    pub reason: String,
}

/// A command for the autopilot; the shell encodes it for the autopilot it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCommand {
    SetMode(FlightMode),
    Disarm,
    ForceDisarm,
    Terminate,
}

/// Something to log and to tell every client.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopEvent {
    Triggered {
        source: Source,
        identity: String,
        reason: String,
        /// False when the stop was already latched (the trigger is recorded, nothing changes).
        first: bool,
    },
    FailsafeTriggered {
        failsafe: Failsafe,
        detail: String,
    },
    /// The condition of a failsafe no longer holds (the latch it set stays until a reset).
    FailsafeCleared {
        failsafe: Failsafe,
    },
    RungStarted {
        rung: Rung,
        why: String,
    },
    RungConfirmed {
        rung: Rung,
        /// The mode the heartbeat showed, in the autopilot's terms.
        mode: String,
    },
    RungRefused {
        rung: Rung,
        detail: String,
    },
    PilotTookOver {
        mode: String,
    },
    Stopped {
        detail: String,
    },
    GroundLinkBack,
    AutopilotLinkLost,
    AutopilotLinkBack,
    KillConfirmationRequired {
        action: String,
        code: u32,
        within_s: f64,
    },
    Reset {
        identity: String,
    },
}

impl fmt::Display for StopEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopEvent::Triggered {
                source,
                identity,
                reason,
                first: true,
            } => write!(f, "EMERGENCY STOP by {source} ({identity}): {reason}"),
            StopEvent::Triggered {
                source,
                identity,
                reason,
                first: false,
            } => write!(
                f,
                "emergency stop already latched; another trigger by {source} ({identity}): {reason}"
            ),
            StopEvent::FailsafeTriggered { failsafe, detail } => {
                write!(f, "FAILSAFE {failsafe}: {detail}")
            }
            StopEvent::FailsafeCleared { failsafe } => write!(
                f,
                "failsafe condition cleared: {failsafe} (the stop stays latched until reset)"
            ),
            StopEvent::RungStarted { rung, why } => write!(f, "stop: {rung} ({why})"),
            StopEvent::RungConfirmed { rung, mode } => {
                write!(f, "stop: {rung} confirmed, the vehicle reports {mode}")
            }
            StopEvent::RungRefused { rung, detail } => {
                write!(f, "stop: the autopilot refused {rung}: {detail}")
            }
            StopEvent::PilotTookOver { mode } => write!(
                f,
                "the pilot took over in {mode}: the daemon sends no more commands and stays \
                 stopped (motion tools refused) until reset"
            ),
            StopEvent::Stopped { detail } => write!(f, "stop: {detail}"),
            StopEvent::GroundLinkBack => write!(
                f,
                "ground link back; the vehicle does not resume by itself: the stop stays \
                 latched until reset_emergency_stop"
            ),
            StopEvent::AutopilotLinkLost => write!(
                f,
                "autopilot link lost while stopped: nothing can be sent; the autopilot's own \
                 failsafes apply"
            ),
            StopEvent::AutopilotLinkBack => {
                write!(f, "autopilot link back: the stop is asserted again")
            }
            StopEvent::KillConfirmationRequired {
                action,
                code,
                within_s,
            } => write!(
                f,
                "{action} requested: confirm with code {code} within {within_s:.0} s"
            ),
            StopEvent::Reset { identity } => {
                write!(
                    f,
                    "emergency stop reset by {identity}: motion tools accepted again"
                )
            }
        }
    }
}

/// One event with its sequence number, as kept in the status report.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StopEventRecord {
    /// Increases by one per event since the daemon started.
    pub seq: u64,
    /// One sentence for people.
    pub text: String,
    pub event: StopEvent,
}

/// The `emergency_stop` field of the status report.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
pub struct StopStatus {
    /// True while the stop is latched: every motion tool is refused.
    pub latched: bool,
    /// Why, from the first trigger; null when not latched.
    pub reason: Option<String>,
    /// Who stopped it first.
    pub source: Option<Source>,
    /// The rung being asserted; null when nothing is being commanded.
    pub rung: Option<Rung>,
    /// The heartbeat shows the rung's mode (or the vehicle is disarmed on the ground).
    pub rung_confirmed: bool,
    /// The pilot flies a manual mode: the daemon sends nothing.
    pub pilot_in_control: bool,
    /// Flight termination was commanded: final, only a power cycle clears it.
    pub terminated: bool,
    /// Failsafe conditions true right now.
    pub failsafes_active: Vec<Failsafe>,
    /// Stop commands sent since the latch.
    pub commands_sent: u64,
    /// Newest last.
    pub history: Vec<StopEventRecord>,
}

/// The answer to a kill request.
#[derive(Debug, Clone, PartialEq)]
pub enum KillReply {
    Refused(String),
    /// Send the same request again with `code` within `within`.
    ConfirmationRequired {
        code: u32,
        within: Duration,
    },
    Executing(Rung),
}

#[derive(Debug, Clone)]
struct Latch {
    reason: String,
    source: Source,
    since: Instant,
}

#[derive(Debug, Clone)]
struct Active {
    rung: Rung,
    started_at: Instant,
    next_send_at: Instant,
    confirmed: bool,
    sends: u32,
}

#[derive(Debug, Clone, Copy)]
struct PendingKill {
    code: u32,
    until: Instant,
}

/// The state machine. See the module doc for the call order.
#[derive(Debug)]
pub struct EmergencyStop {
    options: StopOptions,
    vehicle: VehicleView,
    autopilot_link_up: bool,
    latch: Option<Latch>,
    active: Option<Active>,
    /// Least rung demanded by causes other than the ladder's own escalation.
    demanded: Option<Rung>,
    /// When the ground-loss hold turns into `ground_loss_action`.
    ground_loss_escalate_at: Option<Instant>,
    pilot_in_control: bool,
    terminated: bool,
    done: bool,
    pending_kill: Option<PendingKill>,
    ground_connected: bool,
    /// Since when the broker connection is down (None while connected).
    ground_down_since: Option<Instant>,
    last_ground_activity: Instant,
    failsafes: Vec<Failsafe>,
    commands_sent: u64,
    seq: u64,
    history: VecDeque<StopEventRecord>,
    events: VecDeque<StopEvent>,
    /// Since when the heartbeat is fresh and the position is not valid.
    position_missing_since: Option<Instant>,
}

impl EmergencyStop {
    /// `ground_connected`: whether a broker connection is expected to exist at all is the
    /// shell's business; pass `true` when there is no ground (MQTT disabled) and the
    /// ground failsafes will never fire.
    pub fn new(options: StopOptions, now: Instant, ground_connected: bool) -> Self {
        Self {
            options,
            vehicle: VehicleView::UNKNOWN,
            autopilot_link_up: true,
            latch: None,
            active: None,
            demanded: None,
            ground_loss_escalate_at: None,
            pilot_in_control: false,
            terminated: false,
            done: false,
            pending_kill: None,
            ground_connected,
            ground_down_since: (!ground_connected).then_some(now),
            last_ground_activity: now,
            failsafes: Vec::new(),
            commands_sent: 0,
            seq: 0,
            history: VecDeque::new(),
            events: VecDeque::new(),
            position_missing_since: None,
        }
    }

    /// A stop request from any source. Latches; the first trigger starts the ladder, later
    /// ones are recorded and change nothing.
    pub fn handle_trigger(&mut self, now: Instant, trigger: Trigger) {
        let reason = clip(&trigger.reason);
        let first = self.latch.is_none();
        self.event(StopEvent::Triggered {
            source: trigger.source,
            // From the ground (a client id): shown in every status and notification.
            identity: crate::escape::escape(&trigger.identity).into_owned(),
            reason: reason.clone(),
            first,
        });
        if first {
            self.latch = Some(Latch {
                reason,
                source: trigger.source,
                since: now,
            });
            self.done = false;
            self.pilot_in_control = false;
        }
        self.step(now);
    }

    /// Clears the latch. Refused after termination, while a failsafe condition lasts, and
    /// for callers below [`RESET_ROLE_MIN`]. Returns what happened, in one sentence.
    pub fn handle_reset(
        &mut self,
        now: Instant,
        identity: &str,
        role: Role,
    ) -> Result<String, String> {
        self.update_failsafes(now);
        if self.terminated {
            return Err(
                "flight termination was commanded: it is final; power-cycle the vehicle".into(),
            );
        }
        if role < RESET_ROLE_MIN {
            return Err(format!(
                "resetting the emergency stop needs the {RESET_ROLE_MIN} role; {identity} has {role}"
            ));
        }
        if self.latch.is_none() {
            return Ok("the emergency stop was not latched; nothing to reset".into());
        }
        if let Some(failsafe) = self.failsafes.first() {
            return Err(format!(
                "the failsafe condition \"{failsafe}\" still holds; reset is accepted once it clears"
            ));
        }
        self.latch = None;
        self.active = None;
        self.demanded = None;
        self.ground_loss_escalate_at = None;
        self.pilot_in_control = false;
        self.done = false;
        self.pending_kill = None;
        self.event(StopEvent::Reset {
            identity: identity.to_owned(),
        });
        Ok(
            "emergency stop reset: motion tools are accepted again; the vehicle stays in its \
             current mode until commanded"
                .into(),
        )
    }

    /// The two-step kill (force-disarm or termination in the air). The first request
    /// (`code: None`) latches the stop and returns a code; the second, with that code
    /// within the window, executes. `nonce` is a random number from the shell.
    pub fn handle_kill(
        &mut self,
        now: Instant,
        trigger: Trigger,
        code: Option<u32>,
        nonce: u32,
    ) -> KillReply {
        let rung = match self.options.kill_action {
            KillAction::None => {
                return KillReply::Refused(
                    "force-disarm and flight termination are not configured (estop.\
                     danger_kill_action = \"none\"); the normal stop (hold, then land) is \
                     available with emergency_stop"
                        .into(),
                );
            }
            KillAction::ForceDisarm => Rung::ForceDisarm,
            KillAction::Terminate => Rung::Terminate,
        };
        match (code, self.pending_kill) {
            (Some(given), Some(pending)) if given == pending.code && now <= pending.until => {
                self.pending_kill = None;
                if self.latch.is_none() {
                    self.handle_trigger(now, trigger);
                }
                self.demand(now, rung, "two-step kill confirmed");
                KillReply::Executing(rung)
            }
            (Some(_), _) => KillReply::Refused(
                "the confirmation code is wrong or expired; request the kill again without a \
                 code to get a new one"
                    .into(),
            ),
            (None, _) => {
                // A code of 0 would read like "no code"; keep codes in 100000..=999999.
                let code = 100_000 + nonce % 900_000;
                self.pending_kill = Some(PendingKill {
                    code,
                    until: now + self.options.kill_confirm_window,
                });
                self.handle_trigger(now, trigger);
                self.event(StopEvent::KillConfirmationRequired {
                    action: rung.to_string(),
                    code,
                    within_s: self.options.kill_confirm_window.as_secs_f64(),
                });
                KillReply::ConfirmationRequired {
                    code,
                    within: self.options.kill_confirm_window,
                }
            }
        }
    }

    /// What the vehicle reports now (after every link event).
    pub fn handle_vehicle(&mut self, now: Instant, vehicle: VehicleView) {
        self.vehicle = vehicle;
        let missing =
            vehicle.autopilot.is_some() && vehicle.heartbeat_fresh && !vehicle.position_valid;
        self.position_missing_since = match (missing, self.position_missing_since) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(now),
        };
        self.step(now);
    }

    /// The autopilot's answer to a stop command: a refusal of hold or return escalates at
    /// once (BRAKE and LOITER need a position; the next rung does not).
    pub fn handle_mode_ack(&mut self, now: Instant, accepted: bool, detail: &str) {
        let Some(active) = &self.active else {
            return;
        };
        if accepted || active.confirmed {
            return;
        }
        let rung = active.rung;
        self.event(StopEvent::RungRefused {
            rung,
            detail: detail.to_owned(),
        });
        if rung < Rung::Land {
            self.escalate(now, Rung::Land, "the autopilot refused the previous rung");
        }
    }

    /// The broker connection went up or down.
    pub fn handle_ground_link(&mut self, now: Instant, connected: bool) {
        if connected == self.ground_connected {
            return;
        }
        self.ground_connected = connected;
        if connected {
            self.ground_down_since = None;
            self.last_ground_activity = now;
            if self.failsafes.contains(&Failsafe::GroundLinkLost) {
                self.event(StopEvent::GroundLinkBack);
            }
        } else {
            self.ground_down_since = Some(now);
        }
        self.step(now);
    }

    /// An authenticated message from a ground client.
    pub fn handle_ground_activity(&mut self, now: Instant) {
        self.handle_ground_activity_at(now, now);
    }

    /// Ground activity that happened at `at` (not after `now`), read by the loop at `now`.
    pub fn handle_ground_activity_at(&mut self, now: Instant, at: Instant) {
        let was_inactive = self.failsafes.contains(&Failsafe::GroundInactive);
        self.last_ground_activity = self.last_ground_activity.max(at.min(now));
        if was_inactive {
            self.event(StopEvent::GroundLinkBack);
        }
        self.step(now);
    }

    /// The MAVLink link opened or closed. While it is down nothing is sent (and nothing is
    /// queued); when it is back the current rung is asserted again: that is the stop's
    /// present decision, not a command from the past.
    pub fn handle_autopilot_link(&mut self, now: Instant, up: bool) {
        if up == self.autopilot_link_up {
            return;
        }
        self.autopilot_link_up = up;
        if self.latch.is_some() {
            self.event(if up {
                StopEvent::AutopilotLinkBack
            } else {
                StopEvent::AutopilotLinkLost
            });
        }
        if up && let Some(active) = &mut self.active {
            active.next_send_at = now;
        }
        self.step(now);
    }

    /// The next command to send now.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<StopCommand> {
        self.step(now);
        if !self.command_can_go(self.active.as_ref()?.rung) {
            return None;
        }
        let hold_mode = self.hold_mode();
        let active = self.active.as_mut()?;
        if active.confirmed || now < active.next_send_at {
            return None;
        }
        if active.rung == Rung::Terminate && active.sends >= TERMINATE_SENDS {
            return None;
        }
        let command = match active.rung {
            Rung::Hold => StopCommand::SetMode(hold_mode?),
            Rung::ReturnHome => StopCommand::SetMode(FlightMode::Rtl),
            Rung::Land => StopCommand::SetMode(FlightMode::Land),
            Rung::Disarm => StopCommand::Disarm,
            Rung::ForceDisarm => StopCommand::ForceDisarm,
            Rung::Terminate => StopCommand::Terminate,
        };
        active.sends += 1;
        active.next_send_at = now + self.options.resend_interval;
        self.commands_sent += 1;
        Some(command)
    }

    /// The latest instant the shell must call `poll_transmit` again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        // Only the deadlines `step` and `poll_transmit` act on now, mirroring their conditions:
        // one they skip would stay passed and turn the decision loop at once, forever (it spun
        // a core with the stop latched and no autopilot heard). What lifts a condition (a link
        // event, a heartbeat, the pilot's switch) is an input of its own, and every turn polls
        // the stop.
        let ladder_acts = self.ladder_acts();
        if ladder_acts
            && let Some(active) = &self.active
            && !active.confirmed
            && !(active.rung == Rung::Terminate && active.sends >= TERMINATE_SENDS)
        {
            if self.command_can_go(active.rung) {
                consider(active.next_send_at);
            }
            if active.rung < Rung::Land {
                consider(active.started_at + self.options.hold_confirm_timeout);
            }
        }
        // Escalations below Land only: from Land on, `step` looks no further.
        if ladder_acts
            && let Some(active) = &self.active
            && active.rung < Rung::Land
        {
            if let Some(t) = self.ground_loss_escalate_at {
                consider(t);
            }
            if let Some(since) = self.position_missing_since {
                consider(since + self.options.position_loss_grace);
            }
        }
        if self.vehicle.may_be_flying() {
            if let (Some(since), Some(timeout)) =
                (self.ground_down_since, self.options.ground_link_timeout)
                && !self.failsafes.contains(&Failsafe::GroundLinkLost)
            {
                consider(since + timeout);
            }
            if let Some(timeout) = self.options.ground_activity_timeout
                && self.ground_connected
                && !self.failsafes.contains(&Failsafe::GroundInactive)
            {
                consider(self.last_ground_activity + timeout);
            }
        }
        at
    }

    pub fn poll_event(&mut self) -> Option<StopEvent> {
        self.events.pop_front()
    }

    /// `Err(reason)` while latched: what every motion tool answers, with what is allowed.
    pub fn motion_refusal(&self) -> Option<String> {
        let latch = self.latch.as_ref()?;
        Some(format!(
            "refused: the emergency stop is latched ({} by {}); no motion is accepted until \
             reset_emergency_stop{}",
            latch.reason,
            latch.source,
            if self.terminated {
                " — and flight termination is final"
            } else {
                ""
            }
        ))
    }

    pub fn is_latched(&self) -> bool {
        self.latch.is_some()
    }

    /// When the latch was set.
    pub fn latched_since(&self) -> Option<Instant> {
        self.latch.as_ref().map(|l| l.since)
    }

    /// Whether the active rung (or the finished ladder) is confirmed: `status().rung_confirmed`
    /// without building the whole status (the driver asks every loop turn).
    pub fn rung_confirmed(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.confirmed) || self.done
    }

    pub fn status(&self) -> StopStatus {
        StopStatus {
            latched: self.latch.is_some(),
            reason: self.latch.as_ref().map(|l| l.reason.clone()),
            source: self.latch.as_ref().map(|l| l.source),
            rung: self.active.as_ref().map(|a| a.rung),
            rung_confirmed: self.rung_confirmed(),
            pilot_in_control: self.pilot_in_control,
            terminated: self.terminated,
            failsafes_active: self.failsafes.clone(),
            commands_sent: self.commands_sent,
            history: self.history.iter().cloned().collect(),
        }
    }

    /// While the pilot flies, the ladder neither sends nor escalates (unless it terminated).
    /// `step` and `poll_timeout` both ask here, so a deadline is offered only when acted on.
    fn ladder_acts(&self) -> bool {
        !self.pilot_in_control || self.terminated
    }

    /// A command of `rung` can go now: over a link to an autopilot heard, while the ladder
    /// acts, and a hold only where that autopilot has a hold mode. `poll_transmit` and
    /// `poll_timeout` both ask here.
    fn command_can_go(&self, rung: Rung) -> bool {
        self.autopilot_link_up
            && self.vehicle.autopilot.is_some()
            && self.ladder_acts()
            && (rung != Rung::Hold || self.hold_mode().is_some())
    }

    fn hold_mode(&self) -> Option<FlightMode> {
        match self.vehicle.autopilot? {
            AutopilotKind::Ardupilot => Some(match self.options.hold_mode {
                HoldMode::Brake => FlightMode::Brake,
                HoldMode::Loiter => FlightMode::Loiter,
            }),
            AutopilotKind::Px4 => Some(FlightMode::Loiter),
            AutopilotKind::Other => None,
        }
    }

    /// Asks for at least `rung`; the more severe of the current and the demanded wins.
    fn demand(&mut self, now: Instant, rung: Rung, why: &str) {
        self.demanded = Some(self.demanded.map_or(rung, |d| d.max(rung)));
        if self.active.as_ref().is_none_or(|a| a.rung < rung) {
            self.escalate(now, rung, why);
        }
    }

    fn escalate(&mut self, now: Instant, rung: Rung, why: &str) {
        if self.active.as_ref().is_some_and(|a| a.rung >= rung) || self.terminated {
            return;
        }
        if rung == Rung::Terminate {
            self.terminated = true;
        }
        self.done = false;
        self.active = Some(Active {
            rung,
            started_at: now,
            next_send_at: now,
            confirmed: false,
            sends: 0,
        });
        self.event(StopEvent::RungStarted {
            rung,
            why: why.to_owned(),
        });
    }

    /// Re-evaluates everything at `now`. Idempotent.
    fn step(&mut self, now: Instant) {
        self.update_failsafes(now);
        if let Some(pending) = self.pending_kill
            && now > pending.until
        {
            self.pending_kill = None;
        }
        if self.latch.is_none() {
            return;
        }
        let v = self.vehicle;
        self.track_pilot(v);
        if !self.ladder_acts() {
            return;
        }
        // Confirmation from the heartbeat: one newer than the rung, or one showing a more
        // severe mode. A heartbeat from before the trigger showing the rung's own mode may
        // be up to one heartbeat period stale (the vehicle may have left the hold since), and
        // the rung's own command costs nothing to a vehicle already flying it, so it is sent.
        // A more severe mode (the autopilot's own failsafe) is trusted rather than
        // downgraded; if it was left, the next heartbeat asserts the rung again (below).
        if let Some(active) = &mut self.active
            && !active.confirmed
            && confirms(active.rung, &v)
            && (v.heartbeat_at.is_some_and(|at| at > active.started_at)
                || mode_severity(&v).is_some_and(|s| s > active.rung))
        {
            active.confirmed = true;
            let rung = active.rung;
            let mode = mode_name(&v);
            self.event(StopEvent::RungConfirmed { rung, mode });
        } else if let Some(active) = &mut self.active
            && active.confirmed
            && !confirms(active.rung, &v)
            && active.rung <= Rung::Land
            && v.may_be_flying()
        {
            // Someone (another GCS, a mission) switched the vehicle away: assert again,
            // unless it is the autopilot's own, more severe, failsafe.
            if mode_severity(&v).is_none_or(|s| s < active.rung) {
                // A new attempt with its own confirmation window.
                active.confirmed = false;
                active.started_at = now;
                active.next_send_at = now;
            }
        }
        if self.terminated {
            return;
        }
        // On the ground: disarm; disarmed on the ground: done. A disarmed vehicle whose landed
        // state is unknown counts as down here: its motors are stopped, so nothing is left
        // for the ladder to command (`Landed`'s rule: the worse case for the stop is "flying",
        // and a disarmed vehicle cannot be flown).
        if v.autopilot.is_some()
            && (v.landed == Landed::OnGround || (!v.armed && v.landed == Landed::Unknown))
        {
            if v.armed {
                self.escalate(now, Rung::Disarm, "the vehicle is on the ground");
            } else if !self.done {
                self.done = true;
                self.active = None;
                self.event(StopEvent::Stopped {
                    detail: "the vehicle is disarmed on the ground".into(),
                });
            }
            return;
        }
        if self.done && !v.armed {
            return;
        }
        if self.active.is_none() && v.autopilot.is_some() && !v.armed {
            // Disarmed and not known to be on the ground: nothing to command.
            return;
        }
        let base = self.demanded.unwrap_or(Rung::Hold);
        if self.active.as_ref().is_none_or(|a| a.rung < base) {
            let why = if base == Rung::Hold {
                "the first rung: stop and hold position"
            } else {
                "demanded by a failsafe"
            };
            self.escalate(now, base, why);
        }
        let Some(active) = self.active.clone() else {
            return;
        };
        if active.rung >= Rung::Land {
            return;
        }
        let battery_critical = self.failsafes.contains(&Failsafe::BatteryCritical);
        if battery_critical {
            self.escalate(now, Rung::Land, "the battery is critical");
        } else if self
            .position_missing_since
            .is_some_and(|since| now >= since + self.options.position_loss_grace)
        {
            self.escalate(
                now,
                Rung::Land,
                "the vehicle has no valid position: it cannot hold or return",
            );
        } else if !active.confirmed && now >= active.started_at + self.options.hold_confirm_timeout
        {
            let why = format!(
                "the heartbeat did not show {} within {} ms",
                active.rung,
                self.options.hold_confirm_timeout.as_millis()
            );
            self.escalate(now, Rung::Land, &why);
        } else if let Some(at) = self.ground_loss_escalate_at
            && now >= at
        {
            self.ground_loss_escalate_at = None;
            let rung = match self.options.ground_loss_action {
                GroundLossAction::ReturnHome => Rung::ReturnHome,
                GroundLossAction::Land => Rung::Land,
            };
            self.demand(now, rung, "the ground link is still lost after the hold");
        }
    }

    fn track_pilot(&mut self, v: VehicleView) {
        let manual = match (v.autopilot, v.mode) {
            (Some(kind), Some(mode)) => v.armed && FlightMode::is_manual(kind, mode),
            _ => false,
        };
        if manual && !self.pilot_in_control {
            self.pilot_in_control = true;
            let mode = mode_name(&v);
            self.event(StopEvent::PilotTookOver { mode });
        }
    }

    fn update_failsafes(&mut self, now: Instant) {
        let v = self.vehicle;
        let flying = v.may_be_flying();
        let mut active = Vec::new();
        if flying
            && let (Some(since), Some(timeout)) =
                (self.ground_down_since, self.options.ground_link_timeout)
            && now.saturating_duration_since(since) >= timeout
        {
            active.push(Failsafe::GroundLinkLost);
        }
        if flying
            && self.ground_connected
            && let Some(timeout) = self.options.ground_activity_timeout
            && now.saturating_duration_since(self.last_ground_activity) >= timeout
        {
            active.push(Failsafe::GroundInactive);
        }
        if flying
            && v.heartbeat_fresh
            && let (Some(percent), Some(critical)) = (
                v.battery_remaining_percent,
                self.options.battery_critical_percent,
            )
            && percent <= critical
        {
            active.push(Failsafe::BatteryCritical);
        }
        if !active
            .iter()
            .any(|f| matches!(f, Failsafe::GroundLinkLost | Failsafe::GroundInactive))
        {
            // The link came back during the hold: the vehicle keeps holding (latched) but
            // does not go on to return or land on account of a link that is there.
            self.ground_loss_escalate_at = None;
        }
        let new: Vec<Failsafe> = active
            .iter()
            .copied()
            .filter(|f| !self.failsafes.contains(f))
            .collect();
        let cleared: Vec<Failsafe> = self
            .failsafes
            .iter()
            .copied()
            .filter(|f| !active.contains(f))
            .collect();
        self.failsafes = active;
        for failsafe in cleared {
            self.event(StopEvent::FailsafeCleared { failsafe });
        }
        for failsafe in new {
            let detail = match failsafe {
                Failsafe::GroundLinkLost => format!(
                    "no broker connection for {} s while in the air: hold, then {} after {} s",
                    self.options.ground_link_timeout.map_or(0, |t| t.as_secs()),
                    ground_action_name(self.options.ground_loss_action),
                    self.options.ground_loss_hold.as_secs_f64()
                ),
                Failsafe::GroundInactive => format!(
                    "no authenticated ground activity for {} s while in the air: hold, then {} \
                     after {} s",
                    self.options
                        .ground_activity_timeout
                        .map_or(0, |t| t.as_secs()),
                    ground_action_name(self.options.ground_loss_action),
                    self.options.ground_loss_hold.as_secs_f64()
                ),
                Failsafe::BatteryCritical => format!(
                    "battery at {:.0} % (critical at {:.0} %) while in the air: land",
                    v.battery_remaining_percent.unwrap_or(0.0),
                    self.options.battery_critical_percent.unwrap_or(0.0)
                ),
            };
            self.event(StopEvent::FailsafeTriggered {
                failsafe,
                detail: detail.clone(),
            });
            let first = self.latch.is_none();
            if first {
                self.latch = Some(Latch {
                    reason: format!("failsafe: {failsafe}"),
                    source: Source::Failsafe,
                    since: now,
                });
                self.done = false;
                self.pilot_in_control = false;
            }
            match failsafe {
                Failsafe::GroundLinkLost | Failsafe::GroundInactive => {
                    if self.ground_loss_escalate_at.is_none() {
                        self.ground_loss_escalate_at = Some(now + self.options.ground_loss_hold);
                    }
                }
                Failsafe::BatteryCritical => {
                    self.demanded = Some(self.demanded.map_or(Rung::Land, |d| d.max(Rung::Land)));
                }
            }
        }
    }

    fn event(&mut self, event: StopEvent) {
        self.seq += 1;
        if self.history.len() == HISTORY_MAX {
            self.history.pop_front();
        }
        self.history.push_back(StopEventRecord {
            seq: self.seq,
            text: event.to_string(),
            event: event.clone(),
        });
        if self.events.len() == EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

fn ground_action_name(action: GroundLossAction) -> &'static str {
    match action {
        GroundLossAction::ReturnHome => "return home",
        GroundLossAction::Land => "land",
    }
}

/// The rung a mode stands for (for confirmation and for respecting the autopilot's own,
/// more severe failsafes).
fn mode_severity(v: &VehicleView) -> Option<Rung> {
    match v.mode? {
        FlightMode::Brake | FlightMode::Loiter => Some(Rung::Hold),
        FlightMode::Rtl | FlightMode::SmartRtl | FlightMode::AutoRtl => Some(Rung::ReturnHome),
        FlightMode::Land | FlightMode::PrecisionLand => Some(Rung::Land),
        _ => None,
    }
}

fn confirms(rung: Rung, v: &VehicleView) -> bool {
    if !v.heartbeat_fresh {
        return false;
    }
    match rung {
        // Any hold mode holds; a more severe mode the autopilot chose by itself also stops.
        Rung::Hold | Rung::ReturnHome | Rung::Land => mode_severity(v).is_some_and(|s| s >= rung),
        Rung::Disarm | Rung::ForceDisarm => !v.armed,
        Rung::Terminate => false,
    }
}

fn mode_name(v: &VehicleView) -> String {
    match (v.autopilot, v.mode) {
        (Some(kind), Some(FlightMode::Other(n))) => {
            format!("{} ({n})", FlightMode::Other(n).name(kind))
        }
        (Some(kind), Some(mode)) => mode.name(kind).to_owned(),
        _ => "no mode".into(),
    }
}

/// At most [`REASON_CHARS_MAX`] characters, control and bidirectional characters replaced: a
/// reason ends up in logs, the status and every client's notification.
pub fn clip(reason: &str) -> String {
    let reason = reason.trim();
    let mut out: String = reason
        .chars()
        .take(REASON_CHARS_MAX)
        .map(|c| {
            if crate::escape::is_unsafe_char(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    if reason.chars().count() > REASON_CHARS_MAX {
        out.push('…');
    }
    if out.is_empty() {
        out = "no reason given".into();
    }
    out
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
