//! Benchmark (not a test): camera frame → downscaled JPEG, the work of every
//! `capture_image`: decode the camera's JPEG, downscale to 640 px wide, encode at quality 80.
//!
//! Frames are 1080p and 4K renderings of the synthetic camera's ground texture, encoded at
//! quality 90, written to `target/camera-bench/` so that `tests/peers/bench_pillow.py` does
//! the same work on the same bytes with Pillow.
//! Two pipelines run on the same frames in the same process: the daemon's (`camera::jpeg`:
//! libjpeg-turbo at a reduced DCT scale, a SIMD resize, libjpeg-turbo's encoder) and the one
//! it replaced (`image` 0.25: zune-jpeg at full size, `thumbnail`, `image`'s encoder), so
//! the ratio between them does not depend on the machine's load.
//! Figures are CPU time of this thread (`CLOCK_THREAD_CPUTIME_ID`), which other processes
//! on the machine do not inflate, and wall time.
//! `cargo bench --bench camera [-- --runs 30]`

use std::io::Cursor;
use std::time::{Duration, Instant};

use flight_companion::camera::jpeg::{self, RenderRequest};
use flight_companion::camera::synthetic::{self, Pose};
use image::RgbImage;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn mean_ms(samples: &[Duration]) -> f64 {
    samples
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .sum::<f64>()
        / samples.len().max(1) as f64
}

fn min_ms(samples: &[Duration]) -> f64 {
    samples
        .iter()
        .min()
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The pipeline before issue 17: `image`'s decoder (zune-jpeg) at full size, area-averaging
/// `thumbnail`, `image`'s JPEG encoder.
fn previous_pipeline(frame: &[u8], width_px: u32, quality: u8) -> anyhow::Result<(Vec<u8>, u32)> {
    let full = image::ImageReader::with_format(Cursor::new(frame), image::ImageFormat::Jpeg)
        .decode()?
        .into_rgb8();
    let height_px = full.height() * width_px / full.width();
    let small: RgbImage = image::imageops::thumbnail(&full, width_px, height_px);
    let mut out = Vec::with_capacity(64 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&small)?;
    Ok((out, full.width()))
}

struct Samples {
    cpu: Vec<Duration>,
    wall: Vec<Duration>,
}

fn measure(runs: usize, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Samples> {
    work()?; // warm-up
    let mut samples = Samples {
        cpu: Vec::with_capacity(runs),
        wall: Vec::with_capacity(runs),
    };
    for _ in 0..runs {
        let (c0, t0) = (thread_cpu(), Instant::now());
        work()?;
        samples.cpu.push(thread_cpu() - c0);
        samples.wall.push(t0.elapsed());
    }
    Ok(samples)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/camera-bench");
    std::fs::create_dir_all(&dir)?;
    let pose = Pose {
        latitude_deg: 47.397742,
        longitude_deg: 8.545594,
        height_m: 60.0,
        heading_deg: 30.0,
    };
    println!("frame -> 640 px JPEG (quality 80), {runs} runs each, one thread; CPU of the thread");
    for (width, height) in [(1920u32, 1080u32), (3840, 2160)] {
        let frame = jpeg::encode(&synthetic::render(pose, width, height), 90)?;
        let path = dir.join(format!("frame-{width}x{height}.jpg"));
        std::fs::write(&path, &frame)?;
        let request = RenderRequest {
            width_px_max: 640,
            quality: 80,
            bytes_max: 1 << 30,
            pixels_max: 50_000_000,
        };
        let out = jpeg::render(&frame, request)?;
        let scaled = jpeg::decode_at_least(&frame, request.pixels_max, 640)?;
        let now = measure(runs, || {
            std::hint::black_box(jpeg::render(&frame, request)?);
            Ok(())
        })?;
        let decode = measure(runs, || {
            std::hint::black_box(jpeg::decode_at_least(&frame, request.pixels_max, 640)?);
            Ok(())
        })?;
        let resize = measure(runs, || {
            std::hint::black_box(jpeg::downscale(&scaled, 640));
            Ok(())
        })?;
        let small = jpeg::downscale(&scaled, 640);
        let encode = measure(runs, || {
            std::hint::black_box(jpeg::encode(&small, 80)?);
            Ok(())
        })?;
        let before = measure(runs, || {
            std::hint::black_box(previous_pipeline(&frame, 640, 80)?);
            Ok(())
        })?;
        println!(
            "rust {width}x{height} ({} KiB) -> {}x{} ({} KiB), decoded at {}x{}: CPU mean {:.2} ms, min {:.2} ms (decode {:.2}, resize {:.2}, encode {:.2}); wall mean {:.2} ms; frame in {}",
            frame.len() / 1024,
            out.width_px,
            out.height_px,
            out.jpeg.len() / 1024,
            scaled.width(),
            scaled.height(),
            mean_ms(&now.cpu),
            min_ms(&now.cpu),
            mean_ms(&decode.cpu),
            mean_ms(&resize.cpu),
            mean_ms(&encode.cpu),
            mean_ms(&now.wall),
            path.display()
        );
        println!(
            "rust-previous {width}x{height} (image 0.25: zune-jpeg full size, thumbnail, image's encoder): CPU mean {:.2} ms, min {:.2} ms; wall mean {:.2} ms; previous / now CPU {:.1}x",
            mean_ms(&before.cpu),
            min_ms(&before.cpu),
            mean_ms(&before.wall),
            mean_ms(&before.cpu) / mean_ms(&now.cpu).max(1e-9),
        );
    }
    Ok(())
}
