#![allow(deprecated)] // MISSION_SET_CURRENT, MISSION_REQUEST, MISSION_ITEM: what autopilots still use

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::link::dialect::{MISSION_CURRENT_DATA, MISSION_ITEM_REACHED_DATA, MISSION_REQUEST_DATA};

const US: (u8, u8) = (1, 191);
const AP: MissionTarget = MissionTarget {
    system: 1,
    component: 1,
    autopilot: AutopilotKind::Ardupilot,
};
const PX4: MissionTarget = MissionTarget {
    autopilot: AutopilotKind::Px4,
    ..AP
};
const MISSION: MavMissionType = MavMissionType::MAV_MISSION_TYPE_MISSION;
const FENCE: MavMissionType = MavMissionType::MAV_MISSION_TYPE_FENCE;
const TIMEOUT: Duration = Duration::from_millis(1500);

fn options() -> MissionOptions {
    MissionOptions {
        item_timeout: TIMEOUT,
        retries_max: 3,
        source_system: US.0,
        source_component: US.1,
    }
}

fn from_vehicle() -> MavHeader {
    MavHeader {
        system_id: 1,
        component_id: 1,
        sequence: 0,
    }
}

fn waypoint(n: i32) -> MissionItem {
    MissionItem {
        command: MavCmd::MAV_CMD_NAV_WAYPOINT,
        frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
        params: [0.0; 4],
        x: 473_977_000 + n,
        y: 85_456_000 + n,
        z: 20.0,
        autocontinue: true,
    }
}

fn plan(n: i32) -> Vec<MissionItem> {
    (0..n).map(waypoint).collect()
}

fn request(seq: u16, mission_type: MavMissionType) -> MavMessage {
    MavMessage::MISSION_REQUEST_INT(MISSION_REQUEST_INT_DATA {
        seq,
        target_system: US.0,
        target_component: US.1,
        mission_type,
    })
}

fn ack(result: MavMissionResult, mission_type: MavMissionType) -> MavMessage {
    MavMessage::MISSION_ACK(MISSION_ACK_DATA {
        target_system: US.0,
        target_component: US.1,
        mavtype: result,
        mission_type,
        opaque_id: 0,
    })
}

fn count(n: u16, mission_type: MavMissionType) -> MavMessage {
    MavMessage::MISSION_COUNT(MISSION_COUNT_DATA {
        count: n,
        target_system: US.0,
        target_component: US.1,
        mission_type,
        opaque_id: 0,
    })
}

fn item(seq: u16, it: MissionItem, mission_type: MavMissionType) -> MavMessage {
    MavMessage::MISSION_ITEM_INT(MISSION_ITEM_INT_DATA {
        param1: it.params[0],
        param2: it.params[1],
        param3: it.params[2],
        param4: it.params[3],
        x: it.x,
        y: it.y,
        z: it.z,
        seq,
        command: it.command,
        target_system: US.0,
        target_component: US.1,
        frame: it.frame,
        current: 0,
        autocontinue: 1,
        mission_type,
    })
}

fn sent(p: &mut MissionProtocol, now: Instant) -> Vec<MavMessage> {
    std::iter::from_fn(|| p.poll_transmit(now)).collect()
}

fn finished(p: &mut MissionProtocol) -> Option<MissionOutcome> {
    std::iter::from_fn(|| p.poll_event()).find_map(|e| match e {
        MissionEvent::Finished { outcome, .. } => Some(outcome),
        MissionEvent::Progress { .. } => None,
    })
}

fn item_seq(msg: &MavMessage) -> u16 {
    match msg {
        MavMessage::MISSION_ITEM_INT(m) => m.seq,
        other => panic!("expected MISSION_ITEM_INT, got {other:?}"),
    }
}

fn upload(target: MissionTarget, items: Vec<MissionItem>) -> (MissionProtocol, Instant) {
    let mut p = MissionProtocol::new(options());
    let now = Instant::now();
    p.start(
        now,
        target,
        MISSION,
        Operation::Upload { items, home: None },
    )
    .unwrap();
    (p, now)
}

