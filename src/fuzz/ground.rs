//! The ground bridge's core (`ground::bridge::Bridge`): what an MCP client writes on its
//! stdin (valid, invalid, oversized, batches, mutated lines), what the drone sends (presence
//! coming and going, answers, progress, answers to requests never made, garbage), broker
//! connections lost and made, time passing.
//! Checked after every input:
//! - everything written to stdout is one line of a JSON-RPC 2.0 object;
//! - the bridge's own request ids never reach the client;
//! - a request of the client is answered at most once (a late answer is a notice);
//! - everything published to the broker is JSON within the size limit of the drone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Rng, mutate};
use crate::ground::bridge::{Action, Bridge, BridgeSettings, INTERNAL_ID_PREFIX};
use crate::mcp::transport::{self, Topics};

const SERVERS: [(&str, &str); 2] = [("sid-1", "drone-1"), ("sid-2", "drone-2")];

fn settings(rng: &mut Rng) -> BridgeSettings {
    BridgeSettings {
        client_id: "ground-1".into(),
        server_name: rng.one_in(2).then(|| "drone-1".into()),
        server_topic_root: transport::SERVER_TOPIC_ROOT.into(),
        client_topic_root: transport::CLIENT_TOPIC_ROOT.into(),
        rpc_topic_root: transport::RPC_TOPIC_ROOT.into(),
        discovery_timeout: Duration::from_millis(rng.below(5000) as u64),
        presence_settle: Duration::from_millis(rng.below(500) as u64),
        call_idle_timeout: Duration::from_millis(1 + rng.below(60_000) as u64),
        request_timeout: Duration::from_millis(1 + rng.below(30_000) as u64),
        message_bytes_max: 512 + rng.below(4096),
        token: rng.one_in(2).then(|| "a.b.c".into()),
    }
}

fn stdin_line(rng: &mut Rng, next_id: &mut u64) -> (String, Option<u64>) {
    *next_id += 1;
    let id = *next_id;
    let (value, request) = match rng.below(8) {
        0 => (
            json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "1"}}}),
            true,
        ),
        1 => (
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            false,
        ),
        2 | 3 => (
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "goto", "arguments": {"latitude_deg": 47.0},
                "_meta": if rng.one_in(2) { json!({"progressToken": id}) } else { json!({}) }}}),
            true,
        ),
        4 => (
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}),
            true,
        ),
        5 => (
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": id - 1}}),
            false,
        ),
        6 => (
            json!([{"jsonrpc": "2.0", "id": id, "method": "ping"}]),
            false,
        ),
        _ => (json!({"jsonrpc": "2.0", "id": id, "method": "ping"}), true),
    };
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    let mutated = rng.one_in(3);
    if mutated {
        mutate(rng, &mut bytes, &[b"\"jsonrpc\":\"2.0\"", b"\"id\":"]);
    }
    if rng.one_in(30) {
        bytes.resize(bytes.len() + 5000, b' ');
        bytes.push(b'x');
    }
    let line = String::from_utf8_lossy(&bytes).replace('\n', " ");
    (line, (request && !mutated).then_some(id))
}

fn drone_message(rng: &mut Rng, asked: &[Value]) -> Vec<u8> {
    let id = if !asked.is_empty() && rng.below(3) > 0 {
        rng.pick(asked).clone()
    } else {
        json!(rng.below(50))
    };
    let value = match rng.below(5) {
        0 => json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}}, "serverInfo": {"name": "drone", "version": "1"}}}),
        1 => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": "no"}}),
        2 => json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": id, "progress": 1}}),
        3 => json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "warning", "data": "x"}}),
        _ => json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}}),
    };
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    if rng.one_in(4) {
        mutate(rng, &mut bytes, &[]);
    }
    bytes
}

