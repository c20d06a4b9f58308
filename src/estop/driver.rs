//! The daemon loop's side of the e-stop: carries out what [`EmergencyStop`] decides.
//!
//! Owned by the decision loop. `handle_request` runs in the loop's first `biased` branch and
//! sends the first stop command before it returns; `turn` runs on every turn after the
//! other branches. Stop commands go straight to the link writer (`LinkHandle::send` never
//! blocks; a full writer or a down link is an error at once and the machine re-sends on
//! its own schedule).

use std::time::Instant;

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::core::{EmergencyStop, KillReply, StopCommand, StopEvent, StopStatus};
use super::{StopAck, StopAsk, StopRequest, wire};
use crate::link::MavMessage;
use crate::link::transport::{LinkEvent, LinkHandle, SendError};
use crate::safety::Whitelist;
use crate::supervisor::Supervisor;

/// Where stop commands go: the link writer in the daemon; a recorder in the tests that fly
/// the driver against the simulated autopilot in process. Must never block.
pub trait CommandSink {
    fn send_now(&self, message: &MavMessage) -> Result<(), SendError>;
}

impl CommandSink for LinkHandle {
    fn send_now(&self, message: &MavMessage) -> Result<(), SendError> {
        self.send(message)
    }
}

/// The broker connection as the MCP shell sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroundState {
    pub connected: bool,
    /// Increases with every authenticated message from a ground client.
    pub activity: u64,
}

pub struct StopDriver {
    stop: EmergencyStop,
    whitelist: Whitelist,
    status: watch::Sender<StopStatus>,
    last_activity: u64,
    /// Stop commands the link could not take (down, or its writer full).
    pub not_sent: u64,
    /// Every event the machine reports is recorded here, in the turn it is drained.
    audit: crate::audit::AuditHandle,
}

impl StopDriver {
    pub fn new(
        stop: EmergencyStop,
        whitelist: Whitelist,
        status: watch::Sender<StopStatus>,
    ) -> Self {
        Self {
            stop,
            whitelist,
            status,
            last_activity: 0,
            not_sent: 0,
            audit: crate::audit::AuditHandle::disabled(),
        }
    }

    /// Records every stop event, reset and refused reset (never waits: see `audit`).
    pub fn with_audit(mut self, audit: crate::audit::AuditHandle) -> Self {
        self.audit = audit;
        self
    }

    pub fn status(&self) -> StopStatus {
        self.stop.status()
    }

    pub fn is_latched(&self) -> bool {
        self.stop.is_latched()
    }

    /// A request from the e-stop channel: decide, send, answer, in that order.
    pub fn handle_request(
        &mut self,
        now: Instant,
        request: StopRequest,
        supervisor: &mut Supervisor,
        link: &impl CommandSink,
    ) {
        let (ok, message) = match request.ask {
            StopAsk::Stop(trigger) => {
                let first = !self.stop.is_latched();
                self.stop.handle_trigger(now, trigger);
                self.sync(now, supervisor, link);
                let status = self.stop.status();
                let doing = match (status.rung, status.pilot_in_control) {
                    (_, true) => "the pilot flies a manual mode: nothing is sent".to_string(),
                    (Some(rung), false) => format!("commanding {rung}"),
                    (None, false) => "nothing to command (disarmed on the ground)".to_string(),
                };
                (
                    true,
                    if first {
                        format!("emergency stop latched: {doing}")
                    } else {
                        format!("emergency stop was already latched: {doing}")
                    },
                )
            }
            StopAsk::Reset { identity, role } => match self.stop.handle_reset(now, &identity, role)
            {
                Ok(text) => (true, text),
                Err(text) => {
                    self.audit
                        .record(crate::audit::events::reset_refused(&identity, &text));
                    (false, text)
                }
            },
            StopAsk::Kill { trigger, code } => {
                let reply = self.stop.handle_kill(now, trigger, code, fastrand::u32(..));
                self.sync(now, supervisor, link);
                match reply {
                    KillReply::Refused(text) => (false, text),
                    KillReply::ConfirmationRequired { code, within } => (
                        true,
                        format!(
                            "the vehicle is stopping (hold); to {} send the same request again \
                             with confirmation_code {code} within {} s",
                            self.stop_kill_name(),
                            within.as_secs()
                        ),
                    ),
                    KillReply::Executing(rung) => (true, format!("{rung} commanded")),
                }
            }
        };
        self.sync(now, supervisor, link);
        if let Some(reply) = request.reply {
            let _ = reply.send(StopAck {
                ok,
                message,
                status: self.stop.status(),
            });
        }
    }

