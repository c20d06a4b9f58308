//! End to end through the simulated bridge: `flight-companion bridge-sim` (the MCU's own
//! logic) on one end of a socat pty pair, the daemon on the other.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flight_companion::link::MavMessage;
use flight_companion::link::dialect::*;
use flight_companion::link::frame::FrameEncoder;

use crate::link_pty::start_socat;
use crate::support::{self, Proc};

const WAIT: Duration = Duration::from_secs(20);

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "fc-bridge-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bridge_sim(dir: &Path, extra: &[&str]) -> Proc {
    let mut command = Command::new(support::binary());
    command
        .args(["bridge-sim", "--serial"])
        .arg(dir.join("a"))
        .args(extra);
    let mut sim = Proc::spawn_with_stdin("bridge-sim", command);
    sim.wait_for_line("bridge-sim: ready on", WAIT);
    sim
}

fn tell(sim: &mut Proc, command: &str) {
    let stdin = sim.child.stdin.as_mut().expect("stdin piped");
    writeln!(stdin, "{command}").unwrap();
    stdin.flush().unwrap();
}

/// The daemon with a bridge on `DIR/b` and the autopilot link `vehicle_link`.
fn daemon(dir: &Path, vehicle_link: &str, required: bool) -> Proc {
    let config = dir.join("drone.toml");
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nlink = \"{vehicle_link}\"\n\n[bridge]\nenabled = true\nserial = \"{}\"\nrequired = {required}\nstartup_timeout_ms = 3000\n",
            dir.join("b").display()
        ),
    )
    .unwrap();
    support::flight_companion("daemon", &["run", "--config", config.to_str().unwrap()])
}

#[test]
fn bridge_switch_press_reaches_the_daemon_as_an_estop_event() {
    let dir = Dir::new("press");
    let _socat = start_socat(&dir.0);
    let mut sim = bridge_sim(&dir.0, &[]);
    let mut daemon = daemon(&dir.0, "udpin:127.0.0.1:0", false);
    daemon.wait_for_line("bridge connected: firmware", WAIT);
    sim.wait_for_line("bridge-sim: companion hello: protocol v1", WAIT);

    tell(&mut sim, "press");
    sim.wait_for_line("bridge-sim: sending estop-asserted source=switch", WAIT);
    let sent = Instant::now();
    daemon.wait_for_line("bridge e-stop asserted: source=switch", WAIT);
    let latency = sent.elapsed();
    println!("bridge e2e: press frame to daemon e-stop event: {latency:?}");
    // Acknowledged: the daemon is acting, so the MCU leaves its output released.
    std::thread::sleep(Duration::from_millis(800));
    let output = sim.output();
    assert!(!output.contains("output asserted"), "{output}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
}

#[test]
fn bridge_sigstop_of_the_daemon_while_armed_asserts_the_mcu_output() {
    let dir = Dir::new("sigstop");
    let _socat = start_socat(&dir.0);
    let mut autopilot = support::flight_companion(
        "sim",
        // Start-up is not what this is about: the estimator trusts its position at once.
        &[
            "sim",
            "--link",
            "tcpin:127.0.0.1:0",
            "--link",
            "tcpin:127.0.0.1:0",
            "--ekf-ready-s",
            "0",
        ],
    );
    let port = |line: String| -> u16 { line.rsplit(':').next().unwrap().trim().parse().unwrap() };
    let daemon_port = port(autopilot.wait_for_line("sim: serving tcpin:", WAIT));
    let test_port = port(autopilot.wait_for_line("sim: serving tcpin:", WAIT));
    let mut sim = bridge_sim(&dir.0, &["--watchdog-ms", "500"]);
    let mut daemon = daemon(&dir.0, &format!("tcpout:127.0.0.1:{daemon_port}"), false);
    daemon.wait_for_line("bridge connected: firmware", WAIT);
    daemon.wait_for_line("autopilot found", WAIT);

    // Arm through the simulator's second link, forced (no GPS checks), as a GCS would.
    let mut gcs = TcpStream::connect(("127.0.0.1", test_port)).unwrap();
    let mut encoder = FrameEncoder::new(255, 190);
    let arm = MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
        param1: 1.0,
        param2: 2989.0,
        param3: 0.0,
        param4: 0.0,
        param5: 0.0,
        param6: 0.0,
        param7: 0.0,
        command: MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
        target_system: 1,
        target_component: 1,
        confirmation: 0,
    });
    gcs.write_all(&encoder.encode(&arm)).unwrap();
    autopilot.wait_for_line("sim: armed", WAIT);
    sim.wait_for_line("bridge-sim: companion says armed", WAIT);

    daemon.signal("STOP");
    let stopped = Instant::now();
    let line = sim.wait_for_line("bridge-sim: output asserted (companion-silent)", WAIT);
    let after = stopped.elapsed();
    daemon.signal("CONT");
    println!("bridge e2e: SIGSTOP to MCU output asserted: {after:?} (watchdog 500 ms): {line}");
    // The last heartbeat left at most 100 ms before the stop: 400..=500 ms, plus scheduling.
    assert!(after >= Duration::from_millis(350), "{after:?}");
    assert!(after < Duration::from_secs(3), "{after:?}");
}

