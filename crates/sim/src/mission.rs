//! The simulated autopilot's mission, fence and rally lists and its side of the MAVLink
//! mission protocol, as ArduCopter and PX4 run it (sans-IO, virtual time).
//!
//! # ArduCopter (`libraries/GCS_MAVLink/MissionItemProtocol.cpp`, `AP_Mission`)
//! - The mission list keeps home at index 0: a download always starts with it, and it is the
//!   vehicle's own home whatever was uploaded there (`AP_Mission::write_home_to_storage`).
//! - `MISSION_COUNT`: `DENIED` while another station uploads (the same station restarts),
//!   `NO_SPACE` beyond the storage, 0 clears and ACKs at once, else requests item 0.
//! - Items are asked for with `MISSION_REQUEST` (the legacy message, `queued_request_send`);
//!   an item other than the one asked for gets `INVALID_SEQUENCE` and receiving goes on; the
//!   request is repeated after 1 s without an item, and the upload is cancelled
//!   (`OPERATION_CANCELLED`) after 8 s (`update`, `upload_timeout_ms`).
//! - `MISSION_REQUEST_LIST` and `MISSION_REQUEST_INT` are answered statelessly (`DENIED`
//!   while receiving); `MISSION_REQUEST` is answered with a float `MISSION_ITEM`.
//! - `MISSION_CLEAR_ALL`: `ACCEPTED`, or `ERROR` while receiving; the mission keeps home.
//!
//! # PX4 (`src/modules/mavlink/mavlink_mission.cpp`)
//! - No home slot. One transfer at a time: `MISSION_COUNT` while busy gets `ERROR` (from its
//!   partner before any item: the request is repeated, "MISSION_COUNT (again)").
//! - Items are asked for with `MISSION_REQUEST_INT`; an unexpected item is ignored; the request
//!   is repeated every 250 ms (`MAVLINK_MISSION_RETRY_TIMEOUT_DEFAULT`) and the transfer given
//!   up after 5 s of silence ("Operation timeout").
//! - After the last item, the same item again is ACKed `ACCEPTED` again (a lost ACK).
//! - A download is a state (`SENDLIST`): the request of the next item or the one just sent is
//!   answered; any other ends it with `ERROR` ("Req. WP was unexpected").
//! - `MISSION_CLEAR_ALL` is ignored while busy.

#![allow(deprecated)] // MISSION_REQUEST and MISSION_ITEM: what ArduPilot still sends and takes

use std::collections::VecDeque;
use std::time::Duration;

use flight_companion_core::link::MavMessage;
use flight_companion_core::link::dialect::{
    MISSION_ACK_DATA, MISSION_COUNT_DATA, MISSION_ITEM_DATA, MISSION_ITEM_INT_DATA,
    MISSION_REQUEST_DATA, MISSION_REQUEST_INT_DATA, MavCmd, MavFrame, MavMissionResult,
    MavMissionType,
};
use flight_companion_core::vehicle::mission::{MissionItem, frame_is_global};

use super::physics::GeoPoint;
use crate::personality::Personality;

/// ArduCopter's mission storage on a 16 KB board (about 700 items, `AP_Mission::num_commands_max`).
const ARDUPILOT_ITEMS_MAX: u16 = 700;
/// PX4's dataman mission capacity (`DM_KEY_WAYPOINTS_OFFBOARD_0_MAX`).
const PX4_ITEMS_MAX: u16 = 2000;
/// Fence and rally lists (ArduPilot's `AC_PolyFence_loader` stores 70+ points on most boards).
const FENCE_ITEMS_MAX: u16 = 100;

const ARDUPILOT_REQUEST_RETRY: Duration = Duration::from_millis(1000);
const ARDUPILOT_UPLOAD_TIMEOUT: Duration = Duration::from_millis(8000);
const PX4_REQUEST_RETRY: Duration = Duration::from_millis(250);
const PX4_PROTOCOL_TIMEOUT: Duration = Duration::from_millis(5000);

