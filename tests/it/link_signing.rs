//! MAVLink 2 signing on the autopilot link (issue 19), against pymavlink's signing and the
//! simulator (which signs and checks as ArduPilot's `GCS_Signing.cpp` does):
//! - the daemon and a signing pymavlink autopilot, both ways, then forged frames on the same
//!   connection: unsigned, another key, a replay, an old timestamp, a truncated signature —
//!   each refused and counted (metrics), alerted (health) and recorded (audit);
//! - a key made and installed with `flight-companion signing`, the simulator restarted, a
//!   takeoff flown over MCP with signatures required, the daemon restarted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::flight_rig::{DaemonLink, Rig, RigSetup, at};
use crate::mcp_client::{TestClient, wait_online};
use crate::support::{Proc, binary, flight_companion, free_tcp_port, peer, python};

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(text)
}

/// A sample of the metrics text, e.g. `flight_companion_mavlink_refused_total{reason="unsigned"}`.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}

fn refused(text: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!("flight_companion_mavlink_refused_total{{reason=\"{reason}\"}}"),
    )
}

fn keygen(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let output = Command::new(binary())
        .args(["signing", "keygen", "--out", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let hex = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    (path, hex)
}

fn security_kinds(audit: &std::path::Path) -> Vec<Value> {
    flight_companion::audit::tail_command(audit, usize::MAX, true)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["event"].get("Security").cloned())
        .collect()
}

#[test]
fn link_signing_with_pymavlink_both_ways_and_forgeries_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, key_hex) = keygen(dir.path(), "mavlink.key");
    let mut command = Command::new(python());
    command.arg(peer("signing_autopilot.py")).args([
        "--key",
        &key_hex,
        "--seconds",
        "9",
        "--attack-at",
        "5",
    ]);
    let mut autopilot = Proc::spawn("signing autopilot", command);
    let line = autopilot.wait_for_line("peer: listening on", Duration::from_secs(20));
    let port: u16 = line.rsplit(' ').next().unwrap().trim().parse().unwrap();

    let metrics_port = free_tcp_port();
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nlink = \"tcpout:127.0.0.1:{port}\"\n\
             [vehicle.signing]\nmode = \"required\"\nkey_path = \"{}\"\ntimestamp_path = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            key_path.display(),
            dir.path().join("signing-timestamp").display(),
        ),
    )
    .unwrap();
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    daemon.wait_for_line(
        "MAVLink 2 signing on the autopilot link",
        Duration::from_secs(10),
    );
    daemon.wait_for_line("autopilot found", Duration::from_secs(10));
    let seen = {
        let line = autopilot.wait_for_line("peer: summary", Duration::from_secs(30));
        serde_json::from_str::<Value>(line.split_once("peer: summary ").unwrap().1).unwrap()
    };
    let text = http_get(metrics_port, "/metrics");
    let health: Value = serde_json::from_str(&http_get(metrics_port, "/health")).unwrap();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), Some(0));
    let output = daemon.output();

    // Both ways: pymavlink verified every frame of the daemon's, which it obeyed...
    assert!(seen["goodsig"].as_u64().unwrap() > 3, "{seen}");
    assert_eq!(
        (seen["badsig"].as_u64(), seen["rejected"].as_u64()),
        (Some(0), Some(0)),
        "{seen}"
    );
    assert!(
        seen["commands"].as_array().unwrap().contains(&json!(511)),
        "SET_MESSAGE_INTERVAL arrived signed: {seen}"
    );
    // ...and the daemon took the autopilot's signed frames.
    assert_eq!(metric(&text, "flight_companion_autopilot_seen"), 1.0);
    assert!(metric(&text, "flight_companion_mavlink_signed_frames_total") > 10.0);
    assert_eq!(
        seen["attacks"],
        json!([
            "unsigned",
            "bad_signature",
            "replayed",
            "old_timestamp",
            "truncated"
        ])
    );
    // Each forgery refused and counted by its reason; the truncated signature runs into
    // the next frame and fails as a bad signature (and costs that frame).
    for (reason, at_least) in [
        ("unsigned", 1.0),
        ("bad_signature", 2.0),
        ("replayed", 1.0),
        ("old_timestamp", 1.0),
    ] {
        assert!(refused(&text, reason) >= at_least, "{reason}:\n{text}");
    }
    assert_eq!(refused(&text, "foreign_peer"), 0.0);
    // Every forgery claimed an armed vehicle in LAND: none of it reached the state.
    assert_eq!(
        metric(&text, "flight_companion_vehicle_armed"),
        0.0,
        "{text}"
    );
    assert_eq!(health["alerts"]["link_untrusted"], true, "{health}");
    assert!(
        output.contains("autopilot link refused") && !output.contains("panicked"),
        "{output}"
    );
    // Provable afterwards: one record per reason, with what was refused.
    let audit = daemon.state.as_ref().unwrap().path().join("audit");
    let records = security_kinds(&audit);
    for kind in [
        "autopilot_link_unsigned",
        "autopilot_link_bad_signature",
        "autopilot_link_replayed",
        "autopilot_link_old_timestamp",
    ] {
        assert!(
            records.iter().any(|r| r["kind"] == kind
                && r["detail"]
                    .as_str()
                    .unwrap()
                    .contains("HEARTBEAT from system 1")),
            "{kind}: {records:#?}"
        );
    }
    // The timestamp was persisted at shutdown, and it is now's.
    let persisted: u64 = std::fs::read_to_string(dir.path().join("signing-timestamp"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let now = flight_companion::link::signing::timestamp_at(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    );
    assert!(
        persisted + 60 * 100_000 > now && persisted <= now + 100_000,
        "{persisted} vs {now}"
    );
}

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

/// pymavlink on one of the simulator's links: what it asks, and what the simulator printed.
fn pymavlink_client(port: u16, key_hex: Option<&str>, actions: &str) -> Value {
    let mut command = Command::new(python());
    command.arg(peer("signing_client.py")).args([
        "--tcp",
        &format!("127.0.0.1:{port}"),
        "--actions",
        actions,
    ]);
    if let Some(key) = key_hex {
        command.args(["--key", key]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client: summary "))
        .unwrap_or_else(|| panic!("{stdout}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_signing_key_installed_on_the_simulator_flies_after_a_restart_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, key_hex) = keygen(dir.path(), "mavlink.key");
    let store = dir.path().join("sim-storage.bin");
    let store_arg = store.to_str().unwrap().to_owned();

    // 1. Install: the simulator's channel 1 (channel 0 would still take unsigned commands).
    let mut sim = flight_companion(
        "sim",
        &[
            "sim",
            "--link",
            "tcpin:127.0.0.1:0",
            "--link",
            "tcpin:127.0.0.1:0",
            "--signing-store",
            &store_arg,
        ],
    );
    let port = |line: String| -> u16 { line.rsplit(':').next().unwrap().trim().parse().unwrap() };
    let port0 = port(sim.wait_for_line("sim: serving tcpin:", Duration::from_secs(10)));
    let port1 = port(sim.wait_for_line("sim: serving tcpin:", Duration::from_secs(10)));
    let install = tokio::task::block_in_place(|| {
        Command::new(binary())
            .args([
                "signing",
                "install",
                "--link",
                &format!("tcpout:127.0.0.1:{port1}"),
                "--key",
                key_path.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    });
    let said = String::from_utf8_lossy(&install.stdout);
    assert!(
        install.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(
        said.contains("the autopilot signs with the new key"),
        "{said}"
    );
    assert!(
        said.contains("an unsigned command is refused on this port"),
        "{said}"
    );
    assert_eq!(
        std::fs::metadata(&store).unwrap().len(),
        44,
        "stored as ArduPilot stores it"
    );

    // 2. ArduPilot's rules, against pymavlink (GCS_Signing.cpp accept_unsigned_callback):
    // on channel 1, an unsigned RADIO_STATUS passes, an unsigned command is refused, a
    // command signed with the key is obeyed; channel 0 takes unsigned commands.
    let unsigned =
        tokio::task::block_in_place(|| pymavlink_client(port1, None, "radio_status,arm"));
    assert_eq!(unsigned["acks"], json!({}), "{unsigned}");
    let signed =
        tokio::task::block_in_place(|| pymavlink_client(port1, Some(&key_hex), "request_version"));
    assert_eq!(
        signed["acks"]["512"], 0,
        "REQUEST_MESSAGE accepted: {signed}"
    );
    assert!(signed["goodsig"].as_u64().unwrap() > 0, "{signed}");
    let usb = tokio::task::block_in_place(|| pymavlink_client(port0, None, "request_version"));
    assert_eq!(usb["acks"]["512"], 0, "channel 0 takes unsigned: {usb}");
    let out = sim.output();
    let first_refusal = out
        .lines()
        .find(|l| l.starts_with("sim: refused unsigned"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        first_refusal.contains("unsigned COMMAND_LONG from system 255"),
        "RADIO_STATUS went through unsigned, the command did not: {out}"
    );
    assert!(!out.contains("MAV_CMD_COMPONENT_ARM_DISARM"), "{out}");
    sim.signal("TERM");
    sim.wait_exit(Duration::from_secs(5));

    // 3. The simulator restarted with its storage; the daemon requires signatures on
    // channel 1; a takeoff flown over MCP.
    let envelope = envelope();
    let sections = format!(
        "[vehicle.signing]\nmode = \"required\"\nkey_path = \"{}\"\ntimestamp_path = \"{}\"\n",
        key_path.display(),
        dir.path().join("daemon-signing-timestamp").display()
    );
    let sim_args = ["--signing-store", store_arg.as_str()];
    let mut rig = Rig::start_setup(
        "signing-restart",
        RigSetup {
            envelope: &envelope,
            daemon_link: DaemonLink::Connects { second: true },
            sim_args: &sim_args,
            sections: &sections,
            ..RigSetup::default()
        },
    )
    .await;
    assert!(rig.sim.output().contains("sim: signing on 2 links"));
    let result = rig.fly("takeoff", json!({"altitude_m": 5.0})).await;
    assert_eq!(result["vehicle"]["armed"], true, "{result}");
    let status = rig.status().await;
    let trust = &status["vehicle"]["link"]["trust"];
    assert_eq!(trust["signing"], "required", "{trust}");
    assert!(trust["signed_frames"].as_u64().unwrap() > 50, "{trust}");
    assert_eq!(trust["refused"]["unsigned"], 0, "{trust}");
    assert_eq!(trust["refused"]["bad_signature"], 0, "{trust}");
    let out = rig.sim.output();
    assert!(
        out.contains("command MAV_CMD_NAV_TAKEOFF from 1/191 -> MAV_RESULT_ACCEPTED"),
        "{out}"
    );
    assert!(
        !out.contains("refused unsigned"),
        "the daemon signs everything: {out}"
    );

    // 4. The daemon restarted: it starts past its persisted timestamp and flies on.
    rig.daemon.signal("TERM");
    rig.daemon.wait_exit(Duration::from_secs(5));
    let persisted = std::fs::read_to_string(dir.path().join("daemon-signing-timestamp"))
        .expect("persisted at shutdown");
    assert!(persisted.trim().parse::<u64>().is_ok(), "{persisted}");
    let lines_before = rig.sim_lines();
    rig.daemon = flight_companion("daemon", &["run", "--config", &rig.config]);
    tokio::task::block_in_place(|| {
        rig.daemon
            .wait_for_line("autopilot found", Duration::from_secs(15))
    });
    let mut client = TestClient::connect(rig.broker(), "ground-signing-2").await;
    wait_online(&mut client).await;
    client.initialize("2025-11-25").await;
    let (control, _) = client
        .call(
            "tools/call",
            json!({"name": "request_control", "arguments": {}}),
        )
        .await;
    assert!(control.get("result").is_some(), "{control}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let landed = loop {
        let (answer, _) = client
            .call("tools/call", json!({"name": "land", "arguments": {}}))
            .await;
        let outcome = answer["result"]["structuredContent"]["outcome"].clone();
        if outcome == "completed" || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        landed["result"]["structuredContent"]["outcome"],
        "completed",
        "{landed}\n--- daemon:\n{}",
        rig.daemon.output()
    );
    let after: Vec<String> = rig
        .sim
        .output()
        .lines()
        .skip(lines_before)
        .map(str::to_owned)
        .collect();
    assert!(
        after
            .iter()
            .any(|l| l.contains("MAV_CMD_DO_SET_MODE from 1/191 -> MAV_RESULT_ACCEPTED")),
        "{after:#?}"
    );
    assert!(
        !after.iter().any(|l| l.contains("refused unsigned")),
        "{after:#?}"
    );
}

#[test]
fn link_signing_bad_key_files_stop_the_daemon_with_the_reason() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = keygen(dir.path(), "good.key");
    let rows: [(&str, Vec<u8>, u32, &str); 4] = [
        (
            "readable by others",
            std::fs::read(&good).unwrap(),
            0o644,
            "mode 0644",
        ),
        ("31 bytes", vec![7u8; 31], 0o600, "holds 31 bytes"),
        ("a passphrase", b"hunter2\n".to_vec(), 0o600, "32 bytes"),
        ("missing", Vec::new(), 0, "No such file"),
    ];
    for (what, contents, mode, reason) in rows {
        let key = dir.path().join(what.replace(' ', "-"));
        if mode != 0 {
            std::fs::write(&key, &contents).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let config = dir.path().join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(
            &config,
            format!(
                "[vehicle]\nlink = \"tcpout:127.0.0.1:{}\"\n[vehicle.signing]\nmode = \"required\"\n\
                 key_path = \"{}\"\n",
                free_tcp_port(),
                key.display()
            ),
        )
        .unwrap();
        for command in ["check-config", "run"] {
            let mut args = vec![command];
            if command == "run" {
                args.push("--config");
            }
            args.push(config.to_str().unwrap());
            let mut daemon = flight_companion(command, &args);
            let code = daemon.wait_exit(Duration::from_secs(10));
            let output = daemon.output();
            assert!(
                matches!(code, Some(c) if c != 0),
                "{what} / {command}: {code:?}\n{output}"
            );
            assert!(
                output.contains(reason) && output.contains(&key.display().to_string()),
                "{what} / {command}: {output}"
            );
            assert!(!output.contains("panicked"), "{output}");
        }
    }
}
