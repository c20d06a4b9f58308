//! The camera family: `capture_image`, `camera_status`, `list_captures`, `get_capture`,
//! served only when a camera is configured (`camera://latest` is in `mcp::resources`).
//!
//! Images are JPEG, base64 in MCP image content, never above `camera.image_bytes_max`
//! (which the configuration check keeps within `mcp.message_bytes_max` with base64 and
//! JSON overhead accounted for). A stale camera is a tool error that says how old the
//! newest frame is, never an old picture served as current.

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock};
use serde::{Deserialize, Serialize};

use super::call::{ToolCall, ToolFuture, answer, parse};
use super::{Handler, Hints, ToolEntry, no_arguments};
use crate::auth::permissions::{Class, Permission, Pool};
use crate::camera::CaptureRequest;
use crate::camera::core::CameraStatus;
use crate::camera::shell::{CAPTURES_LISTED_MAX, CaptureMeta};
use crate::camera::store::CaptureInfo;
use crate::mcp::errors::tool_error;
use crate::mcp::schema;
use crate::role::Role;

pub const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "capture_image",
        title: "Take a picture",
        description: "Returns the newest camera frame as a JPEG image (MCP image content) \
            with metadata: capture time (UTC), age_ms, the vehicle's latitude_deg, \
            longitude_deg, altitude_m (above mean sea level), altitude_relative_m, \
            heading_deg, roll/pitch at capture, and the image's width_px, height_px and \
            bytes. The image is downscaled to max_width_px (default 640) and re-encoded to \
            stay under the link's size limit. If the newest frame is older than the \
            configured limit the call fails and says how old it is; it never returns a \
            stale picture as current. With save: true the full-resolution frame is also \
            kept onboard with EXIF GPS tags (see list_captures, get_capture).",
        input_schema: schema::input::<CaptureArgs>,
        output_schema: schema::output::<CaptureMeta>,
        // Writes a file on the drone's storage, but moves nothing.
        permission: Permission::new(Role::Operator, Class::Read, Pool::Calls),
        hints: Hints {
            read_only: false,
            idempotent: false,
            ..Hints::READ
        },
        needs_camera: true,
        handler: Handler::Run(capture_image),
    },
    ToolEntry {
        name: "camera_status",
        title: "Camera status",
        description: "Reports the camera: source, state (connecting, streaming, \
            reconnecting), whether the newest frame is fresh, last_frame_age_ms, \
            resolution, frame_rate_hz, frames received, reconnections and error counters \
            (corrupt, zero-sized, oversized frames, stream errors). Takes no arguments; \
            read-only.",
        input_schema: no_arguments,
        output_schema: schema::output::<CameraStatus>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: true,
        handler: Handler::Run(camera_status),
    },
    ToolEntry {
        name: "list_captures",
        title: "List saved pictures",
        description: "Lists the pictures kept onboard by capture_image with save: true, \
            newest first (limit 1 to 200, default 50): id, time, file path on the vehicle, \
            bytes, resolution and the position, altitude and heading at capture. The oldest \
            are deleted automatically when the storage limit is reached. Read-only.",
        input_schema: schema::input::<ListArgs>,
        output_schema: schema::output::<CaptureList>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: true,
        handler: Handler::Run(list_captures),
    },
    ToolEntry {
        name: "get_capture",
        title: "Get a saved picture",
        description: "Returns a picture kept onboard (id from list_captures or from \
            capture_image's saved.id) as a JPEG downscaled to max_width_px (default 640), \
            with its metadata. Read-only.",
        input_schema: schema::input::<GetCaptureArgs>,
        output_schema: schema::output::<CaptureInfo>,
        permission: Permission::READ,
        hints: Hints::READ,
        needs_camera: true,
        handler: Handler::Run(get_capture),
    },
];

/// Widest image a caller may ask for.
pub const MAX_WIDTH_PX_LIMIT: u32 = 4096;

const NO_CAMERA: &str =
    "this drone has no camera configured (camera.enabled = false in the daemon's configuration)";

/// Arguments of `capture_image`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureArgs {
    /// Widest image returned, in pixels (16 to 4096; default from the configuration,
    /// normally 640). The aspect ratio is kept and images are never upscaled.
    #[schemars(range(min = 16, max = 4096))]
    pub max_width_px: Option<u32>,
    /// JPEG quality of the returned image (1 to 100; default 80). Lowered automatically if
    /// the image would not fit the size limit.
    #[schemars(range(min = 1, max = 100))]
    pub jpeg_quality: Option<u8>,
    /// Also keep the full-resolution frame onboard, with EXIF GPS position, altitude and
    /// heading (see list_captures / get_capture). Default false.
    pub save: Option<bool>,
}

