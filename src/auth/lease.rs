//! One pilot in command (sans-IO): the control lease.
//!
//! Call order: `handle_request` / `handle_release` for the tools, `handle_activity` on every
//! call of a session (the holder's calls keep the lease alive), `check` before a motion
//! tool, `handle_session_end` when a session goes away, and `poll_expired(now)` on a timer
//! (`poll_timeout` says when).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::role::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    session: String,
    subject: String,
    role: Role,
    last_seen: Instant,
}

/// What a `request_control` got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The lease was free (or already this session's): now held.
    Granted,
    /// An ADMIN took the lease over; the previous holder must be told.
    TakenOver {
        previous_session: String,
        previous_subject: String,
    },
    /// Someone else holds it.
    Refused {
        holder_subject: String,
        expires_in: Duration,
    },
}

/// The lease, as reported in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseView {
    pub holder_subject: String,
    pub holder_role: Role,
    pub expires_in_ms: u64,
}

/// The control lease.
#[derive(Debug, Clone)]
pub struct ControlLease {
    holder: Option<Holder>,
    silence_timeout: Duration,
}

impl ControlLease {
    pub fn new(silence_timeout: Duration) -> ControlLease {
        ControlLease {
            holder: None,
            silence_timeout,
        }
    }

    fn live(&self, now: Instant) -> Option<&Holder> {
        self.holder
            .as_ref()
            .filter(|h| now.saturating_duration_since(h.last_seen) < self.silence_timeout)
    }

    fn expires_in(&self, h: &Holder, now: Instant) -> Duration {
        self.silence_timeout
            .saturating_sub(now.saturating_duration_since(h.last_seen))
    }

    /// `request_control` from `session`. OPERATOR or above is checked by the permission table.
    pub fn handle_request(
        &mut self,
        now: Instant,
        session: &str,
        subject: &str,
        role: Role,
    ) -> LeaseOutcome {
        let holder = Holder {
            session: session.to_owned(),
            subject: subject.to_owned(),
            role,
            last_seen: now,
        };
        let outcome = match self.live(now) {
            None => LeaseOutcome::Granted,
            Some(h) if h.session == session => LeaseOutcome::Granted,
            Some(h) if role >= Role::Admin && role >= h.role => LeaseOutcome::TakenOver {
                previous_session: h.session.clone(),
                previous_subject: h.subject.clone(),
            },
            Some(h) => LeaseOutcome::Refused {
                holder_subject: h.subject.clone(),
                expires_in: self.expires_in(h, now),
            },
        };
        if !matches!(outcome, LeaseOutcome::Refused { .. }) {
            self.holder = Some(holder);
        }
        outcome
    }

    /// `release_control`: true if `session` held the lease.
    pub fn handle_release(&mut self, now: Instant, session: &str) -> bool {
        if self.live(now).is_some_and(|h| h.session == session) {
            self.holder = None;
            true
        } else {
            false
        }
    }

    /// Any call of `session`: the holder is not silent.
    pub fn handle_activity(&mut self, now: Instant, session: &str) {
        let timeout = self.silence_timeout;
        if let Some(h) = self.holder.as_mut()
            && h.session == session
            && now.saturating_duration_since(h.last_seen) < timeout
        {
            h.last_seen = now;
        }
    }

    /// May `session` command motion now? Err says who holds the lease or that it is free.
    pub fn check(&self, now: Instant, session: &str) -> Result<(), String> {
        match self.live(now) {
            Some(h) if h.session == session => Ok(()),
            Some(h) => Err(format!(
                "{} holds the control lease (expires after {} ms of silence); wait, or ask an ADMIN to take over",
                h.subject,
                self.expires_in(h, now).as_millis()
            )),
            None => Err("motion needs the control lease: call request_control first".into()),
        }
    }

    /// The session went away: its lease ends now.
    pub fn handle_session_end(&mut self, session: &str) -> bool {
        if self.holder.as_ref().is_some_and(|h| h.session == session) {
            self.holder = None;
            true
        } else {
            false
        }
    }

    /// `from` was replaced by `to` (its client initialized again): the lease follows when
    /// `to` is the same subject with a role that may hold it; otherwise it ends. Returns
    /// whether `from` held it and whether it was kept.
    pub fn handle_replace(
        &mut self,
        now: Instant,
        from: &str,
        to: &str,
        subject: &str,
        role: Role,
    ) -> Option<bool> {
        let held = self.live(now).is_some_and(|h| h.session == from);
        let stale = self.holder.as_ref().is_some_and(|h| h.session == from);
        if !held {
            if stale {
                self.holder = None;
            }
            return None;
        }
        let h = self.holder.as_mut()?;
        if h.subject == subject && role >= Role::Operator {
            h.session = to.to_owned();
            h.role = role;
            h.last_seen = now;
            Some(true)
        } else {
            self.holder = None;
            Some(false)
        }
    }

