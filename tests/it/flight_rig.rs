//! The rig of the flight tests: a real mTLS Mosquitto, `flight-companion sim` with two links
//! on ephemeral ports (one for the daemon, one for the harness), the daemon from dev-setup's
//! `drone.toml` with the test's own `[envelope]`, and an MCP client over MQTT.
//!
//! The harness link is a MAVLink ground station of its own (system 255): it injects the
//! simulator's `SIM_*` faults with PARAM_SET, as one would against SITL, and records every
//! GLOBAL_POSITION_INT the vehicle reports with its `time_boot_ms` (simulated time).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flight_companion::link::MavMessage;
use flight_companion::link::dialect::{COMMAND_LONG_DATA, MavCmd, MavParamType, PARAM_SET_DATA};
use flight_companion::link::endpoint::Endpoint;
use flight_companion::link::transport::{Link, LinkEvent, LinkHandle, LinkOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::mcp_client::{Seen, TestClient, wait_online};
use crate::support::broker::{Broker, s};
use crate::support::{Proc, flight_companion};

/// The simulator's home (its `--home` default, PX4's Zürich test field).
pub const HOME_LAT_DEG: f64 = 47.397742;
pub const HOME_LON_DEG: f64 = 8.545594;

/// A point `north_m`/`east_m` from home as `[lat, lon]` TOML.
pub fn at(north_m: f64, east_m: f64) -> String {
    let (lat, lon) = offset(north_m, east_m);
    format!("[{lat:.8}, {lon:.8}]")
}

pub fn offset(north_m: f64, east_m: f64) -> (f64, f64) {
    flight_companion::geodesy::offset_deg(HOME_LAT_DEG, HOME_LON_DEG, north_m, east_m)
}

/// (north, east) of a position from home, metres.
pub fn from_home(lat_deg: f64, lon_deg: f64) -> (f64, f64) {
    flight_companion::geodesy::north_east_m(HOME_LAT_DEG, HOME_LON_DEG, lat_deg, lon_deg)
}

/// One GLOBAL_POSITION_INT as the vehicle reported it.
#[derive(Debug, Clone, Copy)]
pub struct Reported {
    /// Simulated time.
    pub t_s: f64,
    pub north_m: f64,
    pub east_m: f64,
    pub altitude_m: f64,
    /// Horizontal speed over the ground (from vx, vy).
    pub ground_speed_m_s: f64,
}

pub struct Rig {
    pub sim: Proc,
    pub daemon: Proc,
    /// The daemon's configuration file (to restart it).
    pub config: String,
    pub client: TestClient,
    harness: LinkHandle,
    pub positions: Arc<Mutex<Vec<Reported>>>,
    stop: CancellationToken,
    // Last: dropped after the processes that use its files.
    broker: Broker,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How the daemon reaches the simulator.
#[derive(Debug, Clone, Copy)]
pub enum DaemonLink {
    /// The simulator listens on two `tcpin` links; the daemon connects to the first (or, with
    /// `second`, to the second: a signing simulator's channel 1, where unsigned frames are
    /// refused) and the harness to the other.
    Connects { second: bool },
    /// The daemon listens (`udpin` or `tcpin` on a free port); the simulator connects to it.
    Listens(&'static str),
}

/// What [`Rig::start_setup`] starts.
pub struct RigSetup<'a> {
    pub px4: bool,
    pub speedup: f64,
    pub envelope: &'a str,
    pub extra: &'a [(&'a str, &'a str)],
    pub daemon_link: DaemonLink,
    /// More arguments for `flight-companion sim`.
    pub sim_args: &'a [&'a str],
    /// TOML appended to the daemon's configuration (e.g. `[vehicle.signing]`).
    pub sections: &'a str,
    /// Run on the dev-setup directory before the daemon starts (e.g. to mount a small file
    /// system on its state directory).
    pub prepare: Option<&'a dyn Fn(&crate::support::broker::DevDir)>,
    /// More environment variables for the daemon (e.g. libfaketime's).
    pub daemon_env: &'a [(&'a str, &'a str)],
}

impl Default for RigSetup<'_> {
    fn default() -> Self {
        RigSetup {
            px4: false,
            speedup: 5.0,
            envelope: "",
            extra: &[],
            daemon_link: DaemonLink::Connects { second: false },
            sim_args: &[],
            sections: "",
            prepare: None,
            daemon_env: &[],
        }
    }
}

/// The simulator's start-up, and the simulated time by which both personalities arm.
const EKF_READY_S: &str = "1";
const ARMING_READY_S: f64 = 2.0;

