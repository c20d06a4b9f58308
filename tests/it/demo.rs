//! The README's first command: the demo runs the whole chain, flies (takeoff, goto, a goto
//! outside the fence refused, land), says what happens, exits 0 and leaves nothing running.

use std::net::TcpStream;
use std::process::Command;

use crate::support::binary;

fn port_after(output: &str, marker: &str) -> u16 {
    let line = output
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker}: {output}"));
    let rest = line.split_once(marker).unwrap().1;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap()
}

#[test]
fn demo_runs_the_chain_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        // The demo's daemon puts its default e-stop socket there, not where another test's is.
        .env("XDG_RUNTIME_DIR", dir.path())
        .args([
            "demo",
            "--updates",
            "2",
            "--speedup",
            "4",
            "--dir",
            dir.path().join("demo").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "Mosquitto broker up on 127.0.0.1:",
        "connected to drone",
        "get_status:",
        "status: ArduPilot (simulated) in STABILIZE (disarmed)",
        "update 2:",
        "demo: took a picture: 640x480 JPEG",
        "the onboard envelope: keep-in `field`, keep-out `tower`",
        "demo: takeoff: took off to 10 m",
        "takeoff | climbing",
        "demo: goto: arrived at",
        "goto | ",
        "demo: refused by the daemon, nothing was sent to the vehicle: ",
        "outside keep-in `field`",
        "demo: land: landed and disarmed",
        "demo: on the ground and disarmed",
        "demo: done",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // The picture is where the demo says, a full-resolution JPEG.
    let marker = "picture saved at full resolution with EXIF GPS tags: ";
    let line = stdout.lines().find(|l| l.contains(marker)).unwrap();
    let path = line.split_once(marker).unwrap().1.trim();
    assert!(path.starts_with(dir.path().to_str().unwrap()), "{path}");
    let picture = std::fs::read(path).unwrap();
    assert!(picture.starts_with(&[0xFF, 0xD8]), "{path} is not a JPEG");
    // The daemon kept the autopilot's home for check-config (dev-setup's last_home_path).
    let kept = std::fs::read_to_string(dir.path().join("demo/state/last-home.json"))
        .expect("the daemon keeps the last home");
    let home: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert!(
        (home["latitude_deg"].as_f64().unwrap() - 47.397742).abs() < 1e-4
            && (home["longitude_deg"].as_f64().unwrap() - 8.545594).abs() < 1e-4,
        "{home}"
    );
    // The refusal came from the daemon before anything was sent: one DO_REPOSITION (the
    // goto inside), none for the goto outside.
    assert_eq!(
        stdout.matches("command MAV_CMD_DO_REPOSITION").count(),
        1,
        "{stdout}"
    );
    assert!(
        !stdout.contains("near the envelope"),
        "no warnings on a flight inside: {stdout}"
    );
    let broker_port = port_after(&stdout, "Mosquitto broker up on 127.0.0.1:");
    let sim_port = port_after(&stdout, "listening on tcpin:127.0.0.1:");
    for port in [broker_port, sim_port] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something still listens on {port} after the demo exited"
        );
    }
}
