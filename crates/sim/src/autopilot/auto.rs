//! AUTO (ArduCopter) / AUTO.MISSION (PX4): flying the uploaded mission, and the mission
//! protocol wired into the simulated autopilot.
//!
//! What each item does, as the firmware runs it:
//! - `NAV_TAKEOFF`: climb straight up to param7 (ArduCopter `ModeAuto::takeoff_start`; PX4
//!   `mission_block.cpp` takes off vertically before the first waypoint).
//! - `NAV_WAYPOINT`: fly to the point (0/0 latitude/longitude: where it is), altitude by frame
//!   (relative to home, or AMSL for `MAV_FRAME_GLOBAL`), reached within param2 (0: 2 m,
//!   ArduCopter `WPNAV_RADIUS`, PX4 `NAV_ACC_RAD`), then wait param1 seconds.
//! - `NAV_LOITER_TIME`: a waypoint, then param1 seconds there.
//! - `DO_CHANGE_SPEED`: the horizontal speed (param2, m/s) of the following legs.
//! - `DO_DIGICAM_CONTROL`, `IMAGE_START_CAPTURE`: a camera trigger (the event
//!   `camera trigger at item N`).
//! - `NAV_LAND`: fly to the point (0/0: here), descend, disarm on the ground.
//! - `NAV_RETURN_TO_LAUNCH`: ArduCopter flies its RTL inside AUTO (`ModeAuto::do_RTL`, the
//!   mode stays AUTO); PX4 switches to AUTO.RTL (navigator's mission RTL item).
//! - At the end: ArduCopter holds the last point in AUTO; PX4 switches to AUTO.LOITER
//!   ("mission finished, loitering").
//! - `MISSION_CURRENT` when the item changes and once a second; `MISSION_ITEM_REACHED` at each
//!   navigation item reached (ArduCopter `AP_Mission`/`GCS_Common.cpp`; PX4
//!   `MavlinkMissionManager::send`).
//! - Pause: leaving AUTO (ArduCopter BRAKE or LOITER, PX4 AUTO.LOITER) keeps the current item;
//!   entering AUTO again resumes it (ArduCopter `MIS_RESTART` 0; PX4 resumes the current
//!   item). ArduCopter's `MAV_CMD_DO_PAUSE_CONTINUE` (param1 0: pause, 1: continue) stops and
//!   resumes inside AUTO (`ModeAuto::pause`/`resume`).
//! - `MISSION_SET_CURRENT` makes an item current and, in AUTO, flies to it.

#![allow(deprecated)] // MISSION_SET_CURRENT and the *_INT frames: what both firmwares still use

use std::time::Duration;

use nalgebra::Vector3;

use super::*;
use crate::mission::ListChange;
use flight_companion_core::link::dialect::{
    MISSION_CURRENT_DATA, MISSION_ITEM_REACHED_DATA, MavMissionType,
};
use flight_companion_core::vehicle::mission::MissionItem;

const MISSION: MavMissionType = MavMissionType::MAV_MISSION_TYPE_MISSION;
/// ArduCopter `WPNAV_RADIUS` (200 cm) and PX4 `NAV_ACC_RAD` (2 m) by default.
const ACCEPTANCE_RADIUS_M: f64 = 2.0;
const ACCEPTANCE_VERTICAL_M: f64 = 1.0;
const MISSION_CURRENT_INTERVAL: Duration = Duration::from_secs(1);

/// Where the running item is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
    /// Not started (entering AUTO starts the current item).
    Idle,
    /// Flying towards the item's point.
    Flying { target_ned_m: Vector3<f64> },
    /// At the point until the given time.
    Waiting { until: Duration },
    /// Climbing to the takeoff altitude.
    Climbing { altitude_m: f64 },
    /// Going down to land at the item's point.
    Landing,
    /// ArduCopter's RTL inside AUTO.
    Returning,
    /// Past the last item.
    Complete,
}

/// The mission's progress inside the simulated autopilot.
#[derive(Debug, Clone)]
pub(super) struct AutoState {
    /// The current item, in the list without ArduPilot's home slot.
    pub current: u16,
    pub phase: Phase,
    /// `DO_PAUSE_CONTINUE` pause (ArduCopter).
    pub paused: bool,
    /// The speed a `DO_CHANGE_SPEED` item set, for the legs after it.
    pub speed_m_s: Option<f64>,
    pub current_sent_at: Option<Duration>,
    pub last_current_sent: Option<u16>,
}