/// Answers every request in order as a well-behaved vehicle, then ACKs.
fn vehicle_takes_all(p: &mut MissionProtocol, now: Instant, wire_count: u16, mt: MavMissionType) {
    for seq in 0..wire_count {
        p.handle_message(now, &from_vehicle(), &request(seq, mt));
        let out = sent(p, now);
        assert_eq!(out.len(), 1, "one item per request");
        assert_eq!(item_seq(&out[0]), seq);
    }
    p.handle_message(
        now,
        &from_vehicle(),
        &ack(MavMissionResult::MAV_MISSION_ACCEPTED, mt),
    );
}

#[test]
fn upload_ardupilot_puts_home_at_index_0_and_counts_it_on_the_wire() {
    // AP_Mission: command 0 is home; MissionItemProtocol_Waypoints asks for it too.
    let (mut p, now) = upload(AP, plan(3));
    let out = sent(&mut p, now);
    assert!(matches!(&out[..], [MavMessage::MISSION_COUNT(c)] if c.count == 4));
    p.handle_message(now, &from_vehicle(), &request(0, MISSION));
    let home = sent(&mut p, now);
    assert!(matches!(&home[..], [MavMessage::MISSION_ITEM_INT(m)] if m.seq == 0 && m.x == 0));
    for seq in 1..4 {
        p.handle_message(now, &from_vehicle(), &request(seq, MISSION));
        let out = sent(&mut p, now);
        let MavMessage::MISSION_ITEM_INT(m) = &out[0] else {
            panic!()
        };
        assert_eq!(
            m.x,
            waypoint(i32::from(seq) - 1).x,
            "item {seq} is the caller's {}",
            seq - 1
        );
    }
    p.handle_message(
        now,
        &from_vehicle(),
        &ack(MavMissionResult::MAV_MISSION_ACCEPTED, MISSION),
    );
    assert_eq!(
        finished(&mut p),
        Some(MissionOutcome::Uploaded { count: 3 })
    );
    assert!(!p.is_busy());
}

#[test]
fn upload_px4_has_no_home_slot() {
    // mavlink_mission.cpp: the list starts with the first waypoint.
    let (mut p, now) = upload(PX4, plan(3));
    assert!(matches!(&sent(&mut p, now)[..], [MavMessage::MISSION_COUNT(c)] if c.count == 3));
    vehicle_takes_all(&mut p, now, 3, MISSION);
    assert_eq!(
        finished(&mut p),
        Some(MissionOutcome::Uploaded { count: 3 })
    );
}

#[test]
fn upload_fence_on_ardupilot_has_no_home_slot() {
    let mut p = MissionProtocol::new(options());
    let now = Instant::now();
    p.start(
        now,
        AP,
        FENCE,
        Operation::Upload {
            items: plan(4),
            home: None,
        },
    )
    .unwrap();
    assert!(
        matches!(&sent(&mut p, now)[..], [MavMessage::MISSION_COUNT(c)] if c.count == 4 && c.mission_type == FENCE)
    );
    vehicle_takes_all(&mut p, now, 4, FENCE);
    assert_eq!(
        finished(&mut p),
        Some(MissionOutcome::Uploaded { count: 4 })
    );
}

