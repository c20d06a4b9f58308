//! Missions through the daemon's real Core against the simulated autopilot, on virtual
//! time: uploaded (every leg checked first), downloaded and checked, flown as a job with
//! progress, paused and resumed, refused before anything is sent, stopped by the e-stop.

use super::*;
use crate::control::mission::{MissionAnswer, MissionAsk};
use crate::estop::{Source, StopAsk, Trigger};
use crate::flight::mission::{MissionEnd, MissionStep};
use crate::sim::autopilot::FlightMode as SimMode;
use crate::vehicle::snapshot::AutopilotKind;

fn wp(north_m: f64, east_m: f64, altitude_m: f64) -> MissionStep {
    let (latitude_deg, longitude_deg) =
        crate::geodesy::offset_deg(HOME.lat_deg, HOME.lon_deg, north_m, east_m);
    MissionStep::Waypoint {
        latitude_deg,
        longitude_deg,
        altitude_m,
        loiter_s: None,
        photo: true,
    }
}

impl Rig {
    /// A mission request, run until its transfer ends (at most 30 s); its answer.
    fn mission(&mut self, ask: MissionAsk) -> MissionAnswer {
        match self.turn(Input::Mission(ask)) {
            Handled::Mission(answer) => return answer,
            Handled::MissionTransfer(_) => {}
            other => panic!("a mission request answered with {other:?}"),
        }
        let before = self.missions.len();
        let end = self.now + Duration::from_secs(30);
        while self.now < end {
            if self.missions.len() > before {
                return self.missions.pop().unwrap();
            }
            self.now += PHYSICS_STEP;
            self.sim.step(self.now);
            self.exchange();
        }
        panic!("the mission transfer did not end within 30 s");
    }

    fn upload(&mut self, steps: Vec<MissionStep>, end: MissionEnd) -> MissionAnswer {
        self.mission(MissionAsk::Upload {
            steps,
            end,
            caller: operator(),
        })
    }

    /// What start_mission does: download and check, set the first item current, fly.
    fn start_mission(&mut self) -> JobId {
        let answer = self.mission(MissionAsk::Download {
            from_item: Some(0),
            caller: operator(),
        });
        assert!(
            matches!(
                &answer,
                MissionAnswer::Downloaded {
                    verdict: Ok(()),
                    ..
                }
            ),
            "{answer:?}"
        );
        let answer = self.mission(MissionAsk::SetCurrent {
            seq: 0,
            caller: operator(),
        });
        assert_eq!(answer, MissionAnswer::CurrentSet { seq: 0 });
        self.request(Action::RunMission { resume: false })
            .unwrap_or_else(|e| panic!("start_mission refused: {e}"))
    }

    fn mission_items_sent(&self) -> usize {
        self.sent
            .iter()
            .filter(|(_, m)| matches!(m, MavMessage::MISSION_ITEM_INT(_)))
            .count()
    }
}

/// A 40 m square flown at 20 m with a photo at every corner, then `end`.
fn square() -> Vec<MissionStep> {
    vec![
        MissionStep::Speed { speed_m_s: 4.0 },
        wp(40.0, 0.0, 20.0),
        wp(40.0, 40.0, 20.0),
        wp(0.0, 40.0, 20.0),
    ]
}

fn fly_the_square(personality: Personality, end: MissionEnd) -> Rig {
    let mut rig = Rig::new(personality);
    let answer = rig.upload(square(), end);
    let MissionAnswer::Uploaded { items, route } = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(route.points.len(), 3 + usize::from(end == MissionEnd::Land));
    assert_eq!(route.photos, 3);
    assert!(items >= 7, "{items}");
    // The mission runs in the air only; the takeoff is the daemon's checked way up.
    let refused = rig
        .request(Action::RunMission { resume: false })
        .unwrap_err();
    assert!(refused.contains("in the air"), "{refused}");
    let end_takeoff = rig.fly(Action::Takeoff { altitude_m: 15.0 }, 60.0);
    assert_eq!(end_takeoff.outcome, Outcome::Completed, "{end_takeoff:?}");
    let job = rig.start_mission();
    let done = rig.finish(job, 240.0);
    assert_eq!(done.outcome, Outcome::Completed, "{done:?}");
    assert!(done.message.contains("mission is complete"), "{done:?}");
    let triggers = rig
        .sim_events
        .iter()
        .filter(|(_, e)| matches!(e, SimEvent::CameraTrigger { .. }))
        .count();
    assert_eq!(triggers, 3, "a photo at every corner");
    let progress: Vec<&String> = rig
        .progress
        .iter()
        .filter(|(j, _)| *j == job)
        .map(|(_, m)| m)
        .collect();
    assert!(
        progress.iter().any(|m| m.contains("mission: item ")
            && m.contains(" m to go")
            && m.contains("reached")),
        "{progress:?}"
    );
    rig
}

