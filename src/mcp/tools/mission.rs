//! The mission family: `upload_mission`, `get_mission`, `start_mission`, `pause_mission`,
//! `resume_mission`, `clear_mission`, and `plan_survey` (a lawnmower over a polygon, for
//! review, uploaded only when asked).
//!
//! Missions are described in an LLM's terms ([`MissionStep`]: waypoints with altitude above
//! home, speeds, loiters, photos; [`MissionEnd`]); the loop builds the autopilot's items for
//! the dialect heard and checks every point and leg against the envelope before anything is
//! sent (`daemon::core::mission`). Whatever the autopilot holds (a ground station's upload
//! too) is downloaded and checked before `start_mission` or `resume_mission` flies it, and
//! the run is a job like a goto: one generic [`flight::fly`] with its progress, its end, the
//! e-stop, the breach monitor and the lease.

use rmcp::model::CallToolResult;

use super::call::{ToolCall, ToolFuture, answer, no_args, parse};
use super::{Handler, Hints, ToolEntry, flight, no_arguments};
use crate::auth::permissions::Permission;
use crate::control::ControlClient;
use crate::control::mission::{MissionAnswer, MissionAsk};
use crate::flight::Action;
use crate::flight::mission::{MissionEnd, MissionStep, Route, RoutePoint};
use crate::mcp::errors::{structured, tool_error};
use crate::mcp::schema;

pub const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "upload_mission",
        title: "Upload a mission",
        description: "Replaces the autopilot's mission with `steps` in order: `waypoint` \
            (latitude_deg, longitude_deg, altitude_m above home; optional loiter_s to wait \
            there and photo: true to take a picture on arrival), `speed` (speed_m_s of the \
            following legs), `photo` (a picture where the vehicle is); then `end`: `hold` \
            (default: stay at the last waypoint), `land` (at the last waypoint) or \
            `return_home`. Before anything is sent every waypoint and every leg, from the \
            vehicle to the first waypoint on, is checked against the safety envelope as a \
            goto is; a refusal names the item and the leg and says what would be allowed. \
            Does not fly: start_mission does. Needs the control lease.",
        input_schema: schema::input::<UploadArgs>,
        output_schema: compact_output::<UploadResult>,
        permission: Permission::MOTION,
        hints: Hints {
            idempotent: true,
            ..Hints::MOTION
        },
        needs_camera: false,
        handler: Handler::Prepared(upload_mission),
    },
    ToolEntry {
        name: "get_mission",
        title: "Read the autopilot's mission",
        description: "Downloads the mission the autopilot holds now (whoever uploaded it), \
            with its waypoints (item index, latitude, longitude, altitude above home), \
            length, the current item and whether start_mission would accept it: every leg \
            checked against the safety envelope from where the vehicle is. Read-only.",
        input_schema: no_arguments,
        output_schema: compact_output::<GetResult>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: false,
        handler: Handler::Run(get_mission),
    },
    ToolEntry {
        name: "start_mission",
        title: "Fly the mission",
        description: "Flies the autopilot's mission from its first item (AUTO), in the air \
            only (take off first). The mission is downloaded and checked against the safety \
            envelope first, whoever uploaded it. Reports progress (item of total, distance \
            to go) and ends when the mission is complete (last waypoint reached, or landed \
            and disarmed when it ends with land or return_home). pause_mission holds; the \
            e-stop, the envelope's breach monitor and the lease apply as during a goto. \
            Takes no arguments.",
        input_schema: no_arguments,
        output_schema: flight::result_schema,
        permission: Permission::MOTION,
        hints: Hints::MOTION,
        needs_camera: false,
        handler: Handler::Prepared(start_mission),
    },
    ToolEntry {
        name: "pause_mission",
        title: "Pause the mission",
        description: "Holds the vehicle where it is, keeping the mission's current item \
            (resume_mission goes on from there). Ends the running start_mission call. Takes \
            no arguments.",
        input_schema: no_arguments,
        output_schema: flight::result_schema,
        permission: Permission::MOTION_TOWARDS_SAFETY,
        hints: Hints::MOTION,
        needs_camera: false,
        handler: Handler::Motion(|tool, args| no_args(args, tool).map(|()| Action::PauseMission)),
    },
    ToolEntry {
        name: "resume_mission",
        title: "Resume the mission",
        description: "Goes on with the mission from its current item, after the mission \
            is downloaded and checked against the safety envelope again (from where the \
            vehicle is to the current item, then every leg after it). Reports progress and \
            ends as start_mission does. Takes no arguments.",
        input_schema: no_arguments,
        output_schema: flight::result_schema,
        permission: Permission::MOTION,
        hints: Hints::MOTION,
        needs_camera: false,
        handler: Handler::Prepared(resume_mission),
    },
    ToolEntry {
        name: "clear_mission",
        title: "Clear the mission",
        description: "Removes the mission from the autopilot (not while one is flown: pause \
            or land first). Takes no arguments.",
        input_schema: no_arguments,
        output_schema: schema::output::<ClearResult>,
        permission: Permission::MOTION,
        hints: Hints::MOTION,
        needs_camera: false,
        handler: Handler::Prepared(clear_mission),
    },
    ToolEntry {
        name: "plan_survey",
        title: "Plan a survey",
        description: "Plans a photo survey of a field: `polygon` (at least 3 [latitude, \
            longitude] vertices), `altitude_m` above home, forward_overlap and side_overlap \
            (fractions, default 0.7 and 0.6) and the camera's horizontal_fov_deg and \
            vertical_fov_deg (default 73.7 and 53.1, a 24 mm-equivalent lens) become a \
            lawnmower of photo waypoints inside the polygon (lines along its longest edge). \
            Returns it for review: the steps (ready for upload_mission), line count, spacing, \
            length and the estimated time at `speed_m_s` (default the envelope's limit). \
            Moves nothing and uploads nothing unless `upload: true`, which needs the OPERATOR \
            role and the control lease and is checked against the envelope like \
            upload_mission.",
        input_schema: schema::input::<SurveyArgs>,
        output_schema: compact_output::<SurveyResult>,
        permission: Permission::READ,
        // Not read-only: `upload: true` replaces the autopilot's mission.
        hints: Hints::CHANGE,
        needs_camera: false,
        handler: Handler::Run(plan_survey),
    },
];

