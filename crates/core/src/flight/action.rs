//! What a client may ask of the vehicle, how it ends, and the bounds every request must
//! meet before anything else looks at it (the MCP SDK does not enforce input schemas).

use std::fmt;

/// Highest altitude above home any request may name, before the envelope narrows it.
pub const ALTITUDE_M_MAX: f64 = 1000.0;
/// Lowest takeoff altitude: below this the vehicle stays in ground effect.
pub const TAKEOFF_ALTITUDE_M_MIN: f64 = 1.0;
/// Fastest horizontal speed any request may name, before the envelope narrows it.
pub const SPEED_M_S_MAX: f64 = 30.0;
/// Slowest speed a request may name (ArduPilot clamps lower values anyway).
pub const SPEED_M_S_MIN: f64 = 0.1;
/// Longest relative move on any axis.
pub const RELATIVE_M_MAX: f64 = 1000.0;

/// One request from a client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Arm,
    Disarm,
    Takeoff {
        altitude_m: f64,
    },
    /// `altitude_m` is relative to home.
    Goto {
        latitude_deg: f64,
        longitude_deg: f64,
        altitude_m: f64,
        speed_m_s: Option<f64>,
    },
    /// Body frame from the current heading; `up_m` positive climbs.
    MoveRelative {
        forward_m: f64,
        right_m: f64,
        up_m: f64,
    },
    SetHeading {
        heading_deg: f64,
    },
    SetSpeed {
        speed_m_s: f64,
    },
    Hold,
    Land,
    ReturnHome,
    /// Fly the autopilot's mission (AUTO), checked first against the envelope; `resume`
    /// goes on from the current item, otherwise from the first.
    RunMission {
        resume: bool,
    },
    /// Hold where the vehicle is, keeping the mission's current item for a resume.
    PauseMission,
}

impl Action {
    /// The tool name a person or a model knows it by.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Arm => "arm",
            Action::Disarm => "disarm",
            Action::Takeoff { .. } => "takeoff",
            Action::Goto { .. } => "goto",
            Action::MoveRelative { .. } => "move_relative",
            Action::SetHeading { .. } => "set_heading",
            Action::SetSpeed { .. } => "set_speed",
            Action::Hold => "hold",
            Action::Land => "land",
            Action::ReturnHome => "return_home",
            Action::RunMission { resume: false } => "start_mission",
            Action::RunMission { resume: true } => "resume_mission",
            Action::PauseMission => "pause_mission",
        }
    }

    /// True for actions that move the vehicle somewhere: one supersedes another, and the
    /// envelope checks each before anything is sent. `set_speed` changes how fast the
    /// current action flies, so it runs beside it instead of replacing it.
    pub fn is_motion(&self) -> bool {
        !matches!(self, Action::SetSpeed { .. })
    }

    /// Actions that bring the vehicle down or home: accepted even below the battery
    /// reserve or outside the envelope, because they are the way back.
    pub fn is_recovery(&self) -> bool {
        matches!(
            self,
            Action::Hold | Action::Land | Action::ReturnHome | Action::PauseMission
        )
    }

    /// Checks the numbers against the bounds in the tool schemas; the refusal says what
    /// would be accepted.
    pub fn validate(&self) -> Result<(), String> {
        fn within(name: &str, value: f64, min: f64, max: f64, unit: &str) -> Result<(), String> {
            if value.is_finite() && (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be between {min} and {max} {unit}; got {value}"
                ))
            }
        }
        match *self {
            Action::Takeoff { altitude_m } => within(
                "altitude_m",
                altitude_m,
                TAKEOFF_ALTITUDE_M_MIN,
                ALTITUDE_M_MAX,
                "m above home",
            ),
            Action::Goto {
                latitude_deg,
                longitude_deg,
                altitude_m,
                speed_m_s,
            } => {
                within("latitude_deg", latitude_deg, -90.0, 90.0, "degrees")?;
                within("longitude_deg", longitude_deg, -180.0, 180.0, "degrees")?;
                within(
                    "altitude_m",
                    altitude_m,
                    0.0,
                    ALTITUDE_M_MAX,
                    "m above home",
                )?;
                match speed_m_s {
                    Some(s) => within("speed_m_s", s, SPEED_M_S_MIN, SPEED_M_S_MAX, "m/s"),
                    None => Ok(()),
                }
            }
            Action::MoveRelative {
                forward_m,
                right_m,
                up_m,
            } => {
                within("forward_m", forward_m, -RELATIVE_M_MAX, RELATIVE_M_MAX, "m")?;
                within("right_m", right_m, -RELATIVE_M_MAX, RELATIVE_M_MAX, "m")?;
                within("up_m", up_m, -RELATIVE_M_MAX, RELATIVE_M_MAX, "m")
            }
            Action::SetHeading { heading_deg } => {
                within("heading_deg", heading_deg, 0.0, 360.0, "degrees")
            }
            Action::SetSpeed { speed_m_s } => {
                within("speed_m_s", speed_m_s, SPEED_M_S_MIN, SPEED_M_S_MAX, "m/s")
            }
            Action::Arm
            | Action::Disarm
            | Action::Hold
            | Action::Land
            | Action::ReturnHome
            | Action::RunMission { .. }
            | Action::PauseMission => Ok(()),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Takeoff { altitude_m } => write!(f, "takeoff to {altitude_m} m"),
            Action::Goto {
                latitude_deg,
                longitude_deg,
                altitude_m,
                ..
            } => write!(
                f,
                "goto {latitude_deg:.7}, {longitude_deg:.7} at {altitude_m} m"
            ),
            Action::MoveRelative {
                forward_m,
                right_m,
                up_m,
            } => write!(
                f,
                "move_relative forward {forward_m} m, right {right_m} m, up {up_m} m"
            ),
            Action::SetHeading { heading_deg } => write!(f, "set_heading {heading_deg}°"),
            Action::SetSpeed { speed_m_s } => write!(f, "set_speed {speed_m_s} m/s"),
            other => f.write_str(other.name()),
        }
    }
}

