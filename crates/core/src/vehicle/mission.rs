//! The MAVLink mission protocol (the "mission microservice") as a sans-IO state machine, the
//! ground side of it: upload, download, clear and set-current for the mission, fence and rally
//! lists, and the progress of a running mission from `MISSION_CURRENT`/`MISSION_ITEM_REACHED`.
//!
//! # API
//! [`MissionProtocol::new`]`(options)`, then [`MissionProtocol::start`]`(now, target, type,
//! operation)`; feed every decoded message to [`MissionProtocol::handle_message`], send what
//! [`MissionProtocol::poll_transmit`] returns, call [`MissionProtocol::handle_timeout`] at
//! [`MissionProtocol::poll_timeout`], and drain [`MissionProtocol::poll_event`] for
//! [`MissionEvent::Progress`] and the one [`MissionEvent::Finished`] of each transfer.
//! [`MissionProgress`] follows a running mission (no transfer needed).
//! Items are the caller's, numbered from 0: ArduPilot's home slot at index 0 of the mission
//! list (`AP_Mission`: command 0 is home) is added on upload and taken off on download here,
//! and PX4 has none, so callers never see the difference.
//!
//! # The protocol, as the vehicle drives it
//! Upload: `MISSION_COUNT` → the vehicle asks `MISSION_REQUEST_INT(seq)` (or the legacy
//! `MISSION_REQUEST`) for each item, in any order and as often as it likes → we answer each
//! with `MISSION_ITEM_INT(seq)` → the vehicle ends with `MISSION_ACK` (accepted or an error).
//! Download: `MISSION_REQUEST_LIST` → `MISSION_COUNT(n)` → we ask `MISSION_REQUEST_INT(seq)` for
//! 0..n, one at a time → `MISSION_ITEM_INT(seq)` each → we end with `MISSION_ACK(accepted)`.
//! Clear: `MISSION_CLEAR_ALL` → `MISSION_ACK`. Set current: `MISSION_SET_CURRENT(seq)` →
//! `MISSION_CURRENT(seq)` (ArduPilot's `GCS_Common.cpp` and PX4's `mavlink_mission.cpp` both
//! answer with the current item; neither ACKs it otherwise).
//!
//! # Timeouts and retries
//! Each stage waits `item_timeout` for the vehicle's next message, then re-sends what it last
//! sent (the count, the item last asked for, the request, the clear) up to `retries_max`
//! times; progress resets the count. Duplicated or out-of-order requests are answered (the
//! vehicle decides the order); duplicated items in a download are dropped; an item ahead of
//! the one asked for is dropped and the expected one asked again; `MAV_MISSION_INVALID_SEQUENCE`
//! during an upload is not an end (ArduPilot keeps receiving after it); a request beyond the count,
//! or an ACK "accepted" before every item was asked for (a partial upload), ends the transfer
//! with a cancel sent to the vehicle. Messages from another system, for another mission type
//! or addressed to another ground station (a GCS's own transfer) are ignored and counted.

// MISSION_SET_CURRENT, MISSION_REQUEST and MISSION_ITEM are deprecated in common.xml, yet
// ArduPilot and PX4 still answer the first and may send the others; the *_INT frames are the
// ones ground stations and both autopilots use in mission items.
#![allow(deprecated)]

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::link::dialect::{
    MISSION_ACK_DATA, MISSION_CLEAR_ALL_DATA, MISSION_COUNT_DATA, MISSION_ITEM_DATA,
    MISSION_ITEM_INT_DATA, MISSION_REQUEST_INT_DATA, MISSION_REQUEST_LIST_DATA,
    MISSION_SET_CURRENT_DATA, MavCmd, MavFrame,
};
pub use crate::link::dialect::{MavMissionResult, MavMissionType};
use crate::link::{MavHeader, MavMessage};

use super::modes::AutopilotKind;

/// Most items in one list; a larger plan or a vehicle announcing more is refused (ArduPilot
/// keeps about 700 mission items on a 16 KB storage board, PX4's dataman 2000).
pub const ITEMS_MAX: u16 = 2000;

/// One mission (or fence, or rally) item, as `MISSION_ITEM_INT` carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MissionItem {
    pub command: MavCmd,
    pub frame: MavFrame,
    pub params: [f32; 4],
    /// Latitude in 1e-7 degrees for global frames (local: metres × 1e4).
    pub x: i32,
    /// Longitude in 1e-7 degrees for global frames.
    pub y: i32,
    /// Altitude in metres, in the frame's reference.
    pub z: f32,
    pub autocontinue: bool,
}