impl AutoState {
    pub fn new() -> Self {
        Self {
            current: 0,
            phase: Phase::Idle,
            paused: false,
            speed_m_s: None,
            current_sent_at: None,
            last_current_sent: None,
        }
    }
}

impl SimAutopilot {
    /// The mission protocol's messages: handled by the list server; `MISSION_SET_CURRENT`
    /// here. Returns true when `message` was one of them.
    pub(super) fn handle_mission_message(
        &mut self,
        now: Duration,
        header: &MavHeader,
        message: &MavMessage,
    ) -> bool {
        if let MavMessage::MISSION_SET_CURRENT(m) = message {
            let offset = self.missions.offset(MISSION);
            let count = self.missions.list(MISSION).len() as u16;
            match m.seq.checked_sub(offset) {
                Some(item) if item < count => {
                    self.auto.current = item;
                    self.auto.phase = Phase::Idle;
                    if self.mode == FlightMode::Mission && self.armed {
                        self.start_item(now);
                    }
                }
                _ => self.status_text(
                    MavSeverity::MAV_SEVERITY_WARNING,
                    "WP CURR CMD: Not in list",
                ),
            }
            // Both firmwares answer with the current item.
            self.send_mission_current(now);
            return true;
        }
        let from = (header.system_id as u8, header.component_id);
        let home = self.home;
        if !self.missions.handle_message(now, from, message, home) {
            return false;
        }
        self.drain_missions();
        true
    }

    fn drain_missions(&mut self) {
        while let Some(m) = self.missions.poll_transmit() {
            self.outbox.push_back(m);
        }
        while let Some(text) = self.missions.poll_text() {
            self.status_text(MavSeverity::MAV_SEVERITY_WARNING, &text);
        }
        while let Some(change) = self.missions.poll_change() {
            if matches!(change, ListChange::Replaced(t) | ListChange::Cleared(t) if t == MISSION) {
                // A new mission starts from its first item.
                self.auto = AutoState::new();
                if self.mode == FlightMode::Mission {
                    self.physics.set_target(Target::Hold);
                }
            }
        }
    }

    /// The protocol's retries and `MISSION_CURRENT` once a second; call at every step.
    pub(super) fn tick_missions(&mut self, now: Duration) {
        self.missions.tick(now);
        self.drain_missions();
        let due = self
            .auto
            .current_sent_at
            .is_none_or(|at| now.saturating_sub(at) >= MISSION_CURRENT_INTERVAL);
        if due && !self.missions.list(MISSION).is_empty() {
            self.send_mission_current(now);
        }
    }

