//! Plane geometry for the envelope: polygons and circles in the local plane around home
//! (`geodesy::LocalFrame`, the one Earth model), and the distance and intersection tests the
//! envelope is built from.
//!
//! # Projection and its error
//! Positions arrive in degrees (WGS-84) and are projected into the local east/north plane in
//! metres around home (`crate::geodesy`): `east = R·Δλ·cos φ₀`, `north = R·Δφ`. The
//! projection is a continuous bijection, so inside/outside is preserved
//! exactly between what the vehicle reports and the fence as we define it (edges are straight
//! lines in this plane). What it distorts is length: the east scale at latitude φ is off by
//! about `tan φ · Δφ` (Δφ the north offset from the origin in radians). Over
//! [`EXTENT_M_MAX`] (20 km) at the highest accepted origin latitude, [`LATITUDE_DEG_MAX`]
//! (75°), that is at most 3.73 · 20/6371 ≈ 1.2 % of a measured distance: a 20 m margin is
//! right to within 0.24 m. Envelopes reaching further than 20 km from home, or homes beyond
//! ±75° latitude, are refused rather than checked with a worse approximation.
//!
//! # Robustness
//! Floating-point point-in-polygon tests are ambiguous only on or very near an edge or a
//! vertex. Like NASA PolyCARP we never decide there: [`Polygon::classify`] answers
//! `Inside`, `Outside` or `NearEdge` with an explicit uncertainty buffer, and the envelope
//! always asks for a clearance (margin) far larger than floating-point error, so the
//! ambiguous band is always refused.

use std::fmt;

pub use crate::geodesy::{
    EXTENT_M_MAX, GeoError, GeoPoint, GeoPosition, LATITUDE_DEG_MAX, LocalFrame, LocalPoint,
};

/// Vertices closer than this are near-duplicates, and non-adjacent edges closer than this
/// make a polygon "not nice" (PolyCARP): a thin neck that the margin cannot be applied to.
pub const VERTEX_SEPARATION_M_MIN: f64 = 1.0;
/// Corners sharper than this are refused (spikes are where floating point and stopping
/// distance both misbehave).
pub const CORNER_DEG_MIN: f64 = 3.0;
/// Largest accepted polygon; ArduPilot rejects more than 255, PX4 keeps 128.
pub const VERTICES_MAX: usize = 1024;

/// Distance from `p` to the segment `a`–`b`.
pub fn point_segment_distance(p: LocalPoint, a: LocalPoint, b: LocalPoint) -> f64 {
    let ab = b.sub(a);
    let len2 = ab.dot(ab);
    if len2 == 0.0 {
        return p.distance(a);
    }
    let t = (p.sub(a).dot(ab) / len2).clamp(0.0, 1.0);
    p.distance(a.add_scaled(ab, t))
}

/// Sign of the turn a→b→c: positive left (counter-clockwise), negative right, 0 collinear.
fn orientation(a: LocalPoint, b: LocalPoint, c: LocalPoint) -> f64 {
    b.sub(a).cross(c.sub(a))
}

fn on_segment(p: LocalPoint, a: LocalPoint, b: LocalPoint) -> bool {
    p.east_m >= a.east_m.min(b.east_m)
        && p.east_m <= a.east_m.max(b.east_m)
        && p.north_m >= a.north_m.min(b.north_m)
        && p.north_m <= a.north_m.max(b.north_m)
}

/// True when segments `a`–`b` and `c`–`d` share at least one point (touching counts).
pub fn segments_intersect(a: LocalPoint, b: LocalPoint, c: LocalPoint, d: LocalPoint) -> bool {
    let d1 = orientation(c, d, a);
    let d2 = orientation(c, d, b);
    let d3 = orientation(a, b, c);
    let d4 = orientation(a, b, d);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    (d1 == 0.0 && on_segment(a, c, d))
        || (d2 == 0.0 && on_segment(b, c, d))
        || (d3 == 0.0 && on_segment(c, a, b))
        || (d4 == 0.0 && on_segment(d, a, b))
}

