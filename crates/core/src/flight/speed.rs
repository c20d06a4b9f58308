//! Keeping a motion's horizontal speed where the daemon decided it (sans-IO).
//!
//! The autopilots do not keep a speed they were given:
//! - ArduCopter flies GUIDED position targets at `WPNAV_SPEED` whenever its position
//!   controller starts: on entering GUIDED and on the first position target after a takeoff or
//!   a velocity target (`mode_guided.cpp`: `init`, `set_destination` → `pos_control_start` →
//!   `pva_control_start`). It ignores `DO_REPOSITION`'s speed (`GCS_MAVLink_Copter.cpp`) and
//!   takes `DO_CHANGE_SPEED` only in GUIDED, AUTO and RTL (`MAV_RESULT_FAILED` elsewhere, with
//!   no STATUSTEXT). So the speed goes *after* the target, once the vehicle flies a mode that
//!   takes it, and again whenever the mode changes.
//! - PX4 takes the speed with the target (`DO_REPOSITION` param1, `navigator_main.cpp`); its
//!   `DO_CHANGE_SPEED` (any mode) applies to the next setpoint, e.g. the next RTL leg.
//!
//! [`SpeedKeeper`] holds the speed the running motion must fly at (`demand`), sends
//! `DO_CHANGE_SPEED` when the autopilot may have forgotten it (a new target, a mode change, a
//! ground speed above it), waits for a mode that takes it instead of sending into a refusal,
//! and never fails the motion over it: the live monitor's speed check is the backstop.
//!
//! Call order: `demand(speed)` when a motion's target has been accepted (or its speed changes),
//! `release()` when no motion needs it; each turn `poll(now, vehicle, commands)` and
//! `handle_command_event(event)` for every command event; `take_note()` for progress lines.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::link::dialect::MavCmd;
use crate::vehicle::command::{CommandEvent, CommandId, CommandProtocol, CommandRequest};
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;
use crate::vehicle::state::VehicleState;

/// A refused speed change is tried again after this (in the same mode).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Refusals in a row before the keeper stops asking in that mode.
const REFUSALS_MAX: u32 = 3;
/// A ground speed this far above the demand (at least [`EXCESS_M_S_MIN`])...
const EXCESS_FRACTION: f64 = 0.1;
const EXCESS_M_S_MIN: f64 = 0.5;
/// ...for this long makes the keeper say the speed again (the autopilot reset it, or someone
/// else changed it); at most once per this period.
const EXCESS_FOR: Duration = Duration::from_millis(500);
const REASSERT_PERIOD: Duration = Duration::from_secs(1);
/// Notes waiting for the job's progress; older ones are dropped.
const NOTES_MAX: usize = 8;

/// True when this autopilot takes `DO_CHANGE_SPEED` in `mode` (see the module doc).
pub fn takes_speed_change(kind: AutopilotKind, mode: FlightMode) -> bool {
    match kind {
        AutopilotKind::Ardupilot => {
            matches!(
                mode,
                FlightMode::Guided | FlightMode::Auto | FlightMode::Rtl
            )
        }
        AutopilotKind::Px4 => true,
        AutopilotKind::Other => false,
    }
}

