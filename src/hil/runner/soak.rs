//! `flight-companion hil soak`: the rig of `hil run` kept up for minutes under load and
//! faults, sampled from `/proc`, and judged at the end (issue 21).
//!
//! One rig (the simulator behind the serial relay, Mosquitto behind the MQTT proxy, the real
//! daemon, the simulated bridge), and for the whole run, at the same time:
//! - the simulator sends `--telemetry-per-s` frames (its streams at 50 Hz plus ArduCopter's
//!   high-rate mix, `sim --extra-telemetry-hz`);
//! - `--sessions` MCP sessions each subscribe to `vehicle://status` and call
//!   `get_status`, `get_envelope` and `preflight_check` twice a second;
//! - one session more is opened and closed every 5 s (what a session costs is returned);
//! - the lease holder flies one flight after another (takeoff, goto, land); every
//!   `--estop-every-s` a goto is stopped by the MCP tool, the panic topic, the local socket
//!   or the bridge's switch in turn, and an ADMIN resets the stop;
//! - every `--fault-every-s` one of the rig's faults, in turn, is applied, held, undone, and
//!   the time until the daemon serves again is measured against its budget;
//! - every `--sample-every-s` the daemon's RSS, descriptors, threads and CPU time (from
//!   `/proc`), the audit directory's size and the daemon's counters (`/metrics`) are written
//!   to `soak.csv`.
//!
//! It passes when memory and descriptors are flat after the warm-up, every fault recovered
//! within its budget, every e-stop put its hold on the wire within 100 ms, and
//! `flight-companion audit verify` accepts the log at the end. The budgets and their reasons
//! are in `hil/README.md` ("The soak").
//!
//! This is a child module of the runner so that it drives the same `Rig` as the scenarios.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio_util::sync::CancellationToken;

use super::{Rig, RunOptions, Target, from_companion, short_runtime_dir};
use crate::hil::client::{CallOutcome, DroneAddress, Session};
use crate::hil::proxy::NetFault;
use crate::hil::relay::LineFault;
use crate::hil::wire::WireLog;
use crate::link::MavMessage;
use crate::link::dialect::MavCmd;
use crate::vehicle::modes::FlightMode;
use crate::vehicle::snapshot::AutopilotKind;

/// The simulator's streams at the daemon's `telemetry_rate_hz` of 50 (nine streams, the
/// highest rate the daemon asks for): the extra mix makes up the rest of the load.
const STREAMED_PER_S: f64 = 9.0 * 50.0 + 1.0;
/// The hold command of an e-stop must cross the wire within this of the trigger: the
/// starter suite's budget (`hil/README.md`, scenarios 05 and 13).
const ESTOP_BUDGET: Duration = Duration::from_millis(100);
/// The flights' goals: 60 m north and south of the simulator's home, inside the dev
/// envelope, far enough that an e-stop comes before the vehicle arrives.
const NORTH_LAT_DEG: f64 = 47.398_281;
const SOUTH_LAT_DEG: f64 = 47.397_203;
const HOME_LON_DEG: f64 = 8.545_594;
const ALTITUDE_M: f64 = 10.0;

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Length of the run (after the rig is ready), in minutes.
    #[arg(long, default_value_t = 60.0)]
    pub minutes: f64,
    /// Where `soak.csv`, `faults.csv`, `estops.csv`, `summary.txt` and the rig's logs go.
    #[arg(long, default_value = "target/soak")]
    pub out: PathBuf,
    /// Seed of the simulator's and the relay's random choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// MAVLink frames per second from the autopilot (at least its 451 streamed ones).
    #[arg(long, default_value_t = 2000.0)]
    pub telemetry_per_s: f64,
    /// MCP sessions calling tools and subscribing, besides the lease holder's.
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    /// Seconds between two faults (the first after this long).
    #[arg(long, default_value_t = 60.0)]
    pub fault_every_s: f64,
    /// The faults, in the order they cycle.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "broker,link,noise,stall,fade,bridge"
    )]
    pub faults: Vec<FaultKind>,
    /// Seconds between two e-stops (each during a goto, from the MCP tool, the panic topic,
    /// the local socket and the bridge's switch in turn).
    #[arg(long, default_value_t = 180.0)]
    pub estop_every_s: f64,
    /// Seconds left out of the memory judgement (start-up allocations, pools filling).
    #[arg(long, default_value_t = 120.0)]
    pub warm_up_s: f64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 10.0)]
    pub sample_every_s: f64,
    /// Flat memory: the largest RSS of the last third of the samples after the warm-up is at
    /// most this many percent above the largest of the first third.
    #[arg(long, default_value_t = 10.0)]
    pub rss_growth_percent_max: f64,
    /// After the run, with the load stopped: this many sessions (each its own identity)
    /// opened at once, then closed, three times; the daemon's RSS before, with them open
    /// and after they closed goes to `sessions.csv` (what a session costs, and whether it is
    /// returned). 0: none. At most the daemon's `mcp.candidates_max` (32): beyond it the
    /// oldest pending `initialize` is dropped before its client's next message makes it a
    /// session, as designed, and that client is told it has no session.
    #[arg(long, default_value_t = 30)]
    pub session_burst: usize,
}

