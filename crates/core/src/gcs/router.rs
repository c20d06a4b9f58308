//! The ground-station router (sans-IO): routing by system and component id, and the gate
//! every frame from a ground station passes.
//!
//! Routing follows mavlink-router's `Endpoint::accept_msg` (src/endpoint.cpp): an endpoint
//! learns the (system, component) ids it has sent from; a frame without a target, or with
//! target system 0, goes to every endpoint; a targeted frame goes only to the endpoints that
//! have been heard from its target (component 0 meaning any component of that system).
//! Unlike mavlink-router, frames of one ground station never reach another one or the
//! autopilot unchecked: the daemon is the gate.
//!
//! What a ground station sends is decided here, with the vehicle's state of that instant
//! (`Facts`), in this order:
//! 1. its heartbeat and radio status are absorbed (the daemon heartbeats for the companion);
//! 2. a frame claiming the vehicle's system id, or addressed to another system, is refused;
//! 3. everything from a `monitor` endpoint is refused;
//! 4. a flight command (`COMMAND_LONG`/`COMMAND_INT`, `SET_MODE`, a guided waypoint, that is
//!    a `MISSION_ITEM(_INT)` with `current = 2`) becomes an [`Action`] for the control path,
//!    where the supervisor checks it as it checks an MCP tool call (envelope, whitelist,
//!    state); before that, here, the e-stop latch, the control lease and the endpoint's
//!    authority;
//! 5. streamed setpoints, stick input and the mission protocol are refused with what to use;
//! 6. anything else passes only if [`Whitelist::check`] allows it at the endpoint's
//!    authority (parameter reads and, for `ADMIN`, the allowlisted parameter writes); it is
//!    forwarded to the autopilot as the daemon, and checked again at the writer.
//!
//! Nothing here keeps a clock or does IO; `now` is an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mavlink::Message;

use crate::config::{GcsEndpointConfig, GcsRole};
use crate::flight::Action;
use crate::link::MavHeader;
use crate::link::dialect::{self, MavCmd, MavFrame, MavMessage, MavResult};
use crate::role::Role;
use crate::safety::{VehicleView, Whitelist};
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;

/// (system, component) pairs an endpoint may be known by; more are not learnt (a flood of
/// forged ids cannot grow the table).
pub const SEEN_IDS_MAX: usize = 16;
/// A refused non-command message is told to its ground station (STATUSTEXT) and audited at
/// most once per message id in this interval; commands are always answered.
pub const REFUSAL_NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// A refusal longer than this many 50-character chunks is cut (400 characters).
pub const STATUSTEXT_CHUNKS_MAX: usize = 8;

/// The sentence every refused flight message ends with: what a ground station may do.
pub const ALLOWED_SUMMARY: &str = "a ground station may arm, disarm, take off, go to a point \
     (DO_REPOSITION as COMMAND_INT, or a guided MISSION_ITEM_INT with current = 2), set the \
     speed or heading, hold (LOITER/BRAKE), land and return (LAND/RTL), read parameters, and \
     with ADMIN authority write the allowlisted ones";

/// What the gate knows of the vehicle and the daemon at this instant.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub view: &'a VehicleView,
    /// The vehicle's MAVLink system id (the daemon's `vehicle.system_id`).
    pub vehicle_system_id: u8,
    /// The e-stop is latched: its ladder alone commands the vehicle.
    pub estop_latched: bool,
    /// The subject holding the MCP control lease, if anyone does.
    pub lease_holder: Option<&'a str>,
}

/// Whom an answer goes to, and how the ground station expects it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    /// `COMMAND_ACK` for a command.
    CommandAck {
        command: MavCmd,
        target_system: u8,
        target_component: u8,
    },
    /// `MISSION_ACK` for a guided waypoint.
    MissionAck {
        target_system: u8,
        target_component: u8,
    },
}