/// Smallest distance between segments `a`–`b` and `c`–`d` (0 when they intersect).
pub fn segment_segment_distance(a: LocalPoint, b: LocalPoint, c: LocalPoint, d: LocalPoint) -> f64 {
    if segments_intersect(a, b, c, d) {
        return 0.0;
    }
    point_segment_distance(a, c, d)
        .min(point_segment_distance(b, c, d))
        .min(point_segment_distance(c, a, b))
        .min(point_segment_distance(d, a, b))
}

/// The first fraction `t` in `[0, 1]` of segment `a`–`b` at which it is within `radius_m`
/// of `center`, if any.
pub fn segment_circle_entry(
    a: LocalPoint,
    b: LocalPoint,
    center: LocalPoint,
    radius_m: f64,
) -> Option<f64> {
    let d = b.sub(a);
    let f = a.sub(center);
    let qa = d.dot(d);
    let qc = f.dot(f) - radius_m * radius_m;
    if qc <= 0.0 {
        return Some(0.0);
    }
    if qa == 0.0 {
        return None;
    }
    let qb = 2.0 * f.dot(d);
    let disc = qb * qb - 4.0 * qa * qc;
    if disc < 0.0 {
        return None;
    }
    let t = (-qb - disc.sqrt()) / (2.0 * qa);
    (0.0..=1.0).contains(&t).then_some(t)
}

/// PolyCARP-style containment answer with an explicit uncertainty buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// Inside, farther than the buffer from every edge.
    Inside,
    /// Within the buffer of an edge: neither answer can be trusted.
    NearEdge,
    /// Outside, farther than the buffer from every edge.
    Outside,
}

/// Why a polygon is not "nice".
#[derive(Debug, Clone, PartialEq)]
pub enum PolygonError {
    TooFewVertices {
        count: usize,
    },
    TooManyVertices {
        count: usize,
    },
    InvalidVertex {
        index: usize,
    },
    DuplicateVertices {
        first: usize,
        second: usize,
        distance_m: f64,
    },
    SharpCorner {
        index: usize,
        angle_deg: f64,
    },
    SelfIntersecting {
        first_edge: usize,
        second_edge: usize,
    },
    EdgesTooClose {
        first_edge: usize,
        second_edge: usize,
        distance_m: f64,
    },
    ZeroArea,
}

impl fmt::Display for PolygonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolygonError::TooFewVertices { count } => {
                write!(f, "has {count} vertices; a polygon needs at least 3")
            }
            PolygonError::TooManyVertices { count } => write!(
                f,
                "has {count} vertices; at most {VERTICES_MAX} are accepted"
            ),
            PolygonError::InvalidVertex { index } => write!(
                f,
                "vertex {index} is not a position (latitude ±90°, longitude ±180°)"
            ),
            PolygonError::DuplicateVertices {
                first,
                second,
                distance_m,
            } => write!(
                f,
                "vertices {first} and {second} are {distance_m:.2} m apart; vertices must be at least {VERTEX_SEPARATION_M_MIN} m apart (remove the duplicate)"
            ),
            PolygonError::SharpCorner { index, angle_deg } => write!(
                f,
                "the corner at vertex {index} is {angle_deg:.2}°; corners sharper than {CORNER_DEG_MIN}° are refused (remove the spike)"
            ),
            PolygonError::SelfIntersecting {
                first_edge,
                second_edge,
            } => write!(
                f,
                "is self-intersecting: edge {first_edge} crosses edge {second_edge} (list the vertices in order around the boundary)"
            ),
            PolygonError::EdgesTooClose {
                first_edge,
                second_edge,
                distance_m,
            } => write!(
                f,
                "edges {first_edge} and {second_edge} come within {distance_m:.2} m of each other; non-adjacent edges must stay {VERTEX_SEPARATION_M_MIN} m apart"
            ),
            PolygonError::ZeroArea => write!(f, "has no area (its vertices are collinear)"),
        }
    }
}

/// Edges per block of the cull: a block of edges whose bounding box is farther from the
/// point (or path) than the nearest edge found so far, and which a ray from the point
/// cannot cross, is skipped whole. 16 keeps a 128-vertex fence at 8 boxes.
const BLOCK_EDGES: usize = 16;

