//! Session bookkeeping of the MCP-over-MQTT server (sans-IO).
//!
//! Which client sessions exist, what to subscribe and unsubscribe, where each incoming
//! message goes, and the limits (sessions, concurrent calls per session and overall,
//! message size). No tokio, no sockets, no clock: the shell feeds inputs and carries out
//! the returned [`Action`]s in order.
//!
//! Call order:
//! 1. `handle_connected()` after every CONNACK (drops every session: Session Expiry 0 means
//!    the broker forgot our per-client subscriptions).
//! 2. `handle_publish(..)` for every incoming PUBLISH.
//! 3. `handle_suback(client_id, ok)` when the SUBACK of an [`Action::Subscribe`] arrives.
//! 4. `handle_outgoing(client_id, generation, message)` for every message a session sends,
//!    before publishing it (ends the call-concurrency accounting of responses).
//! 5. `poll_timeouts(now)` periodically: drops sessions whose SUBACK never came.
//! 6. `handle_shutdown()` once, before the graceful DISCONNECT.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rmcp::model::ClientJsonRpcMessage;
use serde_json::{Value, json};

use super::errors::{self, Checked};
use super::mqtt::valid_client_id;

/// Topic names of one server instance.
#[derive(Debug, Clone)]
pub struct Topics {
    pub server_root: String,
    pub client_root: String,
    pub rpc_root: String,
    pub server_id: String,
    pub server_name: String,
}

/// What an incoming topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    Control,
    Rpc(String),
    ClientPresence(String),
    ClientCapability(String),
    Other,
}

impl Topics {
    pub fn control(&self) -> String {
        format!(
            "{}/{}/{}",
            self.server_root, self.server_id, self.server_name
        )
    }
    pub fn presence(&self) -> String {
        format!(
            "{}/presence/{}/{}",
            self.server_root, self.server_id, self.server_name
        )
    }
    pub fn capability(&self) -> String {
        format!(
            "{}/capability/{}/{}",
            self.server_root, self.server_id, self.server_name
        )
    }
    pub fn rpc(&self, client_id: &str) -> String {
        format!(
            "{}/{client_id}/{}/{}",
            self.rpc_root, self.server_id, self.server_name
        )
    }
    pub fn client_presence(&self, client_id: &str) -> String {
        format!("{}/presence/{client_id}", self.client_root)
    }
    pub fn client_capability(&self, client_id: &str) -> String {
        format!("{}/capability/{client_id}", self.client_root)
    }

    /// Classifies an incoming topic.
    pub fn classify(&self, topic: &str) -> TopicKind {
        if topic == self.control() {
            return TopicKind::Control;
        }
        if let Some(cid) = topic
            .strip_prefix(&self.client_root)
            .and_then(|t| t.strip_prefix("/presence/"))
        {
            return TopicKind::ClientPresence(cid.to_owned());
        }
        if let Some(cid) = topic
            .strip_prefix(&self.client_root)
            .and_then(|t| t.strip_prefix("/capability/"))
        {
            return TopicKind::ClientCapability(cid.to_owned());
        }
        let tail = format!("/{}/{}", self.server_id, self.server_name);
        if let Some(cid) = topic
            .strip_prefix(&self.rpc_root)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix(&tail))
            && valid_client_id(cid)
        {
            return TopicKind::Rpc(cid.to_owned());
        }
        TopicKind::Other
    }
}

/// Limits, from `[mcp]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub sessions_max: usize,
    pub session_calls_concurrent_max: usize,
    pub calls_concurrent_max: usize,
    pub message_bytes_max: usize,
}

