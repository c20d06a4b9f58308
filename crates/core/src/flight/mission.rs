//! Missions as an operator or a model describes them ([`MissionStep`], [`MissionEnd`]),
//! turned into the autopilot's items ([`build_items`]), and any mission list read back into
//! a [`Route`] whose every point and leg the envelope checks before anything flies it
//! ([`check_route`]). Sans-IO.
//!
//! One check for both directions: the items the daemon builds are read back with
//! [`route`] exactly as a list downloaded from the autopilot (a ground station's upload) is,
//! so what is checked is what the autopilot will fly, not what the caller said.
//!
//! The dialects differ in the home slot (ArduPilot's index 0, added and removed by
//! `vehicle::mission`, not here) and in the camera item: ArduPilot triggers with
//! `DO_DIGICAM_CONTROL` (param5 = 1 shoots; `AP_Mission::start_command_camera`), PX4 with
//! `IMAGE_START_CAPTURE` (param3 = 1 image; `navigator/mission_block.cpp` hands it to the
//! camera manager).

#![allow(deprecated)] // the *_INT frames: what both autopilots take in mission items

use serde::{Deserialize, Serialize};

use crate::geodesy::{self as geo, GeoPosition};
use crate::link::dialect::{MavCmd, MavFrame};
use crate::safety::envelope::{Envelope, GoalRequest, VehicleView, Verdict};
use crate::vehicle::mission::MissionItem;
use crate::vehicle::snapshot::AutopilotKind;

use super::action::{ALTITUDE_M_MAX, SPEED_M_S_MAX, SPEED_M_S_MIN};

/// Most steps one mission may have (the mission protocol's own limit is higher; an LLM's
/// context and a field survey are far below this).
pub const STEPS_MAX: usize = 1000;
/// Longest loiter at one waypoint.
pub const LOITER_S_MAX: f64 = 3600.0;

/// One step of a mission, in the words of `upload_mission`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MissionStep {
    /// Fly to a point; altitude in metres above home.
    Waypoint {
        latitude_deg: f64,
        longitude_deg: f64,
        altitude_m: f64,
        /// Seconds to stay there before the next step (default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loiter_s: Option<f64>,
        /// Take a photo on arrival (default false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        photo: bool,
    },
    /// The horizontal speed of the following legs, m/s (at most the envelope's limit).
    Speed { speed_m_s: f64 },
    /// Take a photo where the vehicle is (after the previous waypoint).
    Photo,
}

/// What the vehicle does after the last step.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MissionEnd {
    /// Stay at the last waypoint (ArduCopter holds in AUTO, PX4 loiters).
    #[default]
    Hold,
    /// Land at the last waypoint.
    Land,
    /// Fly home and land (the autopilot's return).
    ReturnHome,
}

/// Checks the numbers of a mission as the tool schema states them; the refusal names the
/// step (numbered from 0) and says what would be accepted.
pub fn validate(steps: &[MissionStep]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("a mission needs at least one waypoint".into());
    }
    if steps.len() > STEPS_MAX {
        return Err(format!(
            "{} steps is more than the {STEPS_MAX} a mission may have",
            steps.len()
        ));
    }
    let within = |i: usize, name: &str, v: f64, min: f64, max: f64, unit: &str| {
        if v.is_finite() && (min..=max).contains(&v) {
            Ok(())
        } else {
            Err(format!(
                "step {i}: {name} must be between {min} and {max} {unit}; got {v}"
            ))
        }
    };
    let mut waypoints = 0;
    for (i, step) in steps.iter().enumerate() {
        match *step {
            MissionStep::Waypoint {
                latitude_deg,
                longitude_deg,
                altitude_m,
                loiter_s,
                ..
            } => {
                waypoints += 1;
                within(i, "latitude_deg", latitude_deg, -90.0, 90.0, "degrees")?;
                within(i, "longitude_deg", longitude_deg, -180.0, 180.0, "degrees")?;
                // A waypoint at 0 m above home would fly into the ground on the way.
                within(
                    i,
                    "altitude_m",
                    altitude_m,
                    1.0,
                    ALTITUDE_M_MAX,
                    "m above home",
                )?;
                if let Some(s) = loiter_s {
                    within(i, "loiter_s", s, 0.0, LOITER_S_MAX, "s")?;
                }
            }
            MissionStep::Speed { speed_m_s } => {
                within(
                    i,
                    "speed_m_s",
                    speed_m_s,
                    SPEED_M_S_MIN,
                    SPEED_M_S_MAX,
                    "m/s",
                )?;
            }
            MissionStep::Photo => {}
        }
    }
    if waypoints == 0 {
        return Err("a mission needs at least one waypoint".into());
    }
    Ok(())
}