#[test]
fn ardupilot_flies_an_uploaded_mission_to_its_end_with_progress() {
    let rig = fly_the_square(Personality::ArduPilot, MissionEnd::Hold);
    assert_eq!(rig.sim.mode(), SimMode::Mission, "ArduCopter holds in AUTO");
    assert!(rig.distance_to(0.0, 40.0) < 3.0);
}

#[test]
fn px4_flies_an_uploaded_mission_lands_and_disarms() {
    let rig = fly_the_square(Personality::Px4, MissionEnd::Land);
    assert!(!rig.sim.armed());
    assert!(rig.distance_to(0.0, 40.0) < 3.0);
}

#[test]
fn a_leg_through_a_keep_out_is_refused_before_anything_is_sent() {
    let mut rig = Rig::new(Personality::ArduPilot);
    let admin = Caller {
        role: Role::Admin,
        identity: "boss".into(),
    };
    let (lat, lon) = crate::geodesy::offset_deg(HOME.lat_deg, HOME.lon_deg, 100.0, 0.0);
    let changes = serde_json::json!({"keep_out": [
        {"name": "barn", "center_lat_lon_deg": [lat, lon], "radius_m": 10.0}]});
    rig.set_envelope(changes.as_object().unwrap(), &admin)
        .unwrap();
    let sent = rig.sent.len();
    let through = vec![wp(30.0, 0.0, 20.0), wp(170.0, 0.0, 20.0)];
    let answer = rig.upload(through, MissionEnd::ReturnHome);
    let MissionAnswer::Refused(why) = answer else {
        panic!("{answer:?}");
    };
    assert!(
        why.contains("item 2 (waypoint at ")
            && why.contains("the leg from item 0 at ")
            && why.contains("keep-out `barn`")
            && why.contains("nothing was sent"),
        "{why}"
    );
    let mission_messages = rig.sent[sent..]
        .iter()
        .filter(|(_, m)| {
            matches!(
                m,
                MavMessage::MISSION_COUNT(_) | MavMessage::MISSION_ITEM_INT(_)
            )
        })
        .count();
    assert_eq!(mission_messages, 0, "nothing of the mission was sent");
    // Around it: accepted.
    let around = vec![
        wp(30.0, 0.0, 20.0),
        wp(100.0, 60.0, 20.0),
        wp(170.0, 0.0, 20.0),
    ];
    let answer = rig.upload(around, MissionEnd::ReturnHome);
    assert!(
        matches!(answer, MissionAnswer::Uploaded { .. }),
        "{answer:?}"
    );
    assert!(rig.mission_items_sent() > 0);
    // A READ_ONLY caller reads but does not write.
    let reader = Caller {
        role: Role::ReadOnly,
        identity: "viewer".into(),
    };
    let answer = rig.mission(MissionAsk::Clear { caller: reader });
    assert!(
        matches!(&answer, MissionAnswer::Refused(w) if w.contains("OPERATOR")),
        "{answer:?}"
    );
}

