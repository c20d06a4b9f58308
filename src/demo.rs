//! `flight-companion demo`: the whole chain on one machine, no hardware.
//!
//! It starts the simulated autopilot, a Mosquitto broker with a fresh `dev-setup`
//! directory (mutual TLS, on a free loopback port), the daemon, and the ground bridge;
//! then it acts as an ordinary MCP client on the bridge's stdio — exactly where a desktop
//! app or an agent framework would sit — and says in plain words what happens.
//! Every process it starts is stopped before it exits, whatever happens.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use flight_companion_testkit::{free_port, mosquitto_path};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::dev_setup::DevSetupArgs;
use crate::hil::client::{Client, ClientOptions};
use crate::sim::args::SimAutopilot;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where to write the dev certificates, configs and logs (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Which autopilot the simulator plays.
    #[arg(long, value_enum, default_value = "ardupilot")]
    pub autopilot: SimAutopilot,
    /// How many `vehicle://status` updates to watch before flying.
    #[arg(long, default_value_t = 3)]
    pub updates: u32,
    /// Simulated seconds per wall-clock second (the flight takes about a minute of
    /// simulated time).
    #[arg(long, default_value_t = 2.0)]
    pub speedup: f64,
}

/// Time allowed for one flight tool (takeoff, goto, land) in wall-clock time.
const FLIGHT_TIMEOUT: Duration = Duration::from_secs(120);

