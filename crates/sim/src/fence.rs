//! The simulated autopilot's polygon and circle fence, sans-IO: is a position inside the
//! zones of an uploaded fence list?
//!
//! Both firmwares read the list the same way: a polygon is consecutive
//! `MAV_CMD_NAV_FENCE_POLYGON_VERTEX_*` items whose param1 is the vertex count, a circle one
//! `MAV_CMD_NAV_FENCE_CIRCLE_*` item with the radius in param1, and the vehicle must be inside
//! every inclusion zone and outside every exclusion zone (ArduCopter's
//! `AC_PolyFence_loader::breached` without the `INCLUSION_UNION` option; PX4's
//! `Geofence::isInsidePolygonOrCircle`, `navigator/geofence.cpp`, which ANDs every zone).
//! The containment test is the crossing number on the north/east plane around home (both
//! firmwares project to a local plane first); the simulator's own code, independent of the
//! daemon's envelope geometry it is there to catch out.

use nalgebra::Vector3;

use flight_companion_core::vehicle::mission::MissionItem;

use super::physics::GeoPoint;
use flight_companion_core::link::dialect::MavCmd;

/// The first zone of `items` that `position_ned_m` (metres from home) breaches, as the
/// autopilot would name it ("inclusion polygon 1", "exclusion circle 2"); `None` inside.
/// A malformed list (a polygon cut short, fewer than 3 vertices) is skipped, as both
/// firmwares refuse it at upload.
pub fn breached_zone(
    items: &[MissionItem],
    home: &GeoPoint,
    position_ned_m: &Vector3<f64>,
) -> Option<String> {
    let local = |item: &MissionItem| {
        let point = GeoPoint {
            lat_deg: f64::from(item.x) / 1e7,
            lon_deg: f64::from(item.y) / 1e7,
            alt_amsl_m: home.alt_amsl_m,
        };
        let ned = home.ned_to(&point);
        (ned.x, ned.y)
    };
    let here = (position_ned_m.x, position_ned_m.y);
    let mut i = 0;
    let mut zone = 0;
    while i < items.len() {
        let item = &items[i];
        zone += 1;
        let (inclusion, inside, step) = match item.command {
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
            | MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION => {
                let count = item.params[0];
                let n = if count.is_finite() && count >= 1.0 {
                    count as usize
                } else {
                    1
                };
                let Some(vertices) = items.get(i..i.saturating_add(n)) else {
                    break;
                };
                if n < 3 || vertices.iter().any(|v| v.command != item.command) {
                    i += 1;
                    continue;
                }
                let polygon: Vec<(f64, f64)> = vertices.iter().map(local).collect();
                (
                    item.command == MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
                    crossing_inside(&polygon, here),
                    n,
                )
            }
            MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
            | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION => {
                let (north_m, east_m) = local(item);
                let distance_m = (here.0 - north_m).hypot(here.1 - east_m);
                (
                    item.command == MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION,
                    distance_m < f64::from(item.params[0]),
                    1,
                )
            }
            _ => {
                i += 1;
                continue;
            }
        };
        if inside != inclusion {
            let shape = if matches!(
                item.command,
                MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
                    | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
            ) {
                "circle"
            } else {
                "polygon"
            };
            let kind = if inclusion { "inclusion" } else { "exclusion" };
            return Some(format!("{kind} {shape} {zone}"));
        }
        i = i.saturating_add(step);
    }
    None
}

