#![allow(deprecated)] // the *_INT frames: what both autopilots take in mission items

use super::*;
use crate::config::{EnvelopeConfig, ZoneConfig};
use crate::geodesy::{LocalFrame, LocalPoint};
use crate::vehicle::snapshot::FixType;
use crate::vehicle::view::Landed;

const HOME: GeoPosition = GeoPosition {
    latitude_deg: 47.397742,
    longitude_deg: 8.545594,
    altitude_m: 0.0,
};

/// A position `east`, `north` metres from home at `alt` metres.
fn at(east: f64, north: f64, alt: f64) -> GeoPosition {
    let g = LocalFrame::new(HOME.point())
        .unwrap()
        .to_geo(LocalPoint::new(east, north));
    GeoPosition {
        latitude_deg: g.latitude_deg,
        longitude_deg: g.longitude_deg,
        altitude_m: alt,
    }
}

fn wp(east: f64, north: f64, alt: f64) -> MissionStep {
    let p = at(east, north, alt);
    MissionStep::Waypoint {
        latitude_deg: p.latitude_deg,
        longitude_deg: p.longitude_deg,
        altitude_m: alt,
        loiter_s: None,
        photo: false,
    }
}

/// A 400 m square keep-in around home and a keep-out square 40 m wide centred 100 m north.
fn envelope() -> Envelope {
    let square = |name: &str, e: f64, n: f64, half: f64| ZoneConfig {
        name: name.into(),
        polygon_lat_lon_deg: Some(
            [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
                .iter()
                .map(|(de, dn)| {
                    let p = at(e + de * half, n + dn * half, 0.0);
                    [p.latitude_deg, p.longitude_deg]
                })
                .collect(),
        ),
        center_lat_lon_deg: None,
        radius_m: None,
    };
    let config = EnvelopeConfig {
        keep_in: vec![square("field", 0.0, 0.0, 200.0)],
        keep_out: vec![square("barn", 0.0, 100.0, 20.0)],
        ..EnvelopeConfig::default()
    };
    Envelope::new(&config, HOME, None).unwrap()
}

fn facts(position: GeoPosition) -> VehicleView {
    VehicleView {
        position: Some(position),
        battery_remaining_percent: Some(90.0),
        gps_fix_type: FixType::Fix3d,
        satellites_visible: 12,
        hdop: Some(0.8),
        position_valid: true,
        armed: true,
        landed: Landed::InAir,
        home_altitude_msl_m: Some(488.0),
        ..VehicleView::UNKNOWN
    }
}

#[test]
fn steps_are_validated_with_the_step_named() {
    assert!(validate(&[wp(0.0, 10.0, 20.0)]).is_ok());
    assert!(validate(&[]).unwrap_err().contains("at least one waypoint"));
    assert!(
        validate(&[MissionStep::Photo])
            .unwrap_err()
            .contains("at least one waypoint")
    );
    let e = validate(&[wp(0.0, 10.0, 20.0), wp(0.0, 10.0, 0.0)]).unwrap_err();
    assert!(e.starts_with("step 1: altitude_m must be between 1"), "{e}");
    let e = validate(&[wp(0.0, 10.0, 20.0), MissionStep::Speed { speed_m_s: 99.0 }]).unwrap_err();
    assert!(e.contains("step 1: speed_m_s"), "{e}");
    let nan = MissionStep::Waypoint {
        latitude_deg: f64::NAN,
        longitude_deg: 8.0,
        altitude_m: 10.0,
        loiter_s: None,
        photo: false,
    };
    assert!(validate(&[nan]).unwrap_err().contains("latitude_deg"));
}

#[test]
fn items_per_dialect_and_read_back_as_the_same_route() {
    let steps = vec![
        MissionStep::Speed { speed_m_s: 4.0 },
        wp(0.0, 30.0, 20.0),
        match wp(30.0, 30.0, 25.0) {
            MissionStep::Waypoint {
                latitude_deg,
                longitude_deg,
                altitude_m,
                ..
            } => MissionStep::Waypoint {
                latitude_deg,
                longitude_deg,
                altitude_m,
                loiter_s: Some(5.0),
                photo: true,
            },
            _ => unreachable!(),
        },
        MissionStep::Photo,
        wp(30.0, 0.0, 20.0),
    ];
    validate(&steps).unwrap();
    let ap = build_items(&steps, MissionEnd::ReturnHome, AutopilotKind::Ardupilot);
    let commands: Vec<MavCmd> = ap.iter().map(|i| i.command).collect();
    use MavCmd as C;
    assert_eq!(
        commands,
        [
            C::MAV_CMD_DO_CHANGE_SPEED,
            C::MAV_CMD_NAV_WAYPOINT,
            C::MAV_CMD_NAV_LOITER_TIME,
            C::MAV_CMD_DO_DIGICAM_CONTROL,
            C::MAV_CMD_DO_DIGICAM_CONTROL,
            C::MAV_CMD_NAV_WAYPOINT,
            C::MAV_CMD_NAV_RETURN_TO_LAUNCH,
        ]
    );
    let px4 = build_items(&steps, MissionEnd::Land, AutopilotKind::Px4);
    assert_eq!(px4[3].command, C::MAV_CMD_IMAGE_START_CAPTURE);
    assert_eq!(px4.last().unwrap().command, C::MAV_CMD_NAV_LAND);
    assert_eq!(
        px4.last().unwrap().x,
        px4[5].x,
        "lands at the last waypoint"
    );

    let r = route(&ap, None).unwrap();
    assert_eq!(r.points.len(), 3);
    assert_eq!(r.points[0].item, 1);
    assert_eq!(r.points[0].speed_m_s, Some(4.0));
    assert_eq!(r.points[1].kind, "loiter");
    assert!((r.points[1].altitude_m - 25.0).abs() < 1e-3);
    assert_eq!(r.photos, 2);
    assert!(r.returns_home && r.lands);
    assert_eq!(r.last_reached, None);
    assert!((r.length_m - 60.0).abs() < 0.5, "{}", r.length_m);

    let r = route(&px4, None).unwrap();
    assert_eq!(r.last_reached, Some(6));
    assert!(r.lands && !r.returns_home);
    assert_eq!(r.points.last().unwrap().kind, "land");
    assert!((r.points.last().unwrap().altitude_m - 20.0).abs() < 1e-3);

    let hold = build_items(&steps, MissionEnd::Hold, AutopilotKind::Ardupilot);
    let r = route(&hold, None).unwrap();
    assert_eq!(r.last_reached, Some(5));
    assert!(!r.lands);
}

#[test]
fn lists_the_daemon_cannot_judge_are_refused_with_the_item() {
    let mut items = build_items(&[wp(0.0, 30.0, 20.0)], MissionEnd::Hold, AutopilotKind::Px4);
    items.push(MissionItem {
        command: MavCmd::MAV_CMD_DO_JUMP,
        ..items[0]
    });
    let e = route(&items, None).unwrap_err();
    assert!(e.starts_with("item 1 is MAV_CMD_DO_JUMP"), "{e}");

    let mut amsl = items[0];
    amsl.frame = MavFrame::MAV_FRAME_GLOBAL_INT;
    amsl.z = 508.0;
    assert!(
        route(&[amsl], None)
            .unwrap_err()
            .contains("above sea level")
    );
    let r = route(&[amsl], Some(488.0)).unwrap();
    assert!((r.points[0].altitude_m - 20.0).abs() < 1e-3);

    let mut terrain = items[0];
    terrain.frame = MavFrame::MAV_FRAME_GLOBAL_TERRAIN_ALT_INT;
    assert!(route(&[terrain], None).unwrap_err().contains("frame"));

    let after_return = build_items(
        &[wp(0.0, 30.0, 20.0)],
        MissionEnd::ReturnHome,
        AutopilotKind::Px4,
    );
    let mut more = after_return.clone();
    more.push(items[0]);
    assert!(
        route(&more, None)
            .unwrap_err()
            .contains("after the return home")
    );
}

#[test]
fn every_leg_is_checked_and_a_refusal_names_the_leg() {
    let env = envelope();
    let here = at(0.0, 0.0, 20.0);
    // Around the barn (x within ±20 m of east 0, 80..120 m north): west of it, then north.
    let around = [
        wp(-50.0, 50.0, 20.0),
        wp(-50.0, 150.0, 20.0),
        wp(0.0, 160.0, 20.0),
    ];
    let items = build_items(&around, MissionEnd::Land, AutopilotKind::Ardupilot);
    let r = route(&items, None).unwrap();
    check_route(&env, &facts(here), here, &r, 0).unwrap();

    // Straight through the barn: the leg from item 0 to item 1.
    let through = [wp(0.0, 50.0, 20.0), wp(0.0, 150.0, 20.0)];
    let r = route(
        &build_items(&through, MissionEnd::Hold, AutopilotKind::Px4),
        None,
    )
    .unwrap();
    let e = check_route(&env, &facts(here), here, &r, 0).unwrap_err();
    assert!(
        e.starts_with("item 1 (waypoint at ") && e.contains("the leg from item 0 at "),
        "{e}"
    );
    assert!(e.contains("crosses") && e.contains("barn"), "{e}");

    // From the vehicle: a vehicle north of the barn going to a first point south of it.
    let north = at(0.0, 150.0, 20.0);
    let r = route(
        &build_items(&[wp(0.0, 50.0, 20.0)], MissionEnd::Hold, AutopilotKind::Px4),
        None,
    )
    .unwrap();
    let e = check_route(&env, &facts(north), north, &r, 0).unwrap_err();
    assert!(e.contains("the leg from the vehicle at "), "{e}");

    // A point outside the keep-in, and one above the ceiling: the item and the limit named.
    let r = route(
        &build_items(
            &[wp(0.0, 300.0, 20.0)],
            MissionEnd::Hold,
            AutopilotKind::Px4,
        ),
        None,
    )
    .unwrap();
    let e = check_route(&env, &facts(here), here, &r, 0).unwrap_err();
    assert!(e.starts_with("item 0") && e.contains("field"), "{e}");
    let r = route(
        &build_items(
            &[wp(0.0, 30.0, 500.0)],
            MissionEnd::Hold,
            AutopilotKind::Px4,
        ),
        None,
    )
    .unwrap();
    let e = check_route(&env, &facts(here), here, &r, 0).unwrap_err();
    assert!(e.contains("highest allowed target"), "{e}");

    // A speed above the envelope's limit on the leg it applies to.
    let fast = [
        wp(0.0, 30.0, 20.0),
        MissionStep::Speed { speed_m_s: 29.0 },
        wp(30.0, 30.0, 20.0),
    ];
    let r = route(
        &build_items(&fast, MissionEnd::Hold, AutopilotKind::Px4),
        None,
    )
    .unwrap();
    let e = check_route(&env, &facts(here), here, &r, 0).unwrap_err();
    assert!(e.starts_with("item 2") && e.contains("speed limit"), "{e}");

    // Resuming at item 2 checks only the vehicle's leg to it and what follows.
    let r = route(
        &build_items(&through, MissionEnd::Hold, AutopilotKind::Px4),
        None,
    )
    .unwrap();
    let beyond = at(0.0, 140.0, 20.0);
    check_route(&env, &facts(beyond), beyond, &r, 1).unwrap();
}

#[test]
fn remaining_distance_follows_the_points_left() {
    let steps = [wp(0.0, 30.0, 20.0), wp(30.0, 30.0, 20.0)];
    let r = route(
        &build_items(&steps, MissionEnd::Hold, AutopilotKind::Px4),
        None,
    )
    .unwrap();
    let h = (HOME.latitude_deg, HOME.longitude_deg);
    assert!((r.remaining_m(h, 0) - 60.0).abs() < 0.5);
    assert!((r.remaining_m(h, 1) - 42.43).abs() < 0.5);
    assert_eq!(r.remaining_m(h, 2), 0.0);
}
