//! The session table on its own: the lifecycle table of ARCHITECTURE.md, row by row, and the
//! capacity rules. No sockets, no clock: `t0()` plus offsets.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::*;

fn topics() -> Topics {
    Topics {
        server_root: "$mcp-server".into(),
        client_root: "$mcp-client".into(),
        rpc_root: "$mcp-rpc".into(),
        server_id: "sid".into(),
        server_name: "fc/drone".into(),
    }
}

const CONTROL: &str = "$mcp-server/sid/fc/drone";

fn rpc(cid: &str) -> String {
    format!("$mcp-rpc/{cid}/sid/fc/drone")
}

fn limits() -> Limits {
    Limits {
        sessions_max: 8,
        session_calls_concurrent_max: 2,
        calls_concurrent_max: 4,
        message_bytes_max: 4096,
        candidates_max: 4,
        identity_calls_concurrent_max: 3,
        waits_concurrent_max: 3,
        identity_waits_concurrent_max: 2,
        priority_calls_concurrent_max: 2,
        initialize_per_s: 5.0,
        initialize_burst: 10,
    }
}

fn t0() -> Instant {
    // One fixed instant per test run; timeouts are tested with offsets from it.
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// What the gate would say: every candidate verified as `subject-of-{cid}` unless its
/// subject is set, and a set of (client id, tool) that are priority.
#[derive(Default)]
struct Gate {
    subjects: RefCell<HashMap<String, String>>,
    refused: RefCell<HashSet<String>>,
    priority: RefCell<HashSet<(String, String)>>,
}

impl Authority for Gate {
    fn candidate_subject(&self, client_id: &str, _generation: u64) -> Option<String> {
        if self.refused.borrow().contains(client_id) {
            return None;
        }
        Some(
            self.subjects
                .borrow()
                .get(client_id)
                .cloned()
                .unwrap_or_else(|| format!("subject-of-{client_id}")),
        )
    }
    /// The registry's answers for the tools these tests call, with `priority` standing in for
    /// the gate's lease.
    fn call_kind(&self, client_id: &str, _generation: Option<u64>, tool: &str) -> CallKind {
        if tool == "emergency_stop" {
            CallKind::EmergencyStop
        } else if self
            .priority
            .borrow()
            .contains(&(client_id.to_owned(), tool.to_owned()))
        {
            CallKind::Reserved
        } else if tool == "wait_for_mode_change" {
            CallKind::LongWait
        } else {
            CallKind::Ordinary
        }
    }
}

fn init(id: u32, token: Option<&str>) -> String {
    let meta = token
        .map(|t| format!(r#","_meta":{{"flight-companion/token":"{t}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}{meta}}}}}"#
    )
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

fn call(id: u32, tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
}

fn from(cid: &str) -> Sender<'_> {
    Sender {
        client_id: Some(cid),
        component_type: Some("mcp-client"),
        retain: false,
    }
}

struct Table {
    s: Sessions,
    gate: Gate,
}

impl Table {
    fn new() -> Table {
        Table::with(limits())
    }
    fn with(limits: Limits) -> Table {
        Table {
            s: Sessions::new(topics(), limits),
            gate: Gate::default(),
        }
    }
    fn publish_at(
        &mut self,
        at: Instant,
        topic: &str,
        payload: &str,
        sender: Sender,
    ) -> Vec<Action> {
        self.s
            .handle_publish(at, topic, payload.as_bytes(), sender, &self.gate)
    }
    fn publish(&mut self, topic: &str, payload: &str, sender: Sender) -> Vec<Action> {
        self.publish_at(t0(), topic, payload, sender)
    }
    /// The claim: `initialize` on the control topic; returns the candidate's generation.
    fn claim(&mut self, cid: &str, id: u32, token: Option<&str>) -> u64 {
        let a = self.publish(CONTROL, &init(id, token), from(cid));
        start_of(&a).unwrap_or_else(|| panic!("no candidate started: {a:?}"))
    }
    /// The candidate's session answers its initialize.
    fn answer(&mut self, cid: &str, generation: u64, id: u32, ok: bool) -> (bool, Vec<Action>) {
        let message = if ok {
            json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-11-25"}})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32001, "message": "bad token"}})
        };
        self.s.handle_outgoing(t0(), cid, generation, &message)
    }
    /// initialize, answered, then `notifications/initialized`: a running session.
    fn open(&mut self, cid: &str) -> u64 {
        let g = self.claim(cid, 0, None);
        assert!(self.answer(cid, g, 0, true).0);
        let a = self.publish(&rpc(cid), INITIALIZED, from(cid));
        assert!(
            matches!(&a[..], [Action::Promote { generation, replaced: None, .. }, Action::Deliver { .. }] if *generation == g),
            "{a:?}"
        );
        g
    }
    fn respond(&mut self, cid: &str, generation: u64, id: u32) -> bool {
        self.s
            .handle_outgoing(
                t0(),
                cid,
                generation,
                &json!({"jsonrpc": "2.0", "id": id, "result": {}}),
            )
            .0
    }
}

fn start_of(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::StartSession { generation, .. } => Some(*generation),
        _ => None,
    })
}

