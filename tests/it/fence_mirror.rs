//! The envelope mirrored into the autopilot's own fence (issue 18), over MCP through
//! Mosquitto (mTLS) against the simulator of each firmware: `mirror_fence` uploaded, read back
//! and verified; READ_ONLY and OPERATOR callers refused; `set_parameter FENCE_ENABLE` still
//! refused for ADMIN; the status's match, and the mismatch after another ground station
//! clears the fence; the simulator's own fence turning the vehicle back with the companion
//! killed.

use std::time::Duration;

use flight_companion::link::MavMessage;
use flight_companion::link::dialect::{
    COMMAND_INT_DATA, MISSION_CLEAR_ALL_DATA, MavCmd, MavFrame, MavMissionType, MavParamType,
    PARAM_SET_DATA,
};
use serde_json::{Value, json};

use crate::flight_rig::{Rig, RigSetup, at, offset};
use crate::mcp_client::{TestClient, wait_online};

/// A square field 200 m across around home, a keep-out circle (a mast) and a keep-out
/// triangle (a barn), a 40 m ceiling.
fn envelope() -> String {
    format!(
        "[envelope]\n\
         altitude_m_max = 40.0\n\
         \n\
         [[envelope.keep_in]]\n\
         name = \"field\"\n\
         polygon_lat_lon_deg = [{}, {}, {}, {}]\n\
         \n\
         [[envelope.keep_out]]\n\
         name = \"mast\"\n\
         center_lat_lon_deg = {}\n\
         radius_m = 8.0\n\
         \n\
         [[envelope.keep_out]]\n\
         name = \"barn\"\n\
         polygon_lat_lon_deg = [{}, {}, {}]\n",
        at(-100.0, -100.0),
        at(-100.0, 100.0),
        at(100.0, 100.0),
        at(100.0, -100.0),
        at(0.0, 40.0),
        at(-60.0, -60.0),
        at(-60.0, -40.0),
        at(-40.0, -50.0),
    )
}

async fn rig(tag: &str, px4: bool) -> Rig {
    let envelope = envelope();
    Rig::start_setup(
        tag,
        RigSetup {
            px4,
            envelope: &envelope,
            ..RigSetup::default()
        },
    )
    .await
}

async fn call(client: &mut TestClient, name: &str, arguments: Value) -> Value {
    let (r, _) = client
        .call("tools/call", json!({"name": name, "arguments": arguments}))
        .await;
    r
}

