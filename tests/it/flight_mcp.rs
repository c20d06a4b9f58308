//! Simulator flights over MCP through Mosquitto: the flight tools end to end, the envelope's
//! refusals (nothing moves, nothing reaches the autopilot), the battery reserve, and the
//! breach action under injected wind, timed in simulated time.

use std::time::Duration;

use flight_companion::link::dialect::MavCmd;
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
    // ArduPilot's percentage counts consumed mAh (SIM_BATT_VOLTAGE moves volts only): a ground
    // station's MAV_CMD_BATTERY_RESET puts it at 20 %, below the 30 % reserve, above the 10 %
    // critical level at which the daemon's own failsafe would land the vehicle.
    rig.gcs_command(
        MavCmd::MAV_CMD_BATTERY_RESET,
        [1.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
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
    // The status published with the answer says the same (not still armed and landing).
    let status = rig.status().await;
    assert_eq!(status["vehicle"]["mode"]["armed"], false, "{status}");
    assert_eq!(status["active_action"], Value::Null, "{status}");
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
    // WPNAV_SPEED at 3 m/s (within the envelope's 5 m/s, as the pre-flight check asks): GUIDED
    // holds with at most 3 m/s of authority, and the margins stay 10 m.
    rig.set_param("WPNAV_SPEED", 300.0);
    rig.fly("takeoff", json!({"altitude_m": 6.0})).await;
    let lines_before = rig.sim_lines();
    rig.set_param("SIM_WIND_DIR", 0.0);
    // The same wind at every height (SIM_WIND_T 1; SITL weakens it near the ground), half of
    // it left uncancelled: 7 m/s of drift against 3 m/s of authority carries the vehicle out
    // at about 4 m/s, under the speed limit, so this breach is the position's.
    rig.set_param("SIM_WIND_T", 1.0);
    rig.set_param("SIM_WIND_SPD", 14.0);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut keep_alive = tokio::time::Instant::now();
    while rig.position().north_m.hypot(rig.position().east_m) <= 41.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wind did not carry the vehicle out: {:?}\n--- daemon:\n{}",
            rig.position(),
            rig.daemon.output()
        );
        // The control lease ends after 10 s without a call from its holder: keep it.
        if keep_alive.elapsed() > Duration::from_secs(2) {
            keep_alive = tokio::time::Instant::now();
            let (_, seen) = rig.tool("get_status", json!({})).await;
            rig.client.requeue(seen);
        }
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
    // (The wind's onset can also bring a short speed warning: the margin's is the one here.)
    let warning = earlier
        .iter()
        .filter(|m| level_is(m, "warning"))
        .find(|m| {
            m.payload.as_ref().is_some_and(|p| {
                p["params"]["data"]["message"]
                    .to_string()
                    .contains("near the envelope")
            })
        })
        .unwrap_or_else(|| panic!("no margin warning before the breach: {earlier:?}"));
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
    // At rest PX4's EKF2 reports CONST_POS_MODE (flags 1023): the rig's readiness wait already
    // saw a trusted position on the ground.
    let status = rig.status().await;
    assert_eq!(
        status["vehicle"]["estimator"]["position_valid"], true,
        "{status}"
    );
    // A return altitude of 50 m is above the field's 40 m ceiling (35 m with its margin): the
    // pre-flight check says so and takeoff is refused until it is fixed.
    rig.set_param("RTL_RETURN_ALT", 50.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let findings = loop {
        let status = rig.status().await;
        let findings = status["preflight"]["findings"].as_array().unwrap().clone();
        if findings.iter().any(|f| f["parameter"] == "RTL_RETURN_ALT") {
            break findings;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        findings.iter().any(|f| f["parameter"] == "RTL_RETURN_ALT"
            && f["severity"] == "error"
            && f["set_to"] == "35 or less"),
        "{findings:?}"
    );
    let refusal = rig.refused("takeoff", json!({"altitude_m": 8.0})).await;
    assert!(refusal.contains("RTL_RETURN_ALT"), "{refusal}");
    rig.set_param("RTL_RETURN_ALT", 30.0);
    let (report, _) = rig.tool("preflight_check", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut report = report["structuredContent"].clone();
    while report["arming_allowed"] != true {
        assert!(tokio::time::Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (r, _) = rig.tool("preflight_check", json!({})).await;
        report = r["structuredContent"].clone();
    }
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
    // PX4 takes DO_REPOSITION's altitude above sea level: sent as home's + 12 m, the goto
    // holds its altitude instead of descending to 12 m AMSL and landing.
    let from_s = rig.position().t_s;
    rig.fly("goto", goto(-25.0, 30.0, 12.0)).await;
    assert!(
        distance(&rig.position(), -25.0, 30.0) < 2.0,
        "{:?}",
        rig.position()
    );
    let lowest = rig
        .positions
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.t_s >= from_s)
        .map(|p| p.altitude_m)
        .fold(f64::INFINITY, f64::min);
    // (The takeoff ends within 0.7 m of its 8 m; descending to 12 m AMSL would reach 0.)
    assert!(lowest > 6.5, "the goto went down to {lowest} m");
    assert!(
        (rig.position().altitude_m - 12.0).abs() < 1.0,
        "{:?}",
        rig.position()
    );
    let top = rig.top_speed_since(from_s);
    assert!(
        top <= 5.1,
        "the goto flew at {top} m/s, above the 5 m/s limit"
    );
    let result = rig.fly("land", json!({})).await;
    assert_eq!(result["vehicle"]["armed"], false, "{result}");
    // The status published with the answer says the same (not still armed and landing).
    let status = rig.status().await;
    assert_eq!(status["vehicle"]["mode"]["armed"], false, "{status}");
    assert_eq!(status["active_action"], Value::Null, "{status}");
    assert!(rig.sim.output().contains("sim: mode AUTO.LAND"));
    assert!(
        !rig.daemon.output().contains("whitelist violation"),
        "{}",
        rig.daemon.output()
    );
}

/// Waits until the simulator printed `line` after its line number `from_line`.
async fn sim_line_after(rig: &mut Rig, from_line: usize, line: &str, wait: Duration) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(found) = rig
            .sim
            .output()
            .lines()
            .skip(from_line)
            .find(|l| l.starts_with(line))
        {
            return found.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{line}` within {wait:?}\n--- daemon:\n{}\n--- sim:\n{}",
            rig.daemon.output(),
            rig.sim.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_mcp_the_speed_limit_holds_after_a_reset_and_a_takeover_and_an_excess_is_a_breach() {
    // ArduCopter's own WPNAV_SPEED (10 m/s) is above the envelope's 5 m/s limit.
    let mut rig = Rig::start("flight-speed", false, 5.0, &field_envelope()).await;

    // The margins are sized from the faster speed, and the check says which one and what to set.
    let (envelope, _) = rig.tool("get_envelope", json!({})).await;
    let envelope = &envelope["structuredContent"];
    assert_eq!(envelope["margin_speed_source"], "WPNAV_SPEED", "{envelope}");
    assert_eq!(
        envelope["margin_horizontal_m_configured"], 10.0,
        "{envelope}"
    );
    let margin = envelope["margin_horizontal_m"].as_f64().unwrap();
    assert!((margin - 24.4).abs() < 0.01, "{envelope}");
    let (report, _) = rig.tool("preflight_check", json!({})).await;
    let report = &report["structuredContent"];
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["parameter"] == "WPNAV_SPEED" && f["set_to"] == "500 or less"),
        "{report}"
    );

    rig.fly("takeoff", json!({"altitude_m": 10.0})).await;

    // A goto without speed_m_s flies at the limit, never above it (ArduCopter restarts at
    // WPNAV_SPEED on the new target; the daemon's speed follows the target).
    let t0 = rig.position().t_s;
    rig.fly("goto", goto(60.0, -40.0, 10.0)).await;
    let top = rig.top_speed_since(t0);
    assert!((4.5..=5.1).contains(&top), "first goto: {top} m/s");

    // After an emergency stop and its reset the vehicle holds in BRAKE, where ArduCopter
    // refuses DO_CHANGE_SPEED: the next goto still flies at the limit.
    let lines = rig.sim_lines();
    let (stop, _) = rig
        .tool("emergency_stop", json!({"reason": "speed test"}))
        .await;
    assert_eq!(stop["isError"], false, "{stop}");
    sim_line_after(&mut rig, lines, "sim: mode BRAKE", Duration::from_secs(10)).await;
    let mut admin = rig.admin_client("flight-speed").await;
    let (reset, _) = admin
        .call(
            "tools/call",
            json!({"name": "reset_emergency_stop", "arguments": {}}),
        )
        .await;
    assert_eq!(reset["result"]["isError"], false, "{reset}");
    let t1 = rig.position().t_s;
    rig.fly("goto", goto(-50.0, -50.0, 10.0)).await;
    let top = rig.top_speed_since(t1);
    assert!(
        (4.5..=5.1).contains(&top),
        "goto after the reset: {top} m/s"
    );

    // The pilot takes over (POSHOLD from the RC link) during a goto; the next goto, from
    // POSHOLD, still flies at the limit.
    let (lines, t2) = (rig.sim_lines(), rig.position().t_s);
    let id = rig
        .client
        .request(
            "tools/call",
            json!({"name": "goto", "arguments": goto(40.0, -60.0, 10.0)}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rig.gcs_command(
        MavCmd::MAV_CMD_DO_SET_MODE,
        [1.0, 16.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    sim_line_after(
        &mut rig,
        lines,
        "sim: mode POSHOLD",
        Duration::from_secs(10),
    )
    .await;
    let (taken, _) = rig.client.response(&id).await;
    assert_eq!(
        taken["result"]["structuredContent"]["outcome"], "taken_over",
        "{taken}"
    );
    let t3 = rig.position().t_s;
    rig.fly("goto", goto(-40.0, -60.0, 10.0)).await;
    let top = rig.top_speed_since(t3);
    assert!(
        (4.5..=5.1).contains(&top),
        "goto after the takeover: {top} m/s"
    );
    assert!(rig.top_speed_since(t2) <= 5.1);

    // Another ground station keeps raising the speed to 12 m/s during a goto: the daemon
    // says its speed again, and when the excess lasts it is a breach: hold, then land.
    let lines = rig.sim_lines();
    let id = rig
        .client
        .request(
            "tools/call",
            json!({"name": "goto", "arguments": goto(70.0, -60.0, 10.0)}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !rig
        .sim
        .output()
        .lines()
        .skip(lines)
        .any(|l| l.starts_with("sim: mode BRAKE"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hold after the excess: top {} m/s\n--- daemon:\n{}",
            rig.top_speed_since(t3),
            rig.daemon.output()
        );
        rig.gcs_command(
            MavCmd::MAV_CMD_DO_CHANGE_SPEED,
            [1.0, 12.0, -1.0, 0.0, 0.0, 0.0, 0.0],
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (preempted, seen) = rig.client.response(&id).await;
    assert_eq!(
        preempted["result"]["structuredContent"]["outcome"], "preempted",
        "{preempted}"
    );
    assert!(rig.top_speed_since(t3) > 6.0, "the excess happened");
    let is_error = |m: &crate::mcp_client::Seen| {
        m.payload.as_ref().is_some_and(|p| {
            p["method"] == "notifications/message"
                && p["params"]["level"] == "error"
                && p["params"]["logger"] == "flight-companion.envelope"
        })
    };
    let mut earlier = Vec::new();
    let breach = match seen.into_iter().find(is_error) {
        Some(breach) => breach,
        None => rig
            .client
            .wait_for(is_error, Duration::from_secs(10), &mut earlier)
            .await
            .unwrap_or_else(|| panic!("no breach notification; saw {earlier:?}")),
    };
    let text = breach.payload.unwrap()["params"]["data"]["message"].to_string();
    assert!(
        text.contains("speed") && text.contains("above the 5 m/s limit") && text.contains("land"),
        "{text}"
    );
    // The breach action follows the hold.
    sim_line_after(&mut rig, lines, "sim: mode LAND", Duration::from_secs(15)).await;
}

/// `set_envelope` over MCP: an ADMIN lowers the ceiling of a running daemon; the pilot's
/// takeoff above it is then refused before anything reaches the autopilot, a widening is
/// refused and changes nothing, an OPERATOR may not call it, and the audit log records who
/// tightened what and the envelope now in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_mcp_an_admin_tightens_the_envelope_and_the_pilot_is_held_to_it() {
    let mut rig = Rig::start("flight-tighten", false, 5.0, &field_envelope()).await;
    let tighten = |changes: Value| json!({"name": "set_envelope", "arguments": changes});
    let (r, _) = rig
        .client
        .call("tools/call", tighten(json!({"altitude_m_max": 25.0})))
        .await;
    assert_eq!(r["error"]["code"], -32003, "an OPERATOR may not: {r}");

    let mut admin = rig.admin_client("tighten").await;
    let (r, _) = admin
        .call("tools/call", tighten(json!({"altitude_m_max": 25.0})))
        .await;
    let result = &r["result"]["structuredContent"];
    assert_eq!(result["envelope"]["altitude_m_max"], 25.0, "{r}");
    assert_eq!(result["envelope"]["keep_out"][0]["name"], "tower", "{r}");
    // The envelope every client sees is the tightened one.
    let (envelope, _) = rig.tool("get_envelope", json!({})).await;
    assert_eq!(
        envelope["structuredContent"]["altitude_m_max"], 25.0,
        "{envelope}"
    );

    let lines_before = rig.sim_lines();
    let above = rig.refused("takeoff", json!({"altitude_m": 30.0})).await;
    assert!(
        above.contains("the ceiling is 25 m"),
        "the highest allowed target is 25 m minus the 5 m margin: {above}"
    );
    let (r, _) = admin
        .call("tools/call", tighten(json!({"altitude_m_max": 40.0})))
        .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("only tightens") && text.contains("nothing was changed"),
        "{r}"
    );
    let (r, _) = admin
        .call("tools/call", tighten(json!({"check_interval_s": 1.0})))
        .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.motion_commands_since(lines_before),
        Vec::<String>::new()
    );

    let dir = rig.broker().dev.path("state/audit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let records = loop {
        let records: Vec<Value> = flight_companion::audit::tail_command(&dir, usize::MAX, true)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let in_force = records.iter().any(|r| {
            r["event"]["Safety"]["kind"] == "envelope_in_force"
                && r["event"]["Safety"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("\"altitude_m_max\":25.0"))
        });
        if in_force || tokio::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tightened: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["Safety"]["kind"] == "envelope_tightened")
        .collect();
    assert_eq!(tightened.len(), 1, "one accepted change: {records:?}");
    let detail = tightened[0]["event"]["Safety"]["detail"].as_str().unwrap();
    assert!(detail.contains("altitude_m_max"), "{detail}");
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["Call"]["target"] == "tools/call:set_envelope")
        .collect();
    assert_eq!(calls.len(), 3, "every ADMIN call is recorded: {calls:?}");
    assert!(
        calls.iter().any(|c| c["event"]["Call"]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("only tightens"))),
        "{calls:?}"
    );
    assert!(
        records.iter().any(|r| {
            r["event"]["Safety"]["kind"] == "envelope_in_force"
                && r["event"]["Safety"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("\"altitude_m_max\":25.0"))
        }),
        "the envelope in force is recorded"
    );
}
