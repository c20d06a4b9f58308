//! `plan_survey`'s geometry: a polygon, an altitude, the overlaps and the camera's field of
//! view turned into a lawnmower pattern of photo waypoints clipped to the polygon. Pure
//! (sans-IO): it plans, the mission tools upload and the envelope checks.
//!
//! The footprint of one photo at `altitude_m` is `2·h·tan(fov/2)` across and along the track
//! (a nadir camera over flat ground). Lines run parallel to the polygon's longest edge (fewest
//! turns for the usual long field), `footprint_across·(1 − side_overlap)` apart, the first
//! half a spacing inside the polygon's extent; photos along each line at most
//! `footprint_along·(1 − forward_overlap)` apart, evenly spread between the line's ends, so
//! the overlaps are at least what was asked. Each line's ends are where it crosses the
//! polygon, pulled in by [`INSET_M`] so every waypoint is strictly inside; a concave polygon
//! that cuts a line in pieces gets a piece each. Lines alternate direction (the lawnmower).

use serde::Serialize;

use crate::geodesy::{GeoPoint, LocalFrame, LocalPoint};

use super::action::ALTITUDE_M_MAX;
use super::mission::{MissionStep, STEPS_MAX};

/// How far inside the polygon a line's end waypoints are pulled.
pub const INSET_M: f64 = 0.5;
/// Largest overlap accepted: beyond it the photo count explodes for nothing.
pub const OVERLAP_MAX: f64 = 0.95;
/// Vertices a polygon may have.
pub const VERTICES_MAX: usize = 100;

/// What `plan_survey` is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyRequest {
    /// `[latitude, longitude]` in degrees, at least 3, in either winding.
    pub polygon: Vec<[f64; 2]>,
    /// Above home.
    pub altitude_m: f64,
    /// Fractions in [0, 0.95].
    pub forward_overlap: f64,
    pub side_overlap: f64,
    /// The camera's field of view across and along the track (horizontal and vertical of
    /// a camera mounted with its width across the track).
    pub horizontal_fov_deg: f64,
    pub vertical_fov_deg: f64,
}

/// The plan, for review.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Survey {
    /// The mission's steps: photo waypoints, line after line.
    pub steps: Vec<MissionStep>,
    pub lines: usize,
    pub waypoints: usize,
    /// Distance between two lines.
    pub line_spacing_m: f64,
    /// Most distance between two photos on a line.
    pub photo_spacing_m: f64,
    /// One photo's footprint on the ground, across and along the track.
    pub footprint_across_m: f64,
    pub footprint_along_m: f64,
    /// From the first waypoint to the last, turns included.
    pub length_m: f64,
}

fn check(r: &SurveyRequest) -> Result<(), String> {
    let n = r.polygon.len();
    if !(3..=VERTICES_MAX).contains(&n) {
        return Err(format!(
            "the polygon needs 3 to {VERTICES_MAX} vertices [latitude, longitude]; got {n}"
        ));
    }
    for (i, [lat, lon]) in r.polygon.iter().enumerate() {
        let p = GeoPoint {
            latitude_deg: *lat,
            longitude_deg: *lon,
        };
        if !p.is_valid() {
            return Err(format!(
                "vertex {i} [{lat}, {lon}] is not a position: latitude within ±90°, \
                 longitude within ±180°"
            ));
        }
    }
    let within = |name: &str, v: f64, min: f64, max: f64, unit: &str| {
        if v.is_finite() && (min..=max).contains(&v) {
            Ok(())
        } else {
            Err(format!(
                "{name} must be between {min} and {max}{unit}; got {v}"
            ))
        }
    };
    within(
        "altitude_m",
        r.altitude_m,
        2.0,
        ALTITUDE_M_MAX,
        " m above home",
    )?;
    within("forward_overlap", r.forward_overlap, 0.0, OVERLAP_MAX, "")?;
    within("side_overlap", r.side_overlap, 0.0, OVERLAP_MAX, "")?;
    within("horizontal_fov_deg", r.horizontal_fov_deg, 1.0, 170.0, "°")?;
    within("vertical_fov_deg", r.vertical_fov_deg, 1.0, 170.0, "°")
}

