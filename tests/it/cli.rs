//! The command line as a person meets it: config checks, bad arguments, version.

use std::process::Command;

use crate::support::{binary, repo_root};

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("run flight-companion");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_example_config_is_valid() {
    let dir = repo_root().join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, stdout, stderr) = run(&["check-config", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {stdout}{stderr}", path.display());
            assert!(stdout.contains("ok"), "{stdout}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected at least the simulator and Raspberry Pi examples"
    );
}

#[test]
fn bad_configs_exit_non_zero_naming_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cases = [
        (
            "wrong-type.toml",
            "[vehicle]\nheartbeat_interval_ms = \"soon\"\n",
            "vehicle.heartbeat_interval_ms",
        ),
        (
            "bad-baud.toml",
            "[vehicle]\nlink = \"serial:/dev/ttyAMA0:12345\"\n",
            "baud rate 12345",
        ),
        (
            "unknown-key.toml",
            "[vehicle]\nspeed = 3\n",
            "unknown field `speed`",
        ),
        ("not-toml.toml", "this is = = not toml", "line 1"),
        ("binary.toml", "\u{0}\u{1}\u{2}", "binary.toml"),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (code, _, stderr) = run(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(name), "names the file: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (code, _, stderr) = run(&["check-config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("missing.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_refused_with_what_is_accepted() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["probe", "--link", "serial:/dev/ttyUSB0:9601"],
            "not supported",
        ),
        (&["probe", "--link", "bluetooth:abc"], "unknown scheme"),
        (&["sim", "--home", "91,0,0"], "latitude"),
        (
            &["sim", "--link", "tcpout:localhost:0"],
            "only be used to listen",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, stderr) = run(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn version_names_the_commit() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("flight-companion 0."), "{stdout}");
    assert!(stdout.contains('('), "commit in parentheses: {stdout}");
}

/// The test binary is built with the default features; the deployed one with none
/// (`cross/ci.sh` checks that one says `features: none`).
#[test]
fn version_names_the_features_compiled_in() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let features = stdout
        .lines()
        .find_map(|line| line.strip_prefix("features: "))
        .unwrap_or_else(|| panic!("no `features:` line: {stdout}"));
    assert_eq!(
        features.split(' ').collect::<Vec<_>>(),
        ["sim", "hil", "dev-setup"],
        "{stdout}"
    );
    // `-V` stays one line: the version and the commit.
    let (code, short, _) = run(&["-V"]);
    assert_eq!(code, 0);
    assert_eq!(short.lines().count(), 1, "{short}");
}

#[test]
fn dev_setup_draws_around_a_given_home_and_check_config_warns_when_the_zones_are_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev");
    // ArduPilot's test field at Canberra (CMAC), where SITL starts by default.
    let (code, stdout, stderr) = run(&[
        "dev-setup",
        dev.to_str().unwrap(),
        "--home",
        "-35.363261,149.165230,584",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("around -35.363261, 149.16523"), "{stdout}");
    assert!(
        stdout.contains("flight-companion sim --home -35.363261,149.16523,584"),
        "{stdout}"
    );
    let drone = dev.join("drone.toml");
    let (code, stdout, stderr) = run(&["check-config", drone.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
    assert!(
        stderr.is_empty(),
        "no warning where the zones were drawn: {stderr}"
    );

    // The daemon last saw the vehicle at the simulator's home in Zurich: the envelope
    // would be refused there, and check-config says so (a warning: the file itself is fine).
    std::fs::write(
        dev.join("state/last-home.json"),
        "{\"latitude_deg\": 47.397742, \"longitude_deg\": 8.545594, \"altitude_msl_m\": 488.0, \"seen_unix_s\": 1800000000}",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["check-config", drone.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("ok, with 2 warnings about where the envelope is"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "warning: keep-in `field` is 16" // about 16 600 km
        ) && stderr.contains("from the last known home (47.3977420, 8.5455940)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("edit [[envelope.keep_in]] `field`")
            && stderr.contains("keep-out `tower` is"),
        "{stderr}"
    );

    // Without --home the dev envelope is the simulator's, and a configured home elsewhere
    // (here: Canberra, written by hand) is warned about the same way.
    let sim_dev = dir.path().join("sim-dev");
    let (code, _, _) = run(&["dev-setup", sim_dev.to_str().unwrap()]);
    assert_eq!(code, 0);
    let sim_drone = sim_dev.join("drone.toml");
    let text = std::fs::read_to_string(&sim_drone).unwrap().replace(
        "expected_home_lat_lon_deg = [47.397742, 8.545594]",
        "expected_home_lat_lon_deg = [-35.363261, 149.16523]",
    );
    std::fs::write(&sim_drone, text).unwrap();
    let (code, _, stderr) = run(&["check-config", sim_drone.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("from the configured home (-35.3632610, 149.1652300)"),
        "{stderr}"
    );
}