pub fn run(rng: &mut Rng) -> Result<(), String> {
    let settings = settings(rng);
    let limit = settings.message_bytes_max;
    let mut bridge = Bridge::new(settings);
    let mut now = Instant::now();
    let mut next_id = 1000u64;
    let mut requests: BTreeSet<u64> = BTreeSet::new();
    let mut answered: BTreeSet<u64> = BTreeSet::new();
    let mut used: BTreeSet<u64> = BTreeSet::new();
    // Ids the bridge sent to the drone (its own and the client's), for the drone to answer.
    let mut asked: Vec<Value> = Vec::new();
    for step in 0..1 + rng.below(50) {
        let (sid, name) = *rng.pick(&SERVERS);
        let topics = Topics::with_default_roots(sid, name);
        match rng.below(10) {
            0 => bridge.handle_connected(now, None),
            1 => {
                let payload = if rng.one_in(4) {
                    Vec::new()
                } else {
                    transport::server_online(name, "fuzz", json!({}))
                        .to_string()
                        .into_bytes()
                };
                bridge.handle_mqtt_message(now, &topics.presence(), &payload);
            }
            2..=4 => {
                let (line, request) = stdin_line(rng, &mut next_id);
                // A mutated line may carry an id used before or after: the client broke the
                // rule that makes "answered once" checkable, so that id is not tracked.
                let id = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_u64));
                if let Some(n) = id {
                    if request == Some(n) && !used.contains(&n) {
                        requests.insert(n);
                    } else {
                        requests.remove(&n);
                    }
                    used.insert(n);
                }
                if super::tracing() {
                    eprintln!("step {step}: stdin {line}");
                }
                bridge.handle_stdin_line(now, &line);
            }
            5 | 6 => {
                let payload = drone_message(rng, &asked);
                let topic = if rng.one_in(6) {
                    topics.capability()
                } else {
                    topics.rpc("ground-1")
                };
                if super::tracing() {
                    eprintln!(
                        "step {step}: drone {topic} {}",
                        String::from_utf8_lossy(&payload)
                    );
                }
                bridge.handle_mqtt_message(now, &topic, &payload);
            }
            7 if rng.one_in(3) => bridge.handle_disconnected(now),
            _ => {
                now += rng.step(800, 4, 90_000);
                if bridge.poll_timeout().is_some_and(|t| t <= now) {
                    bridge.handle_timeout(now);
                }
            }
        }
        while let Some(action) = bridge.poll_action() {
            if super::tracing() {
                eprintln!("step {step}: -> {action:?}");
            }
            match action {
                Action::Stdout(text) => {
                    if text.contains('\n') {
                        return Err(format!("step {step}: a stdout line with a newline: {text}"));
                    }
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|e| format!("step {step}: stdout is not JSON ({e}): {text}"))?;
                    if value["jsonrpc"] != "2.0" {
                        return Err(format!("step {step}: stdout is not JSON-RPC 2.0: {text}"));
                    }
                    let is_answer = value.get("result").is_some() || value.get("error").is_some();
                    if let Some(id) = value.get("id") {
                        if id
                            .as_str()
                            .is_some_and(|s| s.starts_with(INTERNAL_ID_PREFIX))
                        {
                            return Err(format!("step {step}: the bridge's own id shown: {text}"));
                        }
                        if is_answer
                            && let Some(n) = id.as_u64()
                            && requests.contains(&n)
                            && !answered.insert(n)
                        {
                            return Err(format!("step {step}: request {n} answered twice"));
                        }
                    }
                }
                Action::Publish { payload, .. } => {
                    let value: Value = serde_json::from_str(&payload)
                        .map_err(|e| format!("step {step}: published non-JSON ({e}): {payload}"))?;
                    if payload.len() > limit.max(64 * 1024) {
                        return Err(format!(
                            "step {step}: published {} bytes past the limit",
                            payload.len()
                        ));
                    }
                    if let Some(id) = value.get("id") {
                        asked.push(id.clone());
                    }
                }
                Action::Console(text) => {
                    return Err(format!(
                        "step {step}: a console answer with no console: {text}"
                    ));
                }
                Action::Subscribe { .. } | Action::Unsubscribe { .. } | Action::StopConnection => {}
            }
        }
    }
    Ok(())
}
