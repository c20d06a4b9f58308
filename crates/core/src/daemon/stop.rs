//! The Core's e-stop side: carries out what [`EmergencyStop`](crate::estop::EmergencyStop)
//! decides. Its commands are encoded for the autopilot heard, passed by the supervisor's
//! whitelist (the one whitelist, as SYSTEM) and queued to go first in `poll_transmit`.

use std::time::Instant;

use tracing::{error, info, warn};

use super::{Core, Event};
use crate::estop::core::{KillReply, StopCommand, StopEvent};
use crate::estop::{StopAck, StopAsk, wire};
use crate::link::MavMessage;
use crate::link::event::LinkEvent;

impl Core {
    /// A request from the e-stop channel: decided, its commands queued first, answered.
    pub(super) fn handle_stop(&mut self, now: Instant, ask: StopAsk) -> StopAck {
        let (ok, message) = match ask {
            StopAsk::Stop(trigger) => {
                let first = !self.stop.is_latched();
                self.stop.handle_trigger(now, trigger);
                self.sync_stop(now);
                let status = self.stop.status();
                let doing = match (status.rung, status.pilot_in_control) {
                    (_, true) => "the pilot flies a manual mode: nothing is sent".to_string(),
                    (Some(rung), false) => format!("commanding {rung}"),
                    (None, false) => "nothing to command (disarmed on the ground)".to_string(),
                };
                let latched = if first {
                    "latched"
                } else {
                    "was already latched"
                };
                (true, format!("emergency stop {latched}: {doing}"))
            }
            StopAsk::Reset { identity, role } => match self.stop.handle_reset(now, &identity, role)
            {
                Ok(text) => (true, text),
                Err(text) => {
                    let record = crate::audit::events::reset_refused(&identity, &text);
                    self.events.push_back(Event::Audit(record));
                    (false, text)
                }
            },
            StopAsk::Kill { trigger, code } => {
                let reply = self.stop.handle_kill(now, trigger, code, fastrand::u32(..));
                self.sync_stop(now);
                match reply {
                    KillReply::Refused(text) => (false, text),
                    KillReply::ConfirmationRequired { code, within } => (
                        true,
                        format!(
                            "the vehicle is stopping (hold); to kill the vehicle \
                             (danger_kill_action) send the same request again \
                             with confirmation_code {code} within {} s",
                            within.as_secs()
                        ),
                    ),
                    KillReply::Executing(rung) => (true, format!("{rung} commanded")),
                }
            }
        };
        self.sync_stop(now);
        StopAck {
            ok,
            message,
            status: self.stop.status(),
        }
    }

    /// A link event, after the supervisor saw it: the link's state, and the autopilot's
    /// answers to stop commands.
    pub(super) fn stop_link_event(&mut self, now: Instant, event: &LinkEvent) {
        match event {
            LinkEvent::Connected { .. } => self.stop.handle_autopilot_link(now, true),
            LinkEvent::Disconnected { .. } => self.stop.handle_autopilot_link(now, false),
            LinkEvent::Frame { frame, .. } => {
                let MavMessage::COMMAND_ACK(ack) = &frame.message else {
                    return;
                };
                if !wire::is_stop_ack(ack.command) {
                    return;
                }
                let header = &frame.header;
                let from_autopilot = self.supervisor.vehicle().autopilot().is_some_and(|a| {
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
            LinkEvent::Refused(_) => {}
        }
    }

    /// Observe the vehicle, queue what is due, tell the supervisor, report events.
    pub(super) fn sync_stop(&mut self, now: Instant) {
        self.stop
            .handle_vehicle(now, self.supervisor.vehicle().view(now));
        while let Some(command) = self.stop.poll_transmit(now) {
            if let Some(message) = self.stop_message(now, command) {
                self.stop_out.push_back(message);
            }
        }
        self.supervisor.set_stop(now, self.stop.motion_refusal());
        let mut changed = false;
        while let Some(event) = self.stop.poll_event() {
            changed = true;
            log_event(&event);
            self.events
                .push_back(Event::Audit(crate::audit::events::stop(&event)));
        }
        // The whole status (its history cloned) only when something changed: this runs on
        // every turn.
        if changed || self.stop_published.rung_confirmed != self.stop.rung_confirmed() {
            let status = self.stop.status();
            self.stop_published = status.clone();
            self.events.push_back(Event::StopStatus(status));
        }
    }

    /// A stop command as the message for the autopilot heard, if the whitelist lets it go.
    fn stop_message(&self, now: Instant, command: StopCommand) -> Option<MavMessage> {
        let autopilot = self.supervisor.vehicle().autopilot()?;
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
            return None;
        };
        let danger = matches!(command, StopCommand::ForceDisarm | StopCommand::Terminate);
        // The whitelist applies to the stop too (as SYSTEM), except the two danger commands:
        // they exist only when `danger_kill_action` is configured and a kill was confirmed
        // twice, and the whitelist lists them as never-sent for every other path.
        if !danger
            && let Err(violation) =
                self.supervisor
                    .check_outgoing(now, &message, crate::role::Role::System)
        {
            error!("e-stop: the whitelist refused {command:?}: {violation}");
            return None;
        }
        Some(message)
    }
}

fn log_event(event: &StopEvent) {
    // Reasons and identities come from the ground: escaped so they cannot forge log lines.
    let text = crate::escape::escape(&event.to_string()).into_owned();
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
