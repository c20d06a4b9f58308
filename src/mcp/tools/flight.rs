//! The flight family: the ten motion tools. Each entry says how its arguments become an
//! [`Action`]; one generic handler, [`fly`], hands every action to the decision loop, forwards
//! its progress and answers with how it ended. They share one compact result schema
//! ([`result_schema`]).

use std::time::Duration;

use rmcp::model::{CallToolResult, JsonObject};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::call::{ToolCall, no_args, parse_text};
use super::{Handler, Hints, ToolEntry, no_arguments};
use crate::auth::permissions::Permission;
use crate::control::ControlReply;
use crate::flight::{Action, Outcome};
use crate::mcp::errors::tool_error;
use crate::mcp::schema;

/// A motion tool: everything but the name, description and how arguments become an action.
const fn motion(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    input_schema: fn() -> Value,
    action: fn(&str, &JsonObject) -> Result<Action, String>,
) -> ToolEntry {
    ToolEntry {
        name,
        title,
        description,
        input_schema,
        output_schema: result_schema,
        permission: Permission::MOTION,
        hints: Hints::MOTION,
        needs_camera: false,
        handler: Handler::Motion(action),
    }
}

/// A motion towards safety: always accepted by the envelope, and the lease holder's call
/// always gets through (the reserved pool, no rate limit).
const fn towards_safety(entry: ToolEntry) -> ToolEntry {
    ToolEntry {
        permission: Permission::MOTION_TOWARDS_SAFETY,
        ..entry
    }
}

/// Not idempotent: asking twice moves twice (or climbs again).
const fn not_idempotent(entry: ToolEntry) -> ToolEntry {
    ToolEntry {
        hints: Hints {
            idempotent: false,
            ..Hints::MOTION
        },
        ..entry
    }
}

pub const TOOLS: &[ToolEntry] = &[
    motion(
        "arm",
        "Arm the motors",
        "Arms the motors on the ground (the propellers start to spin at idle). \
            The autopilot runs its own pre-arm checks and may refuse (the reason is returned). \
            ArduPilot and PX4 disarm again by themselves after about 10 s without a takeoff, \
            so prefer `takeoff`, which arms as needed. Takes no arguments. Ends with the \
            vehicle's state.",
        no_arguments,
        |tool, args| no_args(args, tool).map(|()| Action::Arm),
    ),
    motion(
        "disarm",
        "Disarm the motors",
        "Stops the motors, on the ground only: refused while the vehicle is in \
            the air (use `land` or `return_home`; they disarm on touchdown). Takes no \
            arguments. Ends with the vehicle's state.",
        no_arguments,
        |tool, args| no_args(args, tool).map(|()| Action::Disarm),
    ),
    not_idempotent(motion(
        "takeoff",
        "Take off",
        "Arms if needed and climbs straight up to `altitude_m` metres above \
            home, then holds there. Checked against the safety envelope first (ceiling, \
            battery reserve, GPS). Long-running: sends progress (altitude) and returns when \
            the vehicle reports the altitude reached. Cancelling holds position.",
        schema::input::<TakeoffArgs>,
        with_arguments::<TakeoffArgs>,
    )),
    motion(
        "goto",
        "Fly to a position",
        "Flies in a straight line to `latitude_deg`, `longitude_deg` (WGS-84 \
            degrees) at `altitude_m` metres above home, optionally at `speed_m_s`. Refused \
            with the reason, before anything is sent, if the target or the path leaves the \
            keep-in zones (minus the margin), enters a keep-out zone (plus the margin), is \
            outside the altitude band, too far from home or too fast (call get_envelope to \
            see the limits). Long-running: progress gives the distance remaining; returns \
            when the vehicle reports arrival. A new motion command supersedes it; \
            cancelling holds position.",
        schema::input::<GotoArgs>,
        with_arguments::<GotoArgs>,
    ),
    not_idempotent(motion(
        "move_relative",
        "Move relative to the vehicle",
        "Moves `forward_m` metres ahead, `right_m` metres to the right and \
            `up_m` metres up (negative values go back, left, down), in the vehicle's own \
            frame from its current heading: \"move right 50 cm\" is right_m 0.5. Checked \
            against the envelope like goto; returns when the vehicle reports arrival.",
        schema::input::<MoveRelativeArgs>,
        with_arguments::<MoveRelativeArgs>,
    )),
    motion(
        "set_heading",
        "Turn to a heading",
        "Turns in place to face `heading_deg` (0 north, 90 east, clockwise), \
            keeping position. Returns when the vehicle reports the heading.",
        schema::input::<HeadingArgs>,
        with_arguments::<HeadingArgs>,
    ),
    motion(
        "set_speed",
        "Set the horizontal speed",
        "Sets the horizontal ground speed for the current and later moves to \
            `speed_m_s` (bounded by the envelope's speed limit). Does not interrupt a \
            running goto. Returns when the autopilot acknowledges it.",
        schema::input::<SpeedArgs>,
        with_arguments::<SpeedArgs>,
    ),
    towards_safety(motion(
        "hold",
        "Hold position",
        "Stops and holds the current position (ArduPilot BRAKE, PX4 Hold). \
            Always accepted, even outside the envelope or below the battery reserve. \
            Supersedes any running move. Takes no arguments.",
        no_arguments,
        |tool, args| no_args(args, tool).map(|()| Action::Hold),
    )),
    towards_safety(motion(
        "land",
        "Land here",
        "Descends and lands where the vehicle is, then disarms. Always \
            accepted. Long-running: progress gives the altitude; returns when the vehicle \
            reports it is on the ground and disarmed. Cancelling holds position.",
        no_arguments,
        |tool, args| no_args(args, tool).map(|()| Action::Land),
    )),
    towards_safety(motion(
        "return_home",
        "Return home and land",
        "Climbs to the autopilot's return altitude, flies straight home and \
            lands, then disarms (ArduPilot RTL, PX4 Return). Always accepted. Long-running: \
            progress gives the distance from home and the altitude. Cancelling holds.",
        no_arguments,
        |tool, args| no_args(args, tool).map(|()| Action::ReturnHome),
    )),
];