/// `DO_CHANGE_SPEED` of the ground speed (param1 1), throttle unchanged (param3 -1).
pub fn change_speed(speed_m_s: f64) -> CommandRequest {
    CommandRequest::Long {
        command: MavCmd::MAV_CMD_DO_CHANGE_SPEED,
        params: [1.0, speed_m_s as f32, -1.0, 0.0, 0.0, 0.0, 0.0],
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sent {
    id: CommandId,
    mode: Option<FlightMode>,
    speed_m_s: f64,
}

/// Keeps the speed of the running motion. See the module doc.
#[derive(Debug, Default)]
pub struct SpeedKeeper {
    demand_m_s: Option<f64>,
    /// (mode it was accepted in, speed): nothing to send while the vehicle stays in that mode.
    accepted: Option<(Option<FlightMode>, f64)>,
    pending: Option<Sent>,
    last_sent_at: Option<Instant>,
    /// The mode of the last refusal, when, and how many in a row.
    refused: Option<(Option<FlightMode>, Instant, u32)>,
    /// A mode that does not take a speed change was reported (once per mode).
    waiting_in: Option<FlightMode>,
    over_since: Option<Instant>,
    notes: VecDeque<String>,
}

impl SpeedKeeper {
    pub fn new() -> SpeedKeeper {
        SpeedKeeper::default()
    }

    /// The running motion must fly at `speed_m_s`; its target was just accepted (or the speed
    /// changed), so the autopilot may have restarted at its own speed: say it again.
    pub fn demand(&mut self, speed_m_s: f64) {
        self.demand_m_s = Some(speed_m_s);
        self.accepted = None;
        self.refused = None;
        self.waiting_in = None;
        self.over_since = None;
    }

    /// No motion needs a speed any more; an answer still on its way is just noted.
    pub fn release(&mut self) {
        self.demand_m_s = None;
        self.accepted = None;
        self.refused = None;
        self.waiting_in = None;
        self.over_since = None;
    }

    /// The speed being kept, if any.
    pub fn current_demand(&self) -> Option<f64> {
        self.demand_m_s
    }

    /// True once the autopilot accepted the current demand (in the mode it flies now or did
    /// when it accepted).
    pub fn is_accepted(&self) -> bool {
        matches!((self.accepted, self.demand_m_s), (Some((_, a)), Some(d)) if a == d)
    }

    /// A refusal of the current demand, if the last answer was one.
    pub fn is_refused(&self) -> bool {
        self.refused.is_some()
    }

    /// Sends `DO_CHANGE_SPEED` when the vehicle may not fly the demand.
    pub fn poll(&mut self, now: Instant, vehicle: &VehicleState, commands: &mut CommandProtocol) {
        let Some(speed) = self.demand_m_s else {
            return;
        };
        let Some(autopilot) = vehicle.autopilot() else {
            return;
        };
        let kind = autopilot.autopilot;
        let (system, component) = (autopilot.system_id, autopilot.component_id);
        let mode = vehicle.flight_mode();
        self.watch_excess(now, vehicle, speed);
        if self.pending.is_some() {
            return;
        }
        if self.accepted == Some((mode, speed)) {
            return;
        }
        let Some(flying) = mode else {
            return;
        };
        if !takes_speed_change(kind, flying) {
            if self.waiting_in != Some(flying) {
                self.waiting_in = Some(flying);
                self.note(format!(
                    "the speed of {speed:.1} m/s waits: the autopilot takes a speed change \
                     only in GUIDED, AUTO and RTL, and the vehicle is in {}",
                    flying.name(kind)
                ));
            }
            return;
        }
        if let Some((refused_mode, at, count)) = self.refused
            && refused_mode == mode
            && (count >= REFUSALS_MAX || now < at + RETRY_AFTER)
        {
            return;
        }
        if let Ok(id) = commands.submit(now, system, component, change_speed(speed)) {
            self.pending = Some(Sent {
                id,
                mode,
                speed_m_s: speed,
            });
            self.last_sent_at = Some(now);
        }
        // Busy (another DO_CHANGE_SPEED pending): the next turn tries again.
    }

    /// A ground speed above the demand for a while: the autopilot restarted at its own speed
    /// or someone else changed it; forget the acceptance so the next poll says it again.
    fn watch_excess(&mut self, now: Instant, vehicle: &VehicleState, speed: f64) {
        let ground = vehicle
            .position()
            .map_or(0.0, |p| p.velocity_north_m_s.hypot(p.velocity_east_m_s));
        if ground <= speed + (speed * EXCESS_FRACTION).max(EXCESS_M_S_MIN) {
            self.over_since = None;
            return;
        }
        let since = *self.over_since.get_or_insert(now);
        let quiet = self
            .last_sent_at
            .is_none_or(|at| now >= at + REASSERT_PERIOD);
        if now >= since + EXCESS_FOR && quiet && self.accepted.is_some() {
            self.accepted = None;
            self.over_since = None;
            self.note(format!(
                "the vehicle flies at {ground:.1} m/s, above {speed:.1} m/s: the daemon says \
                 the speed again"
            ));
        }
    }

    /// Takes the answer to its own command; returns true when the event was one.
    pub fn handle_command_event(&mut self, now: Instant, event: &CommandEvent) -> bool {
        let CommandEvent::Finished { id, outcome, .. } = event else {
            return false;
        };
        let Some(sent) = self.pending.filter(|s| s.id == *id) else {
            return false;
        };
        self.pending = None;
        if Some(sent.speed_m_s) != self.demand_m_s {
            return true;
        }
        if outcome.is_accepted() {
            self.accepted = Some((sent.mode, sent.speed_m_s));
            self.refused = None;
        } else {
            let count = match self.refused {
                Some((mode, _, count)) if mode == sent.mode => count + 1,
                _ => 1,
            };
            self.refused = Some((sent.mode, now, count));
            self.note(format!(
                "{}; the daemon tries again when the vehicle changes mode",
                outcome.describe(MavCmd::MAV_CMD_DO_CHANGE_SPEED)
            ));
        }
        true
    }

    /// When `poll` needs a turn at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.demand_m_s?;
        let retry = self.refused.map(|(_, at, _)| at + RETRY_AFTER);
        let excess = self.over_since.map(|at| at + EXCESS_FOR);
        match (retry, excess) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next line for the running job's progress.
    pub fn take_note(&mut self) -> Option<String> {
        self.notes.pop_front()
    }

    fn note(&mut self, note: String) {
        if self.notes.len() == NOTES_MAX {
            self.notes.pop_front();
        }
        self.notes.push_back(note);
    }
}
