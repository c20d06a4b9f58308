//! The simulator's mission protocol against pymavlink's `mavwp` (`tests/peers/mission_mavwp.py`):
//! a mission uploaded and downloaded in both dialects (ArduPilot's home at index 0 and its
//! legacy `MISSION_REQUEST`, PX4's `MISSION_REQUEST_INT` and no home slot).

use std::process::Command;
use std::time::Duration;

use crate::support::{self, Proc};

fn round_trip(autopilot: &str, request: &str) {
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
    let mut command = Command::new(support::python());
    command.arg(support::peer("mission_mavwp.py")).args([
        "--port",
        &port.to_string(),
        "--autopilot",
        autopilot,
    ]);
    let mut peer = Proc::spawn(&format!("mission_mavwp {autopilot}"), command);
    let code = peer.wait_exit(Duration::from_secs(60));
    let output = peer.output();
    assert_eq!(code, Some(0), "mavwp round trip failed:\n{output}");
    assert!(output.contains("mission round trip ok"), "{output}");
    // Each firmware asks for items with its own message.
    assert!(output.contains(request), "{output}");
    sim.signal("TERM");
    assert_eq!(
        sim.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        sim.output()
    );
}

#[test]
fn sim_mission_mavwp_round_trip_ardupilot_mission_item_protocol_cpp() {
    round_trip("ardupilot", "requests: ['MISSION_REQUEST']");
}

#[test]
fn sim_mission_mavwp_round_trip_px4_mavlink_mission_cpp() {
    round_trip("px4", "requests: ['MISSION_REQUEST_INT']");
}
