//! The fleet core, table by table: discovery, routing, the fleet tools, lists changing.

use super::*;
use crate::config::GroundSection;

const CID: &str = "gcs";

fn settings() -> FleetSettings {
    FleetSettings {
        bridge: BridgeSettings::from_config(&GroundSection::default(), CID.into()),
        patterns: vec!["fleet/#".into()],
        default_drone: None,
        answer_timeout: Duration::from_millis(3_000),
        version: "0.0.0 (test)".into(),
    }
}

struct Harness {
    fleet: Fleet,
    now: Instant,
}

impl Harness {
    fn new(settings: FleetSettings) -> Self {
        let mut h = Self {
            fleet: Fleet::new(settings),
            now: Instant::now(),
        };
        h.fleet.handle_connected(h.now, None);
        h
    }
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.fleet.poll_action()).collect()
    }
    fn stdout(&mut self) -> Vec<Value> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Stdout(s) => Some(serde_json::from_str(&s).unwrap()),
                _ => None,
            })
            .collect()
    }
    fn publishes(actions: &[Action]) -> Vec<(String, Value)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish { topic, payload } => {
                    Some((topic.clone(), serde_json::from_str(payload).unwrap()))
                }
                _ => None,
            })
            .collect()
    }
    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        if self.fleet.poll_timeout().is_some_and(|t| t <= self.now) {
            self.fleet.handle_timeout(self.now);
        }
    }
    fn stdin(&mut self, v: Value) {
        self.fleet.handle_stdin_line(self.now, &v.to_string());
    }
    fn online(&mut self, id: &str, name: &str) {
        let payload = transport::server_online(name, "d", json!({})).to_string();
        self.fleet.handle_mqtt_message(
            self.now,
            &format!("$mcp-server/presence/{id}/{name}"),
            payload.as_bytes(),
        );
    }
    fn offline(&mut self, id: &str, name: &str) {
        self.fleet
            .handle_mqtt_message(self.now, &format!("$mcp-server/presence/{id}/{name}"), b"");
    }
    fn drone_says(&mut self, id: &str, name: &str, v: Value) {
        self.fleet.handle_mqtt_message(
            self.now,
            &format!("$mcp-rpc/{CID}/{id}/{name}"),
            v.to_string().as_bytes(),
        );
    }
    fn initialize(&mut self) -> Value {
        self.stdin(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
        let out = self.stdout();
        out.into_iter().find(|m| m["id"] == 0).unwrap()
    }
    /// Answers the fleet's initialize for a drone; returns the tools/list and resources/list
    /// requests the fleet sends next.
    fn answer_initialize(&mut self, id: &str, name: &str) -> (Value, Value) {
        let pubs = Self::publishes(&self.actions());
        let init = pubs
            .iter()
            .find(|(t, m)| t == &format!("$mcp-server/{id}/{name}") && m["method"] == "initialize")
            .unwrap_or_else(|| panic!("no initialize to {name}: {pubs:?}"))
            .1
            .clone();
        self.drone_says(id, name, json!({"jsonrpc":"2.0","id":init["id"],"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":name,"version":"1"}}}));
        let pubs = Self::publishes(&self.actions());
        let request = |method: &str| {
            pubs.iter()
                .find(|(_, m)| m["method"] == method)
                .unwrap_or_else(|| panic!("no {method} to {name}: {pubs:?}"))
                .1
                .clone()
        };
        (request("tools/list"), request("resources/list"))
    }
    /// Answers the fleet's initialize, tools/list and resources/list for a drone, with `tools`.
    fn serve(&mut self, id: &str, name: &str, tools: &[&str]) {
        let (tools_list, resources_list) = self.answer_initialize(id, name);
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| json!({"name": t, "inputSchema": {"type":"object","properties":{"x":{"type":"number"}},"required":["x"],"additionalProperties":false}}))
            .collect();
        self.drone_says(
            id,
            name,
            json!({"jsonrpc":"2.0","id":tools_list["id"],"result":{"tools":tools}}),
        );
        self.drone_says(id, name, json!({"jsonrpc":"2.0","id":resources_list["id"],"result":{"resources":[{"uri":"vehicle://status","name":"status"}]}}));
    }
    fn ready3() -> Harness {
        let mut h = Harness::new(settings());
        h.actions();
        h.initialize();
        for (id, name) in [("d1", "fleet/a"), ("d2", "fleet/b"), ("d3", "fleet/c")] {
            h.online(id, name);
            h.serve(id, name, &["get_status", "goto", "emergency_stop"]);
        }
        h.actions();
        h
    }
}

