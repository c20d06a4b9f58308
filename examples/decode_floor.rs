//! The telemetry ingest floor for BENCHMARKS.md (issue 17): the project's own sans-IO
//! `FrameDecoder` on one thread with blocking reads, nothing else. `benches/peers/run.sh`
//! runs it beside the daemon and the peers on the same telemetry, so every consumer's CPU
//! per message can be given as a ratio of this one.
//!
//! ```text
//! cargo build --release --example decode_floor
//! target/release/examples/decode_floor [--tokio] tcp:127.0.0.1:PORT
//! ```
//!
//! Connects, reads until the peer closes, and prints on stderr, once a second, the frames
//! decoded so far (the driver reads the CPU time from `/proc`, as for the others). Also
//! prints its own figure at the end: CPU time of the process per frame.
//!
//! `--tokio` reads the same stream the way the daemon's link task does, on a single-threaded
//! tokio runtime (epoll, a readiness wake-up per read) instead of a blocking `read`: the floor
//! of an async reader, which tells how much of the daemon's CPU per message the runtime
//! costs before the daemon does anything with a frame.

use std::io::Read as _;
use std::net::TcpStream;

use flight_companion::link::frame::FrameDecoder;

/// The decoder and what it has decoded so far.
struct Consumer {
    name: &'static str,
    decoder: FrameDecoder,
    frames: u64,
    last_report: std::time::Instant,
}

impl Consumer {
    fn new(name: &'static str) -> Consumer {
        Consumer {
            name,
            decoder: FrameDecoder::new(),
            frames: 0,
            last_report: std::time::Instant::now(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
        while let Some(result) = self.decoder.poll_boxed() {
            if let Ok(frame) = result {
                std::hint::black_box(&frame.message);
                self.frames += 1;
                self.decoder.recycle(frame);
            }
        }
        if self.last_report.elapsed().as_secs() >= 1 {
            eprintln!("{}: {} frames", self.name, self.frames);
            self.last_report = std::time::Instant::now();
        }
    }

    fn report(&self) {
        let counters = self.decoder.counters();
        let cpu_ns = flight_companion_testkit::cpu::process_cpu_ns(std::process::id());
        eprintln!(
            "{}: {} frames, {} CRC errors, {} parse errors, {} unknown, {} garbage bytes, {:.2} us CPU per frame",
            self.name,
            self.frames,
            counters.crc_errors,
            counters.parse_errors,
            counters.unknown_messages,
            counters.garbage_bytes,
            cpu_ns as f64 / 1000.0 / self.frames.max(1) as f64
        );
    }
}

fn blocking(address: &str) -> std::io::Result<Consumer> {
    let mut stream = TcpStream::connect(address)?;
    let mut consumer = Consumer::new("decode_floor");
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return Ok(consumer),
            Ok(n) => consumer.feed(&buffer[..n]),
        }
    }
}

fn on_tokio(address: &str) -> std::io::Result<Consumer> {
    use tokio::io::AsyncReadExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let mut consumer = Consumer::new("decode_floor --tokio");
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return Ok(consumer),
                Ok(n) => consumer.feed(&buffer[..n]),
            }
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tokio = args.iter().any(|a| a == "--tokio");
    let target = args.iter().find(|a| !a.starts_with("--"));
    let Some(address) = target.and_then(|t| t.strip_prefix("tcp:")) else {
        eprintln!("usage: decode_floor [--tokio] tcp:HOST:PORT");
        std::process::exit(2);
    };
    let consumer = if tokio {
        on_tokio(address)
    } else {
        blocking(address)
    };
    match consumer {
        Ok(consumer) => consumer.report(),
        Err(e) => {
            eprintln!("decode_floor: cannot connect to {address}: {e}");
            std::process::exit(1);
        }
    }
}
