//! Table tests of the fence plan per dialect and of the read-back comparison.

use super::*;

fn zone_polygon(name: &str, vertices: &[[f64; 2]]) -> ZoneConfig {
    ZoneConfig {
        name: name.into(),
        polygon_lat_lon_deg: Some(vertices.to_vec()),
        center_lat_lon_deg: None,
        radius_m: None,
    }
}

fn zone_circle(name: &str, center: [f64; 2], radius_m: f64) -> ZoneConfig {
    ZoneConfig {
        name: name.into(),
        polygon_lat_lon_deg: None,
        center_lat_lon_deg: Some(center),
        radius_m: Some(radius_m),
    }
}

fn field() -> EnvelopeConfig {
    EnvelopeConfig {
        altitude_m_max: 60.0,
        distance_from_home_m_max: 250.0,
        keep_in: vec![zone_polygon(
            "field",
            &[
                [47.3970, 8.5440],
                [47.3990, 8.5440],
                [47.3990, 8.5470],
                [47.3970, 8.5470],
            ],
        )],
        keep_out: vec![
            zone_polygon(
                "barn",
                &[[47.3980, 8.5450], [47.3982, 8.5450], [47.3982, 8.5453]],
            ),
            zone_circle("mast", [47.3975, 8.5465], 12.5),
        ],
        ..EnvelopeConfig::default()
    }
}

fn param_of(plan: &FencePlan, name: &str) -> Option<f64> {
    plan.params.iter().find(|p| p.name == name).map(|p| p.value)
}

#[test]
fn ardupilot_plan_has_every_zone_the_ceiling_the_cylinder_and_the_action() {
    let plan = plan(&field(), AutopilotKind::Ardupilot, FenceAction::ReturnHome).unwrap();
    assert_eq!(plan.items.len(), 4 + 3 + 1);
    let first = &plan.items[0];
    assert_eq!(
        first.command,
        MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
    );
    assert_eq!(first.params[0], 4.0);
    assert_eq!((first.x, first.y), (473_970_000, 85_440_000));
    assert_eq!(
        plan.items[4].command,
        MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
    );
    assert_eq!(plan.items[4].params[0], 3.0);
    assert_eq!(
        plan.items[7].command,
        MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
    );
    assert_eq!(plan.items[7].params[0], 12.5);
    assert!(
        plan.items
            .iter()
            .all(|i| i.frame == MavFrame::MAV_FRAME_GLOBAL)
    );
    assert_eq!(param_of(&plan, "FENCE_ALT_MAX"), Some(60.0));
    assert_eq!(param_of(&plan, "FENCE_RADIUS"), Some(250.0));
    assert_eq!(param_of(&plan, "FENCE_TYPE"), Some(7.0));
    assert_eq!(param_of(&plan, "FENCE_ACTION"), Some(1.0));
    assert_eq!(plan.params.last().map(|p| p.name), Some("FENCE_ENABLE"));
    assert!(plan.params.iter().all(|p| MIRROR_PARAMS.contains(&p.name)));
    assert_eq!(
        counts(&plan.items),
        FenceCounts {
            inclusion_polygons: 1,
            exclusion_polygons: 1,
            inclusion_circles: 0,
            exclusion_circles: 1
        }
    );
}

#[test]
fn px4_plan_uses_the_geofence_parameters() {
    let plan = plan(&field(), AutopilotKind::Px4, FenceAction::Land).unwrap();
    assert_eq!(plan.items.len(), 8);
    assert_eq!(param_of(&plan, "GF_MAX_VER_DIST"), Some(60.0));
    assert_eq!(param_of(&plan, "GF_MAX_HOR_DIST"), Some(250.0));
    assert_eq!(param_of(&plan, "GF_ACTION"), Some(5.0));
    assert_eq!(param_of(&plan, "FENCE_ENABLE"), None);
    let rtl = super::plan(&field(), AutopilotKind::Px4, FenceAction::ReturnHome).unwrap();
    assert_eq!(param_of(&rtl, "GF_ACTION"), Some(3.0));
}

#[test]
fn without_zones_ardupilot_leaves_the_polygon_type_off_and_ranges_are_kept() {
    let config = EnvelopeConfig {
        altitude_m_max: 5.0,
        distance_from_home_m_max: 20.0,
        ..EnvelopeConfig::default()
    };
    let plan = plan(&config, AutopilotKind::Ardupilot, FenceAction::Land).unwrap();
    assert!(plan.items.is_empty());
    assert_eq!(param_of(&plan, "FENCE_TYPE"), Some(3.0));
    assert_eq!(param_of(&plan, "FENCE_ACTION"), Some(2.0));
    // ArduPilot's ranges: 10 m ceiling, 30 m radius at least.
    assert_eq!(param_of(&plan, "FENCE_ALT_MAX"), Some(10.0));
    assert_eq!(param_of(&plan, "FENCE_RADIUS"), Some(30.0));
}