/// One edge, precomputed when the polygon is made so that the checks do no division or
/// square root per edge: start, end, direction and the inverse of its squared length.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Edge {
    a: LocalPoint,
    b: LocalPoint,
    d: LocalPoint,
    /// 0 for a degenerate edge (a path of length 0), which then measures from `a`.
    inv_len2: f64,
}

impl Edge {
    fn new(a: LocalPoint, b: LocalPoint) -> Edge {
        let d = b.sub(a);
        let len2 = d.dot(d);
        Edge {
            a,
            b,
            d,
            inv_len2: if len2 > 0.0 { 1.0 / len2 } else { 0.0 },
        }
    }

    /// Squared distance from `p` to the edge.
    fn distance2(&self, p: LocalPoint) -> f64 {
        let w = p.sub(self.a);
        let t = (w.dot(self.d) * self.inv_len2).clamp(0.0, 1.0);
        let east = w.east_m - self.d.east_m * t;
        let north = w.north_m - self.d.north_m * t;
        east * east + north * north
    }

    /// Whether the ray from `p` towards east crosses the edge (the crossing-number rule of
    /// [`Polygon::contains`], the same arithmetic).
    fn crosses(&self, p: LocalPoint) -> bool {
        let (a, b) = (self.a, self.b);
        (a.north_m > p.north_m) != (b.north_m > p.north_m)
            && p.east_m
                < a.east_m
                    + (p.north_m - a.north_m) * (b.east_m - a.east_m) / (b.north_m - a.north_m)
    }
}

/// A run of consecutive edges and their bounding box.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    start: usize,
    end: usize,
    min: LocalPoint,
    max: LocalPoint,
}

/// Slack on the east side of a block's box for the ray test: the interpolated crossing
/// may round a hair past the box.
const RAY_SLACK_M: f64 = 1e-6;

impl Block {
    /// Whether a ray from `p` towards east may cross an edge of the block.
    fn ray_may_cross(&self, p: LocalPoint) -> bool {
        p.north_m >= self.min.north_m
            && p.north_m <= self.max.north_m
            && p.east_m <= self.max.east_m + RAY_SLACK_M
    }

    /// Squared distance from the box `[min, max]` to the block's box (0 when they overlap).
    fn box_distance2(&self, min: LocalPoint, max: LocalPoint) -> f64 {
        let east = (self.min.east_m - max.east_m)
            .max(min.east_m - self.max.east_m)
            .max(0.0);
        let north = (self.min.north_m - max.north_m)
            .max(min.north_m - self.max.north_m)
            .max(0.0);
        east * east + north * north
    }
}

/// What one pass over a polygon's edges tells about a path from `a` to `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathDistances {
    /// Signed distance of `a` to the boundary, positive inside.
    pub start_m: f64,
    /// Signed distance of `b`.
    pub end_m: f64,
    /// Smallest distance from the segment to the boundary (0 if it touches or crosses).
    pub segment_m: f64,
}

/// A simple ("nice") polygon in the local plane, counter-clockwise, validated on creation.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    vertices: Vec<LocalPoint>,
    /// Bounding box, for a cheap rejection in the containment tests.
    min: LocalPoint,
    max: LocalPoint,
    /// The edges as records (derived from `vertices`), in blocks for the cull.
    edges: Vec<Edge>,
    blocks: Vec<Block>,
}

