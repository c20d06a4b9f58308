//! The executor inside the supervisor against the simulated autopilot, in process, on
//! virtual time: whole flights as a pure function of time and inputs, no sockets, no sleeps.

use std::time::{Duration, Instant};

use crate::control::{Caller, EnvelopeView};
use crate::daemon::{Core, CoreOptions, Event, Handled, Input, Transmit};
use crate::flight::{Action, ExecutorEvent, JobEnd, JobId, Outcome};
use crate::link::dialect::{COMMAND_LONG_DATA, MavCmd, MavParamType, PARAM_SET_DATA};
use crate::link::event::LinkEvent;
use crate::link::{MavHeader, MavMessage};
use crate::role::Role;
use crate::sim::autopilot::{PHYSICS_STEP, Personality, SimAutopilot, SimEvent, SimOptions};
use crate::sim::physics::GeoPoint;
use crate::supervisor::{Supervisor, SupervisorOptions};

const HOME: GeoPoint = GeoPoint {
    lat_deg: -35.363261,
    lon_deg: 149.165230,
    alt_amsl_m: 584.0,
};

/// The simulator's start-up is not what these flights are about: its EKF trusts its position
/// after 2 s instead of ArduCopter's 42 s (arming from 2.1 s; PX4's from 3.3 s), and the rig
/// runs 6 s before the first request.
const EKF_READY_S: f64 = 2.0;

/// The simulated autopilot and the daemon's real [`Core`] (supervisor, e-stop, one
/// whitelist), driven in the daemon loop's order: each input, then everything the Core sends
/// and reports.
struct Rig {
    sim: SimAutopilot,
    core: Core,
    t0: Instant,
    now: Duration,
    companion: MavHeader,
    /// Everything the supervisor sent, with the virtual time.
    sent: Vec<(Duration, MavMessage)>,
    sim_events: Vec<(Duration, SimEvent)>,
    ends: Vec<(JobId, JobEnd)>,
    progress: Vec<(JobId, String)>,
    /// The answers of mission transfers (`Event::MissionDone`).
    missions: Vec<crate::control::mission::MissionAnswer>,
    /// The audit records the Core asked for, with the virtual time.
    audits: Vec<(Duration, crate::audit::Event)>,
    /// The MCP shell's side of the ground link, when the rig has one: connected, and the
    /// shell stamping while `serving` (`GroundState::serving_at`, fed as the loop feeds it).
    ground: Option<GroundFeed>,
}

struct GroundFeed {
    serving: bool,
    stamped: Duration,
}

fn operator() -> Caller {
    Caller {
        role: Role::Operator,
        identity: "test".into(),
    }
}

impl Rig {
    fn new(personality: Personality) -> Rig {
        Rig::build(personality, false)
    }

    /// A rig whose Core has a ground link (the e-stop's ground failsafes on), connected and
    /// served by a shell that stamps every `GROUND_SERVING_STAMP_PERIOD`.
    fn with_ground_link(personality: Personality) -> Rig {
        Rig::build(personality, true)
    }

    fn build(personality: Personality, ground_link: bool) -> Rig {
        let options = SupervisorOptions::from_config(&crate::config::VehicleConfig::default());
        let companion = MavHeader {
            system_id: options.system_id.into(),
            component_id: options.component_id,
            sequence: 0,
        };
        let t0 = Instant::now();
        let mut rig = Rig {
            sim: SimAutopilot::new(SimOptions {
                autopilot: personality,
                home: HOME,
                seed: 7,
                system_id: 1,
                ekf_ready_s: Some(EKF_READY_S),
            }),
            core: Core::new(
                CoreOptions {
                    supervisor: options,
                    stop: crate::estop::StopOptions::default(),
                    without_ground_link: !ground_link,
                    bridge: None,
                    health: crate::config::HealthConfig::default(),
                    watchdog_interval: None,
                    mission: crate::vehicle::mission::MissionOptions::from_config(
                        &crate::config::VehicleConfig::default(),
                    ),
                },
                t0,
            ),
            t0,
            now: Duration::ZERO,
            companion,
            sent: Vec::new(),
            sim_events: Vec::new(),
            ends: Vec::new(),
            progress: Vec::new(),
            missions: Vec::new(),
            audits: Vec::new(),
            ground: ground_link.then_some(GroundFeed {
                serving: true,
                stamped: Duration::ZERO,
            }),
        };
        if ground_link {
            rig.feed_ground();
        }
        // Heartbeats, telemetry requests, a position and home.
        rig.run(6.0);
        assert!(
            rig.sup().vehicle().position_valid(rig.instant()),
            "the rig has a position"
        );
        rig
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn sup(&self) -> &Supervisor {
        self.core.supervisor()
    }

    /// The ground's state as the loop hands it to the Core: connected, with the shell's
    /// newest stamp.
    fn feed_ground(&mut self) {
        let Some(ground) = &mut self.ground else {
            return;
        };
        ground.stamped = self.now;
        let state = crate::estop::GroundState {
            connected: true,
            activity_at: None,
            serving_at: Some(self.t0 + ground.stamped),
        };
        self.turn(Input::Ground(state));
    }

    /// One loop turn for what the simulator sent in this step, handed over together as the
    /// daemon's link task hands over one read (a timer's turn when there is nothing); a new
    /// stamp of the ground's shell first, when one is due.
    fn exchange(&mut self) {
        if let Some(ground) = &self.ground
            && ground.serving
            && self.now >= ground.stamped + crate::estop::request::GROUND_SERVING_STAMP_PERIOD
        {
            self.feed_ground();
        }
        let now = self.instant();
        let header = MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 0,
        };
        let mut read = Vec::new();
        while let Some(message) = self.sim.poll_transmit(self.now) {
            read.push(LinkEvent::frame(header, message, now));
        }
        if read.is_empty() {
            self.turn(Input::Tick);
        } else {
            self.core.handle_link_events(now, &read);
            self.carry_out(now);
        }
    }

