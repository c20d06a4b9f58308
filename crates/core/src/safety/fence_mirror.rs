//! The onboard envelope mirrored into the autopilot's own fence (issue 18), sans-IO: what to
//! upload (`plan`) and whether what the autopilot holds is that (`compare`).
//!
//! The autopilot's fence is the last line of defence when the companion is gone, so it is the
//! envelope's hard boundary, not the boundary less the margins: the daemon's own monitor fires
//! at the margin first, the autopilot's fence only if the daemon did not.
//!
//! # What becomes what
//! - Each keep-in polygon: `MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION` items, one per vertex,
//!   param1 = the vertex count (the same on every vertex), param2 = inclusion group 0.
//!   Both autopilots require the vehicle inside every inclusion zone, as the envelope does:
//!   ArduPilot without `FENCE_OPTIONS` bit 2 (`INCLUSION_UNION`, `AC_PolyFence_loader`), PX4
//!   always (`Geofence::isInsidePolygonOrCircle`, `navigator/geofence.cpp`, ANDs every zone).
//! - Each keep-in circle: `MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION`, param1 = radius in metres.
//! - Keep-out polygons and circles: the `_EXCLUSION` items likewise.
//! - The altitude ceiling: ArduPilot `FENCE_ALT_MAX` (`FENCE_TYPE` bit 0), PX4
//!   `GF_MAX_VER_DIST`, both metres above home as the envelope's ceiling is.
//! - The home cylinder: ArduPilot `FENCE_RADIUS` (`FENCE_TYPE` bit 1), PX4 `GF_MAX_HOR_DIST`.
//! - ArduPilot `FENCE_ENABLE` 1, `FENCE_TYPE` (bit 2 only when there are zones: a polygon
//!   type with no polygon stored fails its pre-arm check), `FENCE_ACTION` 1 (RTL, or land when
//!   RTL is not possible) or 2 (land); PX4 `GF_ACTION` 3 (Return) or 5 (Land).
//!
//! Items are in `MAV_FRAME_GLOBAL` with altitude 0 (unused by both for fence items); PX4
//! accepts only the global frames for fence vertices (`Geofence::insidePolygon`).
//! The altitude floor is not mirrored: a floor above the ground breaches at every take-off.

use crate::link::dialect::{MavCmd, MavFrame};
use crate::vehicle::mission::MissionItem;
use crate::vehicle::modes::AutopilotKind;

pub use super::envelope_config::FenceAction;
use super::envelope_config::{EnvelopeConfig, ZoneConfig};

/// One parameter the mirror writes, in firmware units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FenceParam {
    pub name: &'static str,
    pub value: f64,
}

/// What the mirror uploads: the fence list (mission type FENCE) and the fence parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FencePlan {
    pub items: Vec<MissionItem>,
    pub params: Vec<FenceParam>,
}

/// How many zones of each kind a fence list holds (for the status and the differences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, schemars::JsonSchema)]
pub struct FenceCounts {
    pub inclusion_polygons: usize,
    pub exclusion_polygons: usize,
    pub inclusion_circles: usize,
    pub exclusion_circles: usize,
}

/// Every parameter the mirror may write, of either firmware: the one sanctioned write of
/// fence parameters (`Whitelist::check_fence_mirror`).
pub const MIRROR_PARAMS: &[&str] = &[
    "FENCE_ENABLE",
    "FENCE_TYPE",
    "FENCE_ALT_MAX",
    "FENCE_RADIUS",
    "FENCE_ACTION",
    "GF_ACTION",
    "GF_MAX_HOR_DIST",
    "GF_MAX_VER_DIST",
];

/// Most vertices in one polygon: ArduPilot stores the count in a byte
/// (`AC_PolyFence_loader`, "vertex count > 255" refused).
pub const POLYGON_VERTICES_MAX: usize = 255;

// ArduPilot's documented ranges (`AC_Fence.cpp` parameter table): a value outside them is
// taken but the ground stations warn; the mirror keeps to them and the fence is then wider
// than the envelope, never narrower than it would hold.
const AP_ALT_MAX_RANGE_M: (f64, f64) = (10.0, 1000.0);
const AP_RADIUS_RANGE_M: (f64, f64) = (30.0, 10000.0);
// PX4 `geofence_params.c`: GF_MAX_HOR_DIST 0..10000, GF_MAX_VER_DIST 0..1000 (0 disables).
const PX4_HOR_RANGE_M: (f64, f64) = (1.0, 10000.0);
const PX4_VER_RANGE_M: (f64, f64) = (1.0, 1000.0);

