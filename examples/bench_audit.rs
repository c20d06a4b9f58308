//! Figures for BENCHMARKS.md (issue 15): the audit log's append cost per fsync policy,
//! checkpoint signing, and the daemon's start-up time and idle memory with a 10⁶-record log
//! against an empty one. CPU time per unit of work from the kernel's CPU-time clocks (`testkit::cpu`:
//! nanoseconds on a CPU), and ratios against a baseline measured in the same run.
//!
//! ```text
//! cargo build --release --bin flight-companion --example bench_audit
//! target/release/examples/bench_audit --daemon target/release/flight-companion [--records 1000000] [--dir DIR]
//! ```

use std::io::Read as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flight_companion::audit::checkpoint::{AuditKey, Checkpoint};
use flight_companion::audit::log::{FsyncPolicy, LogWriter, WriterOptions};
use flight_companion::audit::{Call, Event};
use flight_companion_testkit::cpu::{process_cpu_ns, thread_cpu_ns};

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn call(i: u64) -> Event {
    let (args_sha256, args) =
        Call::args_of(r#"{"latitude_deg":47.3977,"longitude_deg":8.5456,"altitude_m":30.0}"#);
    Event::Call(Call {
        session: "ground-7f3a".into(),
        subject: "pilot".into(),
        role: "OPERATOR".into(),
        target: "tools/call:goto".into(),
        request_id: i.to_string(),
        args_sha256,
        args,
        decision: "allow".into(),
        reason: String::new(),
        outcome: "ok".into(),
        latency_us: 812,
    })
}

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[11; 32])
}

const ORIGIN: &str = "flight-companion/drone/audit";

fn writer(dir: &Path, fsync: FsyncPolicy) -> LogWriter {
    LogWriter::open(WriterOptions {
        dir: dir.to_owned(),
        file_bytes_max: 4 << 20,
        fsync,
        fsync_interval: Duration::from_millis(1000),
        key: Some(AuditKey::new(key(), ORIGIN).unwrap()),
        retention_bytes_max: u64::MAX,
        retention_age_max: None,
    })
    .unwrap()
    .0
}