/// Arguments of `plan_survey`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SurveyArgs {
    /// The field: [latitude, longitude] in degrees, 3 to 100 vertices.
    polygon: Vec<[f64; 2]>,
    /// Above home, metres.
    altitude_m: f64,
    /// Overlap of consecutive photos along a line, 0 to 0.95 (default 0.7).
    forward_overlap: Option<f64>,
    /// Overlap of neighbouring lines, 0 to 0.95 (default 0.6).
    side_overlap: Option<f64>,
    /// The camera's field of view across the track, degrees (default 73.7).
    horizontal_fov_deg: Option<f64>,
    /// The camera's field of view along the track, degrees (default 53.1).
    vertical_fov_deg: Option<f64>,
    /// Speed of the survey legs, m/s (default: the envelope's limit).
    speed_m_s: Option<f64>,
    /// After the last line (default `return_home`).
    end: Option<MissionEnd>,
    /// Upload it at once (default false: for review only).
    #[serde(default)]
    upload: bool,
}

/// Result of `plan_survey`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct SurveyResult {
    message: String,
    /// The mission, ready for upload_mission's `steps`.
    steps: Vec<MissionStep>,
    end: MissionEnd,
    lines: usize,
    waypoints: usize,
    line_spacing_m: f64,
    photo_spacing_m: f64,
    footprint_across_m: f64,
    footprint_along_m: f64,
    length_m: f64,
    speed_m_s: Option<f64>,
    /// The survey's length at the speed, turns and photos not counted.
    estimated_duration_s: Option<f64>,
    /// What upload_mission answered, with `upload: true`.
    uploaded: Option<serde_json::Value>,
}