/// Parameters read back within this of what was written count as equal (PARAM_VALUE is a
/// float; integers travel bytewise or as floats and come back exact).
const PARAM_TOLERANCE: f64 = 1e-3;
/// Vertices within this many 1e-7° (about 2 cm) count as equal: the legacy float item
/// rounds latitude and longitude through an f32.
const POSITION_TOLERANCE_E7: i64 = 2;
/// Radii within this many metres count as equal.
const RADIUS_TOLERANCE_M: f64 = 0.01;

/// The fence for `kind` from the envelope section in force, or why it cannot be mirrored.
pub fn plan(
    config: &EnvelopeConfig,
    kind: AutopilotKind,
    action: FenceAction,
) -> Result<FencePlan, String> {
    let mut items = Vec::new();
    for zone in &config.keep_in {
        zone_items(zone, true, &mut items)?;
    }
    for zone in &config.keep_out {
        zone_items(zone, false, &mut items)?;
    }
    if items.len() > usize::from(crate::vehicle::mission::ITEMS_MAX) {
        return Err(format!(
            "the envelope's zones make {} fence items; at most {} can be uploaded",
            items.len(),
            crate::vehicle::mission::ITEMS_MAX
        ));
    }
    let clamp = |v: f64, (lo, hi): (f64, f64)| v.clamp(lo, hi);
    let p = |name, value| FenceParam { name, value };
    let params = match kind {
        AutopilotKind::Ardupilot => {
            let zones = !items.is_empty();
            let types = 1 | 2 | if zones { 4 } else { 0 };
            vec![
                p(
                    "FENCE_ALT_MAX",
                    clamp(config.altitude_m_max, AP_ALT_MAX_RANGE_M),
                ),
                p(
                    "FENCE_RADIUS",
                    clamp(config.distance_from_home_m_max, AP_RADIUS_RANGE_M),
                ),
                p("FENCE_TYPE", f64::from(types)),
                p(
                    "FENCE_ACTION",
                    match action {
                        FenceAction::ReturnHome => 1.0,
                        FenceAction::Land => 2.0,
                    },
                ),
                // Last: the fence is switched on only once what it enforces is in place.
                p("FENCE_ENABLE", 1.0),
            ]
        }
        AutopilotKind::Px4 => vec![
            p(
                "GF_MAX_VER_DIST",
                clamp(config.altitude_m_max, PX4_VER_RANGE_M),
            ),
            p(
                "GF_MAX_HOR_DIST",
                clamp(config.distance_from_home_m_max, PX4_HOR_RANGE_M),
            ),
            p(
                "GF_ACTION",
                match action {
                    FenceAction::ReturnHome => 3.0,
                    FenceAction::Land => 5.0,
                },
            ),
        ],
        AutopilotKind::Other => {
            return Err(
                "the autopilot is neither ArduPilot nor PX4: its fence parameters are \
                 unknown, nothing is mirrored"
                    .into(),
            );
        }
    };
    Ok(FencePlan { items, params })
}

fn zone_items(
    zone: &ZoneConfig,
    inclusion: bool,
    items: &mut Vec<MissionItem>,
) -> Result<(), String> {
    let e7 = |deg: f64| (deg * 1e7).round() as i32;
    if let Some(vertices) = &zone.polygon_lat_lon_deg {
        if vertices.len() < 3 || vertices.len() > POLYGON_VERTICES_MAX {
            return Err(format!(
                "zone `{}` has {} vertices; the autopilot's fence takes 3 to {POLYGON_VERTICES_MAX}",
                zone.name,
                vertices.len()
            ));
        }
        let command = if inclusion {
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
        } else {
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
        };
        for [lat, lon] in vertices {
            items.push(item(command, vertices.len() as f32, e7(*lat), e7(*lon)));
        }
        return Ok(());
    }
    match (zone.center_lat_lon_deg, zone.radius_m) {
        (Some([lat, lon]), Some(radius_m)) if radius_m > 0.0 && radius_m.is_finite() => {
            let command = if inclusion {
                MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
            } else {
                MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
            };
            items.push(item(command, radius_m as f32, e7(lat), e7(lon)));
            Ok(())
        }
        _ => Err(format!(
            "zone `{}` is neither a polygon nor a circle with a positive radius",
            zone.name
        )),
    }
}