    /// The daemon loop's turn: the input, then what the Core sends (the e-stop's commands
    /// first) and what it reports.
    fn turn(&mut self, input: Input) -> Handled {
        let now = self.instant();
        let handled = self.core.handle(now, input);
        self.carry_out(now);
        handled
    }

    /// The rest of a turn, after its input.
    fn carry_out(&mut self, now: Instant) {
        while let Some(transmit) = self.core.poll_transmit(now) {
            if let Transmit::Autopilot(m) = transmit {
                self.sent.push((self.now, m.clone()));
                self.sim.handle_message(self.now, &self.companion, &m);
            }
        }
        while let Some(e) = self.sim.poll_event() {
            self.sim_events.push((self.now, e));
        }
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Job(ExecutorEvent::Finished { job, end }) => self.ends.push((job, end)),
                Event::Job(ExecutorEvent::Progress { job, update }) => {
                    self.progress.push((job, update.message))
                }
                Event::MissionDone { answer, .. } => self.missions.push(answer),
                Event::Audit(record) => self.audits.push((self.now, record)),
                _ => {}
            }
        }
        // After a whole turn nothing is due at once: a passed deadline would turn the loop
        // again at once, forever (the stop once asked for one it could not act on).
        let wake = self.core.poll_timeout();
        assert!(
            wake > now,
            "after a turn at {:?} the Core asks for another {:?} earlier",
            self.now,
            now - wake
        );
    }

    fn set_envelope(
        &mut self,
        changes: &serde_json::Map<String, serde_json::Value>,
        caller: &Caller,
    ) -> EnvelopeView {
        let input = Input::EnvelopeChange {
            changes: changes.clone(),
            caller: caller.clone(),
        };
        match self.turn(input) {
            Handled::Envelope(view) => view,
            other => panic!("an envelope change answered with {other:?}"),
        }
    }

    fn run(&mut self, seconds: f64) {
        let end = self.now + Duration::from_secs_f64(seconds);
        while self.now < end {
            self.now += PHYSICS_STEP;
            self.sim.step(self.now);
            self.exchange();
        }
    }

    fn request(&mut self, action: Action) -> Result<JobId, String> {
        self.request_as(action, &operator())
            .map_err(|refusal| refusal.message)
    }

    fn request_as(
        &mut self,
        action: Action,
        caller: &Caller,
    ) -> Result<JobId, crate::refusal::Refusal> {
        let caller = caller.clone();
        let r = match self.turn(Input::Control { action, caller }) {
            Handled::Accepted(job) => Ok(job),
            Handled::Refused(refusal) => Err(refusal),
            other => panic!("a request answered with {other:?}"),
        };
        self.exchange();
        r
    }

    fn end_of(&self, job: JobId) -> Option<&JobEnd> {
        self.ends.iter().find(|(j, _)| *j == job).map(|(_, e)| e)
    }

    /// Runs until `job` ends (at most `seconds`); returns its end.
    fn finish(&mut self, job: JobId, seconds: f64) -> JobEnd {
        let end = self.now + Duration::from_secs_f64(seconds);
        while self.now < end {
            if let Some(e) = self.end_of(job) {
                return e.clone();
            }
            self.now += PHYSICS_STEP;
            self.sim.step(self.now);
            self.exchange();
        }
        panic!(
            "job {job:?} did not end within {seconds} s; sim mode {:?} armed {} alt {:.1}; \
             progress {:?}; sim events {:?}",
            self.sim.mode(),
            self.sim.armed(),
            self.sim.altitude_m(),
            self.progress.iter().rev().take(3).collect::<Vec<_>>(),
            self.sim_events.iter().rev().take(10).collect::<Vec<_>>()
        );
    }

    fn fly(&mut self, action: Action, seconds: f64) -> JobEnd {
        let job = self
            .request(action)
            .unwrap_or_else(|e| panic!("{action} refused: {e}"));
        self.finish(job, seconds)
    }

    fn set_param(&mut self, name: &str, value: f32) {
        let gcs = MavHeader {
            system_id: 255,
            component_id: 190,
            sequence: 0,
        };
        self.sim.handle_message(
            self.now,
            &gcs,
            &MavMessage::PARAM_SET(PARAM_SET_DATA {
                param_value: value,
                target_system: 1,
                target_component: 1,
                param_id: name.into(),
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
            }),
        );
        self.exchange();
    }

    /// A command from another ground station (system 255), straight to the simulator.
    fn gcs_command(&mut self, command: MavCmd, params: [f32; 7]) {
        let gcs = MavHeader {
            system_id: 255,
            component_id: 190,
            sequence: 0,
        };
        let [param1, param2, param3, param4, param5, param6, param7] = params;
        self.sim.handle_message(
            self.now,
            &gcs,
            &MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                param1,
                param2,
                param3,
                param4,
                param5,
                param6,
                param7,
                command,
                target_system: 1,
                target_component: 1,
                confirmation: 0,
            }),
        );
        self.exchange();
    }

    /// A mode switch that did not come from the daemon (the pilot's RC, another GCS).
    fn pilot_mode(&mut self, custom_mode: f32) {
        let gcs = MavHeader {
            system_id: 255,
            component_id: 190,
            sequence: 0,
        };
        self.sim.handle_message(
            self.now,
            &gcs,
            &MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                param1: 1.0,
                param2: custom_mode,
                command: MavCmd::MAV_CMD_DO_SET_MODE,
                target_system: 1,
                target_component: 1,
                ..COMMAND_LONG_DATA::DEFAULT
            }),
        );
        self.exchange();
    }

    fn commands_sent_since(&self, since: Duration) -> Vec<MavCmd> {
        self.sent
            .iter()
            .filter(|(t, _)| *t >= since)
            .filter_map(|(_, m)| match m {
                MavMessage::COMMAND_LONG(c) => Some(c.command),
                MavMessage::COMMAND_INT(c) => Some(c.command),
                _ => None,
            })
            .filter(|c| {
                *c != MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL && *c != MavCmd::MAV_CMD_REQUEST_MESSAGE
            })
            .collect()
    }

    fn distance_to(&self, north_m: f64, east_m: f64) -> f64 {
        let here = self.sim.position();
        let (n, e) =
            crate::geodesy::north_east_m(HOME.lat_deg, HOME.lon_deg, here.lat_deg, here.lon_deg);
        (n - north_m).hypot(e - east_m)
    }
}

