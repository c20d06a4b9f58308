//! Simulator flights over MCP through Mosquitto: the flight tools end to end, the envelope's
//! refusals (nothing moves, nothing reaches the autopilot), the battery reserve, and the
//! breach action under injected wind, timed in simulated time.

use std::time::Duration;

use serde_json::{Value, json};

use crate::flight_rig::{Rig, at, from_home, offset, sim_time_s};

/// A square field 200 m across around home, a keep-out circle 40 m east of home (a tower),
/// a 40 m ceiling.
fn field_envelope() -> String {
    format!(
        "[envelope]\n\
         altitude_m_max = 40.0\n\
         breach_hold_s = 2.0\n\
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

fn goto(north_m: f64, east_m: f64, altitude_m: f64) -> Value {
    let (lat, lon) = offset(north_m, east_m);
    json!({"latitude_deg": lat, "longitude_deg": lon, "altitude_m": altitude_m})
}

fn distance(r: &crate::flight_rig::Reported, north_m: f64, east_m: f64) -> f64 {
    (r.north_m - north_m).hypot(r.east_m - east_m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_mcp_goto_inside_arrives_and_refused_gotos_leave_the_vehicle_still() {
    let mut rig = Rig::start("flight-goto", false, 5.0, &field_envelope()).await;

    let result = rig.fly("takeoff", json!({"altitude_m": 10.0})).await;
    let altitude = result["vehicle"]["altitude_m"].as_f64().unwrap();
    assert!((altitude - 10.0).abs() < 1.0, "{result}");
    assert_eq!(result["vehicle"]["armed"], true, "{result}");

    let result = rig.fly("goto", goto(30.0, -20.0, 15.0)).await;
    let v = &result["vehicle"];
    let (n, e) = from_home(
        v["latitude_deg"].as_f64().unwrap(),
        v["longitude_deg"].as_f64().unwrap(),
    );
    assert!((n - 30.0).hypot(e + 20.0) < 2.0, "arrived: {result}");
    assert!((rig.position().altitude_m - 15.0).abs() < 1.0);

    // Refusals: each says why, and neither the vehicle nor the autopilot hears of it.
    let lines_before = rig.sim_lines();
    let here = rig.position();
    let outside = rig.refused("goto", goto(150.0, 0.0, 15.0)).await;
    assert!(outside.contains("`field`"), "{outside}");
    let through = rig.refused("goto", goto(-20.0, 70.0, 15.0)).await;
    assert!(through.contains("`tower`"), "{through}");
    let above = rig.refused("goto", goto(30.0, -20.0, 50.0)).await;
    assert!(
        above.contains("ceiling") && above.contains("35"),
        "the highest allowed target is 40 m minus the 5 m margin: {above}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rig.motion_commands_since(lines_before),
        Vec::<String>::new()
    );
    let still = rig.position();
    assert!(
        distance(&still, here.north_m, here.east_m) < 1.0
            && (still.altitude_m - here.altitude_m).abs() < 0.5,
        "the vehicle did not move: {here:?} -> {still:?}"
    );

    // Below the battery reserve: no new goal, but the way down is open.
    // 13.9 V on 4S is about 20 %: below the 30 % reserve, above the 10 % critical level at
    // which the daemon's own failsafe would land the vehicle.
    rig.set_param("SIM_BATT_VOLTAGE", 13.9);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reserve = loop {
        let (result, _) = rig.tool("goto", goto(20.0, 0.0, 15.0)).await;
        let message = result["structuredContent"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if message.contains("reserve") {
            assert_eq!(
                result["structuredContent"]["outcome"], "refused",
                "{result}"
            );
            break message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the empty battery was never seen: {result}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reserve.contains("land") || reserve.contains("return"),
        "{reserve}"
    );
    let climb = rig.refused("takeoff", json!({"altitude_m": 20.0})).await;
    assert!(!climb.is_empty());
    let result = rig.fly("land", json!({})).await;
    assert_eq!(result["vehicle"]["armed"], false, "{result}");
    assert!(rig.position().altitude_m < 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_mcp_wind_drift_breach_holds_within_100_ms_of_simulated_time() {
    // A 40 m circle around home; the wind carries the vehicle south out of it.
    let envelope = format!(
        "[envelope]\n\
         breach_hold_s = 2.0\n\
         breach_action = \"land\"\n\
         \n\
         [[envelope.keep_in]]\n\
         name = \"pen\"\n\
         center_lat_lon_deg = {}\n\
         radius_m = 40.0\n",
        at(0.0, 0.0)
    );
    // Speedup 2: a wall-clock loop turn of the daemon counts twice in simulated time.
    let mut rig = Rig::start("flight-breach", false, 2.0, &envelope).await;
    rig.fly("takeoff", json!({"altitude_m": 6.0})).await;
    let lines_before = rig.sim_lines();
    rig.set_param("SIM_WIND_DIR", 0.0);
    // Half the wind is left uncancelled: 15 m/s of drift, more than the vehicle can fly against.
    rig.set_param("SIM_WIND_SPD", 30.0);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while rig.position().north_m.hypot(rig.position().east_m) <= 41.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wind did not carry the vehicle out: {:?}\n--- daemon:\n{}",
            rig.position(),
            rig.daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !rig.sim.output().contains("sim: mode BRAKE") {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            rig.sim.output().contains("sim: mode BRAKE"),
            "no hold after the breach at {:?}\n--- daemon:\n{}",
            rig.position(),
            rig.daemon.output()
        );
    }
    let hold = rig
        .sim
        .output()
        .lines()
        .find(|l| l.starts_with("sim: mode BRAKE"))
        .unwrap()
        .to_owned();
    let t_hold_mode = sim_time_s(&hold);
    // The first command the daemon sent after the wind started: the hold.
    let commands = rig.motion_commands_since(lines_before);
    let first = commands.first().expect("the daemon sent the hold");
    assert!(
        first.contains("MAV_CMD_DO_SET_MODE"),
        "the hold is the first command: {commands:?}"
    );
    let t_command = sim_time_s(first);
    // The first reported position outside the circle.
    let positions = rig.positions.lock().unwrap().clone();
    let breach = positions
        .iter()
        .find(|p| p.north_m.hypot(p.east_m) > 40.0)
        .copied()
        .unwrap_or_else(|| panic!("no reported position outside the pen: {positions:?}"));
    let latency_s = t_command - breach.t_s;
    println!(
        "breach reported at t={:.3} s ({:.1} m from the centre), hold command at t={t_command:.3} s, \
         BRAKE at t={t_hold_mode:.3} s: {:.0} ms of simulated time",
        breach.t_s,
        breach.north_m.hypot(breach.east_m),
        latency_s * 1000.0
    );
    assert!(
        (0.0..=0.100).contains(&latency_s),
        "the breach action started {:.0} ms after the breach report (simulated time)\n--- daemon:\n{}",
        latency_s * 1000.0,
        rig.daemon.output()
    );
    // The client heard it: a warning near the margin, then the breach with the action.
    let level_is = |m: &crate::mcp_client::Seen, level: &str| {
        m.payload.as_ref().is_some_and(|p| {
            p["method"] == "notifications/message"
                && p["params"]["level"] == level
                && p["params"]["logger"] == "flight-companion.envelope"
        })
    };
    let mut earlier = Vec::new();
    let breach_note = rig
        .client
        .wait_for(
            |m| level_is(m, "error"),
            Duration::from_secs(10),
            &mut earlier,
        )
        .await
        .unwrap_or_else(|| panic!("no breach notification; saw {earlier:?}"));
    let text = breach_note.payload.unwrap()["params"]["data"]["message"].to_string();
    assert!(
        text.contains("`pen`") && text.contains("holds position") && text.contains("land"),
        "{text}"
    );
    let warning = earlier
        .iter()
        .find(|m| level_is(m, "warning"))
        .unwrap_or_else(|| panic!("no warning before the breach: {earlier:?}"));
    let text = warning.payload.as_ref().unwrap()["params"]["data"]["message"].to_string();
    assert!(text.contains("keep-in `pen`"), "{text}");

    // Then the configured action, without the ground.
    let land = rig
        .sim
        .wait_for_line("sim: mode LAND", Duration::from_secs(30));
    // breach_hold_s is the daemon's (wall-clock) time: 2 s are 4 s of simulated time here.
    let held_s = (sim_time_s(&land) - t_command) / 2.0;
    assert!(
        (1.9..3.5).contains(&held_s),
        "held {held_s} s before landing"
    );
    // Only recovery is accepted meanwhile.
    let refusal = rig.refused("goto", json!({"latitude_deg": crate::flight_rig::HOME_LAT_DEG, "longitude_deg": crate::flight_rig::HOME_LON_DEG, "altitude_m": 6.0})).await;
    assert!(
        refusal.contains("hold") && refusal.contains("land"),
        "{refusal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_mcp_px4_takes_off_flies_to_a_point_and_lands() {
    let mut rig = Rig::start("flight-px4", true, 5.0, &field_envelope()).await;
    let result = rig.fly("takeoff", json!({"altitude_m": 8.0})).await;
    assert!(
        (result["vehicle"]["altitude_m"].as_f64().unwrap() - 8.0).abs() < 1.0,
        "{result}"
    );
    let takeoff = rig.sim.output().lines().any(|l| {
        l.starts_with("sim: command MAV_CMD_NAV_TAKEOFF from 1/191 -> MAV_RESULT_ACCEPTED")
    });
    assert!(
        takeoff,
        "PX4 accepted the takeoff (altitude above sea level)"
    );
    rig.fly("goto", goto(-25.0, 30.0, 12.0)).await;
    assert!(
        distance(&rig.position(), -25.0, 30.0) < 2.0,
        "{:?}",
        rig.position()
    );
    let result = rig.fly("land", json!({})).await;
    assert_eq!(result["vehicle"]["armed"], false, "{result}");
    assert!(rig.sim.output().contains("sim: mode AUTO.LAND"));
    assert!(
        !rig.daemon.output().contains("whitelist violation"),
        "{}",
        rig.daemon.output()
    );
}
