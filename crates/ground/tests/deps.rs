//! The ground bridge forwards raw JSON-RPC and runs on the ground machine, and Cargo keeps it
//! so (ARCHITECTURE.md, "The workspace"): no MCP SDK (decoding into an SDK's types would drop
//! what the drone and the client speak beyond them) and none of the crates only the daemon
//! needs among its dependencies. It cannot depend on the daemon's package either: that
//! package depends on it, and Cargo refuses the cycle.

use std::process::Command;

/// The MCP SDK, and crates only the daemon's package needs.
const FORBIDDEN: &[&str] = &[
    "rmcp",
    "flight-companion",
    "tokio-serial",
    "linuxvideo",
    "turbojpeg",
    "rcgen",
    "jsonwebtoken",
    "nalgebra",
];

#[test]
fn the_ground_crate_depends_on_no_sdk_and_nothing_of_the_daemon() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-p",
            "flight-companion-ground",
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
        names.contains(&"flight-companion-ground") && names.contains(&"flight-companion-mqtt"),
        "cargo tree did not list the ground crate's dependencies:\n{tree}"
    );
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(
        found.is_empty(),
        "the ground crate must not depend on {found:?} (see `cargo tree -p flight-companion-ground -i NAME`)"
    );
}
