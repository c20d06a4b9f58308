//! The camera pipeline: fresh, geotagged, size-bounded images for the ground.
//!
//! - `mjpeg`: sans-IO decoder of `multipart/x-mixed-replace` MJPEG streams (HTTP cameras,
//!   GStreamer `multipartmux`).
//! - `jpeg`: header inspection before decoding (pixel limit), downscale and re-encode under
//!   a byte limit.
//! - `core`: sans-IO bounded frame buffer, the freshness rule, error counters, health.
//! - `exif`: the EXIF APP1 segment (GPS position, altitude, heading, orientation).
//! - `store`: captures kept onboard with a bounded total size.
//! - `synthetic`: a top-down view of procedurally textured ground for the simulator.
//! - `v4l2`: V4L2 MJPEG capture.
//! - `shell`: the source task and [`CameraHandle`], the MCP server's way in.

pub mod core;
pub mod exif;
pub mod jpeg;
pub mod mjpeg;
pub mod shell;
pub mod store;
pub mod synthetic;
pub mod v4l2;

pub use shell::{CameraHandle, CaptureRequest, spawn};