/// The arguments of a motion tool that takes some.
trait MotionArguments: DeserializeOwned {
    /// What a refusal of bad arguments says is expected.
    const EXPECTED: &'static str;
    fn action(self) -> Action;
}

/// The action of a tool whose arguments are `A`, or the refusal's text.
fn with_arguments<A: MotionArguments>(
    tool: &str,
    arguments: &JsonObject,
) -> Result<Action, String> {
    parse_text::<A>(arguments, tool, A::EXPECTED).map(A::action)
}

/// Arguments of `takeoff`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TakeoffArgs {
    /// Altitude above home to climb to, in metres (1 to 1000; the envelope's ceiling minus
    /// its margin is the real limit).
    #[schemars(range(min = 1, max = 1000))]
    altitude_m: f64,
}

impl MotionArguments for TakeoffArgs {
    const EXPECTED: &'static str = "{\"altitude_m\": metres above home}";
    fn action(self) -> Action {
        Action::Takeoff {
            altitude_m: self.altitude_m,
        }
    }
}

/// Arguments of `goto`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GotoArgs {
    /// Target latitude, WGS-84 degrees (-90 to 90).
    #[schemars(range(min = -90, max = 90))]
    latitude_deg: f64,
    /// Target longitude, WGS-84 degrees (-180 to 180).
    #[schemars(range(min = -180, max = 180))]
    longitude_deg: f64,
    /// Target altitude above home, metres (0 to 1000; the envelope narrows it).
    #[schemars(range(min = 0, max = 1000))]
    altitude_m: f64,
    /// Horizontal speed, m/s (0.1 to 30; the envelope narrows it). Default: the autopilot's.
    #[schemars(range(min = 0.1, max = 30))]
    #[serde(default)]
    speed_m_s: Option<f64>,
}

impl MotionArguments for GotoArgs {
    const EXPECTED: &'static str =
        "{\"latitude_deg\", \"longitude_deg\", \"altitude_m\" above home, optional \"speed_m_s\"}";
    fn action(self) -> Action {
        Action::Goto {
            latitude_deg: self.latitude_deg,
            longitude_deg: self.longitude_deg,
            altitude_m: self.altitude_m,
            speed_m_s: self.speed_m_s,
        }
    }
}