/// Plans the survey, or says what to change.
pub fn plan(r: &SurveyRequest) -> Result<Survey, String> {
    check(r)?;
    let origin = GeoPoint {
        latitude_deg: r.polygon[0][0],
        longitude_deg: r.polygon[0][1],
    };
    let frame =
        LocalFrame::new(origin).map_err(|e| format!("the polygon cannot be planned: {e}"))?;
    let local: Vec<LocalPoint> = r
        .polygon
        .iter()
        .map(|[lat, lon]| {
            frame.to_local(GeoPoint {
                latitude_deg: *lat,
                longitude_deg: *lon,
            })
        })
        .collect();
    let across = 2.0 * r.altitude_m * (r.horizontal_fov_deg.to_radians() / 2.0).tan();
    let along = 2.0 * r.altitude_m * (r.vertical_fov_deg.to_radians() / 2.0).tan();
    let spacing = across * (1.0 - r.side_overlap);
    let photo_spacing = along * (1.0 - r.forward_overlap);

    // The track direction u along the longest edge, v across it.
    let n = local.len();
    let (a, b) = (0..n)
        .map(|i| (local[i], local[(i + 1) % n]))
        .max_by(|x, y| x.0.distance(x.1).total_cmp(&y.0.distance(y.1)))
        .unwrap_or((local[0], local[1]));
    let edge = b.distance(a);
    if edge < 1.0 {
        return Err("the polygon is smaller than a metre".into());
    }
    let u = LocalPoint::new((b.east_m - a.east_m) / edge, (b.north_m - a.north_m) / edge);
    let v = LocalPoint::new(-u.north_m, u.east_m);
    let st: Vec<(f64, f64)> = local.iter().map(|p| (p.dot(u), p.dot(v))).collect();
    let t_min = st.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let t_max = st.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let width = t_max - t_min;
    if width < 2.0 * INSET_M {
        return Err("the polygon has no area (its vertices are on one line)".into());
    }
    let lines_n = ((width / spacing).floor() as usize).max(1);
    if lines_n > STEPS_MAX {
        return Err(format!(
            "{lines_n} lines is too many: raise the altitude or lower side_overlap"
        ));
    }
    // Centred: the margin left at both sides is the same.
    let first = t_min + (width - (lines_n - 1) as f64 * spacing) / 2.0;

    let mut points: Vec<LocalPoint> = Vec::new();
    let mut lines = 0;
    for k in 0..lines_n {
        let t = first + k as f64 * spacing;
        let mut pieces = crossings(&st, t);
        if k % 2 == 1 {
            pieces.reverse();
        }
        let mut drew = false;
        for (s0, s1) in pieces {
            let (s0, s1) = if k % 2 == 1 { (s1, s0) } else { (s0, s1) };
            let len = (s1 - s0).abs();
            if len <= 2.0 * INSET_M {
                continue;
            }
            let dir = (s1 - s0).signum();
            let (s0, s1) = (s0 + dir * INSET_M, s1 - dir * INSET_M);
            let shots = ((s1 - s0).abs() / photo_spacing).ceil().max(1.0) as usize;
            for j in 0..=shots {
                let s = s0 + (s1 - s0) * j as f64 / shots as f64;
                points.push(LocalPoint::new(
                    u.east_m * s + v.east_m * t,
                    u.north_m * s + v.north_m * t,
                ));
                if points.len() > STEPS_MAX {
                    return Err(format!(
                        "more than {STEPS_MAX} photo waypoints: raise the altitude or lower \
                         the overlaps"
                    ));
                }
            }
            drew = true;
        }
        lines += usize::from(drew);
    }
    if points.is_empty() {
        return Err(
            "no line fits inside the polygon: lower the altitude or the side overlap".into(),
        );
    }
    let length_m = points.windows(2).map(|w| w[0].distance(w[1])).sum();
    let steps = points
        .iter()
        .map(|p| {
            let g = frame.to_geo(*p);
            MissionStep::Waypoint {
                latitude_deg: g.latitude_deg,
                longitude_deg: g.longitude_deg,
                altitude_m: r.altitude_m,
                loiter_s: None,
                photo: true,
            }
        })
        .collect();
    Ok(Survey {
        steps,
        lines,
        waypoints: points.len(),
        line_spacing_m: spacing,
        photo_spacing_m: photo_spacing,
        footprint_across_m: across,
        footprint_along_m: along,
        length_m,
    })
}

/// Where the line `t` (in the track frame) is inside the polygon: pairs of `s` from its
/// crossings with the edges, in increasing order (even-odd rule).
fn crossings(st: &[(f64, f64)], t: f64) -> Vec<(f64, f64)> {
    let n = st.len();
    let mut s: Vec<f64> = Vec::new();
    for i in 0..n {
        let (p, q) = (st[i], st[(i + 1) % n]);
        // Half-open on t, so a vertex on the line counts once.
        if (p.1 <= t) != (q.1 <= t) {
            let f = (t - p.1) / (q.1 - p.1);
            s.push(p.0 + f * (q.0 - p.0));
        }
    }
    s.sort_by(f64::total_cmp);
    s.chunks_exact(2).map(|c| (c[0], c[1])).collect()
}

#[cfg(test)]
mod tests;
