//! The core crate does no IO, and Cargo enforces it: no crate that opens sockets, runs an
//! async runtime or speaks TLS may be among its dependencies (ARCHITECTURE.md, "The
//! workspace"). A core that needed one would have to take it as an input from a shell.

use std::process::Command;

/// Crates that would let a core do IO or wait on it.
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

#[test]
fn the_core_crate_depends_on_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-p",
            "flight-companion-core",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"flight-companion-core") && names.contains(&"mavlink"),
        "cargo tree did not list the core crate's dependencies:\n{tree}"
    );
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(
        found.is_empty(),
        "the core crate must not depend on {found:?} (see `cargo tree -p flight-companion-core -i NAME`)"
    );
}