/// (topic, error code, kind, id) of every error published.
fn errors_of(actions: &[Action]) -> Vec<(String, i64, String, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish { topic, message } if message.get("error").is_some() => Some((
                topic.clone(),
                message["error"]["code"].as_i64().unwrap_or(0),
                message["error"]["data"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                message["id"].clone(),
            )),
            _ => None,
        })
        .collect()
}

fn error_code(actions: &[Action]) -> Option<i64> {
    errors_of(actions).first().map(|e| e.1)
}

fn delivered(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Deliver { .. }))
}

fn security(actions: &[Action]) -> Vec<(&'static str, String, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Security {
                kind,
                client_id,
                attested,
                ..
            } => Some((*kind, client_id.clone(), *attested)),
            _ => None,
        })
        .collect()
}

fn ended(actions: &[Action]) -> Vec<(u64, EndReason, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::EndSession {
                generation,
                reason,
                established,
                ..
            } => Some((*generation, *reason, *established)),
            _ => None,
        })
        .collect()
}

#[test]
fn topics_are_classified_and_client_id_levels_must_be_usable() {
    let t = topics();
    let long = "x".repeat(200);
    let cases = [
        (CONTROL.to_string(), TopicKind::Control),
        (rpc("c1"), TopicKind::Rpc("c1".into())),
        (
            "$mcp-client/presence/c1".into(),
            TopicKind::ClientPresence("c1".into()),
        ),
        (
            "$mcp-client/capability/c1".into(),
            TopicKind::ClientCapability("c1".into()),
        ),
        ("$mcp-rpc/c1/other/fc/drone".into(), TopicKind::Other),
        ("$mcp-server/presence/sid/fc/drone".into(), TopicKind::Other),
        // `VICTIM/x` as a client id is two levels: never a client's RPC topic.
        ("$mcp-rpc/victim/x/sid/fc/drone".into(), TopicKind::Other),
        ("$mcp-client/presence/a/b".into(), TopicKind::Other),
        (rpc(&long), TopicKind::Other),
    ];
    for (topic, kind) in cases {
        assert_eq!(t.classify(&topic), kind, "{topic}");
    }
    assert_eq!(t.rpc_filter(), "$mcp-rpc/+/sid/fc/drone");
    assert_eq!(t.client_presence_filter(), "$mcp-client/presence/+");
}