/// Arguments of `move_relative`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct MoveRelativeArgs {
    /// Metres ahead along the current heading (negative: back), -1000 to 1000.
    #[schemars(range(min = -1000, max = 1000))]
    #[serde(default)]
    forward_m: f64,
    /// Metres to the right (negative: left), -1000 to 1000.
    #[schemars(range(min = -1000, max = 1000))]
    #[serde(default)]
    right_m: f64,
    /// Metres up (negative: down), -1000 to 1000.
    #[schemars(range(min = -1000, max = 1000))]
    #[serde(default)]
    up_m: f64,
}

impl MotionArguments for MoveRelativeArgs {
    const EXPECTED: &'static str = "{\"forward_m\", \"right_m\", \"up_m\"} in metres";
    fn action(self) -> Action {
        Action::MoveRelative {
            forward_m: self.forward_m,
            right_m: self.right_m,
            up_m: self.up_m,
        }
    }
}

/// Arguments of `set_heading`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct HeadingArgs {
    /// Heading to face, degrees clockwise from north (0 to 360).
    #[schemars(range(min = 0, max = 360))]
    heading_deg: f64,
}

impl MotionArguments for HeadingArgs {
    const EXPECTED: &'static str = "{\"heading_deg\": 0 to 360}";
    fn action(self) -> Action {
        Action::SetHeading {
            heading_deg: self.heading_deg,
        }
    }
}

/// Arguments of `set_speed`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpeedArgs {
    /// Horizontal ground speed, m/s (0.1 to 30; the envelope narrows it).
    #[schemars(range(min = 0.1, max = 30))]
    speed_m_s: f64,
}

impl MotionArguments for SpeedArgs {
    const EXPECTED: &'static str = "{\"speed_m_s\": 0.1 to 30}";
    fn action(self) -> Action {
        Action::SetSpeed {
            speed_m_s: self.speed_m_s,
        }
    }
}

/// What `outcome` means, said once in every motion tool's result schema (the values' own
/// documentation, on `flight::Outcome`, is twice as long).
const OUTCOME: &str = "`completed`, or why not: `refused` (nothing was sent; see \
    `message`), `failed` (refused or not done by the autopilot), `cancelled` (holding), \
    `superseded` (by a newer motion), `taken_over` (by the pilot), `link_lost`, `preempted` \
    (by the breach action or a stop).";

/// The result of every motion tool: the schema of the `ControlReply` that is serialised (so
/// every `structuredContent` validates against it), with its descriptions cut to what a model
/// needs to act on the result and its definitions inlined: ten motion tools carry it, and the
/// full type documentation (2.2 KB, the outcomes' alone 600 bytes) made them a third of
/// `tools/list`.
pub fn result_schema() -> Value {
    let mut result = schema::output::<ControlReply>();
    schema::drop_descriptions(&mut result);
    schema::inline_definitions(&mut result);
    for (pointer, description) in [
        ("/properties/outcome", OUTCOME),
        (
            "/properties/message",
            "One sentence: what happened, or why not.",
        ),
        (
            "/properties/vehicle",
            "Afterwards; null if the autopilot was never heard.",
        ),
        (
            "/properties/vehicle/anyOf/0/properties/altitude_m",
            "Above home.",
        ),
    ] {
        let found = schema::describe(&mut result, pointer, description);
        debug_assert!(found, "no {pointer} in ControlReply's schema");
    }
    result
}

/// How long a call waits for the loop's answer after it was cancelled.
const CANCEL_REPLY_WAIT: Duration = Duration::from_secs(2);