/// A fault of the rig, applied, held for its duration, then undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// The broker killed, started again on the same port.
    Broker,
    /// The autopilot line cut (nothing passes either way), then restored.
    Link,
    /// A noisy line: 5 % of the frames corrupted, both ways.
    Noise,
    /// The daemon stopped (SIGSTOP), then continued.
    Stall,
    /// The ground link faded: the MQTT proxy holds every byte both ways.
    Fade,
    /// The bridge unplugged as the daemon sees it: the microcontroller silent, then back.
    Bridge,
}

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Broker => "broker_killed",
            FaultKind::Link => "autopilot_link_cut",
            FaultKind::Noise => "noisy_line",
            FaultKind::Stall => "daemon_stopped",
            FaultKind::Fade => "ground_link_faded",
            FaultKind::Bridge => "bridge_unplugged",
        }
    }

    /// How long the fault is held before it is undone.
    pub fn held(self) -> Duration {
        match self {
            FaultKind::Stall => Duration::from_secs(3),
            FaultKind::Broker => Duration::from_secs(5),
            _ => Duration::from_secs(10),
        }
    }

    /// From the fault undone to the daemon serving again (`recovered`): the documented
    /// budget, `hil/README.md` "The soak" (each from the defaults that bound it).
    pub fn budget(self) -> Duration {
        match self {
            // The daemon's and the client's MQTT reconnect delays are capped at 10 s
            // (`mqtt.reconnect_backoff_ms_max`), then TLS, subscriptions, presence and
            // initialize.
            FaultKind::Broker => Duration::from_secs(15),
            // Bytes flow again at once; the autopilot heartbeats at 1 Hz and the status is
            // published every 100 ms: within the heartbeat timeout (3 s) and a margin.
            FaultKind::Link | FaultKind::Noise => Duration::from_secs(5),
            // The loop runs again at once; the MQTT keep-alive (15 s) was not exceeded.
            FaultKind::Stall => Duration::from_secs(5),
            // Held bytes flow on restore; 10 s is below 1.5 keep-alives, so the connections
            // stay; a reconnect, if any, is bounded as the broker's.
            FaultKind::Fade => Duration::from_secs(15),
            // The microcontroller heartbeats every 100 ms; the daemon's bridge link is
            // healthy at the first one.
            FaultKind::Bridge => Duration::from_secs(5),
        }
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
struct FaultRecord {
    kind: FaultKind,
    applied_s: f64,
    undone_s: f64,
    /// From undone to serving again; `None`: not within a minute.
    recovered_after: Option<Duration>,
    /// What the last probe saw when it did not recover.
    note: String,
}

/// One e-stop as it happened.
#[derive(Debug, Clone)]
struct EstopRecord {
    source: &'static str,
    at_s: f64,
    /// Trigger to the hold on the wire; `None`: not seen within 2 s.
    latency: Option<Duration>,
    /// The daemon's status showed the stop latched afterwards.
    latched: bool,
}

/// One sample of the daemon.
#[derive(Debug, Clone, Default)]
struct Sample {
    t_s: f64,
    rss_kb: u64,
    fds: u64,
    threads: u64,
    cpu_s: f64,
    audit_bytes: u64,
    frames_received: Option<f64>,
    audit_records: Option<f64>,
    audit_dropped: Option<f64>,
    mqtt_reconnects: Option<f64>,
    /// Each bounded internal queue's depth and capacity (`/metrics`), by name.
    queues: Vec<(String, f64, f64)>,
    calls_ok: u64,
    calls_failed: u64,
    sessions_churned: u64,
    flights: u64,
    fault: String,
}

/// Counters shared by the load's tasks.
#[derive(Default)]
struct Load {
    calls_ok: AtomicU64,
    calls_failed: AtomicU64,
    sessions_churned: AtomicU64,
    flights_done: AtomicU64,
    flights_failed: AtomicU64,
    /// The fault in force, for the samples.
    fault: Mutex<String>,
    estops: Mutex<Vec<EstopRecord>>,
    notes: Mutex<Vec<String>>,
    /// The session bursts: RSS before, open, closed (kB), sessions answered.
    bursts: Mutex<Vec<(u64, u64, u64, usize)>>,
}

impl Load {
    fn note(&self, epoch: Instant, text: String) {
        let line = format!("{:8.1} s  {text}", epoch.elapsed().as_secs_f64());
        tracing::info!("soak: {line}");
        self.notes.lock().unwrap().push(line);
    }
}

/// The `[setup]` of the soak's rig: the streams at the highest rate the daemon asks for,
/// the bridge, and call limits ten busy sessions do not reach.
const SOAK_SCENARIO: &str = r#"
name = "soak"
needs = ["flight", "bridge"]

[[steps]]
sleep_s = 0.1

[setup.daemon.vehicle]
telemetry_rate_hz = 50.0
"#;

pub async fn run(args: SoakArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    check_args(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(1..1_000_000));
    let options = RunOptions {
        target: Target::Sim,
        work_dir: out.clone(),
        seed,
        allow_flight: false,
        sim_speedup: 1.0,
        sim_ekf_ready_s: 5.0,
        sitl_command: None,
        exe: std::env::current_exe().context("cannot find this program's own path")?,
    };
    let scenario = crate::hil::scenario::parse(Path::new("soak"), SOAK_SCENARIO)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rig_dir = out.join("rig");
    let _ = std::fs::remove_dir_all(&rig_dir);
    let stop = CancellationToken::new();
    let mut rig = Rig::new(rig_dir.clone(), &options, &scenario, stop.clone());
    let extra_hz = (args.telemetry_per_s - STREAMED_PER_S).max(0.0);
    rig.sim_extra_args = vec!["--extra-telemetry-hz".into(), format!("{extra_hz}")];
    println!(
        "soak: {:.0} min, {:.0} frames/s, {} sessions, a fault every {:.0} s, an e-stop every \
         {:.0} s (seed {seed}); output in {}",
        args.minutes,
        args.telemetry_per_s,
        args.sessions,
        args.fault_every_s,
        args.estop_every_s,
        out.display()
    );
    let load = Arc::new(Load::default());
    let outcome = tokio::select! {
        r = soak(&mut rig, &scenario, &args, &out, &load) => r,
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    stop.cancel();
    rig.teardown().await;
    let lines: Vec<String> = rig
        .lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| format!("{:8.1} s  {}", l.at.as_secs_f64(), l.text))
        .chain(load.notes.lock().unwrap().iter().cloned())
        .collect();
    let _ = std::fs::write(out.join("soak.log"), lines.join("\n") + "\n");
    let (samples, faults) = match outcome {
        Ok(done) => done,
        Err(e) => {
            println!("soak: FAILED before the end: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let estops = load.estops.lock().unwrap().clone();
    // The daemon has stopped (teardown): its log is closed, as `audit verify` expects.
    let audit = match &rig.audit_dir {
        Some(dir) => audit_verify(&options.exe, dir).await,
        None => Err("the daemon's configuration has no audit directory".into()),
    };
    let verdict = judge(&args, &samples, &faults, &estops, &audit, &load);
    let summary = summary(
        &args, seed, &samples, &faults, &estops, &audit, &load, &verdict,
    );
    std::fs::write(out.join("summary.txt"), &summary)?;
    println!("{summary}");
    Ok(if verdict.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check_args(args: &SoakArgs) -> anyhow::Result<()> {
    let positive = |v: f64, what: &str| -> anyhow::Result<()> {
        if !(v.is_finite() && v > 0.0) {
            bail!("{what} {v}: expected a positive number");
        }
        Ok(())
    };
    positive(args.minutes, "--minutes")?;
    positive(args.fault_every_s, "--fault-every-s")?;
    positive(args.estop_every_s, "--estop-every-s")?;
    positive(args.sample_every_s, "--sample-every-s")?;
    positive(args.rss_growth_percent_max, "--rss-growth-percent-max")?;
    if !(args.warm_up_s.is_finite() && args.warm_up_s >= 0.0) {
        bail!("--warm-up-s {}: expected 0 or more", args.warm_up_s);
    }
    if !(args.telemetry_per_s.is_finite() && (0.0..=20_000.0).contains(&args.telemetry_per_s)) {
        bail!(
            "--telemetry-per-s {}: expected 0 to 20000",
            args.telemetry_per_s
        );
    }
    if args.warm_up_s + 3.0 * args.sample_every_s > args.minutes * 60.0 {
        bail!(
            "--minutes {} leaves less than three samples after the {} s warm-up",
            args.minutes,
            args.warm_up_s
        );
    }
    Ok(())
}

/// What the tasks need of the rig, taken once it is ready.
#[derive(Clone)]
struct Ctx {
    /// The rig's clock (the wire log's stamps).
    epoch: Instant,
    /// When the load started: the clock of every CSV.
    started: Instant,
    wire: WireLog,
    load: Arc<Load>,
    stop: CancellationToken,
    deadline: Instant,
    estop_socket: PathBuf,
    drone: DroneAddress,
    bridge: Arc<tokio::sync::Mutex<ChildStdin>>,
    /// Held by a fault from its start until the daemon serves again, and by an e-stop from
    /// the goto it stops until its hold is measured: an e-stop while the daemon is stopped,
    /// its broker killed or its link cut measures the fault, not the stop, so the two take
    /// turns (whichever comes second waits).
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Ctx {
    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.stop.is_cancelled()
    }

    async fn bridge(&self, word: &str) -> anyhow::Result<()> {
        let mut stdin = self.bridge.lock().await;
        stdin.write_all(format!("{word}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.cancelled() => {}
        }
    }
}

async fn soak(
    rig: &mut Rig,
    scenario: &crate::hil::scenario::Scenario,
    args: &SoakArgs,
    out: &Path,
    load: &Arc<Load>,
) -> anyhow::Result<(Vec<Sample>, Vec<FaultRecord>)> {
    // The rig as `hil run` builds it, with the metrics endpoint on.
    std::fs::create_dir_all(&rig.dir)?;
    let runtime = short_runtime_dir()?;
    rig.estop_socket = runtime.join("estop.sock");
    rig.runtime_dir = Some(runtime);
    rig.start_autopilot_and_relay().await?;
    rig.start_broker_and_proxy().await?;
    let metrics_port = flight_companion_testkit::free_port()?;
    let mut scenario = scenario.clone();
    let metrics: toml::Table = toml::from_str(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    ))?;
    super::merge(&mut scenario.setup.daemon, metrics);
    rig.write_daemon_config(&scenario)?;
    rig.start_bridge_sim().await?;
    rig.start_daemon().await?;
    rig.await_ready().await?;
    let pid = rig
        .daemon
        .as_ref()
        .and_then(tokio::process::Child::id)
        .context("the daemon is not running")?;
    let audit_dir = rig
        .audit_dir
        .clone()
        .context("the daemon has no audit dir")?;
    let (bridge_child, bridge_stdin) = rig.bridge_sim.take().context("no bridge simulator")?;
    // Every token outlives the run.
    let ttl = Duration::from_secs_f64(args.minutes * 60.0 + 600.0);
    // The load stops with `stop`; the sessions live on (`sessions_stop`) so that each can
    // be closed as a client closes it.
    let stop = rig.stop.child_token();
    let sessions_stop = rig.stop.child_token();
    let started = Instant::now();
    let ctx = Ctx {
        epoch: rig.epoch,
        started,
        wire: rig.wire.clone(),
        load: load.clone(),
        stop: stop.clone(),
        deadline: started + Duration::from_secs_f64(args.minutes * 60.0),
        estop_socket: rig.estop_socket.clone(),
        drone: rig.drone.clone().context("no drone address")?,
        bridge: Arc::new(tokio::sync::Mutex::new(bridge_stdin)),
        turn: Arc::default(),
    };
    let operator = open_session(rig, "operator", ttl, sessions_stop.clone()).await?;
    let admin = open_session(rig, "admin:soak-admin", ttl, sessions_stop.clone()).await?;
    let probe = open_session(rig, "read_only:soak-probe", ttl, sessions_stop.clone()).await?;
    let mut tasks = Vec::new();
    for i in 0..args.sessions {
        let session = open_session(
            rig,
            &format!("read_only:soak-{i}"),
            ttl,
            sessions_stop.clone(),
        )
        .await?;
        tasks.push(tokio::spawn(session_load_then_close(
            ctx.clone(),
            session,
            i,
        )));
    }
    let churn = SessionRecipe::new(rig, "read_only:soak-churn", ttl)?;
    tasks.push(tokio::spawn(session_churn(ctx.clone(), churn)));
    tasks.push(tokio::spawn(flights(
        ctx.clone(),
        operator,
        admin.clone(),
        Duration::from_secs_f64(args.estop_every_s),
    )));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let csv = out.join("soak.csv");
    tasks.push(tokio::spawn(sampler(
        ctx.clone(),
        pid,
        audit_dir,
        metrics_port,
        Duration::from_secs_f64(args.sample_every_s),
        started,
        csv,
        samples.clone(),
    )));
    load.note(
        ctx.epoch,
        format!(
            "load started: daemon pid {pid}, metrics on 127.0.0.1:{metrics_port}, {} sessions",
            args.sessions
        ),
    );

    // Faults, one after the other, from this task (it owns the rig).
    let mut faults = Vec::new();
    let mut next = started + Duration::from_secs_f64(args.fault_every_s);
    let mut k = 0usize;
    while ctx.running() {
        let wait = next.saturating_duration_since(Instant::now());
        ctx.sleep(wait.min(ctx.deadline.saturating_duration_since(Instant::now())))
            .await;
        if !ctx.running() {
            break;
        }
        let kind = args.faults[k % args.faults.len()];
        k += 1;
        let turn = ctx.turn.clone().lock_owned().await;
        let record = fault_cycle(rig, &ctx, &probe, &admin, kind).await?;
        drop(turn);
        write_faults(&out.join("faults.csv"), &faults, &record)?;
        // The simulated pack lasts about ten minutes of flights; below the envelope's 30 %
        // reserve every takeoff is refused. A ground station's MAV_CMD_BATTERY_RESET through
        // the relay, once a minute, keeps the pack charged: the soak is not about batteries.
        if let Err(e) = rig.battery_reset(100.0).await {
            load.note(ctx.epoch, format!("battery reset: {e:#}"));
        }
        faults.push(record);
        next += Duration::from_secs_f64(args.fault_every_s);
    }
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    if args.session_burst > 0 {
        session_bursts(
            rig,
            &ctx,
            pid,
            args.session_burst,
            ttl,
            &out.join("sessions.csv"),
        )
        .await?;
    }
    let mut bridge_child = bridge_child;
    let _ = bridge_child.kill().await;
    write_estops(&out.join("estops.csv"), &load.estops.lock().unwrap())?;
    let samples = samples.lock().unwrap().clone();
    Ok((samples, faults))
}

/// The token, certificate and address a principal's sessions are opened with.
#[derive(Clone)]
struct SessionRecipe {
    principal: String,
    mqtt: crate::config::MqttConfig,
    drone: DroneAddress,
    token: String,
}

impl SessionRecipe {
    fn new(rig: &Rig, principal: &str, ttl: Duration) -> anyhow::Result<SessionRecipe> {
        let (role, person) =
            crate::hil::scenario::parse_principal(principal).map_err(|e| anyhow::anyhow!(e))?;
        let drone = rig.drone.clone().context("no drone address")?;
        let key = rig
            .dir
            .join("dev/keys")
            .join(format!("{}.key", crate::dev_setup::DEV_KID));
        let token = crate::auth::shell::issue_from_file(&crate::auth::shell::IssueRequest {
            key_path: &key,
            kid: Some(crate::dev_setup::DEV_KID),
            role,
            subject: &person,
            audience: &drone.topics.server_name,
            ttl,
            jti: None,
            now_unix_s: crate::auth::shell::unix_s_now(),
        })
        .map_err(|e| anyhow::anyhow!("token for {principal}: {e}"))?;
        let mut mqtt = rig.ground_mqtt.clone().context("no ground MQTT settings")?;
        let (cert, key) = rig.principal_certificate(principal)?;
        mqtt.client_cert_path = Some(cert);
        mqtt.client_key_path = Some(key);
        Ok(SessionRecipe {
            principal: principal.to_owned(),
            mqtt,
            drone,
            token,
        })
    }

    async fn open(&self, stop: CancellationToken) -> anyhow::Result<Session> {
        Session::open(
            &self.mqtt,
            self.drone.clone(),
            &self.principal,
            self.token.clone(),
            stop,
        )
        .await
    }
}

async fn open_session(
    rig: &Rig,
    principal: &str,
    ttl: Duration,
    stop: CancellationToken,
) -> anyhow::Result<Session> {
    SessionRecipe::new(rig, principal, ttl)?.open(stop).await
}

/// Rounds of the session burst: enough to tell the allocator's high-water mark, which the
/// first rounds raise less and less, from a leak, which costs the same every round.
const BURST_ROUNDS: usize = 5;

/// Sessions opened together and closed, `BURST_ROUNDS` rounds, with the load stopped: the daemon's
/// RSS before, with them open, and 5 s after they closed.
async fn session_bursts(
    rig: &Rig,
    ctx: &Ctx,
    pid: u32,
    n: usize,
    ttl: Duration,
    csv: &Path,
) -> anyhow::Result<()> {
    let rss = || proc_sample(pid).map_or(0, |s| s.rss_kb);
    let mut recipes = Vec::new();
    for i in 0..n {
        recipes.push(SessionRecipe::new(
            rig,
            &format!("read_only:soak-burst-{i}"),
            ttl,
        )?);
    }
    let mut text = String::from("round,sessions,rss_before_kb,rss_open_kb,rss_closed_kb\n");
    tokio::time::sleep(Duration::from_secs(5)).await;
    for round in 1..=BURST_ROUNDS {
        let before = rss();
        let stop = rig.stop.child_token();
        let mut sessions = Vec::new();
        for recipe in &recipes {
            sessions.push(recipe.open(stop.clone()).await?);
        }
        let calls = sessions
            .iter()
            .map(|session| session.call("get_status", json!({}), Duration::from_secs(10)));
        let answered = futures::future::join_all(calls)
            .await
            .iter()
            .filter(|o| o.ok)
            .count();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let open = rss();
        for session in &sessions {
            session.close(Duration::from_secs(5)).await;
        }
        stop.cancel();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let closed = rss();
        ctx.load.note(
            ctx.epoch,
            format!(
                "session burst {round}: {answered} of {n} sessions answered; RSS {before} kB \
                 before, {open} kB open ({:+.1} kB a session), {closed} kB closed",
                (open as f64 - before as f64) / n as f64
            ),
        );
        ctx.load
            .bursts
            .lock()
            .unwrap()
            .push((before, open, closed, answered));
        text.push_str(&format!("{round},{answered},{before},{open},{closed}\n"));
    }
    std::fs::write(csv, text).with_context(|| format!("cannot write {}", csv.display()))
}

/// One busy ground client: subscribed to the status, calling the read-only tools twice a
/// second; it subscribes again every 30 s (a broker restart ends every session).
async fn session_load(ctx: Ctx, session: Session, index: usize) {
    const TOOLS: [&str; 4] = [
        "get_status",
        "get_envelope",
        "preflight_check",
        "get_status",
    ];
    let limit = Duration::from_secs(5);
    // Spread the sessions over the half second.
    ctx.sleep(Duration::from_millis(50 * index as u64 % 500))
        .await;
    let mut n = 0usize;
    while ctx.running() {
        let subscribe = session
            .request(
                "resources/subscribe",
                json!({"uri": crate::mcp::resources::STATUS_URI}),
                limit,
            )
            .await;
        count(&ctx.load, &subscribe);
        for _ in 0..60 {
            if !ctx.running() {
                return;
            }
            let outcome = session.call(TOOLS[n % TOOLS.len()], json!({}), limit).await;
            count(&ctx.load, &outcome);
            n += 1;
            ctx.sleep(Duration::from_millis(500)).await;
        }
    }
}

/// [`session_load`], then the session closed as a client closes it (the session burst
/// after the run counts on the daemon's sessions being its own).
async fn session_load_then_close(ctx: Ctx, session: Session, index: usize) {
    session_load(ctx, session.clone(), index).await;
    session.close(Duration::from_secs(5)).await;
}

fn count(load: &Load, outcome: &CallOutcome) {
    if outcome.ok {
        load.calls_ok.fetch_add(1, Ordering::Relaxed);
    } else {
        load.calls_failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A session opened, used once and closed every 5 s: what a session costs the daemon must
/// come back when it ends (issue 21: "a session left open costs about 70 KB").
async fn session_churn(ctx: Ctx, recipe: SessionRecipe) {
    while ctx.running() {
        let stop = ctx.stop.child_token();
        if let Ok(session) = recipe.open(stop.clone()).await {
            let outcome = session
                .call("get_status", json!({}), Duration::from_secs(10))
                .await;
            count(&ctx.load, &outcome);
            if outcome.ok {
                ctx.load.sessions_churned.fetch_add(1, Ordering::Relaxed);
            }
            // As a client ends a session: the daemon drops it at once.
            session.close(Duration::from_secs(5)).await;
        }
        // Ends the MQTT driver too.
        stop.cancel();
        ctx.sleep(Duration::from_secs(5)).await;
    }
}

/// One flight after another by the lease holder; every `estop_every` a goto is stopped.
async fn flights(ctx: Ctx, operator: Session, admin: Session, estop_every: Duration) {
    const SOURCES: [&str; 4] = ["mcp", "panic_topic", "local_socket", "bridge"];
    let mut next_estop = Instant::now() + estop_every;
    let mut n = 0u64;
    let mut stops = 0usize;
    while ctx.running() {
        n += 1;
        if let Err(e) = ready_on_ground(&ctx, &operator, &admin).await {
            ctx.load
                .note(ctx.epoch, format!("flight {n}: not ready: {e:#}"));
            ctx.load.flights_failed.fetch_add(1, Ordering::Relaxed);
            ctx.sleep(Duration::from_secs(5)).await;
            continue;
        }
        let lat = if n % 2 == 0 {
            NORTH_LAT_DEG
        } else {
            SOUTH_LAT_DEG
        };
        let goto = json!({"latitude_deg": lat, "longitude_deg": HOME_LON_DEG,
            "altitude_m": ALTITUDE_M});
        let flown = async {
            let takeoff = operator
                .call(
                    "takeoff",
                    json!({"altitude_m": ALTITUDE_M}),
                    Duration::from_secs(60),
                )
                .await;
            if !takeoff.ok {
                bail!("takeoff: {}", takeoff.text);
            }
            if Instant::now() >= next_estop && ctx.running() {
                let source = SOURCES[stops % SOURCES.len()];
                stops += 1;
                next_estop = Instant::now() + estop_every;
                let turn = ctx.turn.clone().lock_owned().await;
                let moving = {
                    let operator = operator.clone();
                    let goto = goto.clone();
                    tokio::spawn(async move {
                        operator.call("goto", goto, Duration::from_secs(60)).await
                    })
                };
                ctx.sleep(Duration::from_secs(3)).await;
                let record = estop(&ctx, &operator, source).await;
                let answered = moving.await.ok();
                ctx.load.note(
                    ctx.epoch,
                    format!(
                        "e-stop from {source}: {}; the goto answered {}",
                        record.latency.map_or(
                            "no hold on the wire within 2 s".into(),
                            |d| format!("hold on the wire after {:.1} ms", d.as_secs_f64() * 1e3)
                        ),
                        answered.map_or("nothing".into(), |o| o.text)
                    ),
                );
                ctx.load.estops.lock().unwrap().push(record);
                drop(turn);
                if source == "bridge" {
                    ctx.bridge("release").await?;
                }
                ctx.sleep(Duration::from_secs(1)).await;
                reset(&ctx, &admin).await?;
                let control = operator
                    .call("request_control", json!({}), Duration::from_secs(10))
                    .await;
                if !control.ok {
                    bail!("request_control after the reset: {}", control.text);
                }
            } else {
                let moved = operator.call("goto", goto, Duration::from_secs(90)).await;
                if !moved.ok {
                    bail!("goto: {}", moved.text);
                }
            }
            let landed = operator
                .call("land", json!({}), Duration::from_secs(90))
                .await;
            if !landed.ok {
                bail!("land: {}", landed.text);
            }
            Ok(())
        };
        match flown.await {
            Ok(()) => {
                ctx.load.flights_done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                ctx.load.flights_failed.fetch_add(1, Ordering::Relaxed);
                ctx.load.note(ctx.epoch, format!("flight {n}: {e:#}"));
                // A refusal is at once (the autopilot not heard): not a loop of refusals.
                ctx.sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Until the vehicle is on the ground, disarmed, the stop reset and the lease held: lands
/// what a fault left in the air, resets what a failsafe latched.
async fn ready_on_ground(ctx: &Ctx, operator: &Session, admin: &Session) -> anyhow::Result<()> {
    let limit = Duration::from_secs(10);
    for _ in 0..30 {
        if !ctx.running() {
            return Ok(());
        }
        let answer = operator.call("get_status", json!({}), limit).await;
        if !answer.ok {
            ctx.sleep(Duration::from_secs(2)).await;
            continue;
        }
        let status: Value = serde_json::from_str(&answer.text).unwrap_or_default();
        if status.pointer("/emergency_stop/latched") == Some(&Value::Bool(true)) {
            let _ = ctx.bridge("release").await;
            reset(ctx, admin).await?;
            ctx.sleep(Duration::from_secs(1)).await;
            continue;
        }
        let armed = status.pointer("/vehicle/mode/armed") == Some(&Value::Bool(true));
        let control = operator.call("request_control", json!({}), limit).await;
        if !control.ok {
            ctx.sleep(Duration::from_secs(2)).await;
            continue;
        }
        if armed {
            let landed = operator
                .call("land", json!({}), Duration::from_secs(90))
                .await;
            if !landed.ok {
                ctx.sleep(Duration::from_secs(2)).await;
            }
            continue;
        }
        return Ok(());
    }
    bail!("the vehicle was not back on the ground and ready within 30 tries")
}

async fn reset(ctx: &Ctx, admin: &Session) -> anyhow::Result<()> {
    let answer = admin
        .call("reset_emergency_stop", json!({}), Duration::from_secs(10))
        .await;
    if !answer.ok {
        ctx.load
            .note(ctx.epoch, format!("reset_emergency_stop: {}", answer.text));
    }
    Ok(())
}

/// Triggers an e-stop from `source` and measures the trigger to the hold on the wire.
async fn estop(ctx: &Ctx, operator: &Session, source: &'static str) -> EstopRecord {
    let reason = format!("soak: e-stop from {source}");
    let at = ctx.epoch.elapsed();
    let at_s = ctx.now_s();
    let triggered: anyhow::Result<()> = async {
        match source {
            "mcp" => {
                let answer = operator
                    .call(
                        "emergency_stop",
                        json!({"reason": reason}),
                        Duration::from_secs(5),
                    )
                    .await;
                if !answer.ok {
                    bail!("emergency_stop: {}", answer.text);
                }
            }
            "panic_topic" => {
                let topic = ctx.drone.panic_topic(&operator.client_id);
                operator
                    .publish(topic, json!({"reason": reason}).to_string().into_bytes())
                    .await?;
            }
            "local_socket" => {
                let answer =
                    crate::estop::local::request(&ctx.estop_socket, &format!("STOP {reason}"))
                        .await?;
                if !answer.starts_with("OK") {
                    bail!("the local e-stop answered {answer}");
                }
            }
            _ => ctx.bridge("press").await?,
        }
        Ok(())
    }
    .await;
    if let Err(e) = &triggered {
        ctx.load
            .note(ctx.epoch, format!("e-stop from {source}: {e:#}"));
    }
    let hold = ctx
        .wire
        .wait_for(at, Duration::from_secs(2), |f| {
            from_companion(f) && is_hold(f.message.as_ref())
        })
        .await;
    let latency = hold.map(|f| f.at.saturating_sub(at));
    ctx.sleep(Duration::from_millis(300)).await;
    let status = operator
        .call("get_status", json!({}), Duration::from_secs(5))
        .await;
    let status: Value = serde_json::from_str(&status.text).unwrap_or_default();
    EstopRecord {
        source,
        at_s,
        latency,
        latched: status.pointer("/emergency_stop/latched") == Some(&Value::Bool(true)),
    }
}

/// The e-stop's first rung: `DO_SET_MODE` to ArduCopter's BRAKE (`estop::wire`).
fn is_hold(message: Option<&MavMessage>) -> bool {
    let Some((_, brake)) = FlightMode::encode(AutopilotKind::Ardupilot, FlightMode::Brake) else {
        return false;
    };
    matches!(message, Some(MavMessage::COMMAND_LONG(c))
        if c.command == MavCmd::MAV_CMD_DO_SET_MODE && c.param2 == brake as f32)
}

/// Applies `kind`, holds it, undoes it, and measures the time until the daemon serves again.
async fn fault_cycle(
    rig: &mut Rig,
    ctx: &Ctx,
    probe: &Session,
    _admin: &Session,
    kind: FaultKind,
) -> anyhow::Result<FaultRecord> {
    let applied_s = ctx.now_s();
    *ctx.load.fault.lock().unwrap() = kind.label().to_owned();
    ctx.load.note(ctx.epoch, format!("fault: {}", kind.label()));
    match kind {
        FaultKind::Broker => {
            if let Some(mut broker) = rig.broker.take() {
                let _ = broker.kill().await;
            }
        }
        FaultKind::Link => rig.relay()?.set_fault(LineFault::Cut)?,
        FaultKind::Noise => rig
            .relay()?
            .set_fault(LineFault::Corrupt { probability: 0.05 })?,
        FaultKind::Stall => rig.signal_daemon(libc::SIGSTOP)?,
        FaultKind::Fade => rig.proxy()?.set_fault(NetFault::Partition),
        FaultKind::Bridge => ctx.bridge("silence").await?,
    }
    ctx.sleep(kind.held()).await;
    match kind {
        FaultKind::Broker => rig.start_broker().await?,
        FaultKind::Link | FaultKind::Noise => rig.relay()?.set_fault(LineFault::None)?,
        FaultKind::Stall => rig.signal_daemon(libc::SIGCONT)?,
        FaultKind::Fade => rig.proxy()?.set_fault(NetFault::None),
        FaultKind::Bridge => ctx.bridge("resume").await?,
    }
    let undone = Instant::now();
    let undone_s = ctx.now_s();
    let mut note = String::new();
    let mut recovered_after = None;
    while undone.elapsed() < Duration::from_secs(60) && !ctx.stop.is_cancelled() {
        match serving(probe).await {
            Ok(()) => {
                recovered_after = Some(undone.elapsed());
                break;
            }
            Err(why) => note = why,
        }
        // Four probes a second stay below the per-session call limit (10 per second).
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ctx.load.fault.lock().unwrap().clear();
    ctx.load.note(
        ctx.epoch,
        format!(
            "fault undone: {}; {}",
            kind.label(),
            recovered_after.map_or(format!("not serving after 60 s: {note}"), |d| format!(
                "serving again after {:.2} s (budget {:.0} s)",
                d.as_secs_f64(),
                kind.budget().as_secs_f64()
            ))
        ),
    );
    Ok(FaultRecord {
        kind,
        applied_s,
        undone_s,
        recovered_after,
        note,
    })
}

/// Serving: a ground session is answered, and the status shows the autopilot link up with a
/// fresh heartbeat and the bridge healthy.
async fn serving(probe: &Session) -> Result<(), String> {
    let answer = probe
        .call("get_status", json!({}), Duration::from_secs(1))
        .await;
    if !answer.ok {
        return Err(format!("get_status: {}", answer.text));
    }
    let status: Value = serde_json::from_str(&answer.text).map_err(|e| e.to_string())?;
    if status.pointer("/vehicle/link/connected") != Some(&Value::Bool(true)) {
        return Err("the autopilot link is down".into());
    }
    if status.pointer("/vehicle/mode/freshness/stale") != Some(&Value::Bool(false)) {
        return Err("the autopilot's heartbeat is stale".into());
    }
    match status.pointer("/bridge/state").and_then(Value::as_str) {
        Some("healthy") => Ok(()),
        other => Err(format!("the bridge is {}", other.unwrap_or("unknown"))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn sampler(
    ctx: Ctx,
    pid: u32,
    audit_dir: PathBuf,
    metrics_port: u16,
    every: Duration,
    started: Instant,
    csv: PathBuf,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let header = "t_s,rss_kb,fds,threads,cpu_s,audit_bytes,frames_received,audit_records,\
                  audit_dropped,mqtt_reconnects,calls_ok,calls_failed,sessions_churned,flights,\
                  queue_depth_total,queue_fill_max,queue_depths,fault\n";
    let _ = std::fs::write(&csv, header);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.stop.cancelled() => return,
        }
        let Some(mut sample) = proc_sample(pid) else {
            ctx.load
                .note(ctx.epoch, format!("sample: /proc/{pid} is gone"));
            return;
        };
        sample.t_s = started.elapsed().as_secs_f64();
        sample.audit_bytes = dir_bytes(&audit_dir);
        if let Some(text) = scrape(metrics_port).await {
            let value = |name: &str| metric(&text, name);
            sample.frames_received = value("flight_companion_mavlink_frames_received_total");
            sample.audit_records = value("flight_companion_audit_records");
            sample.audit_dropped = value("flight_companion_audit_dropped_total");
            sample.mqtt_reconnects = value("flight_companion_mqtt_reconnects_total");
            sample.queues = queue_depths(&text);
        }
        let load = &ctx.load;
        sample.calls_ok = load.calls_ok.load(Ordering::Relaxed);
        sample.calls_failed = load.calls_failed.load(Ordering::Relaxed);
        sample.sessions_churned = load.sessions_churned.load(Ordering::Relaxed);
        sample.flights = load.flights_done.load(Ordering::Relaxed);
        sample.fault = load.fault.lock().unwrap().clone();
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        let line = format!(
            "{:.1},{},{},{},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            sample.t_s,
            sample.rss_kb,
            sample.fds,
            sample.threads,
            sample.cpu_s,
            sample.audit_bytes,
            opt(sample.frames_received),
            opt(sample.audit_records),
            opt(sample.audit_dropped),
            opt(sample.mqtt_reconnects),
            sample.calls_ok,
            sample.calls_failed,
            sample.sessions_churned,
            sample.flights,
            // Empty when the scrape got nothing (a stopped daemon), as the counters are.
            opt((!sample.queues.is_empty()).then(|| sample.queues.iter().map(|q| q.1).sum())),
            opt((!sample.queues.is_empty()).then(|| {
                sample
                    .queues
                    .iter()
                    .map(|q| q.1 / q.2.max(1.0))
                    .fold(0.0, f64::max)
            })),
            sample
                .queues
                .iter()
                .map(|(name, depth, capacity)| format!("{name}={depth}/{capacity}"))
                .collect::<Vec<_>>()
                .join(";")
                .replace(',', " "),
            sample.fault
        );
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&csv) {
            use std::io::Write;
            let _ = f.write_all(line.as_bytes());
        }
        samples.lock().unwrap().push(sample);
    }
}

/// RSS, descriptors, threads and CPU time of `pid`, from `/proc`.
fn proc_sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_s = (ticks(11)? + ticks(12)?) as f64 / hz;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        rss_kb: field("VmRSS:")?,
        threads: field("Threads:")?,
        fds,
        cpu_s,
        ..Sample::default()
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /metrics`, or `None` within 2 s (a stopped daemon answers nothing).
async fn scrape(port: u16) -> Option<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

/// The queues' depths and capacities from `flight_companion_queue_depth{queue="..."}` and
/// `flight_companion_queue_capacity`, by queue name.
fn queue_depths(text: &str) -> Vec<(String, f64, f64)> {
    let labelled = |name: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix("{queue=\"")?;
                let (queue, rest) = rest.split_once("\"}")?;
                Some((queue.to_owned(), rest.trim().parse().ok()?))
            })
            .collect()
    };
    let capacities = labelled("flight_companion_queue_capacity");
    labelled("flight_companion_queue_depth")
        .into_iter()
        .map(|(queue, depth)| {
            let capacity = capacities
                .iter()
                .find(|(q, _)| *q == queue)
                .map_or(0.0, |(_, c)| *c);
            (queue, depth, capacity)
        })
        .collect()
}

/// The sum of a metric's samples (all its label sets).
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest
            .rsplit_once(' ')
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn write_faults(path: &Path, before: &[FaultRecord], new: &FaultRecord) -> anyhow::Result<()> {
    let mut text = String::from("fault,applied_s,undone_s,recovered_after_s,budget_s,note\n");
    for f in before.iter().chain(std::iter::once(new)) {
        text.push_str(&format!(
            "{},{:.1},{:.1},{},{:.0},{}\n",
            f.kind.label(),
            f.applied_s,
            f.undone_s,
            f.recovered_after
                .map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64())),
            f.kind.budget().as_secs_f64(),
            f.note.replace(',', ";")
        ));
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_estops(path: &Path, estops: &[EstopRecord]) -> anyhow::Result<()> {
    let mut text = String::from("source,at_s,latency_ms,budget_ms,latched\n");
    for e in estops {
        text.push_str(&format!(
            "{},{:.1},{},{:.0},{}\n",
            e.source,
            e.at_s,
            e.latency
                .map_or(String::new(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
            ESTOP_BUDGET.as_secs_f64() * 1e3,
            e.latched
        ));
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `flight-companion audit verify DIR` of the run's log, as a person would run it.
async fn audit_verify(exe: &Path, dir: &Path) -> Result<String, String> {
    let output = tokio::process::Command::new(exe)
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .await
        .map_err(|e| format!("cannot run audit verify: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!("audit verify {}: {text}", dir.display()))
    }
}

/// Samples after the warm-up, cut in thirds by time: (first, last).
fn thirds(samples: &[Sample], warm_up_s: f64) -> (Vec<&Sample>, Vec<&Sample>) {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warm_up_s).collect();
    let n = after.len() / 3;
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    (after[..n].to_vec(), after[after.len() - n..].to_vec())
}

/// Every criterion the run failed, with the reason; empty: passed.
fn judge(
    args: &SoakArgs,
    samples: &[Sample],
    faults: &[FaultRecord],
    estops: &[EstopRecord],
    audit: &Result<String, String>,
    load: &Load,
) -> Vec<String> {
    let mut failed = Vec::new();
    let (first, last) = thirds(samples, args.warm_up_s);
    if first.is_empty() {
        failed.push(format!(
            "fewer than three samples after the {:.0} s warm-up",
            args.warm_up_s
        ));
    } else {
        let max = |s: &[&Sample], f: fn(&Sample) -> u64| s.iter().map(|s| f(s)).max().unwrap_or(0);
        let (rss_first, rss_last) = (max(&first, |s| s.rss_kb), max(&last, |s| s.rss_kb));
        let limit = rss_first as f64 * (1.0 + args.rss_growth_percent_max / 100.0);
        if rss_last as f64 > limit {
            failed.push(format!(
                "memory grew: the last third's largest RSS is {rss_last} kB, more than {:.0} % \
                 above the first third's {rss_first} kB",
                args.rss_growth_percent_max
            ));
        }
        let (fds_first, fds_last) = (max(&first, |s| s.fds), max(&last, |s| s.fds));
        if fds_last > fds_first {
            failed.push(format!(
                "descriptors grew: the last third's largest count is {fds_last}, the first \
                 third's {fds_first}"
            ));
        }
    }
    for f in faults {
        match f.recovered_after {
            Some(d) if d <= f.kind.budget() => {}
            Some(d) => failed.push(format!(
                "{} at {:.0} s: serving again only after {:.2} s (budget {:.0} s)",
                f.kind.label(),
                f.applied_s,
                d.as_secs_f64(),
                f.kind.budget().as_secs_f64()
            )),
            None => failed.push(format!(
                "{} at {:.0} s: not serving 60 s after it was undone: {}",
                f.kind.label(),
                f.applied_s,
                f.note
            )),
        }
    }
    for e in estops {
        match e.latency {
            Some(d) if d <= ESTOP_BUDGET && e.latched => {}
            Some(d) if d <= ESTOP_BUDGET => failed.push(format!(
                "e-stop from {} at {:.0} s: the status did not show it latched",
                e.source, e.at_s
            )),
            Some(d) => failed.push(format!(
                "e-stop from {} at {:.0} s: the hold crossed the wire after {:.1} ms (budget \
                 {:.0} ms)",
                e.source,
                e.at_s,
                d.as_secs_f64() * 1e3,
                ESTOP_BUDGET.as_secs_f64() * 1e3
            )),
            None => failed.push(format!(
                "e-stop from {} at {:.0} s: no hold on the wire within 2 s",
                e.source, e.at_s
            )),
        }
    }
    if let Err(e) = audit {
        failed.push(format!("the audit log does not verify: {e}"));
    }
    // Sessions opened and closed again and again: what they cost is reused. glibc's malloc
    // keeps freed pages, so the RSS does not fall back after the first round; a leak costs
    // the same every round, reuse makes each round cost less. The telemetry keeps flowing
    // during the bursts, so one round may also carry a buffer or an arena grown beside it
    // (the CI run of 2026-12-06 added 40, 16 and then 324 kB in its last three rounds):
    // the median of the last three rounds' additions decides, and it may be at most a
    // quarter of what the first round's sessions cost while open (or 256 kB of noise).
    let bursts = load.bursts.lock().unwrap().clone();
    if let Some(verdict) = burst_verdict(&bursts) {
        failed.push(verdict);
    }
    if load.flights_done.load(Ordering::Relaxed) == 0 {
        failed.push("no flight was completed: the run did not exercise the flight path".into());
    }
    failed
}

/// Whether the session bursts (RSS before, open, closed in kB, sessions answered) show a
/// leak: `None` when the later rounds reuse what the first one took.
fn burst_verdict(bursts: &[(u64, u64, u64, usize)]) -> Option<String> {
    let (first, later) = bursts.split_first()?;
    if later.is_empty() {
        return None;
    }
    let cost = first.1.saturating_sub(first.0);
    let allowed = (cost / 4).max(256);
    let mut added: Vec<u64> = later
        .iter()
        .rev()
        .take(3)
        .map(|(before, _, closed, _)| closed.saturating_sub(*before))
        .collect();
    added.sort_unstable();
    // With two later rounds this is the larger of them.
    let median = added[added.len() / 2];
    (median > allowed).then(|| {
        format!(
            "sessions do not return their memory: the last rounds of sessions opened and \
             closed added {added:?} kB, a median of {median} kB ({allowed} kB allowed; the \
             first round's cost {cost} kB while open)"
        )
    })
}

/// The largest depth each queue reached in any sample, against its capacity.
fn queue_summary(samples: &[Sample]) -> String {
    let mut largest: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for (name, depth, capacity) in samples.iter().flat_map(|s| &s.queues) {
        let entry = largest.entry(name.as_str()).or_insert((0.0, *capacity));
        *entry = (entry.0.max(*depth), *capacity);
    }
    if largest.is_empty() {
        return "queues: no depths sampled (the daemon's /metrics had none)".into();
    }
    let each: Vec<String> = largest
        .iter()
        .map(|(name, (depth, capacity))| format!("{name} {depth} of {capacity}"))
        .collect();
    format!("queues, the largest depth sampled: {}", each.join(", "))
}

#[allow(clippy::too_many_arguments)]
fn summary(
    args: &SoakArgs,
    seed: u64,
    samples: &[Sample],
    faults: &[FaultRecord],
    estops: &[EstopRecord],
    audit: &Result<String, String>,
    load: &Load,
    failed: &[String],
) -> String {
    let mut s = String::new();
    let mut line = |t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(format!(
        "soak: {:.0} min, {:.0} frames/s asked, {} sessions, faults {:?} every {:.0} s, an \
         e-stop every {:.0} s, seed {seed}",
        args.minutes,
        args.telemetry_per_s,
        args.sessions,
        args.faults.iter().map(|f| f.label()).collect::<Vec<_>>(),
        args.fault_every_s,
        args.estop_every_s
    ));
    if let (Some(a), Some(b)) = (samples.first(), samples.last()) {
        let span = (b.t_s - a.t_s).max(1e-9);
        let rss_max = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
        line(format!(
            "RSS: {} kB at {:.0} s, {} kB at the end, {} kB at most",
            a.rss_kb, a.t_s, b.rss_kb, rss_max
        ));
        let (first, last) = thirds(samples, args.warm_up_s);
        let max = |s: &[&Sample], f: fn(&Sample) -> u64| s.iter().map(|s| f(s)).max().unwrap_or(0);
        line(format!(
            "after the {:.0} s warm-up: largest RSS {} kB in the first third, {} kB in the \
             last; largest fd count {} and {}; threads {} and {}",
            args.warm_up_s,
            max(&first, |s| s.rss_kb),
            max(&last, |s| s.rss_kb),
            max(&first, |s| s.fds),
            max(&last, |s| s.fds),
            max(&first, |s| s.threads),
            max(&last, |s| s.threads)
        ));
        line(format!(
            "CPU: {:.1} % of a core on average ({:.1} s in {:.0} s)",
            (b.cpu_s - a.cpu_s) / span * 100.0,
            b.cpu_s - a.cpu_s,
            span
        ));
        if let (Some(fa), Some(fb)) = (a.frames_received, b.frames_received) {
            line(format!(
                "telemetry: {:.0} frames/s received by the daemon; {:.2} µs of daemon CPU per \
                 frame (everything else included)",
                (fb - fa) / span,
                (b.cpu_s - a.cpu_s) / (fb - fa).max(1.0) * 1e6
            ));
        }
        line(format!(
            "audit: {:.0} bytes per minute ({} to {} bytes); records dropped: {}",
            (b.audit_bytes as f64 - a.audit_bytes as f64) / span * 60.0,
            a.audit_bytes,
            b.audit_bytes,
            b.audit_dropped.map_or("unknown".into(), |v| format!("{v}"))
        ));
        line(queue_summary(samples));
    }
    line(format!(
        "load: {} calls answered, {} failed or refused; {} sessions opened and closed; {} \
         flights completed, {} cut short",
        load.calls_ok.load(Ordering::Relaxed),
        load.calls_failed.load(Ordering::Relaxed),
        load.sessions_churned.load(Ordering::Relaxed),
        load.flights_done.load(Ordering::Relaxed),
        load.flights_failed.load(Ordering::Relaxed)
    ));
    for kind in &args.faults {
        let times: Vec<String> = faults
            .iter()
            .filter(|f| f.kind == *kind)
            .map(|f| {
                f.recovered_after
                    .map_or("none".into(), |d| format!("{:.2}", d.as_secs_f64()))
            })
            .collect();
        if !times.is_empty() {
            line(format!(
                "recovery after {} (budget {:.0} s): {} s",
                kind.label(),
                kind.budget().as_secs_f64(),
                times.join(", ")
            ));
        }
    }
    let latencies: Vec<String> = estops
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.source,
                e.latency.map_or("none".into(), |d| format!(
                    "{:.1} ms",
                    d.as_secs_f64() * 1e3
                ))
            )
        })
        .collect();
    line(format!(
        "e-stops (budget {:.0} ms): {}",
        ESTOP_BUDGET.as_secs_f64() * 1e3,
        if latencies.is_empty() {
            "none".into()
        } else {
            latencies.join(", ")
        }
    ));
    for (i, (before, open, closed, answered)) in load.bursts.lock().unwrap().iter().enumerate() {
        line(format!(
            "session burst {}: {answered} sessions opened together: RSS {before} kB before, \
             {open} kB open ({:+.1} kB a session), {closed} kB 5 s after they closed",
            i + 1,
            (*open as f64 - *before as f64) / (*answered).max(1) as f64
        ));
    }
    line(match audit {
        Ok(text) => format!("audit verify: {}", text.lines().next().unwrap_or("ok")),
        Err(e) => format!("audit verify FAILED: {e}"),
    });
    if failed.is_empty() {
        line("soak: PASS".into());
    } else {
        for f in failed {
            line(format!("FAIL: {f}"));
        }
        line("soak: FAIL".into());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_their_label_sets() {
        let text = "# HELP x\nflight_companion_mqtt_reconnects_total 3\n\
                    flight_companion_audit_records 10\n\
                    flight_companion_audit_records_extra 99\n\
                    flight_companion_estops_total{trigger=\"mcp\"} 2\n\
                    flight_companion_estops_total{trigger=\"bridge\"} 1\n";
        assert_eq!(
            metric(text, "flight_companion_mqtt_reconnects_total"),
            Some(3.0)
        );
        assert_eq!(metric(text, "flight_companion_audit_records"), Some(10.0));
        assert_eq!(metric(text, "flight_companion_estops_total"), Some(3.0));
        assert_eq!(metric(text, "flight_companion_missing"), None);
    }

    #[test]
    fn queue_depths_are_read_from_the_daemons_metrics() {
        let metrics = crate::metrics::Metrics::default();
        let (tx, _rx) = tokio::sync::mpsc::channel::<u8>(16);
        metrics.watch_channel("link_events tcp:127.0.0.1:5760", &tx);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        let text = crate::metrics::render(
            &metrics,
            &crate::status::StatusReport::without_vehicle(),
            &crate::metrics::ProcessSample::default(),
        );
        assert_eq!(
            queue_depths(&text),
            vec![("link_events tcp:127.0.0.1:5760".to_string(), 2.0, 16.0)]
        );
        let sample = Sample {
            queues: queue_depths(&text),
            ..Sample::default()
        };
        assert_eq!(
            queue_summary(&[sample]),
            "queues, the largest depth sampled: link_events tcp:127.0.0.1:5760 2 of 16"
        );
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = proc_sample(std::process::id()).expect("/proc/self");
        assert!(s.rss_kb > 0 && s.fds > 0 && s.threads > 0);
    }

    #[test]
    fn flat_memory_is_judged_on_the_thirds_after_the_warm_up() {
        let sample = |t_s: f64, rss_kb: u64, fds: u64| Sample {
            t_s,
            rss_kb,
            fds,
            ..Sample::default()
        };
        // A start-up spike inside the warm-up does not count; growth in the last third does.
        let flat: Vec<Sample> = [
            (0.0, 90_000),
            (130.0, 20_000),
            (140.0, 21_000),
            (150.0, 20_500),
        ]
        .iter()
        .map(|&(t, r)| sample(t, r, 30))
        .collect();
        let (first, last) = thirds(&flat, 120.0);
        assert_eq!((first[0].rss_kb, last[0].rss_kb), (20_000, 20_500));
        let growing: Vec<Sample> = (0..9u32)
            .map(|i| {
                sample(
                    120.0 + 10.0 * f64::from(i),
                    20_000 + 1_000 * u64::from(i),
                    30,
                )
            })
            .collect();
        let args = SoakArgs {
            minutes: 5.0,
            out: PathBuf::new(),
            seed: None,
            telemetry_per_s: 2000.0,
            sessions: 10,
            fault_every_s: 60.0,
            faults: vec![FaultKind::Broker],
            estop_every_s: 180.0,
            warm_up_s: 120.0,
            sample_every_s: 10.0,
            rss_growth_percent_max: 10.0,
            session_burst: 0,
        };
        let load = Load::default();
        load.flights_done.store(1, Ordering::Relaxed);
        let ok: Result<String, String> = Ok(String::new());
        assert!(judge(&args, &flat, &[], &[], &ok, &load).is_empty());
        let failed = judge(&args, &growing, &[], &[], &ok, &load);
        assert!(failed[0].starts_with("memory grew"), "{failed:?}");
    }

    #[test]
    fn a_leak_is_told_from_one_round_that_grew_beside_the_sessions() {
        // (before, open, closed) kB of five rounds of 30 sessions.
        let rounds = |figures: &[(u64, u64, u64)]| -> Vec<(u64, u64, u64, usize)> {
            figures.iter().map(|&(b, o, c)| (b, o, c, 30)).collect()
        };
        // The CI run that failed on the last round alone (2026-12-06).
        let spike = rounds(&[
            (45_380, 46_132, 46_112),
            (46_112, 46_388, 46_392),
            (46_392, 46_432, 46_432),
            (46_432, 46_608, 46_448),
            (46_448, 46_772, 46_772),
        ]);
        assert_eq!(burst_verdict(&spike), None);
        // BENCHMARKS.md's five-minute run.
        let reused = rounds(&[
            (42_352, 42_952, 43_004),
            (43_004, 43_592, 43_592),
            (43_592, 43_716, 43_720),
            (43_720, 43_956, 43_952),
            (43_952, 43_992, 43_992),
        ]);
        assert_eq!(burst_verdict(&reused), None);
        // 10 kB kept per session: 300 kB every round, with one round that happened to trim.
        let leak = rounds(&[
            (40_000, 40_700, 40_700),
            (40_700, 41_100, 41_000),
            (41_000, 41_400, 41_300),
            (41_300, 41_700, 41_350),
            (41_350, 41_750, 41_650),
        ]);
        let verdict = burst_verdict(&leak).expect("a leak of 300 kB a round");
        assert!(verdict.contains("a median of 300 kB"), "{verdict}");
        // One round after the first, a leak or not, is judged on that round.
        assert!(burst_verdict(&leak[..2]).is_some());
        assert_eq!(burst_verdict(&leak[..1]), None);
    }
}