fn degrees_e7(degrees: f64) -> i32 {
    (degrees * 1e7).round() as i32
}

fn item(command: MavCmd, params: [f32; 4], x: i32, y: i32, z: f32) -> MissionItem {
    MissionItem {
        command,
        frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
        params,
        x,
        y,
        z,
        autocontinue: true,
    }
}

/// The camera item of `autopilot`'s dialect.
fn photo_item(autopilot: AutopilotKind) -> MissionItem {
    let mut photo = match autopilot {
        // DO_DIGICAM_CONTROL: param5 (x in an item) = 1 shoots.
        AutopilotKind::Ardupilot => item(MavCmd::MAV_CMD_DO_DIGICAM_CONTROL, [0.0; 4], 1, 0, 0.0),
        // IMAGE_START_CAPTURE: param2 interval 0, param3 one image.
        _ => item(
            MavCmd::MAV_CMD_IMAGE_START_CAPTURE,
            [0.0, 0.0, 1.0, 0.0],
            0,
            0,
            0.0,
        ),
    };
    photo.frame = MavFrame::MAV_FRAME_MISSION;
    photo
}

/// The autopilot's items for a validated mission (numbered from 0: the home slot is the
/// mission protocol's business). Waypoints are relative to home (`GLOBAL_RELATIVE_ALT_INT`,
/// which both firmwares take); a loiter is `NAV_LOITER_TIME`; a speed `DO_CHANGE_SPEED`
/// (ground speed); the end a `NAV_LAND` at the last waypoint or `NAV_RETURN_TO_LAUNCH`.
pub fn build_items(
    steps: &[MissionStep],
    end: MissionEnd,
    autopilot: AutopilotKind,
) -> Vec<MissionItem> {
    let mut items = Vec::with_capacity(steps.len() + 1);
    let mut last = None;
    for step in steps {
        match *step {
            MissionStep::Waypoint {
                latitude_deg,
                longitude_deg,
                altitude_m,
                loiter_s,
                photo,
            } => {
                let (x, y) = (degrees_e7(latitude_deg), degrees_e7(longitude_deg));
                let loiter = loiter_s.unwrap_or(0.0);
                items.push(if loiter > 0.0 {
                    item(
                        MavCmd::MAV_CMD_NAV_LOITER_TIME,
                        [loiter as f32, 0.0, 0.0, 0.0],
                        x,
                        y,
                        altitude_m as f32,
                    )
                } else {
                    item(
                        MavCmd::MAV_CMD_NAV_WAYPOINT,
                        [0.0; 4],
                        x,
                        y,
                        altitude_m as f32,
                    )
                });
                if photo {
                    items.push(photo_item(autopilot));
                }
                last = Some((x, y));
            }
            MissionStep::Speed { speed_m_s } => {
                let mut speed = item(
                    MavCmd::MAV_CMD_DO_CHANGE_SPEED,
                    [1.0, speed_m_s as f32, -1.0, 0.0],
                    0,
                    0,
                    0.0,
                );
                speed.frame = MavFrame::MAV_FRAME_MISSION;
                items.push(speed);
            }
            MissionStep::Photo => items.push(photo_item(autopilot)),
        }
    }
    match (end, last) {
        (MissionEnd::Land, Some((x, y))) => {
            items.push(item(MavCmd::MAV_CMD_NAV_LAND, [0.0; 4], x, y, 0.0));
        }
        (MissionEnd::ReturnHome, _) => items.push(item(
            MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH,
            [0.0; 4],
            0,
            0,
            0.0,
        )),
        _ => {}
    }
    items
}