#[test]
fn upload_table_of_vehicle_behaviours() {
    use MavMissionResult as R;
    enum V {
        Req(u16),
        LegacyReq(u16),
        Ack(R),
        Wait,
    }
    struct Case {
        name: &'static str,
        script: Vec<V>,
        items_sent: Vec<u16>,
        outcome: Option<MissionOutcome>,
        duplicates: u64,
        out_of_order: u64,
    }
    let cases = vec![
        Case {
            name: "lost item: the vehicle asks again and gets it again",
            script: vec![
                V::Req(0),
                V::Req(1),
                V::Req(1),
                V::Req(2),
                V::Ack(R::MAV_MISSION_ACCEPTED),
            ],
            items_sent: vec![0, 1, 1, 2],
            outcome: Some(MissionOutcome::Uploaded { count: 3 }),
            duplicates: 1,
            out_of_order: 0,
        },
        Case {
            name: "out-of-order requests are answered as asked",
            script: vec![
                V::Req(0),
                V::Req(2),
                V::Req(1),
                V::Ack(R::MAV_MISSION_ACCEPTED),
            ],
            items_sent: vec![0, 2, 1],
            outcome: Some(MissionOutcome::Uploaded { count: 3 }),
            duplicates: 0,
            out_of_order: 1,
        },
        Case {
            name: "legacy MISSION_REQUEST answered with MISSION_ITEM_INT",
            script: vec![
                V::LegacyReq(0),
                V::LegacyReq(1),
                V::LegacyReq(2),
                V::Ack(R::MAV_MISSION_ACCEPTED),
            ],
            items_sent: vec![0, 1, 2],
            outcome: Some(MissionOutcome::Uploaded { count: 3 }),
            duplicates: 0,
            out_of_order: 0,
        },
        Case {
            name: "request beyond the count cancels",
            script: vec![V::Req(0), V::Req(7)],
            items_sent: vec![0],
            outcome: Some(MissionOutcome::RequestOutOfRange { seq: 7, count: 3 }),
            duplicates: 0,
            out_of_order: 0,
        },
        Case {
            name: "an error ACK names the item it was on",
            script: vec![V::Req(0), V::Req(1), V::Ack(R::MAV_MISSION_INVALID_PARAM7)],
            items_sent: vec![0, 1],
            outcome: Some(MissionOutcome::Rejected {
                result: R::MAV_MISSION_INVALID_PARAM7,
                item: Some(1),
            }),
            duplicates: 0,
            out_of_order: 0,
        },
        Case {
            name: "ArduPilot's INVALID_SEQUENCE for a crossed re-send is not an end",
            script: vec![
                V::Req(0),
                V::Ack(R::MAV_MISSION_INVALID_SEQUENCE),
                V::Req(1),
                V::Req(2),
                V::Ack(R::MAV_MISSION_ACCEPTED),
            ],
            items_sent: vec![0, 1, 2],
            outcome: Some(MissionOutcome::Uploaded { count: 3 }),
            duplicates: 0,
            out_of_order: 1,
        },
        Case {
            name: "the final ACK lost: the re-sent last item meets ArduPilot's ERROR",
            script: vec![
                V::Req(0),
                V::Req(1),
                V::Req(2),
                V::Wait,
                V::Ack(R::MAV_MISSION_ERROR),
            ],
            items_sent: vec![0, 1, 2, 2],
            outcome: Some(MissionOutcome::Unconfirmed { count: 3 }),
            duplicates: 0,
            out_of_order: 0,
        },
        Case {
            name: "no space before any item",
            script: vec![V::Ack(R::MAV_MISSION_NO_SPACE)],
            items_sent: vec![],
            outcome: Some(MissionOutcome::Rejected {
                result: R::MAV_MISSION_NO_SPACE,
                item: None,
            }),
            duplicates: 0,
            out_of_order: 0,
        },
        Case {
            name: "partial upload: accepted before every item was asked for",
            script: vec![V::Req(0), V::Req(1), V::Ack(R::MAV_MISSION_ACCEPTED)],
            items_sent: vec![0, 1],
            outcome: Some(MissionOutcome::AcceptedEarly {
                requested: 2,
                count: 3,
            }),
            duplicates: 0,
            out_of_order: 0,
        },
        Case {
            name: "a vehicle that stops asking: the last item is re-sent, then given up",
            script: vec![V::Req(0), V::Wait, V::Wait, V::Wait, V::Wait],
            items_sent: vec![0, 0, 0, 0],
            outcome: Some(MissionOutcome::TimedOut {
                waiting_for: "MISSION_REQUEST or MISSION_ACK after an item",
                attempts: 4,
            }),
            duplicates: 0,
            out_of_order: 0,
        },
    ];
    for case in cases {
        let (mut p, mut now) = upload(PX4, plan(3));
        sent(&mut p, now);
        let mut items_sent = Vec::new();
        for step in &case.script {
            match step {
                V::Req(s) => p.handle_message(now, &from_vehicle(), &request(*s, MISSION)),
                V::LegacyReq(s) => p.handle_message(
                    now,
                    &from_vehicle(),
                    &MavMessage::MISSION_REQUEST(MISSION_REQUEST_DATA {
                        seq: *s,
                        target_system: US.0,
                        target_component: US.1,
                        mission_type: MISSION,
                    }),
                ),
                V::Ack(r) => p.handle_message(now, &from_vehicle(), &ack(*r, MISSION)),
                V::Wait => now += TIMEOUT,
            }
            for m in sent(&mut p, now) {
                if let MavMessage::MISSION_ITEM_INT(m) = m {
                    items_sent.push(m.seq);
                }
            }
        }
        assert_eq!(items_sent, case.items_sent, "{}", case.name);
        assert_eq!(finished(&mut p), case.outcome, "{}", case.name);
        assert_eq!(p.counters().duplicates, case.duplicates, "{}", case.name);
        assert_eq!(
            p.counters().out_of_order,
            case.out_of_order,
            "{}",
            case.name
        );
    }
}