impl MissionItem {
    /// ArduPilot's slot 0 (home): a waypoint at `home` (lat, lon in 1e-7°, altitude AMSL in
    /// metres), or all zeros when home is unknown. ArduCopter keeps its own home in that
    /// slot (`AP_Mission::write_home_to_storage` on arming), so what is uploaded there is a
    /// placeholder, as Mission Planner and MAVProxy send it.
    pub fn home_placeholder(home: Option<(i32, i32, f32)>) -> MissionItem {
        let (x, y, z) = home.unwrap_or((0, 0, 0.0));
        MissionItem {
            command: MavCmd::MAV_CMD_NAV_WAYPOINT,
            frame: MavFrame::MAV_FRAME_GLOBAL,
            params: [0.0; 4],
            x,
            y,
            z,
            autocontinue: true,
        }
    }

    fn from_int(m: &MISSION_ITEM_INT_DATA) -> MissionItem {
        MissionItem {
            command: m.command,
            frame: m.frame,
            params: [m.param1, m.param2, m.param3, m.param4],
            x: m.x,
            y: m.y,
            z: m.z,
            autocontinue: m.autocontinue != 0,
        }
    }

    /// The legacy float item: degrees become 1e-7° integers in global frames.
    fn from_float(m: &MISSION_ITEM_DATA) -> MissionItem {
        let global = frame_is_global(m.frame);
        let scale = |v: f32| -> i32 {
            let scaled = if global {
                f64::from(v) * 1e7
            } else {
                f64::from(v) * 1e4
            };
            // `as` saturates and maps NaN to 0: bad input cannot panic.
            scaled.round() as i32
        };
        MissionItem {
            command: m.command,
            frame: m.frame,
            params: [m.param1, m.param2, m.param3, m.param4],
            x: scale(m.x),
            y: scale(m.y),
            z: m.z,
            autocontinue: m.autocontinue != 0,
        }
    }
}

/// True for the frames whose x/y are latitude/longitude.
pub fn frame_is_global(frame: MavFrame) -> bool {
    use MavFrame as F;
    matches!(
        frame,
        F::MAV_FRAME_GLOBAL
            | F::MAV_FRAME_GLOBAL_RELATIVE_ALT
            | F::MAV_FRAME_GLOBAL_INT
            | F::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
            | F::MAV_FRAME_GLOBAL_TERRAIN_ALT
            | F::MAV_FRAME_GLOBAL_TERRAIN_ALT_INT
    )
}

/// Whether `autopilot` keeps home at index 0 of `mission_type`'s list: ArduPilot's mission
/// does (`AP_Mission`, `MissionItemProtocol_Waypoints.cpp`); its fence and rally lists and
/// PX4's lists do not (`mavlink_mission.cpp` numbers from the first waypoint).
pub fn has_home_slot(autopilot: AutopilotKind, mission_type: MavMissionType) -> bool {
    autopilot == AutopilotKind::Ardupilot
        && mission_type == MavMissionType::MAV_MISSION_TYPE_MISSION
}

/// Knobs of `MissionProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissionOptions {
    /// How long each stage waits for the vehicle before re-sending.
    pub item_timeout: Duration,
    /// Re-sends of one stage before the transfer is given up.
    pub retries_max: u8,
    /// Our own ids: messages addressed to another system are another station's transfer.
    pub source_system: u8,
    pub source_component: u8,
}

impl MissionOptions {
    /// The command protocol's timeout and retries (`vehicle.command_ack_timeout_ms`,
    /// `vehicle.command_retries_max`), with at least 1.5 s per item: QGroundControl and
    /// MAVSDK wait that long, and an autopilot writing its storage answers slowly.
    pub fn from_config(config: &crate::config::VehicleConfig) -> Self {
        Self {
            item_timeout: Duration::from_millis(config.command_ack_timeout_ms.max(1500)),
            retries_max: config.command_retries_max.max(3),
            source_system: config.system_id,
            source_component: config.component_id,
        }
    }
}

/// Whom a transfer talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissionTarget {
    pub system: u8,
    pub component: u8,
    pub autopilot: AutopilotKind,
}

/// What a transfer does.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Replace the list with `items`; `home` fills ArduPilot's slot 0 (ignored elsewhere).
    Upload {
        items: Vec<MissionItem>,
        home: Option<(i32, i32, f32)>,
    },
    Download,
    Clear,
    /// Make item `seq` (the caller's numbering) the current one.
    SetCurrent {
        seq: u16,
    },
}

impl Operation {
    fn name(&self) -> &'static str {
        match self {
            Operation::Upload { .. } => "upload",
            Operation::Download => "download",
            Operation::Clear => "clear",
            Operation::SetCurrent { .. } => "set current",
        }
    }
}

/// Identifies one transfer in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u64);

/// Why `start` refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    #[error("a mission {running} is already in progress; wait for it to finish")]
    Busy { running: &'static str },
    #[error("{count} items is more than the {limit} a mission may have")]
    TooManyItems { count: usize, limit: u16 },
}

