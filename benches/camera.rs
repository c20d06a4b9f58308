//! Benchmark (not a test): camera frame → downscaled JPEG, the work of every
//! `capture_image`: decode the camera's JPEG, downscale to 640 px wide, encode at quality 80.
//!
//! Frames are 1080p and 4K renderings of the synthetic camera's ground texture, encoded at
//! quality 90, written to `target/camera-bench/` so that `tests/peers/bench_pillow.py` does
//! the same work on the same bytes with Pillow.
//! `cargo bench --bench camera [-- --runs 30]`

use std::time::{Duration, Instant};

use flight_companion::camera::jpeg::{self, RenderRequest};
use flight_companion::camera::synthetic::{self, Pose};

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len().max(1) as f64;
    let p50 = samples.get(samples.len() / 2).map_or(0.0, |d| ms(*d));
    let min = samples.first().map_or(0.0, |d| ms(*d));
    (mean, p50, min)
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
    println!("frame -> 640 px JPEG (quality 80), {runs} runs each, one thread");
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
        // Warm-up.
        let out = jpeg::render(&frame, request)?;
        let (mut total, mut decode, mut scale_encode) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let t0 = Instant::now();
            let full = jpeg::decode(&frame, request.pixels_max)?;
            let t1 = Instant::now();
            let small = jpeg::fit(&full, request)?;
            let t2 = Instant::now();
            std::hint::black_box(small);
            total.push(t2 - t0);
            decode.push(t1 - t0);
            scale_encode.push(t2 - t1);
        }
        let (mean, p50, min) = stats(total);
        let (decode_mean, _, _) = stats(decode);
        let (rest_mean, _, _) = stats(scale_encode);
        println!(
            "rust {width}x{height} ({} KiB) -> {}x{} ({} KiB): mean {mean:.1} ms, p50 {p50:.1} ms, min {min:.1} ms (decode {decode_mean:.1} ms, downscale+encode {rest_mean:.1} ms); frame in {}",
            frame.len() / 1024,
            out.width_px,
            out.height_px,
            out.jpeg.len() / 1024,
            path.display()
        );
    }
    Ok(())
}