fn text(r: &Value) -> String {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until `get_status.autopilot_fence` satisfies `done`; returns it.
async fn fence_status(rig: &mut Rig, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let status = rig.status().await;
        let fence = status["autopilot_fence"].clone();
        if done(&fence) {
            return fence;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{fence}\n--- daemon:\n{}",
            rig.daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn mirror(rig: &mut Rig, tag: &str) -> Value {
    let mut admin = rig.admin_client(tag).await;
    let started = std::time::Instant::now();
    let r = call(&mut admin, "mirror_fence", json!({})).await;
    // The figure the closing note quotes (wall clock, simulator at 5x).
    eprintln!("{tag}: mirror_fence answered in {:?}", started.elapsed());
    let result = r["result"]["structuredContent"].clone();
    assert_eq!(
        result["verified"],
        true,
        "{r}\n--- daemon:\n{}",
        rig.daemon.output()
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_mirror_verified_in_both_dialects_and_a_ground_stations_clear_shows() {
    for (px4, tag) in [(false, "fence-ap"), (true, "fence-px4")] {
        let mut rig = rig(tag, px4).await;
        // The check at link-up: the simulator starts with no fence list.
        let before = fence_status(&mut rig, |f| f["matches_envelope"] == "false").await;
        assert!(
            before["differences"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == "autopilot fence has 0 inclusion polygons; envelope has 1"),
            "{before}"
        );
        let result = mirror(&mut rig, tag).await;
        assert_eq!(result["items"], 4 + 1 + 3, "{result}");
        assert_eq!(result["zones"]["inclusion_polygons"], 1, "{result}");
        assert_eq!(result["zones"]["exclusion_polygons"], 1, "{result}");
        assert_eq!(result["zones"]["exclusion_circles"], 1, "{result}");
        let ceiling = if px4 {
            "GF_MAX_VER_DIST=40"
        } else {
            "FENCE_ALT_MAX=40"
        };
        assert!(
            result["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == ceiling),
            "{result}"
        );
        let after = fence_status(&mut rig, |f| f["matches_envelope"] == "true").await;
        assert!(after["verified_age_s"].is_number(), "{after}");

        // Another ground station clears the fence list and switches the fence off.
        rig.gcs_send(&MavMessage::MISSION_CLEAR_ALL(MISSION_CLEAR_ALL_DATA {
            target_system: 1,
            target_component: 1,
            mission_type: MavMissionType::MAV_MISSION_TYPE_FENCE,
        }));
        let (off, kind) = if px4 {
            ("GF_ACTION", MavParamType::MAV_PARAM_TYPE_INT32)
        } else {
            ("FENCE_ENABLE", MavParamType::MAV_PARAM_TYPE_INT8)
        };
        rig.gcs_send(&MavMessage::PARAM_SET(PARAM_SET_DATA {
            param_value: 0.0,
            target_system: 1,
            target_component: 1,
            param_id: off.into(),
            param_type: kind,
        }));
        let changed = fence_status(&mut rig, |f| f["matches_envelope"] == "false").await;
        let differences = changed["differences"].to_string();
        assert!(
            differences.contains("autopilot fence has 0 inclusion polygons; envelope has 1"),
            "{changed}"
        );
        assert!(differences.contains(&format!("{off} is 0")), "{changed}");
        assert_eq!(
            changed["autopilot_zones"]["inclusion_polygons"], 0,
            "{changed}"
        );

        // Audited: who mirrored, what, and the verification.
        let dir = rig.broker().dev.path("state/audit");
        let records = flight_companion::audit::tail_command(&dir, usize::MAX, true)
            .unwrap_or_default()
            .join("\n");
        assert!(records.contains("fence_mirrored"), "{records}");
        assert!(records.contains("8 fence items"), "{records}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_mirror_refused_below_admin_and_fence_parameters_stay_closed() {
    let mut rig = rig("fence-roles", false).await;
    // The rig's own client is an OPERATOR: the tool is not even listed for it.
    let r = call(&mut rig.client, "mirror_fence", json!({})).await;
    assert!(
        r["result"]["structuredContent"]["verified"].is_null(),
        "{r}"
    );
    assert!(
        r.get("error").is_some() || r["result"]["isError"] == true,
        "{r}"
    );
    let mut reader = TestClient::connect(rig.broker(), "reader-fence-roles").await;
    reader.token = std::fs::read_to_string(rig.broker().dev.path("tokens/read_only.jwt"))
        .ok()
        .map(|t| t.trim().to_owned());
    wait_online(&mut reader).await;
    reader.initialize("2025-11-25").await;
    let r = call(&mut reader, "mirror_fence", json!({})).await;
    assert!(
        r["result"]["structuredContent"]["verified"].is_null(),
        "{r}"
    );
    assert!(
        r.get("error").is_some() || r["result"]["isError"] == true,
        "{r}"
    );

    // The mirror's path is the only one: set_parameter of a fence parameter stays refused.
    let mut admin = rig.admin_client("fence-roles").await;
    let r = call(
        &mut admin,
        "set_parameter",
        json!({"name": "FENCE_ENABLE", "value": 0}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text(&r).contains("never writable"), "{r}");
    let fence = fence_status(&mut rig, |f| f["checked_age_s"].is_number()).await;
    assert_eq!(fence["matches_envelope"], "false", "{fence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_mirror_holds_with_the_companion_killed() {
    let mut rig = rig("fence-killed", false).await;
    mirror(&mut rig, "fence-killed").await;
    rig.fly("arm", json!({})).await;
    rig.fly("takeoff", json!({"altitude_m": 15.0})).await;
    rig.daemon.signal("KILL");
    rig.daemon.wait_exit(Duration::from_secs(10));
    // Another station flies the vehicle out of the field: DO_REPOSITION 250 m north.
    let (lat, lon) = offset(250.0, 0.0);
    rig.gcs_send(&MavMessage::COMMAND_INT(COMMAND_INT_DATA {
        param1: -1.0,
        param2: 1.0,
        param3: 0.0,
        param4: f32::NAN,
        x: (lat * 1e7) as i32,
        y: (lon * 1e7) as i32,
        z: 15.0,
        command: MavCmd::MAV_CMD_DO_REPOSITION,
        target_system: 1,
        target_component: 1,
        frame: MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
        current: 0,
        autocontinue: 0,
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !rig.sim.output().contains("sim: mode RTL") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RTL: at {:?}\n{}",
            rig.position(),
            rig.sim.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rig.sim.output().contains("Fence Breached"),
        "{}",
        rig.sim.output()
    );
    // The inclusion polygon's edge is 100 m north; the vehicle turns back within its
    // stopping distance and comes home.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let farthest_m = rig
        .positions
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.north_m)
        .fold(0.0, f64::max);
    assert!(farthest_m < 125.0, "flew {farthest_m} m north");
    let p = rig.position();
    assert!(p.north_m < 90.0, "not coming home: {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_mirror_at_link_up_when_configured() {
    let envelope = envelope().replacen(
        "[envelope]\n",
        "[envelope]\nmirror_to_autopilot = true\nmirror_fence_action = \"land\"\n",
        1,
    );
    let mut rig = Rig::start_setup(
        "fence-auto",
        RigSetup {
            px4: true,
            envelope: &envelope,
            ..RigSetup::default()
        },
    )
    .await;
    // Nobody called mirror_fence: the check at link-up found the empty fence and mirrored.
    let fence = fence_status(&mut rig, |f| f["matches_envelope"] == "true").await;
    assert_eq!(fence["mirror_to_autopilot"], true, "{fence}");
    assert_eq!(fence["autopilot_zones"]["inclusion_polygons"], 1, "{fence}");
    let (r, _) = rig
        .tool("get_parameter", json!({"name": "GF_ACTION"}))
        .await;
    assert_eq!(r["structuredContent"]["parameter"]["value"], 5.0, "{r}");
    let dir = rig.broker().dev.path("state/audit");
    let records = flight_companion::audit::tail_command(&dir, usize::MAX, true)
        .unwrap_or_default()
        .join("\n");
    assert!(
        records.contains("fence_mirrored") && records.contains("mirror_to_autopilot"),
        "{records}"
    );
}
