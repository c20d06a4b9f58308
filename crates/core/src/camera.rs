//! The camera's status as the status report and `camera_status` show it, and the vehicle a
//! frame was tagged with (pure data). The camera's buffer and its source are the daemon's
//! (`flight_companion::camera`).

use schemars::JsonSchema;
use serde::Serialize;

/// The vehicle as the daemon saw it when the frame arrived.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct VehicleAtCapture {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Above mean sea level.
    pub altitude_msl_m: f64,
    /// Above home.
    pub altitude_relative_m: f64,
    /// Degrees clockwise from true north.
    pub heading_deg: f64,
    pub roll_deg: f64,
    pub pitch_deg: f64,
    pub yaw_deg: f64,
    /// The position was stale (or never received) at capture time: treat it as unknown.
    pub position_stale: bool,
}

/// Error counters, one per kind, as shown by `camera_status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorCounts {
    /// Frames that were not JPEG or whose markers were broken or cut short.
    pub corrupt_frames: u64,
    /// Frames declaring zero width or height, or zero bytes long.
    pub zero_size_frames: u64,
    /// Frames refused before decoding for being above `camera.frame_pixels_max`.
    pub oversized_frames: u64,
    /// Parts above `camera.frame_bytes_max` bytes, skipped unread.
    pub oversized_parts: u64,
    /// Multipart framing errors: truncated parts, broken boundaries, bad headers.
    pub stream_errors: u64,
    /// Frames that passed the header check but failed to decode when served.
    pub decode_failures: u64,
    /// Source connections lost or given up as stalled.
    pub source_losses: u64,
}

/// Whether the source is delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Not yet connected.
    Connecting,
    /// Connected (frames may still be late: see `last_frame_age_ms`).
    Streaming,
    /// Lost; being reopened with backoff.
    Reconnecting,
}

/// `camera_status`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CameraStatus {
    /// The configured source, e.g. `tcp:127.0.0.1:5000`, `synthetic`.
    pub source: String,
    pub state: SourceState,
    /// True when the newest frame is younger than `frame_age_ms_max`.
    pub fresh: bool,
    /// Age of the newest frame; absent if none was ever received.
    pub last_frame_age_ms: Option<u64>,
    /// Frames older than this are never served as current.
    pub frame_age_ms_max: u64,
    /// Size of the newest frame.
    pub width_px: Option<u32>,
    pub height_px: Option<u32>,
    /// Frames per second received over the last few seconds.
    pub frame_rate_hz: f64,
    pub frames_received: u64,
    /// Times the source was (re)opened successfully.
    pub connections: u64,
    pub errors: ErrorCounts,
    /// The most recent error, in words.
    pub last_error: Option<String>,
}
