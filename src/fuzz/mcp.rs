//! MCP-over-MQTT ingest: topic classification, JSON-RPC parsing and the session table
//! (`mcp::session::Sessions`), driven as the shell drives it, by clients that may be
//! hostile: messages on the control topic, on their own RPC topics and on others' names,
//! presence, capability and foreign topics, mutated and oversized payloads, forged
//! `MCP-MQTT-CLIENT-ID` properties, retained flags, broker reconnects, time jumping; the
//! sessions answer what they were given (or not), as rmcp would.
//! Checked after every input:
//! - sessions, candidates and every pool stay within their limits;
//! - a message changes only what its topic's client owns: a message on client A's RPC
//!   topic is delivered to A's session only, starts or promotes nothing for another id,
//!   ends no one else's session; a control-topic message (a claim) delivers nothing and
//!   ends no established session;
//! - every client id an action names is a valid one (no `/`, `+`, `#`);
//! - promotions, deliveries and ends name a session that was started and not yet ended.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Rng, mutate};
use crate::mcp::session::{Action, Authority, CallKind, Limits, Sender, Sessions};
use crate::mcp::transport::{Topics, valid_client_id};

const CLIENTS: [&str; 4] = ["alice", "bob", "mallory", "alice/x"];
const TOOLS: [&str; 7] = [
    "get_status",
    "emergency_stop",
    "land",
    "hold",
    "wait_for_mode_change",
    "takeoff",
    "no_such_tool",
];

struct Gate {
    refuse: bool,
}

impl Authority for Gate {
    fn candidate_subject(&self, client_id: &str, generation: u64) -> Option<String> {
        (!self.refuse || generation % 2 == 0).then(|| format!("subject-{client_id}"))
    }

    fn call_kind(&self, _client_id: &str, _generation: Option<u64>, tool: &str) -> CallKind {
        match tool {
            "emergency_stop" => CallKind::EmergencyStop,
            "land" | "hold" => CallKind::Reserved,
            "wait_for_mode_change" => CallKind::LongWait,
            _ => CallKind::Ordinary,
        }
    }
}

fn limits(rng: &mut Rng) -> Limits {
    Limits {
        sessions_max: 1 + rng.below(4),
        session_calls_concurrent_max: 1 + rng.below(3),
        calls_concurrent_max: 1 + rng.below(4),
        message_bytes_max: 256 + rng.below(2048),
        candidates_max: 1 + rng.below(4),
        identity_calls_concurrent_max: 1 + rng.below(3),
        waits_concurrent_max: 1 + rng.below(3),
        identity_waits_concurrent_max: 1 + rng.below(2),
        priority_calls_concurrent_max: 1 + rng.below(2),
        initialize_per_s: 1.0 + rng.below(10) as f64,
        initialize_burst: 1 + rng.below(10) as u32,
    }
}

fn message(rng: &mut Rng, next_id: &mut u64) -> Vec<u8> {
    *next_id += 1;
    let id: Value = match rng.below(6) {
        0 => json!(format!("s{next_id}")),
        1 => json!(u64::MAX),
        2 => json!(null),
        3 => json!(-1.5),
        _ => json!(*next_id),
    };
    let value = match rng.below(9) {
        0 => json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": *rng.pick(&["2025-11-25", "2025-06-18", "2024-11-05", "1999-01-01"]),
            "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"},
            "_meta": if rng.one_in(2) { json!({"flight-companion/token": "x.y.z"}) } else { json!({}) }}}),
        1 => json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        2 | 3 => json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": *rng.pick(&TOOLS), "arguments": {"reason": "fuzz"}}}),
        4 => json!({"jsonrpc": "2.0", "id": id, "method": "ping"}),
        5 => json!({"jsonrpc": "2.0", "method": "notifications/disconnected"}),
        6 => json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": *next_id - 1}}),
        7 => json!([{"jsonrpc": "2.0", "id": id, "method": "ping"}]),
        _ => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
    };
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    if rng.one_in(3) {
        mutate(rng, &mut bytes, &[b"{\"jsonrpc\":\"2.0\"}", b"tools/call"]);
    }
    if rng.one_in(40) {
        bytes.resize(bytes.len() + 4096, b' ');
    }
    bytes
}

/// What the session table told the shell, as the invariants need it.
#[derive(Default)]
struct Ledger {
    started: BTreeSet<(String, u64)>,
    ended: BTreeSet<(String, u64)>,
    /// Requests delivered to a session and not yet answered: (client, generation, id).
    delivered: Vec<(String, u64, Value)>,
    /// Candidates' `initialize` ids, to answer.
    initializes: Vec<(String, u64, Value)>,
}