fn goto_offset(north_m: f64, east_m: f64, altitude_m: f64) -> Action {
    let (latitude_deg, longitude_deg) =
        crate::geodesy::offset_deg(HOME.lat_deg, HOME.lon_deg, north_m, east_m);
    Action::Goto {
        latitude_deg,
        longitude_deg,
        altitude_m,
        speed_m_s: None,
    }
}

/// The ground link's records (`link: "ground"`), up or down, with their virtual time.
fn ground_link_records(rig: &Rig) -> Vec<(Duration, bool, String)> {
    (rig.audits.iter())
        .filter_map(|(at, record)| match record {
            crate::audit::Event::Link { link, up, detail } if link == "ground" => {
                Some((*at, *up, detail.clone()))
            }
            _ => None,
        })
        .collect()
}

/// An MCP side that stops serving in flight (its runtime stalled: the shell no longer stamps
/// the ground's state, and would never report the broker dropping the connection) is a lost
/// ground link: the failsafe holds, then brings the vehicle home, as on a lost connection;
/// each change is recorded, and the shell's next stamp is the link back.
#[test]
fn a_silent_mcp_side_in_flight_is_a_lost_ground_link_and_the_vehicle_comes_home() {
    use crate::estop::Failsafe;
    use crate::estop::request::GROUND_SILENT_MAX;
    let mut rig = Rig::with_ground_link(Personality::ArduPilot);
    let end = rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    // Served and stamped for longer than any failsafe's timeout: nothing acts.
    rig.run(12.0);
    assert!(rig.core.stop_status().failsafes_active.is_empty());
    let connected = ground_link_records(&rig);
    assert_eq!(connected.len(), 1, "only the connection: {connected:?}");
    assert!(connected[0].1, "{connected:?}");

    // The shell stalls: no more stamps.
    rig.ground.as_mut().unwrap().serving = false;
    let last_stamp = rig.ground.as_ref().unwrap().stamped;
    rig.run(GROUND_SILENT_MAX.as_secs_f64() - 0.2);
    assert_eq!(ground_link_records(&rig).len(), 1, "too early");
    rig.run(0.4);
    let records = ground_link_records(&rig);
    assert_eq!(records.len(), 2, "{records:?}");
    let (at, up, detail) = &records[1];
    assert!(!up && detail.contains("has not stamped"), "{detail}");
    // Within a step of the deadline (the rig turns every physics step; the daemon's loop
    // wakes at `poll_timeout`, which the rig checks after every turn).
    assert!(
        *at >= last_stamp + GROUND_SILENT_MAX
            && *at < last_stamp + GROUND_SILENT_MAX + PHYSICS_STEP * 2,
        "recorded at {at:?}, last stamp {last_stamp:?}"
    );
    // The ground-link timeout (5 s) later, the failsafe holds; its hold (5 s) later, home.
    let silent_at = *at;
    rig.run(5.5);
    assert_eq!(
        rig.core.stop_status().failsafes_active,
        vec![Failsafe::GroundLinkLost]
    );
    rig.run(6.0);
    let modes: Vec<_> = (rig.sim_events.iter())
        .filter(|(t, _)| *t >= silent_at)
        .filter_map(|(_, e)| match e {
            SimEvent::ModeChanged(mode) => Some(*mode),
            _ => None,
        })
        .collect();
    assert_eq!(
        modes,
        ["BRAKE", "RTL"],
        "{:?}",
        rig.sim_events.iter().rev().take(5).collect::<Vec<_>>()
    );

    // The shell serves again: the link is back, and recorded, by the loop and by the stop,
    // which stays latched: the vehicle does not resume by itself.
    rig.ground.as_mut().unwrap().serving = true;
    rig.feed_ground();
    let records = ground_link_records(&rig);
    assert_eq!(records.len(), 4, "{records:?}");
    assert!(
        records[2].1 && records[2].2.contains("serving again"),
        "{records:?}"
    );
    assert!(
        records[3].1 && records[3].2.contains("ground link back"),
        "{records:?}"
    );
    assert!(rig.core.stop_status().latched);
}

