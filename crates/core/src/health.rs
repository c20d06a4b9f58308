//! Health: a summary (healthy / degraded / failed, with reasons) and alerts, computed from
//! the status report (sans-IO: no clock, no files; the CPU temperature is an argument).
//!
//! Alerts are rising-edge with hysteresis: `battery_low` is raised when the battery falls
//! to `battery_low_percent` and cleared only above `battery_low_percent +
//! battery_hysteresis_percent`, so a voltage sagging around the threshold under load raises
//! one alert, not one per telemetry sample. Raised alerts are kept, numbered, in a short
//! log inside the summary; the MCP server sends each one once to every session as a
//! `notifications/message`.
//!
//! Call order: [`HealthMonitor::assess`] once per status publication (the daemon loop does
//! it at 10 Hz), then publish the returned summary with the report.

use std::collections::{BTreeMap, VecDeque};

use schemars::JsonSchema;
use serde::Serialize;

pub use crate::config::HealthConfig;

use crate::audit::status::AuditStatus;
use crate::estop::local_status::{LocalEstopState, LocalEstopStatus};
use crate::vehicle::snapshot::VehicleSnapshot;

/// What the health assessment reads (the status report gives it: `From<&StatusReport>`).
#[derive(Debug, Clone, Copy)]
pub struct HealthFacts<'a> {
    pub vehicle: &'a VehicleSnapshot,
    /// The daemon has heard the autopilot's heartbeat at least once.
    pub autopilot_seen: bool,
    pub audit: &'a AuditStatus,
    pub local_estop: &'a LocalEstopStatus,
}

/// How many raised alerts the summary keeps (older ones are dropped: the journal has them).
pub const RECENT_ALERTS_MAX: usize = 16;

/// The overall state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Everything the daemon watches is fine.
    #[default]
    Healthy,
    /// It works, with at least one active alert.
    Degraded,
    /// It cannot do its job: no autopilot, or the battery is critical.
    Failed,
}

impl HealthState {
    /// `healthy`, `degraded` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Failed => "failed",
        }
    }
}

/// An alert that was raised (its rising edge).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RaisedAlert {
    /// 1, 2, 3... in the order raised, for this daemon process.
    pub sequence: u64,
    /// `battery_low`, `link_degraded`, `gps_lost`, `cpu_hot` or `local_estop_unavailable`.
    pub alert: String,
    /// What was seen, in words.
    pub message: String,
}

/// The health summary: in `get_status`, `health://summary` and `/health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct HealthSummary {
    /// `healthy`, `degraded` or `failed`.
    pub state: HealthState,
    /// Why the state is not healthy, one sentence each (empty when healthy).
    pub reasons: Vec<String>,
    /// Every alert and whether it is active now (after hysteresis).
    pub alerts: BTreeMap<&'static str, bool>,
    /// The last raised alerts, oldest first (at most 16).
    pub recent_alerts: Vec<RaisedAlert>,
}

/// The alert names, in the order they are reported.
pub const ALERTS: [&str; 8] = [
    "battery_low",
    "link_degraded",
    "gps_lost",
    "cpu_hot",
    "audit_damaged",
    "local_estop_unavailable",
    "link_untrusted",
    "audit_unwritable",
];

/// `link_untrusted` is raised by a refusal at most this old (refusals that go on are
/// reported every 10 s, so it stays raised while they do)...
const UNTRUSTED_RAISE_AGE_MS: u64 = 15_000;
/// ...and cleared once the last one is this old.
const UNTRUSTED_CLEAR_AGE_MS: u64 = 30_000;

/// What one assessment found so far.
#[derive(Debug, Default)]
struct Findings {
    reasons: Vec<String>,
    failed: bool,
}

/// Alert state with hysteresis, and the log of raised alerts.
#[derive(Debug, Clone, Default)]
pub struct HealthMonitor {
    config: HealthConfig,
    active: BTreeMap<&'static str, bool>,
    /// GPS can only be "lost" after it was had: a vehicle flying without GPS indoors does
    /// not raise the alert at start.
    gps_had_fix: bool,
    sequence: u64,
    recent: VecDeque<RaisedAlert>,
}

impl HealthMonitor {
    pub fn new(config: HealthConfig) -> HealthMonitor {
        HealthMonitor {
            config,
            ..HealthMonitor::default()
        }
    }

