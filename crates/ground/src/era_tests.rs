//! The 2026-07-28 adapter over the single-drone bridge, sans-IO.

use std::time::{Duration, Instant};

use super::*;
use crate::bridge::{Bridge, BridgeSettings};
use crate::config::GroundSection;
use flight_companion_core::mcp::transport;

struct Harness {
    era: EraAdapter,
    now: Instant,
}

fn envelope() -> Value {
    json!({META_VERSION: MODERN, "io.modelcontextprotocol/clientCapabilities": {}})
}

impl Harness {
    fn new() -> Self {
        let mut s = BridgeSettings::from_config(&GroundSection::default(), "gcs".into());
        s.presence_settle = Duration::ZERO;
        let mut h = Self {
            era: EraAdapter::new(Box::new(Bridge::new(s))),
            now: Instant::now(),
        };
        h.era.handle_connected(h.now, None);
        h.era.handle_timeout(h.now);
        let online = transport::server_online("drone/a", "d", json!({}));
        h.era.handle_mqtt_message(
            h.now,
            "$mcp-server/presence/s1/drone/a",
            online.to_string().as_bytes(),
        );
        h.actions();
        h
    }
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.era.poll_action()).collect()
    }
    fn stdin(&mut self, v: Value) -> (Vec<Value>, Vec<(String, Value)>) {
        self.era.handle_stdin_line(self.now, &v.to_string());
        self.split()
    }
    fn drone(&mut self, v: Value) -> (Vec<Value>, Vec<(String, Value)>) {
        self.era.handle_mqtt_message(
            self.now,
            "$mcp-rpc/gcs/s1/drone/a",
            v.to_string().as_bytes(),
        );
        self.split()
    }
    fn split(&mut self) -> (Vec<Value>, Vec<(String, Value)>) {
        let mut out = Vec::new();
        let mut pubs = Vec::new();
        for a in self.actions() {
            match a {
                Action::Stdout(s) => out.push(serde_json::from_str(&s).unwrap()),
                Action::Publish { topic, payload } => {
                    pubs.push((topic, serde_json::from_str(&payload).unwrap()))
                }
                _ => {}
            }
        }
        (out, pubs)
    }
}

#[test]
fn a_discover_first_client_gets_a_stateless_session_over_a_2025_11_25_one() {
    let mut h = Harness::new();
    let (out, pubs) = h.stdin(
        json!({"jsonrpc":"2.0","id":"d1","method":"server/discover","params":{"_meta":envelope()}}),
    );
    assert!(out.is_empty(), "held until the drone answers: {out:?}");
    assert!(h.era.is_modern());
    let init = &pubs[0].1;
    assert_eq!(init["method"], "initialize");
    assert_eq!(init["params"]["protocolVersion"], "2025-11-25");
    // A request before the session is up waits too.
    let (out, pubs) = h
        .stdin(json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":envelope()}}));
    assert!(out.is_empty() && pubs.is_empty());
    let (out, pubs) = h.drone(json!({"jsonrpc":"2.0","id":init["id"],"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"logging":{},"resources":{"subscribe":true}},"serverInfo":{"name":"drone","version":"9"},"instructions":"fly"}}));
    assert_eq!(pubs[0].1["method"], "notifications/initialized");
    assert_eq!(
        pubs[1].1,
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}),
        "the envelope is not sent on"
    );
    let discover = &out[0];
    assert_eq!(discover["id"], "d1");
    assert_eq!(discover["result"]["resultType"], "complete");
    assert_eq!(discover["result"]["supportedVersions"], json!([MODERN]));
    assert_eq!(
        discover["result"]["capabilities"],
        json!({"tools":{},"resources":{}})
    );
    assert_eq!(discover["result"]["serverInfo"]["name"], "drone");
    assert_eq!(discover["result"]["instructions"], "fly");
    let (out, _) = h.drone(json!({"jsonrpc":"2.0","id":2,"result":{"tools":[]}}));
    assert_eq!(
        out[0]["result"],
        json!({"tools":[],"resultType":"complete"})
    );
}

#[test]
fn removed_methods_and_other_versions_are_refused_with_the_reason() {
    let mut h = Harness::new();
    h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"server/discover"}));
    let init = h.actions();
    let _ = init;
    h.drone(json!({"jsonrpc":"2.0","id":"fc-ground:initialize:1","result":{"capabilities":{}}}));
    for method in [
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "initialize",
    ] {
        let (out, pubs) =
            h.stdin(json!({"jsonrpc":"2.0","id":5,"method":method,"params":{"_meta":envelope()}}));
        assert!(pubs.is_empty());
        assert_eq!(out[0]["error"]["code"], code::METHOD_NOT_FOUND, "{method}");
    }
    let (out, pubs) = h.stdin(json!({"jsonrpc":"2.0","id":6,"method":"tools/list","params":{"_meta":{META_VERSION:"2025-06-18"}}}));
    assert!(pubs.is_empty());
    assert_eq!(out[0]["error"]["data"]["supported"], json!([MODERN]));
}

