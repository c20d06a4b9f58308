//! The daemon's status report: what `get_status` returns and `vehicle://status` contains.
//!
//! The daemon loop owns the latest value and publishes it through a watch channel
//! (telemetry policy: skip to latest; the channel is the daemon's); the MCP server reads it.
//! The JSON schema of the tool's output comes from this type, so it and the serialised
//! value cannot drift apart.

use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::Serialize;

use crate::health::{HealthConfig, HealthFacts, HealthMonitor, HealthSummary};
use crate::vehicle::snapshot::{
    AttitudeStatus, BatteryStatus, EstimatorStatus, FixType, Freshness, GpsStatus, LandedState,
    LinkHealthStatus, ModeName, ModeStatus, PositionStatus, SystemStatus, VehicleSnapshot,
};

/// The vehicle as the daemon sees it, plus facts about the daemon itself.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StatusReport {
    /// Vehicle state: mode and arming, position (degrees, metres), attitude (degrees),
    /// battery (volts, amperes, percent), GPS, estimator, home, recent status texts and
    /// MAVLink link health. Every group has `freshness.age_ms` and `freshness.stale`.
    pub vehicle: VehicleSnapshot,
    /// The daemon's version and git commit.
    pub daemon_version: String,
    /// True when the autopilot is a simulator (reported by the vehicle itself).
    pub simulated: bool,
    /// True once the daemon has heard the autopilot's heartbeat at least once.
    pub autopilot_seen: bool,
    /// Health: `healthy`, `degraded` or `failed` with reasons, the alerts that are active
    /// and the last ones raised. Also the `health://summary` resource.
    pub health: HealthSummary,
    /// The envelope's warning while the vehicle is near a margin (e.g. "2.1 m from the
    /// keep-in edge, margin 5 m"); null otherwise.
    pub envelope_warning: Option<String>,
    /// The flight action the daemon is carrying out (`goto`, `land`, ...); null when idle.
    pub active_action: Option<String>,
    /// The camera's health (source state, last frame age, errors); null without a camera.
    pub camera: Option<crate::camera::CameraStatus>,
    /// The last envelope warnings (near a margin) and errors (breach, breach action), oldest
    /// first, at most 16; each is also sent once to every MCP session as
    /// `notifications/message`.
    pub envelope_events: Vec<crate::supervisor::EnvelopeEvent>,
    /// The safety microcontroller (firmware bridge): link state, e-stop switch, output.
    pub bridge: crate::bridge::BridgeStatus,
    /// The emergency stop: latched or not, why, the rung being commanded, active failsafes
    /// and the last events (triggers, escalations, resets).
    pub emergency_stop: crate::estop::StopStatus,
    /// The audit log: on or off (and why), records, the newest signed checkpoint, the
    /// verifier key, damage found, dropped and failed records.
    pub audit: crate::audit::AuditStatus,
    /// The subject (never a client id) holding the control lease, the one pilot in command
    /// over MCP; null when nobody does.
    pub lease_holder: Option<String>,
    /// The local e-stop socket (`flight-companion estop`): listening, unavailable (with the
    /// error; also the health alert `local_estop_unavailable`) or disabled.
    pub local_estop: crate::estop::local_status::LocalEstopStatus,
    /// The pre-flight check of the autopilot's own settings against the envelope (speeds,
    /// return altitude, battery failsafe, its fence): each finding with the parameter to set,
    /// the speed the margins are sized from, and whether arming is allowed. Null before the
    /// daemon's loop fills it in (and from tools that run without a vehicle).
    #[schemars(schema_with = "same_as_preflight_check")]
    pub preflight: Option<crate::safety::preflight::PreflightReport>,
    /// The autopilot's own fence compared with the envelope (issue 18's fence mirror):
    /// whether it matches, when it was last verified, what differs. Null before the daemon's
    /// loop fills it in.
    pub autopilot_fence: Option<AutopilotFenceStatus>,
    /// This report as JSON, made once by the first reader that needs it and shared by all
    /// (not part of the JSON).
    #[serde(skip)]
    #[schemars(skip)]
    pub serialized: SerializedCache,
}

