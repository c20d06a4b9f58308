#![allow(deprecated)] // MISSION_REQUEST and MISSION_ITEM: what ArduPilot still sends

use std::time::{Duration, Instant};

use super::*;
use flight_companion_core::link::MavHeader;
use flight_companion_core::vehicle::mission::{
    MissionEvent, MissionOptions, MissionOutcome, MissionProtocol, MissionTarget, Operation,
};
use flight_companion_core::vehicle::modes::AutopilotKind;

const GCS: (u8, u8) = (1, 191);
const VEHICLE: (u8, u8) = (1, 1);
const MISSION: MavMissionType = MavMissionType::MAV_MISSION_TYPE_MISSION;
const FENCE: MavMissionType = MavMissionType::MAV_MISSION_TYPE_FENCE;

fn home() -> GeoPoint {
    GeoPoint {
        lat_deg: 47.397742,
        lon_deg: 8.545594,
        alt_amsl_m: 488.0,
    }
}

fn waypoint(n: i32) -> MissionItem {
    MissionItem {
        command: MavCmd::MAV_CMD_NAV_WAYPOINT,
        frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
        params: [0.0; 4],
        x: 473_977_000 + n * 100,
        y: 85_456_000,
        z: 20.0,
        autocontinue: true,
    }
}

fn vertex(n: i32) -> MissionItem {
    MissionItem {
        command: MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
        frame: MavFrame::MAV_FRAME_GLOBAL,
        params: [4.0, 0.0, 0.0, 0.0],
        x: 473_970_000 + (n % 2) * 2000,
        y: 85_450_000 + (n / 2) * 2000,
        z: 0.0,
        autocontinue: true,
    }
}

fn personality_of(kind: AutopilotKind) -> Personality {
    match kind {
        AutopilotKind::Px4 => Personality::Px4,
        _ => Personality::ArduPilot,
    }
}

/// Our core against the simulated firmware, every `drop_every`-th message lost each way.
fn run(
    kind: AutopilotKind,
    server: &mut MissionServer,
    mission_type: MavMissionType,
    operation: Operation,
    drop_every: usize,
) -> MissionOutcome {
    let mut ground = MissionProtocol::new(MissionOptions {
        item_timeout: Duration::from_millis(1500),
        retries_max: 5,
        source_system: GCS.0,
        source_component: GCS.1,
    });
    let start = Instant::now();
    let target = MissionTarget {
        system: VEHICLE.0,
        component: VEHICLE.1,
        autopilot: kind,
    };
    ground
        .start(start, target, mission_type, operation)
        .unwrap();
    let mut sent = 0usize;
    let header = MavHeader {
        system_id: u32::from(VEHICLE.0),
        component_id: VEHICLE.1,
        sequence: 0,
    };
    for tick in 0..20_000u64 {
        let elapsed = Duration::from_millis(tick * 10);
        let now = start + elapsed;
        while let Some(m) = ground.poll_transmit(now) {
            sent += 1;
            if drop_every == 0 || sent % drop_every != 0 {
                server.handle_message(elapsed, GCS, &m, home());
            }
        }
        server.tick(elapsed);
        while let Some(m) = server.poll_transmit() {
            sent += 1;
            if drop_every == 0 || sent % drop_every != 0 {
                ground.handle_message(now, &header, &m);
            }
        }
        ground.handle_timeout(now);
        while let Some(e) = ground.poll_event() {
            if let MissionEvent::Finished { outcome, .. } = e {
                return outcome;
            }
        }
    }
    panic!("the transfer never finished");
}