#[test]
fn bridge_version_mismatch_is_refused_with_both_versions() {
    let dir = Dir::new("mismatch");
    let _socat = start_socat(&dir.0);
    let mut sim = bridge_sim(&dir.0, &["--protocol-version", "99"]);
    let mut daemon = daemon(&dir.0, "udpin:127.0.0.1:0", true);
    let code = daemon.wait_exit(WAIT);
    let output = daemon.output();
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("bridge protocol mismatch: daemon speaks protocol v1")
            && output.contains("speaks protocol v99")
            && output.contains("bridge.required = true"),
        "{output}"
    );
    sim.wait_for_line("bridge-sim: companion hello: protocol v1", WAIT);
    let sim_output = sim.output();
    assert!(!sim_output.contains("output asserted"), "{sim_output}");
}

#[test]
fn bridge_missing_is_reported_not_fatal_unless_required() {
    let dir = Dir::new("missing");
    let mut daemon = daemon(&dir.0, "udpin:127.0.0.1:0", false);
    daemon.wait_for_line("bridge not connected: cannot open", WAIT);
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon must keep running"
    );
    daemon.signal("TERM");
    let code = daemon.wait_exit(WAIT);
    let output = daemon.output();
    assert_eq!(code, Some(0), "{output}");

    let mut required = self::daemon(&dir.0, "udpin:127.0.0.1:0", true);
    let code = required.wait_exit(WAIT);
    let output = required.output();
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("bridge.required = true but no compatible bridge"),
        "{output}"
    );
}

#[test]
fn bridge_switch_press_brakes_a_flying_vehicle() {
    let dir = Dir::new("press-flying");
    let _socat = start_socat(&dir.0);
    let mut switch = bridge_sim(&dir.0, &[]);
    let (mut autopilot, first, harness) = crate::estop::start_sim_two_links();
    let mut daemon = daemon(&dir.0, &first.replace("tcpin", "tcpout"), false);
    daemon.wait_for_line("bridge connected: firmware", WAIT);
    daemon.wait_for_line("autopilot found: Ardupilot", WAIT);
    crate::estop::take_off(&harness);

    tell(&mut switch, "press");
    switch.wait_for_line("bridge-sim: sending estop-asserted source=switch", WAIT);
    // The stop reaches the autopilot on the wire, and the heartbeat confirms the hold.
    autopilot.wait_for_line("sim: mode BRAKE", WAIT);
    daemon.wait_for_line("hold confirmed", WAIT);
    let output = daemon.output();
    assert!(output.contains("hardware e-stop"), "{output}");
}