/// What the incoming PUBLISH carried besides topic and payload.
#[derive(Debug, Clone, Default)]
pub struct Sender<'a> {
    /// `MCP-MQTT-CLIENT-ID` user property.
    pub client_id: Option<&'a str>,
    /// `MCP-COMPONENT-TYPE` user property.
    pub component_type: Option<&'a str>,
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Action {
    /// One SUBSCRIBE with these filters (`no_local` true for the RPC topic); report its
    /// SUBACK with `handle_suback(client_id, ..)`.
    Subscribe {
        client_id: String,
        filters: Vec<(String, bool)>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    /// Start a session (an rmcp service) and deliver `initialize` to it.
    StartSession {
        client_id: String,
        generation: u64,
        initialize: Box<ClientJsonRpcMessage>,
    },
    /// Stop the session's service (a re-initialize starts a new generation).
    EndSession {
        client_id: String,
        generation: u64,
    },
    /// Hand a message to a running session.
    Deliver {
        client_id: String,
        generation: u64,
        message: Box<ClientJsonRpcMessage>,
    },
    /// Publish this JSON on a topic (error replies, `notifications/disconnected`).
    Publish {
        topic: String,
        message: Value,
    },
    /// Something worth a log line (counted by the shell).
    Log {
        warning: bool,
        text: String,
    },
}

#[derive(Debug)]
struct Session {
    generation: u64,
    /// SUBACK not yet received: the `initialize` waits here.
    pending_initialize: Option<Box<ClientJsonRpcMessage>>,
    /// When the SUBSCRIBE was asked for.
    pending_since: Instant,
    /// Ids (as JSON text) of `tools/call` requests still running.
    calls: HashSet<String>,
}

/// How long a session may wait for its SUBACK before it is dropped (the client's own
/// `initialize` timeout is 30 s by the transport spec).
pub const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The session table (see the module documentation for the call order).
#[derive(Debug)]
pub struct Sessions {
    topics: Topics,
    limits: Limits,
    sessions: BTreeMap<String, Session>,
    next_generation: u64,
    /// Messages dropped or refused, for metrics and tests.
    pub refused_count: u64,
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Sessions {
    pub fn new(topics: Topics, limits: Limits) -> Sessions {
        Sessions {
            topics,
            limits,
            sessions: BTreeMap::new(),
            next_generation: 1,
            refused_count: 0,
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Client ids of running sessions (not those waiting for a SUBACK).
    pub fn active(&self) -> impl Iterator<Item = (&str, u64)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.pending_initialize.is_none())
            .map(|(cid, s)| (cid.as_str(), s.generation))
    }

    fn calls_in_flight(&self) -> usize {
        self.sessions.values().map(|s| s.calls.len()).sum()
    }

    fn client_topics(&self, cid: &str) -> Vec<String> {
        vec![
            self.topics.rpc(cid),
            self.topics.client_capability(cid),
            self.topics.client_presence(cid),
        ]
    }

    fn end(&mut self, cid: &str, unsubscribe: bool, actions: &mut Vec<Action>) {
        if let Some(session) = self.sessions.remove(cid) {
            actions.push(Action::EndSession {
                client_id: cid.to_owned(),
                generation: session.generation,
            });
            if unsubscribe {
                actions.push(Action::Unsubscribe {
                    topics: self.client_topics(cid),
                });
            }
        }
    }

    fn refuse(&mut self, actions: &mut Vec<Action>, text: String) {
        self.refused_count += 1;
        actions.push(Action::Log {
            warning: true,
            text,
        });
    }

    /// After every CONNACK: every session is gone.
    pub fn handle_connected(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let cids: Vec<String> = self.sessions.keys().cloned().collect();
        for cid in cids {
            self.end(&cid, false, &mut actions);
        }
        actions
    }

    /// An incoming PUBLISH.
    pub fn handle_publish(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        sender: Sender,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.topics.classify(topic) {
            TopicKind::ClientPresence(cid) => {
                // Any message here (a `disconnected`, an empty Will) ends the session.
                if self.sessions.contains_key(&cid) {
                    actions.push(Action::Log {
                        warning: false,
                        text: format!("client {cid} left (message on its presence topic)"),
                    });
                    self.end(&cid, true, &mut actions);
                }
            }
            TopicKind::ClientCapability(_) => {}
            TopicKind::Control => self.control(now, payload, sender, &mut actions),
            TopicKind::Rpc(cid) => self.rpc(&cid, payload, sender, &mut actions),
            TopicKind::Other => {
                self.refuse(&mut actions, format!("message on unexpected topic {topic}"))
            }
        }
        actions
    }

    fn control(&mut self, now: Instant, payload: &[u8], sender: Sender, actions: &mut Vec<Action>) {
        let Some(cid) = sender.client_id.filter(|c| valid_client_id(c)) else {
            self.refuse(
                actions,
                format!(
                    "control message without a valid MCP-MQTT-CLIENT-ID user property ({:?}) dropped",
                    sender.client_id
                ),
            );
            return;
        };
        let cid = cid.to_owned();
        let rpc_topic = self.topics.rpc(&cid);
        let (message, method, id) = match errors::check(payload, self.limits.message_bytes_max) {
            Checked::Refused { reply, log } => {
                if let Some(reply) = reply {
                    actions.push(Action::Publish {
                        topic: rpc_topic,
                        message: reply,
                    });
                }
                self.refuse(actions, format!("control message from {cid}: {log}"));
                return;
            }
            Checked::Message {
                message,
                method,
                id,
                ..
            } => (message, method, id),
        };
        if method.as_deref() != Some("initialize") || id.is_none() {
            if let Some(id) = &id {
                actions.push(Action::Publish {
                    topic: rpc_topic,
                    message: errors::error_response(
                        Some(id),
                        errors::INVALID_REQUEST,
                        "only `initialize` is accepted on the control topic; send it first, then use your RPC topic",
                        None,
                    ),
                });
            }
            self.refuse(
                actions,
                format!("control message {method:?} from {cid} is not an initialize request"),
            );
            return;
        }
        let existing = self.sessions.contains_key(&cid);
        if existing {
            // A re-initialize from a known client id (the Python and TS SDKs reuse ids).
            self.end(&cid, false, actions);
        } else if self.sessions.len() >= self.limits.sessions_max {
            actions.push(Action::Publish {
                topic: rpc_topic,
                message: errors::error_response(
                    id.as_ref(),
                    errors::SERVER_BUSY,
                    &format!(
                        "the server has {} sessions, the most it accepts (mcp.sessions_max); try again later",
                        self.limits.sessions_max
                    ),
                    None,
                ),
            });
            self.refuse(
                actions,
                format!("initialize from {cid} refused: session limit"),
            );
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.sessions.insert(
            cid.clone(),
            Session {
                generation,
                pending_initialize: Some(message),
                pending_since: now,
                calls: HashSet::new(),
            },
        );
        actions.push(Action::Subscribe {
            client_id: cid.clone(),
            filters: vec![
                (self.topics.rpc(&cid), true),
                (self.topics.client_capability(&cid), false),
                (self.topics.client_presence(&cid), false),
            ],
        });
    }

    /// The SUBACK of a session's SUBSCRIBE: `ok` when every reason code is a success.
    pub fn handle_suback(&mut self, cid: &str, ok: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(session) = self.sessions.get_mut(cid) else {
            return actions;
        };
        let Some(initialize) = session.pending_initialize.take() else {
            return actions;
        };
        if !ok {
            let id = match &*initialize {
                ClientJsonRpcMessage::Request(r) => serde_json::to_value(&r.id).ok(),
                _ => None,
            };
            actions.push(Action::Publish {
                topic: self.topics.rpc(cid),
                message: errors::error_response(
                    id.as_ref(),
                    errors::INTERNAL_ERROR,
                    "the broker refused the server's subscription to this client's topics (check the broker ACL)",
                    None,
                ),
            });
            self.sessions.remove(cid);
            actions.push(Action::Unsubscribe {
                topics: self.client_topics(cid),
            });
            self.refuse(&mut actions, format!("SUBACK refused for client {cid}"));
            return actions;
        }
        actions.push(Action::StartSession {
            client_id: cid.to_owned(),
            generation: session.generation,
            initialize,
        });
        actions
    }

    fn rpc(&mut self, cid: &str, payload: &[u8], sender: Sender, actions: &mut Vec<Action>) {
        if sender.component_type == Some("mcp-server") {
            // Our own (or another server's) message echoed back: No Local's second guard.
            return;
        }
        let rpc_topic = self.topics.rpc(cid);
        let running = self
            .sessions
            .get(cid)
            .filter(|s| s.pending_initialize.is_none())
            .map(|s| s.generation);
        let Some(generation) = running else {
            self.refuse(
                actions,
                format!("RPC message from {cid}, which has no session, dropped"),
            );
            return;
        };
        if payload.len() <= self.limits.message_bytes_max
            && serde_json::from_slice::<Value>(payload)
                .ok()
                .is_some_and(|v| v["method"] == "notifications/disconnected")
        {
            // Client-side de-initialize.
            actions.push(Action::Log {
                warning: false,
                text: format!("client {cid} de-initialized"),
            });
            self.end(cid, true, actions);
            return;
        }
        let checked = errors::check(payload, self.limits.message_bytes_max);
        let (message, method, id, cancels) = match checked {
            Checked::Refused { reply, log } => {
                if let Some(reply) = reply {
                    actions.push(Action::Publish {
                        topic: rpc_topic,
                        message: reply,
                    });
                }
                self.refuse(actions, format!("RPC message from {cid}: {log}"));
                return;
            }
            Checked::Message {
                message,
                method,
                id,
                cancels,
            } => (message, method, id, cancels),
        };
        match method.as_deref() {
            Some("initialize") => {
                if let Some(id) = &id {
                    actions.push(Action::Publish {
                        topic: rpc_topic,
                        message: errors::error_response(
                            Some(id),
                            errors::INVALID_REQUEST,
                            "already initialized: send `initialize` on the control topic to start a new session",
                            None,
                        ),
                    });
                }
                self.refuse(actions, format!("initialize from {cid} on its RPC topic"));
                return;
            }
            Some("tools/call") => {
                let in_flight = self.calls_in_flight();
                let Some(session) = self.sessions.get_mut(cid) else {
                    return;
                };
                let text = if session.calls.len() >= self.limits.session_calls_concurrent_max {
                    Some(format!(
                        "this session already runs {} tool calls, the most allowed (mcp.session_calls_concurrent_max); wait for one to finish",
                        session.calls.len()
                    ))
                } else if in_flight >= self.limits.calls_concurrent_max {
                    Some(format!(
                        "the server already runs {in_flight} tool calls, the most allowed (mcp.calls_concurrent_max); retry shortly"
                    ))
                } else {
                    None
                };
                if let Some(text) = text {
                    actions.push(Action::Publish {
                        topic: rpc_topic,
                        message: errors::error_response(
                            id.as_ref(),
                            errors::SERVER_BUSY,
                            &text,
                            None,
                        ),
                    });
                    self.refuse(actions, format!("tools/call from {cid}: {text}"));
                    return;
                }
                if let Some(id) = &id {
                    session.calls.insert(id_key(id));
                }
            }
            Some("notifications/cancelled") => {
                // A cancelled call sends no response: end its accounting here.
                if let (Some(request), Some(session)) = (&cancels, self.sessions.get_mut(cid)) {
                    session.calls.remove(&id_key(request));
                }
            }
            _ => {}
        }
        actions.push(Action::Deliver {
            client_id: cid.to_owned(),
            generation,
            message,
        });
    }

    /// Drops sessions whose SUBACK did not arrive within [`SUBACK_TIMEOUT`].
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.pending_initialize.is_some()
                    && now.saturating_duration_since(s.pending_since) >= SUBACK_TIMEOUT
            })
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in expired {
            self.sessions.remove(&cid);
            actions.push(Action::Unsubscribe {
                topics: self.client_topics(&cid),
            });
            self.refuse(
                &mut actions,
                format!("no SUBACK for client {cid} within {SUBACK_TIMEOUT:?}: initialize dropped"),
            );
        }
        actions
    }

    /// A message a session is about to send (responses end a call).
    pub fn handle_outgoing(&mut self, cid: &str, generation: u64, message: &Value) -> bool {
        let Some(session) = self.sessions.get_mut(cid) else {
            return false;
        };
        if session.generation != generation {
            return false;
        }
        if message.get("method").is_none()
            && let Some(id) = message.get("id")
        {
            session.calls.remove(&id_key(id));
        }
        true
    }

    /// Graceful shutdown: tell every client, end every session.
    pub fn handle_shutdown(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let cids: Vec<String> = self.sessions.keys().cloned().collect();
        for cid in cids {
            actions.push(Action::Publish {
                topic: self.topics.rpc(&cid),
                message: json!({"jsonrpc": "2.0", "method": "notifications/disconnected"}),
            });
            self.end(&cid, true, &mut actions);
        }
        actions
    }
}

