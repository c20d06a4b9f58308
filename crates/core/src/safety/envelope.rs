//! The safety envelope: what the vehicle may be asked to do, decided onboard (sans-IO).
//!
//! # API
//! - [`Envelope::new`]`(&EnvelopeConfig, home, current)` validates everything (polygons
//!   "nice", margins at least the stopping distance, home and the current position inside
//!   every keep-in and outside every keep-out) and refuses the whole envelope with the reason
//!   otherwise: an envelope is replaced as a whole, never partially.
//! - [`Envelope::check_goal`] for motion (goto, move_relative): the target AND the straight
//!   path from `from` to it stay inside every keep-in shrunk by the horizontal margin, outside
//!   every keep-out grown by it, within the home cylinder minus the margin, the target within
//!   the altitude band shrunk by the vertical margin, the speed within its limit, the battery
//!   above the reserve and the GPS good enough. The answer is a [`Verdict`], never an `Err`.
//! - [`Envelope::check_action`] for everything else: hold, land, return home and disarm are
//!   always allowed; arm and takeoff need GPS, battery and a position inside the envelope.
//! - [`Envelope::monitor`] for the live loop (≥ 25 Hz, O(total vertices), no allocation on
//!   the `Inside` path): `Inside`, `NearMargin`, `Breach` or `NoPosition`.
//! - [`tighten`]`(current, proposed, armed)`: while armed an envelope may only shrink.
//! - [`Envelope::summary`] for the `get_envelope` tool.
//!
//! Call order: build once per configuration (and again when home changes), then call the
//! checks as often as needed; nothing here keeps state between calls, reads a clock or does IO.
//!
//! # Semantics
//! - Several keep-in zones: the vehicle stays inside **all** of them (intersection, ArduPilot's
//!   default; the home cylinder is one more keep-in).
//! - A vehicle already inside a margin band (drifted, or just after a tightening) may still
//!   be sent a goal whose target is properly inside, if the path never gets closer to that
//!   boundary than the vehicle already is: this lets it fly back in. A vehicle outside a
//!   keep-in or inside a keep-out is in breach: only hold, land and return are accepted.
//! - Altitude along a straight path is monotonic, and distance from a circle's centre along a
//!   segment is convex, so for the altitude band, keep-in circles and the home cylinder the
//!   endpoints decide; polygons and keep-out circles are checked against the whole segment.
//! - The floor applies to goal targets only: every takeoff and landing passes below it, so
//!   the monitor never calls it a breach (the autopilot's own `FENCE_ALT_MIN` does that).
//! - Margins must be at least `v_max·(t_check + t_link) + v_max²/(2·a_brake) + σ` (P2 in the
//!   safety reference), horizontally with the horizontal speed and vertically with the
//!   vertical speed; smaller margins are refused when the configuration is loaded.

use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;

use super::envelope_config::{BreachAction, EnvelopeConfig, ZoneConfig};
use crate::refusal::{EnvelopeRule, Refusal, RefusalKind};
use crate::safety::geo::{
    Circle, EXTENT_M_MAX, GeoError, GeoPoint, GeoPosition, LocalFrame, LocalPoint, Polygon,
    PolygonError, point_segment_distance, segment_circle_entry,
};
use crate::vehicle::view::Landed;

/// A path this close to a polygon boundary is treated as touching it (see `path_clearance`).
const BOUNDARY_CONTACT_M: f64 = 1e-6;

/// Paths may not get closer to a boundary than the vehicle already is, give or take this
/// much (floating point; far below any margin).
const PATH_TOLERANCE_M: f64 = 0.01;

/// The answer to "may the vehicle do this?". A refusal is a value, with a reason a person or
/// a model can act on and the envelope rules it broke (`RefusalKind::Envelope`).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allowed,
    Refused(Refusal),
}

/// Each broken rule with its sentence.
type Reasons = Vec<(EnvelopeRule, String)>;

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
    }
    fn from_reasons(reasons: Reasons) -> Verdict {
        if reasons.is_empty() {
            return Verdict::Allowed;
        }
        let rules = reasons.iter().map(|(rule, _)| *rule).collect();
        let sentences: Vec<String> = reasons.into_iter().map(|(_, s)| s).collect();
        Verdict::Refused(Refusal::new(
            RefusalKind::Envelope(rules),
            sentences.join("; "),
        ))
    }
}

/// What the live monitor sees.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MonitorVerdict {
    /// Inside everything, farther than the margin from every boundary.
    Inside,
    /// Inside, but within the margin of `what` (the closest such boundary); `floor` when
    /// that is the floor's (every takeoff and landing passes through it).
    NearMargin {
        what: String,
        distance_m: f64,
        floor: bool,
    },
    /// Outside a keep-in, inside a keep-out, beyond the home cylinder or above the ceiling.
    Breach { what: String },
    /// No valid, fresh position: the envelope cannot tell (the autopilot's own failsafes
    /// cover position loss).
    NoPosition,
}

/// GPS fix quality: the vehicle's own fix type, compared by [`FixType::quality`].
pub use crate::vehicle::snapshot::FixType;
/// What the envelope knows about the vehicle: the one view every safety check decides on,
/// built by `VehicleState::view(now)`; stale values arrive as `None` / invalid.
pub use crate::vehicle::view::VehicleView;

/// A motion request: fly from `from` (the current position) straight to `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoalRequest {
    pub from: GeoPosition,
    pub to: GeoPosition,
    /// Requested horizontal speed; `None` means the autopilot's default, which the daemon
    /// must itself cap at the envelope's maximum.
    pub speed_m_s: Option<f64>,
}

/// Non-goal actions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActionKind {
    Arm,
    Disarm,
    Takeoff { altitude_m: f64 },
    Hold,
    Land,
    ReturnHome,
    SetSpeed { speed_m_s: f64 },
    SetHeading { heading_deg: f64 },
}

