//! Benchmark (not a test): how long from an emergency-stop trigger to the stop command's
//! bytes being read by the simulated autopilot, per trigger, with the vehicle flying, full
//! telemetry streaming and another MCP client calling `get_status` in a loop; next to a bare
//! MQTT round trip on the same broker.
//!
//! `cargo bench --bench estop_latency -- [--trials 1000] [--cli-trials 300] [--bridge-trials 200] [--keep] [--samples FILE] [--no-load]`
//!
//! It starts everything itself in a temporary directory, as BENCHMARKS.md's commands do by
//! hand: `dev-setup`, Mosquitto (mTLS), `sim --stamp-monotonic` with two links (the daemon's,
//! and this harness's own MAVLink station), socat's pty pair with `bridge-sim
//! --stamp-monotonic` on one end, and the daemon (release build) on the other link and end.
//!
//! Honest timing across processes: Linux's `CLOCK_MONOTONIC` is one clock for every process.
//! The harness stamps it just before it hands the trigger over (the MQTT publish, the local
//! socket request, the `flight-companion estop` spawn); `bridge-sim` stamps it just before
//! it writes the press frame; the simulator stamps the moment its link read the bytes of the
//! command (`mono_ns=` on its `sim: command` line). The latency is the difference.
//!
//! Each trial: the simulator flies GUIDED, the stop is not latched and the daemon's status
//! (published every 100 ms) shows both → stamp, trigger → the first `MAV_CMD_DO_SET_MODE` from the daemon (1/191)
//! read by the simulator (the hold: BRAKE) → `reset_emergency_stop` with the ADMIN token →
//! GUIDED again from the harness's link. GUIDED matters: a trigger while the vehicle already
//! holds (BRAKE) sends nothing, since the heartbeat already confirms the hold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flight_companion::clock::monotonic_ns;
use flight_companion::config::Config;
use flight_companion::ground::config::GroundConfig;
use flight_companion::hil::bench::{
    ECHO_IDENTITY, discover, echo_round_trips, identity, percentiles, serve_echo, session,
    tool_result,
};
use flight_companion::hil::client::{Client, MqttConn};
use flight_companion::link::MavMessage;
use flight_companion::link::dialect::{COMMAND_LONG_DATA, MavCmd};
use flight_companion::link::endpoint::Endpoint;
use flight_companion::link::transport::{Link, LinkEvent, LinkHandle, LinkOptions};
use flight_companion::mcp::transport::ComponentType;
use flight_companion_testkit::{AsyncProc as Proc, free_port, mosquitto_path};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const BINARY: &str = env!("CARGO_BIN_EXE_flight-companion");
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a trial waits for the stop command before it counts as lost.
const COMMAND_WAIT: Duration = Duration::from_secs(3);
/// ArduCopter's GUIDED custom mode.
const GUIDED: u32 = 4;

/// `mono_ns=N` in a line.
fn mono_ns_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("mono_ns="))
        .and_then(|n| n.parse().ok())
}

/// The endpoint printed on a `sim: serving` line.
fn served(line: &str) -> anyhow::Result<String> {
    Ok(line
        .split_once("sim: serving ")
        .context("no endpoint")?
        .1
        .trim()
        .to_owned())
}

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

/// dev-setup's drone.toml with the simulator's link, telemetry at 50 Hz (the simulator's
/// physics rate: everything it can stream), call limits a busy client does not hit, the
/// local e-stop socket and the bridge.
fn daemon_config(dir: &Path, sim_port: u16) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(dir.join("drone.toml"))?;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("link = ") {
            out.push_str(&format!(
                "link = \"tcpout:127.0.0.1:{sim_port}\"\ntelemetry_rate_hz = 50.0\n"
            ));
            continue;
        }
        if line.starts_with("revocation_path = ") {
            out.push_str("calls_per_s = 2000.0\ncalls_burst = 2000\n");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\n[estop]\nsocket_path = \"{}\"\n\n[bridge]\nenabled = true\nserial = \"{}\"\n",
        dir.join("estop.sock").display(),
        dir.join("b").display()
    ));
    let path = dir.join("drone-bench.toml");
    std::fs::write(&path, out)?;
    Ok(path)
}