/// How long a flight tool may take in wall-clock time (generous: the machine is shared).
pub const FLIGHT_WAIT: Duration = Duration::from_secs(60);
const START_WAIT: Duration = Duration::from_secs(30);

impl Rig {
    /// Starts everything; `envelope` is the `[envelope]` section (with its header) written
    /// into the daemon's configuration. Returns once the daemon has built the envelope.
    pub async fn start(tag: &str, px4: bool, speedup: f64, envelope: &str) -> Rig {
        Rig::start_with(tag, px4, speedup, envelope, &[]).await
    }

    /// [`Rig::start`] with extra keys for the daemon's sections: `("mcp", "sessions_max = 8")`
    /// adds the line to `[mcp]`.
    pub async fn start_with(
        tag: &str,
        px4: bool,
        speedup: f64,
        envelope: &str,
        extra: &[(&str, &str)],
    ) -> Rig {
        Rig::start_setup(
            tag,
            RigSetup {
                px4,
                speedup,
                envelope,
                extra,
                ..RigSetup::default()
            },
        )
        .await
    }

    /// The rig as `setup` says (who listens, the simulator's extra arguments, extra
    /// configuration sections).
    pub async fn start_setup(tag: &str, setup: RigSetup<'_>) -> Rig {
        let RigSetup {
            px4,
            speedup,
            envelope,
            extra,
            daemon_link,
            sim_args,
            sections,
            prepare,
            daemon_env,
        } = setup;
        let broker = Broker::start(tag);
        if let Some(prepare) = prepare {
            prepare(&broker.dev);
        }
        let speedup = speedup.to_string();
        let port = |line: String| -> u16 {
            line.rsplit(':')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no port in {line:?}"))
        };
        // The estimator trusts its position 1 simulated second after boot instead of
        // ArduCopter's 42 (arming from 1.05 s, PX4's from 1.67 s): these flights are not about
        // start-up (the rig waits for it).
        let mut args = vec!["sim", "--speedup", &speedup, "--ekf-ready-s", EKF_READY_S];
        if px4 {
            args.extend(["--autopilot", "px4"]);
        }
        args.extend(sim_args.iter().copied());
        let (sim, daemon, config, harness_port) = match daemon_link {
            DaemonLink::Connects { second } => {
                args.extend(["--link", "tcpin:127.0.0.1:0", "--link", "tcpin:127.0.0.1:0"]);
                let mut sim = flight_companion("sim", &args);
                let first = port(sim.wait_for_line("sim: serving tcpin:127.0.0.1:", START_WAIT));
                let other = port(sim.wait_for_line("sim: serving tcpin:127.0.0.1:", START_WAIT));
                let (daemon_port, harness_port) = if second {
                    (other, first)
                } else {
                    (first, other)
                };
                let link = format!("tcpout:127.0.0.1:{daemon_port}");
                let config = write_config(&broker, &link, envelope, extra, sections);
                let mut daemon = crate::support::flight_companion_env(
                    "daemon",
                    &["run", "--config", &config],
                    daemon_env,
                );
                daemon.wait_for_line("flight-companion ready", START_WAIT);
                (sim, daemon, config, harness_port)
            }
            DaemonLink::Listens(kind) => {
                let daemon_port = match kind {
                    "udpin" => crate::support::free_udp_port(),
                    _ => crate::support::free_tcp_port(),
                };
                let link = format!("{kind}:127.0.0.1:{daemon_port}");
                let config = write_config(&broker, &link, envelope, extra, sections);
                let mut daemon = crate::support::flight_companion_env(
                    "daemon",
                    &["run", "--config", &config],
                    daemon_env,
                );
                daemon.wait_for_line("flight-companion ready", START_WAIT);
                let out = format!("{}out:127.0.0.1:{daemon_port}", &kind[..3]);
                args.extend(["--link", &out, "--link", "tcpin:127.0.0.1:0"]);
                let mut sim = flight_companion("sim", &args);
                let harness_port =
                    port(sim.wait_for_line("sim: serving tcpin:127.0.0.1:", START_WAIT));
                (sim, daemon, config, harness_port)
            }
        };

        let stop = CancellationToken::new();
        let (harness, positions) = harness(harness_port, stop.clone()).await;
        let mut client = TestClient::connect(&broker, &format!("ground-{tag}")).await;
        wait_online(&mut client).await;
        client.initialize("2025-11-25").await;
        // One pilot in command: motion tools need the control lease (issue 6).
        let (control, _) = client
            .call(
                "tools/call",
                serde_json::json!({"name": "request_control", "arguments": {}}),
            )
            .await;
        assert!(control.get("result").is_some(), "{control}");
        let mut rig = Rig {
            sim,
            daemon,
            config,
            client,
            harness,
            positions,
            stop,
            broker,
        };
        rig.wait_for_envelope().await;
        rig.wait_until_ready().await;
        rig
    }

