//! Pinned peers (issue 19): the daemon listens (`udpin`, `tcpin`), the simulator connects as
//! the autopilot, and a second machine (a pymavlink spoofer on another loopback address)
//! claims the autopilot's ids. Each row of the table is an attempt and what must hold; the
//! daemon is judged by what an MCP client is told (`get_status`, `arm`), what the spoofer
//! received, and the audit log.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::flight_rig::{DaemonLink, HOME_LAT_DEG, HOME_LON_DEG, Rig, RigSetup, at};
use crate::support::{Proc, peer, python};

/// Where the spoofer claims the vehicle is: a degree north of home.
const SPOOFED_LAT_DEG: f64 = HOME_LAT_DEG + 1.0;
/// ArduCopter LAND: the mode the spoofer's heartbeats claim.
const SPOOFED_MODE: &str = "LAND";

fn envelope() -> String {
    format!(
        "[envelope]\naltitude_m_max = 40.0\n\n[[envelope.keep_in]]\nname = \"field\"\n\
         polygon_lat_lon_deg = [{}, {}, {}, {}]\n",
        at(-100.0, -100.0),
        at(-100.0, 100.0),
        at(100.0, 100.0),
        at(100.0, -100.0),
    )
}

/// Starts the spoofer against the daemon's link for `seconds`.
fn spoofer(kind: &str, port: u16, seconds: f64, extra: &[&str]) -> Proc {
    let mut command = Command::new(python());
    command
        .arg(peer("spoofer.py"))
        .arg(if kind == "udpin" { "--udp" } else { "--tcp" })
        .arg(format!("127.0.0.1:{port}"))
        .args(["--source", "127.0.0.2"])
        .args(["--seconds", &seconds.to_string()])
        .args(["--lat", &HOME_LAT_DEG.to_string()])
        .args(["--lon", &HOME_LON_DEG.to_string()])
        .args(extra);
    Proc::spawn("spoofer", command)
}

fn summary(spoofer: &mut Proc) -> Value {
    let line = spoofer.wait_for_line("spoofer: summary", Duration::from_secs(60));
    serde_json::from_str(line.split_once("spoofer: summary ").unwrap().1).unwrap()
}

