//! Missions over MCP through Mosquitto against `sim --speedup`: a survey of a 4-vertex field
//! planned, uploaded, flown and completed with progress notifications, both dialects; a
//! mission whose leg crosses a keep-out refused before anything reaches the autopilot (the
//! autopilot's mission stays empty); a survey paused (the vehicle holds) and resumed to its
//! end. The e-stop during a mission is flown in process on virtual time
//! (`src/flight/tests/mission.rs`) and in `hil/missions/`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::flight_rig::{FLIGHT_WAIT, Rig, at, offset};
use crate::mcp_client::Seen;

/// A field 200 m across around home, a keep-out circle 40 m east of home (a tower).
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
         name = \"tower\"\n\
         center_lat_lon_deg = {}\n\
         radius_m = 8.0\n",
        at(-100.0, -100.0),
        at(-100.0, 100.0),
        at(100.0, 100.0),
        at(100.0, -100.0),
        at(0.0, 40.0),
    )
}

fn point(north_m: f64, east_m: f64) -> Value {
    let (lat, lon) = offset(north_m, east_m);
    json!([lat, lon])
}

/// A tool call with a progress token; its result and the progress messages seen.
async fn call(rig: &mut Rig, name: &str, arguments: Value) -> (Value, Vec<String>) {
    let token = format!("{name}-progress");
    let id = rig
        .client
        .request(
            "tools/call",
            json!({"name": name, "arguments": arguments, "_meta": {"progressToken": token}}),
        )
        .await;
    let rpc = rig.client.rpc_topic();
    let mut seen: Vec<Seen> = Vec::new();
    let found = rig
        .client
        .wait_for(
            |m| {
                m.topic == rpc
                    && m.payload
                        .as_ref()
                        .is_some_and(|p| p.get("method").is_none() && p.get("id") == Some(&id))
            },
            FLIGHT_WAIT * 2,
            &mut seen,
        )
        .await;
    let Some(found) = found else {
        panic!(
            "{name}: no result\n--- daemon:\n{}\n--- sim:\n{}",
            rig.daemon.output(),
            rig.sim.output()
        );
    };
    let progress = seen
        .iter()
        .filter_map(|m| m.payload.as_ref())
        .filter(|p| {
            p["method"] == "notifications/progress" && p["params"]["progressToken"] == token
        })
        .filter_map(|p| p["params"]["message"].as_str().map(str::to_owned))
        .collect();
    (found.payload.unwrap()["result"].clone(), progress)
}

/// The results of the calls `ids`, in that order (notifications and other results meanwhile
/// are kept aside).
async fn results(rig: &mut Rig, ids: &[Value]) -> Vec<Value> {
    let rpc = rig.client.rpc_topic();
    let mut found: Vec<Option<Value>> = vec![None; ids.len()];
    let deadline = tokio::time::Instant::now() + FLIGHT_WAIT * 2;
    while found.iter().any(Option::is_none) {
        let mut skipped = Vec::new();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = rig
            .client
            .wait_for(
                |m| {
                    m.topic == rpc
                        && m.payload.as_ref().is_some_and(|p| {
                            p.get("method").is_none()
                                && p.get("id").is_some_and(|id| ids.contains(id))
                        })
                },
                left,
                &mut skipped,
            )
            .await
            .unwrap_or_else(|| panic!("no results for {ids:?}\n{}", rig.daemon.output()));
        let payload = m.payload.unwrap();
        let i = ids
            .iter()
            .position(|id| Some(id) == payload.get("id"))
            .unwrap();
        found[i] = Some(payload["result"].clone());
    }
    found.into_iter().map(Option::unwrap).collect()
}

/// A mission paused as soon as its first item is reached, held, then resumed to its end.
async fn pause_and_resume(rig: &mut Rig) -> (Value, Vec<String>) {
    let start = rig
        .client
        .request(
            "tools/call",
            json!({"name": "start_mission", "arguments": {},
                                      "_meta": {"progressToken": "run"}}),
        )
        .await;
    let rpc = rig.client.rpc_topic();
    let mut skipped = Vec::new();
    let reached = rig
        .client
        .wait_for(
            |m| {
                m.topic == rpc
                    && m.payload.as_ref().is_some_and(|p| {
                        p["method"] == "notifications/progress"
                            && p["params"]["message"]
                                .as_str()
                                .is_some_and(|t| t.contains("reached"))
                    })
            },
            FLIGHT_WAIT,
            &mut skipped,
        )
        .await;
    assert!(
        reached.is_some(),
        "no item reached\n{}",
        rig.daemon.output()
    );
    let pause = rig
        .client
        .request(
            "tools/call",
            json!({"name": "pause_mission", "arguments": {}}),
        )
        .await;
    let ended = results(rig, &[start, pause]).await;
    assert_eq!(
        ended[0]["structuredContent"]["outcome"], "superseded",
        "{}",
        ended[0]
    );
    assert_eq!(
        ended[1]["structuredContent"]["outcome"], "completed",
        "{}",
        ended[1]
    );
    let held = rig.position();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let now = rig.position();
    let moved = (now.north_m - held.north_m).hypot(now.east_m - held.east_m);
    assert!(moved < 2.0, "paused, yet moved {moved:.1} m");
    call(rig, "resume_mission", json!({})).await
}

