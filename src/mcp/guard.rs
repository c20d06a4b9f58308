//! The gate and the audit log as the MCP handlers use them.
//!
//! One [`Guard`] per server, shared by every session: it turns `auth::Gate` verdicts into
//! JSON-RPC errors, writes audit records, and delivers lease notices to other sessions.
//! The gate's mutex is never held across an await.

// Lease notices go out as `notifications/message`: rmcp marks logging deprecated for MCP
// 2026-07-28, but this transport serves versions where it is part of the protocol.
#![allow(deprecated)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::Peer;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};

use super::errors;
use crate::audit::{AuditHandle, Call, Event};
use crate::auth::shell::unix_s_now;
use crate::auth::{Caller, ControlResult, Denial, Gate};

/// How long a call waits for its audit record before answering anyway (and counting it).
pub const AUDIT_ACK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Guard {
    gate: Mutex<Gate>,
    pub audit: AuditHandle,
    peers: Mutex<HashMap<String, Peer<RoleServer>>>,
    revocation_path: Option<PathBuf>,
}

fn error_of(denial: &Denial) -> ErrorData {
    let code = match denial.kind {
        "rate_limited" => errors::RATE_LIMITED,
        "role_denied" | "no_control_lease" | "control_refused" => errors::FORBIDDEN,
        _ => errors::UNAUTHENTICATED,
    };
    let mut data = json!({"kind": denial.kind});
    if let Some(ms) = denial.retry_after_ms {
        data["retry_after_ms"] = json!(ms);
    }
    ErrorData::new(
        rmcp::model::ErrorCode(code),
        denial.message.clone(),
        Some(data),
    )
}

impl Guard {
    pub fn new(gate: Gate, audit: AuditHandle, revocation_path: Option<PathBuf>) -> Guard {
        Guard {
            gate: Mutex::new(gate),
            audit,
            peers: Mutex::new(HashMap::new()),
            revocation_path,
        }
    }

    fn with_gate<T>(&self, f: impl FnOnce(&mut Gate) -> T) -> Option<T> {
        self.gate.lock().ok().map(|mut g| f(&mut g))
    }

    fn security(&self, kind: &str, session: &str, subject: &str, detail: String) {
        self.audit.record(Event::Security {
            kind: kind.into(),
            session: session.into(),
            subject: subject.into(),
            detail,
        });
    }

    /// Verifies the token of `initialize` and remembers the session's peer.
    pub fn initialize(
        &self,
        session: &str,
        token: Option<&str>,
        peer: Peer<RoleServer>,
    ) -> Result<(), ErrorData> {
        let now = Instant::now();
        let result = self
            .with_gate(|g| g.handle_initialize(now, unix_s_now(), session, token))
            .unwrap_or_else(|| {
                Err(Denial {
                    kind: "internal",
                    message: "authorization unavailable".into(),
                    retry_after_ms: None,
                })
            });
        match result {
            Ok(id) => {
                if let Ok(mut peers) = self.peers.lock() {
                    peers.insert(session.to_owned(), peer);
                }
                self.audit.record(Event::Security {
                    kind: "authenticated".into(),
                    session: session.into(),
                    subject: id.subject.clone(),
                    detail: format!("role {} key {} jti {:?}", id.role, id.kid, id.jti),
                });
                Ok(())
            }
            Err(d) => {
                tracing::warn!(
                    session = %crate::audit::escape(session),
                    kind = d.kind,
                    "initialize refused: {}",
                    crate::audit::escape(&d.message)
                );
                self.security(
                    d.kind,
                    session,
                    "",
                    format!("initialize refused: {}", d.message),
                );
                Err(error_of(&d))
            }
        }
    }

    fn denied(&self, session: &str, target: &str, d: Denial) -> ErrorData {
        self.security(d.kind, session, "", format!("{target}: {}", d.message));
        error_of(&d)
    }

    pub fn authorize_tool(&self, session: &str, tool: &str) -> Result<Caller, ErrorData> {
        let now = Instant::now();
        match self.with_gate(|g| g.authorize_tool(now, unix_s_now(), session, tool)) {
            Some(Ok(c)) => Ok(c),
            Some(Err(d)) => Err(self.denied(session, &format!("tools/call:{tool}"), d)),
            None => Err(errors::internal("authorization unavailable")),
        }
    }