/// Row "initialize, answered, confirmed": the claim starts a candidate, nothing is
/// delivered before the answer, the answer leaves, the first message on the RPC topic
/// proves the id and makes it the session.
#[test]
fn a_session_exists_only_after_a_verified_and_confirmed_initialize() {
    let mut t = Table::new();
    let g = t.claim("c1", 0, None);
    assert_eq!(t.s.active().count(), 0);
    assert_eq!(t.s.candidates(), 1);
    // Before the answer: a request is answered with an error, not delivered.
    let a = t.publish(&rpc("c1"), &call(1, "get_status"), from("c1"));
    assert!(!delivered(&a), "{a:?}");
    assert_eq!(error_code(&a), Some(errors::UNAUTHENTICATED as i64));
    // Nothing a candidate says but its answer leaves.
    let (publish, _) = t.s.handle_outgoing(
        t0(),
        "c1",
        g,
        &json!({"jsonrpc":"2.0","method":"notifications/message","params":{}}),
    );
    assert!(!publish);
    assert!(t.answer("c1", g, 0, true).0);
    assert_eq!(t.s.active().count(), 0, "answered is not yet a session");
    // A client without a running session proves its id with any message.
    let a = t.publish(&rpc("c1"), &call(2, "get_status"), from("c1"));
    assert!(
        matches!(
            &a[..],
            [
                Action::Promote {
                    replaced: None,
                    cut_short: 0,
                    ..
                },
                Action::Deliver { .. }
            ]
        ),
        "{a:?}"
    );
    assert_eq!(t.s.active().collect::<Vec<_>>(), vec![("c1", g)]);
}

/// Row "initialize refused": the answer is an error; the candidate ends with nothing else
/// changed, and every later request of that client is answered with an error.
#[test]
fn a_refused_initialize_changes_nothing_and_its_client_is_still_answered() {
    let mut t = Table::new();
    let running = t.open("c1");
    t.publish(&rpc("c1"), &call(5, "get_status"), from("c1"));
    // A refused re-initialize of c1 (say, a bad token) beside its running session.
    let g = t.claim("c1", 9, Some("bad"));
    let (publish, a) = t.answer("c1", g, 9, false);
    assert!(publish, "the error answer is sent");
    assert_eq!(ended(&a), vec![(g, EndReason::Refused, false)]);
    assert!(errors_of(&a).is_empty(), "no second answer: {a:?}");
    assert_eq!(t.s.candidates(), 0);
    // The running session is untouched: its call still in flight, its messages delivered.
    assert_eq!(t.s.active().collect::<Vec<_>>(), vec![("c1", running)]);
    assert!(t.respond("c1", running, 5));
    assert!(delivered(&t.publish(
        &rpc("c1"),
        &call(6, "get_status"),
        from("c1")
    )));
    assert!(t.respond("c1", running, 6));
    // A refused first initialize: the client's requests get errors, never silence.
    let g = t.claim("c2", 0, Some("bad"));
    t.answer("c2", g, 0, false);
    for id in 1..=3 {
        let a = t.publish(&rpc("c2"), &call(id, "get_status"), from("c2"));
        let e = errors_of(&a);
        assert_eq!(e.len(), 1, "{a:?}");
        assert_eq!(
            (e[0].1, e[0].2.as_str()),
            (errors::UNAUTHENTICATED as i64, "no_session")
        );
    }
    assert_eq!(
        t.s.in_flight(),
        (0, 0, 0),
        "nothing of a refused session is counted"
    );
}

/// Row "initialize malformed": answered with an error on the claimed RPC topic; nothing
/// starts and nothing changes.
#[test]
fn a_malformed_initialize_is_answered_and_changes_nothing() {
    let mut t = Table::new();
    let running = t.open("c1");
    let cases: Vec<(&str, i64)> = vec![
        ("{oops", -32700),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"initialize"}]"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":7}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"arm"}}"#,
            -32600,
        ),
        (r#"{"jsonrpc":"1.0","id":1,"method":"initialize"}"#, -32600),
    ];
    for (payload, code) in cases {
        let a = t.publish(CONTROL, payload, from("c1"));
        assert_eq!(error_code(&a), Some(code), "{payload}: {a:?}");
        assert!(
            start_of(&a).is_none() && ended(&a).is_empty(),
            "{payload}: {a:?}"
        );
    }
    assert_eq!(t.s.active().collect::<Vec<_>>(), vec![("c1", running)]);
    assert_eq!(t.s.candidates(), 0);
}

