//! `flight-companion hil run` as a user runs it: a scenario that passes (through a simulator
//! fault injected by the relay and a daemon killed and restarted), one that fails
//! (reported with its seed, the failing step and the wire log), one the target cannot run
//! (skipped with the reason, never passed), and a scenario file with a mistake (refused
//! before anything starts). The starter suite itself runs in `tests/run`.

use std::path::Path;
use std::process::Command;

use crate::support;

/// Runs `hil run` from `out`'s parent with `--out` relative to it, as a user in a checkout
/// would (`--out target/hil`): every path the rig writes must still resolve.
fn hil(out: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(support::binary())
        .current_dir(out.parent().unwrap())
        .args(["hil", "run", "--out"])
        .arg(out.file_name().unwrap())
        .args(args)
        .output()
        .expect("run flight-companion hil");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn hil_runner_reports_pass_fail_and_skip_with_junit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let pass = write(
        dir.path(),
        "a-pass.toml",
        "name = \"hovering on the ground\"\nneeds = [\"flight\", \"sim_faults\"]\n\
         [[steps]]\ncall = \"get_status\"\nas = \"read_only\"\n\
         [[steps]]\nid = \"look\"\nwait = { armed = false, landed = true }\n\
         [[steps]]\nfault = \"gps_loss\"\n\
         [[steps]]\nsleep_s = 1.5\n\
         [[steps]]\ncall = \"request_control\"\n\
         [[steps]]\ncall = \"arm\"\nexpect = \"refused\"\nreason_contains = \"GPS is not good enough\"\n\
         [[steps]]\nfault = \"gps_restore\"\n\
         [[steps]]\nid = \"restart\"\nfault = \"daemon_restart\"\n\
         [[steps]]\nwait = { daemon_log = \"autopilot found\", since = \"restart\" }\nwithin_s = 20\n\
         [[steps]]\ncall = \"get_status\"\nas = \"read_only\"\nwithin_s = 20\n\
         [[checks]]\nwhitelist_conformance = true\n\
         [[checks]]\naudit_contains = \"request_control\"\n\
         [[checks]]\ndaemon_log = \"autopilot found\"\nafter = \"restart\"\n",
    );
    // The simulator fault reaches the autopilot through the relay (the daemon refuses to arm
    // without GPS), and a killed and restarted daemon answers the same session again.
    // The vehicle never arms by itself: the second scenario's wait must fail, with the wire log.
    let fail = write(
        dir.path(),
        "b-fail.toml",
        "name = \"waits for what never happens\"\n\
         [[steps]]\nwait = { armed = true }\nwithin_s = 1.5\n",
    );
    let skip = write(
        dir.path(),
        "c-skip.toml",
        "name = \"needs the simulator\"\nneeds = [\"sim_faults\"]\n\
         [[steps]]\nfault = \"gps_loss\"\n",
    );
    let (code, text) = hil(&out, &["--target", "sim", "--seed", "42", &pass, &fail]);
    assert_eq!(code, 1, "a failed scenario fails the run:\n{text}");
    assert!(text.contains("PASS  hovering on the ground"), "{text}");
    assert!(
        text.contains("FAIL  waits for what never happens"),
        "{text}"
    );
    assert!(text.contains("not reached within 1.5 s"), "{text}");
    assert!(
        text.contains(&format!("--seed 42 {fail}")),
        "the failure says how to reproduce it:\n{text}"
    );
    // The wire excerpt names frames both ways.
    assert!(text.contains("HEARTBEAT"), "{text}");
    assert!(text.contains("1 passed, 1 failed, 0 skipped"), "{text}");
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(
        junit.contains("tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\""),
        "{junit}"
    );
    assert!(
        junit.contains("<failure message=\"step 1 (wait for armed)"),
        "{junit}"
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("FAILED: waits for what never happens"),
        "{summary}"
    );
    // Every process of the rig has its log.
    for log in ["daemon.log", "sim.log", "mosquitto.log"] {
        assert!(
            out.join("scenarios/a-pass").join(log).exists(),
            "{log} of the passing scenario"
        );
    }

    // A bench autopilot has no simulator: skipped with the reason, and the run still fails
    // nothing (there is no device here, and none is opened for a skipped scenario).
    let (code, text) = hil(
        &out,
        &[
            "--target",
            "serial:/dev/nonexistent-autopilot:115200",
            &skip,
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("SKIP  needs the simulator"), "{text}");
    assert!(text.contains("a real autopilot has none"), "{text}");
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<skipped message=\"needs simulator faults"),
        "{junit}"
    );
}

