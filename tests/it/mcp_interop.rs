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

use crate::ground_bridge::{Bridge, WAIT, ground_config_with};
use crate::support::broker::{Broker, s};
use crate::support::{Proc, binary, flight_companion, peer, python};

/// `flight-companion sim` on an ephemeral port; returns it and the port it printed.
fn autopilot() -> (Proc, u16) {
    autopilot_with(&[])
}

/// The same with more simulator options (`--speedup N`).
fn autopilot_with(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["sim", "--link", "tcpin:127.0.0.1:0", "--ekf-ready-s", "0"];
    args.extend_from_slice(extra);
    let mut sim = flight_companion("sim", &args);
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
        // Issue 14: the broker binds RPC topics to the certificate identity, so another
        // client's topic can no longer even be read or written (it used to be ignored).
        "ok: another client's RPC topic -> neither readable nor answered",
        "ok: initialize from client ids with '/', '+', '#' -> refused",
        "ok: no camera tools without a camera",
        "ok: annotations: 11 motion tools destructive and open-world",
        "ok: unknown resource -> -32002",
        "ok: unknown tool -> -32602, listing only the tools this caller may call",
        "ok: 2024-11-05: initialize, tools/list",
        "ok: 2025-03-26: initialize, tools/list",
        "ok: 2025-06-18: initialize, tools/list",
        "ok: 2025-11-25: initialize, tools/list",
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

/// Issue 14's acceptance: through the ground bridge, a 90 s goto with progress completes.
/// The bridge used to cut every call at a fixed 60 s and then cancel it (the vehicle held).
/// Here the bridge's limit is 3 s of silence (`call_idle_timeout_ms`), and the simulator
/// runs 5 times faster than the wall clock, so the 108 m goto at 1.2 m/s (90 s simulated)
/// lasts about 18 s of wall time: six times the bridge's limit, kept alive by the progress
/// the daemon reports every second.
#[test]
fn mcp_interop_a_long_goto_through_the_bridge_outlives_its_idle_timeout_and_completes() {
    const IDLE_MS: u64 = 3_000;
    let broker = Broker::start("interop-long-goto");
    let (mut sim, port) = autopilot_with(&["--speedup", "5"]);
    let mut daemon = daemon(&drone_config(&broker, port));
    let config = ground_config_with(
        &broker,
        "ground-short-idle.toml",
        &format!("call_idle_timeout_ms = {IDLE_MS}"),
    );
    let mut bridge = Bridge::start_with(&["--config", s(&config)], &[], &[]);
    bridge.initialize();
    let call = |bridge: &mut Bridge, id: u64, name: &str, arguments: serde_json::Value| {
        bridge.send(json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":name,"arguments":arguments}}));
        bridge.expect(name, |m| m["id"] == id)
    };
    let control = call(&mut bridge, 1, "request_control", json!({}));
    assert!(control["result"].is_object(), "{control}");
    // The daemon builds its envelope once the vehicle has a home: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut id = 10;
    loop {
        id += 1;
        let envelope = call(&mut bridge, id, "get_envelope", json!({}));
        if envelope["result"]["isError"] != true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{envelope}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let takeoff = call(&mut bridge, 2, "takeoff", json!({"altitude_m": 5.0}));
    assert_eq!(
        takeoff["result"]["structuredContent"]["outcome"],
        "completed",
        "{takeoff}\n--- daemon:\n{}",
        daemon.output()
    );
    let home = &takeoff["result"]["structuredContent"]["vehicle"];
    let (lat, lon) = (
        home["latitude_deg"].as_f64().unwrap(),
        home["longitude_deg"].as_f64().unwrap(),
    );
    // 108 m north (1 degree of latitude is 111.2 km).
    let target_lat = lat + 108.0 / 111_195.0;
    let started = std::time::Instant::now();
    bridge.send(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{
        "name":"goto",
        "arguments":{"latitude_deg":target_lat,"longitude_deg":lon,"altitude_m":5.0,"speed_m_s":1.2},
        "_meta":{"progressToken":"long-goto"}}}));
    let mut progress = Vec::new();
    let answer = loop {
        let Some(m) = bridge.poll(Duration::from_secs(60)) else {
            panic!(
                "no answer to the goto within 60 s of silence\n--- bridge:\n{}\n--- daemon:\n{}",
                bridge.logs(),
                daemon.output()
            );
        };
        if m["method"] == "notifications/progress" && m["params"]["progressToken"] == "long-goto" {
            progress.push((started.elapsed(), m["params"]["message"].clone()));
        } else if m["id"] == 3 {
            break m;
        }
    };
    let elapsed = started.elapsed();
    let result = &answer["result"]["structuredContent"];
    assert_eq!(
        result["outcome"],
        "completed",
        "{answer}\n--- bridge:\n{}\n--- daemon:\n{}",
        bridge.logs(),
        daemon.output()
    );
    let arrived = result["vehicle"]["latitude_deg"].as_f64().unwrap();
    assert!(
        ((arrived - lat) * 111_195.0 - 108.0).abs() < 2.0,
        "arrived 108 m north: {answer}"
    );
    assert!(
        elapsed > Duration::from_millis(4 * IDLE_MS),
        "the call must outlast the bridge's idle limit several times: {elapsed:?}"
    );
    // Progress flowed the whole time: no gap near the limit.
    let mut last = Duration::ZERO;
    for (at, _) in &progress {
        assert!(
            *at - last < Duration::from_millis(IDLE_MS),
            "a progress gap of {:?}",
            *at - last
        );
        last = *at;
    }
    assert!(
        progress.len() as u64 >= elapsed.as_secs() / 2,
        "{progress:?}"
    );
    eprintln!(
        "goto of 108 m at 1.2 m/s: {elapsed:?} of wall time, {} progress notifications, idle limit {IDLE_MS} ms",
        progress.len()
    );
    // The simulator never saw a hold: nothing cancelled the goto.
    let flown = sim.output();
    assert!(flown.contains("sim: mode GUIDED"), "{flown}");
    assert!(!flown.contains("sim: mode BRAKE"), "{flown}");
}

/// Every tool through the official MCP Python SDK and the bridge, as an OPERATOR and as an
/// ADMIN, on a drone with a (synthetic) camera: each schema a valid JSON Schema 2020-12 with
/// standard formats only, each structured result valid against its tool's outputSchema
/// (`tests/peers/mcp_conformance.py`, with `jsonschema`).
#[test]
fn mcp_interop_every_tool_result_validates_against_its_output_schema() {
    let broker = Broker::start("interop-schemas");
    let (_autopilot, port) = autopilot_with(&["--speedup", "4"]);
    let config = drone_config(&broker, port);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[camera]\nenabled = true\nsource = \"synthetic\"\nimage_bytes_max = 120000\n\
         captures_dir = \"captures\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = daemon(&config);
    // The ADMIN's bridge on a certificate of its own: the broker binds a client id to the
    // certificate, so two bridges on one certificate would take the connection from each other.
    let (cert, key) = broker.dev.identity("ground-admin");
    let admin_config = broker.dev.path("ground-admin.toml");
    let ground = std::fs::read_to_string(broker.dev.path("ground.toml")).unwrap();
    std::fs::write(
        &admin_config,
        ground
            .replace("certs/ground.pem", &cert)
            .replace("certs/ground.key", &key),
    )
    .unwrap();
    let (code, output) = run_peer(
        "mcp_conformance.py",
        &[
            s(&binary()),
            s(&broker.dev.path("ground.toml")),
            "--admin-config",
            s(&admin_config),
            "--camera",
        ],
    );
    assert_eq!(
        code,
        Some(0),
        "conformance run failed:\n{output}\n--- daemon:\n{}",
        daemon.output()
    );
    for check in [
        "camera tools listed",
        "ok: goto -> error (structuredContent valid)",
        "ok: emergency_stop -> ok (structuredContent valid)",
        "ok: every listed tool called",
        "ok: all checks passed",
    ] {
        assert!(output.contains(check), "missing {check:?} in:\n{output}");
    }
}
