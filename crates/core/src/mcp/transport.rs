//! The MCP-over-MQTT transport (the EMQX "MCP over MQTT" specification) in one place (pure):
//! the topic scheme, the MQTT 5 user properties and their values, client-id rules, the
//! transport's own messages, and the JSON-RPC error codes every party here answers with.
//!
//! Used by the daemon (the session table and the MQTT shell), the ground bridge, the raw
//! client of the rig, the benchmarks and the demo (`hil::client`), and the audit witness.
//! No tokio, no rumqttc, no rmcp: user properties are `(name, value)` pairs, which the MQTT
//! shell (`mcp::mqtt`) puts into rumqttc's types. The golden tests below pin every string, so
//! a change to the scheme is a change to this file and its tests, seen in review.
//!
//! Topics (roots configurable, the spec's defaults below; some brokers reserve `$` topics):
//!
//! | topic | who publishes |
//! |---|---|
//! | `{server_root}/{server_id}/{server_name}` (control) | clients: `initialize` |
//! | `{server_root}/presence/{server_id}/{server_name}` | the server, retained |
//! | `{server_root}/capability/{server_id}/{server_name}` | the server: `list_changed`, `resources/updated` |
//! | `{client_root}/presence/{client_id}` | the client (and its Will) |
//! | `{client_root}/capability/{client_id}` | the client: `roots/list_changed` |
//! | `{rpc_root}/{client_id}/{server_id}/{server_name}` (RPC) | both, one session |

use serde_json::{Value, json};

/// The spec's root of server control, presence and capability topics.
pub const SERVER_TOPIC_ROOT: &str = "$mcp-server";
/// The spec's root of client presence and capability topics.
pub const CLIENT_TOPIC_ROOT: &str = "$mcp-client";
/// The spec's root of RPC topics.
pub const RPC_TOPIC_ROOT: &str = "$mcp-rpc";

/// User property naming the MCP role of the connection ([`ComponentType`]), on CONNECT and
/// on every PUBLISH.
pub const PROP_COMPONENT_TYPE: &str = "MCP-COMPONENT-TYPE";
/// User property with the sender's MQTT client id, on every PUBLISH (a claim: the topic's
/// client-id level, which the broker's ACL binds to the certificate, is what is believed).
pub const PROP_CLIENT_ID: &str = "MCP-MQTT-CLIENT-ID";
/// User property with a JSON object describing the implementation, on CONNECT.
pub const PROP_META: &str = "MCP-META";
/// User property a broker may put in CONNACK to name the server.
pub const PROP_SERVER_NAME: &str = "MCP-SERVER-NAME";
/// User property a broker may put in CONNACK to tell a client which server names to watch
/// (a JSON array of topic filters).
pub const PROP_SERVER_NAME_FILTERS: &str = "MCP-SERVER-NAME-FILTERS";

/// The server's presence message (retained on its presence topic; empty means offline).
pub const SERVER_ONLINE: &str = "notifications/server/online";
/// Either side ends a session: the client on its presence topic (also its Will) or its RPC
/// topic, the server on the client's RPC topic.
pub const DISCONNECTED: &str = "notifications/disconnected";

/// The `_meta` key of the `initialize` request that carries the JWT. Here, not in the
/// daemon's `auth`, because the ground bridge puts its token there too and cannot import the
/// daemon (`auth::TOKEN_META_KEY` re-exports it).
pub const TOKEN_META_KEY: &str = "flight-companion/token";

/// Which side of the transport a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentType {
    Server,
    Client,
}

impl ComponentType {
    /// The value of the `MCP-COMPONENT-TYPE` user property.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentType::Server => "mcp-server",
            ComponentType::Client => "mcp-client",
        }
    }

    /// The component a `MCP-COMPONENT-TYPE` value names, if it is one of the two.
    pub fn parse(value: &str) -> Option<ComponentType> {
        match value {
            "mcp-server" => Some(ComponentType::Server),
            "mcp-client" => Some(ComponentType::Client),
            _ => None,
        }
    }
}

