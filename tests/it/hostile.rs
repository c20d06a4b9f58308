//! Hostile ground clients against the gate, through a real Mosquitto with the `dev-setup`
//! configuration (issue 14): each attack gets nothing and changes nothing, the victim's
//! session, lease and flight carry on, and the attempt is in the audit log.
//!
//! The attackers hold valid certificates of the dev CA (`mallory`, `eve`, ...): that is the
//! threat, a ground client the broker lets in.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::flight_rig::{FLIGHT_WAIT, Rig, at, offset};
use crate::mcp_client::{InProcessServer, SERVER_NAME, Seen, TestClient, wait_online};
use crate::support::broker::Broker;
use crate::support::{Proc, peer, python};

const RPC_TAIL: &str = "drone-1/flight-companion/drone";
const CONTROL: &str = "$mcp-server/drone-1/flight-companion/drone";

fn field_envelope() -> String {
    format!(
        "[envelope]\n\
         altitude_m_max = 40.0\n\
         \n\
         [[envelope.keep_in]]\n\
         name = \"field\"\n\
         polygon_lat_lon_deg = [{}, {}, {}, {}]\n",
        at(-100.0, -100.0),
        at(-100.0, 100.0),
        at(100.0, 100.0),
        at(100.0, -100.0),
    )
}

/// `mosquitto_pub` as the ground identity `identity` (its own certificate), asking for the
/// MQTT client id `client_id`, with `MCP-MQTT-CLIENT-ID` = `claimed` when given.
fn mosquitto_pub(
    broker: &Broker,
    identity: &str,
    client_id: Option<&str>,
    claimed: Option<&str>,
    topic: &str,
    payload: &str,
    extra: &[&str],
) -> std::process::Output {
    mosquitto_pub_at(
        &broker.dev.dir,
        broker.port(),
        identity,
        client_id,
        claimed,
        topic,
        payload,
        extra,
    )
}

