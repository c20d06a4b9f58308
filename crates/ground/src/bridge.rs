//! The bridge's deciding core (sans-IO): drone presence, the one MCP-over-MQTT session with
//! the chosen drone, and the routing of JSON-RPC messages between the stdio client and it.
//!
//! No tokio, no sockets, no clock: the shell turns stdin lines, MQTT events and timer expiries
//! into `handle_*` calls and carries out the [`Action`]s it takes from [`Bridge::poll_action`].
//!
//! Call order:
//! 1. [`Bridge::new`].
//! 2. On every CONNACK: [`Bridge::handle_connected`]; on every lost broker connection:
//!    [`Bridge::handle_disconnected`]; when the broker says another client took the session
//!    over: [`Bridge::handle_taken_over`].
//! 3. For every stdin line: [`Bridge::handle_stdin_line`]; for every MQTT PUBLISH received:
//!    [`Bridge::handle_mqtt_message`].
//! 4. When `now` reaches [`Bridge::poll_timeout`]: [`Bridge::handle_timeout`].
//! 5. After each of the above, drain [`Bridge::poll_action`] until it returns `None`
//!    ([`Action::StopConnection`]: stop the MQTT connection for good).
//!
//! Ids: the stdio client's JSON-RPC ids go to the drone unchanged (the MQTT session has one
//! client, this bridge, so they cannot collide with anyone else's). The bridge's own requests
//! (`initialize`, re-subscriptions after a reconnect) use string ids starting with
//! [`INTERNAL_ID_PREFIX`], and their answers are never shown to the stdio client.
//!
//! Timeouts are idle timeouts: a request fails at the bridge only after
//! `call_idle_timeout` (`tools/call`) or `request_timeout` (the rest) without any sign of life
//! from the drone about it, where progress notifications count. A `tools/call` without a
//! `progressToken` gets one of the bridge's own (prefix [`INTERNAL_ID_PREFIX`]), so its
//! progress keeps it alive too; that progress is not shown to the client, which did not ask
//! for it. A timeout sends nothing to the drone: cancelling a flight tool makes the vehicle
//! hold, and a slow answer is no reason to stop a vehicle mid-flight. The drone's late answer
//! is reported to the client as a `notifications/message` (the request already got its error).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::GroundSection;
use flight_companion_core::mcp::transport::{self, Topics, code};

/// Prefix of the ids of the bridge's own requests to the drone.
pub const INTERNAL_ID_PREFIX: &str = "fc-ground:";

/// The `logger` of the bridge's own `notifications/message`.
pub const LOGGER: &str = "flight-companion-ground";

/// Requests timed out at the bridge whose late answers are still recognised (oldest
/// forgotten first).
const ABANDONED_MAX: usize = 64;
/// Characters of a late answer's text repeated in the notice about it.
const LATE_TEXT_CHARS: usize = 300;
/// A connection the broker closes sooner than this after accepting it counts as a quick drop.
const QUICK_DROP: Duration = Duration::from_secs(2);
/// Drops in a row, all but the first quick, after which the bridge stops reconnecting: the
/// pattern of two clients with one client id on a broker that does not say "session taken
/// over" (Mosquitto before 2.0.18 closes the older connection without a DISCONNECT).
const QUICK_DROPS_MAX: u32 = 3;

/// Something the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SUBSCRIBE (QoS 1). `no_local` for RPC topics, as the transport spec requires.
    Subscribe { topic: String, no_local: bool },
    /// UNSUBSCRIBE.
    Unsubscribe { topic: String },
    /// PUBLISH (QoS 1, not retained) with the user properties `MCP-COMPONENT-TYPE=mcp-client`
    /// and `MCP-MQTT-CLIENT-ID`, which every PUBLISH of the transport must carry.
    Publish { topic: String, payload: String },
    /// One JSON-RPC message for the stdio client (the shell adds the newline).
    Stdout(String),
    /// Stop the MQTT connection for good: no reconnect (see [`Bridge::handle_taken_over`]).
    StopConnection,
    /// The answer to a request of the web console (fleet mode only): one JSON-RPC message
    /// whose id is the console's (`ground::fleet::CONSOLE_ID_PREFIX`), never for stdout.
    Console(String),
}

/// What the core needs from the configuration, plus the client id chosen by the shell.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    pub client_id: String,
    pub server_name: Option<String>,
    pub server_topic_root: String,
    pub client_topic_root: String,
    pub rpc_topic_root: String,
    pub discovery_timeout: Duration,
    pub presence_settle: Duration,
    /// Longest silence about a `tools/call` (no answer, no progress) before the bridge gives up.
    pub call_idle_timeout: Duration,
    /// The same for every other request.
    pub request_timeout: Duration,
    pub message_bytes_max: usize,
    /// The JWT sent in every `initialize` (first and re-initializations) at
    /// `params._meta["flight-companion/token"]`; it replaces any token the client sent.
    pub token: Option<String>,
}

impl BridgeSettings {
    /// Settings from the `[ground]` section and the client id the shell uses.
    pub fn from_config(ground: &GroundSection, client_id: String) -> Self {
        Self {
            client_id,
            server_name: ground.server_name.clone(),
            server_topic_root: ground.server_topic_root.clone(),
            client_topic_root: ground.client_topic_root.clone(),
            rpc_topic_root: ground.rpc_topic_root.clone(),
            discovery_timeout: Duration::from_millis(ground.discovery_timeout_ms),
            presence_settle: Duration::from_millis(ground.presence_settle_ms),
            call_idle_timeout: Duration::from_millis(ground.call_idle_timeout_ms),
            request_timeout: Duration::from_millis(ground.request_timeout_ms),
            message_bytes_max: ground.message_bytes_max,
            token: None,
        }
    }
}

/// Counters of refused or dropped input, for the log at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeCounters {
    pub stdin_refused: u64,
    pub mqtt_dropped: u64,
    pub requests_timed_out: u64,
    pub requests_failed_offline: u64,
}

/// One drone instance: its server-id and server-name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Drone {
    id: String,
    name: String,
}

#[derive(Debug)]
enum Session {
    /// No session: waiting for the stdio client's `initialize`, or for a drone.
    None,
    /// `initialize` sent to the drone, waiting for its answer.
    Initializing {
        drone: Drone,
        request_id: String,
        deadline: Instant,
    },
    /// Initialized; traffic flows.
    Ready { drone: Drone },
}

/// The stdio client's `initialize`, kept to re-initialize transparently after a reconnect.
#[derive(Debug)]
struct ClientInit {
    /// Its JSON-RPC id, until answered.
    pending_id: Option<Value>,
    params: Value,
    /// Deadline of the first answer (no drone found in time → error).
    discovery_deadline: Instant,
}

#[derive(Debug)]
struct Pending {
    id: Value,
    /// The method, and the tool's name for `tools/call` (`tools/call goto`).
    what: String,
    /// Canonical key of the progress token this request's progress comes with.
    progress_token: Option<String>,
    /// The token is the bridge's own: the progress is a sign of life, not shown.
    token_is_ours: bool,
    /// Longest silence allowed; the deadline moves with every sign of life.
    idle: Duration,
    deadline: Instant,
}

/// A request the bridge stopped waiting for, still perhaps running on the drone.
#[derive(Debug)]
struct Abandoned {
    id: Value,
    what: String,
    progress_token: Option<String>,
}

/// The bridge core. See the module documentation for the call order.
#[derive(Debug)]
pub struct Bridge {
    settings: BridgeSettings,
    actions: VecDeque<Action>,
    connected: bool,
    /// Choosing waits until this instant after CONNACK so retained presence has arrived.
    settle_until: Option<Instant>,
    /// Online drone instances from retained presence.
    drones: BTreeSet<Drone>,
    session: Session,
    client: Option<ClientInit>,
    /// The stdio client's requests in flight at the drone, by canonical id.
    pending: BTreeMap<String, Pending>,
    /// Requests timed out at the bridge, by canonical id, oldest first in `abandoned_order`.
    abandoned: BTreeMap<String, Abandoned>,
    abandoned_order: VecDeque<String>,
    /// Another connection took this bridge's client id over (the reason): the bridge no
    /// longer talks to the broker and answers every request with it.
    taken_over: Option<String>,
    /// When the current connection was accepted (CONNACK).
    connected_at: Option<Instant>,
    /// Connections lost in a row, all but the first within [`QUICK_DROP`] of their CONNACK.
    drops_in_a_row: u32,
    /// Resource URIs the stdio client subscribed to.
    subscribed_uris: BTreeSet<String>,
    /// The `params` of the stdio client's last `logging/setLevel`, replayed after a re-init.
    log_level: Option<Value>,
    /// Ids of the bridge's own requests whose answers are swallowed.
    internal_ids: BTreeSet<String>,
    next_internal_id: u64,
    /// Name of the drone of the last session, to reconnect to the same one.
    last_drone_name: Option<String>,
    counters: BridgeCounters,
}

