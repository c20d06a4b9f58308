//! Independent clients against the real daemon's MCP server on a real mTLS Mosquitto:
//! the spec-only paho client (every message validated against the official MCP types), the
//! official MCP SDK through `flight-companion ground`, and the bridge's offline/online
//! handling when the daemon is killed and restarted.
//!
//! The autopilot is `flight-companion sim` on an ephemeral port, so the daemon's `get_status`
//! reports a live vehicle.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::ground_bridge::{Bridge, WAIT};
use crate::support::broker::{Broker, s};
use crate::support::{Proc, binary, flight_companion, peer, python};

/// `flight-companion sim` on an ephemeral port; returns it and the port it printed.
fn autopilot() -> (Proc, u16) {
    let mut sim = flight_companion(
        "sim",
        &["sim", "--link", "tcpin:127.0.0.1:0", "--ekf-ready-s", "0"],
    );
    let line = sim.wait_for_line("sim: serving tcpin:127.0.0.1:", WAIT);
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (sim, port)
}

/// dev-setup's drone.toml with the vehicle link pointed at `port` (same directory, so the
/// relative certificate paths still hold).
fn drone_config(broker: &Broker, port: u16) -> String {
    let text = std::fs::read_to_string(broker.dev.path("drone.toml")).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("link = ") {
                format!("link = \"tcpout:127.0.0.1:{port}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = broker.dev.path("drone-it.toml");
    std::fs::write(&path, text).unwrap();
    s(&path).to_owned()
}

fn daemon(config: &str) -> Proc {
    let mut proc = flight_companion("daemon", &["run", "--config", config]);
    proc.wait_for_line("flight-companion ready", WAIT);
    proc
}

fn run_peer(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(python());
    command.arg(peer(name)).args(args);
    let mut proc = Proc::spawn(name, command);
    let code = proc.wait_exit(Duration::from_secs(90));
    (code, proc.output())
}

#[test]
fn mcp_interop_spec_client_checks_every_answer_of_the_daemon() {
    let broker = Broker::start("interop-spec");
    let (_autopilot, port) = autopilot();
    let mut daemon = daemon(&drone_config(&broker, port));
    let (code, output) = run_peer(
        "mcp_spec_client.py",
        &["--config", s(&broker.dev.path("ground.toml"))],
    );
    assert_eq!(
        code,
        Some(0),
        "spec client failed:\n{output}\n--- daemon:\n{}",
        daemon.output()
    );
    for check in [
        "ok: discovered drone",
        "ok: initialize on the control topic",
        "ok: tools/call get_status",
        "notifications/resources/updated on the capability topic",
        "ok: invalid JSON -> -32700",
        "ok: a JSON-RPC batch -> -32600",
        "ok: unknown method -> -32601",
        "ok: tools/call with wrong params -> -32602",
        "ok: oversize payload",
        "ok: a message on an unknown session's RPC topic -> ignored",
        "ok: all checks passed",
    ] {
        assert!(output.contains(check), "missing {check:?} in:\n{output}");
    }
}

#[test]
fn mcp_interop_official_sdk_through_the_bridge_to_the_daemon() {
    let broker = Broker::start("interop-sdk");
    let (_autopilot, port) = autopilot();
    let mut daemon = daemon(&drone_config(&broker, port));
    let (code, output) = run_peer(
        "mcp_sdk_client.py",
        &[s(&binary()), s(&broker.dev.path("ground.toml"))],
    );
    assert_eq!(
        code,
        Some(0),
        "SDK client failed:\n{output}\n--- daemon:\n{}",
        daemon.output()
    );
    assert!(output.contains("ok: all checks passed"), "{output}");
}

#[test]
fn mcp_interop_bridge_reports_the_daemon_killed_and_restarted() {
    let broker = Broker::start("interop-offline");
    let (_autopilot, port) = autopilot();
    let config = drone_config(&broker, port);
    let first = daemon(&config);
    let mut bridge = Bridge::start(&broker, &[]);
    let init = bridge.initialize();
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    bridge.send(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_status","arguments":{}}}));
    let status = bridge.expect("get_status", |m| m["id"] == 1);
    assert!(status["result"].is_object(), "{status}");

    first.signal("KILL");
    let warning = bridge.expect("offline warning", |m| {
        m["method"] == "notifications/message" && m["params"]["level"] == "warning"
    });
    let text = warning["params"]["data"].as_str().unwrap_or_default();
    assert!(text.contains("went offline"), "{warning}");

    let _second = daemon(&config);
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
    bridge.send(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_status","arguments":{}}}));
    let status = bridge.expect("get_status after the restart", |m| m["id"] == 2);
    assert!(status["result"].is_object(), "{status}");
}