fn list_index(mission_type: MavMissionType) -> Option<usize> {
    match mission_type {
        MavMissionType::MAV_MISSION_TYPE_MISSION => Some(0),
        MavMissionType::MAV_MISSION_TYPE_FENCE => Some(1),
        MavMissionType::MAV_MISSION_TYPE_RALLY => Some(2),
        MavMissionType::MAV_MISSION_TYPE_ALL => None,
    }
}

#[derive(Debug, Clone)]
struct Receiving {
    mission_type: MavMissionType,
    partner: (u8, u8),
    count: u16,
    next: u16,
    items: Vec<MissionItem>,
    last_request_at: Duration,
    last_receive_at: Duration,
}

#[derive(Debug, Clone)]
struct Sending {
    mission_type: MavMissionType,
    partner: (u8, u8),
    /// PX4's `_transfer_seq`: the next item it expects to be asked for.
    next: u16,
    last_receive_at: Duration,
}

/// What a completed transfer changed, for the autopilot to act on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ListChange {
    Replaced(MavMissionType),
    Cleared(MavMissionType),
}

/// The lists and the protocol state of one simulated autopilot.
#[derive(Debug, Clone)]
pub struct MissionServer {
    personality: Personality,
    system_id: u8,
    component_id: u8,
    /// Mission, fence, rally; the mission without ArduPilot's home slot.
    lists: [Vec<MissionItem>; 3],
    receiving: Option<Receiving>,
    sending: Option<Sending>,
    outbox: VecDeque<MavMessage>,
    changes: VecDeque<ListChange>,
    texts: VecDeque<String>,
}

impl MissionServer {
    pub fn new(personality: Personality, system_id: u8, component_id: u8) -> Self {
        Self {
            personality,
            system_id,
            component_id,
            lists: [Vec::new(), Vec::new(), Vec::new()],
            receiving: None,
            sending: None,
            outbox: VecDeque::new(),
            changes: VecDeque::new(),
            texts: VecDeque::new(),
        }
    }

    /// The mission as flown (no home slot), fence and rally lists.
    pub fn list(&self, mission_type: MavMissionType) -> &[MissionItem] {
        list_index(mission_type).map_or(&[], |i| &self.lists[i])
    }

    /// Replaces a list as if uploaded (tests of what the autopilot does with it).
    #[cfg(test)]
    pub fn set_list(&mut self, mission_type: MavMissionType, items: Vec<MissionItem>) {
        if let Some(i) = list_index(mission_type) {
            self.lists[i] = items;
        }
    }

    /// 1 where the wire numbering has ArduPilot's home first.
    pub fn offset(&self, mission_type: MavMissionType) -> u16 {
        u16::from(
            self.personality == Personality::ArduPilot
                && mission_type == MavMissionType::MAV_MISSION_TYPE_MISSION,
        )
    }

    pub fn poll_transmit(&mut self) -> Option<MavMessage> {
        self.outbox.pop_front()
    }

    pub fn poll_change(&mut self) -> Option<ListChange> {
        self.changes.pop_front()
    }

    /// STATUSTEXTs the firmware would send.
    pub fn poll_text(&mut self) -> Option<String> {
        self.texts.pop_front()
    }

    /// True while an upload is being received.
    pub fn is_receiving(&self) -> bool {
        self.receiving.is_some()
    }

    /// A mission message addressed to the vehicle; `home` fills ArduPilot's slot 0.
    /// Returns false for messages that are not the mission protocol's.
    pub fn handle_message(
        &mut self,
        now: Duration,
        from: (u8, u8),
        msg: &MavMessage,
        home: GeoPoint,
    ) -> bool {
        match msg {
            MavMessage::MISSION_COUNT(m) => self.on_count(now, from, m.mission_type, m.count),
            MavMessage::MISSION_ITEM_INT(m) => {
                self.on_item(now, from, m.mission_type, m.seq, item_of_int(m));
            }
            MavMessage::MISSION_ITEM(m) => {
                self.on_item(now, from, m.mission_type, m.seq, item_of_float(m));
            }
            MavMessage::MISSION_REQUEST_LIST(m) => self.on_request_list(now, from, m.mission_type),
            MavMessage::MISSION_REQUEST_INT(m) => {
                self.on_request(now, from, m.mission_type, m.seq, true, home);
            }
            MavMessage::MISSION_REQUEST(m) => {
                self.on_request(now, from, m.mission_type, m.seq, false, home);
            }
            MavMessage::MISSION_ACK(m) => self.on_ack(from, m.mission_type),
            MavMessage::MISSION_CLEAR_ALL(m) => self.on_clear(from, m.mission_type),
            _ => return false,
        }
        true
    }