#[test]
fn upload_count_is_resent_until_the_first_request_then_given_up() {
    let (mut p, mut now) = upload(PX4, plan(2));
    let mut counts = sent(&mut p, now).len();
    for _ in 0..3 {
        now += TIMEOUT;
        let out = sent(&mut p, now);
        assert!(matches!(&out[..], [MavMessage::MISSION_COUNT(_)]));
        counts += out.len();
    }
    assert_eq!(counts, 4);
    now += TIMEOUT;
    assert!(sent(&mut p, now).is_empty());
    assert!(matches!(
        finished(&mut p),
        Some(MissionOutcome::TimedOut { attempts: 4, .. })
    ));
    assert_eq!(p.counters().resends, 3);
}

#[test]
fn progress_resets_the_retry_budget() {
    // Three timeouts before each item: 3 + 3 re-sends over the whole upload still succeed.
    let (mut p, mut now) = upload(PX4, plan(2));
    sent(&mut p, now);
    for _ in 0..3 {
        now += TIMEOUT;
        sent(&mut p, now);
    }
    p.handle_message(now, &from_vehicle(), &request(0, MISSION));
    sent(&mut p, now);
    for _ in 0..3 {
        now += TIMEOUT;
        sent(&mut p, now);
    }
    p.handle_message(now, &from_vehicle(), &request(1, MISSION));
    sent(&mut p, now);
    p.handle_message(
        now,
        &from_vehicle(),
        &ack(MavMissionResult::MAV_MISSION_ACCEPTED, MISSION),
    );
    assert_eq!(
        finished(&mut p),
        Some(MissionOutcome::Uploaded { count: 2 })
    );
}

#[test]
fn upload_progress_counts_the_callers_items() {
    let (mut p, now) = upload(AP, plan(2));
    sent(&mut p, now);
    vehicle_takes_all(&mut p, now, 3, MISSION);
    let progress: Vec<(u16, u16)> = std::iter::from_fn(|| p.poll_event())
        .filter_map(|e| match e {
            MissionEvent::Progress { done, total, .. } => Some((done, total)),
            MissionEvent::Finished { .. } => None,
        })
        .collect();
    assert_eq!(progress, vec![(0, 2), (1, 2), (2, 2)]);
}

#[test]
fn foreign_and_other_type_messages_do_not_move_the_transfer() {
    let (mut p, now) = upload(PX4, plan(1));
    sent(&mut p, now);
    // Another system's request.
    let other = MavHeader {
        system_id: 7,
        ..from_vehicle()
    };
    p.handle_message(now, &other, &request(0, MISSION));
    // The vehicle talking to a ground station beside us (its own transfer).
    let to_gcs = MavMessage::MISSION_REQUEST_INT(MISSION_REQUEST_INT_DATA {
        seq: 0,
        target_system: 255,
        target_component: 190,
        mission_type: MISSION,
    });
    p.handle_message(now, &from_vehicle(), &to_gcs);
    // The fence list's request.
    p.handle_message(now, &from_vehicle(), &request(0, FENCE));
    assert!(sent(&mut p, now).is_empty());
    assert_eq!(p.counters().foreign, 2);
    assert!(p.is_busy());
}

#[test]
fn one_transfer_at_a_time() {
    let (mut p, now) = upload(PX4, plan(1));
    let err = p.start(now, PX4, MISSION, Operation::Download).unwrap_err();
    assert_eq!(err, StartError::Busy { running: "upload" });
}

#[test]
fn too_large_a_plan_is_refused_before_anything_is_sent() {
    let mut p = MissionProtocol::new(options());
    let err = p
        .start(
            Instant::now(),
            AP,
            MISSION,
            Operation::Upload {
                items: plan(i32::from(ITEMS_MAX)),
                home: None,
            },
        )
        .unwrap_err();
    assert!(matches!(err, StartError::TooManyItems { .. }));
    assert!(p.poll_transmit(Instant::now()).is_none());
}

