//! The mission family: `upload_mission`, `get_mission`, `start_mission`, `pause_mission`,
//! `resume_mission`, `clear_mission`.
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
        output_schema: schema::output::<UploadResult>,
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
        output_schema: schema::output::<GetResult>,
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
];

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