/// Row "initialize repeated": a retry with the same credentials supersedes the unconfirmed
/// one (its initialize is answered with an error); other credentials contest it and both go.
#[test]
fn repeated_and_contested_initializes() {
    let mut t = Table::new();
    let g1 = t.claim("c1", 0, Some("tok-a"));
    let a = t.publish(CONTROL, &init(1, Some("tok-a")), from("c1"));
    assert_eq!(ended(&a), vec![(g1, EndReason::Superseded, false)]);
    assert_eq!(
        errors_of(&a)[0].3,
        json!(0),
        "the superseded initialize is answered"
    );
    let g2 = start_of(&a).unwrap();
    assert!(g2 > g1);
    // Another token claiming the same id before either is confirmed: neither can be told
    // apart from a forgery, both are dropped and answered.
    let a = t.publish(CONTROL, &init(2, Some("tok-b")), from("c1"));
    assert_eq!(ended(&a), vec![(g2, EndReason::Contested, false)]);
    assert!(start_of(&a).is_none());
    let answered: Vec<Value> = errors_of(&a).into_iter().map(|e| e.3).collect();
    assert_eq!(answered, vec![json!(1), json!(2)]);
    assert_eq!(
        security(&a),
        vec![("initialize_contested", "c1".to_string(), false)]
    );
    assert_eq!(t.s.candidates(), 0);
}

/// Row "initialize from a forged id": another client claims a running session's id on the
/// shared control topic. It cannot read the answer nor confirm on that RPC topic: the
/// running session carries on, and the claim ends, audited as unconfirmed.
#[test]
fn a_forged_initialize_never_touches_the_running_session() {
    let mut t = Table::new();
    let running = t.open("victim");
    t.publish(&rpc("victim"), &call(7, "takeoff"), from("victim"));
    let forged = t.claim("victim", 100, None);
    assert!(t.answer("victim", forged, 100, true).0);
    // The victim's calls go on to its session; a call is not a proof of the candidate.
    let a = t.publish(&rpc("victim"), &call(8, "get_status"), from("victim"));
    assert!(
        matches!(&a[..], [Action::Deliver { generation, .. }] if *generation == running),
        "{a:?}"
    );
    assert!(t.respond("victim", running, 7));
    // No confirmation: dropped after the proof timeout, audited under the claimed id.
    let late = t0() + PROOF_TIMEOUT;
    assert!(
        t.s.poll_timeouts(late - Duration::from_millis(1))
            .iter()
            .all(|a| !matches!(a, Action::EndSession { .. }))
    );
    let a = t.s.poll_timeouts(late);
    assert_eq!(ended(&a), vec![(forged, EndReason::TimedOut, false)]);
    assert_eq!(
        security(&a),
        vec![("initialize_unconfirmed", "victim".to_string(), false)]
    );
    assert!(errors_of(&a).is_empty(), "the victim gets nothing: {a:?}");
    assert_eq!(t.s.active().collect::<Vec<_>>(), vec![("victim", running)]);
    assert!(t.respond("victim", running, 8));
}

/// A forged initialize reusing the id of a request the victim has in flight would land its
/// answer on that request: it is not answered at all, and audited.
#[test]
fn a_forged_initialize_reusing_an_id_in_flight_is_not_answered() {
    let mut t = Table::new();
    t.open("victim");
    t.publish(&rpc("victim"), &call(3, "takeoff"), from("victim"));
    let a = t.publish(CONTROL, &init(3, None), from("victim"));
    assert!(start_of(&a).is_none() && errors_of(&a).is_empty(), "{a:?}");
    assert_eq!(
        security(&a),
        vec![("initialize_id_collision", "victim".to_string(), false)]
    );
}