impl Polygon {
    /// Validates and normalises (counter-clockwise) a polygon. `vertices` must not repeat
    /// the first vertex at the end. O(n²): done once when an envelope is loaded.
    pub fn new(vertices: Vec<LocalPoint>) -> Result<Polygon, PolygonError> {
        let n = vertices.len();
        if n < 3 {
            return Err(PolygonError::TooFewVertices { count: n });
        }
        if n > VERTICES_MAX {
            return Err(PolygonError::TooManyVertices { count: n });
        }
        if let Some(index) = vertices
            .iter()
            .position(|v| !(v.east_m.is_finite() && v.north_m.is_finite()))
        {
            return Err(PolygonError::InvalidVertex { index });
        }
        for i in 0..n {
            for j in i + 1..n {
                let distance_m = vertices[i].distance(vertices[j]);
                if distance_m < VERTEX_SEPARATION_M_MIN {
                    return Err(PolygonError::DuplicateVertices {
                        first: i,
                        second: j,
                        distance_m,
                    });
                }
            }
        }
        for i in 0..n {
            let prev = vertices[(i + n - 1) % n];
            let here = vertices[i];
            let next = vertices[(i + 1) % n];
            let u = prev.sub(here);
            let w = next.sub(here);
            let angle_deg = u.cross(w).abs().atan2(u.dot(w)).to_degrees();
            if angle_deg < CORNER_DEG_MIN {
                return Err(PolygonError::SharpCorner {
                    index: i,
                    angle_deg,
                });
            }
        }
        for i in 0..n {
            let (a, b) = (vertices[i], vertices[(i + 1) % n]);
            for j in i + 1..n {
                // Adjacent edges share a vertex; the corner test covers their overlap.
                if j == i + 1 || (i == 0 && j == n - 1) {
                    continue;
                }
                let (c, d) = (vertices[j], vertices[(j + 1) % n]);
                if segments_intersect(a, b, c, d) {
                    return Err(PolygonError::SelfIntersecting {
                        first_edge: i,
                        second_edge: j,
                    });
                }
                let distance_m = segment_segment_distance(a, b, c, d);
                if distance_m < VERTEX_SEPARATION_M_MIN {
                    return Err(PolygonError::EdgesTooClose {
                        first_edge: i,
                        second_edge: j,
                        distance_m,
                    });
                }
            }
        }
        let mut vertices = vertices;
        let area2 = signed_area2(&vertices);
        if area2.abs() < VERTEX_SEPARATION_M_MIN * VERTEX_SEPARATION_M_MIN {
            return Err(PolygonError::ZeroArea);
        }
        if area2 < 0.0 {
            vertices.reverse();
        }
        let mut min = LocalPoint::new(f64::INFINITY, f64::INFINITY);
        let mut max = LocalPoint::new(f64::NEG_INFINITY, f64::NEG_INFINITY);
        for v in &vertices {
            min.east_m = min.east_m.min(v.east_m);
            min.north_m = min.north_m.min(v.north_m);
            max.east_m = max.east_m.max(v.east_m);
            max.north_m = max.north_m.max(v.north_m);
        }
        let edges: Vec<Edge> = (0..vertices.len())
            .map(|i| Edge::new(vertices[i], vertices[(i + 1) % vertices.len()]))
            .collect();
        let blocks = (0..edges.len())
            .step_by(BLOCK_EDGES)
            .map(|start| {
                let end = (start + BLOCK_EDGES).min(edges.len());
                let mut block = Block {
                    start,
                    end,
                    min: LocalPoint::new(f64::INFINITY, f64::INFINITY),
                    max: LocalPoint::new(f64::NEG_INFINITY, f64::NEG_INFINITY),
                };
                for e in &edges[start..end] {
                    for v in [e.a, e.b] {
                        block.min.east_m = block.min.east_m.min(v.east_m);
                        block.min.north_m = block.min.north_m.min(v.north_m);
                        block.max.east_m = block.max.east_m.max(v.east_m);
                        block.max.north_m = block.max.north_m.max(v.north_m);
                    }
                }
                block
            })
            .collect();
        Ok(Polygon {
            vertices,
            min,
            max,
            edges,
            blocks,
        })
    }

    fn in_box(&self, p: LocalPoint) -> bool {
        p.east_m >= self.min.east_m
            && p.east_m <= self.max.east_m
            && p.north_m >= self.min.north_m
            && p.north_m <= self.max.north_m
    }

    /// Vertices, counter-clockwise.
    pub fn vertices(&self) -> &[LocalPoint] {
        &self.vertices
    }

    /// Area in square metres.
    pub fn area_m2(&self) -> f64 {
        signed_area2(&self.vertices).abs() / 2.0
    }