#[test]
fn cancel_tells_the_vehicle() {
    let (mut p, now) = upload(PX4, plan(2));
    sent(&mut p, now);
    p.handle_message(now, &from_vehicle(), &request(0, MISSION));
    sent(&mut p, now);
    assert!(p.cancel());
    let out = sent(&mut p, now);
    assert!(matches!(&out[..], [MavMessage::MISSION_ACK(a)]
        if a.mavtype == MavMissionResult::MAV_MISSION_OPERATION_CANCELLED));
    assert_eq!(finished(&mut p), Some(MissionOutcome::Cancelled));
}

#[test]
fn abort_sends_nothing() {
    let (mut p, now) = upload(PX4, plan(2));
    p.abort(AbortReason::LinkLost);
    assert!(sent(&mut p, now).is_empty());
    assert_eq!(finished(&mut p), Some(MissionOutcome::LinkLost));
}

fn download(target: MissionTarget) -> (MissionProtocol, Instant) {
    let mut p = MissionProtocol::new(options());
    let now = Instant::now();
    p.start(now, target, MISSION, Operation::Download).unwrap();
    (p, now)
}

#[test]
fn download_ardupilot_takes_home_off() {
    let (mut p, now) = download(AP);
    assert!(matches!(
        &sent(&mut p, now)[..],
        [MavMessage::MISSION_REQUEST_LIST(_)]
    ));
    p.handle_message(now, &from_vehicle(), &count(3, MISSION));
    let home = MissionItem::home_placeholder(Some((1, 2, 3.0)));
    for seq in 0..3 {
        let out = sent(&mut p, now);
        assert!(matches!(&out[..], [MavMessage::MISSION_REQUEST_INT(r)] if r.seq == seq));
        let it = if seq == 0 {
            home
        } else {
            waypoint(i32::from(seq) - 1)
        };
        p.handle_message(now, &from_vehicle(), &item(seq, it, MISSION));
    }
    let out = sent(&mut p, now);
    assert!(
        matches!(&out[..], [MavMessage::MISSION_ACK(a)] if a.mavtype == MavMissionResult::MAV_MISSION_ACCEPTED)
    );
    assert_eq!(
        finished(&mut p),
        Some(MissionOutcome::Downloaded {
            items: plan(2),
            home: Some(home)
        })
    );
}

