//! The telemetry ingest floor for BENCHMARKS.md (issue 17): the project's own sans-IO
//! `FrameDecoder` on one thread with blocking reads, nothing else. `benches/peers/run.sh`
//! runs it beside the daemon and the peers on the same telemetry, so every consumer's CPU
//! per message can be given as a ratio of this one.
//!
//! ```text
//! cargo build --release --example decode_floor
//! target/release/examples/decode_floor tcp:127.0.0.1:PORT
//! ```
//!
//! Connects, reads until the peer closes, and prints on stderr, once a second, the frames
//! decoded so far (the driver reads the CPU time from `/proc`, as for the others). Also
//! prints its own figure at the end: CPU time of the process per frame.

use std::io::Read as _;
use std::net::TcpStream;

use flight_companion::link::frame::FrameDecoder;

fn main() {
    let target = std::env::args().nth(1).unwrap_or_default();
    let Some(address) = target.strip_prefix("tcp:") else {
        eprintln!("usage: decode_floor tcp:HOST:PORT");
        std::process::exit(2);
    };
    let mut stream = match TcpStream::connect(address) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("decode_floor: cannot connect to {address}: {e}");
            std::process::exit(1);
        }
    };
    let mut decoder = FrameDecoder::new();
    let mut buffer = [0u8; 4096];
    let mut frames = 0u64;
    let mut last_report = std::time::Instant::now();
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.push(&buffer[..n]);
        while let Some(result) = decoder.poll() {
            if let Ok(frame) = result {
                std::hint::black_box(&frame.message);
                frames += 1;
            }
        }
        if last_report.elapsed().as_secs() >= 1 {
            eprintln!("decode_floor: {frames} frames");
            last_report = std::time::Instant::now();
        }
    }
    let counters = decoder.counters();
    let cpu_ns = std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    eprintln!(
        "decode_floor: {frames} frames, {} CRC errors, {} parse errors, {} unknown, {} garbage bytes, {:.2} us CPU per frame",
        counters.crc_errors,
        counters.parse_errors,
        counters.unknown_messages,
        counters.garbage_bytes,
        cpu_ns as f64 / 1000.0 / frames.max(1) as f64
    );
}
