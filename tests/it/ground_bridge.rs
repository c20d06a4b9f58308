//! The ground bridge (`flight-companion ground`, and the `flight-companion-ground` binary)
//! between a stdio MCP client and a drone on a real mTLS Mosquitto.
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
use crate::support::{Proc, binary, free_tcp_port, ground_binary, peer, python};

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) fn fake_drone(broker: &Broker) -> Proc {
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

/// dev-setup's ground.toml with `lines` added to its `[ground]` section, written beside it
/// as `name` (so its relative paths still hold).
pub(crate) fn ground_config_with(broker: &Broker, name: &str, lines: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(broker.dev.path("ground.toml")).unwrap();
    assert!(text.contains("\n[ground]\n"), "{text}");
    let text = text.replace("\n[ground]\n", &format!("\n[ground]\n{lines}\n"));
    let path = broker.dev.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

impl Bridge {
    pub(crate) fn start(broker: &Broker, extra: &[&str]) -> Bridge {
        let config = broker.dev.path("ground.toml");
        Bridge::start_with(&["--config", s(&config)], &[], extra)
    }

    /// The bridge with the given configuration arguments and environment.
    pub(crate) fn start_with(config: &[&str], env: &[(&str, &str)], extra: &[&str]) -> Bridge {
        let mut child = Command::new(binary())
            .arg("ground")
            .args(config)
            .args(extra)
            .envs(env.iter().copied())
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

    pub(crate) fn logs(&mut self) -> String {
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

    /// The next stdout message within `timeout`, if any.
    pub(crate) fn poll(&mut self, timeout: Duration) -> Option<Value> {
        let line = self.stdout.recv_timeout(timeout).ok()?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}")),
        )
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

// The ground station's own binary; `mcp_interop` runs the same client through
// `flight-companion ground` against the real daemon.
#[test]
fn ground_official_sdk_client_lists_and_calls_through_the_bridge() {
    let broker = Broker::start("ground-sdk");
    let _drone = fake_drone(&broker);
    let mut command = Command::new(python());
    command.arg(peer("mcp_sdk_client.py")).args([
        s(&ground_binary()),
        s(&broker.dev.path("ground.toml")),
        "--standalone",
    ]);
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
    let config_path = dev.path("ground.toml");
    let config = ["--config", s(&config_path)];
    let mut daemon_binary = Command::new(binary());
    daemon_binary.arg("ground").args(config);
    let mut own_binary = Command::new(ground_binary());
    own_binary.args(config);
    for mut command in [daemon_binary, own_binary] {
        let output = command.args(["--client-id", "a/b"]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{command:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("ground.client_id"), "{command:?}: {stderr}");
        assert!(output.stdout.is_empty(), "nothing but JSON-RPC on stdout");
    }
}

#[test]
fn ground_a_timeout_answers_the_client_and_sends_the_drone_nothing() {
    let broker = Broker::start("ground-idle");
    let mut drone = fake_drone(&broker);
    let config = ground_config_with(&broker, "ground-idle.toml", "call_idle_timeout_ms = 1000");
    let mut bridge = Bridge::start_with(&["--config", s(&config)], &[], &[]);
    bridge.initialize();
    // `slow` never answers and sends no progress: after 1 s of silence the bridge answers.
    bridge.send(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{}}}));
    drone.wait_for_line("holding tools/call slow", WAIT);
    let failed = bridge.expect("the timeout error", |m| m["id"] == 1);
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sent no progress for it for 1000 ms")
            && message.contains("Nothing was sent to the drone"),
        "{failed}"
    );
    // The drone heard nothing after the call: no cancel, which would make a vehicle hold.
    bridge.send(json!({"jsonrpc":"2.0","id":2,"method":"ping"}));
    bridge.expect("ping after the timeout", |m| m["id"] == 2);
    std::thread::sleep(Duration::from_millis(500));
    let heard = drone.output();
    assert!(
        heard.contains("fake drone: notification notifications/initialized"),
        "the fake drone prints the notifications it gets:\n{heard}"
    );
    assert!(!heard.contains("notifications/cancelled"), "{heard}");
}

#[test]
fn ground_two_bridges_with_one_client_id_get_a_clear_error_and_the_config_comes_from_the_environment()
 {
    let broker = Broker::start("ground-twins");
    let _drone = fake_drone(&broker);
    // Both on dev-setup's ground certificate: the broker makes its name (`ground-1`) the
    // client id of both, whatever they ask for.
    let mut first = Bridge::start(&broker, &[]);
    first.initialize();
    // The second one takes its configuration from the environment, as under the MCP
    // Inspector, whose own --config would swallow ours.
    let config = broker.dev.path("ground.toml");
    let mut second =
        Bridge::start_with(&[], &[("FLIGHT_COMPANION_GROUND_CONFIG", s(&config))], &[]);
    second.send(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"1"}}}));
    // One of them stops with the reason: the older one when the broker says "session taken
    // over" (MQTT 5 DISCONNECT 0x8E, Mosquitto >= 2.0.18, EMQX), otherwise the one that
    // first sees the pattern of quick drops (Debian's Mosquitto 2.0.11 closes silently).
    let deadline = Instant::now() + WAIT;
    let mut second_init = None;
    let first_lost = loop {
        assert!(
            Instant::now() < deadline,
            "neither bridge reported the shared client id:\n--- first:\n{}\n--- second:\n{}",
            first.logs(),
            second.logs()
        );
        if let Some(m) = first.poll(Duration::from_millis(50))
            && m["method"] == "notifications/message"
            && m["params"]["level"] == "error"
        {
            break true;
        }
        if let Some(m) = second.poll(Duration::from_millis(50))
            && m["id"] == 0
        {
            if m.get("error").is_some() {
                second_init = Some(m);
                break false;
            }
            second_init = Some(m);
        }
    };
    eprintln!(
        "the {} bridge stopped",
        if first_lost {
            "first (older)"
        } else {
            "second (newer)"
        }
    );
    let (loser, winner) = if first_lost {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    loser.send(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    let refused = loser.expect("the refusal after the takeover", |m| m["id"] == 1);
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("client id `ground-1`")
            && message.contains("cert issue")
            && !message.contains("no drone is online"),
        "{refused}"
    );
    if !first_lost {
        let init = second_init.unwrap();
        assert!(
            init["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("client id `ground-1`"),
            "{init}"
        );
    } else if second_init.is_none() {
        let init = winner.expect("the second bridge's initialize", |m| m["id"] == 0);
        assert!(init["result"]["serverInfo"].is_object(), "{init}");
    }
    // The other one works: the loser no longer takes the id back.
    let deadline = Instant::now() + WAIT;
    let mut id = 10;
    loop {
        id += 1;
        winner.send(json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"get_status","arguments":{}}}));
        let answer = winner.expect("get_status on the other bridge", |m| m["id"] == id);
        if answer["result"]["structuredContent"].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}\n{}", winner.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(loser.logs().contains("client id `ground-1`"));
}
