//! The camera's IO: the source task (TCP/HTTP MJPEG, synthetic, V4L2) that feeds the core,
//! and [`CameraHandle`], through which the MCP server asks for images.
//!
//! Nothing here runs on the daemon's decision loop. The source runs in its own task;
//! decoding, encoding, rendering and file IO run on blocking threads, and tool calls that
//! need them wait for one of `camera.encoders_concurrent_max` permits, so images never
//! take more than that many cores and never delay a flight command or an e-stop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::core::{CameraCore, CameraStatus, Frame, NoFrame, VehicleAtCapture};
use super::exif::{self, GeoTag, Utc};
use super::jpeg::{self, Encoded, FrameError, RenderError, RenderRequest};
use super::mjpeg::{MultipartDecoder, Part};
use super::store::{self, CaptureInfo};
use super::synthetic;
use crate::backoff::Backoff;
use crate::config::{CameraConfig, CameraSource};
use crate::status::StatusReport;

/// Read size from a stream source.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Captures listed at most by `list_captures`.
pub const CAPTURES_LISTED_MAX: usize = 200;

struct Inner {
    config: CameraConfig,
    core: Mutex<CameraCore>,
    encoders: Semaphore,
    /// Sequence number of the newest frame (watch: readers skip to the latest).
    newest: watch::Sender<u64>,
}

/// The MCP server's handle on the camera. Cheap to clone.
#[derive(Clone)]
pub struct CameraHandle {
    inner: Arc<Inner>,
}

/// What `capture_image` asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureRequest {
    pub max_width_px: Option<u32>,
    pub jpeg_quality: Option<u8>,
    pub save: bool,
}

/// Metadata returned with an image.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CaptureMeta {
    /// When the frame was received, UTC, ISO 8601.
    pub time: String,
    /// Age of the frame when it was chosen as the newest fresh one (before re-encoding);
    /// never above `camera.frame_age_ms_max`.
    pub age_ms: u64,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Above mean sea level.
    pub altitude_m: f64,
    /// Above home.
    pub altitude_relative_m: f64,
    /// Degrees clockwise from true north.
    pub heading_deg: f64,
    pub roll_deg: f64,
    pub pitch_deg: f64,
    /// The position was stale at capture time: do not rely on it.
    pub position_stale: bool,
    /// Size of the image returned.
    pub width_px: u32,
    pub height_px: u32,
    /// Size of the JPEG returned (before base64).
    pub bytes: usize,
    pub jpeg_quality: u8,
    /// Size of the full frame from the camera.
    pub frame_width_px: u32,
    pub frame_height_px: u32,
    /// Frame number since the daemon started.
    pub frame_seq: u64,
    pub source: String,
    /// The full-resolution capture kept onboard, when `save` was true.
    pub saved: Option<CaptureInfo>,
}

/// An image ready to send.
#[derive(Debug, Clone)]
pub struct Captured {
    pub jpeg: Vec<u8>,
    pub meta: CaptureMeta,
}

/// Why no image.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    NoFrame(NoFrame),
    #[error("{0}")]
    Render(#[from] RenderError),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("the camera worker failed: {0}")]
    Worker(String),
}

impl CameraHandle {
    fn core(&self) -> MutexGuard<'_, CameraCore> {
        // A poisoned lock only means a panic elsewhere while holding it; the core's data
        // stays consistent (every method leaves it valid), so keep serving.
        self.inner.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &CameraConfig {
        &self.inner.config
    }

    pub fn status(&self) -> CameraStatus {
        self.core().status(Instant::now())
    }