    /// Repeats a lost request and gives a silent upload up, as each firmware does.
    pub fn tick(&mut self, now: Duration) {
        let (retry, give_up) = match self.personality {
            Personality::ArduPilot => (ARDUPILOT_REQUEST_RETRY, ARDUPILOT_UPLOAD_TIMEOUT),
            Personality::Px4 => (PX4_REQUEST_RETRY, PX4_PROTOCOL_TIMEOUT),
        };
        if let Some(r) = &mut self.receiving {
            if now.saturating_sub(r.last_receive_at) > give_up {
                let r = self.receiving.take().expect("checked above");
                match self.personality {
                    Personality::ArduPilot => {
                        self.ack(
                            r.partner,
                            r.mission_type,
                            MavMissionResult::MAV_MISSION_OPERATION_CANCELLED,
                        );
                    }
                    Personality::Px4 => self.texts.push_back("Operation timeout".into()),
                }
                return;
            }
            if now.saturating_sub(r.last_request_at) > retry {
                r.last_request_at = now;
                let (partner, mission_type, seq) = (r.partner, r.mission_type, r.next);
                self.request(partner, mission_type, seq);
            }
        }
        if let Some(s) = &self.sending
            && now.saturating_sub(s.last_receive_at) > PX4_PROTOCOL_TIMEOUT
        {
            self.sending = None;
            self.texts.push_back("Operation timeout".into());
        }
    }

    fn max_items(&self, mission_type: MavMissionType) -> u16 {
        match (mission_type, self.personality) {
            (MavMissionType::MAV_MISSION_TYPE_MISSION, Personality::ArduPilot) => {
                ARDUPILOT_ITEMS_MAX
            }
            (MavMissionType::MAV_MISSION_TYPE_MISSION, Personality::Px4) => PX4_ITEMS_MAX,
            _ => FENCE_ITEMS_MAX,
        }
    }

    fn on_count(
        &mut self,
        now: Duration,
        from: (u8, u8),
        mission_type: MavMissionType,
        count: u16,
    ) {
        use MavMissionResult as R;
        let Some(index) = list_index(mission_type) else {
            self.ack(from, mission_type, R::MAV_MISSION_UNSUPPORTED);
            return;
        };
        if let Some(r) = &self.receiving {
            let same = r.partner == from;
            match self.personality {
                // MissionItemProtocol::handle_mission_count: the same station may restart.
                Personality::ArduPilot if same => {}
                Personality::ArduPilot => {
                    self.ack(from, mission_type, R::MAV_MISSION_DENIED);
                    return;
                }
                // "MISSION_COUNT (again)": our request 0 was lost.
                Personality::Px4 if same && r.next == 0 && r.mission_type == mission_type => {
                    let (partner, seq) = (r.partner, r.next);
                    self.request(partner, mission_type, seq);
                    return;
                }
                Personality::Px4 => {
                    self.ack(from, mission_type, R::MAV_MISSION_ERROR);
                    return;
                }
            }
        }
        if self.personality == Personality::Px4 && self.sending.is_some() {
            self.ack(from, mission_type, R::MAV_MISSION_ERROR);
            return;
        }
        self.receiving = None;
        if count > self.max_items(mission_type) {
            self.ack(from, mission_type, R::MAV_MISSION_NO_SPACE);
            self.texts.push_back(format!(
                "Only {} items are supported",
                self.max_items(mission_type)
            ));
            return;
        }
        if count == 0 {
            self.lists[index].clear();
            self.changes.push_back(ListChange::Cleared(mission_type));
            self.ack(from, mission_type, R::MAV_MISSION_ACCEPTED);
            return;
        }
        self.receiving = Some(Receiving {
            mission_type,
            partner: from,
            count,
            next: 0,
            items: Vec::with_capacity(usize::from(count)),
            last_request_at: now,
            last_receive_at: now,
        });
        self.request(from, mission_type, 0);
    }

