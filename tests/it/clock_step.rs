//! Wall-clock steps while flying (issue 21): the daemon runs under libfaketime, whose
//! timestamp file the test rewrites to step the daemon's `CLOCK_REALTIME` by ±1 h, leaving
//! `CLOCK_MONOTONIC` alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`). Everything that times the
//! flight (the lease, rate limits, command timeouts, heartbeat-loss detection, the e-stop
//! ladder) runs on the monotonic clock, so nothing changes; the audit records' wall times
//! prove the step reached the daemon. Token expiry follows the wall clock: the sans-IO test
//! `auth::tests::a_wall_clock_step_moves_token_expiry_and_nothing_monotonic` shows it.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::flight_rig::{Rig, RigSetup, at, offset};

/// libfaketime, from the Debian package `libfaketime` (`tests/setup` installs `faketime`).
fn libfaketime() -> PathBuf {
    [
        "x86_64-linux-gnu",
        "aarch64-linux-gnu",
        "arm-linux-gnueabihf",
    ]
    .iter()
    .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketime.so.1")))
    .find(|p| p.exists())
    .expect("libfaketime is missing: run tests/setup (Debian package faketime)")
}

fn envelope() -> String {
    format!(
        "[envelope]\n\
         altitude_m_max = 40.0\n\
         \n\
         [[envelope.keep_in]]\n\
         name = \"field\"\n\
         polygon_lat_lon_deg = [{}, {}, {}, {}]\n",
        at(-200.0, -200.0),
        at(-200.0, 200.0),
        at(200.0, 200.0),
        at(200.0, -200.0),
    )
}

fn unix_s_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The wall time (Unix seconds) of the daemon's newest audit record.
fn newest_record_unix_s(rig: &Rig) -> i64 {
    let dir = rig.broker().dev.path("state/audit");
    let records = flight_companion::audit::tail_command(&dir, 1, true).unwrap();
    let record: Value = serde_json::from_str(records.last().unwrap()).unwrap();
    record["time_unix_ms"].as_i64().unwrap() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_a_wall_clock_step_of_an_hour_while_flying_changes_nothing_monotonic() {
    let faked = tempfile::tempdir().unwrap();
    let timestamp_file = faked.path().join("faketime.rc");
    std::fs::write(&timestamp_file, "+0\n").unwrap();
    let library = libfaketime();
    let env = [
        ("LD_PRELOAD", library.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", timestamp_file.to_str().unwrap()),
        // Read the file at every call, so a rewrite is a step.
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let envelope = envelope();
    let mut rig = Rig::start_setup(
        "clock-step",
        RigSetup {
            envelope: &envelope,
            daemon_env: &env,
            ..RigSetup::default()
        },
    )
    .await;
    rig.fly("takeoff", json!({"altitude_m": 10.0})).await;
    let legs = [("+3600", 3600, 30.0), ("-3600", -3600, -30.0)];
    for (spec, step_s, north_m) in legs {
        std::fs::write(&timestamp_file, format!("{spec}\n")).unwrap();
        // The step reached the daemon: its next record is stamped an hour away.
        let status = rig.status().await;
        let skew = newest_record_unix_s(&rig) - unix_s_now();
        assert!(
            (skew - step_s).abs() < 120,
            "{spec}: the daemon's records are {skew} s off the real clock"
        );
        // Heartbeat-loss detection and the health summary did not see an hour pass.
        let age = status["vehicle"]["link"]["heartbeat_age_ms"]
            .as_u64()
            .unwrap();
        assert!(age < 3000, "{spec}: heartbeat age {age} ms");
        assert_ne!(status["health"]["state"], "failed", "{spec}: {status}");
        assert_eq!(
            status["health"]["alerts"]["link_degraded"], false,
            "{spec}: {status}"
        );
        // The lease is still ours, the rate limits let a goto through, its timeouts hold.
        let (lat, lon) = offset(north_m, 0.0);
        let started = Instant::now();
        rig.fly(
            "goto",
            json!({"latitude_deg": lat, "longitude_deg": lon, "altitude_m": 10.0}),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(60), "{spec}");
    }
    // The e-stop ladder after both steps: the stop is obeyed at once.
    let lines = rig.sim_lines();
    let (stop, _) = rig
        .tool("emergency_stop", json!({"reason": "clock test"}))
        .await;
    assert_eq!(stop["isError"], false, "{stop}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig
        .sim
        .output()
        .lines()
        .skip(lines)
        .any(|l| l.starts_with("sim: mode BRAKE"))
    {
        assert!(Instant::now() < deadline, "no stop: {}", rig.sim.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = rig.status().await;
    assert_eq!(status["emergency_stop"]["latched"], true, "{status}");
}
