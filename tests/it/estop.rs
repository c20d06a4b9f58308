//! The emergency stop and the failsafes through real processes: the simulator, the daemon,
//! `flight-companion estop` on its local socket, pymavlink putting the vehicle in the air.

use std::process::Command;
use std::time::Duration;

use crate::daemon_sim::start_sim;
use crate::support::{self, Proc, flight_companion};

/// The simulator with two links (daemon, harness) at `--speedup 4`; returns it and both.
pub(crate) fn start_sim_two_links() -> (Proc, String, String) {
    let (mut sim, first) = start_sim(&[
        "--link",
        "tcpin:127.0.0.1:0",
        "--link",
        "tcpin:127.0.0.1:0",
        "--speedup",
        "4",
    ]);
    let line = sim.wait_for_line("sim: serving ", Duration::from_secs(10));
    let second = line
        .split_once("sim: serving ")
        .unwrap()
        .1
        .trim()
        .to_owned();
    (sim, first, second)
}

fn start_daemon(dir: &std::path::Path, endpoint: &str) -> (Proc, std::path::PathBuf) {
    let socket = dir.join("estop.sock");
    let config = dir.join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nlink = \"{}\"\n[estop]\nsocket_path = \"{}\"\n",
            endpoint.replace("tcpin", "tcpout"),
            socket.display()
        ),
    )
    .unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    daemon.wait_for_line("local e-stop socket ready", Duration::from_secs(10));
    daemon.wait_for_line("autopilot found: Ardupilot", Duration::from_secs(10));
    (daemon, socket)
}

fn estop(args: &[&str]) -> (i32, String) {
    let output = Command::new(support::binary())
        .arg("estop")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

pub(crate) fn take_off(harness: &str) {
    let port = harness.rsplit(':').next().unwrap();
    let mut command = Command::new(support::python());
    command
        .arg(support::peer("estop_takeoff.py"))
        .args(["--port", port, "--timeout", "40"]);
    let mut peer = Proc::spawn("estop_takeoff", command);
    let code = peer.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "take-off failed:\n{}", peer.output());
}

#[test]
fn estop_local_command_brakes_a_flying_vehicle_and_latches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, first, harness) = start_sim_two_links();
    let (mut daemon, socket) = start_daemon(dir.path(), &first);
    take_off(&harness);

    let socket = socket.to_str().unwrap();
    let (code, out) = estop(&["--socket", socket, "--reason", "integration test"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("OK emergency stop latched: commanding hold"),
        "{out}"
    );
    // The stop reached the autopilot and the heartbeat shows it.
    sim.wait_for_line("sim: mode BRAKE", Duration::from_secs(5));
    daemon.wait_for_line("hold confirmed", Duration::from_secs(5));
    let (code, out) = estop(&["--socket", socket, "--status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"latched\":true"), "{out}");
    assert!(out.contains("integration test"), "{out}");
    assert!(out.contains("\"rung\":\"hold\""), "{out}");
    // A second trigger is recorded, changes nothing.
    let (code, out) = estop(&["--socket", socket]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already latched"), "{out}");

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(3)), Some(0));
    assert!(!std::path::Path::new(socket).exists(), "socket removed");
    let (code, out) = estop(&["--socket", socket]);
    assert_ne!(code, 0);
    assert!(out.contains("cannot connect to the e-stop socket"), "{out}");
}

#[test]
fn a_stopped_daemon_stops_heartbeating_and_the_simulator_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, first, _harness) = start_sim_two_links();
    let (daemon, _socket) = start_daemon(dir.path(), &first);
    // "Lost" needs a heartbeat first; the daemon may find the autopilot before its first beat.
    sim.wait_for_line("sim: companion heartbeat seen", Duration::from_secs(10));
    // SIGSTOP freezes the decision loop, which is the only source of the heartbeat.
    daemon.signal("STOP");
    sim.wait_for_line("sim: companion heartbeat lost", Duration::from_secs(10));
    daemon.signal("CONT");
    sim.wait_for_line("sim: companion heartbeat back", Duration::from_secs(10));
}