/// Row "re-initialize mid-call": the genuine client initializes again while a call runs;
/// once it confirms (`notifications/initialized`) the old session ends, its calls in
/// flight are answered with an error, and the new one takes over.
#[test]
fn a_genuine_reinitialize_mid_call_replaces_the_session_and_answers_its_calls() {
    let mut t = Table::new();
    let old = t.open("c1");
    t.publish(&rpc("c1"), &call(4, "goto"), from("c1"));
    t.publish(&rpc("c1"), &call(5, "wait_for_mode_change"), from("c1"));
    let new = t.claim("c1", 0, None);
    t.answer("c1", new, 0, true);
    let a = t.publish(&rpc("c1"), INITIALIZED, from("c1"));
    assert_eq!(ended(&a), vec![(old, EndReason::Replaced, true)]);
    let mut ids: Vec<Value> = errors_of(&a).into_iter().map(|e| e.3).collect();
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(ids, vec![json!(4), json!(5)]);
    assert!(
        a.iter().any(|x| matches!(x, Action::Promote { generation, replaced: Some(r), cut_short: 2, .. } if *generation == new && *r == old)),
        "{a:?}"
    );
    assert!(matches!(a.last(), Some(Action::Deliver { generation, .. }) if *generation == new));
    assert_eq!(t.s.in_flight(), (0, 0, 0));
    // The old generation's late answers go nowhere.
    assert!(!t.respond("c1", old, 4));
}

/// Row "presence lost": any message on the client's presence topic ends its session and
/// answers its calls in flight; row "broker restart": every session ends the same way.
#[test]
fn presence_lost_and_broker_reconnect_end_sessions_with_answers() {
    let mut t = Table::new();
    let g = t.open("c1");
    t.open("c2");
    t.publish(&rpc("c1"), &call(1, "get_status"), from("c1"));
    let a = t.publish("$mcp-client/presence/c1", "", from("c1"));
    assert_eq!(ended(&a), vec![(g, EndReason::PresenceLost, true)]);
    assert_eq!(errors_of(&a).len(), 1);
    t.publish(&rpc("c2"), &call(1, "get_status"), from("c2"));
    t.claim("c3", 0, None);
    let a = t.s.handle_connected();
    assert_eq!(ended(&a).len(), 2, "{a:?}");
    assert!(
        ended(&a)
            .iter()
            .all(|e| e.1 == EndReason::BrokerReconnected)
    );
    let e = errors_of(&a);
    assert_eq!(e.len(), 2, "c2's call and c3's initialize: {a:?}");
    assert_eq!((t.s.active().count(), t.s.candidates()), (0, 0));
}

#[test]
fn the_rpc_topic_says_who_sends_and_a_different_claim_is_refused_and_audited() {
    let mut t = Table::new();
    t.open("mallory");
    let a = t.publish(&rpc("mallory"), &call(1, "arm"), from("victim"));
    assert!(!delivered(&a), "{a:?}");
    assert_eq!(errors_of(&a)[0].2, "client_id_mismatch");
    assert_eq!(
        security(&a),
        vec![("client_id_mismatch", "mallory".to_string(), true)]
    );
    // Without the property, the topic alone says who it is.
    let a = t.publish(
        &rpc("mallory"),
        &call(2, "get_status"),
        Sender {
            client_id: None,
            component_type: Some("mcp-client"),
            retain: false,
        },
    );
    assert!(delivered(&a), "{a:?}");
}

#[test]
fn security_records_are_budgeted_and_the_rest_reported_together() {
    let mut t = Table::new();
    t.open("mallory");
    let mut recorded = 0;
    for id in 0..200 {
        let a = t.publish(&rpc("mallory"), &call(id, "arm"), from("victim"));
        recorded += security(&a).len();
        assert_eq!(errors_of(&a).len(), 1, "every request is still answered");
    }
    let burst = (SECURITY_RECORDS_PER_S * 2.0) as usize;
    assert_eq!(recorded, burst);
    assert_eq!(t.s.counters.security_suppressed, (200 - burst) as u64);
    let a = t.s.poll_timeouts(t0());
    let report: Vec<&Action> = a
        .iter()
        .filter(|x| {
            matches!(
                x,
                Action::Security {
                    kind: "security_events_suppressed",
                    ..
                }
            )
        })
        .collect();
    assert_eq!(report.len(), 1, "{a:?}");
    assert!(format!("{report:?}").contains(&format!("client_id_mismatch ×{}", 200 - burst)));
    // Reported once.
    assert!(security(&t.s.poll_timeouts(t0())).is_empty());
}

