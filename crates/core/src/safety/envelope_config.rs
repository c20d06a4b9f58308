//! `[envelope]`'s types (parsed by `config`, read by the envelope, the whitelist and the
//! pre-flight check): here rather than in `config`, so the envelope does not import the
//! configuration module that validates it (`Config::check` calls
//! `safety::envelope::check_config`).

use serde::Deserialize;

/// `[envelope]`: the safety envelope (see `safety::envelope` for the semantics).
///
/// Altitudes are metres relative to home. The defaults give a home cylinder of 300 m and a
/// 120 m ceiling even without any polygon, so the daemon never flies without an envelope.
// Serialize: an ADMIN's `set_envelope` applies its changes to the envelope in force as JSON
// (`safety::envelope::changed_config`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeConfig {
    /// Altitude floor above home for goal targets. Default 0 m (the margin lifts it).
    pub altitude_m_min: f64,
    /// Altitude ceiling above home. Default 120 m.
    pub altitude_m_max: f64,
    /// Horizontal margin kept from every keep-in and keep-out boundary and from the home
    /// cylinder. Refused when smaller than the stopping distance (see below). Default 10 m.
    pub margin_horizontal_m: f64,
    /// Vertical margin kept from the floor and the ceiling. Default 5 m.
    pub margin_vertical_m: f64,
    /// Fastest horizontal speed a goal may ask for. Default 5 m/s.
    pub speed_horizontal_m_s_max: f64,
    /// Fastest climb or descent rate. Default 2.5 m/s.
    pub speed_vertical_m_s_max: f64,
    /// Home cylinder radius: no target farther from home. Default 300 m.
    pub distance_from_home_m_max: f64,
    /// Below this battery percentage no new goal is accepted, only land and return. Default 30 %.
    /// 0 also accepts goals when the autopilot does not report the remaining charge.
    pub battery_reserve_percent: f64,
    /// Least GPS fix for any motion: `2d_fix`, `3d_fix`, `dgps`, `rtk_float`, `rtk_fixed`. Default `3d_fix`.
    pub gps_fix_type_min: String,
    /// Fewest satellites for any motion. Default 6.
    pub gps_satellites_min: u8,
    /// Largest horizontal dilution of precision for any motion. Default 2.5.
    pub gps_hdop_max: f64,
    /// Period of the daemon's envelope monitor (`t_check` of the stopping distance). Default 0.04 s (25 Hz).
    pub check_interval_s: f64,
    /// Worst delay from a decision to the autopilot acting on it (`t_link`). Default 0.2 s.
    pub link_latency_s: f64,
    /// Braking deceleration the vehicle can be relied on for (`a_brake`). Default 2.5 m/s².
    pub braking_deceleration_m_s2: f64,
    /// Position uncertainty added to the required margin (e.g. 2 σ of the GPS). Default 2 m.
    pub position_uncertainty_m: f64,
    /// What the daemon does after a breach, once it has held: `land` or `return_home`. Default `land`.
    pub breach_action: BreachAction,
    /// How long the vehicle holds after a breach before the breach action. Default 2 s.
    pub breach_hold_s: f64,
    /// Keep-in zones: the vehicle stays inside every one of them.
    pub keep_in: Vec<ZoneConfig>,
    /// Keep-out zones: the vehicle stays outside all of them.
    pub keep_out: Vec<ZoneConfig>,
    /// `[latitude_deg, longitude_deg]` of the home the zones are drawn around
    /// (`dev-setup --home` writes it): `check-config` warns when the envelope would be
    /// refused there or a zone is far from it. The daemon always builds the envelope around
    /// the autopilot's own home. Default none.
    pub expected_home_lat_lon_deg: Option<[f64; 2]>,
    /// Mirror this envelope into the autopilot's own fence at link-up when the autopilot's
    /// fence differs (issue 18; `safety::fence_mirror`), disarmed on the ground only. The
    /// ADMIN tool `mirror_fence` does it on request either way. Default false.
    pub mirror_to_autopilot: bool,
    /// What the autopilot's own fence does when breached: `return_home` (ArduPilot
    /// `FENCE_ACTION` 1, PX4 `GF_ACTION` 3) or `land`. Default `return_home`.
    pub mirror_fence_action: FenceAction,
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        Self {
            altitude_m_min: 0.0,
            altitude_m_max: 120.0,
            margin_horizontal_m: 10.0,
            margin_vertical_m: 5.0,
            speed_horizontal_m_s_max: 5.0,
            speed_vertical_m_s_max: 2.5,
            distance_from_home_m_max: 300.0,
            battery_reserve_percent: 30.0,
            gps_fix_type_min: "3d_fix".into(),
            gps_satellites_min: 6,
            gps_hdop_max: 2.5,
            check_interval_s: 0.04,
            link_latency_s: 0.2,
            braking_deceleration_m_s2: 2.5,
            position_uncertainty_m: 2.0,
            breach_action: BreachAction::Land,
            breach_hold_s: 2.0,
            keep_in: Vec::new(),
            keep_out: Vec::new(),
            expected_home_lat_lon_deg: None,
            mirror_to_autopilot: false,
            mirror_fence_action: FenceAction::ReturnHome,
        }
    }
}

/// The action after a breach (after holding for `breach_hold_s`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BreachAction {
    Land,
    ReturnHome,
}

/// What the autopilot does when its own fence (the mirrored envelope) is breached.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FenceAction {
    /// ArduPilot `FENCE_ACTION` 1 (RTL, or land if it cannot), PX4 `GF_ACTION` 3 (Return).
    #[default]
    ReturnHome,
    /// ArduPilot `FENCE_ACTION` 2, PX4 `GF_ACTION` 5.
    Land,
}

/// One zone: a polygon (`polygon_lat_lon_deg`) or a circle (`center_lat_lon_deg` + `radius_m`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Shown in refusals ("keep-out `school`").
    pub name: String,
    /// Vertices as `[latitude_deg, longitude_deg]`, in order around the boundary, first not repeated.
    #[serde(default)]
    pub polygon_lat_lon_deg: Option<Vec<[f64; 2]>>,
    /// Circle centre as `[latitude_deg, longitude_deg]`.
    #[serde(default)]
    pub center_lat_lon_deg: Option<[f64; 2]>,
    /// Circle radius.
    #[serde(default)]
    pub radius_m: Option<f64>,
}
