//! The Core's side of the mission tools: one transfer of the mission protocol at a time
//! (`vehicle::mission`), its messages passed by the supervisor's whitelist at the caller's
//! role and sent after the supervisor's own, its end answered to the waiting call.
//!
//! The envelope decides here, with the vehicle of the turn: an upload is built for the
//! autopilot heard, read back into its route and checked point by point and leg by leg from
//! the vehicle before its first message; a downloaded list is checked as it arrives, and only
//! a list that passed is handed to the supervisor for `start_mission`/`resume_mission`
//! (which check it again from where the vehicle is when they start). An upload or a clear
//! forgets the checked list: what runs is always what was read back from the autopilot.

use std::time::Instant;

use tracing::{info, warn};

use super::{Core, Event, Handled};
use crate::control::mission::{MissionAnswer, MissionAsk};
use crate::flight::mission::{self, Route};
use crate::link::MavMessage;
use crate::link::dialect::MavMissionType;
use crate::link::event::LinkEvent;
use crate::role::{Caller, Role};
use crate::vehicle::mission::{
    AbortReason, MissionEvent, MissionOptions, MissionOutcome, MissionProtocol, MissionTarget,
    Operation, TransferId,
};

const MISSION: MavMissionType = MavMissionType::MAV_MISSION_TYPE_MISSION;

/// What the running transfer was asked for.
#[derive(Debug)]
enum Purpose {
    Upload { route: Route },
    Download { from_item: Option<u16> },
    SetCurrent,
    Clear,
}

#[derive(Debug)]
struct Running {
    id: TransferId,
    purpose: Purpose,
    /// The role its messages are checked at (the caller's).
    role: Role,
    caller: String,
    /// Why the whitelist stopped it, for the answer.
    refused: Option<String>,
}

/// The mission protocol and the transfer it runs.
pub(super) struct MissionSide {
    protocol: MissionProtocol,
    running: Option<Running>,
}

impl MissionSide {
    pub(super) fn new(options: MissionOptions) -> Self {
        Self {
            protocol: MissionProtocol::new(options),
            running: None,
        }
    }
}

impl Core {
    /// A mission tool's request: started ([`Handled::MissionTransfer`], answered later by
    /// [`Event::MissionDone`]) or refused now ([`Handled::Mission`]).
    pub(super) fn mission_ask(&mut self, now: Instant, ask: MissionAsk) -> Handled {
        match self.mission_start(now, ask) {
            Ok(id) => Handled::MissionTransfer(id),
            Err(why) => Handled::Mission(MissionAnswer::Refused(why)),
        }
    }

    fn mission_start(&mut self, now: Instant, ask: MissionAsk) -> Result<TransferId, String> {
        let Some(autopilot) = self.supervisor.vehicle().autopilot() else {
            return Err("no autopilot has been heard yet; nothing was sent".into());
        };
        if self.supervisor.vehicle().heartbeat_lost(now) {
            return Err("the autopilot's heartbeat is lost; nothing was sent".into());
        }
        let target = MissionTarget {
            system: autopilot.system_id,
            component: autopilot.component_id,
            autopilot: autopilot.autopilot,
        };
        let (operation, purpose, caller) = match ask {
            MissionAsk::Upload { steps, end, caller } => {
                let items = mission::build_items(&steps, end, target.autopilot);
                let route = self.mission_check_upload(now, &items)?;
                let home = self.supervisor.vehicle().home().map(|h| {
                    (
                        (h.latitude_deg * 1e7).round() as i32,
                        (h.longitude_deg * 1e7).round() as i32,
                        h.altitude_msl_m as f32,
                    )
                });
                (
                    Operation::Upload { items, home },
                    Purpose::Upload { route },
                    caller,
                )
            }
            MissionAsk::Download { from_item, caller } => {
                (Operation::Download, Purpose::Download { from_item }, caller)
            }
            MissionAsk::SetCurrent { seq, caller } => {
                (Operation::SetCurrent { seq }, Purpose::SetCurrent, caller)
            }
            MissionAsk::Clear { caller } => (Operation::Clear, Purpose::Clear, caller),
        };
        if self.estop_latched() && !matches!(purpose, Purpose::Download { .. }) {
            return Err(
                "the emergency stop is latched: the mission is not changed until an ADMIN \
                 resets it; nothing was sent"
                    .into(),
            );
        }
        let writes = !matches!(purpose, Purpose::Download { .. });
        if matches!(purpose, Purpose::Upload { .. } | Purpose::Clear)
            && let Some(action @ crate::flight::Action::RunMission { .. }) =
                self.supervisor.active_action()
        {
            return Err(format!(
                "{action} is flying the mission: it is not changed in flight; pause_mission                  (or land) first; nothing was sent"
            ));
        }
        if writes && caller.role < Role::Operator {
            return Err(format!(
                "changing the mission needs the OPERATOR role; {} has {}",
                caller.identity, caller.role
            ));
        }
        let id = self
            .mission
            .protocol
            .start(now, target, MISSION, operation)
            .map_err(|e| format!("{e}; nothing was sent"))?;
        if matches!(purpose, Purpose::Upload { .. } | Purpose::Clear) {
            // What runs is what is read back: an upload or a clear forgets the checked list.
            self.supervisor.set_mission(None);
        }
        info!(caller = %caller.identity, "mission {purpose:?} started as {id}");
        self.mission.running = Some(Running {
            id,
            purpose,
            role: caller.role,
            caller: who(&caller),
            refused: None,
        });
        Ok(id)
    }