    fn on_item(
        &mut self,
        now: Duration,
        from: (u8, u8),
        mission_type: MavMissionType,
        seq: u16,
        item: MissionItem,
    ) {
        use MavMissionResult as R;
        let Some(r) = &mut self.receiving else {
            // PX4: the last item again after the upload (its ACK was lost) is ACKed again
            // (`handle_mission_item_both` in IDLE). ArduPilot: an item while not receiving
            // is `MAV_MISSION_ERROR` (`GCS_Common.cpp` `handle_mission_item`).
            let n = list_index(mission_type).map_or(0, |i| self.lists[i].len());
            let wire_n = n + usize::from(self.offset(mission_type));
            let result = if self.personality == Personality::Px4
                && wire_n > 0
                && usize::from(seq) + 1 == wire_n
            {
                R::MAV_MISSION_ACCEPTED
            } else {
                R::MAV_MISSION_ERROR
            };
            self.ack(from, mission_type, result);
            return;
        };
        if r.partner != from {
            let result = match self.personality {
                Personality::ArduPilot => R::MAV_MISSION_DENIED,
                Personality::Px4 => return,
            };
            self.ack(from, mission_type, result);
            return;
        }
        if mission_type != r.mission_type {
            self.ack(from, mission_type, R::MAV_MISSION_ERROR);
            return;
        }
        if seq != r.next {
            if self.personality == Personality::ArduPilot {
                self.ack(from, mission_type, R::MAV_MISSION_INVALID_SEQUENCE);
            }
            return;
        }
        if let Some(result) = self.item_problem(mission_type, &item) {
            self.receiving = None;
            self.ack(from, mission_type, result);
            return;
        }
        let r = self.receiving.as_mut().expect("checked above");
        r.items.push(item);
        r.next += 1;
        r.last_receive_at = now;
        r.last_request_at = now;
        if r.next < r.count {
            let next = r.next;
            self.request(from, mission_type, next);
            return;
        }
        let r = self.receiving.take().expect("checked above");
        let offset = usize::from(self.offset(mission_type));
        let index = list_index(mission_type).expect("counted lists only");
        self.lists[index] = r.items.into_iter().skip(offset).collect();
        self.changes.push_back(ListChange::Replaced(mission_type));
        self.ack(from, mission_type, R::MAV_MISSION_ACCEPTED);
    }

    /// What each firmware refuses in an item it takes: PX4 takes only global frames for
    /// positions (`parse_mavlink_mission_item`) and no fence or rally commands in a mission;
    /// a fence polygon vertex needs at least 3 vertices (both firmwares).
    fn item_problem(
        &self,
        mission_type: MavMissionType,
        item: &MissionItem,
    ) -> Option<MavMissionResult> {
        use MavCmd as C;
        let fence = matches!(
            item.command,
            C::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
                | C::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
                | C::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
                | C::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
                | C::MAV_CMD_NAV_FENCE_RETURN_POINT
        );
        match mission_type {
            MavMissionType::MAV_MISSION_TYPE_MISSION
                if fence || item.command == C::MAV_CMD_NAV_RALLY_POINT =>
            {
                Some(MavMissionResult::MAV_MISSION_ERROR)
            }
            MavMissionType::MAV_MISSION_TYPE_FENCE if !fence => {
                Some(MavMissionResult::MAV_MISSION_UNSUPPORTED)
            }
            MavMissionType::MAV_MISSION_TYPE_FENCE
                if matches!(
                    item.command,
                    C::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
                        | C::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
                ) && item.params[0] < 3.0 =>
            {
                Some(MavMissionResult::MAV_MISSION_INVALID_PARAM1)
            }
            _ if frame_is_global(item.frame) || item.frame == MavFrame::MAV_FRAME_MISSION => None,
            _ => Some(MavMissionResult::MAV_MISSION_UNSUPPORTED_FRAME),
        }
    }