/// The autopilot's own fence against the envelope (`mirror_fence`, the check at link-up).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AutopilotFenceStatus {
    /// `true` when the autopilot's fence list and fence parameters were read back equal to
    /// the envelope, `false` when they differ (see `differences`), `unknown` before a
    /// read-back or after a failed one (see `error`).
    pub matches_envelope: FenceMatch,
    /// Seconds since the autopilot's fence was last found equal to the envelope; null never.
    pub verified_age_s: Option<f64>,
    /// Seconds since it was last read back and compared; null never.
    pub checked_age_s: Option<f64>,
    /// What differs, one sentence each (e.g. "autopilot fence has 0 inclusion polygons;
    /// envelope has 1").
    pub differences: Vec<String>,
    /// The zones of the fence list last downloaded from the autopilot.
    pub autopilot_zones: Option<crate::safety::fence_mirror::FenceCounts>,
    /// The mirror or check in progress; null when idle.
    pub running: Option<crate::vehicle::fence_sync::FenceJob>,
    /// Why the last read-back did not finish.
    pub error: Option<String>,
    /// `[envelope] mirror_to_autopilot`: mirrored at link-up when it differs.
    pub mirror_to_autopilot: bool,
}

/// Whether the autopilot's fence matches the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FenceMatch {
    True,
    False,
    Unknown,
}

impl AutopilotFenceStatus {
    pub fn new(
        status: &crate::vehicle::fence_sync::FenceStatus,
        now: std::time::Instant,
        mirror_to_autopilot: bool,
    ) -> AutopilotFenceStatus {
        let age = |at: Option<std::time::Instant>| {
            at.map(|at| (now.saturating_duration_since(at).as_secs_f64() * 10.0).round() / 10.0)
        };
        AutopilotFenceStatus {
            matches_envelope: match status.matches_envelope {
                Some(true) => FenceMatch::True,
                Some(false) => FenceMatch::False,
                None => FenceMatch::Unknown,
            },
            verified_age_s: age(status.verified_at),
            checked_age_s: age(status.checked_at),
            differences: status.differences.clone(),
            autopilot_zones: status.autopilot_zones,
            running: status.running,
            error: status.error.clone(),
            mirror_to_autopilot,
        }
    }
}

/// A report serialised once: the compact JSON text, and the same text as a JSON string (for
/// a text content block).
#[derive(Debug)]
pub struct SerializedStatus {
    pub text: Arc<str>,
    pub quoted: Arc<str>,
}

/// The serialisation of the report that holds it, made on first use. The daemon publishes
/// a new report on each change (at most every 100 ms, and when a job ends), and every
/// `get_status` and `vehicle://status` read of that report shares one serialisation instead
/// of cloning and serialising the whole report per call. A clone starts empty, so a report
/// that is cloned and then changed never carries a stale serialisation; two reports compare
/// equal whatever their caches hold.
#[derive(Default)]
pub struct SerializedCache(OnceLock<Arc<SerializedStatus>>);

impl Clone for SerializedCache {
    fn clone(&self) -> SerializedCache {
        SerializedCache::default()
    }
}

impl PartialEq for SerializedCache {
    fn eq(&self, _: &SerializedCache) -> bool {
        true
    }
}

impl std::fmt::Debug for SerializedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "SerializedCache(made)"
        } else {
            "SerializedCache(empty)"
        })
    }
}

impl StatusReport {
    /// The report as JSON, serialised on the first call and shared after.
    pub fn serialized(&self) -> Arc<SerializedStatus> {
        self.serialized
            .0
            .get_or_init(|| {
                let text = serde_json::to_string(self).unwrap_or_else(|e| {
                    serde_json::json!({"error": format!("cannot serialise the status: {e}")})
                        .to_string()
                });
                let quoted = serde_json::to_string(&text).unwrap_or_default();
                Arc::new(SerializedStatus {
                    text: text.into(),
                    quoted: quoted.into(),
                })
            })
            .clone()
    }

    /// The report before anything was heard from the autopilot: every group stale.
    pub fn without_vehicle() -> StatusReport {
        StatusReport::from_snapshot(empty_snapshot())
    }

    /// Wraps a vehicle snapshot.
    pub fn from_snapshot(vehicle: VehicleSnapshot) -> StatusReport {
        let mut report = StatusReport::unassessed(vehicle);
        // Default thresholds and no history: the daemon loop replaces this with its
        // [`HealthMonitor`]'s assessment (configured thresholds, hysteresis, alert log).
        report.health = HealthMonitor::new(HealthConfig::default()).assess(&report, None);
        report
    }