/// Why an envelope (configuration or replacement) is refused as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvelopeError {
    /// A scalar setting is wrong; `key` is the configuration key.
    Setting { key: &'static str, message: String },
    /// Home itself is unusable.
    Home(GeoError),
    /// A zone is malformed.
    Zone {
        kind: ZoneKind,
        name: String,
        message: String,
    },
    /// Home or the current position is outside a keep-in or inside a keep-out.
    PositionOutside {
        which: &'static str,
        kind: ZoneKind,
        name: String,
        /// Where that position is.
        at: GeoPoint,
        /// How far on the wrong side of the zone's boundary.
        distance_m: f64,
    },
    /// A zone lies wholly beyond the envelope's reach from home: drawn for another place.
    ZoneFar {
        kind: ZoneKind,
        name: String,
        /// From home to the zone's nearest vertex (a circle's edge), great-circle.
        distance_m: f64,
        home: GeoPoint,
    },
    /// A replacement would widen the envelope while armed.
    Widening { what: String },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Setting { key, message } => write!(f, "envelope.{key}: {message}"),
            EnvelopeError::Home(e) => write!(f, "home: {e}"),
            EnvelopeError::Zone {
                kind,
                name,
                message,
            } => write!(f, "{kind} `{name}` {message}"),
            EnvelopeError::PositionOutside {
                which,
                kind,
                name,
                at,
                distance_m,
            } => {
                let place = format!(
                    "by {}, at {:.7}, {:.7}",
                    crate::safety::geo::format_distance(*distance_m),
                    at.latitude_deg,
                    at.longitude_deg
                );
                let table = kind.config_table();
                let fix = if *which == "home" {
                    format!(
                        "edit {table} `{name}` so that it fits the field the vehicle flies from"
                    )
                } else {
                    format!(
                        "bring the vehicle back (hold, land or return_home are accepted), or edit {table} `{name}`"
                    )
                };
                match kind {
                    ZoneKind::KeepIn => write!(
                        f,
                        "the {which} position is outside keep-in `{name}` ({place}); an envelope must contain home and the vehicle: {fix}"
                    ),
                    ZoneKind::KeepOut => write!(
                        f,
                        "the {which} position is inside keep-out `{name}` ({place}); an envelope must leave home and the vehicle outside every keep-out: {fix}"
                    ),
                }
            }
            EnvelopeError::ZoneFar {
                kind,
                name,
                distance_m,
                home,
            } => write!(
                f,
                "{kind} `{name}` is {} from the autopilot's home ({:.7}, {:.7}), and an envelope reaches at most {} km from home: the zones were drawn for another place. Edit {} `{name}` in the configuration so that the zones surround this home (`flight-companion dev-setup --home LAT,LON,ALT_M` writes a small trial envelope around a home; `flight-companion check-config` warns about this before a flight), then restart the daemon",
                crate::safety::geo::format_distance(*distance_m),
                home.latitude_deg,
                home.longitude_deg,
                EXTENT_M_MAX / 1000.0,
                kind.config_table()
            ),
            EnvelopeError::Widening { what } => write!(
                f,
                "the vehicle is armed: an envelope may only be tightened in flight, but the new one {what}; land and disarm to widen it"
            ),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// The speed the horizontal margin is sized from, and what set it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct MarginSpeed {
    pub speed_m_s: f64,
    /// `envelope.speed_horizontal_m_s_max` or the autopilot parameter (`WPNAV_SPEED`, ...).
    pub source: &'static str,
}

/// Keep-in or keep-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    KeepIn,
    KeepOut,
}

impl ZoneKind {
    /// The configuration's table for this kind: what a person edits.
    pub fn config_table(self) -> &'static str {
        match self {
            ZoneKind::KeepIn => "[[envelope.keep_in]]",
            ZoneKind::KeepOut => "[[envelope.keep_out]]",
        }
    }
}

impl fmt::Display for ZoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ZoneKind::KeepIn => "keep-in",
            ZoneKind::KeepOut => "keep-out",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Polygon(Polygon),
    Circle(Circle),
}

#[derive(Debug, Clone, PartialEq)]
struct Zone {
    name: String,
    kind: ZoneKind,
    shape: Shape,
}

impl Zone {
    /// Distance to the boundary, positive on the allowed side.
    fn clearance(&self, p: LocalPoint) -> f64 {
        let inside = match &self.shape {
            Shape::Polygon(poly) => poly.signed_distance(p),
            Shape::Circle(c) => c.signed_distance(p),
        };
        match self.kind {
            ZoneKind::KeepIn => inside,
            ZoneKind::KeepOut => -inside,
        }
    }

    /// The clearances of `a` and `b` and the smallest along the segment `a`–`b` (exact when
    /// both endpoints are on the allowed side, the only case the goal check asks about),
    /// for a polygon in one pass over its edges.
    fn path_clearances(&self, a: LocalPoint, b: LocalPoint) -> (f64, f64, f64) {
        match &self.shape {
            Shape::Polygon(poly) => {
                let d = poly.path_distances(a, b);
                let sign = match self.kind {
                    ZoneKind::KeepIn => 1.0,
                    ZoneKind::KeepOut => -1.0,
                };
                let (start, end) = (sign * d.start_m, sign * d.end_m);
                (
                    start,
                    end,
                    self.path_clearance(a, b, start.min(end), d.segment_m),
                )
            }
            Shape::Circle(_) => {
                let (start, end) = (self.clearance(a), self.clearance(b));
                (start, end, self.path_clearance(a, b, start.min(end), 0.0))
            }
        }
    }

    /// Smallest clearance along the segment `a`–`b` given the smaller clearance of its
    /// ends and, for a polygon, the segment's distance to the boundary.
    fn path_clearance(&self, a: LocalPoint, b: LocalPoint, ends: f64, segment_m: f64) -> f64 {
        if ends <= 0.0 {
            return ends;
        }
        match (&self.shape, self.kind) {
            (Shape::Polygon(poly), _) => {
                let distance = segment_m;
                if distance > BOUNDARY_CONTACT_M {
                    return distance;
                }
                // The segment reaches the boundary: it may cross to the forbidden side and
                // come back (both ends allowed), which the unsigned distance (0) cannot
                // tell from a graze. A vehicle starting a few millimetres from the edge
                // would then be allowed straight through the zone. So split the segment
                // where it meets the edges; between two meeting points the segment is
                // wholly on one side, which its midpoint tells exactly.
                let mut cuts = vec![0.0, 1.0];
                let vertices = poly.vertices();
                for (i, &p) in vertices.iter().enumerate() {
                    let q = vertices[(i + 1) % vertices.len()];
                    cuts.extend(segment_edge_parameters(a, b, p, q));
                }
                cuts.sort_by(f64::total_cmp);
                cuts.windows(2)
                    .filter(|w| w[1] - w[0] > 1e-12)
                    .map(|w| self.clearance(a.lerp(b, (w[0] + w[1]) / 2.0)))
                    .fold(0.0, f64::min)
            }
            // Distance from the centre is convex along a segment: the ends decide.
            (Shape::Circle(_), ZoneKind::KeepIn) => ends,
            (Shape::Circle(c), ZoneKind::KeepOut) => {
                point_segment_distance(c.center, a, b) - c.radius_m
            }
        }
    }

    /// `margin` says how wide the margin is and, when the autopilot's speed widened it, why.
    fn describe(&self, margin: &str) -> String {
        match &self.shape {
            Shape::Polygon(p) => format!(
                "{} `{}` (polygon, {} vertices, {margin})",
                self.kind,
                self.name,
                p.vertices().len(),
            ),
            Shape::Circle(c) => format!(
                "{} `{}` (circle, {} m radius + {margin})",
                self.kind,
                self.name,
                fmt_m(c.radius_m),
            ),
        }
    }
}