impl Reply {
    /// The answer: accepted, or denied with the reason told separately (STATUSTEXT).
    pub fn message(self, accepted: bool) -> MavMessage {
        match self {
            Reply::CommandAck {
                command,
                target_system,
                target_component,
            } => MavMessage::COMMAND_ACK(dialect::COMMAND_ACK_DATA {
                command,
                result: if accepted {
                    MavResult::MAV_RESULT_ACCEPTED
                } else {
                    MavResult::MAV_RESULT_DENIED
                },
                target_system,
                target_component,
                ..Default::default()
            }),
            Reply::MissionAck {
                target_system,
                target_component,
            } => MavMessage::MISSION_ACK(dialect::MISSION_ACK_DATA {
                target_system,
                target_component,
                mavtype: if accepted {
                    dialect::MavMissionResult::MAV_MISSION_ACCEPTED
                } else {
                    dialect::MavMissionResult::MAV_MISSION_DENIED
                },
                ..Default::default()
            }),
        }
    }
}

/// What becomes of one frame from a ground station.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Learnt from (its ids), nothing forwarded: its heartbeat, its radio's status.
    Absorbed,
    /// Passed the whitelist at the endpoint's authority: forwarded to the autopilot.
    Forward,
    /// A flight command for the control path, attributed to the endpoint.
    Command { action: Action, reply: Reply },
    /// Refused; `reason` says what would be allowed. `reply` answers a command; `notify`
    /// says whether to tell the ground station and audit it now (the budget).
    Refused {
        reason: String,
        reply: Option<Reply>,
        notify: bool,
    },
}

/// What one endpoint carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndpointCounters {
    /// Frames of the vehicle routed to it.
    pub to_endpoint: u64,
    /// Frames it sent.
    pub from_endpoint: u64,
    /// Of those, forwarded to the autopilot.
    pub forwarded: u64,
    /// Of those, flight commands handed to the control path.
    pub commands: u64,
    /// Of those, refused.
    pub refused: u64,
}

#[derive(Debug)]
struct EndpointState {
    name: String,
    role: GcsRole,
    authority: Role,
    seen: Vec<(u8, u8)>,
    notified: HashMap<u32, Instant>,
    counters: EndpointCounters,
}

/// The router of every ground-station endpoint.
#[derive(Debug)]
pub struct Router {
    endpoints: Vec<EndpointState>,
    whitelist: Whitelist,
}

impl Router {
    pub fn new(endpoints: &[GcsEndpointConfig], whitelist: Whitelist) -> Router {
        Router {
            endpoints: endpoints
                .iter()
                .map(|e| EndpointState {
                    name: e.name.clone(),
                    role: e.role,
                    authority: e.authority(),
                    seen: Vec::new(),
                    notified: HashMap::new(),
                    counters: EndpointCounters::default(),
                })
                .collect(),
            whitelist,
        }
    }