/// A result's schema without its descriptions (the tool's description says what it holds):
/// `tools/list` is sent whole to every client.
fn compact_output<T: schemars::JsonSchema>() -> serde_json::Value {
    let mut result = schema::output::<T>();
    schema::drop_descriptions(&mut result);
    result
}

/// Arguments of `upload_mission`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadArgs {
    /// What to do, in order (at most 1000 steps).
    pub steps: Vec<MissionStep>,
    /// After the last step (default `hold`).
    #[serde(default)]
    pub end: MissionEnd,
}

/// Result of `upload_mission`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct UploadResult {
    pub message: String,
    /// Items the autopilot took (its own home slot not counted).
    pub items: u16,
    pub waypoints: Vec<RoutePoint>,
    /// From the first waypoint to the last, metres.
    pub length_m: f64,
    pub photos: u16,
}

/// Result of `get_mission`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct GetResult {
    message: String,
    items: u16,
    waypoints: Vec<RoutePoint>,
    length_m: f64,
    photos: u16,
    /// The vehicle's current item (from 0), when it reports one.
    current_item: Option<u16>,
    /// Whether start_mission would accept it now.
    startable: bool,
    /// Why not, when it would not.
    refusal: Option<String>,
}

/// Result of `clear_mission`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct ClearResult {
    message: String,
}

const UPLOAD_EXAMPLE: &str = "{\"steps\": [{\"type\": \"waypoint\", \"latitude_deg\": 47.3978, \
    \"longitude_deg\": 8.5456, \"altitude_m\": 20}, {\"type\": \"speed\", \"speed_m_s\": 5}, \
    {\"type\": \"waypoint\", \"latitude_deg\": 47.3980, \"longitude_deg\": 8.5460, \
    \"altitude_m\": 20, \"loiter_s\": 5, \"photo\": true}], \"end\": \"return_home\"}";

fn control(call: &ToolCall) -> Result<&ControlClient, CallToolResult> {
    call.control
        .as_ref()
        .ok_or_else(|| tool_error("this server has no vehicle attached; nothing was sent".into()))
}

fn upload_mission(call: ToolCall) -> ToolFuture {
    answer(async move {
        let args: UploadArgs = match parse(&call.arguments, UPLOAD_EXAMPLE) {
            Ok(args) => args,
            Err(e) => return e,
        };
        upload(&call, args.steps, args.end).await
    })
}

/// Uploads validated steps (also `plan_survey`'s with `upload: true`).
pub async fn upload(call: &ToolCall, steps: Vec<MissionStep>, end: MissionEnd) -> CallToolResult {
    if let Err(why) = crate::flight::mission::validate(&steps) {
        return tool_error(format!("upload_mission: {why}; nothing was sent"));
    }
    let control = match control(call) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let ask = MissionAsk::Upload {
        steps,
        end,
        caller: call.caller.clone(),
    };
    match control.mission(ask).await {
        Ok(MissionAnswer::Uploaded { items, route }) => structured(&UploadResult {
            message: format!(
                "the autopilot took the mission: {items} items, {} waypoints, {:.0} m, every \
                 leg inside the envelope; start_mission flies it",
                route.points.len(),
                route.length_m
            ),
            items,
            waypoints: route.points,
            length_m: route.length_m,
            photos: route.photos,
        }),
        Ok(MissionAnswer::Refused(why)) => tool_error(why),
        Ok(other) => tool_error(format!("unexpected answer: {other:?}")),
        Err(why) => tool_error(why),
    }
}

