//! Every JSON-RPC / MCP error code the server sends is chosen here, and nowhere else (the
//! numbers are the transport's, `mcp::transport::code`).
//!
//! Also the first look at an incoming message (pure): size, JSON, batch, envelope, method,
//! params — so a bad message gets the right error without reaching a session.

use rmcp::model::{ClientJsonRpcMessage, ClientNotification, ClientRequest, ErrorData};
use serde_json::{Value, json};

// The codes' numbers are the transport's (`mcp::transport::code`, pinned by its golden test);
// which one each situation gets is decided here.
pub use super::transport::code::{
    FORBIDDEN, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
    RATE_LIMITED, RESOURCE_NOT_FOUND, SERVER_BUSY, UNAUTHENTICATED,
};

/// Methods a client may call on this server (MCP 2025-11-25 with the initialize
/// handshake). Anything else is answered with `METHOD_NOT_FOUND` before a session sees it.
pub const CLIENT_REQUESTS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "logging/setLevel",
    "completion/complete",
];

/// Notifications a client may send on its RPC topic.
pub const CLIENT_NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// A JSON-RPC error response as a JSON value (`id` is `null` when unknown, as JSON-RPC 2.0
/// requires).
pub fn error_response(id: Option<&Value>, code: i32, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": error,
    })
}

/// An MCP error for a handler to return (rmcp's type), with our codes.
pub fn invalid_params(message: impl Into<String>, data: Option<Value>) -> ErrorData {
    ErrorData::new(rmcp::model::ErrorCode(INVALID_PARAMS), message.into(), data)
}

/// The error for an unknown resource URI (MCP `-32002`, `data.uri`).
pub fn resource_not_found(message: impl Into<String>, uri: &str) -> ErrorData {
    ErrorData::new(
        rmcp::model::ErrorCode(RESOURCE_NOT_FOUND),
        message.into(),
        Some(json!({ "uri": uri })),
    )
}

/// A tool execution error (`isError: true`) the model can read and act on: bad arguments,
/// a refusal, a stale camera. Not a JSON-RPC error: MCP 2025-11-25 asks for these so a model
/// sees the text.
pub fn tool_error(text: String) -> rmcp::model::CallToolResult {
    rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(text)])
}

/// A tool's structured result, plus the same JSON as a text block; a value that cannot be
/// serialised is a tool error.
pub fn structured<T: serde::Serialize>(value: &T) -> rmcp::model::CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => rmcp::model::CallToolResult::structured(v),
        Err(e) => tool_error(format!("internal error serialising the result: {e}")),
    }
}

/// An internal error for a handler to return.
pub fn internal(message: impl Into<String>) -> ErrorData {
    ErrorData::new(rmcp::model::ErrorCode(INTERNAL_ERROR), message.into(), None)
}

/// The result of looking at one incoming payload.
#[derive(Debug)]
pub enum Checked {
    /// A well-formed message for the session; `method` is set for requests and
    /// notifications, `id` for requests.
    Message {
        message: Box<ClientJsonRpcMessage>,
        method: Option<String>,
        id: Option<Value>,
        /// `params.requestId` of `notifications/cancelled`.
        cancels: Option<Value>,
    },
    /// Answer with this error response (`reply` is `None` for a bad notification: a
    /// notification never gets a response, it is dropped and logged).
    Refused { reply: Option<Value>, log: String },
}

/// Checks one payload: size (never parsed when over `bytes_max`), JSON, batch, envelope,
/// method, params.
pub fn check(payload: &[u8], bytes_max: usize) -> Checked {
    if payload.len() > bytes_max {
        let log = format!(
            "message of {} bytes refused: the limit is {bytes_max} bytes (mcp.message_bytes_max)",
            payload.len()
        );
        return Checked::Refused {
            reply: Some(error_response(
                None,
                INVALID_REQUEST,
                &log,
                Some(json!({ "bytes": payload.len(), "bytes_max": bytes_max })),
            )),
            log,
        };
    }
    match serde_json::from_slice(payload) {
        Ok(value) => check_value(value),
        Err(e) => {
            let log = format!("invalid JSON: {e}");
            Checked::Refused {
                reply: Some(error_response(None, PARSE_ERROR, &log, None)),
                log,
            }
        }
    }
}