#[test]
fn presence_is_filtered_by_the_patterns_and_subscribed_once() {
    let mut h = Harness::new(settings());
    let actions = h.actions();
    assert_eq!(
        actions,
        vec![Action::Subscribe {
            topic: "$mcp-server/presence/+/fleet/#".into(),
            no_local: false
        }]
    );
    h.initialize();
    h.online("x1", "other/drone");
    assert!(Harness::publishes(&h.actions()).is_empty());
    assert_eq!(h.fleet.counters().mqtt_dropped, 1);
    h.online("d1", "fleet/a");
    let actions = h.actions();
    // The drone's session topics, never a second presence subscription.
    let subs: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Subscribe { .. }))
        .collect();
    assert_eq!(subs.len(), 2, "{actions:?}");
    assert!(!format!("{subs:?}").contains("presence"), "{subs:?}");
    let pubs = Harness::publishes(&actions);
    assert_eq!(pubs[0].0, "$mcp-server/d1/fleet/a");
    assert_eq!(pubs[0].1["method"], "initialize");
    assert_eq!(pubs[0].1["params"]["protocolVersion"], "2025-11-25");
}

#[test]
fn tools_are_the_union_with_a_required_drone_argument_and_calls_reach_only_the_drone_named() {
    let mut h = Harness::ready3();
    h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    let out = h.stdout();
    let tools = out[0]["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            LIST_DRONES,
            STOP_ALL,
            "get_status",
            "goto",
            "emergency_stop"
        ]
    );
    let goto = &tools[3];
    assert_eq!(goto["inputSchema"]["required"], json!(["drone", "x"]));
    assert!(
        goto["inputSchema"]["properties"]["drone"]["description"]
            .as_str()
            .unwrap()
            .contains("fleet/a, fleet/b, fleet/c")
    );

    h.stdin(json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"goto","arguments":{"drone":"fleet/b","x":1},"_meta":{"progressToken":"p7"}}}));
    let pubs = Harness::publishes(&h.actions());
    assert_eq!(pubs.len(), 1, "{pubs:?}");
    assert_eq!(pubs[0].0, "$mcp-rpc/gcs/d2/fleet/b");
    assert_eq!(pubs[0].1["params"]["arguments"], json!({"x": 1}));
    assert_eq!(pubs[0].1["params"]["_meta"]["progressToken"], "p7");
    let ours = pubs[0].1["id"].clone();
    assert!(ours.as_str().unwrap().starts_with(FLEET_ID_PREFIX));
    // Progress and the answer come back under the client's token and id.
    h.drone_says("d2", "fleet/b", json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p7","progress":1}}));
    h.drone_says(
        "d2",
        "fleet/b",
        json!({"jsonrpc":"2.0","id":ours,"result":{"content":[]}}),
    );
    let out = h.stdout();
    assert_eq!(out[0]["params"]["progressToken"], "p7");
    assert_eq!(out[1]["id"], 7);
    assert_eq!(out[1]["result"], json!({"content": []}));
}

