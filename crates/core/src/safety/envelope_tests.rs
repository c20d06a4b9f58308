use super::*;
use crate::config::ZoneConfig;
use crate::safety::geo::LocalFrame;

const HOME: GeoPosition = GeoPosition {
    latitude_deg: 47.397742,
    longitude_deg: 8.545594,
    altitude_m: 0.0,
};

fn frame() -> LocalFrame {
    LocalFrame::new(HOME.point()).unwrap()
}

/// A position `east`, `north` metres from home at `alt` metres.
fn at(east: f64, north: f64, alt: f64) -> GeoPosition {
    let g = frame().to_geo(LocalPoint::new(east, north));
    GeoPosition {
        latitude_deg: g.latitude_deg,
        longitude_deg: g.longitude_deg,
        altitude_m: alt,
    }
}

fn polygon(name: &str, local: &[(f64, f64)]) -> ZoneConfig {
    ZoneConfig {
        name: name.into(),
        polygon_lat_lon_deg: Some(
            local
                .iter()
                .map(|(e, n)| {
                    let g = frame().to_geo(LocalPoint::new(*e, *n));
                    [g.latitude_deg, g.longitude_deg]
                })
                .collect(),
        ),
        center_lat_lon_deg: None,
        radius_m: None,
    }
}

fn circle(name: &str, east: f64, north: f64, radius_m: f64) -> ZoneConfig {
    let g = frame().to_geo(LocalPoint::new(east, north));
    ZoneConfig {
        name: name.into(),
        polygon_lat_lon_deg: None,
        center_lat_lon_deg: Some([g.latitude_deg, g.longitude_deg]),
        radius_m: Some(radius_m),
    }
}

/// 400 m square keep-in centred on home, a school (circle, 80 m) to the north-east.
fn config() -> EnvelopeConfig {
    EnvelopeConfig {
        keep_in: vec![polygon(
            "field",
            &[
                (-200.0, -200.0),
                (200.0, -200.0),
                (200.0, 200.0),
                (-200.0, 200.0),
            ],
        )],
        keep_out: vec![circle("school", 100.0, 100.0, 40.0)],
        ..EnvelopeConfig::default()
    }
}

fn good_facts(position: GeoPosition) -> VehicleView {
    VehicleView {
        position: Some(position),
        velocity_ned_m_s: [0.0; 3],
        battery_remaining_percent: Some(90.0),
        gps_fix_type: FixType::Fix3d,
        satellites_visible: 12,
        hdop: Some(0.8),
        position_valid: true,
        armed: true,
        landed: Landed::InAir,
        ..VehicleView::UNKNOWN
    }
}

fn reason(v: Verdict) -> String {
    match v {
        Verdict::Allowed => String::new(),
        Verdict::Refused(refusal) => refusal.message,
    }
}

