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
//! **Broker-attested identity.** A client that sends no token is who the broker
//! authenticated: its client id (the certificate CN with the dev-setup broker) is looked up in
//! `[[auth.broker_identity]]`, which gives a subject and a role. A token, when present, wins
//! (and a bad token is refused, never replaced by the broker identity). The MCP layer makes
//! sure the client id is attested before a session exists (`mcp::session`).
//!
//! **Sessions are keys** `{client_id}#{generation}` ([`session_key`]): a client that
//! initializes again gets a new key, so a call still running in the replaced session can
//! never act as, or be counted for, the new one.
//!
//! Call order of [`Gate`]: `handle_initialize` for each `initialize` (a candidate: nothing
//! it verifies is usable until `handle_promote`); `handle_promote` once its client proved
//! its id (ends the session it replaces and says what became of the lease);
//! `authorize_method`, `authorize_tool` or `authorize_resource` before each request;
//! `handle_control` for the lease tools; `handle_session_end` when a session or a candidate
//! ends; `poll_expired(now)` on a timer (the lease of a silent holder).

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
use permissions::{Class, Permission, Pool};
use rate::TokenBucket;
use revocation::Denylist;
use security::{SecurityEvents, SecuritySummary};
use token::{Identity, VerifierConfig};

/// The `_meta` key of the `initialize` request that carries the JWT (the transport's, which
/// the ground bridge shares).
pub use flight_companion_core::mcp::transport::TOKEN_META_KEY;

/// The `kid` of an identity the broker attested (no token).
pub const BROKER_KID: &str = "broker-identity";

/// The gate's key of a session: its client id and generation (`#` never occurs in a
/// client id).
pub fn session_key(client_id: &str, generation: u64) -> String {
    format!("{client_id}#{generation}")
}

/// The client id of a session key.
pub fn client_id_of(key: &str) -> &str {
    key.rsplit_once('#').map_or(key, |(cid, _)| cid)
}

/// How many sessions, and whose.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub sessions_max: usize,
    /// The last sessions under `sessions_max` only ADMIN identities may take.
    pub reserved_admin: usize,
    /// Sessions of one subject.
    pub identity_sessions_max: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            sessions_max: 64,
            reserved_admin: 2,
            identity_sessions_max: 4,
        }
    }
}

/// What became of the control lease when a session was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseFate {
    /// The replaced session did not hold it.
    NotHeld,
    /// Same subject, a role that may hold it: the new session holds it.
    Kept,
    /// Another subject or a lesser role: the lease is free.
    Released,
}