    /// Whether AUTO may be entered, and why not (`ModeAuto::init`: a mission is needed; armed
    /// on the ground it must start with a takeoff, "Auto: Missing Takeoff Cmd").
    pub(super) fn auto_refusal(&self) -> Option<&'static str> {
        let list = self.missions.list(MISSION);
        if list.is_empty() {
            return Some("no mission");
        }
        if self.personality == Personality::ArduPilot
            && self.armed
            && self.physics.on_ground()
            && list
                .iter()
                .find(|i| is_nav(i.command))
                .is_none_or(|i| i.command != MavCmd::MAV_CMD_NAV_TAKEOFF)
        {
            return Some("Auto: Missing Takeoff Cmd");
        }
        None
    }

    /// Entering AUTO: the current item starts (or resumes) at the next physics step, after
    /// `set_mode` has set the airframe's hold.
    pub(super) fn enter_auto(&mut self) {
        if self.auto.phase == Phase::Complete {
            self.auto.current = 0;
        }
        self.auto.phase = Phase::Idle;
        self.auto.paused = false;
    }

    fn item(&self, index: u16) -> Option<MissionItem> {
        self.missions.list(MISSION).get(usize::from(index)).copied()
    }

    /// The item's point in metres NED from home, with its altitude by frame.
    fn item_target_ned_m(&self, item: &MissionItem) -> Vector3<f64> {
        let here = self.physics.position_ned_m();
        let (north_m, east_m) = if item.x == 0 && item.y == 0 {
            (here.x, here.y)
        } else {
            let point = GeoPoint {
                lat_deg: f64::from(item.x) * 1e-7,
                lon_deg: f64::from(item.y) * 1e-7,
                alt_amsl_m: self.home.alt_amsl_m,
            };
            let ned = self.home.ned_to(&point);
            (ned.x, ned.y)
        };
        let altitude_m = match item.frame {
            MavFrame::MAV_FRAME_GLOBAL | MavFrame::MAV_FRAME_GLOBAL_INT => {
                f64::from(item.z) - self.home.alt_amsl_m
            }
            // Relative (and terrain, over the simulator's flat ground).
            _ => f64::from(item.z),
        };
        let altitude_m = if altitude_m.is_finite() {
            altitude_m
        } else {
            -here.z
        };
        Vector3::new(north_m, east_m, -altitude_m)
    }

    fn start_item(&mut self, now: Duration) {
        loop {
            let Some(item) = self.item(self.auto.current) else {
                self.mission_complete();
                return;
            };
            self.send_mission_current(now);
            use MavCmd as C;
            match item.command {
                C::MAV_CMD_NAV_TAKEOFF => {
                    let altitude_m = -self.item_target_ned_m(&item).z;
                    let here = self.physics.position_ned_m();
                    self.physics.set_target(Target::Position {
                        ned_m: Vector3::new(here.x, here.y, -altitude_m),
                    });
                    self.auto.phase = Phase::Climbing { altitude_m };
                    return;
                }
                C::MAV_CMD_NAV_WAYPOINT | C::MAV_CMD_NAV_LOITER_TIME | C::MAV_CMD_NAV_LAND => {
                    let mut target = self.item_target_ned_m(&item);
                    if item.command == C::MAV_CMD_NAV_LAND {
                        // Land where the item says, from the altitude it is at.
                        target.z = self.physics.position_ned_m().z;
                    }
                    self.physics.set_target(Target::Position { ned_m: target });
                    self.auto.phase = Phase::Flying {
                        target_ned_m: target,
                    };
                    return;
                }
                C::MAV_CMD_NAV_RETURN_TO_LAUNCH => {
                    match self.personality {
                        Personality::ArduPilot => {
                            self.rtl_stage = RtlStage::Climb;
                            self.rtl_return_alt_m = None;
                            self.auto.phase = Phase::Returning;
                        }
                        Personality::Px4 => {
                            self.auto.phase = Phase::Complete;
                            self.set_mode(FlightMode::Rtl);
                        }
                    }
                    return;
                }
                // A speed of 0 or -1 leaves the speed as it is.
                C::MAV_CMD_DO_CHANGE_SPEED if item.params[1] > 0.0 => {
                    self.auto.speed_m_s = Some(f64::from(item.params[1]));
                }
                C::MAV_CMD_DO_DIGICAM_CONTROL | C::MAV_CMD_IMAGE_START_CAPTURE => {
                    self.events.push_back(SimEvent::CameraTrigger {
                        item: self.auto.current,
                    });
                }
                // Other DO/CONDITION items are not simulated: passed over as done.
                _ => {}
            }
            self.auto.current += 1;
        }
    }

    fn mission_complete(&mut self) {
        self.auto.phase = Phase::Complete;
        match self.personality {
            Personality::ArduPilot => {
                if !self.physics.on_ground() {
                    self.physics.set_target(Target::Hold);
                }
            }
            Personality::Px4 => {
                self.status_text(
                    MavSeverity::MAV_SEVERITY_INFO,
                    "Mission finished, loitering",
                );
                self.set_mode(FlightMode::Loiter);
            }
        }
    }

    fn item_reached(&mut self, now: Duration) {
        let wire = self.auto.current + self.missions.offset(MISSION);
        self.outbox.push_back(MavMessage::MISSION_ITEM_REACHED(
            MISSION_ITEM_REACHED_DATA { seq: wire },
        ));
        self.auto.current += 1;
        self.start_item(now);
    }

    /// The horizontal speed in AUTO (`DO_CHANGE_SPEED` items, else the firmware's own).
    pub(super) fn auto_speed_m_s(&self) -> Option<f64> {
        self.auto.speed_m_s
    }

    /// One physics step of AUTO; call only in AUTO, armed, not terminated.
    pub(super) fn tick_auto(&mut self, now: Duration) {
        if self.auto.paused {
            return;
        }
        if self.auto.phase == Phase::Idle {
            self.start_item(now);
        }
        let here = self.physics.position_ned_m();
        let at_rest = self.physics.velocity_ned_m_s().norm() < 0.5;
        match self.auto.phase {
            Phase::Climbing { altitude_m } => {
                if self.physics.altitude_m() >= altitude_m - 0.5 {
                    self.item_reached(now);
                }
            }
            Phase::Flying { target_ned_m } => {
                let Some(item) = self.item(self.auto.current) else {
                    self.mission_complete();
                    return;
                };
                let radius_m =
                    if item.params[1] > 0.0 && item.command == MavCmd::MAV_CMD_NAV_WAYPOINT {
                        f64::from(item.params[1])
                    } else {
                        ACCEPTANCE_RADIUS_M
                    };
                let horizontal_m = (here.xy() - target_ned_m.xy()).norm();
                let vertical_m = (here.z - target_ned_m.z).abs();
                if horizontal_m > radius_m || vertical_m > ACCEPTANCE_VERTICAL_M {
                    return;
                }
                match item.command {
                    MavCmd::MAV_CMD_NAV_LAND => {
                        self.auto.phase = Phase::Landing;
                        self.physics.set_target(Target::Descend {
                            speed_m_s: self.land_speed_m_s(),
                        });
                    }
                    _ => {
                        let wait_s = f64::from(item.params[0]).clamp(0.0, 3600.0);
                        self.auto.phase = Phase::Waiting {
                            until: now + Duration::from_secs_f64(wait_s),
                        };
                    }
                }
            }
            Phase::Waiting { until } => {
                if now >= until {
                    self.item_reached(now);
                }
            }
            Phase::Landing => {
                if self.physics.on_ground() && at_rest {
                    let wire = self.auto.current + self.missions.offset(MISSION);
                    self.outbox.push_back(MavMessage::MISSION_ITEM_REACHED(
                        MISSION_ITEM_REACHED_DATA { seq: wire },
                    ));
                    self.auto.current += 1;
                    self.auto.phase = Phase::Complete;
                } else {
                    self.physics.set_target(Target::Descend {
                        speed_m_s: self.land_speed_m_s(),
                    });
                }
            }
            Phase::Returning => {
                if self.physics.on_ground() && self.rtl_stage == RtlStage::Descend {
                    self.auto.current += 1;
                    self.auto.phase = Phase::Complete;
                } else {
                    self.tick_rtl();
                }
            }
            Phase::Idle | Phase::Complete => {}
        }
    }

    /// ArduCopter's `MAV_CMD_DO_PAUSE_CONTINUE` in AUTO.
    pub(super) fn pause_continue(&mut self, now: Duration, continue_: bool) -> MavResult {
        if self.personality != Personality::ArduPilot {
            return MavResult::MAV_RESULT_UNSUPPORTED;
        }
        if self.mode != FlightMode::Mission || !self.armed {
            return MavResult::MAV_RESULT_FAILED;
        }
        if continue_ {
            self.auto.paused = false;
            self.auto.phase = Phase::Idle;
            self.start_item(now);
        } else {
            self.auto.paused = true;
            self.physics.set_target(Target::Hold);
        }
        MavResult::MAV_RESULT_ACCEPTED
    }

    fn send_mission_current(&mut self, now: Duration) {
        let offset = self.missions.offset(MISSION);
        let total = self.missions.list(MISSION).len() as u16 + offset;
        let seq = (self.auto.current + offset).min(total.saturating_sub(1));
        self.auto.current_sent_at = Some(now);
        self.auto.last_current_sent = Some(seq);
        self.outbox
            .push_back(MavMessage::MISSION_CURRENT(MISSION_CURRENT_DATA {
                seq,
                total,
                ..MISSION_CURRENT_DATA::DEFAULT
            }));
    }
}