    fn on_request_list(&mut self, now: Duration, from: (u8, u8), mission_type: MavMissionType) {
        let Some(index) = list_index(mission_type) else {
            self.ack(
                from,
                mission_type,
                MavMissionResult::MAV_MISSION_UNSUPPORTED,
            );
            return;
        };
        if self.receiving.is_some() {
            match self.personality {
                Personality::ArduPilot => {
                    self.ack(from, mission_type, MavMissionResult::MAV_MISSION_DENIED)
                }
                Personality::Px4 => self
                    .texts
                    .push_back("Mission download request ignored, already active".into()),
            }
            return;
        }
        if self.personality == Personality::Px4 {
            self.sending = Some(Sending {
                mission_type,
                partner: from,
                next: 0,
                last_receive_at: now,
            });
        }
        let count = self.lists[index].len() as u16 + self.offset(mission_type);
        self.outbox
            .push_back(MavMessage::MISSION_COUNT(MISSION_COUNT_DATA {
                count,
                target_system: from.0,
                target_component: from.1,
                mission_type,
                opaque_id: 0,
            }));
    }

    fn on_request(
        &mut self,
        now: Duration,
        from: (u8, u8),
        mission_type: MavMissionType,
        seq: u16,
        int: bool,
        home: GeoPoint,
    ) {
        use MavMissionResult as R;
        if self.receiving.is_some() {
            if self.personality == Personality::ArduPilot {
                self.ack(from, mission_type, R::MAV_MISSION_DENIED);
            }
            return;
        }
        if self.personality == Personality::Px4 {
            let Some(s) = &mut self.sending else {
                // "Silently ignore this as some OSDs have buggy mission protocol implementations".
                return;
            };
            if s.partner != from || s.mission_type != mission_type {
                return;
            }
            s.last_receive_at = now;
            if seq == s.next {
                s.next += 1;
            } else if seq.checked_add(1) != Some(s.next) {
                self.sending = None;
                self.ack(from, mission_type, R::MAV_MISSION_ERROR);
                self.texts
                    .push_back("WPM: REJ. CMD: Req. WP was unexpected".into());
                return;
            }
        }
        let Some(item) = self.wire_item(mission_type, seq, home) else {
            self.sending = None;
            let result = match self.personality {
                Personality::ArduPilot => R::MAV_MISSION_INVALID_SEQUENCE,
                Personality::Px4 => R::MAV_MISSION_ERROR,
            };
            self.ack(from, mission_type, result);
            return;
        };
        self.outbox.push_back(if int {
            MavMessage::MISSION_ITEM_INT(int_of_item(&item, seq, from, mission_type))
        } else {
            MavMessage::MISSION_ITEM(float_of_item(&item, seq, from, mission_type))
        });
    }

    /// Item `seq` on the wire: ArduPilot's slot 0 is home (AMSL, `MAV_FRAME_GLOBAL`).
    fn wire_item(
        &self,
        mission_type: MavMissionType,
        seq: u16,
        home: GeoPoint,
    ) -> Option<MissionItem> {
        let index = list_index(mission_type)?;
        let offset = self.offset(mission_type);
        if offset == 1 && seq == 0 {
            return Some(MissionItem::home_placeholder(Some((
                (home.lat_deg * 1e7).round() as i32,
                (home.lon_deg * 1e7).round() as i32,
                home.alt_amsl_m as f32,
            ))));
        }
        self.lists[index]
            .get(usize::from(seq.checked_sub(offset)?))
            .copied()
    }

    fn on_ack(&mut self, from: (u8, u8), mission_type: MavMissionType) {
        // PX4: any ACK from the partner ends its SENDLIST state.
        if let Some(s) = &self.sending
            && s.partner == from
            && s.mission_type == mission_type
        {
            self.sending = None;
        }
        // A ground station's cancel of an upload (MAV_MISSION_OPERATION_CANCELLED).
        if let Some(r) = &self.receiving
            && r.partner == from
            && r.mission_type == mission_type
        {
            self.receiving = None;
        }
    }

