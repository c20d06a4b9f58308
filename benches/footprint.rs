//! Benchmark (not a test): what the daemon and the ground bridge cost a Raspberry Pi at rest
//! and under calls: idle memory, memory per session and per call, daemon CPU per
//! `get_status` call and calls per second with 10 sessions under the audit's fsync policy.
//!
//! `cargo bench --bench footprint -- [--daemon PATH] [--ground PATH | --ground-from-daemon] [--idle-s 10] [--sessions 20] [--cycles 3] [--calls 4000] [--fsync always|interval|never] [--no-null] [--keep]`
//!
//! It starts everything itself in a temporary directory, as BENCHMARKS.md's commands do by
//! hand: `dev-setup`, Mosquitto (mTLS), `sim` and the daemon (this build, or `--daemon`: an
//! older binary measured by the same harness for a before/after in the same run), then the
//! ground bridge, its stdin held open by the harness: the ground station's binary
//! `flight-companion-ground` (this build's, or `--ground PATH`), or with `--ground-from-daemon`
//! the daemon's binary as `DAEMON ground`.
//!
//! Memory is `VmRSS` (and `RssAnon`, `VmHWM`, `Threads`) of `/proc/PID/status` after a
//! fixed idle time; CPU is the process's CPU-time clock (`testkit::cpu`: nanoseconds on a
//! CPU, which other processes on a shared machine do not inflate).
//! Per session: N sessions are opened (each its own certificate, MQTT connection and MCP
//! session), measured, closed (`notifications/disconnected`), measured again after 3 s;
//! `--cycles` times, so that memory the first cycle kept for reuse is told apart from memory
//! that grows.
//! Per call: 10 sessions call `get_status` back to back, in two passes of `--calls` each;
//! the RSS after each pass shows whether memory stays flat per call.
//! Then, in the same run (unless `--no-null`), the floor: the daemon stops, and the same
//! passes go to a null MCP server (`hil::bench::serve_null_mcp`: the daemon's MQTT stack
//! answering with bytes of the same size and doing nothing else) in a process of its own;
//! each pass prints the daemon's CPU per call and p50 over the floor's. Both servers also get
//! two passes from one session alone: the latency of a call with nothing queued beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flight_companion::ground::config::GroundConfig;
use flight_companion::hil::bench::{discover, percentiles, serve_null_mcp, session, tool_result};
use flight_companion::hil::client::Client;
use flight_companion::mcp::transport::Topics;
use flight_companion_testkit::cpu::process_cpu_ns as cpu_ns;
use flight_companion_testkit::{AsyncProc as Proc, free_port, mosquitto_path};
use serde_json::json;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

const BINARY: &str = env!("CARGO_BIN_EXE_flight-companion");
const GROUND_BINARY: &str = env!("CARGO_BIN_EXE_flight-companion-ground");
const START_WAIT: Duration = Duration::from_secs(30);

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .context(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: {e}")),
    }
}

/// Fields of `/proc/PID/status` in KiB (and `Threads`).
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss_kib: u64,
    anon_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            hwm_kib: field("VmHWM:"),
            threads: field("Threads:"),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {:.2} MiB (RssAnon {:.2} MiB), VmHWM {:.2} MiB, {} threads",
            self.rss_kib as f64 / 1024.0,
            self.anon_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0,
            self.threads
        )
    }
}

/// dev-setup's drone.toml with the simulator's link, call limits a busy client does not
/// hit, room for the sessions and the audit's fsync policy.
fn daemon_config(
    dir: &Path,
    sim_port: u16,
    fsync: &str,
    sessions: usize,
) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(dir.join("drone.toml"))?;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("link = ") {
            out.push_str(&format!("link = \"tcpout:127.0.0.1:{sim_port}\"\n"));
            continue;
        }
        if line.starts_with("revocation_path = ") {
            out.push_str("calls_per_s = 5000.0\ncalls_burst = 5000\n");
        }
        if line.starts_with("server_id = ") {
            // Every session here runs as the dev OPERATOR: the per-identity limits are
            // raised so that they, not the daemon, are not what is measured.
            out.push_str(&format!(
                "sessions_max = {}\nidentity_sessions_max = {}\ncalls_concurrent_max = 64\nidentity_calls_concurrent_max = 64\n",
                sessions + 16,
                sessions + 16
            ));
        }
        out.push_str(line);
        out.push('\n');
        if line == "[audit]" {
            out.push_str(&format!("fsync = \"{fsync}\"\n"));
        }
    }
    let path = dir.join("drone-footprint.toml");
    std::fs::write(&path, out)?;
    Ok(path)
}

