//! The pre-flight check of the autopilot against the envelope (sans-IO): what the autopilot is
//! configured to do on its own (its speeds, its return altitude, its battery monitor and
//! failsafe, its own fence) that the envelope depends on, with the parameter and the value to
//! set for each finding.
//!
//! The autopilots fly at their own speeds whenever the daemon does not say otherwise, and the
//! daemon's margins must cover what the vehicle can actually fly (`check` returns the speed
//! the margins are sized from, and which setting drove it):
//! - ArduCopter (`ArduCopter/mode_guided.cpp`, `mode_rtl.cpp`, `AC_WPNav.cpp`): GUIDED targets
//!   start at `WPNAV_SPEED` (cm/s) on every controller start; RTL cruises at `RTL_SPEED`
//!   (0: `WPNAV_SPEED`) and climbs first to `RTL_ALT` (cm); LAND descends at `LAND_SPEED` (a
//!   vertical speed, outside the horizontal margins). `LOIT_SPEED` governs only the pilot's
//!   LOITER, where the pilot is in command, so it does not size the daemon's margins.
//! - PX4 (`navigator_main.cpp`, `rtl_direct.cpp`, `mc_pos_control` parameters): Hold
//!   repositions and RTL cruise at `MPC_XY_CRUISE` (m/s) unless told, capped by
//!   `MPC_XY_VEL_MAX`; RTL returns at `RTL_RETURN_ALT` (m).
//!
//! Severity: an `error` means the envelope cannot hold (the autopilot's own return would climb
//! through the ceiling, the battery reserve cannot be measured, the margins sized from the
//! autopilot's speed leave no room) and arming is refused; a `warning` is a weaker safety net
//! (the envelope holds, with wider margins or without the autopilot's own backup).

use schemars::JsonSchema;
use serde::Serialize;

use super::envelope_config::EnvelopeConfig;
use crate::vehicle::snapshot::AutopilotKind;

use super::envelope::stopping_distance_m;

/// The parameters read from ArduPilot: speeds, return, battery, fence.
pub const ARDUPILOT_PARAMS: &[&str] = &[
    "WPNAV_SPEED",
    "RTL_SPEED",
    "RTL_ALT",
    "BATT_MONITOR",
    "BATT_CAPACITY",
    "BATT_LOW_MAH",
    "BATT_FS_LOW_ACT",
    "FENCE_ENABLE",
    "FENCE_TYPE",
    "FENCE_ACTION",
    "FENCE_ALT_MAX",
    "FENCE_RADIUS",
];

/// The parameters read from PX4.
pub const PX4_PARAMS: &[&str] = &[
    "MPC_XY_CRUISE",
    "MPC_XY_VEL_MAX",
    "RTL_RETURN_ALT",
    "BAT1_CAPACITY",
    "BAT_LOW_THR",
    "COM_LOW_BAT_ACT",
    "GF_ACTION",
    "GF_MAX_HOR_DIST",
    "GF_MAX_VER_DIST",
];

/// The names to read from this kind of autopilot.
pub fn params_for(kind: AutopilotKind) -> &'static [&'static str] {
    match kind {
        AutopilotKind::Ardupilot => ARDUPILOT_PARAMS,
        AutopilotKind::Px4 => PX4_PARAMS,
        AutopilotKind::Other => &[],
    }
}

/// True for a name the daemon may ask the autopilot for (the whitelist's `PARAM_REQUEST_READ`).
pub fn is_readable(name: &str) -> bool {
    ARDUPILOT_PARAMS.contains(&name) || PX4_PARAMS.contains(&name)
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The envelope holds, with a weaker net (wider margins, no autopilot backup).
    Warning,
    /// The envelope cannot hold: arming is refused until it is fixed.
    Error,
}

/// One thing to change on the autopilot.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Finding {
    pub severity: Severity,
    /// The parameter to set.
    pub parameter: String,
    /// Its value now, in the firmware's units; null when it could not be read.
    pub value: Option<f64>,
    /// What to set it to (a value or a bound, in the firmware's units).
    pub set_to: String,
    /// Why, in a sentence a person or a model can act on.
    pub message: String,
}

