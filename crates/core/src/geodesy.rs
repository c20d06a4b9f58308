//! One Earth model for everything that turns degrees into metres and back (pure).
//!
//! The executor computes targets from offsets, the envelope measures them, the simulator
//! moves its vehicle and `check-config` measures how far a zone is from home: all of them
//! call this module, so a target the executor computed is where the envelope sees it.
//!
//! # The model
//! A sphere of radius [`EARTH_RADIUS_M`], the WGS-84 semi-major axis: the radius ArduPilot
//! itself uses to turn latitude and longitude into metres (`LATLON_TO_M` in
//! `libraries/AP_Math/definitions.h`, with the longitude scaled by the cosine of the
//! latitude in `Location::get_distance_NE` and `Location::offset`). Near a point the plane is
//! equirectangular: `north = R·Δφ`, `east = R·Δλ·cos φ₀`, φ₀ the latitude of the reference
//! point. Longitude differences are wrapped into ±180° so the antimeridian does not tear the
//! plane. Far apart (a zone drawn on another continent) distances are great-circle distances
//! on the same sphere.
//!
//! # Its error
//! Against the WGS-84 ellipsoid the sphere's metre is off by at most about 0.7 % (the
//! ellipsoid's radii of curvature run from 6,335 km to 6,400 km); over the envelope's
//! [`EXTENT_M_MAX`] at the highest accepted latitude, [`LATITUDE_DEG_MAX`], the plane's east
//! scale drifts by at most `tan φ · Δφ` ≈ 1.2 % more. The envelope's margins are metres
//! measured in this same plane, so what it allows and what it refuses does not depend on the
//! model's error; only the ground truth of a metre does.

use std::fmt;

/// The sphere's radius: the WGS-84 semi-major axis, metres (ArduPilot's `LATLON_TO_M`).
pub const EARTH_RADIUS_M: f64 = 6_378_137.0;
/// The farthest any envelope point may be from its plane's origin (home).
pub const EXTENT_M_MAX: f64 = 20_000.0;
/// The highest absolute latitude a plane's origin may have.
pub const LATITUDE_DEG_MAX: f64 = 75.0;

/// A horizontal position in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
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

/// A point in a local plane: metres east and north of its origin.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LocalPoint {
    pub east_m: f64,
    pub north_m: f64,
}

impl LocalPoint {
    pub const fn new(east_m: f64, north_m: f64) -> Self {
        Self { east_m, north_m }
    }
    pub(crate) fn sub(self, o: LocalPoint) -> LocalPoint {
        LocalPoint::new(self.east_m - o.east_m, self.north_m - o.north_m)
    }
    pub(crate) fn add_scaled(self, d: LocalPoint, t: f64) -> LocalPoint {
        LocalPoint::new(self.east_m + d.east_m * t, self.north_m + d.north_m * t)
    }
    pub(crate) fn dot(self, o: LocalPoint) -> f64 {
        self.east_m * o.east_m + self.north_m * o.north_m
    }
    pub(crate) fn cross(self, o: LocalPoint) -> f64 {
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

/// Why a plane's origin cannot be used.
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

/// The local plane around an origin (the envelope's is home). Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalFrame {
    origin: GeoPoint,
    /// Metres per radian of longitude at the origin.
    east_m_per_rad: f64,
}

impl LocalFrame {
    /// A checked plane: the origin must be a position within ±[`LATITUDE_DEG_MAX`].
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
        Ok(LocalFrame::at(origin))
    }

    /// The plane at `origin`, unchecked: the projection every offset and distance below
    /// uses, around the point they start from.
    fn at(origin: GeoPoint) -> LocalFrame {
        LocalFrame {
            origin,
            east_m_per_rad: EARTH_RADIUS_M * origin.latitude_deg.to_radians().cos(),
        }
    }

    pub fn origin(&self) -> GeoPoint {
        self.origin
    }

    /// Projects a point.
    pub fn to_local(&self, p: GeoPoint) -> LocalPoint {
        let dlon = wrap_deg(p.longitude_deg - self.origin.longitude_deg);
        LocalPoint::new(
            dlon.to_radians() * self.east_m_per_rad,
            (p.latitude_deg - self.origin.latitude_deg).to_radians() * EARTH_RADIUS_M,
        )
    }

    /// The inverse of [`LocalFrame::to_local`].
    pub fn to_geo(&self, p: LocalPoint) -> GeoPoint {
        GeoPoint {
            latitude_deg: self.origin.latitude_deg + (p.north_m / EARTH_RADIUS_M).to_degrees(),
            longitude_deg: wrap_deg(
                self.origin.longitude_deg + (p.east_m / self.east_m_per_rad).to_degrees(),
            ),
        }
    }
}