/// The user properties every PUBLISH of the transport carries (the Will too: the broker
/// publishes it on our behalf): the component type and the sender's client id.
pub fn publish_user_properties(component: ComponentType, client_id: &str) -> Vec<(String, String)> {
    vec![
        (PROP_COMPONENT_TYPE.into(), component.as_str().into()),
        (PROP_CLIENT_ID.into(), client_id.into()),
    ]
}

/// The user properties of CONNECT: the component type and `MCP-META`.
pub fn connect_user_properties(component: ComponentType, meta: &Value) -> Vec<(String, String)> {
    vec![
        (PROP_COMPONENT_TYPE.into(), component.as_str().into()),
        (PROP_META.into(), meta.to_string()),
    ]
}

/// The value of user property `name`, if present.
pub fn user_property<'a>(properties: &'a [(String, String)], name: &str) -> Option<&'a str> {
    properties
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Longest client id accepted in MCP topics and user properties (MQTT allows 65535 bytes;
/// certificate identities have at most 64 characters, SDK-generated ids 32 to 36).
pub const CLIENT_ID_CHARS_MAX: usize = 128;

/// True when `id` may be an MQTT client id (a server id or an mcp-client-id) in MCP topics:
/// 1 to [`CLIENT_ID_CHARS_MAX`] characters, no `/`, `+`, `#` (they change a topic's levels or
/// make it a filter), no control characters.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= CLIENT_ID_CHARS_MAX
        && !id.contains(['/', '+', '#'])
        && !id.chars().any(char::is_control)
}

/// The topics of one server instance (`server_id`, `server_name`) under three roots, as the
/// server uses them and as a client of that server does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub server_root: String,
    pub client_root: String,
    pub rpc_root: String,
    pub server_id: String,
    pub server_name: String,
}

/// What an incoming topic is, to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    Control,
    Rpc(String),
    ClientPresence(String),
    ClientCapability(String),
    Other,
}

impl Topics {
    /// The topics of `server_id`/`server_name` under the spec's default roots.
    pub fn with_default_roots(server_id: &str, server_name: &str) -> Topics {
        Topics {
            server_root: SERVER_TOPIC_ROOT.into(),
            client_root: CLIENT_TOPIC_ROOT.into(),
            rpc_root: RPC_TOPIC_ROOT.into(),
            server_id: server_id.into(),
            server_name: server_name.into(),
        }
    }

    /// Where clients send `initialize`.
    pub fn control(&self) -> String {
        format!(
            "{}/{}/{}",
            self.server_root, self.server_id, self.server_name
        )
    }
    /// The server's retained presence.
    pub fn presence(&self) -> String {
        format!(
            "{}/presence/{}/{}",
            self.server_root, self.server_id, self.server_name
        )
    }
    /// The server's capability changes and resource updates, one message for every client.
    pub fn capability(&self) -> String {
        format!(
            "{}/capability/{}/{}",
            self.server_root, self.server_id, self.server_name
        )
    }
    /// The RPC topic of one client's session with this server.
    pub fn rpc(&self, client_id: &str) -> String {
        format!(
            "{}/{client_id}/{}/{}",
            self.rpc_root, self.server_id, self.server_name
        )
    }
    /// A client's presence topic.
    pub fn client_presence(&self, client_id: &str) -> String {
        client_presence(&self.client_root, client_id)
    }
    /// A client's capability topic.
    pub fn client_capability(&self, client_id: &str) -> String {
        client_capability(&self.client_root, client_id)
    }
    /// Every client's RPC topic towards this server: one subscription (No Local) made at
    /// connect, so a client without a session is still heard and answered.
    pub fn rpc_filter(&self) -> String {
        self.rpc("+")
    }
    /// Every client's presence topic (any message there ends that client's session).
    pub fn client_presence_filter(&self) -> String {
        self.client_presence("+")
    }
    /// Every client's capability topic (`notifications/roots/list_changed`, ignored).
    pub fn client_capability_filter(&self) -> String {
        self.client_capability("+")
    }

