use proptest::prelude::*;

use super::*;

const ORIGIN: GeoPoint = GeoPoint {
    latitude_deg: -35.363261,
    longitude_deg: 149.165230,
};

fn frame() -> LocalFrame {
    LocalFrame::new(ORIGIN).unwrap()
}

fn request(local: &[(f64, f64)]) -> SurveyRequest {
    SurveyRequest {
        polygon: local
            .iter()
            .map(|(e, n)| {
                let g = frame().to_geo(LocalPoint::new(*e, *n));
                [g.latitude_deg, g.longitude_deg]
            })
            .collect(),
        altitude_m: 30.0,
        forward_overlap: 0.7,
        side_overlap: 0.6,
        horizontal_fov_deg: 70.0,
        vertical_fov_deg: 55.0,
    }
}

/// The waypoints in the plane of the polygon's first vertex.
fn points(r: &SurveyRequest, s: &Survey) -> Vec<LocalPoint> {
    let f = LocalFrame::new(GeoPoint {
        latitude_deg: r.polygon[0][0],
        longitude_deg: r.polygon[0][1],
    })
    .unwrap();
    s.steps
        .iter()
        .map(|step| match step {
            MissionStep::Waypoint {
                latitude_deg,
                longitude_deg,
                ..
            } => f.to_local(GeoPoint {
                latitude_deg: *latitude_deg,
                longitude_deg: *longitude_deg,
            }),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Even-odd point in polygon.
fn inside(poly: &[LocalPoint], p: LocalPoint) -> bool {
    let mut c = false;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
        if (a.north_m > p.north_m) != (b.north_m > p.north_m) {
            let x = a.east_m
                + (p.north_m - a.north_m) / (b.north_m - a.north_m) * (b.east_m - a.east_m);
            if p.east_m < x {
                c = !c;
            }
        }
    }
    c
}

#[test]
fn a_field_becomes_a_lawnmower_with_the_overlaps_asked() {
    // 120 m east by 80 m north: lines run east-west along the long edge.
    let r = request(&[(0.0, 0.0), (120.0, 0.0), (120.0, 80.0), (0.0, 80.0)]);
    let s = plan(&r).unwrap();
    let across = 2.0 * 30.0 * 35f64.to_radians().tan();
    assert!((s.footprint_across_m - across).abs() < 1e-9);
    assert!((s.line_spacing_m - across * 0.4).abs() < 1e-9);
    assert_eq!(s.lines, (80.0 / s.line_spacing_m).floor() as usize);
    let p = points(&r, &s);
    assert_eq!(p.len(), s.waypoints);
    // Lines run east-west (along the long edges), each back the other way.
    let first = (p[1].east_m - p[0].east_m).signum();
    assert!((p[1].north_m - p[0].north_m).abs() < 1e-6);
    let second = p
        .iter()
        .position(|q| (q.north_m - p[0].north_m).abs() > 1.0)
        .unwrap();
    assert_eq!((p[second + 1].east_m - p[second].east_m).signum(), -first);
    assert!((s.length_m - p.windows(2).map(|w| w[0].distance(w[1])).sum::<f64>()).abs() < 1e-6);
    assert!(s.steps.iter().all(|st| matches!(st, MissionStep::Waypoint { photo: true, altitude_m, .. } if *altitude_m == 30.0)));
    super::super::mission::validate(&s.steps).unwrap();
}

#[test]
fn bad_requests_say_what_to_change() {
    let ok = request(&[(0.0, 0.0), (120.0, 0.0), (120.0, 80.0), (0.0, 80.0)]);
    let e = plan(&SurveyRequest {
        polygon: ok.polygon[..2].to_vec(),
        ..ok.clone()
    })
    .unwrap_err();
    assert!(e.contains("3 to 100 vertices"), "{e}");
    let e = plan(&SurveyRequest {
        side_overlap: 0.99,
        ..ok.clone()
    })
    .unwrap_err();
    assert!(
        e.starts_with("side_overlap must be between 0 and 0.95"),
        "{e}"
    );
    let e = plan(&SurveyRequest {
        polygon: vec![[0.0, 0.0], [f64::NAN, 1.0], [1.0, 1.0]],
        ..ok.clone()
    })
    .unwrap_err();
    assert!(e.starts_with("vertex 1"), "{e}");
    let line = request(&[(0.0, 0.0), (100.0, 0.0), (50.0, 0.0)]);
    assert!(plan(&line).unwrap_err().contains("no area"));
    let huge = SurveyRequest {
        altitude_m: 2.0,
        forward_overlap: 0.95,
        side_overlap: 0.95,
        ..request(&[(0.0, 0.0), (2000.0, 0.0), (2000.0, 2000.0), (0.0, 2000.0)])
    };
    assert!(plan(&huge).unwrap_err().contains("raise the altitude"));
}

#[test]
fn a_concave_field_gets_a_piece_per_crossing_and_stays_inside() {
    // A U shape open to the north: the upper lines cross it twice.
    let u = [
        (0.0, 0.0),
        (150.0, 0.0),
        (150.0, 100.0),
        (100.0, 100.0),
        (100.0, 40.0),
        (50.0, 40.0),
        (50.0, 100.0),
        (0.0, 100.0),
    ];
    let r = request(&u);
    let s = plan(&r).unwrap();
    let poly: Vec<LocalPoint> = u.iter().map(|(e, n)| LocalPoint::new(*e, *n)).collect();
    for q in points(&r, &s) {
        assert!(inside(&poly, q), "{q:?}");
    }
}

fn star(radii: &[f64], center: (f64, f64)) -> Vec<(f64, f64)> {
    let n = radii.len();
    radii
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            (center.0 + r * a.cos(), center.1 + r * a.sin())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any star-shaped field (convex or not), any sensible camera and overlaps: every
    /// waypoint is inside the polygon, lines are one spacing apart, photos on a line at most
    /// one photo spacing apart, and the overlaps follow from the footprint.
    #[test]
    fn every_waypoint_is_inside_and_the_spacing_matches_the_overlap(
        radii in prop::collection::vec(40.0f64..300.0, 3..12),
        altitude_m in 10.0f64..80.0,
        forward in 0.0f64..0.9,
        side in 0.0f64..0.9,
        hfov in 30.0f64..100.0,
        vfov in 30.0f64..100.0,
    ) {
        let shape = star(&radii, (10.0, -20.0));
        let r = SurveyRequest {
            altitude_m,
            forward_overlap: forward,
            side_overlap: side,
            horizontal_fov_deg: hfov,
            vertical_fov_deg: vfov,
            ..request(&shape)
        };
        let s = match plan(&r) {
            Ok(s) => s,
            // Too many photos for the mission is a refusal, not a plan.
            Err(e) => { prop_assert!(e.contains("raise the altitude"), "{}", e); return Ok(()); }
        };
        let across = 2.0 * altitude_m * (hfov.to_radians() / 2.0).tan();
        let along = 2.0 * altitude_m * (vfov.to_radians() / 2.0).tan();
        prop_assert!((s.line_spacing_m - across * (1.0 - side)).abs() < 1e-9);
        prop_assert!((s.photo_spacing_m - along * (1.0 - forward)).abs() < 1e-9);
        let f = LocalFrame::new(GeoPoint { latitude_deg: r.polygon[0][0], longitude_deg: r.polygon[0][1] }).unwrap();
        let poly: Vec<LocalPoint> = r.polygon.iter().map(|[la, lo]| f.to_local(GeoPoint { latitude_deg: *la, longitude_deg: *lo })).collect();
        let p = points(&r, &s);
        for q in &p {
            prop_assert!(inside(&poly, *q), "{:?} outside", q);
        }
        // Consecutive points are either on the same line (within a photo spacing) or on
        // lines a whole number of spacings apart, measured across the track.
        let n = poly.len();
        let (a, b) = (0..n).map(|i| (poly[i], poly[(i + 1) % n]))
            .max_by(|x, y| x.0.distance(x.1).total_cmp(&y.0.distance(y.1))).unwrap();
        let d = b.distance(a);
        let v = LocalPoint::new(-(b.north_m - a.north_m) / d, (b.east_m - a.east_m) / d);
        for w in p.windows(2) {
            let dt = (w[1].dot(v) - w[0].dot(v)).abs();
            if dt < 1e-3 {
                // On one line: a photo spacing at most, unless the line left the polygon
                // between two pieces of a concave field.
                let mid = w[0].lerp(w[1], 0.5);
                prop_assert!(
                    w[0].distance(w[1]) <= s.photo_spacing_m + 1e-3 || !inside(&poly, mid)
                );
            } else {
                let k = dt / s.line_spacing_m;
                prop_assert!((k - k.round()).abs() < 1e-3 && k.round() >= 1.0, "{} spacings", k);
            }
        }
    }
}