/// Plans a survey of a 60 m × 40 m field west of home, uploads it with `upload: true`, flies
/// it from 15 m (with `pause`: paused after its first item and resumed) and checks it ends
/// where `end` says, with progress on the way.
async fn survey(rig: &mut Rig, end: &str, pause: bool) {
    let field = json!([
        point(10.0, -70.0),
        point(10.0, -10.0),
        point(50.0, -10.0),
        point(50.0, -70.0)
    ]);
    // For review first: nothing uploaded.
    let (plan, _) = call(
        rig,
        "plan_survey",
        json!({"polygon": field, "altitude_m": 20.0, "forward_overlap": 0.5, "end": end}),
    )
    .await;
    let plan = &plan["structuredContent"];
    assert!(plan["lines"].as_u64().unwrap() >= 2, "{plan}");
    assert!(plan["uploaded"].is_null(), "{plan}");
    assert!(
        plan["estimated_duration_s"].as_f64().unwrap() > 0.0,
        "{plan}"
    );
    let (mission, _) = call(rig, "get_mission", json!({})).await;
    assert_eq!(mission["structuredContent"]["items"], 0, "{mission}");

    let (planned, _) = call(
        rig,
        "plan_survey",
        json!({"polygon": field, "altitude_m": 20.0, "forward_overlap": 0.5, "end": end,
               "upload": true}),
    )
    .await;
    assert_ne!(planned["isError"], true, "{planned}");
    let waypoints = planned["structuredContent"]["waypoints"].as_u64().unwrap();
    assert!(
        planned["structuredContent"]["uploaded"]["items"]
            .as_u64()
            .unwrap()
            > waypoints
    );

    let (mission, _) = call(rig, "get_mission", json!({})).await;
    let mission = &mission["structuredContent"];
    assert_eq!(mission["startable"], true, "{mission}");
    assert!(mission["waypoints"].as_array().unwrap().len() as u64 >= waypoints);

    rig.fly("takeoff", json!({"altitude_m": 15.0})).await;
    let (result, progress) = if pause {
        pause_and_resume(rig).await
    } else {
        call(rig, "start_mission", json!({})).await
    };
    assert_eq!(
        result["structuredContent"]["outcome"],
        "completed",
        "{result}\n--- daemon:\n{}\n--- sim:\n{}",
        rig.daemon.output(),
        rig.sim.output()
    );
    assert!(
        progress.iter().any(|m| m.contains("mission: item ")
            && m.contains("reached")
            && m.contains("m to go")),
        "{progress:?}"
    );
    let photos = rig
        .sim
        .output()
        .lines()
        .filter(|l| l.starts_with("sim: camera trigger at item"))
        .count() as u64;
    assert_eq!(photos, waypoints, "a photo at every survey waypoint");
    assert!(
        !rig.daemon.output().contains("whitelist violation"),
        "{}",
        rig.daemon.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mission_mcp_ardupilot_refuses_a_leg_through_a_keep_out_then_flies_a_survey_home() {
    let mut rig = Rig::start("mission-ap", false, 8.0, &envelope()).await;
    // South-west to north-east through the tower (40 m east): the vehicle's leg and both
    // ends clear of it, the leg between them not.
    let through = json!({"steps": [
        {"type": "waypoint", "latitude_deg": offset(-50.0, 10.0).0,
         "longitude_deg": offset(-50.0, 10.0).1, "altitude_m": 15.0},
        {"type": "waypoint", "latitude_deg": offset(50.0, 70.0).0,
         "longitude_deg": offset(50.0, 70.0).1, "altitude_m": 15.0}],
        "end": "return_home"});
    let (refused, _) = call(&mut rig, "upload_mission", through).await;
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("item 1 (waypoint at ")
            && text.contains("the leg from item 0 at ")
            && text.contains("crosses keep-out `tower`")
            && text.contains("nothing was sent"),
        "{text}"
    );
    assert!(
        !rig.sim.output().contains("MISSION_COUNT"),
        "nothing reached the autopilot"
    );
    let (mission, _) = call(&mut rig, "get_mission", json!({})).await;
    assert_eq!(mission["structuredContent"]["items"], 0, "{mission}");

    survey(&mut rig, "return_home", false).await;
    let status = rig.status().await;
    assert_eq!(status["vehicle"]["mode"]["armed"], false, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mission_mcp_px4_pauses_resumes_and_lands_at_the_end_of_a_survey() {
    let mut rig = Rig::start("mission-px4", true, 8.0, &envelope()).await;
    survey(&mut rig, "land", true).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = rig.status().await;
    assert_eq!(status["vehicle"]["mode"]["armed"], false, "{status}");
}
