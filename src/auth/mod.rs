//! Identity, roles, one pilot in command, rate limits and revocation.
//!
//! Everything here is sans-IO. [`Gate`] composes the cores; the MCP shell owns one behind a
//! mutex (never held across an await) and asks it before every request.
//!
//! **Where the token travels:** in the MCP `initialize` request, at
//! `params._meta["flight-companion/token"]` ([`TOKEN_META_KEY`]), as a compact JWT.
//! A session keeps the identity of its `initialize`; expiry and revocation are checked
//! again on every call, and an expired session must initialize again with a fresh token.
//!
//! Call order of [`Gate`]: `handle_initialize` for each `initialize`; `authorize_method`,
//! `authorize_tool` or `authorize_resource` before each request; `handle_control` for the
//! lease tools; `handle_session_end` when a session ends; `poll_expired(now)` on a timer
//! (the lease of a silent holder).

pub mod lease;
pub mod permissions;
pub mod rate;
pub mod revocation;
pub mod security;
pub mod shell;
pub mod token;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::role::Role;
use lease::{ControlLease, LeaseOutcome, LeaseView};
use permissions::Class;
use rate::TokenBucket;
use revocation::Denylist;
use security::{SecurityEvents, SecuritySummary};
use token::{Identity, VerifierConfig};

/// The `_meta` key of the `initialize` request that carries the JWT.
pub const TOKEN_META_KEY: &str = "flight-companion/token";

/// Limits per session.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    pub calls_per_s: f64,
    pub calls_burst: u32,
    pub motion_calls_per_s: f64,
    pub motion_calls_burst: u32,
}

/// Everything the gate is built from.
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub verifier: VerifierConfig,
    pub denylist: Denylist,
    /// Sessions without a token get READ_ONLY (only with `danger_allow_anonymous`).
    pub allow_anonymous: bool,
    pub lease_timeout: Duration,
    pub limits: RateLimits,
}

/// A refusal: a stable kind (audit, summary), the message the client reads, and when to
/// retry if waiting helps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub kind: &'static str,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl Denial {
    fn new(kind: &'static str, message: impl Into<String>) -> Denial {
        Denial {
            kind,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// Who is calling, as the tool handlers and the audit log see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub session: String,
    pub subject: String,
    pub role: Role,
}

#[derive(Debug)]
struct SessionAuth {
    identity: Identity,
    calls: TokenBucket,
    motion: TokenBucket,
}

/// Result of the control tools, with the session to notify on a takeover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlResult {
    Granted,
    TakenOver {
        previous_session: String,
        previous_subject: String,
    },
    Refused(Denial),
    Released,
    NotHeld,
}

/// The authorization core.
#[derive(Debug)]
pub struct Gate {
    config: GateConfig,
    sessions: HashMap<String, SessionAuth>,
    lease: ControlLease,
    events: SecurityEvents,
    /// Tool calls in progress per session: a holder waiting on a long `goto` is not silent.
    in_flight: HashMap<String, u32>,
}

impl Gate {
    pub fn new(config: GateConfig) -> Gate {
        Gate {
            lease: ControlLease::new(config.lease_timeout),
            config,
            sessions: HashMap::new(),
            events: SecurityEvents::default(),
            in_flight: HashMap::new(),
        }
    }

    /// Records a security event in the summary (the caller writes the audit record).
    pub fn note(&mut self, now: Instant, kind: &'static str) {
        self.events.handle_event(now, kind);
    }

    fn deny(&mut self, now: Instant, denial: Denial) -> Denial {
        self.events.handle_event(now, denial.kind);
        denial
    }