    fn edges(&self) -> impl Iterator<Item = (LocalPoint, LocalPoint)> + '_ {
        let n = self.vertices.len();
        (0..n).map(move |i| (self.vertices[i], self.vertices[(i + 1) % n]))
    }

    /// Crossing-number test. Ambiguous only within floating-point error of the boundary;
    /// callers that care use [`Polygon::classify`] or a clearance.
    pub fn contains(&self, p: LocalPoint) -> bool {
        if p.east_m < self.min.east_m
            || p.east_m > self.max.east_m
            || p.north_m < self.min.north_m
            || p.north_m > self.max.north_m
        {
            return false;
        }
        let mut inside = false;
        for (a, b) in self.edges() {
            if (a.north_m > p.north_m) != (b.north_m > p.north_m) {
                let east_at = a.east_m
                    + (p.north_m - a.north_m) * (b.east_m - a.east_m) / (b.north_m - a.north_m);
                if p.east_m < east_at {
                    inside = !inside;
                }
            }
        }
        inside
    }

    /// Distance from `p` to the nearest edge.
    pub fn boundary_distance(&self, p: LocalPoint) -> f64 {
        self.edges()
            .map(|(a, b)| point_segment_distance(p, a, b))
            .fold(f64::INFINITY, f64::min)
    }

    /// Distance to the boundary, positive inside and negative outside: the distance and
    /// the crossing number of [`Polygon::contains`] in one pass over the edge records,
    /// skipping each block that is farther than the nearest edge so far and that the ray
    /// cannot cross. One square root.
    pub fn signed_distance(&self, p: LocalPoint) -> f64 {
        let in_box = self.in_box(p);
        let mut best2 = f64::INFINITY;
        let mut inside = false;
        for block in &self.blocks {
            let ray = in_box && block.ray_may_cross(p);
            let near = block.box_distance2(p, p) < best2;
            if !(ray || near) {
                continue;
            }
            for e in &self.edges[block.start..block.end] {
                if near {
                    best2 = best2.min(e.distance2(p));
                }
                if ray && e.crosses(p) {
                    inside = !inside;
                }
            }
        }
        let d = best2.sqrt();
        if in_box && inside { d } else { -d }
    }

    /// Smallest distance from the segment `a`–`b` to the boundary (0 if it touches or crosses).
    pub fn segment_boundary_distance(&self, a: LocalPoint, b: LocalPoint) -> f64 {
        self.path_distances(a, b).segment_m
    }

    /// The signed distances of `a` and `b` and the segment's distance to the boundary, in
    /// one pass over the edge records (the goal check needs all three), with the same
    /// block cull as [`Polygon::signed_distance`] (a block is measured when its box is
    /// nearer the path's box than the farthest of the three minima so far).
    pub fn path_distances(&self, a: LocalPoint, b: LocalPoint) -> PathDistances {
        let path = Edge::new(a, b);
        let path_min = LocalPoint::new(a.east_m.min(b.east_m), a.north_m.min(b.north_m));
        let path_max = LocalPoint::new(a.east_m.max(b.east_m), a.north_m.max(b.north_m));
        let (a_in_box, b_in_box) = (self.in_box(a), self.in_box(b));
        let (mut a2, mut b2, mut segment2) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
        let (mut a_inside, mut b_inside) = (false, false);
        for block in &self.blocks {
            let ray_a = a_in_box && block.ray_may_cross(a);
            let ray_b = b_in_box && block.ray_may_cross(b);
            let near = block.box_distance2(path_min, path_max) < a2.max(b2);
            if !(ray_a || ray_b || near) {
                continue;
            }
            for e in &self.edges[block.start..block.end] {
                if near {
                    let (ea2, eb2) = (e.distance2(a), e.distance2(b));
                    a2 = a2.min(ea2);
                    b2 = b2.min(eb2);
                    if segment2 > 0.0 {
                        segment2 = if segments_intersect(a, b, e.a, e.b) {
                            0.0
                        } else {
                            segment2
                                .min(ea2)
                                .min(eb2)
                                .min(path.distance2(e.a))
                                .min(path.distance2(e.b))
                        };
                    }
                }
                if ray_a && e.crosses(a) {
                    a_inside = !a_inside;
                }
                if ray_b && e.crosses(b) {
                    b_inside = !b_inside;
                }
            }
        }
        let sign = |inside: bool| if inside { 1.0 } else { -1.0 };
        PathDistances {
            start_m: sign(a_in_box && a_inside) * a2.sqrt(),
            end_m: sign(b_in_box && b_inside) * b2.sqrt(),
            segment_m: segment2.sqrt(),
        }
    }

    /// Inside / near edge / outside with an uncertainty buffer (metres, ≥ 0).
    pub fn classify(&self, p: LocalPoint, buffer_m: f64) -> Containment {
        if self.boundary_distance(p) <= buffer_m {
            Containment::NearEdge
        } else if self.contains(p) {
            Containment::Inside
        } else {
            Containment::Outside
        }
    }

    /// Largest distance of a vertex from `p`.
    pub fn farthest_vertex_distance(&self, p: LocalPoint) -> f64 {
        self.vertices
            .iter()
            .map(|v| v.distance(p))
            .fold(0.0, f64::max)
    }
}