#[test]
fn ardupilot_takes_off_flies_to_a_point_and_lands() {
    let mut rig = Rig::new(Personality::ArduPilot);
    let end = rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(
        (rig.sim.altitude_m() - 10.0).abs() < 0.8,
        "{}",
        rig.sim.altitude_m()
    );
    assert!(
        rig.sim_events
            .iter()
            .any(|(_, e)| *e == SimEvent::ModeChanged("GUIDED"))
    );
    assert!(
        rig.progress.iter().any(|(_, p)| p.contains("climbing")),
        "{:?}",
        rig.progress
    );

    let end = rig.fly(goto_offset(40.0, -20.0, 15.0), 120.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(
        rig.distance_to(40.0, -20.0) < 1.5,
        "{}",
        rig.distance_to(40.0, -20.0)
    );
    assert!((rig.sim.altitude_m() - 15.0).abs() < 0.8);
    assert!(
        rig.progress.iter().any(|(_, p)| p.contains("m to go")),
        "{:?}",
        rig.progress
    );

    let end = rig.fly(Action::Land, 120.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(!rig.sim.armed() && rig.sim.altitude_m() < 0.2);
}

#[test]
fn px4_takes_off_above_sea_level_flies_to_a_point_and_lands() {
    let mut rig = Rig::new(Personality::Px4);
    let end = rig.fly(Action::Takeoff { altitude_m: 8.0 }, 60.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(
        (rig.sim.altitude_m() - 8.0).abs() < 0.8,
        "{}",
        rig.sim.altitude_m()
    );
    // PX4's NAV_TAKEOFF names the altitude above sea level: home's plus the 8 m asked.
    let takeoff = rig.sent.iter().find_map(|(_, m)| match m {
        MavMessage::COMMAND_LONG(c) if c.command == MavCmd::MAV_CMD_NAV_TAKEOFF => Some(c.param7),
        _ => None,
    });
    assert_eq!(takeoff, Some((HOME.alt_amsl_m + 8.0) as f32));

    let end = rig.fly(goto_offset(-25.0, 30.0, 12.0), 120.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(
        rig.distance_to(-25.0, 30.0) < 1.5,
        "{}",
        rig.distance_to(-25.0, 30.0)
    );
    assert!((rig.sim.altitude_m() - 12.0).abs() < 0.8);

    // The mode change to AUTO.LAND (main mode 4, sub mode 6) passes the whitelist.
    let end = rig.fly(Action::Land, 120.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(!rig.sim.armed() && rig.sim.altitude_m() < 0.2);
    assert!(
        rig.sim_events
            .iter()
            .any(|(_, e)| *e == SimEvent::ModeChanged("AUTO.LAND"))
    );
    assert_eq!(rig.sup().whitelist_violations(), 0);
}

#[test]
fn disarm_in_the_air_is_refused_and_nothing_is_sent() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 5.0 }, 60.0);
    let before = rig.now;
    let refusal = rig.request(Action::Disarm).unwrap_err();
    assert!(
        refusal.contains("flying") && refusal.contains("land"),
        "{refusal}"
    );
    rig.run(1.0);
    assert!(
        rig.commands_sent_since(before).is_empty(),
        "{:?}",
        rig.commands_sent_since(before)
    );
    assert!(rig.sim.armed());
    // On the ground it is allowed and confirmed by the heartbeat.
    let mut ground = Rig::new(Personality::ArduPilot);
    assert_eq!(ground.fly(Action::Arm, 10.0).outcome, Outcome::Completed);
    assert_eq!(ground.fly(Action::Disarm, 10.0).outcome, Outcome::Completed);
    assert!(!ground.sim.armed());
}

#[test]
fn cancelling_a_goto_holds_position_and_a_new_goto_supersedes_the_old() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    let far = rig.request(goto_offset(200.0, 0.0, 10.0)).unwrap();
    rig.run(3.0);
    let near = rig.request(goto_offset(0.0, 15.0, 10.0)).unwrap();
    let old = rig.end_of(far).cloned().expect("superseded at once");
    assert_eq!(old.outcome, Outcome::Superseded);
    assert!(
        old.message.contains("superseded by goto"),
        "{}",
        old.message
    );
    let end = rig.finish(near, 120.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(rig.distance_to(0.0, 15.0) < 1.5);

    let far = rig.request(goto_offset(200.0, 0.0, 10.0)).unwrap();
    rig.run(3.0);
    let now = rig.instant();
    assert_eq!(rig.instant(), now);
    rig.turn(Input::Cancel(far));
    let end = rig.end_of(far).cloned().unwrap();
    assert_eq!(end.outcome, Outcome::Cancelled);
    assert!(end.message.contains("holds position"), "{}", end.message);
    rig.run(5.0);
    assert!(
        rig.sim_events
            .iter()
            .any(|(_, e)| *e == SimEvent::ModeChanged("BRAKE"))
    );
    let speed = rig.sim.physics().velocity_ned_m_s().xy().norm();
    assert!(speed < 0.3, "stopped after the cancel: {speed} m/s");
}

#[test]
fn a_pilot_switching_to_a_manual_mode_ends_the_action() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    let job = rig.request(goto_offset(150.0, 0.0, 10.0)).unwrap();
    rig.run(2.0);
    rig.pilot_mode(16.0); // POSHOLD, a manual mode
    let end = rig.finish(job, 5.0);
    assert_eq!(end.outcome, Outcome::TakenOver, "{end:?}");
    assert!(end.message.contains("POSHOLD"), "{}", end.message);
}

#[test]
fn an_arducopter_goto_switched_to_loiter_by_someone_else_ends_instead_of_waiting() {
    // Found by the HIL rig (hil/scenarios/11): LOITER was expected for every goto because PX4
    // flies DO_REPOSITION in it, so an ArduCopter goto switched to LOITER from the RC waited
    // for an arrival the loitering vehicle never makes.
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    let job = rig.request(goto_offset(150.0, 0.0, 10.0)).unwrap();
    rig.run(2.0);
    rig.pilot_mode(5.0); // LOITER
    let end = rig.finish(job, 5.0);
    assert_eq!(end.outcome, Outcome::Failed, "{end:?}");
    assert!(end.message.contains("LOITER"), "{}", end.message);
}

#[test]
fn below_the_battery_reserve_only_land_and_return_are_accepted() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    // ArduPilot counts its percentage in consumed mAh (SIM_BATT_VOLTAGE moves volts only): a
    // ground station's BATTERY_RESET puts it at 20 %, below the 30 % reserve.
    rig.gcs_command(
        MavCmd::MAV_CMD_BATTERY_RESET,
        [1.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    rig.run(3.0);
    let before = rig.now;
    let refusal = rig.request(goto_offset(20.0, 0.0, 10.0)).unwrap_err();
    assert!(refusal.contains("reserve"), "{refusal}");
    rig.run(1.0);
    assert!(rig.commands_sent_since(before).is_empty());
    let end = rig.fly(Action::Land, 120.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    let refusal = rig.request(Action::Arm).unwrap_err();
    assert!(refusal.contains("reserve"), "{refusal}");
}

#[test]
fn a_lost_link_ends_the_action_and_refuses_new_ones_at_once() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    let job = rig.request(goto_offset(100.0, 0.0, 10.0)).unwrap();
    rig.run(1.0);
    let now = rig.instant();
    assert_eq!(rig.instant(), now);
    rig.turn(Input::Link(LinkEvent::Disconnected {
        reason: "cable pulled".into(),
    }));
    rig.exchange();
    let end = rig.end_of(job).cloned().unwrap();
    assert_eq!(end.outcome, Outcome::LinkLost);
    assert!(end.message.contains("cable pulled"), "{}", end.message);
    let refusal = rig.request(Action::Hold).unwrap_err();
    assert!(refusal.contains("link is down"), "{refusal}");
}

#[test]
fn move_relative_is_in_the_body_frame_and_set_heading_turns() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 6.0 }, 60.0);
    let end = rig.fly(Action::SetHeading { heading_deg: 90.0 }, 30.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    // Facing east: forward is east, right is south.
    let end = rig.fly(
        Action::MoveRelative {
            forward_m: 10.0,
            right_m: 4.0,
            up_m: 2.0,
        },
        60.0,
    );
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(
        rig.distance_to(-4.0, 10.0) < 1.5,
        "{}",
        rig.distance_to(-4.0, 10.0)
    );
    assert!((rig.sim.altitude_m() - 8.0).abs() < 0.8);
}