#[test]
fn the_emergency_stop_passes_from_anyone_the_broker_authenticated_session_or_not() {
    let mut t = Table::new();
    let stop = r#"{"jsonrpc":"2.0","id":"s1","method":"tools/call","params":{"name":"emergency_stop","arguments":{"reason":"bird"}}}"#;
    let a = t.publish(&rpc("nobody"), stop, from("nobody"));
    assert!(
        matches!(&a[..], [Action::EmergencyStop { client_id, generation: None, arguments, .. }]
            if client_id == "nobody" && arguments["reason"] == "bird"),
        "{a:?}"
    );
    let g = t.open("c1");
    // Every pool full: the stop still passes, and is not counted.
    for id in 1..=2 {
        t.publish(&rpc("c1"), &call(id, "get_status"), from("c1"));
    }
    let a = t.publish(&rpc("c1"), stop, from("c1"));
    assert!(
        matches!(&a[..], [Action::EmergencyStop { generation: Some(x), .. }] if *x == g),
        "{a:?}"
    );
}

#[test]
fn bad_client_ids_on_the_control_topic_are_dropped_and_counted() {
    let mut t = Table::new();
    let big = "v".repeat(64 * 1024);
    let claims: Vec<Option<&str>> = vec![
        None,
        Some(""),
        Some("victim/drone-1"),
        Some("a+"),
        Some("#"),
        Some("nul\0byte"),
        Some(&big),
    ];
    for claim in &claims {
        let a = t.publish(
            CONTROL,
            &init(0, None),
            Sender {
                client_id: *claim,
                component_type: Some("mcp-client"),
                retain: false,
            },
        );
        assert!(start_of(&a).is_none() && errors_of(&a).is_empty(), "{a:?}");
        let sec = security(&a);
        assert_eq!(sec.len(), 1);
        assert_eq!(sec[0].0, "bad_client_id");
        // A 64 KiB claim is never copied whole into a log or an audit record.
        for x in &a {
            if let Action::Security { detail, .. } | Action::Log { text: detail, .. } = x {
                assert!(detail.len() < 1024, "{} bytes", detail.len());
            }
        }
    }
    assert_eq!(t.s.counters.bad_client_ids, claims.len() as u64);
}

#[test]
fn an_initialize_flood_is_limited_counted_and_reported_and_sessions_keep_running() {
    let mut t = Table::with(Limits {
        candidates_max: 4,
        ..limits()
    });
    let g = t.open("pilot");
    // 200 claims in one instant: the burst (10, one used by the pilot) passes, the rest is
    // dropped and counted; candidates never exceed their cap (the oldest is evicted).
    for i in 0..200 {
        t.publish(CONTROL, &init(i, None), from(&format!("f{i}")));
    }
    assert_eq!(t.s.counters.initialize_flood_dropped, 200 - 9);
    assert!(t.s.candidates() <= 4);
    let a = t.s.poll_timeouts(t0());
    assert!(
        security(&a)
            .iter()
            .any(|(k, _, attested)| *k == "initialize_flood" && !attested),
        "{a:?}"
    );
    // The pilot's session still runs and its calls are delivered.
    let a = t.publish(&rpc("pilot"), &call(1, "land"), from("pilot"));
    assert!(matches!(&a[..], [Action::Deliver { generation, .. }] if *generation == g));
    // A second later the bucket has refilled: a new client gets in.
    let later = t0() + Duration::from_secs(2);
    let a = t.publish_at(later, CONTROL, &init(0, None), from("late"));
    assert!(start_of(&a).is_some(), "{a:?}");
}

#[test]
fn candidates_are_capped_by_evicting_the_oldest_unconfirmed() {
    let mut t = Table::new();
    let first = t.claim("a0", 0, None);
    for i in 1..4 {
        t.claim(&format!("a{i}"), 0, None);
    }
    let a = t.publish(CONTROL, &init(0, None), from("a4"));
    assert_eq!(ended(&a), vec![(first, EndReason::Evicted, false)]);
    assert_eq!(errors_of(&a)[0].0, rpc("a0"), "the evicted client is told");
    assert_eq!(t.s.candidates(), 4);
}