fn signed_area2(vertices: &[LocalPoint]) -> f64 {
    let n = vertices.len();
    (0..n)
        .map(|i| vertices[i].cross(vertices[(i + 1) % n]))
        .sum()
}

/// A circle in the local plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    pub center: LocalPoint,
    pub radius_m: f64,
}

impl Circle {
    /// Distance to the circle's edge, positive inside.
    pub fn signed_distance(&self, p: LocalPoint) -> f64 {
        self.radius_m - p.distance(self.center)
    }

    /// Inside / near edge / outside with an uncertainty buffer.
    pub fn classify(&self, p: LocalPoint, buffer_m: f64) -> Containment {
        let d = self.signed_distance(p);
        if d.abs() <= buffer_m {
            Containment::NearEdge
        } else if d > 0.0 {
            Containment::Inside
        } else {
            Containment::Outside
        }
    }
}

/// How far the nearest part of a zone is from `home` (its nearest vertex; a circle's edge),
/// metres; `None` for a zone without a shape (the configuration check reports those).
pub fn zone_distance_m(zone: &super::envelope_config::ZoneConfig, home: GeoPoint) -> Option<f64> {
    let point = |[lat, lon]: [f64; 2]| GeoPoint {
        latitude_deg: lat,
        longitude_deg: lon,
    };
    match (
        &zone.polygon_lat_lon_deg,
        zone.center_lat_lon_deg,
        zone.radius_m,
    ) {
        (Some(vertices), None, None) if !vertices.is_empty() => Some(
            vertices
                .iter()
                .map(|v| crate::geodesy::great_circle_m(home, point(*v)))
                .fold(f64::INFINITY, f64::min),
        ),
        (None, Some(center), Some(radius_m)) => {
            Some((crate::geodesy::great_circle_m(home, point(center)) - radius_m).max(0.0))
        }
        _ => None,
    }
}