fn appends(base: &Path) {
    let mut never_cpu = 0.0;
    let mut never_wall = 0.0;
    for (policy, n) in [
        (FsyncPolicy::Never, 50_000u64),
        (FsyncPolicy::Interval, 50_000),
        (FsyncPolicy::Always, 1_000),
    ] {
        let dir = base.join(format!("append-{policy:?}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = writer(&dir, policy);
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        for i in 0..n {
            w.append(i, call(i)).unwrap();
        }
        w.sync().unwrap();
        let cpu = (thread_cpu_ns() - cpu0) as f64 / n as f64 / 1000.0;
        let wall = wall0.elapsed().as_secs_f64() * 1e6 / n as f64;
        if policy == FsyncPolicy::Never {
            (never_cpu, never_wall) = (cpu, wall);
        }
        println!(
            "append, fsync {policy:?}: {cpu:.2} us CPU and {wall:.2} us wall per ~300-byte record \
             ({n} records; x{:.2} CPU and x{:.1} wall of `never`)",
            cpu / never_cpu,
            wall / never_wall
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn checkpoints(base: &Path) {
    let k = AuditKey::new(key(), ORIGIN).unwrap();
    let n = 2000u64;
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 1_000_000,
        root: [7; 32],
    };
    let cpu0 = thread_cpu_ns();
    for _ in 0..n {
        std::hint::black_box(k.sign(&cp).unwrap());
    }
    let sign = (thread_cpu_ns() - cpu0) as f64 / n as f64 / 1000.0;
    println!(
        "checkpoint note signing (Ed25519, signed_note): {sign:.1} us CPU per note ({n} notes)"
    );
    // The whole checkpoint: sync, RFC 9162 consistency proof over 1000 new records, sign,
    // write `checkpoint` (rename), every 1000 records.
    let dir = base.join("checkpoints");
    let _ = std::fs::remove_dir_all(&dir);
    let mut w = writer(&dir, FsyncPolicy::Never);
    let rounds = 100u64;
    let (mut cpu_cp, mut cpu_rec) = (0u64, 0u64);
    for r in 0..rounds {
        let t = thread_cpu_ns();
        for i in 0..1000 {
            w.append(r * 1000 + i, call(i)).unwrap();
        }
        let t2 = thread_cpu_ns();
        w.checkpoint().unwrap();
        cpu_cp += thread_cpu_ns() - t2;
        cpu_rec += t2 - t;
    }
    let per_cp = cpu_cp as f64 / rounds as f64 / 1000.0;
    let per_1000 = cpu_rec as f64 / rounds as f64 / 1000.0;
    println!(
        "checkpoint every 1000 records (sync, proof, sign, write): {per_cp:.1} us CPU each, \
         {:.2} of the CPU of appending those 1000 records ({per_1000:.0} us)",
        per_cp / per_1000
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log of `records` records, closed with a checkpoint.
fn make_log(dir: &Path, records: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let mut w = writer(dir, FsyncPolicy::Never);
    for i in 0..records {
        w.append(i, call(i)).unwrap();
        let _ = w.take_pending();
    }
    w.append(
        records,
        Event::DaemonStop {
            reason: "bench".into(),
        },
    )
    .unwrap();
    w.checkpoint().unwrap();
    w.sync().unwrap();
}

struct Start {
    ready_ms: f64,
    cpu_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn start_daemon(daemon: &Path, work: &Path, audit: &Path) -> Start {
    let config = work.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nlink = \"udpin:127.0.0.1:0\"\n[mqtt]\nenabled = false\n[estop]\nsocket_path = \"\"\n\
             [audit]\ndir = \"{}\"\nsigning_key_path = \"{}\"\nretention_bytes_max = 1099511627776\n",
            audit.display(),
            work.join("key.pem").display()
        ),
    )
    .unwrap();
    let socket_path = work.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut child = Command::new(daemon)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "warn")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut buffer = [0u8; 4096];
    let ready_ms = loop {
        let n = socket.recv(&mut buffer).expect("READY=1 within 60 s");
        if String::from_utf8_lossy(&buffer[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
    };
    let cpu_ms = process_cpu_ns(pid) as f64 / 1e6;
    // Idle: the first checkpoint is signed, nothing else happens.
    std::thread::sleep(Duration::from_secs(5));
    let rss_kib = status_kib(pid, "VmRSS:");
    let hwm_kib = status_kib(pid, "VmHWM:");
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(status.success(), "daemon: {status}: {stderr}");
    Start {
        ready_ms,
        cpu_ms,
        rss_kib,
        hwm_kib,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let base = arg("--dir").map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("fc-bench-audit-{}", std::process::id()))
    });
    std::fs::create_dir_all(&base).unwrap();
    appends(&base);
    checkpoints(&base);
    let Some(daemon) = arg("--daemon").map(PathBuf::from) else {
        println!("(pass --daemon target/release/flight-companion for start-up and idle memory)");
        return;
    };
    let records: u64 = arg("--records")
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000);
    let key_path = base.join("key.pem");
    let _ = std::fs::remove_file(&key_path);
    std::fs::write(
        &key_path,
        ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(
            &key(),
            ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
        )
        .unwrap()
        .as_bytes(),
    )
    .unwrap();
    let (empty, full) = (base.join("log-empty"), base.join("log-full"));
    let t = Instant::now();
    make_log(&full, records);
    let bytes: u64 = flight_companion::audit::log::list_files(&full)
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    println!(
        "made a log of {records} records ({:.0} MiB in {} files) in {:.1} s",
        bytes as f64 / 1048576.0,
        flight_companion::audit::log::list_files(&full)
            .unwrap()
            .len(),
        t.elapsed().as_secs_f64()
    );
    make_log(&empty, 0);
    println!("| log | run | start to READY ms | CPU to READY ms | idle RSS KiB | peak RSS KiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut sums = [(0.0, 0.0, 0u64), (0.0, 0.0, 0u64)];
    let runs = 3;
    for run in 1..=runs {
        for (i, (name, dir)) in [("empty", &empty), ("10^6 records", &full)]
            .iter()
            .enumerate()
        {
            let s = start_daemon(&daemon, &base, dir);
            println!(
                "| {name} | {run} | {:.1} | {:.1} | {} | {} |",
                s.ready_ms, s.cpu_ms, s.rss_kib, s.hwm_kib
            );
            sums[i].0 += s.ready_ms;
            sums[i].1 += s.cpu_ms;
            sums[i].2 += s.rss_kib;
        }
    }
    let n = runs as f64;
    println!(
        "ratios (10^6 / empty, means of {runs}): start-up {:.2}, CPU to READY {:.2}, idle RSS {:.2}",
        (sums[1].0 / n) / (sums[0].0 / n),
        (sums[1].1 / n) / (sums[0].1 / n),
        (sums[1].2 as f64 / n) / (sums[0].2 as f64 / n)
    );
    let _ = std::fs::remove_dir_all(&base);
}