#[test]
fn sessions_full_refuses_new_clients_but_not_a_reinitialize() {
    let mut t = Table::with(Limits {
        sessions_max: 2,
        ..limits()
    });
    t.open("c1");
    t.open("c2");
    let a = t.publish(CONTROL, &init(0, None), from("c3"));
    assert_eq!(errors_of(&a)[0].2, "sessions_full");
    assert!(start_of(&a).is_none());
    assert!(start_of(&t.publish(CONTROL, &init(9, None), from("c1"))).is_some());
}

#[test]
fn calls_are_limited_per_session_per_identity_and_overall() {
    let mut t = Table::new();
    // a1 and a2 are one subject (alice); b is another.
    for cid in ["a1", "a2"] {
        t.gate
            .subjects
            .borrow_mut()
            .insert(cid.into(), "alice".into());
    }
    let a1 = t.open("a1");
    t.open("a2");
    t.open("b");
    let busy = |a: &[Action]| errors_of(a).first().map(|e| e.2.clone());
    // Per session: 2.
    assert!(delivered(&t.publish(
        &rpc("a1"),
        &call(1, "get_status"),
        from("a1")
    )));
    assert!(delivered(&t.publish(
        &rpc("a1"),
        &call(2, "get_status"),
        from("a1")
    )));
    let a = t.publish(&rpc("a1"), &call(3, "get_status"), from("a1"));
    assert_eq!(busy(&a).as_deref(), Some("busy"));
    assert!(
        a.iter().any(|x| matches!(x, Action::Publish { message, .. }
        if message["error"]["message"].as_str().unwrap().contains("session_calls_concurrent_max")))
    );
    // Per identity: 3 over alice's two sessions.
    assert!(delivered(&t.publish(
        &rpc("a2"),
        &call(1, "get_status"),
        from("a2")
    )));
    let a = t.publish(&rpc("a2"), &call(2, "get_status"), from("a2"));
    assert!(
        format!("{a:?}").contains("identity_calls_concurrent_max"),
        "{a:?}"
    );
    // Overall: 4.
    assert!(delivered(&t.publish(
        &rpc("b"),
        &call(1, "get_status"),
        from("b")
    )));
    let a = t.publish(&rpc("b"), &call(2, "get_status"), from("b"));
    assert!(format!("{a:?}").contains("calls_concurrent_max"), "{a:?}");
    // An answer frees a slot; a cancellation too.
    assert!(t.respond("a1", a1, 1));
    assert!(delivered(&t.publish(
        &rpc("b"),
        &call(3, "get_status"),
        from("b")
    )));
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#;
    t.publish(&rpc("a1"), cancel, from("a1"));
    assert_eq!(t.s.in_flight().0, 3);
}

/// Long waits have their own pool: hostile READ_ONLY sessions parking in
/// `wait_for_mode_change` neither fill the call pool nor get more than their share.
#[test]
fn long_waits_have_their_own_pool_with_a_share_per_identity() {
    let mut t = Table::new();
    for cid in ["r1", "r2", "r3"] {
        t.open(cid);
    }
    let wait = |id| call(id, "wait_for_mode_change");
    assert!(delivered(&t.publish(&rpc("r1"), &wait(1), from("r1"))));
    assert!(delivered(&t.publish(&rpc("r1"), &wait(2), from("r1"))));
    let a = t.publish(&rpc("r1"), &wait(3), from("r1"));
    assert!(
        format!("{a:?}").contains("identity_waits_concurrent_max"),
        "{a:?}"
    );
    assert!(delivered(&t.publish(&rpc("r2"), &wait(1), from("r2"))));
    let a = t.publish(&rpc("r3"), &wait(1), from("r3"));
    assert!(format!("{a:?}").contains("waits_concurrent_max"), "{a:?}");
    // The call pool is untouched by the waits.
    assert_eq!(t.s.in_flight(), (0, 3, 0));
    assert!(delivered(&t.publish(
        &rpc("r3"),
        &call(2, "get_status"),
        from("r3")
    )));
}