    /// Waits until the autopilot trusts its position and the pre-flight check has read its
    /// parameters: before that a takeoff is (rightly) refused.
    pub async fn wait_until_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            let status = self.status().await;
            let booted_s = self.positions.lock().unwrap().last().map_or(0.0, |p| p.t_s);
            if status["vehicle"]["estimator"]["position_valid"] == true
                && status["preflight"]["state"] == "done"
                && booted_s >= ARMING_READY_S
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready within {START_WAIT:?}: {status}\n--- daemon:\n{}",
                self.daemon.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `get_status`'s structured content.
    pub async fn status(&mut self) -> Value {
        let (result, _) = self.tool("get_status", json!({})).await;
        result["structuredContent"].clone()
    }

    /// A second ground client holding the dev-setup ADMIN token (e.g. to reset the e-stop).
    pub async fn admin_client(&self, tag: &str) -> TestClient {
        let mut admin = TestClient::connect(&self.broker, &format!("admin-{tag}")).await;
        admin.token = std::fs::read_to_string(self.broker.dev.path("tokens/admin.jwt"))
            .ok()
            .map(|t| t.trim().to_owned());
        wait_online(&mut admin).await;
        admin.initialize("2025-11-25").await;
        admin
    }

    /// A COMMAND_LONG from the harness's own ground station (system 255), as another GCS or
    /// the pilot's RC link would send it.
    pub fn gcs_command(&self, command: MavCmd, params: [f32; 7]) {
        let [param1, param2, param3, param4, param5, param6, param7] = params;
        self.harness
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
            .expect("the harness link is up");
    }