/// A validated envelope in the local plane around home.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    config: EnvelopeConfig,
    home: GeoPosition,
    frame: LocalFrame,
    zones: Vec<Zone>,
    gps_fix_min: FixType,
    /// The highest speed the vehicle flies at (the limit, or the autopilot's own speeds read
    /// by the pre-flight check): the horizontal margin covers its stopping distance.
    margin_speed: MarginSpeed,
}

/// Stopping distance `v·(t_check + t_link) + v²/(2·a) + σ`.
pub fn stopping_distance_m(config: &EnvelopeConfig, speed_m_s: f64) -> f64 {
    speed_m_s * (config.check_interval_s + config.link_latency_s)
        + speed_m_s * speed_m_s / (2.0 * config.braking_deceleration_m_s2)
        + config.position_uncertainty_m
}

/// Checks the home-independent rules of an `[envelope]` section: numbers in range, margins
/// at least the stopping distance, every zone well formed. Returns the key and the reason.
pub fn check_config(c: &EnvelopeConfig) -> Result<(), (&'static str, String)> {
    check_scalars(c).map_err(|(key, m)| (full_key(key), m))?;
    for (kind, zones) in [
        (ZoneKind::KeepIn, &c.keep_in),
        (ZoneKind::KeepOut, &c.keep_out),
    ] {
        for zone in zones {
            let origin = zone_reference_point(zone);
            let key = match kind {
                ZoneKind::KeepIn => "envelope.keep_in",
                ZoneKind::KeepOut => "envelope.keep_out",
            };
            let frame = match origin.map(LocalFrame::new) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err((key, format!("{kind} `{}`: {e}", zone.name))),
                None => {
                    return Err((
                        key,
                        format!(
                            "{kind} `{}` needs either `polygon_lat_lon_deg` or `center_lat_lon_deg` with `radius_m`",
                            zone.name
                        ),
                    ));
                }
            };
            build_zone(zone, kind, &frame).map_err(|e| (key, e.to_string()))?;
        }
    }
    Ok(())
}

fn full_key(key: &'static str) -> &'static str {
    match key {
        "altitude_m_min" => "envelope.altitude_m_min",
        "altitude_m_max" => "envelope.altitude_m_max",
        "margin_horizontal_m" => "envelope.margin_horizontal_m",
        "margin_vertical_m" => "envelope.margin_vertical_m",
        "speed_horizontal_m_s_max" => "envelope.speed_horizontal_m_s_max",
        "speed_vertical_m_s_max" => "envelope.speed_vertical_m_s_max",
        "distance_from_home_m_max" => "envelope.distance_from_home_m_max",
        "battery_reserve_percent" => "envelope.battery_reserve_percent",
        "gps_fix_type_min" => "envelope.gps_fix_type_min",
        "gps_hdop_max" => "envelope.gps_hdop_max",
        "check_interval_s" => "envelope.check_interval_s",
        "link_latency_s" => "envelope.link_latency_s",
        "braking_deceleration_m_s2" => "envelope.braking_deceleration_m_s2",
        "position_uncertainty_m" => "envelope.position_uncertainty_m",
        "breach_hold_s" => "envelope.breach_hold_s",
        _ => "envelope",
    }
}

fn check_scalars(c: &EnvelopeConfig) -> Result<(), (&'static str, String)> {
    let finite_in = |key: &'static str, v: f64, lo: f64, hi: f64| {
        if v.is_finite() && v >= lo && v <= hi {
            Ok(())
        } else {
            Err((key, format!("must be within {lo}..={hi}, got {v}")))
        }
    };
    finite_in("altitude_m_min", c.altitude_m_min, -100.0, 10_000.0)?;
    finite_in("altitude_m_max", c.altitude_m_max, 1.0, 10_000.0)?;
    finite_in("margin_horizontal_m", c.margin_horizontal_m, 0.0, 10_000.0)?;
    finite_in("margin_vertical_m", c.margin_vertical_m, 0.0, 10_000.0)?;
    finite_in(
        "speed_horizontal_m_s_max",
        c.speed_horizontal_m_s_max,
        0.1,
        100.0,
    )?;
    finite_in(
        "speed_vertical_m_s_max",
        c.speed_vertical_m_s_max,
        0.1,
        50.0,
    )?;
    finite_in(
        "distance_from_home_m_max",
        c.distance_from_home_m_max,
        1.0,
        EXTENT_M_MAX,
    )?;
    finite_in(
        "battery_reserve_percent",
        c.battery_reserve_percent,
        0.0,
        100.0,
    )?;
    finite_in("gps_hdop_max", c.gps_hdop_max, 0.1, 100.0)?;
    finite_in("check_interval_s", c.check_interval_s, 0.001, 1.0)?;
    finite_in("link_latency_s", c.link_latency_s, 0.0, 10.0)?;
    finite_in(
        "braking_deceleration_m_s2",
        c.braking_deceleration_m_s2,
        0.1,
        50.0,
    )?;
    finite_in(
        "position_uncertainty_m",
        c.position_uncertainty_m,
        0.0,
        1000.0,
    )?;
    finite_in("breach_hold_s", c.breach_hold_s, 0.0, 60.0)?;
    if c.check_interval_s > 0.04 {
        return Err((
            "check_interval_s",
            format!(
                "the envelope must be checked at 25 Hz or faster: at most 0.04 s, got {}",
                c.check_interval_s
            ),
        ));
    }
    match FixType::from_name(&c.gps_fix_type_min) {
        Some(fix) if fix.quality() >= FixType::Fix2d.quality() => {}
        _ => {
            return Err((
                "gps_fix_type_min",
                format!(
                    "must be one of 2d_fix, 3d_fix, dgps, rtk_float, rtk_fixed, got `{}`",
                    c.gps_fix_type_min
                ),
            ));
        }
    }
    let horizontal_m_min = stopping_distance_m(c, c.speed_horizontal_m_s_max);
    if c.margin_horizontal_m < horizontal_m_min {
        return Err((
            "margin_horizontal_m",
            format!(
                "{} m is less than the stopping distance at {} m/s: {} m/s × ({} s check + {} s link) + ({} m/s)² / (2 × {} m/s²) + {} m uncertainty = {:.2} m; raise the margin or lower speed_horizontal_m_s_max",
                fmt_m(c.margin_horizontal_m),
                fmt_m(c.speed_horizontal_m_s_max),
                fmt_m(c.speed_horizontal_m_s_max),
                c.check_interval_s,
                c.link_latency_s,
                fmt_m(c.speed_horizontal_m_s_max),
                c.braking_deceleration_m_s2,
                fmt_m(c.position_uncertainty_m),
                horizontal_m_min
            ),
        ));
    }
    let vertical_m_min = stopping_distance_m(c, c.speed_vertical_m_s_max);
    if c.margin_vertical_m < vertical_m_min {
        return Err((
            "margin_vertical_m",
            format!(
                "{} m is less than the stopping distance at {} m/s vertically ({:.2} m); raise the margin or lower speed_vertical_m_s_max",
                fmt_m(c.margin_vertical_m),
                fmt_m(c.speed_vertical_m_s_max),
                vertical_m_min
            ),
        ));
    }
    if c.altitude_m_max - c.altitude_m_min <= 2.0 * c.margin_vertical_m {
        return Err((
            "altitude_m_max",
            format!(
                "the band {}..{} m leaves no room inside two {} m margins; it must be wider than {} m",
                fmt_m(c.altitude_m_min),
                fmt_m(c.altitude_m_max),
                fmt_m(c.margin_vertical_m),
                fmt_m(2.0 * c.margin_vertical_m)
            ),
        ));
    }
    if c.distance_from_home_m_max <= c.margin_horizontal_m {
        return Err((
            "distance_from_home_m_max",
            format!(
                "must exceed the horizontal margin ({} m), got {} m",
                fmt_m(c.margin_horizontal_m),
                fmt_m(c.distance_from_home_m_max)
            ),
        ));
    }
    Ok(())
}

