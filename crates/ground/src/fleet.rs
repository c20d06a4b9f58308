//! Fleet mode of `flight-companion ground` (sans-IO): every drone whose server name matches
//! the configured patterns, served to one stdio MCP client as one MCP server.
//!
//! Each drone gets its own single-drone [`Bridge`] (the same core as `ground` without
//! `--fleet`), fed by this core as if it were that bridge's stdio client: the bridge keeps
//! doing the transport's work per drone (the initialize handshake and its replay after the
//! drone comes back, idle timeouts moved by progress, late answers, the taken-over and
//! quick-drop rules), and this core does only what a fleet adds:
//! - discovery: server presence filtered by the patterns (`fleet.server_names`);
//! - one MCP server on stdio: its own `initialize` answer, `tools/list` as the union of the
//!   drones' tools with a `drone` argument added (required unless `fleet.default_drone`),
//!   resources under per-drone URIs (`{uri}?drone={name}`), `list_drones` and
//!   `emergency_stop_all`;
//! - routing: every request to a drone gets an id of this core's own ([`FLEET_ID_PREFIX`]),
//!   and its answer goes back under the client's id; a call reaches exactly the drone named
//!   (or the default one), never another, and is refused with the reason when that drone is
//!   unknown, offline or without a session;
//! - `notifications/tools/list_changed` and `notifications/resources/list_changed` when the
//!   union changes (a drone comes, goes, or changes its own lists).
//!
//! `emergency_stop_all` hands every online drone's `emergency_stop` to the shell in one batch
//! of actions, before waiting for any answer: no drone's stop waits on another's.
//!
//! Call order is the single-drone bridge's (see [`crate::bridge`]); the actions are
//! its [`Action`]s. The MQTT side of every drone session uses the one connection and client
//! id of this process.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::bridge::{Action, Bridge, BridgeSettings, LOGGER};
use crate::config::{GroundConfig, server_name_matches};
use flight_companion_core::mcp::transport::{self, Topics, code};

/// Prefix of the ids of the requests this core sends to a drone's bridge.
pub const FLEET_ID_PREFIX: &str = "fc-fleet:";
/// Prefix of the ids of the web console's requests (`ground::console`): their answers are
/// [`Action::Console`], never stdout.
pub const CONSOLE_ID_PREFIX: &str = "fc-console:";
/// The console's own method: the drones known, answered by this core without a drone.
pub const CONSOLE_DRONES: &str = "console/drones";
/// The revision of the drone sessions the console opens when no stdio client has (the
/// transport's own).
const CONSOLE_VERSION: &str = "2025-11-25";
/// The fleet's own tool listing the drones.
pub const LIST_DRONES: &str = "list_drones";
/// The fleet's own tool stopping every drone.
pub const STOP_ALL: &str = "emergency_stop_all";
/// The argument naming the drone, added to every drone tool.
pub const DRONE_ARG: &str = "drone";
/// The query parameter naming the drone in a fleet resource URI.
const DRONE_QUERY: &str = "drone=";
/// The MCP revisions the stdio side speaks with `initialize` (oldest first).
const VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Structured tool output exists from this revision on.
const STRUCTURED_FROM: &str = "2025-06-18";
/// Drones remembered at most (online or not): presence under the patterns beyond this is
/// dropped and counted, so a flood of names cannot grow the table without bound.
pub const DRONES_MAX: usize = 256;

/// What the core needs: the single-drone bridge's settings (client id, topic roots, timeouts,
/// token) used for every drone, the patterns, the default drone, the wait of the fleet tools.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub bridge: BridgeSettings,
    pub patterns: Vec<String>,
    pub default_drone: Option<String>,
    /// How long `list_drones` and `emergency_stop_all` wait for each drone.
    pub answer_timeout: Duration,
    /// The version the fleet reports as its `serverInfo` and its own `clientInfo`: the
    /// binary's, which only the daemon's package knows (its build script records the commit).
    pub version: String,
}

impl FleetSettings {
    pub fn from_config(config: &GroundConfig, bridge: BridgeSettings, version: &str) -> Self {
        Self {
            bridge,
            patterns: config.fleet.server_names.clone(),
            default_drone: config.fleet.default_drone.clone(),
            answer_timeout: Duration::from_millis(config.fleet.answer_timeout_ms),
            version: version.to_owned(),
        }
    }
}

/// Counters for the log at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetCounters {
    pub stdin_refused: u64,
    pub mqtt_dropped: u64,
    pub calls_refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DroneSession {
    /// Not asked yet (no client, or the drone was never online since).
    None,
    /// Our `initialize` went to its bridge.
    Starting,
    Ready,
    /// The drone refused the session (the reason).
    Refused(String),
}

#[derive(Debug)]
struct DroneEntry {
    bridge: Bridge,
    /// Server ids of its instances online.
    instances: BTreeSet<String>,
    session: DroneSession,
    tools: Vec<Value>,
    /// Whether its `tools/list` has answered at least once: until then an
    /// empty `tools` means "not known yet", not "offers nothing".
    tools_listed: bool,
    resources: Vec<Value>,
}

impl DroneEntry {
    fn online(&self) -> bool {
        !self.instances.is_empty()
    }
}