/// Where a motion request would take the vehicle: what the envelope checks before anything
/// is sent. Altitudes are relative to home.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// The vehicle's position when the request was planned.
    pub from_latitude_deg: f64,
    pub from_longitude_deg: f64,
    pub from_altitude_m: f64,
    /// The target (for takeoff: straight up from where it stands).
    pub to_latitude_deg: f64,
    pub to_longitude_deg: f64,
    pub to_altitude_m: f64,
    /// The speed asked for, if any.
    pub speed_m_s: Option<f64>,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The vehicle reported that it did what was asked.
    Completed,
    /// Refused before anything was sent (envelope, state, bounds).
    Refused,
    /// Sent, and the vehicle refused it or did not do it in time.
    Failed,
    /// Cancelled by the client; the vehicle holds position.
    Cancelled,
    /// Replaced by a newer motion request.
    Superseded,
    /// The pilot switched to a manual mode; the daemon does not fight the pilot.
    TakenOver,
    /// The autopilot link was lost; nothing more is sent for it.
    LinkLost,
    /// Another part of the daemon (e.g. the envelope's breach action) took over.
    Preempted,
}

/// The end of an action, with one sentence a person or a model can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    pub outcome: Outcome,
    pub message: String,
}

/// A progress report of a long action.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    pub message: String,
    /// Horizontal distance to the target, when there is one.
    pub distance_m_remaining: Option<f64>,
    /// Altitude above home now.
    pub altitude_m: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_and_refusals_say_what_is_accepted() {
        assert!(Action::Takeoff { altitude_m: 10.0 }.validate().is_ok());
        let e = Action::Takeoff { altitude_m: 0.2 }.validate().unwrap_err();
        assert!(e.contains("between 1 and 1000"), "{e}");
        let e = Action::Goto {
            latitude_deg: 91.0,
            longitude_deg: 0.0,
            altitude_m: 10.0,
            speed_m_s: None,
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("latitude_deg"), "{e}");
        let e = Action::SetSpeed {
            speed_m_s: f64::NAN,
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("speed_m_s"), "{e}");
        assert!(
            Action::MoveRelative {
                forward_m: 0.0,
                right_m: 0.5,
                up_m: 0.0
            }
            .validate()
            .is_ok()
        );
        assert!(!Action::SetSpeed { speed_m_s: 2.0 }.is_motion());
        assert!(Action::Land.is_recovery() && !Action::Arm.is_recovery());
    }
}