    /// The route of items about to be uploaded, checked from the vehicle; a refusal names
    /// the item and the leg and says that nothing was sent.
    fn mission_check_upload(
        &self,
        now: Instant,
        items: &[crate::vehicle::mission::MissionItem],
    ) -> Result<Route, String> {
        let facts = self.supervisor.vehicle().view(now);
        let route = mission::route(items, facts.home_altitude_msl_m)
            .map_err(|e| format!("upload_mission refused: {e}; nothing was sent"))?;
        let Some(envelope) = self.supervisor.envelope() else {
            return Err(format!(
                "upload_mission refused: no safety envelope is in force ({}); nothing was sent",
                self.supervisor
                    .envelope_missing()
                    .unwrap_or("none configured")
            ));
        };
        let Some(from) = facts.position else {
            return Err(
                "upload_mission refused: the vehicle's position is not known, so the leg to \
                 the first waypoint cannot be checked; nothing was sent"
                    .into(),
            );
        };
        mission::check_route(envelope, &facts, from, &route, 0)
            .map_err(|e| format!("upload_mission refused: {e}; nothing was sent"))?;
        Ok(route)
    }

    /// Every link event: frames to the transfer, a lost link ends it.
    pub(super) fn mission_link_event(&mut self, now: Instant, event: &LinkEvent) {
        match event {
            LinkEvent::Frame { frame, .. } => {
                (self.mission.protocol).handle_message(now, &frame.header, &frame.message)
            }
            LinkEvent::Disconnected { .. } => self.mission.protocol.abort(AbortReason::LinkLost),
            _ => {}
        }
    }

    /// The transfer's timeouts (each turn).
    pub(super) fn mission_timeouts(&mut self, now: Instant) {
        if self
            .mission
            .protocol
            .poll_timeout()
            .is_some_and(|t| t <= now)
        {
            self.mission.protocol.handle_timeout(now);
        }
    }

    pub(super) fn mission_poll_timeout(&self) -> Option<Instant> {
        self.mission.protocol.poll_timeout()
    }