    /// The status if the core is not busy this instant (for the decision loop, which must
    /// never wait on the camera).
    pub fn try_status(&self) -> Option<CameraStatus> {
        match self.inner.core.try_lock() {
            Ok(core) => Some(core.status(Instant::now())),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                Some(p.into_inner().status(Instant::now()))
            }
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Changes whenever a new frame arrives.
    pub fn frames(&self) -> watch::Receiver<u64> {
        self.inner.newest.subscribe()
    }

    fn render_request(&self, max_width_px: Option<u32>, quality: Option<u8>) -> RenderRequest {
        let c = &self.inner.config;
        RenderRequest {
            width_px_max: max_width_px.unwrap_or(c.image_width_px_default).max(16),
            quality: quality.unwrap_or(c.jpeg_quality_default).clamp(1, 100),
            bytes_max: c.image_bytes_max,
            pixels_max: c.frame_pixels_max,
        }
    }

    /// The newest fresh frame, downscaled and re-encoded under `camera.image_bytes_max`;
    /// with `save`, the full frame is also stored with EXIF.
    pub async fn capture(&self, request: CaptureRequest) -> Result<Captured, CaptureError> {
        let chosen_at = Instant::now();
        let candidates = {
            let core = self.core();
            let fresh = core.fresh_frames(chosen_at);
            if fresh.is_empty() {
                return Err(CaptureError::NoFrame(
                    core.latest(Instant::now()).err().unwrap_or(NoFrame::Never {
                        state: super::core::SourceState::Connecting,
                    }),
                ));
            }
            fresh
        };
        let render = self.render_request(request.max_width_px, request.jpeg_quality);
        let _permit = self
            .inner
            .encoders
            .acquire()
            .await
            .map_err(|_| CaptureError::Worker("the camera is shutting down".into()))?;
        let this = self.clone();
        let save = request.save;
        tokio::task::spawn_blocking(move || {
            let mut last_error = None;
            for frame in candidates {
                match jpeg::render(&frame.jpeg, render) {
                    Ok(image) => {
                        let saved = if save {
                            Some(this.save_blocking(&frame)?)
                        } else {
                            None
                        };
                        let meta = this.meta(&frame, chosen_at, &image, saved);
                        return Ok(Captured {
                            jpeg: image.jpeg,
                            meta,
                        });
                    }
                    Err(RenderError::Decode(e)) => {
                        this.core().handle_decode_failure(frame.seq, &e);
                        last_error = Some(RenderError::Decode(e));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(last_error
                .map(CaptureError::Render)
                .unwrap_or_else(|| CaptureError::Worker("no frame could be decoded".into())))
        })
        .await
        .map_err(|e| CaptureError::Worker(e.to_string()))?
    }

    fn meta(
        &self,
        frame: &Frame,
        chosen_at: Instant,
        image: &Encoded,
        saved: Option<CaptureInfo>,
    ) -> CaptureMeta {
        let v = &frame.vehicle;
        CaptureMeta {
            time: Utc::from_unix_ms(frame.received_unix_ms).iso8601(),
            age_ms: chosen_at
                .saturating_duration_since(frame.received)
                .as_millis() as u64,
            latitude_deg: v.latitude_deg,
            longitude_deg: v.longitude_deg,
            altitude_m: v.altitude_msl_m,
            altitude_relative_m: v.altitude_relative_m,
            heading_deg: v.heading_deg,
            roll_deg: v.roll_deg,
            pitch_deg: v.pitch_deg,
            position_stale: v.position_stale,
            width_px: image.width_px,
            height_px: image.height_px,
            bytes: image.jpeg.len(),
            jpeg_quality: image.quality,
            frame_width_px: frame.width_px,
            frame_height_px: frame.height_px,
            frame_seq: frame.seq,
            source: self.inner.config.source.to_string(),
            saved,
        }
    }

    /// Tags the full frame with EXIF and stores it (blocking).
    fn save_blocking(&self, frame: &Frame) -> Result<CaptureInfo, CaptureError> {
        let v = &frame.vehicle;
        let utc = Utc::from_unix_ms(frame.received_unix_ms);
        let segment = exif::app1_segment(
            &GeoTag {
                latitude_deg: v.latitude_deg,
                longitude_deg: v.longitude_deg,
                altitude_m: v.altitude_msl_m,
                heading_deg: v.heading_deg,
                unix_ms: frame.received_unix_ms,
            },
            &format!(
                "flight-companion frame {}: roll {:.1} deg, pitch {:.1} deg, yaw {:.1} deg, {:.1} m above home",
                frame.seq, v.roll_deg, v.pitch_deg, v.yaw_deg, v.altitude_relative_m
            ),
        );
        let tagged = exif::insert_app1(&frame.jpeg, &segment)
            .ok_or(RenderError::Frame(FrameError::NotJpeg))?;
        let info = CaptureInfo {
            id: format!("{}-{}", utc.compact(), frame.seq),
            time: utc.iso8601(),
            path: String::new(),
            bytes: 0,
            width_px: frame.width_px,
            height_px: frame.height_px,
            latitude_deg: v.latitude_deg,
            longitude_deg: v.longitude_deg,
            altitude_m: v.altitude_msl_m,
            altitude_relative_m: v.altitude_relative_m,
            heading_deg: v.heading_deg,
            roll_deg: v.roll_deg,
            pitch_deg: v.pitch_deg,
            position_stale: v.position_stale,
        };
        let c = &self.inner.config;
        let (info, evicted) = store::save(&c.captures_dir, info, &tagged, c.captures_bytes_max)?;
        if !evicted.is_empty() {
            tracing::info!(
                count = evicted.len(),
                "deleted the oldest captures to stay within camera.captures_bytes_max"
            );
        }
        Ok(info)
    }

    /// Saved captures, newest first.
    pub async fn list_captures(&self, limit: usize) -> Result<Vec<CaptureInfo>, CaptureError> {
        let dir = self.inner.config.captures_dir.clone();
        tokio::task::spawn_blocking(move || store::list(&dir, limit))
            .await
            .map_err(|e| CaptureError::Worker(e.to_string()))?
            .map_err(CaptureError::from)
    }

    /// A saved capture, downscaled like `capture` (its EXIF is not copied).
    pub async fn get_capture(
        &self,
        id: String,
        max_width_px: Option<u32>,
    ) -> Result<(Encoded, CaptureInfo), CaptureError> {
        let render = self.render_request(max_width_px, None);
        let dir = self.inner.config.captures_dir.clone();
        let _permit = self
            .inner
            .encoders
            .acquire()
            .await
            .map_err(|_| CaptureError::Worker("the camera is shutting down".into()))?;
        tokio::task::spawn_blocking(move || {
            let (full, info) = store::read(&dir, &id)?;
            let image = jpeg::render(&full, render)?;
            Ok((image, info))
        })
        .await
        .map_err(|e| CaptureError::Worker(e.to_string()))?
    }
}

/// Starts the camera: returns its handle and the source task.
pub fn spawn(
    config: CameraConfig,
    status: watch::Receiver<StatusReport>,
    shutdown: CancellationToken,
) -> (CameraHandle, tokio::task::JoinHandle<()>) {
    let core = CameraCore::new(
        config.source.to_string(),
        config.frames_buffered_max,
        Duration::from_millis(config.frame_age_ms_max),
    );
    let handle = CameraHandle {
        inner: Arc::new(Inner {
            encoders: Semaphore::new(config.encoders_concurrent_max.max(1)),
            core: Mutex::new(core),
            newest: watch::channel(0).0,
            config,
        }),
    };
    let source = Source {
        handle: handle.clone(),
        status,
    };
    let task = tokio::spawn(source.run(shutdown));
    (handle, task)
}

struct Source {
    handle: CameraHandle,
    status: watch::Receiver<StatusReport>,
}

/// How a source session ended.
type Ended = Result<(), String>;

impl Source {
    fn config(&self) -> &CameraConfig {
        &self.handle.inner.config
    }

    async fn run(self, shutdown: CancellationToken) {
        let c = self.config().clone();
        // No jitter (one camera); a session that delivered a frame is good again.
        let mut backoff = Backoff::new(
            Duration::from_millis(c.reconnect_backoff_ms_min),
            Duration::from_millis(c.reconnect_backoff_ms_max),
        );
        tracing::info!(source = %c.source, "camera starting");
        loop {
            let frames_before = self.handle.core().next_seq();
            let ended = tokio::select! {
                _ = shutdown.cancelled() => break,
                ended = self.session(&c.source) => ended,
            };
            if self.handle.core().next_seq() > frames_before {
                backoff.reset();
            }
            let retry_in = backoff.next_delay();
            if let Err(reason) = ended {
                tracing::warn!(source = %c.source, reason, ?retry_in, "camera source lost");
                self.handle.core().handle_source_down(reason);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(retry_in) => {}
            }
        }
        tracing::info!("camera stopped");
    }

    async fn session(&self, source: &CameraSource) -> Ended {
        let stall = Duration::from_millis(self.config().stall_timeout_ms);
        match source {
            CameraSource::Synthetic => self.synthetic().await,
            CameraSource::Tcp { host, port } => {
                let stream = tokio::time::timeout(
                    stall,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                .map_err(|_| format!("connecting to {host}:{port} timed out"))?
                .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
                self.stream(stream).await
            }
            CameraSource::Http { host, port, path } => {
                let mut stream = tokio::time::timeout(
                    stall,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await
                .map_err(|_| format!("connecting to {host}:{port} timed out"))?
                .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: flight-companion\r\nAccept: multipart/x-mixed-replace, image/jpeg\r\nConnection: close\r\n\r\n"
                );
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("cannot send the HTTP request: {e}"))?;
                self.stream(stream).await
            }
            CameraSource::V4l2 { device } => self.v4l2(device.clone()).await,
        }
    }

    /// Checks a frame's header and stores it with the vehicle state as it is now.
    fn ingest(&self, jpeg: Vec<u8>, vehicle: Option<VehicleAtCapture>) -> bool {
        let c = self.config();
        let mut core = self.handle.core();
        if jpeg.len() > c.frame_bytes_max {
            core.handle_rejected_frame(&FrameError::TooManyBytes {
                bytes: jpeg.len(),
                bytes_max: c.frame_bytes_max,
            });
            return false;
        }
        match jpeg::inspect(&jpeg, c.frame_pixels_max) {
            Ok(info) => {
                let vehicle = vehicle.unwrap_or_else(|| self.status.borrow().vehicle_at_capture());
                let frame = Frame {
                    seq: core.next_seq(),
                    jpeg: Arc::from(jpeg),
                    width_px: info.width_px,
                    height_px: info.height_px,
                    received: Instant::now(),
                    received_unix_ms: unix_ms_now(),
                    vehicle,
                };
                let seq = frame.seq;
                core.handle_frame(frame);
                drop(core);
                self.handle.inner.newest.send_replace(seq);
                true
            }
            Err(error) => {
                tracing::debug!(%error, "camera frame skipped");
                core.handle_rejected_frame(&error);
                false
            }
        }
    }

    async fn stream(&self, mut stream: impl AsyncRead + Unpin) -> Ended {
        let c = self.config().clone();
        let stall = Duration::from_millis(c.stall_timeout_ms);
        self.handle.core().handle_source_up();
        tracing::info!(source = %c.source, "camera source connected");
        let mut decoder = MultipartDecoder::new(c.frame_bytes_max);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut last_frame = tokio::time::Instant::now();
        loop {
            let deadline = last_frame + stall;
            let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Err(_) => {
                    return Err(format!("stalled: no frame for {} ms", c.stall_timeout_ms));
                }
                Ok(Err(e)) => return Err(format!("read error: {e}")),
                Ok(Ok(0)) => return Err("the source closed the stream".into()),
                Ok(Ok(n)) => n,
            };
            decoder.handle_bytes(chunk.get(..n).unwrap_or_default());
            while let Some(part) = decoder.poll_part() {
                match part {
                    Part::Frame(jpeg) => {
                        if self.ingest(jpeg, None) {
                            last_frame = tokio::time::Instant::now();
                        }
                    }
                    Part::Error(error) => {
                        tracing::debug!(%error, "camera stream error");
                        self.handle.core().handle_stream_error(&error);
                    }
                }
            }
            if decoder.ended() {
                return Err("the source ended the stream".into());
            }
        }
    }

    /// Renders the ground below the vehicle's reported position at `camera.frame_rate_hz`.
    async fn synthetic(&self) -> Ended {
        let c = self.config().clone();
        self.handle.core().handle_source_up();
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(c.frame_rate_hz)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let vehicle = self.status.borrow().vehicle_at_capture();
            let pose = synthetic::Pose {
                latitude_deg: vehicle.latitude_deg,
                longitude_deg: vehicle.longitude_deg,
                height_m: vehicle.altitude_relative_m,
                heading_deg: vehicle.heading_deg,
            };
            let (width, height, quality) = (c.width_px, c.height_px, 90);
            let jpeg = tokio::task::spawn_blocking(move || {
                jpeg::encode(&synthetic::render(pose, width, height), quality)
            })
            .await
            .map_err(|e| format!("renderer failed: {e}"))?
            .map_err(|e| e.to_string())?;
            self.ingest(jpeg, Some(vehicle));
        }
    }

    /// Reads MJPEG frames from a V4L2 device on a blocking thread.
    async fn v4l2(&self, device: std::path::PathBuf) -> Ended {
        let c = self.config().clone();
        // Two frames in flight at most. Overflow policy: the capture thread drops the new
        // frame when the queue is full (the consumer only ever wants the latest).
        let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>, String>>(2);
        let (width, height, rate) = (c.width_px, c.height_px, c.frame_rate_hz);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_thread = stop.clone();
        let _thread = tokio::task::spawn_blocking(move || {
            super::v4l2::capture(&device, width, height, rate, &tx, &stop_thread)
        });
        // The thread stops at its next frame once this session ends, whatever the reason.
        struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _stop = StopOnDrop(stop);
        let stall = Duration::from_millis(c.stall_timeout_ms);
        let mut up = false;
        loop {
            match tokio::time::timeout(stall, rx.recv()).await {
                Err(_) => return Err(format!("stalled: no frame for {} ms", c.stall_timeout_ms)),
                Ok(None) => return Err("the capture thread stopped".into()),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(jpeg))) => {
                    if !up {
                        self.handle.core().handle_source_up();
                        up = true;
                    }
                    self.ingest(jpeg, None);
                }
            }
        }
    }
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