    /// Updates the alerts from the report and returns the summary. The alerts are assessed
    /// in a fixed order (the order their rising edges are numbered in).
    pub fn assess<'a>(
        &mut self,
        report: impl Into<HealthFacts<'a>>,
        cpu_temperature_c: Option<f64>,
    ) -> HealthSummary {
        let report: HealthFacts<'a> = report.into();
        let c = self.config.clone();
        let mut out = Findings::default();
        let autopilot_lost = Self::autopilot(&report, &c, &mut out);
        self.battery(&report, &c, &mut out);
        self.link_quality(&report, &c, autopilot_lost, &mut out);
        self.gps(&report, &mut out);
        self.cpu(cpu_temperature_c, &c, &mut out);
        self.audit(&report, &mut out);
        self.link_trust(&report, &mut out);
        self.local_estop(&report, &mut out);
        self.summary(out)
    }

    /// The autopilot itself: never heard, or lost. Returns whether it is lost.
    fn autopilot(report: &HealthFacts<'_>, c: &HealthConfig, out: &mut Findings) -> bool {
        let v = report.vehicle;
        // The autopilot itself.
        let heartbeat_age_ms = v.link.heartbeat_age_ms;
        let autopilot_lost = report.autopilot_seen
            && (!v.link.connected
                || heartbeat_age_ms.is_none_or(|age| age > c.autopilot_heartbeat_age_ms_max));
        if !report.autopilot_seen {
            out.failed = true;
            out.reasons.push(
                "no autopilot heard yet: check the link endpoint, cable and baud rate".to_owned(),
            );
        } else if autopilot_lost {
            out.failed = true;
            out.reasons.push(match heartbeat_age_ms {
                Some(age) => format!(
                    "autopilot lost: no heartbeat for {:.1} s",
                    age as f64 / 1000.0
                ),
                None => "autopilot lost: the link is down".to_owned(),
            });
        }

        autopilot_lost
    }

    fn battery(&mut self, report: &HealthFacts<'_>, c: &HealthConfig, out: &mut Findings) {
        let v = report.vehicle;
        // Battery.
        let battery = (!v.battery.freshness.stale)
            .then_some(v.battery.remaining_percent)
            .flatten();
        let battery_low = self.edge(
            "battery_low",
            battery.is_some_and(|p| p <= c.battery_low_percent),
            battery.is_some_and(|p| p > c.battery_low_percent + c.battery_hysteresis_percent),
            || {
                format!(
                    "battery low: {:.0} % remaining (alert at {:.0} %)",
                    battery.unwrap_or(0.0),
                    c.battery_low_percent
                )
            },
        );
        if let Some(percent) = battery.filter(|p| *p <= c.battery_critical_percent) {
            out.failed = true;
            out.reasons.push(format!(
                "battery critical: {percent:.0} % remaining (at most {:.0} %)",
                c.battery_critical_percent
            ));
        } else if battery_low {
            out.reasons.push(format!(
                "battery low: {:.0} % remaining",
                battery.unwrap_or(0.0)
            ));
        }
    }

    fn link_quality(
        &mut self,
        report: &HealthFacts<'_>,
        c: &HealthConfig,
        autopilot_lost: bool,
        out: &mut Findings,
    ) {
        let v = report.vehicle;
        // The MAVLink link's quality (only meaningful once the autopilot was heard).
        let loss = v.link.loss_percent;
        let link_bad = report.autopilot_seen && (autopilot_lost || loss >= c.link_loss_percent_max);
        let link_good = !autopilot_lost
            && loss < (c.link_loss_percent_max - c.link_loss_hysteresis_percent).max(0.0);
        let link_connected = v.link.connected;
        let link_degraded = self.edge("link_degraded", link_bad, link_good, || {
            if !link_connected {
                // A cut cable or a closed port: say so, not "heartbeat lost", so the operator
                // looks at the wiring rather than the autopilot.
                "autopilot link down (port closed or cable cut): nothing can be sent to the \
                 autopilot; its own failsafes apply"
                    .to_owned()
            } else if autopilot_lost {
                "autopilot link degraded: heartbeat lost".to_owned()
            } else {
                format!("autopilot link degraded: {loss:.1} % of MAVLink frames lost (alert at {:.0} %)", c.link_loss_percent_max)
            }
        });
        if link_degraded && !autopilot_lost {
            out.reasons.push(format!("MAVLink loss {loss:.1} %"));
        }
    }

    fn gps(&mut self, report: &HealthFacts<'_>, out: &mut Findings) {
        let v = report.vehicle;
        // GPS.
        let gps_fix = !v.gps.freshness.stale && v.gps.fix_type.is_3d();
        self.gps_had_fix |= gps_fix;
        let gps_lost = self.edge(
            "gps_lost",
            self.gps_had_fix && report.autopilot_seen && !gps_fix,
            gps_fix,
            || {
                format!(
                    "GPS lost: fix `{}`, {} satellites",
                    v.gps.fix_type, v.gps.satellites_visible
                )
            },
        );
        if gps_lost {
            out.reasons
                .push(format!("GPS lost: fix `{}`", v.gps.fix_type));
        }
    }

    fn cpu(&mut self, cpu_temperature_c: Option<f64>, c: &HealthConfig, out: &mut Findings) {
        // CPU temperature.
        let cpu_hot = self.edge(
            "cpu_hot",
            cpu_temperature_c.is_some_and(|t| t >= c.cpu_temperature_c_hot),
            cpu_temperature_c
                .is_none_or(|t| t < c.cpu_temperature_c_hot - c.cpu_temperature_hysteresis_c),
            || {
                format!(
                    "CPU hot: {:.1} °C (alert at {:.0} °C)",
                    cpu_temperature_c.unwrap_or(0.0),
                    c.cpu_temperature_c_hot
                )
            },
        );
        if cpu_hot {
            out.reasons
                .push(format!("CPU at {:.1} °C", cpu_temperature_c.unwrap_or(0.0)));
        }
    }

    fn audit(&mut self, report: &HealthFacts<'_>, out: &mut Findings) {
        // The audit log: damage kept as evidence...
        let audit = report.audit;
        let audit_bad = !audit.damage.is_empty();
        let audit_damaged = self.edge("audit_damaged", audit_bad, !audit_bad, || {
            format!(
                "audit log damaged: {}; kept as evidence, the log continues",
                audit.damage.first().map_or("", String::as_str)
            )
        });
        if audit_damaged {
            out.reasons.push("the audit log is damaged".to_owned());
        }
        // ...and writes failing now (a full disk): raised by the writer's first failed write,
        // cleared once it writes again (the log then records how many records were lost).
        let unwritable = audit.unwritable.is_some();
        let audit_unwritable = self.edge("audit_unwritable", unwritable, !unwritable, || {
            format!(
                "audit log cannot be written ({}): calls that must be recorded are refused; \
                 the emergency stop, hold, land and return home are not",
                audit.unwritable.as_deref().unwrap_or_default()
            )
        });
        if audit_unwritable {
            out.reasons
                .push("the audit log cannot be written (disk full?)".to_owned());
        }
        if let Some(why) = &audit.disabled_reason {
            out.reasons.push(why.clone());
        }
    }

    fn link_trust(&mut self, report: &HealthFacts<'_>, out: &mut Findings) {
        let v = report.vehicle;
        // Frames or connections the autopilot link refused: someone else on the link, or
        // another key (signing and pinning, `link::trust`).
        let trust = &v.link.trust;
        let intrusion_age = trust.last_intrusion_age_ms;
        let link_untrusted = self.edge(
            "link_untrusted",
            intrusion_age.is_some_and(|age| age <= UNTRUSTED_RAISE_AGE_MS),
            intrusion_age.is_none_or(|age| age > UNTRUSTED_CLEAR_AGE_MS),
            || {
                format!(
                    "autopilot link refused {} frames or connections ({}): another machine is \
                     talking on the link, or the autopilot signs with another key (install the \
                     daemon's with `flight-companion signing install`)",
                    trust.refused.total(),
                    trust.last_refusal.as_deref().unwrap_or("no detail")
                )
            },
        );
        if link_untrusted {
            out.reasons.push(format!(
                "autopilot link refusing frames: {}",
                trust.last_refusal.as_deref().unwrap_or("no detail")
            ));
        }
    }

    fn local_estop(&mut self, report: &HealthFacts<'_>, out: &mut Findings) {
        // The local e-stop socket could not be bound: one trigger of the stop is missing.
        let local = report.local_estop;
        let local_missing = local.state == LocalEstopState::Unavailable;
        let local_estop = self.edge(
            "local_estop_unavailable",
            local_missing,
            !local_missing,
            || {
                format!(
                    "no local e-stop: `flight-companion estop` cannot reach the daemon ({}); the \
                 MCP tool, the panic topic and the bridge still stop it. Set estop.socket_path \
                 to a path in a directory this user owns, or run under systemd with \
                 RuntimeDirectory=",
                    local
                        .error
                        .as_deref()
                        .unwrap_or("the socket could not be bound")
                )
            },
        );
        if local_estop {
            out.reasons.push(format!(
                "no local e-stop socket: {}",
                local.error.as_deref().unwrap_or("it could not be bound")
            ));
        }
    }

    fn summary(&self, out: Findings) -> HealthSummary {
        let Findings { reasons, failed } = out;
        let any_alert = self.active.values().any(|a| *a);
        HealthSummary {
            state: if failed {
                HealthState::Failed
            } else if any_alert || !reasons.is_empty() {
                HealthState::Degraded
            } else {
                HealthState::Healthy
            },
            reasons,
            // Static names: the summary is built with every status, ten times a second.
            alerts: ALERTS
                .iter()
                .map(|a| (*a, self.active.get(a).copied().unwrap_or(false)))
                .collect(),
            recent_alerts: self.recent.iter().cloned().collect(),
        }
    }

    /// Hysteresis: raise on `bad` (logging the rising edge), clear only on `good`; returns
    /// whether the alert is active.
    fn edge(
        &mut self,
        name: &'static str,
        bad: bool,
        good: bool,
        message: impl FnOnce() -> String,
    ) -> bool {
        let was = self.active.get(name).copied().unwrap_or(false);
        let now = if was { !good } else { bad };
        if now && !was {
            self.sequence += 1;
            if self.recent.len() == RECENT_ALERTS_MAX {
                self.recent.pop_front();
            }
            self.recent.push_back(RaisedAlert {
                sequence: self.sequence,
                alert: name.to_owned(),
                message: message(),
            });
        }
        self.active.insert(name, now);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusReport;
    use crate::vehicle::snapshot::Freshness;

    fn fresh() -> Freshness {
        Freshness {
            age_ms: Some(100),
            stale: false,
        }
    }

    /// A report of a vehicle heard, with a good link, a 3D fix and a full battery.
    fn good() -> StatusReport {
        let mut r = StatusReport::without_vehicle();
        r.autopilot_seen = true;
        r.vehicle.link.connected = true;
        r.vehicle.link.heartbeat_age_ms = Some(200);
        r.vehicle.battery.freshness = fresh();
        r.vehicle.battery.remaining_percent = Some(90.0);
        r.vehicle.gps.freshness = fresh();
        r.vehicle.gps.fix_type = crate::vehicle::snapshot::FixType::Fix3d;
        r
    }

    fn raised(summary: &HealthSummary) -> Vec<(u64, &str)> {
        summary
            .recent_alerts
            .iter()
            .map(|a| (a.sequence, a.alert.as_str()))
            .collect()
    }

    #[test]
    fn an_unwritable_audit_log_raises_its_alert_until_it_writes_again() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut report = good();
        report.audit.failed = 3;
        report.audit.unwritable = Some("No space left on device (os error 28): 3 records".into());
        let s = m.assess(&report, Some(50.0));
        assert_eq!(s.state, HealthState::Degraded, "{s:?}");
        assert!(s.alerts["audit_unwritable"], "{s:?}");
        assert!(!s.alerts["audit_damaged"], "{s:?}");
        assert!(
            s.recent_alerts[0].message.contains("No space left"),
            "{s:?}"
        );
        // Space again: cleared, though the count of lost records stays in the status.
        report.audit.unwritable = None;
        let s = m.assess(&report, Some(50.0));
        assert_eq!(s.state, HealthState::Healthy, "{s:?}");
        assert!(!s.alerts["audit_unwritable"], "{s:?}");
    }

    #[test]
    fn a_damaged_or_disabled_audit_log_is_said() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut report = good();
        report.audit.damage = vec!["audit-00000003.log byte 812: checksum mismatch".into()];
        let s = m.assess(&report, Some(50.0));
        assert_eq!(s.state, HealthState::Degraded, "{s:?}");
        assert!(s.alerts["audit_damaged"]);
        assert!(s.recent_alerts[0].message.contains("byte 812"), "{s:?}");
        let mut report = good();
        report.audit.disabled_reason = Some("audit.danger_disabled = true".into());
        let s = HealthMonitor::new(HealthConfig::default()).assess(&report, Some(50.0));
        assert_eq!(s.state, HealthState::Degraded, "{s:?}");
        assert!(
            s.reasons.iter().any(|r| r.contains("danger_disabled")),
            "{s:?}"
        );
    }

    #[test]
    fn healthy_vehicle_then_no_autopilot_is_failed_with_a_reason() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let s = m.assess(&good(), Some(50.0));
        assert_eq!(s.state, HealthState::Healthy, "{s:?}");
        assert!(s.reasons.is_empty());
        // The four of issue 7, `audit_damaged` (issue 15), `local_estop_unavailable` (issue 13)
        // `link_untrusted` (issue 19) and `audit_unwritable` (issue 21).
        assert_eq!(s.alerts.len(), 8);
        let s = HealthMonitor::new(HealthConfig::default())
            .assess(&StatusReport::without_vehicle(), None);
        assert_eq!(s.state, HealthState::Failed);
        assert!(s.reasons[0].contains("no autopilot heard"), "{s:?}");
        assert!(
            s.recent_alerts.is_empty(),
            "nothing to alert about before the vehicle is heard"
        );
    }

    #[test]
    fn battery_alert_rises_once_while_the_voltage_sags_around_the_threshold() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut r = good();
        for percent in [31.0, 30.0, 31.0, 29.0, 33.0, 30.0, 34.9] {
            r.vehicle.battery.remaining_percent = Some(percent);
            m.assess(&r, None);
        }
        r.vehicle.battery.remaining_percent = Some(35.5);
        let s = m.assess(&r, None);
        assert!(!s.alerts["battery_low"], "cleared above 30 + 5 %");
        assert_eq!(raised(&s), vec![(1, "battery_low")]);
        r.vehicle.battery.remaining_percent = Some(29.0);
        let s = m.assess(&r, None);
        assert_eq!(raised(&s), vec![(1, "battery_low"), (2, "battery_low")]);
        assert_eq!(s.state, HealthState::Degraded);
        r.vehicle.battery.remaining_percent = Some(12.0);
        let s = m.assess(&r, None);
        assert_eq!(s.state, HealthState::Failed);
        assert!(
            s.reasons.iter().any(|x| x.contains("battery critical")),
            "{s:?}"
        );
    }

    #[test]
    fn link_gps_and_cpu_alerts_rise_and_clear_with_hysteresis() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut r = good();
        m.assess(&r, Some(70.0));
        r.vehicle.link.loss_percent = 12.0;
        r.vehicle.gps.fix_type = crate::vehicle::snapshot::FixType::NoFix;
        let s = m.assess(&r, Some(76.0));
        assert_eq!(
            raised(&s),
            vec![(1, "link_degraded"), (2, "gps_lost"), (3, "cpu_hot")]
        );
        assert_eq!(s.state, HealthState::Degraded);
        assert_eq!(s.reasons.len(), 3, "{s:?}");
        // Inside the hysteresis bands: still active, nothing new raised.
        r.vehicle.link.loss_percent = 7.0;
        let s = m.assess(&r, Some(72.0));
        assert!(s.alerts["link_degraded"] && s.alerts["cpu_hot"] && s.alerts["gps_lost"]);
        assert_eq!(s.recent_alerts.len(), 3);
        r.vehicle.link.loss_percent = 4.0;
        r.vehicle.gps.fix_type = crate::vehicle::snapshot::FixType::RtkFixed;
        let s = m.assess(&r, Some(69.0));
        assert_eq!(s.state, HealthState::Healthy, "{s:?}");
        // The heartbeat stops: failed, and the link alert rises again.
        r.vehicle.link.heartbeat_age_ms = Some(5000);
        let s = m.assess(&r, Some(69.0));
        assert_eq!(s.state, HealthState::Failed);
        assert_eq!(
            s.recent_alerts.last().map(|a| a.alert.as_str()),
            Some("link_degraded")
        );
        assert!(s.reasons[0].contains("no heartbeat for 5.0 s"), "{s:?}");
    }

    #[test]
    fn gps_is_not_lost_before_it_was_had_and_the_log_is_bounded() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut r = good();
        r.vehicle.gps.fix_type = crate::vehicle::snapshot::FixType::NoGps;
        assert_eq!(m.assess(&r, None).state, HealthState::Healthy);
        for i in 0..40 {
            let t = if i % 2 == 0 { 90.0 } else { 60.0 };
            m.assess(&r, Some(t));
        }
        let s = m.assess(&r, None);
        assert_eq!(s.recent_alerts.len(), RECENT_ALERTS_MAX);
        assert_eq!(s.recent_alerts.last().map(|a| a.sequence), Some(20));
    }

    #[test]
    fn a_local_estop_that_could_not_be_bound_is_an_alert_and_a_reason() {
        use crate::estop::local_status::{LocalEstopState, LocalEstopStatus};
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut r = good();
        r.local_estop = LocalEstopStatus {
            state: LocalEstopState::Listening,
            socket_path: Some("/run/user/1000/flight-companion/estop.sock".into()),
            error: None,
        };
        assert_eq!(m.assess(&r, None).state, HealthState::Healthy);
        r.local_estop.state = LocalEstopState::Unavailable;
        r.local_estop.error = Some("cannot create /run/flight-companion: Permission denied".into());
        let s = m.assess(&r, None);
        assert_eq!(s.state, HealthState::Degraded, "{s:?}");
        assert!(s.alerts["local_estop_unavailable"]);
        assert_eq!(raised(&s), vec![(1, "local_estop_unavailable")]);
        assert!(
            s.recent_alerts[0].message.contains("Permission denied")
                && s.recent_alerts[0].message.contains("estop.socket_path"),
            "{s:?}"
        );
        assert!(s.reasons[0].contains("no local e-stop socket"), "{s:?}");
        // Raised once, not at every assessment.
        assert_eq!(m.assess(&r, None).recent_alerts.len(), 1);
        // Disabled on purpose (estop.socket_path = ""): shown in the status, not an alert.
        r.local_estop.state = LocalEstopState::Disabled;
        assert_eq!(m.assess(&r, None).state, HealthState::Healthy);
    }

    #[test]
    fn config_rules() {
        assert!(HealthConfig::default().check().is_ok());
        let c = HealthConfig {
            battery_critical_percent: 40.0,
            ..HealthConfig::default()
        };
        assert_eq!(c.check().unwrap_err().0, "health.battery_critical_percent");
        let c = HealthConfig {
            cpu_temperature_c_hot: f64::NAN,
            ..HealthConfig::default()
        };
        assert_eq!(c.check().unwrap_err().0, "health.cpu_temperature_c_hot");
    }

    #[test]
    fn link_untrusted_while_the_link_refuses_and_a_while_after() {
        let mut m = HealthMonitor::new(HealthConfig::default());
        let mut r = good();
        r.vehicle.link.trust.refused.bad_signature = 3;
        r.vehicle.link.trust.last_refusal = Some("bad_signature: COMMAND_ACK ...".into());
        for (age_ms, active) in [
            (None, false),
            (Some(200), true),
            // Refusals that go on are reported every 10 s: the alert holds between reports.
            (Some(14_000), true),
            (Some(29_000), true),
            (Some(31_000), false),
            (Some(20_000), false),
            (Some(1_000), true),
        ] {
            r.vehicle.link.trust.last_intrusion_age_ms = age_ms;
            let s = m.assess(&r, None);
            assert_eq!(s.alerts["link_untrusted"], active, "{age_ms:?}: {s:?}");
            assert_eq!(
                s.reasons.iter().any(|x| x.contains("refusing frames")),
                active,
                "{s:?}"
            );
        }
        let raised: Vec<_> = m
            .recent
            .iter()
            .filter(|a| a.alert == "link_untrusted")
            .collect();
        assert_eq!(raised.len(), 2, "raised once per episode");
        assert!(
            raised[0].message.contains("3 frames"),
            "{}",
            raised[0].message
        );
        assert!(
            raised[0].message.contains("signing install"),
            "{}",
            raised[0].message
        );
    }
}