/// Downloads and checks the autopilot's mission from `from_item` (`None`: its current item).
async fn download(
    call: &ToolCall,
    from_item: Option<u16>,
) -> Result<(u16, Result<Route, String>, Result<(), String>, Option<u16>), CallToolResult> {
    let control = control(call)?;
    let ask = MissionAsk::Download {
        from_item,
        caller: call.caller.clone(),
    };
    match control.mission(ask).await {
        Ok(MissionAnswer::Downloaded {
            items,
            route,
            verdict,
            current,
        }) => Ok((items, route, verdict, current)),
        Ok(MissionAnswer::Refused(why)) => Err(tool_error(why)),
        Ok(other) => Err(tool_error(format!("unexpected answer: {other:?}"))),
        Err(why) => Err(tool_error(why)),
    }
}

fn get_mission(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(why) = no_args(&call.arguments, "get_mission") {
            return tool_error(why);
        }
        let (items, route, verdict, current) = match download(&call, None).await {
            Ok(d) => d,
            Err(e) => return e,
        };
        let refusal = verdict.err();
        let route = route.unwrap_or_default();
        let message = match (&refusal, items) {
            (_, 0) => "the autopilot holds no mission".to_string(),
            (None, _) => format!(
                "{items} items, {} waypoints, {:.0} m; every leg is inside the envelope",
                route.points.len(),
                route.length_m
            ),
            (Some(why), _) => format!("{items} items; start_mission would refuse it: {why}"),
        };
        structured(&GetResult {
            message,
            items,
            startable: refusal.is_none() && items > 0,
            waypoints: route.points,
            length_m: route.length_m,
            photos: route.photos,
            current_item: current,
            refusal,
        })
    })
}

/// Downloaded and checked, or the refusal; nothing was started then.
async fn checked(
    call: &ToolCall,
    tool: &str,
    from_item: Option<u16>,
) -> Result<(), CallToolResult> {
    let (items, _, verdict, _) = download(call, from_item).await?;
    if items == 0 {
        return Err(tool_error(format!(
            "{tool}: the autopilot holds no mission; upload one with upload_mission"
        )));
    }
    verdict.map_err(|why| {
        tool_error(format!(
            "{tool} refused: the autopilot's mission does not pass the envelope: {why}; \
             nothing was started"
        ))
    })
}

fn start_mission(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(why) = no_args(&call.arguments, "start_mission") {
            return tool_error(why);
        }
        if let Err(e) = checked(&call, "start_mission", Some(0)).await {
            return e;
        }
        let control = match control(&call) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let ask = MissionAsk::SetCurrent {
            seq: 0,
            caller: call.caller.clone(),
        };
        match control.mission(ask).await {
            Ok(MissionAnswer::CurrentSet { .. }) => {}
            Ok(MissionAnswer::Refused(why)) => {
                return tool_error(format!("start_mission: {why}; nothing was started"));
            }
            Ok(other) => return tool_error(format!("unexpected answer: {other:?}")),
            Err(why) => return tool_error(why),
        }
        flight::fly(call, Ok(Action::RunMission { resume: false })).await
    })
}

fn resume_mission(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(why) = no_args(&call.arguments, "resume_mission") {
            return tool_error(why);
        }
        if let Err(e) = checked(&call, "resume_mission", None).await {
            return e;
        }
        flight::fly(call, Ok(Action::RunMission { resume: true })).await
    })
}

fn clear_mission(call: ToolCall) -> ToolFuture {
    answer(async move {
        if let Err(why) = no_args(&call.arguments, "clear_mission") {
            return tool_error(why);
        }
        let control = match control(&call) {
            Ok(c) => c,
            Err(e) => return e,
        };
        match control
            .mission(MissionAsk::Clear {
                caller: call.caller.clone(),
            })
            .await
        {
            Ok(MissionAnswer::Cleared) => structured(&ClearResult {
                message: "the autopilot's mission is cleared".into(),
            }),
            Ok(MissionAnswer::Refused(why)) => tool_error(why),
            Ok(other) => tool_error(format!("unexpected answer: {other:?}")),
            Err(why) => tool_error(why),
        }
    })
}