    pub fn authorize_resource(&self, session: &str, uri: &str) -> Result<Caller, ErrorData> {
        let now = Instant::now();
        match self.with_gate(|g| g.authorize_resource(now, unix_s_now(), session, uri)) {
            Some(Ok(c)) => Ok(c),
            Some(Err(d)) => Err(self.denied(session, &format!("resources:{uri}"), d)),
            None => Err(errors::internal("authorization unavailable")),
        }
    }

    pub fn authorize_method(&self, session: &str, method: &str) -> Result<Caller, ErrorData> {
        let now = Instant::now();
        match self.with_gate(|g| g.authorize_method(now, unix_s_now(), session, method)) {
            Some(Ok(c)) => Ok(c),
            Some(Err(d)) => Err(self.denied(session, method, d)),
            None => Err(errors::internal("authorization unavailable")),
        }
    }

    pub fn role(&self, session: &str) -> Option<crate::role::Role> {
        self.with_gate(|g| g.role(session)).flatten()
    }

    /// Writes the record of a finished call; waits for the disk unless `wait` is false.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_call(
        &self,
        caller: &Caller,
        target: &str,
        request_id: String,
        args: &Value,
        outcome: String,
        started: Instant,
        wait: bool,
    ) {
        let finished = Instant::now();
        self.with_gate(|g| g.handle_call_finished(finished, &caller.session));
        let (args_sha256, args) = Call::args_of(&args.to_string());
        let event = Event::Call(Call {
            session: caller.session.clone(),
            subject: caller.subject.clone(),
            role: caller.role.name().into(),
            target: target.into(),
            request_id,
            args_sha256,
            args,
            decision: "allow".into(),
            reason: String::new(),
            outcome,
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
        if wait && self.audit.enabled() {
            if !self.audit.record_acked(event, AUDIT_ACK_TIMEOUT).await {
                tracing::error!(target, "audit record of a call not confirmed in time");
            }
        } else {
            self.audit.record(event);
        }
    }

    async fn notify(&self, session: &str, data: Value) {
        let peer = self.peers.lock().ok().and_then(|p| p.get(session).cloned());
        if let Some(peer) = peer {
            let mut param = LoggingMessageNotificationParam::new(LoggingLevel::Warning, data);
            param.logger = Some("flight-companion/control".into());
            let _ = peer.notify_logging_message(param).await;
        }
    }

    /// The `emergency_stop` fast path (the MQTT shell, before any session queue): a stop is
    /// never refused, not even to an unauthenticated client (stopping is always safe, and
    /// the panic topic accepts any client of the broker anyway); it is recorded with the
    /// identity if there is one, and without one as a security event. Never waits.
    pub fn record_emergency_stop(&self, session: &str, request_id: &Value, args: &Value) {
        let identity = self
            .with_gate(|g| g.identity(unix_s_now(), session).cloned())
            .flatten();
        let (subject, role) = match &identity {
            Some(id) => (id.subject.clone(), id.role.name().to_owned()),
            None => {
                self.security(
                    "unauthenticated_estop",
                    session,
                    "",
                    "emergency_stop from a session without a valid token: carried out".into(),
                );
                (String::new(), "NONE".to_owned())
            }
        };
        let (args_sha256, args) = Call::args_of(&args.to_string());
        self.audit.record(Event::Call(Call {
            session: session.into(),
            subject,
            role,
            target: "tools/call:emergency_stop".into(),
            request_id: request_id.to_string(),
            args_sha256,
            args,
            decision: "allow".into(),
            reason: "emergency stop: never refused, never limited".into(),
            outcome: "sent to the e-stop channel".into(),
            latency_us: 0,
        }));
    }

    /// `request_control` / `release_control`.
    pub async fn control(
        &self,
        caller: &Caller,
        request: bool,
    ) -> Result<CallToolResult, ErrorData> {
        let now = Instant::now();
        let result = self
            .with_gate(|g| g.handle_control(now, caller, request))
            .ok_or_else(|| errors::internal("authorization unavailable"))?;
        let lease = |change: &str, detail: String| Event::Lease {
            change: change.into(),
            session: caller.session.clone(),
            subject: caller.subject.clone(),
            detail,
        };
        let text = match result {
            ControlResult::Granted => {
                self.audit
                    .record(lease("granted", format!("role {}", caller.role.name())));
                format!(
                    "control granted to {}: motion tools are yours; any call keeps the lease alive",
                    caller.subject
                )
            }
            ControlResult::TakenOver {
                previous_session,
                previous_subject,
            } => {
                self.security(
                    "control_takeover",
                    &caller.session,
                    &caller.subject,
                    format!("took control from {previous_subject} ({previous_session})"),
                );
                self.audit.record(lease(
                    "taken_over",
                    format!("from {previous_subject} ({previous_session})"),
                ));
                self.notify(&previous_session, json!({"event": "control_taken_over", "by": caller.subject, "role": caller.role})).await;
                format!("control taken over from {previous_subject}, who has been told")
            }
            ControlResult::Refused(d) => {
                self.security(d.kind, &caller.session, &caller.subject, d.message.clone());
                self.audit.record(lease("refused", d.message.clone()));
                return Err(error_of(&d));
            }
            ControlResult::Released => {
                self.audit.record(lease("released", String::new()));
                "control released".into()
            }
            ControlResult::NotHeld => {
                "this session did not hold control; nothing to release".into()
            }
        };
        Ok(CallToolResult::structured(
            json!({"message": text, "holder": self.lease_view()}),
        ))
    }

    fn lease_view(&self) -> Value {
        let now = Instant::now();
        self.with_gate(|g| serde_json::to_value(g.lease(now)).unwrap_or(Value::Null))
            .unwrap_or(Value::Null)
    }

    /// ADMIN's `revoke_token`.
    pub async fn revoke(&self, caller: &Caller, args: &Value) -> CallToolResult {
        let field = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
        let unknown: Vec<&String> = args
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| *k != "jti" && *k != "subject")
                    .collect()
            })
            .unwrap_or_default();
        if !unknown.is_empty() {
            return super::server::tool_error(format!(
                "unknown arguments {unknown:?}; revoke_token takes `jti` and/or `subject` (strings)"
            ));
        }
        let (jti, subject) = (field("jti"), field("subject"));
        if [&jti, &subject].iter().any(|v| {
            v.as_ref().is_some_and(|s| {
                s.is_empty() || s.chars().count() > crate::auth::token::CLAIM_CHARS_MAX
            })
        }) {
            return super::server::tool_error("jti and subject must be 1 to 128 characters".into());
        }
        let result = self.with_gate(|g| g.revoke(jti.as_deref(), subject.as_deref()));
        match result {
            Some(Ok(list)) => {
                self.security(
                    "revocation",
                    &caller.session,
                    &caller.subject,
                    format!("revoked jti {jti:?} subject {subject:?}"),
                );
                let persisted = match &self.revocation_path {
                    Some(path) => match crate::auth::shell::persist_denylist(path, &list) {
                        Ok(()) => true,
                        Err(e) => {
                            return super::server::tool_error(format!(
                                "revoked in memory, but writing {} failed: {e}",
                                path.display()
                            ));
                        }
                    },
                    None => false,
                };
                CallToolResult::structured(
                    json!({"revoked_jtis": list.jtis.len(), "revoked_subjects": list.subjects.len(), "persisted": persisted}),
                )
            }
            Some(Err(e)) => super::server::tool_error(e),
            None => super::server::tool_error("authorization unavailable".into()),
        }
    }

    /// The security summary resource.
    pub fn security_json(&self) -> Value {
        let now = Instant::now();
        let summary = self.with_gate(|g| g.security_summary(now));
        json!({
            "summary": summary,
            "control": self.lease_view(),
            "audit": self.audit.status(),
        })
    }

    /// On a timer: ends the lease of a silent holder and tells it.
    pub async fn poll(&self) {
        let now = Instant::now();
        if let Some((session, subject)) = self.with_gate(|g| g.poll_expired(now)).flatten() {
            self.audit.record(Event::Lease {
                change: "expired".into(),
                session: session.clone(),
                subject: subject.clone(),
                detail: "the holder went silent; control is free".into(),
            });
            self.notify(&session, json!({"event": "control_expired"}))
                .await;
        }
    }

    pub fn session_ended(&self, session: &str) {
        self.with_gate(|g| g.handle_session_end(session));
        if let Ok(mut p) = self.peers.lock() {
            p.remove(session);
        }
    }
}