/// Why every transfer is given up at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    LinkLost,
    ShuttingDown,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq)]
pub enum MissionOutcome {
    /// Every item was taken and the vehicle ACKed the upload (`count` of the caller's items).
    Uploaded {
        count: u16,
    },
    /// The list as the vehicle holds it, in the caller's numbering, and ArduPilot's home slot.
    Downloaded {
        items: Vec<MissionItem>,
        home: Option<MissionItem>,
    },
    Cleared,
    /// The vehicle reports `seq` (the caller's numbering) as its current item.
    CurrentSet {
        seq: u16,
    },
    /// The vehicle answered with an error ACK; `item` is the caller's item it was on, if any.
    Rejected {
        result: MavMissionResult,
        item: Option<u16>,
    },
    /// Every item was taken but the vehicle's final ACK was lost (an error answered our
    /// re-sent last item): download to see what it holds.
    Unconfirmed {
        count: u16,
    },
    /// The vehicle accepted after being asked only `requested` of `count` items.
    AcceptedEarly {
        requested: u16,
        count: u16,
    },
    /// The vehicle asked for an item beyond the list.
    RequestOutOfRange {
        seq: u16,
        count: u16,
    },
    /// The vehicle announced more items than `ITEMS_MAX`.
    TooManyItems {
        count: u16,
    },
    /// Nothing came back after every attempt.
    TimedOut {
        waiting_for: &'static str,
        attempts: u8,
    },
    /// We gave up (`cancel`); the vehicle was told.
    Cancelled,
    LinkLost,
    ShuttingDown,
}

impl MissionOutcome {
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Self::Uploaded { .. }
                | Self::Downloaded { .. }
                | Self::Cleared
                | Self::CurrentSet { .. }
        )
    }

    /// One sentence a person or a model can act on.
    pub fn describe(&self, mission_type: MavMissionType) -> String {
        let list = type_name(mission_type);
        match self {
            Self::Uploaded { count } => {
                format!("the autopilot accepted the {list} of {count} items")
            }
            Self::Downloaded { items, .. } => {
                format!("downloaded the {list} of {} items", items.len())
            }
            Self::Cleared => format!("the autopilot cleared its {list}"),
            Self::CurrentSet { seq } => format!("the {list}'s current item is now {seq}"),
            Self::Rejected { result, item } => format!(
                "the autopilot refused the {list}{}: {}",
                item.map(|i| format!(" at item {i}")).unwrap_or_default(),
                result_text(*result)
            ),
            Self::Unconfirmed { count } => format!(
                "the autopilot took all {count} items of the {list} but its acceptance was lost; \
                 download the {list} to check what it holds"
            ),
            Self::AcceptedEarly { requested, count } => format!(
                "the autopilot accepted the {list} after asking for only {requested} of {count} \
                 items; it may hold a partial {list}: download it to check, or upload again"
            ),
            Self::RequestOutOfRange { seq, count } => format!(
                "the autopilot asked for item {seq} of a {list} of {count}; the upload was cancelled"
            ),
            Self::TooManyItems { count } => {
                format!("the autopilot holds {count} {list} items, more than the {ITEMS_MAX} read")
            }
            Self::TimedOut {
                waiting_for,
                attempts,
            } => format!(
                "no {waiting_for} from the autopilot after {attempts} attempts; check the link"
            ),
            Self::Cancelled => format!("the {list} transfer was cancelled"),
            Self::LinkLost => format!("the autopilot link was lost during the {list} transfer"),
            Self::ShuttingDown => {
                format!("the daemon is shutting down; the {list} transfer stopped")
            }
        }
    }
}

fn type_name(mission_type: MavMissionType) -> &'static str {
    match mission_type {
        MavMissionType::MAV_MISSION_TYPE_MISSION => "mission",
        MavMissionType::MAV_MISSION_TYPE_FENCE => "fence",
        MavMissionType::MAV_MISSION_TYPE_RALLY => "rally list",
        MavMissionType::MAV_MISSION_TYPE_ALL => "mission, fence and rally lists",
    }
}