fn token(dev: &Path, role: &str) -> anyhow::Result<String> {
    Ok(
        std::fs::read_to_string(dev.join("tokens").join(format!("{role}.jwt")))?
            .trim()
            .to_owned(),
    )
}

/// One session calling `get_status` sequentially, `calls` times after `start`; with the
/// time each call took, from its request to its answer.
async fn caller(
    mut session: Client,
    calls: usize,
    start: Arc<Barrier>,
) -> anyhow::Result<(Client, Vec<Duration>)> {
    start.wait().await;
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let result = session.call_tool("get_status", json!({})).await?;
        took.push(started.elapsed());
        tool_result("get_status", result)?;
    }
    Ok((session, took))
}

/// What one calls pass measured of a server.
struct Pass {
    cpu_us_per_call: f64,
    p50: Duration,
}

/// `passes` passes of `open.len()` sessions calling `get_status` back to back, `per` calls
/// each, against the server `pid`: one line each, named `what`.
async fn calls_passes(
    what: &str,
    pid: u32,
    open: &mut Vec<Client>,
    per: usize,
    fsync: &str,
) -> anyhow::Result<Vec<Pass>> {
    let callers = open.len();
    let mut passes = Vec::new();
    for pass in 1..=2 {
        let start = Arc::new(Barrier::new(callers + 1));
        let tasks: Vec<_> = open
            .drain(..)
            .map(|s| tokio::spawn(caller(s, per, start.clone())))
            .collect();
        start.wait().await;
        let (cpu0, t0) = (cpu_ns(pid), Instant::now());
        let mut took = Vec::with_capacity(per * callers);
        for t in tasks {
            let (session, times) = t.await??;
            open.push(session);
            took.extend(times);
        }
        let wall = t0.elapsed();
        let cpu = cpu_ns(pid) - cpu0;
        let n = per * callers;
        let (p50, p99, _) = percentiles(&mut took).context("no calls")?;
        let cpu_us_per_call = cpu as f64 / 1000.0 / n as f64;
        println!(
            "{what} calls pass {pass}: {callers} session{} x {per} get_status, fsync = {fsync}: {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms, CPU {cpu_us_per_call:.1} us per call; {}",
            if callers == 1 { "" } else { "s" },
            n as f64 / wall.as_secs_f64(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            Memory::of(pid)
        );
        passes.push(Pass {
            cpu_us_per_call,
            p50,
        });
    }
    Ok(passes)
}

/// The passes of [`calls_passes`] with every session of `open`, then with its first session
/// alone (the latency of a call without the others queued beside it).
async fn all_then_one(
    what: &str,
    pid: u32,
    open: &mut Vec<Client>,
    per: usize,
    fsync: &str,
) -> anyhow::Result<Passes> {
    let all = calls_passes(what, pid, open, per, fsync).await?;
    let mut one = vec![open.remove(0)];
    let alone = calls_passes(&format!("{what}, 1 session"), pid, &mut one, per, fsync).await;
    open.splice(0..0, one);
    Ok(Passes { all, one: alone? })
}

/// What [`all_then_one`] measured.
struct Passes {
    all: Vec<Pass>,
    one: Vec<Pass>,
}

/// The same 10 sessions' worth of calls, in the same run, against a server that does no work:
/// [`serve_null_mcp`] in a process of its own (this executable with `--serve-null`), as the
/// drone on the same broker once the daemon has stopped; then each pass's ratio.
#[allow(clippy::too_many_arguments)]
async fn null_floor(
    dir: &Path,
    config: &Path,
    ground: &GroundConfig,
    (sid, name): (&str, &str),
    operator: &str,
    answer_bytes: usize,
    daemon: &Passes,
    (callers, per): (usize, usize),
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("--serve-null")
        .arg(config)
        .args(["--sid", sid, "--name", name])
        .args(["--answer-bytes", &answer_bytes.to_string()]);
    command.stdin(Stdio::piped());
    let mut null = Proc::spawn("null-server", Some(dir), command)?;
    null.wait_for_line("null server: ready", START_WAIT).await?;
    let mut open = Vec::new();
    for i in 0..callers {
        open.push(
            session(
                ground,
                &format!("fp-null-{i}"),
                sid,
                name,
                Some(operator),
                stop,
            )
            .await?,
        );
    }
    for s in open.iter_mut() {
        for _ in 0..20 {
            s.call_tool("get_status", json!({})).await?;
        }
    }
    let floor = all_then_one("null server", null.pid(), &mut open, per, "none").await?;
    let pairs = (daemon.all.iter().zip(&floor.all)).map(|pair| (callers, pair));
    let alone = (daemon.one.iter().zip(&floor.one)).map(|pair| (1, pair));
    for (pass, (sessions, (d, f))) in pairs.chain(alone).enumerate() {
        println!(
            "pass {} ({sessions} session{}): daemon / null server: CPU per call {:.2}x ({:.1} / {:.1} us), p50 {:.2}x ({:.3} / {:.3} ms); answers of {answer_bytes} B",
            pass % 2 + 1,
            if sessions == 1 { "" } else { "s" },
            d.cpu_us_per_call / f.cpu_us_per_call,
            d.cpu_us_per_call,
            f.cpu_us_per_call,
            d.p50.as_secs_f64() / f.p50.as_secs_f64(),
            d.p50.as_secs_f64() * 1e3,
            f.p50.as_secs_f64() * 1e3,
        );
    }
    for mut s in open {
        s.disconnect().await?;
    }
    Ok(())
}

/// `--serve-null CONFIG --sid SID --name NAME --answer-bytes N`: this process is the null
/// server of [`null_floor`], with the MQTT identity of the daemon's CONFIG.
async fn serve_null(args: &[String]) -> anyhow::Result<()> {
    let config: PathBuf = arg(args, "--serve-null", PathBuf::new())?;
    let sid: String = arg(args, "--sid", String::new())?;
    let name: String = arg(args, "--name", String::new())?;
    let answer_bytes: usize = arg(args, "--answer-bytes", 10_000)?;
    let drone = flight_companion::config::Config::load(&config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let topics = Topics {
        server_root: drone.mcp.server_topic_root.clone(),
        client_root: drone.mcp.client_topic_root.clone(),
        rpc_root: drone.mcp.rpc_topic_root.clone(),
        server_id: sid,
        server_name: name,
    };
    let stop = CancellationToken::new();
    serve_null_mcp(
        drone.mqtt,
        topics,
        answer_bytes,
        || println!("null server: ready"),
        stop,
    )
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve-null") {
        return serve_null(&args).await;
    }
    let daemon_binary: PathBuf = arg(&args, "--daemon", PathBuf::from(BINARY))?;
    let idle = Duration::from_secs(arg(&args, "--idle-s", 10u64)?);
    let sessions: usize = arg(&args, "--sessions", 20)?;
    let calls: usize = arg(&args, "--calls", 4000)?;
    let fsync: String = arg(&args, "--fsync", "always".to_string())?;
    let cycles: usize = arg(&args, "--cycles", 3)?;
    let ground_binary: PathBuf = arg(&args, "--ground", PathBuf::from(GROUND_BINARY))?;
    let ground_from_daemon = args.iter().any(|a| a == "--ground-from-daemon");
    let keep = args.iter().any(|a| a == "--keep");
    let no_null = args.iter().any(|a| a == "--no-null");
    let callers = 10usize;

    let temp = tempfile::Builder::new()
        .prefix("fc-footprint-")
        .tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))?;
    let dir = temp.path().to_path_buf();
    let stop = CancellationToken::new();

    let broker_port = free_port()?;
    let setup = Command::new(BINARY)
        .arg("dev-setup")
        .arg(dir.join("dev"))
        .args(["--broker-port", &broker_port.to_string()])
        .output()?;
    if !setup.status.success() {
        bail!("dev-setup: {}", String::from_utf8_lossy(&setup.stderr));
    }
    let dev = dir.join("dev");
    let mut mosquitto = Command::new(mosquitto_path());
    mosquitto.arg("-c").arg(dev.join("mosquitto.conf"));
    // Every child's stdin is held open (as the ground bridge needs, and `tell` writes to
    // it) and none reads the terminal.
    mosquitto.stdin(Stdio::piped());
    let _mosquitto = Proc::spawn("mosquitto", Some(&dir), mosquitto)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_err() {
        if Instant::now() > deadline {
            bail!("mosquitto does not accept connections on {broker_port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sim_command = Command::new(BINARY);
    sim_command.args(["sim", "--link", "tcpin:127.0.0.1:0", "--ekf-ready-s", "0"]);
    sim_command.stdin(Stdio::piped());
    let mut sim = Proc::spawn("sim", Some(&dir), sim_command)?;
    let line = sim.wait_for_line("sim: serving ", START_WAIT).await?;
    let sim_port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .unwrap_or("")
        .parse()
        .context("the simulator's port")?;

    let config = daemon_config(&dev, sim_port, &fsync, sessions)?;
    let mut daemon_command = Command::new(&daemon_binary);
    daemon_command
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn");
    daemon_command.stdin(Stdio::piped());
    let daemon = Proc::spawn("daemon", Some(&dir), daemon_command)?;
    let ground = GroundConfig::load(&dev.join("ground.toml"))?;
    // The daemon's server is discovered once it is connected to the broker.
    let (sid, name) = discover(&ground, &stop).await?;
    println!(
        "daemon {} ({}), fsync = {fsync}, {} cores",
        daemon_binary.display(),
        String::from_utf8_lossy(
            &Command::new(&daemon_binary)
                .arg("--version")
                .output()?
                .stdout
        )
        .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Idle: linked to the simulator's telemetry and to the broker, no ground client.
    tokio::time::sleep(idle).await;
    let idle_memory = Memory::of(daemon.pid());
    println!("daemon idle {} s: {idle_memory}", idle.as_secs());
    let cpu0 = cpu_ns(daemon.pid());
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "daemon idle CPU: {:.2} ms per second (telemetry from the simulator, heartbeats, status)",
        (cpu_ns(daemon.pid()) - cpu0) as f64 / 5e6
    );

    // The ground bridge, started with its stdin held open, then given one session.
    let mut ground_command = if ground_from_daemon {
        let mut command = Command::new(&daemon_binary);
        command.arg("ground");
        command
    } else {
        Command::new(&ground_binary)
    };
    println!("ground bridge: {ground_command:?}");
    ground_command
        .env("FLIGHT_COMPANION_GROUND_CONFIG", dev.join("ground.toml"))
        .env("RUST_LOG", "info");
    ground_command.stdin(Stdio::piped());
    let mut bridge = Proc::spawn("ground", Some(&dir), ground_command)?;
    bridge
        .wait_for_line("connected to the broker", START_WAIT)
        .await?;
    tokio::time::sleep(idle).await;
    println!(
        "ground bridge idle {} s (connected, no MCP client yet): {}",
        idle.as_secs(),
        Memory::of(bridge.pid())
    );
    bridge.tell(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"footprint","version":"1"}}}).to_string())?;
    bridge.tell(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
    bridge.tell(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_status","arguments":{}}}"#)?;
    bridge.wait_for_line(r#""id":2"#, START_WAIT).await?;
    tokio::time::sleep(idle).await;
    println!(
        "ground bridge idle {} s after one session and a get_status: {}",
        idle.as_secs(),
        Memory::of(bridge.pid())
    );
    drop(bridge);

    // Per session: open, measure, close, measure; twice.
    let operator = token(&dev, "operator")?;
    for cycle in 1..=cycles {
        let before = Memory::of(daemon.pid());
        let mut open = Vec::with_capacity(sessions);
        for i in 0..sessions {
            open.push(
                session(
                    &ground,
                    &format!("fp-{i}"),
                    &sid,
                    &name,
                    Some(&operator),
                    &stop,
                )
                .await?,
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let with = Memory::of(daemon.pid());
        for mut s in open {
            s.disconnect().await?;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = Memory::of(daemon.pid());
        println!(
            "sessions cycle {cycle}: {sessions} open: {with}; {:+.1} KiB per session; all closed 3 s later: {after} ({:+} KiB against before the cycle)",
            (with.rss_kib as f64 - before.rss_kib as f64) / sessions as f64,
            after.rss_kib as i64 - before.rss_kib as i64
        );
    }

    // Per call: 10 sessions calling get_status back to back, two passes.
    let mut open = Vec::with_capacity(callers);
    for i in 0..callers {
        open.push(
            session(
                &ground,
                &format!("fp-call-{i}"),
                &sid,
                &name,
                Some(&operator),
                &stop,
            )
            .await?,
        );
    }
    // Warm-up: every session's first calls (and the allocator's first growth).
    for s in open.iter_mut() {
        for _ in 0..20 {
            s.call_tool("get_status", json!({})).await?;
        }
    }
    let per = calls / callers;
    let passes = all_then_one("daemon", daemon.pid(), &mut open, per, &fsync).await?;
    // The size of the answer the floor must send: a get_status answer as the daemon writes it.
    let status = open[0].call_tool("get_status", json!({})).await?;
    let answer_bytes =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1000, "result": status}))?.len();
    for mut s in open {
        s.disconnect().await?;
    }
    if !no_null {
        // The daemon leaves the broker first: the null server takes its identity.
        drop(daemon);
        null_floor(
            &dir,
            &config,
            &ground,
            (&sid, &name),
            &operator,
            answer_bytes,
            &passes,
            (callers, per),
            &stop,
        )
        .await?;
    }
    stop.cancel();
    if keep {
        println!("kept {}", temp.keep().display());
    }
    Ok(())
}
