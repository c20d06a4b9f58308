//! MCP 2026-07-28 on the stdio side (sans-IO), in front of either core ([`Bridge`] or
//! [`Fleet`]), while the MQTT side stays on the transport's 2025-11-25 session.
//!
//! 2026-07-28 is stateless: no `initialize`; every request carries the protocol version and
//! the client's capabilities in `_meta` (`io.modelcontextprotocol/protocolVersion`,
//! `io.modelcontextprotocol/clientCapabilities`); `server/discover` tells what the server is;
//! results carry `resultType` (absent means `"complete"`); `subscriptions/listen` replaces
//! `resources/subscribe` and the list-changed notifications a client used to get unasked;
//! `ping`, `logging/setLevel` and `notifications/roots/list_changed` are gone.
//!
//! The era is decided by the client's first request: `initialize` → the older revisions
//! (2024-11-05..2025-11-25), and every line passes through untouched; `server/discover` or a
//! request whose `_meta` names 2026-07-28 → this adapter speaks 2026-07-28 to the client and
//! keeps one 2025-11-25 session with the core underneath: it sends the core an `initialize`
//! of its own (the client's info, no client capabilities: the core then asks the client
//! nothing) and holds the client's requests until that session is up.
//!
//! [`Bridge`]: crate::bridge::Bridge
//! [`Fleet`]: crate::fleet::Fleet

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::GroundCore;
use crate::bridge::Action;
use flight_companion_core::mcp::transport::code;

