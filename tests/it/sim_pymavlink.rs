//! The simulator against an independent MAVLink implementation: pymavlink as a ground
//! station (`tests/peers/gcs_flight.py`), over TCP on an ephemeral loopback port.

use std::process::Command;
use std::time::Duration;

use crate::support::{self, Proc};

/// Starts `flight-companion sim` on port 0 and returns it with the port it bound.
fn start_sim(autopilot: &str) -> (Proc, u16) {
    let mut sim = support::flight_companion(
        &format!("sim-{autopilot}"),
        &[
            "sim",
            "--link",
            "tcpin:127.0.0.1:0",
            "--autopilot",
            autopilot,
            "--speedup",
            "10",
            // Start-up is not what this is about: the estimator trusts its position at once.
            "--ekf-ready-s",
            "0",
        ],
    );
    let line = sim.wait_for_line("sim: serving tcpin:127.0.0.1:", Duration::from_secs(20));
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert_ne!(port, 0, "{line}");
    (sim, port)
}

/// Runs the pymavlink ground station and asserts it succeeded.
fn gcs(autopilot: &str, scenario: &str, port: u16) -> String {
    let mut command = Command::new(support::python());
    command.arg(support::peer("gcs_flight.py")).args([
        "--port",
        &port.to_string(),
        "--autopilot",
        autopilot,
        "--scenario",
        scenario,
        "--timeout",
        "30",
    ]);
    let mut peer = Proc::spawn(&format!("gcs_flight {autopilot} {scenario}"), command);
    let code = peer.wait_exit(Duration::from_secs(90));
    let output = peer.output();
    assert_eq!(code, Some(0), "pymavlink ground station failed:\n{output}");
    output
}

fn stop(mut sim: Proc) -> String {
    sim.signal("TERM");
    let code = sim.wait_exit(Duration::from_secs(5));
    let output = sim.output();
    assert_eq!(code, Some(0), "sim did not exit cleanly:\n{output}");
    output
}

fn fly(autopilot: &str, modes: &[&str], after_disarm: Option<&str>) {
    let (mut sim, port) = start_sim(autopilot);
    let output = gcs(autopilot, "flight", port);
    assert!(output.contains("landed and disarmed"), "{output}");
    // The simulator saw it the same way, in order.
    for mode in modes {
        sim.wait_for_line(&format!("sim: mode {mode}"), Duration::from_secs(5));
    }
    sim.wait_for_line("sim: disarmed", Duration::from_secs(5));
    if let Some(mode) = after_disarm {
        sim.wait_for_line(&format!("sim: mode {mode}"), Duration::from_secs(5));
    }
    let log = stop(sim);
    assert!(
        log.contains("sim: command MAV_CMD_NAV_TAKEOFF from 255/190 -> MAV_RESULT_ACCEPTED"),
        "{log}"
    );
}

#[test]
fn sim_pymavlink_flies_ardupilot_guided_takeoff_and_land() {
    fly("ardupilot", &["GUIDED", "LAND"], None);
}

#[test]
fn sim_pymavlink_flies_px4_through_auto_takeoff_and_land() {
    // PX4 boots in Hold (AUTO.LOITER, so the ground station's switch to it changes nothing)
    // and returns to it when it disarms after landing (UserModeIntention::onDisarm).
    fly(
        "px4",
        &["AUTO.TAKEOFF", "AUTO.LOITER", "AUTO.LAND"],
        Some("AUTO.LOITER"),
    );
}

#[test]
fn sim_pymavlink_arming_without_gps_is_refused_with_the_reason() {
    for autopilot in ["ardupilot", "px4"] {
        let (mut sim, port) = start_sim(autopilot);
        let output = gcs(autopilot, "nogps", port);
        assert!(output.contains("arming refused"), "{output}");
        sim.wait_for_line(
            "sim: command MAV_CMD_COMPONENT_ARM_DISARM from 255/190 -> MAV_RESULT_",
            Duration::from_secs(5),
        );
        let log = stop(sim);
        assert!(!log.contains("sim: armed"), "{log}");
        if autopilot == "ardupilot" {
            assert!(log.contains("sim: statustext PreArm: Need 3D Fix"), "{log}");
        }
    }
}
