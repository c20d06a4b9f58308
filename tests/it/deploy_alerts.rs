//! Health over MCP, against a real Mosquitto with mutual TLS: `health://summary`, the
//! `health` part of `get_status`, and raised alerts as `notifications/message`, once each.

use std::time::Duration;

use serde_json::{Value, json};

use flight_companion::health::RaisedAlert;

use crate::mcp_client::{InProcessServer, TestClient, wait_online};
use crate::support::broker::Broker;

fn is_alert(m: &crate::mcp_client::Seen) -> bool {
    m.payload.as_ref().is_some_and(|p| {
        p["method"] == "notifications/message" && p["params"]["logger"] == "flight-companion.alerts"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_mcp_clients_once_and_health_is_a_resource() {
    let broker = Broker::start("deploy-alerts");
    let server = InProcessServer::start(&broker, |_| {});
    let mut client = TestClient::connect(&broker, "ground-alerts").await;
    wait_online(&mut client).await;
    client.initialize("2025-11-25").await;

    let (resources, _) = client.call("resources/list", json!({})).await;
    let uris: Vec<&str> = resources["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert!(uris.contains(&"health://summary"), "{resources}");
    let (read, _) = client
        .call("resources/read", json!({"uri": "health://summary"}))
        .await;
    let text = read["result"]["contents"][0]["text"].as_str().unwrap();
    let health: Value = serde_json::from_str(text).unwrap();
    assert_eq!(health["state"], "failed", "no autopilot yet: {health}");
    assert!(
        health["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no autopilot"),
        "{health}"
    );
    let (status, _) = client
        .call("tools/call", json!({"name": "get_status", "arguments": {}}))
        .await;
    assert_eq!(
        status["result"]["structuredContent"]["health"], health,
        "{status}"
    );

    // The daemon loop raises an alert: the session forwards it once, at level warning.
    let raise = |sequence: u64| {
        server.status.send_modify(|s| {
            s.health.recent_alerts.push(RaisedAlert {
                sequence,
                alert: "battery_low".into(),
                message: format!("battery low: 28 % remaining (#{sequence})"),
            })
        })
    };
    raise(1);
    let mut skipped = Vec::new();
    let first = client
        .wait_for(is_alert, Duration::from_secs(5), &mut skipped)
        .await
        .unwrap_or_else(|| panic!("no alert notification; seen {skipped:?}"));
    let params = &first.payload.as_ref().unwrap()["params"];
    assert_eq!(params["level"], "warning", "{params}");
    assert_eq!(params["data"]["alert"], "battery_low", "{params}");
    assert_eq!(params["data"]["sequence"], 1, "{params}");

    // Unrelated status changes do not repeat it; the next raised alert comes alone.
    server.status.send_modify(|s| s.vehicle.mode.armed = true);
    raise(2);
    let mut skipped = Vec::new();
    let second = client
        .wait_for(is_alert, Duration::from_secs(5), &mut skipped)
        .await
        .unwrap_or_else(|| panic!("no second alert; seen {skipped:?}"));
    assert_eq!(
        second.payload.as_ref().unwrap()["params"]["data"]["sequence"],
        2
    );
    let mut skipped = Vec::new();
    let more = client
        .wait_for(is_alert, Duration::from_millis(800), &mut skipped)
        .await;
    assert!(more.is_none(), "an alert was sent twice: {more:?}");
    server.shutdown.cancel();
}
