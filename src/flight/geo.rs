//! Flat-earth geometry around a reference point: good to centimetres over the few
//! kilometres a companion's envelope spans, and cheap enough for every monitoring tick.

/// WGS-84 equatorial radius; the same the simulator uses, so distances agree with it.
const EARTH_RADIUS_M: f64 = 6_378_137.0;

/// Metres north and east of `from` to `to` (equirectangular around `from`).
pub fn north_east_m(
    from_latitude_deg: f64,
    from_longitude_deg: f64,
    to_latitude_deg: f64,
    to_longitude_deg: f64,
) -> (f64, f64) {
    let north_m = (to_latitude_deg - from_latitude_deg).to_radians() * EARTH_RADIUS_M;
    let east_m = (to_longitude_deg - from_longitude_deg).to_radians()
        * EARTH_RADIUS_M
        * from_latitude_deg.to_radians().cos();
    (north_m, east_m)
}

/// Horizontal distance in metres.
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

/// The point `north_m`/`east_m` away from (`latitude_deg`, `longitude_deg`).
pub fn offset_deg(latitude_deg: f64, longitude_deg: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    let latitude_out = latitude_deg + (north_m / EARTH_RADIUS_M).to_degrees();
    let longitude_out =
        longitude_deg + (east_m / (EARTH_RADIUS_M * latitude_deg.to_radians().cos())).to_degrees();
    (latitude_out, longitude_out)
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
}