    /// Verifies the token of an `initialize` and binds the identity to `session`.
    pub fn handle_initialize(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        session: &str,
        token: Option<&str>,
    ) -> Result<Identity, Denial> {
        self.sessions.remove(session);
        self.lease.handle_session_end(session);
        let identity = match token {
            None if self.config.allow_anonymous => Identity {
                subject: "anonymous".into(),
                role: Role::ReadOnly,
                jti: None,
                kid: String::new(),
                expires_unix_s: u64::MAX,
            },
            token => {
                let verified =
                    token::verify(token.unwrap_or_default(), &self.config.verifier, now_unix_s);
                match verified {
                    Ok(id) => id,
                    Err(e) => {
                        let kind = e.kind();
                        return Err(self.deny(now, Denial::new(kind, e.to_string())));
                    }
                }
            }
        };
        if let Some(why) = self.config.denylist.check(&identity) {
            return Err(self.deny(now, Denial::new("revoked_token", why)));
        }
        let l = self.config.limits;
        self.sessions.insert(
            session.to_owned(),
            SessionAuth {
                identity: identity.clone(),
                calls: TokenBucket::new(l.calls_burst, l.calls_per_s),
                motion: TokenBucket::new(l.motion_calls_burst, l.motion_calls_per_s),
            },
        );
        Ok(identity)
    }

    /// Identity checks shared by every request: known, not expired, not revoked.
    fn session_caller(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        session: &str,
    ) -> Result<Caller, Denial> {
        let skew = self.config.verifier.clock_skew_s;
        let Some(s) = self.sessions.get(session) else {
            return Err(self.deny(
                now,
                Denial::new(
                    "unauthenticated",
                    "this session is not authenticated: initialize with a token",
                ),
            ));
        };
        if s.identity.expires_unix_s.saturating_add(skew) <= now_unix_s {
            self.sessions.remove(session);
            self.lease.handle_session_end(session);
            return Err(self.deny(
                now,
                Denial::new(
                    "expired_token",
                    "the session's token has expired: get a new token and initialize again",
                ),
            ));
        }
        if let Some(why) = self.config.denylist.check(&s.identity) {
            self.sessions.remove(session);
            self.lease.handle_session_end(session);
            return Err(self.deny(now, Denial::new("revoked_token", why)));
        }
        self.lease.handle_activity(now, session);
        Ok(Caller {
            session: session.to_owned(),
            subject: s.identity.subject.clone(),
            role: s.identity.role,
        })
    }

    fn role_at_least(
        &mut self,
        now: Instant,
        caller: &Caller,
        least: Role,
        what: &str,
    ) -> Result<(), Denial> {
        if caller.role >= least {
            return Ok(());
        }
        Err(self.deny(
            now,
            Denial::new(
                "role_denied",
                format!(
                    "{what} needs role {least} or above; {} has {}",
                    caller.subject, caller.role
                ),
            ),
        ))
    }

    fn take_call(&mut self, now: Instant, session: &str, motion: bool) -> Result<(), Denial> {
        let Some(s) = self.sessions.get_mut(session) else {
            return Ok(());
        };
        let result = s
            .calls
            .take(now)
            .and_then(|()| if motion { s.motion.take(now) } else { Ok(()) });
        match result {
            Ok(()) => Ok(()),
            Err(wait) => {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
                let which = if motion { "motion commands" } else { "calls" };
                let mut d = Denial::new(
                    "rate_limited",
                    format!("too many {which} from this session; retry in {ms} ms"),
                );
                d.retry_after_ms = Some(ms);
                Err(self.deny(now, d))
            }
        }
    }

    /// Any JSON-RPC request other than `initialize`, `tools/call` and `resources/read`.
    pub fn authorize_method(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        session: &str,
        method: &str,
    ) -> Result<Caller, Denial> {
        let caller = self.session_caller(now, now_unix_s, session)?;
        self.role_at_least(now, &caller, permissions::method(method), method)?;
        self.take_call(now, session, false)?;
        Ok(caller)
    }

    /// `tools/call` of `tool`: role, rate limits (not for the e-stop), and the lease for motion.
    pub fn authorize_tool(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        session: &str,
        tool: &str,
    ) -> Result<Caller, Denial> {
        let caller = self.session_caller(now, now_unix_s, session)?;
        let p = permissions::tool(tool);
        self.role_at_least(now, &caller, p.role, tool)?;
        if p.class == Class::EmergencyStop {
            return Ok(caller);
        }
        // The lease before the buckets: a refused motion does not use up the budget.
        if p.needs_lease()
            && let Err(why) = self.lease.check(now, session)
        {
            return Err(self.deny(now, Denial::new("no_control_lease", why)));
        }
        self.take_call(now, session, p.class == Class::Motion)?;
        *self.in_flight.entry(session.to_owned()).or_default() += 1;
        Ok(caller)
    }

