//! The daemon and the probe against the built-in simulator, over TCP and over a serial
//! pty pair whose cable is pulled and plugged back.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Proc, flight_companion};

/// Starts `flight-companion sim` with extra arguments; returns it and its first endpoint.
pub(crate) fn start_sim(args: &[&str]) -> (Proc, String) {
    let mut all = vec!["sim"];
    all.extend_from_slice(args);
    // Start-up is not what these tests are about: the estimator trusts its position at once.
    if !args.contains(&"--ekf-ready-s") {
        all.extend(["--ekf-ready-s", "0"]);
    }
    let mut sim = flight_companion("sim", &all);
    let line = sim.wait_for_line("sim: serving ", Duration::from_secs(10));
    let endpoint = line
        .split_once("sim: serving ")
        .unwrap()
        .1
        .trim()
        .to_owned();
    (sim, endpoint)
}

fn probe_json(link: &str) -> Value {
    let output = std::process::Command::new(crate::support::binary())
        .args(["probe", "--link", link, "--json", "--seconds", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn probe_tells_a_simulated_ardupilot_from_what_it_reports() {
    let (_sim, endpoint) = start_sim(&[
        "--link",
        "tcpin:127.0.0.1:0",
        "--home",
        "-35.363261,149.165230,584",
    ]);
    let state = probe_json(&endpoint.replace("tcpin", "tcpout"));
    assert_eq!(state["autopilot"]["autopilot"], "ardupilot", "{state}");
    assert_eq!(
        state["autopilot"]["simulated"], true,
        "SIMSTATE seen: {state}"
    );
    assert_eq!(state["mode"]["flight_mode"], "STABILIZE");
    assert_eq!(state["mode"]["landed_state"], "on_ground");
    assert_eq!(state["mode"]["armed"], false);
    let lat = state["position"]["latitude_deg"].as_f64().unwrap();
    assert!((lat - -35.363261).abs() < 1e-5, "--home honoured: {state}");
    assert_eq!(state["gps"]["fix_type"], "3d_fix");
    assert_eq!(state["estimator"]["position_valid"], true);
}

#[test]
fn probe_decodes_px4_modes_over_udp() {
    let (_sim, endpoint) = start_sim(&["--autopilot", "px4", "--link", "udpin:127.0.0.1:0"]);
    let state = probe_json(&endpoint.replace("udpin", "udpout"));
    assert_eq!(state["autopilot"]["autopilot"], "px4", "{state}");
    assert_eq!(
        state["autopilot"]["simulated"], true,
        "SIM_STATE seen: {state}"
    );
    // PX4 SIH boots in Hold (/work/sitl/NOTES.md §6).
    assert_eq!(state["mode"]["flight_mode"], "AUTO.LOITER", "{state}");
}

#[test]
fn daemon_over_a_pty_reconnects_when_the_cable_is_pulled_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut socat = crate::link_pty::start_socat(dir.path());
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let (mut sim, _) = start_sim(&["--link", &format!("serial:{}:115200", a.display())]);
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nlink = \"serial:{}:115200\"\nreconnect_backoff_ms_min = 50\nreconnect_backoff_ms_max = 200\n",
            b.display()
        ),
    )
    .unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    daemon.wait_for_line("autopilot found: Ardupilot", Duration::from_secs(10));
    daemon.wait_for_line("telemetry requested", Duration::from_secs(10));
    // "Lost" below needs the simulator to have heard the companion first.
    sim.wait_for_line("sim: companion heartbeat seen", Duration::from_secs(10));

    // Pull the cable mid-stream: both ends of the pty pair vanish.
    socat.signal("KILL");
    let _ = socat.wait_exit(Duration::from_secs(2));
    daemon.wait_for_line("autopilot link down", Duration::from_secs(5));
    // The simulator notices the silent companion (3 s of simulated time).
    sim.wait_for_line("sim: companion heartbeat lost", Duration::from_secs(10));

    // Plug it back: same device names, new ptys.
    let _socat = crate::link_pty::start_socat(dir.path());
    daemon.wait_for_line("autopilot link up", Duration::from_secs(10));
    sim.wait_for_line("sim: companion heartbeat back", Duration::from_secs(10));
    daemon.wait_for_line("autopilot found: Ardupilot", Duration::from_secs(10));

    let started = std::time::Instant::now();
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(2)),
        Some(0),
        "{}",
        daemon.output()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let output = daemon.output();
    assert!(!output.contains("panicked"), "{output}");
}