    /// Classifies an incoming topic. A client id segment must be a valid client id.
    pub fn classify(&self, topic: &str) -> TopicKind {
        if topic == self.control() {
            return TopicKind::Control;
        }
        let one_level = |t: &str| valid_client_id(t).then(|| t.to_owned());
        if let Some(cid) = topic
            .strip_prefix(&self.client_root)
            .and_then(|t| t.strip_prefix("/presence/"))
            .and_then(one_level)
        {
            return TopicKind::ClientPresence(cid);
        }
        if let Some(cid) = topic
            .strip_prefix(&self.client_root)
            .and_then(|t| t.strip_prefix("/capability/"))
            .and_then(one_level)
        {
            return TopicKind::ClientCapability(cid);
        }
        let tail = format!("/{}/{}", self.server_id, self.server_name);
        if let Some(cid) = topic
            .strip_prefix(&self.rpc_root)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix(&tail))
            .and_then(one_level)
        {
            return TopicKind::Rpc(cid);
        }
        TopicKind::Other
    }
}

/// A client's presence topic: `{client_root}/presence/{client_id}`.
pub fn client_presence(client_root: &str, client_id: &str) -> String {
    format!("{client_root}/presence/{client_id}")
}

/// A client's capability topic: `{client_root}/capability/{client_id}`.
pub fn client_capability(client_root: &str, client_id: &str) -> String {
    format!("{client_root}/capability/{client_id}")
}

/// What a client subscribes to discover servers: the presence of every server id under the
/// server names matching `server_name_filter` (a name, or an MQTT filter such as `#`).
pub fn server_presence_filter(server_root: &str, server_name_filter: &str) -> String {
    format!("{server_root}/presence/+/{server_name_filter}")
}

/// What a topic under `{server_root}/presence/` says: `None` when it is not a presence topic;
/// `Some(Err(rest))` when it names no server id and server name; else the two.
pub fn parse_server_presence<'a>(
    server_root: &str,
    topic: &'a str,
) -> Option<Result<(&'a str, &'a str), &'a str>> {
    let rest = topic
        .strip_prefix(server_root)
        .and_then(|t| t.strip_prefix("/presence/"))?;
    Some(
        rest.split_once('/')
            .filter(|(id, name)| !id.is_empty() && !name.is_empty())
            .ok_or(rest),
    )
}

/// The payload of a server's presence: small, as the spec asks (`server_name`,
/// `description` and `meta` always present: the TypeScript client rejects presence without
/// `server_name`, the Python client without `description`).
pub fn server_online(server_name: &str, description: &str, meta: Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": SERVER_ONLINE,
        "params": {"server_name": server_name, "description": description, "meta": meta},
    })
}

/// True when `payload` is a server's online presence message.
pub fn is_server_online(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload)
        .is_ok_and(|v| v.get("method").and_then(Value::as_str) == Some(SERVER_ONLINE))
}

/// The `notifications/disconnected` message (a client's Will, or a session ended by either
/// side).
pub fn disconnected() -> Value {
    json!({"jsonrpc": "2.0", "method": DISCONNECTED})
}