impl Bridge {
    pub fn new(settings: BridgeSettings) -> Self {
        Self {
            settings,
            actions: VecDeque::new(),
            connected: false,
            settle_until: None,
            drones: BTreeSet::new(),
            session: Session::None,
            client: None,
            pending: BTreeMap::new(),
            abandoned: BTreeMap::new(),
            abandoned_order: VecDeque::new(),
            taken_over: None,
            connected_at: None,
            drops_in_a_row: 0,
            subscribed_uris: BTreeSet::new(),
            log_level: None,
            internal_ids: BTreeSet::new(),
            next_internal_id: 0,
            last_drone_name: None,
            counters: BridgeCounters::default(),
        }
    }

    pub fn counters(&self) -> &BridgeCounters {
        &self.counters
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest instant at which [`Bridge::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |d: Instant| t = Some(t.map_or(d, |x| x.min(d)));
        if let Some(d) = self.settle_until {
            consider(d);
        }
        if let Session::Initializing { deadline, .. } = &self.session {
            consider(*deadline);
        }
        if let Some(c) = &self.client {
            if c.pending_id.is_some() {
                consider(c.discovery_deadline);
            }
        }
        for p in self.pending.values() {
            consider(p.deadline);
        }
        t
    }

    /// CONNACK received. `server_name_filters` is the broker's `MCP-SERVER-NAME-FILTERS`
    /// (already parsed from JSON), which the spec says a client MUST use when present.
    pub fn handle_connected(&mut self, now: Instant, server_name_filters: Option<Vec<String>>) {
        if self.taken_over.is_some() {
            return;
        }
        self.connected = true;
        self.connected_at = Some(now);
        self.drones.clear();
        let filters = match server_name_filters {
            Some(f) if !f.is_empty() => f,
            _ => vec![self.settings.server_name.clone().unwrap_or("#".into())],
        };
        for filter in filters {
            self.actions.push_back(Action::Subscribe {
                topic: transport::server_presence_filter(&self.settings.server_topic_root, &filter),
                no_local: false,
            });
        }
        self.settle_until = Some(now + self.settings.presence_settle);
    }

    /// The broker closed the connection because another client connected with this bridge's
    /// client id (MQTT 5 "session taken over"). The bridge stops reconnecting
    /// ([`Action::StopConnection`]): a reconnect would take the id back, the broker would end
    /// the other client's session (and the drone its calls in flight), and the two would take
    /// turns forever, each seeing the drone vanish. Everything in flight and everything after
    /// is answered with the reason.
    pub fn handle_taken_over(&mut self) {
        let message = format!(
            "another MQTT client connected to the broker with this bridge's client id `{}` \
             (the broker said \"session taken over\"), so this bridge stopped: two bridges \
             with one client id take the session from each other. Give each bridge its own \
             certificate (`flight-companion cert issue NAME` where the CA is: a broker that \
             binds client ids to certificates, as dev-setup's does, makes the certificate's \
             name the client id), or, on a broker that lets clients choose, its own \
             ground.client_id (--client-id); then restart this bridge",
            self.settings.client_id
        );
        self.give_up(message);
    }

    fn give_up(&mut self, message: String) {
        tracing::error!("{message}");
        self.actions.push_back(Action::StopConnection);
        self.taken_over = Some(message.clone());
        self.connected = false;
        self.connected_at = None;
        self.settle_until = None;
        self.drones.clear();
        if let Some(client) = &self.client
            && client.pending_id.is_some()
        {
            self.answer_client_init_error(message.clone());
        }
        let initialized = self.client.as_ref().is_some_and(|c| c.pending_id.is_none());
        self.session = Session::None;
        for (_, p) in std::mem::take(&mut self.pending) {
            self.counters.requests_failed_offline += 1;
            self.reply_error(p.id, code::DRONE_UNAVAILABLE, message.clone());
        }
        self.forget_abandoned();
        self.internal_ids.clear();
        if initialized {
            self.notify("error", message);
        }
    }

    /// The broker connection was lost (Session Expiry 0: every subscription is gone).
    ///
    /// A broker that does not say "session taken over" (Mosquitto before 2.0.18) just closes
    /// the older of two connections with one client id; the two then reconnect and close
    /// each other at once, over and over. [`QUICK_DROPS_MAX`] drops in a row, each but the
    /// first within [`QUICK_DROP`] of its CONNACK, are taken for that, and the bridge stops
    /// as in [`Bridge::handle_taken_over`], naming both possible causes.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if let Some(at) = self.connected_at.take() {
            let quick = now.saturating_duration_since(at) < QUICK_DROP;
            self.drops_in_a_row = if quick { self.drops_in_a_row + 1 } else { 1 };
            if self.drops_in_a_row >= QUICK_DROPS_MAX {
                let message = format!(
                    "the broker closed this bridge's connection {} times in a row, each time \
                     right after accepting it: most likely another MQTT client uses this \
                     bridge's client id `{}` (the two take the session from each other), or \
                     the broker refuses something this bridge does (see its log and its ACL \
                     for this certificate). The bridge stopped reconnecting. Give each bridge \
                     its own certificate (`flight-companion cert issue NAME` where the CA \
                     is: a broker that binds client ids to certificates, as dev-setup's \
                     does, makes the certificate's name the client id), or, on a broker \
                     that lets clients choose, its own ground.client_id (--client-id); then \
                     restart this bridge",
                    self.drops_in_a_row, self.settings.client_id
                );
                self.give_up(message);
                return;
            }
        }
        if self.taken_over.is_some() {
            return;
        }
        self.connected = false;
        self.settle_until = None;
        self.drones.clear();
        self.drone_lost(now, "the connection to the broker was lost");
    }

    /// One line from the stdio client.
    pub fn handle_stdin_line(&mut self, now: Instant, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        if line.len() > self.settings.message_bytes_max {
            self.refuse(
                Value::Null,
                code::INVALID_REQUEST,
                format!(
                    "message of {} bytes exceeds the bridge's limit of {} bytes (ground.message_bytes_max)",
                    line.len(),
                    self.settings.message_bytes_max
                ),
            );
            return;
        }
        let message: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                self.refuse(Value::Null, code::PARSE_ERROR, format!("invalid JSON: {e}"));
                return;
            }
        };
        if message.is_array() {
            self.refuse(
                Value::Null,
                code::INVALID_REQUEST,
                "JSON-RPC batches are not supported (MCP removed them in 2025-06-18); send one message per line".into(),
            );
            return;
        }
        match Kind::of(&message) {
            Kind::Request { id, method } => self.client_request(now, id, method, message),
            Kind::Notification { method } => self.client_notification(method, message),
            Kind::Response { .. } => self.client_response(message),
            Kind::Invalid => {
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                self.refuse(
                    id,
                    code::INVALID_REQUEST,
                    "not a JSON-RPC 2.0 message: expected an object with \"jsonrpc\":\"2.0\" and a \"method\", or a response with \"result\" or \"error\"".into(),
                );
            }
        }
    }

    /// One PUBLISH from the broker.
    pub fn handle_mqtt_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        if let Some(presence) =
            transport::parse_server_presence(&self.settings.server_topic_root, topic)
        {
            self.presence(now, presence, payload);
            return;
        }
        let (rpc_topic, capability_topic) = match &self.session {
            Session::None => (None, None),
            Session::Initializing { drone, .. } | Session::Ready { drone } => (
                Some(self.rpc_topic(drone)),
                Some(self.capability_topic(drone)),
            ),
        };
        if payload.len() > self.settings.message_bytes_max {
            self.drop_mqtt(topic, "the message exceeds ground.message_bytes_max");
            return;
        }
        let message: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(_) => {
                self.drop_mqtt(topic, "not JSON");
                return;
            }
        };
        if rpc_topic.as_deref() == Some(topic) {
            self.drone_rpc(now, message);
        } else if capability_topic.as_deref() == Some(topic) {
            self.drone_capability(message);
        } else {
            self.drop_mqtt(topic, "not a topic of the current session");
        }
    }

    /// `now` reached [`Bridge::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.settle_until.is_some_and(|t| now >= t) {
            self.settle_until = None;
            self.try_select(now);
        }
        if let Session::Initializing {
            drone, deadline, ..
        } = &self.session
        {
            if now >= *deadline {
                let drone = drone.clone();
                tracing::warn!(
                    "drone {} ({}) did not answer `initialize` in time; treating its presence as stale",
                    drone.name,
                    drone.id
                );
                self.drones.remove(&drone);
                self.unsubscribe_session(&drone);
                self.session = Session::None;
                self.try_select(now);
            }
        }
        let discovery_expired = self.client.as_ref().is_some_and(|c| {
            c.pending_id.is_some()
                && now >= c.discovery_deadline
                && !matches!(self.session, Session::Initializing { .. })
        });
        if discovery_expired {
            let message = self.no_drone_message();
            self.answer_client_init_error(message);
        }
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            self.counters.requests_timed_out += 1;
            let name = match &self.session {
                Session::Ready { drone } => drone.name.clone(),
                _ => "?".into(),
            };
            // Nothing goes to the drone: a cancel would make a flying vehicle hold, and a
            // silent link is no reason to stop it. The request is remembered so its late
            // answer is reported, not mistaken for noise.
            let message = if p.what.starts_with("tools/call") {
                format!(
                    "drone {name} did not answer `{}` and sent no progress for it for {} ms \
                     (ground.call_idle_timeout_ms); the bridge stopped waiting. Nothing was \
                     sent to the drone: the call may still be running there (check \
                     get_status; hold stops a motion). Its outcome is reported as a \
                     notifications/message if it arrives",
                    p.what,
                    p.idle.as_millis()
                )
            } else {
                format!(
                    "drone {name} did not answer `{}` within {} ms",
                    p.what,
                    p.idle.as_millis()
                )
            };
            tracing::warn!("{message}");
            self.abandon(key, &p);
            self.reply_error(p.id, code::DRONE_UNAVAILABLE, message);
        }
    }