/// One Earth model: the target the executor computes for a relative move is where the
/// envelope sees it, to the centimetre (with the executor's and the envelope's former radii,
/// 6,378,137 m and 6,371,008.8 m, they disagreed by 0.11 %: 1.1 m over this kilometre).
#[test]
fn a_target_the_executor_computes_is_where_the_envelope_sees_it() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 6.0 }, 60.0);
    let now = rig.instant();
    let vehicle = rig.sup().vehicle();
    let heading_deg = vehicle.heading_deg().expect("a heading");
    let plan = crate::flight::Executor::new(crate::flight::ExecutorOptions::default())
        .plan(
            now,
            Action::MoveRelative {
                forward_m: 900.0,
                right_m: 400.0,
                up_m: 0.0,
            },
            vehicle,
        )
        .expect("planned");
    let goal = plan.goal().expect("a motion has a goal");
    let home = vehicle.home().expect("home");
    let envelope = crate::safety::Envelope::new(
        &crate::config::EnvelopeConfig::default(),
        crate::safety::GeoPosition {
            latitude_deg: home.latitude_deg,
            longitude_deg: home.longitude_deg,
            altitude_m: 0.0,
        },
        None,
    )
    .expect("the default envelope around the simulator's home");
    let local = |latitude_deg, longitude_deg| {
        envelope.frame().to_local(crate::safety::GeoPoint {
            latitude_deg,
            longitude_deg,
        })
    };
    let from = local(goal.from_latitude_deg, goal.from_longitude_deg);
    let to = local(goal.to_latitude_deg, goal.to_longitude_deg);
    let (north_m, east_m) = crate::geodesy::body_to_north_east(900.0, 400.0, heading_deg);
    let (seen_east_m, seen_north_m) = (to.east_m - from.east_m, to.north_m - from.north_m);
    assert!(
        (seen_north_m - north_m).abs() < 0.01 && (seen_east_m - east_m).abs() < 0.01,
        "asked {north_m:.3} N {east_m:.3} E, the envelope sees {seen_north_m:.3} N {seen_east_m:.3} E"
    );
    assert!((to.distance(from) - 900.0f64.hypot(400.0)).abs() < 0.01);
}