#[test]
fn unmirrorable_envelopes_are_refused_with_the_reason() {
    let cases: Vec<(EnvelopeConfig, AutopilotKind, &str)> = vec![
        (field(), AutopilotKind::Other, "neither ArduPilot nor PX4"),
        (
            EnvelopeConfig {
                keep_out: vec![zone_polygon("sliver", &[[47.0, 8.0], [47.1, 8.0]])],
                ..EnvelopeConfig::default()
            },
            AutopilotKind::Ardupilot,
            "`sliver` has 2 vertices",
        ),
        (
            EnvelopeConfig {
                keep_out: vec![zone_circle("dot", [47.0, 8.0], f64::NAN)],
                ..EnvelopeConfig::default()
            },
            AutopilotKind::Px4,
            "`dot` is neither",
        ),
        (
            EnvelopeConfig {
                keep_in: vec![zone_polygon("huge", &vec![[47.0, 8.0]; 256])],
                ..EnvelopeConfig::default()
            },
            AutopilotKind::Ardupilot,
            "3 to 255",
        ),
    ];
    for (config, kind, want) in cases {
        let err = plan(&config, kind, FenceAction::ReturnHome).unwrap_err();
        assert!(err.contains(want), "{err} should contain {want}");
    }
}

#[test]
fn the_read_back_matches_within_tolerance_and_names_each_difference() {
    let plan = plan(&field(), AutopilotKind::Ardupilot, FenceAction::ReturnHome).unwrap();
    let all = |name: &str| param_of(&plan, name);
    assert!(compare(&plan, &plan.items, &all).is_empty());

    // Within tolerance: the float item's rounding, a float parameter's last bits, GLOBAL_INT.
    let mut close = plan.items.clone();
    close[0].x += 1;
    close[7].params[0] += 0.001;
    close[2].frame = MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT;
    let nearly = |name: &str| param_of(&plan, name).map(|v| v * (1.0 + 1e-6));
    assert_eq!(compare(&plan, &close, &nearly), Vec::<String>::new());

    type Case = (
        &'static str,
        Box<dyn Fn(&mut Vec<MissionItem>)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "cleared by a GCS",
            Box::new(|items| items.clear()),
            "autopilot fence has 0 inclusion polygons; envelope has 1",
        ),
        (
            "a vertex moved",
            Box::new(|items| items[1].x += 1000),
            "fence item 1: at 47.3991000",
        ),
        (
            "a circle grown",
            Box::new(|items| items[7].params[0] = 40.0),
            "fence item 7: radius 40 m; envelope has 12.5 m",
        ),
        (
            "an exclusion turned inclusion",
            Box::new(|items| {
                for i in &mut items[4..7] {
                    i.command = MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION;
                }
            }),
            "autopilot fence has 2 inclusion polygons; envelope has 1",
        ),
        (
            "a local frame",
            Box::new(|items| items[0].frame = MavFrame::MAV_FRAME_LOCAL_NED),
            "fence item 0: frame",
        ),
        (
            "a polygon's count changed",
            Box::new(|items| items[4].params[0] = 5.0),
            "fence item 4: polygon of 5 vertices",
        ),
    ];
    for (what, change, want) in cases {
        let mut items = plan.items.clone();
        change(&mut items);
        let differences = compare(&plan, &items, &all);
        assert!(
            differences.iter().any(|d| d.contains(want)),
            "{what}: {differences:?} should name {want}"
        );
    }

    let disabled = |name: &str| {
        if name == "FENCE_ENABLE" {
            Some(0.0)
        } else if name == "FENCE_ALT_MAX" {
            None
        } else {
            param_of(&plan, name)
        }
    };
    let differences = compare(&plan, &plan.items, &disabled);
    assert_eq!(
        differences,
        vec![
            "FENCE_ALT_MAX not read from the autopilot".to_string(),
            "FENCE_ENABLE is 0; envelope needs 1".to_string()
        ]
    );
}

#[test]
fn counting_a_corrupt_list_never_loops_or_panics() {
    let mut items = plan(&field(), AutopilotKind::Px4, FenceAction::Land)
        .unwrap()
        .items;
    for (i, n) in [f32::NAN, -3.0, 0.0, 1e30].into_iter().enumerate() {
        items[i].params[0] = n;
    }
    let c = counts(&items);
    assert!(c.inclusion_polygons >= 1);
    assert!(
        compare(
            &plan(&field(), AutopilotKind::Px4, FenceAction::Land).unwrap(),
            &items,
            &|_| None
        )
        .len()
            > 1
    );
}