pub fn run(rng: &mut Rng) -> Result<(), String> {
    let limits = limits(rng);
    let topics = Topics::with_default_roots("drone-id", "drone-1");
    let mut sessions = Sessions::new(topics.clone(), limits);
    let gate = Gate {
        refuse: rng.one_in(3),
    };
    let mut ledger = Ledger::default();
    let mut now = Instant::now();
    let mut next_id = 0u64;
    for step in 0..1 + rng.below(60) {
        let (actions, owner) = match rng.below(12) {
            0..=5 => {
                let client = *rng.pick(&CLIENTS);
                let (topic, owner) = match rng.below(8) {
                    0 | 1 => (topics.control(), None),
                    2 => (topics.client_presence(client), Some(client.to_owned())),
                    3 => (topics.client_capability(client), Some(client.to_owned())),
                    4 => (rng.text(30), None),
                    _ => (topics.rpc(client), Some(client.to_owned())),
                };
                let claimed = if rng.one_in(4) {
                    *rng.pick(&CLIENTS)
                } else {
                    client
                };
                let payload = message(rng, &mut next_id);
                let sender = Sender {
                    client_id: (!rng.one_in(8)).then_some(claimed),
                    component_type: Some(*rng.pick(&["mcp-client", "mcp-server", "x"])),
                    retain: rng.one_in(10),
                };
                // The topic's owner, for the identity rule (only topics the broker binds to a
                // client: the RPC topic; presence and capability are that client's too).
                let owner = owner
                    .filter(|_| topics.classify(&topic) != crate::mcp::transport::TopicKind::Other);
                (
                    sessions.handle_publish(now, &topic, &payload, sender, &gate),
                    Some((owner, topic)),
                )
            }
            6 | 7 => {
                // A session answers: an initialize or a delivered request.
                let pick = if rng.one_in(2) && !ledger.initializes.is_empty() {
                    let i = rng.below(ledger.initializes.len());
                    Some(ledger.initializes.swap_remove(i))
                } else if !ledger.delivered.is_empty() {
                    let i = rng.below(ledger.delivered.len());
                    Some(ledger.delivered.swap_remove(i))
                } else {
                    None
                };
                match pick {
                    Some((cid, generation, id)) => {
                        let answer = if rng.one_in(4) {
                            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32001, "message": "no"}})
                        } else {
                            json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-11-25"}})
                        };
                        (
                            sessions.handle_outgoing(now, &cid, generation, &answer).1,
                            None,
                        )
                    }
                    None => (Vec::new(), None),
                }
            }
            8 => (sessions.poll_timeouts(now), None),
            9 if rng.one_in(4) => (sessions.handle_connected(), None),
            _ => {
                now += rng.step(500, 4, 30_000);
                (sessions.poll_timeouts(now), None)
            }
        };
        check(step, &actions, owner.as_ref(), &mut ledger)?;
        let active = sessions.active().count();
        if active > limits.sessions_max {
            return Err(format!(
                "step {step}: {active} sessions, at most {}",
                limits.sessions_max
            ));
        }
        let (calls, waits, priority) = sessions.in_flight();
        if calls > limits.calls_concurrent_max
            || waits > limits.waits_concurrent_max
            || priority > limits.priority_calls_concurrent_max
        {
            return Err(format!(
                "step {step}: in flight {calls}/{waits}/{priority} against {}/{}/{}",
                limits.calls_concurrent_max,
                limits.waits_concurrent_max,
                limits.priority_calls_concurrent_max
            ));
        }
    }
    Ok(())
}

fn check(
    step: usize,
    actions: &[Action],
    publish: Option<&(Option<String>, String)>,
    ledger: &mut Ledger,
) -> Result<(), String> {
    let fail = |what: String| Err(format!("step {step}: {what}; actions: {actions:#?}"));
    for action in actions {
        let named = match action {
            Action::StartSession { client_id, .. }
            | Action::Promote { client_id, .. }
            | Action::EndSession { client_id, .. }
            | Action::Deliver { client_id, .. }
            | Action::EmergencyStop { client_id, .. } => Some(client_id),
            _ => None,
        };
        if let Some(cid) = named
            && !valid_client_id(cid)
        {
            return fail(format!("an action names the invalid client id {cid:?}"));
        }
        // The identity rule, for messages that arrived on a topic.
        if let Some((owner, _topic)) = publish {
            match (action, owner) {
                (Action::Deliver { client_id, .. } | Action::Promote { client_id, .. }, None) => {
                    return fail(format!("a claim delivered to or promoted {client_id}"));
                }
                (
                    Action::EndSession {
                        client_id,
                        established: true,
                        ..
                    },
                    None,
                ) => {
                    return fail(format!("a claim ended {client_id}'s session"));
                }
                (
                    Action::Deliver { client_id, .. }
                    | Action::Promote { client_id, .. }
                    | Action::EndSession { client_id, .. },
                    Some(owner),
                ) if client_id != owner => {
                    return fail(format!(
                        "a message on {owner}'s topic acted on {client_id}'s session"
                    ));
                }
                _ => {}
            }
        }
        match action {
            Action::StartSession {
                client_id,
                generation,
                initialize,
            } => {
                let key = (client_id.clone(), *generation);
                if !ledger.started.insert(key) {
                    return fail(format!("{client_id} generation {generation} started twice"));
                }
                let id = serde_json::to_value(initialize.as_ref())
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                ledger
                    .initializes
                    .push((client_id.clone(), *generation, id));
            }
            Action::Promote {
                client_id,
                generation,
                ..
            }
            | Action::Deliver {
                client_id,
                generation,
                ..
            } => {
                let key = (client_id.clone(), *generation);
                if !ledger.started.contains(&key) || ledger.ended.contains(&key) {
                    return fail(format!(
                        "{client_id} generation {generation} is not a running session"
                    ));
                }
                if let Action::Deliver { message, .. } = action
                    && let Ok(v) = serde_json::to_value(message.as_ref())
                    && let Some(id) = v.get("id")
                {
                    ledger
                        .delivered
                        .push((client_id.clone(), *generation, id.clone()));
                }
            }
            Action::EndSession {
                client_id,
                generation,
                ..
            } => {
                let key = (client_id.clone(), *generation);
                if !ledger.started.contains(&key) {
                    return fail(format!(
                        "{client_id} generation {generation} ended but never started"
                    ));
                }
                ledger.ended.insert(key);
                ledger
                    .delivered
                    .retain(|(c, g, _)| !(c == client_id && g == generation));
                ledger
                    .initializes
                    .retain(|(c, g, _)| !(c == client_id && g == generation));
            }
            _ => {}
        }
    }
    Ok(())
}
