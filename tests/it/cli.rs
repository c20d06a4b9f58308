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