/// The daemon's listening port, from its configuration.
fn daemon_port(rig: &Rig) -> u16 {
    let text = std::fs::read_to_string(&rig.config).unwrap();
    let link = text
        .lines()
        .find_map(|l| l.strip_prefix("link = \""))
        .unwrap();
    link.trim_end_matches('"')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The status fields the spoofer tries to change.
fn reported(status: &Value) -> (String, bool, f64) {
    let v = &status["vehicle"];
    (
        v["mode"]["flight_mode"].as_str().unwrap().to_owned(),
        v["mode"]["armed"].as_bool().unwrap(),
        v["position"]["latitude_deg"].as_f64().unwrap(),
    )
}

async fn audit_kinds(rig: &Rig, kind: &str) -> Vec<Value> {
    let dir = rig.broker().dev.path("state/audit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let lines =
            flight_companion::audit::tail_command(&dir, usize::MAX, true).unwrap_or_default();
        let found: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["event"]["Security"]["kind"] == kind)
            .map(|r| r["event"]["Security"].clone())
            .collect();
        if !found.is_empty() || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One spoofing campaign against a listening daemon, judged row by row.
async fn spoofing_table(kind: &'static str) {
    let envelope = envelope();
    let mut rig = Rig::start_setup(
        &format!("pin-{kind}"),
        RigSetup {
            envelope: &envelope,
            speedup: 2.0,
            daemon_link: DaemonLink::Listens(kind),
            ..RigSetup::default()
        },
    )
    .await;
    let port = daemon_port(&rig);
    let before = reported(&rig.status().await);
    assert!(!before.1, "the vehicle starts disarmed: {before:?}");

    let mut attacker = spoofer(kind, port, 8.0, &[]);
    // While the spoofer heartbeats, reports a position and refuses every arming: the status
    // a client reads, several times over.
    let mut seen = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        seen.push(reported(&rig.status().await));
    }
    // And the pilot arms meanwhile, with forged COMMAND_ACK(DENIED) pouring in.
    let (arm, _) = rig.tool("arm", json!({})).await;
    let sim_armed = rig.sim.output().contains("sim: armed");
    let after_arm = reported(&rig.status().await);
    let spoofed = summary(&mut attacker);
    let status = rig.status().await;
    let trust = status["vehicle"]["link"]["trust"].clone();

    // The table: (attempt, what must hold, whether it holds, evidence).
    let rows: Vec<(&str, &str, bool, String)> = vec![
        (
            "heartbeats claiming the autopilot's ids, armed in LAND",
            "the mode and arming the client reads are the vehicle's own",
            seen.iter()
                .all(|(mode, armed, _)| mode != SPOOFED_MODE && !armed),
            format!("{seen:?}"),
        ),
        (
            "a position a degree away with the autopilot's ids",
            "the position the client reads stays at home",
            seen.iter().chain([&after_arm]).all(|(_, _, lat)| {
                (lat - HOME_LAT_DEG).abs() < 0.001 && (lat - SPOOFED_LAT_DEG).abs() > 0.5
            }),
            format!("{seen:?} then {after_arm:?}"),
        ),
        (
            "forged COMMAND_ACK(DENIED) for arming and mode changes",
            "arm completes: the vehicle arms",
            arm["structuredContent"]["outcome"] == "completed" && sim_armed && after_arm.1,
            format!("{arm} (sim armed: {sim_armed}, status {after_arm:?})"),
        ),
        (
            "listening for the daemon's heartbeats and commands",
            "the spoofer receives nothing from the daemon",
            spoofed["received"]
                .as_object()
                .is_some_and(|r| r.is_empty())
                && spoofed["sent"].as_u64().unwrap_or(0) > 0,
            format!("{spoofed}"),
        ),
        (
            "all of it",
            "counted as refused, by reason, in the link health",
            match kind {
                "udpin" => trust["refused"]["foreign_peer"].as_u64().unwrap_or(0) > 0,
                _ => trust["refused"]["connection_refused"].as_u64().unwrap_or(0) > 0,
            },
            format!("{trust}"),
        ),
        (
            "all of it",
            "the link_untrusted alert is raised",
            status["health"]["alerts"]["link_untrusted"] == true,
            format!("{}", status["health"]),
        ),
    ];
    let rows: Vec<_> = if kind == "tcpin" {
        let mut rows = rows;
        rows.push((
            "a second TCP client, to replace the autopilot",
            "closed at once, every time; the autopilot's connection stays",
            spoofed["connections"].as_u64().unwrap_or(0) >= 1
                && spoofed["closed_by_daemon"] == spoofed["connections"]
                && spoofed["longest_connection_s"].as_f64().unwrap_or(9.0) < 1.0
                && !rig.daemon.output().contains("replaced by"),
            format!("{spoofed}"),
        ));
        rows
    } else {
        rows
    };
    let failed: Vec<String> = rows
        .iter()
        .filter(|(_, _, holds, _)| !holds)
        .map(|(attempt, expected, _, evidence)| {
            format!("{attempt}: expected {expected}; got {evidence}")
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{kind}:\n{}\n--- daemon:\n{}",
        failed.join("\n"),
        rig.daemon.output()
    );

    // Provable afterwards: the audit log names the refusal and the refused address.
    let reason = if kind == "udpin" {
        "autopilot_link_foreign_peer"
    } else {
        "autopilot_link_connection_refused"
    };
    let records = audit_kinds(&rig, reason).await;
    assert!(
        records.iter().any(|r| r["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.2:"))),
        "{reason}: {records:?}"
    );
    // Disarm, so the simulator does not wait out its idle disarm.
    let _ = rig.tool("disarm", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_pinning_udpin_spoofing_table() {
    spoofing_table("udpin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_pinning_tcpin_spoofing_table() {
    spoofing_table("tcpin").await;
}