/// Time allowed for each step; the demo fails with a clear message rather than hang.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("flight-companion-demo-{}", std::process::id())),
    };
    let mut children = Children::default();
    let result = tokio::select! {
        result = script(&exe, &dir, &args, &mut children) => result,
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    children.stop_all().await;
    match result {
        Ok(()) => {
            say(&format!(
                "done; certificates, configs and logs are in {}",
                dir.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("demo: failed: {error:#}");
            eprintln!("demo: the logs of each part are in {}", dir.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The simulated autopilot on a free port, its lines echoed for the person watching;
/// returns the endpoint the daemon connects to.
async fn start_simulator(
    exe: &Path,
    dir: &Path,
    args: &DemoArgs,
    children: &mut Children,
) -> anyhow::Result<String> {
    let autopilot = match args.autopilot {
        SimAutopilot::Ardupilot => "ardupilot",
        SimAutopilot::Px4 => "px4",
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut sim = Command::new(exe);
    sim.args([
        "sim",
        "--autopilot",
        autopilot,
        "--link",
        "tcpin:127.0.0.1:0",
        "--speedup",
        &args.speedup.to_string(),
        // A real ArduCopter's EKF takes about 40 s to trust its position after boot; the demo
        // shortens that to 10 simulated seconds (and waits for it before taking off).
        "--ekf-ready-s",
        "10",
    ])
    .stdout(Stdio::piped())
    .stderr(log_file(dir, "sim.log")?);
    let mut sim = children.spawn("simulator", sim)?;
    let sim_out = sim.stdout.take().context("simulator stdout")?;
    let mut sim_lines = BufReader::new(sim_out).lines();
    let serving = timeout("the simulator to start", async {
        while let Some(line) = sim_lines.next_line().await? {
            if let Some(endpoint) = line.strip_prefix("sim: serving ") {
                return Ok(endpoint.to_owned());
            }
        }
        bail!("the simulator exited")
    })
    .await?;
    children.keep(sim);
    if args.speedup > 2.5 {
        say(&format!(
            "at {}x the daemon's 1 Hz heartbeat is more than 3 simulated seconds apart, so the \
             simulator will report it lost and back: expected at this speed",
            args.speedup
        ));
    }
    let vehicle_link = serving.replacen("tcpin:", "tcpout:", 1);
    say(&format!(
        "simulated {autopilot} multicopter listening on {serving}"
    ));
    // Keep echoing what the vehicle does, in its own words.
    tokio::spawn(async move {
        while let Ok(Some(line)) = sim_lines.next_line().await {
            // Telemetry set-up chatter is not news to a person watching.
            if !line.starts_with("sim: command MAV_CMD_SET_MESSAGE_INTERVAL")
                && !line.starts_with("sim: command MAV_CMD_REQUEST_MESSAGE")
            {
                // The simulated time is for tests; a person watching does not need it.
                let line = line.trim_start_matches("sim: ");
                let line = line.rsplit_once(" (t=").map_or(line, |(text, _)| text);
                println!("  vehicle | {line}");
            }
        }
    });
    Ok(vehicle_link)
}

async fn script(
    exe: &Path,
    dir: &Path,
    args: &DemoArgs,
    children: &mut Children,
) -> anyhow::Result<()> {
    // 1. The simulated autopilot, on a free port.
    let vehicle_link = start_simulator(exe, dir, args, children).await?;

    // 2. Dev certificates and configs, and the broker.
    let broker_port = free_port()?;
    crate::dev_setup::write(&DevSetupArgs {
        dir: dir.to_owned(),
        broker_port,
        vehicle_link: vehicle_link.parse()?,
        force: true,
        ground_users: Vec::new(),
        home: None,
    })?;
    say(&format!(
        "wrote a dev CA, certificates and configs to {}",
        dir.display()
    ));
    enable_synthetic_camera(dir)?;
    let mut broker = Command::new(mosquitto_path());
    broker
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(log_file(dir, "mosquitto.log")?);
    let broker = children.spawn("mosquitto", broker)?;
    children.keep(broker);
    timeout("the broker to accept connections", async {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", broker_port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    say(&format!(
        "Mosquitto broker up on 127.0.0.1:{broker_port}, mutual TLS required"
    ));

    // 3. The daemon, and the ground bridge in front of it.
    let mut daemon = Command::new(exe);
    daemon
        .arg("run")
        .arg("--config")
        .arg(dir.join("drone.toml"))
        .stdout(Stdio::null())
        .stderr(log_file(dir, "daemon.log")?);
    let daemon = children.spawn("daemon", daemon)?;
    children.keep(daemon);
    say("flight-companion daemon started (log: daemon.log)");
    let mut ground = Command::new(exe);
    ground
        .arg("ground")
        .arg("--config")
        .arg(dir.join("ground.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "ground.log")?);
    let mut ground = children.spawn("ground bridge", ground)?;
    // An ordinary MCP client on the bridge's stdio (the raw client of `hil::client`), as a
    // desktop app or an agent framework would be; the bridge holds the token.
    let mut client = McpClient(Client::over_stdio(
        ground.stdin.take().context("bridge stdin")?,
        ground.stdout.take().context("bridge stdout")?,
        ClientOptions::new("flight-companion demo"),
    ));
    children.keep(ground);

    // 4. An ordinary MCP client on the bridge's stdio.
    let init = timeout("initialize", client.0.initialize()).await?;
    say(&format!(
        "connected to drone `{}` over mTLS MQTT (MCP {})",
        init["serverInfo"]["name"].as_str().unwrap_or("?"),
        init["protocolVersion"].as_str().unwrap_or("?")
    ));

    let tools = client.request("tools/list", json!({})).await?;
    let tools = tools["tools"].as_array().cloned().unwrap_or_default();
    say(&format!("the drone offers {} tools:", tools.len()));
    for tool in &tools {
        let description = tool["description"].as_str().unwrap_or("");
        let first_sentence = description.split(". ").next().unwrap_or(description);
        println!(
            "  - {}: {}",
            tool["name"].as_str().unwrap_or("?"),
            first_sentence.trim_end_matches('.')
        );
    }

    // The daemon may still be waiting for the autopilot's first heartbeat: ask until it has one.
    let report = timeout("the autopilot's first heartbeat", async {
        loop {
            let status = client
                .request("tools/call", json!({"name": "get_status", "arguments": {}}))
                .await?;
            let report = status["structuredContent"].clone();
            if report["autopilot_seen"] == true {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await?;
    say(&format!("status: {}", describe_status(&report)));

    client
        .request("resources/subscribe", json!({"uri": "vehicle://status"}))
        .await?;
    say(&format!(
        "subscribed to vehicle://status; watching {} updates",
        args.updates
    ));
    let mut seen = 0;
    timeout("status updates", async {
        while seen < args.updates {
            let message = client.next_message().await?;
            if message["method"] == "notifications/resources/updated" {
                seen += 1;
                let read = client
                    .request("resources/read", json!({"uri": "vehicle://status"}))
                    .await?;
                let text = read["contents"][0]["text"].as_str().unwrap_or("{}");
                let report: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                say(&format!("update {seen}: {}", describe_status(&report)));
            }
        }
        Ok(())
    })
    .await?;
    fly(&mut client).await
}

/// A picture from the drone's camera: the synthetic camera renders the ground below the
/// vehicle's reported position; `save: true` keeps the full frame onboard with EXIF GPS.
async fn take_picture(client: &mut McpClient) -> anyhow::Result<()> {
    // First wait for a frame taken with a known position, then keep one.
    let picture = timeout("a camera picture", async {
        let mut save = false;
        loop {
            let result = client
                .request(
                    "tools/call",
                    json!({"name": "capture_image", "arguments": {"save": save}}),
                )
                .await?;
            let meta = &result["structuredContent"];
            if result["isError"] != true && meta["position_stale"] == false {
                if save {
                    return Ok(meta.clone());
                }
                save = true;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await?;
    say(&format!(
        "took a picture: {}x{} JPEG of {} bytes at {:.6}, {:.6}, {:.1} m above home, heading {:.0} deg",
        picture["width_px"],
        picture["height_px"],
        picture["bytes"],
        picture["latitude_deg"].as_f64().unwrap_or(f64::NAN),
        picture["longitude_deg"].as_f64().unwrap_or(f64::NAN),
        picture["altitude_relative_m"].as_f64().unwrap_or(f64::NAN),
        picture["heading_deg"].as_f64().unwrap_or(f64::NAN),
    ));
    say(&format!(
        "picture saved at full resolution with EXIF GPS tags: {}",
        picture["saved"]["path"].as_str().unwrap_or("?")
    ));

    Ok(())
}

/// Takes off, flies to a point inside the envelope, tries one outside the fence (which the
/// daemon refuses), lands; says what happens at each step.
async fn fly(client: &mut McpClient) -> anyhow::Result<()> {
    // Like a real autopilot after boot, the simulator's estimator needs a while to trust its
    // position, and the daemon checks the autopilot's settings before it lets it arm.
    let report = timeout("a trusted position and the pre-flight check", async {
        loop {
            let status = client.call_tool("get_status", json!({})).await?;
            let report = status["structuredContent"].clone();
            if report["vehicle"]["estimator"]["position_valid"] == true
                && report["preflight"]["state"] == "done"
            {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await?;
    let preflight = &report["preflight"];
    let findings: Vec<String> = preflight["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            format!(
                "{} {} (set it to {})",
                f["severity"].as_str().unwrap_or("?"),
                f["parameter"].as_str().unwrap_or("?"),
                f["set_to"].as_str().unwrap_or("?")
            )
        })
        .collect();
    say(&format!(
        "pre-flight check of the autopilot: {}; margins sized from {} ({} m/s)",
        if findings.is_empty() {
            "nothing to change".to_string()
        } else {
            findings.join(", ")
        },
        preflight["margin_speed"]["source"].as_str().unwrap_or("?"),
        preflight["margin_speed"]["speed_m_s"]
    ));

    let envelope = client
        .request(
            "tools/call",
            json!({"name": "get_envelope", "arguments": {}}),
        )
        .await?;
    if envelope["isError"] == true {
        bail!("the daemon has no envelope: {}", text_of(&envelope));
    }
    let e = &envelope["structuredContent"];
    let zones: Vec<String> = ["keep_in", "keep_out"]
        .iter()
        .flat_map(|kind| e[*kind].as_array().cloned().unwrap_or_default())
        .map(|z| {
            format!(
                "{} `{}`",
                z["kind"].as_str().unwrap_or("zone").replace('_', "-"),
                z["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    say(&format!(
        "the onboard envelope: {}, ceiling {} m, at most {} m from home; every motion is \
         checked against it before anything is sent",
        if zones.is_empty() {
            "no zones".to_string()
        } else {
            zones.join(", ")
        },
        e["altitude_m_max"],
        e["distance_from_home_m_max"]
    ));
    let (home_lat, home_lon) = (
        crate::dev_setup::SIM_HOME_LAT_DEG,
        crate::dev_setup::SIM_HOME_LON_DEG,
    );

    // One pilot in command: motion tools need the control lease.
    let control = client.call_tool("request_control", json!({})).await?;
    say(&format!(
        "took the controls: {}",
        control["structuredContent"]["message"]
            .as_str()
            .unwrap_or("granted")
    ));

    say("takeoff to 10 m");
    let result = client
        .call_tool("takeoff", json!({"altitude_m": 10.0}))
        .await?;
    expect_completed("takeoff", &result)?;

    let (lat, lon) = crate::geodesy::offset_deg(home_lat, home_lon, 40.0, -30.0);
    say(&format!(
        "goto {lat:.6}, {lon:.6} at 15 m (40 m north, 30 m west of home, inside the field)"
    ));
    let result = client
        .call_tool(
            "goto",
            json!({"latitude_deg": lat, "longitude_deg": lon, "altitude_m": 15.0}),
        )
        .await?;
    expect_completed("goto", &result)?;
    take_picture(client).await?;

    let (lat, lon) = crate::geodesy::offset_deg(home_lat, home_lon, 400.0, 0.0);
    say(&format!(
        "goto {lat:.6}, {lon:.6} (400 m north: outside the fence), which must be refused"
    ));
    let result = client
        .call_tool(
            "goto",
            json!({"latitude_deg": lat, "longitude_deg": lon, "altitude_m": 15.0}),
        )
        .await?;
    if result["structuredContent"]["outcome"] != "refused" {
        bail!(
            "the goto outside the fence was not refused: {}",
            text_of(&result)
        );
    }
    say(&format!(
        "refused by the daemon, nothing was sent to the vehicle: {}",
        result["structuredContent"]["message"]
            .as_str()
            .unwrap_or("?")
    ));

    say("land");
    let result = client.call_tool("land", json!({})).await?;
    expect_completed("land", &result)?;
    let vehicle = &result["structuredContent"]["vehicle"];
    if vehicle["armed"] != false {
        bail!("the vehicle is still armed after landing: {vehicle}");
    }
    say("on the ground and disarmed");
    Ok(())
}

/// Turns on the synthetic camera in the demo's `drone.toml`, saving captures in `DIR/captures`.
fn enable_synthetic_camera(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("drone.toml");
    let mut text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.push_str(
        "\n[camera]\n\
         # The demo's camera renders the ground below the simulated vehicle.\n\
         enabled = true\n\
         source = \"synthetic\"\n\
         captures_dir = \"captures\"\n",
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn expect_completed(tool: &str, result: &Value) -> anyhow::Result<()> {
    let outcome = &result["structuredContent"]["outcome"];
    if outcome != "completed" {
        bail!("{tool} did not complete: {}", text_of(result));
    }
    say(&format!(
        "{tool}: {}",
        result["structuredContent"]["message"]
            .as_str()
            .unwrap_or("done")
    ));
    Ok(())
}

/// The text a tool result carries (its first content block).
fn text_of(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .map_or_else(|| result.to_string(), str::to_owned)
}

/// One line about the vehicle from a `StatusReport`.
fn describe_status(report: &Value) -> String {
    let v = &report["vehicle"];
    let autopilot = match v["autopilot"]["autopilot"].as_str() {
        Some("ardupilot") => "ArduPilot",
        Some("px4") => "PX4",
        Some(_) => "an autopilot",
        None => return "no autopilot heard yet".into(),
    };
    format!(
        "{autopilot}{} in {} ({}), {:.6}, {:.6} at {:.1} m above home, battery {:.1} V, GPS {} with {} satellites",
        if report["simulated"] == true {
            " (simulated)"
        } else {
            ""
        },
        v["mode"]["flight_mode"].as_str().unwrap_or("?"),
        if v["mode"]["armed"] == true {
            "armed"
        } else {
            "disarmed"
        },
        v["position"]["latitude_deg"].as_f64().unwrap_or(f64::NAN),
        v["position"]["longitude_deg"].as_f64().unwrap_or(f64::NAN),
        v["position"]["altitude_relative_m"]
            .as_f64()
            .unwrap_or(f64::NAN),
        v["battery"]["voltage_v"].as_f64().unwrap_or(f64::NAN),
        v["gps"]["fix_type"].as_str().unwrap_or("?"),
        v["gps"]["satellites_visible"].as_u64().unwrap_or(0),
    )
}

fn say(text: &str) {
    println!("demo: {text}");
}

async fn timeout<T>(
    what: &str,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "timed out after {} s waiting for {what}",
                STEP_TIMEOUT.as_secs()
            )
        })?
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = dir.join(name);
    std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))
}

/// The demo's MCP client: the raw client over the bridge's stdio, saying what it sees.
struct McpClient(Client);

impl McpClient {
    async fn next_message(&mut self) -> anyhow::Result<Value> {
        self.0
            .next_message()
            .await
            .context("the bridge exited (see ground.log)")
    }

    /// Calls a tool with a progress token, printing its progress and the daemon's envelope
    /// warnings as they come, and returns its result (tool errors included: the caller
    /// decides whether a refusal is expected).
    async fn call_tool(&mut self, name: &str, arguments: Value) -> anyhow::Result<Value> {
        let mut say_progress = |message: &Value| match message["method"].as_str() {
            Some("notifications/progress") => {
                if let Some(text) = message["params"]["message"].as_str() {
                    println!("  {name} | {text}");
                }
            }
            Some("notifications/message") => {
                let p = &message["params"];
                if let Some(text) = p["data"]["message"].as_str() {
                    println!("  {} | {text}", p["level"].as_str().unwrap_or("log"));
                }
            }
            _ => {}
        };
        tokio::time::timeout(
            FLIGHT_TIMEOUT,
            self.0
                .call_tool_watching(name, arguments, &mut say_progress),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{name} did not finish within {FLIGHT_TIMEOUT:?}"))?
    }

    /// Sends a request and waits for its response; notifications in between are skipped.
    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        timeout(method, self.0.request(method, params)).await
    }
}

/// Every process the demo started; stopped in reverse order, gracefully first.
#[derive(Default)]
struct Children {
    running: Vec<Child>,
}

impl Children {
    fn spawn(&mut self, name: &str, mut command: Command) -> anyhow::Result<Child> {
        command.kill_on_drop(true);
        command.spawn().with_context(|| match name {
            "mosquitto" => "cannot start mosquitto: install it with `bash tests/setup` (Debian package mosquitto)".to_string(),
            _ => format!("cannot start the {name}"),
        })
    }

    fn keep(&mut self, child: Child) {
        self.running.push(child);
    }

    async fn stop_all(&mut self) {
        while let Some(mut child) = self.running.pop() {
            if let Some(pid) = child.id() {
                // SIGTERM first so the daemon clears its presence and the broker closes cleanly.
                // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(3), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}