    /// The report of `vehicle` with the health left at its default, for a caller that
    /// assesses it itself once the report is complete (the daemon's Core, ten times a
    /// second: a throwaway assessment here was a fifth of the status's cost).
    pub fn unassessed(vehicle: VehicleSnapshot) -> StatusReport {
        let simulated = vehicle.autopilot.as_ref().is_some_and(|a| a.simulated);
        let autopilot_seen = vehicle.autopilot.is_some();
        StatusReport {
            vehicle,
            daemon_version: crate::VERSION.to_string(),
            simulated,
            autopilot_seen,
            health: HealthSummary::default(),
            envelope_warning: None,
            active_action: None,
            camera: None,
            envelope_events: Vec::new(),
            bridge: crate::bridge::BridgeStatus::disabled(),
            emergency_stop: crate::estop::StopStatus::default(),
            audit: crate::audit::AuditStatus::default(),
            local_estop: crate::estop::local_status::LocalEstopStatus::default(),
            lease_holder: None,
            preflight: None,
            autopilot_fence: None,
            serialized: SerializedCache::default(),
        }
    }
}

impl<'a> From<&'a StatusReport> for HealthFacts<'a> {
    fn from(report: &'a StatusReport) -> HealthFacts<'a> {
        HealthFacts {
            vehicle: &report.vehicle,
            autopilot_seen: report.autopilot_seen,
            audit: &report.audit,
            local_estop: &report.local_estop,
        }
    }
}

impl StatusReport {
    /// Where the vehicle was and how it was oriented: a camera frame's tags.
    pub fn vehicle_at_capture(&self) -> crate::camera::VehicleAtCapture {
        let p = &self.vehicle.position;
        let a = &self.vehicle.attitude;
        crate::camera::VehicleAtCapture {
            latitude_deg: p.latitude_deg,
            longitude_deg: p.longitude_deg,
            altitude_msl_m: p.altitude_msl_m,
            altitude_relative_m: p.altitude_relative_m,
            heading_deg: a.heading_deg,
            roll_deg: a.roll_deg,
            pitch_deg: a.pitch_deg,
            yaw_deg: a.yaw_deg,
            position_stale: p.freshness.stale,
        }
    }
}

fn empty_snapshot() -> VehicleSnapshot {
    let never = Freshness {
        age_ms: None,
        stale: true,
    };
    VehicleSnapshot {
        autopilot: None,
        mode: ModeStatus {
            freshness: never,
            armed: false,
            flight_mode: ModeName::UNKNOWN,
            custom_mode: 0,
            landed_state: LandedState::Undefined,
            system_status: SystemStatus::Uninit,
        },
        position: PositionStatus {
            freshness: never,
            latitude_deg: 0.0,
            longitude_deg: 0.0,
            altitude_msl_m: 0.0,
            altitude_relative_m: 0.0,
            velocity_north_m_s: 0.0,
            velocity_east_m_s: 0.0,
            velocity_down_m_s: 0.0,
            ground_speed_m_s: 0.0,
        },
        attitude: AttitudeStatus {
            freshness: never,
            roll_deg: 0.0,
            pitch_deg: 0.0,
            yaw_deg: 0.0,
            heading_deg: 0.0,
        },
        battery: BatteryStatus {
            freshness: never,
            voltage_v: 0.0,
            current_a: None,
            remaining_percent: None,
        },
        gps: GpsStatus {
            freshness: never,
            fix_type: FixType::NoGps,
            satellites_visible: 0,
            hdop: None,
        },
        estimator: EstimatorStatus {
            freshness: never,
            position_valid: false,
        },
        home: None,
        status_texts: Vec::new(),
        link: LinkHealthStatus::default(),
    }
}

/// The pre-flight check inside the status: described, not repeated (`preflight_check`'s
/// output schema has it in full; repeating it would grow every `tools/list`).
fn same_as_preflight_check(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [{"type": "object"}, {"type": "null"}],
        "description": "The pre-flight check of the autopilot against the envelope, the same object preflight_check returns (see its outputSchema): findings with the parameter to set, the speed the margins are sized from, whether arming is allowed; null before the daemon's loop fills it in."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_serialises_with_the_documented_top_level_fields() {
        let value = serde_json::to_value(StatusReport::without_vehicle()).unwrap();
        assert_eq!(value["daemon_version"], crate::VERSION);
        assert_eq!(value["simulated"], false);
        assert_eq!(value["vehicle"]["position"]["freshness"]["stale"], true);
        let schema = serde_json::to_value(schemars::schema_for!(StatusReport)).unwrap();
        assert_eq!(schema["type"], "object");
        assert!(schema["properties"]["vehicle"].is_object(), "{schema}");
    }
}