#[test]
fn upload_and_download_round_trip_ardupilot_and_px4_mission_item_protocol_and_mavlink_mission_cpp()
{
    for kind in [AutopilotKind::Ardupilot, AutopilotKind::Px4] {
        let mut server = MissionServer::new(personality_of(kind), VEHICLE.0, VEHICLE.1);
        let items: Vec<MissionItem> = (0..5).map(waypoint).collect();
        let up = run(
            kind,
            &mut server,
            MISSION,
            Operation::Upload {
                items: items.clone(),
                home: None,
            },
            0,
        );
        assert_eq!(up, MissionOutcome::Uploaded { count: 5 }, "{kind:?}");
        assert_eq!(
            server.list(MISSION),
            &items[..],
            "{kind:?}: stored without the home slot"
        );
        let down = run(kind, &mut server, MISSION, Operation::Download, 0);
        let MissionOutcome::Downloaded {
            items: got,
            home: got_home,
        } = down
        else {
            panic!("{kind:?}: {down:?}")
        };
        assert_eq!(got, items, "{kind:?}");
        // AP_Mission: slot 0 is the vehicle's own home.
        assert_eq!(
            got_home.is_some(),
            kind == AutopilotKind::Ardupilot,
            "{kind:?}"
        );
        if let Some(h) = got_home {
            assert_eq!(h.x, 473_977_420);
        }
    }
}

#[test]
fn lossy_links_still_transfer_both_dialects() {
    // Every 3rd, 5th and 7th message lost each way: the retries of both sides recover.
    for kind in [AutopilotKind::Ardupilot, AutopilotKind::Px4] {
        for drop_every in [3, 5, 7] {
            let mut server = MissionServer::new(personality_of(kind), VEHICLE.0, VEHICLE.1);
            let items: Vec<MissionItem> = (0..8).map(waypoint).collect();
            let up = run(
                kind,
                &mut server,
                MISSION,
                Operation::Upload {
                    items: items.clone(),
                    home: None,
                },
                drop_every,
            );
            // A lost final ACK: PX4 ACKs the re-sent last item again; ArduPilot answers it
            // with ERROR, which the core reports as unconfirmed (the download below checks).
            assert!(
                matches!(
                    up,
                    MissionOutcome::Uploaded { count: 8 }
                        | MissionOutcome::Unconfirmed { count: 8 }
                ),
                "{kind:?} drop {drop_every}: {up:?}"
            );
            assert_eq!(server.list(MISSION), &items[..]);
            let down = run(kind, &mut server, MISSION, Operation::Download, drop_every);
            assert!(
                matches!(&down, MissionOutcome::Downloaded { items: got, .. } if *got == items),
                "{kind:?} drop {drop_every}: {down:?}"
            );
        }
    }
}

#[test]
fn fence_upload_clear_and_set_current() {
    for kind in [AutopilotKind::Ardupilot, AutopilotKind::Px4] {
        let mut server = MissionServer::new(personality_of(kind), VEHICLE.0, VEHICLE.1);
        let fence: Vec<MissionItem> = (0..4).map(vertex).collect();
        let up = run(
            kind,
            &mut server,
            FENCE,
            Operation::Upload {
                items: fence.clone(),
                home: None,
            },
            0,
        );
        assert_eq!(up, MissionOutcome::Uploaded { count: 4 });
        assert_eq!(server.list(FENCE), &fence[..]);
        assert_eq!(server.poll_change(), Some(ListChange::Replaced(FENCE)));
        let cleared = run(kind, &mut server, FENCE, Operation::Clear, 0);
        assert_eq!(cleared, MissionOutcome::Cleared);
        assert!(server.list(FENCE).is_empty());
    }
}

#[test]
fn a_waypoint_in_the_fence_list_is_refused_as_each_firmware_does() {
    for kind in [AutopilotKind::Ardupilot, AutopilotKind::Px4] {
        let mut server = MissionServer::new(personality_of(kind), VEHICLE.0, VEHICLE.1);
        let out = run(
            kind,
            &mut server,
            FENCE,
            Operation::Upload {
                items: vec![waypoint(0)],
                home: None,
            },
            0,
        );
        assert!(
            matches!(out, MissionOutcome::Rejected { item: Some(0), .. }),
            "{kind:?}: {out:?}"
        );
        assert!(server.list(FENCE).is_empty());
    }
}