    // --- stdio client side ---

    fn client_request(&mut self, now: Instant, id: Value, method: String, mut message: Value) {
        if let Some(text) = self.taken_over.clone() {
            if method == "ping" {
                // The bridge itself is alive, and says why it talks to no drone otherwise.
                self.reply(id, json!({}));
            } else {
                self.reply_error(id, code::DRONE_UNAVAILABLE, text);
            }
            return;
        }
        if method == "initialize" {
            if self.client.is_some() {
                self.refuse(
                    id,
                    code::INVALID_REQUEST,
                    "already initialized: `initialize` is sent once per stdio session".into(),
                );
                return;
            }
            let params = message.get("params").cloned().unwrap_or(json!({}));
            self.client = Some(ClientInit {
                pending_id: Some(id),
                params,
                discovery_deadline: now + self.settings.discovery_timeout,
            });
            self.try_select(now);
            return;
        }
        let initialized = self.client.as_ref().is_some_and(|c| c.pending_id.is_none());
        if !initialized {
            if method == "ping" {
                // MCP allows ping at any time; the bridge itself is alive.
                self.reply(id, json!({}));
            } else {
                self.refuse(
                    id,
                    code::INVALID_REQUEST,
                    format!(
                        "`{method}` before the session is initialized: send `initialize` first and wait for its answer"
                    ),
                );
            }
            return;
        }
        let Session::Ready { drone } = &self.session else {
            let message = self.offline_message();
            self.counters.requests_failed_offline += 1;
            self.reply_error(id, code::DRONE_UNAVAILABLE, message);
            return;
        };
        let _ = drone;
        let key = id_key(&id);
        if self.pending.contains_key(&key) {
            self.refuse(
                id,
                code::INVALID_REQUEST,
                "a request with this id is still in flight; use a new id".into(),
            );
            return;
        }
        if self.abandoned.contains_key(&key) {
            self.refuse(
                id,
                code::INVALID_REQUEST,
                "a request with this id timed out at the bridge and may still be running on the drone; use a new id".into(),
            );
            return;
        }
        match method.as_str() {
            "resources/subscribe" => {
                if let Some(uri) = uri_of(&message) {
                    self.subscribed_uris.insert(uri);
                }
            }
            "resources/unsubscribe" => {
                if let Some(uri) = uri_of(&message) {
                    self.subscribed_uris.remove(&uri);
                }
            }
            "logging/setLevel" => self.log_level = message.get("params").cloned(),
            _ => {}
        }
        let mut token_is_ours = false;
        if method == "tools/call"
            && message.pointer("/params/_meta/progressToken").is_none()
            && let Some(Value::Object(params)) = message.get_mut("params")
        {
            // A token of our own: the drone's progress then keeps the call alive here too.
            self.next_internal_id += 1;
            let token = format!("{INTERNAL_ID_PREFIX}progress:{}", self.next_internal_id);
            let meta = params
                .entry("_meta")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(meta) = meta {
                meta.insert("progressToken".into(), Value::String(token));
                token_is_ours = true;
            }
        }
        let progress_token = message
            .pointer("/params/_meta/progressToken")
            .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
            .map(id_key);
        let what = match message.pointer("/params/name").and_then(Value::as_str) {
            Some(tool) if method == "tools/call" => format!("tools/call {tool}"),
            _ => method.clone(),
        };
        let idle = self.timeout_of(&method);
        self.pending.insert(
            key,
            Pending {
                id,
                what,
                progress_token,
                token_is_ours,
                idle,
                deadline: now + idle,
            },
        );
        self.publish_rpc(message);
    }

    fn client_notification(&mut self, method: String, message: Value) {
        match method.as_str() {
            // The bridge sends its own `initialized` when the drone answers.
            "notifications/initialized" => return,
            "notifications/cancelled" => {
                if let Some(request_id) = message.pointer("/params/requestId") {
                    // The drone sends no answer to a cancelled request; nor does the bridge.
                    let key = id_key(request_id);
                    self.pending.remove(&key);
                    if self.abandoned.remove(&key).is_some() {
                        self.abandoned_order.retain(|k| k != &key);
                    }
                }
            }
            _ => {}
        }
        let Session::Ready { .. } = &self.session else {
            tracing::debug!("dropped `{method}` from the stdio client: no drone session");
            return;
        };
        if method == "notifications/roots/list_changed" {
            let topic = transport::client_capability(
                &self.settings.client_topic_root,
                &self.settings.client_id,
            );
            self.publish(topic, &message);
        } else {
            self.publish_rpc(message);
        }
    }

    /// An answer to a request the drone sent (e.g. `ping`).
    fn client_response(&mut self, message: Value) {
        if let Session::Ready { .. } = &self.session {
            self.publish_rpc(message);
        } else {
            tracing::debug!("dropped a response from the stdio client: no drone session");
        }
    }

    // --- drone side ---

    fn presence(&mut self, now: Instant, topic: Result<(&str, &str), &str>, payload: &[u8]) {
        let (id, name) = match topic {
            Ok(pair) => pair,
            Err(rest) => {
                self.drop_mqtt(rest, "presence topic without server-id and server-name");
                return;
            }
        };
        let drone = Drone {
            id: id.to_owned(),
            name: name.to_owned(),
        };
        if payload.is_empty() {
            self.drones.remove(&drone);
            if self.session_drone() == Some(&drone) {
                self.drone_lost(now, "its presence was cleared");
            }
            return;
        }
        if !transport::is_server_online(payload) {
            self.drop_mqtt(
                &format!("{id}/{name}"),
                "presence payload is not `notifications/server/online`",
            );
            return;
        }
        if self.drones.insert(drone) {
            tracing::info!("drone online: {name} (server id {id})");
        }
        self.try_select(now);
    }