#[derive(Debug)]
enum Route {
    /// The answer goes to the stdio client under its id.
    Client {
        id: Value,
    },
    /// `resources/read`: the same, with the contents' URIs made the fleet's.
    ResourceRead {
        id: Value,
    },
    Init,
    ToolsList,
    ResourcesList,
    /// One drone's part of a fleet tool.
    Part {
        aggregate: u64,
    },
    /// The answer is not needed (a fan-out of `logging/setLevel`).
    Quiet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FleetTool {
    ListDrones,
    StopAll,
}

#[derive(Debug)]
struct Aggregate {
    id: Value,
    tool: FleetTool,
    deadline: Instant,
    /// Drone name → its answer (`None` while waiting).
    parts: BTreeMap<String, Option<Value>>,
}

/// The fleet core. See the module documentation.
#[derive(Debug)]
pub struct Fleet {
    settings: FleetSettings,
    actions: VecDeque<Action>,
    connected: bool,
    stopped: bool,
    drones: BTreeMap<String, DroneEntry>,
    /// The negotiated revision once the stdio client's `initialize` was answered.
    client_version: Option<String>,
    client_info: Value,
    routes: BTreeMap<String, (String, Route)>,
    aggregates: BTreeMap<u64, Aggregate>,
    next_id: u64,
    log_level: Option<Value>,
    /// The tool and resource lists last shown (or showable) to the client, to notice changes.
    tools_shown: String,
    resources_shown: String,
    counters: FleetCounters,
    /// The web console is served: drone sessions are opened without a stdio client.
    console: bool,
}

impl Fleet {
    pub fn new(settings: FleetSettings) -> Self {
        Self {
            settings,
            actions: VecDeque::new(),
            connected: false,
            stopped: false,
            drones: BTreeMap::new(),
            client_version: None,
            client_info: Value::Null,
            routes: BTreeMap::new(),
            aggregates: BTreeMap::new(),
            next_id: 0,
            log_level: None,
            tools_shown: String::new(),
            resources_shown: String::new(),
            counters: FleetCounters::default(),
            console: false,
        }
    }

    pub fn counters(&self) -> &FleetCounters {
        &self.counters
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let bridges = self.drones.values().filter_map(|d| d.bridge.poll_timeout());
        let aggregates = self.aggregates.values().map(|a| a.deadline);
        bridges.chain(aggregates).min()
    }

    pub fn handle_connected(&mut self, now: Instant, server_name_filters: Option<Vec<String>>) {
        if self.stopped {
            return;
        }
        self.connected = true;
        // The broker's filters, when it sends some, bound what is asked (the spec's MUST);
        // the patterns still decide which drones are served.
        let filters = match server_name_filters {
            Some(f) if !f.is_empty() => f,
            _ => self.settings.patterns.clone(),
        };
        for filter in filters {
            self.actions.push_back(Action::Subscribe {
                topic: transport::server_presence_filter(
                    &self.settings.bridge.server_topic_root,
                    &filter,
                ),
                no_local: false,
            });
        }
        for d in self.drones.values_mut() {
            d.instances.clear();
            d.bridge.handle_connected(now, None);
        }
        self.pump(now);
    }

    pub fn handle_disconnected(&mut self, now: Instant) {
        self.connected = false;
        for d in self.drones.values_mut() {
            d.instances.clear();
            d.bridge.handle_disconnected(now);
        }
        self.pump(now);
        self.lists_changed();
    }

    pub fn handle_taken_over(&mut self, now: Instant) {
        for d in self.drones.values_mut() {
            d.bridge.handle_taken_over();
        }
        self.pump(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .aggregates
            .iter()
            .filter(|(_, a)| now >= a.deadline)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.finish(key);
        }
        self.pump(now);
    }

    pub fn handle_mqtt_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        let root = self.settings.bridge.server_topic_root.clone();
        if let Some(presence) = transport::parse_server_presence(&root, topic) {
            match presence {
                Ok((id, name)) => self.presence(now, id, name, topic, payload),
                Err(_) => self.drop_mqtt(topic, "presence topic without server-id and name"),
            }
        } else if let Some(name) = self.drone_of_topic(topic) {
            if let Some(d) = self.drones.get_mut(&name) {
                d.bridge.handle_mqtt_message(now, topic, payload);
            }
        } else {
            self.drop_mqtt(topic, "not a topic of any drone session");
        }
        self.pump(now);
    }