#[cfg(test)]
mod tests {
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

    fn sessions(sessions_max: usize, per_session: usize, total: usize) -> Sessions {
        Sessions::new(
            topics(),
            Limits {
                sessions_max,
                session_calls_concurrent_max: per_session,
                calls_concurrent_max: total,
                message_bytes_max: 4096,
            },
        )
    }

    fn t0() -> Instant {
        // One fixed instant per test run; timeouts are tested with offsets from it.
        use std::sync::OnceLock;
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    #[test]
    fn a_session_without_suback_expires() {
        let mut s = sessions(1, 4, 8);
        s.handle_publish(
            t0(),
            "$mcp-server/sid/fc/drone",
            INIT.as_bytes(),
            client("c1"),
        );
        assert!(s.poll_timeouts(t0() + SUBACK_TIMEOUT / 2).is_empty());
        let a = s.poll_timeouts(t0() + SUBACK_TIMEOUT);
        assert!(
            a.iter().any(|a| matches!(a, Action::Unsubscribe { .. })),
            "{a:?}"
        );
        // The slot is free again and a late SUBACK does nothing.
        assert!(s.handle_suback("c1", true).is_empty());
        let a = s.handle_publish(
            t0(),
            "$mcp-server/sid/fc/drone",
            INIT.as_bytes(),
            client("c2"),
        );
        assert!(matches!(&a[..], [Action::Subscribe { .. }]), "{a:?}");
    }

    const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

    fn client(cid: &str) -> Sender<'_> {
        Sender {
            client_id: Some(cid),
            component_type: Some("mcp-client"),
        }
    }

