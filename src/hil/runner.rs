//! `flight-companion hil run`: builds the rig around the daemon for each scenario, runs the
//! steps, judges the checks from the wire, and reports.
//!
//! The rig, per scenario (nothing is shared between scenarios, so one cannot poison the next):
//!
//! ```text
//!  rig's MCP sessions ──mTLS── Mosquitto ──── MQTT proxy ──mTLS── daemon ── pty ── serial relay ── autopilot
//!  (one per principal)         (killable)    (partition,           (SIGSTOP,       (cut, unplug,    (simulator,
//!                                             delay, drop)          SIGKILL)         drop, corrupt,   SITL or a
//!                                                                                    delay; stamps    real one)
//!                                                                                    every frame)
//! ```
//!
//! The daemon always reaches the autopilot through a serial device (the relay's pty), as it
//! does on the aircraft; the relay's log of stamped frames is the ground truth for every
//! wire check and figure, independent of the daemon's own logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

use crate::hil::client::{CallOutcome, DroneAddress, Session};
use crate::hil::proxy::{MqttProxy, NetFault};
use crate::hil::relay::{LineFault, SerialRelay};
use crate::hil::report::{CheckResult, Figure, Line, Outcome, ScenarioResult};
use crate::hil::scenario::{
    BridgeAction, Check, CheckKind, EstopSource, Expect, Fault, Need, Scenario, Step, StepKind,
};
use crate::hil::truth::Truth;
use crate::hil::wire::{Direction, WireEvent, WireFrame, WireLog};
use crate::link::dialect::{
    COMMAND_LONG_DATA, MavCmd, MavMessage, MavParamType, MavResult, PARAM_REQUEST_READ_DATA,
    PARAM_SET_DATA,
};
use crate::role::Role;
use crate::vehicle::modes::FlightMode;

pub mod soak;

/// The daemon's component id on the wire (`MAV_COMP_ID_ONBOARD_COMPUTER`).
const COMPANION_COMPONENT_ID: u8 = 191;
/// The rig speaks for "the pilot" as a ground station would: system 255.
const PILOT_SYSTEM_ID: u8 = 255;
const PILOT_COMPONENT_ID: u8 = 190;
/// How often waits look again.
const POLL: Duration = Duration::from_millis(10);
/// Default limit of a step that waits.
const STEP_WITHIN_S_DEFAULT: f64 = 10.0;
/// How long the rig waits for the vehicle to be ready to fly, before the target's allowance:
/// ArduCopter SITL's EKF uses the GPS about 40 s after the first connection.
const READY_WITHIN_S: f64 = 60.0;
/// How long a simulator parameter or command waits for the autopilot's answer on the wire.
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);

/// A scenario the target turned out unable to run: reported skipped with the reason.
#[derive(Debug)]
struct Skip(String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// What the rig runs against.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The built-in simulator, started by the rig (runs anywhere; CI).
    Sim,
    /// ArduPilot or PX4 SITL at this endpoint (`tcpout:HOST:PORT`, `udpin:ADDR:PORT`, ...).
    Sitl(String),
    /// A real autopilot on a serial device: `DEVICE:BAUD`.
    Serial(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        if text == "sim" {
            return Ok(Target::Sim);
        }
        if let Some(endpoint) = text.strip_prefix("sitl:") {
            endpoint
                .parse::<crate::link::endpoint::Endpoint>()
                .map_err(|e| format!("--target {text}: {e}"))?;
            return Ok(Target::Sitl(endpoint.to_owned()));
        }
        if let Some(device) = text.strip_prefix("serial:") {
            format!("serial:{device}")
                .parse::<crate::link::endpoint::Endpoint>()
                .map_err(|e| format!("--target {text}: {e}"))?;
            return Ok(Target::Serial(device.to_owned()));
        }
        Err(format!(
            "--target {text}: expected sim, sitl:ENDPOINT (e.g. sitl:tcpout:127.0.0.1:5760) or \
             serial:DEVICE:BAUD (e.g. serial:/dev/ttyACM0:115200)"
        ))
    }

    pub fn label(&self) -> String {
        match self {
            Target::Sim => "sim".into(),
            Target::Sitl(e) => format!("sitl:{e}"),
            Target::Serial(d) => format!("serial:{d}"),
        }
    }

    /// Why the target cannot run a scenario needing `need`, if it cannot.
    fn lacks(&self, need: Need, allow_flight: bool) -> Option<String> {
        match (self, need) {
            (Target::Serial(_), Need::SimFaults) => {
                Some("needs simulator faults (SIM_* parameters); a real autopilot has none".into())
            }
            (Target::Serial(_), Need::Flight) if !allow_flight => Some(
                "would arm and fly; on a bench autopilot that needs --allow-flight (propellers \
                 off, see hil/README.md)"
                    .into(),
            ),
            _ => None,
        }
    }

    /// How much slower than the simulator this kind of target may be.
    fn allowance(&self, scenario: &Scenario) -> f64 {
        let t = scenario.setup.timing;
        match self {
            Target::Sim => t.sim.unwrap_or(1.0),
            Target::Sitl(_) => t.sitl.unwrap_or(2.0),
            Target::Serial(_) => t.serial.unwrap_or(3.0),
        }
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub target: Target,
    /// Where each scenario's logs and configs go (a directory per scenario).
    pub work_dir: PathBuf,
    pub seed: u64,
    pub allow_flight: bool,
    /// Simulated seconds per wall-clock second of the built-in simulator.
    pub sim_speedup: f64,
    /// The program to start as simulator, daemon and bridge simulator (this binary).
    pub exe: PathBuf,
    /// With a `sitl:` target: the command that starts a fresh SITL for each scenario.
    pub sitl_command: Option<crate::hil::sitl::SitlCommand>,
    /// Simulated seconds the built-in simulator's estimator takes to trust its position.
    pub sim_ekf_ready_s: f64,
}

/// Runs one scenario; never panics on what the rig or the daemon does.
pub async fn run_scenario(
    file: &Path,
    scenario: &Scenario,
    options: &RunOptions,
) -> ScenarioResult {
    let started = Instant::now();
    let mut result = ScenarioResult {
        name: scenario.name.clone(),
        file: file.display().to_string(),
        outcome: Outcome::Passed,
        duration: Duration::ZERO,
        seed: options.seed,
        lines: Vec::new(),
        checks: Vec::new(),
        figures: Vec::new(),
        wire_excerpt: None,
        logs_dir: None,
    };
    for need in &scenario.needs {
        if let Some(reason) = options.target.lacks(*need, options.allow_flight) {
            result.outcome = Outcome::Skipped { reason };
            return result;
        }
    }
    let stem = file
        .file_stem()
        .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
    let dir = options.work_dir.join(&stem);
    let _ = std::fs::remove_dir_all(&dir);
    result.logs_dir = Some(dir.display().to_string());
    let stop = CancellationToken::new();
    let mut rig = Rig::new(dir, options, scenario, stop.clone());
    let budget = Duration::from_secs_f64(scenario.timeout_s * rig.allowance);
    let outcome = match tokio::time::timeout(budget, rig.play(scenario)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.downcast_ref::<Skip>().is_some() => {
            rig.say(format!("SKIPPED: {e}"));
            rig.teardown().await;
            stop.cancel();
            result.outcome = Outcome::Skipped {
                reason: e.to_string(),
            };
            result.lines = std::mem::take(&mut *rig.lines.lock().unwrap());
            result.duration = started.elapsed();
            return result;
        }
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "the scenario did not finish within its timeout of {:.0} s",
            budget.as_secs_f64()
        )),
    };
    let failed_at = rig.epoch.elapsed();
    match outcome {
        Ok(()) => {
            rig.judge(scenario);
            if let Some(c) = rig.checks.iter().find(|c| !c.passed) {
                result.outcome = Outcome::Failed {
                    reason: format!("check failed: {}", c.description),
                };
            }
        }
        Err(reason) => {
            rig.say(format!("FAILED: {reason}"));
            result.outcome = Outcome::Failed { reason };
        }
    }
    if matches!(result.outcome, Outcome::Failed { .. }) {
        let around = rig.failure_at.unwrap_or(failed_at);
        result.wire_excerpt = Some(quiet_excerpt(&rig.wire, around));
    }
    rig.teardown().await;
    stop.cancel();
    result.lines = std::mem::take(&mut *rig.lines.lock().unwrap());
    result.checks = std::mem::take(&mut rig.checks);
    result.figures = std::mem::take(&mut rig.figures);
    result.duration = started.elapsed();
    result
}

type Shared<T> = Arc<Mutex<T>>;

/// Lines a child wrote, stamped on the rig's clock.
#[derive(Clone, Default)]
struct LogLines(Shared<Vec<(Duration, String)>>);

impl LogLines {
    fn find(&self, from: Duration, needle: &str) -> Option<Duration> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, line)| *at >= from && line.contains(needle))
            .map(|(at, _)| *at)
    }
}

/// Reads `reader` line by line into `lines` and into the file `path`.
fn capture(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    path: PathBuf,
    lines: LogLines,
    epoch: Instant,
) {
    tokio::spawn(async move {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .ok();
        let mut reader = BufReader::new(reader).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
            lines.0.lock().unwrap().push((epoch.elapsed(), line));
        }
    });
}

