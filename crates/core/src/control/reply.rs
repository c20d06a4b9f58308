//! What the decision loop answers a flight request with (pure data): the tools' structured
//! result and the envelope view. The channels that carry them are `control`'s.

use schemars::JsonSchema;
use serde::Serialize;

use crate::flight::{Action, Outcome};
use crate::status::StatusReport;

/// The vehicle's state at the end of an action: the status fields that matter to the caller.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct VehicleSummary {
    pub armed: bool,
    /// In the autopilot's own terms (`GUIDED`, `BRAKE`, `AUTO.LOITER`, ...).
    #[schemars(with = "String")]
    pub flight_mode: crate::vehicle::snapshot::ModeName,
    /// `on_ground`, `in_air`, `takeoff`, `landing`, `undefined`.
    #[schemars(with = "String")]
    pub landed_state: crate::vehicle::snapshot::LandedState,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Above home.
    pub altitude_m: f64,
    pub heading_deg: f64,
    pub ground_speed_m_s: f64,
    pub battery_voltage_v: f64,
    pub battery_remaining_percent: Option<f64>,
    /// The envelope's warning when the vehicle is near a margin; null otherwise.
    pub envelope_warning: Option<String>,
}

impl VehicleSummary {
    pub fn from_status(status: &StatusReport) -> VehicleSummary {
        let v = &status.vehicle;
        VehicleSummary {
            armed: v.mode.armed,
            flight_mode: v.mode.flight_mode,
            landed_state: v.mode.landed_state,
            latitude_deg: v.position.latitude_deg,
            longitude_deg: v.position.longitude_deg,
            altitude_m: v.position.altitude_relative_m,
            heading_deg: v.attitude.heading_deg,
            ground_speed_m_s: v.position.ground_speed_m_s,
            battery_voltage_v: v.battery.voltage_v,
            battery_remaining_percent: v.battery.remaining_percent,
            envelope_warning: status.envelope_warning.clone(),
        }
    }
}

/// How a request ended, for the tool's structured result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ControlReply {
    /// The tool name.
    pub action: String,
    pub outcome: Outcome,
    /// One sentence a person or a model can act on.
    pub message: String,
    /// The vehicle after the action (null when the autopilot was never heard).
    pub vehicle: Option<VehicleSummary>,
}

impl ControlReply {
    pub fn refused(action: &Action, message: String, vehicle: Option<VehicleSummary>) -> Self {
        ControlReply {
            action: action.name().into(),
            outcome: Outcome::Refused,
            message,
            vehicle,
        }
    }
}

/// The envelope in force as `get_envelope` shows it, or why there is none.
pub type EnvelopeView = Result<crate::safety::EnvelopeSummary, String>;
