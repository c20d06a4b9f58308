//! The fence family (issue 18): `mirror_fence` (ADMIN) writes the onboard envelope into the
//! autopilot's own geofence (the fence list over the mission protocol and the fence
//! parameters), reads both back and answers whether they match, item by item. The one
//! sanctioned write of fence parameters (`Whitelist::check_fence_mirror`); audited with the
//! caller, what was uploaded and the verification.

use super::call::{ToolCall, ToolFuture, answer};
use super::{Handler, Hints, ToolEntry};
use crate::auth::permissions::Permission;
use crate::control::param::{FenceMirrorReport, ParamAnswer, ParamAsk};
use crate::mcp::errors::{structured, tool_error};
use crate::mcp::schema;

pub const TOOLS: &[ToolEntry] = &[ToolEntry {
    name: "mirror_fence",
    title: "Mirror the envelope into the autopilot's fence",
    description: "Uploads the onboard safety envelope as the autopilot's own geofence, so \
        the autopilot enforces it even if the companion dies: keep-in zones as inclusion \
        polygons/circles, keep-out zones as exclusion polygons/circles, the altitude ceiling \
        and the home cylinder as the autopilot's fence parameters (ArduPilot FENCE_*, PX4 \
        GF_*), with the configured breach action (return home by default). Then downloads \
        the fence and reads the parameters back: `verified` is true only when every item \
        and parameter matches; otherwise `differences` says what differs. Only disarmed on \
        the ground. Audited. Needs the ADMIN role. Takes a few seconds.",
    input_schema: schema::input::<MirrorArgs>,
    output_schema: schema::output::<MirrorResult>,
    permission: Permission::ADMIN,
    hints: Hints {
        destructive: true,
        ..Hints::CHANGE
    },
    needs_camera: false,
    handler: Handler::Run(mirror_fence),
}];

/// `mirror_fence` takes no arguments: the envelope in force is what is mirrored.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct MirrorArgs {}

/// Result of `mirror_fence`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
struct MirrorResult {
    /// One sentence: verified, or what differs, or why it stopped.
    message: String,
    #[serde(flatten)]
    report: FenceMirrorReport,
}

fn mirror_fence(call: ToolCall) -> ToolFuture {
    answer(async move {
        if !call.arguments.is_empty() {
            return tool_error(
                "mirror_fence takes no arguments ({}): it mirrors the envelope in force".into(),
            );
        }
        let Some(control) = &call.control else {
            return tool_error("this server has no vehicle attached; nothing was sent".into());
        };
        let ask = ParamAsk::MirrorFence {
            caller: call.caller.clone(),
        };
        match control.params(ask).await {
            Ok(ParamAnswer::FenceMirrored(report)) => {
                let message = match (&report.error, report.verified) {
                    (Some(e), _) => format!("the autopilot's fence is not verified: {e}"),
                    (None, true) => format!(
                        "the autopilot's fence matches the envelope: {} items and {} \
                         parameters read back equal",
                        report.items,
                        report.parameters.len()
                    ),
                    (None, false) => format!(
                        "the autopilot's fence differs from the envelope after the upload: {}",
                        report.differences.join("; ")
                    ),
                };
                let failed = !report.verified;
                let mut result = structured(&MirrorResult { message, report });
                if failed {
                    // Structured, so the differences are readable, and an error: the fence
                    // the autopilot holds is not the envelope.
                    result.is_error = Some(true);
                }
                result
            }
            Ok(ParamAnswer::Refused(why)) => tool_error(why),
            Ok(other) => tool_error(format!("unexpected answer: {other:?}")),
            Err(why) => tool_error(why),
        }
    })
}