/// The harness's own MAVLink station on the simulator's second link (system 255).
struct Station {
    link: LinkHandle,
    custom_mode: Arc<AtomicU32>,
    relative_alt_mm: Arc<AtomicI32>,
}

impl Station {
    async fn open(endpoint: &str, stop: CancellationToken) -> anyhow::Result<Station> {
        let endpoint: Endpoint = endpoint.replace("tcpin", "tcpout").parse()?;
        let (link, mut events) = Link::open(
            &endpoint,
            LinkOptions {
                system_id: 255,
                component_id: 190,
                reconnect_backoff_min: Duration::from_millis(50),
                reconnect_backoff_max: Duration::from_millis(500),
                signing: None,
                peer: flight_companion::link::pin::PeerPolicy::OPEN,
            },
            stop,
        )
        .await?;
        let custom_mode = Arc::new(AtomicU32::new(u32::MAX));
        let relative_alt_mm = Arc::new(AtomicI32::new(0));
        let (mode, alt) = (custom_mode.clone(), relative_alt_mm.clone());
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            while let Some(event) = events.recv().await {
                match event {
                    LinkEvent::Connected { .. } => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    LinkEvent::Frame { frame, .. } => match frame.message {
                        MavMessage::HEARTBEAT(h) if frame.header.component_id == 1 => {
                            mode.store(h.custom_mode, Ordering::SeqCst)
                        }
                        MavMessage::GLOBAL_POSITION_INT(p) => {
                            alt.store(p.relative_alt, Ordering::SeqCst)
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        });
        tokio::time::timeout(START_WAIT, connected)
            .await
            .context("the harness link to the simulator does not connect")??;
        Ok(Station {
            link,
            custom_mode,
            relative_alt_mm,
        })
    }

    fn command(&self, command: MavCmd, params: [f32; 7]) -> anyhow::Result<()> {
        let [param1, param2, param3, param4, param5, param6, param7] = params;
        self.link
            .send(&MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                param1,
                param2,
                param3,
                param4,
                param5,
                param6,
                param7,
                command,
                target_system: 1,
                target_component: 1,
                confirmation: 0,
            }))
            .map_err(|e| anyhow::anyhow!("harness link: {e}"))
    }

    /// GUIDED (`DO_SET_MODE` from 255/190: the simulator's line for it is not the daemon's).
    fn guided(&self) -> anyhow::Result<()> {
        // base_mode MAV_MODE_FLAG_CUSTOM_MODE_ENABLED (1), custom mode GUIDED.
        self.command(
            MavCmd::MAV_CMD_DO_SET_MODE,
            [1.0, GUIDED as f32, 0.0, 0.0, 0.0, 0.0, 0.0],
        )
    }

