//! Why a flight request was refused, as a value (pure).
//!
//! A refusal is answered at once, before anything is sent, with a sentence a person or a
//! model can act on ([`Refusal::message`]) and the kind of rule that said no
//! ([`Refusal::kind`]). Metrics label refusals by the kind ([`RefusalKind::labels`]) and
//! the shell reports it with the answer; nothing reads the English text to find out why.

use std::fmt;

/// The rules of the envelope a request broke; the envelope reports every one at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvelopeRule {
    /// Below the battery reserve, or the battery is not reported.
    BatteryReserve,
    /// Fix, satellites, HDOP, the estimator's trust or a fresh position.
    Gps,
    Ceiling,
    Floor,
    /// Beyond the distance allowed from home.
    HomeDistance,
    /// A keep-in or keep-out zone (the target, the path, or where the vehicle is).
    Zone,
    /// A speed above the limit, or not a speed.
    Speed,
    /// Not a position, an altitude or a heading at all.
    InvalidTarget,
}

impl EnvelopeRule {
    const ALL: [EnvelopeRule; 8] = [
        EnvelopeRule::BatteryReserve,
        EnvelopeRule::Gps,
        EnvelopeRule::Ceiling,
        EnvelopeRule::Floor,
        EnvelopeRule::HomeDistance,
        EnvelopeRule::Zone,
        EnvelopeRule::Speed,
        EnvelopeRule::InvalidTarget,
    ];

    /// The metrics label (`flight_companion_envelope_refusals_total{reason=...}`).
    pub fn label(self) -> &'static str {
        match self {
            EnvelopeRule::BatteryReserve => "battery_reserve",
            EnvelopeRule::Gps => "gps",
            EnvelopeRule::Ceiling => "ceiling",
            EnvelopeRule::Floor => "floor",
            EnvelopeRule::HomeDistance => "home_distance",
            EnvelopeRule::Zone => "zone",
            EnvelopeRule::Speed => "speed",
            EnvelopeRule::InvalidTarget => "invalid_target",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`EnvelopeRule`]s. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EnvelopeRules(u16);

impl EnvelopeRules {
    pub fn insert(&mut self, rule: EnvelopeRule) {
        self.0 |= rule.bit();
    }

    pub fn contains(self, rule: EnvelopeRule) -> bool {
        self.0 & rule.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rules in the set, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = EnvelopeRule> {
        EnvelopeRule::ALL
            .into_iter()
            .filter(move |r| self.contains(*r))
    }
}

impl FromIterator<EnvelopeRule> for EnvelopeRules {
    fn from_iter<I: IntoIterator<Item = EnvelopeRule>>(rules: I) -> Self {
        let mut set = EnvelopeRules::default();
        for rule in rules {
            set.insert(rule);
        }
        set
    }
}

/// What kind of rule refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The caller's role is below what the action needs.
    Role,
    /// The emergency stop is latched: only disarm is accepted.
    EmergencyStop,
    /// The MAVLink link is down.
    LinkDown,
    /// The autopilot is not heard (never, or its heartbeat is lost).
    NoAutopilot,
    /// Neither ArduPilot nor PX4: the daemon does not know its modes.
    UnsupportedAutopilot,
    /// The pre-flight check is still reading, or one of its findings forbids arming.
    Preflight,
    /// No envelope is in force: only recovery actions are accepted.
    NoEnvelope,
    /// The envelope's rules (all of those the request broke).
    Envelope(EnvelopeRules),
    /// The daemon's breach response runs: only recovery actions are accepted.
    BreachActive,
    /// The vehicle's state does not allow it (already armed, on the ground, no heading...).
    VehicleState,
    /// The action needs a trusted position the autopilot does not report.
    Position,
    /// The request's own arguments are out of bounds.
    InvalidArgument,
    /// A bug on the daemon's side.
    Internal,
}

impl RefusalKind {
    /// The metrics labels: one per envelope rule, one for every other kind.
    pub fn labels(self) -> Vec<&'static str> {
        match self {
            RefusalKind::Envelope(rules) => rules.iter().map(EnvelopeRule::label).collect(),
            other => vec![other.name()],
        }
    }

    /// The kind in one word (snake case); `envelope` for every envelope rule.
    pub fn name(self) -> &'static str {
        match self {
            RefusalKind::Role => "role",
            RefusalKind::EmergencyStop => "estop_latched",
            RefusalKind::LinkDown => "link_down",
            RefusalKind::NoAutopilot => "no_autopilot",
            RefusalKind::UnsupportedAutopilot => "unsupported_autopilot",
            RefusalKind::Preflight => "preflight",
            RefusalKind::NoEnvelope => "no_envelope",
            RefusalKind::Envelope(_) => "envelope",
            RefusalKind::BreachActive => "breach_active",
            RefusalKind::VehicleState => "vehicle_state",
            RefusalKind::Position => "position",
            RefusalKind::InvalidArgument => "invalid_argument",
            RefusalKind::Internal => "internal",
        }
    }
}

/// A refusal: the kind of rule, and what a person or a model can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_one_per_envelope_rule_and_one_per_other_kind() {
        let rules: EnvelopeRules = [EnvelopeRule::Gps, EnvelopeRule::Ceiling, EnvelopeRule::Gps]
            .into_iter()
            .collect();
        assert_eq!(
            RefusalKind::Envelope(rules).labels(),
            vec!["gps", "ceiling"]
        );
        assert_eq!(RefusalKind::EmergencyStop.labels(), vec!["estop_latched"]);
        assert_eq!(RefusalKind::Envelope(rules).name(), "envelope");
        assert!(EnvelopeRules::default().is_empty());
    }
}