#[test]
fn set_speed_runs_beside_a_goto_without_superseding_it() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    let goto = rig.request(goto_offset(60.0, 0.0, 10.0)).unwrap();
    rig.run(1.0);
    let speed = rig.request(Action::SetSpeed { speed_m_s: 3.0 }).unwrap();
    let end = rig.finish(speed, 5.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    assert!(rig.end_of(goto).is_none(), "the goto still runs");
    rig.run(5.0);
    let v = rig.sim.physics().velocity_ned_m_s().xy().norm();
    assert!(v <= 3.2, "the new speed applies: {v}");
    assert_eq!(rig.finish(goto, 120.0).outcome, Outcome::Completed);
}

#[test]
fn motion_without_a_position_is_refused_and_a_read_only_caller_is_refused() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.set_param("SIM_GPS_DISABLE", 1.0);
    rig.run(3.0);
    let refusal = rig
        .request(Action::Takeoff { altitude_m: 5.0 })
        .unwrap_err();
    assert!(refusal.contains("trusted position"), "{refusal}");
    let now = rig.instant();
    let reader = Caller {
        role: Role::ReadOnly,
        identity: "viewer".into(),
    };
    assert_eq!(rig.instant(), now);
    let refusal = rig.request_as(Action::Land, &reader).unwrap_err().message;
    assert!(refusal.contains("OPERATOR"), "{refusal}");
}