/// What a `MAV_MISSION_RESULT` means, in words.
pub fn result_text(result: MavMissionResult) -> &'static str {
    use MavMissionResult as R;
    match result {
        R::MAV_MISSION_ACCEPTED => "accepted",
        R::MAV_MISSION_ERROR => "a generic error",
        R::MAV_MISSION_UNSUPPORTED_FRAME => "an item's coordinate frame is not supported",
        R::MAV_MISSION_UNSUPPORTED => "an item's command is not supported",
        R::MAV_MISSION_NO_SPACE => "the list does not fit in the autopilot's storage",
        R::MAV_MISSION_INVALID => "an item's parameter is invalid",
        R::MAV_MISSION_INVALID_PARAM1 => "an item's param1 is invalid",
        R::MAV_MISSION_INVALID_PARAM2 => "an item's param2 is invalid",
        R::MAV_MISSION_INVALID_PARAM3 => "an item's param3 is invalid",
        R::MAV_MISSION_INVALID_PARAM4 => "an item's param4 is invalid",
        R::MAV_MISSION_INVALID_PARAM5_X => "an item's latitude (x) is invalid",
        R::MAV_MISSION_INVALID_PARAM6_Y => "an item's longitude (y) is invalid",
        R::MAV_MISSION_INVALID_PARAM7 => "an item's altitude (z) is invalid",
        R::MAV_MISSION_INVALID_SEQUENCE => "an item came out of sequence",
        R::MAV_MISSION_DENIED => {
            "denied: another transfer is in progress or the vehicle refuses in its state"
        }
        R::MAV_MISSION_OPERATION_CANCELLED => "the operation was cancelled",
    }
}

/// What the caller learns.
#[derive(Debug, Clone, PartialEq)]
pub enum MissionEvent {
    /// `done` of `total` items moved (the caller's numbering; ArduPilot's home not counted).
    Progress {
        id: TransferId,
        mission_type: MavMissionType,
        done: u16,
        total: u16,
    },
    Finished {
        id: TransferId,
        mission_type: MavMissionType,
        outcome: MissionOutcome,
    },
}

/// Counters of the vehicle's repeats and strays, for the status and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MissionCounters {
    /// Requests for an item already sent (the vehicle lost our item) or items received twice.
    pub duplicates: u64,
    /// Requests or items not in the order expected.
    pub out_of_order: u64,
    /// Our re-sends after a timeout.
    pub resends: u64,
    /// Mission messages from another system, or addressed to another station.
    pub foreign: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Upload: `MISSION_COUNT` sent, no request yet.
    CountSent,
    /// Upload: item `last` sent; `requested` is how many distinct items were asked for.
    Sending {
        last: u16,
    },
    /// Download: `MISSION_REQUEST_LIST` sent.
    ListRequested,
    /// Download: `MISSION_REQUEST_INT(next)` sent.
    Receiving {
        next: u16,
        count: u16,
    },
    ClearSent,
    /// `MISSION_SET_CURRENT(wire_seq)` sent.
    SetCurrentSent {
        wire_seq: u16,
    },
}

impl Stage {
    fn waiting_for(&self) -> &'static str {
        match self {
            Stage::CountSent => "MISSION_REQUEST after MISSION_COUNT",
            Stage::Sending { .. } => "MISSION_REQUEST or MISSION_ACK after an item",
            Stage::ListRequested => "MISSION_COUNT after MISSION_REQUEST_LIST",
            Stage::Receiving { .. } => "MISSION_ITEM_INT",
            Stage::ClearSent => "MISSION_ACK after MISSION_CLEAR_ALL",
            Stage::SetCurrentSent { .. } => "MISSION_CURRENT after MISSION_SET_CURRENT",
        }
    }
}

#[derive(Debug, Clone)]
struct Transfer {
    id: TransferId,
    target: MissionTarget,
    mission_type: MavMissionType,
    operation: &'static str,
    /// 1 when the list has ArduPilot's home at wire index 0.
    offset: u16,
    /// Upload: the items as sent on the wire (home first where it applies).
    wire_items: Vec<MissionItem>,
    /// Upload: which wire items were asked for at least once.
    asked: Vec<bool>,
    /// Download: what arrived so far, on the wire's numbering.
    received: Vec<MissionItem>,
    stage: Stage,
    deadline: Instant,
    attempts: u8,
}

/// The ground side of the mission protocol towards one autopilot, one transfer at a time
/// (autopilots run one transfer per list and refuse a second with `MAV_MISSION_DENIED`).
#[derive(Debug)]
pub struct MissionProtocol {
    options: MissionOptions,
    transfer: Option<Transfer>,
    outbox: VecDeque<MavMessage>,
    events: VecDeque<MissionEvent>,
    next_id: u64,
    counters: MissionCounters,
}

impl MissionProtocol {
    pub fn new(options: MissionOptions) -> Self {
        Self {
            options,
            transfer: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            counters: MissionCounters::default(),
        }
    }