#[test]
fn malformed_polygons_are_refused_with_reasons() {
    let cases: Vec<(&str, ZoneConfig, &str)> = vec![
        (
            "bow-tie",
            polygon(
                "bow",
                &[
                    (-100.0, -100.0),
                    (100.0, 100.0),
                    (100.0, -100.0),
                    (-100.0, 100.0),
                ],
            ),
            "self-intersecting",
        ),
        (
            "collinear",
            polygon("line", &[(-100.0, 0.0), (0.0, 0.0), (100.0, 0.0)]),
            "corner",
        ),
        (
            "duplicate",
            polygon(
                "dup",
                &[
                    (-100.0, -100.0),
                    (100.0, -100.0),
                    (100.0, -100.2),
                    (100.0, 100.0),
                    (-100.0, 100.0),
                ],
            ),
            "vertices 1 and 2 are 0.20 m apart",
        ),
        (
            "two vertices",
            polygon("two", &[(-100.0, -100.0), (100.0, 100.0)]),
            "has 2 vertices; a polygon needs at least 3",
        ),
        (
            "spike under 3°",
            polygon(
                "spike",
                &[
                    (-150.0, -150.0),
                    (150.0, -150.0),
                    (150.0, 0.0),
                    (1000.0, 20.0),
                    (150.0, 40.0),
                    (150.0, 150.0),
                    (-150.0, 150.0),
                ],
            ),
            "the corner at vertex 3 is 2.70°",
        ),
        (
            "inward notch under 3°",
            polygon(
                "notch",
                &[
                    (-150.0, -150.0),
                    (150.0, -150.0),
                    (150.0, 0.0),
                    (-100.0, 5.0),
                    (150.0, 10.0),
                    (150.0, 150.0),
                    (-150.0, 150.0),
                ],
            ),
            "corner",
        ),
        (
            "home outside",
            polygon(
                "away",
                &[
                    (100.0, 100.0),
                    (300.0, 100.0),
                    (300.0, 300.0),
                    (100.0, 300.0),
                ],
            ),
            "home position is outside keep-in `away`",
        ),
        (
            "too far",
            polygon(
                "far",
                &[(-100.0, -100.0), (30_000.0, -100.0), (-100.0, 100.0)],
            ),
            "vertex 1 is 30000 m from home",
        ),
    ];
    for (label, zone, needle) in cases {
        let c = EnvelopeConfig {
            keep_in: vec![zone],
            ..EnvelopeConfig::default()
        };
        let err = Envelope::new(&c, HOME, None).expect_err(label).to_string();
        assert!(err.contains(needle), "{label}: {err}");
        // The file check refuses the same shapes, except those that need home to judge.
        if !matches!(label, "home outside" | "too far") {
            let (key, message) = check_config(&c).expect_err(label);
            assert_eq!(key, "envelope.keep_in", "{label}");
            assert!(message.contains(needle), "{label}: {message}");
        }
    }
    // Home in a keep-out, the current position outside the keep-in, a shapeless zone.
    let mut c = config();
    c.keep_out.push(circle("pad", 0.0, 0.0, 20.0));
    let err = Envelope::new(&c, HOME, None).unwrap_err().to_string();
    assert!(
        err.contains("home position is inside keep-out `pad`"),
        "{err}"
    );
    let err = Envelope::new(&config(), HOME, Some(at(250.0, 0.0, 10.0)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("current position is outside keep-in `field`"),
        "{err}"
    );
    let mut c = config();
    c.keep_out[0].radius_m = None;
    let err = Envelope::new(&c, HOME, None).unwrap_err().to_string();
    assert!(err.contains("needs either"), "{err}");
}

#[test]
fn a_valid_envelope_is_normalised_whatever_the_vertex_order() {
    let mut c = config();
    c.keep_in = vec![polygon(
        "field",
        &[
            (-200.0, 200.0),
            (200.0, 200.0),
            (200.0, -200.0),
            (-200.0, -200.0),
        ],
    )];
    let clockwise = Envelope::new(&c, HOME, None).unwrap();
    let counter = Envelope::new(&config(), HOME, None).unwrap();
    let goal = GoalRequest {
        from: at(0.0, 0.0, 10.0),
        to: at(-150.0, -150.0, 20.0),
        speed_m_s: None,
    };
    let facts = good_facts(goal.from);
    assert_eq!(clockwise.check_goal(&goal, &facts), Verdict::Allowed);
    assert_eq!(counter.check_goal(&goal, &facts), Verdict::Allowed);
}

#[test]
fn margins_smaller_than_the_stopping_distance_are_refused() {
    let c = EnvelopeConfig {
        speed_horizontal_m_s_max: 10.0,
        ..EnvelopeConfig::default()
    };
    // 10 × 0.24 + 100 / 5 + 2 = 24.4 m > 10 m.
    let (key, message) = check_config(&c).unwrap_err();
    assert_eq!(key, "envelope.margin_horizontal_m");
    assert!(message.contains("= 24.40 m"), "{message}");
    let c = EnvelopeConfig {
        margin_horizontal_m: 24.4,
        speed_horizontal_m_s_max: 10.0,
        ..EnvelopeConfig::default()
    };
    assert_eq!(check_config(&c), Ok(()));
    let c = EnvelopeConfig {
        speed_vertical_m_s_max: 5.0,
        ..EnvelopeConfig::default()
    };
    assert_eq!(
        check_config(&c).unwrap_err().0,
        "envelope.margin_vertical_m"
    );
    let c = EnvelopeConfig {
        altitude_m_max: 10.0,
        ..EnvelopeConfig::default()
    };
    assert!(check_config(&c).unwrap_err().1.contains("two 5 m margins"));
    let c = EnvelopeConfig {
        check_interval_s: 0.1,
        ..EnvelopeConfig::default()
    };
    assert!(check_config(&c).unwrap_err().1.contains("25 Hz"));
    let c = EnvelopeConfig {
        gps_fix_type_min: "no_fix".into(),
        ..EnvelopeConfig::default()
    };
    assert_eq!(check_config(&c).unwrap_err().0, "envelope.gps_fix_type_min");
    assert_eq!(check_config(&EnvelopeConfig::default()), Ok(()));
}

/// (label, target, speed, facts, None = allowed or Some(words of the refusal))
type GoalCase = (
    &'static str,
    GeoPosition,
    Option<f64>,
    VehicleView,
    Option<&'static str>,
);

#[test]
fn goal_verdicts_say_what_would_be_allowed() {
    let env = Envelope::new(&config(), HOME, None).unwrap();
    let here = at(0.0, 0.0, 10.0);
    let cases: Vec<GoalCase> = vec![
        (
            "inside",
            at(-100.0, 50.0, 30.0),
            None,
            good_facts(here),
            None,
        ),
        (
            "above the ceiling",
            at(0.0, 50.0, 118.0),
            None,
            good_facts(here),
            Some("the ceiling is 120 m with a 5 m margin: the highest allowed target is 115 m"),
        ),
        (
            "at the highest allowed",
            at(0.0, 50.0, 115.0),
            None,
            good_facts(here),
            None,
        ),
        (
            "1 cm over",
            at(0.0, 50.0, 115.01),
            None,
            good_facts(here),
            Some("highest allowed target is 115 m"),
        ),
        (
            "below the floor",
            at(0.0, 50.0, 2.0),
            None,
            good_facts(here),
            Some("the floor is 0 m with a 5 m margin: the lowest allowed target is 5 m"),
        ),
        (
            "too fast",
            at(0.0, 50.0, 20.0),
            Some(8.0),
            good_facts(here),
            Some("the speed limit is 5 m/s: ask for 5 m/s or less"),
        ),
        (
            "outside the keep-in",
            at(-250.0, 0.0, 20.0),
            None,
            good_facts(here),
            Some(
                "the target is 50 m outside keep-in `field` (polygon, 4 vertices, 10 m margin); choose a target at least 10 m inside its boundary",
            ),
        ),
        (
            "in the keep-in margin",
            at(-195.0, 0.0, 20.0),
            None,
            good_facts(here),
            Some("the target is only 5 m inside keep-in `field`"),
        ),
        (
            "through the school",
            at(180.0, 180.0, 20.0),
            None,
            good_facts(here),
            Some(
                "the path crosses keep-out `school` (circle, 40 m radius + 10 m margin) 91.42 m from here; go around it",
            ),
        ),
        (
            "into the school",
            at(100.0, 110.0, 20.0),
            None,
            good_facts(here),
            Some(
                "the target is 30 m inside keep-out `school` (circle, 40 m radius + 10 m margin); choose a target at least 10 m outside it",
            ),
        ),
        (
            "battery below the reserve",
            at(0.0, 50.0, 20.0),
            None,
            VehicleView {
                battery_remaining_percent: Some(22.0),
                ..good_facts(here)
            },
            Some(
                "the battery is at 22 %, below the 30% reserve: only land and return_home are accepted",
            ),
        ),
        (
            "battery unknown",
            at(0.0, 50.0, 20.0),
            None,
            VehicleView {
                battery_remaining_percent: None,
                ..good_facts(here)
            },
            Some("does not report the remaining battery"),
        ),
        (
            "poor GPS",
            at(0.0, 50.0, 20.0),
            None,
            VehicleView {
                satellites_visible: 4,
                hdop: Some(3.5),
                ..good_facts(here)
            },
            Some(
                "GPS is not good enough for motion: 4 satellites (needs 6), HDOP 3.5 (needs 2.5 or less); wait for a better fix",
            ),
        ),
        (
            "2D fix",
            at(0.0, 50.0, 20.0),
            None,
            VehicleView {
                gps_fix_type: FixType::Fix2d,
                ..good_facts(here)
            },
            Some("fix 2d_fix (needs 3d_fix or better)"),
        ),
    ];
    for (label, to, speed_m_s, facts, needle) in cases {
        let verdict = env.check_goal(
            &GoalRequest {
                from: here,
                to,
                speed_m_s,
            },
            &facts,
        );
        match needle {
            None => assert_eq!(verdict, Verdict::Allowed, "{label}"),
            Some(needle) => {
                let r = reason(verdict);
                assert!(r.contains(needle), "{label}: {r}");
            }
        }
    }
}

#[test]
fn home_cylinder_and_several_reasons_at_once() {
    let c = EnvelopeConfig {
        distance_from_home_m_max: 150.0,
        ..config()
    };
    let env = Envelope::new(&c, HOME, None).unwrap();
    let here = at(0.0, 0.0, 10.0);
    let r = reason(env.check_goal(
        &GoalRequest {
            from: here,
            to: at(-120.0, -120.0, 200.0),
            speed_m_s: Some(6.0),
        },
        &good_facts(here),
    ));
    assert!(r.contains("the target is 169.71 m from home; the limit is 150 m with a 10 m margin: stay within 140 m of home"), "{r}");
    assert!(r.contains("highest allowed target is 115 m"), "{r}");
    assert!(r.contains("the speed limit is 5 m/s"), "{r}");
}

/// Metrics and the shell read a refusal's kind, never its words: every reason the envelope
/// gives is one rule of the refusal's kind (this replaces the text matching metrics did).
#[test]
fn every_reason_of_a_refusal_is_a_rule_of_its_kind() {
    use crate::refusal::{EnvelopeRule as R, RefusalKind};
    let c = EnvelopeConfig {
        distance_from_home_m_max: 150.0,
        ..config()
    };
    let env = Envelope::new(&c, HOME, None).unwrap();
    let here = at(0.0, 0.0, 10.0);
    let facts = VehicleView {
        gps_fix_type: FixType::NoFix,
        battery_remaining_percent: Some(5.0),
        ..good_facts(here)
    };
    let Verdict::Refused(refusal) = env.check_goal(
        &GoalRequest {
            from: here,
            to: at(-120.0, -120.0, 200.0),
            speed_m_s: Some(6.0),
        },
        &facts,
    ) else {
        panic!("allowed");
    };
    let RefusalKind::Envelope(rules) = refusal.kind else {
        panic!("{:?}", refusal.kind);
    };
    let rules: Vec<R> = rules.iter().collect();
    assert_eq!(
        rules,
        vec![
            R::BatteryReserve,
            R::Gps,
            R::Ceiling,
            R::HomeDistance,
            R::Speed
        ],
        "{}",
        refusal.message
    );
    assert_eq!(
        refusal.kind.labels(),
        vec![
            "battery_reserve",
            "gps",
            "ceiling",
            "home_distance",
            "speed"
        ]
    );
    // Splitting the words, as the metrics once did, counts 7 reasons: two sentences carry a
    // `; ` of their own.
    assert_eq!(
        refusal.message.split("; ").count(),
        7,
        "{}",
        refusal.message
    );
    let env = Envelope::new(&config(), HOME, None).unwrap();
    let Verdict::Refused(refusal) = env.check_goal(
        &GoalRequest {
            from: here,
            to: at(100.0, 100.0, 10.0),
            speed_m_s: None,
        },
        &good_facts(here),
    ) else {
        panic!("into the school");
    };
    assert_eq!(refusal.kind.labels(), vec!["zone"], "{}", refusal.message);
}

#[test]
fn a_vehicle_in_the_margin_may_fly_back_in_but_not_further_out() {
    let env = Envelope::new(&config(), HOME, None).unwrap();
    let edge = at(-195.0, 0.0, 20.0);
    let facts = good_facts(edge);
    let inward = GoalRequest {
        from: edge,
        to: at(-100.0, 0.0, 20.0),
        speed_m_s: None,
    };
    assert_eq!(env.check_goal(&inward, &facts), Verdict::Allowed);
    // A convex keep-in cannot be left by a path between two points inside it, so the
    // "not closer than already" rule is shown with the school: starting 5 m from it.
    let near_school = at(145.0, 100.0, 20.0);
    let facts = good_facts(near_school);
    let r = reason(env.check_goal(
        &GoalRequest {
            from: near_school,
            to: at(100.0, 30.0, 20.0),
            speed_m_s: None,
        },
        &facts,
    ));
    assert!(r.contains("the path crosses keep-out `school`"), "{r}");
    let away = GoalRequest {
        from: near_school,
        to: at(180.0, 0.0, 20.0),
        speed_m_s: None,
    };
    assert_eq!(env.check_goal(&away, &facts), Verdict::Allowed);
    // Outside the keep-in altogether: a breach; only hold, land and return.
    let outside = at(-205.0, 0.0, 20.0);
    let r = reason(env.check_goal(
        &GoalRequest {
            from: outside,
            to: at(0.0, 0.0, 20.0),
            speed_m_s: None,
        },
        &good_facts(outside),
    ));
    assert!(r.contains("the vehicle is outside keep-in `field`"), "{r}");
    assert!(r.contains("only hold, land and return_home"), "{r}");
    for a in [ActionKind::Hold, ActionKind::Land, ActionKind::ReturnHome] {
        assert_eq!(env.check_action(a, &good_facts(outside)), Verdict::Allowed);
    }
}

/// Found by the property test (shrunk case): a vehicle a few millimetres outside a keep-out
/// polygon, in its margin band, was allowed straight through it, because the distance from
/// the path to the boundary is 0 both for a graze and for a crossing.
#[test]
fn a_vehicle_touching_a_keep_out_polygon_may_not_fly_through_it() {
    let mut config = config();
    config.keep_out = vec![polygon(
        "hangar",
        &[
            (-50.0, -50.0),
            (-30.0, -50.0),
            (-30.0, -30.0),
            (-50.0, -30.0),
        ],
    )];
    let env = Envelope::new(&config, HOME, None).unwrap();
    let touching = at(-50.002, -40.0, 20.0);
    let facts = good_facts(touching);
    let through = GoalRequest {
        from: touching,
        to: at(0.0, -40.0, 20.0),
        speed_m_s: None,
    };
    let r = reason(env.check_goal(&through, &facts));
    assert!(r.contains("the path crosses keep-out `hangar`"), "{r}");
    // Away from it, or along its edge without entering, is still allowed.
    let away = GoalRequest {
        from: touching,
        to: at(-100.0, -40.0, 20.0),
        speed_m_s: None,
    };
    assert_eq!(env.check_goal(&away, &facts), Verdict::Allowed);
}

#[test]
fn polygon_keep_out_path_and_concave_keep_in() {
    // A U-shaped keep-in: the straight path between the arms crosses the gap.
    let c = EnvelopeConfig {
        keep_in: vec![polygon(
            "u",
            &[
                (-200.0, -200.0),
                (200.0, -200.0),
                (200.0, 200.0),
                (100.0, 200.0),
                (100.0, -50.0),
                (-100.0, -50.0),
                (-100.0, 200.0),
                (-200.0, 200.0),
            ],
        )],
        keep_out: vec![polygon(
            "tower",
            &[
                (-30.0, -150.0),
                (30.0, -150.0),
                (30.0, -120.0),
                (-30.0, -120.0),
            ],
        )],
        ..EnvelopeConfig::default()
    };
    let home = at(0.0, -100.0, 0.0);
    let env = Envelope::new(&c, home, None).unwrap();
    let left = at(-150.0, 150.0, 20.0);
    let r = reason(env.check_goal(
        &GoalRequest {
            from: left,
            to: at(150.0, 150.0, 20.0),
            speed_m_s: None,
        },
        &good_facts(left),
    ));
    assert!(r.contains("the path leaves keep-in `u`"), "{r}");
    let west = at(-80.0, -135.0, 20.0);
    let r = reason(env.check_goal(
        &GoalRequest {
            from: west,
            to: at(80.0, -135.0, 20.0),
            speed_m_s: None,
        },
        &good_facts(west),
    ));
    assert!(
        r.contains("the path crosses keep-out `tower` (polygon, 4 vertices, 10 m margin)"),
        "{r}"
    );
    assert!(r.contains("40 m from here"), "{r}");
}

#[test]
fn actions() {
    let env = Envelope::new(&config(), HOME, None).unwrap();
    let ground = GeoPosition {
        altitude_m: 0.0,
        ..HOME
    };
    let facts = VehicleView {
        armed: false,
        landed: Landed::OnGround,
        ..good_facts(ground)
    };
    assert_eq!(env.check_action(ActionKind::Arm, &facts), Verdict::Allowed);
    assert_eq!(
        env.check_action(ActionKind::Takeoff { altitude_m: 10.0 }, &facts),
        Verdict::Allowed
    );
    let r = reason(env.check_action(ActionKind::Takeoff { altitude_m: 119.0 }, &facts));
    assert!(r.contains("highest allowed target is 115 m"), "{r}");
    let low = VehicleView {
        battery_remaining_percent: Some(10.0),
        ..facts
    };
    assert!(!env.check_action(ActionKind::Arm, &low).is_allowed());
    for a in [
        ActionKind::Land,
        ActionKind::ReturnHome,
        ActionKind::Hold,
        ActionKind::Disarm,
    ] {
        assert_eq!(env.check_action(a, &low), Verdict::Allowed, "{a:?}");
    }
    let no_gps = VehicleView {
        gps_fix_type: FixType::NoFix,
        position_valid: false,
        ..facts
    };
    let r = reason(env.check_action(ActionKind::Arm, &no_gps));
    assert!(r.contains("does not trust its position"), "{r}");
    assert!(
        reason(env.check_action(ActionKind::SetSpeed { speed_m_s: 7.0 }, &facts))
            .contains("the speed limit is 5 m/s")
    );
    assert_eq!(
        env.check_action(ActionKind::SetSpeed { speed_m_s: 5.0 }, &facts),
        Verdict::Allowed
    );
}

#[test]
fn monitor_reports_margin_and_breach() {
    let env = Envelope::new(&config(), HOME, None).unwrap();
    let cases = [
        (at(0.0, 0.0, 20.0), "inside"),
        (at(-195.0, 0.0, 20.0), "near keep-in `field` 5"),
        (at(100.0, 55.0, 20.0), "near keep-out `school` 5"),
        (at(0.0, 0.0, 117.0), "near ceiling 120 m 3"),
        (at(0.0, 0.0, 121.0), "breach ceiling 120 m"),
        (at(-205.0, 0.0, 20.0), "breach keep-in `field`"),
        (at(100.0, 100.0, 20.0), "breach keep-out `school`"),
        (at(0.0, 0.0, 2.0), "near floor 0 m 2"),
    ];
    for (p, expected) in cases {
        let shown = match env.monitor(&good_facts(p)) {
            MonitorVerdict::Inside => "inside".to_string(),
            MonitorVerdict::NearMargin {
                what, distance_m, ..
            } => {
                format!("near {what} {}", fmt_m(distance_m))
            }
            MonitorVerdict::Breach { what } => format!("breach {what}"),
            MonitorVerdict::NoPosition => "none".into(),
        };
        assert_eq!(shown, expected);
    }
    let beyond = EnvelopeConfig {
        distance_from_home_m_max: 100.0,
        keep_in: vec![],
        keep_out: vec![],
        ..EnvelopeConfig::default()
    };
    let env2 = Envelope::new(&beyond, HOME, None).unwrap();
    assert_eq!(
        env2.monitor(&good_facts(at(0.0, 101.0, 20.0))),
        MonitorVerdict::Breach {
            what: "home cylinder 100 m".into()
        }
    );
    let mut lost = good_facts(HOME);
    lost.position = None;
    assert_eq!(env.monitor(&lost), MonitorVerdict::NoPosition);
    let on_ground = VehicleView {
        landed: Landed::OnGround,
        ..good_facts(HOME)
    };
    assert_eq!(env.monitor(&on_ground), MonitorVerdict::Inside);
}

#[test]
fn tighten_never_widens_while_armed() {
    let current = Envelope::new(&config(), HOME, None).unwrap();
    let mut smaller = config();
    smaller.keep_in = vec![polygon(
        "field",
        &[
            (-150.0, -150.0),
            (150.0, -150.0),
            (150.0, 150.0),
            (-150.0, 150.0),
        ],
    )];
    smaller.altitude_m_max = 80.0;
    smaller.keep_out.push(circle("pond", -80.0, -80.0, 20.0));
    let smaller = Envelope::new(&smaller, HOME, None).unwrap();
    assert!(tighten(&current, smaller.clone(), true).is_ok());
    // The reverse is a widening: refused while armed, accepted on the ground.
    let err = tighten(&smaller, current.clone(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("loosens the ceiling"), "{err}");
    assert!(tighten(&smaller, current.clone(), false).is_ok());
    let mut no_school = config();
    no_school.keep_out.clear();
    let no_school = Envelope::new(&no_school, HOME, None).unwrap();
    let err = tighten(&current, no_school, true).unwrap_err().to_string();
    assert!(
        err.contains("drops or shrinks the current keep-out `school`"),
        "{err}"
    );
    let mut bigger = config();
    bigger.keep_in = vec![polygon(
        "field",
        &[
            (-250.0, -200.0),
            (200.0, -200.0),
            (200.0, 200.0),
            (-200.0, 200.0),
        ],
    )];
    let bigger = Envelope::new(&bigger, HOME, None).unwrap();
    let err = tighten(&current, bigger, true).unwrap_err().to_string();
    assert!(
        err.contains("no keep-in inside the current keep-in `field`"),
        "{err}"
    );
    assert!(err.contains("land and disarm to widen it"), "{err}");
    // Identical is fine.
    assert!(tighten(&current, current.clone(), true).is_ok());
}

#[test]
fn summary_serialises_with_a_schema() {
    let env = Envelope::new(&config(), HOME, None).unwrap();
    let s = env.summary();
    assert_eq!(s.target_altitude_m_max, 115.0);
    assert_eq!(s.keep_in.len(), 1);
    assert_eq!(s.keep_out[0].radius_m, Some(40.0));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["keep_out"][0]["shape"], "circle");
    assert_eq!(json["gps_fix_type_min"], "3d_fix");
    assert_eq!(json["breach_action"], "land");
    let first = &json["keep_in"][0]["polygon_lat_lon_deg"][0];
    assert!((first[0].as_f64().unwrap() - at(-200.0, -200.0, 0.0).latitude_deg).abs() < 1e-9);
    let schema = serde_json::to_value(schemars::schema_for!(EnvelopeSummary)).unwrap();
    assert!(schema["properties"]["keep_in"].is_object());
}

/// Independent oracle for the property test: winding number (not crossing number) for
/// containment, brute-force distance to each edge, and dense sampling along the path.
mod oracle {
    use crate::safety::geo::LocalPoint;

    pub fn winding_inside(poly: &[LocalPoint], p: LocalPoint) -> bool {
        let n = poly.len();
        let mut angle = 0.0;
        for i in 0..n {
            let a = poly[i];
            let b = poly[(i + 1) % n];
            let (ax, ay) = (a.east_m - p.east_m, a.north_m - p.north_m);
            let (bx, by) = (b.east_m - p.east_m, b.north_m - p.north_m);
            angle += (ax * by - ay * bx).atan2(ax * bx + ay * by);
        }
        angle.abs() > std::f64::consts::PI
    }

    pub fn edge_distance(poly: &[LocalPoint], p: LocalPoint) -> f64 {
        let n = poly.len();
        let mut best = f64::INFINITY;
        for i in 0..n {
            let a = poly[i];
            let b = poly[(i + 1) % n];
            let (dx, dy) = (b.east_m - a.east_m, b.north_m - a.north_m);
            let t = (((p.east_m - a.east_m) * dx + (p.north_m - a.north_m) * dy)
                / (dx * dx + dy * dy))
                .clamp(0.0, 1.0);
            let (qx, qy) = (a.east_m + t * dx, a.north_m + t * dy);
            best = best.min(((p.east_m - qx).powi(2) + (p.north_m - qy).powi(2)).sqrt());
        }
        best
    }
}

mod property {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestRunner};
    use std::cell::Cell;

    /// A star-shaped polygon around (`ce`, `cn`): simple by construction.
    fn star(n: usize, radii: &[f64], jitter: &[f64], ce: f64, cn: f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let angle = (i as f64 + jitter[i] * 0.6) / n as f64 * std::f64::consts::TAU;
                (ce + radii[i] * angle.cos(), cn + radii[i] * angle.sin())
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    struct Case {
        home_lat: f64,
        home_lon: f64,
        keep_in: (usize, Vec<f64>, Vec<f64>),
        keep_out_poly: (usize, Vec<f64>, Vec<f64>, f64, f64),
        keep_out_circle: (f64, f64, f64),
        from: (f64, f64, f64),
        to: (f64, f64, f64),
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            -70.0..70.0f64,
            -179.0..179.0f64,
            (3usize..12).prop_flat_map(|n| {
                (
                    Just(n),
                    prop::collection::vec(80.0..400.0f64, n),
                    prop::collection::vec(0.0..1.0f64, n),
                )
            }),
            (3usize..8).prop_flat_map(|n| {
                (
                    Just(n),
                    prop::collection::vec(10.0..60.0f64, n),
                    prop::collection::vec(0.0..1.0f64, n),
                    -300.0..300.0f64,
                    -300.0..300.0f64,
                )
            }),
            (-300.0..300.0f64, -300.0..300.0f64, 5.0..60.0f64),
            (-300.0..300.0f64, -300.0..300.0f64, 0.0..130.0f64),
            (-300.0..300.0f64, -300.0..300.0f64, -5.0..130.0f64),
        )
            .prop_map(
                |(home_lat, home_lon, keep_in, keep_out_poly, keep_out_circle, from, to)| Case {
                    home_lat,
                    home_lon,
                    keep_in,
                    keep_out_poly,
                    keep_out_circle,
                    from,
                    to,
                },
            )
    }

    fn zone_of(frame: &LocalFrame, name: &str, pts: &[(f64, f64)]) -> ZoneConfig {
        ZoneConfig {
            name: name.into(),
            polygon_lat_lon_deg: Some(
                pts.iter()
                    .map(|(e, n)| {
                        let g = frame.to_geo(LocalPoint::new(*e, *n));
                        [g.latitude_deg, g.longitude_deg]
                    })
                    .collect(),
            ),
            center_lat_lon_deg: None,
            radius_m: None,
        }
    }

    /// No accepted goal has a target or a sampled path point within the margin of a keep-in
    /// boundary (or outside it), within the margin of a keep-out (or inside it), beyond the
    /// home cylinder minus the margin, or a target outside the altitude band minus its margin.
    /// Cases: 100,000 by default, `PROPTEST_CASES` to change (10⁶ in BENCHMARKS.md).
    #[test]
    fn no_accepted_goal_leaves_the_envelope() {
        let cases: u32 = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000);
        let mut runner = TestRunner::new(PtConfig {
            cases,
            failure_persistence: None,
            ..PtConfig::default()
        });
        let accepted = Cell::new(0u32);
        let built = Cell::new(0u32);
        runner
            .run(&case(), |c| {
                let home = GeoPosition {
                    latitude_deg: c.home_lat,
                    longitude_deg: c.home_lon,
                    altitude_m: 0.0,
                };
                let frame = LocalFrame::new(home.point()).unwrap();
                let keep_in_pts = star(c.keep_in.0, &c.keep_in.1, &c.keep_in.2, 0.0, 0.0);
                let (n, r, j, e, no) = &c.keep_out_poly;
                let keep_out_pts = star(*n, r, j, *e, *no);
                let (ce, cn, cr) = c.keep_out_circle;
                let g = frame.to_geo(LocalPoint::new(ce, cn));
                let config = EnvelopeConfig {
                    keep_in: vec![zone_of(&frame, "in", &keep_in_pts)],
                    keep_out: vec![
                        zone_of(&frame, "out", &keep_out_pts),
                        ZoneConfig {
                            name: "disc".into(),
                            polygon_lat_lon_deg: None,
                            center_lat_lon_deg: Some([g.latitude_deg, g.longitude_deg]),
                            radius_m: Some(cr),
                        },
                    ],
                    ..EnvelopeConfig::default()
                };
                let Ok(env) = Envelope::new(&config, home, None) else {
                    return Ok(());
                };
                built.set(built.get() + 1);
                let pos = |(e, n, a): (f64, f64, f64)| {
                    let g = frame.to_geo(LocalPoint::new(e, n));
                    GeoPosition {
                        latitude_deg: g.latitude_deg,
                        longitude_deg: g.longitude_deg,
                        altitude_m: a,
                    }
                };
                let goal = GoalRequest {
                    from: pos(c.from),
                    to: pos(c.to),
                    speed_m_s: Some(3.0),
                };
                let verdict = env.check_goal(&goal, &good_facts(goal.from));
                if !verdict.is_allowed() {
                    return Ok(());
                }
                accepted.set(accepted.get() + 1);
                let m = config.margin_horizontal_m;
                // The oracle works in its own projection of the configured degrees.
                let local = |p: GeoPosition| frame.to_local(p.point());
                let in_poly: Vec<LocalPoint> = keep_in_pts
                    .iter()
                    .map(|(e, n)| LocalPoint::new(*e, *n))
                    .collect();
                let out_poly: Vec<LocalPoint> = keep_out_pts
                    .iter()
                    .map(|(e, n)| LocalPoint::new(*e, *n))
                    .collect();
                let (a, b) = (local(goal.from), local(goal.to));
                let clearance_in = |p: LocalPoint| {
                    let d = oracle::edge_distance(&in_poly, p);
                    if oracle::winding_inside(&in_poly, p) {
                        d
                    } else {
                        -d
                    }
                };
                let clearance_out = |p: LocalPoint| {
                    let d = oracle::edge_distance(&out_poly, p);
                    if oracle::winding_inside(&out_poly, p) {
                        -d
                    } else {
                        d
                    }
                };
                let clearance_disc = |p: LocalPoint| p.distance(LocalPoint::new(ce, cn)) - cr;
                let start = [clearance_in(a), clearance_out(a), clearance_disc(a)];
                const EPS: f64 = 1e-6;
                // Target: strictly a margin inside.
                prop_assert!(clearance_in(b) >= m - EPS, "target {}", clearance_in(b));
                prop_assert!(clearance_out(b) >= m - EPS);
                prop_assert!(clearance_disc(b) >= m - EPS);
                prop_assert!(b.norm() <= config.distance_from_home_m_max - m + EPS);
                prop_assert!(
                    goal.to.altitude_m <= config.altitude_m_max - config.margin_vertical_m
                );
                prop_assert!(
                    goal.to.altitude_m >= config.altitude_m_min + config.margin_vertical_m
                );
                // Path: never closer than the margin, or than the vehicle already was.
                const SAMPLES: usize = 64;
                for i in 0..=SAMPLES {
                    let p = a.lerp(b, i as f64 / SAMPLES as f64);
                    let now = [clearance_in(p), clearance_out(p), clearance_disc(p)];
                    for k in 0..3 {
                        let required = m.min(start[k]) - PATH_TOLERANCE_M - EPS;
                        prop_assert!(
                            now[k] >= required,
                            "zone {k} at sample {i}: {} < {required}",
                            now[k]
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
        // The property must not hold vacuously.
        assert!(
            built.get() > cases / 2,
            "only {} of {cases} envelopes were valid",
            built.get()
        );
        assert!(
            accepted.get() > cases / 50,
            "only {} of {cases} goals were accepted",
            accepted.get()
        );
    }
}

#[test]
fn the_margins_grow_when_the_autopilot_flies_faster_than_the_limit_and_say_why() {
    // A target 185 m east: 15 m inside the field's 200 m edge. With the configured 10 m margin
    // it is allowed; sized from WPNAV_SPEED 10 m/s (24.4 m) it is not, and the refusal names
    // the speed that drove the margin.
    let mut env = Envelope::new(&config(), HOME, None).unwrap();
    let here = at(0.0, -100.0, 10.0);
    let target = GoalRequest {
        from: here,
        to: at(185.0, -100.0, 10.0),
        speed_m_s: None,
    };
    assert!(env.check_goal(&target, &good_facts(here)).is_allowed());
    env.set_margin_speed(crate::safety::preflight::MarginSpeed {
        speed_m_s: 10.0,
        source: "WPNAV_SPEED",
    });
    assert!((env.margin_horizontal_m() - 24.4).abs() < 1e-9);
    let refusal = reason(env.check_goal(&target, &good_facts(here)));
    assert!(
        refusal.contains("24.4 m margin, the stopping distance at WPNAV_SPEED 10 m/s"),
        "{refusal}"
    );
    // The monitor warns within the grown margin; the summary shows both margins and why.
    let near = good_facts(at(180.0, -100.0, 10.0));
    assert!(matches!(
        env.monitor(&near),
        MonitorVerdict::NearMargin { .. }
    ));
    let summary = env.summary();
    assert_eq!(summary.margin_horizontal_m_configured, 10.0);
    assert!((summary.margin_horizontal_m - 24.4).abs() < 1e-9);
    assert_eq!(summary.margin_speed_source, "WPNAV_SPEED");
    assert!((summary.target_distance_from_home_m_max - (300.0 - 24.4)).abs() < 1e-9);
    // A slower autopilot never shrinks the margin below the configured one.
    env.set_margin_speed(crate::safety::preflight::MarginSpeed {
        speed_m_s: 3.0,
        source: "WPNAV_SPEED",
    });
    assert_eq!(env.margin_horizontal_m(), 10.0);
    assert_eq!(
        env.margin_speed().source,
        "envelope.speed_horizontal_m_s_max"
    );
}

#[test]
fn an_envelope_for_another_place_is_refused_naming_the_zone_the_distance_and_what_to_edit() {
    // The dev envelope (drawn around the simulator's home) on a vehicle in Sydney: the
    // refusal used to be "keep-in field vertex 0 is 15725332 m from home".
    let sydney = GeoPosition {
        latitude_deg: -33.8688,
        longitude_deg: 151.2093,
        altitude_m: 0.0,
    };
    let err = Envelope::new(&config(), sydney, Some(sydney))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "keep-in `field` is 16585 km from the autopilot's home (-33.8688000, 151.2093000)"
        ),
        "{err}"
    );
    assert!(err.contains("drawn for another place"), "{err}");
    assert!(err.contains("Edit [[envelope.keep_in]] `field`"), "{err}");
    assert!(err.contains("dev-setup --home LAT,LON,ALT_M"), "{err}");

    // 200 m north of the field's edge: the keep-in does not contain home, by how much, and
    // where home is (350 m north is 0.0031441° on the one Earth model's sphere).
    let near = at(0.0, 350.0, 0.0);
    let err = Envelope::new(&config(), near, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the home position is outside keep-in `field` (by 150 m, at 47.4008861, "),
        "{err}"
    );
    assert!(err.contains("edit [[envelope.keep_in]] `field`"), "{err}");
    // The vehicle itself outside: bring it back, or edit.
    let err = Envelope::new(&config(), HOME, Some(at(250.0, 0.0, 10.0)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("current position is outside keep-in `field` (by 50 m, at")
            && err.contains("bring the vehicle back"),
        "{err}"
    );
}