mod mission;
mod stop_during;

#[test]
fn px4_set_heading_sends_the_yaw_in_radians_at_its_altitude_above_sea_level() {
    // PX4 reads DO_REPOSITION's param4 in radians (PositionSetpoint.yaw) and param7 above
    // mean sea level (navigator_main.cpp): the turn happens where the vehicle is.
    let mut rig = Rig::new(Personality::Px4);
    rig.fly(Action::Takeoff { altitude_m: 8.0 }, 60.0);
    let end = rig.fly(Action::SetHeading { heading_deg: 90.0 }, 30.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    rig.run(2.0);
    let yaw_deg = rig.sim.physics().yaw_rad().to_degrees();
    assert!((yaw_deg - 90.0).abs() < 2.0, "{yaw_deg}");
    assert!(
        (rig.sim.altitude_m() - 8.0).abs() < 0.8,
        "{}",
        rig.sim.altitude_m()
    );
    let sent = rig.sent.iter().find_map(|(_, m)| match m {
        MavMessage::COMMAND_INT(c) if c.command == MavCmd::MAV_CMD_DO_REPOSITION => Some(c.clone()),
        _ => None,
    });
    let sent = sent.expect("a DO_REPOSITION");
    assert!(
        (sent.param4 - std::f32::consts::FRAC_PI_2).abs() < 1e-4,
        "{sent:?}"
    );
    assert_eq!(sent.frame, crate::link::dialect::MavFrame::MAV_FRAME_GLOBAL);
    assert!(
        (f64::from(sent.z) - (HOME.alt_amsl_m + 8.0)).abs() < 1.0,
        "{sent:?}"
    );
}

#[test]
fn a_speed_excess_is_a_breach_except_under_the_pilot_and_in_a_return() {
    // Another ground station switches to RTL, which ArduCopter flies at RTL_SPEED (0: the
    // 10 m/s WPNAV_SPEED): the daemon asks for its 5 m/s limit and does not interrupt the
    // return with a hold.
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 15.0 }, 60.0);
    rig.fly(goto_offset(120.0, 0.0, 15.0), 120.0);
    let before = rig.now;
    rig.pilot_mode(6.0); // RTL
    rig.run(30.0);
    let speeds: Vec<MavCmd> = rig.commands_sent_since(before);
    assert!(
        speeds.contains(&MavCmd::MAV_CMD_DO_CHANGE_SPEED),
        "the limit was asked for: {speeds:?}"
    );
    assert!(
        !rig.sim_events
            .iter()
            .any(|(t, e)| *t >= before && *e == SimEvent::ModeChanged("BRAKE")),
        "a return is never interrupted by a hold"
    );
    let v = rig.sim.physics().velocity_ned_m_s().xy().norm();
    assert!(v <= 5.1, "the return flies at the limit: {v}");
    assert!(rig.sup().breach_active().is_none());
    rig.run(60.0);
    assert!(!rig.sim.armed(), "the return landed");

    // Under the pilot (POSHOLD) a wind pushing the vehicle past the limit is the pilot's
    // business: an event, no hold.
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    rig.pilot_mode(16.0); // POSHOLD
    rig.set_param("SIM_WIND_T", 1.0);
    rig.set_param("SIM_WIND_SPD", 30.0);
    rig.run(5.0);
    assert!(rig.sup().breach_active().is_none());
    assert!(
        rig.sup()
            .envelope_events()
            .any(|e| e.message.contains("ground speed") && e.level == "warning"),
        "reported"
    );
    assert_eq!(rig.sim.mode(), crate::sim::autopilot::FlightMode::PosHold);

    // In GUIDED (the daemon's goto) a sustained excess is a breach: hold, then land.
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    let job = rig.request(goto_offset(150.0, 0.0, 10.0)).unwrap();
    rig.run(2.0);
    for _ in 0..40 {
        rig.gcs_command(
            MavCmd::MAV_CMD_DO_CHANGE_SPEED,
            [1.0, 12.0, -1.0, 0.0, 0.0, 0.0, 0.0],
        );
        rig.run(0.1);
    }
    let end = rig.end_of(job).cloned().expect("preempted by the breach");
    assert_eq!(end.outcome, Outcome::Preempted, "{end:?}");
    assert!(end.message.contains("speed"), "{end:?}");
    assert!(
        rig.sim_events
            .iter()
            .any(|(_, e)| *e == SimEvent::ModeChanged("BRAKE"))
    );
    rig.run(3.0);
    assert_eq!(rig.sim.mode(), crate::sim::autopilot::FlightMode::Land);
}

