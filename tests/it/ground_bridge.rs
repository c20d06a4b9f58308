//! `flight-companion ground` between a stdio MCP client and a drone on a real mTLS Mosquitto.
//!
//! The drone here is `tests/peers/mcp_fake_drone.py`, an MCP-over-MQTT server written from
//! the transport spec with paho-mqtt (not our code), so these tests exercise the bridge alone;
//! `mcp_interop` runs the same clients against the real daemon.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::broker::{Broker, DevDir, s};
use crate::support::{Proc, binary, free_tcp_port, peer, python};

pub(crate) const WAIT: Duration = Duration::from_secs(15);

fn fake_drone(broker: &Broker) -> Proc {
    let mut command = Command::new(python());
    command
        .arg(peer("mcp_fake_drone.py"))
        .args(["--config", s(&broker.dev.path("drone.toml"))]);
    let mut proc = Proc::spawn("fake drone", command);
    proc.wait_for_line("fake drone: online", WAIT);
    proc
}

/// The bridge with its stdin and stdout in the test's hands; stderr collected for failures.
pub(crate) struct Bridge {
    child: Child,
    stdin: ChildStdin,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Bridge {
    pub(crate) fn start(broker: &Broker, extra: &[&str]) -> Bridge {
        let mut child = Command::new(binary())
            .args(["ground", "--config", s(&broker.dev.path("ground.toml"))])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flight-companion ground");
        let stdin = child.stdin.take().unwrap();
        let lines = |stream: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Bridge {
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    pub(crate) fn send(&mut self, message: Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn logs(&mut self) -> String {
        while let Ok(l) = self.stderr.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// The next stdout message satisfying `want`; every stdout line must be JSON-RPC.
    pub(crate) fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.stdout.recv_timeout(left) else {
                panic!(
                    "no {what} on stdout within {WAIT:?}; stderr:\n{}",
                    self.logs()
                );
            };
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC on stdout: {line}");
            if want(&message) {
                return message;
            }
        }
    }

    pub(crate) fn initialize(&mut self) -> Value {
        self.send(
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},
            "clientInfo":{"name":"it","version":"1"}}}),
        );
        let answer = self.expect("initialize answer", |m| m["id"] == 0);
        self.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        answer
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ground_official_sdk_client_lists_and_calls_through_the_bridge() {
    let broker = Broker::start("ground-sdk");
    let _drone = fake_drone(&broker);
    let mut command = Command::new(python());
    command
        .arg(peer("mcp_sdk_client.py"))
        .args([s(&binary()), s(&broker.dev.path("ground.toml"))]);
    let mut client = Proc::spawn("mcp_sdk_client.py", command);
    let code = client.wait_exit(Duration::from_secs(60));
    let output = client.output();
    assert_eq!(code, Some(0), "the SDK client failed:\n{output}");
    for check in [
        "ok: initialize through the bridge",
        "ok: tools/call get_status",
        "notifications/resources/updated relayed",
        "ok: all checks passed",
    ] {
        assert!(output.contains(check), "missing {check:?} in:\n{output}");
    }
}

#[test]
fn ground_reports_the_drone_going_offline_and_reinitializes_when_it_returns() {
    let broker = Broker::start("ground-offline");
    let mut drone = fake_drone(&broker);
    let mut bridge = Bridge::start(&broker, &[]);
    let init = bridge.initialize();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");

    bridge.send(json!({"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"vehicle://status"}}));
    bridge.expect("subscribe answer", |m| m["id"] == 1);
    // A call the drone never answers, in flight when the drone dies.
    bridge.send(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","arguments":{}}}));
    drone.wait_for_line("holding tools/call slow", WAIT);
    drone.signal("KILL");
    let failed = bridge.expect("error for the call in flight", |m| m["id"] == 2);
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("drone flight-companion/drone went offline"),
        "{failed}"
    );
    let warning = bridge.expect("offline warning", |m| {
        m["method"] == "notifications/message" && m["params"]["level"] == "warning"
    });
    assert!(
        warning["params"]["data"]
            .as_str()
            .unwrap_or_default()
            .contains("went offline"),
        "{warning}"
    );
    bridge.send(json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}));
    let refused = bridge.expect("refusal while offline", |m| m["id"] == 3);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("comes back"),
        "{refused}"
    );

    let _drone = fake_drone(&broker);
    let back = bridge.expect("back-online notice", |m| {
        m["method"] == "notifications/message" && m["params"]["level"] == "info"
    });
    assert!(
        back["params"]["data"]
            .as_str()
            .unwrap_or_default()
            .contains("back online"),
        "{back}"
    );
    // The subscription was renewed on the new session: updates flow again.
    bridge.expect("resource update after the return", |m| {
        m["method"] == "notifications/resources/updated"
    });
    bridge.send(json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"get_status","arguments":{}}}));
    let status = bridge.expect("get_status after the return", |m| m["id"] == 4);
    assert!(
        status["result"]["structuredContent"].is_object(),
        "{status}"
    );
}

#[test]
fn ground_without_a_drone_answers_initialize_with_a_clear_error() {
    let broker = Broker::start("ground-none");
    let mut bridge = Bridge::start(&broker, &["--server-name", "fleet/missing"]);
    bridge.send(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}));
    // discovery_timeout_ms defaults to 10 s.
    let answer = bridge.expect("initialize error", |m| m["id"] == 0);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no drone named fleet/missing is online"),
        "{answer}"
    );
}

#[test]
fn ground_refuses_a_bad_command_line_before_connecting() {
    let dev = DevDir::create("ground-args", free_tcp_port());
    let output = Command::new(binary())
        .args(["ground", "--config", s(&dev.path("ground.toml"))])
        .args(["--client-id", "a/b"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ground.client_id"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing but JSON-RPC on stdout");
}