fn is_nav(command: MavCmd) -> bool {
    (command as u32) < 95 || matches!(command, MavCmd::MAV_CMD_NAV_TAKEOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCS: MavHeader = MavHeader {
        system_id: 255,
        component_id: 190,
        sequence: 0,
    };
    const HOME: GeoPoint = GeoPoint {
        lat_deg: 47.397742,
        lon_deg: 8.545594,
        alt_amsl_m: 488.0,
    };

    struct Run {
        sim: SimAutopilot,
        now: Duration,
        sent: Vec<MavMessage>,
        events: Vec<SimEvent>,
    }

    impl Run {
        fn new(personality: Personality) -> Self {
            let sim = SimAutopilot::new(SimOptions {
                autopilot: personality,
                home: HOME,
                seed: 1,
                system_id: 1,
                ekf_ready_s: Some(0.0),
            });
            Run {
                sim,
                now: Duration::ZERO,
                sent: Vec::new(),
                events: Vec::new(),
            }
        }

        fn drain(&mut self) {
            while let Some(m) = self.sim.poll_transmit(self.now) {
                self.sent.push(m);
            }
            while let Some(e) = self.sim.poll_event() {
                self.events.push(e);
            }
        }

        fn send(&mut self, message: MavMessage) {
            self.sim.handle_message(self.now, &GCS, &message);
            self.drain();
        }

        fn run_until(&mut self, seconds: f64, done: impl Fn(&Run) -> bool) {
            let end = self.now + Duration::from_secs_f64(seconds);
            while self.now < end {
                if done(self) {
                    return;
                }
                self.now += PHYSICS_STEP;
                self.sim.step(self.now);
                self.drain();
            }
            panic!(
                "not done in {seconds} s: mode {:?} armed {} alt {:.1} auto {:?} events {:?}",
                self.sim.mode,
                self.sim.armed,
                self.sim.altitude_m(),
                self.sim.auto,
                self.events
            );
        }

        fn command(&mut self, command: MavCmd, params: [f32; 7]) -> MavResult {
            self.send(MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                param1: params[0],
                param2: params[1],
                param3: params[2],
                param4: params[3],
                param5: params[4],
                param6: params[5],
                param7: params[6],
                command,
                target_system: 1,
                target_component: 1,
                confirmation: 0,
            }));
            self.sent
                .iter()
                .rev()
                .find_map(|m| match m {
                    MavMessage::COMMAND_ACK(a) if a.command == command => Some(a.result),
                    _ => None,
                })
                .expect("an ACK")
        }

        fn mode(&mut self, mode: FlightMode) -> MavResult {
            let custom = mode.custom_mode(self.sim.personality).expect("a mode");
            let (p2, p3) = match self.sim.personality {
                Personality::ArduPilot => (custom as f32, 0.0),
                Personality::Px4 => (((custom >> 16) & 0xff) as f32, (custom >> 24) as f32),
            };
            self.command(
                MavCmd::MAV_CMD_DO_SET_MODE,
                [1.0, p2, p3, 0.0, 0.0, 0.0, 0.0],
            )
        }

        fn reached(&self) -> Vec<u16> {
            self.sent
                .iter()
                .filter_map(|m| match m {
                    MavMessage::MISSION_ITEM_REACHED(r) => Some(r.seq),
                    _ => None,
                })
                .collect()
        }
    }

    fn item(
        command: MavCmd,
        params: [f32; 4],
        north_m: f64,
        east_m: f64,
        alt_m: f32,
    ) -> MissionItem {
        let p = HOME.offset_by(&Vector3::new(north_m, east_m, 0.0));
        MissionItem {
            command,
            frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            params,
            x: (p.lat_deg * 1e7).round() as i32,
            y: (p.lon_deg * 1e7).round() as i32,
            z: alt_m,
            autocontinue: true,
        }
    }

    fn survey(end: MavCmd) -> Vec<MissionItem> {
        use MavCmd as C;
        vec![
            item(C::MAV_CMD_NAV_TAKEOFF, [0.0; 4], 0.0, 0.0, 10.0),
            item(
                C::MAV_CMD_DO_CHANGE_SPEED,
                [1.0, 5.0, -1.0, 0.0],
                0.0,
                0.0,
                0.0,
            ),
            item(C::MAV_CMD_NAV_WAYPOINT, [0.0; 4], 30.0, 0.0, 10.0),
            item(
                C::MAV_CMD_IMAGE_START_CAPTURE,
                [0.0, 0.0, 1.0, 0.0],
                0.0,
                0.0,
                0.0,
            ),
            item(
                C::MAV_CMD_NAV_LOITER_TIME,
                [2.0, 0.0, 0.0, 0.0],
                30.0,
                20.0,
                15.0,
            ),
            item(
                C::MAV_CMD_DO_DIGICAM_CONTROL,
                [0.0, 0.0, 0.0, 0.0],
                0.0,
                0.0,
                0.0,
            ),
            item(C::MAV_CMD_NAV_WAYPOINT, [0.0; 4], 0.0, 20.0, 10.0),
            match end {
                C::MAV_CMD_NAV_LAND => item(end, [0.0; 4], 0.0, 20.0, 0.0),
                _ => item(end, [0.0; 4], 0.0, 0.0, 0.0),
            },
        ]
    }

    fn load(run: &mut Run, items: Vec<MissionItem>) {
        run.sim.missions.set_list(MISSION, items);
        run.sim.auto = AutoState::new();
    }

    fn fly(personality: Personality, end: MavCmd) -> Run {
        let mut run = Run::new(personality);
        run.run_until(5.0, |r| r.sim.position_ok());
        load(&mut run, survey(end));
        let arm_mode = match personality {
            Personality::ArduPilot => FlightMode::Guided,
            Personality::Px4 => FlightMode::Loiter,
        };
        assert_eq!(run.mode(arm_mode), MavResult::MAV_RESULT_ACCEPTED);
        assert_eq!(
            run.command(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            ),
            MavResult::MAV_RESULT_ACCEPTED
        );
        assert_eq!(
            run.mode(FlightMode::Mission),
            MavResult::MAV_RESULT_ACCEPTED
        );
        run
    }

    #[test]
    fn ardupilot_flies_the_survey_and_returns_inside_auto_mode_auto_do_rtl() {
        let mut run = fly(Personality::ArduPilot, MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH);
        run.run_until(200.0, |r| !r.sim.armed);
        // Home is wire item 0: the takeoff is 1, the waypoints 3, 5 (loiter) and 7.
        assert_eq!(run.reached(), vec![1, 3, 5, 7]);
        assert_eq!(run.sim.mode, FlightMode::Mission, "RTL runs inside AUTO");
        let triggers = run
            .events
            .iter()
            .filter(|e| matches!(e, SimEvent::CameraTrigger { .. }))
            .count();
        assert_eq!(triggers, 2);
        assert!(run.sim.physics.horizontal_distance_m(&Vector3::zeros()) < 2.0);
    }

    #[test]
    fn px4_flies_the_survey_lands_and_has_no_home_slot_mavlink_mission_cpp() {
        let mut run = fly(Personality::Px4, MavCmd::MAV_CMD_NAV_LAND);
        run.run_until(200.0, |r| !r.sim.armed);
        assert_eq!(run.reached(), vec![0, 2, 4, 6, 7]);
        let here = run.sim.physics.position_ned_m();
        assert!(
            (here.y - 20.0).abs() < 2.5 && here.x.abs() < 2.5,
            "landed at the item: {here:?}"
        );
    }

    #[test]
    fn px4_loiters_when_the_mission_ends_navigator_mission_cpp() {
        let mut run = fly(Personality::Px4, MavCmd::MAV_CMD_NAV_WAYPOINT);
        run.run_until(200.0, |r| r.sim.mode == FlightMode::Loiter);
        assert!(run.sim.armed && !run.sim.physics.on_ground());
    }

    #[test]
    fn do_change_speed_sets_the_legs_speed() {
        let mut run = fly(Personality::ArduPilot, MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH);
        run.run_until(60.0, |r| {
            r.sim.auto.current == 2 && matches!(r.sim.auto.phase, Phase::Flying { .. })
        });
        run.run_until(3.0, |r| r.sim.physics.velocity_ned_m_s().xy().norm() > 4.5);
        let mut top = 0.0f64;
        for _ in 0..200 {
            run.now += PHYSICS_STEP;
            run.sim.step(run.now);
            run.drain();
            top = top.max(run.sim.physics.velocity_ned_m_s().xy().norm());
        }
        assert!(
            top <= 5.3,
            "the leg after DO_CHANGE_SPEED 5 m/s flew at {top:.2} m/s"
        );
    }

    #[test]
    fn pause_and_resume_by_mode_keep_the_current_item_both_firmwares() {
        for personality in [Personality::ArduPilot, Personality::Px4] {
            let mut run = fly(personality, MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH);
            run.run_until(60.0, |r| {
                r.sim.auto.current == 2 && matches!(r.sim.auto.phase, Phase::Flying { .. })
            });
            run.run_until(3.0, |r| r.sim.physics.velocity_ned_m_s().xy().norm() > 2.0);
            let pause = match personality {
                Personality::ArduPilot => FlightMode::Brake,
                Personality::Px4 => FlightMode::Loiter,
            };
            assert_eq!(run.mode(pause), MavResult::MAV_RESULT_ACCEPTED);
            run.run_until(15.0, |r| r.sim.physics.velocity_ned_m_s().norm() < 0.1);
            let stopped_at = run.sim.physics.position_ned_m();
            assert!(
                stopped_at.x < 28.0,
                "{personality:?} stopped short of the waypoint"
            );
            assert_eq!(run.sim.auto.current, 2);
            assert_eq!(
                run.mode(FlightMode::Mission),
                MavResult::MAV_RESULT_ACCEPTED
            );
            run.run_until(60.0, |r| {
                r.reached().contains(&(2 + r.sim.missions.offset(MISSION)))
            });
        }
    }

    #[test]
    fn ardupilot_do_pause_continue_holds_inside_auto_mode_auto_pause() {
        let mut run = fly(Personality::ArduPilot, MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH);
        run.run_until(60.0, |r| {
            r.sim.auto.current == 2 && matches!(r.sim.auto.phase, Phase::Flying { .. })
        });
        run.run_until(3.0, |r| r.sim.physics.velocity_ned_m_s().xy().norm() > 2.0);
        let pause = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(
            run.command(MavCmd::MAV_CMD_DO_PAUSE_CONTINUE, pause),
            MavResult::MAV_RESULT_ACCEPTED
        );
        run.run_until(15.0, |r| r.sim.physics.velocity_ned_m_s().norm() < 0.1);
        assert_eq!(run.sim.mode, FlightMode::Mission);
        let resume = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(
            run.command(MavCmd::MAV_CMD_DO_PAUSE_CONTINUE, resume),
            MavResult::MAV_RESULT_ACCEPTED
        );
        run.run_until(60.0, |r| r.reached().contains(&3));
    }

    #[test]
    fn auto_is_refused_without_a_mission_and_armed_on_the_ground_without_takeoff() {
        let mut run = Run::new(Personality::ArduPilot);
        run.run_until(5.0, |r| r.sim.position_ok());
        assert_eq!(run.mode(FlightMode::Guided), MavResult::MAV_RESULT_ACCEPTED);
        run.command(
            MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        );
        assert_eq!(run.mode(FlightMode::Mission), MavResult::MAV_RESULT_FAILED);
        load(
            &mut run,
            vec![item(
                MavCmd::MAV_CMD_NAV_WAYPOINT,
                [0.0; 4],
                10.0,
                0.0,
                10.0,
            )],
        );
        assert_eq!(run.mode(FlightMode::Mission), MavResult::MAV_RESULT_FAILED);
        let texts: Vec<_> = run
            .events
            .iter()
            .filter_map(|e| match e {
                SimEvent::StatusText(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("Missing Takeoff Cmd")),
            "{texts:?}"
        );
    }

    #[test]
    fn mission_set_current_jumps_and_mission_current_reports_it() {
        let mut run = fly(Personality::ArduPilot, MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH);
        run.run_until(60.0, |r| r.sim.auto.current == 2);
        run.send(MavMessage::MISSION_SET_CURRENT(
            flight_companion_core::link::dialect::MISSION_SET_CURRENT_DATA {
                seq: 7,
                target_system: 1,
                target_component: 1,
            },
        ));
        assert_eq!(run.sim.auto.current, 6);
        assert!(
            matches!(run.sent.last(), Some(MavMessage::MISSION_CURRENT(c)) if c.seq == 7 && c.total == 9)
        );
    }
}