/// `set_envelope`: an ADMIN tightens the envelope in force in flight; nothing widens it, and
/// no tightening may put the vehicle outside it. What the supervisor then refuses or flies
/// follows the new envelope.
#[test]
fn an_admin_tightens_the_envelope_in_flight_and_nothing_widens_it() {
    let mut rig = Rig::new(Personality::ArduPilot);
    let end = rig.fly(Action::Takeoff { altitude_m: 10.0 }, 60.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
    let admin = Caller {
        role: Role::Admin,
        identity: "boss".into(),
    };
    let changes = |v: serde_json::Value| v.as_object().cloned().unwrap();
    let e = rig
        .set_envelope(
            &changes(serde_json::json!({"altitude_m_max": 60.0})),
            &operator(),
        )
        .unwrap_err();
    assert!(e.contains("needs the ADMIN role"), "{e}");
    // The ceiling comes down in flight: a goto above the new one is refused, quoting it.
    let summary = rig
        .set_envelope(
            &changes(serde_json::json!({"altitude_m_max": 60.0})),
            &admin,
        )
        .unwrap();
    assert_eq!(summary.altitude_m_max, 60.0);
    let refused = rig.request(goto_offset(20.0, 0.0, 70.0)).unwrap_err();
    assert!(refused.contains("the ceiling is 60 m"), "{refused}");
    // Up again is a widening: refused, the ceiling stays where it was put.
    let e = rig
        .set_envelope(
            &changes(serde_json::json!({"altitude_m_max": 100.0})),
            &admin,
        )
        .unwrap_err();
    assert!(
        e.contains("only tightens") && e.contains("loosens the ceiling"),
        "{e}"
    );
    assert_eq!(rig.sup().envelope().unwrap().config().altitude_m_max, 60.0);
    // A section the configuration would refuse is refused the same way.
    let e = rig
        .set_envelope(&changes(serde_json::json!({"altitude_m_max": 8.0})), &admin)
        .unwrap_err();
    assert!(e.starts_with("envelope.altitude_m_max: "), "{e}");
    // A keep-out where the vehicle is would leave it outside the envelope: refused by the
    // envelope itself. One 80 m north: accepted, and a goto
    // through it refused before anything is sent.
    let (lat, lon) = crate::geodesy::offset_deg(HOME.lat_deg, HOME.lon_deg, 0.0, 0.0);
    let e = rig
        .set_envelope(
            &changes(serde_json::json!({"keep_out": [
                {"name": "here", "center_lat_lon_deg": [lat, lon], "radius_m": 10.0}]})),
            &admin,
        )
        .unwrap_err();
    assert!(
        e.starts_with("the tightened envelope is refused") && e.contains("keep-out `here`"),
        "{e}"
    );
    let (lat, lon) = crate::geodesy::offset_deg(HOME.lat_deg, HOME.lon_deg, 80.0, 0.0);
    let summary = rig
        .set_envelope(
            &changes(serde_json::json!({"keep_out": [
                {"name": "crowd", "center_lat_lon_deg": [lat, lon], "radius_m": 15.0}]})),
            &admin,
        )
        .unwrap();
    assert_eq!(summary.keep_out.len(), 1);
    assert_eq!(summary.altitude_m_max, 60.0, "earlier tightenings stay");
    let sent_before = rig.sent.len();
    let refused = rig.request(goto_offset(120.0, 0.0, 10.0)).unwrap_err();
    assert!(refused.contains("keep-out `crowd`"), "{refused}");
    assert_eq!(rig.sent.len(), sent_before, "nothing was sent for it");
    // Dropping that keep-out again is a widening.
    let e = rig
        .set_envelope(&changes(serde_json::json!({"keep_out": []})), &admin)
        .unwrap_err();
    assert!(
        e.contains("drops or shrinks the current keep-out `crowd`"),
        "{e}"
    );
    // A lower speed limit is what the next motion flies at.
    rig.set_envelope(
        &changes(serde_json::json!({"speed_horizontal_m_s_max": 3.0})),
        &admin,
    )
    .unwrap();
    let goto = rig.request(goto_offset(-60.0, 0.0, 10.0)).unwrap();
    rig.run(8.0);
    let v = rig.sim.physics().velocity_ned_m_s().xy().norm();
    assert!(v > 1.0 && v <= 3.2, "flies at the new limit: {v}");
    assert_eq!(rig.finish(goto, 120.0).outcome, Outcome::Completed);
    let end = rig.fly(Action::Land, 120.0);
    assert_eq!(end.outcome, Outcome::Completed, "{end:?}");
}