    /// The whitelist's bounds follow the envelope in force (an ADMIN's tightening).
    pub fn set_whitelist(&mut self, whitelist: Whitelist) {
        self.whitelist = whitelist;
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn name(&self, endpoint: usize) -> &str {
        self.endpoints
            .get(endpoint)
            .map_or("?", |e| e.name.as_str())
    }

    pub fn authority(&self, endpoint: usize) -> Role {
        self.endpoints
            .get(endpoint)
            .map_or(Role::Public, |e| e.authority)
    }

    pub fn counters(&self, endpoint: usize) -> EndpointCounters {
        self.endpoints
            .get(endpoint)
            .map(|e| e.counters)
            .unwrap_or_default()
    }

    /// The (system, component) ids heard from an endpoint.
    pub fn seen(&self, endpoint: usize) -> &[(u8, u8)] {
        self.endpoints
            .get(endpoint)
            .map_or(&[][..], |e| e.seen.as_slice())
    }

    /// A connection of the endpoint ended: what it was known by is forgotten (a new ground
    /// station may come with other ids).
    pub fn handle_disconnected(&mut self, endpoint: usize) {
        if let Some(e) = self.endpoints.get_mut(endpoint) {
            e.seen.clear();
        }
    }

    /// The endpoints a frame of the vehicle goes to (mavlink-router's `accept_msg`), pushed
    /// onto `out`, which is cleared first.
    pub fn route_from_autopilot(&mut self, message: &MavMessage, out: &mut Vec<usize>) {
        out.clear();
        let target_system = message.target_system_id().unwrap_or(0);
        let target_component = message.target_component_id().unwrap_or(0);
        for (index, e) in self.endpoints.iter_mut().enumerate() {
            let accepted = target_system == 0
                || if target_component == 0 {
                    e.seen.iter().any(|(s, _)| *s == target_system)
                } else {
                    e.seen.contains(&(target_system, target_component))
                };
            if accepted {
                e.counters.to_endpoint += 1;
                out.push(index);
            }
        }
    }

    /// Decides one frame from a ground station.
    pub fn handle_from_endpoint(
        &mut self,
        now: Instant,
        endpoint: usize,
        header: &MavHeader,
        message: &MavMessage,
        facts: &Facts<'_>,
    ) -> Decision {
        let Some(e) = self.endpoints.get_mut(endpoint) else {
            return Decision::Absorbed;
        };
        e.counters.from_endpoint += 1;
        let source = (
            u8::try_from(header.system_id).unwrap_or(u8::MAX),
            header.component_id,
        );
        let decision = decide(e, &self.whitelist, source, message, facts);
        let decision = match decision {
            Decision::Refused {
                reason,
                reply,
                notify: _,
            } => {
                // Commands are always answered; other refusals within the budget.
                let id = message.message_id();
                let notify = reply.is_some()
                    || e.notified.get(&id).is_none_or(|at| {
                        now.saturating_duration_since(*at) >= REFUSAL_NOTICE_INTERVAL
                    });
                if notify {
                    e.notified.insert(id, now);
                }
                Decision::Refused {
                    reason,
                    reply,
                    notify,
                }
            }
            other => other,
        };
        match &decision {
            Decision::Absorbed => {}
            Decision::Forward => e.counters.forwarded += 1,
            Decision::Command { .. } => e.counters.commands += 1,
            Decision::Refused { .. } => e.counters.refused += 1,
        }
        decision
    }
}

fn refused(reason: String, reply: Option<Reply>) -> Decision {
    Decision::Refused {
        reason,
        reply,
        notify: true,
    }
}

fn decide(
    e: &mut EndpointState,
    whitelist: &Whitelist,
    source: (u8, u8),
    message: &MavMessage,
    facts: &Facts<'_>,
) -> Decision {
    if source.0 == facts.vehicle_system_id {
        return refused(
            format!(
                "gcs:{} sent as system {}, the vehicle's own id: a ground station must use \
                 another (255 is usual); nothing from it is passed",
                e.name, source.0
            ),
            None,
        );
    }
    if !e.seen.contains(&source) && e.seen.len() < SEEN_IDS_MAX {
        e.seen.push(source);
    }
    if matches!(
        message,
        MavMessage::HEARTBEAT(_) | MavMessage::RADIO_STATUS(_)
    ) {
        return Decision::Absorbed;
    }
    let reply = reply_of(message, source);
    if let Some(target) = message.target_system_id()
        && target != 0
        && target != facts.vehicle_system_id
    {
        return refused(
            format!(
                "{} is addressed to system {target}; the vehicle behind this daemon is system {}",
                message.message_name(),
                facts.vehicle_system_id
            ),
            reply,
        );
    }
    if e.role == GcsRole::Monitor {
        return refused(
            format!(
                "gcs:{} is a monitor endpoint: telemetry out, nothing in ({} not passed); \
                 set role = \"gcs\" in its [[gcs_endpoint]] to command",
                e.name,
                message.message_name()
            ),
            reply,
        );
    }
    match flight_action(message, facts.view) {
        Some(Ok(action)) => {
            let Some(reply) = reply else {
                return refused("a flight command without a reply target".into(), None);
            };
            if facts.estop_latched {
                return refused(
                    format!(
                        "{action} refused: the emergency stop is latched; nothing from a ground \
                         station moves the vehicle until an ADMIN resets the stop \
                         (reset_emergency_stop)"
                    ),
                    Some(reply),
                );
            }
            if e.authority < Role::Operator {
                return refused(
                    format!(
                        "{action} refused: gcs:{} has authority {}; flight commands need \
                         OPERATOR (set authority in its [[gcs_endpoint]])",
                        e.name, e.authority
                    ),
                    Some(reply),
                );
            }
            if let Some(holder) = facts.lease_holder {
                return refused(
                    format!(
                        "{action} refused: {holder} holds the control lease over MCP; a ground \
                         station may command only while nobody holds it"
                    ),
                    Some(reply),
                );
            }
            if let Err(why) = action.validate() {
                return refused(format!("{action} refused: {why}"), Some(reply));
            }
            Decision::Command { action, reply }
        }
        Some(Err(why)) => refused(format!("{why}; {ALLOWED_SUMMARY}"), reply),
        None => {
            if let Some(why) = never_passed(message) {
                return refused(format!("{why}; {ALLOWED_SUMMARY}"), reply);
            }
            if facts.estop_latched && matches!(message, MavMessage::PARAM_SET(_)) {
                return refused(
                    "PARAM_SET refused: the emergency stop is latched; parameters are not \
                     written until it is reset"
                        .into(),
                    reply,
                );
            }
            match whitelist.check(message, facts.view, e.authority) {
                Ok(()) => Decision::Forward,
                Err(violation) => refused(
                    format!("{violation} (gcs:{} has authority {})", e.name, e.authority),
                    reply,
                ),
            }
        }
    }
}

/// The answer a ground station expects for this message, if any.
#[allow(deprecated)] // SET_MODE, MISSION_ITEM: what ground stations still send
fn reply_of(message: &MavMessage, source: (u8, u8)) -> Option<Reply> {
    match message {
        MavMessage::COMMAND_LONG(c) => Some(Reply::CommandAck {
            command: c.command,
            target_system: source.0,
            target_component: source.1,
        }),
        MavMessage::COMMAND_INT(c) => Some(Reply::CommandAck {
            command: c.command,
            target_system: source.0,
            target_component: source.1,
        }),
        MavMessage::SET_MODE(_) => Some(Reply::CommandAck {
            command: MavCmd::MAV_CMD_DO_SET_MODE,
            target_system: source.0,
            target_component: source.1,
        }),
        MavMessage::MISSION_ITEM(_)
        | MavMessage::MISSION_ITEM_INT(_)
        | MavMessage::MISSION_COUNT(_)
        | MavMessage::MISSION_CLEAR_ALL(_)
        | MavMessage::MISSION_SET_CURRENT(_)
        | MavMessage::MISSION_WRITE_PARTIAL_LIST(_) => Some(Reply::MissionAck {
            target_system: source.0,
            target_component: source.1,
        }),
        _ => None,
    }
}

/// Messages that move the vehicle outside the control path, never passed.
fn never_passed(message: &MavMessage) -> Option<String> {
    let name = message.message_name();
    match message.message_id() {
        84 | 86 | 82 | 83 => Some(format!(
            "{name} is not passed: streamed setpoints bypass the envelope's path check"
        )),
        69 | 70 => Some(format!(
            "{name} is not passed: stick input belongs to the RC pilot"
        )),
        id if (37..=47).contains(&id) || id == 51 || id == 73 => Some(format!(
            "{name} is not passed: missions are not uploaded, read or started through the \
             daemon (only a guided waypoint, MISSION_ITEM_INT with current = 2, is flown)"
        )),
        _ => None,
    }
}

/// A flight command as an action: `None` when the message is not a flight command at all,
/// `Err` when it is one the daemon does not fly (with why).
#[allow(deprecated)] // SET_MODE, MISSION_ITEM: what ground stations still send
fn flight_action(message: &MavMessage, view: &VehicleView) -> Option<Result<Action, String>> {
    let (command, p, position) = match message {
        MavMessage::COMMAND_LONG(c) => (
            c.command,
            [
                c.param1, c.param2, c.param3, c.param4, c.param5, c.param6, c.param7,
            ],
            None,
        ),
        MavMessage::COMMAND_INT(c) => (
            c.command,
            [c.param1, c.param2, c.param3, c.param4, 0.0, 0.0, c.z],
            Some((f64::from(c.x) / 1e7, f64::from(c.y) / 1e7, c.z, c.frame)),
        ),
        MavMessage::SET_MODE(m) => {
            let Some(kind) = view.autopilot else {
                return Some(Err(
                    "SET_MODE refused: the autopilot is not known yet, so its modes cannot be \
                     decoded"
                        .into(),
                ));
            };
            let mode = FlightMode::decode(kind, m.base_mode.bits(), m.custom_mode);
            return Some(mode_action(kind, mode));
        }
        MavMessage::MISSION_ITEM_INT(m) if m.current == 2 => {
            return Some(guided_waypoint(
                m.command,
                f64::from(m.x) / 1e7,
                f64::from(m.y) / 1e7,
                m.z,
                m.frame,
                view,
            ));
        }
        MavMessage::MISSION_ITEM(m) if m.current == 2 => {
            return Some(guided_waypoint(
                m.command,
                f64::from(m.x),
                f64::from(m.y),
                m.z,
                m.frame,
                view,
            ));
        }
        _ => return None,
    };
    let name = format!("{} {command:?}", message.message_name());
    let action = match command {
        MavCmd::MAV_CMD_COMPONENT_ARM_DISARM => {
            if p[1] != 0.0 {
                Err(format!(
                    "{name} refused: forced arming or disarming (param2 = {}) is never passed",
                    p[1]
                ))
            } else if p[0] == 1.0 {
                Ok(Action::Arm)
            } else if p[0] == 0.0 {
                Ok(Action::Disarm)
            } else {
                Err(format!(
                    "{name} refused: param1 must be 1 (arm) or 0 (disarm)"
                ))
            }
        }
        MavCmd::MAV_CMD_NAV_TAKEOFF => {
            let altitude_m = match view.autopilot {
                // PX4 reads param7 above mean sea level.
                Some(AutopilotKind::Px4) => match view.home_altitude_msl_m {
                    Some(home) => f64::from(p[6]) - home,
                    None => {
                        return Some(Err(format!(
                            "{name} refused: PX4 takes off to an altitude above sea level and \
                             home's altitude is not known yet"
                        )));
                    }
                },
                _ => f64::from(p[6]),
            };
            Ok(Action::Takeoff { altitude_m })
        }
        MavCmd::MAV_CMD_NAV_LAND => Ok(Action::Land),
        MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH => Ok(Action::ReturnHome),
        MavCmd::MAV_CMD_DO_REPOSITION => match position {
            Some((latitude_deg, longitude_deg, z, frame)) => altitude_above_home(z, frame, view)
                .map(|altitude_m| Action::Goto {
                    latitude_deg,
                    longitude_deg,
                    altitude_m,
                    speed_m_s: (p[0] > 0.0).then_some(f64::from(p[0])),
                }),
            None => Err(format!(
                "{name} refused: DO_REPOSITION is taken only as COMMAND_INT (its position in \
                 1e-7 degrees)"
            )),
        },
        MavCmd::MAV_CMD_DO_CHANGE_SPEED => {
            if p[0] == 2.0 || p[0] == 3.0 {
                Err(format!(
                    "{name} refused: only the horizontal speed (type 0 or 1) is changed"
                ))
            } else if p[1] > 0.0 {
                Ok(Action::SetSpeed {
                    speed_m_s: f64::from(p[1]),
                })
            } else {
                Err(format!(
                    "{name} refused: the speed (param2) must be above 0"
                ))
            }
        }
        MavCmd::MAV_CMD_CONDITION_YAW => {
            if p[3] == 0.0 {
                Ok(Action::SetHeading {
                    heading_deg: f64::from(p[0]),
                })
            } else {
                Err(format!(
                    "{name} refused: only an absolute heading (param4 = 0) is taken"
                ))
            }
        }
        MavCmd::MAV_CMD_DO_SET_MODE => {
            let Some(kind) = view.autopilot else {
                return Some(Err(format!(
                    "{name} refused: the autopilot is not known yet, so its modes cannot be \
                     decoded"
                )));
            };
            match FlightMode::from_set_mode_params(kind, &p) {
                Some(mode) => mode_action(kind, mode),
                None => Err(format!(
                    "{name} refused: the mode parameters must be non-negative numbers"
                )),
            }
        }
        // Every other command is not a flight command: the whitelist decides it.
        _ => return None,
    };
    Some(action)
}

fn mode_action(kind: AutopilotKind, mode: FlightMode) -> Result<Action, String> {
    match mode {
        FlightMode::Loiter | FlightMode::Brake => Ok(Action::Hold),
        FlightMode::Land => Ok(Action::Land),
        FlightMode::Rtl | FlightMode::SmartRtl => Ok(Action::ReturnHome),
        FlightMode::Guided => Err(format!(
            "mode {} refused: the daemon enters it itself for a goto; send the goto \
             (DO_REPOSITION, or a guided MISSION_ITEM_INT), or hold with LOITER/BRAKE",
            mode.name(kind)
        )),
        other => Err(format!(
            "mode {} refused: ground stations may choose only the hold, land and return \
             modes; the pilot's own modes belong to the RC pilot",
            other.name(kind)
        )),
    }
}

#[allow(deprecated)]
fn guided_waypoint(
    command: MavCmd,
    latitude_deg: f64,
    longitude_deg: f64,
    z: f32,
    frame: MavFrame,
    view: &VehicleView,
) -> Result<Action, String> {
    if command != MavCmd::MAV_CMD_NAV_WAYPOINT {
        return Err(format!(
            "guided MISSION_ITEM with {command:?} refused: a guided waypoint is a \
             MAV_CMD_NAV_WAYPOINT"
        ));
    }
    altitude_above_home(z, frame, view).map(|altitude_m| Action::Goto {
        latitude_deg,
        longitude_deg,
        altitude_m,
        speed_m_s: None,
    })
}

/// A target altitude as the daemon's actions take it: above home.
#[allow(deprecated)]
fn altitude_above_home(z: f32, frame: MavFrame, view: &VehicleView) -> Result<f64, String> {
    match frame {
        MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT | MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT => {
            Ok(f64::from(z))
        }
        MavFrame::MAV_FRAME_GLOBAL | MavFrame::MAV_FRAME_GLOBAL_INT => {
            match view.home_altitude_msl_m {
                Some(home) => Ok(f64::from(z) - home),
                None => Err(
                    "an altitude above sea level cannot be checked before home's altitude is \
                     known; send it relative to home (MAV_FRAME_GLOBAL_RELATIVE_ALT_INT)"
                        .into(),
                ),
            }
        }
        other => Err(format!(
            "frame {other:?} refused: positions are taken relative to home \
             (MAV_FRAME_GLOBAL_RELATIVE_ALT_INT) or above sea level (MAV_FRAME_GLOBAL_INT)"
        )),
    }
}

/// The text of a refusal as `STATUSTEXT`s: MAVLink 2 chunks of 50 characters sharing an id
/// (`id`, `chunk_seq`), as ArduPilot sends long texts; at most [`STATUSTEXT_CHUNKS_MAX`] chunks.
pub fn statustext(id: u16, text: &str) -> Vec<MavMessage> {
    let bytes = text.as_bytes();
    let chunks: Vec<&[u8]> = bytes.chunks(50).take(STATUSTEXT_CHUNKS_MAX).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(seq, chunk)| {
            let mut buf = [0u8; 50];
            buf[..chunk.len()].copy_from_slice(chunk);
            MavMessage::STATUSTEXT(dialect::STATUSTEXT_DATA {
                severity: dialect::MavSeverity::MAV_SEVERITY_WARNING,
                text: buf.into(),
                id,
                chunk_seq: u8::try_from(seq).unwrap_or(u8::MAX),
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