#[test]
fn unknown_unnamed_and_offline_drones_are_refused_with_the_reason_and_nothing_is_sent() {
    let mut h = Harness::ready3();
    h.offline("d3", "fleet/c");
    let out = h.stdout();
    assert!(
        out.iter()
            .any(|m| m["method"] == "notifications/tools/list_changed"),
        "{out:?}"
    );
    for (id, args, needle) in [
        (1, json!({"x":1}), "needs the `drone` argument"),
        (
            2,
            json!({"drone":"fleet/z","x":1}),
            "unknown drone `fleet/z`",
        ),
        (
            3,
            json!({"drone":"fleet/c","x":1}),
            "drone `fleet/c` is offline",
        ),
        (4, json!({"drone":7}), "must be a drone's server name"),
    ] {
        h.stdin(json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"goto","arguments":args}}));
        let actions = h.actions();
        assert!(Harness::publishes(&actions).is_empty(), "{actions:?}");
        let text = format!("{actions:?}");
        assert!(
            text.contains(needle) && text.contains("isError"),
            "{needle}: {text}"
        );
    }
    h.stdin(json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"nope","arguments":{"drone":"fleet/a"}}}));
    let out = h.stdout();
    assert_eq!(out[0]["error"]["code"], code::INVALID_PARAMS);
}

#[test]
fn a_call_between_the_session_and_its_tool_list_is_told_to_retry_then_goes_through() {
    let mut h = Harness::new(settings());
    h.actions();
    h.initialize();
    h.online("d1", "fleet/a");
    let (tools_list, _) = h.answer_initialize("d1", "fleet/a");
    // Ready, but the drone's tools are not known yet: a tool error the
    // client may retry, never "unknown tool" (a protocol error), and
    // nothing goes to the drone.
    h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_status","arguments":{"drone":"fleet/a"}}}));
    let actions = h.actions();
    assert!(Harness::publishes(&actions).is_empty(), "{actions:?}");
    let out: Vec<Value> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Stdout(s) => Some(serde_json::from_str(s).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(out[0]["id"], 1, "{out:?}");
    assert!(out[0].get("error").is_none(), "{out:?}");
    assert_eq!(out[0]["result"]["isError"], true, "{out:?}");
    let text = out[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("tool list has not arrived yet: retry"),
        "{text}"
    );
    // Once the list answers, the same call reaches the drone.
    h.drone_says(
        "d1",
        "fleet/a",
        json!({"jsonrpc":"2.0","id":tools_list["id"],"result":{"tools":[{"name":"get_status","inputSchema":{"type":"object"}}]}}),
    );
    h.actions();
    h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_status","arguments":{"drone":"fleet/a"}}}));
    let pubs = Harness::publishes(&h.actions());
    assert_eq!(pubs.len(), 1, "{pubs:?}");
    assert_eq!(pubs[0].0, "$mcp-rpc/gcs/d1/fleet/a");
    assert_eq!(pubs[0].1["params"]["name"], "get_status");
}

#[test]
fn a_default_drone_makes_the_argument_optional() {
    let mut s = settings();
    s.default_drone = Some("fleet/a".into());
    let mut h = Harness::new(s);
    h.actions();
    h.initialize();
    h.online("d1", "fleet/a");
    h.serve("d1", "fleet/a", &["goto"]);
    h.actions();
    h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
    let out = h.stdout();
    assert_eq!(
        out[0]["result"]["tools"][2]["inputSchema"]["required"],
        json!(["x"])
    );
    h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"goto","arguments":{"x":2}}}));
    let pubs = Harness::publishes(&h.actions());
    assert_eq!(pubs[0].0, "$mcp-rpc/gcs/d1/fleet/a");
}