/// [`check`] of a payload already parsed (and within the size limit): the envelope, method
/// and params; `value` is consumed into rmcp's types without a copy.
pub fn check_value(value: Value) -> Checked {
    let Value::Object(object) = &value else {
        let log = if value.is_array() {
            "JSON-RPC batches are not supported (removed in MCP 2025-06-18): send one message per PUBLISH".to_string()
        } else {
            "a JSON-RPC message must be a JSON object".to_string()
        };
        return Checked::Refused {
            reply: Some(error_response(None, INVALID_REQUEST, &log, None)),
            log,
        };
    };
    let id = object.get("id").cloned();
    let method = object
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let has_method = object.contains_key("method");
    let refuse = |code: i32, log: String, data: Option<Value>| Checked::Refused {
        // Only a request (method + id) gets an answer.
        reply: id
            .as_ref()
            .filter(|_| has_method)
            .map(|id| error_response(Some(id), code, &log, data.clone())),
        log,
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Checked::Refused {
            reply: Some(error_response(
                id.as_ref(),
                INVALID_REQUEST,
                "`jsonrpc` must be \"2.0\"",
                None,
            )),
            log: "message without jsonrpc 2.0".into(),
        };
    }
    if let Some(id) = &id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Checked::Refused {
            reply: Some(error_response(
                None,
                INVALID_REQUEST,
                "`id` must be a string or an integer",
                None,
            )),
            log: format!("bad id {id}"),
        };
    }
    if let Some(m) = &method {
        let known = if id.is_some() {
            CLIENT_REQUESTS.contains(&m.as_str())
        } else {
            CLIENT_NOTIFICATIONS.contains(&m.as_str())
        };
        if !known {
            let allowed = if id.is_some() {
                CLIENT_REQUESTS
            } else {
                CLIENT_NOTIFICATIONS
            };
            return refuse(
                METHOD_NOT_FOUND,
                format!(
                    "unknown method `{m}`; this server handles {}",
                    allowed.join(", ")
                ),
                None,
            );
        }
    }
    let cancels = (method.as_deref() == Some("notifications/cancelled"))
        .then(|| value.pointer("/params/requestId").cloned())
        .flatten();
    let parsed = match tools_call(&value) {
        Some(message) => Ok(message),
        None => serde_json::from_value(value),
    };
    let message: ClientJsonRpcMessage = match parsed {
        Ok(m) => m,
        Err(e) => {
            return refuse(
                INVALID_PARAMS,
                format!(
                    "invalid params for `{}`: {e}",
                    method.as_deref().unwrap_or("?")
                ),
                None,
            );
        }
    };
    // rmcp's unions fall back to "custom" variants when the params of a known method do
    // not fit: that is wrong params, not an unknown method.
    let custom = match &message {
        ClientJsonRpcMessage::Request(r) => matches!(r.request, ClientRequest::CustomRequest(_)),
        ClientJsonRpcMessage::Notification(n) => {
            matches!(n.notification, ClientNotification::CustomNotification(_))
        }
        _ => false,
    };
    if custom {
        return refuse(
            INVALID_PARAMS,
            format!(
                "invalid params for `{}`: they do not match the method's schema",
                method.as_deref().unwrap_or("?")
            ),
            None,
        );
    }
    Checked::Message {
        message: Box::new(message),
        method,
        id,
        cancels,
    }
}