    /// Starts a transfer; its first message is ready in `poll_transmit`.
    pub fn start(
        &mut self,
        now: Instant,
        target: MissionTarget,
        mission_type: MavMissionType,
        operation: Operation,
    ) -> Result<TransferId, StartError> {
        if let Some(t) = &self.transfer {
            return Err(StartError::Busy {
                running: t.operation,
            });
        }
        let offset = u16::from(has_home_slot(target.autopilot, mission_type));
        let name = operation.name();
        let (wire_items, stage) = match operation {
            Operation::Upload { items, home } => {
                if items.len() + usize::from(offset) > usize::from(ITEMS_MAX) {
                    return Err(StartError::TooManyItems {
                        count: items.len(),
                        limit: ITEMS_MAX - offset,
                    });
                }
                let mut wire = Vec::with_capacity(items.len() + 1);
                if offset == 1 {
                    wire.push(MissionItem::home_placeholder(home));
                }
                wire.extend(items);
                (wire, Stage::CountSent)
            }
            Operation::Download => (Vec::new(), Stage::ListRequested),
            Operation::Clear => (Vec::new(), Stage::ClearSent),
            Operation::SetCurrent { seq } => (
                Vec::new(),
                Stage::SetCurrentSent {
                    wire_seq: seq.saturating_add(offset),
                },
            ),
        };
        let id = TransferId(self.next_id);
        self.next_id += 1;
        let asked = vec![false; wire_items.len()];
        let transfer = Transfer {
            id,
            target,
            mission_type,
            operation: name,
            offset,
            wire_items,
            asked,
            received: Vec::new(),
            stage,
            deadline: now + self.options.item_timeout,
            attempts: 1,
        };
        let first = self.stage_message(&transfer);
        self.outbox.push_back(first);
        self.transfer = Some(transfer);
        Ok(id)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<MavMessage> {
        self.handle_timeout(now);
        self.outbox.pop_front()
    }

    /// Re-sends a stage whose timeout passed, or gives the transfer up after `retries_max`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(t) = &mut self.transfer else {
            return;
        };
        if t.deadline > now {
            return;
        }
        if t.attempts > self.options.retries_max {
            let outcome = MissionOutcome::TimedOut {
                waiting_for: t.stage.waiting_for(),
                attempts: t.attempts,
            };
            self.finish(outcome);
            return;
        }
        t.attempts += 1;
        t.deadline = now + self.options.item_timeout;
        self.counters.resends += 1;
        let t = t.clone();
        let msg = self.stage_message(&t);
        self.outbox.push_back(msg);
    }

    /// When `handle_timeout` has work; `None` without a transfer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfer.as_ref().map(|t| t.deadline)
    }

    #[inline]
    pub fn poll_event(&mut self) -> Option<MissionEvent> {
        self.events.pop_front()
    }

    pub fn counters(&self) -> MissionCounters {
        self.counters
    }

    /// True while a transfer runs.
    pub fn is_busy(&self) -> bool {
        self.transfer.is_some()
    }

    /// Stops the transfer and tells the vehicle (`MISSION_ACK(OPERATION_CANCELLED)`).
    pub fn cancel(&mut self) -> bool {
        let Some(t) = &self.transfer else {
            return false;
        };
        if matches!(
            t.stage,
            Stage::CountSent | Stage::Sending { .. } | Stage::Receiving { .. }
        ) {
            let ack = self.ack(t, MavMissionResult::MAV_MISSION_OPERATION_CANCELLED);
            self.outbox.push_back(ack);
        }
        self.finish(MissionOutcome::Cancelled);
        true
    }

    /// Gives up without telling the vehicle (there is no link, or no time).
    pub fn abort(&mut self, reason: AbortReason) {
        if self.transfer.is_some() {
            self.outbox.clear();
            self.finish(match reason {
                AbortReason::LinkLost => MissionOutcome::LinkLost,
                AbortReason::ShuttingDown => MissionOutcome::ShuttingDown,
            });
        }
    }

    /// Takes the mission messages of the target; every other message is ignored.
    ///
    /// Inlined test first: every frame of the link comes here twice (the mission tools and
    /// the fence mirror), almost always with no transfer running, and the call of the whole
    /// handler cost more than the test (issue 17).
    #[inline]
    pub fn handle_message(&mut self, now: Instant, header: &MavHeader, msg: &MavMessage) {
        if self.transfer.is_some() {
            self.handle_transfer_message(now, header, msg);
        }
    }

    fn handle_transfer_message(&mut self, now: Instant, header: &MavHeader, msg: &MavMessage) {
        let Some(t) = &self.transfer else {
            return;
        };
        let (to, mission_type) = match msg {
            MavMessage::MISSION_REQUEST_INT(m) => {
                ((m.target_system, m.target_component), m.mission_type)
            }
            MavMessage::MISSION_REQUEST(m) => {
                ((m.target_system, m.target_component), m.mission_type)
            }
            MavMessage::MISSION_ACK(m) => ((m.target_system, m.target_component), m.mission_type),
            MavMessage::MISSION_COUNT(m) => ((m.target_system, m.target_component), m.mission_type),
            MavMessage::MISSION_ITEM_INT(m) => {
                ((m.target_system, m.target_component), m.mission_type)
            }
            MavMessage::MISSION_ITEM(m) => ((m.target_system, m.target_component), m.mission_type),
            // Broadcast, no mission type: it is about the mission list.
            MavMessage::MISSION_CURRENT(_) => ((0, 0), MavMissionType::MAV_MISSION_TYPE_MISSION),
            _ => return,
        };
        let from_target = header.system_id == u32::from(t.target.system)
            && components_overlap(header.component_id, t.target.component);
        let to_us = (to.0 == 0 || to.0 == self.options.source_system)
            && components_overlap(to.1, self.options.source_component);
        if !from_target || !to_us {
            self.counters.foreign += 1;
            return;
        }
        if mission_type != t.mission_type {
            return;
        }
        let t = t.clone();
        match (&t.stage, msg) {
            (Stage::CountSent | Stage::Sending { .. }, MavMessage::MISSION_REQUEST_INT(m)) => {
                self.on_request(now, t, m.seq);
            }
            (Stage::CountSent | Stage::Sending { .. }, MavMessage::MISSION_REQUEST(m)) => {
                self.on_request(now, t, m.seq);
            }
            (Stage::CountSent | Stage::Sending { .. }, MavMessage::MISSION_ACK(m)) => {
                self.on_upload_ack(&t, m.mavtype);
            }
            (Stage::ListRequested | Stage::Receiving { .. }, MavMessage::MISSION_COUNT(m)) => {
                self.on_count(now, t, m.count);
            }
            (Stage::Receiving { .. }, MavMessage::MISSION_ITEM_INT(m)) => {
                self.on_item(now, t, m.seq, MissionItem::from_int(m));
            }
            (Stage::Receiving { .. }, MavMessage::MISSION_ITEM(m)) => {
                self.on_item(now, t, m.seq, MissionItem::from_float(m));
            }
            // The vehicle ends a download only with an error (e.g. another transfer runs).
            (Stage::ListRequested | Stage::Receiving { .. }, MavMessage::MISSION_ACK(m))
                if m.mavtype != MavMissionResult::MAV_MISSION_ACCEPTED =>
            {
                self.finish(MissionOutcome::Rejected {
                    result: m.mavtype,
                    item: None,
                });
            }
            (Stage::ClearSent, MavMessage::MISSION_ACK(m)) => {
                self.finish(if m.mavtype == MavMissionResult::MAV_MISSION_ACCEPTED {
                    MissionOutcome::Cleared
                } else {
                    MissionOutcome::Rejected {
                        result: m.mavtype,
                        item: None,
                    }
                });
            }
            (Stage::SetCurrentSent { wire_seq }, MavMessage::MISSION_CURRENT(m))
                if m.seq == *wire_seq =>
            {
                self.finish(MissionOutcome::CurrentSet {
                    seq: wire_seq.saturating_sub(t.offset),
                });
            }
            _ => {}
        }
    }

    fn on_request(&mut self, now: Instant, mut t: Transfer, seq: u16) {
        let count = t.wire_items.len();
        let Some(item) = t.wire_items.get(usize::from(seq)).copied() else {
            let ack = self.ack(&t, MavMissionResult::MAV_MISSION_OPERATION_CANCELLED);
            self.outbox.push_back(ack);
            self.finish(MissionOutcome::RequestOutOfRange {
                seq,
                count: count as u16,
            });
            return;
        };
        let already = t.asked[usize::from(seq)];
        let expected = t.asked.iter().position(|a| !a);
        if already {
            self.counters.duplicates += 1;
        } else if expected != Some(usize::from(seq)) {
            self.counters.out_of_order += 1;
        }
        if !already {
            t.asked[usize::from(seq)] = true;
            // Progress resets the retries: each stage has its own budget.
            t.attempts = 1;
            let done = t.asked.iter().filter(|a| **a).count() as u16;
            self.events.push_back(MissionEvent::Progress {
                id: t.id,
                mission_type: t.mission_type,
                done: done.saturating_sub(t.offset),
                total: (count as u16).saturating_sub(t.offset),
            });
        }
        t.stage = Stage::Sending { last: seq };
        t.deadline = now + self.options.item_timeout;
        let msg = self.item_message(&t, seq, &item);
        self.outbox.push_back(msg);
        self.transfer = Some(t);
    }

    fn on_upload_ack(&mut self, t: &Transfer, result: MavMissionResult) {
        let count = t.wire_items.len() as u16;
        if result == MavMissionResult::MAV_MISSION_INVALID_SEQUENCE {
            // ArduPilot answers an item it did not ask for (our re-send crossing its next
            // request) with this ACK and keeps receiving (`MissionItemProtocol.cpp`
            // `handle_mission_item`): not an end; its next request or the timeout decides.
            self.counters.out_of_order += 1;
            return;
        }
        let requested = t.asked.iter().filter(|a| **a).count() as u16;
        if result != MavMissionResult::MAV_MISSION_ACCEPTED
            && requested == count
            && t.attempts > 1
            && matches!(t.stage, Stage::Sending { last } if Some(last) == count.checked_sub(1))
        {
            // Every item was taken and our re-sent last item met a vehicle no longer
            // receiving (ArduPilot's `GCS_Common.cpp` answers it with `MAV_MISSION_ERROR`):
            // its ACCEPTED was lost. Only a download can tell what it holds.
            self.finish(MissionOutcome::Unconfirmed {
                count: count.saturating_sub(t.offset),
            });
            return;
        }
        if result != MavMissionResult::MAV_MISSION_ACCEPTED {
            let item = match t.stage {
                Stage::Sending { last } => last.checked_sub(t.offset),
                _ => None,
            };
            self.finish(MissionOutcome::Rejected { result, item });
            return;
        }
        if requested < count {
            self.finish(MissionOutcome::AcceptedEarly {
                requested: requested.saturating_sub(t.offset),
                count: count.saturating_sub(t.offset),
            });
        } else {
            self.finish(MissionOutcome::Uploaded {
                count: count.saturating_sub(t.offset),
            });
        }
    }

    fn on_count(&mut self, now: Instant, mut t: Transfer, count: u16) {
        if let Stage::Receiving { count: known, .. } = t.stage {
            // Our re-sent MISSION_REQUEST_LIST crossed the first answer: the same count again.
            if known == count {
                self.counters.duplicates += 1;
            } else {
                self.counters.out_of_order += 1;
            }
            return;
        }
        if count > ITEMS_MAX {
            let ack = self.ack(&t, MavMissionResult::MAV_MISSION_OPERATION_CANCELLED);
            self.outbox.push_back(ack);
            self.finish(MissionOutcome::TooManyItems { count });
            return;
        }
        if count == 0 {
            let ack = self.ack(&t, MavMissionResult::MAV_MISSION_ACCEPTED);
            self.outbox.push_back(ack);
            self.finish(MissionOutcome::Downloaded {
                items: Vec::new(),
                home: None,
            });
            return;
        }
        t.stage = Stage::Receiving { next: 0, count };
        t.attempts = 1;
        t.deadline = now + self.options.item_timeout;
        let msg = self.stage_message(&t);
        self.outbox.push_back(msg);
        self.transfer = Some(t);
    }

    fn on_item(&mut self, now: Instant, mut t: Transfer, seq: u16, item: MissionItem) {
        let Stage::Receiving { next, count } = t.stage else {
            return;
        };
        if seq < next {
            self.counters.duplicates += 1;
            return;
        }
        if seq > next {
            // An item we did not ask for: ours was lost; ask again at once.
            self.counters.out_of_order += 1;
            let msg = self.stage_message(&t);
            self.outbox.push_back(msg);
            return;
        }
        t.received.push(item);
        let next = next + 1;
        self.events.push_back(MissionEvent::Progress {
            id: t.id,
            mission_type: t.mission_type,
            done: next.saturating_sub(t.offset),
            total: count.saturating_sub(t.offset),
        });
        if next == count {
            let ack = self.ack(&t, MavMissionResult::MAV_MISSION_ACCEPTED);
            self.outbox.push_back(ack);
            let mut items = std::mem::take(&mut t.received);
            let home = (t.offset == 1 && !items.is_empty()).then(|| items.remove(0));
            self.finish(MissionOutcome::Downloaded { items, home });
            return;
        }
        t.stage = Stage::Receiving { next, count };
        t.attempts = 1;
        t.deadline = now + self.options.item_timeout;
        let msg = self.stage_message(&t);
        self.outbox.push_back(msg);
        self.transfer = Some(t);
    }

    fn finish(&mut self, outcome: MissionOutcome) {
        if let Some(t) = self.transfer.take() {
            self.events.push_back(MissionEvent::Finished {
                id: t.id,
                mission_type: t.mission_type,
                outcome,
            });
        }
    }

    /// What the current stage sends (first time or again).
    fn stage_message(&self, t: &Transfer) -> MavMessage {
        let (target_system, target_component) = (t.target.system, t.target.component);
        let mission_type = t.mission_type;
        match t.stage {
            Stage::CountSent => MavMessage::MISSION_COUNT(MISSION_COUNT_DATA {
                count: t.wire_items.len() as u16,
                target_system,
                target_component,
                mission_type,
                opaque_id: 0,
            }),
            Stage::Sending { last } => match t.wire_items.get(usize::from(last)) {
                Some(item) => self.item_message(t, last, item),
                None => self.ack(t, MavMissionResult::MAV_MISSION_OPERATION_CANCELLED),
            },
            Stage::ListRequested => MavMessage::MISSION_REQUEST_LIST(MISSION_REQUEST_LIST_DATA {
                target_system,
                target_component,
                mission_type,
            }),
            Stage::Receiving { next, .. } => {
                MavMessage::MISSION_REQUEST_INT(MISSION_REQUEST_INT_DATA {
                    seq: next,
                    target_system,
                    target_component,
                    mission_type,
                })
            }
            Stage::ClearSent => MavMessage::MISSION_CLEAR_ALL(MISSION_CLEAR_ALL_DATA {
                target_system,
                target_component,
                mission_type,
            }),
            Stage::SetCurrentSent { wire_seq } => {
                MavMessage::MISSION_SET_CURRENT(MISSION_SET_CURRENT_DATA {
                    seq: wire_seq,
                    target_system,
                    target_component,
                })
            }
        }
    }

    fn item_message(&self, t: &Transfer, seq: u16, item: &MissionItem) -> MavMessage {
        MavMessage::MISSION_ITEM_INT(MISSION_ITEM_INT_DATA {
            param1: item.params[0],
            param2: item.params[1],
            param3: item.params[2],
            param4: item.params[3],
            x: item.x,
            y: item.y,
            z: item.z,
            seq,
            command: item.command,
            target_system: t.target.system,
            target_component: t.target.component,
            frame: item.frame,
            // The first item the vehicle will fly is not ours to choose on upload.
            current: 0,
            autocontinue: u8::from(item.autocontinue),
            mission_type: t.mission_type,
        })
    }

    fn ack(&self, t: &Transfer, result: MavMissionResult) -> MavMessage {
        MavMessage::MISSION_ACK(MISSION_ACK_DATA {
            target_system: t.target.system,
            target_component: t.target.component,
            mavtype: result,
            mission_type: t.mission_type,
            opaque_id: 0,
        })
    }
}