#[test]
fn ardupilot_denies_a_second_station_while_receiving_mission_item_protocol_cpp() {
    let mut server = MissionServer::new(Personality::ArduPilot, VEHICLE.0, VEHICLE.1);
    let count = |n| {
        MavMessage::MISSION_COUNT(MISSION_COUNT_DATA {
            count: n,
            target_system: 1,
            target_component: 1,
            mission_type: MISSION,
            opaque_id: 0,
        })
    };
    server.handle_message(Duration::ZERO, GCS, &count(3), home());
    assert!(matches!(server.poll_transmit(), Some(MavMessage::MISSION_REQUEST(r)) if r.seq == 0));
    server.handle_message(Duration::ZERO, (255, 190), &count(2), home());
    assert!(matches!(server.poll_transmit(),
        Some(MavMessage::MISSION_ACK(a)) if a.mavtype == MavMissionResult::MAV_MISSION_DENIED && a.target_system == 255));
    // Silent uploader: the request is repeated after 1 s, cancelled after 8 s.
    server.tick(Duration::from_millis(1100));
    assert!(matches!(server.poll_transmit(), Some(MavMessage::MISSION_REQUEST(r)) if r.seq == 0));
    server.tick(Duration::from_millis(8100));
    assert!(std::iter::from_fn(|| server.poll_transmit()).any(|m| matches!(m,
        MavMessage::MISSION_ACK(a) if a.mavtype == MavMissionResult::MAV_MISSION_OPERATION_CANCELLED)));
    assert!(!server.is_receiving());
}

#[test]
fn px4_ends_a_download_on_an_unexpected_request_mavlink_mission_cpp() {
    let mut server = MissionServer::new(Personality::Px4, VEHICLE.0, VEHICLE.1);
    server.lists[0] = (0..3).map(waypoint).collect();
    let list = MavMessage::MISSION_REQUEST_LIST(
        flight_companion_core::link::dialect::MISSION_REQUEST_LIST_DATA {
            target_system: 1,
            target_component: 1,
            mission_type: MISSION,
        },
    );
    server.handle_message(Duration::ZERO, GCS, &list, home());
    assert!(matches!(server.poll_transmit(), Some(MavMessage::MISSION_COUNT(c)) if c.count == 3));
    let req = |seq| {
        MavMessage::MISSION_REQUEST_INT(MISSION_REQUEST_INT_DATA {
            seq,
            target_system: 1,
            target_component: 1,
            mission_type: MISSION,
        })
    };
    server.handle_message(Duration::ZERO, GCS, &req(0), home());
    assert!(matches!(server.poll_transmit(), Some(MavMessage::MISSION_ITEM_INT(i)) if i.seq == 0));
    // The same item again is answered ("again").
    server.handle_message(Duration::ZERO, GCS, &req(0), home());
    assert!(matches!(server.poll_transmit(), Some(MavMessage::MISSION_ITEM_INT(i)) if i.seq == 0));
    // Skipping ahead ends the transfer with an error.
    server.handle_message(Duration::ZERO, GCS, &req(2), home());
    assert!(matches!(server.poll_transmit(),
        Some(MavMessage::MISSION_ACK(a)) if a.mavtype == MavMissionResult::MAV_MISSION_ERROR));
}

#[test]
fn no_space_beyond_the_storage() {
    for (personality, n) in [
        (Personality::ArduPilot, ARDUPILOT_ITEMS_MAX + 1),
        (Personality::Px4, PX4_ITEMS_MAX + 1),
    ] {
        let mut server = MissionServer::new(personality, VEHICLE.0, VEHICLE.1);
        let count = MavMessage::MISSION_COUNT(MISSION_COUNT_DATA {
            count: n,
            target_system: 1,
            target_component: 1,
            mission_type: MISSION,
            opaque_id: 0,
        });
        server.handle_message(Duration::ZERO, GCS, &count, home());
        assert!(matches!(server.poll_transmit(),
            Some(MavMessage::MISSION_ACK(a)) if a.mavtype == MavMissionResult::MAV_MISSION_NO_SPACE));
    }
}
