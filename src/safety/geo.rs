//! Plane geometry for the envelope: a local tangent plane around home, polygons and circles
//! in it, and the distance and intersection tests the envelope is built from.
//!
//! # Projection and its error
//! Positions arrive in degrees (WGS-84) and are projected into a local east/north plane in
//! metres around an origin (home) with an equirectangular projection: `east = R·Δλ·cos φ₀`,
//! `north = R·Δφ`. The projection is a continuous bijection, so inside/outside is preserved
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

/// Mean Earth radius used by the projection (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// The farthest any envelope point may be from the projection origin (home).
pub const EXTENT_M_MAX: f64 = 20_000.0;
/// The highest absolute origin latitude accepted.
pub const LATITUDE_DEG_MAX: f64 = 75.0;
/// Vertices closer than this are near-duplicates, and non-adjacent edges closer than this
/// make a polygon "not nice" (PolyCARP): a thin neck that the margin cannot be applied to.
pub const VERTEX_SEPARATION_M_MIN: f64 = 1.0;
/// Corners sharper than this are refused (spikes are where floating point and stopping
/// distance both misbehave).
pub const CORNER_DEG_MIN: f64 = 3.0;
/// Largest accepted polygon; ArduPilot rejects more than 255, PX4 keeps 128.
pub const VERTICES_MAX: usize = 1024;

/// A horizontal position in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
}

/// A position in degrees with an altitude in metres relative to home (positive up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPosition {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Metres above home.
    pub altitude_m: f64,
}

impl GeoPosition {
    pub fn point(&self) -> GeoPoint {
        GeoPoint {
            latitude_deg: self.latitude_deg,
            longitude_deg: self.longitude_deg,
        }
    }
}

impl GeoPoint {
    /// Both coordinates finite and within ±90° / ±180°.
    pub fn is_valid(&self) -> bool {
        self.latitude_deg.is_finite()
            && self.longitude_deg.is_finite()
            && self.latitude_deg.abs() <= 90.0
            && self.longitude_deg.abs() <= 180.0
    }
}

/// A point in the local plane: metres east and north of the origin.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LocalPoint {
    pub east_m: f64,
    pub north_m: f64,
}

impl LocalPoint {
    pub const fn new(east_m: f64, north_m: f64) -> Self {
        Self { east_m, north_m }
    }
    fn sub(self, o: LocalPoint) -> LocalPoint {
        LocalPoint::new(self.east_m - o.east_m, self.north_m - o.north_m)
    }
    fn add_scaled(self, d: LocalPoint, t: f64) -> LocalPoint {
        LocalPoint::new(self.east_m + d.east_m * t, self.north_m + d.north_m * t)
    }
    fn dot(self, o: LocalPoint) -> f64 {
        self.east_m * o.east_m + self.north_m * o.north_m
    }
    fn cross(self, o: LocalPoint) -> f64 {
        self.east_m * o.north_m - self.north_m * o.east_m
    }
    /// Length of the vector from the origin.
    pub fn norm(self) -> f64 {
        self.east_m.hypot(self.north_m)
    }
    /// Distance to another point.
    pub fn distance(self, o: LocalPoint) -> f64 {
        self.sub(o).norm()
    }
    /// The point a fraction `t` of the way to `o`.
    pub fn lerp(self, o: LocalPoint, t: f64) -> LocalPoint {
        self.add_scaled(o.sub(self), t)
    }
}

/// Why a projection origin or a point cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum GeoError {
    InvalidCoordinates {
        latitude_deg: f64,
        longitude_deg: f64,
    },
    OriginTooCloseToPole {
        latitude_deg: f64,
    },
}

impl fmt::Display for GeoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeoError::InvalidCoordinates {
                latitude_deg,
                longitude_deg,
            } => write!(
                f,
                "({latitude_deg}, {longitude_deg}) is not a position: latitude must be within ±90° and longitude within ±180°"
            ),
            GeoError::OriginTooCloseToPole { latitude_deg } => write!(
                f,
                "home at latitude {latitude_deg}° is beyond ±{LATITUDE_DEG_MAX}°, where the local projection is not accurate enough"
            ),
        }
    }
}

/// The local tangent plane around an origin (home). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalFrame {
    origin: GeoPoint,
    /// Metres per radian of longitude at the origin.
    east_m_per_rad: f64,
}

impl LocalFrame {
    pub fn new(origin: GeoPoint) -> Result<LocalFrame, GeoError> {
        if !origin.is_valid() {
            return Err(GeoError::InvalidCoordinates {
                latitude_deg: origin.latitude_deg,
                longitude_deg: origin.longitude_deg,
            });
        }
        if origin.latitude_deg.abs() > LATITUDE_DEG_MAX {
            return Err(GeoError::OriginTooCloseToPole {
                latitude_deg: origin.latitude_deg,
            });
        }
        Ok(LocalFrame {
            origin,
            east_m_per_rad: EARTH_RADIUS_M * origin.latitude_deg.to_radians().cos(),
        })
    }

    pub fn origin(&self) -> GeoPoint {
        self.origin
    }

    /// Projects a point. Longitude differences are wrapped into ±180° so the antimeridian
    /// does not tear the plane.
    pub fn to_local(&self, p: GeoPoint) -> LocalPoint {
        let mut dlon = p.longitude_deg - self.origin.longitude_deg;
        if dlon > 180.0 {
            dlon -= 360.0;
        } else if dlon < -180.0 {
            dlon += 360.0;
        }
        LocalPoint::new(
            dlon.to_radians() * self.east_m_per_rad,
            (p.latitude_deg - self.origin.latitude_deg).to_radians() * EARTH_RADIUS_M,
        )
    }

    /// The inverse of [`LocalFrame::to_local`].
    pub fn to_geo(&self, p: LocalPoint) -> GeoPoint {
        let mut lon = self.origin.longitude_deg + (p.east_m / self.east_m_per_rad).to_degrees();
        if lon > 180.0 {
            lon -= 360.0;
        } else if lon < -180.0 {
            lon += 360.0;
        }
        GeoPoint {
            latitude_deg: self.origin.latitude_deg + (p.north_m / EARTH_RADIUS_M).to_degrees(),
            longitude_deg: lon,
        }
    }
}

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

/// A simple ("nice") polygon in the local plane, counter-clockwise, validated on creation.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    vertices: Vec<LocalPoint>,
    /// Bounding box, for a cheap rejection in the containment tests.
    min: LocalPoint,
    max: LocalPoint,
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
        Ok(Polygon { vertices, min, max })
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

    /// Distance to the boundary, positive inside and negative outside.
    pub fn signed_distance(&self, p: LocalPoint) -> f64 {
        let d = self.boundary_distance(p);
        if self.contains(p) { d } else { -d }
    }

    /// Smallest distance from the segment `a`–`b` to the boundary (0 if it touches or crosses).
    pub fn segment_boundary_distance(&self, a: LocalPoint, b: LocalPoint) -> f64 {
        self.edges()
            .map(|(c, d)| segment_segment_distance(a, b, c, d))
            .fold(f64::INFINITY, f64::min)
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
