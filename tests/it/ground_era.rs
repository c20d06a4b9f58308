//! MCP 2026-07-28 on the bridge's stdio side: a raw stdio client written from the
//! specification (`tests/peers/stdio_era_client.py`) negotiating 2026-07-28, and the same
//! client on 2025-06-18, through `flight-companion ground` to the paho fake drone.

use std::process::Command;
use std::time::Duration;

use crate::ground_bridge::fake_drone;
use crate::support::broker::{Broker, s};
use crate::support::{Proc, binary, peer, python};

fn era_client(broker: &Broker, version: &str) -> String {
    let mut command = Command::new(python());
    command.arg(peer("stdio_era_client.py")).args([
        s(&binary()),
        s(&broker.dev.path("ground.toml")),
        "--version",
        version,
    ]);
    let mut client = Proc::spawn("stdio era client", command);
    let code = client.wait_exit(Duration::from_secs(60));
    let output = client.output();
    assert_eq!(code, Some(0), "{version} client failed:\n{output}");
    output
}

#[test]
fn ground_era_a_2026_07_28_client_and_a_2025_06_18_one_through_the_bridge() {
    let broker = Broker::start("era");
    let _drone = fake_drone(&broker);
    let output = era_client(&broker, "2026-07-28");
    for check in [
        "ok: server/discover -> supportedVersions ['2026-07-28']",
        "ok: tools/list -> get_status",
        "ok: tools/call get_status -> resultType complete",
        "ok: ping -> -32601",
        "ok: a request without the _meta envelope",
        "ok: subscriptions/listen -> notifications/subscriptions/acknowledged",
        "ok: notifications/resources/updated on the listen stream",
        "ok: all checks passed (2026-07-28)",
    ] {
        assert!(output.contains(check), "missing {check:?} in:\n{output}");
    }
    let output = era_client(&broker, "2025-06-18");
    assert!(
        output.contains("ok: all checks passed (2025-06-18)"),
        "{output}"
    );
}
