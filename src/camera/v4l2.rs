//! V4L2 capture (USB cameras, the Raspberry Pi camera through its V4L2 interface) with the
//! `linuxvideo` crate: plain ioctls through `libc`, no bindgen, so it cross-compiles.
//!
//! Only compressed formats are accepted (MJPEG, or JPEG): the camera's own encoder does
//! the heavy work, and frames reach the rest of the pipeline in the same form as from a
//! network stream. Runs on a blocking thread; frames go out through a bounded channel.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

/// Frames (or the reason capture stopped) for the async side.
pub type FrameSender = mpsc::Sender<Result<Vec<u8>, String>>;

/// Opens `device`, negotiates MJPEG near `width` x `height` at `rate_hz`, and sends frames
/// until `stop` is set or the receiver is gone. A full channel drops the new frame.
#[cfg(target_os = "linux")]
pub fn capture(
    device: &Path,
    width: u32,
    height: u32,
    rate_hz: f32,
    tx: &FrameSender,
    stop: &AtomicBool,
) {
    if let Err(error) = capture_inner(device, width, height, rate_hz, tx, stop) {
        let _ = tx.blocking_send(Err(format!("{}: {error}", device.display())));
    }
}

#[cfg(target_os = "linux")]
fn capture_inner(
    device: &Path,
    width: u32,
    height: u32,
    rate_hz: f32,
    tx: &FrameSender,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    use linuxvideo::format::{PixFormat, PixelFormat};
    use linuxvideo::{BufType, Device, Fract};

    let dev = Device::open(device)?;
    let formats: Vec<PixelFormat> = dev
        .formats(BufType::VIDEO_CAPTURE)
        .filter_map(|f| f.ok().map(|f| f.pixel_format()))
        .collect();
    let format = [PixelFormat::MJPG, PixelFormat::JPEG]
        .into_iter()
        .find(|f| formats.contains(f))
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "the device offers no MJPEG or JPEG format (it offers {formats:?}); \
                 use a pipeline such as GStreamer with jpegenc and camera.source = tcp:..."
            ))
        })?;
    let capture = dev.video_capture(PixFormat::new(width, height, format))?;
    let milli_hz = (rate_hz * 1000.0).round().max(1.0) as u32;
    // Not every driver supports setting the rate; the device's own rate is fine then.
    let _ = capture.set_frame_interval(Fract::new(1000, milli_hz));
    tracing::info!(
        device = %device.display(),
        format = ?capture.format(),
        "V4L2 capture started"
    );
    let mut stream = capture.into_stream()?;
    while !stop.load(Ordering::SeqCst) && !tx.is_closed() {
        let frame = stream.dequeue(|buf| {
            if buf.is_error() {
                return Ok(None);
            }
            Ok(Some(buf.to_vec()))
        })?;
        if let Some(frame) = frame {
            // Full: the consumer is behind; this frame is dropped, a newer one follows.
            let _ = tx.try_send(Ok(frame));
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn capture(
    device: &Path,
    _width: u32,
    _height: u32,
    _rate_hz: f32,
    tx: &FrameSender,
    _stop: &AtomicBool,
) {
    let _ = tx.blocking_send(Err(format!(
        "{}: V4L2 is only available on Linux",
        device.display()
    )));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_reported_with_its_path() {
        let (tx, mut rx) = mpsc::channel(2);
        let stop = AtomicBool::new(false);
        capture(
            Path::new("/dev/video-does-not-exist"),
            640,
            480,
            5.0,
            &tx,
            &stop,
        );
        let message = rx.try_recv().unwrap().unwrap_err();
        assert!(
            message.starts_with("/dev/video-does-not-exist: "),
            "{message}"
        );
    }
}