pub use super::envelope::MarginSpeed;

/// What the check found.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PreflightReport {
    /// `not_started` (no autopilot yet), `reading` its parameters, or `done`.
    pub state: String,
    /// Parameters read, of those asked for.
    pub parameters_read: usize,
    pub parameters_expected: usize,
    /// Parameters the autopilot did not answer for.
    pub parameters_missing: Vec<String>,
    /// Milliseconds since the oldest value was read; null before any.
    pub parameters_age_ms: Option<u64>,
    /// Errors first. Shared: the status shows the same findings until the check's inputs
    /// change (`Supervisor::preflight_shown`), and a status is built ten times a second.
    pub findings: std::sync::Arc<[Finding]>,
    /// The highest horizontal speed the vehicle can fly on its own or when told (the
    /// envelope's limit or the autopilot's speeds, whichever is higher): the horizontal margin
    /// is at least the stopping distance at this speed.
    pub margin_speed: MarginSpeed,
    /// The horizontal margin in force (the configured one, or the stopping distance at
    /// `margin_speed` when larger).
    pub margin_horizontal_m: f64,
    /// The speed a motion flies at when it names none: the envelope's limit, or the
    /// autopilot's own cruise when slower.
    pub cruise_speed_m_s: f64,
    /// False when an error finding stands or the parameters are still being read.
    pub arming_allowed: bool,
}

impl PreflightReport {
    /// The first error, for an arming refusal.
    pub fn first_error(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.severity == Severity::Error)
    }
}

/// What `check` needs to know about the parameters read so far.
pub struct Parameters<'a> {
    pub kind: AutopilotKind,
    pub value: &'a dyn Fn(&str) -> Option<f64>,
    /// Still reading: no verdict on arming yet.
    pub reading: bool,
    pub missing: &'a [&'static str],
}

/// The highest speed the vehicle flies at without being told, and which setting says so.
pub fn margin_speed(
    kind: AutopilotKind,
    value: &dyn Fn(&str) -> Option<f64>,
    limit_m_s: f64,
) -> MarginSpeed {
    let mut basis = MarginSpeed {
        speed_m_s: limit_m_s,
        source: "envelope.speed_horizontal_m_s_max",
    };
    let mut consider = |speed_m_s: Option<f64>, source: &'static str| {
        if let Some(speed) = speed_m_s.filter(|s| s.is_finite() && *s > basis.speed_m_s) {
            basis = MarginSpeed {
                speed_m_s: speed,
                source,
            };
        }
    };
    match kind {
        AutopilotKind::Ardupilot => {
            let wpnav = value("WPNAV_SPEED").map(|v| v / 100.0);
            consider(wpnav, "WPNAV_SPEED");
            match value("RTL_SPEED") {
                Some(v) if v > 0.0 => consider(Some(v / 100.0), "RTL_SPEED"),
                _ => {}
            }
        }
        AutopilotKind::Px4 => {
            let cap = value("MPC_XY_VEL_MAX").unwrap_or(f64::INFINITY);
            consider(value("MPC_XY_CRUISE").map(|c| c.min(cap)), "MPC_XY_CRUISE");
        }
        AutopilotKind::Other => {}
    }
    basis
}

/// The autopilot's own cruise for a target the daemon sends (GUIDED / Hold), if known.
pub fn autopilot_cruise_m_s(
    kind: AutopilotKind,
    value: &dyn Fn(&str) -> Option<f64>,
) -> Option<f64> {
    match kind {
        AutopilotKind::Ardupilot => value("WPNAV_SPEED").map(|v| v / 100.0),
        AutopilotKind::Px4 => value("MPC_XY_CRUISE"),
        AutopilotKind::Other => None,
    }
    .filter(|v| v.is_finite() && *v > 0.0)
}