/// One point the vehicle flies to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RoutePoint {
    /// The item's index (from 0, without ArduPilot's home slot).
    pub item: u16,
    /// `waypoint`, `loiter`, `takeoff`, `land`.
    pub kind: &'static str,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Above home.
    pub altitude_m: f64,
    /// The horizontal speed the leg to it is flown at, when an item set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_m_s: Option<f64>,
}

/// A mission list as the vehicle will fly it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, schemars::JsonSchema)]
pub struct Route {
    pub points: Vec<RoutePoint>,
    /// Items in the list.
    pub items: u16,
    /// The camera items.
    pub photos: u16,
    /// It ends with the autopilot's return (home and land).
    pub returns_home: bool,
    /// It ends on the ground (a land item or the return).
    pub lands: bool,
    /// The last item the vehicle reports reached (`MISSION_ITEM_REACHED`) before it holds
    /// at the end; `None` when it ends with the return (no item reached is reported).
    pub last_reached: Option<u16>,
    /// Horizontal length from the first point to the last, metres.
    pub length_m: f64,
}

impl Route {
    /// Horizontal distance from `from` through the points from `item` on, metres.
    pub fn remaining_m(&self, from: (f64, f64), item: u16) -> f64 {
        let mut total = 0.0;
        let mut at = from;
        for p in self.points.iter().filter(|p| p.item >= item) {
            total += geo::distance_m(at.0, at.1, p.latitude_deg, p.longitude_deg);
            at = (p.latitude_deg, p.longitude_deg);
        }
        total
    }
}

/// Items that do not move the vehicle and need no check (cameras, delays).
const PASSIVE: &[MavCmd] = &[
    MavCmd::MAV_CMD_DO_DIGICAM_CONTROL,
    MavCmd::MAV_CMD_IMAGE_START_CAPTURE,
    MavCmd::MAV_CMD_IMAGE_STOP_CAPTURE,
    MavCmd::MAV_CMD_DO_SET_CAM_TRIGG_DIST,
    MavCmd::MAV_CMD_CONDITION_DELAY,
];