    /// `resources/read` (and subscribe) of `uri`.
    pub fn authorize_resource(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        session: &str,
        uri: &str,
    ) -> Result<Caller, Denial> {
        let caller = self.session_caller(now, now_unix_s, session)?;
        self.role_at_least(now, &caller, permissions::resource(uri), uri)?;
        self.take_call(now, session, false)?;
        Ok(caller)
    }

    /// The verified identity of a session, if it is authenticated and not expired.
    pub fn identity(&self, now_unix_s: u64, session: &str) -> Option<&Identity> {
        let skew = self.config.verifier.clock_skew_s;
        self.sessions
            .get(session)
            .map(|s| &s.identity)
            .filter(|id| id.expires_unix_s.saturating_add(skew) > now_unix_s)
            .filter(|id| self.config.denylist.check(id).is_none())
    }

    /// The role of a session, for filtering lists (None: not authenticated).
    pub fn role(&self, session: &str) -> Option<Role> {
        self.sessions.get(session).map(|s| s.identity.role)
    }

    /// `request_control` (`request = true`) or `release_control`, already authorized.
    pub fn handle_control(
        &mut self,
        now: Instant,
        caller: &Caller,
        request: bool,
    ) -> ControlResult {
        if !request {
            return if self.lease.handle_release(now, &caller.session) {
                ControlResult::Released
            } else {
                ControlResult::NotHeld
            };
        }
        match self
            .lease
            .handle_request(now, &caller.session, &caller.subject, caller.role)
        {
            LeaseOutcome::Granted => ControlResult::Granted,
            LeaseOutcome::TakenOver {
                previous_session,
                previous_subject,
            } => {
                self.events.handle_event(now, "control_takeover");
                ControlResult::TakenOver {
                    previous_session,
                    previous_subject,
                }
            }
            LeaseOutcome::Refused {
                holder_subject,
                expires_in,
            } => {
                let ms = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
                let mut d = Denial::new(
                    "control_refused",
                    format!(
                        "{holder_subject} holds the control lease; it expires after {ms} ms of silence, or an ADMIN may take over"
                    ),
                );
                d.retry_after_ms = Some(ms);
                ControlResult::Refused(self.deny(now, d))
            }
        }
    }

    /// A tool call that `authorize_tool` allowed has finished (answered or failed).
    pub fn handle_call_finished(&mut self, now: Instant, session: &str) {
        if let Some(n) = self.in_flight.get_mut(session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(session);
            }
        }
        self.lease.handle_activity(now, session);
    }

    /// The session ended (closed, timed out, replaced).
    pub fn handle_session_end(&mut self, session: &str) {
        self.in_flight.remove(session);
        self.sessions.remove(session);
        self.lease.handle_session_end(session);
    }

    /// Ends a lease whose holder went silent: (session, subject).
    pub fn poll_expired(&mut self, now: Instant) -> Option<(String, String)> {
        // A holder with a call in progress is waiting on the vehicle, not silent.
        if let Some(holder) = self.lease.holder_session_any().map(str::to_owned)
            && self.in_flight.get(&holder).is_some_and(|n| *n > 0)
        {
            self.lease.handle_activity(now, &holder);
            return None;
        }
        let expired = self.lease.poll_expired(now);
        if expired.is_some() {
            self.events.handle_event(now, "control_expired");
        }
        expired
    }

    /// Adds to the denylist (ADMIN's `revoke_token`) and ends matching sessions at once.
    /// Returns the whole list to persist.
    pub fn revoke(&mut self, jti: Option<&str>, subject: Option<&str>) -> Result<Denylist, String> {
        if jti.is_none() && subject.is_none() {
            return Err("give `jti`, `subject` or both".into());
        }
        if !self.config.denylist.revoke(jti, subject) {
            return Err(format!(
                "the denylist is full ({} entries)",
                revocation::ENTRIES_MAX
            ));
        }
        let denylist = &self.config.denylist;
        let ended: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| denylist.check(&s.identity).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for s in ended {
            self.handle_session_end(&s);
        }
        Ok(self.config.denylist.clone())
    }

    pub fn lease(&self, now: Instant) -> Option<LeaseView> {
        self.lease.view(now)
    }

    pub fn lease_holder(&self, now: Instant) -> Option<&str> {
        self.lease.holder_session(now)
    }

    pub fn security_summary(&mut self, now: Instant) -> SecuritySummary {
        self.events.summary(now)
    }
}