    /// The transfer's next message, passed by the one whitelist at the caller's role; a
    /// refused one cancels the transfer and is the answer's reason.
    pub(super) fn mission_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        loop {
            let message = self.mission.protocol.poll_transmit(now)?;
            let role = self
                .mission
                .running
                .as_ref()
                .map_or(Role::ReadOnly, |r| r.role);
            match self.supervisor.check_outgoing(now, &message, role) {
                Ok(()) => return Some(message),
                Err(violation) => {
                    warn!("mission message refused by the whitelist: {violation}");
                    if let Some(r) = &mut self.mission.running {
                        r.refused.get_or_insert(violation.to_string());
                    }
                    self.mission.protocol.cancel();
                }
            }
        }
    }

    /// The ends of transfers: audited, handed to the supervisor (a checked download) and
    /// answered.
    pub(super) fn mission_outcomes(&mut self, now: Instant) {
        while let Some(event) = self.mission.protocol.poll_event() {
            let MissionEvent::Finished { id, outcome, .. } = event else {
                continue;
            };
            let Some(running) = self.mission.running.take_if(|r| r.id == id) else {
                continue;
            };
            let answer = self.mission_answer(now, &running, outcome);
            let detail = match &answer {
                MissionAnswer::Refused(why) => format!("by {}: {why}", running.caller),
                other => format!("by {}: {}", running.caller, describe(other)),
            };
            let kind = match (&running.purpose, &answer) {
                (_, MissionAnswer::Refused(_)) => "mission_transfer_failed",
                (Purpose::Upload { .. }, _) => "mission_uploaded",
                (Purpose::Clear, _) => "mission_cleared",
                (Purpose::SetCurrent, _) => "mission_current_set",
                (Purpose::Download { .. }, _) => "mission_downloaded",
            };
            info!("{kind}: {detail}");
            if !matches!(running.purpose, Purpose::Download { .. }) {
                self.events
                    .push_back(Event::Audit(crate::audit::Event::Safety {
                        kind: kind.into(),
                        detail,
                    }));
            }
            self.events.push_back(Event::MissionDone { id, answer });
        }
    }

    fn mission_answer(
        &mut self,
        now: Instant,
        running: &Running,
        outcome: MissionOutcome,
    ) -> MissionAnswer {
        if let Some(why) = &running.refused {
            return MissionAnswer::Refused(format!(
                "the whitelist refused a message of the transfer ({why}); it was cancelled"
            ));
        }
        match (&running.purpose, outcome) {
            (Purpose::Upload { route }, MissionOutcome::Uploaded { count }) => {
                MissionAnswer::Uploaded {
                    items: count,
                    route: route.clone(),
                }
            }
            (Purpose::Download { from_item }, MissionOutcome::Downloaded { items, .. }) => {
                self.mission_downloaded(now, &items, *from_item)
            }
            (Purpose::SetCurrent, MissionOutcome::CurrentSet { seq }) => {
                MissionAnswer::CurrentSet { seq }
            }
            (Purpose::Clear, MissionOutcome::Cleared) => MissionAnswer::Cleared,
            (_, other) => MissionAnswer::Refused(other.describe(MISSION)),
        }
    }

    /// A downloaded list, read into its route and checked from the vehicle; a list that
    /// passes is the one a run may fly.
    fn mission_downloaded(
        &mut self,
        now: Instant,
        items: &[crate::vehicle::mission::MissionItem],
        from_item: Option<u16>,
    ) -> MissionAnswer {
        let facts = self.supervisor.vehicle().view(now);
        let current = self.supervisor.mission().and_then(|(_, c)| c);
        let route = mission::route(items, facts.home_altitude_msl_m);
        let verdict = match (&route, self.supervisor.envelope(), facts.position) {
            (Err(why), _, _) => Err(why.clone()),
            (Ok(_), None, _) => Err("no safety envelope is in force".into()),
            (Ok(_), _, None) => Err("the vehicle's position is not known".into()),
            (Ok(route), Some(envelope), Some(from)) => {
                let first = from_item.or(current).unwrap_or(0);
                mission::check_route(envelope, &facts, from, route, first)
            }
        };
        self.supervisor.set_mission(match (&route, &verdict) {
            (Ok(route), Ok(())) => Some(route.clone()),
            _ => None,
        });
        MissionAnswer::Downloaded {
            items: items.len() as u16,
            route,
            verdict,
            current,
        }
    }
}

fn who(caller: &Caller) -> String {
    format!("{} ({})", caller.identity, caller.role)
}

fn describe(answer: &MissionAnswer) -> String {
    match answer {
        MissionAnswer::Uploaded { items, route } => format!(
            "{items} items, {} waypoints, {:.0} m",
            route.points.len(),
            route.length_m
        ),
        MissionAnswer::Downloaded { items, verdict, .. } => format!(
            "{items} items, {}",
            match verdict {
                Ok(()) => "inside the envelope".to_string(),
                Err(why) => format!("refused: {why}"),
            }
        ),
        MissionAnswer::CurrentSet { seq } => format!("current item {seq}"),
        MissionAnswer::Cleared => "cleared".into(),
        MissionAnswer::Refused(why) => why.clone(),
    }
}