/// A longitude (difference) in degrees wrapped into ±180°.
fn wrap_deg(mut longitude_deg: f64) -> f64 {
    if longitude_deg > 180.0 {
        longitude_deg -= 360.0;
    } else if longitude_deg < -180.0 {
        longitude_deg += 360.0;
    }
    longitude_deg
}

fn point(latitude_deg: f64, longitude_deg: f64) -> GeoPoint {
    GeoPoint {
        latitude_deg,
        longitude_deg,
    }
}

/// Metres north and east of `from` to `to`, in the plane around `from`.
pub fn north_east_m(
    from_latitude_deg: f64,
    from_longitude_deg: f64,
    to_latitude_deg: f64,
    to_longitude_deg: f64,
) -> (f64, f64) {
    let local = LocalFrame::at(point(from_latitude_deg, from_longitude_deg))
        .to_local(point(to_latitude_deg, to_longitude_deg));
    (local.north_m, local.east_m)
}

/// Horizontal distance in metres, in the plane around `from`.
pub fn distance_m(
    from_latitude_deg: f64,
    from_longitude_deg: f64,
    to_latitude_deg: f64,
    to_longitude_deg: f64,
) -> f64 {
    let (n, e) = north_east_m(
        from_latitude_deg,
        from_longitude_deg,
        to_latitude_deg,
        to_longitude_deg,
    );
    n.hypot(e)
}

/// The point `north_m`/`east_m` away from (`latitude_deg`, `longitude_deg`): the inverse of
/// [`north_east_m`].
pub fn offset_deg(latitude_deg: f64, longitude_deg: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    let p =
        LocalFrame::at(point(latitude_deg, longitude_deg)).to_geo(LocalPoint::new(east_m, north_m));
    (p.latitude_deg, p.longitude_deg)
}

/// Great-circle distance between two points on the same sphere (haversine), metres: for
/// points too far apart for a plane (a zone drawn for another field).
pub fn great_circle_m(a: GeoPoint, b: GeoPoint) -> f64 {
    let (la, lb) = (a.latitude_deg.to_radians(), b.latitude_deg.to_radians());
    let dlat = lb - la;
    let dlon = (b.longitude_deg - a.longitude_deg).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Body-frame offsets (forward, right) turned into (north, east) for a vehicle facing
/// `heading_deg` (clockwise from north).
pub fn body_to_north_east(forward_m: f64, right_m: f64, heading_deg: f64) -> (f64, f64) {
    let (sin, cos) = heading_deg.to_radians().sin_cos();
    (
        forward_m * cos - right_m * sin,
        forward_m * sin + right_m * cos,
    )
}

/// Smallest difference between two headings, 0..=180 degrees.
pub fn heading_error_deg(a_deg: f64, b_deg: f64) -> f64 {
    let d = (a_deg - b_deg).rem_euclid(360.0);
    d.min(360.0 - d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_body_frame_turns_with_heading() {
        let (lat, lon) = offset_deg(-35.363261, 149.165230, 30.0, -40.0);
        let (n, e) = north_east_m(-35.363261, 149.165230, lat, lon);
        assert!(
            (n - 30.0).abs() < 1e-6 && (e + 40.0).abs() < 1e-6,
            "{n} {e}"
        );
        assert!((distance_m(-35.363261, 149.165230, lat, lon) - 50.0).abs() < 1e-6);
        // Facing east, "forward" is east and "right" is south.
        let (n, e) = body_to_north_east(10.0, 2.0, 90.0);
        assert!((n + 2.0).abs() < 1e-9 && (e - 10.0).abs() < 1e-9, "{n} {e}");
        assert_eq!(heading_error_deg(350.0, 10.0), 20.0);
        assert_eq!(heading_error_deg(90.0, 270.0), 180.0);
    }

    #[test]
    fn the_plane_uses_ardupilots_metre_of_latitude() {
        // ArduPilot: LATLON_TO_M = 0.01113195 m per 1e-7 degree (AP_Math/definitions.h).
        let (n, _) = north_east_m(0.0, 0.0, 1e-7, 0.0);
        assert!((n - 0.01113195).abs() < 1e-8, "{n}");
        // A short hop: the plane and the great circle agree within 2 cm over 500 m (the
        // plane's east scale is the origin's, the great circle's varies along the way).
        let (lat, lon) = offset_deg(47.397742, 8.545594, 300.0, -400.0);
        let a = point(47.397742, 8.545594);
        let b = point(lat, lon);
        assert!((great_circle_m(a, b) - 500.0).abs() < 0.02);
        // Across the antimeridian the plane stays continuous, for offsets too.
        let (n, e) = north_east_m(0.0, 179.9999, 0.0, -179.9999);
        assert!(n.abs() < 1e-9 && (e - 22.26).abs() < 0.01, "{n} {e}");
        let (_, lon) = offset_deg(0.0, 179.9999, 0.0, 22.26);
        assert!((lon + 179.9999).abs() < 1e-6, "{lon}");
    }
}
