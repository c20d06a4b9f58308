//! Full disks and read-only state (issue 21): the audit log and the capture store on small
//! tmpfs file systems that fill while the simulator flies, and a read-only state directory
//! at start-up. The tests mount file systems, so they run as root (as CI does); every mount is
//! a tmpfs under the test's own temporary directory, lazily unmounted when the test ends.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::flight_rig::{Rig, RigSetup, at};
use crate::support::broker::{Broker, DevDir, s};

/// A tmpfs of `size` mounted on `path`, unmounted (lazily: a daemon may still hold files in
/// it) when dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {}: these tests need root (CI runs as root)",
            path.display()
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .expect("mount");
        assert!(status.success(), "remount,ro {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system of `dir` with one file until a write fails; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 4096];
    while let Ok(n) = file.write(&chunk) {
        if n == 0 {
            break;
        }
    }
    path
}

/// A field 400 m across around home, a 40 m ceiling.
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

const CAMERA: &str = "[camera]\nenabled = true\ncaptures_dir = \"captures\"\nsource = \"synthetic\"\n\
    width_px = 320\nheight_px = 240\nframe_rate_hz = 4.0\nframe_age_ms_max = 1500\n";

/// Polls `get_status` (each call is itself a record) until `done` holds; returns the status.
async fn status_until(rig: &mut Rig, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = rig.status().await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 20 s: {}\n--- daemon:\n{}",
            status["audit"],
            rig.daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of a tool result that must be an error.
fn error_text(result: &Value) -> String {
    assert_eq!(result["isError"], true, "{result}");
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The audit and capture directories each on a 1 MiB tmpfs, filled while the vehicle hovers:
/// pictures are refused with the reason and nothing else changes; once the log cannot be
/// written, what must be recorded first (a goto, the e-stop reset) is refused with the
/// reason, the alert is up, and the emergency stop, hold and reads still work; with space
/// again the log resumes by itself, records what it lost, and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_disks_while_flying_refuse_what_cannot_be_recorded_and_recover() {
    let mounts: Mutex<Vec<Tmpfs>> = Mutex::new(Vec::new());
    let prepare = |dev: &DevDir| {
        let mut mounts = mounts.lock().unwrap();
        mounts.push(Tmpfs::mount(&dev.path("state"), "1m"));
        mounts.push(Tmpfs::mount(&dev.path("captures"), "1m"));
    };
    let envelope = envelope();
    let mut rig = Rig::start_setup(
        "storage-full",
        RigSetup {
            envelope: &envelope,
            sections: CAMERA,
            prepare: Some(&prepare),
            ..RigSetup::default()
        },
    )
    .await;
    let state = rig.broker().dev.path("state");
    let captures = rig.broker().dev.path("captures");
    rig.fly("takeoff", json!({"altitude_m": 10.0})).await;

    // The capture store full: the picture is refused with the reason, the flight goes on.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (saved, _) = rig
            .tool("capture_image", json!({"max_width_px": 160, "save": true}))
            .await;
        if saved["isError"] != true {
            break;
        }
        assert!(Instant::now() < deadline, "no capture: {saved}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let captures_filler = fill(&captures);
    let (refused, _) = rig
        .tool("capture_image", json!({"max_width_px": 160, "save": true}))
        .await;
    let text = error_text(&refused);
    assert!(text.contains("is full"), "{text}");
    let (unsaved, _) = rig
        .tool("capture_image", json!({"max_width_px": 160}))
        .await;
    assert_eq!(
        unsaved["isError"], false,
        "a picture not kept needs no disk"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "half files left: {leftovers:?}");

    // The audit log's disk full: the next records fail, the status and the alert say so.
    let audit_filler = fill(&state);
    let status = status_until(&mut rig, "audit_unwritable", |s| {
        s["audit"]["unwritable"].is_string()
    })
    .await;
    let why = status["audit"]["unwritable"].as_str().unwrap();
    assert!(why.contains("No space left on device"), "{why}");
    let status = status_until(&mut rig, "the alert", |s| {
        s["health"]["alerts"]["audit_unwritable"] == true
    })
    .await;
    assert_eq!(status["vehicle"]["mode"]["armed"], true, "{status}");

    // A goto must be on record before it is answered: refused, nothing sent.
    let lines = rig.sim_lines();
    let before = rig.position();
    let (goto, _) = rig
        .tool(
            "goto",
            json!({"latitude_deg": crate::flight_rig::offset(50.0, 0.0).0,
                   "longitude_deg": crate::flight_rig::offset(50.0, 0.0).1,
                   "altitude_m": 10.0}),
        )
        .await;
    let text = error_text(&goto);
    assert!(
        text.contains("audit log cannot be written") && text.contains("No space left"),
        "{text}"
    );
    assert!(
        rig.motion_commands_since(lines).is_empty(),
        "{:?}",
        rig.motion_commands_since(lines)
    );
    // Towards safety is never refused for the disk: hold, then the emergency stop.
    rig.fly("hold", json!({})).await;
    let after = rig.position();
    assert!(
        (after.north_m - before.north_m).abs() < 3.0 && (after.altitude_m - 10.0).abs() < 2.0,
        "the vehicle kept hovering: {before:?} → {after:?}"
    );
    let lines = rig.sim_lines();
    let (stop, _) = rig
        .tool("emergency_stop", json!({"reason": "full disk test"}))
        .await;
    assert_eq!(stop["isError"], false, "{stop}");
    // The ladder's first command reaches the autopilot (the vehicle already holds in BRAKE,
    // so the mode does not change) and the stop is latched.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.motion_commands_since(lines).is_empty() {
        assert!(Instant::now() < deadline, "no stop: {}", rig.sim.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stop["structuredContent"]["emergency_stop"]["latched"], true,
        "{stop}"
    );
    // The reset lets the vehicle fly again: it must be on record first.
    let mut admin = rig.admin_client("storage-full").await;
    let (reset, _) = admin
        .call(
            "tools/call",
            json!({"name": "reset_emergency_stop", "arguments": {}}),
        )
        .await;
    let text = error_text(&reset["result"]);
    assert!(text.contains("audit log cannot be written"), "{text}");

    // Space again: the log resumes by itself within its retry (1 s), the alert clears, the
    // reset and the landing go through.
    std::fs::remove_file(&audit_filler).unwrap();
    std::fs::remove_file(&captures_filler).unwrap();
    status_until(&mut rig, "recovery", |s| {
        s["audit"]["unwritable"].is_null() && s["health"]["alerts"]["audit_unwritable"] == false
    })
    .await;
    let (reset, _) = admin
        .call(
            "tools/call",
            json!({"name": "reset_emergency_stop", "arguments": {}}),
        )
        .await;
    assert_eq!(reset["result"]["isError"], false, "{reset}");
    let (saved, _) = rig
        .tool("capture_image", json!({"max_width_px": 160, "save": true}))
        .await;
    assert_eq!(saved["isError"], false, "{saved}");
    rig.fly("land", json!({})).await;

    // The log verifies, and says what it lost and when.
    let audit_dir = state.join("audit");
    let lines = flight_companion::audit::verify_command(&audit_dir, &Default::default())
        .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert!(lines[0].ends_with(": ok"), "{lines:?}");
    let records = flight_companion::audit::tail_command(&audit_dir, usize::MAX, true).unwrap();
    let lost: Vec<&String> = records
        .iter()
        .filter(|r| r.contains("audit_records_lost"))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains("No space left on device"), "{lost:?}");
    assert!(
        records
            .iter()
            .any(|r| r.contains("tools/call:reset_emergency_stop") && r.contains("\"ok\"")),
        "the reset's record"
    );
    drop(rig);
    drop(mounts);
}

/// A read-only state directory: `check-config` and `run` refuse it, naming the directory.
#[test]
fn storage_a_read_only_state_directory_is_refused_at_start() {
    let broker = Broker::start("storage-ro");
    let state = broker.dev.path("state");
    let mount = Tmpfs::mount(&state, "1m");
    mount.remount_read_only();
    let config = broker.dev.path("drone.toml");
    let check = Command::new(crate::support::binary())
        .args(["check-config", s(&config)])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr).into_owned();
    assert_eq!(check.status.code(), Some(2), "{said}");
    assert!(
        said.contains("read-only file system") && said.contains(s(&state)),
        "{said}"
    );
    let mut daemon = crate::support::flight_companion("daemon", &["run", "--config", s(&config)]);
    let code = daemon.wait_exit(Duration::from_secs(20));
    let said = daemon.output();
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {said}");
    assert!(
        said.contains("read-only file system") && said.contains(s(&state)),
        "{said}"
    );
    drop(daemon);
    drop(mount);
}