struct Rig {
    dir: PathBuf,
    options: RunOptions,
    allowance: f64,
    epoch: Instant,
    stop: CancellationToken,
    lines: Shared<Vec<Line>>,
    checks: Vec<CheckResult>,
    figures: Vec<Figure>,
    /// When a step failed, for the wire excerpt.
    failure_at: Option<Duration>,

    sim: Option<Child>,
    /// The SITL this scenario started (`--sitl-command`).
    sitl: Option<crate::hil::sitl::SitlProcess>,
    /// A short private directory for the rig's Unix sockets: a socket path must fit in 107
    /// bytes, and the scenario's directory under a long `--out` does not.
    runtime_dir: Option<PathBuf>,
    /// How this target takes the simulator faults the scenario uses (found by asking it).
    fault_params: FaultParams,
    relay: Option<SerialRelay>,
    broker: Option<Child>,
    broker_port: u16,
    proxy: Option<MqttProxy>,
    daemon: Option<Child>,
    daemon_log: LogLines,
    daemon_config: PathBuf,
    bridge_pty: Option<Child>,
    bridge_sim: Option<(Child, ChildStdin)>,
    bridge_log: LogLines,

    ground_mqtt: Option<crate::config::MqttConfig>,
    drone: Option<DroneAddress>,
    sessions: HashMap<String, Session>,
    /// Background calls by step id.
    background: HashMap<String, (String, tokio::task::JoinHandle<CallOutcome>)>,
    floods: Vec<tokio::task::JoinHandle<Vec<CallOutcome>>>,
    /// Step id → when it started (for checks).
    marks: HashMap<String, Duration>,
    envelope: crate::config::EnvelopeConfig,
    audit_dir: Option<PathBuf>,
    estop_socket: PathBuf,
    /// Every frame of the relay and every fault of the relay and the proxy, in order.
    wire: WireLog,
    truth_now: Truth,
    truth_cursor: u64,
    /// The ground station beside the daemon (`gcs` steps).
    gcs: Option<RigGcs>,
    /// Its endpoint's port in the daemon's configuration.
    gcs_port: Option<u16>,
    /// More arguments of the built-in simulator (the soak's telemetry load).
    sim_extra_args: Vec<String>,
}

/// The rig's own ground station on a `gcs` endpoint of the daemon: system 255, as
/// QGroundControl, heartbeating every second; what it is told (ACKs, STATUSTEXT) is kept.
struct RigGcs {
    link: crate::link::transport::LinkHandle,
    told: Shared<Vec<crate::link::MavMessage>>,
}

impl RigGcs {
    async fn open(port: u16, stop: CancellationToken) -> anyhow::Result<RigGcs> {
        use crate::link::transport::{Link, LinkEvent, LinkOptions};
        let options = LinkOptions {
            system_id: PILOT_SYSTEM_ID,
            component_id: PILOT_COMPONENT_ID,
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(1),
            signing: None,
            peer: crate::link::pin::PeerPolicy::OPEN,
        };
        let endpoint: crate::link::endpoint::Endpoint = format!("udpout:127.0.0.1:{port}")
            .parse()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (link, mut events) = Link::open(&endpoint, options, stop.clone()).await?;
        let told: Shared<Vec<crate::link::MavMessage>> = Arc::default();
        let keep = told.clone();
        // Ready once the daemon's endpoint knows the station: it routes the vehicle's frames
        // to a `udpin` peer only after hearing it, so the first frame back is the sign.
        let (heard_tx, heard) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut heard_tx = Some(heard_tx);
            while let Some(event) = events.recv().await {
                if matches!(event, LinkEvent::Frame { .. })
                    && let Some(tx) = heard_tx.take()
                {
                    let _ = tx.send(());
                }
                if let LinkEvent::Frame { frame, .. } = event
                    && matches!(
                        frame.message,
                        crate::link::MavMessage::COMMAND_ACK(_)
                            | crate::link::MavMessage::STATUSTEXT(_)
                    )
                {
                    keep.lock().unwrap().push(frame.message);
                }
            }
        });
        let beat = link.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let _ = beat.send(&crate::link::MavMessage::HEARTBEAT(crate::link::dialect::HEARTBEAT_DATA {
                            mavtype: crate::link::dialect::MavType::MAV_TYPE_GCS,
                            autopilot: crate::link::dialect::MavAutopilot::MAV_AUTOPILOT_INVALID,
                            ..crate::link::dialect::HEARTBEAT_DATA::DEFAULT
                        }));
                    }
                }
            }
        });
        // Heartbeats every 100 ms until the daemon answers (the 1 s heartbeat above keeps
        // the station known afterwards), at most 10 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        tokio::pin!(heard);
        loop {
            let _ = link.send(&crate::link::MavMessage::HEARTBEAT(
                crate::link::dialect::HEARTBEAT_DATA {
                    mavtype: crate::link::dialect::MavType::MAV_TYPE_GCS,
                    autopilot: crate::link::dialect::MavAutopilot::MAV_AUTOPILOT_INVALID,
                    ..crate::link::dialect::HEARTBEAT_DATA::DEFAULT
                },
            ));
            tokio::select! {
                _ = &mut heard => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the daemon's gcs endpoint on port {port} sent nothing within 10 s");
            }
        }
        Ok(RigGcs { link, told })
    }
}

/// A `gcs` step's command as a ground station sends it.
fn gcs_command(step: &Step, truth: &Truth) -> anyhow::Result<crate::link::MavMessage> {
    use crate::link::MavMessage;
    use crate::link::dialect::{COMMAND_INT_DATA, MavFrame};
    let arg = |k: &str| -> anyhow::Result<f64> {
        step.args
            .get(k)
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .with_context(|| {
                format!(
                    "gcs {} needs `{k}` in args",
                    step.gcs.as_deref().unwrap_or_default()
                )
            })
    };
    let long = |command: MavCmd, p: [f32; 7]| {
        MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
            target_system: 1,
            target_component: 1,
            command,
            param1: p[0],
            param2: p[1],
            param3: p[2],
            param4: p[3],
            param5: p[4],
            param6: p[5],
            param7: p[6],
            confirmation: 0,
        })
    };
    Ok(match step.gcs.as_deref().unwrap_or_default() {
        "arm" => long(
            MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ),
        "takeoff" => long(
            MavCmd::MAV_CMD_NAV_TAKEOFF,
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, arg("altitude_m")? as f32],
        ),
        "land" => long(MavCmd::MAV_CMD_NAV_LAND, [0.0; 7]),
        "return_home" => long(MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH, [0.0; 7]),
        "hold" => {
            let kind = truth.autopilot.context("no autopilot heartbeat seen yet")?;
            let (base, custom) = FlightMode::encode(kind, FlightMode::Loiter)
                .context("this autopilot has no hold mode to ask for")?;
            long(
                MavCmd::MAV_CMD_DO_SET_MODE,
                [f32::from(base), custom as f32, 0.0, 0.0, 0.0, 0.0, 0.0],
            )
        }
        "goto" => MavMessage::COMMAND_INT(COMMAND_INT_DATA {
            target_system: 1,
            target_component: 1,
            #[allow(deprecated)]
            frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
            command: MavCmd::MAV_CMD_DO_REPOSITION,
            param1: -1.0,
            x: (arg("latitude_deg")? * 1e7).round() as i32,
            y: (arg("longitude_deg")? * 1e7).round() as i32,
            z: arg("altitude_m")? as f32,
            ..Default::default()
        }),
        other => bail!("gcs `{other}` is not a command the rig sends"),
    })
}

impl Rig {
    fn new(
        dir: PathBuf,
        options: &RunOptions,
        scenario: &Scenario,
        stop: CancellationToken,
    ) -> Rig {
        Rig {
            estop_socket: PathBuf::new(),
            daemon_config: dir.join("dev/drone-hil.toml"),
            dir,
            options: options.clone(),
            allowance: options.target.allowance(scenario),
            epoch: Instant::now(),
            stop,
            lines: Arc::default(),
            checks: Vec::new(),
            figures: Vec::new(),
            failure_at: None,
            sim: None,
            sitl: None,
            runtime_dir: None,
            fault_params: FaultParams::default(),
            relay: None,
            broker: None,
            broker_port: 0,
            proxy: None,
            daemon: None,
            daemon_log: LogLines::default(),
            bridge_pty: None,
            bridge_sim: None,
            bridge_log: LogLines::default(),
            ground_mqtt: None,
            drone: None,
            sessions: HashMap::new(),
            background: HashMap::new(),
            floods: Vec::new(),
            marks: HashMap::new(),
            envelope: crate::config::EnvelopeConfig::default(),
            audit_dir: None,
            wire: WireLog::default(),
            truth_now: Truth::default(),
            truth_cursor: 0,
            gcs: None,
            gcs_port: None,
            sim_extra_args: Vec::new(),
        }
    }

    fn say(&self, text: String) {
        tracing::debug!("hil: {text}");
        self.lines.lock().unwrap().push(Line {
            at: self.epoch.elapsed(),
            text,
        });
    }

    fn within(&self, within_s: Option<f64>) -> Duration {
        Duration::from_secs_f64(within_s.unwrap_or(STEP_WITHIN_S_DEFAULT) * self.allowance)
    }