fn zone_reference_point(z: &ZoneConfig) -> Option<GeoPoint> {
    let [lat, lon] = match (&z.polygon_lat_lon_deg, &z.center_lat_lon_deg) {
        (Some(v), None) => *v.first().unwrap_or(&[0.0, 0.0]),
        (None, Some(c)) => *c,
        _ => return None,
    };
    Some(GeoPoint {
        latitude_deg: lat,
        longitude_deg: lon,
    })
}

fn build_zone(z: &ZoneConfig, kind: ZoneKind, frame: &LocalFrame) -> Result<Zone, EnvelopeError> {
    let err = |message: String| EnvelopeError::Zone {
        kind,
        name: z.name.clone(),
        message,
    };
    if z.name.trim().is_empty() {
        return Err(err("has an empty name; give every zone a name".into()));
    }
    let shape = match (&z.polygon_lat_lon_deg, &z.center_lat_lon_deg, z.radius_m) {
        (Some(vertices), None, None) => {
            let mut local = Vec::with_capacity(vertices.len());
            for (index, [lat, lon]) in vertices.iter().enumerate() {
                let g = GeoPoint {
                    latitude_deg: *lat,
                    longitude_deg: *lon,
                };
                if !g.is_valid() {
                    return Err(err(PolygonError::InvalidVertex { index }.to_string()));
                }
                let l = frame.to_local(g);
                if l.norm() > EXTENT_M_MAX {
                    return Err(err(format!(
                        "vertex {index} is {:.0} m from home; the envelope may reach at most {} m: move that vertex of {} `{}` closer",
                        l.norm(),
                        EXTENT_M_MAX,
                        kind.config_table(),
                        z.name
                    )));
                }
                local.push(l);
            }
            Shape::Polygon(Polygon::new(local).map_err(|e| err(e.to_string()))?)
        }
        (None, Some([lat, lon]), Some(radius_m)) => {
            let g = GeoPoint {
                latitude_deg: *lat,
                longitude_deg: *lon,
            };
            if !g.is_valid() {
                return Err(err("has a centre that is not a position".into()));
            }
            if !(radius_m.is_finite() && radius_m >= 1.0) {
                return Err(err(format!(
                    "needs a radius of at least 1 m, got {radius_m}"
                )));
            }
            let center = frame.to_local(g);
            if center.norm() + radius_m > EXTENT_M_MAX {
                return Err(err(format!(
                    "reaches {:.0} m from home; the envelope may reach at most {} m",
                    center.norm() + radius_m,
                    EXTENT_M_MAX
                )));
            }
            Shape::Circle(Circle { center, radius_m })
        }
        _ => {
            return Err(err(
                "needs either `polygon_lat_lon_deg` or `center_lat_lon_deg` with `radius_m`, not both or neither"
                    .into(),
            ));
        }
    };
    Ok(Zone {
        name: z.name.clone(),
        kind,
        shape,
    })
}

impl Envelope {
    /// Validates a whole envelope around `home`; `current` (when known) must be inside too.
    pub fn new(
        config: &EnvelopeConfig,
        home: GeoPosition,
        current: Option<GeoPosition>,
    ) -> Result<Envelope, EnvelopeError> {
        check_scalars(config).map_err(|(key, message)| EnvelopeError::Setting { key, message })?;
        let frame = LocalFrame::new(home.point()).map_err(EnvelopeError::Home)?;
        let gps_fix_min = FixType::from_name(&config.gps_fix_type_min).unwrap_or(FixType::Fix3d);
        // A zone wholly out of reach was drawn for another place: say so with the distance,
        // before a vertex's position in a plane that does not reach that far is reported.
        for (kind, list) in [
            (ZoneKind::KeepIn, &config.keep_in),
            (ZoneKind::KeepOut, &config.keep_out),
        ] {
            for z in list {
                if let Some(distance_m) = crate::safety::geo::zone_distance_m(z, home.point())
                    && distance_m > EXTENT_M_MAX
                {
                    return Err(EnvelopeError::ZoneFar {
                        kind,
                        name: z.name.clone(),
                        distance_m,
                        home: home.point(),
                    });
                }
            }
        }
        let mut zones = Vec::with_capacity(config.keep_in.len() + config.keep_out.len());
        for z in &config.keep_in {
            zones.push(build_zone(z, ZoneKind::KeepIn, &frame)?);
        }
        for z in &config.keep_out {
            zones.push(build_zone(z, ZoneKind::KeepOut, &frame)?);
        }
        let envelope = Envelope {
            config: config.clone(),
            home,
            frame,
            zones,
            gps_fix_min,
            margin_speed: MarginSpeed {
                speed_m_s: config.speed_horizontal_m_s_max,
                source: "envelope.speed_horizontal_m_s_max",
            },
        };
        envelope.require_inside("home", home.point())?;
        if let Some(current) = current {
            if !current.point().is_valid() {
                return Err(EnvelopeError::Home(GeoError::InvalidCoordinates {
                    latitude_deg: current.latitude_deg,
                    longitude_deg: current.longitude_deg,
                }));
            }
            envelope.require_inside("current", current.point())?;
        }
        Ok(envelope)
    }

