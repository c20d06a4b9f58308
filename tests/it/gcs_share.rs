//! Ground stations sharing the autopilot link (issue 19): a pymavlink ground station and
//! MAVProxy on `gcs` endpoints, and a `monitor` endpoint, beside the MCP client, against the
//! simulator. Each is judged by what it was told (ACKs, STATUSTEXT), where the simulated
//! vehicle went, and the audit log.

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::flight_rig::{FLIGHT_WAIT, Rig, RigSetup, at, from_home, offset};
use crate::support::{Proc, free_udp_port, peer, python};

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

/// Runs the pymavlink station and returns its summary (panics with its output on failure).
fn station(args: &[String]) -> Value {
    let mut command = Command::new(python());
    command.arg(peer("gcs_beside.py")).args(args);
    let mut proc = Proc::spawn("gcs_beside", command);
    let line = proc.wait_for_line("summary ", Duration::from_secs(180));
    serde_json::from_str(line.split_once("summary ").unwrap().1).unwrap()
}

fn point_args(north_m: f64, east_m: f64) -> Vec<String> {
    let (lat, lon) = offset(north_m, east_m);
    vec![
        "--lat".into(),
        format!("{lat:.8}"),
        "--lon".into(),
        format!("{lon:.8}"),
    ]
}

/// Where the vehicle is, from get_status, in metres from home (north, east, up).
async fn where_is(rig: &mut Rig) -> (f64, f64, f64) {
    let status = rig.status().await;
    let p = &status["vehicle"]["position"];
    let (n, e) = from_home(
        p["latitude_deg"].as_f64().unwrap(),
        p["longitude_deg"].as_f64().unwrap(),
    );
    (n, e, p["altitude_relative_m"].as_f64().unwrap())
}