/// The outcome of [`Gate::handle_promote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub identity: Identity,
    pub lease: LeaseFate,
}

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
    /// Broker-attested client ids → (subject, role), for clients without a token.
    pub broker_identities: HashMap<String, (String, Role)>,
    pub sessions: SessionLimits,
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
    /// The gate's key ([`session_key`]).
    pub session: String,
    /// The client id the broker attested (the audit log's `session`).
    pub client_id: String,
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
    /// Verified `initialize`s whose client has not proven its id yet, by session key.
    candidates: HashMap<String, SessionAuth>,
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
            candidates: HashMap::new(),
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

    /// Verifies an `initialize` of `client_id` (generation `generation`): its token, or
    /// without one the broker identity of `client_id`, then the session limits. The identity
    /// is kept as a candidate: no session, lease or limit of anyone changes until
    /// [`Gate::handle_promote`].
    pub fn handle_initialize(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        client_id: &str,
        generation: u64,
        token: Option<&str>,
    ) -> Result<Identity, Denial> {
        let key = session_key(client_id, generation);
        self.candidates.remove(&key);
        let broker = self.config.broker_identities.get(client_id).cloned();
        let identity = match (token, broker) {
            (None, Some((subject, role))) => Identity {
                subject,
                role,
                jti: None,
                kid: BROKER_KID.into(),
                expires_unix_s: u64::MAX,
            },
            (None, None) if self.config.allow_anonymous => Identity {
                subject: "anonymous".into(),
                role: Role::ReadOnly,
                jti: None,
                kid: String::new(),
                expires_unix_s: u64::MAX,
            },
            (None, None) => {
                return Err(self.deny(
                    now,
                    Denial::new(
                        "missing_token",
                        format!(
                            "no token: put a JWT at params._meta[\"{TOKEN_META_KEY}\"] of \
                             initialize; client id {client_id} is not a broker identity this \
                             drone knows ([[auth.broker_identity]])"
                        ),
                    ),
                ));
            }
            (Some(token), _) => match token::verify(token, &self.config.verifier, now_unix_s) {
                Ok(id) => id,
                Err(e) => {
                    let kind = e.kind();
                    return Err(self.deny(now, Denial::new(kind, e.to_string())));
                }
            },
        };
        if let Some(why) = self.config.denylist.check(&identity) {
            return Err(self.deny(now, Denial::new("revoked_token", why)));
        }
        // Capacity: the session this one would replace does not count.
        let others = || {
            self.sessions
                .iter()
                .filter(|(k, _)| client_id_of(k) != client_id)
        };
        let limits = self.config.sessions;
        let same_subject = others()
            .filter(|(_, s)| s.identity.subject == identity.subject)
            .count();
        if same_subject >= limits.identity_sessions_max {
            return Err(self.deny(
                now,
                Denial::new(
                    "identity_sessions_full",
                    format!(
                        "{} already has {same_subject} sessions, the most one identity may hold \
                         (mcp.identity_sessions_max); end one first",
                        identity.subject
                    ),
                ),
            ));
        }
        let open = limits.sessions_max.saturating_sub(limits.reserved_admin);
        let running = others().count();
        if running >= open && identity.role < Role::Admin {
            return Err(self.deny(
                now,
                Denial::new(
                    "sessions_full",
                    format!(
                        "the server has {running} sessions; the last {} of its {} are kept for \
                         ADMIN (mcp.sessions_reserved_admin); try again later",
                        limits.reserved_admin, limits.sessions_max
                    ),
                ),
            ));
        }
        let l = self.config.limits;
        self.candidates.insert(
            key,
            SessionAuth {
                identity: identity.clone(),
                calls: TokenBucket::new(l.calls_burst, l.calls_per_s),
                motion: TokenBucket::new(l.motion_calls_burst, l.motion_calls_per_s),
            },
        );
        Ok(identity)
    }

    /// The subject `[[auth.broker_identity]]` gives a broker-attested client id.
    pub fn broker_subject(&self, client_id: &str) -> Option<String> {
        self.config
            .broker_identities
            .get(client_id)
            .map(|(subject, _)| subject.clone())
    }

    /// The subject of a verified candidate.
    pub fn candidate_subject(&self, client_id: &str, generation: u64) -> Option<String> {
        self.candidates
            .get(&session_key(client_id, generation))
            .map(|s| s.identity.subject.clone())
    }

    /// The candidate `generation` of `client_id` proved its id: it becomes the client's
    /// session; the session it replaces (any older generation) ends here, and the lease
    /// follows only to the same subject. `None` when the candidate is unknown.
    pub fn handle_promote(
        &mut self,
        now: Instant,
        client_id: &str,
        generation: u64,
    ) -> Option<Promotion> {
        let key = session_key(client_id, generation);
        let auth = self.candidates.remove(&key)?;
        let identity = auth.identity.clone();
        let replaced: Vec<String> = self
            .sessions
            .keys()
            .filter(|k| client_id_of(k) == client_id)
            .cloned()
            .collect();
        let mut lease = LeaseFate::NotHeld;
        for old in replaced {
            match self
                .lease
                .handle_replace(now, &old, &key, &identity.subject, identity.role)
            {
                Some(true) => lease = LeaseFate::Kept,
                Some(false) => lease = LeaseFate::Released,
                None => {}
            }
            self.sessions.remove(&old);
            self.in_flight.remove(&old);
        }
        self.sessions.insert(key, auth);
        Some(Promotion { identity, lease })
    }

    /// The call always gets through (the reserved pool, no rate limit): a motion towards
    /// safety (`Pool::Reserved`: hold, land, return home) of the lease holder; any other
    /// reserved tool (the e-stop reset) of a caller with its role.
    pub fn is_priority(&self, now: Instant, session: &str, permission: Permission) -> bool {
        let Some(s) = self.sessions.get(session) else {
            return false;
        };
        permission.pool == Pool::Reserved
            && match permission.class {
                Class::Motion => self.lease.holder_session(now) == Some(session),
                _ => s.identity.role >= permission.role,
            }
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
            client_id: client_id_of(session).to_owned(),
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

    /// `tools/call` of `tool`, which needs `p` (its registry entry's): role, rate limits (not
    /// for the e-stop), and the lease for motion.
    pub fn authorize_tool(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        session: &str,
        tool: &str,
        p: Permission,
    ) -> Result<Caller, Denial> {
        let caller = self.session_caller(now, now_unix_s, session)?;
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
        // Towards safety, the holder (or an ADMIN resetting the stop) is never rate-limited.
        if !self.is_priority(now, session, p) {
            self.take_call(now, session, p.class == Class::Motion)?;
        }
        *self.in_flight.entry(session.to_owned()).or_default() += 1;
        Ok(caller)
    }

    /// `resources/read` (and subscribe) of `uri`, which needs `role` (its registry entry's).
    pub fn authorize_resource(
        &mut self,
        now: Instant,
        now_unix_s: u64,
        session: &str,
        uri: &str,
        role: Role,
    ) -> Result<Caller, Denial> {
        let caller = self.session_caller(now, now_unix_s, session)?;
        self.role_at_least(now, &caller, role, uri)?;
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

    /// The session (or candidate) ended (closed, timed out, refused).
    pub fn handle_session_end(&mut self, session: &str) {
        self.in_flight.remove(session);
        self.sessions.remove(session);
        self.candidates.remove(session);
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
        let denylist = &self.config.denylist;
        self.candidates
            .retain(|_, s| denylist.check(&s.identity).is_none());
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

    /// The permissions of the tools these tests call: the registry's (`mcp::tools`), which
    /// the MCP server hands the gate with each call.
    fn needs(tool: &str) -> Permission {
        match tool {
            "get_status" => Permission::READ,
            "request_control" => Permission::CONTROL,
            "hold" | "land" | "return_home" => Permission::MOTION_TOWARDS_SAFETY,
            "arm" | "takeoff" | "goto" => Permission::MOTION,
            "emergency_stop" => Permission::EMERGENCY_STOP,
            "reset_emergency_stop" => Permission::ADMIN_TOWARDS_SAFETY,
            other => panic!("no permission for {other} in these tests"),
        }
    }

    /// `initialize` of `cid` (generation 1) and, when verified, its promotion: the session
    /// key is `{cid}#1`.
    fn init(
        g: &mut Gate,
        now: Instant,
        cid: &str,
        token: Option<&str>,
    ) -> Result<Identity, Denial> {
        let id = g.handle_initialize(now, NOW, cid, 1, token)?;
        g.handle_promote(now, cid, 1).unwrap();
        Ok(id)
    }

    fn gate_config(f: &super::token::tests::Fixture) -> GateConfig {
        GateConfig {
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
            broker_identities: HashMap::from([
                (
                    "gcs-1".to_string(),
                    ("station one".to_string(), Role::Operator),
                ),
                ("boss".to_string(), ("the boss".to_string(), Role::Admin)),
            ]),
            sessions: SessionLimits {
                sessions_max: 5,
                reserved_admin: 1,
                identity_sessions_max: 2,
            },
        }
    }

    fn gate() -> (Gate, impl Fn(&str, &str) -> String) {
        let f = fixture();
        let config = gate_config(&f);
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
            g.authorize_tool(t0, NOW, "s0#1", "get_status", needs("get_status"))
                .unwrap_err()
                .kind,
            "unauthenticated"
        );
        assert_eq!(
            init(&mut g, t0, "s0", None).unwrap_err().kind,
            "missing_token"
        );
        init(&mut g, t0, "ro", Some(&mint("READ_ONLY", "viewer"))).unwrap();
        init(&mut g, t0, "a", Some(&mint("OPERATOR", "alice"))).unwrap();
        init(&mut g, t0, "b", Some(&mint("OPERATOR", "bob"))).unwrap();
        let d = g
            .authorize_tool(t0, NOW, "ro#1", "arm", needs("arm"))
            .unwrap_err();
        assert_eq!(d.kind, "role_denied");
        assert!(d.message.contains("OPERATOR"), "{}", d.message);
        assert!(
            g.authorize_tool(t0, NOW, "ro#1", "get_status", needs("get_status"))
                .is_ok()
        );
        // Motion without the lease.
        assert_eq!(
            g.authorize_tool(t0, NOW, "a#1", "arm", needs("arm"))
                .unwrap_err()
                .kind,
            "no_control_lease"
        );
        let a = g
            .authorize_tool(t0, NOW, "a#1", "request_control", needs("request_control"))
            .unwrap();
        assert_eq!(g.handle_control(t0, &a, true), ControlResult::Granted);
        let b = g
            .authorize_tool(t0, NOW, "b#1", "request_control", needs("request_control"))
            .unwrap();
        assert!(matches!(
            g.handle_control(t0, &b, true),
            ControlResult::Refused(_)
        ));
        assert!(
            g.authorize_tool(t0, NOW, "a#1", "arm", needs("arm"))
                .is_ok()
        );
        assert_eq!(
            g.authorize_tool(t0, NOW, "b#1", "arm", needs("arm"))
                .unwrap_err()
                .kind,
            "no_control_lease"
        );
        // The e-stop: any authenticated role, no lease, never limited.
        for _ in 0..100 {
            assert!(
                g.authorize_tool(t0, NOW, "ro#1", "emergency_stop", needs("emergency_stop"))
                    .is_ok()
            );
        }
        // Motion limit (burst 2; one used above).
        assert!(
            g.authorize_tool(t0, NOW, "a#1", "takeoff", needs("takeoff"))
                .is_ok()
        );
        let d = g
            .authorize_tool(t0, NOW, "a#1", "goto", needs("goto"))
            .unwrap_err();
        assert_eq!(d.kind, "rate_limited");
        assert!(d.retry_after_ms.is_some());
        // ... while the e-stop from the same session still passes.
        assert!(
            g.authorize_tool(t0, NOW, "a#1", "emergency_stop", needs("emergency_stop"))
                .is_ok()
        );
        // Every allowed call is answered (the e-stops and the ones above).
        for _ in 0..110 {
            g.handle_call_finished(t0, "a#1");
            g.handle_call_finished(t0, "ro#1");
        }
        // Silence: the lease expires.
        let late = t0 + Duration::from_secs(6);
        assert_eq!(g.poll_expired(late), Some(("a#1".into(), "alice".into())));
        assert!(g.security_summary(late).last_hour["rate_limited"] >= 1);
    }

    #[test]
    fn expiry_and_revocation_are_checked_on_every_call() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        init(&mut g, t0, "a", Some(&mint("ADMIN", "alice"))).unwrap();
        assert!(
            g.authorize_tool(t0, NOW, "a#1", "get_status", needs("get_status"))
                .is_ok()
        );
        let d = g
            .authorize_tool(t0, NOW + 700, "a#1", "get_status", needs("get_status"))
            .unwrap_err();
        assert_eq!(d.kind, "expired_token");
        assert_eq!(
            g.authorize_tool(t0, NOW, "a#1", "get_status", needs("get_status"))
                .unwrap_err()
                .kind,
            "unauthenticated"
        );
        init(&mut g, t0, "a", Some(&mint("ADMIN", "alice"))).unwrap();
        init(&mut g, t0, "b", Some(&mint("OPERATOR", "bob"))).unwrap();
        g.revoke(Some("jti-bob"), None).unwrap();
        assert_eq!(
            g.authorize_tool(t0, NOW, "b#1", "get_status", needs("get_status"))
                .unwrap_err()
                .kind,
            "unauthenticated"
        );
        assert_eq!(
            init(&mut g, t0, "b", Some(&mint("OPERATOR", "bob")))
                .unwrap_err()
                .kind,
            "revoked_token"
        );
    }

    #[test]
    fn a_holder_waiting_on_a_long_call_keeps_the_lease() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        init(&mut g, t0, "a", Some(&mint("OPERATOR", "alice"))).unwrap();
        let a = g
            .authorize_tool(t0, NOW, "a#1", "request_control", needs("request_control"))
            .unwrap();
        g.handle_control(t0, &a, true);
        g.handle_call_finished(t0, "a#1");
        g.authorize_tool(t0, NOW, "a#1", "goto", needs("goto"))
            .unwrap();
        // 30 s of flying, polled every second: never expires.
        for s in 1..=30 {
            assert_eq!(g.poll_expired(t0 + Duration::from_secs(s)), None);
        }
        g.handle_call_finished(t0 + Duration::from_secs(30), "a#1");
        assert!(
            g.authorize_tool(
                t0 + Duration::from_secs(31),
                NOW,
                "a#1",
                "land",
                needs("land")
            )
            .is_ok()
        );
        g.handle_call_finished(t0 + Duration::from_secs(31), "a#1");
        // Then silence does expire it.
        assert!(g.poll_expired(t0 + Duration::from_secs(37)).is_some());
    }

    #[test]
    fn admin_takeover_names_the_previous_holder() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        init(&mut g, t0, "a", Some(&mint("OPERATOR", "alice"))).unwrap();
        init(&mut g, t0, "z", Some(&mint("ADMIN", "root"))).unwrap();
        let a = g
            .authorize_tool(t0, NOW, "a#1", "request_control", needs("request_control"))
            .unwrap();
        g.handle_control(t0, &a, true);
        let z = g
            .authorize_tool(t0, NOW, "z#1", "request_control", needs("request_control"))
            .unwrap();
        assert_eq!(
            g.handle_control(t0, &z, true),
            ControlResult::TakenOver {
                previous_session: "a#1".into(),
                previous_subject: "alice".into()
            }
        );
        assert_eq!(
            g.authorize_tool(t0, NOW, "a#1", "arm", needs("arm"))
                .unwrap_err()
                .kind,
            "no_control_lease"
        );
    }

    #[test]
    fn a_broker_identity_without_a_token_and_a_token_wins() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        let id = init(&mut g, t0, "gcs-1", None).unwrap();
        assert_eq!(
            (id.subject.as_str(), id.role),
            ("station one", Role::Operator)
        );
        assert_eq!(id.kid, BROKER_KID);
        let c = g
            .authorize_tool(
                t0,
                NOW,
                "gcs-1#1",
                "request_control",
                needs("request_control"),
            )
            .unwrap();
        assert_eq!(c.client_id, "gcs-1");
        // A token, when sent, wins; a bad one is refused, not replaced by the broker role.
        let id = g
            .handle_initialize(t0, NOW, "gcs-1", 2, Some(&mint("READ_ONLY", "viewer")))
            .unwrap();
        assert_eq!(id.role, Role::ReadOnly);
        assert_eq!(
            g.handle_initialize(t0, NOW, "gcs-1", 3, Some("junk"))
                .unwrap_err()
                .kind,
            "malformed_token"
        );
        // An unknown client id without a token is refused and told why.
        let d = g
            .handle_initialize(t0, NOW, "stranger", 1, None)
            .unwrap_err();
        assert!(d.message.contains("broker_identity"), "{}", d.message);
        // Revoking the subject refuses the broker identity too.
        g.revoke(None, Some("station one")).unwrap();
        assert_eq!(
            g.handle_initialize(t0, NOW, "gcs-1", 4, None)
                .unwrap_err()
                .kind,
            "revoked_token"
        );
    }

    #[test]
    fn a_candidate_changes_nothing_until_it_is_promoted() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        init(&mut g, t0, "a", Some(&mint("OPERATOR", "alice"))).unwrap();
        let a = g
            .authorize_tool(t0, NOW, "a#1", "request_control", needs("request_control"))
            .unwrap();
        g.handle_control(t0, &a, true);
        // A verified initialize claiming `a` (another subject): the running session, its
        // identity and its lease are untouched until the candidate is promoted.
        g.handle_initialize(t0, NOW, "a", 2, Some(&mint("OPERATOR", "mallory")))
            .unwrap();
        assert_eq!(g.candidate_subject("a", 2).as_deref(), Some("mallory"));
        assert!(
            g.authorize_tool(t0, NOW, "a#1", "arm", needs("arm"))
                .is_ok()
        );
        assert_eq!(g.lease(t0).unwrap().holder_subject, "alice");
        // Never promoted (unconfirmed): it ends and nothing changed.
        g.handle_session_end("a#2");
        assert!(g.candidate_subject("a", 2).is_none());
        assert!(
            g.authorize_tool(t0, NOW, "a#1", "land", needs("land"))
                .is_ok()
        );
        // A genuine re-initialize by the same subject keeps the lease...
        g.handle_initialize(t0, NOW, "a", 3, Some(&mint("OPERATOR", "alice")))
            .unwrap();
        let p = g.handle_promote(t0, "a", 3).unwrap();
        assert_eq!(p.lease, LeaseFate::Kept);
        assert!(
            g.authorize_tool(t0, NOW, "a#3", "arm", needs("arm"))
                .is_ok()
        );
        // ... and the replaced generation can no longer act.
        assert_eq!(
            g.authorize_tool(t0, NOW, "a#1", "arm", needs("arm"))
                .unwrap_err()
                .kind,
            "unauthenticated"
        );
        // Another subject on the same client id: the lease is released.
        g.handle_initialize(t0, NOW, "a", 4, Some(&mint("OPERATOR", "bob")))
            .unwrap();
        assert_eq!(
            g.handle_promote(t0, "a", 4).unwrap().lease,
            LeaseFate::Released
        );
        assert!(g.lease(t0).is_none());
        assert!(g.handle_promote(t0, "a", 99).is_none());
    }

    #[test]
    fn session_limits_per_identity_and_the_admin_reserve() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        // Two sessions per subject.
        init(&mut g, t0, "a1", Some(&mint("OPERATOR", "alice"))).unwrap();
        init(&mut g, t0, "a2", Some(&mint("OPERATOR", "alice"))).unwrap();
        let d = g
            .handle_initialize(t0, NOW, "a3", 1, Some(&mint("OPERATOR", "alice")))
            .unwrap_err();
        assert_eq!(d.kind, "identity_sessions_full");
        // Re-initializing one of them is not one more.
        init(&mut g, t0, "a2", Some(&mint("OPERATOR", "alice"))).unwrap();
        // Five sessions, the last one for ADMIN.
        init(&mut g, t0, "b", Some(&mint("OPERATOR", "bob"))).unwrap();
        init(&mut g, t0, "c", Some(&mint("READ_ONLY", "carol"))).unwrap();
        let d = g
            .handle_initialize(t0, NOW, "d", 1, Some(&mint("OPERATOR", "dave")))
            .unwrap_err();
        assert_eq!(d.kind, "sessions_full");
        assert!(d.message.contains("ADMIN"), "{}", d.message);
        init(&mut g, t0, "boss", None).unwrap();
    }

    #[test]
    fn the_holders_safe_commands_and_the_admin_reset_are_never_rate_limited() {
        let (mut g, mint) = gate();
        let t0 = Instant::now();
        init(&mut g, t0, "a", Some(&mint("OPERATOR", "alice"))).unwrap();
        init(&mut g, t0, "b", Some(&mint("OPERATOR", "bob"))).unwrap();
        init(&mut g, t0, "boss", None).unwrap();
        let a = g
            .authorize_tool(t0, NOW, "a#1", "request_control", needs("request_control"))
            .unwrap();
        g.handle_control(t0, &a, true);
        assert!(g.is_priority(t0, "a#1", needs("land")));
        assert!(!g.is_priority(t0, "a#1", needs("goto")));
        assert!(!g.is_priority(t0, "b#1", needs("land")), "not the holder");
        assert!(g.is_priority(t0, "boss#1", needs("reset_emergency_stop")));
        assert!(!g.is_priority(t0, "a#1", needs("reset_emergency_stop")));
        // The motion bucket (burst 2) runs out for a goto...
        let mut refused = None;
        for _ in 0..5 {
            if let Err(d) = g.authorize_tool(t0, NOW, "a#1", "goto", needs("goto")) {
                refused = Some(d.kind);
            }
        }
        assert_eq!(refused, Some("rate_limited"));
        // ... far beyond every bucket, land, hold and the reset are still allowed.
        for _ in 0..50 {
            assert!(
                g.authorize_tool(t0, NOW, "a#1", "land", needs("land"))
                    .is_ok()
            );
            assert!(
                g.authorize_tool(t0, NOW, "a#1", "hold", needs("hold"))
                    .is_ok()
            );
            assert!(
                g.authorize_tool(
                    t0,
                    NOW,
                    "boss#1",
                    "reset_emergency_stop",
                    needs("reset_emergency_stop")
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn anonymous_only_when_allowed_and_read_only() {
        let (mut g, _) = gate();
        let t0 = Instant::now();
        g.config.allow_anonymous = true;
        assert_eq!(init(&mut g, t0, "x", None).unwrap().role, Role::ReadOnly);
        assert!(
            g.authorize_tool(t0, NOW, "x#1", "get_status", needs("get_status"))
                .is_ok()
        );
        assert_eq!(
            g.authorize_tool(t0, NOW, "x#1", "arm", needs("arm"))
                .unwrap_err()
                .kind,
            "role_denied"
        );
    }

    /// A wall-clock step of ±1 h while flying (an NTP correction, a GPS time fix): the
    /// lease, the rate limits and the holder's silence timeout follow the monotonic `now` and
    /// do not move; a token's expiry follows the wall clock (`now_unix_s`), as documented: a
    /// step forward ends a session whose token had less than the step left (and its lease
    /// with it), a step back keeps every session.
    #[test]
    fn a_wall_clock_step_moves_token_expiry_and_nothing_monotonic() {
        let f = fixture();
        let token = |sub: &str, exp: u64| {
            issue(
                f.ed_private.as_bytes(),
                KeyAlg::EdDsa,
                "ed1",
                &Claims {
                    sub: sub.into(),
                    jti: Some(format!("jti-{sub}")),
                    exp,
                    ..claims("OPERATOR")
                },
            )
            .unwrap()
        };
        let t0 = Instant::now();
        // Alice holds the lease with a token of two hours left; Bob's has ten minutes.
        let flying = || {
            let mut g = Gate::new(gate_config(&f));
            init(&mut g, t0, "a", Some(&token("alice", NOW + 7200))).unwrap();
            init(&mut g, t0, "b", Some(&token("bob", NOW + 600))).unwrap();
            let a = g
                .authorize_tool(t0, NOW, "a#1", "request_control", needs("request_control"))
                .unwrap();
            assert_eq!(g.handle_control(t0, &a, true), ControlResult::Granted);
            g.handle_call_finished(t0, "a#1");
            g
        };
        let hour = 3600;
        for (step, wall) in [("back", NOW - hour), ("forward", NOW + hour)] {
            let t = t0 + Duration::from_secs(1);
            // The motion budget (burst 2) is spent and refilled on the monotonic clock only.
            let mut g = flying();
            for _ in 0..2 {
                g.authorize_tool(t, wall, "a#1", "goto", needs("goto"))
                    .unwrap_or_else(|d| panic!("{step}: {d:?}"));
                g.handle_call_finished(t, "a#1");
            }
            let d = g
                .authorize_tool(t, wall, "a#1", "goto", needs("goto"))
                .unwrap_err();
            assert_eq!(d.kind, "rate_limited", "{step}");
            let retry_ms = d.retry_after_ms.unwrap();
            assert!((900..=1100).contains(&retry_ms), "{step}: {retry_ms} ms");
            // The holder keeps the lease: its silence timeout (5 s) runs on `now`.
            assert_eq!(g.poll_expired(t + Duration::from_secs(4)), None, "{step}");
            assert_eq!(
                g.lease_holder(t + Duration::from_secs(4)),
                Some("a#1"),
                "{step}"
            );
            let later = t + Duration::from_secs(1);
            g.authorize_tool(later, wall, "a#1", "hold", needs("hold"))
                .unwrap_or_else(|d| panic!("{step}: {d:?}"));
            g.handle_call_finished(later, "a#1");
            // Bob's ten minutes: gone after a step forward, still there after a step back.
            let bob = g.authorize_tool(later, wall, "b#1", "get_status", needs("get_status"));
            match step {
                "back" => assert!(bob.is_ok(), "{step}: {bob:?}"),
                _ => assert_eq!(bob.unwrap_err().kind, "expired_token", "{step}"),
            }
        }
        // A step larger than what is left of the holder's token ends the session and frees
        // the lease: the wall clock is the token's authority.
        let mut g = flying();
        let t = t0 + Duration::from_secs(1);
        let d = g
            .authorize_tool(t, NOW + 3 * hour, "a#1", "hold", needs("hold"))
            .unwrap_err();
        assert_eq!(d.kind, "expired_token");
        assert_eq!(g.lease_holder(t), None);
    }
}