    fn require_inside(&self, which: &'static str, p: GeoPoint) -> Result<(), EnvelopeError> {
        let l = self.frame.to_local(p);
        for z in &self.zones {
            let clearance = z.clearance(l);
            if clearance <= 0.0 {
                return Err(EnvelopeError::PositionOutside {
                    which,
                    kind: z.kind,
                    name: z.name.clone(),
                    at: p,
                    distance_m: -clearance,
                });
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &EnvelopeConfig {
        &self.config
    }

    /// The speed the vehicle can actually fly at (from the pre-flight check); the horizontal
    /// margin becomes at least its stopping distance. Slower than the limit counts as the limit.
    pub fn set_margin_speed(&mut self, speed: MarginSpeed) {
        self.margin_speed = if speed.speed_m_s.is_finite()
            && speed.speed_m_s > self.config.speed_horizontal_m_s_max
        {
            speed
        } else {
            MarginSpeed {
                speed_m_s: self.config.speed_horizontal_m_s_max,
                source: "envelope.speed_horizontal_m_s_max",
            }
        };
    }

    /// The speed the horizontal margin is sized from, and what set it.
    pub fn margin_speed(&self) -> &MarginSpeed {
        &self.margin_speed
    }

    /// The horizontal margin in force: the configured one, or the stopping distance at the
    /// margin speed when that is larger.
    pub fn margin_horizontal_m(&self) -> f64 {
        self.config.margin_horizontal_m.max(stopping_distance_m(
            &self.config,
            self.margin_speed.speed_m_s,
        ))
    }

    /// "10 m margin", or "24.4 m margin, the stopping distance at WPNAV_SPEED 10 m/s".
    fn margin_words(&self) -> String {
        let m = self.margin_horizontal_m();
        if m > self.config.margin_horizontal_m {
            format!(
                "{} m margin, the stopping distance at {} {} m/s",
                fmt_m(m),
                self.margin_speed.source,
                fmt_m(self.margin_speed.speed_m_s)
            )
        } else {
            format!("{} m margin", fmt_m(m))
        }
    }

    pub fn home(&self) -> GeoPosition {
        self.home
    }

    /// The local plane around home the envelope is checked in.
    pub fn frame(&self) -> &LocalFrame {
        &self.frame
    }

    /// Highest altitude (relative to home) a target may have.
    pub fn target_altitude_m_max(&self) -> f64 {
        self.config.altitude_m_max - self.config.margin_vertical_m
    }

    /// Lowest altitude (relative to home) a target may have.
    pub fn target_altitude_m_min(&self) -> f64 {
        self.config.altitude_m_min + self.config.margin_vertical_m
    }

    /// Farthest a target may be from home.
    pub fn target_distance_m_max(&self) -> f64 {
        self.config.distance_from_home_m_max - self.margin_horizontal_m()
    }

    /// Refusals for battery and GPS, shared by goals, arm and takeoff.
    fn readiness_reasons(&self, facts: &VehicleView, reasons: &mut Reasons) {
        let c = &self.config;
        match facts.battery_remaining_percent {
            Some(b) if b < c.battery_reserve_percent => reasons.push((EnvelopeRule::BatteryReserve, format!(
                "the battery is at {b:.0} %, below the {}% reserve: only land and return_home are accepted",
                fmt_m(c.battery_reserve_percent)
            ))),
            None if c.battery_reserve_percent > 0.0 => reasons.push((EnvelopeRule::BatteryReserve, format!(
                "the autopilot does not report the remaining battery, so the {}% reserve cannot be checked: only land and return_home are accepted",
                fmt_m(c.battery_reserve_percent)
            ))),
            _ => {}
        }
        let mut gps = Vec::new();
        if facts.gps_fix_type.quality() < self.gps_fix_min.quality() {
            gps.push(format!(
                "fix {} (needs {} or better)",
                facts.gps_fix_type.as_str(),
                self.gps_fix_min.as_str()
            ));
        }
        if facts.satellites_visible < c.gps_satellites_min {
            gps.push(format!(
                "{} satellites (needs {})",
                facts.satellites_visible, c.gps_satellites_min
            ));
        }
        match facts.hdop {
            Some(h) if h <= c.gps_hdop_max => {}
            Some(h) => gps.push(format!("HDOP {h:.1} (needs {} or less)", c.gps_hdop_max)),
            None => gps.push(format!("HDOP unknown (needs {} or less)", c.gps_hdop_max)),
        }
        if !facts.position_valid {
            gps.push("the autopilot does not trust its position estimate".into());
        }
        if facts.position.is_none() {
            gps.push("no fresh position".into());
        }
        if !gps.is_empty() {
            reasons.push((
                EnvelopeRule::Gps,
                format!(
                    "GPS is not good enough for motion: {}; wait for a better fix",
                    gps.join(", ")
                ),
            ));
        }
    }

    fn altitude_reasons(&self, altitude_m: f64, reasons: &mut Reasons) {
        let c = &self.config;
        if !altitude_m.is_finite() {
            reasons.push((
                EnvelopeRule::InvalidTarget,
                "the target altitude is not a number".into(),
            ));
        } else if altitude_m > self.target_altitude_m_max() {
            reasons.push((
                EnvelopeRule::Ceiling,
                format!(
                    "the ceiling is {} m with a {} m margin: the highest allowed target is {} m",
                    fmt_m(c.altitude_m_max),
                    fmt_m(c.margin_vertical_m),
                    fmt_m(self.target_altitude_m_max())
                ),
            ));
        } else if altitude_m < self.target_altitude_m_min() {
            reasons.push((
                EnvelopeRule::Floor,
                format!(
                    "the floor is {} m with a {} m margin: the lowest allowed target is {} m",
                    fmt_m(c.altitude_m_min),
                    fmt_m(c.margin_vertical_m),
                    fmt_m(self.target_altitude_m_min())
                ),
            ));
        }
    }

    /// Checks a motion goal. Never fails: a refusal says what would be allowed.
    pub fn check_goal(&self, goal: &GoalRequest, facts: &VehicleView) -> Verdict {
        let c = &self.config;
        let mut reasons = Vec::new();
        if !goal.to.point().is_valid() || !goal.from.point().is_valid() {
            return Verdict::from_reasons(vec![(
                EnvelopeRule::InvalidTarget,
                "the target is not a position: latitude must be within ±90° and longitude within ±180°".into(),
            )]);
        }
        self.readiness_reasons(facts, &mut reasons);
        if let Some(speed) = goal.speed_m_s {
            if !(speed.is_finite() && speed > 0.0) {
                reasons.push((
                    EnvelopeRule::Speed,
                    format!(
                        "the speed must be above 0 and at most {} m/s",
                        fmt_m(c.speed_horizontal_m_s_max)
                    ),
                ));
            } else if speed > c.speed_horizontal_m_s_max {
                reasons.push((
                    EnvelopeRule::Speed,
                    format!(
                        "the speed limit is {} m/s: ask for {} m/s or less",
                        fmt_m(c.speed_horizontal_m_s_max),
                        fmt_m(c.speed_horizontal_m_s_max)
                    ),
                ));
            }
        }
        self.altitude_reasons(goal.to.altitude_m, &mut reasons);

        let a = self.frame.to_local(goal.from.point());
        let b = self.frame.to_local(goal.to.point());
        let m = self.margin_horizontal_m();
        // Words only for a refusal: an accepted goal formats nothing.
        let words = || self.margin_words();
        let path_m = a.distance(b);

        let home_distance = b.norm();
        if home_distance > self.target_distance_m_max() {
            reasons.push((EnvelopeRule::HomeDistance, format!(
                "the target is {} m from home; the limit is {} m with a {} m margin: stay within {} m of home",
                fmt_m(home_distance),
                fmt_m(c.distance_from_home_m_max),
                fmt_m(m),
                fmt_m(self.target_distance_m_max())
            )));
        }

        for z in &self.zones {
            let (start, target, path) = z.path_clearances(a, b);
            if start <= 0.0 {
                reasons.push((EnvelopeRule::Zone, match z.kind {
                    ZoneKind::KeepIn => format!(
                        "the vehicle is outside {}: only hold, land and return_home are accepted",
                        z.describe(&words())
                    ),
                    ZoneKind::KeepOut => format!(
                        "the vehicle is inside {}: only hold, land and return_home are accepted",
                        z.describe(&words())
                    ),
                }));
                continue;
            }
            if target < m {
                reasons.push((EnvelopeRule::Zone, match z.kind {
                    ZoneKind::KeepIn => format!(
                        "the target is {} {}; choose a target at least {} m inside its boundary",
                        if target < 0.0 {
                            format!("{} m outside", fmt_m(-target))
                        } else {
                            format!("only {} m inside", fmt_m(target))
                        },
                        z.describe(&words()),
                        fmt_m(m)
                    ),
                    ZoneKind::KeepOut => format!(
                        "the target is {} {}; choose a target at least {} m outside it",
                        if target < 0.0 {
                            format!("{} m inside", fmt_m(-target))
                        } else {
                            format!("only {} m from", fmt_m(target))
                        },
                        z.describe(&words()),
                        fmt_m(m)
                    ),
                }));
                continue;
            }
            // The path may not come closer than the margin, or than the vehicle already is.
            let required = if start < m {
                start - PATH_TOLERANCE_M
            } else {
                m
            };
            if path < required {
                let along_m = self.first_conflict_m(z, a, b, required) * path_m;
                reasons.push((
                    EnvelopeRule::Zone,
                    format!(
                        "the path {} {} {} m from here; go around it",
                        match z.kind {
                            ZoneKind::KeepIn => "leaves",
                            ZoneKind::KeepOut => "crosses",
                        },
                        z.describe(&words()),
                        fmt_m(along_m)
                    ),
                ));
            }
        }
        Verdict::from_reasons(reasons)
    }

    /// Fraction of the path at which it first comes closer than `required` to `z`'s boundary.
    /// Only computed for refusals, so a sampling search is fine.
    fn first_conflict_m(&self, z: &Zone, a: LocalPoint, b: LocalPoint, required: f64) -> f64 {
        if let (Shape::Circle(c), ZoneKind::KeepOut) = (&z.shape, z.kind) {
            return segment_circle_entry(a, b, c.center, c.radius_m + required).unwrap_or(0.0);
        }
        let steps = (a.distance(b).ceil() as usize).clamp(1, 2000);
        let Some(i) =
            (0..=steps).find(|i| z.clearance(a.lerp(b, *i as f64 / steps as f64)) < required)
        else {
            return 0.0;
        };
        // Refine between the last sample that was clear and the first that was not.
        let (mut lo, mut hi) = (
            i.saturating_sub(1) as f64 / steps as f64,
            i as f64 / steps as f64,
        );
        for _ in 0..30 {
            let mid = (lo + hi) / 2.0;
            if z.clearance(a.lerp(b, mid)) < required {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Checks a non-goal action.
    pub fn check_action(&self, action: ActionKind, facts: &VehicleView) -> Verdict {
        let c = &self.config;
        let mut reasons = Vec::new();
        match action {
            ActionKind::Hold | ActionKind::Land | ActionKind::ReturnHome | ActionKind::Disarm => {}
            ActionKind::SetHeading { heading_deg } => {
                if !heading_deg.is_finite() {
                    reasons.push((
                        EnvelopeRule::InvalidTarget,
                        "the heading must be a number of degrees, 0..360".into(),
                    ));
                }
            }
            ActionKind::SetSpeed { speed_m_s } => {
                if !(speed_m_s.is_finite() && speed_m_s > 0.0) {
                    reasons.push((
                        EnvelopeRule::Speed,
                        format!(
                            "the speed must be above 0 and at most {} m/s",
                            fmt_m(c.speed_horizontal_m_s_max)
                        ),
                    ));
                } else if speed_m_s > c.speed_horizontal_m_s_max {
                    reasons.push((
                        EnvelopeRule::Speed,
                        format!(
                            "the speed limit is {} m/s: ask for {} m/s or less",
                            fmt_m(c.speed_horizontal_m_s_max),
                            fmt_m(c.speed_horizontal_m_s_max)
                        ),
                    ));
                }
            }
            ActionKind::Arm | ActionKind::Takeoff { .. } => {
                self.readiness_reasons(facts, &mut reasons);
                if let ActionKind::Takeoff { altitude_m } = action {
                    self.altitude_reasons(altitude_m, &mut reasons);
                }
                if let Some(p) = facts.position {
                    let l = self.frame.to_local(p.point());
                    for z in &self.zones {
                        if z.clearance(l) < self.margin_horizontal_m() {
                            reasons.push((EnvelopeRule::Zone, format!(
                                "the vehicle is not at least {} m inside the envelope: it is {} m from the boundary of {}",
                                fmt_m(self.margin_horizontal_m()),
                                fmt_m(z.clearance(l)),
                                z.describe(&self.margin_words())
                            )));
                        }
                    }
                    if l.norm() > self.target_distance_m_max() {
                        reasons.push((
                            EnvelopeRule::HomeDistance,
                            format!(
                                "the vehicle is {} m from home, beyond the {} m allowed",
                                fmt_m(l.norm()),
                                fmt_m(self.target_distance_m_max())
                            ),
                        ));
                    }
                }
            }
        }
        Verdict::from_reasons(reasons)
    }

    /// Live check of where the vehicle is. O(total vertices); allocates only when it has
    /// something to report.
    pub fn monitor(&self, facts: &VehicleView) -> MonitorVerdict {
        let Some(p) = facts
            .position
            .filter(|p| p.point().is_valid() && p.altitude_m.is_finite())
        else {
            return MonitorVerdict::NoPosition;
        };
        if !facts.position_valid {
            return MonitorVerdict::NoPosition;
        }
        let c = &self.config;
        let l = self.frame.to_local(p.point());
        if p.altitude_m > c.altitude_m_max {
            return MonitorVerdict::Breach {
                what: format!("ceiling {} m", fmt_m(c.altitude_m_max)),
            };
        }
        let home_clearance = c.distance_from_home_m_max - l.norm();
        if home_clearance < 0.0 {
            return MonitorVerdict::Breach {
                what: format!("home cylinder {} m", fmt_m(c.distance_from_home_m_max)),
            };
        }
        // (clearance, index): usize::MAX = ceiling, MAX-1 = home cylinder, MAX-2 = floor.
        let mut nearest: Option<(f64, usize)> = None;
        let mut note = |d: f64, i: usize, margin: f64| {
            if d < margin && nearest.is_none_or(|(best, _)| d < best) {
                nearest = Some((d, i));
            }
        };
        note(
            c.altitude_m_max - p.altitude_m,
            usize::MAX,
            c.margin_vertical_m,
        );
        let margin_m = self.margin_horizontal_m();
        note(home_clearance, usize::MAX - 1, margin_m);
        if facts.landed == Landed::InAir {
            note(
                (p.altitude_m - c.altitude_m_min).max(0.0),
                usize::MAX - 2,
                c.margin_vertical_m,
            );
        }
        for (i, z) in self.zones.iter().enumerate() {
            let d = z.clearance(l);
            if d <= 0.0 {
                return MonitorVerdict::Breach {
                    what: format!("{} `{}`", z.kind, z.name),
                };
            }
            note(d, i, margin_m);
        }
        match nearest {
            None => MonitorVerdict::Inside,
            Some((distance_m, i)) => MonitorVerdict::NearMargin {
                what: match i {
                    usize::MAX => format!("ceiling {} m", fmt_m(c.altitude_m_max)),
                    i if i == usize::MAX - 1 => {
                        format!("home cylinder {} m", fmt_m(c.distance_from_home_m_max))
                    }
                    i if i == usize::MAX - 2 => format!("floor {} m", fmt_m(c.altitude_m_min)),
                    i => self
                        .zones
                        .get(i)
                        .map(|z| format!("{} `{}`", z.kind, z.name))
                        .unwrap_or_default(),
                },
                distance_m,
                floor: i == usize::MAX - 2,
            },
        }
    }

    /// A description for the `get_envelope` tool.
    pub fn summary(&self) -> EnvelopeSummary {
        let c = &self.config;
        let zone = |z: &Zone| {
            let (shape, vertices, center, radius_m) = match &z.shape {
                Shape::Polygon(p) => (
                    "polygon",
                    Some(
                        p.vertices()
                            .iter()
                            .map(|v| {
                                let g = self.frame.to_geo(*v);
                                [g.latitude_deg, g.longitude_deg]
                            })
                            .collect(),
                    ),
                    None,
                    None,
                ),
                Shape::Circle(ci) => {
                    let g = self.frame.to_geo(ci.center);
                    (
                        "circle",
                        None,
                        Some([g.latitude_deg, g.longitude_deg]),
                        Some(ci.radius_m),
                    )
                }
            };
            ZoneSummary {
                name: z.name.clone(),
                kind: z.kind,
                shape: shape.into(),
                polygon_lat_lon_deg: vertices,
                center_lat_lon_deg: center,
                radius_m,
            }
        };
        EnvelopeSummary {
            home_lat_lon_deg: [self.home.latitude_deg, self.home.longitude_deg],
            altitude_m_min: c.altitude_m_min,
            altitude_m_max: c.altitude_m_max,
            target_altitude_m_min: self.target_altitude_m_min(),
            target_altitude_m_max: self.target_altitude_m_max(),
            margin_horizontal_m: self.margin_horizontal_m(),
            margin_horizontal_m_configured: c.margin_horizontal_m,
            margin_speed_m_s: self.margin_speed.speed_m_s,
            margin_speed_source: self.margin_speed.source.to_string(),
            margin_vertical_m: c.margin_vertical_m,
            speed_horizontal_m_s_max: c.speed_horizontal_m_s_max,
            speed_vertical_m_s_max: c.speed_vertical_m_s_max,
            distance_from_home_m_max: c.distance_from_home_m_max,
            target_distance_from_home_m_max: self.target_distance_m_max(),
            battery_reserve_percent: c.battery_reserve_percent,
            gps_fix_type_min: self.gps_fix_min,
            gps_satellites_min: c.gps_satellites_min,
            gps_hdop_max: c.gps_hdop_max,
            stopping_distance_m: stopping_distance_m(c, self.margin_speed.speed_m_s),
            breach_action: c.breach_action,
            breach_hold_s: c.breach_hold_s,
            keep_in: self
                .zones
                .iter()
                .filter(|z| z.kind == ZoneKind::KeepIn)
                .map(zone)
                .collect(),
            keep_out: self
                .zones
                .iter()
                .filter(|z| z.kind == ZoneKind::KeepOut)
                .map(zone)
                .collect(),
        }
    }
}

/// The envelope as the `get_envelope` tool shows it. Altitudes relative to home.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EnvelopeSummary {
    pub home_lat_lon_deg: [f64; 2],
    pub altitude_m_min: f64,
    pub altitude_m_max: f64,
    /// Lowest altitude a goal may target (floor + margin).
    pub target_altitude_m_min: f64,
    /// Highest altitude a goal may target (ceiling − margin).
    pub target_altitude_m_max: f64,
    /// The horizontal margin in force: at least the stopping distance at `margin_speed_m_s`.
    pub margin_horizontal_m: f64,
    /// `envelope.margin_horizontal_m` as configured.
    pub margin_horizontal_m_configured: f64,
    /// The highest horizontal speed the vehicle flies at: the envelope's limit or the
    /// autopilot's own speed read by the pre-flight check, whichever is higher.
    pub margin_speed_m_s: f64,
    /// What set `margin_speed_m_s` (`envelope.speed_horizontal_m_s_max`, `WPNAV_SPEED`, ...).
    pub margin_speed_source: String,
    pub margin_vertical_m: f64,
    pub speed_horizontal_m_s_max: f64,
    pub speed_vertical_m_s_max: f64,
    pub distance_from_home_m_max: f64,
    /// Farthest from home a goal may target (limit − margin).
    pub target_distance_from_home_m_max: f64,
    pub battery_reserve_percent: f64,
    #[schemars(with = "GpsFixSchema")]
    pub gps_fix_type_min: FixType,
    pub gps_satellites_min: u8,
    pub gps_hdop_max: f64,
    /// Stopping distance at `margin_speed_m_s`, which the margin covers.
    pub stopping_distance_m: f64,
    pub breach_action: BreachAction,
    pub breach_hold_s: f64,
    /// The vehicle stays inside all of these.
    pub keep_in: Vec<ZoneSummary>,
    /// The vehicle stays outside all of these.
    pub keep_out: Vec<ZoneSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ZoneSummary {
    pub name: String,
    pub kind: ZoneKind,
    /// `polygon` or `circle`.
    pub shape: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polygon_lat_lon_deg: Option<Vec<[f64; 2]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center_lat_lon_deg: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radius_m: Option<f64>,
}

/// Replaces `current` with `proposed` (already validated by [`Envelope::new`]). While armed
/// the new envelope may only be tighter: every limit at least as strict, every current
/// keep-in containing a new keep-in, every current keep-out inside a new keep-out, same home.
/// The containment tests are conservative: an unchanged zone or one strictly inside passes.
pub fn tighten(
    current: &Envelope,
    proposed: Envelope,
    armed: bool,
) -> Result<Envelope, EnvelopeError> {
    if !armed {
        return Ok(proposed);
    }
    let (c, p) = (&current.config, &proposed.config);
    let widen = |what: String| Err(EnvelopeError::Widening { what });
    let home_shift = current
        .frame
        .to_local(proposed.home.point())
        .distance(LocalPoint::default());
    if home_shift > 0.5 {
        return widen(format!("is centred on a home {home_shift:.1} m away"));
    }
    let looser: [(&str, bool); 12] = [
        ("ceiling", p.altitude_m_max > c.altitude_m_max),
        ("floor", p.altitude_m_min < c.altitude_m_min),
        (
            "horizontal margin",
            p.margin_horizontal_m < c.margin_horizontal_m,
        ),
        ("vertical margin", p.margin_vertical_m < c.margin_vertical_m),
        (
            "horizontal speed limit",
            p.speed_horizontal_m_s_max > c.speed_horizontal_m_s_max,
        ),
        (
            "vertical speed limit",
            p.speed_vertical_m_s_max > c.speed_vertical_m_s_max,
        ),
        (
            "distance from home",
            p.distance_from_home_m_max > c.distance_from_home_m_max,
        ),
        (
            "battery reserve",
            p.battery_reserve_percent < c.battery_reserve_percent,
        ),
        (
            "GPS fix",
            proposed.gps_fix_min.quality() < current.gps_fix_min.quality(),
        ),
        (
            "GPS satellites",
            p.gps_satellites_min < c.gps_satellites_min,
        ),
        ("GPS HDOP", p.gps_hdop_max > c.gps_hdop_max),
        ("breach hold", p.breach_hold_s > c.breach_hold_s),
    ];
    if let Some((what, _)) = looser.iter().find(|(_, looser)| *looser) {
        return widen(format!("loosens the {what}"));
    }
    for old in current.zones.iter().filter(|z| z.kind == ZoneKind::KeepIn) {
        let covered = proposed
            .zones
            .iter()
            .filter(|z| z.kind == ZoneKind::KeepIn)
            .any(|new| shape_within(&new.shape, &old.shape));
        if !covered {
            return widen(format!(
                "has no keep-in inside the current keep-in `{}`",
                old.name
            ));
        }
    }
    for old in current.zones.iter().filter(|z| z.kind == ZoneKind::KeepOut) {
        let covered = proposed
            .zones
            .iter()
            .filter(|z| z.kind == ZoneKind::KeepOut)
            .any(|new| shape_within(&old.shape, &new.shape));
        if !covered {
            return widen(format!(
                "drops or shrinks the current keep-out `{}`",
                old.name
            ));
        }
    }
    Ok(proposed)
}

/// Conservative: true only when `inner` is certainly inside `outer` (or equal to it).
fn shape_within(inner: &Shape, outer: &Shape) -> bool {
    const EPS: f64 = 1e-6;
    match (inner, outer) {
        (Shape::Circle(i), Shape::Circle(o)) => {
            i.center.distance(o.center) + i.radius_m <= o.radius_m + EPS
        }
        (Shape::Polygon(i), Shape::Circle(o)) => {
            i.farthest_vertex_distance(o.center) <= o.radius_m + EPS
        }
        (Shape::Circle(i), Shape::Polygon(o)) => o.signed_distance(i.center) >= i.radius_m - EPS,
        (Shape::Polygon(i), Shape::Polygon(o)) => {
            if i == o {
                return true;
            }
            let strictly_inside = i.vertices().iter().all(|v| o.signed_distance(*v) > EPS);
            let no_crossing = i.vertices().iter().enumerate().all(|(k, a)| {
                let b = i.vertices()[(k + 1) % i.vertices().len()];
                o.segment_boundary_distance(*a, b) > EPS
            });
            strictly_inside && no_crossing
        }
    }
}

/// Metres (or any value) for people: whole numbers without decimals, else up to two.
fn fmt_m(v: f64) -> String {
    if (v - v.round()).abs() < 0.005 {
        format!("{:.0}", v.round())
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;

/// Parameters `t` in [0, 1] where segment `a`–`b` meets edge `p`–`q` (both ends of the
/// overlap when they are collinear).
fn segment_edge_parameters(a: LocalPoint, b: LocalPoint, p: LocalPoint, q: LocalPoint) -> Vec<f64> {
    let (dx, dy) = (b.east_m - a.east_m, b.north_m - a.north_m);
    let (ex, ey) = (q.east_m - p.east_m, q.north_m - p.north_m);
    let (fx, fy) = (p.east_m - a.east_m, p.north_m - a.north_m);
    let denominator = dx * ey - dy * ex;
    let length_squared = dx * dx + dy * dy;
    if length_squared == 0.0 {
        return Vec::new();
    }
    if denominator.abs() <= 1e-12 * length_squared.sqrt() * (ex * ex + ey * ey).sqrt() {
        // Parallel: only a collinear overlap meets; its ends are where the sides may change.
        if (fx * dy - fy * dx).abs() > 1e-9 * length_squared.sqrt() {
            return Vec::new();
        }
        let project = |x: f64, y: f64| (x * dx + y * dy) / length_squared;
        return [project(fx, fy), project(fx + ex, fy + ey)]
            .into_iter()
            .filter(|t| (0.0..=1.0).contains(t))
            .collect();
    }
    let t = (fx * ey - fy * ex) / denominator;
    let u = (fx * dy - fy * dx) / denominator;
    if (0.0..=1.0).contains(&t) && (-1e-12..=1.0 + 1e-12).contains(&u) {
        vec![t]
    } else {
        Vec::new()
    }
}

// The schema of `gps_fix_type_min`: the fix types it can be (`check_config` refuses the
// others), under the name and words `get_envelope`'s output schema has always had.
/// GPS fix quality, ordered.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "GpsFix")]
#[allow(dead_code)]
enum GpsFixSchema {
    NoGps,
    NoFix,
    #[serde(rename = "2d_fix")]
    Fix2d,
    #[serde(rename = "3d_fix")]
    Fix3d,
    Dgps,
    RtkFloat,
    RtkFixed,
}