/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// What the adapter asks of the core underneath.
const INNER_VERSION: &str = "2025-11-25";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";
/// Prefix of the adapter's own request ids to the core.
const ID_PREFIX: &str = "fc-era:";
/// Requests held while the core's session starts; more are refused.
const HELD_MAX: usize = 64;
/// Open `subscriptions/listen` streams; more are refused.
const LISTENS_MAX: usize = 16;
/// Methods 2026-07-28 removed.
const REMOVED: [&str; 4] = [
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

#[derive(Debug)]
enum Era {
    /// No request yet.
    Undecided,
    /// `initialize` came first: everything passes through.
    Legacy,
    Modern(Modern),
}

#[derive(Debug, Default)]
struct Modern {
    /// The core's `initialize` result, once it answered.
    inner: Option<Value>,
    /// The core refused the session (its error), answered to everything.
    refused: Option<Value>,
    /// Client requests waiting for the core's session.
    held: VecDeque<Value>,
    /// Open listen streams: the request id (canonical JSON) → the id and what it asked for.
    listens: BTreeMap<String, Listen>,
    next_id: u64,
}

#[derive(Debug)]
struct Listen {
    id: Value,
    tools: bool,
    resources: bool,
    uris: BTreeSet<String>,
}

/// The adapter; drives the inner core and translates both ways.
pub struct EraAdapter {
    inner: Box<dyn GroundCore>,
    era: Era,
    actions: VecDeque<Action>,
}

impl EraAdapter {
    pub fn new(inner: Box<dyn GroundCore>) -> Self {
        Self {
            inner,
            era: Era::Undecided,
            actions: VecDeque::new(),
        }
    }

    /// Whether the client speaks 2026-07-28 (decided by its first request).
    pub fn is_modern(&self) -> bool {
        matches!(self.era, Era::Modern(_))
    }

    fn stdin(&mut self, now: Instant, line: &str) {
        if matches!(self.era, Era::Legacy) {
            self.inner.handle_stdin_line(now, line);
            return;
        }
        let Ok(message) = serde_json::from_str::<Value>(line.trim()) else {
            // The core answers bad JSON the same in every era.
            self.inner.handle_stdin_line(now, line);
            return;
        };
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        let is_request = message.get("id").is_some() && !method.is_empty();
        if matches!(self.era, Era::Undecided) && is_request {
            let modern = method == "server/discover"
                || message.pointer(&meta_pointer(META_VERSION)) == Some(&json!(MODERN));
            if modern {
                self.start_modern(now, &message);
            } else {
                self.era = Era::Legacy;
                self.inner.handle_stdin_line(now, line);
                return;
            }
        }
        match &mut self.era {
            Era::Modern(_) if is_request => self.modern_request(now, message),
            Era::Modern(_) => self.modern_notification(now, message),
            _ => self.inner.handle_stdin_line(now, line),
        }
    }

    fn start_modern(&mut self, now: Instant, first: &Value) {
        let client_info = first
            .pointer(&meta_pointer(META_CLIENT_INFO))
            .cloned()
            .unwrap_or_else(|| json!({"name": "stdio client (MCP 2026-07-28)", "version": "?"}));
        self.era = Era::Modern(Modern::default());
        let init = json!({"jsonrpc": "2.0", "id": format!("{ID_PREFIX}initialize"), "method": "initialize",
            "params": {"protocolVersion": INNER_VERSION, "capabilities": {}, "clientInfo": client_info}});
        self.inner.handle_stdin_line(now, &init.to_string());
    }

    fn modern_request(&mut self, now: Instant, mut message: Value) {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let version = message.pointer(&meta_pointer(META_VERSION)).cloned();
        // server/discover is the probe: it may come without the envelope.
        if method != "server/discover" && version != Some(json!(MODERN)) {
            let requested = version.unwrap_or(Value::Null);
            return self.emit(json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": code::INVALID_PARAMS,
                "message": format!("unsupported protocol version {requested}: this server speaks {MODERN} per request (in `_meta` `{META_VERSION}`), or the older revisions after `initialize` on a new connection"),
                "data": {"supported": [MODERN], "requested": requested},
            }}));
        }
        if REMOVED.contains(&method.as_str()) || method == "initialize" {
            return self.emit(json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": code::METHOD_NOT_FOUND,
                "message": format!("`{method}` is not part of MCP {MODERN} (subscriptions/listen replaces resource subscriptions)"),
            }}));
        }
        strip_envelope(&mut message);
        let Era::Modern(m) = &mut self.era else {
            return;
        };
        if let Some(error) = &m.refused {
            let error = error.clone();
            return self.emit(json!({"jsonrpc": "2.0", "id": id, "error": error}));
        }
        if m.inner.is_none() {
            if m.held.len() >= HELD_MAX {
                return self.emit(json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": code::SERVER_BUSY,
                    "message": "too many requests while the session with the drone starts; retry",
                }}));
            }
            m.held.push_back(message);
            return;
        }
        self.dispatch(now, id, &method, message);
    }

    /// A request of the client, once the core's session is up.
    fn dispatch(&mut self, now: Instant, id: Value, method: &str, message: Value) {
        match method {
            "server/discover" => {
                let result = self.discover();
                self.reply(id, result);
            }
            "subscriptions/listen" => self.listen(now, id, &message),
            _ => self.inner.handle_stdin_line(now, &message.to_string()),
        }
    }

    fn discover(&self) -> Value {
        let Era::Modern(m) = &self.era else {
            return json!({});
        };
        let inner = m.inner.clone().unwrap_or_default();
        let mut capabilities = inner.get("capabilities").cloned().unwrap_or(json!({}));
        if let Value::Object(c) = &mut capabilities {
            // Logging's setLevel is gone; its notifications still come (deprecated).
            c.remove("logging");
            if let Some(Value::Object(r)) = c.get_mut("resources") {
                // Subscriptions are subscriptions/listen's now.
                r.remove("subscribe");
            }
        }
        let server_info = inner.get("serverInfo").cloned().unwrap_or(Value::Null);
        let mut result = json!({
            "resultType": "complete",
            "supportedVersions": [MODERN],
            "capabilities": capabilities,
            "serverInfo": server_info,
            "_meta": {META_SERVER_INFO: server_info},
        });
        if let Some(i) = inner.get("instructions") {
            result["instructions"] = i.clone();
        }
        result
    }

    fn listen(&mut self, now: Instant, id: Value, message: &Value) {
        let filter = message
            .pointer("/params/notifications")
            .cloned()
            .unwrap_or(json!({}));
        let Era::Modern(m) = &mut self.era else {
            return;
        };
        if m.listens.len() >= LISTENS_MAX {
            return self.emit(json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": code::SERVER_BUSY,
                "message": format!("at most {LISTENS_MAX} open subscriptions/listen; cancel one first"),
            }}));
        }
        let uris: BTreeSet<String> = filter
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let listen = Listen {
            id: id.clone(),
            tools: filter.get("toolsListChanged") == Some(&Value::Bool(true)),
            resources: filter.get("resourcesListChanged") == Some(&Value::Bool(true)),
            uris: uris.clone(),
        };
        let mut honored = Map::new();
        if listen.tools {
            honored.insert("toolsListChanged".into(), Value::Bool(true));
        }
        if listen.resources {
            honored.insert("resourcesListChanged".into(), Value::Bool(true));
        }
        if !uris.is_empty() {
            honored.insert("resourceSubscriptions".into(), json!(uris));
        }
        let already: BTreeSet<String> = m.listens.values().flat_map(|l| l.uris.clone()).collect();
        m.listens.insert(id.to_string(), listen);
        let mut to_subscribe = Vec::new();
        for uri in uris.difference(&already) {
            m.next_id += 1;
            to_subscribe.push((format!("{ID_PREFIX}subscribe:{}", m.next_id), uri.clone()));
        }
        // The acknowledgement is the first message carrying the subscription's id.
        self.emit(
            json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": honored, "_meta": {META_SUBSCRIPTION: id}}}),
        );
        for (ours, uri) in to_subscribe {
            let request = json!({"jsonrpc": "2.0", "id": ours, "method": "resources/subscribe", "params": {"uri": uri}});
            self.inner.handle_stdin_line(now, &request.to_string());
        }
    }

    fn modern_notification(&mut self, now: Instant, message: Value) {
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        match method {
            "notifications/cancelled" => {
                let Some(request) = message.pointer("/params/requestId") else {
                    return;
                };
                let Era::Modern(m) = &mut self.era else {
                    return;
                };
                if let Some(listen) = m.listens.remove(&request.to_string()) {
                    // The stream ends; URIs no other stream wants are unsubscribed.
                    let still: BTreeSet<String> =
                        m.listens.values().flat_map(|l| l.uris.clone()).collect();
                    let mut requests = Vec::new();
                    for uri in listen.uris.difference(&still) {
                        m.next_id += 1;
                        requests.push(json!({"jsonrpc": "2.0", "id": format!("{ID_PREFIX}unsubscribe:{}", m.next_id),
                            "method": "resources/unsubscribe", "params": {"uri": uri}}));
                    }
                    for r in requests {
                        self.inner.handle_stdin_line(now, &r.to_string());
                    }
                    return;
                }
                self.inner.handle_stdin_line(now, &message.to_string());
            }
            // Gone in 2026-07-28, and nothing to do with them here.
            "notifications/initialized" | "notifications/roots/list_changed" => {}
            _ => self.inner.handle_stdin_line(now, &message.to_string()),
        }
    }

    /// Everything the core asked for since the last call, translated.
    fn pump(&mut self, now: Instant) {
        while let Some(action) = self.inner.poll_action() {
            match action {
                Action::Stdout(line) if self.is_modern() => self.core_output(now, &line),
                other => self.actions.push_back(other),
            }
        }
    }

    fn core_output(&mut self, now: Instant, line: &str) {
        let Ok(mut message) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        match (method, id) {
            (None, Some(id)) => {
                let ours = id.as_str().filter(|i| i.starts_with(ID_PREFIX));
                match ours {
                    Some(i) if i == format!("{ID_PREFIX}initialize") => {
                        self.inner_initialized(now, &message)
                    }
                    Some(_) => {
                        if let Some(e) = message.get("error") {
                            tracing::warn!("the session refused a subscription change: {e}");
                        }
                    }
                    None => {
                        if let Some(Value::Object(result)) = message.get_mut("result") {
                            result
                                .entry("resultType")
                                .or_insert(Value::String("complete".into()));
                        }
                        self.emit(message);
                    }
                }
            }
            (Some(method), Some(id)) => {
                // Server→client requests are gone in 2026-07-28 (MRTR replaced them); the
                // session underneath asked with no client capabilities, so only a ping comes.
                let answer = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code::METHOD_NOT_FOUND,
                        "message": format!("the stdio client speaks {MODERN}: no `{method}`")}})
                };
                self.inner.handle_stdin_line(now, &answer.to_string());
            }
            (Some(method), None) => self.core_notification(&method, message),
            (None, None) => self.emit(message),
        }
    }

    fn inner_initialized(&mut self, now: Instant, message: &Value) {
        let Era::Modern(m) = &mut self.era else {
            return;
        };
        if let Some(error) = message.get("error") {
            m.refused = Some(error.clone());
        } else {
            m.inner = Some(message.get("result").cloned().unwrap_or(json!({})));
        }
        let held: Vec<Value> = m.held.drain(..).collect();
        if m.refused.is_none() {
            let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            self.inner.handle_stdin_line(now, &initialized.to_string());
        }
        for message in held {
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            let method = message
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let refused = match &self.era {
                Era::Modern(m) => m.refused.clone(),
                _ => None,
            };
            match refused {
                Some(error) => self.emit(json!({"jsonrpc": "2.0", "id": id, "error": error})),
                None => self.dispatch(now, id, &method, message),
            }
        }
    }

    fn core_notification(&mut self, method: &str, message: Value) {
        let Era::Modern(m) = &self.era else {
            return;
        };
        let uri = message
            .pointer("/params/uri")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let targets: Vec<Value> = m
            .listens
            .values()
            .filter(|l| match method {
                "notifications/tools/list_changed" => l.tools,
                "notifications/resources/list_changed" => l.resources,
                "notifications/resources/updated" => {
                    uri.as_ref().is_some_and(|u| l.uris.contains(u))
                }
                _ => false,
            })
            .map(|l| l.id.clone())
            .collect();
        match method {
            "notifications/tools/list_changed"
            | "notifications/resources/list_changed"
            | "notifications/resources/updated" => {
                // Only on the streams that asked for it, tagged with each stream's id.
                for id in targets {
                    let mut copy = message.clone();
                    let params = copy
                        .as_object_mut()
                        .map(|o| o.entry("params").or_insert_with(|| json!({})));
                    if let Some(Value::Object(p)) = params {
                        let meta = p.entry("_meta").or_insert_with(|| json!({}));
                        if let Value::Object(meta) = meta {
                            meta.insert(META_SUBSCRIPTION.into(), id);
                        }
                    }
                    self.emit(copy);
                }
            }
            // Progress of a request, and log messages (deprecated, still delivered).
            _ => self.emit(message),
        }
    }

    fn reply(&mut self, id: Value, result: Value) {
        self.emit(json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    fn emit(&mut self, message: Value) {
        self.actions.push_back(Action::Stdout(message.to_string()));
    }
}

impl GroundCore for EraAdapter {
    fn handle_connected(&mut self, now: Instant, filters: Option<Vec<String>>) {
        self.inner.handle_connected(now, filters);
        self.pump(now);
    }
    fn handle_disconnected(&mut self, now: Instant) {
        self.inner.handle_disconnected(now);
        self.pump(now);
    }
    fn handle_taken_over(&mut self, now: Instant) {
        self.inner.handle_taken_over(now);
        self.pump(now);
    }
    fn handle_stdin_line(&mut self, now: Instant, line: &str) {
        self.stdin(now, line);
        self.pump(now);
    }
    fn handle_mqtt_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.inner.handle_mqtt_message(now, topic, payload);
        self.pump(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.pump(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn serve_console(&mut self, now: Instant) {
        self.inner.serve_console(now);
        self.pump(now);
    }
    fn handle_console_request(&mut self, now: Instant, token: u64, method: &str, params: Value) {
        self.inner
            .handle_console_request(now, token, method, params);
        self.pump(now);
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn summary(&self) -> String {
        let era = match &self.era {
            Era::Modern(_) => format!("stdio client on MCP {MODERN}"),
            Era::Legacy => "stdio client with initialize".into(),
            Era::Undecided => "no stdio request".into(),
        };
        format!("{}; {era}", self.inner.summary())
    }
}

/// `/params/_meta/KEY` as a JSON pointer (the keys hold `/`, escaped as `~1`).
fn meta_pointer(key: &str) -> String {
    format!(
        "/params/_meta/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

/// Removes the 2026-07-28 envelope from a request's `_meta` (the session underneath knows
/// the version and the client already), and `_meta` itself when nothing else is left.
fn strip_envelope(message: &mut Value) {
    let Some(Value::Object(params)) = message.get_mut("params") else {
        return;
    };
    let empty = match params.get_mut("_meta") {
        Some(Value::Object(meta)) => {
            meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
            meta.is_empty()
        }
        _ => false,
    };
    if empty {
        params.remove("_meta");
    }
}

#[cfg(test)]
#[path = "era_tests.rs"]
mod tests;