#[test]
fn download_table_of_vehicle_behaviours() {
    use MavMissionResult as R;
    enum V {
        Count(u16),
        Item(u16),
        LegacyItem(u16),
        Ack(R),
        Wait,
    }
    struct Case {
        name: &'static str,
        script: Vec<V>,
        requests: Vec<u16>,
        outcome: Option<MissionOutcome>,
    }
    let cases = vec![
        Case {
            name: "PX4: no home, items as listed",
            script: vec![V::Count(2), V::Item(0), V::Item(1)],
            requests: vec![0, 1],
            outcome: Some(MissionOutcome::Downloaded {
                items: plan(2),
                home: None,
            }),
        },
        Case {
            name: "a duplicated item is dropped",
            script: vec![V::Count(2), V::Item(0), V::Item(0), V::Item(1)],
            requests: vec![0, 1],
            outcome: Some(MissionOutcome::Downloaded {
                items: plan(2),
                home: None,
            }),
        },
        Case {
            name: "an item ahead of the one asked for: asked again at once",
            script: vec![V::Count(3), V::Item(0), V::Item(2), V::Item(1), V::Item(2)],
            requests: vec![0, 1, 1, 2],
            outcome: Some(MissionOutcome::Downloaded {
                items: plan(3),
                home: None,
            }),
        },
        Case {
            name: "a lost item is asked again after the timeout",
            script: vec![V::Count(2), V::Item(0), V::Wait, V::Item(1)],
            requests: vec![0, 1, 1],
            outcome: Some(MissionOutcome::Downloaded {
                items: plan(2),
                home: None,
            }),
        },
        Case {
            name: "the count re-sent (our request list crossed it) is ignored",
            script: vec![V::Count(2), V::Count(2), V::Item(0), V::Item(1)],
            requests: vec![0, 1],
            outcome: Some(MissionOutcome::Downloaded {
                items: plan(2),
                home: None,
            }),
        },
        Case {
            name: "legacy float items are converted",
            script: vec![V::Count(1), V::LegacyItem(0)],
            requests: vec![0],
            outcome: Some(MissionOutcome::Downloaded {
                items: plan(1),
                home: None,
            }),
        },
        Case {
            name: "an empty list ends at once",
            script: vec![V::Count(0)],
            requests: vec![],
            outcome: Some(MissionOutcome::Downloaded {
                items: vec![],
                home: None,
            }),
        },
        Case {
            name: "an error ACK ends the download",
            script: vec![V::Count(2), V::Item(0), V::Ack(R::MAV_MISSION_DENIED)],
            requests: vec![0, 1],
            outcome: Some(MissionOutcome::Rejected {
                result: R::MAV_MISSION_DENIED,
                item: None,
            }),
        },
        Case {
            name: "more items than we read",
            script: vec![V::Count(ITEMS_MAX + 1)],
            requests: vec![],
            outcome: Some(MissionOutcome::TooManyItems {
                count: ITEMS_MAX + 1,
            }),
        },
        Case {
            name: "no count at all",
            script: vec![V::Wait, V::Wait, V::Wait, V::Wait],
            requests: vec![],
            outcome: Some(MissionOutcome::TimedOut {
                waiting_for: "MISSION_COUNT after MISSION_REQUEST_LIST",
                attempts: 4,
            }),
        },
    ];
    for case in cases {
        let (mut p, mut now) = download(PX4);
        sent(&mut p, now);
        let mut requests = Vec::new();
        for step in &case.script {
            match step {
                V::Count(n) => p.handle_message(now, &from_vehicle(), &count(*n, MISSION)),
                V::Item(s) => p.handle_message(
                    now,
                    &from_vehicle(),
                    &item(*s, waypoint(i32::from(*s)), MISSION),
                ),
                V::LegacyItem(s) => {
                    let w = waypoint(i32::from(*s));
                    let legacy = MavMessage::MISSION_ITEM(MISSION_ITEM_DATA {
                        x: (f64::from(w.x) / 1e7) as f32,
                        y: (f64::from(w.y) / 1e7) as f32,
                        z: w.z,
                        seq: *s,
                        command: w.command,
                        target_system: US.0,
                        target_component: US.1,
                        frame: w.frame,
                        autocontinue: 1,
                        mission_type: MISSION,
                        ..MISSION_ITEM_DATA::DEFAULT
                    });
                    p.handle_message(now, &from_vehicle(), &legacy)
                }
                V::Ack(r) => p.handle_message(now, &from_vehicle(), &ack(*r, MISSION)),
                V::Wait => now += TIMEOUT,
            }
            for m in sent(&mut p, now) {
                if let MavMessage::MISSION_REQUEST_INT(r) = m {
                    requests.push(r.seq);
                }
            }
        }
        assert_eq!(requests, case.requests, "{}", case.name);
        let got = finished(&mut p);
        if case.name.starts_with("legacy") {
            // f32 degrees keep about 7 digits: within a few 1e-7° of the original.
            let Some(MissionOutcome::Downloaded { items, .. }) = got else {
                panic!("{}: {got:?}", case.name)
            };
            assert!((items[0].x - waypoint(0).x).abs() < 50, "{}", case.name);
            continue;
        }
        assert_eq!(got, case.outcome, "{}", case.name);
    }
}

#[test]
fn clear_and_its_refusal() {
    for (result, outcome) in [
        (
            MavMissionResult::MAV_MISSION_ACCEPTED,
            MissionOutcome::Cleared,
        ),
        (
            MavMissionResult::MAV_MISSION_DENIED,
            MissionOutcome::Rejected {
                result: MavMissionResult::MAV_MISSION_DENIED,
                item: None,
            },
        ),
    ] {
        let mut p = MissionProtocol::new(options());
        let now = Instant::now();
        p.start(now, AP, FENCE, Operation::Clear).unwrap();
        assert!(
            matches!(&sent(&mut p, now)[..], [MavMessage::MISSION_CLEAR_ALL(c)] if c.mission_type == FENCE)
        );
        p.handle_message(now, &from_vehicle(), &ack(result, FENCE));
        assert_eq!(finished(&mut p), Some(outcome));
    }
}

fn current(seq: u16, total: u16) -> MavMessage {
    MavMessage::MISSION_CURRENT(MISSION_CURRENT_DATA {
        seq,
        total,
        ..MISSION_CURRENT_DATA::DEFAULT
    })
}