#[test]
fn emergency_stop_all_sends_every_stop_before_any_answer_and_reports_each() {
    let mut h = Harness::ready3();
    h.stdin(json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":STOP_ALL,"arguments":{"reason":"test"}}}));
    let actions = h.actions();
    let pubs = Harness::publishes(&actions);
    assert_eq!(pubs.len(), 3, "one batch, all three: {actions:?}");
    assert!(actions.iter().all(|a| !matches!(a, Action::Stdout(_))));
    for (p, (id, name)) in
        pubs.iter()
            .zip([("d1", "fleet/a"), ("d2", "fleet/b"), ("d3", "fleet/c")])
    {
        assert_eq!(p.0, format!("$mcp-rpc/gcs/{id}/{name}"));
        assert_eq!(p.1["params"]["name"], "emergency_stop");
        assert_eq!(p.1["params"]["arguments"]["reason"], "test");
    }
    // Two answer; the third stays silent: it is reported after the wait, not waited on longer.
    for (p, (id, name)) in pubs.iter().zip([("d1", "fleet/a"), ("d2", "fleet/b")]) {
        h.drone_says(id, name, json!({"jsonrpc":"2.0","id":p.1["id"],"result":{"content":[],"structuredContent":{"ok":true,"message":"stopped","emergency_stop":{"latched":true}}}}));
    }
    assert!(h.stdout().is_empty());
    h.advance(3_000);
    let out = h.stdout();
    let result = &out[0]["result"];
    assert_eq!(out[0]["id"], 9);
    assert_eq!(result["isError"], true);
    let drones = result["structuredContent"]["drones"].as_array().unwrap();
    assert_eq!(drones[0]["latched"], true);
    assert_eq!(drones[1]["latched"], true);
    assert_eq!(drones[2]["latched"], false);
    assert!(
        drones[2]["message"]
            .as_str()
            .unwrap()
            .contains("no answer within 3000 ms")
    );
}

#[test]
fn list_drones_reads_each_drones_status_and_lists_offline_ones() {
    let mut h = Harness::ready3();
    h.offline("d3", "fleet/c");
    h.actions();
    h.stdin(json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":LIST_DRONES,"arguments":{}}}));
    let pubs = Harness::publishes(&h.actions());
    assert_eq!(pubs.len(), 2);
    for (p, (id, name)) in pubs.iter().zip([("d1", "fleet/a"), ("d2", "fleet/b")]) {
        let status = json!({"vehicle":{"mode":{"armed":true,"flight_mode":"GUIDED"},"position":{"latitude_deg":47.0}},"emergency_stop":{"latched":false}});
        h.drone_says(id, name, json!({"jsonrpc":"2.0","id":p.1["id"],"result":{"content":[{"type":"text","text":status.to_string()}]}}));
    }
    let out = h.stdout();
    let drones = out[0]["result"]["structuredContent"]["drones"]
        .as_array()
        .unwrap();
    assert_eq!(drones.len(), 3);
    assert_eq!(drones[0]["name"], "fleet/a");
    assert_eq!(drones[0]["armed"], true);
    assert_eq!(drones[0]["mode"], "GUIDED");
    assert_eq!(drones[0]["position"]["latitude_deg"], 47.0);
    assert_eq!(drones[2]["online"], false);
}

#[test]
fn resources_get_per_drone_uris_both_ways() {
    assert_eq!(
        fleet_uri("vehicle://status", "fleet/a"),
        "vehicle://status?drone=fleet/a"
    );
    assert_eq!(fleet_uri("x://y?z=1", "a b&c"), "x://y?z=1&drone=a%20b%26c");
    assert_eq!(
        split_fleet_uri("x://y?z=1&drone=a%20b%26c"),
        Some(("x://y?z=1".into(), "a b&c".into()))
    );
    assert_eq!(split_fleet_uri("vehicle://status"), None);
    assert_eq!(split_fleet_uri("v://s?drone=%zz"), None);
    let mut h = Harness::ready3();
    h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"resources/list"}));
    let out = h.stdout();
    assert_eq!(
        out[0]["result"]["resources"][1]["uri"],
        "vehicle://status?drone=fleet/b"
    );
    h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"vehicle://status?drone=fleet/b"}}));
    let pubs = Harness::publishes(&h.actions());
    assert_eq!(pubs[0].0, "$mcp-rpc/gcs/d2/fleet/b");
    assert_eq!(pubs[0].1["params"]["uri"], "vehicle://status");
    h.drone_says(
        "d2",
        "fleet/b",
        json!({"jsonrpc":"2.0","id":pubs[0].1["id"],"result":{}}),
    );
    h.fleet.handle_mqtt_message(
        h.now,
        "$mcp-server/capability/d2/fleet/b",
        json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"vehicle://status"}}).to_string().as_bytes(),
    );
    let out = h.stdout();
    assert_eq!(out[0]["id"], 2);
    assert_eq!(out[1]["params"]["uri"], "vehicle://status?drone=fleet/b");
}