/// Checks the parameters read so far against the envelope.
pub fn check(params: &Parameters, config: &EnvelopeConfig) -> (Vec<Finding>, MarginSpeed, f64) {
    let value = params.value;
    let limit = config.speed_horizontal_m_s_max;
    let basis = margin_speed(params.kind, value, limit);
    let margin_m = config
        .margin_horizontal_m
        .max(stopping_distance_m(config, basis.speed_m_s));
    let mut findings = Vec::new();
    let mut add =
        |severity, parameter: &str, value: Option<f64>, set_to: String, message: String| {
            findings.push(Finding {
                severity,
                parameter: parameter.into(),
                value,
                set_to,
                message,
            })
        };
    let grown = |speed_m_s: f64| {
        let margin = config
            .margin_horizontal_m
            .max(stopping_distance_m(config, speed_m_s));
        if margin > config.margin_horizontal_m {
            format!(
                "the horizontal margins grow from {} m to {} m (the stopping distance at {} m/s)",
                fmt(config.margin_horizontal_m),
                fmt(margin),
                fmt(speed_m_s)
            )
        } else {
            format!(
                "the {} m margins still cover it",
                fmt(config.margin_horizontal_m)
            )
        }
    };
    match params.kind {
        AutopilotKind::Ardupilot => {
            ardupilot_speeds_and_return(value, config, &grown, &mut add);
            ardupilot_battery(value, config, &mut add);
            ardupilot_fence(value, config, &mut add);
        }
        AutopilotKind::Px4 => {
            px4_speeds_and_return(value, config, &grown, &mut add);
            px4_battery(value, config, &mut add);
            px4_fence(value, config, &mut add);
        }
        AutopilotKind::Other => {}
    }
    if margin_m >= config.distance_from_home_m_max {
        add(
            Severity::Error,
            basis.source,
            value(basis.source),
            match basis.source {
                "WPNAV_SPEED" | "RTL_SPEED" => format!("{} or less", fmt(limit * 100.0)),
                _ => format!("{} or less", fmt(limit)),
            },
            format!(
                "the horizontal margin sized from {} ({} m/s) is {} m, which leaves no room \
                 inside envelope.distance_from_home_m_max ({} m)",
                basis.source,
                fmt(basis.speed_m_s),
                fmt(margin_m),
                fmt(config.distance_from_home_m_max)
            ),
        );
    }
    for name in params.missing {
        add(
            Severity::Warning,
            name,
            None,
            "readable".into(),
            format!(
                "the autopilot did not answer for {name}, so the check could not use it (an \
                 older firmware, or a parameter this build lacks)"
            ),
        );
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    (findings, basis, margin_m)
}

/// ArduCopter's own speeds (`WPNAV_SPEED`, `RTL_SPEED`) against the envelope's limit, and
/// its return altitude (`RTL_ALT`) against the ceiling.
fn ardupilot_speeds_and_return(
    value: &dyn Fn(&str) -> Option<f64>,
    config: &EnvelopeConfig,
    grown: &dyn Fn(f64) -> String,
    add: &mut Add,
) {
    let limit = config.speed_horizontal_m_s_max;
    let ceiling_target_m = config.altitude_m_max - config.margin_vertical_m;
    if let Some(cm_s) = value("WPNAV_SPEED")
        && cm_s / 100.0 > limit
    {
        add(
            Severity::Warning,
            "WPNAV_SPEED",
            Some(cm_s),
            format!("{} or less", fmt(limit * 100.0)),
            format!(
                "WPNAV_SPEED is {} cm/s ({} m/s), above the envelope's {} m/s: GUIDED \
                 restarts at it on every new target before the daemon's speed applies, \
                 so {}",
                fmt(cm_s),
                fmt(cm_s / 100.0),
                fmt(limit),
                grown(cm_s / 100.0)
            ),
        );
    }
    match (value("RTL_SPEED"), value("WPNAV_SPEED")) {
        (Some(rtl), _) if rtl / 100.0 > limit => add(
            Severity::Warning,
            "RTL_SPEED",
            Some(rtl),
            format!("{} or less", fmt(limit * 100.0)),
            format!(
                "RTL_SPEED is {} cm/s ({} m/s), above the envelope's {} m/s: the \
                 autopilot's own return (failsafe, RC switch) flies at it, so {}",
                fmt(rtl),
                fmt(rtl / 100.0),
                fmt(limit),
                grown(rtl / 100.0)
            ),
        ),
        (Some(rtl), Some(wpnav)) if rtl <= 0.0 && wpnav / 100.0 > limit => add(
            Severity::Warning,
            "RTL_SPEED",
            Some(rtl),
            format!("{} or less (not 0)", fmt(limit * 100.0)),
            format!(
                "RTL_SPEED 0 makes the autopilot's own return fly at WPNAV_SPEED ({} \
                 m/s), above the envelope's {} m/s",
                fmt(wpnav / 100.0),
                fmt(limit)
            ),
        ),
        _ => {}
    }
    if let Some(cm) = value("RTL_ALT")
        && cm / 100.0 > ceiling_target_m
    {
        add(
            Severity::Error,
            "RTL_ALT",
            Some(cm),
            format!("{} or less", fmt(ceiling_target_m * 100.0)),
            format!(
                "RTL_ALT is {} cm ({} m), above the envelope's ceiling of {} m with its \
                 {} m margin: the autopilot's own return (and the daemon's return_home) \
                 would climb through the ceiling",
                fmt(cm),
                fmt(cm / 100.0),
                fmt(config.altitude_m_max),
                fmt(config.margin_vertical_m)
            ),
        );
    }
}

/// PX4's cruise speed (`MPC_XY_CRUISE`, capped by `MPC_XY_VEL_MAX`) against the envelope's
/// limit, and its return altitude (`RTL_RETURN_ALT`) against the ceiling.
fn px4_speeds_and_return(
    value: &dyn Fn(&str) -> Option<f64>,
    config: &EnvelopeConfig,
    grown: &dyn Fn(f64) -> String,
    add: &mut Add,
) {
    let limit = config.speed_horizontal_m_s_max;
    let ceiling_target_m = config.altitude_m_max - config.margin_vertical_m;
    let cap = value("MPC_XY_VEL_MAX").unwrap_or(f64::INFINITY);
    if let Some(cruise) = value("MPC_XY_CRUISE")
        && cruise.min(cap) > limit
    {
        add(
            Severity::Warning,
            "MPC_XY_CRUISE",
            Some(cruise),
            format!("{} or less", fmt(limit)),
            format!(
                "MPC_XY_CRUISE is {} m/s, above the envelope's {} m/s: PX4's own \
                 return and holds fly at it, so {}",
                fmt(cruise),
                fmt(limit),
                grown(cruise.min(cap))
            ),
        );
    }
    if let Some(m) = value("RTL_RETURN_ALT")
        && m > ceiling_target_m
    {
        add(
            Severity::Error,
            "RTL_RETURN_ALT",
            Some(m),
            format!("{} or less", fmt(ceiling_target_m)),
            format!(
                "RTL_RETURN_ALT is {} m, above the envelope's ceiling of {} m with its \
                 {} m margin: PX4's own return (and the daemon's return_home) would \
                 climb through the ceiling",
                fmt(m),
                fmt(config.altitude_m_max),
                fmt(config.margin_vertical_m)
            ),
        );
    }
}

type Add<'a> = dyn FnMut(Severity, &str, Option<f64>, String, String) + 'a;

fn ardupilot_battery(value: &dyn Fn(&str) -> Option<f64>, config: &EnvelopeConfig, add: &mut Add) {
    let reserve = config.battery_reserve_percent;
    // AP_BattMonitor_Backend::capacity_remaining_pct: a percentage needs a monitor that
    // measures current and a capacity above 10 mAh.
    let severity = if reserve > 0.0 {
        Severity::Error
    } else {
        Severity::Warning
    };
    let consequence = if reserve > 0.0 {
        format!(
            "so the {}% reserve cannot be checked and the daemon refuses every motion but \
             land and return",
            fmt(reserve)
        )
    } else {
        "so the daemon cannot see the battery drain".to_string()
    };
    match value("BATT_MONITOR") {
        Some(m) if m == 0.0 || m == 3.0 => add(
            severity,
            "BATT_MONITOR",
            Some(m),
            "a monitor that measures current, e.g. 4 (analog voltage and current)".into(),
            format!(
                "BATT_MONITOR is {} ({}): ArduPilot reports no remaining percentage, {consequence}",
                fmt(m),
                if m == 0.0 { "disabled" } else { "voltage only" }
            ),
        ),
        _ => {}
    }
    let capacity = value("BATT_CAPACITY");
    if let Some(c) = capacity
        && c <= 10.0
    {
        add(
            severity,
            "BATT_CAPACITY",
            Some(c),
            "the pack's capacity in mAh".into(),
            format!(
                "BATT_CAPACITY is {} mAh: ArduPilot computes no percentage at 10 mAh or less, \
                 {consequence}",
                fmt(c)
            ),
        );
    }
    let reserve_mah = capacity
        .filter(|c| *c > 10.0)
        .map(|c| (c * reserve / 100.0).round());
    match value("BATT_FS_LOW_ACT") {
        Some(a) if a == 0.0 => add(
            Severity::Warning,
            "BATT_FS_LOW_ACT",
            Some(a),
            "2 (RTL) or 1 (land)".into(),
            format!(
                "the autopilot has no low-battery failsafe (BATT_FS_LOW_ACT 0): if the \
                 companion is gone nothing brings the vehicle back at the reserve{}",
                reserve_mah.map_or(String::new(), |mah| format!(
                    "; with it, set BATT_LOW_MAH to {} (the {}% reserve)",
                    fmt(mah),
                    fmt(reserve)
                ))
            ),
        ),
        Some(_) => {
            if let (Some(low), Some(mah)) = (value("BATT_LOW_MAH"), reserve_mah)
                && low < mah
            {
                add(
                    Severity::Warning,
                    "BATT_LOW_MAH",
                    Some(low),
                    format!("{} or more", fmt(mah)),
                    format!(
                        "the autopilot's low-battery failsafe fires at {} mAh left, after the \
                         daemon's {}% reserve ({} mAh)",
                        fmt(low),
                        fmt(reserve),
                        fmt(mah)
                    ),
                );
            }
        }
        None => {}
    }
}

fn ardupilot_fence(value: &dyn Fn(&str) -> Option<f64>, config: &EnvelopeConfig, add: &mut Add) {
    let enabled = value("FENCE_ENABLE");
    if enabled == Some(0.0) {
        add(
            Severity::Warning,
            "FENCE_ENABLE",
            Some(0.0),
            "1".into(),
            format!(
                "the autopilot's own fence is off: if the companion is gone nothing keeps the \
                 vehicle in; set FENCE_ENABLE 1 with FENCE_TYPE 3 (ceiling and circle), \
                 FENCE_ALT_MAX {} or less and FENCE_RADIUS {} or less",
                fmt(config.altitude_m_max),
                fmt(config.distance_from_home_m_max)
            ),
        );
        return;
    }
    if enabled.is_none() {
        return;
    }
    let kinds = value("FENCE_TYPE").map_or(0, |t| t as i64);
    if kinds & 1 != 0 {
        if let Some(alt) = value("FENCE_ALT_MAX")
            && alt > config.altitude_m_max
        {
            add(
                Severity::Warning,
                "FENCE_ALT_MAX",
                Some(alt),
                format!("{} or less", fmt(config.altitude_m_max)),
                format!(
                    "the autopilot's fence ceiling ({} m) is above the envelope's ({} m)",
                    fmt(alt),
                    fmt(config.altitude_m_max)
                ),
            );
        }
    } else {
        add(
            Severity::Warning,
            "FENCE_TYPE",
            Some(kinds as f64),
            format!("{} (add 1: the ceiling)", kinds | 1),
            "the autopilot's fence has no ceiling".into(),
        );
    }
    if kinds & 2 != 0
        && let Some(radius) = value("FENCE_RADIUS")
        && radius > config.distance_from_home_m_max
    {
        add(
            Severity::Warning,
            "FENCE_RADIUS",
            Some(radius),
            format!("{} or less", fmt(config.distance_from_home_m_max)),
            format!(
                "the autopilot's fence circle ({} m) is wider than the envelope's {} m from home",
                fmt(radius),
                fmt(config.distance_from_home_m_max)
            ),
        );
    }
    if let Some(action) = value("FENCE_ACTION")
        && action == 0.0
    {
        add(
            Severity::Warning,
            "FENCE_ACTION",
            Some(action),
            "1 (RTL or land)".into(),
            "the autopilot's fence only reports a breach (FENCE_ACTION 0)".into(),
        );
    }
}

fn px4_battery(value: &dyn Fn(&str) -> Option<f64>, config: &EnvelopeConfig, add: &mut Add) {
    let reserve = config.battery_reserve_percent;
    if let Some(c) = value("BAT1_CAPACITY")
        && c <= 0.0
    {
        add(
            Severity::Warning,
            "BAT1_CAPACITY",
            Some(c),
            "the pack's capacity in mAh".into(),
            "PX4 estimates the remaining percentage from the voltage alone (BAT1_CAPACITY \
             unset), which sags under load: the daemon's reserve check follows that estimate"
                .into(),
        );
    }
    if let Some(a) = value("COM_LOW_BAT_ACT")
        && a == 0.0
    {
        add(
            Severity::Warning,
            "COM_LOW_BAT_ACT",
            Some(a),
            "3 (return at critical, land at emergency)".into(),
            "PX4 only warns of a low battery (COM_LOW_BAT_ACT 0): if the companion is gone \
             nothing brings the vehicle back"
                .into(),
        );
    }
    if let Some(t) = value("BAT_LOW_THR")
        && t * 100.0 < reserve - 0.5
    {
        add(
            Severity::Warning,
            "BAT_LOW_THR",
            Some(t),
            format!("{} or more", fmt(reserve / 100.0)),
            format!(
                "PX4 calls the battery low at {}%, after the daemon's {}% reserve",
                fmt(t * 100.0),
                fmt(reserve)
            ),
        );
    }
}

fn px4_fence(value: &dyn Fn(&str) -> Option<f64>, config: &EnvelopeConfig, add: &mut Add) {
    if let Some(a) = value("GF_ACTION")
        && a <= 1.0
    {
        add(
            Severity::Warning,
            "GF_ACTION",
            Some(a),
            "2 (hold) or 3 (return)".into(),
            "PX4's own geofence does nothing on a breach (GF_ACTION 0 none, 1 warning)".into(),
        );
    }
    if let Some(d) = value("GF_MAX_HOR_DIST")
        && (d <= 0.0 || d > config.distance_from_home_m_max)
    {
        add(
            Severity::Warning,
            "GF_MAX_HOR_DIST",
            Some(d),
            format!("{} or less (not 0)", fmt(config.distance_from_home_m_max)),
            if d <= 0.0 {
                "PX4's own geofence has no distance limit: if the companion is gone nothing \
                 keeps the vehicle near home"
                    .into()
            } else {
                format!(
                    "PX4's geofence circle ({} m) is wider than the envelope's {} m from home",
                    fmt(d),
                    fmt(config.distance_from_home_m_max)
                )
            },
        );
    }
    if let Some(h) = value("GF_MAX_VER_DIST")
        && (h <= 0.0 || h > config.altitude_m_max)
    {
        add(
            Severity::Warning,
            "GF_MAX_VER_DIST",
            Some(h),
            format!("{} or less (not 0)", fmt(config.altitude_m_max)),
            if h <= 0.0 {
                "PX4's own geofence has no ceiling".into()
            } else {
                format!(
                    "PX4's geofence ceiling ({} m) is above the envelope's ({} m)",
                    fmt(h),
                    fmt(config.altitude_m_max)
                )
            },
        );
    }
}

/// Numbers for people: whole ones without decimals, else up to two.
fn fmt(v: f64) -> String {
    if (v - v.round()).abs() < 0.005 {
        format!("{:.0}", v.round())
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
#[path = "preflight_tests.rs"]
mod tests;