#[test]
fn hil_runner_refuses_a_scenario_with_a_mistake_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "name = \"typo\"\n[[steps]]\ncall = \"takeoff\"\nargs = { altitude_m = 10.0 }\n\
         [[steps]]\nfault = \"line_drop\"\n",
    );
    let (code, text) = hil(&dir.path().join("out"), &[&bad]);
    assert_ne!(code, 0);
    assert!(
        text.contains("bad.toml: step 2 (fault line_drop): fault line_drop needs probability"),
        "{text}"
    );
    assert!(
        !dir.path().join("out/scenarios").exists(),
        "nothing started"
    );
    let (code, text) = hil(&dir.path().join("out"), &["--target", "moon", &bad]);
    assert_ne!(code, 0);
    assert!(text.contains("expected sim, sitl:ENDPOINT"), "{text}");
}

#[test]
fn hil_runner_starts_a_fresh_sitl_per_scenario_and_waits_until_it_can_fly() {
    // The built-in simulator stands in for SITL, started by the rig from the command line
    // as ArduCopter SITL would be, with an estimator that needs 8 simulated seconds to trust
    // its position (home comes first, at about half of that, as ArduCopter's origin does).
    let dir = tempfile::tempdir().unwrap();
    // A long --out: the rig's e-stop socket must still fit in a Unix socket path.
    let out = dir
        .path()
        .join("a-long-directory-name-for-the-hil-output".repeat(2))
        .join("out");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let port = support::free_tcp_port();
    let command = format!(
        "exec {} sim --link tcpin:127.0.0.1:{port} --home {{lat}},{{lon}},{{alt_m}} \
         --seed {{seed}} --speedup 2 --ekf-ready-s 8",
        support::binary().display()
    );
    // Takes off at once after the rig says it is ready, and leaves the vehicle in the air.
    let first = write(
        dir.path(),
        "a-first.toml",
        "name = \"take off as soon as ready\"\nneeds = [\"flight\"]\n\
         [[steps]]\ncall = \"request_control\"\n\
         [[steps]]\ncall = \"takeoff\"\nargs = { altitude_m = 5.0 }\nwithin_s = 30\n",
    );
    // A fresh SITL: on the ground and disarmed again; and the local socket works.
    let second = write(
        dir.path(),
        "b-second.toml",
        "name = \"starts on the ground\"\nneeds = [\"flight\"]\n\
         [[steps]]\nwait = { armed = false, landed = true }\nwithin_s = 3\n\
         [[steps]]\nestop = \"local_socket\"\n",
    );
    let (code, text) = hil(
        &out,
        &[
            "--target",
            &format!("sitl:tcpout:127.0.0.1:{port}"),
            "--sitl-command",
            &command,
            "--seed",
            "5",
            &first,
            &second,
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 passed, 0 failed, 0 skipped"), "{text}");
    for name in ["a-first", "b-second"] {
        let log = std::fs::read_to_string(out.join("scenarios").join(name).join("sitl.log"))
            .unwrap_or_default();
        assert!(log.contains("sim: serving"), "{name}: {log}");
    }
    // Nothing is left listening when the run is over.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the last SITL is still running"
    );

    // A target without what a fault needs skips the scenario after asking it, with the
    // reason: the simulator's PX4 personality, like PX4, has no BATT_CAPACITY for
    // MAV_CMD_BATTERY_RESET.
    let battery = write(
        dir.path(),
        "c-battery.toml",
        "name = \"battery to reserve\"\nneeds = [\"flight\", \"sim_faults\"]\n\
         [[steps]]\nfault = \"battery\"\nremaining_percent = 19.0\n",
    );
    let (code, text) = hil(
        &out,
        &[
            "--target",
            &format!("sitl:tcpout:127.0.0.1:{port}"),
            "--sitl-command",
            &command.replace(" sim ", " sim --autopilot px4 "),
            &battery,
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("SKIP  battery to reserve")
            && text.contains("the autopilot has no BATT_CAPACITY parameter"),
        "{text}"
    );

    // A placeholder that does not exist is refused before anything starts.
    let (code, text) = hil(
        &out,
        &[
            "--target",
            &format!("sitl:tcpout:127.0.0.1:{port}"),
            "--sitl-command",
            "arducopter --home {hom}",
            &first,
        ],
    );
    assert_ne!(code, 0);
    assert!(text.contains("unknown placeholder `{hom}`"), "{text}");
}