/// [`mosquitto_pub`] for a dev-setup directory and its broker's port.
#[allow(clippy::too_many_arguments)]
fn mosquitto_pub_at(
    dir: &std::path::Path,
    port: u16,
    identity: &str,
    client_id: Option<&str>,
    claimed: Option<&str>,
    topic: &str,
    payload: &str,
    extra: &[&str],
) -> std::process::Output {
    let pki = flight_companion::cert::Pki::new(dir.join("certs"));
    let (cert, key) = pki.paths(identity, flight_companion::cert::Kind::Client);
    if !cert.exists() {
        pki.issue(&flight_companion::cert::IssueRequest {
            name: identity,
            kind: flight_companion::cert::Kind::Client,
            sans: vec![],
            days: 1,
            now_unix_s: flight_companion::auth::shell::unix_s_now() as i64,
        })
        .unwrap();
    }
    let mut command = Command::new("mosquitto_pub");
    command
        .args(["-h", "localhost", "-p", &port.to_string(), "-V", "mqttv5"])
        .arg("--cafile")
        .arg(dir.join("certs/ca.pem"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key);
    if let Some(id) = client_id {
        command.args(["-i", id]);
    }
    command.args([
        "-D",
        "publish",
        "user-property",
        "MCP-COMPONENT-TYPE",
        "mcp-client",
    ]);
    if let Some(claim) = claimed {
        command.args([
            "-D",
            "publish",
            "user-property",
            "MCP-MQTT-CLIENT-ID",
            claim,
        ]);
    }
    command
        .args(["-q", "1", "-t", topic, "-m", payload])
        .args(extra)
        .output()
        .expect("mosquitto_pub")
}

/// Every audit record (JSON), once `want` of them match `pred` or 15 s have passed.
async fn audit_records(
    dir: &std::path::Path,
    want: usize,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let lines =
            flight_companion::audit::tail_command(dir, usize::MAX, true).unwrap_or_default();
        let records: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if records.iter().filter(|r| pred(r)).count() >= want
            || tokio::time::Instant::now() > deadline
        {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn security<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records
        .iter()
        .map(|r| &r["event"]["Security"])
        .filter(|s| s["kind"] == kind)
        .collect()
}

/// Waits for the answer to `id` on the client's RPC topic (flights take a while).
async fn answer(client: &mut TestClient, id: &Value, timeout: Duration) -> (Value, Vec<Seen>) {
    let rpc = client.rpc_topic();
    let mut skipped = Vec::new();
    let found = client
        .wait_for(
            |m| {
                m.topic == rpc
                    && m.payload
                        .as_ref()
                        .is_some_and(|p| p.get("method").is_none() && p.get("id") == Some(id))
            },
            timeout,
            &mut skipped,
        )
        .await
        .unwrap_or_else(|| panic!("no answer to {id} within {timeout:?}; saw {skipped:?}"));
    (found.payload.unwrap(), skipped)
}

fn mint(broker: &Broker, role: flight_companion::role::Role, subject: &str) -> String {
    flight_companion::auth::shell::issue_from_file(&flight_companion::auth::shell::IssueRequest {
        key_path: &broker.dev.path("keys/ground-key.key"),
        kid: Some("ground-key"),
        role,
        subject,
        audience: SERVER_NAME,
        ttl: Duration::from_secs(600),
        jti: Some(format!("jti-{subject}")),
        now_unix_s: flight_companion::auth::shell::unix_s_now(),
    })
    .unwrap()
}

/// Session takeover through a client id like `VICTIM/drone-1`, tear-down by a forged
/// initialize, and a forged `MCP-MQTT-CLIENT-ID`, all while the victim takes off: the
/// takeoff completes, the lease and the session carry on, and the audit log has each
/// attempt; nothing ran under anyone's name but the victim's own calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_takeover_and_forged_initialize_get_nothing_while_the_pilot_flies() {
    let mut rig = Rig::start("hostile-fly", false, 2.0, &field_envelope()).await;
    let victim = rig.client.cid.clone();
    let victim_rpc = format!("$mcp-rpc/{victim}/{RPC_TAIL}");
    let takeoff = rig
        .client
        .request(
            "tools/call",
            json!({"name": "takeoff", "arguments": {"altitude_m": 15.0}}),
        )
        .await;
    let forged_at = Instant::now();
    let broker = rig.broker();

    // 1. Eve asks for the client id `VICTIM/drone-1` (the old ACL's `%c` let it read and write
    //    `$mcp-rpc/VICTIM/drone-1/...`). The broker uses her certificate's CN instead.
    let (eve_cert, eve_key) = broker.dev.identity("eve");
    let mut listen = Command::new("stdbuf");
    listen
        .args(["-oL", "mosquitto_sub"])
        .args(broker.tls_args(Some((&eve_cert, &eve_key))))
        .args(["-i", &format!("{victim}/drone-1"), "-v", "-t"])
        .arg(format!("$mcp-rpc/{victim}/#"))
        .args(["-t", "$mcp-rpc/+/drone-1/#", "-t", "$mcp-client/#"]);
    let mut eve_sub = Proc::spawn("eve-sub", listen);
    let land = json!({"jsonrpc": "2.0", "id": 666, "method": "tools/call",
                      "params": {"name": "land", "arguments": {}}})
    .to_string();
    for id in [format!("{victim}/drone-1"), victim.clone()] {
        let out = mosquitto_pub(
            broker,
            "eve",
            Some(&id),
            Some(&victim),
            &victim_rpc,
            &land,
            &[],
        );
        // MQTT 5 tells a QoS 1 publisher it is not authorized; nothing reaches the drone.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success() || said.to_lowercase().contains("not authorized"),
            "a publish on the victim's RPC topic went through: {said}"
        );
    }

    // 2. Mallory forges initialize for the victim on the shared control topic: without a
    //    token, then with her own (READ_ONLY) token.
    let ro = mint(broker, flight_companion::role::Role::ReadOnly, "mallory-ro");
    for (id, token) in [(777, None), (778, Some(ro.as_str()))] {
        let mut init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "forger", "version": "1"}}});
        if let Some(t) = token {
            init["params"]["_meta"] = json!({"flight-companion/token": t});
        }
        let out = mosquitto_pub(
            broker,
            "mallory",
            None,
            Some(&victim),
            CONTROL,
            &init.to_string(),
            &[],
        );
        assert!(out.status.success(), "{out:?}");
    }

    // 3. Mallory on her own RPC topic says she is the victim: refused, and audited as
    //    herself.
    let mut mallory = TestClient::connect(broker, "mallory").await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                      "params": {"name": "land", "arguments": {}}});
    mallory
        .publish_raw(
            &mallory.rpc_topic(),
            call.to_string().into_bytes(),
            Some(&victim),
        )
        .await;
    let (refusal, _) = mallory.response(&json!(5)).await;
    assert_eq!(
        refusal["error"]["data"]["kind"], "client_id_mismatch",
        "{refusal}"
    );

    // The victim's takeoff completes as if nothing happened; its session and lease carry on.
    let (result, seen) = answer(&mut rig.client, &takeoff, FLIGHT_WAIT).await;
    assert_eq!(
        result["result"]["structuredContent"]["outcome"],
        "completed",
        "{result}\n--- daemon:\n{}",
        rig.daemon.output()
    );
    assert!(
        !seen.iter().any(|m| m
            .payload
            .as_ref()
            .is_some_and(|p| p["params"]["data"]["event"] == "session_replaced")),
        "the victim's session was replaced: {seen:?}"
    );
    let (lat, lon) = offset(20.0, 10.0);
    rig.fly(
        "goto",
        json!({"latitude_deg": lat, "longitude_deg": lon, "altitude_m": 15.0}),
    )
    .await;

    // Eve saw nothing of anyone's traffic.
    let eve_saw = eve_sub.output();
    assert!(
        !eve_saw.contains("$mcp-rpc/") && !eve_saw.contains("$mcp-client/"),
        "eve read: {eve_saw}"
    );

    // The audit log: the forgeries, refused or unconfirmed under the id they claimed (the
    // shared control topic does not name its publisher; the token's subject is named when
    // one was shown); the mismatch under mallory as the broker attested her; not one call
    // by anyone but the victim.
    let left = flight_companion::mcp::session::PROOF_TIMEOUT.saturating_sub(forged_at.elapsed());
    tokio::time::sleep(left + Duration::from_millis(500)).await;
    let audit = rig.broker().dev.path("state/audit");
    let records = audit_records(&audit, 1, |r| {
        r["event"]["Security"]["kind"] == "initialize_unconfirmed"
    })
    .await;
    let refused = security(&records, "missing_token");
    assert!(
        refused.iter().any(|s| s["session"] == victim.as_str()
            && s["detail"].as_str().unwrap().contains("not attested")),
        "{records:#?}"
    );
    let unconfirmed = security(&records, "initialize_unconfirmed");
    assert!(
        unconfirmed.iter().any(|s| s["session"] == victim.as_str()
            && s["subject"] == "mallory-ro"
            && s["detail"].as_str().unwrap().contains("untouched")),
        "{unconfirmed:#?}"
    );
    let mismatch = security(&records, "client_id_mismatch");
    assert!(
        mismatch.iter().any(|s| s["session"] == "mallory"
            && s["detail"].as_str().unwrap().contains("broker-attested")),
        "{mismatch:#?}"
    );
    let calls: Vec<&Value> = records
        .iter()
        .map(|r| &r["event"]["Call"])
        .filter(|c| c.is_object())
        .collect();
    assert!(
        calls
            .iter()
            .all(|c| c["session"] == victim.as_str() && c["subject"] == "dev-operator"),
        "a call ran under another identity: {calls:#?}"
    );
    assert!(!calls.iter().any(|c| c["target"] == "tools/call:land"));
    assert!(
        !security(&records, "authenticated")
            .iter()
            .any(|s| s["session"] != victim.as_str() && s["session"] != "mallory"),
        "{records:#?}"
    );
}