    /// The fastest reported ground speed from simulated time `from_s` on.
    pub fn top_speed_since(&self, from_s: f64) -> f64 {
        self.positions
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.t_s >= from_s)
            .map(|p| p.ground_speed_m_s)
            .fold(0.0, f64::max)
    }

    async fn wait_for_envelope(&mut self) {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            let (result, _) = self.tool("get_envelope", json!({})).await;
            if result["isError"] != true {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no envelope within {START_WAIT:?}: {result}\n--- daemon:\n{}",
                self.daemon.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Calls a tool and waits for its result (up to [`FLIGHT_WAIT`]); returns the `result`
    /// object and the notifications seen meanwhile.
    pub async fn tool(&mut self, name: &str, arguments: Value) -> (Value, Vec<Seen>) {
        let id = self
            .client
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        let rpc = self.client.rpc_topic();
        let mut skipped = Vec::new();
        let found = self
            .client
            .wait_for(
                |m| {
                    m.topic == rpc
                        && m.payload
                            .as_ref()
                            .is_some_and(|p| p.get("method").is_none() && p.get("id") == Some(&id))
                },
                FLIGHT_WAIT,
                &mut skipped,
            )
            .await;
        let Some(found) = found else {
            panic!(
                "{name}: no result within {FLIGHT_WAIT:?}\n--- daemon:\n{}\n--- sim:\n{}",
                self.daemon.output(),
                self.sim.output()
            );
        };
        let response = found.payload.unwrap();
        (response["result"].clone(), skipped)
    }

    /// A flight tool that must complete; returns its structured result.
    pub async fn fly(&mut self, name: &str, arguments: Value) -> Value {
        let (result, _) = self.tool(name, arguments).await;
        let structured = result["structuredContent"].clone();
        assert_eq!(
            structured["outcome"],
            "completed",
            "{name}: {result}\n--- daemon:\n{}\n--- sim:\n{}",
            self.daemon.output(),
            self.sim.output()
        );
        structured
    }

    /// A flight tool that must be refused; returns the refusal's message.
    pub async fn refused(&mut self, name: &str, arguments: Value) -> String {
        let (result, _) = self.tool(name, arguments).await;
        assert_eq!(result["isError"], true, "{name}: {result}");
        assert_eq!(
            result["structuredContent"]["outcome"], "refused",
            "{name}: {result}"
        );
        result["structuredContent"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Any message from the harness's own ground station (system 255), as another GCS.
    pub fn gcs_send(&self, message: &MavMessage) {
        self.harness.send(message).expect("the harness link is up");
    }

    /// PARAM_SET on the harness link (the simulator's fault injection).
    pub fn set_param(&self, name: &str, value: f32) {
        self.harness
            .send(&MavMessage::PARAM_SET(PARAM_SET_DATA {
                param_value: value,
                target_system: 1,
                target_component: 1,
                param_id: name.into(),
                param_type: MavParamType::MAV_PARAM_TYPE_REAL32,
            }))
            .expect("the harness link is up");
    }

    /// The broker and its dev-setup directory.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The latest reported position.
    pub fn position(&self) -> Reported {
        *self
            .positions
            .lock()
            .unwrap()
            .last()
            .expect("the vehicle reports its position")
    }

    /// Commands the simulator received from the daemon (system 1, component 191) since
    /// `from_line` of its output, without the telemetry requests.
    pub fn motion_commands_since(&mut self, from_line: usize) -> Vec<String> {
        self.sim
            .output()
            .lines()
            .skip(from_line)
            .filter(|l| l.starts_with("sim: command ") && l.contains("from 1/191"))
            .filter(|l| {
                !l.contains("MAV_CMD_SET_MESSAGE_INTERVAL")
                    && !l.contains("MAV_CMD_REQUEST_MESSAGE")
            })
            .map(str::to_owned)
            .collect()
    }

    /// How many lines the simulator has printed so far.
    pub fn sim_lines(&mut self) -> usize {
        self.sim.output().lines().count()
    }
}

/// The simulated time printed at the end of a `sim:` line (`... (t=12.345 s)`).
pub fn sim_time_s(line: &str) -> f64 {
    line.rsplit_once("(t=")
        .and_then(|(_, rest)| rest.strip_suffix(" s)"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no simulated time in {line:?}"))
}

/// dev-setup's drone.toml pointed at the simulator (`link`), with the test's envelope instead
/// of the default one, telemetry at 25 Hz (the monitor's rate) and `sections` appended. Same
/// directory, so the relative certificate paths still hold.
fn write_config(
    broker: &Broker,
    link: &str,
    envelope: &str,
    extra: &[(&str, &str)],
    sections: &str,
) -> String {
    let text = std::fs::read_to_string(broker.dev.path("drone.toml")).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with('[') {
            // dev-setup's own [envelope] (and its zones) make way for the test's.
            skipping = line.starts_with("[envelope") || line.starts_with("[[envelope");
        }
        if skipping {
            continue;
        }
        if line.starts_with("revocation_path = ") {
            // Scripted flights send motion commands back to back, refusals included.
            out.push_str("motion_calls_per_s = 100.0\nmotion_calls_burst = 100\n");
        }
        if line.starts_with("link = ") {
            out.push_str(&format!("link = \"{link}\"\ntelemetry_rate_hz = 25.0\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
        for (section, keys) in extra {
            if line == format!("[{section}]") {
                out.push_str(keys);
                out.push('\n');
            }
        }
    }
    out.push('\n');
    out.push_str(envelope);
    out.push('\n');
    out.push_str(sections);
    let path = broker.dev.path("drone-flight.toml");
    std::fs::write(&path, out).unwrap();
    s(&path).to_owned()
}

async fn harness(port: u16, stop: CancellationToken) -> (LinkHandle, Arc<Mutex<Vec<Reported>>>) {
    let endpoint: Endpoint = format!("tcpout:127.0.0.1:{port}").parse().unwrap();
    let (handle, mut events) = Link::open(
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
    .await
    .unwrap();
    let positions = Arc::new(Mutex::new(Vec::new()));
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let sink = positions.clone();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Connected { .. } => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                LinkEvent::Frame { frame, .. } => {
                    let MavMessage::GLOBAL_POSITION_INT(p) = frame.message else {
                        continue;
                    };
                    let (north_m, east_m) =
                        from_home(f64::from(p.lat) / 1e7, f64::from(p.lon) / 1e7);
                    sink.lock().unwrap().push(Reported {
                        t_s: f64::from(p.time_boot_ms) / 1000.0,
                        north_m,
                        east_m,
                        altitude_m: f64::from(p.relative_alt) / 1000.0,
                        ground_speed_m_s: (f64::from(p.vx) / 100.0).hypot(f64::from(p.vy) / 100.0),
                    });
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(START_WAIT, connected)
        .await
        .expect("the harness link connects")
        .unwrap();
    (handle, positions)
}