fn components_overlap(a: u8, b: u8) -> bool {
    a == b || a == 0 || b == 0
}

/// A running mission as the vehicle reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The vehicle's current item changed: `item` in the caller's numbering (`None`: home,
    /// ArduPilot's slot 0), `total` items when the vehicle says (MAVLink's extension field).
    Current {
        item: Option<u16>,
        total: Option<u16>,
    },
    /// The vehicle reached `item` (the caller's numbering).
    Reached { item: u16 },
}

/// Follows `MISSION_CURRENT` and `MISSION_ITEM_REACHED` from the autopilot (no transfer
/// needed; both are streamed or sent on their own by ArduPilot and PX4).
#[derive(Debug, Clone)]
pub struct MissionProgress {
    target: MissionTarget,
    current: Option<u16>,
    reached: Option<u16>,
}

impl MissionProgress {
    pub fn new(target: MissionTarget) -> Self {
        Self {
            target,
            current: None,
            reached: None,
        }
    }

    /// Whose progress this follows.
    pub fn target(&self) -> MissionTarget {
        self.target
    }

    /// The current item in the caller's numbering, once known.
    pub fn current(&self) -> Option<u16> {
        self.current.and_then(|c| c.checked_sub(self.offset()))
    }

    /// The last item reached, in the caller's numbering.
    pub fn last_reached(&self) -> Option<u16> {
        self.reached
    }