    pub fn handle_stdin_line(&mut self, now: Instant, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let max = self.settings.bridge.message_bytes_max;
        if line.len() > max {
            self.refuse(
                Value::Null,
                code::INVALID_REQUEST,
                format!(
                    "message of {} bytes exceeds the bridge's limit of {max} bytes (ground.message_bytes_max)",
                    line.len()
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
        let id = message
            .get("id")
            .filter(|i| i.is_string() || i.is_i64() || i.is_u64())
            .cloned();
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            self.refuse(
                id.unwrap_or(Value::Null),
                code::INVALID_REQUEST,
                "not a JSON-RPC 2.0 message (one object per line with \"jsonrpc\":\"2.0\"; batches are not supported)".into(),
            );
            return;
        }
        match (id, method) {
            (Some(id), Some(method)) => self.client_request(now, id, &method, message),
            (None, Some(method)) => self.client_notification(now, &method, &message),
            // Answers to requests: this server sends the client none.
            _ => tracing::debug!("dropped a response from the stdio client"),
        }
        self.pump(now);
    }

    // --- the web console (`ground::console`) ---

    /// Serves the web console from now on: every online drone gets a session even before
    /// (or without) a stdio client, so the console can watch and stop them.
    pub fn serve_console(&mut self, now: Instant) {
        self.console = true;
        let names: Vec<String> = self.drones.keys().cloned().collect();
        for name in names {
            self.start_session(now, &name);
        }
        self.pump(now);
    }

    /// A request of the web console, under its `token`; the answer is an
    /// [`Action::Console`] with the id `{CONSOLE_ID_PREFIX}{token}`. Only what the console
    /// needs: `tools/call` and `resources/read` exactly as a stdio client's (the same
    /// sessions, tools and refusals), and [`CONSOLE_DRONES`].
    pub fn handle_console_request(
        &mut self,
        now: Instant,
        token: u64,
        method: &str,
        params: Value,
    ) {
        let id = Value::String(format!("{CONSOLE_ID_PREFIX}{token}"));
        match method {
            "tools/call" => self.call_tool(now, id, params),
            "resources/read" => self.resource_request(now, id, method, params),
            CONSOLE_DRONES => {
                let drones: Vec<Value> = self
                    .drones
                    .iter()
                    .map(|(name, d)| {
                        json!({"name": name, "online": d.online(), "session": session_name(&d.session),
                            "tools": d.tools.iter().filter_map(|t| t.get("name").cloned()).collect::<Vec<_>>(),
                            "resources": d.resources.iter().filter_map(|r| r.get("uri").cloned()).collect::<Vec<_>>()})
                    })
                    .collect();
                self.reply(id, json!({"drones": drones}));
            }
            _ => self.reply_error(
                id,
                code::METHOD_NOT_FOUND,
                format!("the console does not send `{method}`"),
            ),
        }
        self.pump(now);
    }

    // --- the stdio client ---

    fn client_request(&mut self, now: Instant, id: Value, method: &str, message: Value) {
        let params = message.get("params").cloned().unwrap_or(json!({}));
        if method == "ping" {
            self.reply(id, json!({}));
            return;
        }
        if method == "initialize" {
            self.initialize(now, id, &params);
            return;
        }
        if self.client_version.is_none() {
            self.refuse(
                id,
                code::INVALID_REQUEST,
                format!("`{method}` before the session is initialized: send `initialize` first"),
            );
            return;
        }
        match method {
            "tools/list" => {
                let tools = self.merged_tools();
                self.tools_shown = Value::Array(tools.clone()).to_string();
                self.reply(id, json!({"tools": tools}));
            }
            "tools/call" => self.call_tool(now, id, params),
            "resources/list" => {
                let resources = self.merged_resources();
                self.resources_shown = Value::Array(resources.clone()).to_string();
                self.reply(id, json!({"resources": resources}));
            }
            "resources/templates/list" => self.reply(id, json!({"resourceTemplates": []})),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.resource_request(now, id, method, params)
            }
            "logging/setLevel" => {
                self.log_level = Some(params.clone());
                let ready: Vec<String> = self.ready_drones();
                for name in ready {
                    self.send(now, &name, Route::Quiet, method, params.clone());
                }
                self.reply(id, json!({}));
            }
            _ => self.refuse(
                id,
                code::METHOD_NOT_FOUND,
                format!("method `{method}` is not offered by the fleet bridge"),
            ),
        }
    }

    fn client_notification(&mut self, now: Instant, method: &str, message: &Value) {
        if method != "notifications/cancelled" {
            return;
        }
        let Some(request_id) = message.pointer("/params/requestId") else {
            return;
        };
        let found = self
            .routes
            .iter()
            .find_map(|(ours, (drone, route))| match route {
                Route::Client { id } | Route::ResourceRead { id } if id == request_id => {
                    Some((ours.clone(), drone.clone()))
                }
                _ => None,
            });
        if let Some((ours, drone)) = found {
            self.routes.remove(&ours);
            let mut params = message.get("params").cloned().unwrap_or(json!({}));
            params["requestId"] = Value::String(ours);
            let line = json!({"jsonrpc": "2.0", "method": method, "params": params});
            if let Some(d) = self.drones.get_mut(&drone) {
                d.bridge.handle_stdin_line(now, &line.to_string());
            }
        }
    }

    fn initialize(&mut self, now: Instant, id: Value, params: &Value) {
        if self.client_version.is_some() {
            self.refuse(
                id,
                code::INVALID_REQUEST,
                "already initialized: `initialize` is sent once per stdio session".into(),
            );
            return;
        }
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if VERSIONS.contains(&asked) {
            asked
        } else {
            VERSIONS[VERSIONS.len() - 1]
        };
        self.client_version = Some(version.to_owned());
        self.client_info = params.get("clientInfo").cloned().unwrap_or(Value::Null);
        let patterns = self.settings.patterns.join(", ");
        self.reply(
            id,
            json!({
                "protocolVersion": version,
                "capabilities": {
                    "tools": {"listChanged": true},
                    "resources": {"subscribe": true, "listChanged": true},
                    "logging": {},
                },
                "serverInfo": {"name": "flight-companion-fleet", "version": self.settings.version},
                "instructions": format!(
                    "A fleet of drones (server names matching {patterns}). Call list_drones \
                     first: it names every drone, online or not, with its state. Every other \
                     tool is a drone's own tool with an added `drone` argument naming the \
                     drone it goes to. emergency_stop_all stops every online drone at once."
                ),
            }),
        );
        let names: Vec<String> = self.drones.keys().cloned().collect();
        for name in names {
            self.start_session(now, &name);
        }
        self.tools_shown = Value::Array(self.merged_tools()).to_string();
        self.resources_shown = Value::Array(self.merged_resources()).to_string();
    }

    fn call_tool(&mut self, now: Instant, id: Value, mut params: Value) {
        let Some(tool) = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            self.refuse(id, code::INVALID_PARAMS, "tools/call needs `name`".into());
            return;
        };
        let mut arguments = match params.get_mut("arguments").map(Value::take) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                self.refuse(
                    id,
                    code::INVALID_PARAMS,
                    "`arguments` must be an object".into(),
                );
                return;
            }
        };
        match tool.as_str() {
            LIST_DRONES => return self.start_aggregate(now, id, FleetTool::ListDrones, &arguments),
            STOP_ALL => return self.start_aggregate(now, id, FleetTool::StopAll, &arguments),
            _ => {}
        }
        let named = arguments.remove(DRONE_ARG);
        let drone = match named {
            Some(Value::String(s)) => Some(s),
            None => self.settings.default_drone.clone(),
            Some(other) => {
                return self.tool_refusal(
                    id,
                    format!("`{DRONE_ARG}` must be a drone's server name (a string), got {other}"),
                );
            }
        };
        let Some(drone) = drone else {
            let message = format!(
                "`{tool}` needs the `{DRONE_ARG}` argument: the server name of the drone to call. Known drones: {}",
                self.known_drones()
            );
            return self.tool_refusal(id, message);
        };
        if let Err(message) = self.callable(&drone, &tool) {
            if message.is_empty() {
                self.refuse(
                    id,
                    code::INVALID_PARAMS,
                    format!("unknown tool `{tool}`: tools/list names the tools of the fleet"),
                );
            } else {
                self.tool_refusal(id, message);
            }
            return;
        }
        params["arguments"] = Value::Object(arguments);
        self.send(now, &drone, Route::Client { id }, "tools/call", params);
    }

    /// Whether `tool` may be sent to `drone` now; the refusal otherwise (empty: no drone has
    /// such a tool).
    fn callable(&self, drone: &str, tool: &str) -> Result<(), String> {
        let Some(d) = self.drones.get(drone) else {
            return Err(format!(
                "unknown drone `{drone}`: no drone with that server name was seen. Known drones: {}",
                self.known_drones()
            ));
        };
        if !d.online() {
            return Err(format!(
                "drone `{drone}` is offline (its presence is gone from the broker): nothing was sent. list_drones shows which drones are online"
            ));
        }
        match &d.session {
            // The session is up but its tool list has not answered: the
            // tool may well exist, so the caller is told to retry rather
            // than that the tool is unknown.
            DroneSession::Ready if !d.tools_listed => {
                return Err(format!(
                    "drone `{drone}`'s session is ready but its tool list has not arrived yet: retry in a moment"
                ));
            }
            DroneSession::Ready => {}
            DroneSession::Refused(why) => {
                return Err(format!(
                    "drone `{drone}` refused this bridge's session: {why}"
                ));
            }
            DroneSession::None | DroneSession::Starting => {
                return Err(format!(
                    "drone `{drone}` is online but its session is still starting: retry in a moment"
                ));
            }
        }
        if !d.tools.iter().any(|t| t["name"] == tool) {
            let anywhere = self
                .drones
                .values()
                .any(|o| o.tools.iter().any(|t| t["name"] == tool));
            if !anywhere {
                return Err(String::new());
            }
            return Err(format!(
                "drone `{drone}` does not offer `{tool}` to this client"
            ));
        }
        Ok(())
    }

    fn resource_request(&mut self, now: Instant, id: Value, method: &str, mut params: Value) {
        let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
        let Some((inner, drone)) = split_fleet_uri(uri) else {
            self.refuse(
                id,
                code::INVALID_PARAMS,
                format!("`{uri}` is not a fleet resource URI (`{{uri}}?drone={{server name}}`, as resources/list gives them)"),
            );
            return;
        };
        let offline = match self.drones.get(&drone) {
            None => Some(format!("unknown drone `{drone}`")),
            Some(d) if !d.online() => Some(format!("drone `{drone}` is offline")),
            Some(d) if d.session != DroneSession::Ready => {
                Some(format!("drone `{drone}` has no session yet"))
            }
            Some(_) => None,
        };
        if let Some(message) = offline {
            self.counters.calls_refused += 1;
            self.reply_error(id, code::DRONE_UNAVAILABLE, message);
            return;
        }
        params["uri"] = Value::String(inner);
        let route = if method == "resources/read" {
            Route::ResourceRead { id }
        } else {
            Route::Client { id }
        };
        self.send(now, &drone, route, method, params);
    }

    // --- discovery ---

    fn presence(&mut self, now: Instant, id: &str, name: &str, topic: &str, payload: &[u8]) {
        if !self
            .settings
            .patterns
            .iter()
            .any(|p| server_name_matches(p, name))
        {
            self.drop_mqtt(topic, "a server name outside fleet.server_names");
            return;
        }
        if !payload.is_empty() && !transport::is_server_online(payload) {
            self.drop_mqtt(
                topic,
                "presence payload is not `notifications/server/online`",
            );
            return;
        }
        if !self.drones.contains_key(name) {
            if payload.is_empty() {
                return;
            }
            if self.drones.len() >= DRONES_MAX {
                self.drop_mqtt(
                    topic,
                    "more drones than the fleet bridge keeps (DRONES_MAX)",
                );
                return;
            }
            let mut settings = self.settings.bridge.clone();
            settings.server_name = Some(name.to_owned());
            // The fleet already collected the presence: no settling per drone.
            settings.presence_settle = Duration::ZERO;
            let mut bridge = Bridge::new(settings);
            if self.connected {
                bridge.handle_connected(now, None);
            }
            self.drones.insert(
                name.to_owned(),
                DroneEntry {
                    bridge,
                    instances: BTreeSet::new(),
                    session: DroneSession::None,
                    tools: Vec::new(),
                    tools_listed: false,
                    resources: Vec::new(),
                },
            );
        }
        let Some(d) = self.drones.get_mut(name) else {
            return;
        };
        let was_online = d.online();
        if payload.is_empty() {
            d.instances.remove(id);
        } else {
            d.instances.insert(id.to_owned());
        }
        let online = d.online();
        d.bridge.handle_mqtt_message(now, topic, payload);
        if online != was_online {
            tracing::info!("drone {name} {}", if online { "online" } else { "offline" });
            if online {
                let refresh = d.session == DroneSession::Ready;
                self.start_session(now, name);
                if refresh {
                    // Back from a restart: its tools may be new.
                    self.send(now, name, Route::ToolsList, "tools/list", json!({}));
                    self.send(now, name, Route::ResourcesList, "resources/list", json!({}));
                }
            }
            self.lists_changed();
        }
    }

    /// Asks a drone's bridge for a session, once the client is initialized and the drone is
    /// online; its bridge then keeps it (re-initializing after the drone comes back).
    fn start_session(&mut self, now: Instant, name: &str) {
        let version = match (&self.client_version, self.console) {
            (Some(v), _) => v.clone(),
            (None, true) => CONSOLE_VERSION.to_owned(),
            (None, false) => return,
        };
        let client_info = if self.client_info.is_null() {
            json!({"name": "flight-companion ground (fleet)", "version": self.settings.version})
        } else {
            self.client_info.clone()
        };
        let Some(d) = self.drones.get_mut(name) else {
            return;
        };
        if !d.online() || matches!(d.session, DroneSession::Starting | DroneSession::Ready) {
            return;
        }
        d.session = DroneSession::Starting;
        // No client capabilities: the fleet answers no server requests but `ping`.
        let params =
            json!({"protocolVersion": version, "capabilities": {}, "clientInfo": client_info});
        self.send(now, name, Route::Init, "initialize", params);
    }

    /// The drone whose session topic (RPC or capability) this is, by the transport's builders.
    fn drone_of_topic(&self, topic: &str) -> Option<String> {
        let s = &self.settings.bridge;
        self.drones.iter().find_map(|(name, d)| {
            d.instances
                .iter()
                .any(|id| {
                    let t = Topics {
                        server_root: s.server_topic_root.clone(),
                        client_root: s.client_topic_root.clone(),
                        rpc_root: s.rpc_topic_root.clone(),
                        server_id: id.clone(),
                        server_name: name.clone(),
                    };
                    t.rpc(&s.client_id) == topic || t.capability() == topic
                })
                .then(|| name.clone())
        })
    }

    // --- the drones' bridges ---

    /// Sends a request to a drone's bridge under an id of ours.
    fn send(&mut self, now: Instant, drone: &str, route: Route, method: &str, params: Value) {
        self.next_id += 1;
        let id = format!("{FLEET_ID_PREFIX}{}", self.next_id);
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let Some(d) = self.drones.get_mut(drone) else {
            return;
        };
        self.routes.insert(id, (drone.to_owned(), route));
        d.bridge.handle_stdin_line(now, &line.to_string());
    }

    /// Carries out what every drone's bridge asks, until none asks anything.
    fn pump(&mut self, now: Instant) {
        let names: Vec<String> = self.drones.keys().cloned().collect();
        for name in names {
            while let Some(d) = self.drones.get_mut(&name) {
                if d.bridge.poll_timeout().is_some_and(|t| t <= now) {
                    d.bridge.handle_timeout(now);
                }
                let actions: Vec<Action> = std::iter::from_fn(|| d.bridge.poll_action()).collect();
                if actions.is_empty() {
                    break;
                }
                for action in actions {
                    self.bridge_action(now, &name, action);
                }
            }
        }
    }

    fn bridge_action(&mut self, now: Instant, name: &str, action: Action) {
        match action {
            Action::Subscribe { topic, .. }
                if topic
                    == transport::server_presence_filter(
                        &self.settings.bridge.server_topic_root,
                        name,
                    ) =>
            {
                // The fleet's own presence subscriptions cover it; a second, overlapping
                // one could make the broker deliver every presence twice.
            }
            Action::StopConnection => {
                if !self.stopped {
                    self.stopped = true;
                    self.connected = false;
                    self.actions.push_back(Action::StopConnection);
                }
            }
            Action::Stdout(line) => self.drone_output(now, name, &line),
            other => self.actions.push_back(other),
        }
    }

    /// A message a drone's bridge wrote for its "stdio client", this core.
    fn drone_output(&mut self, now: Instant, name: &str, line: &str) {
        let Ok(mut message) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        match (method, id) {
            (Some(method), Some(id)) => {
                // A request from the drone: the fleet answers `ping` and nothing else.
                let answer = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id, "error": {
                        "code": code::METHOD_NOT_FOUND,
                        "message": format!("the fleet bridge does not answer `{method}`"),
                    }})
                };
                if let Some(d) = self.drones.get_mut(name) {
                    d.bridge.handle_stdin_line(now, &answer.to_string());
                }
            }
            (Some(method), None) => self.drone_notification(now, name, &method, message),
            (None, Some(id)) => {
                let Some((_, route)) = id.as_str().and_then(|i| self.routes.remove(i)) else {
                    tracing::debug!("drone {name}: an answer to no request of the fleet");
                    return;
                };
                self.drone_answer(now, name, route, &mut message);
            }
            (None, None) => {
                // An error without an id (the bridge refused a line of ours): a bug here.
                tracing::warn!("drone {name}'s bridge refused a message of the fleet: {line}");
            }
        }
    }

    fn drone_answer(&mut self, now: Instant, name: &str, route: Route, message: &mut Value) {
        let error = message.get("error").cloned();
        match route {
            Route::Client { id } => {
                message["id"] = id;
                self.emit(message);
            }
            Route::ResourceRead { id } => {
                message["id"] = id;
                if let Some(Value::Array(contents)) = message.pointer_mut("/result/contents") {
                    for c in contents {
                        if let Some(uri) = c.get("uri").and_then(Value::as_str) {
                            c["uri"] = Value::String(fleet_uri(uri, name));
                        }
                    }
                }
                self.emit(message);
            }
            Route::Init => self.drone_initialized(now, name, error),
            Route::ToolsList | Route::ResourcesList => {
                let (key, list) = match route {
                    Route::ToolsList => ("tools", true),
                    _ => ("resources", false),
                };
                let items = match message.pointer(&format!("/result/{key}")) {
                    Some(Value::Array(items)) => items.clone(),
                    _ => {
                        tracing::warn!("drone {name} did not list its {key}: {message}");
                        return;
                    }
                };
                if let Some(d) = self.drones.get_mut(name) {
                    if list {
                        d.tools = items;
                        d.tools_listed = true;
                    } else {
                        d.resources = items;
                    }
                }
                self.lists_changed();
            }
            Route::Part { aggregate } => {
                let done = self.aggregates.get_mut(&aggregate).is_some_and(|a| {
                    if let Some(part) = a.parts.get_mut(name) {
                        *part = Some(message.clone());
                    }
                    a.parts.values().all(Option::is_some)
                });
                if done {
                    self.finish(aggregate);
                }
            }
            Route::Quiet => {
                if let Some(e) = error {
                    tracing::warn!("drone {name} refused a request of the fleet: {e}");
                }
            }
        }
    }

    fn drone_initialized(&mut self, now: Instant, name: &str, error: Option<Value>) {
        let Some(d) = self.drones.get_mut(name) else {
            return;
        };
        if let Some(error) = error {
            let why = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_owned();
            tracing::warn!("drone {name} refused the fleet's session: {why}");
            d.session = DroneSession::Refused(why.clone());
            self.notify(
                "warning",
                format!("drone {name} refused this bridge's session: {why}"),
            );
            return;
        }
        d.session = DroneSession::Ready;
        tracing::info!("drone {name}: session ready");
        self.send(now, name, Route::ToolsList, "tools/list", json!({}));
        self.send(now, name, Route::ResourcesList, "resources/list", json!({}));
        if let Some(level) = self.log_level.clone() {
            self.send(now, name, Route::Quiet, "logging/setLevel", level);
        }
    }

    fn drone_notification(&mut self, now: Instant, name: &str, method: &str, mut message: Value) {
        let ready = self
            .drones
            .get(name)
            .is_some_and(|d| d.session == DroneSession::Ready);
        match method {
            "notifications/progress" => self.emit(&message),
            "notifications/message" => {
                let logger = message
                    .pointer("/params/logger")
                    .and_then(Value::as_str)
                    .unwrap_or(LOGGER)
                    .to_owned();
                message["params"]["logger"] = Value::String(format!("{name}: {logger}"));
                if self.client_version.is_some() {
                    self.emit(&message);
                }
            }
            "notifications/tools/list_changed" if ready => {
                self.send(now, name, Route::ToolsList, "tools/list", json!({}));
            }
            "notifications/resources/list_changed" if ready => {
                self.send(now, name, Route::ResourcesList, "resources/list", json!({}));
            }
            "notifications/resources/updated" => {
                if let Some(uri) = message.pointer("/params/uri").and_then(Value::as_str) {
                    message["params"]["uri"] = Value::String(fleet_uri(uri, name));
                    self.emit(&message);
                }
            }
            _ => tracing::debug!("drone {name}: `{method}` not passed on"),
        }
    }

    // --- the fleet's own tools ---

    fn start_aggregate(
        &mut self,
        now: Instant,
        id: Value,
        tool: FleetTool,
        arguments: &Map<String, Value>,
    ) {
        let allowed: &[&str] = match tool {
            FleetTool::ListDrones => &[],
            FleetTool::StopAll => &["reason"],
        };
        if let Some(extra) = arguments.keys().find(|k| !allowed.contains(&k.as_str())) {
            let name = match tool {
                FleetTool::ListDrones => LIST_DRONES,
                FleetTool::StopAll => STOP_ALL,
            };
            return self.tool_refusal(id, format!("`{name}` has no argument `{extra}`"));
        }
        let reason = arguments
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("emergency_stop_all from the fleet bridge")
            .to_owned();
        self.next_id += 1;
        let key = self.next_id;
        let asked: Vec<String> = self.ready_drones();
        self.aggregates.insert(
            key,
            Aggregate {
                id,
                tool,
                deadline: now + self.settings.answer_timeout,
                parts: asked.iter().map(|n| (n.clone(), None)).collect(),
            },
        );
        // Every drone's request goes out in this one batch of actions, before any answer.
        for name in &asked {
            let params = match tool {
                FleetTool::ListDrones => json!({"name": "get_status", "arguments": {}}),
                FleetTool::StopAll => {
                    json!({"name": "emergency_stop", "arguments": {"reason": reason}})
                }
            };
            self.send(
                now,
                name,
                Route::Part { aggregate: key },
                "tools/call",
                params,
            );
        }
        if asked.is_empty() {
            self.finish(key);
        }
    }

    fn finish(&mut self, key: u64) {
        let Some(aggregate) = self.aggregates.remove(&key) else {
            return;
        };
        self.routes.retain(
            |_, (_, route)| !matches!(route, Route::Part { aggregate } if *aggregate == key),
        );
        let waited = self.settings.answer_timeout.as_millis();
        let mut entries = Vec::new();
        let mut all_ok = true;
        for (name, d) in &self.drones {
            let answer = aggregate.parts.get(name);
            let entry = match aggregate.tool {
                FleetTool::ListDrones => drone_summary(name, d, answer, waited),
                FleetTool::StopAll => {
                    let e = stop_outcome(name, d, answer, waited);
                    all_ok &= e["latched"] == true || e["online"] == false;
                    e
                }
            };
            entries.push(entry);
        }
        let (structured, text, is_error) = match aggregate.tool {
            FleetTool::ListDrones => {
                let s = json!({"drones": entries});
                let text = s.to_string();
                (s, text, false)
            }
            FleetTool::StopAll => {
                let lines: Vec<String> = entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["drone"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                let s = json!({"all_online_latched": all_ok, "drones": entries});
                (s, lines.join("\n"), !all_ok)
            }
        };
        let for_console = aggregate
            .id
            .as_str()
            .is_some_and(|id| id.starts_with(CONSOLE_ID_PREFIX));
        let structured_ok = for_console
            || self
                .client_version
                .as_deref()
                .is_some_and(|v| v >= STRUCTURED_FROM);
        let mut result = json!({"content": [{"type": "text", "text": text}], "isError": is_error});
        if structured_ok {
            result["structuredContent"] = structured;
        }
        self.reply(aggregate.id, result);
    }

    // --- the union of the drones' lists ---

    fn merged_tools(&self) -> Vec<Value> {
        let online: Vec<&str> = self
            .drones
            .iter()
            .filter(|(_, d)| d.online())
            .map(|(n, _)| n.as_str())
            .collect();
        let mut by_name: BTreeMap<String, (Value, Vec<String>)> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for (name, d) in &self.drones {
            for tool in &d.tools {
                let Some(tool_name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let entry = by_name.entry(tool_name.to_owned()).or_insert_with(|| {
                    order.push(tool_name.to_owned());
                    (tool.clone(), Vec::new())
                });
                entry.1.push(name.clone());
            }
        }
        let required = self.settings.default_drone.is_none();
        let mut tools = fleet_tools(self.structured());
        for tool_name in order {
            let Some((mut tool, served_by)) = by_name.remove(&tool_name) else {
                continue;
            };
            let description = format!(
                "Server name of the drone to call{}. Offered by: {}. Online now: {}.",
                match &self.settings.default_drone {
                    Some(d) => format!(" (default {d})"),
                    None => String::new(),
                },
                served_by.join(", "),
                if online.is_empty() {
                    "none".to_owned()
                } else {
                    online.join(", ")
                }
            );
            add_drone_argument(&mut tool, &description, required);
            tools.push(tool);
        }
        tools
    }

    fn merged_resources(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for (name, d) in &self.drones {
            for r in &d.resources {
                let mut r = r.clone();
                if let Some(uri) = r.get("uri").and_then(Value::as_str) {
                    r["uri"] = Value::String(fleet_uri(uri, name));
                }
                for key in ["name", "title"] {
                    if let Some(v) = r.get(key).and_then(Value::as_str) {
                        r[key] = Value::String(format!("{name}: {v}"));
                    }
                }
                all.push(r);
            }
        }
        all
    }

    /// Tells the client when the tools or resources it would be listed changed.
    fn lists_changed(&mut self) {
        if self.client_version.is_none() {
            return;
        }
        let tools = Value::Array(self.merged_tools()).to_string();
        if tools != self.tools_shown {
            self.tools_shown = tools;
            self.emit(&json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
        }
        let resources = Value::Array(self.merged_resources()).to_string();
        if resources != self.resources_shown {
            self.resources_shown = resources;
            self.emit(&json!({"jsonrpc": "2.0", "method": "notifications/resources/list_changed"}));
        }
    }

    // --- helpers ---

    fn structured(&self) -> bool {
        self.client_version
            .as_deref()
            .is_some_and(|v| v >= STRUCTURED_FROM)
    }

    fn ready_drones(&self) -> Vec<String> {
        self.drones
            .iter()
            .filter(|(_, d)| d.online() && d.session == DroneSession::Ready)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn known_drones(&self) -> String {
        if self.drones.is_empty() {
            return "none yet".into();
        }
        self.drones
            .iter()
            .map(|(n, d)| format!("{n} ({})", if d.online() { "online" } else { "offline" }))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn emit(&mut self, message: &Value) {
        let console = message
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.starts_with(CONSOLE_ID_PREFIX));
        if console {
            self.actions.push_back(Action::Console(message.to_string()));
        } else {
            self.actions.push_back(Action::Stdout(message.to_string()));
        }
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

    /// A tool call refused before it reached any drone: a tool error the caller can act on.
    fn tool_refusal(&mut self, id: Value, message: String) {
        self.counters.calls_refused += 1;
        self.reply(
            id,
            json!({"content": [{"type": "text", "text": message}], "isError": true}),
        );
    }

    fn notify(&mut self, level: &str, data: String) {
        if self.client_version.is_none() {
            return;
        }
        self.emit(&json!({
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": level, "logger": LOGGER, "data": data},
        }));
    }

    fn drop_mqtt(&mut self, topic: &str, why: &str) {
        self.counters.mqtt_dropped += 1;
        tracing::debug!("dropped an MQTT message on {topic}: {why}");
    }
}

/// The fleet's own two tools.
fn fleet_tools(structured: bool) -> Vec<Value> {
    let mut list = json!({
        "name": LIST_DRONES,
        "title": "List the drones",
        "description": "Every drone of the fleet, online or not, with its state from its own \
            get_status: armed, flight mode, position, battery, emergency stop, the holder of \
            its control lease. Drones that do not answer within the wait are listed with the \
            reason. Takes no arguments.",
        "inputSchema": {"type": "object", "additionalProperties": false},
        "annotations": {"readOnlyHint": true, "openWorldHint": true},
    });
    let mut stop = json!({
        "name": STOP_ALL,
        "title": "EMERGENCY STOP every drone",
        "description": "Calls every online drone's emergency_stop at once (no drone waits on \
            another) and reports each one's result: latched or not, and why. Each stop stays \
            latched until that drone's reset_emergency_stop. Argument: `reason` (text, \
            optional).",
        "inputSchema": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why (shown to every client of every drone)."}},
            "additionalProperties": false,
        },
        "annotations": {"destructiveHint": true, "openWorldHint": true},
    });
    if structured {
        list["outputSchema"] = json!({
            "type": "object",
            "properties": {"drones": {"type": "array", "items": {"type": "object"}}},
            "required": ["drones"],
        });
        stop["outputSchema"] = json!({
            "type": "object",
            "properties": {
                "all_online_latched": {"type": "boolean"},
                "drones": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["all_online_latched", "drones"],
        });
    }
    vec![list, stop]
}

/// Adds the `drone` argument to a drone tool's input schema.
fn add_drone_argument(tool: &mut Value, description: &str, required: bool) {
    let schema = tool.as_object_mut().map(|t| {
        t.entry("inputSchema")
            .or_insert_with(|| json!({"type": "object"}))
    });
    let Some(Value::Object(schema)) = schema else {
        return;
    };
    let properties = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(p) = properties {
        p.insert(
            DRONE_ARG.into(),
            json!({"type": "string", "description": description}),
        );
    }
    if required {
        let list = schema
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(r) = list {
            r.insert(0, Value::String(DRONE_ARG.into()));
        }
    }
}

/// A drone's resource URI as the fleet shows it: `{uri}?drone={name}` (`&` when the URI has a
/// query already), the name's `%`, `&`, `#` and spaces percent-encoded.
pub fn fleet_uri(uri: &str, drone: &str) -> String {
    let mut name = String::with_capacity(drone.len());
    for c in drone.chars() {
        match c {
            '%' => name.push_str("%25"),
            '&' => name.push_str("%26"),
            '#' => name.push_str("%23"),
            ' ' => name.push_str("%20"),
            c => name.push(c),
        }
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{DRONE_QUERY}{name}")
}

/// The drone's own URI and the drone's name, from a fleet URI.
pub fn split_fleet_uri(uri: &str) -> Option<(String, String)> {
    let at = uri
        .rfind(&format!("?{DRONE_QUERY}"))
        .or_else(|| uri.rfind(&format!("&{DRONE_QUERY}")))?;
    let encoded = &uri[at + 1 + DRONE_QUERY.len()..];
    let mut name = String::new();
    let mut rest = encoded;
    while let Some(c) = rest.chars().next() {
        if c == '%' && rest.len() >= 3 {
            let decoded = match &rest[1..3] {
                "25" => '%',
                "26" => '&',
                "23" => '#',
                "20" => ' ',
                _ => return None,
            };
            name.push(decoded);
            rest = &rest[3..];
        } else {
            name.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if name.is_empty() {
        return None;
    }
    Some((uri[..at].to_owned(), name))
}

/// The structured result of a tool answer: `structuredContent`, or the JSON of its first text
/// block (clients of 2024-11-05 and 2025-03-26 get no structured content).
fn structured_of(answer: &Value) -> Option<Value> {
    let result = answer.get("result")?;
    if let Some(s) = result.get("structuredContent") {
        return Some(s.clone());
    }
    let text = result.pointer("/content/0/text")?.as_str()?;
    serde_json::from_str(text).ok()
}

/// Why a drone's part has no usable answer, if it has none.
fn answer_problem(answer: Option<&Option<Value>>, waited_ms: u128) -> Option<String> {
    match answer {
        None => None,
        Some(None) => Some(format!("no answer within {waited_ms} ms")),
        Some(Some(a)) => {
            if let Some(e) = a.get("error") {
                return Some(
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error")
                        .to_owned(),
                );
            }
            if a.pointer("/result/isError") == Some(&Value::Bool(true)) {
                return Some(
                    a.pointer("/result/content/0/text")
                        .and_then(Value::as_str)
                        .unwrap_or("tool error")
                        .to_owned(),
                );
            }
            None
        }
    }
}

fn session_name(session: &DroneSession) -> &'static str {
    match session {
        DroneSession::None => "none",
        DroneSession::Starting => "starting",
        DroneSession::Ready => "ready",
        DroneSession::Refused(_) => "refused",
    }
}

/// One drone of `list_drones`.
fn drone_summary(
    name: &str,
    d: &DroneEntry,
    answer: Option<&Option<Value>>,
    waited_ms: u128,
) -> Value {
    let mut entry = json!({
        "name": name,
        "online": d.online(),
        "session": session_name(&d.session),
    });
    if let DroneSession::Refused(why) = &d.session {
        entry["error"] = Value::String(why.clone());
    }
    if let Some(problem) = answer_problem(answer, waited_ms) {
        entry["error"] = Value::String(problem);
    }
    let status = answer
        .and_then(Option::as_ref)
        .filter(|a| a.get("error").is_none())
        .and_then(structured_of);
    if let Some(s) = status {
        let get = |p: &str| s.pointer(p).cloned().unwrap_or(Value::Null);
        entry["armed"] = get("/vehicle/mode/armed");
        entry["mode"] = get("/vehicle/mode/flight_mode");
        entry["position"] = json!({
            "latitude_deg": get("/vehicle/position/latitude_deg"),
            "longitude_deg": get("/vehicle/position/longitude_deg"),
            "altitude_relative_m": get("/vehicle/position/altitude_relative_m"),
            "heading_deg": get("/vehicle/attitude/heading_deg"),
        });
        entry["battery"] = json!({
            "remaining_percent": get("/vehicle/battery/remaining_percent"),
            "voltage_v": get("/vehicle/battery/voltage_v"),
        });
        entry["emergency_stop"] = json!({
            "latched": get("/emergency_stop/latched"),
            "reason": get("/emergency_stop/reason"),
        });
        entry["lease_holder"] = get("/lease_holder");
        entry["active_action"] = get("/active_action");
    }
    entry
}

/// One drone of `emergency_stop_all`.
fn stop_outcome(
    name: &str,
    d: &DroneEntry,
    answer: Option<&Option<Value>>,
    waited_ms: u128,
) -> Value {
    if answer.is_none() {
        let why = if !d.online() {
            "offline: not sent (its presence is gone)".to_owned()
        } else {
            "online but without a session yet: not sent; call emergency_stop_all again, or use flight-companion estop on the vehicle".to_owned()
        };
        return json!({"drone": name, "online": d.online(), "latched": Value::Null, "message": why});
    }
    if let Some(problem) = answer_problem(answer, waited_ms) {
        return json!({"drone": name, "online": true, "latched": false, "message": format!("not confirmed: {problem}")});
    }
    let s = answer.and_then(Option::as_ref).and_then(structured_of);
    let latched = s
        .as_ref()
        .and_then(|s| s.pointer("/emergency_stop/latched"))
        .cloned()
        .unwrap_or(Value::Bool(false));
    let message = s
        .as_ref()
        .and_then(|s| s.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("answered")
        .to_owned();
    json!({"drone": name, "online": true, "latched": latched, "message": message})
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