/// User plus system CPU time of a process so far, in ms (`/proc/PID/stat`).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at index 2.
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / per_s
}

/// An ADMIN session (the dev ADMIN token) of its own identity.
async fn admin_session(broker: &Broker, cid: &str) -> TestClient {
    let mut admin = TestClient::connect(broker, cid).await;
    admin.token = Some(
        std::fs::read_to_string(broker.dev.path("tokens/admin.jwt"))
            .unwrap()
            .trim()
            .into(),
    );
    wait_online(&mut admin).await;
    let init = admin.initialize("2025-11-25").await;
    assert!(init.get("result").is_some(), "{init}");
    admin
}

/// A panic press, then the ADMIN's reset; returns the reset's round trip.
async fn press_and_reset(rig: &mut Rig, admin: &mut TestClient, reason: &str) -> Duration {
    let out = mosquitto_pub(
        rig.broker(),
        "panic-button",
        None,
        None,
        "flight-companion/estop/drone-1/panic-button",
        &json!({"reason": reason}).to_string(),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    tokio::task::block_in_place(|| {
        rig.daemon
            .wait_for_line(&format!("): {reason}"), Duration::from_secs(5))
    });
    let asked = Instant::now();
    let (reset, _) = admin
        .call(
            "tools/call",
            json!({"name": "reset_emergency_stop", "arguments": {}}),
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(reset["result"]["structuredContent"]["ok"], true, "{reset}");
    took
}

/// The pilot's `tool`: from its request to the autopilot in `mode` (the simulator's line);
/// then waits for the tool to complete.
async fn to_mode(rig: &mut Rig, tool: &str, mode: &str) -> Duration {
    let asked = Instant::now();
    let id = rig
        .client
        .request("tools/call", json!({"name": tool, "arguments": {}}))
        .await;
    let needle = format!("sim: mode {mode}");
    tokio::task::block_in_place(|| rig.sim.wait_for_line(&needle, Duration::from_secs(10)));
    let took = asked.elapsed();
    let (done, _) = answer(&mut rig.client, &id, FLIGHT_WAIT).await;
    assert_eq!(
        done["result"]["structuredContent"]["outcome"], "completed",
        "{tool}: {done}"
    );
    took
}

/// Exhaustion: sessions refused by the gate take nothing; hostile sessions fill the session
/// table (but the ADMIN's reserve), park every long wait they may and flood the call pool;
/// the lease holder's `hold` and `land` and a newly arrived ADMIN's reset still get through
/// at once. Each is timed against the same operation before the hostile load (printed, for
/// BENCHMARKS.md; the test asserts that they get through, not how fast).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pools_full_the_pilot_lands_and_the_admin_resets() {
    let mut rig = Rig::start_with(
        "hostile-pools",
        false,
        2.0,
        &field_envelope(),
        &[
            (
                "mcp",
                "sessions_max = 8\nsessions_reserved_admin = 1\ncalls_concurrent_max = 4\n\
                 session_calls_concurrent_max = 2\nidentity_calls_concurrent_max = 2\n\
                 waits_concurrent_max = 4\nidentity_waits_concurrent_max = 2",
            ),
            ("auth", "calls_per_s = 1000.0\ncalls_burst = 1000"),
        ],
    )
    .await;
    rig.fly("takeoff", json!({"altitude_m": 10.0})).await;

    // Baselines, before any hostile client: the daemon's CPU while hovering, the pilot's
    // hold, an ADMIN's reset.
    let daemon_pid = rig.daemon.child.id();
    let (cpu_quiet_start, quiet_start) = (cpu_ms(daemon_pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_quiet_per_s =
        (cpu_ms(daemon_pid) - cpu_quiet_start) / quiet_start.elapsed().as_secs_f64();
    let mut admin = admin_session(rig.broker(), "admin-station").await;
    let hold_quiet = to_mode(&mut rig, "hold", "BRAKE").await;
    let reset_quiet = press_and_reset(&mut rig, &mut admin, "baseline press").await;

    // Refused sessions: eight clients with a bad token, four calls each, every one answered
    // with an error and none counted anywhere.
    for i in 0..8 {
        let mut bad = TestClient::connect(rig.broker(), &format!("bad-{i}")).await;
        let init = bad.initialize_with("2025-11-25", Some("not-a-token")).await;
        assert_eq!(init["error"]["code"], -32001, "{init}");
        for _ in 0..4 {
            let (r, _) = bad
                .call("tools/call", json!({"name": "get_status", "arguments": {}}))
                .await;
            assert_eq!(r["error"]["data"]["kind"], "no_session", "{r}");
        }
    }

    // Hostile READ_ONLY sessions, each its own subject, until only the ADMIN's seat is left.
    let mut hostile = Vec::new();
    for i in 0.. {
        let mut h = TestClient::connect(rig.broker(), &format!("hostile-{i}")).await;
        h.token = Some(mint(
            rig.broker(),
            flight_companion::role::Role::ReadOnly,
            &format!("hostile-{i}"),
        ));
        let init = h.initialize("2025-11-25").await;
        if init.get("error").is_some() {
            assert_eq!(init["error"]["data"]["kind"], "sessions_full", "{init}");
            assert!(init["error"]["message"].as_str().unwrap().contains("ADMIN"));
            break;
        }
        hostile.push(h);
    }
    assert_eq!(
        hostile.len(),
        5,
        "8 sessions: the pilot's, the ADMIN's, five hostile, one kept for ADMIN"
    );

    // Every long wait they may: two per identity, four in all; the rest are refused.
    let mut parked = 0;
    let mut refused_waits = 0;
    for h in hostile.iter_mut() {
        for _ in 0..3 {
            let id = h
                .request(
                    "tools/call",
                    json!({"name": "wait_for_mode_change", "arguments": {"timeout_s": 600}}),
                )
                .await;
            let mut skipped = Vec::new();
            let quick = h
                .wait_for(
                    |m| m.payload.as_ref().is_some_and(|p| p.get("id") == Some(&id)),
                    Duration::from_millis(300),
                    &mut skipped,
                )
                .await;
            match quick {
                Some(m) => {
                    let p = m.payload.unwrap();
                    assert_eq!(p["error"]["data"]["kind"], "busy", "{p}");
                    refused_waits += 1;
                }
                None => parked += 1,
            }
        }
    }
    assert_eq!((parked, refused_waits), (4, 11));

    // And a flood of calls from every hostile session, sent without waiting for answers
    // (each session may have 2 in flight, 5 sessions against a pool of 4): the call pool is
    // full all the time. Busy refusals are counted as they come back.
    let stop = tokio_util::sync::CancellationToken::new();
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut floods = Vec::new();
    for mut h in hostile {
        let (stop, busy, sent) = (stop.clone(), busy.clone(), sent.clone());
        floods.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                h.request("tools/call", json!({"name": "get_status", "arguments": {}}))
                    .await;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                while let Some(m) = h.next(Duration::ZERO).await {
                    if m.payload
                        .is_some_and(|p| p["error"]["data"]["kind"] == "busy")
                    {
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            h
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy_before = busy.load(std::sync::atomic::Ordering::Relaxed);
    assert!(busy_before > 0, "the flood does not fill the call pool");
    let (cpu_start, sent_start, wall_start) = (
        cpu_ms(daemon_pid),
        sent.load(std::sync::atomic::Ordering::Relaxed),
        Instant::now(),
    );

    // The lease holder lands: through the reserved pool, while others are refused.
    let land_loaded = to_mode(&mut rig, "land", "LAND").await;

    // A second ADMIN comes in on the reserved seat and, after a panic press, resets.
    let mut admin_2 = admin_session(rig.broker(), "admin-station-2").await;
    let reset_loaded = press_and_reset(&mut rig, &mut admin_2, "press under load").await;
    let (cpu, requests, wall) = (
        cpu_ms(daemon_pid) - cpu_start,
        sent.load(std::sync::atomic::Ordering::Relaxed) - sent_start,
        wall_start.elapsed(),
    );
    stop.cancel();
    for f in floods {
        let _ = f.await;
    }
    let busy = busy.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        busy > busy_before,
        "the pool was not full while the pilot landed"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "hostile pools: request -> autopilot mode: hold -> BRAKE {:.1} ms quiet, land -> LAND \
         {:.1} ms loaded; ADMIN reset answered {:.1} ms quiet, {:.1} ms loaded (a newly arrived \
         ADMIN); the load: session table full but the ADMIN seat, 4 long waits parked, 5 \
         sessions flooding get_status at 100/s each ({busy} busy refusals); daemon CPU \
         {cpu_quiet_per_s:.0} ms/s hovering, {:.0} ms/s under the load ({requests} hostile \
         requests in {:.1} s, {:.2} ms of CPU each above the hover)",
        ms(hold_quiet),
        ms(land_loaded),
        ms(reset_quiet),
        ms(reset_loaded),
        cpu / wall.as_secs_f64(),
        wall.as_secs_f64(),
        (cpu - cpu_quiet_per_s * wall.as_secs_f64()) / requests.max(1) as f64,
    );
}

/// A retained panic message stops once, when it is pressed, and never again: not at the
/// daemon's next start, and a retained copy is never acted on. Duplicates are each a
/// trigger of the one latch. Every press is audited under the broker-attested identity,
/// and the history other clients read names a subject, never the client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_retained_panic_never_latches_again() {
    let mut rig = Rig::start("hostile-panic", false, 2.0, &field_envelope()).await;
    let topic = "flight-companion/estop/drone-1/button-7";
    let broker_dev = rig.broker().dev.dir.clone();
    let broker_port = rig.broker().port();
    let press = move |retain: bool| {
        let extra: &[&str] = if retain { &["-r"] } else { &[] };
        mosquitto_pub_at(
            &broker_dev,
            broker_port,
            "button-7",
            None,
            None,
            topic,
            r#"{"reason":"pressed"}"#,
            extra,
        )
    };
    // Another identity cannot press in button-7's name.
    let forged = mosquitto_pub(
        rig.broker(),
        "mallory",
        None,
        None,
        topic,
        r#"{"reason":"as button-7"}"#,
        &[],
    );
    assert!(
        !forged.status.success()
            || String::from_utf8_lossy(&forged.stderr)
                .to_lowercase()
                .contains("not authorized"),
        "{forged:?}"
    );

    // A retained press: acts now (it is a press), then stays on the broker.
    assert!(press(true).status.success());
    tokio::task::block_in_place(|| {
        rig.daemon
            .wait_for_line("EMERGENCY STOP by MQTT panic topic", Duration::from_secs(5))
    });
    // A duplicate (QoS 1 re-send, a second press): another trigger of the same latch.
    assert!(press(false).status.success());
    tokio::task::block_in_place(|| {
        rig.daemon.wait_for_line(
            "another trigger by MQTT panic topic",
            Duration::from_secs(5),
        )
    });
    // The status is published by the loop within its 100 ms period.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let (status, _) = rig.tool("get_status", json!({})).await;
        if status["structuredContent"]["emergency_stop"]["history"]
            .as_array()
            .is_some_and(|h| h.len() >= 2)
            || Instant::now() > deadline
        {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stop = &status["structuredContent"]["emergency_stop"];
    assert_eq!(stop["latched"], true, "{status}");
    let history = stop["history"].to_string();
    assert!(
        !history.contains("button-7") && history.contains("without a mapped subject"),
        "the history names the client id: {history}"
    );

    // The daemon restarts with the retained message still on the broker: no stop.
    rig.daemon.signal("TERM");
    rig.daemon.wait_exit(Duration::from_secs(5));
    rig.daemon = crate::support::flight_companion("daemon", &["run", "--config", &rig.config]);
    tokio::task::block_in_place(|| {
        rig.daemon
            .wait_for_line("e-stop panic topics subscribed", Duration::from_secs(15))
    });
    let mut viewer = TestClient::connect(rig.broker(), "viewer").await;
    wait_online(&mut viewer).await;
    assert!(
        viewer
            .initialize("2025-11-25")
            .await
            .get("result")
            .is_some()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _) = viewer
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    assert_eq!(
        status["result"]["structuredContent"]["emergency_stop"]["latched"],
        false,
        "the retained press latched again at start: {status}\n--- daemon:\n{}",
        rig.daemon.output()
    );
    assert!(!rig.daemon.output().contains("EMERGENCY STOP"));

    // Both presses are in the audit log under the attested identity.
    let records = audit_records(&rig.broker().dev.path("state/audit"), 2, |r| {
        r["event"]["Security"]["kind"] == "panic_topic_estop"
    })
    .await;
    let presses = security(&records, "panic_topic_estop");
    assert_eq!(presses.len(), 2, "{records:#?}");
    // The broker never even sent the stored copy (the subscription asks for none).
    assert!(
        security(&records, "panic_topic_ignored").is_empty(),
        "{records:#?}"
    );
    assert!(
        presses.iter().all(|s| s["session"] == "button-7"),
        "{presses:#?}"
    );
}

async fn alive(good: &mut TestClient) {
    let (r, _) = good
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    assert!(
        r.get("result").is_some(),
        "the good session stopped being served: {r}"
    );
}

/// Bad client ids on the control topic (`/`, `+`, `#`, empty, 64 KiB), a flood of initialize
/// requests and refused sessions: each is dropped and counted or answered, and a running
/// session keeps being served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bad_ids_and_initialize_floods_are_dropped_and_counted() {
    let broker = Broker::start("hostile-input");
    let server = InProcessServer::start(&broker, |_| {});
    let mut good = TestClient::connect(&broker, "good").await;
    wait_online(&mut good).await;
    assert!(good.initialize("2025-11-25").await.get("result").is_some());

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bad", "version": "1"}}})
    .to_string();
    let huge = "v".repeat(64 * 1024 - 100);
    for id in ["bad/id", "bad+id", "bad#id", "", huge.as_str()] {
        // The MQTT client id asked for is replaced by the broker (the certificate's CN);
        // the claimed MCP client id is refused by the drone.
        let mqtt_id = if id.is_empty() { None } else { Some(id) };
        let out = mosquitto_pub(&broker, "prober", mqtt_id, Some(id), CONTROL, &init, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        alive(&mut good).await;
    }

    // A flood of initializes claiming made-up ids, from one client: dropped beyond the
    // limit and counted, reported in the security summary.
    let flooder = TestClient::connect(&broker, "flooder").await;
    for i in 0..300 {
        let message = json!({"jsonrpc": "2.0", "id": i, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "flood", "version": "1"}}});
        flooder
            .publish_raw(
                &TestClient::control_topic(),
                message.to_string().into_bytes(),
                Some(&format!("made-up-{i}")),
            )
            .await;
    }
    alive(&mut good).await;

    // Counted: the security summary (READ_ONLY) shows both kinds.
    let mut viewer = TestClient::connect(&broker, "summary-reader").await;
    viewer.token = Some(
        std::fs::read_to_string(broker.dev.path("tokens/read_only.jwt"))
            .unwrap()
            .trim()
            .into(),
    );
    // Over the initialize budget right now: wait for it to refill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        viewer
            .initialize("2025-11-25")
            .await
            .get("result")
            .is_some()
    );
    let (r, _) = viewer
        .call("resources/read", json!({"uri": "audit://security"}))
        .await;
    let summary: Value =
        serde_json::from_str(r["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    let last_hour = &summary["summary"]["last_hour"];
    assert!(
        last_hour["bad_client_id"].as_u64().unwrap_or(0) >= 5,
        "{summary}"
    );
    assert!(
        last_hour["initialize_flood"].as_u64().unwrap_or(0) >= 1,
        "{summary}"
    );
    alive(&mut good).await;

    let records = audit_records(&broker.dev.path("state/audit"), 5, |r| {
        r["event"]["Security"]["kind"] == "bad_client_id"
    })
    .await;
    let bad = security(&records, "bad_client_id");
    assert!(bad.len() >= 5, "{records:#?}");
    assert!(
        bad.iter()
            .all(|s| s["detail"].as_str().unwrap().len() < 1024)
    );
    drop(flooder);
    server.stop().await;
}

/// Rows of the lifecycle table through the real broker: a genuine re-initialize mid-call
/// (the call is answered with an error, the client is told the lease stayed with it), and
/// presence lost (the session ends and the lease is free for the next pilot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reinitialize_mid_call_and_presence_lost() {
    let broker = Broker::start("lifecycle");
    let server = InProcessServer::start(&broker, |_| {});
    let mut pilot = TestClient::connect(&broker, "pilot").await;
    let mut other = TestClient::connect(&broker, "other").await;
    wait_online(&mut pilot).await;
    assert!(pilot.initialize("2025-11-25").await.get("result").is_some());
    assert!(other.initialize("2025-11-25").await.get("result").is_some());
    let request = json!({"name": "request_control", "arguments": {}});
    let (r, _) = pilot.call("tools/call", request.clone()).await;
    assert!(r.get("result").is_some(), "{r}");
    let waiting = pilot
        .request(
            "tools/call",
            json!({"name": "wait_for_mode_change", "arguments": {"timeout_s": 60}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The same client initializes again (same token): the wait ends with an error, the
    // client is told the lease stayed with it, and the other pilot still cannot take it.
    let init = pilot.initialize("2025-11-25").await;
    assert!(init.get("result").is_some(), "{init}");
    let (ended, seen) = pilot.response(&waiting).await;
    assert_eq!(ended["error"]["data"]["kind"], "session_ended", "{ended}");
    let mut seen = seen;
    let mut skipped = Vec::new();
    if let Some(m) = pilot
        .wait_for(
            |m| {
                m.payload
                    .as_ref()
                    .is_some_and(|p| p["params"]["data"]["event"] == "session_replaced")
            },
            Duration::from_secs(5),
            &mut skipped,
        )
        .await
    {
        seen.push(m);
    }
    let notice = seen
        .iter()
        .filter_map(|m| m.payload.as_ref())
        .find(|p| p["params"]["data"]["event"] == "session_replaced")
        .unwrap_or_else(|| panic!("no session_replaced notice: {seen:?} {skipped:?}"));
    assert_eq!(notice["params"]["data"]["lease"], "kept", "{notice}");
    let (r, _) = other.call("tools/call", request.clone()).await;
    assert_eq!(r["error"]["data"]["kind"], "control_refused", "{r}");

    // Presence lost: the session ends at once and the lease with it.
    pilot
        .publish_raw(
            "$mcp-client/presence/pilot",
            json!({"jsonrpc": "2.0", "method": "notifications/disconnected"})
                .to_string()
                .into_bytes(),
            Some("pilot"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (r, _) = other.call("tools/call", request).await;
    assert!(
        r.get("result").is_some(),
        "the lease outlived its session: {r}"
    );
    let (r, _) = pilot
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    assert_eq!(r["error"]["data"]["kind"], "no_session", "{r}");
    server.stop().await;
}

/// A client that behaves exactly as the stock EMQX SDKs do (no `_meta`, their topics and
/// properties, QoS 0) gets the role dev-setup mapped to its certificate (`ground-1`:
/// OPERATOR); an identity without a mapping is refused and told why. The presence carries
/// `meta.rbac.roles`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_sdk_client_gets_its_broker_attested_role() {
    let broker = Broker::start("stock");
    let server = InProcessServer::start(&broker, |_| {});
    let run = |extra: &[&str]| {
        let mut command = Command::new(python());
        command
            .arg(peer("stock_sdk_client.py"))
            .args([
                "--config",
                crate::support::broker::s(&broker.dev.path("ground.toml")),
            ])
            .args(extra);
        let output = command.output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<Value>>()
    };
    let step = |lines: &[Value], name: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["step"] == name)
            .cloned()
            .collect()
    };
    let lines =
        tokio::task::block_in_place(|| run(&["--call", "request_control", "--call", "get_status"]));
    assert_eq!(step(&lines, "connected")[0]["client_id"], "ground-1");
    assert_eq!(
        step(&lines, "discovered")[0]["rbac_roles"],
        json!(["PUBLIC", "READ_ONLY", "OPERATOR", "ADMIN"])
    );
    assert_eq!(step(&lines, "initialize")[0]["ok"], true, "{lines:?}");
    let tools = step(&lines, "tools/list")[0]["tools"].to_string();
    assert!(
        tools.contains("takeoff") && !tools.contains("revoke_token"),
        "{tools}"
    );
    let calls = step(&lines, "call");
    assert_eq!(
        calls[0]["ok"], true,
        "request_control needs OPERATOR: {calls:?}"
    );
    assert!(
        calls[0]["structured"]["message"]
            .as_str()
            .unwrap()
            .contains("ground-1"),
        "{calls:?}"
    );
    assert_eq!(calls[1]["ok"], true, "{calls:?}");

    // An identity the drone has no mapping for, and no token: refused, with the reason.
    let (cert, key) = broker.dev.identity("unmapped");
    let lines = tokio::task::block_in_place(|| run(&["--cert", &cert, "--key", &key]));
    let init = &step(&lines, "initialize")[0];
    assert_eq!(init["ok"], false, "{lines:?}");
    assert_eq!(init["error"]["data"]["kind"], "missing_token");
    assert!(
        init["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broker_identity")
    );
    server.stop().await;
}
