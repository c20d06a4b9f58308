//! The drone's MCP server against a real Mosquitto with mutual TLS: presence, sessions,
//! tools, resources, progress, cancellation, logging, bad input, reconnects, the Will.

use std::time::Duration;

use serde_json::{Value, json};

use crate::mcp_client::{InProcessServer, SERVER_NAME, TestClient, wait_online};
use crate::support::broker::Broker;
use crate::support::flight_companion;

fn progress_of(seen: &[crate::mcp_client::Seen]) -> Vec<f64> {
    seen.iter()
        .filter_map(|m| m.payload.as_ref())
        .filter(|p| p["method"] == "notifications/progress")
        .map(|p| p["params"]["progress"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_presence_initialize_tools_resources_logging() {
    let broker = Broker::start("mcp-main");
    let server = InProcessServer::start(&broker, |_| {});
    let mut client = TestClient::connect(&broker, "ground-a").await;

    let presence = wait_online(&mut client).await;
    assert_eq!(presence["params"]["server_name"], SERVER_NAME);
    assert!(presence["params"]["description"].is_string(), "{presence}");
    assert!(presence["params"]["meta"].is_object(), "{presence}");

    // Version negotiation: a supported version is echoed, an unknown one gets 2025-11-25.
    let init = client.initialize("2024-11-05").await;
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05", "{init}");
    let caps = &init["result"]["capabilities"];
    assert!(
        caps["tools"].is_object() && caps["logging"].is_object(),
        "{init}"
    );
    assert_eq!(caps["resources"]["subscribe"], true, "{init}");
    let init = client.initialize("2099-01-01").await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");

    let (pong, _) = client.call("ping", json!({})).await;
    assert_eq!(pong["result"], json!({}), "{pong}");

    let (list, _) = client.call("tools/list", json!({})).await;
    let tools = list["result"]["tools"].as_array().unwrap();
    let get_status = tools.iter().find(|t| t["name"] == "get_status").unwrap();
    assert_eq!(get_status["inputSchema"]["type"], "object");
    assert!(get_status["outputSchema"]["properties"]["vehicle"].is_object());
    assert_eq!(get_status["annotations"]["readOnlyHint"], true);
    assert_eq!(get_status["annotations"]["destructiveHint"], false);

    let (result, _) = client
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    let structured = &result["result"]["structuredContent"];
    assert_eq!(structured["simulated"], false, "{result}");
    assert!(structured["daemon_version"].is_string(), "{result}");
    let text = result["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), structured);

    // Bad tool arguments are a tool error the model can read; an unknown tool is -32602.
    let (result, _) = client
        .call(
            "tools/call",
            json!({"name": "get_status", "arguments": {"x": 1}}),
        )
        .await;
    assert_eq!(result["result"]["isError"], true, "{result}");
    let (result, _) = client
        .call(
            "tools/call",
            json!({"name": "fly_to_moon", "arguments": {}}),
        )
        .await;
    assert_eq!(result["error"]["code"], -32602, "{result}");
    assert!(
        result["error"]["message"]
            .as_str()
            .unwrap()
            .contains("get_status")
    );

    let (resources, _) = client.call("resources/list", json!({})).await;
    assert_eq!(
        resources["result"]["resources"][0]["uri"],
        "vehicle://status"
    );
    let (read, _) = client
        .call("resources/read", json!({"uri": "vehicle://status"}))
        .await;
    let text = read["result"]["contents"][0]["text"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(text).unwrap()["vehicle"].is_object());

    // Logging: after setLevel the client receives notifications/message.
    let (set, seen) = client
        .call("logging/setLevel", json!({"level": "debug"}))
        .await;
    assert_eq!(set["result"], json!({}), "{set}");
    let mut all = seen;
    let mut skipped = Vec::new();
    if !all.iter().any(|m| {
        m.payload
            .as_ref()
            .is_some_and(|p| p["method"] == "notifications/message")
    }) {
        let m = client
            .wait_for(
                |m| {
                    m.payload
                        .as_ref()
                        .is_some_and(|p| p["method"] == "notifications/message")
                },
                Duration::from_secs(5),
                &mut skipped,
            )
            .await;
        all.extend(m);
    }
    assert!(
        all.iter().any(|m| m
            .payload
            .as_ref()
            .is_some_and(|p| p["method"] == "notifications/message")),
        "{all:?} {skipped:?}"
    );

    // Subscribe, change the status: notifications/resources/updated on the capability topic.
    let (sub, _) = client
        .call("resources/subscribe", json!({"uri": "vehicle://status"}))
        .await;
    assert_eq!(sub["result"], json!({}), "{sub}");
    server.status.send_modify(|s| s.vehicle.mode.armed = true);
    let mut skipped = Vec::new();
    let updated = client
        .wait_for(
            |m| {
                m.payload
                    .as_ref()
                    .is_some_and(|p| p["method"] == "notifications/resources/updated")
            },
            Duration::from_secs(5),
            &mut skipped,
        )
        .await
        .unwrap_or_else(|| panic!("no resources/updated; saw {skipped:?}"));
    assert!(
        updated.topic.starts_with("$mcp-server/capability/drone-1/"),
        "{}",
        updated.topic
    );
    assert_eq!(
        updated.payload.unwrap()["params"]["uri"],
        "vehicle://status"
    );

    // Graceful stop: notifications/disconnected on the RPC topic, empty retained presence.
    server.stop().await;
    let mut skipped = Vec::new();
    let bye = client
        .wait_for(
            |m| {
                m.payload
                    .as_ref()
                    .is_some_and(|p| p["method"] == "notifications/disconnected")
            },
            Duration::from_secs(5),
            &mut skipped,
        )
        .await;
    assert!(bye.is_some(), "{skipped:?}");
    let gone = client
        .wait_for(
            |m| m.topic.starts_with("$mcp-server/presence/") && m.raw.is_empty(),
            Duration::from_secs(5),
            &mut skipped,
        )
        .await;
    assert!(
        gone.is_some(),
        "presence cleared on graceful stop; saw {skipped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_progress_and_cancellation() {
    let broker = Broker::start("mcp-progress");
    let server = InProcessServer::start(&broker, |_| {});
    let mut client = TestClient::connect(&broker, "ground-p").await;
    wait_online(&mut client).await;
    client.initialize("2025-11-25").await;

    // Timeout path with progress: numbered, monotonic, on the RPC topic.
    let (result, seen) = client
        .call(
            "tools/call",
            json!({"name": "wait_for_mode_change", "arguments": {"timeout_s": 2.5},
                   "_meta": {"progressToken": "p1"}}),
        )
        .await;
    assert_eq!(
        result["result"]["structuredContent"]["changed"], false,
        "{result}"
    );
    let progress = progress_of(&seen);
    assert!(progress.len() >= 2, "{seen:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");

    // Change path: the wait ends as soon as the mode changes.
    let id = client
        .request(
            "tools/call",
            json!({"name": "wait_for_mode_change", "arguments": {"timeout_s": 30}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.status.send_modify(|s| {
        s.vehicle.mode.flight_mode = flight_companion::vehicle::snapshot::ModeName {
            mode: Some(flight_companion::vehicle::modes::FlightMode::Guided),
            autopilot: flight_companion::vehicle::snapshot::AutopilotKind::Ardupilot,
        }
    });
    let (result, _) = client.response(&id).await;
    assert_eq!(
        result["result"]["structuredContent"]["changed"], true,
        "{result}"
    );

    // Cancellation: no response, and the session keeps working.
    let id = client
        .request(
            "tools/call",
            json!({"name": "wait_for_mode_change", "arguments": {"timeout_s": 30},
                   "_meta": {"progressToken": 7}}),
        )
        .await;
    let mut skipped = Vec::new();
    client
        .wait_for(
            |m| {
                m.payload
                    .as_ref()
                    .is_some_and(|p| p["method"] == "notifications/progress")
            },
            Duration::from_secs(5),
            &mut skipped,
        )
        .await
        .expect("first progress");
    client
        .send(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": id, "reason": "test"}}),
        )
        .await;
    let (pong, seen) = client.call("ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    let mut skipped = Vec::new();
    let late = client
        .wait_for(
            |m| m.payload.as_ref().is_some_and(|p| p.get("id") == Some(&id)),
            Duration::from_millis(1500),
            &mut skipped,
        )
        .await;
    assert!(
        late.is_none(),
        "a cancelled call gets no response: {late:?} {seen:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_bad_input_is_answered_while_another_session_works() {
    let broker = Broker::start("mcp-bad");
    let server = InProcessServer::start(&broker, |c| c.mcp.message_bytes_max = 4096);
    let mut bad = TestClient::connect(&broker, "ground-bad").await;
    let mut good = TestClient::connect(&broker, "ground-good").await;
    wait_online(&mut bad).await;
    good.initialize("2025-06-18").await;

    // Before initialize: a call on the control topic is refused with -32600.
    let control = TestClient::control_topic();
    let call = json!({"jsonrpc":"2.0","id":"early","method":"tools/list"});
    bad.publish_raw(&control, call.to_string().into_bytes(), Some("ground-bad"))
        .await;
    let (reply, _) = bad.response(&json!("early")).await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");

    bad.initialize("2025-11-25").await;
    let oversized = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    let cases: Vec<(Vec<u8>, i64)> = vec![
        (b"{this is not json".to_vec(), -32700),
        (
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_vec(),
            -32600,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"fly/away"}"#.to_vec(),
            -32601,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":5}}"#.to_vec(),
            -32602,
        ),
        (oversized.into_bytes(), -32600),
    ];
    for (payload, code) in cases {
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
        bad.publish_raw(&bad.rpc_topic(), payload, Some("ground-bad"))
            .await;
        let mut skipped = Vec::new();
        let reply = bad
            .wait_for(
                |m| m.payload.as_ref().is_some_and(|p| p.get("error").is_some()),
                Duration::from_secs(5),
                &mut skipped,
            )
            .await
            .unwrap_or_else(|| panic!("no error reply to {shown}; saw {skipped:?}"));
        let reply = reply.payload.unwrap();
        assert_eq!(reply["error"]["code"], code, "{shown}: {reply}");
        // The other session is unaffected.
        let (pong, _) = good.call("ping", json!({})).await;
        assert_eq!(pong["result"], json!({}));
    }

    // A client id with topic characters in MCP-MQTT-CLIENT-ID, or none: dropped, no answer.
    let init = json!({"jsonrpc":"2.0","id":"x","method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    bad.publish_raw(&control, init.to_string().into_bytes(), Some("evil/+#"))
        .await;
    bad.publish_raw(&control, init.to_string().into_bytes(), None)
        .await;
    let mut skipped = Vec::new();
    let answer = bad
        .wait_for(
            |m| {
                m.payload
                    .as_ref()
                    .is_some_and(|p| p.get("id") == Some(&json!("x")))
            },
            Duration::from_millis(1000),
            &mut skipped,
        )
        .await;
    assert!(answer.is_none(), "{answer:?}");
    let (list, _) = good.call("tools/list", json!({})).await;
    assert!(list["result"]["tools"].is_array());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_reconnects_after_the_broker_restarts() {
    let mut broker = Broker::start("mcp-reconnect");
    let server = InProcessServer::start(&broker, |_| {});
    {
        let mut client = TestClient::connect(&broker, "ground-r").await;
        wait_online(&mut client).await;
        client.initialize("2025-11-25").await;
    }
    broker.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    let mut client = TestClient::connect(&broker, "ground-r").await;
    // The broker forgot everything (no persistence): the server re-publishes presence.
    wait_online(&mut client).await;
    let init = client.initialize("2025-11-25").await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let (result, _) = client
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    assert!(
        result["result"]["structuredContent"].is_object(),
        "{result}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_will_clears_presence_when_the_daemon_is_killed() {
    let broker = Broker::start("mcp-will");
    let config = broker.dev.path("drone.toml");
    let mut daemon = flight_companion("daemon", &["run", "--config", config.to_str().unwrap()]);
    let mut client = TestClient::connect(&broker, "ground-w").await;
    let presence = wait_online(&mut client).await;
    assert_eq!(presence["params"]["server_name"], SERVER_NAME);
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    let mut skipped = Vec::new();
    let cleared = client
        .wait_for(
            |m| m.topic.starts_with("$mcp-server/presence/") && m.raw.is_empty(),
            Duration::from_secs(10),
            &mut skipped,
        )
        .await;
    assert!(
        cleared.is_some(),
        "the Will must clear presence; saw {skipped:?}"
    );
    // The Will is a PUBLISH of the transport like any other: it carries the user properties.
    let will = cleared.unwrap();
    for (name, value) in [
        ("MCP-COMPONENT-TYPE", "mcp-server"),
        ("MCP-MQTT-CLIENT-ID", "drone-1"),
    ] {
        assert!(
            will.user_properties
                .iter()
                .any(|(k, v)| k == name && v == value),
            "the Will lacks {name}={value}: {:?}",
            will.user_properties
        );
    }
    // A late subscriber sees no retained presence any more.
    let mut late = TestClient::connect(&broker, "ground-late").await;
    let retained = late.next(Duration::from_millis(500)).await;
    assert!(retained.is_none(), "{retained:?}");
}

/// Prints the `tools/call get_status` round trip over mTLS Mosquitto (client → broker →
/// server → broker → client). A figure for the report, not an assertion on wall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_call_round_trip_figure() {
    let broker = Broker::start("mcp-latency");
    // 100 calls back to back: above the default per-session rate limit.
    let server = InProcessServer::start(&broker, |c| {
        c.auth.calls_per_s = 1000.0;
        c.auth.calls_burst = 1000;
    });
    let mut client = TestClient::connect(&broker, "ground-l").await;
    wait_online(&mut client).await;
    client.initialize("2025-11-25").await;
    let mut samples_us = Vec::new();
    for _ in 0..100 {
        let started = std::time::Instant::now();
        let (result, _) = client
            .call("tools/call", json!({"name": "get_status", "arguments": {}}))
            .await;
        samples_us.push(started.elapsed().as_micros());
        assert!(result["result"]["structuredContent"].is_object());
    }
    samples_us.sort_unstable();
    println!(
        "tools/call get_status round trip over mTLS Mosquitto: p50 {} us, p95 {} us, max {} us (100 calls)",
        samples_us[50], samples_us[95], samples_us[99]
    );
    server.stop().await;
}