    fn stop_kill_name(&self) -> &'static str {
        "kill the vehicle (danger_kill_action)"
    }

    /// A link event, after the supervisor saw it.
    pub fn handle_link_event(&mut self, now: Instant, event: &LinkEvent, supervisor: &Supervisor) {
        match event {
            LinkEvent::Connected { .. } => self.stop.handle_autopilot_link(now, true),
            LinkEvent::Disconnected { .. } => self.stop.handle_autopilot_link(now, false),
            LinkEvent::Frame {
                header,
                message: MavMessage::COMMAND_ACK(ack),
                ..
            } if wire::is_stop_ack(ack.command) => {
                let from_autopilot = supervisor.vehicle().autopilot().is_some_and(|a| {
                    u32::from(a.system_id) == header.system_id
                        && a.component_id == header.component_id
                });
                if from_autopilot {
                    let accepted = ack.result
                        == crate::link::dialect::MavResult::MAV_RESULT_ACCEPTED
                        || ack.result == crate::link::dialect::MavResult::MAV_RESULT_IN_PROGRESS;
                    self.stop
                        .handle_mode_ack(now, accepted, &format!("{:?}", ack.result));
                }
            }
            // Refused frames never reached anyone; the supervisor reports them.
            LinkEvent::Frame { .. } | LinkEvent::Refused(_) => {}
        }
    }

    /// The ground link's state from the MCP shell.
    pub fn handle_ground(&mut self, now: Instant, ground: GroundState) {
        self.stop.handle_ground_link(now, ground.connected);
        if ground.activity != self.last_activity {
            self.last_activity = ground.activity;
            self.stop.handle_ground_activity(now);
        }
    }

    /// Every turn: observe the vehicle, send what is due, report events.
    pub fn turn(&mut self, now: Instant, supervisor: &mut Supervisor, link: &impl CommandSink) {
        self.sync(now, supervisor, link);
    }

    /// The earliest instant the machine needs a turn.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.stop.poll_timeout()
    }

    fn sync(&mut self, now: Instant, supervisor: &mut Supervisor, link: &impl CommandSink) {
        self.stop
            .handle_vehicle(now, supervisor.vehicle().view(now));
        while let Some(command) = self.stop.poll_transmit(now) {
            self.send(now, command, supervisor, link);
        }
        supervisor.set_stop(now, self.stop.motion_refusal());
        let mut changed = false;
        while let Some(event) = self.stop.poll_event() {
            changed = true;
            log_event(&event);
            self.audit.record(crate::audit::events::stop(&event));
        }
        if changed || self.status.borrow().rung_confirmed != self.stop.rung_confirmed() {
            self.status.send_replace(self.stop.status());
        }
    }

    fn send(
        &mut self,
        now: Instant,
        command: StopCommand,
        supervisor: &Supervisor,
        link: &impl CommandSink,
    ) {
        let Some(autopilot) = supervisor.vehicle().autopilot() else {
            return;
        };
        let Some(message) = wire::to_message(
            command,
            autopilot.autopilot,
            autopilot.system_id,
            autopilot.component_id,
        ) else {
            warn!(
                "e-stop: {command:?} cannot be encoded for {:?}",
                autopilot.autopilot
            );
            return;
        };
        let danger = matches!(command, StopCommand::ForceDisarm | StopCommand::Terminate);
        // The whitelist applies to the stop too (as SYSTEM), except the two danger commands:
        // they exist only when `danger_kill_action` is configured and a kill was confirmed
        // twice, and the whitelist lists them as never-sent for every other path.
        if !danger {
            let state = supervisor.vehicle().view(now);
            if let Err(violation) =
                self.whitelist
                    .check(&message, &state, crate::role::Role::System)
            {
                error!("e-stop: the whitelist refused {command:?}: {violation}");
                return;
            }
        }
        if let Err(e) = link.send_now(&message) {
            self.not_sent += 1;
            warn!("e-stop: {command:?} not sent ({e}); re-sent on the next interval");
        }
    }
}

fn log_event(event: &StopEvent) {
    // Reasons and identities come from the ground: escaped so they cannot forge log lines.
    let text = crate::audit::escape(&event.to_string()).into_owned();
    match event {
        StopEvent::Triggered { .. }
        | StopEvent::FailsafeTriggered { .. }
        | StopEvent::RungRefused { .. }
        | StopEvent::PilotTookOver { .. }
        | StopEvent::AutopilotLinkLost
        | StopEvent::KillConfirmationRequired { .. } => warn!("{text}"),
        _ => info!("{text}"),
    }
}