    fn drone_rpc(&mut self, now: Instant, message: Value) {
        match Kind::of(&message) {
            Kind::Response { id } => {
                let key = id_key(&id);
                let init_id = match &self.session {
                    Session::Initializing { request_id, .. } => Some(request_id.clone()),
                    _ => None,
                };
                if init_id.is_some_and(|r| id.as_str() == Some(r.as_str())) {
                    self.drone_initialized(message);
                } else if id.as_str().is_some_and(|s| self.internal_ids.remove(s)) {
                    if let Some(error) = message.get("error") {
                        tracing::warn!(
                            "the drone refused a request replayed after re-initializing: {error}"
                        );
                    }
                } else if self.pending.remove(&key).is_some() {
                    self.emit(&message);
                } else if let Some(late) = self.abandoned.remove(&key) {
                    self.abandoned_order.retain(|k| k != &key);
                    self.late_answer(late, &message);
                } else {
                    // Late answer to a request already answered or cancelled.
                    self.drop_mqtt("rpc", "answer to no request in flight");
                }
            }
            Kind::Notification { method } if method == "notifications/progress" => {
                self.drone_progress(now, message);
            }
            Kind::Notification { method } if method == transport::DISCONNECTED => {
                self.drone_lost(now, "it ended the session");
            }
            Kind::Notification { .. } | Kind::Request { .. } => {
                if matches!(self.session, Session::Ready { .. }) {
                    self.emit(&message);
                }
            }
            Kind::Invalid => self.drop_mqtt("rpc", "not a JSON-RPC 2.0 message"),
        }
    }

    fn drone_capability(&mut self, message: Value) {
        let Kind::Notification { method } = Kind::of(&message) else {
            self.drop_mqtt("capability", "not a notification");
            return;
        };
        if !matches!(self.session, Session::Ready { .. }) {
            return;
        }
        if method == "notifications/resources/updated" {
            // Broadcast to every client of the drone; pass on only what this client asked for.
            if uri_of(&message).is_some_and(|u| self.subscribed_uris.contains(&u)) {
                self.emit(&message);
            }
        } else if method.ends_with("/list_changed") {
            self.emit(&message);
        }
    }

