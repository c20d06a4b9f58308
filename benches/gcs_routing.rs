//! Benchmark (not a test): what routing the vehicle's telemetry to ground-station endpoints
//! (issue 19) costs the daemon, in CPU per forwarded message, next to mavlink-routerd's.
//!
//! `cargo bench --bench gcs_routing -- [--rate 2000] [--seconds 10] [--endpoints 1] [--tlog] [--runs 3]`
//!
//! A fake autopilot of this harness (a TCP server the daemon connects to, as to SITL) sends
//! `--rate` MAVLink 2 frames per second (a heartbeat each second, the rest ATTITUDE,
//! GLOBAL_POSITION_INT, SYS_STATUS and VFR_HUD in turn). The daemon (this build, MQTT off)
//! runs twice per round at the same rate: without ground-station endpoints (the baseline),
//! then with `--endpoints` `monitor` endpoints (`udpout` to UDP sockets of this harness,
//! which count what arrives). CPU is the process's CPU-time clock (`testkit::cpu`) over
//! the measured window (nanoseconds on a CPU, which other processes on a shared machine do not
//! inflate); the routing cost is (CPU with − CPU without) / messages forwarded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flight_companion::link::MavMessage;
use flight_companion::link::dialect::*;
use flight_companion::link::frame::FrameEncoder;
use flight_companion_testkit::cpu::process_cpu_ns as cpu_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const BINARY: &str = env!("CARGO_BIN_EXE_flight-companion");
const WARM_UP: Duration = Duration::from_secs(3);

struct Args {
    rate: u32,
    seconds: u64,
    endpoints: usize,
    tlog: bool,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rate: 2000,
        seconds: 10,
        endpoints: 1,
        tlog: false,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().context("a value is missing");
        match arg.as_str() {
            "--rate" => a.rate = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--endpoints" => a.endpoints = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--tlog" => a.tlog = true,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn telemetry(i: u64) -> MavMessage {
    match i % 4 {
        0 => MavMessage::ATTITUDE(ATTITUDE_DATA {
            time_boot_ms: i as u32,
            roll: 0.01,
            ..Default::default()
        }),
        1 => MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
            time_boot_ms: i as u32,
            lat: 473_977_420,
            lon: 85_455_940,
            alt: 488_000,
            ..Default::default()
        }),
        2 => MavMessage::SYS_STATUS(SYS_STATUS_DATA {
            voltage_battery: 12_600,
            battery_remaining: 90,
            ..Default::default()
        }),
        _ => MavMessage::VFR_HUD(VFR_HUD_DATA {
            alt: 488.0,
            ..Default::default()
        }),
    }
}

fn heartbeat() -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype: MavType::MAV_TYPE_QUADROTOR,
        autopilot: MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
        base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
        system_status: MavState::MAV_STATE_STANDBY,
        mavlink_version: 3,
    })
}

/// The fake autopilot: serves one connection at `rate` frames per second until dropped.
async fn autopilot(listener: TcpListener, rate: u32, sent: Arc<AtomicU64>) {
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut encoder = FrameEncoder::new(1, 1);
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1) as u64;
    let mut interval = tokio::time::interval(tick);
    let mut i = 0u64;
    loop {
        interval.tick().await;
        let mut bytes = Vec::new();
        for _ in 0..per_tick {
            let m = if i % u64::from(rate) == 0 {
                heartbeat()
            } else {
                telemetry(i)
            };
            bytes.extend(encoder.encode(&m));
            i += 1;
        }
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
        sent.fetch_add(per_tick, Ordering::Relaxed);
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One measured run: (CPU ns in the window, frames sent, frames received by the endpoints).
async fn run(dir: &Path, a: &Args, endpoints: usize) -> anyhow::Result<(u64, u64, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let sent = Arc::new(AtomicU64::new(0));
    let autopilot_task = tokio::spawn(autopilot(listener, a.rate, sent.clone()));
    let received = Arc::new(AtomicU64::new(0));
    let mut config = format!(
        "[vehicle]\nlink = \"tcpout:127.0.0.1:{port}\"\n\n[mqtt]\nenabled = false\n\n\
         [audit]\ndir = \"{}\"\n\n[estop]\nsocket_path = \"\"\n",
        dir.join(format!("audit-{endpoints}")).display()
    );
    let mut sockets = Vec::new();
    for n in 0..endpoints {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        config.push_str(&format!(
            "\n[[gcs_endpoint]]\nname = \"bench{n}\"\nlink = \"udpout:127.0.0.1:{}\"\n",
            socket.local_addr()?.port()
        ));
        sockets.push(socket);
    }
    if a.tlog && endpoints > 0 {
        config.push_str(&format!(
            "\n[gcs]\ntlog_path = \"{}\"\n",
            dir.join("bench.tlog").display()
        ));
    }
    let mut receivers = Vec::new();
    for socket in sockets {
        let received = received.clone();
        receivers.push(tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while socket.recv(&mut buf).await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let path = dir.join(format!("bench-{endpoints}.toml"));
    std::fs::write(&path, config)?;
    let mut child = Command::new(BINARY)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env("STATE_DIRECTORY", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the daemon")?;
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        if let Some(e) = stderr {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                eprintln!("daemon: {line}");
            }
        }
    });
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    tokio::time::sleep(WARM_UP).await;
    let (cpu0, sent0, recv0) = (
        cpu_ns(pid),
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (cpu1, sent1, recv1) = (
        cpu_ns(pid),
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let wall = t0.elapsed().as_secs_f64();
    drop(daemon);
    autopilot_task.abort();
    for r in receivers {
        r.abort();
    }
    eprintln!(
        "  endpoints {endpoints}: {:.0} frames/s from the autopilot, {:.0} forwarded/s",
        (sent1 - sent0) as f64 / wall,
        (recv1 - recv0) as f64 / wall
    );
    Ok((cpu1 - cpu0, sent1 - sent0, recv1 - recv0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = std::env::temp_dir().join(format!("gcs-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "| round | baseline µs CPU/frame | with {} endpoint(s) µs CPU/frame | frames forwarded | routing µs CPU per forwarded frame |",
        a.endpoints
    );
    println!("|---:|---:|---:|---:|---:|");
    for round in 1..=a.runs {
        let (cpu_base, sent_base, _) = run(&dir, &a, 0).await?;
        let (cpu_with, sent_with, forwarded) = run(&dir, &a, a.endpoints).await?;
        let per = |cpu: u64, n: u64| cpu as f64 / 1000.0 / n.max(1) as f64;
        // The baseline's CPU scaled to the same number of frames from the autopilot.
        let base_scaled = cpu_base as f64 * sent_with as f64 / sent_base.max(1) as f64;
        let routing = (cpu_with as f64 - base_scaled) / 1000.0 / forwarded.max(1) as f64;
        println!(
            "| {round} | {:.2} | {:.2} | {forwarded} | {routing:.2} |",
            per(cpu_base, sent_base),
            per(cpu_with, sent_with),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
