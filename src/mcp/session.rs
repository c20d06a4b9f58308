//! Session lifecycle and capacity of the MCP-over-MQTT server (sans-IO).
//!
//! Which client sessions exist, where each incoming message goes, what every party is
//! answered, and the limits (sessions, concurrent calls per session, per identity and
//! overall, long waits, the reserved pool). No tokio, no sockets, no clock: the shell feeds
//! inputs and carries out the returned [`Action`]s in order.
//!
//! **Identity.** A message's client is the client id of the RPC topic it arrived on
//! (`{rpc_root}/{client_id}/{server_id}/{server_name}`): the broker's ACL lets only that
//! identity publish there (dev-setup: `pattern readwrite $mcp-rpc/%u/#` with the certificate
//! CN as user name and client id). The `MCP-MQTT-CLIENT-ID` user property is checked
//! against it, never trusted on its own. The shared control topic says nothing about its
//! publisher: an `initialize` there is only a *claim* to a client id. It becomes a session
//! only when the claimed client proves it holds the id by publishing on its RPC topic after
//! reading the answer there (which only it can read): its `notifications/initialized`, or,
//! for a client without a session yet, any message.
//!
//! **The lifecycle of one client id** (ARCHITECTURE.md has the table of what each party sees):
//! ```text
//!            initialize (control topic, a claim)
//!   (none) ──────────────────────────────────────▶ Candidate: unanswered
//!                                                     │ the session answers initialize
//!                                       error ◀───────┤ (token, broker identity, limits)
//!        (candidate ends; nothing else changes)       │ result
//!                                                     ▼
//!                                                  Candidate: answered, awaiting proof
//!                                                     │ a message on the client's RPC topic
//!          no proof in PROOF_TIMEOUT: dropped ◀───────┤ (`notifications/initialized` when a
//!          (audited as unconfirmed)                   │  session already runs)
//!                                                     ▼
//!                                                  Established ── presence / disconnected /
//!                                                     │             broker reconnect ──▶ (none)
//!            re-initialize: a new Candidate beside it; the running session is untouched
//!            until the new one is proven, then it is replaced (its requests in flight
//!            answered with an error).
//! ```
//!
//! Call order:
//! 1. `handle_connected()` after every CONNACK (every session ends: Session Expiry 0).
//! 2. `handle_publish(now, topic, payload, sender, authority)` for every incoming PUBLISH.
//! 3. `handle_outgoing(now, client_id, generation, message)` for every message a session
//!    sends, before publishing it (ends the accounting of answered requests, learns the
//!    verdict of a candidate's `initialize`).
//! 4. `poll_timeouts(now)` periodically (unanswered and unproven candidates, flood reports).
//! 5. `handle_shutdown()` once, before the graceful DISCONNECT.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use serde_json::{Value, json};

use super::errors::{self, Checked};
use super::transport::{self, TopicKind, Topics, valid_client_id};
use crate::auth::rate::TokenBucket;

/// Limits, from `[mcp]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub sessions_max: usize,
    pub session_calls_concurrent_max: usize,
    pub calls_concurrent_max: usize,
    pub message_bytes_max: usize,
    pub candidates_max: usize,
    pub identity_calls_concurrent_max: usize,
    pub waits_concurrent_max: usize,
    pub identity_waits_concurrent_max: usize,
    pub priority_calls_concurrent_max: usize,
    pub initialize_per_s: f64,
    pub initialize_burst: u32,
}

impl Limits {
    pub fn from_config(m: &crate::config::McpConfig) -> Limits {
        Limits {
            sessions_max: m.sessions_max,
            session_calls_concurrent_max: m.session_calls_concurrent_max,
            calls_concurrent_max: m.calls_concurrent_max,
            message_bytes_max: m.message_bytes_max,
            candidates_max: m.candidates_max,
            identity_calls_concurrent_max: m.identity_calls_concurrent_max,
            waits_concurrent_max: m.waits_concurrent_max,
            identity_waits_concurrent_max: m.identity_waits_concurrent_max,
            priority_calls_concurrent_max: m.priority_calls_concurrent_max,
            initialize_per_s: m.initialize_per_s,
            initialize_burst: m.initialize_burst,
        }
    }
}

/// What the incoming PUBLISH carried besides topic and payload.
#[derive(Debug, Clone, Default)]
pub struct Sender<'a> {
    /// `MCP-MQTT-CLIENT-ID` user property (a claim: checked against the topic).
    pub client_id: Option<&'a str>,
    /// `MCP-COMPONENT-TYPE` user property.
    pub component_type: Option<&'a str>,
    /// The PUBLISH's retain flag.
    pub retain: bool,
}

/// What the gate knows that the table needs (implemented by the shell over `mcp::guard`;
/// a plain struct in tests).
pub trait Authority {
    /// The subject the gate verified for a candidate's `initialize`, if it did.
    fn candidate_subject(&self, client_id: &str, generation: u64) -> Option<String>;
    /// How a `tools/call` of `tool` from `client_id` (its session's `generation`; `None`
    /// before it has one) is treated, from the tool's registry entry and the gate.
    fn call_kind(&self, client_id: &str, generation: Option<u64>, tool: &str) -> CallKind;
}

/// How the table treats a `tools/call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// The emergency stop: carried out at once from whoever the broker says sent it, session
    /// or not, outside every pool and limit.
    EmergencyStop,
    /// Must always get through (the lease holder's `hold`, `land`, `return_home`; an ADMIN's
    /// `reset_emergency_stop`): the reserved pool.
    Reserved,
    /// May wait minutes (`wait_for_mode_change`): the long-wait pool.
    LongWait,
    /// Everything else (an unknown tool too: its session answers it): the call pool.
    Ordinary,
}