fn item(command: MavCmd, param1: f32, x: i32, y: i32) -> MissionItem {
    MissionItem {
        command,
        frame: MavFrame::MAV_FRAME_GLOBAL,
        params: [param1, 0.0, 0.0, 0.0],
        x,
        y,
        z: 0.0,
        autocontinue: false,
    }
}

/// The zones a fence list holds, by kind; vertices of one polygon count once.
pub fn counts(items: &[MissionItem]) -> FenceCounts {
    let mut counts = FenceCounts::default();
    let mut i = 0;
    while i < items.len() {
        let it = &items[i];
        let step = match it.command {
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION => {
                counts.inclusion_polygons += 1;
                vertex_step(it)
            }
            MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION => {
                counts.exclusion_polygons += 1;
                vertex_step(it)
            }
            MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION => {
                counts.inclusion_circles += 1;
                1
            }
            MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION => {
                counts.exclusion_circles += 1;
                1
            }
            _ => 1,
        };
        i = i.saturating_add(step);
    }
    counts
}

/// How many items a polygon's first vertex says the polygon has (at least 1, so a corrupt
/// count cannot loop).
fn vertex_step(item: &MissionItem) -> usize {
    let n = item.params[0];
    if n.is_finite() && n >= 1.0 {
        (n as usize).max(1)
    } else {
        1
    }
}

/// What differs between the plan and what the autopilot holds (its fence list as downloaded
/// and its parameters as read, `None` when unread); empty when they match item by item
/// within the tolerances.
pub fn compare(
    plan: &FencePlan,
    items: &[MissionItem],
    param: &dyn Fn(&str) -> Option<f64>,
) -> Vec<String> {
    let mut differences = Vec::new();
    let have = counts(items);
    let want = counts(&plan.items);
    let kinds = [
        (
            "inclusion polygons",
            have.inclusion_polygons,
            want.inclusion_polygons,
        ),
        (
            "exclusion polygons",
            have.exclusion_polygons,
            want.exclusion_polygons,
        ),
        (
            "inclusion circles",
            have.inclusion_circles,
            want.inclusion_circles,
        ),
        (
            "exclusion circles",
            have.exclusion_circles,
            want.exclusion_circles,
        ),
    ];
    for (what, have, want) in kinds {
        if have != want {
            differences.push(format!(
                "autopilot fence has {have} {what}; envelope has {want}"
            ));
        }
    }
    if items.len() != plan.items.len() {
        differences.push(format!(
            "autopilot fence has {} items; envelope needs {}",
            items.len(),
            plan.items.len()
        ));
    } else {
        for (seq, (have, want)) in items.iter().zip(&plan.items).enumerate() {
            if let Some(d) = item_difference(have, want) {
                differences.push(format!("fence item {seq}: {d}"));
            }
        }
    }
    for p in &plan.params {
        match param(p.name) {
            None => differences.push(format!("{} not read from the autopilot", p.name)),
            Some(v) if (v - p.value).abs() > PARAM_TOLERANCE * p.value.abs().max(1.0) => {
                differences.push(format!("{} is {v}; envelope needs {}", p.name, p.value))
            }
            Some(_) => {}
        }
    }
    differences
}

fn item_difference(have: &MissionItem, want: &MissionItem) -> Option<String> {
    if have.command != want.command {
        return Some(format!(
            "{:?} where {:?} was uploaded",
            have.command, want.command
        ));
    }
    if !crate::vehicle::mission::frame_is_global(have.frame) {
        return Some(format!("frame {:?} is not global", have.frame));
    }
    let far = |a: i32, b: i32| (i64::from(a) - i64::from(b)).abs() > POSITION_TOLERANCE_E7;
    if far(have.x, want.x) || far(have.y, want.y) {
        return Some(format!(
            "at {:.7}, {:.7}; envelope has {:.7}, {:.7}",
            f64::from(have.x) / 1e7,
            f64::from(have.y) / 1e7,
            f64::from(want.x) / 1e7,
            f64::from(want.y) / 1e7
        ));
    }
    let (h, w) = (f64::from(have.params[0]), f64::from(want.params[0]));
    let circle = matches!(
        want.command,
        MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
    );
    // A NaN radius read back is a difference too.
    let radius_equal = (h - w).abs() <= RADIUS_TOLERANCE_M;
    if circle && !radius_equal {
        return Some(format!("radius {h} m; envelope has {w} m"));
    }
    if !circle && h.round() != w.round() {
        return Some(format!("polygon of {h} vertices; envelope has {w}"));
    }
    None
}

#[cfg(test)]
mod tests;
