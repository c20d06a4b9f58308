//! The denylist of token ids (`jti`) and subjects (sans-IO; the shell persists it).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::token::Identity;

/// Revoked token ids and subjects. Persisted as JSON by the shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Denylist {
    pub jtis: BTreeSet<String>,
    pub subjects: BTreeSet<String>,
}

/// Upper bound of entries, so the file and memory stay small.
pub const ENTRIES_MAX: usize = 10_000;

impl Denylist {
    /// Why `identity` is revoked, if it is.
    pub fn check(&self, identity: &Identity) -> Option<String> {
        if self.subjects.contains(&identity.subject) {
            return Some(format!("subject `{}` is revoked", identity.subject));
        }
        match &identity.jti {
            Some(jti) if self.jtis.contains(jti) => Some(format!("token id `{jti}` is revoked")),
            _ => None,
        }
    }

    /// Adds entries; false when the list is full.
    pub fn revoke(&mut self, jti: Option<&str>, subject: Option<&str>) -> bool {
        let adding = usize::from(jti.is_some()) + usize::from(subject.is_some());
        if self.jtis.len() + self.subjects.len() + adding > ENTRIES_MAX {
            return false;
        }
        if let Some(j) = jti {
            self.jtis.insert(j.to_owned());
        }
        if let Some(s) = subject {
            self.subjects.insert(s.to_owned());
        }
        true
    }

    /// Union with another list (config plus the persisted file).
    pub fn merge(&mut self, other: &Denylist) {
        self.jtis.extend(other.jtis.iter().cloned());
        self.subjects.extend(other.subjects.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::Role;

    #[test]
    fn revokes_by_jti_and_subject() {
        let id = Identity {
            subject: "bob".into(),
            role: Role::Operator,
            jti: Some("t9".into()),
            kid: "k".into(),
            expires_unix_s: 0,
        };
        let mut d = Denylist::default();
        assert!(d.check(&id).is_none());
        d.revoke(Some("t9"), None);
        assert!(d.check(&id).unwrap().contains("t9"));
        let mut d = Denylist::default();
        d.revoke(None, Some("bob"));
        assert!(d.check(&id).unwrap().contains("bob"));
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Denylist>(&text).unwrap(), d);
    }
}