/// `850 m`, `12.4 km`, `15725 km`.
pub fn format_distance(m: f64) -> String {
    if m < 1000.0 {
        format!("{m:.0} m")
    } else if m < 100_000.0 {
        format!("{:.1} km", m / 1000.0)
    } else {
        format!("{:.0} km", m / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(e: f64, n: f64) -> LocalPoint {
        LocalPoint::new(e, n)
    }

    fn square(side: f64) -> Polygon {
        Polygon::new(vec![p(0.0, 0.0), p(side, 0.0), p(side, side), p(0.0, side)]).unwrap()
    }

    #[test]
    fn projection_round_trips_and_measures_metres() {
        let frame = LocalFrame::new(GeoPoint {
            latitude_deg: 47.397742,
            longitude_deg: 8.545594,
        })
        .unwrap();
        let g = GeoPoint {
            latitude_deg: 47.40,
            longitude_deg: 8.55,
        };
        let l = frame.to_local(g);
        let back = frame.to_geo(l);
        assert!((back.latitude_deg - g.latitude_deg).abs() < 1e-9);
        assert!((back.longitude_deg - g.longitude_deg).abs() < 1e-9);
        // 0.002258° of latitude is about 251 m.
        assert!((l.north_m - 251.1).abs() < 1.0, "{l:?}");
        // Across the antimeridian the plane stays continuous.
        let frame = LocalFrame::new(GeoPoint {
            latitude_deg: 0.0,
            longitude_deg: 179.9999,
        })
        .unwrap();
        let east = frame.to_local(GeoPoint {
            latitude_deg: 0.0,
            longitude_deg: -179.9999,
        });
        assert!((east.east_m - 22.24).abs() < 0.1, "{east:?}");
    }

    #[test]
    fn origins_near_the_poles_are_refused() {
        let err = LocalFrame::new(GeoPoint {
            latitude_deg: 80.0,
            longitude_deg: 0.0,
        })
        .unwrap_err();
        assert!(err.to_string().contains("±75°"), "{err}");
        assert!(
            LocalFrame::new(GeoPoint {
                latitude_deg: f64::NAN,
                longitude_deg: 0.0
            })
            .is_err()
        );
    }

    #[test]
    fn containment_with_buffer_at_edges_and_vertices() {
        let sq = square(100.0);
        assert_eq!(sq.classify(p(50.0, 50.0), 1.0), Containment::Inside);
        assert_eq!(sq.classify(p(150.0, 50.0), 1.0), Containment::Outside);
        // On an edge, on a vertex, and just either side: never a confident answer.
        for q in [
            p(100.0, 50.0),
            p(0.0, 0.0),
            p(100.0, 100.0),
            p(99.5, 50.0),
            p(100.5, 50.0),
            p(-0.3, -0.3),
        ] {
            assert_eq!(sq.classify(q, 1.0), Containment::NearEdge, "{q:?}");
        }
        assert!((sq.signed_distance(p(10.0, 50.0)) - 10.0).abs() < 1e-12);
        assert!((sq.signed_distance(p(-10.0, 50.0)) + 10.0).abs() < 1e-12);
        // A ray through a vertex (north = 0 and 100 are vertex rows) still counts right.
        assert!(sq.contains(p(50.0, 0.000001)));
        assert!(!sq.contains(p(-50.0, 100.0)));
    }

    #[test]
    fn orientation_is_normalised_counter_clockwise() {
        let cw =
            Polygon::new(vec![p(0.0, 0.0), p(0.0, 10.0), p(10.0, 10.0), p(10.0, 0.0)]).unwrap();
        assert!(signed_area2(cw.vertices()) > 0.0);
        assert!((cw.area_m2() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn segment_tests() {
        let sq = square(100.0);
        assert_eq!(
            sq.segment_boundary_distance(p(50.0, 50.0), p(150.0, 50.0)),
            0.0
        );
        assert!((sq.segment_boundary_distance(p(20.0, 50.0), p(80.0, 50.0)) - 20.0).abs() < 1e-9);
        assert!(segments_intersect(
            p(0.0, 0.0),
            p(10.0, 0.0),
            p(10.0, 0.0),
            p(10.0, 5.0)
        ));
        assert!(!segments_intersect(
            p(0.0, 0.0),
            p(10.0, 0.0),
            p(0.0, 1.0),
            p(10.0, 1.0)
        ));
        assert!(segments_intersect(
            p(0.0, 0.0),
            p(10.0, 0.0),
            p(5.0, 0.0),
            p(15.0, 0.0)
        ));
        let t = segment_circle_entry(p(0.0, 0.0), p(100.0, 0.0), p(50.0, 0.0), 10.0).unwrap();
        assert!((t - 0.4).abs() < 1e-12);
        assert_eq!(
            segment_circle_entry(p(0.0, 20.0), p(100.0, 20.0), p(50.0, 0.0), 10.0),
            None
        );
        assert_eq!(
            segment_circle_entry(p(0.0, 0.0), p(30.0, 0.0), p(50.0, 0.0), 10.0),
            None
        );
        assert_eq!(
            segment_circle_entry(p(50.0, 5.0), p(30.0, 0.0), p(50.0, 0.0), 10.0),
            Some(0.0)
        );
    }
}