#[test]
fn broker_killed_in_flight_holds_then_returns_and_the_panic_topic_stops() {
    use crate::support::broker::Broker;
    let broker_dir_tag = "estop";
    let mut broker = Broker::start(broker_dir_tag);
    let (mut sim, first, harness) = start_sim_two_links();
    let text = std::fs::read_to_string(broker.dev.path("drone.toml")).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("link = ") {
                format!("link = \"{}\"", first.replace("tcpin", "tcpout"))
            } else {
                l.to_owned()
            }
        })
        .collect();
    let socket = broker.dev.path("estop.sock");
    let config = broker.dev.path("drone-estop.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[estop]\nsocket_path = \"{}\"\n[failsafe]\nground_link_timeout_s = 1.0\nground_loss_hold_s = 1.0\n",
            text.join("\n"),
            socket.display()
        ),
    )
    .unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    daemon.wait_for_line("e-stop panic topics subscribed", Duration::from_secs(15));
    take_off(&harness);

    // The broker dies in flight: hold after 1 s, return home after 1 s more.
    broker.kill();
    daemon.wait_for_line("FAILSAFE ground link lost", Duration::from_secs(10));
    sim.wait_for_line("sim: mode BRAKE", Duration::from_secs(5));
    sim.wait_for_line("sim: mode RTL", Duration::from_secs(10));

    // The broker is back: nothing resumes; a panic button publish is another trigger.
    broker.restart();
    daemon.wait_for_line("e-stop panic topics subscribed", Duration::from_secs(20));
    // The panic button is a ground identity of its own; its panic topic ends with it.
    let button = broker.dev.identity("panic-button");
    let output = Command::new("mosquitto_pub")
        .args(broker.tls_args(Some((&button.0, &button.1))))
        .args([
            "-q",
            "1",
            "-t",
            "flight-companion/estop/drone-1/panic-button",
            "-m",
            r#"{"reason": "panic button"}"#,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    daemon.wait_for_line(
        "another trigger by MQTT panic topic",
        Duration::from_secs(5),
    );
    let (code, out) = estop(&["--socket", socket.to_str().unwrap(), "--status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"rung\":\"return_home\""), "{out}");
    assert!(out.contains("panic button"), "{out}");
}

/// The autopilot link cut (socat killed: both ptys vanish) while a ground MCP client is
/// connected through Mosquitto: the client is told at once (a `link_degraded` alert as
/// `notifications/message`), `get_status` says the link is down, and a motion tool is refused
/// with the reason instead of being queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopilot_link_cut_is_reported_to_a_connected_ground_client() {
    use crate::mcp_client::{TestClient, wait_online};
    use crate::support::broker::{Broker, s};
    use serde_json::json;

    let broker = Broker::start("linkcut");
    let mut socat = crate::link_pty::start_socat(&broker.dev.dir);
    let (a, b) = (broker.dev.path("a"), broker.dev.path("b"));
    let (mut sim, _) = start_sim(&["--link", &format!("serial:{}:115200", a.display())]);
    let text = std::fs::read_to_string(broker.dev.path("drone.toml")).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("link = ") {
                format!(
                    "link = \"serial:{}:115200\"\nreconnect_backoff_ms_min = 50\nreconnect_backoff_ms_max = 200",
                    b.display()
                )
            } else {
                l.to_owned()
            }
        })
        .collect();
    let config = broker.dev.path("drone-linkcut.toml");
    std::fs::write(&config, text.join("\n")).unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", s(&config)]);
    daemon.wait_for_line("autopilot found: Ardupilot", Duration::from_secs(15));
    sim.wait_for_line("sim: companion heartbeat seen", Duration::from_secs(10));

    let mut client = TestClient::connect(&broker, "ground-linkcut").await;
    wait_online(&mut client).await;
    let init = client.initialize("2025-11-25").await;
    assert!(init.get("result").is_some(), "{init}");
    let (control, _) = client
        .call(
            "tools/call",
            json!({"name": "request_control", "arguments": {}}),
        )
        .await;
    assert!(control.get("result").is_some(), "{control}");
    let (status, _) = client
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    let status = &status["result"]["structuredContent"];
    assert_eq!(status["vehicle"]["link"]["connected"], true, "{status}");

    // Pull the cable.
    socat.signal("KILL");
    let _ = socat.wait_exit(Duration::from_secs(2));
    daemon.wait_for_line("autopilot link down", Duration::from_secs(5));

    // The client hears it without asking.
    let rpc = client.rpc_topic();
    let mut skipped = Vec::new();
    let alert = client
        .wait_for(
            |m| {
                m.topic == rpc
                    && m.payload.as_ref().is_some_and(|p| {
                        p["method"] == "notifications/message"
                            && p["params"]["data"]["alert"] == "link_degraded"
                    })
            },
            Duration::from_secs(5),
            &mut skipped,
        )
        .await
        .unwrap_or_else(|| panic!("no link alert; saw {skipped:?}"));
    let text = alert.payload.unwrap()["params"]["data"]["message"].to_string();
    assert!(text.contains("autopilot link down"), "{text}");

    // The status says so, and motion is refused with the reason, nothing queued.
    let (status, _) = client
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    let status = &status["result"]["structuredContent"];
    assert_eq!(status["vehicle"]["link"]["connected"], false, "{status}");
    assert_eq!(status["health"]["state"], "failed", "{status}");
    let (takeoff, _) = client
        .call(
            "tools/call",
            json!({"name": "takeoff", "arguments": {"altitude_m": 10.0}}),
        )
        .await;
    let result = &takeoff["result"];
    assert_eq!(result["isError"], true, "{takeoff}");
    let message = result["structuredContent"]["message"].to_string();
    assert!(message.contains("the autopilot link is down"), "{takeoff}");

    // Plugged back: the daemon reconnects by itself; nothing refused above is sent later.
    let from_line = sim.output().lines().count();
    let _socat = crate::link_pty::start_socat(&broker.dev.dir);
    daemon.wait_for_line("autopilot link up", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    let late: Vec<String> = sim
        .output()
        .lines()
        .skip(from_line)
        .filter(|l| l.contains("MAV_CMD_NAV_TAKEOFF") || l.contains("sim: armed"))
        .map(str::to_owned)
        .collect();
    assert!(late.is_empty(), "sent after the link came back: {late:?}");
}

