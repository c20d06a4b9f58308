//! Sans-IO camera core: the bounded buffer of latest frames, the freshness rule, error
//! counters and source health.
//!
//! Call order: the source shell calls `handle_source_up` when it (re)connects, then
//! `handle_frame` / `handle_rejected` for each part it reads, and `handle_source_down`
//! when it loses the source; readers call `latest(now)` / `fresh_frames(now)` and
//! `status(now)`. `now` is always an argument; nothing here reads a clock or does IO.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The status types are plain data the status report names: the core crate's.
pub use flight_companion_core::camera::{CameraStatus, ErrorCounts, SourceState, VehicleAtCapture};

use super::jpeg::FrameError;
use super::mjpeg::StreamError;

/// One frame as received: the source's JPEG, untouched, plus when and where.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number since the daemon started (1, 2, ...).
    pub seq: u64,
    pub jpeg: Arc<[u8]>,
    pub width_px: u32,
    pub height_px: u32,
    /// Monotonic arrival time (the freshness rule uses this).
    pub received: Instant,
    /// Wall-clock arrival time, milliseconds since the Unix epoch (for people and EXIF).
    pub received_unix_ms: i64,
    pub vehicle: VehicleAtCapture,
}

/// Why no frame can be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFrame {
    /// Nothing was ever received.
    Never { state: SourceState },
    /// The newest frame is too old.
    Stale {
        age_ms: u64,
        age_ms_max: u64,
        state: SourceState,
    },
}

impl std::fmt::Display for NoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoFrame::Never { state } => write!(
                f,
                "no frame has been received from the camera yet (source {state:?}); check camera_status"
            ),
            NoFrame::Stale {
                age_ms,
                age_ms_max,
                state,
            } => write!(
                f,
                "the camera source is stale: the newest frame is {age_ms} ms old, above the \
                 {age_ms_max} ms limit (source {state:?}); no image is returned rather than an old one. \
                 Retry when camera_status shows fresh: true"
            ),
        }
    }
}

/// Window over which the frame rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The core. See the module documentation for the call order.
#[derive(Debug)]
pub struct CameraCore {
    source: String,
    frames: VecDeque<Arc<Frame>>,
    capacity: usize,
    age_max: Duration,
    state: SourceState,
    arrivals: VecDeque<Instant>,
    frames_received: u64,
    connections: u64,
    errors: ErrorCounts,
    last_error: Option<String>,
}

impl CameraCore {
    pub fn new(source: String, capacity: usize, age_max: Duration) -> CameraCore {
        CameraCore {
            source,
            frames: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            age_max,
            state: SourceState::Connecting,
            arrivals: VecDeque::new(),
            frames_received: 0,
            connections: 0,
            errors: ErrorCounts::default(),
            last_error: None,
        }
    }

    /// The next frame number.
    pub fn next_seq(&self) -> u64 {
        self.frames_received + 1
    }

    pub fn handle_source_up(&mut self) {
        self.state = SourceState::Streaming;
        self.connections += 1;
    }

    pub fn handle_source_down(&mut self, reason: String) {
        if self.state == SourceState::Streaming {
            self.errors.source_losses += 1;
        }
        self.state = SourceState::Reconnecting;
        self.last_error = Some(reason);
    }

    /// Stores a frame; the oldest is dropped when the buffer is full.
    pub fn handle_frame(&mut self, frame: Frame) {
        let now = frame.received;
        self.frames_received += 1;
        if self.frames.len() >= self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(Arc::new(frame));
        self.arrivals.push_back(now);
        while self
            .arrivals
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > RATE_WINDOW)
        {
            self.arrivals.pop_front();
        }
    }

    /// A frame refused by the header check.
    pub fn handle_rejected_frame(&mut self, error: &FrameError) {
        match error {
            FrameError::Empty | FrameError::ZeroSize { .. } => self.errors.zero_size_frames += 1,
            FrameError::NotJpeg | FrameError::Corrupt(_) => self.errors.corrupt_frames += 1,
            FrameError::TooManyPixels { .. } => self.errors.oversized_frames += 1,
            FrameError::TooManyBytes { .. } => self.errors.oversized_parts += 1,
        }
        self.last_error = Some(format!("frame skipped: {error}"));
    }

    /// A framing error from the multipart decoder.
    pub fn handle_stream_error(&mut self, error: &StreamError) {
        match error {
            StreamError::PartTooLarge { .. } => self.errors.oversized_parts += 1,
            StreamError::ZeroLength => self.errors.zero_size_frames += 1,
            _ => self.errors.stream_errors += 1,
        }
        self.last_error = Some(format!("stream: {error}"));
    }

    /// A buffered frame failed to decode when served.
    pub fn handle_decode_failure(&mut self, seq: u64, error: &str) {
        self.errors.decode_failures += 1;
        self.last_error = Some(format!("frame {seq} could not be decoded: {error}"));
        self.frames.retain(|f| f.seq != seq);
    }

    /// The newest frame if it is fresh; otherwise why not.
    pub fn latest(&self, now: Instant) -> Result<Arc<Frame>, NoFrame> {
        self.fresh_frames(now)
            .into_iter()
            .next()
            .ok_or_else(|| match self.frames.back() {
                None => NoFrame::Never { state: self.state },
                Some(f) => NoFrame::Stale {
                    age_ms: age_ms(now, f.received),
                    age_ms_max: self.age_max.as_millis() as u64,
                    state: self.state,
                },
            })
    }

    /// Fresh frames, newest first (a caller falls back to an older one if the newest
    /// turns out not to decode).
    pub fn fresh_frames(&self, now: Instant) -> Vec<Arc<Frame>> {
        self.frames
            .iter()
            .rev()
            .filter(|f| now.saturating_duration_since(f.received) <= self.age_max)
            .cloned()
            .collect()
    }

    pub fn status(&self, now: Instant) -> CameraStatus {
        let newest = self.frames.back();
        let recent = self
            .arrivals
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= RATE_WINDOW)
            .count();
        let frame_rate_hz = if recent >= 2 {
            let first = self.arrivals.iter().rev().nth(recent - 1).copied();
            let span = first
                .zip(self.arrivals.back().copied())
                .map(|(a, b)| b.saturating_duration_since(a).as_secs_f64())
                .unwrap_or(0.0);
            if span > 0.0 {
                ((recent - 1) as f64 / span * 100.0).round() / 100.0
            } else {
                0.0
            }
        } else {
            0.0
        };
        let last_frame_age_ms = newest.map(|f| age_ms(now, f.received));
        CameraStatus {
            source: self.source.clone(),
            state: self.state,
            fresh: newest
                .is_some_and(|f| now.saturating_duration_since(f.received) <= self.age_max),
            last_frame_age_ms,
            frame_age_ms_max: self.age_max.as_millis() as u64,
            width_px: newest.map(|f| f.width_px),
            height_px: newest.map(|f| f.height_px),
            frame_rate_hz,
            frames_received: self.frames_received,
            connections: self.connections,
            errors: self.errors.clone(),
            last_error: self.last_error.clone(),
        }
    }
}