    /// GUIDED, arm, take off to 10 m; returns above 8 m.
    async fn take_off(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        // The heartbeat at 50 Hz: a mode change is seen within 20 ms (by the daemon too).
        self.command(
            MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
            [0.0, 20_000.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        )?;
        while self.custom_mode.load(Ordering::SeqCst) != GUIDED {
            self.guided()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if Instant::now() > deadline {
                bail!("the simulator did not switch to GUIDED (no GPS fix yet?)");
            }
        }
        while self.relative_alt_mm.load(Ordering::SeqCst) < 8_000 {
            self.command(
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            )?;
            self.command(
                MavCmd::MAV_CMD_NAV_TAKEOFF,
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0],
            )?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            if Instant::now() > deadline {
                bail!("the vehicle did not climb above 8 m within 60 s");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    Panic,
    Socket,
    Cli,
    Bridge,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Panic => "MQTT panic topic -> stop command read",
            Trigger::Socket => "local socket (estop protocol) -> read",
            Trigger::Cli => "`flight-companion estop` spawn -> read",
            Trigger::Bridge => "bridge press frame written -> read",
        }
    }
}

struct Rig {
    dir: PathBuf,
    sim: Proc,
    bridge: Proc,
    admin: Client,
    panic: MqttConn,
    panic_topic: String,
    station: Station,
}

impl Rig {
    /// Waits until the daemon's status shows GUIDED, armed, and the stop not latched.
    async fn ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = tool_result(
                "get_status",
                self.admin.call_tool("get_status", json!({})).await?,
            )?;
            let s = &status["structuredContent"];
            if s["vehicle"]["mode"]["flight_mode"] == "GUIDED"
                && s["vehicle"]["mode"]["armed"] == true
                && s["emergency_stop"]["latched"] == false
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon does not show GUIDED, armed and unlatched: mode {}, stop {}",
                    s["vehicle"]["mode"],
                    s["emergency_stop"]
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One trial; returns the latency.
    async fn trial(&mut self, trigger: Trigger) -> anyhow::Result<Duration> {
        self.ready().await?;
        self.sim.drain();
        self.bridge.drain();
        let socket = self.dir.join("estop.sock");
        let mut waiting_reply = None;
        let mut cli = None;
        let sent_ns = match trigger {
            Trigger::Panic => {
                let t0 = monotonic_ns();
                self.panic
                    .publish_qos(
                        self.panic_topic.clone(),
                        br#"{"reason": "bench"}"#.to_vec(),
                        QoS::AtLeastOnce,
                    )
                    .await?;
                t0
            }
            Trigger::Socket => {
                let t0 = monotonic_ns();
                waiting_reply = Some(tokio::spawn(async move {
                    flight_companion::estop::local::request(&socket, "STOP bench").await
                }));
                t0
            }
            Trigger::Cli => {
                let mut command = Command::new(BINARY);
                command
                    .args(["estop", "--reason", "bench", "--socket"])
                    .arg(&socket)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let t0 = monotonic_ns();
                cli = Some(command.spawn()?);
                t0
            }
            Trigger::Bridge => {
                self.bridge.tell("press")?;
                let line = self
                    .bridge
                    .wait_for_line("bridge-sim: sent estop-asserted", COMMAND_WAIT)
                    .await?;
                mono_ns_of(&line).context("no mono_ns on bridge-sim's line")?
            }
        };
        let read_ns = loop {
            let line = self
                .sim
                .wait_for_line("sim: command MAV_CMD_DO_SET_MODE from 1/191", COMMAND_WAIT)
                .await
                .with_context(|| format!("{trigger:?}: no stop command"))?;
            let ns = mono_ns_of(&line).context("no mono_ns on the simulator's line")?;
            // A re-send of the previous trial's stop, read before this trigger, is not ours.
            if ns >= sent_ns {
                break ns;
            }
        };
        if let Some(reply) = waiting_reply {
            let reply = reply.await??;
            if !reply.starts_with("OK") {
                bail!("local socket: {reply}");
            }
        }
        if let Some(mut cli) = cli {
            let status = tokio::task::spawn_blocking(move || cli.wait()).await??;
            if !status.success() {
                bail!("flight-companion estop exited with {status}");
            }
        }
        if trigger == Trigger::Bridge {
            self.bridge.tell("release")?;
            // The MCU releases its latch only once the switch reads closed (20 ms debounce).
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        tool_result(
            "reset_emergency_stop",
            self.admin
                .call_tool("reset_emergency_stop", json!({}))
                .await?,
        )?;
        if trigger == Trigger::Bridge {
            self.bridge
                .wait_for_line("bridge-sim: latch released", Duration::from_secs(2))
                .await?;
        }
        self.station.guided()?;
        // The next trial starts in GUIDED as the simulator flies it, not as the daemon's
        // status (published every 100 ms) last showed it: the daemon may not have heard the
        // switch yet, which is the race a stop must not lose (estop::core's confirmation).
        self.sim
            .wait_for_line("sim: mode GUIDED", COMMAND_WAIT)
            .await
            .context("the simulator did not switch back to GUIDED")?;
        Ok(Duration::from_nanos(read_ns.saturating_sub(sent_ns)))
    }
}

fn print_row(label: &str, samples: &mut [Duration], lost: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let Some((p50, p99, max)) = percentiles(samples) else {
        println!("{label:<42} no samples ({lost} lost)");
        return;
    };
    println!(
        "{label:<42} {:>6} {:>5} {:>8.3} {:>8.3} {:>8.3}",
        samples.len(),
        lost,
        ms(p50),
        ms(p99),
        ms(max)
    );
}

async fn load_client(
    ground: GroundConfig,
    sid: String,
    name: String,
    token: String,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let mut client = session(&ground, "bench-load", &sid, &name, Some(&token), &stop).await?;
    let mut calls = 0;
    loop {
        tokio::select! {
            biased;
            // Its connection stops with the same token: a call cut short is no error.
            _ = stop.cancelled() => return Ok(calls),
            result = client.call_tool("get_status", json!({})) => {
                tool_result("get_status", result?)?;
                calls += 1;
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = arg(&args, "--trials", 1000)?;
    let cli_trials: usize = arg(&args, "--cli-trials", 300)?;
    let bridge_trials: usize = arg(&args, "--bridge-trials", 200)?;
    let keep = args.iter().any(|a| a == "--keep");
    // `--daemon PATH`: the daemon under test (another build, e.g. the deployed feature set);
    // dev-setup, the simulators and the CLI trigger stay this build's.
    let daemon_binary: PathBuf = arg(&args, "--daemon", PathBuf::from(BINARY))?;
    // One line per trial (scenario, microseconds), for plots and for finding the slow ones.
    let samples_path: Option<PathBuf> = arg(&args, "--samples", String::new())
        .map(|p| (!p.is_empty()).then(|| PathBuf::from(p)))?;
    let mut samples_out = match &samples_path {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let temp = tempfile::Builder::new()
        .prefix("fc-estop-bench-")
        .tempdir()?;
    let dir = temp.path().to_path_buf();
    let stop = CancellationToken::new();

    // Broker.
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
    // Every child's stdin is held open (bridge-sim reads its presses there: `tell`) and
    // none reads the terminal.
    mosquitto.stdin(Stdio::piped());
    let _mosquitto = Proc::spawn("mosquitto", Some(&dir), mosquitto)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_err() {
        if Instant::now() > deadline {
            bail!("mosquitto does not accept connections on {broker_port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Simulator: one link for the daemon, one for this harness.
    let mut sim_command = Command::new(BINARY);
    sim_command.args([
        "sim",
        "--link",
        "tcpin:127.0.0.1:0",
        "--link",
        "tcpin:127.0.0.1:0",
        "--stamp-monotonic",
        // Start-up is not what this measures: the estimator trusts its position at once.
        "--ekf-ready-s",
        "0",
    ]);
    sim_command.stdin(Stdio::piped());
    let mut sim = Proc::spawn("sim", Some(&dir), sim_command)?;
    let daemon_link = served(&sim.wait_for_line("sim: serving ", START_WAIT).await?)?;
    let harness_link = served(&sim.wait_for_line("sim: serving ", START_WAIT).await?)?;
    let sim_port: u16 = daemon_link.rsplit(':').next().unwrap_or("").parse()?;

    // The bridge: socat's pty pair, bridge-sim on `a`, the daemon on `b`.
    let mut socat = Command::new("socat");
    socat.args([
        "-d".to_string(),
        "-d".to_string(),
        format!("pty,raw,echo=0,link={}", dev.join("a").display()),
        format!("pty,raw,echo=0,link={}", dev.join("b").display()),
    ]);
    socat.stdin(Stdio::piped());
    let mut socat = Proc::spawn("socat", Some(&dir), socat)?;
    socat
        .wait_for_line("starting data transfer loop", START_WAIT)
        .await?;
    let mut bridge_command = Command::new(BINARY);
    bridge_command
        .args(["bridge-sim", "--stamp-monotonic", "--serial"])
        .arg(dev.join("a"));
    bridge_command.stdin(Stdio::piped());
    let mut bridge = Proc::spawn("bridge-sim", Some(&dir), bridge_command)?;
    bridge
        .wait_for_line("bridge-sim: ready on", START_WAIT)
        .await?;

    // The daemon.
    let config = daemon_config(&dev, sim_port)?;
    let mut daemon_command = Command::new(&daemon_binary);
    daemon_command.args(["run", "--config"]).arg(&config);
    daemon_command.stdin(Stdio::piped());
    let mut daemon = Proc::spawn("daemon", Some(&dir), daemon_command)?;
    daemon
        .wait_for_line("flight-companion ready", START_WAIT)
        .await?;
    bridge
        .wait_for_line("bridge-sim: companion hello", START_WAIT)
        .await?;

    // Ground clients.
    let ground = GroundConfig::load(&dev.join("ground.toml"))?;
    let drone = Config::load(&config)?;
    let (sid, name) = discover(&ground, &stop).await?;
    let token = |role: &str| -> anyhow::Result<String> {
        Ok(
            std::fs::read_to_string(dev.join("tokens").join(format!("{role}.jwt")))?
                .trim()
                .to_owned(),
        )
    };
    let admin = session(
        &ground,
        "bench-admin",
        &sid,
        &name,
        Some(&token("admin")?),
        &stop,
    )
    .await?;
    let panic = MqttConn::open(
        &identity(&ground.mqtt, "bench-panic")?,
        ComponentType::Client,
        "bench panic",
        &stop,
    )
    .await?;
    let panic_topic =
        flight_companion::estop::panic_topic(&drone.mcp.panic_topic_root, &sid, &panic.id);
    let echo = tokio::spawn(serve_echo(
        identity(&ground.mqtt, ECHO_IDENTITY)?,
        ground.ground.rpc_topic_root.clone(),
        sid.clone(),
        stop.clone(),
    ));
    // The busy client runs on its own thread and runtime: its JSON parsing must not delay
    // this harness's trigger tasks (that would be the harness's latency, not the daemon's).
    let load_stop = stop.child_token();
    let no_load = args.iter().any(|a| a == "--no-load");
    let load = (!no_load).then(|| {
        let (ground, sid, name, token, load_stop) = (
            ground.clone(),
            sid.clone(),
            name.clone(),
            token("operator"),
            load_stop.clone(),
        );
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(load_client(ground, sid, name, token?, load_stop))
        })
    });

    // In the air.
    let station = Station::open(&harness_link, stop.clone()).await?;
    station.take_off().await?;
    daemon.drain();
    let mut rig = Rig {
        dir: dev.clone(),
        sim,
        bridge,
        admin,
        panic,
        panic_topic,
        station,
    };

    println!(
        "# drone {name} (server id {sid}); simulator at speedup 1, daemon telemetry 50 Hz, \
         heartbeat 50 Hz, {}",
        if no_load {
            "no other client (--no-load)"
        } else {
            "one more client calling get_status in a loop"
        }
    );
    println!(
        "{:<42} {:>6} {:>5} {:>8} {:>8} {:>8}",
        "scenario", "trials", "lost", "p50_ms", "p99_ms", "max_ms"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bare = echo_round_trips(&ground, &sid, trials, &stop).await?;
    print_row("bare MQTT publish -> echo -> reply", &mut bare, 0);
    for (trigger, count) in [
        (Trigger::Panic, trials),
        (Trigger::Socket, trials),
        (Trigger::Cli, cli_trials),
        (Trigger::Bridge, bridge_trials),
    ] {
        let mut samples = Vec::with_capacity(count);
        let mut lost = 0;
        for _ in 0..count {
            match rig.trial(trigger).await {
                Ok(latency) => samples.push(latency),
                Err(e) => {
                    lost += 1;
                    eprintln!("{trigger:?}: trial failed: {e:#}");
                    if lost > 5 {
                        bail!(
                            "{trigger:?}: too many failed trials; logs in {}",
                            dir.display()
                        );
                    }
                    // Leave the failed trial's state behind before the next one.
                    let _ = rig.admin.call_tool("reset_emergency_stop", json!({})).await;
                    let _ = rig.bridge.tell("release");
                    let _ = rig.station.guided();
                }
            }
        }
        if let Some(out) = &mut samples_out {
            for (i, d) in samples.iter().enumerate() {
                writeln!(out, "{trigger:?} {i} {}", d.as_micros())?;
            }
        }
        print_row(trigger.label(), &mut samples, lost);
    }
    load_stop.cancel();
    if let Some(load) = load {
        let load_calls = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load client panicked"))??;
        println!("# the load client made {load_calls} get_status calls meanwhile");
    }
    stop.cancel();
    let _ = echo.await;
    drop(rig);
    drop(daemon);
    drop(socat);
    if keep {
        let kept = temp.keep();
        println!("# logs kept in {}", kept.display());
    }
    Ok(())
}