/// The end-to-end half of the power-cut loop (`audit::power_cut_tests` cuts every byte in
/// process): the daemon killed with -9 after answered calls, its newest audit file cut inside
/// its last record at a few offsets (a power cut's torn write), restarted each time: it
/// starts, the log verifies with exactly that torn tail, and every answered call is there.
#[test]
fn storage_a_torn_audit_tail_after_kill_9_restarts_and_keeps_every_answered_call() {
    let broker = Broker::start("storage-torn");
    let config = broker.dev.path("drone.toml");
    let audit_dir = broker.dev.path("state/audit");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..3_u64 {
        let mut daemon =
            crate::support::flight_companion("daemon", &["run", "--config", s(&config)]);
        daemon.wait_for_line("MCP server online", Duration::from_secs(20));
        let cid = format!("ground-torn{round}");
        let answered: Vec<String> = runtime.block_on(async {
            let mut client = crate::mcp_client::TestClient::connect(&broker, &cid).await;
            let init = client.initialize("2025-11-25").await;
            assert!(init.get("result").is_some(), "{init}");
            let mut ids = Vec::new();
            for _ in 0..3 {
                let (r, _) = client
                    .call("tools/call", json!({"name": "get_status", "arguments": {}}))
                    .await;
                assert!(r.get("result").is_some(), "{r}");
                ids.push(r["id"].to_string());
            }
            // One more, not waited for: its record is the last one, the write the cut tears
            // (an answered call's record was synced before its answer left).
            client
                .request("tools/call", json!({"name": "get_status", "arguments": {}}))
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            ids
        });
        daemon.signal("KILL");
        daemon.wait_exit(Duration::from_secs(5));
        // Cut the newest file inside its last record: 1, 5 and 9 bytes into it.
        let files = flight_companion::audit::log::list_files(&audit_dir).unwrap();
        let newest = &files.last().unwrap().1;
        let mut last_start = 0;
        let mut last = Value::Null;
        let _ = flight_companion::audit::log::walk(&audit_dir, &[], &mut |item| {
            if let flight_companion::audit::log::Item::Record { offset, record, .. } = item {
                last_start = offset;
                last = flight_companion::audit::to_json(record);
            }
        });
        let last_id = last["event"]["Call"]["request_id"]
            .as_str()
            .unwrap_or_default();
        assert!(
            !answered.iter().any(|id| id == last_id),
            "round {round}: the last record is an answered call: {last}"
        );
        let cut_at = last_start + 1 + 4 * round;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(newest)
            .unwrap();
        file.set_len(cut_at).unwrap();
        drop(file);
        let verify = Command::new(crate::support::binary())
            .args(["audit", "verify", s(&audit_dir)])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&verify.stdout).into_owned();
        assert!(verify.status.success(), "round {round}: {said}");
        assert!(
            said.contains(&format!("ends inside a record at byte {last_start}")),
            "round {round}: {said}"
        );
        let records = flight_companion::audit::tail_command(&audit_dir, usize::MAX, true).unwrap();
        for id in &answered {
            let logged = records
                .iter()
                .filter_map(|r| serde_json::from_str::<Value>(r).ok())
                .any(|r| {
                    r["event"]["Call"]["session"] == cid.as_str()
                        && r["event"]["Call"]["request_id"] == id.as_str()
                });
            assert!(
                logged,
                "round {round}: answered call {id} is not in the log"
            );
        }
    }
    // The last restart: it starts and records what it found.
    let mut daemon = crate::support::flight_companion("daemon", &["run", "--config", s(&config)]);
    daemon.wait_for_line("MCP server online", Duration::from_secs(20));
    drop(daemon);
}