/// The JSON-RPC and MCP error codes answered over this transport: the daemon's
/// (`mcp::errors` chooses which, and nowhere else does) and the ground bridge's own.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// Not a JSON-RPC 2.0 request/notification (a batch, no `jsonrpc`, a message too large,
    /// no session).
    pub const INVALID_REQUEST: i32 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Known method, wrong params (also an unknown tool, per MCP).
    pub const INVALID_PARAMS: i32 = -32602;
    /// A bug on our side.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// MCP: a `resources/*` request for a URI the server does not serve (`data.uri` names
    /// it). MCP 2026-07-28 replaces it with -32602; this transport serves up to 2025-11-25.
    pub const RESOURCE_NOT_FOUND: i32 = -32002;
    /// Implementation-defined (JSON-RPC server-error range): a limit is reached, or the
    /// session ended; retry later. `data.kind` says which.
    pub const SERVER_BUSY: i32 = -32000;
    /// No valid identity: missing, bad, expired or revoked token (initialize again with a
    /// valid one), or no session. `data.kind` says which.
    pub const UNAUTHENTICATED: i32 = -32001;
    /// Authenticated but not allowed: role too low, no control lease. `data.kind` says which.
    pub const FORBIDDEN: i32 = -32003;
    /// Over the session's rate limit; `data.retry_after_ms` says when to retry.
    pub const RATE_LIMITED: i32 = -32029;
    /// The ground bridge's own answer: the drone is offline, did not answer in time, or none
    /// could be chosen (the server-error range, as [`SERVER_BUSY`]).
    pub const DRONE_UNAVAILABLE: i32 = -32000;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drone() -> Topics {
        Topics::with_default_roots("sid1", "drone/a")
    }

    /// The strings of the scheme, pinned: every party of this repository builds its topics
    /// here, so these are what goes on the wire.
    #[test]
    fn golden_topics() {
        let t = drone();
        assert_eq!(t.control(), "$mcp-server/sid1/drone/a");
        assert_eq!(t.presence(), "$mcp-server/presence/sid1/drone/a");
        assert_eq!(t.capability(), "$mcp-server/capability/sid1/drone/a");
        assert_eq!(t.rpc("gcs"), "$mcp-rpc/gcs/sid1/drone/a");
        assert_eq!(t.client_presence("gcs"), "$mcp-client/presence/gcs");
        assert_eq!(t.client_capability("gcs"), "$mcp-client/capability/gcs");
        assert_eq!(t.rpc_filter(), "$mcp-rpc/+/sid1/drone/a");
        assert_eq!(t.client_presence_filter(), "$mcp-client/presence/+");
        assert_eq!(t.client_capability_filter(), "$mcp-client/capability/+");
        assert_eq!(
            server_presence_filter(SERVER_TOPIC_ROOT, "#"),
            "$mcp-server/presence/+/#"
        );
        assert_eq!(
            server_presence_filter(SERVER_TOPIC_ROOT, "fleet/x/#"),
            "$mcp-server/presence/+/fleet/x/#"
        );
        // Other roots (a broker that reserves `$` topics).
        let custom = Topics {
            server_root: "mcp/server".into(),
            client_root: "mcp/client".into(),
            rpc_root: "mcp/rpc".into(),
            server_id: "s".into(),
            server_name: "n".into(),
        };
        assert_eq!(custom.control(), "mcp/server/s/n");
        assert_eq!(custom.presence(), "mcp/server/presence/s/n");
        assert_eq!(custom.rpc("c"), "mcp/rpc/c/s/n");
        assert_eq!(custom.client_presence("c"), "mcp/client/presence/c");
    }

    #[test]
    fn golden_properties_messages_and_codes() {
        assert_eq!(PROP_COMPONENT_TYPE, "MCP-COMPONENT-TYPE");
        assert_eq!(PROP_CLIENT_ID, "MCP-MQTT-CLIENT-ID");
        assert_eq!(PROP_META, "MCP-META");
        assert_eq!(PROP_SERVER_NAME, "MCP-SERVER-NAME");
        assert_eq!(PROP_SERVER_NAME_FILTERS, "MCP-SERVER-NAME-FILTERS");
        assert_eq!(TOKEN_META_KEY, "flight-companion/token");
        assert_eq!(ComponentType::Server.as_str(), "mcp-server");
        assert_eq!(ComponentType::Client.as_str(), "mcp-client");
        for c in [ComponentType::Server, ComponentType::Client] {
            assert_eq!(ComponentType::parse(c.as_str()), Some(c));
        }
        assert_eq!(ComponentType::parse("MCP-SERVER"), None);
        assert_eq!(
            publish_user_properties(ComponentType::Client, "gcs"),
            vec![
                ("MCP-COMPONENT-TYPE".to_string(), "mcp-client".to_string()),
                ("MCP-MQTT-CLIENT-ID".to_string(), "gcs".to_string()),
            ]
        );
        assert_eq!(
            connect_user_properties(ComponentType::Server, &json!({"version": "1"})),
            vec![
                ("MCP-COMPONENT-TYPE".to_string(), "mcp-server".to_string()),
                ("MCP-META".to_string(), r#"{"version":"1"}"#.to_string()),
            ]
        );
        assert_eq!(
            disconnected().to_string(),
            r#"{"jsonrpc":"2.0","method":"notifications/disconnected"}"#
        );
        let online = server_online("drone/a", "a drone", json!({}));
        assert_eq!(
            online,
            json!({"jsonrpc":"2.0","method":"notifications/server/online",
                "params":{"server_name":"drone/a","description":"a drone","meta":{}}})
        );
        assert!(is_server_online(online.to_string().as_bytes()));
        assert!(!is_server_online(br#"{"method":"hello"}"#));
        assert!(!is_server_online(b""));
        let codes = [
            (code::PARSE_ERROR, -32700),
            (code::INVALID_REQUEST, -32600),
            (code::METHOD_NOT_FOUND, -32601),
            (code::INVALID_PARAMS, -32602),
            (code::INTERNAL_ERROR, -32603),
            (code::RESOURCE_NOT_FOUND, -32002),
            (code::SERVER_BUSY, -32000),
            (code::UNAUTHENTICATED, -32001),
            (code::FORBIDDEN, -32003),
            (code::RATE_LIMITED, -32029),
            (code::DRONE_UNAVAILABLE, -32000),
        ];
        for (code, value) in codes {
            assert_eq!(code, value);
        }
    }

    #[test]
    fn topics_are_classified_and_presence_parsed() {
        let t = drone();
        assert_eq!(t.classify("$mcp-server/sid1/drone/a"), TopicKind::Control);
        assert_eq!(
            t.classify("$mcp-rpc/c1/sid1/drone/a"),
            TopicKind::Rpc("c1".into())
        );
        assert_eq!(
            t.classify("$mcp-client/presence/c1"),
            TopicKind::ClientPresence("c1".into())
        );
        assert_eq!(
            t.classify("$mcp-client/capability/c1"),
            TopicKind::ClientCapability("c1".into())
        );
        for other in [
            "$mcp-rpc/c1/other/drone/a",
            "$mcp-rpc/a/b/sid1/drone/a",
            "$mcp-client/presence/a/b",
            "$mcp-server/presence/sid1/drone/a",
        ] {
            assert_eq!(t.classify(other), TopicKind::Other, "{other}");
        }
        assert_eq!(
            parse_server_presence(SERVER_TOPIC_ROOT, "$mcp-server/presence/sid1/drone/a"),
            Some(Ok(("sid1", "drone/a")))
        );
        assert_eq!(
            parse_server_presence(SERVER_TOPIC_ROOT, "$mcp-server/presence/onlyid"),
            Some(Err("onlyid"))
        );
        assert_eq!(
            parse_server_presence(SERVER_TOPIC_ROOT, "$mcp-server/sid1/drone/a"),
            None
        );
    }

    #[test]
    fn client_ids_with_topic_characters_are_refused() {
        for (id, ok) in [
            ("drone-1", true),
            ("", false),
            ("a/b", false),
            ("a+b", false),
            ("a#", false),
            ("a\nb", false),
        ] {
            assert_eq!(valid_client_id(id), ok, "{id:?}");
        }
        assert!(valid_client_id(&"x".repeat(CLIENT_ID_CHARS_MAX)));
        assert!(!valid_client_id(&"x".repeat(CLIENT_ID_CHARS_MAX + 1)));
    }
}