/// With every general slot taken by others, the lease holder's `land` and an ADMIN's reset
/// still get through (the reserved pool), and only they do.
#[test]
fn the_reserved_pool_lets_the_holders_land_and_the_admin_reset_through() {
    let mut t = Table::new();
    let pilot = t.open("pilot");
    t.open("admin");
    for cid in ["h1", "h2"] {
        t.open(cid);
        for id in 1..=2 {
            t.publish(&rpc(cid), &call(id, "get_status"), from(cid));
        }
    }
    assert_eq!(t.s.in_flight().0, 4, "the general pool is full");
    t.gate.priority.borrow_mut().extend([
        ("pilot".to_string(), "land".to_string()),
        ("admin".to_string(), "reset_emergency_stop".to_string()),
    ]);
    let a = t.publish(&rpc("pilot"), &call(1, "goto"), from("pilot"));
    assert!(!delivered(&a), "a goto is not a priority: {a:?}");
    let a = t.publish(&rpc("pilot"), &call(2, "land"), from("pilot"));
    assert!(
        matches!(&a[..], [Action::Deliver { generation, .. }] if *generation == pilot),
        "{a:?}"
    );
    let a = t.publish(
        &rpc("admin"),
        &call(1, "reset_emergency_stop"),
        from("admin"),
    );
    assert!(delivered(&a), "{a:?}");
    assert_eq!(t.s.in_flight().2, 2);
    // The reserved pool is bounded too.
    let a = t.publish(&rpc("pilot"), &call(3, "land"), from("pilot"));
    assert!(
        format!("{a:?}").contains("priority_calls_concurrent_max"),
        "{a:?}"
    );
}

#[test]
fn bad_rpc_input_is_answered_echoes_ignored_and_sessionless_replies_bounded() {
    let mut t = Table::new();
    t.open("c1");
    let big = " ".repeat(5000);
    let init_on_rpc = init(1, None);
    let cases: Vec<(&str, i64)> = vec![
        ("{oops", -32700),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#, -32601),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}"#,
            -32602,
        ),
        (&big, -32600),
        (&init_on_rpc, -32600),
    ];
    for (payload, code) in cases {
        let a = t.publish(&rpc("c1"), payload, from("c1"));
        assert_eq!(error_code(&a), Some(code), "{payload:.40}");
    }
    let echo = Sender {
        client_id: Some("sid"),
        component_type: Some("mcp-server"),
        retain: false,
    };
    assert!(t.publish(&rpc("c1"), &call(9, "arm"), echo).is_empty());
    // Client-side de-initialize on the RPC topic.
    let a = t.publish(
        &rpc("c1"),
        r#"{"jsonrpc":"2.0","method":"notifications/disconnected"}"#,
        from("c1"),
    );
    assert_eq!(ended(&a)[0].1, EndReason::Disconnected);
    // A client without a session gets an error per request, within the reply budget.
    let budget = SESSIONLESS_REPLIES_PER_S as u32;
    let mut answered = 0;
    for id in 0..budget + 20 {
        let a = t.publish(&rpc("c9"), &call(id, "get_status"), from("c9"));
        answered += errors_of(&a).len() as u32;
    }
    assert_eq!(answered, budget);
    assert_eq!(t.s.counters.sessionless_dropped, 20);
}

#[test]
fn shutdown_says_goodbye_and_answers_what_was_in_flight() {
    let mut t = Table::new();
    t.open("c1");
    t.publish(&rpc("c1"), &call(1, "goto"), from("c1"));
    t.claim("c2", 0, None);
    let a = t.s.handle_shutdown();
    assert!(a.iter().any(|x| matches!(x, Action::Publish { message, .. }
        if message["method"] == "notifications/disconnected")));
    assert_eq!(ended(&a).len(), 2);
    assert_eq!(
        errors_of(&a).len(),
        2,
        "c1's goto and c2's initialize: {a:?}"
    );
}