    fn spawn(&self, name: &str, mut command: Command) -> anyhow::Result<Child> {
        command.kill_on_drop(true);
        command
            .spawn()
            .with_context(|| format!("cannot start the {name}"))
    }

    fn log_file(&self, name: &str) -> anyhow::Result<std::fs::File> {
        let path = self.dir.join(name);
        std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))
    }

    /// Sets up the whole rig, then runs the steps.
    async fn play(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let runtime = short_runtime_dir()?;
        self.estop_socket = runtime.join("estop.sock");
        self.runtime_dir = Some(runtime);
        self.start_autopilot_and_relay().await?;
        self.start_broker_and_proxy().await?;
        self.write_daemon_config(scenario)?;
        if scenario.needs.contains(&Need::Bridge) {
            self.start_bridge_sim().await?;
        }
        self.start_daemon().await?;
        self.await_ready().await?;
        self.find_fault_params(scenario).await?;
        if let Some(port) = self.gcs_port {
            self.gcs = Some(RigGcs::open(port, self.stop.child_token()).await?);
        }
        for (i, step) in scenario.steps.iter().enumerate() {
            let at = self.epoch.elapsed();
            if let Some(id) = &step.id {
                self.marks.insert(id.clone(), at);
            }
            let outcome = self.step(step).await;
            if let Err(e) = outcome {
                self.failure_at = Some(self.epoch.elapsed());
                bail!("step {} ({}): {e:#}", i + 1, step.describe());
            }
        }
        // Let the last frames of the scenario reach the wire log.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let floods = std::mem::take(&mut self.floods);
        for flood in floods {
            if let Ok(outcomes) = flood.await {
                let answered = outcomes.iter().filter(|o| o.ok).count();
                let refused = outcomes
                    .iter()
                    .filter(|o| !o.ok && !o.text.starts_with("no answer"))
                    .count();
                self.say(format!(
                    "flood done: {answered} answered, {refused} refused, {} without answer",
                    outcomes.len() - answered - refused
                ));
            }
        }
        Ok(())
    }

    async fn start_autopilot_and_relay(&mut self) -> anyhow::Result<()> {
        let autopilot = match &self.options.target {
            Target::Sim => {
                let mut sim = Command::new(&self.options.exe);
                sim.args([
                    "sim",
                    "--link",
                    "tcpin:127.0.0.1:0",
                    "--seed",
                    &self.options.seed.to_string(),
                    "--speedup",
                    &self.options.sim_speedup.to_string(),
                    "--ekf-ready-s",
                    &self.options.sim_ekf_ready_s.to_string(),
                ])
                .args(&self.sim_extra_args)
                .stdout(Stdio::piped())
                .stderr(self.log_file("sim.stderr.log")?);
                let mut child = self.spawn("simulator", sim)?;
                let out = child.stdout.take().context("simulator stdout")?;
                let mut lines = BufReader::new(out).lines();
                let serving = tokio::time::timeout(Duration::from_secs(10), async {
                    while let Some(line) = lines.next_line().await? {
                        if let Some(e) = line.strip_prefix("sim: serving ") {
                            return Ok(e.to_owned());
                        }
                    }
                    bail!("the simulator exited before serving")
                })
                .await
                .context("the simulator did not start within 10 s")??;
                let sim_log = LogLines::default();
                capture(
                    lines.into_inner().into_inner(),
                    self.dir.join("sim.log"),
                    sim_log,
                    self.epoch,
                );
                self.sim = Some(child);
                serving.replacen("tcpin:", "tcpout:", 1)
            }
            Target::Sitl(endpoint) => {
                if let Some(command) = &self.options.sitl_command {
                    let sitl = crate::hil::sitl::SitlProcess::start(
                        command,
                        &self.dir.join("sitl"),
                        &self.dir.join("sitl.log"),
                        crate::hil::sitl::SitlHome::starter(),
                        self.options.seed,
                    )?;
                    self.say(format!(
                        "SITL started in {} (output in {})",
                        sitl.dir.display(),
                        sitl.log.display()
                    ));
                    self.sitl = Some(sitl);
                }
                endpoint.clone()
            }
            Target::Serial(device) => format!("serial:{device}"),
        };
        let device = self.dir.join("autopilot-tty");
        let relay = SerialRelay::start_with_log(
            &autopilot,
            &device,
            self.epoch,
            self.options.seed,
            self.wire.clone(),
        )
        .with_context(|| format!("serial relay to {autopilot}"))?;
        self.say(format!(
            "serial relay: {} <-> {autopilot}",
            relay.device_path().display()
        ));
        self.relay = Some(relay);
        Ok(())
    }

    async fn start_broker(&mut self) -> anyhow::Result<()> {
        let mut broker = Command::new(flight_companion_testkit::mosquitto_path());
        broker
            .arg("-c")
            .arg(self.dir.join("dev/mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("mosquitto.log"))?,
            );
        let child = self.spawn("broker (mosquitto; `bash tests/setup` installs it)", broker)?;
        self.broker = Some(child);
        let port = self.broker_port;
        tokio::time::timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("the broker did not accept connections within 10 s")?;
        Ok(())
    }

    async fn start_broker_and_proxy(&mut self) -> anyhow::Result<()> {
        self.broker_port = flight_companion_testkit::free_port()?;
        let relay = self.relay.as_ref().context("no relay")?;
        let link = format!("serial:{}:921600", relay.device_path().display());
        crate::dev_setup::write(&crate::dev_setup::DevSetupArgs {
            dir: self.dir.join("dev"),
            broker_port: self.broker_port,
            vehicle_link: link.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
            force: true,
            ground_users: Vec::new(),
            home: None,
        })?;
        self.start_broker().await?;
        let proxy = MqttProxy::start_with_log(
            "127.0.0.1:0".parse()?,
            format!("127.0.0.1:{}", self.broker_port).parse()?,
            self.epoch,
            self.wire.clone(),
        )?;
        self.say(format!(
            "broker on 127.0.0.1:{}, the daemon reaches it through the proxy on {}",
            self.broker_port,
            proxy.local_addr()
        ));
        self.proxy = Some(proxy);
        let ground = crate::ground::config::GroundConfig::load(&self.dir.join("dev/ground.toml"))?;
        self.ground_mqtt = Some(ground.mqtt);
        Ok(())
    }

    fn write_daemon_config(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        let generated = self.dir.join("dev/drone.toml");
        let text = std::fs::read_to_string(&generated)?;
        let mut table: toml::Table = toml::from_str(&text)?;
        let proxy = self.proxy.as_ref().context("no proxy")?;
        let rig: toml::Table = toml::from_str(&format!(
            "[mqtt]\nport = {}\n[estop]\nsocket_path = \"{}\"\n",
            proxy.local_addr().port(),
            self.estop_socket.display()
        ))?;
        merge(&mut table, rig);
        if scenario.needs.contains(&Need::Bridge) {
            let bridge: toml::Table = toml::from_str(&format!(
                "[bridge]\nenabled = true\nserial = \"{}\"\n",
                self.dir.join("bridge-b").display()
            ))?;
            merge(&mut table, bridge);
        }
        if scenario.steps.iter().any(|s| s.gcs.is_some()) {
            // A ground station beside the daemon: a `gcs` endpoint on a free loopback port.
            let port = std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let endpoint: toml::Table = toml::from_str(&format!(
                "[[gcs_endpoint]]\nname = \"rig-gcs\"\nlink = \"udpin:127.0.0.1:{port}\"\n\
                 role = \"gcs\"\n"
            ))?;
            merge(&mut table, endpoint);
            self.gcs_port = Some(port);
        }
        merge(&mut table, scenario.setup.daemon.clone());
        let text = toml::to_string(&table)?;
        std::fs::write(&self.daemon_config, &text)?;
        let config = crate::config::Config::parse(&self.daemon_config, &text)
            .map_err(|e| anyhow::anyhow!("the scenario's daemon settings: {e}"))?;
        self.envelope = config.envelope.clone();
        // `Config::parse` has already resolved it against the file's directory.
        self.audit_dir = config.audit.dir.clone();
        self.drone = Some(DroneAddress {
            topics: crate::mcp::transport::Topics {
                server_root: config.mcp.server_topic_root.clone(),
                client_root: config.mcp.client_topic_root.clone(),
                rpc_root: config.mcp.rpc_topic_root.clone(),
                // dev-setup names it (its broker ACL is written for that id), so the rig finds
                // the daemon again after a restart.
                server_id: config
                    .mcp
                    .server_id
                    .clone()
                    .context("the daemon's configuration has no mcp.server_id")?,
                server_name: config.mcp.server_name.clone(),
            },
            panic_topic_root: config.mcp.panic_topic_root.clone(),
        });
        Ok(())
    }

    async fn start_bridge_sim(&mut self) -> anyhow::Result<()> {
        let (a, b) = (self.dir.join("bridge-a"), self.dir.join("bridge-b"));
        let mut socat = Command::new("socat");
        socat
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(self.log_file("socat-bridge.log")?);
        self.bridge_pty = Some(self.spawn("pty pair for the bridge (socat)", socat)?);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !(a.exists() && b.exists()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("socat made no pty pair within 5 s")?;
        let mut sim = Command::new(&self.options.exe);
        sim.args(["bridge-sim", "--serial"])
            .arg(&a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(self.log_file("bridge-sim.stderr.log")?);
        let mut child = self.spawn("bridge simulator", sim)?;
        let stdin = child.stdin.take().context("bridge-sim stdin")?;
        let stdout = child.stdout.take().context("bridge-sim stdout")?;
        capture(
            stdout,
            self.dir.join("bridge-sim.log"),
            self.bridge_log.clone(),
            self.epoch,
        );
        self.bridge_sim = Some((child, stdin));
        Ok(())
    }

    async fn start_daemon(&mut self) -> anyhow::Result<()> {
        let mut daemon = Command::new(&self.options.exe);
        daemon
            .arg("run")
            .arg("--config")
            .arg(&self.daemon_config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = self.spawn("daemon", daemon)?;
        let stderr = child.stderr.take().context("daemon stderr")?;
        capture(
            stderr,
            self.dir.join("daemon.log"),
            self.daemon_log.clone(),
            self.epoch,
        );
        self.daemon = Some(child);
        Ok(())
    }

    /// Ready to fly: the daemon has found the autopilot and answers a ground client, and the
    /// vehicle could take off now. Home alone is not enough: ArduCopter sets its EKF origin
    /// and home about 20 s before the EKF uses the GPS (~40 s after the first connection)
    /// and refuses to arm until then, and the daemon refuses motion without a trusted
    /// position. So this waits for everything a takeoff needs, each from its source:
    /// [`not_ready`] lists what is still missing.
    async fn await_ready(&mut self) -> anyhow::Result<()> {
        let limit = Duration::from_secs_f64(READY_WITHIN_S * self.allowance);
        let deadline = Instant::now() + limit;
        let found = self
            .wait_log("autopilot found", Duration::ZERO, limit)
            .await;
        if let Err(e) = found {
            self.sitl_alive()?;
            return Err(e.context("the daemon did not find the autopilot"));
        }
        let session = self.session("read_only").await?;
        loop {
            self.sitl_alive()?;
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = session
                .call("get_status", json!({}), left.max(Duration::from_secs(5)))
                .await;
            if !answer.ok {
                bail!("the daemon does not answer get_status: {}", answer.text);
            }
            let status: serde_json::Value = serde_json::from_str(&answer.text).unwrap_or_default();
            let missing = not_ready(&status, &self.truth());
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "not ready to fly after {:.0} s: {}; the autopilot last said: {}",
                    limit.as_secs_f64(),
                    missing.join("; "),
                    last_status_texts(&status, 4)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let prearm_reported = self.truth().prearm_ok.is_some();
        self.say(format!(
            "rig ready after {:.1} s: the daemon found the autopilot and answers MCP; home, a \
             trusted position, fresh telemetry{}",
            self.epoch.elapsed().as_secs_f64(),
            if prearm_reported {
                ", the autopilot's pre-arm checks passed"
            } else {
                ""
            }
        ));
        Ok(())
    }

    /// Fails (with the end of its output) when the scenario's SITL has ended.
    fn sitl_alive(&mut self) -> anyhow::Result<()> {
        if let Some(sitl) = &mut self.sitl
            && let Some(why) = sitl.exited()
        {
            bail!("{why}; its last lines:\n{}", sitl.log_tail(15));
        }
        Ok(())
    }

    async fn wait_log(
        &self,
        needle: &str,
        since: Duration,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.daemon_log.find(since, needle) {
                return Ok(at);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no daemon log line containing \"{needle}\" within {:.1} s",
                    limit.as_secs_f64()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The session of `principal`, opened (with a freshly signed token) on first use.
    async fn session(&mut self, principal: &str) -> anyhow::Result<Session> {
        if let Some(s) = self.sessions.get(principal) {
            return Ok(s.clone());
        }
        let (role, person) =
            crate::hil::scenario::parse_principal(principal).map_err(|e| anyhow::anyhow!(e))?;
        let drone = self.drone.clone().context("no drone address")?;
        let key = self
            .dir
            .join("dev/keys")
            .join(format!("{}.key", crate::dev_setup::DEV_KID));
        let token = crate::auth::shell::issue_from_file(&crate::auth::shell::IssueRequest {
            key_path: &key,
            kid: Some(crate::dev_setup::DEV_KID),
            role,
            subject: &person,
            audience: &drone.topics.server_name,
            ttl: Duration::from_secs(3600),
            jti: None,
            now_unix_s: crate::auth::shell::unix_s_now(),
        })
        .map_err(|e| anyhow::anyhow!("token for {principal}: {e}"))?;
        let mut mqtt = self
            .ground_mqtt
            .clone()
            .context("no ground MQTT settings")?;
        // One certificate per principal: the broker takes its CN as the client id.
        let (cert, key) = self.principal_certificate(principal)?;
        mqtt.client_cert_path = Some(cert);
        mqtt.client_key_path = Some(key);
        let session = Session::open(&mqtt, drone, principal, token, self.stop.clone()).await?;
        self.sessions.insert(principal.to_owned(), session.clone());
        Ok(session)
    }

    /// The certificate of a principal's ground identity (`hil-ROLE-PERSON`), issued by the
    /// dev CA on first use.
    fn principal_certificate(
        &self,
        principal: &str,
    ) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let name: String = format!("hil-{principal}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(crate::cert::NAME_CHARS_MAX)
            .collect();
        let pki = crate::cert::Pki::new(self.dir.join("dev/certs"));
        let (cert, key) = pki.paths(&name, crate::cert::Kind::Client);
        if !cert.exists() {
            pki.issue(&crate::cert::IssueRequest {
                name: &name,
                kind: crate::cert::Kind::Client,
                sans: vec![],
                days: 1,
                now_unix_s: i64::try_from(crate::auth::shell::unix_s_now()).unwrap_or(i64::MAX),
            })
            .map_err(|e| anyhow::anyhow!("certificate for {principal}: {e}"))?;
        }
        Ok((cert, key))
    }

    fn relay(&self) -> anyhow::Result<&SerialRelay> {
        self.relay.as_ref().context("no serial relay")
    }

    /// The vehicle as the wire shows it now (reading only what was logged since last time).
    fn truth(&mut self) -> Truth {
        let (events, next) = self.wire.events_from(self.truth_cursor);
        self.truth_cursor = next;
        for event in events {
            if let WireEvent::Frame(f) = event {
                self.truth_now.observe(&f);
            }
        }
        self.truth_now.clone()
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<()> {
        let kind = step.kind().map_err(|e| anyhow::anyhow!(e))?;
        let principal = step.principal.clone().unwrap_or_else(|| "operator".into());
        let limit = self.within(step.within_s);
        match kind {
            StepKind::Call => {
                let tool = step.call.clone().unwrap_or_default();
                let args = serde_json::to_value(&step.args)?;
                let session = self.session(&principal).await?;
                if step.background {
                    let id = step.id.clone().unwrap_or_default();
                    let flight_limit = Duration::from_secs(600);
                    let tool_name = tool.clone();
                    let task =
                        tokio::spawn(
                            async move { session.call(&tool_name, args, flight_limit).await },
                        );
                    self.background.insert(id, (tool.clone(), task));
                    self.say(format!("{} started", step.describe()));
                    return Ok(());
                }
                let outcome = session.call(&tool, args, limit).await;
                self.expect(step, &tool, &outcome)
            }
            StepKind::AwaitCall => {
                let id = step.await_call.clone().unwrap_or_default();
                let (tool, task) = self
                    .background
                    .remove(&id)
                    .with_context(|| format!("no background call \"{id}\" (awaited twice?)"))?;
                let outcome = tokio::time::timeout(limit, task).await.with_context(|| {
                    format!(
                        "{tool} ({id}) did not answer within {:.1} s",
                        limit.as_secs_f64()
                    )
                })??;
                self.expect(step, &tool, &outcome)
            }
            StepKind::Wait => {
                let wait = step.wait.clone().unwrap_or_default();
                let deadline = Instant::now() + limit;
                loop {
                    let truth = self.truth();
                    // A log line counts from the start of the scenario: the event it reports
                    // may well come while an earlier step was still running.
                    let since = wait
                        .since
                        .as_ref()
                        .and_then(|id| self.marks.get(id).copied())
                        .unwrap_or_default();
                    let log_ok = wait
                        .daemon_log
                        .as_deref()
                        .is_none_or(|n| self.daemon_log.find(since, n).is_some());
                    if truth.satisfies(&wait) && log_ok {
                        self.say(format!(
                            "{}: reached ({})",
                            step.describe(),
                            truth.describe()
                        ));
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "not reached within {:.1} s; the vehicle is {}",
                            limit.as_secs_f64(),
                            truth.describe()
                        );
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            StepKind::Sleep => {
                tokio::time::sleep(Duration::from_secs_f64(step.sleep_s.unwrap_or_default())).await;
                Ok(())
            }
            StepKind::Fault => self.fault(step).await,
            StepKind::Estop => self.estop(step, &principal).await,
            StepKind::Bridge => {
                let action = step.bridge.context("no bridge action")?;
                self.bridge(action).await?;
                self.say(step.describe());
                Ok(())
            }
            StepKind::PilotMode => {
                let name = step.pilot_mode.clone().unwrap_or_default();
                let truth = self.truth();
                let kind = truth.autopilot.context("no autopilot heartbeat seen yet")?;
                let mode = FlightMode::from_name(kind, &name)
                    .with_context(|| format!("the autopilot has no mode {name}"))?;
                let (base_mode, custom_mode) = FlightMode::encode(kind, mode)
                    .with_context(|| format!("mode {name} cannot be commanded"))?;
                let command = MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                    target_system: 1,
                    target_component: 1,
                    command: MavCmd::MAV_CMD_DO_SET_MODE,
                    param1: f32::from(base_mode),
                    param2: custom_mode as f32,
                    ..COMMAND_LONG_DATA::DEFAULT
                });
                self.relay()?
                    .inject_to_autopilot(&command, PILOT_SYSTEM_ID, PILOT_COMPONENT_ID)?;
                self.say(step.describe());
                Ok(())
            }
            StepKind::Gcs => self.gcs_step(step, limit).await,
            StepKind::Flood => {
                let tool = step.flood.clone().unwrap_or_default();
                let calls = step.calls.unwrap_or(100);
                let clients = step.clients.unwrap_or(4);
                for c in 0..clients {
                    let who = format!(
                        "{}:flood-{c}",
                        principal.split(':').next().unwrap_or("operator")
                    );
                    let session = self.session(&who).await?;
                    let share = calls / clients + u32::from(c < calls % clients);
                    let tool = tool.clone();
                    self.floods.push(tokio::spawn(async move {
                        let mut outcomes = Vec::new();
                        for _ in 0..share {
                            outcomes.push(
                                session
                                    .call(&tool, json!({}), Duration::from_secs(10))
                                    .await,
                            );
                        }
                        outcomes
                    }));
                }
                self.say(format!("{} started", step.describe()));
                Ok(())
            }
        }
    }

    /// A ground station's command: sent, its COMMAND_ACK awaited, judged by `expect` and
    /// `reason_contains` (the STATUSTEXT it was told).
    async fn gcs_step(&mut self, step: &Step, limit: Duration) -> anyhow::Result<()> {
        use crate::link::MavMessage;
        let truth = self.truth();
        let message = gcs_command(step, &truth)?;
        let command = match &message {
            MavMessage::COMMAND_LONG(c) => c.command,
            MavMessage::COMMAND_INT(c) => c.command,
            _ => bail!("not a command"),
        };
        let gcs = self
            .gcs
            .as_ref()
            .context("no ground station (no gcs endpoint)")?;
        let told = gcs.told.clone();
        let from = told.lock().unwrap().len();
        // Sent once: the endpoint knows the station from its heartbeats since the rig started.
        gcs.link
            .send(&message)
            .map_err(|e| anyhow::anyhow!("the ground station's link: {e}"))?;
        let deadline = Instant::now() + limit;
        let ack = loop {
            let found = told.lock().unwrap()[from..].iter().find_map(|m| match m {
                MavMessage::COMMAND_ACK(a) if a.command == command => Some(a.result),
                _ => None,
            });
            if let Some(result) = found {
                break result;
            }
            if Instant::now() >= deadline {
                bail!("no COMMAND_ACK for {command:?} within {limit:?}");
            }
            tokio::time::sleep(POLL).await;
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text: String = told.lock().unwrap()[from..]
            .iter()
            .filter_map(|m| match m {
                MavMessage::STATUSTEXT(t) => Some(
                    String::from_utf8_lossy(&t.text.to_vec())
                        .trim_end_matches('\0')
                        .to_owned(),
                ),
                _ => None,
            })
            .collect();
        let accepted = ack == crate::link::dialect::MavResult::MAV_RESULT_ACCEPTED;
        self.say(format!(
            "{}: {ack:?}{}{text}",
            step.describe(),
            if text.is_empty() { "" } else { ": " }
        ));
        match step.expect {
            Expect::Ok if !accepted => bail!("expected ACCEPTED, got {ack:?}: {text}"),
            Expect::Refused if accepted => bail!("expected a refusal, got ACCEPTED"),
            _ => {}
        }
        if let Some(want) = &step.reason_contains
            && !text.contains(want.as_str())
        {
            bail!("the ground station was told {text:?}, not {want:?}");
        }
        Ok(())
    }

    fn expect(&self, step: &Step, tool: &str, outcome: &CallOutcome) -> anyhow::Result<()> {
        let verdict = if outcome.ok { "ok" } else { "refused" };
        let first_line = outcome.text.lines().next().unwrap_or_default();
        self.say(format!(
            "{tool} as {}: {verdict}: {first_line}",
            step.principal.as_deref().unwrap_or("operator")
        ));
        match step.expect {
            Expect::Any => Ok(()),
            Expect::Ok if outcome.ok => Ok(()),
            Expect::Ok => bail!("{tool} was refused: {}", outcome.text),
            Expect::Refused if outcome.ok => {
                bail!(
                    "{tool} was expected to be refused but succeeded: {}",
                    outcome.text
                )
            }
            Expect::Refused => match &step.reason_contains {
                Some(needle) if !outcome.text.contains(needle.as_str()) => bail!(
                    "{tool} was refused, but not with \"{needle}\": {}",
                    outcome.text
                ),
                _ => Ok(()),
            },
        }
    }

    async fn fault(&mut self, step: &Step) -> anyhow::Result<()> {
        let fault = step.fault.context("no fault")?;
        match fault {
            Fault::LineCut => self.relay()?.set_fault(LineFault::Cut)?,
            Fault::LineUnplug => self.relay()?.set_fault(LineFault::Unplug)?,
            Fault::LineDrop => self.relay()?.set_fault(LineFault::Drop {
                probability: step.probability.unwrap_or(1.0),
            })?,
            Fault::LineCorrupt => self.relay()?.set_fault(LineFault::Corrupt {
                probability: step.probability.unwrap_or(1.0),
            })?,
            Fault::LineDelay => self.relay()?.set_fault(LineFault::Delay {
                delay_ms: step.delay_ms.unwrap_or(0),
            })?,
            Fault::LineRestore => self.relay()?.set_fault(LineFault::None)?,
            Fault::MqttPartition => self.proxy()?.set_fault(NetFault::Partition),
            Fault::MqttDelay => self.proxy()?.set_fault(NetFault::Delay {
                delay_ms: step.delay_ms.unwrap_or(0),
            }),
            Fault::MqttDrop => self.proxy()?.set_fault(NetFault::Drop),
            Fault::MqttRestore => self.proxy()?.set_fault(NetFault::None),
            Fault::BrokerKill => {
                if let Some(mut broker) = self.broker.take() {
                    let _ = broker.kill().await;
                }
            }
            Fault::BrokerRestart => self.start_broker().await?,
            Fault::DaemonStop => self.signal_daemon(libc::SIGSTOP)?,
            Fault::DaemonContinue => self.signal_daemon(libc::SIGCONT)?,
            Fault::DaemonKill => {
                if let Some(mut daemon) = self.daemon.take() {
                    let _ = daemon.kill().await;
                }
            }
            Fault::DaemonRestart => {
                if let Some(mut daemon) = self.daemon.take() {
                    let _ = daemon.kill().await;
                }
                self.start_daemon().await?;
            }
            Fault::GpsLoss | Fault::GpsRestore => {
                let (name, lost, restored) = self
                    .fault_params
                    .gps
                    .context("no GPS fault parameter was found on this target")?;
                let value = if fault == Fault::GpsLoss {
                    lost
                } else {
                    restored
                };
                self.sim_param(name, value).await?
            }
            Fault::Battery => {
                if let Some(volts) = step.voltage_v {
                    self.sim_param("SIM_BATT_VOLTAGE", volts as f32).await?;
                }
                if let Some(percent) = step.remaining_percent {
                    self.battery_reset(percent).await?;
                }
            }
            Fault::Wind => {
                // Uniform with height (SIM_WIND_T = 1): `speed_m_s` is what the vehicle
                // meets at any altitude. SITL's default profile (0) scales it with
                // √(altitude / SIM_WIND_T_ALT) below 60 m, so 30 m/s is 9.5 m/s at 6 m.
                self.sim_param("SIM_WIND_T", 1.0).await?;
                self.sim_param(
                    "SIM_WIND_DIR",
                    step.direction_deg.unwrap_or_default() as f32,
                )
                .await?;
                self.sim_param("SIM_WIND_SPD", step.speed_m_s.unwrap_or_default() as f32)
                    .await?;
            }
        }
        self.say(step.describe());
        Ok(())
    }

    fn proxy(&self) -> anyhow::Result<&MqttProxy> {
        self.proxy.as_ref().context("no MQTT proxy")
    }

    fn signal_daemon(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = self
            .daemon
            .as_ref()
            .and_then(Child::id)
            .context("the daemon is not running")?;
        // SAFETY: kill(2) on our own child's pid with a valid signal has no memory effects.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A simulator parameter, written the way a ground station writes it (PARAM_SET), and
    /// confirmed by the autopilot's PARAM_VALUE on the wire (asked twice at most): a fault
    /// the autopilot did not take must fail the step, not pass unnoticed.
    async fn sim_param(&self, name: &str, value: f32) -> anyhow::Result<()> {
        let mut param_id = [0u8; 16];
        param_id[..name.len()].copy_from_slice(name.as_bytes());
        let message = MavMessage::PARAM_SET(PARAM_SET_DATA {
            param_value: value,
            target_system: 1,
            target_component: 1,
            param_id: param_id.into(),
            param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
        });
        for _ in 0..2 {
            let sent = self.epoch.elapsed();
            self.relay()?
                .inject_to_autopilot(&message, PILOT_SYSTEM_ID, PILOT_COMPONENT_ID)?;
            let confirmed = self
                .answer_on_wire(sent, |m| match m {
                    MavMessage::PARAM_VALUE(p) => {
                        param_name(&p.param_id) == name && (p.param_value - value).abs() < 1e-3
                    }
                    _ => false,
                })
                .await;
            if confirmed.is_some() {
                return Ok(());
            }
        }
        bail!(
            "the autopilot did not confirm {name} = {value} (no PARAM_VALUE within {:.1} s, twice)",
            ANSWER_WITHIN.as_secs_f64()
        )
    }

    /// The battery's remaining charge set to `percent` with `MAV_CMD_BATTERY_RESET`
    /// (ArduPilot `GCS_Common.cpp` `handle_command_battery_reset`: the consumed mAh become
    /// `(100 - percent) %` of `BATT_CAPACITY`), as a ground station sends it; the autopilot's
    /// COMMAND_ACK must say ACCEPTED.
    async fn battery_reset(&self, percent: f64) -> anyhow::Result<()> {
        let command = MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
            target_system: 1,
            target_component: 1,
            command: MavCmd::MAV_CMD_BATTERY_RESET,
            // Bit 0: the first battery.
            param1: 1.0,
            param2: percent as f32,
            ..COMMAND_LONG_DATA::DEFAULT
        });
        for _ in 0..2 {
            let sent = self.epoch.elapsed();
            self.relay()?
                .inject_to_autopilot(&command, PILOT_SYSTEM_ID, PILOT_COMPONENT_ID)?;
            let ack = self
                .answer_on_wire(sent, |m| {
                    matches!(m, MavMessage::COMMAND_ACK(a)
                        if a.command == MavCmd::MAV_CMD_BATTERY_RESET)
                })
                .await;
            if let Some(MavMessage::COMMAND_ACK(a)) = ack {
                if a.result == MavResult::MAV_RESULT_ACCEPTED {
                    return Ok(());
                }
                bail!(
                    "the autopilot answered MAV_CMD_BATTERY_RESET with {:?}",
                    a.result
                );
            }
        }
        bail!("the autopilot did not answer MAV_CMD_BATTERY_RESET (twice)")
    }

    /// The first message from the autopilot after `since` for which `matches` holds, waiting
    /// up to [`ANSWER_WITHIN`].
    async fn answer_on_wire(
        &self,
        since: Duration,
        matches: impl Fn(&MavMessage) -> bool,
    ) -> Option<MavMessage> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            let found = self.wire.first_after(since, |f| {
                f.direction == Direction::ToCompanion && f.message.as_ref().is_some_and(&matches)
            });
            if let Some(f) = found {
                return f.message;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Values of `names` as the autopilot reports them (PARAM_REQUEST_READ, asked three
    /// times at most); a name it never answers for is absent.
    async fn read_params(&self, names: &[&str]) -> anyhow::Result<HashMap<String, f32>> {
        let mut found = HashMap::new();
        for _ in 0..3 {
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !found.contains_key(*n))
                .collect();
            if missing.is_empty() {
                break;
            }
            let sent = self.epoch.elapsed();
            for name in &missing {
                let mut param_id = [0u8; 16];
                param_id[..name.len()].copy_from_slice(name.as_bytes());
                let request = MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
                    param_index: -1,
                    target_system: 1,
                    target_component: 1,
                    param_id: param_id.into(),
                });
                self.relay()?
                    .inject_to_autopilot(&request, PILOT_SYSTEM_ID, PILOT_COMPONENT_ID)?;
            }
            let deadline = Instant::now() + ANSWER_WITHIN;
            while Instant::now() < deadline && missing.iter().any(|n| !found.contains_key(*n)) {
                for f in self.wire.frames_since(sent) {
                    if let (Direction::ToCompanion, Some(MavMessage::PARAM_VALUE(p))) =
                        (f.direction, &f.message)
                    {
                        let name = param_name(&p.param_id);
                        if missing.contains(&name.as_str()) {
                            found.insert(name, p.param_value);
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(found)
    }

    /// Finds how this target takes the simulator faults the scenario uses, by asking it for
    /// their parameters; a target without them skips the scenario with the reason (PX4 SIH
    /// has no `SIM_WIND_*`, a real autopilot no `SIM_*` at all).
    async fn find_fault_params(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        let steps: Vec<&Step> = scenario
            .steps
            .iter()
            .filter(|s| s.fault.is_some_and(Fault::is_sim))
            .collect();
        if steps.is_empty() {
            return Ok(());
        }
        // What each fault needs: any one of the alternatives of each group.
        let mut needs: Vec<(&[&str], &str)> = Vec::new();
        for step in &steps {
            match step.fault {
                Some(Fault::GpsLoss | Fault::GpsRestore) => needs.push((
                    &["SIM_GPS_DISABLE", "SIM_GPS1_ENABLE"],
                    "the GPS fault (SIM_GPS_DISABLE, or SIM_GPS1_ENABLE since ArduPilot 4.6)",
                )),
                Some(Fault::Battery) => {
                    if step.voltage_v.is_some() {
                        needs.push((&["SIM_BATT_VOLTAGE"], "the battery voltage fault"));
                    }
                    if step.remaining_percent.is_some() {
                        needs.push((
                            &["BATT_CAPACITY"],
                            "the battery charge fault (MAV_CMD_BATTERY_RESET counts against \
                             ArduPilot's BATT_CAPACITY; PX4 has neither)",
                        ));
                    }
                }
                Some(Fault::Wind) => {
                    let what = "the wind fault (ArduPilot SITL's SIM_WIND_*; PX4 SIH takes no \
                                wind over MAVLink)";
                    needs.push((&["SIM_WIND_SPD"], what));
                    needs.push((&["SIM_WIND_DIR"], what));
                    needs.push((&["SIM_WIND_T"], what));
                }
                _ => {}
            }
        }
        let mut names: Vec<&str> = needs.iter().flat_map(|(n, _)| n.iter().copied()).collect();
        names.sort_unstable();
        names.dedup();
        let found = self.read_params(&names).await?;
        for (alternatives, what) in &needs {
            if !alternatives.iter().any(|n| found.contains_key(*n)) {
                return Err(Skip(format!(
                    "the autopilot has no {} parameter, needed by {what}",
                    alternatives.join(" or ")
                ))
                .into());
            }
        }
        // ArduPilot 4.6 renamed SIM_GPS_DISABLE to SIM_GPS1_ENABLE, with the opposite sense.
        self.fault_params.gps = if found.contains_key("SIM_GPS_DISABLE") {
            Some(("SIM_GPS_DISABLE", 1.0, 0.0))
        } else if found.contains_key("SIM_GPS1_ENABLE") {
            Some(("SIM_GPS1_ENABLE", 0.0, 1.0))
        } else {
            None
        };
        self.say(format!(
            "the target has the simulator parameters the scenario's faults need: {}",
            names
                .iter()
                .filter(|n| found.contains_key(**n))
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }

    async fn bridge(&mut self, action: BridgeAction) -> anyhow::Result<()> {
        let (_, stdin) = self
            .bridge_sim
            .as_mut()
            .context("no simulated bridge (the scenario needs \"bridge\")")?;
        let word = match action {
            BridgeAction::Press => "press",
            BridgeAction::Release => "release",
            BridgeAction::Silence => "silence",
            BridgeAction::Resume => "resume",
        };
        stdin.write_all(format!("{word}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    async fn estop(&mut self, step: &Step, principal: &str) -> anyhow::Result<()> {
        let source = step.estop.context("no e-stop source")?;
        let reason = format!("hil: {}", step.id.as_deref().unwrap_or("e-stop step"));
        // The step's mark is the moment of the trigger itself, not of the preparation.
        let mark = |rig: &mut Rig| {
            if let Some(id) = &step.id {
                rig.marks.insert(id.clone(), rig.epoch.elapsed());
            }
        };
        match source {
            EstopSource::Mcp => {
                let session = self.session(principal).await?;
                mark(self);
                let outcome = session
                    .call(
                        "emergency_stop",
                        json!({"reason": reason}),
                        self.within(step.within_s),
                    )
                    .await;
                self.say(format!(
                    "{}: {}",
                    step.describe(),
                    outcome.text.lines().next().unwrap_or_default()
                ));
                if !outcome.ok {
                    bail!("emergency_stop was refused: {}", outcome.text);
                }
            }
            EstopSource::PanicTopic => {
                let session = self.session(principal).await?;
                let topic = self
                    .drone
                    .as_ref()
                    .context("no drone")?
                    .panic_topic(&session.client_id);
                let payload = json!({"reason": reason}).to_string().into_bytes();
                mark(self);
                session.publish(topic, payload).await?;
                self.say(step.describe());
            }
            EstopSource::LocalSocket => {
                let socket = self.estop_socket.clone();
                mark(self);
                let answer =
                    crate::estop::local::request(&socket, &format!("STOP {reason}")).await?;
                self.say(format!("{}: {answer}", step.describe()));
                if !answer.starts_with("OK") {
                    bail!("the local e-stop answered {answer}");
                }
            }
            EstopSource::Bridge => {
                mark(self);
                self.bridge(BridgeAction::Press).await?;
                self.say(step.describe());
            }
        }
        Ok(())
    }

    /// Judges every check from the wire log, the daemon's log and its audit files.
    fn judge(&mut self, scenario: &Scenario) {
        let frames = self.wire.frames_since(Duration::ZERO);
        for check in &scenario.checks {
            let description = check.describe();
            let (passed, detail, figure) = match self.judge_one(check, &frames) {
                Ok((detail, figure)) => (true, detail, figure),
                Err(detail) => (false, detail, None),
            };
            if let Some(value_ms) = figure {
                // The limit is not part of what was measured.
                let name = description
                    .rsplit_once(" within ")
                    .map_or(description.as_str(), |(what, _)| what)
                    .to_owned();
                self.figures.push(Figure { name, value_ms });
            }
            if !passed && self.failure_at.is_none() {
                self.failure_at = check
                    .after
                    .as_ref()
                    .and_then(|a| self.marks.get(a).copied());
            }
            self.checks.push(CheckResult {
                description,
                passed,
                detail,
            });
        }
    }

    /// `Ok((detail, figure in ms))` or `Err(why it failed)`.
    fn judge_one(
        &self,
        check: &Check,
        frames: &[WireFrame],
    ) -> Result<(String, Option<f64>), String> {
        let kind = check.kind()?;
        let from = check.after.as_ref().map_or(Duration::ZERO, |a| {
            self.marks.get(a).copied().unwrap_or_default()
        });
        let limit = check
            .within_s
            .map(|w| Duration::from_secs_f64(w * self.allowance));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match kind {
            CheckKind::ModeReached => {
                let names = check
                    .mode_reached
                    .as_ref()
                    .map(|m| m.items())
                    .unwrap_or_default();
                let mut truth = Truth::default();
                for f in frames {
                    truth.observe(f);
                    if f.at >= from && truth.mode_is(&names) {
                        let took = f.at - from;
                        return match limit {
                            Some(l) if took > l => Err(format!(
                                "reached after {:.1} ms, more than {:.1} ms",
                                ms(took),
                                ms(l)
                            )),
                            _ => Ok((format!("reached after {:.1} ms", ms(took)), Some(ms(took)))),
                        };
                    }
                }
                Err(format!("never reached; last seen {}", truth.describe()))
            }
            CheckKind::CommandOnWire => {
                let name = check.command_on_wire.as_deref().unwrap_or_default();
                match frames
                    .iter()
                    .find(|f| f.at >= from && from_companion(f) && frame_is(f, name))
                {
                    Some(f) => {
                        let took = f.at - from;
                        match limit {
                            Some(l) if took > l => Err(format!(
                                "on the wire after {:.1} ms, more than {:.1} ms",
                                ms(took),
                                ms(l)
                            )),
                            _ => Ok((
                                format!("on the wire after {:.2} ms", ms(took)),
                                Some(ms(took)),
                            )),
                        }
                    }
                    None => Err(format!("the companion never sent {name} after the mark")),
                }
            }
            CheckKind::NoCommandOnWire => {
                let name = check.no_command_on_wire.as_deref().unwrap_or_default();
                match frames
                    .iter()
                    .find(|f| f.at >= from && from_companion(f) && frame_is(f, name))
                {
                    Some(f) => Err(format!(
                        "the companion sent {name} at +{:.3} s: {}",
                        f.at.as_secs_f64(),
                        describe_frame(f)
                    )),
                    None => Ok(("none sent".into(), None)),
                }
            }
            CheckKind::StayedInside => {
                let region = check.stayed_inside.ok_or("no region")?;
                judge_stayed_inside(region, frames, from)
            }
            CheckKind::AuditContains => {
                let needle = check.audit_contains.as_deref().unwrap_or_default();
                let dir = self
                    .audit_dir
                    .as_ref()
                    .ok_or("the daemon keeps no audit log")?;
                // Read with the daemon's own reader: the records are hash-chained binary.
                let records = crate::audit::tail_command(dir, usize::MAX, false)?;
                match records.iter().find(|r| r.contains(needle)) {
                    Some(record) => Ok((record.chars().take(200).collect(), None)),
                    None => Err(format!(
                        "none of {} audit records contains it",
                        records.len()
                    )),
                }
            }
            CheckKind::WhitelistConformance => judge_whitelist(&self.envelope, frames),
            CheckKind::DaemonLog => {
                let needle = check.daemon_log.as_deref().unwrap_or_default();
                match self.daemon_log.find(from, needle) {
                    Some(at) => Ok((format!("logged at +{:.3} s", at.as_secs_f64()), None)),
                    None => Err("no such line".into()),
                }
            }
        }
    }

    async fn teardown(&mut self) {
        for (_, (_, task)) in self.background.drain() {
            task.abort();
        }
        for flood in self.floods.drain(..) {
            flood.abort();
        }
        if let Some(mut daemon) = self.daemon.take() {
            if let Some(pid) = daemon.id() {
                // A stopped daemon cannot act on SIGTERM.
                // SAFETY: kill(2) on our own child's pid with valid signals.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGCONT);
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(3), daemon.wait())
                .await
                .is_err()
            {
                let _ = daemon.kill().await;
            }
        }
        if let Some((mut sim, _)) = self.bridge_sim.take() {
            let _ = sim.kill().await;
        }
        if let Some(mut socat) = self.bridge_pty.take() {
            let _ = socat.kill().await;
        }
        if let Some(proxy) = self.proxy.take() {
            proxy.stop().await;
        }
        if let Some(mut broker) = self.broker.take() {
            let _ = broker.kill().await;
        }
        if let Some(relay) = self.relay.take() {
            relay.stop().await;
        }
        if let Some(mut sim) = self.sim.take() {
            let _ = sim.kill().await;
        }
        if let Some(sitl) = self.sitl.take() {
            sitl.stop().await;
        }
        if let Some(dir) = self.runtime_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Streams the autopilot sends several times a second whatever happens: left out of the
/// failure excerpt so that what changed (modes, commands, acks, faults) stands out.
/// `GLOBAL_POSITION_INT` and `HEARTBEAT` stay: they say where the vehicle was and in what mode.
const ROUTINE_TELEMETRY: &[&str] = &[
    "ATTITUDE",
    "VFR_HUD",
    "SYS_STATUS",
    "BATTERY_STATUS",
    "GPS_RAW_INT",
    "EXTENDED_SYS_STATE",
    "EKF_STATUS_REPORT",
    "SIMSTATE",
    "HOME_POSITION",
];

/// What the vehicle still lacks to take off, from the daemon's status (`get_status`) and the
/// wire (`truth`); empty when it is ready.
fn not_ready(status: &serde_json::Value, truth: &Truth) -> Vec<String> {
    let mut missing = Vec::new();
    let flag = |pointer: &str| status.pointer(pointer).and_then(serde_json::Value::as_bool);
    for (group, what) in [
        ("mode", "heartbeat"),
        ("position", "position"),
        ("gps", "GPS"),
        ("battery", "battery"),
    ] {
        if flag(&format!("/vehicle/{group}/freshness/stale")) != Some(false) {
            missing.push(format!("no fresh {what} telemetry"));
        }
    }
    if !status
        .pointer("/vehicle/home")
        .is_some_and(serde_json::Value::is_object)
    {
        missing.push("no home position".into());
    }
    if flag("/vehicle/estimator/position_valid") != Some(true) {
        missing.push("the autopilot's estimator does not trust its position yet".into());
    }
    // The daemon's pre-flight check of the autopilot's parameters, when it reports one.
    if let Some(state) = status
        .pointer("/preflight/state")
        .and_then(serde_json::Value::as_str)
        && state != "done"
    {
        missing.push(format!("the daemon's pre-flight check is `{state}`"));
    }
    if truth.prearm_ok == Some(false) {
        missing.push("the autopilot's pre-arm checks do not pass (SYS_STATUS)".into());
    }
    missing
}

/// The newest `n` status texts of the autopilot in the daemon's status, newest last.
fn last_status_texts(status: &serde_json::Value, n: usize) -> String {
    let texts: Vec<String> = status
        .pointer("/vehicle/status_texts")
        .and_then(serde_json::Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|t| t.get("text").and_then(serde_json::Value::as_str))
                .map(|t| format!("\"{t}\""))
                .collect()
        })
        .unwrap_or_default();
    if texts.is_empty() {
        return "nothing".into();
    }
    texts[texts.len().saturating_sub(n)..].join(", ")
}

/// A fresh private directory (mode 0700) with a short path for the rig's Unix sockets: in
/// `$XDG_RUNTIME_DIR` when there is one, else the system's temporary directory.
fn short_runtime_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    for _ in 0..16 {
        let dir = base.join(format!(
            "fc-hil-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => bail!(
                "cannot create a runtime directory in {}: {e}",
                base.display()
            ),
        }
    }
    bail!(
        "cannot find a free runtime directory name in {}",
        base.display()
    )
}

/// Two seconds of the wire either side of `around`, without the routine telemetry.
fn quiet_excerpt(wire: &WireLog, around: Duration) -> String {
    let routine = |f: &WireFrame| {
        f.direction == Direction::ToCompanion
            && f.message
                .as_ref()
                .is_some_and(|m| ROUTINE_TELEMETRY.contains(&mavlink::Message::message_name(m)))
    };
    let (mut out, hidden) = wire.excerpt_where(around, Duration::from_secs(2), |f| !routine(f));
    if hidden > 0 {
        out.push_str(&format!(
            "({hidden} routine telemetry frames not shown: {})\n",
            ROUTINE_TELEMETRY.join(", ")
        ));
    }
    out
}

/// How the target takes the simulator faults, as [`Rig::find_fault_params`] found out.
#[derive(Debug, Clone, Copy, Default)]
struct FaultParams {
    /// GPS off and on: the parameter, its value for "lost" and for "restored".
    gps: Option<(&'static str, f32, f32)>,
}

/// A MAVLink parameter id as text (NUL-padded to 16 bytes on the wire).
fn param_name(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `stayed_inside`: the farthest from home and the highest the wire showed after the mark.
fn judge_stayed_inside(
    region: crate::hil::scenario::Region,
    frames: &[WireFrame],
    from: Duration,
) -> Result<(String, Option<f64>), String> {
    let mut truth = Truth::default();
    let (mut far_m, mut high_m) = (0.0f64, f64::MIN);
    for f in frames {
        truth.observe(f);
        if f.at < from {
            continue;
        }
        if let Some(d) = truth.distance_from_home_m() {
            far_m = far_m.max(d);
        }
        if let Some(a) = truth.altitude_m {
            high_m = high_m.max(a);
        }
    }
    if high_m == f64::MIN {
        return Err("no position was seen on the wire".into());
    }
    let detail = format!("at most {far_m:.1} m from home and {high_m:.1} m above it");
    if far_m > region.radius_m || high_m > region.altitude_m_max {
        Err(detail)
    } else {
        Ok((detail, None))
    }
}

/// `whitelist_conformance`: every frame the companion sent, against the daemon's whitelist
/// and the vehicle as the wire showed it then.
fn judge_whitelist(
    envelope: &crate::config::EnvelopeConfig,
    frames: &[WireFrame],
) -> Result<(String, Option<f64>), String> {
    let whitelist = crate::safety::whitelist::Whitelist::new(envelope);
    let mut truth = Truth::default();
    let mut checked = 0usize;
    let mut violations = Vec::new();
    for f in frames {
        if from_companion(f)
            && let Some(message) = &f.message
        {
            checked += 1;
            if let Err(v) = whitelist.check(message, &truth.flight_state(), Role::System) {
                violations.push(format!(
                    "+{:.3} s {}: {v}",
                    f.at.as_secs_f64(),
                    describe_frame(f)
                ));
            }
        }
        truth.observe(f);
    }
    if violations.is_empty() {
        Ok((format!("{checked} companion frames, all allowed"), None))
    } else {
        Err(format!(
            "{} of {checked} frames outside the whitelist: {}",
            violations.len(),
            violations
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

/// A frame the daemon sent toward the autopilot (not one the rig injected).
fn from_companion(f: &WireFrame) -> bool {
    f.direction == Direction::ToAutopilot && !f.injected && f.component_id == COMPANION_COMPONENT_ID
}

/// Whether `f` is `name`: a message name (`SET_MODE`) or a command (`MAV_CMD_DO_SET_MODE`)
/// in a COMMAND_LONG/COMMAND_INT.
fn frame_is(f: &WireFrame, name: &str) -> bool {
    match &f.message {
        Some(MavMessage::COMMAND_LONG(c)) if name.starts_with("MAV_CMD_") => {
            format!("{:?}", c.command) == name
        }
        Some(MavMessage::COMMAND_INT(c)) if name.starts_with("MAV_CMD_") => {
            format!("{:?}", c.command) == name
        }
        Some(m) => mavlink::Message::message_name(m) == name,
        None => false,
    }
}

fn describe_frame(f: &WireFrame) -> String {
    match &f.message {
        Some(MavMessage::COMMAND_LONG(c)) => format!("COMMAND_LONG {:?}", c.command),
        Some(MavMessage::COMMAND_INT(c)) => format!("COMMAND_INT {:?}", c.command),
        Some(m) => mavlink::Message::message_name(m).to_owned(),
        None => format!("message id {}", f.message_id),
    }
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The scenario files named on the command line: files as given, directories expanded to
/// their `*.toml` in name order.
pub fn scenario_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            bail!("{}: no such scenario file or directory", path.display());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_say_what_they_lack() {
        assert_eq!(Target::parse("sim"), Ok(Target::Sim));
        assert_eq!(
            Target::parse("sitl:tcpout:127.0.0.1:5760"),
            Ok(Target::Sitl("tcpout:127.0.0.1:5760".into()))
        );
        assert_eq!(
            Target::parse("serial:/dev/ttyACM0:115200"),
            Ok(Target::Serial("/dev/ttyACM0:115200".into()))
        );
        assert!(Target::parse("sitl:nonsense").is_err());
        assert!(Target::parse("real").unwrap_err().contains("expected sim"));
        let bench = Target::Serial("/dev/ttyACM0:115200".into());
        assert!(bench.lacks(Need::SimFaults, true).is_some());
        assert!(
            bench
                .lacks(Need::Flight, false)
                .unwrap()
                .contains("--allow-flight")
        );
        assert!(bench.lacks(Need::Flight, true).is_none());
        assert!(Target::Sim.lacks(Need::Bridge, false).is_none());
    }

    #[test]
    fn ready_to_fly_needs_home_a_trusted_position_fresh_telemetry_and_the_prearm_checks() {
        let fresh = json!({"freshness": {"age_ms": 100, "stale": false}});
        let mut status = json!({
            "vehicle": {
                "mode": fresh, "position": fresh, "gps": fresh, "battery": fresh,
                "home": {"latitude_deg": 47.4, "longitude_deg": 8.5},
                "estimator": {"position_valid": true},
                "status_texts": [{"text": "EKF3 IMU0 origin set"}, {"text": "PreArm: Need Position Estimate"}]
            }
        });
        let mut truth = Truth::default();
        assert!(not_ready(&status, &truth).is_empty());
        // ArduCopter sets home ~20 s before its EKF uses the GPS: not ready.
        status["vehicle"]["estimator"]["position_valid"] = json!(false);
        assert_eq!(
            not_ready(&status, &truth),
            vec!["the autopilot's estimator does not trust its position yet"]
        );
        status["vehicle"]["estimator"]["position_valid"] = json!(true);
        status["vehicle"]["battery"]["freshness"]["stale"] = json!(true);
        status["vehicle"]["home"] = serde_json::Value::Null;
        assert_eq!(
            not_ready(&status, &truth),
            vec!["no fresh battery telemetry", "no home position"]
        );
        status["vehicle"]["battery"]["freshness"]["stale"] = json!(false);
        status["vehicle"]["home"] = json!({"latitude_deg": 47.4});
        // The autopilot's own pre-arm checks, as SYS_STATUS reports them on the wire.
        truth.prearm_ok = Some(false);
        assert!(not_ready(&status, &truth)[0].contains("pre-arm"));
        truth.prearm_ok = None;
        // The daemon's pre-flight check, when its status has one.
        status["preflight"] = json!({"state": "reading"});
        assert!(not_ready(&status, &truth)[0].contains("`reading`"));
        status["preflight"] = json!({"state": "done"});
        assert!(not_ready(&status, &truth).is_empty());
        assert_eq!(
            last_status_texts(&status, 1),
            "\"PreArm: Need Position Estimate\""
        );
        assert_eq!(not_ready(&json!({}), &truth).len(), 6);
    }

    #[test]
    fn the_runtime_directory_is_short_private_and_fresh() {
        use std::os::unix::fs::PermissionsExt;
        let a = short_runtime_dir().unwrap();
        let b = short_runtime_dir().unwrap();
        assert_ne!(a, b);
        let socket = a.join("estop.sock");
        assert!(
            socket.as_os_str().len() <= crate::estop::local::SOCKET_PATH_BYTES_MAX,
            "{}",
            socket.display()
        );
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for d in [a, b] {
            std::fs::remove_dir(d).unwrap();
        }
    }

    #[test]
    fn daemon_overrides_merge_key_by_key() {
        let mut base: toml::Table =
            toml::from_str("[mqtt]\nhost = \"a\"\nport = 1\n[vehicle]\nlink = \"x\"\n").unwrap();
        let over: toml::Table =
            toml::from_str("[mqtt]\nport = 2\n[failsafe]\nground_link_timeout_s = 1.0\n").unwrap();
        merge(&mut base, over);
        assert_eq!(base["mqtt"]["host"].as_str(), Some("a"));
        assert_eq!(base["mqtt"]["port"].as_integer(), Some(2));
        assert_eq!(base["vehicle"]["link"].as_str(), Some("x"));
        assert_eq!(
            base["failsafe"]["ground_link_timeout_s"].as_float(),
            Some(1.0)
        );
    }
}