    fn on_clear(&mut self, from: (u8, u8), mission_type: MavMissionType) {
        let busy = self.receiving.is_some() || self.sending.is_some();
        if busy {
            match self.personality {
                Personality::ArduPilot => {
                    self.ack(from, mission_type, MavMissionResult::MAV_MISSION_ERROR)
                }
                Personality::Px4 => self.texts.push_back("WPM: IGN CLEAR CMD: Busy".into()),
            }
            return;
        }
        let types: &[MavMissionType] = match mission_type {
            MavMissionType::MAV_MISSION_TYPE_ALL => &[
                MavMissionType::MAV_MISSION_TYPE_MISSION,
                MavMissionType::MAV_MISSION_TYPE_FENCE,
                MavMissionType::MAV_MISSION_TYPE_RALLY,
            ],
            _ => std::slice::from_ref(&mission_type),
        };
        for t in types {
            if let Some(i) = list_index(*t) {
                self.lists[i].clear();
                self.changes.push_back(ListChange::Cleared(*t));
            }
        }
        self.ack(from, mission_type, MavMissionResult::MAV_MISSION_ACCEPTED);
    }

    fn request(&mut self, to: (u8, u8), mission_type: MavMissionType, seq: u16) {
        self.outbox.push_back(match self.personality {
            Personality::ArduPilot => MavMessage::MISSION_REQUEST(MISSION_REQUEST_DATA {
                seq,
                target_system: to.0,
                target_component: to.1,
                mission_type,
            }),
            Personality::Px4 => MavMessage::MISSION_REQUEST_INT(MISSION_REQUEST_INT_DATA {
                seq,
                target_system: to.0,
                target_component: to.1,
                mission_type,
            }),
        });
    }

    fn ack(&mut self, to: (u8, u8), mission_type: MavMissionType, result: MavMissionResult) {
        self.outbox
            .push_back(MavMessage::MISSION_ACK(MISSION_ACK_DATA {
                target_system: to.0,
                target_component: to.1,
                mavtype: result,
                mission_type,
                opaque_id: 0,
            }));
    }

    /// Our own ids (the autopilot's), for the caller's addressing checks.
    pub fn ids(&self) -> (u8, u8) {
        (self.system_id, self.component_id)
    }
}

fn item_of_int(m: &MISSION_ITEM_INT_DATA) -> MissionItem {
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

fn item_of_float(m: &MISSION_ITEM_DATA) -> MissionItem {
    let scale = if frame_is_global(m.frame) { 1e7 } else { 1e4 };
    MissionItem {
        command: m.command,
        frame: m.frame,
        params: [m.param1, m.param2, m.param3, m.param4],
        // `as` saturates and maps NaN to 0: bad input cannot panic.
        x: (f64::from(m.x) * scale).round() as i32,
        y: (f64::from(m.y) * scale).round() as i32,
        z: m.z,
        autocontinue: m.autocontinue != 0,
    }
}

fn int_of_item(
    item: &MissionItem,
    seq: u16,
    to: (u8, u8),
    mission_type: MavMissionType,
) -> MISSION_ITEM_INT_DATA {
    MISSION_ITEM_INT_DATA {
        param1: item.params[0],
        param2: item.params[1],
        param3: item.params[2],
        param4: item.params[3],
        x: item.x,
        y: item.y,
        z: item.z,
        seq,
        command: item.command,
        target_system: to.0,
        target_component: to.1,
        frame: item.frame,
        current: 0,
        autocontinue: u8::from(item.autocontinue),
        mission_type,
    }
}

fn float_of_item(
    item: &MissionItem,
    seq: u16,
    to: (u8, u8),
    mission_type: MavMissionType,
) -> MISSION_ITEM_DATA {
    let scale = if frame_is_global(item.frame) {
        1e-7
    } else {
        1e-4
    };
    MISSION_ITEM_DATA {
        param1: item.params[0],
        param2: item.params[1],
        param3: item.params[2],
        param4: item.params[3],
        x: (f64::from(item.x) * scale) as f32,
        y: (f64::from(item.y) * scale) as f32,
        z: item.z,
        seq,
        command: item.command,
        target_system: to.0,
        target_component: to.1,
        frame: item.frame,
        current: 0,
        autocontinue: u8::from(item.autocontinue),
        mission_type,
    }
}

#[cfg(test)]
mod tests;