#[test]
fn pause_holds_and_resume_goes_on_from_the_current_item() {
    let mut rig = Rig::new(Personality::ArduPilot);
    rig.upload(square(), MissionEnd::Hold);
    rig.fly(Action::Takeoff { altitude_m: 15.0 }, 60.0);
    let job = rig.start_mission();
    rig.run(12.0);
    assert!(rig.end_of(job).is_none(), "still flying");
    let pause = rig.fly(Action::PauseMission, 30.0);
    assert_eq!(pause.outcome, Outcome::Completed, "{pause:?}");
    assert_eq!(
        rig.end_of(job).map(|e| e.outcome),
        Some(Outcome::Superseded)
    );
    let held = rig.sim.position();
    rig.run(5.0);
    let (n, e) = crate::geodesy::north_east_m(
        held.lat_deg,
        held.lon_deg,
        rig.sim.position().lat_deg,
        rig.sim.position().lon_deg,
    );
    assert!(
        n.hypot(e) < 2.0,
        "holds while paused: moved {n:.1} N {e:.1} E"
    );
    // Resume downloads and checks again, from the vehicle to its current item.
    let answer = rig.mission(MissionAsk::Download {
        from_item: None,
        caller: operator(),
    });
    let MissionAnswer::Downloaded {
        verdict, current, ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(verdict, Ok(()));
    assert!(current.is_some_and(|c| c >= 1), "{current:?}");
    let job = rig
        .request(Action::RunMission { resume: true })
        .unwrap_or_else(|e| panic!("{e}"));
    let done = rig.finish(job, 240.0);
    assert_eq!(done.outcome, Outcome::Completed, "{done:?}");
    let triggers = rig
        .sim_events
        .iter()
        .filter(|(_, e)| matches!(e, SimEvent::CameraTrigger { .. }))
        .count();
    assert_eq!(
        triggers, 3,
        "each corner photographed once: resumed, not restarted"
    );
}

#[test]
fn an_estop_during_a_mission_holds_latches_and_refuses_a_resume() {
    let mut rig = Rig::new(Personality::Px4);
    rig.upload(square(), MissionEnd::ReturnHome);
    rig.fly(Action::Takeoff { altitude_m: 15.0 }, 60.0);
    let job = rig.start_mission();
    rig.run(10.0);
    let trigger = Trigger {
        source: Source::McpTool,
        identity: "pilot".into(),
        reason: "test".into(),
    };
    match rig.turn(Input::Stop(StopAsk::Stop(trigger))) {
        Handled::Stop(ack) => assert!(ack.ok, "{ack:?}"),
        other => panic!("{other:?}"),
    }
    rig.run(5.0);
    assert!(rig.end_of(job).is_some(), "the mission job ended");
    assert_eq!(rig.sim.mode(), SimMode::Loiter, "PX4 holds");
    let refused = rig
        .request(Action::RunMission { resume: true })
        .unwrap_err();
    assert!(
        refused.contains("emergency stop") || refused.contains("latched"),
        "{refused}"
    );
    let answer = rig.upload(square(), MissionEnd::Land);
    assert!(
        matches!(&answer, MissionAnswer::Refused(w) if w.contains("emergency stop")),
        "{answer:?}"
    );
}

/// A ground station (system 255) uploads straight to the autopilot, past the daemon, a
/// mission whose leg crosses a keep-out: start_mission's download finds it, the check refuses
/// it with the leg named, and a run is refused until a checked mission replaces it.
#[test]
fn a_mission_another_station_uploaded_is_checked_before_it_flies() {
    use crate::link::dialect::MavMissionType;
    use crate::vehicle::mission::{
        MissionEvent, MissionOptions, MissionOutcome, MissionProtocol, MissionTarget, Operation,
    };
    let mut rig = Rig::new(Personality::ArduPilot);
    let admin = Caller {
        role: Role::Admin,
        identity: "boss".into(),
    };
    let (lat, lon) = crate::geodesy::offset_deg(HOME.lat_deg, HOME.lon_deg, 100.0, 0.0);
    let changes = serde_json::json!({"keep_out": [
        {"name": "barn", "center_lat_lon_deg": [lat, lon], "radius_m": 10.0}]});
    rig.set_envelope(changes.as_object().unwrap(), &admin)
        .unwrap();
    rig.fly(Action::Takeoff { altitude_m: 15.0 }, 60.0);
    // The station's own transfer, on its own ids, to the simulator directly.
    let items = crate::flight::mission::build_items(
        &[wp(30.0, 0.0, 20.0), wp(170.0, 0.0, 20.0)],
        MissionEnd::Hold,
        AutopilotKind::Ardupilot,
    );
    let mut station = MissionProtocol::new(MissionOptions {
        item_timeout: Duration::from_millis(1500),
        retries_max: 3,
        source_system: 255,
        source_component: 190,
    });
    let target = MissionTarget {
        system: 1,
        component: 1,
        autopilot: AutopilotKind::Ardupilot,
    };
    let header = MavHeader {
        system_id: 255,
        component_id: 190,
        sequence: 0,
    };
    station
        .start(
            rig.instant(),
            target,
            MavMissionType::MAV_MISSION_TYPE_MISSION,
            Operation::Upload { items, home: None },
        )
        .unwrap();
    let mut uploaded = None;
    for _ in 0..2000 {
        let now = rig.instant();
        while let Some(m) = station.poll_transmit(now) {
            rig.sim.handle_message(rig.now, &header, &m);
        }
        rig.now += PHYSICS_STEP;
        rig.sim.step(rig.now);
        let vehicle = MavHeader {
            system_id: 1,
            component_id: 1,
            sequence: 0,
        };
        while let Some(m) = rig.sim.poll_transmit(rig.now) {
            station.handle_message(rig.instant(), &vehicle, &m);
            rig.turn(Input::Link(LinkEvent::frame(vehicle, m, rig.instant())));
        }
        station.handle_timeout(rig.instant());
        if let Some(MissionEvent::Finished { outcome, .. }) = station.poll_event() {
            uploaded = Some(outcome);
            break;
        }
    }
    assert!(
        matches!(uploaded, Some(MissionOutcome::Uploaded { .. })),
        "{uploaded:?}"
    );
    let answer = rig.mission(MissionAsk::Download {
        from_item: Some(0),
        caller: operator(),
    });
    let MissionAnswer::Downloaded { verdict, .. } = answer else {
        panic!("{answer:?}");
    };
    let why = verdict.unwrap_err();
    assert!(
        why.contains("the leg from item 0 at ") && why.contains("keep-out `barn`"),
        "{why}"
    );
    let refused = rig
        .request(Action::RunMission { resume: false })
        .unwrap_err();
    assert!(
        refused.contains("no mission has been downloaded and checked"),
        "{refused}"
    );
    assert_eq!(rig.sim.mode(), SimMode::Guided, "nothing started");
}
