//! Is the envelope drawn where the vehicle is? (sans-IO)
//!
//! An envelope written for one field and loaded on a vehicle at another is refused when the
//! daemon builds it around the autopilot's home, which is safe but comes late: at the field,
//! with the vehicle powered. These checks let `check-config` say so beforehand, against the
//! home the file says it was drawn around (`envelope.expected_home_lat_lon_deg`) and the home
//! the daemon last saw (`vehicle.last_home_path`), and give the run-time refusal its distance.
//!
//! Distances here are great-circle distances (`geodesy::great_circle_m`, on the one Earth
//! model's sphere): a zone on the wrong continent is thousands of kilometres away, where the envelope's own
//! local plane (`geo::LocalFrame`, valid within 20 km) means nothing.

use super::envelope_config::EnvelopeConfig;
use crate::safety::envelope::{Envelope, EnvelopeError, ZoneKind};
use crate::safety::geo::{EXTENT_M_MAX, GeoPoint, GeoPosition};
pub use crate::safety::geo::{format_distance, zone_distance_m};

pub use crate::geodesy::great_circle_m;

/// The configuration's table for a zone kind: what a person edits.
pub fn zone_table(kind: ZoneKind) -> &'static str {
    kind.config_table()
}

/// Warnings about the envelope around `home` (`which`: "configured" or "last known"): the
/// refusal the daemon would give there, and zones too far from it to matter (drawn for
/// another place). Empty when the envelope fits.
pub fn warnings(config: &EnvelopeConfig, home: GeoPoint, which: &str) -> Vec<String> {
    let mut out = Vec::new();
    let at = format!(
        "the {which} home ({:.7}, {:.7})",
        home.latitude_deg, home.longitude_deg
    );
    let reach_m = config.distance_from_home_m_max + config.margin_horizontal_m;
    for (kind, zones) in [
        (ZoneKind::KeepIn, &config.keep_in),
        (ZoneKind::KeepOut, &config.keep_out),
    ] {
        for zone in zones {
            let Some(distance_m) = zone_distance_m(zone, home) else {
                continue;
            };
            // A keep-in must contain home; the envelope's refusal below says so. A keep-out
            // beyond the home cylinder can never matter: most likely the zones are for
            // another field.
            if kind == ZoneKind::KeepOut && distance_m > reach_m {
                out.push(format!(
                    "{kind} `{}` is {} from {at}, beyond the {} m the vehicle may fly from \
                     home (envelope.distance_from_home_m_max): was it drawn for another \
                     place? Edit {} `{}`",
                    zone.name,
                    format_distance(distance_m),
                    config.distance_from_home_m_max,
                    zone_table(kind),
                    zone.name
                ));
            }
        }
    }
    let position = GeoPosition {
        latitude_deg: home.latitude_deg,
        longitude_deg: home.longitude_deg,
        altitude_m: 0.0,
    };
    match Envelope::new(config, position, None) {
        Ok(_) => {}
        Err(EnvelopeError::ZoneFar {
            kind,
            name,
            distance_m,
            ..
        }) => out.insert(
            0,
            format!(
                "{kind} `{name}` is {} from {at}: the daemon would refuse this envelope there \
                 (an envelope reaches at most {} km from home); edit {} `{name}` so that the \
                 zones surround that home, or write a trial envelope around it with \
                 `flight-companion dev-setup --home LAT,LON,ALT_M`",
                format_distance(distance_m),
                EXTENT_M_MAX / 1000.0,
                zone_table(kind)
            ),
        ),
        Err(e) => out.insert(
            0,
            format!("at {at} the daemon would refuse this envelope: {e}"),
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::envelope_config::ZoneConfig;

    fn p(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint {
            latitude_deg: lat,
            longitude_deg: lon,
        }
    }

    #[test]
    fn great_circle_distances_match_known_values() {
        // One degree of latitude: 111.3 km on the one Earth model's sphere (the WGS-84
        // semi-major axis, ArduPilot's LATLON_TO_M; the mean sphere said 111.2 km).
        let d = great_circle_m(p(47.0, 8.0), p(48.0, 8.0));
        assert!((d - 111_319.5).abs() < 1.0, "{d}");
        // Zurich to Sydney: about 16 540 km.
        let d = great_circle_m(p(47.397742, 8.545594), p(-33.8688, 151.2093));
        assert!((d / 1000.0 - 16_540.0).abs() < 60.0, "{d}");
        assert_eq!(format_distance(849.6), "850 m");
        assert_eq!(format_distance(12_400.0), "12.4 km");
        assert_eq!(format_distance(15_725_332.0), "15725 km");
    }

    #[test]
    fn zones_for_another_place_are_named_with_their_distance_and_what_to_edit() {
        let home = p(47.397742, 8.545594);
        let square = |lat: f64, lon: f64| ZoneConfig {
            name: "field".into(),
            polygon_lat_lon_deg: Some(vec![
                [lat - 0.001, lon - 0.001],
                [lat - 0.001, lon + 0.001],
                [lat + 0.001, lon + 0.001],
                [lat + 0.001, lon - 0.001],
            ]),
            center_lat_lon_deg: None,
            radius_m: None,
        };
        let config = EnvelopeConfig {
            keep_in: vec![square(home.latitude_deg, home.longitude_deg)],
            keep_out: vec![ZoneConfig {
                name: "tower".into(),
                polygon_lat_lon_deg: None,
                center_lat_lon_deg: Some([home.latitude_deg, home.longitude_deg + 0.0008]),
                radius_m: Some(15.0),
            }],
            ..EnvelopeConfig::default()
        };
        assert_eq!(warnings(&config, home, "configured"), Vec::<String>::new());
        // The same file at a field in Sydney (16,585 km on the model's sphere; 16,567 km on
        // the mean sphere site.rs used before the one Earth model).
        let sydney = p(-33.8688, 151.2093);
        let w = warnings(&config, sydney, "last known");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with(
                "keep-in `field` is 16585 km from the last known home (-33.8688000, \
                 151.2093000): the daemon would refuse this envelope there"
            ),
            "{w:?}"
        );
        assert!(w[0].contains("edit [[envelope.keep_in]] `field`"), "{w:?}");
        assert!(
            w[1].contains("keep-out `tower` is 16585 km")
                && w[1].contains("[[envelope.keep_out]] `tower`"),
            "{w:?}"
        );
        // 600 m away: home outside the keep-in, said with how far (489 m: 600 m less the
        // square's 111.3 m half-side, both in the one Earth model; the offset and the
        // envelope used to measure with different radii and said 488 m).
        let (lat, lon) =
            crate::geodesy::offset_deg(home.latitude_deg, home.longitude_deg, 600.0, 0.0);
        let w = warnings(&config, p(lat, lon), "configured");
        assert!(
            w[0].contains("home position is outside keep-in `field` (by 489 m, at 47.4031319,"),
            "{w:?}"
        );
    }
}