/// Reads a mission list (the caller's numbering) into the route it flies. `home_msl_m` turns
/// above-sea-level altitudes into above-home ones. A list the daemon cannot judge (a jump,
/// terrain-relative altitudes, an item it does not know) is refused with the item named:
/// what cannot be checked is not flown.
pub fn route(items: &[MissionItem], home_msl_m: Option<f64>) -> Result<Route, String> {
    let mut r = Route {
        items: items.len().min(usize::from(u16::MAX)) as u16,
        ..Route::default()
    };
    let mut speed = None;
    let mut prev: Option<RoutePoint> = None;
    for (i, it) in items.iter().enumerate() {
        let index = i as u16;
        if r.returns_home {
            return Err(format!(
                "item {index} ({:?}) comes after the return home, which ends the mission; \
                 remove it",
                it.command
            ));
        }
        if PASSIVE.contains(&it.command) {
            if matches!(
                it.command,
                MavCmd::MAV_CMD_DO_DIGICAM_CONTROL | MavCmd::MAV_CMD_IMAGE_START_CAPTURE
            ) {
                r.photos += 1;
            }
            continue;
        }
        let kind = match it.command {
            MavCmd::MAV_CMD_DO_CHANGE_SPEED => {
                let s = f64::from(it.params[1]);
                if s > 0.0 {
                    speed = Some(s);
                }
                continue;
            }
            MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH => {
                r.returns_home = true;
                r.lands = true;
                continue;
            }
            MavCmd::MAV_CMD_NAV_WAYPOINT => "waypoint",
            MavCmd::MAV_CMD_NAV_LOITER_TIME => "loiter",
            MavCmd::MAV_CMD_NAV_TAKEOFF => "takeoff",
            MavCmd::MAV_CMD_NAV_LAND => "land",
            other => {
                return Err(format!(
                    "item {index} is {other:?}, which the daemon cannot check against the \
                     envelope; a mission it runs holds only waypoints, loiters, takeoff, \
                     land, return, speed changes and camera triggers"
                ));
            }
        };
        let altitude_m = match it.frame {
            MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT
            | MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT => f64::from(it.z),
            MavFrame::MAV_FRAME_GLOBAL | MavFrame::MAV_FRAME_GLOBAL_INT => match home_msl_m {
                Some(home) => f64::from(it.z) - home,
                None => {
                    return Err(format!(
                        "item {index} has an altitude above sea level, and home's is not \
                         known yet; wait for home or use altitudes above home"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "item {index} is in frame {other:?}, which the daemon cannot check \
                     against the ceiling and floor; use altitudes above home"
                ));
            }
        };
        // 0/0 is "where the vehicle is" for both firmwares (takeoff and land in place).
        let here = it.x == 0 && it.y == 0;
        let (lat, lon) = match (here, prev) {
            (false, _) => (f64::from(it.x) * 1e-7, f64::from(it.y) * 1e-7),
            (true, Some(p)) => (p.latitude_deg, p.longitude_deg),
            (true, None) if kind == "takeoff" || kind == "land" => {
                // Straight up or down from where the vehicle is when the mission starts:
                // the vehicle's leg to the next point is checked from its own position.
                if kind == "land" {
                    r.lands = true;
                }
                continue;
            }
            (true, None) => {
                return Err(format!(
                    "item {index} ({kind}) has no position (latitude and longitude 0)"
                ));
            }
        };
        let altitude_m = match (kind, prev) {
            // A land item descends from where it is flown to; its leg is at that altitude.
            ("land", Some(p)) => p.altitude_m,
            _ => altitude_m,
        };
        if kind == "land" {
            r.lands = true;
        }
        let point = RoutePoint {
            item: index,
            kind,
            latitude_deg: lat,
            longitude_deg: lon,
            altitude_m,
            speed_m_s: speed,
        };
        if let Some(p) = prev {
            r.length_m += geo::distance_m(p.latitude_deg, p.longitude_deg, lat, lon);
        }
        r.points.push(point);
        prev = Some(point);
        r.last_reached = Some(index);
    }
    if r.returns_home {
        r.last_reached = None;
    }
    if r.points.is_empty() && !r.returns_home {
        return Err("the mission has no waypoint to fly to".into());
    }
    Ok(r)
}

/// Checks every point and every leg of `route` against the envelope, beginning with the
/// leg from the vehicle (`from`) to the first point at or after `from_item`: the same check
/// a goto's target and path get, leg by leg. The refusal names the item and the leg (both
/// ends) and says what would be allowed.
pub fn check_route(
    envelope: &Envelope,
    facts: &VehicleView,
    from: GeoPosition,
    route: &Route,
    from_item: u16,
) -> Result<(), String> {
    let mut leg_from = (None::<RoutePoint>, from);
    for p in route.points.iter().filter(|p| p.item >= from_item) {
        let to = GeoPosition {
            latitude_deg: p.latitude_deg,
            longitude_deg: p.longitude_deg,
            altitude_m: p.altitude_m,
        };
        let goal = GoalRequest {
            from: leg_from.1,
            to,
            speed_m_s: p.speed_m_s,
        };
        if let Verdict::Refused(refusal) = envelope.check_goal(&goal, facts) {
            let start = match leg_from.0 {
                Some(q) => format!("item {} {}", q.item, place(&leg_from.1)),
                None => format!("the vehicle {}", place(&leg_from.1)),
            };
            return Err(format!(
                "item {} ({} {}), the leg from {start} to it: {}",
                p.item,
                p.kind,
                place(&to),
                refusal.message
            ));
        }
        leg_from = (Some(*p), to);
    }
    Ok(())
}

fn place(p: &GeoPosition) -> String {
    format!(
        "at {:.6}, {:.6}, {:.1} m above home",
        p.latitude_deg, p.longitude_deg, p.altitude_m
    )
}

#[cfg(test)]
mod tests;