    fn offset(&self) -> u16 {
        u16::from(has_home_slot(
            self.target.autopilot,
            MavMissionType::MAV_MISSION_TYPE_MISSION,
        ))
    }

    /// A change of current item, or an item reached; repeats of the 1 Hz stream say nothing.
    pub fn handle_message(
        &mut self,
        header: &MavHeader,
        msg: &MavMessage,
    ) -> Option<ProgressEvent> {
        if header.system_id != u32::from(self.target.system)
            || !components_overlap(header.component_id, self.target.component)
        {
            return None;
        }
        let offset = self.offset();
        match msg {
            MavMessage::MISSION_CURRENT(m) => {
                if self.current == Some(m.seq) {
                    return None;
                }
                self.current = Some(m.seq);
                // 0 and u16::MAX are "not known" in the extension (absent fields read 0).
                let total =
                    (m.total != 0 && m.total != u16::MAX).then(|| m.total.saturating_sub(offset));
                Some(ProgressEvent::Current {
                    item: m.seq.checked_sub(offset),
                    total,
                })
            }
            MavMessage::MISSION_ITEM_REACHED(m) => {
                let item = m.seq.checked_sub(offset)?;
                if self.reached == Some(item) {
                    return None;
                }
                self.reached = Some(item);
                Some(ProgressEvent::Reached { item })
            }
            _ => None,
        }
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mission transfer #{}", self.0)
    }
}

#[cfg(test)]
mod tests;