    /// When the current lease would expire.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.holder
            .as_ref()
            .map(|h| h.last_seen + self.silence_timeout)
    }

    /// Ends a lease whose holder went silent; returns (session, subject) of that holder.
    pub fn poll_expired(&mut self, now: Instant) -> Option<(String, String)> {
        if self.holder.is_some() && self.live(now).is_none() {
            return self.holder.take().map(|h| (h.session, h.subject));
        }
        None
    }

    pub fn view(&self, now: Instant) -> Option<LeaseView> {
        self.live(now).map(|h| LeaseView {
            holder_subject: h.subject.clone(),
            holder_role: h.role,
            expires_in_ms: u64::try_from(self.expires_in(h, now).as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The session holding the lease, live or not yet expired by `poll_expired`.
    pub fn holder_session_any(&self) -> Option<&str> {
        self.holder.as_ref().map(|h| h.session.as_str())
    }

    /// The session holding the lease now, if any.
    pub fn holder_session(&self, now: Instant) -> Option<&str> {
        self.live(now).map(|h| h.session.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn first_wins_second_refused_until_silence() {
        let t0 = Instant::now();
        let mut l = ControlLease::new(T);
        assert_eq!(
            l.handle_request(t0, "a", "alice", Role::Operator),
            LeaseOutcome::Granted
        );
        assert!(matches!(
            l.handle_request(t0, "b", "bob", Role::Operator),
            LeaseOutcome::Refused { .. }
        ));
        assert!(l.check(t0, "a").is_ok());
        assert!(l.check(t0, "b").unwrap_err().contains("alice"));
        // Activity keeps it alive.
        l.handle_activity(t0 + Duration::from_secs(9), "a");
        assert!(l.check(t0 + Duration::from_secs(18), "a").is_ok());
        // Silence expires it.
        let late = t0 + Duration::from_secs(19);
        assert_eq!(l.poll_expired(late), Some(("a".into(), "alice".into())));
        assert!(l.check(late, "a").is_err());
        assert_eq!(
            l.handle_request(late, "b", "bob", Role::Operator),
            LeaseOutcome::Granted
        );
    }

    #[test]
    fn admin_takes_over_and_operator_cannot_take_from_admin() {
        let t0 = Instant::now();
        let mut l = ControlLease::new(T);
        l.handle_request(t0, "a", "alice", Role::Operator);
        assert_eq!(
            l.handle_request(t0, "z", "root", Role::Admin),
            LeaseOutcome::TakenOver {
                previous_session: "a".into(),
                previous_subject: "alice".into()
            }
        );
        assert!(l.check(t0, "a").is_err());
        assert!(matches!(
            l.handle_request(t0, "a", "alice", Role::Operator),
            LeaseOutcome::Refused { .. }
        ));
        assert!(!l.handle_release(t0, "a"));
        assert!(l.handle_release(t0, "z"));
        assert!(l.view(t0).is_none());
    }

    #[test]
    fn a_replaced_session_passes_the_lease_only_to_the_same_subject() {
        let t0 = Instant::now();
        let mut l = ControlLease::new(T);
        l.handle_request(t0, "a#1", "alice", Role::Operator);
        assert_eq!(
            l.handle_replace(t0, "a#1", "a#2", "alice", Role::Operator),
            Some(true)
        );
        assert!(l.check(t0, "a#2").is_ok() && l.check(t0, "a#1").is_err());
        // Another subject (or a role that may not hold it) on the same client id: released.
        assert_eq!(
            l.handle_replace(t0, "a#2", "a#3", "mallory", Role::Operator),
            Some(false)
        );
        assert!(l.view(t0).is_none());
        l.handle_request(t0, "a#3", "alice", Role::Operator);
        assert_eq!(
            l.handle_replace(t0, "a#3", "a#4", "alice", Role::ReadOnly),
            Some(false)
        );
        // Not the holder: nothing changes.
        l.handle_request(t0, "b#1", "bob", Role::Operator);
        assert_eq!(
            l.handle_replace(t0, "a#4", "a#5", "alice", Role::Operator),
            None
        );
        assert!(l.check(t0, "b#1").is_ok());
    }

    #[test]
    fn session_end_frees_the_lease() {
        let t0 = Instant::now();
        let mut l = ControlLease::new(T);
        l.handle_request(t0, "a", "alice", Role::Operator);
        assert!(l.handle_session_end("a"));
        assert_eq!(
            l.handle_request(t0, "b", "bob", Role::Operator),
            LeaseOutcome::Granted
        );
    }
}