#[test]
fn bad_input_is_answered_and_never_panics() {
    let mut h = Harness::ready3();
    for line in [
        "{",
        "[]",
        "42",
        "{\"jsonrpc\":\"2.0\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"goto\",\"arguments\":[1]}}",
    ] {
        h.fleet.handle_stdin_line(h.now, line);
    }
    let actions = h.actions();
    assert!(Harness::publishes(&actions).is_empty(), "{actions:?}");
    for payload in [&b"\xff"[..], b"{}", b"[1]"] {
        h.fleet
            .handle_mqtt_message(h.now, "$mcp-rpc/gcs/d1/fleet/a", payload);
        h.fleet
            .handle_mqtt_message(h.now, "$mcp-server/presence/d9/fleet/q", payload);
    }
    h.fleet
        .handle_mqtt_message(h.now, "$mcp-server/presence/", b"");
}

#[test]
fn the_console_opens_sessions_without_a_stdio_client_and_its_answers_never_reach_stdout() {
    let mut h = Harness::new(settings());
    h.actions();
    h.online("d1", "fleet/a");
    // No stdio client: no session yet.
    assert!(Harness::publishes(&h.actions()).is_empty());
    h.fleet.serve_console(h.now);
    h.serve("d1", "fleet/a", &["get_status", "emergency_stop"]);
    let quiet = h.actions();
    assert!(
        !quiet.iter().any(|a| matches!(a, Action::Stdout(_))),
        "nothing for a stdio client that never came: {quiet:?}"
    );

    h.fleet
        .handle_console_request(h.now, 1, CONSOLE_DRONES, json!({}));
    let answer = match h.actions().as_slice() {
        [Action::Console(line)] => serde_json::from_str::<Value>(line).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(answer["id"], format!("{CONSOLE_ID_PREFIX}1"));
    assert_eq!(answer["result"]["drones"][0]["name"], "fleet/a");
    assert_eq!(answer["result"]["drones"][0]["session"], "ready");

    // A stop goes to exactly the drone named, as a stdio client's would.
    h.fleet.handle_console_request(
        h.now,
        2,
        "tools/call",
        json!({"name": "emergency_stop", "arguments": {"drone": "fleet/a", "reason": "web console"}}),
    );
    let pubs = Harness::publishes(&h.actions());
    assert_eq!(pubs.len(), 1, "{pubs:?}");
    assert_eq!(pubs[0].0, "$mcp-rpc/gcs/d1/fleet/a");
    assert_eq!(
        pubs[0].1["params"]["arguments"],
        json!({"reason": "web console"})
    );
    let ours = pubs[0].1["id"].clone();
    h.drone_says("d1", "fleet/a", json!({"jsonrpc":"2.0","id":ours,"result":{"content":[],"structuredContent":{"emergency_stop":{"latched":true}}}}));
    let answer = match h.actions().as_slice() {
        [Action::Console(line)] => serde_json::from_str::<Value>(line).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(answer["id"], format!("{CONSOLE_ID_PREFIX}2"));
    assert_eq!(
        answer["result"]["structuredContent"]["emergency_stop"]["latched"],
        true
    );

    // An unknown drone is refused before anything is sent; an unknown method too.
    h.fleet.handle_console_request(
        h.now,
        3,
        "tools/call",
        json!({"name": "emergency_stop", "arguments": {"drone": "fleet/zz"}}),
    );
    h.fleet
        .handle_console_request(h.now, 4, "tools/list", json!({}));
    let actions = h.actions();
    assert!(Harness::publishes(&actions).is_empty(), "{actions:?}");
    assert!(
        actions.iter().all(|a| matches!(a, Action::Console(_))),
        "{actions:?}"
    );
    assert_eq!(actions.len(), 2);

    // A stdio client arriving later still gets its own initialize answer on stdout.
    let init = h.initialize();
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "flight-companion-fleet"
    );
}
