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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::link::dialect::{self, MavAutopilot, MavModeFlag, MavState, MavType};
use crate::link::frame::FrameCounters;
use crate::link::health::LinkHealth;
use crate::link::transport::LinkEvent;
use crate::link::{MavHeader, MavMessage};
use crate::vehicle::command::{
    AbortReason, CommandEvent, CommandOptions, CommandOutcome, CommandProtocol, CommandRequest,
    telemetry_requests,
};
use crate::vehicle::snapshot::VehicleSnapshot;
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
        }
    }
}

/// Something worth telling a person, produced by the core and logged by the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    LinkUp { peer: String },
    LinkDown { reason: String },
    AutopilotFound { description: String },
    AutopilotLost { silent_for: Duration },
    TelemetryRequested { accepted: usize, refused: usize },
    CommandFinished { description: String },
}

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
            options,
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
        }
    }

    /// Feeds one event from the link shell.
    pub fn handle_link_event(&mut self, now: Instant, event: &LinkEvent) {
        match event {
            LinkEvent::Connected { peer } => {
                self.health.handle_connected();
                self.notice(Notice::LinkUp { peer: peer.clone() });
            }
            LinkEvent::Disconnected { reason } => {
                self.health.handle_disconnected();
                // Nothing is queued to fly later: pending commands end now.
                self.commands.abort_all(AbortReason::LinkLost);
                self.forget_telemetry_requests();
                self.notice(Notice::LinkDown {
                    reason: reason.clone(),
                });
            }
            LinkEvent::Frame {
                header, message, ..
            } => self.handle_message(now, header, message),
        }
    }

    /// Feeds one decoded message (also used directly by tests).
    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, message: &MavMessage) {
        self.health.handle_frame(now, header, message);
        self.vehicle.handle_message(now, header, message);
        self.commands.handle_message(now, header, message);
        self.drain_command_events(now);
        self.track_autopilot(now);
    }

    /// The next message to send, if any: the companion heartbeat when due, then commands.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        self.track_autopilot(now);
        if now >= self.next_heartbeat_at {
            // Schedule from `now`, not from the missed deadline: after a stall the daemon
            // heartbeats once and resumes its rhythm instead of bursting to catch up.
            self.next_heartbeat_at = now + self.options.heartbeat_interval;
            return Some(self.heartbeat());
        }
        let message = self.commands.poll_transmit(now);
        self.drain_command_events(now);
        message
    }

    /// The earliest instant at which `poll_transmit` or the timeouts need a turn.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_heartbeat_at;
        if let Some(command_at) = self.commands.poll_timeout() {
            at = at.min(command_at);
        }
        at
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
        let identity = self.vehicle.autopilot().map(|a| {
            (
                a.system_id,
                a.component_id,
                a.autopilot,
                format!(
                    "{:?} {} (system {}, component {})",
                    a.autopilot, a.vehicle_type, a.system_id, a.component_id
                ),
            )
        });
        let alive = self
            .vehicle
            .heartbeat_age(now)
            .is_some_and(|age| age <= self.options.heartbeat_timeout);
        match (identity, alive) {
            (Some((system, component, kind, description)), true) => {
                if !self.autopilot_present {
                    self.autopilot_present = true;
                    self.notice(Notice::AutopilotFound { description });
                }
                if self.telemetry_target != Some((system, component)) {
                    self.telemetry_target = Some((system, component));
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
                self.forget_telemetry_requests();
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
        for _ in 0..64 {
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