/// The handler of every motion tool: hands `action` to the decision loop, forwards its
/// progress, returns its end with the vehicle's resulting state. Anything but `completed` is
/// a tool error (`isError: true`) whose text says why.
pub async fn fly(call: ToolCall, action: Result<Action, CallToolResult>) -> CallToolResult {
    let action = match action {
        Ok(a) => a,
        Err(result) => return result,
    };
    if let Err(reason) = action.validate() {
        return tool_error(format!("{}: {reason}", action.name()));
    }
    let Some(control) = &call.control else {
        return tool_error("this server has no vehicle attached; nothing was sent".into());
    };
    let mut pending = match control.submit(action, call.caller.clone(), call.cancel.clone()) {
        Ok(p) => p,
        Err(e) => return tool_error(e.to_string()),
    };
    let reply = loop {
        tokio::select! {
            reply = &mut pending.reply => break reply.ok(),
            Some(update) = pending.progress.recv() => {
                call.progress.report(None, update.message).await;
            }
            _ = call.cancel.cancelled() => {
                // The loop sees the token on its next turn and answers with the hold.
                break tokio::time::timeout(CANCEL_REPLY_WAIT, &mut pending.reply)
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
        }
    };
    let Some(reply) = reply else {
        return tool_error(format!(
            "{}: the daemon stopped before answering; check get_status",
            action.name()
        ));
    };
    match serde_json::to_value(&reply) {
        Ok(v) if reply.outcome == Outcome::Completed => CallToolResult::structured(v),
        Ok(v) => CallToolResult::structured_error(v),
        Err(e) => tool_error(format!("internal error serialising the result: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::VehicleSummary;
    use serde_json::json;

    /// The compact schema still says everything a result can be, and every result the loop
    /// can answer validates against it (the official validator checks the same over the
    /// wire in `tests/peers/mcp_conformance.py`).
    #[test]
    fn the_motion_result_schema_is_compact_and_explains_itself() {
        let schema = result_schema();
        let text = schema.to_string();
        assert!(text.len() < 1350, "{} bytes: {text}", text.len());
        assert!(!text.contains("$ref"), "{text}");
        let outcome = &schema["properties"]["outcome"]["description"];
        let enum_values = &schema["properties"]["outcome"]["enum"];
        for value in enum_values.as_array().unwrap() {
            let value = value.as_str().unwrap();
            assert!(
                outcome.as_str().unwrap().contains(&format!("`{value}`")),
                "{value} not explained: {outcome}"
            );
        }
        assert_eq!(enum_values.as_array().unwrap().len(), 8);
        let vehicle = &schema["properties"]["vehicle"]["anyOf"][0];
        assert_eq!(
            vehicle["properties"]["altitude_m"]["description"],
            "Above home."
        );
        // What the types serialise to is what the schema requires.
        let reply = ControlReply {
            action: "goto".into(),
            outcome: Outcome::Refused,
            message: "outside keep-in `field`".into(),
            vehicle: Some(VehicleSummary {
                armed: true,
                flight_mode: crate::vehicle::snapshot::ModeName {
                    mode: Some(crate::vehicle::modes::FlightMode::Guided),
                    autopilot: crate::vehicle::modes::AutopilotKind::Ardupilot,
                },
                landed_state: crate::vehicle::snapshot::LandedState::InAir,
                latitude_deg: 47.0,
                longitude_deg: 8.0,
                altitude_m: 10.0,
                heading_deg: 90.0,
                ground_speed_m_s: 0.1,
                battery_voltage_v: 12.4,
                battery_remaining_percent: None,
                envelope_warning: None,
            }),
        };
        let value = serde_json::to_value(&reply).unwrap();
        for key in schema["required"].as_array().unwrap() {
            assert!(value.get(key.as_str().unwrap()).is_some(), "{key}");
        }
        for key in vehicle["required"].as_array().unwrap() {
            assert!(
                value["vehicle"].get(key.as_str().unwrap()).is_some(),
                "{key}"
            );
        }
        assert!(
            enum_values
                .as_array()
                .unwrap()
                .contains(&json!(value["outcome"]))
        );
    }

    #[test]
    fn arguments_become_actions_or_say_what_is_expected() {
        let args = |v: Value| match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        };
        let action = |name: &str, v: Value| match super::super::find(name).unwrap().handler {
            Handler::Motion(action) => action(name, &args(v)),
            Handler::Run(_) | Handler::Prepared(_) => panic!("{name} is not a motion"),
        };
        assert_eq!(action("land", json!({})), Ok(Action::Land));
        assert_eq!(
            action("land", json!({"now": true})),
            Err("land takes no arguments; got [\"now\"]. Call it with {}.".into())
        );
        assert_eq!(
            action("takeoff", json!({"altitude_m": 12.0})),
            Ok(Action::Takeoff { altitude_m: 12.0 })
        );
        let refused = action("takeoff", json!({"altitude": 12.0})).unwrap_err();
        assert!(
            refused.starts_with("invalid arguments for takeoff: unknown field `altitude`")
                && refused.ends_with("Expected {\"altitude_m\": metres above home}."),
            "{refused}"
        );
        assert_eq!(
            action("move_relative", json!({"right_m": 0.5})),
            Ok(Action::MoveRelative {
                forward_m: 0.0,
                right_m: 0.5,
                up_m: 0.0
            })
        );
    }
}
