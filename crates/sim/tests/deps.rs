//! The simulator does no IO, and Cargo enforces it as for the core crate: no crate that opens
//! sockets, runs an async runtime or speaks TLS may be among its dependencies (ARCHITECTURE.md,
//! "The workspace"). Serving it over real links is the root package's `sim::shell`.
//! And the deployed daemon (`--no-default-features`) does not carry it.

use std::process::Command;

/// Crates that would let the simulator do IO or wait on it.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-serial",
    "mio",
    "socket2",
    "serialport",
    "rumqttc",
    "rustls",
    "tokio-rustls",
    "rmcp",
    "hyper",
    "linuxvideo",
];

/// The names of the packages `cargo tree` lists with `args` (one per line, no prefix).
fn tree(args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "--prefix", "none", "--format", "{p}"])
        .args(args)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_sim_crate_depends_on_no_io_crate() {
    let names = tree(&["-p", "flight-companion-sim", "-e", "normal,build"]);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(
        names.contains(&"flight-companion-sim")
            && names.contains(&"flight-companion-core")
            && names.contains(&"nalgebra"),
        "cargo tree did not list the sim crate's dependencies: {names:?}"
    );
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(
        found.is_empty(),
        "the sim crate must not depend on {found:?} (see `cargo tree -p flight-companion-sim -i NAME`)"
    );
}

#[test]
fn the_deployed_daemon_does_not_contain_the_simulator() {
    let names = tree(&[
        "-p",
        "flight-companion",
        "--no-default-features",
        "-e",
        "normal",
    ]);
    assert!(
        names.iter().any(|n| n == "flight-companion-core"),
        "cargo tree did not list the daemon's dependencies: {names:?}"
    );
    let found: Vec<&String> = (names.iter())
        .filter(|n| *n == "flight-companion-sim" || *n == "nalgebra")
        .collect();
    assert!(
        found.is_empty(),
        "the deployed feature set must not contain {found:?} (the feature `sim` brings them)"
    );
}
