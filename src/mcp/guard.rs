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
use crate::auth::permissions::Permission;
use crate::auth::shell::unix_s_now;
use crate::auth::{Caller, ControlResult, Denial, Gate, LeaseFate, Promotion, client_id_of};

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
        "sessions_full" | "identity_sessions_full" => errors::SERVER_BUSY,
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

    /// The one place security records are written: `session` is the client id (attested
    /// or claimed, as the detail says).
    fn security(&self, kind: &str, session: &str, subject: &str, detail: String) {
        self.audit.record(Event::Security {
            kind: kind.into(),
            session: session.into(),
            subject: subject.into(),
            detail,
        });
    }

    /// A security event the session table decided (`mcp::session::Action::Security`):
    /// `client_id` is broker-attested when `attested`, only claimed otherwise.
    pub fn security_event(
        &self,
        kind: &str,
        client_id: &str,
        attested: bool,
        subject: &str,
        detail: &str,
    ) {
        let now = Instant::now();
        if let Some(kind) = crate::mcp::guard::static_kind(kind) {
            self.with_gate(|g| g.note(now, kind));
        }
        let provenance = if attested {
            "broker-attested client id"
        } else {
            "client id claimed on the shared control topic, not attested"
        };
        let by = if subject.is_empty() {
            String::new()
        } else {
            format!("; it presented the token of subject {subject:?}")
        };
        self.security(
            kind,
            client_id,
            subject,
            format!("{detail}{by} [{provenance}: {client_id:?}]"),
        );
    }

    /// Verifies the `initialize` of a candidate (`generation` of `client_id`): its token or
    /// its broker identity, and the session limits. Nothing changes for anyone until
    /// [`Guard::promote`]. A refusal is recorded under the client id the initialize claimed.
    pub fn initialize(
        &self,
        client_id: &str,
        generation: u64,
        token: Option<&str>,
        peer: Peer<RoleServer>,
    ) -> Result<(), ErrorData> {
        let now = Instant::now();
        let result = self
            .with_gate(|g| g.handle_initialize(now, unix_s_now(), client_id, generation, token))
            .unwrap_or_else(|| {
                Err(Denial {
                    kind: "internal",
                    message: "authorization unavailable".into(),
                    retry_after_ms: None,
                })
            });
        match result {
            Ok(_) => {
                if let Ok(mut peers) = self.peers.lock() {
                    peers.insert(crate::auth::session_key(client_id, generation), peer);
                }
                Ok(())
            }
            Err(d) => {
                tracing::warn!(
                    client_id,
                    kind = d.kind,
                    "initialize refused: {}",
                    crate::audit::escape(&d.message)
                );
                self.security(
                    d.kind,
                    client_id,
                    "",
                    format!(
                        "initialize refused: {} [client id claimed on the shared control topic, not attested: {client_id:?}]",
                        d.message
                    ),
                );
                Err(error_of(&d))
            }
        }
    }

    /// The subject the gate verified for a candidate.
    pub fn candidate_subject(&self, client_id: &str, generation: u64) -> Option<String> {
        self.with_gate(|g| g.candidate_subject(client_id, generation))
            .flatten()
    }

    /// Whether a call uses the reserved pool (see `Gate::is_priority`).
    pub fn is_priority(&self, client_id: &str, generation: u64, permission: Permission) -> bool {
        let key = crate::auth::session_key(client_id, generation);
        self.with_gate(|g| g.is_priority(Instant::now(), &key, permission))
            .unwrap_or(false)
    }

    /// The candidate proved its client id on its RPC topic: it is the client's session now
    /// (replacing `replaced`, whose `cut_short` requests were answered with an error).
    /// Recorded with the broker-attested client id. Returns the sentence for the client
    /// when a session was replaced.
    pub fn promote(
        &self,
        client_id: &str,
        generation: u64,
        replaced: Option<u64>,
        cut_short: usize,
    ) -> Option<Promotion> {
        let now = Instant::now();
        let promotion = self
            .with_gate(|g| g.handle_promote(now, client_id, generation))
            .flatten()?;
        let id = &promotion.identity;
        self.audit.record(Event::Security {
            kind: "authenticated".into(),
            session: client_id.into(),
            subject: id.subject.clone(),
            detail: format!(
                "role {} key {} jti {:?}; client id attested by its RPC topic",
                id.role, id.kid, id.jti
            ),
        });
        if let Some(old) = replaced {
            if let Ok(mut peers) = self.peers.lock() {
                peers.remove(&crate::auth::session_key(client_id, old));
            }
            self.security(
                "session_replaced",
                client_id,
                &id.subject,
                format!(
                    "{client_id} initialized again: generation {old} ended ({cut_short} requests \
                     answered with an error); control lease: {}",
                    lease_sentence(&promotion.lease)
                ),
            );
        }
        Some(promotion)
    }

    fn denied(&self, session: &str, target: &str, d: Denial) -> ErrorData {
        self.security(
            d.kind,
            client_id_of(session),
            "",
            format!("{target}: {}", d.message),
        );
        error_of(&d)
    }

    /// `tools/call` of `tool`, which needs `permission` (its registry entry's).
    pub fn authorize_tool(
        &self,
        session: &str,
        tool: &str,
        permission: Permission,
    ) -> Result<Caller, ErrorData> {
        let now = Instant::now();
        match self.with_gate(|g| g.authorize_tool(now, unix_s_now(), session, tool, permission)) {
            Some(Ok(c)) => Ok(c),
            Some(Err(d)) => Err(self.denied(session, &format!("tools/call:{tool}"), d)),
            None => Err(errors::internal("authorization unavailable")),
        }
    }

    /// `resources/*` of `uri`, which needs `role` (its registry entry's).
    pub fn authorize_resource(
        &self,
        session: &str,
        uri: &str,
        role: crate::role::Role,
    ) -> Result<Caller, ErrorData> {
        let now = Instant::now();
        match self.with_gate(|g| g.authorize_resource(now, unix_s_now(), session, uri, role)) {
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
            session: caller.client_id.clone(),
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
    /// never refused, not even to a client without a session or a valid token (stopping is
    /// always safe, and the panic topic accepts any client of the broker anyway); it is
    /// recorded under the broker-attested client id, with the identity if there is one and
    /// as a security event without. Never waits. Returns how the stop names its author to
    /// every session: the subject, never the client id.
    pub fn record_emergency_stop(
        &self,
        client_id: &str,
        generation: Option<u64>,
        request_id: &Value,
        args: &Value,
    ) -> String {
        let identity = generation.and_then(|generation| {
            let key = crate::auth::session_key(client_id, generation);
            self.with_gate(|g| g.identity(unix_s_now(), &key).cloned())
                .flatten()
        });
        let (subject, role) = match &identity {
            Some(id) => (id.subject.clone(), id.role.name().to_owned()),
            None => {
                self.security(
                    "unauthenticated_estop",
                    client_id,
                    "",
                    "emergency_stop from a client without a verified session: carried out \
                     [broker-attested client id]"
                        .into(),
                );
                (String::new(), "NONE".to_owned())
            }
        };
        let (args_sha256, args) = Call::args_of(&args.to_string());
        self.audit.record(Event::Call(Call {
            session: client_id.into(),
            subject: subject.clone(),
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
        if subject.is_empty() {
            "a ground client without a session".into()
        } else {
            subject
        }
    }

    /// A message on the panic topic of `publisher` (the identity the broker attested: the
    /// topic's last level, which its ACL binds to the certificate). `acted` says whether it
    /// was carried out (a retained message never is). Returns how the stop names its author
    /// to every session: the subject mapped to that identity, never the client id.
    pub fn record_panic(&self, publisher: &str, reason: &str, acted: bool, note: &str) -> String {
        let subject = self.with_gate(|g| g.broker_subject(publisher)).flatten();
        let kind = if acted {
            "panic_topic_estop"
        } else {
            "panic_topic_ignored"
        };
        let now = Instant::now();
        self.with_gate(|g| g.note(now, kind));
        self.security(
            kind,
            publisher,
            subject.as_deref().unwrap_or(""),
            format!("{note}; reason {reason:?} [broker-attested client id: the panic topic's last level]"),
        );
        subject.unwrap_or_else(|| "a ground client without a mapped subject".into())
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
                    &caller.client_id,
                    &caller.subject,
                    format!(
                        "took control from {previous_subject} ({})",
                        client_id_of(&previous_session)
                    ),
                );
                self.audit.record(lease(
                    "taken_over",
                    format!(
                        "from {previous_subject} ({})",
                        client_id_of(&previous_session)
                    ),
                ));
                self.notify(&previous_session, json!({"event": "control_taken_over", "by": caller.subject, "role": caller.role})).await;
                format!("control taken over from {previous_subject}, who has been told")
            }
            ControlResult::Refused(d) => {
                self.security(
                    d.kind,
                    &caller.client_id,
                    &caller.subject,
                    d.message.clone(),
                );
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

    /// The subject holding the control lease now, if anyone does.
    pub fn lease_holder_subject(&self) -> Option<String> {
        let now = Instant::now();
        self.with_gate(|g| g.lease(now).map(|l| l.holder_subject))
            .flatten()
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
            return errors::tool_error(format!(
                "unknown arguments {unknown:?}; revoke_token takes `jti` and/or `subject` (strings)"
            ));
        }
        let (jti, subject) = (field("jti"), field("subject"));
        if [&jti, &subject].iter().any(|v| {
            v.as_ref().is_some_and(|s| {
                s.is_empty() || s.chars().count() > crate::auth::token::CLAIM_CHARS_MAX
            })
        }) {
            return errors::tool_error("jti and subject must be 1 to 128 characters".into());
        }
        let result = self.with_gate(|g| g.revoke(jti.as_deref(), subject.as_deref()));
        match result {
            Some(Ok(list)) => {
                self.security(
                    "revocation",
                    &caller.client_id,
                    &caller.subject,
                    format!("revoked jti {jti:?} subject {subject:?}"),
                );
                let persisted = match &self.revocation_path {
                    Some(path) => match crate::auth::shell::persist_denylist(path, &list) {
                        Ok(()) => true,
                        Err(e) => {
                            return errors::tool_error(format!(
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
            Some(Err(e)) => errors::tool_error(e),
            None => errors::tool_error("authorization unavailable".into()),
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
                session: client_id_of(&session).to_owned(),
                subject: subject.clone(),
                detail: "the holder went silent; control is free".into(),
            });
            self.notify(&session, json!({"event": "control_expired"}))
                .await;
        }
    }

    /// A session or a candidate ended (`session` is its key).
    pub fn session_ended(&self, session: &str) {
        self.with_gate(|g| g.handle_session_end(session));
        if let Ok(mut p) = self.peers.lock() {
            p.remove(session);
        }
    }
}

/// What the client of a replaced session is told about the lease.
pub fn lease_sentence(fate: &LeaseFate) -> &'static str {
    match fate {
        LeaseFate::NotHeld => "not held by the replaced session",
        LeaseFate::Kept => "kept: the same subject holds it in the new session",
        LeaseFate::Released => {
            "released: the new session is another subject or may not hold it; request_control again"
        }
    }
}

/// The security summary counts events by a `'static` kind: the kinds the session table and
/// the panic topic report.
pub fn static_kind(kind: &str) -> Option<&'static str> {
    const KINDS: &[&str] = &[
        "bad_client_id",
        "client_id_mismatch",
        "initialize_id_collision",
        "initialize_contested",
        "initialize_unconfirmed",
        "initialize_flood",
        "security_events_suppressed",
        "panic_topic_estop",
        "panic_topic_ignored",
    ];
    KINDS.iter().copied().find(|k| *k == kind)
}