#[cfg(test)]
mod tests {
    use super::token::tests::{NOW, claims, fixture};
    use super::token::{Claims, KeyAlg, issue};
    use super::*;

    fn gate() -> (Gate, impl Fn(&str, &str) -> String) {
        let f = fixture();
        let config = GateConfig {
            verifier: f.config.clone(),
            denylist: Denylist::default(),
            allow_anonymous: false,
            lease_timeout: Duration::from_secs(5),
            limits: RateLimits {
                calls_per_s: 2.0,
                calls_burst: 5,
                motion_calls_per_s: 1.0,
                motion_calls_burst: 2,
            },
        };
        let key = f.ed_private.clone();
        let mint = move |role: &str, sub: &str| {
            issue(
                key.as_bytes(),
                KeyAlg::EdDsa,
                "ed1",
                &Claims {
                    sub: sub.into(),
                    jti: Some(format!("jti-{sub}")),
                    ..claims(role)
                },
            )
            .unwrap()
        };
        (Gate::new(config), mint)
    }

    #[test]
    fn roles_lease_and_limits_together() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        assert_eq!(
            g.authorize_tool(t0, NOW, "s0", "get_status")
                .unwrap_err()
                .kind,
            "unauthenticated"
        );
        assert_eq!(
            g.handle_initialize(t0, NOW, "s0", None).unwrap_err().kind,
            "missing_token"
        );
        g.handle_initialize(t0, NOW, "ro", Some(&mint("READ_ONLY", "viewer")))
            .unwrap();
        g.handle_initialize(t0, NOW, "a", Some(&mint("OPERATOR", "alice")))
            .unwrap();
        g.handle_initialize(t0, NOW, "b", Some(&mint("OPERATOR", "bob")))
            .unwrap();
        let d = g.authorize_tool(t0, NOW, "ro", "arm").unwrap_err();
        assert_eq!(d.kind, "role_denied");
        assert!(d.message.contains("OPERATOR"), "{}", d.message);
        assert!(g.authorize_tool(t0, NOW, "ro", "get_status").is_ok());
        // Motion without the lease.
        assert_eq!(
            g.authorize_tool(t0, NOW, "a", "arm").unwrap_err().kind,
            "no_control_lease"
        );
        let a = g.authorize_tool(t0, NOW, "a", "request_control").unwrap();
        assert_eq!(g.handle_control(t0, &a, true), ControlResult::Granted);
        let b = g.authorize_tool(t0, NOW, "b", "request_control").unwrap();
        assert!(matches!(
            g.handle_control(t0, &b, true),
            ControlResult::Refused(_)
        ));
        assert!(g.authorize_tool(t0, NOW, "a", "arm").is_ok());
        assert_eq!(
            g.authorize_tool(t0, NOW, "b", "arm").unwrap_err().kind,
            "no_control_lease"
        );
        // The e-stop: any authenticated role, no lease, never limited.
        for _ in 0..100 {
            assert!(g.authorize_tool(t0, NOW, "ro", "emergency_stop").is_ok());
        }
        // Motion limit (burst 2; one used above).
        assert!(g.authorize_tool(t0, NOW, "a", "takeoff").is_ok());
        let d = g.authorize_tool(t0, NOW, "a", "goto").unwrap_err();
        assert_eq!(d.kind, "rate_limited");
        assert!(d.retry_after_ms.is_some());
        // ... while the e-stop from the same session still passes.
        assert!(g.authorize_tool(t0, NOW, "a", "emergency_stop").is_ok());
        // Every allowed call is answered (the e-stops and the ones above).
        for _ in 0..110 {
            g.handle_call_finished(t0, "a");
            g.handle_call_finished(t0, "ro");
        }
        // Silence: the lease expires.
        let late = t0 + Duration::from_secs(6);
        assert_eq!(g.poll_expired(late), Some(("a".into(), "alice".into())));
        assert!(g.security_summary(late).last_hour["rate_limited"] >= 1);
    }

    #[test]
    fn expiry_and_revocation_are_checked_on_every_call() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        g.handle_initialize(t0, NOW, "a", Some(&mint("ADMIN", "alice")))
            .unwrap();
        assert!(g.authorize_tool(t0, NOW, "a", "get_status").is_ok());
        let d = g
            .authorize_tool(t0, NOW + 700, "a", "get_status")
            .unwrap_err();
        assert_eq!(d.kind, "expired_token");
        assert_eq!(
            g.authorize_tool(t0, NOW, "a", "get_status")
                .unwrap_err()
                .kind,
            "unauthenticated"
        );
        g.handle_initialize(t0, NOW, "a", Some(&mint("ADMIN", "alice")))
            .unwrap();
        g.handle_initialize(t0, NOW, "b", Some(&mint("OPERATOR", "bob")))
            .unwrap();
        g.revoke(Some("jti-bob"), None).unwrap();
        assert_eq!(
            g.authorize_tool(t0, NOW, "b", "get_status")
                .unwrap_err()
                .kind,
            "unauthenticated"
        );
        assert_eq!(
            g.handle_initialize(t0, NOW, "b", Some(&mint("OPERATOR", "bob")))
                .unwrap_err()
                .kind,
            "revoked_token"
        );
    }

    #[test]
    fn a_holder_waiting_on_a_long_call_keeps_the_lease() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        g.handle_initialize(t0, NOW, "a", Some(&mint("OPERATOR", "alice")))
            .unwrap();
        let a = g.authorize_tool(t0, NOW, "a", "request_control").unwrap();
        g.handle_control(t0, &a, true);
        g.handle_call_finished(t0, "a");
        g.authorize_tool(t0, NOW, "a", "goto").unwrap();
        // 30 s of flying, polled every second: never expires.
        for s in 1..=30 {
            assert_eq!(g.poll_expired(t0 + Duration::from_secs(s)), None);
        }
        g.handle_call_finished(t0 + Duration::from_secs(30), "a");
        assert!(
            g.authorize_tool(t0 + Duration::from_secs(31), NOW, "a", "land")
                .is_ok()
        );
        g.handle_call_finished(t0 + Duration::from_secs(31), "a");
        // Then silence does expire it.
        assert!(g.poll_expired(t0 + Duration::from_secs(37)).is_some());
    }

    #[test]
    fn admin_takeover_names_the_previous_holder() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        g.handle_initialize(t0, NOW, "a", Some(&mint("OPERATOR", "alice")))
            .unwrap();
        g.handle_initialize(t0, NOW, "z", Some(&mint("ADMIN", "root")))
            .unwrap();
        let a = g.authorize_tool(t0, NOW, "a", "request_control").unwrap();
        g.handle_control(t0, &a, true);
        let z = g.authorize_tool(t0, NOW, "z", "request_control").unwrap();
        assert_eq!(
            g.handle_control(t0, &z, true),
            ControlResult::TakenOver {
                previous_session: "a".into(),
                previous_subject: "alice".into()
            }
        );
        assert_eq!(
            g.authorize_tool(t0, NOW, "a", "arm").unwrap_err().kind,
            "no_control_lease"
        );
    }

    #[test]
    fn anonymous_only_when_allowed_and_read_only() {
        let (mut g, _) = gate();
        let t0 = Instant::now();
        g.config.allow_anonymous = true;
        assert_eq!(
            g.handle_initialize(t0, NOW, "x", None).unwrap().role,
            Role::ReadOnly
        );
        assert!(g.authorize_tool(t0, NOW, "x", "get_status").is_ok());
        assert_eq!(
            g.authorize_tool(t0, NOW, "x", "arm").unwrap_err().kind,
            "role_denied"
        );
    }
}