#[test]
fn listen_subscribes_underneath_and_tags_only_what_was_asked_for() {
    let mut h = Harness::new();
    h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"server/discover"}));
    h.drone(json!({"jsonrpc":"2.0","id":"fc-ground:initialize:1","result":{"capabilities":{}}}));
    let (out, pubs) = h.stdin(json!({"jsonrpc":"2.0","id":"L","method":"subscriptions/listen","params":{"_meta":envelope(),"notifications":{"toolsListChanged":true,"resourceSubscriptions":["vehicle://status"]}}}));
    assert_eq!(out[0]["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(out[0]["params"]["_meta"][META_SUBSCRIPTION], "L");
    assert_eq!(
        out[0]["params"]["notifications"],
        json!({"toolsListChanged":true,"resourceSubscriptions":["vehicle://status"]})
    );
    assert_eq!(pubs[0].1["method"], "resources/subscribe");
    let (out, _) = h.drone(json!({"jsonrpc":"2.0","id":pubs[0].1["id"],"result":{}}));
    assert!(
        out.is_empty(),
        "the adapter's own answer is not shown: {out:?}"
    );
    h.era.handle_mqtt_message(h.now, "$mcp-server/capability/s1/drone/a", json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"vehicle://status"}}).to_string().as_bytes());
    h.era.handle_mqtt_message(
        h.now,
        "$mcp-server/capability/s1/drone/a",
        json!({"jsonrpc":"2.0","method":"notifications/resources/list_changed"})
            .to_string()
            .as_bytes(),
    );
    let (out, _) = h.split();
    assert_eq!(
        out.len(),
        1,
        "resources/list_changed was not asked for: {out:?}"
    );
    assert_eq!(out[0]["params"]["uri"], "vehicle://status");
    assert_eq!(out[0]["params"]["_meta"][META_SUBSCRIPTION], "L");
    // Cancelling the stream unsubscribes underneath; nothing is answered.
    let (out, pubs) = h.stdin(
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"L"}}),
    );
    assert!(out.is_empty());
    assert_eq!(pubs[0].1["method"], "resources/unsubscribe");
}

#[test]
fn an_initialize_first_client_passes_through_untouched() {
    let mut h = Harness::new();
    let (out, pubs) = h.stdin(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}}));
    assert!(out.is_empty());
    assert!(!h.era.is_modern());
    assert_eq!(pubs[0].1["params"]["protocolVersion"], "2025-06-18");
    let (out, _) = h.drone(
        json!({"jsonrpc":"2.0","id":pubs[0].1["id"],"result":{"protocolVersion":"2025-06-18"}}),
    );
    assert_eq!(
        out[0],
        json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18"}})
    );
    h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    let (out, pubs) = h.drone(json!({"jsonrpc":"2.0","id":1,"result":{}}));
    assert!(pubs.is_empty());
    assert_eq!(
        out[0],
        json!({"jsonrpc":"2.0","id":1,"result":{}}),
        "no resultType for older clients"
    );
}