/// Arguments of `get_capture`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetCaptureArgs {
    /// Id from capture_image (`saved.id`) or list_captures.
    pub id: String,
    /// Widest image returned, in pixels (16 to 4096; default 640).
    #[schemars(range(min = 16, max = 4096))]
    pub max_width_px: Option<u32>,
}

/// Arguments of `list_captures`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Most captures listed, newest first (1 to 200; default 50).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CaptureList {
    pub captures: Vec<CaptureInfo>,
}

fn check_width(max_width_px: Option<u32>) -> Result<(), CallToolResult> {
    match max_width_px {
        Some(w) if !(16..=MAX_WIDTH_PX_LIMIT).contains(&w) => Err(tool_error(format!(
            "max_width_px must be 16 to {MAX_WIDTH_PX_LIMIT}; got {w}"
        ))),
        _ => Ok(()),
    }
}

/// Image content, then the metadata as text, and the metadata as structured content.
fn image_result<T: Serialize>(jpeg: &[u8], meta: &T) -> CallToolResult {
    let meta = match serde_json::to_value(meta) {
        Ok(v) => v,
        Err(e) => return tool_error(format!("internal error serialising the metadata: {e}")),
    };
    let data = base64::engine::general_purpose::STANDARD.encode(jpeg);
    let mut result = CallToolResult::structured(meta.clone());
    result.content = vec![
        ContentBlock::image(data, "image/jpeg"),
        ContentBlock::text(meta.to_string()),
    ];
    result
}

pub fn capture_image(call: ToolCall) -> ToolFuture {
    answer(async move {
        let Some(camera) = call.camera.clone() else {
            return tool_error(NO_CAMERA.into());
        };
        let args: CaptureArgs = match parse(
            &call.arguments,
            "{\"max_width_px\"?: 16..4096, \"jpeg_quality\"?: 1..100, \"save\"?: bool}",
        ) {
            Ok(a) => a,
            Err(e) => return e,
        };
        if let Err(e) = check_width(args.max_width_px) {
            return e;
        }
        if let Some(q) = args.jpeg_quality
            && !(1..=100).contains(&q)
        {
            return tool_error(format!("jpeg_quality must be 1 to 100; got {q}"));
        }
        let request = CaptureRequest {
            max_width_px: args.max_width_px,
            jpeg_quality: args.jpeg_quality,
            save: args.save.unwrap_or(false),
        };
        tokio::select! {
            _ = call.cancel.cancelled() => tool_error("cancelled".into()),
            captured = camera.capture(request) => match captured {
                Ok(c) => image_result(&c.jpeg, &c.meta),
                Err(e) => tool_error(e.to_string()),
            },
        }
    })
}

pub fn camera_status(call: ToolCall) -> ToolFuture {
    answer(async move {
        let Some(camera) = call.camera.clone() else {
            return tool_error(NO_CAMERA.into());
        };
        if !call.arguments.is_empty() {
            return tool_error("camera_status takes no arguments. Call it with {}.".into());
        }
        match serde_json::to_value(camera.status()) {
            Ok(v) => CallToolResult::structured(v),
            Err(e) => tool_error(format!("internal error: {e}")),
        }
    })
}

pub fn list_captures(call: ToolCall) -> ToolFuture {
    answer(async move {
        let Some(camera) = call.camera.clone() else {
            return tool_error(NO_CAMERA.into());
        };
        let args: ListArgs = match parse(&call.arguments, "{\"limit\"?: 1..200}") {
            Ok(a) => a,
            Err(e) => return e,
        };
        let limit = args.limit.unwrap_or(50);
        if !(1..=CAPTURES_LISTED_MAX).contains(&limit) {
            return tool_error(format!(
                "limit must be 1 to {CAPTURES_LISTED_MAX}; got {limit}"
            ));
        }
        match camera.list_captures(limit).await {
            Ok(captures) => match serde_json::to_value(CaptureList { captures }) {
                Ok(v) => CallToolResult::structured(v),
                Err(e) => tool_error(format!("internal error: {e}")),
            },
            Err(e) => tool_error(e.to_string()),
        }
    })
}

pub fn get_capture(call: ToolCall) -> ToolFuture {
    answer(async move {
        let Some(camera) = call.camera.clone() else {
            return tool_error(NO_CAMERA.into());
        };
        let args: GetCaptureArgs = match parse(
            &call.arguments,
            "{\"id\": \"an id from list_captures\", \"max_width_px\"?: 16..4096}",
        ) {
            Ok(a) => a,
            Err(e) => return e,
        };
        if let Err(e) = check_width(args.max_width_px) {
            return e;
        }
        match camera.get_capture(args.id, args.max_width_px).await {
            Ok((image, info)) => image_result(&image.jpeg, &info),
            Err(e) => tool_error(e.to_string()),
        }
    })
}