    fn drone_initialized(&mut self, message: Value) {
        let Session::Initializing { drone, .. } =
            std::mem::replace(&mut self.session, Session::None)
        else {
            return;
        };
        if let Some(error) = message.get("error") {
            tracing::warn!("drone {} refused `initialize`: {error}", drone.name);
            self.unsubscribe_session(&drone);
            let pending_id = self.client.as_mut().and_then(|c| c.pending_id.take());
            if let Some(id) = pending_id {
                self.emit(&json!({"jsonrpc": "2.0", "id": id, "error": error}));
            }
            return;
        }
        let result = message.get("result").cloned().unwrap_or(json!({}));
        self.session = Session::Ready {
            drone: drone.clone(),
        };
        self.last_drone_name = Some(drone.name.clone());
        self.publish_rpc(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        let pending_id = self.client.as_mut().and_then(|c| c.pending_id.take());
        match pending_id {
            Some(id) => {
                tracing::info!(
                    "session initialized with drone {} (server id {})",
                    drone.name,
                    drone.id
                );
                self.reply(id, result);
            }
            None => {
                // A new session starts from the drone's defaults: restore what the client set.
                if let Some(params) = self.log_level.clone() {
                    let id = self.internal_id("setlevel");
                    self.publish_rpc(json!({
                        "jsonrpc": "2.0", "id": id, "method": "logging/setLevel", "params": params,
                    }));
                }
                let uris: Vec<String> = self.subscribed_uris.iter().cloned().collect();
                for uri in uris {
                    let id = self.internal_id("resubscribe");
                    self.publish_rpc(json!({
                        "jsonrpc": "2.0", "id": id, "method": "resources/subscribe",
                        "params": {"uri": uri},
                    }));
                }
                self.notify(
                    "info",
                    format!(
                        "drone {} is back online (server id {}); the bridge re-initialized the session and renewed resource subscriptions and the log level",
                        drone.name, drone.id
                    ),
                );
            }
        }
    }

    /// The session's drone is gone: answer everything in flight and warn the client.
    fn drone_lost(&mut self, now: Instant, why: &str) {
        let drone = match std::mem::replace(&mut self.session, Session::None) {
            Session::None => return,
            Session::Initializing { drone, .. } | Session::Ready { drone } => drone,
        };
        tracing::warn!("drone {} ({}) went offline: {why}", drone.name, drone.id);
        if self.connected {
            self.unsubscribe_session(&drone);
        }
        let message = format!("drone {} went offline ({why})", drone.name);
        for (_, p) in std::mem::take(&mut self.pending) {
            self.counters.requests_failed_offline += 1;
            self.reply_error(p.id, code::DRONE_UNAVAILABLE, message.clone());
        }
        self.internal_ids.clear();
        // A new session will never answer them.
        self.forget_abandoned();
        let initialized = self.client.as_ref().is_some_and(|c| c.pending_id.is_none());
        if initialized {
            self.notify(
                "warning",
                format!(
                    "{message}; requests in flight were answered with errors; the bridge re-initializes when it comes back"
                ),
            );
        }
        self.try_select(now);
    }

    /// Starts a session when the client has asked for one and exactly one drone fits.
    fn try_select(&mut self, now: Instant) {
        if !self.connected || self.settle_until.is_some() || !matches!(self.session, Session::None)
        {
            return;
        }
        let Some(client) = &self.client else {
            return;
        };
        let first = client.pending_id.is_some();
        let mut params = client.params.clone();
        if let Some(token) = &self.settings.token
            && let Value::Object(p) = &mut params
        {
            let meta = p
                .entry("_meta")
                .or_insert_with(|| Value::Object(Default::default()));
            if !meta.is_object() {
                *meta = Value::Object(Default::default());
            }
            if let Value::Object(m) = meta {
                m.insert(
                    transport::TOKEN_META_KEY.into(),
                    Value::String(token.clone()),
                );
            }
        }
        let wanted = self
            .settings
            .server_name
            .clone()
            .or_else(|| self.last_drone_name.clone());
        let candidates: Vec<&Drone> = self
            .drones
            .iter()
            .filter(|d| wanted.as_ref().is_none_or(|w| &d.name == w))
            .collect();
        let names: BTreeSet<&str> = candidates.iter().map(|d| d.name.as_str()).collect();
        if names.len() > 1 {
            if first {
                let listed: Vec<String> = candidates
                    .iter()
                    .map(|d| format!("{} (server id {})", d.name, d.id))
                    .collect();
                self.answer_client_init_error(format!(
                    "several drones are online: {}; choose one with --server-name NAME or ground.server_name",
                    listed.join(", ")
                ));
            }
            return;
        }
        // Several instances of one server-name count as one server: any of them will do.
        let Some(drone) = candidates.first().map(|d| (*d).clone()) else {
            return;
        };
        let request_id = self.internal_id("initialize");
        self.actions.push_back(Action::Subscribe {
            topic: self.capability_topic(&drone),
            no_local: false,
        });
        self.actions.push_back(Action::Subscribe {
            topic: self.rpc_topic(&drone),
            no_local: true,
        });
        // The broker handles one connection's packets in order, so the RPC subscription is in
        // place before the drone can answer this.
        let control = self.topics(&drone).control();
        self.publish(
            control,
            &json!({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}),
        );
        self.internal_ids.remove(&request_id);
        self.session = Session::Initializing {
            drone,
            request_id,
            deadline: now + self.settings.request_timeout,
        };
    }

    // --- helpers ---

    fn answer_client_init_error(&mut self, message: String) {
        let id = self.client.as_mut().and_then(|c| c.pending_id.take());
        if let Some(id) = id {
            tracing::error!("{message}");
            self.reply_error(id, code::DRONE_UNAVAILABLE, message);
            // The stdio client may try `initialize` again.
            self.client = None;
        }
    }

    fn no_drone_message(&self) -> String {
        match &self.settings.server_name {
            Some(name) => format!(
                "no drone named {name} is online (waited {} ms for its presence on the broker)",
                self.settings.discovery_timeout.as_millis()
            ),
            None => format!(
                "no drone is online (waited {} ms for presence on the broker)",
                self.settings.discovery_timeout.as_millis()
            ),
        }
    }

    fn offline_message(&self) -> String {
        let name = self
            .last_drone_name
            .clone()
            .or_else(|| self.settings.server_name.clone())
            .unwrap_or_else(|| "(none chosen yet)".into());
        if !self.connected {
            format!(
                "drone {name} is unreachable: the bridge is not connected to the broker; retry after it reconnects"
            )
        } else {
            format!(
                "drone {name} is offline; the bridge re-initializes the session when it comes back, then retry"
            )
        }
    }

    fn session_drone(&self) -> Option<&Drone> {
        match &self.session {
            Session::None => None,
            Session::Initializing { drone, .. } | Session::Ready { drone } => Some(drone),
        }
    }

    fn timeout_of(&self, method: &str) -> Duration {
        match method {
            "tools/call" | "sampling/createMessage" | "completion/complete" => {
                self.settings.call_idle_timeout
            }
            _ => self.settings.request_timeout,
        }
    }

    /// `notifications/progress` from the drone: a sign of life for the request it belongs to
    /// (its idle deadline moves), shown to the client unless the token is the bridge's own or
    /// the request is no longer in flight.
    fn drone_progress(&mut self, now: Instant, message: Value) {
        if !matches!(self.session, Session::Ready { .. }) {
            return;
        }
        let token = message.pointer("/params/progressToken").map(id_key);
        let owner = token.as_ref().and_then(|t| {
            self.pending
                .values_mut()
                .find(|p| p.progress_token.as_ref() == Some(t))
        });
        match owner {
            Some(p) => {
                p.deadline = now + p.idle;
                if !p.token_is_ours {
                    self.emit(&message);
                }
            }
            None => {
                let stale = token.as_ref().is_some_and(|t| {
                    t.starts_with(&format!("\"{INTERNAL_ID_PREFIX}"))
                        || self
                            .abandoned
                            .values()
                            .any(|a| a.progress_token.as_ref() == Some(t))
                });
                if stale {
                    tracing::debug!("progress for a request no longer in flight: not shown");
                } else {
                    self.emit(&message);
                }
            }
        }
    }

    /// Remembers a request the bridge stopped waiting for (at most [`ABANDONED_MAX`]).
    fn abandon(&mut self, key: String, p: &Pending) {
        self.abandoned.insert(
            key.clone(),
            Abandoned {
                id: p.id.clone(),
                what: p.what.clone(),
                progress_token: p.progress_token.clone(),
            },
        );
        self.abandoned_order.push_back(key);
        while self.abandoned_order.len() > ABANDONED_MAX {
            if let Some(oldest) = self.abandoned_order.pop_front() {
                self.abandoned.remove(&oldest);
            }
        }
    }

    fn forget_abandoned(&mut self) {
        self.abandoned.clear();
        self.abandoned_order.clear();
    }

    /// The drone answered a request the client was already told had timed out: the answer
    /// cannot be sent as a response (the id is answered), so it is told as a notice.
    fn late_answer(&mut self, late: Abandoned, message: &Value) {
        let (level, outcome) = if let Some(error) = message.get("error") {
            let text = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            ("warning", format!("failed: {text}"))
        } else {
            let result = message.get("result").cloned().unwrap_or(Value::Null);
            let text = result
                .pointer("/content/0/text")
                .and_then(Value::as_str)
                .unwrap_or("");
            let text: String = text.chars().take(LATE_TEXT_CHARS).collect();
            if result.get("isError").and_then(Value::as_bool) == Some(true) {
                ("warning", format!("ended with an error: {text}"))
            } else {
                ("info", format!("completed: {text}"))
            }
        };
        self.notify(
            level,
            format!(
                "`{}` (request id {}), which the bridge had stopped waiting for, has ended on the drone: {outcome}",
                late.what, late.id
            ),
        );
    }

    fn internal_id(&mut self, what: &str) -> String {
        self.next_internal_id += 1;
        let id = format!("{INTERNAL_ID_PREFIX}{what}:{}", self.next_internal_id);
        self.internal_ids.insert(id.clone());
        id
    }

    /// The transport's topics of `drone`.
    fn topics(&self, drone: &Drone) -> Topics {
        let s = &self.settings;
        Topics {
            server_root: s.server_topic_root.clone(),
            client_root: s.client_topic_root.clone(),
            rpc_root: s.rpc_topic_root.clone(),
            server_id: drone.id.clone(),
            server_name: drone.name.clone(),
        }
    }

    fn rpc_topic(&self, drone: &Drone) -> String {
        self.topics(drone).rpc(&self.settings.client_id)
    }

    fn capability_topic(&self, drone: &Drone) -> String {
        self.topics(drone).capability()
    }

    fn unsubscribe_session(&mut self, drone: &Drone) {
        for topic in [self.capability_topic(drone), self.rpc_topic(drone)] {
            self.actions.push_back(Action::Unsubscribe { topic });
        }
    }

    fn publish(&mut self, topic: String, message: &Value) {
        self.actions.push_back(Action::Publish {
            topic,
            payload: message.to_string(),
        });
    }

    fn publish_rpc(&mut self, message: Value) {
        if let Some(drone) = self.session_drone() {
            let topic = self.rpc_topic(drone);
            self.publish(topic, &message);
        }
    }

    fn emit(&mut self, message: &Value) {
        // Compact JSON escapes newlines inside strings, so one message is one line.
        self.actions.push_back(Action::Stdout(message.to_string()));
    }

    fn reply(&mut self, id: Value, result: Value) {
        self.emit(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    fn reply_error(&mut self, id: Value, code: i32, message: String) {
        self.emit(
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        );
    }

    fn refuse(&mut self, id: Value, code: i32, message: String) {
        self.counters.stdin_refused += 1;
        tracing::warn!("refused a message from the stdio client: {message}");
        self.reply_error(id, code, message);
    }

    fn notify(&mut self, level: &str, data: String) {
        self.emit(&json!({
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": level, "logger": LOGGER, "data": data},
        }));
    }

    fn drop_mqtt(&mut self, topic: &str, why: &str) {
        self.counters.mqtt_dropped += 1;
        tracing::warn!("dropped an MQTT message on {topic}: {why}");
    }
}

/// The shape of a JSON-RPC message.
enum Kind {
    Request { id: Value, method: String },
    Notification { method: String },
    Response { id: Value },
    Invalid,
}

impl Kind {
    fn of(message: &Value) -> Kind {
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Kind::Invalid;
        }
        let id = message
            .get("id")
            .filter(|i| i.is_string() || i.is_i64() || i.is_u64());
        match (message.get("method").and_then(Value::as_str), id) {
            (Some(m), Some(id)) => Kind::Request {
                id: id.clone(),
                method: m.to_owned(),
            },
            (Some(m), None) if message.get("id").is_none() => Kind::Notification {
                method: m.to_owned(),
            },
            (None, Some(id))
                if message.get("result").is_some() || message.get("error").is_some() =>
            {
                Kind::Response { id: id.clone() }
            }
            (None, None) if message.get("error").is_some() => Kind::Response { id: Value::Null },
            _ => Kind::Invalid,
        }
    }
}

/// A canonical key of a JSON-RPC id (`1` and `"1"` are different ids).
fn id_key(id: &Value) -> String {
    id.to_string()
}

fn uri_of(message: &Value) -> Option<String> {
    message
        .pointer("/params/uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "gcs";

    fn settings() -> BridgeSettings {
        let mut s = BridgeSettings::from_config(&GroundSection::default(), CID.into());
        s.presence_settle = Duration::from_millis(300);
        s
    }

    struct Harness {
        bridge: Bridge,
        now: Instant,
    }

    impl Harness {
        fn new(settings: BridgeSettings) -> Self {
            Self {
                bridge: Bridge::new(settings),
                now: Instant::now(),
            }
        }
        fn actions(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.bridge.poll_action()).collect()
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
            if self.bridge.poll_timeout().is_some_and(|t| t <= self.now) {
                self.bridge.handle_timeout(self.now);
            }
        }
        fn stdin(&mut self, v: Value) {
            self.bridge.handle_stdin_line(self.now, &v.to_string());
        }
        fn online(&mut self, id: &str, name: &str) {
            let payload = json!({"jsonrpc":"2.0","method":"notifications/server/online",
                "params":{"server_name":name,"description":"d","meta":{}}});
            self.bridge.handle_mqtt_message(
                self.now,
                &format!("$mcp-server/presence/{id}/{name}"),
                payload.to_string().as_bytes(),
            );
        }
        fn offline(&mut self, id: &str, name: &str) {
            self.bridge.handle_mqtt_message(
                self.now,
                &format!("$mcp-server/presence/{id}/{name}"),
                b"",
            );
        }
        fn drone_says(&mut self, id: &str, name: &str, v: Value) {
            self.bridge.handle_mqtt_message(
                self.now,
                &format!("$mcp-rpc/{CID}/{id}/{name}"),
                v.to_string().as_bytes(),
            );
        }
        /// Connects, sees one drone, initializes, answers; returns with the session ready.
        fn ready(id: &str, name: &str) -> Harness {
            let mut h = Harness::new(settings());
            h.bridge.handle_connected(h.now, None);
            h.online(id, name);
            h.advance(300);
            h.actions();
            h.stdin(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
            let init = h.sent_initialize();
            h.drone_says(id, name, json!({"jsonrpc":"2.0","id":init,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"fc","version":"1"}}}));
            let out = h.stdout();
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0]["id"], 0);
            h
        }
        /// The id of the `initialize` the bridge just published on a control topic.
        fn sent_initialize(&mut self) -> String {
            let actions = self.actions();
            let pubs = Self::publishes(&actions);
            let (_, init) = pubs
                .iter()
                .find(|(_, m)| m["method"] == "initialize")
                .unwrap_or_else(|| panic!("no initialize in {actions:?}"));
            init["id"].as_str().unwrap().to_owned()
        }
    }

    #[test]
    fn connect_subscribes_presence_with_the_default_or_the_broker_filters() {
        let mut h = Harness::new(settings());
        h.bridge.handle_connected(h.now, None);
        assert_eq!(
            h.actions(),
            vec![Action::Subscribe {
                topic: "$mcp-server/presence/+/#".into(),
                no_local: false
            }]
        );
        let mut s = settings();
        s.server_name = Some("drone/a".into());
        let mut h = Harness::new(s);
        h.bridge.handle_connected(h.now, None);
        assert_eq!(
            h.actions(),
            vec![Action::Subscribe {
                topic: "$mcp-server/presence/+/drone/a".into(),
                no_local: false
            }]
        );
        // MCP-SERVER-NAME-FILTERS from CONNACK win over our own default.
        h.bridge
            .handle_connected(h.now, Some(vec!["fleet/x/#".into(), "fleet/y".into()]));
        let topics: Vec<Action> = h.actions();
        assert_eq!(topics.len(), 2);
        assert!(
            matches!(&topics[0], Action::Subscribe { topic, .. } if topic == "$mcp-server/presence/+/fleet/x/#")
        );
    }

    #[test]
    fn initialize_forwards_the_client_params_and_returns_the_drone_result() {
        let mut h = Harness::new(settings());
        h.bridge.handle_connected(h.now, None);
        h.actions();
        h.stdin(json!({"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{}},"clientInfo":{"name":"t","version":"1"}}}));
        assert!(h.actions().is_empty(), "waits for presence to settle");
        h.online("sid1", "drone/a");
        assert!(h.actions().is_empty(), "still settling");
        h.advance(300);
        let actions = h.actions();
        assert!(actions.contains(&Action::Subscribe {
            topic: "$mcp-rpc/gcs/sid1/drone/a".into(),
            no_local: true
        }));
        assert!(actions.contains(&Action::Subscribe {
            topic: "$mcp-server/capability/sid1/drone/a".into(),
            no_local: false
        }));
        let pubs = Harness::publishes(&actions);
        assert_eq!(pubs.len(), 1);
        assert_eq!(pubs[0].0, "$mcp-server/sid1/drone/a");
        assert_eq!(pubs[0].1["params"]["protocolVersion"], "2025-06-18");
        assert_eq!(pubs[0].1["params"]["capabilities"]["roots"], json!({}));
        let init_id = pubs[0].1["id"].as_str().unwrap().to_owned();
        assert!(init_id.starts_with(INTERNAL_ID_PREFIX));
        let result = json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"fc","version":"1"}});
        h.drone_says(
            "sid1",
            "drone/a",
            json!({"jsonrpc":"2.0","id":init_id,"result":result}),
        );
        let actions = h.actions();
        let pubs = Harness::publishes(&actions);
        assert_eq!(pubs[0].0, "$mcp-rpc/gcs/sid1/drone/a");
        assert_eq!(pubs[0].1["method"], "notifications/initialized");
        assert!(actions.contains(&Action::Stdout(
            json!({"jsonrpc":"2.0","id":"a","result":result}).to_string()
        )));
        // The client's own `initialized` is not sent twice.
        h.stdin(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        assert!(h.actions().is_empty());
    }

    #[test]
    fn requests_and_answers_pass_through_unchanged() {
        let mut h = Harness::ready("sid1", "drone/a");
        let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_status","arguments":{},"_meta":{"progressToken":"p"}}});
        h.stdin(call.clone());
        let pubs = Harness::publishes(&h.actions());
        assert_eq!(pubs, vec![("$mcp-rpc/gcs/sid1/drone/a".into(), call)]);
        let progress = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}});
        h.drone_says("sid1", "drone/a", progress.clone());
        let answer = json!({"jsonrpc":"2.0","id":7,"result":{"content":[]}});
        h.drone_says("sid1", "drone/a", answer.clone());
        assert_eq!(h.stdout(), vec![progress, answer.clone()]);
        // A second answer to the same id is dropped, not duplicated.
        h.drone_says("sid1", "drone/a", answer);
        assert!(h.stdout().is_empty());
        assert_eq!(h.bridge.counters().mqtt_dropped, 1);
        // A request from the drone (ping) and the client's answer.
        let ping = json!({"jsonrpc":"2.0","id":"s1","method":"ping"});
        h.drone_says("sid1", "drone/a", ping.clone());
        assert_eq!(h.stdout(), vec![ping]);
        let pong = json!({"jsonrpc":"2.0","id":"s1","result":{}});
        h.stdin(pong.clone());
        assert_eq!(Harness::publishes(&h.actions())[0].1, pong);
    }

    #[test]
    fn resource_updates_reach_the_client_only_for_its_subscriptions() {
        let mut h = Harness::ready("sid1", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"vehicle://status"}}));
        h.actions();
        let cap = "$mcp-server/capability/sid1/drone/a";
        let upd = |uri: &str| json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":uri}});
        h.bridge
            .handle_mqtt_message(h.now, cap, upd("vehicle://status").to_string().as_bytes());
        h.bridge
            .handle_mqtt_message(h.now, cap, upd("vehicle://other").to_string().as_bytes());
        let changed = json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"});
        h.bridge
            .handle_mqtt_message(h.now, cap, changed.to_string().as_bytes());
        assert_eq!(h.stdout(), vec![upd("vehicle://status"), changed]);
        h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"resources/unsubscribe","params":{"uri":"vehicle://status"}}));
        h.bridge
            .handle_mqtt_message(h.now, cap, upd("vehicle://status").to_string().as_bytes());
        assert!(h.stdout().is_empty());
    }

    #[test]
    fn cancellation_is_forwarded_and_nothing_is_answered() {
        let mut h = Harness::ready("sid1", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"}}));
        h.actions();
        let cancel =
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}});
        h.stdin(cancel.clone());
        assert_eq!(Harness::publishes(&h.actions())[0].1, cancel);
        h.advance(120_000);
        assert!(h.stdout().is_empty(), "a cancelled request is not answered");
    }

    #[test]
    fn the_token_goes_in_every_initialize_replacing_the_clients() {
        let mut s = settings();
        s.token = Some("header.claims.sig".into());
        let mut h = Harness::new(s);
        h.bridge.handle_connected(h.now, None);
        h.online("sid1", "drone/a");
        h.advance(300);
        h.actions();
        h.stdin(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"_meta":{"flight-companion/token":"forged","other":1},"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
        let sent = |h: &mut Harness| {
            let actions = h.actions();
            let pubs = Harness::publishes(&actions);
            let (_, init) = pubs
                .iter()
                .find(|(_, m)| m["method"] == "initialize")
                .unwrap();
            init.clone()
        };
        let first = sent(&mut h);
        assert_eq!(
            first["params"]["_meta"]["flight-companion/token"],
            "header.claims.sig"
        );
        assert_eq!(
            first["params"]["_meta"]["other"], 1,
            "the client's other _meta stays"
        );
        let id = first["id"].as_str().unwrap().to_owned();
        h.drone_says("sid1", "drone/a", json!({"jsonrpc":"2.0","id":id,"result":{"protocolVersion":"2025-11-25","capabilities":{}}}));
        h.actions();
        // The daemon restarts: the re-initialize carries the token too.
        h.offline("sid1", "drone/a");
        h.actions();
        h.online("sid2", "drone/a");
        let again = sent(&mut h);
        assert_eq!(
            again["params"]["_meta"]["flight-companion/token"],
            "header.claims.sig"
        );
    }

    #[test]
    fn offline_answers_pending_requests_warns_and_reinitializes_on_return() {
        let mut h = Harness::ready("sid1", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"vehicle://status"}}));
        h.drone_says(
            "sid1",
            "drone/a",
            json!({"jsonrpc":"2.0","id":1,"result":{}}),
        );
        h.stdin(
            json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_status"}}),
        );
        h.actions();
        h.offline("sid1", "drone/a");
        let actions = h.actions();
        assert!(actions.contains(&Action::Unsubscribe {
            topic: "$mcp-rpc/gcs/sid1/drone/a".into()
        }));
        let out: Vec<Value> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Stdout(s) => serde_json::from_str(s).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0]["id"], 5);
        assert_eq!(out[0]["error"]["code"], code::DRONE_UNAVAILABLE);
        assert!(
            out[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("drone drone/a went offline")
        );
        assert_eq!(out[1]["method"], "notifications/message");
        assert_eq!(out[1]["params"]["level"], "warning");
        // While offline, requests are refused at once with what to do.
        h.stdin(json!({"jsonrpc":"2.0","id":6,"method":"tools/list"}));
        let out = h.stdout();
        assert!(
            out[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("comes back")
        );
        // Back with a new server id (a restarted daemon): re-initialized with the client's params.
        h.online("sid2", "drone/a");
        let init = h.sent_initialize();
        h.drone_says("sid2", "drone/a", json!({"jsonrpc":"2.0","id":init,"result":{"protocolVersion":"2025-11-25","capabilities":{}}}));
        let actions = h.actions();
        let pubs = Harness::publishes(&actions);
        assert_eq!(pubs[0].1["method"], "notifications/initialized");
        assert_eq!(
            pubs[1].1["method"], "resources/subscribe",
            "subscriptions renewed"
        );
        assert_eq!(pubs[1].1["params"]["uri"], "vehicle://status");
        let resub_id = pubs[1].1["id"].clone();
        let out: Vec<Value> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Stdout(s) => serde_json::from_str(s).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(
            out.len(),
            1,
            "the re-initialize answer is not shown: {out:?}"
        );
        assert!(
            out[0]["params"]["data"]
                .as_str()
                .unwrap()
                .contains("back online")
        );
        h.drone_says(
            "sid2",
            "drone/a",
            json!({"jsonrpc":"2.0","id":resub_id,"result":{}}),
        );
        assert!(h.stdout().is_empty(), "internal answers are swallowed");
        h.stdin(json!({"jsonrpc":"2.0","id":8,"method":"tools/list"}));
        assert_eq!(
            Harness::publishes(&h.actions())[0].0,
            "$mcp-rpc/gcs/sid2/drone/a"
        );
    }

    #[test]
    fn disconnected_on_the_rpc_topic_and_a_lost_broker_count_as_offline() {
        let mut h = Harness::ready("sid1", "drone/a");
        h.drone_says(
            "sid1",
            "drone/a",
            json!({"jsonrpc":"2.0","method":"notifications/disconnected"}),
        );
        let out = h.stdout();
        assert_eq!(out[0]["params"]["level"], "warning");
        let mut h = Harness::ready("sid1", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
        h.bridge.handle_disconnected(h.now);
        let actions = h.actions();
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Unsubscribe { .. })),
            "nothing to unsubscribe on a dead connection"
        );
        let text = format!("{actions:?}");
        assert!(text.contains("connection to the broker was lost"), "{text}");
        // Reconnect: presence again, then the same drone is re-initialized.
        h.bridge.handle_connected(h.now, None);
        h.online("sid1", "drone/a");
        h.advance(300);
        h.sent_initialize();
    }

    #[test]
    fn several_drones_and_none_named_is_a_clear_error() {
        let mut h = Harness::new(settings());
        h.bridge.handle_connected(h.now, None);
        h.online("s1", "drone/a");
        h.online("s2", "drone/b");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}));
        h.advance(300);
        let out = h.stdout();
        let message = out[0]["error"]["message"].as_str().unwrap();
        assert!(message.contains("drone/a (server id s1)"), "{message}");
        assert!(message.contains("drone/b (server id s2)"), "{message}");
        assert!(message.contains("--server-name"), "{message}");
        // Named: picks it.
        let mut s = settings();
        s.server_name = Some("drone/b".into());
        let mut h = Harness::new(s);
        h.bridge.handle_connected(h.now, None);
        h.online("s1", "drone/a");
        h.online("s2", "drone/b");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}));
        h.advance(300);
        let actions = h.actions();
        assert!(Harness::publishes(&actions)[0].0 == "$mcp-server/s2/drone/b");
        // Two instances of one name are one server.
        let mut h = Harness::new(settings());
        h.bridge.handle_connected(h.now, None);
        h.online("s1", "drone/a");
        h.online("s2", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}));
        h.advance(300);
        h.sent_initialize();
    }

    #[test]
    fn no_drone_within_the_discovery_timeout_is_an_error() {
        let mut h = Harness::new(settings());
        h.bridge.handle_connected(h.now, None);
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}));
        h.advance(300);
        h.advance(9_000);
        assert!(h.stdout().is_empty());
        h.advance(1_000);
        let out = h.stdout();
        assert!(
            out[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no drone is online")
        );
    }

    #[test]
    fn a_silent_drone_times_out_requests_with_the_method_and_the_limit_and_nothing_is_sent() {
        // Issue 14: a timeout used to send notifications/cancelled, which made a flying
        // vehicle hold; now it answers the client and commands nothing.
        let mut h = Harness::ready("sid1", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}));
        h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
        h.actions();
        h.advance(30_000);
        let actions = h.actions();
        assert!(Harness::publishes(&actions).is_empty(), "{actions:?}");
        let text = format!("{actions:?}");
        assert!(
            text.contains("did not answer `tools/list` within 30000 ms"),
            "{text}"
        );
        h.advance(30_000);
        let actions = h.actions();
        assert!(Harness::publishes(&actions).is_empty(), "{actions:?}");
        let out: Vec<Value> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Stdout(s) => serde_json::from_str(s).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(out[0]["id"], 1);
        let message = out[0]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`tools/call x` and sent no progress for it for 60000 ms"),
            "{message}"
        );
        assert!(
            message.contains("Nothing was sent to the drone"),
            "{message}"
        );
        assert_eq!(h.bridge.counters().requests_timed_out, 2);
    }

    #[test]
    fn progress_keeps_a_call_alive_however_long_it_runs() {
        let mut h = Harness::ready("sid1", "drone/a");
        // No progressToken from the client: the bridge adds its own and hides that progress.
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"goto","arguments":{}}}));
        let pubs = Harness::publishes(&h.actions());
        let token = pubs[0].1["params"]["_meta"]["progressToken"].clone();
        assert!(
            token.as_str().unwrap().starts_with(INTERNAL_ID_PREFIX),
            "{pubs:?}"
        );
        assert_eq!(pubs[0].1["params"]["name"], "goto");
        // The client's own token: its progress is shown, and keeps the call alive too.
        h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"land","_meta":{"progressToken":7}}}));
        let pubs = Harness::publishes(&h.actions());
        assert_eq!(pubs[0].1["params"]["_meta"], json!({"progressToken": 7}));
        // Five minutes, progress every 50 s (under the 60 s idle limit): nothing times out.
        for n in 1..=6 {
            h.advance(50_000);
            h.drone_says("sid1", "drone/a", json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":token,"progress":n}}));
            let mine = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":n}});
            h.drone_says("sid1", "drone/a", mine.clone());
            assert_eq!(
                h.stdout(),
                vec![mine],
                "only the client's own progress is shown"
            );
        }
        assert_eq!(h.bridge.counters().requests_timed_out, 0);
        let done =
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"arrived"}]}});
        h.drone_says("sid1", "drone/a", done.clone());
        assert_eq!(h.stdout(), vec![done]);
        // Progress stops: the call to `land` fails 60 s after its last sign of life.
        h.advance(59_000);
        assert!(h.stdout().is_empty());
        h.advance(1_000);
        let out = h.stdout();
        assert_eq!(out[0]["id"], 2, "{out:?}");
        assert_eq!(h.bridge.counters().requests_timed_out, 1);
    }

    #[test]
    fn a_late_answer_is_reported_as_a_notice_and_its_id_stays_reserved() {
        let mut h = Harness::ready("sid1", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"goto","arguments":{}}}));
        let pubs = Harness::publishes(&h.actions());
        let token = pubs[0].1["params"]["_meta"]["progressToken"].clone();
        h.advance(60_000);
        let out = h.stdout();
        assert_eq!(out[0]["id"], 5);
        assert!(out[0]["error"].is_object());
        // The id still runs on the drone: reusing it is refused, not forwarded.
        h.stdin(json!({"jsonrpc":"2.0","id":5,"method":"tools/list"}));
        let actions = h.actions();
        assert!(Harness::publishes(&actions).is_empty());
        assert!(format!("{actions:?}").contains("may still be running on the drone"));
        // Its progress is not shown (the request is over for the client).
        h.drone_says("sid1", "drone/a", json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":token,"progress":9}}));
        assert!(h.stdout().is_empty());
        h.drone_says("sid1", "drone/a", json!({"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"arrived at 47.1, 8.5"}]}}));
        let out = h.stdout();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["method"], "notifications/message");
        assert_eq!(out[0]["params"]["level"], "info");
        let text = out[0]["params"]["data"].as_str().unwrap();
        assert!(
            text.contains("`tools/call goto` (request id 5)") && text.contains("arrived at 47.1"),
            "{text}"
        );
        // Answered once: a duplicate is noise, and the id is free again.
        h.drone_says(
            "sid1",
            "drone/a",
            json!({"jsonrpc":"2.0","id":5,"result":{}}),
        );
        assert!(h.stdout().is_empty());
        h.stdin(json!({"jsonrpc":"2.0","id":5,"method":"tools/list"}));
        assert_eq!(Harness::publishes(&h.actions()).len(), 1);
    }

    #[test]
    fn a_session_taken_over_by_the_same_client_id_is_a_clear_error_not_no_drone() {
        let mut h = Harness::ready("sid1", "drone/a");
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"goto"}}));
        h.actions();
        h.bridge.handle_taken_over();
        let actions = h.actions();
        assert!(actions.contains(&Action::StopConnection), "{actions:?}");
        let out: Vec<Value> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Stdout(s) => serde_json::from_str(s).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0]["id"], 1);
        let message = out[0]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(
                "another MQTT client connected to the broker with this bridge's client id `gcs`"
            ),
            "{message}"
        );
        assert!(message.contains("--client-id"), "{message}");
        assert_eq!(out[1]["method"], "notifications/message");
        assert_eq!(out[1]["params"]["level"], "error");
        // Everything after gets the same reason, at once; ping still says the bridge lives.
        h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
        h.stdin(json!({"jsonrpc":"2.0","id":3,"method":"ping"}));
        let actions = h.actions();
        assert!(Harness::publishes(&actions).is_empty());
        let text = format!("{actions:?}");
        assert!(
            text.contains("client id `gcs`") && !text.contains("no drone is online"),
            "{text}"
        );
        assert!(
            text.contains(r#"\"id\":3,\"jsonrpc\":\"2.0\",\"result\":{}"#),
            "{text}"
        );
        // Before initialize: the initialize itself gets the reason.
        let mut h = Harness::new(settings());
        h.bridge.handle_connected(h.now, None);
        h.stdin(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}));
        h.bridge.handle_taken_over();
        h.advance(10_000);
        let out = h.stdout();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("client id `gcs`")
        );
    }

    #[test]
    fn two_clients_with_one_id_on_a_broker_that_does_not_say_so_are_recognised() {
        let mut h = Harness::ready("sid1", "drone/a");
        h.advance(10_000);
        // The other bridge connects: ours is closed after a long, stable connection.
        h.bridge.handle_disconnected(h.now);
        let first = format!("{:?}", h.actions());
        assert!(
            first.contains("connection to the broker was lost"),
            "{first}"
        );
        // Ours takes the id back and is closed at once, twice: that is the pattern.
        for _ in 0..2 {
            h.advance(200);
            h.bridge.handle_connected(h.now, None);
            h.actions();
            h.advance(150);
            h.bridge.handle_disconnected(h.now);
        }
        let actions = h.actions();
        assert!(actions.contains(&Action::StopConnection), "{actions:?}");
        let text = format!("{actions:?}");
        assert!(
            text.contains("3 times in a row") && text.contains("client id `gcs`"),
            "{text}"
        );
        // Stopped for good: a late CONNACK changes nothing, requests get the reason.
        h.bridge.handle_connected(h.now, None);
        assert!(h.actions().is_empty());
        h.stdin(json!({"jsonrpc":"2.0","id":9,"method":"tools/list"}));
        let out = h.stdout();
        assert!(
            out[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("3 times in a row")
        );
    }

    #[test]
    fn a_link_that_drops_after_working_a_while_keeps_reconnecting() {
        let mut h = Harness::ready("sid1", "drone/a");
        for _ in 0..6 {
            h.advance(5_000);
            h.bridge.handle_disconnected(h.now);
            h.advance(500);
            h.bridge.handle_connected(h.now, None);
            h.online("sid1", "drone/a");
            h.advance(300);
        }
        let actions = h.actions();
        assert!(!actions.contains(&Action::StopConnection), "{actions:?}");
        // One drop right after a reconnect is not the pattern either.
        h.advance(100);
        h.bridge.handle_disconnected(h.now);
        assert!(!h.actions().contains(&Action::StopConnection));
    }

    #[test]
    fn bad_input_from_the_stdio_client_is_answered_never_forwarded() {
        let mut h = Harness::ready("sid1", "drone/a");
        let cases: [(&str, i32, &str); 5] = [
            ("{not json", code::PARSE_ERROR, "invalid JSON"),
            (
                "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]",
                code::INVALID_REQUEST,
                "batches",
            ),
            (
                "{\"id\":1,\"method\":\"ping\"}",
                code::INVALID_REQUEST,
                "jsonrpc",
            ),
            ("42", code::INVALID_REQUEST, "not a JSON-RPC"),
            (
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}",
                code::INVALID_REQUEST,
                "already initialized",
            ),
        ];
        for (line, code, needle) in cases {
            h.bridge.handle_stdin_line(h.now, line);
            let actions = h.actions();
            assert_eq!(actions.len(), 1, "{line}: {actions:?}");
            let Action::Stdout(s) = &actions[0] else {
                panic!("{line}: {actions:?}")
            };
            let v: Value = serde_json::from_str(s).unwrap();
            assert_eq!(v["error"]["code"], code, "{line}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(needle),
                "{line}: {v}"
            );
        }
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(300_000));
        h.bridge.handle_stdin_line(h.now, &big);
        assert!(format!("{:?}", h.actions()).contains("exceeds the bridge's limit"));
    }

    #[test]
    fn before_initialize_only_ping_is_answered() {
        let mut h = Harness::new(settings());
        h.bridge.handle_connected(h.now, None);
        h.actions();
        h.stdin(json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
        h.stdin(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
        let out = h.stdout();
        assert_eq!(out[0], json!({"jsonrpc":"2.0","id":1,"result":{}}));
        assert!(
            out[1]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("send `initialize` first")
        );
    }

    #[test]
    fn noise_from_the_broker_is_counted_and_dropped() {
        let mut h = Harness::ready("sid1", "drone/a");
        let noise: [(&str, &[u8]); 5] = [
            ("$mcp-rpc/gcs/sid1/drone/a", b"\xff\xfe"),
            ("$mcp-rpc/gcs/sid1/drone/a", b"{\"jsonrpc\":\"1.0\"}"),
            ("$mcp-server/presence/onlyid", b"{}"),
            ("$mcp-server/presence/s9/x", b"{\"method\":\"hello\"}"),
            (
                "$mcp-rpc/gcs/other/drone/b",
                b"{\"jsonrpc\":\"2.0\",\"method\":\"x\"}",
            ),
        ];
        for (topic, payload) in noise {
            h.bridge.handle_mqtt_message(h.now, topic, payload);
        }
        assert!(h.actions().is_empty());
        assert_eq!(h.bridge.counters().mqtt_dropped, 5);
    }
}
