//! pymavlink acting as the autopilot: the daemon and the probe must find it, and every
//! frame they send must parse in an independent MAVLink implementation.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Proc, binary, flight_companion, peer, python};

/// Starts the pymavlink autopilot for `seconds`; returns it and its port.
fn start_peer(seconds: f64) -> (Proc, u16) {
    let mut command = Command::new(python());
    command
        .arg(peer("autopilot_peer.py"))
        .args(["--seconds", &seconds.to_string()]);
    let mut peer = Proc::spawn("pymavlink autopilot", command);
    let line = peer.wait_for_line("peer: listening on", Duration::from_secs(20));
    let port = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    (peer, port)
}

fn summary(peer: &mut Proc) -> Value {
    let line = peer.wait_for_line("peer: summary", Duration::from_secs(30));
    serde_json::from_str(line.split_once("peer: summary ").unwrap().1).unwrap()
}

#[test]
fn probe_finds_a_pymavlink_autopilot_and_reports_its_state_as_json() {
    let (mut peer, port) = start_peer(6.0);
    let output = Command::new(binary())
        .args([
            "probe",
            "--link",
            &format!("tcpout:127.0.0.1:{port}"),
            "--json",
            "--seconds",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "probe failed: {stdout}\n{stderr}");
    let state: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(state["autopilot"]["autopilot"], "ardupilot", "{state}");
    assert_eq!(state["autopilot"]["system_id"], 1);
    assert_eq!(
        state["autopilot"]["simulated"], false,
        "pymavlink sends no SIMSTATE"
    );
    assert_eq!(state["mode"]["flight_mode"], "LOITER", "{state}");
    let lat = state["position"]["latitude_deg"].as_f64().unwrap();
    assert!((lat - 47.397742).abs() < 1e-6, "{state}");
    assert_eq!(state["position"]["freshness"]["stale"], false);
    assert!(
        (state["battery"]["voltage_v"].as_f64().unwrap() - 12.6).abs() < 1e-6,
        "{state}"
    );
    assert_eq!(state["battery"]["remaining_percent"], 87.0);
    assert_eq!(state["gps"]["satellites_visible"], 12);
    assert_eq!(state["link"]["crc_errors"], 0);
    let seen = summary(&mut peer);
    assert_eq!(
        seen["bad_frames"], 0,
        "every frame the probe sent parses: {seen}"
    );
    assert_eq!(seen["receive_errors"], 0, "{seen}");
}

#[test]
fn probe_without_an_autopilot_says_so_and_exits_non_zero() {
    let port = crate::support::free_tcp_port();
    let output = Command::new(binary())
        .args([
            "probe",
            "--link",
            &format!("tcpout:127.0.0.1:{port}"),
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no autopilot answered"), "{stderr}");
    assert!(
        stderr.contains("not open"),
        "the link never opened: {stderr}"
    );
}

#[test]
fn daemon_heartbeats_as_onboard_controller_and_requests_telemetry() {
    let (mut peer, port) = start_peer(5.0);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!("[vehicle]\nlink = \"tcpout:127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    let seen = summary(&mut peer);
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(2)),
        Some(0),
        "{}",
        daemon.output()
    );

    assert_eq!(
        seen["bad_frames"], 0,
        "every frame the daemon sent parses in pymavlink: {seen}"
    );
    assert_eq!(seen["receive_errors"], 0, "{seen}");
    // MAV_TYPE_ONBOARD_CONTROLLER = 18, MAV_AUTOPILOT_INVALID = 8, from (1, 191).
    assert_eq!(
        seen["heartbeats_from"],
        serde_json::json!([[1, 191, 18, 8]]),
        "{seen}"
    );
    let times: Vec<f64> = seen["heartbeat_times_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert!(times.len() >= 3, "about 1 Hz over the run: {times:?}");
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (0.5..=1.5).contains(&gap),
            "heartbeat gaps near 1 s: {times:?}"
        );
    }
    // MAV_CMD_SET_MESSAGE_INTERVAL = 511: telemetry asked for, GLOBAL_POSITION_INT (33) among it.
    let intervals: Vec<f64> = seen["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["command"] == 511)
        .map(|c| c["param1"].as_f64().unwrap())
        .collect();
    assert!(
        intervals.contains(&33.0),
        "SET_MESSAGE_INTERVAL for GLOBAL_POSITION_INT: {seen}"
    );
    let output = daemon.output();
    assert!(output.contains("autopilot found"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}