/// Why a session (or a candidate) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its client initialized again and proved it: a new generation replaces it.
    Replaced,
    /// A message on the client's presence topic (its Will, `disconnected`).
    PresenceLost,
    /// `notifications/disconnected` on its RPC topic.
    Disconnected,
    /// The broker connection was lost and came back: every session ended.
    BrokerReconnected,
    /// The daemon is stopping.
    Shutdown,
    /// Candidate: its `initialize` was refused (token, broker identity, limits).
    Refused,
    /// Candidate: not answered, or not confirmed on the RPC topic, in time.
    TimedOut,
    /// Candidate: another `initialize` for the same client id with other credentials came
    /// before either was confirmed: neither can be told apart, both are dropped.
    Contested,
    /// Candidate: superseded by a newer `initialize` with the same credentials.
    Superseded,
    /// Candidate: the oldest unconfirmed one, dropped to make room (`mcp.candidates_max`).
    Evicted,
}

impl EndReason {
    /// The sentence a client reads in the error answering a request the end cut short.
    pub fn message(self) -> &'static str {
        match self {
            EndReason::Replaced => {
                "this session was replaced: its client initialized again; this request was not finished"
            }
            EndReason::PresenceLost | EndReason::Disconnected => {
                "this session ended (the client left); this request was not finished"
            }
            EndReason::BrokerReconnected => {
                "the drone lost its broker connection and every session ended: initialize again"
            }
            EndReason::Shutdown => "the drone's MCP server is stopping",
            EndReason::Refused => "initialize refused",
            EndReason::TimedOut => {
                "initialize was not confirmed in time: send notifications/initialized on your RPC topic right after the answer; initialize again"
            }
            EndReason::Contested => {
                "another initialize for this client id, with other credentials, arrived before this one was confirmed; initialize again"
            }
            EndReason::Superseded => "superseded by a newer initialize from this client id",
            EndReason::Evicted => {
                "too many initialize requests are waiting to be confirmed (mcp.candidates_max); initialize again"
            }
        }
    }
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Start a candidate session (an rmcp service) and deliver `initialize` to it. Nothing
    /// it says but its answer to `initialize` leaves until it is promoted.
    StartSession {
        client_id: String,
        generation: u64,
        initialize: Box<ClientJsonRpcMessage>,
    },
    /// The candidate proved its client id: it is now the client's session. `replaced` is
    /// the generation it replaces (already ended by an `EndSession` before this action).
    Promote {
        client_id: String,
        generation: u64,
        replaced: Option<u64>,
        /// Requests of the replaced session answered with an error.
        cut_short: usize,
    },
    /// Stop a session's or a candidate's service; release what the gate holds for it.
    EndSession {
        client_id: String,
        generation: u64,
        reason: EndReason,
        /// It was an established session (not a candidate).
        established: bool,
    },
    /// Hand a message to a running session.
    Deliver {
        client_id: String,
        generation: u64,
        message: Box<ClientJsonRpcMessage>,
    },
    /// `emergency_stop` from the client of this RPC topic: carry it out now, outside every
    /// limit and queue, whether or not it has a session (`generation` when it has one).
    EmergencyStop {
        client_id: String,
        generation: Option<u64>,
        id: Value,
        arguments: Value,
    },
    /// Publish this JSON on a topic (error replies, `notifications/disconnected`).
    Publish { topic: String, message: Value },
    /// A security event for the audit log. `client_id` is the identity the broker attested
    /// (the RPC or presence topic's) when `attested`, or the id only claimed on the shared
    /// control topic otherwise.
    Security {
        kind: &'static str,
        client_id: String,
        attested: bool,
        detail: String,
        /// The candidate the event is about, when there is one (its verified token, if any,
        /// names who sent it). Reported before the candidate ends.
        generation: Option<u64>,
    },
    /// Something worth a log line (counted by the shell).
    Log { warning: bool, text: String },
}

/// What a request in flight takes from the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A tool call in the general pool.
    Call,
    /// A long wait (`wait_for_mode_change`): the wait pool.
    Wait,
    /// The reserved pool.
    Priority,
    /// Any other request (not limited here; tracked so it is answered if the session ends).
    Other,
}

#[derive(Debug)]
struct Established {
    generation: u64,
    subject: String,
    /// Requests not yet answered: id (as JSON text) → (id, kind).
    in_flight: HashMap<String, (Value, Kind)>,
}

#[derive(Debug)]
struct Candidate {
    generation: u64,
    /// When it was created, then when its answer left.
    since: Instant,
    initialize_id: Value,
    /// The token it presented (None: none), to tell a retry from a contest.
    credential: Option<String>,
    answered: bool,
}

#[derive(Debug, Default)]
struct Slot {
    established: Option<Established>,
    candidate: Option<Candidate>,
}

/// How long a candidate may wait for its session to answer `initialize`.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answered candidate may wait for its client's first message on the RPC topic
/// (the transport spec's `initialize` timeout is 30 s on the client's side; a real client
/// sends `notifications/initialized` within a round trip).
pub const PROOF_TIMEOUT: Duration = Duration::from_secs(10);
/// Error answers to clients without a session, per second (beyond: dropped and counted).
pub const SESSIONLESS_REPLIES_PER_S: f64 = 50.0;
/// Security events recorded one by one, per second (burst twice that); beyond, they are
/// counted and reported in one record per `poll_timeouts`, so no client can flood the audit
/// log through the session table.
pub const SECURITY_RECORDS_PER_S: f64 = 20.0;
/// A claimed client id is shown at most this long in logs and audit records.
const CLAIM_CHARS_SHOWN: usize = 80;