/// A `tools/call` request parsed straight into rmcp's `CallToolRequest`, by the same
/// deserializer rmcp's message type ends up in; `None` when it is not one or does not fit,
/// and the general path then decides (so a refusal reads the same).
///
/// Why: rmcp's `ClientRequest` is an untagged union of 22 request types, which serde tries
/// in turn, each on a buffered copy of the message and each failure an error built and
/// dropped, until `tools/call`'s, the fourteenth, fits; the most frequent call paid that
/// every time (issue 17's profile of `get_status`).
fn tools_call(value: &Value) -> Option<ClientJsonRpcMessage> {
    use serde::Deserialize as _;
    let object = value.as_object()?;
    // rmcp's shape check: a request has a method and an id, and neither result nor error.
    if object.get("method").and_then(Value::as_str) != Some("tools/call")
        || object.contains_key("result")
        || object.contains_key("error")
    {
        return None;
    }
    let id = rmcp::model::RequestId::deserialize(object.get("id")?).ok()?;
    // The message object itself: `jsonrpc` and `id` are fields rmcp's request ignores too.
    let request = rmcp::model::CallToolRequest::deserialize(value).ok()?;
    Some(ClientJsonRpcMessage::request(
        ClientRequest::CallToolRequest(request),
        id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(payload: &str) -> (Option<i64>, String) {
        match check(payload.as_bytes(), 1000) {
            Checked::Refused { reply, log } => {
                (reply.map(|r| r["error"]["code"].as_i64().unwrap()), log)
            }
            Checked::Message { method, .. } => panic!("accepted {payload}: {method:?}"),
        }
    }

    #[test]
    fn bad_inputs_get_the_right_code() {
        let cases: &[(&str, Option<i64>, &str)] = &[
            ("{not json", Some(-32700), "invalid JSON"),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                Some(-32600),
                "batches",
            ),
            (r#"{"id":1,"method":"ping"}"#, Some(-32600), "jsonrpc"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/explode"}"#,
                Some(-32601),
                "unknown method",
            ),
            (
                r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":5}}"#,
                Some(-32602),
                "invalid params",
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{}}"#,
                Some(-32602),
                "invalid params",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/bogus"}"#,
                None,
                "unknown method",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                Some(-32600),
                "bad id",
            ),
        ];
        for (payload, code, needle) in cases {
            let (got, log) = refused(payload);
            assert_eq!(got, *code, "{payload}: {log}");
            assert!(log.contains(needle), "{payload}: {log}");
        }
    }

    #[test]
    fn oversized_payload_is_refused_without_parsing() {
        let payload = vec![b'['; 2000];
        let Checked::Refused { reply, log } = check(&payload, 1000) else {
            panic!("accepted");
        };
        let reply = reply.unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        assert_eq!(reply["id"], Value::Null);
        assert!(log.contains("2000 bytes") && log.contains("1000"), "{log}");
    }

    #[test]
    fn good_messages_pass_with_their_method_and_id() {
        for (payload, method) in [
            (r#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#, "ping"),
            (
                r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"get_status"}}"#,
                "tools/call",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#,
                "notifications/cancelled",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
                "initialize",
            ),
        ] {
            match check(payload.as_bytes(), 1000) {
                Checked::Message { method: m, .. } => assert_eq!(m.as_deref(), Some(method)),
                Checked::Refused { log, .. } => panic!("{payload}: {log}"),
            }
        }
    }

    /// The `tools/call` fast path gives what rmcp's own message type gives (the `_meta` with
    /// its progress token in the request's extensions, not in its params), and leaves what
    /// does not fit to the general path.
    #[test]
    fn tools_call_fast_path_matches_rmcp() {
        let call = |m: &ClientJsonRpcMessage| match m {
            ClientJsonRpcMessage::Request(r) => match &r.request {
                ClientRequest::CallToolRequest(c) => (c.params.clone(), r.id.clone()),
                other => panic!("not a tools/call: {other:?}"),
            },
            other => panic!("not a request: {other:?}"),
        };
        for payload in [
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"get_status"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"goto","arguments":{"north_m":3.5,"east_m":-2,"note":"\u00fc"},"_meta":{"progressToken":"p-1","x":[1,2]}}}"#,
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"land","arguments":{}},"extra":true}"#,
        ] {
            let value: Value = serde_json::from_str(payload).unwrap();
            let fast = tools_call(&value).expect(payload);
            let general: ClientJsonRpcMessage = serde_json::from_value(value).unwrap();
            assert_eq!(
                serde_json::to_value(&fast).unwrap(),
                serde_json::to_value(&general).unwrap(),
                "{payload}"
            );
            assert_eq!(call(&fast), call(&general), "{payload}");
            assert!(
                call(&fast).0.meta.is_none(),
                "{payload}: _meta belongs in the extensions"
            );
        }
        for payload in [
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":5}}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"},"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        ] {
            let value: Value = serde_json::from_str(payload).unwrap();
            assert!(tools_call(&value).is_none(), "{payload}");
        }
    }
}