    /// initialize + SUBACK ok: the session runs.
    fn open(s: &mut Sessions, cid: &str) -> u64 {
        let a = s.handle_publish(
            t0(),
            "$mcp-server/sid/fc/drone",
            INIT.as_bytes(),
            client(cid),
        );
        assert!(matches!(&a[..], [Action::Subscribe { .. }]), "{a:?}");
        let a = s.handle_suback(cid, true);
        match &a[..] {
            [Action::StartSession { generation, .. }] => *generation,
            other => panic!("{other:?}"),
        }
    }

    fn call(id: u32) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"get_status"}}}}"#
        )
    }

    fn error_code(actions: &[Action]) -> Option<i64> {
        actions.iter().find_map(|a| match a {
            Action::Publish { message, .. } => message["error"]["code"].as_i64(),
            _ => None,
        })
    }

    #[test]
    fn topics_are_classified() {
        let t = topics();
        let cases = [
            ("$mcp-server/sid/fc/drone", TopicKind::Control),
            ("$mcp-rpc/c1/sid/fc/drone", TopicKind::Rpc("c1".into())),
            (
                "$mcp-client/presence/c1",
                TopicKind::ClientPresence("c1".into()),
            ),
            (
                "$mcp-client/capability/c1",
                TopicKind::ClientCapability("c1".into()),
            ),
            ("$mcp-rpc/c1/other/fc/drone", TopicKind::Other),
            ("$mcp-server/presence/sid/fc/drone", TopicKind::Other),
        ];
        for (topic, kind) in cases {
            assert_eq!(t.classify(topic), kind, "{topic}");
        }
        assert_eq!(t.rpc("c1"), "$mcp-rpc/c1/sid/fc/drone");
    }

    #[test]
    fn initialize_subscribes_three_topics_then_starts_after_suback() {
        let mut s = sessions(4, 4, 8);
        let a = s.handle_publish(
            t0(),
            "$mcp-server/sid/fc/drone",
            INIT.as_bytes(),
            client("c1"),
        );
        let [Action::Subscribe { client_id, filters }] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(client_id, "c1");
        assert_eq!(
            filters,
            &vec![
                ("$mcp-rpc/c1/sid/fc/drone".to_string(), true),
                ("$mcp-client/capability/c1".to_string(), false),
                ("$mcp-client/presence/c1".to_string(), false),
            ]
        );
        // Before the SUBACK, RPC messages are not delivered.
        let a = s.handle_publish(
            t0(),
            "$mcp-rpc/c1/sid/fc/drone",
            call(1).as_bytes(),
            client("c1"),
        );
        assert!(!a.iter().any(|a| matches!(a, Action::Deliver { .. })));
        assert!(matches!(
            &s.handle_suback("c1", true)[..],
            [Action::StartSession { .. }]
        ));
        assert_eq!(s.active().count(), 1);
    }

    #[test]
    fn control_messages_without_a_usable_client_id_are_dropped() {
        let mut s = sessions(4, 4, 8);
        for sender in [
            Sender::default(),
            client("a/b"),
            client("a+"),
            client("#"),
            client(""),
        ] {
            let a = s.handle_publish(t0(), "$mcp-server/sid/fc/drone", INIT.as_bytes(), sender);
            assert!(a.iter().all(|a| matches!(a, Action::Log { .. })), "{a:?}");
        }
        assert_eq!(s.refused_count, 5);
    }

    #[test]
    fn reinitialize_resets_and_presence_ends_the_session() {
        let mut s = sessions(4, 4, 8);
        let g1 = open(&mut s, "c1");
        let a = s.handle_publish(
            t0(),
            "$mcp-server/sid/fc/drone",
            INIT.as_bytes(),
            client("c1"),
        );
        assert!(
            matches!(&a[..], [Action::EndSession { generation, .. }, Action::Subscribe { .. }] if *generation == g1),
            "{a:?}"
        );
        let g2 = match &s.handle_suback("c1", true)[..] {
            [Action::StartSession { generation, .. }] => *generation,
            other => panic!("{other:?}"),
        };
        assert!(g2 > g1);
        // Old-generation output is ignored.
        assert!(!s.handle_outgoing("c1", g1, &json!({"id": 1, "result": {}})));
        // Empty payload on the presence topic (a Will): session gone, topics unsubscribed.
        let a = s.handle_publish(t0(), "$mcp-client/presence/c1", b"", client("c1"));
        assert!(
            a.iter().any(|a| matches!(a, Action::EndSession { .. }))
                && a.iter()
                    .any(|a| matches!(a, Action::Unsubscribe { topics } if topics.len() == 3)),
            "{a:?}"
        );
        assert_eq!(s.active().count(), 0);
    }

    #[test]
    fn limits_on_sessions_and_concurrent_calls() {
        let mut s = sessions(1, 2, 3);
        let g = open(&mut s, "c1");
        let a = s.handle_publish(
            t0(),
            "$mcp-server/sid/fc/drone",
            INIT.as_bytes(),
            client("c2"),
        );
        assert_eq!(error_code(&a), Some(errors::SERVER_BUSY as i64), "{a:?}");

        let rpc = "$mcp-rpc/c1/sid/fc/drone";
        for id in [1, 2] {
            let a = s.handle_publish(t0(), rpc, call(id).as_bytes(), client("c1"));
            assert!(matches!(&a[..], [Action::Deliver { .. }]), "{a:?}");
        }
        let a = s.handle_publish(t0(), rpc, call(3).as_bytes(), client("c1"));
        assert_eq!(error_code(&a), Some(errors::SERVER_BUSY as i64));
        // A response frees a slot, a cancellation too.
        assert!(s.handle_outgoing("c1", g, &json!({"jsonrpc":"2.0","id":1,"result":{}})));
        let a = s.handle_publish(t0(), rpc, call(4).as_bytes(), client("c1"));
        assert!(matches!(&a[..], [Action::Deliver { .. }]), "{a:?}");
        let cancel =
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#;
        s.handle_publish(t0(), rpc, cancel.as_bytes(), client("c1"));
        let a = s.handle_publish(t0(), rpc, call(5).as_bytes(), client("c1"));
        assert!(matches!(&a[..], [Action::Deliver { .. }]), "{a:?}");
    }

    #[test]
    fn bad_rpc_input_is_answered_and_echoes_are_ignored() {
        let mut s = sessions(4, 4, 8);
        open(&mut s, "c1");
        let rpc = "$mcp-rpc/c1/sid/fc/drone";
        let big = vec![b' '; 5000];
        let cases: Vec<(&[u8], Option<i64>)> = vec![
            (b"{oops", Some(-32700)),
            (
                br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                Some(-32600),
            ),
            (br#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#, Some(-32601)),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}"#,
                Some(-32602),
            ),
            (&big, Some(-32600)),
            (INIT.as_bytes(), Some(-32600)),
        ];
        for (payload, code) in cases {
            let a = s.handle_publish(t0(), rpc, payload, client("c1"));
            assert_eq!(error_code(&a), code, "{}", String::from_utf8_lossy(payload));
        }
        let echo = Sender {
            client_id: Some("sid"),
            component_type: Some("mcp-server"),
        };
        assert!(
            s.handle_publish(t0(), rpc, call(9).as_bytes(), echo)
                .is_empty()
        );
        // Client-side de-initialize on the RPC topic.
        let bye = br#"{"jsonrpc":"2.0","method":"notifications/disconnected"}"#;
        let a = s.handle_publish(t0(), rpc, bye, client("c1"));
        assert!(
            a.iter().any(|a| matches!(a, Action::Unsubscribe { .. })),
            "{a:?}"
        );
        assert_eq!(s.active().count(), 0);
        // Unknown session: dropped and logged.
        let a = s.handle_publish(
            t0(),
            "$mcp-rpc/c9/sid/fc/drone",
            call(1).as_bytes(),
            client("c9"),
        );
        assert!(
            matches!(&a[..], [Action::Log { warning: true, .. }]),
            "{a:?}"
        );
        // A call before initialize on the control topic is answered.
        let a = s.handle_publish(
            t0(),
            "$mcp-server/sid/fc/drone",
            call(1).as_bytes(),
            client("c9"),
        );
        assert_eq!(error_code(&a), Some(-32600));
    }

    #[test]
    fn reconnect_drops_sessions_and_shutdown_says_goodbye() {
        let mut s = sessions(4, 4, 8);
        open(&mut s, "c1");
        open(&mut s, "c2");
        let a = s.handle_connected();
        assert_eq!(
            a.iter()
                .filter(|a| matches!(a, Action::EndSession { .. }))
                .count(),
            2
        );
        assert_eq!(s.active().count(), 0);
        open(&mut s, "c1");
        let a = s.handle_shutdown();
        assert!(a.iter().any(|a| matches!(a, Action::Publish { message, .. }
            if message["method"] == "notifications/disconnected")));
        assert!(a.iter().any(|a| matches!(a, Action::Unsubscribe { .. })));
    }
}