fn age_ms(now: Instant, then: Instant) -> u64 {
    now.saturating_duration_since(then).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vehicle() -> VehicleAtCapture {
        VehicleAtCapture {
            latitude_deg: 1.0,
            longitude_deg: 2.0,
            altitude_msl_m: 3.0,
            altitude_relative_m: 4.0,
            heading_deg: 5.0,
            roll_deg: 0.0,
            pitch_deg: 0.0,
            yaw_deg: 5.0,
            position_stale: false,
        }
    }

    fn frame(core: &CameraCore, at: Instant) -> Frame {
        Frame {
            seq: core.next_seq(),
            jpeg: Arc::from(vec![0u8; 4]),
            width_px: 8,
            height_px: 6,
            received: at,
            received_unix_ms: 0,
            vehicle: vehicle(),
        }
    }

    #[test]
    fn buffer_drops_the_oldest_and_serves_only_fresh_frames() {
        let t0 = Instant::now();
        let mut core = CameraCore::new("test".into(), 3, Duration::from_millis(500));
        assert_eq!(
            core.latest(t0).unwrap_err(),
            NoFrame::Never {
                state: SourceState::Connecting
            }
        );
        core.handle_source_up();
        for i in 0..5u64 {
            let f = frame(&core, t0 + Duration::from_millis(100 * i));
            core.handle_frame(f);
        }
        let now = t0 + Duration::from_millis(450);
        let fresh = core.fresh_frames(now);
        assert_eq!(
            fresh.iter().map(|f| f.seq).collect::<Vec<_>>(),
            vec![5, 4, 3]
        );
        assert_eq!(core.latest(now).unwrap().seq, 5);
        // 1.4 s later the newest is 1 s old: refused, with its age.
        let later = t0 + Duration::from_millis(1400);
        assert_eq!(
            core.latest(later).unwrap_err(),
            NoFrame::Stale {
                age_ms: 1000,
                age_ms_max: 500,
                state: SourceState::Streaming
            }
        );
        let status = core.status(later);
        assert!(!status.fresh);
        assert_eq!(status.last_frame_age_ms, Some(1000));
        assert_eq!(status.frames_received, 5);
        assert_eq!(status.frame_rate_hz, 10.0);
        assert!(
            core.latest(later)
                .unwrap_err()
                .to_string()
                .contains("1000 ms old")
        );
    }

    #[test]
    fn errors_are_counted_by_kind_and_a_bad_frame_is_not_served_again() {
        let t0 = Instant::now();
        let mut core = CameraCore::new("test".into(), 4, Duration::from_secs(1));
        core.handle_source_up();
        core.handle_rejected_frame(&FrameError::Empty);
        core.handle_rejected_frame(&FrameError::Corrupt("x".into()));
        core.handle_rejected_frame(&FrameError::TooManyPixels {
            width_px: 1,
            height_px: 1,
            pixels: 1,
            pixels_max: 0,
        });
        core.handle_stream_error(&StreamError::Truncated {
            bytes: 1,
            declared: 2,
        });
        let f = frame(&core, t0);
        core.handle_frame(f);
        let f = frame(&core, t0);
        core.handle_frame(f);
        core.handle_decode_failure(2, "bad huffman");
        assert_eq!(core.latest(t0).unwrap().seq, 1);
        core.handle_source_down("connection reset".into());
        let status = core.status(t0);
        assert_eq!(status.state, SourceState::Reconnecting);
        assert_eq!(
            status.errors,
            ErrorCounts {
                corrupt_frames: 1,
                zero_size_frames: 1,
                oversized_frames: 1,
                oversized_parts: 0,
                stream_errors: 1,
                decode_failures: 1,
                source_losses: 1,
            }
        );
        assert_eq!(status.last_error.as_deref(), Some("connection reset"));
    }
}