/// A GET on the daemon's metrics endpoint: (status code, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

#[test]
fn the_default_estop_socket_works_for_a_user_and_a_missing_one_is_a_health_alert() {
    // As a user's login session has it: $XDG_RUNTIME_DIR (mode 0700), no systemd, no
    // estop key in the file. The daemon listens in a directory of its own there, and
    // `flight-companion estop` finds it with no option at all.
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run-user");
    std::fs::create_dir(&runtime).unwrap();
    let config = dir.path().join("daemon.toml");
    std::fs::write(&config, "[vehicle]\nlink = \"udpin:127.0.0.1:0\"\n").unwrap();
    let mut command = Command::new(support::binary());
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("RUNTIME_DIRECTORY");
    let mut daemon = Proc::spawn("daemon", command);
    let socket = runtime.join("flight-companion/estop.sock");
    daemon.wait_for_line(
        &format!(
            "local e-stop socket ready (flight-companion estop) socket={}",
            socket.display()
        ),
        Duration::from_secs(10),
    );
    let output = Command::new(support::binary())
        .args(["estop", "--status"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.starts_with("OK {\"latched\":false"), "{text}");
    drop(daemon);

    // A socket that cannot be bound: the daemon runs on (the other triggers work) and says
    // so where every client looks, as a health alert, not only in one log line.
    let port = support::free_tcp_port();
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nlink = \"udpin:127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [estop]\nsocket_path = \"/proc/no-such-place/estop.sock\"\n"
        ),
    )
    .unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    daemon.wait_for_line("no local e-stop", Duration::from_secs(10));
    daemon.wait_for_line(
        &format!("metrics on http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(10),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let health = loop {
        // 503: no autopilot here, so the health is `failed` whatever the socket.
        let (code, body) = http_get(port, "/health");
        assert!(code == 200 || code == 503, "{code} {body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        if health["alerts"]["local_estop_unavailable"] == true {
            break health;
        }
        assert!(std::time::Instant::now() < deadline, "no alert: {health}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let raised = health["recent_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert"] == "local_estop_unavailable")
        .unwrap_or_else(|| panic!("{health}"));
    let message = raised["message"].as_str().unwrap();
    assert!(
        message.contains("/proc/no-such-place") && message.contains("estop.socket_path"),
        "{message}"
    );
    assert!(
        health["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("no local e-stop socket")),
        "{health}"
    );
    // The journal has it once, as the alert.
    daemon.wait_for_line("alert: no local e-stop", Duration::from_secs(5));
}