#[test]
fn set_current_is_confirmed_by_mission_current_in_the_callers_numbering() {
    for (target, wire) in [(AP, 3), (PX4, 2)] {
        let mut p = MissionProtocol::new(options());
        let mut now = Instant::now();
        p.start(now, target, MISSION, Operation::SetCurrent { seq: 2 })
            .unwrap();
        assert!(
            matches!(&sent(&mut p, now)[..], [MavMessage::MISSION_SET_CURRENT(s)] if s.seq == wire)
        );
        // The 1 Hz stream still showing the old item confirms nothing; the request is re-sent.
        p.handle_message(now, &from_vehicle(), &current(0, 5));
        now += TIMEOUT;
        assert_eq!(sent(&mut p, now).len(), 1);
        p.handle_message(now, &from_vehicle(), &current(wire, 5));
        assert_eq!(
            finished(&mut p),
            Some(MissionOutcome::CurrentSet { seq: 2 })
        );
    }
}

#[test]
fn progress_follows_current_and_reached_in_the_callers_numbering() {
    let mut ap = MissionProgress::new(AP);
    let h = from_vehicle();
    assert_eq!(
        ap.handle_message(&h, &current(0, 5)),
        Some(ProgressEvent::Current {
            item: None,
            total: Some(4)
        })
    );
    assert_eq!(
        ap.handle_message(&h, &current(0, 5)),
        None,
        "a repeat says nothing"
    );
    assert_eq!(
        ap.handle_message(&h, &current(1, 5)),
        Some(ProgressEvent::Current {
            item: Some(0),
            total: Some(4)
        })
    );
    let reached = MavMessage::MISSION_ITEM_REACHED(MISSION_ITEM_REACHED_DATA { seq: 1 });
    assert_eq!(
        ap.handle_message(&h, &reached),
        Some(ProgressEvent::Reached { item: 0 })
    );
    assert_eq!(ap.handle_message(&h, &reached), None);
    assert_eq!(ap.current(), Some(0));

    let mut px4 = MissionProgress::new(PX4);
    assert_eq!(
        px4.handle_message(&h, &current(1, 0)),
        Some(ProgressEvent::Current {
            item: Some(1),
            total: None
        })
    );
    assert_eq!(
        px4.handle_message(&h, &reached),
        Some(ProgressEvent::Reached { item: 1 })
    );
    let other = MavHeader { system_id: 9, ..h };
    assert_eq!(px4.handle_message(&other, &current(3, 0)), None);
}

fn any_mission_message() -> impl Strategy<Value = MavMessage> {
    let mt = prop_oneof![Just(MISSION), Just(FENCE)];
    let res = (0u32..16).prop_map(|r| {
        num_traits::FromPrimitive::from_u32(r).unwrap_or(MavMissionResult::MAV_MISSION_ERROR)
    });
    prop_oneof![
        (any::<u16>(), mt.clone()).prop_map(|(s, t)| request(s % 8, t)),
        (any::<u16>(), mt.clone()).prop_map(|(n, t)| count(n % 8, t)),
        (any::<u16>(), mt.clone()).prop_map(|(s, t)| item(s % 8, waypoint(0), t)),
        (res, mt).prop_map(|(r, t)| ack(r, t)),
        any::<u16>().prop_map(|s| current(s % 8, 8)),
    ]
}

proptest! {
    /// Whatever the vehicle sends and whenever time passes, nothing panics, at most one
    /// `Finished` comes per transfer, and a finished transfer sends nothing more.
    #[test]
    fn any_vehicle_behaviour_ends_the_transfer_once(
        op in 0u8..4,
        script in proptest::collection::vec((any_mission_message(), any::<bool>()), 0..40),
    ) {
        let mut p = MissionProtocol::new(options());
        let mut now = Instant::now();
        let operation = match op {
            0 => Operation::Upload { items: plan(3), home: None },
            1 => Operation::Download,
            2 => Operation::Clear,
            _ => Operation::SetCurrent { seq: 1 },
        };
        p.start(now, AP, MISSION, operation).unwrap();
        let mut finished_count = 0;
        for (msg, wait) in script {
            if wait {
                now += TIMEOUT;
            }
            p.handle_message(now, &from_vehicle(), &msg);
            let out = sent(&mut p, now);
            prop_assert!(out.len() <= 2);
            while let Some(e) = p.poll_event() {
                if matches!(e, MissionEvent::Finished { .. }) {
                    finished_count += 1;
                }
            }
            if finished_count > 0 {
                prop_assert!(!p.is_busy());
            }
        }
        prop_assert!(finished_count <= 1);
    }
}
