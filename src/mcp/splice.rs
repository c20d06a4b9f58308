//! The status in a `get_status` answer without a copy per call.
//!
//! rmcp carries a tool's structured result as a `serde_json::Value`, so an answer built the
//! ordinary way clones the whole status tree, serialises it to text for the text block, and
//! is serialised again on the way out: four copies of a 5 KB report for every call. Instead
//! the handler answers with two placeholders (a random token per process, which no client
//! can know or make the daemon echo), and the shell, which serialises each outgoing message
//! once, puts the report's JSON in their place: the text as a JSON string, the value as raw
//! JSON, both made once per published report ([`crate::status::StatusReport::serialized`]).
//! Only the answers the handler marked are looked at ([`is_marked`]).

use std::sync::LazyLock;

use rmcp::model::{CallToolResult, ContentBlock, ServerJsonRpcMessage, ServerResult};
use serde_json::Value;

use crate::status::SerializedStatus;

struct Tokens {
    /// In place of the structured content (a JSON string in the serialised message).
    value: String,
    /// In place of the text block's text.
    text: String,
    /// The two as they appear in the serialised message (quoted), ready to search for.
    value_quoted: memchr::memmem::Finder<'static>,
    text_quoted: memchr::memmem::Finder<'static>,
}

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    // Without randomness the tokens are still unique to the daemon's code; they are never
    // shown to a client either way (every answer that carries them is spliced).
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let (value, text) = (
        format!("~fc-status-value-{hex}~"),
        format!("~fc-status-text-{hex}~"),
    );
    Tokens {
        value_quoted: memchr::memmem::Finder::new(format!("\"{value}\"").as_bytes()).into_owned(),
        text_quoted: memchr::memmem::Finder::new(format!("\"{text}\"").as_bytes()).into_owned(),
        value,
        text,
    }
});

/// The answer of `get_status`, to be spliced by the shell.
pub fn status_result() -> CallToolResult {
    let mut result = CallToolResult::structured(Value::String(TOKENS.value.clone()));
    result.content = vec![ContentBlock::text(TOKENS.text.clone())];
    result
}

/// Whether `message` is an answer made by [`status_result`].
pub fn is_marked(message: &ServerJsonRpcMessage) -> bool {
    match message {
        ServerJsonRpcMessage::Response(response) => match &response.result {
            ServerResult::CallToolResult(result) => {
                matches!(&result.structured_content, Some(Value::String(s)) if *s == TOKENS.value)
                    || result
                        .content
                        .iter()
                        .any(|c| c.as_text().is_some_and(|t| t.text == TOKENS.text))
            }
            _ => false,
        },
        _ => false,
    }
}

/// `payload` (a serialised marked answer) with the placeholders replaced by `status`.
pub fn splice(payload: &[u8], status: &SerializedStatus) -> Vec<u8> {
    let (value, text) = (&TOKENS.value_quoted, &TOKENS.text_quoted);
    let mut out = Vec::with_capacity(payload.len() + status.text.len() + status.quoted.len());
    let mut rest = payload;
    loop {
        let at_value = value.find(rest);
        let at_text = text.find(rest);
        let (at, len, with) = match (at_value, at_text) {
            (Some(v), Some(t)) if t < v => (t, text.needle().len(), status.quoted.as_bytes()),
            (Some(v), _) => (v, value.needle().len(), status.text.as_bytes()),
            (None, Some(t)) => (t, text.needle().len(), status.quoted.as_bytes()),
            (None, None) => break,
        };
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + len..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{JsonRpcResponse, JsonRpcVersion2_0, NumberOrString};

    fn answer(result: CallToolResult) -> ServerJsonRpcMessage {
        ServerJsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: JsonRpcVersion2_0,
            id: NumberOrString::Number(7),
            result: ServerResult::CallToolResult(result),
        })
    }

    #[test]
    fn a_spliced_answer_is_the_answer_built_the_ordinary_way() {
        let report = crate::status::StatusReport::without_vehicle();
        let status = report.serialized();
        let marked = answer(status_result());
        assert!(is_marked(&marked));
        let spliced = splice(&serde_json::to_vec(&marked).unwrap(), &status);
        let spliced: Value = serde_json::from_slice(&spliced).unwrap();
        let ordinary = answer(CallToolResult::structured(
            serde_json::to_value(&report).unwrap(),
        ));
        let ordinary = serde_json::to_value(&ordinary).unwrap();
        assert_eq!(
            spliced["result"]["structuredContent"],
            ordinary["result"]["structuredContent"]
        );
        let text = spliced["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            ordinary["result"]["structuredContent"]
        );
        assert_eq!(spliced["id"], 7);
        assert!(
            !String::from_utf8_lossy(&serde_json::to_vec(&spliced).unwrap()).contains("fc-status-")
        );
    }

    #[test]
    fn other_answers_are_not_marked() {
        assert!(!is_marked(&answer(CallToolResult::structured(
            serde_json::json!({"a": 1})
        ))));
        let mut text_only = CallToolResult::structured(serde_json::json!({"a": 1}));
        text_only.content = vec![ContentBlock::text("~fc-status-text-guess~")];
        assert!(!is_marked(&answer(text_only)));
    }
}