/// A typical 24 mm-equivalent lens (36 × 24 mm sensor): 2·atan(18/24) and 2·atan(12/24).
const HFOV_DEG_DEFAULT: f64 = 73.7;
const VFOV_DEG_DEFAULT: f64 = 53.1;

fn plan_survey(call: ToolCall) -> ToolFuture {
    answer(async move {
        let example = "{\"polygon\": [[47.3977, 8.5456], [47.3977, 8.5470], [47.3986, 8.5470], \
            [47.3986, 8.5456]], \"altitude_m\": 30}";
        let args: SurveyArgs = match parse(&call.arguments, example) {
            Ok(args) => args,
            Err(e) => return e,
        };
        let request = crate::flight::survey::SurveyRequest {
            polygon: args.polygon,
            altitude_m: args.altitude_m,
            forward_overlap: args.forward_overlap.unwrap_or(0.7),
            side_overlap: args.side_overlap.unwrap_or(0.6),
            horizontal_fov_deg: args.horizontal_fov_deg.unwrap_or(HFOV_DEG_DEFAULT),
            vertical_fov_deg: args.vertical_fov_deg.unwrap_or(VFOV_DEG_DEFAULT),
        };
        let survey = match crate::flight::survey::plan(&request) {
            Ok(s) => s,
            Err(why) => return tool_error(format!("plan_survey: {why}")),
        };
        let limit = call
            .control
            .as_ref()
            .and_then(|c| c.envelope().ok())
            .map(|e| e.speed_horizontal_m_s_max);
        let speed = args.speed_m_s.or(limit);
        let mut steps = survey.steps;
        if let Some(s) = args.speed_m_s {
            steps.insert(0, MissionStep::Speed { speed_m_s: s });
        }
        let end = args.end.unwrap_or(MissionEnd::ReturnHome);
        let mut message = format!(
            "{} lines, {} photo waypoints, {:.0} m, lines {:.1} m apart, photos at most {:.1} m \
             apart",
            survey.lines,
            survey.waypoints,
            survey.length_m,
            survey.line_spacing_m,
            survey.photo_spacing_m
        );
        let uploaded = if args.upload {
            let holder = call.control.as_ref().and_then(|c| c.lease_holder());
            if holder.as_deref() != Some(call.caller.identity.as_str()) {
                return tool_error(format!(
                    "plan_survey: upload: true needs the control lease (request_control) and \
                     the OPERATOR role; nothing was uploaded. The plan: {message}"
                ));
            }
            let result = upload(&call, steps.clone(), end).await;
            if result.is_error == Some(true) {
                return result;
            }
            message.push_str("; uploaded: start_mission flies it");
            result.structured_content
        } else {
            message.push_str(
                "; not uploaded: pass `steps` and `end` to upload_mission, or call \
                again with upload: true",
            );
            None
        };
        structured(&SurveyResult {
            message,
            steps,
            end,
            lines: survey.lines,
            waypoints: survey.waypoints,
            line_spacing_m: survey.line_spacing_m,
            photo_spacing_m: survey.photo_spacing_m,
            footprint_across_m: survey.footprint_across_m,
            footprint_along_m: survey.footprint_along_m,
            length_m: survey.length_m,
            speed_m_s: speed,
            estimated_duration_s: speed.map(|v| survey.length_m / v),
            uploaded,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tools/list` goes whole to every client (`TOOLS_LIST_BYTES_MAX` in
    /// `tests/peers/mcp_spec_client.py` bounds it): the mission family (15 KB: the mission step's schema is what a
    /// model writes missions from) stays within 15.5 KB.
    #[test]
    fn the_mission_tools_schemas_are_compact() {
        let bytes: usize = TOOLS
            .iter()
            .map(|t| serde_json::to_string(&t.to_tool()).unwrap().len())
            .sum();
        assert!(bytes < 15_500, "{bytes} bytes");
    }
}