/// Counters of what was refused or dropped (metrics, tests, the security summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages refused with an error or dropped, of every kind.
    pub refused: u64,
    /// `initialize` requests dropped by the flood limit.
    pub initialize_flood_dropped: u64,
    /// Control-topic messages without a usable client id.
    pub bad_client_ids: u64,
    /// Error answers to clients without a session that were not sent (reply budget spent).
    pub sessionless_dropped: u64,
    /// Security events beyond the record budget (counted and reported together).
    pub security_suppressed: u64,
}

/// The session table (see the module documentation for the call order).
#[derive(Debug)]
pub struct Sessions {
    topics: Topics,
    limits: Limits,
    slots: BTreeMap<String, Slot>,
    next_generation: u64,
    initialize_bucket: TokenBucket,
    sessionless_bucket: TokenBucket,
    /// Initializes dropped by the flood limit since the last report.
    flood_unreported: u64,
    security_bucket: TokenBucket,
    /// Security events beyond the budget since the last report, by kind.
    security_unreported: BTreeMap<&'static str, u64>,
    pub counters: Counters,
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

/// A claimed client id as it may be shown: escaped, cut, with its length.
fn shown(claim: &str) -> String {
    let escaped: String = claim.escape_debug().take(CLAIM_CHARS_SHOWN).collect();
    if claim.chars().count() > CLAIM_CHARS_SHOWN {
        format!("\"{escaped}…\" ({} bytes)", claim.len())
    } else {
        format!("\"{escaped}\"")
    }
}

fn tool_name(message: &ClientJsonRpcMessage) -> Option<&str> {
    match message {
        ClientJsonRpcMessage::Request(r) => match &r.request {
            ClientRequest::CallToolRequest(call) => Some(call.params.name.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

/// Which limit a request counts against: the tool's call kind for `tools/call`, `Other`
/// for every other method.
fn request_kind(
    method: Option<&str>,
    message: &ClientJsonRpcMessage,
    call_kind: impl FnOnce(&str) -> CallKind,
) -> Kind {
    match (method, tool_name(message)) {
        (Some("tools/call"), Some(tool)) => match call_kind(tool) {
            CallKind::Reserved => Kind::Priority,
            CallKind::LongWait => Kind::Wait,
            // The e-stop took its fast path before; never here.
            CallKind::EmergencyStop | CallKind::Ordinary => Kind::Call,
        },
        _ => Kind::Other,
    }
}

fn token_of(message: &ClientJsonRpcMessage) -> Option<String> {
    let ClientJsonRpcMessage::Request(r) = message else {
        return None;
    };
    let value = serde_json::to_value(&r.request).ok()?;
    value["params"]["_meta"][crate::auth::TOKEN_META_KEY]
        .as_str()
        .map(str::to_owned)
}

impl Sessions {
    pub fn new(topics: Topics, limits: Limits) -> Sessions {
        Sessions {
            topics,
            limits,
            slots: BTreeMap::new(),
            next_generation: 1,
            initialize_bucket: TokenBucket::new(limits.initialize_burst, limits.initialize_per_s),
            sessionless_bucket: TokenBucket::new(
                SESSIONLESS_REPLIES_PER_S as u32,
                SESSIONLESS_REPLIES_PER_S,
            ),
            flood_unreported: 0,
            security_bucket: TokenBucket::new(
                (SECURITY_RECORDS_PER_S * 2.0) as u32,
                SECURITY_RECORDS_PER_S,
            ),
            security_unreported: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Established sessions: (client id, generation).
    pub fn active(&self) -> impl Iterator<Item = (&str, u64)> {
        self.slots
            .iter()
            .filter_map(|(cid, s)| s.established.as_ref().map(|e| (cid.as_str(), e.generation)))
    }

    /// Candidates waiting for an answer or a proof.
    pub fn candidates(&self) -> usize {
        self.slots
            .values()
            .filter(|s| s.candidate.is_some())
            .count()
    }

    /// Requests in flight over every session, by pool: (calls, waits, priority).
    pub fn in_flight(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for e in self.slots.values().filter_map(|s| s.established.as_ref()) {
            for (_, kind) in e.in_flight.values() {
                match kind {
                    Kind::Call => counts.0 += 1,
                    Kind::Wait => counts.1 += 1,
                    Kind::Priority => counts.2 += 1,
                    Kind::Other => {}
                }
            }
        }
        counts
    }

    fn established_count(&self) -> usize {
        self.slots
            .values()
            .filter(|s| s.established.is_some())
            .count()
    }

    /// A security event, within the record budget; beyond it, counted for the next report.
    fn security(&mut self, now: Instant, actions: &mut Vec<Action>, event: Action) {
        let Action::Security { kind, .. } = &event else {
            return;
        };
        if self.security_bucket.take(now).is_ok() {
            actions.push(event);
        } else {
            self.counters.security_suppressed += 1;
            *self.security_unreported.entry(kind).or_default() += 1;
        }
    }

    fn refuse(&mut self, actions: &mut Vec<Action>, text: String) {
        self.counters.refused += 1;
        actions.push(Action::Log {
            warning: true,
            text,
        });
    }

    fn reply_error(
        &self,
        actions: &mut Vec<Action>,
        cid: &str,
        id: Option<&Value>,
        code: i32,
        message: &str,
        data: Option<Value>,
    ) {
        actions.push(Action::Publish {
            topic: self.topics.rpc(cid),
            message: errors::error_response(id, code, message, data),
        });
    }

    /// Ends the established session of `cid`: every request in flight is answered with an
    /// error saying why. Returns how many.
    fn end_established(
        &mut self,
        cid: &str,
        reason: EndReason,
        actions: &mut Vec<Action>,
    ) -> usize {
        let Some(e) = self.slots.get_mut(cid).and_then(|s| s.established.take()) else {
            return 0;
        };
        actions.push(Action::EndSession {
            client_id: cid.to_owned(),
            generation: e.generation,
            reason,
            established: true,
        });
        let mut ids: Vec<Value> = e.in_flight.into_values().map(|(id, _)| id).collect();
        ids.sort_by_key(id_key);
        let cut = ids.len();
        for id in ids {
            self.reply_error(
                actions,
                cid,
                Some(&id),
                errors::SERVER_BUSY,
                reason.message(),
                Some(json!({"kind": "session_ended"})),
            );
        }
        self.forget_if_empty(cid);
        cut
    }

    /// Ends the candidate of `cid`; an unanswered `initialize` is answered with an error.
    fn end_candidate(&mut self, cid: &str, reason: EndReason, actions: &mut Vec<Action>) {
        let Some(c) = self.slots.get_mut(cid).and_then(|s| s.candidate.take()) else {
            return;
        };
        actions.push(Action::EndSession {
            client_id: cid.to_owned(),
            generation: c.generation,
            reason,
            established: false,
        });
        if !c.answered && reason != EndReason::Refused {
            self.reply_error(
                actions,
                cid,
                Some(&c.initialize_id),
                errors::SERVER_BUSY,
                reason.message(),
                Some(json!({"kind": "initialize_dropped"})),
            );
        }
        self.forget_if_empty(cid);
    }

    fn forget_if_empty(&mut self, cid: &str) {
        if self
            .slots
            .get(cid)
            .is_some_and(|s| s.established.is_none() && s.candidate.is_none())
        {
            self.slots.remove(cid);
        }
    }

    fn end_all(&mut self, reason: EndReason, actions: &mut Vec<Action>) {
        let cids: Vec<String> = self.slots.keys().cloned().collect();
        for cid in cids {
            self.end_candidate(&cid, reason, actions);
            self.end_established(&cid, reason, actions);
        }
    }

    /// After every CONNACK: every session is gone (the broker forgot it with Session
    /// Expiry 0); requests in flight are answered with an error.
    pub fn handle_connected(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.end_all(EndReason::BrokerReconnected, &mut actions);
        actions
    }

    /// An incoming PUBLISH.
    pub fn handle_publish(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        sender: Sender,
        authority: &dyn Authority,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.topics.classify(topic) {
            TopicKind::ClientPresence(cid) => {
                // Any message here (a `disconnected`, an empty Will) ends the session: only
                // the client itself may publish on its presence topic.
                if self.slots.contains_key(&cid) {
                    actions.push(Action::Log {
                        warning: false,
                        text: format!("client {cid} left (message on its presence topic)"),
                    });
                    self.end_candidate(&cid, EndReason::PresenceLost, &mut actions);
                    self.end_established(&cid, EndReason::PresenceLost, &mut actions);
                }
            }
            TopicKind::ClientCapability(_) => {}
            TopicKind::Control => self.control(now, payload, sender, &mut actions),
            TopicKind::Rpc(cid) => self.rpc(now, &cid, payload, sender, authority, &mut actions),
            TopicKind::Other => {
                self.refuse(&mut actions, format!("message on unexpected topic {topic}"))
            }
        }
        actions
    }

    /// Answers `id` on `cid`'s RPC topic unless that would land on a request the running
    /// session of `cid` has in flight (a forged message reusing its id must not answer it).
    fn reply_to_claim(
        &mut self,
        actions: &mut Vec<Action>,
        cid: &str,
        id: Option<&Value>,
        code: i32,
        message: &str,
        data: Option<Value>,
    ) {
        if let Some(id) = id
            && self.collides(cid, id)
        {
            return;
        }
        self.reply_error(actions, cid, id, code, message, data);
    }

    fn collides(&self, cid: &str, id: &Value) -> bool {
        self.slots
            .get(cid)
            .and_then(|s| s.established.as_ref())
            .is_some_and(|e| e.in_flight.contains_key(&id_key(id)))
    }

    fn control(&mut self, now: Instant, payload: &[u8], sender: Sender, actions: &mut Vec<Action>) {
        // Every message on the shared control topic counts against the flood limit first:
        // beyond it nothing is parsed, answered or recorded one by one.
        if self.initialize_bucket.take(now).is_err() {
            self.counters.initialize_flood_dropped += 1;
            self.flood_unreported += 1;
            self.counters.refused += 1;
            return;
        }
        let Some(cid) = sender.client_id.filter(|c| valid_client_id(c)) else {
            self.counters.bad_client_ids += 1;
            let claim = sender.client_id.map_or_else(|| "none".to_owned(), shown);
            self.security(now, actions, Action::Security {
                kind: "bad_client_id",
                client_id: String::new(),
                attested: false,
                detail: format!(
                    "control-topic message with MCP-MQTT-CLIENT-ID {claim}: not a usable client id \
                     (empty, or containing `/`, `+` or `#`, or over {} characters); dropped, nothing \
                     can be answered",
                    transport::CLIENT_ID_CHARS_MAX
                ),
                generation: None,
            });
            self.refuse(
                actions,
                format!("control message without a usable MCP-MQTT-CLIENT-ID ({claim}) dropped"),
            );
            return;
        };
        let cid = cid.to_owned();
        let (message, method, id) = match errors::check(payload, self.limits.message_bytes_max) {
            Checked::Refused { reply, log } => {
                if let Some(reply) = reply {
                    let id = reply.get("id").filter(|i| !i.is_null()).cloned();
                    if !id.as_ref().is_some_and(|i| self.collides(&cid, i)) {
                        actions.push(Action::Publish {
                            topic: self.topics.rpc(&cid),
                            message: reply,
                        });
                    }
                }
                self.refuse(actions, format!("control message claiming {cid}: {log}"));
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
                self.reply_to_claim(
                    actions,
                    &cid,
                    Some(id),
                    errors::INVALID_REQUEST,
                    "only `initialize` is accepted on the control topic; send it first, then use your RPC topic",
                    None,
                );
            }
            self.refuse(
                actions,
                format!("control message {method:?} claiming {cid} is not an initialize request"),
            );
            return;
        }
        let id = id.unwrap_or(Value::Null);
        if self.collides(&cid, &id) {
            self.security(now, actions, Action::Security {
                kind: "initialize_id_collision",
                client_id: cid.clone(),
                attested: false,
                detail: format!(
                    "an initialize claiming client id {cid} reused the id {id} of a request its \
                     running session has in flight: not answered (the answer would land on that \
                     request), the running session is untouched"
                ),
                generation: None,
            });
            self.refuse(
                actions,
                format!("initialize claiming {cid}: id {id} collides"),
            );
            return;
        }
        self.admit_initialize(now, cid, id, message, actions);
    }

    /// An `initialize` from the control topic that passed the checks of the message: the
    /// candidate session it starts, unless it contests another candidate for the same client
    /// id or the server is full; the oldest candidates make room.
    fn admit_initialize(
        &mut self,
        now: Instant,
        cid: String,
        id: Value,
        message: Box<ClientJsonRpcMessage>,
        actions: &mut Vec<Action>,
    ) {
        let credential = token_of(&message);
        if let Some(c) = self.slots.get(&cid).and_then(|s| s.candidate.as_ref()) {
            if c.credential == credential {
                // The same client trying again (or the same forgery): the newer one counts.
                self.end_candidate(&cid, EndReason::Superseded, actions);
            } else {
                self.end_candidate(&cid, EndReason::Contested, actions);
                self.reply_error(
                    actions,
                    &cid,
                    Some(&id),
                    errors::SERVER_BUSY,
                    EndReason::Contested.message(),
                    Some(json!({"kind": "initialize_contested"})),
                );
                self.security(
                    now,
                    actions,
                    Action::Security {
                        kind: "initialize_contested",
                        client_id: cid.clone(),
                        attested: false,
                        detail: format!(
                            "two initialize requests claiming client id {cid} with different \
                         credentials before either was confirmed: both dropped (the control \
                         topic does not say who published them)"
                        ),
                        generation: None,
                    },
                );
                self.counters.refused += 1;
                return;
            }
        }
        let has_session = self
            .slots
            .get(&cid)
            .is_some_and(|s| s.established.is_some());
        if !has_session && self.established_count() >= self.limits.sessions_max {
            self.reply_error(
                actions,
                &cid,
                Some(&id),
                errors::SERVER_BUSY,
                &format!(
                    "the server has {} sessions, the most it accepts (mcp.sessions_max); try again later",
                    self.limits.sessions_max
                ),
                Some(json!({"kind": "sessions_full"})),
            );
            self.refuse(
                actions,
                format!("initialize claiming {cid} refused: session limit"),
            );
            return;
        }
        while self.candidates() >= self.limits.candidates_max {
            let oldest = self
                .slots
                .iter()
                .filter_map(|(k, s)| s.candidate.as_ref().map(|c| (c.since, c.generation, k)))
                .min()
                .map(|(_, _, k)| k.clone());
            let Some(oldest) = oldest else { break };
            self.end_candidate(&oldest, EndReason::Evicted, actions);
            self.counters.refused += 1;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.slots.entry(cid.clone()).or_default().candidate = Some(Candidate {
            generation,
            since: now,
            initialize_id: id,
            credential,
            answered: false,
        });
        actions.push(Action::StartSession {
            client_id: cid,
            generation,
            initialize: message,
        });
    }

    /// Promotes the answered candidate of `cid` (replacing a running session).
    fn promote(&mut self, cid: &str, authority: &dyn Authority, actions: &mut Vec<Action>) -> bool {
        let Some(generation) = self
            .slots
            .get(cid)
            .and_then(|s| s.candidate.as_ref())
            .filter(|c| c.answered)
            .map(|c| c.generation)
        else {
            return false;
        };
        let Some(subject) = authority.candidate_subject(cid, generation) else {
            // The gate no longer knows it (revoked meanwhile): it ends.
            self.end_candidate(cid, EndReason::Refused, actions);
            return false;
        };
        let has_session = self.slots.get(cid).is_some_and(|s| s.established.is_some());
        if !has_session && self.established_count() >= self.limits.sessions_max {
            self.end_candidate(cid, EndReason::Evicted, actions);
            return false;
        }
        let replaced = self
            .slots
            .get(cid)
            .and_then(|s| s.established.as_ref())
            .map(|e| e.generation);
        let cut_short = self.end_established(cid, EndReason::Replaced, actions);
        let slot = self.slots.entry(cid.to_owned()).or_default();
        slot.candidate = None;
        slot.established = Some(Established {
            generation,
            subject,
            in_flight: HashMap::new(),
        });
        actions.push(Action::Promote {
            client_id: cid.to_owned(),
            generation,
            replaced,
            cut_short,
        });
        true
    }

    /// Answers a request from a client without a session (within the reply budget).
    fn sessionless(
        &mut self,
        now: Instant,
        cid: &str,
        id: Option<Value>,
        text: &str,
        kind: &str,
        actions: &mut Vec<Action>,
    ) {
        self.counters.refused += 1;
        let Some(id) = id else { return };
        if self.sessionless_bucket.take(now).is_err() {
            self.counters.sessionless_dropped += 1;
            return;
        }
        self.reply_error(
            actions,
            cid,
            Some(&id),
            errors::UNAUTHENTICATED,
            text,
            Some(json!({"kind": kind})),
        );
    }

    fn rpc(
        &mut self,
        now: Instant,
        cid: &str,
        payload: &[u8],
        sender: Sender,
        authority: &dyn Authority,
        actions: &mut Vec<Action>,
    ) {
        if sender.component_type == Some(transport::ComponentType::Server.as_str()) {
            // Our own (or another server's) message echoed back: No Local's second guard.
            return;
        }
        let raw: Option<Value> = (payload.len() <= self.limits.message_bytes_max)
            .then(|| serde_json::from_slice(payload).ok())
            .flatten();
        let raw_method = raw
            .as_ref()
            .and_then(|v| v.get("method"))
            .and_then(Value::as_str);
        // The emergency stop first: from whoever the broker says this is, session or not.
        if self.emergency_stop_fast_path(cid, raw.as_ref(), authority, actions) {
            return;
        }
        if let Some(claimed) = sender.client_id
            && claimed != cid
        {
            self.refuse_client_id_mismatch(
                now,
                cid,
                claimed,
                raw.as_ref(),
                raw_method.is_some(),
                actions,
            );
            return;
        }
        if raw_method == Some(transport::DISCONNECTED) {
            if self.slots.contains_key(cid) {
                actions.push(Action::Log {
                    warning: false,
                    text: format!("client {cid} de-initialized"),
                });
                self.end_candidate(cid, EndReason::Disconnected, actions);
                self.end_established(cid, EndReason::Disconnected, actions);
            }
            return;
        }
        // The payload was parsed once above; only a payload that did not parse (or was too
        // large to) goes through `check` again, for its error.
        let checked = match raw {
            Some(value) => errors::check_value(value),
            None => errors::check(payload, self.limits.message_bytes_max),
        };
        let (message, method, id, cancels) = match checked {
            Checked::Refused { reply, log } => {
                if let Some(reply) = reply {
                    actions.push(Action::Publish {
                        topic: self.topics.rpc(cid),
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
        if method.as_deref() == Some("initialize") {
            self.refuse_initialize_on_rpc(cid, id.as_ref(), actions);
            return;
        }
        let slot = self.slots.get(cid);
        let has_session = slot.is_some_and(|s| s.established.is_some());
        let candidate = slot.and_then(|s| s.candidate.as_ref()).map(|c| c.answered);
        // The proof: the client of this topic speaks after reading the answer.
        let proves = match candidate {
            Some(true) if !has_session => true,
            Some(true) => method.as_deref() == Some("notifications/initialized"),
            _ => false,
        };
        if proves {
            self.promote(cid, authority, actions);
        } else if !has_session {
            let text = if candidate == Some(false) {
                format!("client {cid}: initialize is not answered yet; wait for its answer")
            } else {
                format!(
                    "client {cid} has no session on this server: send initialize on its control topic first"
                )
            };
            self.sessionless(now, cid, id, &text, "no_session", actions);
            actions.push(Action::Log {
                warning: true,
                text: format!("RPC message {method:?} from {cid}, which has no session: {text}"),
            });
            return;
        }
        let Some(generation) = self
            .slots
            .get(cid)
            .and_then(|s| s.established.as_ref())
            .map(|e| e.generation)
        else {
            // The promotion failed (refused meanwhile or no room): answered by `promote`.
            self.sessionless(
                now,
                cid,
                id,
                "this session could not start: initialize again",
                "no_session",
                actions,
            );
            return;
        };
        if let Some(id) = &id {
            let kind = request_kind(method.as_deref(), &message, |tool| {
                authority.call_kind(cid, Some(generation), tool)
            });
            if !self.admit_request(cid, id, kind, actions) {
                return;
            }
        }
        if method.as_deref() == Some("notifications/cancelled")
            && let (Some(request), Some(e)) = (
                &cancels,
                self.slots.get_mut(cid).and_then(|s| s.established.as_mut()),
            )
        {
            // A cancelled request sends no response: its accounting ends here.
            e.in_flight.remove(&id_key(request));
        }
        actions.push(Action::Deliver {
            client_id: cid.to_owned(),
            generation,
            message,
        });
    }

    /// A request of an established session counts against its limits: admitted (and in
    /// flight until answered), or refused busy with the reason. `false`: refused.
    fn admit_request(
        &mut self,
        cid: &str,
        id: &Value,
        kind: Kind,
        actions: &mut Vec<Action>,
    ) -> bool {
        if let Some(text) = self.admit(cid, kind) {
            self.reply_error(
                actions,
                cid,
                Some(id),
                errors::SERVER_BUSY,
                &text,
                Some(json!({"kind": "busy"})),
            );
            self.refuse(actions, format!("request from {cid}: {text}"));
            return false;
        }
        if let Some(e) = self.slots.get_mut(cid).and_then(|s| s.established.as_mut()) {
            e.in_flight.insert(id_key(id), (id.clone(), kind));
        }
        true
    }

    /// `tools/call` of the emergency stop goes out at once, from whoever the broker says sent
    /// it, session or not, before any other check of the message. `true`: it was one.
    fn emergency_stop_fast_path(
        &self,
        cid: &str,
        raw: Option<&Value>,
        authority: &dyn Authority,
        actions: &mut Vec<Action>,
    ) -> bool {
        let established = self
            .slots
            .get(cid)
            .and_then(|s| s.established.as_ref())
            .map(|e| e.generation);
        if let Some(v) = raw
            && v.get("method").and_then(Value::as_str) == Some("tools/call")
            && let Some(tool) = v["params"]["name"].as_str()
            && authority.call_kind(cid, established, tool) == CallKind::EmergencyStop
            && let Some(id) = v.get("id").filter(|i| !i.is_null())
        {
            let arguments = match &v["params"]["arguments"] {
                Value::Object(a) => Value::Object(a.clone()),
                _ => json!({}),
            };
            actions.push(Action::EmergencyStop {
                client_id: cid.to_owned(),
                generation: established,
                id: id.clone(),
                arguments,
            });
            return true;
        }
        false
    }

    /// A message on `cid`'s RPC topic that claims another client id: a security event, and an
    /// error answer when it has an id.
    fn refuse_client_id_mismatch(
        &mut self,
        now: Instant,
        cid: &str,
        claimed: &str,
        raw: Option<&Value>,
        is_request_or_notification: bool,
        actions: &mut Vec<Action>,
    ) {
        self.security(
            now,
            actions,
            Action::Security {
                kind: "client_id_mismatch",
                client_id: cid.to_owned(),
                attested: true,
                detail: format!(
                    "a message on the RPC topic of {cid} said MCP-MQTT-CLIENT-ID {}: refused \
                 (a client is who the broker authenticated, never what it says)",
                    shown(claimed)
                ),
                generation: None,
            },
        );
        let id = raw.and_then(|v| v.get("id")).cloned();
        if is_request_or_notification && let Some(id) = id {
            self.reply_error(
                actions,
                cid,
                Some(&id),
                errors::INVALID_REQUEST,
                &format!(
                    "MCP-MQTT-CLIENT-ID {} is not the client id of this RPC topic ({cid}): \
                     send your own client id",
                    shown(claimed)
                ),
                Some(json!({"kind": "client_id_mismatch"})),
            );
        }
        self.refuse(
            actions,
            format!("RPC message from {cid} claiming another client id"),
        );
    }

    /// `initialize` belongs on the control topic: refused on the RPC topic.
    fn refuse_initialize_on_rpc(
        &mut self,
        cid: &str,
        id: Option<&Value>,
        actions: &mut Vec<Action>,
    ) {
        if let Some(id) = &id {
            self.reply_error(
                actions,
                cid,
                Some(id),
                errors::INVALID_REQUEST,
                "`initialize` goes on the server's control topic, not on the RPC topic",
                None,
            );
        }
        self.refuse(actions, format!("initialize from {cid} on its RPC topic"));
    }

    /// Whether one more request of `kind` fits for `cid`; the refusal says which limit.
    fn admit(&self, cid: &str, kind: Kind) -> Option<String> {
        let l = &self.limits;
        let me = self.slots.get(cid).and_then(|s| s.established.as_ref())?;
        let count = |pred: &dyn Fn(&Established) -> bool, k: Kind| -> usize {
            self.slots
                .values()
                .filter_map(|s| s.established.as_ref())
                .filter(|e| pred(e))
                .map(|e| e.in_flight.values().filter(|(_, x)| *x == k).count())
                .sum()
        };
        let mine = |k: Kind| me.in_flight.values().filter(|(_, x)| *x == k).count();
        let subject = |e: &Established| e.subject == me.subject;
        let all = |_: &Established| true;
        match kind {
            Kind::Other => None,
            Kind::Priority => {
                let n = count(&all, Kind::Priority);
                (n >= l.priority_calls_concurrent_max).then(|| {
                    format!(
                        "the reserved pool runs {n} calls already (mcp.priority_calls_concurrent_max); retry shortly"
                    )
                })
            }
            Kind::Wait => {
                let n_subject = count(&subject, Kind::Wait);
                let n_all = count(&all, Kind::Wait);
                if n_subject >= l.identity_waits_concurrent_max {
                    Some(format!(
                        "{} already has {n_subject} long waits running, the most allowed per identity \
                         (mcp.identity_waits_concurrent_max); wait for one to finish or cancel it",
                        me.subject
                    ))
                } else if n_all >= l.waits_concurrent_max {
                    Some(format!(
                        "the server already runs {n_all} long waits, the most allowed \
                         (mcp.waits_concurrent_max); retry later or poll get_status"
                    ))
                } else {
                    None
                }
            }
            Kind::Call => {
                let n_session = mine(Kind::Call);
                let n_subject = count(&subject, Kind::Call);
                let n_all = count(&all, Kind::Call);
                if n_session >= l.session_calls_concurrent_max {
                    Some(format!(
                        "this session already runs {n_session} tool calls, the most allowed \
                         (mcp.session_calls_concurrent_max); wait for one to finish"
                    ))
                } else if n_subject >= l.identity_calls_concurrent_max {
                    Some(format!(
                        "{} already runs {n_subject} tool calls over its sessions, the most allowed \
                         per identity (mcp.identity_calls_concurrent_max); wait for one to finish",
                        me.subject
                    ))
                } else if n_all >= l.calls_concurrent_max {
                    Some(format!(
                        "the server already runs {n_all} tool calls, the most allowed \
                         (mcp.calls_concurrent_max); retry shortly"
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// Candidates not answered or not proven in time end; reports initialize floods.
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let expired: Vec<(String, u64, bool, bool)> = self
            .slots
            .iter()
            .filter_map(|(cid, s)| {
                let c = s.candidate.as_ref()?;
                let limit = if c.answered {
                    PROOF_TIMEOUT
                } else {
                    ANSWER_TIMEOUT
                };
                (now.saturating_duration_since(c.since) >= limit).then(|| {
                    (
                        cid.clone(),
                        c.generation,
                        c.answered,
                        s.established.is_some(),
                    )
                })
            })
            .collect();
        for (cid, generation, answered, running) in expired {
            if answered {
                let detail = if running {
                    format!(
                        "an initialize claiming client id {cid} was answered on {cid}'s RPC topic \
                         but never confirmed there within {PROOF_TIMEOUT:?}, while {cid}'s session \
                         runs: not from {cid} (a forgery on the shared control topic, whose \
                         publisher the broker does not name); dropped, {cid}'s session, lease \
                         and calls untouched"
                    )
                } else {
                    format!(
                        "an initialize claiming client id {cid} was answered on {cid}'s RPC topic \
                         but never confirmed there within {PROOF_TIMEOUT:?}: dropped (the shared \
                         control topic does not name its publisher)"
                    )
                };
                // Before the candidate ends, so the gate can still name its token's subject.
                self.security(
                    now,
                    &mut actions,
                    Action::Security {
                        kind: "initialize_unconfirmed",
                        client_id: cid.clone(),
                        attested: false,
                        detail,
                        generation: Some(generation),
                    },
                );
            } else {
                actions.push(Action::Log {
                    warning: true,
                    text: format!(
                        "initialize claiming {cid} not answered within {ANSWER_TIMEOUT:?}: dropped"
                    ),
                });
            }
            self.end_candidate(&cid, EndReason::TimedOut, &mut actions);
            self.counters.refused += 1;
        }
        if self.flood_unreported > 0 {
            actions.push(Action::Security {
                kind: "initialize_flood",
                client_id: String::new(),
                attested: false,
                detail: format!(
                    "{} initialize requests dropped on the control topic: over {}/s (burst {}) \
                     (mcp.initialize_per_s); running sessions are unaffected",
                    self.flood_unreported,
                    self.limits.initialize_per_s,
                    self.limits.initialize_burst
                ),
                generation: None,
            });
            self.flood_unreported = 0;
        }
        if !self.security_unreported.is_empty() {
            let kinds: Vec<String> = self
                .security_unreported
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            actions.push(Action::Security {
                kind: "security_events_suppressed",
                client_id: String::new(),
                attested: false,
                detail: format!(
                    "security events beyond {SECURITY_RECORDS_PER_S}/s not recorded one by one: {}",
                    kinds.join(", ")
                ),
                generation: None,
            });
            self.security_unreported.clear();
        }
        actions
    }

    /// A message a session is about to send: whether to publish it, and what follows.
    /// A candidate's answer to its `initialize` is the only message of a candidate that
    /// leaves; an error ends it (nothing else changes), a result starts its proof window.
    pub fn handle_outgoing(
        &mut self,
        now: Instant,
        cid: &str,
        generation: u64,
        message: &Value,
    ) -> (bool, Vec<Action>) {
        let mut actions = Vec::new();
        let Some(slot) = self.slots.get_mut(cid) else {
            return (false, actions);
        };
        if let Some(c) = slot.candidate.as_mut()
            && c.generation == generation
        {
            let is_answer = message.get("method").is_none()
                && message.get("id") == Some(&c.initialize_id)
                && !c.answered;
            if !is_answer {
                return (false, actions);
            }
            if message.get("result").is_some() {
                c.answered = true;
                c.since = now;
            } else {
                self.end_candidate(cid, EndReason::Refused, &mut actions);
            }
            return (true, actions);
        }
        let Some(e) = slot
            .established
            .as_mut()
            .filter(|e| e.generation == generation)
        else {
            return (false, actions);
        };
        if message.get("method").is_none()
            && let Some(id) = message.get("id")
        {
            e.in_flight.remove(&id_key(id));
        }
        (true, actions)
    }

    /// Graceful shutdown: tell every client, end every session.
    pub fn handle_shutdown(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let cids: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.established.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for cid in cids {
            self.end_established(&cid, EndReason::Shutdown, &mut actions);
            actions.push(Action::Publish {
                topic: self.topics.rpc(&cid),
                message: transport::disconnected(),
            });
        }
        self.end_all(EndReason::Shutdown, &mut actions);
        actions
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