/// Crossing number of a ray to the east: inside when odd.
fn crossing_inside(polygon: &[(f64, f64)], (x, y): (f64, f64)) -> bool {
    let mut inside = false;
    let mut j = polygon.len() - 1;
    for i in 0..polygon.len() {
        let (xi, yi) = polygon[i];
        let (xj, yj) = polygon[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use flight_companion_core::link::dialect::MavFrame;

    fn home() -> GeoPoint {
        GeoPoint {
            lat_deg: 47.397742,
            lon_deg: 8.545594,
            alt_amsl_m: 488.0,
        }
    }

    fn item(command: MavCmd, param1: f32, north_m: f64, east_m: f64) -> MissionItem {
        let p = home().offset_by(&Vector3::new(north_m, east_m, 0.0));
        MissionItem {
            command,
            frame: MavFrame::MAV_FRAME_GLOBAL,
            params: [param1, 0.0, 0.0, 0.0],
            x: (p.lat_deg * 1e7).round() as i32,
            y: (p.lon_deg * 1e7).round() as i32,
            z: 0.0,
            autocontinue: false,
        }
    }

    fn square(command: MavCmd, centre: (f64, f64), half_m: f64) -> Vec<MissionItem> {
        [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
            .into_iter()
            .map(|(n, e)| item(command, 4.0, centre.0 + n * half_m, centre.1 + e * half_m))
            .collect()
    }

    #[test]
    fn inside_every_inclusion_and_outside_every_exclusion() {
        let mut items = square(
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
            (0.0, 0.0),
            50.0,
        );
        items.extend(square(
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
            (30.0, 0.0),
            5.0,
        ));
        items.push(item(
            MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION,
            8.0,
            -30.0,
            0.0,
        ));
        items.push(item(
            MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION,
            45.0,
            0.0,
            0.0,
        ));
        let at = |n: f64, e: f64| breached_zone(&items, &home(), &Vector3::new(n, e, -10.0));
        assert_eq!(at(0.0, 0.0), None);
        assert_eq!(at(0.0, 60.0).as_deref(), Some("inclusion polygon 1"));
        assert_eq!(at(30.0, 2.0).as_deref(), Some("exclusion polygon 2"));
        assert_eq!(at(-33.0, 1.0).as_deref(), Some("exclusion circle 3"));
        assert_eq!(at(35.0, 35.0).as_deref(), Some("inclusion circle 4"));
    }

    #[test]
    fn malformed_lists_are_skipped_without_panicking() {
        let mut items = square(
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
            (0.0, 0.0),
            50.0,
        );
        items[0].params[0] = f32::NAN;
        items[1].params[0] = 1e30;
        let here = Vector3::new(200.0, 0.0, 0.0);
        assert_eq!(breached_zone(&items, &home(), &here), None);
        assert_eq!(breached_zone(&items[..2], &home(), &here), None);
        assert_eq!(breached_zone(&[], &home(), &here), None);
    }

    /// The daemon's fence mirror (`vehicle::fence_sync`) against the whole simulated autopilot
    /// of each firmware: uploaded, written, read back and verified; then a ground station's
    /// change (fence disabled, list cleared) found by the re-check.
    #[test]
    fn the_mirror_is_verified_against_both_firmwares_and_a_change_is_found() {
        use crate::autopilot::{Personality, SimAutopilot, SimOptions};
        use flight_companion_core::safety::envelope_config::{EnvelopeConfig, ZoneConfig};
        use flight_companion_core::safety::fence_mirror::{FenceAction, plan};
        use flight_companion_core::vehicle::fence_sync::{FenceSync, FenceSyncEvent};
        use flight_companion_core::vehicle::mission::{MissionOptions, MissionTarget};
        use flight_companion_core::vehicle::modes::AutopilotKind;
        use std::time::{Duration, Instant};

        let corner = |n: f64, e: f64| {
            let p = home().offset_by(&Vector3::new(n, e, 0.0));
            [p.lat_deg, p.lon_deg]
        };
        let config = EnvelopeConfig {
            altitude_m_max: 50.0,
            keep_in: vec![ZoneConfig {
                name: "field".into(),
                polygon_lat_lon_deg: Some(vec![
                    corner(-80.0, -80.0),
                    corner(80.0, -80.0),
                    corner(80.0, 80.0),
                    corner(-80.0, 80.0),
                ]),
                center_lat_lon_deg: None,
                radius_m: None,
            }],
            keep_out: vec![ZoneConfig {
                name: "mast".into(),
                polygon_lat_lon_deg: None,
                center_lat_lon_deg: Some(corner(40.0, 40.0)),
                radius_m: Some(10.0),
            }],
            ..EnvelopeConfig::default()
        };
        for (personality, kind) in [
            (Personality::ArduPilot, AutopilotKind::Ardupilot),
            (Personality::Px4, AutopilotKind::Px4),
        ] {
            let mut sim = SimAutopilot::new(SimOptions {
                autopilot: personality,
                home: home(),
                seed: 7,
                system_id: 1,
                ekf_ready_s: Some(1.0),
            });
            let mut sync = FenceSync::new(MissionOptions {
                item_timeout: Duration::from_millis(1500),
                retries_max: 3,
                source_system: 255,
                source_component: 190,
            });
            sync.set_target(Some(MissionTarget {
                system: 1,
                component: 1,
                autopilot: kind,
            }));
            let start = Instant::now();
            let mut now = Duration::ZERO;
            let plan = plan(&config, kind, FenceAction::ReturnHome).unwrap();
            let gcs = flight_companion_core::link::MavHeader {
                system_id: 255,
                component_id: 190,
                sequence: 0,
            };
            let vehicle = flight_companion_core::link::MavHeader {
                system_id: 1,
                component_id: 1,
                sequence: 0,
            };
            let run = |sync: &mut FenceSync, sim: &mut SimAutopilot, now: &mut Duration| {
                for _ in 0..20_000 {
                    *now += Duration::from_millis(5);
                    let at = start + *now;
                    sim.step(*now);
                    while let Some(m) = sync.poll_transmit(at) {
                        sim.handle_message(*now, &gcs, &m);
                    }
                    while let Some(m) = sim.poll_transmit(*now) {
                        sync.handle_message(at, &vehicle, &m);
                    }
                    if let Some(FenceSyncEvent::Finished {
                        matches,
                        differences,
                        error,
                        ..
                    }) = sync.poll_event()
                    {
                        return (matches, differences, error);
                    }
                }
                panic!("the run did not end");
            };
            sync.mirror(start + now, plan.clone()).unwrap();
            let (matches, differences, error) = run(&mut sync, &mut sim, &mut now);
            assert_eq!(
                (matches, error),
                (Some(true), None),
                "{personality:?}: {differences:?}"
            );
            assert_eq!(
                sim.mission_list(
                    flight_companion_core::link::dialect::MavMissionType::MAV_MISSION_TYPE_FENCE
                )
                .len(),
                5
            );

            // A ground station switches the fence off and clears the list.
            let off = match kind {
                AutopilotKind::Px4 => "GF_ACTION",
                _ => "FENCE_ENABLE",
            };
            let kind_of_value = match kind {
                AutopilotKind::Px4 => {
                    flight_companion_core::link::dialect::MavParamType::MAV_PARAM_TYPE_INT32
                }
                _ => flight_companion_core::link::dialect::MavParamType::MAV_PARAM_TYPE_INT8,
            };
            sim.handle_message(
                now,
                &gcs,
                &flight_companion_core::link::MavMessage::PARAM_SET(
                    flight_companion_core::link::dialect::PARAM_SET_DATA {
                        param_value: 0.0,
                        target_system: 1,
                        target_component: 1,
                        param_id: off.into(),
                        param_type: kind_of_value,
                    },
                ),
            );
            sim.handle_message(
                now,
                &gcs,
                &flight_companion_core::link::MavMessage::MISSION_CLEAR_ALL(
                    flight_companion_core::link::dialect::MISSION_CLEAR_ALL_DATA {
                        target_system: 1,
                        target_component: 1,
                        mission_type: flight_companion_core::link::dialect::MavMissionType::MAV_MISSION_TYPE_FENCE,
                    },
                ),
            );
            while sim.poll_transmit(now).is_some() {}
            sync.check(start + now, plan.clone()).unwrap();
            let (matches, differences, _) = run(&mut sync, &mut sim, &mut now);
            assert_eq!(matches, Some(false), "{personality:?}");
            assert!(
                differences
                    .iter()
                    .any(|d| d == "autopilot fence has 0 inclusion polygons; envelope has 1"),
                "{personality:?}: {differences:?}"
            );
            assert!(
                differences
                    .iter()
                    .any(|d| d.starts_with(&format!("{off} is 0"))),
                "{personality:?}: {differences:?}"
            );
            assert_eq!(sync.status().matches_envelope, Some(false));
        }
    }
}