async fn wait_near(rig: &mut Rig, north_m: f64, east_m: f64) -> (f64, f64, f64) {
    let deadline = tokio::time::Instant::now() + FLIGHT_WAIT;
    loop {
        let at = where_is(rig).await;
        if (at.0 - north_m).hypot(at.1 - east_m) < 3.0 {
            return at;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not at ({north_m}, {east_m}) but {at:?}\n--- daemon:\n{}",
            rig.daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The audit's `Call` records of one ground-station endpoint.
async fn gcs_calls(rig: &Rig, session: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let dir = rig.broker().dev.path("state/audit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let calls: Vec<Value> = flight_companion::audit::tail_command(&dir, usize::MAX, true)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["event"]["Call"]["session"] == session)
            .map(|r| r["event"]["Call"].clone())
            .collect();
        if want(&calls) || tokio::time::Instant::now() > deadline {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ground_stations_share_the_link_through_the_gate() {
    let envelope = envelope();
    let (pymavlink_port, mavproxy_port, monitor_port) =
        (free_udp_port(), free_udp_port(), free_udp_port());
    let tlog = std::env::temp_dir().join(format!("gcs-share-{}.tlog", std::process::id()));
    let _ = std::fs::remove_file(&tlog);
    let sections = format!(
        "[[gcs_endpoint]]\nname = \"pymavlink\"\nlink = \"udpin:127.0.0.1:{pymavlink_port}\"\n\
         role = \"gcs\"\n\n[[gcs_endpoint]]\nname = \"mavproxy\"\n\
         link = \"udpin:127.0.0.1:{mavproxy_port}\"\nrole = \"gcs\"\n\n[[gcs_endpoint]]\n\
         name = \"watch\"\nlink = \"udpin:127.0.0.1:{monitor_port}\"\n\n[gcs]\n\
         tlog_path = \"{}\"\n",
        tlog.display()
    );
    let mut rig = Rig::start_setup(
        "gcs-share",
        RigSetup {
            envelope: &envelope,
            speedup: 4.0,
            sections: &sections,
            ..RigSetup::default()
        },
    )
    .await;
    let port = |p: u16| vec!["--port".to_string(), p.to_string()];

    // 1. The MCP client holds the control lease (the rig asks for it): a ground station may
    // not command meanwhile.
    let lease = station(
        &[
            vec!["denied".into(), "--expect".into(), "control lease".into()],
            port(pymavlink_port),
            point_args(30.0, 20.0),
        ]
        .concat(),
    );
    let (released, _) = rig.tool("release_control", json!({})).await;
    assert_ne!(released["isError"], true, "{released}");

    // 2. A monitor sees the vehicle and can command nothing, not even with the lease free.
    let monitor = station(
        &[
            vec!["denied".into(), "--expect".into(), "monitor".into()],
            port(monitor_port),
            point_args(30.0, 20.0),
        ]
        .concat(),
    );

    // 3. The pymavlink station reads parameters, arms, takes off, flies a goto, and a goto
    // outside the envelope is refused.
    let (out_lat, out_lon) = offset(500.0, 0.0);
    let flown = station(
        &[
            vec!["fly".into()],
            port(pymavlink_port),
            point_args(30.0, 20.0),
            vec![
                "--out-lat".into(),
                format!("{out_lat:.8}"),
                "--out-lon".into(),
                format!("{out_lon:.8}"),
            ],
        ]
        .concat(),
    );
    assert!(
        flown["params"].as_u64().unwrap_or(0) >= 20,
        "the whole parameter list: {flown}"
    );
    assert_eq!(flown["WPNAV_SPEED"], 1000.0, "{flown}");
    let refusal = flown["refusal"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("field") || refusal.contains("envelope") || refusal.contains("keep"),
        "the refusal says why (the keep-in zone): {refusal:?}"
    );
    let after_fly = where_is(&mut rig).await;
    assert!(
        (after_fly.0 - 30.0).hypot(after_fly.1 - 20.0) < 3.0,
        "the refused goto did not move it: {after_fly:?}"
    );

    // 4. MAVProxy, unmodified, on its own endpoint: the parameters, then a guided goto.
    let mavproxy = python().parent().unwrap().join("mavproxy.py");
    let state_dir = std::env::temp_dir().join(format!("gcs-share-mavproxy-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir).unwrap();
    let mut command = Command::new(python());
    command
        .env("PYTHONUNBUFFERED", "1")
        .arg(mavproxy)
        .arg(format!("--master=udpout:127.0.0.1:{mavproxy_port}"))
        .arg(format!("--state-basedir={}", state_dir.display()))
        .arg("--default-modules=param,mode,cmdlong,arm,misc");
    let mut mp = Proc::spawn_with_stdin("mavproxy", command);
    let say = |mp: &mut Proc, line: &str| {
        let stdin = mp.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    };
    mp.wait_for_line("online system 1", Duration::from_secs(30));
    say(&mut mp, "param fetch");
    let received = mp.wait_for_line("Received ", Duration::from_secs(60));
    assert!(received.contains("parameters"), "{received}");
    let (lat, lon) = offset(-20.0, -30.0);
    say(&mut mp, &format!("guided {lat:.8} {lon:.8} 15"));
    let ack = mp.wait_for_line("Got COMMAND_ACK: DO_REPOSITION", Duration::from_secs(20));
    assert!(ack.contains("ACCEPTED"), "{ack}");
    let reached = wait_near(&mut rig, -20.0, -30.0).await;
    say(&mut mp, "guided 0 0 15");
    let denied = mp.wait_for_line("Got COMMAND_ACK: DO_REPOSITION", Duration::from_secs(20));
    assert!(
        denied.contains("DENIED"),
        "a goto to 0,0 is refused: {denied}"
    );
    drop(mp);

    // 5. The e-stop latched: the ground station cannot move the vehicle.
    let (stop, _) = rig
        .tool("emergency_stop", json!({"reason": "gcs test"}))
        .await;
    assert_ne!(stop["isError"], true, "{stop}");
    let held = where_is(&mut rig).await;
    let latched = station(
        &[
            vec!["denied".into(), "--expect".into(), "latched".into()],
            port(pymavlink_port),
            point_args(60.0, 60.0),
        ]
        .concat(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_stop = where_is(&mut rig).await;
    assert!(
        (after_stop.0 - 60.0).hypot(after_stop.1 - 60.0) > 30.0
            && (after_stop.0 - held.0).hypot(after_stop.1 - held.1) < 5.0,
        "latched: it stayed ({held:?} → {after_stop:?})"
    );

    // 6. The audit log attributes each decision to its endpoint.
    let pymavlink_calls = gcs_calls(&rig, "gcs:pymavlink", |c| {
        c.iter()
            .any(|c| c["reason"].as_str().is_some_and(|r| r.contains("latched")))
    })
    .await;
    let targets = |calls: &[Value], decision: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|c| c["decision"] == decision)
            .map(|c| c["target"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let allowed = targets(&pymavlink_calls, "allow");
    for want in [
        "mavlink:COMMAND_LONG:MAV_CMD_COMPONENT_ARM_DISARM",
        "mavlink:COMMAND_LONG:MAV_CMD_NAV_TAKEOFF",
        "mavlink:COMMAND_INT:MAV_CMD_DO_REPOSITION",
    ] {
        assert!(
            allowed.iter().any(|t| t == want),
            "{want} allowed: {pymavlink_calls:?}"
        );
    }
    let denied_reasons: Vec<&str> = pymavlink_calls
        .iter()
        .filter(|c| c["decision"] == "deny")
        .filter_map(|c| c["reason"].as_str())
        .collect();
    for want in ["control lease", "latched"] {
        assert!(
            denied_reasons.iter().any(|r| r.contains(want)),
            "a refusal for {want}: {denied_reasons:?}"
        );
    }
    assert!(
        pymavlink_calls.iter().all(|c| c["subject"]
            .as_str()
            .is_some_and(|s| s.contains("system 255"))),
        "{pymavlink_calls:?}"
    );
    let mavproxy_calls = gcs_calls(&rig, "gcs:mavproxy", |c| !c.is_empty()).await;
    assert!(
        targets(&mavproxy_calls, "allow")
            .iter()
            .any(|t| t == "mavlink:COMMAND_INT:MAV_CMD_DO_REPOSITION"),
        "{mavproxy_calls:?}"
    );
    let monitor_calls = gcs_calls(&rig, "gcs:watch", |c| !c.is_empty()).await;
    assert!(
        !monitor_calls.is_empty() && monitor_calls.iter().all(|c| c["decision"] == "deny"),
        "{monitor_calls:?}"
    );

    // 7. The telemetry log, read back by pymavlink's own tlog reader.
    let log = station(&["tlog".into(), "--path".into(), tlog.display().to_string()]);
    let count = |t: &str| log["counts"][t].as_u64().unwrap_or(0);
    assert!(
        count("HEARTBEAT") >= 5 && count("GLOBAL_POSITION_INT") >= 20,
        "{log}"
    );
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let first = log["first"].as_f64().unwrap_or(0.0);
    assert!(
        (now_s - 600.0..=now_s).contains(&first),
        "stamps are seconds since 1970: {log}"
    );
    let _ = std::fs::remove_file(&tlog);
    let _ = std::fs::remove_dir_all(&state_dir);
    eprintln!(
        "lease: {lease}\nmonitor: {monitor}\nflown: {flown}\nmavproxy reached {reached:?}\nlatched: {latched}"
    );
}
