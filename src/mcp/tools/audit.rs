//! The audit family: `revoke_token` (decided and recorded by `mcp::guard`; the audit log's
//! resources are in `mcp::resources`).

use serde_json::{Value, json};

use super::call::{ToolCall, ToolFuture, answer};
use super::{Handler, Hints, ToolEntry};
use crate::auth::permissions::Permission;

pub const TOOLS: &[ToolEntry] = &[ToolEntry {
    name: "revoke_token",
    title: "Revoke a token or a subject",
    description: "Adds a token id (`jti`) and/or a subject to the denylist, persisted on \
        the drone; matching sessions end at once. Needs ADMIN.",
    input_schema: revoke_schema,
    output_schema: revoke_result_schema,
    permission: Permission::ADMIN,
    hints: Hints {
        destructive: true,
        ..Hints::CHANGE
    },
    needs_camera: false,
    handler: Handler::Run(revoke_token),
}];

fn revoke_token(call: ToolCall) -> ToolFuture {
    answer(async move {
        let arguments = Value::Object(call.arguments.clone());
        call.guard.revoke(&call.session, &arguments).await
    })
}

/// Result of `revoke_token` (written by `Guard::revoke`).
fn revoke_result_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "revoked_jtis": {"type": "integer", "minimum": 0, "description": "Token ids on the denylist now."},
            "revoked_subjects": {"type": "integer", "minimum": 0, "description": "Subjects on the denylist now."},
            "persisted": {"type": "boolean", "description": "Written to auth.revocation_path."}
        },
        "required": ["revoked_jtis", "revoked_subjects", "persisted"]
    })
}

fn revoke_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "jti": {"type": "string", "minLength": 1, "maxLength": 128},
            "subject": {"type": "string", "minLength": 1, "maxLength": 128},
        },
        "additionalProperties": false,
    })
}
